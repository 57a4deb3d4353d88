"""One directory per run: ``summary.json``, HdrHistogram interval logs, a per-second timeline.

The directory is enough to rebuild every figure later: the summary holds the merged percentiles
and the accounting; ``response.hlog`` and ``service.hlog`` hold one histogram per second per
request class, in HdrHistogram's own log format (v1.3, ``Tag=<class>``; the untagged lines are all
classes together; values in microseconds), so its standard tools read them; ``timeline.csv`` has
one row per second that pandas reads. Every file is written to a temporary name and renamed, so a
reader never sees half a file, and an interrupted run still leaves whole files.
"""

from __future__ import annotations

import csv
import io
import json
import time
from datetime import UTC, datetime
from pathlib import Path

from loadtest.engine.collector import Collector, latency_stats, quick_percentiles
from loadtest.engine.recorder import ALL, INTERVAL_METRICS, METRICS, new_histogram
from loadtest.errors import ConfigError
from loadtest.messy.kinds import CLASS_PREFIX, summarise
from loadtest.results.files import write_atomic, write_json

CLEAN = "clean"  # every class but the messy ones, in a run with messy traffic
MESSY = "messy"  # every messy class together
ACCOUNTED = ("scheduled", "ok", "errors", "timeouts", "dropped", "unfinished")

SCHEMA = "loadtest.summary/1"
TIMELINE_COLUMNS = (
    "second",
    "target",
    "scheduled",
    "sent",
    "ok",
    "error",
    "timeout",
    "dropped",
    "warmup",
    "response_p50_ms",
    "response_p99_ms",
    "response_max_ms",
    "service_p50_ms",
    "service_p99_ms",
)


def run_dir_name(scenario: str, when: float | None = None) -> str:
    stamp = datetime.fromtimestamp(when or time.time(), UTC).strftime("%Y%m%d-%H%M%S")
    safe = "".join(ch if ch.isalnum() or ch in "-_" else "-" for ch in scenario)
    return f"{stamp}-{safe}"


def read_summary(directory: Path) -> dict:
    """A results directory's ``summary.json`` (or that file itself); ConfigError (exit 2) says what is wrong."""
    path = directory / "summary.json" if directory.is_dir() else directory
    if not path.exists():
        raise ConfigError(str(directory), None, "not a results directory: it has no summary.json")
    try:
        summary = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(str(path), None, f"unreadable: {exc}") from None
    if not isinstance(summary, dict) or not str(summary.get("schema", "")).startswith("loadtest.summary/"):
        raise ConfigError(str(path), "schema", "not a loadtest summary (no 'schema': 'loadtest.summary/N')")
    return summary


def read_replay(directory: Path) -> dict | None:
    """A replay's ``replay.json`` (what the scan found in the capture), or None for a run of a shape."""
    path = directory / "replay.json"
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(str(path), None, f"unreadable: {exc}") from None


def replay_target(directory: Path) -> list[int]:
    """Intended sends per second of a replay: its "target" over time."""
    replay = read_replay(directory)
    return replay["intended_per_second"] if replay else []


def read_table(path: Path):
    """A per-second CSV of a results directory as a DataFrame; None when absent or empty (a run under a second)."""
    import pandas as pd  # not at module level: Locust processes import this module and never read tables

    if not path.exists():
        return None
    try:
        return pd.read_csv(path)
    except (ValueError, OSError):
        return None


def build_summary(collector: Collector, meta: dict) -> dict:
    """The run's machine-readable summary (schema ``loadtest.summary/1``, documented in the README)."""
    classes = collector.classes()
    measured = meta["load"]["duration_s"]
    accounting = collector.accounting()
    latency = {
        metric: {cls: latency_stats(collector.histogram(metric, cls)) for cls in (ALL, *classes)}
        for metric in METRICS
        if collector.histogram(metric, ALL) is not None
    }
    sent = accounting["scheduled"] - accounting["dropped"]
    by_class = {cls: collector.accounting(cls) for cls in classes}
    extra = {}
    if any(cls.startswith(CLASS_PREFIX) for cls in classes):
        clean = [cls for cls in classes if not cls.startswith(CLASS_PREFIX)]
        add_merged(latency, by_class, collector, CLEAN, clean)
        add_merged(latency, by_class, collector, MESSY, [cls for cls in classes if cls.startswith(CLASS_PREFIX)])
        extra["messy"] = {
            **meta.get("messy", {}),
            **summarise(collector.counts, {cls: a["scheduled"] for cls, a in by_class.items()}),
        }
    return {
        "schema": SCHEMA,
        **meta,
        "accounting": {
            **accounting,
            "balanced": accounting["unfinished"] == 0,
            "by_class": by_class,
        },
        "throughput": {
            "scheduled_per_s": round(accounting["scheduled"] / measured, 3) if measured else None,
            "sent_per_s": round(sent / measured, 3) if measured else None,
            "ok_per_s": round(accounting["ok"] / measured, 3) if measured else None,
        },
        "latency_ms": latency,
        "clamped_values": collector.counts.get("clamped|all", 0),
        "classes": classes,
        **extra,
    }


