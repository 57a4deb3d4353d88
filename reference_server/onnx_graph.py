"""A small builder for ONNX graphs written node by node: what the MiniLM and decoder builders share.

Each op appends one node and returns the name of its output, so a model reads as the expressions
it computes. Build-time only: the serving process never imports onnx (``tests/test_server_imports.py``).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper


class Graph:
    """Accumulates nodes and initializers; each op returns the name of its output (or takes one)."""

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

    def ints(self, *values: int) -> str:
        return self.const(self._name("ints"), np.array(values, np.int64))

    def scalar(self, value: float) -> str:
        # 0-d, so that it broadcasts as a scalar in ORT's fused kernels
        return self.const(self._name("scalar"), np.asarray(value, dtype=np.float32))

    def op(self, op_type: str, *inputs: str, output: str | None = None, **attrs) -> str:
        out = output or self._name(op_type.lower())
        self.nodes.append(helper.make_node(op_type, list(inputs), [out], **attrs))
        return out

    def split(self, x: str, sizes: list[int], axis: int) -> list[str]:
        outs = [self._name("split") for _ in sizes]
        self.nodes.append(helper.make_node("Split", [x, self.ints(*sizes)], outs, axis=axis))
        return outs
