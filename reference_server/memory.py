"""Give memory back to the operating system after big requests: glibc keeps what was freed.

A burst of four 8 MiB requests left the server about 100 MB bigger for good: the bodies, their
parsed JSON and the tokenizer's work were freed, but into glibc's per-thread heaps, which return
memory to the system only from their top. ``malloc_trim`` returns every free page. It is called
at most once a second, on a worker thread, and only after a request over ``BIG_BODY_BYTES``
(ORT's own arena is shrunk after big batches in ``models.py``). Elsewhere than glibc it does nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
from collections.abc import Callable

BIG_BODY_BYTES = 1024 * 1024
TRIM_INTERVAL_S = 1.0


def _malloc_trim() -> Callable[[], object] | None:
    try:
        trim = ctypes.CDLL(None).malloc_trim  # the C library this process runs on; the call releases the GIL
    except (OSError, AttributeError):  # not glibc
        return None
    return lambda: trim(0)


class MemoryReleaser:
    """Big requests noted as they end; a task that trims the heap within a second of them."""

    def __init__(self) -> None:
        self._trim = _malloc_trim()
        self._pending = False
        self._task: asyncio.Task | None = None

    def note(self, body_bytes: int) -> None:
        if body_bytes > BIG_BODY_BYTES:
            self._pending = True

    def start(self) -> None:
        if self._trim is not None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="memory-release")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        assert self._trim is not None
        while True:
            await asyncio.sleep(TRIM_INTERVAL_S)
            if self._pending:
                self._pending = False
                await asyncio.to_thread(self._trim)


class ReleaseMemoryMiddleware:
    """Pure ASGI: counts each request's body bytes as the app reads them, and notes the request when it ends."""

    def __init__(self, app, releaser: MemoryReleaser) -> None:
        self.app, self.releaser = app, releaser

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        size = 0

        async def counting_receive():
            nonlocal size
            message = await receive()
            size += len(message.get("body", b""))
            return message

        try:
            await self.app(scope, counting_receive, send)
        finally:
            self.releaser.note(size)


__all__ = ["MemoryReleaser", "ReleaseMemoryMiddleware"]
