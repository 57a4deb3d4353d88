"""The cost model on hand-computed cases."""

from __future__ import annotations

import pytest

from loadtest.analysis.cost import (
    HOURS_PER_MONTH,
    SECONDS_PER_MONTH,
    Crossover,
    Forecast,
    ForecastError,
    Option,
    Price,
    cheapest_segments,
    crossover_rps,
    crossovers,
    instances_needed,
    monthly_cost,
    parse_forecast,
    per_million,
    plan,
    step_rates,
)


def test_forecasts_parse():
    assert parse_forecast("mean=200/s peak=3x growth=1,10,100") == Forecast(200.0, 3.0, (1.0, 10.0, 100.0))
    assert parse_forecast("mean=5") == Forecast(5.0, 1.0, (1.0,))


@pytest.mark.parametrize(
    "text, says",
    [
        ("peak=3x", "mean=RATE/s is required"),
        ("mean=fast/s", "mean='fast' is not a number"),
        ("mean=10/s peak=0.5x", "below the mean"),
        ("mean=10/s growth=1,0", "must be above 0"),
        ("mean=10/s mean=20/s", "mean given twice"),
        ("mean=10/s rate=3", "forecast part 'rate=3'"),
        ("mean=inf/s", "not a finite number"),
    ],
)
def test_bad_forecasts_say_which_part(text, says):
    with pytest.raises(ForecastError, match=says.replace("(", r"\(")):
        parse_forecast(text)


def test_instances_cover_the_peak_at_the_target_utilisation_with_a_floor_of_two():
    # 100 req/s per instance at 70% = 70 usable: 600 req/s needs ceil(600 / 70) = 9.
    assert instances_needed(600, 100, 0.7) == 9
    assert instances_needed(140, 100, 0.7) == 2  # exactly two instances' worth: no rounding up
    assert instances_needed(1, 100, 0.7) == 2  # the redundancy floor
    assert instances_needed(1, 100, 0.7, minimum=1) == 1


def test_an_instance_plan_by_hand():
    # 200 req/s mean, 3x peak, 100 req/s per instance, $0.10/h, 70% target:
    # peak 600 -> 9 instances -> 9 * 0.10 * 730 = $657/month;
    # predictions 200 * 730 * 3600 = 525.6M -> $1.25 per 1M.
    (p,) = plan(Forecast(200, 3.0), Price(per_hour=0.10), capacity_rps=100)
    assert (p.peak_rps, p.instances) == (600, 9)
    assert p.monthly_cost == pytest.approx(657.0)
    assert p.per_million == pytest.approx(657.0 / 525.6)
    assert p.utilisation_at_peak == pytest.approx(600 / 900)


def test_cost_per_prediction_falls_then_flattens_as_traffic_grows():
    plans = plan(Forecast(1, 2.0, (1, 10, 100, 1000)), Price(per_hour=1.0), capacity_rps=100)
    assert [p.instances for p in plans] == [2, 2, 3, 29]  # peaks 2, 20, 200, 2000 at 70 usable each
    per_million = [p.per_million for p in plans]
    assert per_million[0] > per_million[1] > per_million[2] > per_million[3]
    assert per_million[0] == pytest.approx(2 * HOURS_PER_MONTH / (SECONDS_PER_MONTH / 1e6))
    assert per_million[0] / per_million[1] == pytest.approx(10)  # same two instances, ten times the traffic


def test_a_per_request_price_is_linear_and_crosses_the_instance_price():
    plans = plan(Forecast(10, 1.0, (1, 100)), Price(per_request=2e-6), capacity_rps=None)
    assert [p.per_million for p in plans] == [pytest.approx(2.0), pytest.approx(2.0)]
    assert plans[1].monthly_cost == pytest.approx(1000 * SECONDS_PER_MONTH * 2e-6)
    # Two instances at $0.5/h cost $730/month; $2 per 1M predictions reaches that at
    # 730 / (2e-6 * 2,628,000) = 138.9 req/s, which two instances (140 usable) still carry.
    assert crossover_rps(100, 0.5, 2e-6) == pytest.approx(730 / (2e-6 * SECONDS_PER_MONTH))
    # With a 3x peak, an instance carries 23.3 req/s of mean traffic, which costs $122.6/month per request,
    # less than the instance's $365: instances never win.
    assert crossover_rps(100, 0.5, 2e-6, peak_factor=3.0) is None
    # At $10 per 1M they win from 365 * 2 / (1e-5 * 2,628,000) = 27.8 req/s, on the two-instance floor.
    assert crossover_rps(100, 0.5, 1e-5, peak_factor=3.0) == pytest.approx(730 / (1e-5 * SECONDS_PER_MONTH))


