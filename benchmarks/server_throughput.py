"""Server throughput against raw ONNX Runtime, for fp32 and int8, batching on and off.

A script, not a test: it prints ratios measured in one run, on one machine, so they can be read
side by side. Set-up, on this 2-core machine:

- core 0: the server (``--cpus 0``, 1 intra-op thread), or the raw ORT loop (same core, same threads);
- core 1: the load generator, a closed loop of gevent greenlets on geventhttpclient, one text per
  request (online serving), keeping ``--concurrency`` requests in flight: 256 by default, so the
  queue is deeper than a batch, as it is whenever a server is saturated.

The ceiling is the one ``loadtest capacity`` prints (``reference_server/ceiling.py``): the better of
length-sorted batches of 32 and batch 1, over every length of the workload. The ``demo`` workload is
``make demo``'s traffic, the texts of ``scenarios/queries.toml``.

Raw ORT is padding plus ``session.run`` on batches of 32 rows in arrival order, drawn from the
same texts; tokenisation is left out of it, so the server (which tokenises on its event loop) is
held to the harder bar. The server's overhead is measured like for like, both in arrival order
(``--no-length-grouping``); what length grouping adds is reported on its own, and it is part of
"batching on". Run: ``.venv/bin/python benchmarks/server_throughput.py`` (about 5 minutes).

``--threads 2`` gives the server (and raw ORT) both cores and 2 intra-op threads; the load generator
then shares core 1 with one of them, so those figures understate the server a little. It exists
because batching pays most where a batch of one cannot keep several threads busy.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil

from loadtest.commands.capacity import scenario_texts
from loadtest.config.scenario import load_scenario
from reference_server.ceiling import ort_ceiling_rps
from reference_server.config import default_models_dir
from reference_server.launch import running_server
from reference_server.models import SessionSettings, load_model

SERVER_CORE, DRIVER_CORE = 0, 1
SUBJECTS = ["the invoice", "my account", "the delivery", "a refund", "the new phone", "our api key", "the report"]
VERBS = ["was charged twice for", "cannot find", "wants to cancel", "asks about", "needs help with", "did not receive"]
TAILS = ["yesterday", "after the update", "since last week", "on the mobile app", "again", "this morning"]


QUERY_WORDS = [
    "refund",
    "password reset",
    "invoice",
    "shipping delay",
    "api key",
    "cancel order",
    "2fa",
    "export csv",
    "pricing",
    "login error",
    "dark mode",
    "delete account",
]


def search_queries(n: int, seed: int = 1) -> list[str]:
    """Search-box queries of 3 to 11 tokens (mean 6.6, with [CLS]/[SEP]): the shortest class of traffic."""
    rng = np.random.default_rng(seed)
    return [
        " ".join(QUERY_WORDS[i] for i in rng.choice(len(QUERY_WORDS), rng.integers(1, 4), replace=False))
        for _ in range(n)
    ]


def sentences(n: int, seed: int = 2) -> list[str]:
    """Support-desk sentences of 9 to 17 tokens (mean 12.5)."""
    rng = np.random.default_rng(seed)
    pick = lambda words: words[rng.integers(len(words))]  # noqa: E731
    return [f"customer {rng.integers(100, 999)} {pick(VERBS)} {pick(SUBJECTS)} {pick(TAILS)}" for _ in range(n)]


def mixed_lengths(n: int, seed: int = 3) -> list[str]:
    """Sentences, with one in four a paragraph of four of them (up to 52 tokens; mean 20)."""
    rng = np.random.default_rng(seed)
    base = sentences(n + 4, seed)
    return [" ".join(base[i : i + 4]) if rng.random() < 0.25 else base[i] for i in range(n)]


def demo_texts() -> list[str]:
    """The texts of ``make demo``'s traffic (``scenarios/queries.toml``): 80% short queries, 20% sentences."""
    return scenario_texts(load_scenario(Path(__file__).resolve().parent.parent / "scenarios" / "queries.toml"))


def server_cores(threads: int) -> list[int]:
    """The server's cores: its own core at 1 thread; from 2 threads on, it shares the driver's core too."""
    return list(range(threads)) if threads > 1 else [SERVER_CORE]


