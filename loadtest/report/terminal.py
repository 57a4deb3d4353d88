"""The end-of-run table, printed from ``summary.json`` alone."""

from __future__ import annotations

from rich.table import Table

ROWS = ("p50", "p90", "p99", "p99.9", "max")


def _ms(stats: dict, key: str) -> str:
    value = stats.get(key)
    return "-" if value is None else f"{value:.2f}"


def summary_table(summary: dict) -> Table:
    latency = summary["latency_ms"]
    accounting = summary["accounting"]
    table = Table(
        title=f"{summary['scenario']['name']}: latency in ms (HDR, 3 significant digits)", title_justify="left"
    )
    table.add_column("class")
    table.add_column("ok", justify="right")
    table.add_column("errors", justify="right")
    table.add_column("timeouts", justify="right")
    table.add_column("dropped", justify="right")
    for metric in ("response", "service"):
        for key in ROWS:
            table.add_column(f"{metric[:4]} {key}", justify="right")
    classes = [cls for cls in summary["classes"] if not cls.startswith("messy:")]
    if len(classes) < len(summary["classes"]):  # messy kinds have a table of their own: here, clean and messy
        classes += ["clean", "messy"]
    for cls in ("all", *classes):
        counts = accounting if cls == "all" else accounting["by_class"][cls]
        row = [cls, str(counts["ok"]), str(counts["errors"]), str(counts["timeouts"]), str(counts["dropped"])]
        for metric in ("response", "service"):
            stats = latency.get(metric, {}).get(cls, {})
            row += [_ms(stats, key) for key in ROWS]
        table.add_row(*row, style="bold" if cls == "all" else None)
    return table


def accounting_line(summary: dict) -> str:
    a = summary["accounting"]
    line = (
        f"scheduled {a['scheduled']} = ok {a['ok']} + errors {a['errors']} + timeouts {a['timeouts']} "
        f"+ dropped {a['dropped']}"
    )
    if a["unfinished"]:
        line += f" + unfinished {a['unfinished']} (the run was cut short)"
    if a["errors_by_kind"]:
        line += "; errors: " + ", ".join(f"{k} {v}" for k, v in a["errors_by_kind"].items())
    return line
