"""Start the reference server as a child process and know when it is ready, race-free.

The child binds port 0 (the kernel picks a free port) and writes its URL to a ready file once it
accepts requests; the parent waits for that file. Used by the tests, the benchmark, ``selftest``
and the load harness when no target URL is given.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from .errors import ReferenceServerError


@dataclass
class RunningServer:
    url: str
    process: subprocess.Popen
    log_path: Path
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
        session or a loop of runs leaves nothing behind in the temp dir.
        """
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self._final_log is None:
            self._final_log = self.log()
            shutil.rmtree(self.log_path.parent, ignore_errors=True)
        return self.process.returncode


def start_server(args: Sequence[str], timeout: float = 60.0, env: dict[str, str] | None = None) -> RunningServer:
    """Run ``reference-server serve ARGS --port 0`` and return once it answers requests."""
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
        "--ready-file",
        str(ready_file),
    ]
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
    deadline = time.monotonic() + timeout
    while not ready_file.exists():
        problem = None
        if process.poll() is not None:
            problem = f"reference server exited with {process.returncode}"
        elif time.monotonic() > deadline:
            process.kill()
            process.wait()
            problem = f"reference server not ready after {timeout:.0f}s"
        if problem:
            log_tail = log_path.read_text(errors="replace")[-2000:]
            shutil.rmtree(workdir, ignore_errors=True)
            raise ReferenceServerError(f"{problem}:\n{log_tail}")
        time.sleep(0.05)
    return RunningServer(json.loads(ready_file.read_text())["url"], process, log_path)


@contextmanager
def running_server(
    args: Sequence[str], timeout: float = 60.0, env: dict[str, str] | None = None
) -> Iterator[RunningServer]:
    server = start_server(args, timeout, env)
    try:
        yield server
    finally:
        server.stop()
