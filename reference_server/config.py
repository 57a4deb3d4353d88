"""Server configuration: one frozen dataclass, built once by the CLI (or a test) and passed in."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from .batcher import BatchingConfig
from .generation import GenerationConfig
from .models import LongText, SessionSettings


def default_models_dir() -> Path:
    """``$REFERENCE_SERVER_MODELS``, else ``models/`` of the source checkout, else a user cache."""
    if env := os.environ.get("REFERENCE_SERVER_MODELS"):
        return Path(env)
    checkout = Path(__file__).resolve().parents[1]
    if (checkout / "pyproject.toml").exists():
        return checkout / "models"
    return Path.home() / ".cache" / "reference-server" / "models"


@dataclass(frozen=True)
class ServerConfig:
    models_dir: Path = field(default_factory=default_models_dir)
    models: tuple[str, ...] = ("minilm",)
    variant: str = "fp32"
    host: str = "127.0.0.1"
    port: int = 8000
    grpc_port: int | None = None  # OIP v2 over gRPC on this port too (0: a free one); None: REST only
    session: SessionSettings = SessionSettings()
    batching: BatchingConfig = BatchingConfig()
    generation: GenerationConfig = GenerationConfig()  # text generation: streams, context, queue, prefill budget
    max_body_bytes: int = 8 * 1024 * 1024
    max_rows: int = 128
    header_timeout_s: float = 5.0  # a request's line and headers must arrive within it (header_limits.py)
    long_text: LongText = "truncate"
    cpus: tuple[int, ...] | None = None
    inject_delay_ms: float = 0.0  # a deliberately slowed server, for testing regression gates
    capture: Path | None = None  # record incoming requests to this JSONL file
    capture_sample: float = 1.0  # the fraction recorded, chosen deterministically
