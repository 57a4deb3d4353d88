"""A run's per-second tables as pandas DataFrames, every one on the timeline's whole seconds.

``timeline.csv`` counts whole seconds from the run's start: second k holds what happened in
[k, k+1). The resource sampler cannot: it starts before Locust's test does and writes one row per
window of at least a second (``engine.sampler``), so ``resources.csv``'s ``second`` is each window's start,
fractional (0.472, 1.481, ...), and windows drift against whole seconds by a few milliseconds each
(about 10 ms on this machine). Rounding a window's start would leave a second out now and then (the
windows run a little over a second), so ``resources_by_second`` spreads each window over the seconds
it overlaps instead: each whole second gets the time-weighted mean of the windows that cover it.
Every column is a mean over its window or a reading at its end (CPU, utilisation, busy shares, RSS,
queue rows, GPU), so a time-weighted mean is that column's value over the second; the busiest
thread's id is the id of the window that covers most of the second. ``window_start_s`` keeps that
window's own start, so a row leads back to the sampler's.

``intervals_table`` lays an interval log (``response.hlog``...) out as rows: one per second and
request class, with its count and percentiles.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from hdrh.histogram import HdrHistogram

from loadtest.results.hdr_bulk import value_at_percentile

PICKED = ("server_thread_max_tid",)  # not a quantity: taken from the window that covers most of the second
INTERVAL_PERCENTILES = (50.0, 90.0, 99.0, 99.9)


def resources_by_second(
    windows: pd.DataFrame | None, window_s: float = 1.0, seconds: Sequence[int] = ()
) -> pd.DataFrame:
    """``resources.csv``'s windows (``second``: each window's start, seconds since the run's start) on whole seconds.

    One row for every second a window overlaps and every one of ``seconds`` (the timeline's), so the
    timeline joins with a row for each of its seconds; where no window had a reading (the run's last
    fraction of a second: the sampler drops a last window under half a second) the cells are empty
    (NaN), never zeros. A window ends where the next begins; the last is taken to last ``window_s``.
    """
    if windows is not None and "second" in windows:
        windows = windows[pd.to_numeric(windows["second"], errors="coerce").notna()]  # a row cut short: no time
    if windows is None or windows.empty or "second" not in windows:
        columns = ["window_start_s", *([] if windows is None else [c for c in windows if c != "second"])]
        empty = pd.DataFrame(index=pd.Index(sorted(set(seconds)), dtype="int64"), columns=columns, dtype="float64")
        return empty.rename_axis("second").reset_index()
    windows = windows.assign(second=pd.to_numeric(windows["second"])).sort_values("second").reset_index(drop=True)
    starts = windows["second"].to_numpy(dtype=np.float64)
    ends = np.append(starts[1:], starts[-1] + window_s)
    # Each (window, second) pair the window overlaps: a window of a second or so touches two or three.
    span = int(np.max(np.ceil(ends) - np.floor(starts)))
    window = np.repeat(np.arange(len(starts)), span)
    second = np.floor(starts)[window] + np.tile(np.arange(span), len(starts))
    overlap = np.minimum(ends[window], second + 1) - np.maximum(starts[window], second)
    held = overlap > 0
    window, second, overlap = window[held], second[held].astype(np.int64), overlap[held]

    quantities = [c for c in windows if c != "second" and c not in PICKED]
    values = windows[quantities].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64)[window]
    weights = np.where(np.isnan(values), 0.0, overlap[:, None])
    weighted = pd.DataFrame(np.nan_to_num(values) * weights, columns=quantities).groupby(second).sum()
    covered = pd.DataFrame(weights, columns=quantities).groupby(second).sum()
    means = (weighted / covered.where(covered > 0)).round(4)

    order = np.lexsort((-overlap, second))  # by second, the window covering most of it first
    first = order[np.r_[True, second[order][1:] != second[order][:-1]]]
    table = pd.DataFrame({"window_start_s": starts[window[first]]}, index=second[first])
    for column in (c for c in PICKED if c in windows):
        table[column] = windows[column].to_numpy()[window[first]]
    table = table.join(means)[["window_start_s", *(c for c in windows if c != "second")]]
    table = table.reindex(table.index.union(pd.Index(seconds, dtype="int64")))
    return table.rename_axis("second").reset_index()


def intervals_table(path: Path) -> pd.DataFrame:
    """One row per interval of an HdrHistogram log: second, class (``all``: the untagged lines), count, ms figures.

    ``second`` is the interval's timestamp, seconds from the log's ``StartTime`` (the run's start) as
    ``timeline.csv``'s are; the warm-up's seconds are in it (the log's ``#[Warm-up: ...]`` line says how many).
    An absent log is an empty table.
    """
    from hdrh.log import HistogramLogReader

    columns = ["second", "class", "count", *(f"p{p:g}_ms" for p in INTERVAL_PERCENTILES), "max_ms"]
    rows = []
    if path.exists():
        reader = HistogramLogReader(str(path), HdrHistogram(1, 3_600_000_000, 3))
        try:
            while (h := reader.get_next_interval_histogram()) is not None:
                rows.append(
                    [
                        round(h.get_start_time_stamp() / 1000 - reader.get_start_time_sec()),
                        h.get_tag() or "all",
                        h.get_total_count(),
                        *(value_at_percentile(h, p) / 1000 for p in INTERVAL_PERCENTILES),
                        h.get_max_value() / 1000,
                    ]
                )
        finally:
            reader.close()
    return pd.DataFrame(rows, columns=columns).astype({"second": "int64", "count": "int64"})
