"""``loadtest replay``: captured traffic, replayed at its own timing through the same engine as ``run``.

First a scan walks the capture once (streaming, as every step does): it fixes the replay's origin
and length, counts what will be skipped and why, and writes ``replay.json``, so every Locust
process replays the same schedule and the report knows what was intended. Then ``run.run`` does
the rest as for any scenario: the embedded server or a target, Locust (``--processes N``), the
recording, the results directory, the report and the gates. ``--profile-only`` stops after the
description of the capture, which can feed the cost projection and a fitted synthetic scenario.
"""

from __future__ import annotations

import argparse
import os
import time
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
    positive_duration,
    positive_number,
    rate,
    run_fields,
)
from loadtest.config.gate_options import GateOptions
from loadtest.errors import ConfigError, ExitCode
from loadtest.replay.readers import detect_format, read_capture
from loadtest.results.directory import provisional_dir, results_root, run_dir_name
from loadtest.results.files import write_atomic, write_json
from loadtest.traffic.lines import MAX_LINE_BYTES
from loadtest.units import format_bytes

# The engine and the schedule (numpy, pandas) are imported in the functions that use them: ``loadtest --help``
# loads neither.
if TYPE_CHECKING:
    from loadtest.commands.run import RunOutcome
    from loadtest.replay.schedule import ReplaySpec

LISTED = 100  # line numbers kept per skip reason; the counts are always whole
REPLAY_SCHEMA = "loadtest.replay/1"


@dataclass(frozen=True, kw_only=True)
class ReplayOptions:
    spec: ReplaySpec
    scenario: Path | None = None  # target, protocol, payloads, timeouts and SLOs; the capture sets the timing
    target: str | None = None
    profile: str | None = None
    processes: int = 1
    out: Path | None = None
    allow_remote: bool = False
    gates: GateOptions = GateOptions()
    sample_hz: float = 4.0
    report: bool = True  # build report.html and report.md at the end
    profile_only: bool = False
    fit_scenario: Path | None = None
    bucket: float = 1.0  # the capture description's bucket length, seconds (``--bucket``)


def parse_window(text: str) -> tuple[float | None, float | None]:
    """``START..END`` in durations from the capture's first request; either end may be left out."""
    from loadtest.units import parse_duration

    if ".." not in text:
        raise ConfigError("--window", None, f"expected START..END such as 30s..2m, ..5m or 1m.., got {text!r}")
    start_text, end_text = text.split("..", 1)
    try:
        start = parse_duration(start_text) if start_text.strip() else None
        end = parse_duration(end_text) if end_text.strip() else None
    except ValueError as exc:
        raise ConfigError("--window", None, str(exc)) from None
    if start is not None and end is not None and end <= start:
        raise ConfigError("--window", None, f"the end must come after the start, got {text!r}")
    return start, end


def scan(spec: ReplaySpec, console: Console) -> tuple[ReplaySpec, dict]:
    """One pass over the capture: the schedule's origin and length, intended sends per second, skips."""
    from loadtest.replay.schedule import SKIP_REASONS, Arrival, schedule

    size = os.path.getsize(spec.capture) if os.path.exists(spec.capture) else 0
    one_pass = replace(spec, loops=1)
    arrivals, first, last = 0, None, None
    per_second: list[int] = []
    skipped: dict[str, dict] = {}
    origin = None
    began = time.monotonic()
    shown = escape(spec.capture)  # a path is the user's text, not markup
    with console.status(f"scanning {shown} ({format_bytes(size)})...") as status:
        for item in schedule(one_pass):
            if isinstance(item, Arrival):
                if origin is None:
                    origin = item.request.time - (item.offset * spec.speed + (spec.window_start or 0.0))
                    first = item.offset
                arrivals += 1
                last = item.offset
                _tally(per_second, item.offset)
                if arrivals % 20000 == 0:
                    status.update(f"scanning {shown} ({format_bytes(size)}): {arrivals:,} requests")
                continue
            entry = skipped.setdefault(item.reason, {"count": 0, "lines": [], "why": SKIP_REASONS[item.reason]})
            entry["count"] += 1
            if len(entry["lines"]) < LISTED and item.reason != "outside_window":
                entry["lines"].append({"line": item.line, "detail": item.detail} if item.detail else item.line)
    if arrivals == 0:
        raise ConfigError(spec.capture, None, "holds no request to replay" + _why_none(skipped))
    # One pass lasts from the first intended send to one mean gap past the last, so loops do not collide.
    gap = (last - first) / (arrivals - 1) if arrivals > 1 else 1.0
    loop_length = last + gap
    spec = replace(spec, origin=origin, loop_length=loop_length)
    intended = _looped(per_second, spec)
    found = {
        "schema": REPLAY_SCHEMA,
        "capture": spec.capture,
        "capture_bytes": size,
        "format": spec.format,
        "speed": spec.speed,
        "loops": spec.loops,
        "window": [spec.window_start, spec.window_end],
        "max_rate": spec.max_rate,
        "reorder_window_s": spec.reorder_window,
        "send_secrets": spec.send_secrets,
        "requests_per_pass": arrivals,
        "pass_seconds": round(loop_length, 3),
        "duration_s": round(loop_length * spec.loops, 3),
        "skipped": skipped,
        "scan_seconds": round(time.monotonic() - began, 2),
        "intended_per_second": intended,
    }
    return spec, found


