"""The replay schedule: a capture turned into intended send times and request bodies, streamed.

Pure, and the same in every process: the scan before a run, each Locust worker and the tests
walk the capture through ``schedule`` and get the same sequence, so a worker keeps every W-th
arrival and the global order of intended times holds across workers (as ``arrivals.partition``
does for synthetic shapes).

Steps, each streaming:
1. ``capture.read_capture`` yields requests and unreadable lines;
2. ``ordered`` restores time order within a bounded reorder window; a request that arrives later
   than the window allows is skipped, with its line number (memory is bounded by the window);
3. ``schedule`` measures each request from the capture's first one, keeps those inside the
   window of time asked for, divides by the speed factor, caps the rate (a token bucket over
   intended times: what the cap refuses is skipped, and counted), and repeats for each loop.
"""

from __future__ import annotations

import heapq
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field, replace

import orjson

from loadtest.config.scenario import MAX_RATE_PER_PROCESS, over_the_cap
from loadtest.errors import ConfigError
from loadtest.replay.readers import BadLine, CapturedRequest, read_capture
from loadtest.replay.redact import has_secret_fields, replay_headers, strip_fields, strip_path
from loadtest.traffic.lines import MAX_LINE_BYTES
from loadtest.traffic.payloads import Payload, PayloadPool

SKIP_REASONS = {
    "malformed": "the line could not be read",
    "out_of_order": "earlier than a request already replayed, beyond the reorder window",
    "outside_window": "before the start of --window",
    "over_max_rate": "over --max-rate",
}
MAX_CLASSES = 20  # distinct request classes; past that, "other" (histograms per class are not free)
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


@dataclass(frozen=True)
class ReplaySpec:
    """What to replay and how; JSON-able, it travels in the run configuration to every process."""

    capture: str
    format: str = "auto"
    speed: float = 1.0
    loops: int = 1
    window_start: float | None = None  # seconds from the capture's first request
    window_end: float | None = None
    max_rate: float | None = None  # req/s, after the speed factor
    reorder_window: float = 5.0  # seconds of capture time
    send_secrets: bool = False
    redact: tuple[str, ...] = ()  # more header, query and body-field names to treat as secrets
    pools: tuple[tuple[str, str], ...] = ()  # (path, JSONL file): bodies for captures without them (logs)
    log_time: str = "end"
    max_line_bytes: int = MAX_LINE_BYTES  # a capture's (and a pool file's) longest line
    # Set by the scan, so that every process replays the same schedule:
    origin: float | None = None  # epoch seconds of the capture's first request
    loop_length: float = 0.0  # seconds one pass takes at this speed

    @property
    def extra(self) -> frozenset[str]:
        return frozenset(name.lower() for name in self.redact)

    @classmethod
    def from_dict(cls, data: dict) -> ReplaySpec:
        data = dict(data)
        data["redact"] = tuple(data.get("redact", ()))
        data["pools"] = tuple(tuple(p) for p in data.get("pools", ()))
        return cls(**data)


@dataclass(frozen=True)
class Skip:
    """A captured request that is not replayed, and why (a key of ``SKIP_REASONS``)."""

    reason: str
    line: int
    detail: str = ""
    loop: int = 0


@dataclass(frozen=True)
class Arrival:
    index: int  # position in the global replay order, from 0
    offset: float  # intended send time, seconds from the start of the replay
    request: CapturedRequest
    loop: int = 0


def ordered(items: Iterator[CapturedRequest | BadLine], window: float) -> Iterator[CapturedRequest | Skip]:
    """Requests in time order (ties by line), holding at most ``window`` seconds of capture time."""
    heap: list[tuple[float, int, CapturedRequest]] = []
    newest = -float("inf")
    last: float | None = None
    for item in items:
        if isinstance(item, BadLine):
            yield Skip("malformed", item.line, item.reason)
            continue
        if last is not None and item.time < last:
            yield Skip("out_of_order", item.line, f"{last - item.time:.3f} s before a request already replayed")
            continue
        heapq.heappush(heap, (item.time, item.line, item))
        newest = max(newest, item.time)
        while heap and heap[0][0] <= newest - window:
            last = heap[0][0]
            yield heapq.heappop(heap)[2]
    while heap:
        yield heapq.heappop(heap)[2]


