"""OpenAI's text generation routes: ``/v1/chat/completions``, ``/v1/completions``, ``/v1/models``, and the
server's own record of each completion, ``/debug/streams/{id}``.

A request is checked (``completion_request.py``), its prompt tokenised and checked against the
context, and it takes its place in the generator's queue (``generation.py``) before any answer
starts: a refusal is always a 4xx (503 for a full queue) with OpenAI's error shape, never a
stream that breaks. Then, streamed, the answer is Server-Sent Events as OpenAI and vLLM send them:

    data: {"id": "chatcmpl-…", "object": "chat.completion.chunk", "choices": [{"index": 0,
           "delta": {"role": "assistant", "content": ""}, "logprobs": null, "finish_reason": null}], …}
    data: {… "choices": [{"index": 0, "delta": {"content": "The"}, …}]}          one a token with text
    data: {… "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
    data: {… "choices": [], "usage": {"prompt_tokens": …}}    with stream_options.include_usage
    data: [DONE]

(``/v1/completions`` sends ``"object": "text_completion"`` and ``"text"`` in place of ``delta``, and
no role chunk.) A client that disconnects, streamed or not, cancels its sequence: its slot frees at
the generator's next iteration.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING

import orjson
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .completion_records import CompletionRecord
from .completion_request import CompletionRequest, parse_chat, parse_completion
from .disconnect import disconnected, unless_client_leaves
from .errors import BadRequest, ClientGone, NotFound, Overloaded, RequestError
from .generation import GenerationRequest, Token
from .generation_metrics import RequestObserver
from .inference import OFFLOAD_BYTES, max_values
from .json_body import parse_json
from .request_body import check_content_type, read_body
from .sampling import SamplingParams

if TYPE_CHECKING:
    from .generative_model import GenerativeModel
    from .state import ServerState

_STARTED = int(time.time())  # /v1/models' "created"
_ENDPOINTS = {"chat": "chat_completions", "completions": "completions"}


class Completion:
    """One request from submission to its last token: the tokens arrive on the event loop, the text is
    detokenised here, and the record and metrics follow each token."""

    def __init__(
        self,
        model: GenerativeModel,
        parsed: CompletionRequest,
        prompt: list[int],
        params: SamplingParams,
        record: CompletionRecord,
        observe: RequestObserver,
    ) -> None:
        self.model, self.parsed, self.record, self.observe = model, parsed, record, observe
        self._tokens: asyncio.Queue[Token] = asyncio.Queue()
        self.request = GenerationRequest(prompt, params, deliver=self._tokens.put_nowait)
        self.text = model.text_stream(parsed.stop)
        self.finish: str | None = None

    @property
    def done(self) -> bool:
        return self.finish is not None

    def submit(self) -> None:
        self.model.generator.submit(self.request)
        self.observe.admitted(len(self.request.prompt))

    async def deltas(self) -> AsyncIterator[str]:
        """The completion's text as it is generated, one piece a token that adds text; ``finish`` is set at the end."""
        while not self.done:
            token = await self._tokens.get()
            if token.id < 0:  # not a token: the sequence ended without one (cancelled, error, abort)
                self._end(token.finish or "error")
                break
            self._count(token)
            delta = self.text.push(token.id)
            if self.text.stopped:  # a stop string: the generator need not go on
                if token.finish is None:
                    self.model.generator.cancel(self.request)
                self._end("stop")
            elif token.finish is not None:
                delta += self.text.finish()
                self._end(token.finish)
            if delta:
                self.record.text += delta
                yield delta

    def cancel(self) -> None:
        """The client has gone: free the sequence's slot and end ``deltas``."""
        if not self.done:
            self.model.generator.cancel(self.request)
            self._tokens.put_nowait(Token(-1, time.perf_counter_ns(), "cancelled"))

    def abandon(self) -> None:
        """Nobody will read the rest: cancel the sequence and record it so."""
        if not self.done:
            self.cancel()
            self._end("cancelled")

    def _count(self, token: Token) -> None:
        times = self.record.token_times_ns
        self.observe.token(self.record.received_ns, times[-1] if times else None, token.time_ns)
        times.append(token.time_ns)

    def _end(self, reason: str) -> None:
        self.finish = self.record.finish_reason = reason
        self.record.finished_ns = time.perf_counter_ns()
        self.observe.finished(reason)

    def usage(self) -> dict:
        prompt, completion = len(self.request.prompt), self.record.completion_tokens
        return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


