"""``loadtest``: load tests for ML model endpoints.

Exit codes: 0 the run completed and every gate passed; 1 a gate failed (threshold or baseline
regression); 2 a usage or input error (scenario, profile, options, thresholds, baseline,
unreachable target); 3 the run itself failed; 130 interrupted (the results directory still
holds what was measured; gates are not checked).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rich.console import Console

from loadtest import __version__
from loadtest.errors import LoadTestError
from loadtest.units import parse_duration
from reference_server.errors import ReferenceServerError


def _duration(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="loadtest", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"loadtest {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a scenario against a target (default: the embedded reference server)")
    run.add_argument("scenario", type=Path, help="scenario TOML, e.g. scenarios/steady.toml")
    run.add_argument("--target", help="endpoint base URL; omitted: start the reference server with the profile")
    run.add_argument("--profile", help="deployment profile for the embedded server (name in profiles/ or a path)")
    run.add_argument("--rate", type=float, help="open load at this constant rate (req/s), replacing the shape")
    run.add_argument("--users", type=int, help="closed load with this many users, replacing the shape")
    run.add_argument("--duration", type=_duration, help="measured duration, e.g. 30s or 2m")
    run.add_argument("--processes", type=int, default=1, help="load-generator processes (Locust workers)")
    run.add_argument("--out", type=Path, help="results directory (default results/<time>-<scenario>)")
    run.add_argument("--allow-remote", action="store_true", help="allow a target that is not on loopback")
    run.add_argument(
        "--server-pid", type=int, help="the server process to sample (default: the embedded one, or the target's port)"
    )
    run.add_argument("--sample-hz", type=float, default=4.0, help="resource samples per second; 0 turns sampling off")
    run.add_argument(
        "--messy",
        type=_share,
        metavar="SHARE",
        help="messy traffic: this share of arrivals, e.g. 5%% (replaces [messy] share)",
    )
    run.add_argument(
        "--messy-baseline",
        action="store_true",
        help="then run the same schedule without the messy share, and put the clean traffic's percentiles side by side",
    )
    _gate_options(run)
    run.add_argument(
        "--print-locust-command",
        action="store_true",
        help="print the master and worker commands for a multi-host run, and exit",
    )
    rep = sub.add_parser("replay", help="replay captured traffic at its own timing (JSONL, combined logs, HAR)")
    rep.add_argument("capture", type=Path, help="capture file: JSONL, nginx/Apache combined log, or HAR")
    rep.add_argument("--format", choices=("auto", "jsonl", "combined", "har"), default="auto", help="default: detect")
    rep.add_argument("--scenario", type=Path, help="scenario TOML for the target, payload pools, timeouts and SLOs")
    rep.add_argument("--target", help="endpoint base URL; omitted: start the reference server with the profile")
    rep.add_argument("--profile", help="deployment profile for the embedded server (name in profiles/ or a path)")
    rep.add_argument("--speed", type=float, default=1.0, help="divide the captured inter-arrival times by this")
    rep.add_argument("--loop", type=int, default=1, help="replay the capture this many times, back to back")
    rep.add_argument("--window", help="only this part of the capture, from its first request: START..END, e.g. 1m..5m")
    rep.add_argument("--max-rate", type=float, help="cap the send rate (req/s, after --speed); the excess is skipped")
    rep.add_argument(
        "--reorder-window", type=_duration, default=5.0, help="put out-of-order requests back in order within this"
    )
    rep.add_argument(
        "--log-time",
        choices=("end", "start"),
        default="end",
        help="combined logs: the logged time is when the "
        "request ended (nginx, default; the request time is subtracted) or started (Apache %%t)",
    )
    rep.add_argument(
        "--pool",
        action="append",
        default=[],
        metavar="PATH=FILE",
        help="bodies for requests captured without "
        "one (logs): a JSONL file of bodies for this path (repeatable; default: the scenario's payloads)",
    )
    rep.add_argument(
        "--redact",
        action="append",
        default=[],
        metavar="NAME",
        help="another header, query parameter or body field that holds secrets (repeatable)",
    )
    rep.add_argument(
        "--send-secrets",
        action="store_true",
        help="send Authorization, Cookie, API-key-like headers and secret fields to the target (default: stripped)",
    )
    rep.add_argument("--processes", type=int, default=1, help="load-generator processes (Locust workers)")
    rep.add_argument("--out", type=Path, help="results directory (default results/<time>-replay-<capture>)")
    rep.add_argument("--allow-remote", action="store_true", help="allow a target that is not on loopback")
    rep.add_argument("--sample-hz", type=float, default=4.0, help="resource samples per second; 0 turns sampling off")
    rep.add_argument(
        "--profile-only", action="store_true", help="profile the capture (rate, burstiness, mix); send nothing"
    )
    rep.add_argument(
        "--resolution", type=_duration, default=1.0, help="with --profile-only: the rate's bucket length (default 1s)"
    )
    rep.add_argument(
        "--fit-scenario",
        type=Path,
        metavar="OUT.toml",
        help="with --profile-only: write a synthetic scenario whose shape and mix match the capture",
    )
    _gate_options(rep)
    cap = sub.add_parser("capacity", help="find the highest rate a profile carries within a latency SLO")
    cap.add_argument("scenario", type=Path, help="scenario TOML: its payloads and seed (its shape is replaced)")
    cap.add_argument("--profile", help="deployment profile for the embedded server (default: the scenario's)")
    cap.add_argument("--target", help="search an endpoint that is already running instead (loopback only)")
    cap.add_argument("--slo", default="p99<100ms", help="latency percentile under a budget (default p99<100ms)")
    cap.add_argument("--max-error", type=_fraction, default=0.01, help="error budget, e.g. 1%% (default 1%%)")
    cap.add_argument("--start", type=float, help="first rate to try, req/s (default: half of a closed-loop probe)")
    cap.add_argument("--resolution", type=_fraction, default=0.05, help="stop within this of the capacity (5%%)")
    cap.add_argument(
        "--class-resolution", type=_fraction, help="the same for the most expensive class (default: --resolution)"
    )
    cap.add_argument("--min-step", type=_duration, default=5.0, help="shortest step (default 5s)")
    cap.add_argument("--max-step", type=_duration, default=120.0, help="longest step (default 2m)")
    cap.add_argument("--max-steps", type=int, default=12, help="steps per search at most (default 12)")
    cap.add_argument("--no-class", action="store_true", help="skip the capacity of the most expensive class")
    cap.add_argument("--out", type=Path, help="results directory (default results/<time>-capacity-<profile>)")
    cmp_ = sub.add_parser("compare", help="the same traffic against two or more profiles, with 95% intervals")
    cmp_.add_argument("profiles", nargs="+", help="profiles (names in profiles/ or paths); the first is the baseline")
    cmp_.add_argument("--scenario", type=Path, required=True, help="scenario TOML: schedule, payloads and seed")
    cmp_.add_argument("--rounds", type=int, default=3, help="interleaved rounds per profile (default 3)")
    cmp_.add_argument("--rate", type=float, help="constant open load (req/s) instead of the scenario's shape")
    cmp_.add_argument("--duration", type=_duration, help="measured duration of each round, e.g. 15s")
    cmp_.add_argument(
        "--agreement", type=int, default=256, metavar="N", help="inputs for output agreement (default 256; 0 skips)"
    )
    cmp_.add_argument(
        "--capacity", type=Path, nargs="+", default=[], metavar="DIR", help="capacity results, one per profile"
    )
    cmp_.add_argument("--out", type=Path, help="results directory (default results/<time>-compare-...)")
    cost = sub.add_parser("cost", help="project instances, monthly cost and cost per 1M predictions from capacity")
    cost.add_argument("results", type=Path, nargs="*", help="capacity results directories (capacity.json)")
    cost.add_argument(
        "--forecast", required=True, help="'mean=200/s peak=3x growth=1,10,100', or a TOML file with [forecast]"
    )
    cost.add_argument(
        "--profile", action="append", default=[], help="a per-request-priced profile (managed endpoint); repeatable"
    )
    cost.add_argument("--utilisation", type=_fraction, default=0.7, help="target utilisation at peak (default 70%%)")
    cost.add_argument("--min-instances", type=int, default=2, help="instances at least, for redundancy (default 2)")
    cost.add_argument("--out", type=Path, help="where cost.json, cost.md and cost.html go (default results/cost)")
    report = sub.add_parser("report", help="build report.html and report.md from a results directory")
    report.add_argument(
        "results",
        type=Path,
        help="a run's results directory (summary.json), or a study's: capacity, compare and cost results in it",
    )
    gate = sub.add_parser("gate", help="check thresholds and baseline regressions on an earlier run's results")
    gate.add_argument("results", type=Path, help="a results directory (holding summary.json)")
    _gate_options(gate)
    probe = sub.add_parser(
        "probe",
        help="send every messy kind once, without load, and judge each answer (a CI gate)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="""\
