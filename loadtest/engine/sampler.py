"""Resource sampler: CPU, memory, context switches, loopback traffic and GPUs, in its own process.

``loadtest run`` starts it beside Locust (``python -m loadtest.engine.sampler``), so sampling never runs
on the load generator's event loop. It samples at ``--hz`` (4 by default) and writes one row per
``--window`` (1 s) to ``resources.csv``, aligned with the latency timeline by the run's start time:

- the server's process tree (CPU in cores and as a share of the cores it may use, RSS, context
  switches per second), and the same for the load generator's (Locust master and workers);
- every core's busy and steal percentages;
- loopback bytes per second, both ways;
- per GPU through NVML (``nvidia-ml-py``): utilisation, memory, power. Without a GPU or NVML,
  ``resources.json`` says why, and no GPU columns are written: absent, never zeros.

Per-process CPU comes from cumulative CPU-time deltas over each window, not from psutil's
``cpu_percent``: its first reading is always 0, and it moves in 10 ms ticks, which a 250 ms
sample cannot resolve but a one-second window can.
"""

from __future__ import annotations

import argparse
import csv
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from loadtest.results.files import write_json

RESOURCE_COLUMNS_FIXED = (
    "second",
    "server_cpu_cores",
    "server_cpu_util",
    "server_rss_mb",
    "server_ctx_switches_per_s",
    "generator_cpu_cores",
    "generator_cpu_util",
    "generator_rss_mb",
    "loopback_rx_mb_per_s",
    "loopback_tx_mb_per_s",
)


@dataclass
class Tree:
    """One process and its descendants: CPU seconds and context switches so far, per pid."""

    root: psutil.Process
    cpu: dict[int, float] = field(default_factory=dict)
    switches: dict[int, int] = field(default_factory=dict)
    processes: dict[int, psutil.Process] = field(default_factory=dict)

    def read(self) -> tuple[float, int, float, int]:
        """(CPU seconds, context switches, RSS bytes, processes alive), summed over the tree now."""
        try:
            members = [self.root, *self.root.children(recursive=True)]
        except psutil.Error:
            members = []
        rss = alive = 0
        for process in members:
            known = self.processes.setdefault(process.pid, process)
            try:
                with known.oneshot():
                    times = known.cpu_times()
                    ctx = known.num_ctx_switches()
                    rss += known.memory_info().rss
            except psutil.Error:
                continue
            alive += 1
            self.cpu[process.pid] = times.user + times.system + times.children_user + times.children_system
            self.switches[process.pid] = ctx.voluntary + ctx.involuntary
        # Exited processes keep their last reading: a tree's totals never go backwards.
        return sum(self.cpu.values()), sum(self.switches.values()), rss, alive

    def cores(self) -> list[int]:
        """The cores the tree may run on (its root's affinity)."""
        try:
            return sorted(self.root.cpu_affinity())
        except (psutil.Error, AttributeError):
            return list(range(psutil.cpu_count() or 1))

    def allowed_cores(self) -> int:
        return len(self.cores())


def gpu_reader():
    """(reader, why-absent): reader() gives [(util %, memory MB, power W)] per GPU, or None."""
    try:
        import pynvml
    except ImportError:
        return None, "nvidia-ml-py is not installed"
    try:
        pynvml.nvmlInit()
        handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
    except pynvml.NVMLError as exc:
        return None, f"NVML unavailable: {exc}"
    if not handles:
        return None, "NVML found no GPU"

    def read() -> list[tuple[float, float, float]]:
        rows = []
        for handle in handles:
            util = pynvml.nvmlDeviceGetUtilizationRates(handle).gpu
            memory = pynvml.nvmlDeviceGetMemoryInfo(handle).used / 2**20
            try:
                power = pynvml.nvmlDeviceGetPowerUsage(handle) / 1000
            except pynvml.NVMLError:
                power = float("nan")
            rows.append((float(util), memory, power))
        return rows

    names = [pynvml.nvmlDeviceGetName(h) for h in handles]
    return read, [n.decode() if isinstance(n, bytes) else n for n in names]


def _loopback() -> tuple[int, int]:
    counters = psutil.net_io_counters(pernic=True).get("lo")
    return (counters.bytes_recv, counters.bytes_sent) if counters else (0, 0)


@dataclass(frozen=True)
class Reading:
    """What one window edge reads: each tree's totals (``Tree.read``), every core's times, loopback bytes."""

    server: tuple[float, int, float, int]
    generator: tuple[float, int, float, int]
    cores: list
    loopback: tuple[int, int]
    time: float


NO_TREE = (0.0, 0, 0, 0)


def read_all(server: Tree | None, generator: Tree | None, now: float | None = None) -> Reading:
    """Read everything a row needs; ``now`` is the window's edge (default: the time after the reads)."""
    server_now = server.read() if server else NO_TREE
    generator_now = generator.read() if generator else NO_TREE
    cores = psutil.cpu_times(percpu=True)
    loopback = _loopback()
    return Reading(server_now, generator_now, cores, loopback, time.time() if now is None else now)


def resource_columns(cores: int, gpus: int) -> list[str]:
    columns = list(RESOURCE_COLUMNS_FIXED)
    columns += [f"core{i}_busy_pct" for i in range(cores)] + [f"core{i}_steal_pct" for i in range(cores)]
    for i in range(gpus):
        columns += [f"gpu{i}_util_pct", f"gpu{i}_memory_mb", f"gpu{i}_power_w"]
    return columns


