"""Where each request's time goes in the reference server, on the demo's traffic, at 50%, 80% and 100% of capacity.

A script, not a test. Set-up, on this 2-core machine: the server alone on core 0 (1 intra-op
thread), ``loadtest run scenarios/queries.toml`` at a constant open-loop rate on core 1. For each
rate it reads three sources over the same run:

- the server's ``/metrics``: queue wait per request, ONNX Runtime time per batch, rows per batch,
  and padding (real over padded tokens, per batch);
- the server's threads' CPU time (``/proc`` through psutil): the inference thread runs padding and
  ``session.run``; the event loop runs everything else (HTTP, parsing, tokenising, encoding);
- the same core, in this process: tokenising one request's text and encoding one answer, timed
  alone over the scenario's texts, so the event loop's share can be split into them and the rest
  (HTTP, routing, the queue's hand-offs, metrics).

Run: ``.venv/bin/python benchmarks/server_breakdown.py --variant fp32 --capacity 190`` (about 1 min);
``--capacity`` is the rate ``loadtest capacity`` found under the SLO, and 100% of it is about where
the server's core saturates.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil
from server_runs import DRIVER_CORE, SCENARIO, SERVER_CORE, run_against

from loadtest.commands.capacity import scenario_texts
from loadtest.config.scenario import load_scenario
from reference_server.ceiling import ort_ceiling_rps
from reference_server.config import default_models_dir
from reference_server.launch import running_server
from reference_server.models import SessionSettings, load_model
from reference_server.protocol import encode_infer_response, parse_infer_request


def per_request_costs(variant: str, texts: list[str]) -> tuple[float, float]:
    """Milliseconds to tokenise one request and to encode one answer, on the server's core."""
    me = psutil.Process()
    before = me.cpu_affinity()
    me.cpu_affinity([SERVER_CORE])
    try:
        model = load_model(default_models_dir(), "minilm", variant, SessionSettings(intra_op_threads=1))
        bodies = [
            json.dumps({"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": [t]}]}).encode()
            for t in texts[:500]
        ]
        requests = [parse_infer_request(b, None, 1024) for b in bodies]
        started = time.thread_time()
        for request in requests:
            model.prepare(request.inputs)
        tokenise = (time.thread_time() - started) / len(requests) * 1000
        answer = {"embedding": np.random.default_rng(0).random((1, 384), dtype=np.float32)}
        started = time.thread_time()
        for request in requests:
            encode_infer_response("minilm", variant, request, answer)
        encode = (time.thread_time() - started) / len(requests) * 1000
        return tokenise, encode
    finally:
        me.cpu_affinity(before)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", default="fp32", choices=["fp32", "int8"])
    parser.add_argument("--capacity", type=float, default=190.0, help="req/s under the SLO, from loadtest capacity")
    parser.add_argument("--levels", default="50,80,100", help="percentages of --capacity")
    parser.add_argument("--seconds", type=float, default=8.0, help="measured seconds per level")
    args = parser.parse_args()
    if psutil.cpu_count() < 2:
        raise SystemExit("needs 2 cores: one for the server, one for the load generator")
    texts = scenario_texts(load_scenario(SCENARIO))
    tokenise_ms, encode_ms = per_request_costs(args.variant, texts)
    ceiling = ort_ceiling_rps("minilm", args.variant, texts, cpus=(SERVER_CORE,))
    print(
        f"minilm {args.variant}, 1 intra-op thread; server on core {SERVER_CORE}, loadtest on core {DRIVER_CORE}; "
        f"scenarios/queries.toml, open load, {args.seconds:g}s a level after 1s warm-up"
    )
    print(
        f"ceiling (ONNX Runtime alone, as loadtest capacity prints it): {ceiling} rows/s, {1000 / ceiling:.2f} ms a row"
    )
    print(
        f"alone on the server's core: tokenising a request {tokenise_ms:.3f} ms, encoding its answer {encode_ms:.3f} ms"
    )
    header = (
        "| load | achieved req/s | p50 / p95 / p99 ms | queue ms a request | rows a batch | real / padded tokens "
        "| ORT ms a batch | ORT CPU ms a row | event loop CPU ms a request: tokenise + encode + HTTP and the rest "
        "| server core busy |"
    )
    rows = []
    server_args = ["--model", "minilm", "--variant", args.variant, "--threads", "1", "--cpus", str(SERVER_CORE)]
    with running_server(server_args) as server, tempfile.TemporaryDirectory() as work:
        for level in (float(x) for x in args.levels.split(",")):
            rate = args.capacity * level / 100
            run = run_against(server.url, server.pid, rate, args.seconds, Path(work) / f"run-{level:g}")
            d, summary = run.metrics, run.summary
            requests = d["inference_request_duration_seconds_count"]
            batches = d["inference_batch_size_count"]
            rows_done = d["inference_batch_size_sum"]
            latency = summary["latency_ms"]["response"]["all"]
            loop_ms = run.loop_cpu_s / requests * 1000
            rest = loop_ms - tokenise_ms - encode_ms
            busy = (run.inference_cpu_s + run.loop_cpu_s) / (args.seconds + 1)
            rows.append(
                f"| {level:g}% ({rate:.0f} req/s) | {summary['throughput']['ok_per_s']:.1f} "
                f"| {latency['p50']:.1f} / {latency['p95']:.1f} / {latency['p99']:.1f} "
                f"| {d['inference_queue_wait_seconds_sum'] / requests * 1000:.1f} | {rows_done / batches:.1f} "
                f"| {d['inference_padding_efficiency_ratio_sum'] / batches:.2f} "
                f"| {d['inference_compute_seconds_sum'] / batches * 1000:.1f} "
                f"| {run.inference_cpu_s / rows_done * 1000:.2f} "
                f"| {loop_ms:.2f} = {tokenise_ms:.2f} + {encode_ms:.2f} + {rest:.2f} | {busy:.0%} |"
            )
            print(rows[-1], flush=True)
    print()
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    print("\n".join(rows))


if __name__ == "__main__":
    main()