Send every messy kind once, one request at a time and without load: the malformed, edge-case and
hostile requests built for the scenario's protocol and payload, and its [messy] custom kinds. Each
answer gets a verdict: correct; wrong (a 200 for garbage, a 4xx for valid text); or defect (a 5xx,
a timeout, a broken connection). Writes probe.json and probe.md, never the bodies sent.

Exit codes: 0 every kind correct (or only wrong ones, with --allow-wrong); 1 a defect, or a wrong
verdict without --allow-wrong; 2 a usage or configuration error, an unreachable target, or a clean
request that fails.""",
    )
    probe.add_argument(
        "target",
        nargs="?",
        help="endpoint base URL; omitted: the scenario's url, else the reference server started with the profile",
    )
    probe.add_argument("--target", dest="target_option", metavar="URL", help="the same as TARGET, as in run and replay")
    probe.add_argument(
        "--scenario", type=Path, help="scenario TOML: protocol, model, payload, [messy] (default: OIP v2, minilm, text)"
    )
    probe.add_argument("--profile", help="deployment profile for the embedded server (default: the scenario's)")
    probe.add_argument("--timeout", type=_duration, default=5.0, help="per request, e.g. 2s (default 5s)")
    probe.add_argument(
        "--kind", action="append", default=[], metavar="KIND", help="probe only this kind (repeatable; default: all)"
    )
    probe.add_argument("--allow-wrong", action="store_true", help="fail on defects only, not on wrong verdicts")
    probe.add_argument("--allow-remote", action="store_true", help="allow a target that is not on loopback")
    probe.add_argument("--junit", type=Path, help="write one JUnit test case per kind to this file")
    probe.add_argument("--out", type=Path, help="results directory (default results/<time>-probe)")
    return parser


def _share(text: str) -> float:
    try:
        value = float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a share like 5% or 0.05") from None
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be between 0 and 100%")
    return value


def _fraction(text: str) -> float:
    try:
        value = float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a fraction like 1% or 0.01") from None
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be between 0 and 100%")
    return value


def _capacity_command(args: argparse.Namespace, console: Console) -> int:
    from loadtest.analysis.search import parse_slo
    from loadtest.commands.capacity import CapacityOptions, find_capacity
    from loadtest.gates.thresholds import GateError

    try:
        slo = parse_slo(args.slo, args.max_error)
    except GateError as exc:
        console.print(f"[red]loadtest:[/] {exc}", highlight=False)
        return 2
    out, data = find_capacity(
        CapacityOptions(
            args.scenario,
            slo,
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
        ),
        console,
    )
    from loadtest.report.capacity import capacity_lines

    for line in capacity_lines(data):
        console.print(line, highlight=False)
    console.print(f"results: {out}")
    return 0


def _compare_command(args: argparse.Namespace, console: Console) -> int:
    from loadtest.commands.compare import CompareOptions, compare
    from loadtest.report.compare import print_comparison

    out, data = compare(
        CompareOptions(
            args.scenario,
            tuple(args.profiles),
            rounds=args.rounds,
            rate=args.rate,
            duration=args.duration,
            agreement_n=args.agreement,
            capacity=tuple(args.capacity),
            out=args.out,
        ),
        console,
    )
    print_comparison(data, console)
    console.print(f"results: {out}")
    return 0


def _cost_command(args: argparse.Namespace, console: Console) -> int:
    from loadtest.analysis.projection import print_projection, project, write_projection
    from loadtest.engine.runner import results_root

    if not args.results and not args.profile:
        console.print("[red]loadtest:[/] cost: give capacity results, or --profile for per-request-priced profiles")
        return 2
    data = project(args.results, args.forecast, args.profile, args.utilisation, args.min_instances)
    print_projection(data, console)
    paths = write_projection(data, args.out or results_root() / "cost")
    console.print(f"wrote {', '.join(map(str, paths))}")
    return 0


def _replay_command(args: argparse.Namespace, console: Console) -> int:
    from loadtest.commands.replay import ReplayOptions, parse_window, replay
    from loadtest.errors import ConfigError
    from loadtest.replay.schedule import ReplaySpec

    if args.processes < 1:
        raise ConfigError("--processes", None, "must be at least 1")
    if args.fit_scenario and not args.profile_only:
        raise ConfigError("--fit-scenario", None, "goes with --profile-only")
    start, end = parse_window(args.window) if args.window else (None, None)
    pools = []
    for entry in args.pool:
        path, sep, file = entry.partition("=")
        if not sep:
            raise ConfigError("--pool", None, f"expected PATH=FILE, got {entry!r}")
        pools.append((path, file))
    spec = ReplaySpec(
        str(args.capture),
        args.format,
        args.speed,
        args.loop,
        start,
        end,
        args.max_rate,
        args.reorder_window,
        args.send_secrets,
        tuple(args.redact),
        tuple(pools),
        args.log_time,
    )
    options = ReplayOptions(
        spec,
        args.scenario,
        args.target,
        args.profile,
        args.processes,
        args.out,
        args.allow_remote,
        _gates(args),
        args.sample_hz,
        args.profile_only,
        args.fit_scenario,
        args.resolution,
    )
    outcome = replay(options, console)
    if outcome is None:
        return 0
    return 130 if outcome.interrupted else 1 if outcome.gates_failed else 0


def _gate_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--threshold",
        action="append",
        default=[],
        metavar="EXPR",
        help="a gate like 'p99 < 250ms', 'p95{class=long} < 400ms', 'error_rate < 1%%' (repeatable; "
        "added to the scenario's [slo] thresholds)",
    )
    parser.add_argument("--baseline", type=Path, help="an earlier results directory to compare with")
    parser.add_argument(
        "--max-regression",
        action="append",
        default=[],
        metavar="LIMIT",
        help="allowed change against --baseline, like p99=+10%% or throughput=-5%% (repeatable; default p99=+10%%)",
    )
    parser.add_argument("--junit", type=Path, help="write one JUnit test case per gate to this file")


def _gates(args: argparse.Namespace):
    from loadtest.gates.verdict import GateOptions

    return GateOptions(tuple(args.threshold), args.baseline, tuple(args.max_regression), args.junit)


def _gate_command(args: argparse.Namespace, console: Console) -> int:
    from loadtest.config.scenario import load_scenario
    from loadtest.gates.verdict import apply, prepare
    from loadtest.results.directory import read_summary

    summary = read_summary(args.results)
    saved = args.results / "scenario.toml"
    thresholds, source = ((), "")
    if saved.exists():
        scenario = load_scenario(saved)
        thresholds, source = scenario.gates, str(saved)
    gates = prepare(_gates(args), thresholds, source)
    if gates.empty:
        console.print("no gates: give --threshold, or --baseline, or [slo] thresholds in the scenario")
        return 2
    results = apply(gates, args.results, summary, console)
    return 0 if all(r.passed for r in results) else 1


def _probe_command(args: argparse.Namespace, console: Console) -> int:
    from loadtest.commands.probe import ProbeOptions, probe
    from loadtest.errors import ConfigError

    if args.target and args.target_option and args.target != args.target_option:
        raise ConfigError("--target", None, f"two targets given: {args.target} and {args.target_option}")
    options = ProbeOptions(
        args.target or args.target_option,
        args.scenario,
        args.profile,
        args.timeout,
        tuple(args.kind),
        args.allow_wrong,
        args.allow_remote,
        args.junit,
        args.out,
    )
    return probe(options, console)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    console = Console(stderr=True)
    if not console.is_terminal:
        console = Console(stderr=True, width=140)  # CI logs: wide enough for the end table
    try:
        if args.command == "run":
            from loadtest.engine.runner import RunOptions, run

            if args.processes < 1:
                raise SystemExit("loadtest: --processes must be at least 1")
            outcome = run(
                RunOptions(
                    args.scenario,
                    args.target,
                    args.profile,
                    args.rate,
                    args.users,
                    args.duration,
                    args.processes,
                    args.out,
                    args.allow_remote,
                    args.print_locust_command,
                    _gates(args),
                    args.server_pid,
                    args.sample_hz,
                    messy_share=args.messy,
                    messy_baseline=args.messy_baseline,
                ),
                console,
            )
            return 130 if outcome.interrupted else 1 if outcome.gates_failed else 0
        if args.command == "replay":
            return _replay_command(args, console)
        if args.command == "compare":
            return _compare_command(args, console)
        if args.command == "cost":
            return _cost_command(args, console)
        if args.command == "capacity":
            return _capacity_command(args, console)
        if args.command == "gate":
            return _gate_command(args, console)
        if args.command == "probe":
            return _probe_command(args, console)
        if args.command == "report":
            if (args.results / "summary.json").exists() or not args.results.is_dir():
                from loadtest.engine.runner import add_analysis
                from loadtest.report.run import write_reports
                from loadtest.results.directory import read_summary

                add_analysis(args.results, read_summary(args.results))  # with the current rules
                html_path, md_path = write_reports(args.results)
            else:
                from loadtest.report.study import find_study, headline, write_study_report

                html_path, md_path = write_study_report(args.results)
                for line in headline(find_study(args.results)):
                    console.print(line, highlight=False)
            console.print(f"wrote {html_path} and {md_path}")
            return 0
    except LoadTestError as exc:
        console.print(f"[red]loadtest:[/] {exc}", highlight=False, soft_wrap=True)  # one line, however long
        return exc.exit_code
    except ReferenceServerError as exc:  # the embedded server could not start: its own words, no traceback
        console.print(f"[red]loadtest:[/] the reference server: {exc}", highlight=False, soft_wrap=True)
        return 3
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
