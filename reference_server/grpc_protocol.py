"""Open Inference Protocol (KServe V2) gRPC messages: a ModelInferRequest as REST's ``InferRequest``, and the answer.

Pure functions over protobuf messages, no gRPC. A request's tensors become the ``InputTensor``s
REST's binary tensor data extension makes (``protocol.py``), checked by the same functions, so
the models, the row limit and every verdict after this are REST's own. The data comes one of two ways:

- ``raw_input_contents``, one entry per input, as tritonclient sends it: little-endian numbers, and
  BYTES elements each after a 4-byte little-endian length. These bytes are the tensor's data as they are.
- typed ``contents`` (``fp32_contents``, ``bytes_contents``...), the field the datatype names; their
  elements are counted against the shape and the value limit before one is read, then written in
  the raw form.

The answer mirrors the request: raw inputs get ``raw_output_contents``, typed ones typed
``contents``. tritonclient needs the first (``InferResult.as_numpy`` reads numbers only from
``raw_output_contents``, as Triton, which always answers raw over gRPC, sends them); a client
writing typed contents by hand reads typed ones. The request parameter ``binary_data_output`` (a
``bool_param``, REST's name for the same choice) overrides the mirror either way.
"""

from __future__ import annotations

import math
import struct

import numpy as np

from .errors import BadRequest
from .oip_grpc import oip_v2_pb2 as pb
from .protocol import (
    DATATYPE_OF,
    DTYPES,
    MAX_DIMS,
    InferRequest,
    InputTensor,
    add_input,
    check_datatype,
    check_input_count,
    check_output_count,
    parse_shape,
)

# The InferTensorContents field each datatype's elements go in. FP16 has none: it travels raw only.
CONTENTS_FIELD = {
    "BOOL": "bool_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}
RAW_OUTPUTS = "binary_data_output"


def infer_request(message: pb.ModelInferRequest, max_values: int) -> InferRequest:
    """The request's tensors and options; ``binary_by_default`` is True when the answer goes in ``raw_output_contents``.

    Typed contents holding more than ``max_values`` elements in all are refused before any is read.
    """
    if not message.inputs:
        raise BadRequest("request needs 'inputs', a non-empty list of tensors")
    check_input_count(len(message.inputs))
    raw = message.raw_input_contents
    if raw and len(raw) != len(message.inputs):
        raise BadRequest(
            f"request has {len(raw)} raw_input_contents for {len(message.inputs)} inputs; send one per input, in order"
        )
    inputs: dict[str, InputTensor] = {}
    left = max_values
    for index, tensor in enumerate(message.inputs):
        if raw:
            add_input(inputs, _raw_input(index, tensor, raw[index]))
        else:
            parsed = _typed_input(index, tensor, left, max_values)
            left -= parsed.count
            add_input(inputs, parsed)
    check_output_count(len(message.outputs))
    requested = []
    for index, output in enumerate(message.outputs):
        if not output.name:
            raise BadRequest(f"outputs[{index}] needs a 'name'")
        requested.append(output.name)
    raw_outputs = _flag(message.parameters, RAW_OUTPUTS, default=bool(raw))
    return InferRequest(inputs, message.id or None, tuple(requested), binary_by_default=raw_outputs)


def _header(index: int, tensor: pb.ModelInferRequest.InferInputTensor) -> tuple[str, str, tuple[int, ...]]:
    if not tensor.name:
        raise BadRequest(f"inputs[{index}] needs a 'name'")
    datatype = check_datatype(tensor.name, tensor.datatype)
    shape = parse_shape(tensor.name, list(tensor.shape[: MAX_DIMS + 1]))  # no more read than is allowed
    return tensor.name, datatype, shape


def _raw_input(index: int, tensor: pb.ModelInferRequest.InferInputTensor, data: bytes) -> InputTensor:
    name, datatype, shape = _header(index, tensor)
    if tensor.HasField("contents"):
        raise BadRequest(
            f"input '{name}' has contents, but the request sends raw_input_contents: send every input one way"
        )
    return InputTensor(name, datatype, shape, data)


def _typed_input(index: int, tensor: pb.ModelInferRequest.InferInputTensor, left: int, limit: int) -> InputTensor:
    name, datatype, shape = _header(index, tensor)
    field = CONTENTS_FIELD.get(datatype)
    where = f"contents.{field}" if field else "raw_input_contents (there is no typed field for it)"
    misplaced = [f.name for f, _ in tensor.contents.ListFields() if f.name != field]
    if misplaced:
        raise BadRequest(
            f"input '{name}' has datatype {datatype} but data in contents.{misplaced[0]}; send it in {where}"
        )
    values = getattr(tensor.contents, field) if field else ()
    count = math.prod(shape)
    if len(values) != count:
        raise BadRequest(f"input '{name}' has shape {list(shape)} but {len(values)} elements in {where}")
    if count > left:
        raise BadRequest(
            f"the request's typed contents hold over {limit} elements; this server reads at most {limit} "
            "(a request holds a few a row)"
        )
    if datatype == "BYTES":
        return InputTensor(name, datatype, shape, b"".join(struct.pack("<I", len(v)) + v for v in values))
    try:
        data = np.asarray(values, dtype=DTYPES[datatype].newbyteorder("<")).tobytes()
    except (OverflowError, ValueError):
        raise BadRequest(f"input '{name}' holds a value out of range for {datatype}") from None
    return InputTensor(name, datatype, shape, data)


def _flag(parameters, key: str, default: bool) -> bool:
    if key not in parameters:
        return default
    kind = parameters[key].WhichOneof("parameter_choice")
    if kind != "bool_param":
        raise BadRequest(f"the request's parameter '{key}' must be a bool_param, got {kind or 'nothing'}")
    return parameters[key].bool_param


def encode_model_infer(
    model_name: str, model_version: str, request: InferRequest, outputs: dict[str, np.ndarray]
) -> bytes:
    """The serialised ModelInferResponse: the requested outputs (every one if none was), raw or typed as asked."""
    response = pb.ModelInferResponse(model_name=model_name, model_version=model_version, id=request.id or "")
    names = request.requested_outputs or tuple(outputs)
    # all raw or none: raw_output_contents is indexed like the outputs, so one typeless datatype makes all raw
    raw = request.binary_by_default or any(DATATYPE_OF[outputs[n].dtype] not in CONTENTS_FIELD for n in names)
    for name in names:
        array = outputs[name]
        datatype = DATATYPE_OF[array.dtype]
        tensor = response.outputs.add(name=name, datatype=datatype, shape=array.shape)
        if raw:
            response.raw_output_contents.append(np.ascontiguousarray(array, array.dtype.newbyteorder("<")).tobytes())
        else:
            getattr(tensor.contents, CONTENTS_FIELD[datatype]).extend(array.ravel().tolist())
    return response.SerializeToString()


__all__ = ["CONTENTS_FIELD", "RAW_OUTPUTS", "encode_model_infer", "infer_request"]