def raw_ort(models_dir: Path, variant: str, sentences: list[str], batch: int, seconds: float, threads: int) -> float:
    """Rows per second of padding + session.run alone, pinned to the server's core."""
    me = psutil.Process()
    before = me.cpu_affinity()
    me.cpu_affinity(server_cores(threads))
    try:
        model = load_model(models_dir, "minilm", variant, SessionSettings(intra_op_threads=threads))
        rows = model.prepare_texts(sentences).rows
        rng = np.random.default_rng(0)
        batches = [[rows[i] for i in rng.integers(len(rows), size=batch)] for _ in range(64)]
        model.infer(batches[0])
        done, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds:
            model.infer(batches[done // batch % len(batches)])
            done += batch
        return done / (time.perf_counter() - started)
    finally:
        me.cpu_affinity(before)


def drive(url: str, sentences: list[str], concurrency: int, warmup: float, seconds: float) -> dict:
    """Closed-loop load on the driver's core; returns completed requests per second after warm-up."""
    driver = subprocess.run(
        [
            sys.executable,
            __file__,
            "--drive",
            url,
            "--concurrency",
            str(concurrency),
            "--warmup",
            str(warmup),
            "--seconds",
            str(seconds),
        ],
        input=json.dumps(sentences),
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(driver.stdout)


def _drive_main(args: argparse.Namespace) -> None:
    psutil.Process().cpu_affinity([DRIVER_CORE])
    import gevent
    import orjson
    from geventhttpclient import HTTPClient
    from geventhttpclient.url import URL

    bodies = [
        orjson.dumps({"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": [s]}]})
        for s in json.loads(sys.stdin.read())
    ]
    client = HTTPClient.from_url(URL(args.drive), concurrency=args.concurrency, network_timeout=120)
    counts = {"ok": 0, "errors": 0}
    window = {"start": time.perf_counter() + args.warmup}
    window["end"] = window["start"] + args.seconds

    def worker(index: int) -> None:
        k = index
        while time.perf_counter() < window["end"]:
            response = client.post(
                "/v2/models/minilm/infer", bodies[k % len(bodies)], headers={"content-type": "application/json"}
            )
            response.read()
            finished = time.perf_counter()
            if window["start"] <= finished <= window["end"]:
                counts["ok" if response.status_code == 200 else "errors"] += 1
            k += args.concurrency

    gevent.joinall([gevent.spawn(worker, i) for i in range(args.concurrency)])
    print(json.dumps({"rps": counts["ok"] / args.seconds, **counts}))


def server_rps(models_dir: Path, variant: str, sentences: list[str], extra: list[str], args) -> float:
    server_args = [
        "--models-dir",
        str(models_dir),
        "--variant",
        variant,
        "--threads",
        str(args.threads),
        "--cpus",
        ",".join(map(str, server_cores(args.threads))),
        "--max-queue-rows",
        "4096",
        "--max-queue-time",
        "0",  # 256 in flight are a deliberate queue here, not an overload to refuse
        *extra,
    ]
    with running_server(server_args) as server:
        result = drive(server.url, sentences, args.concurrency, args.warmup, args.seconds)
    if result["errors"]:
        raise SystemExit(f"{result['errors']} requests failed during the measurement: {result}")
    return result["rps"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=8.0, help="measured window per configuration")
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--concurrency", type=int, default=256)
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads of the server and raw ORT")
    parser.add_argument(
        "--workloads", default="queries,sentences,mixed,demo", help="comma-separated: queries, sentences, mixed, demo"
    )
    parser.add_argument("--drive", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.drive:
        return _drive_main(args)
    if psutil.cpu_count() < 2:
        raise SystemExit("needs 2 cores: one for the server, one for the load generator")
    models_dir = default_models_dir()
    every = {
        "queries": lambda: search_queries(2000),
        "sentences": lambda: sentences(2000),
        "mixed": lambda: mixed_lengths(2000),
        "demo": demo_texts,
    }
    wanted = args.workloads.split(",")
    unknown = sorted(set(wanted) - set(every))
    if unknown:
        raise SystemExit(f"unknown workload(s) {unknown}; choose from {', '.join(every)}")
    workloads = {name: every[name]() for name in wanted}
    print(
        f"minilm, {args.threads} intra-op thread(s); server pinned to cores {server_cores(args.threads)}, "
        f"load generator to core {DRIVER_CORE}; "
        f"{args.concurrency} requests in flight, 1 text per request, {args.seconds:.0f}s per measurement "
        f"after {args.warmup:.0f}s warm-up; rows/s"
    )
    rows: dict[tuple[str, str], dict[str, float]] = {}
    for workload, texts in workloads.items():
        for variant in ("fp32", "int8"):
            rows[workload, variant] = row = {
                "ceiling": ort_ceiling_rps(
                    "minilm", variant, texts, threads=args.threads, cpus=tuple(server_cores(args.threads))
                ),
                "raw32": raw_ort(models_dir, variant, texts, 32, args.seconds, args.threads),
                "raw1": raw_ort(models_dir, variant, texts, 1, args.seconds, args.threads),
                "fifo": server_rps(models_dir, variant, texts, ["--no-length-grouping"], args),
                "on": server_rps(models_dir, variant, texts, [], args),
                "off": server_rps(models_dir, variant, texts, ["--no-batching"], args),
            }
            print(
                f"  {workload:<9} {variant}: raw ORT batch 32 {row['raw32']:6.1f}, batch 1 {row['raw1']:6.1f} | "
                f"ceiling {row['ceiling']:6.1f} | server batching {row['on']:6.1f} (arrival order {row['fifo']:6.1f}), "
                f"no batching {row['off']:6.1f}",
                flush=True,
            )

    print(
        "\n| workload | variant | server (batching on) / ceiling | server / raw ORT, both batch 32 in arrival order "
        "| batching on / off | length grouping / arrival order | raw ORT batch 32 / batch 1 |"
    )
    print("|---|---|---|---|---|---|---|")
    for (workload, variant), row in rows.items():
        print(
            f"| {workload} | {variant} | {row['on'] / row['ceiling']:.2f} | {row['fifo'] / row['raw32']:.2f} | "
            f"{row['on'] / row['off']:.2f} | "
            f"{row['on'] / row['fifo']:.2f} | {row['raw32'] / row['raw1']:.2f} |"
        )
    for workload in workloads:
        speedup = rows[workload, "int8"]["on"] / rows[workload, "fp32"]["on"]
        print(f"int8 / fp32 through the server (batching on), {workload}: {speedup:.2f}")


if __name__ == "__main__":
    main()
