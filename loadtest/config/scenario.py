"""Scenarios: what load to send. A TOML file in ``scenarios/``, parsed once into frozen dataclasses.

Every key is checked up front: an unknown key, a wrong type or an impossible value stops with one
message naming the file and the key, before any server starts or request is sent. Numbers that size
something in memory (a pool, a body, a line) have a ceiling, and the load asked of each load-generator
process has one too (``check_generator_load``), so a typo such as a rate of 1e9 is one line, not a
process growing until it is killed.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from urllib.parse import urlsplit

from loadtest.config.tomlconf import Table, read_toml
from loadtest.errors import ConfigError
from loadtest.messy.kinds import DEFAULT_OVERSIZED, KINDS
from loadtest.traffic import shapes
from loadtest.traffic.arrivals import PROCESSES
from loadtest.traffic.lines import MAX_LINE_BYTES
from loadtest.traffic.payloads import PayloadClass
from loadtest.traffic.protocols import GENERATIVE, GRPC, PROTOCOLS, Generation
from loadtest.traffic.shapes import Shape
from loadtest.traffic.token_latency import parse_slo
from loadtest.units import parse_share

MESSY_GATE = "messy_defects == 0"
# What one load-generator process may be asked for. One process sends 2,400-3,000 req/s (2,385/s asked
# for 4,500/s on a shared two-core machine; plain Locust takes 300-370 µs of CPU a request:
# docs/benchmarks.md); past the cap, even a fast idle core could not keep to the schedule, and a schedule
# far past it (1e9/s) only piles up unsent arrivals in memory. Above it, --processes N share the load.
MAX_RATE_PER_PROCESS = 5_000.0
MAX_USERS_PER_PROCESS = 5_000  # closed load: Locust users (greenlets, each with its connections) per process
MAX_TURNS = 64  # a conversation class's turns: each body carries every turn before it
MAX_POOL = 65_536  # bodies per class, features per row, tokens per text: what a payload pool holds in memory
MAX_BODY_BYTES = 1_000_000_000  # the messy oversized body, and the longest line a payload file may have
DEFAULT_CLASSES = (
    PayloadClass("short", 70, 4, 16),
    PayloadClass("medium", 25, 17, 127),
    PayloadClass("long", 5, 128, 256),
)


@dataclass(frozen=True)
class Target:
    url: str | None = None  # None: start the embedded reference server
    profile: str = "minilm-fp32"
    protocol: str = "oip-v2"
    model: str = "minilm"
    input_name: str = "text"
    path: str = ""
    template: str = ""
    validate: bool = True  # parse every successful body: a 200 with garbage in it is an error (invalid_body)
    # The server's Prometheus page, scraped each second for its own queue/compute split: a URL, False for none,
    # True for /metrics on a loopback target's host and port when it holds a known server's series.
    metrics: str | bool = True


@dataclass(frozen=True)
class PayloadSpec:
    source: str = "text"  # text | features | jsonl
    classes: tuple[PayloadClass, ...] = DEFAULT_CLASSES
    file: Path | None = None
    width: int = 8
    pool_size: int = 256
    only_class: str | None = None  # send only this class (capacity when all traffic is one class)
    max_line_bytes: int = MAX_LINE_BYTES  # a JSONL payload (or messy kinds) file's longest line
    shared_prefix_tokens: int = 0  # generative protocols: one prefix every prompt starts with


@dataclass(frozen=True)
class LoadSpec:
    model: str = "open"  # open | closed
    shape: Shape = field(default_factory=lambda: Shape("constant", {"value": 10.0}, duration=30.0))
    duration: float = 30.0
    warmup: float = 0.0
    timeout: float = 10.0
    max_in_flight: int = 256
    arrivals: str = "poisson"
    think_time: float = 0.0
    connections: int = 0  # open load: the client's connection pool; 0 = as many as max_in_flight

    @property
    def pool(self) -> int:
        return self.connections or self.max_in_flight


@dataclass(frozen=True)
class MessySpec:
    """``[messy]``: a share of the traffic replaced by malformed, edge-case and hostile requests."""

    share: float = 0.0
    kinds: tuple[tuple[str, float], ...] = ()  # (kind, weight); empty: every built-in kind that fits
    oversized_bytes: int = DEFAULT_OVERSIZED
    custom: Path | None = None  # JSONL of the user's own kinds, each with its expected outcome
    gate: bool = True  # a messy defect (5xx, reset, timeout) fails the run

    @property
    def enabled(self) -> bool:
        return self.share > 0


@dataclass(frozen=True)
class GenerationSpec:
    """``[generation]``: how generative requests ask for their answer, and goodput's per-request bounds."""

    protocol: Generation = Generation()
    goodput: tuple[str, ...] = ()  # e.g. ("ttft < 500ms", "tpot < 50ms"): DistServe's goodput
    tokenizer: Path | None = None  # a Hugging Face tokenizer.json: counts the tokens where the server gives no usage

    def slos_ms(self) -> dict[str, float]:
        return dict(map(parse_slo, self.goodput))

    def as_meta(self) -> dict:
        """What the summary needs to say how the requests asked and what goodput judged."""
        return {
            **asdict(self.protocol),
            "goodput": list(self.goodput),
            "tokenizer": str(self.tokenizer) if self.tokenizer else None,
        }


