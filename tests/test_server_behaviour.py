"""How the real server behaves under load and at the edges: batching, back-pressure, shutdown, clients."""

from __future__ import annotations

import asyncio
import re
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest

from reference_server.batcher import Batcher, BatchingConfig
from reference_server.errors import ReferenceServerError
from reference_server.launch import running_server, start_server
from reference_server.models import SessionSettings, load_model

LONG_TEXT = "the quick brown fox jumps over the lazy dog and keeps on running " * 30


def text_request(texts: list[str]) -> dict:
    return {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [len(texts)], "data": texts}]}


def batch_sizes(url: str, requests: int, concurrency: int) -> list[int]:
    def one(i: int) -> int:
        with httpx.Client(base_url=url, timeout=60) as c:
            r = c.post("/v2/models/minilm/infer", json=text_request([f"sentence number {i} about load"]))
            r.raise_for_status()
            return int(re.search(r"batch;desc=(\d+)", r.headers["server-timing"])[1])

    with ThreadPoolExecutor(concurrency) as pool:
        return list(pool.map(one, range(requests)))


def test_concurrent_requests_are_batched_together(server):
    assert max(batch_sizes(server.url, 48, 16)) > 1


def test_without_batching_every_request_runs_alone(models_dir):
    with running_server(["--models-dir", str(models_dir), "--no-batching"]) as s:
        assert set(batch_sizes(s.url, 24, 8)) == {1}


def test_a_full_queue_answers_503_with_retry_after_and_recovers(models_dir):
    args = ["--models-dir", str(models_dir), "--max-batch-size", "1", "--max-queue-rows", "2"]
    with running_server(args) as s:

        def one(_: int) -> httpx.Response:
            with httpx.Client(base_url=s.url, timeout=60) as c:
                return c.post("/v2/models/minilm/infer", json=text_request([LONG_TEXT]))

        with ThreadPoolExecutor(12) as pool:
            responses = list(pool.map(one, range(12)))
        statuses = [r.status_code for r in responses]
        assert set(statuses) == {200, 503}, statuses
        refused = next(r for r in responses if r.status_code == 503)
        assert refused.headers["retry-after"] == "1" and "queue is full" in refused.json()["error"]
        with httpx.Client(base_url=s.url) as c:
            assert c.post("/v2/models/minilm/infer", json=text_request(["again"])).status_code == 200
            assert re.search(r'inference_queue_rows\{model="minilm",version="fp32"\} 0', c.get("/metrics").text)


def test_sigterm_lets_in_flight_requests_finish(models_dir):
    s = start_server(["--models-dir", str(models_dir)])
    result: dict = {}

    def slow_request() -> None:
        with httpx.Client(base_url=s.url, timeout=60) as c:
            result["response"] = c.post("/v2/models/minilm/infer", json=text_request([LONG_TEXT] * 16))

    worker = threading.Thread(target=slow_request)
    worker.start()
    with httpx.Client(base_url=s.url) as c:  # SIGTERM only once the request is inside the server
        while not re.search(
            r'inference_requests_in_flight\{endpoint="infer",model="minilm",version="fp32"\} 1', c.get("/metrics").text
        ):
            assert worker.is_alive()
    assert s.stop(timeout=60) == 0
    assert not s.log_path.parent.exists(), "stop() leaves its temporary work directory behind"
    assert "serving minilm" in s.log()  # the log outlives the directory, for post-mortems
    worker.join()
    response = result["response"]
    assert response.status_code == 200
    assert response.json()["outputs"][0]["shape"] == [16, 384]


def test_long_text_can_be_rejected_instead_of_truncated(models_dir):
    with (
        running_server(["--models-dir", str(models_dir), "--long-text", "reject"]) as s,
        httpx.Client(base_url=s.url) as c,
    ):
        response = c.post("/v2/models/minilm/infer", json=text_request(["short", LONG_TEXT]))
        assert response.status_code == 400
        assert "row 1" in response.json()["error"] and "256" in response.json()["error"]
        assert c.post("/v2/models/minilm/infer", json=text_request(["short"])).status_code == 200


def test_server_binds_loopback_by_default(server):
    assert server.url.startswith("http://127.0.0.1:")


