"""The probe behind ``loadtest probe``: every messy kind sent once, without load, each answer judged.

A load run mixes messy requests into real traffic and counts their verdicts in aggregate; a probe
asks the narrower question first: how does this endpoint answer each kind of malformed,
edge-case or hostile request, one at a time, with nothing else going on? Each kind of
``messy.kinds_for`` (the scenario's protocol and payload) and each of the scenario's custom kinds
(``[messy] custom``) is sent once (variant 0), sequentially, each on a fresh connection so one
kind's broken connection cannot be blamed on the next. ``duplicate`` is the exception: it is two
identical requests at once, and its verdict is the worse of the two.

Each answer becomes the outcome string the recorder uses ("" a 2xx with a valid body,
"invalid_body", "http_NNN", "timeout", "connection") and ``messy.verdict`` judges it: correct,
wrong or defect. Over gRPC (``oip-v2-grpc``) each request goes on a fresh channel, its status is
gRPC's (``INVALID_ARGUMENT``; the outcome ``grpc_invalid_argument``, judged as ``engine.grpc_client``
and ``messy.verdicts`` say), and the kinds that mean nothing over gRPC are listed as skipped, each
with its reason (``messy.kinds.NOT_OVER_GRPC``). Before the kinds, one clean request must succeed:
against an endpoint that answers 404 to everything (a wrong model name) every ``reject`` kind would
look correct.

Exit codes: 0 every kind correct (or only wrong with ``--allow-wrong``); 1 a defect, or a wrong
verdict without ``--allow-wrong``; 2 a usage or configuration error, an unreachable target, or a
clean request that fails. ``probe.json`` and ``probe.md`` name each kind and its outcome, never
the bytes sent: a custom kind may hold secrets.
"""

from __future__ import annotations

import time
import tomllib
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from loadtest.config.profile import load_profile
from loadtest.config.scenario import Scenario, check_payload_fits, check_target_url, load_scenario, scenario_from_dict
from loadtest.engine.preflight import check_loopback
from loadtest.engine.runconfig import request_form
from loadtest.engine.target import embedded_server, grpc_url
from loadtest.errors import ConfigError, ExitCode, PreflightError
from loadtest.gates.thresholds import GateResult, junit_xml
from loadtest.messy.custom import read_custom
from loadtest.messy.kinds import (
    CORRECT,
    DEFECT,
    KINDS,
    WRONG,
    MessyRequest,
    build,
    clean_body,
    kinds_for,
    skipped_for,
)
from loadtest.messy.verdicts import verdict
from loadtest.replay.redact import redact_url
from loadtest.results.directory import results_root, run_dir_name
from loadtest.results.files import write_atomic, write_json
from loadtest.traffic.protocols import GRPC, Protocol, make_protocol

SCHEMA = "loadtest.probe/1"
DEFAULT_SCENARIO = """name = "probe"
description = "every messy kind once, against minilm over the Open Inference Protocol"

[target]
profile = "minilm-fp32"
protocol = "oip-v2"
model = "minilm"
input_name = "text"

[payload]
source = "text"

[load]
duration = "1s"  # unused: a probe sends no load
"""
_RANK = {CORRECT: 0, WRONG: 1, DEFECT: 2}
_COLOUR = {CORRECT: "green", WRONG: "yellow", DEFECT: "bold red"}


@dataclass(frozen=True, kw_only=True)
class ProbeOptions:
    target: str | None = None  # None: the scenario's url, else the embedded server of its profile
    scenario: Path | None = None  # None: DEFAULT_SCENARIO
    profile: str | None = None
    timeout: float = 5.0
    kinds: tuple[str, ...] = ()  # empty: every kind that fits, and the custom ones
    allow_wrong: bool = False
    allow_remote: bool = False
    junit: Path | None = None
    out: Path | None = None


@dataclass(frozen=True)
class Answer:
    status: int | str | None  # the HTTP status (None: no answer), or gRPC's status code by name ("OK", "NOT_FOUND")
    outcome: str  # as the recorder names it: "", "invalid_body", "http_NNN", "grpc_not_found", "timeout", "connection"
    latency_ms: float  # to the full response, or to the failure
    verdict: str


@dataclass(frozen=True)
class Probed:
    kind: str
    category: str
    expect: str
    answers: tuple[Answer, ...]  # two for a duplicate

    @property
    def deciding(self) -> Answer:
        """The worst answer (the slower of equals): a duplicate is as sound as its worse half."""
        return max(self.answers, key=lambda a: (_RANK[a.verdict], a.latency_ms))

    @property
    def verdict(self) -> str:
        return self.deciding.verdict


