"""The gates a run is asked to check, as the user gave them; ``gates.verdict.prepare`` parses and checks them.

Plain data, so the command line, the engine's run options and a replay can carry them without
loading the gates themselves.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, kw_only=True)
class GateOptions:
    thresholds: tuple[str, ...] = ()  # from --threshold, added to the scenario's [slo] thresholds
    baseline: Path | None = None  # an earlier results directory to compare with
    max_regression: tuple[str, ...] = ()  # e.g. "p99=+10%"
    junit: Path | None = None  # where to write the verdict as JUnit XML
    strict: bool = False  # a run that is not trustworthy fails with its own exit code (4)
