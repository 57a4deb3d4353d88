"""The reference server at 10x its capacity: how long admitted requests take, and how soon it is idle again.

A script, not a test: it prints what one run measured. For each workload (short sentences; long
texts of 100 to 200 tokens) and each queue time limit (``--limits``, default: none, then the
server's default 1s):

1. **capacity**: a closed loop of 64 requests in flight for a few seconds, on a server without a
   queue time limit; completed requests per second, one text per request;
2. **overload**: an open loop at ``--factor`` (10) times that capacity for ``--seconds``, each arrival
   a request of its own on a pool of 4,000 connections; every answer's status and latency (from
   its intended send time), and for each 200 its batch's compute time (Server-Timing ``infer``);
3. **recovery**: when the open loop stops sending, a short probe every 25 ms; the recovery time is
   the first probe's send time (after the load stopped) from which probes are answered 200 within
   twice the idle latency plus 5 ms for a whole second (judged on the median of each 5 probes in a
   row; none refused), the idle latency being the median of 20 probes sent one at a time before the load. Clients
   of the load stay patient (60 s timeout): the queue they leave behind is what the server works off.

Each 200's latency is split into the generator's lateness (actual send minus intended), its wait in
the batch queue (Server-Timing ``queue``), and the rest: HTTP, parsing and tokenising, and time in
socket buffers while the server's event loop is behind.

The target (issue 15): admitted requests' p99 within the limit plus one batch's compute time (the
longest batch the admitted requests ran in), and back to idle latency within 1 s of the load stopping.

Set-up, on this 2-core machine: the server on core 0 (``--cpus 0``, 1 intra-op thread, minilm fp32),
the load generator (gevent, geventhttpclient) on core 1. Run:
``.venv/bin/python benchmarks/overload.py`` (about 2 minutes).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time

import numpy as np
import psutil

from reference_server.config import default_models_dir
from reference_server.launch import running_server

SERVER_CORE, DRIVER_CORE = 0, 1
WORDS = (
    "the customer was charged twice for an invoice after the update and asks about a refund since last week "
    "while our api key export csv login error delivery report account phone pricing cancel order again"
).split()
PROBE_TEXT = "reset my password"
INFER = "/v2/models/minilm/infer"


def texts(kind: str, n: int = 500, seed: int = 1) -> list[str]:
    """``short``: 8 to 14 words (about 10 to 17 tokens); ``long``: 90 to 180 words (about 100 to 200 tokens)."""
    low, high = (8, 15) if kind == "short" else (90, 181)
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, rng.integers(low, high))) for _ in range(n)]


def drive(mode: str, url: str, bodies: list[str], **options) -> dict:
    """Run the load generator on its own core; its JSON result."""
    done = subprocess.run(
        [sys.executable, __file__, "--drive", json.dumps({"mode": mode, "url": url, **options})],
        input=json.dumps(bodies),
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(done.stdout)


def _drive_main(spec: dict) -> None:
    psutil.Process().cpu_affinity([DRIVER_CORE])
    import gevent
    import orjson
    from geventhttpclient import HTTPClient
    from geventhttpclient.url import URL

    def body(text: str) -> bytes:
        return orjson.dumps({"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": [text]}]})

    bodies = [body(t) for t in json.loads(sys.stdin.read())]
    client = HTTPClient.from_url(URL(spec["url"]), concurrency=4000, network_timeout=60, connection_timeout=60)
    headers = {"content-type": "application/json"}

    def post(payload: bytes) -> tuple[int, str]:
        response = client.post(INFER, payload, headers=headers)
        response.read()
        return response.status_code, response.get("server-timing") or ""

    if spec["mode"] == "capacity":
        counts, end = [0], time.perf_counter() + spec["warmup"] + spec["seconds"]
        start = end - spec["seconds"]

        def worker(k: int) -> None:
            while time.perf_counter() < end:
                status = post(bodies[k % len(bodies)])[0]
                if status == 200 and start <= time.perf_counter() <= end:
                    counts[0] += 1
                k += 64

        gevent.joinall([gevent.spawn(worker, i) for i in range(64)])
        print(json.dumps({"rps": counts[0] / spec["seconds"]}))
        return

    def timed(payload: bytes, intended: float, into: list) -> None:
        sent = time.perf_counter()
        status, timing = post(payload)
        into.append((intended, time.perf_counter() - intended, status, timing, sent - intended))

    def probe_alone() -> float:
        started = time.perf_counter()
        post(body(PROBE_TEXT))
        return time.perf_counter() - started

    idle = float(np.median([probe_alone() for _ in range(20)]))
    answers: list = []
    greenlets = []
    rate, origin = spec["rate"], time.perf_counter() + 0.1
    arrivals = int(rate * spec["seconds"])
    for i in range(arrivals):
        intended = origin + i / rate
        if (wait := intended - time.perf_counter()) > 0:
            gevent.sleep(wait)
        greenlets.append(gevent.spawn(timed, bodies[i % len(bodies)], intended, answers))
    stopped = time.perf_counter()
    probes: list = []
    probe = body(PROBE_TEXT)
    while time.perf_counter() - stopped < spec["probe_seconds"]:
        greenlets.append(gevent.spawn(timed, probe, time.perf_counter(), probes))
        gevent.sleep(0.025)
    gevent.joinall(greenlets)
    print(
        json.dumps(
            {
                "idle": idle,
                "stopped": stopped,
                "origin": origin,
                "arrivals": arrivals,
                "answers": answers,
                "probes": probes,
            }
        )
    )


def recovery(probes: list, stopped: float, idle: float) -> tuple[float | None, float, float]:
    """Seconds after the load stopped from which probes were served at idle latency (None: never), the
    threshold, and the p99 of the probes in that second.

    Judged on the median of each 5 probes in a row (125 ms), held for the next second, so that one
    probe a neighbour on this shared machine delays by a few ms, or a busy moment long after, does not
    move the verdict by seconds; a refused probe in that second rules it out.
    """
    threshold = 2 * idle + 0.005
    ordered = sorted(probes)
    latencies = np.array([latency if status == 200 else np.inf for _, latency, status, *_ in ordered])
    medians = [np.median(latencies[i : i + 5]) for i in range(len(latencies) - 4)]
    held = 40  # probes in a second
    for i in range(len(medians) - held + 1):
        following = latencies[i : i + held]
        if np.isfinite(following).all() and all(m <= threshold for m in medians[i : i + held]):
            return max(0.0, ordered[i][0] - stopped), threshold, float(np.quantile(following, 0.99))
    return None, threshold, float("nan")


def rejections(url: str) -> dict[str, float]:
    import httpx

    page = httpx.get(f"{url}/metrics").text
    found = re.findall(r'inference_(rejected|dropped)_total\{model="minilm",reason="(\w+)"\} ([\d.]+)', page)
    return {reason: float(value) for _, reason, value in found}


def overload(url: str, bodies: list[str], rate: float, seconds: float, limit: str) -> str:
    before = rejections(url)
    result = drive("overload", url, bodies, rate=rate, seconds=seconds, probe_seconds=3.0 if limit != "0" else 25.0)
    after = rejections(url)
    shed = {k: int(after[k] - before.get(k, 0)) for k in after if after[k] - before.get(k, 0)}
    answers = result["answers"]
    served = [a for a in answers if a[2] == 200]
    statuses = {s: sum(1 for a in answers if a[2] == s) for s in sorted({a[2] for a in answers})}
    latencies = np.array([a[1] for a in served]) * 1000
    batches = [float(m[1]) for a in served if (m := re.search(r"infer;dur=([\d.]+)", a[3]))]
    queued = [float(m[1]) for a in served if (m := re.search(r"queue;dur=([\d.]+)", a[3]))]
    late = np.array([a[4] for a in answers]) * 1000
    back, threshold, after = recovery(result["probes"], result["stopped"], result["idle"])
    sent_for = result["stopped"] - result["origin"]
    limit_ms = 0.0 if limit == "0" else _ms(limit)
    line = (
        f"    limit {limit if limit != '0' else 'none':>5}: offered {rate:.0f}/s for {seconds:g}s "
        f"({result['arrivals']} sent in {sent_for:.1f}s); answers {statuses}; shed {shed}\n"
    )
    if served:
        p50, p99, top = np.percentile(latencies, [50, 99]).tolist() + [latencies.max()]
        bound = f"limit + longest batch {limit_ms + max(batches):.0f} ms" if limit_ms else "no limit"
        line += (
            f"      admitted: {len(served)}, latency p50 {p50:.0f} ms, "
            f"p99 {p99:.0f} ms, max {top:.0f} ms; batch compute p99 {np.percentile(batches, 99):.0f} ms, "
            f"max {max(batches):.0f} ms; {bound}\n"
            f"      of which: batch queue (Server-Timing) p99 {np.percentile(queued, 99):.0f} ms, "
            f"max {max(queued):.0f} ms; "
            f"generator lateness p99 {np.percentile(late, 99):.0f} ms\n"
        )
    recovered = (
        f"{back:.2f} s (probes in the next second: p99 {after * 1000:.1f} ms)"
        if back is not None
        else "not within the probe window"
    )
    line += (
        f"      after the load stopped: back to idle latency (<= {threshold * 1000:.1f} ms, idle "
        f"{result['idle'] * 1000:.1f} ms) after {recovered}"
    )
    return line


def _ms(duration: str) -> float:
    return float(duration[:-2]) if duration.endswith("ms") else float(duration.rstrip("s")) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=8.0, help="how long the overload lasts")
    parser.add_argument("--factor", type=float, default=10.0, help="offered rate, in multiples of capacity")
    parser.add_argument("--limits", nargs="+", default=["0", "1s"], help="queue time limits to run (0: none)")
    parser.add_argument("--workloads", nargs="+", default=["short", "long"], choices=("short", "long"))
    parser.add_argument("--drive", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.drive:
        return _drive_main(json.loads(args.drive))
    if psutil.cpu_count() < 2:
        raise SystemExit("needs 2 cores: one for the server, one for the load generator")
    print(
        f"minilm fp32, 1 intra-op thread; server on core {SERVER_CORE}, load generator on core {DRIVER_CORE}; "
        f"overload: {args.factor:g}x capacity, open loop, one text per request, for {args.seconds:g}s"
    )
    base = ["--models-dir", str(default_models_dir()), "--cpus", str(SERVER_CORE), "--threads", "1"]
    for workload in args.workloads:
        bodies = texts(workload)
        with running_server([*base, "--max-queue-time", "0"]) as server:
            capacity = drive("capacity", server.url, bodies, warmup=2.0, seconds=4.0)["rps"]
        print(f"  {workload}: capacity {capacity:.0f} req/s (closed loop, 64 in flight, no queue time limit)")
        for limit in args.limits:
            with running_server([*base, "--max-queue-time", limit]) as server:
                print(overload(server.url, bodies, args.factor * capacity, args.seconds, limit), flush=True)


if __name__ == "__main__":
    main()
