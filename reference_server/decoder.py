"""A decoder-only language model served by ONNX Runtime: its configuration, one forward step, greedy decoding.

One graph (``decoder_graph.build_decoder_graph``) serves prefill and decode. Each call takes the new
tokens of B sequences (right-padded to S), where each of them sits (``positions``), what each may
attend to (``attention_bias``) and the cache so far, and gives the logits at one position per sequence
and the new tokens' keys and values. The cache stays with the caller, so a scheduler can keep each
sequence's cache where it likes and batch sequences of different lengths:

- ``past_key_{i}``   float32 [B, KV, D, P]: keys stored transposed, so scores are ``Q @ K`` with no copy;
- ``past_value_{i}`` float32 [B, KV, P, D];
- ``attention_bias`` float32 [B, 1, S, P + S]: 0 where a new token attends, -1e9 where it does not
  (cache slots past a sequence's length, right padding, later new tokens).

P may be 0 (a prefill with no cache): ORT's MatMul gives zeros when the inner dimension is 0
(``tests/test_decoder.py`` holds it to that).

This module is on the serving path: it imports ONNX Runtime and numpy, never onnx or the builders.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import onnxruntime as ort

MASKED = -1e9  # an additive bias that removes a position from the softmax (exp underflows to 0)
CONFIG_FILE = "config.json"


@dataclass(frozen=True)
class DecoderConfig:
    """A llama-architecture decoder: RMSNorm, RoPE (rotate-half layout), grouped-query attention, SwiGLU.

    Embeddings are tied (the output projection is the token embedding matrix), as in SmolLM2. The
    chat template is ChatML: ``{message_start}{role}\\n{content}{message_end}\\n`` per message, then
    ``{message_start}assistant\\n``.
    """

    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    rms_norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    max_positions: int = 8192  # the context length the model was trained for; the graph itself has no limit
    eos_token_ids: tuple[int, ...] = (2,)
    pad_token_id: int = 0  # what fills right padding; any id would do, since padding is masked
    message_start: str = "<|im_start|>"
    message_end: str = "<|im_end|>"
    name: str = ""

    def __post_init__(self) -> None:
        if self.num_heads % self.num_kv_heads:
            raise ValueError(f"num_heads {self.num_heads} is not a multiple of num_kv_heads {self.num_kv_heads}")
        if self.head_dim % 2:
            raise ValueError(f"head_dim {self.head_dim} must be even for RoPE")

    @property
    def group_size(self) -> int:
        """Query heads per key/value head: query head h reads kv head h // group_size."""
        return self.num_heads // self.num_kv_heads

    def chat_prompt(self, messages: Sequence[Mapping[str, str]]) -> str:
        """The ChatML text of ``messages`` followed by the assistant's opening, ready to tokenize."""
        turns = "".join(f"{self.message_start}{m['role']}\n{m['content']}{self.message_end}\n" for m in messages)
        return f"{turns}{self.message_start}assistant\n"

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> DecoderConfig:
        data = json.loads(text)
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown decoder config keys {unknown}")
        data["eos_token_ids"] = tuple(data.get("eos_token_ids", (2,)))
        return cls(**data)

    @classmethod
    def load(cls, directory: Path) -> DecoderConfig:
        return cls.from_json((Path(directory) / CONFIG_FILE).read_text())


def attention_bias(cached: Sequence[int], new: Sequence[int], past_slots: int, new_slots: int) -> np.ndarray:
    """The [B, 1, S, P + S] additive mask for sequences with ``cached[b]`` valid cache slots of P and
    ``new[b]`` real new tokens of S (the rest right padding).

    A new token attends to its sequence's valid cache slots and to the new tokens up to itself.
    Padding rows get a causal row too: what they compute is never read.
    """
    if len(cached) != len(new):
        raise ValueError("cached and new must have one entry per sequence")
    if any(c > past_slots for c in cached) or any(n > new_slots or n < 1 for n in new):
        raise ValueError(f"lengths {list(cached)}/{list(new)} do not fit {past_slots} cache and {new_slots} new slots")
    batch = len(cached)
    bias = np.full((batch, 1, new_slots, past_slots + new_slots), MASKED, np.float32)
    causal = np.triu(np.full((new_slots, new_slots), MASKED, np.float32), k=1)
    bias[:, 0, :, past_slots:] = causal
    for row, length in enumerate(cached):
        bias[row, 0, :, :length] = 0.0
    return bias


