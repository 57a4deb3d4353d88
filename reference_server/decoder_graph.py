"""Emit a llama-architecture decoder (SmolLM2's) as one ONNX graph for prefill and decode, from numpy weights.

The interface is ``decoder.py``'s: new tokens, their positions, an additive attention bias, the index
whose logits are wanted, and the cache as inputs; logits and the new keys and values as outputs.

The graph never copies the cache. A cache that is concatenated with the new keys costs a copy of the
whole cache in every layer at every decode step, which at a few hundred positions costs more than the
step's own arithmetic. Instead, scores are computed against the past (``Q @ past_key``: keys are stored
transposed, so no Transpose either) and against the new keys separately; only the scores, which are
small, are concatenated; after the softmax the probabilities are sliced and multiplied with the past
and new values separately, and the two products added.

Grouped-query attention without repeating keys: the query heads are grouped as [KV, group] and the
group folded into the rows, so each query is [B, KV, group * S, D] against [B, KV, D, P].

Weights use Hugging Face's names and layout (``model.layers.{i}.self_attn.q_proj.weight`` is
[out, in], query and key rows in the rotate-half RoPE order). The query, key and value projections are
one MatMul, as are the gate and up projections; 1 / sqrt(head_dim) is folded into the query weights.
RMSNorm is written as the Pow/ReduceMean/Add/Sqrt/Div/Mul chain that ORT fuses into one kernel.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper
from tokenizers import pre_tokenizers

from .decoder import CONFIG_FILE, DecoderConfig
from .onnx_graph import Graph

OPSET = 17
INT64_MAX = np.iinfo(np.int64).max

# A model small enough to build in a fraction of a second, for tests of everything above the graph.
TINY_CONFIG = DecoderConfig(
    vocab_size=512,
    hidden_size=64,
    num_layers=2,
    num_heads=4,
    num_kv_heads=2,
    head_dim=16,
    intermediate_size=128,
    rms_norm_eps=1e-5,
    rope_theta=10000.0,
    max_positions=2048,
    name="tiny-random",
)


def _rms_norm(g: Graph, x: str, weights: dict[str, np.ndarray], name: str, eps: float) -> str:
    variance = g.op("ReduceMean", g.op("Pow", x, g.scalar(2.0)), axes=[-1], keepdims=1)
    normed = g.op("Div", x, g.op("Sqrt", g.op("Add", variance, g.scalar(eps))))
    return g.op("Mul", normed, g.const(name, weights[name].astype(np.float32)))


def _rope(g: Graph, x: str, cos: str, sin_signed: str, half: int) -> str:
    """Rotate-half RoPE on [B, S, heads, D]: x * cos + [x2, x1] * [-sin, sin]."""
    first, second = g.split(x, [half, half], axis=-1)
    swapped = g.op("Concat", second, first, axis=-1)
    return g.op("Add", g.op("Mul", x, cos), g.op("Mul", swapped, sin_signed))


def _attention(g: Graph, x: str, w: dict[str, np.ndarray], i: int, c: DecoderConfig, shared: dict[str, str]) -> str:
    p = f"model.layers.{i}.self_attn"
    kv, group, d = c.num_kv_heads, c.group_size, c.head_dim
    q_rows = w[f"{p}.q_proj.weight"] / np.sqrt(d)
    qkv_w = np.concatenate([q_rows, w[f"{p}.k_proj.weight"], w[f"{p}.v_proj.weight"]], axis=0).T
    qkv = g.op("MatMul", x, g.const(f"{p}.qkv_proj.weight", np.ascontiguousarray(qkv_w, np.float32)))
    qk, v = g.split(qkv, [(c.num_heads + kv) * d, kv * d], axis=-1)
    qk = _rope(g, g.op("Reshape", qk, g.ints(0, 0, c.num_heads + kv, d)), shared["cos"], shared["sin"], d // 2)
    q, k = g.split(qk, [c.num_heads, kv], axis=2)  # [B, S, heads, D]

    q = g.op("Reshape", q, g.ints(0, 0, kv, group, d))
    q = g.op("Reshape", g.op("Transpose", q, perm=[0, 2, 3, 1, 4]), g.ints(0, 0, -1, d))  # [B, KV, group*S, D]
    new_key = g.op("Transpose", k, perm=[0, 2, 3, 1], output=f"new_key_{i}")  # [B, KV, D, S]
    v = g.op("Reshape", v, g.ints(0, 0, kv, d))
    new_value = g.op("Transpose", v, perm=[0, 2, 1, 3], output=f"new_value_{i}")  # [B, KV, S, D]

    scores = g.op("Concat", g.op("MatMul", q, f"past_key_{i}"), g.op("MatMul", q, new_key), axis=-1)
    probs = g.op("Softmax", g.op("Add", scores, shared["bias"]), axis=-1)  # [B, KV, group*S, P+S]
    axis = shared["last_axis"]
    past_probs = g.op("Slice", probs, shared["zero"], shared["past_len"], axis)
    new_probs = g.op("Slice", probs, shared["past_len"], shared["end"], axis)
    context = g.op(
        "Add", g.op("MatMul", past_probs, f"past_value_{i}"), g.op("MatMul", new_probs, new_value)
    )  # [B, KV, group*S, D]
    context = g.op("Transpose", g.op("Reshape", context, g.ints(0, 0, group, -1, d)), perm=[0, 3, 1, 2, 4])
    context = g.op("Reshape", context, g.ints(0, 0, c.num_heads * d))  # [B, S, heads*D], head h = kv*group + j
    o_w = np.ascontiguousarray(w[f"{p}.o_proj.weight"].T, np.float32)
    return g.op("MatMul", context, g.const(f"{p}.o_proj.weight", o_w))


def _mlp(g: Graph, x: str, w: dict[str, np.ndarray], i: int, c: DecoderConfig) -> str:
    p = f"model.layers.{i}.mlp"
    gate_up = np.concatenate([w[f"{p}.gate_proj.weight"], w[f"{p}.up_proj.weight"]], axis=0).T
    fused = g.op("MatMul", x, g.const(f"{p}.gate_up_proj.weight", np.ascontiguousarray(gate_up, np.float32)))
    gate, up = g.split(fused, [c.intermediate_size, c.intermediate_size], axis=-1)
    activated = g.op("Mul", g.op("Mul", gate, g.op("Sigmoid", gate)), up)  # SiLU(gate) * up
    down = np.ascontiguousarray(w[f"{p}.down_proj.weight"].T, np.float32)
    return g.op("MatMul", activated, g.const(f"{p}.down_proj.weight", down))


def _rope_tables(g: Graph, c: DecoderConfig) -> tuple[str, str]:
    """cos and signed sin for each new token, [B, S, 1, D], from its position."""
    exponents = np.arange(0, c.head_dim, 2, dtype=np.float64) / c.head_dim
    inv_freq = (1.0 / c.rope_theta**exponents).astype(np.float32)  # [D/2]
    angles = g.op(
        "Mul",
        g.op("Unsqueeze", g.op("Cast", "positions", to=TensorProto.FLOAT), g.ints(-1)),
        g.const("rope_inv_freq", inv_freq),
    )  # [B, S, D/2]
    cos, sin = g.op("Cos", angles), g.op("Sin", angles)
    heads_axis = g.ints(2)
    cos_full = g.op("Unsqueeze", g.op("Concat", cos, cos, axis=-1), heads_axis)
    sin_signed = g.op("Unsqueeze", g.op("Concat", g.op("Neg", sin), sin, axis=-1), heads_axis)
    return cos_full, sin_signed


def _inputs(c: DecoderConfig) -> list[onnx.ValueInfoProto]:
    kv, d = c.num_kv_heads, c.head_dim
    values = [
        helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "new"]),
        helper.make_tensor_value_info("positions", TensorProto.INT64, ["batch", "new"]),
        helper.make_tensor_value_info("attention_bias", TensorProto.FLOAT, ["batch", 1, "new", "past_plus_new"]),
        helper.make_tensor_value_info("last_index", TensorProto.INT64, ["batch"]),
    ]
    for i in range(c.num_layers):
        values.append(helper.make_tensor_value_info(f"past_key_{i}", TensorProto.FLOAT, ["batch", kv, d, "past"]))
        values.append(helper.make_tensor_value_info(f"past_value_{i}", TensorProto.FLOAT, ["batch", kv, "past", d]))
    return values


def _outputs(c: DecoderConfig) -> list[onnx.ValueInfoProto]:
    kv, d = c.num_kv_heads, c.head_dim
    values = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", c.vocab_size])]
    values += [
        helper.make_tensor_value_info(f"new_key_{i}", TensorProto.FLOAT, ["batch", kv, d, "new"])
        for i in range(c.num_layers)
    ]
    values += [
        helper.make_tensor_value_info(f"new_value_{i}", TensorProto.FLOAT, ["batch", kv, "new", d])
        for i in range(c.num_layers)
    ]
    return values


def build_decoder_graph(weights: dict[str, np.ndarray], config: DecoderConfig) -> onnx.ModelProto:
    """The ONNX model of ``decoder.py``'s interface, from Hugging Face-named float weights."""
    c = config
    g = Graph()
    cos, sin = _rope_tables(g, c)
    # The bias [B, 1, S, P+S] repeated for each query head of a group: rows are [group, S] like the queries.
    bias = g.op("Concat", *(["attention_bias"] * c.group_size), axis=2)
    shared = {
        "cos": cos,
        "sin": sin,
        "bias": bias,
        "past_len": g.op("Shape", "past_key_0", start=3, end=4),
        "zero": g.ints(0),
        "end": g.ints(INT64_MAX),
        "last_axis": g.ints(-1),
    }
    embed = np.ascontiguousarray(weights["model.embed_tokens.weight"], np.float32)  # [V, H]
    x = g.op("Gather", g.const("model.embed_tokens.weight", embed), "input_ids", axis=0)  # [B, S, H]
    eps = c.rms_norm_eps
    for i in range(c.num_layers):
        p = f"model.layers.{i}"
        normed = _rms_norm(g, x, weights, f"{p}.input_layernorm.weight", eps)
        x = g.op("Add", x, _attention(g, normed, weights, i, c, shared))
        normed = _rms_norm(g, x, weights, f"{p}.post_attention_layernorm.weight", eps)
        x = g.op("Add", x, _mlp(g, normed, weights, i, c))

    # Only the one position per sequence whose logits are wanted goes through the norm and the head.
    last = g.op("GatherND", x, g.op("Unsqueeze", "last_index", g.ints(-1)), batch_dims=1)  # [B, H]
    last = _rms_norm(g, last, weights, "model.norm.weight", eps)
    # Tied embeddings; a transposed copy for the MatMul, so that the int8 build quantizes it per channel.
    g.op("MatMul", last, g.const("lm_head.weight", np.ascontiguousarray(embed.T)), output="logits")

    graph = helper.make_graph(g.nodes, c.name or "decoder", _inputs(c), _outputs(c), g.initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="reference_server")
    model.ir_version = 8
    return model


