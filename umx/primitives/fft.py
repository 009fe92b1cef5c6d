"""Fourier transform primitives."""

from __future__ import annotations

from .base import Primitive


class FFT(Primitive):
    """The n-dimensional discrete Fourier transform over ``axes``, each padded or cut to ``sizes`` first.

    ``real`` selects the real-input forward transform (``rfftn``, a half spectrum along the last axis) or, with
    ``inverse``, its inverse (``irfftn``, ``sizes`` being those of the real output).
    """

    __slots__ = ("axes", "sizes", "inverse", "real")

    def __init__(self, axes: tuple, sizes: tuple, inverse: bool, real: bool):
        self.axes = axes
        self.sizes = sizes
        self.inverse = inverse
        self.real = real


class FFTShift(Primitive):
    """Roll the zero frequency to the middle of ``axes`` (``inverse``: back to the front)."""

    __slots__ = ("axes", "inverse")

    def __init__(self, axes: tuple, inverse: bool):
        self.axes = axes
        self.inverse = inverse


class FFTFreq(Primitive):
    """The sample frequencies of a length-``n`` transform with sample spacing ``d`` (``real``: ``rfft``'s)."""

    __slots__ = ("n", "d", "real")

    def __init__(self, n: int, d: float, real: bool):
        self.n = n
        self.d = d
        self.real = real
