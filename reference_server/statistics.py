"""Triton's statistics extension: each model's cumulative counts and times since the server started.

``GET /v2/models[/{name}[/versions/{version}]]/stats`` answers in Triton's JSON shape, which
perf_analyzer and Model Analyzer read to split a latency into queue and compute time, and to get
the mean batch size (inference count over execution count). The fields follow Triton's meaning:

- ``inference_count``: rows computed (a 4-row request counts 4); ``execution_count``: batches run.
- ``success`` / ``fail``: requests answered 200 / with an error, and their time in the handler. A
  request refused (503) or whose client left (499) is a failure and was never an inference.
- ``queue`` and ``compute_infer``: one count per computed request, with its own wait and its
  batch's ONNX Runtime time, so ``ns / count`` is what a request saw on average.
- ``compute_input`` and ``compute_output`` are not measured apart (padding the batch and slicing
  its outputs are inside ``compute_infer``), nor is there a response cache: they stay at zero.

Every update and every read happens on the event loop, so nothing here needs a lock.
"""

from __future__ import annotations

import time
from dataclasses import dataclass


@dataclass
class Duration:
    """Triton's ``$duration_stat``: how many times, and their total in nanoseconds."""

    count: int = 0
    ns: int = 0

    def add(self, seconds: float) -> None:
        self.count += 1
        self.ns += round(seconds * 1e9)

    def as_json(self) -> dict[str, int]:
        return {"count": self.count, "ns": self.ns}


class ModelStatistics:
    """One model version's statistics, updated by the handler (requests) and the batcher (batches)."""

    def __init__(self, name: str, version: str) -> None:
        self.name, self.version = name, version
        self.last_inference_ms = 0  # epoch milliseconds of the last batch computed; 0: none yet
        self.inference_count = 0
        self.execution_count = 0
        self.success, self.fail = Duration(), Duration()
        self.queue, self.compute_infer = Duration(), Duration()
        self.batches: dict[int, Duration] = {}  # compute time by batch size (rows)

    def request(self, ok: bool, seconds: float) -> None:
        (self.success if ok else self.fail).add(seconds)

    def batch(self, rows: int, waits_s: tuple[float, ...], infer_s: float) -> None:
        """A batch of ``rows`` computed in ``infer_s`` for requests that waited ``waits_s``."""
        self.inference_count += rows
        self.execution_count += 1
        self.last_inference_ms = int(time.time() * 1000)
        for wait in waits_s:
            self.queue.add(wait)
            self.compute_infer.add(infer_s)
        self.batches.setdefault(rows, Duration()).add(infer_s)

    def as_json(self) -> dict:
        """Triton's ``$model_stat``, with only the fields its protobuf knows (perf_analyzer parses it so)."""
        unmeasured = Duration().as_json()
        return {
            "name": self.name,
            "version": self.version,
            "last_inference": self.last_inference_ms,
            "inference_count": self.inference_count,
            "execution_count": self.execution_count,
            "inference_stats": {
                "success": self.success.as_json(),
                "fail": self.fail.as_json(),
                "queue": self.queue.as_json(),
                "compute_input": unmeasured,
                "compute_infer": self.compute_infer.as_json(),
                "compute_output": unmeasured,
                "cache_hit": unmeasured,
                "cache_miss": unmeasured,
            },
            "batch_stats": [
                {
                    "batch_size": rows,
                    "compute_input": unmeasured,
                    "compute_infer": self.batches[rows].as_json(),
                    "compute_output": unmeasured,
                }
                for rows in sorted(self.batches)
            ],
        }
