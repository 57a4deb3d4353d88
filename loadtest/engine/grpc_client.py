"""OIP v2 over gRPC, client side: the channel, one ModelInfer call, and its answer as the recorder names it.

Used by the Locust users (``engine.transports``), the preflight and the probe. The call is unary,
with no serializer: the pre-built ModelInferRequest bytes go out as they are and the answer comes
back as bytes, which ``protocol.valid`` checks (``traffic.grpc_messages.has_outputs``). Each call
has a deadline, the scenario's timeout. Plaintext only (``grpc://host:port``); the channel takes
messages of any size both ways, so a limit met is the server's (RESOURCE_EXHAUSTED), never ours.

How an answer is named (``outcome``), beside HTTP's:

- OK with a valid body: a success (``""``), its ``server-timing`` trailing metadata kept, as REST's
  ``Server-Timing`` header is, for the server's queue and compute histograms;
- DEADLINE_EXCEEDED: ``timeout``, as an HTTP request past its timeout;
- UNAVAILABLE that gRPC raised itself because the connection failed (nothing listening, the
  connection reset or closed: its message says so, ``_NO_CONNECTION``): ``connection``, as a refused
  or reset HTTP connection, so the run's transport-failure rules see it;
- any other status: ``grpc_<name>`` (``grpc_invalid_argument``, ``grpc_unavailable`` from an
  overloaded server, ...): an answer from the target, as an HTTP status is.

Under Locust, gRPC must yield to gevent: ``use_gevent`` patches it once per process, before the
first channel (Locust's own gRPC example does the same). The CLI's own process (preflight, probe)
uses plain gRPC.
"""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import urlsplit

import grpc

from loadtest.engine.recorder import OK, TIMEOUT
from loadtest.traffic.grpc_messages import INFER_METHOD

TIMING_KEY = "server-timing"
CONNECTION = "connection"
OK_ANSWER = "grpc_ok"  # how a messy request's verdict names an OK answer (HTTP's is http_200)
CHANNEL_OPTIONS = (("grpc.max_receive_message_length", -1), ("grpc.max_send_message_length", -1))
# The messages of grpc-core's own UNAVAILABLE when a connection fails, is reset or is closed mid-call.
_NO_CONNECTION = (
    "failed to connect",
    "connection refused",
    "connection reset",
    "connection closed",
    "socket closed",
    "broken pipe",
    "goaway",
    "stream removed",
    "endpoint read failed",
    "endpoint closing",
    "dns resolution failed",
    "empty address list",
    "keepalive watchdog",
    "http1.x server",  # the port answers, but not with gRPC
)

Answer = tuple[bytes, grpc.Call] | grpc.RpcError  # what ``call`` returns: the body and the call, or the error
Outcome = tuple[str, str | None, str]  # (kind, server-timing, the answer's name for a messy verdict)

_gevent_ready = False


def use_gevent() -> None:
    """Make gRPC cooperate with gevent in this process; once, before its first channel."""
    global _gevent_ready
    if not _gevent_ready:
        from grpc.experimental import gevent as grpc_gevent

        grpc_gevent.init_gevent()
        _gevent_ready = True


def address(url: str) -> str:
    """``host:port`` of a ``grpc://host:port`` URL, as gRPC takes it (an IPv6 host keeps its brackets)."""
    return urlsplit(url).netloc.rpartition("@")[2]


def open_channel(url: str) -> grpc.Channel:
    return grpc.insecure_channel(address(url), options=CHANNEL_OPTIONS)


def infer_call(channel: grpc.Channel, method: str = INFER_METHOD) -> grpc.UnaryUnaryMultiCallable:
    """ModelInfer with no serializer: bytes in, bytes out."""
    return channel.unary_unary(method)


def call(infer: grpc.UnaryUnaryMultiCallable, body: bytes, timeout: float) -> Answer:
    """One call with ``timeout`` as its deadline; a failure is returned, not raised."""
    try:
        return infer.with_call(body, timeout=timeout)
    except grpc.RpcError as error:
        return error


def status_kind(code: grpc.StatusCode, details: str | None) -> str:
    """The recorder's kind for a call that ended with ``code`` (see the module's docstring)."""
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return TIMEOUT
    if code == grpc.StatusCode.UNAVAILABLE and any(phrase in (details or "").lower() for phrase in _NO_CONNECTION):
        return CONNECTION
    return "grpc_" + code.name.lower()


def outcome(answer: Answer | None, valid: Callable[[bytes], bool]) -> Outcome:
    """(kind, server-timing, answer name) of a call; None is a call the caller's own guard gave up on."""
    if answer is None:
        return TIMEOUT, None, TIMEOUT
    if isinstance(answer, grpc.RpcError):
        kind = status_kind(answer.code(), answer.details())
        return kind, None, kind
    body, done = answer
    if not valid(body or b""):
        return "invalid_body", None, "invalid_body"
    return OK, trailing(done, TIMING_KEY), OK_ANSWER


def trailing(done: grpc.Call, key: str) -> str | None:
    for item in done.trailing_metadata() or ():
        if item.key == key:
            return item.value if isinstance(item.value, str) else None
    return None


def status_name(answer: Answer) -> str:
    """The status as gRPC names it: ``OK``, ``INVALID_ARGUMENT``..."""
    return answer.code().name if isinstance(answer, grpc.RpcError) else grpc.StatusCode.OK.name
