"""`loadtest probe` as a user runs it: every messy kind once against real endpoints, each answer judged."""

from __future__ import annotations

import json
from pathlib import Path
from xml.etree import ElementTree as ET

import httpx
import pytest

from loadtest.messy.kinds import RequestForm, kinds_for
from tests.helpers import FEATURES, FRAUD, loadtest, scenario
from tests.servers import fragile, recording


def probe(out: Path, *args: str):
    """Run the probe; its exit code, its console output, and probe.json by kind (None if none was written)."""
    result = loadtest("probe", "--out", str(out), *args, timeout=60)
    path = out / "probe.json"
    data = json.loads(path.read_text()) if path.exists() else None
    return result.returncode, result.stdout + result.stderr, data


def by_kind(data: dict) -> dict[str, dict]:
    return {k["kind"]: k for k in data["kinds"]}


def test_the_reference_server_answers_every_text_kind_soundly(server, tmp_path):
    code, output, data = probe(tmp_path / "out", "--target", server.url)
    assert code == 0, output
    assert [k["kind"] for k in data["kinds"]] == kinds_for(RequestForm())
    assert data["counts"] == {
        "kinds": len(kinds_for(RequestForm())),
        "correct": len(kinds_for(RequestForm())),
        "wrong": 0,
        "defect": 0,
    }
    kinds = by_kind(data)
    assert 400 <= kinds["invalid_json"]["status"] < 500 and kinds["invalid_json"]["verdict"] == "correct"
    assert kinds["empty_string"]["status"] == 200 and kinds["empty_string"]["outcome"] == ""
    assert kinds["oversized"]["status"] == 413
    assert [a["status"] for a in kinds["duplicate"]["answers"]] == [200, 200]
    assert data["schema"] == "loadtest.probe/1" and data["target"] == server.url and data["passed"]
    assert "0 wrong, 0 defects" in output and "200, 200" in output
    assert "| invalid_json | structure | reject | 4" in (tmp_path / "out" / "probe.md").read_text()


def test_the_reference_server_answers_every_features_kind_soundly(server, tmp_path):
    path = scenario(tmp_path, 'duration = "1s"', FRAUD, FEATURES, name="fraud")
    code, output, data = probe(tmp_path / "out", server.url, "--scenario", str(path))
    assert code == 0, output
    expected = kinds_for(RequestForm(model="fraud", input_name="features", source="features"))
    assert [k["kind"] for k in data["kinds"]] == expected and "nan_infinity" in expected
    assert data["counts"]["wrong"] == data["counts"]["defect"] == 0
    assert data["path"] == "/v2/models/fraud/infer" and data["scenario"] == "fraud"
    assert 400 <= by_kind(data)["nan_infinity"]["status"] < 500


def test_a_fragile_endpoint_fails_on_its_defects_even_with_allow_wrong(tmp_path):
    junit = tmp_path / "probe.xml"
    with fragile() as url:
        code, output, data = probe(tmp_path / "out", url, "--timeout", "2s", "--allow-wrong", "--junit", str(junit))
    assert code == 1, output
    kinds = by_kind(data)
    assert kinds["invalid_json"]["status"] == 500 and kinds["invalid_json"]["verdict"] == "defect"
    assert kinds["oversized"]["outcome"] == "timeout" and kinds["oversized"]["verdict"] == "defect"
    assert kinds["oversized"]["status"] is None and 1900 < kinds["oversized"]["latency_ms"] < 10_000
    assert kinds["missing_input"]["verdict"] == "wrong"  # a 200 for a body with no input
    defects = sorted(k for k, v in kinds.items() if v["verdict"] == "defect")
    assert defects == ["invalid_json", "invalid_utf8", "oversized", "truncated_body"]
    assert data["counts"]["defect"] == 4 and not data["passed"]
    assert "4 defects" in output and "probe failed" in output and "timeout" in output
    # One test case per kind; with --allow-wrong only the defects fail.
    suite = ET.parse(junit).getroot().find("testsuite")
    cases = {case.get("name"): case.find("failure") is not None for case in suite.iter("testcase")}
    assert list(cases) == kinds_for(RequestForm())
    assert sorted(name for name, failed in cases.items() if failed) == defects
    assert suite.get("failures") == "4"


