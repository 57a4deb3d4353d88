"""``loadtest capacity``: find the highest rate a deployment carries within its SLO, and per request class.

The I/O edge of the search in ``search.py``: it starts the profile's reference server once, runs
every step through the same engine as ``loadtest run`` (each step a full results directory under
``steps/``), and writes ``capacity.json`` (schema ``loadtest.capacity/1``, read by
``loadtest cost`` and the reports).

Where the search starts: a short closed-loop probe (32 users, a few seconds) measures the most the
server completes when it is never idle. Capacity under a latency SLO is below that, so the search
starts at half of it and ramps by 1.5x: a bracket in two or three steps, then the bisection. Steps
at low rates are the slow ones (a p99 needs 662 samples whatever the rate), so a start from a
measured estimate saves most of the search's time. The capacity per class is searched the same way with all traffic of
the most expensive class, the one with the highest median latency at light load: traffic that
drifts toward it needs that many instances, and the cost projection says what that costs.
"""

from __future__ import annotations

import argparse
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console

from loadtest.commands.options import duration, fraction
from loadtest.config.profile import Profile, load_profile
from loadtest.engine.target import embedded_server
from loadtest.errors import ExitCode, LoadTestError
from loadtest.report.capacity import capacity_lines
from loadtest.results.capacity_file import SCHEMA, write_capacity
from loadtest.results.directory import results_root, run_dir_name

# The engine, the search and the summary are imported in the functions that use them: ``loadtest --help`` loads none.
if TYPE_CHECKING:
    from loadtest.analysis.search import SearchResult, Slo, Step
    from loadtest.config.scenario import Scenario
    from loadtest.results.summary import Summary
    from reference_server.launch import RunningServer

PROBE_USERS = 32
PROBE_SECONDS = 4.0
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
    max_steps: int = 12
    per_class: bool = True
    out: Path | None = None


class Searcher:
    """Runs probes and judged steps against one target, each into its own results directory."""

    def __init__(self, options: CapacityOptions, out: Path, server: RunningServer | None, console: Console) -> None:
        self.options, self.out, self.server, self.console = options, out, server, console
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
        return outcome.summary, out

    def probe(self, only_class: str | None) -> float:
        """Successful responses per second with the server never idle: an upper bound to start from."""
        from loadtest.gates.thresholds import figure

        summary, _ = self._run(
            f"probe{'-' + only_class if only_class else ''}", only_class, users=PROBE_USERS, duration=PROBE_SECONDS
        )
        completed = figure(summary, "throughput") or 0.0
        self.console.print(
            f"probe{' (' + only_class + ')' if only_class else ''}: {PROBE_USERS} closed-loop users "
            f"complete {completed:.1f} req/s"
        )
        if completed <= 0:
            raise LoadTestError(f"the probe completed no requests; see {self.out / 'steps'}")
        return completed

    def step(self, rate: float, only_class: str | None) -> Step:
        from loadtest.analysis.search import Step, judge_step, step_duration
        from loadtest.gates.thresholds import figure

        slo = self.options.slo
        duration = step_duration(rate, slo.percentile, self.options.min_step_s, self.options.max_step_s)
        label = f"{only_class + '-' if only_class else ''}{rate:.1f}rps"
        summary, out = self._run(label, only_class, rate=rate, duration=duration)
        accounting = summary.accounting.total
        step = judge_step(
            Step(
                target_rps=round(rate, 3),
                scheduled=accounting.scheduled,
                ok=accounting.ok,
                errors=accounting.errors + accounting.timeouts,
                latency_ms=figure(summary, slo.stat, metric=slo.metric),
                p50_ms=figure(summary, "p50"),
                p99_ms=figure(summary, "p99"),
                duration_s=summary.duration_s,
                out_dir=str(out.relative_to(self.out)),
            ),
            slo,
        )
        shown = "-" if step.latency_ms is None else f"{step.latency_ms:.1f} ms"
        verdict = "[green]holds[/]" if step.passed else "[red]fails[/]: " + "; ".join(step.reasons)
        self.console.print(
            f"  {rate:8.1f} req/s for {duration:g}s: {slo.stat} {shown}, achieved {step.achieved_rps:.1f}/s, "
            f"errors {step.error_rate:.2%} -> {verdict}",
            highlight=False,
        )
        return step

    def find(self, only_class: str | None, resolution: float) -> SearchResult:
        from loadtest.analysis.search import SearchSettings, search

        if self.options.start_rps and only_class is None:
            settings = SearchSettings(self.options.start_rps, resolution=resolution, max_steps=self.options.max_steps)
        else:
            start = round(self.probe(only_class) * START_SHARE, 1)
            settings = SearchSettings(start, RAMP_FACTOR, resolution, max_steps=self.options.max_steps)
        return search(lambda rate: self.step(rate, only_class), settings)


