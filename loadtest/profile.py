"""Deployment profiles: what is deployed. A TOML file in ``profiles/``; the embedded server reads it.

This module knows the model and the server settings. The hardware and price tables belong to the
cost model and are kept as read, for it to check.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .errors import ConfigError
from .tomlconf import Table, read_toml


@dataclass(frozen=True)
class ServerSettings:
    threads: int = 1
    max_batch_size: int = 32
    max_queue_delay_ms: float = 0.0
    batching: bool = True
    cpus: tuple[int, ...] = ()


@dataclass(frozen=True)
class Profile:
    name: str
    source: str
    model: str = "minilm"
    variant: str = "fp32"
    description: str = ""
    server: ServerSettings = ServerSettings()
    extra: dict = field(default_factory=dict)  # hardware, price: read by the cost model

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
        ]
        if not s.batching:
            args.append("--no-batching")
        if s.cpus:
            args += ["--cpus", ",".join(map(str, s.cpus))]
        return args


def profiles_dir() -> Path:
    return Path(__file__).resolve().parents[1] / "profiles"


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
    if not all(isinstance(c, int) and c >= 0 for c in cpus):
        raise server.error("cpus", f"must be a list of core numbers, got {cpus!r}")
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
            batching=server.get("batching", bool, True),
            cpus=tuple(cpus),
        ),
        extra={k: top.get(k, dict) for k in ("hardware", "price") if k in top.data},
    )
    model.done()
    server.done()
    top.done()
    return profile
