"""Every endpoint of the real server on a loopback port, and every malformed request it must refuse."""

from __future__ import annotations

import base64
import re

import httpx
import numpy as np
import orjson
import pytest

SENTENCES = ["How do I reset my password?", "The weather is lovely today."]


def text_request(texts: list[str], **extra) -> dict:
    return {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [len(texts)], "data": texts}], **extra}


def feature_request(rows: list[list[float]]) -> dict:
    return {"inputs": [{"name": "features", "datatype": "FP32", "shape": [len(rows), 8], "data": rows}]}


TRANSACTION = [4.2, 3.0, 0.7, 3.1, 6.0, 2.0, 1.0, 2.5]


def test_server_metadata_and_health(client):
    assert client.get("/v2").json()["name"] == "reference-server"
    assert client.get("/v2/health/live").json() == {"live": True}
    assert client.get("/v2/health/ready").json() == {"ready": True}


def test_model_metadata_states_names_shapes_and_datatypes(client):
    meta = client.get("/v2/models/minilm").json()
    assert meta["name"] == "minilm" and meta["versions"] == ["fp32"] and meta["platform"] == "onnxruntime_onnx"
    assert meta["inputs"] == [{"name": "text", "datatype": "BYTES", "shape": [-1]}]
    assert meta["outputs"] == [{"name": "embedding", "datatype": "FP32", "shape": [-1, 384]}]
    fraud = client.get("/v2/models/fraud/versions/fp32").json()
    assert fraud["inputs"] == [{"name": "features", "datatype": "FP32", "shape": [-1, 8]}]
    assert client.get("/v2/models/minilm/ready").json() == {"name": "minilm", "ready": True}
    assert client.get("/v2/models/fraud/versions/fp32/ready").json()["ready"] is True


def test_text_infer_returns_embeddings_matching_the_metadata(client, reference_embeddings):
    sentences, expected = reference_embeddings
    response = client.post("/v2/models/minilm/infer", json=text_request(sentences[:4], id="abc"))
    assert response.status_code == 200
    doc = response.json()
    assert doc["id"] == "abc" and doc["model_name"] == "minilm" and doc["model_version"] == "fp32"
    (output,) = doc["outputs"]
    assert (output["name"], output["datatype"], output["shape"]) == ("embedding", "FP32", [4, 384])
    got = np.asarray(output["data"], np.float32).reshape(4, 384)
    assert np.abs(got - expected[:4]).max() <= 1e-5


def test_triton_style_n_by_1_text_input_is_accepted(client):
    body = {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [2, 1], "data": [["a"], ["b"]]}]}
    assert client.post("/v2/models/minilm/versions/fp32/infer", json=body).json()["outputs"][0]["shape"] == [
        2,
        384,
    ]


def test_tabular_infer_returns_probabilities(client):
    response = client.post("/v2/models/fraud/infer", json=feature_request([TRANSACTION, [3.0] * 8]))
    output = response.json()["outputs"][0]
    assert output["name"] == "probabilities" and output["shape"] == [2, 2]
    np.testing.assert_allclose(np.asarray(output["data"]).reshape(2, 2).sum(axis=1), 1.0, atol=1e-5)


def test_every_infer_response_carries_server_timing(client):
    response = client.post("/v2/models/minilm/infer", json=text_request(SENTENCES))
    match = re.fullmatch(r"queue;dur=([\d.]+), infer;dur=([\d.]+), batch;desc=(\d+)", response.headers["server-timing"])
    assert match, response.headers["server-timing"]
    assert float(match[2]) > 0 and int(match[3]) >= 2


def test_openai_embeddings_float_and_base64_agree_with_oip(client):
    oip = client.post("/v2/models/minilm/infer", json=text_request(SENTENCES)).json()["outputs"][0]["data"]
    floats = client.post("/v1/embeddings", json={"model": "minilm", "input": SENTENCES}).json()
    assert floats["object"] == "list" and floats["usage"]["prompt_tokens"] > 4
    assert [d["index"] for d in floats["data"]] == [0, 1]
    np.testing.assert_allclose(np.concatenate([d["embedding"] for d in floats["data"]]), oip, atol=1e-6)
    packed = client.post("/v1/embeddings", json={"input": SENTENCES[0], "encoding_format": "base64"}).json()
    decoded = np.frombuffer(base64.b64decode(packed["data"][0]["embedding"]), "<f4")
    np.testing.assert_allclose(decoded, oip[:384], atol=1e-6)


