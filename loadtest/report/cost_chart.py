"""The cost chart: cost per 1M predictions against mean traffic, every option on one log-log plot.

Drawn from a projection (``projection.price_options``'s dict, as in ``cost.json``) alone, as inline
SVG in the report's look. A per-request price is a flat line. An instance price is a sawtooth: on the floor of
``min_instances`` the cost per prediction falls as 1 / traffic, then each added instance is a small
jump up and another fall, flattening toward price / usable capacity. The most expensive request
class alone is the same option's dashed line. Dots mark the forecast's growth multiples; vertical
dotted lines mark where the cheapest option changes, and a strip along the bottom is coloured by
the cheapest option at each rate. Each of these is a group with an id in the SVG
(``cost-option-0``, ``cost-class-0``, ``cost-growth-0``, ``cost-crossover-0``...), for a page test to find.
"""

from __future__ import annotations

import numpy as np

from loadtest.analysis.cost import Option, per_million, step_rates
from loadtest.config.profile import Price
from loadtest.report.kit import COLOURS, figure, no_data, svg

MAX_TEETH = 400  # past this many instances a step changes the cost by under 0.25%: not drawn
LABELLED_CROSSOVERS = 8  # more than this many are drawn without their rate written beside them


def cost_chart(data: dict) -> str:
    """SVG of cost per 1M predictions (log y, USD) against mean traffic (log x, req/s) for every option."""
    if not data["options"]:
        return no_data("no options to price")
    low, high = data["range_rps"]
    shape = (data["forecast"]["peak_factor"], *_provisioning(data))
    fig, ax = figure(8.0, 4.2)
    for i, record in enumerate(data["options"]):
        colour = COLOURS[i % len(COLOURS)]
        price = Price(record["price"]["per_hour"], record["price"]["per_request"])
        option = Option(record["name"], price, record["capacity_rps"] if price.per_hour is not None else None)
        ax.plot(
            *_curve(option, low, high, shape), color=colour, linewidth=1.4, label=record["name"], gid=f"cost-option-{i}"
        )
        _mark_growth(ax, record["plans"], colour, filled=True, gid=f"cost-growth-{i}")
        if record["class_plans"]:
            worst = record["most_expensive_class"]
            option = Option(record["name"], price, worst["capacity_rps"])
            label = f"{record['name']}, {worst['name']} class only"
            curve = _curve(option, low, high, shape)
            ax.plot(*curve, color=colour, linewidth=1.1, linestyle="--", label=label, gid=f"cost-class-{i}")
            _mark_growth(ax, record["class_plans"], colour, filled=False, gid=f"cost-class-growth-{i}")
    _label_growth(ax, data["forecast"])
    _band_of_cheapest(ax, data)
    crossovers = data["crossovers"]
    few = len(crossovers) <= LABELLED_CROSSOVERS
    for n, change in enumerate(crossovers):
        x = change["mean_rps"]
        label = "cheapest option changes" if n == 0 else None
        width = 1.0 if few else 0.6
        ax.axvline(x, color="black", linestyle=":", linewidth=width, label=label, gid=f"cost-crossover-{n}")
        if few:
            ax.annotate(
                f"{x:.3g} req/s",
                (x, 0.99),
                xycoords=("data", "axes fraction"),
                rotation=90,
                ha="right",
                va="top",
                fontsize=7,
            )
    ax.set(xscale="log", yscale="log", xlim=(low, high))
    ax.set(xlabel="mean traffic (requests/s)", ylabel="cost per 1M predictions (USD)")
    ax.xaxis.set_major_formatter(lambda value, _: f"{value:g}")
    ax.yaxis.set_major_formatter(lambda value, _: f"${value:g}")
    ax.legend(fontsize=7, loc="best")
    return svg(fig)


def _provisioning(data: dict) -> tuple[float, int]:
    p = data["provisioning"]
    return p["target_utilisation"], p["min_instances"]


def _curve(option: Option, low: float, high: float, shape: tuple[float, float, int]) -> tuple[list, list]:
    """Rates and cost per 1M, sampled evenly on the log axis plus both sides of every instance step."""
    rates = set(np.geomspace(low, high, 240).tolist())
    if option.price.per_hour is not None:
        steps = step_rates(option.capacity_rps, low, high, *shape)[:MAX_TEETH]
        rates.update(steps)  # the last rate on the old number of instances
        rates.update(s * (1 + 1e-6) for s in steps)  # the first on one more
    rates = sorted(rates)
    return rates, [per_million(option, r, *shape) for r in rates]


def _mark_growth(ax, plans: list[dict], colour: str, filled: bool, gid: str) -> None:
    ax.plot(
        [p["mean_rps"] for p in plans],
        [p["per_million"] for p in plans],
        linestyle="none",
        marker="o",
        markersize=5,
        color=colour,
        markerfacecolor=colour if filled else "white",
        gid=gid,
    )


def _label_growth(ax, forecast: dict) -> None:
    """The forecast's growth multiples written above the plot: ×1 over the mean rate, ×10 over ten times it."""
    for growth in forecast["growth"]:
        ax.annotate(
            f"forecast ×{growth:g}",
            (forecast["mean_rps"] * growth, 1.0),
            xycoords=("data", "axes fraction"),
            xytext=(0, 3),
            textcoords="offset points",
            ha="center",
            va="bottom",
            fontsize=7,
            color="grey",
        )


def _band_of_cheapest(ax, data: dict) -> None:
    """A strip along the bottom in the colour of the cheapest option at each rate (the first, on a tie)."""
    colours = {o["name"]: COLOURS[i % len(COLOURS)] for i, o in enumerate(data["options"])}
    for n, stretch in enumerate(data["cheapest_by_rate"]):
        ax.axvspan(
            stretch["from_rps"],
            stretch["to_rps"],
            ymin=0,
            ymax=0.03,
            color=colours[stretch["options"][0]],
            linewidth=0,
            gid=f"cost-cheapest-{n}",
        )
    ax.annotate("cheapest", (0.005, 0.035), xycoords="axes fraction", fontsize=6, color="grey", va="bottom")
