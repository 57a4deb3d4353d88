"""The harness against servers that are not ours: MLServer 1.7.1 and KServe 0.21, unchanged.

Each runs as a real child process (``tests/targets.py``) serving a ``fraud`` model that takes our
fraud scenarios' payload (FP32 [1, 8] ``features``). What each server answers to each messy kind
is pinned here as the probe judges it, so a change in the harness's verdicts, or in what these
versions answer, shows up; docs/targets.md records the same answers.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import grpc
import httpx
import numpy as np
import psutil
import pytest

from loadtest.messy.kinds import RequestForm, kinds_for
from reference_server.oip_grpc import oip_v2_pb2 as pb
from reference_server.oip_grpc import oip_v2_pb2_grpc as pb_grpc
from tests.helpers import FEATURES, FRAUD, loadtest, run_ok, scenario
from tests.targets import TargetServer

# What the probe makes of each server's answer to each kind: (status, verdict).
MLSERVER_ANSWERS = {
    "invalid_json": ("422", "correct"),
    "truncated_body": ("422", "correct"),
    "wrong_content_type": ("422", "correct"),
    "missing_input": ("400", "correct"),
    "extra_input": ("400", "correct"),
    "wrong_datatype": ("500", "defect"),
    "shape_mismatch": ("500", "defect"),
    "null_value": ("500", "defect"),
    "nested_value": ("500", "defect"),
    "negative_values": ("200", "correct"),
    "huge_values": ("500", "defect"),
    "nan_infinity": ("422", "correct"),
    "duplicate": ("200, 200", "correct"),
    "oversized": ("200", "wrong"),
}
KSERVE_ANSWERS = {
    "invalid_json": ("422", "correct"),
    "truncated_body": ("422", "correct"),
    "wrong_content_type": ("400", "correct"),
    "missing_input": ("400", "correct"),
    "extra_input": ("400", "correct"),
    "wrong_datatype": ("500", "defect"),
    "shape_mismatch": ("400", "correct"),
    "null_value": ("400", "correct"),
    "nested_value": ("400", "correct"),
    "negative_values": ("200", "correct"),
    "huge_values": ("200", "correct"),
    "nan_infinity": ("200", "wrong"),
    "duplicate": ("200, 200", "correct"),
    "oversized": ("200", "wrong"),
}
# Counters of requests the model answered, as each server's /metrics names them.
MLSERVER_OK_COUNTER = 'model_infer_request_success_total{model="fraud",version="None"}'
MLSERVER_GRPC_OK_COUNTER = (  # its gRPC server's own count (its model counter's version label is "" over gRPC)
    'grpc_server_handled_total{grpc_code="OK",grpc_method="ModelInfer",'
    'grpc_service="inference.GRPCInferenceService",grpc_type="UNARY"}'
)
KSERVE_PREDICT_COUNTER = 'request_predict_seconds_count{model_name="fraud"}'
PREFLIGHT_REQUESTS = 1  # `loadtest run` sends one clean request before the load: the server counts it too


def fraud_scenario(tmp_path: Path, rate: float = 50, duration: str = "1s") -> Path:
    load = f'model = "open"\nshape = {{ kind = "constant", value = {rate} }}\nduration = "{duration}"\nwarmup = "0s"\n'
    return scenario(tmp_path, load + 'timeout = "5s"', FRAUD, FEATURES, name="fraud")


def probe_answers(target: TargetServer, tmp_path: Path) -> tuple[int, dict]:
    """`loadtest probe` of every kind the fraud payload takes; its exit code and (status, verdict) by kind."""
    out = tmp_path / "probe"
    result = loadtest("probe", target.url, "--scenario", str(fraud_scenario(tmp_path)), "--out", str(out))
    assert (out / "probe.json").exists(), result.stdout + result.stderr  # the clean request succeeded, all was judged
    data = json.loads((out / "probe.json").read_text())
    statuses = {k["kind"]: ", ".join(str(a["status"] or a["outcome"]) for a in k["answers"]) for k in data["kinds"]}
    return result.returncode, {k["kind"]: (statuses[k["kind"]], k["verdict"]) for k in data["kinds"]}


def counter(metrics_url: str, series: str) -> float:
    """One series of a Prometheus text page (0 before the first sample)."""
    text = httpx.get(metrics_url, timeout=5).text
    found = re.search(rf"^{re.escape(series)} (\S+)$", text, flags=re.M)
    return float(found.group(1)) if found else 0.0


def counted_after(metrics_url: str, series: str, expected: float, within_s: float = 2.0) -> float:
    """The counter once it reaches ``expected`` or ``within_s`` has passed: a server may count after it answers."""
    deadline = time.monotonic() + within_s
    while (value := counter(metrics_url, series)) != expected and time.monotonic() < deadline:
        time.sleep(0.05)
    return value


def assert_balanced_with_hdr(summary: dict, out: Path) -> None:
    a = summary["accounting"]
    assert a["balanced"] and a["scheduled"] > 0
    assert a["scheduled"] == a["ok"] + a["errors"] + a["timeouts"] + a["dropped"] + a["lost_worker"] + a["unfinished"]
    assert a["errors"] == a["timeouts"] == a["dropped"] == 0, a
    response = summary["latency_ms"]["response"]["all"]
    assert response["count"] == a["ok"]
    assert 0 < response["p50"] <= response["p90"] <= response["p99"] <= response["p99.9"] <= response["max"]
    assert (out / "response.hlog").stat().st_size > 0


# -- MLServer -------------------------------------------------------------------------------------


def test_probe_judges_every_messy_kind_mlserver_answers(mlserver, tmp_path):
    code, answers = probe_answers(mlserver, tmp_path)
    assert set(answers) == set(kinds_for(RequestForm(source="features")))  # every kind got a verdict
    assert answers == MLSERVER_ANSWERS
    assert code == 1  # its 500s are defects: the probe fails, as it should


def test_open_load_against_mlserver_balances_and_matches_its_own_count(mlserver, tmp_path):
    before = counter(mlserver.metrics_url, MLSERVER_OK_COUNTER)
    summary = run_ok(fraud_scenario(tmp_path), tmp_path / "run", "--target", mlserver.url)
    assert_balanced_with_hdr(summary, tmp_path / "run")
    expected = before + summary["accounting"]["ok"] + PREFLIGHT_REQUESTS
    assert counted_after(mlserver.metrics_url, MLSERVER_OK_COUNTER, expected) == expected


def test_open_load_over_grpc_against_mlserver_balances_and_matches_its_own_count(mlserver, tmp_path):
    # The same fraud traffic as OIP v2 over gRPC, to MLServer's gRPC port: the harness's transport, not our stubs.
    load = 'model = "open"\nshape = { kind = "constant", value = 50 }\nduration = "1s"\nwarmup = "0s"\ntimeout = "5s"'
    target = f'url = "grpc://{mlserver.grpc_target}"\n' + FRAUD.replace('"oip-v2"', '"oip-v2-grpc"')
    before = counter(mlserver.metrics_url, MLSERVER_GRPC_OK_COUNTER)
    summary = run_ok(scenario(tmp_path, load, target, FEATURES, name="fraud-grpc"), tmp_path / "run")
    assert summary["target"]["protocol"] == "oip-v2-grpc", summary["target"]
    assert_balanced_with_hdr(summary, tmp_path / "run")
    expected = before + summary["accounting"]["ok"] + PREFLIGHT_REQUESTS
    assert counted_after(mlserver.metrics_url, MLSERVER_GRPC_OK_COUNTER, expected) == expected


def test_capacity_of_mlserver_by_its_url(mlserver, tmp_path):
    out = tmp_path / "capacity"
    # MLServer carries about 800 req/s on 2 cores beside the load generator: from 800, three 1 s steps find a
    # passing and a failing rate whichever way each goes (800 holds, 1600 fails; or 800 fails, then 400 holds).
    args = ["--target", mlserver.url, "--slo", "p50<20ms", "--start", "800", "--resolution", "50%", "--confirm", "1"]
    args += ["--min-step", "1s", "--max-step", "1s", "--max-steps", "3", "--max-idle-wait", "2s", "--no-class"]
    result = loadtest("capacity", str(fraud_scenario(tmp_path)), *args, "--out", str(out))
    assert result.returncode == 0, result.stdout + result.stderr
    data = json.loads((out / "capacity.json").read_text())
    tried = [s["target_rps"] for s in data["steps"]]
    assert data["target"] == mlserver.url
    assert 0 < data["capacity_rps"] < max(tried), data["steps"]
    assert any(s["passed"] and s["target_rps"] == data["capacity_rps"] for s in data["steps"])
    assert all((out / s["out_dir"] / "summary.json").exists() for s in data["steps"])
    assert loadtest("report", str(out)).returncode == 0
    assert (out / "report.html").stat().st_size > 0 and (out / "report.md").stat().st_size > 0


# -- KServe ---------------------------------------------------------------------------------------


def test_probe_judges_every_messy_kind_kserve_answers(kserve_server, tmp_path):
    code, answers = probe_answers(kserve_server, tmp_path)
    assert answers == KSERVE_ANSWERS
    assert code == 1


def test_open_load_against_kserve_balances_and_matches_its_own_count(kserve_server, tmp_path):
    before = counter(kserve_server.metrics_url, KSERVE_PREDICT_COUNTER)
    summary = run_ok(fraud_scenario(tmp_path), tmp_path / "run", "--target", kserve_server.url)
    assert_balanced_with_hdr(summary, tmp_path / "run")
    expected = before + summary["accounting"]["ok"] + PREFLIGHT_REQUESTS
    assert counted_after(kserve_server.metrics_url, KSERVE_PREDICT_COUNTER, expected) == expected


@pytest.mark.parametrize("target", ["mlserver", "kserve_server"])
def test_grpc_target_answers_oip_v2_with_our_stubs(target, request):
    """Each server's gRPC address takes our OIP v2 messages: ready, and one inference on raw FP32 bytes."""
    server: TargetServer = request.getfixturevalue(target)
    with grpc.insecure_channel(server.grpc_target) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        assert stub.ModelReady(pb.ModelReadyRequest(name=server.model), timeout=5).ready
        features = pb.ModelInferRequest.InferInputTensor(name="features", datatype="FP32", shape=[1, 8])
        rows = np.linspace(0, 1, 8, dtype="<f4").tobytes()
        answer = stub.ModelInfer(
            pb.ModelInferRequest(model_name=server.model, inputs=[features], raw_input_contents=[rows]), timeout=5
        )
    assert [list(o.shape) for o in answer.outputs] == [[1, 1]]


@pytest.mark.parametrize("target", ["mlserver", "kserve_server"])
def test_target_servers_listen_on_loopback_only(target, request):
    """Neither server is reachable on another interface: both bind 127.0.0.1 (KServe after our rebinding)."""
    server: TargetServer = request.getfixturevalue(target)
    listening = {c.laddr.ip for c in psutil.Process(server.pid).net_connections("inet") if c.status == "LISTEN"}
    assert listening and listening <= {"127.0.0.1", "::ffff:127.0.0.1"}, listening
