"""Recording: exact percentiles, accounting that adds up, deltas that merge, logs HdrHistogram reads."""

from __future__ import annotations

import numpy as np
import pytest
from hdrh.histogram import HdrHistogram
from hdrh.log import HistogramLogReader

from loadtest.engine.collector import Collector, latency_stats
from loadtest.engine.measurements import hlog_text
from loadtest.engine.recorder import HIGHEST_US, OK, TIMEOUT, Recorder, parse_server_timing


def record_latencies(recorder: Recorder, latencies: np.ndarray, cls: str = "short", start: float = 0.0) -> None:
    """One request per latency, sent on time, a millisecond apart."""
    for i, latency in enumerate(latencies):
        intended = start + i * 0.001
        recorder.scheduled(cls, intended)
        recorder.sent(cls, intended, intended)
        recorder.completed(cls, intended, intended, intended + latency, OK)


def test_percentiles_match_a_direct_computation_within_a_tenth_of_a_percent():
    rng = np.random.default_rng(0)
    latencies = np.concatenate([rng.lognormal(np.log(0.004), 0.5, 20_000), rng.uniform(0.2, 2.0, 300)])
    recorder = Recorder(start=0.0)
    record_latencies(recorder, latencies)
    collector = Collector()
    collector.absorb(recorder.take_delta(now=100.0, final=True))
    stats = latency_stats(collector.histogram("response"))
    assert stats.count == len(latencies)
    micros = np.floor(latencies * 1e6)  # what the recorder stores
    for p in (50, 90, 95, 99, 99.9):
        direct = np.percentile(micros, p, method="inverted_cdf") / 1000
        assert stats.get(f"p{p:g}") == pytest.approx(direct, rel=1e-3), p
    assert stats.max == pytest.approx(micros.max() / 1000, rel=1e-3)


def test_every_arrival_ends_in_exactly_one_bucket():
    recorder = Recorder(start=0.0)
    for i in range(10):
        recorder.scheduled("short", i * 0.01)
    for i in range(6):
        recorder.sent("short", i * 0.01, i * 0.01)
    for i, how in enumerate([OK, OK, OK, "http_503", "connection", TIMEOUT]):
        recorder.completed("short", i * 0.01, i * 0.01, i * 0.01 + 0.005, how)
    for i in range(6, 10):
        recorder.dropped("short", i * 0.01)
    collector = Collector()
    collector.absorb(recorder.take_delta(1.0, final=True))
    accounting = collector.accounting()
    assert accounting.as_dict() == {
        "scheduled": 10,
        "ok": 3,
        "errors": 2,
        "errors_by_kind": {"connection": 1, "http_503": 1},
        "timeouts": 1,
        "dropped": 4,
        "lost_worker": 0,
        "unfinished": 0,
    }
    assert collector.histogram("response").get_total_count() == 3  # only successes have a latency


def test_warmup_is_sent_but_kept_out_of_histograms_and_accounting():
    recorder = Recorder(start=0.0, warmup=1.0)
    record_latencies(recorder, np.full(2000, 0.002))  # 2 s of requests, 1 ms apart
    collector = Collector()
    collector.absorb(recorder.take_delta(10.0, final=True))
    assert collector.accounting().scheduled == 1000
    assert collector.histogram("response").get_total_count() == 1000
    assert sum(counts["warmup"] for counts in collector.timeline.values()) == 1000


def test_out_of_range_values_are_clamped_and_counted_not_lost():
    recorder = Recorder(start=0.0)
    record_latencies(recorder, np.array([0.001, 5000.0]))  # the second is over an hour... of 5000 s
    collector = Collector()
    collector.absorb(recorder.take_delta(6000.0, final=True))
    histogram = collector.histogram("response")
    assert histogram.get_total_count() == 2
    assert histogram.get_max_value() >= HIGHEST_US * 0.999
    assert collector.clamped == 2  # response and service


def test_deltas_from_several_recorders_merge_to_the_same_histogram_as_one():
    rng = np.random.default_rng(1)
    latencies = rng.exponential(0.01, 6000)
    single = Recorder(start=0.0)
    record_latencies(single, latencies)
    one = Collector()
    one.absorb(single.take_delta(10.0, final=True))
    merged = Collector()
    parts = [Recorder(start=0.0) for _ in range(3)]
    for w, part in enumerate(parts):
        record_latencies(part, latencies[w::3], start=w * 0.001 / 3)
        merged.absorb(part.take_delta(3.0), f"w{w}")  # a report mid-run...
        merged.absorb(part.take_delta(10.0, final=True), f"w{w}")  # ...and the final one
    for metric in ("response", "service"):
        assert merged.histogram(metric).get_total_count() == 6000
        for p in (50, 99, 99.9):
            assert merged.histogram(metric).get_value_at_percentile(p) == one.histogram(metric).get_value_at_percentile(
                p
            )
    assert merged.accounting() == one.accounting()


def test_server_timing_splits_service_into_queue_compute_and_overhead():
    assert parse_server_timing("queue;dur=1.5, infer;dur=8.25, batch;desc=16") == (0.0015, 0.00825)
    assert parse_server_timing("total;dur=3") is None and parse_server_timing(None) is None
    recorder = Recorder(start=0.0)
    recorder.scheduled("short", 0.0)
    recorder.sent("short", 0.0, 0.001)
    recorder.completed("short", 0.0, 0.001, 0.021, OK, "queue;dur=4, infer;dur=12.0, batch;desc=8")
    collector = Collector()
    collector.absorb(recorder.take_delta(5.0, final=True))
    ms = {
        m: latency_stats(collector.histogram(m)).p50
        for m in ("response", "service", "server_queue", "server_compute", "overhead", "lateness")
    }
    assert ms == pytest.approx(
        {"response": 21, "service": 20, "server_queue": 4, "server_compute": 12, "overhead": 4, "lateness": 1}, rel=2e-3
    )


