"""The capacity search: the highest arrival rate a deployment carries within its SLO.

Pure logic over a ``measure(rate) -> Step`` callable, so the search can be tested against a
simulated server in milliseconds and run against a real one by ``loadtest capacity``.

The search is MLPerf LoadGen's FindPeakPerformance: an exponential ramp (multiply the rate (by 2,
by default) while steps pass; divide it while they fail) finds a passing rate and a failing one, then a binary search
narrows the gap until it is within ``resolution`` of the passing rate. A step passes when all of
these hold:

- the SLO percentile of ``response`` latency (from the intended send time) is within the budget;
- the error rate (errors and timeouts over finished requests) is within the error budget;
- the achieved rate, successful responses over the requests the schedule called for, is at least
  ``min_achieved`` of it: a server that sheds or falls behind does not carry the rate;
- the percentile rests on enough samples (MLPerf's rule: 662 for p99), else it means nothing.

The achieved rate is read against the schedule's own count, not the nominal rate, so Poisson
noise in a short step (about 4% at 500 arrivals) does not fail a step that kept up.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from loadtest.analysis.sample_size import samples_needed
from loadtest.gates.thresholds import GateError, parse_threshold

PERCENTILE_STATS = {"p50": 50.0, "p90": 90.0, "p95": 95.0, "p99": 99.0, "p99.9": 99.9}


@dataclass(frozen=True)
class Slo:
    """What a deployment must hold at its capacity."""

    stat: str = "p99"
    budget_ms: float = 100.0
    max_error_rate: float = 0.01
    min_achieved: float = 0.95
    metric: str = "response"

    @property
    def percentile(self) -> float:
        return PERCENTILE_STATS[self.stat]

    @property
    def text(self) -> str:
        return f"{self.stat} < {self.budget_ms:g}ms"


def parse_slo(text: str, max_error_rate: float = 0.01, min_achieved: float = 0.95) -> Slo:
    """``p99<100ms``, ``p99.9 < 0.5s``: a latency percentile of all traffic under a budget."""
    try:
        threshold = parse_threshold(text)
    except GateError as exc:
        raise GateError(f"--slo: {exc}") from None
    if threshold.stat not in PERCENTILE_STATS or threshold.op not in ("<", "<="):
        raise GateError(f"--slo {text!r}: expected a latency percentile under a budget, like 'p99<100ms'")
    if threshold.cls != "all":
        raise GateError(f"--slo {text!r}: capacity holds for all traffic; per-class capacity is searched by itself")
    if not 0 <= max_error_rate < 1:
        raise GateError(f"--max-error {max_error_rate:g}: must be a fraction in [0, 1)")
    return Slo(threshold.stat, threshold.limit, max_error_rate, min_achieved, threshold.metric)


@dataclass(frozen=True)
class Step:
    """One constant-rate run of the search and its verdict."""

    target_rps: float
    scheduled: int
    ok: int
    errors: int  # errors and timeouts
    latency_ms: float | None  # the SLO percentile
    p50_ms: float | None
    p99_ms: float | None
    duration_s: float
    passed: bool = False
    reasons: tuple[str, ...] = ()
    out_dir: str = ""

    @property
    def achieved_rps(self) -> float:
        return self.ok / self.duration_s if self.duration_s else 0.0

    @property
    def error_rate(self) -> float:
        finished = self.ok + self.errors
        return self.errors / finished if finished else 1.0

    def as_dict(self) -> dict:
        return {
            **asdict(self),
            "reasons": list(self.reasons),
            "achieved_rps": round(self.achieved_rps, 3),
            "error_rate": round(self.error_rate, 6),
        }


def judge_step(step: Step, slo: Slo) -> Step:
    """The step with its verdict and, when it fails, every reason why."""
    reasons = []
    needed = samples_needed(slo.percentile)
    if step.ok < needed:
        reasons.append(f"{slo.stat} rests on {step.ok} samples; it needs {needed}")
    if step.latency_ms is None or step.latency_ms > slo.budget_ms:
        shown = "none" if step.latency_ms is None else f"{step.latency_ms:.1f} ms"
        reasons.append(f"{slo.stat} {shown} over the {slo.budget_ms:g} ms budget")
    if step.error_rate > slo.max_error_rate:
        reasons.append(f"error rate {step.error_rate:.2%} over {slo.max_error_rate:.2%}")
    if step.scheduled and step.ok < slo.min_achieved * step.scheduled:
        reasons.append(f"achieved {step.ok / step.scheduled:.1%} of the scheduled requests")
    return Step(**{**asdict(step), "passed": not reasons, "reasons": tuple(reasons)})


def step_duration(rate: float, percentile: float, minimum: float = 5.0, maximum: float = 120.0) -> float:
    """Long enough that the percentile is sufficient with a tenth to spare, within the bounds.

    The spare covers Poisson arrivals falling short of the mean; a step is judged on the samples it
    got, so one that still falls short fails on that, and says so.
    """
    return min(maximum, max(minimum, math.ceil(samples_needed(percentile) * 1.1 / rate)))


@dataclass(frozen=True)
class SearchSettings:
    start_rps: float
    factor: float = 2.0  # the ramp's step: MLPerf doubles; from a good estimate, a smaller step wastes less
    resolution: float = 0.05  # stop when the failing rate is within this fraction above the passing one
    min_rps: float = 0.5
    max_rps: float = 100_000.0
    max_steps: int = 16


@dataclass
class SearchResult:
    capacity_rps: float | None  # the highest passing target rate; None if no rate passed
    steps: list[Step] = field(default_factory=list)
    lowest_failing_rps: float | None = None
    stopped: str = ""  # why the search ended

    @property
    def knee_rps(self) -> float | None:
        return knee([(s.target_rps, s.latency_ms) for s in self.steps if s.latency_ms is not None])


def search(measure: Callable[[float], Step], settings: SearchSettings) -> SearchResult:
    """Ramp then bisect, as MLPerf's FindPeakPerformance; ``measure`` runs one judged step."""
    if settings.factor <= 1:
        raise ValueError("the ramp factor must be above 1")
    result = SearchResult(None)
    passing, failing = None, None
    rate = settings.start_rps
    while len(result.steps) < settings.max_steps:
        step = measure(rate)
        result.steps.append(step)
        if step.passed:
            passing = max(passing or 0.0, rate)
        else:
            failing = rate if failing is None else min(failing, rate)
        if passing is None:  # nothing passed yet: step down
            rate /= settings.factor
            if rate < settings.min_rps:
                result.stopped = f"no rate down to {settings.min_rps:g} req/s held the SLO"
                break
        elif failing is None or failing <= passing:  # nothing above the passing rate failed yet: double
            if failing is not None:
                failing = None  # a pass above a failure: noise; search above the higher pass
            rate = passing * settings.factor
            if rate > settings.max_rps:
                result.stopped = f"the SLO held up to the {settings.max_rps:g} req/s limit"
                break
        else:
            if (failing - passing) / passing <= settings.resolution:
                result.stopped = f"bracketed within {settings.resolution:.0%}"
                break
            rate = (passing + failing) / 2
    else:
        result.stopped = f"step limit ({settings.max_steps}) reached"
    result.capacity_rps, result.lowest_failing_rps = passing, failing
    return result


def knee(points: list[tuple[float, float]]) -> float | None:
    """The knee of a throughput–latency curve: the rate where latency starts to climb steeply.

    Kneedle (Satopää et al., 2011) on the curve scaled to the unit square: the point farthest
    below the chord from the lightest to the heaviest load. Latency rises convexly with load, so
    that point is where the curve turns from flat to steep. Needs three rates or more.
    """
    pts = sorted(points)
    if len(pts) < 3:
        return None
    (x0, y0), (x1, y1) = pts[0], pts[-1]
    if x1 <= x0 or y1 <= y0:
        return None  # latency never rose: no knee within the rates measured
    best, best_gap = None, 0.0
    for x, y in pts[1:-1]:
        gap = (x - x0) / (x1 - x0) - (y - y0) / (y1 - y0)
        if gap > best_gap:
            best, best_gap = x, gap
    return best