def add_merged(latency: dict, by_class: dict, collector: Collector, name: str, classes: list[str]) -> None:
    """A pseudo-class of several classes together (``clean``, ``messy``): its percentiles and accounting."""
    for metric, stats in latency.items():
        merged = new_histogram()
        for cls in classes:
            if (histogram := collector.histogram(metric, cls)) is not None:
                merged.add(histogram)
        stats[name] = latency_stats(merged)
    totals = {key: sum(by_class[cls][key] for cls in classes) for key in ACCOUNTED}
    errors: dict[str, int] = {}
    for cls in classes:
        for kind, n in by_class[cls]["errors_by_kind"].items():
            errors[kind] = errors.get(kind, 0) + n
    by_class[name] = {**totals, "errors_by_kind": dict(sorted(errors.items()))}


def timeline_rows(collector: Collector, target_at) -> list[dict]:
    seconds = sorted(set(collector.timeline) | set(collector.intervals))
    rows = []
    for second in seconds:
        counts = collector.timeline.get(second, {})
        row = {"second": second, "target": round(target_at(second + 0.5), 3)}
        for column in ("scheduled", "sent", "ok", "error", "timeout", "dropped", "warmup"):
            row[column] = counts.get(column, 0)
        for metric in INTERVAL_METRICS:
            histogram = collector.interval_histogram(second, f"{metric}|{ALL}")
            stats = quick_percentiles(histogram)  # no mean: hdrh computes it by walking every bucket
            row[f"{metric}_p50_ms"] = stats.get("p50", "")
            row[f"{metric}_p99_ms"] = stats.get("p99", "")
            if metric == "response":
                row["response_max_ms"] = histogram.get_max_value() / 1000 if stats else ""
        rows.append(row)
    return rows


def hlog_text(collector: Collector, metric: str, start_epoch: float) -> str:
    lines = [
        "#[Histogram log format version 1.3]",
        f"#[StartTime: {start_epoch:.3f} (seconds since epoch), "
        f"{datetime.fromtimestamp(start_epoch, UTC).isoformat()}]",
        f"#[loadtest {metric} latency in microseconds; one interval per second; Tag=<request class>]",
        '"StartTimestamp","Interval_Length","Interval_Max","Interval_Compressed_Histogram"',
    ]
    for second in sorted(collector.intervals):
        classes = sorted({k.split("|", 1)[1] for k in collector.intervals[second] if k.startswith(metric + "|")})
        for cls in [ALL, *classes] if classes else []:
            histogram = collector.interval_histogram(second, f"{metric}|{cls}")
            tag = "" if cls == ALL else f"Tag={cls},"
            lines.append(
                f"{tag}{second:.3f},1.000,{histogram.get_max_value() / 1000:.3f},{histogram.encode().decode()}"
            )
    return "\n".join(lines) + "\n"


def write_results(out: Path, collector: Collector, meta: dict, target_at, start_epoch: float) -> dict:
    """Write every file of the run into ``out``; returns the summary."""
    out.mkdir(parents=True, exist_ok=True)
    summary = build_summary(collector, meta)
    for metric in INTERVAL_METRICS:
        write_atomic(out / f"{metric}.hlog", hlog_text(collector, metric, start_epoch))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=TIMELINE_COLUMNS)
    writer.writeheader()
    writer.writerows(timeline_rows(collector, target_at))
    write_atomic(out / "timeline.csv", buffer.getvalue())
    histograms = {key: h.encode().decode() for key, h in sorted(collector.histograms.items())}
    write_json(out / "histograms.json", histograms, indent=1)
    write_json(out / "summary.json", summary)
    return summary
