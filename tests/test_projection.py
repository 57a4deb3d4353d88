"""The cost projection: capacity searches, prices and a forecast in; what each option costs, by hand.

The fixtures (``tests/fixtures/capacity/``):
- ``hand-100``: 100 req/s per instance at the SLO, $0.10 per instance-hour; its ``long`` class alone 25 req/s.
- ``hand-300``: 300 req/s per instance, $0.19 per instance-hour; no classes.
- ``managed.toml``: a managed endpoint at $2 per 1M requests.

A month is 730 hours, 2,628,000 seconds; instances run at 70% of capacity, at least 2 of them.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from rich.console import Console

from loadtest.analysis.cost_inputs import load_forecast, project
from loadtest.errors import ConfigError
from loadtest.report.cost import cost_markdown, cost_section_html, print_projection, write_projection

FIXTURES = Path(__file__).parent / "fixtures" / "capacity"
HAND_100 = FIXTURES / "hand-100"
HAND_300 = FIXTURES / "hand-300"
MANAGED = str(FIXTURES / "managed.toml")
FORECAST = "mean=100/s peak=2x growth=1,10"
MILLIONS_PER_MONTH_AT_1_RPS = 2.628  # 2,628,000 predictions a month for each req/s of mean traffic


def option(data: dict, name: str) -> dict:
    return next(o for o in data["options"] if o["name"] == name)


# -- what each option costs ----------------------------------------------------------------------


def test_an_instance_option_by_hand():
    plans = option(project([HAND_100], FORECAST), "hand-100")["plans"]
    # x1: peak 200 req/s over 70 usable per instance -> ceil(2.86) = 3 instances, 3 x $0.10 x 730 h = $219 a month,
    # for 100 x 2.628M = 262.8M predictions: $0.8333 per 1M. The peak uses 200 of the 300 req/s provisioned.
    assert plans[0]["instances"] == 3
    assert plans[0]["monthly_cost"] == pytest.approx(219.0)
    assert plans[0]["per_million"] == pytest.approx(219.0 / 262.8)
    assert plans[0]["utilisation_at_peak"] == pytest.approx(200 / 300)
    # x10: peak 2,000 -> ceil(28.57) = 29 instances, $2,117 a month for 2,628M predictions: $0.8056 per 1M.
    assert (plans[1]["mean_rps"], plans[1]["peak_rps"], plans[1]["instances"]) == (1000, 2000, 29)
    assert plans[1]["monthly_cost"] == pytest.approx(2117.0)
    assert plans[1]["per_million"] == pytest.approx(2117.0 / 2628)
    assert plans[1]["utilisation_at_peak"] == pytest.approx(2000 / 2900)


def test_the_most_expensive_class_alone_by_hand():
    hand = option(project([HAND_100], FORECAST), "hand-100")
    assert hand["most_expensive_class"] == {"name": "long", "capacity_rps": 25.0}
    # 25 req/s per instance at 70% = 17.5 usable: peak 200 -> 12 instances ($876), peak 2,000 -> 115 ($8,395).
    assert [p["instances"] for p in hand["class_plans"]] == [12, 115]
    assert [p["monthly_cost"] for p in hand["class_plans"]] == [pytest.approx(876.0), pytest.approx(8395.0)]
    assert hand["class_plans"][0]["per_million"] == pytest.approx(876.0 / 262.8)
    assert option(project([HAND_300], FORECAST), "hand-300")["class_plans"] is None  # no classes measured


def test_the_redundancy_floor_and_the_target_utilisation_can_be_changed():
    floor = project([HAND_100], "mean=1/s", min_instances=3)
    assert option(floor, "hand-100")["plans"][0]["instances"] == 3  # 2 req/s peak needs 1, the floor says 3
    # At 100% utilisation a 200 req/s peak fits exactly on two 100 req/s instances.
    full = project([HAND_100], FORECAST, utilisation=1.0)
    assert option(full, "hand-100")["plans"][0]["instances"] == 2


def test_a_per_request_option_costs_the_same_per_prediction_at_every_scale():
    managed = option(project([], FORECAST, [MANAGED]), "managed")
    assert managed["kind"] == "per_request"
    assert managed["price"]["per_request"] == pytest.approx(2e-6)
    assert [p["per_million"] for p in managed["plans"]] == [pytest.approx(2.0), pytest.approx(2.0)]
    # 262.8M predictions at $2 per 1M; ten times as many at x10.
    assert [p["monthly_cost"] for p in managed["plans"]] == [pytest.approx(525.6), pytest.approx(5256.0)]
    assert [p["instances"] for p in managed["plans"]] == [None, None]


def test_the_price_keeps_its_source_and_date():
    price = option(project([HAND_100], FORECAST), "hand-100")["price"]
    assert price["per_hour"] == 0.10
    assert (price["source"], price["date"]) == ("hand-written test price", "2026-01-01")


# -- which is cheapest, and where that changes -----------------------------------------------------


def test_the_cheapest_option_changes_where_a_hand_computation_says():
    data = project([HAND_100, HAND_300], FORECAST, [MANAGED])
    # One hand-100 instance carries 100 x 0.7 / 2 = 35 req/s of mean traffic for $73 a month; one hand-300
    # instance 105 req/s for $138.70. managed costs $5.256 a month per req/s, so it is cheapest until it
    # reaches hand-100's floor of two instances, $146: at 146 / 5.256 = 27.8 req/s.
    # Above 105 req/s hand-100 needs a 4th instance ($292) while hand-300 is still on its floor ($277.40),
    # and from there on hand-300 stays cheaper: per 105 req/s it costs $138.70 against hand-100's $219.
    assert data["crossovers"] == [
        {
            "mean_rps": pytest.approx(146 / 5.256),
            "growth": pytest.approx(0.2778, rel=1e-3),
            "before": ["managed"],
            "to": ["hand-100"],
        },
        {"mean_rps": pytest.approx(105.0), "growth": pytest.approx(1.05), "before": ["hand-100"], "to": ["hand-300"]},
    ]
    # x1 (100 req/s): hand-100 on 3 instances, $219. x10: hand-300 needs ceil(2000 / 210) = 10 instances, $1,387.
    assert data["cheapest_by_rate"] == [
        {"from_rps": 1.0, "to_rps": pytest.approx(146 / 5.256), "options": ["managed"]},
        {"from_rps": pytest.approx(146 / 5.256), "to_rps": pytest.approx(105.0), "options": ["hand-100"]},
        {"from_rps": pytest.approx(105.0), "to_rps": 2000.0, "options": ["hand-300"]},
    ]
    assert [c["options"] for c in data["cheapest"]] == [["hand-100"], ["hand-300"]]
    assert [c["monthly_cost"] for c in data["cheapest"]] == [pytest.approx(219.0), pytest.approx(1387.0)]
    assert data["cheapest"][1]["per_million"] == pytest.approx(1387.0 / 2628)


def test_crossovers_are_looked_for_from_1_req_s_to_twice_the_largest_growth():
    assert project([HAND_100], FORECAST)["range_rps"] == [1.0, 2000.0]
    assert project([HAND_100], "mean=0.5/s")["range_rps"] == [0.25, 1.0]


def test_one_option_never_changes():
    assert project([HAND_100], FORECAST)["crossovers"] == []


# -- the forecast --------------------------------------------------------------------------------


def test_a_forecast_file_says_the_same_as_a_forecast_string(tmp_path):
    path = tmp_path / "forecast.toml"
    path.write_text("[forecast]\nmean_rps = 100\npeak_factor = 2\ngrowth = [1, 10]\n")
    assert load_forecast(str(path)) == load_forecast(FORECAST)
    from_file = project([HAND_100], str(path))
    assert from_file["options"] == project([HAND_100], FORECAST)["options"]
    assert from_file["forecast"]["source"] == str(path)


@pytest.mark.parametrize(
    "text, says",
    [
        ("mean=fast/s", "--forecast: mean='fast' is not a number"),
        ("mean=100/s rate=3", "--forecast: forecast part 'rate=3'"),
        ("peak=2x", "--forecast: mean=RATE/s is required"),
        ("mean=100/s peak=0.5x", "--forecast: peak=0.5x is below the mean"),
        ("mean=100/s growth=1,-1", "--forecast: the mean rate and every growth multiple must be above 0"),
    ],
)
def test_a_bad_forecast_string_names_the_option_and_the_part(text, says):
    with pytest.raises(ConfigError, match=re.escape(says)):
        project([HAND_100], text)


@pytest.mark.parametrize(
    "content, says",
    [
        ("[forecast]\npeak_factor = 2\n", "forecast.mean_rps: is required"),
        ("[forecast]\nmean_rps = 0\n", "forecast.mean_rps: must be a finite number above 0"),
        ("[forecast]\nmean_rps = 'lots'\n", "forecast.mean_rps: expected an integer or a number"),
        ("[forecast]\nmean_rps = 100\npeak_factor = 0.5\n", "forecast.peak_factor: must be at least 1"),
        ("[forecast]\nmean_rps = 100\ngrowth = [1, 0]\n", "forecast.growth: must be a list of traffic multiples"),
        ("[forecast]\nmean_rps = 100\ngrowth = 10\n", "forecast.growth: expected a list"),
        ("[forecast]\nmean_rps = 100\nmean = 3\n", "forecast.mean: unknown key"),
        ("[forecast]\nmean_rps = 100\n[traffic]\n", "traffic: unknown key"),
        ("[forecast\n", "not valid TOML"),
    ],
)
def test_a_bad_forecast_file_names_the_file_and_the_key(tmp_path, content, says):
    path = tmp_path / "forecast.toml"
    path.write_text(content)
    with pytest.raises(ConfigError, match=re.escape(f"{path}: {says}")):
        project([HAND_100], str(path))


def test_a_missing_forecast_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match=re.escape(f"{tmp_path / 'nope.toml'}: file not found")):
        project([HAND_100], str(tmp_path / "nope.toml"))


# -- capacity searches ---------------------------------------------------------------------------


def capacity_with(tmp_path: Path, change) -> Path:
    """A copy of hand-100's capacity.json, changed: its directory."""
    data = json.loads((HAND_100 / "capacity.json").read_text())
    change(data)
    directory = tmp_path / "changed"
    directory.mkdir()
    (directory / "capacity.json").write_text(json.dumps(data))
    return directory


