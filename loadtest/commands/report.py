"""``loadtest report``: report.html and report.md from a results directory, a run's or a study's.

A run's directory (it holds summary.json) is analysed again with the current rules before its
report is built, so an old run reads as a new one would; a study's directory (capacity, compare and
cost results in it) gets one report over all of them.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console

from loadtest.errors import ExitCode


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("report", help="build report.html and report.md from a results directory")
    parser.add_argument(
        "results",
        type=Path,
        help="a run's results directory (summary.json), or a study's: capacity, compare and cost results in it",
    )
    parser.set_defaults(func=handle)


def handle(args: argparse.Namespace, console: Console) -> int:
    if (args.results / "summary.json").exists() or not args.results.is_dir():
        from loadtest.analysis.run_analysis import analyse_run
        from loadtest.report.run import write_reports
        from loadtest.results.summary import read_summary, summary_path, write_summary

        directory = summary_path(args.results).parent
        write_summary(directory, analyse_run(directory, read_summary(directory)))  # with the current rules
        html_path, md_path = write_reports(args.results)
    else:
        from loadtest.report.study import find_study, headline, write_study_report

        html_path, md_path = write_study_report(args.results)
        for line in headline(find_study(args.results)):
            console.print(line, highlight=False, markup=False)
    console.print(f"wrote {html_path} and {md_path}", markup=False)
    return ExitCode.PASSED