def schedule(spec: ReplaySpec) -> Iterator[Arrival | Skip]:
    """Every arrival of the replay, in order of intended time, and every skipped request."""
    origin = spec.origin
    index = 0
    tokens, last_offset = 0.0, 0.0
    burst = max(1.0, (spec.max_rate or 0) / 10)  # a tenth of a second of the cap
    start = spec.window_start or 0.0
    for loop in range(spec.loops):
        captured = read_capture(spec.capture, spec.format, spec.log_time, spec.max_line_bytes)
        items = ordered(captured, spec.reorder_window)
        for item in items:
            if isinstance(item, Skip):
                yield replace(item, loop=loop)
                continue
            if origin is None:
                origin = item.time
            rel = item.time - origin
            if rel < start:
                yield Skip("outside_window", item.line, loop=loop)
                continue
            if spec.window_end is not None and rel >= spec.window_end:
                break  # in time order from here on: nothing later is inside the window
            offset = (rel - start) / spec.speed + loop * spec.loop_length
            if spec.max_rate:
                tokens = min(burst, tokens + (offset - last_offset) * spec.max_rate) if index or loop else burst
                last_offset = offset
                if tokens < 1.0:
                    yield Skip("over_max_rate", item.line, loop=loop)
                    continue
                tokens -= 1.0
            yield Arrival(index, offset, item, loop)
            index += 1


def check_replay_load(intended_per_second: list[int], processes: int, capture: str) -> None:
    """Refuse a replay whose busiest second asks a load-generator process for more than the per-process cap.

    The same cap as a scenario's rate (``config.scenario.check_generator_load``): a capture replayed at
    x1000 is as much a typo as a rate of 1e9.
    """
    peak = max(intended_per_second, default=0)
    need = math.ceil(peak / MAX_RATE_PER_PROCESS)
    if need > processes:
        what = f"its busiest second, {peak:,} requests at this speed,"
        cap = f"{MAX_RATE_PER_PROCESS:,.0f}/s"
        raise ConfigError(capture, None, over_the_cap(what, cap, processes, need) + " (or --max-rate, a lower --speed)")


_UNSAFE = re.compile(r"[^A-Za-z0-9_./:-]+")


@dataclass
class Requests:
    """Captured requests turned into payloads to send, with bodies from pools where none was captured."""

    spec: ReplaySpec
    default_pool: PayloadPool
    pools: dict[str, PayloadPool] = field(default_factory=dict)
    classes: dict[str, str] = field(default_factory=dict)

    def class_of(self, label: str) -> str:
        """A class name safe for histogram tags; the first ``MAX_CLASSES`` names seen, then "other"."""
        name = self.classes.get(label)
        if name is None:
            name = _UNSAFE.sub("_", label)[:64] or "other"
            if len(self.classes) >= MAX_CLASSES:
                name = "other"
            self.classes[label] = name
        return name

    def payload(self, arrival: Arrival) -> Payload:
        request, spec = arrival.request, self.spec
        path = request.path if spec.send_secrets else strip_path(request.path, spec.extra)
        headers = replay_headers(request.headers, spec.send_secrets)
        cls = request.cls
        if not request.has_body:
            body = b""
            if request.method in BODY_METHODS:
                pooled = self.pools.get(path.partition("?")[0], self.default_pool).pick(arrival.index)
                body, cls = pooled.body, cls or pooled.cls
                headers.setdefault("content-type", "application/json")
        elif not spec.send_secrets and has_secret_fields(request.doc, spec.extra):
            body = orjson.dumps(strip_fields(request.doc, spec.extra))
        else:
            body = request.encoded()
        if request.doc is not None and not request.headers:  # a capture without headers: say what the body is
            headers["content-type"] = "application/json"
        if not spec.send_secrets:
            headers = {k: v for k, v in headers.items() if k not in spec.extra}
        bare = path.partition("?")[0]  # never the query: it may hold secrets, and class names are written
        label = cls or (bare if request.method == "POST" else f"{request.method}:{bare}")
        asked = _max_tokens(request.doc)
        return Payload(self.class_of(label), body, method=request.method, path=path, headers=headers, max_tokens=asked)


def _max_tokens(doc: object) -> int:
    """A captured generative request's output length, as it asked (``max_tokens``, or chat's newer name); 0 if none."""
    if not isinstance(doc, dict):
        return 0
    value = doc.get("max_tokens", doc.get("max_completion_tokens"))
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0
