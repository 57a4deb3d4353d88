"""Sustained open load: does the generator keep to a 500 req/s schedule for a whole minute?

A script, not a test (the suite checks the same accounting at 500 req/s over 10 s). It runs
``loadtest run`` as a user would, uniform arrivals at ``--rate`` for ``--seconds`` against the
reference server's fraud model on loopback, and prints what was scheduled, sent and dropped.
It exits 1 if fewer than 99% of the scheduled arrivals were sent, if the accounting does not
balance, or if the per-second timeline does not add up to what was sent.

Run: ``.venv/bin/python benchmarks/sustained_open_load.py`` (about 70 s).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd

from reference_server.config import default_models_dir
from reference_server.launch import running_server

REPO = Path(__file__).resolve().parents[1]
SCENARIO = """name = "sustained"
seed = 3
[target]
url = "{url}"
protocol = "oip-v2"
model = "fraud"
input_name = "features"
[payload]
source = "features"
width = 8
[load]
shape = {{ kind = "constant", value = {rate} }}
duration = "{seconds}s"
arrivals = "uniform"
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=int, default=500, help="arrivals per second (default 500)")
    parser.add_argument("--seconds", type=int, default=60, help="measured duration (default 60)")
    args = parser.parse_args()
    with (
        running_server(["--models-dir", str(default_models_dir()), "--model", "fraud"]) as server,
        tempfile.TemporaryDirectory() as tmp,
    ):
        path, out = Path(tmp) / "sustained.toml", Path(tmp) / "out"
        path.write_text(SCENARIO.format(url=server.url, rate=args.rate, seconds=args.seconds))
        result = subprocess.run(
            [sys.executable, "-m", "loadtest", "run", str(path), "--out", str(out)],
            capture_output=True,
            text=True,
            cwd=REPO,
        )
        if result.returncode != 0:
            print(result.stdout + result.stderr, file=sys.stderr)
            return 1
        accounting = json.loads((out / "summary.json").read_text())["accounting"]
        timeline_sent = int(pd.read_csv(out / "timeline.csv")["sent"].sum())
    scheduled, dropped = accounting["scheduled"], accounting["dropped"]
    sent = scheduled - dropped
    print(f"{args.rate} req/s for {args.seconds} s: scheduled {scheduled}, sent {sent} ({sent / scheduled:.2%}),")
    print(f"dropped {dropped}, ok {accounting['ok']}, timeline total {timeline_sent}")
    kept = (
        scheduled == args.rate * args.seconds
        and accounting["balanced"]
        and sent >= 0.99 * scheduled
        and timeline_sent == sent
    )
    print("kept to the schedule" if kept else "DID NOT keep to the schedule")
    return 0 if kept else 1


if __name__ == "__main__":
    sys.exit(main())
