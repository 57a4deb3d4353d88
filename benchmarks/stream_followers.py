"""How many concurrent streams one load-generator process can follow with its inter-token latency right.

A script, not a test; it prints what one run measured. Set-up on this 2-core machine: the
vLLM-format stand-in (``fast_stream.py``, raw ASGI on uvicorn, ``--ttft-ms 20 --itl-ms 10``)
pinned to core 0; one ``loadtest run`` (``openai-chat``, one Locust process, and the run's sampler)
pinned to core 1. Each step is open load at a uniform rate chosen so that N streams are in flight
at once (Little's law: N over one stream's length, ``ttft + (tokens - 1) * itl``), every answer
exactly ``--tokens`` long (``max_tokens`` with ``ignore_eos``), for N in ``--ladder``.

For each N it prints the harness's ITL (``summary.json`` ``latency_ms.itl.all``) beside the
stand-in's own (``GET /debug/itl``, reset just before the run), their differences, TTFT, output
tokens a second, and the CPU of the generator (its Locust process, from the run's sampler), of
core 1 as a whole, and of the stand-in; then the largest N up to which the harness's ITL p50 and p99
are within ``--tolerance-ms`` of the stand-in's own.

The same N is then followed by a bare client (``bare_follower.py``: gevent sockets and a timed
read, nothing else) on the same core, against the same stand-in, reset again; its error is the
floor this machine sets for any Python client, so the two errors side by side tell the harness's
cost from the machine's. Steps alternate which of the two goes first. This machine is shared: other
tenants' work on core 1 (``core 1 busy`` less the generator's CPU) shows up as error in both.

Why against the stand-in's own gaps and not against ``--itl-ms``: the stand-in is one Python event
loop too. As N grows it wakes late, and the gaps it actually sends grow and spread (at a few
hundred streams its core is saturated); that jitter is on the wire, and a client that reported
exactly 10 ms would be wrong. What is the harness's own error is the difference between the gaps it
timed and the gaps that were sent. The stand-in records each token's emit time
(``time.perf_counter_ns`` just before the send), so both sides measure the same set of gaps: every
stream of the run, plus the one stream of the harness's preflight (``--tokens`` less one gaps at
idle pace, which the stand-in counts and the harness does not).

Run: ``.venv/bin/python benchmarks/stream_followers.py`` (about 4 minutes with the defaults;
``--no-bare`` about 2).
"""

from __future__ import annotations

import argparse
import csv
import json
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
SERVER_CORE, GENERATOR_CORE = "0", "1"
SCENARIO = """
name = "stream-followers-{n}"
seed = 1
[target]
url = "{url}"
protocol = "openai-chat"
model = "standin"
metrics = false
[[payload.classes]]
name = "fixed"
min_tokens = 8
max_tokens = 16
min_output_tokens = {tokens}
max_output_tokens = {tokens}
[generation]
ignore_eos = true
[load]
shape = {{ kind = "constant", value = {rate} }}
arrivals = "uniform"
duration = "{seconds}s"
timeout = "60s"
max_in_flight = {max_in_flight}
"""


@dataclass(frozen=True)
class Step:
    """One rung of the ladder: what the harness, the bare client and the stand-in each measured."""

    n: int
    in_flight: float  # Little's law on what happened: completed per second x mean end-to-end time
    harness: dict  # latency_ms.itl.all
    server: dict  # the stand-in's /debug/itl over the harness's run
    bare: dict | None  # bare_follower.py's gaps, with "server": the stand-in's over its run
    ttft: dict  # latency_ms.ttft.all
    tokens_per_s: float
    generator_cpu: float  # the Locust process's CPU, in cores
    core_busy: float  # core 1 as a whole (generator, the run's own process and sampler, other tenants), 0-1
    server_cpu: float  # the stand-in's CPU, in cores
    trustworthy: bool
    preflight_gaps: int  # gaps the stand-in counted and the harness did not: its preflight's stream

    def error(self, percentile: str) -> float:
        return self.harness[percentile] - self.server[percentile]

    def bare_error(self, percentile: str) -> float:
        return self.bare[percentile] - self.bare["server"][percentile] if self.bare else float("nan")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_standin(ttft_ms: float, itl_ms: float) -> tuple[subprocess.Popen, str]:
    port = free_port()
    command = [sys.executable, str(HERE / "fast_stream.py"), str(port), "--ttft-ms", str(ttft_ms)]
    process = subprocess.Popen([*command, "--itl-ms", str(itl_ms), "--cpu", SERVER_CORE])
    url = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            server_itl(url)
            return process, url
        except OSError:
            time.sleep(0.1)
    process.terminate()
    raise SystemExit("the stand-in did not start")


