"""Shared checks for TOML configuration: read a file, refuse unknown keys, type the values."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from loadtest.errors import ConfigError
from loadtest.units import check_number, parse_duration


def read_toml(path: Path) -> dict:
    """A TOML file as a dict; whatever is wrong with it (missing, not UTF-8, not TOML) is one ConfigError."""
    if not path.exists():
        raise ConfigError(str(path), None, "file not found")
    if path.is_dir():
        raise ConfigError(str(path), None, "is a directory, not a TOML file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError(str(path), None, "not UTF-8 text") from None
    except OSError as exc:
        raise ConfigError(str(path), None, f"cannot be read: {exc.strerror}") from None
    return parse_toml(text, str(path))


def parse_toml(text: str, source: str) -> dict:
    """TOML text as a dict; a byte-order mark, bad TOML or nesting too deep for the parser is one ConfigError."""
    if text.startswith("\ufeff"):  # tomllib's message would be "Invalid statement (at line 1, column 1)"
        raise ConfigError(
            source, None, "starts with a byte-order mark (BOM): save it as UTF-8 without one (TOML allows none)"
        )
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(source, None, f"not valid TOML: {exc}") from None
    except RecursionError:  # tomllib recurses once per level of nesting: x = [[[[...]]]] thousands deep
        raise ConfigError(source, None, "not valid TOML: arrays or tables nested too deeply to read") from None


class Table:
    """A TOML table being read: every key must be taken, or it is reported as unknown."""

    def __init__(self, data: object, source: str, prefix: str = "") -> None:
        if not isinstance(data, dict):
            raise ConfigError(source, prefix or None, f"must be a table, got {type(data).__name__}")
        self.data, self.source, self.prefix = data, source, prefix
        self.taken: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self.prefix}.{name}" if self.prefix else name

    def error(self, name: str | None, message: str) -> ConfigError:
        return ConfigError(self.source, self.key(name) if name else (self.prefix or None), message)

    def get(self, name: str, kind: type | tuple[type, ...], default: Any = None, required: bool = False) -> Any:
        self.taken.add(name)
        if name not in self.data:
            if required:
                raise self.error(name, "is required")
            return default
        value = self.data[name]
        if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
            raise self.error(name, f"expected {_kind_name(kind)}, got {value!r}")
        if kind is float and isinstance(value, int):
            value = float(value)
        if not isinstance(value, kind):
            raise self.error(name, f"expected {_kind_name(kind)}, got {value!r}")
        return value

    def number(
        self,
        name: str,
        default: float | None = None,
        minimum: float = 0.0,
        required: bool = False,
        maximum: float | None = None,
    ) -> float:
        """A finite number from ``minimum`` to ``maximum`` (TOML reads ``nan`` and ``inf`` as numbers)."""
        value = self.get(name, (int, float), default, required)
        if value is None:
            return value
        try:
            return check_number(value, minimum=minimum, maximum=maximum)
        except ValueError as exc:
            raise self.error(name, str(exc)) from None

    def duration(
        self, name: str, default: str | float | None = None, required: bool = False, above_zero: bool = False
    ) -> float:
        """Seconds, as the command line's duration options read them (``units.parse_duration``)."""
        value = self.get(name, (str, int, float), default, required)
        try:
            seconds = parse_duration(value)
            return check_number(seconds, above=True) if above_zero else seconds
        except ValueError as exc:
            raise self.error(name, str(exc)) from None

    def choice(self, name: str, options: tuple[str, ...], default: str) -> str:
        value = self.get(name, str, default)
        if value not in options:
            raise self.error(name, f"must be one of {', '.join(options)}; got {value!r}")
        return value

    def table(self, name: str) -> Table:
        self.taken.add(name)
        return Table(self.data.get(name, {}), self.source, self.key(name))

    def done(self) -> None:
        unknown = sorted(set(self.data) - self.taken)
        if unknown:
            raise self.error(unknown[0], f"unknown key (known here: {', '.join(sorted(self.taken))})")


def _kind_name(kind: type | tuple[type, ...]) -> str:
    names = {
        int: "an integer",
        float: "a number",
        str: "a string",
        bool: "true or false",
        list: "a list",
        dict: "a table",
    }
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join(dict.fromkeys(names.get(k, k.__name__) for k in kinds))
