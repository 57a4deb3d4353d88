"""Output agreement between two deployment profiles: the same inputs to each, their answers compared.

``loadtest compare --agreement N`` runs this after the timed rounds, on the servers the rounds ran
on (still up, and idle but for this): the scenario's first N distinct inputs are sent to each
profile's server in turn, at batch 1 and under load (``engine.model_outputs``), each profile
once however many it is compared with, and the outputs are compared (``analysis.agreement``), A
against B and each variant against itself (the batch-composition effect). ``measure_agreement``
does the same for two profiles with servers of its own, started in turn.

A scenario over gRPC (``oip-v2-grpc``) has its outputs read over REST, as OIP v2 JSON, from the
same profiles' servers: the reference server serves both through one infer path (the same
batcher, the same model), and the inputs are the same ones, in the same order, from the same seed.
What is compared is the models' answers, which do not depend on the protocol that carried them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from loadtest.analysis.agreement import agreement, metric_for, token_agreement
from loadtest.config.profile import Profile, load_profile
from loadtest.config.scenario import Scenario, load_scenario
from loadtest.engine.model_outputs import (
    READABLE,
    Collected,
    Generated,
    collect_concurrent,
    collect_sequential,
    collect_tokens,
    distinct_payloads,
    model_kind,
)
from loadtest.engine.runconfig import RunConfig, build_payloads
from loadtest.engine.target import embedded_server
from loadtest.errors import ConfigError, RunError
from loadtest.traffic.payloads import Payload
from loadtest.traffic.protocols import GENERATIVE, GRPC, Protocol

# Protocols whose outputs are read over another that the same servers serve (see the module's docstring).
READ_OVER = {GRPC: "oip-v2"}


# Clients sending the inputs under load. The reference server batches only requests within a few tokens
# of each other (its padding budget), so the batches it forms grow with the queue it can choose from:
# on the steady scenario's 64 inputs, 64 clients gave batches of 5.1 to 6.2 rows, 32 clients 3.9 to 5.4.
UNDER_LOAD_CLIENTS = 64


@dataclass(frozen=True)
class Variant:
    profile: Profile
    kind: str | None
    batch1: Collected | Generated
    under_load: Collected | Generated


def _measure(profile: Profile, url: str, inputs: Inputs) -> Variant:
    protocol, payloads, timeout = inputs.protocol, inputs.payloads, inputs.timeout
    kind = model_kind(url, protocol, inputs.scenario.target.model, timeout)
    if protocol.name in GENERATIVE:  # greedy tokens, each prompt alone, then all of them decoded together
        alone = collect_tokens(url, protocol, payloads, 1, max(timeout, 120.0))
        together = collect_tokens(url, protocol, payloads, inputs.concurrency, max(timeout, 120.0))
        return Variant(profile, kind, alone, together)
    batch1 = collect_sequential(url, protocol, payloads, timeout)
    under_load = collect_concurrent(url, protocol, payloads, inputs.concurrency, timeout)
    return Variant(profile, kind, batch1, under_load)


@dataclass(frozen=True)
class Inputs:
    """What every variant is sent: the scenario's first distinct inputs, encoded for the protocol they are read over."""

    scenario: Scenario
    protocol: Protocol
    payloads: list[Payload]
    concurrency: int
    timeout: float


def agreement_inputs(
    scenario: Scenario, n: int, concurrency: int = UNDER_LOAD_CLIENTS, timeout: float = 30.0
) -> Inputs:
    """The first ``n`` distinct inputs of a scenario already loaded (and checked: ``checked_inputs``)."""
    config = RunConfig(Path(scenario.source).read_text(), str(scenario.source), "", Path("."))
    protocol, pool = build_payloads(config, READ_OVER.get(scenario.target.protocol))
    return Inputs(scenario, protocol, distinct_payloads(pool, n), concurrency, timeout)


def measure_variants(
    profiles: list[Profile], inputs: Inputs, servers: Mapping[str, str] | None = None
) -> dict[str, Variant]:
    """Each profile's answers to the inputs, by profile name: on ``servers`` (name: URL, already running),
    or on a server of its own, started for it and stopped after (one at a time, so none competes with another)."""
    variants = {}
    for profile in profiles:
        if servers is not None:
            variants[profile.name] = _measure(profile, servers[profile.name], inputs)
        else:
            with embedded_server(profile) as server:
                variants[profile.name] = _measure(profile, server.url, inputs)
    return variants


def _compared(x: Collected | Generated, y: Collected | Generated, kind: str | None) -> dict:
    if isinstance(x, Generated):
        return token_agreement(x.tokens, y.tokens)
    return agreement(x.outputs, y.outputs, kind)


