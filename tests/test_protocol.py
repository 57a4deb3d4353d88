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
        ({"name": "x", "datatype": "UINT8", "shape": [1], "data": [-1]}, "out of range"),
        ({"name": "x", "datatype": "INT64", "shape": [1], "data": [1e300]}, "out of range"),
        ({"name": "x", "datatype": "FP32", "shape": [2], "data": [1, None]}, "null"),
        ({"name": "x", "datatype": "FP32", "shape": [2], "data": [1, {"a": 1}]}, "an object"),
        ({"name": "x", "datatype": "BOOL", "shape": [1], "data": [1]}, "must be booleans"),
    ],
)
def test_numeric_data_that_does_not_fit_its_declaration_is_refused(tensor, message):
    with pytest.raises(BadRequest, match=message):
        parse_infer_request(body(tensor)).inputs["x"].array()


TEXT = {"name": "t", "datatype": "BYTES", "shape": [1], "data": ["hi"]}


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"inputs": [{**TEXT, "datatype": ["BYTES"]}]}, "unknown datatype a list"),
        ({"inputs": [{**TEXT, "datatype": {"BYTES": 1}}]}, "unknown datatype an object"),
        ({"inputs": [{**TEXT, "datatype": None}]}, "unknown datatype null"),
        ({"inputs": [{**TEXT, "name": ["t"]}]}, "'name'"),
        ({"inputs": [{**TEXT, "shape": [1.0]}]}, "non-negative integers"),
        ({"inputs": [{**TEXT, "shape": [True]}]}, "non-negative integers"),
        ({"inputs": [{**TEXT, "shape": {"0": 1}}]}, "non-negative integers"),
        ({"inputs": [{**TEXT, "shape": [1] * 17}]}, "at most 16"),
        ({"inputs": [{**TEXT, "parameters": []}]}, "'parameters' must be an object, got a list"),
        ({"inputs": [{**TEXT, "parameters": {"binary_data_size": "4"}}]}, "binary_data_size a string"),
        ({"inputs": [{**TEXT, "parameters": {"binary_data_size": True}}]}, "binary_data_size a boolean"),
        ({"inputs": [{**TEXT, "data": "hi"}]}, "must be a list, got a string"),
        ({"inputs": [TEXT] * 65}, "at most 64"),
        ({"inputs": [TEXT], "id": ["x"]}, "'id' must be a string, got a list"),
        ({"inputs": [TEXT], "parameters": "binary"}, "'parameters' must be an object, got a string"),
        ({"inputs": [TEXT], "parameters": {"binary_data_output": "yes"}}, "true or false, got a string"),
        ({"inputs": [TEXT], "outputs": {"name": "y"}}, "'outputs' must be a list, got an object"),
        ({"inputs": [TEXT], "outputs": [{"name": "y", "parameters": 1}]}, "must be an object, got a number"),
        ({"inputs": [TEXT], "outputs": [{"name": "y", "parameters": {"binary_data": 1}}]}, "true or false"),
        ({"inputs": [TEXT], "outputs": [{"name": "y"}] * 65}, "at most 64"),
    ],
)
def test_every_field_of_a_request_is_type_checked(doc, message):
    with pytest.raises(BadRequest, match=message):
        parse_infer_request(orjson.dumps(doc))


@pytest.mark.parametrize("header", ["+3", " 3", "1_0", "-1", "3.0", "\u00b2"])
def test_the_binary_header_length_must_be_plain_digits(header):
    with pytest.raises(BadRequest, match="must be an integer"):
        parse_infer_request(b"{}", header.encode().decode("unicode_escape"))


def test_data_longer_than_its_shape_is_refused_without_reading_the_rest():
    # JSON data and binary BYTES alike stop at the element past the declared count, or at the list
    # past what nesting by the shape gives: the object after it is never looked at.
    longer = {"name": "x", "datatype": "FP32", "shape": [1, 2], "data": [[1, 2, 3, {"never": "reached"}]]}
    with pytest.raises(BadRequest, match="more than the 2 element"):
        parse_infer_request(body(longer)).inputs["x"].array()
    empty_lists = {"name": "x", "datatype": "FP32", "shape": [1, 8], "data": [[]] * 20 + [[{"never": "reached"}]]}
    with pytest.raises(BadRequest, match="nests more lists than its shape allows"):
        parse_infer_request(body(empty_lists)).inputs["x"].array()
    for nested in ({"shape": [2, 1], "data": [["a"], ["b"]]}, {"shape": [2], "data": [["a"], ["b"]]}):
        tensor = {"name": "t", "datatype": "BYTES", **nested}
        assert parse_infer_request(body(tensor)).inputs["t"].texts() == ["a", "b"]
    data = bytes_elements(b"a", b"b") + b"\xff" * 3  # a third, truncated element is never parsed
    header = orjson.dumps(
        {"inputs": [{"name": "t", "datatype": "BYTES", "shape": [2], "parameters": {"binary_data_size": len(data)}}]}
    )
    with pytest.raises(BadRequest, match="more than the 2 element"):
        parse_infer_request(header + data, str(len(header))).inputs["t"].texts()


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


def test_a_body_with_more_values_than_a_request_needs_is_refused_before_parsing():
    many = orjson.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [1.5] * 2001}]})
    with pytest.raises(BadRequest, match="at most 2000"):
        parse_infer_request(many, max_values=2000)
    strings = orjson.dumps({"inputs": [{"name": "x", "datatype": "BYTES", "shape": [1], "data": [""] * 2001}]})
    with pytest.raises(BadRequest, match="strings; this server parses at most 2000"):
        parse_infer_request(strings, max_values=2000)
    # Commas inside text are not values: a long text full of them parses as before.
    text = {"name": "t", "datatype": "BYTES", "shape": [1], "data": ['1,2,"3",\\' * 1000]}
    assert parse_infer_request(body(text), max_values=2000).inputs["t"].texts() == ['1,2,"3",\\' * 1000]


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
