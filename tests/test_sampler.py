"""The resource sampler counts each CPU second once: processes that start, exit and are reaped under it.

Real processes under the real sampler (``python -m loadtest.engine.sampler``), and a real 2-worker run.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pandas as pd
import psutil
import pytest

from loadtest.engine.process_tree import Tree, TreeReading
from loadtest.engine.sampler import Clamps, Reading, resource_row
from tests.helpers import FEATURES, FRAUD, loadtest, scenario

# A parent whose first child burned CPU before the sampler started (that part is not the watch's),
# then burns 0.6 s more under it and is reaped; two more children appear mid-window, burn 0.6 s each,
# and are reaped; then a quiet 1.2 s. The parent waits for GO before the watched part.
FAMILY = """
import os, subprocess, sys, time
BURN = "import sys, time\\nend = time.process_time() + {s}\\nwhile time.process_time() < end: pass\\n"
WAIT = "while not os.path.exists(sys.argv[1]): time.sleep(0.02)\\n"
early = subprocess.Popen([sys.executable, "-c", "import os\\n" + BURN.format(s=0.5) + WAIT + BURN.format(s=0.6),
                          sys.argv[1]])
while not os.path.exists(sys.argv[1]): time.sleep(0.02)
early.wait()
time.sleep(0.3)
late = [subprocess.Popen([sys.executable, "-c", BURN.format(s=0.6)]) for _ in range(2)]
for child in late: child.wait()
time.sleep(1.2)
"""


def total_cpu(process: psutil.Process) -> float:
    """A process's CPU seconds with those of the children it reaped, and of its live children."""
    times = process.cpu_times()
    own = times.user + times.system + times.children_user + times.children_system
    for child in process.children(recursive=True):
        child_times = child.cpu_times()
        own += child_times.user + child_times.system
    return own


@pytest.mark.slow
def test_processes_that_start_exit_and_are_reaped_are_counted_once(tmp_path):
    go, out = tmp_path / "go", tmp_path / "resources.csv"
    family = subprocess.Popen([sys.executable, "-c", FAMILY, str(go)])
    parent = psutil.Process(family.pid)
    while not parent.children() or sum(parent.children()[0].cpu_times()[:2]) < 0.4:  # the early child's life so far
        time.sleep(0.05)
    before = total_cpu(parent)
    sampler = subprocess.Popen(
        [sys.executable, "-m", "loadtest.engine.sampler", "--out", str(out), "--generator-pid", str(family.pid)]
        + ["--hz", "4", "--metrics-url", "http://127.0.0.1:9/metrics"]  # nothing listens: the page is absent
    )
    while not out.exists() or not out.read_text().count("\n"):
        time.sleep(0.02)
    go.touch()  # the sampler has read its baseline: the watched part begins
    while parent.status() != psutil.STATUS_ZOMBIE:
        time.sleep(0.05)
    used = total_cpu(parent) - before  # the zombie's totals hold every child it reaped
    time.sleep(0.3)
    sampler.terminate()
    assert sampler.wait(timeout=10) == 0
    family.wait()
    rows = pd.read_csv(out)
    measured = rows.iloc[:-1]  # the last window's end is when it was stopped, which the file does not say
    counted = (measured["generator_cpu_cores"] * rows["second"].diff().shift(-1).iloc[:-1]).sum()
    assert rows["generator_cpu_util"].max() <= 1.0 and rows["generator_cpu_cores"].max() <= psutil.cpu_count()
    assert used > 1.6  # 0.6 s of the early child and 2 x 0.6 s of the late ones, and their start-ups
    assert counted == pytest.approx(used, rel=0.1), rows[["second", "generator_cpu_cores"]]
    meta = json.loads((tmp_path / "resources.json").read_text())
    assert meta["clamped"].get("generator", {}).get("peak_cores", 0) < 1.1 * psutil.cpu_count()  # no spike capped
    assert meta["server_metrics"] is None and "127.0.0.1:9" in meta["server_metrics_absent"]
    assert "server_queue_rows" not in rows.columns  # absent, never zeros


def test_a_window_never_shows_more_cores_than_the_tree_may_use_and_the_cap_is_counted():
    tree = Tree(psutil.Process())
    cores = tree.allowed_cores()
    before = Reading(TreeReading(10.0, 0, 2**20, 1), TreeReading(5.0, 0, 2**20, 1), [], (0, 0), 100.0)
    after = Reading(TreeReading(10.5, 0, 2**20, 1), TreeReading(5.0 + 3 * cores, 0, 2**20, 1), [], (0, 0), 101.0)
    clamps = Clamps()
    row = resource_row(before, after, tree, tree, 99.0, clamps)
    assert row[1:3] == [0.5, round(0.5 / cores, 4)]  # server cores and share, within its cores
    assert row[8:10] == [cores, 1.0]  # the generator's 3x its cores, capped
    assert clamps.as_dict() == {"generator": {"windows": 1, "peak_cores": 3.0 * cores}}


@pytest.mark.slow
def test_a_two_worker_run_at_400_per_second_never_shows_more_cores_than_it_may_use(server, tmp_path):
    path = scenario(
        tmp_path,
        'shape = { kind = "constant", value = 400 }\nduration = "2s"\narrivals = "uniform"',
        f'url = "{server.url}"\n{FRAUD}',
        FEATURES,
    )
    result = loadtest("run", str(path), "--out", str(tmp_path / "out"), "--processes", "2", "--no-report")
    assert result.returncode == 0, result.stdout + result.stderr
    rows = pd.read_csv(tmp_path / "out" / "resources.csv")
    meta = json.loads((tmp_path / "out" / "resources.json").read_text())
    assert rows["generator_cpu_util"].max() <= 1.0 and rows["server_cpu_util"].max() <= 1.0
    # The workers exit and are reaped in the last window: that once read as 5.9x the generator's cores.
    assert meta["clamped"].get("generator", {}).get("peak_cores", 0) < 1.1 * len(meta["generator_cores"])
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert "generator_busy" not in {reason["rule"] for reason in summary["trust"]["reasons"]}, summary["trust"]
    # The reference server's own figures, from its /metrics.
    assert meta["server_metrics"] == f"{server.url}/metrics" and rows["server_queue_rows"].notna().all()
