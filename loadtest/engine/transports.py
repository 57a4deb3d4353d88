"""How a Locust user sends one request and names its answer: over HTTP, or over gRPC.

``ScenarioUser`` (``engine.users``) owns the schedule, the clock and the recording; a transport owns
the wire. Each has two steps, so the clock stops between them, before any body is checked:

- ``send(payload)``: the request, to its last byte back (the time-critical part);
- ``outcome(payload, answer)``: ``(kind, server timing, answer name)``. ``kind`` is the recorder's
  (OK, TIMEOUT or an error's kind); the server timing is the ``Server-Timing`` header (HTTP) or the
  ``server-timing`` trailing metadata (gRPC) of a success; the answer name is what a messy request's
  verdict records (``http_200``, ``grpc_ok``, ``grpc_invalid_argument``...). ``None`` for an answer is
  a request the user's own guard gave up on: a timeout.

HTTP goes through the user's ``FastHttpSession``, as it always has. gRPC goes through one channel per
process, shared by its users: HTTP/2 carries every call on that one connection, and the open-load
``connections`` cap bounds the calls in flight instead. Both feed Locust's own statistics.

A streamed generative answer (``openai-chat``, ``openai-completions``) is read line by line as it
arrives, each line timed on the load generator's clock and fed to ``traffic.sse.StreamReader``;
``send`` returns once the stream ends. Locust's own statistics time such a request to its headers
(``stream=True``); the harness's figures come from the stream (``traffic.token_latency``). A stream
cut short by the request's guard, a read timeout or a closed connection keeps what it delivered.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.client import HTTPException
from typing import Protocol as Interface

import gevent
from locust.contrib.fasthttp import LocustBadStatusCode

from loadtest.engine.recorder import OK, TIMEOUT
from loadtest.traffic.payloads import Payload
from loadtest.traffic.protocols import GRPC, Protocol, unchecked
from loadtest.traffic.sse import Stream, StreamReader, read_completion

HEADERS = {"Content-Type": "application/json"}
# A stream is read as it comes: no compression (Locust asks for gzip unless told otherwise).
STREAM_HEADERS = {"Content-Type": "application/json", "Accept": "text/event-stream", "Accept-Encoding": "identity"}
STREAM_ERRORS = {"broken": "broken_stream"}  # other stream errors are answers: stream_<error>
Outcome = tuple[str, str | None, str]  # (kind, server timing, answer name)


class Transport(Interface):
    def send(self, payload: Payload) -> object: ...

    def outcome(self, payload: Payload, answer: object | None) -> Outcome: ...

    def stream(self, answer: object | None, done: float) -> Stream | None:
        """A generative answer's tokens and their times (None for other protocols, or no answer); ``done``: when
        the answer ended."""


def classify(response, valid) -> tuple[str, str | None]:
    """(kind, Server-Timing header): kind is OK, TIMEOUT or the error's kind; the header only on success."""
    error = getattr(response, "error", None)
    if isinstance(error, LocustBadStatusCode):  # a real answer with a status Locust calls bad: judged by its status
        error = None
    if error is not None:
        while getattr(error, "original", None) is not None:  # geventhttpclient wraps the cause (RetriesExceeded)
            error = error.original
        if isinstance(error, socket.timeout | TimeoutError | gevent.Timeout):
            return TIMEOUT, None
        if isinstance(error, ConnectionError | socket.gaierror):
            return "connection", None
        return type(error).__name__, None
    status = response.status_code
    if not 200 <= status < 300:
        return f"http_{status}", None
    if not valid(response.content or b""):
        return "invalid_body", None
    return OK, response.headers.get("server-timing")


class HttpTransport:
    """The protocol's requests through a Locust user's ``FastHttpSession``; a replayed request keeps its own
    method, path and headers."""

    def __init__(self, client, protocol: Protocol) -> None:
        self.client, self.protocol = client, protocol

    def send(self, payload: Payload):
        headers = HEADERS if payload.headers is None else payload.headers
        path = payload.path or self.protocol.path
        return self.client.request(payload.method, path, data=payload.body, headers=headers, name=payload.cls)

    def outcome(self, payload: Payload, answer) -> Outcome:
        if answer is None:
            return TIMEOUT, None, TIMEOUT
        # A replayed request to another path than the protocol's (metadata, say) has no body to check.
        valid = self.protocol.valid if (payload.path or self.protocol.path) == self.protocol.path else unchecked
        kind, timing = classify(answer, valid)
        return kind, timing, f"http_{answer.status_code}" if kind == OK else kind

    def stream(self, answer, done: float) -> Stream | None:
        """A generative answer that did not stream: its usage and text, timed at its end."""
        if self.protocol.encode_prompt is None or answer is None or not 200 <= answer.status_code < 300:
            return None
        return read_completion(answer.content or b"", done)


@dataclass
class Streamed:
    """A streamed answer: the HTTP response (headers, status), what the stream delivered, and when it ended."""

    response: object
    stream: Stream | None  # None: not a 2xx, so no stream was read (the body is an error document)
    ended: float
    timed_out: bool = False
    hung_up: bool = False  # a messy request's client closed the connection after the first token, on purpose


