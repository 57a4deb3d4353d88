"""Messy traffic: malformed, edge-case and hostile requests, each with the outcome a sound endpoint gives.

Production traffic is never clean: missing fields, wrong types, NaN, empty and enormous inputs,
other scripts, duplicates, now and then something hostile. A kind is one such request, built for
the scenario's protocol (OIP v2, OpenAI embeddings, a JSON template) and payload (text or
features), with what a sound endpoint should answer:

- ``reject``: a 4xx (malformed JSON, a schema violation, a body over the limit);
- ``accept``: a 200 with a valid answer (edge-case text a text model must handle);
- ``either``: both are sound (a huge batch, text past the token limit); the answer is recorded.

This module names the kinds and builds their bodies. Pure: bodies are bytes built from a seed,
the same seed gives the same bytes, and nothing here touches a network. Beside it: ``custom``
reads a user's own kinds, ``picks`` chooses which arrivals are messy, ``verdicts`` judges answers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import orjson

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


OIP, OPENAI, JSON = "oip-v2", "openai-embeddings", "http-json"
_ALL_P = frozenset({OIP, OPENAI, JSON})
_TEXT, _FEATURES = frozenset({"text"}), frozenset({"features"})

KINDS: dict[str, Kind] = {
    k.name: k
    for k in (
        Kind("invalid_json", "structure", REJECT, "a body that is not JSON (single quotes)"),
        Kind("truncated_body", "structure", REJECT, "a valid body cut off part-way"),
        Kind("wrong_content_type", "structure", REJECT, "a valid body sent as text/plain", frozenset({OIP, OPENAI})),
        Kind("missing_input", "schema", REJECT, "no input at all"),
        Kind("extra_input", "schema", REJECT, "an input tensor the model does not have", frozenset({OIP})),
        Kind("unknown_field", "schema", EITHER, "an extra top-level field", frozenset({OPENAI, JSON})),
        Kind("wrong_datatype", "schema", REJECT, "numbers where text goes, or text where numbers go"),
        Kind("shape_mismatch", "schema", REJECT, "a shape that does not match the data", frozenset({OIP})),
        Kind("null_value", "schema", REJECT, "null where the input goes"),
        Kind("nested_value", "schema", REJECT, "a nested list or object where a value goes"),
        Kind("negative_values", "range", EITHER, "large negative features", sources=_FEATURES),
        Kind("huge_values", "range", EITHER, "features of 1e300, past float32", sources=_FEATURES),
        Kind("nan_infinity", "range", REJECT, "NaN and Infinity, which JSON does not allow", sources=_FEATURES),
        Kind("empty_string", "text", ACCEPT, "an empty text", sources=_TEXT),
        Kind("one_character", "text", ACCEPT, "a text of one character", sources=_TEXT),
        Kind("whitespace_only", "text", ACCEPT, "spaces, tabs and newlines only", sources=_TEXT),
        Kind("beyond_token_limit", "text", EITHER, "about 5,000 tokens: truncate or refuse", sources=_TEXT),
        Kind("large_batch", "text", EITHER, "256 texts in one request", frozenset({OIP, OPENAI}), _TEXT),
        Kind("mixed_scripts", "text", ACCEPT, "CJK, Arabic and Devanagari in one text", sources=_TEXT),
        Kind("emoji", "text", ACCEPT, "emoji, skin tones and joiners", sources=_TEXT),
        Kind("control_characters", "text", ACCEPT, "NUL, BEL, ESC and other control characters", sources=_TEXT),
        Kind("invalid_utf8", "text", REJECT, "bytes that are not UTF-8 inside a JSON string", sources=_TEXT),
        Kind("duplicate", "duplicate", ACCEPT, "a clean request sent twice at once"),
        Kind("oversized", "size", REJECT, "a body past the size limit (oversized_bytes)"),
    )
}
SCRIPTS = ("日本語のテキストです", "مرحبا بالعالم", "नमस्ते दुनिया", "中文文本", "한국어 텍스트", "Ελληνικά", "עברית")
EMOJI = ("🚀", "🔥", "👍🏽", "👩‍💻", "🇯🇵", "😀", "🧪", "❤️")
CONTROL = ("\x00", "\x07", "\x1b[31m", "\x08", "\x0c", "\x7f", "\u200b", "\u202e")


def kinds_for(form: RequestForm) -> list[str]:
    """The kinds that make sense for this protocol and payload, in the order of ``KINDS``."""
    source = "text" if form.source == "jsonl" else form.source
    return [k.name for k in KINDS.values() if form.protocol in k.protocols and source in k.sources]


# -- building bodies ------------------------------------------------------------------------------


def _text(rng: np.random.Generator, words: int) -> str:
    return " ".join(WORDS[i] for i in rng.integers(0, len(WORDS), size=words))


def _row(rng: np.random.Generator, width: int) -> list[float]:
    return rng.normal(2.0, 1.5, size=width).round(3).tolist()


def _oip(name: str, datatype: str, shape: list[int], data: object) -> dict:
    return {"inputs": [{"name": name, "datatype": datatype, "shape": shape, "data": data}]}


def _value_body(form: RequestForm, value: object, datatype: str | None = None, dims: list[int] | None = None) -> bytes:
    """A body of the scenario's protocol with ``value`` where the input goes (any JSON value)."""
    if form.protocol == OIP:
        if datatype is None:
            datatype = "FP32" if form.source == "features" else "BYTES"
        flat = value if isinstance(value, list) else [value]
        return orjson.dumps(_oip(form.input_name, datatype, dims or [len(flat)], flat))
    if form.protocol == OPENAI:
        return orjson.dumps({"model": form.model, "input": value})
    template = form.template or '{"text": "{{text}}"}'
    return template.replace('"{{text}}"', orjson.dumps(value).decode()).encode()


