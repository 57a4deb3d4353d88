"""Text generation with iteration-level (continuous) batching, as vLLM and TGI schedule it.

One worker thread runs iterations. Each iteration:

1. drops the sequences whose client has gone (their slots free at once);
2. prefills: a prompt part-way through a chunked prefill gets its next chunk, then waiting requests
   are admitted into free slots, oldest first, and prefilled together as one right-padded batch. The
   padded tokens of one iteration's prefill are capped (``max_prefill_tokens``, vLLM's
   ``max_num_batched_tokens``) so the running streams are held up for one bounded prefill at most;
   a prompt longer than the cap is prefilled a cap's worth per iteration in the staging slot
   (``kv_cache.py``) while the others keep decoding. Each prefilled prompt gives its first token;
3. runs one decode step for every running sequence together: one token each.

The running sequences live in cache slots ``[:n]``; when one finishes, the last takes its slot, so
each decode step hands the graph ``cache[:n]`` without a copy (``kv_cache.py``, which also keeps
the width the graph is handed to what the longest sequence needs). Every token is handed to its request
with the ``time.perf_counter_ns()`` at which it was chosen (CLOCK_MONOTONIC on Linux: comparable
with a client's on the same host), all of one iteration's in one ``loop.call_soon_threadsafe``.

``Scheduler`` is the iteration, single-threaded and deterministic (the tests step it by hand);
``plan_admission`` and ``compaction_moves`` are its pure decisions. ``Generator`` runs a scheduler
on its thread and is what the event loop talks to: submit, cancel, stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import sys
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

import numpy as np

from .batcher import yield_to_the_event_loop
from .decoder import MASKED, DecoderConfig, attention_bias
from .errors import BadRequest, Overloaded
from .kv_cache import KVCache
from .sampling import SamplingParams, finish_reason, sample, suppress


@dataclass(frozen=True)
class GenerationConfig:
    max_streams: int = 8  # sequences decoded together: KV cache slots
    max_context: int = 1024  # prompt + completion tokens a sequence may hold: each slot's capacity
    max_waiting: int = 256  # requests queued for a slot; beyond it: 503
    max_prefill_tokens: int = 256  # padded prompt tokens prefilled per iteration

    def __post_init__(self) -> None:
        for name in ("max_streams", "max_context", "max_waiting", "max_prefill_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")


class Token(NamedTuple):
    """One token handed to its request; ``finish`` is set on the last: stop, length, error or abort."""

    id: int
    time_ns: int
    finish: str | None


@dataclass(eq=False)  # by identity: two requests with the same prompt are two requests
class GenerationRequest:
    prompt: Sequence[int]
    params: SamplingParams
    deliver: Callable[[Token], None] = lambda token: None  # called on the event loop (Generator)
    cancelled: bool = False  # set by the event loop when the client goes; read by the worker


@dataclass(eq=False)
class _Sequence:
    request: GenerationRequest
    length: int = 0  # positions in the cache
    last: int = -1  # the last token chosen, not yet in the cache
    generated: int = 0
    rng: np.random.Generator | None = field(default=None)

    @property
    def prompt(self) -> Sequence[int]:
        return self.request.prompt

    @property
    def params(self) -> SamplingParams:
        return self.request.params


Event = tuple[GenerationRequest, Token]


class DecoderLike(Protocol):
    config: DecoderConfig

    def run(self, input_ids, positions, attention_bias, last_index, past_keys, past_values): ...

    def empty_cache(self, batch: int) -> tuple[list[np.ndarray], list[np.ndarray]]: ...


class IterationObserver(Protocol):
    def prefill(self, rows: int, tokens: int, seconds: float) -> None: ...

    def decode(self, rows: int, seconds: float) -> None: ...


class _Unobserved:
    def prefill(self, rows: int, tokens: int, seconds: float) -> None:
        pass

    def decode(self, rows: int, seconds: float) -> None:
        pass


def plan_admission(prompt_lengths: Sequence[int], free_slots: int, budget: int, may_chunk: bool) -> tuple[int, bool]:
    """Of the waiting prompts (oldest first), how many to prefill whole this iteration, and whether
    instead to begin the first in chunks.

    Whole prompts join while the right-padded batch (rows times the longest) stays within
    ``budget``; order is kept, so a long prompt at the head is not overtaken. One that does not fit
    even alone is begun in chunks when no other chunked prefill is under way.
    """
    count, longest = 0, 0
    for length in prompt_lengths[: max(free_slots, 0)]:
        wider = max(longest, length)
        if (count + 1) * wider > budget:
            break
        count, longest = count + 1, wider
    chunk = count == 0 and free_slots > 0 and budget > 0 and may_chunk and len(prompt_lengths) > 0
    return count, chunk


def compaction_moves(count: int, freed: Sequence[int]) -> list[tuple[int, int]]:
    """The (source, target) slot moves that keep the running slots compact once ``freed`` end.

    Of ``count`` slots, ``count - len(freed)`` stay: each freed slot below that line takes one of
    the sequences that still run above it, so each survivor moves at most once.
    """
    ended = set(freed)
    kept = count - len(ended)
    holes = sorted(slot for slot in ended if slot < kept)
    above = [slot for slot in range(kept, count) if slot not in ended]
    return list(zip(above, holes, strict=True))


def decode_bias(lengths: np.ndarray, width: int) -> np.ndarray:
    """[n, 1, 1, width + 1]: each sequence attends to its own filled positions of the cache and its new token."""
    bias = np.zeros((len(lengths), 1, 1, width + 1), np.float32)
    bias[:, 0, 0, :width][np.arange(width)[None, :] >= lengths[:, None]] = MASKED
    return bias


class Scheduler:
    """The iteration: admit and prefill, then decode every running sequence once."""

    def __init__(self, decoder: DecoderLike, config: GenerationConfig, observer: IterationObserver | None = None):
        self.decoder, self.config = decoder, config
        c = decoder.config
        self.cache = KVCache(c.num_layers, c.num_kv_heads, c.head_dim, config.max_streams, config.max_context)
        self.eos = frozenset(c.eos_token_ids)
        self.pad = c.pad_token_id
        self.observer = observer or _Unobserved()
        self.waiting: deque[GenerationRequest] = deque()
        self.running: list[_Sequence] = []  # index = cache slot
        self.partial: _Sequence | None = None  # being prefilled in chunks, in the staging slot
        self._admitting: list[GenerationRequest] = []  # taken from the queue by the prefill under way

    @property
    def idle(self) -> bool:
        return not (self.waiting or self.running or self.partial)

    def check(self, request: GenerationRequest) -> None:
        """Refuse a request that could never run: no prompt, or more tokens than a slot holds."""
        prompt, wanted = len(request.prompt), request.params.max_tokens
        if prompt < 1:
            raise BadRequest("the prompt is empty: it must hold at least one token")
        if wanted < 1:
            raise BadRequest(f"max_tokens must be at least 1, got {wanted}")
        if prompt + wanted > self.config.max_context:
            raise BadRequest(
                f"this model's maximum context length is {self.config.max_context} tokens; the request asks for "
                f"{prompt + wanted} ({prompt} in the prompt, {wanted} for the completion)"
            )

    def step(self) -> list[Event]:
        """One iteration; the tokens it produced, each with its request."""
        events: list[Event] = []
        self._drop_cancelled()
        budget = self.config.max_prefill_tokens
        if self.partial is not None:
            budget -= self._prefill_chunk(budget, events)
        free = self.config.max_streams - len(self.running) - (self.partial is not None)
        lengths = [len(r.prompt) for r in itertools.islice(self.waiting, max(free, 0))]
        whole, chunk = plan_admission(lengths, free, budget, self.partial is None)
        if whole:
            self._prefill([self.waiting.popleft() for _ in range(whole)], events)
        elif chunk:
            request = self.waiting.popleft()
            self.partial = _Sequence(request, rng=request.params.rng())
            self._prefill_chunk(budget, events)
        if self.running:
            self._decode(events)
        return events

    def fail(self, reason: str) -> list[Event]:
        """End every sequence, running or waiting, with ``reason``; the cache starts empty again."""
        now = time.perf_counter_ns()
        requests = [s.request for s in self.running] + ([self.partial.request] if self.partial else [])
        requests += self._admitting + list(self.waiting)
        self.running, self.partial, self._admitting = [], None, []
        self.waiting.clear()
        return [(r, Token(-1, now, reason)) for r in requests if not r.cancelled]

    def _drop_cancelled(self) -> None:
        if any(r.cancelled for r in self.waiting):
            self.waiting = deque(r for r in self.waiting if not r.cancelled)
        if self.partial is not None and self.partial.request.cancelled:
            self.partial = None
        self._release([slot for slot, s in enumerate(self.running) if s.request.cancelled])

    def _release(self, slots: Sequence[int]) -> None:
        """Free ``slots``, moving the last running sequences into them so ``running`` stays compact."""
        if not slots:
            return
        moves = compaction_moves(len(self.running), slots)
        for source, target in moves:
            self.cache.move(source, target, self.running[source].length)
            self.running[target] = self.running[source]
        del self.running[len(self.running) - len(set(slots)) :]

    def _fit(self, incoming: int) -> None:
        """Size the cache's width for what it holds (and the next decode step's position) and ``incoming``."""
        needed = max([s.length + 1 for s in self.running] + [incoming])
        in_use = list(range(len(self.running)))
        if self.partial is not None:
            needed = max(needed, self.partial.length)
            in_use.append(self.cache.staging)
        self.cache.fit(needed, in_use)

    def _prefill(self, requests: list[GenerationRequest], events: list[Event]) -> None:
        """Whole prompts as one right-padded batch, each into the next free slot."""
        started = time.perf_counter()
        self._admitting = requests
        lengths = [len(r.prompt) for r in requests]
        width = max(lengths)
        ids = np.full((len(requests), width), self.pad, np.int64)
        for row, request in enumerate(requests):
            ids[row, : lengths[row]] = request.prompt
        positions = np.broadcast_to(np.arange(width, dtype=np.int64), ids.shape).copy()
        bias = attention_bias([0] * len(requests), lengths, 0, width)
        last = np.array(lengths, np.int64) - 1
        keys, values = self.decoder.empty_cache(len(requests))
        self._fit(width)
        logits, new_keys, new_values = self.decoder.run(ids, positions, bias, last, keys, values)
        sequences = []
        for row, request in enumerate(requests):
            slot = len(self.running)
            self.cache.write(slot, 0, row, lengths[row], new_keys, new_values)
            sequence = _Sequence(request, length=lengths[row], rng=request.params.rng())
            self.running.append(sequence)
            sequences.append(sequence)
        self._admitting = []
        first = len(self.running) - len(sequences)
        self._emit(logits, sequences, first, events)
        self.observer.prefill(len(requests), ids.size, time.perf_counter() - started)

    def _prefill_chunk(self, budget: int, events: list[Event]) -> int:
        """The chunked prompt's next chunk of at most ``budget`` tokens; the tokens it took."""
        sequence = self.partial
        assert sequence is not None
        start = sequence.length
        size = min(len(sequence.prompt) - start, budget)
        if size <= 0:
            return 0
        started = time.perf_counter()
        self._fit(start + size)
        staging = self.cache.staging
        keys, values = self.cache.view(staging, 1)
        ids = np.asarray(sequence.prompt[start : start + size], np.int64)[None, :]
        positions = np.arange(start, start + size, dtype=np.int64)[None, :]
        bias = attention_bias([start], [size], self.cache.width, size)
        logits, new_keys, new_values = self.decoder.run(
            ids, positions, bias, np.array([size - 1], np.int64), keys, values
        )
        self.cache.write(staging, start, 0, size, new_keys, new_values)
        sequence.length += size
        if sequence.length == len(sequence.prompt):  # the whole prompt is in: it joins the running ones
            slot = len(self.running)
            self.cache.move(staging, slot, sequence.length)
            self.running.append(sequence)
            self.partial = None
            self._emit(logits, [sequence], slot, events)
        self.observer.prefill(1, size, time.perf_counter() - started)
        return size

    def _decode(self, events: list[Event]) -> None:
        started = time.perf_counter()
        count = len(self.running)
        self._fit(0)
        lengths = np.array([s.length for s in self.running], np.int64)
        ids = np.array([[s.last] for s in self.running], np.int64)
        keys, values = self.cache.view(0, count)
        positions, bias = lengths[:, None].copy(), decode_bias(lengths, self.cache.width)
        last = np.zeros(count, np.int64)
        logits, new_keys, new_values = self.decoder.run(ids, positions, bias, last, keys, values)
        self.cache.append(count, lengths, new_keys, new_values)
        for sequence in self.running:
            sequence.length += 1
        self._emit(logits, list(self.running), 0, events)
        self.observer.decode(count, time.perf_counter() - started)

    def _emit(self, logits: np.ndarray, sequences: list[_Sequence], first_slot: int, events: list[Event]) -> None:
        """Choose each sequence's next token from its row of ``logits``; free the slots of those that end.

        ``sequences`` are the running ones in slots ``first_slot`` on, in order.
        """
        for row, sequence in enumerate(sequences):
            if sequence.generated < sequence.params.min_tokens and not sequence.params.ignore_eos:
                suppress(logits[row], self.eos)
        greedy = np.argmax(logits, axis=1)
        now = time.perf_counter_ns()
        ended = []
        for row, sequence in enumerate(sequences):
            rng = sequence.rng
            token = int(greedy[row]) if rng is None else sample(logits[row], sequence.params, rng)
            sequence.last = token
            sequence.generated += 1
            finish = finish_reason(token, sequence.generated, sequence.params, self.eos)
            events.append((sequence.request, Token(token, now, finish)))
            if finish is not None:
                ended.append(first_slot + row)
        self._release(ended)


