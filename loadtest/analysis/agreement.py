"""Output agreement: do two model variants answer the same inputs the same way?

A faster variant (int8, a smaller model) that answers differently is no free win, so ``compare``
reports how far its outputs moved. Pure functions over the output rows of the same N inputs, in
the same order, under variant A and variant B:

- embeddings: the cosine between A's and B's vector for each input (mean, min, 1st percentile),
  and nearest-neighbour agreement: the share of inputs whose most similar other input is the same
  under A as under B (what a search or deduplication built on the embeddings would notice);
- classifiers: top-1 agreement (the argmax class, or a single score thresholded at 0.5) and the
  largest absolute score difference;
- text generation (greedy decoding): the share of answers that are token for token the same, the
  share whose first N tokens are, and where the answers that differ first diverge (a token is a
  streamed chunk, as OpenAI-style servers send one a token).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

Metric = Literal["embedding", "label", "tokens"]


def _rows(name: str, x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2:
        raise ValueError(f"{name} must be N x D output rows, got shape {list(x.shape)}")
    return x


def _pair(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a, b = _rows("a", a), _rows("b", b)
    if a.shape != b.shape:
        raise ValueError(f"outputs differ in shape: {list(a.shape)} vs {list(b.shape)}; compare the same inputs")
    if len(a) == 0:
        raise ValueError("no outputs to compare")
    return a, b


def _unit(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms == 0, 1.0, norms)


def nearest_neighbours(x: np.ndarray) -> np.ndarray:
    """For each row, the index of the most cosine-similar *other* row (-1 when there is none)."""
    unit = _unit(_rows("x", x))
    if len(unit) < 2:
        return np.full(len(unit), -1)
    similarity = unit @ unit.T
    np.fill_diagonal(similarity, -np.inf)
    return similarity.argmax(axis=1)


def embedding_agreement(a: np.ndarray, b: np.ndarray) -> dict:
    """Cosine per input row (mean, min, p1) and nearest-neighbour agreement between A and B.

    ``nn_agreement`` is the fraction of inputs i whose nearest other input (by cosine, among the
    N) under A is the same input as under B; it is ``None`` for fewer than 3 inputs, where every
    input's only neighbour agrees trivially.
    """
    a, b = _pair(a, b)
    cosine = (_unit(a) * _unit(b)).sum(axis=1)
    worst = int(cosine.argmin())
    nn = float((nearest_neighbours(a) == nearest_neighbours(b)).mean()) if len(a) >= 3 else None
    return {
        "metric": "embedding",
        "n": len(a),
        "cosine_mean": float(cosine.mean()),
        "cosine_min": float(cosine[worst]),
        "cosine_p1": float(np.percentile(cosine, 1)),
        "cosine_min_index": worst,
        "nn_agreement": nn,
    }


def labels(scores: np.ndarray) -> np.ndarray:
    """The top-1 label of each row: argmax over the last axis, or score >= 0.5 for one column."""
    scores = _rows("scores", scores)
    if scores.shape[1] == 1:
        return (scores[:, 0] >= 0.5).astype(np.int64)
    return scores.argmax(axis=1)


def label_agreement(a: np.ndarray, b: np.ndarray) -> dict:
    """Top-1 agreement between A's and B's scores, and the largest absolute score difference."""
    a, b = _pair(a, b)
    same = labels(a) == labels(b)
    return {
        "metric": "label",
        "n": len(a),
        "top1_agreement": float(same.mean()),
        "disagreements": int((~same).sum()),
        "max_abs_diff": float(np.abs(a - b).max()),
    }


def metric_for(kind: str | None, outputs: np.ndarray) -> Metric:
    """Which agreement fits a model: from its kind when known, else from the shape of its outputs.

    Kinds as the reference server names them ("text-embedding", "tabular-classifier"); without a
    kind, a single score column, or rows of a few non-negative scores summing to 1 (class
    probabilities), mean a classifier; anything else is treated as an embedding.
    """
    if kind:
        if "classif" in kind:
            return "label"
        if "embed" in kind:
            return "embedding"
    x = _rows("outputs", outputs)
    if x.shape[1] == 1:
        return "label"
    probabilities = x.shape[1] <= 32 and bool((x >= 0).all()) and np.allclose(x.sum(axis=1), 1.0, atol=1e-3)
    return "label" if probabilities else "embedding"


def agreement(a: np.ndarray, b: np.ndarray, kind: str | None = None) -> dict:
    """The agreement that fits the model: embeddings or labels (see ``metric_for``)."""
    if metric_for(kind, a) == "label":
        return label_agreement(a, b)
    return embedding_agreement(a, b)


def first_divergence(a: Sequence[str], b: Sequence[str]) -> int | None:
    """The index of the first token where two answers differ (one ending early counts), or None if identical."""
    for index, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return index
    return None if len(a) == len(b) else min(len(a), len(b))


def token_agreement(a: Sequence[Sequence[str]], b: Sequence[Sequence[str]], first_n: int = 16) -> dict:
    """Greedy answers to the same prompts, A's against B's: identical, the same first ``first_n`` tokens, divergence."""
    if len(a) != len(b):
        raise ValueError(f"answers to compare: {len(a)} against {len(b)}")
    divergences = [first_divergence(x, y) for x, y in zip(a, b, strict=True)]
    diverged = sorted(d for d in divergences if d is not None)
    n = len(divergences)
    return {
        "identical": (n - len(diverged)) / n if n else None,
        "first_n": first_n,
        "first_n_match": sum(d is None or d >= first_n for d in divergences) / n if n else None,
        "diverged": len(diverged),
        "divergence_min": diverged[0] if diverged else None,
        "divergence_median": float(np.median(diverged)) if diverged else None,
        "tokens_a": int(sum(map(len, a))),
        "tokens_b": int(sum(map(len, b))),
    }