def test_length_grouping_pads_less_and_keeps_every_answer_right(models_dir):
    model = load_model(models_dir, "minilm", "fp32", SessionSettings())
    texts = [("short query" if i % 2 == 0 else LONG_TEXT[: 40 + 37 * i]) for i in range(16)]
    alone = [model.infer(model.prepare_texts([t]).rows)["embedding"][0] for t in texts]

    async def run(group: bool) -> tuple[list[float], list[np.ndarray]]:
        efficiency: list[float] = []
        batcher = Batcher(
            model,
            BatchingConfig(max_batch_size=4, max_queue_delay_ms=50, group_by_length=group),
            observe=lambda rows, queue, infer, eff: efficiency.append(eff),
        )
        batcher.start()
        results = await asyncio.gather(*(batcher.submit(model.prepare_texts([t])) for t in texts))
        await batcher.stop()
        return efficiency, [outputs["embedding"][0] for outputs, _ in results]

    grouped, grouped_out = asyncio.run(run(True))
    fifo, fifo_out = asyncio.run(run(False))
    assert np.mean(grouped) > np.mean(fifo) + 0.2, (grouped, fifo)
    for outputs in (grouped_out, fifo_out):
        assert np.abs(np.stack(outputs) - np.stack(alone)).max() < 1e-5


def test_a_long_request_does_not_join_a_batch_of_short_ones_past_the_padding_budget(models_dir):
    # Seven short queries and one long text queued together. Padded into one batch, the short rows
    # would cost as much as the long one each (31 short + 1 long: 295 ms against 60 ms apart, measured).
    model = load_model(models_dir, "minilm", "fp32", SessionSettings())
    texts = ["short query one"] * 7 + [LONG_TEXT[:300]]
    alone = [model.infer(model.prepare_texts([t]).rows)["embedding"][0] for t in texts]

    async def run(budget: int) -> tuple[list[tuple[int, float]], list[np.ndarray]]:
        batches: list[tuple[int, float]] = []
        batcher = Batcher(
            model,
            BatchingConfig(max_batch_size=8, max_queue_delay_ms=100, max_padding_tokens=budget),
            observe=lambda rows, queue, infer, eff: batches.append((rows, eff)),
        )
        batcher.start()
        results = await asyncio.gather(*(batcher.submit(model.prepare_texts([t])) for t in texts))
        await batcher.stop()
        return batches, [outputs["embedding"][0] for outputs, _ in results]

    budgeted, budgeted_out = asyncio.run(run(16))
    unlimited, unlimited_out = asyncio.run(run(-1))
    assert sorted(rows for rows, _ in budgeted) == [1, 7] and all(eff == 1.0 for _, eff in budgeted), budgeted
    assert [rows for rows, _ in unlimited] == [8] and unlimited[0][1] < 0.3, unlimited
    for outputs in (budgeted_out, unlimited_out):
        assert np.abs(np.stack(outputs) - np.stack(alone)).max() < 1e-5


tritonclient_http = pytest.importorskip("tritonclient.http")


@pytest.mark.parametrize("binary", [True, False], ids=["binary tensors", "json tensors"])
def test_tritonclient_works_unchanged(server, reference_embeddings, binary):
    sentences, expected = reference_embeddings
    client = tritonclient_http.InferenceServerClient(url=server.url.removeprefix("http://"))
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("minilm")
    assert client.get_model_metadata("minilm")["outputs"][0]["name"] == "embedding"

    text = tritonclient_http.InferInput("text", [3], "BYTES")
    text.set_data_from_numpy(np.array([s.encode() for s in sentences[:3]], dtype=object), binary_data=binary)
    wanted = tritonclient_http.InferRequestedOutput("embedding", binary_data=binary)
    embedding = client.infer("minilm", [text], outputs=[wanted]).as_numpy("embedding")
    assert embedding.shape == (3, 384) and np.abs(embedding - expected[:3]).max() <= 1e-5

    features = tritonclient_http.InferInput("features", [2, 8], "FP32")
    features.set_data_from_numpy(np.full((2, 8), 2.0, np.float32), binary_data=binary)
    probabilities = client.infer("fraud", [features]).as_numpy("probabilities")
    assert probabilities.shape == (2, 2)


def test_a_server_that_cannot_start_says_why_and_leaves_no_work_directory(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    with pytest.raises(ReferenceServerError, match="exited with 2") as failure:
        start_server(["--models-dir", str(tmp_path / "nowhere")])
    assert "not built" in str(failure.value) or "nowhere" in str(failure.value)
    assert list(tmp_path.iterdir()) == []
