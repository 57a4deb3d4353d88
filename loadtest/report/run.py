"""Reports of one run, built from its results directory alone: ``report.html`` and ``report.md``.

``report.html`` is self-contained and works offline: the plots are inline SVG drawn by matplotlib,
no script or style is fetched from anywhere. ``report.md`` fits GitHub's step summary or a PR comment.
A short inline script marks the page once every plot has drawn (``data-rendered``), and records
script errors (``data-errors``), so a headless browser can check the page.

What the HTML holds: response percentiles over time per class; the HDR percentile distribution
(the log "nines" axis of HdrHistogram's plotter); target against achieved rate; errors, timeouts
and dropped arrivals over time; CPU, GPU and memory of the server and the generator; a per-class
table; the Server-Timing breakdown per percentile; sample sufficiency; the saturation lines; gates.
"""

from __future__ import annotations

import html
import io
import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from hdrh.histogram import HdrHistogram

from loadtest.engine.hdr_bulk import value_at_percentile
from loadtest.results.directory import read_summary, read_table
from loadtest.results.files import write_atomic

NINES = (0.0, 50.0, 90.0, 99.0, 99.9, 99.99, 99.999)
COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b")


@dataclass
class Results:
    directory: Path
    summary: dict
    timeline: pd.DataFrame
    resources: pd.DataFrame | None
    histograms: dict[str, HdrHistogram]
    intervals: pd.DataFrame  # second, class, p50, p99 (ms), from response.hlog


def load_results(directory: Path) -> Results:
    summary = read_summary(directory)
    timeline = read_table(directory / "timeline.csv")
    timeline = pd.DataFrame() if timeline is None else timeline
    resources = read_table(directory / "resources.csv")
    histograms = {}
    if (directory / "histograms.json").exists():
        encoded = json.loads((directory / "histograms.json").read_text())
        histograms = {key: HdrHistogram.decode(value.encode()) for key, value in encoded.items()}
    start = summary.get("run", {}).get("started_epoch", 0.0)
    return Results(directory, summary, timeline, resources, histograms, interval_percentiles(directory, start))


def interval_percentiles(directory: Path, start_epoch: float) -> pd.DataFrame:
    """p50 and p99 of each second's response histogram, per class (``all`` for the untagged lines)."""
    from hdrh.log import HistogramLogReader

    path = directory / "response.hlog"
    rows = []
    if path.exists():
        reader = HistogramLogReader(str(path), HdrHistogram(1, 3_600_000_000, 3))
        while (h := reader.get_next_interval_histogram()) is not None:
            rows.append(
                {
                    "second": round(h.get_start_time_stamp() / 1000 - start_epoch),
                    "class": h.get_tag() or "all",
                    "p50": value_at_percentile(h, 50.0) / 1000,
                    "p99": value_at_percentile(h, 99.0) / 1000,
                }
            )
    return pd.DataFrame(rows, columns=["second", "class", "p50", "p99"])


# -- plots ---------------------------------------------------------------------------------------


def _figure(width: float = 8.0, height: float = 3.2, rows: int = 1):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": 9, "svg.fonttype": "path", "axes.grid": True, "grid.alpha": 0.3})
    return plt.subplots(rows, 1, figsize=(width, height), sharex=rows > 1)


def _svg(fig) -> str:
    import matplotlib.pyplot as plt

    buffer = io.StringIO()
    fig.tight_layout()
    fig.savefig(buffer, format="svg", metadata={"Date": None})
    plt.close(fig)
    text = buffer.getvalue()
    text = re.sub(r"<metadata>.*?</metadata>", "", text[text.index("<svg") :], flags=re.S)
    return text


def _no_data(message: str) -> str:
    fig, ax = _figure(8.0, 1.2)
    ax.axis("off")
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes)
    return _svg(fig)


def _mark_onsets(ax, summary: dict) -> None:
    """Vertical lines where the server saturated and where latency bent, as the analysis found them."""
    saturation = summary.get("saturation", {})
    for key, label, colour in (("server_saturated_at", "CPU saturated", "black"), ("knee_at", "latency knee", "#b00")):
        if saturation.get(key) is not None:
            ax.axvline(saturation[key], color=colour, linestyle=":", linewidth=1.5, label=label)


