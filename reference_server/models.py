"""The served models: each turns validated request tensors into rows, and a batch of rows into outputs.

Two kinds share one interface so the batcher and the HTTP layer never look inside a model:

- ``TextEncoder`` (MiniLM): a BYTES input of strings, one per row; rows are token ids, and a batch
  is padded to its longest row, so rows carry their token length for length-aware batching.
- ``TabularClassifier`` (fraud MLP): an FP32 ``[N, 8]`` input; every row has length 1.

``prepare`` validates and tokenises; it reads no more of a tensor than its declared shape, and no
more of a text than truncation needs (``tokens.py``), so its cost is bounded by the row limit. The
app runs it on the event loop for small bodies and on a worker thread for big ones (the tokenizer
releases the GIL). ``infer`` runs on the inference thread (ORT releases the GIL there).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

import numpy as np
import onnxruntime as ort

from .errors import BadRequest, ModelsMissing
from .manifest import load_manifest, model_dir
from .protocol import InputTensor

# The tokenizers crate otherwise starts a thread pool that competes with ORT for the same cores.
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
from tokenizers import Tokenizer  # noqa: E402

from .tokens import TokenIds, TruncatingTokenizer  # noqa: E402

LongText = Literal["truncate", "reject"]

# ORT keeps the memory a batch needed in its arena for the next one. After a batch bigger than a
# full one of the longest texts (32 rows of 256 tokens: only a request of more rows than the batch
# size makes one), the arena gives back what it grew by: one 128-row request of long texts left
# the server 1.1 GB bigger for good. Measured: a batch of 64 rows of 256 tokens took 4.3 s either way.
SHRINK_ARENA_ABOVE_TOKENS = 32 * 256
_SHRINK_ARENA = ort.RunOptions()
_SHRINK_ARENA.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")


@dataclass(frozen=True)
class TensorSpec:
    name: str
    datatype: str
    shape: tuple[int, ...]

    def as_json(self) -> dict:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}


@dataclass(frozen=True)
class Prepared:
    """One request's rows, ready to join a batch. ``length`` is its longest row, in tokens."""

    rows: list[np.ndarray]
    length: int
    tokens: int


@dataclass(frozen=True)
class SessionSettings:
    intra_op_threads: int = 1
    spin: bool = False  # ORT's spinning workers would steal the core the event loop needs


class ServedModel(Protocol):
    name: str
    version: str
    kind: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    def prepare(self, tensors: dict[str, InputTensor]) -> Prepared: ...

    def infer(self, rows: list[np.ndarray]) -> dict[str, np.ndarray]: ...


def make_session(path: Path, settings: SessionSettings) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = settings.intra_op_threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if settings.spin else "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _single_input(tensors: dict[str, InputTensor], spec: TensorSpec) -> InputTensor:
    if spec.name not in tensors:
        raise BadRequest(f"missing input '{spec.name}'; this model takes exactly one input, '{spec.name}'")
    extra = sorted(set(tensors) - {spec.name})
    if extra:
        raise BadRequest(f"unexpected input(s) {extra}; this model takes exactly one input, '{spec.name}'")
    tensor = tensors[spec.name]
    if tensor.datatype != spec.datatype:
        raise BadRequest(f"input '{spec.name}' must have datatype {spec.datatype}, got {tensor.datatype}")
    return tensor


