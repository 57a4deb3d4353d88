"""The token-level latencies of one streamed answer, and goodput over many.

Definitions, as the LLM serving literature and its tools use them (vLLM's benchmarks, GuideLLM,
genai-perf), with one difference that is this harness's: time to first token is counted from the
**intended** send time, so a load generator that sends late cannot hide a slow server (the same
rule as every latency this harness reports).

- ``ttft``: intended send time to the first content chunk;
- ``itl``: each gap between successive content chunks (one a chunk: OpenAI-style servers send a
  token a chunk; where a chunk carries several, its gap is the time for all of them);
- ``tpot``: (last content chunk - first) / (output tokens - 1), for answers of two tokens or more;
- ``e2e``: intended send time to the end of the stream;
- output tokens per second of the request: output tokens / (end - first content chunk).

Goodput is DistServe's: the share, and the rate, of requests that met every SLO given.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from loadtest.traffic.sse import Stream


@dataclass(frozen=True)
class TokenLatency:
    """One request's figures, in milliseconds (``tokens_per_s`` in output tokens a second)."""

    ttft_ms: float | None  # None: no content arrived
    itl_ms: tuple[float, ...]
    tpot_ms: float | None  # None under two output tokens
    e2e_ms: float
    output_tokens: int
    tokens_per_s: float | None


def token_latency(stream: Stream, intended: float, ended: float) -> TokenLatency:
    """The figures of ``stream``, whose request was due at ``intended`` and whose body ended at ``ended``."""
    times = stream.content_times
    tokens = stream.output_tokens
    e2e = (ended - intended) * 1000
    if not times:
        return TokenLatency(None, (), None, e2e, tokens, None)
    first, last = times[0], times[-1]
    itl = tuple((b - a) * 1000 for a, b in zip(times, times[1:], strict=False))
    tpot = (last - first) * 1000 / (tokens - 1) if tokens > 1 else None
    generating = ended - first
    rate = tokens / generating if generating > 0 else None
    return TokenLatency((first - intended) * 1000, itl, tpot, e2e, tokens, rate)


# The figures an SLO may bound, per request: each a function of one request's TokenLatency.
BOUNDED = {
    "ttft": lambda t: t.ttft_ms,
    "tpot": lambda t: t.tpot_ms,
    "e2e": lambda t: t.e2e_ms,
    "itl_max": lambda t: max(t.itl_ms) if t.itl_ms else 0.0,
}


@dataclass(frozen=True)
class Goodput:
    met: int  # requests that met every SLO
    total: int  # requests judged: every request sent in the window, failed ones included
    seconds: float

    @property
    def share(self) -> float:
        return self.met / self.total if self.total else 0.0

    @property
    def per_s(self) -> float:
        return self.met / self.seconds if self.seconds > 0 else 0.0


_SLO = re.compile(r"^\s*(?P<figure>[a-z_]+)\s*<\s*(?P<number>[0-9]+(?:\.[0-9]+)?)\s*(?P<unit>us|µs|ms|s)\s*$")
_UNIT_MS = {"us": 0.001, "µs": 0.001, "ms": 1.0, "s": 1000.0}


def parse_slo(text: str) -> tuple[str, float]:
    """``"ttft < 500ms"`` -> ("ttft", 500.0): one per-request bound of goodput; ValueError says what is wrong."""
    match = _SLO.match(text)
    if match is None:
        raise ValueError(f"{text!r}: expected a per-request bound like 'ttft < 500ms' or 'tpot < 50ms'")
    if match["figure"] not in BOUNDED:
        raise ValueError(f"{text!r}: unknown figure {match['figure']!r}; one of {', '.join(BOUNDED)}")
    return match["figure"], float(match["number"]) * _UNIT_MS[match["unit"]]


def meets(latency: TokenLatency | None, slos_ms: Mapping[str, float]) -> bool:
    """Whether one request met every bound in ``slos_ms`` (figure -> strict upper bound in ms).

    A failed request (None) meets none; a figure the request has no value for (``tpot`` of a
    one-token answer) does not count against it.
    """
    if latency is None:
        return False
    for figure, bound in slos_ms.items():
        if figure not in BOUNDED:
            raise ValueError(f"unknown per-request figure {figure!r}; choose from {', '.join(BOUNDED)}")
        value = BOUNDED[figure](latency)
        if figure == "ttft" and value is None:
            return False  # no token at all is no answer
        if value is not None and not value < bound:
            return False
    return True


def goodput(latencies: Iterable[TokenLatency | None], slos_ms: Mapping[str, float], seconds: float) -> Goodput:
    """DistServe's goodput over ``seconds``: failed requests (None) count in the total and never as met."""
    met = total = 0
    for latency in latencies:
        total += 1
        met += meets(latency, slos_ms)
    return Goodput(met, total, seconds)


__all__ = ["BOUNDED", "Goodput", "TokenLatency", "goodput", "meets", "parse_slo", "token_latency"]
