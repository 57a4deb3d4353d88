"""The real server against hostile clients: no request holds up the others, none gets a 5xx, clients that
stall are cut off, and captures are private to their owner.

Most tests use the session's server (minilm and fraud, default limits); the rest share one started
with ``--long-text reject``, ``--capture`` and a 1 s header timeout.
"""

from __future__ import annotations

import http.client
import os
import re
import select
import socket
import stat
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import httpx
import orjson
import pytest
from tokenizers import Tokenizer

from reference_server.capture import loose_mode, open_capture_file
from reference_server.launch import RunningServer, start_server
from reference_server.tokens import TruncatingTokenizer
from tests.fuzz_bodies import cases

INFER = "/v2/models/minilm/infer"
MIB = 1024 * 1024
PROSE = "The quick brown fox jumps over the lazy dog, and keeps running until the evening comes. "
HEADER_TIMEOUT = 1.0  # seconds, for the hardened server; the default is 5
HEALTH_BOUND = 0.5  # seconds: the target is 100 ms, but this machine is shared; before the fix: 6.8 s


def prose(chars: int) -> str:
    return (PROSE * (chars // len(PROSE) + 1))[:chars]


def text_request(texts: list[str], binary_output: bool = False) -> dict:
    doc: dict = {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [len(texts)], "data": texts}]}
    if binary_output:
        doc["outputs"] = [{"name": "embedding", "parameters": {"binary_data": True}}]
    return doc


def embedding_bytes(client: httpx.Client, texts: list[str]) -> bytes:
    """The embeddings' exact float32 bytes (the binary tensor data extension: no decimal round trip)."""
    response = client.post(INFER, json=text_request(texts, binary_output=True))
    assert response.status_code == 200, response.text
    split = int(response.headers["inference-header-content-length"])
    return response.content[split:]


class HealthPoller:
    """``GET /v2/health/live`` every 10 ms on a keep-alive connection of its own, on a thread, until stopped."""

    def __init__(self, url: str) -> None:
        self.url, self.seconds, self.failures = url, [], []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def __enter__(self) -> HealthPoller:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self.seconds and time.monotonic() < deadline:  # polling, before the request under test
            time.sleep(0.005)
        return self

    def __exit__(self, *_) -> None:
        self._stop.set()
        self._thread.join()

    def _poll(self) -> None:
        with httpx.Client(base_url=self.url, timeout=60) as client:
            while not self._stop.is_set():
                started = time.perf_counter()
                try:
                    status = client.get("/v2/health/live").status_code
                except httpx.HTTPError as exc:
                    status = repr(exc)
                self.seconds.append(time.perf_counter() - started)
                if status != 200:
                    self.failures.append(status)
                time.sleep(0.01)


# -- 1. one request must not freeze the server -----------------------------------------------------


def test_health_answers_fast_while_an_8_mib_text_is_embedded(server):
    # One text filling the 8 MiB body: it was tokenised whole on the event loop (7.9 MB: 9 s, health
    # waiting as long); now only its first 4,096 characters are read, on a worker thread.
    body = orjson.dumps(text_request([prose(8 * MIB - 200)]))
    assert len(body) <= 8 * MIB
    with HealthPoller(server.url) as health, httpx.Client(base_url=server.url, timeout=60) as client:
        started = time.perf_counter()
        response = client.post(INFER, content=body, headers={"content-type": "application/json"})
        took = time.perf_counter() - started
    assert response.status_code == 200 and response.json()["outputs"][0]["shape"] == [1, 384]
    assert health.failures == [] and len(health.seconds) > 1
    assert max(health.seconds) < HEALTH_BOUND, f"health took {max(health.seconds):.3f} s; the request {took:.2f} s"
    assert took < 3, f"an 8 MiB text took {took:.2f} s"


@pytest.mark.parametrize("route", ["oip", "openai"])
def test_a_row_count_over_the_limit_is_refused_before_any_row_is_read(client, route):
    # 130,000 texts: before, each was tokenised before the row limit was checked (1M took 6.8 s).
    texts = ["hello world"] * 130_000
    path, doc = (INFER, text_request(texts)) if route == "oip" else ("/v1/embeddings", {"input": texts})
    started = time.perf_counter()
    response = client.post(path, content=orjson.dumps(doc), headers={"content-type": "application/json"})
    took = time.perf_counter() - started
    assert response.status_code == 400
    assert "130000 rows" in response.text and "at most 128" in response.text
    assert took < HEALTH_BOUND, f"refusing took {took:.2f} s"


def old_truncation(tokenizer: Tokenizer, text: str, max_tokens: int = 256) -> list[int]:
    """What the server did before it read texts in prefixes: tokenise the whole text, then truncate."""
    ids = tokenizer.encode(text).ids
    return ids if len(ids) <= max_tokens else [*ids[: max_tokens - 1], tokenizer.token_to_id("[SEP]")]


@pytest.fixture(scope="module")
def tokenizer(models_dir) -> Tokenizer:
    loaded = Tokenizer.from_file(str(models_dir / "minilm" / "tokenizer.json"))
    loaded.no_truncation()
    loaded.no_padding()
    return loaded


