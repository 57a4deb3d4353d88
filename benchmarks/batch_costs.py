"""What a batch costs ONNX Runtime, by size and by how its rows' lengths are mixed, on the demo's texts.

A script, not a test: it prints rows per second of padding plus ``session.run`` (what the
inference thread does), pinned to core 0 with 1 intra-op thread, over the texts of
``scenarios/queries.toml`` (80% short queries, 20% sentences). Batches are cut in arrival order
(what a batcher gets at low load), and length-sorted (the best a deep queue allows). Each
configuration runs its batches once, twice over, and the two passes are averaged.

Run: ``.venv/bin/python benchmarks/batch_costs.py`` (about 1 min).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import psutil

from loadtest.commands.capacity import scenario_texts
from loadtest.config.scenario import load_scenario
from reference_server.config import default_models_dir
from reference_server.models import SessionSettings, load_model

SCENARIO = Path(__file__).resolve().parent.parent / "scenarios" / "queries.toml"


def rows_per_second(model, batches: list[list[np.ndarray]]) -> float:
    model.infer(batches[0])
    rates = []
    for _ in range(2):
        started, done = time.perf_counter(), 0
        for batch in batches:
            model.infer(batch)
            done += len(batch)
        rates.append(done / (time.perf_counter() - started))
    return float(np.mean(rates))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=512, help="rows per configuration")
    args = parser.parse_args()
    psutil.Process().cpu_affinity([0])
    texts = scenario_texts(load_scenario(SCENARIO))
    print(f"minilm, 1 intra-op thread on core 0, scenarios/queries.toml texts, {args.rows} rows per configuration")
    print("| variant | batch | arrival order, rows/s | length-sorted, rows/s | mean real / padded tokens, arrival |")
    print("|---|---|---|---|---|")
    for variant in ("fp32", "int8"):
        model = load_model(default_models_dir(), "minilm", variant, SessionSettings(intra_op_threads=1))
        rows = model.prepare_texts(texts).rows[: args.rows]
        ordered = sorted(rows, key=len)
        for size in (1, 2, 4, 8, 16, 32):
            arrival = [rows[i : i + size] for i in range(0, len(rows), size)]
            grouped = [ordered[i : i + size] for i in range(0, len(ordered), size)]
            real = sum(len(r) for r in rows)
            padded = sum(len(b) * max(len(r) for r in b) for b in arrival)
            print(
                f"| {variant} | {size} | {rows_per_second(model, arrival):.1f} | {rows_per_second(model, grouped):.1f} "
                f"| {real / padded:.2f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