def server_itl(url: str) -> dict:
    with urllib.request.urlopen(url + "/debug/itl", timeout=5) as answer:
        return json.loads(answer.read())


def reset_server(url: str) -> None:
    urllib.request.urlopen(urllib.request.Request(url + "/debug/reset", method="POST"), timeout=5).close()


def mean_over_run(resources: Path, column: str, seconds: int) -> float:
    """The sampler's per-second ``column``, averaged over the measured seconds."""
    with resources.open() as f:
        rows = [row for row in csv.DictReader(f) if 0 <= float(row["second"]) < seconds]
    values = [float(row[column]) for row in rows if row[column]]
    return sum(values) / len(values) if values else float("nan")


def harness_run(url: str, n: int, rate: float, args: argparse.Namespace, workdir: Path) -> tuple[dict, dict]:
    """One `loadtest run` on the generator's core: its summary, and the stand-in's own gaps over it."""
    scenario = workdir / f"n{n}.toml"
    scenario.write_text(
        SCENARIO.format(n=n, url=url, tokens=args.tokens, rate=rate, seconds=args.seconds, max_in_flight=4 * n)
    )
    out = workdir / f"n{n}"
    reset_server(url)
    run = subprocess.run(
        ["taskset", "-c", GENERATOR_CORE, sys.executable, "-m", "loadtest", "run", str(scenario)]
        + ["--out", str(out), "--no-report"],
        capture_output=True,
        text=True,
    )
    server = server_itl(url)
    if not (out / "summary.json").exists():
        raise SystemExit(f"the run at N={n} failed (exit {run.returncode}):\n{run.stderr[-2000:]}")
    return json.loads((out / "summary.json").read_text()), server


def bare_run(url: str, n: int, stream_s: float, args: argparse.Namespace) -> dict:
    """bare_follower.py on the generator's core at the same N; its gaps, with the stand-in's own as "server"."""
    reset_server(url)
    command = [sys.executable, str(HERE / "bare_follower.py"), url, str(n), str(args.seconds)]
    command += ["--stream-s", str(stream_s), "--tokens", str(args.tokens)]
    run = subprocess.run(["taskset", "-c", GENERATOR_CORE, *command], capture_output=True, text=True)
    if run.returncode != 0:
        raise SystemExit(f"the bare client at N={n} failed (exit {run.returncode}):\n{run.stderr[-2000:]}")
    return json.loads(run.stdout) | {"server": server_itl(url)}


def step(url: str, n: int, args: argparse.Namespace, workdir: Path, bare_first: bool) -> Step:
    stream_s = (args.ttft_ms + (args.tokens - 1) * args.itl_ms) / 1000
    rate = round(n / stream_s, 3)
    bare = bare_run(url, n, stream_s, args) if args.bare and bare_first else None
    summary, server = harness_run(url, n, rate, args, workdir)
    if args.bare and not bare_first:
        bare = bare_run(url, n, stream_s, args)
    latency, throughput = summary["latency_ms"], summary["throughput"]
    resources = workdir / f"n{n}" / "resources.csv"
    return Step(
        n=n,
        in_flight=throughput["ok_per_s"] * latency["e2e"]["all"]["mean"] / 1000,
        harness=latency["itl"]["all"],
        server=server,
        bare=bare,
        ttft=latency["ttft"]["all"],
        tokens_per_s=throughput["output_tokens_per_s"],
        generator_cpu=mean_over_run(resources, "generator_cpu_cores", args.seconds),
        core_busy=mean_over_run(resources, f"core{GENERATOR_CORE}_busy_pct", args.seconds) / 100,
        server_cpu=mean_over_run(resources, "server_cpu_cores", args.seconds),
        trustworthy=summary["trust"]["trustworthy"],
        preflight_gaps=server["count"] - latency["itl"]["all"]["count"],
    )


HEADER = (
    "|   N | in flight | harness itl p50 / p99 | stand-in's own p50 / p99 | harness error p50 / p99 |"
    " bare client error p50 / p99 | ttft p50 / p99 | output tokens/s | generator CPU | bare CPU |"
    " core 1 busy | stand-in CPU | trusted |"
)


