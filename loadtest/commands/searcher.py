"""The capacity command's work: probes and judged steps against one target, each from an idle server.

``Searcher`` is the ``measure`` of ``analysis.search``: each step waits until the target is idle
(``engine.idle``), runs as a full ``loadtest run`` into its own results directory under
``steps/``, and comes back judged, with the wait it took. ``repeated`` runs the whole search as
many times as asked and gives the dictionary ``capacity.json`` holds for it: the median search's
capacity and interval, the spread of the searches, every step.

Where a search starts: a short closed-loop probe (32 users, a few seconds) measures the most the
server completes when it is never idle. Capacity under a latency SLO is below that, so the search
starts at half of it and ramps by 1.5x: a bracket in two or three steps, then the bisection. Steps
at low rates are the slow ones (a p99 needs 662 samples whatever the rate), so a start from a
measured estimate saves most of the search's time.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.markup import escape

from loadtest.errors import LoadTestError

# The engine and the summary are imported in the functions that use them: ``loadtest --help`` loads neither.
if TYPE_CHECKING:
    from loadtest.analysis.search import SearchResult, SearchSettings, Slo, Step
    from loadtest.config.scenario import Scenario
    from loadtest.engine.idle import IdleWatch, ProbeRequest
    from loadtest.results.summary import Summary
    from reference_server.launch import RunningServer

PROBE_USERS = 32
PROBE_SECONDS = 2.0  # hundreds of completions at any rate worth searching: enough for a start within a ramp step
START_SHARE = 0.5  # of the probe's rate
RAMP_FACTOR = 1.5


@dataclass(frozen=True, kw_only=True)
class CapacityOptions:
    scenario: Path
    slo: Slo
    profile: str | None = None
    target: str | None = None
    start_rps: float | None = None  # None: half of what a closed-loop probe completes
    resolution: float = 0.05
    class_resolution: float | None = None  # None: the same as resolution
    min_step_s: float = 5.0
    max_step_s: float = 120.0
    max_steps: int = 16  # per search, confirmations included
    confirm: int = 2  # runs a boundary rate's verdict must hold for
    repeat: int = 1  # whole searches; the capacity is their median
    max_idle_wait_s: float = 30.0  # before each step, for the server to be idle
    per_class: bool = True
    out: Path | None = None
    ceiling_s: float = 1.0  # how long ONNX Runtime alone is timed for the ceiling, per mode, in whole passes


class Searcher:
    """Runs probes and judged steps against one target, each into its own results directory."""

    def __init__(
        self, options: CapacityOptions, out: Path, server: RunningServer | None, idle: IdleWatch, console: Console
    ) -> None:
        self.options, self.out, self.server, self.idle, self.console = options, out, server, idle, console
        self.count = 0
        self.quiet = Console(quiet=True)

    def _run(self, label: str, only_class: str | None, **load) -> tuple[Summary, Path]:
        from loadtest.commands.run import run
        from loadtest.engine.runner import RunOptions

        self.count += 1
        out = self.out / "steps" / f"{self.count:02d}-{label}"
        outcome = run(
            RunOptions(
                scenario=self.options.scenario,
                target=self.options.target,
                profile=self.options.profile,
                out=out,
                only_class=only_class,
                server=self.server,
                report=False,
                **load,
            ),
            self.quiet,
        )
        if outcome.interrupted:
            raise KeyboardInterrupt
        outcome.raise_if_failed(f"capacity run {label}")
        return outcome.summary, out

    def probe(self, only_class: str | None) -> float:
        """Successful responses per second with the server never idle: an upper bound to start from."""
        from loadtest.gates.thresholds import figure

        self.idle.wait()
        summary, _ = self._run(
            f"probe{'-' + only_class if only_class else ''}", only_class, users=PROBE_USERS, duration=PROBE_SECONDS
        )
        completed = figure(summary, "throughput") or 0.0
        self.console.print(
            f"probe{' (' + only_class + ')' if only_class else ''}: {PROBE_USERS} closed-loop users "
            f"complete {completed:.1f} req/s",
            markup=False,  # a class name is the user's text
        )
        if completed <= 0:
            raise LoadTestError(f"the probe completed no requests; see {self.out / 'steps'}")
        return completed

    def step(self, rate: float, only_class: str | None, samples: int, role: str) -> Step:
        """One judged step at ``rate``, long enough for ``samples`` responses, started once the target is idle."""
        from loadtest.analysis.search import CONFIRM, Step, judge_step, step_duration
        from loadtest.gates.thresholds import figure

        options, slo = self.options, self.options.slo
        duration = step_duration(rate, samples, options.min_step_s, options.max_step_s)
        drained = self.idle.wait()
        label = f"{only_class + '-' if only_class else ''}{rate:.1f}rps{'-confirm' if role == CONFIRM else ''}"
        summary, out = self._run(label, only_class, rate=rate, duration=duration)
        accounting, trust = summary.accounting.total, summary.trust
        step = judge_step(
            Step(
                target_rps=round(rate, 3),
                scheduled=accounting.scheduled,
                ok=accounting.ok,
                errors=accounting.errors + accounting.timeouts,
                latency_ms=figure(summary, slo.stat, metric=slo.metric),
                also_ms=tuple(figure(summary, bound.stat, metric=bound.metric) for bound in slo.also),
                p50_ms=figure(summary, "p50"),
                p99_ms=figure(summary, "p99"),
                duration_s=summary.duration_s,
                out_dir=str(out.relative_to(self.out)),
                role=role,
                drain=drained.as_dict(),
                trusted=None if trust is None else trust.trustworthy,
                distrust=() if trust is None else tuple(r.message for r in trust.reasons),
                other_work=other_work(out, self.idle.cores.cores) if self.idle.cores else None,
            ),
            slo,
        )
        self._print_step(step, duration)
        return step

    def _print_step(self, step: Step, duration: float) -> None:
        from loadtest.analysis.search import CONFIRM

        drain = step.drain or {}
        idle = f"idle after {drain.get('waited_s', 0):.1f}s"
        if not drain.get("idle") or drain.get("quiet") is False:
            idle = f"[yellow]not idle after {drain.get('waited_s', 0):.0f}s: {escape(drain.get('last', ''))}[/]"
        shown = "-" if step.latency_ms is None else f"{step.latency_ms:.1f} ms"
        verdict = "[green]holds[/]" if step.passed else "[red]fails[/]: " + escape("; ".join(step.reasons))
        again = " again" if step.role == CONFIRM else ""
        untrusted = f"; [yellow]untrusted: {escape('; '.join(step.distrust))}[/]" if step.trusted is False else ""
        if step.other_work is not None and step.other_work >= 0.05:
            untrusted += f"; [yellow]other work took {step.other_work:.0%} of the server's cores[/]"
        if self.settings(1.0, RAMP_FACTOR, 0.05).disturbed(step) and not step.passed:
            untrusted += " (a failure on a disturbed run is run once more)"
        slo = self.options.slo
        stat = escape(slo.stat if slo.metric == "response" else f"{slo.metric}_{slo.stat}")
        self.console.print(
            f"  {step.target_rps:8.1f} req/s{again} for {duration:g}s ({idle}): {stat} {shown}, "
            f"achieved {step.achieved_rps:.1f}/s, errors {step.error_rate:.2%} -> {verdict}{untrusted}",
            highlight=False,  # its markup is ours: every text of the user's in it is escaped
        )

    def find(self, only_class: str | None, resolution: float) -> SearchResult:
        from loadtest.analysis.search import search

        options = self.options
        if options.start_rps and only_class is None:
            start, factor = options.start_rps, 2.0
        else:
            start, factor = round(self.probe(only_class) * START_SHARE, 1), RAMP_FACTOR
        settings = self.settings(start, factor, resolution)
        return search(lambda rate, *, samples, role: self.step(rate, only_class, samples, role), settings)

    def settings(self, start: float, factor: float, resolution: float) -> SearchSettings:
        from loadtest.analysis.search import SearchSettings
        from loadtest.config.scenario import MAX_RATE_PER_PROCESS

        options = self.options
        return SearchSettings(
            start,
            factor,
            resolution,
            max_rps=MAX_RATE_PER_PROCESS,  # its steps run one load-generator process: past this, a run is refused
            max_steps=options.max_steps,
            confirm=options.confirm,
            percentile=options.slo.percentile,
            budget_ms=options.slo.budget_ms,
        )

    def rule(self, resolution: float) -> str:
        from loadtest.analysis.search import rule_text

        settings = self.settings(1.0, RAMP_FACTOR, resolution)
        options = self.options
        steps = (options.min_step_s, options.max_step_s)
        return rule_text(options.slo, settings, steps, self.idle.criterion, options.repeat)


def repeated(searcher: Searcher, only_class: str | None, resolution: float) -> dict:
    """The whole search ``repeat`` times on the same target, each step from an idle server: capacity.json's part."""
    results = []
    repeat = searcher.options.repeat
    for number in range(1, repeat + 1):
        if repeat > 1:
            searcher.console.print(f"search {number} of {repeat}:")
        found = searcher.find(only_class, resolution)
        results.append(found)
        if repeat > 1:
            shown = "none" if found.capacity_rps is None else f"{found.capacity_rps:.1f} req/s"
            searcher.console.print(f"search {number} of {repeat}: capacity {shown} ({found.stopped})", markup=False)
    return {"rule": searcher.rule(resolution), **search_dict(results)}