async def chat_completions(request: Request) -> Response:
    return await _complete(request, parse_chat)


async def completions(request: Request) -> Response:
    return await _complete(request, parse_completion)


async def _complete(request: Request, parse: Callable[[object], CompletionRequest]) -> Response:
    received = time.perf_counter_ns()
    state: ServerState = request.app.state.server
    check_content_type(request)
    raw = await read_body(request, state.config.max_body_bytes)
    parsed = parse(parse_json(raw, max_values(state.config)))
    model = generative_model(state, parsed.model)
    endpoint = _ENDPOINTS[parsed.endpoint]
    in_flight = state.metrics.in_flight.labels(model.name, model.version, endpoint)
    in_flight.inc()
    streaming = False
    try:
        try:
            completion = await _admit(state, model, parsed, len(raw), received)
        except RequestError as exc:
            state.metrics.count(model.name, endpoint, exc.status, (time.perf_counter_ns() - received) / 1e9)
            raise
        if parsed.stream:
            streaming = True  # the stream counts itself out when it ends
            return _EventStream(state, completion, endpoint, in_flight)
        return await _whole(state, request, completion, endpoint)
    finally:
        if not streaming:
            in_flight.dec()


async def _whole(state: ServerState, request: Request, completion: Completion, endpoint: str) -> Response:
    """The answer in one JSON body, once the last token is in; a client that leaves first cancels it."""
    name, received = completion.model.name, completion.record.received_ns
    try:
        await unless_client_leaves(request.receive, _drain(completion))
    except ClientGone:
        state.metrics.count(name, endpoint, ClientGone.status, (time.perf_counter_ns() - received) / 1e9)
        raise
    finally:
        completion.abandon()  # a no-op once it has finished; else (client gone, shutdown) it frees the slot
    status = _status(completion.finish)
    state.metrics.count(name, endpoint, status, (time.perf_counter_ns() - received) / 1e9)
    if status != 200:
        raise _failure(completion.finish)
    return Response(orjson.dumps(_whole_answer(completion)), media_type="application/json")


def generative_model(state: ServerState, name: str | None) -> GenerativeModel:
    """The ``model`` field: a text-generation model served here; absent or empty means the first one."""
    if not state.generative:
        raise NotFound("this server serves no text-generation model; start it with --model smollm2")
    if name is None:
        return next(iter(state.generative.values()))
    model = state.generative.get(name)
    if model is None:
        served = ", ".join(state.generative)
        raise NotFound(f"the model '{name[:80]}' does not exist; this server generates with: {served}")
    return model


async def _admit(
    state: ServerState, model: GenerativeModel, parsed: CompletionRequest, body_bytes: int, received: int
) -> Completion:
    """Tokenise the prompt, check it against the context, and queue the request: its ``Completion``."""
    if parsed.endpoint == "chat":
        messages = list(parsed.messages)
        prompt = await _tokenise(body_bytes, model.chat_ids, messages)
    elif isinstance(parsed.prompt, str):
        prompt = await _tokenise(body_bytes, model.text_ids, parsed.prompt)
    else:
        prompt = list(parsed.prompt)
        model.check_ids(prompt)
    params = _sampling_params(model, parsed, len(prompt))
    prefix = "chatcmpl-" if parsed.endpoint == "chat" else "cmpl-"
    record = CompletionRecord(
        f"{prefix}{uuid.uuid4().hex}", model.name, parsed.endpoint, parsed.stream, received, len(prompt)
    )
    completion = Completion(model, parsed, prompt, params, record, state.generation_metrics.request(model.name))
    completion.submit()
    state.completions.add(record)
    return completion


