"""Emit the all-MiniLM-L6-v2 sentence encoder as an ONNX graph, from its safetensors weights.

The graph is the BERT encoder followed by the sentence-transformers head (mean pooling over the
attention mask, then L2 normalisation), so one ``session.run`` turns token ids into the same
unit-length embedding that the upstream PyTorch model gives. Building it by hand with
``onnx.helper`` keeps torch out of the product: the weights are read into numpy and nothing else.

The encoder is padding-free, as TEI serves BERTs and as ORT's RemovePadding does on GPUs: the
inputs stay ``input_ids`` and ``attention_mask`` [B, S], but after the embeddings the real tokens are
gathered into one [T, H] matrix, so every linear layer (nearly all of the cost) computes real
tokens only; each layer's attention scores, which are per row, are computed on the padded layout
and gathered back. Against the padded graph it replaced (builder version 1), on the demo's texts
with one thread: fp32 batches of 8 in arrival order 1.60x its rows per second, of 32 length-sorted
1.05x, batch 1 1.07x (the query, key and value projections are one MatMul); int8 1.15x to 1.99x.
Outputs agree with the padded graph's to 1.2e-7 (fp32). ``benchmarks/batch_costs.py`` prints
what batches cost now.

Scalar constants are made with ``np.asarray`` so that they stay 0-d: a (1,)-shaped constant
broadcasts differently in ORT's fused kernels at the default optimisation level.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper

from .onnx_graph import Graph

OPSET = 17


@dataclass(frozen=True)
class BertConfig:
    hidden_size: int = 384
    num_layers: int = 6
    num_heads: int = 12
    layer_norm_eps: float = 1e-12

    @property
    def head_size(self) -> int:
        return self.hidden_size // self.num_heads


def _linear(g: Graph, x: str, weights: dict[str, np.ndarray], prefix: str) -> str:
    # torch stores Linear weights as [out, in]; MatMul wants [in, out].
    w = g.const(f"{prefix}.weight", np.ascontiguousarray(weights[f"{prefix}.weight"].T))
    b = g.const(f"{prefix}.bias", weights[f"{prefix}.bias"])
    return g.op("Add", g.op("MatMul", x, w), b)


def _layer_norm(g: Graph, x: str, weights: dict[str, np.ndarray], prefix: str, eps: float) -> str:
    scale = g.const(f"{prefix}.weight", weights[f"{prefix}.weight"])
    bias = g.const(f"{prefix}.bias", weights[f"{prefix}.bias"])
    return g.op("LayerNormalization", x, scale, bias, axis=-1, epsilon=eps)


def _gelu(g: Graph, x: str) -> str:
    """Exact GELU, x * 0.5 * (1 + erf(x / sqrt(2))), as BERT uses it (not the tanh approximation)."""
    erf = g.op("Erf", g.op("Div", x, g.scalar(math.sqrt(2.0))))
    return g.op("Mul", g.op("Mul", x, g.scalar(0.5)), g.op("Add", erf, g.scalar(1.0)))


@dataclass(frozen=True)
class _Packing:
    """Names of the tensors that move rows between the padded [B, S] layout and the packed [T] one."""

    tokens: str  # [T]: where each real token sits in the flattened [B * S] layout
    restore: str  # [B * S]: where each slot's token sits in packed [T + 1] (row T is zeros, for padding)
    padded_heads: str  # the shape [B, S, heads, d]
    zero_rows: dict[int, str]  # width -> a [1, width] row of zeros


def _unpack(g: Graph, packed: str, width: int, packing: _Packing) -> str:
    """[T, width] -> [B * S, width]: real tokens back in their slots, zeros in the padding."""
    with_zero = g.op("Concat", packed, packing.zero_rows[width], axis=0)
    return g.op("Gather", with_zero, packing.restore, axis=0)


def _attention(g: Graph, x: str, mask_bias: str, weights, prefix: str, cfg: BertConfig, packing: _Packing) -> str:
    """Self-attention: the projections on packed tokens, the scores on the padded layout (per row)."""
    merge_heads = g.const(g._name("hidden_shape"), np.array([-1, cfg.hidden_size], np.int64))
    h = cfg.hidden_size
    # One MatMul for the query, key and value projections: a third of the weight reads' calls.
    w = np.concatenate([weights[f"{prefix}.self.{n}.weight"].T for n in ("query", "key", "value")], axis=1)
    b = np.concatenate([weights[f"{prefix}.self.{n}.bias"] for n in ("query", "key", "value")])
    qkv = g.op(
        "Add",
        g.op("MatMul", x, g.const(f"{prefix}.self.qkv.weight", np.ascontiguousarray(w))),
        g.const(f"{prefix}.self.qkv.bias", b),
    )
    padded = _unpack(g, qkv, 3 * h, packing)  # [B * S, 3H]
    sizes = g.const(g._name("qkv_split"), np.array([h, h, h], np.int64))
    q_flat, k_flat, v_flat = (g._name("qkv_part") for _ in range(3))
    g.nodes.append(helper.make_node("Split", [padded, sizes], [q_flat, k_flat, v_flat], axis=1))

    def heads(flat: str, perm: list[int]) -> str:
        return g.op("Transpose", g.op("Reshape", flat, packing.padded_heads), perm=perm)

    q = heads(q_flat, [0, 2, 1, 3])  # [B, heads, S, d]
    k = heads(k_flat, [0, 2, 3, 1])  # [B, heads, d, S]
    v = heads(v_flat, [0, 2, 1, 3])  # [B, heads, S, d]
    scores = g.op("Div", g.op("MatMul", q, k), g.scalar(math.sqrt(cfg.head_size)))
    probs = g.op("Softmax", g.op("Add", scores, mask_bias), axis=-1)
    context = g.op("Transpose", g.op("MatMul", probs, v), perm=[0, 2, 1, 3])  # [B, S, heads, d]
    packed = g.op("Gather", g.op("Reshape", context, merge_heads), packing.tokens, axis=0)  # [T, H]
    out = _linear(g, packed, weights, f"{prefix}.output.dense")
    return _layer_norm(g, g.op("Add", out, x), weights, f"{prefix}.output.LayerNorm", cfg.layer_norm_eps)


def _encoder_layer(g: Graph, x: str, mask_bias: str, weights, index: int, cfg: BertConfig, packing: _Packing) -> str:
    prefix = f"encoder.layer.{index}"
    attended = _attention(g, x, mask_bias, weights, f"{prefix}.attention", cfg, packing)
    hidden = _gelu(g, _linear(g, attended, weights, f"{prefix}.intermediate.dense"))
    out = _linear(g, hidden, weights, f"{prefix}.output.dense")
    return _layer_norm(g, g.op("Add", out, attended), weights, f"{prefix}.output.LayerNorm", cfg.layer_norm_eps)


def build_minilm_graph(weights: dict[str, np.ndarray], cfg: BertConfig = BertConfig()) -> onnx.ModelProto:
    """Return the ONNX model: (input_ids, attention_mask) int64 [B, S] -> embedding float [B, H]."""
    g = Graph()
    axis1 = g.const("axis1", np.array([1], np.int64))
    axis_last = g.const("axis_last", np.array([-1], np.int64))
    zero = g.const("zero", np.array([0], np.int64))

    # Embeddings: word + position + token type 0 (the model is only ever fed one segment).
    words = g.op("Gather", g.const("word_embeddings", weights["embeddings.word_embeddings.weight"]), "input_ids")
    seq_len = g.op("Shape", "input_ids", start=1, end=2)
    positions = g.op(
        "Slice",
        g.const("position_embeddings", weights["embeddings.position_embeddings.weight"]),
        zero,
        seq_len,
        zero,
    )
    token_type = g.const("token_type_0", weights["embeddings.token_type_embeddings.weight"][0])
    summed = g.op("Add", g.op("Add", words, positions), token_type)
    embedded = _layer_norm(g, summed, weights, "embeddings.LayerNorm", cfg.layer_norm_eps)

    # Padding-free: the encoder's linear layers (nearly all of its cost) run on the real tokens only,
    # packed into [T, H]; attention scores, which are per row, run on the padded layout.
    h = cfg.hidden_size
    flat_mask = g.op("Reshape", "attention_mask", g.const("flat", np.array([-1], np.int64)))
    is_real = g.op("Cast", flat_mask, to=TensorProto.BOOL)
    tokens = g.op("Squeeze", g.op("NonZero", is_real), zero)  # [T]
    count = g.op("Shape", tokens)  # [1]: T, the index of the zero row
    slots = g.op("Sub", g.op("CumSum", flat_mask, zero), g.const("one_i64", np.array(1, np.int64)))
    restore = g.op("Where", is_real, slots, count)
    batch_seq = g.op("Shape", "input_ids")
    padded_heads = g.op(
        "Concat", batch_seq, g.const("heads_dims", np.array([cfg.num_heads, cfg.head_size], np.int64)), axis=0
    )
    zero_rows = {width: g.const(f"zero_row_{width}", np.zeros((1, width), np.float32)) for width in (h, 3 * h)}
    packing = _Packing(tokens, restore, padded_heads, zero_rows)
    x = g.op("Gather", g.op("Reshape", embedded, g.const("flat_hidden", np.array([-1, h], np.int64))), tokens, axis=0)

    # Additive mask: 0 where attended, a large negative number on padding, shaped [B, 1, 1, S].
    mask = g.op("Cast", "attention_mask", to=TensorProto.FLOAT)
    inverted = g.op("Sub", g.scalar(1.0), mask)
    bias = g.op("Mul", inverted, g.scalar(float(np.finfo(np.float32).min)))
    mask_bias = g.op("Unsqueeze", bias, g.const("axes12", np.array([1, 2], np.int64)))

    for index in range(cfg.num_layers):
        x = _encoder_layer(g, x, mask_bias, weights, index, cfg, packing)

    # Mean pooling over real tokens, then L2 normalisation (sentence-transformers' head).
    hidden_shape = g.op("Concat", batch_seq, g.const("hidden_dim", np.array([h], np.int64)), axis=0)
    x = g.op("Reshape", _unpack(g, x, h, packing), hidden_shape)  # [B, S, H], zeros in the padding
    mask3 = g.op("Unsqueeze", mask, axis_last)
    summed_tokens = g.op("ReduceSum", x, axis1, keepdims=0)
    counts = g.op("Max", g.op("ReduceSum", mask3, axis1, keepdims=0), g.scalar(1e-9))
    pooled = g.op("Div", summed_tokens, counts)
    norm = g.op("Sqrt", g.op("ReduceSum", g.op("Mul", pooled, pooled), axis_last, keepdims=1))
    g.nodes.append(helper.make_node("Div", [pooled, g.op("Max", norm, g.scalar(1e-12))], ["embedding"]))

    graph = helper.make_graph(
        g.nodes,
        "all-MiniLM-L6-v2",
        [
            helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "sequence"]),
            helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "sequence"]),
        ],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", cfg.hidden_size])],
        g.initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="reference_server")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model
