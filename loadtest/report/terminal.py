"""What a run prints at its end, from its summary alone: the latency table, the accounting, the verdict lines.

Class names and the scenario's name are the user's text: printed escaped (``rich.markup.escape``) or
without markup, never read as rich markup (a class named ``short[/]`` is a name, not a closing tag).
"""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from loadtest.analysis.fidelity import fidelity_lines
from loadtest.results.summary import ALL, CLEAN, MESSY, MESSY_PREFIX, Percentiles, ServerSplit, Summary
from loadtest.traffic.protocols import GRPC

ROWS = ("p50", "p90", "p99", "p99.9", "max")


def _ms(stats: Percentiles | None, key: str) -> str:
    value = None if stats is None else stats.get(key)
    return "-" if value is None else f"{value:.2f}"


def summary_table(summary: Summary) -> Table:
    table = Table(title=f"{escape(summary.name)}: latency in ms (HDR, 3 significant digits)", title_justify="left")
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
        row = [Text(cls), str(counts.ok), str(counts.errors), str(counts.timeouts), str(counts.dropped)]
        for metric in ("response", "service"):
            stats = summary.percentiles(metric, cls)
            row += [_ms(stats, key) for key in ROWS]
        table.add_row(*row, style="bold" if cls == ALL else None)
    return table


TOKEN_COLUMNS = (("ttft", "p50"), ("ttft", "p99"), ("itl", "p50"), ("itl", "p99"), ("tpot", "p50"), ("tpot", "p99"))
TOKEN_COLUMNS += (("e2e", "p50"), ("e2e", "p99"))


def token_figures(summary: Summary, cls: str) -> tuple[list[float | None], float | None]:
    """One class's ``TOKEN_COLUMNS`` (ms; None where the run has none) and its median output tokens a second."""
    figures = []
    for metric, key in TOKEN_COLUMNS:
        stats = summary.percentiles(metric, cls)
        figures.append(None if stats is None else stats.get(key))
    rates = (summary.generation or {}).get("output_tokens_per_s_per_request", {})
    return figures, rates.get(cls, {}).get("p50")


def token_table(summary: Summary) -> Table:
    """A generative run's table: time to first token, inter-token latency, time per output token, end to end."""
    title = f"{escape(summary.name)}: token latency in ms (HDR, 3 significant digits), output tokens/s a request"
    table = Table(title=title, title_justify="left")
    for name in ("class", "ok", "errors", "timeouts", "dropped"):
        table.add_column(name, justify="left" if name == "class" else "right")
    for metric, key in TOKEN_COLUMNS:
        table.add_column(f"{metric} {key}", justify="right")
    table.add_column("tok/s p50", justify="right")
    for cls in (ALL, *(c for c in summary.classes if not c.startswith(MESSY_PREFIX))):
        counts = summary.accounting.of(cls)
        row = [Text(cls), str(counts.ok), str(counts.errors), str(counts.timeouts), str(counts.dropped)]
        figures, rate = token_figures(summary, cls)
        row += ["-" if value is None else f"{value:.2f}" for value in figures]
        row.append("-" if rate is None else f"{rate:.1f}")
        table.add_row(*row, style="bold" if cls == ALL else None)
    return table


def token_lines(summary: Summary) -> list[str]:
    """Tokens served and how they were counted, streams that failed half-way, goodput."""
    g = summary.generation
    if g is None:
        return []
    out = summary.throughput.output_tokens_per_s
    inputs = g["input_tokens"]
    line = f"tokens: {g['output_tokens']:,} out ({out or 0:,.1f}/s)"
    line += f", {inputs:,} in ({summary.throughput.input_tokens_per_s or 0:,.1f}/s)" if inputs is not None else ""
    line += f"; counted by {g['token_counts']}"
    if g["asked_tokens"] and g["asked_tokens"] != g["output_tokens"]:
        line += f"; the completed answers asked for {g['asked_tokens']:,} (they stopped early, or ignore_eos is off)"
    lines = [line if g["streamed"] else line + "; not streamed: time to first token is the whole answer's"]
    failed = g["failed_streams"]
    if failed["streams"]:
        lines.append(
            f"failed streams: {failed['streams']:,}, which delivered {failed['output_tokens']:,} of the "
            f"{failed['asked_tokens']:,} tokens they asked for before they failed (not counted as served)"
        )
    goodput = g.get("goodput")
    if goodput is not None and goodput["share"] is not None:
        lines.append(
            f"goodput: {goodput['share']:.1%} of {goodput['judged']:,} requests met {' and '.join(goodput['slos'])} "
            f"({goodput['per_s']:,.2f}/s)"
        )
    return lines


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