def test_prometheus_metrics_count_requests_queue_and_batches(client):
    client.post("/v2/models/fraud/infer", json=feature_request([TRANSACTION]))
    client.post("/v2/models/fraud/infer", json={"inputs": []})
    text = client.get("/metrics").text
    for status in ("200", "400"):
        labels = f'endpoint="infer",model="fraud",status="{status}",version="fp32"'
        assert re.search(rf"inference_requests_total\{{{labels}\}} [1-9]", text), status
    for name in (
        "inference_request_duration_seconds_bucket",
        "inference_batch_size_bucket",
        "inference_queue_wait_seconds_bucket",
        "inference_compute_seconds_bucket",
        'inference_queue_rows{model="minilm",version="fp32"}',
        "inference_padding_efficiency_ratio_bucket",
    ):
        assert name in text


def _bad(client: httpx.Client, method: str, path: str, **kwargs) -> httpx.Response:
    response = client.request(method, path, **kwargs)
    assert 400 <= response.status_code < 500, (response.status_code, response.text)
    assert isinstance(response.json()["error"], str | dict)
    return response


INFER = "/v2/models/minilm/infer"
BAD_REQUESTS = {
    "invalid JSON": (400, dict(content=b'{"inputs": [', headers={"content-type": "application/json"})),
    "truncated body": (400, dict(content=orjson.dumps(text_request(["hi"]))[:-7])),
    "JSON that is not an object": (400, dict(json=["text"])),
    "missing inputs": (400, dict(json={"id": "x"})),
    "missing input": (
        400,
        dict(json={"inputs": [{"name": "sentence", "datatype": "BYTES", "shape": [1], "data": ["hi"]}]}),
    ),
    "extra input": (
        400,
        dict(
            json={
                "inputs": [
                    text_request(["hi"])["inputs"][0],
                    {"name": "lang", "datatype": "BYTES", "shape": [1], "data": ["en"]},
                ]
            }
        ),
    ),
    "wrong datatype": (
        400,
        dict(json={"inputs": [{"name": "text", "datatype": "FP32", "shape": [1], "data": [1.0]}]}),
    ),
    "number where text is due": (
        400,
        dict(json={"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": [7]}]}),
    ),
    "shape/data mismatch": (
        400,
        dict(json={"inputs": [{"name": "text", "datatype": "BYTES", "shape": [3], "data": ["a"]}]}),
    ),
    "null in data": (
        400,
        dict(json={"inputs": [{"name": "text", "datatype": "BYTES", "shape": [2], "data": ["a", None]}]}),
    ),
    "object in data": (
        400,
        dict(json={"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": [{"a": 1}]}]}),
    ),
    "non-UTF-8 bytes in body": (
        400,
        dict(content=b'{"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": ["caf\xe9"]}]}'),
    ),
    "lone surrogate escape": (
        400,
        dict(content=b'{"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": ["\\ud800"]}]}'),
    ),
    "zero rows": (
        400,
        dict(json={"inputs": [{"name": "text", "datatype": "BYTES", "shape": [0], "data": []}]}),
    ),
    "too many rows": (400, dict(json=text_request(["row"] * 129))),
    "3-d text shape": (
        400,
        dict(json={"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1, 1, 1], "data": ["a"]}]}),
    ),
    "unknown requested output": (400, dict(json=text_request(["hi"], outputs=[{"name": "logits"}]))),
    "bad Content-Length header for binary": (
        400,
        dict(json=text_request(["hi"]), headers={"Inference-Header-Content-Length": "x"}),
    ),
    # A list or object where a string is due once met a dict lookup: a 500 and a reset connection.
    "datatype as a list": (
        400,
        dict(json={"inputs": [{"name": "text", "datatype": ["BYTES"], "shape": [1], "data": ["a"]}]}),
    ),
    "datatype as an object": (
        400,
        dict(json={"inputs": [{"name": "text", "datatype": {"BYTES": 1}, "shape": [1], "data": ["a"]}]}),
    ),
    "parameters as a list": (400, dict(json=text_request(["hi"], parameters=[]))),
    "outputs' parameters as a number": (
        400,
        dict(json=text_request(["hi"], outputs=[{"name": "embedding", "parameters": 1}])),
    ),
    "a shape of 70 dimensions": (
        400,
        dict(json={"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1] * 70, "data": ["a"]}]}),
    ),
    "data padded with empty lists": (
        400,
        dict(json={"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": [[]] * 50 + ["a"]}]}),
    ),
    "200,000 numbers": (
        400,
        dict(json={"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": [0] * 200_000}]}),
    ),
    "binary header with a sign": (
        400,
        dict(json=text_request(["hi"]), headers={"Inference-Header-Content-Length": "+1"}),
    ),
    "wrong content type": (
        415,
        dict(content=b"text=hello", headers={"content-type": "application/x-www-form-urlencoded"}),
    ),
    "oversized body": (413, dict(content=b"[" + b"1," * (5 * 1024 * 1024) + b"1]")),
}


