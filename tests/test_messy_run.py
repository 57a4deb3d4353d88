"""Real runs with messy traffic: the reference server handles every kind; a fragile endpoint is caught."""

from __future__ import annotations

import json

import pytest

from loadtest.messy.kinds import RequestForm, kinds_for
from tests.helpers import loadtest, scenario
from tests.servers import fragile

TEXT = (
    'source = "text"\nclasses = [{ name = "short", weight = 80, min_tokens = 4, max_tokens = 16 }, '
    '{ name = "medium", weight = 20, min_tokens = 17, max_tokens = 64 }]'
)


@pytest.mark.slow
def test_fifteen_percent_messy_traffic_against_the_reference_server(tmp_path):
    # About 160 arrivals: 15% of them is more than one cycle of the 20 kinds, so every kind is sent.
    path = scenario(
        tmp_path,
        'shape = { kind = "constant", value = 80 }\nduration = "2s"\n[messy]\nshare = "15%"',
        'profile = "minilm-fp32"\nprotocol = "oip-v2"\nmodel = "minilm"',
        TEXT,
        name="messy",
    )
    out = tmp_path / "out"
    result = loadtest("run", str(path), "--out", str(out), "--messy-baseline", timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    summary = json.loads((out / "summary.json").read_text())
    messy = summary["messy"]
    # Every kind that fits OIP v2 text was sent and judged; the reference server has no defect.
    assert set(messy["kinds"]) == set(kinds_for(RequestForm())), messy["kinds"].keys()
    assert all(k["scheduled"] > 0 and k["correct"] == k["scheduled"] for k in messy["kinds"].values()), messy
    assert messy["defects"] == 0 and messy["wrong"] == 0 and messy["correct"] == messy["requests"]
    assert messy["kinds"]["invalid_json"]["answers"] == {"http_400": messy["kinds"]["invalid_json"]["scheduled"]}
    assert set(messy["kinds"]["oversized"]["answers"]) == {"http_413"}
    assert set(messy["kinds"]["empty_string"]["answers"]) == {"http_200"}
    # Correct rejections are no errors of the run; the messy share is a class of its own, latency and all.
    a = summary["accounting"]
    assert a["errors"] == 0 and a["balanced"]
    assert summary["latency_ms"]["response"]["messy:invalid_json"]["count"] > 0
    assert summary["gates"]["passed"] and [g["name"] for g in summary["gates"]["results"]] == ["messy_defects == 0"]
    # Clean traffic's percentiles with the messy share and without it, side by side.
    with_messy = summary["latency_ms"]["response"]["clean"]
    without = messy["without"]["latency_ms"]
    baseline = json.loads((out / "without-messy" / "summary.json").read_text())
    twins = messy["kinds"]["duplicate"]["scheduled"] // 2  # a duplicate's second copy is no arrival of its own
    arrivals = a["scheduled"] - twins
    assert baseline["accounting"]["scheduled"] == arrivals and "messy" not in baseline  # the same schedule, all clean
    assert with_messy["count"] == a["by_class"]["clean"]["ok"] == arrivals - (messy["requests"] - twins)
    assert without["count"] == arrivals and with_messy["p99"] > 0 and without["p99"] > 0
    report = (out / "report.md").read_text()
    assert "Messy traffic, by kind" in report and "Clean traffic with and without the messy share" in report
    assert "clean p99 with messy traffic" in result.stderr


@pytest.mark.slow
def test_a_fragile_endpoint_fails_the_messy_gate(tmp_path):
    (tmp_path / "kinds.jsonl").write_text('{"kind": "tenant_mismatch", "expect": "reject", "body": {"tenant": 7}}\n')
    with fragile() as url:
        path = scenario(
            tmp_path,
            'shape = { kind = "constant", value = 20 }\nduration = "5s"\ntimeout = "2s"\n[messy]\nshare = "25%"\n'
            'kinds = ["invalid_json", "oversized", "missing_input", "empty_string", "tenant_mismatch"]\n'
            'custom = "kinds.jsonl"',
            f'url = "{url}"\nprotocol = "http-json"\npath = "/"',
            TEXT,
            name="fragile",
        )
        out = tmp_path / "out"
        result = loadtest("run", str(path), "--out", str(out), "--no-report", timeout=300)
    assert result.returncode == 1, result.stdout + result.stderr
    summary = json.loads((out / "summary.json").read_text())
    kinds = summary["messy"]["kinds"]
    assert kinds["invalid_json"]["defect"] == kinds["invalid_json"]["scheduled"] > 0
    assert set(kinds["invalid_json"]["answers"]) == {"http_500"}
    assert kinds["oversized"]["defect"] == kinds["oversized"]["scheduled"] > 0
    assert set(kinds["oversized"]["answers"]) <= {"timeout", "connection"}
    assert kinds["missing_input"]["wrong"] > 0  # a 200 for a body without its input
    assert kinds["empty_string"]["correct"] == kinds["empty_string"]["scheduled"]
    assert kinds["tenant_mismatch"]["category"] == "custom" and kinds["tenant_mismatch"]["wrong"] > 0  # yours too
    assert not summary["gates"]["passed"] and "messy_defects == 0" in result.stderr
    assert "not as expected: invalid_json" in result.stderr


@pytest.mark.slow
def test_closed_load_sends_messy_traffic_too(server, tmp_path):
    path = scenario(
        tmp_path,
        'model = "closed"\nshape = { kind = "constant", value = 4 }\nduration = "3s"\n[messy]\nshare = "20%"',
        f'url = "{server.url}"\nprotocol = "oip-v2"\nmodel = "minilm"',
        TEXT,
        name="closed-messy",
    )
    result = loadtest("run", str(path), "--out", str(tmp_path / "out"), "--no-report")
    assert result.returncode == 0, result.stdout + result.stderr
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    messy, a = summary["messy"], summary["accounting"]
    assert messy["requests"] > 20 and messy["defects"] == messy["wrong"] == 0 and a["errors"] == 0
    assert a["balanced"] and messy["kinds"]["duplicate"]["scheduled"] % 2 == 0  # both copies of each duplicate
