"""The models directory's manifest: what was built, where each file lies, and whether it is current.

Kept apart from ``build`` so a serving process reads the manifest without importing onnx, the
graph builders or the quantiser: ``build`` writes the manifest, ``models`` and ``build`` read it.
"""

from __future__ import annotations

import json
from pathlib import Path

from .errors import ModelsMissing

# Bump when a model's graph or build changes, so old builds are rebuilt rather than trusted.
BUILDER_VERSION = 3  # 2: MiniLM padding-free (packed tokens), fused query/key/value; 3: SmolLM2 added
MANIFEST = "manifest.json"
MODELS = ("minilm", "fraud", "smollm2")
VARIANTS = ("fp32", "int8")


def model_dir(models_dir: Path, model: str) -> Path:
    """Where one model's files lie: ``<variant>.onnx`` for each variant, plus e.g. ``tokenizer.json``."""
    return models_dir / model


def load_manifest(models_dir: Path) -> dict:
    path = models_dir / MANIFEST
    if not path.exists():
        raise ModelsMissing(f"no models in {models_dir}: run `reference-server build-models` (or `make models`)")
    manifest = json.loads(path.read_text())
    if manifest.get("builder_version") != BUILDER_VERSION:
        raise ModelsMissing(f"models in {models_dir} are from an older build: run `reference-server build-models`")
    return manifest


def write_manifest(models_dir: Path, models: dict) -> dict:
    """Write the manifest last, once every file it names is in place; returns what was written."""
    manifest = {"builder_version": BUILDER_VERSION, "models": models}
    (models_dir / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def forget_manifest(models_dir: Path) -> None:
    """Remove the manifest before a build starts, so a half-finished build never looks current."""
    (models_dir / MANIFEST).unlink(missing_ok=True)


def is_current(models_dir: Path) -> bool:
    """A manifest of this builder version whose every file is there at the recorded size."""
    try:
        manifest = load_manifest(models_dir)
    except (ModelsMissing, json.JSONDecodeError):
        return False
    for model in manifest["models"].values():
        for entry in model["files"].values():
            path = models_dir / entry["path"]
            if not path.exists() or path.stat().st_size != entry["bytes"]:
                return False
    return True
