"""Primitives with no array inputs: filled arrays, ranges and identity matrices."""

from __future__ import annotations

from .base import NO_INPUTS, Primitive


class Full(Primitive):
    """An array of ``shape`` filled with the scalar ``value``, of ``dtype``."""

    __slots__ = ("shape", "value", "dtype")
    capture = True
    no_grad = no_vmap = NO_INPUTS

    @staticmethod
    def key_params(p) -> tuple:  # the value by its bits: 0.0 == -0.0, but they fill differently
        return p.shape, p.dtype, repr(p.value)

    def __init__(self, shape: tuple, value, dtype):
        self.shape = shape
        self.value = value
        self.dtype = dtype


class Arange(Primitive):
    """``start, start + step, ...`` below ``stop``, of ``dtype``."""

    __slots__ = ("start", "stop", "step", "dtype")
    capture = True
    no_grad = no_vmap = NO_INPUTS

    def __init__(self, start, stop, step, dtype):
        self.start = start
        self.stop = stop
        self.step = step
        self.dtype = dtype


class Linspace(Primitive):
    """``num`` evenly spaced values from ``start`` to ``stop``, which is included when ``endpoint``."""

    __slots__ = ("start", "stop", "num", "dtype", "endpoint")
    capture = True
    no_grad = no_vmap = NO_INPUTS

    def __init__(self, start, stop, num, dtype, endpoint=True):
        self.start = start
        self.stop = stop
        self.num = num
        self.dtype = dtype
        self.endpoint = endpoint


class Eye(Primitive):
    """An ``n`` by ``m`` matrix with ones on diagonal ``k``."""

    __slots__ = ("n", "m", "k", "dtype")
    capture = True
    no_grad = no_vmap = NO_INPUTS

    def __init__(self, n, m, k, dtype):
        self.n = n
        self.m = m
        self.k = k
        self.dtype = dtype
