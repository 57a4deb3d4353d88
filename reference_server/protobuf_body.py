"""A ModelInferRequest's protobuf, parsed only once it is known to be quick to parse: gRPC's ``json_body.py``.

gRPC caps a message's size (``--max-body-bytes``), but not what it holds. protobuf's C parser
(upb) holds the GIL, and builds one object per sub-message: 8 MiB of empty ``inputs`` entries is
4.2M of them, 0.2 to 0.6 s of parsing with every request and health check waiting, and 360 MB. A real
request holds a few dozen fields (a name, a few parameters, one tensor's header per input), so a
request with more than ``MAX_FIELDS`` fields in it and in its tensors' headers is refused after a
walk over the wire format that stops at that count: microseconds for a real request. A tensor's
data (``contents``, ``raw_input_contents``) is not walked: repeated scalars and bytes parse at
memory speed (4M empty strings in 40 ms), and its elements are counted before any is read.
"""

from __future__ import annotations

from collections.abc import Iterator

from google.protobuf.message import DecodeError

from .errors import BadRequest
from .oip_grpc import oip_v2_pb2 as pb

MAX_FIELDS = 1024
_INPUTS, _OUTPUTS = 5, 6  # ModelInferRequest's fields whose own fields are counted
_INPUT_CONTENTS = 5  # InferInputTensor.contents: a tensor's data, not walked
_WIRE_VARINT, _WIRE_FIXED64, _WIRE_LENGTH, _WIRE_FIXED32 = 0, 1, 2, 5


class _Malformed(Exception):
    pass


def parse_model_infer(body: bytes, max_fields: int = MAX_FIELDS) -> pb.ModelInferRequest:
    """The parsed request; a ``BadRequest`` for bytes that are no ModelInferRequest, or hold too many fields."""
    try:
        _check_fields(body, max_fields)
        return pb.ModelInferRequest.FromString(body)
    except (_Malformed, DecodeError) as exc:
        raise BadRequest(f"request is not a ModelInferRequest protobuf: {exc}") from None


def parse_message(message_type: type, body: bytes):
    """Any other request message (they hold a name and a version at most), parsed; a ``BadRequest`` if it is not one."""
    try:
        return message_type.FromString(body)
    except DecodeError as exc:
        raise BadRequest(f"request is not a {message_type.__name__} protobuf: {exc}") from None


def _check_fields(body: bytes, limit: int) -> None:
    counted = 0
    for field, start, end in _fields(body, 0, len(body)):
        counted += 1
        if field in (_INPUTS, _OUTPUTS):
            for inner, _, _ in _fields(body, start, end):
                counted += not (field == _INPUTS and inner == _INPUT_CONTENTS)
                if counted > limit:
                    break
        if counted > limit:
            raise BadRequest(
                f"request holds over {limit} fields in it and its tensors' headers; this server parses at most "
                f"{limit} (a request holds a few dozen)"
            )


def _fields(data: bytes, position: int, end: int) -> Iterator[tuple[int, int, int]]:
    """Each field of the message in ``data[position:end]``: its number and where its value lies."""
    while position < end:
        tag, position = _varint(data, position, end)
        field, wire = tag >> 3, tag & 7
        if field == 0:
            raise _Malformed("a field numbered 0")
        if wire == _WIRE_VARINT:
            _, value_end = _varint(data, position, end)
        elif wire == _WIRE_FIXED64:
            value_end = position + 8
        elif wire == _WIRE_FIXED32:
            value_end = position + 4
        elif wire == _WIRE_LENGTH:
            size, position = _varint(data, position, end)
            value_end = position + size
        else:  # 3 and 4: groups, which proto3 never writes; 6 and 7: not wire types at all
            raise _Malformed(f"field {field} has wire type {wire}")
        if value_end > end:
            raise _Malformed(f"field {field} runs past the end of its message")
        yield field, position, value_end
        position = value_end


def _varint(data: bytes, position: int, end: int) -> tuple[int, int]:
    value = shift = 0
    while position < end and shift < 64:
        byte = data[position]
        position += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, position
        shift += 7
    raise _Malformed("a varint is cut off or longer than 10 bytes")


__all__ = ["MAX_FIELDS", "parse_message", "parse_model_infer"]