def probe(options: ProbeOptions, console: Console) -> int:
    """Probe the target (or an embedded server started for it), write the results, return the exit code."""
    if options.timeout <= 0:
        raise ConfigError("--timeout", None, f"must be above 0, got {options.timeout:g}s")
    if options.target and options.profile:
        raise ConfigError("--profile", None, "starts the embedded server; give it or TARGET, not both")
    scenario = probe_scenario(options.scenario).with_overrides(url=options.target, profile=options.profile)
    check_target_url(scenario)
    requests = select(scenario, options.kinds)
    skipped = {} if options.kinds else skipped_for(request_form(scenario))
    t = scenario.target
    protocol = make_protocol(t.protocol, t.model, t.input_name, t.path, t.template, t.validate)
    if t.url is not None:
        check_loopback(t.url, options.allow_remote)
    profile = load_profile(t.profile) if t.url is None else None
    grpc = t.protocol == GRPC
    with embedded_server(profile, console, grpc=grpc) if profile is not None else nullcontext() as server:
        url = t.url if server is None else grpc_url(server) if grpc else server.url
        clean = clean_body(request_form(scenario), np.random.default_rng(scenario.seed))
        with sender(url, protocol, options.timeout) as send_one:
            check_clean(send_one, url, protocol, clean)
            console.print(
                f"probing {redact_url(url)}{protocol.path}: {len(requests)} kinds, one request each, "
                f"{options.timeout:g}s timeout",
                markup=False,
            )
            probed = [probe_kind(send_one, category, request) for category, request in requests]
    console.print(probe_table(probed))
    if skipped:
        reasons = "; ".join(f"{kind} ({why})" for kind, why in skipped.items())
        console.print(f"skipped over {t.protocol}, where they mean nothing: {reasons}", markup=False)
    failing = [p for p in probed if p.verdict == DEFECT or (p.verdict == WRONG and not options.allow_wrong)]
    console.print(summary_line(probed), highlight=False)
    profile_name = profile.name if profile is not None else None
    data = probe_data(probed, url, profile_name, scenario, protocol, options, passed=not failing, skipped=skipped)
    out_dir = write_probe(options.out or results_root() / run_dir_name("probe"), data)
    if options.junit:
        options.junit.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(options.junit, probe_junit(probed, options.allow_wrong))
    if failing:
        named = {v: [p.kind for p in failing if p.verdict == v] for v in (DEFECT, WRONG)}
        why = "; ".join(f"{v} {', '.join(kinds)}" for v, kinds in named.items() if kinds)
        console.print(f"[red]probe failed:[/] {escape(why)}", highlight=False)
    elif any(p.verdict == WRONG for p in probed):
        console.print("[yellow]probe passed with wrong verdicts (--allow-wrong)[/]")
    console.print(f"results: {out_dir}", markup=False)
    return ExitCode.GATE_FAILED if failing else ExitCode.PASSED


def probe_scenario(path: Path | None) -> Scenario:
    """The scenario file, or the built-in one: OIP v2, minilm, text, profile minilm-fp32."""
    if path is None:
        scenario = scenario_from_dict(tomllib.loads(DEFAULT_SCENARIO), "<probe>", Path("."))
    else:
        scenario = load_scenario(path)
    check_payload_fits(scenario)
    return scenario


def select(scenario: Scenario, names: tuple[str, ...]) -> list[tuple[str, MessyRequest]]:
    """(category, request) of each kind to send: ``names``, or every built-in kind that fits and the custom ones.

    Variant 0 of each: a probe judges kinds, not bodies. ``[messy] kinds`` weights a run's mix and
    is ignored here; a built-in kind is built only when chosen (``oversized`` is megabytes).
    """
    form = request_form(scenario)
    fitting = kinds_for(form)
    custom = read_custom(scenario.messy.custom) if scenario.messy.custom else {}
    known = fitting + list(custom)
    skipped = skipped_for(form)
    for name in names:
        if name not in known:
            why = (
                f"{name!r} has no meaning over {form.protocol}: {skipped[name]}"
                if name in skipped
                else f"{name!r} does not apply to {form.protocol} with {form.source} payloads"
                if name in KINDS
                else f"unknown kind {name!r}"
            )
            raise ConfigError("--kind", None, f"{why}; the kinds here are {', '.join(known)}")
    chosen = [k for k in known if k in names] if names else known
    return [
        (KINDS[k].category, build(k, form, scenario.seed, 0)) if k in KINDS else ("custom", custom[k][0])
        for k in chosen
    ]


