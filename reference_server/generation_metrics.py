"""Prometheus metrics of text generation, on the server's registry beside ``metrics.py``'s.

Named after vLLM's (``vllm:time_to_first_token_seconds``, ``vllm:num_requests_running``...), with
our ``generation_`` prefix and the ``model`` and ``version`` labels every series here carries:

- tokens: ``generation_prompt_tokens_total``, ``generation_completion_tokens_total``;
- latency per request: ``generation_time_to_first_token_seconds`` (arrival to the first token
  chosen), ``generation_inter_token_seconds`` (one observation per token after the first);
- the scheduler: ``generation_decode_batch_size`` (sequences per decode step),
  ``generation_decode_step_seconds``, ``generation_prefill_tokens`` (padded tokens per prefill run);
- now: ``generation_running_sequences``, ``generation_waiting_requests``;
- ends: ``generation_finished_total`` by ``finish_reason`` (stop, length, cancelled, error, abort).

The scheduler's observations come from its worker thread; prometheus_client's metrics are thread-safe.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from .metrics import MODEL

_TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 60.0)
_ITL_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5)
_STEP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)
_PREFILL_BUCKETS = (16, 32, 64, 128, 256, 512, 1024, 2048, 4096)
FINISH_REASONS = ("stop", "length", "cancelled", "error", "abort")


class GenerationMetrics:
    def __init__(self, registry: CollectorRegistry, versions: Mapping[str, str]) -> None:
        """``versions``: each generative model's name and version (its variant)."""
        self.versions = dict(versions)
        r = registry
        self.prompt_tokens = Counter("generation_prompt_tokens", "Prompt tokens prefilled", MODEL, registry=r)
        self.completion_tokens = Counter(
            "generation_completion_tokens", "Completion tokens generated (sent or not)", MODEL, registry=r
        )
        self.first_token = Histogram(
            "generation_time_to_first_token_seconds",
            "From a request's arrival to its first token",
            MODEL,
            buckets=_TTFT_BUCKETS,
            registry=r,
        )
        self.inter_token = Histogram(
            "generation_inter_token_seconds",
            "Between consecutive tokens of one sequence, one observation a token after the first",
            MODEL,
            buckets=_ITL_BUCKETS,
            registry=r,
        )
        self.decode_batch = Histogram(
            "generation_decode_batch_size",
            "Sequences in each decode step",
            MODEL,
            buckets=_BATCH_BUCKETS,
            registry=r,
        )
        self.decode_step = Histogram(
            "generation_decode_step_seconds",
            "ONNX Runtime time per decode step",
            MODEL,
            buckets=_STEP_BUCKETS,
            registry=r,
        )
        self.prefill_tokens = Histogram(
            "generation_prefill_tokens",
            "Padded prompt tokens per prefill run (a batch of whole prompts, or one chunk of a long one)",
            MODEL,
            buckets=_PREFILL_BUCKETS,
            registry=r,
        )
        self.running = Gauge("generation_running_sequences", "Sequences holding a KV cache slot", MODEL, registry=r)
        self.waiting = Gauge("generation_waiting_requests", "Requests waiting for a slot", MODEL, registry=r)
        self.finished = Counter(
            "generation_finished", "Completions ended, by finish reason", [*MODEL, "finish_reason"], registry=r
        )
        for name, version in self.versions.items():
            for reason in FINISH_REASONS:  # every series from the start at 0, so a rate() sees the first one
                self.finished.labels(name, version, reason)

    def labels(self, model: str) -> tuple[str, str]:
        return model, self.versions[model]

    def track(self, model: str, running: Callable[[], int], waiting: Callable[[], int]) -> None:
        self.running.labels(*self.labels(model)).set_function(running)
        self.waiting.labels(*self.labels(model)).set_function(waiting)

    def observer(self, model: str) -> _IterationObserver:
        labels = self.labels(model)
        return _IterationObserver(
            self.decode_batch.labels(*labels), self.decode_step.labels(*labels), self.prefill_tokens.labels(*labels)
        )

    def request(self, model: str) -> RequestObserver:
        labels = self.labels(model)
        return RequestObserver(
            self.prompt_tokens.labels(*labels),
            self.completion_tokens.labels(*labels),
            self.first_token.labels(*labels),
            self.inter_token.labels(*labels),
            {reason: self.finished.labels(*labels, reason) for reason in FINISH_REASONS},
        )


class _IterationObserver:
    """What the scheduler reports after each prefill run and decode step (``generation.IterationObserver``)."""

    def __init__(self, batch, step, prefill) -> None:
        self._batch, self._step, self._prefill = batch, step, prefill

    def prefill(self, rows: int, tokens: int, seconds: float) -> None:
        self._prefill.observe(tokens)

    def decode(self, rows: int, seconds: float) -> None:
        self._batch.observe(rows)
        self._step.observe(seconds)


class RequestObserver:
    """One model's per-request series, looked up once; the handler reports each token and the end."""

    def __init__(self, prompt, completion, first, inter, finished) -> None:
        self._prompt, self._completion, self._first, self._inter = prompt, completion, first, inter
        self._finished = finished

    def admitted(self, prompt_tokens: int) -> None:
        self._prompt.inc(prompt_tokens)

    def token(self, received_ns: int, previous_ns: int | None, now_ns: int) -> None:
        self._completion.inc()
        if previous_ns is None:
            self._first.observe((now_ns - received_ns) / 1e9)
        else:
            self._inter.observe((now_ns - previous_ns) / 1e9)

    def finished(self, reason: str) -> None:
        self._finished[reason].inc()


__all__ = ["FINISH_REASONS", "GenerationMetrics", "RequestObserver"]
