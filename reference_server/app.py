"""The ASGI app: Open Inference Protocol (KServe V2) REST routes, OpenAI embeddings and text generation
(``openai_generation.py``), /metrics and stats.

An app is a list of routes over one ``ServerState``: the loaded models, their batchers and the
metrics. Every refusal is a 4xx with ``{"error": "..."}`` (OpenAI's error shape under ``/v1``);
a 5xx would mean a bug, and the tests send every malformed case they know, and 10,000 generated
ones, to make sure.

One request must not hold up the others, health checks included: the row limit is checked on the
declared shape (or the ``input`` list's length) before any per-row work, a text is read no further
than truncation needs, and a big body is prepared (tokenised) on a worker thread. What is left on
the event loop is bounded by the body limit and the values it may hold (``json_body.py``):
checking and parsing 8 MiB of JSON takes a few tens of ms, and encoding the largest answer (128
rows of 384 floats, or an 8 MiB ``id`` echoed) 2 to 11 ms. orjson holds the GIL for both, so a
thread would not help: the bounds are what keep health checks fast.

With ``--grpc-port``, the same state serves OIP v2 over gRPC too (``grpc_server.py``): the lifespan
starts it once the batchers run and stops it before they drain.
"""

from __future__ import annotations

import base64
import contextlib
from functools import partial
from typing import TYPE_CHECKING

import orjson
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from . import __version__
from .admission import EarlyRefusal
from .batcher import Batcher
from .capture import Capture, CaptureMiddleware
from .config import ServerConfig
from .disconnect import unless_client_leaves
from .errors import BadRequest, NotFound, RequestError
from .generation_metrics import GenerationMetrics
from .generative_model import is_generative, load_generative_model
from .inference import Guard, check_row_limit, max_values, prepare, run, server_timing
from .inference import infer as infer_tensors
from .json_body import parse_json
from .memory import MemoryReleaser, ReleaseMemoryMiddleware
from .metrics import Metrics
from .models import ServedModel, load_model
from .openai_generation import routes as generation_routes
from .protocol import HEADER_LENGTH, encode_infer_response, json_type, parse_infer_request
from .request_body import check_content_type, read_body
from .state import ServerState

if TYPE_CHECKING:  # grpc is imported only by a server that serves it
    from .grpc_server import GrpcEndpoint

GRACEFUL_SHUTDOWN_S = 30  # how long requests in flight may take to finish once SIGTERM came, REST's and gRPC's


async def infer(request: Request) -> Response:
    state: ServerState = request.app.state.server
    model = state.model(request.path_params["name"], request.path_params.get("version"))
    with state.metrics.observe(model.name, "infer"):
        check_content_type(request)
        body = await read_body(request, state.config.max_body_bytes)
        parsed = parse_infer_request(body, request.headers.get(HEADER_LENGTH), max_values(state.config))
        outputs, timing = await infer_tensors(state, model, parsed, len(body), _until_client_leaves(request))
        content, headers = encode_infer_response(model.name, model.version, parsed, outputs)
        headers["Server-Timing"] = server_timing(timing)
        return Response(content, headers=headers)


def _until_client_leaves(request: Request) -> Guard:
    """uvicorn does not cancel a handler whose client has gone: race the queued work against the disconnect."""
    return partial(unless_client_leaves, request.receive)


async def embeddings(request: Request) -> Response:
    """OpenAI-compatible ``POST /v1/embeddings`` over the same batcher as the OIP route."""
    state: ServerState = request.app.state.server
    check_content_type(request)
    raw = await read_body(request, state.config.max_body_bytes)
    doc = parse_json(raw, max_values(state.config))
    if not isinstance(doc, dict):
        raise BadRequest("request body must be a JSON object")
    model = _embedding_model(state, doc.get("model"))
    with state.metrics.observe(model.name, "embeddings"):
        texts = _embedding_input(state, doc.get("input"))
        fmt = _embedding_options(model, doc)
        prepared = await prepare(len(raw), model.prepare_texts, texts)  # type: ignore[attr-defined]
        outputs, timing = await run(state, model, prepared, _until_client_leaves(request))
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


def _embedding_model(state: ServerState, name: object) -> ServedModel:
    """The ``model`` field: a text-embedding model served here; absent or empty means the first one."""
    if name is not None and not isinstance(name, str):
        raise BadRequest(f"'model' must be a string, got {json_type(name)}")
    if not name:
        text_models = [m for m in state.models.values() if m.kind == "text-embedding"]
        name = text_models[0].name if text_models else ""
    model = state.models.get(name)
    if model is None or model.kind != "text-embedding":
        raise NotFound(f"model {name!r} is not a text-embedding model served here")
    return model


def _embedding_input(state: ServerState, texts: object) -> list[str]:
    """The ``input`` field, a string or a list of strings; its length is checked before its elements."""
    if isinstance(texts, str):
        texts = [texts]
    if isinstance(texts, list):
        check_row_limit(state.config, len(texts))
    if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
        raise BadRequest("'input' must be a string or a list of strings (token-id input is not supported)")
    return texts


