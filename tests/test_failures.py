"""Runs that failed say so: a dead target, transport errors, a lost worker; and the exit codes mean what happened.

The rules (``analysis.failure``) are specified on synthetic timelines; each is then seen once end to end,
with real processes killed mid-run: a target, the embedded reference server, one of two Locust workers.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import psutil
import pytest

from loadtest.analysis.failure import HOLD_S, TRANSPORT_SHARE, judge, stopped_at
from loadtest.analysis.saturation import analyse
from loadtest.engine.collector import Collector
from loadtest.errors import MEANINGS, ExitCode, outcome_code
from loadtest.results.summary import Accounting, Counts, RunInfo, Summary, Throughput, transport_error
from tests.helpers import FEATURES, FRAUD, JSON_ENDPOINT, REPO, loadtest, scenario

# -- the rules, on synthetic timelines --------------------------------------------------------------


def timeline(seconds: int, dead_from: int | None = None, answer: str = "ok", rate: int = 50) -> pd.DataFrame:
    """A steady run; from ``dead_from`` every request fails: refused (``ok``), a 500 (``http``) or timed out."""
    rows = []
    for s in range(seconds):
        row = {"second": s, "target": rate, "sent": rate, "ok": rate, "error": 0, "transport": 0, "timeout": 0}
        if dead_from is not None and s >= dead_from:
            row["ok"] = 0
            if answer == "ok":
                row["error"] = row["transport"] = rate
            elif answer == "http":
                row["error"] = rate
            else:
                row["timeout"] = rate
        row["response_p99_ms"] = 5.0
        rows.append(row)
    return pd.DataFrame(rows)


def summary(counts: Counts, lost_workers: list | None = None) -> Summary:
    return Summary(
        scenario={},
        target={},
        profile=None,
        load={"duration_s": 10.0},
        run=RunInfo(lost_workers=lost_workers or []),
        accounting=Accounting(counts),
        throughput=Throughput(),
        latency_ms={},
    )


def test_a_target_that_stops_answering_fails_the_run_at_the_first_silent_second():
    failure = judge(timeline(12, dead_from=8), summary(Counts(600, 400, 200, {"connection": 200})))
    assert failure.reason == "target_stopped" and failure.at_s == 8
    assert failure.line.startswith("the target stopped answering at second 8: 400 of 600")
    assert "connection 200" in failure.line


def test_a_target_that_answers_errors_or_only_times_out_has_not_stopped():
    # A 500 is an answer (the error_rate gate's business); timeouts alone may be an overloaded server.
    assert stopped_at(timeline(12, dead_from=8, answer="http")) is None
    assert stopped_at(timeline(12, dead_from=8, answer="timeout")) is None
    assert judge(timeline(12, dead_from=8, answer="http"), summary(Counts(600, 400, 200, {"http_500": 200}))) is None


def test_a_silence_shorter_than_the_hold_or_in_an_old_timeline_is_no_verdict():
    assert stopped_at(timeline(12, dead_from=12 - HOLD_S + 1)) is None
    assert stopped_at(timeline(12, dead_from=12 - HOLD_S)) == 12 - HOLD_S
    assert stopped_at(timeline(12, dead_from=8).drop(columns="transport")) is None
    assert stopped_at(None) is None and stopped_at(pd.DataFrame()) is None


def test_transport_errors_over_the_share_fail_the_run_and_timeouts_do_not_count():
    sent = 1000
    over = int(TRANSPORT_SHARE * sent) + 1
    failure = judge(timeline(10), summary(Counts(sent, sent - over, over, {"ConnectionResetError": over})))
    assert failure.reason == "transport_errors" and f"a run may lose at most {TRANSPORT_SHARE:.0%}" in failure.line
    at_share = int(TRANSPORT_SHARE * sent)
    assert judge(timeline(10), summary(Counts(sent, sent - at_share, at_share, {"connection": at_share}))) is None
    assert judge(timeline(10), summary(Counts(sent, 500, 0, timeouts=500))) is None
    assert transport_error("connection") and transport_error("RemoteDisconnected")
    assert not any(map(transport_error, ("http_503", "invalid_body", "wrong_http_200")))


def test_a_lost_worker_fails_the_run_in_one_line():
    lost = [{"worker": 2, "of": 2, "at_s": 3.0, "arrivals": 412}]
    failure = judge(timeline(10), summary(Counts(1000, 588, lost_worker=412), lost))
    assert failure.reason == "lost_worker" and failure.at_s == 3.0
    assert failure.line == "load-generator worker 2 of 2 was lost at second 3: 412 arrivals not sent"


def test_a_run_whose_answers_fail_has_a_knee_not_a_rate_that_kept_up():
    result = analyse(timeline(12, dead_from=6), None)
    assert result.knee_at == 6 and "failed" in result.knee_reason
    assert not any("no latency knee" in line for line in result.lines)


def test_a_lost_workers_unreported_share_is_counted_so_the_schedule_adds_up():
    collector = Collector()
    # Worker a finished its share; b had scheduled 300 of its 520 and heard back from 297 when it was lost.
    for worker, ok in (("a", 293), ("b", 290)):
        delta = {"histograms": {}, "intervals": [], "timeline": {}, "in_flight": 0, "counts": {}}
        delta["counts"] = {"short": {"scheduled": 300, "ok": ok, "error:connection": 5, "dropped": 2}}
        collector.absorb(delta, worker, at=2.4)
    assert collector.lose("b", {"short": 500, "long": 20}) == (500 - 297) + 20
    total = collector.accounting()
    assert total.scheduled == 300 + 520 and total.lost_worker == 223 and total.unfinished == 0
    assert total.scheduled == total.ok + total.errors + total.timeouts + total.dropped + total.lost_worker
    assert collector.accounting("long").lost_worker == 20 == collector.accounting("long").scheduled


def test_the_failure_and_the_lost_workers_read_back_as_written():
    from dataclasses import replace

    from loadtest.results.summary import Failure

    lost = [{"worker": 2, "of": 2, "at_s": 3.0, "arrivals": 412}]
    written = replace(summary(Counts(1000, 588, lost_worker=412), lost), failure=Failure("lost_worker", 3.0, "x"))
    assert Summary.from_dict(json.loads(json.dumps(written.as_dict()))).as_dict() == written.as_dict()
    assert Summary.from_dict({"run": {}, "accounting": {"scheduled": 3}}).failure is None  # an older summary


def test_a_failed_run_exits_3_whatever_its_gates_but_an_interruption_wins():
    assert outcome_code(False, False, run_failed=True) == ExitCode.RUN_FAILED
    assert outcome_code(False, True, run_failed=True) == ExitCode.RUN_FAILED
    assert outcome_code(True, False, run_failed=True) == ExitCode.INTERRUPTED


def test_the_readme_exit_code_table_is_the_one_loadtest_prints():
    text = (REPO / "README.md").read_text()
    table = next(block for block in text[text.index("**Exit codes**") :].split("\n\n") if block.startswith("| code"))
    rows = re.findall(r"^\| (\d+) \| (.+) \|$", table, flags=re.M)
    assert rows == [(str(code.value), meaning) for code, meaning in MEANINGS.items()]
    assert f"{TRANSPORT_SHARE:.0%}" in MEANINGS[ExitCode.RUN_FAILED]


# -- end to end: real processes killed mid-run ------------------------------------------------------

SERVE = """
import sys
from tests.servers import _Server
server = _Server(lambda: None)
print(server.server_address[1], flush=True)
server.serve_forever()
"""


def _kill_when_answered(out: Path, find, answered: int = 50, limit: float = 60) -> dict:
    """Kill the process ``find()`` returns once the run's progress shows ``answered`` successes (on a thread).

    The dict it returns gets ``elapsed``: the run's seconds in the progress file read just before the kill.
    """
    killed: dict = {}

    def watch() -> None:
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            try:
                progress = json.loads((out / ".progress.json").read_text())
                if progress["ok"] >= answered:
                    find().kill()
                    killed["elapsed"] = progress["elapsed"]
                    return
            except (OSError, ValueError, KeyError):
                pass
            time.sleep(0.1)

    threading.Thread(target=watch, daemon=True).start()
    return killed


def _children(match: str, since: float) -> list[psutil.Process]:
    """This test process's descendants started since ``since`` whose command line contains ``match``."""
    found = []
    for child in psutil.Process(os.getpid()).children(recursive=True):
        try:
            if child.create_time() >= since - 1 and match in " ".join(child.cmdline()):
                found.append(child)
        except psutil.Error:
            pass
    return found