def set_in(path: str, value):
    """A change that sets one key, ``a.b.c``, of a capacity.json; None as value removes it."""

    def change(data: dict) -> None:
        *parents, last = path.split(".")
        for key in parents:
            data = data[key]
        if value is None:
            del data[last]
        else:
            data[last] = value

    return change


@pytest.mark.parametrize(
    "key, value, says",
    [
        ("profile.price", None, "profile.price: missing: profile 'hand-100' had no [price] when measured"),
        ("profile.price.per_hour", "cheap", "profile.price.per_hour: expected an integer or a number, got 'cheap'"),
        ("profile.price.per_hour", -1, "profile.price.per_hour: must be a finite number above 0"),
        ("profile.price.per_request", 1e-6, "profile.price: needs exactly one of per_hour"),
        ("profile.price.source", None, "profile.price.source: is required"),
        ("profile.price", "$0.10", "profile.price: must be a table"),
        ("schema", "loadtest.summary/1", "schema: expected 'loadtest.capacity/1'"),
        ("schema", None, "schema: is required"),
        ("profile.name", None, "profile.name: is required"),
        ("capacity_rps", -3, "capacity_rps: must be a finite number above 0, got -3"),
        ("capacity_rps", "fast", "capacity_rps: expected an integer or a number"),
        ("most_expensive_class", "short", "classes.short: missing, though most_expensive_class names it"),
        ("classes.long.capacity_rps", 0, "classes.long.capacity_rps: must be a finite number above 0"),
    ],
)
def test_a_bad_capacity_json_names_the_file_and_the_key(tmp_path, key, value, says):
    directory = capacity_with(tmp_path, set_in(key, value))
    with pytest.raises(ConfigError, match=re.escape(f"{directory / 'capacity.json'}: {says}")):
        project([directory], FORECAST)


