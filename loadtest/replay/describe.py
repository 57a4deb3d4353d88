"""Capture description: what a captured stream of requests looks like, measured in one pass.

``describe_capture`` reads the reader's stream (``CapturedRequest`` and ``BadLine`` items from
``readers.py``) once and keeps running figures only: counts, Welford moments and HDR histograms.
Memory does not grow with the number of requests. The one exception is the per-bucket count array
(requests per ``resolution`` seconds), which grows with the capture's time span, not its size: a day
at one-second buckets is 86,400 integers (under 1 MB), whatever the request rate. (The gaps of the
bucket being read also wait for its rate, see ``_RescaledGaps``: one bucket's worth, not the capture's.)

From the description come three things: a JSON-able record and terminal lines (``description_dict``,
``description_lines``), a traffic forecast for ``loadtest cost --forecast`` (``forecast_toml``), and a
synthetic scenario whose rate curve, burstiness and text mix match the capture (``fit_scenario``).

Definitions the figures rest on:

- Buckets start at the first request read (the capture's ``start`` when the stream is in time order,
  as the replay hands it over; an earlier request read later extends the grid backwards on the same
  boundaries) and are ``resolution`` seconds long; ``span_s`` is the number of
  buckets times ``resolution``, so a capture with exactly N requests in each of S one-second buckets
  has a span of S seconds and a mean rate of N.
- Two coefficients of variation of the inter-arrival gaps. The raw one (``cv_interarrival``) is what
  a single-rate model would have to reproduce, but a rate that changes over the capture (a daily
  cycle) makes it above 1 even for Poisson traffic, since slow and busy hours mix long and short
  gaps. ``cv_rescaled`` multiplies each gap by the local rate (its bucket's), which turns any
  time-varying Poisson process into a unit-rate one: it is the burstiness *beyond* the rate curve,
  the figure the fitted scenario's gamma arrivals need (their gaps are drawn at unit rate and
  stretched over the shape, see ``arrivals.py``).
- Gaps are taken in the order read; a gap that would be negative (small disorder) counts as zero.
"""

from __future__ import annotations

import math
import re
import tomllib
from array import array
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from functools import lru_cache

import numpy as np
import tomli_w
from hdrh.histogram import HdrHistogram

from loadtest.replay.readers import BadLine, CapturedRequest
from loadtest.units import format_bytes

FIRST_BAD = 100  # bad lines kept with their line number and reason
MAX_LABELS = 50  # distinct classes, routes and text classes kept; the rest are counted as OTHER
OTHER = "other"
UNLABELLED = "unlabelled"
SIZE_RANGE = (1, 2**40)  # bytes
TOKEN_RANGE = (1, 10**6)  # tokens per text
POISSON_CV = (0.9, 1.1)  # a rescaled CV in this range fits Poisson arrivals
BURSTINESS_RANGE = (0.05, 20.0)


@dataclass(frozen=True)
class TextLengths:
    """Estimated tokens per text (words + 2, for [CLS] and [SEP]) of one class's text bodies."""

    requests: int  # requests of this class whose body held text
    texts: int  # texts in them (a batch body holds several)
    min: int  # exact; the percentiles are HDR's (3 significant digits)
    p5: int
    p95: int
    max: int
    p50: int = 0
    p90: int = 0


@dataclass(frozen=True, eq=False)  # eq=False: ``counts`` is an array, which has no single truth value
class CaptureDescription:
    """What a capture holds, measured on its stream; rates are requests per second."""

    source: str
    resolution: float
    requests: int
    bad_lines: int
    malformed_share: float  # bad / (good + bad)
    first_bad: tuple[tuple[int, str], ...]  # (line, reason), the first FIRST_BAD
    start: float | None  # epoch seconds of the earliest request; None: no requests
    end: float | None
    span_s: float  # len(counts) * resolution
    counts: np.ndarray = field(repr=False)  # requests per bucket
    rate_mean: float
    rate_peak: float  # the busiest bucket's rate
    peak_to_mean: float
    cv_interarrival: float | None  # None: fewer than two gaps
    cv_rescaled: float | None
    sized_requests: int  # requests with a captured body, which the size figures cover
    size_mean: float
    size_p50: int
    size_p95: int
    size_p99: int
    size_max: int  # exact, as the mean; the percentiles are HDR's (3 significant digits)
    classes: dict[str, int]  # requests per class label
    routes: dict[str, int]  # requests per "METHOD path" (query left out)
    text_tokens: dict[str, TextLengths]  # per class, where bodies held inference text