def agreement_between(a: Variant, b: Variant, inputs: Inputs) -> dict:
    """A's answers against B's, and each against itself under load: the dict ``measure_agreement`` describes."""
    if isinstance(a.batch1, Generated):
        return {**_header(a, b, inputs, "tokens"), **_pairs(a, b, a.kind or b.kind)}
    if a.batch1.outputs.shape != b.batch1.outputs.shape:
        raise RunError(
            f"{a.profile.name} and {b.profile.name} answer in different shapes "
            f"({list(a.batch1.outputs.shape)} vs {list(b.batch1.outputs.shape)}); their outputs cannot be compared"
        )
    kind = a.kind or b.kind
    return {**_header(a, b, inputs, metric_for(kind, a.batch1.outputs)), **_pairs(a, b, kind)}


def _header(a: Variant, b: Variant, inputs: Inputs, metric: str) -> dict:
    scenario = inputs.scenario
    return {
        "scenario": scenario.name,
        "seed": scenario.seed,
        "protocol": scenario.target.protocol,
        "read_over": inputs.protocol.name,  # the protocol the outputs were read over (READ_OVER)
        "model": scenario.target.model,
        "kind": a.kind or b.kind,
        "metric": metric,
        "n": len(inputs.payloads),
        "concurrency": inputs.concurrency,
    }


def _pairs(a: Variant, b: Variant, kind: str | None) -> dict:
    return {
        "batch1": _compared(a.batch1, b.batch1, kind),
        "under_load": _compared(a.under_load, b.under_load, kind),
        "a": _describe(a, kind),
        "b": _describe(b, kind),
    }


def measure_agreement(
    profile_a: str | Profile,
    profile_b: str | Profile,
    scenario_path: str | Path,
    n: int = 256,
    concurrency: int = UNDER_LOAD_CLIENTS,
    timeout: float = 30.0,
) -> dict:
    """Send the scenario's first ``n`` distinct inputs to each profile's embedded server and compare.

    Each profile's reference server is started in turn (never both at once, so neither competes
    for the other's cores) and stopped after. The scenario gives the protocol, the model and the
    inputs; its target URL is not used. Returns a JSON-able dict:

    - ``batch1``, ``under_load``: A against B, each input at batch 1 / in the batches load made;
    - ``a``, ``b``: per variant, its ``profile`` and ``variant``, how each pass was batched
      (``batch1`` / ``under_load``: ``mean_batch_size`` as the requests saw it, ``max_batch_size``,
      ``mean_concurrency``, ``seconds``) and ``batch_effect``: its own batch-1 outputs against its
      own under-load outputs;
    - ``n`` (inputs sent), ``kind`` (the model's kind), ``metric`` (``embedding`` or ``label``),
      ``scenario``, ``seed``, ``protocol``, ``read_over`` (the protocol the outputs were read over:
      ``oip-v2`` for a gRPC scenario, else its own), ``model``, ``concurrency``.
    """
    profiles, scenario = checked_inputs(profile_a, profile_b, scenario_path, n, concurrency)
    inputs = agreement_inputs(scenario, n, concurrency, timeout)
    variants = measure_variants(profiles, inputs)
    return agreement_between(variants[profiles[0].name], variants[profiles[1].name], inputs)


def checked_inputs(
    profile_a: str | Profile, profile_b: str | Profile, scenario_path: str | Path, n: int = 1, concurrency: int = 1
) -> tuple[list[Profile], Scenario]:
    """The two profiles and the scenario, once the counts, the protocol and the served model are known to fit.

    ``compare`` asks before its rounds, so a comparison that cannot end is refused before it starts.
    """
    if n < 1:
        raise ConfigError("--n", None, f"needs at least 1 input, got {n}")
    if concurrency < 1:
        raise ConfigError("--concurrency", None, f"needs at least 1 client, got {concurrency}")
    profiles = [p if isinstance(p, Profile) else load_profile(p) for p in (profile_a, profile_b)]
    scenario = load_scenario(Path(scenario_path))
    model = scenario.target.model
    if READ_OVER.get(scenario.target.protocol, scenario.target.protocol) not in READABLE:
        raise ConfigError(
            scenario.source,
            "target.protocol",
            f"output agreement needs {' or '.join([*READABLE, *READ_OVER])}, whose answers can be compared; "
            f"got {scenario.target.protocol} (compare --agreement 0 skips it)",
        )
    for profile in profiles:
        if profile.model != model:
            raise ConfigError(
                profile.source,
                "model.name",
                f"serves '{profile.model}' but scenario {scenario.name} sends to '{model}'",
            )
    return profiles, scenario


def _describe(variant: Variant, kind: str | None) -> dict:
    return {
        "profile": variant.profile.name,
        "variant": variant.profile.variant,
        "batch1": variant.batch1.describe(),
        "under_load": variant.under_load.describe(),
        "batch_effect": _compared(variant.batch1, variant.under_load, kind),
    }
