"""The cost model: measured capacity per instance and a price, turned into cost per prediction at scale.

Pure functions over plain numbers, so every figure can be checked by hand (``tests/test_cost.py``
does). The rules, in the order they apply:

- Provision for the **peak**, not the mean: peak rate = mean rate x peak factor x growth.
- Run instances at a **target utilisation** below capacity (0.7 by default): headroom for bursts
  and for the knee, which comes before 100%.
- Whole instances, and at least ``min_instances`` (2 by default) for redundancy. That floor is
  why cost per prediction falls steeply as traffic grows from small, then flattens: cost curves
  are not linear.
- A month is 730 hours. Predictions per month are the *mean* rate times the month.
- A per-request price (a managed endpoint) scales linearly; where it crosses an instance price is
  where to switch.
- Capacity of the most expensive request class gives the worst case: traffic that drifts toward
  long inputs needs that many instances.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from loadtest.config.profile import Price
from loadtest.errors import ExitCode, LoadTestError

HOURS_PER_MONTH = 730.0
SECONDS_PER_MONTH = HOURS_PER_MONTH * 3600


class ForecastError(LoadTestError, ValueError):
    """A forecast string that cannot be understood; the message says which part and why (an input error)."""

    exit_code = ExitCode.USAGE


@dataclass(frozen=True)
class Forecast:
    mean_rps: float
    peak_factor: float = 1.0
    growth: tuple[float, ...] = (1.0,)


@dataclass(frozen=True)
class Plan:
    growth: float
    mean_rps: float
    peak_rps: float
    instances: int | None  # None for a per-request price
    monthly_cost: float
    per_million: float  # cost per 1M predictions
    utilisation_at_peak: float | None  # of the provisioned capacity


_PART = re.compile(r"^(mean|peak|growth)=(.+)$")


def parse_forecast(text: str) -> Forecast:
    """``mean=200/s peak=3x growth=1,10,100``: mean rate, peak-to-mean factor, traffic multiples."""
    values: dict[str, str] = {}
    for part in text.split():
        match = _PART.match(part)
        if not match:
            raise ForecastError(f"forecast part {part!r}: expected mean=RATE/s, peak=FACTORx or growth=N,N,...")
        if match[1] in values:
            raise ForecastError(f"forecast: {match[1]} given twice")
        values[match[1]] = match[2]
    if "mean" not in values:
        raise ForecastError("forecast: mean=RATE/s is required, e.g. mean=200/s")
    mean = _number(values["mean"].removesuffix("/s"), "mean")
    peak = _number(values.get("peak", "1x").removesuffix("x"), "peak")
    if peak < 1:
        raise ForecastError(f"forecast: peak={values['peak']} is below the mean; the peak factor is at least 1x")
    growth = tuple(_number(g, "growth") for g in values.get("growth", "1").split(","))
    if mean <= 0 or any(g <= 0 for g in growth):
        raise ForecastError("forecast: the mean rate and every growth multiple must be above 0")
    return Forecast(mean, peak, growth)


def _number(text: str, name: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ForecastError(f"forecast: {name}={text!r} is not a number") from None
    if not math.isfinite(value):
        raise ForecastError(f"forecast: {name}={text!r} is not a finite number")
    return value


def instances_needed(peak_rps: float, capacity_rps: float, target_utilisation: float = 0.7, minimum: int = 2) -> int:
    """Whole instances that carry the peak at the target utilisation, and never fewer than ``minimum``."""
    if capacity_rps <= 0:
        raise ValueError("capacity per instance must be above 0")
    if not 0 < target_utilisation <= 1:
        raise ValueError("target utilisation must be in (0, 1]")
    return max(minimum, math.ceil(peak_rps / (capacity_rps * target_utilisation) - 1e-9))


def plan(
    forecast: Forecast,
    price: Price,
    capacity_rps: float | None,
    target_utilisation: float = 0.7,
    minimum: int = 2,
) -> list[Plan]:
    """One plan per growth multiple: instances at the peak, monthly cost, cost per 1M predictions."""
    plans = []
    for growth in forecast.growth:
        mean = forecast.mean_rps * growth
        peak = mean * forecast.peak_factor
        predictions = mean * SECONDS_PER_MONTH
        if price.per_request is not None:
            monthly = predictions * price.per_request
            plans.append(Plan(growth, mean, peak, None, monthly, price.per_request * 1e6, None))
            continue
        if capacity_rps is None:
            raise ValueError("an instance price needs the measured capacity per instance")
        n = instances_needed(peak, capacity_rps, target_utilisation, minimum)
        monthly = n * price.per_hour * HOURS_PER_MONTH
        plans.append(Plan(growth, mean, peak, n, monthly, monthly / predictions * 1e6, peak / (n * capacity_rps)))
    return plans


def crossover_rps(
    capacity_rps: float,
    per_hour: float,
    per_request: float,
    target_utilisation: float = 0.7,
    minimum: int = 2,
    peak_factor: float = 1.0,
) -> float | None:
    """The lowest mean rate at which instances cost no more per month than the per-request price; None if never.

    Each instance costs the same and carries the same mean traffic (capacity x utilisation / peak
    factor), so instances win for good only if that traffic, priced per request, costs at least an
    instance-month. Then they win from the rate where per-request spending reaches the cost of the
    instance floor. Past each later step up in instances the per-request price can briefly win again,
    which the cost chart shows.
    """
    per_instance_month = per_hour * HOURS_PER_MONTH
    carried = capacity_rps * target_utilisation / peak_factor  # mean req/s one instance carries
    if carried * SECONDS_PER_MONTH * per_request < per_instance_month:
        return None
    return minimum * per_instance_month / (per_request * SECONDS_PER_MONTH)


# -- many options over a range of traffic ---------------------------------------------------------


@dataclass(frozen=True)
class Option:
    """One way to serve the traffic: a price, and for an instance price the capacity of one instance."""

    name: str
    price: Price
    capacity_rps: float | None = None  # per instance, at the SLO; unused for a per-request price

    def __post_init__(self) -> None:
        if self.price.per_hour is not None and not (self.capacity_rps or 0) > 0:
            raise ValueError(f"{self.name}: an instance price needs a capacity per instance above 0")


@dataclass(frozen=True)
class Crossover:
    """Above ``mean_rps`` the cheapest options are ``to``; just below it they were ``before``."""

    mean_rps: float
    before: tuple[str, ...]
    to: tuple[str, ...]


def monthly_cost(
    option: Option, mean_rps: float, peak_factor: float = 1.0, target_utilisation: float = 0.7, minimum: int = 2
) -> float:
    """What ``option`` costs a month at this mean rate: as ``plan`` counts it."""
    price = option.price
    if price.per_request is not None:
        return mean_rps * SECONDS_PER_MONTH * price.per_request
    n = instances_needed(mean_rps * peak_factor, option.capacity_rps, target_utilisation, minimum)
    return n * price.per_hour * HOURS_PER_MONTH


def per_million(
    option: Option, mean_rps: float, peak_factor: float = 1.0, target_utilisation: float = 0.7, minimum: int = 2
) -> float:
    """Cost per 1M predictions at this mean rate (above 0)."""
    cost = monthly_cost(option, mean_rps, peak_factor, target_utilisation, minimum)
    return cost / (mean_rps * SECONDS_PER_MONTH) * 1e6


def step_rates(
    capacity_rps: float,
    low: float,
    high: float,
    peak_factor: float = 1.0,
    target_utilisation: float = 0.7,
    minimum: int = 2,
) -> list[float]:
    """The mean rates in [low, high) just above which one more instance is needed.

    One instance carries ``capacity x utilisation / peak factor`` of mean traffic, so the k-th step is
    at k times that, for every k from the redundancy floor up. Between two steps the monthly cost is
    constant and the cost per prediction falls as 1 / rate: the sawtooth of the cost chart.
    """
    carried = capacity_rps * target_utilisation / peak_factor
    k = max(minimum, math.ceil(low / carried - 1e-9))
    steps = []
    while k * carried < high:
        steps.append(k * carried)
        k += 1
    return steps


def cheapest_segments(
    options: list[Option],
    low: float,
    high: float,
    peak_factor: float = 1.0,
    target_utilisation: float = 0.7,
    minimum: int = 2,
) -> list[tuple[float, float, tuple[str, ...]]]:
    """The cheapest options on each stretch of mean rates in (low, high], exactly: ``(start, end, names)``.

    Instance costs are step functions of the rate, constant between their steps; per-request costs are
    lines through zero, so the cheapest of them is the one with the lowest price at every rate. On each
    stretch between two steps the cheapest is then the cheapest constant, or the cheapest line up to
    where it reaches that constant. Options that cost the same on a stretch are cheapest together.
    """
    if not options:
        return []
    instances = [o for o in options if o.price.per_request is None]
    lines = [o for o in options if o.price.per_request is not None]
    slope = min((o.price.per_request for o in lines), default=math.inf) * SECONDS_PER_MONTH  # $/month per req/s
    line_names = tuple(o.name for o in lines if math.isclose(o.price.per_request * SECONDS_PER_MONTH, slope))
    points = {low, high}
    for o in instances:
        points.update(step_rates(o.capacity_rps, low, high, peak_factor, target_utilisation, minimum))
    points = sorted(p for p in points if low <= p <= high)

    segments: list[tuple[float, float, tuple[str, ...]]] = []

    def add(start: float, end: float, names: tuple[str, ...]) -> None:
        if segments and segments[-1][2] == names:
            segments[-1] = (segments[-1][0], end, names)
        elif end > start:
            segments.append((start, end, names))

    for start, end in zip(points, points[1:], strict=False):
        middle = (start + end) / 2
        costs = {o.name: monthly_cost(o, middle, peak_factor, target_utilisation, minimum) for o in instances}
        floor = min(costs.values(), default=math.inf)
        floor_names = tuple(name for name, cost in costs.items() if math.isclose(cost, floor, rel_tol=1e-9))
        meets = floor / slope if slope else math.inf  # where the cheapest line reaches the cheapest constant
        if meets >= end:
            add(start, end, line_names)
        elif meets <= start:
            add(start, end, floor_names)
        else:
            add(start, meets, line_names)
            add(meets, end, floor_names)
    return segments


def crossovers(segments: list[tuple[float, float, tuple[str, ...]]]) -> list[Crossover]:
    """Every mean rate where the cheapest options change, from ``cheapest_segments``' stretches."""
    return [Crossover(after[0], before[2], after[2]) for before, after in zip(segments, segments[1:], strict=False)]
