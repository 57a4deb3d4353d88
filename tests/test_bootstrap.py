"""Comparing variants: per-second histograms read back exactly, and intervals that cover what they claim.

The coverage tests simulate what a load test sees: log-normal latencies whose noise is AR(1)
from one request to the next (rho 0.9: a slow request is followed by slow ones, as in a queue),
binned per second into HDR buckets, three rounds a variant, each round slower or faster as a
whole by a random drift. Over many simulated comparisons a 95% interval must hold the true
difference about 95% of the time.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hdrh.histogram import HdrHistogram
from hdrh.log import HistogramLogReader

from loadtest.analysis.bootstrap import (
    Difference,
    PerSecond,
    compare_percentiles,
    compare_ratio,
    percentiles_resampled,
    second_weights,
    t_quantile,
)
from loadtest.engine.collector import Collector
from loadtest.engine.measurements import write_results
from loadtest.engine.recorder import DIGITS, HIGHEST_US, LOWEST_US, OK, Recorder, new_histogram
from loadtest.errors import ConfigError
from loadtest.results.hdr_bulk import record_many
from loadtest.results.intervals import (
    IntervalCounts,
    from_histograms,
    on_common_grid,
    percentile_of,
    read_interval_counts,
)

CONFIG = (LOWEST_US, HIGHEST_US, DIGITS)


# -- a real results directory ----------------------------------------------------------------------


def write_run(directory, warmup: float = 2.0, seconds: int = 10, rate: int = 400, seed: int = 0):
    """A results directory written by the run's own code path: Recorder, Collector, write_results.

    Two classes; the warm-up's requests are ten times slower, and all complete before it ends.
    """
    rng = np.random.default_rng(seed)
    recorder = Recorder(start=0.0, warmup=warmup)
    for i in range(seconds * rate):
        intended = i / rate
        cls = "short" if i % 3 else "long"
        latency = rng.lognormal(np.log(0.004 if cls == "short" else 0.012), 0.5)
        if intended < warmup:
            latency = min(10 * latency, warmup - intended - 1e-6)
        recorder.scheduled(cls, intended)
        recorder.sent(cls, intended, intended)
        recorder.completed(cls, intended, intended, intended + latency, OK)
    collector = Collector()
    collector.absorb(recorder.take_delta(now=seconds + 5.0, final=True))
    meta = {"load": {"duration_s": seconds - warmup, "warmup_s": warmup}}
    return write_results(directory, collector, meta, lambda second: rate, 1_700_000_000.0)


def hdrh_merged(path, tag: str | None, from_second: float) -> HdrHistogram:
    """What HdrHistogram's own log reader makes of the same lines: their sum from a second on."""
    reader = HistogramLogReader(str(path), new_histogram())
    merged = new_histogram()
    while (histogram := reader.get_next_interval_histogram(range_start_time_sec=from_second)) is not None:
        if histogram.get_tag() == tag:
            merged.add(histogram)
    return merged


@pytest.mark.parametrize("cls", [None, "short", "long"])
def test_measured_seconds_give_hdrhs_percentiles_of_the_same_seconds_exactly(tmp_path, cls):
    summary = write_run(tmp_path)
    counts = read_interval_counts(tmp_path, cls)
    merged = hdrh_merged(tmp_path / "response.hlog", cls, from_second=2.0)
    # The warm-up's seconds are not measured; the last requests sent complete in second 10.
    assert counts.seconds.tolist() == list(range(2, 11))
    assert counts.total == merged.get_total_count()
    for p in (0.1, 50, 90, 99, 99.9, 100):
        assert counts.percentile(p) == merged.get_value_at_percentile(p) / 1000, p
    # ...and they are the run's measured requests: the summary's figures, from its own histograms.
    stats = summary.percentiles("response", cls or "all")
    assert counts.total == stats.count
    assert [counts.percentile(p) for p in (50, 99, 99.9)] == [stats.get("p50"), stats.get("p99"), stats.get("p99.9")]


def test_only_buckets_that_are_used_are_kept_and_two_runs_share_a_grid_that_adds_up(tmp_path):
    write_run(tmp_path / "a", seed=1)
    write_run(tmp_path / "b", seed=2)
    a, b = read_interval_counts(tmp_path / "a"), read_interval_counts(tmp_path / "b")
    assert a.counts.shape == (9, len(a.buckets)) and (a.counts.sum(axis=0) > 0).all()
    assert len(a.buckets) < new_histogram().counts_len / 5
    a2, b2 = on_common_grid([a, b])
    assert (a2.buckets == b2.buckets).all() and a2.total == a.total and b2.total == b.total
    both = hdrh_merged(tmp_path / "a" / "response.hlog", None, 2.0)
    both.add(hdrh_merged(tmp_path / "b" / "response.hlog", None, 2.0))
    summed = IntervalCounts("", None, CONFIG, a2.seconds, a2.buckets, a2.values_ms, a2.counts + b2.counts)
    for p in (50, 99, 99.9):
        assert summed.percentile(p) == both.get_value_at_percentile(p) / 1000


