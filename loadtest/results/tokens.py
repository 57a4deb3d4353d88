"""The ``generation`` section of a summary: tokens served, how they were counted, and goodput.

Pure: it reads the counts the recorders kept by class (``engine.recorder``, ``streamed``) and the
run's accounting. Goodput is DistServe's: the requests that met every per-request bound of the
scenario's ``[generation] goodput``, over every measured request of the clean classes, failed and
dropped ones included, so a server that sheds load cannot look good by answering fewer.
"""

from __future__ import annotations

from collections.abc import Mapping

from loadtest.results.summary import MESSY_PREFIX, Accounting, Percentiles


def counted_by(by_usage: int, by_chunks: int) -> str:
    """How output tokens were counted: the server's usage, one a content chunk, or both (which requests)."""
    if by_chunks == 0:
        return "usage"
    if by_usage == 0:
        return "chunks"
    return f"usage ({by_usage:,} requests), chunks ({by_chunks:,} requests without usage)"


def generation_section(
    tokens: Mapping[str, Mapping[str, int]],
    rates: Mapping[str, Percentiles],
    accounting: Accounting,
    seconds: float,
    slos: tuple[str, ...],
    streamed: bool,
) -> dict:
    """The summary's ``generation``: ``tokens`` is class -> count (``output_tokens``, ``goodput_met``...)."""
    classes = sorted(cls for cls in tokens if not cls.startswith(MESSY_PREFIX))

    def total(name: str) -> int:
        return sum(int(tokens[cls].get(name, 0)) for cls in classes)

    answered = total("by_usage") + total("by_chunks")
    section: dict = {
        "streamed": streamed,
        "token_counts": counted_by(total("by_usage"), total("by_chunks")),
        "output_tokens": total("output_tokens"),
        # Input tokens come from usage only: None when no answer carried a count.
        "input_tokens": total("input_tokens") if total("no_input_count") < answered else None,
        "output_tokens_per_s_per_request": {cls: p.as_dict() for cls, p in rates.items()},
        # Answers that completed: the output tokens they asked for (max_tokens), against output_tokens served.
        "asked_tokens": total("asked_tokens"),
        # Streams that failed half-way: what they delivered before they did, of what they asked for.
        "failed_streams": {
            "streams": total("failed_streams"),
            "output_tokens": total("failed_output_tokens"),
            "asked_tokens": total("failed_asked_tokens"),
        },
        "by_class": {
            cls: {
                "output_tokens": int(tokens[cls].get("output_tokens", 0)),
                "input_tokens": int(tokens[cls].get("input_tokens", 0)),
            }
            for cls in classes
        },
    }
    if slos:
        judged = {cls: c.scheduled for cls, c in accounting.by_class.items() if not cls.startswith(MESSY_PREFIX)}
        met = {cls: int(tokens.get(cls, {}).get("goodput_met", 0)) for cls in judged}
        all_judged, all_met = sum(judged.values()), sum(met.values())
        section["goodput"] = {
            "slos": list(slos),
            "met": all_met,
            "judged": all_judged,
            "share": all_met / all_judged if all_judged else None,
            "per_s": round(all_met / seconds, 3) if seconds else None,
            "by_class": {
                cls: {"met": met[cls], "judged": n, "share": met[cls] / n if n else None} for cls, n in judged.items()
            },
        }
    return section
