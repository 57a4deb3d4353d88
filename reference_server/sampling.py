"""How the next token is chosen from a sequence's logits, and when a sequence is finished (pure).

Greedy (argmax) unless a request asks for a temperature above 0: the default makes every variant
and every batch composition give the same tokens for the same prompt, so a load test compares
like with like. With a temperature, ``top_k`` and ``top_p`` narrow the choice as vLLM's do, and a
``seed`` makes the draw repeatable. Stopping follows vLLM's order: under ``min_tokens`` the
end-of-sequence tokens cannot be chosen at all; an end-of-sequence token stops (``"stop"``) unless
``ignore_eos``; ``max_tokens`` stops (``"length"``).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SamplingParams:
    max_tokens: int
    min_tokens: int = 0
    temperature: float = 0.0  # 0: greedy
    top_p: float = 1.0
    top_k: int = 0  # 0: every token
    seed: int | None = None
    ignore_eos: bool = False

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0

    def rng(self) -> np.random.Generator | None:
        """The random source of one sequence; None when greedy."""
        return None if self.greedy else np.random.default_rng(self.seed)


def suppress(logits: np.ndarray, tokens: Collection[int]) -> None:
    """Make ``tokens`` impossible to choose (in place): eos before ``min_tokens``."""
    logits[list(tokens)] = -np.inf


def sample(logits: np.ndarray, params: SamplingParams, rng: np.random.Generator) -> int:
    """A token drawn from ``softmax(logits / temperature)``, narrowed to the top k, then to the top p of mass."""
    scaled = logits.astype(np.float64) / params.temperature
    if 0 < params.top_k < scaled.size:
        kth = np.partition(scaled, -params.top_k)[-params.top_k]
        scaled[scaled < kth] = -np.inf
    probs = np.exp(scaled - scaled.max())
    probs /= probs.sum()
    if params.top_p < 1.0:
        order = np.argsort(-probs)
        cumulative = np.cumsum(probs[order])
        keep = order[: int(np.searchsorted(cumulative, params.top_p)) + 1]  # the smallest set reaching top_p
        kept = np.zeros_like(probs)
        kept[keep] = probs[keep]
        probs = kept / kept.sum()
    cumulative = np.cumsum(probs)
    return int(min(np.searchsorted(cumulative, rng.random() * cumulative[-1], side="right"), probs.size - 1))


def finish_reason(token: int, generated: int, params: SamplingParams, eos: Collection[int]) -> str | None:
    """Why a sequence that has just produced its ``generated``-th token, ``token``, ends; None: it goes on."""
    if token in eos and not params.ignore_eos and generated >= params.min_tokens:
        return "stop"
    if generated >= params.max_tokens:
        return "length"
    return None


__all__ = ["SamplingParams", "finish_reason", "sample", "suppress"]
