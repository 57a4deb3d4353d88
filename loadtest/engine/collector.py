"""Add up the deltas of every load-generator process: histograms, per-second intervals, counts.

In one process the collector pulls from the local recorder; in Locust's distributed mode the
master's collector absorbs what each worker attaches to its reports. Either way the result is one
set of histograms whose counts equal the sum of the parts, and an accounting that adds up: a worker
lost mid-run (``lose``) has the part of its share it never reported counted as ``lost_worker``, so
``scheduled`` is still the whole schedule.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Mapping

from hdrh.histogram import HdrHistogram

from loadtest.engine.recorder import new_histogram
from loadtest.results.hdr_bulk import mean_value, value_at_percentile
from loadtest.results.summary import ALL, Counts, Percentiles

PERCENTILES = (50.0, 90.0, 95.0, 99.0, 99.9)
FINISHED = ("ok", "timeout", "dropped")  # with every ``error:<kind>``: the outcomes a worker reports as finished


Key = tuple[str, str]  # (metric, request class)


class Collector:
    def __init__(self) -> None:
        self.histograms: dict[Key, HdrHistogram] = {}
        self.intervals: defaultdict[int, defaultdict[Key, list[bytes]]] = defaultdict(lambda: defaultdict(list))
        self.counts: defaultdict[str, Counter[str]] = defaultdict(Counter)  # class -> outcome -> count
        self.verdicts: defaultdict[str, Counter[str]] = defaultdict(Counter)  # messy class -> verdict key -> count
        self.tokens: defaultdict[str, Counter[str]] = defaultdict(Counter)  # generative: class -> token count -> n
        self.clamped = 0
        self.timeline: defaultdict[int, Counter[str]] = defaultdict(Counter)
        self.in_flight: dict[str, int] = {}
        self.done: set[str] = set()
        self.by_worker: defaultdict[str, defaultdict[str, Counter[str]]] = defaultdict(lambda: defaultdict(Counter))
        self.last_report: dict[str, float] = {}  # worker -> when its last report came (the caller's clock)

    def absorb(
        self, delta: dict, worker: str = "local", pause: Callable[[], None] = lambda: None, at: float | None = None
    ) -> None:
        """Add one process's delta, which came at ``at``; ``pause`` runs between histograms (see take_delta)."""
        for metric, by_class in delta["histograms"].items():
            for cls, encoded in by_class.items():
                pause()
                part = HdrHistogram.decode(encoded)
                for target in ((metric, cls), (metric, ALL)):
                    histogram = self.histograms.get(target)
                    if histogram is None:
                        histogram = self.histograms[target] = new_histogram()
                    histogram.add(part)
        for second, encoded in delta["intervals"]:
            for metric, by_class in encoded.items():
                for cls, payload in by_class.items():
                    self.intervals[int(second)][(metric, cls)].append(payload)
        for cls, counts in delta["counts"].items():
            self.counts[cls].update(counts)
            self.by_worker[worker][cls].update(counts)
        for cls, verdicts in delta.get("verdicts", {}).items():
            self.verdicts[cls].update(verdicts)
        for cls, tokens in delta.get("tokens", {}).items():
            self.tokens[cls].update(tokens)
        self.clamped += delta.get("clamped", 0)
        for second, counts in delta["timeline"].items():
            self.timeline[int(second)].update(counts)
        self.in_flight[worker] = delta["in_flight"]
        if delta.get("done"):
            self.done.add(worker)
        if at is not None:
            self.last_report[worker] = at

    def reported(self, worker: str, outcome: str) -> dict[str, int]:
        """What one worker reported of one outcome, by class: a closed-load worker's share is what it scheduled."""
        return {cls: counts[outcome] for cls, counts in self.by_worker.get(worker, {}).items()}

    def lose(self, worker: str, share: Mapping[str, int]) -> int:
        """Account for a lost worker whose share of the schedule was ``share`` (measured arrivals by class).

        What it reported stays as reported; the rest of its share is scheduled and ``lost_worker``:
        never sent, or sent and never reported. Returns how many arrivals that is.
        """
        reported = self.by_worker.get(worker, {})
        lost_total = 0
        for cls, intended in share.items():
            counts = reported.get(cls, Counter())
            finished = sum(n for outcome, n in counts.items() if outcome in FINISHED or outcome.startswith("error:"))
            self.counts[cls]["scheduled"] += max(0, intended - counts["scheduled"])
            lost = max(0, intended - finished)
            self.counts[cls]["lost_worker"] += lost
            lost_total += lost
        self.in_flight.pop(worker, None)
        return lost_total

    def histogram(self, metric: str, cls: str = ALL) -> HdrHistogram | None:
        return self.histograms.get((metric, cls))

    def classes(self) -> list[str]:
        names = set(self.counts) | {cls for _, cls in self.histograms}
        names.discard(ALL)
        return sorted(names)

    def accounting(self, cls: str | None = None) -> Counts:
        """scheduled = ok + errors + timeouts + dropped + lost_worker (+ unfinished, only if a run was cut short)."""
        totals: Counter[str] = Counter()
        errors: Counter[str] = Counter()
        for name, counts in self.counts.items():
            if cls is not None and name != cls:
                continue
            for outcome, count in counts.items():
                if outcome.startswith("error:"):
                    errors[outcome.removeprefix("error:")] += count
                    totals["errors"] += count
                else:
                    totals[outcome] += count
        finished = totals["ok"] + totals["errors"] + totals["timeout"] + totals["dropped"] + totals["lost_worker"]
        return Counts(
            scheduled=totals["scheduled"],
            ok=totals["ok"],
            errors=totals["errors"],
            errors_by_kind=dict(sorted(errors.items())),
            timeouts=totals["timeout"],
            dropped=totals["dropped"],
            lost_worker=totals["lost_worker"],
            unfinished=totals["scheduled"] - finished,
        )

    def interval_classes(self, second: int, metric: str) -> list[str]:
        return sorted({cls for m, cls in self.intervals.get(second, {}) if m == metric})

    def interval_histogram(self, second: int, metric: str, cls: str = ALL) -> HdrHistogram | None:
        """One second's histogram of ``metric`` for one class; ``ALL`` adds up every class."""
        parts = self.intervals.get(second, {})
        if cls == ALL:
            encoded = [p for (m, _), payloads in parts.items() if m == metric for p in payloads]
        else:
            encoded = parts.get((metric, cls))
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


def latency_stats(histogram: HdrHistogram | None) -> Percentiles:
    """Count, mean, min, max and percentiles of a histogram of microseconds, in milliseconds."""
    if histogram is None or histogram.get_total_count() == 0:
        return Percentiles(0)
    ms = 1000.0
    return Percentiles(
        count=histogram.get_total_count(),
        min=histogram.get_min_value() / ms,
        mean=round(mean_value(histogram) / ms, 4),
        max=histogram.get_max_value() / ms,
        by_percentile={f"p{p:g}": value_at_percentile(histogram, p) / ms for p in PERCENTILES},
    )
