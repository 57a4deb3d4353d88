"""One run's measurement: the scenario, its target, Locust to the end, the measurements in the results directory.

The steps, in order: read the scenario with the options' overrides and check it (``run_scenario``,
so a bad payload costs one message, not a run); start the embedded reference server when no
target URL is given; check that the target speaks the scenario's protocol; run Locust
(``engine.locust_process``), which writes the measured summary and the per-second files. What
comes after (analysis, gates, the one write of the completed summary, the report) is the run
command's (``commands.run``), since it draws on the stages after the engine.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console

from loadtest.config.gate_options import GateOptions
from loadtest.config.profile import load_profile
from loadtest.config.scenario import (
    Scenario,
    check_generator_load,
    check_payload_fits,
    check_target_url,
    load_scenario,
)
from loadtest.engine.locust_process import (
    check_web_port,
    generator_cpus,
    print_distributed_commands,
    run_locust,
    server_pid_for,
)
from loadtest.engine.preflight import preflight, reachable
from loadtest.engine.runconfig import RunConfig, build_payloads, messy_bodies
from loadtest.engine.server_metrics import scrape_url
from loadtest.engine.target import embedded_server, grpc_url
from loadtest.errors import ConfigError, DiskFull, RunError
from loadtest.replay.redact import redact_url, redact_urls_in
from loadtest.replay.schedule import ReplaySpec
from loadtest.results.directory import results_root, run_dir_name
from loadtest.results.files import remove_temporaries, write_atomic, write_error, write_json
from loadtest.results.summary import Summary, read_summary, summary_path
from loadtest.stop_signals import held
from loadtest.traffic.protocols import GRPC
from reference_server.launch import RunningServer

PROGRESS = ".progress.json"  # Locust's progress, for the console; removed when the run ends


@dataclass(frozen=True, kw_only=True)
class RunOptions:
    scenario: Path
    target: str | None = None
    profile: str | None = None
    rate: float | None = None
    users: int | None = None
    duration: float | None = None
    warmup: float | None = None  # replace the scenario's warm-up (0: none)
    processes: int = 1
    out: Path | None = None
    allow_remote: bool = False
    print_locust_command: bool = False
    gates: GateOptions = field(default_factory=GateOptions)
    server_pid: int | None = None  # the server to watch; found from the target's loopback port if not given
    sample_hz: float = 4.0
    only_class: str | None = None  # send only this payload class (capacity per class)
    server: RunningServer | None = None  # an embedded server already running the profile: used, not stopped
    report: bool = True  # build report.html and report.md at the end
    replay: ReplaySpec | None = None  # a capture whose timing replaces the scenario's shape
    messy_share: float | None = None  # replace the scenario's [messy] share (0 turns messy traffic off)
    messy_baseline: bool = False  # then run the same schedule without it, for the clean traffic's figures
    web_port: int | None = None  # Locust's web UI on 127.0.0.1 at this port: the user starts each test
    metrics: str | bool | None = None  # replace the scenario's [target] metrics: a page's URL, or False for none

    def overrides(self) -> dict:
        """The scenario's values these options replace (``Scenario.with_overrides``)."""
        given = {
            "rate": self.rate,
            "users": self.users,
            "duration": self.duration,
            "warmup": self.warmup,
            "url": self.target,
            "profile": self.profile,
            "only_class": self.only_class,
            "replay": True if self.replay else None,
            "messy_share": self.messy_share,
            "metrics": self.metrics,
        }
        return {k: v for k, v in given.items() if v is not None}


@dataclass(frozen=True)
class Measured:
    out_dir: Path
    interrupted: bool  # stopped by Ctrl-C, SIGTERM or SIGHUP: the files hold what was measured until then
    ran: bool = True  # False when only the distributed commands were printed


@dataclass(frozen=True)
class Target:
    """Where the load goes, the server process to watch, and what the summary says of it."""

    url: str
    server_pid: int | None = None
    generator_cpus: list[int] | None = None
    meta: dict = field(default_factory=dict)
    metrics: str | None = None  # the embedded server's /metrics where the URL cannot say it (a gRPC target)


def run_scenario(options: RunOptions) -> Scenario:
    """The scenario with the options' overrides, checked: a bad payload or messy kind is one message, before a run."""
    scenario = load_scenario(options.scenario).with_overrides(**options.overrides())
    check_target_url(scenario)
    check_payload_fits(scenario)
    if options.replay is not None and scenario.target.protocol == GRPC:
        raise ConfigError(str(options.scenario), "target.protocol", f"a capture replays HTTP requests, not {GRPC}")
    if options.replay is None:  # a replay's rate is its capture's, checked after the scan
        option = "--rate" if options.rate is not None else "--users" if options.users is not None else None
        check_generator_load(scenario, options.processes, option)
    if scenario.messy.enabled:
        messy_bodies(scenario, variants=1)
    return scenario


def measure(
    options: RunOptions,
    scenario: Scenario,
    console: Console,
    while_starting: Callable[[], None] | None = None,
    on_test: Callable[[Path], None] = lambda _: None,
) -> Measured:
    """Start the target if needed, check it, run Locust to the end; Locust writes the measurements into ``out``.

    ``while_starting`` runs while Locust starts (``locust_process.run_locust``). The results directory is
    made once the target has passed its preflight: a run that never started leaves no empty directory.
    With ``options.web_port``, each test started from the web UI writes a directory of its own in ``out``,
    which ``on_test`` gets once written.
    """
    out_dir = options.out or results_root() / run_dir_name(scenario.name)
    if options.web_port is not None:
        check_web_port(options.web_port)
    try:
        with _target(options, scenario, console) as target:
            return _measure_on(target, options, scenario, out_dir, console, while_starting, on_test)
    finally:  # however the run ended, its processes have (``run_locust``): what they left half-done goes
        with held():
            (out_dir / PROGRESS).unlink(missing_ok=True)
            remove_temporaries(out_dir)


