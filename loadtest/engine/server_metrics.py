"""A target's own Prometheus figures (``/metrics``), read over HTTP: what the server says is queued and in flight.

The reference server exposes ``inference_queue_rows{model,version}`` (rows waiting to be batched)
and ``inference_requests_in_flight{model,version,endpoint}`` (requests inside its handlers). The sampler
records them beside the CPU figures, and the capacity search waits for them to return to idle
before a step. Any target may serve ``/metrics``, or not: a reader treats ``MetricsUnavailable``
as "not exposed" and falls back, never as a failed run.

Which page the sampler reads is the scenario's ``[target] metrics`` (``scrape_url``): a URL of the
user's (a server whose metrics have a port of their own, as Triton's and MLServer's do), ``false``
for none, or by default ``/metrics`` on a loopback target's own host and port, used when it holds a
known server's series (``results.server_split.detect``).
"""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Mapping
from urllib.parse import urlsplit, urlunsplit

from loadtest.errors import MetricsUnavailable
from loadtest.results.server_split import Labels, Page, parse_page

QUEUE_ROWS = "inference_queue_rows"
IN_FLIGHT = "inference_requests_in_flight"

Samples = dict[tuple[str, Labels], float]  # a page's samples, as read_metrics gives them


def metrics_url(target_url: str) -> str:
    """``/metrics`` at the target's scheme and host, whatever path its URL names."""
    parts = urlsplit(target_url)
    return urlunsplit((parts.scheme, parts.netloc, "/metrics", "", ""))


def scrape_url(target_url: str, setting: str | bool, allow_remote: bool = False) -> str | None:
    """The page the sampler reads: ``setting`` is the scenario's ``[target] metrics``.

    ``False``: none. A URL: that page, on loopback unless ``allow_remote`` (as every target; a
    ``PreflightError`` says so before the run). ``True``: ``/metrics`` at a loopback HTTP target's host and port.
    """
    from loadtest.engine.preflight import check_loopback, is_loopback
    from loadtest.replay.redact import without_userinfo

    if setting is False:
        return None
    if isinstance(setting, str):
        check_loopback(setting, allow_remote)
        return without_userinfo(setting)  # it goes on the sampler's argv, which `ps` shows to every user
    if urlsplit(target_url).scheme not in ("http", "https") or not is_loopback(target_url):
        return None  # a gRPC target's metrics are on another port, and another host's are never guessed at
    return metrics_url(without_userinfo(target_url))  # no password on argv


def read_page(url: str, timeout: float = 1.0) -> Page:
    """The page at ``url``, parsed; ``MetricsUnavailable`` when it cannot be fetched or is not Prometheus text."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 (the user's own target)
            text = response.read().decode("utf-8", errors="replace")
    except (OSError, ValueError) as exc:  # URLError, HTTPError, timeouts and refusals are OSErrors
        raise MetricsUnavailable(f"{url}: {exc}") from exc
    try:
        return parse_page(text)
    except ValueError as exc:
        raise MetricsUnavailable(f"{url}: not Prometheus text ({exc})") from exc


def read_metrics(url: str, timeout: float = 1.0) -> Samples:
    """Every sample of the page at ``url``, keyed by (sample name, sorted labels).

    Raises ``MetricsUnavailable`` when the page cannot be fetched or is not Prometheus text.
    """
    return dict(read_page(url, timeout).samples)


def total(samples: Mapping[tuple[str, Labels], float], name: str, **labels: str) -> float | None:
    """The sum of ``name``'s samples whose labels include ``labels``; None when the page has no such sample."""
    wanted = set(labels.items())
    values = [value for (sample, have), value in samples.items() if sample == name and wanted <= set(have)]
    return sum(values) if values else None
