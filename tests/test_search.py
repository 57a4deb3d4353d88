"""The capacity search against simulated servers: ramp, bisection, verdicts, knee, SLO parsing."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

from loadtest.analysis.sample_size import samples_needed
from loadtest.analysis.search import (
    CONFIRM,
    SEARCH,
    SearchSettings,
    Slo,
    Step,
    judge_step,
    knee,
    parse_slo,
    precise_samples,
    rule_text,
    search,
    spread,
    step_duration,
)
from loadtest.commands.searcher import search_dict
from loadtest.gates.thresholds import GateError
from loadtest.report.capacity import capacity_lines


def mm1_server(service_rate: float, calls: list[float] | None = None, shed_above: float | None = None):
    """An M/M/1 queue: the p99 response time is ln(100) / (mu - lambda); past mu it never keeps up."""

    def measure(rate: float, *, samples: int = 662, role: str = SEARCH) -> Step:
        if calls is not None:
            calls.append(rate)
        duration = step_duration(rate, samples)
        scheduled = round(rate * duration)
        if rate >= service_rate:
            ok, p99 = round(service_rate * duration), 10_000.0
        else:
            ok, p99 = scheduled, 1000 * math.log(100) / (service_rate - rate)
        errors = 0
        if shed_above is not None and rate > shed_above:
            errors = scheduled // 10
            ok = scheduled - errors
        return judge_step(Step(rate, scheduled, ok, errors, p99, p99 / 4, p99, duration, role=role), Slo("p99", 100.0))

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
    result = search(mm1_server(200.0), SearchSettings(start_rps=20.0, max_steps=5, confirm=1))
    assert len(result.steps) == 5
    assert (result.capacity_rps, result.lowest_failing_rps) == (120.0, 160.0)  # 20 40 80 160 120
    assert "step limit" in result.stopped


def test_the_step_limit_keeps_its_last_steps_for_confirming_the_boundary():
    result = search(mm1_server(200.0), SearchSettings(start_rps=20.0, max_steps=5))
    # 20 40 80 160, then 80 again rather than 120: an unconfirmed 120 could not be the capacity
    assert [(s.target_rps, s.role) for s in result.steps][3:] == [(160.0, SEARCH), (80.0, CONFIRM)]
    assert (result.capacity_rps, result.lowest_failing_rps, result.failing_confirmed) == (80.0, 160.0, False)
    two = search(mm1_server(200.0), SearchSettings(start_rps=20.0, max_steps=2))
    assert [(s.target_rps, s.role) for s in two.steps] == [(20.0, SEARCH), (20.0, CONFIRM)]
    assert two.capacity_rps == 20.0


def scripted(latencies: dict[float, list[float]], capacity: float = 100.0, untrusted: dict[float, int] | None = None):
    """A server whose p99 at a rate is 50 ms up to ``capacity``, 150 ms above, unless scripted run by run.

    Each run of a scripted rate takes the next latency of its list; the first ``untrusted[rate]``
    runs of a rate are not trustworthy. The measure records what it was asked for as (rate, samples, role).
    """
    runs: dict[float, int] = {}
    calls: list[tuple[float, int, str]] = []

    def measure(rate: float, *, samples: int, role: str) -> Step:
        calls.append((rate, samples, role))
        i = runs[rate] = runs.get(rate, -1) + 1
        script = latencies.get(rate, [])
        p99 = script[i] if i < len(script) else (50.0 if rate <= capacity else 150.0)
        trusted = i >= (untrusted or {}).get(rate, 0)
        step = Step(rate, 1000, 1000, 0, p99, 10.0, p99, 10.0, role=role, trusted=trusted)
        return judge_step(step, Slo("p99", 100.0))

    return measure, calls


BISECT = SearchSettings(start_rps=64.0, budget_ms=100.0)  # 64 128 96 112 104 100: bracketed within 4%


def test_the_boundary_rates_are_each_run_again_and_the_capacity_held_in_both():
    measure, calls = scripted({})
    result = search(measure, BISECT)
    assert [rate for rate, _, _ in calls] == [64, 128, 96, 112, 104, 100, 100, 104]
    assert [role for _, _, role in calls][-2:] == [CONFIRM, CONFIRM]
    assert (result.capacity_rps, result.lowest_failing_rps, result.failing_confirmed) == (100, 104, True)
    assert result.interval == (100, 104) and result.flipped == [] and result.length == 1.0
    assert result.stopped == "bracketed within 5%; the capacity held in 2 of 2 runs"


def test_a_passing_rate_that_fails_when_run_again_counts_as_failing_and_the_capacity_is_below_it():
    measure, calls = scripted({100: [50.0, 120.0]})
    result = search(measure, BISECT)
    # 100 flipped: it fails, 96 (4% below) is run again and holds twice; 100 is settled, not run a third time
    assert [rate for rate, _, _ in calls][5:] == [100, 100, 96]
    assert (result.capacity_rps, result.lowest_failing_rps, result.failing_confirmed) == (96, 100, False)
    assert result.flipped == [100]


def test_a_flip_far_below_the_failing_rate_sends_the_bisection_on_below_it():
    measure, calls = scripted({100: [50.0, 120.0], 96: [50.0]}, capacity=90.0)
    result = search(measure, BISECT)
    # 96 held once (scripted) but fails when run again; then 90.. is bracketed again from 64
    assert result.capacity_rps is not None and result.capacity_rps <= 90.0 < result.lowest_failing_rps
    confirmed = [s for s in result.steps if s.target_rps == result.capacity_rps]
    assert len(confirmed) == 2 and all(s.passed for s in confirmed)


def test_a_failing_rate_that_passes_when_run_again_still_counts_as_failing():
    measure, _ = scripted({104: [150.0, 60.0]})
    result = search(measure, BISECT)
    assert (result.capacity_rps, result.lowest_failing_rps, result.failing_confirmed) == (100, 104, False)
    assert result.flipped == [104]


def test_a_failure_on_an_untrusted_run_is_run_again_and_only_the_second_run_counts():
    # 100's first run fails while the generator was starved: the generator's verdict, not the server's
    measure, calls = scripted({100: [900.0]}, untrusted={100: 1})
    result = search(measure, BISECT)
    assert [rate for rate, _, _ in calls][5:] == [100, 100, 100, 104]
    assert [(s.target_rps, s.counted) for s in result.steps][5:7] == [(100, False), (100, True)]
    assert (result.capacity_rps, result.lowest_failing_rps, result.flipped) == (100, 104, [])
    # run once more only: a second untrusted failure counts
    twice, _ = scripted({100: [900.0, 900.0]}, untrusted={100: 2})
    assert search(twice, BISECT).capacity_rps == 96
    # and an untrusted pass counts as it is: the generator's delay is in its latencies, so it only errs high
    passed, calls = scripted({}, untrusted={64: 1})
    assert search(passed, BISECT).steps[0].counted and calls[1][0] == 128


def test_steps_collect_mlperfs_minimum_on_the_ramp_and_a_known_percentile_near_the_boundary():
    measure, calls = scripted({})
    search(measure, BISECT)  # p99: 662 samples, then 9,508 from the first failure (128) on
    assert [(rate, samples) for rate, samples, _ in calls][:3] == [(64, 662), (128, 662), (96, 9508)]
    assert {samples for _, samples, _ in calls[2:]} == {9508}
    assert (precise_samples(95.0), precise_samples(99.0), precise_samples(50.0)) == (1825, 9508, 97)
    assert precise_samples(99.0, share=10.0) == 662  # never below MLPerf's minimum


def test_a_failure_while_other_work_shared_the_servers_cores_is_run_again():
    shared = {100: 0.5}  # other processes kept half the server's core busy during 100's first run

    def measure(rate: float, *, samples: int, role: str) -> Step:
        p99, other = (900.0, shared.pop(rate)) if rate in shared else (50.0 if rate <= 100 else 150.0, 0.01)
        step = Step(rate, 1000, 1000, 0, p99, 10.0, p99, 10.0, role=role, trusted=True, other_work=other)
        return judge_step(step, Slo("p99", 100.0))

    result = search(measure, BISECT)
    assert [(s.target_rps, s.counted, s.other_work) for s in result.steps][5:7] == [
        (100, False, 0.5),
        (100, True, 0.01),
    ]
    assert result.capacity_rps == 100
    assert not BISECT.disturbed(replace(result.steps[0], other_work=0.19))


def test_steps_after_two_runs_of_a_rate_disagree_are_longer():
    # 100's runs both hold, 45 ms apart: more than a fifth of the 100 ms budget
    measure, calls = scripted({100: [50.0, 95.0], 104: [150.0, 150.0]})
    search(measure, BISECT)
    assert [(rate, samples) for rate, samples, _ in calls][-2:] == [(100, 9508), (104, 2 * 9508)]
    quiet, calls = scripted({100: [50.0, 65.0]})
    search(quiet, BISECT)
    assert max(samples for _, samples, _ in calls) == 9508


def mg1_server(seed: int, service_ms: float = 9.0):
    """An M/G/1 queue simulated request by request (lognormal service, CV 0.5): a p95 as noisy as a real one's."""
    rng = np.random.default_rng(seed)
    sigma = math.sqrt(math.log(1.25))
    mu = math.log(service_ms) - sigma**2 / 2

    def measure(rate: float, *, samples: int, role: str) -> Step:
        duration = step_duration(rate, samples, minimum=5.0)
        n = rng.poisson(rate * duration)
        arrivals = np.sort(rng.uniform(0, duration * 1000, n))
        finished, free = np.empty(n), 0.0
        for i, (arrival, service) in enumerate(zip(arrivals, rng.lognormal(mu, sigma, n), strict=True)):
            free = finished[i] = max(arrival, free) + service
        p95 = float(np.percentile(finished - arrivals, 95))
        return judge_step(Step(rate, n, n, 0, p95, None, None, duration, role=role), Slo("p95", 100.0))

    return measure


