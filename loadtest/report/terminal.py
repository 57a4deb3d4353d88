"""What a run prints at its end, from its summary alone: the latency table, the accounting, the verdict lines."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from loadtest.analysis.fidelity import fidelity_lines
from loadtest.results.summary import ALL, CLEAN, MESSY, MESSY_PREFIX, Percentiles, Summary

ROWS = ("p50", "p90", "p99", "p99.9", "max")


def _ms(stats: Percentiles | None, key: str) -> str:
    value = None if stats is None else stats.get(key)
    return "-" if value is None else f"{value:.2f}"


def summary_table(summary: Summary) -> Table:
    table = Table(title=f"{summary.name}: latency in ms (HDR, 3 significant digits)", title_justify="left")
    table.add_column("class")
    table.add_column("ok", justify="right")
    table.add_column("errors", justify="right")
    table.add_column("timeouts", justify="right")
    table.add_column("dropped", justify="right")
    for metric in ("response", "service"):
        for key in ROWS:
            table.add_column(f"{metric[:4]} {key}", justify="right")
    classes = [cls for cls in summary.classes if not cls.startswith(MESSY_PREFIX)]
    if len(classes) < len(summary.classes):  # messy kinds have a table of their own: here, clean and messy
        classes += [CLEAN, MESSY]
    for cls in (ALL, *classes):
        counts = summary.accounting.of(cls)
        row = [cls, str(counts.ok), str(counts.errors), str(counts.timeouts), str(counts.dropped)]
        for metric in ("response", "service"):
            stats = summary.percentiles(metric, cls)
            row += [_ms(stats, key) for key in ROWS]
        table.add_row(*row, style="bold" if cls == ALL else None)
    return table


def accounting_line(summary: Summary) -> str:
    a = summary.accounting.total
    line = f"scheduled {a.scheduled} = ok {a.ok} + errors {a.errors} + timeouts {a.timeouts} + dropped {a.dropped}"
    if a.lost_worker:
        line += f" + lost_worker {a.lost_worker} (a load-generator worker was lost)"
    if a.unfinished:
        line += f" + unfinished {a.unfinished} (the run was cut short)"
    if a.errors_by_kind:
        line += "; errors: " + ", ".join(f"{k} {v}" for k, v in a.errors_by_kind.items())
    return line


def print_summary(summary: Summary, console: Console) -> None:
    """The end table, the accounting, the saturation verdict and, for a replay, its fidelity."""
    console.print(summary_table(summary))
    console.print(accounting_line(summary))
    for line in summary.saturation.lines if summary.saturation is not None else []:
        console.print(f"[red bold]{line}[/]" if line.startswith("RESULTS NOT") else line, highlight=False)
    if summary.trust is not None and summary.trust.trustworthy:
        console.print("trustworthy: the load generator kept up", highlight=False)
    if summary.replay is not None:
        for line in fidelity_lines(summary.replay):
            console.print(line, highlight=False)
