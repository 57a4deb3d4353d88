"""Third-party model servers as test targets: MLServer and KServe's model server, each a real child process.

Users aim this harness at their own servers, so the tests do too. Each server runs from a virtualenv
of its own under ``.venv-targets/`` (built by ``make test``; the Makefile says why they are
separate), on free loopback ports, serving a model named ``fraud`` that takes our fraud scenarios'
payload: one FP32 input ``features`` of shape [1, 8].

- MLServer 1.7.1 serves a scikit-learn logistic regression through mlserver-sklearn, fitted in the
  test's directory on the reference server's seeded synthetic transactions, inside MLServer's venv
  (a pickle loads only under the scikit-learn that wrote it).
- KServe 0.21 serves ``fixtures/targets/kserve_model.py``: a ``kserve.Model`` with a fixed logistic
  regression in numpy, rebound from every interface to 127.0.0.1.

Each server starts in a session of its own and goes with it whole: SIGTERM to its process group,
SIGKILL to the group if it has not exited in time, and, should the test process die without running
its ``finally`` blocks, SIGKILL from the kernel (``exit_with_parent``).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np

from reference_server.launch import exit_with_parent

REPO = Path(__file__).resolve().parents[1]
VENVS = REPO / ".venv-targets"
MLSERVER_VENV, KSERVE_VENV = VENVS / "mlserver", VENVS / "kserve"
FIXTURES = Path(__file__).parent / "fixtures" / "targets"
MODEL = "fraud"
READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 5.0
START_ATTEMPTS = 3  # a port picked free can be taken before the server binds it: then new ports


@dataclass(frozen=True)
class TargetServer:
    """A running third-party server: where to send REST, gRPC and scrapes, and the process to watch."""

    name: str
    url: str  # http://127.0.0.1:PORT, the OIP v2 REST base URL
    grpc_target: str  # 127.0.0.1:PORT, OIP v2 over gRPC
    metrics_url: str  # its Prometheus endpoint
    model: str
    pid: int
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


class TargetUnavailable(Exception):
    """The server's virtualenv is not built: the test is skipped with this reason."""


def venv_bin(venv: Path, program: str) -> Path:
    """A program of a target venv; TargetUnavailable (with the command that builds it) if the venv is not built."""
    path = venv / "bin" / program
    stamp = next(venv.glob(".installed-*"), None)
    if stamp is None or not path.exists():
        raise TargetUnavailable(f"{venv.relative_to(REPO)} is not built: `make test` builds it")
    return path


@contextmanager
def running_mlserver(workdir: Path) -> Iterator[TargetServer]:
    """MLServer serving a scikit-learn ``fraud`` classifier from a model repository built in ``workdir``."""
    python, program = venv_bin(MLSERVER_VENV, "python"), venv_bin(MLSERVER_VENV, "mlserver")
    model_dir = workdir / "models" / MODEL
    model_dir.mkdir(parents=True)
    fit_fraud_classifier(python, workdir / "transactions.npz", model_dir / "model.joblib")
    sklearn = {"name": MODEL, "implementation": "mlserver_sklearn.SKLearnModel", "parameters": {"uri": "model.joblib"}}
    (model_dir / "model-settings.json").write_text(json.dumps(sklearn))
    # MLSERVER_* variables would override settings.json: the server runs on these settings alone.
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("MLSERVER")}
    for attempt in range(START_ATTEMPTS):
        http, grpc, metrics = free_ports(3)
        settings = {
            "debug": False,
            "host": "127.0.0.1",
            "http_port": http,
            "grpc_port": grpc,
            "metrics_port": metrics,
            "parallel_workers": 0,  # inference in the server's own process: quick to start, one process to watch
        }
        (workdir / "models" / "settings.json").write_text(json.dumps(settings))
        log_path = workdir / f"mlserver-{attempt}.log"
        with _started([str(program), "start", str(workdir / "models")], log_path, workdir, env) as process:
            url = f"http://127.0.0.1:{http}"
            if _ready(process, url, log_path, last_try=attempt == START_ATTEMPTS - 1):
                metrics_url = f"http://127.0.0.1:{metrics}/metrics"
                yield TargetServer("mlserver", url, f"127.0.0.1:{grpc}", metrics_url, MODEL, process.pid, log_path)
                return


def fit_fraud_classifier(python: Path, data_path: Path, model_path: Path) -> None:
    """The reference server's seeded synthetic transactions, fitted in MLServer's venv by train_fraud.py."""
    from reference_server.fraud_model import synthetic_transactions

    x, y = synthetic_transactions(2000, seed=17)
    np.savez(data_path, x=x, y=y)
    command = [str(python), str(FIXTURES / "train_fraud.py"), str(data_path), str(model_path)]
    subprocess.run(command, check=True, timeout=120)


@contextmanager
def running_kserve(workdir: Path) -> Iterator[TargetServer]:
    """KServe's model server running ``fixtures/targets/kserve_model.py``, on loopback only."""
    python = venv_bin(KSERVE_VENV, "python")
    for attempt in range(START_ATTEMPTS):
        http, grpc = free_ports(2)
        command = [str(python), str(FIXTURES / "kserve_model.py"), "--http_port", str(http), "--grpc_port", str(grpc)]
        command += ["--loopback", "--enable_latency_logging", "false"]
        log_path = workdir / f"kserve-{attempt}.log"
        with _started(command, log_path, workdir, dict(os.environ)) as process:
            url = f"http://127.0.0.1:{http}"
            if _ready(process, url, log_path, last_try=attempt == START_ATTEMPTS - 1):
                yield TargetServer("kserve", url, f"127.0.0.1:{grpc}", f"{url}/metrics", MODEL, process.pid, log_path)
                return


def free_ports(n: int) -> list[int]:
    """``n`` distinct loopback ports the kernel says are free now (held open together, so they differ)."""
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


@contextmanager
def _started(command: list[str], log_path: Path, cwd: Path, env: dict[str, str]) -> Iterator[subprocess.Popen]:
    """The command in a session of its own, its output in ``log_path``; its whole process group ended after."""
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env=env,
            start_new_session=True,
            preexec_fn=exit_with_parent(signal.SIGKILL),  # a third-party server's SIGTERM handling is its own
        )
    try:
        yield process
    finally:
        stop_group(process)


def stop_group(process: subprocess.Popen, timeout: float = STOP_TIMEOUT_S) -> None:
    """SIGTERM to the process group, SIGKILL to it if the leader has not exited by ``timeout``; then the rest of it."""
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    with suppress(subprocess.TimeoutExpired):
        process.wait(timeout)
    with suppress(ProcessLookupError):  # the leader gone or not, nothing of the group may outlive it
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def _ready(process: subprocess.Popen, url: str, log_path: Path, last_try: bool) -> bool:
    """Poll GET /v2/health/ready until 200. False if the server exited over a port taken meanwhile (try again)."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    with httpx.Client(base_url=url, timeout=1.0) as client:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                log = log_path.read_text(errors="replace")
                if "address already in use" in log.lower() and not last_try:
                    return False
                raise RuntimeError(f"{' '.join(process.args[:2])} exited with {process.returncode}:\n{log[-3000:]}")
            with suppress(httpx.HTTPError):
                if client.get("/v2/health/ready").status_code == 200:
                    return True
            time.sleep(0.05)
    log = log_path.read_text(errors="replace")
    raise RuntimeError(f"not ready on {url} after {READY_TIMEOUT_S:g}s:\n{log[-3000:]}")
