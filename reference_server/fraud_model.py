"""A tiny fraud-scoring MLP, trained with numpy on a seeded synthetic data set, exported to ONNX.

It exists so that tests and quick load runs have a model that answers in microseconds, with the
same server path (validation, batching, quantisation) as the transformer. The data set is
synthetic but shaped like card transactions, so the features have names a reader recognises.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

FEATURES = (
    "log_amount",
    "hour_of_day",
    "merchant_risk",
    "log_km_from_home",
    "txns_last_24h",
    "log_card_age_days",
    "is_foreign",
    "amount_vs_usual",
)
CLASSES = ("legit", "fraud")


@dataclass(frozen=True)
class TrainedMLP:
    mean: np.ndarray
    std: np.ndarray
    layers: tuple[tuple[np.ndarray, np.ndarray], ...]  # (weight [in, out], bias [out]) per layer
    test_accuracy: float


def synthetic_transactions(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Return features [n, 8] float32 and labels [n] (1 = fraud), about 20% fraud."""
    rng = np.random.default_rng(seed)
    x = np.column_stack(
        [
            rng.normal(3.5, 1.2, n),  # log amount
            rng.integers(0, 24, n).astype(float),
            rng.beta(2, 5, n),
            rng.normal(1.5, 1.5, n),
            rng.poisson(2.0, n).astype(float),
            rng.normal(5.5, 1.5, n),
            (rng.random(n) < 0.1).astype(float),
            rng.lognormal(0.0, 0.6, n),
        ]
    ).astype(np.float32)
    night = ((x[:, 1] < 5) | (x[:, 1] > 22)).astype(float)
    score = (
        0.9 * (x[:, 0] - 3.5)
        + 3.0 * (x[:, 2] - 0.3)
        + 0.6 * (x[:, 3] - 1.5)
        + 0.5 * (x[:, 4] - 2.0)
        - 0.7 * (x[:, 5] - 5.5)
        + 1.2 * x[:, 6]
        + 1.5 * np.log(x[:, 7])
        + 1.0 * night
        + 0.8 * x[:, 6] * night
        - 1.9
    )
    labels = (score + rng.normal(0, 0.7, n) > 0).astype(np.int64)
    return x, labels


def train_mlp(seed: int = 7, hidden: tuple[int, ...] = (32, 16), epochs: int = 30) -> TrainedMLP:
    """Train a ReLU MLP with softmax cross-entropy and Adam, in plain numpy (about a second)."""
    x, y = synthetic_transactions(24_000, seed)
    x_train, y_train, x_test, y_test = x[:20_000], y[:20_000], x[20_000:], y[20_000:]
    mean, std = x_train.mean(0), x_train.std(0) + 1e-6
    rng = np.random.default_rng(seed)
    sizes = (len(FEATURES), *hidden, len(CLASSES))
    params = []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:], strict=True):
        params += [rng.normal(0, np.sqrt(2.0 / fan_in), (fan_in, fan_out)), np.zeros(fan_out)]
    moments = [(np.zeros_like(p), np.zeros_like(p)) for p in params]
    step, lr, beta1, beta2 = 0, 3e-3, 0.9, 0.999
    xs = (x_train - mean) / std
    for _ in range(epochs):
        order = rng.permutation(len(xs))
        for start in range(0, len(xs), 256):
            idx = order[start : start + 256]
            grads = _gradients(params, xs[idx], y_train[idx])
            step += 1
            for i, g in enumerate(grads):
                m, v = moments[i]
                m[:] = beta1 * m + (1 - beta1) * g
                v[:] = beta2 * v + (1 - beta2) * g * g
                params[i] -= lr * (m / (1 - beta1**step)) / (np.sqrt(v / (1 - beta2**step)) + 1e-8)
    logits = _forward(params, (x_test - mean) / std)[-1]
    accuracy = float((logits.argmax(1) == y_test).mean())
    layers = tuple((params[i].astype(np.float32), params[i + 1].astype(np.float32)) for i in range(0, len(params), 2))
    return TrainedMLP(mean.astype(np.float32), std.astype(np.float32), layers, accuracy)


def _forward(params: list[np.ndarray], x: np.ndarray) -> list[np.ndarray]:
    activations = [x]
    for i in range(0, len(params), 2):
        z = activations[-1] @ params[i] + params[i + 1]
        activations.append(np.maximum(z, 0) if i + 2 < len(params) else z)
    return activations


def _gradients(params: list[np.ndarray], x: np.ndarray, y: np.ndarray) -> list[np.ndarray]:
    acts = _forward(params, x)
    logits = acts[-1]
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    delta = probs
    delta[np.arange(len(y)), y] -= 1
    delta /= len(y)
    grads: list[np.ndarray] = [None] * len(params)  # type: ignore[list-item]
    for i in range(len(params) - 2, -1, -2):
        grads[i] = acts[i // 2].T @ delta
        grads[i + 1] = delta.sum(0)
        if i:
            delta = (delta @ params[i].T) * (acts[i // 2] > 0)
    return grads


def build_fraud_graph(mlp: TrainedMLP) -> onnx.ModelProto:
    """features float [B, 8] -> probabilities float [B, 2] (legit, fraud); standardisation inside."""
    init = [numpy_helper.from_array(mlp.mean, "mean"), numpy_helper.from_array(mlp.std, "std")]
    nodes = [
        helper.make_node("Sub", ["features", "mean"], ["centered"]),
        helper.make_node("Div", ["centered", "std"], ["h0"]),
    ]
    for i, (weight, bias) in enumerate(mlp.layers):
        init += [numpy_helper.from_array(weight, f"w{i}"), numpy_helper.from_array(bias, f"b{i}")]
        nodes += [
            helper.make_node("MatMul", [f"h{i}", f"w{i}"], [f"mm{i}"]),
            helper.make_node("Add", [f"mm{i}", f"b{i}"], [f"z{i}"]),
        ]
        last = i == len(mlp.layers) - 1
        nodes.append(
            helper.make_node("Softmax" if last else "Relu", [f"z{i}"], ["probabilities" if last else f"h{i + 1}"])
        )
    graph = helper.make_graph(
        nodes,
        "fraud-mlp",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", len(FEATURES)])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", len(CLASSES)])],
        init,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="reference_server")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model