def test_a_capacity_search_that_found_no_capacity_cannot_price_instances(tmp_path):
    directory = capacity_with(tmp_path, lambda data: data.update(capacity_rps=None))
    with pytest.raises(ConfigError, match=re.escape(f"{directory / 'capacity.json'}: capacity_rps: null: even")):
        project([directory], FORECAST)


def test_a_class_that_failed_at_every_rate_has_no_class_plan(tmp_path):
    directory = capacity_with(tmp_path, set_in("classes.long.capacity_rps", None))
    assert project([directory], FORECAST)["options"][0]["class_plans"] is None


def test_a_capacity_json_path_works_as_well_as_its_directory():
    assert project([HAND_100 / "capacity.json"], FORECAST)["options"] == project([HAND_100], FORECAST)["options"]


def test_missing_and_unreadable_capacity_files_are_named(tmp_path):
    with pytest.raises(ConfigError, match=re.escape(f"{tmp_path / 'nope'}: not found")):
        project([tmp_path / "nope"], FORECAST)
    with pytest.raises(ConfigError, match=re.escape(f"{tmp_path}: not a capacity directory: it has no capacity.json")):
        project([tmp_path], FORECAST)
    (tmp_path / "capacity.json").write_text("{not json")
    with pytest.raises(ConfigError, match=re.escape(f"{tmp_path / 'capacity.json'}: not valid JSON")):
        project([tmp_path], FORECAST)


