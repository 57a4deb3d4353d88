"""What the server reports about itself: Triton's statistics extension and its Prometheus metrics.

The session server is shared with other tests, so every count is read as a difference.
"""

from __future__ import annotations

import asyncio
import re
import time

import httpx
import pytest

from loadtest.engine.server_metrics import read_metrics, total
from reference_server.capture import recorded

TEXT = "the quick brown fox jumps over the lazy dog and keeps on running " * 6  # about 80 tokens
DURATION_STATS = {"success", "fail", "queue", "compute_input", "compute_infer", "compute_output"}
BATCH_STAT = {"batch_size", "compute_input", "compute_infer", "compute_output"}


def text_request(texts: list[str]) -> dict:
    return {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [len(texts)], "data": texts}]}


def minilm_stats(client: httpx.Client) -> dict:
    (stat,) = client.get("/v2/models/minilm/stats").json()["model_stats"]
    return stat


def grown(after: dict, before: dict, *path: str) -> int:
    for key in path:
        after, before = after[key], before[key]
    return after - before


def test_stats_answer_in_tritons_shape_and_count_requests_rows_and_batches(client):
    before = minilm_stats(client)
    for _ in range(3):  # one after another: each request is a batch of its own
        assert client.post("/v2/models/minilm/infer", json=text_request(["reset my password"])).status_code == 200
    assert client.post("/v2/models/minilm/infer", json=text_request(["two", "rows"])).status_code == 200
    assert client.post("/v2/models/minilm/infer", json={"inputs": []}).status_code == 400
    after = minilm_stats(client)

    assert set(after) == {"name", "version", "last_inference", "inference_count", "execution_count"} | {
        "inference_stats",
        "batch_stats",
    }
    assert (after["name"], after["version"]) == ("minilm", "fp32")
    assert set(after["inference_stats"]) == DURATION_STATS | {"cache_hit", "cache_miss"}
    assert all(set(stat) == {"count", "ns"} for stat in after["inference_stats"].values())
    assert grown(after, before, "inference_count") == 5  # rows
    assert grown(after, before, "execution_count") == 4  # batches
    for stat, requests in (("success", 4), ("queue", 4), ("compute_infer", 4), ("fail", 1)):
        assert grown(after, before, "inference_stats", stat, "count") == requests, stat
        assert grown(after, before, "inference_stats", stat, "ns") > 0, stat
    assert abs(after["last_inference"] - time.time() * 1000) < 60_000  # epoch milliseconds
    sizes = {b["batch_size"]: b for b in after["batch_stats"]}
    assert all(set(b) == BATCH_STAT for b in after["batch_stats"]) and list(sizes) == sorted(sizes)
    earlier = {b["batch_size"]: b["compute_infer"]["count"] for b in before["batch_stats"]}
    assert sizes[1]["compute_infer"]["count"] - earlier.get(1, 0) == 3
    assert sizes[2]["compute_infer"]["count"] - earlier.get(2, 0) == 1


def test_stats_of_every_model_of_a_version_and_of_an_unknown_one(client):
    everyone = client.get("/v2/models/stats").json()["model_stats"]
    assert [(s["name"], s["version"]) for s in everyone] == [("minilm", "fp32"), ("fraud", "fp32")]
    assert client.get("/v2/models/fraud/versions/fp32/stats").json()["model_stats"][0]["name"] == "fraud"
    for path in ("/v2/models/nope/stats", "/v2/models/minilm/versions/int8/stats"):
        response = client.get(path)
        assert response.status_code == 404 and "error" in response.json(), path
    assert "statistics" in client.get("/v2").json()["extensions"]
    assert not recorded("GET", "/v2/models/minilm/stats")  # a scrape, kept out of captures like /metrics


def test_queue_time_is_observed_once_per_request_not_per_batch(server, client):
    requests = 12
    before, stats_before = read_metrics(server.url + "/metrics"), minilm_stats(client)

    async def together() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as c:
            return await asyncio.gather(
                *(c.post("/v2/models/minilm/infer", json=text_request([TEXT])) for _ in range(requests))
            )

    responses = asyncio.run(together())
    after, stats_after = read_metrics(server.url + "/metrics"), minilm_stats(client)
    assert [r.status_code for r in responses] == [200] * requests

    def delta(name: str) -> float:
        return (total(after, name, model="minilm", version="fp32") or 0) - (
            total(before, name, model="minilm", version="fp32") or 0  # None: no series yet
        )

    batches = {int(re.search(r"batch;desc=(\d+)", r.headers["server-timing"])[1]) for r in responses}
    assert max(batches) > 1, "no two requests shared a batch: nothing here tells per request from per batch"
    assert delta("inference_queue_wait_seconds_count") == requests
    assert delta("inference_batch_size_count") < requests  # executions: fewer than the requests they served
    assert delta("inference_batch_size_sum") == grown(stats_after, stats_before, "inference_count") == requests
    assert grown(stats_after, stats_before, "inference_stats", "queue", "count") == requests
    assert grown(stats_after, stats_before, "execution_count") == delta("inference_batch_size_count")


def test_metrics_carry_the_version_label_the_ratio_suffix_and_the_process_collectors(server):
    samples = read_metrics(server.url + "/metrics")
    names = {name for name, _ in samples}
    assert {"process_cpu_seconds_total", "process_resident_memory_bytes", "python_info"} <= names
    assert "python_gc_collections_total" in names
    assert total(samples, "inference_padding_efficiency_ratio_count", model="minilm", version="fp32") is not None
    per_model = [labels for name, labels in samples if name.startswith("inference_")]
    assert per_model and all(("version", "fp32") in labels for labels in per_model)
    assert total(samples, "inference_queue_rows") is not None  # the harness's reads, by a subset of labels
    assert total(samples, "inference_requests_in_flight") is not None


tritonclient_http = pytest.importorskip("tritonclient.http")


def test_tritonclient_reads_the_statistics(server, client):
    triton = tritonclient_http.InferenceServerClient(url=server.url.removeprefix("http://"))
    ours = minilm_stats(client)
    (theirs,) = triton.get_inference_statistics("minilm")["model_stats"]
    assert (theirs["name"], theirs["version"], theirs["inference_count"]) == ("minilm", "fp32", ours["inference_count"])
    assert len(triton.get_inference_statistics()["model_stats"]) == 2
    assert triton.get_inference_statistics("fraud", "fp32")["model_stats"][0]["name"] == "fraud"
