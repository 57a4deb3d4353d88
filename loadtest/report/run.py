"""Reports of one run, built from its results directory alone: ``report.html`` and ``report.md``.

``report.html`` is self-contained and works offline: the plots are inline SVG drawn by matplotlib,
no script or style is fetched from anywhere. ``report.md`` fits GitHub's step summary or a PR comment.
A short inline script marks the page once every plot has drawn (``data-rendered``), and records
script errors (``data-errors``), so a headless browser can check the page.

What the HTML holds: response percentiles over time per class; the HDR percentile distribution
(the log "nines" axis of HdrHistogram's plotter); target against achieved rate; errors, timeouts
and dropped arrivals over time; CPU, GPU and memory of the server and the generator; a per-class
table; the Server-Timing breakdown per percentile (its value from the header, or over gRPC from the
``server-timing`` trailing metadata; without either, the server's own split per second from its
/metrics) and where the split came from; sample sufficiency; the saturation lines; gates.
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from hdrh.histogram import HdrHistogram

from loadtest.replay.redact import redact_url
from loadtest.report.kit import COLOURS, PAGE, figure, html_sections, md_sections, no_data, svg
from loadtest.report.terminal import TOKEN_COLUMNS, server_split_line, split_origin, token_figures, token_lines
from loadtest.results.directory import read_histograms, read_table
from loadtest.results.files import write_atomic
from loadtest.results.hdr_bulk import value_at_percentile
from loadtest.results.summary import (
    ALL,
    FAIL,
    MESSY_PREFIX,
    PASS,
    UNTRUSTED,
    GateResults,
    ServerSplit,
    Summary,
    read_summary,
    seconds_text,
)
from loadtest.traffic.protocols import GRPC

NINES = (0.0, 50.0, 90.0, 99.0, 99.9, 99.99, 99.999)


@dataclass
class Results:
    directory: Path
    summary: Summary
    timeline: pd.DataFrame
    resources: pd.DataFrame | None
    histograms: dict[tuple[str, str], HdrHistogram]  # (metric, class)
    intervals: pd.DataFrame  # second, class, p50, p99 (ms), from response.hlog
    split: pd.DataFrame | None = None  # server_split.csv: the server's own split per second, from its /metrics


def load_results(directory: Path) -> Results:
    summary = read_summary(directory)
    timeline = read_table(directory / "timeline.csv")
    timeline = pd.DataFrame() if timeline is None else timeline
    resources = read_table(directory / "resources.csv")
    start = summary.run.started_epoch or 0.0
    return Results(
        directory,
        summary,
        timeline,
        resources,
        read_histograms(directory),
        interval_percentiles(directory, start),
        read_table(directory / "server_split.csv"),
    )


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


def _mark_onsets(ax, summary: Summary) -> None:
    """Vertical lines where the server saturated and where latency bent, as the analysis found them, and
    the seconds the trust verdict holds against the load generator, shaded."""
    saturation = summary.saturation
    if saturation is None:
        return
    for at, label, colour in (
        (saturation.server_saturated_at, "CPU saturated", "black"),
        (saturation.knee_at, "latency knee", "#b00"),
    ):
        if at is not None:
            ax.axvline(at, color=colour, linestyle=":", linewidth=1.5, label=label)
    untrusted = summary.trust.seconds() if summary.trust is not None else []
    for i, second in enumerate(untrusted):  # the seconds the trust verdict holds against the generator
        ax.axvspan(second, second + 1, color="#f0a000", alpha=0.2, label="not trustworthy" if i == 0 else None)


def plot_percentiles_over_time(r: Results) -> str:
    if r.intervals.empty:
        return no_data("no response intervals recorded")
    fig, ax = figure()
    # Messy kinds are a handful of requests each, drawn in their own table: here the traffic's classes.
    groups = [(cls, part) for cls, part in r.intervals.groupby("class") if not cls.startswith("messy:")]
    for i, (cls, part) in enumerate(sorted(groups, key=lambda kv: kv[0] != "all")):
        part = part.sort_values("second")
        colour = COLOURS[i % len(COLOURS)]
        ax.plot(part["second"], part["p99"], color=colour, label=f"{cls} p99")
        ax.plot(part["second"], part["p50"], color=colour, linestyle="--", alpha=0.7, label=f"{cls} p50")
    warmup = r.summary.warmup_s
    if warmup:
        ax.axvspan(0, warmup, color="grey", alpha=0.15, label="warm-up")
    _mark_onsets(ax, r.summary)
    ax.set(xlabel="second", ylabel="response latency (ms)", yscale="log")
    ax.legend(fontsize=7, ncol=4)
    return svg(fig)


def plot_distribution(r: Results) -> str:
    """Latency by percentile on HdrHistogram's log 'nines' axis: x = 1 / (1 - percentile)."""
    keys = sorted(
        (metric, cls)
        for (metric, cls), h in r.histograms.items()
        if metric == "response" and not cls.startswith(MESSY_PREFIX) and h.get_total_count()
    )
    if not keys:
        return no_data("no response histogram recorded")
    fig, ax = figure(8.0, 3.6)
    levels = 100 - 100 / np.logspace(0, 5, 160)
    for i, key in enumerate(sorted(keys, key=lambda k: k[1] != ALL)):
        h = r.histograms[key]
        top = 100 - 100 / max(2, h.get_total_count())  # no claims beyond what the samples support
        pts = [p for p in levels if p <= top]
        values = [value_at_percentile(h, p) / 1000 for p in pts]
        ax.plot([1 / (1 - p / 100) for p in pts], values, color=COLOURS[i % len(COLOURS)], label=key[1])
    ax.set_xscale("log")
    ticks = [1 / (1 - p / 100) for p in NINES if p < 100]
    ax.set_xticks(ticks, [f"{p:g}%" for p in NINES if p < 100])
    ax.set(xlabel="percentile", ylabel="response latency (ms)")
    ax.legend(fontsize=7)
    return svg(fig)


