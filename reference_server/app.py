"""The ASGI app: Open Inference Protocol (KServe V2) REST routes, OpenAI embeddings, /metrics.

An app is a list of routes over one ``ServerState``: the loaded models, their batchers and the
metrics. Every refusal is a 4xx with ``{"error": "..."}`` (OpenAI's error shape under ``/v1``);
a 5xx would mean a bug, and the tests send every malformed case they know to make sure.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
from dataclasses import dataclass

import orjson
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from . import __version__
from .batcher import Batcher, Timing
from .capture import Capture, CaptureMiddleware
from .config import ServerConfig
from .errors import BadRequest, NotFound, PayloadTooLarge, RequestError, UnsupportedMediaType
from .metrics import Metrics
from .models import Prepared, ServedModel, load_model
from .protocol import HEADER_LENGTH, encode_infer_response, parse_infer_request

_ACCEPTED_MEDIA = ("application/json", "application/octet-stream")


@dataclass
class ServerState:
    config: ServerConfig
    models: dict[str, ServedModel]
    batchers: dict[str, Batcher]
    metrics: Metrics
    ready: bool = False

    def model(self, name: str, version: str | None = None) -> ServedModel:
        model = self.models.get(name)
        if model is None:
            raise NotFound(f"unknown model '{name}'; this server serves: {', '.join(sorted(self.models))}")
        if version is not None and version != model.version:
            raise NotFound(f"model '{name}' has no version '{version}'; it serves version '{model.version}'")
        return model


def server_timing(timing: Timing) -> str:
    return f"queue;dur={timing.queue_ms:.3f}, infer;dur={timing.infer_ms:.3f}, batch;desc={timing.batch_rows}"


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 as soon as it is known to exceed ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise BadRequest(f"Content-Length must be a number, got {declared!r}")
        if int(declared) > limit:
            raise PayloadTooLarge(f"request body is {declared} bytes; this server accepts at most {limit}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"request body exceeds {limit} bytes, the most this server accepts")
        chunks.append(chunk)
    return b"".join(chunks)


def check_content_type(request: Request) -> None:
    content_type = request.headers.get("content-type")
    if content_type is None:
        return  # tritonclient and many scripts send none
    media = content_type.split(";")[0].strip().lower()
    if media in _ACCEPTED_MEDIA or media.endswith("+json"):
        return
    raise UnsupportedMediaType(
        f"content-type '{media}' is not accepted; send application/json "
        f"(or application/octet-stream with {HEADER_LENGTH} for binary tensors)"
    )


def _check_rows(state: ServerState, prepared: Prepared) -> None:
    rows = len(prepared.rows)
    if rows == 0:
        raise BadRequest("the request has no rows to infer")
    if rows > state.config.max_rows:
        raise BadRequest(
            f"the request has {rows} rows; this server accepts at most {state.config.max_rows} per request"
        )


async def _infer(state: ServerState, model: ServedModel, prepared: Prepared):
    _check_rows(state, prepared)
    if state.config.inject_delay_ms:
        await asyncio.sleep(state.config.inject_delay_ms / 1000)
    return await state.batchers[model.name].submit(prepared)


async def infer(request: Request) -> Response:
    state: ServerState = request.app.state.server
    model = state.model(request.path_params["name"], request.path_params.get("version"))
    with state.metrics.observe(model.name, "infer"):
        check_content_type(request)
        body = await read_body(request, state.config.max_body_bytes)
        parsed = parse_infer_request(body, request.headers.get(HEADER_LENGTH))
        known = {spec.name for spec in model.outputs}
        unknown = [name for name in parsed.requested_outputs if name not in known]
        if unknown:
            raise BadRequest(f"requested output(s) {unknown} do not exist; outputs: {sorted(known)}")
        outputs, timing = await _infer(state, model, model.prepare(parsed.inputs))
        content, headers = encode_infer_response(model.name, model.version, parsed, outputs)
        headers["Server-Timing"] = server_timing(timing)
        return Response(content, headers=headers)


async def embeddings(request: Request) -> Response:
    """OpenAI-compatible ``POST /v1/embeddings`` over the same batcher as the OIP route."""
    state: ServerState = request.app.state.server
    check_content_type(request)
    try:
        doc = orjson.loads(await read_body(request, state.config.max_body_bytes))
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"request body is invalid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise BadRequest("request body must be a JSON object")
    text_models = [m for m in state.models.values() if m.kind == "text-embedding"]
    name = doc.get("model") or (text_models[0].name if text_models else "")
    model = state.model(name) if isinstance(name, str) else None
    if model is None or model.kind != "text-embedding":
        raise NotFound(f"model {name!r} is not a text-embedding model served here")
    with state.metrics.observe(model.name, "embeddings"):
        texts = doc.get("input")
        if isinstance(texts, str):
            texts = [texts]
        if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
            raise BadRequest("'input' must be a string or a list of strings (token-id input is not supported)")
        fmt = doc.get("encoding_format", "float")
        if fmt not in ("float", "base64"):
            raise BadRequest(f"'encoding_format' must be 'float' or 'base64', got {fmt!r}")
        try:
            for text in texts:
                text.encode("utf-8")
        except UnicodeEncodeError:
            raise BadRequest("'input' holds text that is not valid UTF-8") from None
        prepared = model.prepare_texts(texts)  # type: ignore[attr-defined]
        outputs, timing = await _infer(state, model, prepared)
        vectors = outputs["embedding"]
        data = [
            {
                "object": "embedding",
                "index": i,
                "embedding": base64.b64encode(v.astype("<f4").tobytes()).decode() if fmt == "base64" else v,
            }
            for i, v in enumerate(vectors)
        ]
        body = {
            "object": "list",
            "data": data,
            "model": model.name,
            "usage": {"prompt_tokens": prepared.tokens, "total_tokens": prepared.tokens},
        }
        return Response(
            orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY),
            media_type="application/json",
            headers={"Server-Timing": server_timing(timing)},
        )


async def server_metadata(request: Request) -> Response:
    return JSONResponse({"name": "reference-server", "version": __version__, "extensions": ["binary_tensor_data"]})


async def live(request: Request) -> Response:
    return JSONResponse({"live": True})


async def ready(request: Request) -> Response:
    is_ready = request.app.state.server.ready
    return JSONResponse({"ready": is_ready}, status_code=200 if is_ready else 503)


async def model_metadata(request: Request) -> Response:
    state: ServerState = request.app.state.server
    model = state.model(request.path_params["name"], request.path_params.get("version"))
    return JSONResponse(
        {
            "name": model.name,
            "versions": [model.version],
            "platform": "onnxruntime_onnx",
            "inputs": [spec.as_json() for spec in model.inputs],
            "outputs": [spec.as_json() for spec in model.outputs],
            "parameters": {"kind": model.kind, "variant": model.version},
        }
    )


async def model_ready(request: Request) -> Response:
    state: ServerState = request.app.state.server
    model = state.model(request.path_params["name"], request.path_params.get("version"))
    return JSONResponse({"name": model.name, "ready": state.ready})


async def metrics(request: Request) -> Response:
    return Response(request.app.state.server.metrics.render(), media_type="text/plain; version=0.0.4")


def _error_body(request: Request, message: str) -> dict:
    if request.url.path.startswith("/v1/"):
        return {"error": {"message": message, "type": "invalid_request_error"}}
    return {"error": message}


async def on_request_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestError)
    return JSONResponse(_error_body(request, str(exc)), status_code=exc.status, headers=exc.headers)


async def on_http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return JSONResponse(_error_body(request, str(exc.detail)), status_code=exc.status_code, headers=exc.headers)


async def on_unexpected(request: Request, exc: Exception) -> Response:
    return JSONResponse(_error_body(request, f"internal error: {type(exc).__name__}: {exc}"), status_code=500)


def _routes() -> list[Route]:
    routes = [
        Route("/v2", server_metadata, methods=["GET"]),
        Route("/v2/health/live", live, methods=["GET"]),
        Route("/v2/health/ready", ready, methods=["GET"]),
        Route("/v1/embeddings", embeddings, methods=["POST"]),
        Route("/metrics", metrics, methods=["GET"]),
    ]
    for prefix in ("/v2/models/{name}", "/v2/models/{name}/versions/{version}"):
        routes += [
            Route(prefix, model_metadata, methods=["GET"]),
            Route(prefix + "/ready", model_ready, methods=["GET"]),
            Route(prefix + "/infer", infer, methods=["POST"]),
        ]
    return routes


def create_app(config: ServerConfig) -> Starlette:
    """Open the capture file, load the configured models (errors surface here, before any port is
    bound) and build the app."""
    capture = Capture(config.capture, config.capture_sample, config.max_body_bytes) if config.capture else None
    metrics_ = Metrics()
    models = {
        name: load_model(config.models_dir, name, config.variant, config.session, config.long_text)
        for name in config.models
    }
    state = ServerState(config, models, {}, metrics_)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette):
        for name, model in models.items():
            batcher = Batcher(model, config.batching, metrics_.batch_observer(name))
            metrics_.track_queue(name, lambda b=batcher: b.queued_rows)
            batcher.start()
            state.batchers[name] = batcher
        if capture:
            capture.start()
        state.ready = True
        yield
        state.ready = False
        try:
            for batcher in state.batchers.values():
                await batcher.stop()
        finally:
            if capture:  # uvicorn has let in-flight requests finish: their lines are all pending now
                await capture.close()

    app = Starlette(
        routes=_routes(),
        lifespan=lifespan,
        middleware=[Middleware(CaptureMiddleware, capture=capture)] if capture else [],
        exception_handlers={
            RequestError: on_request_error,
            HTTPException: on_http_error,
            Exception: on_unexpected,
        },
    )
    app.state.server = state
    return app


__all__ = ["create_app", "ServerState"]
