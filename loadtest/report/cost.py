"""What a person reads about a cost projection: ``cost.md``, ``cost.html`` and the terminal table.

Everything comes from the projection's JSON-able dict (``cost.json``, built by
``loadtest.analysis.projection``), so the terminal, the page and a combined study report say the
same thing. ``cost_section_html`` and ``cost_markdown`` give the content for a study report to embed.
"""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table as RichTable
from rich.text import Text

from loadtest.report.cost_chart import cost_chart
from loadtest.report.kit import PAGE, Sections, headline_html, html_sections, md_sections
from loadtest.results.files import write_atomic, write_json

MAX_CROSSOVER_ROWS = 30  # in the tables; cost.json lists every one
PLAN_COLUMNS = ["mean req/s", "peak req/s", "instances", "utilisation at peak", "$/month", "$ per 1M"]  # _plan_cells


# -- figures as text -----------------------------------------------------------------------------


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
    text = f"{_dollars(value)} " + ("per 1M requests" if per_request else "per instance-hour")
    if price.get("per_1m_output_tokens") is not None:
        tokens = f"{_dollars(price['per_1m_output_tokens'])} per 1M output tokens"
        if price.get("per_1m_input_tokens") is not None:
            tokens += f" + {_dollars(price['per_1m_input_tokens'])} per 1M input tokens"
        text = f"{tokens} ({text}{' at the measured tokens' if price.get('priced_for') else ''})"
    return text


def _dollars(value: float) -> str:
    digits = f"{value:,.6f}".rstrip("0")
    digits += "0" * (2 - len(digits.split(".")[1]))
    return f"${digits}"


def _slo_text(slo: dict | None) -> str:
    if not slo or "budget_ms" not in slo:
        return "-"
    return f"p{slo.get('percentile', 99):g} {slo.get('metric', 'response')} <= {slo['budget_ms']:g} ms"


def _names(names: list[str]) -> str:
    return " = ".join(names)


def _plan_cells(p: dict) -> list[str]:
    cells = [
        _rate(p["mean_rps"]),
        _rate(p["peak_rps"]),
        "-" if p["instances"] is None else str(p["instances"]),
        "-" if p["utilisation_at_peak"] is None else f"{p['utilisation_at_peak']:.0%}",
        _money(p["monthly_cost"]),
        _money(p["per_million"]),
    ]
    if "per_million_output_tokens" in p:  # a generative workload
        cells.append(_money(p["per_million_output_tokens"]))
    return cells


def _token_columns(data: dict) -> list[str]:
    return ["$ per 1M output tokens"] if "tokens_per_request" in data else []


# -- the headline and the tables -----------------------------------------------------------------


def _headline(data: dict) -> list[str]:
    f, p = data["forecast"], data["provisioning"]
    lines = [
        f"forecast: mean {_rate(f['mean_rps'])} req/s, peak {f['peak_factor']:g}x the mean, growth "
        + ", ".join(f"×{g:g}" for g in f["growth"])
        + f" (from {f['source']})",
        f"provisioned for the peak at {p['target_utilisation']:.0%} of the capacity per instance measured at the "
        f"SLO, in whole instances, at least {p['min_instances']}; a month is {p['hours_per_month']:g} hours",
    ]
    tokens = data.get("tokens_per_request")
    if tokens is not None:
        inputs = "" if tokens.get("input") is None else f" and {tokens['input']:,.1f} input"
        lines.append(
            f"a request of this workload: {tokens['output']:,.1f} output tokens{inputs} (measured); "
            "per-token API prices are taken at these"
        )
    for row in data["cheapest"]:
        per_token = ""
        if tokens is not None:
            per_token = f" ({_money(row['per_million'] / tokens['output'])} per 1M output tokens)"
        lines.append(
            f"cheapest at ×{row['growth']:g} ({_rate(row['mean_rps'])} req/s mean): {_names(row['options'])}, "
            f"{_money(row['per_million'])} per 1M predictions{per_token}, {_money(row['monthly_cost'])}/month"
        )
    lines.append("prices are as read on their date; a capacity holds only on the hardware it was measured on")
    return lines


def _sections(data: dict) -> Sections:
    """The tables in the order shown: options, cost per growth multiple, the worst class, cheapest, changes."""
    tables = {"Options": _options_table(data), "Cost at each growth multiple": _growth_table(data)}
    if any(o["class_plans"] for o in data["options"]):
        tables["The most expensive class alone (if all traffic drifted to it)"] = _class_table(data)
    tables["Cheapest option at each growth multiple"] = _cheapest_table(data)
    low, high = data["range_rps"]
    tables[f"Where the cheapest option changes ({_rate(low)} to {_rate(high)} req/s mean)"] = _crossover_table(data)
    return tables


def _options_table(data: dict) -> tuple[list[str], list[list[str]]]:
    header = ["option", "price", "price source", "price date", "capacity per instance (req/s)", "SLO", "hardware"]
    rows = [
        [
            o["name"],
            _price_text(o["price"]),
            o["price"]["source"],
            o["price"]["date"],
            "-" if o["capacity_rps"] is None else _rate(o["capacity_rps"]),
            _slo_text(o["slo"]),
            (o["hardware"] or {}).get("description", "") or "-",
        ]
        for o in data["options"]
    ]
    return header, rows


def _growth_table(data: dict) -> tuple[list[str], list[list[str]]]:
    header = ["growth", "option", *PLAN_COLUMNS, *_token_columns(data)]
    options, growth = data["options"], data["forecast"]["growth"]
    return header, [[f"×{g:g}", o["name"], *_plan_cells(o["plans"][i])] for i, g in enumerate(growth) for o in options]


