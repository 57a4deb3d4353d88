"""Stop waiting for an answer once the client has gone, so its work leaves the batch queue uncomputed.

uvicorn does not cancel a handler whose client disconnects: it only answers the handler's next
``receive()`` with ``http.disconnect``. A handler awaiting its batch would wait on, and the batcher
would compute an answer nobody reads while the requests behind it wait (500 abandoned long texts
held the next request up for 36 s). So, once the body is read, the handler races its work against
``receive()``; when the client goes first the work is cancelled, which takes the request out of the
queue (``Batcher.submit``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from .errors import ClientGone

T = TypeVar("T")
Receive = Callable[[], Awaitable[dict[str, Any]]]


async def unless_client_leaves(receive: Receive, work: Coroutine[Any, Any, T]) -> T:
    """``work``'s result, or ``ClientGone`` (with ``work`` cancelled) if the client disconnects first.

    Call it only after the request body has been read: ``receive`` then yields nothing but the
    disconnect. ``work`` runs in the handler's own task, and one watcher task cancels that task when
    the client goes: one task a request fewer than racing two, on the core the model runs on. If
    this handler is itself cancelled (a server that cancels on disconnect, or shutdown), ``work``
    is cancelled with it.
    """
    handler = asyncio.current_task()
    assert handler is not None
    answered = left = False

    def client_left(watcher: asyncio.Future) -> None:
        nonlocal left
        if not answered and not watcher.cancelled() and watcher.exception() is None:
            left = True
            handler.cancel()

    gone = asyncio.ensure_future(disconnected(receive))
    gone.add_done_callback(client_left)
    try:
        return await work  # cancelled, it leaves the batch queue before this answers
    except asyncio.CancelledError:
        if left:  # our own cancel, not the server's: answer as a client that has gone
            handler.uncancel()
            raise ClientGone("the client disconnected before its answer was ready") from None
        raise
    finally:
        answered = True
        gone.cancel()


async def disconnected(receive: Receive) -> None:
    """Returns once the client has gone (the body read, ``receive`` yields nothing else)."""
    while (await receive())["type"] != "http.disconnect":
        pass