def plot_rates(r: Results) -> str:
    t = r.timeline
    if t.empty:
        return no_data("no timeline")
    fig, ax = figure()
    intended = "intended (the capture)" if r.summary.replay else "target"
    ax.plot(t["second"], t["target"], color="grey", linestyle="--", label=intended)
    ax.plot(t["second"], t["sent"], color=COLOURS[0], label="sent")
    ax.plot(t["second"], t["ok"], color=COLOURS[2], label="ok")
    model = r.summary.load.get("model", "open")
    ax.set(xlabel="second", ylabel="requests/s" if model == "open" else "requests/s (target: users)")
    ax.legend(fontsize=7)
    return svg(fig)


def plot_failures(r: Results) -> str:
    t = r.timeline
    if t.empty:
        return no_data("no timeline")
    fig, ax = figure(8.0, 2.6)
    for i, column in enumerate(("error", "timeout", "dropped")):
        ax.plot(t["second"], t[column], color=COLOURS[(i + 1) % len(COLOURS)], label=column)
    ax.set(xlabel="second", ylabel="per second")
    ax.legend(fontsize=7)
    return svg(fig)


def plot_resources(r: Results) -> str:
    res = r.resources
    if res is None or res.empty:
        return no_data("no resource samples (the run was shorter than a second, or was not sampled)")
    gpu = [c for c in res.columns if c.endswith("_util_pct") and c.startswith("gpu")]
    fig, (cpu_ax, mem_ax) = figure(8.0, 4.6, rows=2)
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
    return svg(fig)


def plot_server_timing(r: Results) -> str:
    rows = server_timing_rows(r.summary)
    if not rows:
        return plot_scraped_split(r)
    fig, ax = figure(8.0, 2.8)
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
    return svg(fig)


def plot_scraped_split(r: Results) -> str:
    """Without Server-Timing, the server's own split from its /metrics: mean queue and compute ms, second by second."""
    split, source = r.split, r.summary.server_split
    if split is None or split.empty or source is None:
        sent = "metadata" if r.summary.target.get("protocol") == GRPC else "header"
        return no_data(f"the target sent no Server-Timing {sent}, and no known server's /metrics was read")
    fig, ax = figure(8.0, 2.8)
    for i, (column, label) in enumerate((("server_queue_ms", "queue"), ("server_compute_ms", "compute"))):
        if split[column].notna().any():
            ax.plot(split["second"], split[column], color=COLOURS[i], marker=".", label=f"{label} (mean per request)")
    ax.set(xlabel="second", ylabel=f"ms, from {split_origin(source, r.summary.target.get('protocol'))}")
    ax.legend(fontsize=7)
    return svg(fig)


