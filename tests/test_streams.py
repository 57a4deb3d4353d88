"""Streamed completions in OpenAI's SSE format (as vLLM, TGI, llama.cpp and Ollama send them).

What is read: content and its times, token latencies, goodput.
"""

from __future__ import annotations

import orjson
import pytest

from loadtest.traffic.sse import MAX_EVENT_BYTES, StreamReader, read_stream
from loadtest.traffic.token_latency import goodput, meets, token_latency
from tests.helpers import REPO


def chunk(content: str | None = None, role: str | None = None, finish: str | None = None) -> dict:
    delta = {k: v for k, v in (("role", role), ("content", content)) if v is not None}
    choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
    return {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "m", "choices": [choice]}


def sse(*events: dict | str) -> bytes:
    return b"".join(b"data: " + (e.encode() if isinstance(e, str) else orjson.dumps(e)) + b"\n\n" for e in events)


# vLLM's documented chat stream with stream_options.include_usage: role first, an empty content, usage last.
VLLM = sse(
    chunk(role="assistant", content=""),
    chunk("Hello"),
    chunk(" there"),
    chunk("!"),
    chunk("", finish="stop"),
    {"id": "chatcmpl-1", "object": "chat.completion.chunk", "choices": [], "usage": {
        "prompt_tokens": 5, "total_tokens": 9, "completion_tokens": 4}},
    "[DONE]",
)  # fmt: skip


def events_at(body: bytes, start: float = 10.0, gap: float = 0.02) -> list[tuple[bytes, float]]:
    """Each event as its own read, ``gap`` seconds apart."""
    parts = [p + b"\n\n" for p in body.split(b"\n\n") if p]
    return [(p, start + i * gap) for i, p in enumerate(parts)]


def test_a_vllm_chat_stream_gives_its_content_chunk_times_and_usage():
    stream = read_stream(events_at(VLLM), ended=10.2)
    assert stream.done and stream.error is None
    assert stream.content == "Hello there!" and stream.text == ["Hello", " there", "!"]
    assert stream.content_times == [10.02, 10.04, 10.06]  # the role-only and empty chunks are not tokens
    assert (stream.completion_tokens, stream.prompt_tokens, stream.finish_reason) == (4, 5, "stop")
    assert stream.output_tokens == 4  # the server's count wins over the chunk count


def test_a_completions_stream_without_usage_counts_a_token_a_chunk():
    body = sse(*({"choices": [{"index": 0, "text": t, "finish_reason": None}]} for t in ("a", "b", "c")), "[DONE]")
    stream = read_stream(events_at(body), ended=11.0)
    assert stream.content == "abc" and stream.completion_tokens is None and stream.output_tokens == 3


def test_reads_that_split_events_anywhere_with_crlf_comments_and_fields_read_the_same():
    body = b": ping\r\n\r\n" + VLLM.replace(b"\n", b"\r\n").replace(
        b"data: [DONE]", b"event: end\r\nid: 7\r\ndata: [DONE]"
    )
    reader = StreamReader()
    for i in range(len(body)):  # byte by byte: every split point is taken
        reader.feed(body[i : i + 1], 10.0 + i * 1e-4)
    stream = reader.finish(11.0)
    assert stream.done and stream.error is None and stream.content == "Hello there!" and stream.completion_tokens == 4


def test_a_stream_broken_half_way_keeps_what_it_delivered():
    cut = VLLM[: VLLM.index(b"data: ", VLLM.index(b" there"))]  # after " there", before "!"
    stream = read_stream([(cut, 10.0)], ended=10.5)
    assert stream.error == "broken" and not stream.done
    assert stream.content == "Hello there" and len(stream.content_times) == 2 and "2 chunks" in stream.detail