def plot_percentiles_over_time(r: Results) -> str:
    if r.intervals.empty:
        return _no_data("no response intervals recorded")
    fig, ax = _figure()
    # Messy kinds are a handful of requests each, drawn in their own table: here the traffic's classes.
    groups = [(cls, part) for cls, part in r.intervals.groupby("class") if not cls.startswith("messy:")]
    for i, (cls, part) in enumerate(sorted(groups, key=lambda kv: kv[0] != "all")):
        part = part.sort_values("second")
        colour = COLOURS[i % len(COLOURS)]
        ax.plot(part["second"], part["p99"], color=colour, label=f"{cls} p99")
        ax.plot(part["second"], part["p50"], color=colour, linestyle="--", alpha=0.7, label=f"{cls} p50")
    warmup = r.summary.get("load", {}).get("warmup_s", 0)
    if warmup:
        ax.axvspan(0, warmup, color="grey", alpha=0.15, label="warm-up")
    _mark_onsets(ax, r.summary)
    ax.set(xlabel="second", ylabel="response latency (ms)", yscale="log")
    ax.legend(fontsize=7, ncol=4)
    return _svg(fig)


def plot_distribution(r: Results) -> str:
    """Latency by percentile on HdrHistogram's log 'nines' axis: x = 1 / (1 - percentile)."""
    keys = sorted(
        k
        for k in r.histograms
        if k.startswith("response|") and not k.startswith("response|messy:") and r.histograms[k].get_total_count()
    )
    if not keys:
        return _no_data("no response histogram recorded")
    fig, ax = _figure(8.0, 3.6)
    levels = 100 - 100 / np.logspace(0, 5, 160)
    for i, key in enumerate(sorted(keys, key=lambda k: not k.endswith("|all"))):
        h = r.histograms[key]
        top = 100 - 100 / max(2, h.get_total_count())  # no claims beyond what the samples support
        pts = [p for p in levels if p <= top]
        values = [value_at_percentile(h, p) / 1000 for p in pts]
        ax.plot([1 / (1 - p / 100) for p in pts], values, color=COLOURS[i % len(COLOURS)], label=key.split("|")[1])
    ax.set_xscale("log")
    ticks = [1 / (1 - p / 100) for p in NINES if p < 100]
    ax.set_xticks(ticks, [f"{p:g}%" for p in NINES if p < 100])
    ax.set(xlabel="percentile", ylabel="response latency (ms)")
    ax.legend(fontsize=7)
    return _svg(fig)


def plot_rates(r: Results) -> str:
    t = r.timeline
    if t.empty:
        return _no_data("no timeline")
    fig, ax = _figure()
    intended = "intended (the capture)" if r.summary.get("replay") else "target"
    ax.plot(t["second"], t["target"], color="grey", linestyle="--", label=intended)
    ax.plot(t["second"], t["sent"], color=COLOURS[0], label="sent")
    ax.plot(t["second"], t["ok"], color=COLOURS[2], label="ok")
    model = r.summary.get("load", {}).get("model", "open")
    ax.set(xlabel="second", ylabel="requests/s" if model == "open" else "requests/s (target: users)")
    ax.legend(fontsize=7)
    return _svg(fig)


def plot_failures(r: Results) -> str:
    t = r.timeline
    if t.empty:
        return _no_data("no timeline")
    fig, ax = _figure(8.0, 2.6)
    for i, column in enumerate(("error", "timeout", "dropped")):
        ax.plot(t["second"], t[column], color=COLOURS[(i + 1) % len(COLOURS)], label=column)
    ax.set(xlabel="second", ylabel="per second")
    ax.legend(fontsize=7)
    return _svg(fig)


