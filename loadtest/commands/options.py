"""Option types and option groups that several commands share, so each is spelled and checked once.

The types turn a bad value into a usage error (exit 2, one line naming the option), before any
command starts work. Every number is checked here: a negative, NaN, infinite or empty value is
refused, a duration with the message it gets in a TOML file (both read by ``loadtest.units``). The
paths a command will write (``--out``, ``--junit``) are checked too: a file in the way or a directory
that cannot be written is found before the run, not when its results are written.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from loadtest.config.gate_options import GateOptions
from loadtest.units import check_number, parse_duration, parse_rate, parse_share


def _typed(parse: Callable[[str], Any], text: str) -> Any:
    """``parse(text)``, its ValueError turned into argparse's usage error (exit 2, the option named)."""
    try:
        return parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def duration(text: str) -> float:
    """Seconds from "30s", "2m", "250ms" or a plain number; zero allowed (a window, a wait that may be none)."""
    return _typed(parse_duration, text)


def positive_duration(text: str) -> float:
    """A duration above zero: a run's length, a timeout, a step, a bucket."""
    return _typed(lambda t: check_number(parse_duration(t), above=True), text)


def rate(text: str) -> float:
    """Requests per second above zero, from "20", "20/s", "1200/m" or "72000/h", as thresholds write them."""
    return _typed(lambda t: check_number(parse_rate(t), above=True), text)


def positive_number(text: str) -> float:
    """A finite number above zero (a speed-up factor)."""
    return _typed(lambda t: check_number(_float(t), above=True), text)


def non_negative_number(text: str) -> float:
    """A finite number, zero or more (a sampling rate, where 0 turns sampling off)."""
    return _typed(lambda t: check_number(_float(t)), text)


def share(text: str) -> float:
    """A share of traffic, "5%" or 0.05, from 0 to 100% inclusive."""
    return _typed(parse_share, text)


def fraction(text: str) -> float:
    """A fraction below one, "1%" or 0.01: an error budget, a resolution, a utilisation."""
    return _typed(lambda t: parse_share(t, below_one=True), text)


def count(text: str) -> int:
    """A whole number of at least 1 (processes, users, rounds, workers)."""
    return _typed(lambda t: int(check_number(_int(t), minimum=1)), text)


def count_or_zero(text: str) -> int:
    """A whole number of at least 0, where 0 turns something off (``compare --agreement 0``)."""
    return _typed(lambda t: int(check_number(_int(t))), text)


def metrics_page(text: str) -> str | bool:
    """``--metrics``: a Prometheus page's URL, or ``off`` for none (the scenario's ``[target] metrics``)."""
    if text.lower() in ("off", "false", "none"):
        return False
    if not text.startswith(("http://", "https://")):
        raise argparse.ArgumentTypeError(f"expected a URL starting with http:// or https://, or off; got {text!r}")
    return text


def results_dir(text: str) -> Path:
    """A directory the results can go in: not a file, and made (or there) where this user may write."""
    return _typed(lambda t: _writable(Path(t), "directory"), text)


def output_file(text: str) -> Path:
    """A file that can be written (``--junit``): not a directory, in a directory that can be made and written."""
    return _typed(lambda t: _writable(Path(t), "file"), text)


def _writable(path: Path, kind: str) -> Path:
    """``path``, if a ``kind`` can be written there; ValueError saying what is in the way.

    Write permission is tried, not read from the mode bits: root passes every permission check, but not
    a read-only file system. The trial is a directory made and removed at once where the path begins.
    """
    if path.exists() and path.is_dir() != (kind == "directory"):
        raise ValueError(f"{path} is {'a file' if kind == 'directory' else 'a directory'}, not a {kind}")
    there = path if kind == "directory" else path.parent
    while not there.exists():  # the nearest part of the path that is there: the rest is made under it
        there = there.parent
    if not there.is_dir():
        raise ValueError(f"cannot make {path}: {there} is a file, not a directory")
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".loadtest-", dir=there))
    except OSError as exc:
        raise ValueError(f"cannot write in {there}: {exc.strerror}") from None
    return path


def _float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"expected a number, got {text!r}") from None


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"expected a whole number, got {text!r}") from None


def add_target_options(parser: argparse.ArgumentParser) -> None:
    """``--target`` and ``--profile``: an endpoint that is running, or the reference server a profile starts."""
    parser.add_argument("--target", help="endpoint base URL; omitted: start the reference server with the profile")
    parser.add_argument("--profile", help="deployment profile for the embedded server (name in profiles/ or a path)")


def add_load_generator_options(parser: argparse.ArgumentParser, out_default: str) -> None:
    """How run and replay send and record: ``--processes``, ``--out``, ``--allow-remote``, ``--sample-hz``,
    ``--no-report``."""
    parser.add_argument("--processes", type=count, default=1, help="load-generator processes (Locust workers)")
    parser.add_argument("--out", type=results_dir, help=f"results directory (default {out_default})")
    add_allow_remote(parser)
    parser.add_argument(
        "--sample-hz", type=non_negative_number, default=4.0, help="resource samples per second; 0 turns sampling off"
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
    parser.add_argument("--junit", type=output_file, help="write one JUnit test case per gate to this file")
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
