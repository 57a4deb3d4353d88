"""The server's measurements: Prometheus metrics, in a registry of its own (so several apps can share a
process), and Triton's statistics extension (``statistics.py``), fed from the same observations.

The names follow Prometheus' conventions (base units in the name: ``_seconds``, ``_total``,
``_ratio`` for a 0..1 share) and carry Triton's two labels, ``model`` and ``version`` (the
variant: ``fp32``, ``int8``). The harness reads ``inference_queue_rows`` and
``inference_requests_in_flight`` (``loadtest/engine/server_metrics.py``), so the names stay ours
rather than Triton's ``nv_`` ones; docs/reference-server.md maps one onto the other. The process
and platform collectors that prometheus_client's default registry has (CPU seconds, resident
memory, open files, GC) are registered on ours too, as KServe's servers expose them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)

from .errors import RequestError
from .statistics import ModelStatistics

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
REJECTED_REASONS = ("queue_full", "expected_wait", "queue_timeout")
DROPPED_REASONS = ("client_gone",)
MODEL = ["model", "version"]  # the labels every per-model series carries, as Triton's do


class Metrics:
    def __init__(self, versions: Mapping[str, str]) -> None:
        """``versions``: each served model's name and version (its variant)."""
        self.versions = dict(versions)
        self.statistics = {name: ModelStatistics(name, version) for name, version in self.versions.items()}
        self._children: dict[tuple, object] = {}
        self.registry = CollectorRegistry()
        r = self.registry
        for collector in (ProcessCollector, PlatformCollector, GCCollector):
            collector(registry=r)
        self.requests = Counter(
            "inference_requests",
            "Inference requests by model, endpoint and HTTP status",
            [*MODEL, "endpoint", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "inference_request_duration_seconds",
            "Time in the handler, body read to response built",
            [*MODEL, "endpoint"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_wait = Histogram(
            "inference_queue_wait_seconds",
            "Time each computed request waited in the queue for its batch (one observation a request)",
            MODEL,
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.compute = Histogram(
            "inference_compute_seconds",
            "ONNX Runtime time per batch",
            MODEL,
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.request_compute = Histogram(
            "inference_request_compute_seconds",
            "ONNX Runtime time of each computed request's batch, one observation a request (Triton's compute_infer)",
            MODEL,
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_rows = Histogram(
            "inference_batch_size",
            "Rows per executed batch (_sum: rows computed, Triton's inference count; _count: its execution count)",
            MODEL,
            buckets=_BATCH_BUCKETS,
            registry=r,
        )
        self.padding = Histogram(
            "inference_padding_efficiency_ratio",
            "Real tokens / padded tokens per batch (1.0: no padding)",
            MODEL,
            buckets=(0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0),
            registry=r,
        )
        self.in_flight = Gauge(
            "inference_requests_in_flight",
            "Requests inside the handler now",
            [*MODEL, "endpoint"],
            registry=r,
        )
        self.queue_rows = Gauge("inference_queue_rows", "Rows waiting to be batched", MODEL, registry=r)
        self.rejected = Counter(
            "inference_rejected",
            "Requests answered 503 without being computed: queue_full (no room), expected_wait (refused on "
            "arrival: the expected wait is over the queue time limit), queue_timeout (waited past the limit)",
            [*MODEL, "reason"],
            registry=r,
        )
        self.dropped = Counter(
            "inference_dropped",
            "Queued requests removed uncomputed: client_gone (the client disconnected)",
            [*MODEL, "reason"],
            registry=r,
        )

    def _model(self, model: str) -> tuple[str, str]:
        return model, self.versions[model]

    def _child(self, metric, *labels: str):
        """``metric.labels(*labels)``, looked up once: every request counts into three series, on the model's core.

        The keys are bounded: models, endpoints and the statuses this server answers with.
        """
        key = (metric, labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def track_queue(self, model: str, rows: Callable[[], int]) -> None:
        self.queue_rows.labels(*self._model(model)).set_function(rows)

    def batch_observer(self, model: str) -> Callable[[int, tuple[float, ...], float, float], None]:
        """What the batcher calls after each batch: its rows, each request's queue wait, its compute
        time and its padding ratio."""
        batch_rows, queue_wait, compute, padding, request_compute = (
            m.labels(*self._model(model))
            for m in (self.batch_rows, self.queue_wait, self.compute, self.padding, self.request_compute)
        )
        statistics = self.statistics[model]

        def observe(rows: int, waits_s: tuple[float, ...], infer_s: float, ratio: float) -> None:
            batch_rows.observe(rows)
            for wait in waits_s:  # per request: the harness's scrape divides both sums by one count
                queue_wait.observe(wait)
                request_compute.observe(infer_s)
            compute.observe(infer_s)
            padding.observe(ratio)
            statistics.batch(rows, waits_s, infer_s)

        return observe

    def shed_counter(self, model: str) -> Callable[[str, str], None]:
        """Counts, by reason, the requests the batcher answers 503 ("rejected") or drops ("dropped") uncomputed."""
        counters = {"rejected": self.rejected, "dropped": self.dropped}
        labels = self._model(model)
        for reason in REJECTED_REASONS:  # every series from the start at 0, so a rate() sees the first one
            self.rejected.labels(*labels, reason)
        for reason in DROPPED_REASONS:
            self.dropped.labels(*labels, reason)

        def count(outcome: str, reason: str) -> None:
            counters[outcome].labels(*labels, reason).inc()

        return count

    @contextmanager
    def observe(self, model: str, endpoint: str) -> Iterator[None]:
        """Count the request by the status it ends with, and time it.

        ``endpoint`` is ``infer`` (OIP over REST), ``grpc_infer`` (OIP over gRPC) or ``embeddings``
        (OpenAI's); the status is HTTP's, for gRPC too (the status REST gives the same failure), so one
        query over every endpoint reads one way.
        """
        started = time.perf_counter()
        status = 200
        labels = self._model(model)
        in_flight = self._child(self.in_flight, *labels, endpoint)
        in_flight.inc()
        try:
            yield
        except RequestError as exc:
            status = exc.status
            raise
        except asyncio.CancelledError:  # grpc.aio cancels a handler whose client has gone: nginx's 499, as REST's
            status = 499
            raise
        except Exception:
            status = 500
            raise
        finally:
            in_flight.dec()
            self.count(model, endpoint, status, time.perf_counter() - started)

    def count(self, model: str, endpoint: str, status: int, seconds: float) -> None:
        """One request that ended with ``status`` after ``seconds``: Prometheus' series and the stats."""
        labels = self._model(model)
        self._child(self.requests, *labels, endpoint, str(status)).inc()
        self._child(self.latency, *labels, endpoint).observe(seconds)
        self.statistics[model].request(status == 200, seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
