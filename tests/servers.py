"""Deliberately misbehaving HTTP servers for the load engine's tests, on free loopback ports.

Plain stdlib (``ThreadingHTTPServer``, HTTP/1.1 keep-alive), so their behaviour is exactly what
the test says: a periodic stall, a fixed delay, or nothing at all behind a port.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ANSWER = json.dumps({"outputs": [{"name": "y", "datatype": "FP32", "shape": [1], "data": [1.0]}]}).encode()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in two writes: no 40 ms delayed-ACK stall

    def log_message(self, *args) -> None:  # quiet
        pass

    def do_POST(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        seen = getattr(self.server, "seen", None)
        if seen is not None:
            seen.append((self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body))
        self.server.behave()  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(ANSWER)))
        self.end_headers()
        self.wfile.write(ANSWER)

    def do_GET(self) -> None:  # noqa: N802
        self.do_POST()


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, behave) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.behave = behave


@contextmanager
def _running(server: ThreadingHTTPServer) -> Iterator[str]:
    """Serve on a daemon thread for the ``with`` block; its URL."""
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)  # quick stop
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def serve(behave) -> Iterator[str]:
    with _running(_Server(behave)) as url:
        yield url


@contextmanager
def recording() -> Iterator[tuple[str, list]]:
    """A server that answers every request at once and keeps (method, path, headers, body) of each."""
    seen: list = []
    server = _Server(lambda: None)
    server.seen = seen  # type: ignore[attr-defined]
    with _running(server) as url:
        yield url, seen


@contextmanager
def redirecting(location: str) -> Iterator[tuple[str, list]]:
    """A server that answers its first POST (the preflight) and every second one after it at once, and the
    others with a 307 to ``location``; it keeps (method, path, headers, body) of each POST, as ``recording``."""
    seen: list = []
    answered = itertools.count()

    class Handler(_Handler):
        def do_POST(self) -> None:  # noqa: N802
            self.rfile.read(int(self.headers.get("content-length", 0)))
            seen.append((self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, b""))
            if next(answered) % 2 == 0:
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(ANSWER)))
                self.end_headers()
                self.wfile.write(ANSWER)
                return
            self.send_response(307)
            self.send_header("location", location)
            self.send_header("content-length", "0")
            self.end_headers()

        def do_GET(self) -> None:  # noqa: N802
            self.send_response(404)  # the sampler's /metrics: not counted, so the sends alternate exactly
            self.send_header("content-length", "0")
            self.end_headers()

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    with _running(server) as url:
        yield url, seen


def periodic_stall(period: float, stall: float):
    """A request arriving in the first ``stall`` seconds of each ``period`` waits until that window ends."""
    origin = time.monotonic()

    def behave() -> None:
        phase = (time.monotonic() - origin) % period
        if phase < stall:
            time.sleep(stall - phase)

    return behave


def fixed_delay(seconds: float):
    return lambda: time.sleep(seconds)


@contextmanager
def fragile(limit: int = 1024 * 1024) -> Iterator[str]:
    """An endpoint that breaks on messy traffic: a 500 for a body that is not JSON, a hang past ``limit``.

    It reads the declared body before deciding (past ``limit``, only the first ``limit`` bytes,
    then hangs for 30 s or until shutdown); any other body gets the OIP answer ``ANSWER``.
    """
    released = threading.Event()

    class Handler(_Handler):
        def do_POST(self) -> None:  # noqa: N802
            declared = int(self.headers.get("content-length", 0))
            if declared > limit:
                self.rfile.read(limit)
                released.wait(30)
                self.close_connection = True
                return
            try:
                json.loads(self.rfile.read(declared))
            except ValueError:  # not JSON, or not UTF-8
                self._answer(500, b"Internal Server Error", "text/plain")
                return
            self._answer(200, ANSWER, "application/json")

        def _answer(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("content-type", content_type)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads, server.block_on_close = True, False  # a hung handler does not hold up shutdown
    with _running(server) as url:
        try:
            yield url
        finally:
            released.set()  # first: the hung handlers return, then the server shuts down
