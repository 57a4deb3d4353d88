"""Lines of a file, each at most a set size: JSONL payload files, a user's messy kinds, captures.

Iterating a file object reads a whole line before anything can look at it, so one line of a gigabyte
(a corrupt file, a capture of an upload) takes that gigabyte and more. Here each line is read with
``readline(limit + 1)``: a line longer than the limit is stopped after ``limit + 1`` bytes, with one
error naming the file, the line and the key or option that raises the limit.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import BinaryIO

from loadtest.errors import ConfigError
from loadtest.units import format_bytes

MAX_LINE_BYTES = 16_000_000  # the longest line read by default (16 MB): a request body is rarely near it


def bounded_lines(
    f: BinaryIO, source: str, limit: int = MAX_LINE_BYTES, raise_with: str = ""
) -> Iterator[tuple[int, bytes]]:
    """(line number from 1, line) for each line of ``f``; ConfigError at the first longer than ``limit`` bytes.

    ``raise_with`` names what raises the limit (a scenario key, an option), for the message.
    """
    number = 0
    while True:
        line = f.readline(limit + 1)
        if not line:
            return
        number += 1
        if len(line) > limit and not (len(line) == limit + 1 and line.endswith(b"\n")):
            how = f"; {raise_with} raises the limit" if raise_with else ""
            raise ConfigError(f"{source}:{number}", None, f"the line is longer than {format_bytes(limit)}{how}")
        yield number, line
