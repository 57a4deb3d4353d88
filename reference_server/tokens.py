"""Token ids of texts truncated to the model's length, reading no more of each text than that needs.

Truncation to ``max_tokens`` (256) never needs the whole of a long text. BERT's pre-tokeniser splits
the normalised text on whitespace and punctuation, and WordPiece tokenises each word on its own
(a word over ``max_input_chars_per_word``, 100, becomes one ``[UNK]``). So the words that lie
wholly inside a prefix give the same tokens as in the whole text, and only the last word of a
prefix can differ (the cut may fall inside it). When those whole words already give at least
``max_tokens - 2`` tokens (all but ``[CLS]`` and ``[SEP]``), the truncated ids are exactly what
tokenising the whole text and truncating it gives, and the whole text, which has at least one
more word, is known to exceed ``max_tokens``.

A text is read in two steps. First its first ``max_tokens * 16`` characters (prose needs about 5 a
token, so this settles nearly every long text in about a millisecond); then, if those did not hold
enough tokens, its first ``read_limit`` characters: ``max_tokens * (max_input_chars_per_word + 1)``,
25,856 for MiniLM, enough for any text whose words are at most 100 characters apart. A longer text
whose first ``read_limit`` characters still hold too few tokens (long runs of whitespace, say) is
tokenised as those characters alone: ``exact`` is False, and the server in ``--long-text reject``
mode refuses it. Before this bound, one 7.9 MB text held the event loop for 6.8 s.
"""

from __future__ import annotations

from dataclasses import dataclass

from tokenizers import Encoding, Tokenizer

FIRST_READ_CHARS_PER_TOKEN = 16


@dataclass(frozen=True)
class TokenIds:
    """One text's ids, ``[CLS] ... [SEP]``, at most ``max_tokens`` of them."""

    ids: list[int]
    length: int | None  # the whole text's length in tokens, when all of it was tokenised
    exceeds: bool  # the whole text is known to have more than max_tokens tokens
    exact: bool  # True: the whole text's ids, truncated; False: those of its first read_limit characters


class TruncatingTokenizer:
    """A BERT WordPiece tokenizer (no padding, no truncation of its own) that truncates to ``max_tokens``."""

    def __init__(self, tokenizer: Tokenizer, max_tokens: int) -> None:
        self.tokenizer, self.max_tokens = tokenizer, max_tokens
        self.sep_id = tokenizer.token_to_id("[SEP]")
        word_chars = getattr(tokenizer.model, "max_input_chars_per_word", 100)
        self.first_read = max_tokens * FIRST_READ_CHARS_PER_TOKEN
        self.read_limit = max(self.first_read, max_tokens * (word_chars + 1))

    def encode(self, texts: list[str]) -> list[TokenIds]:
        """Each text's ids; ``encode_batch`` releases the GIL, so callers may run this on a thread."""
        results: list[TokenIds | None] = [None] * len(texts)
        pending = list(range(len(texts)))
        for limit in (self.first_read, self.read_limit):
            encodings = self.tokenizer.encode_batch([texts[i][:limit] for i in pending])
            unsettled = []
            for i, encoding in zip(pending, encodings, strict=True):
                settled = self._settle(encoding, whole=len(texts[i]) <= limit, last_read=limit == self.read_limit)
                if settled is None:
                    unsettled.append(i)
                results[i] = settled
            pending = unsettled
            if not pending:
                break
        assert all(result is not None for result in results)
        return results  # type: ignore[return-value]

    def _settle(self, encoding: Encoding, whole: bool, last_read: bool) -> TokenIds | None:
        """The ids, if this read of the text decides them; None when a longer read is needed."""
        all_ids = encoding.ids
        ids = self._truncate(all_ids)
        if whole:
            return TokenIds(ids, len(all_ids), exceeds=len(all_ids) > self.max_tokens, exact=True)
        if self._whole_word_tokens(encoding) >= self.max_tokens - 2:
            return TokenIds(ids, None, exceeds=True, exact=True)
        if last_read:
            return TokenIds(ids, None, exceeds=False, exact=False)
        return None

    def _truncate(self, ids: list[int]) -> list[int]:
        if len(ids) <= self.max_tokens:
            return ids
        return [*ids[: self.max_tokens - 1], self.sep_id]  # what HF truncation to max_length gives

    @staticmethod
    def _whole_word_tokens(encoding: Encoding) -> int:
        """Tokens of the words before the last one (which the cut may have split); specials not counted."""
        words = [w for w in encoding.word_ids if w is not None]
        if not words:
            return 0
        last = words[-1]
        return sum(1 for w in words if w != last)


__all__ = ["TokenIds", "TruncatingTokenizer"]
