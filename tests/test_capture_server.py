"""`reference-server serve --capture`: the real server records the traffic it receives as JSONL."""

from __future__ import annotations

import base64
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import httpx
import orjson
import pytest

from reference_server.launch import running_server

INFER = "/v2/models/minilm/infer"
HELLO = {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": ["hello world"]}]}
TRANSACTION = {"inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 8], "data": [[3.0] * 8]}]}
BINARY = bytes(range(256)) * 3 + b"\xff\xfe\x00"
OVERSIZED = b"x" * 300_000  # over --max-body-bytes 4096


def read_lines(path: Path, expected: int, within: float = 3.0) -> list[dict]:
    """The capture's lines once ``expected`` of them are there (polled: they are flushed every 0.25 s)."""
    deadline = time.monotonic() + within
    while True:
        lines = path.read_bytes().splitlines() if path.exists() else []
        if len(lines) >= expected or time.monotonic() > deadline:
            return [orjson.loads(line) for line in lines]
        time.sleep(0.05)


def epoch(timestamp: str) -> float:
    assert timestamp.endswith("Z") and len(timestamp) == len("2026-11-30T14:03:07.123456Z"), timestamp
    return datetime.fromisoformat(timestamp).timestamp()


def test_each_request_is_one_line_with_its_method_path_headers_body_and_status(models_dir, tmp_path):
    capture = tmp_path / "capture.jsonl"
    args = ["--models-dir", str(models_dir), "--capture", str(capture), "--max-body-bytes", "4096"]
    with running_server(args) as server:
        assert f"capturing all requests to {capture}" in server.log()
        with httpx.Client(base_url=server.url, timeout=30) as client:
            began = time.time()
            sent = [
                client.post(INFER, json=HELLO),
                client.post(
                    INFER + "?trace=1&x=%20y",
                    json=HELLO,
                    headers=[("Authorization", "Bearer sk-secret"), ("X-Tag", "a"), ("X-Tag", "b")],
                ),
                client.post(INFER, content=b'{"inputs": [', headers={"content-type": "application/json"}),
                client.post(INFER, content=BINARY, headers={"content-type": "application/octet-stream"}),
                client.post("/v2/models/nosuch/infer", content=b"not json", headers={"content-type": "text/plain"}),
                client.post(INFER, content=OVERSIZED, headers={"content-type": "application/json"}),
            ]
            for skipped in ("/v2/health/live", "/v2/health/ready", "/metrics"):
                assert client.get(skipped).status_code == 200
            ended = time.time()
        assert [r.status_code for r in sent] == [200, 200, 400, 400, 404, 413]
        assert sent[2].json()["error"]  # malformed traffic is still answered with JSON
        lines = read_lines(capture, len(sent))

    assert len(lines) == len(sent)  # health checks and /metrics are not recorded
    valid, traced, malformed, binary, wrong, oversized = lines
    assert [line["method"] for line in lines] == ["POST"] * 6
    assert [line["status"] for line in lines] == [r.status_code for r in sent]
    paths = [INFER, INFER + "?trace=1&x=%20y", INFER, INFER, "/v2/models/nosuch/infer", INFER]
    assert [line["path"] for line in lines] == paths

    assert valid["body"] == HELLO and "body_base64" not in valid
    assert valid["headers"]["content-type"] == "application/json"
    assert all(name == name.lower() for name in valid["headers"])
    assert traced["headers"]["authorization"] == "Bearer sk-secret"  # as sent: the capture is sensitive
    assert traced["headers"]["x-tag"] == "a, b"
    for line, raw in ((malformed, b'{"inputs": ['), (binary, BINARY), (wrong, b"not json")):
        assert "body" not in line and "body_truncated" not in line
        assert base64.b64decode(line["body_base64"]) == raw  # a body refused unread is still kept whole
    kept = base64.b64decode(oversized["body_base64"])  # kept as far as it was read, and said so
    assert oversized["body_truncated"] is True and len(kept) < len(OVERSIZED) and OVERSIZED.startswith(kept)

    arrivals = [epoch(line["timestamp"]) for line in lines]
    assert arrivals == sorted(arrivals)
    assert began - 0.01 <= arrivals[0] and arrivals[-1] <= ended + 0.01
    assert all(0 < line["duration_ms"] < 30_000 for line in lines)


def test_an_empty_body_writes_no_body_key_and_the_last_request_survives_shutdown(models_dir, tmp_path):
    capture = tmp_path / "capture.jsonl"
    capture.write_bytes(b'{"timestamp": 0, "path": "/earlier"}\n')  # the file is appended to, not replaced
    with running_server(["--models-dir", str(models_dir), "--model", "fraud", "--capture", str(capture)]) as server:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            assert client.get("/v2/models/fraud").status_code == 200
            assert client.post("/v2/models/fraud/infer", json=TRANSACTION).status_code == 200
        assert server.stop() == 0
        earlier, metadata, last = read_lines(capture, 3, within=0)  # no wait: stopping flushed the rest

    assert earlier["path"] == "/earlier"
    assert metadata["method"] == "GET" and "body" not in metadata and "body_base64" not in metadata
    assert last["body"] == TRANSACTION and last["status"] == 200


def sampled_indices(models_dir: Path, capture: Path, requests: int) -> list[int]:
    args = ["--models-dir", str(models_dir), "--model", "fraud", "--capture", str(capture), "--capture-sample", "0.1"]
    with running_server(args) as server:
        assert "capturing a deterministic 0.1 sample" in server.log()
        with httpx.Client(base_url=server.url, timeout=30) as client:
            for i in range(requests):
                response = client.post("/v2/models/fraud/infer", json=TRANSACTION, headers={"x-request-index": str(i)})
                assert response.status_code == 200
    return [int(line["headers"]["x-request-index"]) for line in read_lines(capture, requests, within=0)]


def test_a_capture_sample_records_about_that_fraction_and_the_same_requests_every_run(models_dir, tmp_path):
    requests = 300
    first = sampled_indices(models_dir, tmp_path / "first.jsonl", requests)
    second = sampled_indices(models_dir, tmp_path / "second.jsonl", requests)
    assert 0.05 * requests <= len(first) <= 0.20 * requests
    assert first == second


def serve_command(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "reference_server.cli", "serve", "--port", "0", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("fraction", ["0", "1.5", "-0.1", "nan", "half"])
def test_a_capture_sample_outside_0_to_1_is_refused_naming_the_flag(fraction):
    result = serve_command("--capture", "/tmp/capture.jsonl", "--capture-sample", fraction)
    assert result.returncode == 2
    assert "--capture-sample" in result.stderr and fraction in result.stderr


def test_a_capture_file_in_a_missing_directory_is_refused_naming_the_path(tmp_path):
    target = tmp_path / "missing" / "capture.jsonl"
    result = serve_command("--capture", str(target))
    assert result.returncode == 2
    assert str(target) in result.stderr and "does not exist" in result.stderr
    assert "Traceback" not in result.stderr
    assert not target.parent.exists()
