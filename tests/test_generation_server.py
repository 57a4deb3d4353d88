"""The generative target over HTTP: a real server on a free loopback port, started once for the session.

It serves the built SmolLM2 (int8, the faster variant; conftest.generative_target): streamed and
whole chat and text completions in OpenAI's format, usage, a 4xx JSON error for every malformed
request, the server's own record of each stream, and a client that leaves mid-stream giving its slot back.
"""

from __future__ import annotations

import contextlib
import json
import time

import httpx
import pytest

from tests.helpers import GENERATIVE_STREAMS as STREAMS
from tests.helpers import GENERATIVE_WAITING as WAITING

FRANCE = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def target(generative_target):
    """(url, model name, context): conftest's generative server, shared with tests/test_generation_run.py."""
    return generative_target


@pytest.fixture(scope="module")
def client(target):
    with httpx.Client(base_url=target[0], timeout=60) as c:
        yield c


def events(body: str) -> list:
    """The ``data:`` events of an SSE body, JSON decoded, ``[DONE]`` kept as the string."""
    assert body.endswith("\n\n")
    found = []
    for event in body.split("\n\n")[:-1]:
        assert event.startswith("data: "), event
        data = event.removeprefix("data: ")
        found.append(data if data == "[DONE]" else json.loads(data))
    return found


def content(chunks: list, chat: bool = True) -> str:
    key = (lambda c: c["delta"].get("content", "")) if chat else (lambda c: c["text"])
    return "".join(key(e["choices"][0]) for e in chunks if isinstance(e, dict) and e["choices"])


