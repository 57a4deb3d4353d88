"""OIP v2 over gRPC on the real server: tritonclient unchanged, our own stub, and every malformed call's status code.

All against the session server (``conftest.server``, started with ``--grpc-port 0``), whose REST
answers are the reference: gRPC shares its models, batchers and metrics.
"""

from __future__ import annotations

import re
import signal
import socket
import struct
import time

import grpc
import numpy as np
import pytest
import tritonclient.grpc as triton

from loadtest.config.profile import load_profile
from loadtest.engine.recorder import parse_server_timing
from loadtest.engine.server_metrics import read_metrics, total
from loadtest.errors import ConfigError
from reference_server.cli import build_parser
from reference_server.launch import start_server, wants_grpc
from reference_server.oip_grpc import oip_v2_pb2 as pb
from reference_server.oip_grpc import oip_v2_pb2_grpc as pb_grpc

TEXTS = ["How do I reset my password?", "The weather is lovely today.", "café ☕ naïve"]
TRANSACTIONS = [[4.2, 3.0, 0.7, 3.1, 6.0, 2.0, 1.0, 2.5], [0.5, 1.0, 0.1, 0.2, 1.0, 0.0, 0.0, 0.3]]
Tensor = pb.ModelInferRequest.InferInputTensor
INFER = "/inference.GRPCInferenceService/ModelInfer"


def length_prefixed(texts: list[str]) -> bytes:
    """BYTES elements as raw_input_contents carries them: each after its 4-byte little-endian length."""
    return b"".join(struct.pack("<I", len(t.encode())) + t.encode() for t in texts)


def text_request(texts: list[str], raw: bool = True, **extra) -> pb.ModelInferRequest:
    tensor = Tensor(name="text", datatype="BYTES", shape=[len(texts)])
    if raw:
        return pb.ModelInferRequest(
            model_name="minilm", inputs=[tensor], raw_input_contents=[length_prefixed(texts)], **extra
        )
    tensor.contents.bytes_contents.extend(t.encode() for t in texts)
    return pb.ModelInferRequest(model_name="minilm", inputs=[tensor], **extra)


def feature_request(rows: list[list[float]], raw: bool = True) -> pb.ModelInferRequest:
    tensor = Tensor(name="features", datatype="FP32", shape=[len(rows), 8])
    if raw:
        data = np.asarray(rows, "<f4").tobytes()
        return pb.ModelInferRequest(model_name="fraud", inputs=[tensor], raw_input_contents=[data])
    tensor.contents.fp32_contents.extend(np.ravel(rows))
    return pb.ModelInferRequest(model_name="fraud", inputs=[tensor])


def rest_answer(client, model: str, body: dict) -> np.ndarray:
    response = client.post(f"/v2/models/{model}/infer", json=body)
    assert response.status_code == 200, response.text
    (output,) = response.json()["outputs"]
    return np.asarray(output["data"], np.float32).reshape(output["shape"])


def answer(response: pb.ModelInferResponse) -> np.ndarray:
    """The one output, from raw_output_contents or typed contents, whichever the server chose."""
    (output,) = response.outputs
    if response.raw_output_contents:
        return np.frombuffer(response.raw_output_contents[0], "<f4").reshape(output.shape)
    return np.asarray(output.contents.fp32_contents, np.float32).reshape(output.shape)


@pytest.fixture(scope="module")
def channel(server):
    with grpc.insecure_channel(server.grpc_target) as opened:
        yield opened


@pytest.fixture(scope="module")
def stub(channel):
    return pb_grpc.GRPCInferenceServiceStub(channel)


