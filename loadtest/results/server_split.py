"""The server's split of its time, queue and compute, read from its own Prometheus page: pure, no I/O.

A target that sends no ``Server-Timing`` header still counts, on its ``/metrics`` page, the requests
it served and the time they spent queued and computing, as cumulative sums. Two reads of the page
a second apart give that second's mean queue and compute time per request (``between``); the sums
of a whole run give the run's means, and where the server keeps histograms, bucketed percentiles
(``combine``, ``bucket_percentile``). What the page can tell depends on the server, so each known
one is a ``Series`` naming what it exposes and what it cannot give:

- Triton: cumulative counters per model and version, in microseconds; compute is its input, infer
  and output time together (what runs in the backend), the queue its scheduler's.
- the reference server: histograms, one observation a request, of its queue wait and of its
  batch's ONNX Runtime time (``inference_request_compute_seconds``).
- KServe's model server: histograms of each step of ``Model.__call__``; ``predict`` is the
  compute; it has no queue.
- MLServer 1.7.1: one summary of a request's whole inference, adaptive batching's wait included;
  its queue metrics count requests, not time, so there is no queue figure.

``server_split.csv`` (written by the sampler, read by the analysis) holds one row per interval
between two reads: ``split_row`` writes it, ``read_row`` reads it back.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

Labels = tuple[tuple[str, str], ...]
Samples = Mapping[tuple[str, Labels], float]
Buckets = tuple[tuple[float, float], ...]  # (upper edge in seconds, requests at or below it), edges rising


@dataclass(frozen=True)
class Page:
    """One read of a ``/metrics`` page: every sample, keyed by (sample name, sorted labels), and the families
    it declares (a family with no sample yet, such as MLServer's before its first request, is still named)."""

    samples: Mapping[tuple[str, Labels], float]
    families: frozenset[str]


def parse_page(text: str) -> Page:
    """A page of Prometheus text; ValueError when it is not."""
    samples: dict[tuple[str, Labels], float] = {}
    families = set()
    for family in text_string_to_metric_families(text):
        families.add(family.name)
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = float(sample.value)
    return Page(samples, frozenset(families))


@dataclass(frozen=True)
class Series:
    """What one server's page says about its requests' time: the names, the label naming the model, the unit."""

    server: str  # triton | reference | kserve | mlserver
    family: str  # the family whose presence names the server
    label: str  # the label that names the model
    requests: str  # the cumulative count the means divide by
    queue: tuple[str, ...]  # cumulative sums of queue time (in ``unit``); empty: not exposed
    compute: tuple[str, ...]  # cumulative sums of compute time (in ``unit``)
    unit: float = 1.0  # seconds per unit of the sums
    queue_histogram: str | None = None  # a histogram of queue time per request, for percentiles
    compute_histogram: str | None = None
    rows: str | None = None  # cumulative rows computed, and batches run: the mean batch size
    batches: str | None = None
    missing: str = ""  # what the page cannot give

    @property
    def source(self) -> str:
        return f"metrics:{self.server}"


# Triton's counters have no ``_total`` in its text; prometheus_client's parser names their samples with it.
TRITON = Series(
    "triton",
    "nv_inference_request_success",
    "model",
    requests="nv_inference_request_success_total",
    queue=("nv_inference_queue_duration_us_total",),
    compute=(
        "nv_inference_compute_input_duration_us_total",
        "nv_inference_compute_infer_duration_us_total",
        "nv_inference_compute_output_duration_us_total",
    ),
    unit=1e-6,
    rows="nv_inference_count_total",
    batches="nv_inference_exec_count_total",
    missing="no percentiles: Triton's latency counters are sums (its summaries, off by default, are over a window)",
)
REFERENCE = Series(
    "reference",
    "inference_queue_wait_seconds",
    "model",
    requests="inference_queue_wait_seconds_count",
    queue=("inference_queue_wait_seconds_sum",),
    compute=("inference_request_compute_seconds_sum",),
    queue_histogram="inference_queue_wait_seconds",
    compute_histogram="inference_request_compute_seconds",
    rows="inference_batch_size_sum",
    batches="inference_batch_size_count",
)
KSERVE = Series(
    "kserve",
    "request_predict_seconds",
    "model_name",
    requests="request_predict_seconds_count",
    queue=(),
    compute=("request_predict_seconds_sum",),
    compute_histogram="request_predict_seconds",
    missing="no queue: KServe's model server calls predict as a request arrives "
    "(request_preprocess_seconds and request_postprocess_seconds are outside the split)",
)
MLSERVER = Series(
    "mlserver",
    "model_infer_request_duration",
    "model",
    requests="model_infer_request_duration_count",
    queue=(),
    compute=("model_infer_request_duration_sum",),
    missing="no queue and no percentiles: MLServer times a request's whole inference as one summary "
    "(adaptive batching's wait included), and its queue metrics count requests, not time",
)
KNOWN = (TRITON, REFERENCE, KSERVE, MLSERVER)


def detect(page: Page) -> Series | None:
    """The known server whose series the page holds; None for any other page."""
    return next((series for series in KNOWN if series.family in page.families), None)


@dataclass(frozen=True)
class Interval:
    """The server's own figures between two reads of its page: requests, mean ms per request, histograms' growth."""

    requests: float
    queue_ms: float | None  # None: not exposed, or no request in the interval
    compute_ms: float | None
    batch_rows: float | None = None  # mean rows per executed batch
    queue_buckets: Buckets = ()
    compute_buckets: Buckets = ()


def _models(page: Page, series: Series) -> set[str]:
    return {
        dict(labels).get(series.label, "")
        for (name, labels) in page.samples
        if name == series.requests and series.label in dict(labels)
    }


def _sum(page: Page, name: str, label: str, model: str | None) -> float:
    """``name``'s samples added up, those of ``model`` only when given; 0 where the page has none (yet)."""
    return sum(
        value
        for (sample, labels), value in page.samples.items()
        if sample == name and (model is None or dict(labels).get(label) == model)
    )


def _buckets(page: Page, histogram: str, label: str, model: str | None) -> dict[float, float]:
    edges: dict[float, float] = {}
    for (sample, labels), value in page.samples.items():
        have = dict(labels)
        if sample == f"{histogram}_bucket" and "le" in have and (model is None or have.get(label) == model):
            edge = float(have["le"])
            edges[edge] = edges.get(edge, 0.0) + value
    return edges


def _grown_buckets(series: Series, histogram: str | None, before: Page, after: Page, model: str | None) -> Buckets:
    if histogram is None:
        return ()
    then, now = _buckets(before, histogram, series.label, model), _buckets(after, histogram, series.label, model)
    return tuple((edge, now[edge] - then.get(edge, 0.0)) for edge in sorted(now))


def between(series: Series, before: Page, after: Page, model: str | None = None) -> Interval | None:
    """The interval from ``before`` to ``after``; None when a count went back (the server restarted).

    ``model``: only that model's series, when the later page has it; otherwise every model's together.
    """
    chosen = model if model is not None and model in _models(after, series) else None

    def grown(names: Iterable[str]) -> float:
        return sum(_sum(after, n, series.label, chosen) - _sum(before, n, series.label, chosen) for n in names)

    requests = grown([series.requests])
    if requests < 0:
        return None

    def mean_ms(names: tuple[str, ...]) -> float | None:
        present = any(name == n for n in names for (name, _) in after.samples)
        if not names or not present or requests == 0:
            return None
        return grown(names) * series.unit * 1000 / requests

    batches = grown([series.batches]) if series.batches else 0.0
    return Interval(
        requests=requests,
        queue_ms=mean_ms(series.queue),
        compute_ms=mean_ms(series.compute),
        batch_rows=grown([series.rows]) / batches if series.rows and batches > 0 else None,
        queue_buckets=_grown_buckets(series, series.queue_histogram, before, after, chosen),
        compute_buckets=_grown_buckets(series, series.compute_histogram, before, after, chosen),
    )


def combine(intervals: Sequence[Interval]) -> Interval:
    """Many intervals as one: the requests added, the means weighted by requests, the histograms added."""
    requests = sum(i.requests for i in intervals)

    def weighted(values: list[tuple[float, float | None]]) -> float | None:
        known = [(n, v) for n, v in values if v is not None and n > 0]
        count = sum(n for n, _ in known)
        return sum(n * v for n, v in known) / count if count else None

    return Interval(
        requests=requests,
        queue_ms=weighted([(i.requests, i.queue_ms) for i in intervals]),
        compute_ms=weighted([(i.requests, i.compute_ms) for i in intervals]),
        batch_rows=None,  # rows per batch do not add up across intervals from their means alone
        queue_buckets=_add([i.queue_buckets for i in intervals]),
        compute_buckets=_add([i.compute_buckets for i in intervals]),
    )


def _add(many: list[Buckets]) -> Buckets:
    totals: dict[float, float] = {}
    for buckets in many:
        for edge, count in buckets:
            totals[edge] = totals.get(edge, 0.0) + count
    return tuple(sorted(totals.items()))


def bucket_percentile(buckets: Buckets, percentile: float) -> float | None:
    """The upper edge, in ms, of the bucket that holds the percentile's request: the value is at most that.

    None when there is no request, or the percentile lies past the highest finite edge (``+Inf``).
    """
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank = max(1.0, math.ceil(percentile / 100 * buckets[-1][1]))
    edge = next(edge for edge, count in buckets if count >= rank)
    return None if math.isinf(edge) else round(edge * 1000, 6)


# -- server_split.csv -------------------------------------------------------------------------------

SPLIT_COLUMNS = ("second", "window_s", "server_requests", "server_queue_ms", "server_compute_ms", "server_batch_rows")
QUEUE_LE, COMPUTE_LE = "queue_le_", "compute_le_"


def edge_name(prefix: str, edge: float) -> str:
    """``queue_le_2.5`` for a bucket whose upper edge is 2.5 ms; ``queue_le_inf`` for ``+Inf``."""
    return f"{prefix}{'inf' if math.isinf(edge) else f'{edge * 1000:g}'}"


def split_columns(first: Interval) -> list[str]:
    """The file's header, with a column per histogram bucket of ``first`` (buckets never change mid-run)."""
    return [
        *SPLIT_COLUMNS,
        *(edge_name(QUEUE_LE, edge) for edge, _ in first.queue_buckets),
        *(edge_name(COMPUTE_LE, edge) for edge, _ in first.compute_buckets),
    ]


def split_row(second: float, window_s: float, interval: Interval) -> list:
    """One row: the interval's start (seconds since the run's start), its length, its figures, its buckets."""

    def cell(value: float | None, digits: int = 4) -> float | str:
        return "" if value is None else round(value, digits)

    return [
        round(second, 3),
        round(window_s, 3),
        cell(interval.requests, 1),
        cell(interval.queue_ms),
        cell(interval.compute_ms),
        cell(interval.batch_rows, 3),
        *(count for _, count in interval.queue_buckets),
        *(count for _, count in interval.compute_buckets),
    ]


def read_row(row: Mapping[str, object]) -> Interval:
    """A row of ``server_split.csv`` (a mapping of column to value; empty or NaN cells are None) as an interval."""

    def value(column: str) -> float | None:
        cell = row.get(column)
        if cell is None or cell == "":
            return None
        number = float(cell)  # type: ignore[arg-type]
        return None if math.isnan(number) else number

    def buckets(prefix: str) -> Buckets:
        edges = []
        for column in row:
            if str(column).startswith(prefix):
                raw = str(column)[len(prefix) :]
                edge = math.inf if raw == "inf" else float(raw) / 1000
                edges.append((edge, value(str(column)) or 0.0))
        return tuple(sorted(edges))

    return Interval(
        requests=value("server_requests") or 0.0,
        queue_ms=value("server_queue_ms"),
        compute_ms=value("server_compute_ms"),
        batch_rows=value("server_batch_rows"),
        queue_buckets=buckets(QUEUE_LE),
        compute_buckets=buckets(COMPUTE_LE),
    )
