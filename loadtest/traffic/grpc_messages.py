"""OIP v2's gRPC messages as protobuf wire bytes: a ModelInferRequest written, a ModelInferResponse checked.

Written by hand, not with the generated classes of ``reference_server.oip_grpc``: ``traffic/`` and
``messy/`` are pure stages that never import the reference server (``tests/test_boundaries.py``),
and a messy kind must be able to write what no generated class would (a shape that does not match
its data, bytes that are no protobuf at all). The wire format needed is small: varints and
length-delimited fields. ``tests/test_grpc_run.py`` reads every message back with the generated
``ModelInferRequest.FromString``, so the two cannot drift apart.

A request carries its data as tritonclient sends it, in ``raw_input_contents`` (one entry per
input): little-endian FP32, and each BYTES element after its 4-byte little-endian length. Bodies
are built once, in the payload pool; a Locust user sends them as they are.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

INFER_METHOD = "/inference.GRPCInferenceService/ModelInfer"
UNKNOWN_FIELD = 99  # a field number ModelInferRequest does not define (messy kinds: unknown_field, oversized)

# Field numbers (reference_server/oip_grpc/oip_v2.proto).
_MODEL_NAME, _INPUTS, _RAW_INPUTS = 1, 5, 7  # ModelInferRequest
_TENSOR_NAME, _TENSOR_DATATYPE, _TENSOR_SHAPE = 1, 2, 3  # ModelInferRequest.InferInputTensor
_OUTPUTS = 5  # ModelInferResponse
_VARINT, _FIXED64, _LENGTH, _FIXED32 = 0, 1, 2, 5  # wire types


@dataclass(frozen=True)
class Tensor:
    """One input: its header and its data as ``raw_input_contents`` holds it."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    raw: bytes


def varint(value: int) -> bytes:
    """Protobuf's base-128 varint; a negative number as its 64-bit two's complement (ten bytes), as int64 is."""
    value &= (1 << 64) - 1
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def length_field(number: int, data: bytes) -> bytes:
    return varint(number << 3 | _LENGTH) + varint(len(data)) + data


def bytes_elements(values: Sequence[str | bytes]) -> bytes:
    """BYTES elements as raw contents: each after its length, 4 bytes little-endian; text as UTF-8."""
    parts = [v.encode() if isinstance(v, str) else v for v in values]
    return b"".join(struct.pack("<I", len(p)) + p for p in parts)


def fp32_elements(values: Sequence[float]) -> bytes:
    """FP32 elements as raw contents, little-endian; a value past float32 becomes infinity, as a cast makes it."""
    with np.errstate(over="ignore"):
        return np.asarray(values, dtype=np.float64).astype("<f4").tobytes()


def elements(values: Sequence[object]) -> bytes:
    """Raw contents from each value's own type (text: BYTES, numbers: FP32), whatever datatype the tensor claims."""
    if all(isinstance(v, str | bytes) for v in values):
        return bytes_elements(values)  # type: ignore[arg-type]
    return fp32_elements(values)  # type: ignore[arg-type]


def tensor_header(tensor: Tensor) -> bytes:
    shape = b"".join(varint(d) for d in tensor.shape)
    return (
        length_field(_TENSOR_NAME, tensor.name.encode())
        + length_field(_TENSOR_DATATYPE, tensor.datatype.encode())
        + (length_field(_TENSOR_SHAPE, shape) if shape else b"")  # packed, as proto3 writes repeated int64
    )


def infer_request(model: str, tensors: Sequence[Tensor], extra: bytes = b"") -> bytes:
    """A ModelInferRequest: the model, each input's header, then each input's raw contents, then ``extra`` fields."""
    body = length_field(_MODEL_NAME, model.encode()) if model else b""
    body += b"".join(length_field(_INPUTS, tensor_header(t)) for t in tensors)
    body += b"".join(length_field(_RAW_INPUTS, t.raw) for t in tensors)
    return body + extra


def text_request(model: str, input_name: str, text: str) -> bytes:
    return infer_request(model, [Tensor(input_name, "BYTES", (1,), bytes_elements([text]))])


def features_request(model: str, input_name: str, row: Sequence[float]) -> bytes:
    return infer_request(model, [Tensor(input_name, "FP32", (1, len(row)), fp32_elements(row))])


def _read_varint(body: bytes, at: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if at >= len(body) or shift > 63:
            raise ValueError("truncated varint")
        byte = body[at]
        at += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, at
        shift += 7


def has_outputs(body: bytes) -> bool:
    """Whether ``body`` is a well-formed ModelInferResponse with at least one output tensor.

    Reads the top-level fields only (a few per answer), skipping over each one's contents: the
    check a 200's JSON gets over REST (``protocols``), at about its cost.
    """
    at, found = 0, False
    try:
        while at < len(body):
            key, at = _read_varint(body, at)
            number, wire = key >> 3, key & 7
            if wire == _VARINT:
                _, at = _read_varint(body, at)
            elif wire == _LENGTH:
                size, at = _read_varint(body, at)
                at += size
                found = found or number == _OUTPUTS
            elif wire in (_FIXED64, _FIXED32):
                at += 8 if wire == _FIXED64 else 4
            else:
                return False
            if number == 0:
                return False
    except ValueError:
        return False
    return found and at == len(body)
