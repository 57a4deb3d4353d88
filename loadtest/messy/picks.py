"""Which arrivals of a run are messy, and with which kind's body: stratified, seeded, exact in share."""

from __future__ import annotations

import math

import numpy as np

from loadtest.messy.kinds import MAX_CYCLE, MessyRequest
from loadtest.traffic.payloads import splitmix64

_SALT = 0x6D657373  # "mess": messy picks are independent of the payload picks of the same seed


def unit(seed: int, index: int, salt: int) -> float:
    """A number in [0, 1) that depends only on (seed, index, salt)."""
    with np.errstate(over="ignore"):
        base = np.uint64((seed * 0x9E3779B97F4A7C15 + salt * 0xBF58476D1CE4E5B9) % 2**64)
        return float(splitmix64(base + np.uint64(index))) / 2**64


class MessyPool:
    """Which arrivals are messy, and with which body; arrival i's pick depends on the seed and i only.

    Stratified, not drawn: arrival i is messy when ``i * share`` (plus a seeded phase) crosses a
    whole number, so the share holds exactly over any stretch of traffic, and the m-th messy arrival
    takes the m-th kind of a seeded, shuffled cycle in which each kind appears in proportion to its
    weight. Every kind is sent within one cycle's worth of messy arrivals (the number of kinds, for
    equal weights), which a random draw per arrival would not promise in a short run.
    """

    def __init__(self, bodies: dict[str, list[MessyRequest]], weights: dict[str, float], share: float, seed: int):
        kinds = [k for k in weights if bodies.get(k) and weights[k] > 0]
        if not kinds:
            raise ValueError("no messy kinds to send")
        self.bodies, self.share = bodies, share
        smallest = min(weights[k] for k in kinds)
        counts = {k: max(1, round(weights[k] / smallest)) for k in kinds}
        if sum(counts.values()) > MAX_CYCLE:  # very uneven weights: keep the cycle short, the proportions close
            scale = MAX_CYCLE / sum(counts.values())
            counts = {k: max(1, round(n * scale)) for k, n in counts.items()}
        cycle = [k for k in kinds for _ in range(counts[k])]
        np.random.default_rng([seed, _SALT]).shuffle(cycle)
        self.cycle = cycle
        self.phase = unit(seed, 0, _SALT)

    def pick(self, index: int) -> MessyRequest | None:
        if self.share <= 0:
            return None
        before = math.floor(index * self.share + self.phase)
        if math.floor((index + 1) * self.share + self.phase) == before:
            return None
        turn, at = divmod(before, len(self.cycle))
        bodies = self.bodies[self.cycle[at]]
        return bodies[turn % len(bodies)]
