"""Seeded malformed requests for the server's fuzz test: valid requests, mutated at every field and depth.

Plain functions and data, not tests (``test_server_hardening.py`` sends them). ``random.Random(seed)``
drives everything, so a failing case is reproduced by its seed and index. Each case starts from a
valid request, for either model, as JSON tensors or binary tensor data, or OpenAI embeddings, and
takes one to three mutations: a value anywhere in the document replaced by one of the wrong type
(list, object, null, boolean, huge or negative numbers, NaN strings, deep nesting), a key removed
or added, a list emptied or grown, a shape made huge, negative or wrong; then, for some, the bytes
themselves broken (truncated JSON, invalid UTF-8, stray bytes), and for binary requests the
``Inference-Header-Content-Length`` header and the binary part. Texts stay a word or two, so the
cases that stay valid cost the server little.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Iterator
from dataclasses import dataclass

import orjson

HEADER_LENGTH = "Inference-Header-Content-Length"
TEXT_INFER = "/v2/models/minilm/infer"
FRAUD_INFER = "/v2/models/fraud/infer"
EMBEDDINGS = "/v1/embeddings"
PATHS = (TEXT_INFER, FRAUD_INFER, EMBEDDINGS, "/v2/models/minilm/versions/fp32/infer", "/v2/models/nosuch/infer")


@dataclass(frozen=True)
class Case:
    path: str
    content: bytes
    headers: dict[str, str | bytes]


def _text(texts: list[str]) -> dict:
    return {
        "id": "fuzz",
        "inputs": [{"name": "text", "datatype": "BYTES", "shape": [len(texts)], "data": texts}],
        "outputs": [{"name": "embedding", "parameters": {"binary_data": False}}],
        "parameters": {"binary_data_output": False},
    }


def _fraud(rows: int) -> dict:
    data = [[1.0, 2.0, 0.5, 3.0, 6.0, 2.0, 1.0, 2.5] for _ in range(rows)]
    return {"inputs": [{"name": "features", "datatype": "FP32", "shape": [rows, 8], "data": data}]}


SEEDS: tuple[tuple[str, dict], ...] = (
    (TEXT_INFER, _text(["hi", "yo"])),
    (TEXT_INFER, {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [2, 1], "data": [["a"], ["b"]]}]}),
    (FRAUD_INFER, _fraud(2)),
    (FRAUD_INFER, {**_fraud(1), "outputs": [{"name": "probabilities"}], "id": "f"}),
    (EMBEDDINGS, {"model": "minilm", "input": ["hi"], "encoding_format": "float", "dimensions": 384, "user": "u"}),
    (EMBEDDINGS, {"input": "hello", "encoding_format": "base64"}),
)


def _deep(rng: random.Random) -> object:
    value: object = rng.choice([1, "x", None, {}])
    for _ in range(rng.randint(2, 60)):
        value = [value] if rng.random() < 0.7 else {"k": value}
    return value


WEIRD: tuple = (
    None,
    True,
    False,
    0,
    -1,
    1,
    129,
    2**31,
    2**63 - 1,
    -(2**63),
    2**64 - 1,
    1e308,
    -1e-308,
    0.5,
    -0.0,
    "",
    "NaN",
    "nan",
    "Infinity",
    "-inf",
    "\u0000",
    "\ud7ff\ue000",
    "BYTES",
    "FP32",
    "text",
    "features",
    "x" * 300,
    [],
    {},
    [None],
    [[]],
    [{}],
    {"a": {}},
    ["a", 1, None, True],
    [1] * 40,
    ["a"] * 130,
    [2**62],
    [-1],
    [1, -8],
    [0, 8],
    [1] * 20,
    [[1.0] * 8] * 3,
)


def _nodes(doc: object) -> list[tuple[tuple, object]]:
    """Every (path, value) in the document, the root included."""
    found, stack = [], [((), doc)]
    while stack:
        path, node = stack.pop()
        found.append((path, node))
        if isinstance(node, dict):
            stack.extend(((*path, key), value) for key, value in node.items())
        elif isinstance(node, list):
            stack.extend(((*path, index), value) for index, value in enumerate(node))
    return found


def _copy(doc: object) -> object:
    return orjson.loads(orjson.dumps(doc))  # a deep copy, several times faster than copy.deepcopy


def _set(doc: object, path: tuple, value: object) -> object:
    if not path:
        return value
    parent = doc
    for step in path[:-1]:
        parent = parent[step]  # type: ignore[index]
    parent[path[-1]] = value  # type: ignore[index]
    return doc


def _weird(rng: random.Random) -> object:
    return _deep(rng) if rng.random() < 0.08 else _copy(rng.choice(WEIRD))


def mutate(rng: random.Random, doc: object) -> object:
    """One structural mutation somewhere in ``doc`` (which it may change in place); the new document."""
    nodes = _nodes(doc)
    path, node = rng.choice(nodes)
    kind = rng.random()
    if kind < 0.5:
        return _set(doc, path, _weird(rng))
    if isinstance(node, dict) and node and kind < 0.7:
        del node[rng.choice(list(node))]
    elif isinstance(node, dict):
        node[rng.choice(["extra", "data", "shape", "parameters", "datatype", "binary_data_size", "name"])] = _weird(rng)
    elif isinstance(node, list) and node and kind < 0.8:
        node.clear()
    elif isinstance(node, list):
        node.extend(_copy(node[:1]) * rng.choice([1, 2, 7, 200]) if node else [_weird(rng)])
    else:
        return _set(doc, path, _weird(rng))
    return doc


def break_bytes(rng: random.Random, raw: bytes) -> bytes:
    """The serialised body, broken: truncated, stray or invalid UTF-8 bytes, NaN literals, deep or no JSON."""
    kind = rng.randrange(8)
    at = rng.randrange(len(raw) + 1)
    if kind == 0:
        return raw[:at]
    if kind == 1:
        return raw[:at] + bytes([rng.randrange(256)]) + raw[at:]
    if kind == 2:
        quote = raw.find(b'"', at)
        at = quote + 1 if quote >= 0 else at
        return raw[:at] + rng.choice([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\\ud800", b"\x00", b"\\"]) + raw[at:]
    if kind == 3:
        return raw.replace(b"1.0", rng.choice([b"NaN", b"Infinity", b"-Infinity", b"1e999", b"01", b"1."]), 1)
    if kind == 4:
        depth = rng.choice([100, 1100, 5000])
        return b"[" * depth + b"]" * depth
    if kind == 5:
        return rng.choice([b"", b"null", b"[]", b"{}", b'"inputs"', b"\xef\xbb\xbf{}", b"{" * 3, b"\n"])
    if kind == 6:
        return raw + rng.choice([b"}", b",", b" garbage", b"\x00"])
    return raw[:at] + raw[at:][::-1]


def _binary_fraud(rng: random.Random) -> tuple[dict, bytes]:
    rows = rng.randint(1, 3)
    blob = struct.pack(f"<{rows * 8}f", *([1.5] * rows * 8))
    tensor = {"name": "features", "datatype": "FP32", "shape": [rows, 8], "parameters": {"binary_data_size": len(blob)}}
    return {"inputs": [tensor], "outputs": [{"name": "probabilities", "parameters": {"binary_data": True}}]}, blob


def _binary_text(rng: random.Random) -> tuple[dict, bytes]:
    words = [rng.choice([b"hi", b"yo", b"caf\xc3\xa9", b""]) for _ in range(rng.randint(1, 3))]
    blob = b"".join(struct.pack("<I", len(w)) + w for w in words)
    tensor = {"name": "text", "datatype": "BYTES", "shape": [len(words)], "parameters": {"binary_data_size": len(blob)}}
    return {"inputs": [tensor], "parameters": {"binary_data_output": True}}, blob


def _break_blob(rng: random.Random, blob: bytes) -> bytes:
    kind = rng.randrange(5)
    if kind == 0:
        return blob[: rng.randrange(len(blob) + 1)]
    if kind == 1:
        return blob + bytes(rng.randrange(256) for _ in range(rng.randint(1, 9)))
    if kind == 2:
        return b"\xff\xff\xff\xff" + blob
    if kind == 3:
        return bytes(rng.randrange(256) for _ in range(len(blob)))
    return blob


def _header_length(rng: random.Random, true_length: int) -> bytes:
    """The binary header's value: right twice as often as each kind of wrong (latin-1 bytes: b"\\xb2" is '²')."""
    value = rng.choice(
        [
            str(true_length),
            str(true_length),
            str(true_length + rng.choice([-3, -1, 1, 5])),
            "-1",
            "",
            "abc",
            "99999999999999999999",
            "+5",
            "0",
            "1_0",
            "\u00b2",
            str(true_length) + "0",
        ]
    )
    return value.encode("latin-1")


