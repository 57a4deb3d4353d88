"""A stand-in for vLLM's OpenAI-compatible server (raw ASGI on uvicorn): streamed tokens at a fixed pace.

``POST /v1/chat/completions`` and ``POST /v1/completions`` answer in the stream format vLLM
documents: a role-only first chunk (chat), one chunk a token, an empty chunk with the
``finish_reason``, then, when the request asks for ``stream_options: {"include_usage": true}``,
a usage chunk with empty ``choices``, and ``data: [DONE]``. ``--no-usage`` leaves the usage chunk
out whatever is asked, as servers that do not honour the option do. Without ``"stream": true``
the answer is one JSON completion. The first token comes ``--ttft-ms`` after the request, and each
next one ``--itl-ms`` after the last; ``max_tokens`` (16 if absent) sets how many.

It generates nothing: each token is the word ``tok``. It exists to check that the harness reads
this format, and to measure how many streams one load-generator process can follow.
``--break-every K`` cuts every K-th stream half-way: the connection closes without ``[DONE]``, as a
server that crashes or is killed mid-answer leaves it.

It keeps its own record of the pace it kept: each content token's emit time
(``time.perf_counter_ns`` just before the send), and the gap from the stream's previous token in
an HdrHistogram (bounded memory however long it runs). ``GET /debug/itl`` answers those gaps since
the last ``POST /debug/reset`` (or the start) as JSON, in milliseconds: ``count``, ``p50``,
``p90``, ``p99``, ``p99.9``, ``max``, ``mean``. At high concurrency the event loop wakes late and
the gaps grow past ``--itl-ms``; these are what the server actually sent, for a client's figures to
be compared against (``stream_followers.py``).

Run: ``python benchmarks/fast_stream.py PORT [--ttft-ms 20] [--itl-ms 10] [--no-usage] [--break-every K]
[--cpu N]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from dataclasses import dataclass

from hdrh.histogram import HdrHistogram


@dataclass(frozen=True)
class Pace:
    ttft_ms: float = 20.0
    itl_ms: float = 10.0
    usage: bool = True  # honour stream_options.include_usage
    break_every: int = 0  # cut every k-th stream half-way (0: never)


class Cut(Exception):
    """Raised mid-stream: uvicorn closes the connection without ending the chunked body."""


class EmitGaps:
    """The server's own inter-token gaps: each content token's emit time less its stream's previous one's."""

    PERCENTILES = {"p50": 50.0, "p90": 90.0, "p99": 99.0, "p99.9": 99.9}

    def __init__(self) -> None:
        self._histogram = HdrHistogram(1, 3_600_000_000, 3)  # microseconds, 1 µs to an hour, 3 digits

    def record(self, gap_ns: int) -> None:
        self._histogram.record_value(max(1, gap_ns // 1000))

    def reset(self) -> None:
        self._histogram.reset()

    def summary(self) -> dict[str, float | int]:
        """Count, percentiles, max and mean in milliseconds (0.0 where nothing was recorded)."""
        h = self._histogram
        doc: dict[str, float | int] = {"count": h.get_total_count()}
        for name, percentile in self.PERCENTILES.items():
            doc[name] = h.get_value_at_percentile(percentile) / 1000
        doc["max"] = h.get_max_value() / 1000
        doc["mean"] = round(h.get_mean_value() / 1000, 4)
        return doc


def make_app(pace: Pace = Pace()):
    served = 0
    gaps = EmitGaps()

    async def app(scope, receive, send) -> None:
        nonlocal served
        if scope["type"] != "http":
            return
        body, more = b"", True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        if scope["path"] == "/debug/itl" and scope["method"] == "GET":
            await _json(send, 200, gaps.summary())
            return
        if scope["path"] == "/debug/reset" and scope["method"] == "POST":
            gaps.reset()
            await _json(send, 200, {"reset": True})
            return
        chat = scope["path"] == "/v1/chat/completions"
        if scope["method"] != "POST" or scope["path"] not in ("/v1/chat/completions", "/v1/completions"):
            await _json(send, 404, {"error": {"message": f"no route {scope['path']}", "type": "not_found"}})
            return
        try:
            request = json.loads(body)
            tokens = int(request.get("max_tokens") or 16)
        except (ValueError, TypeError, AttributeError):
            await _json(send, 400, {"error": {"message": "the body must be a JSON object", "type": "invalid_request"}})
            return
        prompt_tokens = len(json.dumps(request.get("messages") or request.get("prompt") or "").split())
        if not request.get("stream"):
            await asyncio.sleep((pace.ttft_ms + pace.itl_ms * (tokens - 1)) / 1000)
            text = " ".join(["tok"] * tokens)
            choice = {"index": 0, "finish_reason": "length"}
            choice |= {"message": {"role": "assistant", "content": text}} if chat else {"text": text}
            usage = {"prompt_tokens": prompt_tokens, "completion_tokens": tokens}
            await _json(send, 200, {"object": "chat.completion" if chat else "text_completion", "choices": [choice],
                                    "usage": usage | {"total_tokens": prompt_tokens + tokens}})  # fmt: skip
            return
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
        wants_usage = pace.usage and bool((request.get("stream_options") or {}).get("include_usage"))
        served += 1
        cut_at = tokens // 2 if pace.break_every and served % pace.break_every == 0 else None
        pause, sent, last_ns = pace.ttft_ms, 0, 0
        for is_token, event in _events(chat, tokens, prompt_tokens, wants_usage):
            if is_token:  # the first token ttft_ms after the request, each next one itl_ms after the last
                if sent == cut_at:
                    raise Cut(f"stream cut after {sent} tokens")
                await asyncio.sleep(pause / 1000)
                pause, sent = pace.itl_ms, sent + 1
                emitted_ns = time.perf_counter_ns()
                if last_ns:
                    gaps.record(emitted_ns - last_ns)
                last_ns = emitted_ns
            await send({"type": "http.response.body", "body": b"data: " + event + b"\n\n", "more_body": True})
        await send({"type": "http.response.body", "body": b"data: [DONE]\n\n", "more_body": False})

    return app


def _events(chat: bool, tokens: int, prompt_tokens: int, wants_usage: bool):
    """(is it a token, the event's JSON) in vLLM's order: role (chat), tokens, finish, usage if asked."""
    kind = "chat.completion.chunk" if chat else "text_completion"

    def chunk(text: str, finish: str | None = None, role: bool = False) -> bytes:
        if chat:
            delta = {"role": "assistant", "content": ""} if role else {"content": text}
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        else:
            choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish}
        doc = {
            "id": "cmpl-standin",
            "object": kind,
            "created": int(time.time()),
            "model": "standin",
            "choices": [choice],
        }
        return json.dumps(doc).encode()

    if chat:
        yield False, chunk("", role=True)
    for _ in range(tokens):
        yield True, chunk(" tok")
    yield False, chunk("", finish="length")
    if wants_usage:
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": tokens, "total_tokens": prompt_tokens + tokens}
        yield (
            False,
            json.dumps(
                {"id": "cmpl-standin", "object": kind, "model": "standin", "choices": [], "usage": usage}
            ).encode(),
        )


async def _json(send, status: int, doc: dict) -> None:
    body = json.dumps(doc).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("port", type=int)
    parser.add_argument("--ttft-ms", type=float, default=20.0)
    parser.add_argument("--itl-ms", type=float, default=10.0)
    parser.add_argument("--no-usage", action="store_true", help="never send the usage chunk")
    parser.add_argument("--break-every", type=int, default=0, help="cut every K-th stream half-way")
    parser.add_argument("--cpu", type=int, help="pin to this core")
    args = parser.parse_args()
    if args.cpu is not None:
        import psutil

        psutil.Process().cpu_affinity([args.cpu])
    import uvicorn

    pace = Pace(args.ttft_ms, args.itl_ms, not args.no_usage, args.break_every)
    uvicorn.run(make_app(pace), host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
