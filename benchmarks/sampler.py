"""What the resource sampler costs: its own CPU time, as a share of one core, at its default rate.

A script, not a test; it prints the figure measured in one run. It watches a real reference server
(with its ONNX Runtime threads, each read per window, and its ``/metrics`` read at ``--hz``) and a
Locust-like process tree (a parent and two children), as in a ``--processes 2`` run, for
``--seconds`` at ``--hz`` (default 4).

Run: ``.venv/bin/python benchmarks/sampler.py`` (about 40 s).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from reference_server.config import default_models_dir
from reference_server.launch import running_server

CHILD = (
    "import subprocess, sys, time\n"
    "for _ in range(2): subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(300)'])\n"
    "time.sleep(300)"
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--hz", type=float, default=4.0)
    args = parser.parse_args()
    generator = subprocess.Popen([sys.executable, "-c", CHILD])
    with (
        running_server(["--models-dir", str(default_models_dir()), "--model", "fraud"]) as server,
        tempfile.TemporaryDirectory() as tmp,
    ):
        time.sleep(1.0)
        sampler = subprocess.Popen(
            [sys.executable, "-m", "loadtest.engine.sampler", "--out", str(Path(tmp) / "resources.csv")]
            + ["--server-pid", str(server.pid), "--generator-pid", str(generator.pid), "--hz", str(args.hz)]
            + ["--metrics-url", f"{server.url}/metrics"]
        )
        watched = psutil.Process(sampler.pid)
        time.sleep(3.0)  # past the interpreter's start-up and imports
        before, started = watched.cpu_times(), time.perf_counter()
        time.sleep(args.seconds)
        after, elapsed = watched.cpu_times(), time.perf_counter() - started
        sampler.terminate()
        sampler.wait()
        rows = (Path(tmp) / "resources.csv").read_text().count("\n") - 1
    for child in psutil.Process().children(recursive=True):  # the generator's children first: none is orphaned
        child.kill()
    generator.wait()
    used = (after.user + after.system) - (before.user + before.system)
    print(
        f"sampler at {args.hz:g} Hz, watching a server (its threads and /metrics) and a 3-process generator tree, "
        f"{rows} rows written: "
        f"{used:.3f} s of CPU in {elapsed:.1f} s = {100 * used / elapsed:.2f}% of one core"
    )


if __name__ == "__main__":
    main()