def plot_resources(r: Results) -> str:
    res = r.resources
    if res is None or res.empty:
        return _no_data("no resource samples (the run was shorter than a second, or was not sampled)")
    gpu = [c for c in res.columns if c.endswith("_util_pct") and c.startswith("gpu")]
    fig, (cpu_ax, mem_ax) = _figure(8.0, 4.6, rows=2)
    for column, label, colour in (
        ("server_cpu_util", "server CPU (share of its cores)", COLOURS[0]),
        ("generator_cpu_util", "generator CPU (share of its cores)", COLOURS[1]),
    ):
        if res[column].notna().any():
            cpu_ax.plot(res["second"], 100 * res[column], color=colour, label=label)
    for i, column in enumerate(gpu):
        cpu_ax.plot(res["second"], res[column], color=COLOURS[(i + 2) % len(COLOURS)], label=column.replace("_", " "))
    cpu_ax.axhline(85, color="grey", linestyle=":", linewidth=1)
    _mark_onsets(cpu_ax, r.summary)
    cpu_ax.set(ylabel="% busy", ylim=(0, 105))
    cpu_ax.legend(fontsize=7)
    for column, label, colour in (
        ("server_rss_mb", "server RSS", COLOURS[0]),
        ("generator_rss_mb", "generator RSS", COLOURS[1]),
    ):
        if res[column].notna().any():
            mem_ax.plot(res["second"], res[column], color=colour, label=label)
    for i, column in enumerate(c for c in res.columns if c.endswith("_memory_mb")):
        mem_ax.plot(res["second"], res[column], color=COLOURS[(i + 2) % len(COLOURS)], label=column.replace("_", " "))
    mem_ax.set(xlabel="second", ylabel="MB")
    mem_ax.legend(fontsize=7)
    return _svg(fig)


def plot_server_timing(r: Results) -> str:
    rows = server_timing_rows(r.summary)
    if not rows:
        return _no_data("the target sent no Server-Timing header")
    fig, ax = _figure(8.0, 2.8)
    labels = [row["percentile"] for row in rows]
    bottom = np.zeros(len(rows))
    for i, part in enumerate(("server_queue", "server_compute", "overhead")):
        values = np.array([row[part] for row in rows])
        ax.bar(
            labels,
            values,
            bottom=bottom,
            color=COLOURS[i],
            label=part.replace("_", " ").replace("overhead", "network + framework"),
        )
        bottom += values
    ax.set(ylabel="ms (each part at its own percentile)")
    ax.legend(fontsize=7)
    return _svg(fig)


# -- tables --------------------------------------------------------------------------------------


def server_timing_rows(summary: dict) -> list[dict]:
    latency = summary.get("latency_ms", {})
    if "server_compute" not in latency:
        return []
    rows = []
    for p in ("p50", "p90", "p99", "p99.9"):
        rows.append(
            {
                "percentile": p,
                "server_queue": latency["server_queue"]["all"].get(p, 0.0),
                "server_compute": latency["server_compute"]["all"].get(p, 0.0),
                "overhead": latency["overhead"]["all"].get(p, 0.0),
                "service": latency["service"]["all"].get(p, 0.0),
            }
        )
    return rows


def class_rows(summary: dict) -> list[list[str]]:
    rows = []
    response = summary.get("latency_ms", {}).get("response", {})
    accounting = summary.get("accounting", {})
    for cls, stats in response.items():
        counts = accounting if cls == "all" else accounting.get("by_class", {}).get(cls, {})
        rows.append(
            [
                cls,
                str(counts.get("ok", stats.get("count", 0))),
                str(counts.get("errors", 0)),
                str(counts.get("timeouts", 0)),
                str(counts.get("dropped", 0)),
                *(f"{stats.get(p, float('nan')):.3f}" for p in ("p50", "p90", "p99", "p99.9", "max")),
            ]
        )
    return rows


CLASS_HEADER = ["class", "ok", "errors", "timeouts", "dropped", "p50 ms", "p90 ms", "p99 ms", "p99.9 ms", "max ms"]


