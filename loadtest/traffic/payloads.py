"""Request payloads: request classes with weights, drawn reproducibly from a seed.

Two sources:
- ``text``: a built-in generator of English-like text in length classes (for example short
  <= 16 tokens, medium, long >= 128), each class a token range and a weight; for a generative
  protocol each class also draws an output length (``min_output_tokens`` to ``max_output_tokens``),
  sent as ``max_tokens``, and every prompt may start with one shared prefix (prefix caching shows);
  a class of ``turns`` above 1 is a conversation: each body carries the turns before it (the user's
  messages and the assistant's answers, text drawn from the seed), so its context grows turn by turn;
- ``features``: rows of numbers for tabular models (the fraud classifier);
- ``jsonl``: a file of request bodies, one JSON object per line, each optionally with a class.

A ``PayloadPool`` holds a fixed number of pre-encoded bodies per class, so the hot path only
picks one. The pick for arrival i depends only on the seed and i, so every variant and every
worker sees the same payloads in the same order.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson

from loadtest.errors import ConfigError
from loadtest.traffic.lines import MAX_LINE_BYTES, bounded_lines

# Common English words; nearly all are a single WordPiece token, so words ~ tokens.
WORDS = tuple(
    "the of and to in is was for that on with as by at from this be are it an or have not which but they "
    "his all were had there one can their has more will been when who would time also new other into two "
    "some than first then its only about year over these may after such most many people those work "
    "under state made any part between three well where much used system data model service user account "
    "order price delivery report network server query request response latency traffic payment invoice "
    "customer support refund update error login password search product review message team project "
    "cloud storage market energy health city music".split()
)


@dataclass(frozen=True)
class PayloadClass:
    name: str
    weight: float
    min_tokens: int = 0
    max_tokens: int = 0
    min_output_tokens: int = 0  # generative protocols: the answer's length, drawn per body (0: the default)
    max_output_tokens: int = 0
    turns: int = 1  # generative protocols: a conversation of this many turns, each body carrying those before it


@dataclass(frozen=True)
class Payload:
    """One request body, already encoded, and the class it is recorded under.

    A replayed request carries its own method, path and headers; the others use the protocol's.
    """

    cls: str
    body: bytes
    text: str | None = None
    method: str = "POST"
    path: str | None = None
    headers: dict[str, str] | None = None
    expect: str | None = None  # a messy request: the outcome a sound endpoint gives (messy.REJECT, ...)
    twin: bool = False  # a messy duplicate: sent twice at once
    hang_up: bool = False  # a messy streamed request: the connection is closed after the first token
    max_tokens: int = 0  # a generative request: the output length it asks for
    prompt_tokens: int | None = None  # a generative request's prompt, counted by the scenario's tokenizer


def generate_text(tokens: int, rng: np.random.Generator) -> str:
    """About ``tokens`` WordPiece tokens of text ([CLS] and [SEP] count as two)."""
    words = max(1, tokens - 2)
    picked = rng.choice(len(WORDS), size=words)
    sentence = " ".join(WORDS[i] for i in picked)
    return sentence[0].upper() + sentence[1:] + "."


_TWO64 = float(2**64)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_BLOCK = 4096


def splitmix64(x: np.ndarray) -> np.ndarray:
    """A fast, well-mixed hash of integers (uint64, wrapping): picks depend on (seed, index) only."""
    x = x + _GOLDEN
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


class PayloadPool:
    """Bodies per class and a deterministic picker: arrival i always gets the same payload.

    Picks are computed with numpy for blocks of 4,096 arrivals at a time, so a pick on the send
    path is a list lookup.
    """

    def __init__(self, payloads: dict[str, list[Payload]], weights: dict[str, float], seed: int) -> None:
        self.classes = [name for name in weights if payloads.get(name)]
        if not self.classes:
            raise ValueError("no payloads to send")
        self.payloads = payloads
        total = sum(weights[c] for c in self.classes)
        self.cumulative = list(itertools.accumulate(weights[c] / total for c in self.classes))
        self.seed = seed
        self._block = -1
        self._picked: list[Payload] = []

    def _picks(self, first_index: int, count: int) -> list[Payload]:
        base = np.uint64((self.seed * 0x9E3779B97F4A7C15) % 2**64)
        doubled = np.arange(first_index, first_index + count, dtype=np.uint64) * np.uint64(2)
        with np.errstate(over="ignore"):
            first, second = splitmix64(base + doubled), splitmix64(base + doubled + np.uint64(1))
        position = np.searchsorted(self.cumulative, first.astype(np.float64) / _TWO64, side="right")
        position = np.minimum(position, len(self.classes) - 1)
        sizes = np.array([len(self.payloads[c]) for c in self.classes], dtype=np.uint64)
        body = second % sizes[position]
        return [self.payloads[self.classes[c]][b] for c, b in zip(position.tolist(), body.tolist(), strict=True)]

    def only(self, cls: str) -> PayloadPool:
        """The same bodies of one class only, picked by the same rule: all traffic of one request class."""
        if cls not in self.classes:
            raise ValueError(f"no request class {cls!r}; the classes are {', '.join(self.classes)}")
        return PayloadPool({cls: self.payloads[cls]}, {cls: 1.0}, self.seed)

    def pick(self, index: int) -> Payload:
        block, at = divmod(index, _BLOCK)
        if block != self._block:
            self._picked, self._block = self._picks(block * _BLOCK, _BLOCK), block
        return self._picked[at]


def text_pool(
    classes: list[PayloadClass],
    encode,
    seed: int,
    per_class: int = 256,
    encode_prompt=None,
    shared_prefix_tokens: int = 0,
    default_output: int = 64,
    count_tokens=None,
) -> PayloadPool:
    """Texts per class; with ``encode_prompt`` (a generative protocol), each with an output length too.

    The prompts' lengths are drawn first and the output lengths after them, so a scenario that adds
    output lengths keeps the same prompts.
    """
    rng = np.random.default_rng(seed)
    prefix = generate_text(shared_prefix_tokens, np.random.default_rng(seed + 1)) + " " if shared_prefix_tokens else ""
    payloads = {}
    for cls in classes:
        lengths = rng.integers(cls.min_tokens, cls.max_tokens + 1, size=per_class)
        texts = [prefix + generate_text(int(n), rng) for n in lengths]
        if encode_prompt is None:
            payloads[cls.name] = [Payload(cls.name, encode(text), text) for text in texts]
            continue
        low, high = cls.min_output_tokens or default_output, cls.max_output_tokens or default_output
        outputs = rng.integers(low, max(low, high) + 1, size=per_class)
        prompts: list = conversations(texts, outputs, cls.turns, rng) if cls.turns > 1 else texts
        counted = [p if isinstance(p, str) else " ".join(m["content"] for m in p) for p in prompts]
        counts = count_tokens(counted) if count_tokens is not None else [None] * len(texts)
        payloads[cls.name] = [
            Payload(cls.name, encode_prompt(prompt, int(n)), text, max_tokens=int(n), prompt_tokens=count)
            for prompt, text, n, count in zip(prompts, counted, outputs, counts, strict=True)
        ]
    return PayloadPool(payloads, {c.name: c.weight for c in classes}, seed)


def conversations(texts: list[str], outputs, turns: int, rng: np.random.Generator) -> list[list[dict]]:
    """Each body a turn of a conversation of ``turns``: the user's texts in order, each earlier one answered.

    Body i is turn ``i % turns + 1`` of conversation ``i // turns``, its messages every turn up to
    it: so each conversation's bodies share their history, as a chat's requests do, and the later
    a turn the longer its context. The assistant's earlier answers are text of the lengths asked for.
    """
    bodies = []
    for i, text in enumerate(texts):
        first = i - i % turns
        history: list[dict] = []
        for j in range(first, i):
            history += [{"role": "user", "content": texts[j]}, {"role": "assistant", "content": _answer(outputs[j], j)}]
        bodies.append([*history, {"role": "user", "content": text}])
    return bodies


def _answer(tokens: int, index: int) -> str:
    """An earlier turn's answer: about ``tokens`` words, the same for the same turn whichever body carries it."""
    return generate_text(int(tokens) + 2, np.random.default_rng([index, int(tokens)]))


