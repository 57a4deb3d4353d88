"""The server's own queue/compute split, read from its Prometheus page: Triton, KServe, MLServer and ours.

The pages in fixtures/metrics are real ones recorded under load (MLServer 1.7.1, KServe 0.21.0, the
reference server) and, for Triton, which cannot run here, two written by hand in its documented
format; each file holds two successive scrapes. The expected figures are worked out by hand from
the samples in the files, in the comments beside them. The split against the per-request
Server-Timing split on a real run is asserted in test_run.py's open-load run (no second Locust run).
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pandas as pd
import pytest

from loadtest.commands.options import metrics_page
from loadtest.config.scenario import scenario_from_dict
from loadtest.engine.sampler import ServerPage, SplitRecorder, server_page
from loadtest.engine.server_metrics import scrape_url
from loadtest.errors import ConfigError, PreflightError
from loadtest.results.server_split import (
    KSERVE,
    MLSERVER,
    REFERENCE,
    TRITON,
    Interval,
    Page,
    Series,
    between,
    bucket_percentile,
    combine,
    detect,
    parse_page,
    read_row,
    split_columns,
    split_row,
)

PAGES = Path(__file__).parent / "fixtures" / "metrics"
NEXT = "# loadtest: the next scrape\n"
FRAUD_BODY = {"inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 8], "data": [0.1] * 8}]}


def pages(name: str) -> tuple[Page, Page]:
    first, second = (PAGES / name).read_text().split(NEXT)
    return parse_page(first), parse_page(second)


def test_each_known_servers_page_is_recognised_and_any_other_is_not():
    assert detect(pages("triton-2.4x-by-hand.txt")[0]) is TRITON
    assert detect(pages("kserve-0.21.0.txt")[0]) is KSERVE
    assert detect(pages("mlserver-1.7.1.txt")[0]) is MLSERVER
    assert detect(pages("reference.txt")[0]) is REFERENCE
    # MLServer before its first request: the family is declared with no sample yet
    assert detect(parse_page("# TYPE model_infer_request_duration summary\n")) is MLSERVER
    assert detect(parse_page("# TYPE http_requests counter\nhttp_requests_total 5\n")) is None


def test_triton_counters_give_each_models_mean_queue_and_compute_and_its_batch_size():
    before, after = pages("triton-2.4x-by-hand.txt")
    # fraud: 1250 - 1000 = 250 requests; queue 1,500,000 - 1,200,000 us = 300,000 us / 250 = 1.2 ms; compute input
    # + infer + output 12,500 + 600,000 + 7,500 us = 620,000 us / 250 = 2.48 ms; 250 inferences / 100 executions
    assert between(TRITON, before, after, "fraud") == Interval(250, pytest.approx(1.2), pytest.approx(2.48), 2.5)
    # minilm: 60 requests; 240,000 us / 60 = 4 ms; 738,000 us / 60 = 12.3 ms; 240 inferences / 12 executions
    assert between(TRITON, before, after, "minilm") == Interval(60, pytest.approx(4.0), pytest.approx(12.3), 20.0)
    # a model the page does not name: every model together, 310 requests, (300,000 + 240,000) us / 310
    every = between(TRITON, before, after, "resnet")
    assert every.requests == 310 and every.queue_ms == pytest.approx(540 / 310)
    assert every.compute_ms == pytest.approx(1358 / 310) and every.queue_buckets == every.compute_buckets == ()


def test_kserve_gives_predict_time_and_bucketed_percentiles_but_no_queue():
    before, after = pages("kserve-0.21.0.txt")
    split = between(KSERVE, before, after, "fraud")
    # request_predict_seconds: count 2881 - 1333 = 1548, sum 0.11788709305255907 - 0.055886505979287904 s
    assert split.requests == 1548 and split.queue_ms is None
    assert split.compute_ms == pytest.approx((0.11788709305255907 - 0.055886505979287904) / 1548 * 1000)
    # every one of the 1548 in the first bucket (le 0.005 s): each percentile is "at most 5 ms"
    assert split.compute_buckets[0] == (0.005, 1548)
    assert [bucket_percentile(split.compute_buckets, p) for p in (50, 99)] == [5.0, 5.0]


def test_mlserver_gives_its_inference_time_alone():
    before, after = pages("mlserver-1.7.1.txt")
    split = between(MLSERVER, before, after, "fraud")
    # model_infer_request_duration: count 1295 - 582 = 713, sum 0.6785761259234278 - 0.34923328794684494 s
    assert split.requests == 713 and split.queue_ms is None and split.compute_buckets == ()
    assert split.compute_ms == pytest.approx((0.6785761259234278 - 0.34923328794684494) / 713 * 1000)
    assert "no queue" in MLSERVER.missing


def test_the_reference_server_gives_queue_and_compute_per_request_with_percentiles():
    before, after = pages("reference.txt")
    split = between(REFERENCE, before, after, "fraud")
    # inference_queue_wait_seconds: count 1976 - 927 = 1049, sum 0.7440111669347971 - 0.3584369797827094 s;
    # inference_request_compute_seconds: sum 1.8885054366837721 - 0.8103828768216772 s; batches 1438 - 636 = 802
    assert split.requests == 1049 and split.batch_rows == pytest.approx(1049 / 802)
    assert split.queue_ms == pytest.approx((0.7440111669347971 - 0.3584369797827094) / 1049 * 1000)
    assert split.compute_ms == pytest.approx((1.8885054366837721 - 0.8103828768216772) / 1049 * 1000)
    # queue buckets grew 838 (le 0.5 ms), 939 (1), 1016 (2.5), 1047 (5): p50 is the 525th wait, p90 the 945th,
    # p99 the 1039th
    assert [bucket_percentile(split.queue_buckets, p) for p in (50, 90, 99)] == [0.5, 2.5, 5.0]


def test_a_count_that_went_back_is_a_restart_not_an_interval():
    before, after = pages("triton-2.4x-by-hand.txt")
    assert between(TRITON, after, before, "fraud") is None


def test_intervals_combine_weighted_by_requests_and_their_buckets_add():
    one = Interval(100, 1.0, 2.0, queue_buckets=((0.001, 90), (float("inf"), 100)))
    two = Interval(300, 3.0, None, queue_buckets=((0.001, 0), (float("inf"), 300)))
    whole = combine([one, two, Interval(0, None, None)])
    assert (whole.requests, whole.queue_ms, whole.compute_ms) == (400, 2.5, 2.0)
    assert whole.queue_buckets == ((0.001, 90), (float("inf"), 400))
    assert bucket_percentile(whole.queue_buckets, 20) == 1.0  # the 80th of 400 is in the first bucket
    assert bucket_percentile(whole.queue_buckets, 50) is None  # past the highest finite edge: not given


def test_a_row_of_server_split_csv_reads_back_as_the_interval_written():
    before, after = pages("reference.txt")
    split = between(REFERENCE, before, after, "fraud")
    row = dict(zip(split_columns(split), split_row(2.5, 1.01, split), strict=True))
    assert row["second"] == 2.5 and row["queue_le_0.5"] == 838 and row["compute_le_inf"] == 1049
    back = read_row(row)
    assert back.requests == split.requests and back.queue_buckets == split.queue_buckets
    assert back.queue_ms == pytest.approx(split.queue_ms, abs=1e-4)


def metrics_setting(**target: object) -> str | bool:
    data = {"target": {"url": "http://127.0.0.1:8000", **target}, "load": {"duration": "1s"}}
    return scenario_from_dict(data, "s.toml", Path(".")).target.metrics


def test_the_metrics_key_takes_a_url_or_true_or_false_and_nothing_else():
    assert metrics_setting() is True  # default: the target's own /metrics, if it is a known server's
    assert metrics_setting(metrics=False) is False
    assert metrics_setting(metrics="http://127.0.0.1:8002/metrics") == "http://127.0.0.1:8002/metrics"
    with pytest.raises(ConfigError, match=r"target\.metrics.*must be a URL"):
        metrics_setting(metrics="127.0.0.1:8002")
    assert metrics_page("off") is False and metrics_page("http://127.0.0.1:8082/metrics").endswith("/metrics")


def test_the_page_read_is_on_loopback_unless_allowed_and_none_when_turned_off():
    assert scrape_url("http://127.0.0.1:8000/v2", True) == "http://127.0.0.1:8000/metrics"
    assert scrape_url("http://10.1.2.3:8000", True, allow_remote=True) is None  # never guessed on another host
    assert scrape_url("http://127.0.0.1:8000", False) is None
    assert scrape_url("grpc://127.0.0.1:8001", True) is None  # its metrics are on the HTTP port: name them
    assert scrape_url("http://127.0.0.1:8000", "http://u:secret@127.0.0.1:8002/metrics") == (
        "http://127.0.0.1:8002/metrics"  # no password on the sampler's command line
    )
    with pytest.raises(PreflightError, match="not a loopback address"):
        scrape_url("http://127.0.0.1:8000", "http://10.1.2.3:8002/metrics")


def record_requests(metrics_url: str, infer_url: str, tmp_path: Path, n: int, series: Series) -> pd.DataFrame:
    """The sampler's own reader and recorder around ``n`` requests: server_split.csv, read as a table.

    The later read waits (up to 2 s) for the server's count to take in the last answer: a server may
    count a request a moment after it answers it.
    """
    page, why = server_page(metrics_url)
    assert page is not None and page.series is series, why
    recorder = SplitRecorder(tmp_path / "server_split.csv", page, page.first_time - 10, "fraud")
    with httpx.Client(timeout=10) as client:
        for _ in range(n):
            client.post(infer_url, json=FRAUD_BODY).raise_for_status()
    deadline = time.monotonic() + 2.0
    while (later := page.read()) is None or between(series, page.first, later, "fraud").requests < n:
        assert time.monotonic() < deadline, "the server never counted the requests"
        time.sleep(0.05)
    recorder.record(later, time.time())
    recorder.close()
    return pd.read_csv(tmp_path / "server_split.csv")


def test_rows_before_the_servers_first_request_wait_for_its_histograms_columns(tmp_path):
    # KServe declares a model's histogram only once it has served it: the first interval has no bucket yet
    empty, served = parse_page("# TYPE request_predict_seconds histogram\n"), pages("kserve-0.21.0.txt")[0]
    recorder = SplitRecorder(tmp_path / "server_split.csv", ServerPage("-", empty, 100.0, False, KSERVE), 99.0, "fraud")
    recorder.record(empty, 101.0)
    assert not (tmp_path / "server_split.csv").exists()  # its columns are not known yet
    recorder.record(served, 102.0)
    recorder.close()
    table = pd.read_csv(tmp_path / "server_split.csv")
    assert list(table["second"]) == [1.0, 2.0] and list(table["server_requests"]) == [0, 1333]
    assert list(table["compute_le_5"]) == [0, 1333] and list(table["compute_le_inf"]) == [0, 1333]


def test_the_sampler_writes_the_reference_servers_split_between_two_reads(server, tmp_path):
    table = record_requests(f"{server.url}/metrics", f"{server.url}/v2/models/fraud/infer", tmp_path, 5, REFERENCE)
    (row,) = table.to_dict("records")
    assert row["second"] == pytest.approx(10, abs=0.01) and row["server_requests"] == 5
    assert 0 < row["server_compute_ms"] < 1000 and row["server_queue_ms"] >= 0 and row["compute_le_inf"] == 5
    assert server_page("http://127.0.0.1:9/metrics")[0] is None  # nothing there: no page, and the reason


def test_the_sampler_reads_a_real_mlservers_split(mlserver, tmp_path):
    infer = f"{mlserver.url}/v2/models/{mlserver.model}/infer"
    table = record_requests(mlserver.metrics_url, infer, tmp_path, 5, MLSERVER)
    (row,) = table.to_dict("records")
    assert row["server_requests"] == 5 and 0 < row["server_compute_ms"] < 1000
    assert pd.isna(row["server_queue_ms"])  # MLServer exposes no queue time: an empty cell, never a zero
    assert not [column for column in table.columns if "_le_" in column]  # nor a histogram to take percentiles from
