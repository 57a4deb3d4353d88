"""The cost projection: measured capacities, prices and a traffic forecast, turned into what each option costs.

Pure: the inputs arrive already read (``cost_inputs.py`` reads capacity searches, profiles and the
forecast), and the cost model (``cost.py``) does the arithmetic. ``price_options`` prices every
option into one JSON-able dict, the content of ``cost.json``; ``loadtest.report.cost`` renders it.

What is projected, for every option and every growth multiple of the forecast: instances needed
at the peak (whole, at least ``min_instances``, at the target utilisation), monthly cost and cost
per 1M predictions; the same for the most expensive request class alone; the cheapest option; and
every traffic level where the cheapest option changes, found exactly on the cost step functions.

Options come from two places: capacity searches (an instance price needs a measured capacity per
instance; a deployment profile given again, ``--profile``, replaces the price it was measured with)
and profiles with a per-request price (managed endpoints, ``--managed``, which need no capacity).

A generative workload's capacity search records its tokens a request (``tokens_per_request``):
then every plan also says what 1M output tokens cost, and a managed API priced per token is
priced at that workload's tokens, not at the ones its profile assumed, so the options compare on
the same traffic.
Every input error is a ``ConfigError`` naming the file (or the option) and the key.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from loadtest.analysis.cost import HOURS_PER_MONTH, Forecast, Option, cheapest_segments, crossovers, plan
from loadtest.config.profile import Price, Profile
from loadtest.errors import ConfigError

SCHEMA = "loadtest.cost/1"


@dataclass(frozen=True)
class Measured:
    """What a capacity search found for one profile, as its ``capacity.json`` records it."""

    source: str  # the capacity.json
    profile: str
    profile_source: str
    scenario: str
    slo: dict
    hardware: dict | None
    price: Price | None
    capacity_rps: float | None  # None: even the lowest rate tried failed the SLO
    knee_rps: float | None
    worst_class: str | None
    worst_class_capacity_rps: float | None
    tokens_per_request: dict | None = None  # a generative workload: {"output": mean, "input": mean or None}


def check_provisioning(utilisation: float, min_instances: int) -> None:
    """The provisioning options, checked before anything is read: errors name the command-line option."""
    if not 0 < utilisation <= 1:
        raise ConfigError("--utilisation", None, f"must be above 0 and at most 1, got {utilisation}")
    if min_instances < 1:
        raise ConfigError("--min-instances", None, f"must be at least 1, got {min_instances}")


def price_options(
    forecast: Forecast,
    measured: Sequence[Measured],
    managed: Sequence[Profile],
    *,
    repriced: Sequence[Profile] = (),
    forecast_source: str,
    utilisation: float = 0.7,
    min_instances: int = 2,
) -> dict:
    """Price every option at every growth multiple of the forecast; JSON-able (``cost.json`` holds it)."""
    check_provisioning(utilisation, min_instances)
    tokens = workload_tokens(measured)
    options = _options(measured, _managed(measured, managed), _repriced(measured, repriced), tokens)
    if not options:
        raise ConfigError("loadtest cost", None, "nothing to price: give a capacity directory or a --managed endpoint")
    for option, record in options:
        _add_plans(record, option, forecast, utilisation, min_instances)
        if tokens is not None:
            for one in [*record["plans"], *(record["class_plans"] or [])]:
                one["per_million_output_tokens"] = one["per_million"] / tokens["output"]
    means = [forecast.mean_rps * g for g in forecast.growth]
    low, high = min(1.0, min(means) / 2), max(means) * 2
    segments = cheapest_segments(
        [option for option, _ in options], low, high, forecast.peak_factor, utilisation, min_instances
    )
    records = [record for _, record in options]
    return {
        "schema": SCHEMA,
        "forecast": {
            "mean_rps": forecast.mean_rps,
            "peak_factor": forecast.peak_factor,
            "growth": list(forecast.growth),
            "source": forecast_source,
        },
        "provisioning": {
            "target_utilisation": utilisation,
            "min_instances": min_instances,
            "hours_per_month": HOURS_PER_MONTH,
        },
        "range_rps": [low, high],
        **({"tokens_per_request": tokens} if tokens is not None else {}),
        "options": records,
        "cheapest_by_rate": [
            {"from_rps": start, "to_rps": end, "options": list(names)} for start, end, names in segments
        ],
        "crossovers": _crossovers(segments, forecast),
        "cheapest": _cheapest(records, forecast),
    }


def workload_tokens(measured: Sequence[Measured]) -> dict | None:
    """The generative workload's tokens a request, which every measured option must share; None if not generative."""
    counted = [m for m in measured if m.tokens_per_request]
    if not counted:
        return None
    first = counted[0].tokens_per_request
    for m in counted[1:]:
        if not math.isclose(m.tokens_per_request["output"], first["output"], rel_tol=0.05):
            raise ConfigError(
                m.source,
                "tokens_per_request.output",
                f"{m.tokens_per_request['output']:.1f} output tokens a request, but {counted[0].source} has "
                f"{first['output']:.1f}: options are compared on the same workload",
            )
    return dict(first)


def _add_plans(record: dict, option: Option, forecast: Forecast, utilisation: float, min_instances: int) -> None:
    """The option's plan at each growth multiple, and (for an instance price) its most expensive class's."""
    record["plans"] = [asdict(p) for p in plan(forecast, option.price, option.capacity_rps, utilisation, min_instances)]
    worst = record["most_expensive_class"]
    record["class_plans"] = (
        [asdict(p) for p in plan(forecast, option.price, worst["capacity_rps"], utilisation, min_instances)]
        if worst and worst["capacity_rps"] and option.price.per_hour is not None
        else None
    )


