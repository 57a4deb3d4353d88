"""Locust as a child process: its command line, the resource sampler beside it, and a clean stop.

Locust runs headless on our locustfile, with ``--processes N`` for several load-generator
processes (Locust's own master and workers), pinned to the cores the server does not use. The
child writes the measurements into the results directory; this side follows its progress file
and stops it gracefully on Ctrl-C (or SIGTERM, SIGHUP: ``loadtest.stop_signals``), so it still
writes what it measured.

Locust and the sampler run in sessions of their own (a Ctrl-C at the terminal reaches this process
only, which stops them in order), so nothing else ends them: however ``run_locust`` is left, its
``finally`` kills whatever is left of Locust's process group (master and workers) and the sampler;
and if this process dies without a ``finally`` (SIGKILL), the kernel sends Locust SIGINT, so it
still writes what it measured, and the sampler SIGTERM (``reference_server.launch.exit_with_parent``).

With ``--web`` (``web_port``), Locust runs its own web UI instead, on 127.0.0.1 only: the user starts
and stops tests from the browser, each test writes ``OUT/<n>-<time>`` as it stops
(``engine.web_ui``), and this side hands each finished one to the caller (``on_test``) until the
user quits with Ctrl-C (or SIGTERM, SIGHUP).
"""

from __future__ import annotations

import contextlib
import math
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psutil
from rich.console import Console

from loadtest.engine.progress import follow
from loadtest.engine.runconfig import TARGET_URL_ENV, RunConfig
from loadtest.engine.web_tests import finished_web_tests
from loadtest.errors import ConfigError, RunError
from loadtest.replay.redact import without_userinfo
from loadtest.stop_signals import held
from reference_server.launch import exit_with_parent

# The path only: importing the locustfile would import Locust, which monkey-patches this process.
LOCUSTFILE = Path(__file__).with_name("locustfile.py")
WEB_HOST = "127.0.0.1"  # the web UI starts load at the click of a button: never on another interface


def generator_cpus(server_cpus: tuple[int, ...]) -> list[int] | None:
    """The cores left to the load generator once the server has its own, if any are left."""
    if not server_cpus:
        return None
    rest = [c for c in range(psutil.cpu_count()) if c not in server_cpus]
    return rest or None