@dataclass(frozen=True)
class Scenario:
    name: str
    source: str
    description: str = ""
    seed: int = 1
    target: Target = Target()
    payload: PayloadSpec = PayloadSpec()
    load: LoadSpec = LoadSpec()
    thresholds: tuple[str, ...] = ()
    messy: MessySpec = MessySpec()
    generation: GenerationSpec = GenerationSpec()

    @property
    def generative(self) -> bool:
        return self.target.protocol in GENERATIVE

    @property
    def total_seconds(self) -> float:
        return self.load.warmup + self.load.duration

    @property
    def gates(self) -> tuple[str, ...]:
        """The scenario's thresholds, and with messy traffic the default gate: no defect (unless ``gate = false``)."""
        if self.messy.enabled and self.messy.gate:
            return (*self.thresholds, MESSY_GATE)
        return self.thresholds

    def with_overrides(
        self,
        rate: float | None = None,
        users: int | None = None,
        duration: float | None = None,
        url: str | None = None,
        warmup: float | None = None,
        profile: str | None = None,
        only_class: str | None = None,
        replay: bool = False,
        messy_share: float | None = None,
        metrics: str | bool | None = None,
    ) -> Scenario:
        """The scenario with CLI overrides applied: a constant rate or user count, a new duration, one class.

        ``replay``: a capture sets the timing, so the load is open and nothing of it is warm-up.
        """
        load = self.load
        if replay:
            load = replace(load, model="open", warmup=0.0)
        if warmup is not None and not replay:  # the warm-up comes before the measured time: the shape moves with it
            load = replace(load, warmup=warmup, shape=replace(load.shape, duration=load.duration + warmup))
        if duration is not None:
            load = replace(load, duration=duration, shape=replace(load.shape, duration=duration + load.warmup))
        if rate is not None:
            load = replace(load, model="open", shape=Shape("constant", {"value": rate}, duration=load.shape.duration))
        if users is not None:
            load = replace(
                load, model="closed", shape=Shape("constant", {"value": float(users)}, duration=load.shape.duration)
            )
        target = self.target
        if url is not None:
            target = replace(target, url=url)
        if profile is not None:
            target = replace(target, profile=profile, url=None)
        if metrics is not None:
            target = replace(target, metrics=metrics)
        payload = self.payload if only_class is None else replace(self.payload, only_class=only_class)
        messy = self.messy if messy_share is None else replace(self.messy, share=messy_share)
        return replace(self, load=load, target=target, payload=payload, messy=messy)