def _html_table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _sections(r: Results) -> dict[str, tuple[list[str], list[list[str]]]]:
    s = r.summary
    tables = {"Per class (response latency)": (CLASS_HEADER, class_rows(s))}
    timing = server_timing_rows(s)
    if timing:
        tables["Server-Timing breakdown (ms)"] = (
            ["percentile", "queue", "compute", "network + framework", "service"],
            [
                [t["percentile"], *(f"{t[k]:.3f}" for k in ("server_queue", "server_compute", "overhead", "service"))]
                for t in timing
            ],
        )
    sufficiency = s.get("sample_sufficiency", [])
    if sufficiency:
        tables["Sample sufficiency"] = (
            ["class", "percentile", "samples", "needed", "enough"],
            [
                [x["class"], x["percentile"], x["samples"], x["needed"], "yes" if x["enough"] else "NO"]
                for x in sufficiency
            ],
        )
    replay = s.get("replay")
    if replay:
        tables.update(replay_tables(replay))
    if s.get("messy"):
        from loadtest.report.messy import messy_tables

        tables.update(messy_tables(s))
    gates = s.get("gates")
    if gates:
        tables["Gates"] = (
            ["gate", "result", "detail"],
            [[g["name"], "pass" if g["passed"] else "FAIL", g["message"]] for g in gates["results"]],
        )
    return tables


def replay_tables(replay: dict) -> dict[str, tuple[list[str], list[list[str]]]]:
    """The replay's fidelity, and every skipped request by reason, with the line numbers kept."""
    f = replay.get("fidelity") or {}
    late = f.get("lateness_ms") or {}
    window = replay.get("window") or [None, None]
    rows = [
        ["capture", f"{replay.get('capture')} ({replay.get('format')}, {replay.get('capture_bytes', 0):,} bytes)"],
        ["requests per pass", f"{replay.get('requests_per_pass', 0):,}"],
        ["speed, loops", f"x{replay.get('speed', 1):g}, {replay.get('loops', 1)}"],
        ["window", "whole capture" if window == [None, None] else f"{window[0] or 0:g} s to {window[1] or 'end'} s"],
        ["max rate", f"{replay['max_rate']:g}/s" if replay.get("max_rate") else "none"],
        ["secrets sent", "yes" if replay.get("send_secrets") else "no (stripped)"],
    ]
    if f.get("seconds"):
        rows += [
            [f"seconds within {f['tolerance']:.0%} of the captured rate", f"{f['seconds_within']} of {f['seconds']}"],
            ["worst second", f"{f['max_deviation_second']}: {f['max_deviation']:+.1%}"],
            ["intended / sent", f"{f['intended_total']:,} / {f['sent_total']:,}"],
        ]
    rows += [[f"send lateness {k}", f"{v:.3f} ms"] for k, v in late.items() if isinstance(v, int | float)]
    tables = {"Replay fidelity": (["figure", "value"], rows)}
    skipped = replay.get("skipped") or {}
    if skipped:
        tables["Skipped requests"] = (
            ["reason", "count", "lines"],
            [[reason, entry["count"], _lines(entry)] for reason, entry in sorted(skipped.items())],
        )
    return tables


def _lines(entry: dict) -> str:
    listed = [f"{x['line']} ({x['detail']})" if isinstance(x, dict) else str(x) for x in entry.get("lines", [])]
    more = entry["count"] - len(listed)
    if not listed:
        return entry.get("why", "")
    return "; ".join(listed) + (f"; and {more} more" if more > 0 else "")