def most_expensive_class(steps_dir: Path, result: SearchResult) -> tuple[str | None, dict]:
    """The class with the highest median latency at the lightest passing step (or the lightest step)."""
    from loadtest.results.summary import ALL, read_summary

    candidates = [s for s in result.steps if s.passed] or result.steps
    if not candidates:
        return None, {}
    lightest = min(candidates, key=lambda s: s.target_rps)
    summary = read_summary(steps_dir / lightest.out_dir)
    medians = {
        cls: stats.p50 for cls, stats in summary.latency_ms["response"].items() if cls != ALL and stats.p50 is not None
    }
    if len(medians) < 2:
        return None, medians
    return max(medians, key=medians.get), medians


def raw_ort_rps(profile: Profile, texts: list[str], seconds: float = 1.0, batch: int = 32) -> float | None:
    """Rows per second of ONNX Runtime alone on the scenario's texts, on the server's cores: the ceiling.

    Capacity above it would be a broken measurement; see ``reference_server.ceiling``. Imported
    here, not at the top, so the command loads ONNX Runtime only when it measures.
    """
    from reference_server.ceiling import ort_ceiling_rps

    return ort_ceiling_rps(
        profile.model,
        profile.variant,
        texts,
        threads=profile.server.threads,
        cpus=profile.server.cpus,
        seconds=seconds,
        batch=batch,
    )


def scenario_texts(scenario: Scenario, only_class: str | None = None, n: int = 2048) -> list[str]:
    """The texts the scenario sends, in the mix it sends them (one pick per arrival)."""
    from loadtest.engine.runconfig import RunConfig, build_payloads

    overrides = {"only_class": only_class} if only_class else {}
    config = RunConfig(Path(scenario.source).read_text(), str(scenario.source), "", Path("."), overrides=overrides)
    _, pool = build_payloads(config)
    return [p.text for p in (pool.pick(i) for i in range(n)) if p.text]


def profile_meta(profile: Profile | None) -> dict | None:
    if profile is None:
        return None
    return {
        "name": profile.name,
        "source": profile.source,
        "model": profile.model,
        "variant": profile.variant,
        "description": profile.description,
        "server": {**asdict(profile.server), "cpus": list(profile.server.cpus)},
        "hardware": asdict(profile.hardware) if profile.hardware else None,
        "price": asdict(profile.price) if profile.price else None,
    }


def _search_dict(result: SearchResult) -> dict:
    return {
        "capacity_rps": result.capacity_rps,
        "lowest_failing_rps": result.lowest_failing_rps,
        "knee_rps": result.knee_rps,
        "stopped": result.stopped,
        "steps": [s.as_dict() for s in result.steps],
    }


