"""Start the reference server as a child process and know when it is ready, race-free.

The child binds port 0 (the kernel picks a free port) and writes its URL to a ready file once it
accepts requests; the parent waits for that file. Used by the tests, the benchmark, ``selftest``
and the load harness when no target URL is given. Asked for gRPC (``--grpc-port``, any port), it
binds a free port for that too, and the ready file names it (``RunningServer.grpc_target``).

The server goes with its parent, whatever ends it: Ctrl-C or SIGTERM while it starts or stops
kills it and removes its work directory, and on Linux the kernel sends it SIGTERM when the parent
dies, even by SIGKILL (``exit_with_parent``), so no server is left on its port, pinned to its core.
"""

from __future__ import annotations

import ctypes
import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from .errors import ReferenceServerError

_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


@dataclass
class RunningServer:
    url: str
    process: subprocess.Popen
    log_path: Path
    grpc_target: str | None = None  # "127.0.0.1:PORT" when it serves gRPC too
    _final_log: str | None = None

    @property
    def pid(self) -> int:
        return self.process.pid

    def log(self) -> str:
        """The server's output so far; after ``stop`` the whole of it, kept in memory."""
        if self._final_log is not None:
            return self._final_log
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM (in-flight requests finish), then SIGKILL if it has not exited by ``timeout``.

        The temporary work directory (ready file and log) goes with the process, so a long test
        session or a loop of runs leaves nothing behind in the temp dir. Ctrl-C or SIGTERM while it
        waits kills the server at once, and still removes the directory.
        """
        try:
            if self.process.poll() is None:
                self.process.send_signal(signal.SIGTERM)
                with suppress(subprocess.TimeoutExpired):  # then killed, below
                    self.process.wait(timeout)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()
            if self._final_log is None:
                try:
                    self._final_log = self.log()
                except OSError:
                    self._final_log = ""
                shutil.rmtree(self.log_path.parent, ignore_errors=True)
        return self.process.returncode


def start_server(args: Sequence[str], timeout: float = 60.0, env: dict[str, str] | None = None) -> RunningServer:
    """Run ``reference-server serve ARGS --port 0`` and return once it answers requests.

    ARGS holding ``--grpc-port`` (any port) serve gRPC too, on a free port: ``--grpc-port 0`` is added.
    """
    workdir = Path(tempfile.mkdtemp(prefix="reference-server-"))
    ready_file, log_path = workdir / "ready.json", workdir / "server.log"
    command = [
        sys.executable,
        "-m",
        "reference_server",
        "serve",
        *args,
        "--port",
        "0",
        *(["--grpc-port", "0"] if wants_grpc(args) else []),
        "--ready-file",
        str(ready_file),
    ]
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            preexec_fn=exit_with_parent(signal.SIGTERM),
        )
    try:
        _wait_ready(process, ready_file, log_path, timeout)
        ready = json.loads(ready_file.read_text())
    except BaseException:  # not ready, or Ctrl-C / SIGTERM while it started: no server and no directory left
        if process.poll() is None:
            process.kill()
            process.wait()
        shutil.rmtree(workdir, ignore_errors=True)
        raise
    return RunningServer(ready["url"], process, log_path, ready.get("grpc"))


def wants_grpc(args: Sequence[str]) -> bool:
    return any(arg == "--grpc-port" or arg.startswith("--grpc-port=") for arg in args)


def _wait_ready(process: subprocess.Popen, ready_file: Path, log_path: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not ready_file.exists():
        problem = None
        if process.poll() is not None:
            problem = f"reference server exited with {process.returncode}"
        elif time.monotonic() > deadline:
            problem = f"reference server not ready after {timeout:.0f}s"
        if problem:
            log_tail = log_path.read_text(errors="replace")[-2000:]
            raise ReferenceServerError(f"{problem}:\n{log_tail}")
        time.sleep(0.05)


def exit_with_parent(signum: int) -> Callable[[], None] | None:
    """A ``preexec_fn`` that has the kernel send the child ``signum`` when this process dies (Linux).

    Nothing in a process runs when it is SIGKILLed (or OOM-killed): its ``finally`` blocks that stop
    its children never run, and a child in a session of its own (Locust, the sampler) is out of
    reach of a signal to its group too. ``PR_SET_PDEATHSIG`` costs one system call in the child.
    It fires when the *thread* that started the child ends, so it is set only from the main thread
    (whose end is the process's); elsewhere, and off Linux, None: no guard.
    """
    prctl = _prctl()
    if prctl is None or threading.current_thread() is not threading.main_thread():
        return None
    parent = os.getpid()

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, signum)
        if os.getppid() != parent:  # the parent died between the fork and the prctl: nobody to wait for
            os._exit(1)

    return preexec


@functools.cache
def _prctl() -> Callable[..., int] | None:
    """libc's prctl, looked up once in the parent (never in a child between fork and exec)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


@contextmanager
def running_server(
    args: Sequence[str], timeout: float = 60.0, env: dict[str, str] | None = None
) -> Iterator[RunningServer]:
    server = start_server(args, timeout, env)
    try:
        yield server
    finally:
        server.stop()