def test_tritonclient_infers_over_grpc_unchanged_and_gets_the_answers_rest_gives(server, client):
    triton_client = triton.InferenceServerClient(server.grpc_target)
    assert triton_client.is_server_live() and triton_client.is_server_ready() and triton_client.is_model_ready("minilm")
    metadata = triton_client.get_model_metadata("minilm")
    assert (metadata.name, list(metadata.versions), metadata.inputs[0].name) == ("minilm", ["fp32"], "text")
    assert [list(o.shape) for o in metadata.outputs] == [[-1, 384]]

    text = triton.InferInput("text", [3], "BYTES")
    text.set_data_from_numpy(np.array([t.encode() for t in TEXTS], dtype=object))
    embeddings = triton_client.infer("minilm", [text]).as_numpy("embedding")
    rest = rest_answer(
        client, "minilm", {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [3], "data": TEXTS}]}
    )
    assert embeddings.dtype == np.float32 and embeddings.shape == (3, 384)
    np.testing.assert_allclose(embeddings, rest, rtol=0, atol=1e-6)

    features = triton.InferInput("features", [2, 8], "FP32")
    features.set_data_from_numpy(np.asarray(TRANSACTIONS, np.float32))
    probabilities = triton_client.infer("fraud", [features]).as_numpy("probabilities")
    rest = rest_answer(
        client, "fraud", {"inputs": [{"name": "features", "datatype": "FP32", "shape": [2, 8], "data": TRANSACTIONS}]}
    )
    np.testing.assert_allclose(probabilities, rest, rtol=0, atol=1e-6)
    triton_client.close()


def test_typed_contents_get_typed_answers_equal_to_the_raw_ones(stub):
    for raw_request, typed_request in (
        (text_request(TEXTS), text_request(TEXTS, raw=False)),
        (feature_request(TRANSACTIONS), feature_request(TRANSACTIONS, raw=False)),
    ):
        raw, typed = stub.ModelInfer(raw_request), stub.ModelInfer(typed_request)
        assert len(raw.raw_output_contents) == 1 and not raw.outputs[0].HasField("contents")
        assert not typed.raw_output_contents and typed.outputs[0].contents.fp32_contents
        np.testing.assert_allclose(answer(typed), answer(raw), rtol=0, atol=1e-6)
    # binary_data_output overrides the mirror either way; the id is echoed
    flipped = text_request(TEXTS[:1], raw=False, id="q-7")
    flipped.parameters["binary_data_output"].bool_param = True
    response = stub.ModelInfer(flipped)
    assert response.id == "q-7" and len(response.raw_output_contents) == 1 and answer(response).shape == (1, 384)


