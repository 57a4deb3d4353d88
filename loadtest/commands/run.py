"""``loadtest run``: a scenario against a target (default: the embedded reference server), then its gates.

``run`` is the whole of one run, and what ``replay``, ``capacity`` and ``compare`` call for each of
theirs: the engine measures (``engine.runner``); then, in this process, the run's files are
analysed, the end table printed, the messy baseline run if asked, the gates judged, and
``summary.json`` written once with all of it; last, the report is built from the directory.
With ``--web``, Locust's web UI runs instead, and each test started from it is concluded as it
stops, in a directory of its own (``serve_web``).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.markup import escape

from loadtest.commands.options import (
    add_gate_options,
    add_load_generator_options,
    add_target_options,
    count,
    duration,
    metrics_page,
    positive_duration,
    rate,
    run_fields,
    share,
)
from loadtest.config.gate_options import GateOptions
from loadtest.errors import ConfigError, DiskFull, ExitCode, RunError, outcome_code

# The engine, analysis and reports (psutil, numpy, pandas) are imported when a run starts: ``loadtest --help``
# loads none of them.
if TYPE_CHECKING:
    from loadtest.config.scenario import Scenario
    from loadtest.engine.runner import RunOptions
    from loadtest.gates.verdict import Gates
    from loadtest.results.summary import Failure, Summary


@dataclass(frozen=True)
class RunOutcome:
    out_dir: Path
    summary: Summary | None  # None when nothing ran (--print-locust-command)
    interrupted: bool
    gates_failed: bool = False
    untrusted: bool = False  # the trust verdict says its latencies are partly the generator's own
    failure: Failure | None = None  # the run itself failed (``analysis.failure``): exit RUN_FAILED whatever the gates

    def exit_code(self, strict: bool = False) -> ExitCode:
        """The command's exit code; ``strict`` (``--strict``) makes an untrusted run a failure of its own."""
        return outcome_code(
            self.interrupted,
            self.gates_failed,
            untrusted=strict and self.untrusted,
            run_failed=self.failure is not None,
        )

    def raise_if_failed(self, what: str) -> None:
        """For commands made of many runs (capacity, compare): a failed run stops them, with its one line.

        A capacity step whose target died is not a failing step, and a compare round without answers
        has nothing to compare: going on would judge the harness's failure as the server's verdict.
        """
        if self.failure is not None:
            raise RunError(f"{what} failed: {self.failure.line} (results: {self.out_dir})")


def run(options: RunOptions, console: Console | None = None) -> RunOutcome:
    from loadtest.engine.runner import measure, run_scenario
    from loadtest.gates.verdict import prepare

    console = console or Console(stderr=True)
    scenario = run_scenario(options)
    gates = prepare(options.gates, scenario.gates, str(scenario.source))  # a typo: one message, before the run
    if options.web_port is not None:
        return serve_web(options, scenario, gates, console)
    measured = measure(options, scenario, console, while_starting=lambda: _load_what_follows(options.report))
    if not measured.ran:
        return RunOutcome(measured.out_dir, None, False)
    return conclude(options, measured.out_dir, gates, measured.interrupted, console)


def serve_web(options: RunOptions, scenario: Scenario, gates: Gates, console: Console) -> RunOutcome:
    """Locust's web UI until the user quits; each test is concluded (analysis, gates, report) as it stops.

    Quitting is how a session ends, so it is no interruption; a test stopped from the browser says
    ``interrupted`` in its own summary. The exit code is the worst the tests earned: a failed run, a
    failed gate, or with ``--strict`` an untrusted run.
    """
    from loadtest.engine.runner import measure

    outcomes: list[RunOutcome] = []

    def finished(test_dir: Path) -> None:
        outcomes.append(conclude(options, test_dir, gates, False, console))

    measured = measure(options, scenario, console, lambda: _load_what_follows(options.report), finished)
    console.print(f"{len(outcomes)} test(s) run from the web UI, in {measured.out_dir}", markup=False)
    failure = next((o.failure for o in outcomes if o.failure is not None), None)
    return RunOutcome(
        measured.out_dir,
        outcomes[-1].summary if outcomes else None,
        interrupted=False,
        gates_failed=any(o.gates_failed for o in outcomes),
        untrusted=any(o.untrusted for o in outcomes),
        failure=failure,
    )


def conclude(options: RunOptions, out_dir: Path, gates: Gates, interrupted: bool, console: Console) -> RunOutcome:
    """Analyse what Locust measured, print it, judge the gates, write the summary once, build the report."""
    from loadtest.analysis.run_analysis import analyse_run
    from loadtest.engine.runner import measured_summary
    from loadtest.gates.verdict import apply
    from loadtest.report.terminal import print_summary
    from loadtest.results.summary import write_summary

    summary = _judge_failure(out_dir, analyse_run(out_dir, measured_summary(out_dir)))
    print_summary(summary, console)
    if summary.messy is not None:
        summary = _messy_outcome(options, out_dir, summary, console)
    if summary.run.interrupted:
        console.print("[yellow]the run was interrupted: these figures cover only what was measured[/]")
    interrupted = interrupted or summary.run.interrupted
    if not gates.empty and not interrupted:
        summary = replace(summary, gates=apply(gates, out_dir, summary, console))
    write_summary(out_dir, summary)
    if options.report:
        _report(out_dir, console)
    console.print(f"results: {out_dir}", markup=False)  # a path is the user's text, never markup
    failed = summary.gates is not None and not summary.gates.passed
    untrusted = summary.trust is not None and not summary.trust.trustworthy
    if untrusted and options.gates.strict and not interrupted:
        console.print("[red bold]--strict: the run is not trustworthy[/] (the reasons above); exit 4")
    if summary.failure is not None and not interrupted:
        console.print(f"[red bold]the run failed:[/] {escape(summary.failure.line)}", highlight=False, soft_wrap=True)
    return RunOutcome(out_dir, summary, interrupted, failed, untrusted, summary.failure)


