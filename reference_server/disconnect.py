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
    disconnect. If this handler is itself cancelled (a server that cancels on disconnect, or
    shutdown), ``work`` is cancelled with it.
    """
    task = asyncio.ensure_future(work)
    gone = asyncio.ensure_future(_disconnected(receive))
    try:
        await asyncio.wait((task, gone), return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
        if not task.done():
            task.cancel()
    if task.done() and not task.cancelled():
        return task.result()
    await asyncio.gather(task, return_exceptions=True)  # let it leave the queue before answering
    raise ClientGone("the client disconnected before its answer was ready")


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