def test_a_streamed_chat_completion_comes_in_openai_chunks_then_usage_and_done(client, target):
    body = {"messages": FRANCE, "max_tokens": 12, "stream": True, "stream_options": {"include_usage": True}}
    answer = client.post("/v1/chat/completions", json=body)
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/event-stream")
    chunks = events(answer.text)
    first, *middle, final, usage, done = chunks
    assert done == "[DONE]"
    assert first["object"] == "chat.completion.chunk" and first["id"].startswith("chatcmpl-")
    assert first["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert all(c["id"] == first["id"] and c["model"] == target[1] for c in chunks[:-1])
    assert all(c["choices"][0]["finish_reason"] is None and c["choices"][0]["delta"]["content"] for c in middle)
    assert final["choices"][0]["delta"] == {} and final["choices"][0]["finish_reason"] in ("stop", "length")
    assert usage["choices"] == [] and usage["usage"]["completion_tokens"] <= 12
    assert usage["usage"]["total_tokens"] == usage["usage"]["prompt_tokens"] + usage["usage"]["completion_tokens"]
    if target[1] == "smollm2":
        assert content(chunks) == "The capital of France is Paris."
        assert final["choices"][0]["finish_reason"] == "stop" and usage["usage"]["completion_tokens"] == 8
    # greedy: the same answer whole
    whole = client.post("/v1/chat/completions", json={"messages": FRANCE, "max_tokens": 12}).json()
    assert whole["object"] == "chat.completion" and whole["choices"][0]["message"]["content"] == content(chunks)
    assert (
        whole["usage"] == usage["usage"]
        and whole["choices"][0]["finish_reason"] == final["choices"][0]["finish_reason"]
    )


def test_a_text_completion_streams_text_chunks_and_stops_at_max_tokens(client):
    body = {"prompt": "Once upon a time", "max_tokens": 6, "ignore_eos": True, "stream": True}
    chunks = events(client.post("/v1/completions", json=body).text)
    *parts, final, done = chunks
    assert done == "[DONE]" and all("usage" not in c for c in chunks[:-1])  # no usage unless asked
    assert all(c["object"] == "text_completion" and c["choices"][0]["text"] for c in parts)
    assert final["choices"][0] == {"index": 0, "text": "", "logprobs": None, "finish_reason": "length"}
    whole = client.post("/v1/completions", json={**body, "stream": False}).json()
    assert whole["choices"][0]["text"] == content(chunks, chat=False)
    assert whole["usage"]["completion_tokens"] == 6 and whole["choices"][0]["finish_reason"] == "length"
    by_ids = client.post("/v1/completions", json={"prompt": [1, 2, 3], "max_tokens": 2}).json()
    assert by_ids["usage"]["prompt_tokens"] == 3 and by_ids["usage"]["completion_tokens"] <= 2


def test_a_stop_string_ends_the_text_before_it_streamed_or_whole(client):
    body = {"prompt": "Once upon a time, there was a little", "max_tokens": 20, "ignore_eos": True}
    text = client.post("/v1/completions", json=body).json()["choices"][0]["text"]
    stop = text[6:9]
    expected = text[: text.find(stop)]
    whole = client.post("/v1/completions", json={**body, "stop": [stop]}).json()
    assert whole["choices"][0]["text"] == expected and whole["choices"][0]["finish_reason"] == "stop"
    chunks = events(client.post("/v1/completions", json={**body, "stop": stop, "stream": True}).text)
    assert content(chunks, chat=False) == expected and chunks[-2]["choices"][0]["finish_reason"] == "stop"


def test_the_servers_record_of_a_stream_matches_what_the_client_saw(client):
    sent = time.perf_counter_ns()  # CLOCK_MONOTONIC, as the server's: comparable on one host
    body = {"messages": FRANCE, "max_tokens": 10, "stream": True, "stream_options": {"include_usage": True}}
    chunks = events(client.post("/v1/chat/completions", json=body).text)
    done = time.perf_counter_ns()
    record = client.get(f"/debug/streams/{chunks[0]['id']}").json()
    usage = chunks[-2]["usage"]
    assert record["id"] == chunks[0]["id"] and record["stream"] is True and record["endpoint"] == "chat"
    assert record["text"] == content(chunks)
    assert record["prompt_tokens"] == usage["prompt_tokens"]
    assert record["completion_tokens"] == usage["completion_tokens"] == len(record["token_times_ns"])
    assert record["finish_reason"] == chunks[-3]["choices"][0]["finish_reason"]
    times = record["token_times_ns"]
    assert (
        sent < record["received_ns"] < times[0] and times == sorted(times) and times[-1] <= record["finished_ns"] < done
    )
    missing = client.get("/debug/streams/chatcmpl-nothing")
    assert missing.status_code == 404 and "error" in missing.json()


def long_stream(context: int) -> dict:
    """A completion that takes seconds even on the tiny model: most of the context, eos ignored."""
    return {"prompt": "Tell me a long story.", "max_tokens": context - 100, "ignore_eos": True, "stream": True}


def test_a_client_that_leaves_mid_stream_gives_its_slot_back(client, target):
    body = long_stream(target[2])
    with client.stream("POST", "/v1/completions", json=body) as answer:
        lines = answer.iter_lines()
        first = json.loads(next(line for line in lines if line.startswith("data: ")).removeprefix("data: "))
    record = _settled(client, first["id"])
    assert record["finish_reason"] == "cancelled" and record["completion_tokens"] < body["max_tokens"]
    _until(client, lambda: _metric(client, "generation_running_sequences") == 0)


def test_a_full_queue_is_answered_503_and_leaving_clients_free_it(client, target):
    body = long_stream(target[2])
    with contextlib.ExitStack() as stack:
        held = [stack.enter_context(client.stream("POST", "/v1/completions", json=body)) for _ in range(STREAMS)]
        _until(client, lambda: _metric(client, "generation_running_sequences") == STREAMS)
        held += [stack.enter_context(client.stream("POST", "/v1/completions", json=body)) for _ in range(WAITING)]
        assert [h.status_code for h in held] == [200] * (STREAMS + WAITING)
        refused = client.post("/v1/completions", json=body)
        assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
        assert "waiting" in refused.json()["error"]["message"]
    _until(client, lambda: _metric(client, "generation_running_sequences") == 0)
    assert _metric(client, "generation_waiting_requests") == 0
    assert client.post("/v1/completions", json={"prompt": "Hi", "max_tokens": 2}).status_code == 200


def _until(client: httpx.Client, condition, seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "not within the time"
        time.sleep(0.02)


def _settled(client: httpx.Client, id_: str) -> dict:
    _until(client, lambda: client.get(f"/debug/streams/{id_}").json()["finish_reason"] is not None)
    return client.get(f"/debug/streams/{id_}").json()


def _metric(client: httpx.Client, name: str) -> float:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in /metrics")


def _malformed(context: int) -> list[tuple[str, object, int, str]]:
    chat, text = "/v1/chat/completions", "/v1/completions"
    user = {"role": "user", "content": "hi"}
    return [
        (chat, b"{not json", 400, "invalid JSON"),
        (chat, b'{"messages": [', 400, "invalid JSON"),
        (chat, [user], 400, "JSON object"),
        (chat, {}, 400, "'messages' is required"),
        (chat, {"messages": "hi"}, 400, "must be a list"),
        (chat, {"messages": []}, 400, "at least one"),
        (chat, {"messages": [None]}, 400, "must be an object"),
        (chat, {"messages": [{"content": "hi"}]}, 400, "role must be a string"),
        (chat, {"messages": [{"role": "wizard", "content": "hi"}]}, 400, "role must be one of"),
        (chat, {"messages": [{"role": "tool", "content": "hi"}]}, 400, "role must be one of"),
        (chat, {"messages": [{"role": "user", "content": 42}]}, 400, "content must be a string"),
        (chat, {"messages": [{"role": "user", "content": {"text": "hi"}}]}, 400, "content must be a string"),
        (chat, {"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, 400, "text part"),
        (chat, {"messages": [{"role": "user", "content": None}]}, 400, "content must be a string"),
        (chat, {"messages": [user], "max_tokens": 0}, 400, "at least 1"),
        (chat, {"messages": [user], "max_tokens": -5}, 400, "at least 1"),
        (chat, {"messages": [user], "max_tokens": 10**9}, 400, f"maximum context length is {context}"),
        (chat, {"messages": [user], "max_tokens": 2.5}, 400, "must be an integer"),
        (chat, {"messages": [user], "max_tokens": True}, 400, "must be an integer"),
        (chat, {"messages": [user], "temperature": "hot"}, 400, "must be a number"),
        (chat, {"messages": [user], "temperature": -1}, 400, "at least 0"),
        (chat, {"messages": [user], "top_p": 0}, 400, "above 0"),
        (chat, {"messages": [user], "stream": "yes"}, 400, "must be a boolean"),
        (chat, {"messages": [user], "stream_options": {"include_usage": True}}, 400, "only when 'stream'"),
        (chat, {"messages": [user], "stream": True, "stream_options": []}, 400, "must be an object"),
        (chat, {"messages": [user], "n": 3}, 400, "not supported"),
        (chat, {"messages": [user], "logprobs": True}, 400, "not supported"),
        (chat, {"messages": [user], "stop": 7}, 400, "'stop' must be"),
        (chat, {"messages": [user], "seed": "x"}, 400, "must be an integer"),
        (chat, {"messages": [user], "min_tokens": 20, "max_tokens": 10}, 400, "must not exceed"),
        (chat, {"messages": [user], "model": 7}, 400, "'model' must be a string"),
        (chat, {"messages": [user], "model": "gpt-4"}, 404, "does not exist"),
        (chat, {"messages": [{"role": "user", "content": "word " * context}]}, 400, "maximum context length"),
        (text, {"prompt": "x" * (context * 300)}, 400, "maximum context length"),
        (text, {}, 400, "'prompt' is required"),
        (text, {"prompt": ""}, 400, "empty"),
        (text, {"prompt": {"text": "hi"}}, 400, "string or a list of token ids"),
        (text, {"prompt": [1, "a"]}, 400, "string or a list of token ids"),
        (text, {"prompt": ["a", "b"]}, 400, "one a request"),
        (text, {"prompt": [10**9]}, 400, "out of this model's vocabulary"),
        (text, {"prompt": [-1]}, 400, "out of this model's vocabulary"),
        (text, {"prompt": "hi", "max_tokens": 0}, 400, "at least 1"),
        (text, {"prompt": "hi", "echo": True}, 400, "not supported"),
    ]


def test_every_malformed_request_gets_a_4xx_with_openais_error_shape(client, target):
    for path, body, status, message in _malformed(target[2]):
        if isinstance(body, bytes):
            answer = client.post(path, content=body, headers={"content-type": "application/json"})
        else:
            answer = client.post(path, json=body)
        assert answer.status_code == status, (body, answer.text)
        error = answer.json()["error"]
        assert message in error["message"] and error["type"] == "invalid_request_error", (body, error)
    wrong_type = client.post("/v1/completions", content=b"prompt=hi", headers={"content-type": "text/plain"})
    assert wrong_type.status_code == 415
    assert client.get("/v1/chat/completions").status_code == 405
    assert client.get("/v2/health/ready").status_code == 200  # and the server is still up


def test_v1_models_lists_the_model_and_metrics_count_tokens(client, target):
    models = client.get("/v1/models").json()
    assert models["object"] == "list"
    assert [(m["id"], m["max_model_len"]) for m in models["data"]] == [(target[1], target[2])]
    assert _metric(client, "generation_completion_tokens_total") > 0
    assert _metric(client, "generation_time_to_first_token_seconds_count") > 0
    assert _metric(client, "generation_decode_batch_size_count") > 0