def _judge_failure(out_dir: Path, summary: Summary) -> Summary:
    """The summary, with ``failure`` when the target stopped answering or a worker was lost (``analysis.failure``)."""
    from loadtest.analysis.failure import judge
    from loadtest.results.directory import read_table

    return replace(summary, failure=judge(read_table(out_dir / "timeline.csv"), summary))


def _load_what_follows(report: bool) -> None:
    """Import the analysis (pandas) and, for the report, matplotlib while Locust starts, not after the run."""
    import loadtest.analysis.run_analysis  # noqa: F401

    if report:
        from loadtest.report.kit import load_matplotlib

        load_matplotlib()


def _messy_outcome(options: RunOptions, out_dir: Path, summary: Summary, console: Console) -> Summary:
    """Print the messy verdicts; with ``messy_baseline``, first run the same schedule without the messy share."""
    from loadtest.report.messy import messy_lines, rich_tables

    if options.messy_baseline and not summary.run.interrupted:
        console.print("the same schedule again without the messy share, for the clean traffic's figures:")
        paired = replace(
            options, out=out_dir / "without-messy", messy_share=0.0, messy_baseline=False, gates=GateOptions()
        )
        baseline = run(paired, console).summary
        without = {"results": str(out_dir / "without-messy"), "latency_ms": baseline.percentiles().as_dict()}
        summary = replace(summary, messy={**summary.messy, "without": without})
    for table in rich_tables(summary):
        console.print(table)
    for line in messy_lines(summary):
        console.print(line, highlight=False, markup=False)
    return summary


def _report(out_dir: Path, console: Console) -> None:
    try:
        from loadtest.report.run import write_reports

        html_path, _ = write_reports(out_dir)
        console.print(f"report: {html_path}", markup=False)
    except DiskFull:  # not the report's fault: the disk's, and the run's exit code says so (3), in one line
        raise
    except Exception as exc:  # the measurements are saved; a report can be built again with `loadtest report`
        why = escape(f"({type(exc).__name__}: {exc}); run `loadtest report {out_dir}`")
        console.print(f"[yellow]the report could not be built {why}[/]")


# -- the command line --------------------------------------------------------------------------------

DEFAULT_WEB_PORT = 8089  # Locust's own


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "run", help="run a scenario against a target (default: the embedded reference server)"
    )
    parser.add_argument("scenario", type=Path, help="scenario TOML, e.g. scenarios/steady.toml")
    add_target_options(parser)
    parser.add_argument(
        "--rate", type=rate, help="open load at this constant rate, e.g. 20, 20/s or 1200/m, replacing the shape"
    )
    parser.add_argument("--users", type=count, help="closed load with this many users, replacing the shape")
    parser.add_argument("--duration", type=positive_duration, help="measured duration, e.g. 30s or 2m")
    parser.add_argument(
        "--warmup", type=duration, help="warm-up before the measured duration, e.g. 5s, or 0 for none (replaces [load])"
    )
    add_load_generator_options(parser, out_default="results/<time>-<scenario>")
    parser.add_argument(
        "--server-pid",
        type=count,
        help="the server process to sample (default: the embedded one, or the target's port)",
    )
    parser.add_argument(
        "--metrics",
        type=metrics_page,
        metavar="URL",
        help="the target's Prometheus page, scraped each second for its own queue and compute split "
        "(e.g. Triton's http://127.0.0.1:8002/metrics), or off; default: the scenario's [target] metrics",
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
        "--web",
        action="store_true",
        help="Locust's web UI on 127.0.0.1: start and stop tests from the browser; each writes OUT/<n>-<time>",
    )
    parser.add_argument("--web-port", type=port, metavar="P", help="the web UI's port (default 8089; needs --web)")
    parser.add_argument(
        "--print-locust-command",
        action="store_true",
        help="print the master and worker commands for a multi-host run, and exit",
    )
    parser.set_defaults(func=handle)


def handle(args: argparse.Namespace, console: Console) -> int:
    from loadtest.engine.runner import RunOptions

    options = RunOptions(
        **run_fields(args),
        rate=args.rate,
        users=args.users,
        duration=args.duration,
        warmup=args.warmup,
        print_locust_command=args.print_locust_command,
        server_pid=args.server_pid,
        messy_share=args.messy,
        messy_baseline=args.messy_baseline,
        web_port=_web_port(args),
        metrics=args.metrics,
    )
    outcome = run(options, console)
    return outcome.exit_code(options.gates.strict)


def port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {text!r}") from None
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port from 1 to 65535, got {value}")
    return value


def _web_port(args: argparse.Namespace) -> int | None:
    """The web UI's port with ``--web`` (else None); the options it cannot go with are one line each."""
    if not args.web:
        if args.web_port is not None:
            raise ConfigError("--web-port", None, "needs --web")
        return None
    for given, option in (
        (args.processes > 1, "--processes"),
        (args.messy_baseline, "--messy-baseline"),
        (args.print_locust_command, "--print-locust-command"),
    ):
        if given:
            raise ConfigError("--web", None, f"runs one load-generator process, one test at a time: drop {option}")
    return args.web_port or DEFAULT_WEB_PORT
