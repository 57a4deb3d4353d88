"""The Open Inference Protocol (KServe V2) over gRPC, beside REST: same process, event loop, models and batchers.

``reference-server serve --grpc-port N`` (0: a free port the kernel picks) serves
``inference.GRPCInferenceService``: ServerLive, ServerReady, ModelReady, ServerMetadata, ModelMetadata and
ModelInfer. ``ready.json`` then holds ``"grpc": "127.0.0.1:PORT"``.

Status codes, one per kind of failure (the HTTP status the same failure gets over REST, and the
``status`` label it is counted under in ``inference_requests_total``, in brackets):

- ``INVALID_ARGUMENT`` (400): a malformed request: bytes that are not a ModelInferRequest protobuf,
  a wrong datatype, a shape that does not match the data, a missing or extra input, too many rows...
- ``NOT_FOUND`` (404): an unknown model or version.
- ``RESOURCE_EXHAUSTED`` (413): a message over ``--max-body-bytes`` (gRPC's own
  ``max_receive_message_length``; refused by gRPC before any handler, so not counted).
- ``UNAVAILABLE`` (503): overloaded: the queue is full, or past its time limit (``--max-queue-time``).
  Triton answers UNAVAILABLE for both ("Exceeds maximum queue size", "Request timeout expired"), and
  gRPC defines it as the transient condition a client retries with backoff. Trailing metadata
  ``retry-after`` carries the seconds REST's ``Retry-After`` does.
- ``CANCELLED`` (499): the client cancelled (or its deadline passed); its queued work is dropped
  uncomputed, as for a REST client that disconnects.
- ``INTERNAL`` (500): a bug; the tests send every malformed case they know to make sure none gets it.

Every ModelInfer answer carries trailing metadata ``server-timing`` with the value REST's
``Server-Timing`` header has (``queue;dur=0.052, infer;dur=4.226, batch;desc=1``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import grpc
from grpc.aio import ServicerContext

from . import __version__
from .errors import ReferenceServerError, RequestError
from .grpc_protocol import encode_model_infer, infer_request
from .inference import infer, max_values, server_timing
from .models import TensorSpec
from .oip_grpc import oip_v2_pb2 as pb
from .protobuf_body import parse_message, parse_model_infer
from .state import ServerState

SERVICE = "inference.GRPCInferenceService"
ENDPOINT = "grpc_infer"  # the endpoint label of gRPC's ModelInfer in the metrics (REST's is "infer")
TIMING_KEY = "server-timing"
CODES = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    404: grpc.StatusCode.NOT_FOUND,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    415: grpc.StatusCode.INVALID_ARGUMENT,
    499: grpc.StatusCode.CANCELLED,
    503: grpc.StatusCode.UNAVAILABLE,
}
_log = logging.getLogger(__name__)
Handler = Callable[..., Awaitable[object]]


class GrpcEndpoint:
    """The gRPC server over a ``ServerState``: bound when made, started once the batchers run, stopped first.

    Bound at once, so that a port in use fails before HTTP binds (with gRPC's default
    ``SO_REUSEPORT`` turned off: a second server would otherwise share the port silently). Stopping
    lets RPCs in flight finish, up to ``grace`` seconds, and refuses new ones.
    """

    def __init__(self, state: ServerState) -> None:
        config = state.config
        assert config.grpc_port is not None
        self._server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", config.max_body_bytes),
                ("grpc.so_reuseport", 0),
                # a connection that never finishes its HTTP/2 preface holds a socket no longer than a
                # REST request's headers may take
                ("grpc.server_handshake_timeout_ms", max(1, round(config.header_timeout_s * 1000))),
            ]
        )
        handlers = _method_handlers(_Service(state))
        self._server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
        self._server.add_registered_method_handlers(SERVICE, handlers)
        address = target(config.host, config.grpc_port)
        try:
            port = self._server.add_insecure_port(address)
        except RuntimeError as exc:
            raise ReferenceServerError(f"cannot serve gRPC on {address}: {exc}") from None
        self.target = target(config.host, port)
        self._stopped: asyncio.Future | None = None

    async def start(self) -> None:
        await self._server.start()

    async def stop(self, grace: float) -> None:
        """Stop taking RPCs and wait for those in flight; a second call waits for the first one's stop."""
        if self._stopped is None:
            self._stopped = asyncio.ensure_future(self._server.stop(grace))
        await asyncio.shield(self._stopped)


