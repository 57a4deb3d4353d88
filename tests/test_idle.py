"""Waiting for an idle target before a capacity step: its /metrics, else a probe; and its cores free of other work."""

from __future__ import annotations

import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pandas as pd
import psutil
import pytest

from loadtest.commands.searcher import other_work
from loadtest.engine.idle import METRICS, PROBE, IdleWatch, ProbeRequest
from loadtest.engine.server_metrics import IN_FLIGHT, QUEUE_ROWS, metrics_url, read_metrics, total
from tests.servers import serve

MINILM = ProbeRequest(
    "/v2/models/minilm/infer",
    b'{"inputs":[{"name":"text","shape":[1],"datatype":"BYTES","data":["a short query"]}]}',
)
LONG = ('{"inputs":[{"name":"text","shape":[1],"datatype":"BYTES","data":["%s"]}]}' % ("word " * 200)).encode()


def in_flight_and_queued(url: str) -> tuple[float, float]:
    samples = read_metrics(metrics_url(url))
    return total(samples, IN_FLIGHT) or 0.0, total(samples, QUEUE_ROWS) or 0.0


def test_a_server_with_a_backlog_is_idle_only_once_its_metrics_show_nothing_in_flight_or_queued(server):
    watch = IdleWatch(server.url, MINILM, max_wait_s=30.0)
    assert watch.signal == METRICS and "in flight 0 and queued 0" in watch.criterion
    quiet = watch.wait()
    assert quiet.idle and quiet.waited_s < 1.0

    def send(_: int) -> None:
        with httpx.Client(base_url=server.url, timeout=60) as client:
            client.post(MINILM.path, content=LONG, headers={"content-type": "application/json"})

    with ThreadPoolExecutor(24) as pool:
        pending = [pool.submit(send, i) for i in range(24)]
        deadline = time.monotonic() + 10
        while in_flight_and_queued(server.url) == (0.0, 0.0) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert in_flight_and_queued(server.url) != (0.0, 0.0), "the backlog never showed on /metrics"
        drained = watch.wait()
        assert drained.idle and drained.signal == METRICS and drained.waited_s > 0.1
        assert in_flight_and_queued(server.url) == (0.0, 0.0)
        assert [p.result() for p in pending]  # every request was answered: idle came after the backlog
    assert drained.as_dict()["last"] == "in flight 0, queued 0"


def test_without_metrics_a_probe_waits_until_its_latency_is_back_to_the_idle_level():
    slow_until = [0.0]

    def behave() -> None:  # a backlog: each request waits 150 ms until it clears
        if time.monotonic() < slow_until[0]:
            time.sleep(0.15)

    with serve(behave) as url:
        watch = IdleWatch(url, ProbeRequest("/infer", b"{}"), max_wait_s=10.0)
        assert watch.signal == PROBE and watch.baseline_ms < 50 and "probe" in watch.criterion
        slow_until[0] = time.monotonic() + 1.0
        drained = watch.wait()
        assert drained.idle and drained.signal == PROBE
        assert 0.8 < drained.waited_s < 3.0, drained


def test_the_wait_is_bounded_and_says_when_the_target_never_became_idle():
    slow = [False]

    def behave() -> None:
        if slow[0]:
            time.sleep(0.1)

    with serve(behave) as url:
        watch = IdleWatch(url, ProbeRequest("/infer", b"{}"), max_wait_s=0.5)
        slow[0] = True
        busy = watch.wait()
    assert not busy.idle and 0.5 <= busy.waited_s < 1.5
    assert busy.last.startswith("probe ") and "idle" in busy.last


def test_an_idle_server_whose_core_is_busy_with_other_work_is_waited_for_and_the_wait_says_so(server):
    core = max(psutil.Process().cpu_affinity())
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        psutil.Process(hog.pid).cpu_affinity([core])
        busy = IdleWatch(server.url, MINILM, max_wait_s=1.5, cores=[core]).wait()
    finally:
        hog.kill()
        hog.wait()
    assert busy.idle and busy.quiet is False and busy.other_work > 0.8, busy  # the server idle, its core not
    assert busy.waited_s >= 1.5 and f"cores [{core}]" in busy.last
    assert "its cores [0] under 20% busy with other work" in IdleWatch(server.url, MINILM, cores=[0]).criterion


def test_the_other_work_on_a_steps_server_cores_is_their_busy_time_less_the_servers_own(tmp_path):
    frame = pd.DataFrame(
        {
            "second": [0.0, 1.0, 2.0, 3.0],
            "server_cpu_cores": [0.5, 0.9, 0.3, None],  # the last second: no reading, left out
            "core0_busy_pct": [90.0, 95.0, 30.0, 100.0],
            "core1_busy_pct": [10.0, 10.0, 10.0, 10.0],
        }
    )
    frame.to_csv(tmp_path / "resources.csv", index=False)
    assert other_work(tmp_path, [0]) == pytest.approx((0.4 + 0.05 + 0.0) / 3, abs=1e-3)
    assert other_work(tmp_path, [0, 1]) == pytest.approx((0.5 + 0.15 + 0.1) / 2 / 3, abs=1e-3)
    assert other_work(tmp_path, [5]) is None  # no such core in the file
    assert other_work(tmp_path / "missing", [0]) is None
