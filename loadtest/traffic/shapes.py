"""Traffic shapes: a value as a function of time, the arrival rate (open load) or the user count (closed).

Pure functions, no Locust: the same shape drives the open-load schedule, Locust's ``LoadTestShape``
for closed load, the report's "target" line, and the tests. Each kind takes a few named numbers;
``from_table`` checks them and names the file and key of anything wrong.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from loadtest.errors import ConfigError
from loadtest.units import check_number, parse_duration

# kind -> (required keys, optional keys with defaults); durations are seconds once parsed.
# ``burstiness`` is the shape ``k`` of gamma inter-arrivals (1 = Poisson, below 1 burstier): ``bursty``
# holds a constant rate, ``stages`` may take one too, so a rate curve fitted to a capture keeps the
# capture's burstiness (its arrivals are then gamma).
KINDS: dict[str, tuple[tuple[str, ...], dict[str, float]]] = {
    "constant": (("value",), {}),
    "ramp": (("start", "end"), {}),
    "step": (("start", "step", "every"), {"max": math.inf}),
    "spike": (("base", "peak", "at", "length"), {}),
    "sine": (("mean", "amplitude", "period"), {}),
    "diurnal": (("low", "high"), {"period": 0.0}),
    "bursty": (("value",), {"burstiness": 0.5}),
    "stages": ((), {"start": 0.0, "burstiness": 1.0}),
}
DURATION_KEYS = {"every", "at", "length", "period"}


@dataclass(frozen=True)
class Stage:
    duration: float
    target: float


@dataclass(frozen=True)
class Shape:
    kind: str
    params: dict[str, float] = field(default_factory=dict)
    stages: tuple[Stage, ...] = ()
    duration: float = 0.0  # the run's length; ``diurnal`` without a period spans it

    def at(self, t: float) -> float:
        """The value at ``t`` seconds after the start (never negative)."""
        return max(0.0, _VALUE[self.kind](self, t))

    @property
    def peak(self) -> float:
        """The highest value over the run, sampled every 10 ms (sizes pools and caps)."""
        steps = max(1, int(self.duration * 100))
        return max(self.at(self.duration * i / steps) for i in range(steps + 1))

    @property
    def ceiling(self) -> float:
        """The highest value the shape can reach, read from its parameters: no sampling, so a day is as quick.

        What the per-process cap on the rate (``config.scenario.check_generator_load``) is checked against.
        """
        p = self.params
        if self.kind == "step":
            steps = math.floor(self.duration / p["every"]) if self.duration else 0
            return min(p["max"], p["start"] + p["step"] * steps)
        if self.kind == "sine":
            return p["mean"] + p["amplitude"]
        if self.kind == "stages":
            return max([p.get("start", 0.0), *(stage.target for stage in self.stages)])
        return max(p[key] for key in _LEVELS[self.kind])

    @property
    def burstiness(self) -> float:
        return self.params.get("burstiness", 1.0)


def _stages(shape: Shape, t: float) -> float:
    previous, elapsed = shape.params.get("start", 0.0), 0.0
    for stage in shape.stages:
        if t <= elapsed + stage.duration:
            fraction = (t - elapsed) / stage.duration if stage.duration else 1.0
            return previous + (stage.target - previous) * fraction
        previous, elapsed = stage.target, elapsed + stage.duration
    return previous


def _diurnal(shape: Shape, t: float) -> float:
    p = shape.params
    period = p["period"] or shape.duration or 1.0
    # A raised cosine from the night trough (t = 0) to the afternoon peak (half a period later).
    return p["low"] + (p["high"] - p["low"]) * (1 - math.cos(2 * math.pi * t / period)) / 2


# The parameters that are levels of the shape (not times, not burstiness): its ceiling is the highest.
_LEVELS = {
    "constant": ("value",),
    "bursty": ("value",),
    "ramp": ("start", "end"),
    "spike": ("base", "peak"),
    "diurnal": ("low", "high"),
}

_VALUE = {
    "constant": lambda s, t: s.params["value"],
    "bursty": lambda s, t: s.params["value"],
    "ramp": lambda s, t: (
        s.params["start"]
        + (s.params["end"] - s.params["start"]) * (min(t, s.duration) / s.duration if s.duration else 1.0)
    ),
    "step": lambda s, t: min(s.params["max"], s.params["start"] + s.params["step"] * math.floor(t / s.params["every"])),
    "spike": lambda s, t: (
        s.params["peak"] if s.params["at"] <= t < s.params["at"] + s.params["length"] else s.params["base"]
    ),
    "sine": lambda s, t: s.params["mean"] + s.params["amplitude"] * math.sin(2 * math.pi * t / s.params["period"]),
    "diurnal": _diurnal,
    "stages": _stages,
}


def _number(source: str, key: str, value: object, duration: bool) -> float:
    try:
        if duration:
            return parse_duration(value)  # type: ignore[arg-type]
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"expected a number, got {value!r}")
        if value < 0:
            raise ValueError(f"must not be negative, got {value}")
        return float(check_number(value))  # NaN and infinity
    except ValueError as exc:
        raise ConfigError(source, key, str(exc)) from None


def from_table(table: dict, duration: float, source: str, prefix: str = "load.shape") -> Shape:
    """Build a shape from its TOML table, e.g. ``{kind = "ramp", start = 10, end = 100}``."""
    kind = table.get("kind", "constant")
    if kind not in KINDS:
        raise ConfigError(source, f"{prefix}.kind", f"unknown shape {kind!r}; one of {', '.join(KINDS)}")
    required, optional = KINDS[kind]
    allowed = {"kind", *required, *optional} | ({"stages"} if kind == "stages" else set())
    for key in table:
        if key not in allowed:
            raise ConfigError(source, f"{prefix}.{key}", f"unknown key for shape {kind!r}; it takes {sorted(allowed)}")
    params = dict(optional)
    for key in required:
        if key not in table:
            raise ConfigError(source, f"{prefix}.{key}", f"shape {kind!r} needs {key!r}")
    for key in set(required) | (set(optional) & set(table)):
        params[key] = _number(source, f"{prefix}.{key}", table[key], key in DURATION_KEYS)
    for key in ("every", "period", "length"):
        if key in params and params[key] == 0 and not (kind == "diurnal" and key == "period"):
            raise ConfigError(source, f"{prefix}.{key}", "must be more than zero")
    if "burstiness" in params and params["burstiness"] <= 0:
        raise ConfigError(source, f"{prefix}.burstiness", "must be more than 0 (1 = Poisson, below 1 = burstier)")
    stages: tuple[Stage, ...] = ()
    if kind == "stages":
        raw = table.get("stages")
        if not isinstance(raw, list) or not raw:
            raise ConfigError(source, f"{prefix}.stages", "needs a list like [{duration = '30s', target = 50}, ...]")
        parsed = []
        for i, stage in enumerate(raw):
            key = f"{prefix}.stages[{i}]"
            if not isinstance(stage, dict) or set(stage) != {"duration", "target"}:
                raise ConfigError(source, key, "each stage is {duration = '30s', target = 50}")
            parsed.append(
                Stage(
                    _number(source, key + ".duration", stage["duration"], True),
                    _number(source, key + ".target", stage["target"], False),
                )
            )
        stages = tuple(parsed)
    return Shape(kind, params, stages, duration)


def stages_duration(shape: Shape) -> float:
    return sum(stage.duration for stage in shape.stages)
