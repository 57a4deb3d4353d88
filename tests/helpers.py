"""Helpers the end-to-end tests share: the `loadtest` command as a user runs it, and scenario files.

Plain functions, not tests: test modules import from here (and from ``servers.py`` and
``captures.py``), never from one another.
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
from contextlib import chdir, redirect_stderr, redirect_stdout
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# Scenario fragments for the fraud model (8 features, OIP v2) and for a plain JSON endpoint.
FRAUD = 'protocol = "oip-v2"\nmodel = "fraud"\ninput_name = "features"'
FEATURES = 'source = "features"\nwidth = 8'
JSON_ENDPOINT = 'protocol = "http-json"\npath = "/"'
# The shared generative server (conftest.generative_target): stream slots and queue places, small so tests reach them.
GENERATIVE_STREAMS, GENERATIVE_WAITING = 2, 3


def loadtest(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    """`loadtest ARGS` from the repository root: the exit code and the output a user would see.

    The command's own ``main`` runs in this process (its Locust, sampler and servers are processes of
    their own, as always): the same code a user's `loadtest` runs, less an interpreter's start and
    the imports, about half a second a run. Every run bounds its own time; ``timeout`` is kept for
    the callers' sake. `python -m loadtest` itself is run in test_cli.py.
    """
    from loadtest.cli import main

    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err), chdir(REPO):
        try:
            code = main(list(args))
        except SystemExit as exc:  # argparse's usage errors and --help
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    return subprocess.CompletedProcess(["loadtest", *args], code, out.getvalue(), err.getvalue())


def scenario(tmp_path: Path, load: str, target: str = "", payload: str = "", name: str = "test") -> Path:
    """A scenario file ``NAME.toml`` with the given [target], [payload] and [load] bodies, seed 3."""
    path = tmp_path / f"{name}.toml"
    path.write_text(f'name = "{name}"\nseed = 3\n[target]\n{target}\n[payload]\n{payload}\n[load]\n{load}\n')
    return path


def run_ok(path: Path, out: Path, *extra: str, report: bool = False) -> dict:
    """`loadtest run`, which must exit 0; the summary.json it wrote. No report unless asked (test_report's)."""
    result = loadtest("run", str(path), "--out", str(out), *extra, *([] if report else ["--no-report"]))
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads((out / "summary.json").read_text())


def free_port() -> int:
    """A loopback port nothing listens on now (the OS's choice), for a server a test starts."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def chromium() -> str | None:
    """A headless-capable Chromium on PATH, if there is one (.ci/run installs Debian's)."""
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
