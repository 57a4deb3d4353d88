"""The shipped scenarios and profiles parse, and scenario files are checked key by key."""

from __future__ import annotations

from pathlib import Path

import pytest

from loadtest.config.profile import load_profile
from loadtest.config.scenario import load_scenario
from loadtest.errors import ConfigError
from loadtest.traffic.arrivals import expected_count
from loadtest.traffic.payloads import jsonl_pool

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
    from reference_server.manifest import MODELS

    profile = load_profile(str(path))
    assert profile.model in MODELS and profile.server_args()


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


def test_shipped_minilm_profiles_carry_hardware_and_a_dated_sourced_price():
    for name in ("minilm-fp32", "minilm-int8"):
        profile = load_profile(name)
        assert profile.hardware.vcpus == 2 and profile.price.per_hour > 0
        assert profile.price.source and profile.price.date
    examples = [load_profile(str(p)) for p in (REPO / "profiles").glob("example-*.toml")]
    assert examples and all("EXAMPLE" in p.description and p.price.date for p in examples)
    assert any(p.hardware and p.hardware.gpu for p in examples)


@pytest.mark.parametrize(
    "price, key, says",
    [
        ('per_hour = 0.1\nsource = "x"', "price.date", "is required"),
        ('per_hour = 0.1\nsource = "x"\ndate = "June 2026"', "price.date", "expected YYYY-MM-DD"),
        ('source = "x"\ndate = "2026-01-01"', "price", "needs exactly one of per_hour"),
        ('per_hour = 0.1\nper_request = 1e-6\nsource = "x"\ndate = "2026-01-01"', "price", "exactly one"),
        ('per_hour = -1\nsource = "x"\ndate = "2026-01-01"', "price.per_hour", "must be at least 0"),
        ('per_hour = 0.1\nsource = "x"\ndate = "2026-01-01"\ncurrency = "EUR"', "price.currency", "unknown key"),
    ],
)
def test_a_bad_price_names_the_file_and_key(tmp_path, price, key, says):
    path = tmp_path / "p.toml"
    path.write_text(f'name = "p"\n[model]\nname = "minilm"\n[price]\n{price}\n')
    with pytest.raises(ConfigError) as caught:
        load_profile(str(path))
    assert str(caught.value).startswith(f"{path}: {key}: ") and says in str(caught.value)


def test_a_managed_endpoint_is_priced_per_request(tmp_path):
    path = tmp_path / "managed.toml"
    path.write_text(
        'name = "managed"\n[model]\nname = "minilm"\n[price]\nper_1m_requests = 0.02\n'
        'source = "vendor page"\ndate = "2026-11-01"\n'
    )
    assert load_profile(str(path)).price.per_request == pytest.approx(2e-8)


def test_a_per_token_price_becomes_a_per_request_price_for_the_stated_request_size(tmp_path):
    path = tmp_path / "tokens.toml"
    path.write_text(
        'name = "tokens"\n[model]\nname = "minilm"\n[price]\nper_1m_tokens = 0.02\ntokens_per_request = 15\n'
        'source = "vendor page"\ndate = "2026-11-01"\n'
    )
    assert load_profile(str(path)).price.per_request == pytest.approx(0.02 * 15 / 1e6)
    path.write_text(path.read_text().replace("tokens_per_request = 15\n", ""))
    with pytest.raises(ConfigError, match="price.tokens_per_request: is required"):
        load_profile(str(path))


def test_a_warm_up_override_moves_the_measured_time_and_the_shape_with_it():
    steady = load_scenario(REPO / "scenarios" / "steady.toml")  # 30 s measured after 3 s of warm-up
    none = steady.with_overrides(warmup=0)
    assert (none.load.warmup, none.load.duration, none.load.shape.duration) == (0, 30, 30)
    longer = steady.with_overrides(warmup=10, duration=5)
    assert (longer.load.warmup, longer.load.duration, longer.load.shape.duration) == (10, 5, 15)
    assert steady.with_overrides(warmup=10, replay=True).load.warmup == 0  # a capture's timing has no warm-up
