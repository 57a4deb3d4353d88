"""Complete a measured run from its own files: saturation, the trust verdict, sample sufficiency, replay fidelity.

Runs after Locust has written the results directory, in the process that started the run, and
again on ``loadtest report DIR`` (with the current rules). It reads ``timeline.csv``,
``resources.csv``/``resources.json`` and ``replay.json``, and returns the summary with those parts
filled in; writing it is the caller's (``results.summary.write_summary``, once).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from loadtest.analysis.fidelity import fidelity
from loadtest.analysis.saturation import analyse, sufficiency
from loadtest.analysis.trust import LATENESS_FLOOR_MS, Evidence, generator_peak, judge
from loadtest.errors import ConfigError
from loadtest.results.directory import read_replay, read_table
from loadtest.results.files import read_json, write_atomic, write_json
from loadtest.results.intervals import read_interval_counts
from loadtest.results.summary import MESSY_PREFIX, SampleCheck, Saturation, Summary, Trust


def analyse_run(out_dir: Path, summary: Summary) -> Summary:
    timeline = read_table(out_dir / "timeline.csv")
    resources_meta = _aligned_resources(out_dir, summary)
    resources = read_table(out_dir / "resources.csv")
    saturation, trust = summary.saturation, summary.trust
    if timeline is not None and len(timeline):
        saturation = analyse(timeline, resources, summary.warmup_s)
        trust = judge(timeline, resources, _evidence(summary, resources_meta, late_sends(out_dir, summary.warmup_s)))
        saturation = _with_trust(saturation, trust, generator_peak(resources, summary.warmup_s, summary.duration_s))
    # Messy kinds are a few requests each: their percentiles are shown, not claimed (the messy total is).
    counts = {
        cls: stats.count
        for cls, stats in summary.latency_ms.get("response", {}).items()
        if not cls.startswith(MESSY_PREFIX)
    }
    replayed = read_replay(out_dir)
    return replace(
        summary,
        saturation=saturation,
        trust=trust,
        resources=resources_meta,
        sample_sufficiency=tuple(SampleCheck.from_dict(row) for row in sufficiency(counts)),
        replay=replay_summary(replayed, timeline, summary) if replayed is not None else summary.replay,
    )


def late_sends(out_dir: Path, warmup: float) -> int | None:
    """Measured sends later than the lateness floor, from ``lateness.hlog``; None where it is missing or unreadable."""
    try:
        counts = read_interval_counts(out_dir, None, "lateness", warmup)
    except ConfigError:
        return None
    return int(counts.counts[:, counts.values_ms > LATENESS_FLOOR_MS].sum())


def _evidence(summary: Summary, resources_meta: dict, late: int | None) -> Evidence:
    def p99(metric: str) -> float | None:
        figures = summary.percentiles(metric)
        return figures.p99 if figures else None

    return Evidence(
        warmup_s=summary.warmup_s,
        duration_s=summary.duration_s,
        lateness_p99_ms=p99("lateness"),
        late_sends=late,
        response_p99_ms=p99("response"),
        service_p99_ms=p99("service"),
        dropped=summary.accounting.total.dropped,
        lost_workers=getattr(summary.run, "lost_workers", ()) or (),
        generator_cores=resources_meta.get("generator_cores"),
    )


def _with_trust(saturation: Saturation, trust: Trust, peak: float | None) -> Saturation:
    """The saturation block's generator fields and lines, from the trust verdict (one place decides trust)."""
    return replace(
        saturation,
        generator_peak_util=peak,
        generator_overloaded_seconds=trust.seconds("generator_busy", "starved_core"),
        trustworthy=trust.trustworthy,
        lines=[*saturation.lines, *trust.lines],
    )


def _aligned_resources(out_dir: Path, summary: Summary) -> dict:
    """``resources.json``, with ``resources.csv``'s seconds counted from the run's start, as the timeline's are.

    The sampler starts before Locust's test does; the first analysis shifts its seconds once and
    records that it did (``aligned``), so a later ``loadtest report`` does not shift them again.
    """
    meta_path = out_dir / "resources.json"
    meta = read_json(meta_path) if meta_path.exists() else {}
    resources_path = out_dir / "resources.csv"
    resources = read_table(resources_path)
    run_start = summary.run.started_epoch
    if resources is not None and meta.get("start_epoch") and run_start and not meta.get("aligned"):
        resources["second"] = (resources["second"] + meta["start_epoch"] - run_start).round(3)
        meta["aligned"] = True
        write_atomic(resources_path, resources.to_csv(index=False))
        write_json(meta_path, meta)
    return meta


def replay_summary(replayed: dict, timeline, summary: Summary) -> dict:
    """What the scan found in the capture, without its per-second list, and the replay's fidelity."""
    sent = {}
    if timeline is not None:
        sent = dict(zip(timeline["second"].astype(int), timeline["sent"].astype(int), strict=True))
    lateness = summary.percentiles("lateness")
    kept = {k: v for k, v in replayed.items() if k != "intended_per_second"}
    return {
        **kept,
        "fidelity": fidelity(replayed["intended_per_second"], sent, lateness.as_dict() if lateness else None),
    }
