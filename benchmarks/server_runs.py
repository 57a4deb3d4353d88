"""What the server benchmarks share: a ``loadtest run`` of the demo's traffic, and the server's own figures around it.

``server_breakdown.py`` and ``server_settings_ab.py`` read the same three sources over a run: the
server's ``/metrics`` (its batches, queue and compute), its threads' CPU time, and the run's
``summary.json``.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil

ROOT = Path(__file__).resolve().parent.parent
SCENARIO = ROOT / "scenarios" / "queries.toml"
SERVER_CORE, DRIVER_CORE = 0, 1
SERIES = (
    "inference_batch_size",
    "inference_padding_efficiency_ratio",
    "inference_compute_seconds",
    "inference_queue_wait_seconds",
    "inference_request_duration_seconds",
)
GATES_FAILED = 1  # loadtest's exit code when the scenario's SLO fails: expected when a benchmark overloads


@dataclass(frozen=True)
class ServerRun:
    metrics: dict[str, float]  # each series' _sum and _count over the run, summed over labels
    inference_cpu_s: float  # the busiest thread: ONNX Runtime's
    loop_cpu_s: float  # every other thread: the event loop, HTTP, tokenising, encoding
    summary: dict  # the run's summary.json

    def per(self, series: str, over: str) -> float:
        return self.metrics[series] / self.metrics[over]


def scrape(url: str) -> dict[str, float]:
    totals: dict[str, float] = {}
    for line in httpx.get(url + "/metrics").text.splitlines():
        for name in SERIES:
            for suffix in ("_sum", "_count"):
                if line.startswith(f"{name}{suffix}{{"):
                    totals[name + suffix] = totals.get(name + suffix, 0.0) + float(line.rsplit(" ", 1)[1])
    return totals


def thread_cpu(pid: int) -> dict[int, float]:
    return {t.id: t.user_time + t.system_time for t in psutil.Process(pid).threads()}


def run_against(url: str, pid: int, rate: float, seconds: float, out: Path) -> ServerRun:
    """``loadtest run`` of the demo's traffic at ``rate`` against the server at ``url``, from the driver's core."""
    threads_before, before = thread_cpu(pid), scrape(url)
    command = [
        *("taskset", "-c", str(DRIVER_CORE), str(ROOT / ".venv" / "bin" / "loadtest"), "run", str(SCENARIO)),
        *("--target", url, "--rate", f"{rate:g}", "--duration", f"{seconds:g}s", "--warmup", "1s"),
        *("--out", str(out), "--no-report"),
    ]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode not in (0, GATES_FAILED):
        raise SystemExit(f"loadtest run exited {done.returncode}:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    threads_after, after = thread_cpu(pid), scrape(url)
    cpu = sorted((threads_after[t] - threads_before.get(t, 0.0) for t in threads_after), reverse=True)
    return ServerRun(
        {key: after[key] - before.get(key, 0.0) for key in after},
        cpu[0],
        sum(cpu[1:]),
        json.loads((out / "summary.json").read_text()),
    )
