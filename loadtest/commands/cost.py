"""``loadtest cost``: instances, monthly cost and cost per 1M predictions, projected from capacity results.

The command line only; the projection is ``loadtest.analysis.projection``, its inputs are read by
``loadtest.analysis.cost_inputs`` and its reports written by ``loadtest.report.cost``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console

from loadtest.commands.options import count, fraction, results_dir
from loadtest.errors import ExitCode


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "cost", help="project instances, monthly cost and cost per 1M predictions from capacity"
    )
    parser.add_argument("results", type=Path, nargs="*", help="capacity results directories (capacity.json)")
    parser.add_argument(
        "--forecast", required=True, help="'mean=200/s peak=3x growth=1,10,100', or a TOML file with [forecast]"
    )
    parser.add_argument(
        "--managed",
        action="append",
        default=[],
        metavar="PROFILE",
        help="a managed endpoint priced per request or token (a profile with no capacity to measure); repeatable",
    )
    parser.add_argument(
        "--profile",
        action="append",
        default=[],
        help="a deployment profile whose [price] replaces the one its capacity results recorded; repeatable",
    )
    parser.add_argument("--utilisation", type=fraction, default=0.7, help="target utilisation at peak (default 70%%)")
    parser.add_argument("--min-instances", type=count, default=2, help="instances at least, for redundancy (default 2)")
    parser.add_argument(
        "--out", type=results_dir, help="where cost.json, cost.md and cost.html go (default results/cost)"
    )
    parser.set_defaults(func=handle)


def handle(args: argparse.Namespace, console: Console) -> int:
    from loadtest.analysis.cost_inputs import project
    from loadtest.report.cost import print_projection, write_projection
    from loadtest.results.directory import results_root

    if not args.results and not args.managed:
        console.print("[red]loadtest:[/] cost: give capacity results, or --managed for per-request-priced endpoints")
        return ExitCode.USAGE
    data = project(
        args.results,
        args.forecast,
        args.managed,
        repriced=args.profile,
        utilisation=args.utilisation,
        min_instances=args.min_instances,
    )
    print_projection(data, console)
    paths = write_projection(data, args.out or results_root() / "cost")
    console.print(f"wrote {', '.join(map(str, paths))}", markup=False)
    return ExitCode.PASSED
