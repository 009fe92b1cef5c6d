"""Indexing primitives: NumPy-style gathers, and their functional updates.

An index key is stored as a template: a tuple of ints, slices, None and Ellipsis, where the integer-array
positions hold ``ARRAY``; the index arrays themselves are the node's inputs after the indexed array (and after the
update values, for updates).
"""

from __future__ import annotations

from .base import Primitive

#: placeholder in a key template for an integer-array index taken from the node's inputs
ARRAY = "array"


def hashable_key(key: tuple) -> tuple:
    """An index key with its slices as tuples (slices hash only from Python 3.12), for structural keys."""
    return tuple([(slice, k.start, k.stop, k.step) if k.__class__ is slice else k for k in key])


def fill_key(template: tuple, arrays) -> tuple:
    """The concrete key: the template with each ARRAY replaced by the next of ``arrays``."""
    it = iter(arrays)
    return tuple(next(it) if k is ARRAY else k for k in template)


class Gather(Primitive):
    """``x[key]``; inputs: x, then the index arrays."""

    __slots__ = ("key",)
    capture = True
    moves_bits = True

    @staticmethod
    def key_params(p) -> tuple:
        return hashable_key(p.key)

    def __init__(self, key: tuple):
        self.key = key


class Scatter(Primitive):
    """A copy of x with ``x[key] <op>= values``; inputs: x, values, then the index arrays.

    ``op`` is None for assignment, else the name of a NumPy ufunc ('add', 'multiply', 'maximum', ...); with an op,
    repeated indices accumulate.
    """

    __slots__ = ("key", "op")
    capture = True

    @staticmethod
    def key_params(p) -> tuple:
        return hashable_key(p.key), p.op

    def __init__(self, key: tuple, op: str | None):
        self.key = key
        self.op = op

    @property
    def moves_bits(self) -> bool:
        """An assignment only moves elements (a bfloat16 array is written as its storage); an op computes."""
        return self.op is None