class Generator:
    """A scheduler on a worker thread: what the event loop submits requests to and cancels them through."""

    def __init__(self, decoder: DecoderLike, config: GenerationConfig, observer: IterationObserver | None = None):
        self.config = config
        self.scheduler = Scheduler(decoder, config, observer)
        self._wake = threading.Condition()
        self._incoming: list[GenerationRequest] = []
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def waiting(self) -> int:
        return len(self._incoming) + len(self.scheduler.waiting)

    @property
    def running(self) -> int:
        return len(self.scheduler.running) + (self.scheduler.partial is not None)

    def start(self) -> None:
        """Start the worker; tokens are delivered on the running event loop."""
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._work, name="generate", daemon=True)
        self._thread.start()

    def submit(self, request: GenerationRequest) -> None:
        """Queue ``request``: a ``BadRequest`` if it could never run, ``Overloaded`` if the queue is full."""
        self.scheduler.check(request)
        with self._wake:
            if self._stopping:
                raise Overloaded("the server is shutting down", {"Retry-After": "1"})
            if self.waiting >= self.config.max_waiting:
                raise Overloaded(
                    f"{self.waiting} requests are waiting for a stream slot, the most this server queues "
                    f"(--max-waiting {self.config.max_waiting}); retry later",
                    {"Retry-After": "1"},
                )
            self._incoming.append(request)
            self._wake.notify()

    def cancel(self, request: GenerationRequest) -> None:
        """The client has gone: its sequence frees its slot at the next iteration."""
        request.cancelled = True
        with self._wake:
            self._wake.notify()

    async def stop(self) -> None:
        """Stop after the current iteration; whatever is still running or waiting ends with ``abort``."""
        with self._wake:
            self._stopping = True
            self._wake.notify()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join)

    def _work(self) -> None:
        yield_to_the_event_loop()
        scheduler = self.scheduler
        while True:
            with self._wake:
                while not self._stopping and not self._incoming and scheduler.idle:
                    self._wake.wait()
                if self._stopping:
                    scheduler.waiting.extend(self._incoming)
                    self._incoming.clear()
                    break
                scheduler.waiting.extend(self._incoming)
                self._incoming.clear()
            try:
                events = scheduler.step()
            except Exception:  # a bug, not a request's fault: end what was running, keep serving
                traceback.print_exc(file=sys.stderr)
                events = scheduler.fail("error")
            if events:
                self._hand_over(events)
        self._hand_over(scheduler.fail("abort"))

    def _hand_over(self, events: list[Event]) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: nobody is left to read them
            loop.call_soon_threadsafe(_deliver, events)


def _deliver(events: list[Event]) -> None:
    for request, token in events:
        if not request.cancelled:
            request.deliver(token)


__all__ = [
    "Generator",
    "GenerationConfig",
    "GenerationRequest",
    "Scheduler",
    "Token",
    "compaction_moves",
    "decode_bias",
    "plan_admission",
]