def _target(t: Table) -> Target:
    url = t.get("url", str)
    protocol = t.choice("protocol", PROTOCOLS, Target.protocol)
    if url is not None and (problem := url_problem(url, protocol)) is not None:
        raise t.error("url", problem)
    target = Target(
        url=url or None,
        profile=t.get("profile", str, Target.profile),
        protocol=protocol,
        model=t.get("model", str, Target.model),
        input_name=t.get("input_name", str, Target.input_name),
        path=t.get("path", str, ""),
        template=t.get("template", str, ""),
        validate=t.get("validate", bool, True),
        metrics=_metrics(t),
    )
    if target.template and '"{{text}}"' not in target.template:
        raise t.error("template", 'must contain "{{text}}" (with its quotes) where the input goes')
    if protocol == GRPC and (target.path or target.template):
        raise t.error("path" if target.path else "template", f"does not apply to {GRPC}: it calls ModelInfer")
    t.done()
    return target


def url_problem(url: str, protocol: str) -> str | None:
    """Why ``url`` cannot be the target of ``protocol``, or None: ``grpc://host:port`` for gRPC, else http(s)://.

    gRPC is plaintext only (no TLS, as every target is on loopback unless ``--allow-remote``).
    """
    if protocol != GRPC:
        if url.startswith(("http://", "https://")):
            return None
        if url.startswith(("grpc://", "grpcs://")):
            return f'{url!r} is a gRPC address; it takes protocol = "{GRPC}"'
        return f"must start with http:// or https://, got {url!r}"
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = None
    if parts.scheme == "grpcs":
        return f"{url!r} asks for TLS; {GRPC} speaks plaintext gRPC only: grpc://host:port"
    if parts.scheme != "grpc" or not parts.hostname or port is None or parts.path not in ("", "/"):
        return f"{GRPC} takes grpc://host:port (plaintext), got {url!r}"
    return None


def _metrics(t: Table) -> str | bool:
    """``metrics``: a page's URL, ``false`` for none, ``true`` (the default) for the target's own ``/metrics``."""
    value = t.get("metrics", (str, bool), True)
    if isinstance(value, str) and not value.startswith(("http://", "https://")):
        raise t.error("metrics", f"must be a URL starting with http:// or https://, or true or false; got {value!r}")
    return value


def _payload(t: Table, base: Path) -> PayloadSpec:
    source = t.choice("source", ("text", "features", "jsonl"), "text")
    raw_classes = t.get("classes", list)
    classes = DEFAULT_CLASSES
    if raw_classes is not None:
        parsed = []
        for i, raw in enumerate(raw_classes):
            c = Table(raw, t.source, t.key(f"classes[{i}]"))
            cls = PayloadClass(
                c.get("name", str, required=True),
                c.number("weight", 1.0),
                int(c.number("min_tokens", 4, minimum=2, maximum=MAX_POOL)),
                int(c.number("max_tokens", 16, minimum=2, maximum=MAX_POOL)),
                int(c.number("min_output_tokens", 0, maximum=MAX_POOL)),
                int(c.number("max_output_tokens", 0, maximum=MAX_POOL)),
                int(c.number("turns", 1, minimum=1, maximum=MAX_TURNS)),
            )
            if cls.max_tokens < cls.min_tokens:
                raise c.error("max_tokens", f"is below min_tokens ({cls.max_tokens} < {cls.min_tokens})")
            if cls.max_output_tokens < cls.min_output_tokens:
                raise c.error(
                    "max_output_tokens",
                    f"is below min_output_tokens ({cls.max_output_tokens} < {cls.min_output_tokens})",
                )
            c.done()
            parsed.append(cls)
        if not parsed or sum(c.weight for c in parsed) <= 0:
            raise t.error("classes", "needs at least one class with a weight above 0")
        classes = tuple(parsed)
    file = t.get("file", str)
    if source == "jsonl" and not file:
        raise t.error("file", "is required when source = 'jsonl'")
    spec = PayloadSpec(
        source=source,
        classes=classes,
        file=(base / file) if file else None,
        width=int(t.number("width", 8, minimum=1, maximum=MAX_POOL)),
        pool_size=int(t.number("pool_size", 256, minimum=1, maximum=MAX_POOL)),
        max_line_bytes=int(t.number("max_line_bytes", MAX_LINE_BYTES, minimum=1, maximum=MAX_BODY_BYTES)),
        shared_prefix_tokens=int(t.number("shared_prefix_tokens", 0, maximum=MAX_POOL)),
    )
    t.done()
    return spec


