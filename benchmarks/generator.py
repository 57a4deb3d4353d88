"""Load-generator benchmark: what recording costs, and how punctually open load is sent.

A script, not a test; it prints ratios measured in one run. Set-up on this 2-core machine: a
minimal OIP-shaped endpoint (``fast_endpoint.py``, raw ASGI on uvicorn) pinned to core 0, fast
enough that the generator is the bottleneck; the load generator pinned to core 1, one process.

1. Recording cost on one core, closed loop, 64 users: our recording ``ScenarioUser`` against a plain
   Locust ``FastHttpUser`` posting the same body. The measure is each generator process's CPU
   seconds per request in steady state (3 s in, over ``--seconds``). The two run side by side,
   on the same core at the same time: one after the other, other tenants of this shared machine
   moved single rounds by 10 to 20% and the median ratio by several per cent from run to run,
   more than the effect measured. Throughput is printed too (each gets about half the core).
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
from loadtest.engine.runconfig import RunConfig  # noqa: E402

SERVER_CORE, GENERATOR_CORE = "0", "1"
MEASURE = """
import json, os, time, gevent, psutil
from locust import events

@events.test_start.add_listener
def _measure(environment, **_):
    def run():
        # Past start-up and spawning; side by side, both processes measure over the same wall-clock window.
        gevent.sleep(max(0.0, float(os.environ["MEASURE_AT"]) - time.time()))
        me = psutil.Process()
        cpu0, n0, t0 = sum(me.cpu_times()[:2]), environment.stats.total.num_requests, time.perf_counter()
        gevent.sleep(float(os.environ["MEASURE_SECONDS"]))
        cpu1, n1, t1 = sum(me.cpu_times()[:2]), environment.stats.total.num_requests, time.perf_counter()
        with open(os.environ["MEASURE_OUT"], "w") as f:
            json.dump({"cpu_us_per_request": (cpu1 - cpu0) / (n1 - n0) * 1e6, "rps": (n1 - n0) / (t1 - t0)}, f)
    gevent.spawn(run)
"""
PLAIN_LOCUSTFILE = (
    MEASURE
    + """
from locust import constant, task
from locust.contrib.fasthttp import FastHttpUser
BODY = b'{"inputs":[{"name":"features","datatype":"FP32","shape":[1,8],"data":[1,2,3,4,5,6,7,8]}]}'
class Plain(FastHttpUser):
    wait_time = constant(0)
    @task
    def infer(self):
        self.client.post("/v2/models/fast/infer", data=BODY, headers={"Content-Type": "application/json"})
"""
)
OURS_LOCUSTFILE = (
    MEASURE
    + """
from loadtest.engine.users import ScenarioShape, ScenarioUser  # noqa: F401
"""
)
SCENARIO = """
name = "generator-bench"
[target]
url = "{url}"
validate = {validate}
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


def start_measure(
    url: str, users: int, seconds: int, workdir: Path, which: str, validate: bool, measure_at: float
) -> tuple[subprocess.Popen, Path]:
    """Start one generator process, plain or ours, on the generator's core; it writes its steady-state figures."""
    out = workdir / f"{which}.json"
    env = {**os.environ, "MEASURE_SECONDS": str(seconds), "MEASURE_OUT": str(out), "MEASURE_AT": str(measure_at)}
    common = ["--headless", "--host", url, "--only-summary", "--loglevel", "WARNING", "--exit-code-on-error", "0"]
    if which == "plain":
        locustfile = workdir / "plain.py"
        locustfile.write_text(PLAIN_LOCUSTFILE)
        extra = ["-u", str(users), "-r", str(users), "-t", f"{seconds + 10}s"]
    else:
        locustfile = workdir / "ours.py"
        locustfile.write_text(OURS_LOCUSTFILE)
        scenario = workdir / "closed.toml"
        scenario.write_text(
            SCENARIO.format(
                url=url,
                validate=str(validate).lower(),
                load=f'model = "closed"\nshape = {{ kind = "constant", value = {users} }}\n'
                f'duration = "{seconds + 10}s"',
            )
        )
        config = RunConfig(scenario.read_text(), str(scenario), url, workdir / "ours-out")
        extra = ["--loadtest-run", config.to_json()]
    process = subprocess.Popen(
        ["taskset", "-c", GENERATOR_CORE, sys.executable, "-m", "locust", "-f", str(locustfile), *common, *extra],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
        cwd=workdir,
    )
    return process, out


def measure_side_by_side(
    url: str, users: int, seconds: int, workdir: Path, ours_first: bool, validate: bool
) -> tuple[dict, dict]:
    """Plain and ours at the same time on the same core, so the machine's drift hits both alike.

    Both measure over the same wall-clock window, from 6 s after the start (past start-up and
    spawning) until both are still running; rounds alternate which one starts first.
    """
    order = ("ours", "plain") if ours_first else ("plain", "ours")
    measure_at = time.time() + 6.0
    started = {}
    for which in order:
        started[which] = start_measure(url, users, seconds, workdir, which, validate, measure_at)
        time.sleep(0.2)
    for process, _ in started.values():
        if process.wait() != 0:
            raise SystemExit(f"a generator process failed (exit {process.returncode})")
    plain, ours_ = (json.loads(started[which][1].read_text()) for which in ("plain", "ours"))
    return plain, ours_


def ours(url: str, load: str, workdir: Path, name: str) -> dict:
    scenario = workdir / f"{name}.toml"
    scenario.write_text(SCENARIO.format(url=url, load=load, validate="true"))
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
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--part", choices=("all", "cost", "lateness"), default="all")
    args = parser.parse_args()
    endpoint, url = start_endpoint()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            workdir = Path(tmp)
            print(f"endpoint on core {SERVER_CORE}; plain and recording generators together on core {GENERATOR_CORE}")
            if args.part in ("all", "cost"):
                for validate, label, rounds in ((False, "recording", args.rounds), (True, "recording + body check", 4)):
                    cost(url, args, workdir, validate, label, rounds)
            if args.part in ("all", "lateness"):
                lateness(url, args, workdir)
    finally:
        endpoint.terminate()
        endpoint.wait()


def cost(url: str, args: argparse.Namespace, workdir: Path, validate: bool, label: str, rounds: int) -> None:
    """Side-by-side rounds of plain against ours; prints each round and the median ratios."""
    rows = []
    for round_ in range(rounds):
        plain, ours_ = measure_side_by_side(url, args.users, args.seconds, workdir, round_ % 2 == 1, validate)
        rows.append((plain, ours_))
        print(
            f"  {label}, round {round_ + 1}: plain {plain['cpu_us_per_request']:.0f} µs CPU/request "
            f"({plain['rps']:.0f} req/s), ours {ours_['cpu_us_per_request']:.0f} µs CPU/request "
            f"({ours_['rps']:.0f} req/s)",
            flush=True,
        )
    cpu_ratio = statistics.median(o["cpu_us_per_request"] / p["cpu_us_per_request"] for p, o in rows)
    rps_ratio = statistics.median(o["rps"] / p["rps"] for p, o in rows)
    print(
        f"{label}: closed loop, {args.users} users each, {rounds} rounds side by side, medians of round ratios: "
        f"CPU per request / plain = {cpu_ratio:.3f} ({cpu_ratio - 1:+.1%}); throughput / plain = {rps_ratio:.3f}\n",
        flush=True,
    )


def lateness(url: str, args: argparse.Namespace, workdir: Path) -> None:
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


if __name__ == "__main__":
    main()
