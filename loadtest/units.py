"""The human units that scenarios are written in and reports print: durations ("90s", "2m"), rates ("20/s"),
shares ("5%"), bytes.

The parsers check a value's range too, so a negative, NaN or malformed duration or rate gets the same
message from the command line (``commands.options``) as from a TOML file (``config``).
"""

from __future__ import annotations

import math
import re

_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|us|µs|s|m|h)")
_SECONDS = {"us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_RATE = re.compile(r"(?P<number>\d+(?:\.\d+)?)(?:/(?P<per>s|m|h))?")
_PER = {None: 1.0, "s": 1.0, "m": 60.0, "h": 3600.0}


def check_number(value: float, *, minimum: float = 0.0, above: bool = False, maximum: float | None = None) -> float:
    """``value`` if it is a finite number at least ``minimum`` (above it, with ``above``) and at most ``maximum``;
    raises ValueError.

    NaN compares false with everything, so without this a ``nan`` slips past every ``value < minimum``. A
    ``maximum`` bounds what a number sizes in memory (a pool, a body), so a typo is refused, not allocated.
    """
    if not math.isfinite(value):
        raise ValueError(f"must be a finite number, got {value}")
    if above and value <= minimum:
        raise ValueError(f"must be above {minimum:g}, got {value:g}")
    if value < minimum:
        raise ValueError(f"must be at least {minimum:g}, got {value:g}")
    if maximum is not None and value > maximum:
        raise ValueError(f"must be at most {maximum:,.0f}, got {value:g}")
    return value


def parse_duration(value: str | int | float) -> float:
    """Seconds from a number (seconds) or a string of number-unit parts; raises ValueError."""
    return _amount(value, "a duration", "a finite number of seconds", "a duration like '30s'", _duration_text)


def parse_rate(value: str | int | float) -> float:
    """Requests per second from a number (per second) or "20/s", "1200/m", "72000/h"; raises ValueError.

    The unit is optional, as in a threshold's ``throughput >= 50/s``; zero is a rate (a ramp starts
    there), so callers that need more say so (``check_number(..., above=True)``).
    """
    return _amount(value, "a rate", "a finite number", "a rate like 20, 20/s or 1200/m", _rate_text)


def _amount(value: str | int | float, noun: str, finite: str, example: str, from_text) -> float:
    """The checks a duration and a rate share: not a bool, not negative, finite; text read by ``from_text``.

    A plain number in text ("nan", "inf", 400 nines) is read as a float and refused as TOML's are.
    """
    if isinstance(value, bool):
        raise ValueError(f"expected {example}, got {value!r}")
    if isinstance(value, str):
        text = value.strip().replace(" ", "")
        if text.startswith("-"):
            raise ValueError(f"{noun} cannot be negative, got {value!r}")
        number = _plain_number(text)
        value = from_text(text, value) if number is None else number
    if not math.isfinite(value):
        raise ValueError(f"{noun} must be {finite}, got {value}")
    if value < 0:
        raise ValueError(f"{noun} cannot be negative, got {value}")
    return float(value)


def _duration_text(text: str, value: str) -> float:
    parts = _PART.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"expected a duration like '30s', '2m', '1h30m' or '250ms', got {value!r}")
    return sum(float(number) * _SECONDS[unit] for number, unit in parts)


def _rate_text(text: str, value: str) -> float:
    match = _RATE.fullmatch(text)
    if not match:
        raise ValueError(f"expected a rate like 20, 20/s or 1200/m, got {value!r}")
    return float(match["number"]) / _PER[match["per"]]


def _plain_number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def parse_share(value: str | int | float, *, below_one: bool = False) -> float:
    """A fraction from a number (0.05) or a percentage ("5%"), in [0, 1] (or [0, 1) with ``below_one``).

    Raises ValueError with a message that names the value; callers add where it came from.
    """
    try:
        share = float(value[:-1]) / 100 if isinstance(value, str) and value.endswith("%") else float(value)
    except ValueError:
        raise ValueError(f"expected a share like 5% or 0.05, got {value!r}") from None
    if below_one and not 0 <= share < 1:
        raise ValueError(f"must be at least 0 and below 100%, got {value!r}")
    if not 0 <= share <= 1:
        raise ValueError(f"must be between 0 and 100%, got {value!r}")
    return share


def format_duration(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 120:
        return f"{seconds:g}s"
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes}m{secs:02d}s" if secs else f"{minutes}m"


def format_bytes(n: float) -> str:
    """Decimal units, one decimal: 1.5 KB, 20.0 MB, 1.0 GB."""
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n:.0f} B"
