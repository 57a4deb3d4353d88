"""Shared fixtures: the built models, real reference servers, MLServer and KServe on free loopback ports."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import numpy as np
import pytest

from reference_server.build import build_models
from reference_server.config import default_models_dir
from reference_server.launch import running_server
from tests.helpers import GENERATIVE_STREAMS, GENERATIVE_WAITING
from tests.targets import TargetUnavailable, running_kserve, running_mlserver

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


@pytest.fixture(scope="session")
def generative_target(models_dir):
    """(url, model name, context): SmolLM2 int8 on the generative target, small limits so tests reach them.

    Shared by the server's own tests (tests/test_generation_server.py) and the harness's measurement
    against it (tests/test_generation_run.py): one server start (about 3 s, its KV cache touched) for both.
    """
    name, context = "smollm2", 512
    args = ["--models-dir", str(models_dir), "--model", name, "--variant", "int8", "--max-context", str(context)]
    args += ["--max-streams", str(GENERATIVE_STREAMS), "--max-waiting", str(GENERATIVE_WAITING)]
    with running_server(args) as running:
        yield running.url, name, context


@pytest.fixture(scope="session")
def reported_run(server, tmp_path_factory) -> Path:
    """One real run against the fraud model, read by the report and the results-as-data tests alike.

    A ramp from 50 to 250 req/s for 4 s after 1 s of warm-up, with a gate and both reports: every
    plot has seconds to draw, and the warm-up is marked in every file. Read-only for its users.
    """
    from tests.helpers import FEATURES, FRAUD, loadtest, scenario

    tmp = tmp_path_factory.mktemp("reported_run")
    path = scenario(
        tmp,
        'shape = { kind = "ramp", start = 50, end = 250 }\nduration = "4s"\nwarmup = "1s"',
        f'url = "{server.url}"\n{FRAUD}',
        FEATURES,
    )
    result = loadtest("run", str(path), "--out", str(tmp / "out"), "--threshold", "p99 < 5s")
    assert result.returncode == 0, result.stdout + result.stderr
    return tmp / "out"


@pytest.fixture
def client(server):
    with httpx.Client(base_url=server.url, timeout=30) as c:
        yield c


@pytest.fixture(scope="session")
def mlserver(tmp_path_factory):
    """MLServer 1.7.1 serving a scikit-learn `fraud` classifier (tests/targets.py); skipped only without its venv."""
    try:
        with running_mlserver(tmp_path_factory.mktemp("mlserver")) as running:
            yield running
    except TargetUnavailable as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="session")
def kserve_server(tmp_path_factory):
    """KServe 0.21's model server with our `fraud` model (tests/targets.py); skipped only without its venv."""
    try:
        with running_kserve(tmp_path_factory.mktemp("kserve")) as running:
            yield running
    except TargetUnavailable as exc:
        pytest.skip(str(exc))
