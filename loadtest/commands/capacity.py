"""``loadtest capacity``: find the highest rate a deployment carries within its SLO, and per request class.

The I/O edge of the search in ``analysis.search``: it starts the profile's reference server once,
runs every step through the same engine as ``loadtest run`` (``commands.searcher``: each step a full
results directory under ``steps/``, each started from an idle server), and writes
``capacity.json`` (schema ``loadtest.capacity/1``, read by ``loadtest cost`` and the reports).

The capacity per class is searched the same way with all traffic of the most expensive class, the
one with the highest median latency at light load: traffic that drifts toward it needs that many
instances, and the cost projection says what that costs.

Over gRPC (``oip-v2-grpc``) the embedded server serves gRPC beside REST, as for ``loadtest run``;
the wait for an idle server reads its REST ``/metrics``. A gRPC target of the user's has no
``/metrics`` at its address, so the scenario must name the page (``[target] metrics``); without
it the search is refused before any work.
"""

from __future__ import annotations

import argparse
from contextlib import nullcontext
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console

from loadtest.commands.options import count, duration, fraction, positive_duration, rate, results_dir
from loadtest.commands.searcher import CapacityOptions, Searcher, probe_request, repeated
from loadtest.config.profile import Profile, load_profile
from loadtest.engine.target import embedded_server
from loadtest.errors import ConfigError, ExitCode
from loadtest.replay.redact import redact_url
from loadtest.report.capacity import capacity_lines
from loadtest.results.capacity_file import SCHEMA, write_capacity
from loadtest.results.directory import provisional_dir, results_root, run_dir_name

# The ceiling and the payloads are imported in the functions that use them: ``loadtest --help`` loads neither.
if TYPE_CHECKING:
    from loadtest.config.scenario import Scenario

__all__ = ["CapacityOptions", "find_capacity"]


def most_expensive_class(steps_dir: Path, steps: list[dict]) -> tuple[str | None, dict]:
    """The class with the highest median latency at the lightest passing step (or the lightest step)."""
    from loadtest.results.summary import ALL, read_summary

    candidates = [s for s in steps if s["passed"]] or steps
    if not candidates:
        return None, {}
    lightest = min(candidates, key=lambda s: s["target_rps"])
    summary = read_summary(steps_dir / lightest["out_dir"])
    medians = {
        cls: stats.p50 for cls, stats in summary.latency_ms["response"].items() if cls != ALL and stats.p50 is not None
    }
    if len(medians) < 2:
        return None, medians
    return max(medians, key=medians.get), medians


def tokens_per_request(steps_dir: Path, steps: list[dict]) -> dict | None:
    """A generative workload's mean output (and input) tokens a completed request, over every step's answers.

    The cost projection prices 1M output tokens with it. With ``ignore_eos`` the answers are as
    long as the scenario asks, so every step agrees; without it, an answer may stop early.
    """
    from loadtest.results.summary import read_summary

    output = inputs = answered = 0
    counted_inputs = True
    for step in steps:
        summary = read_summary(steps_dir / step["out_dir"])
        g = summary.generation
        if g is None:
            return None
        output += g["output_tokens"]
        answered += summary.accounting.total.ok
        counted_inputs = counted_inputs and g["input_tokens"] is not None
        inputs += g["input_tokens"] or 0
    if not answered or not output:
        return None
    return {"output": round(output / answered, 3), "input": round(inputs / answered, 3) if counted_inputs else None}


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


def idle_url(scenario: Scenario) -> str:
    """Where the search reads whether a target of the user's is idle: its URL, or for a gRPC one its metrics page.

    The probe (a light request of the scenario's, timed) speaks HTTP; a gRPC target is watched by
    its ``/metrics`` alone, on whatever port the scenario's ``[target] metrics`` names.
    """
    from loadtest.traffic.protocols import GRPC

    target = scenario.target
    if target.protocol != GRPC:
        return target.url
    if not isinstance(target.metrics, str):
        raise ConfigError(
            str(scenario.source),
            "target.metrics",
            f"capacity over {GRPC} waits for an idle server by its /metrics, which a grpc:// address does not "
            'serve: name the page, metrics = "http://HOST:PORT/metrics" (or omit the URL: the embedded server)',
        )
    return target.metrics


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


