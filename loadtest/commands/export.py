"""``loadtest export``: a run's per-second tables as Parquet, for pandas, DuckDB, Spark or a notebook.

The tables are those of ``loadtest.read_results`` (``results.reader``): ``timeline.parquet``,
``resources.parquet`` (the sampler's readings on the timeline's whole seconds, so the two join on
``second``) and ``intervals.parquet`` (every interval log, one row per metric, second and class).
Each file is written whole (``results.files``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console

from loadtest.commands.options import results_dir
from loadtest.errors import ConfigError, ExitCode


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("export", help="write a run's per-second tables as Parquet files")
    parser.add_argument("results", type=Path, help="a run's results directory (holding summary.json)")
    formats = parser.add_mutually_exclusive_group(required=True)
    formats.add_argument(
        "--parquet",
        action="store_true",
        help="timeline.parquet, resources.parquet and intervals.parquet, joined on an integer `second`",
    )
    parser.add_argument("--out", type=results_dir, help="where to write them (default: the results directory itself)")
    parser.set_defaults(func=handle)


def handle(args: argparse.Namespace, console: Console) -> int:
    from loadtest.results.files import write_atomic
    from loadtest.results.reader import read_results

    results = read_results(args.results)
    tables = {"timeline": results.timeline, "resources": results.resources, "intervals": _intervals(results)}
    out = args.out or results.path
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, table in tables.items():
        if table is None:
            continue
        try:
            data = table.to_parquet(None, index=False)
        except ImportError:
            raise ConfigError("--parquet", None, "needs pyarrow: pip install pyarrow") from None
        write_atomic(out / f"{name}.parquet", data)
        written.append(f"{name}.parquet ({len(table)} rows)")
    console.print(f"wrote {', '.join(written)} in {out}", markup=False, highlight=False)
    return ExitCode.PASSED


def _intervals(results):
    """Every interval log of the run (``response.hlog``...) as one table, its first column the metric."""
    import pandas as pd

    parts = []
    for path in sorted(results.path.glob("*.hlog")):
        part = results.intervals(path.stem)
        part.insert(0, "metric", path.stem)
        parts.append(part)
    return pd.concat(parts, ignore_index=True) if parts else None
