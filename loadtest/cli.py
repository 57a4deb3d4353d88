"""``loadtest``: load tests for ML model endpoints.

This module only assembles the command line: each subcommand's options and handler live in its
own module under ``loadtest.commands``, each handler returns an ``ExitCode``, and every error the
harness raises on purpose (``LoadTestError``) becomes one line and its exit code here.
"""

from __future__ import annotations

import argparse
import sys

from rich.console import Console

from loadtest import __version__
from loadtest.commands import capacity, compare, cost, gate, probe, replay, report, run
from loadtest.errors import ExitCode, LoadTestError, exit_code_table

COMMANDS = (run, replay, capacity, compare, cost, report, gate, probe)  # in the order ``--help`` lists them


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="loadtest",
        description="loadtest: load tests for ML model endpoints.",
        epilog=exit_code_table(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"loadtest {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add_parser(subparsers)
    return parser


def terminal() -> Console:
    """Messages go to stderr; where stderr is not a terminal (CI logs), wide enough for the end table."""
    console = Console(stderr=True)
    return console if console.is_terminal else Console(stderr=True, width=140)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)  # a usage error exits here, with ExitCode.USAGE (argparse's 2)
    console = terminal()
    try:
        return args.func(args, console)
    except LoadTestError as exc:
        console.print(f"[red]loadtest:[/] {exc}", highlight=False, soft_wrap=True)  # one line, however long
        return exc.exit_code
    except KeyboardInterrupt:
        return ExitCode.INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