def find_capacity(options: CapacityOptions, console: Console | None = None) -> tuple[Path, dict]:
    """Run the whole search (all traffic, then the most expensive class); write and return capacity.json."""
    from loadtest.config.scenario import load_scenario

    console = console or Console(stderr=True)
    scenario = load_scenario(options.scenario).with_overrides(url=options.target, profile=options.profile)
    profile = load_profile(scenario.target.profile) if scenario.target.url is None else None
    if profile is None:
        idle_url(scenario)  # a gRPC target without a metrics page: refused before anything runs
    out = options.out or results_root() / run_dir_name(f"capacity-{profile.name if profile else scenario.name}")
    with provisional_dir(out):  # an unreachable target or a server that did not start: no empty directory
        return out, _search(options, scenario, profile, out, console)


def _search(options: CapacityOptions, scenario: Scenario, profile: Profile | None, out: Path, console: Console) -> dict:
    """The searches and what capacity.json records of them, written as they finish."""
    from loadtest.engine.idle import METRICS, IdleWatch
    from loadtest.engine.server_metrics import IN_FLIGHT, QUEUE_ROWS
    from loadtest.traffic.protocols import GRPC

    data: dict = {
        "schema": SCHEMA,
        "profile": profile_meta(profile),
        "scenario": {"name": scenario.name, "source": str(scenario.source)},
        "target": redact_url(scenario.target.url) if scenario.target.url else "embedded",
        "slo": {**asdict(options.slo), "percentile": options.slo.percentile, "text": options.slo.text},
        "resolution": options.resolution,
    }
    if profile is not None and not scenario.generative:  # a decoder's ceiling is not rows a second
        data["raw_ort_rps"] = raw_ort_rps(profile, scenario_texts(scenario), options.ceiling_s)
        if data["raw_ort_rps"]:
            console.print(
                f"ONNX Runtime alone on these texts: {data['raw_ort_rps']:.1f} rows/s (length-sorted batches of 32 "
                f"or batch 1, cores {list(profile.server.cpus) or 'any'}): the ceiling"
            )
    grpc = scenario.target.protocol == GRPC
    with embedded_server(profile, console, grpc=grpc) if profile is not None else nullcontext() as server:
        url, cores = (server.url, list(profile.server.cpus)) if server else (idle_url(scenario), None)
        idle = IdleWatch(url, probe_request(scenario), options.max_idle_wait_s, cores)
        if grpc and idle.signal != METRICS:  # the probe speaks HTTP: a gRPC target is watched by its figures alone
            raise ConfigError(
                str(scenario.source),
                "target.metrics",
                f"{redact_url(url)} shows neither {IN_FLIGHT} nor {QUEUE_ROWS}: nothing tells when the target is idle",
            )
        data["idle"] = {"signal": idle.signal, "criterion": idle.criterion, "max_wait_s": options.max_idle_wait_s}
        searcher = Searcher(options, out, server, idle, console)
        console.print(
            f"searching the capacity of {profile.name if profile else redact_url(scenario.target.url)} "
            f"under {options.slo.text}, errors <= {options.slo.max_error_rate:.1%}, "
            f"achieved >= {options.slo.min_achieved:.0%}",
            markup=False,  # names and the SLO are the user's text
        )
        data.update(repeated(searcher, None, options.resolution))
        write_capacity(out, data)
        if scenario.generative:
            data["tokens_per_request"] = tokens_per_request(out, data["steps"])
        cls, medians = most_expensive_class(out, data["steps"])
        data["most_expensive_class"] = cls
        data["class_medians_ms"] = medians
        data["classes"] = {}
        if cls and options.per_class:
            console.print(f"capacity with all traffic of the most expensive class, {cls!r}:", markup=False)
            data["classes"][cls] = repeated(searcher, cls, options.class_resolution or options.resolution)
            if profile is not None and not scenario.generative:
                server.stop()  # the ceiling is measured on the server's cores, with nothing else on them
                data["classes"][cls]["raw_ort_rps"] = raw_ort_rps(
                    profile, scenario_texts(scenario, cls), options.ceiling_s
                )
    write_capacity(out, data)
    return data


