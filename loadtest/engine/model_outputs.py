"""Collect what a model answers: send the scenario's inputs to a server and keep the output tensors.

``compare`` asks not only which variant is faster but whether it answers the same. The same N
inputs (the scenario's own payload pool, drawn from its seed) go to each variant twice:

- at batch 1: one request at a time, so every input is inferred alone;
- under load: all N at once from a pool of concurrent clients, so the server's dynamic batcher
  puts each input in a padded batch of other inputs.

Dynamic quantisation (int8) scales activations per batch, padding included, so an int8 model's
answer for an input depends on which inputs it was batched with; an fp32 model's hardly does.
Comparing a variant's batch-1 outputs with its own under-load outputs measures that effect.

A generative model's answers are its greedy tokens (``temperature`` 0, the stream read chunk by
chunk: ``collect_tokens``), at most ``AGREEMENT_TOKENS`` of them, each prompt alone and then all at
once, so continuous batching decodes it beside the others.

The batch each request ran in is read from the ``Server-Timing`` header the reference server
sends (``batch;desc=ROWS``). A server that does not report it gets ``None`` for the batch sizes;
the mean concurrency (requests in flight on average: summed latency over wall time) is always
reported, and is what to read instead.
"""

from __future__ import annotations

import base64
import re
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import httpx
import numpy as np
import orjson

from loadtest.errors import ConfigError, RunError
from loadtest.traffic.payloads import Payload, PayloadPool
from loadtest.traffic.protocols import GENERATIVE, Protocol
from loadtest.traffic.sse import StreamReader

READABLE = ("oip-v2", "openai-embeddings", *GENERATIVE)  # protocols whose answers can be compared
AGREEMENT_TOKENS = 32  # a generative answer's tokens compared, at most
_BATCH = re.compile(r"(?:^|,)\s*batch;desc=\"?(\d+)")
_HEADERS = {"content-type": "application/json"}
_RETRIES = 5  # refusals with Retry-After waited out before a comparison gives up


@dataclass(frozen=True)
class Collected:
    """The output rows of N requests, in input order, and the batching they were inferred in."""

    outputs: np.ndarray  # rows x D
    batch_rows: np.ndarray | None  # per request, as the server reported it; None if it did not
    mean_concurrency: float
    seconds: float

    def describe(self) -> dict:
        rows = self.batch_rows
        return {
            "requests": len(rows) if rows is not None else None,
            "mean_batch_size": float(rows.mean()) if rows is not None else None,
            "max_batch_size": int(rows.max()) if rows is not None else None,
            "mean_concurrency": self.mean_concurrency,
            "seconds": self.seconds,
        }


def distinct_payloads(pool: PayloadPool, n: int) -> list[Payload]:
    """The first ``n`` distinct bodies in the pool's arrival order (fewer if the pool holds fewer).

    Distinct, so that no input is its own nearest neighbour under another index.
    """
    seen: set[bytes] = set()
    picked: list[Payload] = []
    for index in range(max(64 * n, 4096)):
        payload = pool.pick(index)
        if payload.body not in seen:
            seen.add(payload.body)
            picked.append(payload)
            if len(picked) == n:
                break
    return picked


def batch_rows(server_timing: str | None) -> int | None:
    """The batch size in a ``Server-Timing`` header (``batch;desc=32``), or None if it has none."""
    match = _BATCH.search(server_timing or "")
    return int(match.group(1)) if match else None


def output_rows(protocol: str, body: bytes) -> np.ndarray:
    """The output rows of one answer (rows x D): the first OIP output, or the OpenAI embeddings."""
    try:
        doc = orjson.loads(body)
        if protocol == "oip-v2":
            tensor = doc["outputs"][0]
            shape = [int(d) for d in tensor["shape"]]
            data = np.asarray(tensor["data"], dtype=np.float64).reshape(shape)
            return data.reshape(shape[0] if shape else 1, -1)
        if protocol == "openai-embeddings":
            items = sorted(doc["data"], key=lambda item: item["index"])
            return np.stack([_embedding(item["embedding"]) for item in items])
    except (orjson.JSONDecodeError, KeyError, IndexError, TypeError, ValueError) as exc:
        raise RunError(f"a {protocol} answer holds no readable output tensor ({type(exc).__name__}: {exc})") from None
    raise ConfigError(protocol, None, f"output agreement needs {' or '.join(READABLE)}, whose answers hold tensors")


def _embedding(value: list[float] | str) -> np.ndarray:
    if isinstance(value, str):
        return np.frombuffer(base64.b64decode(value), dtype="<f4").astype(np.float64)
    return np.asarray(value, dtype=np.float64)


def _until_answered(client: httpx.Client, protocol: Protocol, attempt: Callable[[], tuple[object, httpx.Response]]):
    """What ``attempt`` (one request: its result, or None and the refusal) returns once the server answers.

    A 503 or 429 with Retry-After is waited out and the request sent again, a few times. A server
    that sheds load (ours past its queue time limit, Triton, KServe behind a queue) may refuse a
    burst it would serve a moment later; outputs are compared, not latency, so waiting is right.
    Any other failure ends the comparison, which needs every input's answer.
    """
    for tries in range(_RETRIES + 1):
        try:
            result, answer = attempt()
        except httpx.HTTPError as exc:
            failed = f"{type(exc).__name__}: {exc}"
            raise RunError(f"a request to {client.base_url}{protocol.path} failed: {failed}") from None
        if result is not None:
            return result
        if answer.status_code not in (429, 503) or tries == _RETRIES:
            break
        time.sleep(_retry_after(answer.headers.get("retry-after")))
    raise RunError(
        f"{client.base_url}{protocol.path} answered {answer.status_code}: {answer.text[:200]}; "
        "outputs can only be compared when every request succeeds"
    )


