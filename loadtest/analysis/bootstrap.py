"""Does variant B differ from variant A? Differences with bootstrap 95% confidence intervals.

``loadtest compare`` runs interleaved rounds, A B A B A B, each one run directory. Two kinds of
noise are in the figures, and the interval has to hold both:

- **Within a round**, latencies are autocorrelated: a queue that builds up slows the requests
  behind it, so neighbouring requests are not independent samples, and an i.i.d. bootstrap over
  requests gives intervals too narrow. Whole seconds are resampled instead (a block bootstrap
  with one-second blocks): with replacement, within each round (the strata), each round keeping
  its number of seconds. A resample's histogram is the weights (how often each second was
  drawn) times the seconds-by-buckets counts. Correlation that outlasts a second (a queue that
  stays long for several) is cut at the block edges; blocks of several seconds gained little
  on 20 s rounds in simulation and lost coverage where seconds were independent, so that part
  is left to the next point: a slow stretch makes its round scatter from the others.
- **Between rounds**, the machine drifts (other load, clocks, caches): a round as a whole is
  faster or slower. Resampling seconds within rounds holds each round fixed and cannot see
  this. It is estimated from how far the rounds' own estimates scatter beyond what their
  within-round noise explains (method of moments, as a random-effects meta-analysis does) and
  added to each resample as a normal draw of that variance. Three rounds estimate it roughly
  (two degrees of freedom), so the interval is widened by Student's t for the degrees of freedom
  the whole variance has (Satterthwaite's rule): not at all when the rounds agree, 1.42x when
  drift is all the noise in both variants with three rounds each, more when it is in one only.
  With one round per variant drift cannot be estimated, and only the within-round noise is in
  the interval.

A and B are resampled independently; the interval is the 2.5th to 97.5th percentile of the
resampled B minus A. Point estimates are on all the data: a percentile of the merged histogram
of a variant's measured seconds, exactly as hdrh computes it.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy.stats import t as student_t

from loadtest.analysis.sample_size import samples_needed
from loadtest.results.intervals import IntervalCounts, on_common_grid

PERCENTILES = (50.0, 95.0, 99.0, 99.9)
LEVEL = 0.95


@dataclass(frozen=True)
class Difference:
    """B against A on one metric; the interval is for ``diff``, B minus A."""

    metric: str
    a: float
    b: float
    diff: float
    relative: float | None  # diff / a; None when a is 0
    ci_low: float
    ci_high: float
    n_a: int  # samples: requests for a percentile, seconds for a ratio
    n_b: int
    sufficient: bool = True  # both variants have the samples MLPerf's rule asks of this percentile

    def significant(self) -> bool:
        return self.ci_low > 0 or self.ci_high < 0

    def as_dict(self) -> dict:
        return asdict(self)

    def verdict(self, lower_is_better: bool) -> str:
        """``better``, ``worse`` or ``no significant difference``: B relative to A."""
        if not self.significant():
            return "no significant difference"
        return "better" if (self.diff < 0) == lower_is_better else "worse"


@dataclass(frozen=True, eq=False)
class PerSecond:
    """One round of a ratio of sums, a value per second: the metric is sum(numerator) / sum(denominator)."""

    numerator: np.ndarray
    denominator: np.ndarray

    @classmethod
    def rate(cls, per_second: Sequence[float] | np.ndarray) -> PerSecond:
        """Something per second (ok requests: throughput): the denominator is one second per row."""
        values = np.asarray(per_second, dtype=np.float64)
        return cls(values, np.ones_like(values))


def second_weights(rng: np.random.Generator, seconds: Sequence[int], resamples: int) -> np.ndarray:
    """How often each second is drawn (resamples x all seconds): each round's own, as many draws as it has seconds."""
    return np.hstack([rng.multinomial(n, np.full(n, 1 / n), size=resamples) for n in seconds]).astype(np.float64)


