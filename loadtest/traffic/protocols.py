"""How each protocol shapes a request and recognises a valid answer.

- ``oip-v2``: Open Inference Protocol (KServe V2) ``POST /v2/models/{model}/infer``;
- ``openai-embeddings``: ``POST /v1/embeddings``;
- ``http-json``: any JSON endpoint, with a body template whose ``"{{text}}"`` is replaced;
- ``oip-v2-grpc``: the Open Inference Protocol over gRPC, ``inference.GRPCInferenceService/ModelInfer``
  (its ``path`` is the method's); bodies are ModelInferRequest bytes (``grpc_messages``), sent as they are;
- ``openai-chat`` and ``openai-completions``: ``POST /v1/chat/completions`` and ``/v1/completions``, a
  prompt and an output length per request (``encode_prompt``), streamed as Server-Sent Events unless
  the scenario's ``[generation] stream = false`` (``traffic.sse`` reads the stream).

A 200 whose body is not what the protocol promises is an error of its own kind
(``invalid_body``): a server that answers fast with garbage is not fast; over gRPC the body must be
a ModelInferResponse with outputs. The check parses every body; a scenario can turn it off
(``[target] validate = false``) where parsing large answers would cost the load generator too much.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import orjson

GRPC = "oip-v2-grpc"
CHAT, COMPLETIONS = "openai-chat", "openai-completions"
GENERATIVE = (CHAT, COMPLETIONS)
PROTOCOLS = ("oip-v2", "openai-embeddings", "http-json", GRPC, *GENERATIVE)
DEFAULT_OUTPUT_TOKENS = 64  # a generative request's max_tokens where its class gives no output length


@dataclass(frozen=True)
class Generation:
    """How a generative request asks for its output (``[generation]`` in a scenario).

    ``ignore_eos`` is vLLM's extension (also SGLang's and TGI's OpenAI route): the answer is exactly
    ``max_tokens`` long, so the output lengths a scenario draws are the ones served. A server that
    does not know it ignores it, and then the answer may stop early; the token counts say so.
    """

    stream: bool = True
    include_usage: bool = True  # stream_options.include_usage: the server counts the tokens, where it honours it
    ignore_eos: bool = True


@dataclass(frozen=True)
class Protocol:
    name: str
    path: str
    encode_text: Callable[[str], bytes]
    encode_features: Callable[[list[float]], bytes]
    valid: Callable[[bytes], bool]
    # Generative protocols: (prompt, max_tokens) -> body, and whether the answer streams.
    encode_prompt: Callable[[str | list[dict], int], bytes] | None = None
    stream: bool = False


def _json_with(key: str) -> Callable[[bytes], bool]:
    def valid(body: bytes) -> bool:
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError:
            return False
        return isinstance(doc, dict) and isinstance(doc.get(key), list) and bool(doc[key])

    return valid


def _any_json(body: bytes) -> bool:
    try:
        orjson.loads(body)
    except orjson.JSONDecodeError:
        return False
    return True


def unchecked(body: bytes) -> bool:
    """Any body is a valid answer: the check is off, or there is no protocol to check against."""
    return True


def make_protocol(
    name: str,
    model: str,
    input_name: str = "text",
    path: str = "",
    template: str = "",
    validate: bool = True,
    generation: Generation = Generation(),
) -> Protocol:
    """The protocol's request shapes and body check; ``validate=False`` trusts any 2xx body (cheaper)."""
    if name in GENERATIVE:
        protocol = _generative(name, model, path, generation)
    else:
        protocol = _make_protocol(name, model, input_name, path, template)
    return protocol if validate else dataclasses.replace(protocol, valid=unchecked)


def generation_body(name: str, model: str, prompt: str | list[dict], max_tokens: int, generation: Generation) -> dict:
    """One chat or completions request as OpenAI's API (and vLLM's extensions) spell it.

    ``prompt`` is a text, or a conversation's messages (a multi-turn class), which a completions
    request sends as one text, a message a line.
    """
    body: dict = {"model": model}
    if name == CHAT:
        body["messages"] = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
    else:
        body["prompt"] = (
            prompt if isinstance(prompt, str) else "\n".join(f"{m['role']}: {m['content']}" for m in prompt)
        )
    body["max_tokens"] = max_tokens
    if generation.ignore_eos:
        body["ignore_eos"] = True
    if generation.stream:
        body["stream"] = True
        if generation.include_usage:
            body["stream_options"] = {"include_usage": True}
    return body


def _generative(name: str, model: str, path: str, generation: Generation) -> Protocol:
    def encode_prompt(prompt: str | list[dict], max_tokens: int) -> bytes:
        return orjson.dumps(generation_body(name, model, prompt, max_tokens, generation))

    default = "/v1/chat/completions" if name == CHAT else "/v1/completions"
    return Protocol(
        name,
        path or default,
        lambda text: encode_prompt(text, DEFAULT_OUTPUT_TOKENS),
        lambda row: encode_prompt(" ".join(map(str, row)), DEFAULT_OUTPUT_TOKENS),
        unchecked if generation.stream else _json_with("choices"),  # a stream is judged by its reader
        encode_prompt,
        generation.stream,
    )


def _make_protocol(name: str, model: str, input_name: str, path: str, template: str) -> Protocol:
    if name == GRPC:
        from loadtest.traffic import grpc_messages  # protobuf's classes load only for a gRPC scenario

        return Protocol(
            name,
            grpc_messages.INFER_METHOD,
            lambda text: grpc_messages.text_request(model, input_name, text),
            lambda row: grpc_messages.features_request(model, input_name, row),
            grpc_messages.has_outputs,
        )
    if name == "oip-v2":
        return Protocol(
            name,
            path or f"/v2/models/{model}/infer",
            lambda text: orjson.dumps(
                {"inputs": [{"name": input_name, "datatype": "BYTES", "shape": [1], "data": [text]}]}
            ),
            lambda row: orjson.dumps(
                {"inputs": [{"name": input_name, "datatype": "FP32", "shape": [1, len(row)], "data": row}]}
            ),
            _json_with("outputs"),
        )
    if name == "openai-embeddings":
        return Protocol(
            name,
            path or "/v1/embeddings",
            lambda text: orjson.dumps({"model": model, "input": text}),
            lambda row: orjson.dumps({"model": model, "input": row}),
            _json_with("data"),
        )
    template = template or '{"text": "{{text}}"}'

    def fill(value: object) -> bytes:
        return template.replace('"{{text}}"', orjson.dumps(value).decode()).encode()

    return Protocol(name, path or "/", fill, fill, _any_json)
