"""The ``generation`` section of a summary: tokens served, how they were counted, and goodput.

Pure: it reads the counts the recorders kept by class (``engine.recorder``, ``streamed``) and the
run's accounting. Goodput is DistServe's: the requests that met every per-request bound of the
scenario's ``[generation] goodput``, over every measured request of the clean classes, failed and
dropped ones included, so a server that sheds load cannot look good by answering fewer.
"""

from __future__ import annotations

from collections.abc import Mapping

from loadtest.results.summary import MESSY_PREFIX, Accounting, Percentiles


def counted_by(by_usage: int, by_chunks: int, by_tokenizer: int = 0, tokenizer: str | None = None) -> str:
    """How output tokens were counted: the server's usage, the scenario's tokenizer, one a content chunk, or several
    (which requests each)."""
    ways = [(by_usage, "usage"), (by_tokenizer, f"tokenizer {tokenizer}"), (by_chunks, "chunks")]
    used = [(n, name) for n, name in ways if n]
    if len(used) <= 1:
        return used[0][1] if used else "usage"
    return ", ".join(f"{name} ({n:,} requests)" for n, name in used)


def generation_section(
    tokens: Mapping[str, Mapping[str, int]],
    rates: Mapping[str, Percentiles],
    accounting: Accounting,
    seconds: float,
    slos: tuple[str, ...],
    streamed: bool,
    tokenizer: str | None = None,
) -> dict:
    """The summary's ``generation``: ``tokens`` is class -> count (``output_tokens``, ``goodput_met``...)."""
    classes = sorted(cls for cls in tokens if not cls.startswith(MESSY_PREFIX))

    def total(name: str) -> int:
        return sum(int(tokens[cls].get(name, 0)) for cls in classes)

    answered = total("by_usage") + total("by_chunks") + total("by_tokenizer")
    section: dict = {
        "streamed": streamed,
        "token_counts": counted_by(total("by_usage"), total("by_chunks"), total("by_tokenizer"), tokenizer),
        "output_tokens": total("output_tokens"),
        # Input tokens come from usage, else the scenario's tokenizer: None when neither counted them.
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
