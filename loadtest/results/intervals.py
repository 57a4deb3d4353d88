"""A run's per-second latency histograms as one matrix of counts: seconds by buckets.

The comparison of two variants resamples whole seconds (see ``bootstrap``), so it needs each
second's histogram, not only the merged one. ``response.hlog`` has them, one line per second and
request class (``Tag=<class>,``; the untagged lines are all classes together). Decoded, each is
hdrh's counts array of 23,552 buckets, nearly all empty; a run keeps only the buckets that are
nonzero in some second, with their absolute bucket indices, so two runs can be put back on one
grid (``on_common_grid``) and summed. Each bucket stands for hdrh's highest equivalent value,
so a percentile of the summed counts is exactly what hdrh's ``get_value_at_percentile`` says.

Only measured seconds are kept. The recorder puts every success in the interval log, warm-up
included, by the second it completed in; the seconds before ``load.warmup_s`` are dropped here.
A request sent just before the warm-up ended and completing just after it is in the first
measured second (a few requests at most: the rate times one latency); the interval log cannot
tell them apart.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from hdrh.histogram import HdrHistogram

from loadtest.errors import ConfigError
from loadtest.results.summary import read_summary

Config = tuple[int, int, int]  # hdrh's lowest and highest trackable value, significant digits


@dataclass(frozen=True, eq=False)
class IntervalCounts:
    """Counts of one request class in one run: ``counts[i, j]`` requests in second ``seconds[i]`` and bucket j.

    ``buckets[j]`` is the bucket's index in hdrh's counts array (ascending), ``values_ms[j]`` the
    value it stands for. ``seconds`` are consecutive: a second without a success is a row of zeros.
    """

    source: str  # the file, for messages
    cls: str | None  # None: all classes together
    config: Config
    seconds: np.ndarray  # int64, since the start of the run
    buckets: np.ndarray  # int64
    values_ms: np.ndarray  # float64
    counts: np.ndarray  # int64, len(seconds) x len(buckets)

    @property
    def total(self) -> int:
        return int(self.counts.sum())

    def percentile(self, percentile: float) -> float:
        """The percentile in ms of all the seconds together, as hdrh computes it on the merged histogram."""
        return percentile_of(self.counts.sum(axis=0), self.values_ms, percentile)


def percentile_of(counts: np.ndarray, values_ms: np.ndarray, percentile: float) -> float:
    """hdrh's ``get_value_at_percentile`` on a counts vector (percentile above 0); 0.0 when empty."""
    total = int(counts.sum())
    if total == 0:
        return 0.0
    target = max(int(min(percentile, 100.0) * total / 100 + 0.5), 1)
    return float(values_ms[int(np.searchsorted(np.cumsum(counts), target))])


def bucket_values_ms(config: Config, buckets: np.ndarray) -> np.ndarray:
    """The highest value each bucket index holds, in ms (the histograms record microseconds)."""
    reference = HdrHistogram(*config)
    return np.array(
        [reference.get_highest_equivalent_value(reference.get_value_from_index(int(i))) / 1000 for i in buckets],
        dtype=np.float64,
    )


def from_histograms(
    seconds: Sequence[int], histograms: Sequence[HdrHistogram], source: str = "", cls: str | None = None
) -> IntervalCounts:
    """One row per second from hdrh histograms of one configuration; missing seconds become rows of zeros."""
    if not histograms:
        raise ValueError("no histograms")
    configs = {(h.lowest_trackable_value, h.highest_trackable_value, h.significant_figures) for h in histograms}
    if len(configs) > 1:
        raise ValueError(f"histograms of different configurations: {sorted(configs)}")
    config = configs.pop()
    first, last = min(seconds), max(seconds)
    rows, columns, values = [], [], []
    for second, histogram in zip(seconds, histograms, strict=True):
        counts = np.ctypeslib.as_array(histogram.counts)
        nonzero = np.flatnonzero(counts)
        rows.append(np.full(len(nonzero), second - first, dtype=np.int64))
        columns.append(nonzero)
        values.append(counts[nonzero].astype(np.int64))
    buckets, column = np.unique(np.concatenate(columns), return_inverse=True)
    counts = np.zeros((last - first + 1, len(buckets)), dtype=np.int64)
    np.add.at(counts, (np.concatenate(rows), column), np.concatenate(values))  # a second may have several lines
    return IntervalCounts(
        source,
        cls,
        config,
        np.arange(first, last + 1, dtype=np.int64),
        buckets,
        bucket_values_ms(config, buckets),
        counts,
    )


