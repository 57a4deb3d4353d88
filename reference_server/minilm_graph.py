"""Emit the all-MiniLM-L6-v2 sentence encoder as an ONNX graph, from its safetensors weights.

The graph is the BERT encoder followed by the sentence-transformers head (mean pooling over the
attention mask, then L2 normalisation), so one ``session.run`` turns token ids into the same
unit-length embedding that the upstream PyTorch model gives. Building it by hand with
``onnx.helper`` keeps torch out of the product: the weights are read into numpy and nothing else.

Scalar constants are made with ``np.asarray`` so that they stay 0-d: a (1,)-shaped constant
broadcasts differently in ORT's fused kernels at the default optimisation level.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

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


class _Graph:
    """Accumulates nodes and initializers; each op returns the name of its output."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._count = 0

    def _name(self, hint: str) -> str:
        self._count += 1
        return f"{hint}_{self._count}"

    def const(self, name: str, value: np.ndarray) -> str:
        self.initializers.append(numpy_helper.from_array(value, name))
        return name

    def scalar(self, value: float) -> str:
        return self.const(self._name("scalar"), np.asarray(value, dtype=np.float32))

    def op(self, op_type: str, *inputs: str, **attrs) -> str:
        out = self._name(op_type.lower())
        self.nodes.append(helper.make_node(op_type, list(inputs), [out], **attrs))
        return out


def _linear(g: _Graph, x: str, weights: dict[str, np.ndarray], prefix: str) -> str:
    # torch stores Linear weights as [out, in]; MatMul wants [in, out].
    w = g.const(f"{prefix}.weight", np.ascontiguousarray(weights[f"{prefix}.weight"].T))
    b = g.const(f"{prefix}.bias", weights[f"{prefix}.bias"])
    return g.op("Add", g.op("MatMul", x, w), b)


def _layer_norm(g: _Graph, x: str, weights: dict[str, np.ndarray], prefix: str, eps: float) -> str:
    scale = g.const(f"{prefix}.weight", weights[f"{prefix}.weight"])
    bias = g.const(f"{prefix}.bias", weights[f"{prefix}.bias"])
    return g.op("LayerNormalization", x, scale, bias, axis=-1, epsilon=eps)


def _gelu(g: _Graph, x: str) -> str:
    """Exact GELU, x * 0.5 * (1 + erf(x / sqrt(2))), as BERT uses it (not the tanh approximation)."""
    erf = g.op("Erf", g.op("Div", x, g.scalar(math.sqrt(2.0))))
    return g.op("Mul", g.op("Mul", x, g.scalar(0.5)), g.op("Add", erf, g.scalar(1.0)))


def _attention(g: _Graph, x: str, mask_bias: str, weights, prefix: str, cfg: BertConfig) -> str:
    split_heads = g.const(g._name("heads_shape"), np.array([0, 0, cfg.num_heads, cfg.head_size], np.int64))
    merge_heads = g.const(g._name("hidden_shape"), np.array([0, 0, cfg.hidden_size], np.int64))

    def heads(name: str, perm: list[int]) -> str:
        projected = _linear(g, x, weights, f"{prefix}.self.{name}")
        return g.op("Transpose", g.op("Reshape", projected, split_heads), perm=perm)

    q = heads("query", [0, 2, 1, 3])  # [B, heads, S, d]
    k = heads("key", [0, 2, 3, 1])  # [B, heads, d, S]
    v = heads("value", [0, 2, 1, 3])  # [B, heads, S, d]
    scores = g.op("Div", g.op("MatMul", q, k), g.scalar(math.sqrt(cfg.head_size)))
    probs = g.op("Softmax", g.op("Add", scores, mask_bias), axis=-1)
    context = g.op("Transpose", g.op("MatMul", probs, v), perm=[0, 2, 1, 3])
    merged = g.op("Reshape", context, merge_heads)
    out = _linear(g, merged, weights, f"{prefix}.output.dense")
    return _layer_norm(g, g.op("Add", out, x), weights, f"{prefix}.output.LayerNorm", cfg.layer_norm_eps)


def _encoder_layer(g: _Graph, x: str, mask_bias: str, weights, index: int, cfg: BertConfig) -> str:
    prefix = f"encoder.layer.{index}"
    attended = _attention(g, x, mask_bias, weights, f"{prefix}.attention", cfg)
    hidden = _gelu(g, _linear(g, attended, weights, f"{prefix}.intermediate.dense"))
    out = _linear(g, hidden, weights, f"{prefix}.output.dense")
    return _layer_norm(g, g.op("Add", out, attended), weights, f"{prefix}.output.LayerNorm", cfg.layer_norm_eps)


def build_minilm_graph(weights: dict[str, np.ndarray], cfg: BertConfig = BertConfig()) -> onnx.ModelProto:
    """Return the ONNX model: (input_ids, attention_mask) int64 [B, S] -> embedding float [B, H]."""
    g = _Graph()
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
    x = _layer_norm(g, summed, weights, "embeddings.LayerNorm", cfg.layer_norm_eps)

    # Additive mask: 0 where attended, a large negative number on padding, shaped [B, 1, 1, S].
    mask = g.op("Cast", "attention_mask", to=TensorProto.FLOAT)
    inverted = g.op("Sub", g.scalar(1.0), mask)
    bias = g.op("Mul", inverted, g.scalar(float(np.finfo(np.float32).min)))
    mask_bias = g.op("Unsqueeze", bias, g.const("axes12", np.array([1, 2], np.int64)))

    for index in range(cfg.num_layers):
        x = _encoder_layer(g, x, mask_bias, weights, index, cfg)

    # Mean pooling over real tokens, then L2 normalisation (sentence-transformers' head).
    mask3 = g.op("Unsqueeze", mask, axis_last)
    summed_tokens = g.op("ReduceSum", g.op("Mul", x, mask3), axis1, keepdims=0)
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