# --- streaming accumulators ---------------------------------------------------------------------


@dataclass
class _Moments:
    """Running count, mean and sum of squared deviations (Welford; batches merged as Chan et al.)."""

    n: int = 0
    mean: float = 0.0
    m2: float = 0.0

    def add(self, x: float) -> None:
        self.n += 1
        delta = x - self.mean
        self.mean += delta / self.n
        self.m2 += delta * (x - self.mean)

    def add_batch(self, xs: np.ndarray) -> None:
        if not len(xs):
            return
        n, mean = len(xs), float(xs.mean())
        m2 = float(((xs - mean) ** 2).sum())
        total = self.n + n
        delta = mean - self.mean
        self.m2 += m2 + delta * delta * self.n * n / total
        self.mean += delta * n / total
        self.n = total

    @property
    def cv(self) -> float | None:
        if self.n < 2 or self.mean <= 0:
            return None
        return math.sqrt(self.m2 / self.n) / self.mean


class _Buckets:
    """Requests per bucket on a grid anchored at the first time seen; grows at either end.

    An ``array`` of int64, not numpy: one count per request is a scalar update, which numpy makes
    slow (every access builds a numpy scalar)."""

    def __init__(self, resolution: float) -> None:
        self.resolution = resolution
        self.origin: float | None = None
        self.counts = array("q", bytes(8 * 1024))
        self.first = 0  # the bucket index held at counts[0] (negative once earlier times arrive)
        self.low, self.high = 0, -1  # the lowest and highest index seen

    def add(self, t: float) -> int:
        if self.origin is None:
            self.origin = t
        index = math.floor((t - self.origin) / self.resolution)
        if not 0 <= index - self.first < len(self.counts):
            self._make_room(index)
        self.counts[index - self.first] += 1
        if index > self.high:
            self.high = index
        if index < self.low:
            self.low = index
        return index

    def count(self, index: int) -> int:
        return self.counts[index - self.first]

    def array(self) -> np.ndarray:
        if self.high < self.low:
            return np.zeros(0, dtype=np.int64)
        held = np.frombuffer(self.counts, dtype=np.int64)
        return held[self.low - self.first : self.high - self.first + 1].copy()

    def _make_room(self, index: int) -> None:
        size = len(self.counts)
        if index < self.first:
            grow = max(size, self.first - index)
            self.counts = array("q", bytes(8 * grow)) + self.counts
            self.first -= grow
        else:
            grow = max(size, index - self.first - size + 1)
            self.counts.frombytes(bytes(8 * grow))


class _RescaledGaps:
    """Gaps times the local rate. A bucket's rate is known once the stream has left it, so only the
    gaps of the current bucket wait (a bucket's worth of floats); zero gaps need no rate at all."""

    def __init__(self, buckets: _Buckets) -> None:
        self.buckets = buckets
        self.moments = _Moments()
        self.bucket: int | None = None
        self.pending = array("d")

    def add(self, gap: float, index: int) -> None:
        if gap <= 0:
            self.moments.add(0.0)
            return
        if index != self.bucket:  # a positive gap is never earlier than the bucket it follows
            self.flush()
            self.bucket = index
        self.pending.append(gap)

    def flush(self) -> None:
        if self.bucket is not None and self.pending:
            rate = self.buckets.count(self.bucket) / self.buckets.resolution
            self.moments.add_batch(np.frombuffer(self.pending, dtype=np.float64) * rate)
        self.pending = array("d")


class _Values:
    """An HDR histogram (3 significant digits) fed in batches, with the exact count, sum, min and max.

    Recording one value costs hdrh a handful of Python calls; a batch records each distinct value
    once with its count, which builds the same histogram in a fraction of the time."""

    BATCH = 4096

    def __init__(self, low: int, high: int) -> None:
        self.histogram = HdrHistogram(low, high, 3)
        self.high = high
        self.pending = array("q")
        self.count = self.total = self.max = 0
        self.min: int | None = None

    def add(self, value: int) -> None:
        self.pending.append(value)
        if len(self.pending) >= self.BATCH:
            self._flush()

    def percentile(self, q: float) -> int:
        self._flush()
        return self.histogram.get_value_at_percentile(q) if self.count else 0

    def summary(self) -> tuple[int, int, int, int]:
        """(count, sum, min, max), exact; the min of no values is 0."""
        self._flush()
        return self.count, self.total, self.min or 0, self.max

    def _flush(self) -> None:
        if not self.pending:
            return
        values = np.frombuffer(self.pending, dtype=np.int64)
        low, high = int(values.min()), int(values.max())
        self.count += len(values)
        self.total += int(values.sum())
        self.min = low if self.min is None else min(self.min, low)
        self.max = max(self.max, high)
        distinct, counts = np.unique(np.minimum(values, self.high), return_counts=True)
        for value, count in zip(distinct.tolist(), counts.tolist(), strict=True):
            self.histogram.record_value(value, count)
        self.pending = array("q")


