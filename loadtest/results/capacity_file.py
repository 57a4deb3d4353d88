"""``capacity.json``: what a capacity search writes, and how its readers (cost, compare, reports) find and check it.

Kept apart from the ``capacity`` command so a reader imports a file format, not the search, the
engine and the reference server's launcher.
"""

from __future__ import annotations

import json
from pathlib import Path

from loadtest.config.tomlconf import Table
from loadtest.errors import ConfigError
from loadtest.results.files import write_json

SCHEMA = "loadtest.capacity/1"
CAPACITY_JSON = "capacity.json"


def capacity_file(path: Path) -> Path:
    """A capacity directory's ``capacity.json``; a path that is not a directory is taken as the file."""
    return path / CAPACITY_JSON if path.is_dir() else path


def write_capacity(directory: Path, data: dict) -> None:
    write_json(directory / CAPACITY_JSON, data)


def read_capacity(path: Path) -> dict:
    """A capacity directory's ``capacity.json`` (or that file), its schema checked; errors name the file and key."""
    file = capacity_file(path)
    if not path.exists():
        raise ConfigError(str(path), None, "not found")
    if not file.exists():
        raise ConfigError(str(path), None, "not a capacity directory: it has no capacity.json")
    try:
        data = json.loads(file.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(str(file), None, f"not valid JSON: {exc}") from None
    schema = Table(data, str(file)).get("schema", str, required=True)
    if schema != SCHEMA:
        raise ConfigError(str(file), "schema", f"expected {SCHEMA!r} (the output of a capacity search), got {schema!r}")
    return data