def _send(client: httpx.Client, protocol: Protocol, payload: Payload) -> tuple[np.ndarray, int | None, float]:
    """One input's output rows, the batch the server ran it in, and its latency."""

    def attempt() -> tuple[tuple | None, httpx.Response]:
        started = time.perf_counter()
        answer = client.post(protocol.path, content=payload.body, headers=_HEADERS)
        if answer.status_code != 200:
            return None, answer
        elapsed = time.perf_counter() - started
        return (
            output_rows(protocol.name, answer.content),
            batch_rows(answer.headers.get("server-timing")),
            elapsed,
        ), answer

    return _until_answered(client, protocol, attempt)


def _retry_after(value: str | None) -> float:
    """Seconds from a Retry-After header (delta-seconds only), within 0.1 to 5 s; 1 s when absent or a date."""
    try:
        return min(5.0, max(0.1, float(value))) if value is not None else 1.0
    except ValueError:
        return 1.0


def _collected(answers: list[tuple[np.ndarray, int | None, float]], seconds: float) -> Collected:
    rows = [batch for _, batch, _ in answers]
    reported = all(batch is not None for batch in rows)
    return Collected(
        outputs=np.concatenate([output for output, _, _ in answers]),
        batch_rows=np.asarray(rows, dtype=np.int64) if reported else None,
        mean_concurrency=sum(latency for _, _, latency in answers) / seconds if seconds > 0 else 1.0,
        seconds=seconds,
    )


def collect_sequential(url: str, protocol: Protocol, payloads: list[Payload], timeout: float = 30.0) -> Collected:
    """Batch 1: one request at a time, each answered before the next is sent."""
    with httpx.Client(base_url=url, timeout=timeout) as client:
        started = time.perf_counter()
        answers = [_send(client, protocol, payload) for payload in payloads]
        return _collected(answers, time.perf_counter() - started)


def _all_at_once(url: str, protocol: Protocol, payloads: list[Payload], concurrency: int, timeout: float, send):
    """``send(client, protocol, payload)`` for every payload at once from ``concurrency`` clients: the answers, in
    input order, and the seconds they took."""
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    with (
        httpx.Client(base_url=url, timeout=timeout, limits=limits) as client,
        ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="agreement") as pool,
    ):
        started = time.perf_counter()
        answers = list(pool.map(lambda payload: send(client, protocol, payload), payloads))
        return answers, time.perf_counter() - started


def collect_concurrent(
    url: str, protocol: Protocol, payloads: list[Payload], concurrency: int = 32, timeout: float = 30.0
) -> Collected:
    """Under load: every request sent at once from ``concurrency`` clients, so the server batches them."""
    return _collected(*_all_at_once(url, protocol, payloads, concurrency, timeout, _send))


@dataclass(frozen=True)
class Generated:
    """Greedy answers to N prompts, in input order, each a list of tokens (streamed chunks)."""

    tokens: list[list[str]]
    mean_concurrency: float
    seconds: float

    def describe(self) -> dict:
        return {
            "requests": len(self.tokens),
            "mean_batch_size": None,
            "max_batch_size": None,
            "mean_concurrency": self.mean_concurrency,
            "seconds": self.seconds,
            "tokens": sum(map(len, self.tokens)),
        }


def greedy_body(payload: Payload, max_tokens: int = AGREEMENT_TOKENS) -> bytes:
    """The payload's prompt asked for greedily (temperature 0), streamed, to its natural end or ``max_tokens``."""
    doc = orjson.loads(payload.body)
    doc.update(temperature=0, stream=True, max_tokens=min(int(doc.get("max_tokens") or max_tokens), max_tokens))
    doc.pop("ignore_eos", None)
    doc.pop("stream_options", None)
    return orjson.dumps(doc)


def _generate(client: httpx.Client, protocol: Protocol, payload: Payload) -> tuple[list[str], float]:
    """One prompt's greedy tokens, read from its stream, and its latency."""
    body = greedy_body(payload)

    def attempt() -> tuple[tuple | None, httpx.Response]:
        started = time.perf_counter()
        with client.stream("POST", protocol.path, content=body, headers=_HEADERS) as answer:
            if answer.status_code != 200:
                answer.read()
                return None, answer
            reader = StreamReader()
            for chunk in answer.iter_raw():
                reader.feed(chunk, time.perf_counter())
        stream = reader.finish(time.perf_counter())
        if stream.error is not None:
            raise RunError(f"{client.base_url}{protocol.path}: a stream failed: {stream.detail}")
        return (stream.text, time.perf_counter() - started), answer

    return _until_answered(client, protocol, attempt)


def collect_tokens(
    url: str, protocol: Protocol, payloads: list[Payload], concurrency: int = 1, timeout: float = 120.0
) -> Generated:
    """Greedy answers: one prompt at a time (``concurrency`` 1), or all at once from that many clients."""
    answers, seconds = _all_at_once(url, protocol, payloads, concurrency, timeout, _generate)
    return Generated(
        [tokens for tokens, _ in answers], sum(latency for _, latency in answers) / seconds if seconds else 1.0, seconds
    )


def model_kind(url: str, protocol: Protocol, model: str, timeout: float = 10.0) -> str | None:
    """The model's kind as the server describes it (OIP model metadata ``parameters.kind``), if it does."""
    if protocol.name == "openai-embeddings":
        return "text-embedding"
    if protocol.name in GENERATIVE:
        return "text-generation"
    if protocol.name != "oip-v2":
        return None
    try:
        answer = httpx.get(f"{url}/v2/models/{model}", timeout=timeout)
        kind = answer.json().get("parameters", {}).get("kind") if answer.status_code == 200 else None
    except (httpx.HTTPError, ValueError, AttributeError):
        return None
    return kind if isinstance(kind, str) else None
