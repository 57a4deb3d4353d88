"""Whether a run's latencies are the server's, or partly the load generator's own: the trust verdict.

Latency is measured from the intended send time, so a generator that falls behind its schedule
puts its own delay into every figure, and a gate on them blames the server for it. A run is not
trustworthy when any of these rules holds; each names the seconds it covers:

- **lateness**: the generator's own sending delay is a material share of what it reports. Over
  the measured run, send lateness p99 is above 2 ms, and response p99 (from the intended send)
  exceeds service p99 (from the actual send) by over 2 ms and over 10% of response p99: that
  part of the reported tail is the generator's, not the server's. Below 2 ms it is gevent's timer
  resolution and one scheduling slice; a few late sends that do not move the tail are not held
  against the run, nor is a p99 that rests on fewer than 5 late sends (in a 100-request run one
  hiccup is the p99). The seconds listed are those that break the same bounds on their own figures.
- **generator busy**: the generator's processes used over 85% of the cores they may run on, so
  they queue behind themselves.
- **starved cores**: in a measured second, every core the generator may run on was starved: over
  95% busy with anything, or over 20% of it stolen by the hypervisor (steal time). Each core is
  judged on its own figures, never on an average: a generator pinned to one hogged core is
  starved even when its neighbour idles (the average says 50%), while a generator free to move
  to an idle core is not (the scheduler moves it there).
- **lost worker**: a Locust worker went missing; its share of the schedule was not sent.
- **client drops**: arrivals were dropped by the generator's in-flight cap (``max_in_flight``),
  rather than refused by the server: the server never saw that load.

Pure logic over the timeline and resources tables (pandas DataFrames) and a few summary figures.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from loadtest.results.summary import Trust, TrustReason

LATENESS_SHARE = 0.10  # of response p99
LATENESS_FLOOR_MS = 2.0
MIN_LATE_SENDS = 5  # sends later than the floor, for lateness to be more than one hiccup
GENERATOR_LIMIT = 0.85  # share of the generator's cores its processes may use
CORE_BUSY_LIMIT = 95.0  # per cent busy, any one of the generator's cores
CORE_STEAL_LIMIT = 20.0  # per cent stolen by the hypervisor, any one of the generator's cores

RULES = (
    f"lateness p99 over {LATENESS_FLOOR_MS:g} ms (at least {MIN_LATE_SENDS} sends that late) "
    f"with response p99 over service p99 by over {LATENESS_FLOOR_MS:g} ms and {LATENESS_SHARE:.0%}; "
    f"generator over {GENERATOR_LIMIT:.0%} of its cores; every generator core over {CORE_BUSY_LIMIT:.0f}% busy "
    f"or {CORE_STEAL_LIMIT:.0f}% stolen; a lost worker; arrivals dropped by the client"
)


@dataclass(frozen=True)
class Evidence:
    """The whole-run figures the rules read besides the two tables."""

    warmup_s: float = 0.0
    duration_s: float | None = None  # measured seconds after the warm-up; None: to the end of the tables
    lateness_p99_ms: float | None = None
    late_sends: int | None = None  # measured sends later than LATENESS_FLOOR_MS; None: not known
    service_p99_ms: float | None = None
    response_p99_ms: float | None = None
    dropped: int = 0
    lost_workers: Sequence[Mapping[str, Any]] = field(default_factory=tuple)
    generator_cores: Sequence[int] | None = None


def judge(timeline: pd.DataFrame | None, resources: pd.DataFrame | None, evidence: Evidence) -> Trust:
    """Every rule over the measured seconds; trustworthy when none holds."""
    measured = _measured(timeline, evidence.warmup_s, evidence.duration_s)
    reasons = [
        _lateness(measured, evidence),
        *_generator(resources, evidence),
        _lost_workers(evidence),
        _client_drops(measured, evidence),
    ]
    found = tuple(r for r in reasons if r is not None)
    return Trust(not found, found, RULES)


def _measured(table: pd.DataFrame | None, warmup: float, duration: float | None = None) -> pd.DataFrame | None:
    """The rows of the measured seconds: not the warm-up, and not the drain and shutdown after the run's end
    (processes exiting then are not the generator falling behind)."""
    if table is None or not len(table):
        return None
    kept = table["second"] >= warmup
    if duration:
        kept &= table["second"] <= warmup + duration
    return table[kept].sort_values("second")


def _known(value) -> bool:
    return value is not None and not pd.isna(value)


def _material(lateness_ms, response_ms, service_ms) -> bool:
    """Late by over 2 ms, and the tail the generator added (response over service p99) over 2 ms and 10%."""
    if not _known(lateness_ms) or lateness_ms <= LATENESS_FLOOR_MS:
        return False
    if not _known(response_ms):
        return True
    added = response_ms - service_ms if _known(service_ms) else lateness_ms
    return added > LATENESS_FLOOR_MS and added > LATENESS_SHARE * response_ms


def _lateness(measured: pd.DataFrame | None, evidence: Evidence) -> TrustReason | None:
    e = evidence
    if e.late_sends is not None and e.late_sends < MIN_LATE_SENDS:
        return None
    if not _material(e.lateness_p99_ms, e.response_p99_ms, e.service_p99_ms):
        return None
    seconds: list[float] = []
    if measured is not None and {"lateness_p99_ms", "service_p99_ms"} <= set(measured.columns):
        columns = [
            pd.to_numeric(measured[c], errors="coerce")
            for c in ("lateness_p99_ms", "response_p99_ms", "service_p99_ms")
        ]
        rows = zip(measured["second"], *columns, strict=True)
        seconds = [float(second) for second, late, resp, serv in rows if _material(late, resp, serv)]
    late = "" if e.late_sends is None else f" ({e.late_sends} sends over {LATENESS_FLOOR_MS:g} ms late)"
    tail = ""
    if _known(e.response_p99_ms) and _known(e.service_p99_ms):
        added = e.response_p99_ms - e.service_p99_ms
        tail = (
            f"; response p99 {e.response_p99_ms:.1f} ms is {added:.1f} ms ({added / e.response_p99_ms:.0%}) "
            f"above service p99 {e.service_p99_ms:.1f} ms"
        )
    return TrustReason(
        "lateness",
        f"the load generator sent late: lateness p99 {e.lateness_p99_ms:.1f} ms{late}{tail}; "
        "its own delay is in the latencies",
        tuple(seconds),
    )


def generator_peak(resources: pd.DataFrame | None, warmup: float, duration: float | None = None) -> float | None:
    """The generator's busiest measured second, as a share of its cores."""
    measured = _measured(resources, warmup, duration)
    if measured is None or "generator_cpu_util" not in measured.columns:
        return None
    peak = measured["generator_cpu_util"].max()
    return None if pd.isna(peak) else float(peak)


