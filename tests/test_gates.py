"""Gates: thresholds and baseline regressions, as pure logic and through `loadtest run` / `loadtest gate`."""

from __future__ import annotations

import json
import shutil
from datetime import datetime
from pathlib import Path
from xml.etree import ElementTree as ET

import pytest
from rich.console import Console

from loadtest.config.gate_options import GateOptions
from loadtest.errors import ExitCode, outcome_code
from loadtest.gates.thresholds import (
    GateError,
    check_regressions,
    check_thresholds,
    figure,
    junit_xml,
    parse_regression,
    parse_threshold,
)
from loadtest.gates.verdict import apply, prepare
from loadtest.results.summary import Summary
from reference_server.launch import running_server
from tests.helpers import FEATURES, FRAUD, loadtest, scenario


def summary(p99: float = 20.0, ok: int = 990, errors: int = 5, timeouts: int = 5, dropped: int = 0) -> Summary:
    by_class = {"ok": ok // 2, "errors": errors, "timeouts": timeouts, "dropped": dropped, "scheduled": 0}
    return Summary.from_dict(
        {
            "schema": "loadtest.summary/1",
            "load": {"duration_s": 10.0},
            "accounting": {
                "scheduled": ok + errors + timeouts + dropped,
                "ok": ok,
                "errors": errors,
                "timeouts": timeouts,
                "dropped": dropped,
                "by_class": {"long": {**by_class, "scheduled": ok // 2 + errors + timeouts + dropped}},
            },
            "latency_ms": {
                "response": {
                    "all": {"count": ok, "p50": 5.0, "p99": p99, "max": 90.0},
                    "long": {"count": ok // 2, "p95": 300.0, "p99": 450.0},
                },
                "service": {"all": {"count": ok, "p99": 8.0}},
            },
        }
    )


@pytest.mark.parametrize(
    "text, stat, op, limit, cls, metric",
    [
        ("p99 < 250ms", "p99", "<", 250.0, "all", "response"),
        ("p95{class=long} < 0.4s", "p95", "<", 400.0, "long", "response"),
        ("p99{metric=service, class=all}<=50ms", "p99", "<=", 50.0, "all", "service"),
        ("p99.9 < 900us", "p99.9", "<", 0.9, "all", "response"),
        ("error_rate < 1%", "error_rate", "<", 0.01, "all", "response"),
        ("throughput >= 50/s", "throughput", ">=", 50.0, "all", "response"),
        ("dropped == 0", "dropped", "==", 0.0, "all", "response"),
    ],
)
def test_thresholds_parse_like_k6(text, stat, op, limit, cls, metric):
    t = parse_threshold(text)
    assert (t.stat, t.op, t.limit, t.cls, t.metric) == (stat, op, pytest.approx(limit), cls, metric)


@pytest.mark.parametrize(
    "text, says",
    [
        ("p99 250ms", "expected something like"),
        ("p99 < 250", "a latency needs a unit"),
        ("p42x < 1ms", "unknown figure 'p42x'"),
        ("error_rate < 0.01", "a rate is a percentage"),
        ("p99{colour=red} < 1ms", "selector 'colour=red'"),
        ("p99{metric=gpu} < 1ms", "unknown metric 'gpu'"),
        ("dropped == 0ms", "a count takes no unit"),
        ("throughput{metric=service} > 1/s", "latencies only"),
    ],
)
def test_malformed_thresholds_say_what_is_wrong(text, says):
    with pytest.raises(GateError, match=says.replace("(", r"\(")) as caught:
        parse_threshold(text)
    assert text in str(caught.value)


def test_thresholds_are_checked_against_the_summary():
    s = summary(p99=20.0)
    texts = ["p99 < 250ms", "p99 < 10ms", "p95{class=long} < 400ms", "error_rate < 1%", "error_rate < 2%"]
    texts += ["throughput >= 50/s", "dropped == 0", "p99{class=short} < 1s", "p99{metric=service} < 5ms"]
    results = check_thresholds(s, [parse_threshold(t) for t in texts])
    assert [r.passed for r in results] == [True, False, True, False, True, True, True, False, False]
    assert results[3].actual == pytest.approx(0.01) and "1.000%" in results[3].message
    assert results[5].actual == pytest.approx(99.0)
    assert "no p99 for class 'short'" in results[7].message  # a class the run never had fails, loudly


def test_regressions_compare_with_the_baseline():
    base, slower = summary(p99=20.0), summary(p99=23.0, ok=900)
    limits = [parse_regression("p99=+10%"), parse_regression("p99=+20%"), parse_regression("throughput=-5%")]
    results = check_regressions(slower, base, limits)
    assert [r.passed for r in results] == [False, True, False]
    assert "+15.0%" in results[0].message
    assert figure(slower, "throughput") == pytest.approx(90.0)
    with pytest.raises(GateError, match="latencies may grow"):
        parse_regression("p99=-10%")
    with pytest.raises(GateError, match="expected something like"):
        parse_regression("p99 10%")


def test_junit_has_one_case_per_gate_and_failures_marked():
    results = check_thresholds(summary(), [parse_threshold("p99 < 250ms"), parse_threshold("p99 < 1ms")])
    root = ET.fromstring(junit_xml(results, "steady"))
    cases = root.findall("./testsuite/testcase")
    assert [c.get("name") for c in cases] == ["p99 < 250ms", "p99 < 1ms"]
    assert cases[0].find("failure") is None and cases[1].find("failure") is not None
    assert root.find("testsuite").get("failures") == "1"


def test_a_failed_gates_junit_message_gives_the_measured_figure_then_the_limit():
    gates = ["p99 < 250ms", "p95{class=long} < 0.2s", "error_rate < 0.5%", "throughput >= 500/s", "p99 < 1us"]
    results = check_thresholds(summary(p99=615.4), [parse_threshold(g) for g in gates])
    results += check_regressions(summary(p99=615.4), summary(p99=500.0), [parse_regression("p99=+10%")])
    failures = ET.fromstring(junit_xml(results, "steady")).findall("./testsuite/testcase/failure")
    assert [f.get("message") for f in failures] == [
        "p99 615.4 ms, limit < 250 ms",
        "p95{class=long} 300 ms, limit < 200 ms",
        "error_rate 1%, limit < 0.5%",
        "throughput 99/s, limit >= 500/s",
        "p99 615.4 ms, limit < 0.001 ms",
        "500.000ms -> 615.400ms (+23.1%, allowed +10%)",  # a regression: before, now, the change, the limit
    ]


def test_junit_says_when_the_run_started_and_how_long_it_took(tmp_path):
    run = {"started_epoch": 1_764_770_531.25, "elapsed": 33.456}
    timed = Summary.from_dict({**summary().as_dict(), "run": run})
    apply(prepare(GateOptions(thresholds=("p99 < 250ms",), junit=tmp_path / "junit.xml")), tmp_path, timed,
          Console(quiet=True))  # fmt: skip
    root = ET.parse(tmp_path / "junit.xml").getroot()
    suite = root.find("testsuite")
    assert root.get("time") == suite.get("time") == "33.456"
    started = datetime.fromisoformat(suite.get("timestamp"))
    assert started.utcoffset() is not None and started.timestamp() == 1_764_770_531  # to the second, with its offset
    assert suite.find("testcase").get("time") == "0"  # every gate is judged at once on the same run


def untrusted_summary(tmp_path: Path, rule: str = "lateness") -> Summary:
    reason = {"rule": rule, "message": "the load generator sent late", "seconds": [3.0]}
    data = {**summary().as_dict(), "trust": {"trustworthy": False, "reasons": [reason], "rules": "..."}}
    return Summary.from_dict(data)


def test_an_untrusted_runs_latency_gates_are_neither_passed_nor_failed(tmp_path):
    gates = prepare(GateOptions(thresholds=("p99 < 250ms", "p99 < 10ms", "error_rate < 0.1%")))
    verdict = apply(gates, tmp_path, untrusted_summary(tmp_path), Console(quiet=True))
    assert [r.verdict for r in verdict.results] == ["untrusted", "untrusted", "fail"]
    assert verdict.results[1].passed is None and "not judged, the run is not trustworthy" in verdict.results[1].message
    assert not verdict.passed and verdict.untrusted  # the error-rate gate still counts
    only_latency = apply(prepare(GateOptions(thresholds=("p99 < 10ms",))), tmp_path, untrusted_summary(tmp_path),
                         Console(quiet=True))  # fmt: skip
    assert only_latency.passed and only_latency.untrusted  # not a failure unless --strict
    saved = json.loads((tmp_path / "gates.json").read_text())
    assert saved["results"][0]["status"] == "untrusted" and saved["results"][0]["passed"] is None


def test_a_gate_that_service_latency_breaks_too_fails_on_a_run_doubted_only_for_lateness(tmp_path):
    # Service latency is timed from the actual send: the generator's lateness is not in it.
    service_p99 = summary().percentiles("service").p99
    below_service = f"p99 < {service_p99 / 2:g}ms"
    late = apply(prepare(GateOptions(thresholds=(below_service,))), tmp_path, untrusted_summary(tmp_path),
                 Console(quiet=True))  # fmt: skip
    assert late.results[0].verdict == "fail" and not late.passed and not late.untrusted
    assert "breaks it too: the server's own" in late.results[0].message
    # A starved generator reads its responses late: even service latency holds its delay.
    starved = apply(prepare(GateOptions(thresholds=(below_service,))), tmp_path,
                    untrusted_summary(tmp_path, "starved_core"), Console(quiet=True))  # fmt: skip
    assert starved.results[0].verdict == "untrusted" and starved.passed


def test_junit_skips_untrusted_gates_and_strict_fails_them(tmp_path):
    results = list(apply(prepare(GateOptions(thresholds=("p99 < 10ms",))), tmp_path, untrusted_summary(tmp_path),
                         Console(quiet=True)).results)  # fmt: skip
    lenient = ET.fromstring(junit_xml(results, "steady")).find("./testsuite")
    assert lenient.get("failures") == "0" and lenient.get("skipped") == "1"
    assert lenient.find("testcase/skipped") is not None
    strict = ET.fromstring(junit_xml(results, "steady", strict=True)).find("./testsuite")
    assert strict.get("failures") == "1" and strict.find("testcase/failure").get("type") == "Untrusted"


def test_the_exit_code_of_an_untrusted_run_is_4_only_with_strict():
    assert outcome_code(False, False, untrusted=True) == ExitCode.UNTRUSTED == 4
    assert outcome_code(False, True, untrusted=True) == ExitCode.GATE_FAILED  # a judged gate failed: that first
    assert outcome_code(True, False, untrusted=True) == ExitCode.INTERRUPTED


# -- through the command line, on real runs ------------------------------------------------------------


def short_run(tmp_path: Path, url: str, out: Path, *extra: str, slo: str = ""):
    path = scenario(
        tmp_path,
        'shape = { kind = "constant", value = 50 }\nduration = "2s"\narrivals = "uniform"',
        f'url = "{url}"\n{FRAUD}',
        FEATURES + slo,
        name="gated",
    )
    return loadtest("run", str(path), "--out", str(out), "--no-report", *extra)


@pytest.mark.slow
def test_a_failing_threshold_exits_1_and_fails_its_junit_case(server, tmp_path):
    slo = '\n[slo]\nthresholds = ["p99 < 5s", "error_rate < 1%"]'
    junit = tmp_path / "junit.xml"
    result = short_run(
        tmp_path, server.url, tmp_path / "out", "--threshold", "p50 < 1us", "--junit", str(junit), slo=slo
    )
    assert result.returncode == 1, result.stdout + result.stderr
    cases = {c.get("name"): c for c in ET.parse(junit).getroot().iter("testcase")}
    assert set(cases) == {"p99 < 5s", "error_rate < 1%", "p50 < 1us"}
    assert cases["p50 < 1us"].find("failure") is not None
    assert cases["p99 < 5s"].find("failure") is None
    saved = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert saved["gates"]["passed"] is False and len(saved["gates"]["results"]) == 3
    assert "FAIL" in result.stderr

    # The same results, gated again later without a run: passing gates exit 0.
    again = loadtest("gate", str(tmp_path / "out"), "--threshold", "p99 < 10s")
    assert again.returncode == 0, again.stdout + again.stderr
    assert json.loads((tmp_path / "out" / "gates.json").read_text())["passed"] is True


@pytest.mark.slow
def test_a_passing_run_exits_0(server, tmp_path):
    result = short_run(tmp_path, server.url, tmp_path / "out", "--threshold", "p99 < 5s", "--threshold", "dropped == 0")
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads((tmp_path / "out" / "gates.json").read_text())["passed"] is True


@pytest.mark.slow
def test_a_baseline_regression_is_caught_on_a_deliberately_slowed_server(models_dir, tmp_path):
    base = tmp_path / "base"
    common = ["--models-dir", str(models_dir), "--model", "fraud"]
    with running_server(common) as fast:
        assert short_run(tmp_path, fast.url, base).returncode == 0
    with running_server([*common, "--inject-delay-ms", "25"]) as slow:
        result = short_run(
            tmp_path, slow.url, tmp_path / "slow", "--baseline", str(base), "--max-regression", "p99=+10%"
        )
    assert result.returncode == 1, result.stdout + result.stderr
    verdict = json.loads((tmp_path / "slow" / "gates.json").read_text())
    (gate,) = verdict["results"]
    assert not gate["passed"] and gate["name"].startswith("p99 against baseline")
    slow_p99 = json.loads((tmp_path / "slow" / "summary.json").read_text())["latency_ms"]["response"]["all"]["p99"]
    assert slow_p99 >= 25.0
    # The baseline against itself passes.
    assert loadtest("gate", str(base), "--baseline", str(base)).returncode == 0


@pytest.mark.parametrize(
    "args, says",
    [
        (["--threshold", "p99 < fast"], "--threshold: threshold 'p99 < fast'"),
        (["--max-regression", "p99=+10%"], "needs --baseline"),
        (["--baseline", "no/such/dir"], "no/such/dir: not a results directory"),
    ],
)
def test_malformed_gates_exit_2_with_one_message_before_any_run(tmp_path, args, says):
    result = short_run(tmp_path, "http://127.0.0.1:9", tmp_path / "out", *args)  # nothing listens: never reached
    assert result.returncode == 2, result.stdout + result.stderr
    assert says in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


def test_a_malformed_scenario_threshold_names_the_file_and_key(tmp_path):
    result = short_run(tmp_path, "http://127.0.0.1:9", tmp_path / "out", slo='\n[slo]\nthresholds = ["p99 <"]')
    assert result.returncode == 2
    assert "gated.toml: slo.thresholds[0]: threshold 'p99 <'" in result.stderr


def test_a_baseline_that_is_not_a_summary_exits_2(tmp_path):
    bogus = tmp_path / "bogus"
    bogus.mkdir()
    (bogus / "summary.json").write_text("{not json")
    result = loadtest("gate", str(bogus), "--threshold", "p99 < 1s")
    assert result.returncode == 2 and "unreadable" in result.stderr
    shutil.rmtree(bogus)
