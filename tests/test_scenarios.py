"""The shipped scenarios and profiles parse, and scenario files are checked key by key."""

from __future__ import annotations

from pathlib import Path

import pytest

from loadtest.arrivals import expected_count
from loadtest.errors import ConfigError
from loadtest.payloads import jsonl_pool
from loadtest.profile import load_profile
from loadtest.scenario import load_scenario

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("path", sorted((REPO / "scenarios").glob("*.toml")), ids=lambda p: p.stem)
def test_shipped_scenarios_parse(path):
    scenario = load_scenario(path)
    assert scenario.load.duration > 0 and scenario.description
    if scenario.load.model == "open":
        assert expected_count(scenario.load.shape, scenario.total_seconds) > 50


def test_the_five_shapes_the_issue_asks_for_are_shipped():
    kinds = {load_scenario(p).load.shape.kind for p in (REPO / "scenarios").glob("*.toml")}
    assert {"constant", "ramp", "spike", "diurnal", "bursty"} <= kinds


@pytest.mark.parametrize("path", sorted((REPO / "profiles").glob("*.toml")), ids=lambda p: p.stem)
def test_shipped_profiles_parse(path):
    profile = load_profile(str(path))
    assert profile.model in ("minilm", "fraud") and profile.server_args()


def test_bursty_scenario_draws_gamma_arrivals():
    scenario = load_scenario(REPO / "scenarios" / "bursty.toml")
    assert scenario.load.arrivals == "gamma" and scenario.load.shape.burstiness == 0.3


def test_overrides_replace_the_shape_and_duration():
    scenario = load_scenario(REPO / "scenarios" / "ramp.toml").with_overrides(rate=40, duration=12)
    assert scenario.load.shape.kind == "constant" and scenario.load.shape.at(5) == 40
    assert scenario.load.duration == 12
    closed = scenario.with_overrides(users=4)
    assert closed.load.model == "closed" and closed.load.shape.at(0) == 4


def test_an_unknown_profile_lists_the_known_ones():
    with pytest.raises(ConfigError, match="minilm-fp32"):
        load_profile("gpu-h100")


def test_jsonl_payloads_keep_classes_and_name_the_bad_line(tmp_path):
    good = tmp_path / "good.jsonl"
    good.write_text('{"body": {"input": "a"}, "class": "short"}\n{"input": "plain body"}\n\n')
    pool = jsonl_pool(good, seed=1)
    assert set(pool.classes) == {"short", "default"}
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"input": "ok"}\n{"input": \n')
    with pytest.raises(ConfigError, match="bad.jsonl:2"):
        jsonl_pool(bad, seed=1)
