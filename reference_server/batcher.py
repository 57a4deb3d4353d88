"""Dynamic batching with Triton's two knobs, max batch size and max queue delay, and a queue time limit.

Requests wait in a bounded queue; one loop takes a batch and runs it on the inference thread while
new requests keep queueing, so under load batches fill by themselves and at low load a request
waits at most ``max_queue_delay``. The queue is bounded in rows: a full queue is answered at once
with 503 and Retry-After rather than let latency and memory grow without limit.

The queue is bounded in time as well (``max_queue_time_ms``, Triton's queue policy
``default_timeout_microseconds`` with ``timeout_action: REJECT``). Rows alone do not bound the wait:
512 rows of long text are many seconds of compute. So a request whose expected wait (the rows ahead
of it at the recent compute rate) is over the limit is refused on arrival, and one that has waited
past the limit when a batch is formed is answered 503 without being computed. An answered request
has therefore waited at most the limit, and takes at most the limit plus its own batch's compute.
A request whose client has gone (its handler cancelled) leaves the queue at once and is never
computed: nobody would read the answer, and the requests behind it would wait for it.

Length grouping: the oldest request always goes into the next batch (so nothing starves), and the
rest of the batch is filled with the queued requests closest to it in token length, so one long
input does not make a batch of short ones pad to its length. A request joins only if the padding
it adds (to itself and to the rows already in) is at most ``max_padding_tokens``. MiniLM's linear
layers skip padding (``minilm_graph.py``), but its attention and the moves between the packed and
padded layouts do not, and on the demo's traffic a budget of 4 tokens beat 16 at every load
measured: at saturation 324 against 287 req/s, at 200 req/s p95 56 against 94 ms
(``benchmarks/server_settings_ab.py``, 2 interleaved rounds; 1 and 8 tokens were within the noise
of 4).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from .errors import Overloaded
from .models import Prepared, ServedModel


@dataclass(frozen=True)
class BatchingConfig:
    enabled: bool = True
    max_batch_size: int = 32  # rows
    max_queue_delay_ms: float = 0.0
    max_queue_rows: int = 512
    group_by_length: bool = True
    max_padding_tokens: int = 4  # padding one request may add to a batch (group_by_length); <0: no limit
    max_queue_time_ms: float = 1000.0  # longest a request may wait for its batch; 0: no limit

    def __post_init__(self) -> None:
        # A lone request waits max_queue_delay for company; a limit below that would refuse it.
        if self.max_queue_time_ms and self.max_queue_time_ms <= self.max_queue_delay_ms:
            raise ValueError(
                f"the queue time limit ({self.max_queue_time_ms:g} ms) must be longer than the queue delay "
                f"({self.max_queue_delay_ms:g} ms), or 0 for no limit"
            )

    @property
    def batch_rows(self) -> int:
        return self.max_batch_size if self.enabled else 1


@dataclass(frozen=True)
class Timing:
    """What one request spent in the server, for the Server-Timing header and metrics."""

    queue_ms: float
    infer_ms: float
    batch_rows: int


@dataclass(eq=False)  # compared by identity: two requests with equal rows are still two requests
class _Pending:
    prepared: Prepared
    future: asyncio.Future
    enqueued: float = field(default_factory=time.perf_counter)

    @property
    def rows(self) -> int:
        return len(self.prepared.rows)


# After each batch: its rows, the seconds each of its requests waited in the queue (one figure a
# request, so a histogram of them is per request, not per batch), its infer seconds, and its padding
# efficiency (real / padded tokens)
BatchObserver = Callable[[int, tuple[float, ...], float, float], None]
# a request that left the queue uncomputed: ("rejected", "queue_full" | "expected_wait" | "queue_timeout")
# answered 503, or ("dropped", "client_gone") never answered
ShedCounter = Callable[[str, str], None]


def padding_efficiency(rows: list[np.ndarray]) -> float:
    """Share of the padded batch that is real input; 1.0 when every row has the same length."""
    return sum(len(r) for r in rows) / (len(rows) * max(len(r) for r in rows))


def yield_to_the_event_loop(niceness: int = 10) -> None:
    """Lower this thread's priority (Linux), so that compute does not starve the event loop beside it.

    The event loop admits and refuses. At ten times capacity, pinned to one core with ONNX Runtime,
    it got half the core, fell behind refusing, and requests waited seconds in socket buffers before
    any queue time limit could see them (``benchmarks/overload.py``: short texts, admitted p99
    14.5 s with a 1 s limit; 1.3 to 1.5 s at nice 10). Compute loses nothing measurable: the loop sleeps
    when it has nothing to do (capacity 262.7 against 258.8 req/s, 3 rounds each, 2026-12-03).
    """
    if sys.platform != "linux":  # elsewhere PRIO_PROCESS takes a process id, not a thread's
        return
    thread = threading.get_native_id()
    with contextlib.suppress(OSError):  # not allowed here: run at the process's priority
        os.setpriority(os.PRIO_PROCESS, thread, min(19, os.getpriority(os.PRIO_PROCESS, thread) + niceness))


class ComputeRate:
    """A batch's compute time as a fixed cost plus a cost per row, fitted over the recent batches.

    Exponentially weighted least squares over (rows, seconds), so it follows a change of traffic
    within a few batches. A batch of 32 costs far less than 32 batches of one, so one cost per row
    learned from batches of one would predict, for a burst that follows quiet traffic, a wait many
    times the real one, and refuse requests the server had time for (64 requests from 32 clients,
    after 64 sent one at a time, were refused with an expected wait of 1,014 ms). Where the batches
    seen so far are all one size, the fit cannot tell the two costs apart and charges the whole
    time per batch: optimistic about a larger batch, which is the safe side, because the
    queue-time check at batch formation still holds. Until the first batch it predicts no wait.
    """

    def __init__(self, weight: float = 0.25) -> None:
        self.weight = weight
        self._sums: tuple[float, float, float, float] | None = None  # weighted means of r, s, r*r, r*s
        self.fixed = 0.0  # seconds a batch costs whatever its size
        self.per_row = 0.0  # seconds each row adds

    def observe(self, rows: int, seconds: float) -> None:
        point = (float(rows), seconds, float(rows * rows), rows * seconds)
        if self._sums is None:
            self._sums = point
        else:
            self._sums = tuple(m + self.weight * (x - m) for m, x in zip(self._sums, point, strict=True))
        r, s, rr, rs = self._sums
        variance = rr - r * r
        slope = (rs - r * s) / variance if variance > 0.25 else 0.0  # rows under half a row apart: one size
        slope = min(max(slope, 0.0), s / r if r else 0.0)
        self.per_row, self.fixed = slope, s - slope * r

    def seconds_for(self, rows: int, batch_rows: int) -> float:
        """Compute time for ``rows`` queued rows, taken in batches of at most ``batch_rows``."""
        if rows <= 0 or self._sums is None:
            return 0.0
        return -(-rows // max(1, batch_rows)) * self.fixed + rows * self.per_row


class Batcher:
    def __init__(
        self,
        model: ServedModel,
        config: BatchingConfig,
        observe: BatchObserver | None = None,
        count_shed: ShedCounter | None = None,
    ) -> None:
        self.model = model
        self.config = config
        self._observe = observe
        self._count_shed = count_shed or (lambda outcome, reason: None)
        self._queue: list[_Pending] = []  # in arrival order: removals keep it so
        self._queued_rows = 0
        self._rate = ComputeRate()
        self._running: tuple[int, float] | None = None  # rows and start of the batch on the inference thread
        self._arrived = asyncio.Event()
        self._executor = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix=f"infer-{model.name}", initializer=yield_to_the_event_loop
        )
        self._task: asyncio.Task | None = None

    @property
    def queued_rows(self) -> int:
        return self._queued_rows

    @property
    def _limit_s(self) -> float:
        return self.config.max_queue_time_ms / 1000

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"batcher-{self.model.name}")

    async def stop(self) -> None:
        """Finish what is queued, then stop; called after the server has stopped taking requests."""
        while self._queue:
            await asyncio.sleep(0.005)
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self._executor.shutdown(wait=True)

    def expected_wait(self) -> float:
        """Seconds a request arriving now would wait for its batch: the running batch's rest, then the queue."""
        wait = self._rate.seconds_for(self._queued_rows, self.config.batch_rows)
        if self._running:
            rows, started = self._running
            wait += max(0.0, self._rate.seconds_for(rows, rows) - (time.perf_counter() - started))
        return wait

    async def submit(self, prepared: Prepared) -> tuple[dict[str, np.ndarray], Timing]:
        self.admit(len(prepared.rows))
        pending = _Pending(prepared, asyncio.get_running_loop().create_future())
        self._queue.append(pending)
        self._queued_rows += pending.rows
        self._arrived.set()
        try:
            return await pending.future
        except asyncio.CancelledError:  # the handler was cancelled: its client has gone
            if self._leave(pending):
                self._count_shed("dropped", "client_gone")
            raise

    def admit(self, rows: int) -> None:
        """Refuse at once, with 503 and Retry-After, a request the queue has no room or no time for.

        ``submit`` asks first; the app may ask earlier too, before it reads and tokenises the body.
        """
        name = self.model.name
        if self._queued_rows and self._queued_rows + rows > self.config.max_queue_rows:
            self._count_shed("rejected", "queue_full")
            raise Overloaded(
                f"model '{name}' queue is full ({self._queued_rows} rows waiting); retry shortly",
                headers={"Retry-After": "1"},
            )
        limit = self._limit_s
        if limit and (wait := self.expected_wait()) > limit:
            self._count_shed("rejected", "expected_wait")
            raise Overloaded(
                f"model '{name}' is overloaded: the expected queue wait is {wait * 1000:.0f} ms, over its "
                f"queue time limit of {limit * 1000:g} ms; retry shortly",
                headers={"Retry-After": str(max(1, math.ceil(wait - limit)))},
            )

    def _leave(self, pending: _Pending) -> bool:
        """Take ``pending`` out of the queue; False when it is not there (batched, or already removed)."""
        for index, queued in enumerate(self._queue):
            if queued is pending:
                del self._queue[index]
                self._queued_rows -= pending.rows
                return True
        return False

    async def _run(self) -> None:
        delay = self.config.max_queue_delay_ms / 1000 if self.config.enabled else 0.0
        while True:
            if not self._queue:
                self._arrived.clear()
                await self._arrived.wait()
                continue  # what arrived may have left again
            deadline = self._queue[0].enqueued + delay
            while (
                self._queue
                and self._queued_rows < self.config.batch_rows
                and (left := deadline - time.perf_counter()) > 0
            ):
                self._arrived.clear()
                try:
                    await asyncio.wait_for(self._arrived.wait(), left)
                except TimeoutError:
                    break
            formed = time.perf_counter()  # the queue wait ends here: checked against the limit, and reported
            self._shed(formed)
            if self._queue:
                await self._run_batch(self._take_batch(), formed)

    def _shed(self, now: float) -> None:
        """Before a batch is formed: drop what nobody waits for, answer 503 to what waited too long.

        A cancelled future whose handler has not yet run its ``except`` is still queued here; this
        takes it out, and the handler's own ``_leave`` then finds nothing (so it is counted once).
        """
        limit = self._limit_s
        kept: list[_Pending] = []
        for pending in self._queue:
            waited = now - pending.enqueued
            if pending.future.done():
                self._count_shed("dropped", "client_gone")
            elif limit and waited > limit:
                self._count_shed("rejected", "queue_timeout")
                pending.future.set_exception(
                    Overloaded(
                        f"model '{self.model.name}' is overloaded: the request waited {waited * 1000:.0f} ms in "
                        f"the queue, over its queue time limit of {limit * 1000:g} ms, and was not run; "
                        "retry shortly",
                        headers={"Retry-After": "1"},
                    )
                )
            else:
                kept.append(pending)
                continue
            self._queued_rows -= pending.rows
        self._queue = kept

    def _take_batch(self) -> list[_Pending]:
        limit = self.config.batch_rows
        oldest, rest = self._queue[0], self._queue[1:]
        if self.config.group_by_length:
            rest = sorted(rest, key=lambda p: abs(p.prepared.length - oldest.prepared.length))
        batch, rows, longest = [oldest], oldest.rows, oldest.prepared.length
        for pending in rest:
            if rows + pending.rows <= limit and self._fits(rows, longest, pending):
                batch.append(pending)
                rows += pending.rows
                longest = max(longest, pending.prepared.length)
            if rows >= limit:
                break
        chosen = set(map(id, batch))
        self._queue = [p for p in self._queue if id(p) not in chosen]
        self._queued_rows -= rows
        return batch

    def _fits(self, rows: int, longest: int, pending: _Pending) -> bool:
        """Whether ``pending`` pads the batch (and itself) by no more than the padding budget, in tokens."""
        budget = self.config.max_padding_tokens
        if not self.config.group_by_length or budget < 0:
            return True
        length = pending.prepared.length
        added = rows * max(0, length - longest) + pending.rows * max(0, longest - length)
        return added <= budget

    async def _run_batch(self, batch: list[_Pending], formed: float) -> None:
        rows = [row for pending in batch for row in pending.prepared.rows]
        started = time.perf_counter()
        self._running = (len(rows), started)
        try:
            outputs = await asyncio.get_running_loop().run_in_executor(self._executor, self.model.infer, rows)
        except Exception as exc:  # an ORT failure fails this batch's requests, not the server
            for pending in batch:
                if not pending.future.done():
                    pending.future.set_exception(exc)
            return
        finally:
            self._running = None
        infer_s = time.perf_counter() - started
        self._rate.observe(len(rows), infer_s)
        if self._observe:
            waits = tuple(formed - pending.enqueued for pending in batch)
            self._observe(len(rows), waits, infer_s, padding_efficiency(rows))
        offset = 0
        for pending in batch:
            n = pending.rows
            sliced = {name: array[offset : offset + n] for name, array in outputs.items()}
            offset += n
            timing = Timing((formed - pending.enqueued) * 1000, infer_s * 1000, len(rows))
            if not pending.future.done():  # the client may have gone away while its batch ran
                pending.future.set_result((sliced, timing))
