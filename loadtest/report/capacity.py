"""What a capacity search found, for people: terminal lines and the throughput–latency curve."""

from __future__ import annotations

import html

from loadtest.report.kit import COLOURS, figure, html_table, md_table, no_data, svg


def _rate(value: float | None) -> str:
    return "none" if value is None else f"{value:.1f} req/s"


def capacity_lines(data: dict) -> list[str]:
    """The headline of a capacity.json: capacity, knee and the most expensive class's capacity."""
    slo = data["slo"]
    who = (data.get("profile") or {}).get("name") or data.get("target", "")
    lines = [
        f"capacity of {who} under {slo['text']} (errors <= {slo['max_error_rate']:.1%}): "
        f"{_rate(data.get('capacity_rps'))}"
        + (f", first failing {data['lowest_failing_rps']:.1f} req/s" if data.get("lowest_failing_rps") else "")
        + f" ({len(data.get('steps', []))} steps; {data.get('stopped', '')})"
    ]
    raw = data.get("raw_ort_rps")
    if raw and data.get("capacity_rps"):
        lines.append(
            f"that is {data['capacity_rps'] / raw:.0%} of what ONNX Runtime alone completes on these texts "
            f"({raw:.1f} rows/s: length-sorted batches of 32 or batch 1, no server)"
        )
    if data.get("knee_rps"):
        lines.append(f"knee of the throughput-latency curve: {data['knee_rps']:.1f} req/s")
    cls = data.get("most_expensive_class")
    if cls and cls in data.get("classes", {}):
        found = data["classes"][cls]
        lines.append(f"with all traffic of the most expensive class {cls!r}: {_rate(found.get('capacity_rps'))}")
    elif cls:
        lines.append(f"most expensive class: {cls!r} (its capacity was not searched)")
    return lines


def plot_capacity(found: list[dict]) -> str:
    """The throughput–latency curve of each search: SLO percentile against target rate, passes filled."""
    if not any(d.get("steps") for d in found):
        return no_data("no capacity steps measured")
    fig, ax = figure(8.0, 3.6)
    budget = None
    for i, data in enumerate(found):
        colour = COLOURS[i % len(COLOURS)]
        name = (data.get("profile") or {}).get("name") or data.get("target", "")
        slo = data["slo"]
        budget = slo["budget_ms"]
        curves = [(name, data.get("steps", []), "-", data)]
        for cls, search in data.get("classes", {}).items():
            curves.append((f"{name}, all {cls!r}", search.get("steps", []), "--", search))
        for label, steps, style, search in curves:
            steps = sorted((s for s in steps if s.get("latency_ms") is not None), key=lambda s: s["target_rps"])
            if not steps:
                continue
            x = [s["target_rps"] for s in steps]
            y = [s["latency_ms"] for s in steps]
            ax.plot(x, y, style, color=colour, label=f"{label}: capacity {_rate(search.get('capacity_rps'))}")
            passed = [s for s in steps if s["passed"]]
            failed = [s for s in steps if not s["passed"]]
            ax.scatter([s["target_rps"] for s in passed], [s["latency_ms"] for s in passed], color=colour, zorder=3)
            ax.scatter(
                [s["target_rps"] for s in failed],
                [s["latency_ms"] for s in failed],
                facecolors="white",
                edgecolors=colour,
                zorder=3,
            )
            if search.get("capacity_rps"):
                ax.axvline(search["capacity_rps"], color=colour, linestyle=style, alpha=0.4, linewidth=1)
    if budget is not None:
        ax.axhline(budget, color="black", linestyle=":", linewidth=1.2, label=f"{found[0]['slo']['stat']} budget")
    ax.set(
        xlabel="target rate (requests/s); filled: step held the SLO, open: it failed",
        ylabel=f"{found[0]['slo']['stat']} response latency (ms)",
        yscale="log",
    )
    ax.legend(fontsize=7)
    return svg(fig)


CAPACITY_HEADER = ["profile", "capacity", "first failing", "knee", "raw ORT ceiling", "most expensive class", "steps"]


def capacity_rows(found: list[dict]) -> list[list[str]]:
    rows = []
    for data in found:
        cls = data.get("most_expensive_class")
        search = data.get("classes", {}).get(cls or "", {})
        rows.append(
            [
                (data.get("profile") or {}).get("name") or data.get("target", ""),
                _rate(data.get("capacity_rps")),
                _rate(data.get("lowest_failing_rps")),
                _rate(data.get("knee_rps")),
                "-" if not data.get("raw_ort_rps") else f"{data['raw_ort_rps']:.1f} rows/s",
                "-" if not cls else f"{cls}: {_rate(search.get('capacity_rps'))}",
                str(len(data.get("steps", [])) + len(search.get("steps", []))),
            ]
        )
    return rows


def capacity_intro(found: list[dict]) -> str:
    slo = found[0]["slo"]
    return (
        f"Highest constant open-load rate at which {slo['text']}, errors <= {slo['max_error_rate']:.1%} and "
        f">= {slo['min_achieved']:.0%} of the scheduled requests succeed, each step long enough for its percentile; "
        f"ramp then bisection (MLPerf's FindPeakPerformance). The raw ORT ceiling is ONNX Runtime alone on the "
        f"same texts (length-sorted batches of 32, or batch 1 if faster), on the same cores: no server can pass it."
    )


def capacity_section_html(found: list[dict]) -> str:
    return (
        f"<h2>Capacity under the SLO</h2><p>{html.escape(capacity_intro(found))}</p>"
        f'<figure data-plot="capacity">{plot_capacity(found)}</figure>'
        f"{html_table(CAPACITY_HEADER, capacity_rows(found))}"
    )


def capacity_markdown(found: list[dict]) -> str:
    lines = ["# Capacity under the SLO", "", capacity_intro(found), ""]
    for data in found:
        lines += [f"- {line}" for line in capacity_lines(data)]
    return "\n".join([*lines, "", md_table(CAPACITY_HEADER, capacity_rows(found)), ""])
