"""``loadtest run``: a scenario against a target (default: the embedded reference server), then its gates.

The command line only; the run itself is ``loadtest.engine.runner.run``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console

from loadtest.commands.options import (
    add_gate_options,
    add_load_generator_options,
    add_target_options,
    duration,
    run_fields,
    share,
)
from loadtest.errors import outcome_code


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "run", help="run a scenario against a target (default: the embedded reference server)"
    )
    parser.add_argument("scenario", type=Path, help="scenario TOML, e.g. scenarios/steady.toml")
    add_target_options(parser)
    parser.add_argument("--rate", type=float, help="open load at this constant rate (req/s), replacing the shape")
    parser.add_argument("--users", type=int, help="closed load with this many users, replacing the shape")
    parser.add_argument("--duration", type=duration, help="measured duration, e.g. 30s or 2m")
    add_load_generator_options(parser, out_default="results/<time>-<scenario>")
    parser.add_argument(
        "--server-pid", type=int, help="the server process to sample (default: the embedded one, or the target's port)"
    )
    parser.add_argument(
        "--messy",
        type=share,
        metavar="SHARE",
        help="messy traffic: this share of arrivals, e.g. 5%% (replaces [messy] share)",
    )
    parser.add_argument(
        "--messy-baseline",
        action="store_true",
        help="then run the same schedule without the messy share, and put the clean traffic's percentiles side by side",
    )
    add_gate_options(parser)
    parser.add_argument(
        "--print-locust-command",
        action="store_true",
        help="print the master and worker commands for a multi-host run, and exit",
    )
    parser.set_defaults(func=handle)


def handle(args: argparse.Namespace, console: Console) -> int:
    from loadtest.engine.runner import RunOptions, run

    options = RunOptions(
        **run_fields(args),
        rate=args.rate,
        users=args.users,
        duration=args.duration,
        print_locust_command=args.print_locust_command,
        server_pid=args.server_pid,
        messy_share=args.messy,
        messy_baseline=args.messy_baseline,
    )
    outcome = run(options, console)
    return outcome_code(outcome.interrupted, outcome.gates_failed)
