"""Open Inference Protocol (KServe V2) REST messages: parse an infer request, encode its response.

Pure functions over bytes, no HTTP: the app hands in the body and one header, and gets back typed
tensors or a ``BadRequest`` whose message names the offending field. Both JSON tensor data and
the binary tensor data extension (``Inference-Header-Content-Length``, which tritonclient uses by
default) are understood, so third-party OIP clients work unchanged.

Every field of a message is type-checked, so a malformed body is a ``BadRequest``, never a
``TypeError`` that would surface as a 500. Parsing is cheap whatever the body holds: the number of
tensors and of dimensions is bounded, and a tensor's data is read only when a model asks for it
(``texts``, ``array``), never past the element count its shape declares, so the caller can check
the declared rows against its limit before any per-element work.

The tensor types and the checks on a tensor's header (datatype, shape, counts) are the protocol's,
not REST's: ``grpc_protocol.py`` makes the same ``InputTensor`` from a protobuf with the same
checks, so both protocols give one verdict for one request.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass, field

import numpy as np
import orjson

from .errors import BadRequest
from .json_body import parse_json

DTYPES: dict[str, np.dtype] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
}
DATATYPE_OF = {dtype: name for name, dtype in DTYPES.items()}
HEADER_LENGTH = "Inference-Header-Content-Length"
MAX_TENSORS = 64  # inputs, and requested outputs, per request: the models here take one and give one
MAX_DIMS = 16  # numpy's own limit is 64; no model here takes more than 2


@dataclass(frozen=True)
class InputTensor:
    """One named input; ``data`` is the JSON list as sent (nested or flat), or raw bytes from the binary extension."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    data: list | bytes

    @property
    def count(self) -> int:
        return math.prod(self.shape)

    @property
    def rows(self) -> int:
        """The first dimension: what a request's row limit counts (a scalar is one row)."""
        return self.shape[0] if self.shape else 1

    def _elements(self) -> list:
        """The JSON data, flattened in row-major order; more elements than the shape declares is refused at once."""
        assert isinstance(self.data, list)
        flat = _flatten(self.name, self.data, self.count, _lists_in(self.shape) + self.count)
        if len(flat) != self.count:
            raise BadRequest(f"input '{self.name}' has shape {list(self.shape)} but {len(flat)} elements")
        return flat

    def texts(self) -> list[str]:
        """The strings of a BYTES tensor; non-UTF-8 content is a ``BadRequest``."""
        if isinstance(self.data, bytes):
            elements = _split_bytes_elements(self.name, self.data, self.count)
            try:
                texts = [e.decode("utf-8") for e in elements]
            except UnicodeDecodeError as exc:
                raise BadRequest(f"input '{self.name}' holds bytes that are not valid UTF-8: {exc.reason}") from None
        else:
            texts = self._elements()
            for i, value in enumerate(texts):
                if not isinstance(value, str):
                    raise BadRequest(
                        f"input '{self.name}' element {i} is {json_type(value)}; BYTES data must be strings"
                    )
        if len(texts) != self.count:
            raise BadRequest(f"input '{self.name}' has shape {list(self.shape)} but {len(texts)} elements")
        return texts

    def array(self) -> np.ndarray:
        """A numeric tensor as a numpy array of its shape; mismatches are a ``BadRequest``."""
        dtype = DTYPES[self.datatype]
        if isinstance(self.data, bytes):
            if len(self.data) != self.count * dtype.itemsize:
                raise BadRequest(
                    f"input '{self.name}' has {len(self.data)} bytes of binary data; shape {list(self.shape)} "
                    f"of {self.datatype} needs {self.count * dtype.itemsize}"
                )
            return np.frombuffer(self.data, dtype=dtype.newbyteorder("<")).astype(dtype).reshape(self.shape)
        values = self._elements()
        allowed = (bool,) if self.datatype == "BOOL" else (int, float)
        for i, value in enumerate(values):
            if type(value) not in allowed:
                kind = "booleans" if self.datatype == "BOOL" else "numbers"
                raise BadRequest(
                    f"input '{self.name}' element {i} is {json_type(value)}; {self.datatype} data must be {kind}"
                )
        try:
            with np.errstate(all="ignore"):  # a float too large for FP16/FP32 becomes inf: the model decides
                return np.asarray(values, dtype=dtype).reshape(self.shape)
        except (OverflowError, ValueError):
            raise BadRequest(f"input '{self.name}' holds a value out of range for {self.datatype}") from None


@dataclass(frozen=True)
class InferRequest:
    inputs: dict[str, InputTensor]
    id: str | None = None
    requested_outputs: tuple[str, ...] = ()  # empty: every output
    binary_outputs: frozenset[str] = field(default_factory=frozenset)
    binary_by_default: bool = False