def _count_capped(counter: dict[str, int], label: str) -> None:
    """Count ``label``, or OTHER once MAX_LABELS distinct labels are held (memory stays bounded)."""
    if label not in counter and len(counter) >= MAX_LABELS:
        label = OTHER
    counter[label] = counter.get(label, 0) + 1


@lru_cache(maxsize=4096)  # a capture holds few routes: each key is built once, not per request
def route(method: str, path: str) -> str:
    """The route a request is counted under: its method and its path without the query."""
    return f"{method.upper()} {path.split('?', 1)[0]}"


def _collect(value: object, into: list[str]) -> None:
    if isinstance(value, str):
        into.append(value)
    elif isinstance(value, list):
        for item in value:
            _collect(item, into)


def request_texts(doc: object) -> list[str]:
    """The input texts of an OIP v2 BYTES body or an OpenAI embeddings body; [] for anything else."""
    texts: list[str] = []
    if isinstance(doc, dict):
        inputs = doc.get("inputs")
        if isinstance(inputs, list):
            for tensor in inputs:
                if isinstance(tensor, dict) and tensor.get("datatype") == "BYTES":
                    _collect(tensor.get("data"), texts)
        elif "input" in doc:
            _collect(doc["input"], texts)
    return texts


def tokens(text: str) -> int:
    """Estimated WordPiece tokens: one per word, plus [CLS] and [SEP] (the inverse of generate_text)."""
    return len(text.split()) + 2


class _TextLengths:
    """Tokens per text for each class, for at most MAX_LABELS classes."""

    def __init__(self) -> None:
        self.values: dict[str, _Values] = {}
        self.requests: dict[str, int] = {}

    def add(self, label: str, texts: list[str]) -> None:
        if label not in self.values and len(self.values) >= MAX_LABELS:
            label = OTHER
        if label not in self.values:
            self.values[label] = _Values(*TOKEN_RANGE)
        values = self.values[label]
        for text in texts:
            values.add(tokens(text))
        self.requests[label] = self.requests.get(label, 0) + 1

    def result(self) -> dict[str, TextLengths]:
        lengths = {}
        for label, values in self.values.items():
            count, _, low, high = values.summary()
            lengths[label] = TextLengths(
                self.requests[label],
                count,
                low,
                values.percentile(5),
                values.percentile(95),
                high,
                values.percentile(50),
                values.percentile(90),
            )
        return lengths


# --- the description ----------------------------------------------------------------------------


class _Timing:
    """When requests came: buckets, first and last time, raw and rescaled gap moments."""

    def __init__(self, resolution: float) -> None:
        self.buckets = _Buckets(resolution)
        self.raw = _Moments()
        self.rescaled = _RescaledGaps(self.buckets)
        self.start: float | None = None
        self.end: float | None = None  # the latest time so far: gaps are measured from it

    def add(self, t: float) -> None:
        index = self.buckets.add(t)
        if self.end is None:
            self.start = self.end = t
            return
        gap = t - self.end if t > self.end else 0.0
        self.raw.add(gap)
        self.rescaled.add(gap, index)
        if t > self.end:
            self.end = t
        elif t < self.start:
            self.start = t

    def fields(self, requests: int) -> dict:
        self.rescaled.flush()
        counts = self.buckets.array()
        span = len(counts) * self.buckets.resolution
        mean = requests / span if span else 0.0
        peak = int(counts.max()) / self.buckets.resolution if len(counts) else 0.0
        return {
            "start": self.start,
            "end": self.end,
            "span_s": span,
            "counts": counts,
            "rate_mean": mean,
            "rate_peak": peak,
            "peak_to_mean": peak / mean if mean else 0.0,
            "cv_interarrival": self.raw.cv,
            "cv_rescaled": self.rescaled.moments.cv,
        }