def find_capacity(options: CapacityOptions, console: Console | None = None) -> tuple[Path, dict]:
    """Run the whole search (all traffic, then the most expensive class); write and return capacity.json."""
    from loadtest.config.scenario import load_scenario

    console = console or Console(stderr=True)
    scenario = load_scenario(options.scenario).with_overrides(url=options.target, profile=options.profile)
    profile = load_profile(scenario.target.profile) if scenario.target.url is None else None
    out = options.out or results_root() / run_dir_name(f"capacity-{profile.name if profile else scenario.name}")
    out.mkdir(parents=True, exist_ok=True)
    data: dict = {
        "schema": SCHEMA,
        "profile": profile_meta(profile),
        "scenario": {"name": scenario.name, "source": str(scenario.source)},
        "target": scenario.target.url or "embedded",
        "slo": {**asdict(options.slo), "percentile": options.slo.percentile, "text": options.slo.text},
        "resolution": options.resolution,
    }
    if profile is not None:
        data["raw_ort_rps"] = raw_ort_rps(profile, scenario_texts(scenario))
        if data["raw_ort_rps"]:
            console.print(
                f"ONNX Runtime alone on these texts: {data['raw_ort_rps']:.1f} rows/s (length-sorted batches of 32 "
                f"or batch 1, cores {list(profile.server.cpus) or 'any'}): the ceiling"
            )
    with embedded_server(profile, console) if profile is not None else nullcontext() as server:
        searcher = Searcher(options, out, server, console)
        console.print(
            f"searching the capacity of {profile.name if profile else scenario.target.url} "
            f"under {options.slo.text}, errors <= {options.slo.max_error_rate:.1%}, "
            f"achieved >= {options.slo.min_achieved:.0%}"
        )
        result = searcher.find(None, options.resolution)
        data.update(_search_dict(result))
        write_capacity(out, data)
        cls, medians = most_expensive_class(out, result)
        data["most_expensive_class"] = cls
        data["class_medians_ms"] = medians
        data["classes"] = {}
        if cls and options.per_class:
            console.print(f"capacity with all traffic of the most expensive class, {cls!r}:")
            found = searcher.find(cls, options.class_resolution or options.resolution)
            data["classes"][cls] = _search_dict(found)
            if profile is not None:
                server.stop()  # the ceiling is measured on the server's cores, with nothing else on them
                data["classes"][cls]["raw_ort_rps"] = raw_ort_rps(profile, scenario_texts(scenario, cls))
    write_capacity(out, data)
    return out, data


# -- the command line -----------------------------------------------------------------------------


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("capacity", help="find the highest rate a profile carries within a latency SLO")
    parser.add_argument("scenario", type=Path, help="scenario TOML: its payloads and seed (its shape is replaced)")
    parser.add_argument("--profile", help="deployment profile for the embedded server (default: the scenario's)")
    parser.add_argument("--target", help="search an endpoint that is already running instead (loopback only)")
    parser.add_argument("--slo", default="p99<100ms", help="latency percentile under a budget (default p99<100ms)")
    parser.add_argument("--max-error", type=fraction, default=0.01, help="error budget, e.g. 1%% (default 1%%)")
    parser.add_argument("--start", type=float, help="first rate to try, req/s (default: half of a closed-loop probe)")
    parser.add_argument("--resolution", type=fraction, default=0.05, help="stop within this of the capacity (5%%)")
    parser.add_argument(
        "--class-resolution", type=fraction, help="the same for the most expensive class (default: --resolution)"
    )
    parser.add_argument("--min-step", type=duration, default=5.0, help="shortest step (default 5s)")
    parser.add_argument("--max-step", type=duration, default=120.0, help="longest step (default 2m)")
    parser.add_argument("--max-steps", type=int, default=12, help="steps per search at most (default 12)")
    parser.add_argument("--no-class", action="store_true", help="skip the capacity of the most expensive class")
    parser.add_argument("--out", type=Path, help="results directory (default results/<time>-capacity-<profile>)")
    parser.set_defaults(func=handle)


def handle(args: argparse.Namespace, console: Console) -> int:
    """The search, its lines in the terminal; a bad --slo or --max-error is an input error (GateError, exit 2)."""
    from loadtest.analysis.search import parse_slo

    options = CapacityOptions(
        scenario=args.scenario,
        slo=parse_slo(args.slo, args.max_error),
        profile=args.profile,
        target=args.target,
        start_rps=args.start,
        resolution=args.resolution,
        class_resolution=args.class_resolution,
        min_step_s=args.min_step,
        max_step_s=args.max_step,
        per_class=not args.no_class,
        max_steps=args.max_steps,
        out=args.out,
    )
    out, data = find_capacity(options, console)
    for line in capacity_lines(data):
        console.print(line, highlight=False)
    console.print(f"results: {out}")
    return ExitCode.PASSED
