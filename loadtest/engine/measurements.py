"""What the load generator measured, written into the run's directory when Locust quits.

The collector's histograms and counts become the measured ``Summary`` (accounting, throughput,
percentiles per metric and class), the per-second ``timeline.csv``, the interval logs
(``response.hlog``, ``service.hlog``, ``lateness.hlog``, ``server_queue.hlog``) and ``histograms.json``.
Analysis and gates complete the summary later, in the process that started the run
(``engine.runner``); this first summary is what an interrupted or killed parent still leaves behind.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from loadtest.engine.collector import Collector, latency_stats, quick_percentiles
from loadtest.engine.recorder import INTERVAL_METRICS, METRICS, TOKEN_METRICS, TOKEN_RATE, new_histogram
from loadtest.messy.verdicts import summarise
from loadtest.results.directory import HISTOGRAMS, TIMELINE_COLUMNS, histograms_document
from loadtest.results.files import write_atomic, write_json
from loadtest.results.summary import (
    ALL,
    CLEAN,
    MESSY,
    MESSY_PREFIX,
    Accounting,
    Counts,
    Percentiles,
    RunInfo,
    Summary,
    Throughput,
    write_summary,
)
from loadtest.results.tokens import generation_section


def _per_second(count: int, seconds: float) -> float | None:
    return round(count / seconds, 3) if seconds else None


def build_summary(collector: Collector, meta: dict) -> Summary:
    """The measured summary; ``meta`` is ``RunConfig.meta_for_summary`` (scenario, target, profile, load, run)."""
    classes = collector.classes()
    measured = meta["load"]["duration_s"]
    total = collector.accounting()
    latency: dict[str, dict[str, Percentiles]] = {
        metric: {cls: latency_stats(collector.histogram(metric, cls)) for cls in (ALL, *classes)}
        for metric in (*METRICS, *TOKEN_METRICS)
        if collector.histogram(metric, ALL) is not None
    }
    by_class = {cls: collector.accounting(cls) for cls in classes}
    messy = meta.get("messy")
    messy_classes = [cls for cls in classes if cls.startswith(MESSY_PREFIX)]
    if messy_classes:
        clean = [cls for cls in classes if not cls.startswith(MESSY_PREFIX)]
        _add_merged(latency, by_class, collector, CLEAN, clean)
        _add_merged(latency, by_class, collector, MESSY, messy_classes)
        messy = {**(messy or {}), **summarise(collector.verdicts, {cls: c.scheduled for cls, c in by_class.items()})}
    sent = total.scheduled - total.dropped
    generation = None
    throughput = Throughput(
        _per_second(total.scheduled, measured), _per_second(sent, measured), _per_second(total.ok, measured)
    )
    if meta.get("generation") is not None:
        rates = {cls: latency_stats(collector.histogram(TOKEN_RATE, cls)) for cls in (ALL, *classes)}
        rates = {cls: p for cls, p in rates.items() if p.count}
        spec = meta["generation"]
        accounting = Accounting(total, by_class)
        generation = generation_section(
            collector.tokens, rates, accounting, measured, tuple(spec["goodput"]), spec["stream"], spec.get("tokenizer")
        )
        throughput = Throughput(
            throughput.scheduled_per_s,
            throughput.sent_per_s,
            throughput.ok_per_s,
            _per_second(generation["output_tokens"], measured),
            _per_second(generation["input_tokens"], measured) if generation["input_tokens"] is not None else None,
        )
    return Summary(
        scenario=meta.get("scenario", {}),
        target=meta.get("target", {}),
        profile=meta.get("profile"),
        load=meta["load"],
        run=RunInfo(**meta.get("run", {})),
        messy=messy if messy_classes or messy else None,
        accounting=Accounting(total, by_class),
        throughput=throughput,
        latency_ms=latency,
        generation=generation,
        clamped_values=collector.clamped,
        classes=tuple(classes),
    )


def _add_merged(
    latency: dict[str, dict[str, Percentiles]],
    by_class: dict[str, Counts],
    collector: Collector,
    name: str,
    classes: list[str],
) -> None:
    """A pseudo-class of several classes together (``clean``, ``messy``): its percentiles and accounting."""
    for metric, stats in latency.items():
        merged = new_histogram()
        for cls in classes:
            if (histogram := collector.histogram(metric, cls)) is not None:
                merged.add(histogram)
        stats[name] = latency_stats(merged)
    parts = [by_class[cls] for cls in classes]
    errors: dict[str, int] = {}
    for part in parts:
        for kind, n in part.errors_by_kind.items():
            errors[kind] = errors.get(kind, 0) + n
    by_class[name] = Counts(
        scheduled=sum(p.scheduled for p in parts),
        ok=sum(p.ok for p in parts),
        errors=sum(p.errors for p in parts),
        errors_by_kind=dict(sorted(errors.items())),
        timeouts=sum(p.timeouts for p in parts),
        dropped=sum(p.dropped for p in parts),
        lost_worker=sum(p.lost_worker for p in parts),
        unfinished=sum(p.unfinished for p in parts),
    )


def timeline_rows(collector: Collector, target_at: Callable[[float], float]) -> list[dict]:
    seconds = sorted(set(collector.timeline) | set(collector.intervals))
    rows = []
    for second in seconds:
        counts = collector.timeline.get(second, {})
        row = {"second": second, "target": round(target_at(second + 0.5), 3)}
        for column in ("scheduled", "sent", "ok", "error", "transport", "timeout", "dropped", "warmup"):
            row[column] = counts.get(column, 0)
        for metric in INTERVAL_METRICS:
            histogram = collector.interval_histogram(second, metric)
            stats = quick_percentiles(histogram)  # no mean: hdrh computes it by walking every bucket
            row[f"{metric}_p50_ms"] = stats.get("p50", "")
            row[f"{metric}_p99_ms"] = stats.get("p99", "")
            if metric == "response":
                row["response_max_ms"] = histogram.get_max_value() / 1000 if stats else ""
        rows.append(row)
    return rows


def warmup_comment(warmup_s: float) -> str:
    """The interval log's header line on the warm-up: its intervals are in the log, and how to leave them out.

    The recorder puts every success in the interval log, warm-up included (``results.intervals``);
    the interval timestamps count seconds from ``StartTime``, so HistogramLogProcessor's ``-start``
    (seconds from the log's start) skips exactly the warm-up's intervals.
    """
    if not warmup_s:
        return "#[Warm-up: none; every interval is measured]"
    return f"#[Warm-up: first {warmup_s:.3f} s; pass -start {warmup_s:.3f} to HistogramLogProcessor to skip it]"


def hlog_text(collector: Collector, metric: str, start_epoch: float, warmup_s: float = 0.0) -> str:
    lines = [
        "#[Histogram log format version 1.3]",
        f"#[StartTime: {start_epoch:.3f} (seconds since epoch), "
        f"{datetime.fromtimestamp(start_epoch, UTC).isoformat()}]",
        f"#[BaseTime: {start_epoch:.3f} (seconds since epoch)]",  # the interval timestamps count from here
        warmup_comment(warmup_s),
        f"#[loadtest {metric} latency in microseconds; one interval per second; Tag=<request class>]",
        '"StartTimestamp","Interval_Length","Interval_Max","Interval_Compressed_Histogram"',
    ]
    for second in sorted(collector.intervals):
        classes = collector.interval_classes(second, metric)
        for cls in [ALL, *classes] if classes else []:
            histogram = collector.interval_histogram(second, metric, cls)
            tag = "" if cls == ALL else f"Tag={cls},"
            lines.append(
                f"{tag}{second:.3f},1.000,{histogram.get_max_value() / 1000:.3f},{histogram.encode().decode()}"
            )
    return "\n".join(lines) + "\n"


def write_results(
    out: Path, collector: Collector, meta: dict, target_at: Callable[[float], float], start_epoch: float
) -> Summary:
    """Write every file of the run's measurements into ``out``; returns the measured summary."""
    out.mkdir(parents=True, exist_ok=True)
    summary = build_summary(collector, meta)
    warmup = float(meta["load"].get("warmup_s") or 0.0)
    for metric in INTERVAL_METRICS:
        write_atomic(out / f"{metric}.hlog", hlog_text(collector, metric, start_epoch, warmup))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=TIMELINE_COLUMNS)
    writer.writeheader()
    writer.writerows(timeline_rows(collector, target_at))
    write_atomic(out / "timeline.csv", buffer.getvalue())
    write_json(out / HISTOGRAMS, histograms_document(collector.histograms), indent=1)
    write_summary(out, summary)
    return summary