def _embedding_options(model: ServedModel, doc: dict) -> str:
    """Check ``encoding_format``, ``dimensions`` and ``user``; return the encoding format."""
    fmt = doc.get("encoding_format")
    if fmt is None:
        fmt = "float"
    if fmt not in ("float", "base64"):
        shown = repr(fmt) if isinstance(fmt, str) else json_type(fmt)
        raise BadRequest(f"'encoding_format' must be 'float' or 'base64', got {shown}")
    size = model.outputs[0].shape[-1]
    dimensions = doc.get("dimensions")
    if dimensions is not None and (type(dimensions) is not int or dimensions != size):
        shown = dimensions if type(dimensions) is int else json_type(dimensions)
        raise BadRequest(f"'dimensions' must be {size}, the size of '{model.name}' embeddings; got {shown}")
    user = doc.get("user")
    if user is not None and not isinstance(user, str):
        raise BadRequest(f"'user' must be a string, got {json_type(user)}")
    return fmt


async def server_metadata(request: Request) -> Response:
    extensions = ["binary_tensor_data", "statistics"]
    return JSONResponse({"name": "reference-server", "version": __version__, "extensions": extensions})


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


async def model_statistics(request: Request) -> Response:
    """Triton's statistics extension: every model's, or the named one's (``statistics.py``)."""
    state: ServerState = request.app.state.server
    name = request.path_params.get("name")
    models = [state.model(name, request.path_params.get("version"))] if name else list(state.models.values())
    return JSONResponse({"model_stats": [state.metrics.statistics[model.name].as_json() for model in models]})


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


_MODEL_PREFIXES = ("/v2/models/{name}", "/v2/models/{name}/versions/{version}")


def _routes() -> list[Route]:
    # The infer routes first: Starlette tries routes in order, a regex each, on every request.
    routes = [Route(prefix + "/infer", infer, methods=["POST"]) for prefix in _MODEL_PREFIXES]
    routes += [
        Route("/v2", server_metadata, methods=["GET"]),
        Route("/v2/health/live", live, methods=["GET"]),
        Route("/v2/health/ready", ready, methods=["GET"]),
        Route("/v1/embeddings", embeddings, methods=["POST"]),
        *generation_routes(),
        Route("/metrics", metrics, methods=["GET"]),
        Route("/v2/models/stats", model_statistics, methods=["GET"]),  # before /v2/models/{name} takes "stats"
    ]
    for prefix in _MODEL_PREFIXES:
        routes += [
            Route(prefix, model_metadata, methods=["GET"]),
            Route(prefix + "/ready", model_ready, methods=["GET"]),
            Route(prefix + "/stats", model_statistics, methods=["GET"]),
        ]
    return routes


def create_app(config: ServerConfig) -> Starlette:
    """Open the capture file, load the configured models (errors surface here, before any port is
    bound), bind gRPC's port if the config has one, and build the app."""
    capture = Capture(config.capture, config.capture_sample, config.max_body_bytes) if config.capture else None
    generative_names = [name for name in config.models if is_generative(config.models_dir, name)]
    models = {
        name: load_model(config.models_dir, name, config.variant, config.session, config.long_text)
        for name in config.models
        if name not in generative_names
    }
    metrics_ = Metrics({name: config.variant for name in config.models})
    generation_metrics = GenerationMetrics(metrics_.registry, {name: config.variant for name in generative_names})
    generative = {
        name: load_generative_model(
            config.models_dir,
            name,
            config.variant,
            config.session,
            config.generation,
            generation_metrics.observer(name),
        )
        for name in generative_names
    }
    state = ServerState(config, models, {}, metrics_, generative=generative, generation_metrics=generation_metrics)
    memory = MemoryReleaser()
    grpc = _grpc_endpoint(state)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette):
        for name, model in models.items():
            batcher = Batcher(model, config.batching, metrics_.batch_observer(name), metrics_.shed_counter(name))
            metrics_.track_queue(name, lambda b=batcher: b.queued_rows)
            batcher.start()
            state.batchers[name] = batcher
        for name, model in generative.items():
            generator = model.generator
            generation_metrics.track(name, lambda g=generator: g.running, lambda g=generator: g.waiting)
            metrics_.track_queue(name, lambda g=generator: g.waiting)  # what the harness's sampler reads as the queue
            generator.start()
        if capture:
            capture.start()
        memory.start()
        if grpc:
            await grpc.start()
        state.ready = True
        yield
        state.ready = False
        if grpc:  # serve.py began this stop when HTTP's began; it ends before the queues drain
            await grpc.stop(GRACEFUL_SHUTDOWN_S)
        await memory.stop()
        try:
            for batcher in state.batchers.values():
                await batcher.stop()
            for model in generative.values():
                await model.generator.stop()
        finally:
            if capture:  # uvicorn has let in-flight requests finish: their lines are all pending now
                await capture.close()

    app = Starlette(
        routes=_routes(),
        lifespan=lifespan,
        middleware=[
            *([Middleware(CaptureMiddleware, capture=capture)] if capture else []),
            Middleware(EarlyRefusal, state=state),
            Middleware(ReleaseMemoryMiddleware, releaser=memory),
        ],
        exception_handlers={
            RequestError: on_request_error,
            HTTPException: on_http_error,
            Exception: on_unexpected,
        },
    )
    app.state.server = state
    app.state.grpc = grpc
    return app


def _grpc_endpoint(state: ServerState) -> GrpcEndpoint | None:
    """The gRPC endpoint, bound now (a port in use fails before HTTP binds), when ``--grpc-port`` asks for one.

    grpc is imported only then: a REST-only server never loads it.
    """
    if state.config.grpc_port is None:
        return None
    from .grpc_server import GrpcEndpoint

    return GrpcEndpoint(state)


__all__ = ["create_app", "ServerState"]
