"""Where a run saturated, whether its numbers can be trusted, and whether each percentile has enough samples.

Pure analysis over two per-second tables of a results directory: the latency timeline
(``timeline.csv``) and the resource samples (``resources.csv``), as pandas DataFrames.

- **Server saturation**: the first second from which one of three signals holds for ``hold``
  seconds; the first to fire is named (``server_saturation_signal``), and every one that fired is
  kept with its second (``server_signals``):
  - *process cores*: the server's processes use ``busy`` (90%) or more of the cores they may use;
  - *busiest thread*: its busiest thread is running or waiting for a core (runnable) ``THREAD_BUSY``
    (90%) or more of the time (the sampler's ``server_thread_max_busy``): it never waits for work.
    A model server with one serving thread (ONNX Runtime with 1 intra-op thread) is bottlenecked
    there while its process sits at half of two cores. Its CPU alone would miss it on a shared
    machine, where the thread that wants a whole core gets 75% of one and waits the rest;
  - *queue*: the server's own queue wait grew: its per-second median (Server-Timing queue time; a
    3 s rolling median) stays above ``QUEUE_FACTOR`` (3) times its early level (the median over the
    first quarter of the measured seconds) and above 5 ms. Without Server-Timing, the rows in its
    queue from its ``/metrics`` (the sampler's ``server_queue_rows``), above 3 times their early level
    and above 1 row. A run overloaded from its first second has a high early level, so this
    signal fires only for a queue that builds up; the CPU signals see the rest.

  A GPU whose utilisation holds at ``busy`` or more is reported apart.
- **Latency knee**: the first second from which response p99 (a 3 s rolling median of the
  per-second p99) stays above ``knee_factor`` (3) times its early level (the median over the
  first quarter of the measured seconds), or the achieved rate
  stays below 95% of the target by more than Poisson noise explains, or over half of the requests
  finished each second failed (a dead target is sent to on time, and answers nothing), for ``hold`` seconds.
- Whether the load generator kept up (its lateness, its cores, lost workers, client drops) is the
  trust verdict's (``analysis.trust``); ``run_analysis`` puts it beside these figures.
- **Sample sufficiency**: a percentile claim needs enough samples above it to mean anything.
  With n samples, the chance that none lands above the true q-quantile is q**n; MLPerf's early
  stopping asks for about 662 samples for a p99 claim, which is that chance at 0.13%. The same
  rule gives 6,643 for p99.9 (``sample_size.samples_needed``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from loadtest.analysis.sample_size import samples_needed
from loadtest.results.summary import Saturation

FAILING_SHARE = 0.5  # of the requests finished in a second: above it, the rate did not keep up, whatever was sent

THREAD_BUSY = 0.90  # share of the time the server's busiest thread runs or waits for a core
QUEUE_FACTOR = 3.0  # times the early level of the server's queue
QUEUE_FLOORS = {"server_queue_p50_ms": 5.0, "server_queue_rows": 1.0}  # timeline's Server-Timing; resources' /metrics
SERVER_SIGNALS = ("process cores", "busiest thread", "queue")  # in this order when two fire in the same second


def sufficiency(counts: dict[str, int], percentiles=(50.0, 90.0, 95.0, 99.0, 99.9)) -> list[dict]:
    """Per class: for each percentile, the samples it rests on, the samples it needs, and whether that suffices."""
    rows = []
    for cls, n in counts.items():
        for p in percentiles:
            needed = samples_needed(p)
            rows.append({"class": cls, "percentile": f"p{p:g}", "samples": n, "needed": needed, "enough": n >= needed})
    return rows


def _first_held(mask: pd.Series, seconds: pd.Series, hold: int) -> float | None:
    run = 0
    for value, second in zip(mask.tolist(), seconds.tolist(), strict=True):
        run = run + 1 if value else 0
        if run >= hold:
            return float(second) - (hold - 1)
    return None


def analyse(
    timeline: pd.DataFrame,
    resources: pd.DataFrame | None,
    warmup: float = 0.0,
    busy: float = 0.90,
    knee_factor: float = 3.0,
    hold: int = 2,
) -> Saturation:
    """Where the server saturated and where latency bent, with the lines to read.

    The generator's fields (peak, overloaded seconds, trustworthy) are the trust verdict's:
    ``run_analysis`` fills them in from ``analysis.trust``; here they say nothing is known against it.
    """
    server = _server_onsets(timeline, resources, warmup, busy, hold)
    knee_at, knee_reason = _knee(timeline, warmup, knee_factor, hold)
    lines = _server_lines(server, knee_at, knee_reason, busy)
    return Saturation(
        server.at,
        server.peak,
        server.gpu_at,
        knee_at,
        knee_reason,
        None,
        [],
        True,
        lines,
        server_saturation_signal=server.signal,
        server_signals=server.signals,
        server_thread_peak_busy=server.thread_peak,
    )


@dataclass(frozen=True)
class ServerOnset:
    """When and how the server saturated: each signal's first held second, and the peaks the lines quote."""

    signals: dict[str, float] = field(default_factory=dict)  # signal -> the second it fired
    peak: float | None = None  # the process's busiest second, share of its cores
    thread_peak: float | None = None  # the busiest thread's busiest second: share of it running or runnable
    gpu_at: float | None = None
    queue_source: str = ""  # what the queue signal read: "Server-Timing" or "/metrics"

    @property
    def at(self) -> float | None:
        return min(self.signals.values()) if self.signals else None

    @property
    def signal(self) -> str:
        """The signal that fired first; ties go to the order of ``SERVER_SIGNALS``."""
        fired = sorted(self.signals, key=lambda name: (self.signals[name], SERVER_SIGNALS.index(name)))
        return fired[0] if fired else ""


