"""How faithfully a replay kept the capture's timing: intended against achieved sends, per second.

Pure: the intended sends per second come from the scan of the capture (``replay.json``), the
achieved ones from the run's timeline (``sent``, counted by the second each request actually
left), lateness from the summary. A second within ``tolerance`` of its intended count kept the
capture's rate; the share of such seconds and the worst second say how far to trust a replay.
"""

from __future__ import annotations

TOLERANCE = 0.02


def per_second(intended: list[int], sent: dict[int, int]) -> list[dict]:
    """One row per second that had intended sends: intended, sent, and the relative deviation."""
    rows = []
    for second, want in enumerate(intended):
        if want <= 0:
            continue
        got = int(sent.get(second, 0))
        rows.append({"second": second, "intended": int(want), "sent": got, "deviation": (got - want) / want})
    return rows


def fidelity(intended: list[int], sent: dict[int, int], lateness: dict | None, tolerance: float = TOLERANCE) -> dict:
    rows = per_second(intended, sent)
    within = [r for r in rows if abs(r["deviation"]) <= tolerance]
    worst = max(rows, key=lambda r: abs(r["deviation"]), default=None)
    lateness = lateness or {}
    return {
        "tolerance": tolerance,
        "seconds": len(rows),
        "seconds_within": len(within),
        "share_within": round(len(within) / len(rows), 4) if rows else None,
        "max_deviation": round(worst["deviation"], 4) if worst else None,
        "max_deviation_second": worst["second"] if worst else None,
        "intended_total": sum(r["intended"] for r in rows),
        "sent_total": sum(r["sent"] for r in rows),
        "lateness_ms": {k: lateness.get(k) for k in ("p50", "p99", "p99.9", "max") if k in lateness},
    }


def fidelity_lines(replay: dict) -> list[str]:
    """What a person reads first about a replay: its fidelity and what was skipped."""
    f = replay.get("fidelity") or {}
    lines = []
    if f.get("seconds"):
        lines.append(
            f"replay fidelity: {f['seconds_within']} of {f['seconds']} seconds within "
            f"{f['tolerance']:.0%} of the captured rate (x{replay.get('speed', 1):g}); worst second "
            f"{f['max_deviation_second']}: {f['max_deviation']:+.1%}"
        )
    late = f.get("lateness_ms") or {}
    if late:
        lines.append(
            "send lateness: " + ", ".join(f"{k} {v:.2f} ms" for k, v in late.items() if isinstance(v, int | float))
        )
    skipped = replay.get("skipped", {})
    if skipped:
        lines.append("skipped: " + ", ".join(f"{v['count']} {k.replace('_', ' ')}" for k, v in sorted(skipped.items())))
    return lines
