"""Record every request of one load-generator process in HDR histograms, and hand out deltas.

Pure bookkeeping: the caller passes times in (seconds on one monotonic clock), so this module can
be tested without a network. What it records, per request class and for all classes together:

- ``response``: from the intended send time to the last byte (what a user of an open system saw);
- ``service``: from the actual send to the last byte (what a closed-loop tool would report);
- ``server_queue``, ``server_compute`` and ``overhead`` (service minus both), from Server-Timing;
- ``lateness``: actual send minus intended send, the load generator's own fidelity;
- for generative answers (``streamed``): ``ttft``, ``itl`` (every gap between content chunks),
  ``tpot`` and ``e2e`` (``traffic.token_latency``), and each request's output tokens per second
  (``output_tokens_per_s``, recorded in thousandths so three significant digits survive), with the
  tokens counted by class: output and input, how they were counted, goodput's met requests, and
  what streams that failed half-way delivered before they did.

Each value is recorded once, under its class; the collector adds the classes up into "all".
Histograms are HdrHistogram's: 3 significant digits, 1 µs to one hour. A value out of range is
clamped to the range and counted, never dropped (``record_value`` would silently return False).

Every arrival ends in exactly one bucket, counted by the second of its intended time: ``ok``,
``error`` (by kind), ``timeout`` or ``dropped``. Requests whose intended time falls in the warm-up
are sent and shown in the timeline, but kept out of the histograms and the accounting.

``take_delta`` returns what changed since the last call, encoded so it can cross Locust's
worker-to-master messages; ``Collector`` adds deltas up.

The calls made per request (``scheduled``, ``sent`` or ``sent_closed``, ``completed``) only append
a tuple to a list. Once a second, ``take_delta`` turns the tuples into numpy columns, a slice at a
time with a pause between slices (the Python part), then does the arithmetic, the counting and
the histograms on whole columns (the numpy part). That keeps recording to a few per cent of
what a request costs the load generator (``benchmarks/generator.py`` measures it).
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping
from operator import itemgetter

import numpy as np
from hdrh.histogram import HdrHistogram

from loadtest.results.hdr_bulk import record_many, reset
from loadtest.results.summary import transport_error
from loadtest.traffic.sse import Stream
from loadtest.traffic.token_latency import meets, token_latency

LOWEST_US = 1
HIGHEST_US = 3_600_000_000  # one hour
DIGITS = 3
METRICS = ("response", "service", "server_queue", "server_compute", "overhead", "lateness")
TOKEN_METRICS = ("ttft", "itl", "tpot", "e2e")  # generative answers, in the summary's latency_ms beside METRICS
TOKEN_RATE = "output_tokens_per_s"  # per request, recorded x1000: its "milliseconds" read as tokens a second
# Per second as well (the timeline and the interval logs): what a user saw, what the server took, how late
# the generator sent (the trust verdict's evidence) and how long requests queued in the server (saturation's).
INTERVAL_METRICS = ("response", "service", "lateness", "server_queue")
OK = ""  # the ``kind`` of a request that succeeded
TIMEOUT = "timeout"  # the ``kind`` of a request that timed out; any other kind is an error
CHUNK = 128  # requests absorbed between two pauses: a fraction of a millisecond of the event loop
# Streamed answers absorbed between two pauses: each is about 20 us of Python (its ~100 gaps), so 128 held the
# event loop 2.5 to 3 ms, long enough to delay the reads of the streams still arriving (benchmarks/stream_followers.py).
STREAM_CHUNK = 16


def new_histogram() -> HdrHistogram:
    return HdrHistogram(LOWEST_US, HIGHEST_US, DIGITS)


def _micros(seconds: np.ndarray) -> np.ndarray:
    """Whole microseconds, clamped into the histograms' range (record_value drops what is outside)."""
    return np.clip((seconds * 1_000_000).astype(np.int64), 0, HIGHEST_US)


