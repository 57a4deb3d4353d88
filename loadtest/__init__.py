"""Load testing and performance profiling for ML model endpoints."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

# The Python API, imported on first use: `import loadtest` (and so `loadtest --help`) stays free of pandas.
# Each public name -> the module that defines it.
_LAZY = {
    "read_results": "loadtest.results.reader",
    "Results": "loadtest.results.reader",
    "run": "loadtest.api",
    "capacity": "loadtest.api",
    "compare": "loadtest.api",
    "Interrupted": "loadtest.api",
    "read_capacity_result": "loadtest.results.studies",
    "CapacityResult": "loadtest.results.studies",
    "read_comparison": "loadtest.results.studies",
    "ComparisonResult": "loadtest.results.studies",
    "LoadTestError": "loadtest.errors",
    "ConfigError": "loadtest.errors",
    "ExitCode": "loadtest.errors",
}

__all__ = [  # a literal list, so linters and editors see the names the lazy imports below provide
    "run",
    "capacity",
    "compare",
    "Interrupted",
    "read_results",
    "Results",
    "read_capacity_result",
    "CapacityResult",
    "read_comparison",
    "ComparisonResult",
    "LoadTestError",
    "ConfigError",
    "ExitCode",
    "__version__",
]

if TYPE_CHECKING:
    from loadtest.api import Interrupted, capacity, compare, run
    from loadtest.errors import ConfigError, ExitCode, LoadTestError
    from loadtest.results.reader import Results, read_results
    from loadtest.results.studies import CapacityResult, ComparisonResult, read_capacity_result, read_comparison


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'loadtest' has no attribute {name!r}")
