"""What a comparison found, for people: a terminal table, Markdown and an HTML section."""

from __future__ import annotations

import html

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from loadtest.report.kit import html_table, md_table

NAMES = {
    "throughput_per_s": "throughput",
    "cpu_ms_per_request": "server CPU per request",
    "capacity_rps": "capacity",
}
VERDICT_STYLE = {"better": "green", "worse": "red"}


def _number(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    return f"{value:,.2f} {unit}" if abs(value) < 100 else f"{value:,.1f} {unit}"


def _signed(value: float | None, unit: str = "") -> str:
    if value is None:
        return "-"
    return (f"{value:+,.2f}" if abs(value) < 100 else f"{value:+,.1f}") + (f" {unit}" if unit else "")


def difference_rows(entry: dict) -> list[list[str]]:
    """One row per figure: A, B, B - A, its 95% interval, relative change and verdict."""
    rows = []
    for row in entry["rows"]:
        unit = row["unit"]
        note = "" if row.get("sufficient", True) else " (too few samples)"
        rows.append(
            [
                NAMES.get(row["metric"], row["metric"]),
                _number(row["a"], unit),
                _number(row["b"], unit),
                _signed(row["diff"], unit),
                f"[{_signed(row['ci_low'])}, {_signed(row['ci_high'])}]",
                "-" if row["relative"] is None else f"{row['relative']:+.1%}",
                row["verdict"] + note,
            ]
        )
    cap = entry.get("capacity")
    if cap:

        def bracket(low: float | None, high: float | None) -> str:
            return f"{'-' if low is None else f'{low:.1f}'} to {'-' if high is None else f'{high:.1f}'}"

        brackets = f"A {bracket(*cap['a_bracket'])}, B {bracket(*cap['b_bracket'])}"
        rows.append(
            [
                f"capacity at {cap['slo']}",
                _number(cap["a"], "req/s"),
                _number(cap["b"], "req/s"),
                _signed(cap["diff"], "req/s"),
                brackets,
                "-" if cap["relative"] is None else f"{cap['relative']:+.1%}",
                cap["verdict"],
            ]
        )
        for cls, found in sorted(cap.get("classes", {}).items()):
            a, b = found.get("a"), found.get("b")
            rows.append(
                [
                    f"capacity, all {cls!r}",
                    _number(a, "req/s"),
                    _number(b, "req/s"),
                    _signed(b - a if a is not None and b is not None else None, "req/s"),
                    "",
                    f"{(b - a) / a:+.1%}" if a and b is not None else "-",
                    "",
                ]
            )
    return rows


HEADER = ["figure", "A", "B", "B - A", "95% interval", "change", "verdict"]


def agreement_rows(agreement: dict) -> tuple[list[str], list[list[str]]]:
    """A against B at batch 1 and under load, and each variant's own batch-composition effect."""
    embedding, tokens = agreement["metric"] == "embedding", agreement["metric"] == "tokens"
    if tokens:
        first_n = agreement["batch1"]["first_n"]
        header = ["greedy answers compared", "identical", f"first {first_n} tokens", "diverged at (median, min)"]
        header.append("mean concurrency")
    elif embedding:
        header = ["outputs compared", "cosine mean", "cosine min", "cosine p1", "NN agreement", "mean batch"]
    else:
        header = ["outputs compared", "top-1 agreement", "disagreements", "max score diff", "mean batch"]
    a, b = agreement["a"], agreement["b"]

    def cells(found: dict) -> list[str]:
        if tokens:
            where = "-"
            if found["diverged"]:
                where = f"token {found['divergence_median']:g}, {found['divergence_min']}"
            return [f"{found['identical']:.1%}", f"{found['first_n_match']:.1%}", where]
        if embedding:
            nn = found.get("nn_agreement")
            return [
                f"{found['cosine_mean']:.4f}",
                f"{found['cosine_min']:.4f}",
                f"{found['cosine_p1']:.4f}",
                "-" if nn is None else f"{nn:.1%}",
            ]
        return [f"{found['top1_agreement']:.1%}", str(found["disagreements"]), f"{found['max_abs_diff']:.3g}"]

    def batch(*passes: dict) -> str:
        sizes = [p.get("mean_concurrency" if tokens else "mean_batch_size") for p in passes]
        return " / ".join("-" if s is None else f"{s:.1f}" for s in sizes)

    rows = [
        [f"{a['profile']} vs {b['profile']}, batch 1", *cells(agreement["batch1"]), batch(a["batch1"], b["batch1"])],
        [
            f"{a['profile']} vs {b['profile']}, under load",
            *cells(agreement["under_load"]),
            batch(a["under_load"], b["under_load"]),
        ],
        [f"{a['profile']}: batch 1 vs under load", *cells(a["batch_effect"]), batch(a["under_load"])],
        [f"{b['profile']}: batch 1 vs under load", *cells(b["batch_effect"]), batch(b["under_load"])],
    ]
    return header, rows


def print_comparison(data: dict, console: Console) -> None:
    for entry in data["comparisons"]:
        table = Table(
            title=escape(
                f"A = {entry['a']}, B = {entry['b']} ({data['scenario']['name']}, "
                f"{data['load']['rounds']} interleaved rounds each)"
            )
        )
        for name in HEADER:
            table.add_column(name, justify="left" if name in ("figure", "verdict", "95% interval") else "right")
        for row in difference_rows(entry):
            verdict = row[-1].split(" (")[0]
            style = VERDICT_STYLE.get(verdict)
            table.add_row(*map(Text, row[:-1]), Text(row[-1], style=style or ""))  # names are the user's text
        console.print(table)
        if "agreement" in entry:
            header, rows = agreement_rows(entry["agreement"])
            table = Table(title=f"output agreement on {entry['agreement']['n']} inputs")
            for i, name in enumerate(header):
                table.add_column(name, justify="left" if i == 0 else "right")
            for row in rows:
                table.add_row(*map(Text, row))
            console.print(table)


def _intro(data: dict, entry: dict) -> str:
    return (
        f"A = {entry['a']} (baseline), B = {entry['b']}: scenario {data['scenario']['name']} "
        f"(seed {data['scenario']['seed']}), the same schedule and payloads for both, "
        f"{data['load']['rounds']} interleaved rounds each. Intervals: stratified whole-second bootstrap, 95%."
    )


def compare_markdown(data: dict) -> str:
    parts = ["# Comparison", ""]
    for entry in data["comparisons"]:
        parts += [_intro(data, entry), "", md_table(HEADER, difference_rows(entry)), ""]
        if "agreement" in entry:
            header, rows = agreement_rows(entry["agreement"])
            parts += [f"Output agreement on {entry['agreement']['n']} inputs:", "", md_table(header, rows), ""]
    return "\n".join(parts)


def compare_section_html(data: dict) -> str:
    parts = ["<h2>Comparison</h2>"]
    for entry in data["comparisons"]:
        parts += [f"<p>{html.escape(_intro(data, entry))}</p>", html_table(HEADER, difference_rows(entry))]
        if "agreement" in entry:
            header, rows = agreement_rows(entry["agreement"])
            parts += [
                f"<h3>Output agreement on {entry['agreement']['n']} inputs</h3>",
                "<p>The same inputs to each variant, one at a time (batch 1) and all at once (batched as load "
                "batches them). Dynamic int8 quantisation scales activations per batch, so its answers move "
                "with what they are batched with.</p>",
                html_table(header, rows),
            ]
    return "\n".join(parts)
