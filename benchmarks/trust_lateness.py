"""Lateness injection: does the trust verdict turn when the load generator is starved, and only then?

A script, not a test. It runs the same open load twice against the reference server's fraud
model (a fast endpoint): the server pinned to core 0, the load generator to core 1 (the
``fraud-fp32`` profile does both). The first run has core 1 to itself; in the second, CPU hogs
pinned to core 1 compete with the generator, which falls behind its schedule. For each run it
prints send lateness p99, response and service p99, and the trust verdict with its reasons. It
exits 1 unless the quiet run is trustworthy and the starved one is not.

Run: ``.venv/bin/python benchmarks/trust_lateness.py`` (about 30 s; needs 2 cores and taskset).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCENARIO = """name = "lateness"
seed = 3
[target]
profile = "fraud-fp32"
protocol = "oip-v2"
model = "fraud"
input_name = "features"
[payload]
source = "features"
width = 8
[load]
shape = {{ kind = "constant", value = {rate} }}
duration = "{seconds}s"
warmup = "1s"
arrivals = "poisson"
"""
HOG = "import time\nend = time.time() + {seconds}\nwhile time.time() < end: pass"


def run(scenario: Path, out: Path, hogs: int, seconds: int) -> dict:
    """One run, with ``hogs`` busy loops pinned to the generator's core for its whole length."""
    hog = [
        subprocess.Popen(["taskset", "-c", "1", sys.executable, "-c", HOG.format(seconds=seconds + 15)])
        for _ in range(hogs)
    ]
    try:
        subprocess.run(
            [sys.executable, "-m", "loadtest", "run", str(scenario), "--out", str(out), "--no-report"],
            capture_output=True,
            text=True,
            cwd=REPO,
            timeout=seconds + 120,
        )
    finally:
        for process in hog:
            process.kill()
            process.wait()
    return json.loads((out / "summary.json").read_text())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=int, default=400, help="arrivals per second (default 400)")
    parser.add_argument("--seconds", type=int, default=10, help="measured duration (default 10)")
    parser.add_argument("--hogs", type=int, default=3, help="busy loops on the generator's core (default 3)")
    args = parser.parse_args()
    verdicts = {}
    with tempfile.TemporaryDirectory() as tmp:
        scenario = Path(tmp) / "lateness.toml"
        scenario.write_text(SCENARIO.format(rate=args.rate, seconds=args.seconds))
        print(f"{args.rate} req/s for {args.seconds} s; server on core 0, generator on core 1")
        print(f"{'run':<24} {'lateness p99':>13} {'response p99':>13} {'service p99':>12}  verdict")
        for label, hogs in (("generator core to itself", 0), (f"{args.hogs} hogs on its core", args.hogs)):
            summary = run(scenario, Path(tmp) / f"out-{hogs}", hogs, args.seconds)
            latency = summary["latency_ms"]
            lateness = latency.get("lateness", {}).get("all", {}).get("p99", 0.0)
            trust = summary["trust"]
            verdicts[hogs] = trust["trustworthy"]
            shown = (
                "trustworthy"
                if trust["trustworthy"]
                else "NOT trustworthy: " + ", ".join(r["rule"] for r in trust["reasons"])
            )
            print(
                f"{label:<24} {lateness:>10.1f} ms {latency['response']['all']['p99']:>10.1f} ms "
                f"{latency['service']['all']['p99']:>9.1f} ms  {shown}"
            )
    turned = verdicts[0] and not verdicts[args.hogs]
    print("the verdict turned with the starvation" if turned else "the verdict DID NOT turn as it should")
    return 0 if turned else 1


if __name__ == "__main__":
    sys.exit(main())