def test_a_resample_has_hdrhs_percentiles_of_the_seconds_it_drew():
    rng = np.random.default_rng(3)
    histograms = []
    for _ in range(6):
        histogram = new_histogram()
        record_many(histogram, rng.lognormal(np.log(8000), 0.6, 300).astype(np.int64))
        histograms.append(histogram)
    counts = from_histograms(range(6), histograms)
    cumulative = np.cumsum(counts.counts, axis=1).astype(np.float64)
    weights = second_weights(rng, [6], 5)
    got = percentiles_resampled(weights, cumulative, counts.values_ms, (1, 50, 99, 99.9))
    for row, drawn in enumerate(weights.astype(int)):
        expected = new_histogram()
        for second, times in enumerate(drawn):
            for _ in range(times):
                expected.add(histograms[second])
        assert got[:, row].tolist() == [expected.get_value_at_percentile(p) / 1000 for p in (1, 50, 99, 99.9)]


# -- errors name the file ---------------------------------------------------------------------------


def test_a_missing_interval_log_is_an_error_that_names_it(tmp_path):
    write_run(tmp_path)
    (tmp_path / "response.hlog").unlink()
    with pytest.raises(ConfigError, match=r"response\.hlog: missing"):
        read_interval_counts(tmp_path)


def test_a_malformed_interval_log_is_an_error_that_names_the_file_and_the_line(tmp_path):
    write_run(tmp_path)
    path = tmp_path / "response.hlog"
    lines = path.read_text().splitlines()
    path.write_text("\n".join([*lines[:6], "Tag=short,3.000,not-a-number", *lines[6:]]) + "\n")
    with pytest.raises(ConfigError, match=r"response\.hlog: line 7: not an interval line"):
        read_interval_counts(tmp_path)
    path.write_text("\n".join([*lines[:6], "5.000,1.000,4.2,HISTFAAAAnotbase64!!", *lines[6:]]) + "\n")
    with pytest.raises(ConfigError, match=r"response\.hlog: second 5: undecodable histogram"):
        read_interval_counts(tmp_path)
    path.write_text("a,b,c\n")
    with pytest.raises(ConfigError, match=r"response\.hlog: not an HdrHistogram interval log"):
        read_interval_counts(tmp_path)


def test_a_class_the_log_does_not_hold_is_an_error_that_lists_those_it_does(tmp_path):
    write_run(tmp_path)
    with pytest.raises(ConfigError, match=r"response\.hlog: no measured seconds of class 'medium'.*all, long, short"):
        read_interval_counts(tmp_path, "medium")


def test_a_directory_without_a_summary_is_not_a_results_directory(tmp_path):
    with pytest.raises(ConfigError, match="not a results directory"):
        read_interval_counts(tmp_path)


# -- the verdict -------------------------------------------------------------------------------------


def test_a_difference_is_significant_only_when_its_interval_excludes_zero():
    slower = Difference("p99", 10.0, 12.0, 2.0, 0.2, 0.5, 3.5, 5000, 5000)
    unclear = Difference("p99", 10.0, 12.0, 2.0, 0.2, -0.5, 4.5, 5000, 5000)
    faster = Difference("ok/s", 100.0, 90.0, -10.0, -0.1, -15.0, -5.0, 60, 60)
    assert slower.verdict(lower_is_better=True) == "worse"
    assert slower.verdict(lower_is_better=False) == "better"
    assert unclear.verdict(lower_is_better=True) == "no significant difference"
    assert faster.verdict(lower_is_better=False) == "worse"
    assert faster.verdict(lower_is_better=True) == "better"


def test_point_estimates_are_on_all_the_data_and_thin_percentiles_are_flagged():
    rng = np.random.default_rng(5)
    a = [simulated_round(rng, seconds=5) for _ in range(2)]  # 3,000 requests a variant
    b = [simulated_round(rng, seconds=5, shift_ms=1.0) for _ in range(2)]
    differences = compare_percentiles(a, b, (50, 99, 99.9), resamples=200)
    for d, p in zip(differences, (50, 99, 99.9), strict=True):
        a_all, b_all = on_common_grid(a), on_common_grid(b)
        expected_a = percentile_of(sum(r.counts.sum(axis=0) for r in a_all), a_all[0].values_ms, p)
        expected_b = percentile_of(sum(r.counts.sum(axis=0) for r in b_all), b_all[0].values_ms, p)
        assert (d.metric, d.a, d.b) == (f"p{p:g}", expected_a, expected_b)
        assert d.diff == d.b - d.a and d.relative == pytest.approx(d.diff / d.a)
        assert (d.n_a, d.n_b) == (3000, 3000)
    assert [d.sufficient for d in differences] == [True, True, False]  # p99.9 needs 6,643 samples


