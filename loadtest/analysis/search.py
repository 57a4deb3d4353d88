"""The capacity search: the highest arrival rate a deployment carries within its SLO, confirmed.

Pure logic over a ``measure(rate, samples=, role=) -> Step`` callable, so the search can be tested
against a simulated server in milliseconds and run against a real one by ``loadtest capacity``.

The search is MLPerf LoadGen's FindPeakPerformance: an exponential ramp (multiply the rate (by 2,
by default) while steps pass; divide it while they fail) finds a passing rate and a failing one, then a binary search
narrows the gap until it is within ``resolution`` of the passing rate. A step passes when all of
these hold:

- the SLO percentile of ``response`` latency (from the intended send time) is within the budget,
  and so is every further bound the SLO has (a generative endpoint's ``ttft_p99 < 500ms`` and
  ``tpot_p99 < 50ms`` together);
- the error rate (errors and timeouts over finished requests) is within the error budget;
- the achieved rate, successful responses over the requests the schedule called for, is at least
  ``min_achieved`` of it: a server that sheds or falls behind does not carry the rate;
- the percentile rests on enough samples (MLPerf's rule: 662 for p99), else it means nothing.

The achieved rate is read against the schedule's own count, not the nominal rate, so Poisson
noise in a short step (about 4% at 500 arrivals) does not fail a step that kept up.

One step is one draw, and near the capacity a percentile is at its noisiest: one back-to-back
search found 96, the next 81 req/s. So the boundary is confirmed (``confirm`` runs, 2 by
default): once bracketed, the highest passing rate and the lowest failing one are each run again.
A rate holds only when it passed every run; a rate that failed any run fails, so a boundary rate
that flips counts as failing and the bisection goes on below it. The capacity is the highest
rate that held in every one of its runs.

How many samples a step collects: while the ramp has seen no failure, MLPerf's minimum for the
percentile (``samples_needed``: 130 for p95), since those rates are far from the boundary. From
the first failure on, every step is near the boundary and collects enough for the percentile to be
*known*, not just to exist (``precise_samples``: its rank within a fifth of the tail, at 95%
confidence: 1,825 for p95). A simulated M/G/1 server (9 ms a request, ``tests/test_search.py``)
shows why: at a rate whose long-run p95 is 150 ms, 40 draws of a 130-sample step failed 22 times,
of a 1,825-sample step 39 times; over 45 simulated searches each, the capacities' coefficient of
variation was 6.7% with one 5 s run per rate, 5.8% with confirmation alone, 3.5% with confirmation
and 1,825-sample steps near the boundary. When two runs of
a rate still disagree (their verdicts differ, or their percentiles by more than ``noise_share`` of
the budget), the steps after it collect ``lengthen`` times as many, up to ``max_length`` times.

A step that fails on a disturbed run failed on someone else's account, not the server's: a run
that is not trustworthy (``Step.trusted``: the load generator was late, starved or lost a worker),
or one whose server shared its cores with other work (``Step.other_work``, ``other_work_limit`` of
them or more). It is kept in the record, left out of the verdicts, and run once more; the second
run counts, disturbed or not. On a shared machine, where other work takes a core for seconds at a
time, that keeps one bad stretch from setting the capacity.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Protocol

from loadtest.analysis.sample_size import samples_needed
from loadtest.gates.thresholds import GateError, parse_threshold

PERCENTILE_STATS = {"p50": 50.0, "p90": 90.0, "p95": 95.0, "p99": 99.0, "p99.9": 99.9}
SEARCH, CONFIRM = "search", "confirm"  # a step's role: finding the boundary, or running a boundary rate again


@dataclass(frozen=True)
class Bound:
    """One more latency percentile the SLO bounds, beside its first (``tpot_p99 < 50ms``)."""

    stat: str
    budget_ms: float
    metric: str = "response"

    @property
    def text(self) -> str:
        return _bound_text(self.stat, self.budget_ms, self.metric)


def _bound_text(stat: str, budget_ms: float, metric: str) -> str:
    return f"{stat if metric == 'response' else f'{metric}_{stat}'} < {budget_ms:g}ms"


@dataclass(frozen=True)
class Slo:
    """What a deployment must hold at its capacity."""

    stat: str = "p99"
    budget_ms: float = 100.0
    max_error_rate: float = 0.01
    min_achieved: float = 0.95
    metric: str = "response"
    also: tuple[Bound, ...] = ()  # further percentiles that must hold too

    @property
    def percentile(self) -> float:
        """The highest percentile bounded: what decides how many samples a step needs."""
        return max(PERCENTILE_STATS[s] for s in (self.stat, *(b.stat for b in self.also)))

    @property
    def text(self) -> str:
        return " and ".join([_bound_text(self.stat, self.budget_ms, self.metric), *(b.text for b in self.also)])


def parse_slo(text: str | Sequence[str], max_error_rate: float = 0.01, min_achieved: float = 0.95) -> Slo:
    """``p99<100ms``, ``p99.9 < 0.5s``, ``ttft_p99 < 500ms``: latency percentiles of all traffic under budgets.

    Several (a sequence, as ``--slo`` given more than once) must all hold; the first is the one the
    search's steps are plotted and compared by.
    """
    texts = [text] if isinstance(text, str) else list(text)
    if not texts:
        raise GateError("--slo: give at least one, like 'p99<100ms'")
    bounds = []
    for one in texts:
        try:
            threshold = parse_threshold(one)
        except GateError as exc:
            raise GateError(f"--slo: {exc}") from None
        if threshold.stat not in PERCENTILE_STATS or threshold.op not in ("<", "<="):
            raise GateError(f"--slo {one!r}: expected a latency percentile under a budget, like 'p99<100ms'")
        if threshold.cls != "all":
            raise GateError(f"--slo {one!r}: capacity holds for all traffic; per-class capacity is searched by itself")
        bounds.append(Bound(threshold.stat, threshold.limit, threshold.metric))
    if not 0 <= max_error_rate < 1:
        raise GateError(f"--max-error {max_error_rate:g}: must be a fraction in [0, 1)")
    first = bounds[0]
    return Slo(first.stat, first.budget_ms, max_error_rate, min_achieved, first.metric, tuple(bounds[1:]))


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
    role: str = SEARCH
    drain: dict | None = None  # how long the server took to become idle before it (``engine.idle``)
    trusted: bool | None = None  # the run's trust verdict: False when its latencies are partly the generator's
    distrust: tuple[str, ...] = ()  # why not, each rule's message
    other_work: float | None = None  # the share of the server's cores other processes kept busy during it
    counted: bool = True  # False: a failure on a disturbed run, run once more and left out of the verdicts
    also_ms: tuple[float | None, ...] = ()  # the SLO's further bounds' percentiles, in its order

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
            "distrust": list(self.distrust),
            "also_ms": list(self.also_ms),
            "achieved_rps": round(self.achieved_rps, 3),
            "error_rate": round(self.error_rate, 6),
        }


def judge_step(step: Step, slo: Slo) -> Step:
    """The step with its verdict and, when it fails, every reason why."""
    reasons = []
    needed = samples_needed(slo.percentile)
    if step.ok < needed:
        reasons.append(f"{slo.stat} rests on {step.ok} samples; it needs {needed}")
    first = Bound(slo.stat, slo.budget_ms, slo.metric)
    values = [step.latency_ms, *step.also_ms, *([None] * (len(slo.also) - len(step.also_ms)))]
    for bound, value in zip((first, *slo.also), values, strict=True):
        if value is None or value > bound.budget_ms:
            shown = "none" if value is None else f"{value:.1f} ms"
            name = bound.stat if bound.metric == "response" else f"{bound.metric}_{bound.stat}"
            reasons.append(f"{name} {shown} over the {bound.budget_ms:g} ms budget")
    if step.error_rate > slo.max_error_rate:
        reasons.append(f"error rate {step.error_rate:.2%} over {slo.max_error_rate:.2%}")
    if step.scheduled and step.ok < slo.min_achieved * step.scheduled:
        reasons.append(f"achieved {step.ok / step.scheduled:.1%} of the scheduled requests")
    return replace(step, passed=not reasons, reasons=tuple(reasons))


def step_duration(rate: float, samples: int, minimum: float = 5.0, maximum: float = 120.0) -> float:
    """Long enough for ``samples`` responses with a tenth to spare, within the bounds.

    The spare covers Poisson arrivals falling short of the mean; a step is judged on the samples it
    got (against MLPerf's minimum), so one that still falls short fails on that, and says so.
    """
    return min(maximum, max(minimum, math.ceil(samples * 1.1 / rate)))


def precise_samples(percentile: float, share: float = 0.2, z: float = 1.96) -> int:
    """Samples for the percentile to be known: its rank within ``share`` of the tail, at 95% confidence.

    With n samples, the rank of the measured q-quantile scatters by sqrt(q (1 - q) / n); asking that
    ``z`` of it stay within ``share`` of the tail (1 - q) gives n = z² q / (share² (1 - q)): 1,825
    for p95 (the measured p95 lies between the true p94 and p96), 9,508 for p99. Never below
    MLPerf's minimum.
    """
    q = percentile / 100
    if q >= 1:
        return samples_needed(percentile)
    return max(samples_needed(percentile), math.ceil(z * z * q / (share * share * (1 - q))))


class Measure(Protocol):
    def __call__(self, rate: float, *, samples: int, role: str) -> Step: ...


@dataclass(frozen=True)
class SearchSettings:
    start_rps: float
    factor: float = 2.0  # the ramp's step: MLPerf doubles; from a good estimate, a smaller step wastes less
    resolution: float = 0.05  # stop when the failing rate is within this fraction above the passing one
    min_rps: float = 0.5
    max_rps: float = 100_000.0
    max_steps: int = 16  # confirmations included; the last ones are kept for confirming the boundary
    confirm: int = 2  # runs a boundary rate is given; a rate holds only when it passed all of them
    percentile: float = 99.0  # the SLO's percentile: how many samples a step collects
    budget_ms: float | None = None  # the SLO's budget, against which two runs' percentiles are compared
    precision: float = 0.2  # near the boundary, the percentile's rank within this share of the tail
    noise_share: float = 0.2  # two runs of a rate disagree when their percentiles differ by more of the budget
    lengthen: float = 2.0  # what the steps after a disagreement are multiplied by
    max_length: float = 2.0  # once: on a machine whose noise is other work, longer steps buy nothing
    other_work_limit: float = 0.2  # a run whose server's cores were this busy with other work is disturbed

    def disturbed(self, step: Step) -> bool:
        """Whether a run's verdict may be someone else's: its generator's, or other work's on the server's cores."""
        return step.trusted is False or (step.other_work or 0.0) >= self.other_work_limit

    def samples(self, near_boundary: bool, length: float) -> int:
        """What a step collects: MLPerf's minimum on the ramp, a known percentile near the boundary; times the noise."""
        base = precise_samples(self.percentile, self.precision) if near_boundary else samples_needed(self.percentile)
        return math.ceil(base * length)


@dataclass
class SearchResult:
    capacity_rps: float | None  # the highest rate that passed every one of its (``confirm``) runs
    steps: list[Step] = field(default_factory=list)
    lowest_failing_rps: float | None = None  # the lowest rate above the capacity that failed a run
    stopped: str = ""  # why the search ended
    failing_confirmed: bool = False  # the lowest failing rate failed every one of its ``confirm`` runs
    flipped: list[float] = field(default_factory=list)  # rates whose runs gave both verdicts
    length: float = 1.0  # the multiplier of the steps' samples the search ended with (the noise it saw)

    @property
    def knee_rps(self) -> float | None:
        return knee([(s.target_rps, s.latency_ms) for s in self.steps if s.latency_ms is not None])

    @property
    def interval(self) -> tuple[float | None, float | None]:
        """Where the capacity lies: from the highest confirmed passing rate up to the lowest failing one."""
        return self.capacity_rps, self.lowest_failing_rps


class _Runs:
    """Every run so far, by rate, and the bounds they give."""

    def __init__(self, confirm: int) -> None:
        self.confirm = confirm
        self.by_rate: dict[float, list[Step]] = {}

    def add(self, step: Step) -> None:
        self.by_rate.setdefault(step.target_rps, []).append(step)

    def holds(self, rate: float) -> bool:
        return all(s.passed for s in self.by_rate[rate])

    def passing(self) -> float | None:
        """The highest rate that passed every run so far (confirmed or not)."""
        return max((r for r in self.by_rate if self.holds(r)), default=None)

    def confirmed(self) -> float | None:
        return max((r for r in self.by_rate if self.holds(r) and len(self.by_rate[r]) >= self.confirm), default=None)

    def failing(self, above: float | None) -> float | None:
        """The lowest rate above ``above`` that failed a run; lower failures are noise a higher pass outweighs."""
        return min((r for r in self.by_rate if not self.holds(r) and (above is None or r > above)), default=None)

    def runs_needed(self, rate: float | None) -> int:
        if rate is None:
            return 0
        if self.holds(rate) or len(self.by_rate[rate]) == 1:
            return max(0, self.confirm - len(self.by_rate[rate]))
        return 0  # a rate that failed once and passed once is settled: failing


def _next(runs: _Runs, settings: SearchSettings, steps_left: int) -> tuple[float | None, str, str]:
    """The next rate to run and its role; or no rate and why the search ends."""
    passing = runs.passing()
    failing = runs.failing(passing)
    if passing is None:  # nothing passed yet: step down
        rate = min(runs.by_rate) / settings.factor
        if rate < settings.min_rps:
            return None, "", f"no rate down to {settings.min_rps:g} req/s held the SLO"
        return rate, SEARCH, ""
    to_confirm = [r for r in (passing, failing) if runs.runs_needed(r)]
    narrow = failing is not None and (failing - passing) / passing <= settings.resolution
    if to_confirm and (narrow or steps_left <= sum(runs.runs_needed(r) for r in to_confirm)):
        return to_confirm[0], CONFIRM, ""
    if failing is None:  # nothing above the passing rate failed yet: ramp up
        rate = passing * settings.factor
        if rate > settings.max_rps:
            return None, "", f"the SLO held up to the {settings.max_rps:g} req/s limit"
        return rate, SEARCH, ""
    if narrow:
        held = f"{settings.confirm} of {settings.confirm} runs" if settings.confirm > 1 else "its run"
        return None, "", f"bracketed within {settings.resolution:.0%}; the capacity held in {held}"
    return (passing + failing) / 2, SEARCH, ""


def disagree(a: Step, b: Step, budget_ms: float | None, share: float) -> bool:
    """Two runs of one rate disagree: opposite verdicts, or percentiles further apart than ``share`` of the budget."""
    if a.passed != b.passed:
        return True
    if budget_ms is None or a.latency_ms is None or b.latency_ms is None:
        return False
    return abs(a.latency_ms - b.latency_ms) > share * budget_ms


def search(measure: Measure, settings: SearchSettings) -> SearchResult:
    """Ramp, bisect, confirm the boundary; ``measure`` runs one judged step of so many samples, in that role."""
    if settings.factor <= 1:
        raise ValueError("the ramp factor must be above 1")
    if settings.confirm < 1:
        raise ValueError("a rate needs at least one run")
    result = SearchResult(None)
    runs = _Runs(settings.confirm)
    rate, role, retried = settings.start_rps, SEARCH, False
    while len(result.steps) < settings.max_steps:
        near = any(not s.passed for s in result.steps if s.counted)
        step = measure(rate, samples=settings.samples(near, result.length), role=role)
        if not step.passed and settings.disturbed(step) and not retried:
            result.steps.append(replace(step, counted=False))  # someone else's verdict, not the server's
            retried = True
            continue
        result.steps.append(step)
        runs.add(step)
        _note_noise(result, runs.by_rate[step.target_rps], settings)
        rate, role, why = _next(runs, settings, settings.max_steps - len(result.steps))
        retried = False
        if rate is None:
            result.stopped = why
            break
    else:
        result.stopped = f"step limit ({settings.max_steps}) reached"
    result.capacity_rps = runs.confirmed()
    result.lowest_failing_rps = runs.failing(result.capacity_rps)
    if result.lowest_failing_rps is not None:
        failed = runs.by_rate[result.lowest_failing_rps]
        result.failing_confirmed = len(failed) >= settings.confirm and not any(s.passed for s in failed)
    return result


def _note_noise(result: SearchResult, runs: list[Step], settings: SearchSettings) -> None:
    """When a rate's last two runs disagree, later steps are longer, and a flip is kept for the record."""
    if len(runs) < 2 or not disagree(runs[-2], runs[-1], settings.budget_ms, settings.noise_share):
        return
    result.length = min(settings.max_length, result.length * settings.lengthen)
    if runs[-2].passed != runs[-1].passed:
        result.flipped.append(runs[-1].target_rps)


@dataclass(frozen=True)
class Spread:
    """How far repeated searches of one deployment agree: their median and the furthest from it."""

    capacities: tuple[float | None, ...]
    median_rps: float | None
    min_rps: float | None
    max_rps: float | None
    spread: float | None  # the largest distance from the median, as a share of it; None if a search found none

    def as_dict(self) -> dict:
        return {**asdict(self), "capacities": list(self.capacities), "searches": len(self.capacities)}


def spread(capacities: Sequence[float | None]) -> Spread:
    """The median (the lower middle one for an even count: a rate that was measured, erring low) and the spread.

    A search that found no capacity counts as the lowest; if it is the median, there is no capacity.
    """
    ranked = sorted(capacities, key=lambda c: -1.0 if c is None else c)
    median = ranked[(len(ranked) - 1) // 2] if ranked else None
    if median is None or None in ranked:
        return Spread(tuple(capacities), median, None, None, None)
    low, high = ranked[0], ranked[-1]
    return Spread(tuple(capacities), median, low, high, max(median - low, high - median) / median)


def _held(slo: Slo) -> str:
    """``p95 stayed under 100 ms``; with further bounds, each named with its metric."""
    bounds = [Bound(slo.stat, slo.budget_ms, slo.metric), *slo.also]
    names = [b.stat if b.metric == "response" else f"{b.metric}_{b.stat}" for b in bounds]
    parts = [f"{name} under {b.budget_ms:g} ms" for name, b in zip(names, bounds, strict=True)]
    return parts[0].replace(" under", " stayed under", 1) + "".join(f" and {part}" for part in parts[1:])


def rule_text(slo: Slo, settings: SearchSettings, step_s: tuple[float, float], idle: str, searches: int = 1) -> str:
    """The rule a capacity was found by, in words a reader can check against the steps in capacity.json."""
    runs = f"{settings.confirm} of {settings.confirm} runs" if settings.confirm > 1 else "one run"
    ramp, near = samples_needed(slo.percentile), precise_samples(slo.percentile, settings.precision)
    text = (
        f"capacity = the highest constant rate at which {_held(slo)}, errors "
        f"within {slo.max_error_rate:.1%} and {slo.min_achieved:.0%} or more of the schedule succeeded, in {runs}, "
        f"each started from an idle server ({idle}); a rate that failed any run counts as failing, but a failure "
        f"on a disturbed run (untrustworthy, or the server's cores {settings.other_work_limit:.0%} or more busy "
        f"with other work) is run once more and only that run counts; steps last for {ramp:,} samples "
        f"(MLPerf's minimum) until a rate fails, then {near:,} (the {slo.stat}'s rank within "
        f"{settings.precision:.0%} of the tail, 95% confidence), {step_s[0]:g} s to {step_s[1]:g} s, and "
        f"{settings.lengthen:g}x that after two runs of a rate disagree (verdicts, or {slo.stat} by more than "
        f"{settings.noise_share:.0%} of the budget); the bisection stops within {settings.resolution:.0%}"
    )
    if searches > 1:
        text += f"; the median of {searches} whole searches"
    return text


def knee(points: list[tuple[float, float]]) -> float | None:
    """The knee of a throughput–latency curve: the rate where latency starts to climb steeply.

    Kneedle (Satopää et al., 2011) on the curve scaled to the unit square: the point farthest
    below the chord from the lightest to the heaviest load. Latency rises convexly with load, so
    that point is where the curve turns from flat to steep. Needs three rates or more; runs of one
    rate count as their mean.
    """
    by_rate: dict[float, list[float]] = {}
    for x, y in points:
        by_rate.setdefault(x, []).append(y)
    pts = sorted((x, statistics.fmean(ys)) for x, ys in by_rate.items())
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
