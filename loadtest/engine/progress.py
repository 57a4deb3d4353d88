"""Show a run's progress while Locust works: a live line on a terminal, a line every 5 s in CI."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

from rich.console import Console
from rich.live import Live
from rich.text import Text

from loadtest.units import format_duration


def read_progress(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def describe(p: dict, model: str) -> Text:
    remaining = max(0.0, p["total"] - p["elapsed"])
    unit = "req/s" if model == "open" else "users"
    phase = " (warm-up)" if p.get("warming_up") else ""
    latency = f"p50 {p['p50_ms']:.1f} ms  p99 {p['p99_ms']:.1f} ms" if p.get("p99_ms") is not None else "p50 -  p99 -"
    text = Text()
    text.append(f"{format_duration(p['elapsed'])} elapsed, {format_duration(remaining)} left{phase}  ", style="bold")
    text.append(f"target {p['target']:g} {unit}  sent {p['sent_last_second']}/s  ")
    text.append(latency + "  ", style="cyan")
    text.append(f"ok {p['ok']}  ")
    text.append(
        f"errors {p['errors']}  timeouts {p['timeouts']}  dropped {p['dropped']}",
        style="red" if p["errors"] or p["timeouts"] or p["dropped"] else "",
    )
    text.append(f"  in flight {p['in_flight']}")
    return text


def follow(process, path: Path, model: str, console: Console) -> None:
    """Render progress until ``process`` exits."""
    if console.is_terminal:
        with Live(Text("starting Locust..."), console=console, refresh_per_second=4, transient=False) as live:
            while not _exited(process, 0.25):
                if (p := read_progress(path)) is not None:
                    live.update(describe(p, model))
        return
    last = 0.0
    while not _exited(process, 0.25):
        if time.monotonic() - last >= 5 and (p := read_progress(path)) is not None:
            console.print(describe(p, model), soft_wrap=True)
            last = time.monotonic()


def _exited(process, seconds: float) -> bool:
    """Wait up to ``seconds`` for ``process`` to exit: the run's end is seen at once, not at the next poll."""
    try:
        process.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        return False
    return True