def _tally(per_second: list[int], offset: float) -> None:
    second = int(offset)
    if second >= len(per_second):
        per_second.extend([0] * (second + 1 - len(per_second)))
    per_second[second] += 1


def _looped(one_pass: list[int], spec: ReplaySpec) -> list[int]:
    """Intended sends per second over every loop: each pass shifted by the loop length."""
    total: list[int] = []
    for loop in range(spec.loops):
        shift = loop * spec.loop_length
        whole, fraction = int(shift), shift - int(shift)
        for second, n in enumerate(one_pass):
            if not n:
                continue
            # A pass that starts mid-second splits each second's count between two: spread by the fraction.
            late = round(n * fraction)
            for at, part in ((second + whole, n - late), (second + whole + 1, late)):
                if part:
                    if at >= len(total):
                        total.extend([0] * (at + 1 - len(total)))
                    total[at] += part
    return total


def _why_none(skipped: dict) -> str:
    if not skipped:
        return ""
    return " (skipped: " + ", ".join(f"{v['count']} {k.replace('_', ' ')}" for k, v in skipped.items()) + ")"


DEFAULT_SCENARIO = """name = "{name}"
description = "replay of {capture}"

[target]
profile = "minilm-fp32"

[load]
duration = "1s"  # replaced by the capture's length
"""


def replay(options: ReplayOptions, console: Console) -> RunOutcome | None:
    spec = options.spec
    _check(spec)
    if spec.format == "auto":  # once here, not in every worker; the report names the format found
        spec = replace(spec, format=detect_format(Path(spec.capture)))
    name = f"replay-{Path(spec.capture).stem}"
    if options.profile_only:
        describe_only(replace(options, spec=spec), console)
        return None
    from loadtest.replay.schedule import check_replay_load

    spec, found = scan(spec, console)
    check_replay_load(found["intended_per_second"], options.processes, spec.capture)
    out_dir = options.out or results_root() / run_dir_name(name)
    # A preflight that fails (an unreachable target) takes the scan's files and the directory with it.
    with provisional_dir(out_dir, written_first=("replay.json", "scenario.toml")):
        return _replay_scanned(options, spec, found, out_dir, console)


def _replay_scanned(
    options: ReplayOptions, spec: ReplaySpec, found: dict, out_dir: Path, console: Console
) -> RunOutcome:
    """The run of a scanned capture: ``replay.json`` and, without ``--scenario``, a scenario for its target."""
    from loadtest.commands.run import run
    from loadtest.engine.runner import RunOptions

    name = f"replay-{Path(spec.capture).stem}"
    write_json(out_dir / "replay.json", found, indent=1)
    console.print(
        f"capture {spec.capture}: {found['requests_per_pass']:,} requests over "
        f"{found['pass_seconds'] * spec.speed:g} s captured, replayed at x{spec.speed:g}"
        + (f", {spec.loops} loops" if spec.loops > 1 else "")
        + f": {found['duration_s']:g} s"
        + _why_none(found["skipped"]).replace(" (", "; ").rstrip(")"),
        highlight=False,
        markup=False,
    )
    scenario = options.scenario
    if scenario is None:
        scenario = out_dir / "scenario.toml"
        write_atomic(scenario, DEFAULT_SCENARIO.format(name=name, capture=spec.capture.replace('"', "'")))
    return run(
        RunOptions(
            scenario=scenario,
            target=options.target,
            profile=options.profile,
            duration=max(found["duration_s"], 0.001),
            processes=options.processes,
            out=out_dir,
            allow_remote=options.allow_remote,
            gates=options.gates,
            sample_hz=options.sample_hz,
            report=options.report,
            replay=spec,
        ),
        console,
    )


