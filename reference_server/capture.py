"""Capture the server's incoming traffic to a JSONL file, one request per line, for ``loadtest replay``.

Three pieces, one job each:

- ``CaptureMiddleware``, pure ASGI: it copies the method, path, headers and body chunks as they
  pass to the app (the app reads them exactly as before), and the response status as it goes out.
- ``Capture``: holds finished requests in memory and appends them to the file from one background
  task, every 0.25 s or as soon as 1 MB is pending, and once more at shutdown. Encoding and writing
  run on a worker thread, so the event loop never waits for the disk.
- ``encode_line`` (pure): one request as one JSON line.

Each line::

    {"timestamp": "2026-11-30T14:03:07.123456Z", "method": "POST", "path": "/v2/models/minilm/infer",
     "headers": {"content-type": "application/json"}, "body": {...}, "status": 200, "duration_ms": 12.3}

A body that is not JSON is written as ``body_base64`` (its exact bytes); an empty body writes
neither key. A body the app refused before reading it (an unknown model, a wrong content type) is
still read in full before the answer goes out; one over ``--max-body-bytes`` is kept only as far
as it was read, and its line says ``"body_truncated": true``. Health checks, ``GET /metrics`` and
the statistics (``GET /v2/models/.../stats``) are not recorded. Lines are in order of completion,
sorted by arrival within each write, so requests that overlap a write can be slightly out of
arrival order. Headers are written as
received, credentials included: so a new capture file is created with mode 0600 (owner only, set
at creation, whatever the umask). A file that already exists is appended to and keeps its mode,
which its owner chose; ``serve`` warns when that mode lets others read it.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import logging
import os
import stat
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO, NamedTuple

import orjson

from .errors import ReferenceServerError

FLUSH_INTERVAL_S = 0.25
FLUSH_BYTES = 1024 * 1024
SAMPLE_SEED = b"reference-server-capture"

log = logging.getLogger(__name__)


class CaptureError(ReferenceServerError):
    """The capture file cannot be opened; the message names the path."""


class RecordedExchange(NamedTuple):  # a NamedTuple: half the cost of a frozen dataclass per request
    """One finished request and its response status, as the middleware saw them; encoded later, off the event loop.

    Not ``loadtest.replay.readers.CapturedRequest``, which is a request read back from a capture file.
    """

    arrived: float  # epoch seconds
    method: str
    path: str  # with its query string
    headers: tuple[tuple[bytes, bytes], ...]
    body: bytes
    status: int | None  # None: the app sent no response
    duration_ms: float
    body_complete: bool  # False: the app stopped reading before the end (a 413, say)


def rfc3339(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="microseconds").removesuffix("+00:00") + "Z"


def header_map(headers: tuple[tuple[bytes, bytes], ...]) -> dict[str, str]:
    """Lower-case name to value; repeated headers joined with ", " in the order received."""
    joined: dict[str, str] = {}
    for raw_name, raw_value in headers:
        name, value = raw_name.decode("latin-1").lower(), raw_value.decode("latin-1")
        joined[name] = f"{joined[name]}, {value}" if name in joined else value
    return joined


def encode_line(exchange: RecordedExchange) -> bytes:
    doc: dict[str, object] = {
        "timestamp": rfc3339(exchange.arrived),
        "method": exchange.method,
        "path": exchange.path,
        "headers": header_map(exchange.headers),
    }
    if exchange.body:
        try:
            doc["body"] = orjson.loads(exchange.body)
        except orjson.JSONDecodeError:
            doc["body_base64"] = base64.b64encode(exchange.body).decode("ascii")
    if not exchange.body_complete:
        doc["body_truncated"] = True
    doc["status"] = exchange.status
    doc["duration_ms"] = round(exchange.duration_ms, 3)
    return orjson.dumps(doc) + b"\n"


def sampled(index: int, fraction: float) -> bool:
    """Whether request number ``index`` is in a ``fraction`` sample: the same answer every run."""
    if fraction >= 1.0:
        return True
    digest = hashlib.blake2b(index.to_bytes(8, "little"), digest_size=8, key=SAMPLE_SEED).digest()
    return int.from_bytes(digest, "little") < fraction * 2**64


def recorded(method: str, path: str) -> bool:
    """Everything but health checks and metrics and statistics scrapes, including what the app will refuse."""
    scrape = method == "GET" and (path == "/metrics" or (path.startswith("/v2/models/") and path.endswith("/stats")))
    return not (path.startswith("/v2/health/") or scrape)


def open_capture_file(path: Path) -> BinaryIO:
    """Open for appending; a new file is created 0600 (the mode is given to open(2), so it holds from creation)."""
    if not path.parent.is_dir():
        raise CaptureError(f"--capture {path}: directory {path.parent} does not exist")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise CaptureError(f"--capture {path}: cannot open for appending: {exc.strerror}") from None
    return os.fdopen(fd, "ab")


def loose_mode(path: Path) -> int | None:
    """The file's permission bits if anyone but its owner may read or write it, else None."""
    mode = stat.S_IMODE(path.stat().st_mode)
    return mode if mode & 0o077 else None