# -- tables --------------------------------------------------------------------------------------


def server_timing_rows(summary: Summary) -> list[dict]:
    if "server_compute" not in summary.latency_ms:
        return []
    parts = ("server_queue", "server_compute", "overhead", "service")
    return [
        {"percentile": p, **{part: summary.percentiles(part).get(p) or 0.0 for part in parts}}
        for p in ("p50", "p90", "p99", "p99.9")
    ]


def class_rows(summary: Summary) -> list[list[str]]:
    rows = []
    for cls, stats in summary.latency_ms.get("response", {}).items():
        counts = summary.accounting.of(cls)
        figures = [stats.get(p) for p in ("p50", "p90", "p99", "p99.9", "max")]
        rows.append(
            [
                cls,
                str(stats.count if counts is None else counts.ok),
                *(str(0 if counts is None else n) for n in _failures(counts)),
                *(f"{float('nan') if v is None else v:.3f}" for v in figures),
            ]
        )
    return rows


def _failures(counts) -> tuple[int, int, int]:
    return (0, 0, 0) if counts is None else (counts.errors, counts.timeouts, counts.dropped)


CLASS_HEADER = ["class", "ok", "errors", "timeouts", "dropped", "p50 ms", "p90 ms", "p99 ms", "p99.9 ms", "max ms"]


def token_rows(summary: Summary) -> tuple[list[str], list[list[str]]]:
    """A generative run's token latencies per class (ms) and each request's output tokens a second (median)."""
    header = ["class", "ok", *(f"{metric} {key}" for metric, key in TOKEN_COLUMNS), "tokens/s p50"]
    rows = []
    for cls in summary.latency_ms.get("e2e", {}):
        counts = summary.accounting.of(cls)
        figures, rate = token_figures(summary, cls)
        cells = ["-" if value is None else f"{value:.3f}" for value in figures]
        rows.append([cls, "-" if counts is None else str(counts.ok), *cells, "-" if rate is None else f"{rate:.1f}"])
    return header, rows


def _sections(r: Results) -> dict[str, tuple[list[str], list[list[str]]]]:
    s = r.summary
    tables = {}
    if s.generation is not None:
        tables["Per class: time to first token, between tokens, per output token, end to end (ms)"] = token_rows(s)
    tables["Per class (response latency)"] = (CLASS_HEADER, class_rows(s))
    timing = server_timing_rows(s)
    if timing:
        tables["Server-Timing breakdown (ms)"] = (
            ["percentile", "queue", "compute", "network + framework", "service"],
            [
                [t["percentile"], *(f"{t[k]:.3f}" for k in ("server_queue", "server_compute", "overhead", "service"))]
                for t in timing
            ],
        )
    if s.server_split is not None:
        tables["Server split: queue and compute per request (ms)"] = split_table(
            s.server_split, s.target.get("protocol")
        )
    if s.sample_sufficiency:
        tables["Sample sufficiency"] = (
            ["class", "percentile", "samples", "needed", "enough"],
            [[x.cls, x.percentile, x.samples, x.needed, "yes" if x.enough else "NO"] for x in s.sample_sufficiency],
        )
    if s.replay:
        tables.update(replay_tables(s.replay))
    if s.messy:
        from loadtest.report.messy import messy_tables

        tables.update(messy_tables(s))
    if s.trust is not None and s.trust.reasons:
        tables["Trust: why these results are not trustworthy"] = (
            ["rule", "what", "seconds"],
            [[r.rule, r.message, seconds_text(r.seconds).strip(" ()") or "the whole run"] for r in s.trust.reasons],
        )
    if s.gates:
        shown = {PASS: "pass", FAIL: "FAIL", UNTRUSTED: "UNTRUSTED"}
        tables["Gates"] = (
            ["gate", "result", "detail"],
            [[g.name, shown[g.verdict], g.message] for g in s.gates.results],
        )
    return tables


SPLIT_HEADER = ["from", "resolution", "requests", "queue mean", "queue p50", "queue p99"]
SPLIT_HEADER += ["compute mean", "compute p50", "compute p99", "percentiles"]


