"""Replay's pure parts: reading captures, restoring order, the schedule, redaction (no servers)."""

from __future__ import annotations

import base64
import json
import tracemalloc
from pathlib import Path

import pytest

from loadtest.errors import ConfigError
from loadtest.replay.readers import BadLine, CapturedRequest, detect_format, read_capture
from loadtest.replay.redact import redact_path, replay_headers, strip_fields, strip_path
from loadtest.replay.schedule import Arrival, ReplaySpec, Requests, Skip, ordered, schedule
from loadtest.traffic.payloads import Payload, PayloadPool
from tests.captures import FEATURES_BODY, ORIGIN, jsonl_line, rfc3339, times_for, write_jsonl


def _requests(items) -> list[CapturedRequest]:
    return [i for i in items if isinstance(i, CapturedRequest)]


def test_jsonl_reads_rfc3339_and_epoch_times_json_and_base64_bodies(tmp_path):
    raw = b"\x00\xffnot json"
    lines = [
        jsonl_line(ORIGIN, FEATURES_BODY, cls="short", headers={"Content-Type": "application/json"}),
        jsonl_line(ORIGIN + 0.25, raw, epoch=True),
        json.dumps({"timestamp": (ORIGIN + 0.5) * 1000, "path": "http://gw.example/v2/x?y=1", "method": "get"}),
        json.dumps({"timestamp": "2025-11-30T10:53:21.5+01:00", "path": "/p"}),
    ]
    capture = tmp_path / "c.jsonl"
    capture.write_text("\n".join(lines) + "\n\n")
    items = list(read_capture(capture))
    assert all(isinstance(i, CapturedRequest) for i in items)
    first, second, third, fourth = items
    assert first.time == pytest.approx(ORIGIN) and first.cls == "short" and first.doc == FEATURES_BODY
    assert first.headers == (("content-type", "application/json"),) and first.method == "POST"
    assert json.loads(first.encoded()) == FEATURES_BODY and first.size == len(first.encoded())
    assert second.body == raw and second.doc is None and second.time == pytest.approx(ORIGIN + 0.25)
    assert third.method == "GET" and third.path == "/v2/x?y=1" and third.time == pytest.approx(ORIGIN + 0.5)
    assert fourth.time == pytest.approx(ORIGIN + 1.5 - 3600) and not fourth.has_body
    assert [i.line for i in items] == [1, 2, 3, 4]


def test_malformed_jsonl_lines_are_reported_by_line_and_reading_goes_on(tmp_path):
    good = jsonl_line(ORIGIN, FEATURES_BODY)
    lines = [
        good,
        '{"timestamp": "2025-11-30T10:53:20Z", "path": "/x", "body": {"a": ',  # truncated
        "[1, 2]",
        json.dumps({"path": "/x"}),
        json.dumps({"timestamp": "yesterday", "path": "/x"}),
        json.dumps({"timestamp": ORIGIN, "path": "no-slash"}),
        json.dumps({"timestamp": ORIGIN, "path": "/x", "method": "DO IT"}),
        json.dumps({"timestamp": ORIGIN, "path": "/x", "body_base64": "***"}),
        json.dumps({"timestamp": ORIGIN, "path": "/x", "headers": "authorization"}),
        b"\xff\xfe".decode("latin-1"),
        good,
    ]
    capture = tmp_path / "c.jsonl"
    capture.write_text("\n".join(lines) + "\n")
    items = list(read_capture(capture, "jsonl"))
    bad = [i for i in items if isinstance(i, BadLine)]
    assert [b.line for b in bad] == list(range(2, 11))
    assert "not valid JSON" in bad[0].reason and "JSON object" in bad[1].reason and "timestamp" in bad[2].reason
    assert [i.line for i in _requests(items)] == [1, 11]