def _check(spec: ReplaySpec) -> None:
    from loadtest.traffic.payloads import jsonl_pool

    if not Path(spec.capture).exists():
        raise ConfigError(spec.capture, None, "capture file not found")
    if spec.speed <= 0:
        raise ConfigError("--speed", None, f"must be above 0, got {spec.speed:g}")
    if spec.loops < 1:
        raise ConfigError("--loop", None, f"must be at least 1, got {spec.loops}")
    if spec.max_rate is not None and spec.max_rate <= 0:
        raise ConfigError("--max-rate", None, f"must be above 0, got {spec.max_rate:g}")
    if spec.reorder_window < 0:
        raise ConfigError("--reorder-window", None, "cannot be negative")
    for path, file in spec.pools:
        if not path.startswith("/"):
            raise ConfigError("--pool", None, f"expected PATH=FILE with PATH starting with /, got {path}={file}")
        if not Path(file).exists():
            raise ConfigError(file, None, "payload file (--pool) not found")
        jsonl_pool(Path(file), 1, max_line=spec.max_line_bytes, raise_with="--max-line-bytes")  # here, not in a worker


def _read_base(path: Path) -> str:
    """The scenario whose target and payload a fitted scenario keeps, checked as any scenario is."""
    from loadtest.config.scenario import load_scenario

    load_scenario(path)  # one clear message naming the file and key, before anything is written
    return path.read_text()


def describe_only(options: ReplayOptions, console: Console) -> dict:
    """The capture's description: rate over time, burstiness, sizes, mix; a forecast and a fitted scenario."""
    from loadtest.replay.describe import (
        describe_capture,
        description_dict,
        description_lines,
        fit_scenario,
        forecast_toml,
    )

    spec = options.spec
    with console.status(f"profiling {escape(spec.capture)}..."):
        if options.bucket <= 0:
            raise ConfigError("--bucket", None, "must be above 0")
        items = read_capture(spec.capture, spec.format, spec.log_time, spec.max_line_bytes)
        description = describe_capture(items, options.bucket, source=spec.capture)
    if spec.format == "combined":
        # A log's clock has whole seconds and the reader spreads each second's requests evenly: the
        # gaps inside a second are made up, so the capture says nothing of burstiness below a second.
        description = replace(description, cv_interarrival=None, cv_rescaled=None)
    if not description.requests:
        raise ConfigError(spec.capture, None, f"holds no readable request ({description.bad_lines:,} bad lines)")
    out_dir = options.out or results_root() / run_dir_name(f"profile-{Path(spec.capture).stem}")
    out_dir.mkdir(parents=True, exist_ok=True)
    data = description_dict(description)
    write_json(out_dir / "capture-profile.json", data, indent=1)
    write_atomic(out_dir / "forecast.toml", forecast_toml(description))
    for line in description_lines(description):
        console.print(line, highlight=False, markup=False)
    if options.fit_scenario is not None:
        base = _read_base(options.scenario) if options.scenario else None
        text = fit_scenario(description, f"fitted-{Path(spec.capture).stem}", base)
        options.fit_scenario.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(options.fit_scenario, text)
        console.print(f"wrote the fitted scenario {options.fit_scenario}", markup=False)
    console.print(
        f"wrote {out_dir / 'capture-profile.json'} and {out_dir / 'forecast.toml'} "
        f"(use it as `loadtest cost ... --forecast {out_dir / 'forecast.toml'}`)",
        markup=False,
    )
    return data