async def _tokenise(body_bytes: int, encode: Callable, argument) -> list[int]:
    """``encode(argument)``, on a worker thread when the body is big enough for that to take a while."""
    if body_bytes > OFFLOAD_BYTES:
        return await asyncio.to_thread(encode, argument)
    return encode(argument)


def _sampling_params(model: GenerativeModel, parsed: CompletionRequest, prompt_tokens: int) -> SamplingParams:
    context = model.max_context
    if prompt_tokens < 1:
        raise BadRequest("the prompt is empty: it must hold at least one token")
    room = context - prompt_tokens
    max_tokens = parsed.max_tokens if parsed.max_tokens is not None else room
    if max_tokens > room or room < 1:
        raise BadRequest(
            f"this model's maximum context length is {context} tokens; the request asks for "
            f"{prompt_tokens + max(max_tokens, 1)} ({prompt_tokens} in the prompt, {max(max_tokens, 1)} for the "
            "completion): shorten the prompt or lower max_tokens"
        )
    if parsed.min_tokens > max_tokens:
        raise BadRequest(f"'min_tokens' ({parsed.min_tokens}) must not exceed max_tokens ({max_tokens})")
    return SamplingParams(
        max_tokens=max_tokens,
        min_tokens=parsed.min_tokens,
        temperature=parsed.temperature,
        top_p=parsed.top_p,
        top_k=parsed.top_k,
        seed=parsed.seed,
        ignore_eos=parsed.ignore_eos,
    )


async def _drain(completion: Completion) -> None:
    async for _ in completion.deltas():
        pass


def _status(finish: str | None) -> int:
    return {"error": 500, "abort": 503, "cancelled": 499}.get(finish or "", 200)


class _GenerationFailed(RequestError):
    """The model runner failed (a bug, logged with its traceback): the sequences it ran end with 500."""

    status = 500


def _failure(finish: str | None) -> RequestError:
    if finish == "abort":
        return Overloaded("the server is shutting down; retry", {"Retry-After": "1"})
    return _GenerationFailed("generation failed: an internal error in the model runner (see the server's log)")


def _whole_answer(completion: Completion) -> dict:
    record, chat = completion.record, completion.parsed.endpoint == "chat"
    choice: dict = {"index": 0}
    if chat:
        choice["message"] = {"role": "assistant", "content": record.text}
    else:
        choice["text"] = record.text
    choice |= {"logprobs": None, "finish_reason": completion.finish}
    return {
        "id": record.id,
        "object": "chat.completion" if chat else "text_completion",
        "created": int(time.time()),
        "model": record.model,
        "choices": [choice],
        "usage": completion.usage(),
    }


