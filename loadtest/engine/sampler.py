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
sample cannot resolve but a one-second window can. ``process_tree`` keeps those totals honest when
processes start, exit and are reaped mid-run; a window's CPU is still capped at the cores the tree
may use (clock skew between two readings can push it a hair over), and ``resources.json`` counts
the windows that were capped (``clamped``), so a cap never hides a fault.

For the server it also records its busiest thread's CPU as a share of one core (a 1-thread model
server saturates on that thread while its process is at half its cores) and, with ``--metrics-url``,
what its Prometheus page says (``engine.server_metrics``), read once at each window's end: a read
costs the sampler about 2 ms of CPU, and four a second would double what the sampler costs. From
the reference server's page, the rows its queue holds and the requests in flight (``resources.csv``);
from any known server's page (Triton, MLServer, KServe, ours: ``results.server_split``), the
server's own split of each interval between two reads into queue and compute time per request,
in ``server_split.csv``. Its counters are cumulative, so a read that fails loses nothing: the next
interval spans both windows; and the last interval is written however short, since a counter, unlike
CPU time in 10 ms ticks, is exact over a sliver.
"""

from __future__ import annotations

import argparse
import csv
import errno
import io
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from loadtest.engine.process_tree import NO_TREE, Tree, TreeReading
from loadtest.engine.server_metrics import IN_FLIGHT, QUEUE_ROWS, read_page, total
from loadtest.errors import LoadTestError, MetricsUnavailable
from loadtest.results.files import write_error, write_json
from loadtest.results.server_split import Interval, Page, Series, between, detect, split_columns, split_row

RESOURCE_COLUMNS_FIXED = (
    "second",
    "server_cpu_cores",
    "server_cpu_util",
    "server_rss_mb",
    "server_ctx_switches_per_s",
    "server_thread_max_busy",
    "server_thread_max_util",
    "server_thread_max_tid",
    "generator_cpu_cores",
    "generator_cpu_util",
    "generator_rss_mb",
    "loopback_rx_mb_per_s",
    "loopback_tx_mb_per_s",
)
QUEUE_COLUMNS = ("server_queue_rows", "server_in_flight")
METRICS_TIMEOUT_S = 0.25  # a read slower than this is skipped: the sampler's windows must not wait on the server


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


@dataclass(frozen=True)
class ServerPage:
    """The server's Prometheus page, read at each window's end: what it holds, found at its first read."""

    url: str
    first: Page  # the first read: the split's first interval starts here
    first_time: float
    queue: bool  # it has the reference server's queue rows and requests in flight
    series: Series | None  # the known server it comes from, for the split

    def read(self) -> Page | None:
        """The page now; None for a read that failed or was too slow."""
        try:
            return read_page(self.url, METRICS_TIMEOUT_S)
        except MetricsUnavailable:
            return None


def server_page(url: str | None) -> tuple[ServerPage | None, str]:
    """(the page, why-absent): a page is read when it holds the reference server's queue or a known server's series."""
    if not url:
        return None, "no metrics page: metrics = false, or a target not on HTTP on this machine ([target] metrics)"
    try:
        first = read_page(url, METRICS_TIMEOUT_S * 4)
    except MetricsUnavailable as exc:
        return None, str(exc)
    queue, series = total(first.samples, QUEUE_ROWS) is not None, detect(first)
    if not queue and series is None:
        return None, f"{url} has no series of a known server (Triton, MLServer, KServe, the reference server)"
    return ServerPage(url, first, time.time(), queue, series), url


def _loopback() -> tuple[int, int]:
    counters = psutil.net_io_counters(pernic=True).get("lo")
    return (counters.bytes_recv, counters.bytes_sent) if counters else (0, 0)


@dataclass(frozen=True)
class Reading:
    """What one window edge reads: each tree's totals (``Tree.read``), every core's times, loopback bytes."""

    server: TreeReading
    generator: TreeReading
    cores: list
    loopback: tuple[int, int]
    time: float


def read_all(server: Tree | None, generator: Tree | None, now: float | None = None) -> Reading:
    """Read everything a row needs; ``now`` is the window's edge (default: the time after the reads)."""
    server_now = server.read() if server else NO_TREE
    generator_now = generator.read() if generator else NO_TREE
    cores = psutil.cpu_times(percpu=True)
    loopback = _loopback()
    return Reading(server_now, generator_now, cores, loopback, time.time() if now is None else now)