Sender = Callable[[MessyRequest], Answer]


@contextmanager
def sender(url: str, protocol: Protocol, timeout: float) -> Iterator[Sender]:
    """What sends one request and judges its answer: over HTTP, or over gRPC on a fresh channel each."""
    if protocol.name == GRPC:
        yield lambda request: send_grpc(url, protocol, request, timeout)
        return
    # No keep-alive: each request on a fresh connection, so one kind's broken connection
    # cannot be blamed on the next; one client, so its setup is not in any latency.
    with httpx.Client(base_url=url, timeout=timeout, limits=httpx.Limits(max_keepalive_connections=0)) as client:
        yield lambda request: send(client, protocol, request)


def check_clean(send_one: Sender, url: str, protocol: Protocol, body: bytes) -> None:
    """One clean request must succeed, or the verdicts would mean nothing (a 404 rejects everything)."""
    answer = send_one(MessyRequest("clean", "accept", body))
    if answer.verdict != CORRECT:
        where = redact_url(url.rstrip("/")) + protocol.path
        raise PreflightError(
            f"a clean {protocol.name} request to {where} got {status_text(answer)}; "
            "the probe needs an endpoint that answers clean requests (check the target, model and protocol)"
        )


def probe_kind(send_one: Sender, category: str, request: MessyRequest) -> Probed:
    if request.twin:  # two connections at once (the client keeps none alive)
        with ThreadPoolExecutor(2) as pool:
            answers = tuple(pool.map(lambda _: send_one(request), range(2)))
    else:
        answers = (send_one(request),)
    return Probed(request.kind, category, request.expect, answers)


def send(client: httpx.Client, protocol: Protocol, request: MessyRequest) -> Answer:
    """The request's exact bytes and content type, its answer as an outcome and a verdict."""
    status: int | None = None
    start = time.perf_counter()
    try:
        response = client.post(protocol.path, content=request.body, headers={"content-type": request.content_type})
        status = response.status_code
        if not 200 <= status < 300:
            outcome = f"http_{status}"
        else:
            outcome = "" if protocol.valid(response.content) else "invalid_body"
    except httpx.TimeoutException:
        outcome = "timeout"
    except httpx.TransportError:  # refused, reset, closed mid-answer, a malformed answer
        outcome = "connection"
    except httpx.HTTPError as exc:  # anything else the client raised (a body it could not decode)
        outcome = type(exc).__name__
    latency_ms = (time.perf_counter() - start) * 1000
    return Answer(status, outcome, round(latency_ms, 2), verdict(request.expect, outcome))


def send_grpc(url: str, protocol: Protocol, request: MessyRequest, timeout: float) -> Answer:
    """The request's exact bytes as one ModelInfer call on a channel of its own; its status, outcome and verdict."""
    from loadtest.engine import grpc_client

    start = time.perf_counter()
    with grpc_client.open_channel(url) as channel:
        answer = grpc_client.call(grpc_client.infer_call(channel, protocol.path), request.body, timeout)
        latency_ms = (time.perf_counter() - start) * 1000
    outcome, _, _ = grpc_client.outcome(answer, protocol.valid)
    return Answer(grpc_client.status_name(answer), outcome, round(latency_ms, 2), verdict(request.expect, outcome))


# -- what the probe found -------------------------------------------------------------------------


def status_text(answer: Answer) -> str:
    return _status(answer.status, answer.outcome)


def _status(status: int | str | None, outcome: str) -> str:
    """The status as a person reads it: ``400``, ``200 invalid body``, ``NOT_FOUND``, ``timeout``, ``connection``."""
    if status is None:
        return outcome
    return f"{status} invalid body" if outcome == "invalid_body" else str(status)


def _joined(p: Probed, cell) -> str:
    return ", ".join(cell(a) for a in p.answers)


