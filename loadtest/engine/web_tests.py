"""Where each test started from Locust's web UI writes its results: ``OUT/<n>-<time>``, one directory a test.

Two processes use these names: Locust's, which writes a test's directory when the test stops
(``engine.web_ui``), and the CLI's, which finds the finished ones and completes each (analysis,
gates, report). A directory is finished once its ``summary.json`` is there: Locust writes it last.
Plain paths and names, no Locust: the CLI must not import Locust, which monkey-patches its process.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

from loadtest.results.summary import summary_path

_NAME = re.compile(r"^(\d+)-\d{8}-\d{6}$")
RUN_FILES = (
    "scenario.toml",
    "run.json",
)  # copied from OUT into each test's directory: `loadtest report/gate DIR` read them


def web_test_dir(out: Path, number: int, started_epoch: float) -> Path:
    """Test ``number``'s directory (counted from 1), named by its start like a run's (UTC)."""
    stamp = datetime.fromtimestamp(started_epoch, UTC).strftime("%Y%m%d-%H%M%S")
    return out / f"{number}-{stamp}"


def finished_web_tests(out: Path) -> list[Path]:
    """The tests' directories in ``out`` whose measurements are all written, in the order the tests ran."""
    found = []
    for path in out.iterdir() if out.is_dir() else ():
        match = _NAME.match(path.name)
        if match and summary_path(path).exists():
            found.append((int(match[1]), path))
    return [path for _, path in sorted(found)]