class _Content:
    """What requests held: body sizes, class and route mix, text lengths per class."""

    def __init__(self) -> None:
        self.sizes = _Values(*SIZE_RANGE)
        self.classes: dict[str, int] = {}
        self.routes: dict[str, int] = {}
        self.texts = _TextLengths()

    def add(self, request: CapturedRequest) -> None:
        if request.body is not None or request.size:
            self.sizes.add(request.size)
        label = request.cls if request.cls is not None else UNLABELLED
        _count_capped(self.classes, label)
        _count_capped(self.routes, route(request.method, request.path))
        found = request_texts(request.doc)
        if found:
            self.texts.add(label, found)

    def fields(self) -> dict:
        sized, total, _, largest = self.sizes.summary()
        return {
            "sized_requests": sized,
            "size_mean": total / sized if sized else 0.0,
            "size_p50": self.sizes.percentile(50),
            "size_p95": self.sizes.percentile(95),
            "size_p99": self.sizes.percentile(99),
            "size_max": largest,
            "classes": self.classes,
            "routes": self.routes,
            "text_tokens": self.texts.result(),
        }


def describe_capture(
    items: Iterable[CapturedRequest | BadLine], resolution: float = 1.0, *, source: str = ""
) -> CaptureDescription:
    """Describe a capture's stream in one pass; ``source`` names the capture in what is written from it."""
    if not resolution > 0:
        raise ValueError(f"resolution must be above 0 seconds, got {resolution}")
    timing, content = _Timing(resolution), _Content()
    bad: list[tuple[int, str]] = []
    bad_count = good = 0
    for item in items:
        if isinstance(item, BadLine):
            bad_count += 1
            if len(bad) < FIRST_BAD:
                bad.append((item.line, item.reason))
            continue
        good += 1
        timing.add(item.time)
        content.add(item)
    return CaptureDescription(
        source=source,
        resolution=resolution,
        requests=good,
        bad_lines=bad_count,
        malformed_share=bad_count / (good + bad_count) if good + bad_count else 0.0,
        first_bad=tuple(bad),
        **timing.fields(good),
        **content.fields(),
    )


def description_dict(description: CaptureDescription) -> dict:
    """The description as JSON-able data (``capture-profile.json``, the report); counts as a list."""
    p = description
    return {
        "source": p.source,
        "requests": p.requests,
        "bad_lines": p.bad_lines,
        "malformed_share": p.malformed_share,
        "first_bad": [{"line": line, "reason": reason} for line, reason in p.first_bad],
        "time": {"start": p.start, "end": p.end, "span_s": p.span_s, "resolution_s": p.resolution},
        "rate": {
            "mean_rps": p.rate_mean,
            "peak_rps": p.rate_peak,
            "peak_to_mean": p.peak_to_mean,
            "counts": p.counts.tolist(),
        },
        "interarrival": {"cv": p.cv_interarrival, "cv_rescaled": p.cv_rescaled},
        "size_bytes": {
            "requests": p.sized_requests,
            "mean": p.size_mean,
            "p50": p.size_p50,
            "p95": p.size_p95,
            "p99": p.size_p99,
            "max": p.size_max,
        },
        "classes": dict(p.classes),
        "routes": dict(p.routes),
        "text_tokens": {label: asdict(lengths) for label, lengths in p.text_tokens.items()},
    }


# --- terminal lines -----------------------------------------------------------------------------


