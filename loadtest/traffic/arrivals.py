"""Intended send times for open load: a renewal process stretched over the shape's rate.

Time rescaling: draw gaps of a unit-rate process (exponential for Poisson, constant for uniform,
gamma with shape ``k`` for bursty traffic, whose coefficient of variation is 1/sqrt(k)), and place
each arrival where the integral of the rate reaches the running sum of gaps. One generator then
serves every shape, and arrivals stream: memory does not grow with the run's length.

Every worker generates the same global sequence from the same seed and keeps every W-th arrival,
so the total rate holds across workers and the global order of intended times is kept.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from loadtest.traffic.shapes import Shape

STEP = 0.001  # integration step, seconds: finer than any shape edge the scenarios can express
PROCESSES = ("poisson", "uniform", "gamma")


def unit_gaps(process: str, burstiness: float, rng: np.random.Generator, chunk: int = 4096) -> Iterator[float]:
    while True:
        if process == "poisson":
            gaps = rng.exponential(1.0, chunk)
        elif process == "gamma":
            gaps = rng.gamma(burstiness, 1.0 / burstiness, chunk)
        else:
            gaps = np.ones(chunk)
        yield from gaps.tolist()


def arrival_times(shape: Shape, duration: float, process: str = "poisson", seed: int = 0) -> Iterator[float]:
    """Offsets in seconds from the start, in order, of every arrival in ``[0, duration)``."""
    gaps = unit_gaps(process, shape.burstiness, np.random.default_rng(seed))
    # Uniform arrivals start half a gap in, not exactly at t = 0.
    target = 0.5 if process == "uniform" else next(gaps)
    area, t = 0.0, 0.0
    rate = shape.at(0.0)
    while t < duration:
        next_t = min(t + STEP, duration)
        next_rate = shape.at(next_t)
        step_area = (rate + next_rate) / 2 * (next_t - t)
        while area + step_area >= target and step_area > 0:
            # Place the arrival inside this step, treating the rate as constant across it.
            yield t + (target - area) / step_area * (next_t - t)
            target += next(gaps)
        area += step_area
        t, rate = next_t, next_rate


def expected_count(shape: Shape, duration: float) -> float:
    """The integral of the rate over the run: how many arrivals the schedule should hold."""
    steps = max(1, int(duration / STEP))
    ts = np.linspace(0.0, duration, steps + 1)
    return float(np.trapezoid([shape.at(t) for t in ts], ts))


def partition(times: Iterator[float], worker: int, workers: int) -> Iterator[tuple[int, float]]:
    """(global index, time) of the arrivals this worker sends: every ``workers``-th, from ``worker``."""
    for index, t in enumerate(times):
        if index % workers == worker:
            yield index, t