def _class_table(data: dict) -> tuple[list[str], list[list[str]]]:
    header = ["growth", "option", "class", "capacity (req/s)", *PLAN_COLUMNS[2:], *_token_columns(data)]
    worst = [o for o in data["options"] if o["class_plans"]]
    rows = [
        [
            f"×{g:g}",
            o["name"],
            o["most_expensive_class"]["name"],
            _rate(o["most_expensive_class"]["capacity_rps"]),
            *_plan_cells(o["class_plans"][i])[2:],
        ]
        for i, g in enumerate(data["forecast"]["growth"])
        for o in worst
    ]
    return header, rows


def _cheapest_table(data: dict) -> tuple[list[str], list[list[str]]]:
    header = ["growth", "mean req/s", "cheapest", "$ per 1M", "$/month"]
    rows = [
        [
            f"×{c['growth']:g}",
            _rate(c["mean_rps"]),
            _names(c["options"]),
            _money(c["per_million"]),
            _money(c["monthly_cost"]),
        ]
        for c in data["cheapest"]
    ]
    return header, rows


def _crossover_table(data: dict) -> tuple[list[str], list[list[str]]]:
    changes = data["crossovers"]
    rows = [
        [_rate(c["mean_rps"]), f"×{c['growth']:.3g}", _names(c["before"]), _names(c["to"])]
        for c in changes[:MAX_CROSSOVER_ROWS]
    ]
    if len(changes) > MAX_CROSSOVER_ROWS:
        rows.append(["...", "", f"{len(changes) - MAX_CROSSOVER_ROWS} more in cost.json", ""])
    header = ["mean req/s", "of the forecast mean", "cheapest below", "cheapest above"]
    return header, rows or [["-", "", "the same option is cheapest throughout", ""]]


# -- Markdown and HTML ---------------------------------------------------------------------------


def cost_markdown(data: dict) -> str:
    """The projection as Markdown: a headline list and tables (for ``cost.md``, a step summary, a PR)."""
    parts = ["## Cost projection", ""]
    parts += [f"- {line}" for line in _headline(data)]
    parts += md_sections(_sections(data))
    return "\n".join(parts) + "\n"


def cost_section_html(data: dict) -> str:
    """The projection as an HTML fragment: the headline, the chart inline (``data-plot="cost"``), the tables."""
    return f"<h2>Cost projection</h2><ul>{headline_html(_headline(data))}</ul>\n{_body_html(data)}"


def cost_html(data: dict) -> str:
    """A self-contained page (``cost.html``) in the report's style; it works offline."""
    return PAGE.format(title="Cost projection", headline=headline_html(_headline(data)), body=_body_html(data))


def _body_html(data: dict) -> str:
    caption = "Cost per 1M predictions against mean traffic"
    body = [f'<h2>{caption}</h2><figure data-plot="cost">{cost_chart(data)}</figure>']
    return "\n".join(body + html_sections(_sections(data)))


def write_projection(data: dict, out_dir: Path) -> tuple[Path, Path, Path]:
    """``cost.json``, ``cost.md`` and ``cost.html`` in ``out_dir`` (created if need be)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = out_dir / "cost.json", out_dir / "cost.md", out_dir / "cost.html"
    write_json(paths[0], data)
    write_atomic(paths[1], cost_markdown(data))
    write_atomic(paths[2], cost_html(data))
    return paths


# -- the terminal --------------------------------------------------------------------------------


def print_projection(data: dict, console: Console) -> None:
    """The cost at each growth multiple as a terminal table, the cheapest in bold, then where it changes."""
    for line in _headline(data)[:2]:
        console.print(line, highlight=False, markup=False)
    console.print(_terminal_table(data))
    changes = data["crossovers"]
    if not changes:
        console.print("the same option is cheapest at every rate charted", highlight=False)
    for c in changes[:MAX_CROSSOVER_ROWS]:
        console.print(
            f"from {_rate(c['mean_rps'])} req/s mean (×{c['growth']:.3g}): {_names(c['to'])} "
            f"(before: {_names(c['before'])})",
            highlight=False,
            markup=False,
        )
    if len(changes) > MAX_CROSSOVER_ROWS:
        console.print(f"... and {len(changes) - MAX_CROSSOVER_ROWS} more changes (cost.json lists them)")


def _terminal_table(data: dict) -> RichTable:
    table = RichTable(title="Cost projection (cheapest in bold)", title_justify="left")
    columns = ["growth", "option", "mean req/s", "peak req/s", "instances", "util", "$/month", "$ per 1M"]
    for column in columns + (["$ per 1M out tok"] if "tokens_per_request" in data else []):
        table.add_column(column, justify="left" if column in ("growth", "option") else "right")
    table.add_column("worst class: inst", justify="right")
    table.add_column("$ per 1M", justify="right")
    for i, cheapest in enumerate(data["cheapest"]):
        for o in data["options"]:
            table.add_row(
                f"×{cheapest['growth']:g}",
                Text(o["name"]),  # names are the user's text: never read as markup
                *_plan_cells(o["plans"][i]),
                *map(Text, _worst_class_cells(o, i)),
                style="bold" if o["name"] in cheapest["options"] else None,
            )
        table.add_section()
    return table


def _worst_class_cells(option: dict, i: int) -> list[str]:
    """Instances and cost per 1M if all traffic were the most expensive class, at the i-th growth multiple."""
    if option["kind"] == "per_request":
        return ["-", "the same"]  # a per-request price does not depend on the class
    worst = option["class_plans"][i] if option["class_plans"] else None
    if worst is None:
        return ["-", "-"]
    name = option["most_expensive_class"]["name"]
    return [f"{worst['instances']} ({name})", _money(worst["per_million"])]