def on_common_grid(parts: Sequence[IntervalCounts]) -> list[IntervalCounts]:
    """The same counts, every part with the union of the parts' buckets as its columns (so they can be summed)."""
    configs = {part.config for part in parts}
    if len(configs) > 1:
        sources = ", ".join(part.source for part in parts)
        raise ValueError(f"histograms of different configurations cannot share buckets: {sources}")
    buckets, first = np.unique(np.concatenate([part.buckets for part in parts]), return_index=True)
    values_ms = np.concatenate([part.values_ms for part in parts])[first]
    aligned = []
    for part in parts:
        counts = np.zeros((len(part.seconds), len(buckets)), dtype=np.int64)
        counts[:, np.searchsorted(buckets, part.buckets)] = part.counts
        aligned.append(IntervalCounts(part.source, part.cls, part.config, part.seconds, buckets, values_ms, counts))
    return aligned


def _parse(path: Path, text: str, cls: str | None) -> tuple[list[int], list[str], set[str | None]]:
    """(seconds, payloads) of the lines of ``cls``, and every class the file holds."""
    seconds, payloads, tags = [], [], set()
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.startswith("#") or line.startswith('"'):
            continue
        tag = None
        if line.startswith("Tag="):
            tag, _, line = line[4:].partition(",")
        fields = line.split(",")
        try:
            start, length, _max = (float(f) for f in fields[:3])
            if len(fields) != 4 or not fields[3] or not math.isfinite(start) or length <= 0:
                raise ValueError
        except ValueError:
            raise ConfigError(
                str(path), f"line {number}", "not an interval line ([Tag=<class>,]start,length,max,histogram)"
            ) from None
        tags.add(tag)
        if tag == cls:
            seconds.append(int(round(start)))
            payloads.append(fields[3])
    return seconds, payloads, tags


def read_interval_counts(
    run_dir: Path, cls: str | None = None, metric: str = "response", warmup: float | None = None
) -> IntervalCounts:
    """The measured seconds of ``<metric>.hlog`` in a results directory, for one class (None: all classes).

    ``warmup`` is read from the directory's summary unless given (the analysis runs before it is written).
    """
    path = Path(run_dir) / f"{metric}.hlog"
    if warmup is None:
        warmup = read_summary(Path(run_dir)).warmup_s
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(str(path), None, f"missing: the run wrote no {metric} interval log") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(str(path), None, f"unreadable: {exc}") from None
    if not text.startswith("#[Histogram log format version"):
        raise ConfigError(
            str(path), None, "not an HdrHistogram interval log (no '#[Histogram log format version' line)"
        )
    seconds, payloads, tags = _parse(path, text, cls)
    measured = [(s, p) for s, p in zip(seconds, payloads, strict=True) if s >= warmup]
    if not measured:
        held = ", ".join(sorted("all" if t is None else t for t in tags)) or "none"
        which = "all classes" if cls is None else f"class {cls!r}"
        raise ConfigError(str(path), None, f"no measured seconds of {which} (warm-up {warmup:g} s; classes: {held})")
    histograms = []
    for second, payload in measured:
        try:
            histograms.append(HdrHistogram.decode(payload))
        except Exception as exc:  # hdrh raises base64, zlib, cookie and length errors of its own
            raise ConfigError(str(path), f"second {second}", f"undecodable histogram: {exc!r}") from None
    try:
        return from_histograms([s for s, _ in measured], histograms, str(path), cls)
    except ValueError as exc:
        raise ConfigError(str(path), None, str(exc)) from None