def test_prices_are_either_per_hour_or_per_request():
    with pytest.raises(ValueError):
        Price()
    with pytest.raises(ValueError):
        Price(per_hour=1.0, per_request=1e-6)


# -- many options over a range of traffic ---------------------------------------------------------

SMALL = Option("small", Price(per_hour=0.10), capacity_rps=100)  # $73 a month
LARGE = Option("large", Price(per_hour=0.25), capacity_rps=300)  # $182.50 a month
MANAGED = Option("managed", Price(per_request=2e-6))  # $2 per 1M: $5.256 a month per req/s


def test_monthly_cost_and_cost_per_million_agree_with_a_plan():
    (p,) = plan(Forecast(200, 3.0), Price(per_hour=0.10), capacity_rps=100)
    assert monthly_cost(SMALL, 200, peak_factor=3.0) == pytest.approx(p.monthly_cost)
    assert per_million(SMALL, 200, peak_factor=3.0) == pytest.approx(p.per_million)
    assert per_million(MANAGED, 1) == per_million(MANAGED, 1000) == pytest.approx(2.0)


def test_instances_are_added_at_whole_multiples_of_the_traffic_one_instance_carries():
    # At a 2x peak one 100 req/s instance at 70% carries 35 req/s of mean traffic; the floor is 2 instances,
    # so the third is needed above 70 req/s, the fourth above 105, and so on.
    assert step_rates(100, 1, 200, peak_factor=2.0) == pytest.approx([70, 105, 140, 175])
    assert step_rates(100, 100, 200, peak_factor=2.0) == pytest.approx([105, 140, 175])
    assert step_rates(100, 1, 200, peak_factor=2.0, minimum=1) == pytest.approx([35, 70, 105, 140, 175])
    assert monthly_cost(SMALL, 70, peak_factor=2.0) == pytest.approx(2 * 73)
    assert monthly_cost(SMALL, 70.001, peak_factor=2.0) == pytest.approx(3 * 73)


def test_the_cheapest_option_changes_exactly_at_instance_steps_and_where_a_price_line_meets_them():
    # managed reaches small's floor of $146 at 146 / 5.256 = 27.8 req/s. Then (2x peak; small carries
    # 35 req/s per $73 instance, large 105 req/s per $182.50 one):
    #   up to 140 req/s small costs at most 4 x $73 = $292, under large's floor of $365;
    #   (140, 175]: small $365 = large $365, both cheapest;   (175, 210]: small $438 > $365: large;
    #   (210, 245]: small $511 < large $547.50;               (245, 315]: large $547.50 < small $584..$657;
    #   (315, 350]: small $730 = large $730;                  above 350 large stays cheaper.
    assert crossovers(cheapest_segments([SMALL, LARGE, MANAGED], 1, 1000, peak_factor=2.0)) == [
        Crossover(pytest.approx(146 / 5.256), ("managed",), ("small",)),
        Crossover(pytest.approx(140), ("small",), ("small", "large")),
        Crossover(pytest.approx(175), ("small", "large"), ("large",)),
        Crossover(pytest.approx(210), ("large",), ("small",)),
        Crossover(pytest.approx(245), ("small",), ("large",)),
        Crossover(pytest.approx(315), ("large",), ("small", "large")),
        Crossover(pytest.approx(350), ("small", "large"), ("large",)),
    ]


def test_the_cheapest_stretches_cover_the_whole_range():
    segments = cheapest_segments([SMALL, MANAGED], 1, 1000, peak_factor=2.0)
    assert segments == [(1, pytest.approx(146 / 5.256), ("managed",)), (pytest.approx(146 / 5.256), 1000, ("small",))]


def test_the_lowest_per_request_price_is_cheapest_at_every_rate():
    dearer = Option("dearer", Price(per_request=3e-6))
    assert cheapest_segments([dearer, MANAGED], 1, 1000) == [(1, 1000, ("managed",))]
    assert crossovers(cheapest_segments([dearer, MANAGED], 1, 1000)) == []
    same = Option("same", Price(per_request=2e-6))
    assert cheapest_segments([MANAGED, same], 1, 1000) == [(1, 1000, ("managed", "same"))]


def test_an_instance_option_needs_a_capacity():
    with pytest.raises(ValueError):
        Option("unmeasured", Price(per_hour=1.0))
