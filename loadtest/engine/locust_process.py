"""Locust as a child process: its command line, the resource sampler beside it, and a clean stop.

Locust runs headless on our locustfile, with ``--processes N`` for several load-generator
processes (Locust's own master and workers), pinned to the cores the server does not use. The
child writes the measurements into the results directory; this side follows its progress file
and stops it gracefully on Ctrl-C, so it still writes what it measured.
"""

from __future__ import annotations

import math
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psutil
from rich.console import Console

from loadtest.engine.progress import follow
from loadtest.engine.runconfig import RunConfig
from loadtest.errors import RunError

# The path only: importing the locustfile would import Locust, which monkey-patches this process.
LOCUSTFILE = Path(__file__).with_name("locustfile.py")


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


def _start_sampler(config: RunConfig, server_pid: int | None, generator_pid: int, hz: float, pin: list[int] | None):
    command = [sys.executable, "-m", "loadtest.engine.sampler", "--out", str(config.out_dir / "resources.csv")]
    command += ["--generator-pid", str(generator_pid), "--hz", str(hz), "--start-epoch", str(time.time())]
    if server_pid:
        command += ["--server-pid", str(server_pid)]
    from loadtest.engine.preflight import is_loopback
    from loadtest.engine.server_metrics import metrics_url

    if is_loopback(config.target_url):  # the sampler reads it only if it is there (the reference server's)
        command += ["--metrics-url", metrics_url(config.target_url)]
    if pin:
        command += ["--cpus", ",".join(map(str, pin))]  # beside the generator, never on the server's cores
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def run_locust(
    config: RunConfig,
    processes: int,
    pin: list[int] | None,
    console: Console,
    server_pid: int | None = None,
    sample_hz: float = 4.0,
    while_starting: Callable[[], None] | None = None,
) -> bool:
    """Run Locust to the end; on Ctrl-C, stop it gracefully so it still writes what it measured.

    ``while_starting`` runs once Locust and the sampler are launched, in the half second Locust
    takes to start its test: the caller loads there what it needs after the run (pandas, matplotlib),
    so the results come that much sooner.

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

    if pin and processes > len(pin):
        console.print(
            f"[yellow]{processes} load-generator processes on {len(pin)} core(s): they take turns on it, "
            "and a send due while another process runs waits for its time slice (send lateness); "
            "the trust verdict says whether it mattered[/]"
        )
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
        if while_starting is not None:
            while_starting()
        return _wait(config, process, console)
    finally:
        if sampler is not None:
            sampler.terminate()
            try:
                sampler.wait(timeout=5)
            except subprocess.TimeoutExpired:
                sampler.kill()


def _wait(config: RunConfig, process: subprocess.Popen, console: Console) -> bool:
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
