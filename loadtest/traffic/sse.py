"""Read an OpenAI-compatible streamed completion as it arrives: which bytes carried content, and when.

``POST /v1/chat/completions`` and ``/v1/completions`` with ``"stream": true`` answer with
Server-Sent Events (the WHATWG event-stream format): ``data: {json}`` events separated by a blank
line, and ``data: [DONE]`` to end. OpenAI, vLLM, TGI's OpenAI route, the llama.cpp server and
Ollama's OpenAI route all stream this way, and differ only in details this reader accepts:

- content is ``choices[i].delta.content`` (chat) or ``choices[i].text`` (completions);
- the first chunk often carries only ``delta.role``, and some carry empty content: neither is a
  token, so neither ends the time to the first token;
- ``usage`` arrives in a final chunk with empty ``choices`` when the request asked for
  ``stream_options: {"include_usage": true}`` and the server honours it (vLLM, OpenAI); other
  servers send none, and then the token count is the caller's to make (a tokenizer);
- comment lines (``: ping``), ``event:``/``id:``/``retry:`` fields, CRLF line ends and events split
  across reads are all legal, and a server's error arrives as a ``data: {"error": ...}`` event.

The reader is fed each read as the transport gets it, with the time it arrived, so the times are
the client's. It keeps what a stream that breaks half-way delivered: a stream that ends without
``[DONE]`` is ``broken``, its content chunks and their times intact.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import orjson

DONE = b"[DONE]"
# One event this long without a blank line is not a stream this reader should hold in memory.
MAX_EVENT_BYTES = 1 << 20


@dataclass
class Stream:
    """What one streamed answer delivered, by the client's clock (seconds, ``time.perf_counter``)."""

    content_times: list[float] = field(default_factory=list)  # one per chunk that carried content
    text: list[str] = field(default_factory=list)  # the content, chunk by chunk
    completion_tokens: int | None = None  # the server's usage, when it sent one
    prompt_tokens: int | None = None
    finish_reason: str | None = None
    done: bool = False  # ``data: [DONE]`` arrived
    error: str | None = None  # what went wrong: "broken", "invalid_event", "server_error", "too_large"
    detail: str = ""  # the error in words, for the run's error table

    @property
    def content(self) -> str:
        return "".join(self.text)

    @property
    def output_tokens(self) -> int:
        """The server's count when it gave one; else one a content chunk, which OpenAI-style servers send."""
        return self.completion_tokens if self.completion_tokens is not None else len(self.content_times)


class StreamReader:
    """Incremental: ``feed`` each read with its arrival time, then ``finish`` once the body ends."""

    def __init__(self) -> None:
        self.stream = Stream()
        self._pending = b""  # bytes of an event not yet complete
        self._data: list[bytes] = []  # the data lines of the event being read

    @property
    def ended(self) -> bool:
        """``[DONE]`` or an error has come: nothing more is read."""
        return self.stream.done or self.stream.error is not None

    def feed(self, chunk: bytes, at: float) -> None:
        if self.ended:
            return
        self._pending += chunk
        *lines, self._pending = self._pending.split(b"\n")
        for line in lines:
            self._line(line.removesuffix(b"\r"), at)
            if self.ended:
                return
        if len(self._pending) + sum(map(len, self._data)) > MAX_EVENT_BYTES:
            self._fail("too_large", f"an event of over {MAX_EVENT_BYTES:,} bytes without its end")

    def finish(self, at: float) -> Stream:
        """The body has ended (or the connection dropped): a last event without its blank line still counts."""
        if self._pending and not self.ended:
            self._line(self._pending.removesuffix(b"\r"), at)
            self._pending = b""
        if self._data and not self.ended:
            self._dispatch(at)
        if not self.ended:
            self._fail("broken", f"the stream ended without data: [DONE] after {len(self.stream.content_times)} chunks")
        return self.stream

    def _line(self, line: bytes, at: float) -> None:
        if not line:  # a blank line ends the event
            if self._data:
                self._dispatch(at)
            return
        if line.startswith(b":"):
            return  # a comment: keep-alive pings
        name, _, value = line.partition(b":")
        if name == b"data":
            self._data.append(value.removeprefix(b" "))
        # event:, id: and retry: name or pace events; OpenAI-style servers do not need them read

    def _dispatch(self, at: float) -> None:
        data, self._data = b"\n".join(self._data), []
        if data.strip() == DONE:
            self.stream.done = True
            return
        try:
            event = orjson.loads(data)
        except orjson.JSONDecodeError:
            self._fail("invalid_event", f"an event that is not JSON: {data[:80]!r}")
            return
        if not isinstance(event, dict):
            self._fail("invalid_event", f"an event that is not a JSON object: {data[:80]!r}")
            return
        if "error" in event:
            error = event["error"]
            message = error.get("message") if isinstance(error, dict) else error
            self._fail("server_error", f"the server reported an error mid-stream: {str(message)[:200]}")
            return
        self._read_event(event, at)

    def _read_event(self, event: dict, at: float) -> None:
        usage = event.get("usage")
        if isinstance(usage, dict):
            if isinstance(usage.get("completion_tokens"), int):
                self.stream.completion_tokens = usage["completion_tokens"]
            if isinstance(usage.get("prompt_tokens"), int):
                self.stream.prompt_tokens = usage["prompt_tokens"]
        choices = event.get("choices")
        if not isinstance(choices, list):
            if usage is None:
                self._fail("invalid_event", "an event with neither choices nor usage")
            return
        content = []
        for choice in choices:
            if not isinstance(choice, dict):
                continue
            delta = choice.get("delta")
            piece = delta.get("content") if isinstance(delta, dict) else choice.get("text")
            if isinstance(piece, str) and piece:
                content.append(piece)
            if isinstance(choice.get("finish_reason"), str):
                self.stream.finish_reason = choice["finish_reason"]
        if content:
            self.stream.content_times.append(at)
            self.stream.text.append("".join(content))

    def _fail(self, kind: str, detail: str) -> None:
        self.stream.error, self.stream.detail = kind, detail


def read_completion(body: bytes, at: float) -> Stream | None:
    """A completion that did not stream (``"stream": false``): its text and usage as a Stream of one chunk.

    Its one "chunk" arrives with the whole body, so its time to first token is its end-to-end time:
    that is what a user of a non-streaming endpoint waits for. None if the body is not a completion.
    """
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(doc, dict) or not isinstance(doc.get("choices"), list):
        return None
    reader = StreamReader()
    reader._read_event(doc, at)  # the same fields, but message.content for chat
    for choice in doc["choices"]:
        message = choice.get("message") if isinstance(choice, dict) else None
        if isinstance(message, dict) and isinstance(message.get("content"), str) and message["content"]:
            reader.stream.content_times.append(at)
            reader.stream.text.append(message["content"])
    reader.stream.done = True
    return reader.stream


def read_stream(parts: list[tuple[bytes, float]], ended: float) -> Stream:
    """A whole stream from its reads and their times: what a transport that buffers hands over."""
    reader = StreamReader()
    for chunk, at in parts:
        reader.feed(chunk, at)
    return reader.finish(ended)


__all__ = ["DONE", "MAX_EVENT_BYTES", "Stream", "StreamReader", "read_stream"]