def locust_command(config: RunConfig, processes: int, web_port: int | None = None) -> list[str]:
    """Headless, or with ``web_port`` Locust's web UI on 127.0.0.1, where the user starts each test."""
    timeout = config.scenario.load.timeout
    ui = ["--headless", "--only-summary"] if web_port is None else ["--web-host", WEB_HOST, "--web-port", str(web_port)]
    command = [
        sys.executable,
        "-m",
        "locust",
        "-f",
        str(LOCUSTFILE),
        *ui,
        "--host",
        without_userinfo(config.target_url),  # the users take the real URL from TARGET_URL_ENV
        "--loadtest-run",
        config.to_json(),  # credentials redacted
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
    if without_userinfo(config.target_url) != config.target_url:
        print(f"# the target's credentials are not on these lines: set {TARGET_URL_ENV} to its URL on every host")
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
    from loadtest.engine.server_metrics import scrape_url

    target = config.scenario.target
    url = scrape_url(config.target_url, target.metrics, allow_remote=True)  # checked before the run (``_check_target``)
    if url is not None:  # the sampler reads it only if it holds a known server's series
        command += ["--metrics-url", url, "--model", target.model]
    if pin:
        command += ["--cpus", ",".join(map(str, pin))]  # beside the generator, never on the server's cores
    return subprocess.Popen(
        command,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        preexec_fn=exit_with_parent(signal.SIGTERM),
    )


def run_locust(
    config: RunConfig,
    processes: int,
    pin: list[int] | None,
    console: Console,
    server_pid: int | None = None,
    sample_hz: float = 4.0,
    while_starting: Callable[[], None] | None = None,
    web_port: int | None = None,
    on_test: Callable[[Path], None] = lambda _: None,
) -> bool:
    """Run Locust to the end; on Ctrl-C (SIGTERM, SIGHUP), stop it gracefully so it still writes what it
    measured, and say it was interrupted; on a second one, kill it. No process of it outlives the call.

    ``while_starting`` runs once Locust and the sampler are launched, in the half second Locust
    takes to start its test: the caller loads there what it needs after the run (pandas, matplotlib),
    so the results come that much sooner.

    Locust is stopped with SIGINT, not SIGTERM: headless with a shape class, Locust blocks on the
    shape before it installs its SIGTERM handler, so SIGTERM kills it before ``quitting`` fires,
    while SIGINT ends the shape and runs the normal shutdown (and reaches ``--processes`` workers).

    With ``web_port``, Locust serves its web UI until Ctrl-C (SIGTERM, SIGHUP), which is how the user
    quits, so it is not an interruption (False); ``on_test`` gets each test's finished directory.
    """
    if pin and processes > len(pin):
        console.print(
            f"[yellow]{processes} load-generator processes on {len(pin)} core(s): they take turns on it, "
            "and a send due while another process runs waits for its time slice (send lateness); "
            "the trust verdict says whether it mattered[/]"
        )
    process = _start_locust(config, processes, pin, web_port)
    sampler = None
    try:
        sampler = _start_sampler(config, server_pid, process.pid, sample_hz, pin) if sample_hz > 0 else None
        if web_port is not None:  # no test runs before the user starts one: the UI first
            _serve(config, process, console, web_port, on_test, while_starting)
            return False
        stopping = False
        if while_starting is not None:
            try:
                while_starting()
            except KeyboardInterrupt:  # stopped in the first half second: Locust is still asked to stop gracefully
                stopping = True
        return _wait(config, process, console, stopping)
    finally:
        with held():  # a second Ctrl-C or SIGTERM here waits until no child is left
            _end(process, sampler)


def _start_locust(config: RunConfig, processes: int, pin: list[int] | None, web_port: int | None) -> subprocess.Popen:
    dies_with_parent = exit_with_parent(signal.SIGINT)  # SIGINT: Locust still writes what it measured

    def prepare() -> None:
        # Stopping Locust gracefully is a SIGINT from us: make sure it is not ignored, as it is in a
        # child of a background job of a non-interactive shell (CI), which Locust would inherit.
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        if dies_with_parent is not None:
            dies_with_parent()
        if pin:
            os.sched_setaffinity(0, pin)

    with (config.out_dir / "locust.log").open("wb") as log:
        return subprocess.Popen(
            locust_command(config, processes, web_port),
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=prepare,
            start_new_session=True,
            env={**os.environ, TARGET_URL_ENV: config.target_url},  # not argv: `ps` shows argv to every user
        )


def _end(process: subprocess.Popen, sampler: subprocess.Popen | None) -> None:
    """Leave no process of the run: what is left of Locust's group, then the sampler (its last row first).

    After a normal end the group is empty, or holds a worker the master left behind; after a
    second interrupt it is the whole of Locust, killed without writing.
    """
    with contextlib.suppress(ProcessLookupError, PermissionError):  # nothing left in it
        os.killpg(process.pid, signal.SIGKILL)  # its own session: the group is Locust's master and workers only
    process.wait()
    if sampler is not None:
        sampler.terminate()  # it writes its last row and resources.json, then exits
        try:
            sampler.wait(timeout=5)
        except subprocess.TimeoutExpired:
            sampler.kill()
            sampler.wait()


def _wait(config: RunConfig, process: subprocess.Popen, console: Console, stopping: bool = False) -> bool:
    """Follow Locust to its end; whether it was interrupted. ``stopping``: asked to stop already.

    The first interrupt asks Locust to stop (SIGINT) and waits while it writes what it measured;
    a second one is raised, and ``run_locust``'s ``finally`` kills Locust without waiting.
    """
    if not stopping:
        try:
            follow(process, config.progress_file, config.scenario.load.model, console)
            return False
        except KeyboardInterrupt:
            pass
    console.print("interrupted: stopping Locust and writing what was measured...")
    _stop_gracefully(config, process, console)
    return True


def _stop_gracefully(config: RunConfig, process: subprocess.Popen, console: Console) -> None:
    """SIGINT, and wait while Locust writes what it measured; a second interrupt is raised (the caller kills it)."""
    process.send_signal(signal.SIGINT)
    deadline = time.monotonic() + config.scenario.load.timeout + 30
    try:
        while process.poll() is None:
            if time.monotonic() > deadline:
                raise RunError("Locust did not stop; killed it")  # the finally kills its group
            time.sleep(0.1)
    except KeyboardInterrupt:
        console.print("interrupted again: Locust killed; what it had not written is lost")
        raise


# -- the web UI ---------------------------------------------------------------------------------------


def check_web_port(port: int) -> None:
    """One line before anything starts, rather than a web UI that never comes up and a traceback in Locust's log."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as Locust's server binds it
        try:
            probe.bind((WEB_HOST, port))
        except OSError as exc:
            raise ConfigError("--web-port", None, f"cannot listen on {WEB_HOST}:{port}: {exc.strerror}") from None


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.2)
        return probe.connect_ex((WEB_HOST, port)) == 0


def _serve(
    config: RunConfig,
    process: subprocess.Popen,
    console: Console,
    port: int,
    on_test: Callable[[Path], None],
    while_starting: Callable[[], None] | None,
) -> None:
    """Hand each test's directory to ``on_test`` as the test finishes, until the user quits (Ctrl-C, SIGTERM).

    ``while_starting`` runs once the web UI answers, while the user starts the first test. On quitting,
    Locust is asked to stop (SIGINT): a test still running writes its directory as it stops, and that
    one is handed over too. A second interrupt is raised, as in ``_wait``.
    """
    seen: set[Path] = set()

    def hand_over() -> None:
        for test in finished_web_tests(config.out_dir):
            if test not in seen:
                seen.add(test)
                with held():  # a Ctrl-C meanwhile quits once this test's analysis and report are done
                    on_test(test)

    try:
        while not _listening(port):
            if process.poll() is not None:
                raise RunError(f"Locust's web UI did not start (see {config.out_dir / 'locust.log'})")
            time.sleep(0.05)
        console.print(
            f"Locust's web UI: http://{WEB_HOST}:{port}  (each test's results: {config.out_dir}/<n>-<time>; "
            "Ctrl-C quits)",
            markup=False,
            soft_wrap=True,
        )
        if while_starting is not None:
            while_starting()
        while process.poll() is None:
            hand_over()
            time.sleep(0.2)
        raise RunError(f"Locust stopped on its own (see {config.out_dir / 'locust.log'})")
    except KeyboardInterrupt:
        pass
    console.print("quitting: stopping Locust (a test still running writes what it measured)...")
    _stop_gracefully(config, process, console)
    hand_over()