def _server_onsets(
    timeline: pd.DataFrame, resources: pd.DataFrame | None, warmup: float, busy: float, hold: int
) -> ServerOnset:
    """Each server signal's first held second, the process's and the busiest thread's peaks, a GPU's onset."""
    signals: dict[str, float | None] = {}
    peak = thread_peak = gpu_at = None
    r = resources.sort_values("second") if resources is not None and len(resources) else None
    if r is not None:
        peak, signals["process cores"] = _held(r, "server_cpu_util", busy, hold)
        thread = "server_thread_max_busy" if "server_thread_max_busy" in r.columns else "server_thread_max_util"
        thread_peak, signals["busiest thread"] = _held(r, thread, THREAD_BUSY, hold)
        gpu_columns = [c for c in r.columns if c.startswith("gpu") and c.endswith("_util_pct")]
        if gpu_columns:
            gpu_at = _first_held((r[gpu_columns] >= busy * 100).any(axis=1), r["second"].round(), hold)
    source, signals["queue"] = _queue_onset(timeline, r, warmup, hold)
    fired = {name: at for name, at in signals.items() if at is not None}
    return ServerOnset(fired, peak, thread_peak, gpu_at, source)


def _held(r: pd.DataFrame, column: str, limit: float, hold: int) -> tuple[float | None, float | None]:
    """A column's peak, and the first second from which it stayed at or above ``limit`` for ``hold`` seconds."""
    if column not in r.columns or not r[column].notna().any():
        return None, None
    return float(r[column].max()), _first_held(r[column] >= limit, r["second"].round(), hold)