def split_table(split: ServerSplit, protocol: str | None = None) -> tuple[list[str], list[list[str]]]:
    """The split, and the scrape beside a Server-Timing split: each part's mean and percentiles, and their source."""

    def cells(each: ServerSplit, figures: Mapping[str, float | None] | None) -> list[str]:
        if figures is None:
            return ["not exposed", "", ""]
        bound = "" if each.source == "server-timing" else "≤ "  # a bucket's upper edge: the value is at most that
        shown = ["-" if figures.get(k) is None else f"{figures[k]:.3f}" for k in ("mean", "p50", "p99")]
        return [shown[0], *(v if v == "-" else bound + v for v in shown[1:])]

    rows = []
    for each in (split, split.cross_check):
        if each is not None:
            row = [split_origin(each, protocol), each.resolution, f"{each.requests:,}", *cells(each, each.queue_ms)]
            rows.append([*row, *cells(each, each.compute_ms), each.percentiles or "none"])
    return SPLIT_HEADER, rows


def gate_headline(gates: GateResults) -> str:
    """``gates: all passed``, ``gates: FAILED``, and how many latency gates an untrusted run left unjudged."""
    line = "gates: " + ("all passed" if gates.passed else "FAILED")
    unjudged = sum(r.verdict == UNTRUSTED for r in gates.results)
    if unjudged:
        line += f"; {unjudged} latency gate(s) not judged: the run is not trustworthy"
    return line


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


def _headline(s: Summary) -> list[str]:
    a, load = s.accounting.total, s.load
    lines = [
        f"scenario {s.scenario.get('name', '?')}: {load.get('model', '?')} load, "
        f"{load.get('shape', {}).get('kind', '?')} shape, {s.duration_s:g} s measured",
        f"target {redact_url(str(s.target.get('url', '?')))}",  # a results directory from before redaction too
        f"scheduled {a.scheduled} = ok {a.ok} + errors {a.errors} + timeouts {a.timeouts} + dropped {a.dropped}"
        + (f" + lost_worker {a.lost_worker}" if a.lost_worker else "")
        + ("" if s.accounting.balanced else f" (+ {a.unfinished} unfinished)"),
        *token_lines(s),
    ]
    if s.failure is not None:
        lines.append(f"RUN FAILED: {s.failure.line}")
    if s.run.interrupted:
        lines.append("INTERRUPTED: these figures cover only what was measured")
    if s.replay:
        from loadtest.analysis.fidelity import fidelity_lines

        lines += fidelity_lines(s.replay)
    if s.messy:
        from loadtest.report.messy import messy_lines

        lines += messy_lines(s)
    if s.gates:
        lines.append(gate_headline(s.gates))
    lines += s.saturation.lines if s.saturation is not None else []
    if s.trust is not None and s.trust.trustworthy:
        lines.append(f"trustworthy: the load generator kept up (checked: {s.trust.rules})")
    split = server_split_line(s)
    if split is not None:
        lines.append(split)
    return lines


def build_markdown(r: Results) -> str:
    s = r.summary
    parts = [f"## Load test: {s.name}", ""]
    parts += [f"- {line}" for line in _headline(s)]
    parts += md_sections(_sections(r))
    # Relative: report.md is read beside report.html (an uploaded artifact, a CI step summary of the directory),
    # where the absolute path of the machine that ran it would lead nowhere.
    parts += ["", "Full report: [report.html](report.html)", ""]
    return "\n".join(parts)


def build_html(r: Results) -> str:
    s = r.summary
    title = f"Load test: {s.name}"
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
        ("server-timing", "Where the time goes in the server (Server-Timing, or its /metrics)", plot_server_timing),
    ]
    body = []
    for name, caption, draw in plots:
        body.append(f'<h2>{html.escape(caption)}</h2><figure data-plot="{name}">{draw(r)}</figure>')
    body += html_sections(_sections(r))
    return PAGE.format(title=html.escape(title), headline=headline, body="\n".join(body))


def write_reports(directory: Path) -> tuple[Path, Path]:
    results = load_results(directory)
    write_atomic(directory / "report.html", build_html(results))
    write_atomic(directory / "report.md", build_markdown(results))
    return directory / "report.html", directory / "report.md"