class _EventStream:
    """The streamed answer, as an ASGI response: Server-Sent Events, one chunk a token with text.

    A watcher reads the connection while the stream is written: uvicorn does not cancel a handler
    whose client has gone, it answers its next ``receive()`` with ``http.disconnect``, so the
    sequence is cancelled the moment that comes (waiting in the queue or generating), not at a
    write that might never fail.
    """

    def __init__(self, state: ServerState, completion: Completion, endpoint: str, in_flight) -> None:
        self.state, self.completion, self.endpoint, self.in_flight = state, completion, endpoint, in_flight
        record = completion.record
        chat = completion.parsed.endpoint == "chat"
        self._chat = chat
        self._head = {
            "id": record.id,
            "object": "chat.completion.chunk" if chat else "text_completion",
            "created": int(time.time()),
            "model": record.model,
        }
        self._usage_field = {"usage": None} if completion.parsed.include_usage else {}

    async def __call__(self, scope, receive, send) -> None:
        completion = self.completion
        watcher = asyncio.ensure_future(disconnected(receive))
        watcher.add_done_callback(lambda w: None if w.cancelled() or w.exception() else completion.cancel())
        headers = [
            (b"content-type", b"text/event-stream; charset=utf-8"),
            (b"cache-control", b"no-cache"),
            (b"x-accel-buffering", b"no"),
        ]
        try:
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            async for event in self._events():
                await send({"type": "http.response.body", "body": event, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            watcher.cancel()
            completion.abandon()  # a no-op once it has finished
            status = _status(completion.finish)
            seconds = (time.perf_counter_ns() - completion.record.received_ns) / 1e9
            self.state.metrics.count(completion.model.name, self.endpoint, status, seconds)
            self.in_flight.dec()

    async def _events(self) -> AsyncIterator[bytes]:
        completion = self.completion
        if self._chat:
            yield self._chunk({"role": "assistant", "content": ""}, None)
        emits = completion.record.emit_times_ns
        async for delta in completion.deltas():
            chunk = self._chunk({"content": delta} if self._chat else delta, None)
            emits.append(time.perf_counter_ns())  # the chunk goes to the connection as this generator yields it
            yield chunk
        if completion.finish in ("error", "abort"):
            failure = _failure(completion.finish)
            kind = "server_error" if failure.status == 500 else "unavailable"
            yield _event({"error": {"message": str(failure), "type": kind, "code": failure.status}})
            return
        if completion.finish == "cancelled":
            return
        yield self._chunk({} if self._chat else "", completion.finish)
        if completion.parsed.include_usage:
            yield _event({**self._head, "choices": [], "usage": completion.usage()})
        yield b"data: [DONE]\n\n"

    def _chunk(self, content: dict | str, finish: str | None) -> bytes:
        choice: dict = {"index": 0}
        if self._chat:
            choice["delta"] = content
        else:
            choice["text"] = content
        choice |= {"logprobs": None, "finish_reason": finish}
        return _event({**self._head, "choices": [choice], **self._usage_field})


def _event(body: dict) -> bytes:
    return b"data: " + orjson.dumps(body) + b"\n\n"


async def list_models(request: Request) -> Response:
    """``GET /v1/models``: every model served, the generative ones with their context length."""
    state: ServerState = request.app.state.server
    data = [_model_card(name) for name in state.models]
    data += [{**_model_card(name), "max_model_len": model.max_context} for name, model in state.generative.items()]
    return JSONResponse({"object": "list", "data": data})


def _model_card(name: str) -> dict:
    return {"id": name, "object": "model", "created": _STARTED, "owned_by": "reference-server", "root": name}


async def debug_stream(request: Request) -> Response:
    """``GET /debug/streams/{id}``: the server's record of one of the last 1,024 completions."""
    state: ServerState = request.app.state.server
    id_ = request.path_params["id"]
    record = state.completions.get(id_)
    if record is None:
        raise NotFound(
            f"no completion '{id_[:80]}' among the last {state.completions.limit} this server kept; the id is "
            "the 'id' of a completion's answer"
        )
    return JSONResponse(record.as_json())


async def debug_streams(request: Request) -> Response:
    """``GET /debug/streams``: every record kept (the last 1,024 completions), oldest first."""
    state: ServerState = request.app.state.server
    return JSONResponse({"object": "list", "data": [record.as_json() for record in state.completions.all()]})


def routes() -> list[Route]:
    return [
        Route("/v1/chat/completions", chat_completions, methods=["POST"]),
        Route("/v1/completions", completions, methods=["POST"]),
        Route("/v1/models", list_models, methods=["GET"]),
        Route("/debug/streams", debug_streams, methods=["GET"]),
        Route("/debug/streams/{id}", debug_stream, methods=["GET"]),
    ]


__all__ = ["Completion", "generative_model", "routes"]