class Capture:
    """Pending requests and the task that appends them to the file."""

    def __init__(self, path: Path, sample: float = 1.0, max_body_bytes: int = 8 * 1024 * 1024) -> None:
        if not 0.0 < sample <= 1.0:
            raise CaptureError(f"the capture sample must be in (0, 1], got {sample}")
        self.path, self.sample, self.max_body_bytes = path, sample, max_body_bytes
        self._file = open_capture_file(path)
        self._pending: list[RecordedExchange] = []
        self._pending_bytes = 0
        self._wake = asyncio.Event()  # set when FLUSH_BYTES are pending, or to stop
        self._stopping = False
        self._seen = 0
        self._flusher: asyncio.Task | None = None
        self._write_lock = asyncio.Lock()

    def take(self) -> bool:
        """Count one recordable request; True when it is in the sample."""
        index, self._seen = self._seen, self._seen + 1
        return sampled(index, self.sample)

    def add(self, request: RecordedExchange) -> None:
        self._pending.append(request)
        self._pending_bytes += len(request.body) + 64 * len(request.headers) + 128
        if self._pending_bytes >= FLUSH_BYTES:
            self._wake.set()

    def start(self) -> None:
        self._flusher = asyncio.create_task(self._flush_periodically(), name="capture-flush")

    async def close(self) -> None:
        """Stop the periodic task (after its current write), write what is pending, close the file."""
        self._stopping = True
        self._wake.set()
        if self._flusher is not None:
            await self._flusher
        await self.flush()
        self._file.close()

    async def flush(self) -> None:
        async with self._write_lock:  # one write at a time keeps the lines in order
            batch, self._pending, self._pending_bytes = self._pending, [], 0
            self._wake.clear()
            if batch:
                await asyncio.to_thread(self._write, batch)

    async def _flush_periodically(self) -> None:
        while not self._stopping:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), FLUSH_INTERVAL_S)
            await self.flush()

    def _write(self, batch: list[RecordedExchange]) -> None:
        batch.sort(key=lambda request: request.arrived)
        try:
            self._file.write(b"".join(encode_line(request) for request in batch))
            self._file.flush()
        except OSError as exc:  # a full disk loses capture lines, never requests
            log.warning("capture: could not write %d request(s) to %s: %s", len(batch), self.path, exc)


class CaptureMiddleware:
    """Pure ASGI: records each sampled HTTP request into ``capture`` once its response is sent.

    The app reads the body as before. When it answers without reading all of it (a 404, 415 or 413
    refused before the body), the rest is read just before the response goes out, up to
    ``capture.max_body_bytes``, so the capture keeps the body a malformed request carried.
    """

    def __init__(self, app, capture: Capture) -> None:
        self.app, self.capture = app, capture

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or not recorded(scope["method"], scope["path"]) or not self.capture.take():
            await self.app(scope, receive, send)
            return
        arrived, started = time.time(), time.perf_counter()
        body = _Body(scope["headers"], self.capture.max_body_bytes)
        status: int | None = None

        async def receive_copy():
            message = await receive()
            body.seen(message)
            return message

        async def send_copy(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                await body.read_rest(receive)
            await send(message)

        try:
            await self.app(scope, receive_copy, send_copy)
        except Exception:
            status = status or 500  # Starlette's outermost error middleware answers it with a 500
            raise
        finally:
            body.settle()
            self.capture.add(
                RecordedExchange(
                    arrived=arrived,
                    method=scope["method"],
                    path=_path_with_query(scope),
                    headers=tuple(scope["headers"]),
                    body=b"".join(body.chunks),
                    status=status,
                    duration_ms=(time.perf_counter() - started) * 1000,
                    body_complete=body.complete,
                )
            )


class _Body:
    """The request body's chunks as they pass, and whether the last one has been seen."""

    def __init__(self, headers, limit: int) -> None:
        self.headers, self.limit = headers, limit
        self.chunks: list[bytes] = []
        self.size = 0
        self.read_any = False  # the app asked for the body at least once
        self.complete = False  # the last chunk arrived
        self.ended = False  # the last chunk arrived, or the client left

    def seen(self, message) -> None:
        if message["type"] == "http.request":
            chunk = message.get("body", b"")
            self.chunks.append(chunk)
            self.size += len(chunk)
            self.read_any = True
            self.complete = self.ended = not message.get("more_body", False)
        elif message["type"] == "http.disconnect":
            self.ended = True

    def settle(self) -> None:
        """A body the app never asked for is complete when the request declares none (RFC 9112 6.3)."""
        if not self.read_any and not self.ended and _declares_no_body(self.headers):
            self.complete = self.ended = True

    async def read_rest(self, receive) -> None:
        """Read what the app left unread, up to the limit; never when the client awaits 100 Continue."""
        self.settle()
        if self.ended or any(name.lower() == b"expect" for name, _ in self.headers):
            return
        while not self.ended and self.size <= self.limit:
            self.seen(await receive())


def _declares_no_body(headers) -> bool:
    names = {name.lower(): value for name, value in headers}
    return names.get(b"content-length", b"0").strip() == b"0" and b"transfer-encoding" not in names


def _path_with_query(scope) -> str:
    raw = scope.get("raw_path")
    path = raw.split(b"?", 1)[0].decode("latin-1") if raw else scope["path"]
    query = scope.get("query_string", b"")
    return f"{path}?{query.decode('latin-1')}" if query else path


__all__ = [
    "Capture",
    "CaptureError",
    "CaptureMiddleware",
    "RecordedExchange",
    "encode_line",
    "loose_mode",
    "sampled",
]
