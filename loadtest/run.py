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
from dataclasses import dataclass
from pathlib import Path

import psutil
from rich.console import Console

from reference_server.launch import RunningServer, start_server

from .errors import RunError
from .preflight import preflight
from .profile import load_profile
from .progress import follow
from .results import run_dir_name, write_atomic
from .runconfig import RunConfig, build_payloads
from .scenario import check_payload_fits, load_scenario
from .summary_table import accounting_line, summary_table

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


@dataclass(frozen=True)
class RunOutcome:
    out_dir: Path
    summary: dict
    interrupted: bool


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
        }.items()
        if v is not None
    }
    scenario = load_scenario(options.scenario).with_overrides(**overrides)
    check_payload_fits(scenario)
    out_dir = options.out or results_root() / run_dir_name(scenario.name)
    out_dir.mkdir(parents=True, exist_ok=True)
    server: RunningServer | None = None
    meta: dict = {}
    pin: list[int] | None = None
    try:
        url = scenario.target.url
        if url is None:
            profile = load_profile(scenario.target.profile)
            console.print(
                f"starting the reference server: profile {profile.name} "
                f"({profile.model} {profile.variant}, {profile.server.threads} thread(s))"
            )
            server = start_server(profile.server_args())
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
        )
        protocol, payloads = build_payloads(config)
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
        console.print(
            f"running {scenario.name} against {url}: {load.model} load, {what}, {load.duration:g}s "
            f"measured, {options.processes} load-generator process(es)"
        )
        interrupted = _run_locust(config, options.processes, pin, console)
    finally:
        if server is not None:
            server.stop()
    summary_path = out_dir / "summary.json"
    if not summary_path.exists():
        log = (out_dir / "locust.log").read_text(errors="replace")[-3000:] if (out_dir / "locust.log").exists() else ""
        raise RunError(f"Locust wrote no results (see {out_dir / 'locust.log'}):\n{log}")
    (out_dir / ".progress.json").unlink(missing_ok=True)
    summary = json.loads(summary_path.read_text())
    console.print(summary_table(summary))
    console.print(accounting_line(summary))
    if summary["run"].get("interrupted"):
        console.print("[yellow]the run was interrupted: these figures cover only what was measured[/]")
    console.print(f"results: {out_dir}")
    return RunOutcome(out_dir, summary, interrupted or summary["run"].get("interrupted", False))


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


def _run_locust(config: RunConfig, processes: int, pin: list[int] | None, console: Console) -> bool:
    """Run Locust to the end; on Ctrl-C, stop it gracefully so it still writes what it measured.

    Locust is stopped with SIGINT, not SIGTERM: headless with a shape class, Locust blocks on the
    shape before it installs its SIGTERM handler, so SIGTERM kills it before ``quitting`` fires,
    while SIGINT ends the shape and runs the normal shutdown (and reaches ``--processes`` workers).
    """

    def pin_generator() -> None:
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