# -- coverage on simulated load tests ---------------------------------------------------------------

_REFERENCE = new_histogram()
_HIGHEST_US = np.array(  # the highest value of every HDR bucket: a value's bucket is the first that reaches it
    [_REFERENCE.get_highest_equivalent_value(_REFERENCE.get_value_from_index(i)) for i in range(_REFERENCE.counts_len)]
)


def ar1(rng: np.random.Generator, n: int, rho: float) -> np.ndarray:
    """Stationary AR(1) noise with unit variance (the filter truncated where rho**k is below 1e-13)."""
    k = int(np.ceil(np.log(1e-13) / np.log(rho)))
    shocks = rng.normal(size=n + k) * np.sqrt(1 - rho**2)
    return np.convolve(shocks, rho ** np.arange(k))[k : n + k]


def simulated_round(
    rng: np.random.Generator,
    shift_ms: float = 0.0,
    drift: float = 0.02,
    seconds: int = 20,
    rate: int = 300,
    rho: float = 0.9,
    shuffle: bool = False,
) -> IntervalCounts:
    """One round: log-normal latencies (median 10 ms, p99 about 20 ms), AR(1) from request to request.

    ``drift`` is the standard deviation of the round's own log-scale offset; ``shuffle`` deals the
    same requests out over the seconds at random, which is what an i.i.d. bootstrap assumes of them.
    """
    noise = ar1(rng, seconds * rate, rho)
    if shuffle:
        noise = rng.permutation(noise)
    ms = 10.0 * np.exp(0.3 * noise + drift * rng.normal()) + shift_ms
    buckets, column = np.unique(np.searchsorted(_HIGHEST_US, (ms * 1000).astype(np.int64)), return_inverse=True)
    counts = np.zeros((seconds, len(buckets)), dtype=np.int64)
    np.add.at(counts, (np.arange(seconds * rate) // rate, column), 1)
    values_ms = _HIGHEST_US[buckets] / 1000
    return IntervalCounts("simulated", None, CONFIG, np.arange(seconds), buckets, values_ms, counts)


def coverage(shift_ms: float, replications: int, rounds: int = 3, drift: float = 0.02, shuffle: bool = False):
    """Over simulated comparisons: how often each percentile's interval held 0, held the truth, and said "worse"."""
    rng = np.random.default_rng(2024)
    held_zero, held_truth, worse = np.zeros(2), np.zeros(2), np.zeros(2)
    for replication in range(replications):
        a = [simulated_round(rng, 0.0, drift, shuffle=shuffle) for _ in range(rounds)]
        b = [simulated_round(rng, shift_ms, drift, shuffle=shuffle) for _ in range(rounds)]
        for k, d in enumerate(compare_percentiles(a, b, (50, 99), resamples=500, seed=replication)):
            held_zero[k] += d.ci_low <= 0 <= d.ci_high
            held_truth[k] += d.ci_low <= shift_ms <= d.ci_high  # the shift moves every percentile by shift_ms
            worse[k] += d.verdict(lower_is_better=True) == "worse"
    return held_zero / replications, held_truth / replications, worse / replications


@pytest.mark.slow
def test_identical_variants_intervals_hold_zero_about_95_percent_of_the_time():
    held_zero, _, worse = coverage(shift_ms=0.0, replications=200)
    print(f"identical, drift 2%: p50 and p99 intervals held 0 in {held_zero}")
    assert ((held_zero >= 0.90) & (held_zero <= 0.99)).all(), held_zero
    assert (worse <= 0.05).all()


@pytest.mark.slow
def test_a_variant_5ms_slower_is_called_worse_and_its_interval_holds_the_5ms():
    _, held_truth, worse = coverage(shift_ms=5.0, replications=200)
    print(f"B +5 ms, drift 2%: worse in {worse}, intervals held +5 ms in {held_truth}")
    assert (worse >= 0.95).all(), worse
    assert ((held_truth >= 0.90) & (held_truth <= 0.99)).all(), held_truth


@pytest.mark.slow
def test_whole_seconds_keep_the_autocorrelation_an_iid_bootstrap_of_requests_would_miss():
    # One round a variant and no drift: only the within-round noise, and nothing estimated between rounds.
    # (Twenty seconds is a small sample for a percentile interval: a little under 95% is expected.)
    blocks, _, _ = coverage(shift_ms=0.0, replications=200, rounds=1, drift=0.0)
    # The same requests dealt out over the seconds at random: resampling seconds is then resampling requests.
    iid, _, _ = coverage(shift_ms=0.0, replications=200, rounds=1, drift=0.0, shuffle=True)
    print(f"one round, no drift: whole seconds held 0 in {blocks}, an i.i.d. bootstrap in {iid}")
    assert (blocks >= 0.87).all(), blocks
    assert (iid <= 0.6).all(), iid


# -- ratios of per-second sums ----------------------------------------------------------------------


def simulated_seconds(rng: np.random.Generator, rate: float, cost_ms: float, seconds: int = 20, drift: float = 0.02):
    """Per second: ok requests (Poisson around a rate that wanders, AR(1)) and the server CPU-seconds they cost."""
    ok = rng.poisson(rate * np.exp(0.05 * ar1(rng, seconds, 0.8) + drift * rng.normal())).astype(np.float64)
    cpu_s = ok * cost_ms / 1000 * np.exp(0.05 * ar1(rng, seconds, 0.8))  # the cost per request wanders too
    return ok, cpu_s


@pytest.mark.slow
def test_throughput_and_cpu_per_request_intervals_hold_the_true_difference():
    rng = np.random.default_rng(11)
    # The true means: each log-normal wander multiplies its median by exp(variance / 2).
    true_rate_diff = (120 - 100) * np.exp(0.05**2 / 2 + 0.02**2 / 2)
    true_cpu_diff = (2.4 - 2.0) * np.exp(0.05**2 / 2)
    replications = 200
    held, called = np.zeros(2), np.zeros(2)
    for replication in range(replications):
        a = [simulated_seconds(rng, 100, 2.0) for _ in range(3)]
        b = [simulated_seconds(rng, 120, 2.4) for _ in range(3)]
        rates = [PerSecond.rate(ok) for ok, _ in a], [PerSecond.rate(ok) for ok, _ in b]
        costs = [PerSecond(cpu * 1000, ok) for ok, cpu in a], [PerSecond(cpu * 1000, ok) for ok, cpu in b]
        throughput = compare_ratio("ok/s", *rates, resamples=500, seed=replication)
        cpu = compare_ratio("CPU ms/request", *costs, resamples=500, seed=replication)
        held += [
            throughput.ci_low <= true_rate_diff <= throughput.ci_high,
            cpu.ci_low <= true_cpu_diff <= cpu.ci_high,
        ]
        called += [throughput.verdict(lower_is_better=False) == "better", cpu.verdict(lower_is_better=True) == "worse"]
    held, called = held / replications, called / replications
    print(f"ok/s +20%, CPU/request +20%: intervals held the truth in {held}; called better/worse in {called}")
    assert ((held >= 0.90) & (held <= 0.99)).all(), held
    # The rate wanders for seconds on end and rounds drift: three rounds of 20 s pin a 20% gain down nine times in ten.
    assert called[0] >= 0.9 and called[1] >= 0.95, called
    assert (throughput.n_a, throughput.n_b) == (60, 60)  # seconds


def test_a_ratio_with_nothing_under_it_is_an_error():
    some, none = PerSecond(np.ones(3), np.ones(3)), PerSecond(np.ones(3), np.zeros(3))
    with pytest.raises(ValueError, match="CPU ms/request of B: round 2 has a denominator of zero"):
        compare_ratio("CPU ms/request", [some], [some, none])


def test_the_t_quantile_is_exact_at_the_demos_two_degrees_of_freedom():
    # Tables: t(0.975; 1) = 12.706, t(0.975; 2) = 4.303, t(0.975; 4) = 2.776; the normal's 1.960 at infinity.
    assert [round(t_quantile(0.975, df), 3) for df in (1, 2, 4, math.inf)] == [12.706, 4.303, 2.776, 1.96]


def test_a_rounds_throughput_counts_the_seconds_in_which_nothing_happened(tmp_path):
    """At 0.4 req/s most seconds have no row in timeline.csv; they are seconds of 0 responses, not missing ones."""
    from loadtest.commands.compare import measured_seconds

    write_run(tmp_path, warmup=2.0, seconds=10, rate=400)
    timeline = (tmp_path / "timeline.csv").read_text().splitlines()
    kept = [line for line in timeline if not line.startswith(("4,", "5,", "7,"))]  # three quiet seconds
    (tmp_path / "timeline.csv").write_text("\n".join(kept) + "\n")
    ok, _ = measured_seconds(tmp_path)
    assert len(ok) == 8 and ok.tolist()[2:4] == [0.0, 0.0] and ok.tolist()[5] == 0.0