def test_an_error_event_an_invalid_event_and_an_endless_event_are_errors_of_their_own():
    failed = read_stream([(sse(chunk("Hi"), {"error": {"message": "out of KV cache"}}), 1.0)], ended=1.1)
    assert failed.error == "server_error" and "out of KV cache" in failed.detail and failed.content == "Hi"
    garbage = read_stream([(b"data: {not json\n\n", 1.0)], ended=1.1)
    assert garbage.error == "invalid_event"
    reader = StreamReader()
    for _ in range(3):
        reader.feed(b"data: " + b"x" * (MAX_EVENT_BYTES // 2), 1.0)
    assert reader.stream.error == "too_large" and len(reader._pending) <= 2 * MAX_EVENT_BYTES


def test_token_latency_counts_from_the_intended_send_time():
    stream = read_stream(events_at(VLLM, start=10.0, gap=0.02), ended=10.2)
    latency = token_latency(stream, intended=9.9, ended=10.2)  # sent 0.1 s late
    assert latency.ttft_ms == pytest.approx(120.0)  # 9.9 -> 10.02: the lateness is in it
    assert latency.itl_ms == pytest.approx((20.0, 20.0))
    assert latency.tpot_ms == pytest.approx(40.0 / 3)  # (10.06 - 10.02) over 4 - 1 tokens (the server's count)
    assert latency.e2e_ms == pytest.approx(300.0) and latency.output_tokens == 4
    assert latency.tokens_per_s == pytest.approx(4 / 0.18)
    empty = token_latency(read_stream([(sse("[DONE]"), 1.0)], 1.0), intended=0.5, ended=1.0)
    assert empty.ttft_ms is None and empty.tpot_ms is None and empty.e2e_ms == pytest.approx(500.0)


def test_goodput_counts_failures_in_the_total_and_a_missing_figure_only_where_it_must():
    fast = token_latency(read_stream(events_at(VLLM, 10.0, 0.01), 10.1), intended=10.0, ended=10.1)
    slow_first = token_latency(read_stream(events_at(VLLM, 10.0, 0.01), 10.1), intended=9.0, ended=10.1)
    one_token = token_latency(read_stream(events_at(sse(chunk("Hi"), "[DONE]")), 10.1), intended=10.0, ended=10.1)
    slos = {"ttft": 500.0, "tpot": 50.0}
    assert meets(fast, slos) and not meets(slow_first, slos) and meets(one_token, slos) and not meets(None, slos)
    result = goodput([fast, slow_first, one_token, None], slos, seconds=2.0)
    assert (result.met, result.total, result.share, result.per_s) == (2, 4, 0.5, 1.0)
    with pytest.raises(ValueError, match="unknown per-request figure 'p99'"):
        meets(fast, {"p99": 1.0})


def standin_stream(path: str, usage: bool, request: dict) -> tuple[int, bytes]:
    """The vLLM-format stand-in (benchmarks/fast_stream.py), in process, without pauses."""
    import asyncio
    import sys

    if str(REPO / "benchmarks") not in sys.path:
        sys.path.insert(0, str(REPO / "benchmarks"))
    from fast_stream import Pace, make_app

    app = make_app(Pace(ttft_ms=0, itl_ms=0, usage=usage))
    sent: list[dict] = []

    async def receive() -> dict:
        return {"type": "http.request", "body": orjson.dumps(request), "more_body": False}

    async def send(message: dict) -> None:
        sent.append(message)

    asyncio.run(app({"type": "http", "method": "POST", "path": path}, receive, send))
    return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/completions"])
@pytest.mark.parametrize("usage", [True, False], ids=["usage chunk", "no usage"])
def test_the_vllm_format_stand_in_reads_the_same_with_or_without_usage(path, usage):
    request = {"model": "m", "max_tokens": 7, "stream": True, "stream_options": {"include_usage": True}}
    status, body = standin_stream(path, usage, request | {"messages": [{"role": "user", "content": "hi"}]})
    assert status == 200
    stream = read_stream([(body, 1.0)], ended=1.0)
    assert stream.done and stream.error is None and stream.finish_reason == "length"
    assert stream.content == " tok" * 7 and len(stream.content_times) == 7 and stream.output_tokens == 7
    assert stream.completion_tokens == (7 if usage else None)


def test_the_recorder_counts_answers_without_usage_with_the_scenarios_tokenizer_and_merges_across_processes():
    """Two load-generator processes' deltas: token counts add up, and a tokenizer counts where usage is missing."""
    from loadtest.engine.collector import Collector
    from loadtest.engine.recorder import Recorder
    from loadtest.results.summary import Accounting, Counts
    from loadtest.results.tokens import generation_section
    from loadtest.traffic.token_counts import load_counter

    count = load_counter(REPO / "models" / "smollm2" / "tokenizer.json")
    assert count(["The capital of France is Paris."]) == [7]
    with_usage = read_stream(events_at(VLLM), 10.2)
    plain = read_stream(events_at(sse(chunk("The capital"), chunk(" of France"), "[DONE]")), 10.2)
    collector = Collector()
    for stream, prompt in ((with_usage, None), (plain, 12)):
        recorder = Recorder(start=9.0, count_tokens=count, goodput_ms={"ttft": 500.0})
        recorder.streamed("chat", 10.0, 10.2, stream, ok=True, asked=4, prompt_tokens=prompt)
        collector.absorb(recorder.take_delta(now=11.0, final=True))
    tokens = collector.tokens["chat"]
    # usage's 4 and the tokenizer's 4 ("The", " capital", " of", " France"), not the 2 chunks it came in
    assert tokens["output_tokens"] == 8 and tokens["by_usage"] == 1 and tokens["by_tokenizer"] == 1
    assert tokens["input_tokens"] == 5 + 12 and tokens["goodput_met"] == 2
    accounting = Accounting(Counts(scheduled=2, ok=2), {"chat": Counts(scheduled=2, ok=2)})
    section = generation_section(collector.tokens, {}, accounting, 1.0, ("ttft < 500ms",), True, "tokenizer.json")
    assert section["token_counts"] == "usage (1 requests), tokenizer tokenizer.json (1 requests)"
    assert section["goodput"]["share"] == 1.0 and section["input_tokens"] == 17
    assert collector.histogram("ttft", "chat").get_total_count() == 2  # one a process, merged


def test_a_conversation_class_carries_each_turns_history_and_grows_its_context():
    from loadtest.traffic.payloads import PayloadClass, text_pool
    from loadtest.traffic.protocols import make_protocol

    chat = make_protocol("openai-chat", "m")
    pool = text_pool([PayloadClass("talk", 1, 4, 8, 5, 6, turns=3)], chat.encode_text, 1, 6, chat.encode_prompt)
    bodies = [orjson.loads(p.body) for p in pool.payloads["talk"]]
    assert [len(b["messages"]) for b in bodies] == [1, 3, 5, 1, 3, 5]  # two conversations of three turns
    assert all(b["messages"][-1]["role"] == "user" for b in bodies)
    assert bodies[2]["messages"][:3] == bodies[1]["messages"]  # a turn carries the one before it, unchanged
    assert bodies[3]["messages"][0] != bodies[0]["messages"][0]  # a new conversation starts afresh
    completions = make_protocol("openai-completions", "m")
    pool = text_pool([PayloadClass("talk", 1, 4, 8, 5, 6, turns=2)], None, 1, 2, completions.encode_prompt)
    prompt = orjson.loads(pool.payloads["talk"][1].body)["prompt"]
    assert prompt.count("\n") == 2 and prompt.startswith("user: ") and "\nassistant: " in prompt
