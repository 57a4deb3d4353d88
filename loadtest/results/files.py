"""Whole files or none: every file of a results directory is written to a temporary name and renamed.

A reader never sees half a file, and an interrupted run still leaves whole files. A write that
fails (a full disk, Ctrl-C in the middle) takes its temporary file with it, and a full disk is
one line naming the file (``DiskFull``, exit 3), not a traceback. JSON goes through ``write_json``
and ``read_json`` so every file has one format and every unreadable file one message naming it.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
from pathlib import Path

from loadtest.errors import ConfigError, DiskFull

# What a write that ran out of room says: the disk, the user's quota, or a file-size limit (`ulimit -f`).
NO_ROOM = {
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EFBIG: "file too large (a file-size limit, as `ulimit -f`)",
}
TEMPORARY = ".{name}.tmp"  # hidden, beside the file it becomes


def write_atomic(path: Path, data: str | bytes) -> None:
    tmp = path.with_name(TEMPORARY.format(name=path.name))
    try:
        tmp.write_bytes(data.encode() if isinstance(data, str) else data)
        os.replace(tmp, path)
    except BaseException as exc:  # BaseException: Ctrl-C or SIGTERM mid-write leaves no temporary file either
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise write_error(exc, path) from None
        raise


def write_json(path: Path, data: object, indent: int = 2) -> None:
    write_atomic(path, json.dumps(data, indent=indent) + "\n")


def write_error(exc: OSError, path: Path) -> Exception:
    """A failed write of ``path`` as the error to raise: ``DiskFull`` when there was no room, else the
    ``OSError`` naming ``path`` itself (not its temporary name), so the CLI's one line says which file."""
    if exc.errno is None:
        return exc
    if exc.errno in NO_ROOM:
        return DiskFull(f"cannot write {path}: {NO_ROOM[exc.errno]}")
    return OSError(exc.errno, exc.strerror, str(path))  # the same subclass (PermissionError...) for its errno


def remove_temporaries(directory: Path) -> None:
    """The temporary files a killed writer left in ``directory``; call it once every writer there has ended."""
    with contextlib.suppress(OSError):
        for tmp in directory.glob(TEMPORARY.format(name="*")):
            tmp.unlink(missing_ok=True)


def read_json(path: Path) -> object:
    """A JSON file's content; ConfigError (exit 2) names the file when it is missing or unreadable."""
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(str(path), None, "not found") from None
    except (OSError, ValueError) as exc:
        raise ConfigError(str(path), None, f"unreadable: {exc}") from None
