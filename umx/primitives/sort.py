"""Sorting and searching primitives."""

from __future__ import annotations

from .base import Primitive


class Sort(Primitive):
    """Values sorted along ``axis`` (ascending, NaNs last)."""

    __slots__ = ("axis",)
    capture = True

    def __init__(self, axis: int):
        self.axis = axis


class ArgSort(Primitive):
    """The (stable) indices that sort along ``axis``, as uint32."""

    __slots__ = ("axis",)
    capture = True

    def __init__(self, axis: int):
        self.axis = axis


class Partition(Primitive):
    """Values along ``axis`` rearranged so that position ``kth`` holds the value a sort would put there,
    smaller values before it and larger after."""

    __slots__ = ("kth", "axis")
    capture = True

    def __init__(self, kth: int, axis: int):
        self.kth = kth
        self.axis = axis


class ArgPartition(Primitive):
    """The indices that partition along ``axis`` around ``kth``, as uint32."""

    __slots__ = ("kth", "axis")
    capture = True

    def __init__(self, kth: int, axis: int):
        self.kth = kth
        self.axis = axis


class SearchSorted(Primitive):
    """Insertion points of the values (second input) into the sorted 1-d first input, as uint32."""

    __slots__ = ("side",)
    capture = False  # not tried under capture yet

    def __init__(self, side: str):
        self.side = side


class Unique(Primitive):
    """The ``size`` smallest unique values of the flat input, padded with the fill value (second input);
    outputs: values, first indices, inverse indices and counts."""

    __slots__ = ("size",)
    n_outputs = 4
    capture = False  # its number of values comes from the data: CuPy synchronizes
    no_grad = "not written yet: its outputs are a selection that depends on the data"
    no_vmap = "not written yet: each slice has its own set of values"

    def __init__(self, size: int):
        self.size = size