def percentiles_resampled(
    weights: np.ndarray, cumulative: np.ndarray, values_ms: np.ndarray, percentiles: Sequence[float]
) -> np.ndarray:
    """hdrh's ``get_value_at_percentile`` of the histogram ``weights @ counts`` of each row: percentiles x rows.

    ``cumulative`` is the counts summed over buckets (seconds x buckets). A percentile is the first
    bucket whose cumulative count reaches its target; it is found by bisection, one bucket per
    row at a time, so the rows x buckets matrix of resampled histograms is never formed.
    """
    rows, buckets = len(weights), cumulative.shape[1]
    totals = weights @ cumulative[:, -1]
    out = np.zeros((len(percentiles), rows))
    for k, p in enumerate(percentiles):
        target = np.maximum(np.floor(min(p, 100.0) * totals / 100 + 0.5), 1)
        low, high = np.zeros(rows, dtype=np.int64), np.full(rows, buckets - 1)
        while (low < high).any():
            middle = (low + high) // 2
            reached = np.einsum("rs,sr->r", weights, cumulative[:, middle]) >= target
            low, high = np.where(reached, low, middle + 1), np.where(reached, middle, high)
        out[k] = np.where(totals > 0, values_ms[low], 0.0)
    return out


def between_round_variance(per_round: np.ndarray, within: np.ndarray, shares: np.ndarray) -> np.ndarray:
    """The variance a pooled estimate owes to drift between rounds, for each statistic (rows).

    ``per_round`` (statistics x rounds) are each round's own estimates, ``within`` their variance
    from resampling seconds, ``shares`` each round's share of the pooled data. The rounds scatter
    by drift plus within-round noise; what is beyond the noise is drift.
    """
    if per_round.shape[1] < 2:
        return np.zeros(len(per_round))
    drift = np.maximum(0.0, per_round.var(axis=1, ddof=1) - within.mean(axis=1))
    return drift * float(np.sum(shares**2))


def t_quantile(p: float, df: float) -> float:
    """Student's t quantile (p above 0.5), exact for any degrees of freedom, fractional included.

    The demo compares 3 rounds: 2 degrees of freedom, where a series approximation is least accurate.
    """
    if math.isinf(df):
        return statistics.NormalDist().inv_cdf(p)
    return float(student_t.ppf(p, df))


Statistic = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (weights, data) -> statistics x rows


@dataclass(frozen=True, eq=False)
class _Variant:
    point: np.ndarray  # statistics
    resampled: np.ndarray  # statistics x resamples, drift included
    drift: np.ndarray  # statistics: the part of the resampled variance that is drift between rounds
    rounds: int
    samples: int


