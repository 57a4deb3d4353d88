"""``loadtest``: load tests for ML model endpoints.

Exit codes: 0 the run completed and every gate passed; 1 a gate failed (threshold or baseline
regression); 2 a usage or input error (scenario, profile, options, thresholds, baseline,
unreachable target); 3 the run itself failed; 130 interrupted (the results directory still
holds what was measured; gates are not checked).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rich.console import Console

from . import __version__
from .errors import LoadTestError
from .units import parse_duration


def _duration(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="loadtest", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"loadtest {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a scenario against a target (default: the embedded reference server)")
    run.add_argument("scenario", type=Path, help="scenario TOML, e.g. scenarios/steady.toml")
    run.add_argument("--target", help="endpoint base URL; omitted: start the reference server with the profile")
    run.add_argument("--profile", help="deployment profile for the embedded server (name in profiles/ or a path)")
    run.add_argument("--rate", type=float, help="open load at this constant rate (req/s), replacing the shape")
    run.add_argument("--users", type=int, help="closed load with this many users, replacing the shape")
    run.add_argument("--duration", type=_duration, help="measured duration, e.g. 30s or 2m")
    run.add_argument("--processes", type=int, default=1, help="load-generator processes (Locust workers)")
    run.add_argument("--out", type=Path, help="results directory (default results/<time>-<scenario>)")
    run.add_argument("--allow-remote", action="store_true", help="allow a target that is not on loopback")
    run.add_argument(
        "--server-pid", type=int, help="the server process to sample (default: the embedded one, or the target's port)"
    )
    run.add_argument("--sample-hz", type=float, default=4.0, help="resource samples per second; 0 turns sampling off")
    _gate_options(run)
    run.add_argument(
        "--print-locust-command",
        action="store_true",
        help="print the master and worker commands for a multi-host run, and exit",
    )
    report = sub.add_parser("report", help="build report.html and report.md from a results directory")
    report.add_argument("results", type=Path, help="a results directory (holding summary.json)")
    gate = sub.add_parser("gate", help="check thresholds and baseline regressions on an earlier run's results")
    gate.add_argument("results", type=Path, help="a results directory (holding summary.json)")
    _gate_options(gate)
    return parser


def _gate_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--threshold",
        action="append",
        default=[],
        metavar="EXPR",
        help="a gate like 'p99 < 250ms', 'p95{class=long} < 400ms', 'error_rate < 1%%' (repeatable; "
        "added to the scenario's [slo] thresholds)",
    )
    parser.add_argument("--baseline", type=Path, help="an earlier results directory to compare with")
    parser.add_argument(
        "--max-regression",
        action="append",
        default=[],
        metavar="LIMIT",
        help="allowed change against --baseline, like p99=+10%% or throughput=-5%% (repeatable; default p99=+10%%)",
    )
    parser.add_argument("--junit", type=Path, help="write one JUnit test case per gate to this file")


def _gates(args: argparse.Namespace):
    from .verdict import GateOptions

    return GateOptions(tuple(args.threshold), args.baseline, tuple(args.max_regression), args.junit)


def _gate_command(args: argparse.Namespace, console: Console) -> int:
    from .results import read_summary
    from .scenario import load_scenario
    from .verdict import apply, prepare

    summary = read_summary(args.results)
    saved = args.results / "scenario.toml"
    thresholds, source = ((), "")
    if saved.exists():
        scenario = load_scenario(saved)
        thresholds, source = scenario.thresholds, str(saved)
    gates = prepare(_gates(args), thresholds, source)
    if gates.empty:
        console.print("no gates: give --threshold, or --baseline, or [slo] thresholds in the scenario")
        return 2
    results = apply(gates, args.results, summary, console)
    return 0 if all(r.passed for r in results) else 1


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    console = Console(stderr=True)
    if not console.is_terminal:
        console = Console(stderr=True, width=140)  # CI logs: wide enough for the end table
    try:
        if args.command == "run":
            from .run import RunOptions, run

            if args.processes < 1:
                raise SystemExit("loadtest: --processes must be at least 1")
            outcome = run(
                RunOptions(
                    args.scenario,
                    args.target,
                    args.profile,
                    args.rate,
                    args.users,
                    args.duration,
                    args.processes,
                    args.out,
                    args.allow_remote,
                    args.print_locust_command,
                    _gates(args),
                    args.server_pid,
                    args.sample_hz,
                ),
                console,
            )
            return 130 if outcome.interrupted else 1 if outcome.gates_failed else 0
        if args.command == "gate":
            return _gate_command(args, console)
        if args.command == "report":
            from .report import write_reports
            from .results import read_summary
            from .run import add_analysis

            add_analysis(args.results, read_summary(args.results))  # with the current rules
            html_path, md_path = write_reports(args.results)
            console.print(f"wrote {html_path} and {md_path}")
            return 0
    except LoadTestError as exc:
        console.print(f"[red]loadtest:[/] {exc}", highlight=False)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
