"""Messy traffic: malformed, edge-case and hostile requests, each with the outcome a sound endpoint gives.

Production traffic is never clean: missing fields, wrong types, NaN, empty and enormous inputs,
other scripts, duplicates, now and then something hostile. A kind is one such request, built for
the scenario's protocol (OIP v2, OpenAI embeddings, a JSON template) and payload (text or
features), with what a sound endpoint should answer:

- ``reject``: a 4xx (malformed JSON, a schema violation, a body over the limit);
- ``accept``: a 200 with a valid answer (edge-case text a text model must handle);
- ``either``: both are sound (a huge batch, text past the token limit); the answer is recorded.

Every answer gets one verdict: ``correct`` (as expected), ``wrong`` (a 200 for garbage, a 4xx for
valid text) or ``defect`` (a 5xx, a reset connection, a timeout: never sound). Pure: bodies are
bytes built from a seed, the same seed gives the same bytes, and nothing here touches a network.
"""

from __future__ import annotations

import base64
import binascii
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson

from loadtest.errors import ConfigError
from loadtest.traffic.payloads import WORDS, _splitmix64, json_objects

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


# -- custom kinds -----------------------------------------------------------------------------------


def read_custom(path: Path) -> dict[str, list[MessyRequest]]:
    """A user's kinds: JSONL lines of ``{"kind", "expect", "body" | "body_base64", "content_type"}``."""
    kinds: dict[str, list[MessyRequest]] = {}
    for where, doc in json_objects(path, "messy kinds file"):
        name, expect = doc.get("kind"), doc.get("expect", EITHER)
        if not isinstance(name, str) or not name.replace("_", "").replace("-", "").isalnum():
            raise ConfigError(where, "kind", "must be a name of letters, digits, _ and -")
        if name in KINDS:
            raise ConfigError(where, "kind", f"{name!r} is a built-in kind; name yours differently")
        if expect not in EXPECTS:
            raise ConfigError(where, "expect", f"must be one of {', '.join(EXPECTS)}, got {expect!r}")
        if "body_base64" in doc:
            try:
                body = base64.b64decode(str(doc["body_base64"]), validate=True)
            except (binascii.Error, ValueError):
                raise ConfigError(where, "body_base64", "is not valid base64") from None
        elif "body" in doc:
            body = orjson.dumps(doc["body"])
        else:
            raise ConfigError(where, None, "needs 'body' (JSON) or 'body_base64' (exact bytes)")
        content_type = doc.get("content_type", "application/json")
        if not isinstance(content_type, str):
            raise ConfigError(where, "content_type", "must be a string")
        kinds.setdefault(name, []).append(MessyRequest(name, expect, body, content_type))
    if not kinds:
        raise ConfigError(str(path), None, "holds no kinds")
    return kinds


# -- verdicts -------------------------------------------------------------------------------------


def verdict(expect: str, outcome: str) -> str:
    """``outcome`` as the recorder names it: "" (a 2xx with a valid body), "http_404", "timeout", ...

    A 5xx, a timeout or a broken connection is a defect whatever was expected; a 2xx whose body is
    not a valid answer is wrong whatever was expected (a garbage 200 is never sound).
    """
    if outcome == "":
        return WRONG if expect == REJECT else CORRECT
    if outcome.startswith("http_"):
        status = int(outcome.removeprefix("http_"))
        if status >= 500:
            return DEFECT
        if 400 <= status < 500:
            return WRONG if expect == ACCEPT else CORRECT
        return WRONG  # 1xx, 3xx
    if outcome == "invalid_body":
        return WRONG
    return DEFECT  # timeout, connection, and any exception the client raised


# -- picking messy arrivals -----------------------------------------------------------------------

_SALT = 0x6D657373  # "mess": messy picks are independent of the payload picks of the same seed


def unit(seed: int, index: int, salt: int) -> float:
    """A number in [0, 1) that depends only on (seed, index, salt)."""
    with np.errstate(over="ignore"):
        base = np.uint64((seed * 0x9E3779B97F4A7C15 + salt * 0xBF58476D1CE4E5B9) % 2**64)
        return float(_splitmix64(base + np.uint64(index))) / 2**64


class MessyPool:
    """Which arrivals are messy, and with which body; arrival i's pick depends on the seed and i only.

    Stratified, not drawn: arrival i is messy when ``i * share`` (plus a seeded phase) crosses a
    whole number, so the share holds exactly over any stretch of traffic, and the m-th messy arrival
    takes the m-th kind of a seeded, shuffled cycle in which each kind appears in proportion to its
    weight. Every kind is sent within one cycle's worth of messy arrivals (the number of kinds, for
    equal weights), which a random draw per arrival would not promise in a short run.
    """

    def __init__(self, bodies: dict[str, list[MessyRequest]], weights: dict[str, float], share: float, seed: int):
        kinds = [k for k in weights if bodies.get(k) and weights[k] > 0]
        if not kinds:
            raise ValueError("no messy kinds to send")
        self.bodies, self.share = bodies, share
        smallest = min(weights[k] for k in kinds)
        counts = {k: max(1, round(weights[k] / smallest)) for k in kinds}
        if sum(counts.values()) > MAX_CYCLE:  # very uneven weights: keep the cycle short, the proportions close
            scale = MAX_CYCLE / sum(counts.values())
            counts = {k: max(1, round(n * scale)) for k, n in counts.items()}
        cycle = [k for k in kinds for _ in range(counts[k])]
        np.random.default_rng([seed, _SALT]).shuffle(cycle)
        self.cycle = cycle
        self.phase = unit(seed, 0, _SALT)

    def pick(self, index: int) -> MessyRequest | None:
        if self.share <= 0:
            return None
        before = math.floor(index * self.share + self.phase)
        if math.floor((index + 1) * self.share + self.phase) == before:
            return None
        turn, at = divmod(before, len(self.cycle))
        bodies = self.bodies[self.cycle[at]]
        return bodies[turn % len(bodies)]


# -- the summary ----------------------------------------------------------------------------------


def summarise(verdicts: Mapping[str, Mapping[str, int]], scheduled: Mapping[str, int]) -> dict:
    """Verdicts by kind from the recorder's counts: messy class -> ``<verdict>:<expect>:<answer>`` -> count.

    ``scheduled`` is each messy class's scheduled arrivals (a duplicate counts twice), so a kind
    whose requests were dropped or never answered still shows how many were meant.
    """
    kinds: dict[str, dict] = {}
    for cls, labels in verdicts.items():
        for label, count in labels.items():
            found, expect, answer = label.split(":", 2)
            entry = _entry(kinds, cls, expect)
            entry[found] += count
            entry["answers"][answer] = entry["answers"].get(answer, 0) + count
    for cls, n in scheduled.items():
        if cls.startswith(CLASS_PREFIX):
            _entry(kinds, cls, None)["scheduled"] = n
    totals = {v: sum(k[v] for k in kinds.values()) for v in VERDICTS}
    return {
        "kinds": dict(sorted(kinds.items())),
        "requests": sum(k["scheduled"] for k in kinds.values()),
        "correct": totals[CORRECT],
        "wrong": totals[WRONG],
        "defects": totals[DEFECT],
    }


def _entry(kinds: dict[str, dict], cls: str, expect: str | None) -> dict:
    kind = cls.removeprefix(CLASS_PREFIX)
    entry = kinds.setdefault(
        kind,
        {"expect": expect, "category": KINDS[kind].category if kind in KINDS else "custom", "scheduled": 0}
        | {v: 0 for v in VERDICTS}
        | {"answers": {}},
    )
    if expect is not None:
        entry["expect"] = expect
    return entry
