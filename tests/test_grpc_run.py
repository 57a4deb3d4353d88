"""`loadtest` over gRPC (protocol oip-v2-grpc): one real open-load run against the session server's gRPC port,
a probe against the embedded server, and the encoding and status rules on their own.

The run (``grpc_run``) is shared: it mixes messy kinds into clean traffic, and the server's own
Prometheus count of gRPC ModelInfer calls is read before and after it.
"""

from __future__ import annotations

import json

import grpc
import numpy as np
import pytest
from google.protobuf.message import DecodeError
from google.protobuf.unknown_fields import UnknownFieldSet

from loadtest.config.scenario import DEFAULT_CLASSES, scenario_from_dict
from loadtest.engine.grpc_client import CONNECTION, status_kind
from loadtest.engine.recorder import TIMEOUT
from loadtest.engine.server_metrics import read_metrics, total
from loadtest.errors import ConfigError
from loadtest.messy.kinds import CORRECT, DEFECT, WRONG, RequestForm, build
from loadtest.messy.verdicts import verdict
from loadtest.report.terminal import server_split_line
from loadtest.results.summary import Summary, transport_error
from loadtest.traffic.grpc_messages import has_outputs
from loadtest.traffic.payloads import features_pool, text_pool
from loadtest.traffic.protocols import GRPC, make_protocol
from reference_server.oip_grpc import oip_v2_pb2 as pb
from tests.helpers import loadtest, run_ok, scenario

MESSY_KINDS = ["not_protobuf", "truncated_body", "shape_mismatch", "wrong_datatype", "unknown_model", "empty_string"]
EXPECTED_ANSWER = {
    "not_protobuf": "grpc_invalid_argument",
    "truncated_body": "grpc_invalid_argument",
    "shape_mismatch": "grpc_invalid_argument",
    "wrong_datatype": "grpc_invalid_argument",
    "unknown_model": "grpc_not_found",
    "empty_string": "grpc_ok",
}


def ok_calls(server) -> float:
    samples = read_metrics(server.url + "/metrics")
    return total(samples, "inference_requests_total", endpoint="grpc_infer", model="minilm", status="200") or 0.0


@pytest.fixture(scope="module")
def grpc_run(server, tmp_path_factory):
    """40 req/s for 1.5 s over gRPC, a quarter of it messy; the summary and the server's count of OK calls during it."""
    tmp = tmp_path_factory.mktemp("grpc_run")
    path = scenario(
        tmp,
        'shape = { kind = "constant", value = 40 }\nduration = "1.5s"\ntimeout = "5s"',
        f'url = "grpc://{server.grpc_target}"\nprotocol = "{GRPC}"\nmodel = "minilm"',
    )
    path.write_text(path.read_text() + f"[messy]\nshare = 0.25\nkinds = {json.dumps(MESSY_KINDS)}\n")
    before = ok_calls(server)
    summary = run_ok(path, tmp / "out")
    return summary, ok_calls(server) - before


def test_a_grpc_run_balances_its_accounting_and_its_ok_calls_match_the_servers_own_count(grpc_run):
    summary, server_ok = grpc_run
    a = summary["accounting"]
    assert a["balanced"] and a["scheduled"] >= 40
    assert a["scheduled"] == a["ok"] + a["errors"] + a["timeouts"] + a["dropped"]
    assert (a["errors"], a["timeouts"], a["dropped"]) == (0, 0, 0), a["errors_by_kind"]
    assert summary["target"]["url"].startswith("grpc://") and summary["target"]["protocol"] == GRPC
    assert summary["run"]["locust_requests"] == a["scheduled"]  # Locust's own statistics see every call
    # OK calls the server counted: the preflight's one, every clean request, and the messy ones answered OK.
    clean_ok = a["by_class"]["clean"]["ok"]
    messy_ok = sum(k["answers"].get("grpc_ok", 0) for k in summary["messy"]["kinds"].values())
    assert server_ok == 1 + clean_ok + messy_ok


def test_the_servers_queue_and_compute_come_from_grpc_trailing_metadata(grpc_run):
    summary, server_ok = grpc_run
    queue, compute = summary["latency_ms"]["server_queue"]["all"], summary["latency_ms"]["server_compute"]["all"]
    assert queue["count"] == compute["count"] == server_ok - 1  # every OK call of the run, none of the refused
    assert compute["min"] > 0 and compute["max"] <= summary["latency_ms"]["service"]["all"]["max"]
    assert summary["server_split"]["source"] == "server-timing"
    said = server_split_line(Summary.from_dict(summary))
    assert said.startswith("server split, per request, from the server-timing trailing metadata:"), said