def binary_case(rng: random.Random) -> Case:
    path, (doc, blob) = rng.choice([(FRAUD_INFER, _binary_fraud(rng)), (TEXT_INFER, _binary_text(rng))])
    if rng.random() < 0.6:
        doc = mutate(rng, doc)
    header = orjson.dumps(doc)
    if rng.random() < 0.15:
        header = break_bytes(rng, header)
    content = header + (_break_blob(rng, blob) if rng.random() < 0.5 else blob)
    headers: dict[str, str | bytes] = {"content-type": rng.choice(["application/octet-stream", "application/json"])}
    headers[HEADER_LENGTH] = _header_length(rng, len(header))
    return Case(path, content, headers)


def json_case(rng: random.Random) -> Case:
    path, seed = rng.choice(SEEDS)
    doc: object = _copy(seed)
    for _ in range(rng.choice([1, 2, 2, 3, 3])):
        doc = mutate(rng, doc)
    content = orjson.dumps(doc)
    if rng.random() < 0.2:
        content = break_bytes(rng, content)
    if rng.random() < 0.05:
        path = rng.choice(PATHS)
    headers: dict[str, str | bytes] = {"content-type": "application/json"}
    if rng.random() < 0.03:
        headers = rng.choice(
            [{}, {"content-type": "text/plain"}, {"content-type": "application/json; charset=latin-1"}]
        )
    return Case(path, content, headers)


def cases(seed: int, count: int) -> Iterator[Case]:
    """``count`` requests, the same ones for the same seed: about one in six uses binary tensor data."""
    rng = random.Random(seed)
    for _ in range(count):
        yield binary_case(rng) if rng.random() < 0.17 else json_case(rng)


__all__ = ["Case", "cases"]
