"""Load-generator benchmark: what recording costs, and how punctually open load is sent.

A script, not a test; it prints ratios measured in one run. Set-up on this 2-core machine: a
minimal OIP-shaped endpoint (``fast_endpoint.py``, raw ASGI on uvicorn) pinned to core 0, fast
enough that the generator is the bottleneck; the load generator pinned to core 1, one process.

1. Throughput on one core, closed loop, 64 users: our recording ``ScenarioUser`` (through
   ``loadtest run``) against a plain Locust ``FastHttpUser`` posting the same body.
2. Open-load lateness (actual send minus intended send) at 200, 500 and 1000 req/s.

Run: ``.venv/bin/python benchmarks/generator.py`` (about 2 minutes).
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SERVER_CORE, GENERATOR_CORE = "0", "1"
PLAIN_LOCUSTFILE = """
from locust import constant, task
from locust.contrib.fasthttp import FastHttpUser
BODY = b'{"inputs":[{"name":"features","datatype":"FP32","shape":[1,8],"data":[1,2,3,4,5,6,7,8]}]}'
class Plain(FastHttpUser):
    wait_time = constant(0)
    @task
    def infer(self):
        self.client.post("/v2/models/fast/infer", data=BODY, headers={"Content-Type": "application/json"})
"""
SCENARIO = """
name = "generator-bench"
[target]
url = "{url}"
protocol = "oip-v2"
model = "fast"
input_name = "features"
[payload]
source = "features"
[load]
{load}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_endpoint() -> tuple[subprocess.Popen, str]:
    port = free_port()
    process = subprocess.Popen([sys.executable, str(HERE / "fast_endpoint.py"), str(port), SERVER_CORE])
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
            return process, f"http://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.1)
    raise SystemExit("the fast endpoint did not start")


def plain_locust(url: str, users: int, seconds: int, workdir: Path) -> float:
    locustfile = workdir / "plain.py"
    locustfile.write_text(PLAIN_LOCUSTFILE)
    csv = workdir / "plain"
    subprocess.run(
        [
            "taskset",
            "-c",
            GENERATOR_CORE,
            sys.executable,
            "-m",
            "locust",
            "-f",
            str(locustfile),
            "--headless",
            "-u",
            str(users),
            "-r",
            str(users),
            "-t",
            f"{seconds}s",
            "--host",
            url,
            "--csv",
            str(csv),
            "--only-summary",
            "--loglevel",
            "WARNING",
            "--exit-code-on-error",
            "0",
        ],
        check=True,
        capture_output=True,
    )
    rows = (workdir / "plain_stats.csv").read_text().splitlines()
    header, total = rows[0].split(","), rows[-1].split(",")
    # Requests over the run's length, counted the same way as for ours (Locust's own Requests/s
    # divides by the span from the first to the last request, which flatters it).
    return float(total[header.index("Request Count")]) / seconds


def ours(url: str, load: str, workdir: Path, name: str) -> dict:
    scenario = workdir / f"{name}.toml"
    scenario.write_text(SCENARIO.format(url=url, load=load))
    out = workdir / name
    subprocess.run(
        ["taskset", "-c", GENERATOR_CORE, sys.executable, "-m", "loadtest", "run", str(scenario), "--out", str(out)],
        check=True,
        capture_output=True,
    )
    return json.loads((out / "summary.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument("--users", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    endpoint, url = start_endpoint()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            workdir = Path(tmp)
            print(f"endpoint on core {SERVER_CORE}, load generator on core {GENERATOR_CORE}, one process")
            plains, recordeds = [], []
            for round_ in range(args.rounds):  # interleaved, so drift on a shared machine hits both alike
                plains.append(plain_locust(url, args.users, args.seconds, workdir))
                summary = ours(
                    url,
                    f'model = "closed"\nshape = {{ kind = "constant", value = {args.users} }}\n'
                    f'duration = "{args.seconds}s"',
                    workdir,
                    f"closed{round_}",
                )
                recordeds.append(summary["run"]["locust_requests"] / summary["load"]["duration_s"])
                print(
                    f"  round {round_ + 1}: plain {plains[-1]:.0f} req/s, recording {recordeds[-1]:.0f} req/s",
                    flush=True,
                )
            ratios = [r / p for r, p in zip(recordeds, plains, strict=True)]
            ratio = statistics.median(ratios)
            print(
                f"closed loop, {args.users} users, {args.rounds} interleaved rounds: plain FastHttpUser median "
                f"{statistics.median(plains):.0f} req/s, recording ScenarioUser median "
                f"{statistics.median(recordeds):.0f} req/s; per-round ratios "
                f"{', '.join(f'{r:.3f}' for r in ratios)}; median ratio {ratio:.3f} (recording costs {1 - ratio:.1%})"
            )
            print("\n| rate | sent | dropped | lateness p50 | p99 | p99.9 | max |\n|---|---|---|---|---|---|---|")
            for rate in (200, 500, 1000):
                s = ours(
                    url,
                    f'shape = {{ kind = "constant", value = {rate} }}\narrivals = "uniform"\n'
                    f'duration = "{args.seconds}s"',
                    workdir,
                    f"open{rate}",
                )
                late, a = s["latency_ms"]["lateness"]["all"], s["accounting"]
                print(
                    f"| {rate}/s | {a['scheduled'] - a['dropped']}/{a['scheduled']} | {a['dropped']} | "
                    f"{late['p50']:.3f} ms | {late['p99']:.3f} ms | {late['p99.9']:.3f} ms | {late['max']:.3f} ms |",
                    flush=True,
                )
    finally:
        endpoint.terminate()
        endpoint.wait()


if __name__ == "__main__":
    main()