def test_the_same_profile_from_two_scenarios_is_told_apart_by_the_scenario(tmp_path):
    directory = capacity_with(tmp_path, set_in("scenario.name", "bursty"))
    data = project([HAND_100, directory], FORECAST)
    assert [o["name"] for o in data["options"]] == ["hand-100 @ steady", "hand-100 @ bursty"]
    with pytest.raises(ConfigError, match="measures the same profile and scenario as"):
        project([HAND_100, HAND_100 / "capacity.json"], FORECAST)


# -- --profile (a measured deployment's new price) and --managed (an endpoint priced per request) ---------


def profile_file(tmp_path: Path, name: str, price: str) -> str:
    path = tmp_path / f"{name}.toml"
    path.write_text(f'name = "{name}"\n{price}')
    return str(path)


def test_a_profile_named_like_a_measured_one_supplies_its_price(tmp_path):
    unpriced = capacity_with(tmp_path, set_in("profile.price", None))
    repriced = profile_file(
        tmp_path, "hand-100", '[price]\nper_hour = 0.2\nsource = "a newer quote"\ndate = "2026-02-01"\n'
    )
    hand = option(project([unpriced], FORECAST, repriced=[repriced]), "hand-100")
    assert hand["plans"][0]["monthly_cost"] == pytest.approx(3 * 0.2 * 730)  # the measured 3 instances, new price
    assert (hand["price"]["source"], hand["price"]["from"]) == ("a newer quote", repriced)


def test_a_profile_with_an_instance_price_needs_a_measured_capacity(tmp_path):
    path = profile_file(tmp_path, "big-box", '[price]\nper_hour = 1.0\nsource = "a quote"\ndate = "2026-01-01"\n')
    with pytest.raises(ConfigError, match=re.escape(f"{path}: price.per_hour: an instance price needs the measured")):
        project([HAND_100], FORECAST, [path])


def test_a_profile_without_a_price_cannot_be_projected(tmp_path):
    path = profile_file(tmp_path, "unpriced", "")
    with pytest.raises(ConfigError, match=re.escape(f"{path}: price: missing")):
        project([HAND_100], FORECAST, [path])


def test_a_profile_given_twice_is_refused():
    with pytest.raises(ConfigError, match=re.escape("--managed: 'managed' given twice")):
        project([HAND_100], FORECAST, [MANAGED, MANAGED])


