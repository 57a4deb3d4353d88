"""``loadtest``: load tests for ML model endpoints.

This module only assembles the command line: each subcommand's options and handler live in its
own module under ``loadtest.commands``, each handler returns an ``ExitCode``, and every error the
harness raises on purpose (``LoadTestError``) becomes one line and its exit code here.
"""

from __future__ import annotations

import argparse
import re
import sys
from typing import Any, NoReturn

from rich.console import Console
from rich.markup import escape

from loadtest import __version__
from loadtest.commands import capacity, compare, cost, export, gate, probe, replay, report, run
from loadtest.errors import ExitCode, LoadTestError, exit_code_table
from loadtest.replay.redact import redact_urls_in
from loadtest.stop_signals import stop_signals

COMMANDS = (run, replay, capacity, compare, cost, report, export, gate, probe)  # in the order ``--help`` lists them


class Parser(argparse.ArgumentParser):
    """argparse, with a usage error in one line (what is wrong, and where the usage is) and exit 2.

    argparse's own error prints the whole usage first, a dozen wrapped lines for ``run``, above the one
    line that matters. Subcommands' parsers are made of this class too (``add_subparsers`` uses the
    parent's class).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # argparse takes "-5" for a value but "-5s" or "-20/s" for an unknown option, and then says only that
        # --duration "expected one argument"; read as values, they reach the option's type and its message.
        self._negative_number_matcher = re.compile(r"^-(\d+\.?\d*|\.\d+)\S*$")

    def error(self, message: str) -> NoReturn:
        self.exit(ExitCode.USAGE, f"{self.prog}: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
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
        with stop_signals():  # SIGTERM and SIGHUP stop a run as Ctrl-C does, down the same paths
            return args.func(args, console)
    except LoadTestError as exc:  # one line, however long; its text is the user's (paths, thresholds): escaped
        console.print(f"[red]loadtest:[/] {escape(redact_urls_in(str(exc)))}", highlight=False, soft_wrap=True)
        return exc.exit_code
    except OSError as exc:  # a path that cannot be written or read (--out, --junit): where and why, not a traceback
        line = (f"cannot use {exc.filename}: " if exc.filename else "") + (exc.strerror or str(exc))
        console.print(f"[red]loadtest:[/] {escape(redact_urls_in(line))}", highlight=False, soft_wrap=True)
        return ExitCode.USAGE if exc.filename else ExitCode.RUN_FAILED
    except KeyboardInterrupt:
        return ExitCode.INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
