"""The cost projection: measured capacities, prices and a traffic forecast, turned into what each option costs.

``loadtest cost`` reads capacity searches (``capacity.json``), profiles with a per-request price
(managed endpoints, which need no capacity) and a forecast; ``project`` prices every option with
the cost model (``cost.py``) into one JSON-able dict; ``write_projection`` writes ``cost.json``,
``cost.md`` and ``cost.html`` from it, and ``print_projection`` prints it. ``cost_section_html``
and ``cost_markdown`` give the same content for a combined report to embed.

What is projected, for every option and every growth multiple of the forecast: instances needed
at the peak (whole, at least ``min_instances``, at the target utilisation), monthly cost and cost
per 1M predictions; the same for the most expensive request class alone; the cheapest option; and
every traffic level where the cheapest option changes, found exactly on the cost step functions.

Every input error is a ``ConfigError`` naming the file (or the option) and the key.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table as RichTable

from loadtest.analysis.cost import (
    HOURS_PER_MONTH,
    Forecast,
    ForecastError,
    Option,
    Price,
    cheapest_segments,
    parse_forecast,
    plan,
)
from loadtest.commands.capacity import capacity_file
from loadtest.commands.capacity import read_capacity as read_capacity_json
from loadtest.config.profile import Profile, load_profile
from loadtest.config.tomlconf import Table, read_toml
from loadtest.errors import ConfigError
from loadtest.report.cost_chart import cost_chart
from loadtest.report.run import PAGE, _html_table, _md_table
from loadtest.results.files import write_atomic, write_json

SCHEMA = "loadtest.cost/1"
MAX_CROSSOVER_ROWS = 30  # in the tables; cost.json lists every one


# -- inputs --------------------------------------------------------------------------------------


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


def read_capacity(path: Path) -> Measured:
    """A capacity directory (or its ``capacity.json``), checked; errors name the file and the key."""
    file = capacity_file(path)
    top = Table(read_capacity_json(path), str(file))
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
    )


def _recorded_price(t: Table) -> Price:
    """A price as a capacity search records it: per_hour or per_request (the other null), source, date."""
    per_hour = _positive(t, "per_hour", nullable=True)
    per_request = _positive(t, "per_request", nullable=True)
    if (per_hour is None) == (per_request is None):
        raise t.error(None, "needs exactly one of per_hour (an instance) or per_request (managed), the other null")
    return Price(per_hour, per_request, t.get("source", str, required=True), t.get("date", str, required=True))


def _class_capacity(classes: Table, name: str) -> float | None:
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


# -- the projection ------------------------------------------------------------------------------


def project(
    capacity_dirs: Sequence[Path | str],
    forecast_text: str,
    profiles: Sequence[str] = (),
    utilisation: float = 0.7,
    min_instances: int = 2,
) -> dict:
    """Price every option at every growth multiple of the forecast; JSON-able (``cost.json`` holds it)."""
    if not 0 < utilisation <= 1:
        raise ConfigError("--utilisation", None, f"must be above 0 and at most 1, got {utilisation}")
    if min_instances < 1:
        raise ConfigError("--min-instances", None, f"must be at least 1, got {min_instances}")
    forecast = load_forecast(forecast_text)
    options = _options(capacity_dirs, profiles)
    if not options:
        raise ConfigError("loadtest cost", None, "nothing to price: give a capacity directory or a --profile")
    means = [forecast.mean_rps * g for g in forecast.growth]
    low, high = min(1.0, min(means) / 2), max(means) * 2
    for option, record in options:
        record["plans"] = [
            asdict(p) for p in plan(forecast, option.price, option.capacity_rps, utilisation, min_instances)
        ]
        worst = record["most_expensive_class"]
        record["class_plans"] = (
            [asdict(p) for p in plan(forecast, option.price, worst["capacity_rps"], utilisation, min_instances)]
            if worst and worst["capacity_rps"] and option.price.per_hour is not None
            else None
        )
    shape = (forecast.peak_factor, utilisation, min_instances)
    segments = cheapest_segments([option for option, _ in options], low, high, *shape)
    return {
        "schema": SCHEMA,
        "forecast": {
            "mean_rps": forecast.mean_rps,
            "peak_factor": forecast.peak_factor,
            "growth": list(forecast.growth),
            "source": forecast_text,
        },
        "provisioning": {
            "target_utilisation": utilisation,
            "min_instances": min_instances,
            "hours_per_month": HOURS_PER_MONTH,
        },
        "range_rps": [low, high],
        "options": [record for _, record in options],
        "cheapest_by_rate": [
            {"from_rps": start, "to_rps": end, "options": list(names)} for start, end, names in segments
        ],
        "crossovers": [
            {
                "mean_rps": after[0],
                "growth": after[0] / forecast.mean_rps,
                "before": list(before[2]),
                "to": list(after[2]),
            }
            for before, after in zip(segments, segments[1:], strict=False)
        ],
        "cheapest": _cheapest([record for _, record in options], forecast),
    }


def _options(capacity_dirs: Sequence[Path | str], profiles: Sequence[str]) -> list[tuple[Option, dict]]:
    """Every option and its record: measured ones in the order given, then per-request profiles.

    A ``--profile`` named like a measured one supplies its price (a price changed since measuring, or
    missing then); any other ``--profile`` must have a per-request price, as it has no capacity.
    """
    measured = [read_capacity(Path(d)) for d in capacity_dirs]
    overrides: dict[str, Profile] = {}
    managed: dict[str, Profile] = {}
    for name in profiles:
        profile = load_profile(name)
        if profile.price is None:
            raise ConfigError(profile.source, "price", "missing: a --profile needs a [price] to be projected")
        if profile.name in overrides or profile.name in managed:
            raise ConfigError("--profile", None, f"{profile.name!r} given twice")
        if any(m.profile == profile.name for m in measured):
            overrides[profile.name] = profile
        elif profile.price.per_request is None:
            raise ConfigError(
                profile.source,
                "price.per_hour",
                "an instance price needs the measured capacity of an instance: run a capacity search with "
                f"profile {profile.name!r} and pass its directory (a --profile alone is for per-request prices)",
            )
        else:
            managed[profile.name] = profile
    names = [m.profile for m in measured]
    options, seen = [], {}
    for m in measured:
        name = m.profile if names.count(m.profile) == 1 else f"{m.profile} @ {m.scenario}"
        if name in seen:
            raise ConfigError(m.source, None, f"measures the same profile and scenario as {seen[name]}; give one")
        seen[name] = m.source
        override = overrides.get(m.profile)
        options.append(_measured_option(m, name, override.price if override else m.price, override))
    options += [_managed_option(profile) for profile in managed.values()]
    return options


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


def _managed_option(profile: Profile) -> tuple[Option, dict]:
    record = {
        "name": profile.name,
        "kind": "per_request",
        "source": profile.source,
        "profile": profile.name,
        "scenario": None,
        "slo": None,
        "hardware": None if profile.hardware is None else asdict(profile.hardware),
        "price": {**asdict(profile.price), "from": profile.source},
        "capacity_rps": None,
        "knee_rps": None,
        "most_expensive_class": None,
    }
    return Option(profile.name, profile.price), record


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


# -- text ----------------------------------------------------------------------------------------


def _money(value: float) -> str:
    if value >= 1000:
        return f"${value:,.0f}"
    return f"${value:,.2f}" if value >= 1 else f"${value:.3g}"


def _rate(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:.3g}"


def _price_text(price: dict) -> str:
    """A price as given, to the cent at least: $0.10, $0.085, $1.006."""
    per_request = price["per_request"] is not None
    value = price["per_request"] * 1e6 if per_request else price["per_hour"]
    digits = f"{value:,.6f}".rstrip("0")
    digits += "0" * (2 - len(digits.split(".")[1]))
    return f"${digits} " + ("per 1M requests" if per_request else "per instance-hour")


def _slo_text(slo: dict | None) -> str:
    if not slo or "budget_ms" not in slo:
        return "-"
    return f"p{slo.get('percentile', 99):g} {slo.get('metric', 'response')} <= {slo['budget_ms']:g} ms"


def _names(names: list[str]) -> str:
    return " = ".join(names)


def _headline(data: dict) -> list[str]:
    f, p = data["forecast"], data["provisioning"]
    lines = [
        f"forecast: mean {_rate(f['mean_rps'])} req/s, peak {f['peak_factor']:g}x the mean, growth "
        + ", ".join(f"×{g:g}" for g in f["growth"])
        + f" (from {f['source']})",
        f"provisioned for the peak at {p['target_utilisation']:.0%} of the capacity per instance measured at the "
        f"SLO, in whole instances, at least {p['min_instances']}; a month is {p['hours_per_month']:g} hours",
    ]
    for row in data["cheapest"]:
        lines.append(
            f"cheapest at ×{row['growth']:g} ({_rate(row['mean_rps'])} req/s mean): {_names(row['options'])}, "
            f"{_money(row['per_million'])} per 1M predictions, {_money(row['monthly_cost'])}/month"
        )
    lines.append("prices are as read on their date; a capacity holds only on the hardware it was measured on")
    return lines


def _sections(data: dict) -> dict[str, tuple[list[str], list[list[str]]]]:
    options, growth = data["options"], data["forecast"]["growth"]
    tables = {
        "Options": (
            ["option", "price", "price source", "price date", "capacity per instance (req/s)", "SLO", "hardware"],
            [
                [
                    o["name"],
                    _price_text(o["price"]),
                    o["price"]["source"],
                    o["price"]["date"],
                    "-" if o["capacity_rps"] is None else _rate(o["capacity_rps"]),
                    _slo_text(o["slo"]),
                    (o["hardware"] or {}).get("description", "") or "-",
                ]
                for o in options
            ],
        ),
        "Cost at each growth multiple": (
            ["growth", "option", "mean req/s", "peak req/s", "instances", "utilisation at peak", "$/month", "$ per 1M"],
            [[f"×{g:g}", o["name"], *_plan_cells(o["plans"][i])] for i, g in enumerate(growth) for o in options],
        ),
    }
    worst = [o for o in options if o["class_plans"]]
    if worst:
        tables["The most expensive class alone (if all traffic drifted to it)"] = (
            [
                "growth",
                "option",
                "class",
                "capacity (req/s)",
                "instances",
                "utilisation at peak",
                "$/month",
                "$ per 1M",
            ],
            [
                [
                    f"×{g:g}",
                    o["name"],
                    o["most_expensive_class"]["name"],
                    _rate(o["most_expensive_class"]["capacity_rps"]),
                    *_plan_cells(o["class_plans"][i])[2:],
                ]
                for i, g in enumerate(growth)
                for o in worst
            ],
        )
    tables["Cheapest option at each growth multiple"] = (
        ["growth", "mean req/s", "cheapest", "$ per 1M", "$/month"],
        [
            [
                f"×{c['growth']:g}",
                _rate(c["mean_rps"]),
                _names(c["options"]),
                _money(c["per_million"]),
                _money(c["monthly_cost"]),
            ]
            for c in data["cheapest"]
        ],
    )
    changes = data["crossovers"]
    rows = [
        [_rate(c["mean_rps"]), f"×{c['growth']:.3g}", _names(c["before"]), _names(c["to"])]
        for c in changes[:MAX_CROSSOVER_ROWS]
    ]
    if len(changes) > MAX_CROSSOVER_ROWS:
        rows.append(["...", "", f"{len(changes) - MAX_CROSSOVER_ROWS} more in cost.json", ""])
    low, high = data["range_rps"]
    tables[f"Where the cheapest option changes ({_rate(low)} to {_rate(high)} req/s mean)"] = (
        ["mean req/s", "of the forecast mean", "cheapest below", "cheapest above"],
        rows or [["-", "", "the same option is cheapest throughout", ""]],
    )
    return tables


def _plan_cells(p: dict) -> list[str]:
    return [
        _rate(p["mean_rps"]),
        _rate(p["peak_rps"]),
        "-" if p["instances"] is None else str(p["instances"]),
        "-" if p["utilisation_at_peak"] is None else f"{p['utilisation_at_peak']:.0%}",
        _money(p["monthly_cost"]),
        _money(p["per_million"]),
    ]


def cost_markdown(data: dict) -> str:
    """The projection as Markdown: a headline list and tables (for ``cost.md``, a step summary, a PR)."""
    parts = ["## Cost projection", ""]
    parts += [f"- {line}" for line in _headline(data)]
    for title, (header, rows) in _sections(data).items():
        parts += ["", f"### {title}", "", _md_table(header, rows)]
    return "\n".join(parts) + "\n"


def cost_section_html(data: dict) -> str:
    """The projection as an HTML fragment: the headline, the chart inline (``data-plot="cost"``), the tables."""
    return f"<h2>Cost projection</h2><ul>{_headline_html(data)}</ul>\n{_body_html(data)}"


def cost_html(data: dict) -> str:
    """A self-contained page (``cost.html``) in the report's style; it works offline."""
    return PAGE.format(title="Cost projection", headline=_headline_html(data), body=_body_html(data))


