"""Complete a measured run from its own files: saturation, the trust verdict, sample sufficiency, replay fidelity,
and the server's split of its time.

Runs after Locust has written the results directory, in the process that started the run, and
again on ``loadtest report DIR`` (with the current rules). It reads ``timeline.csv``,
``resources.csv``/``resources.json``, ``server_split.csv`` and ``replay.json``, and returns the summary
with those parts filled in; writing it is the caller's (``results.summary.write_summary``, once).
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
from loadtest.results.server_split import KNOWN, Buckets, bucket_percentile, combine, read_row
from loadtest.results.summary import MESSY_PREFIX, Percentiles, SampleCheck, Saturation, ServerSplit, Summary, Trust

SPLIT_PERCENTILES = (50.0, 90.0, 99.0)


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
        server_split=server_split(out_dir, summary, resources_meta),
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
        shift = meta["start_epoch"] - run_start
        split_path = out_dir / "server_split.csv"
        split = read_table(split_path)
        if split is not None:  # the sampler's too, by the same shift; before resources.json says ``aligned``
            split["second"] = (split["second"] + shift).round(3)
            write_atomic(split_path, split.to_csv(index=False))
        resources["second"] = (resources["second"] + shift).round(3)
        meta["aligned"] = True
        write_atomic(resources_path, resources.to_csv(index=False))
        write_json(meta_path, meta)
    return meta


def server_split(out_dir: Path, summary: Summary, resources_meta: dict) -> ServerSplit | None:
    """The server's queue and compute: per request from Server-Timing when it sent the header, the scrape beside it
    as a cross-check; else the scrape's alone; None when the target gave neither."""
    scraped = scraped_split(out_dir, summary, resources_meta)
    if scraped is not None and not scraped.requests and summary.generation is not None:
        scraped = None  # a generative server's page (the reference one's) times its infer requests, not streams
    queue, compute = summary.percentiles("server_queue"), summary.percentiles("server_compute")
    if compute is None or not compute.count:
        return scraped
    return ServerSplit(
        source="server-timing",
        resolution="per request",
        requests=compute.count,
        queue_ms=_hdr_figures(queue),
        compute_ms=_hdr_figures(compute),
        percentiles="HDR, 3 significant digits",
        cross_check=scraped,
    )


def _hdr_figures(figures: Percentiles | None) -> dict[str, float | None] | None:
    if figures is None or not figures.count:
        return None
    return {"mean": figures.mean, **{f"p{p:g}": figures.get(f"p{p:g}") for p in SPLIT_PERCENTILES}}


def scraped_split(out_dir: Path, summary: Summary, resources_meta: dict) -> ServerSplit | None:
    """The measured seconds of ``server_split.csv`` as one split: request-weighted means, bucketed percentiles.

    A window counts where most of it lies: one straddling the end of the warm-up counts as measured
    when its middle is past it. Without a warm-up every window counts, the first too, which began a
    moment before the test did (the sampler reads the page first).
    """
    source = resources_meta.get("server_split")
    series = next((s for s in KNOWN if s.source == source), None)
    table = read_table(out_dir / "server_split.csv")
    if series is None or table is None:
        return None
    measured = table[table["second"] + table["window_s"] / 2 >= summary.warmup_s] if summary.warmup_s else table
    whole = combine([read_row(row) for row in measured.to_dict("records")])
    edges = [edge for edge, _ in whole.queue_buckets or whole.compute_buckets]
    return ServerSplit(
        source=series.source,
        resolution=f"{resources_meta.get('window_s') or 1:g} s means",
        requests=round(whole.requests),
        queue_ms=_scraped_figures(whole.queue_ms, whole.queue_buckets),
        compute_ms=_scraped_figures(whole.compute_ms, whole.compute_buckets),
        percentiles=_edges_text(edges),
        missing=series.missing,
    )


def _scraped_figures(mean: float | None, buckets: Buckets) -> dict[str, float | None] | None:
    if mean is None:
        return None
    figures: dict[str, float | None] = {"mean": round(mean, 4)}
    if buckets:
        figures.update({f"p{p:g}": bucket_percentile(buckets, p) for p in SPLIT_PERCENTILES})
    return figures


def _edges_text(edges: list[float]) -> str:
    """How a scrape's percentiles were found: the upper edge of the bucket that holds them, and the edges."""
    finite = [f"{edge * 1000:g}" for edge in edges if edge != float("inf")]
    if not finite:
        return ""
    return f"upper edge of the histogram bucket holding it; edges {', '.join(finite)} ms"


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