def test_combined_logs_spread_each_second_and_subtract_the_request_time(tmp_path):
    log = tmp_path / "access.log"
    log.write_text(
        '127.0.0.1 - - [30/Nov/2025:10:53:20 +0000] "POST /v2/models/fraud/infer HTTP/1.1" 200 120 "-" "curl/8" 0.100\n'
        '127.0.0.1 - - [30/Nov/2025:10:53:20 +0000] "POST /v2/models/fraud/infer HTTP/1.1" 200 120 "-" "curl/8" 0.000\n'
        "garbage line\n"
        '127.0.0.1 - - [30/Nov/2025:10:53:21 +0000] "GET /v2/health/ready HTTP/1.1" 200 0 "-" "curl/8" 0.001\n'
    )
    assert detect_format(log) == "combined"
    items = list(read_capture(log))
    reqs = _requests(items)
    assert [r.time - ORIGIN for r in reqs] == pytest.approx([0.25 - 0.1, 0.75, 1.5 - 0.001])
    assert not reqs[0].has_body and reqs[2].method == "GET"
    assert [b.line for b in items if isinstance(b, BadLine)] == [3]
    started = _requests(read_capture(log, log_time="start"))
    assert [r.time - ORIGIN for r in started] == pytest.approx([0.25, 0.75, 1.5])


def _har(entries: list[dict]) -> str:
    return json.dumps({"log": {"version": "1.2", "creator": {"name": "t"}, "entries": entries}}, indent=2)


def _entry(t: float, text: str | None = None, encoding: str | None = None) -> dict:
    request = {
        "method": "POST",
        "url": "http://127.0.0.1:8000/v2/models/fraud/infer?debug=1",
        "headers": [{"name": "Content-Type", "value": "application/json"}, {"name": ":authority", "value": "x"}],
    }
    if text is not None:
        request["postData"] = {
            "mimeType": "application/json",
            "text": text,
            **({"encoding": encoding} if encoding else {}),
        }
    return {"startedDateTime": rfc3339(t), "request": request, "_class": "features"}


def test_har_entries_stream_with_bodies_and_a_truncated_har_reports_where_it_broke(tmp_path):
    body = json.dumps(FEATURES_BODY)
    har = tmp_path / "c.har"
    har.write_text(
        _har(
            [
                _entry(ORIGIN, body),
                _entry(ORIGIN + 1, base64.b64encode(b"\x01\x02").decode(), "base64"),
                {"startedDateTime": "x"},
            ]
        )
    )
    assert detect_format(har) == "har"
    items = list(read_capture(har))
    first, second, bad = items
    assert first.doc == FEATURES_BODY and first.path == "/v2/models/fraud/infer?debug=1" and first.cls == "features"
    assert first.headers == (("content-type", "application/json"),)  # HTTP/2 pseudo-headers dropped
    assert second.body == b"\x01\x02" and second.time == pytest.approx(ORIGIN + 1)
    assert isinstance(bad, BadLine) and bad.line == 3 and "entry 3" in bad.reason
    # Detected as HAR by content, too, and a cut-off file still yields what came before the cut.
    cut = tmp_path / "cut.json"
    cut.write_text(har.read_text()[: har.read_text().index('"startedDateTime": "x"')])
    assert detect_format(cut) == "har"
    items = list(read_capture(cut))
    assert len(_requests(items)) == 2 and isinstance(items[-1], BadLine) and "not valid JSON" in items[-1].reason


def test_formats_are_told_apart_and_an_unknown_one_is_one_clear_error(tmp_path):
    jsonl = write_jsonl(tmp_path / "a.log", times_for([2]))
    assert detect_format(jsonl) == "jsonl"
    odd = tmp_path / "odd.txt"
    odd.write_text("hello there\n")
    with pytest.raises(ConfigError, match=r"odd.txt: cannot tell the capture's format.*--format"):
        detect_format(odd)
    with pytest.raises(ConfigError, match="capture file not found"):
        list(read_capture(tmp_path / "missing.jsonl"))


def _req(line: int, t: float) -> CapturedRequest:
    return CapturedRequest(line, t, "POST", "/x")


def test_out_of_order_requests_are_restored_within_the_window_and_skipped_beyond_it():
    items = [_req(1, 10.0), _req(2, 12.0), _req(3, 11.0), _req(4, 20.0), _req(5, 11.5), _req(6, 21.0)]
    out = list(ordered(iter(items), window=5.0))
    kept = [i for i in out if isinstance(i, CapturedRequest)]
    skipped = [i for i in out if isinstance(i, Skip)]
    assert [r.line for r in kept] == [1, 3, 2, 4, 6]  # 11.0 came back in order; 11.5 came after 12.0 was sent
    assert [(s.reason, s.line) for s in skipped] == [("out_of_order", 5)]
    assert [r.line for r in ordered(iter(items), window=10.0) if isinstance(r, CapturedRequest)] == [1, 3, 5, 2, 4, 6]