def target(host: str, port: int) -> str:
    """``host:port`` as gRPC (and ``ready.json``) writes it: an IPv6 address in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class _Service:
    """The six methods, each taking a parsed request (ModelInfer: the raw bytes) and returning a message."""

    def __init__(self, state: ServerState) -> None:
        self.state = state

    async def server_live(self, request: pb.ServerLiveRequest, context: ServicerContext) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    async def server_ready(self, request: pb.ServerReadyRequest, context: ServicerContext) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self.state.ready)

    async def model_ready(self, request: pb.ModelReadyRequest, context: ServicerContext) -> pb.ModelReadyResponse:
        self.state.model(request.name, request.version or None)
        return pb.ModelReadyResponse(ready=self.state.ready)

    async def server_metadata(
        self, request: pb.ServerMetadataRequest, context: ServicerContext
    ) -> pb.ServerMetadataResponse:
        # REST's extensions (binary tensor data, statistics) are REST's: gRPC serves none of them
        return pb.ServerMetadataResponse(name="reference-server", version=__version__, extensions=[])

    async def model_metadata(
        self, request: pb.ModelMetadataRequest, context: ServicerContext
    ) -> pb.ModelMetadataResponse:
        model = self.state.model(request.name, request.version or None)
        return pb.ModelMetadataResponse(
            name=model.name,
            versions=[model.version],
            platform="onnxruntime_onnx",
            inputs=[_tensor_metadata(spec) for spec in model.inputs],
            outputs=[_tensor_metadata(spec) for spec in model.outputs],
        )

    async def model_infer(self, body: bytes, context: ServicerContext) -> bytes:
        """REST's infer, with the same verdicts (``inference.py``); the bytes are parsed here, so garbage is a 400."""
        state = self.state
        message = parse_model_infer(body)  # not counted in the metrics: there is no model to count it under yet
        model = state.model(message.model_name, message.model_version or None)
        with state.metrics.observe(model.name, ENDPOINT):
            state.batchers[model.name].admit(1)  # REST's early refusal (admission.py): before any tensor is read
            request = infer_request(message, max_values(state.config))
            outputs, timing = await infer(state, model, request, len(body))
            response = encode_model_infer(model.name, model.version, request, outputs)
        context.set_trailing_metadata(((TIMING_KEY, server_timing(timing)),))
        return response


def _tensor_metadata(spec: TensorSpec) -> pb.ModelMetadataResponse.TensorMetadata:
    return pb.ModelMetadataResponse.TensorMetadata(name=spec.name, datatype=spec.datatype, shape=spec.shape)


def _method_handlers(service: _Service) -> dict[str, grpc.RpcMethodHandler]:
    """Every method takes bytes (no deserializer): a body that is no protobuf gets INVALID_ARGUMENT, not INTERNAL."""
    return {
        "ServerLive": _unary(service.server_live, pb.ServerLiveRequest),
        "ServerReady": _unary(service.server_ready, pb.ServerReadyRequest),
        "ModelReady": _unary(service.model_ready, pb.ModelReadyRequest),
        "ServerMetadata": _unary(service.server_metadata, pb.ServerMetadataRequest),
        "ModelMetadata": _unary(service.model_metadata, pb.ModelMetadataRequest),
        "ModelInfer": _unary(service.model_infer, None),
    }


def _unary(handle: Handler, request_type: type | None) -> grpc.RpcMethodHandler:
    async def call(body: bytes, context: ServicerContext) -> bytes:
        try:
            response = await handle(body if request_type is None else parse_message(request_type, body), context)
        except RequestError as exc:
            metadata = tuple((key.lower(), value) for key, value in exc.headers.items())
            await context.abort(CODES.get(exc.status, grpc.StatusCode.INVALID_ARGUMENT), str(exc), metadata)
        except Exception as exc:  # a bug: logged, and answered INTERNAL with what it was
            _log.exception("gRPC %s failed", getattr(handle, "__name__", "call"))
            await context.abort(grpc.StatusCode.INTERNAL, f"internal error: {type(exc).__name__}: {exc}")
        return response if isinstance(response, bytes) else response.SerializeToString()

    return grpc.unary_unary_rpc_method_handler(call)


__all__ = ["CODES", "ENDPOINT", "SERVICE", "TIMING_KEY", "GrpcEndpoint", "target"]
