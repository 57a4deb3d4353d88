"""Shared fixtures: the built models and real reference servers on free loopback ports."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import numpy as np
import pytest

from reference_server.build import build_models
from reference_server.config import default_models_dir
from reference_server.launch import running_server

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="session")
def models_dir() -> Path:
    directory = default_models_dir()
    build_models(directory, progress=lambda _: None)  # a no-op when `make test` built them already
    return directory


@pytest.fixture(scope="session")
def reference_embeddings() -> tuple[list[str], np.ndarray]:
    folder = FIXTURES / "minilm_reference"
    return json.loads((folder / "sentences.json").read_text()), np.load(folder / "embeddings.npy")


@pytest.fixture(scope="session")
def server(models_dir):
    """minilm and fraud, fp32, default settings but no queue time limit, OIP v2 over gRPC too: the server most
    tests talk to (``server.grpc_target`` is its gRPC address).

    Tests' bursts (24 long texts at once, a Locust run past capacity) queue on it as they always did,
    rather than be partly answered 503 (tests/test_server_queue.py tests the limit on servers of its own).
    """
    args = ["--models-dir", str(models_dir), "--model", "minilm", "--model", "fraud", "--max-queue-time", "0"]
    args += ["--grpc-port", "0"]
    with running_server(args) as running:
        yield running


@pytest.fixture
def client(server):
    with httpx.Client(base_url=server.url, timeout=30) as c:
        yield c