def json_type(value: object) -> str:
    if value is None:
        return "null"
    return {
        bool: "a boolean",
        int: "a number",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "an object",
    }.get(type(value), type(value).__name__)


def _split_bytes_elements(name: str, raw: bytes, count: int) -> list[bytes]:
    """BYTES elements in the binary extension: each a 4-byte little-endian length, then the bytes.

    Read no further than ``count`` elements: data that holds more is refused without walking the rest.
    """
    elements, offset = [], 0
    while offset < len(raw):
        if len(elements) == count:
            raise BadRequest(
                f"input '{name}' binary BYTES data holds more than the {count} element(s) its shape declares"
            )
        if offset + 4 > len(raw):
            raise BadRequest(f"input '{name}' binary BYTES data is truncated (a length prefix is cut off)")
        (size,) = struct.unpack_from("<I", raw, offset)
        offset += 4
        if offset + size > len(raw):
            raise BadRequest(f"input '{name}' binary BYTES element declares {size} bytes but fewer remain")
        elements.append(raw[offset : offset + size])
        offset += size
    return elements


def _lists_in(shape: tuple[int, ...]) -> int:
    """How many lists data of ``shape`` nested row-major holds: 1 for [N], 1 + N for [N, 8]."""
    lists, rows = 1, 1
    for dim in shape[:-1]:
        rows *= dim
        lists += rows
    return lists


def _flatten(name: str, data: list, limit: int, max_lists: int) -> list:
    """Nested lists in row-major order, refused as soon as they hold more than ``limit`` values, or
    more than ``max_lists`` lists: empty lists cost as much to walk as values. The caller allows
    nesting by the shape, plus a list around each value (``[["a"], ["b"]]`` for shape [2])."""
    flat: list = []
    stack = [iter(data)]
    lists = 1
    while stack:
        for value in stack[-1]:
            if isinstance(value, list):
                lists += 1
                if lists > max_lists:
                    raise BadRequest(f"input '{name}' data nests more lists than its shape allows")
                stack.append(iter(value))
                break
            if isinstance(value, dict) or value is None:
                raise BadRequest(f"input '{name}' data holds {json_type(value)}; only values and nested lists")
            if len(flat) == limit:
                raise BadRequest(f"input '{name}' data holds more than the {limit} element(s) its shape declares")
            flat.append(value)
        else:
            stack.pop()
    return flat


def _object(value: object, what: str) -> dict:
    """An optional JSON object field: absent or null is empty, anything but an object is refused."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise BadRequest(f"{what} must be an object, got {json_type(value)}")
    return value


def _flag(parameters: dict, key: str, what: str) -> bool:
    value = parameters.get(key)
    if value is not None and not isinstance(value, bool):
        raise BadRequest(f"{what} parameter '{key}' must be true or false, got {json_type(value)}")
    return value is True


def parse_shape(name: str, shape: object) -> tuple[int, ...]:
    """An input's shape: a list of at most ``MAX_DIMS`` non-negative integers (REST and gRPC alike)."""
    if not isinstance(shape, list) or len(shape) > MAX_DIMS or not all(type(d) is int and d >= 0 for d in shape):
        raise BadRequest(f"input '{name}' needs 'shape', a list of at most {MAX_DIMS} non-negative integers")
    return tuple(shape)


def check_datatype(name: str, datatype: object) -> str:
    """An input's datatype: BYTES or a numeric type of ``DTYPES`` (REST and gRPC alike)."""
    if not isinstance(datatype, str) or (datatype != "BYTES" and datatype not in DTYPES):
        shown = repr(datatype) if isinstance(datatype, str) else json_type(datatype)
        raise BadRequest(f"input '{name}' has unknown datatype {shown}; known: BYTES, {', '.join(DTYPES)}")
    return datatype


def check_input_count(count: int) -> None:
    if count > MAX_TENSORS:
        raise BadRequest(f"request has {count} inputs; this server accepts at most {MAX_TENSORS}")


def check_output_count(count: int) -> None:
    if count > MAX_TENSORS:
        raise BadRequest(f"request asks for {count} outputs; this server accepts at most {MAX_TENSORS}")


