"""Add up the deltas of every load-generator process: histograms, per-second intervals, counts.

In one process the collector pulls from the local recorder; in Locust's distributed mode the
master's collector absorbs what each worker attaches to its reports. Either way the result is one
set of histograms whose counts equal the sum of the parts, and an accounting that adds up.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable

from hdrh.histogram import HdrHistogram

from loadtest.engine.hdr_bulk import mean_value, value_at_percentile
from loadtest.engine.recorder import ALL, new_histogram

PERCENTILES = (50.0, 90.0, 95.0, 99.0, 99.9)


class Collector:
    def __init__(self) -> None:
        self.histograms: dict[str, HdrHistogram] = {}
        self.intervals: defaultdict[int, defaultdict[str, list[bytes]]] = defaultdict(lambda: defaultdict(list))
        self.counts: Counter[str] = Counter()
        self.timeline: defaultdict[int, Counter[str]] = defaultdict(Counter)
        self.in_flight: dict[str, int] = {}
        self.done: set[str] = set()

    def absorb(self, delta: dict, worker: str = "local", pause: Callable[[], None] = lambda: None) -> None:
        """Add one process's delta; ``pause`` is called between histograms (see ``Recorder.take_delta``)."""
        for key, encoded in delta["histograms"].items():
            pause()
            part = HdrHistogram.decode(encoded)
            metric = key.split("|", 1)[0]
            for target in (key, f"{metric}|{ALL}"):
                histogram = self.histograms.get(target)
                if histogram is None:
                    histogram = self.histograms[target] = new_histogram()
                histogram.add(part)
        for second, encoded in delta["intervals"]:
            for key, payload in encoded.items():
                self.intervals[int(second)][key].append(payload)
        self.counts.update(delta["counts"])
        for second, counts in delta["timeline"].items():
            self.timeline[int(second)].update(counts)
        self.in_flight[worker] = delta["in_flight"]
        if delta.get("done"):
            self.done.add(worker)

    def histogram(self, metric: str, cls: str = ALL) -> HdrHistogram | None:
        return self.histograms.get(f"{metric}|{cls}")

    def classes(self) -> list[str]:
        names = {key.split("|", 1)[1] for key in self.counts if not key.startswith("clamped")}
        names |= {key.split("|", 1)[1] for key in self.histograms}
        names.discard(ALL)
        return sorted(names)

    def accounting(self, cls: str | None = None) -> dict:
        """scheduled = ok + errors + timeouts + dropped (+ unfinished, only if a run was cut short)."""
        totals: Counter[str] = Counter()
        errors: Counter[str] = Counter()
        for key, count in self.counts.items():
            outcome, name = key.split("|", 1)
            if cls is not None and name != cls:
                continue
            if outcome.startswith("error:"):
                errors[outcome.removeprefix("error:")] += count
                totals["errors"] += count
            elif outcome != "clamped":
                totals[outcome] += count
        finished = totals["ok"] + totals["errors"] + totals["timeout"] + totals["dropped"]
        return {
            "scheduled": totals["scheduled"],
            "ok": totals["ok"],
            "errors": totals["errors"],
            "errors_by_kind": dict(sorted(errors.items())),
            "timeouts": totals["timeout"],
            "dropped": totals["dropped"],
            "unfinished": totals["scheduled"] - finished,
        }

    def interval_histogram(self, second: int, key: str) -> HdrHistogram | None:
        """One second's histogram of ``metric|class``; ``metric|all`` adds up every class."""
        metric, cls = key.split("|", 1)
        parts = self.intervals.get(second, {})
        if cls == ALL:
            encoded = [p for k, payloads in parts.items() if k.startswith(metric + "|") for p in payloads]
        else:
            encoded = parts.get(key)
        if not encoded:
            return None
        histogram = new_histogram()
        for payload in encoded:
            histogram.decode_and_add(payload)
        return histogram


def quick_percentiles(histogram: HdrHistogram | None) -> dict:
    """p50 and p99 in ms: what the live progress and the timeline need, and no more."""
    if histogram is None or histogram.get_total_count() == 0:
        return {}
    return {"p50": value_at_percentile(histogram, 50.0) / 1000, "p99": value_at_percentile(histogram, 99.0) / 1000}


def latency_stats(histogram: HdrHistogram | None) -> dict:
    """Count, mean, min, max and percentiles of a histogram of microseconds, in milliseconds."""
    if histogram is None or histogram.get_total_count() == 0:
        return {"count": 0}
    ms = 1000.0
    stats = {
        "count": histogram.get_total_count(),
        "min": histogram.get_min_value() / ms,
        "mean": round(mean_value(histogram) / ms, 4),
        "max": histogram.get_max_value() / ms,
    }
    for p in PERCENTILES:
        stats[f"p{p:g}"] = value_at_percentile(histogram, p) / ms
    return stats