def test_near_the_boundary_a_step_that_knows_its_percentile_gives_the_same_verdict_run_after_run():
    # The server's p95 at 100 req/s is about 150 ms over a long run: a rate that fails the 100 ms budget.
    # 40 draws of a step of each length; the seeds make the draws (and the test) the same every time.
    def failures(samples: int) -> int:
        return sum(not mg1_server(seed)(100.0, samples=samples, role=SEARCH).passed for seed in range(40))

    short, known = failures(samples_needed(95.0)), failures(precise_samples(95.0))  # 5 s and 20 s steps
    assert short <= 30  # MLPerf's 130 samples: a verdict not much better than a coin's
    assert known >= 36  # 1,825: the same verdict nine times in ten


def test_repeated_searches_report_their_median_and_the_furthest_from_it():
    three = spread([96.2, 94.7, 81.0])  # three back-to-back searches before confirmation and idle steps
    assert (three.median_rps, three.min_rps, three.max_rps) == (94.7, 81.0, 96.2)
    assert three.spread == pytest.approx((94.7 - 81.0) / 94.7)
    assert spread([100.0, 104.0]).median_rps == 100.0  # even: the lower middle, a rate that was measured
    assert spread([100.0]).spread == 0.0
    unfound = spread([None, 90.0, 95.0])
    assert unfound.median_rps == 90.0 and unfound.spread is None  # one search found nothing: no bound on the spread
    assert spread([None, None, 95.0]).median_rps is None
    assert three.as_dict()["searches"] == 3