def long_texts() -> list[str]:
    """Texts over 256 tokens of every kind the prefix reading must get right, cuts inside words included."""
    words = ["unbelievably", "tokenisation", "a", "ok", "naïve", "İstanbul", "straße", "ﬁle", "漢字", "😀", "x" * 100]
    texts = [
        prose(40_000),  # settled by the first read
        " ".join(words * 60),
        "漢" * 3000,
        ("word" + " " * 60) * 320,  # few tokens a character: the second read decides, whole
        " " * 5000 + prose(25_000),  # the first read holds no token; the second proves the text long
        ("x" * 101 + " ") * 300,  # words over 100 characters: one [UNK] each
        "cafe\u0301 " * 1000,  # combining accents, stripped
        "a\x01b\tc\n" * 2000,  # control characters, removed
    ]
    for shift in range(-6, 7, 3):  # a word across each read's boundary
        texts.append("ab " * 10 + " " * (4096 - 30 + shift) + "internationalization " * 300)
        texts.append(" " * (25_856 - 5 + shift) + "internationalization " * 300)
    return texts


def test_prefix_reading_gives_the_same_token_ids_as_tokenising_the_whole_text(tokenizer):
    truncating = TruncatingTokenizer(tokenizer, 256)
    for text, encoded in zip(long_texts(), truncating.encode(long_texts()), strict=True):
        assert len(tokenizer.encode(text).ids) > 256
        if encoded.exact:
            assert encoded.ids == old_truncation(tokenizer, text) and encoded.exceeds
        else:  # over the read limit with too few tokens in it: embedded as its first 25,856 characters
            assert encoded.ids == old_truncation(tokenizer, text[: truncating.read_limit])


def test_a_long_text_embeds_bit_for_bit_as_before(client, tokenizer):
    # Before, a text was tokenised whole and cut to 256 tokens. Its first 254 tokens after [CLS] are
    # exactly the tokens of the prefix up to the 254th token's end: embedding that prefix alone is
    # what the server did for the whole text.
    texts = [prose(40_000), ("word" + " " * 60) * 320, " " * 5000 + prose(25_000), "漢" * 3000]
    prefixes = []
    for text in texts:
        end = tokenizer.encode(text).offsets[254][1]
        prefixes.append(text[:end])
        assert tokenizer.encode(prefixes[-1]).ids == old_truncation(tokenizer, text)
    assert embedding_bytes(client, texts) == embedding_bytes(client, prefixes)


# -- 3. every malformed body is a 4xx with a JSON error, and the connection stays up ----------------

FUZZ_SEED, FUZZ_CASES = 20261203, 10_000


def test_ten_thousand_generated_malformed_requests_get_a_4xx_never_a_5xx_or_a_reset(server, client):
    fixed = embedding_bytes(client, ["a sentence to compare before and after"])
    generated = list(enumerate(cases(FUZZ_SEED, FUZZ_CASES)))
    host, port = httpx.URL(server.url).host, httpx.URL(server.url).port
    statuses: Counter = Counter()
    problems: list[str] = []

    def send_all(share: list) -> None:
        """One keep-alive connection (http.client: half httpx's cost a request); a reset is a problem, not a retry."""
        connection = http.client.HTTPConnection(host, port, timeout=30)
        try:
            for index, case in share:
                try:
                    connection.request("POST", case.path, body=case.content, headers=case.headers)
                    response = connection.getresponse()
                    body = response.read()
                except (OSError, http.client.HTTPException) as exc:  # a reset connection, say
                    problems.append(f"case {index}: {exc!r}")
                    connection.close()
                    continue
                statuses[response.status] += 1
                if response.status >= 500 or (response.status >= 400 and "error" not in orjson.loads(body)):
                    answer = f"{response.status} {body[:200]!r}"
                    problems.append(f"case {index}: {answer} for {case.path} {case.content[:200]!r}")
        finally:
            connection.close()

    with ThreadPoolExecutor(2) as pool:  # two connections: client and server overlap
        list(pool.map(send_all, [generated[0::2], generated[1::2]]))
    assert problems == [], problems[:10]
    assert sum(statuses.values()) == FUZZ_CASES and statuses[400] > FUZZ_CASES // 2, statuses
    assert client.get("/v2/health/live").json() == {"live": True}
    assert embedding_bytes(client, ["a sentence to compare before and after"]) == fixed
    assert "Exception in ASGI application" not in server.log()


# -- the hardened server: --long-text reject, --capture, a 1 s header timeout ----------------------


@pytest.fixture(scope="module")
def hardened(models_dir, tmp_path_factory):
    capture = tmp_path_factory.mktemp("capture") / "capture.jsonl"
    args = ["--models-dir", str(models_dir), "--long-text", "reject", "--capture", str(capture)]
    args += ["--header-timeout", f"{HEADER_TIMEOUT}s"]
    umask = os.umask(0o022)  # the usual umask, which the server inherits: open() would create the file 0644
    try:
        server = start_server(args)
    finally:
        os.umask(umask)
    try:
        yield server, capture
    finally:
        server.stop()