def test_a_new_price_for_a_deployment_nothing_measured_points_to_managed():
    with pytest.raises(ConfigError, match=re.escape("--profile: no capacity result measures 'managed'")) as caught:
        project([HAND_100], FORECAST, repriced=[MANAGED])
    assert "is --managed" in str(caught.value)


def test_a_measured_deployment_is_not_a_managed_endpoint(tmp_path):
    price = '[price]\nper_1m_requests = 2.0\nsource = "a quote"\ndate = "2026-01-01"\n'
    per_request = profile_file(tmp_path, "hand-100", price)
    with pytest.raises(ConfigError, match=re.escape("--managed: 'hand-100' has capacity results")):
        project([HAND_100], FORECAST, [per_request])


def test_a_bad_profile_price_names_the_profile_file_and_key(tmp_path):
    path = profile_file(tmp_path, "odd", '[price]\nper_1m_requests = 2.0\nsource = "a quote"\ndate = "soon"\n')
    with pytest.raises(ConfigError, match=re.escape(f"{path}: price.date: expected YYYY-MM-DD")):
        project([], FORECAST, [path])


@pytest.mark.parametrize(
    "options, says",
    [
        ({"utilisation": 0.0}, "--utilisation: must be above 0 and at most 1"),
        ({"utilisation": 1.5}, "--utilisation: must be above 0 and at most 1"),
        ({"min_instances": 0}, "--min-instances: must be at least 1"),
    ],
)
def test_bad_provisioning_options_are_named(options, says):
    with pytest.raises(ConfigError, match=re.escape(says)):
        project([HAND_100], FORECAST, **options)


def test_nothing_to_price_is_an_error():
    with pytest.raises(ConfigError, match="nothing to price"):
        project([], FORECAST)


# -- what is written and printed -----------------------------------------------------------------


def test_the_projection_is_written_as_json_markdown_and_a_self_contained_page(tmp_path):
    data = project([HAND_100, HAND_300], FORECAST, [MANAGED])
    paths = write_projection(data, tmp_path / "cost")
    assert [p.name for p in paths] == ["cost.json", "cost.md", "cost.html"]
    assert json.loads(paths[0].read_text()) == json.loads(json.dumps(data))
    assert json.loads(paths[0].read_text())["schema"] == "loadtest.cost/1"
    markdown = paths[1].read_text()
    assert "| ×1 | hand-100 | 100 | 200 | 3 | 67% | $219.00 | $0.833 |" in markdown
    assert "| 27.8 | ×0.278 | managed | hand-100 |" in markdown
    page = paths[2].read_text()
    assert re.search(r'<figure data-plot="cost"><svg[^>]*>.*</svg>\s*</figure>', page, re.S)
    assert "<script src" not in page and "<link" not in page  # nothing fetched: works offline
    assert "$0.10 per instance-hour" in page and "$2.00 per 1M requests" in page


def test_a_combined_report_can_embed_the_section_and_the_markdown():
    data = project([HAND_100], FORECAST)
    section = cost_section_html(data)
    assert section.startswith("<h2>Cost projection</h2>") and 'data-plot="cost"' in section
    assert "<html" not in section
    assert cost_markdown(data).startswith("## Cost projection\n")


def test_the_chart_draws_every_option_its_worst_class_growth_points_crossovers_and_the_cheapest():
    data = project([HAND_100, HAND_300], FORECAST, [MANAGED])
    svg = cost_section_html(data).split('<figure data-plot="cost">')[1].split("</figure>")[0]
    assert svg.startswith("<svg") and svg.count("<svg") == 1
    ids = set(re.findall(r'<g id="(cost-[a-z-]+-\d+)"', svg))
    assert {"cost-option-0", "cost-option-1", "cost-option-2"} <= ids  # hand-100, hand-300, managed
    assert {"cost-growth-0", "cost-growth-1", "cost-growth-2"} <= ids
    assert {"cost-class-0", "cost-class-growth-0"} <= ids and "cost-class-1" not in ids  # only hand-100 has classes
    assert {i for i in ids if i.startswith("cost-crossover-")} == {"cost-crossover-0", "cost-crossover-1"}
    assert {i for i in ids if i.startswith("cost-cheapest-")} == {
        "cost-cheapest-0",
        "cost-cheapest-1",
        "cost-cheapest-2",
    }