def test_the_rule_says_what_a_capacity_held_and_how_each_step_started():
    text = rule_text(Slo("p95", 100.0), SearchSettings(1.0), (5.0, 120.0), "in flight 0 and queued 0", searches=3)
    parts = ["p95 stayed under 100 ms", "2 of 2 runs", "130 samples", "then 1,825", "5 s to 120 s", "median of 3"]
    parts += ["idle server (in flight 0 and queued 0)", "failed any run counts as failing"]
    for part in parts:
        assert part in text, part


def test_a_step_that_falls_behind_or_lacks_samples_fails_with_each_reason():
    slo = Slo("p99", 100.0)
    behind = judge_step(Step(100.0, 1000, 900, 0, 50.0, 10.0, 50.0, 10.0), slo)
    assert not behind.passed and any("achieved 90.0%" in r for r in behind.reasons)
    thin = judge_step(Step(10.0, 500, 500, 0, 50.0, 10.0, 50.0, 50.0), slo)
    assert not thin.passed and any("needs 662" in r for r in thin.reasons)
    good = judge_step(Step(100.0, 1000, 990, 0, 50.0, 10.0, 50.0, 10.0), slo)
    assert good.passed and good.reasons == ()


def test_steps_last_long_enough_for_their_samples():
    assert step_duration(100.0, 662) == math.ceil(662 * 1.1 / 100)
    assert step_duration(1000.0, 662) == 5.0  # the floor
    assert step_duration(1.0, 662) == 120.0  # the ceiling: such a step cannot pass on samples
    assert step_duration(100.0, 6643) == math.ceil(6643 * 1.1 / 100)


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