def _generation(t: Table, base: Path) -> GenerationSpec:
    defaults = Generation()
    protocol = Generation(
        stream=t.get("stream", bool, defaults.stream),
        include_usage=t.get("include_usage", bool, defaults.include_usage),
        ignore_eos=t.get("ignore_eos", bool, defaults.ignore_eos),
    )
    goodput = t.get("goodput", list, [])
    for i, text in enumerate(goodput):
        if not isinstance(text, str):
            raise t.error(f"goodput[{i}]", f"expected a string like 'ttft < 500ms', got {text!r}")
        try:
            parse_slo(text)
        except ValueError as exc:
            raise t.error(f"goodput[{i}]", str(exc)) from None
    tokenizer = t.get("tokenizer", str)
    if tokenizer is not None and not (base / tokenizer).is_file():
        raise t.error("tokenizer", f"{base / tokenizer}: no such file (a Hugging Face tokenizer.json)")
    t.done()
    return GenerationSpec(protocol, tuple(goodput), (base / tokenizer) if tokenizer else None)


def _load(t: Table) -> LoadSpec:
    model = t.choice("model", ("open", "closed"), "open")
    warmup = t.duration("warmup", 0)
    shape_table = t.get("shape", dict, {"kind": "constant", "value": 10})
    kind = shape_table.get("kind", "constant")
    if kind == "stages":
        shape = shapes.from_table(shape_table, 0.0, t.source, t.key("shape"))
        duration = t.duration("duration", shapes.stages_duration(shape) - warmup, above_zero=True)
    else:
        duration = t.duration("duration", required=True, above_zero=True)
    shape = shapes.from_table(shape_table, warmup + duration, t.source, t.key("shape"))
    # A bursty shape, or stages given a burstiness other than 1, only mean something with gamma gaps.
    gamma_only = kind == "bursty" or (kind == "stages" and shape.burstiness != 1.0)
    spec = LoadSpec(
        model=model,
        shape=shape,
        duration=duration,
        warmup=warmup,
        timeout=t.duration("timeout", "10s", above_zero=True),
        max_in_flight=int(t.number("max_in_flight", 256, minimum=1)),
        arrivals=t.choice("arrivals", PROCESSES, "gamma" if gamma_only else "poisson"),
        think_time=t.duration("think_time", 0),
        connections=int(t.number("connections", 0)),
    )
    if gamma_only and spec.arrivals != "gamma":
        what = "a bursty shape" if kind == "bursty" else f"a stages shape with burstiness {shape.burstiness:g}"
        raise t.error("arrivals", f"{what} draws gamma inter-arrivals; leave arrivals out or set 'gamma'")
    t.done()
    return spec


def load_scenario(path: Path) -> Scenario:
    path = Path(path)
    return scenario_from_dict(read_toml(path), str(path), path.parent)


def scenario_from_dict(data: dict, source: str, base: Path) -> Scenario:
    """A scenario from parsed TOML; ``base`` is where relative payload files are looked up."""
    path = Path(source)
    top = Table(data, source)
    seed = top.get("seed", int, 1)
    if seed < 0:  # numpy's generators take none
        raise top.error("seed", f"must be at least 0, got {seed}")
    scenario = Scenario(
        name=top.get("name", str, path.stem),
        source=source,
        description=top.get("description", str, ""),
        seed=seed,
        target=_target(top.table("target")),
        payload=_payload(top.table("payload"), base),
        load=_load(top.table("load")),
        thresholds=tuple(_thresholds(top.table("slo"))),
        messy=_messy(top.table("messy"), base),
        generation=_generation(top.table("generation"), base),
    )
    top.done()
    if "generation" in data and not scenario.generative:
        raise top.error("generation", f"applies to {' and '.join(GENERATIVE)} targets only")
    return scenario