def test_the_terminal_table_shows_every_option_at_every_growth_and_where_the_cheapest_changes():
    console = Console(record=True, width=160)
    print_projection(project([HAND_100, HAND_300], FORECAST, [MANAGED]), console)
    text = console.export_text()
    assert re.search(r"×1\s+│ hand-100 .* 3 │ .* \$219\.00 │ +\$0\.833 │ +12 \(long\) │ +\$3\.33", text)
    assert re.search(r"×10\s+│ hand-300 .* 10 │", text)
    assert "from 27.8 req/s mean (×0.278): hand-100 (before: managed)" in text
    assert "from 105 req/s mean (×1.05): hand-300 (before: hand-100)" in text


def test_a_generative_workload_is_priced_per_1m_output_tokens_and_a_per_token_api_at_its_tokens(tmp_path):
    capacity = json.loads((HAND_100 / "capacity.json").read_text())
    capacity["tokens_per_request"] = {"output": 200.0, "input": 50.0}
    (tmp_path / "llm").mkdir()
    (tmp_path / "llm" / "capacity.json").write_text(json.dumps(capacity))
    api = tmp_path / "api.toml"
    api.write_text(
        'name = "api"\n[price]\nper_1m_output_tokens = 0.60\nper_1m_input_tokens = 0.15\n'
        "output_tokens_per_request = 1000\ninput_tokens_per_request = 1000\n"
        'source = "hand-written"\ndate = "2026-01-01"\n'
    )
    data = project([tmp_path / "llm"], FORECAST, [str(api)])
    assert data["tokens_per_request"] == {"output": 200.0, "input": 50.0}
    hand, managed = option(data, "hand-100"), option(data, "api")
    # The instance: $0.8333 per 1M requests of 200 output tokens each is $0.004167 per 1M output tokens.
    assert hand["plans"][0]["per_million_output_tokens"] == pytest.approx(219.0 / 262.8 / 200)
    # The API at the workload's tokens, not its profile's 1,000 and 1,000: 200 x $0.60 + 50 x $0.15 per 1M requests.
    assert managed["price"]["per_request"] * 1e6 == pytest.approx(200 * 0.60 + 50 * 0.15)
    assert managed["plans"][0]["per_million_output_tokens"] == pytest.approx((200 * 0.60 + 50 * 0.15) / 200)
    assert "$0.60 per 1M output tokens + $0.15 per 1M input tokens" in cost_markdown(data)
    assert "200.0 output tokens and 50.0 input (measured)" in cost_markdown(data)


def test_a_per_token_api_price_needs_its_tokens_a_request(tmp_path):
    api = tmp_path / "api.toml"
    api.write_text('name = "api"\n[price]\nper_1m_output_tokens = 0.60\nsource = "x"\ndate = "2026-01-01"\n')
    with pytest.raises(ConfigError, match="price.output_tokens_per_request: is required"):
        project([], FORECAST, [str(api)])
    api.write_text(api.read_text().replace("per_1m_output", "per_1m_input"))
    with pytest.raises(ConfigError, match="per_1m_input_tokens: goes with per_1m_output_tokens"):
        project([], FORECAST, [str(api)])


def test_a_capacity_searched_without_its_classes_is_priced_without_a_class_plan(tmp_path):
    capacity = json.loads((HAND_100 / "capacity.json").read_text())
    capacity["classes"] = {}  # `loadtest capacity --no-class`: the class is named, its capacity not searched
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "capacity.json").write_text(json.dumps(capacity))
    hand = option(project([tmp_path / "c"], FORECAST), "hand-100")
    assert hand["most_expensive_class"] == {"name": "long", "capacity_rps": None} and hand["class_plans"] is None