@pytest.mark.parametrize("case", BAD_REQUESTS)
def test_malformed_text_requests_get_a_4xx_json_error(client, case):
    status, kwargs = BAD_REQUESTS[case]
    assert _bad(client, "POST", INFER, **kwargs).status_code == status
    assert client.get("/v2/health/live").status_code == 200


@pytest.mark.parametrize(
    "rows",
    [[[1.0] * 7], [[1.0] * 9]],
    ids=["too few features", "too many features"],
)
def test_tabular_shape_errors_are_400(client, rows):
    body = {"inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 8], "data": rows}]}
    assert "shape" in _bad(client, "POST", "/v2/models/fraud/infer", json=body).json()["error"]


def test_non_finite_features_are_refused(client):
    header = orjson.dumps(
        {
            "inputs": [
                {
                    "name": "features",
                    "datatype": "FP32",
                    "shape": [1, 8],
                    "parameters": {"binary_data_size": 32},
                }
            ]
        }
    )
    values = np.array([[np.nan] + [1.0] * 7], "<f4").tobytes()
    response = _bad(
        client,
        "POST",
        "/v2/models/fraud/infer",
        content=header + values,
        headers={"Inference-Header-Content-Length": str(len(header))},
    )
    assert "NaN" in response.json()["error"]
    nan_json = b'{"inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 8], "data": [NaN,1,1,1,1,1,1,1]}]}'
    _bad(client, "POST", "/v2/models/fraud/infer", content=nan_json)


def test_unknown_model_version_and_path_are_404(client):
    assert "minilm" in _bad(client, "POST", "/v2/models/gpt-5/infer", json=text_request(["x"])).json()["error"]
    assert _bad(client, "GET", "/v2/models/gpt-5").status_code == 404
    assert _bad(client, "GET", "/v2/models/minilm/versions/int8").status_code == 404
    assert _bad(client, "GET", "/v3/anything").status_code == 404


def test_wrong_method_is_405_with_allow_header(client):
    response = _bad(client, "GET", INFER)
    assert response.status_code == 405 and "POST" in response.headers["allow"]
    assert _bad(client, "DELETE", "/v2/models/minilm").status_code == 405


def test_openai_errors_use_openai_error_shape(client):
    response = _bad(client, "POST", "/v1/embeddings", json={"input": [1, 2, 3]})
    assert response.status_code == 400 and "token-id" in response.json()["error"]["message"]
    assert _bad(client, "POST", "/v1/embeddings", json={"model": "fraud", "input": "x"}).status_code == 404
    assert _bad(client, "POST", "/v1/embeddings", content=b"{").status_code == 400
    assert _bad(client, "POST", "/v1/embeddings", json={"input": "x", "encoding_format": "int4"}).status_code == 400
    assert _bad(client, "POST", "/v1/embeddings", json={"input": []}).status_code == 400


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("model", ["minilm"], "'model' must be a string"),
        ("input", ["x"] * 129, "at most 128"),
        ("input", {"text": "x"}, "'input' must be a string or a list"),
        ("encoding_format", ["float"], "got a list"),
        ("dimensions", 512, "'dimensions' must be 384"),
        ("dimensions", "384", "got a string"),
        ("user", 7, "'user' must be a string"),
    ],
)
def test_every_openai_field_is_type_checked(client, field, value, message):
    response = _bad(client, "POST", "/v1/embeddings", json={"input": "hello", field: value})
    assert response.status_code == 400 and message in response.json()["error"]["message"]


def test_openai_optional_fields_may_be_null_or_say_what_the_model_does(client):
    body = {"input": "hello", "model": None, "encoding_format": None, "dimensions": 384, "user": "u-1"}
    assert len(client.post("/v1/embeddings", json=body).json()["data"][0]["embedding"]) == 384


def test_tabular_zero_rows_is_400(client):
    body = {"inputs": [{"name": "features", "datatype": "FP32", "shape": [0, 8], "data": []}]}
    assert "no rows" in _bad(client, "POST", "/v2/models/fraud/infer", json=body).json()["error"]


def test_long_text_is_truncated_by_default(client, reference_embeddings):
    sentences, expected = reference_embeddings
    longest = max(range(len(sentences)), key=lambda i: len(sentences[i]))
    data = client.post(INFER, json=text_request([sentences[longest]])).json()["outputs"][0]["data"]
    assert np.abs(np.asarray(data) - expected[longest]).max() <= 1e-5


def test_no_request_above_ever_made_a_5xx(client):
    text = client.get("/metrics").text
    assert not re.search(r'status="5\d\d"\} [1-9]', text)
