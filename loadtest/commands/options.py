"""Option types and option groups that several commands share, so each is spelled and checked once.

The types turn a bad value into argparse's own usage error (exit 2, the command's usage line and
the option named), before any command starts work.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from loadtest.config.gate_options import GateOptions
from loadtest.units import parse_duration, parse_share


def duration(text: str) -> float:
    """Seconds from "30s", "2m", "250ms" or a plain number."""
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def share(text: str) -> float:
    """A share of traffic, "5%" or 0.05, from 0 to 100% inclusive."""
    try:
        return parse_share(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def fraction(text: str) -> float:
    """A fraction below one, "1%" or 0.01: an error budget, a resolution, a utilisation."""
    try:
        return parse_share(text, below_one=True)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def count(text: str) -> int:
    """A whole number of at least 1 (processes, workers)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def add_target_options(parser: argparse.ArgumentParser) -> None:
    """``--target`` and ``--profile``: an endpoint that is running, or the reference server a profile starts."""
    parser.add_argument("--target", help="endpoint base URL; omitted: start the reference server with the profile")
    parser.add_argument("--profile", help="deployment profile for the embedded server (name in profiles/ or a path)")


def add_load_generator_options(parser: argparse.ArgumentParser, out_default: str) -> None:
    """How run and replay send and record: ``--processes``, ``--out``, ``--allow-remote``, ``--sample-hz``,
    ``--no-report``."""
    parser.add_argument("--processes", type=count, default=1, help="load-generator processes (Locust workers)")
    parser.add_argument("--out", type=Path, help=f"results directory (default {out_default})")
    add_allow_remote(parser)
    parser.add_argument(
        "--sample-hz", type=float, default=4.0, help="resource samples per second; 0 turns sampling off"
    )
    parser.add_argument(
        "--no-report",
        dest="report",
        action="store_false",
        help="skip report.html and report.md (about a second of plotting); `loadtest report DIR` builds them later",
    )


def run_fields(args: argparse.Namespace) -> dict[str, Any]:
    """The fields ``RunOptions`` and ``ReplayOptions`` take alike from the command line: the scenario, the target
    or profile, the load-generator options (``add_load_generator_options``) and the gates."""
    return {
        "scenario": args.scenario,
        "target": args.target,
        "profile": args.profile,
        "processes": args.processes,
        "out": args.out,
        "allow_remote": args.allow_remote,
        "gates": gate_options(args),
        "sample_hz": args.sample_hz,
        "report": args.report,
    }


def add_allow_remote(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--allow-remote", action="store_true", help="allow a target that is not on loopback")


def add_gate_options(parser: argparse.ArgumentParser) -> None:
    """The gate options that run, replay and gate share: thresholds, baseline and regressions, JUnit, --strict."""
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
    parser.add_argument(
        "--strict",
        action="store_true",
        help="a run that is not trustworthy (its generator late, starved or lost) fails with exit 4, "
        "instead of leaving its latency gates unjudged",
    )


def gate_options(args: argparse.Namespace) -> GateOptions:
    """The gate options as given; ``gates.verdict.prepare`` checks them before the run starts."""
    return GateOptions(
        thresholds=tuple(args.threshold),
        baseline=args.baseline,
        max_regression=tuple(args.max_regression),
        junit=args.junit,
        strict=args.strict,
    )
