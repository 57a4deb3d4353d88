"""The cost model on hand-computed cases."""

from __future__ import annotations

import pytest

from loadtest.cost import (
    HOURS_PER_MONTH,
    SECONDS_PER_MONTH,
    Forecast,
    ForecastError,
    Price,
    crossover_rps,
    instances_needed,
    parse_forecast,
    plan,
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
