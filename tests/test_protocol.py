"""Open Inference Protocol parsing and encoding, without a server: JSON and binary tensor data."""

from __future__ import annotations

import struct

import numpy as np
import orjson
import pytest

from reference_server.errors import BadRequest
from reference_server.protocol import encode_infer_response, parse_infer_request


def body(*inputs: dict, **extra) -> bytes:
    return orjson.dumps({"inputs": list(inputs), **extra})


def bytes_elements(*items: bytes) -> bytes:
    return b"".join(struct.pack("<I", len(i)) + i for i in items)


def test_nested_row_major_data_is_flattened():
    request = parse_infer_request(body({"name": "x", "datatype": "FP32", "shape": [2, 2], "data": [[1, 2], [3, 4.5]]}))
    np.testing.assert_array_equal(request.inputs["x"].array(), np.array([[1, 2], [3, 4.5]], np.float32))


def test_binary_bytes_tensor_is_read_after_the_json_header():
    data = bytes_elements(b"hello", b"w\xc3\xb6")
    header = orjson.dumps(
        {
            "inputs": [
                {
                    "name": "text",
                    "datatype": "BYTES",
                    "shape": [2],
                    "parameters": {"binary_data_size": len(data)},
                }
            ]
        }
    )
    request = parse_infer_request(header + data, str(len(header)))
    assert request.inputs["text"].texts() == ["hello", "wö"]


def test_binary_fp32_tensor_round_trips():
    values = np.arange(6, dtype="<f4").reshape(2, 3)
    header = orjson.dumps(
        {
            "inputs": [
                {
                    "name": "x",
                    "datatype": "FP32",
                    "shape": [2, 3],
                    "parameters": {"binary_data_size": values.nbytes},
                }
            ]
        }
    )
    request = parse_infer_request(header + values.tobytes(), str(len(header)))
    np.testing.assert_array_equal(request.inputs["x"].array(), values)


@pytest.mark.parametrize(
    ("raw", "header", "message"),
    [
        (b"{not json", None, "invalid JSON"),
        (b'{"inputs": [{"name": "t", "datatype": "BYTES", "shape": [1], "data": ["\xff"]}]}', None, "UTF-8"),
        (b"[1, 2]", None, "JSON object"),
        (body(), None, "non-empty list"),
        (orjson.dumps({"inputs": "x"}), None, "non-empty list"),
        (body({"datatype": "FP32", "shape": [1], "data": [1]}), None, "'name'"),
        (body({"name": "x", "datatype": "FLOAT", "shape": [1], "data": [1]}), None, "unknown datatype"),
        (body({"name": "x", "datatype": "FP32", "shape": [-1], "data": [1]}), None, "non-negative"),
        (body({"name": "x", "datatype": "FP32", "shape": [1]}), None, "neither 'data'"),
        (body({"name": "x", "datatype": "FP32", "shape": [1], "data": {"a": 1}}), None, "must be a list"),
        (body({"name": "x", "datatype": "FP32", "shape": [2], "data": [1, None]}), None, "null"),
        (
            body(
                {"name": "x", "datatype": "FP32", "shape": [1], "data": [1]},
                {"name": "x", "datatype": "FP32", "shape": [1], "data": [1]},
            ),
            None,
            "twice",
        ),
        (body({"name": "x", "datatype": "FP32", "shape": [1], "data": [1]}, id=5), None, "'id'"),
        (b"{}", "abc", "integer"),
        (b"{}", "99", "body has"),
        (
            orjson.dumps(
                {
                    "inputs": [
                        {
                            "name": "x",
                            "datatype": "FP32",
                            "shape": [1],
                            "parameters": {"binary_data_size": 400},
                        }
                    ]
                }
            ),
            "0",
            "does not fit",
        ),
    ],
)
def test_malformed_requests_are_refused_with_the_reason(raw, header, message):
    if header == "0":
        header = str(len(raw))
    with pytest.raises(BadRequest, match=message):
        parse_infer_request(raw, header)


@pytest.mark.parametrize(
    ("tensor", "message"),
    [
        ({"name": "x", "datatype": "FP32", "shape": [3], "data": [1, 2]}, "shape \\[3\\] but 2"),
        ({"name": "x", "datatype": "FP32", "shape": [2], "data": [1, "2"]}, "a string"),
        ({"name": "x", "datatype": "FP32", "shape": [1], "data": [True]}, "a boolean"),
        ({"name": "x", "datatype": "INT8", "shape": [1], "data": [1000]}, "out of range"),
    ],
)
def test_numeric_data_that_does_not_fit_its_declaration_is_refused(tensor, message):
    with pytest.raises(BadRequest, match=message):
        parse_infer_request(body(tensor)).inputs["x"].array()


def test_bytes_data_must_be_strings_of_the_declared_count():
    with pytest.raises(BadRequest, match="must be strings"):
        parse_infer_request(body({"name": "t", "datatype": "BYTES", "shape": [1], "data": [3]})).inputs["t"].texts()
    with pytest.raises(BadRequest, match="shape \\[3\\]"):
        parse_infer_request(body({"name": "t", "datatype": "BYTES", "shape": [3], "data": ["a"]})).inputs["t"].texts()


def test_binary_bytes_that_are_not_utf8_are_refused():
    header = orjson.dumps(
        {"inputs": [{"name": "t", "datatype": "BYTES", "shape": [1], "parameters": {"binary_data_size": 6}}]}
    )
    request = parse_infer_request(header + bytes_elements(b"\xff\xfe"), str(len(header)))
    with pytest.raises(BadRequest, match="not valid UTF-8"):
        request.inputs["t"].texts()


def test_json_response_carries_names_shapes_datatypes_and_id():
    request = parse_infer_request(body({"name": "x", "datatype": "FP32", "shape": [1], "data": [1]}, id="req-7"))
    content, headers = encode_infer_response("m", "fp32", request, {"y": np.array([[0.5, 0.25]], np.float32)})
    doc = orjson.loads(content)
    assert headers["content-type"] == "application/json"
    assert doc == {
        "model_name": "m",
        "model_version": "fp32",
        "id": "req-7",
        "outputs": [{"name": "y", "datatype": "FP32", "shape": [1, 2], "data": [0.5, 0.25]}],
    }


def test_binary_response_appends_raw_little_endian_data():
    request = parse_infer_request(
        body(
            {"name": "x", "datatype": "FP32", "shape": [1], "data": [1]},
            outputs=[{"name": "y", "parameters": {"binary_data": True}}],
        )
    )
    y = np.array([[0.5, 0.25]], np.float32)
    content, headers = encode_infer_response("m", "fp32", request, {"y": y})
    split = int(headers["Inference-Header-Content-Length"])
    doc = orjson.loads(content[:split])
    assert doc["outputs"][0]["parameters"] == {"binary_data_size": 8}
    np.testing.assert_array_equal(np.frombuffer(content[split:], "<f4").reshape(1, 2), y)
