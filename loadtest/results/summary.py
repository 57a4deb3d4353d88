"""The run summary, ``summary.json`` (schema ``loadtest.summary/1``): typed, read back typed, written by one function.

A run's summary is built in stages: the load generator measures (accounting, throughput,
percentiles), the run's own files are analysed (saturation, sample sufficiency, replay fidelity),
then the gates judge it. Each stage returns a new frozen ``Summary`` with its part filled in
(``dataclasses.replace``), and ``write_summary`` is the one place that turns it into JSON. The
file's keys are those documented in ``docs/results.md``; ``from_dict`` and ``as_dict`` are exact
inverses on them, so a summary written by any version of this schema reads back unchanged.

Figures keyed by request class are typed mappings: ``summary.latency_ms["response"]["all"]`` is a
``Percentiles``, ``summary.accounting.by_class["short"]`` a ``Counts``. The pseudo-classes ``all``,
``clean`` (every class but the messy ones) and ``messy`` sit beside the real classes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from loadtest.errors import ConfigError
from loadtest.messy.kinds import CLASS_PREFIX
from loadtest.results.files import read_json, write_json

SCHEMA = "loadtest.summary/1"
ALL = "all"
CLEAN = "clean"  # every class but the messy ones, in a run with messy traffic
MESSY = "messy"  # every messy class together
MESSY_PREFIX = CLASS_PREFIX  # messy requests are recorded under classes of their own: messy:<kind>
PERCENTILES = (50.0, 90.0, 95.0, 99.0, 99.9)


def _stat_name(percentile: float) -> str:
    return f"p{percentile:g}"


@dataclass(frozen=True)
class Percentiles:
    """One histogram's figures, in milliseconds; an empty histogram has a count of 0 and nothing else."""

    count: int
    min: float | None = None
    mean: float | None = None
    max: float | None = None
    by_percentile: Mapping[str, float] = field(default_factory=dict)  # "p50" ... "p99.9"

    def get(self, stat: str) -> float | None:
        """``count``, ``min``, ``mean``, ``max`` or a percentile such as ``p99.9``; None when absent."""
        if stat in ("count", "min", "mean", "max"):
            return getattr(self, stat)
        return self.by_percentile.get(stat)

    @property
    def p50(self) -> float | None:
        return self.by_percentile.get("p50")

    @property
    def p99(self) -> float | None:
        return self.by_percentile.get("p99")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Percentiles:
        rest = {k: v for k, v in d.items() if k.startswith("p")}
        return cls(int(d.get("count", 0)), d.get("min"), d.get("mean"), d.get("max"), rest)

    def as_dict(self) -> dict:
        if not self.count:
            return {"count": 0}
        return {"count": self.count, "min": self.min, "mean": self.mean, "max": self.max, **self.by_percentile}


Latency = Mapping[str, Mapping[str, Percentiles]]  # metric -> class -> figures


# Error kinds that are an answer from the target: an HTTP status, a gRPC status the server sent, a body that
# failed its check, a messy request's wrong answer. Any other kind (``connection``, an exception's name) means
# no answer came back.
ANSWER_KINDS = ("http_", "grpc_", "invalid_body", "wrong_")


def transport_error(kind: str) -> bool:
    """Whether an error kind failed at the transport level (refused, reset, closed, a broken reply): no answer."""
    return not kind.startswith(ANSWER_KINDS)


@dataclass(frozen=True)
class Counts:
    """Where every scheduled request of one class ended.

    scheduled = ok + errors + timeouts + dropped + lost_worker (+ unfinished, only if a run was cut short).
    ``lost_worker`` counts the arrivals of a load-generator worker that was lost mid-run and never reported them.
    """

    scheduled: int = 0
    ok: int = 0
    errors: int = 0
    errors_by_kind: Mapping[str, int] = field(default_factory=dict)
    timeouts: int = 0
    dropped: int = 0
    lost_worker: int = 0
    unfinished: int = 0

    @property
    def transport_errors(self) -> int:
        """Errors with no answer from the target behind them (timeouts are counted apart)."""
        return sum(n for kind, n in self.errors_by_kind.items() if transport_error(kind))

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Counts:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def as_dict(self) -> dict:
        return {**asdict(self), "errors_by_kind": dict(self.errors_by_kind)}


@dataclass(frozen=True)
class Accounting:
    total: Counts
    by_class: Mapping[str, Counts] = field(default_factory=dict)

    @property
    def balanced(self) -> bool:
        return self.total.unfinished == 0

    def of(self, cls: str = ALL) -> Counts | None:
        return self.total if cls == ALL else self.by_class.get(cls)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Accounting:
        by_class = {name: Counts.from_dict(c) for name, c in d.get("by_class", {}).items()}
        return cls(Counts.from_dict(d), by_class)

    def as_dict(self) -> dict:
        return {
            **self.total.as_dict(),
            "balanced": self.balanced,
            "by_class": {name: c.as_dict() for name, c in self.by_class.items()},
        }