def search_dict(results: list[SearchResult]) -> dict:
    """Repeated searches as capacity.json holds them: the median search's figures, the spread, every step."""
    from loadtest.analysis.search import SearchResult, spread

    agreed = spread([r.capacity_rps for r in results])
    median = next(r for r in results if r.capacity_rps == agreed.median_rps)
    steps = [s for r in results for s in r.steps]
    numbered = [{**s.as_dict(), "search": number} for number, r in enumerate(results, 1) for s in r.steps]
    return {
        "capacity_rps": agreed.median_rps,
        "lowest_failing_rps": median.lowest_failing_rps,
        "interval": _interval(median),
        "knee_rps": SearchResult(None, [s for s in steps if s.counted]).knee_rps,
        "stopped": median.stopped,
        "repeat": agreed.as_dict(),
        "searches": [{**_interval(r), "stopped": r.stopped, "steps": len(r.steps)} for r in results],
        "steps": numbered,
    }


def _interval(result: SearchResult) -> dict:
    return {
        "passing_rps": result.capacity_rps,
        "failing_rps": result.lowest_failing_rps,
        "failing_confirmed": result.failing_confirmed,
        "flipped": result.flipped,
        "length": result.length,
    }


def other_work(step_dir: Path, cores: list[int]) -> float | None:
    """The share of the server's cores other processes kept busy during a step: their busy time less the server's.

    From the step's ``resources.csv`` (per-core busy and the server's CPU, each second); None where
    it lacks them.
    """
    import pandas as pd

    try:
        frame = pd.read_csv(step_dir / "resources.csv")
    except (OSError, ValueError):
        return None
    columns = [f"core{c}_busy_pct" for c in cores]
    if frame.empty or any(c not in frame for c in [*columns, "server_cpu_cores"]):
        return None
    others = (frame[columns].sum(axis=1) / 100 - frame["server_cpu_cores"]).clip(lower=0) / len(cores)
    mean = others.mean()
    return None if pd.isna(mean) else round(float(mean), 3)


def probe_request(scenario: Scenario) -> ProbeRequest:
    """One of the scenario's own requests, its first pick: what the idle probe sends where there is no /metrics."""
    from loadtest.engine.idle import ProbeRequest
    from loadtest.engine.runconfig import RunConfig, build_payloads

    config = RunConfig(Path(scenario.source).read_text(), str(scenario.source), "", Path("."))
    protocol, pool = build_payloads(config)
    first = pool.pick(0)
    if scenario.generative and first.text is not None:  # one token, not streamed: the probe times the server
        from loadtest.traffic.protocols import Generation, make_protocol

        target = scenario.target
        whole = make_protocol(
            target.protocol, target.model, path=target.path, generation=Generation(False, False, False)
        )
        return ProbeRequest(protocol.path, whole.encode_prompt(first.text, 1))
    return ProbeRequest(protocol.path, first.body)