def _bootstrap(
    rounds: Sequence[np.ndarray], statistic: Statistic, shares: np.ndarray, resamples: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(point estimates, resampled estimates, drift variance) of one variant's rounds (each seconds x columns)."""
    data = np.concatenate(rounds)
    seconds = [len(matrix) for matrix in rounds]
    weights = second_weights(rng, seconds, resamples)
    resampled = statistic(weights, data)
    ends = np.cumsum(seconds)
    within, per_round = [], []
    for end, n, matrix in zip(ends, seconds, rounds, strict=True):
        within.append(statistic(weights[:, end - n : end], matrix).var(axis=1, ddof=1))
        per_round.append(statistic(np.ones((1, n)), matrix)[:, 0])
    drift = between_round_variance(np.stack(per_round, axis=1), np.stack(within, axis=1), shares / shares.sum())
    resampled = resampled + rng.normal(size=resampled.shape) * np.sqrt(drift)[:, None]
    return statistic(np.ones((1, len(data))), data)[:, 0], resampled, drift


def _variant_percentiles(
    rounds: Sequence[IntervalCounts], percentiles: Sequence[float], resamples: int, rng: np.random.Generator
) -> _Variant:
    grid = on_common_grid(rounds)
    values_ms = grid[0].values_ms
    cumulative = [np.cumsum(part.counts, axis=1).astype(np.float64) for part in grid]
    samples = np.array([part.total for part in grid], dtype=np.float64)

    def statistic(weights: np.ndarray, data: np.ndarray) -> np.ndarray:
        return percentiles_resampled(weights, data, values_ms, percentiles)

    point, resampled, drift = _bootstrap(cumulative, statistic, samples, resamples, rng)
    return _Variant(point, resampled, drift, len(rounds), int(samples.sum()))


def _ratio(weights: np.ndarray, data: np.ndarray) -> np.ndarray:
    sums = weights @ data
    with np.errstate(divide="ignore", invalid="ignore"):
        return (sums[:, 0] / sums[:, 1])[None, :]


def _variant_ratio(rounds: Sequence[PerSecond], resamples: int, rng: np.random.Generator, name: str) -> _Variant:
    matrices = [np.column_stack([r.numerator, r.denominator]).astype(np.float64) for r in rounds]
    denominators = np.array([matrix[:, 1].sum() for matrix in matrices])
    if not denominators.all():
        raise ValueError(f"{name}: round {int(np.argmin(denominators != 0)) + 1} has a denominator of zero")
    point, resampled, drift = _bootstrap(matrices, _ratio, denominators, resamples, rng)
    return _Variant(point, resampled, drift, len(rounds), sum(len(matrix) for matrix in matrices))


def _check(a_rounds: Sequence, b_rounds: Sequence, resamples: int) -> None:
    if not a_rounds or not b_rounds:
        raise ValueError("each variant needs at least one round")
    if resamples < 2:
        raise ValueError("an interval needs at least two resamples")


def _interval(
    resampled: np.ndarray, drift_a: float, drift_b: float, a_rounds: int, b_rounds: int
) -> tuple[float, float]:
    """The percentile interval of B minus A, widened for how roughly a few rounds estimate their drift.

    The drift variance of a variant with R rounds rests on R - 1 degrees of freedom; by
    Satterthwaite's rule the whole variance has ``df`` of them, and the interval is widened about
    its median by t(df) / z: 1 when there is no drift, 1.42 when drift is all there is, 3 rounds a side.
    """
    tail = (1 - LEVEL) / 2
    low, middle, high = np.percentile(resampled, [tail * 100, 50, (1 - tail) * 100])
    drift = [(v, r - 1) for v, r in ((drift_a, a_rounds), (drift_b, b_rounds)) if v > 0 and r > 1]
    if not drift:
        return float(low), float(high)
    df = float(np.var(resampled)) ** 2 / sum(v**2 / n for v, n in drift)
    widen = t_quantile(1 - tail, max(df, 1.0)) / t_quantile(1 - tail, math.inf)
    return float(middle - widen * (middle - low)), float(middle + widen * (high - middle))


def _difference(metric: str, a: _Variant, b: _Variant, k: int, sufficient: bool = True) -> Difference:
    low, high = _interval(b.resampled[k] - a.resampled[k], a.drift[k], b.drift[k], a.rounds, b.rounds)
    a_point, b_point = float(a.point[k]), float(b.point[k])
    diff = b_point - a_point
    relative = diff / a_point if a_point else None
    return Difference(metric, a_point, b_point, diff, relative, low, high, a.samples, b.samples, sufficient)


def compare_percentiles(
    a_rounds: Sequence[IntervalCounts],
    b_rounds: Sequence[IntervalCounts],
    percentiles: Sequence[float] = PERCENTILES,
    resamples: int = 2000,
    seed: int = 0,
) -> list[Difference]:
    """B minus A for each latency percentile, in ms; ``sufficient`` by MLPerf's rule on the fewer samples."""
    _check(a_rounds, b_rounds, resamples)
    rng = np.random.default_rng(seed)
    a = _variant_percentiles(a_rounds, percentiles, resamples, rng)
    b = _variant_percentiles(b_rounds, percentiles, resamples, rng)
    return [
        _difference(f"p{p:g}", a, b, k, min(a.samples, b.samples) >= samples_needed(p))
        for k, p in enumerate(percentiles)
    ]


def compare_ratio(
    metric: str, a_rounds: Sequence[PerSecond], b_rounds: Sequence[PerSecond], resamples: int = 2000, seed: int = 0
) -> Difference:
    """B minus A for a ratio of per-second sums (throughput, CPU-seconds per request); n counts seconds."""
    _check(a_rounds, b_rounds, resamples)
    rng = np.random.default_rng(seed)
    a = _variant_ratio(a_rounds, resamples, rng, f"{metric} of A")
    b = _variant_ratio(b_rounds, resamples, rng, f"{metric} of B")
    return _difference(metric, a, b, 0)