def _one_failure_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.startswith("the run failed:")]
    assert len(lines) == 1, stderr
    return lines[0]


@pytest.mark.slow
def test_killing_the_target_mid_run_exits_3_naming_the_second(tmp_path):
    target = subprocess.Popen([sys.executable, "-c", SERVE], stdout=subprocess.PIPE, text=True, cwd=REPO)
    try:
        url = f"http://127.0.0.1:{target.stdout.readline().strip()}"
        path = scenario(
            tmp_path,
            'shape = { kind = "constant", value = 50 }\nduration = "4s"\narrivals = "uniform"\ntimeout = "2s"',
            f'url = "{url}"\n{JSON_ENDPOINT}',
        )
        out = tmp_path / "out"
        killed = _kill_when_answered(out, lambda: target)
        result = loadtest("run", str(path), "--out", str(out), "--no-report", "--threshold", "p99 < 10s")
    finally:
        target.kill()
        target.wait()
    assert result.returncode == ExitCode.RUN_FAILED, result.stderr
    line = _one_failure_line(result.stderr)
    written = json.loads((out / "summary.json").read_text())
    at = written["failure"]["at_s"]
    # The progress file is rewritten once a second, so the kill came up to a second after what it said.
    assert f"the target stopped answering at second {at:g}" in line
    assert int(killed["elapsed"]) <= at <= killed["elapsed"] + 2, (killed, result.stderr)
    assert written["failure"]["reason"] == "target_stopped" and not written["run"]["interrupted"]
    assert written["accounting"]["errors_by_kind"].get("connection", 0) > 0
    assert "no latency knee" not in result.stderr