# -- the command line -----------------------------------------------------------------------------


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "replay", help="replay captured traffic at its own timing (JSONL, combined logs, HAR)"
    )
    parser.add_argument("capture", type=Path, help="capture file: JSONL, nginx/Apache combined log, or HAR")
    parser.add_argument(
        "--format", choices=("auto", "jsonl", "combined", "har"), default="auto", help="default: detect"
    )
    parser.add_argument("--scenario", type=Path, help="scenario TOML for the target, payload pools, timeouts and SLOs")
    add_target_options(parser)
    _add_timing_options(parser)
    _add_body_options(parser)
    add_load_generator_options(parser, out_default="results/<time>-replay-<capture>")
    parser.add_argument(
        "--profile-only", action="store_true", help="profile the capture (rate, burstiness, mix); send nothing"
    )
    parser.add_argument(
        "--bucket",
        type=positive_duration,
        default=1.0,
        metavar="DURATION",
        help="with --profile-only: count the rate per bucket of this length (default 1s)",
    )
    parser.add_argument(
        "--fit-scenario",
        type=Path,
        metavar="OUT.toml",
        help="with --profile-only: write a synthetic scenario whose shape and mix match the capture",
    )
    add_gate_options(parser)
    parser.set_defaults(func=handle)


def _add_timing_options(parser: argparse.ArgumentParser) -> None:
    """When each captured request is sent: speed, loops, a window, a rate cap, reordering, the log's clock."""
    parser.add_argument(
        "--speed", type=positive_number, default=1.0, help="divide the captured inter-arrival times by this"
    )
    parser.add_argument("--loop", type=count, default=1, help="replay the capture this many times, back to back")
    parser.add_argument(
        "--window", help="only this part of the capture, from its first request: START..END, e.g. 1m..5m"
    )
    parser.add_argument(
        "--max-rate", type=rate, help="cap the send rate (e.g. 50/s, after --speed); the excess is skipped"
    )
    parser.add_argument(
        "--reorder-window", type=duration, default=5.0, help="put out-of-order requests back in order within this"
    )
    parser.add_argument(
        "--log-time",
        choices=("end", "start"),
        default="end",
        help="combined logs: the logged time is when the "
        "request ended (nginx, default; the request time is subtracted) or started (Apache %%t)",
    )
    parser.add_argument(
        "--max-line-bytes",
        type=count,
        default=MAX_LINE_BYTES,
        help="the longest line of a JSONL capture, log or --pool file, in bytes (default 16000000); "
        "a longer one stops the replay with its line number",
    )


def _add_body_options(parser: argparse.ArgumentParser) -> None:
    """What each request carries: pooled bodies for captures without them, and which secrets are kept out."""
    parser.add_argument(
        "--pool",
        action="append",
        default=[],
        metavar="PATH=FILE",
        help="bodies for requests captured without "
        "one (logs): a JSONL file of bodies for this path (repeatable; default: the scenario's payloads)",
    )
    parser.add_argument(
        "--redact",
        action="append",
        default=[],
        metavar="NAME",
        help="another header, query parameter or body field that holds secrets (repeatable)",
    )
    parser.add_argument(
        "--send-secrets",
        action="store_true",
        help="send Authorization, Cookie, API-key-like headers and secret fields to the target (default: stripped)",
    )


def handle(args: argparse.Namespace, console: Console) -> int:
    if args.fit_scenario and not args.profile_only:
        raise ConfigError("--fit-scenario", None, "goes with --profile-only")
    options = ReplayOptions(
        **run_fields(args),
        spec=replay_spec(args),
        profile_only=args.profile_only,
        fit_scenario=args.fit_scenario,
        bucket=args.bucket,
    )
    outcome = replay(options, console)
    if outcome is None:  # --profile-only: nothing was sent, nothing gated
        return ExitCode.PASSED
    return outcome.exit_code(options.gates.strict)


def replay_spec(args: argparse.Namespace) -> ReplaySpec:
    """What to replay and how, from the command line; ``--window`` and ``--pool`` checked here."""
    from loadtest.replay.schedule import ReplaySpec

    start, end = parse_window(args.window) if args.window else (None, None)
    pools = []
    for entry in args.pool:
        path, sep, file = entry.partition("=")
        if not sep:
            raise ConfigError("--pool", None, f"expected PATH=FILE, got {entry!r}")
        pools.append((path, file))
    return ReplaySpec(
        capture=str(args.capture),
        format=args.format,
        speed=args.speed,
        loops=args.loop,
        window_start=start,
        window_end=end,
        max_rate=args.max_rate,
        reorder_window=args.reorder_window,
        send_secrets=args.send_secrets,
        redact=tuple(args.redact),
        pools=tuple(pools),
        log_time=args.log_time,
        max_line_bytes=args.max_line_bytes,
    )