def _generator(resources: pd.DataFrame | None, evidence: Evidence) -> list[TrustReason | None]:
    """Generator busy, and starved cores (busy or stolen), from the sampler's rows of the measured seconds."""
    measured = _measured(resources, evidence.warmup_s, evidence.duration_s)
    if measured is None:
        return []
    seconds = measured["second"].round()
    busy = None
    if "generator_cpu_util" in measured.columns and measured["generator_cpu_util"].notna().any():
        over = measured["generator_cpu_util"] > GENERATOR_LIMIT
        if over.any():
            busy = TrustReason(
                "generator_busy",
                f"the load generator used over {GENERATOR_LIMIT:.0%} of its cores "
                f"(its peak: {measured['generator_cpu_util'].max():.0%}); it queued behind itself",
                tuple(float(s) for s in seconds[over]),
            )
    return [busy, _starved(measured, seconds, evidence.generator_cores or [])]


def _starved(measured: pd.DataFrame, seconds: pd.Series, cores: Sequence[int]) -> TrustReason | None:
    """The seconds in which each of the generator's cores was over its busy or steal limit."""
    why: dict[int, pd.Series] = {}
    for core in cores:
        busy, steal = measured.get(f"core{core}_busy_pct"), measured.get(f"core{core}_steal_pct")
        if busy is None:
            return None  # not sampled: nothing is known against the generator
        text = pd.Series("", index=measured.index)
        why[core] = text.mask(busy > CORE_BUSY_LIMIT, f"over {CORE_BUSY_LIMIT:.0f}% busy")
        if steal is not None:
            why[core] = why[core].mask(steal > CORE_STEAL_LIMIT, f"over {CORE_STEAL_LIMIT:.0f}% stolen")
    if not why:
        return None
    every = pd.concat([w != "" for w in why.values()], axis=1).all(axis=1)
    if not every.any():
        return None
    what = sorted({f"core {core} {text}" for core, w in why.items() for text in w[every]})
    return TrustReason(
        "starved_core",
        f"the load generator's cores were starved ({'; '.join(what)})",
        tuple(float(s) for s in seconds[every]),
    )


def _lost_workers(evidence: Evidence) -> TrustReason | None:
    if not evidence.lost_workers:
        return None
    lost = evidence.lost_workers
    unsent = sum(int(w.get("arrivals", 0)) for w in lost)
    at = tuple(float(w["at_s"]) for w in lost if w.get("at_s") is not None)
    return TrustReason(
        "lost_worker",
        f"{len(lost)} load-generator worker(s) lost; {unsent} arrivals of their share not sent",
        at,
    )


def _client_drops(measured: pd.DataFrame | None, evidence: Evidence) -> TrustReason | None:
    if evidence.dropped <= 0:
        return None
    seconds: tuple[float, ...] = ()
    if measured is not None and "dropped" in measured.columns:
        seconds = tuple(float(s) for s in measured.loc[measured["dropped"] > 0, "second"])
    return TrustReason(
        "client_drops",
        f"{evidence.dropped} arrivals dropped by the load generator's in-flight cap, never sent to the server",
        seconds,
    )
