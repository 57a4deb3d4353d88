"""uvicorn's httptools protocol with limits on a request's headers: how long they take, and their size.

uvicorn times out only an idle keep-alive connection (``timeout_keep_alive``, after a response),
and httptools, unlike h11 (``h11_max_incomplete_event_size``), sets no bound on header size. A
client that opened a connection and sent nothing, or part of a request line or of its headers and
then nothing (or a header line now and then), held its connection for as long as it liked; one
that sent header lines without end grew the server by 1 GB in 3 s (measured). Here the headers must
be complete within ``header_timeout_s`` of the connection opening, or of the first byte of each
later request on it, and within ``MAX_HEADER_BYTES``; otherwise the server answers 408 or 431 and
closes the connection. The app never sees such a request. A body that is slow to arrive is the
app's concern.
"""

from __future__ import annotations

import asyncio

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

DEFAULT_HEADER_TIMEOUT_S = 5.0
MAX_HEADER_BYTES = 64 * 1024  # the request line and headers; h11's default is 16 KiB, nginx's 32 KiB


def _answer(status: bytes, message: str) -> bytes:
    body = f'{{"error":"{message}"}}'.encode()
    return (
        b"HTTP/1.1 " + status + b"\r\ncontent-type: application/json\r\n"
        b"content-length: " + str(len(body)).encode() + b"\r\nconnection: close\r\n\r\n" + body
    )


REQUEST_TIMEOUT = _answer(b"408 Request Timeout", "the request headers did not arrive in time")
HEADERS_TOO_LARGE = _answer(
    b"431 Request Header Fields Too Large", f"the request line and headers exceed {MAX_HEADER_BYTES} bytes"
)


class HeaderLimitsProtocol(HttpToolsProtocol):
    """``HttpToolsProtocol``, closing a connection whose request headers take too long or grow too large.

    Headers are awaited from the connection's opening until the first request's headers are
    complete, and then from each later request's first byte: exactly while ``_header_deadline``
    is set.
    """

    header_timeout_s = DEFAULT_HEADER_TIMEOUT_S
    _header_deadline: asyncio.TimerHandle | None = None
    _header_bytes = 0

    def connection_made(self, transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        awaiting_headers = self._header_deadline is not None
        super().data_received(data)
        if awaiting_headers and self._header_deadline is not None:  # still incomplete after this chunk
            self._header_bytes += len(data)
            if self._header_bytes > MAX_HEADER_BYTES:
                self._refuse(HEADERS_TOO_LARGE)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._header_deadline is None:  # the first request's deadline runs from the connection
            self._arm()

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._header_bytes = 0
        self._header_deadline = self.loop.call_later(self.header_timeout_s, self._refuse, REQUEST_TIMEOUT)

    def _disarm(self) -> None:
        if self._header_deadline is not None:
            self._header_deadline.cancel()
            self._header_deadline = None

    def _refuse(self, answer: bytes) -> None:
        self._disarm()
        if self.transport.is_closing():
            return
        if self.cycle is not None and not self.cycle.response_complete:
            # A pipelined request is stalled behind one being answered: close once that answer is sent.
            self.cycle.keep_alive = False
            self.flow.pause_reading()
            return
        self.transport.write(answer)
        self.transport.close()


def header_limits_protocol(timeout_s: float) -> type[HeaderLimitsProtocol]:
    """The protocol class to give uvicorn (``http=``), with its header timeout set to ``timeout_s``."""
    return type("HeaderLimitsProtocol", (HeaderLimitsProtocol,), {"header_timeout_s": timeout_s})


__all__ = ["DEFAULT_HEADER_TIMEOUT_S", "MAX_HEADER_BYTES", "HeaderLimitsProtocol", "header_limits_protocol"]
