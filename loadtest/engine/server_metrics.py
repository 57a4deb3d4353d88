"""A target's own Prometheus figures (``/metrics``), read over HTTP: what the server says is queued and in flight.

The reference server exposes ``inference_queue_rows{model,version}`` (rows waiting to be batched)
and ``inference_requests_in_flight{model,version,endpoint}`` (requests inside its handlers). The sampler
records them beside the CPU figures, and the capacity search waits for them to return to idle
before a step. Any target may serve ``/metrics``, or not: a reader treats ``MetricsUnavailable``
as "not exposed" and falls back, never as a failed run.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Mapping
from urllib.parse import urlsplit, urlunsplit

from prometheus_client.parser import text_string_to_metric_families

from loadtest.errors import MetricsUnavailable

QUEUE_ROWS = "inference_queue_rows"
IN_FLIGHT = "inference_requests_in_flight"

Labels = tuple[tuple[str, str], ...]
Samples = dict[tuple[str, Labels], float]


def metrics_url(target_url: str) -> str:
    """``/metrics`` at the target's scheme and host, whatever path its URL names."""
    parts = urlsplit(target_url)
    return urlunsplit((parts.scheme, parts.netloc, "/metrics", "", ""))


def read_metrics(url: str, timeout: float = 1.0) -> Samples:
    """Every sample of the page at ``url``, keyed by (sample name, sorted labels).

    Raises ``MetricsUnavailable`` when the page cannot be fetched or is not Prometheus text.
    """
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 (the user's own target)
            text = response.read().decode("utf-8", errors="replace")
    except (OSError, ValueError) as exc:  # URLError, HTTPError, timeouts and refusals are OSErrors
        raise MetricsUnavailable(f"{url}: {exc}") from exc
    try:
        return {
            (sample.name, tuple(sorted(sample.labels.items()))): float(sample.value)
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        }
    except ValueError as exc:
        raise MetricsUnavailable(f"{url}: not Prometheus text ({exc})") from exc


def total(samples: Mapping[tuple[str, Labels], float], name: str, **labels: str) -> float | None:
    """The sum of ``name``'s samples whose labels include ``labels``; None when the page has no such sample."""
    wanted = set(labels.items())
    values = [value for (sample, have), value in samples.items() if sample == name and wanted <= set(have)]
    return sum(values) if values else None
