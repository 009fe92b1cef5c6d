"""Primitives that rearrange, repeat or select elements: padding, tiling, rolls, diagonals, triangles, strided
views, gathers and scatters along an axis, and slices at positions held in arrays."""

from __future__ import annotations

from .base import NO_INPUTS, Primitive


class Pad(Primitive):
    """Pad with ``pad_width`` (one ``(before, after)`` pair per axis) in ``mode`` ('constant', 'edge', 'reflect'
    or 'symmetric', as ``numpy.pad``); inputs: x, then the 0-d fill value."""

    __slots__ = ("pad_width", "mode")
    capture = True

    def __init__(self, pad_width: tuple, mode: str):
        self.pad_width = pad_width
        self.mode = mode


class Tile(Primitive):
    """``x`` repeated ``reps`` times along each axis (``numpy.tile``)."""

    __slots__ = ("reps",)
    capture = True
    moves_bits = True

    def __init__(self, reps: tuple):
        self.reps = reps


class Repeat(Primitive):
    """Each element repeated ``repeats`` times along ``axis`` (``numpy.repeat``)."""

    __slots__ = ("repeats", "axis")
    capture = True
    moves_bits = True

    def __init__(self, repeats: int, axis: int):
        self.repeats = repeats
        self.axis = axis


class Roll(Primitive):
    """Elements shifted by ``shift`` along ``axis`` with wrap-around; ``axis`` None rolls the flat array."""

    __slots__ = ("shift", "axis")
    capture = True
    moves_bits = True

    def __init__(self, shift, axis):
        self.shift = shift
        self.axis = axis


class Diagonal(Primitive):
    """The ``offset`` diagonal of the planes spanned by ``axis1`` and ``axis2``, as the last axis."""

    __slots__ = ("offset", "axis1", "axis2")
    capture = True
    moves_bits = True

    def __init__(self, offset: int, axis1: int, axis2: int):
        self.offset = offset
        self.axis1 = axis1
        self.axis2 = axis2


class Diag(Primitive):
    """A square matrix with the 1-d input on diagonal ``k``."""

    __slots__ = ("k",)
    capture = True
    moves_bits = True

    def __init__(self, k: int):
        self.k = k


class Tri(Primitive):
    """An ``n`` by ``m`` matrix of ones on and below diagonal ``k``, zeros above."""

    __slots__ = ("n", "m", "k", "dtype")
    capture = True
    no_grad = no_vmap = NO_INPUTS

    def __init__(self, n: int, m: int, k: int, dtype):
        self.n = n
        self.m = m
        self.k = k
        self.dtype = dtype


class Tril(Primitive):
    """Zero the elements above diagonal ``k`` of the last two axes."""

    __slots__ = ("k",)
    capture = True
    moves_bits = True

    def __init__(self, k: int):
        self.k = k


class Triu(Primitive):
    """Zero the elements below diagonal ``k`` of the last two axes."""

    __slots__ = ("k",)
    capture = True
    moves_bits = True

    def __init__(self, k: int):
        self.k = k


class AsStrided(Primitive):
    """A view of the flat, row-major input with ``shape``, ``strides`` (in elements) and ``offset``."""

    __slots__ = ("shape", "strides", "offset")
    capture = True
    moves_bits = True

    def __init__(self, shape: tuple, strides: tuple, offset: int):
        self.shape = shape
        self.strides = strides
        self.offset = offset


class TakeAlongAxis(Primitive):
    """``x`` gathered at ``indices`` along ``axis`` (other axes broadcast); inputs: x, indices."""

    __slots__ = ("axis",)
    capture = True
    moves_bits = True

    def __init__(self, axis: int):
        self.axis = axis


class PutAlongAxis(Primitive):
    """A copy of ``x`` with ``values`` written at ``indices`` along ``axis``; inputs: x, indices, values."""

    __slots__ = ("axis",)
    capture = True

    def __init__(self, axis: int):
        self.axis = axis


class DynamicSlice(Primitive):
    """A block of ``shape`` whose start along ``axes`` is read from the start array; inputs: x, start."""

    __slots__ = ("axes", "shape")
    capture = True
    moves_bits = True

    def __init__(self, axes: tuple, shape: tuple):
        self.axes = axes
        self.shape = shape


class DynamicSliceUpdate(Primitive):
    """A copy of ``x`` with the update written at the start (along ``axes``) read from the start array;
    inputs: x, update, start."""

    __slots__ = ("axes",)
    capture = True
    moves_bits = True

    def __init__(self, axes: tuple):
        self.axes = axes
