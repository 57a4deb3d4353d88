"""Replay memory benchmark: the generator's RSS replaying a capture of about 1 GB, against a small one.

A script, not a test; it prints figures and ratios measured in one run. It writes two JSONL
captures of the same traffic shape (large text bodies, 500 req/s) in a temporary folder, one of
about 100 MB and one of about 1 GB, and replays each at ``--speed`` against the minimal endpoint
(``fast_endpoint.py``, pinned to core 0) with the load generator (the ``loadtest`` process, which
scans the capture, and its Locust child) pinned to core 1. Peak memory is read two ways:
- the largest RSS any process of the replay reached (``getrusage(RUSAGE_CHILDREN)``: the scan in
  the ``loadtest`` process, the Locust process that streams and sends);
- the generator tree's RSS over the run, from the run's own sampler (``resources.csv``).

The target is 300 MB whatever the capture's size; the ratio of the two captures' peaks says whether
memory grows with it. Run: ``.venv/bin/python benchmarks/replay_memory.py`` (about 3 minutes,
1 GB of disk while it runs).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SERVER_CORE, GENERATOR_CORE = 0, 1
TARGET_MB = 300
RATE = 500  # captured requests per second


def write_capture(path: Path, size_bytes: int, body_bytes: int) -> int:
    """Uniform arrivals at ``RATE`` req/s, each with a ~``body_bytes`` OIP text body, until ``size_bytes``."""
    words = ("latency traffic model server query " * (body_bytes // 36 + 1))[:body_bytes]
    origin, written, count = 1_764_500_000.0, 0, 0
    with path.open("w") as f:
        while written < size_bytes:
            body = {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": [words]}]}
            line = (
                json.dumps(
                    {
                        "timestamp": origin + count / RATE,
                        "method": "POST",
                        "path": "/v2/models/m/infer",
                        "headers": {"content-type": "application/json"},
                        "body": body,
                    }
                )
                + "\n"
            )
            f.write(line)
            written += len(line)
            count += 1
    return count


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def replay(capture: Path, url: str, out: Path, speed: float) -> dict:
    """One replay in a child process pinned to the generator's core; its peak RSS and the sampler's."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    started = time.monotonic()
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "loadtest",
            "replay",
            str(capture),
            "--target",
            url,
            "--speed",
            str(speed),
            "--out",
            str(out),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        preexec_fn=lambda: os.sched_setaffinity(0, [GENERATOR_CORE]),
    )
    if result.returncode != 0:
        raise SystemExit(f"replay failed:\n{result.stdout}\n{result.stderr[-3000:]}")
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    summary = json.loads((out / "summary.json").read_text())
    resources = pd.read_csv(out / "resources.csv")
    return {
        "capture_mb": capture.stat().st_size / 1e6,
        "requests": summary["accounting"]["scheduled"],
        "ok": summary["accounting"]["ok"],
        "seconds": time.monotonic() - started,
        "scan_s": summary["replay"]["scan_seconds"],
        "max_process_rss_mb": max(peak_kb, before) / 1024 if peak_kb > before else None,
        "generator_tree_rss_mb": float(resources["generator_rss_mb"].max()),
        "share_within": summary["replay"]["fidelity"]["share_within"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-gb", type=float, default=1.0, help="size of the large capture (default 1)")
    parser.add_argument("--body-kb", type=float, default=20.0, help="body size per request (default 20 KB)")
    parser.add_argument("--speed", type=float, default=2.0, help="replay speed (default 2: 1,000 req/s)")
    args = parser.parse_args()
    port = free_port()
    server = subprocess.Popen([sys.executable, str(HERE / "fast_endpoint.py"), str(port), str(SERVER_CORE)])
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        with tempfile.TemporaryDirectory(prefix="replay-memory-") as tmp:
            rows = []
            for label, size in (("small", 100e6), ("large", args.size_gb * 1e9)):
                capture = Path(tmp) / f"{label}.jsonl"
                count = write_capture(capture, int(size), int(args.body_kb * 1000))
                print(f"{label}: wrote {capture.stat().st_size / 1e6:,.0f} MB, {count:,} requests", flush=True)
                rows.append({"capture": label, **replay(capture, url, Path(tmp) / f"out-{label}", args.speed)})
                capture.unlink()
    finally:
        server.terminate()
        server.wait(timeout=10)
    print(
        f"\nreplay at x{args.speed:g} of {RATE} req/s captured, {args.body_kb:g} KB bodies; endpoint on core "
        f"{SERVER_CORE}, generator on core {GENERATOR_CORE}"
    )
    print(pd.DataFrame(rows).round(2).to_string(index=False))
    small, large = rows
    for key in ("max_process_rss_mb", "generator_tree_rss_mb"):
        print(
            f"{key}: large / small capture = {large[key] / small[key]:.2f} "
            f"(capture {large['capture_mb'] / small['capture_mb']:.0f}x larger); "
            f"large / {TARGET_MB} MB target = {large[key] / TARGET_MB:.2f}"
        )


if __name__ == "__main__":
    main()
