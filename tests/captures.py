"""Synthetic captures for the replay tests: known per-second rates, written in each capture format."""

from __future__ import annotations

import base64
import json
import math
from datetime import UTC, datetime
from pathlib import Path

ORIGIN = 1_764_500_000.0  # 2025-11-30T10:53:20Z: any fixed epoch
TEXT_BODY = {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": ["a short query about latency"]}]}
FEATURES_BODY = {"inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 8], "data": [0.5] * 8}]}


def diurnal_with_spike(seconds: int, low: int, high: int, spike: int, spike_at: int, spike_len: int) -> list[int]:
    """Requests per second: a raised-cosine day from ``low`` to ``high`` and back, with a spike on top."""
    rates = [round(low + (high - low) * (1 - math.cos(2 * math.pi * s / seconds)) / 2) for s in range(seconds)]
    for s in range(spike_at, min(seconds, spike_at + spike_len)):
        rates[s] = spike
    return rates


def times_for(rates: list[int], origin: float = ORIGIN, phase: float = 0.5) -> list[float]:
    """Arrival times spread evenly inside each second, so every second holds exactly its rate.

    ``phase`` places each arrival within its slot: 0 puts the first request of the capture exactly
    on a second, so the replay's seconds are the capture's seconds.
    """
    return [origin + s + (i + phase) / n for s, n in enumerate(rates) for i in range(n)]


def rfc3339(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z")


def jsonl_line(t: float, body=None, path="/v2/models/fraud/infer", headers=None, cls=None, epoch=False) -> str:
    doc = {"timestamp": t if epoch else rfc3339(t), "method": "POST", "path": path}
    if headers:
        doc["headers"] = headers
    if isinstance(body, bytes):
        doc["body_base64"] = base64.b64encode(body).decode()
    elif body is not None:
        doc["body"] = body
    if cls:
        doc["class"] = cls
    return json.dumps(doc)


def write_jsonl(path: Path, times: list[float], body=FEATURES_BODY, **kw) -> Path:
    with path.open("w") as f:
        for t in times:
            f.write(jsonl_line(t, body, **kw) + "\n")
    return path
