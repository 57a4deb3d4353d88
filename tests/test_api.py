"""The Python API: `loadtest.run`, `capacity` and `compare` take the commands' options as keywords, check them as
the command line does, and return the typed content of the files the commands write."""

from __future__ import annotations

import json
import subprocess
import sys
from xml.etree import ElementTree as ET

import pandas as pd
import pytest

import loadtest
from loadtest import ConfigError
from tests.helpers import FEATURES, FRAUD, REPO, scenario

HAND_100 = REPO / "tests" / "fixtures" / "capacity" / "hand-100"


def test_import_loadtest_names_the_api_and_loads_neither_pandas_nor_locust():
    code = "import sys, loadtest; print(sorted(m for m in ('pandas', 'numpy', 'locust', 'psutil') if m in sys.modules))"
    found = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert found.stdout.strip() == "[]"
    assert {"run", "capacity", "compare", "read_results", "Results", "ConfigError"} <= set(loadtest.__all__)
    assert all(getattr(loadtest, name) is not None for name in loadtest.__all__)


@pytest.mark.slow
def test_run_returns_the_results_it_wrote_and_prints_nothing_when_quiet(server, tmp_path, capsys):
    path = scenario(tmp_path, 'shape = { kind = "constant", value = 1 }\nduration = "9s"', f"{FRAUD}", FEATURES)
    out, junit = tmp_path / "out", tmp_path / "junit.xml"
    results = loadtest.run(
        path,
        target=server.url,
        rate=40,  # a number or "40/s", as the command line takes it
        duration="1s",
        out=out,
        thresholds=["p99 < 5s", "p50 < 1us"],
        junit=junit,
        report=False,
        quiet=True,
    )
    assert capsys.readouterr() == ("", "")
    assert results.path == out
    assert results.summary.as_dict() == json.loads((out / "summary.json").read_text())
    assert results.summary.duration_s == 1.0 and results.summary.accounting.total.ok > 20
    pd.testing.assert_frame_equal(results.timeline, pd.read_csv(out / "timeline.csv"))
    assert not results.gates.passed and [r.passed for r in results.gates.results] == [True, False]
    assert json.loads((out / "gates.json").read_text()) == results.gates.as_dict()
    suite = ET.parse(junit).getroot().find("testsuite")
    assert float(suite.get("time")) == pytest.approx(results.summary.run.elapsed, abs=0.001)
    assert suite.find("testcase/failure").get("message").startswith("p50 ")


@pytest.mark.parametrize(
    "keywords, says",
    [
        ({"rate": "-5/s"}, "rate: a rate cannot be negative, got '-5/s'"),
        ({"rate": float("nan")}, "rate: a rate must be a finite number, got nan"),
        ({"duration": "soon"}, "duration: expected a duration like '30s'"),
        ({"users": 2.5}, "users: expected a whole number, got '2.5'"),
        ({"processes": 0}, "processes: must be at least 1, got 0"),
        ({"rate": 10, "users": 2}, "run: give rate= (open load) or users= (closed load), not both"),
        ({"thresholds": "p99 < 250"}, "thresholds: threshold 'p99 < 250': a latency needs a unit"),
        ({"max_regression": "p99=+10%"}, "max_regression: needs baseline=, the run to compare with"),
        ({"messy": "150%"}, "messy: must be between 0 and 100%"),
        ({"target": ""}, "target: expected a non-empty string"),
    ],
)
def test_run_refuses_a_bad_argument_in_one_line_before_anything_starts(tmp_path, keywords, says):
    with pytest.raises(ConfigError) as refused:
        loadtest.run(REPO / "scenarios" / "steady.toml", out=tmp_path / "never", quiet=True, **keywords)
    assert str(refused.value).startswith(says) and "\n" not in str(refused.value)
    assert refused.value.exit_code == loadtest.ExitCode.USAGE
    assert not (tmp_path / "never").exists()


