"""``loadtest compare``: the same traffic against two or more deployment profiles, with confidence intervals.

Fair by construction:

- every variant gets the identical schedule and payloads (the scenario's seed, replayed as is);
- every variant's server is pinned by its profile, the generator to the cores left over, so a
  comparison of profiles pinned alike is a comparison of the models, not of core placement;
- rounds are interleaved and counterbalanced, A B C then C B A, each variant's server kept
  running between its rounds, so slow drift of the machine and the place in a round (the first
  run after the servers start, the run after the slowest variant) fall on every variant alike.

The first profile is the baseline; each other is reported against it with bootstrap 95%
intervals (``bootstrap.py``) on p50/p95/p99/p99.9, throughput and server CPU-seconds per
request, and a verdict: better, worse, or no significant difference. Given capacity results
(``--capacity``), the capacities are compared on their search brackets. Output agreement
(``commands.agreement``) says whether the answers differ too. Writes ``compare.json`` and ``compare.md``.

Over gRPC (``oip-v2-grpc``) every server serves gRPC beside REST; the rounds run over gRPC, and
the output agreement reads the same inputs' outputs over REST (``commands.agreement``).
"""

from __future__ import annotations

import argparse
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.markup import escape

from loadtest.commands.options import count, count_or_zero, positive_duration, rate, results_dir
from loadtest.config.profile import Profile, load_profile
from loadtest.engine.target import embedded_server
from loadtest.errors import ConfigError, ExitCode
from loadtest.report.compare import compare_markdown, print_comparison
from loadtest.results.capacity_file import read_capacity
from loadtest.results.directory import provisional_dir, read_table, results_root, run_dir_name
from loadtest.results.files import write_atomic, write_json
from loadtest.results.studies import COMPARE_SCHEMA

# The engine, numpy and the statistics are imported in the functions that use them: ``loadtest --help`` loads none.
if TYPE_CHECKING:
    import numpy as np

    from loadtest.config.scenario import Scenario
    from reference_server.launch import RunningServer

LOWER_IS_BETTER = {"throughput_per_s": False}  # every other metric: latency or cost, lower is better


@dataclass(frozen=True, kw_only=True)
class CompareOptions:
    scenario: Path
    profiles: tuple[str, ...]
    rounds: int = 3
    rate: float | None = None  # None: the scenario's own shape
    duration: float | None = None  # measured seconds per round; None: the scenario's
    agreement_n: int = 256  # 0: skip output agreement
    capacity: tuple[Path, ...] = ()  # capacity results, one per profile in the same order
    resamples: int = 2000
    out: Path | None = None


def round_order(profiles: list[Profile], r: int) -> list[Profile]:
    """Round ``r``'s order: as given in odd rounds, reversed in even ones (ABBA counterbalancing).

    Without it the baseline always runs first, right after the servers start or after the last
    variant, and a position effect of a few per cent reads as a difference between identical twins.
    """
    return profiles if r % 2 else profiles[::-1]


def run_rounds(
    options: CompareOptions, profiles: list[Profile], out: Path, console: Console, servers: dict[str, RunningServer]
) -> dict[str, list[Path]]:
    """A B C, C B A, A B C ...: each round one run of the scenario, on ``servers`` (one a profile, kept up, pinned)."""
    from loadtest.commands.run import run
    from loadtest.engine.runner import RunOptions

    rounds: dict[str, list[Path]] = {p.name: [] for p in profiles}
    quiet = Console(quiet=True)
    for r in range(1, options.rounds + 1):
        for p in round_order(profiles, r):
            round_dir = out / "rounds" / f"{r}-{p.name}"
            outcome = run(
                RunOptions(
                    scenario=options.scenario,
                    profile=p.source,
                    rate=options.rate,
                    duration=options.duration,
                    out=round_dir,
                    server=servers[p.name],
                    report=False,
                ),
                quiet,
            )
            if outcome.interrupted:
                raise KeyboardInterrupt
            outcome.raise_if_failed(f"round {r} of {p.name}")
            s = outcome.summary
            lat = s.percentiles()
            console.print(
                f"  round {r}/{options.rounds} {p.name:>14}: p50 {lat.p50:.1f} ms, p99 {lat.p99:.1f} ms, "
                f"{s.throughput.ok_per_s:.1f} ok/s",
                highlight=False,
                markup=False,
            )
            rounds[p.name].append(round_dir)
    return rounds