_QUEUE = re.compile(r"\bqueue;dur=([0-9.]+)")
_INFER = re.compile(r"\binfer;dur=([0-9.]+)")
# In the headers of a second joined by newlines: the first duration on each line, and the rest of it.
_QUEUE_LINES = re.compile(r"\bqueue;dur=([0-9.]+)[^\n]*")
_INFER_LINES = re.compile(r"\binfer;dur=([0-9.]+)[^\n]*")
_BOTH_LINES = re.compile(r"\bqueue;dur=([0-9.]+)[^\n]*?\binfer;dur=([0-9.]+)[^\n]*")  # the usual order, one scan


def parse_server_timing(header: str | None) -> tuple[float, float] | None:
    """(queue, compute) in seconds from ``queue;dur=1.2, infer;dur=8.4, ...`` (durations in ms)."""
    if not header:
        return None
    queue, compute = _QUEUE.search(header), _INFER.search(header)
    if queue is None or compute is None:
        return None
    try:
        return float(queue[1]) / 1000, float(compute[1]) / 1000
    except ValueError:  # "1.2.3"
        return None


def server_timings(headers: list[str | None]) -> tuple[np.ndarray, np.ndarray]:
    """``parse_server_timing`` over many headers: (queue, compute) arrays in seconds, NaN where absent.

    The fast paths scan all the headers joined: once when every header has queue before infer (as
    the reference server sends them), else once per component when every header has both; otherwise
    the headers are parsed one by one.
    """
    # HTTP header values hold no newlines; a missing header ("None") matches nothing, which the counts catch.
    joined = "\n".join(map(str, headers))
    try:
        both = _BOTH_LINES.findall(joined)
        if len(both) == len(headers):
            pairs = np.array(both, dtype=np.float64).reshape(-1, 2) / 1000
            return pairs[:, 0].copy(), pairs[:, 1].copy()
        queue, compute = _QUEUE_LINES.findall(joined), _INFER_LINES.findall(joined)
        if len(queue) == len(compute) == len(headers):
            return np.array(queue, dtype=np.float64) / 1000, np.array(compute, dtype=np.float64) / 1000
    except ValueError:  # a malformed number somewhere, such as 1.2.3
        pass
    parsed = [parse_server_timing(header) or (np.nan, np.nan) for header in headers]
    return np.array([p[0] for p in parsed], dtype=np.float64), np.array([p[1] for p in parsed], dtype=np.float64)


def _floats(rows: list[tuple], at: int) -> np.ndarray:
    return np.fromiter(map(itemgetter(at), rows), np.float64, len(rows))


class _Codes(dict):
    """Class name -> small integer, assigned on first sight; ``names`` maps back."""

    def __init__(self) -> None:
        super().__init__()
        self.names: list[str] = []

    def __missing__(self, name: str) -> int:
        self[name] = code = len(self.names)
        self.names.append(name)
        return code


