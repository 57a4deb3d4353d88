"""Apply a run's gates and record the verdict: ``gates.json``, the summary's ``gates``, JUnit, a table.

Gates are checked before a run starts (``prepare``), so a typo in a threshold or a missing
baseline costs one clear message and exit 2, not a wasted run.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from rich.console import Console
from rich.table import Table
from rich.text import Text

from loadtest.config.gate_options import GateOptions
from loadtest.errors import ConfigError
from loadtest.gates.thresholds import (
    LATENCY_STATS,
    OPERATORS,
    GateError,
    Threshold,
    check_regressions,
    check_thresholds,
    figure,
    junit_xml,
    parse_regression,
    parse_threshold,
)
from loadtest.results.files import write_atomic, write_json
from loadtest.results.summary import FAIL, PASS, UNTRUSTED, GateResult, GateResults, Summary, read_summary


@dataclass(frozen=True)
class Gates:
    thresholds: tuple  # parsed Threshold objects, the scenario's first
    regressions: tuple
    baseline: Summary | None
    baseline_dir: Path | None
    junit: Path | None
    strict: bool = False  # an untrusted run's latency gates fail (exit 4) instead of going unjudged

    @property
    def empty(self) -> bool:
        return not self.thresholds and not self.regressions


def prepare(options: GateOptions, scenario_thresholds: tuple[str, ...] = (), scenario_source: str = "") -> Gates:
    """Parse every threshold and limit and read the baseline; ConfigError (exit 2) names what is wrong."""
    thresholds = []
    for i, text in enumerate(scenario_thresholds):
        try:
            thresholds.append(parse_threshold(text))
        except GateError as exc:
            raise ConfigError(scenario_source, f"slo.thresholds[{i}]", str(exc)) from None
    for text in options.thresholds:
        try:
            thresholds.append(parse_threshold(text))
        except GateError as exc:
            raise ConfigError("--threshold", None, str(exc)) from None
    regressions = []
    for text in options.max_regression:
        try:
            regressions.append(parse_regression(text))
        except GateError as exc:
            raise ConfigError("--max-regression", None, str(exc)) from None
    if regressions and options.baseline is None:
        raise ConfigError("--max-regression", None, "needs --baseline DIR, the run to compare with")
    baseline = read_summary(options.baseline) if options.baseline is not None else None
    if baseline is not None and not regressions:
        regressions = [parse_regression("p99=+10%")]  # a baseline alone: the usual guard
    return Gates(tuple(thresholds), tuple(regressions), baseline, options.baseline, options.junit, options.strict)


def apply(gates: Gates, out_dir: Path, summary: Summary, console: Console) -> GateResults:
    """Check the gates on a finished run, write ``gates.json`` (and JUnit) beside its results, print the table.

    The verdict goes into the summary too; the caller writes that, once, with everything else.
    """
    results = check_thresholds(summary, list(gates.thresholds))
    latency = [t.stat in LATENCY_STATS for t in gates.thresholds]
    if gates.baseline is not None:
        results += check_regressions(summary, gates.baseline, list(gates.regressions))
        latency += [limit.stat in LATENCY_STATS for limit in gates.regressions]
    if summary.trust is not None and not summary.trust.trustworthy:
        server_own = [_server_own_failure(t, summary) for t in gates.thresholds]
        server_own += [None] * len(gates.regressions if gates.baseline is not None else ())
        results = [
            (untrusted(r) if own is None else _stands(r, own)) if on_latency else r
            for r, on_latency, own in zip(results, latency, server_own, strict=True)
        ]
    verdict = GateResults(
        passed=all(r.passed for r in results if r.verdict != UNTRUSTED),
        baseline=str(gates.baseline_dir) if gates.baseline_dir else None,
        results=tuple(results),
    )
    write_json(out_dir / "gates.json", verdict.as_dict())
    if gates.junit is not None:
        gates.junit.parent.mkdir(parents=True, exist_ok=True)
        run = summary.run
        junit = junit_xml(results, summary.name, gates.strict, started_epoch=run.started_epoch, seconds=run.elapsed)
        write_atomic(gates.junit, junit)
    console.print(gate_table(results))
    if verdict.untrusted:
        console.print(
            "[yellow]latency gates not judged: the run is not trustworthy (see above); "
            + ("--strict makes that a failure (exit 4)" if gates.strict else "--strict would make that a failure")
            + "[/]"
        )
    return verdict


# Reasons that leave the client's own clock doubtful: a busy or starved generator reads its
# responses late, so even service latency (from the actual send) may hold its delay.
CLOCK_DOUBTS = frozenset({"generator_busy", "starved_core"})


def _server_own_failure(threshold: Threshold, summary: Summary) -> float | None:
    """A response-latency gate that service latency (from the actual send) breaks too: the server's own failure.

    Send lateness, a lost worker and client drops only add to response latency or take load
    away; neither makes the server's own time longer. So when those are the only doubts and
    service latency alone breaks the limit, the failure stands, and CI keeps its red build.
    The service figure that breaks the limit, or None when the gate is not judged.
    """
    if threshold.stat not in LATENCY_STATS or threshold.metric not in ("response", "service"):
        return None
    if threshold.op not in ("<", "<="):  # only an upper bound is broken the same way by both
        return None
    if summary.trust is None or any(r.rule in CLOCK_DOUBTS for r in summary.trust.reasons):
        return None
    service = figure(summary, threshold.stat, threshold.cls, "service")
    if service is None or OPERATORS[threshold.op](service, threshold.limit):
        return None
    return service


def _stands(result: GateResult, service_ms: float) -> GateResult:
    own = f"service latency {service_ms:.3f}ms breaks it too: the server's own"
    return replace(result, message=f"{result.message} ({own})")


def untrusted(result: GateResult) -> GateResult:
    """A latency gate of a run whose latencies are partly the generator's own: neither passed nor failed."""
    measured = result.message.removesuffix(": pass").removesuffix(": FAIL")
    message = f"{measured}: not judged, the run is not trustworthy"
    return replace(result, passed=None, message=message, status=UNTRUSTED)


def gate_table(results: list[GateResult]) -> Table:
    table = Table(title="gates", title_justify="left")
    table.add_column("gate")
    table.add_column("result")
    table.add_column("detail")
    shown = {PASS: "[green]pass[/]", FAIL: "[red bold]FAIL[/]", UNTRUSTED: "[yellow bold]UNTRUSTED[/]"}
    for r in results:
        table.add_row(Text(r.name), shown[r.verdict], Text(r.message))  # the user's text: never read as markup
    return table