def _parse_input(raw: object, index: int, binary: memoryview, offset: int) -> tuple[InputTensor, int]:
    if not isinstance(raw, dict):
        raise BadRequest(f"inputs[{index}] must be an object, got {json_type(raw)}")
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise BadRequest(f"inputs[{index}] needs a 'name' string")
    datatype = check_datatype(name, raw.get("datatype"))
    shape = parse_shape(name, raw.get("shape"))
    parameters = _object(raw.get("parameters"), f"input '{name}' field 'parameters'")
    size = parameters.get("binary_data_size")
    if size is not None:
        if type(size) is not int or size < 0 or offset + size > len(binary):
            shown = size if type(size) is int else json_type(size)
            raise BadRequest(f"input '{name}' binary_data_size {shown} does not fit the binary data sent")
        data: list | bytes = bytes(binary[offset : offset + size])
        offset += size
    elif "data" in raw:
        data = raw["data"]
        if not isinstance(data, list):
            raise BadRequest(f"input '{name}' field 'data' must be a list, got {json_type(data)}")
    else:
        raise BadRequest(f"input '{name}' has neither 'data' nor parameters.binary_data_size")
    return InputTensor(name, datatype, shape, data), offset


def parse_infer_request(body: bytes, header_length: str | None = None, max_values: int = 128 * 1024) -> InferRequest:
    """Parse and check the structure of an infer request; model-specific checks come later.

    A JSON part with more than ``max_values`` values is refused before it is parsed (``json_body``).
    """
    if header_length is not None:
        if not (header_length.isascii() and header_length.isdigit()):
            raise BadRequest(f"{HEADER_LENGTH} must be an integer, got {header_length[:40]!r}")
        split = int(header_length)
        if split > len(body):
            raise BadRequest(f"{HEADER_LENGTH} is {split} but the body has {len(body)} bytes")
        json_part, binary = body[:split], memoryview(body)[split:]
    else:
        json_part, binary = body, memoryview(b"")
    doc = parse_json(json_part, max_values)
    if not isinstance(doc, dict):
        raise BadRequest(f"request body must be a JSON object, got {json_type(doc)}")
    raw_inputs = doc.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise BadRequest("request needs 'inputs', a non-empty list of tensors")
    check_input_count(len(raw_inputs))
    inputs: dict[str, InputTensor] = {}
    offset = 0
    for index, raw in enumerate(raw_inputs):
        tensor, offset = _parse_input(raw, index, binary, offset)
        add_input(inputs, tensor)
    if offset != len(binary):
        raise BadRequest(f"{len(binary) - offset} bytes of binary data were sent but no input claims them")
    request_id = doc.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise BadRequest(f"'id' must be a string, got {json_type(request_id)}")
    requested, binary_outputs = _parse_outputs(doc.get("outputs"))
    parameters = _object(doc.get("parameters"), "'parameters'")
    binary_by_default = _flag(parameters, "binary_data_output", "the request's")
    return InferRequest(inputs, request_id, requested, binary_outputs, binary_by_default)


def add_input(inputs: dict[str, InputTensor], tensor: InputTensor) -> None:
    if tensor.name in inputs:
        raise BadRequest(f"input '{tensor.name}' appears twice")
    inputs[tensor.name] = tensor


def _parse_outputs(raw: object) -> tuple[tuple[str, ...], frozenset[str]]:
    if raw is None:
        return (), frozenset()
    if not isinstance(raw, list):
        raise BadRequest(f"'outputs' must be a list, got {json_type(raw)}")
    check_output_count(len(raw))
    names, binary = [], set()
    for index, item in enumerate(raw):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise BadRequest(f"outputs[{index}] needs a 'name' string")
        names.append(item["name"])
        parameters = _object(item.get("parameters"), f"outputs[{index}] field 'parameters'")
        if _flag(parameters, "binary_data", f"outputs[{index}]"):
            binary.add(item["name"])
    return tuple(names), frozenset(binary)


def encode_infer_response(
    model_name: str, model_version: str, request: InferRequest, outputs: dict[str, np.ndarray]
) -> tuple[bytes, dict[str, str]]:
    """Return the response body and its headers; binary outputs are appended after the JSON."""
    names = request.requested_outputs or tuple(outputs)
    unknown = [n for n in names if n not in outputs]
    if unknown:
        raise BadRequest(f"requested output(s) {unknown} do not exist; outputs: {sorted(outputs)}")
    tensors, blobs = [], []
    for name in names:
        array = outputs[name]
        tensor = {"name": name, "datatype": DATATYPE_OF[array.dtype], "shape": list(array.shape)}
        if name in request.binary_outputs or (request.binary_by_default and not request.requested_outputs):
            blob = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()
            tensor["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            tensor["data"] = array.ravel()
        tensors.append(tensor)
    doc: dict = {"model_name": model_name, "model_version": model_version, "outputs": tensors}
    if request.id is not None:
        doc["id"] = request.id
    header = orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY)
    if not blobs:
        return header, {"content-type": "application/json"}
    return header + b"".join(blobs), {
        "content-type": "application/octet-stream",
        HEADER_LENGTH: str(len(header)),
    }
