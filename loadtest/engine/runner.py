"""``loadtest run``: start the target if needed, check it, run Locust, follow it, print the result.

This is the I/O edge of a run. Locust runs as a child process, headless, on our locustfile, with
``--processes N`` for several load-generator processes (Locust's own master and workers). The
child writes the results directory; this process shows progress and prints the end table.
"""

from __future__ import annotations

import json
import math
import os
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import psutil
from rich.console import Console

from loadtest.config.profile import load_profile
from loadtest.config.scenario import check_payload_fits, load_scenario
from loadtest.engine.preflight import preflight, reachable
from loadtest.engine.progress import follow
from loadtest.engine.runconfig import RunConfig, build_payloads, messy_bodies
from loadtest.errors import RunError
from loadtest.gates.verdict import GateOptions, apply, prepare
from loadtest.report.terminal import accounting_line, summary_table
from loadtest.results.directory import read_replay, read_table, run_dir_name
from loadtest.results.files import write_atomic, write_json
from reference_server.launch import RunningServer, start_server

# The path only: importing the locustfile would import Locust, which monkey-patches this process.
LOCUSTFILE = Path(__file__).with_name("locustfile.py")


@dataclass(frozen=True)
class RunOptions:
    scenario: Path
    target: str | None = None
    profile: str | None = None
    rate: float | None = None
    users: int | None = None
    duration: float | None = None
    processes: int = 1
    out: Path | None = None
    allow_remote: bool = False
    print_locust_command: bool = False
    gates: GateOptions = GateOptions()
    server_pid: int | None = None  # the server to watch; found from the target's loopback port if not given
    sample_hz: float = 4.0
    only_class: str | None = None  # send only this payload class (capacity per class)
    server: RunningServer | None = None  # an embedded server already running the profile: used, not stopped
    report: bool = True  # build report.html and report.md at the end
    replay: dict | None = None  # a ReplaySpec (as a dict) whose capture replaces the scenario's shape
    messy_share: float | None = None  # replace the scenario's [messy] share (0 turns messy traffic off)
    messy_baseline: bool = False  # then run the same schedule without it, for the clean traffic's figures


@dataclass(frozen=True)
class RunOutcome:
    out_dir: Path
    summary: dict
    interrupted: bool
    gates_failed: bool = False


def results_root() -> Path:
    return Path(os.environ.get("LOADTEST_RESULTS", "results"))


def generator_cpus(server_cpus: tuple[int, ...]) -> list[int] | None:
    """The cores left to the load generator once the server has its own, if any are left."""
    if not server_cpus:
        return None
    rest = [c for c in range(psutil.cpu_count()) if c not in server_cpus]
    return rest or None


def locust_command(config: RunConfig, processes: int) -> list[str]:
    timeout = config.scenario.load.timeout
    command = [
        sys.executable,
        "-m",
        "locust",
        "-f",
        str(LOCUSTFILE),
        "--headless",
        "--only-summary",
        "--host",
        config.target_url,
        "--loadtest-run",
        config.to_json(),
        "--loglevel",
        "WARNING",
        "--stop-timeout",
        str(math.ceil(timeout)),
        "--exit-code-on-error",
        "0",
    ]
    if processes > 1:
        command += ["--processes", str(processes)]
    return command