def save_model(model: onnx.ModelProto, path: Path) -> None:
    """Write ``model``, checking it first (by path: a 500 MB model is past the in-memory checker's limit)."""
    onnx.save(model, path)
    onnx.checker.check_model(str(path))


def random_weights(config: DecoderConfig, seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded random weights of the right names and shapes, scaled so activations stay near unit size."""
    rng = np.random.default_rng(seed)
    c = config

    def matrix(rows: int, cols: int) -> np.ndarray:
        return (rng.standard_normal((rows, cols)) / np.sqrt(cols)).astype(np.float32)

    def norm() -> np.ndarray:
        return (1.0 + 0.1 * rng.standard_normal(c.hidden_size)).astype(np.float32)

    h, d = c.hidden_size, c.head_dim
    weights = {"model.embed_tokens.weight": rng.standard_normal((c.vocab_size, h)).astype(np.float32)}
    for i in range(c.num_layers):
        p = f"model.layers.{i}"
        weights[f"{p}.input_layernorm.weight"] = norm()
        weights[f"{p}.self_attn.q_proj.weight"] = matrix(c.num_heads * d, h)
        weights[f"{p}.self_attn.k_proj.weight"] = matrix(c.num_kv_heads * d, h)
        weights[f"{p}.self_attn.v_proj.weight"] = matrix(c.num_kv_heads * d, h)
        weights[f"{p}.self_attn.o_proj.weight"] = matrix(h, c.num_heads * d)
        weights[f"{p}.post_attention_layernorm.weight"] = norm()
        weights[f"{p}.mlp.gate_proj.weight"] = matrix(c.intermediate_size, h)
        weights[f"{p}.mlp.up_proj.weight"] = matrix(c.intermediate_size, h)
        weights[f"{p}.mlp.down_proj.weight"] = matrix(h, c.intermediate_size)
    weights["model.norm.weight"] = norm()
    return weights


def write_tiny_model(directory: Path, seed: int = 0, config: DecoderConfig = TINY_CONFIG) -> Path:
    """Write a random tiny model as a built one is laid out: ``fp32.onnx``, ``config.json``, ``tokenizer.json``.

    The tokenizer is byte-level with no merges (one token per byte, ids 3..258, after the three
    ChatML specials at 0..2 as in SmolLM2), so any text round-trips; ids 259 and up are never produced
    by it but can be generated. Returns ``directory``.
    """
    from .gguf_model import byte_level_tokenizer

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    save_model(build_decoder_graph(random_weights(config, seed), config), directory / "fp32.onnx")
    (directory / CONFIG_FILE).write_text(config.to_json())
    specials = ["<|endoftext|>", config.message_start, config.message_end]
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    byte_level_tokenizer(specials + alphabet, [], [0, 1, 2]).save(str(directory / "tokenizer.json"))
    return directory