def _cv(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def _mix(counter: dict[str, int], total: int, top: int = 5) -> str:
    ranked = sorted(counter.items(), key=lambda kv: -kv[1])
    parts = [f"{label} {100 * n / total:.1f}%" for label, n in ranked[:top]]
    if len(ranked) > top:
        parts.append(f"{len(ranked) - top} more")
    return ", ".join(parts)


def description_lines(description: CaptureDescription) -> list[str]:
    """A few lines for the terminal: volume, rate, burstiness, sizes, mix, text lengths, bad lines."""
    p = description
    name = p.source or "capture"
    lines = [
        f"{name}: {p.requests:,} requests over {p.span_s:g}s ({p.resolution:g}s buckets), "
        f"{p.bad_lines:,} bad lines ({100 * p.malformed_share:.2f}% malformed)"
    ]
    if not p.requests:
        return lines + _bad_lines(p)
    lines += [
        f"rate: mean {p.rate_mean:.3g}/s, peak {p.rate_peak:.3g}/s ({p.peak_to_mean:.2f}x the mean)",
        f"inter-arrival CV: {_cv(p.cv_interarrival)} raw, {_cv(p.cv_rescaled)} at the local rate (1 = Poisson)",
    ]
    if p.sized_requests:
        lines.append(
            f"body size: p50 {format_bytes(p.size_p50)}, p95 {format_bytes(p.size_p95)}, "
            f"p99 {format_bytes(p.size_p99)}, max {format_bytes(p.size_max)}, mean {format_bytes(p.size_mean)} "
            f"({p.sized_requests:,} bodies)"
        )
    lines.append(f"classes: {_mix(p.classes, p.requests)}")
    lines.append(f"routes: {_mix(p.routes, p.requests)}")
    for label, t in p.text_tokens.items():
        lines.append(f"tokens per text, {label}: p5-p95 {t.p5}-{t.p95}, min {t.min}, max {t.max} ({t.texts:,} texts)")
    return lines + _bad_lines(p)


def _bad_lines(p: CaptureDescription, shown: int = 3) -> list[str]:
    return [f"bad line {line}: {reason}" for line, reason in p.first_bad[:shown]]


# --- TOML out -----------------------------------------------------------------------------------
# tomli_w writes the tables; the comments between them, which say where each figure came from, are
# joined in as whole lines. Comments hold user text (the capture's name): what TOML forbids in a
# comment (line breaks and other control characters) is written as an escape.

_COMMENT_UNSAFE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def _comment(text: str) -> str:
    return "# " + _COMMENT_UNSAFE.sub(lambda m: f"\\x{ord(m[0]):02x}", text) + "\n"


def _toml(doc: dict, comment: str = "") -> str:
    """``doc`` as TOML, under ``comment`` when one is given."""
    return (_comment(comment) if comment else "") + tomli_w.dumps(doc, indent=2)


def _need_requests(description: CaptureDescription, what: str) -> None:
    if not description.requests:
        raise ValueError(f"{description.source or 'the capture'} holds no readable requests to {what} from")


def forecast_toml(description: CaptureDescription, growth: Iterable[float] = (1, 10, 100)) -> str:
    """A ``[forecast]`` table (mean rate, peak factor, growth) that ``loadtest cost --forecast`` reads."""
    _need_requests(description, "forecast")
    multiples = [float(g) for g in growth]
    if not multiples or any(g <= 0 for g in multiples):
        raise ValueError(f"growth must be traffic multiples above 0, got {multiples}")
    header = (
        f"Forecast measured on {description.source or 'a capture'} at {description.resolution:g}s resolution: "
        f"{description.requests:,} requests over {description.span_s:g}s; the peak is the busiest bucket."
    )
    table = {"mean_rps": description.rate_mean, "peak_factor": max(1.0, description.peak_to_mean), "growth": multiples}
    return _toml({"forecast": table}, header)


# --- the fitted scenario ------------------------------------------------------------------------


def segment_rates(counts: np.ndarray, resolution: float, segments: int) -> np.ndarray:
    """The mean rate over each of ``segments`` equal slices of the capture (slices may split buckets,
    whose requests are then shared in proportion to the time each side holds)."""
    edges = np.linspace(0.0, len(counts), segments + 1)
    cumulative = np.concatenate([[0], np.cumsum(counts)])
    at_edges = np.interp(edges, np.arange(len(counts) + 1), cumulative)
    return np.diff(at_edges) / (len(counts) / segments * resolution)


def fitted_burstiness(cv_rescaled: float | None) -> float | None:
    """Gamma shape k for the capture's rescaled CV (CV = 1/sqrt(k)); None where Poisson fits."""
    if cv_rescaled is None or POISSON_CV[0] <= cv_rescaled <= POISSON_CV[1]:
        return None
    low, high = BURSTINESS_RANGE
    return high if cv_rescaled == 0 else min(high, max(low, 1 / cv_rescaled**2))


# Unlabelled text is split by length: the shortest half, the next 40% and the longest tenth, so the
# fitted mix keeps the capture's skew (one range from p5 to p95 would draw lengths uniformly).
LENGTH_BANDS = (("short", 0.5, "min", "p50"), ("medium", 0.4, "p50", "p90"), ("long", 0.1, "p90", "max"))


def _text_classes(description: CaptureDescription) -> list[dict]:
    total = sum(t.requests for t in description.text_tokens.values())
    classes = []
    for label, t in description.text_tokens.items():
        share = 100 * t.requests / total
        if label == UNLABELLED and t.p50 and t.p90:
            classes += _length_bands(t, share)
            continue
        low = max(2, t.p5)
        classes.append({"name": label, "weight": round(share, 3), "min_tokens": low, "max_tokens": max(low, t.p95)})
    return classes


def _length_bands(t: TextLengths, share: float) -> list[dict]:
    bands: list[dict] = []
    for name, part, low_key, high_key in LENGTH_BANDS:
        low = max(2, getattr(t, low_key) + (0 if low_key == "min" else 1))  # a band starts past the last one's end
        high = getattr(t, high_key)
        if high < low and bands:  # no lengths of its own (p50 == p90, say): its share joins the band before
            bands[-1]["weight"] = round(bands[-1]["weight"] + share * part, 3)
            continue
        bands.append({"name": name, "weight": round(share * part, 3), "min_tokens": low, "max_tokens": max(low, high)})
    return bands


def _load_table(description: CaptureDescription, max_stages: int) -> tuple[dict, dict, str]:
    """``[load]`` and its stages shape: each stage ramps to its slice's mean rate, from the first's.

    Ramping to a slice's mean lags the capture by half a stage, and its integral differs from the
    capture's count by half a stage's worth of the difference between the first and last slice's rate
    (``length * (first - last) / 2``): small at 60 stages, and nil for a capture that ends at the rate
    it began (a whole day)."""
    segments = min(max_stages, len(description.counts))
    rates = segment_rates(description.counts, description.resolution, segments)
    length = description.span_s / segments
    k = fitted_burstiness(description.cv_rescaled)
    load = {"model": "open", "duration": description.span_s, "arrivals": "poisson" if k is None else "gamma"}
    shape: dict = {"kind": "stages", "start": round(float(rates[0]), 6)}
    if k is not None:
        shape["burstiness"] = round(k, 4)
    shape["stages"] = [{"duration": length, "target": round(float(r), 6)} for r in rates]
    note = (
        f"The shape follows the capture's rate in {segments} stages of {length:g}s, each ramping to its "
        f"slice's mean; arrivals are "
        + ("Poisson (rescaled CV within 0.9-1.1)." if k is None else f"gamma, burstiness k = 1/CV^2 = {k:.3g}.")
    )
    return load, shape, note


def fit_scenario(description: CaptureDescription, name: str, base_toml: str | None = None, max_stages: int = 60) -> str:
    """Scenario TOML whose rate curve, burstiness and text mix follow the capture.

    ``[target]`` (and ``[payload]`` when the capture held no inference text) come from ``base_toml``
    when given; without it the target is the default OIP v2 minilm and the payload the default mix.
    """
    _need_requests(description, "fit a scenario")
    if max_stages < 1:
        raise ValueError(f"max_stages must be at least 1, got {max_stages}")
    base = tomllib.loads(base_toml) if base_toml is not None else {}
    p = description
    source = p.source or "a capture"
    header = (
        f"Fitted to {source}: {p.requests:,} requests over {p.span_s:g}s, peak-to-mean {p.peak_to_mean:.2f}, "
        f"inter-arrival CV {_cv(p.cv_interarrival)} raw / {_cv(p.cv_rescaled)} rescaled, "
        f"{100 * p.malformed_share:.2f}% malformed lines."
    )
    about = f"Synthetic traffic fitted to {source}: its rate curve, burstiness and mix."
    chunks = [
        _toml({"name": name, "description": about}, header),
        _toml({"target": base.get("target", {"protocol": "oip-v2", "model": "minilm"})}),
    ]
    if p.text_tokens:
        note = (
            "Classes as captured: weight is the share of text requests (%), tokens span p5 to p95; "
            "unlabelled text is split by length at its median and p90."
        )
        chunks.append(_toml({"payload": {"source": "text", "classes": _text_classes(p)}}, note))
    elif "payload" in base:
        note = "The capture had no text bodies to size classes from: the payload is the base scenario's."
        chunks.append(_toml({"payload": base["payload"]}, note))
    else:
        note = "The capture had no text bodies to size classes from: the payload is the default text mix."
        chunks.append(_comment(note))
    load, shape, note = _load_table(p, max_stages)
    chunks.append(_toml({"load": {**load, "shape": shape}}, note))
    return "\n".join(chunks)