def test_interval_logs_are_read_back_by_hdrhistograms_own_reader(tmp_path):
    recorder = Recorder(start=0.0)
    for second in range(3):
        record_latencies(
            recorder, np.full(100, 0.001 * (second + 1)), cls="short" if second < 2 else "long", start=second + 0.0001
        )
    collector = Collector()
    collector.absorb(recorder.take_delta(10.0, final=True))
    path = tmp_path / "response.hlog"
    path.write_text(hlog_text(collector, "response", 1_700_000_000.0))
    reader = HistogramLogReader(str(path), HdrHistogram(1, HIGHEST_US, 3))
    seen = []
    while (histogram := reader.get_next_interval_histogram()) is not None:
        seen.append((histogram.get_tag(), histogram.get_total_count(), histogram.get_max_value()))
    assert ("short", 100, pytest.approx(1000, rel=1e-3)) in seen
    assert (None, 100, pytest.approx(3000, rel=1e-3)) in seen  # untagged: all classes
    assert sum(count for tag, count, _ in seen if tag is None) == 300


def test_bulk_recording_matches_hdrh_record_value_exactly():
    from loadtest.engine.recorder import new_histogram
    from loadtest.results.hdr_bulk import record_many, reset

    rng = np.random.default_rng(7)
    values = np.concatenate(
        [
            rng.integers(0, 5000, 3000),
            rng.lognormal(9, 3, 3000).astype(np.int64).clip(0, HIGHEST_US),
            [0, 1, 2047, 2048, 4095, 4096, HIGHEST_US],
        ]
    ).tolist()
    one_by_one, bulk = new_histogram(), new_histogram()
    for v in values:
        assert one_by_one.record_value(v)
    record_many(bulk, values)
    assert np.array_equal(np.ctypeslib.as_array(bulk.counts), np.ctypeslib.as_array(one_by_one.counts))
    assert (bulk.total_count, bulk.min_value, bulk.max_value) == (
        one_by_one.total_count,
        one_by_one.min_value,
        one_by_one.max_value,
    )
    assert bulk.encode() == one_by_one.encode()
    reset(bulk)
    assert bulk.get_total_count() == 0 and not np.ctypeslib.as_array(bulk.counts).any()


def test_numpy_percentiles_match_hdrh_exactly():
    from loadtest.engine.recorder import new_histogram
    from loadtest.results.hdr_bulk import record_many, value_at_percentile

    histogram = new_histogram()
    record_many(
        histogram, np.random.default_rng(3).lognormal(8, 2, 20_000).astype(np.int64).clip(0, HIGHEST_US).tolist()
    )
    for p in (0, 1, 25, 50, 90, 99, 99.9, 99.99, 100):
        assert value_at_percentile(histogram, p) == histogram.get_value_at_percentile(p), p


def test_values_recorded_while_a_delta_is_being_taken_are_not_lost():
    recorder = Recorder(start=0.0)
    record_latencies(recorder, np.full(10, 0.002))
    extras = []

    def pause():  # another request completes while the delta is encoded
        extras.append(0.1 + len(extras) * 0.001)
        record_latencies(recorder, np.array([0.003]), start=extras[-1])

    collector = Collector()
    collector.absorb(recorder.take_delta(0.5, pause=pause))
    collector.absorb(recorder.take_delta(10.0, final=True))
    assert len(extras) >= 2
    assert collector.histogram("response").get_total_count() == 10 + len(extras)
    assert collector.accounting().ok == 10 + len(extras) and collector.accounting().unfinished == 0


def test_server_timing_in_bulk_matches_one_by_one():
    from loadtest.engine.recorder import server_timings

    well_formed = [f"queue;dur={i / 7:.3f}, infer;dur={i % 5}.25, batch;desc=8" for i in range(50)]
    odd = [None, "", "total;dur=3", "infer;dur=2, queue;dur=1", "queue;dur=1.2.3, infer;dur=1", "myqueue;dur=5"]
    odd += ["queue;dur=1\nx, infer;dur=4", "queue;dur=1, queue;dur=2, infer;dur=3"]
    for headers in (well_formed, well_formed + odd, odd):
        queue, compute = server_timings(headers)
        expected = np.array([parse_server_timing(h) or (np.nan, np.nan) for h in headers])
        np.testing.assert_array_equal(queue, expected[:, 0])
        np.testing.assert_array_equal(compute, expected[:, 1])


def test_closed_load_sends_count_as_scheduled_and_sent_in_one_call():
    recorder = Recorder(start=0.0, warmup=1.0)
    for i in range(20):  # ten in the warm-up second, ten after
        at = i * 0.1
        recorder.sent_closed("short", at)
        recorder.completed("short", at, at, at + 0.004)
    collector = Collector()
    collector.absorb(recorder.take_delta(5.0, final=True))
    accounting = collector.accounting()
    assert accounting.scheduled == accounting.ok == 10 and accounting.unfinished == 0
    assert collector.timeline[0]["scheduled"] == collector.timeline[0]["sent"] == 10
    assert collector.timeline[1]["sent"] == 10
    assert collector.histogram("lateness") is None  # closed load is on time by definition