def _queue_onset(
    timeline: pd.DataFrame, resources: pd.DataFrame | None, warmup: float, hold: int
) -> tuple[str, float | None]:
    """The first measured second from which the server's queue stayed above ``QUEUE_FACTOR`` times its early level.

    Server-Timing's queue time (the timeline's) when the server sends it, else its ``/metrics`` queue rows.
    """
    sources = (("Server-Timing", timeline, "server_queue_p50_ms"), ("/metrics", resources, "server_queue_rows"))
    for name, table, column in sources:
        if table is None or column not in table.columns or not table[column].notna().any():
            continue
        measured = table[table["second"] >= warmup].sort_values("second")
        if len(measured) < 4:
            return name, None
        values = measured[column].astype(float)
        early = values.iloc[: max(2, len(measured) // 4)].median()
        limit = max(QUEUE_FACTOR * early, QUEUE_FLOORS[column]) if pd.notna(early) else QUEUE_FLOORS[column]
        level = values.rolling(3, min_periods=1, center=True).median()
        return name, _first_held(level > limit, measured["second"].round(), hold)
    return "", None


def _knee(timeline: pd.DataFrame, warmup: float, knee_factor: float, hold: int) -> tuple[float | None, str]:
    """The first measured second from which p99 stayed high or the rate fell behind, and which of the two."""
    measured = timeline[timeline["second"] >= warmup].sort_values("second")
    knee_at, knee_reason = None, ""
    if len(measured) < 4:
        return knee_at, knee_reason
    # A 3 s rolling median: one slow batch in one second is not a knee.
    p99 = measured["response_p99_ms"].rolling(3, min_periods=1, center=True).median()
    early = measured["response_p99_ms"].iloc[: max(2, len(measured) // 4)].median()
    # Behind by more than 5% and by more than Poisson noise (3 standard deviations) could explain.
    shortfall = measured["target"] - measured["sent"]
    behind = (shortfall > 0.05 * measured["target"]) & (shortfall > 3 * measured["target"].clip(lower=1) ** 0.5)
    if pd.notna(early) and early > 0:
        knee_at = _first_held(p99 > knee_factor * early, measured["second"], hold)
        if knee_at is not None:
            knee_reason = f"response p99 above {knee_factor:g}x its early {early:.2f} ms"
    lagging = _first_held(behind, measured["second"], hold)
    if lagging is not None and (knee_at is None or lagging < knee_at):
        knee_at, knee_reason = lagging, "achieved rate below 95% of the target"
    # Sent on time is not kept up when the answers are failures: a dead target refuses at any rate.
    failing = _failing(measured)
    failed_at = _first_held(failing, measured["second"], hold) if failing is not None else None
    if failed_at is not None and (knee_at is None or failed_at < knee_at):
        knee_at, knee_reason = failed_at, f"over {FAILING_SHARE:.0%} of the requests finished failed (errors, timeouts)"
    return knee_at, knee_reason


def _failing(measured: pd.DataFrame) -> pd.Series | None:
    """Seconds in which most requests that finished failed; None for a timeline without the counts."""
    if not {"ok", "error", "timeout"} <= set(measured.columns):
        return None
    failed = measured["error"].fillna(0) + measured["timeout"].fillna(0)
    return failed > FAILING_SHARE * (failed + measured["ok"].fillna(0))


def _server_lines(server: ServerOnset, knee_at: float | None, knee_reason: str, busy: float) -> list[str]:
    """What a person reads about the server's saturation (naming the signal that fired) and the latency knee."""
    lines = []
    if server.at is not None:
        lines.append(_saturated_line(server, busy))
    elif server.peak is not None:
        thread = f"; busiest thread busy {server.thread_peak:.0%} of the time" if server.thread_peak is not None else ""
        lines.append(f"server CPU did not saturate (peak {server.peak:.0%} of its cores{thread})")
    if server.gpu_at is not None:
        lines.append(f"GPU saturated from second {server.gpu_at:g}")
    if knee_at is not None:
        where = f"latency knee at second {knee_at:g}: {knee_reason}"
        if server.at is not None:
            what = "server saturation" if server.signal == "queue" else "CPU saturation"
            where += f" ({knee_at - server.at:+g} s from {what})"
        lines.append(where)
    else:
        lines.append("no latency knee: p99 held and the rate kept up")
    return lines


def _saturated_line(server: ServerOnset, busy: float) -> str:
    """The saturation line: when, the signal that fired first and what it saw, then the others that fired."""
    at, signal = server.at, server.signal
    if signal == "process cores":
        line = f"server CPU saturated from second {at:g} (>= {busy:.0%} of its cores)"
    elif signal == "busiest thread":
        process = f"; its process peaked at {server.peak:.0%} of its cores" if server.peak is not None else ""
        thread = f"its busiest thread running or waiting for a core >= {THREAD_BUSY:.0%} of the time"
        line = f"server CPU saturated from second {at:g} ({thread}{process})"
    else:
        line = (
            f"server saturated from second {at:g} (its queue wait grew to over {QUEUE_FACTOR:g}x its early level, "
            f"read from {server.queue_source})"
        )
    others = [f"{name} from second {server.signals[name]:g}" for name in SERVER_SIGNALS if name in server.signals]
    others = [text for text in others if not text.startswith(signal)]
    return line + (f"; also {', '.join(others)}" if others else "")
