"""Captured traffic: read a capture file as a stream of requests, whatever its format.

Three formats, detected from the file's first bytes (``detect_format``) or named:

- ``jsonl``: one request per line, the harness's own format (docs/replay.md documents it)::

      {"timestamp": "2026-11-30T14:03:07.123456Z", "method": "POST",
       "path": "/v2/models/minilm/infer", "headers": {"content-type": "application/json"},
       "body": {"inputs": [...]}, "class": "short"}

  ``timestamp`` is RFC 3339 or epoch seconds; ``body`` is any JSON value, sent as its JSON
  encoding, or ``body_base64`` holds the exact bytes (binary or malformed bodies); ``method``
  defaults to POST; ``headers`` and ``class`` are optional.
- ``combined``: nginx/Apache combined access logs, with a request time (seconds, nginx's
  ``$request_time``) as the last field. Logs hold no bodies: the replay draws them from a
  payload pool per path. Their clock has whole seconds, so the requests logged in one second are
  spread evenly across it.
- ``har``: HAR 1.2 files (browser and proxy exports), read entry by entry with ijson.

Every reader is a generator over the file: memory does not grow with the capture's size. A line
that cannot be read is yielded as ``BadLine`` (its line number and why) and reading goes on; no
reader raises on bad content, only on a file that cannot be opened, and on a line longer than
``max_line`` bytes (16 MB unless ``--max-line-bytes`` says more), which is stopped before it is read
whole (``traffic.lines``): a gigabyte line is a broken file or a limit to raise, not a request to skip.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import orjson

from loadtest.errors import ConfigError
from loadtest.traffic.lines import MAX_LINE_BYTES, bounded_lines


@dataclass(frozen=True)
class CapturedRequest:
    """One request as captured; ``time`` is epoch seconds, ``line`` where it starts in the file (1-based)."""

    line: int
    time: float
    method: str
    path: str  # with its query string, as captured
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes | None = None  # the exact bytes, when captured so (base64, HAR text); else see ``doc``
    doc: object = None  # the body as parsed JSON, when it was captured as JSON (redaction walks it)
    cls: str | None = None  # the capture's class label, if any
    size: int = 0  # bytes of the captured body (0 when none)

    @property
    def has_body(self) -> bool:
        """False for a request captured without its body (access logs): the replay draws one from a pool."""
        return self.body is not None or self.doc is not None

    def encoded(self) -> bytes:
        """The body to send: the captured bytes, or the JSON body encoded."""
        if self.body is not None:
            return self.body
        return orjson.dumps(self.doc) if self.doc is not None else b""


@dataclass(frozen=True)
class BadLine:
    """A line (or HAR entry) that could not be read: skipped, counted, listed in the report."""

    line: int
    reason: str


FORMATS = ("jsonl", "combined", "har")
_METHOD = re.compile(r"^[A-Z]{3,10}$")
# host ident user [time] "request" status bytes "referer" "agent" then anything (request time last)
_COMBINED = re.compile(
    r'^(?P<host>\S+) \S+ \S+ \[(?P<time>[^\]]+)\] "(?P<request>(?:[^"\\]|\\.)*)" (?P<status>\d{3}|-) \S+'
    r'(?: "(?:[^"\\]|\\.)*" "(?:[^"\\]|\\.)*")?(?P<rest>.*)$'
)
LOG_TIMES = ("end", "start")  # nginx logs when a request ends ($time_local), Apache's %t when it starts
LIMIT_OPTION = "--max-line-bytes"  # what raises the longest line read


def detect_format(path: Path) -> str:
    """``jsonl``, ``combined`` or ``har``, from the file's name and first bytes; ConfigError if none fits."""
    path = Path(path)
    if path.suffix.lower() == ".har":
        return "har"
    with _open(path) as f:
        head = f.read(65536)
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    first = text.split(b"\n", 1)[0].strip()
    if not first:
        raise ConfigError(str(path), None, "the capture is empty")
    if first.startswith(b"{"):
        try:
            doc = orjson.loads(first)
        except orjson.JSONDecodeError:
            # A JSON document spread over lines is a HAR; a broken first line of JSONL is reported by the reader.
            return "har" if b'"log"' in text and b'"entries"' in text else "jsonl"
        return "har" if isinstance(doc, dict) and isinstance(doc.get("log"), dict) else "jsonl"
    if _COMBINED.match(first.decode("utf-8", "replace")):
        return "combined"
    raise ConfigError(
        str(path), None, "cannot tell the capture's format (not JSONL, HAR or a combined access log); pass --format"
    )