def resource_columns(cores: int, gpus: int, queue: bool = False) -> list[str]:
    columns = list(RESOURCE_COLUMNS_FIXED)
    columns += [f"core{i}_busy_pct" for i in range(cores)] + [f"core{i}_steal_pct" for i in range(cores)]
    columns += list(QUEUE_COLUMNS) if queue else []
    for i in range(gpus):
        columns += [f"gpu{i}_util_pct", f"gpu{i}_memory_mb", f"gpu{i}_power_w"]
    return columns


@dataclass
class Clamps:
    """Per tree, the windows whose CPU came out above the cores the tree may use, and the highest such reading."""

    windows: dict[str, int] = field(default_factory=dict)
    peak_cores: dict[str, float] = field(default_factory=dict)

    def note(self, tree: str, cores: float) -> None:
        self.windows[tree] = self.windows.get(tree, 0) + 1
        self.peak_cores[tree] = round(max(cores, self.peak_cores.get(tree, 0.0)), 4)

    def as_dict(self) -> dict:
        return {tree: {"windows": n, "peak_cores": self.peak_cores[tree]} for tree, n in self.windows.items()}


def _cpu_cells(
    name: str, tree: Tree | None, before: TreeReading, after: TreeReading, elapsed: float, clamps: Clamps
) -> list:
    """CPU cores, CPU share (capped at the tree's cores) and RSS of one tree over a window."""
    if tree is None or not after.alive:  # not watched, or exited: no reading rather than a misleading zero
        return [""] * 3
    allowed = tree.allowed_cores()
    used = (after.cpu_s - before.cpu_s) / elapsed
    if used > allowed:
        clamps.note(name, used)
        used = allowed
    return [round(used, 4), round(used / allowed, 4), round(after.rss / 2**20, 1)]


def _server_cells(tree: Tree | None, before: TreeReading, after: TreeReading, elapsed: float) -> list:
    """Context switches per second, and the busiest thread: its share of the window running or runnable, CPU, id.

    Busiest means most time running or waiting for a core: a thread that always has work.
    """
    if tree is None or not after.alive:
        return [""] * 4
    switches = round((after.switches - before.switches) / elapsed, 1)
    both = after.threads.keys() & before.threads.keys()  # a thread first seen now has no baseline yet
    if not both:
        return [switches, "", "", ""]
    cpu = {t: after.threads[t][0] - before.threads[t][0] for t in both}
    wait = {t: after.threads[t][1] - before.threads[t][1] for t in both}
    busiest = max(both, key=lambda t: (cpu[t] + wait[t], cpu[t]))
    busy, used = min((cpu[busiest] + wait[busiest]) / elapsed, 1.0), min(cpu[busiest] / elapsed, 1.0)
    return [switches, round(busy, 4), round(used, 4), busiest]  # one thread: all of the window, one core, at most


def _core_cells(before: list, after: list) -> list[float]:
    """Every core's busy percentage, then every core's steal percentage, over a window."""
    busy, steal = [], []
    for start, end in zip(before, after, strict=True):
        total_s = sum(end) - sum(start)
        idle = (end.idle + getattr(end, "iowait", 0)) - (start.idle + getattr(start, "iowait", 0))
        busy.append(round(100 * (1 - idle / total_s), 2) if total_s > 0 else 0.0)
        stolen = getattr(end, "steal", 0) - getattr(start, "steal", 0)
        steal.append(round(100 * stolen / total_s, 2) if total_s > 0 else 0.0)
    return busy + steal