class TextEncoder:
    kind = "text-embedding"

    def __init__(
        self,
        name: str,
        variant: str,
        session: ort.InferenceSession,
        tokenizer: Path,
        max_tokens: int,
        long_text: LongText = "truncate",
    ) -> None:
        self.name, self.version, self.session = name, variant, session
        self.tokenizer = Tokenizer.from_file(str(tokenizer))
        self.tokenizer.no_truncation()
        self.tokenizer.no_padding()
        self.tokens = TruncatingTokenizer(self.tokenizer, max_tokens)
        self.max_tokens = max_tokens
        self.long_text = long_text
        dims = self.session.get_outputs()[0].shape[1]
        self.inputs = (TensorSpec("text", "BYTES", (-1,)),)
        self.outputs = (TensorSpec("embedding", "FP32", (-1, dims)),)

    def prepare(self, tensors: dict[str, InputTensor]) -> Prepared:
        tensor = _single_input(tensors, self.inputs[0])
        if len(tensor.shape) == 2 and tensor.shape[1] == 1:
            pass  # Triton clients often send strings as [N, 1]
        elif len(tensor.shape) != 1:
            raise BadRequest(f"input 'text' must have shape [N] (or [N, 1]), got {list(tensor.shape)}")
        return self.prepare_texts(tensor.texts())

    def prepare_texts(self, texts: list[str]) -> Prepared:
        rows = []
        for i, encoded in enumerate(self.tokens.encode(texts)):
            if self.long_text == "reject":
                self._refuse_long(i, texts[i], encoded)
            rows.append(np.asarray(encoded.ids, dtype=np.int64))
        lengths = [len(r) for r in rows]
        return Prepared(rows, max(lengths, default=0), sum(lengths))

    def _refuse_long(self, row: int, text: str, encoded: TokenIds) -> None:
        mode = "(started with --long-text reject)"
        if not encoded.exact:
            raise BadRequest(
                f"text row {row} has {len(text)} characters; this server reads at most "
                f"{self.tokens.read_limit} of a text and rejects longer ones {mode}"
            )
        if encoded.exceeds:
            size = f"{encoded.length} tokens" if encoded.length is not None else f"over {self.max_tokens} tokens"
            raise BadRequest(f"text row {row} is {size}; this server rejects text over {self.max_tokens} tokens {mode}")

    def infer(self, rows: list[np.ndarray]) -> dict[str, np.ndarray]:
        ids = np.zeros((len(rows), max(len(r) for r in rows)), dtype=np.int64)
        mask = np.zeros_like(ids)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = row
            mask[i, : len(row)] = 1
        run_options = _SHRINK_ARENA if ids.size > SHRINK_ARENA_ABOVE_TOKENS else None
        (embedding,) = self.session.run(None, {"input_ids": ids, "attention_mask": mask}, run_options)
        return {"embedding": embedding}


class TabularClassifier:
    kind = "tabular-classifier"

    def __init__(
        self,
        name: str,
        variant: str,
        session: ort.InferenceSession,
        features: list[str],
        classes: list[str],
    ) -> None:
        self.name, self.version, self.session = name, variant, session
        self.features, self.classes = features, classes
        self.inputs = (TensorSpec("features", "FP32", (-1, len(features))),)
        self.outputs = (TensorSpec("probabilities", "FP32", (-1, len(classes))),)

    def prepare(self, tensors: dict[str, InputTensor]) -> Prepared:
        tensor = _single_input(tensors, self.inputs[0])
        width = len(self.features)
        if len(tensor.shape) != 2 or tensor.shape[1] != width:
            raise BadRequest(f"input 'features' must have shape [N, {width}], got {list(tensor.shape)}")
        values = tensor.array()
        if not np.isfinite(values).all():
            raise BadRequest("input 'features' holds NaN or infinite values")
        return Prepared(list(values), 1, len(values))

    def infer(self, rows: list[np.ndarray]) -> dict[str, np.ndarray]:
        (probabilities,) = self.session.run(None, {"features": np.stack(rows)})
        return {"probabilities": probabilities}


def load_model(
    models_dir: Path, name: str, variant: str, settings: SessionSettings, long_text: LongText = "truncate"
) -> ServedModel:
    """Load one built model variant; the errors say how to build what is missing."""
    manifest = load_manifest(models_dir)
    entry = manifest["models"].get(name)
    if entry is None:
        raise ModelsMissing(f"unknown model '{name}'; built models: {', '.join(sorted(manifest['models']))}")
    if f"{variant}.onnx" not in entry["files"]:
        variants = sorted(f.removesuffix(".onnx") for f in entry["files"] if f.endswith(".onnx"))
        raise ModelsMissing(f"model '{name}' has no variant '{variant}'; variants: {', '.join(variants)}")
    directory = model_dir(models_dir, name)
    session = make_session(directory / f"{variant}.onnx", settings)
    if entry["kind"] == "text-embedding":
        tokenizer = directory / "tokenizer.json"
        return TextEncoder(name, variant, session, tokenizer, entry["max_tokens"], long_text)
    return TabularClassifier(name, variant, session, entry["features"], entry["classes"])
