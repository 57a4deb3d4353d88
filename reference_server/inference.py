"""One inference request's way from parsed tensors to outputs, whatever carried it: REST, gRPC or OpenAI's route.

The verdicts are made here once, so that every protocol gives the same ones for the same request:
the requested outputs exist; the rows are within ``--max-rows``, checked on the declared shape
before any work per row; the queue has room and time for them (``Batcher.admit``), checked before
the text is tokenised, so a refusal under overload costs little; then the model prepares its rows
(on a worker thread for a big body) and the batcher runs them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import numpy as np

from .batcher import Timing
from .config import ServerConfig
from .errors import BadRequest
from .models import Prepared, ServedModel
from .protocol import InferRequest
from .state import ServerState

T = TypeVar("T")
Outputs = tuple[dict[str, np.ndarray], Timing]
# How a protocol waits for the queued work: REST races it against the client's disconnect
# (``disconnect.py``); gRPC awaits it as it is, since grpc.aio cancels a handler whose client has gone.
Guard = Callable[[Coroutine[Any, Any, Outputs]], Awaitable[Outputs]]

# A JSON body may hold this many values a row (--max-rows) before it is refused unparsed: a real
# request holds 1 (text) or 8 (fraud features); 128 rows give 131,072, parsed in about 15 ms. The
# same bound holds the typed protobuf contents of a gRPC request, converted one element at a time.
VALUES_PER_ROW = 1024
# Bodies above this are prepared on a worker thread; below it, tokenising takes at most about 10 ms
# (0.8 us a character for the slowest text measured), less than is worth a thread hop per request.
OFFLOAD_BYTES = 16 * 1024


def server_timing(timing: Timing) -> str:
    """REST's ``Server-Timing`` header and gRPC's ``server-timing`` metadata: one format for both."""
    return f"queue;dur={timing.queue_ms:.3f}, infer;dur={timing.infer_ms:.3f}, batch;desc={timing.batch_rows}"


def max_values(config: ServerConfig) -> int:
    return config.max_rows * VALUES_PER_ROW


def check_row_limit(config: ServerConfig, rows: int) -> None:
    """Called on the rows a request declares, before any work per row."""
    if rows > config.max_rows:
        raise BadRequest(f"the request has {rows} rows; this server accepts at most {config.max_rows} per request")


async def infer(
    state: ServerState, model: ServedModel, request: InferRequest, body_bytes: int, guard: Guard | None = None
) -> Outputs:
    """The outputs of an OIP infer request (REST or gRPC) and where its time went."""
    known = {spec.name for spec in model.outputs}
    unknown = [name for name in request.requested_outputs if name not in known]
    if unknown:
        raise BadRequest(f"requested output(s) {unknown} do not exist; outputs: {sorted(known)}")
    rows = max(tensor.rows for tensor in request.inputs.values())
    check_row_limit(state.config, rows)
    state.batchers[model.name].admit(rows)
    prepared = await prepare(body_bytes, model.prepare, request.inputs)
    return await run(state, model, prepared, guard)


async def prepare(body_bytes: int, prepare: Callable[[T], Prepared], argument: T) -> Prepared:
    """``prepare(argument)``, on a worker thread when the body is big enough for that to take a while."""
    if body_bytes > OFFLOAD_BYTES:
        prepared = await asyncio.to_thread(prepare, argument)
    else:
        prepared = prepare(argument)
    if not prepared.rows:
        raise BadRequest("the request has no rows to infer")
    return prepared


async def run(state: ServerState, model: ServedModel, prepared: Prepared, guard: Guard | None = None) -> Outputs:
    """Queue the prepared rows for their batch and wait for it, through ``guard`` when given."""
    check_row_limit(state.config, len(prepared.rows))
    work = _queued(state, model, prepared)
    return await (guard(work) if guard else work)


async def _queued(state: ServerState, model: ServedModel, prepared: Prepared) -> Outputs:
    if state.config.inject_delay_ms:
        await asyncio.sleep(state.config.inject_delay_ms / 1000)
    return await state.batchers[model.name].submit(prepared)


__all__ = [
    "Guard",
    "OFFLOAD_BYTES",
    "VALUES_PER_ROW",
    "check_row_limit",
    "infer",
    "max_values",
    "prepare",
    "run",
    "server_timing",
]