class Decoder:
    """One ONNX Runtime session of a decoder graph and its configuration."""

    def __init__(self, session: ort.InferenceSession, config: DecoderConfig) -> None:
        self.session = session
        self.config = config
        self._output_names = (
            ["logits"]
            + [f"new_key_{i}" for i in range(config.num_layers)]
            + [f"new_value_{i}" for i in range(config.num_layers)]
        )

    @classmethod
    def load(cls, directory: Path, variant: str = "fp32", options: ort.SessionOptions | None = None) -> Decoder:
        """Load ``<directory>/<variant>.onnx`` and its ``config.json``; one intra-op thread unless ``options``."""
        directory = Path(directory)
        if options is None:
            options = ort.SessionOptions()
            options.intra_op_num_threads = 1
            options.inter_op_num_threads = 1
            options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        session = ort.InferenceSession(str(directory / f"{variant}.onnx"), options, providers=["CPUExecutionProvider"])
        return cls(session, DecoderConfig.load(directory))

    def empty_cache(self, batch: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Keys [B, KV, D, 0] and values [B, KV, 0, D] for every layer: the cache of a first prefill."""
        c = self.config
        keys = [np.zeros((batch, c.num_kv_heads, c.head_dim, 0), np.float32) for _ in range(c.num_layers)]
        values = [np.zeros((batch, c.num_kv_heads, 0, c.head_dim), np.float32) for _ in range(c.num_layers)]
        return keys, values

    def run(
        self,
        input_ids: np.ndarray,
        positions: np.ndarray,
        attention_bias: np.ndarray,
        last_index: np.ndarray,
        past_keys: Sequence[np.ndarray],
        past_values: Sequence[np.ndarray],
    ) -> tuple[np.ndarray, list[np.ndarray], list[np.ndarray]]:
        """One forward step; returns logits [B, V] at ``last_index`` and per layer the new keys
        [B, KV, D, S] and values [B, KV, S, D] of all S new slots (padding's too: store only the real ones)."""
        layers = self.config.num_layers
        if len(past_keys) != layers or len(past_values) != layers:
            raise ValueError(f"expected {layers} past keys and values, got {len(past_keys)} and {len(past_values)}")
        feeds = {
            "input_ids": input_ids,
            "positions": positions,
            "attention_bias": attention_bias,
            "last_index": last_index,
        }
        for i in range(layers):
            feeds[f"past_key_{i}"] = past_keys[i]
            feeds[f"past_value_{i}"] = past_values[i]
        outputs = self.session.run(self._output_names, feeds)
        return outputs[0], outputs[1 : 1 + layers], outputs[1 + layers :]


def greedy_generate(decoder: Decoder, prompt_ids: Sequence[int], max_new_tokens: int) -> list[int]:
    """Greedy decoding of one sequence with a KV cache: the reference the batched server is held to.

    Returns the generated ids, ending with the end-of-sequence id if one came within ``max_new_tokens``.
    """
    config = decoder.config
    prompt = np.asarray(prompt_ids, np.int64)[None, :]
    length = prompt.shape[1]
    keys, values = decoder.empty_cache(1)
    logits, new_keys, new_values = decoder.run(
        prompt,
        np.arange(length, dtype=np.int64)[None, :],
        attention_bias([0], [length], 0, length),
        np.array([length - 1], np.int64),
        keys,
        values,
    )
    keys, values = new_keys, new_values
    generated: list[int] = []
    while len(generated) < max_new_tokens:
        token = int(np.argmax(logits[0]))
        generated.append(token)
        if token in config.eos_token_ids:
            break
        cached = length + len(generated) - 1
        logits, new_keys, new_values = decoder.run(
            np.array([[token]], np.int64),
            np.array([[cached]], np.int64),
            attention_bias([cached], [1], cached, 1),
            np.zeros(1, np.int64),
            keys,
            values,
        )
        keys = [np.concatenate([k, n], axis=3) for k, n in zip(keys, new_keys, strict=True)]
        values = [np.concatenate([v, n], axis=2) for v, n in zip(values, new_values, strict=True)]
    return generated
