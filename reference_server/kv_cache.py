"""The decoder's key/value cache: one fixed block of memory per layer, a slot per running sequence.

Keys are stored transposed, ``[slots, KV, D, W]``, and values ``[slots, KV, W, D]``, as the graph
takes them (``decoder_graph.py``): scores are ``Q @ past_key`` and the context ``P @ past_value``
with no transpose or concat of the past. The running sequences are kept in slots ``[:n]`` (the
scheduler moves the last one into a slot that frees), so ``view(0, n)`` is contiguous and ONNX
Runtime reads it where it lies: a decode step copies nothing but the one new position a layer.

``W``, the width the graph is handed, follows the longest sequence held (powers of two from 64, up
to the capacity, ``--max-context``) rather than always being the capacity. The graph attends over
all ``W`` positions, masked or not, so a fixed ``W`` of 1,024 made a decode step of 8 short
sequences cost 133 ms against 82 ms at 256 (SmolLM2 fp32, 1 thread). The memory is the
capacity's, allocated and written through once, at start: left to be mapped as it was first
touched, a new width's first use stalled every stream for 1 to 2 s on this machine (page faults
on hundreds of MB, 5 ms a MB), in the middle of serving. A new width is the same memory laid out
again (the filled positions of the slots in use are copied: tens of ms), which happens each time
the longest sequence crosses a power of two, and back down once the width is four times what is
needed.

One slot more than ``--max-streams`` is kept: the staging slot, where a prompt too long for one
iteration's prefill budget is prefilled chunk by chunk, apart from the running sequences. It joins
them (one move) once its prompt is in.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

MIN_WIDTH = 64


def width_for(needed: int, capacity: int) -> int:
    """The smallest power of two from ``MIN_WIDTH`` that holds ``needed`` positions, at most ``capacity``."""
    width = MIN_WIDTH
    while width < needed:
        width *= 2
    return min(width, capacity)


class KVCache:
    def __init__(self, layers: int, kv_heads: int, head_dim: int, streams: int, capacity: int) -> None:
        self.capacity = capacity
        self.streams = streams
        self.staging = streams  # the extra slot's index
        self._slots, self._heads, self._dim = streams + 1, kv_heads, head_dim
        size = self._slots * kv_heads * head_dim * capacity
        # Written through now (np.full, not the lazily mapped np.zeros): a page first touched while
        # serving cost a stall in the middle of a stream (below)
        self._keys = [np.full(size, 0.0, np.float32) for _ in range(layers)]
        self._values = [np.full(size, 0.0, np.float32) for _ in range(layers)]
        self.width = width_for(1, capacity)
        self._views = self._shaped(self.width)

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in self._keys) + sum(a.nbytes for a in self._values)

    def _shaped(self, width: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
        s, h, d = self._slots, self._heads, self._dim
        used = s * h * d * width
        keys = [k[:used].reshape(s, h, d, width) for k in self._keys]
        values = [v[:used].reshape(s, h, width, d) for v in self._values]
        return keys, values

    def view(self, first: int, count: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Slots ``[first, first + count)`` of every layer at the current width: contiguous views, no copy."""
        keys, values = self._views
        end = first + count
        return [k[first:end] for k in keys], [v[first:end] for v in values]

    def fit(self, needed: int, in_use: Sequence[int]) -> None:
        """Make the width hold ``needed`` positions (the most any slot holds or is about to), keeping
        the filled positions of the slots ``in_use``; shrink it once it is four times what is needed."""
        width = width_for(needed, self.capacity)
        if width <= self.width < 4 * width:
            return
        kept = min(width, self.width)
        slots = np.asarray(in_use, np.intp)
        (old_keys, old_values), (new_keys, new_values) = self._views, self._shaped(width)
        for layer in range(len(old_keys)):  # one layer's filled positions at a time: the copy is small
            key = old_keys[layer][slots, :, :, :kept]  # fancy indexing: a copy, before the memory is laid out anew
            value = old_values[layer][slots, :, :kept, :]
            new_keys[layer][slots, :, :, :kept] = key
            new_values[layer][slots, :, :kept, :] = value
        self.width, self._views = width, (new_keys, new_values)

    def append(self, count: int, lengths: np.ndarray, new_keys: list[np.ndarray], new_values: list[np.ndarray]) -> None:
        """A decode step's one new position for slots ``[:count]``, written at each sequence's length.

        ``new_keys[i]`` is ``[count, KV, D, 1]``, ``new_values[i]`` ``[count, KV, 1, D]``.
        """
        rows = np.arange(count)
        keys, values = self._views
        for cache, new in zip(keys, new_keys, strict=True):
            cache[rows, :, :, lengths] = new[:, :, :, 0]
        for cache, new in zip(values, new_values, strict=True):
            cache[rows, :, lengths, :] = new[:, :, 0, :]

    def write(
        self, slot: int, start: int, row: int, length: int, new_keys: list[np.ndarray], new_values: list[np.ndarray]
    ) -> None:
        """Row ``row`` of a prefill's output, its first ``length`` positions, into ``slot`` from ``start``."""
        end = start + length
        keys, values = self._views
        for cache, new in zip(keys, new_keys, strict=True):
            cache[slot, :, :, start:end] = new[row, :, :, :length]
        for cache, new in zip(values, new_values, strict=True):
            cache[slot, :, start:end, :] = new[row, :, :length, :]

    def move(self, source: int, target: int, length: int) -> None:
        """Copy a sequence's first ``length`` positions to another slot (what lies beyond is masked)."""
        keys, values = self._views
        for cache in keys:
            cache[target, :, :, :length] = cache[source, :, :, :length]
        for cache in values:
            cache[target, :, :length, :] = cache[source, :, :length, :]


__all__ = ["KVCache", "MIN_WIDTH", "width_for"]