def row(s: Step) -> str:
    h, v = s.harness, s.server
    bare_cpu = f"{s.bare['cpu']:.0%}" if s.bare else "-"
    bare_error = f"{s.bare_error('p50'):+.2f} / {s.bare_error('p99'):+.2f}" if s.bare else "-"
    return (
        f"| {s.n} | {s.in_flight:.0f} | {h['p50']:.2f} / {h['p99']:.2f} | {v['p50']:.2f} / {v['p99']:.2f}"
        f" | {s.error('p50'):+.2f} / {s.error('p99'):+.2f} | {bare_error}"
        f" | {s.ttft['p50']:.1f} / {s.ttft['p99']:.1f} | {s.tokens_per_s:,.0f} | {s.generator_cpu:.0%} | {bare_cpu}"
        f" | {s.core_busy:.0%} | {s.server_cpu:.0%} | {'yes' if s.trustworthy else 'no'} |"
    )


def largest_within(steps: list[Step], errors: Callable[[Step], tuple[float, float]], tolerance_ms: float) -> int | None:
    """The largest N up to which every step's (p50, p99) errors were within the tolerance; None if not the first."""
    largest = None
    for s in steps:
        if not all(abs(e) <= tolerance_ms for e in errors(s)):
            break
        largest = s.n
    return largest


def answer(steps: list[Step], tolerance_ms: float, bare: bool) -> str:
    def harness(s: Step) -> tuple[float, float]:
        return s.error("p50"), s.error("p99")

    def bare_client(s: Step) -> tuple[float, float]:
        return s.bare_error("p50"), s.bare_error("p99")

    largest = largest_within(steps, harness, tolerance_ms)
    text = (
        f"harness: one generator process follows up to {largest} concurrent streams with its ITL p50 and p99 "
        f"within {tolerance_ms:g} ms of the stand-in's own gaps"
        if largest is not None
        else f"harness: ITL p50 or p99 off by more than {tolerance_ms:g} ms already at N = {steps[0].n}"
    )
    later = [s.n for s in steps if (largest is None or s.n > largest) and largest_within([s], harness, tolerance_ms)]
    if later:
        text += f" (and, above a step that was not, N = {', '.join(map(str, later))} was)"
    if bare:
        floor = largest_within(steps, bare_client, tolerance_ms)
        text += f"\nbare client, same core and N: within {tolerance_ms:g} ms up to N = {floor}"
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ladder", default="8,16,32,64,128,256,512", help="concurrent streams, comma-separated")
    parser.add_argument("--seconds", type=int, default=12, help="measured seconds a step, for each client")
    parser.add_argument("--tokens", type=int, default=100, help="output tokens an answer")
    parser.add_argument("--ttft-ms", type=float, default=20.0)
    parser.add_argument("--itl-ms", type=float, default=10.0)
    parser.add_argument("--tolerance-ms", type=float, default=1.0)
    parser.add_argument("--no-bare", dest="bare", action="store_false", help="skip the bare client (halves the time)")
    args = parser.parse_args()
    ladder = [int(n) for n in args.ladder.split(",")]
    standin, url = start_standin(args.ttft_ms, args.itl_ms)
    print(
        f"stand-in on core {SERVER_CORE} (ttft {args.ttft_ms:g} ms, itl {args.itl_ms:g} ms); one `loadtest run`, "
        f"then the bare client, on core {GENERATOR_CORE}; {args.tokens} tokens an answer, {args.seconds} s a step; "
        "ms; error: the client's figure less the stand-in's own over the same run\n",
        flush=True,
    )
    print(HEADER)
    print("|" + "|".join("---" for _ in range(HEADER.count("|") - 1)) + "|", flush=True)
    steps = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for i, n in enumerate(ladder):
                steps.append(step(url, n, args, Path(tmp), bare_first=i % 2 == 1))
                print(row(steps[-1]), flush=True)
    finally:
        standin.terminate()
        standin.wait()
    extra = {s.preflight_gaps for s in steps}
    if extra != {args.tokens - 1}:
        print(f"\nnote: the stand-in counted {sorted(extra)} more gaps than the harness (expected {args.tokens - 1})")
    print(f"\n{answer(steps, args.tolerance_ms, args.bare)}")


if __name__ == "__main__":
    main()
