"""Hostile requests against the real reference server: how long health checks wait while each is processed, and RSS.

Run: .venv/bin/python benchmarks/hostile_requests.py [--only NAME] [--burst N] [-- SERVE-OPTIONS...]

It starts ``reference-server serve --model minilm --model fraud`` (fp32, default limits, plus any
options after ``--``) on a free port. First a burst of ``--burst`` concurrent maximum-size
requests (128 texts of 64 KiB: 8 MiB each), with the server's RSS idle (after one small request
per model), at its peak and 3 s after the last answer. Then, for each hostile request, it sends the
request from one thread while another polls ``GET /v2/health/live`` every 10 ms on its own
keep-alive connection, and prints the request's status and time, the slowest and median health
answer meanwhile, and the server's RSS before and at its peak.
Not a test, and not in ``make bench``: it prints what one machine measured in one sitting.
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import httpx
import orjson
import psutil

from reference_server.config import default_models_dir
from reference_server.launch import RunningServer, running_server

MIB = 1024 * 1024
PROSE = "The quick brown fox jumps over the lazy dog, and keeps running until the evening comes. "


def oip_text(texts: list[str], shape: list[int] | None = None) -> bytes:
    shape = [len(texts)] if shape is None else shape
    return orjson.dumps({"inputs": [{"name": "text", "datatype": "BYTES", "shape": shape, "data": texts}]})


def prose(chars: int) -> str:
    return (PROSE * (chars // len(PROSE) + 1))[:chars]


def sparse(chars: int) -> str:
    """A word every 1,000 characters, spaces between: few tokens, so the whole character cap is read."""
    return (("word" + " " * 996) * (chars // 1000 + 1))[:chars]


@dataclass(frozen=True)
class Hostile:
    name: str
    path: str
    body: Callable[[], bytes]


MAX_TEXTS = 128  # --max-rows
ROW_CHARS = (8 * MIB - 4096) // MAX_TEXTS  # 128 texts that fill an 8 MiB body

HOSTILE = [
    Hostile("1M empty strings, shape [1000000] (3.8 MiB)", "/v2/models/minilm/infer", lambda: oip_text([""] * 10**6)),
    Hostile("1M empty strings, shape [1] (3.8 MiB)", "/v2/models/minilm/infer", lambda: oip_text([""] * 10**6, [1])),
    Hostile("one 7.9 MB text", "/v2/models/minilm/infer", lambda: oip_text([prose(7_900_000)])),
    Hostile("128 prose texts of 64 KiB (8 MiB)", "/v2/models/minilm/infer", lambda: oip_text([prose(ROW_CHARS)] * 128)),
    Hostile(
        "128 sparse texts of 64 KiB (8 MiB)", "/v2/models/minilm/infer", lambda: oip_text([sparse(ROW_CHARS)] * 128)
    ),
    Hostile("OpenAI: 1M empty strings (3.8 MiB)", "/v1/embeddings", lambda: orjson.dumps({"input": [""] * 10**6})),
    Hostile(
        "OpenAI: 128 prose texts of 64 KiB (8 MiB)",
        "/v1/embeddings",
        lambda: orjson.dumps({"input": [prose(ROW_CHARS)] * 128}),
    ),
    Hostile(
        "fraud: 1M numbers, shape [1, 8] (4 MiB)",
        "/v2/models/fraud/infer",
        lambda: orjson.dumps(
            {"inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 8], "data": [1.5] * 10**6}]}
        ),
    ),
    Hostile(
        "fraud: 2.8M empty lists as data (8 MiB)",
        "/v2/models/fraud/infer",
        lambda: (
            b'{"inputs":[{"name":"features","datatype":"FP32","shape":[1,8],"data":['
            + b"[]," * (8 * MIB // 3 - 100)
            + b"[]]}]}"
        ),
    ),
]


class Sampler:
    """Health latency every 10 ms and the server's RSS, on a thread of its own, until stopped."""

    def __init__(self, server: RunningServer) -> None:
        self.server, self.process = server, psutil.Process(server.pid)
        self.health_ms: list[float] = []
        self.rss: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *_) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        with httpx.Client(base_url=self.server.url, timeout=120) as client:
            while not self._stop.is_set():
                started = time.perf_counter()
                client.get("/v2/health/live").raise_for_status()
                self.health_ms.append((time.perf_counter() - started) * 1000)
                self.rss.append(self.process.memory_info().rss)
                time.sleep(0.01)


def rss_mb(server: RunningServer) -> float:
    return psutil.Process(server.pid).memory_info().rss / MIB


def post(url: str, path: str, body: bytes) -> tuple[int, float, str]:
    with httpx.Client(base_url=url, timeout=300) as client:
        started = time.perf_counter()
        response = client.post(path, content=body, headers={"content-type": "application/json"})
        elapsed = time.perf_counter() - started
    detail = response.text[:90] if response.status_code >= 400 else ""
    return response.status_code, elapsed, detail


def one(server: RunningServer, hostile: Hostile) -> None:
    body = hostile.body()
    before = rss_mb(server)
    with Sampler(server) as sampler:
        time.sleep(0.05)
        status, elapsed, detail = post(server.url, hostile.path, body)
    health = sampler.health_ms
    print(
        f"{hostile.name}: {status} in {elapsed * 1000:.0f} ms; health max {max(health):.1f} ms, "
        f"median {statistics.median(health):.1f} ms over {len(health)} checks; "
        f"RSS {before:.0f} MB before, {max(sampler.rss) / MIB:.0f} MB peak" + (f"\n    {detail}" if detail else ""),
        flush=True,
    )


def burst(server: RunningServer, concurrent: int) -> None:
    body = oip_text([prose(ROW_CHARS)] * MAX_TEXTS)
    post(server.url, "/v2/models/minilm/infer", oip_text(["warm up"]))
    fraud = {"inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 8], "data": [1.0] * 8}]}
    post(server.url, "/v2/models/fraud/infer", orjson.dumps(fraud))
    time.sleep(1)
    idle = rss_mb(server)
    with Sampler(server) as sampler, ThreadPoolExecutor(concurrent) as pool:
        started = time.perf_counter()
        results = list(pool.map(lambda _: post(server.url, "/v2/models/minilm/infer", body), range(concurrent)))
        elapsed = time.perf_counter() - started
    time.sleep(3)
    after = rss_mb(server)
    print(
        f"burst of {concurrent} x 8 MiB (128 prose texts of 64 KiB): statuses {[r[0] for r in results]} in "
        f"{elapsed:.1f} s; health max {max(sampler.health_ms):.1f} ms; RSS idle {idle:.0f} MB, "
        f"peak {max(sampler.rss) / MIB:.0f} MB, 3 s after {after:.0f} MB ({after - idle:+.0f} MB)",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="run only the hostile requests whose name contains this")
    parser.add_argument("--burst", type=int, default=4, help="concurrent 8 MiB requests first (0: none)")
    parser.add_argument("serve_options", nargs="*", help="more `reference-server serve` options, after --")
    args = parser.parse_args()
    serve = ["--models-dir", str(default_models_dir()), "--model", "minilm", "--model", "fraud", *args.serve_options]
    with running_server(serve) as server:
        print(f"server pid {server.pid}, RSS {rss_mb(server):.0f} MB at start", flush=True)
        if args.burst:
            burst(server, args.burst)
        for hostile in HOSTILE:
            if args.only is None or args.only in hostile.name:
                one(server, hostile)


if __name__ == "__main__":
    main()