class Recorder:
    def __init__(
        self,
        start: float,
        warmup: float = 0.0,
        goodput_ms: Mapping[str, float] | None = None,
        count_tokens: Callable[[list[str]], list[int]] | None = None,
    ) -> None:
        self.start = start
        self.warmup = warmup
        self.goodput_ms = dict(goodput_ms or {})  # goodput's per-request bounds: figure -> ms
        self.count_tokens = count_tokens  # the scenario's tokenizer, for answers without the server's usage
        # (class, intended, ended, stream, ok, output tokens asked for, prompt tokens by the tokenizer)
        self._streams: list[tuple[str, float, float, Stream, bool, int, int | None]] = []
        self._tokens: defaultdict[str, Counter[str]] = defaultdict(Counter)  # class -> token count -> n
        # Per request: one tuple appended to one of these (see the module's docstring).
        self._scheduled: list[tuple[str, float]] = []
        self._dropped: list[tuple[str, float]] = []
        self._sent: list[tuple[str, float, float]] = []
        self._closed: list[tuple[str, float]] = []
        self._unsent: list[tuple[str, float, float]] = []
        self._completed: list[tuple[str, float, float, float, str, str | None]] = []
        self._judged: list[tuple[str, float, str]] = []  # messy requests: (class, intended, verdict key)
        # Once a second: microseconds by (metric, class), and by second for the interval logs.
        self._delta: defaultdict[tuple[str, str], list[np.ndarray]] = defaultdict(list)
        self._intervals: defaultdict[int, defaultdict[tuple[str, str], list[np.ndarray]]] = defaultdict(
            lambda: defaultdict(list)
        )
        self._codes = _Codes()
        self._scratch = new_histogram()
        self._counts: defaultdict[str, Counter[str]] = defaultdict(Counter)  # class -> outcome -> count
        self._verdicts: defaultdict[str, Counter[str]] = defaultdict(Counter)  # messy class -> verdict key -> count
        self._clamped = 0
        self._timeline: defaultdict[int, Counter[str]] = defaultdict(Counter)
        self.in_flight = 0

    # -- per request: append only ------------------------------------------------------------------

    def scheduled(self, cls: str, intended: float) -> None:
        self._scheduled.append((cls, intended))

    def dropped(self, cls: str, intended: float) -> None:
        self._dropped.append((cls, intended))

    def sent(self, cls: str, intended: float, actual: float) -> None:
        self.in_flight += 1
        self._sent.append((cls, intended, actual))

    def sent_closed(self, cls: str, at: float) -> None:
        """Closed load: scheduled and sent at once (the intended time is the send time), in one append."""
        self.in_flight += 1
        self._closed.append((cls, at))

    def unsent(self, cls: str, intended: float, done: float) -> None:
        """An arrival that waited for a connection longer than the timeout: a timeout, never sent."""
        self._unsent.append((cls, intended, done))

    def completed(
        self, cls: str, intended: float, actual: float, done: float, kind: str = OK, server_timing: str | None = None
    ) -> None:
        """``kind`` is OK, TIMEOUT or an error's kind; ``server_timing`` is the raw header of a success."""
        self.in_flight -= 1
        self._completed.append((cls, intended, actual, done, kind, server_timing))

    def streamed(
        self,
        cls: str,
        intended: float,
        ended: float,
        stream: Stream,
        ok: bool,
        asked: int = 0,
        prompt_tokens: int | None = None,
    ) -> None:
        """A generative answer's tokens and their times, beside its ``completed``; ``ok`` as its kind is OK;
        ``asked``: the output tokens the request asked for (its ``max_tokens``; 0 if unknown); ``prompt_tokens``:
        its prompt as the scenario's tokenizer counted it, for a server that sends no usage."""
        self._streams.append((cls, intended, ended, stream, ok, asked, prompt_tokens))

    def judged(self, cls: str, intended: float, key: str) -> None:
        """A messy request's verdict, ``verdict:expect:answer`` (say ``correct:reject:http_400``), counted by class."""
        self._judged.append((cls, intended, key))

    # -- once a second -------------------------------------------------------------------------------

    def _seconds(self, times: np.ndarray) -> np.ndarray:
        return np.maximum(0, (times - self.start).astype(np.int64))

    def _tally(self, seconds: np.ndarray, event: str) -> None:
        for second, count in zip(*np.unique(seconds, return_counts=True), strict=True):
            self._timeline[int(second)][event] += int(count)

    def _classes(self, rows: list[tuple]) -> np.ndarray:
        """Column 0 (the class) as small integer codes: cheaper than numpy strings to build and compare."""
        return np.fromiter(map(self._codes.__getitem__, map(itemgetter(0), rows)), np.int64, len(rows))

    def _count(self, outcome: str, classes: np.ndarray) -> None:
        for code, count in enumerate(np.bincount(classes).tolist()):
            if count:
                self._counts[self._codes.names[code]][outcome] += count

    def _interval(
        self, metric: str, seconds: np.ndarray, mask: np.ndarray, classes: np.ndarray, values: np.ndarray
    ) -> None:
        """Add the masked values to their second's histogram of ``metric``, per class."""
        for second in np.unique(seconds[mask]).tolist():
            in_second = mask & (seconds == second)
            for code in np.unique(classes[in_second]).tolist():
                pick = in_second & (classes == code)
                self._intervals[second][(metric, self._codes.names[code])].append(_micros(values[pick]))

    def _record(self, metric: str, classes: np.ndarray, seconds: np.ndarray) -> None:
        values = _micros(seconds)
        clamped = int(np.count_nonzero(values == HIGHEST_US))
        self._clamped += clamped
        for code in np.unique(classes).tolist():
            self._delta[(metric, self._codes.names[code])].append(values[classes == code])

    def _extract(self, kind: str, rows: list[tuple]) -> dict:
        """The Python part of the bookkeeping: one slice of tuples into numpy columns."""
        columns: dict = {"cls": self._classes(rows), "intended": _floats(rows, 1)}
        if kind == "sent":
            columns["actual"] = _floats(rows, 2)
        elif kind == "unsent":
            columns["done"] = _floats(rows, 2)
        elif kind == "completed":
            columns["actual"], columns["done"] = _floats(rows, 2), _floats(rows, 3)
            ok = columns["ok"] = np.fromiter(map(OK.__eq__, map(itemgetter(4), rows)), bool, len(rows))
            headers = list(map(itemgetter(5), rows))
            if ok.all():
                columns["queue"], columns["compute"] = server_timings(headers)
            else:
                columns["queue"], columns["compute"] = np.full(len(rows), np.nan), np.full(len(rows), np.nan)
                good = np.flatnonzero(ok)
                columns["queue"][good], columns["compute"][good] = server_timings([headers[i] for i in good])
            columns["failures"] = [(i, rows[i][0], rows[i][4]) for i in np.flatnonzero(~ok).tolist()]
        return columns

    @staticmethod
    def _join(parts: list[dict]) -> dict:
        joined = {k: np.concatenate([p[k] for p in parts]) for k in parts[0] if k != "failures"}
        if "failures" in parts[0]:
            offsets = np.cumsum([0] + [len(p["cls"]) for p in parts[:-1]]).tolist()
            joined["failures"] = [
                (i + o, c, k) for p, o in zip(parts, offsets, strict=True) for i, c, k in p["failures"]
            ]
        return joined

    def _absorb_arrivals(self, event: str, c: dict) -> None:
        self._tally(self._seconds(c["intended"]), event)
        self._count(event, c["cls"][c["intended"] - self.start >= self.warmup])

    def _absorb_closed(self, c: dict) -> None:
        seconds = self._seconds(c["intended"])
        self._tally(seconds, "scheduled")
        self._tally(seconds, "sent")
        self._count("scheduled", c["cls"][c["intended"] - self.start >= self.warmup])

    def _absorb_sent(self, c: dict) -> None:
        intended, actual = c["intended"], c["actual"]
        self._tally(self._seconds(actual), "sent")
        late = intended != actual  # closed load is on time by definition
        self._interval("lateness", self._seconds(actual), late, c["cls"], actual - intended)
        late &= intended - self.start >= self.warmup
        if late.any():
            self._record("lateness", c["cls"][late], (actual - intended)[late])

    def _absorb_unsent(self, c: dict) -> None:
        self._tally(self._seconds(c["done"]), "timeout")
        self._count("timeout", c["cls"][c["intended"] - self.start >= self.warmup])

    def _absorb_completed(self, c: dict) -> None:
        classes, intended, actual, done, ok = c["cls"], c["intended"], c["actual"], c["done"], c["ok"]
        seconds = self._seconds(done)
        measured = intended - self.start >= self.warmup
        response, service = done - intended, done - actual
        self._tally(seconds[ok], "ok")
        self._tally(seconds[~measured], "warmup")
        self._count("ok", classes[ok & measured])
        for at, cls, kind in c["failures"]:  # rare: counted one by one
            outcome = "timeout" if kind == TIMEOUT else "error"
            self._timeline[int(seconds[at])][outcome] += 1
            if outcome == "error" and transport_error(kind):  # no answer at all: the run's failure rule reads these
                self._timeline[int(seconds[at])]["transport"] += 1
            if measured[at]:
                self._counts[cls][outcome if kind == TIMEOUT else "error:" + kind] += 1
        # Interval logs: every success, warm-up included, by the second it completed in.
        self._interval("response", seconds, ok, classes, response)
        self._interval("service", seconds, ok, classes, service)
        self._interval("server_queue", seconds, ok & ~np.isnan(c["queue"]), classes, c["queue"])
        good = ok & measured
        if not good.any():
            return
        self._record("response", classes[good], response[good])
        self._record("service", classes[good], service[good])
        timed = good & ~np.isnan(c["queue"])
        if timed.any():
            queue, compute = c["queue"][timed], c["compute"][timed]
            self._record("server_queue", classes[timed], queue)
            self._record("server_compute", classes[timed], compute)
            self._record("overhead", classes[timed], np.maximum(0.0, service[timed] - queue - compute))

    def _encode(
        self, buffers: dict[tuple[str, str], list[np.ndarray]], pause: Callable[[], None]
    ) -> dict[str, dict[str, bytes]]:
        """Encoded histograms by metric, then class."""
        encoded: dict[str, dict[str, bytes]] = {}
        for (metric, cls), parts in buffers.items():
            values = np.concatenate(parts) if parts else np.empty(0, dtype=np.int64)
            if len(values):
                record_many(self._scratch, values)
                encoded.setdefault(metric, {})[cls] = self._scratch.encode()
                reset(self._scratch)
                pause()
        return encoded

    def take_delta(self, now: float, final: bool = False, pause: Callable[[], None] = lambda: None) -> dict:
        """Everything recorded since the last call, as plain data (str keys, bytes, ints).

        Histograms are keyed by metric, then class; counts by class, then outcome (``scheduled``,
        ``ok``, ``timeout``, ``dropped``, ``error:<kind>``); messy verdicts by class, then
        ``verdict:expect:answer``.

        Interval logs are handed out for each whole second before ``now`` (every second, if
        ``final``). ``pause`` is called between slices of ``CHUNK`` requests and between
        histograms: the Locust glue yields to other greenlets there, so the second's bookkeeping
        never holds the load generator's event loop for long (the open-load scheduler must send on
        time meanwhile); requests that complete during a pause go into fresh lists, for the next call.
        """
        taken = self._take_rows()
        self._count_judged()
        self._absorb_streams(pause)
        for kind, rows in taken.items():
            if rows:
                self._absorb(kind, rows, pause)
        return self._hand_out(now, final, pause)

    def _take_rows(self) -> dict[str, list[tuple]]:
        """The per-request lists so far, by kind; fresh lists take what completes from now on."""
        taken = {
            "scheduled": self._scheduled,
            "dropped": self._dropped,
            "sent": self._sent,
            "closed": self._closed,
            "unsent": self._unsent,
            "completed": self._completed,
        }
        self._scheduled, self._dropped, self._sent, self._closed = [], [], [], []
        self._unsent, self._completed = [], []
        return taken

    def _absorb_streams(self, pause: Callable[[], None]) -> None:
        """Token figures of the generative answers so far: tens to hundreds a second, taken one by one."""
        streams, self._streams = self._streams, []
        counted = self._count_without_usage(streams)
        values: defaultdict[tuple[str, str], list] = defaultdict(list)  # (metric, class) -> seconds
        for at, (cls, intended, ended, stream, ok, asked, prompt_tokens) in enumerate(streams):
            if at % STREAM_CHUNK == STREAM_CHUNK - 1:
                pause()
            if intended - self.start < self.warmup:
                continue
            tokens = self._tokens[cls]
            if not ok:  # failed half-way: what it delivered is counted apart, never as output served
                tokens["failed_streams"] += 1
                tokens["failed_output_tokens"] += stream.output_tokens
                tokens["failed_asked_tokens"] += asked
                continue
            tokens["asked_tokens"] += asked
            latency = token_latency(stream, intended, ended)
            tokens["output_tokens"] += latency.output_tokens
            inputs = stream.prompt_tokens if stream.prompt_tokens is not None else prompt_tokens
            tokens["input_tokens"] += inputs or 0
            if id(stream) in counted:
                tokens["by_tokenizer"] += 1
            else:
                tokens["by_usage" if stream.completion_tokens is not None else "by_chunks"] += 1
            tokens["no_input_count"] += inputs is None
            if self.goodput_ms:
                tokens["goodput_met"] += meets(latency, self.goodput_ms)
            values[("e2e", cls)].append(latency.e2e_ms / 1000)
            if latency.ttft_ms is not None:
                values[("ttft", cls)].append(latency.ttft_ms / 1000)
            if latency.tpot_ms is not None:
                values[("tpot", cls)].append(latency.tpot_ms / 1000)
            if latency.tokens_per_s is not None:
                values[(TOKEN_RATE, cls)].append(latency.tokens_per_s / 1000)  # x1000 once in microseconds
            if latency.itl_ms:
                values[("itl", cls)].append(np.asarray(latency.itl_ms) / 1000)
        for key, seconds in values.items():
            # itl holds one array of gaps a stream; the other figures one float a stream
            micros = _micros(np.concatenate(seconds) if key[0] == "itl" else np.asarray(seconds, dtype=np.float64))
            self._clamped += int(np.count_nonzero(micros == HIGHEST_US))
            self._delta[key].append(micros)

    def _count_without_usage(self, streams: list[tuple]) -> set[int]:
        """Completed answers without the server's usage, counted by the scenario's tokenizer in one batch.

        Their ``completion_tokens`` is set from the count; returns the ids of the streams counted so.
        """
        if self.count_tokens is None:
            return set()
        lacking = [
            s[3] for s in streams if s[4] and s[3].completion_tokens is None and s[1] - self.start >= self.warmup
        ]
        if not lacking:
            return set()
        for stream, count in zip(lacking, self.count_tokens([s.content for s in lacking]), strict=True):
            stream.completion_tokens = count
        return {id(s) for s in lacking}

    def _count_judged(self) -> None:
        judged, self._judged = self._judged, []
        for cls, intended, key in judged:  # a few per cent of the traffic at most: one by one
            if intended - self.start >= self.warmup:
                self._verdicts[cls][key] += 1

    def _absorb(self, kind: str, rows: list[tuple], pause: Callable[[], None]) -> None:
        """Tuples to columns in slices, pausing between them; then the numpy work once, on whole columns."""
        parts = []
        for first in range(0, len(rows), CHUNK):
            parts.append(self._extract(kind, rows[first : first + CHUNK]))
            pause()
        columns = self._join(parts)
        if kind in ("scheduled", "dropped"):
            self._absorb_arrivals(kind, columns)
        else:
            absorb = {
                "sent": self._absorb_sent,
                "closed": self._absorb_closed,
                "unsent": self._absorb_unsent,
                "completed": self._absorb_completed,
            }
            absorb[kind](columns)

    def _hand_out(self, now: float, final: bool, pause: Callable[[], None]) -> dict:
        """The delta itself: the histograms and finished seconds encoded, the counts handed over and reset."""
        current = int(now - self.start)
        closed = sorted(s for s in self._intervals if final or s < current)
        finished = [(second, self._intervals.pop(second)) for second in closed]
        buffers, self._delta = self._delta, defaultdict(list)
        counts, self._counts = self._counts, defaultdict(Counter)
        verdicts, self._verdicts = self._verdicts, defaultdict(Counter)
        clamped, self._clamped = self._clamped, 0
        timeline, self._timeline = self._timeline, defaultdict(Counter)
        tokens, self._tokens = self._tokens, defaultdict(Counter)
        in_flight = self.in_flight
        return {
            "tokens": {cls: dict(c) for cls, c in tokens.items()},
            "histograms": self._encode(buffers, pause),
            "intervals": [(second, self._encode(interval, pause)) for second, interval in finished],
            "counts": {cls: dict(c) for cls, c in counts.items()},
            "verdicts": {cls: dict(c) for cls, c in verdicts.items()},
            "clamped": clamped,
            "timeline": {str(s): dict(c) for s, c in timeline.items()},
            "in_flight": in_flight,
        }
