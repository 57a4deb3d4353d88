"""The ceiling: rows per second of ONNX Runtime alone on given texts, with no HTTP, queue or tokeniser.

Tokenised rows are sorted by length and cut into batches, so padding is the least any batcher could
achieve, and batch 1 (no padding at all) is measured too; the better of the two is the ceiling.
Padding and ``session.run`` only are on the clock (``benchmarks/server_throughput.py`` measures it
the same way). A server's measured capacity above it would be a broken measurement.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import psutil

from .config import default_models_dir
from .models import ServedModel, SessionSettings, TextEncoder, load_model

TEXT_MODEL = "minilm"


@contextmanager
def pinned(cpus: tuple[int, ...] | None) -> Iterator[None]:
    """Run the block on these cores (all of them when None), then restore the process's affinity."""
    me = psutil.Process()
    before = me.cpu_affinity()
    if cpus:
        me.cpu_affinity(list(cpus))
    try:
        yield
    finally:
        me.cpu_affinity(before)


def ort_ceiling_rps(
    model: str,
    variant: str,
    texts: list[str],
    *,
    models_dir: Path | None = None,
    threads: int = 1,
    cpus: tuple[int, ...] | None = None,
    seconds: float = 1.0,  # per mode (batches, then batch 1): a few hundred rows each, a ceiling to within a few %
    batch: int = 32,
) -> float | None:
    """The better of length-sorted batches of ``batch`` rows and batch 1, in rows per second.

    None for models other than the text encoder (minilm), or when there are no texts.
    """
    if model != TEXT_MODEL or not texts:
        return None
    with pinned(cpus):
        settings = SessionSettings(intra_op_threads=threads)
        served = load_model(models_dir or default_models_dir(), model, variant, settings)
        if not isinstance(served, TextEncoder):
            return None
        rows = served.prepare_texts(texts).rows
        order = np.argsort([len(r) for r in rows], kind="stable")
        ordered = [rows[i] for i in order]
        grouped = [ordered[i : i + batch] for i in range(0, len(ordered), batch)]
        alone = [[row] for row in rows]
        return round(max(rows_per_second(served, grouped, seconds), rows_per_second(served, alone, seconds)), 1)


def rows_per_second(model: ServedModel, batches: list[list[np.ndarray]], seconds: float) -> float:
    """Run the batches round-robin for ``seconds`` after one warm-up batch; rows completed per second."""
    model.infer(batches[0])
    done, n, started = 0, 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        chunk = batches[n % len(batches)]
        model.infer(chunk)
        done, n = done + len(chunk), n + 1
    return done / (time.perf_counter() - started)
