"""``loadtest``: load tests for ML model endpoints.

Exit codes: 0 the run completed (and, once gates exist, passed); 2 a usage or input error
(scenario, profile, options, unreachable target); 3 the run itself failed; 130 interrupted
(the results directory still holds what was measured).
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
        "--print-locust-command",
        action="store_true",
        help="print the master and worker commands for a multi-host run, and exit",
    )
    return parser


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
                ),
                console,
            )
            return 130 if outcome.interrupted else 0
    except LoadTestError as exc:
        console.print(f"[red]loadtest:[/] {exc}", highlight=False)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
