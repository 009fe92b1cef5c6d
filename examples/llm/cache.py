"""Key-value caches for autoregressive decoding.

``KVCache`` is mlx-lm's: per layer, keys and values of shape ``[B, kv_heads, steps, head_dim]`` in a buffer that
grows in blocks of 256 positions; ``offset`` (a Python int) counts the positions filled. Each step's shapes differ,
so it suits eager decoding.

``StaticKVCache`` is allocated once at its full length and written with ``mx.slice_update`` at a position held in
an array; attention reads the whole buffer under a mask of the filled positions. Every decode step then has the
same shapes and the same graph, so the step compiles once (``mx.compile``) and is replayed for every token.
"""

from __future__ import annotations

import umx as mx

__all__ = ["KVCache", "StaticKVCache", "make_cache", "attention_mask"]


class KVCache:
    """A cache that grows in blocks of ``step`` positions (mlx-lm's ``KVCache``).

    Attributes:
        keys, values (array | None): the buffers, ``[B, kv_heads, capacity, head_dim]``.
        offset (int): how many positions hold data.
    """

    step = 256

    def __init__(self):
        self.keys = None
        self.values = None
        self.offset = 0

    def update_and_fetch(self, keys: mx.array, values: mx.array) -> tuple[mx.array, mx.array]:
        """Append ``keys`` and ``values`` (``[B, kv_heads, L, head_dim]``) and return every cached position.

        Args:
            keys (array): the new keys.
            values (array): the new values.

        Returns:
            tuple[array, array]: keys and values of positions ``0 .. offset`` (after the update).
        """
        prev = self.offset
        n = keys.shape[2]
        if self.keys is None and n % self.step == 0:
            # A prompt of whole blocks is the buffer itself: no zeros to fill, no copy into them (the next
            # position grows it as any full buffer grows)
            self.keys, self.values, self.offset = keys, values, n
            return keys, values
        if self.keys is None or prev + n > self.keys.shape[2]:
            grow = (n + self.step - 1) // self.step * self.step
            new_k = mx.zeros((*keys.shape[:2], grow, keys.shape[3]), keys.dtype)
            new_v = mx.zeros((*values.shape[:2], grow, values.shape[3]), values.dtype)
            if self.keys is None:
                self.keys, self.values = new_k, new_v
            else:
                # the buffer may be longer than offset after trimming: keep only the filled part
                self.keys = mx.concatenate([self.keys[..., :prev, :], new_k], axis=2)
                self.values = mx.concatenate([self.values[..., :prev, :], new_v], axis=2)
        self.offset += n
        # functional updates: `self.keys[..., prev:offset, :] = keys` would rebind an array that the previous
        # step's graph (still in flight under async_eval) reads, and umx then searches the heap for its readers
        # (a Python int start: no start array to copy to the GPU at every token)
        self.keys = mx.slice_update(self.keys, keys, prev, axes=(2,))
        self.values = mx.slice_update(self.values, values, prev, axes=(2,))
        if self.offset == self.keys.shape[2]:
            return self.keys, self.values
        return self.keys[..., :self.offset, :], self.values[..., :self.offset, :]

    @property
    def state(self) -> tuple:
        """The filled part of the buffers, ``(keys, values)`` (empty tuple before the first update)."""
        if self.keys is None:
            return ()
        if self.offset == self.keys.shape[2]:
            return self.keys, self.values
        return self.keys[..., :self.offset, :], self.values[..., :self.offset, :]

    @state.setter
    def state(self, v) -> None:
        self.keys, self.values = v
        self.offset = self.keys.shape[2]

    def is_trimmable(self) -> bool:
        """Whether :meth:`trim` can drop positions (always)."""
        return True

    def trim(self, n: int) -> int:
        """Forget the last ``n`` positions (at most ``offset``); returns how many were dropped."""
        n = min(self.offset, n)
        self.offset -= n
        return n

    def make_mask(self, n: int, window_size: int | None = None):
        """The attention mask of ``n`` new positions: None for one, ``"causal"`` or an array for more."""
        if n == 1 and (window_size is None or self.offset < window_size):
            return None
        if window_size is None:
            return "causal"
        return attention_mask(n, self.offset, self.offset + n, window_size)


class StaticKVCache:
    """A cache of fixed length ``max_size``, written at the position ``offset`` (an int32 array).

    ``update_and_fetch`` returns the whole buffers; the model masks the positions past ``offset`` (see
    :func:`attention_mask`), so every step's graph is the same and a compiled step is replayed for every token.
    The first write (a prompt, at position 0) returns the prompt's own keys and values, which it attends to
    causally, as without a cache.

    Args:
        max_size (int): the positions the cache holds (prompt plus generated tokens).

    Attributes:
        keys, values (array | None): ``[B, kv_heads, max_size, head_dim]``.
        offset (array): int32 scalar, the first free position.
    """

    def __init__(self, max_size: int):
        self.max_size = max_size
        self.keys = None
        self.values = None
        self.offset = mx.array(0, mx.int32)

    def update_and_fetch(self, keys: mx.array, values: mx.array) -> tuple[mx.array, mx.array]:
        """Write ``keys`` and ``values`` (``[B, kv_heads, L, head_dim]``) at ``offset`` and return the whole buffers
        (``offset`` is advanced by the caller: see :meth:`advance`)."""
        first = self.keys is None
        if first:
            b, h, _, d = keys.shape
            self.keys = mx.zeros((b, h, self.max_size, d), keys.dtype)
            self.values = mx.zeros((b, h, self.max_size, values.shape[3]), values.dtype)
        self.keys = mx.slice_update(self.keys, keys, self.offset, axes=(2,))
        self.values = mx.slice_update(self.values, values, self.offset, axes=(2,))
        if first:  # a prompt into the empty cache attends to itself alone (see Model._mask), not the whole buffer
            return keys, values
        return self.keys, self.values

    def advance(self, n: int) -> None:
        """Move ``offset`` past ``n`` written positions."""
        self.offset = self.offset + n

    @property
    def state(self) -> tuple:
        """``(keys, values, offset)``: the arrays a compiled step reads and returns."""
        return self.keys, self.values, self.offset

    @state.setter
    def state(self, v) -> None:
        self.keys, self.values, self.offset = v


def make_cache(n_layers: int, max_size: int | None = None) -> list:
    """One cache per layer: ``KVCache`` that grows, or ``StaticKVCache`` of ``max_size`` positions."""
    if max_size is None:
        return [KVCache() for _ in range(n_layers)]
    return [StaticKVCache(max_size) for _ in range(n_layers)]


def attention_mask(n: int, offset, n_keys: int, window_size: int | None = None) -> mx.array:
    """The boolean mask ``[n, n_keys]`` of which keys each of ``n`` new queries (positions ``offset ..
    offset + n - 1``) attends to: earlier or equal positions, within ``window_size`` of the query if given.

    Args:
        n (int): the new queries.
        offset (int | array): the first new query's position (an int32 scalar array in compiled steps).
        n_keys (int): the key positions (the cache's length).
        window_size (int, optional): a sliding window's length.

    Returns:
        array: bool, ``[n, n_keys]``.
    """
    queries = (mx.arange(n, dtype=mx.int32) + offset)[:, None]
    keys = mx.arange(n_keys, dtype=mx.int32)[None]
    mask = keys <= queries
    if window_size is not None:
        mask = mask & (keys > queries - window_size)
    return mask