def _arrivals(spec: ReplaySpec) -> list[Arrival]:
    return [a for a in schedule(spec) if isinstance(a, Arrival)]


def test_speed_divides_the_gaps_and_loops_follow_one_another(tmp_path):
    capture = write_jsonl(tmp_path / "c.jsonl", times_for([4, 4]))
    one = _arrivals(ReplaySpec(str(capture)))
    fast = _arrivals(ReplaySpec(str(capture), speed=4.0, loops=2, loop_length=0.5))
    assert [a.offset for a in one] == pytest.approx([0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75])
    assert [a.offset for a in fast] == pytest.approx([i / 16 for i in range(8)] + [0.5 + i / 16 for i in range(8)])
    assert [a.index for a in fast] == list(range(16)) and {a.loop for a in fast} == {0, 1}


def test_a_window_keeps_part_of_the_capture_measured_from_its_first_request(tmp_path):
    capture = write_jsonl(tmp_path / "c.jsonl", times_for([10] * 10))
    spec = ReplaySpec(str(capture), window_start=2.0, window_end=5.0)
    items = list(schedule(spec))
    arrivals = [a for a in items if isinstance(a, Arrival)]
    assert len(arrivals) == 30 and arrivals[0].offset == pytest.approx(0.0)  # 2 s after the first request
    assert sum(1 for s in items if isinstance(s, Skip) and s.reason == "outside_window") == 20


def test_max_rate_caps_the_sends_and_counts_what_it_skips(tmp_path):
    capture = write_jsonl(tmp_path / "c.jsonl", times_for([100] * 5))
    items = list(schedule(ReplaySpec(str(capture), max_rate=40.0)))
    sent = [a for a in items if isinstance(a, Arrival)]
    skipped = [s for s in items if isinstance(s, Skip)]
    assert {s.reason for s in skipped} == {"over_max_rate"}
    assert len(sent) + len(skipped) == 500
    assert 40 * 5 - 5 <= len(sent) <= 40 * 5 + 5
    for second in range(5):
        assert sum(1 for a in sent if int(a.offset) == second) <= 40 + 4  # the burst is a tenth of a second


def test_workers_split_the_capture_and_keep_its_global_order(tmp_path):
    capture = write_jsonl(tmp_path / "c.jsonl", times_for([7, 13, 5]))
    everything = _arrivals(ReplaySpec(str(capture)))
    shares = [[a for a in everything if a.index % 2 == w] for w in range(2)]
    merged = sorted((a for share in shares for a in share), key=lambda a: a.index)
    assert [a.offset for a in merged] == sorted(a.offset for a in everything)
    assert len(shares[0]) + len(shares[1]) == len(everything) == 25


def test_secret_headers_query_parameters_and_body_fields_are_stripped_unless_asked_for():
    headers = (
        ("authorization", "Bearer tok"),
        ("cookie", "s=tok"),
        ("x-api-key", "tok"),
        ("x-trace", "keep"),
        ("content-length", "10"),
        ("x-tenant", "tok"),
    )
    assert replay_headers(headers, send_secrets=False) == {"x-trace": "keep", "x-tenant": "tok"}
    assert set(replay_headers(headers, send_secrets=True)) == {
        "authorization",
        "cookie",
        "x-api-key",
        "x-trace",
        "x-tenant",
    }
    assert strip_path("/p?api_key=tok&q=1") == "/p?q=1" and strip_path("/p?token=tok") == "/p"
    assert redact_path("/p?access_token=tok&q=1") == "/p?access_token=REDACTED&q=1"
    body = {"inputs": [{"data": [1]}], "user": {"password": "tok", "name": "n"}, "apiKey": "tok"}
    assert strip_fields(body) == {"inputs": [{"data": [1]}], "user": {"name": "n"}}

    pool = PayloadPool({"pooled": [Payload("pooled", b"{}")]}, {"pooled": 1.0}, seed=1)
    request = CapturedRequest(1, 0.0, "POST", "/v2/x?token=tok", headers, json.dumps(body).encode(), body)
    spec = ReplaySpec("c.jsonl", redact=("x-tenant", "name"))
    payload = Requests(spec, pool).payload(Arrival(0, 0.0, request))
    assert b"tok" not in payload.body and payload.path == "/v2/x" and "x-tenant" not in payload.headers
    assert json.loads(payload.body) == {"inputs": [{"data": [1]}], "user": {}}
    assert payload.cls == "/v2/x"  # named by the path without its query
    sent = Requests(ReplaySpec("c.jsonl", send_secrets=True), pool).payload(Arrival(0, 0.0, request))
    assert sent.body == request.body and sent.headers["authorization"] == "Bearer tok"
    assert sent.cls == "/v2/x"  # even when secrets are sent, no query string is written as a class name


