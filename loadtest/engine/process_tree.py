"""A process and its descendants, read as one: the CPU seconds, context switches and memory the tree used.

The sampler reads a tree at each window edge and takes differences, so a tree's totals must only
ever count each CPU second once, and only seconds spent while it was watched:

- a process counts its own user and system time from its first reading; one created since the
  previous reading (``create_time``) counts from zero, one found late counts from when it was found,
  so its life before the watch never lands in one window;
- a process's reaped children (``children_user``/``children_system``) count only for what no
  watched process already accounts for. When a worker exits and its parent reaps it, the
  parent's children counters jump by the worker's whole life, and the worker's own last reading
  is still in the total: counted twice, the spike the issue saw (a 2-worker generator at 11.8
  cores on a 2-core machine, in its last second). Each parent's children time is therefore
  reduced by its vanished children's last readings (own and reaped), and it never goes down.
- exited processes keep their last reading, so the totals never go backwards.

Per-thread figures are read on request: the server's busiest thread is a bottleneck (a 1-thread
model server's serving thread) long before its process uses its cores. Each thread's CPU seconds
come from ``psutil.Process.threads``; the seconds it spent runnable but waiting for a core come
from the kernel's ``/proc/PID/task/TID/schedstat`` (psutil does not read it), where the kernel
keeps it. A thread that always has work is running or waiting to run all the time, even when
others share its cores and it gets only 75% of one: that, not its CPU alone, says it is the
bottleneck.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field

import psutil

TICK_S = 0.01  # /proc's clock tick: a process's start time is truncated to it


def since_boot() -> float:
    """Now on the clock ``create_time`` is kept on (seconds since boot), immune to wall-clock steps."""
    return time.clock_gettime(time.CLOCK_BOOTTIME)


def _thread_seconds(process: psutil.Process) -> dict[int, tuple[float, float]]:
    """Each thread's CPU seconds (user + system) and seconds waiting for a core (0 where unknown), by thread id."""
    return {
        thread.id: (thread.user_time + thread.system_time, _run_queue_wait(process.pid, thread.id))
        for thread in process.threads()
    }


def _run_queue_wait(pid: int, tid: int) -> float:
    """Seconds the thread was runnable but not running: schedstat's second field (nanoseconds), or 0."""
    try:
        with open(f"/proc/{pid}/task/{tid}/schedstat", "rb") as handle:
            return int(handle.read().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return 0.0


@dataclass
class Member:
    """One watched process: its readings when first found (the base) and now, and its parent then."""

    ppid: int
    own_base: float  # user + system CPU seconds
    kids_base: float  # reaped children's user + system CPU seconds
    switches_base: int
    own: float = 0.0
    kids: float = 0.0
    switches: int = 0
    alive: bool = True


@dataclass(frozen=True)
class TreeReading:
    """A tree's totals at one instant: CPU seconds and context switches since the watch began, RSS now."""

    cpu_s: float = 0.0
    switches: int = 0
    rss: int = 0
    alive: int = 0
    threads: dict[int, tuple[float, float]] = field(default_factory=dict)  # thread id -> (CPU s, run-queue s)


NO_TREE = TreeReading()


@dataclass
class Tree:
    """One process and its descendants, watched from the first ``read``."""

    root: psutil.Process
    with_threads: bool = False
    members: dict[tuple[int, float], Member] = field(default_factory=dict)  # by (pid, create time): pids recur
    credit: dict[tuple[int, float], float] = field(default_factory=dict)  # reaped-children seconds, per parent
    last_read: float | None = None  # since_boot() at the previous reading

    def read(self) -> TreeReading:
        """The tree's totals now (``TreeReading``); processes that left it keep their last reading."""
        now = since_boot()
        try:
            listed = [self.root, *self.root.children(recursive=True)]
        except psutil.Error:
            listed = []
        seen: set[tuple[int, float]] = set()
        rss = 0
        threads: dict[int, tuple[float, float]] = {}
        for process in listed:
            try:
                with process.oneshot():
                    key = (process.pid, process.create_time())
                    memory = process.memory_info().rss
                    own_threads = _thread_seconds(process) if self.with_threads else {}
                    self._update(key, process)
            except psutil.Error:  # exited since the listing: its last reading stands
                continue
            seen.add(key)
            rss += memory
            threads.update(own_threads)
        for key, member in self.members.items():
            member.alive = key in seen
        self.last_read = now
        switches = sum(m.switches - m.switches_base for m in self.members.values())
        return TreeReading(self._cpu_seconds(), switches, rss, len(seen), threads)

    def _update(self, key: tuple[int, float], process: psutil.Process) -> None:
        times, ctx = process.cpu_times(), process.num_ctx_switches()
        own, kids, switches = times.user + times.system, times.children_user + times.children_system, sum(ctx[:2])
        member = self.members.get(key)
        if member is None:
            born_here = self.last_read is not None and key[1] - psutil.boot_time() >= self.last_read - TICK_S
            member = Member(process.ppid(), 0.0, 0.0, 0) if born_here else Member(process.ppid(), own, kids, switches)
            self.members[key] = member
        member.own, member.kids, member.switches = own, kids, switches

    def _cpu_seconds(self) -> float:
        """Own CPU of every process seen, plus the reaped-children CPU that no seen process accounts for."""
        vanished: dict[int, float] = defaultdict(float)
        for member in self.members.values():
            if not member.alive:
                vanished[member.ppid] += member.own + member.kids
        for key, member in self.members.items():
            if member.alive:
                unaccounted = member.kids - member.kids_base - vanished[key[0]]
                self.credit[key] = max(self.credit.get(key, 0.0), unaccounted)
        return sum(m.own - m.own_base for m in self.members.values()) + sum(self.credit.values())

    def cores(self) -> list[int]:
        """The cores the tree may run on (its root's affinity)."""
        try:
            return sorted(self.root.cpu_affinity())
        except (psutil.Error, AttributeError):
            return list(range(psutil.cpu_count() or 1))

    def allowed_cores(self) -> int:
        return len(self.cores())
