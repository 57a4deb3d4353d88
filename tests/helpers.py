"""Helpers the end-to-end tests share: the `loadtest` command as a user runs it, and scenario files.

Plain functions, not tests: test modules import from here (and from ``servers.py`` and
``captures.py``), never from one another.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# Scenario fragments for the fraud model (8 features, OIP v2) and for a plain JSON endpoint.
FRAUD = 'protocol = "oip-v2"\nmodel = "fraud"\ninput_name = "features"'
FEATURES = 'source = "features"\nwidth = 8'
JSON_ENDPOINT = 'protocol = "http-json"\npath = "/"'


def loadtest(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    """`python -m loadtest ARGS` from the repository root: the exit code and output a user would see."""
    return subprocess.run(
        [sys.executable, "-m", "loadtest", *args], capture_output=True, text=True, timeout=timeout, cwd=REPO
    )


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


def chromium() -> str | None:
    """A headless-capable Chromium on PATH, if there is one (.ci/run installs Debian's)."""
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
