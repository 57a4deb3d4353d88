"""What a capacity search and a comparison wrote, typed: ``CapacityResult`` and ``ComparisonResult``.

``capacity.json`` and ``compare.json`` are nested dictionaries, made to be written once and read by
the cost, the reports and the next tool. A notebook wants the headline figures as attributes and the
many rows (search steps, compared metrics) as DataFrames; these types give both, and keep the whole
document in ``data`` for anything else. The Python API (``loadtest.api``) returns them, and reads
an earlier study's directory with the same functions.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from loadtest.errors import ConfigError
from loadtest.results.capacity_file import read_capacity
from loadtest.results.files import read_json

if TYPE_CHECKING:
    import pandas as pd

COMPARE_SCHEMA = "loadtest.compare/1"  # what ``commands.compare`` writes; defined here, where results are read
COMPARE_JSON = "compare.json"


@dataclass(frozen=True, eq=False)
class CapacityResult:
    """A capacity search: the highest rate within the SLO, its bracket, every step, and the most expensive class."""

    path: Path  # the study's directory: capacity.json, and each step's results under steps/
    slo: str  # e.g. "p99 < 100ms"
    capacity_rps: float | None  # the highest passing rate (the median search's); None: not even the lowest passed
    lowest_failing_rps: float | None  # the bracket's top: the lowest rate that failed
    knee_rps: float | None  # where p99 began to climb steeply, if it did
    stopped: str  # why the search stopped, in words
    rule: str  # what "capacity" meant for this search, in words
    raw_ort_rps: float | None  # ONNX Runtime alone on the same texts (embedded server only): the ceiling
    most_expensive_class: str | None
    class_capacity_rps: Mapping[str, float | None]  # the capacity with all traffic of that class
    steps: pd.DataFrame  # one row per step: target_rps, p50_ms, p99_ms, passed, reasons, out_dir, search...
    data: Mapping[str, Any]  # the whole capacity.json


@dataclass(frozen=True, eq=False)
class ComparisonResult:
    """Profiles on identical traffic: every figure of each against the baseline, with its 95% interval and verdict."""

    path: Path  # the study's directory: compare.json, compare.md, and each round's results under rounds/
    scenario: str
    baseline: str  # the first profile's name
    profiles: tuple[str, ...]
    rounds: Mapping[str, tuple[Path, ...]]  # each profile's round directories, in the order they ran
    differences: pd.DataFrame  # one row per (profile, metric) against the baseline: value, diff, ci_low, verdict...
    data: Mapping[str, Any]  # the whole compare.json (output agreement, capacities compared)


def read_capacity_result(path: Path | str) -> CapacityResult:
    """A capacity directory (or its ``capacity.json``) as a ``CapacityResult``; ConfigError when it is not one."""
    import pandas as pd

    path = Path(path)
    data = read_capacity(path)
    classes = data.get("classes") or {}
    return CapacityResult(
        path=path if path.is_dir() else path.parent,
        slo=_slo_text(data.get("slo") or {}),
        capacity_rps=data.get("capacity_rps"),
        lowest_failing_rps=data.get("lowest_failing_rps"),
        knee_rps=data.get("knee_rps"),
        stopped=data.get("stopped", ""),
        rule=data.get("rule", ""),
        raw_ort_rps=data.get("raw_ort_rps"),
        most_expensive_class=data.get("most_expensive_class"),
        class_capacity_rps={cls: found.get("capacity_rps") for cls, found in classes.items()},
        steps=pd.DataFrame(data.get("steps", [])),
        data=data,
    )


def _slo_text(slo: Mapping[str, Any]) -> str:
    """The SLO as the search printed it; a file without the text (written by hand) gets it from its figures."""
    if slo.get("text"):
        return slo["text"]
    if slo.get("percentile") is not None and slo.get("budget_ms") is not None:
        return f"p{slo['percentile']:g} < {slo['budget_ms']:g}ms"
    return ""


def read_comparison(path: Path | str) -> ComparisonResult:
    """A comparison directory (or its ``compare.json``) as a ``ComparisonResult``; ConfigError when it is not one."""
    import pandas as pd

    path = Path(path)
    file = path / COMPARE_JSON if path.is_dir() else path
    if not file.exists():
        raise ConfigError(str(path), None, "not a comparison directory: it has no compare.json")
    data = read_json(file)
    if not isinstance(data, dict) or data.get("schema") != COMPARE_SCHEMA:
        found = data.get("schema") if isinstance(data, dict) else None
        raise ConfigError(
            str(file), "schema", f"expected {COMPARE_SCHEMA!r} (the output of a comparison), got {found!r}"
        )
    directory = file.parent
    rows = [
        {"profile": entry["b"], "baseline_profile": entry["a"], **_row(row)}
        for entry in data.get("comparisons", [])
        for row in entry.get("rows", [])
    ]
    return ComparisonResult(
        path=directory,
        scenario=data["scenario"]["name"],
        baseline=data["baseline"],
        profiles=tuple(p["name"] for p in data["profiles"]),
        rounds={name: tuple(directory / d for d in dirs) for name, dirs in data.get("rounds", {}).items()},
        differences=pd.DataFrame(rows),
        data=data,
    )


def _row(row: Mapping[str, Any]) -> dict[str, Any]:
    """A compared figure with plain column names: ``a`` and ``b`` are the baseline's value and the profile's."""
    named = {"a": "baseline", "b": "value", "n_a": "n_baseline", "n_b": "n"}
    return {named.get(key, key): value for key, value in row.items()}
