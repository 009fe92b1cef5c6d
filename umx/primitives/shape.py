"""Primitives that move or view data without arithmetic: casts, reshapes, transposes, joins and splits."""

from __future__ import annotations

from .base import Primitive


class AsType(Primitive):
    """Convert to ``dtype`` (a umx Dtype)."""

    __slots__ = ("dtype",)
    capture = True

    def __init__(self, dtype):
        self.dtype = dtype


class Copy(Primitive):
    """A fresh copy of the input (what ``mx.contiguous`` and identity ops lower to)."""

    __slots__ = ()
    capture = True
    moves_bits = True


COPY = Copy()


class Reshape(Primitive):
    """Reshape to ``shape`` (fully known, no -1). ``infer``: the axis the caller gave as -1 (None if none), which
    a shapeless ``compile`` infers again for inputs of other shapes."""

    __slots__ = ("shape", "infer")
    capture = True
    moves_bits = True

    def __init__(self, shape: tuple, infer: int | None = None):
        self.shape = shape
        self.infer = infer


class Transpose(Primitive):
    """Permute axes by ``axes``."""

    __slots__ = ("axes",)
    capture = True
    moves_bits = True

    def __init__(self, axes: tuple):
        self.axes = axes

    def swaps_last_two(self) -> bool:
        """Whether it exchanges the last two axes and keeps the others in place (``w.T`` of a matrix or a stack)."""
        axes = self.axes
        n = len(axes)
        return n >= 2 and axes[-1] == n - 2 and axes[-2] == n - 1 and all(axes[i] == i for i in range(n - 2))


class BroadcastTo(Primitive):
    """Broadcast to ``shape`` (NumPy's rules)."""

    __slots__ = ("shape",)
    capture = True
    moves_bits = True

    def __init__(self, shape: tuple):
        self.shape = shape


class Concatenate(Primitive):
    """Join the inputs along ``axis``."""

    __slots__ = ("axis",)
    capture = True
    moves_bits = True

    def __init__(self, axis: int):
        self.axis = axis


class Split(Primitive):
    """Split along ``axis`` at ``indices``; one output per piece."""

    __slots__ = ("indices", "axis")
    n_outputs = 0
    capture = False  # several outputs (sibling nodes are never captured)
    moves_bits = True

    def __init__(self, indices: tuple, axis: int):
        self.indices = indices
        self.axis = axis


class View(Primitive):
    """The same bytes read as ``dtype`` (the last axis scales by the itemsize ratio)."""

    __slots__ = ("dtype",)
    capture = True
    moves_bits = True  # bfloat16 bits are taken as they are, NaN payloads included
    no_grad = "reinterprets bits: no derivative"

    def __init__(self, dtype):
        self.dtype = dtype
