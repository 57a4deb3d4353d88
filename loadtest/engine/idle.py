"""Waiting until a target is idle: what makes the capacity search's steps independent of each other.

A step that follows an overloaded one inherits its queue: the earlier step's client has gone, but
the server still works through what it accepted, so the next step's first seconds measure the
last step's backlog (one search went 81 req/s holds, then 85.5 req/s p95 786 ms). Before each
step the search waits until the target is idle, by the best signal it has:

- ``metrics``: the target's Prometheus ``/metrics`` (``engine.server_metrics``) shows nothing in
  flight and nothing queued, twice in a row;
- ``probe``: else one light request of the scenario, whose latency is back within
  ``PROBE_TOLERANCE`` of its idle level (measured once, before any load), twice in a row.

Where the server's cores are known (an embedded server's profile pins them), the wait also asks
that they be free of other work: with the server idle, whatever keeps them busy is someone
else's, and a step measured beside it measures the sharing. On a shared 2-core machine, three
back-to-back searches gave 60, 54 and 83 req/s; the steps of the low two ran with other
processes taking 45-67% of the server's core, those of the third with 1%.

The wait is bounded (``max_wait_s``); a target that is not idle by then is measured anyway, and
the wait says so, for the step's record.
"""

from __future__ import annotations

import statistics
import time
from collections import deque
from dataclasses import asdict, dataclass

import httpx
import psutil

from loadtest.engine.server_metrics import IN_FLIGHT, QUEUE_ROWS, metrics_url, read_metrics, total
from loadtest.errors import MetricsUnavailable, PreflightError

POLL_S = 0.1
SETTLED_READINGS = 2  # idle readings in a row that make the target idle
BASELINE_PROBES = 5
PROBE_TOLERANCE = (2.0, 2.0)  # idle: probe latency within 2x its idle level plus 2 ms
PROBE_TIMEOUT_S = 5.0
OTHER_WORK_LIMIT = 0.2  # quiet cores: under this share of them busy, over the last CORE_WINDOW polls
CORE_WINDOW = 3
METRICS, PROBE = "metrics", "probe"


@dataclass(frozen=True)
class IdleWait:
    """One wait for the target to be idle: how long it took, whether it got there, and by what signal."""

    waited_s: float
    idle: bool
    signal: str  # metrics | probe
    last: str  # the last reading, in words: "in flight 0, queued 0" or "probe 9.8 ms (idle 4.1 ms)"
    other_work: float | None = (
        None  # the share of the server's cores busy with other work, at the end; None: not watched
    )

    @property
    def quiet(self) -> bool | None:
        return None if self.other_work is None else self.other_work < OTHER_WORK_LIMIT

    def as_dict(self) -> dict:
        other = None if self.other_work is None else round(self.other_work, 3)
        return {**asdict(self), "waited_s": round(self.waited_s, 3), "other_work": other, "quiet": self.quiet}


class CoreWatch:
    """How busy some cores are over the last few polls (psutil's per-core figures), for a server that is idle."""

    def __init__(self, cores: list[int]) -> None:
        self.cores = cores
        self.readings: deque[float] = deque(maxlen=CORE_WINDOW)

    def restart(self) -> None:
        self.readings.clear()
        psutil.cpu_percent(percpu=True)  # the next reading covers the time from here

    def read(self) -> float | None:
        """The mean share of the cores busy since the last poll, over the window; None until the window is full."""
        busy = psutil.cpu_percent(percpu=True)
        self.readings.append(statistics.fmean(busy[c] for c in self.cores if c < len(busy)) / 100)
        return statistics.fmean(self.readings) if len(self.readings) == self.readings.maxlen else None


@dataclass(frozen=True)
class ProbeRequest:
    """The light request the probe signal sends: one of the scenario's own, on its protocol's path."""

    path: str
    body: bytes


class IdleWatch:
    """Tells when a target is idle, by its ``/metrics`` where it exposes the queue figures, else by a probe."""

    def __init__(self, url: str, probe: ProbeRequest, max_wait_s: float = 30.0, cores: list[int] | None = None) -> None:
        self.url, self.probe, self.max_wait_s = url, probe, max_wait_s
        self.cores = CoreWatch(cores) if cores else None
        self.signal = METRICS if self._metrics() is not None else PROBE
        self.baseline_ms: float | None = None
        if self.signal == PROBE:
            try:
                self._probe_ms()  # the first request of a fresh server pays for its warm-up
                self.baseline_ms = statistics.median(self._probe_ms() for _ in range(BASELINE_PROBES))
            except httpx.HTTPError as exc:
                raise PreflightError(f"cannot reach {url}{probe.path} to measure its idle latency: {exc}") from None

    @property
    def criterion(self) -> str:
        """What idle means here, for the rule a capacity is found by."""
        if self.signal == METRICS:
            text = "in flight 0 and queued 0 on its /metrics"
        else:
            factor, plus = PROBE_TOLERANCE
            text = f"a probe request's latency within {factor:g}x its idle {self.baseline_ms:.1f} ms + {plus:g} ms"
        if self.cores is not None:
            text += f", its cores {self.cores.cores} under {OTHER_WORK_LIMIT:.0%} busy with other work"
        return f"{text}, waiting {self.max_wait_s:g} s at most"

    def wait(self) -> IdleWait:
        """Poll until the target reads idle ``SETTLED_READINGS`` times in a row and its cores are quiet, or
        ``max_wait_s`` passes."""
        started = time.monotonic()
        settled, other = 0, None
        if self.cores is not None:
            self.cores.restart()
        while True:
            time.sleep(POLL_S)
            idle, last = self._reading()
            settled = settled + 1 if idle else 0
            if self.cores is not None:
                other = self.cores.read()
            quiet = self.cores is None or (other is not None and other < OTHER_WORK_LIMIT)
            waited = time.monotonic() - started
            if (settled >= SETTLED_READINGS and quiet) or waited >= self.max_wait_s:
                if self.cores is not None and other is not None:
                    last += f", cores {self.cores.cores} {other:.0%} busy with other work"
                return IdleWait(waited, settled >= SETTLED_READINGS, self.signal, last, other)

    def _reading(self) -> tuple[bool, str]:
        if self.signal == METRICS:
            figures = self._metrics()
            if figures is None:
                return False, "/metrics did not answer"
            in_flight, queued = figures
            return in_flight == 0 and queued == 0, f"in flight {in_flight:g}, queued {queued:g}"
        try:
            latency = self._probe_ms()
        except httpx.HTTPError as exc:
            return False, f"probe failed: {type(exc).__name__}"
        factor, plus = PROBE_TOLERANCE
        return latency <= self.baseline_ms * factor + plus, f"probe {latency:.1f} ms (idle {self.baseline_ms:.1f} ms)"

    def _metrics(self) -> tuple[float, float] | None:
        """(in flight, queued) from ``/metrics``; None where it is not served or has neither figure."""
        try:
            samples = read_metrics(metrics_url(self.url))
        except MetricsUnavailable:
            return None
        in_flight, queued = total(samples, IN_FLIGHT), total(samples, QUEUE_ROWS)
        if in_flight is None and queued is None:
            return None
        return in_flight or 0.0, queued or 0.0

    def _probe_ms(self) -> float:
        started = time.perf_counter()
        with httpx.Client(base_url=self.url, timeout=min(PROBE_TIMEOUT_S, self.max_wait_s)) as client:
            client.post(self.probe.path, content=self.probe.body, headers={"content-type": "application/json"})
        return (time.perf_counter() - started) * 1000