def _messy(t: Table, base: Path) -> MessySpec:
    raw_share = t.get("share", (int, float, str), 0.0)
    try:
        share = parse_share(raw_share)
    except ValueError as exc:
        raise t.error("share", str(exc)) from None
    raw_kinds = t.get("kinds", (list, dict), [])
    pairs = list(raw_kinds.items()) if isinstance(raw_kinds, dict) else [(k, 1.0) for k in raw_kinds]
    custom = t.get("custom", str)
    kinds = []
    for name, weight in pairs:
        if not isinstance(name, str) or (name not in KINDS and custom is None):
            raise t.error("kinds", f"unknown kind {name!r}; the kinds are {', '.join(KINDS)}")
        if isinstance(weight, bool) or not isinstance(weight, int | float) or weight < 0:
            raise t.error(f"kinds.{name}", f"a weight must be a number >= 0, got {weight!r}")
        kinds.append((name, float(weight)))
    spec = MessySpec(
        share=share,
        kinds=tuple(kinds),
        oversized_bytes=int(t.number("oversized_bytes", DEFAULT_OVERSIZED, minimum=1, maximum=MAX_BODY_BYTES)),
        custom=(base / custom) if custom else None,
        gate=t.get("gate", bool, True),
    )
    t.done()
    return spec


def _thresholds(t: Table) -> list[str]:
    values = t.get("thresholds", list, [])
    for i, value in enumerate(values):
        if not isinstance(value, str):
            raise t.error(f"thresholds[{i}]", f"expected a string like 'p99 < 250ms', got {value!r}")
    t.done()
    return values


def check_payload_fits(scenario: Scenario) -> None:
    if scenario.payload.source == "features" and scenario.target.protocol == "openai-embeddings":
        raise ConfigError(scenario.source, "payload.source", "openai-embeddings takes text, not features")
    if scenario.payload.source == "jsonl" and scenario.target.protocol == GRPC:
        raise ConfigError(scenario.source, "payload.source", f"{GRPC} takes text or features, not JSON bodies")


def check_target_url(scenario: Scenario, option: str = "--target") -> None:
    """The target URL fits the protocol, however it was given (a ``--target`` replaces the scenario's ``url``)."""
    url = scenario.target.url
    if url is not None and (problem := url_problem(url, scenario.target.protocol)) is not None:
        raise ConfigError(option, None, problem)


def check_generator_load(scenario: Scenario, processes: int, option: str | None = None) -> None:
    """Refuse a load that ``processes`` load-generator processes cannot be asked for, before anything starts.

    Open load: the shape's ceiling over ``MAX_RATE_PER_PROCESS`` a process; closed load: its users over
    ``MAX_USERS_PER_PROCESS``. ``option`` names the command-line option the load came from (``--rate``,
    ``--users``), else the message names the scenario's key: a value is checked the same wherever it is written.
    """
    load = scenario.load
    peak = load.shape.ceiling
    if load.model == "open":
        what, cap = f"a rate of {peak:,.6g}/s", f"{MAX_RATE_PER_PROCESS:,.0f}/s"
        need = math.ceil(peak / MAX_RATE_PER_PROCESS)
    else:
        what, cap = f"{peak:,.6g} users", f"{MAX_USERS_PER_PROCESS:,} users"
        need = math.ceil(peak / MAX_USERS_PER_PROCESS)
    if need <= processes:
        return
    where, key = (option, None) if option else (scenario.source, "load.shape")
    raise ConfigError(where, key, over_the_cap(what, cap, processes, need))


def over_the_cap(what: str, cap: str, processes: int, need: int) -> str:
    """The message for a load over the per-process cap: what was asked, the cap, and the processes it takes."""
    given = f"{processes} processes" if processes > 1 else "one process"
    fix = f"use --processes {need}" if need <= 1024 else f"that takes {need:,} processes: lower it"
    return f"{what} is over the {cap} a load-generator process may be asked for ({given}); {fix}"