def probe_table(probed: list[Probed]) -> Table:
    table = Table(title="messy kinds, one request each")
    for name, justify in (
        ("kind", "left"),
        ("category", "left"),
        ("expected", "left"),
        ("status", "left"),
        ("latency ms", "right"),
        ("verdict", "left"),
    ):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for p in probed:
        table.add_row(
            *map(Text, (p.kind, p.category, p.expect, _joined(p, status_text))),  # never read as markup
            _joined(p, lambda a: f"{a.latency_ms:.1f}"),
            f"[{_COLOUR[p.verdict]}]{p.verdict}[/]",
        )
    return table


def counts(probed: list[Probed]) -> dict[str, int]:
    return {v: sum(p.verdict == v for p in probed) for v in (CORRECT, WRONG, DEFECT)}


def summary_line(probed: list[Probed]) -> str:
    return _summary(len(probed), counts(probed))


def _summary(kinds: int, c: dict[str, int]) -> str:
    """``24 kinds: 20 correct, 1 wrong, 3 defects``."""
    return f"{kinds} kinds: {c[CORRECT]} correct, {c[WRONG]} wrong, {c[DEFECT]} defect" + "s" * (c[DEFECT] != 1)


def probe_data(
    probed: list[Probed],
    url: str,
    profile: str | None,
    scenario: Scenario,
    protocol: Protocol,
    options: ProbeOptions,
    passed: bool,
    skipped: dict[str, str] | None = None,
) -> dict:
    """``probe.json``: each kind's outcome and verdict, and the kinds the protocol skips and why; no request body
    (a custom kind may hold secrets)."""

    def answer(a: Answer) -> dict:
        return {"status": a.status, "outcome": a.outcome, "latency_ms": a.latency_ms, "verdict": a.verdict}

    return {
        "schema": SCHEMA,
        "target": redact_url(url),
        "profile": profile,  # the embedded server's, or None for a given target
        "protocol": protocol.name,
        "path": protocol.path,
        "scenario": scenario.name,
        "timeout_s": options.timeout,
        "allow_wrong": options.allow_wrong,
        "passed": passed,
        "counts": {"kinds": len(probed), **counts(probed)},
        "kinds": [
            {
                "kind": p.kind,
                "category": p.category,
                "expect": p.expect,
                "outcome": p.deciding.outcome,
                "status": p.deciding.status,
                "latency_ms": p.deciding.latency_ms,
                "verdict": p.verdict,
                "answers": [answer(a) for a in p.answers],
            }
            for p in probed
        ],
        "skipped": [{"kind": kind, "reason": why} for kind, why in (skipped or {}).items()],
    }


def write_probe(out_dir: Path, data: dict) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / "probe.json", data, indent=1)
    write_atomic(out_dir / "probe.md", probe_markdown(data))
    return out_dir


def probe_markdown(data: dict) -> str:
    c = data["counts"]
    lines = [
        f"# Probe: {data['scenario']} against {data['target']}{data['path']}",
        "",
        f"{_summary(c['kinds'], c)}: {'passed' if data['passed'] else 'failed'}"
        + (" (wrong verdicts allowed)" if data["allow_wrong"] else ""),
        "",
        "| kind | category | expected | status | latency ms | verdict |",
        "|---|---|---|---|--:|---|",
    ]
    for k in data["kinds"]:
        status = ", ".join(_status(a["status"], a["outcome"]) for a in k["answers"])
        latency = ", ".join(f"{a['latency_ms']:.1f}" for a in k["answers"])
        verdict_cell = f"**{k['verdict']}**" if k["verdict"] != CORRECT else k["verdict"]
        lines.append(f"| {k['kind']} | {k['category']} | {k['expect']} | {status} | {latency} | {verdict_cell} |")
    skipped = data.get("skipped") or []
    if skipped:
        lines += ["", f"Skipped over {data['protocol']}, where they mean nothing:", ""]
        lines += [f"- {s['kind']}: {s['reason']}" for s in skipped]
    return "\n".join(lines) + "\n"


def probe_junit(probed: list[Probed], allow_wrong: bool) -> str:
    """One test case per kind, in the gates' JUnit format: a defect fails, and a wrong verdict unless allowed."""
    results = []
    for p in probed:
        a = p.deciding
        failed = p.verdict == DEFECT or (p.verdict == WRONG and not allow_wrong)
        note = " (allowed by --allow-wrong)" if p.verdict == WRONG and not failed else ""
        message = f"expected {p.expect}, got {_joined(p, status_text)}: {p.verdict}{note}"
        results.append(GateResult(p.kind, not failed, a.latency_ms, p.expect, message))
    return junit_xml(results, "probe")