@pytest.mark.parametrize(
    "keywords, says",
    [
        ({"slo": "p99 > 100ms"}, "slo: 'p99 > 100ms': expected a latency percentile under a budget"),
        ({"slo": "p99 < 100"}, "slo: threshold 'p99 < 100': a latency needs a unit"),
        ({"max_error": "100%"}, "max_error: must be at least 0 and below 100%"),
        ({"min_step": "-1s"}, "min_step: a duration cannot be negative"),
        ({"repeat": 0}, "repeat: must be at least 1, got 0"),
        ({"start": "fast"}, "start: expected a rate like 20, 20/s or 1200/m, got 'fast'"),
    ],
)
def test_capacity_refuses_a_bad_argument_in_one_line_before_the_search(tmp_path, keywords, says):
    with pytest.raises(ConfigError) as refused:
        loadtest.capacity(REPO / "scenarios" / "queries.toml", out=tmp_path / "never", quiet=True, **keywords)
    assert str(refused.value).startswith(says) and "\n" not in str(refused.value)
    assert not (tmp_path / "never").exists()


@pytest.mark.parametrize(
    "profiles, keywords, says",
    [
        (("minilm-fp32",), {}, "compare: needs two profiles or more"),
        (("minilm-fp32", "minilm-int8"), {"rounds": 0}, "rounds: must be at least 1, got 0"),
        (("minilm-fp32", "minilm-int8"), {"duration": "0s"}, "duration: must be above 0, got 0"),
        (("minilm-fp32", "minilm-int8"), {"agreement": -1}, "agreement: must be at least 0, got -1"),
        (("minilm-fp32", "minilm-int8"), {"capacity": "results/cap"}, "capacity: give one capacity directory per"),
        (("minilm-fp32", "no-such-profile"), {}, "no-such-profile: no such profile"),
    ],
)
def test_compare_refuses_a_bad_argument_in_one_line_before_any_round(tmp_path, profiles, keywords, says):
    with pytest.raises(ConfigError) as refused:
        loadtest.compare(REPO / "scenarios" / "queries.toml", *profiles, out=tmp_path / "never", quiet=True, **keywords)
    assert str(refused.value).startswith(says) and "\n" not in str(refused.value)
    assert not (tmp_path / "never").exists()


def test_a_capacity_directory_reads_as_its_headline_figures_and_a_table_of_steps():
    found = loadtest.read_capacity_result(HAND_100)
    data = json.loads((HAND_100 / "capacity.json").read_text())
    assert found.path == HAND_100 and found.capacity_rps == data["capacity_rps"] == 100.0
    assert found.slo == "p99 < 100ms"  # written by hand without the text: from its percentile and budget
    assert found.most_expensive_class == data["most_expensive_class"]
    assert found.class_capacity_rps == {cls: c["capacity_rps"] for cls, c in data["classes"].items()}
    assert list(found.steps["target_rps"]) == [s["target_rps"] for s in data["steps"]]


def test_a_comparison_reads_as_one_row_per_profile_and_figure_against_the_baseline(tmp_path):
    row = {"metric": "p99", "a": 26.5, "b": 13.5, "diff": -13.0, "relative": -0.49, "ci_low": -15.0, "ci_high": -11.0}
    data = {
        "schema": "loadtest.compare/1",
        "scenario": {"name": "queries", "source": "scenarios/queries.toml", "seed": 7},
        "baseline": "fp32",
        "profiles": [{"name": "fp32"}, {"name": "int8"}],
        "rounds": {"fp32": ["rounds/1-fp32"], "int8": ["rounds/1-int8"]},
        "comparisons": [{"a": "fp32", "b": "int8", "rows": [{**row, "n_a": 900, "n_b": 900, "verdict": "better"}]}],
    }
    (tmp_path / "compare.json").write_text(json.dumps(data))
    found = loadtest.read_comparison(tmp_path)
    assert (found.baseline, found.profiles) == ("fp32", ("fp32", "int8"))
    assert found.rounds["int8"] == (tmp_path / "rounds" / "1-int8",)
    first = found.differences.iloc[0]
    assert (first["profile"], first["metric"], first["baseline"], first["value"], first["verdict"]) == (
        "int8", "p99", 26.5, 13.5, "better"
    )  # fmt: skip
    (tmp_path / "compare.json").write_text(json.dumps({**data, "schema": "loadtest.capacity/1"}))
    with pytest.raises(ConfigError, match="expected 'loadtest.compare/1'"):
        loadtest.read_comparison(tmp_path)
