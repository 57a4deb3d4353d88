"""OIP v2's gRPC messages: a ModelInferRequest built, a ModelInferResponse checked, with protobuf's own classes.

The classes are the ones generated from the protocol's ``.proto`` (``reference_server.oip_grpc``):
the message schema, shared by the server that reads it and the harness that writes it, and light
to import (protobuf alone, no server code; ``tests/test_boundaries.py`` holds pure stages to that).

A request carries its data as tritonclient sends it, in ``raw_input_contents`` (one entry per
input): little-endian FP32, and each BYTES element after its 4-byte little-endian length. That
packing is the OIP's raw tensor format, not protobuf's, so it is written here. Bodies are built
once, in the payload pool; a Locust user sends them as they are.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from google.protobuf.message import DecodeError

from reference_server.oip_grpc import oip_v2_pb2 as pb

INFER_METHOD = f"/{pb.DESCRIPTOR.services_by_name['GRPCInferenceService'].full_name}/ModelInfer"


@dataclass(frozen=True)
class Tensor:
    """One input: its header and its data as ``raw_input_contents`` holds it."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    raw: bytes


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


def infer_request(model: str, tensors: Sequence[Tensor]) -> bytes:
    """A ModelInferRequest: the model, each input's header, and each input's raw contents in the same order.

    Nothing checks that a header fits its data: a messy kind sends a shape that does not match on purpose.
    """
    message = pb.ModelInferRequest(
        model_name=model,
        inputs=[
            pb.ModelInferRequest.InferInputTensor(name=t.name, datatype=t.datatype, shape=t.shape) for t in tensors
        ],
        raw_input_contents=[t.raw for t in tensors],
    )
    return message.SerializeToString()


def text_request(model: str, input_name: str, text: str) -> bytes:
    return infer_request(model, [Tensor(input_name, "BYTES", (1,), bytes_elements([text]))])


def features_request(model: str, input_name: str, row: Sequence[float]) -> bytes:
    return infer_request(model, [Tensor(input_name, "FP32", (1, len(row)), fp32_elements(row))])


def unknown_field(data: bytes) -> bytes:
    """``data`` as a field ModelInferRequest does not define, to append to one: protobuf parses concatenated
    messages as one, and skips (keeps) a field it does not know.

    The library writes it: ``InferTensorContents.bytes_contents`` is field 8 (length-delimited), and
    ModelInferRequest's fields end at 7; ``tests/test_grpc_run.py`` checks that it stays unknown.
    """
    return pb.InferTensorContents(bytes_contents=[data]).SerializeToString()


def has_outputs(body: bytes) -> bool:
    """Whether ``body`` is a ModelInferResponse with at least one output tensor: the check a 200's JSON gets
    over REST (``protocols``). Bytes that are no protobuf message (``DecodeError``) are not one."""
    try:
        return len(pb.ModelInferResponse.FromString(body).outputs) > 0
    except DecodeError:
        return False