def test_repeated_searches_in_capacity_json_give_the_median_searchs_interval_and_every_step():
    flipped, _ = scripted({100: [50.0, 120.0]})
    results = [search(scripted({})[0], BISECT), search(flipped, BISECT), search(scripted({})[0], BISECT)]
    data = search_dict(results)
    assert data["capacity_rps"] == 100 and data["repeat"]["capacities"] == [100, 96, 100]
    assert data["repeat"]["spread"] == pytest.approx(0.04)
    assert data["interval"] == {
        "passing_rps": 100,
        "failing_rps": 104,
        "failing_confirmed": True,
        "flipped": [],
        "length": 1.0,
    }
    assert [s["search"] for s in data["steps"]] == [1] * 8 + [2] * 8 + [3] * 8
    assert data["searches"][1]["passing_rps"] == 96 and data["searches"][1]["flipped"] == [100]
    lines = capacity_lines({"slo": {"text": "p99 < 100ms", "max_error_rate": 0.01}, "rule": "the rule", **data})
    assert "interval: 100.0 req/s held in 2 of 2 runs; 104.0 req/s failed 2 of 2" in lines
    assert "3 searches: 100.0, 96.0, 100.0 req/s; median 100.0 req/s, spread ±4.0%" in lines
    assert lines[-1] == "rule: the rule"


def test_a_generative_slo_bounds_several_token_percentiles_and_a_step_must_hold_them_all():
    slo = parse_slo(["ttft_p99 < 500ms", "tpot_p95 < 50ms"])
    assert (slo.stat, slo.metric, slo.budget_ms) == ("p99", "ttft", 500.0)
    assert slo.text == "ttft_p99 < 500ms and tpot_p95 < 50ms" and slo.percentile == 99.0
    step = Step(10.0, 1000, 1000, 0, latency_ms=300.0, p50_ms=100.0, p99_ms=300.0, duration_s=100.0)
    assert judge_step(replace(step, also_ms=(40.0,)), slo).passed
    failed = judge_step(replace(step, also_ms=(60.0,)), slo)
    assert not failed.passed and failed.reasons == ("tpot_p95 60.0 ms over the 50 ms budget",)
    missing = judge_step(step, slo)  # a run without the figure (no stream answered) holds nothing
    assert missing.reasons == ("tpot_p95 none over the 50 ms budget",)
    with pytest.raises(GateError, match="--slo: give at least one"):
        parse_slo([])
