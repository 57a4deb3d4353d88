"""A served text-generation model: its decoder, tokenizer and chat template, and the generator that schedules it.

Loaded from a built model directory (``<variant>.onnx``, ``config.json``, ``tokenizer.json``;
``decoder.py``). Prompts become token ids here, checked against the model's vocabulary and the
server's context (``--max-context``), before a request takes a place in the queue.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from .decoder import Decoder, DecoderConfig
from .detokenizer import TextStream
from .errors import BadRequest, ModelsMissing, ReferenceServerError
from .generation import GenerationConfig, Generator, IterationObserver
from .manifest import load_manifest, model_dir
from .models import SessionSettings, make_session

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # no thread pool competing with ORT's
from tokenizers import Tokenizer  # noqa: E402

KIND = "text-generation"


@dataclass
class GenerativeModel:
    name: str
    version: str  # the variant: fp32, int8
    config: DecoderConfig
    tokenizer: Tokenizer
    generator: Generator
    max_chars_per_token: int  # the longest token's text: a prompt of more characters than this many a
    # context position cannot fit, and is refused before it is tokenised

    kind = KIND

    @property
    def max_context(self) -> int:
        return self.generator.config.max_context

    def chat_ids(self, messages: Sequence[Mapping[str, str]]) -> list[int]:
        return self.text_ids(self.config.chat_prompt(messages))

    def text_ids(self, text: str) -> list[int]:
        if len(text) > self.max_context * self.max_chars_per_token:
            raise BadRequest(
                f"the prompt is {len(text):,} characters, more than a context of {self.max_context} tokens "
                "can hold; this model's maximum context length is "
                f"{self.max_context} tokens"
            )
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def check_ids(self, ids: Sequence[int]) -> None:
        vocab = self.config.vocab_size
        bad = next((i for i in ids if not 0 <= i < vocab), None)
        if bad is not None:
            raise BadRequest(f"token id {bad} is out of this model's vocabulary (0 to {vocab - 1})")

    def text_stream(self, stop: Sequence[str] = ()) -> TextStream:
        return TextStream(self._decode, stop)

    def _decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=True)


def is_generative(models_dir: Path, name: str) -> bool:
    """Whether the built model ``name`` generates text (else ``models.load_model`` serves it)."""
    entry = load_manifest(models_dir)["models"].get(name)
    return entry is not None and entry.get("kind") == KIND


def load_generative_model(
    models_dir: Path,
    name: str,
    variant: str,
    settings: SessionSettings,
    generation: GenerationConfig,
    observer: IterationObserver | None = None,
) -> GenerativeModel:
    """Load one built variant and make its generator (started by the app's lifespan)."""
    entry = load_manifest(models_dir)["models"][name]
    if f"{variant}.onnx" not in entry["files"]:
        variants = sorted(f.removesuffix(".onnx") for f in entry["files"] if f.endswith(".onnx"))
        raise ModelsMissing(f"model '{name}' has no variant '{variant}'; variants: {', '.join(variants)}")
    directory = model_dir(models_dir, name)
    config = DecoderConfig.load(directory)
    if generation.max_context > config.max_positions:
        raise ReferenceServerError(
            f"--max-context {generation.max_context} is past what '{name}' was trained for "
            f"({config.max_positions} positions)"
        )
    decoder = Decoder(make_session(directory / f"{variant}.onnx", settings), config)
    tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))
    tokenizer.no_truncation()
    tokenizer.no_padding()
    longest = max(len(token) for token in tokenizer.get_vocab(with_added_tokens=True))
    return GenerativeModel(name, variant, config, tokenizer, Generator(decoder, generation, observer), longest)


__all__ = ["GenerativeModel", "KIND", "is_generative", "load_generative_model"]
