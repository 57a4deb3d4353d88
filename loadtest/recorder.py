"""Record every request of one load-generator process in HDR histograms, and hand out deltas.

Pure bookkeeping: the caller passes times in (seconds on one monotonic clock), so this module can
be tested without a network. What it records, per request class and for all classes together:

- ``response``: from the intended send time to the last byte (what a user of an open system saw);
- ``service``: from the actual send to the last byte (what a closed-loop tool would report);
- ``server_queue``, ``server_compute`` and ``overhead`` (service minus both), from Server-Timing;
- ``lateness``: actual send minus intended send, the load generator's own fidelity.

Histograms are HdrHistogram's: 3 significant digits, 1 µs to one hour. A value out of range is
clamped to the range and counted, never dropped (``record_value`` would silently return False).

Every arrival ends in exactly one bucket, counted by the second of its intended time: ``ok``,
``error`` (by kind), ``timeout`` or ``dropped``. Requests whose intended time falls in the warm-up
are sent and shown in the timeline, but kept out of the histograms and the accounting.

``take_delta`` returns what changed since the last call, encoded so it can cross Locust's
worker-to-master messages; ``Collector`` adds deltas up.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from dataclasses import dataclass

from hdrh.histogram import HdrHistogram

LOWEST_US = 1
HIGHEST_US = 3_600_000_000  # one hour
DIGITS = 3
METRICS = ("response", "service", "server_queue", "server_compute", "overhead", "lateness")
INTERVAL_METRICS = ("response", "service")
ALL = "all"
OUTCOMES = ("ok", "error", "timeout", "dropped")
_TIMING = re.compile(r"\b(queue|infer);dur=([0-9.]+)")


def new_histogram() -> HdrHistogram:
    return HdrHistogram(LOWEST_US, HIGHEST_US, DIGITS)


def _micros(seconds: float) -> int:
    """Whole microseconds, clamped into the histograms' range (record_value drops what is outside)."""
    return min(max(int(seconds * 1_000_000), 0), HIGHEST_US)


def parse_server_timing(header: str | None) -> tuple[float, float] | None:
    """(queue, compute) in seconds from ``queue;dur=1.2, infer;dur=8.4, ...`` (durations in ms)."""
    if not header:
        return None
    found = dict(_TIMING.findall(header))
    if "queue" not in found or "infer" not in found:
        return None
    return float(found["queue"]) / 1000, float(found["infer"]) / 1000


@dataclass(frozen=True)
class Completion:
    """How one request ended: ``outcome`` is ok, error or timeout; ``kind`` refines errors."""

    outcome: str
    kind: str = ""
    server_timing: tuple[float, float] | None = None


class Recorder:
    def __init__(self, start: float, warmup: float = 0.0) -> None:
        self.start = start
        self.warmup = warmup
        self._delta: dict[tuple[str, str], HdrHistogram] = {}
        self._interval: dict[tuple[str, str], HdrHistogram] = {}
        self._interval_second = 0
        self._finished: list[tuple[int, dict[str, bytes]]] = []
        self._counts: Counter[str] = Counter()
        self._timeline: defaultdict[int, Counter[str]] = defaultdict(Counter)
        self.in_flight = 0

    # -- recording -------------------------------------------------------------------------------

    def _second(self, t: float) -> int:
        return max(0, int(t - self.start))

    def _measured(self, intended: float) -> bool:
        return intended - self.start >= self.warmup

    def scheduled(self, cls: str, intended: float) -> None:
        self._timeline[self._second(intended)]["scheduled"] += 1
        if self._measured(intended):
            self._counts[f"scheduled|{cls}"] += 1

    def dropped(self, cls: str, intended: float) -> None:
        self._timeline[self._second(intended)]["dropped"] += 1
        if self._measured(intended):
            self._counts[f"dropped|{cls}"] += 1

    def sent(self, cls: str, intended: float, actual: float) -> None:
        self.in_flight += 1
        self._timeline[self._second(actual)]["sent"] += 1
        if self._measured(intended):
            self._record("lateness", cls, actual - intended)

    def unsent(self, cls: str, intended: float, done: float) -> None:
        """An arrival that waited for a connection longer than the timeout: a timeout, never sent."""
        self.roll(done)
        self._timeline[self._second(done)]["timeout"] += 1
        if self._measured(intended):
            self._counts[f"timeout|{cls}"] += 1

    def completed(self, cls: str, intended: float, actual: float, done: float, how: Completion) -> None:
        self.in_flight -= 1
        self.roll(done)
        second = self._timeline[self._second(done)]
        second[how.outcome] += 1
        response, service = done - intended, done - actual
        if how.outcome == "ok":
            for key in ((INTERVAL_METRICS[0], cls), (INTERVAL_METRICS[0], ALL), ("service", cls), ("service", ALL)):
                self._interval_record(key, response if key[0] == "response" else service)
        if not self._measured(intended):
            second["warmup"] += 1
            return
        outcome = how.outcome if how.outcome != "error" else f"error:{how.kind or 'unknown'}"
        self._counts[f"{outcome}|{cls}"] += 1
        if how.outcome != "ok":
            return
        self._record("response", cls, response)
        self._record("service", cls, service)
        if how.server_timing:
            queue, compute = how.server_timing
            self._record("server_queue", cls, queue)
            self._record("server_compute", cls, compute)
            self._record("overhead", cls, max(0.0, service - queue - compute))

    def _record(self, metric: str, cls: str, seconds: float) -> None:
        value = _micros(seconds)
        if value == HIGHEST_US:
            self._counts["clamped|all"] += 1  # once per sample and metric, however many histograms hold it
        for key in ((metric, cls), (metric, ALL)):
            histogram = self._delta.get(key)
            if histogram is None:
                histogram = self._delta[key] = new_histogram()
            histogram.record_value(value)

    def _interval_record(self, key: tuple[str, str], seconds: float) -> None:
        histogram = self._interval.get(key)
        if histogram is None:
            histogram = self._interval[key] = new_histogram()
        histogram.record_value(_micros(seconds))

    # -- intervals and deltas --------------------------------------------------------------------

    def roll(self, now: float) -> None:
        """Close the interval histograms of every whole second before ``now``."""
        second = self._second(now)
        if second <= self._interval_second:
            return
        if self._interval:
            encoded = {f"{m}|{c}": h.encode() for (m, c), h in self._interval.items() if h.get_total_count()}
            if encoded:
                self._finished.append((self._interval_second, encoded))
            self._interval = {}
        self._interval_second = second

    def take_delta(self, now: float, final: bool = False) -> dict:
        """Everything recorded since the last call, as plain data (str keys, bytes, ints)."""
        self.roll(now + 1 if final else now)
        delta = {
            "histograms": {f"{m}|{c}": h.encode() for (m, c), h in self._delta.items() if h.get_total_count()},
            "intervals": self._finished,
            "counts": dict(self._counts),
            "timeline": {str(s): dict(c) for s, c in self._timeline.items()},
            "in_flight": self.in_flight,
        }
        self._delta, self._finished, self._counts = {}, [], Counter()
        self._timeline = defaultdict(Counter)
        return delta
