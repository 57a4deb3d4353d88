"""Saturation analysis (pure), the resource sampler (a real process watching real processes), and a real run."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pandas as pd
import pytest

from loadtest.analysis.saturation import analyse, samples_needed, sufficiency
from loadtest.results.summary import Saturation
from tests.helpers import FEATURES, FRAUD, loadtest, scenario


def timeline(seconds: int, knee: int | None = None, lag_from: int | None = None) -> pd.DataFrame:
    rows = []
    for s in range(seconds):
        p99 = 10.0 if knee is None or s < knee else 80.0
        sent = 100 if lag_from is None or s < lag_from else 60
        rows.append({"second": s, "target": 100, "sent": sent, "response_p99_ms": p99})
    return pd.DataFrame(rows)


def resources(seconds: int, server_from: int | None = None, generator_util: dict | None = None) -> pd.DataFrame:
    rows = []
    for s in range(seconds):
        util = 0.97 if server_from is not None and s >= server_from else 0.4
        gen = (generator_util or {}).get(s, 0.3)
        rows.append({"second": s, "server_cpu_util": util, "generator_cpu_util": gen, "core1_busy_pct": 50.0})
    return pd.DataFrame(rows)


def test_samples_needed_follow_mlperfs_early_stopping():
    assert samples_needed(99) == 662
    assert 6_600 < samples_needed(99.9) < 6_700
    rows = sufficiency({"all": 1000, "long": 100})
    enough = {(r["class"], r["percentile"]): r["enough"] for r in rows}
    assert enough[("all", "p99")] and not enough[("all", "p99.9")] and not enough[("long", "p99")]
    assert enough[("long", "p90")]


def test_saturation_then_knee_are_found_in_order():
    result = analyse(timeline(30, knee=14), resources(30, server_from=11))
    assert result.server_saturated_at == 11 and result.knee_at == 14
    assert any("+3 s from CPU saturation" in line for line in result.lines)


def test_a_rate_that_falls_behind_is_a_knee_too():
    result = analyse(timeline(20, lag_from=8), resources(20))
    assert result.knee_at == 8 and "below 95%" in result.knee_reason
    assert result.server_saturated_at is None and any("did not saturate" in line for line in result.lines)


def test_a_steady_run_has_no_knee():
    result = analyse(timeline(20), resources(20))
    assert result.knee_at is None and any("no latency knee" in line for line in result.lines)


def test_a_one_thread_server_saturates_on_its_busiest_thread_while_its_process_sits_at_half_its_cores():
    r = resources(12).assign(server_cpu_util=0.56, server_thread_max_busy=0.5, server_thread_max_util=0.45)
    r.loc[r["second"] >= 3, ["server_thread_max_busy", "server_thread_max_util"]] = [0.98, 0.74]
    result = analyse(timeline(12), r)
    assert result.server_saturated_at == 3 and result.server_saturation_signal == "busiest thread"
    assert result.server_signals == {"busiest thread": 3.0} and result.server_thread_peak_busy == 0.98
    line = next(line for line in result.lines if line.startswith("server CPU saturated from second 3"))
    assert "busiest thread" in line and "56% of its cores" in line
    # A thread that is busy for one second only is not a bottleneck; a quiet thread reads as its peak.
    r.loc[r["second"] > 3, "server_thread_max_busy"] = 0.5
    quiet = analyse(timeline(12), r)
    assert quiet.server_saturated_at is None and quiet.server_saturation_signal == ""
    assert any("did not saturate (peak 56% of its cores; busiest thread busy 98%" in line for line in quiet.lines)


def test_the_signal_that_fires_first_is_named_and_the_others_are_listed():
    r = resources(12, server_from=5).assign(server_thread_max_busy=0.4)
    r.loc[r["second"] >= 5, "server_thread_max_busy"] = 1.0  # the same second: the process is named first
    result = analyse(timeline(12), r)
    assert result.server_saturation_signal == "process cores"
    assert result.server_signals == {"process cores": 5.0, "busiest thread": 5.0}
    assert any("(>= 90% of its cores); also busiest thread from second 5" in line for line in result.lines)


def test_a_server_queue_that_builds_up_is_a_signal_and_one_long_from_the_start_is_not():
    t = timeline(16).assign(server_queue_p50_ms=1.0)
    t.loc[t["second"] >= 8, "server_queue_p50_ms"] = 40.0  # over 3x its early 1 ms and over the 5 ms floor
    result = analyse(t, resources(16))
    assert result.server_saturated_at == 8 and result.server_saturation_signal == "queue"
    assert any("queue wait grew" in line and "Server-Timing" in line for line in result.lines)
    assert analyse(t.assign(server_queue_p50_ms=40.0), resources(16)).server_saturated_at is None
    small = t.assign(server_queue_p50_ms=t["server_queue_p50_ms"] / 10)  # 0.1 ms to 4 ms: under the floor
    assert analyse(small, resources(16)).server_saturated_at is None
    # Without Server-Timing, the rows the sampler read from the server's /metrics.
    rows = resources(16).assign(server_queue_rows=0.5)
    rows.loc[rows["second"] >= 10, "server_queue_rows"] = 30.0
    from_metrics = analyse(timeline(16), rows)
    assert from_metrics.server_signals == {"queue": 10.0} and any("/metrics" in line for line in from_metrics.lines)


def test_a_summary_written_before_the_server_signals_still_reads():
    old = {
        "server_saturated_at": 4.0,
        "server_peak_util": 0.95,
        "gpu_saturated_at": None,
        "knee_at": None,
        "knee_reason": "",
        "generator_peak_util": 0.3,
        "generator_overloaded_seconds": [],
        "trustworthy": True,
        "lines": ["server CPU saturated from second 4 (>= 90% of its cores)"],
    }
    saturation = Saturation(**old)
    assert saturation.server_saturation_signal == "" and saturation.server_thread_peak_busy is None
    assert Saturation(**saturation.as_dict()) == saturation


@pytest.mark.slow
def test_the_sampler_measures_a_busy_process_and_says_why_there_is_no_gpu(tmp_path):
    spin = subprocess.Popen([sys.executable, "-c", "import time\nend = time.time() + 8\nwhile time.time() < end: pass"])
    idle = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(8)"])
    out = tmp_path / "resources.csv"
    sampler = subprocess.Popen(
        [sys.executable, "-m", "loadtest.engine.sampler", "--out", str(out), "--server-pid", str(spin.pid)]
        + ["--generator-pid", str(idle.pid), "--hz", "4"]
    )
    time.sleep(4.5)
    sampler.terminate()
    assert sampler.wait(timeout=10) == 0
    spin.kill(), idle.kill()
    rows = pd.read_csv(out)
    assert len(rows) >= 3
    steady = rows.iloc[1:]
    assert steady["server_cpu_cores"].min() > 0.7  # a spinning process uses about one core
    assert steady["server_thread_max_busy"].min() > 0.95  # and its one thread always runs or waits to run
    assert (steady["server_thread_max_tid"] == spin.pid).all()  # the main thread's id is the process's
    assert steady["generator_cpu_cores"].max() < 0.05  # a sleeping one, nothing
    assert (steady["server_rss_mb"] > 1).all()
    meta = json.loads((tmp_path / "resources.json").read_text())
    if not meta["gpus"]:
        assert meta["gpu_absent"] and not [c for c in rows.columns if c.startswith("gpu")]
    assert {"core0_busy_pct", "core0_steal_pct", "loopback_rx_mb_per_s"} <= set(rows.columns)


@pytest.mark.slow
@pytest.mark.parametrize("hz", [4])
def test_a_real_run_samples_the_server_and_reports_sufficiency(server, tmp_path, hz):
    path = scenario(
        tmp_path,
        'shape = { kind = "constant", value = 200 }\nduration = "4s"\narrivals = "uniform"',
        f'url = "{server.url}"\n{FRAUD}',
        FEATURES,
    )
    result = loadtest("run", str(path), "--out", str(tmp_path / "out"), "--no-report")
    assert result.returncode == 0, result.stdout + result.stderr
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    rows = pd.read_csv(tmp_path / "out" / "resources.csv")
    assert len(rows) >= 3 and rows["server_cpu_cores"].max() > 0.01  # found by its port, and it worked
    assert summary["resources"]["server_pid"] == server.pid
    assert summary["saturation"]["trustworthy"] in (True, False) and summary["saturation"]["lines"]
    p99 = [r for r in summary["sample_sufficiency"] if r["class"] == "all" and r["percentile"] == "p99"][0]
    assert p99 == {"class": "all", "percentile": "p99", "samples": 800, "needed": 662, "enough": True}


@pytest.mark.slow
def test_a_run_past_capacity_shows_saturation_and_the_knee_in_summary_and_report(tmp_path):
    path = scenario(
        tmp_path,
        # 128 in flight at most: past capacity the rest are dropped, so the backlog drains in seconds at the end.
        'shape = { kind = "ramp", start = 10, end = 300 }\nduration = "6s"\ntimeout = "10s"\nmax_in_flight = 128',
        'profile = "minilm-fp32"\nprotocol = "oip-v2"\nmodel = "minilm"',
        'source = "text"\nclasses = [{ name = "short", weight = 70, min_tokens = 4, max_tokens = 16 },'
        ' { name = "long", weight = 30, min_tokens = 100, max_tokens = 200 }]',
        name="past-capacity",
    )
    result = loadtest("run", str(path), "--out", str(tmp_path / "out"), timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    saturation = summary["saturation"]
    assert saturation["server_saturated_at"] is not None, saturation
    assert saturation["knee_at"] is not None, saturation
    # Its one thread on its one core: the process at 90% of it, or on a machine others share, the thread
    # running or waiting for the core 90% of the time (it gets 85-90% of the core, and waits the rest).
    # Its queue may grow a second or two before that, and is then named first; the CPU fires as well.
    assert {"process cores", "busiest thread"} & set(saturation["server_signals"]), saturation
    assert max(saturation["server_peak_util"], saturation["server_thread_peak_busy"]) >= 0.9, saturation
    assert "saturated from second" in result.stderr and "latency knee at second" in result.stderr
    report = (tmp_path / "out" / "report.md").read_text()
    assert "saturated from second" in report and "latency knee at second" in report
    assert "saturated from second" in (tmp_path / "out" / "report.html").read_text()


@pytest.mark.slow
def test_a_generator_pinned_to_a_busy_core_is_flagged(tmp_path):
    path = scenario(
        tmp_path,
        'shape = { kind = "constant", value = 100 }\nduration = "3s"',
        'profile = "fraud-fp32"\nprotocol = "oip-v2"\nmodel = "fraud"\ninput_name = "features"',
        FEATURES,
        name="starved",
    )
    # The fraud profile pins the server to core 0, so the generator gets core 1: keep core 1 busy.
    hog = subprocess.Popen(
        [
            "taskset",
            "-c",
            "1",
            sys.executable,
            "-c",
            "import time\nend = time.time() + 40\nwhile time.time() < end: pass",
        ]
    )
    out, junit = tmp_path / "out", tmp_path / "junit.xml"
    gates = ["--threshold", "p99 < 10s", "--threshold", "error_rate < 50%", "--strict", "--junit", str(junit)]
    try:
        result = loadtest("run", str(path), "--out", str(out), *gates, timeout=120)
    finally:
        hog.kill()
    # Never trustworthy: the latency gate is not judged, and --strict makes that exit 4.
    assert result.returncode == 4, result.stdout + result.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["resources"]["generator_cores"] == [1]
    trust = summary["trust"]
    assert summary["saturation"]["trustworthy"] is False and trust["trustworthy"] is False
    rules = {r["rule"]: r for r in trust["reasons"]}
    assert "starved_core" in rules and rules["starved_core"]["seconds"], trust
    assert [g["status"] for g in summary["gates"]["results"]] == ["untrusted", "pass"]
    assert "RESULTS NOT TRUSTWORTHY" in result.stderr and "--strict: the run is not trustworthy" in result.stderr
    report = (out / "report.md").read_text()
    assert "RESULTS NOT TRUSTWORTHY" in report and "Trust: why these results are not trustworthy" in report
    assert "starved_core" in (out / "report.html").read_text()
    assert 'type="Untrusted"' in junit.read_text()


FAKE_NVML = '''
"""A stand-in for nvidia-ml-py: no GPU exists on this machine (the real path runs where one is lent)."""
class NVMLError(Exception):
    pass
class _U:
    gpu = 97
class _M:
    used = 3 * 2**30
def nvmlInit(): pass
def nvmlDeviceGetCount(): return 1
def nvmlDeviceGetHandleByIndex(i): return i
def nvmlDeviceGetUtilizationRates(h): return _U()
def nvmlDeviceGetMemoryInfo(h): return _M()
def nvmlDeviceGetPowerUsage(h): return 250_000
def nvmlDeviceGetName(h): return b"Fake GPU"
'''


@pytest.mark.slow
def test_gpu_columns_and_gpu_saturation_through_the_nvml_boundary(tmp_path):
    fake = tmp_path / "fake"
    fake.mkdir()
    (fake / "pynvml.py").write_text(FAKE_NVML)
    out = tmp_path / "resources.csv"
    env = {**__import__("os").environ, "PYTHONPATH": str(fake)}
    sampler = subprocess.Popen(
        [sys.executable, "-m", "loadtest.engine.sampler", "--out", str(out), "--hz", "4"], env=env
    )
    time.sleep(2.5)
    sampler.terminate()
    assert sampler.wait(timeout=10) == 0
    rows = pd.read_csv(out)
    assert (rows["gpu0_util_pct"] == 97).all() and (rows["gpu0_memory_mb"] == 3072).all()
    assert (rows["gpu0_power_w"] == 250).all()
    meta = json.loads((tmp_path / "resources.json").read_text())
    assert meta["gpus"] == ["Fake GPU"] and meta["gpu_absent"] is None
    result = analyse(timeline(len(rows) + 2), rows.assign(second=range(len(rows))))
    assert result.gpu_saturated_at == 0.0 and any("GPU saturated" in line for line in result.lines)


@pytest.mark.slow
def test_a_one_thread_server_at_ten_times_its_capacity_is_saturated_on_its_thread(server, tmp_path):
    """The shared server runs ONNX Runtime with 1 intra-op thread (its default) and may use every core.

    It answers 80 to 130 of these texts a second here (as busy as the machine is): 800 a second is six
    to ten times that. At most 16 in flight, so the rest are dropped by the client and the backlog
    drains at once.
    """
    path = scenario(
        tmp_path,
        'shape = { kind = "constant", value = 800 }\nduration = "3s"\ntimeout = "5s"\nmax_in_flight = 16',
        f'url = "{server.url}"\nprotocol = "oip-v2"\nmodel = "minilm"',
        'source = "text"\nclasses = [{ name = "short", weight = 100, min_tokens = 16, max_tokens = 32 }]',
        name="one-thread",
    )
    result = loadtest("run", str(path), "--out", str(tmp_path / "out"), "--no-report")
    assert result.returncode == 0, result.stdout + result.stderr
    saturation = json.loads((tmp_path / "out" / "summary.json").read_text())["saturation"]
    assert saturation["server_saturation_signal"] == "busiest thread", saturation
    assert saturation["server_thread_peak_busy"] >= 0.9 and saturation["server_peak_util"] < 0.9, saturation
    assert "server CPU saturated from second" in result.stderr and "its busiest thread" in result.stderr
    rows = pd.read_csv(tmp_path / "out" / "resources.csv")
    assert {"server_queue_rows", "server_in_flight"} <= set(rows.columns)  # read from its /metrics
    assert rows["server_in_flight"].max() > 1
