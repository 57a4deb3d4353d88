"""A generated sequence's text as it grows, token by token, and where a stop string cuts it (pure).

Byte-level BPE splits a character over tokens (an emoji is often two or three), so one token's
text alone may be half a character. As TGI and vLLM do, the text is decoded over a short window
of recent tokens (``prefix`` to the end) and compared with the same window without the newest
(``prefix`` to ``read``); only once the window's text grows by whole characters (no trailing
U+FFFD) is the growth released and the window moved on. The deltas put together are the text of
the whole sequence, decoded at once.

Stop strings end the text before the first one that occurs, not included (vLLM's default). While
any are set, the last ``len(longest) - 1`` characters are held back, since they may be the start
of one that the next token completes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

REPLACEMENT = "\ufffd"


class TextStream:
    def __init__(self, decode: Callable[[Sequence[int]], str], stop: Sequence[str] = ()) -> None:
        self._decode = decode
        self.stop = tuple(s for s in stop if s)
        self._hold = max((len(s) for s in self.stop), default=1) - 1
        self.ids: list[int] = []
        self._prefix = self._read = 0  # the window: ids[_prefix:] decoded against ids[_prefix:_read]
        self.text = ""  # every whole character decoded so far (cut at a stop string, once found)
        self._sent = 0  # characters of ``text`` already released
        self.stopped = False  # a stop string was found: nothing more is released

    def push(self, token: int) -> str:
        """Add the newest token; the text it releases (often one token's, sometimes none)."""
        self.ids.append(token)
        if self.stopped:
            return ""
        before = self._decode(self.ids[self._prefix : self._read])
        after = self._decode(self.ids[self._prefix :])
        if len(after) > len(before) and not after.endswith(REPLACEMENT):
            self.text += after[len(before) :]
            self._prefix, self._read = self._read, len(self.ids)
        return self._release(final=False)

    def finish(self) -> str:
        """The sequence has ended: release what is held, a last partial character included."""
        if not self.stopped:
            before = self._decode(self.ids[self._prefix : self._read])
            after = self._decode(self.ids[self._prefix :])
            if len(after) > len(before):
                self.text += after[len(before) :]
            self._prefix = self._read = len(self.ids)
        return self._release(final=True)

    def _release(self, final: bool) -> str:
        if self.stopped:
            return ""
        if self.stop:
            start = max(0, self._sent - self._hold)
            found = [i for i in (self.text.find(s, start) for s in self.stop) if i >= 0]
            if found:
                self.stopped = True
                self.text = self.text[: min(found)]
                delta, self._sent = self.text[self._sent :], len(self.text)
                return delta
        end = len(self.text) if final else max(self._sent, len(self.text) - self._hold)
        delta, self._sent = self.text[self._sent : end], end
        return delta


__all__ = ["TextStream"]
