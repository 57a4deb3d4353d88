"""Record every request of one load-generator process in HDR histograms, and hand out deltas.

Pure bookkeeping: the caller passes times in (seconds on one monotonic clock), so this module can
be tested without a network. What it records, per request class and for all classes together:

- ``response``: from the intended send time to the last byte (what a user of an open system saw);
- ``service``: from the actual send to the last byte (what a closed-loop tool would report);
- ``server_queue``, ``server_compute`` and ``overhead`` (service minus both), from Server-Timing;
- ``lateness``: actual send minus intended send, the load generator's own fidelity.

Each value is recorded once, under its class; the collector adds the classes up into "all".
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
from collections.abc import Callable
from dataclasses import dataclass

from hdrh.histogram import HdrHistogram

from .hdr_bulk import record_many, reset

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
        # Raw microseconds, added into histograms once a second (hdr_bulk): cheap on the send path.
        self._delta: defaultdict[tuple[str, str], list[int]] = defaultdict(list)
        self._interval: defaultdict[tuple[str, str], list[int]] = defaultdict(list)
        self._scratch = new_histogram()
        self._interval_second = 0
        self._finished: list[tuple[int, defaultdict[tuple[str, str], list[int]]]] = []
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
        if intended != actual and self._measured(intended):  # closed load sends on time by definition
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
            self._interval[("response", cls)].append(_micros(response))
            self._interval[("service", cls)].append(_micros(service))
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
        # Per class only: the collector adds classes up into "all", once a second rather than per request.
        value = _micros(seconds)
        if value == HIGHEST_US:
            self._counts["clamped|all"] += 1
        self._delta[(metric, cls)].append(value)

    def _encode(self, buffers: dict[tuple[str, str], list[int]], pause: Callable[[], None]) -> dict[str, bytes]:
        encoded = {}
        for (metric, cls), values in buffers.items():
            if values:
                record_many(self._scratch, values)
                encoded[f"{metric}|{cls}"] = self._scratch.encode()
                reset(self._scratch)
                pause()
        return encoded

    # -- intervals and deltas --------------------------------------------------------------------

    def roll(self, now: float) -> None:
        """Close the interval histograms of every whole second before ``now``."""
        second = self._second(now)
        if second <= self._interval_second:
            return
        if self._interval:
            # Only swap buffers here (this runs inside a request's completion); encoding waits for take_delta.
            self._finished.append((self._interval_second, self._interval))
            self._interval = defaultdict(list)
        self._interval_second = second

    def take_delta(self, now: float, final: bool = False, pause: Callable[[], None] = lambda: None) -> dict:
        """Everything recorded since the last call, as plain data (str keys, bytes, ints).

        ``pause`` is called between histograms: the Locust glue yields to other greenlets there, so
        the second's bookkeeping never holds the load generator's event loop for long.
        """
        self.roll(now + 1 if final else now)
        # Take every buffer first: while encoding pauses, requests go on recording into fresh ones.
        finished, self._finished = self._finished, []
        buffers, self._delta = self._delta, defaultdict(list)
        counts, self._counts = self._counts, Counter()
        timeline, self._timeline = self._timeline, defaultdict(Counter)
        in_flight = self.in_flight
        delta = {
            "histograms": self._encode(buffers, pause),
            "intervals": [(second, self._encode(interval, pause)) for second, interval in finished],
            "counts": dict(counts),
            "timeline": {str(s): dict(c) for s, c in timeline.items()},
            "in_flight": in_flight,
        }
        return delta
