"""Where a run saturated, whether its numbers can be trusted, and whether each percentile has enough samples.

Pure analysis over two per-second tables of a results directory: the latency timeline
(``timeline.csv``) and the resource samples (``resources.csv``), as pandas DataFrames.

- **Server saturation**: the first second from which the server's CPU stays at or above
  ``busy`` (90%) of the cores it may use, or a GPU's utilisation does, for ``hold`` seconds.
- **Latency knee**: the first second from which response p99 (a 3 s rolling median of the
  per-second p99) stays above ``knee_factor`` (3) times its early level (the median over the
  first quarter of the measured seconds), or the achieved rate
  stays below 95% of the target by more than Poisson noise explains, for ``hold`` seconds.
- Whether the load generator kept up (its lateness, its cores, lost workers, client drops) is the
  trust verdict's (``analysis.trust``); ``run_analysis`` puts it beside these figures.
- **Sample sufficiency**: a percentile claim needs enough samples above it to mean anything.
  With n samples, the chance that none lands above the true q-quantile is q**n; MLPerf's early
  stopping asks for about 662 samples for a p99 claim, which is that chance at 0.13%. The same
  rule gives 6,643 for p99.9 (``sample_size.samples_needed``).
"""

from __future__ import annotations

import pandas as pd

from loadtest.analysis.sample_size import samples_needed
from loadtest.results.summary import Saturation


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
    server_at = gpu_at = server_peak = None
    if resources is not None and len(resources):
        r = resources.sort_values("second")
        server_at, server_peak, gpu_at = _server_onsets(r, busy, hold)
    knee_at, knee_reason = _knee(timeline, warmup, knee_factor, hold)
    lines = _server_lines(server_at, server_peak, gpu_at, knee_at, knee_reason, busy)
    return Saturation(server_at, server_peak, gpu_at, knee_at, knee_reason, None, [], True, lines)


def _server_onsets(r: pd.DataFrame, busy: float, hold: int) -> tuple[float | None, float | None, float | None]:
    """The second the server's CPU saturated, its peak share of its cores, and the second a GPU saturated."""
    seconds = r["second"].round()
    server_at = server_peak = gpu_at = None
    if r["server_cpu_util"].notna().any():
        server_peak = float(r["server_cpu_util"].max())
        server_at = _first_held(r["server_cpu_util"] >= busy, seconds, hold)
    gpu_columns = [c for c in r.columns if c.startswith("gpu") and c.endswith("_util_pct")]
    if gpu_columns:
        gpu_at = _first_held((r[gpu_columns] >= busy * 100).any(axis=1), seconds, hold)
    return server_at, server_peak, gpu_at


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
    return knee_at, knee_reason


def _server_lines(
    server_at: float | None,
    server_peak: float | None,
    gpu_at: float | None,
    knee_at: float | None,
    knee_reason: str,
    busy: float,
) -> list[str]:
    """What a person reads about the server's saturation and the latency knee."""
    lines = []
    if server_at is not None:
        lines.append(f"server CPU saturated from second {server_at:g} (>= {busy:.0%} of its cores)")
    elif server_peak is not None:
        lines.append(f"server CPU did not saturate (peak {server_peak:.0%} of its cores)")
    if gpu_at is not None:
        lines.append(f"GPU saturated from second {gpu_at:g}")
    if knee_at is not None:
        where = f"latency knee at second {knee_at:g}: {knee_reason}"
        if server_at is not None:
            where += f" ({knee_at - server_at:+g} s from CPU saturation)"
        lines.append(where)
    else:
        lines.append("no latency knee: p99 held and the rate kept up")
    return lines
