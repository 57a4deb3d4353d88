"""A run's results directory as data: ``read_results(path)`` gives one ``Results``.

``summary.json``, ``timeline.csv``, ``resources.csv`` and ``histograms.json`` read back as the
objects an analyst works with: the typed ``Summary``, pandas DataFrames, hdrh histograms. The two
tables share one integer ``second`` (seconds since the run's start, as ``timeline.csv`` counts them,
warm-up included), so ``r.timeline.merge(r.resources, on="second")`` has one row per second of the
timeline: ``resources.csv`` itself keeps the sampler's windows, at fractional seconds, and
``results.per_second`` puts them on whole seconds.

Everything is read at once, not on first use: a run's files are small (a 13 s run reads in about 13
ms once pandas is imported; importing pandas is most of the first call's 0.6 s), and a ``Results``
is then a plain value that no later change to its directory alters. The interval logs, one histogram
per second and class, are read only when asked for (``Results.intervals``): decoding each second's
histograms is the one slow part.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from hdrh.histogram import HdrHistogram

from loadtest.errors import ConfigError
from loadtest.results.directory import TIMELINE_COLUMNS, read_histograms, read_table
from loadtest.results.files import read_json
from loadtest.results.per_second import intervals_table, resources_by_second
from loadtest.results.summary import ALL, GateResults, Summary, read_summary


@dataclass(frozen=True, eq=False)
class Results:
    """One run, read back: its summary, per-second tables and whole-run histograms.

    - ``summary``: the typed ``summary.json`` (``results.summary.Summary``);
    - ``timeline``: ``timeline.csv``, one row per second from 0, the warm-up's seconds first
      (``second < summary.warmup_s``; their requests are counted in ``warmup``);
    - ``resources``: the sampler's readings on the same whole seconds, each the time-weighted mean
      of the windows that cover it, and ``window_start_s``, the start of the window that covers
      most of it (``results.per_second``); a second before 0 is the sampler's, before the test began;
    - ``by_metric``: ``histograms.json``, metric -> class -> hdrh histogram of the measured requests
      (the warm-up left out), values in microseconds; ``histograms`` is its ``response`` part.
    """

    path: Path
    summary: Summary = field(repr=False)
    timeline: pd.DataFrame = field(repr=False)
    resources: pd.DataFrame = field(repr=False)
    by_metric: Mapping[str, Mapping[str, HdrHistogram]] = field(repr=False)

    @property
    def histograms(self) -> Mapping[str, HdrHistogram]:
        """The response time histogram of each request class, and of all of them together (``all``)."""
        return self.by_metric.get("response", {})

    @property
    def gates(self) -> GateResults | None:
        """The gates' verdict, or None when the run had no gates."""
        return self.summary.gates

    def histogram(self, metric: str = "response", cls: str = ALL) -> HdrHistogram | None:
        return self.by_metric.get(metric, {}).get(cls)

    def intervals(self, metric: str = "response") -> pd.DataFrame:
        """``<metric>.hlog`` as a table: one row per second and class (``all``: every class), count, ms figures.

        Warm-up seconds included, as in the log; empty when the run wrote no such log.
        """
        return intervals_table(self.path / f"{metric}.hlog")


def read_results(path: str | Path) -> Results:
    """A results directory (or its ``summary.json``), read; ConfigError (exit 2) names it when it is not one."""
    given = Path(path)
    directory = given.parent if given.name == "summary.json" and given.is_file() else given
    if not directory.is_dir():
        why = "a file" if directory.exists() else "no such directory"
        raise ConfigError(str(given), None, f"not a results directory ({why})")
    summary = read_summary(directory)
    timeline = read_table(directory / "timeline.csv")
    if timeline is None:  # a run under a second wrote an empty table
        timeline = pd.DataFrame({c: pd.Series(dtype="int64") for c in TIMELINE_COLUMNS})
    resources = _resources(directory, summary, timeline["second"].tolist())
    return Results(directory, summary, timeline, resources, _histograms(directory))


def _resources(directory: Path, summary: Summary, seconds: list[int]) -> pd.DataFrame:
    """``resources.csv`` on the timeline's whole seconds, whether or not the run's analysis has aligned it yet.

    The sampler counts from its own start, a moment before the test's; the analysis shifts the file
    to the run's start once and says so in ``resources.json`` (``aligned``). A directory whose
    analysis never ran (its parent was killed) is shifted here, in memory only: reading changes nothing.
    """
    windows = read_table(directory / "resources.csv")
    meta_path = directory / "resources.json"
    meta = read_json(meta_path) if meta_path.exists() else {}
    meta = meta if isinstance(meta, dict) else {}
    sampler_start, run_start = meta.get("start_epoch"), summary.run.started_epoch
    if windows is not None and "second" in windows and sampler_start and run_start and not meta.get("aligned"):
        windows["second"] = pd.to_numeric(windows["second"], errors="coerce") + sampler_start - run_start
    return resources_by_second(windows, float(meta.get("window_s") or 1.0), seconds)


def _histograms(directory: Path) -> dict[str, dict[str, HdrHistogram]]:
    """``histograms.json`` decoded, metric -> class -> histogram; ConfigError names the file if one will not decode."""
    try:
        flat = read_histograms(directory)
    except ConfigError:
        raise
    except Exception as exc:  # hdrh raises base64, zlib, cookie and length errors of its own
        raise ConfigError(str(directory / "histograms.json"), None, f"undecodable histogram: {exc!r}") from None
    by_metric: dict[str, dict[str, HdrHistogram]] = {}
    for (metric, cls), histogram in flat.items():
        by_metric.setdefault(metric, {})[cls] = histogram
    return by_metric
