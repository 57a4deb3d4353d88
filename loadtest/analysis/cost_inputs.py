"""What ``loadtest cost`` reads, checked: capacity searches, priced profiles, and a traffic forecast.

The I/O edge of the cost projection: ``project`` reads every input, in the order a user fixes them
(the provisioning options, the forecast, the capacity files, the profiles), and hands them to the
pure ``projection.price_options``. Every input error is a ``ConfigError`` naming the file (or the
option) and the key.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from loadtest.analysis.cost import Forecast, ForecastError, parse_forecast
from loadtest.analysis.projection import Measured, check_provisioning, price_options
from loadtest.config.profile import Price, load_profile
from loadtest.config.tomlconf import Table, read_toml
from loadtest.errors import ConfigError
from loadtest.results.capacity_file import capacity_file, read_capacity


def project(
    capacity_dirs: Sequence[Path | str],
    forecast_text: str,
    managed: Sequence[str] = (),
    *,
    repriced: Sequence[str] = (),
    utilisation: float = 0.7,
    min_instances: int = 2,
) -> dict:
    """Read the capacity searches, the profiles (``--managed`` endpoints, ``--profile`` new prices) and the
    forecast, and price every option (``cost.json``)."""
    check_provisioning(utilisation, min_instances)
    forecast = load_forecast(forecast_text)
    measured = [measured_capacity(Path(d)) for d in capacity_dirs]
    return price_options(
        forecast,
        measured,
        [load_profile(name) for name in managed],
        repriced=[load_profile(name) for name in repriced],
        forecast_source=forecast_text,
        utilisation=utilisation,
        min_instances=min_instances,
    )


# -- the forecast --------------------------------------------------------------------------------


def load_forecast(text: str) -> Forecast:
    """A forecast string (``mean=200/s peak=3x growth=1,10,100``) or a TOML file with a ``[forecast]`` table."""
    if text.endswith(".toml") or Path(text).is_file():
        return _forecast_file(Path(text))
    try:
        return parse_forecast(text)
    except ForecastError as exc:
        raise ConfigError("--forecast", None, str(exc).removeprefix("forecast: ")) from None


def _forecast_file(path: Path) -> Forecast:
    top = Table(read_toml(path), str(path))
    t = top.table("forecast")
    mean = _positive(t, "mean_rps")
    peak = t.number("peak_factor", 1.0, minimum=1.0)
    growth = t.get("growth", list, [1.0])
    if not growth or not all(_is_number(g) and g > 0 for g in growth):
        raise t.error("growth", f"must be a list of traffic multiples above 0, e.g. [1, 10, 100]; got {growth!r}")
    t.done()
    top.done()
    return Forecast(mean, float(peak), tuple(float(g) for g in growth))


# -- a capacity search ---------------------------------------------------------------------------


def measured_capacity(path: Path) -> Measured:
    """A capacity directory (or its ``capacity.json``), checked; errors name the file and the key."""
    file = capacity_file(path)
    top = Table(read_capacity(path), str(file))
    profile = top.table("profile")
    hardware = profile.data.get("hardware")
    price = profile.data.get("price")
    worst = None if top.data.get("most_expensive_class") is None else top.get("most_expensive_class", str)
    return Measured(
        source=str(file),
        profile=profile.get("name", str, required=True),
        profile_source=profile.get("source", str, ""),
        scenario=top.table("scenario").get("name", str, ""),
        slo=top.get("slo", dict, {}),
        hardware=hardware if isinstance(hardware, dict) else None,
        price=None if price is None else _recorded_price(Table(price, str(file), "profile.price")),
        capacity_rps=_positive(top, "capacity_rps", nullable=True),
        knee_rps=_positive(top, "knee_rps", nullable=True),
        worst_class=worst,
        worst_class_capacity_rps=None if worst is None else _class_capacity(top.table("classes"), worst),
        tokens_per_request=_tokens(top) if top.data.get("tokens_per_request") is not None else None,
    )


def _tokens(top: Table) -> dict:
    """A generative workload's tokens a request: output (above 0), and input where counted."""
    t = top.table("tokens_per_request")
    output = _positive(t, "output")
    input_tokens = t.get("input", (int, float), None)
    if input_tokens is not None and not (input_tokens >= 0 and math.isfinite(input_tokens)):
        raise t.error("input", f"must be a finite number of 0 or more, got {input_tokens!r}")
    return {"output": output, "input": None if input_tokens is None else float(input_tokens)}


def _recorded_price(t: Table) -> Price:
    """A price as a capacity search records it: per_hour or per_request (the other null), source, date."""
    per_hour = _positive(t, "per_hour", nullable=True)
    per_request = _positive(t, "per_request", nullable=True)
    if (per_hour is None) == (per_request is None):
        raise t.error(None, "needs exactly one of per_hour (an instance) or per_request (managed), the other null")
    return Price(per_hour, per_request, t.get("source", str, required=True), t.get("date", str, required=True))


def _class_capacity(classes: Table, name: str) -> float | None:
    """The most expensive class's capacity; None when no class was searched (``capacity --no-class``)."""
    if not classes.data:
        return None
    if name not in classes.data:
        raise classes.error(name, "missing, though most_expensive_class names it")
    return _positive(classes.table(name), "capacity_rps", nullable=True)


def _positive(t: Table, key: str, nullable: bool = False) -> float | None:
    if nullable and t.data.get(key) is None:
        t.taken.add(key)
        return None
    value = t.number(key, required=True, minimum=-math.inf)
    if not (value > 0 and math.isfinite(value)):
        raise t.error(key, f"must be a finite number above 0, got {value!r}")
    return float(value)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