def test_messy_kinds_over_grpc_get_grpc_status_codes_and_correct_verdicts(grpc_run):
    summary, _ = grpc_run
    messy = summary["messy"]
    assert set(messy["kinds"]) == set(MESSY_KINDS)
    assert messy["correct"] == messy["requests"] >= len(MESSY_KINDS) and messy["wrong"] == messy["defects"] == 0
    for kind, entry in messy["kinds"].items():
        assert entry["answers"] == {EXPECTED_ANSWER[kind]: entry["scheduled"]}, kind


def test_probe_over_grpc_starts_the_embedded_server_with_grpc_and_names_the_kinds_it_skips(tmp_path):
    result = loadtest("probe", "--scenario", "scenarios/steady-grpc.toml", "--out", str(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    data = json.loads((tmp_path / "probe.json").read_text())
    assert data["target"].startswith("grpc://127.0.0.1:") and data["protocol"] == GRPC
    statuses = {k["kind"]: k["status"] for k in data["kinds"]}
    assert statuses["not_protobuf"] == "INVALID_ARGUMENT" and statuses["unknown_model"] == "NOT_FOUND"
    assert statuses["oversized"] == "RESOURCE_EXHAUSTED" and statuses["emoji"] == "OK"
    assert {s["kind"] for s in data["skipped"]} == {"invalid_json", "wrong_content_type", "null_value", "nested_value"}
    said = " ".join((result.stdout + result.stderr).split())  # as printed, whatever the terminal's width
    assert "skipped over oip-v2-grpc" in said and "null_value (protobuf has no null)" in said


# -- pure: encoding, the status -> kind mapping, the URL --------------------------------------------------------


def test_text_and_feature_bodies_are_model_infer_requests_with_raw_contents_as_tritonclient_sends():
    protocol = make_protocol(GRPC, "minilm", "text")
    payload = text_pool(list(DEFAULT_CLASSES), protocol.encode_text, 7).pick(0)
    request = pb.ModelInferRequest.FromString(payload.body)
    assert request.model_name == "minilm" and len(request.inputs) == 1
    tensor = request.inputs[0]
    assert (tensor.name, tensor.datatype, list(tensor.shape)) == ("text", "BYTES", [1])
    text = payload.text.encode()
    assert request.raw_input_contents == [len(text).to_bytes(4, "little") + text]

    fraud = make_protocol(GRPC, "fraud", "features")
    row = [4.2, 3.0, -0.7, 3.1, 6.0, 2.0, 1.0, 2.5]
    request = pb.ModelInferRequest.FromString(fraud.encode_features(row))
    assert (request.model_name, request.inputs[0].name) == ("fraud", "features")
    assert (request.inputs[0].datatype, list(request.inputs[0].shape)) == ("FP32", [1, 8])
    assert np.array_equal(np.frombuffer(request.raw_input_contents[0], "<f4"), np.float32(row))
    pooled = pb.ModelInferRequest.FromString(features_pool(8, fraud.encode_features, 7).pick(0).body)
    assert len(pooled.raw_input_contents[0]) == 8 * 4  # the pool's bodies are the same messages


def test_the_answer_check_wants_a_model_infer_response_with_outputs():
    output = pb.ModelInferResponse.InferOutputTensor(name="embedding", datatype="FP32", shape=[1, 384])
    answer = pb.ModelInferResponse(model_name="minilm", outputs=[output], raw_output_contents=[b"\0" * 1536])
    assert has_outputs(answer.SerializeToString())
    assert not has_outputs(pb.ModelInferResponse(model_name="minilm").SerializeToString())
    assert not has_outputs(b'{"outputs": [1]}') and not has_outputs(answer.SerializeToString()[:-5])


def test_messy_grpc_bodies_are_the_malformed_messages_they_claim():
    form = RequestForm(GRPC, "minilm", "text")
    mismatch = pb.ModelInferRequest.FromString(build("shape_mismatch", form, 1).body)
    assert list(mismatch.inputs[0].shape) == [3] and mismatch.raw_input_contents[0].count(b" ") >= 2
    assert pb.ModelInferRequest.FromString(build("unknown_model", form, 1).body).model_name.startswith("no-such")
    assert pb.ModelInferRequest.FromString(build("wrong_datatype", form, 1).body).inputs[0].datatype == "FP32"
    with pytest.raises(DecodeError):
        pb.ModelInferRequest.FromString(build("not_protobuf", form, 1).body)
    for kind in ("unknown_field", "oversized"):  # a clean request, and beside it a field the message does not define
        request = pb.ModelInferRequest.FromString(build(kind, RequestForm(GRPC, oversized_bytes=4096), 1).body)
        (extra,) = UnknownFieldSet(request)
        assert extra.field_number not in pb.ModelInferRequest.DESCRIPTOR.fields_by_number, kind
        assert request.model_name == "minilm" and len(request.raw_input_contents) == 1, kind
    assert build("invalid_json", RequestForm("oip-v2"), 1).expect == "reject"  # HTTP's kinds stay as they were
    assert build("nan_infinity", RequestForm(GRPC, source="features"), 1).expect == "either"  # FP32 holds NaN


@pytest.mark.parametrize(
    ("code", "details", "kind"),
    [
        (grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded", TIMEOUT),
        (grpc.StatusCode.UNAVAILABLE, "failed to connect to all addresses; last error: Connection refused", CONNECTION),
        (grpc.StatusCode.UNAVAILABLE, "Socket closed", CONNECTION),
        (grpc.StatusCode.UNAVAILABLE, "the queue is full", "grpc_unavailable"),
        (grpc.StatusCode.INVALID_ARGUMENT, "shape [3] but 2 elements", "grpc_invalid_argument"),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, "Received message larger than max", "grpc_resource_exhausted"),
    ],
)
def test_a_grpc_status_becomes_the_recorders_kind(code, details, kind):
    assert status_kind(code, details) == kind


def test_grpc_statuses_are_answers_judged_as_grpcs_own_http_mapping():
    assert not transport_error("grpc_unavailable") and not transport_error("grpc_invalid_argument")
    assert transport_error(CONNECTION)
    assert verdict("reject", "grpc_invalid_argument") == verdict("reject", "grpc_not_found") == CORRECT
    assert verdict("reject", "grpc_resource_exhausted") == CORRECT
    assert verdict("accept", "grpc_invalid_argument") == WRONG
    assert verdict("reject", "grpc_internal") == verdict("reject", "grpc_unavailable") == DEFECT


@pytest.mark.parametrize(
    ("protocol", "url", "message"),
    [
        (GRPC, "http://127.0.0.1:8001", "takes grpc://host:port"),
        (GRPC, "grpc://127.0.0.1", "takes grpc://host:port"),
        (GRPC, "grpcs://127.0.0.1:8001", "plaintext gRPC only"),
        ("oip-v2", "grpc://127.0.0.1:8001", 'protocol = "oip-v2-grpc"'),
    ],
)
def test_the_target_url_must_fit_the_protocol(protocol, url, message):
    with pytest.raises(ConfigError, match=message):
        scenario_from_dict({"target": {"url": url, "protocol": protocol}, "load": {"duration": "1s"}}, "s.toml", None)


def test_capacity_over_grpc_waits_for_idle_by_the_servers_metrics_page_and_needs_one_named(server, tmp_path):
    load = 'shape = { kind = "constant", value = 10 }\nduration = "1s"\nwarmup = "0s"\ntimeout = "5s"'
    target = f'url = "grpc://{server.grpc_target}"\nprotocol = "{GRPC}"\nmodel = "minilm"'
    never = tmp_path / "never"
    refused = loadtest("capacity", str(scenario(tmp_path, load, target, name="bare")), "--out", str(never))
    assert refused.returncode == 2 and "target.metrics" in refused.stderr and not never.exists(), refused.stderr
    watched = scenario(tmp_path, load, f'{target}\nmetrics = "{server.url}/metrics"', name="watched")
    settings = ["--start", "20", "--max-steps", "1", "--min-step", "1s", "--max-step", "1s", "--confirm", "1"]
    result = loadtest("capacity", str(watched), *settings, "--no-class", "--out", str(tmp_path / "capacity"))
    assert result.returncode == 0, result.stdout + result.stderr
    data = json.loads((tmp_path / "capacity" / "capacity.json").read_text())
    (step,) = data["steps"]
    assert data["idle"]["signal"] == "metrics" and step["drain"]["idle"]
    assert step["target_rps"] == 20 and step["ok"] == step["scheduled"] > 0  # every call of the step answered over gRPC
