"""``loadtest gate``: check thresholds and baseline regressions on an earlier run's results, without running."""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from loadtest.commands.options import add_gate_options, gate_options
from loadtest.errors import ExitCode, outcome_code


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("gate", help="check thresholds and baseline regressions on an earlier run's results")
    parser.add_argument("results", type=Path, help="a results directory (holding summary.json)")
    add_gate_options(parser)
    parser.set_defaults(func=handle)


def handle(args: argparse.Namespace, console: Console) -> int:
    """The run's own [slo] thresholds (from the scenario.toml saved with it) and the options' gates."""
    from loadtest.config.scenario import load_scenario
    from loadtest.gates.verdict import apply, prepare
    from loadtest.results.summary import read_summary, write_summary

    summary = read_summary(args.results)
    saved = args.results / "scenario.toml"
    thresholds, source = ((), "")
    if saved.exists():
        scenario = load_scenario(saved)
        thresholds, source = scenario.gates, str(saved)
    gates = prepare(gate_options(args), thresholds, source)
    if gates.empty:
        console.print("no gates: give --threshold, or --baseline, or [slo] thresholds in the scenario", markup=False)
        return ExitCode.USAGE
    verdict = apply(gates, args.results, summary, console)
    write_summary(args.results, replace(summary, gates=verdict))
    untrusted = summary.trust is not None and not summary.trust.trustworthy
    if summary.failure is not None:
        console.print(f"[red bold]the run failed:[/] {escape(summary.failure.line)}", highlight=False, soft_wrap=True)
    failed = summary.failure is not None
    return outcome_code(False, not verdict.passed, untrusted=gates.strict and untrusted, run_failed=failed)
