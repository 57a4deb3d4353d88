"""Open Inference Protocol (KServe V2) REST messages: parse an infer request, encode its response.

Pure functions over bytes, no HTTP: the app hands in the body and one header, and gets back typed
tensors or a ``BadRequest`` whose message names the offending field. Both JSON tensor data and
the binary tensor data extension (``Inference-Header-Content-Length``, which tritonclient uses by
default) are understood, so third-party OIP clients work unchanged.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass, field

import numpy as np
import orjson

from .errors import BadRequest

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


@dataclass(frozen=True)
class InputTensor:
    """One named input; ``data`` is the flattened JSON list, or raw bytes from the binary extension."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    data: list | bytes

    @property
    def count(self) -> int:
        return math.prod(self.shape)

    def texts(self) -> list[str]:
        """The strings of a BYTES tensor; non-UTF-8 content is a ``BadRequest``."""
        if isinstance(self.data, bytes):
            elements = _split_bytes_elements(self.name, self.data)
            try:
                texts = [e.decode("utf-8") for e in elements]
            except UnicodeDecodeError as exc:
                raise BadRequest(f"input '{self.name}' holds bytes that are not valid UTF-8: {exc.reason}") from None
        else:
            texts = self.data
            for i, value in enumerate(texts):
                if not isinstance(value, str):
                    raise BadRequest(
                        f"input '{self.name}' element {i} is {_json_type(value)}; BYTES data must be strings"
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
        if len(self.data) != self.count:
            raise BadRequest(f"input '{self.name}' has shape {list(self.shape)} but {len(self.data)} elements")
        allowed = (bool,) if self.datatype == "BOOL" else (int, float)
        for i, value in enumerate(self.data):
            if type(value) not in allowed:
                raise BadRequest(
                    f"input '{self.name}' element {i} is {_json_type(value)}; {self.datatype} data must be numbers"
                )
        try:
            return np.asarray(self.data, dtype=dtype).reshape(self.shape)
        except OverflowError:
            raise BadRequest(f"input '{self.name}' holds a value out of range for {self.datatype}") from None


@dataclass(frozen=True)
class InferRequest:
    inputs: dict[str, InputTensor]
    id: str | None = None
    requested_outputs: tuple[str, ...] = ()  # empty: every output
    binary_outputs: frozenset[str] = field(default_factory=frozenset)
    binary_by_default: bool = False


def _json_type(value: object) -> str:
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


def _split_bytes_elements(name: str, raw: bytes) -> list[bytes]:
    """BYTES elements in the binary extension: each a 4-byte little-endian length, then the bytes."""
    elements, offset = [], 0
    while offset < len(raw):
        if offset + 4 > len(raw):
            raise BadRequest(f"input '{name}' binary BYTES data is truncated (a length prefix is cut off)")
        (size,) = struct.unpack_from("<I", raw, offset)
        offset += 4
        if offset + size > len(raw):
            raise BadRequest(f"input '{name}' binary BYTES element declares {size} bytes but fewer remain")
        elements.append(raw[offset : offset + size])
        offset += size
    return elements


def _flatten(name: str, data: object) -> list:
    if not isinstance(data, list):
        raise BadRequest(f"input '{name}' field 'data' must be a list, got {_json_type(data)}")
    flat: list = []
    stack = [iter(data)]
    while stack:
        for value in stack[-1]:
            if isinstance(value, list):
                stack.append(iter(value))
                break
            if isinstance(value, dict) or value is None:
                raise BadRequest(f"input '{name}' data holds {_json_type(value)}; only values and nested lists")
            flat.append(value)
        else:
            stack.pop()
    return flat


def _parse_input(raw: object, index: int, binary: memoryview, offset: int) -> tuple[InputTensor, int]:
    if not isinstance(raw, dict):
        raise BadRequest(f"inputs[{index}] must be an object, got {_json_type(raw)}")
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise BadRequest(f"inputs[{index}] needs a 'name' string")
    datatype = raw.get("datatype")
    if datatype != "BYTES" and datatype not in DTYPES:
        raise BadRequest(f"input '{name}' has unknown datatype {datatype!r}")
    shape = raw.get("shape")
    if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
        raise BadRequest(f"input '{name}' needs 'shape', a list of non-negative integers")
    parameters = raw.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise BadRequest(f"input '{name}' field 'parameters' must be an object")
    size = parameters.get("binary_data_size")
    if size is not None:
        if type(size) is not int or size < 0 or offset + size > len(binary):
            raise BadRequest(f"input '{name}' binary_data_size {size!r} does not fit the binary data sent")
        data: list | bytes = bytes(binary[offset : offset + size])
        offset += size
    elif "data" in raw:
        data = _flatten(name, raw["data"])
    else:
        raise BadRequest(f"input '{name}' has neither 'data' nor parameters.binary_data_size")
    return InputTensor(name, datatype, tuple(shape), data), offset


def parse_infer_request(body: bytes, header_length: str | None = None) -> InferRequest:
    """Parse and check the structure of an infer request; model-specific checks come later."""
    if header_length is not None:
        try:
            split = int(header_length)
        except ValueError:
            raise BadRequest(f"{HEADER_LENGTH} must be an integer, got {header_length!r}") from None
        if not 0 <= split <= len(body):
            raise BadRequest(f"{HEADER_LENGTH} is {split} but the body has {len(body)} bytes")
        json_part, binary = body[:split], memoryview(body)[split:]
    else:
        json_part, binary = body, memoryview(b"")
    try:
        doc = orjson.loads(json_part)
    except orjson.JSONDecodeError as exc:
        reason = "not valid UTF-8" if "UTF-8" in str(exc) or "surrogate" in str(exc) else "invalid JSON"
        raise BadRequest(f"request body is {reason}: {exc}") from None
    if not isinstance(doc, dict):
        raise BadRequest(f"request body must be a JSON object, got {_json_type(doc)}")
    raw_inputs = doc.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise BadRequest("request needs 'inputs', a non-empty list of tensors")
    inputs: dict[str, InputTensor] = {}
    offset = 0
    for index, raw in enumerate(raw_inputs):
        tensor, offset = _parse_input(raw, index, binary, offset)
        if tensor.name in inputs:
            raise BadRequest(f"input '{tensor.name}' appears twice")
        inputs[tensor.name] = tensor
    if offset != len(binary):
        raise BadRequest(f"{len(binary) - offset} bytes of binary data were sent but no input claims them")
    request_id = doc.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise BadRequest("'id' must be a string")
    requested, binary_outputs = _parse_outputs(doc.get("outputs"))
    parameters = doc.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise BadRequest("'parameters' must be an object")
    return InferRequest(inputs, request_id, requested, binary_outputs, parameters.get("binary_data_output") is True)


def _parse_outputs(raw: object) -> tuple[tuple[str, ...], frozenset[str]]:
    if raw is None:
        return (), frozenset()
    if not isinstance(raw, list):
        raise BadRequest("'outputs' must be a list")
    names, binary = [], set()
    for index, item in enumerate(raw):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise BadRequest(f"outputs[{index}] needs a 'name' string")
        names.append(item["name"])
        parameters = item.get("parameters") or {}
        if isinstance(parameters, dict) and parameters.get("binary_data") is True:
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