def _headline_html(data: dict) -> str:
    return "".join(f"<li>{html.escape(line)}</li>" for line in _headline(data))


def _body_html(data: dict) -> str:
    caption = "Cost per 1M predictions against mean traffic"
    body = [f'<h2>{html.escape(caption)}</h2><figure data-plot="cost">{cost_chart(data)}</figure>']
    for title, (header, rows) in _sections(data).items():
        body.append(f"<h2>{html.escape(title)}</h2>{_html_table(header, rows)}")
    return "\n".join(body)


def write_projection(data: dict, out_dir: Path) -> tuple[Path, Path, Path]:
    """``cost.json``, ``cost.md`` and ``cost.html`` in ``out_dir`` (created if need be)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = out_dir / "cost.json", out_dir / "cost.md", out_dir / "cost.html"
    write_json(paths[0], data)
    write_atomic(paths[1], cost_markdown(data))
    write_atomic(paths[2], cost_html(data))
    return paths


def print_projection(data: dict, console: Console) -> None:
    """The cost at each growth multiple as a terminal table, the cheapest in bold, then where it changes."""
    table = RichTable(title="Cost projection (cheapest in bold)", title_justify="left")
    for column in ("growth", "option", "mean req/s", "peak req/s", "instances", "util", "$/month", "$ per 1M"):
        table.add_column(column, justify="left" if column in ("growth", "option") else "right")
    table.add_column("worst class: inst", justify="right")
    table.add_column("$ per 1M", justify="right")
    for i, cheapest in enumerate(data["cheapest"]):
        for o in data["options"]:
            worst = o["class_plans"][i] if o["class_plans"] else None
            if o["kind"] == "per_request":
                worst_cells = ["-", "the same"]  # a per-request price does not depend on the class
            elif worst is None:
                worst_cells = ["-", "-"]
            else:
                name = o["most_expensive_class"]["name"]
                worst_cells = [f"{worst['instances']} ({name})", _money(worst["per_million"])]
            table.add_row(
                f"×{cheapest['growth']:g}",
                o["name"],
                *_plan_cells(o["plans"][i]),
                *worst_cells,
                style="bold" if o["name"] in cheapest["options"] else None,
            )
        table.add_section()
    for line in _headline(data)[:2]:
        console.print(line, highlight=False)
    console.print(table)
    changes = data["crossovers"]
    if not changes:
        console.print("the same option is cheapest at every rate charted", highlight=False)
    for c in changes[:MAX_CROSSOVER_ROWS]:
        console.print(
            f"from {_rate(c['mean_rps'])} req/s mean (×{c['growth']:.3g}): {_names(c['to'])} "
            f"(before: {_names(c['before'])})",
            highlight=False,
        )
    if len(changes) > MAX_CROSSOVER_ROWS:
        console.print(f"... and {len(changes) - MAX_CROSSOVER_ROWS} more changes (cost.json lists them)")
