"""The run configuration handed to every Locust process: the scenario and where results go.

It travels as JSON (the scenario's TOML text included) in Locust's ``--loadtest-run`` option, so a
worker on another host rebuilds the same scenario, schedule and payloads from the same seed.

That JSON is on a command line ``ps`` shows to every user, and ``run.json`` keeps it: a password in the
target URL is redacted in both (``as_dict``). The real URL reaches the Locust users through the
environment (``TARGET_URL_ENV``), which only the run's own user can read.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from loadtest.config.scenario import Scenario, scenario_from_dict
from loadtest.config.tomlconf import parse_toml
from loadtest.errors import ConfigError
from loadtest.messy.custom import read_custom
from loadtest.messy.kinds import KINDS, VARIANTS, MessyRequest, RequestForm, build_all, kinds_for
from loadtest.messy.picks import MessyPool
from loadtest.replay.redact import redact_url, redact_urls_in
from loadtest.replay.schedule import ReplaySpec
from loadtest.traffic.payloads import PayloadPool, features_pool, jsonl_pool, text_pool
from loadtest.traffic.protocols import Protocol, make_protocol

TARGET_URL_ENV = "LOADTEST_TARGET_URL"  # the target URL with its credentials, for the Locust users alone
REPLAY_SHAPE_KEYS = ("capture", "format", "speed", "loops", "window_start", "window_end", "max_rate")


@dataclass(frozen=True)
class RunConfig:
    scenario_toml: str
    scenario_source: str
    target_url: str
    out_dir: Path
    progress_file: Path | None = None
    overrides: dict = field(default_factory=dict)
    meta: dict = field(default_factory=dict)  # target and profile description, for the summary
    replay: ReplaySpec | None = None  # a capture that replaces the scenario's shape

    @property
    def scenario(self) -> Scenario:
        cached = self.__dict__.get("_scenario")
        if cached is None:
            source = self.scenario_source
            cached = scenario_from_dict(parse_toml(self.scenario_toml, source), source, Path(source).parent)
            cached = cached.with_overrides(**self.overrides)
            object.__setattr__(self, "_scenario", cached)
        return cached

    def as_dict(self) -> dict:
        """JSON-able: what ``run.json`` holds and what crosses to every Locust process, credentials redacted."""
        data = asdict(self)
        data["scenario_toml"] = redact_urls_in(self.scenario_toml)
        data["target_url"] = redact_url(self.target_url)
        if "url" in self.overrides:
            data["overrides"]["url"] = redact_url(self.overrides["url"])
        data["out_dir"] = str(self.out_dir)
        data["progress_file"] = str(self.progress_file) if self.progress_file else None
        data["replay"] = data["replay"] or {}
        return data

    def to_json(self) -> str:
        return json.dumps(self.as_dict())

    @classmethod
    def from_json(cls, raw: str) -> RunConfig:
        data = json.loads(raw)
        data["out_dir"] = Path(data["out_dir"])
        data["progress_file"] = Path(data["progress_file"]) if data.get("progress_file") else None
        data["replay"] = ReplaySpec.from_dict(data["replay"]) if data.get("replay") else None
        return cls(**data)

    def meta_for_summary(self, **run: object) -> dict:
        s = self.scenario
        load = s.load
        shape = {
            "kind": load.shape.kind,
            **load.shape.params,
            **({"stages": [asdict(st) for st in load.shape.stages]} if load.shape.stages else {}),
        }
        if self.replay:
            shape = {"kind": "replay", **{k: v for k, v in asdict(self.replay).items() if k in REPLAY_SHAPE_KEYS}}
        return {
            "scenario": {"name": s.name, "source": s.source, "description": s.description, "seed": s.seed},
            "target": {
                "url": redact_url(self.target_url),
                "protocol": s.target.protocol,
                "model": s.target.model,
                **self.meta.get("target", {}),
            },
            "profile": self.meta.get("profile"),
            "load": {
                "model": load.model,
                "shape": shape,
                "arrivals": load.arrivals if load.model == "open" and not self.replay else None,
                "duration_s": load.duration,
                "warmup_s": load.warmup,
                "timeout_s": load.timeout,
                "max_in_flight": load.max_in_flight if load.model == "open" else None,
                "connections": load.pool if load.model == "open" else None,
            },
            "run": run,
            **({"messy": {"share": s.messy.share, "gate": s.messy.gate}} if s.messy.enabled else {}),
            **({"generation": s.generation.as_meta()} if s.generative else {}),
        }


def build_payloads(config: RunConfig, protocol_name: str | None = None) -> tuple[Protocol, PayloadPool]:
    """The scenario's protocol and payload pool; ``protocol_name``: the same inputs, in the same order, encoded
    for another protocol (output agreement reads a gRPC scenario's answers over REST)."""
    s = config.scenario
    t = s.target
    protocol = make_protocol(
        protocol_name or t.protocol, t.model, t.input_name, t.path, t.template, t.validate, s.generation.protocol
    )
    spec = s.payload
    if spec.source == "jsonl":
        pool = jsonl_pool(spec.file, s.seed, max_line=spec.max_line_bytes)
    elif spec.source == "features":
        pool = features_pool(spec.width, protocol.encode_features, s.seed, spec.pool_size)
    else:
        pool = text_pool(
            list(spec.classes),
            protocol.encode_text,
            s.seed,
            spec.pool_size,
            protocol.encode_prompt,
            spec.shared_prefix_tokens,
            count_tokens=token_counter(s),
        )
    if spec.only_class is not None:
        pool = pool.only(spec.only_class)
    return protocol, pool


def token_counter(scenario: Scenario):
    """The scenario's tokenizer as a counter (``traffic.token_counts``), or None when it names none."""
    if scenario.generation.tokenizer is None or not scenario.generative:
        return None
    from loadtest.traffic.token_counts import load_counter

    return load_counter(scenario.generation.tokenizer, f"{scenario.source}: generation.tokenizer")


def build_replay(config: RunConfig, pool: PayloadPool):
    """The replay's request builder: captured requests to payloads, bodies from pools where none was captured."""
    from loadtest.replay.schedule import Requests

    spec = config.replay
    seed = config.scenario.seed
    limit = spec.max_line_bytes
    pools = {
        path: jsonl_pool(Path(file), seed, max_line=limit, raise_with="--max-line-bytes") for path, file in spec.pools
    }
    return spec, Requests(spec, pool, pools)


def request_form(scenario: Scenario) -> RequestForm:
    """What the scenario's clean requests look like, for building its messy kinds."""
    t, p = scenario.target, scenario.payload
    return RequestForm(
        t.protocol,
        t.model,
        t.input_name,
        t.template,
        p.source,
        p.width,
        scenario.messy.oversized_bytes,
        scenario.generation.protocol.stream,
    )


def messy_bodies(
    scenario: Scenario, variants: int = VARIANTS
) -> tuple[dict[str, list[MessyRequest]], dict[str, float]]:
    """Every messy kind's bodies and weights: built-in kinds that fit, and the user's own."""
    spec = scenario.messy
    form = request_form(scenario)
    fitting = kinds_for(form)
    custom = read_custom(spec.custom, scenario.payload.max_line_bytes) if spec.custom else {}
    weights = dict(spec.kinds) if spec.kinds else {**{k: 1.0 for k in fitting}, **{k: 1.0 for k in custom}}
    for name in weights:
        if name not in KINDS and name not in custom:
            raise ConfigError(
                scenario.source, "messy.kinds", f"unknown kind {name!r}: neither built in nor in {spec.custom}"
            )
        if name in KINDS and name not in fitting:
            raise ConfigError(
                scenario.source,
                "messy.kinds",
                f"{name!r} does not apply to {form.protocol} with {form.source} payloads; "
                f"these do: {', '.join(fitting)}",
            )
    bodies = build_all([k for k in weights if k in KINDS], form, scenario.seed, variants)
    bodies.update({k: v for k, v in custom.items() if k in weights})
    return bodies, weights


def build_messy(config: RunConfig) -> MessyPool | None:
    scenario = config.scenario
    if not scenario.messy.enabled:
        return None
    bodies, weights = messy_bodies(scenario)
    return MessyPool(bodies, weights, scenario.messy.share, scenario.seed)
