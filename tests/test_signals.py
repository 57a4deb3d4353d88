"""A run stopped by SIGTERM or SIGHUP stops as at Ctrl-C, and a full disk is one line.

SIGTERM is what a cancelled CI job, ``kill`` and ``timeout`` send; SIGHUP, a closed terminal. Both
must leave what Ctrl-C leaves: what was measured, marked interrupted, a report, exit 130, and no
process of the run (Locust's master and workers, the sampler, the embedded server) nor any
temporary file. A full disk is simulated without filling one: ``/dev/full`` answers every write
with ENOSPC, so a temporary name that points there makes one file's write fail for real; and
``RLIMIT_FSIZE`` (with SIGXFSZ ignored) makes every process of a run fail with EFBIG past a size.
"""

from __future__ import annotations

import csv
import json
import resource
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from loadtest.errors import DiskFull, ExitCode
from loadtest.results.files import write_atomic
from loadtest.results.intervals import read_interval_counts
from loadtest.stop_signals import StopSignal, held, stop_signals
from tests.helpers import FEATURES, FRAUD, REPO, scenario


def loadtest_process(*args: str, preexec_fn=None) -> subprocess.Popen:
    """`python -m loadtest ARGS` as its own process, as a CI job or a terminal runs it."""
    return subprocess.Popen(
        [sys.executable, "-m", "loadtest", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=REPO,
        text=True,
        preexec_fn=preexec_fn,
    )


def progress(out: Path) -> dict:
    try:
        return json.loads((out / ".progress.json").read_text())
    except (OSError, ValueError):
        return {}


def leftovers(out: Path) -> list[str]:
    """What a run must not leave in its directory: its progress file and temporary files."""
    return sorted(p.name for p in out.iterdir() if p.name == ".progress.json" or p.name.endswith(".tmp"))


def whole_csv(path: Path) -> list[list[str]]:
    """The rows of a CSV file, each as long as its header: a row cut short would fail here."""
    rows = list(csv.reader(path.read_text().splitlines()))
    assert rows and all(len(row) == len(rows[0]) for row in rows), path
    return rows


# -- SIGTERM and SIGHUP --------------------------------------------------------------------------------


@pytest.mark.slow
def test_sigterm_stops_a_run_as_ctrl_c_does_and_leaves_no_process_or_temporary_file(tmp_path):
    # The embedded server and two load-generator processes: every kind of child a run has. The request
    # timeout bounds Locust's graceful stop (--stop-timeout): 1 s here, not the default 10.
    path = scenario(
        tmp_path,
        'shape = { kind = "constant", value = 40 }\nduration = "20s"\ntimeout = "1s"',
        f'profile = "fraud-fp32"\n{FRAUD}',
        FEATURES,
    )
    out = tmp_path / "out"
    process = loadtest_process("run", str(path), "--out", str(out), "--processes", "2")
    deadline = time.monotonic() + 30
    while progress(out).get("ok", 0) < 5:  # measuring, with answers in hand
        assert time.monotonic() < deadline and process.poll() is None, process.communicate()
        time.sleep(0.1)
    children = psutil.Process(process.pid).children(recursive=True)
    commands = [" ".join(child.cmdline()) for child in children]
    assert sum("locust" in c for c in commands) == 3 and sum("loadtest.engine.sampler" in c for c in commands) == 1
    server = next(c for c in commands if "reference_server serve" in c)
    workdir = Path(server.split("--ready-file ")[1].split()[0]).parent
    port = int(json.loads((workdir / "ready.json").read_text())["url"].rsplit(":", 1)[1])

    stopped = time.monotonic()
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=30)
    took = time.monotonic() - stopped

    assert process.returncode == ExitCode.INTERRUPTED, stderr
    assert took < 10, f"{took:.1f}s to stop"
    assert "interrupted: stopping Locust" in stderr and "Traceback" not in stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["run"]["interrupted"] is True and summary["accounting"]["ok"] >= 5
    assert (out / "report.html").stat().st_size > 0
    assert leftovers(out) == []
    running = [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
    assert running == [], [" ".join(c.cmdline()) for c in running]
    assert not workdir.exists()
    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", port), timeout=1):
        pass


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_sigterm_and_sighup_are_raised_where_ctrl_c_is_and_their_handlers_come_back_after(signum):
    before = signal.getsignal(signum)
    with pytest.raises(KeyboardInterrupt) as raised, stop_signals():
        signal.raise_signal(signum)  # a real signal to this process: the handler raises in the main thread
        time.sleep(5)  # never reached
    assert isinstance(raised.value, StopSignal) and raised.value.signum == signum
    assert signal.getsignal(signum) is before


def test_a_sighup_ignored_from_the_start_stays_ignored():
    # `nohup loadtest run ...` means the run outlives its terminal
    before = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        with stop_signals():
            assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
            signal.raise_signal(signal.SIGHUP)  # nothing happens
            time.sleep(0.01)
    finally:
        signal.signal(signal.SIGHUP, before)


def test_a_stop_signal_while_children_are_being_ended_waits_until_they_are():
    ended = []
    with pytest.raises(StopSignal), stop_signals():
        with held():
            signal.raise_signal(signal.SIGTERM)
            time.sleep(0.01)
            ended.append("the cleanup ran to its end")
        ended.append("not reached: raised as the block ended")
    assert ended == ["the cleanup ran to its end"]


# -- a full disk ---------------------------------------------------------------------------------------


def test_a_write_that_finds_no_space_names_the_file_keeps_the_old_one_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "summary.json"
    write_atomic(path, '{"whole": true}\n')
    (tmp_path / ".summary.json.tmp").symlink_to("/dev/full")  # its writes fail with ENOSPC
    with pytest.raises(DiskFull, match=f"cannot write {path}: no space left on device"):
        write_atomic(path, '{"whole": false}\n')
    assert json.loads(path.read_text()) == {"whole": True}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["summary.json"]


def fraud_run(tmp_path: Path, server) -> Path:
    return scenario(
        tmp_path,
        'shape = { kind = "constant", value = 50 }\nduration = "1s"',
        f'url = "{server.url}"\n{FRAUD}',
        FEATURES,
    )


@pytest.mark.slow
def test_a_full_disk_while_locust_writes_is_one_line_and_what_was_written_is_whole(server, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / ".histograms.json.tmp").symlink_to("/dev/full")  # Locust writes its hlogs and timeline, then this
    process = loadtest_process("run", str(fraud_run(tmp_path, server)), "--out", str(out), "--no-report")
    _, stderr = process.communicate(timeout=60)

    assert process.returncode == ExitCode.RUN_FAILED, stderr
    line = f"loadtest: Locust wrote no results: cannot write {out / 'histograms.json'}: no space left on device"
    assert stderr.splitlines()[-1].startswith(line) and "Traceback" not in stderr
    assert leftovers(out) == []
    assert len(whole_csv(out / "timeline.csv")) > 1
    for metric in ("response", "service", "lateness"):  # every second's histogram decodes
        assert read_interval_counts(out, metric=metric, warmup=0.0).counts.sum() > 0
    json.loads((out / "run.json").read_text())


def test_a_file_size_limit_on_the_whole_run_is_one_line_before_any_load_is_sent(server, tmp_path):
    # The limit is the scenario's size: its copy fits, run.json (the run's configuration, the scenario
    # included) does not. It holds for every process the run would start; this write is the first to fail.
    path = fraud_run(tmp_path, server)
    limit = path.stat().st_size

    def limited() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead of killing
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))

    out = tmp_path / "out"
    process = loadtest_process("run", str(path), "--out", str(out), preexec_fn=limited)
    _, stderr = process.communicate(timeout=60)

    assert process.returncode == ExitCode.RUN_FAILED, stderr
    assert stderr.splitlines() == [
        f"loadtest: cannot write {out / 'run.json'}: file too large (a file-size limit, as `ulimit -f`)"
    ]
    assert sorted(p.name for p in out.iterdir()) == ["scenario.toml"]
    assert (out / "scenario.toml").read_text() == path.read_text()