def _queue_cells(page: Page | None) -> list:
    """The queue rows and requests in flight read at the window's end; empty if the read failed."""
    if page is None:
        return ["", ""]
    rows, in_flight = total(page.samples, QUEUE_ROWS) or 0.0, total(page.samples, IN_FLIGHT) or 0.0  # none yet: 0
    return [round(rows, 2), round(in_flight, 2)]


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
    before: Reading,
    after: Reading,
    server: Tree | None,
    generator: Tree | None,
    start_epoch: float,
    clamps: Clamps | None = None,
) -> list:
    """One window's row of ``resources.csv`` up to the cores' columns, from the readings at its two edges."""
    clamps = clamps if clamps is not None else Clamps()
    elapsed = after.time - before.time
    row: list = [round(before.time - start_epoch, 3)]
    row += _cpu_cells("server", server, before.server, after.server, elapsed, clamps)
    row += _server_cells(server, before.server, after.server, elapsed)
    row += _cpu_cells("generator", generator, before.generator, after.generator, elapsed, clamps)
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


@dataclass
class Watch:
    """What one sampler watches: the two trees, the GPUs (read at ``hz``) and the server's ``/metrics``."""

    server: Tree | None
    generator: Tree | None
    read_gpus: Callable[[], list[tuple[float, float, float]]] | None
    gpus: int
    page: ServerPage | None
    clamps: Clamps = field(default_factory=Clamps)

    @property
    def queue(self) -> bool:
        return self.page is not None and self.page.queue


class SplitRecorder:
    """``server_split.csv``: one row per interval between two reads of a known server's page.

    Its columns are fixed by the first interval with a request in it: a server may declare a model's
    histogram only once it has served it, so rows before that wait, and their buckets read 0.
    """

    def __init__(self, path: Path, page: ServerPage, start_epoch: float, model: str | None) -> None:
        self.series = page.series
        self.model = model
        self.start_epoch = start_epoch
        self.last, self.last_time = page.first, page.first_time
        self.path = path
        self.rows: Rows | None = None
        self.columns: list[str] = []
        self.waiting: list[tuple[float, float, Interval]] = []  # (start, length, interval) not yet written

    def record(self, page: Page | None, now: float) -> None:
        """The interval since the last good read; nothing for a failed read (the next interval covers it)."""
        if page is None or self.series is None:
            return
        interval = between(self.series, self.last, page, self.model)
        if interval is not None:  # None: a count went back, the server restarted; the next interval starts here
            self.waiting.append((self.last_time - self.start_epoch, now - self.last_time, interval))
            if self.rows is None and interval.requests > 0:
                self._open(interval)
            self._write()
        self.last, self.last_time = page, now

    def _open(self, interval: Interval) -> None:
        self.columns = split_columns(interval)
        self.rows = Rows(self.path)
        self.rows.write(self.columns)

    def _write(self) -> None:
        if self.rows is None:
            return
        for second, length, interval in self.waiting:
            cells = dict(zip(split_columns(interval), split_row(second, length, interval), strict=True))
            self.rows.write([cells.get(column, 0 if "_le_" in column else "") for column in self.columns])
        self.waiting = []

    def close(self) -> None:
        if self.rows is None and self.waiting:  # not one request in the whole run: the rows, all of zero
            self._open(self.waiting[0][2])
            self._write()
        if self.rows is not None:
            self.rows.close()