def body_reads(raw) -> Iterator[bytes]:
    """A response's decoded body as it arrives, one socket read at a time, until the body's end.

    geventhttpclient's ``readline`` and ``read`` loop forever on a connection the server closed
    mid-body (they feed the parser the empty read and read again), so the reading is done here, on
    the response's parser and socket: ``feed`` decodes the chunked framing into ``_body_buffer``, and
    the parser completing the message hands the socket back to the pool (``release``).
    """
    while True:
        if raw._body_buffer:
            chunk = bytes(raw._body_buffer)
            del raw._body_buffer[:]
            yield chunk
        if raw.message_complete:
            return
        sock = raw._sock
        if sock is None:
            raise ConnectionError("the connection is gone")
        data = sock.recv(raw.block_size)
        if not data:
            raise ConnectionError("the server closed the connection mid-body")
        raw.feed(data)


class StreamingTransport:
    """Generative requests whose answers stream (Server-Sent Events), through the user's ``FastHttpSession``."""

    def __init__(self, client, protocol: Protocol) -> None:
        self.client, self.protocol = client, protocol

    def send(self, payload: Payload) -> Streamed:
        path = payload.path or self.protocol.path
        headers = STREAM_HEADERS if payload.headers is None else payload.headers
        response = self.client.request(
            payload.method, path, data=payload.body, headers=headers, name=payload.cls, stream=True
        )
        raw = getattr(response, "_response", None)
        if getattr(response, "error", None) is not None and not isinstance(response.error, LocustBadStatusCode):
            return Streamed(response, None, time.perf_counter())
        if raw is None or not 200 <= response.status_code < 300:
            response.content  # noqa: B018 - reads the error body, so the connection can be used again
            return Streamed(response, None, time.perf_counter())
        if "text/event-stream" not in (response.headers.get("content-type") or ""):
            # Asked to stream, answered whole (a server that ignores "stream"): read as one completion.
            body = response.content or b""
            ended = time.perf_counter()
            stream = read_completion(body, ended) or Stream(
                error="invalid_event", detail=f"a 200 that is neither a stream nor a completion: {body[:80]!r}"
            )
            return Streamed(response, stream, ended)
        reader = StreamReader()
        try:
            for chunk in body_reads(raw):
                reader.feed(chunk, time.perf_counter())
                if reader.ended and not reader.stream.done:  # an error event: the rest is not read
                    break
                if payload.hang_up and reader.stream.content_times:  # closed mid-stream (``finally`` releases it)
                    return Streamed(response, reader.stream, time.perf_counter(), hung_up=True)
        except (gevent.Timeout, TimeoutError):
            # The request's guard or a read timeout: what arrived is kept; the connection is closed, not reused.
            ended = time.perf_counter()
            return Streamed(response, reader.finish(ended), ended, timed_out=not reader.stream.done)
        except (OSError, ValueError, HTTPException):  # closed, reset, a malformed chunked body: a broken stream
            pass
        finally:
            raw.release()  # back to the pool if the body was read to its end, else closed
        ended = time.perf_counter()
        return Streamed(response, reader.finish(ended), ended)

    def outcome(self, payload: Payload, answer: Streamed | None) -> Outcome:
        if answer is None:
            return TIMEOUT, None, TIMEOUT
        if answer.stream is None:
            kind, timing = classify(answer.response, unchecked)
            return kind, timing, kind if kind != OK else "http_200"
        if answer.timed_out:
            return TIMEOUT, None, TIMEOUT
        if answer.hung_up:
            return OK, None, f"http_{answer.response.status_code}"
        error = answer.stream.error
        if error is not None:
            kind = STREAM_ERRORS.get(error, f"stream_{error}")
            return kind, None, kind
        return OK, answer.response.headers.get("server-timing"), f"http_{answer.response.status_code}"

    def stream(self, answer: Streamed | None, done: float) -> Stream | None:
        return None if answer is None else answer.stream


class GrpcTransport:
    """ModelInfer calls on one channel, each with the scenario's timeout as its deadline (``engine.grpc_client``)."""

    def __init__(self, url: str, protocol: Protocol, timeout: float, events) -> None:
        from loadtest.engine import grpc_client  # imported where gRPC is used: a forking master never loads it

        grpc_client.use_gevent()  # before the first channel
        self._client = grpc_client
        self._channel = grpc_client.open_channel(url)
        self._infer = grpc_client.infer_call(self._channel, protocol.path)
        self.protocol, self.timeout, self.events = protocol, timeout, events

    def send(self, payload: Payload):
        started = time.perf_counter()
        answer = self._client.call(self._infer, payload.body, self.timeout)
        failed = isinstance(answer, Exception)
        self.events.request.fire(  # Locust's own statistics, as FastHttpSession's requests feed them
            request_type="grpc",
            name=payload.cls,
            response_time=(time.perf_counter() - started) * 1000,
            response_length=0 if failed else len(answer[0] or b""),
            exception=answer if failed else None,
            context={},
        )
        return answer

    def outcome(self, payload: Payload, answer) -> Outcome:
        return self._client.outcome(answer, self.protocol.valid)

    def stream(self, answer, done: float) -> None:
        return None


def transport_for(protocol: Protocol, client, shared: dict, url: str, timeout: float, events) -> Transport:
    """A user's transport: HTTP on its own client; gRPC on the process's one channel, made once into ``shared``."""
    if protocol.stream:
        return StreamingTransport(client, protocol)
    if protocol.name != GRPC:
        return HttpTransport(client, protocol)
    if "grpc" not in shared:
        shared["grpc"] = GrpcTransport(url, protocol, timeout, events)
    return shared["grpc"]
