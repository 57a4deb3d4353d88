"""The capacity search against simulated servers: ramp, bisection, verdicts, knee, SLO parsing."""

from __future__ import annotations

import math

import pytest

from loadtest.analysis.search import SearchSettings, Slo, Step, judge_step, knee, parse_slo, search, step_duration
from loadtest.gates.thresholds import GateError


def mm1_server(service_rate: float, calls: list[float] | None = None, shed_above: float | None = None):
    """An M/M/1 queue: the p99 response time is ln(100) / (mu - lambda); past mu it never keeps up."""

    def measure(rate: float) -> Step:
        if calls is not None:
            calls.append(rate)
        duration = step_duration(rate, 99.0)
        scheduled = round(rate * duration)
        if rate >= service_rate:
            ok, p99 = round(service_rate * duration), 10_000.0
        else:
            ok, p99 = scheduled, 1000 * math.log(100) / (service_rate - rate)
        errors = 0
        if shed_above is not None and rate > shed_above:
            errors = scheduled // 10
            ok = scheduled - errors
        return judge_step(Step(rate, scheduled, ok, errors, p99, p99 / 4, p99, duration), Slo("p99", 100.0))

    return measure


def test_the_search_brackets_the_rate_where_p99_meets_the_budget():
    # p99 = 1000 ln(100) / (mu - lambda) <= 100 ms  <=>  lambda <= mu - 10 ln(100) = 200 - 46.05
    calls: list[float] = []
    result = search(mm1_server(200.0, calls), SearchSettings(start_rps=20.0))
    exact = 200.0 - 10 * math.log(100)
    assert result.capacity_rps <= exact < result.lowest_failing_rps
    assert (result.lowest_failing_rps - result.capacity_rps) / result.capacity_rps <= 0.05
    assert calls[:4] == [20.0, 40.0, 80.0, 160.0]  # the ramp doubles until a step fails
    assert result.stopped.startswith("bracketed")


def test_a_start_above_capacity_halves_until_a_step_holds():
    result = search(mm1_server(200.0), SearchSettings(start_rps=1000.0))
    assert [s.target_rps for s in result.steps][:4] == [1000.0, 500.0, 250.0, 125.0]
    assert result.capacity_rps <= 200.0 - 10 * math.log(100) < result.lowest_failing_rps


def test_a_gentler_ramp_from_a_good_estimate_overshoots_less():
    doubling = search(mm1_server(200.0), SearchSettings(start_rps=100.0))
    gentle = search(mm1_server(200.0), SearchSettings(start_rps=100.0, factor=1.25))
    assert [s.target_rps for s in gentle.steps][:3] == [100.0, 125.0, 156.25]
    assert gentle.capacity_rps <= 200.0 - 10 * math.log(100) < gentle.lowest_failing_rps
    first_failure = [next(s.target_rps for s in r.steps if not s.passed) for r in (gentle, doubling)]
    assert first_failure == [156.25, 200.0]


def test_no_capacity_when_no_rate_holds_the_slo():
    slow = mm1_server(5.0)  # p99 at any rate is over 920 ms
    result = search(slow, SearchSettings(start_rps=4.0, min_rps=0.5))
    assert result.capacity_rps is None
    assert "no rate" in result.stopped
    assert all(not s.passed for s in result.steps)


def test_the_error_budget_limits_capacity_even_when_latency_holds():
    result = search(mm1_server(1000.0, shed_above=300.0), SearchSettings(start_rps=50.0))
    assert result.capacity_rps <= 300.0 < result.lowest_failing_rps
    failed = [s for s in result.steps if not s.passed]
    assert any("error rate" in reason for s in failed for reason in s.reasons)


def test_the_step_limit_ends_the_search_with_what_it_found():
    result = search(mm1_server(200.0), SearchSettings(start_rps=20.0, max_steps=5))
    assert len(result.steps) == 5
    assert (result.capacity_rps, result.lowest_failing_rps) == (120.0, 160.0)  # 20 40 80 160 120
    assert "step limit" in result.stopped


def test_a_step_that_falls_behind_or_lacks_samples_fails_with_each_reason():
    slo = Slo("p99", 100.0)
    behind = judge_step(Step(100.0, 1000, 900, 0, 50.0, 10.0, 50.0, 10.0), slo)
    assert not behind.passed and any("achieved 90.0%" in r for r in behind.reasons)
    thin = judge_step(Step(10.0, 500, 500, 0, 50.0, 10.0, 50.0, 50.0), slo)
    assert not thin.passed and any("needs 662" in r for r in thin.reasons)
    good = judge_step(Step(100.0, 1000, 990, 0, 50.0, 10.0, 50.0, 10.0), slo)
    assert good.passed and good.reasons == ()


def test_steps_last_long_enough_for_the_percentile():
    assert step_duration(100.0, 99.0) == math.ceil(662 * 1.1 / 100)
    assert step_duration(1000.0, 99.0) == 5.0  # the floor
    assert step_duration(1.0, 99.0) == 120.0  # the ceiling: such a step cannot pass on samples
    assert step_duration(100.0, 99.9) == math.ceil(6643 * 1.1 / 100)


def test_the_knee_is_where_latency_turns_steep():
    flat_then_steep = [(10, 5.0), (20, 5.5), (40, 6.0), (60, 8.0), (70, 30.0), (75, 90.0)]
    assert knee(flat_then_steep) == 60
    assert knee([(10, 5.0), (20, 5.0)]) is None  # too few rates
    assert knee([(10, 9.0), (20, 8.0), (40, 7.0)]) is None  # latency never rose


def test_slo_parsing_accepts_percentiles_under_a_budget_and_names_the_option_otherwise():
    slo = parse_slo("p99<100ms", max_error_rate=0.02)
    assert (slo.stat, slo.budget_ms, slo.max_error_rate, slo.percentile) == ("p99", 100.0, 0.02, 99.0)
    assert parse_slo("p99.9 < 0.5s").budget_ms == 500.0
    for bad in ("p99>100ms", "throughput>5/s", "p99{class=long}<100ms", "fast"):
        with pytest.raises(GateError, match="--slo"):
            parse_slo(bad)