def features_pool(width: int, encode, seed: int, per_class: int = 256) -> PayloadPool:
    rng = np.random.default_rng(seed)
    rows = rng.normal(2.0, 1.5, size=(per_class, width)).round(3).astype(float)
    return PayloadPool(
        {"features": [Payload("features", encode(row.tolist())) for row in rows]}, {"features": 1.0}, seed
    )


def json_objects(
    path: Path, what: str, max_line: int = MAX_LINE_BYTES, raise_with: str = "payload.max_line_bytes"
) -> Iterator[tuple[str, dict]]:
    """("file:line", object) for each non-blank line of a JSONL file; one ConfigError naming the line if not.

    A line over ``max_line`` bytes is refused before it is read whole (``traffic.lines``).
    """
    if not path.exists():
        raise ConfigError(str(path), None, f"{what} not found")
    with path.open("rb") as f:
        for number, line in bounded_lines(f, str(path), max_line, raise_with):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            try:
                doc = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                raise ConfigError(where, None, f"not valid JSON: {exc}") from None
            if not isinstance(doc, dict):
                raise ConfigError(where, None, "each line must be a JSON object")
            yield where, doc


def jsonl_pool(
    path: Path,
    seed: int,
    default_class: str = "default",
    max_line: int = MAX_LINE_BYTES,
    raise_with: str = "payload.max_line_bytes",
) -> PayloadPool:
    """Bodies from a JSONL file: ``{"body": {...}, "class": "long"}`` or a bare JSON body per line."""
    payloads: dict[str, list[Payload]] = {}
    for where, doc in json_objects(path, "payload file", max_line, raise_with):
        if "body" in doc:
            cls = doc.get("class", default_class)
            if not isinstance(cls, str):
                raise ConfigError(where, "class", "must be a string")
            body = doc["body"]
        else:
            cls, body = default_class, doc
        payloads.setdefault(cls, []).append(Payload(cls, orjson.dumps(body)))
    if not payloads:
        raise ConfigError(str(path), None, "holds no request bodies")
    return PayloadPool(payloads, {cls: float(len(bodies)) for cls, bodies in payloads.items()}, seed)
