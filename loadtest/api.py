"""The Python API: ``run``, ``capacity`` and ``compare`` as functions, for notebooks and scripts.

Each does what its command does (``loadtest run``, ``capacity``, ``compare``), through the same
code, and returns what the command writes, typed: ``Results`` for a run's directory,
``CapacityResult`` for ``capacity.json``, ``ComparisonResult`` for ``compare.json``. Arguments are
the command's options as keywords and take the same values, as text or as numbers (``rate="20/s"``
or ``rate=20``, ``duration="30s"`` or ``duration=30``); they are checked by the same checkers, so a
bad one is a ``ConfigError`` with the command line's message, raised before anything starts.

Library code never exits: where the command would exit with a code, these raise (``LoadTestError``
and its subclasses, each with its ``exit_code``) or return a result that says so (a run's failed
gates are ``results.gates``, a run that failed is ``results.summary.failure``). Progress is printed
as the command prints it; ``quiet=True`` prints nothing. An interrupt (Ctrl-C, or a notebook's
"interrupt the kernel") stops a run as Ctrl-C stops the command: Locust writes what it measured,
every child process ends, and ``Interrupted`` (a ``KeyboardInterrupt``) is raised with the
results of what was measured, so a loop of runs stops too.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from rich.console import Console

from loadtest.commands import options as checks
from loadtest.config.gate_options import GateOptions
from loadtest.errors import ConfigError
from loadtest.gates.thresholds import GateError, parse_regression, parse_threshold

# The engine, the results readers and pandas are imported when a function is called: ``import loadtest`` loads none.
if TYPE_CHECKING:
    from loadtest.analysis.search import Slo
    from loadtest.results.reader import Results
    from loadtest.results.studies import CapacityResult, ComparisonResult

__all__ = ["Interrupted", "capacity", "compare", "run"]

PathLike = str | os.PathLike
T = TypeVar("T")


class Interrupted(KeyboardInterrupt):
    """A run stopped by Ctrl-C or a notebook's interrupt; what it measured is written, and is ``results``.

    A ``KeyboardInterrupt``, as the command exits 130: a cell or a loop of runs stops here, and
    ``except loadtest.Interrupted as stop: stop.results`` keeps what was measured.
    """

    def __init__(self, results: Results) -> None:
        super().__init__(f"interrupted: {results.path} holds what was measured until then")
        self.results = results


def run(
    scenario: PathLike,
    *,
    target: str | None = None,
    profile: str | None = None,
    rate: str | float | None = None,
    users: int | None = None,
    duration: str | float | None = None,
    processes: int = 1,
    out: PathLike | None = None,
    thresholds: str | Iterable[str] = (),
    baseline: PathLike | None = None,
    max_regression: str | Iterable[str] = (),
    junit: PathLike | None = None,
    strict: bool = False,
    messy: str | float | None = None,
    report: bool = True,
    allow_remote: bool = False,
    quiet: bool = False,
) -> Results:
    """Run a scenario against ``target`` (default: the embedded reference server for ``profile``), as ``loadtest run``.

    ``rate`` (open load) or ``users`` (closed load) replaces the scenario's shape; ``thresholds``
    ("p99 < 250ms"), ``baseline`` and ``max_regression`` are its gates, judged into ``results.gates``.
    Returns the run's directory, read back (``loadtest.read_results``).
    """
    from loadtest.commands.run import run as run_command
    from loadtest.engine.runner import RunOptions
    from loadtest.results.reader import read_results

    if rate is not None and users is not None:
        raise ConfigError("run", None, "give rate= (open load) or users= (closed load), not both")
    regressions = _texts("max_regression", max_regression, parse_regression)
    if regressions and baseline is None:
        raise ConfigError("max_regression", None, "needs baseline=, the run to compare with")
    options = RunOptions(
        scenario=_path("scenario", scenario),
        target=_text("target", target),
        profile=_text("profile", profile),
        rate=_checked("rate", checks.rate, rate),
        users=_checked("users", checks.count, users),
        duration=_checked("duration", checks.positive_duration, duration),
        processes=_checked("processes", checks.count, processes),
        out=_checked("out", checks.results_dir, out),
        allow_remote=allow_remote,
        gates=GateOptions(
            thresholds=_texts("thresholds", thresholds, parse_threshold),
            baseline=_path("baseline", baseline) if baseline is not None else None,
            max_regression=regressions,
            junit=_checked("junit", checks.output_file, junit),
            strict=strict,
        ),
        messy_share=_checked("messy", checks.share, messy),
        report=report,
    )
    outcome = run_command(options, _console(quiet))
    results = read_results(outcome.out_dir)
    if outcome.interrupted:
        raise Interrupted(results)
    return results


def capacity(
    scenario: PathLike,
    *,
    profile: str | None = None,
    target: str | None = None,
    slo: str = "p99<100ms",
    max_error: str | float = 0.01,
    start: str | float | None = None,
    resolution: str | float = 0.05,
    class_resolution: str | float | None = None,
    min_step: str | float = 5.0,
    max_step: str | float = 120.0,
    max_steps: int = 16,
    confirm: int = 2,
    repeat: int = 1,
    max_idle_wait: str | float = 30.0,
    per_class: bool = True,
    out: PathLike | None = None,
    quiet: bool = False,
) -> CapacityResult:
    """Find the highest rate ``profile`` (or ``target``) carries within ``slo``, as ``loadtest capacity``.

    Minutes, not seconds: every step is a full run started from an idle server. Returns ``capacity.json``
    typed (``CapacityResult``); each step's results are under ``result.path / "steps"``.
    """
    from loadtest.commands.capacity import find_capacity
    from loadtest.commands.searcher import CapacityOptions
    from loadtest.report.capacity import capacity_lines
    from loadtest.results.studies import read_capacity_result

    options = CapacityOptions(
        scenario=_path("scenario", scenario),
        slo=_slo(slo, _checked("max_error", checks.fraction, max_error)),
        profile=_text("profile", profile),
        target=_text("target", target),
        start_rps=_checked("start", checks.rate, start),
        resolution=_checked("resolution", checks.fraction, resolution),
        class_resolution=_checked("class_resolution", checks.fraction, class_resolution),
        min_step_s=_checked("min_step", checks.positive_duration, min_step),
        max_step_s=_checked("max_step", checks.positive_duration, max_step),
        max_steps=_checked("max_steps", checks.count, max_steps),
        confirm=_checked("confirm", checks.count, confirm),
        repeat=_checked("repeat", checks.count, repeat),
        max_idle_wait_s=_checked("max_idle_wait", checks.duration, max_idle_wait),
        per_class=per_class,
        out=_checked("out", checks.results_dir, out),
    )
    console = _console(quiet)
    out_dir, data = find_capacity(options, console)
    for line in capacity_lines(data):
        console.print(line, highlight=False, markup=False)
    console.print(f"results: {out_dir}", markup=False)
    return read_capacity_result(out_dir)


def compare(
    scenario: PathLike,
    *profiles: str,
    rounds: int = 3,
    rate: str | float | None = None,
    duration: str | float | None = None,
    agreement: int = 256,
    capacity: Iterable[PathLike] = (),
    out: PathLike | None = None,
    quiet: bool = False,
) -> ComparisonResult:
    """The same traffic against two or more ``profiles``, the first the baseline, as ``loadtest compare``.

    ``rounds`` interleaved runs each, every figure with its 95% interval; ``agreement`` inputs for output
    agreement (0 skips it); ``capacity``: one capacity directory per profile, to compare capacities too.
    Returns ``compare.json`` typed (``ComparisonResult``).
    """
    from loadtest.commands.compare import CompareOptions
    from loadtest.commands.compare import compare as compare_command
    from loadtest.report.compare import print_comparison
    from loadtest.results.studies import read_comparison

    if len(profiles) < 2:
        raise ConfigError("compare", None, "needs two profiles or more: the first is the baseline")
    if isinstance(capacity, str | os.PathLike):
        raise ConfigError("capacity", None, "give one capacity directory per profile, as a list")
    options = CompareOptions(
        scenario=_path("scenario", scenario),
        profiles=tuple(_text("profiles", p) for p in profiles),
        rounds=_checked("rounds", checks.count, rounds),
        rate=_checked("rate", checks.rate, rate),
        duration=_checked("duration", checks.positive_duration, duration),
        agreement_n=_checked("agreement", checks.count_or_zero, agreement),
        capacity=tuple(_path("capacity", c) for c in capacity),
        out=_checked("out", checks.results_dir, out),
    )
    console = _console(quiet)
    out_dir, data = compare_command(options, console)
    print_comparison(data, console)
    console.print(f"results: {out_dir}", markup=False)
    return read_comparison(out_dir)


# -- checking the arguments -------------------------------------------------------------------------


def _checked(name: str, check: Callable[[str], T], value: Any) -> T | None:
    """``value`` read by the command line's checker for the same option; ConfigError naming the keyword.

    A number is read as its text, so ``rate=20`` and ``rate="20"`` are one value, and a NaN, a negative
    or a ``True`` get the command line's message.
    """
    if value is None:
        return None
    try:
        return check(value if isinstance(value, str) else str(value))
    except argparse.ArgumentTypeError as exc:
        raise ConfigError(name, None, str(exc)) from None


def _path(name: str, value: Any) -> Path:
    if not isinstance(value, str | os.PathLike) or not str(value).strip():
        raise ConfigError(name, None, f"expected a path, got {value!r}")
    return Path(value)


def _text(name: str, value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, os.PathLike):  # a profile may be given as the path of its TOML
        value = os.fspath(value)
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(name, None, f"expected a non-empty string, got {value!r}")
    return value


def _texts(name: str, value: str | Iterable[str], parse: Callable[[str], Any]) -> tuple[str, ...]:
    """Gates as given: one string or several, each parsed now, so a typo is one line before the run."""
    texts = (value,) if isinstance(value, str) else tuple(value)
    for text in texts:
        if not isinstance(text, str):
            raise ConfigError(name, None, f"expected a string like 'p99 < 250ms', got {text!r}")
        try:
            parse(text)
        except GateError as exc:
            raise ConfigError(name, None, str(exc)) from None
    return texts


def _slo(text: Any, max_error: float) -> Slo:
    from loadtest.analysis.search import parse_slo

    if not isinstance(text, str):
        raise ConfigError("slo", None, f"expected a string like 'p99<100ms', got {text!r}")
    try:
        return parse_slo(text, max_error)
    except GateError as exc:  # its message names the command line's --slo
        raise ConfigError("slo", None, str(exc).removeprefix("--slo: ").removeprefix("--slo ")) from None


def _console(quiet: bool) -> Console:
    """Where progress goes: stderr as for the command (a notebook shows it under the cell), or nowhere."""
    if quiet:
        return Console(quiet=True)
    console = Console(stderr=True)
    return console if console.is_terminal else Console(stderr=True, width=140)
