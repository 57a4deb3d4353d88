"""Results as data: a run's directory read back as a typed summary, pandas tables and hdrh histograms,
exported as Parquet, and its interval logs marked with the warm-up HdrHistogram's tools should skip."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hdrh.histogram import HdrHistogram
from hdrh.log import HistogramLogReader

from loadtest import Results, read_results
from loadtest.errors import ConfigError, ExitCode
from loadtest.results.per_second import resources_by_second
from tests.helpers import REPO, loadtest

WARMUP_S = 1.0
HLOGS = ("response", "service", "lateness", "server_queue")


@pytest.fixture
def run_dir(reported_run) -> Path:
    """The report tests' run (``conftest.reported_run``): 1 s of warm-up, a gate, every file written."""
    return reported_run


@pytest.mark.slow
def test_timeline_and_resources_join_on_second_with_one_row_per_second(run_dir):
    results = read_results(run_dir)
    timeline = results.timeline
    assert list(timeline["second"]) == list(range(len(timeline))) and len(timeline) >= 2  # warm-up seconds too
    assert timeline["warmup"][timeline["second"] < WARMUP_S].sum() > 0
    joined = timeline.merge(results.resources, on="second")
    assert len(joined) == len(timeline)
    # Every second has its reading but perhaps the last: the few requests that completed after the schedule, in
    # the run's last fraction of a second, which the sampler leaves out (a window under half a second).
    assert joined["second"].is_unique and joined["server_cpu_cores"].iloc[:-1].notna().all()
    # The file keeps the sampler's own windows, at fractional seconds: what the join needs the reader for.
    assert (pd.read_csv(run_dir / "resources.csv")["second"] % 1 != 0).any()
    covered = results.resources.dropna(subset=["window_start_s"])
    assert ((covered["window_start_s"] - covered["second"]).abs() < 1).all()


@pytest.mark.slow
def test_the_histograms_hold_the_summarys_counts_and_the_gates_are_the_summarys(run_dir):
    results = read_results(run_dir)
    summary = results.summary
    assert set(results.histograms) == {"all", *summary.classes}
    for cls, histogram in results.histograms.items():
        assert isinstance(histogram, HdrHistogram)
        assert histogram.get_total_count() == summary.latency_ms["response"][cls].count > 0
    assert results.histogram("service").get_total_count() == summary.latency_ms["service"]["all"].count
    assert results.gates is summary.gates and results.gates.passed
    assert len(results.gates.results) == 1 and results.gates.results[0].actual is not None
    assert isinstance(results, Results) and "Results(path=" in repr(results)


@pytest.mark.slow
def test_a_run_whose_analysis_never_ran_reads_on_the_same_seconds(run_dir, tmp_path):
    """A killed parent leaves resources.csv counted from the sampler's start; reading shifts it, and writes nothing."""
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    meta = json.loads((copy / "resources.json").read_text())
    started = json.loads((copy / "summary.json").read_text())["run"]["started_epoch"]
    windows = pd.read_csv(copy / "resources.csv")
    windows["second"] = (windows["second"] + started - meta["start_epoch"]).round(3)
    windows.to_csv(copy / "resources.csv", index=False)
    (copy / "resources.json").write_text(json.dumps({**meta, "aligned": False}))
    before = (copy / "resources.csv").read_bytes()
    shifted = read_results(copy).resources
    pd.testing.assert_frame_equal(shifted, read_results(run_dir).resources, rtol=1e-3, atol=1e-3)
    assert (copy / "resources.csv").read_bytes() == before


def test_resources_on_whole_seconds_skip_none_when_windows_drift():
    """The sampler's windows run a little over a second: 300 of them at 1.01 s reach 303 s and leave no second out."""
    starts = -0.4 + 1.01 * np.arange(300)
    windows = pd.DataFrame(
        {"second": starts.round(3), "server_cpu_cores": np.where(starts < 100, 1.0, 2.0), "server_thread_max_tid": 7}
    )
    table = resources_by_second(windows)
    assert list(table["second"]) == list(range(-1, 303))
    assert table.set_index("second")["server_cpu_cores"][[50, 200]].tolist() == [1.0, 2.0]
    edge = table.set_index("second").loc[100]  # the window starting at 100.6 brings 2.0 for 40% of second 100
    assert edge["server_cpu_cores"] == pytest.approx(1.0 * 0.6 + 2.0 * 0.4, abs=0.02)
    assert edge["server_thread_max_tid"] == 7


@pytest.mark.slow
def test_export_writes_parquet_that_reads_back_as_the_same_tables(run_dir, tmp_path):
    result = loadtest("export", str(run_dir), "--parquet", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    results = read_results(run_dir)
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "timeline.parquet"), results.timeline)
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "resources.parquet"), results.resources)
    intervals = pd.read_parquet(tmp_path / "intervals.parquet")
    assert set(intervals["metric"]) == set(HLOGS)
    response = intervals[(intervals["metric"] == "response") & (intervals["class"] == "all")]
    measured = response[response["second"] >= WARMUP_S]["count"].sum()
    # By the second each completed: a request sent at the warm-up's end may land in the first measured second.
    assert measured == pytest.approx(results.summary.latency_ms["response"]["all"].count, abs=3)


def test_export_and_read_results_refuse_what_is_not_a_results_directory(tmp_path):
    with pytest.raises(ConfigError, match="not a results directory") as caught:
        read_results(tmp_path / "missing")
    assert caught.value.exit_code == ExitCode.USAGE and str(tmp_path / "missing") in str(caught.value)
    result = loadtest("export", str(tmp_path), "--parquet")
    assert result.returncode == 2 and "no summary.json" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert loadtest("export", str(tmp_path)).returncode == 2  # a format must be named


@pytest.mark.slow
def test_interval_logs_mark_the_warmup_and_hdrhs_reader_skips_it_with_start(run_dir):
    for metric in HLOGS:
        path = run_dir / f"{metric}.hlog"
        header = [line for line in path.read_text().splitlines() if line.startswith("#")]
        assert "#[Warm-up: first 1.000 s; pass -start 1.000 to HistogramLogProcessor to skip it]" in header
        every, measured = [], []
        for seen, start in ((every, 0.0), (measured, WARMUP_S)):
            reader = HistogramLogReader(str(path), HdrHistogram(1, 3_600_000_000, 3))
            while (h := reader.get_next_interval_histogram(range_start_time_sec=start)) is not None:
                seen.append(h.get_start_time_stamp() / 1000 - reader.get_start_time_sec())
            reader.close()
        assert every and min(every) == pytest.approx(0.0, abs=1e-3)
        assert measured and min(measured) == pytest.approx(WARMUP_S, abs=1e-3)
        assert len(every) == len([line for line in path.read_text().splitlines() if line[:1] in "0123456789T"])


@pytest.mark.slow
def test_report_md_links_the_html_report_relatively(run_dir):
    from loadtest.report.run import build_markdown, load_results

    markdown = build_markdown(load_results(run_dir))
    assert "[report.html](report.html)" in markdown and str(run_dir) not in markdown


def test_import_loadtest_leaves_pandas_unloaded_until_read_results_is_used():
    code = "import sys, loadtest; print('pandas' in sys.modules, sorted(set(loadtest.__all__)))"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert out.split(" ", 1)[0] == "False" and "read_results" in out
