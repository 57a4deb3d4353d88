"""One directory per run, and how to find and read its files.

The directory is enough to rebuild every figure later: ``summary.json`` holds the merged
percentiles and the accounting (``results.summary``); the interval logs (``response.hlog``, ``service.hlog``,
``lateness.hlog``, ``server_queue.hlog``) hold
one histogram per second per request class, in HdrHistogram's own log format (v1.3,
``Tag=<class>``; the untagged lines are all classes together; values in microseconds), so its
standard tools read them; ``histograms.json`` holds the whole run's histogram of each metric and
class; ``timeline.csv`` has one row per second that pandas reads. Every file is written whole
(``results.files``), so an interrupted run still leaves whole files.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Collection, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from hdrh.histogram import HdrHistogram

from loadtest.results.files import read_json

HISTOGRAMS = "histograms.json"
TIMELINE_COLUMNS = (
    "second",
    "target",
    "scheduled",
    "sent",
    "ok",
    "error",
    "transport",
    "timeout",
    "dropped",
    "warmup",
    "response_p50_ms",
    "response_p99_ms",
    "response_max_ms",
    "service_p50_ms",
    "service_p99_ms",
    "lateness_p50_ms",
    "lateness_p99_ms",
    "server_queue_p50_ms",
    "server_queue_p99_ms",
)


def results_root() -> Path:
    """Where runs go when no ``--out`` is given: ``$LOADTEST_RESULTS``, else ``results/``."""
    return Path(os.environ.get("LOADTEST_RESULTS", "results"))


def run_dir_name(scenario: str, when: float | None = None) -> str:
    stamp = datetime.fromtimestamp(when or time.time(), UTC).strftime("%Y%m%d-%H%M%S")
    safe = "".join(ch if ch.isalnum() or ch in "-_" else "-" for ch in scenario)
    return f"{stamp}-{safe}"


@contextmanager
def provisional_dir(out: Path, written_first: Collection[str] = ()) -> Iterator[Path]:
    """``out``, made now, and removed again if the command fails while it holds only ``written_first``.

    ``written_first`` names the files a command writes before its first run (a replay's scan); a run's
    own files come only after its preflight (``engine.runner.measure``). So a command that stops at an
    unreachable target or a server that did not start leaves no empty results directory to be taken
    for a run, and whatever a run measured is never removed. A directory that was there before is kept.
    """
    existed = out.exists()
    out.mkdir(parents=True, exist_ok=True)
    try:
        yield out
    except BaseException:
        if not existed and all(p.is_file() and p.name in written_first for p in out.iterdir()):
            shutil.rmtree(out)
        raise


def read_replay(directory: Path) -> dict | None:
    """A replay's ``replay.json`` (what the scan found in the capture), or None for a run of a shape."""
    path = directory / "replay.json"
    return read_json(path) if path.exists() else None


def replay_target(directory: Path) -> list[int]:
    """Intended sends per second of a replay: its "target" over time."""
    replay = read_replay(directory)
    return replay["intended_per_second"] if replay else []


def read_table(path: Path):
    """A per-second CSV of a results directory as a DataFrame; None when absent or empty (a run under a second)."""
    import pandas as pd  # not at module level: Locust processes import this module and never read tables

    if not path.exists():
        return None
    try:
        return pd.read_csv(path)
    except (ValueError, OSError):
        return None


# ``histograms.json`` keys each histogram as "metric|class"; these two functions are the only ones that know it.


def histograms_document(histograms: Mapping[tuple[str, str], HdrHistogram]) -> dict[str, str]:
    return {f"{metric}|{cls}": h.encode().decode() for (metric, cls), h in sorted(histograms.items())}


def read_histograms(directory: Path) -> dict[tuple[str, str], HdrHistogram]:
    """The whole run's histogram of each (metric, class); empty when the run wrote none."""
    path = directory / HISTOGRAMS
    if not path.exists():
        return {}
    histograms = {}
    for key, encoded in read_json(path).items():
        metric, _, cls = key.partition("|")
        histograms[(metric, cls)] = HdrHistogram.decode(encoded.encode())
    return histograms
