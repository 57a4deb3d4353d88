"""What a capacity search found, for people: terminal lines and the throughput–latency curve."""

from __future__ import annotations

import html

from loadtest.report.kit import COLOURS, figure, html_table, md_table, no_data, svg

OTHER_WORK_SHOWN = 0.2  # the search's own limit (analysis.search.SearchSettings.other_work_limit)


def _rate(value: float | None) -> str:
    return "none" if value is None else f"{value:.1f} req/s"


def capacity_lines(data: dict) -> list[str]:
    """The headline of a capacity.json: capacity and its interval, the searches' spread, the idle waits, the rule."""
    slo = data["slo"]
    who = (data.get("profile") or {}).get("name") or data.get("target", "")
    lines = [
        f"capacity of {who} under {slo['text']} (errors <= {slo['max_error_rate']:.1%}): "
        f"{_rate(data.get('capacity_rps'))}"
        + (f", first failing {data['lowest_failing_rps']:.1f} req/s" if data.get("lowest_failing_rps") else "")
        + f" ({len(data.get('steps', []))} steps; {data.get('stopped', '')})"
    ]
    lines += [line for line in (interval_line(data), spread_line(data), idle_line(data), trust_line(data)) if line]
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
        lines += [f"  {line}" for line in (interval_line(found), spread_line(found)) if line]
    elif cls:
        lines.append(f"most expensive class: {cls!r} (its capacity was not searched)")
    if data.get("rule"):
        lines.append(f"rule: {data['rule']}")
    return lines


def _runs_of(steps: list[dict], rate: float | None) -> tuple[int, int]:
    """(passed, run) of one rate, in the search the interval comes from."""
    runs = [s for s in steps if s["target_rps"] == rate and s.get("counted", True)]
    return sum(1 for s in runs if s["passed"]), len(runs)


def interval_line(search: dict) -> str:
    """Where the capacity lies, and how often each end held its verdict; empty for files written before it."""
    interval = search.get("interval")
    if not interval or interval.get("passing_rps") is None:
        return ""
    passing, failing = interval["passing_rps"], interval.get("failing_rps")
    steps = [s for s in search.get("steps", []) if s.get("search", 1) == _median_search(search)]
    held, ran = _runs_of(steps, passing)
    line = f"interval: {passing:.1f} req/s held in {held} of {ran} runs"
    if failing is not None:
        passed, ran = _runs_of(steps, failing)
        line += f"; {failing:.1f} req/s failed {ran - passed} of {ran}" + (
            " (a flip: counted as failing)" * (passed > 0)
        )
    else:
        line += "; no rate above it failed"
    return line


def _median_search(search: dict) -> int:
    """Which search (1-based) gave the median capacity the file reports."""
    median = search.get("capacity_rps")
    found = [s.get("passing_rps") for s in search.get("searches", [])]
    return found.index(median) + 1 if median in found else 1


def spread_line(search: dict) -> str:
    """The repeated searches' capacities, median and spread; empty for a single search."""
    repeat = search.get("repeat") or {}
    if repeat.get("searches", 1) < 2:
        return ""
    shown = ", ".join("none" if c is None else f"{c:.1f}" for c in repeat["capacities"])
    spread = "unbounded (a search found no capacity)" if repeat["spread"] is None else f"±{repeat['spread']:.1%}"
    return f"{repeat['searches']} searches: {shown} req/s; median {_rate(repeat['median_rps'])}, spread {spread}"


def _all_steps(data: dict) -> list[dict]:
    return data.get("steps", []) + [s for search in data.get("classes", {}).values() for s in search.get("steps", [])]


def trust_line(data: dict) -> str:
    """How many steps' verdicts may be someone else's: the load generator's, or other work's on the server's cores."""
    steps = _all_steps(data)
    untrusted = [s for s in steps if s.get("trusted") is False]
    shared = [s for s in steps if (s.get("other_work") or 0) >= OTHER_WORK_SHOWN]
    parts = []
    if untrusted:
        reasons = sorted({reason for s in untrusted for reason in s.get("distrust", [])})
        parts.append(f"{len(untrusted)} of {len(steps)} steps were not trustworthy ({'; '.join(reasons)})")
    if shared:
        worst = max(s["other_work"] for s in shared)
        parts.append(
            f"{len(shared)} of {len(steps)} steps shared the server's cores with other work (up to {worst:.0%} of them)"
        )
    if not parts:
        return ""
    return "; ".join(parts) + ": a failure on such a run was run once more, and the capacity may be low"


def idle_line(data: dict) -> str:
    """How long the server took to be idle before the steps, and how many steps started before it was."""
    drains = [s["drain"] for s in _all_steps(data) if s.get("drain")]
    if not drains:
        return ""
    waits = sorted(d["waited_s"] for d in drains)
    busy = sum(1 for d in drains if not d["idle"] or d.get("quiet") is False)
    signal = (data.get("idle") or {}).get("signal", drains[0].get("signal", ""))
    median = waits[len(waits) // 2]
    line = f"idle before each step ({signal}): waited {waits[0]:.1f}-{waits[-1]:.1f} s, median {median:.1f} s"
    if busy:
        line += f"; {busy} step(s) started before the server and its cores were idle (the wait is bounded)"
    return line


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
            steps = [s for s in steps if s.get("latency_ms") is not None and s.get("counted", True)]
            steps = sorted(steps, key=lambda s: s["target_rps"])
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
        ylabel=f"{found[0]['slo']['stat']} {found[0]['slo'].get('metric', 'response')} latency (ms)",
        yscale="log",
    )
    ax.legend(fontsize=7)
    return svg(fig)


CAPACITY_HEADER = [
    "profile",
    "capacity",
    "first failing",
    "searches' spread",
    "knee",
    "raw ORT ceiling",
    "most expensive class",
    "steps",
]


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
                _spread_cell(data.get("repeat") or {}),
                _rate(data.get("knee_rps")),
                "-" if not data.get("raw_ort_rps") else f"{data['raw_ort_rps']:.1f} rows/s",
                "-" if not cls else f"{cls}: {_rate(search.get('capacity_rps'))}",
                str(len(data.get("steps", [])) + len(search.get("steps", []))),
            ]
        )
    return rows


def _spread_cell(repeat: dict) -> str:
    if repeat.get("searches", 1) < 2:
        return "-"
    spread = "-" if repeat["spread"] is None else f"±{repeat['spread']:.1%}"
    return f"{spread} of {repeat['searches']}"


def capacity_intro(found: list[dict]) -> str:
    slo = found[0]["slo"]
    return (
        f"Highest constant open-load rate at which {slo['text']}, errors <= {slo['max_error_rate']:.1%} and "
        f">= {slo['min_achieved']:.0%} of the scheduled requests succeed, each step long enough for its percentile "
        f"and started from an idle server; ramp then bisection (MLPerf's FindPeakPerformance), then the highest "
        f"passing and the lowest failing rate are each run again: a rate holds only when it passed every run. "
        f"The raw ORT ceiling is ONNX Runtime alone on the "
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