def _crossovers(segments: list[tuple[float, float, tuple[str, ...]]], forecast: Forecast) -> list[dict]:
    return [
        {"mean_rps": c.mean_rps, "growth": c.mean_rps / forecast.mean_rps, "before": list(c.before), "to": list(c.to)}
        for c in crossovers(segments)
    ]


# -- the options ---------------------------------------------------------------------------------


def _options(
    measured: Sequence[Measured], managed: Sequence[Profile], overrides: dict[str, Profile], tokens: dict | None = None
) -> list[tuple[Option, dict]]:
    """Every option and its record: measured ones in the order given, then the managed endpoints."""
    names = [m.profile for m in measured]
    options, seen = [], {}
    for m in measured:
        name = m.profile if names.count(m.profile) == 1 else f"{m.profile} @ {m.scenario}"
        if name in seen:
            raise ConfigError(m.source, None, f"measures the same profile and scenario as {seen[name]}; give one")
        seen[name] = m.source
        override = overrides.get(m.profile)
        options.append(_measured_option(m, name, override.price if override else m.price, override))
    options += [_managed_option(profile, tokens) for profile in managed]
    return options


def _repriced(measured: Sequence[Measured], profiles: Sequence[Profile]) -> dict[str, Profile]:
    """The ``--profile``s by name: each a measured deployment's profile, whose [price] replaces the recorded one
    (a price changed since measuring, or missing then)."""
    overrides: dict[str, Profile] = {}
    for profile in _priced(profiles, "--profile"):
        if not any(m.profile == profile.name for m in measured):
            raise ConfigError(
                "--profile",
                None,
                f"no capacity result measures {profile.name!r}: --profile gives a measured deployment a new price; "
                "a managed endpoint priced per request is --managed",
            )
        overrides[profile.name] = profile
    return overrides


def _managed(measured: Sequence[Measured], profiles: Sequence[Profile]) -> list[Profile]:
    """The ``--managed`` endpoints: options of their own, priced per request, with no capacity to measure."""
    managed = _priced(profiles, "--managed")
    for profile in managed:
        if any(m.profile == profile.name for m in measured):
            raise ConfigError(
                "--managed",
                None,
                f"{profile.name!r} has capacity results, so it is a deployment: give its new price with --profile",
            )
        if profile.price.per_request is None:
            raise ConfigError(
                profile.source,
                "price.per_hour",
                "an instance price needs the measured capacity of an instance: run a capacity search with "
                f"profile {profile.name!r} and pass its directory (--managed is for per-request prices)",
            )
    return managed


def _priced(profiles: Sequence[Profile], option: str) -> list[Profile]:
    """The profiles, each with a [price] and given once."""
    names: set[str] = set()
    for profile in profiles:
        if profile.price is None:
            raise ConfigError(profile.source, "price", f"missing: a {option} profile needs a [price] to be projected")
        if profile.name in names:
            raise ConfigError(option, None, f"{profile.name!r} given twice")
        names.add(profile.name)
    return list(profiles)


def _measured_option(m: Measured, name: str, price: Price | None, override: Profile | None) -> tuple[Option, dict]:
    if price is None:
        raise ConfigError(
            m.source,
            "profile.price",
            f"missing: profile {m.profile!r} had no [price] when measured; add one to "
            f"{m.profile_source or 'the profile'} and pass --profile {m.profile}",
        )
    if price.per_request is None and m.capacity_rps is None:
        raise ConfigError(
            m.source,
            "capacity_rps",
            "null: even the lowest rate tried failed the SLO, so there is no capacity per instance to price",
        )
    worst = None if m.worst_class is None else {"name": m.worst_class, "capacity_rps": m.worst_class_capacity_rps}
    record = {
        "name": name,
        "kind": "instance" if price.per_request is None else "per_request",
        "source": m.source,
        "profile": m.profile,
        "scenario": m.scenario,
        "slo": m.slo,
        "hardware": m.hardware,
        "price": {**asdict(price), "from": override.source if override else m.source},
        "capacity_rps": m.capacity_rps,
        "knee_rps": m.knee_rps,
        "most_expensive_class": worst,
    }
    return Option(name, price, m.capacity_rps if price.per_request is None else None), record


def _managed_option(profile: Profile, tokens: dict | None = None) -> tuple[Option, dict]:
    price = profile.price
    priced_for = None
    if tokens is not None and price.per_1m_output_tokens is not None:
        price = price.for_tokens(tokens["output"], tokens.get("input") or 0.0)
        priced_for = "the measured workload's tokens a request"
    record = {
        "name": profile.name,
        "kind": "per_request",
        "source": profile.source,
        "profile": profile.name,
        "scenario": None,
        "slo": None,
        "hardware": None if profile.hardware is None else asdict(profile.hardware),
        "price": {**asdict(price), "from": profile.source, **({"priced_for": priced_for} if priced_for else {})},
        "capacity_rps": None,
        "knee_rps": None,
        "most_expensive_class": None,
    }
    return Option(profile.name, price), record


def _cheapest(options: list[dict], forecast: Forecast) -> list[dict]:
    rows = []
    for i, growth in enumerate(forecast.growth):
        plans = {o["name"]: o["plans"][i] for o in options}
        best = min(p["per_million"] for p in plans.values())
        names = [name for name, p in plans.items() if math.isclose(p["per_million"], best, rel_tol=1e-9)]
        rows.append(
            {
                "growth": growth,
                "mean_rps": forecast.mean_rps * growth,
                "options": names,
                "per_million": best,
                "monthly_cost": plans[names[0]]["monthly_cost"],
            }
        )
    return rows
