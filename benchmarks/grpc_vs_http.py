"""OIP v2 over gRPC against OIP v2 over REST, on the reference server, at the same open load.

A script, not a test: it prints what one run measured, as ratios gRPC / REST. Each protocol gets
the same schedule (same seed, rate and payloads) from ``loadtest run``, so what is compared is what
a user of the harness would measure: latency from the intended send time (p50, p99) and the
server's CPU per completed request (its process tree's CPU-seconds, sampled by the harness, over
the requests it completed). Two workloads:

- ``fraud``: 8 features a request, a model that computes in about 0.1 ms, so the protocol's own
  cost (parsing, encoding, HTTP/1.1 against HTTP/2) is most of what the server does;
- ``minilm``: short texts (4 to 16 tokens), where the model's compute dominates.

Rounds alternate REST, gRPC, gRPC, REST (ABBA), so a slow drift of the machine falls on both.
Set-up, on this 2-core machine: the server on core 0 (``--cpus 0``, 1 intra-op thread), the load
generator (``loadtest run`` and its Locust process) on core 1 (``taskset``). Run:
``.venv/bin/python benchmarks/grpc_vs_http.py`` (about 2 minutes; ``--seconds`` and ``--rates`` change it).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from reference_server.config import default_models_dir
from reference_server.launch import running_server

SERVER_CORE, GENERATOR_CORE = "0", "1"
WORKLOADS = {
    "fraud": (
        'model = "fraud"\ninput_name = "features"',
        'source = "features"\nwidth = 8',
    ),
    "minilm": (
        'model = "minilm"',
        'source = "text"\nclasses = [{ name = "short", weight = 1, min_tokens = 4, max_tokens = 16 }]',
    ),
}


def scenario(directory: Path, workload: str, protocol: str, url: str, rate: float, seconds: float) -> Path:
    target, payload = WORKLOADS[workload]
    path = directory / f"{workload}-{protocol}.toml"
    path.write_text(
        f'name = "{workload}-{protocol}"\nseed = 7\n\n'
        f'[target]\nurl = "{url}"\nprotocol = "{protocol}"\n{target}\n\n'
        f"[payload]\n{payload}\n\n"
        f'[load]\nmodel = "open"\narrivals = "poisson"\nshape = {{ kind = "constant", value = {rate} }}\n'
        f'duration = "{seconds}s"\nwarmup = "1s"\ntimeout = "10s"\n'
    )
    return path


def measure(path: Path, out: Path) -> dict:
    """One ``loadtest run`` on the generator's core: latency percentiles and server CPU per request."""
    command = ["taskset", "-c", GENERATOR_CORE, sys.executable, "-m", "loadtest", "run", str(path)]
    done = subprocess.run([*command, "--out", str(out), "--no-report"], capture_output=True, text=True)
    if done.returncode not in (0, 1):  # 1: a gate failed, the figures stand
        sys.exit(f"{path.name}: loadtest run exited {done.returncode}\n{done.stderr[-2000:]}")
    summary = json.loads((out / "summary.json").read_text())
    resources = pd.read_csv(out / "resources.csv")
    measured = resources[resources["second"] >= 0]
    window = summary["resources"]["window_s"]
    ok = summary["accounting"]["ok"]
    latency = summary["latency_ms"]["response"]["all"]
    return {
        "ok": ok,
        "errors": summary["accounting"]["errors"] + summary["accounting"]["timeouts"],
        "p50": latency["p50"],
        "p99": latency["p99"],
        "cpu_ms": 1000 * float(measured["server_cpu_cores"].sum()) * window / max(ok, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds a round (default 10)")
    parser.add_argument("--rates", default="fraud=400,minilm=60", help="req/s per workload")
    parser.add_argument("--rounds", type=int, default=2, help="ABBA pairs of rounds (default 2)")
    args = parser.parse_args()
    rates = {name: float(rate) for name, rate in (item.split("=") for item in args.rates.split(","))}
    server_args = ["--models-dir", str(default_models_dir()), "--model", "minilm", "--model", "fraud"]
    server_args += ["--cpus", SERVER_CORE, "--threads", "1", "--grpc-port", "0"]
    print(f"server on core {SERVER_CORE} (1 intra-op thread), loadtest run on core {GENERATOR_CORE}; "
          f"{args.seconds:g} s measured a round, {2 * args.rounds} rounds a protocol, ABBA")  # fmt: skip
    rows = []
    with tempfile.TemporaryDirectory() as tmp, running_server(server_args) as server:
        urls = {"oip-v2": server.url, "oip-v2-grpc": f"grpc://{server.grpc_target}"}
        for workload, rate in rates.items():
            paths = {p: scenario(Path(tmp), workload, p, url, rate, args.seconds) for p, url in urls.items()}
            order = ["oip-v2", "oip-v2-grpc", "oip-v2-grpc", "oip-v2"] * args.rounds
            runs: dict[str, list[dict]] = {p: [] for p in urls}
            for i, protocol in enumerate(order):
                runs[protocol].append(measure(paths[protocol], Path(tmp) / f"{workload}-{i}"))
            for protocol, measured in runs.items():
                row = {k: float(np.median([m[k] for m in measured])) for k in ("p50", "p99", "cpu_ms")}
                row |= {"ok": sum(m["ok"] for m in measured), "errors": sum(m["errors"] for m in measured)}
                rows.append({"workload": workload, "rate": rate, "protocol": protocol, **row})
    table = pd.DataFrame(rows)
    print("\nmedian of the rounds: latency from the intended send time (ms), server CPU ms per completed request")
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print("\ngRPC / REST:")
    for workload, group in table.groupby("workload", sort=False):
        rest, grpc = (group[group["protocol"] == p].iloc[0] for p in ("oip-v2", "oip-v2-grpc"))
        print(
            f"  {workload:>6} at {rest['rate']:g} req/s: p50 {grpc['p50'] / rest['p50']:.2f}x, "
            f"p99 {grpc['p99'] / rest['p99']:.2f}x, server CPU per request {grpc['cpu_ms'] / rest['cpu_ms']:.2f}x"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
