"""Count tokens with the model's own tokenizer, where the server does not say (no ``usage`` in its answers).

A scenario names a Hugging Face ``tokenizer.json`` (``[generation] tokenizer``); the prompts are
counted once, when the payload pool is built, and the answers' text once a second, in a batch,
by the recorder. A chat prompt is counted as its text, without the server's chat template, so
its count is a little under the server's: the summary says the counts came from the tokenizer.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path

from loadtest.errors import ConfigError

Counter = Callable[[list[str]], list[int]]  # texts -> tokens in each


@functools.cache
def load_counter(path: Path, source: str = "[generation] tokenizer") -> Counter:
    """A counter over the tokenizer in ``path``, read once a process; a ConfigError naming the file if it is not one."""
    from tokenizers import Tokenizer  # the tokenizer library loads only for a scenario that names one

    if not path.is_file():
        raise ConfigError(source, None, f"{path}: no such file (a Hugging Face tokenizer.json)")
    try:
        tokenizer = Tokenizer.from_file(str(path))
    except Exception as exc:  # tokenizers raises its own Exception for any malformed file
        raise ConfigError(str(path), None, f"not a Hugging Face tokenizer.json: {str(exc)[:200]}") from None

    def count(texts: list[str]) -> list[int]:
        return [len(encoding.ids) for encoding in tokenizer.encode_batch(texts, add_special_tokens=False)]

    return count


__all__ = ["Counter", "load_counter"]