def _tree_cells(tree: Tree | None, before: tuple, after: tuple, elapsed: float, switches: bool) -> list:
    """CPU cores, CPU share and RSS of one tree over a window (and for the server, context switches per second)."""
    width = 4 if switches else 3
    if tree is None or not after[3]:  # not watched, or exited: no reading rather than a misleading zero
        return [""] * width
    used = (after[0] - before[0]) / elapsed
    cells = [round(used, 4), round(used / tree.allowed_cores(), 4), round(after[2] / 2**20, 1)]
    if switches:
        cells.append(round((after[1] - before[1]) / elapsed, 1))
    return cells


def _core_cells(before: list, after: list) -> list[float]:
    """Every core's busy percentage, then every core's steal percentage, over a window."""
    busy, steal = [], []
    for start, end in zip(before, after, strict=True):
        total = sum(end) - sum(start)
        idle = (end.idle + getattr(end, "iowait", 0)) - (start.idle + getattr(start, "iowait", 0))
        busy.append(round(100 * (1 - idle / total), 2) if total > 0 else 0.0)
        stolen = getattr(end, "steal", 0) - getattr(start, "steal", 0)
        steal.append(round(100 * stolen / total, 2) if total > 0 else 0.0)
    return busy + steal


def _gpu_cells(samples: list[list[tuple[float, float, float]]], gpus: int) -> list[float]:
    """Per GPU over a window: mean utilisation and power of the samples taken at hz, the last memory reading."""
    cells = []
    for i in range(gpus):
        readings = [s[i] for s in samples] or [(float("nan"),) * 3]
        cells += [
            round(sum(r[0] for r in readings) / len(readings), 1),
            round(readings[-1][1], 1),
            round(sum(r[2] for r in readings) / len(readings), 1),
        ]
    return cells


def resource_row(
    before: Reading, after: Reading, server: Tree | None, generator: Tree | None, start_epoch: float
) -> list:
    """One window's row of ``resources.csv`` but the GPU columns, from the readings at its two edges."""
    elapsed = after.time - before.time
    row: list = [round(before.time - start_epoch, 3)]
    row += _tree_cells(server, before.server, after.server, elapsed, switches=True)
    row += _tree_cells(generator, before.generator, after.generator, elapsed, switches=False)
    row += [round((after.loopback[i] - before.loopback[i]) / elapsed / 2**20, 4) for i in (0, 1)]
    return row + _core_cells(before.cores, after.cores)


class _Stop:
    """SIGTERM or SIGINT, waited for between samples, so the sampler finishes its file at once, never mid-row.

    The signals are blocked and collected with ``sigtimedwait`` instead of a handler beside
    ``time.sleep``: a sleep resumes after a handler runs, so the last row would wait out the sleep.
    """

    SIGNALS = frozenset({signal.SIGTERM, signal.SIGINT})

    def __init__(self) -> None:
        signal.pthread_sigmask(signal.SIG_BLOCK, self.SIGNALS)
        self.now = False

    def wait(self, seconds: float) -> bool:
        """Sleep up to ``seconds``, less if asked to stop; whether to stop."""
        if not self.now and signal.sigtimedwait(self.SIGNALS, seconds) is not None:
            self.now = True
        return self.now


def sample(
    out: Path, server_pid: int | None, generator_pid: int | None, start_epoch: float, hz: float, window: float
) -> None:
    """Sample until SIGTERM/SIGINT or until the generator exits; write ``resources.csv`` as it goes."""
    server = Tree(psutil.Process(server_pid)) if server_pid else None
    generator = Tree(psutil.Process(generator_pid)) if generator_pid else None
    read_gpus, gpu_info = gpu_reader()
    cores = psutil.cpu_count() or 1
    gpus = len(gpu_info) if read_gpus else 0
    meta = {
        "start_epoch": start_epoch,  # "second" counts from here
        "hz": hz,
        "window_s": window,
        "cores": cores,
        "server_pid": server_pid,
        "server_cores": server.cores() if server else None,
        "generator_pid": generator_pid,
        "generator_cores": generator.cores() if generator else None,
        "gpus": gpu_info if read_gpus else [],
        "gpu_absent": None if read_gpus else gpu_info,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json(out.parent / "resources.json", meta)
    stop = _Stop()
    last = read_all(server, generator)
    gpu_samples: list[list[tuple[float, float, float]]] = []
    with out.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(resource_columns(cores, gpus))
        handle.flush()
        while not stop.now:
            if read_gpus:
                gpu_samples.append(read_gpus())  # utilisation is sampled at hz; the rest is per window
            stopping = stop.wait(1 / hz)
            now = time.time()
            if now - last.time < window and not stopping:
                continue
            current = read_all(server, generator, now)
            writer.writerow(resource_row(last, current, server, generator, start_epoch) + _gpu_cells(gpu_samples, gpus))
            handle.flush()
            gpu_samples = []
            last = current
            if generator is not None and not generator.root.is_running():
                break


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtest.engine.sampler", description=__doc__)
    parser.add_argument("--out", type=Path, required=True, help="resources.csv to write")
    parser.add_argument("--server-pid", type=int)
    parser.add_argument("--generator-pid", type=int)
    parser.add_argument("--start-epoch", type=float, default=None, help="the run's start time (Unix seconds)")
    parser.add_argument("--hz", type=float, default=4.0, help="samples per second (default 4)")
    parser.add_argument("--window", type=float, default=1.0, help="seconds per written row (default 1)")
    parser.add_argument("--cpus", help="pin the sampler to these cores, e.g. 1")
    args = parser.parse_args(argv)
    if args.cpus:
        os.sched_setaffinity(0, [int(c) for c in args.cpus.split(",")])
    try:
        sample(args.out, args.server_pid, args.generator_pid, args.start_epoch or time.time(), args.hz, args.window)
    except psutil.NoSuchProcess as exc:
        print(f"sampler: no process {exc.pid}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