def redirect_line(summary: Summary) -> str | None:
    """A line when the target answered with redirects: they are not followed, so each counts as an error.

    Following one would send load wherever the target points, past the loopback guard, and time two
    requests as one; the load generator records the 3xx instead (``engine.users``).
    """
    redirects = {k: v for k, v in summary.accounting.total.errors_by_kind.items() if _is_redirect(k)}
    if not redirects:
        return None
    counts = ", ".join(f"{k} {v}" for k, v in redirects.items())
    return (
        f"{sum(redirects.values())} answers were redirects ({counts}): redirects are not followed, so they "
        "count as errors; point the target at the URL they lead to"
    )


SERVER_NAMES = {"triton": "Triton", "mlserver": "MLServer", "kserve": "KServe", "reference": "the reference server"}


def split_origin(split: ServerSplit, protocol: str | None = None) -> str:
    """Where a split came from, for a person: the header (over gRPC, the trailing metadata), or which server's page."""
    if split.source == "server-timing":
        return "the server-timing trailing metadata" if protocol == GRPC else "the Server-Timing header"
    server = split.source.removeprefix("metrics:")
    return f"{SERVER_NAMES.get(server, server)}'s /metrics"


def _split_figures(split: ServerSplit) -> str:
    parts = [
        f"{name} {figures['mean']:.3f} ms"
        for name, figures in (("queue", split.queue_ms), ("compute", split.compute_ms))
        if figures is not None and figures.get("mean") is not None
    ]
    return f"{', '.join(parts) or 'no time'} mean over {split.requests:,} requests"


def server_split_line(summary: Summary) -> str | None:
    """Where the server's queue/compute split came from, at what resolution, and the scrape beside a header's."""
    split, protocol = summary.server_split, summary.target.get("protocol")
    if split is None:
        return None
    line = f"server split, {split.resolution}, from {split_origin(split, protocol)}: {_split_figures(split)}"
    if split.missing:
        line += f" ({split.missing})"
    check = split.cross_check
    if check is not None:
        line += f"; cross-check, {split_origin(check, protocol)} ({check.resolution}): {_split_figures(check)}"
    return line


def _is_redirect(kind: str) -> bool:
    return kind.startswith("http_3") or kind.startswith("wrong_http_3")


def print_summary(summary: Summary, console: Console) -> None:
    """The end table, the accounting, the saturation verdict and, for a replay, its fidelity."""
    console.print(summary_table(summary) if summary.generation is None else token_table(summary))
    console.print(accounting_line(summary), markup=False)
    for line in token_lines(summary):
        console.print(line, markup=False, highlight=False)
    redirects = redirect_line(summary)
    if redirects is not None:
        console.print(f"[yellow]{escape(redirects)}[/]", highlight=False)
    for line in summary.saturation.lines if summary.saturation is not None else []:
        shown = escape(line)
        console.print(f"[red bold]{shown}[/]" if line.startswith("RESULTS NOT") else shown, highlight=False)
    if summary.trust is not None and summary.trust.trustworthy:
        console.print("trustworthy: the load generator kept up", highlight=False)
    split = server_split_line(summary)
    if split is not None:
        console.print(split, highlight=False, markup=False)
    if summary.replay is not None:
        for line in fidelity_lines(summary.replay):
            console.print(line, highlight=False, markup=False)