# -- the command line -----------------------------------------------------------------------------


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("capacity", help="find the highest rate a profile carries within a latency SLO")
    parser.add_argument("scenario", type=Path, help="scenario TOML: its payloads and seed (its shape is replaced)")
    parser.add_argument("--profile", help="deployment profile for the embedded server (default: the scenario's)")
    parser.add_argument("--target", help="search an endpoint that is already running instead (loopback only)")
    parser.add_argument(
        "--slo",
        action="append",
        help="latency percentile under a budget (default p99<100ms); give it again for more that must all hold, "
        "e.g. --slo 'ttft_p99<500ms' --slo 'tpot_p99<50ms'",
    )
    parser.add_argument("--max-error", type=fraction, default=0.01, help="error budget, e.g. 1%% (default 1%%)")
    parser.add_argument(
        "--start", type=rate, help="first rate to try, e.g. 40 or 40/s (default: half of a closed-loop probe)"
    )
    parser.add_argument("--resolution", type=fraction, default=0.05, help="stop within this of the capacity (5%%)")
    parser.add_argument(
        "--class-resolution", type=fraction, help="the same for the most expensive class (default: --resolution)"
    )
    parser.add_argument("--min-step", type=positive_duration, default=5.0, help="shortest step (default 5s)")
    parser.add_argument("--max-step", type=positive_duration, default=120.0, help="longest step (default 2m)")
    parser.add_argument(
        "--max-steps", type=count, default=16, help="steps per search at most, confirmations included (default 16)"
    )
    parser.add_argument(
        "--confirm", type=count, default=2, help="runs a boundary rate must hold in (default 2; 1: no confirmation)"
    )
    parser.add_argument(
        "--repeat", type=count, default=1, help="run the whole search N times: the median and the spread (default 1)"
    )
    parser.add_argument(
        "--max-idle-wait", type=duration, default=30.0, help="before each step, wait for an idle server (default 30s)"
    )
    parser.add_argument("--no-class", action="store_true", help="skip the capacity of the most expensive class")
    parser.add_argument(
        "--ceiling-seconds",
        type=positive_duration,
        default=1.0,
        help="how long ONNX Runtime alone is timed for the ceiling, per mode, in whole passes (default 1s)",
    )
    parser.add_argument("--out", type=results_dir, help="results directory (default results/<time>-capacity-<profile>)")
    parser.set_defaults(func=handle)


def handle(args: argparse.Namespace, console: Console) -> int:
    """The search, its lines in the terminal; a bad --slo or --max-error is an input error (GateError, exit 2)."""
    from loadtest.analysis.search import parse_slo

    options = CapacityOptions(
        scenario=args.scenario,
        slo=parse_slo(args.slo or ["p99<100ms"], args.max_error),
        profile=args.profile,
        target=args.target,
        start_rps=args.start,
        resolution=args.resolution,
        class_resolution=args.class_resolution,
        min_step_s=args.min_step,
        max_step_s=args.max_step,
        per_class=not args.no_class,
        max_steps=args.max_steps,
        confirm=args.confirm,
        repeat=args.repeat,
        max_idle_wait_s=args.max_idle_wait,
        out=args.out,
        ceiling_s=args.ceiling_seconds,
    )
    out, data = find_capacity(options, console)
    for line in capacity_lines(data):
        console.print(line, highlight=False, markup=False)
    console.print(f"results: {out}", markup=False)
    return ExitCode.PASSED
