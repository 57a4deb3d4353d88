"""What a capacity search found, for people: terminal lines and the throughput–latency curve."""

from __future__ import annotations


def _rate(value: float | None) -> str:
    return "none" if value is None else f"{value:.1f} req/s"


def capacity_lines(data: dict) -> list[str]:
    """The headline of a capacity.json: capacity, knee and the most expensive class's capacity."""
    slo = data["slo"]
    who = (data.get("profile") or {}).get("name") or data.get("target", "")
    lines = [
        f"capacity of {who} under {slo['text']} (errors <= {slo['max_error_rate']:.1%}): "
        f"{_rate(data.get('capacity_rps'))}"
        + (f", first failing {data['lowest_failing_rps']:.1f} req/s" if data.get("lowest_failing_rps") else "")
        + f" ({len(data.get('steps', []))} steps; {data.get('stopped', '')})"
    ]
    raw = data.get("raw_ort_rps")
    if raw and data.get("capacity_rps"):
        lines.append(
            f"that is {data['capacity_rps'] / raw:.0%} of what ONNX Runtime alone completes on these texts "
            f"({raw:.1f} rows/s, batches of 32, no server)"
        )
    if data.get("knee_rps"):
        lines.append(f"knee of the throughput-latency curve: {data['knee_rps']:.1f} req/s")
    cls = data.get("most_expensive_class")
    if cls and cls in data.get("classes", {}):
        found = data["classes"][cls]
        lines.append(f"with all traffic of the most expensive class {cls!r}: {_rate(found.get('capacity_rps'))}")
    elif cls:
        lines.append(f"most expensive class: {cls!r} (its capacity was not searched)")
    return lines