def read_capture(
    path: Path, fmt: str = "auto", log_time: str = "end", max_line: int = MAX_LINE_BYTES
) -> Iterator[CapturedRequest | BadLine]:
    """Every request of a capture file, in file order, and a ``BadLine`` for each one that cannot be read."""
    path = Path(path)
    if fmt == "auto":
        fmt = detect_format(path)
    if fmt not in FORMATS:
        raise ConfigError(str(path), None, f"unknown capture format {fmt!r}; known: {', '.join(FORMATS)}")
    if fmt == "jsonl":
        return read_jsonl(path, max_line)
    if fmt == "har":
        return read_har(path)
    if log_time not in LOG_TIMES:
        raise ConfigError(str(path), None, f"log time must be one of {', '.join(LOG_TIMES)}, got {log_time!r}")
    return read_combined(path, log_time, max_line)


def _open(path: Path):
    try:
        return path.open("rb")
    except FileNotFoundError:
        raise ConfigError(str(path), None, "capture file not found") from None
    except OSError as exc:
        raise ConfigError(str(path), None, f"cannot read the capture: {exc.strerror}") from None


# -- JSONL ------------------------------------------------------------------------------------------


def read_jsonl(path: Path, max_line: int = MAX_LINE_BYTES) -> Iterator[CapturedRequest | BadLine]:
    f = _open(path)
    with f:
        for number, line in bounded_lines(f, str(path), max_line, LIMIT_OPTION):
            if not line.strip():
                continue
            try:
                yield _jsonl_request(number, orjson.loads(line))
            except orjson.JSONDecodeError as exc:
                yield BadLine(number, f"not valid JSON ({_json_error(exc)})")
            except _Bad as exc:
                yield BadLine(number, str(exc))


class _Bad(ValueError):
    """What is wrong with one captured request; becomes a BadLine."""


def _json_error(exc: Exception) -> str:
    # orjson's message names the position, never the content: nothing captured leaks into a report.
    return str(exc).split(":", 1)[0] if ":" in str(exc) else str(exc)


def _jsonl_request(number: int, doc: object) -> CapturedRequest:
    if not isinstance(doc, dict):
        raise _Bad("a line must be a JSON object")
    if "timestamp" not in doc:
        raise _Bad("no 'timestamp'")
    when = parse_timestamp(doc["timestamp"])
    method = _method(doc.get("method", "POST"))
    path = _path(doc.get("path"))
    headers = _headers(doc.get("headers"))
    cls = doc.get("class")
    if cls is not None and not isinstance(cls, str):
        raise _Bad("'class' must be a string")
    body, parsed = None, None
    if "body_base64" in doc:
        if not isinstance(doc["body_base64"], str):
            raise _Bad("'body_base64' must be a string")
        try:
            body = base64.b64decode(doc["body_base64"], validate=True)
        except (binascii.Error, ValueError):
            raise _Bad("'body_base64' is not valid base64") from None
    elif "body" in doc and doc["body"] is not None:
        # Kept parsed, encoded when sent: orjson's output buffer is several times the body's size,
        # and the reorder window holds seconds of requests.
        parsed = doc["body"]
        return CapturedRequest(number, when, method, path, headers, None, parsed, cls, len(orjson.dumps(parsed)))
    return CapturedRequest(number, when, method, path, headers, body, parsed, cls, len(body) if body else 0)


def parse_timestamp(value: object) -> float:
    """Epoch seconds from RFC 3339 text or a number (epoch seconds; above 1e11, milliseconds)."""
    if isinstance(value, bool):
        raise _Bad("'timestamp' must be RFC 3339 text or epoch seconds")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        try:
            seconds = float(value)
        except ValueError:
            try:
                parsed = datetime.fromisoformat(value.strip())
            except ValueError:
                raise _Bad("'timestamp' is not RFC 3339 or epoch seconds") from None
            if parsed.tzinfo is None:
                parsed = parsed.replace(tzinfo=UTC)
            seconds = parsed.timestamp()
    else:
        raise _Bad("'timestamp' must be RFC 3339 text or epoch seconds")
    if seconds > 1e11:  # epoch milliseconds, as many gateways log
        seconds /= 1000
    if not math.isfinite(seconds) or seconds <= 0:
        raise _Bad("'timestamp' is not a time")
    return seconds


def _method(value: object) -> str:
    if not isinstance(value, str) or not _METHOD.match(value.upper()):
        raise _Bad("'method' must be an HTTP method such as POST")
    return value.upper()


def _path(value: object) -> str:
    if not isinstance(value, str) or not value:
        raise _Bad("no 'path'")
    if value.startswith(("http://", "https://")):
        parts = urlsplit(value)
        value = parts.path or "/"
        if parts.query:
            value += "?" + parts.query
    if not value.startswith("/") or any(ch in value for ch in " \r\n\t"):
        raise _Bad("'path' must start with / and hold no whitespace")
    return value


