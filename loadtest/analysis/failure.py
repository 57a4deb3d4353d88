"""Whether the run itself failed: the target stopped answering, requests failed in transit, or a worker was lost.

A failed run measured nothing worth gating: its latencies are those of the few requests that still
got through, and a gate that passes on them would be a lie. So ``loadtest`` exits with
``ExitCode.RUN_FAILED`` and one line saying what happened. The rules, first match wins:

- **target stopped answering**: from some second to the end of the run nothing was answered (no
  success, no HTTP status at all) while requests kept going out for ``HOLD_S`` (2) seconds or more,
  and requests failed at the transport level in that stretch (refused, reset, closed: the target is
  gone). The second named is the first one without an answer. A target that answers 500 to
  everything is answering, and one that only times out may be overloaded (a queue longer than the
  timeout times out every request while the server works flat out): both are the gates' business
  (``error_rate``, a failing capacity step), not a failed run.
- **transport errors**: more than ``TRANSPORT_SHARE`` (10%) of the measured requests sent failed
  at the transport level: connection refused, reset or closed, or a reply that was not HTTP. Timeouts
  are not counted here: an overloaded server times out, and that is a finding (a failing capacity
  step, a failed gate), not a broken run; a target that only times out is caught by the rule above.
- **lost worker**: a load-generator worker went missing mid-run (Locust's heartbeat), so its share
  of the schedule was not sent (``lost_worker`` in the accounting).

Pure logic over the timeline (a pandas DataFrame of ``timeline.csv``) and the measured summary.
"""

from __future__ import annotations

import pandas as pd

from loadtest.results.summary import Failure, Summary, transport_error

TRANSPORT_SHARE = 0.10  # of the measured requests sent
HOLD_S = 2  # seconds of sending without a single answer before a target counts as stopped

TIMELINE = {"second", "sent", "ok", "error", "transport"}  # a results directory from before ``transport``: no verdict


def judge(timeline: pd.DataFrame | None, summary: Summary) -> Failure | None:
    """The first rule that holds, as the one line the run command prints; None for a run that did not fail."""
    return _stopped(timeline, summary) or _transport(timeline, summary) or _lost_worker(summary)


def stopped_at(timeline: pd.DataFrame | None) -> float | None:
    """The first second of a silence that lasted to the end of the run: nothing answered, connections failing."""
    if timeline is None or not len(timeline) or not set(timeline.columns) >= TIMELINE:
        return None
    t = timeline.sort_values("second").fillna({"ok": 0, "error": 0, "transport": 0, "sent": 0})
    answered = t["ok"] + t["error"] - t["transport"]  # successes, and errors with an HTTP status
    last = t["second"][answered > 0].max()
    silent = t if pd.isna(last) else t[t["second"] > last]
    if int((silent["sent"] > 0).sum()) < HOLD_S or silent["transport"].sum() <= 0:
        return None
    return float(silent["second"].iloc[0])


def _stopped(timeline: pd.DataFrame | None, summary: Summary) -> Failure | None:
    at = stopped_at(timeline)
    if at is None:
        return None
    total = summary.accounting.total
    sent = total.scheduled - total.dropped - total.lost_worker
    what = _kinds(summary)
    line = f"the target stopped answering at second {at:g}: {total.ok} of {sent} measured requests sent succeeded"
    return Failure("target_stopped", at, line + (f" ({what})" if what else ""))


def _transport(timeline: pd.DataFrame | None, summary: Summary) -> Failure | None:
    total = summary.accounting.total
    sent = total.scheduled - total.dropped - total.lost_worker
    failed = total.transport_errors
    if sent <= 0 or failed <= TRANSPORT_SHARE * sent:
        return None
    at = None
    if timeline is not None and "transport" in timeline.columns:
        seconds = timeline.loc[timeline["transport"].fillna(0) > 0, "second"]
        at = float(seconds.min()) if len(seconds) else None
    where = f" from second {at:g}" if at is not None else ""
    line = (
        f"{failed / sent:.0%} of the measured requests failed at the transport level{where} ({_kinds(summary)}); "
        f"a run may lose at most {TRANSPORT_SHARE:.0%}"
    )
    return Failure("transport_errors", at, line)


def _lost_worker(summary: Summary) -> Failure | None:
    lost = summary.run.lost_workers
    if not lost:
        return None
    first = min(lost, key=lambda w: w.get("at_s") or 0.0)
    at = first.get("at_s")
    when = f" at second {at:g}" if at is not None else ""
    arrivals = first.get("arrivals")
    unsent = f": {arrivals} arrivals not sent" if arrivals is not None and summary.load.get("model") != "closed" else ""
    more = f" (and {len(lost) - 1} more)" if len(lost) > 1 else ""
    line = f"load-generator worker {first.get('worker')} of {first.get('of')} was lost{when}{unsent}{more}"
    return Failure("lost_worker", at, line)


def _kinds(summary: Summary) -> str:
    """``connection 195, timeouts 3``: the transport-level failures by kind, for the line."""
    total = summary.accounting.total
    parts = [f"{kind} {n}" for kind, n in total.errors_by_kind.items() if n and transport_error(kind)]
    if total.timeouts:
        parts.append(f"timeouts {total.timeouts}")
    return ", ".join(parts)