def run(options: RunOptions, console: Console | None = None) -> RunOutcome:
    console = console or Console(stderr=True)
    overrides = {
        k: v
        for k, v in {
            "rate": options.rate,
            "users": options.users,
            "duration": options.duration,
            "url": options.target,
            "profile": options.profile,
            "only_class": options.only_class,
            "replay": True if options.replay else None,
            "messy_share": options.messy_share,
        }.items()
        if v is not None
    }
    scenario = load_scenario(options.scenario).with_overrides(**overrides)
    check_payload_fits(scenario)
    if scenario.messy.enabled:
        messy_bodies(scenario, variants=1)  # a bad kind name or custom file: one message before anything starts
    gates = prepare(options.gates, scenario.gates, str(scenario.source))
    out_dir = options.out or results_root() / run_dir_name(scenario.name)
    out_dir.mkdir(parents=True, exist_ok=True)
    server: RunningServer | None = options.server
    owned = False
    meta: dict = {}
    pin: list[int] | None = None
    try:
        url = scenario.target.url
        if url is None:
            profile = load_profile(scenario.target.profile)
            if server is None:
                console.print(
                    f"starting the reference server: profile {profile.name} "
                    f"({profile.model} {profile.variant}, {profile.server.threads} thread(s))"
                )
                server, owned = start_server(profile.server_args()), True
            url = server.url
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
        config = RunConfig(
            scenario_toml=Path(scenario.source).read_text(),
            scenario_source=str(scenario.source),
            target_url=url,
            out_dir=out_dir.resolve(),
            progress_file=(out_dir / ".progress.json").resolve(),
            overrides=overrides,
            meta=meta,
            replay=options.replay or {},
        )
        protocol, payloads = build_payloads(config)
        if options.replay:
            reachable(url, options.allow_remote)
        else:
            preflight(url, protocol, scenario.target.model, payloads, options.allow_remote)
        if options.print_locust_command:
            print_distributed_commands(config, max(options.processes, 2))
            return RunOutcome(out_dir, {}, False)
        write_atomic(out_dir / "scenario.toml", config.scenario_toml)
        write_atomic(out_dir / "run.json", json.dumps(json.loads(config.to_json()), indent=2) + "\n")
        load = scenario.load
        what = f"{load.shape.kind} {'rate' if load.model == 'open' else 'users'}" + (
            f", {load.warmup:g}s warm-up" if load.warmup else ""
        )
        if options.replay:
            what = f"the capture's timing at x{options.replay['speed']:g}"
        console.print(
            f"running {scenario.name} against {url}: {load.model} load, {what}, {load.duration:g}s "
            f"measured, {options.processes} load-generator process(es)"
        )
        server_pid = server.pid if server is not None else options.server_pid or server_pid_for(url)
        if server_pid is None:
            console.print("[yellow]no server process found on the target's port: server resources are not sampled[/]")
        interrupted = _run_locust(config, options.processes, pin, console, server_pid, options.sample_hz)
    finally:
        if owned and server is not None:
            server.stop()
    summary_path = out_dir / "summary.json"
    if not summary_path.exists():
        log = (out_dir / "locust.log").read_text(errors="replace")[-3000:] if (out_dir / "locust.log").exists() else ""
        raise RunError(f"Locust wrote no results (see {out_dir / 'locust.log'}):\n{log}")
    (out_dir / ".progress.json").unlink(missing_ok=True)
    summary = json.loads(summary_path.read_text())
    summary = add_analysis(out_dir, summary)
    console.print(summary_table(summary))
    console.print(accounting_line(summary))
    for line in summary.get("saturation", {}).get("lines", []):
        console.print(f"[red bold]{line}[/]" if line.startswith("RESULTS NOT") else line, highlight=False)
    if "replay" in summary:
        from loadtest.analysis.fidelity import fidelity_lines

        for line in fidelity_lines(summary["replay"]):
            console.print(line, highlight=False)
    if "messy" in summary:
        summary = _messy_outcome(options, out_dir, summary, console)
    if summary["run"].get("interrupted"):
        console.print("[yellow]the run was interrupted: these figures cover only what was measured[/]")
    interrupted = interrupted or summary["run"].get("interrupted", False)
    failed = False
    if not gates.empty and not interrupted:
        failed = not all(result.passed for result in apply(gates, out_dir, summary, console))
    if options.report:
        try:
            from loadtest.report.run import write_reports

            html_path, _ = write_reports(out_dir)
            console.print(f"report: {html_path}")
        except Exception as exc:  # the measurements are saved; a report can be built again with `loadtest report`
            console.print(
                f"[yellow]the report could not be built ({type(exc).__name__}: {exc}); "
                f"run `loadtest report {out_dir}`[/]"
            )
    console.print(f"results: {out_dir}")
    return RunOutcome(out_dir, summary, interrupted, failed)


def _messy_outcome(options: RunOptions, out_dir: Path, summary: dict, console: Console) -> dict:
    """Print the messy verdicts; with ``messy_baseline``, first run the same schedule without the messy share."""
    from loadtest.report.messy import messy_lines, rich_tables

    if options.messy_baseline and not summary["run"].get("interrupted"):
        console.print("the same schedule again without the messy share, for the clean traffic's figures:")
        paired = replace(
            options, out=out_dir / "without-messy", messy_share=0.0, messy_baseline=False, gates=GateOptions()
        )
        baseline = run(paired, console).summary
        summary["messy"]["without"] = {
            "results": str(out_dir / "without-messy"),
            "latency_ms": baseline["latency_ms"]["response"]["all"],
        }
        write_json(out_dir / "summary.json", summary)
    for table in rich_tables(summary):
        console.print(table)
    for line in messy_lines(summary):
        console.print(line, highlight=False)
    return summary


def distributed_commands(config: RunConfig, workers: int) -> tuple[list[str], list[str]]:
    """The master's and each worker's command line, for Locust's own distributed mode across hosts."""
    base = locust_command(config, 1)
    master = [*base, "--master", "--expect-workers", str(workers)]
    worker = [
        sys.executable,
        "-m",
        "locust",
        "-f",
        str(LOCUSTFILE),
        "--worker",
        "--master-host",
        "MASTER_HOST",
        "--loglevel",
        "WARNING",
    ]
    return master, worker


def print_distributed_commands(config: RunConfig, workers: int) -> None:
    master, worker = distributed_commands(config, workers)
    print("# on the master host (writes the results into " + str(config.out_dir) + "):")
    print(shlex.join(master))
    print(f"# on each of the {workers} worker hosts (the run configuration reaches them from the master):")
    print(shlex.join(worker))


def server_pid_for(url: str) -> int | None:
    """The process listening on a loopback target's port, if this user may see it."""
    from urllib.parse import urlsplit

    port = urlsplit(url).port
    try:
        for conn in psutil.net_connections(kind="tcp"):
            if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port and conn.pid:
                return conn.pid
    except (psutil.Error, OSError):
        return None
    return None