@dataclass(frozen=True)
class Throughput:
    scheduled_per_s: float | None = None
    sent_per_s: float | None = None
    ok_per_s: float | None = None
    output_tokens_per_s: float | None = None  # generative runs only: tokens served a second, all requests together
    input_tokens_per_s: float | None = None

    def as_dict(self) -> dict:
        """Request rates always; token rates only where the run counted tokens."""
        d = asdict(self)
        for key in ("output_tokens_per_s", "input_tokens_per_s"):
            if d[key] is None:
                del d[key]
        return d


@dataclass(frozen=True)
class RunInfo:
    """When and how the load generator ran."""

    started_epoch: float | None = None
    elapsed: float | None = None
    interrupted: bool = False
    processes: int = 1
    locust_requests: int | None = None
    locust_failures: int | None = None
    # Workers lost mid-run: {"worker": 2, "of": 2, "at_s": 3.0, "arrivals": 412}, the worker counted from 1,
    # ``at_s`` its last report (seconds since the start), ``arrivals`` those of its share it never reported
    # (0 for closed load, which has no schedule).
    lost_workers: list[Mapping[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class Failure:
    """Why the run itself failed (``analysis.failure``): the rule that fired, the second, the line a person reads."""

    reason: str  # target_stopped | transport_errors | lost_worker
    at_s: float | None
    line: str

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Failure:
        return cls(d["reason"], d.get("at_s"), d["line"])

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Saturation:
    server_saturated_at: float | None  # seconds since the start of the run
    server_peak_util: float | None  # share of the server's allowed cores, at the busiest second
    gpu_saturated_at: float | None
    knee_at: float | None
    knee_reason: str
    generator_peak_util: float | None
    generator_overloaded_seconds: list[float]
    trustworthy: bool
    lines: list[str]  # what a person reads
    # Which server signal fired first ("process cores" | "busiest thread" | "queue"; "" if none), the second
    # each one that fired fired at, and the busiest thread's busiest second: the share of it that thread was
    # running or waiting for a core (``analysis.saturation``).
    server_saturation_signal: str = ""
    server_signals: dict[str, float] = field(default_factory=dict)
    server_thread_peak_busy: float | None = None

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class TrustReason:
    """One broken rule of the trust verdict: its name, what a person reads, and the run's seconds it covers."""

    rule: str  # lateness | generator_busy | starved_core | lost_worker | client_drops
    message: str
    seconds: tuple[float, ...] = ()

    @property
    def line(self) -> str:
        """What the terminal and the reports print for it."""
        return f"RESULTS NOT TRUSTWORTHY: {self.message}{seconds_text(self.seconds)}"

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TrustReason:
        return cls(d["rule"], d["message"], tuple(d.get("seconds", ())))

    def as_dict(self) -> dict:
        return {"rule": self.rule, "message": self.message, "seconds": list(self.seconds)}


@dataclass(frozen=True)
class Trust:
    """Whether the latencies are the server's (see ``analysis.trust``): trustworthy when no rule broke."""

    trustworthy: bool
    reasons: tuple[TrustReason, ...] = ()
    rules: str = ""  # the rules as text, so a reader can check the verdict

    @property
    def lines(self) -> list[str]:
        return [reason.line for reason in self.reasons]

    def seconds(self, *rules: str) -> list[float]:
        """The seconds covered by these rules (all rules if none given), sorted, once each."""
        return sorted({s for r in self.reasons if not rules or r.rule in rules for s in r.seconds})

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Trust:
        reasons = tuple(TrustReason.from_dict(r) for r in d.get("reasons", ()))
        return cls(bool(d["trustworthy"]), reasons, d.get("rules", ""))

    def as_dict(self) -> dict:
        return {"trustworthy": self.trustworthy, "reasons": [r.as_dict() for r in self.reasons], "rules": self.rules}


def seconds_text(seconds: tuple[float, ...] | list[float]) -> str:
    """`` (seconds 3-5, 9)``: runs of consecutive whole seconds folded, for a line a person reads."""
    whole = sorted({int(s) for s in seconds})
    if not whole:
        return ""
    spans, start = [], whole[0]
    for previous, current in zip(whole, [*whole[1:], None], strict=True):
        if current != previous + 1:
            spans.append(f"{start}" if start == previous else f"{start}-{previous}")
            start = current
    return f" (second{'s' if len(whole) > 1 else ''} {', '.join(spans)})"


@dataclass(frozen=True)
class SampleCheck:
    """Whether one percentile of one class rests on enough samples (see ``analysis.saturation``)."""

    cls: str
    percentile: str
    samples: int
    needed: int
    enough: bool

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SampleCheck:
        return cls(d["class"], d["percentile"], d["samples"], d["needed"], d["enough"])

    def as_dict(self) -> dict:
        return {
            "class": self.cls,
            "percentile": self.percentile,
            "samples": self.samples,
            "needed": self.needed,
            "enough": self.enough,
        }


@dataclass(frozen=True)
class ServerSplit:
    """Where a request's time in the server went, queue and compute, and where that figure came from.

    ``source`` is ``server-timing`` (the header on every answer: per request, HDR percentiles) or
    ``metrics:<server>`` (its Prometheus page scraped each second: ``triton``, ``mlserver``, ``kserve``,
    ``reference``); a Server-Timing split carries the scrape beside it as ``cross_check`` when there is one.
    """

    source: str
    resolution: str  # "per request", or "1 s means" for a scrape
    requests: int  # the requests the figures cover
    queue_ms: Mapping[str, float | None] | None  # mean, and percentiles where the source has them; None: not exposed
    compute_ms: Mapping[str, float | None] | None
    percentiles: str = ""  # how the percentiles were found (HDR, or histogram buckets' upper edges); "": none
    missing: str = ""  # what the source cannot give
    cross_check: ServerSplit | None = None

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ServerSplit:
        names = {f.name for f in fields(cls)} - {"cross_check"}
        check = d.get("cross_check")
        return cls(
            **{k: v for k, v in d.items() if k in names},
            cross_check=cls.from_dict(check) if check is not None else None,
        )

    def as_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "cross_check"}
        d["queue_ms"] = dict(self.queue_ms) if self.queue_ms is not None else None
        d["compute_ms"] = dict(self.compute_ms) if self.compute_ms is not None else None
        if self.cross_check is not None:
            d["cross_check"] = self.cross_check.as_dict()
        return d


PASS, FAIL, UNTRUSTED = "pass", "fail", "untrusted"


@dataclass(frozen=True)
class GateResult:
    name: str
    passed: bool | None  # None: not judged (a latency gate of a run that is not trustworthy)
    actual: float | None
    limit: str
    message: str
    status: str = ""  # pass | fail | untrusted; files written before it say only ``passed``

    @property
    def verdict(self) -> str:
        return self.status or (PASS if self.passed else FAIL)

    def as_dict(self) -> dict:
        return {**asdict(self), "status": self.verdict}


@dataclass(frozen=True)
class GateResults:
    passed: bool  # every judged gate passed; untrusted gates are neither
    baseline: str | None
    results: tuple[GateResult, ...]

    @property
    def untrusted(self) -> bool:
        return any(r.verdict == UNTRUSTED for r in self.results)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> GateResults:
        return cls(d["passed"], d.get("baseline"), tuple(GateResult(**r) for r in d.get("results", [])))

    def as_dict(self) -> dict:
        return {"passed": self.passed, "baseline": self.baseline, "results": [r.as_dict() for r in self.results]}


@dataclass(frozen=True, kw_only=True)
class Summary:
    """Everything a run measured and concluded; ``None`` where a stage has not run (or does not apply)."""

    scenario: Mapping[str, Any]  # name, source, description, seed
    target: Mapping[str, Any]  # url, protocol, model, embedded
    profile: Mapping[str, Any] | None  # the deployment profile of an embedded server
    load: Mapping[str, Any]  # model, shape, arrivals, duration_s, warmup_s, timeout_s, ...
    run: RunInfo
    accounting: Accounting
    throughput: Throughput
    latency_ms: Latency
    clamped_values: int = 0
    classes: tuple[str, ...] = ()
    messy: Mapping[str, Any] | None = None  # share, gate, verdicts per kind (runs with messy traffic)
    failure: Failure | None = None  # the run itself failed: the target stopped answering, a worker was lost
    saturation: Saturation | None = None
    trust: Trust | None = None  # whether the latencies are the server's, or partly the generator's own
    resources: Mapping[str, Any] | None = None  # what the sampler watched
    server_split: ServerSplit | None = None  # the server's queue and compute split, and where it came from
    sample_sufficiency: tuple[SampleCheck, ...] | None = None
    replay: Mapping[str, Any] | None = None  # what the scan found in a capture, and the replay's fidelity
    generation: Mapping[str, Any] | None = None  # generative runs: tokens, how counted, goodput (results.tokens)
    gates: GateResults | None = None
    schema: str = SCHEMA

    @property
    def name(self) -> str:
        return self.scenario.get("name", "run")

    @property
    def duration_s(self) -> float:
        return float(self.load.get("duration_s") or 0.0)

    @property
    def warmup_s(self) -> float:
        return float(self.load.get("warmup_s") or 0.0)

    @property
    def has_messy(self) -> bool:
        return self.messy is not None

    def percentiles(self, metric: str = "response", cls: str = ALL) -> Percentiles | None:
        return self.latency_ms.get(metric, {}).get(cls)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Summary:
        saturation = d.get("saturation")
        sufficiency = d.get("sample_sufficiency")
        return cls(
            schema=d.get("schema", SCHEMA),
            scenario=d.get("scenario", {}),
            target=d.get("target", {}),
            profile=d.get("profile"),
            load=d.get("load", {}),
            run=RunInfo(**d.get("run", {})),
            accounting=Accounting.from_dict(d.get("accounting", {})),
            throughput=Throughput(**d.get("throughput", {})),
            latency_ms={
                metric: {name: Percentiles.from_dict(stats) for name, stats in by_class.items()}
                for metric, by_class in d.get("latency_ms", {}).items()
            },
            clamped_values=d.get("clamped_values", 0),
            classes=tuple(d.get("classes", ())),
            messy=d.get("messy"),
            failure=Failure.from_dict(d["failure"]) if d.get("failure") is not None else None,
            saturation=Saturation(**saturation) if saturation is not None else None,
            trust=Trust.from_dict(d["trust"]) if d.get("trust") is not None else None,
            resources=d.get("resources"),
            server_split=ServerSplit.from_dict(d["server_split"]) if d.get("server_split") is not None else None,
            sample_sufficiency=tuple(map(SampleCheck.from_dict, sufficiency)) if sufficiency is not None else None,
            replay=d.get("replay"),
            generation=d.get("generation"),
            gates=GateResults.from_dict(d["gates"]) if d.get("gates") is not None else None,
        )

    def as_dict(self) -> dict:
        """The JSON document, keys in the documented order; stages not run are left out."""
        d: dict[str, Any] = {
            "schema": self.schema,
            "scenario": dict(self.scenario),
            "target": dict(self.target),
            "profile": dict(self.profile) if self.profile is not None else None,
            "load": dict(self.load),
            "run": asdict(self.run),
        }
        if self.messy is not None:
            d["messy"] = dict(self.messy)
        d["accounting"] = self.accounting.as_dict()
        d["throughput"] = self.throughput.as_dict()
        d["latency_ms"] = {
            metric: {name: p.as_dict() for name, p in by_class.items()} for metric, by_class in self.latency_ms.items()
        }
        d["clamped_values"] = self.clamped_values
        d["classes"] = list(self.classes)
        optional = {
            "failure": self.failure.as_dict() if self.failure is not None else None,
            "saturation": self.saturation.as_dict() if self.saturation is not None else None,
            "trust": self.trust.as_dict() if self.trust is not None else None,
            "resources": dict(self.resources) if self.resources is not None else None,
            "server_split": self.server_split.as_dict() if self.server_split is not None else None,
            "sample_sufficiency": [c.as_dict() for c in self.sample_sufficiency]
            if self.sample_sufficiency is not None
            else None,
            "replay": dict(self.replay) if self.replay is not None else None,
            "generation": dict(self.generation) if self.generation is not None else None,
            "gates": self.gates.as_dict() if self.gates is not None else None,
        }
        d.update({k: v for k, v in optional.items() if v is not None})
        return d


def summary_path(directory: Path) -> Path:
    return directory / "summary.json" if directory.is_dir() else directory


def read_summary(directory: Path) -> Summary:
    """A results directory's ``summary.json`` (or that file itself); ConfigError (exit 2) says what is wrong."""
    path = summary_path(directory)
    if not path.exists():
        raise ConfigError(str(directory), None, "not a results directory: it has no summary.json")
    data = read_json(path)
    if not isinstance(data, dict) or not str(data.get("schema", "")).startswith("loadtest.summary/"):
        raise ConfigError(str(path), "schema", "not a loadtest summary (no 'schema': 'loadtest.summary/N')")
    try:
        return Summary.from_dict(data)
    except (TypeError, KeyError, ValueError, AttributeError) as exc:
        raise ConfigError(str(path), None, f"not a valid loadtest summary: {exc}") from None


def write_summary(directory: Path, summary: Summary) -> Path:
    """The one writer of ``summary.json``."""
    path = directory / "summary.json"
    write_json(path, summary.as_dict())
    return path