def _headline(s: dict) -> list[str]:
    a, load = s.get("accounting", {}), s.get("load", {})
    lines = [
        f"scenario {s.get('scenario', {}).get('name', '?')}: {load.get('model', '?')} load, "
        f"{load.get('shape', {}).get('kind', '?')} shape, {load.get('duration_s', 0):g} s measured",
        f"target {s.get('target', {}).get('url', '?')}",
        f"scheduled {a.get('scheduled', 0)} = ok {a.get('ok', 0)} + errors {a.get('errors', 0)} + "
        f"timeouts {a.get('timeouts', 0)} + dropped {a.get('dropped', 0)}"
        + ("" if a.get("balanced", True) else f" (+ {a.get('unfinished', 0)} unfinished)"),
    ]
    if s.get("run", {}).get("interrupted"):
        lines.append("INTERRUPTED: these figures cover only what was measured")
    if s.get("replay"):
        from loadtest.analysis.fidelity import fidelity_lines

        lines += fidelity_lines(s["replay"])
    if s.get("messy"):
        from loadtest.report.messy import messy_lines

        lines += messy_lines(s)
    gates = s.get("gates")
    if gates:
        lines.append("gates: " + ("all passed" if gates["passed"] else "FAILED"))
    return lines + s.get("saturation", {}).get("lines", [])


def build_markdown(r: Results) -> str:
    s = r.summary
    parts = [f"## Load test: {s.get('scenario', {}).get('name', 'run')}", ""]
    parts += [f"- {line}" for line in _headline(s)]
    for title, (header, rows) in _sections(r).items():
        parts += ["", f"### {title}", "", _md_table(header, rows)]
    parts += ["", f"Full report: `{r.directory / 'report.html'}`", ""]
    return "\n".join(parts)


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 60rem; color: #222; }}
h1 {{ font-size: 1.4rem; }} h2 {{ font-size: 1.1rem; margin-top: 2rem; border-bottom: 1px solid #ddd; }}
table {{ border-collapse: collapse; font-size: 0.85rem; margin: 0.5rem 0; }}
th, td {{ border: 1px solid #ccc; padding: 0.2rem 0.5rem; text-align: right; }}
th:first-child, td:first-child {{ text-align: left; }}
figure {{ margin: 0.5rem 0; }} figure svg {{ width: 100%; height: auto; }}
.warn {{ color: #b00; font-weight: bold; }}
</style>
<script>
window.addEventListener("error", function (e) {{
  document.body.dataset.errors = (document.body.dataset.errors || "") + e.message + ";";
}});
window.addEventListener("load", function () {{
  var figures = document.querySelectorAll("figure[data-plot]"), drawn = 0;
  figures.forEach(function (f) {{
    var svg = f.querySelector("svg");
    if (svg && svg.getBoundingClientRect().width > 100 && svg.querySelectorAll("path").length > 10) drawn++;
  }});
  document.body.dataset.rendered = drawn + "/" + figures.length;
}});
</script></head>
<body>
<h1>{title}</h1>
<ul>{headline}</ul>
{body}
</body></html>
"""


def build_html(r: Results) -> str:
    s = r.summary
    title = f"Load test: {s.get('scenario', {}).get('name', 'run')}"
    headline = "".join(
        f'<li class="warn">{html.escape(x)}</li>'
        if x.startswith(("RESULTS NOT", "INTERRUPTED")) or "FAILED" in x
        else f"<li>{html.escape(x)}</li>"
        for x in _headline(s)
    )
    plots = [
        ("latency-over-time", "Response latency over time, per class", plot_percentiles_over_time),
        ("distribution", "Latency by percentile (HDR distribution)", plot_distribution),
        ("rates", "Target and achieved rate", plot_rates),
        ("failures", "Errors, timeouts and dropped arrivals", plot_failures),
        ("resources", "Server and load generator: CPU, GPU, memory", plot_resources),
        ("server-timing", "Where the time goes (Server-Timing)", plot_server_timing),
    ]
    body = []
    for name, caption, draw in plots:
        body.append(f'<h2>{html.escape(caption)}</h2><figure data-plot="{name}">{draw(r)}</figure>')
    for title_, (header, rows) in _sections(r).items():
        body.append(f"<h2>{html.escape(title_)}</h2>{_html_table(header, rows)}")
    return PAGE.format(title=html.escape(title), headline=headline, body="\n".join(body))


def write_reports(directory: Path) -> tuple[Path, Path]:
    results = load_results(directory)
    write_atomic(directory / "report.html", build_html(results))
    write_atomic(directory / "report.md", build_markdown(results))
    return directory / "report.html", directory / "report.md"
