"""Load-generator benchmark: what recording costs, and how punctually open load is sent.

A script, not a test; it prints ratios measured in one run. Set-up on this 2-core machine: a
minimal OIP-shaped endpoint (``fast_endpoint.py``, raw ASGI on uvicorn) pinned to core 0, fast
enough that the generator is the bottleneck; the load generator pinned to core 1, one process.

1. Recording cost on one core, closed loop, 64 users: our recording ``ScenarioUser`` against a plain
   Locust ``FastHttpUser`` posting the same body. The measure is the generator process's CPU
   seconds per request in steady state (3 s in, over ``--seconds``), which noise from other
   tenants of a shared machine moves far less than throughput; throughput is printed too.
2. Open-load lateness (actual send minus intended send) at 200, 500 and 1000 req/s, after a 2 s
   warm-up that keeps Locust's own start-up out of the steady-state figure.

Run: ``.venv/bin/python benchmarks/generator.py`` (about 2 minutes).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from loadtest.runconfig import RunConfig  # noqa: E402

SERVER_CORE, GENERATOR_CORE = "0", "1"
MEASURE = """
import json, os, time, gevent, psutil
from locust import events

@events.test_start.add_listener
def _measure(environment, **_):
    def run():
        gevent.sleep(3)  # past start-up and spawning
        me = psutil.Process()
        cpu0, n0, t0 = sum(me.cpu_times()[:2]), environment.stats.total.num_requests, time.perf_counter()
        gevent.sleep(float(os.environ["MEASURE_SECONDS"]))
        cpu1, n1, t1 = sum(me.cpu_times()[:2]), environment.stats.total.num_requests, time.perf_counter()
        with open(os.environ["MEASURE_OUT"], "w") as f:
            json.dump({"cpu_us_per_request": (cpu1 - cpu0) / (n1 - n0) * 1e6, "rps": (n1 - n0) / (t1 - t0)}, f)
    gevent.spawn(run)
"""
PLAIN_LOCUSTFILE = MEASURE + """
from locust import constant, task
from locust.contrib.fasthttp import FastHttpUser
BODY = b'{"inputs":[{"name":"features","datatype":"FP32","shape":[1,8],"data":[1,2,3,4,5,6,7,8]}]}'
class Plain(FastHttpUser):
    wait_time = constant(0)
    @task
    def infer(self):
        self.client.post("/v2/models/fast/infer", data=BODY, headers={"Content-Type": "application/json"})
"""
OURS_LOCUSTFILE = MEASURE + """
from loadtest.users import ScenarioShape, ScenarioUser  # noqa: F401
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


def measure(url: str, users: int, seconds: int, workdir: Path, which: str) -> dict:
    """Steady-state CPU per request and rate of one generator process, plain or ours, on one core."""
    out = workdir / f"{which}.json"
    env = {**os.environ, "MEASURE_SECONDS": str(seconds), "MEASURE_OUT": str(out)}
    common = ["--headless", "--host", url, "--only-summary", "--loglevel", "WARNING", "--exit-code-on-error", "0"]
    if which == "plain":
        locustfile = workdir / "plain.py"
        locustfile.write_text(PLAIN_LOCUSTFILE)
        extra = ["-u", str(users), "-r", str(users), "-t", f"{seconds + 5}s"]
    else:
        locustfile = workdir / "ours.py"
        locustfile.write_text(OURS_LOCUSTFILE)
        scenario = workdir / "closed.toml"
        scenario.write_text(
            SCENARIO.format(
                url=url,
                load=f'model = "closed"\nshape = {{ kind = "constant", value = {users} }}\nduration = "{seconds + 5}s"',
            )
        )
        config = RunConfig(scenario.read_text(), str(scenario), url, workdir / "ours-out")
        extra = ["--loadtest-run", config.to_json()]
    subprocess.run(
        ["taskset", "-c", GENERATOR_CORE, sys.executable, "-m", "locust", "-f", str(locustfile), *common, *extra],
        check=True,
        capture_output=True,
        env=env,
        cwd=workdir,
    )
    return json.loads(out.read_text())


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
            rows = []
            for round_ in range(args.rounds):  # interleaved, so drift on a shared machine hits both alike
                plain = measure(url, args.users, args.seconds, workdir, "plain")
                ours_ = measure(url, args.users, args.seconds, workdir, "ours")
                rows.append((plain, ours_))
                print(
                    f"  round {round_ + 1}: plain {plain['cpu_us_per_request']:.0f} µs CPU/request "
                    f"({plain['rps']:.0f} req/s), recording {ours_['cpu_us_per_request']:.0f} µs CPU/request "
                    f"({ours_['rps']:.0f} req/s)",
                    flush=True,
                )
            cpu_ratio = statistics.median(o["cpu_us_per_request"] / p["cpu_us_per_request"] for p, o in rows)
            rps_ratio = statistics.median(o["rps"] / p["rps"] for p, o in rows)
            print(
                f"closed loop, {args.users} users, {args.rounds} interleaved rounds, medians of per-round ratios: "
                f"CPU per request, recording / plain = {cpu_ratio:.3f} (recording costs {cpu_ratio - 1:+.1%} CPU); "
                f"throughput, recording / plain = {rps_ratio:.3f}"
            )
            print("\n| rate | sent | dropped | lateness p50 | p99 | p99.9 | max |\n|---|---|---|---|---|---|---|")
            for rate in (200, 500, 1000):
                s = ours(
                    url,
                    f'shape = {{ kind = "constant", value = {rate} }}\narrivals = "uniform"\nwarmup = "2s"\n'
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