def test_wrong_verdicts_fail_the_probe_unless_allowed(tmp_path):
    with recording() as (url, seen):
        strict, strict_output, data = probe(tmp_path / "strict", url)
        lenient, lenient_output, _ = probe(tmp_path / "lenient", url, "--allow-wrong")
    assert strict == 1, strict_output
    assert lenient == 0, lenient_output
    kinds = by_kind(data)
    assert kinds["invalid_json"]["status"] == 200 and kinds["invalid_json"]["verdict"] == "wrong"
    assert data["counts"]["defect"] == 0 and data["counts"]["wrong"] > 0
    assert "wrong verdicts (--allow-wrong)" in lenient_output
    # Sent sequentially, the exact bytes with the kind's content type; the duplicate twice.
    posts = [headers["content-type"] for method, _, headers, _ in seen if method == "POST"]
    assert len(posts) == 2 * (1 + len(kinds_for(RequestForm())) + 1)  # a clean request, each kind, the duplicate's twin
    assert "text/plain" in posts


def test_a_custom_kind_is_probed_and_reported_without_its_body(server, tmp_path):
    (tmp_path / "kinds.jsonl").write_text(
        '{"kind": "my_kind", "expect": "reject", "body": {"x": 1}}\n'
        '{"kind": "with_secret", "expect": "reject", "body": {"token": "sk-do-not-write-me"}}\n'
    )
    path = scenario(tmp_path, 'duration = "1s"\n[messy]\ncustom = "kinds.jsonl"')
    code, output, data = probe(tmp_path / "out", server.url, "--scenario", str(path))
    assert code == 0, output
    assert [k["kind"] for k in data["kinds"]] == [*kinds_for(RequestForm()), "my_kind", "with_secret"]
    mine = by_kind(data)["my_kind"]
    assert mine["category"] == "custom" and mine["expect"] == "reject"
    assert 400 <= mine["status"] < 500 and mine["verdict"] == "correct"
    assert "my_kind" in output
    for name in ("probe.json", "probe.md"):
        assert "sk-do-not-write-me" not in (tmp_path / "out" / name).read_text()
    only, _, data = probe(tmp_path / "only", server.url, "--scenario", str(path), "--kind", "my_kind")
    assert only == 0 and [k["kind"] for k in data["kinds"]] == ["my_kind"]


def test_without_a_target_the_probe_starts_and_stops_the_profiles_server(tmp_path):
    code, output, data = probe(tmp_path / "out", "--kind", "empty_string", "--kind", "invalid_json")
    assert code == 0, output
    assert "starting the reference server: profile minilm-fp32" in output
    assert data["profile"] == "minilm-fp32"
    assert [k["kind"] for k in data["kinds"]] == ["invalid_json", "empty_string"]  # in the order of messy.KINDS
    with pytest.raises(httpx.ConnectError):  # stopped at the end
        httpx.get(data["target"] + "/v2/health/ready", timeout=2)


def test_an_unknown_kind_stops_with_exit_2_naming_the_known_ones(tmp_path):
    code, output, data = probe(tmp_path / "out", "http://127.0.0.1:9", "--kind", "nope")
    assert code == 2 and data is None
    assert "unknown kind 'nope'" in output and "Traceback" not in output
    assert all(kind in output for kind in kinds_for(RequestForm()))
    code, output, _ = probe(tmp_path / "out", "http://127.0.0.1:9", "--kind", "nan_infinity")
    assert code == 2 and "does not apply to oip-v2 with text payloads" in output


def test_a_remote_target_needs_allow_remote(tmp_path):
    code, output, data = probe(tmp_path / "out", "http://192.0.2.10:8000")
    assert code == 2 and data is None
    assert "not a loopback address" in output and "--allow-remote" in output


def test_an_endpoint_that_fails_a_clean_request_is_not_judged(server, tmp_path):
    path = scenario(tmp_path, 'duration = "1s"', 'model = "no_such_model"')
    code, output, data = probe(tmp_path / "out", server.url, "--scenario", str(path))
    assert code == 2 and data is None  # not a pass on 404s that look like correct rejects
    assert "clean oip-v2 request" in output and "404" in output
