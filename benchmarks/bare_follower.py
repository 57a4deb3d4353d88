"""A bare client following streamed chat completions: the floor under any Python load generator here.

Not a benchmark on its own: ``stream_followers.py`` runs it beside ``loadtest run``, on the same
core and against the same stand-in, to tell the harness's own inter-token error from the machine's.
It is what the harness's stream reading comes down to, and nothing else: gevent sockets, one
greenlet a stream, open load at a uniform rate, each socket read timed with ``time.perf_counter``
and every token in a read given that time (as ``loadtest.engine.transports`` does). No Locust, no
recording, no sampler, no HTTP library: the request is written by hand and the tokens are found by
their bytes in the stand-in's answer (``fast_stream.py``; each token is the word ``tok``).

Prints one JSON object: the gaps between successive tokens of a stream, in milliseconds
(``count``, ``p50``, ``p90``, ``p99``, ``p99.9``, ``max``), the streams finished, and the process's
CPU over the run as a share of one core.

Run: ``python benchmarks/bare_follower.py URL N SECONDS [--stream-s 1.01] [--tokens 100]``.
"""

from __future__ import annotations

import argparse
import json
import time
from array import array
from urllib.parse import urlsplit

import gevent
import numpy as np
from gevent import socket

TOKEN = b'"content": " tok"'
DONE = b"data: [DONE]"
TAIL = max(len(TOKEN), len(DONE)) - 1  # a marker split across two reads is found in the previous read's tail


def request(host: str, tokens: int) -> bytes:
    body = json.dumps(
        {
            "model": "standin",
            "messages": [{"role": "user", "content": "one two three four five six seven eight"}],
            "max_tokens": tokens,
            "ignore_eos": True,
            "stream": True,
        }
    ).encode()
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Accept: text/event-stream\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def follow(address: tuple[str, int], message: bytes, gaps: array) -> None:
    """One stream, from its request to ``[DONE]``: the gap before each token, 0 for those read together."""
    with socket.create_connection(address) as sock:
        sock.sendall(message)
        last, tail = 0.0, b""
        while True:
            data = sock.recv(65536)
            now = time.perf_counter()
            if not data:
                raise ConnectionError("the stand-in closed the connection mid-stream")
            seen = tail + data
            for _ in range(seen.count(TOKEN)):
                if last:
                    gaps.append((now - last) * 1000)
                last = now
            if DONE in seen:
                return
            tail = seen[-TAIL:]


def follow_many(url: str, n: int, seconds: float, stream_s: float, tokens: int) -> dict:
    """Open load at ``n / stream_s`` streams a second for ``seconds``, so ``n`` are in flight at once."""
    parts = urlsplit(url)
    address = (parts.hostname, parts.port)
    message = request(f"{parts.hostname}:{parts.port}", tokens)
    gaps: array = array("d")
    period = stream_s / n
    cpu0, started = time.process_time(), time.perf_counter()
    streams = []
    for i in range(int(seconds / period)):
        gevent.sleep(max(0.0, started + i * period - time.perf_counter()))
        streams.append(gevent.spawn(follow, address, message, gaps))
    gevent.joinall(streams, raise_error=True)
    cpu = (time.process_time() - cpu0) / (time.perf_counter() - started)
    values = np.frombuffer(gaps, dtype=np.float64)
    doc: dict[str, float | int] = {"count": len(values), "streams": len(streams), "cpu": round(cpu, 4)}
    for name, percentile in (("p50", 50), ("p90", 90), ("p99", 99), ("p99.9", 99.9)):
        doc[name] = round(float(np.percentile(values, percentile, method="inverted_cdf")), 4)
    doc["max"] = round(float(values.max()), 4)
    return doc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("url")
    parser.add_argument("n", type=int, help="streams in flight at once")
    parser.add_argument("seconds", type=float, help="how long to start streams for")
    parser.add_argument("--stream-s", type=float, default=1.01, help="one stream's length in seconds")
    parser.add_argument("--tokens", type=int, default=100)
    args = parser.parse_args()
    print(json.dumps(follow_many(args.url, args.n, args.seconds, args.stream_s, args.tokens)))


if __name__ == "__main__":
    main()
