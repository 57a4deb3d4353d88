"""A request body's JSON, parsed only once it is known to be quick to parse.

orjson holds the GIL while it parses, so a thread would not keep the event loop free: what bounds
the time is the body itself. Strings parse at about 1 ns a byte, but every number, list or object
costs 30 to 500 ns (empty lists are the worst: each is tracked by the garbage collector), so an
8 MiB body of 2.8M empty lists took 1.4 s and one of 2M small numbers 140 ms, with every request
and health check waiting. A real request holds a few values a row (128 rows of 8 features at
most), so a body with more than ``max_values`` values outside its strings is refused before
parsing, after a count that runs at memory speed: 3 to 20 ms for 8 MiB, measured.

The count is an upper bound read from the bytes, not a parse: every value but the first of a
list or object follows a comma, so commas bound the values (nesting is at most 1024 deep).
Commas inside strings do not count: they are text, and text is cheap to parse.
"""

from __future__ import annotations

import orjson

from .errors import BadRequest


def parse_json(body: bytes, max_values: int) -> object:
    """The parsed body; a ``BadRequest`` for invalid JSON or UTF-8, or for more than ``max_values`` values."""
    _check_values(body, max_values)
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        reason = "not valid UTF-8" if "UTF-8" in str(exc) or "surrogate" in str(exc) else "invalid JSON"
        raise BadRequest(f"request body is {reason}: {exc}") from None


_NOT_COMMA_OR_QUOTE = bytes(b for b in range(256) if b not in b',"')


def _check_values(body: bytes, max_values: int) -> None:
    if body.count(b",") <= max_values:
        return  # the common case: one pass at memory speed
    # Text with many commas: count those outside strings. Once escaped backslashes and quotes are
    # gone, every '"' left opens or closes a string; then only commas and quotes need keeping.
    if b"\\" in body:
        body = body.replace(b"\\\\", b"").replace(b'\\"', b"")
    structure = body.translate(None, _NOT_COMMA_OR_QUOTE)
    strings = structure.count(b'"') // 2
    if strings > max_values:
        raise BadRequest(f"request body holds {strings} strings; this server parses at most {max_values} values")
    outside = b"".join(structure.split(b'"')[::2]).count(b",")
    if outside > max_values:
        raise BadRequest(
            f"request body holds about {outside} values; this server parses at most {max_values} "
            "(a request holds a few a row)"
        )


__all__ = ["parse_json"]