def _measure_on(
    target: Target,
    options: RunOptions,
    scenario: Scenario,
    out_dir: Path,
    console: Console,
    while_starting: Callable[[], None] | None,
    on_test: Callable[[Path], None],
) -> Measured:
    overrides = options.overrides()
    if target.metrics is not None and scenario.target.metrics is True:  # the default, which a gRPC URL cannot give
        overrides["metrics"] = target.metrics
    config = RunConfig(
        scenario_toml=Path(scenario.source).read_text(),
        scenario_source=str(scenario.source),
        target_url=target.url,
        out_dir=out_dir.resolve(),
        progress_file=(out_dir / PROGRESS).resolve(),
        overrides=overrides,
        meta=target.meta,
        replay=options.replay,
    )
    _check_target(options, config)
    _make_directory(out_dir)
    if options.print_locust_command:
        print_distributed_commands(config, max(options.processes, 2))
        return Measured(out_dir, interrupted=False, ran=False)
    write_atomic(out_dir / "scenario.toml", redact_urls_in(config.scenario_toml))  # no password in a file
    write_json(out_dir / "run.json", config.as_dict())
    console.print(f"running {scenario.name} against {redact_url(target.url)}: {_what(options, scenario)}", markup=False)
    if target.server_pid is None:
        console.print("[yellow]no server process found on the target's port: server resources are not sampled[/]")
    interrupted = run_locust(
        config,
        options.processes,
        target.generator_cpus,
        console,
        target.server_pid,
        options.sample_hz,
        while_starting,
        options.web_port,
        on_test,
    )
    if interrupted and not summary_path(out_dir).exists():
        console.print("interrupted before Locust had measured anything: nothing to report")
        raise KeyboardInterrupt  # the command stops as at any other Ctrl-C: exit 130
    return Measured(out_dir, interrupted)


def _make_directory(out_dir: Path) -> None:
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise write_error(exc, out_dir) from None


def measured_summary(out_dir: Path) -> Summary:
    """The summary Locust wrote; if it wrote none, its one-line reason (``no space left``...), or the end of its log."""
    if not summary_path(out_dir).exists():
        log_path = out_dir / "locust.log"
        log = log_path.read_text(errors="replace")[-3000:] if log_path.exists() else ""
        if (reason := _harness_error(log)) is not None:
            raise RunError(f"Locust wrote no results: {reason} (see {log_path})")
        if _no_room(out_dir):  # a full disk takes the log with it
            raise DiskFull(f"Locust wrote no results: cannot write into {out_dir}: no space left on device")
        raise RunError(f"Locust wrote no results (see {log_path}):\n{log}")
    return read_summary(out_dir)


def _harness_error(log: str) -> str | None:
    """The message of the last of our own errors (``loadtest.errors``) a traceback in Locust's log ends with."""
    found = re.findall(r"^loadtest\.errors\.\w+: (.+)$", log, flags=re.M)
    return found[-1] if found else None


def _no_room(directory: Path) -> bool:
    try:
        return os.statvfs(directory).f_bavail == 0
    except OSError:
        return False


@contextmanager
def _target(options: RunOptions, scenario: Scenario, console: Console) -> Iterator[Target]:
    """The scenario's URL, or the embedded reference server for its profile (started here unless given)."""
    url = scenario.target.url
    if url is not None:
        yield Target(url, options.server_pid or server_pid_for(url))
        return
    profile = load_profile(scenario.target.profile)
    pin = generator_cpus(profile.server.cpus)
    meta = {
        "profile": {
            "name": profile.name,
            "source": profile.source,
            "model": profile.model,
            "variant": profile.variant,
            "server_cpus": list(profile.server.cpus),
            "generator_cpus": pin,
        },
        "target": {"embedded": True},
    }
    grpc = scenario.target.protocol == GRPC  # served beside REST, whose /metrics the sampler reads
    if options.server is not None:
        yield _embedded(options.server, grpc, pin, meta)
        return
    with embedded_server(profile, console, grpc=grpc) as server:
        yield _embedded(server, grpc, pin, meta)


def _embedded(server: RunningServer, grpc: bool, pin: list[int] | None, meta: dict) -> Target:
    """The embedded server as the target: its REST URL, or its gRPC one with REST's ``/metrics`` beside it."""
    if not grpc:
        return Target(server.url, server.pid, pin, meta)
    return Target(grpc_url(server), server.pid, pin, meta, metrics=server.url + "/metrics")


def _check_target(options: RunOptions, config: RunConfig) -> None:
    """A replay sends what was captured, so only reachability is checked; a run also checks the protocol.

    A metrics page the scenario names is held to the target's rule: loopback, unless ``--allow-remote``.
    """
    scrape_url(config.target_url, config.scenario.target.metrics, options.allow_remote)
    if options.replay:
        reachable(config.target_url, options.allow_remote)
        return
    protocol, payloads = build_payloads(config)
    scenario = config.scenario
    preflight(config.target_url, protocol, scenario.target.model, payloads, options.allow_remote)


def _what(options: RunOptions, scenario: Scenario) -> str:
    load = scenario.load
    what = f"{load.shape.kind} {'rate' if load.model == 'open' else 'users'}" + (
        f", {load.warmup:g}s warm-up" if load.warmup else ""
    )
    if options.replay:
        what = f"the capture's timing at x{options.replay.speed:g}"
    return f"{load.model} load, {what}, {load.duration:g}s measured, {options.processes} load-generator process(es)"