def clean_body(form: RequestForm, rng: np.random.Generator) -> bytes:
    if form.source == "features":
        row = _row(rng, form.width)
        return _value_body(form, row, dims=[1, form.width]) if form.protocol == OIP else _value_body(form, row)
    return _value_body(form, _text(rng, int(rng.integers(4, 16))))


def _invalid_json(form: RequestForm, rng) -> bytes:
    return clean_body(form, rng).replace(b'"', b"'", 2)


def _truncated(form: RequestForm, rng) -> bytes:
    body = clean_body(form, rng)
    return body[: max(1, int(len(body) * rng.uniform(0.3, 0.9)))]


def _missing(form: RequestForm, rng) -> bytes:
    if form.protocol == OIP:
        return orjson.dumps({"inputs": []})
    if form.protocol == OPENAI:
        return orjson.dumps({"model": form.model})
    return b"{}"


def _extra_input(form: RequestForm, rng) -> bytes:
    doc = orjson.loads(clean_body(form, rng))
    doc["inputs"].append({"name": "unexpected_input", "datatype": "FP32", "shape": [1], "data": [1.0]})
    return orjson.dumps(doc)


def _unknown_field(form: RequestForm, rng) -> bytes:
    doc = orjson.loads(clean_body(form, rng))
    if not isinstance(doc, dict):
        return orjson.dumps({"unexpected_field": True, "value": doc})
    doc["unexpected_field"] = {"nested": [1, 2, 3]}
    return orjson.dumps(doc)


def _wrong_datatype(form: RequestForm, rng) -> bytes:
    if form.source == "features":
        strings = [_text(rng, 1) for _ in range(form.width)]
        return (
            _value_body(form, strings, "FP32", [1, form.width]) if form.protocol == OIP else _value_body(form, strings)
        )
    numbers = _row(rng, 2)
    return _value_body(form, numbers, "FP32") if form.protocol == OIP else _value_body(form, numbers)


def _shape_mismatch(form: RequestForm, rng) -> bytes:
    if form.source == "features":
        return _value_body(form, _row(rng, form.width), dims=[1, form.width + 3])
    return _value_body(form, [_text(rng, 3), _text(rng, 3)], dims=[3])


def _null(form: RequestForm, rng) -> bytes:
    return _value_body(form, [None] if form.protocol == OIP else None)


def _nested(form: RequestForm, rng) -> bytes:
    if form.protocol == OIP:
        return _value_body(form, [[_text(rng, 2), [_text(rng, 2)]]], dims=[1])
    if form.protocol == OPENAI:
        return _value_body(form, [[_text(rng, 2)], {"text": _text(rng, 2)}])
    return _value_body(form, {"nested": {"text": _text(rng, 3)}})


def _features(form: RequestForm, values: list[float]) -> bytes:
    return _value_body(form, values, dims=[1, form.width]) if form.protocol == OIP else _value_body(form, values)


def _negative(form: RequestForm, rng) -> bytes:
    return _features(form, (-rng.uniform(1e3, 1e6, size=form.width)).round(1).tolist())


def _huge(form: RequestForm, rng) -> bytes:
    return _features(form, [1e300 * float(rng.choice([1, -1]))] * form.width)


def _nan(form: RequestForm, rng) -> bytes:
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
    body = _value_body(form, f"{_text(rng, 3)} {marker} {_text(rng, 2)}")
    bad = bytes(rng.choice([0xFF, 0xFE, 0xC3, 0x80, 0xED], size=4).tolist())
    return body.replace(marker.encode(), b"bad " + bad + b" bytes")


def _oversized(form: RequestForm, rng) -> bytes:
    body = clean_body(form, rng)
    pad = max(0, form.oversized_bytes - len(body) + 16)
    if body.startswith(b"{"):
        return b'{"padding": "' + b"x" * pad + b'", ' + body[1:]
    return body + b" " * pad


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
}


def build(kind: str, form: RequestForm, seed: int, variant: int = 0) -> MessyRequest:
    """One body of one kind: the same (kind, form, seed, variant) gives the same bytes."""
    spec = KINDS[kind]
    rng = np.random.default_rng([seed, list(KINDS).index(kind), variant])
    body = BUILDERS[kind](form, rng)
    content_type = "text/plain" if kind == "wrong_content_type" else "application/json"
    return MessyRequest(kind, spec.expect, body, content_type, twin=kind == "duplicate")


def build_all(
    kinds: list[str], form: RequestForm, seed: int, variants: int = VARIANTS
) -> dict[str, list[MessyRequest]]:
    """Every kind's bodies; an oversized body is built once (it is megabytes)."""
    return {k: [build(k, form, seed, v) for v in range(1 if k == "oversized" else variants)] for k in kinds}