def measured_seconds(round_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """Per measured second of a round: successful responses and server CPU-seconds."""
    import math

    import numpy as np

    from loadtest.results.summary import read_summary

    summary = read_summary(round_dir)
    warmup, duration = summary.warmup_s, summary.duration_s
    timeline = read_table(round_dir / "timeline.csv")
    if timeline is None:
        raise ConfigError(str(round_dir / "timeline.csv"), None, "missing or empty: the round measured nothing")
    timeline = timeline[(timeline["second"] >= warmup) & (timeline["second"] < warmup + duration)]
    # Every measured second, those in which nothing happened too (the timeline has no row for them): at 0.4 req/s
    # most seconds have none, and a mean over the others alone read 0.84 req/s.
    seconds = np.arange(math.ceil(warmup), math.ceil(warmup + duration))
    ok = timeline.set_index("second")["ok"].astype(float).reindex(seconds, fill_value=0.0)
    resources = read_table(round_dir / "resources.csv")
    if resources is None or "server_cpu_cores" not in resources:
        return ok.to_numpy(), np.full(len(ok), np.nan)
    # A sampler row at time s (aligned to the run's start) covers (s-1, s]: it falls mostly in second floor(s-0.5).
    cpu = resources.assign(second=np.floor(resources["second"] - 0.5)).groupby("second")["server_cpu_cores"].mean()
    return ok.to_numpy(), cpu.reindex(ok.index).to_numpy()


def differences(baseline: list[Path], other: list[Path], resamples: int) -> dict:
    """Every figure of ``other`` against ``baseline``, with its interval and verdict."""
    import numpy as np

    from loadtest.analysis.bootstrap import PerSecond, compare_percentiles, compare_ratio
    from loadtest.results.intervals import read_interval_counts

    a_counts = [read_interval_counts(d) for d in baseline]
    b_counts = [read_interval_counts(d) for d in other]
    found = [(d, "ms") for d in compare_percentiles(a_counts, b_counts, resamples=resamples)]
    a_sec, b_sec = [measured_seconds(d) for d in baseline], [measured_seconds(d) for d in other]
    throughput = compare_ratio(
        "throughput_per_s", [PerSecond.rate(ok) for ok, _ in a_sec], [PerSecond.rate(ok) for ok, _ in b_sec], resamples
    )
    found.append((throughput, "req/s"))
    if all((~np.isnan(cpu)).sum() >= 2 for _, cpu in a_sec + b_sec):

        def cpu_ms(ok: np.ndarray, cpu: np.ndarray) -> PerSecond:
            sampled = ~np.isnan(cpu)  # the sampler may miss a second at either end of a round
            return PerSecond(cpu[sampled] * 1000, ok[sampled])

        cost = compare_ratio("cpu_ms_per_request", [cpu_ms(*s) for s in a_sec], [cpu_ms(*s) for s in b_sec], resamples)
        found.append((cost, "ms"))
    return {
        "rows": [
            d.as_dict() | {"unit": unit, "verdict": d.verdict(LOWER_IS_BETTER.get(d.metric, True))} for d, unit in found
        ]
    }


def capacity_difference(a_dir: Path, b_dir: Path) -> dict:
    """Capacities compared on their search brackets: [highest passing, lowest failing] rate."""
    a, b = read_capacity(a_dir), read_capacity(b_dir)

    def bracket(data: dict) -> tuple[float | None, float | None]:
        return data.get("capacity_rps"), data.get("lowest_failing_rps")

    (a_low, a_high), (b_low, b_high) = bracket(a), bracket(b)
    verdict = "no significant difference"
    if a_low is not None and b_low is not None:
        if a_high is not None and b_low >= a_high:
            verdict = "better"
        elif b_high is not None and a_low >= b_high:
            verdict = "worse"
    diff = None if a_low is None or b_low is None else b_low - a_low
    return {
        "metric": "capacity_rps",
        "a": a_low,
        "b": b_low,
        "diff": diff,
        "relative": diff / a_low if diff is not None and a_low else None,
        "a_bracket": [a_low, a_high],
        "b_bracket": [b_low, b_high],
        "slo": a["slo"]["text"],
        "verdict": verdict,
        "classes": {
            cls: {
                "a": a.get("classes", {}).get(cls, {}).get("capacity_rps"),
                "b": b.get("classes", {}).get(cls, {}).get("capacity_rps"),
            }
            for cls in set(a.get("classes", {})) | set(b.get("classes", {}))
        },
    }


def compare(options: CompareOptions, console: Console | None = None) -> tuple[Path, dict]:
    from loadtest.config.scenario import load_scenario

    console = console or Console(stderr=True)
    if len(options.profiles) < 2:
        raise ConfigError("compare", None, "needs two profiles or more: the first is the baseline")
    if options.rounds < 1:
        raise ConfigError("--rounds", None, "needs at least one round per profile")
    if options.capacity and len(options.capacity) != len(options.profiles):
        raise ConfigError("--capacity", None, f"give one capacity result per profile ({len(options.profiles)})")
    scenario = load_scenario(options.scenario)
    profiles = [load_profile(p) for p in options.profiles]
    names = [p.name for p in profiles]
    if len(set(names)) != len(names):
        raise ConfigError("compare", None, f"a profile is named twice: {', '.join(names)}")
    if options.agreement_n > 0:  # refused now, not after the rounds
        from loadtest.commands.agreement import checked_inputs

        for p in profiles[1:]:
            checked_inputs(profiles[0], p, options.scenario, options.agreement_n)
    out = options.out or results_root() / run_dir_name(f"compare-{'-vs-'.join(names)}")
    with provisional_dir(out):  # a server that did not start: no empty directory left behind
        return out, _compare(options, scenario, profiles, out, console)


def _compare(options: CompareOptions, scenario: Scenario, profiles: list[Profile], out: Path, console: Console) -> dict:
    """The rounds, the differences and the agreement, written to compare.json as each is known."""
    from loadtest.traffic.protocols import GRPC

    names = [p.name for p in profiles]
    cores = {p.name: list(p.server.cpus) for p in profiles}
    if len({tuple(c) for c in cores.values()}) > 1:
        console.print(
            f"[yellow]the profiles pin their servers to different cores ({escape(str(cores))}): the comparison "
            "mixes model and placement[/]"
        )
    console.print(
        f"comparing {', '.join(names)} on {scenario.name} (seed {scenario.seed}): {options.rounds} interleaved "
        f"rounds each, servers on cores {cores[names[0]] or 'any'}, the generator on the others",
        markup=False,  # names are the user's text
    )
    with ExitStack() as running:  # every server up, pinned, from the first round to the last agreement request
        grpc = scenario.target.protocol == GRPC  # every server serves it too
        servers = {p.name: running.enter_context(embedded_server(p, grpc=grpc)) for p in profiles}
        rounds = run_rounds(options, profiles, out, console, servers)
        return _conclude(options, scenario, profiles, out, console, rounds, servers)


def _conclude(
    options: CompareOptions,
    scenario: Scenario,
    profiles: list[Profile],
    out: Path,
    console: Console,
    rounds: dict[str, list[Path]],
    servers: dict[str, RunningServer],
) -> dict:
    """The differences, then the output agreement read on the rounds' own servers, each saved as it is known."""
    names = [p.name for p in profiles]
    cores = {p.name: list(p.server.cpus) for p in profiles}
    data: dict = {
        "schema": COMPARE_SCHEMA,
        "scenario": {"name": scenario.name, "source": str(scenario.source), "seed": scenario.seed},
        "load": {"rate": options.rate, "duration_s": options.duration, "rounds": options.rounds},
        "baseline": names[0],
        "profiles": [
            {"name": p.name, "source": p.source, "model": p.model, "variant": p.variant, "server_cpus": cores[p.name]}
            for p in profiles
        ],
        "rounds": {name: [str(d.relative_to(out)) for d in dirs] for name, dirs in rounds.items()},
        "comparisons": [],
    }
    for i, p in enumerate(profiles[1:], start=1):
        entry = {"a": names[0], "b": p.name, **differences(rounds[names[0]], rounds[p.name], options.resamples)}
        if options.capacity:
            entry["capacity"] = capacity_difference(options.capacity[0], options.capacity[i])
        data["comparisons"].append(entry)
    _save(out, data)
    if options.agreement_n > 0:
        from loadtest.commands.agreement import agreement_between, agreement_inputs, measure_variants

        console.print(
            f"output agreement: {options.agreement_n} inputs to each of {', '.join(names)} at batch 1 and under load",
            markup=False,
        )
        inputs = agreement_inputs(scenario, options.agreement_n)
        variants = measure_variants(profiles, inputs, {name: server.url for name, server in servers.items()})
        for entry, p in zip(data["comparisons"], profiles[1:], strict=True):
            entry["agreement"] = agreement_between(variants[names[0]], variants[p.name], inputs)
        _save(out, data)
    write_atomic(out / "compare.md", compare_markdown(data))
    return data


def _save(out: Path, data: dict) -> None:
    write_json(out / "compare.json", data)


# -- the command line -----------------------------------------------------------------------------


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("compare", help="the same traffic against two or more profiles, with 95%% intervals")
    parser.add_argument("scenario", type=Path, help="scenario TOML: schedule, payloads and seed")
    parser.add_argument(
        "profiles",
        nargs="+",
        metavar="PROFILE",
        help="profiles (names in profiles/ or paths); the first is the baseline",
    )
    # Before the scenario was positional (as in run and capacity): `compare A B --scenario FILE` still works.
    parser.add_argument("--scenario", dest="scenario_option", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--rounds", type=count, default=3, help="interleaved rounds per profile (default 3)")
    parser.add_argument(
        "--rate", type=rate, help="constant open load, e.g. 20 or 1200/m, instead of the scenario's shape"
    )
    parser.add_argument("--duration", type=positive_duration, help="measured duration of each round, e.g. 15s")
    parser.add_argument(
        "--agreement",
        type=count_or_zero,
        default=256,
        metavar="N",
        help="inputs for output agreement (default 256; 0 skips)",
    )
    parser.add_argument(
        "--capacity", type=Path, nargs="+", default=[], metavar="DIR", help="capacity results, one per profile"
    )
    parser.add_argument("--out", type=results_dir, help="results directory (default results/<time>-compare-...)")
    parser.set_defaults(func=handle)


def handle(args: argparse.Namespace, console: Console) -> int:
    scenario, profiles = args.scenario, tuple(args.profiles)
    if args.scenario_option is not None:  # the deprecated spelling: the first positional was a profile
        console.print("[yellow]compare --scenario FILE is deprecated: give the scenario first, `compare FILE A B`[/]")
        scenario, profiles = args.scenario_option, (str(args.scenario), *profiles)
    options = CompareOptions(
        scenario=scenario,
        profiles=profiles,
        rounds=args.rounds,
        rate=args.rate,
        duration=args.duration,
        agreement_n=args.agreement,
        capacity=tuple(args.capacity),
        out=args.out,
    )
    out, data = compare(options, console)
    print_comparison(data, console)
    console.print(f"results: {out}", markup=False)
    return ExitCode.PASSED
