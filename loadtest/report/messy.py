"""What a person reads about a run's messy traffic: one line, a table per kind, clean with and without.

Pure: everything comes from the summary's ``messy`` section (and, for a paired run, its
``without``), so the terminal, ``report.md`` and ``report.html`` say the same thing.
"""

from __future__ import annotations

from rich.table import Table
from rich.text import Text

from loadtest.results.summary import CLEAN, Summary

PERCENTILES = ("p50", "p90", "p99", "p99.9")
KIND_HEADER = ["kind", "category", "expected", "sent", "correct", "wrong", "defect", "answers"]
CLEAN_HEADER = ["clean traffic", "with messy", "without", "change"]


def messy_lines(summary: Summary) -> list[str]:
    messy = summary.messy
    if not messy:
        return []
    kinds = messy.get("kinds", {})
    lines = [
        f"messy traffic: {messy.get('share', 0):.1%} of arrivals, {len(kinds)} kinds, {messy['requests']} requests: "
        f"{messy['correct']} correct, {messy['wrong']} wrong, {messy['defects']} defects"
    ]
    bad = [f"{k} ({_answers(v)})" for k, v in kinds.items() if v["defect"] or v["wrong"]]
    if bad:
        lines.append("not as expected: " + ", ".join(bad))
    clean = clean_rows(summary)
    if clean:
        p99 = next(r for r in clean if r[0] == "p99")
        lines.append(f"clean p99 with messy traffic {p99[1]}, without {p99[2]} ({p99[3]})")
    return lines


def _answers(entry: dict) -> str:
    return ", ".join(f"{answer} x{n}" for answer, n in sorted(entry["answers"].items()))


def kind_rows(summary: Summary) -> list[list[str]]:
    rows = []
    for kind, v in (summary.messy or {}).get("kinds", {}).items():
        rows.append(
            [
                kind,
                v["category"],
                v["expect"] or "?",
                v["scheduled"],
                v["correct"],
                v["wrong"],
                v["defect"],
                _answers(v),
            ]
        )
    return [[str(c) for c in row] for row in rows]


def clean_rows(summary: Summary) -> list[list[str]]:
    """Clean-class response percentiles with the messy share (this run) and without it (the paired run)."""
    messy = summary.messy or {}
    without = (messy.get("without") or {}).get("latency_ms")
    with_ = summary.percentiles("response", CLEAN)
    if not without or not with_ or not with_.count:
        return []
    rows = []
    for p in PERCENTILES:
        a, b = with_.get(p), without.get(p)
        if a is None or b is None:
            continue
        change = f"{(a - b) / b:+.1%}" if b else "-"
        rows.append([p, f"{a:.2f} ms", f"{b:.2f} ms", change])
    return rows


def messy_tables(summary: Summary) -> dict[str, tuple[list[str], list[list[str]]]]:
    tables = {}
    rows = kind_rows(summary)
    if rows:
        tables["Messy traffic, by kind"] = (KIND_HEADER, rows)
    clean = clean_rows(summary)
    if clean:
        tables["Clean traffic with and without the messy share"] = (CLEAN_HEADER, clean)
    return tables


def rich_tables(summary: Summary) -> list[Table]:
    out = []
    for title, (header, rows) in messy_tables(summary).items():
        table = Table(title=title, title_justify="left")  # cells as Text: a kind's or class's name is not markup
        for i, name in enumerate(header):
            table.add_column(name, justify="left" if i in (0, 1, 2) or name == "answers" else "right")
        for row in rows:
            style = "red" if len(row) == len(KIND_HEADER) and (row[5] != "0" or row[6] != "0") else None
            table.add_row(*map(Text, row), style=style)
        out.append(table)
    return out