def sample(
    out: Path,
    server_pid: int | None,
    generator_pid: int | None,
    start_epoch: float,
    hz: float,
    window: float,
    metrics_url: str | None = None,
    model: str | None = None,
) -> None:
    """Sample until SIGTERM/SIGINT or until the generator exits; write ``resources.csv`` as it goes.

    ``model``: the model whose series the split reads, when the page has it (else every model's).
    """
    read_gpus, gpu_info = gpu_reader()
    page, page_info = server_page(metrics_url)
    watch = Watch(
        Tree(psutil.Process(server_pid), with_threads=True) if server_pid else None,
        Tree(psutil.Process(generator_pid)) if generator_pid else None,
        read_gpus,
        len(gpu_info) if read_gpus else 0,
        page,
    )
    cores = psutil.cpu_count() or 1
    series = page.series if page is not None else None
    meta = {
        "start_epoch": start_epoch,  # "second" counts from here
        "hz": hz,
        "window_s": window,
        "cores": cores,
        "server_pid": server_pid,
        "server_cores": watch.server.cores() if watch.server else None,
        "generator_pid": generator_pid,
        "generator_cores": watch.generator.cores() if watch.generator else None,
        "gpus": gpu_info if read_gpus else [],
        "gpu_absent": None if read_gpus else gpu_info,
        "server_metrics": page_info if page else None,
        "server_metrics_absent": None if page else page_info,
        "server_split": series.source if series is not None else None,
        "clamped": {},
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json(out.parent / "resources.json", meta)
    rows = Rows(out)
    split = SplitRecorder(out.with_name("server_split.csv"), page, start_epoch, model) if series else None
    try:
        rows.write(resource_columns(cores, watch.gpus, watch.queue))
        _write_rows(watch, rows, split, start_epoch, hz, window)
    finally:
        rows.close()
        if split is not None:
            split.close()
    write_json(out.parent / "resources.json", {**meta, "clamped": watch.clamps.as_dict()})


class Rows:
    """``resources.csv``, written a whole row at a time as the run goes (a reader may open it mid-run).

    A row that finds no room (a full disk) is cut off again, and ``DiskFull`` names the file: the
    file ends at its last whole row, readable, never in the middle of a number.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.size = 0
        try:
            self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        except OSError as exc:
            raise write_error(exc, path) from None

    def write(self, row: list) -> None:
        line = io.StringIO()
        csv.writer(line).writerow(row)
        data = line.getvalue().encode()
        try:
            done = 0
            while done < len(data):  # a write short of the end is followed by one that says why
                written = os.write(self.fd, data[done:])
                if written == 0:
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                done += written
        except OSError as exc:
            os.ftruncate(self.fd, self.size)  # needs no room
            raise write_error(exc, self.path) from None
        self.size += len(data)

    def close(self) -> None:
        os.close(self.fd)


def _write_rows(
    watch: Watch, rows: Rows, split: SplitRecorder | None, start_epoch: float, hz: float, window: float
) -> None:
    """One row per window until asked to stop or the generator exits; GPUs are read at ``hz``, the rest per window."""
    stop = _Stop()
    last = read_all(watch.server, watch.generator)
    gpu_samples: list[list[tuple[float, float, float]]] = []
    while not stop.now:
        if watch.read_gpus:
            gpu_samples.append(watch.read_gpus())  # utilisation is sampled at hz; the rest is per window
        stopping = stop.wait(1 / hz)
        now = time.time()
        if now - last.time < window and not stopping:
            continue
        page = watch.page.read() if watch.page is not None else None
        if split is not None:
            split.record(page, time.time())
        if stopping and now - last.time < window / 2:
            break  # a sliver after Locust has quit: too short for CPU times in 10 ms ticks to mean anything
        current = read_all(watch.server, watch.generator, now)
        row = resource_row(last, current, watch.server, watch.generator, start_epoch, watch.clamps)
        row += _queue_cells(page) if watch.queue else []
        rows.write(row + _gpu_cells(gpu_samples, watch.gpus))
        gpu_samples = []
        last = current
        if watch.generator is not None and not watch.generator.root.is_running():
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
    parser.add_argument("--metrics-url", help="the server's Prometheus page: its queue, and its queue/compute split")
    parser.add_argument("--model", help="the model whose series the split reads (default: every model's together)")
    args = parser.parse_args(argv)
    if args.cpus:
        os.sched_setaffinity(0, [int(c) for c in args.cpus.split(",")])
    start = args.start_epoch or time.time()
    try:
        sample(args.out, args.server_pid, args.generator_pid, start, args.hz, args.window, args.metrics_url, args.model)
    except psutil.NoSuchProcess as exc:
        print(f"sampler: no process {exc.pid}", file=sys.stderr)
        return 2
    except LoadTestError as exc:  # no room for resources.csv: what it holds is whole rows
        print(f"sampler: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