def add_analysis(out_dir: Path, summary: dict) -> dict:
    """Saturation, generator trust and sample sufficiency, from the run's own files; saved in the summary."""
    from loadtest.analysis.saturation import analyse, sufficiency

    resources_path = out_dir / "resources.csv"
    timeline, resources = read_table(out_dir / "timeline.csv"), read_table(resources_path)
    meta_path = out_dir / "resources.json"
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    run_start = summary.get("run", {}).get("started_epoch")
    if resources is not None and meta.get("start_epoch") and run_start and not meta.get("aligned"):
        # The sampler starts before Locust's test does: count its seconds from the run's start, as the timeline does.
        resources["second"] = (resources["second"] + meta["start_epoch"] - run_start).round(3)
        meta["aligned"] = True
        write_atomic(resources_path, resources.to_csv(index=False))
        write_json(meta_path, meta)
    if timeline is not None and len(timeline):
        warmup = summary["load"].get("warmup_s", 0.0)
        analysis = analyse(timeline, resources, warmup, generator_cores=meta.get("generator_cores"))
        summary["saturation"] = analysis.as_dict()
    summary["resources"] = meta
    response = summary.get("latency_ms", {}).get("response", {})
    # Messy kinds are a few requests each: their percentiles are shown, not claimed (the messy total is).
    counts = {cls: stats.get("count", 0) for cls, stats in response.items() if not cls.startswith("messy:")}
    summary["sample_sufficiency"] = sufficiency(counts)
    replayed = read_replay(out_dir)
    if replayed is not None:
        summary["replay"] = replay_summary(replayed, timeline, summary)
    write_json(out_dir / "summary.json", summary)
    return summary


def replay_summary(replayed: dict, timeline, summary: dict) -> dict:
    """What the scan found in the capture, without its per-second list, and the replay's fidelity."""
    from loadtest.analysis.fidelity import fidelity

    sent = {}
    if timeline is not None:
        sent = dict(zip(timeline["second"].astype(int), timeline["sent"].astype(int), strict=True))
    lateness = summary.get("latency_ms", {}).get("lateness", {}).get("all")
    kept = {k: v for k, v in replayed.items() if k != "intended_per_second"}
    return {**kept, "fidelity": fidelity(replayed["intended_per_second"], sent, lateness)}


def _start_sampler(config: RunConfig, server_pid: int | None, generator_pid: int, hz: float, pin: list[int] | None):
    command = [sys.executable, "-m", "loadtest.engine.sampler", "--out", str(config.out_dir / "resources.csv")]
    command += ["--generator-pid", str(generator_pid), "--hz", str(hz), "--start-epoch", str(time.time())]
    if server_pid:
        command += ["--server-pid", str(server_pid)]
    if pin:
        command += ["--cpus", ",".join(map(str, pin))]  # beside the generator, never on the server's cores
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def _run_locust(
    config: RunConfig,
    processes: int,
    pin: list[int] | None,
    console: Console,
    server_pid: int | None = None,
    sample_hz: float = 4.0,
) -> bool:
    """Run Locust to the end; on Ctrl-C, stop it gracefully so it still writes what it measured.

    Locust is stopped with SIGINT, not SIGTERM: headless with a shape class, Locust blocks on the
    shape before it installs its SIGTERM handler, so SIGTERM kills it before ``quitting`` fires,
    while SIGINT ends the shape and runs the normal shutdown (and reaches ``--processes`` workers).
    """

    def pin_generator() -> None:
        # Stopping Locust gracefully is a SIGINT from us: make sure it is not ignored, as it is in a
        # child of a background job of a non-interactive shell (CI), which Locust would inherit.
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        if pin:
            os.sched_setaffinity(0, pin)

    with (config.out_dir / "locust.log").open("wb") as log:
        process = subprocess.Popen(
            locust_command(config, processes),
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=pin_generator,
            start_new_session=True,
        )
    sampler = _start_sampler(config, server_pid, process.pid, sample_hz, pin) if sample_hz > 0 else None
    try:
        return _wait_for_locust(config, process, console)
    finally:
        if sampler is not None:
            sampler.terminate()
            try:
                sampler.wait(timeout=5)
            except subprocess.TimeoutExpired:
                sampler.kill()


def _wait_for_locust(config: RunConfig, process: subprocess.Popen, console: Console) -> bool:
    interrupted = False
    try:
        follow(process, config.progress_file, config.scenario.load.model, console)
    except KeyboardInterrupt:
        interrupted = True
        console.print("interrupted: stopping Locust and writing what was measured...")
        process.send_signal(signal.SIGINT)
    deadline = time.monotonic() + config.scenario.load.timeout + 30
    while process.poll() is None:
        if time.monotonic() > deadline:
            os.killpg(process.pid, signal.SIGKILL)
            raise RunError("Locust did not stop; killed it")
        try:
            time.sleep(0.1)
        except KeyboardInterrupt:
            interrupted = True
            process.send_signal(signal.SIGINT)
    return interrupted
