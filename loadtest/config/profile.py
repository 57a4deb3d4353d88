"""Deployment profiles: what is deployed. A TOML file in ``profiles/``; the embedded server reads it.

A profile holds the model and variant, the server settings (threads, batching, cores to pin to),
the hardware it stands for, and its price: per instance-hour or per request, always with where
the price came from and when, because prices change.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from loadtest.config.tomlconf import Table, read_toml
from loadtest.errors import ConfigError

_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


@dataclass(frozen=True)
class Price:
    """What a deployment costs: per instance-hour, or per request (a managed endpoint)."""

    per_hour: float | None = None
    per_request: float | None = None
    source: str = ""
    date: str = ""
    # A generative API priced per token: per_request is these at the profile's tokens a request, and the cost
    # projection prices them again at a measured workload's tokens a request (``analysis.projection``).
    per_1m_output_tokens: float | None = None
    per_1m_input_tokens: float | None = None

    def for_tokens(self, output: float, input: float) -> Price:
        """This per-token price as a per-request one for requests of ``output`` and ``input`` tokens."""
        per_request = ((self.per_1m_output_tokens or 0.0) * output + (self.per_1m_input_tokens or 0.0) * input) / 1e6
        return Price(None, per_request, self.source, self.date, self.per_1m_output_tokens, self.per_1m_input_tokens)

    def __post_init__(self) -> None:
        if (self.per_hour is None) == (self.per_request is None):
            raise ValueError("a price is either per_hour or per_request")


@dataclass(frozen=True)
class ServerSettings:
    threads: int = 1
    max_batch_size: int = 32
    max_queue_delay_ms: float = 0.0
    max_queue_time: float = 1.0  # seconds a request may wait for its batch before the server answers 503; 0: no limit
    batching: bool = True
    cpus: tuple[int, ...] = ()
    inject_delay_ms: float = 0.0  # a deliberately slowed server: for checking that comparisons and gates catch it
    grpc_port: int | None = None  # serve OIP v2 over gRPC too; the embedded server takes a free port whatever it says
    # A text-generation model: sequences decoded together (KV cache slots), and tokens a sequence may hold.
    max_streams: int | None = None  # None: the server's default
    max_context: int | None = None


@dataclass(frozen=True)
class Hardware:
    vcpus: int = 0
    memory_gb: float = 0.0
    gpu: str = ""  # "" for none
    description: str = ""


@dataclass(frozen=True)
class Profile:
    name: str
    source: str
    model: str = "minilm"
    variant: str = "fp32"
    description: str = ""
    server: ServerSettings = ServerSettings()
    hardware: Hardware | None = None
    price: Price | None = None

    def server_args(self) -> list[str]:
        s = self.server
        args = [
            "--model",
            self.model,
            "--variant",
            self.variant,
            "--threads",
            str(s.threads),
            "--max-batch-size",
            str(s.max_batch_size),
            "--max-queue-delay-ms",
            str(s.max_queue_delay_ms),
            "--max-queue-time",
            f"{s.max_queue_time * 1000:g}ms",
        ]
        if not s.batching:
            args.append("--no-batching")
        if s.cpus:
            args += ["--cpus", ",".join(map(str, s.cpus))]
        if s.inject_delay_ms:
            args += ["--inject-delay-ms", str(s.inject_delay_ms)]
        if s.grpc_port is not None:
            args += ["--grpc-port", str(s.grpc_port)]
        if s.max_streams is not None:
            args += ["--max-streams", str(s.max_streams)]
        if s.max_context is not None:
            args += ["--max-context", str(s.max_context)]
        return args


def usable_cpus() -> set[int]:
    """The cores this process may run on (its affinity, which a container or ``taskset`` narrows)."""
    if hasattr(os, "sched_getaffinity"):
        return set(os.sched_getaffinity(0))
    return set(range(os.cpu_count() or 1))


def profiles_dir() -> Path:
    return Path(__file__).resolve().parents[2] / "profiles"


def find_profile(name_or_path: str) -> Path:
    path = Path(name_or_path)
    if path.suffix == ".toml" or path.exists():
        return path
    candidate = profiles_dir() / f"{name_or_path}.toml"
    if not candidate.exists():
        known = sorted(p.stem for p in profiles_dir().glob("*.toml"))
        raise ConfigError(name_or_path, None, f"no such profile; known profiles: {', '.join(known) or 'none'}")
    return candidate


def load_profile(name_or_path: str) -> Profile:
    path = find_profile(name_or_path)
    top = Table(read_toml(path), str(path))
    model = top.table("model")
    server = top.table("server")
    cpus = server.get("cpus", list, [])
    if not all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in cpus):
        raise server.error("cpus", f"must be a list of core numbers, got {cpus!r}")
    missing = sorted(set(cpus) - usable_cpus())
    if missing:  # else the server's child fails on its affinity, with a traceback for a message
        usable = ", ".join(map(str, sorted(usable_cpus())))
        raise server.error("cpus", f"core {missing[0]} is not one this machine lets us use (these are: {usable})")
    grpc_port = server.get("grpc_port", int, None)
    if grpc_port is not None and not 0 <= grpc_port <= 65535:
        raise server.error("grpc_port", f"must be a port from 0 to 65535, got {grpc_port}")
    profile = Profile(
        name=top.get("name", str, path.stem),
        source=str(path),
        description=top.get("description", str, ""),
        model=model.get("name", str, "minilm"),
        variant=model.choice("variant", ("fp32", "int8"), "fp32"),
        server=ServerSettings(
            threads=int(server.number("threads", 1, minimum=1)),
            max_batch_size=int(server.number("max_batch_size", 32, minimum=1)),
            max_queue_delay_ms=server.number("max_queue_delay_ms", 0.0),
            max_queue_time=server.duration("max_queue_time", 1.0),
            batching=server.get("batching", bool, True),
            cpus=tuple(cpus),
            inject_delay_ms=server.number("inject_delay_ms", 0.0, minimum=0),
            grpc_port=grpc_port,
            max_streams=_optional_count(server, "max_streams"),
            max_context=_optional_count(server, "max_context"),
        ),
        hardware=_hardware(top.table("hardware")) if "hardware" in top.data else None,
        price=_price(top.table("price")) if "price" in top.data else None,
    )
    if "hardware" not in top.data:
        top.taken.add("hardware")
    if "price" not in top.data:
        top.taken.add("price")
    model.done()
    server.done()
    top.done()
    return profile


def _optional_count(t: Table, key: str) -> int | None:
    value = t.number(key, None, minimum=1)
    return None if value is None else int(value)


def _hardware(t: Table) -> Hardware:
    hardware = Hardware(
        vcpus=int(t.number("vcpus", required=True, minimum=1)),
        memory_gb=float(t.number("memory_gb", 0.0)),
        gpu=t.get("gpu", str, ""),
        description=t.get("description", str, ""),
    )
    t.done()
    return hardware


def _price(t: Table) -> Price:
    per_hour, per_request = t.number("per_hour"), t.number("per_request")
    per_million = t.number("per_1m_requests")
    per_million_tokens = t.number("per_1m_tokens")
    if per_million is not None:
        if per_request is not None:
            raise t.error("per_1m_requests", "give per_request or per_1m_requests, not both")
        per_request = per_million / 1e6
    if per_million_tokens is not None:
        # a per-token price (most managed embedding and LLM APIs) is a per-request price for a known request size
        if per_request is not None:
            raise t.error("per_1m_tokens", "give one price: per_request, per_1m_requests or per_1m_tokens")
        tokens = t.number("tokens_per_request", required=True, minimum=0)
        per_request = per_million_tokens * tokens / 1e6
    elif "tokens_per_request" in t.data:
        raise t.error("tokens_per_request", "goes with per_1m_tokens")
    per_output, per_input = t.number("per_1m_output_tokens"), t.number("per_1m_input_tokens")
    if per_input is not None and per_output is None:
        raise t.error("per_1m_input_tokens", "goes with per_1m_output_tokens (a generative API's two prices)")
    if per_output is not None:
        if per_request is not None:
            raise t.error("per_1m_output_tokens", "give one price: per_request, per_1m_requests, per_1m_tokens or this")
        output = t.number("output_tokens_per_request", required=True, minimum=0)
        input_tokens = t.number("input_tokens_per_request", 0.0 if per_input is None else None, minimum=0)
        if input_tokens is None:
            raise t.error("input_tokens_per_request", "is required with per_1m_input_tokens")
        per_request = ((per_output * output) + (per_input or 0.0) * input_tokens) / 1e6
    else:
        for key in ("output_tokens_per_request", "input_tokens_per_request"):
            if key in t.data:
                raise t.error(key, "goes with per_1m_output_tokens")
    if (per_hour is None) == (per_request is None):
        raise t.error(None, "needs exactly one of per_hour (an instance) or per_request / per_1m_requests (managed)")
    source = t.get("source", str, required=True)
    date = t.get("date", str, required=True)
    if not _DATE.match(date):
        raise t.error("date", f"expected YYYY-MM-DD, the day the price was read; got {date!r}")
    t.done()
    return Price(per_hour, per_request, source, date, per_output, per_input)
