"""Reference-server settings against each other on the demo's traffic, in interleaved rounds (ABBA).

A script, not a test. This machine is shared, and its speed drifts by a third over minutes, so
settings are compared in rounds that alternate their order (A B, then B A, ...), each round a
fresh server, and the means are printed. Set-up: the server alone on core 0 (1 intra-op thread),
``loadtest run scenarios/queries.toml`` at each constant open-loop rate on core 1.

Per rate and setting: achieved req/s, response p95 and p99, rows per batch, and CPU per row of the
inference thread (padding and ``session.run``) and per request of the rest (the event loop).

Run, e.g. the padding budget::

    .venv/bin/python benchmarks/server_settings_ab.py --rates 200,400 \\
        --setting "budget 16=--max-padding-tokens 16" --setting "budget 4=--max-padding-tokens 4"
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import tempfile
from pathlib import Path

from server_runs import DRIVER_CORE, SERVER_CORE, run_against

from reference_server.launch import running_server


def one_run(url: str, pid: int, rate: float, seconds: float, out: Path) -> dict[str, float]:
    run = run_against(url, pid, rate, seconds, out)
    latency = run.summary["latency_ms"]["response"]["all"]
    rows = run.metrics["inference_batch_size_sum"]
    return {
        "req/s": run.summary["throughput"]["ok_per_s"],
        "p95 ms": latency["p95"],
        "p99 ms": latency["p99"],
        "rows a batch": run.per("inference_batch_size_sum", "inference_batch_size_count"),
        "inference CPU ms a row": run.inference_cpu_s / rows * 1000,
        "event loop CPU ms a request": run.loop_cpu_s / run.metrics["inference_request_duration_seconds_count"] * 1000,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--setting", action="append", required=True, help='"NAME=serve flags"; give two or more')
    parser.add_argument("--rates", default="200,400", help="req/s, comma-separated")
    parser.add_argument("--rounds", type=int, default=2, help="rounds; even rounds run the settings in reverse")
    parser.add_argument("--seconds", type=float, default=6.0, help="measured seconds per run, after 1 s warm-up")
    parser.add_argument("--variant", default="fp32", choices=["fp32", "int8"])
    args = parser.parse_args()
    settings = dict(s.split("=", 1) if "=" in s else (s, "") for s in args.setting)
    rates = [float(r) for r in args.rates.split(",")]
    print(
        f"minilm {args.variant}, 1 intra-op thread; server on core {SERVER_CORE}, loadtest on core {DRIVER_CORE}; "
        f"scenarios/queries.toml; {args.rounds} rounds of {args.seconds:g}s runs, ABBA order"
    )
    results: dict[tuple[str, float], list[dict[str, float]]] = {}
    names = list(settings)
    with tempfile.TemporaryDirectory() as work:
        for round_ in range(args.rounds):
            for name in names if round_ % 2 == 0 else names[::-1]:
                server_args = ["--model", "minilm", "--variant", args.variant, "--threads", "1"]
                server_args += ["--cpus", str(SERVER_CORE), *shlex.split(settings[name])]
                with running_server(server_args) as server:
                    for rate in rates:
                        result = one_run(server.url, server.pid, rate, args.seconds, Path(work) / "run")
                        results.setdefault((name, rate), []).append(result)
                        shown = ", ".join(f"{k} {v:.2f}" for k, v in result.items())
                        print(f"  round {round_ + 1}, {name}, {rate:g} req/s: {shown}", flush=True)
    columns = list(next(iter(results.values()))[0])
    print("\n| rate | setting | " + " | ".join(columns) + " |")
    print("|---|---|" + "---|" * len(columns))
    for rate in rates:
        for name in names:
            runs = results[name, rate]
            means = " | ".join(f"{statistics.mean(r[c] for r in runs):.2f}" for c in columns)
            print(f"| {rate:g} req/s | {name} | {means} |")


if __name__ == "__main__":
    main()
