"""Whole files or none: every file of a results directory is written to a temporary name and renamed.

A reader never sees half a file, and an interrupted run still leaves whole files. JSON goes
through ``write_json`` and ``read_json`` so every file has one format and every unreadable file
one message naming it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from loadtest.errors import ConfigError


def write_atomic(path: Path, data: str | bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data.encode() if isinstance(data, str) else data)
    os.replace(tmp, path)


def write_json(path: Path, data: object, indent: int = 2) -> None:
    write_atomic(path, json.dumps(data, indent=indent) + "\n")


def read_json(path: Path) -> object:
    """A JSON file's content; ConfigError (exit 2) names the file when it is missing or unreadable."""
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(str(path), None, "not found") from None
    except (OSError, ValueError) as exc:
        raise ConfigError(str(path), None, f"unreadable: {exc}") from None