def test_requests_without_a_body_draw_one_from_the_pool_for_their_path():
    default = PayloadPool({"short": [Payload("short", b'{"d": 1}')]}, {"short": 1.0}, seed=1)
    special = PayloadPool({"big": [Payload("big", b'{"d": 2}')]}, {"big": 1.0}, seed=1)
    requests = Requests(ReplaySpec("c.log"), default, {"/special": special})
    assert requests.payload(Arrival(0, 0.0, _req(1, 0.0))).body == b'{"d": 1}'
    pooled = requests.payload(Arrival(1, 0.0, CapturedRequest(2, 0.0, "POST", "/special?x=1")))
    assert pooled.body == b'{"d": 2}' and pooled.cls == "big"
    get = requests.payload(Arrival(2, 0.0, CapturedRequest(3, 0.0, "GET", "/v2/health/ready")))
    assert get.body == b"" and get.cls == "GET:/v2/health/ready"


def test_reading_a_large_capture_streams_in_constant_memory(tmp_path):
    """30 MB of capture through the whole schedule: the peak of Python allocations stays small."""
    capture = tmp_path / "big.jsonl"
    text = "x" * 2000
    body = {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": [text]}]}
    with capture.open("w") as f:
        for i in range(15000):
            f.write(jsonl_line(ORIGIN + i / 1000, body) + "\n")
    assert capture.stat().st_size > 30e6
    tracemalloc.start()
    count = sum(1 for a in schedule(ReplaySpec(str(capture), reorder_window=1.0)) if isinstance(a, Arrival))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert count == 15000
    # The reorder window holds 1 s of capture (1,000 requests of ~2 KB): a few MB, not the file's 30.
    assert peak < 8e6, f"peak {peak / 1e6:.1f} MB"


def test_a_capture_path_is_checked_before_anything_runs(tmp_path):
    with pytest.raises(ConfigError, match="capture file not found"):
        list(schedule(ReplaySpec(str(Path(tmp_path) / "nope.jsonl"))))


def test_the_shipped_capture_is_a_real_poisson_day_of_minilm_traffic():
    """The shipped capture: what `serve --capture` recorded of `loadtest run scenarios/diurnal.toml`."""
    from loadtest.replay.describe import describe_capture

    capture = Path(__file__).resolve().parents[1] / "scenarios" / "captures" / "diurnal-minilm.jsonl"
    description = describe_capture(read_capture(capture), 10.0)
    assert description.requests == 1057 and description.bad_lines == 0
    assert 0.9 <= description.cv_rescaled <= 1.1 < description.cv_interarrival  # Poisson under a daily cycle
    assert 1.5 < description.peak_to_mean < 2.5  # 2 to 16 req/s: 16 / 9 = 1.78, with Poisson noise in 10 s buckets


def test_a_captured_chat_request_keeps_its_prompt_and_max_tokens():
    pool = PayloadPool({"pooled": [Payload("pooled", b"{}")]}, {"pooled": 1.0}, seed=1)
    chat = [{"role": "user", "content": "Summarise this."}]
    body = {"model": "m", "messages": chat, "max_tokens": 96, "min_tokens": 8, "stream": True, "api_token": "t"}
    request = CapturedRequest(1, 0.0, "POST", "/v1/chat/completions", {}, json.dumps(body).encode(), body)
    payload = Requests(ReplaySpec("c.jsonl"), pool).payload(Arrival(0, 0.0, request))
    sent = {k: v for k, v in body.items() if k != "api_token"}  # a count of tokens is no credential; a token is
    assert json.loads(payload.body) == sent and payload.max_tokens == 96  # the tokens it asked for are counted
    newer = {**body, "max_completion_tokens": 12}
    del newer["max_tokens"]
    request = CapturedRequest(2, 0.0, "POST", "/v1/chat/completions", {}, json.dumps(newer).encode(), newer)
    assert Requests(ReplaySpec("c.jsonl"), pool).payload(Arrival(1, 0.0, request)).max_tokens == 12
