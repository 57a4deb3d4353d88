"""Messy traffic: malformed, edge-case and hostile requests, each with the outcome a sound endpoint gives.

Production traffic is never clean: missing fields, wrong types, NaN, empty and enormous inputs,
other scripts, duplicates, now and then something hostile. A kind is one such request, built for
the scenario's protocol (OIP v2, OpenAI embeddings, a JSON template) and payload (text or
features), with what a sound endpoint should answer:

- ``reject``: a 4xx (malformed JSON, a schema violation, a body over the limit);
- ``accept``: a 200 with a valid answer (edge-case text a text model must handle);
- ``either``: both are sound (a huge batch, text past the token limit); the answer is recorded.

Generative endpoints (``openai-chat``, ``openai-completions``) get the kinds that mean something for
a prompt, and their own: a broken message array, a role that does not exist, ``max_tokens`` of 0 and
of 10^9, a prompt past any small model's context, and a client that hangs up after the first
token (``hang_up``: the transport closes the connection; a sound server frees the sequence and
goes on serving the others).

Over gRPC (``oip-v2-grpc``) a refusal is a gRPC status of the client-error class (INVALID_ARGUMENT,
NOT_FOUND, RESOURCE_EXHAUSTED...: ``verdicts``) instead of a 4xx. Kinds about JSON or HTTP headers
have no meaning there and are skipped, each with its reason (``NOT_OVER_GRPC``); two kinds exist for
gRPC alone (``not_protobuf``, ``unknown_model``), and two expect differently over it
(``GRPC_EXPECT``: FP32 and BYTES tensors on the wire hold NaN and any bytes, which JSON cannot).

This module names the kinds and builds their bodies. Pure: bodies are bytes built from a seed,
the same seed gives the same bytes, and nothing here touches a network. Beside it: ``custom``
reads a user's own kinds, ``picks`` chooses which arrivals are messy, ``verdicts`` judges answers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import orjson

from loadtest.traffic import grpc_messages as wire
from loadtest.traffic.grpc_messages import Tensor
from loadtest.traffic.payloads import WORDS

REJECT, ACCEPT, EITHER = "reject", "accept", "either"
EXPECTS = (REJECT, ACCEPT, EITHER)
CORRECT, WRONG, DEFECT = "correct", "wrong", "defect"
VERDICTS = (CORRECT, WRONG, DEFECT)
CLASS_PREFIX = "messy:"  # messy requests are recorded under classes of their own: messy:<kind>
VARIANTS = 4  # bodies per kind, so a kind is not one fixed string
MAX_CYCLE = 1000  # the longest cycle of kinds (see MessyPool)
DEFAULT_OVERSIZED = 9 * 1024 * 1024  # past the reference server's 8 MiB limit


@dataclass(frozen=True)
class Kind:
    name: str
    category: str  # structure, schema, range, text, duplicate, size, custom
    expect: str
    about: str
    protocols: frozenset[str] = frozenset({"oip-v2", "openai-embeddings", "http-json"})
    sources: frozenset[str] = frozenset({"text", "features"})


@dataclass(frozen=True)
class MessyRequest:
    """One messy request: the exact bytes, their content type, and what a sound endpoint answers."""

    kind: str
    expect: str
    body: bytes
    content_type: str = "application/json"
    twin: bool = False  # a duplicate: the same request sent twice at once
    hang_up: bool = False  # a streamed request whose client closes the connection after the first token


@dataclass(frozen=True)
class RequestForm:
    """What a clean request of the scenario looks like, so each kind can be built for it."""

    protocol: str = "oip-v2"
    model: str = "minilm"
    input_name: str = "text"
    template: str = ""
    source: str = "text"  # text | features | jsonl (a file of bodies: messy kinds built as for text)
    width: int = 8
    oversized_bytes: int = DEFAULT_OVERSIZED
    stream: bool = True  # generative protocols: whether the scenario's requests stream


OIP, OPENAI, JSON, GRPC = "oip-v2", "openai-embeddings", "http-json", "oip-v2-grpc"
CHAT, COMPLETIONS = "openai-chat", "openai-completions"
_GEN = frozenset({CHAT, COMPLETIONS})
_ALL_P = frozenset({OIP, OPENAI, JSON}) | _GEN
_ANY = frozenset({OIP, OPENAI, JSON, GRPC}) | _GEN
_OIP_BOTH = frozenset({OIP, GRPC})
_TEXT, _FEATURES = frozenset({"text"}), frozenset({"features"})

KINDS: dict[str, Kind] = {
    k.name: k
    for k in (
        Kind("invalid_json", "structure", REJECT, "a body that is not JSON (single quotes)", _ALL_P),
        Kind("truncated_body", "structure", REJECT, "a valid body cut off part-way", _ANY),
        Kind("wrong_content_type", "structure", REJECT, "a valid body sent as text/plain", frozenset({OIP, OPENAI})),
        Kind("missing_input", "schema", REJECT, "no input at all", _ANY),
        Kind("extra_input", "schema", REJECT, "an input tensor the model does not have", _OIP_BOTH),
        Kind("unknown_field", "schema", EITHER, "an extra top-level field", frozenset({OPENAI, JSON, GRPC}) | _GEN),
        Kind("wrong_datatype", "schema", REJECT, "numbers where text goes, or text where numbers go", _ANY),
        Kind("shape_mismatch", "schema", REJECT, "a shape that does not match the data", _OIP_BOTH),
        Kind("null_value", "schema", REJECT, "null where the input goes", _ALL_P - {CHAT}),
        Kind("nested_value", "schema", REJECT, "a nested list or object where a value goes", _ALL_P),
        Kind("negative_values", "range", EITHER, "large negative features", _ANY, _FEATURES),
        Kind("huge_values", "range", EITHER, "features of 1e300, past float32", _ALL_P, _FEATURES),
        Kind("nan_infinity", "range", REJECT, "NaN and Infinity, which JSON does not allow", _ANY, _FEATURES),
        Kind("empty_string", "text", ACCEPT, "an empty text", _ANY, _TEXT),
        Kind("one_character", "text", ACCEPT, "a text of one character", _ANY, _TEXT),
        Kind("whitespace_only", "text", ACCEPT, "spaces, tabs and newlines only", _ANY, _TEXT),
        Kind("beyond_token_limit", "text", EITHER, "about 5,000 tokens: truncate or refuse", _ANY, _TEXT),
        Kind("large_batch", "text", EITHER, "256 texts in one request", frozenset({OIP, OPENAI, GRPC}), _TEXT),
        Kind("mixed_scripts", "text", ACCEPT, "CJK, Arabic and Devanagari in one text", _ANY, _TEXT),
        Kind("emoji", "text", ACCEPT, "emoji, skin tones and joiners", _ANY, _TEXT),
        Kind("control_characters", "text", ACCEPT, "NUL, BEL, ESC and other control characters", _ANY, _TEXT),
        Kind("invalid_utf8", "text", REJECT, "bytes that are not UTF-8 inside a JSON string", _ANY, _TEXT),
        Kind("duplicate", "duplicate", ACCEPT, "a clean request sent twice at once", _ANY),
        Kind("oversized", "size", REJECT, "a body past the size limit (oversized_bytes)", _ANY),
        # gRPC's alone, then generation's, and last: a kind's bodies are seeded by its place in this table
        Kind("not_protobuf", "structure", REJECT, "bytes that are not a protobuf message", frozenset({GRPC})),
        Kind("unknown_model", "schema", REJECT, "a model the server does not serve", frozenset({GRPC})),
        Kind(
            "broken_messages", "schema", REJECT, "messages that are not a list of role and content", frozenset({CHAT})
        ),
        Kind("wrong_role", "schema", REJECT, "a message whose role does not exist", frozenset({CHAT})),
        Kind("max_tokens_zero", "range", REJECT, "max_tokens of 0", _GEN, _TEXT),
        Kind("max_tokens_huge", "range", EITHER, "max_tokens of 10^9: refuse, or cap at the context", _GEN, _TEXT),
        Kind("past_context", "size", REJECT, "a prompt of about 40,000 tokens, past the context", _GEN, _TEXT),
        Kind("hang_up", "structure", ACCEPT, "a client that hangs up after the first token", _GEN, _TEXT),
    )
}
# 5,000 tokens are within some models' context and past others'; an empty prompt is an empty answer or a 400.
GENERATIVE_EXPECT = {"beyond_token_limit": EITHER, "empty_string": EITHER}
# Kinds that mean nothing over gRPC, and why: what ``loadtest probe`` says it skipped.
NOT_OVER_GRPC = {
    "invalid_json": "gRPC carries protobuf, not JSON; not_protobuf sends bytes that are not a message",
    "wrong_content_type": "grpcio sets gRPC's content type itself",
    "null_value": "protobuf has no null",
    "nested_value": "protobuf tensors are flat lists of one type",
    "huge_values": "FP32 on the wire cannot hold 1e300; nan_infinity sends Infinity",
}
# What a sound server answers over gRPC where it differs: FP32 holds NaN and Infinity, and a BYTES
# element holds any bytes (a server may decode it leniently or refuse it).
GRPC_EXPECT = {"nan_infinity": EITHER, "invalid_utf8": EITHER}
SCRIPTS = ("日本語のテキストです", "مرحبا بالعالم", "नमस्ते दुनिया", "中文文本", "한국어 텍스트", "Ελληνικά", "עברית")
EMOJI = ("🚀", "🔥", "👍🏽", "👩‍💻", "🇯🇵", "😀", "🧪", "❤️")
CONTROL = ("\x00", "\x07", "\x1b[31m", "\x08", "\x0c", "\x7f", "\u200b", "\u202e")


def kinds_for(form: RequestForm) -> list[str]:
    """The kinds that make sense for this protocol and payload, in the order of ``KINDS``."""
    source = "text" if form.source == "jsonl" else form.source
    return [k.name for k in KINDS.values() if form.protocol in k.protocols and source in k.sources]


def skipped_for(form: RequestForm) -> dict[str, str]:
    """The kinds of this payload that the protocol skips, each with the reason (gRPC's ``NOT_OVER_GRPC``)."""
    if form.protocol != GRPC:
        return {}
    source = "text" if form.source == "jsonl" else form.source
    return {name: why for name, why in NOT_OVER_GRPC.items() if source in KINDS[name].sources}


def expectation(kind: str, protocol: str) -> str:
    """What a sound endpoint answers to ``kind`` over ``protocol``."""
    if protocol == GRPC:
        return GRPC_EXPECT.get(kind, KINDS[kind].expect)
    if protocol in _GEN:
        return GENERATIVE_EXPECT.get(kind, KINDS[kind].expect)
    return KINDS[kind].expect


# -- building bodies ------------------------------------------------------------------------------


def _text(rng: np.random.Generator, words: int) -> str:
    return " ".join(WORDS[i] for i in rng.integers(0, len(WORDS), size=words))


def _row(rng: np.random.Generator, width: int) -> list[float]:
    return rng.normal(2.0, 1.5, size=width).round(3).tolist()


def _oip(name: str, datatype: str, shape: list[int], data: object) -> dict:
    return {"inputs": [{"name": name, "datatype": datatype, "shape": shape, "data": data}]}


def _generation(form: RequestForm, value: object, max_tokens: object = 16, **more: object) -> bytes:
    """A chat or completions request with ``value`` where the prompt goes (any JSON value)."""
    doc: dict = {"model": form.model}
    if form.protocol == CHAT:
        doc["messages"] = [{"role": "user", "content": value}]
    else:
        doc["prompt"] = value
    doc["max_tokens"] = max_tokens
    if form.stream:
        doc["stream"] = True
    return orjson.dumps({**doc, **more})


def _value_body(form: RequestForm, value: object, datatype: str | None = None, dims: list[int] | None = None) -> bytes:
    """A body of the scenario's protocol with ``value`` where the input goes (any JSON value).

    Over gRPC the value is a flat list of texts or numbers, written raw by its own type whatever
    ``datatype`` the tensor claims (so a wrong datatype is a real mismatch on the wire).
    """
    if form.protocol in (OIP, GRPC):
        if datatype is None:
            datatype = "FP32" if form.source == "features" else "BYTES"
        flat = value if isinstance(value, list) else [value]
        if form.protocol == GRPC:
            tensor = Tensor(form.input_name, datatype, tuple(dims or [len(flat)]), wire.elements(flat))
            return wire.infer_request(form.model, [tensor])
        return orjson.dumps(_oip(form.input_name, datatype, dims or [len(flat)], flat))
    if form.protocol == OPENAI:
        return orjson.dumps({"model": form.model, "input": value})
    if form.protocol in _GEN:
        return _generation(form, value)
    template = form.template or '{"text": "{{text}}"}'
    return template.replace('"{{text}}"', orjson.dumps(value).decode()).encode()


def clean_body(form: RequestForm, rng: np.random.Generator) -> bytes:
    if form.source == "features":
        row = _row(rng, form.width)
        return _value_body(form, row, dims=[1, form.width]) if form.protocol in _OIP_BOTH else _value_body(form, row)
    return _value_body(form, _text(rng, int(rng.integers(4, 16))))


def _invalid_json(form: RequestForm, rng) -> bytes:
    return clean_body(form, rng).replace(b'"', b"'", 2)


def _truncated(form: RequestForm, rng) -> bytes:
    body = clean_body(form, rng)
    return body[: max(1, int(len(body) * rng.uniform(0.3, 0.9)))]


def _missing(form: RequestForm, rng) -> bytes:
    if form.protocol == GRPC:
        return wire.infer_request(form.model, [])
    if form.protocol == OIP:
        return orjson.dumps({"inputs": []})
    if form.protocol == OPENAI:
        return orjson.dumps({"model": form.model})
    if form.protocol in _GEN:
        return orjson.dumps({"model": form.model, "max_tokens": 16})
    return b"{}"


def _extra_input(form: RequestForm, rng) -> bytes:
    if form.protocol == GRPC:
        return wire.infer_request(
            form.model, [_clean_tensor(form, rng), Tensor("unexpected_input", "FP32", (1,), wire.fp32_elements([1.0]))]
        )
    doc = orjson.loads(clean_body(form, rng))
    doc["inputs"].append({"name": "unexpected_input", "datatype": "FP32", "shape": [1], "data": [1.0]})
    return orjson.dumps(doc)


def _clean_tensor(form: RequestForm, rng) -> Tensor:
    if form.source == "features":
        return Tensor(form.input_name, "FP32", (1, form.width), wire.fp32_elements(_row(rng, form.width)))
    return Tensor(form.input_name, "BYTES", (1,), wire.bytes_elements([_text(rng, int(rng.integers(4, 16)))]))


def _unknown_field(form: RequestForm, rng) -> bytes:
    if form.protocol == GRPC:  # a field the message does not define, appended: protobuf parsers skip it
        return clean_body(form, rng) + wire.unknown_field(_text(rng, 3).encode())
    doc = orjson.loads(clean_body(form, rng))
    if not isinstance(doc, dict):
        return orjson.dumps({"unexpected_field": True, "value": doc})
    doc["unexpected_field"] = {"nested": [1, 2, 3]}
    return orjson.dumps(doc)


def _wrong_datatype(form: RequestForm, rng) -> bytes:
    if form.source == "features":
        strings = [_text(rng, 1) for _ in range(form.width)]
        if form.protocol in _OIP_BOTH:
            return _value_body(form, strings, "FP32", [1, form.width])
        return _value_body(form, strings)
    numbers = _row(rng, 2)
    return _value_body(form, numbers, "FP32") if form.protocol in _OIP_BOTH else _value_body(form, numbers)


def _shape_mismatch(form: RequestForm, rng) -> bytes:
    if form.source == "features":
        return _value_body(form, _row(rng, form.width), dims=[1, form.width + 3])
    return _value_body(form, [_text(rng, 3), _text(rng, 3)], dims=[3])


def _null(form: RequestForm, rng) -> bytes:
    return _value_body(form, [None] if form.protocol == OIP else None)


def _nested(form: RequestForm, rng) -> bytes:
    if form.protocol in _GEN:
        return _value_body(form, {"nested": {"text": _text(rng, 3)}})
    if form.protocol == OIP:
        return _value_body(form, [[_text(rng, 2), [_text(rng, 2)]]], dims=[1])
    if form.protocol == OPENAI:
        return _value_body(form, [[_text(rng, 2)], {"text": _text(rng, 2)}])
    return _value_body(form, {"nested": {"text": _text(rng, 3)}})


def _features(form: RequestForm, values: list[float]) -> bytes:
    return _value_body(form, values, dims=[1, form.width]) if form.protocol in _OIP_BOTH else _value_body(form, values)


def _negative(form: RequestForm, rng) -> bytes:
    return _features(form, (-rng.uniform(1e3, 1e6, size=form.width)).round(1).tolist())


def _huge(form: RequestForm, rng) -> bytes:
    return _features(form, [1e300 * float(rng.choice([1, -1]))] * form.width)


def _nan(form: RequestForm, rng) -> bytes:
    if form.protocol == GRPC:  # FP32 on the wire holds them as they are
        values = [float("nan"), float("inf"), float("-inf")] + [float(i + 4) for i in range(form.width - 3)]
        return _features(form, values[: form.width])
    body = _features(form, [float(i + 1) for i in range(form.width)])
    # orjson writes NaN as null; the literal tokens are what careless producers (Python's json) send.
    return body.replace(b"1.0", b"NaN", 1).replace(b"2.0", b"Infinity", 1).replace(b"3.0", b"-Infinity", 1)


def _text_kind(make: Callable[[np.random.Generator], str]):
    return lambda form, rng: _value_body(form, make(rng))


def _large_batch(form: RequestForm, rng) -> bytes:
    texts = [_text(rng, int(rng.integers(3, 12))) for _ in range(256)]
    return _value_body(form, texts)


def _invalid_utf8(form: RequestForm, rng) -> bytes:
    marker = "INVALIDUTF8MARK"
    text = f"{_text(rng, 3)} {marker} {_text(rng, 2)}"
    bad = b"bad " + bytes(rng.choice([0xFF, 0xFE, 0xC3, 0x80, 0xED], size=4).tolist()) + b" bytes"
    if form.protocol == GRPC:  # the element's length prefix must count the bytes that replace the marker
        element = text.encode().replace(marker.encode(), bad)
        return wire.infer_request(form.model, [Tensor(form.input_name, "BYTES", (1,), wire.bytes_elements([element]))])
    return _value_body(form, text).replace(marker.encode(), bad)


def _oversized(form: RequestForm, rng) -> bytes:
    body = clean_body(form, rng)
    pad = max(0, form.oversized_bytes - len(body) + 16)
    if form.protocol == GRPC:  # padding in a field the message does not define, as "padding" is over JSON
        return body + wire.unknown_field(b"x" * pad)
    if body.startswith(b"{"):
        return b'{"padding": "' + b"x" * pad + b'", ' + body[1:]
    return body + b" " * pad


def _not_protobuf(form: RequestForm, rng) -> bytes:
    # 0x67 opens field 12 with wire type 7, which protobuf does not have: no parser reads past it
    return b"\x67" + rng.bytes(int(rng.integers(8, 64)))


def _unknown_model(form: RequestForm, rng) -> bytes:
    return wire.infer_request(f"no-such-model-{int(rng.integers(1000, 9999))}", [_clean_tensor(form, rng)])


def _broken_messages(form: RequestForm, rng) -> bytes:
    broken = [
        {"role": "user", "content": _text(rng, 4)},  # not a list
        [{"role": "user"}],  # no content
        [{"content": _text(rng, 4)}],  # no role
        [_text(rng, 4)],  # a string where a message goes
    ]
    return orjson.dumps({"model": form.model, "messages": broken[int(rng.integers(0, len(broken)))], "max_tokens": 16})


def _wrong_role(form: RequestForm, rng) -> bytes:
    role = str(rng.choice(["wizard", "USER", "", "function_call"]))
    return orjson.dumps({"model": form.model, "messages": [{"role": role, "content": _text(rng, 5)}], "max_tokens": 16})


BUILDERS: dict[str, Callable[[RequestForm, np.random.Generator], bytes]] = {
    "invalid_json": _invalid_json,
    "truncated_body": _truncated,
    "wrong_content_type": clean_body,
    "missing_input": _missing,
    "extra_input": _extra_input,
    "unknown_field": _unknown_field,
    "wrong_datatype": _wrong_datatype,
    "shape_mismatch": _shape_mismatch,
    "null_value": _null,
    "nested_value": _nested,
    "negative_values": _negative,
    "huge_values": _huge,
    "nan_infinity": _nan,
    "empty_string": _text_kind(lambda rng: ""),
    "one_character": _text_kind(lambda rng: str(rng.choice(list("aZ7?é")))),
    "whitespace_only": _text_kind(lambda rng: "".join(rng.choice([" ", "\t", "\n", "\u00a0"], size=8))),
    "beyond_token_limit": _text_kind(lambda rng: _text(rng, 5000)),
    "large_batch": _large_batch,
    "mixed_scripts": _text_kind(lambda rng: " ".join(rng.choice(SCRIPTS, size=4, replace=False)) + " " + _text(rng, 3)),
    "emoji": _text_kind(lambda rng: " ".join(rng.choice(EMOJI, size=5)) + " " + _text(rng, 3)),
    "control_characters": _text_kind(lambda rng: _text(rng, 2).join(rng.choice(CONTROL, size=3))),
    "invalid_utf8": _invalid_utf8,
    "duplicate": clean_body,
    "oversized": _oversized,
    "not_protobuf": _not_protobuf,
    "unknown_model": _unknown_model,
    "broken_messages": _broken_messages,
    "wrong_role": _wrong_role,
    "max_tokens_zero": lambda form, rng: _generation(form, _text(rng, 6), 0),
    "max_tokens_huge": lambda form, rng: _generation(form, _text(rng, 6), 10**9),
    "past_context": lambda form, rng: _generation(form, _text(rng, 40_000)),
    "hang_up": lambda form, rng: _generation(form, _text(rng, 8), 32, stream=True),
}


def build(kind: str, form: RequestForm, seed: int, variant: int = 0) -> MessyRequest:
    """One body of one kind: the same (kind, form, seed, variant) gives the same bytes."""
    rng = np.random.default_rng([seed, list(KINDS).index(kind), variant])
    body = BUILDERS[kind](form, rng)
    content_type = "text/plain" if kind == "wrong_content_type" else "application/json"
    expect = expectation(kind, form.protocol)
    return MessyRequest(kind, expect, body, content_type, twin=kind == "duplicate", hang_up=kind == "hang_up")


def build_all(
    kinds: list[str], form: RequestForm, seed: int, variants: int = VARIANTS
) -> dict[str, list[MessyRequest]]:
    """Every kind's bodies; an oversized body is built once (it is megabytes)."""
    return {k: [build(k, form, seed, v) for v in range(1 if k == "oversized" else variants)] for k in kinds}
