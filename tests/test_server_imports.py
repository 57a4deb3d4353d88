"""A serving process loads ONNX Runtime and the manifest, never the model build (onnx, graph builders, quantiser)."""

from __future__ import annotations

import json
import subprocess
import sys

BUILD_ONLY = (
    "onnx",
    "onnxruntime.quantization",
    "reference_server.build",
    "reference_server.minilm_graph",
    "reference_server.fraud_model",
    "reference_server.quantize",
    "reference_server.weights",
    "reference_server.decoder_graph",
    "reference_server.onnx_graph",
    "reference_server.gguf_model",
    "gguf",
)


def test_the_serve_path_imports_no_build_module(models_dir):
    # What `reference-server serve` imports, up to an app holding both models, in a fresh interpreter.
    script = f"""
import json, sys
from pathlib import Path
from reference_server import app, batcher, capture, cli, launch, metrics, models, protocol, serve
from reference_server.config import ServerConfig

cli.build_parser().parse_args(["serve", "--model", "fraud"])
app.create_app(ServerConfig(models_dir=Path({str(models_dir)!r}), models=("minilm", "fraud"), variant="int8"))
print(json.dumps(sorted(sys.modules)))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True)
    loaded = set(json.loads(done.stdout.splitlines()[-1]))
    assert "onnxruntime" in loaded and "reference_server.manifest" in loaded
    assert sorted(loaded & set(BUILD_ONLY)) == []