@pytest.mark.slow
def test_killing_the_embedded_server_mid_run_exits_3(tmp_path):
    path = scenario(
        tmp_path,
        'shape = { kind = "constant", value = 50 }\nduration = "4s"\narrivals = "uniform"\ntimeout = "2s"',
        'profile = "fraud-fp32"\nprotocol = "oip-v2"\nmodel = "fraud"\ninput_name = "features"',
        FEATURES,
    )
    out, since = tmp_path / "out", time.time()
    _kill_when_answered(out, lambda: _children("reference_server", since)[0])
    result = loadtest("run", str(path), "--out", str(out), "--no-report")
    assert result.returncode == ExitCode.RUN_FAILED, result.stderr
    assert "the target stopped answering at second" in _one_failure_line(result.stderr)
    assert json.loads((out / "summary.json").read_text())["failure"]["reason"] == "target_stopped"
    assert not _children("reference_server", since)  # nothing left behind


@pytest.mark.slow
def test_a_lost_worker_is_counted_and_fails_the_run(server, tmp_path):
    path = scenario(
        tmp_path,
        'shape = { kind = "constant", value = 100 }\nduration = "4s"\narrivals = "uniform"',
        f'url = "{server.url}"\n{FRAUD}',
        FEATURES,
    )
    out, since = tmp_path / "out", time.time()

    def a_worker() -> psutil.Process:
        (master,) = [p for p in _children("--loadtest-run", since) if p.parent().pid == os.getpid()]
        return master.children()[-1]

    _kill_when_answered(out, a_worker)
    started = time.monotonic()
    result = loadtest("run", str(path), "--out", str(out), "--no-report", "--processes", "2")
    assert time.monotonic() - started < 20  # no idling to the hard stop
    assert result.returncode == ExitCode.RUN_FAILED, result.stderr
    line = _one_failure_line(result.stderr)
    written = json.loads((out / "summary.json").read_text())
    a, (lost,) = written["accounting"], written["run"]["lost_workers"]
    assert a["scheduled"] == 400  # the intended schedule, all of it
    assert a["lost_worker"] == lost["arrivals"] > 0 and a["unfinished"] == 0
    assert a["scheduled"] == a["ok"] + a["errors"] + a["timeouts"] + a["dropped"] + a["lost_worker"]
    assert f"load-generator worker {lost['worker']} of 2 was lost at second {lost['at_s']:g}" in line
    assert not written["run"]["interrupted"] and written["trust"]["trustworthy"] is False
    assert not _children("--loadtest-run", since)
