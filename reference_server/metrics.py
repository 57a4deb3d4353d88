"""Prometheus metrics of the server, in a registry of its own (so several apps can share a process)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from .errors import RequestError

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
REJECTED_REASONS = ("queue_full", "expected_wait", "queue_timeout")
DROPPED_REASONS = ("client_gone",)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "inference_requests",
            "Inference requests by model, endpoint and HTTP status",
            ["model", "endpoint", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "inference_request_duration_seconds",
            "Time in the handler, body read to response built",
            ["model", "endpoint"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_wait = Histogram(
            "inference_queue_wait_seconds",
            "Time the oldest request of a batch waited in the queue",
            ["model"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.compute = Histogram(
            "inference_compute_seconds",
            "ONNX Runtime time per batch",
            ["model"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_rows = Histogram(
            "inference_batch_size",
            "Rows per executed batch",
            ["model"],
            buckets=_BATCH_BUCKETS,
            registry=r,
        )
        self.padding = Histogram(
            "inference_padding_efficiency",
            "Real tokens / padded tokens per batch (1.0: no padding)",
            ["model"],
            buckets=(0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0),
            registry=r,
        )
        self.in_flight = Gauge(
            "inference_requests_in_flight",
            "Requests inside the handler now",
            ["model", "endpoint"],
            registry=r,
        )
        self.queue_rows = Gauge("inference_queue_rows", "Rows waiting to be batched", ["model"], registry=r)
        self.rejected = Counter(
            "inference_rejected",
            "Requests answered 503 without being computed: queue_full (no room), expected_wait (refused on "
            "arrival: the expected wait is over the queue time limit), queue_timeout (waited past the limit)",
            ["model", "reason"],
            registry=r,
        )
        self.dropped = Counter(
            "inference_dropped",
            "Queued requests removed uncomputed: client_gone (the client disconnected)",
            ["model", "reason"],
            registry=r,
        )

    def track_queue(self, model: str, rows: Callable[[], int]) -> None:
        self.queue_rows.labels(model).set_function(rows)

    def batch_observer(self, model: str) -> Callable[[int, float, float, float], None]:
        batch_rows, queue_wait, compute, padding = (
            m.labels(model) for m in (self.batch_rows, self.queue_wait, self.compute, self.padding)
        )

        def observe(rows: int, queue_s: float, infer_s: float, efficiency: float) -> None:
            batch_rows.observe(rows)
            queue_wait.observe(queue_s)
            compute.observe(infer_s)
            padding.observe(efficiency)

        return observe

    def shed_counter(self, model: str) -> Callable[[str, str], None]:
        """Counts, by reason, the requests the batcher answers 503 ("rejected") or drops ("dropped") uncomputed."""
        counters = {"rejected": self.rejected, "dropped": self.dropped}
        for reason in REJECTED_REASONS:  # every series from the start at 0, so a rate() sees the first one
            self.rejected.labels(model, reason)
        for reason in DROPPED_REASONS:
            self.dropped.labels(model, reason)

        def count(outcome: str, reason: str) -> None:
            counters[outcome].labels(model, reason).inc()

        return count

    @contextmanager
    def observe(self, model: str, endpoint: str) -> Iterator[None]:
        """Count the request by the status it ends with, and time it."""
        started = time.perf_counter()
        status = 200
        in_flight = self.in_flight.labels(model, endpoint)
        in_flight.inc()
        try:
            yield
        except RequestError as exc:
            status = exc.status
            raise
        except Exception:
            status = 500
            raise
        finally:
            in_flight.dec()
            self.requests.labels(model, endpoint, str(status)).inc()
            self.latency.labels(model, endpoint).observe(time.perf_counter() - started)

    def render(self) -> bytes:
        return generate_latest(self.registry)
