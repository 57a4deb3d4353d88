"""Real replays: `loadtest replay` as a user runs it, Locust and all, against real servers on loopback."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from tests.captures import (
    FEATURES_BODY,
    ORIGIN,
    diurnal_with_spike,
    jsonl_line,
    rfc3339,
    times_for,
    write_jsonl,
)
from tests.helpers import loadtest
from tests.servers import recording

# A compressed day with a spike, for the capture profile: 40 s from 40 to 120 req/s and back, 200 req/s
# in seconds 28-29.
RATES = diurnal_with_spike(40, 40, 120, 200, 28, 2)
# The same day in half the time for the real-time replays: 20 s, 200 req/s in seconds 14-15.
SHORT_DAY = diurnal_with_spike(20, 40, 120, 200, 14, 2)
TOKEN = "tok-5f3a9c1e7d"  # planted in headers, query and bodies; must never be written anywhere


@pytest.fixture(scope="module")
def diurnal_capture(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("capture") / "diurnal.jsonl"
    return write_jsonl(path, times_for(RATES, phase=0.0))  # the first request on a second: seconds align


@pytest.fixture(scope="module")
def short_day_capture(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("capture") / "short-day.jsonl"
    return write_jsonl(path, times_for(SHORT_DAY, phase=0.0))


def _replay_ok(*args: str) -> dict:
    result = loadtest("replay", *args)
    assert result.returncode == 0, result.stdout + result.stderr
    out = Path(args[args.index("--out") + 1])
    return json.loads((out / "summary.json").read_text())


@pytest.mark.slow
# At 4x (5 s, 160-800 req/s) by two processes merging, the harder case; the speed only divides the gaps
# (tests/test_replay.py), so real time or 2x is not run here: 20 s or 10 s for nothing more. One process
# sends a schedule as punctually (tests/test_run.py, 500 req/s) and replays other captures below.
@pytest.mark.parametrize("speed,processes", [(4, 2)])
def test_a_diurnal_capture_with_a_spike_replays_at_its_own_rate(short_day_capture, tmp_path, speed, processes):
    out = tmp_path / "out"
    summary = _replay_ok(
        str(short_day_capture),
        "--profile",
        "fraud-fp32",
        "--speed",
        str(speed),
        "--no-report",
        "--processes",
        str(processes),
        "--out",
        str(out),
    )
    # The captured rate, scaled: replay second k holds captured seconds k*speed .. (k+1)*speed.
    captured = [sum(SHORT_DAY[k * speed : (k + 1) * speed]) for k in range(len(SHORT_DAY) // speed)]
    timeline = pd.read_csv(out / "timeline.csv").set_index("second")
    sent = [int(timeline["sent"].get(k, 0)) for k in range(len(captured))]
    within = [abs(s - c) <= 0.02 * c for s, c in zip(sent, captured, strict=True)]
    assert sum(within) >= 0.95 * len(captured), list(zip(captured, sent, strict=True))
    a = summary["accounting"]
    assert a["scheduled"] == sum(SHORT_DAY) and a["balanced"] and a["ok"] == sum(SHORT_DAY)
    fidelity = summary["replay"]["fidelity"]
    assert fidelity["share_within"] >= 0.95 and fidelity["intended_total"] == sum(SHORT_DAY)
    assert summary["replay"]["requests_per_pass"] == sum(SHORT_DAY) and summary["run"]["processes"] == processes
    assert summary["load"]["shape"]["kind"] == "replay" and summary["load"]["duration_s"] == pytest.approx(
        len(SHORT_DAY) / speed, abs=0.05
    )
    assert "lateness" in summary["latency_ms"]


def _hostile_capture(capture: Path) -> tuple[Path, list[int]]:
    """Requests carrying a token in every place a secret hides, with malformed lines among them."""
    secret_headers = {
        "Authorization": f"Bearer {TOKEN}",
        "Cookie": f"session={TOKEN}",
        "X-Api-Key": TOKEN,
        "X-Request-Id": "r1",
    }
    body = {**FEATURES_BODY, "api_key": TOKEN, "user": {"password": TOKEN}}
    lines, bad = [], []
    for i, t in enumerate(times_for([20] * 3)):
        if i in (5, 17, 33):
            bad.append(len(lines) + 1)
            lines.append(f'{{"timestamp": "{rfc3339(t)}", "path": "/v2/models/fraud/infer", "body": {{"k": "{TOKEN}"')
            continue
        path = f"/v2/models/fraud/infer?access_token={TOKEN}" if i % 2 else "/v2/models/fraud/infer"
        lines.append(jsonl_line(t, body, path=path, headers=secret_headers, cls="scored"))
    lines.append("not json at all " + TOKEN)
    bad.append(len(lines))
    capture.write_text("\n".join(lines) + "\n")
    return capture, bad


def _files_with(directory: Path, needle: str) -> list[str]:
    return [str(p) for p in directory.rglob("*") if p.is_file() and needle.encode() in p.read_bytes()]


def harness_own(request: tuple) -> bool:
    """The harness's own reads of the target: the reachability probe and the sampler's ``/metrics``."""
    return request[:2] in (("GET", "/"), ("GET", "/metrics"))


@pytest.mark.slow
@pytest.mark.parametrize("send_secrets", [False, True])
def test_secrets_never_reach_the_results_and_reach_the_target_only_when_asked(tmp_path, send_secrets):
    capture, bad = _hostile_capture(tmp_path / "hostile.jsonl")
    out = tmp_path / "out"
    with recording() as (url, seen):
        summary = _replay_ok(
            str(capture),
            "--target",
            url,
            "--speed",
            "4",
            "--out",
            str(out),
            *(["--send-secrets"] if send_secrets else []),
        )
    replayed = [s for s in seen if not harness_own(s)]
    assert len(replayed) == 57 and summary["accounting"]["ok"] == 57
    assert _files_with(out, TOKEN) == []  # nothing under the results directory holds the token
    assert (out / "report.html").exists() and (out / "locust.log").exists()
    carried = [s for s in replayed if TOKEN in json.dumps(s[2]) or TOKEN in s[1] or TOKEN.encode() in s[3]]
    if send_secrets:
        assert len(carried) == 57 and all(s[2].get("authorization") == f"Bearer {TOKEN}" for s in replayed)
    else:
        assert carried == []
        assert all(s[2].get("x-request-id") == "r1" and "authorization" not in s[2] for s in replayed)
        assert json.loads(replayed[0][3])["inputs"] == FEATURES_BODY["inputs"]
    # Each malformed line is skipped, counted and listed with its number; the rest replayed.
    malformed = summary["replay"]["skipped"]["malformed"]
    assert malformed["count"] == 4 and [x["line"] for x in malformed["lines"]] == bad
    report = (out / "report.md").read_text()
    assert "Skipped requests" in report and all(f"{n} (" in report for n in bad)
    assert summary["classes"] == ["scored"]


@pytest.mark.slow
def test_combined_logs_and_har_replay_through_the_same_engine(tmp_path):
    log = tmp_path / "access.log"
    stamp = "30/Nov/2025:10:53:{:02d} +0000"
    log.write_text(
        "".join(
            f'127.0.0.1 - - [{stamp.format(20 + s)}] "POST /v2/models/fraud/infer HTTP/1.1" 200 99 "-" "c" 0.002\n'
            for s in range(3)
            for _ in range(10)
        )
        + f'127.0.0.1 - - [{stamp.format(23)}] "GET /v2/models/fraud HTTP/1.1" 200 99 "-" "c" 0.001\n'
    )
    bodies = tmp_path / "bodies.jsonl"
    bodies.write_text(json.dumps({"body": FEATURES_BODY, "class": "pooled"}) + "\n")
    entries = [
        {
            "startedDateTime": rfc3339(ORIGIN + i * 0.1),
            "request": {
                "method": "POST",
                "url": "http://prod.example/v2/models/fraud/infer",
                "headers": [{"name": "Content-Type", "value": "application/json"}],
                "postData": {"mimeType": "application/json", "text": json.dumps(FEATURES_BODY)},
            },
        }
        for i in range(12)
    ]
    har = tmp_path / "session.har"
    har.write_text(json.dumps({"log": {"version": "1.2", "entries": entries}}))
    with recording() as (url, seen):
        logged = _replay_ok(
            str(log),
            "--target",
            url,
            "--speed",
            "4",
            "--no-report",
            "--pool",
            f"/v2/models/fraud/infer={bodies}",
            "--out",
            str(tmp_path / "log"),
        )
        from_log = [s for s in seen if not harness_own(s)]
        seen.clear()
        harred = _replay_ok(str(har), "--target", url, "--speed", "2", "--no-report", "--out", str(tmp_path / "har"))
        from_har = [s for s in seen if not harness_own(s)]
    assert logged["replay"]["format"] == "combined" and logged["accounting"]["ok"] == 31
    assert sorted(logged["classes"]) == ["GET:/v2/models/fraud", "pooled"]
    assert [json.loads(s[3]) for s in from_log if s[0] == "POST"] == [FEATURES_BODY] * 30
    assert harred["replay"]["format"] == "har" and harred["accounting"]["ok"] == 12
    assert all(s[1] == "/v2/models/fraud/infer" and json.loads(s[3]) == FEATURES_BODY for s in from_har)


@pytest.mark.parametrize(
    "args,message",
    [
        (["missing.jsonl"], "missing.jsonl: capture file not found"),
        (["{capture}", "--window", "5m..1m"], "--window: the end must come after the start"),
        (["{capture}", "--speed", "0"], "--speed: must be above 0"),
        (["{capture}", "--fit-scenario", "x.toml"], "--fit-scenario: goes with --profile-only"),
        (["{bad}"], "holds no request to replay (skipped: 2 malformed)"),
    ],
)
def test_bad_replay_input_gets_one_line_and_exit_2(tmp_path, args, message):
    capture = write_jsonl(tmp_path / "c.jsonl", times_for([3]))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"timestamp": 1}\n{"nope\n')
    args = [a.format(capture=capture, bad=bad) for a in args]
    result = loadtest("replay", *args, "--target", "http://127.0.0.1:9", "--out", str(tmp_path / "out"))
    assert result.returncode == 2, result.stdout + result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr


def test_the_capture_profile_recovers_the_known_shape_and_feeds_cost_and_a_fitted_scenario(diurnal_capture, tmp_path):
    capture = tmp_path / "with-bad.jsonl"
    capture.write_text(diurnal_capture.read_text() + "{broken\n" + "\n" + '{"path": "/x"}\n')
    out, fitted = tmp_path / "profile", tmp_path / "fitted.toml"
    result = loadtest("replay", str(capture), "--profile-only", "--fit-scenario", str(fitted), "--out", str(out))
    assert result.returncode == 0, result.stdout + result.stderr
    profile = json.loads((out / "capture-profile.json").read_text())
    known = max(RATES) / (sum(RATES) / len(RATES))
    assert profile["rate"]["peak_to_mean"] == pytest.approx(known, rel=0.05)
    assert profile["requests"] == sum(RATES) and profile["bad_lines"] == 2
    assert profile["malformed_share"] == pytest.approx(2 / (sum(RATES) + 2))
    assert "2.34x the mean" in result.stderr and "bad line 3423" in result.stderr
    # The profile is the forecast of the cost projection, as it stands.
    cost = loadtest(
        "cost",
        "--managed",
        "example-openai-embeddings",
        "--forecast",
        str(out / "forecast.toml"),
        "--out",
        str(tmp_path / "cost"),
    )
    assert cost.returncode == 0, cost.stdout + cost.stderr
    forecast = json.loads((tmp_path / "cost" / "cost.json").read_text())["forecast"]
    assert forecast["mean_rps"] == pytest.approx(sum(RATES) / len(RATES)) and forecast["peak_factor"] == pytest.approx(
        known
    )
    # The fitted scenario is a real scenario with the capture's length and volume.
    from loadtest.config.scenario import load_scenario
    from loadtest.traffic.arrivals import expected_count

    scenario = load_scenario(fitted)
    assert scenario.load.duration == pytest.approx(len(RATES))
    assert expected_count(scenario.load.shape, scenario.load.duration) == pytest.approx(sum(RATES), rel=0.03)