def test_with_long_text_reject_every_text_over_the_limit_is_still_refused(hardened, tokenizer):
    server, _ = hardened
    exactly = "hello " * 254  # [CLS] + 254 + [SEP]: 256 tokens
    assert len(tokenizer.encode(exactly).ids) == 256
    refused = {
        "hello " * 255: "is 257 tokens",  # read whole: the exact count
        prose(100_000): "is over 256 tokens",  # its first 4,096 characters prove it
        " " * 5000 + prose(25_000): "is over 256 tokens",  # its first 25,856 do
        ("word" + " " * 116) * 250: "reads at most 25856",  # too few tokens in its first 25,856 to know
    }
    with httpx.Client(base_url=server.url, timeout=30) as client:
        assert client.post(INFER, json=text_request(["short", exactly])).status_code == 200
        for text, reason in refused.items():
            response = client.post(INFER, json=text_request(["short", text]))
            assert response.status_code == 400 and "text row 1" in response.text and reason in response.text


# -- 4. clients that stall or leave ----------------------------------------------------------------


def connect(server: RunningServer) -> socket.socket:
    host, port = server.url.removeprefix("http://").rsplit(":", 1)
    return socket.create_connection((host, int(port)), timeout=10)


def read_to_end(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def test_a_connection_whose_headers_never_finish_is_answered_408_and_closed(hardened):
    server, _ = hardened
    silent, partial, slow = connect(server), connect(server), connect(server)
    began = time.monotonic()
    partial.sendall(b"POST /v2/models/minilm/infer HTTP/1.1\r\nHost: test\r\nContent-Le")
    slow.sendall(b"GET /v2/health/live HTTP/1.1\r\n")
    line = 0
    while not select.select([slow], [], [], 0.2)[0]:  # a header line every 0.2 s does not extend the deadline
        assert time.monotonic() - began < HEADER_TIMEOUT + 2, "the slow client was never cut off"
        try:
            slow.sendall(b"X-Slow-%d: y\r\n" % line)
        except OSError:
            break
        line += 1
    cut_after = time.monotonic() - began
    assert HEADER_TIMEOUT - 0.1 < cut_after < HEADER_TIMEOUT + 1.5, cut_after
    for sock in (silent, partial, slow):
        answer = read_to_end(sock)
        assert answer.startswith(b"HTTP/1.1 408") and b"did not arrive in time" in answer, answer
        sock.close()
    assert httpx.get(server.url + "/v2/health/live").status_code == 200


def test_headers_that_never_end_are_answered_431_before_they_grow_the_server(hardened):
    # httptools sets no bound on header size: 1 GB of header lines in 3 s grew the server by 1.2 GB.
    server, _ = hardened
    sock = connect(server)
    sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: test\r\n")
    sent, line = 0, b"X-Pad: " + b"a" * 1000 + b"\r\n"
    with pytest.raises(OSError):  # the server closed the connection: sending fails
        while sent < 64 * MIB:
            sock.sendall(line * 64)
            sent += len(line) * 64
    assert sent < 16 * MIB  # what the server read, plus what the sockets' buffers took
    answer = read_to_end(sock)
    assert answer.startswith(b"HTTP/1.1 431") and b"exceed 65536 bytes" in answer, answer[:200]


def test_a_client_that_leaves_mid_body_is_counted_not_logged_as_a_server_error(hardened):
    server, _ = hardened
    sock = connect(server)
    sock.sendall(
        b"POST /v2/models/minilm/infer HTTP/1.1\r\nHost: test\r\ncontent-type: application/json\r\n"
        b'content-length: 100000\r\n\r\n{"inputs": [{"name": "text"'
    )
    time.sleep(0.1)  # the handler is reading the body
    sock.close()
    deadline = time.monotonic() + 5
    left = re.compile(r'inference_requests_total\{[^}]*status="499"[^}]*\} 1\.0')
    while not left.search(metrics := httpx.get(server.url + "/metrics").text):
        assert time.monotonic() < deadline, [m for m in metrics.splitlines() if "requests_total{" in m]
        time.sleep(0.05)
    assert "Exception in ASGI application" not in server.log() and "Traceback" not in server.log()


# -- 5. captures hold credentials ------------------------------------------------------------------


def test_a_new_capture_file_is_readable_by_its_owner_only(hardened):
    server, capture = hardened
    with httpx.Client(base_url=server.url, timeout=30) as client:
        client.post(INFER, json=text_request(["secret"]), headers={"Authorization": "Bearer sk-secret"})
    assert stat.S_IMODE(capture.stat().st_mode) == 0o600  # created so, under umask 022
    assert "warning" not in server.log()


def test_an_existing_capture_file_keeps_its_mode_and_others_reading_it_is_reported(tmp_path):
    path = tmp_path / "capture.jsonl"
    path.write_bytes(b"")
    path.chmod(0o640)  # its owner's choice: a group that replays captures, say
    open_capture_file(path).close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o640 and loose_mode(path) == 0o640
    path.chmod(0o600)
    assert loose_mode(path) is None