def test_every_answer_carries_rest_server_timing_as_trailing_metadata(stub, client):
    _, call = stub.ModelInfer.with_call(feature_request(TRANSACTIONS[:1]))
    timing = dict(call.trailing_metadata())["server-timing"]
    rest = client.post(
        "/v2/models/fraud/infer",
        json={"inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 8], "data": TRANSACTIONS[:1]}]},
    )
    shape = r"queue;dur=\d+\.\d{3}, infer;dur=\d+\.\d{3}, batch;desc=\d+"
    assert re.fullmatch(shape, timing) and re.fullmatch(shape, rest.headers["server-timing"]), timing
    queue, compute = parse_server_timing(timing)  # the harness's own parser
    assert 0 <= queue < 1 and 0 < compute < 1


def _fp32_as_text() -> pb.ModelInferRequest:
    request = text_request(TEXTS[:1], raw=False)
    request.inputs[0].datatype = "FP32"
    request.inputs[0].contents.Clear()
    request.inputs[0].contents.fp32_contents.append(1.0)
    return request


def _misplaced() -> pb.ModelInferRequest:
    request = text_request(TEXTS[:1], raw=False)
    request.inputs[0].contents.fp32_contents.append(1.0)  # BYTES with numbers beside the strings
    return request


def _named(request: pb.ModelInferRequest, **names: str) -> pb.ModelInferRequest:
    for field, value in names.items():  # model_name, model_version
        setattr(request, field, value)
    return request


def _one_raw_too_many() -> pb.ModelInferRequest:
    request = feature_request(TRANSACTIONS[:1])
    request.raw_input_contents.append(request.raw_input_contents[0])
    return request


_NAN = [[float("nan")] + [0.0] * 7]
_UNKNOWN_OUTPUT = feature_request(TRANSACTIONS[:1])
_UNKNOWN_OUTPUT.outputs.add(name="logits")
MALFORMED = {
    "garbage bytes": (b"\xff\xfe not a protobuf", grpc.StatusCode.INVALID_ARGUMENT),
    "a truncated message": (text_request(TEXTS).SerializeToString()[:-7], grpc.StatusCode.INVALID_ARGUMENT),
    "more fields than a request can need": (b"\x2a\x00" * 2000, grpc.StatusCode.INVALID_ARGUMENT),
    "a wrong datatype": (_fp32_as_text(), grpc.StatusCode.INVALID_ARGUMENT),
    "data in another datatype's field": (_misplaced(), grpc.StatusCode.INVALID_ARGUMENT),
    "typed data that does not match the shape": (
        pb.ModelInferRequest(
            model_name="minilm",
            inputs=[
                Tensor(name="text", datatype="BYTES", shape=[5], contents=pb.InferTensorContents(bytes_contents=[b"a"]))
            ],
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    ),
    "raw data that does not match the shape": (
        pb.ModelInferRequest(
            model_name="fraud",
            inputs=[Tensor(name="features", datatype="FP32", shape=[1, 8])],
            raw_input_contents=[b"\0" * 28],
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    ),
    "raw data for no input": (_one_raw_too_many(), grpc.StatusCode.INVALID_ARGUMENT),
    "no inputs": (pb.ModelInferRequest(model_name="minilm"), grpc.StatusCode.INVALID_ARGUMENT),
    "too many rows": (text_request(["a"] * 129), grpc.StatusCode.INVALID_ARGUMENT),
    "text that is not UTF-8": (
        pb.ModelInferRequest(
            model_name="minilm",
            inputs=[Tensor(name="text", datatype="BYTES", shape=[1])],
            raw_input_contents=[b"\x01\0\0\0\xff"],
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    ),
    "NaN features": (feature_request(_NAN, raw=False), grpc.StatusCode.INVALID_ARGUMENT),
    "an unknown requested output": (_UNKNOWN_OUTPUT, grpc.StatusCode.INVALID_ARGUMENT),
    "an unknown model": (_named(text_request(TEXTS), model_name="bert"), grpc.StatusCode.NOT_FOUND),
    "an unknown version": (_named(text_request(TEXTS), model_version="int4"), grpc.StatusCode.NOT_FOUND),
    "a message over --max-body-bytes": (
        text_request(["x" * (8 * 1024 * 1024 + 1024)]),
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    ),
}


@pytest.mark.parametrize(("body", "code"), MALFORMED.values(), ids=MALFORMED.keys())
def test_a_malformed_call_gets_its_status_code_and_the_server_answers_on(channel, stub, body, code):
    call = channel.unary_unary(INFER)  # no serializer: the bytes go as they are
    with pytest.raises(grpc.RpcError) as refused:
        call(body if isinstance(body, bytes) else body.SerializeToString(), timeout=10)
    assert refused.value.code() == code, refused.value.details()
    assert refused.value.details()  # one line that says what was wrong
    assert stub.ServerLive(pb.ServerLiveRequest()).live
    assert stub.ModelInfer(feature_request(TRANSACTIONS[:1])).outputs[0].shape == [1, 2]


def test_the_other_methods_refuse_garbage_and_unknown_models_too(channel, stub):
    with pytest.raises(grpc.RpcError) as garbage:
        channel.unary_unary("/inference.GRPCInferenceService/ModelMetadata")(b"\xff\xff", timeout=10)
    assert garbage.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    for method in (stub.ModelMetadata, stub.ModelReady):
        with pytest.raises(grpc.RpcError) as unknown:
            method(pb.ModelMetadataRequest(name="bert"))
        assert unknown.value.code() == grpc.StatusCode.NOT_FOUND and "bert" in unknown.value.details()


def test_grpc_calls_count_in_rests_metrics_under_their_own_endpoint(server, stub):
    def counts() -> tuple[float, float]:
        samples = read_metrics(server.url + "/metrics")
        labels = {"endpoint": "grpc_infer", "model": "fraud"}
        return tuple(total(samples, "inference_requests_total", status=s, **labels) or 0.0 for s in ("200", "400"))

    before = counts()
    stub.ModelInfer(feature_request(TRANSACTIONS))
    with pytest.raises(grpc.RpcError):
        stub.ModelInfer(feature_request(_NAN))
    assert np.subtract(counts(), before).tolist() == [1.0, 1.0]


def _wait_for(server, condition, what: str, timeout: float = 5.0) -> dict:
    deadline = time.monotonic() + timeout
    while not condition(samples := read_metrics(server.url + "/metrics")):
        assert time.monotonic() < deadline, f"not {what} after {timeout:.0f}s"
        time.sleep(0.005)
    return samples


def test_a_busy_model_drops_a_cancelled_call_uncomputed_and_refuses_past_its_queue_bound(server, stub):
    # 8 long texts: one batch of ~0.5 s, during which the next calls queue (the session server has no
    # queue time limit, and the default bound of 512 rows).
    def queued(samples) -> float:
        return total(samples, "inference_queue_rows", model="minilm") or 0.0

    def dropped(samples) -> float:
        return total(samples, "inference_dropped_total", model="minilm", reason="client_gone") or 0.0

    def cancelled(samples) -> float:
        return total(samples, "inference_requests_total", endpoint="grpc_infer", model="minilm", status="499") or 0.0

    before = read_metrics(server.url + "/metrics")
    running = stub.ModelInfer.future(text_request(["word " * 300] * 8))
    _wait_for(
        server,
        lambda s: queued(s) == 0 and (total(s, "inference_requests_in_flight", endpoint="grpc_infer") or 0) == 1,
        "running",
    )

    leaving = stub.ModelInfer.future(text_request(["who waits?"]))
    _wait_for(server, lambda s: queued(s) == 1, "queued")
    leaving.cancel()
    after = _wait_for(server, lambda s: dropped(s) == dropped(before) + 1, "dropped")
    assert cancelled(after) == cancelled(before) + 1

    full = [stub.ModelInfer.future(text_request(["a b"] * 128)) for _ in range(4)]
    _wait_for(server, lambda s: queued(s) == 512, "full")
    with pytest.raises(grpc.RpcError) as refused:
        stub.ModelInfer(text_request(["one too many"]))
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE and "queue is full" in refused.value.details()
    assert dict(refused.value.trailing_metadata())["retry-after"] == "1"
    assert not running.done(), "the long batch ended before the test did: its timing says nothing"
    assert answer(running.result()).shape == (8, 384) and all(answer(f.result()).shape == (128, 384) for f in full)


def test_sigterm_stops_grpc_with_http_letting_calls_in_flight_finish_and_leaves_no_port(models_dir):
    s = start_server(["--models-dir", str(models_dir), "--grpc-port", "0"])
    host, port = s.grpc_target.rsplit(":", 1)
    with grpc.insecure_channel(s.grpc_target) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        # ~0.5 s of compute; uvicorn notices the signal within its 0.1 s tick, and gRPC's stop begins then
        running = stub.ModelInfer.future(text_request(["word " * 300] * 8))
        _wait_for(s, lambda m: total(m, "inference_requests_in_flight", endpoint="grpc_infer") == 1, "in flight")
        s.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 5
        while True:  # new calls are refused while the one in flight still runs
            with grpc.insecure_channel(s.grpc_target) as fresh:
                try:
                    pb_grpc.GRPCInferenceServiceStub(fresh).ServerLive(pb.ServerLiveRequest(), timeout=1)
                except grpc.RpcError as refused:
                    # refused at connect; or, having raced the stop on a connection just opened, cancelled by gRPC
                    assert refused.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED), refused
                    break
            assert time.monotonic() < deadline, "gRPC still takes calls 5 s after SIGTERM"
        assert not running.done(), "the call in flight ended before gRPC stopped taking calls: the test says nothing"
        assert answer(running.result(timeout=30)).shape == (8, 384)
    assert s.process.wait(timeout=30) == 0  # by itself: a second SIGTERM could land in its interpreter's exit
    s.stop()  # the work directory
    with pytest.raises(ConnectionRefusedError), socket.create_connection((host, int(port)), timeout=1):
        pass


def test_a_profile_turns_grpc_on_for_the_server_it_starts(tmp_path):
    path = tmp_path / "p.toml"
    for line, port in (("", None), ("grpc_port = 0", 0), ("grpc_port = 8001", 8001)):
        path.write_text(f'name = "p"\n[model]\nname = "fraud"\n[server]\n{line}\n')
        args = load_profile(str(path)).server_args()
        assert build_parser().parse_args(["serve", *args]).grpc_port == port and wants_grpc(args) == (port is not None)
    for wrong in ("70000", "true", '"8001"'):
        path.write_text(f'name = "p"\n[model]\nname = "fraud"\n[server]\ngrpc_port = {wrong}\n')
        with pytest.raises(ConfigError, match="server.grpc_port"):
            load_profile(str(path))