def _headers(value: object) -> tuple[tuple[str, str], ...]:
    if value is None:
        return ()
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, list) and all(isinstance(p, list | tuple) and len(p) == 2 for p in value):
        items = value
    else:
        raise _Bad("'headers' must be an object of name: value")
    headers = []
    for name, header in items:
        if not isinstance(name, str) or not isinstance(header, str | int | float):
            raise _Bad("'headers' must map names to text")
        headers.append((name.lower(), str(header)))
    return tuple(headers)


# -- combined access logs ---------------------------------------------------------------------------


def read_combined(
    path: Path, log_time: str = "end", max_line: int = MAX_LINE_BYTES
) -> Iterator[CapturedRequest | BadLine]:
    """nginx/Apache combined logs; the requests of one logged second are spread evenly across it.

    With ``log_time="end"`` (nginx: ``$time_local`` is written when the request ends) the request
    time, the last field, is subtracted to give the arrival; the replay's reorder window puts the
    arrivals back in order.
    """
    second: float | None = None
    group: list[tuple[int, str, str, float]] = []
    f = _open(path)
    with f:
        for number, raw in bounded_lines(f, str(path), max_line, LIMIT_OPTION):
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            if not line.strip():
                continue
            try:
                logged, method, target, took = _combined_line(line, log_time)
            except _Bad as exc:
                yield BadLine(number, str(exc))
                continue
            if logged != second and group:
                yield from _spread(second, group)
                group = []
            second = logged
            group.append((number, method, target, took))
        if group:
            yield from _spread(second, group)


def _combined_line(line: str, log_time: str) -> tuple[float, str, str, float]:
    match = _COMBINED.match(line)
    if match is None:
        raise _Bad("not a combined access log line")
    try:
        logged = datetime.strptime(match["time"], "%d/%b/%Y:%H:%M:%S %z").timestamp()
    except ValueError:
        raise _Bad("the time is not like 10/Oct/2026:13:55:36 +0000") from None
    parts = match["request"].split(" ")
    if len(parts) < 2:
        raise _Bad('the request is not like "POST /path HTTP/1.1"')
    method, target = _method(parts[0]), _path(parts[1])
    took = 0.0
    rest = match["rest"].split()
    if rest and log_time == "end":
        try:
            took = float(rest[-1])
        except ValueError:
            took = 0.0
        if not 0 <= took < 3600:
            took = 0.0
    return logged, method, target, took


def _spread(second: float | None, group: list[tuple[int, str, str, float]]) -> Iterator[CapturedRequest]:
    n = len(group)
    for i, (number, method, target, took) in enumerate(group):
        yield CapturedRequest(number, second + (i + 0.5) / n - took, method, target)


# -- HAR --------------------------------------------------------------------------------------------


def read_har(path: Path) -> Iterator[CapturedRequest | BadLine]:
    """HAR 1.2, entry by entry (ijson streams the array); ``line`` is the entry's number, from 1."""
    import ijson

    f = _open(path)
    number = 0
    with f:
        try:
            for number, entry in enumerate(ijson.items(f, "log.entries.item", use_float=True), start=1):
                try:
                    yield _har_request(number, entry)
                except _Bad as exc:
                    yield BadLine(number, f"HAR entry {number}: {exc}")
        except ijson.JSONError as exc:
            yield BadLine(number + 1, f"the HAR is not valid JSON after entry {number} ({_json_error(exc)})")


def _har_request(number: int, entry: object) -> CapturedRequest:
    if not isinstance(entry, dict) or not isinstance(entry.get("request"), dict):
        raise _Bad("no 'request'")
    request = entry["request"]
    when = parse_timestamp(entry.get("startedDateTime"))
    method = _method(request.get("method", "GET"))
    path = _path(request.get("url"))
    raw_headers = request.get("headers") or []
    if not isinstance(raw_headers, list):
        raise _Bad("'headers' must be a list")
    headers = tuple(
        (str(h.get("name", "")).lower(), str(h.get("value", "")))
        for h in raw_headers
        if isinstance(h, dict) and h.get("name") and not str(h["name"]).startswith(":")
    )
    body, parsed = None, None
    post = request.get("postData")
    if isinstance(post, dict) and isinstance(post.get("text"), str):
        if post.get("encoding") == "base64":
            try:
                body = base64.b64decode(post["text"], validate=True)
            except (binascii.Error, ValueError):
                raise _Bad("postData is not valid base64") from None
        else:
            body = post["text"].encode("utf-8", "surrogatepass")
            try:
                parsed = orjson.loads(body)
            except orjson.JSONDecodeError:
                parsed = None
    label = entry.get("_class")  # HAR allows custom fields that start with an underscore
    cls = label if isinstance(label, str) and label else None
    return CapturedRequest(number, when, method, path, headers, body, parsed, cls, len(body) if body else 0)
