"""The ceiling: rows per second of ONNX Runtime alone on given texts, with no HTTP, queue or tokeniser.

Tokenised rows are sorted by length and cut into batches, so padding is the least any batcher could
achieve, and batch 1 (no padding at all) is measured too; the better of the two is the ceiling.
Padding and ``session.run`` only are on the clock (``benchmarks/server_throughput.py`` measures it
the same way). A server's measured capacity above it would be a broken measurement.

Every length of the mix is on the clock, in its share: each mode runs an even sample of the mix's
length quantiles (rows for batch 1; for batches, batches cut from all the rows), in whole passes in
a shuffled order.
Timing from the first batch for a second, as this did before, measured the shortest 40% of the
rows only (mean 8.2 tokens against the mix's 16.3): 802 rows/s for MiniLM fp32 on the demo's texts,
against 394 over all of them, so a server at its true ceiling would have read as 0.5x.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import numpy as np
import psutil

from .config import default_models_dir
from .models import ServedModel, SessionSettings, TextEncoder, load_model

T = TypeVar("T")
TEXT_MODEL = "minilm"
# Rows each mode runs, an even sample of the mix: a pass over them takes about 1.4 s (MiniLM fp32, 1 thread)
SAMPLE_ROWS = 512


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
    seconds: float = 1.0,  # per mode (batches, then batch 1), in whole passes over the sample
    batch: int = 32,
    sample: int = SAMPLE_ROWS,
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
        ordered = sorted(rows, key=len)
        grouped = even_sample([ordered[i : i + batch] for i in range(0, len(ordered), batch)], sample // batch)
        alone = [[row] for row in even_sample(ordered, sample // 2)]  # batch 1 is the slower mode on any mix seen
        return round(max(rows_per_second(served, grouped, seconds), rows_per_second(served, alone, seconds)), 1)


def even_sample(ordered: list[T], size: int) -> list[T]:
    """``size`` items at evenly spaced quantiles of ``ordered`` (sorted by length): the mix in its shares.

    An even sample, not a random one, so that a few hundred rows carry the mix's mean length
    exactly and a pass over them is short. The batches are cut from all the rows before they are
    sampled, so each is as tight in length as a deep queue allows.
    """
    if len(ordered) <= max(1, size):
        return ordered
    size = max(1, size)
    return [ordered[(2 * i + 1) * len(ordered) // (2 * size)] for i in range(size)]


def rows_per_second(model: ServedModel, batches: list[list[np.ndarray]], seconds: float) -> float:
    """Rows per second over whole passes of all the batches (at least one, and ``seconds``), after a warm-up.

    The passes visit the batches in a shuffled order, the same each time, so that neither the
    short nor the long end of the mix is over-represented whatever ``seconds`` is.
    """
    order = np.random.default_rng(0).permutation(len(batches))
    model.infer(batches[order[0]])
    done, started = 0, time.perf_counter()
    while True:
        for index in order:
            model.infer(batches[index])
            done += len(batches[index])
        elapsed = time.perf_counter() - started
        if elapsed >= seconds:
            return done / elapsed
