"""Traffic shapes and the open-load schedule, as pure functions of time."""

from __future__ import annotations

import numpy as np
import pytest

from loadtest.errors import ConfigError
from loadtest.traffic.arrivals import arrival_times, expected_count, partition
from loadtest.traffic.shapes import from_table


def shape(table: dict, duration: float = 60.0):
    return from_table(table, duration, "test.toml")


def test_each_shape_gives_its_value_over_time():
    assert shape({"kind": "constant", "value": 50}).at(12.3) == 50
    ramp = shape({"kind": "ramp", "start": 10, "end": 110}, duration=100)
    assert [ramp.at(t) for t in (0, 50, 100, 200)] == [10, 60, 110, 110]
    step = shape({"kind": "step", "start": 10, "step": 5, "every": "10s", "max": 20})
    assert [step.at(t) for t in (0, 9.9, 10, 25, 59)] == [10, 10, 15, 20, 20]
    spike = shape({"kind": "spike", "base": 20, "peak": 200, "at": "30s", "length": "5s"})
    assert [spike.at(t) for t in (29.9, 30, 34.9, 35)] == [20, 200, 200, 20]
    sine = shape({"kind": "sine", "mean": 100, "amplitude": 50, "period": "40s"})
    assert sine.at(10) == pytest.approx(150) and sine.at(30) == pytest.approx(50)
    day = shape({"kind": "diurnal", "low": 10, "high": 90}, duration=120)
    assert day.at(0) == pytest.approx(10) and day.at(60) == pytest.approx(90) and day.at(30) == pytest.approx(50)
    stages = shape(
        {
            "kind": "stages",
            "stages": [
                {"duration": "10s", "target": 100},
                {"duration": "20s", "target": 100},
                {"duration": "10s", "target": 0},
            ],
        }
    )
    assert [stages.at(t) for t in (0, 5, 10, 25, 35, 40, 50)] == [0, 50, 100, 100, 50, 0, 0]


@pytest.mark.parametrize(
    ("table", "key", "message"),
    [
        ({"kind": "wave", "value": 1}, "load.shape.kind", "unknown shape"),
        ({"kind": "ramp", "start": 1}, "load.shape.end", "needs 'end'"),
        ({"kind": "constant", "value": 1, "peak": 2}, "load.shape.peak", "unknown key"),
        ({"kind": "constant", "value": "fast"}, "load.shape.value", "number"),
        ({"kind": "constant", "value": -5}, "load.shape.value", "negative"),
        ({"kind": "spike", "base": 1, "peak": 2, "at": "soon", "length": "1s"}, "load.shape.at", "duration"),
        ({"kind": "bursty", "value": 5, "burstiness": 0}, "load.shape.burstiness", "more than 0"),
        ({"kind": "stages", "stages": [{"duration": "1s"}]}, "load.shape.stages[0]", "each stage"),
    ],
)
def test_bad_shapes_name_the_file_and_key(table, key, message):
    with pytest.raises(ConfigError, match=message) as caught:
        shape(table)
    assert str(caught.value).startswith(f"test.toml: {key}: ")


def test_uniform_arrivals_are_exact_and_poisson_arrivals_match_the_rate():
    constant = shape({"kind": "constant", "value": 100}, duration=20)
    uniform = list(arrival_times(constant, 20, "uniform"))
    assert len(uniform) == 2000
    np.testing.assert_allclose(np.diff(uniform), 0.01, atol=1e-9)
    poisson = list(arrival_times(constant, 20, "poisson", seed=3))
    assert abs(len(poisson) - 2000) < 3 * np.sqrt(2000)
    gaps = np.diff(poisson)
    assert np.std(gaps) / np.mean(gaps) == pytest.approx(1.0, abs=0.08)  # exponential: CV 1


def test_bursty_gamma_arrivals_have_the_configured_burstiness():
    bursty = shape({"kind": "bursty", "value": 200, "burstiness": 0.25}, duration=30)
    gaps = np.diff(list(arrival_times(bursty, 30, "gamma", seed=5)))
    assert np.mean(gaps) == pytest.approx(1 / 200, rel=0.06)
    assert np.std(gaps) / np.mean(gaps) == pytest.approx(2.0, rel=0.1)  # CV = 1/sqrt(k)


def test_arrivals_follow_a_ramp_second_by_second():
    ramp = shape({"kind": "ramp", "start": 0, "end": 200}, duration=10)
    counts = np.bincount(np.floor(list(arrival_times(ramp, 10, "uniform"))).astype(int), minlength=10)
    expected = [10 + 20 * s for s in range(10)]  # the rate's mean over each second
    assert np.all(np.abs(counts - expected) <= 1), counts
    assert expected_count(ramp, 10) == pytest.approx(1000, rel=1e-3)


def test_spike_edges_are_sharp():
    spike = shape({"kind": "spike", "base": 10, "peak": 500, "at": "2s", "length": "1s"}, duration=5)
    counts = np.bincount(np.floor(list(arrival_times(spike, 5, "uniform"))).astype(int), minlength=5)
    assert list(counts) == [10, 10, 500, 10, 10]


def test_workers_partition_the_schedule_without_loss_or_reordering():
    constant = shape({"kind": "constant", "value": 300}, duration=5)
    full = list(arrival_times(constant, 5, "poisson", seed=9))
    parts = [list(partition(arrival_times(constant, 5, "poisson", seed=9), w, 3)) for w in range(3)]
    merged = sorted(item for part in parts for item in part)
    assert [t for _, t in merged] == full
    assert all(np.all(np.diff([t for _, t in part]) >= 0) for part in parts)
    assert max(len(p) for p in parts) - min(len(p) for p in parts) <= 1


def test_the_same_seed_gives_the_same_schedule():
    constant = shape({"kind": "constant", "value": 50}, duration=5)
    assert list(arrival_times(constant, 5, "poisson", seed=1)) == list(arrival_times(constant, 5, "poisson", seed=1))
    assert list(arrival_times(constant, 5, "poisson", seed=1)) != list(arrival_times(constant, 5, "poisson", seed=2))
