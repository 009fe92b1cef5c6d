"""The array's operators and method forms of ops, attached to ``umx.array`` once the ops exist.

Binary operators are twins of the public ops (one call to the same fast path) whose slow path checks the other
operand as MLX's operators do: a list, tuple or string is refused with ValueError (``==`` and ``!=`` answer False and
True instead). In-place operators (``a += b``) compute ``a + b`` and rebind the object ``a`` to it, as ``a[i] = v``
does: nodes that already read ``a`` keep its old value. Methods forward to the public op of the same name, so each
has one definition and one docstring.
"""

from __future__ import annotations

import numpy as np

from .. import dtypes as dt
from ..array import _created, array
from ..runtime.node import rebind
from . import elementwise as ew
from . import indexing, layout, matmul, reduction, scan, shape

_REFUSED = (list, tuple, str)  # operands MLX's operators refuse (the ops themselves take lists and tuples)
_PLAIN = frozenset({array, int, float, bool, complex})  # operands that need no such check

# operator -> (public op, MLX's word for it in errors)
_BINARY = {
    "add": ("add", "addition"), "sub": ("subtract", "subtraction"), "mul": ("multiply", "multiplication"),
    "truediv": ("divide", "division"), "floordiv": ("floor_divide", "floor division"), "mod": ("remainder", "modulus"),
    "pow": ("power", "power"), "and": ("bitwise_and", "bitwise and"), "or": ("bitwise_or", "bitwise or"),
    "xor": ("bitwise_xor", "bitwise xor"), "lshift": ("left_shift", "left shift"),
    "rshift": ("right_shift", "right shift"),
}
_COMPARISONS = {
    "lt": ("less", "less than"), "le": ("less_equal", "less than or equal"), "gt": ("greater", "greater than"),
    "ge": ("greater_equal", "greater than or equal"),
}
_EQUALITY = {"eq": "equal", "ne": "not_equal"}


def _operator(public: str, word: str):
    """The twin of op ``public`` used as an operator."""

    def slow(prim, name, a, b, stream):
        if a.__class__ not in _PLAIN or b.__class__ not in _PLAIN:
            for x in (a, b):
                if isinstance(x, _REFUSED):
                    raise ValueError(f"Cannot perform {word} on an array and {type(x).__name__}")
        if prim.kind == "int":  # MLX's bitwise operators refuse floats with ValueError
            for x in (a, b):
                d = x._dtype if type(x) is array else (dt.float32 if type(x) is float else None)
                if d is not None and d.kind in "fc":
                    raise ValueError(f"Cannot perform {word} on floating point arrays, got {d.name}")
        return ew._binary(prim, name, a, b, stream)

    return ew._make_binary(ew._BINARY_NAMES[public], public, public, slow)


def _equality(public: str):
    """The twin of ``equal`` or ``not_equal`` used as ``==`` or ``!=``: operands that are not array-like (a list, a
    tuple, a string, None, any object) give NotImplemented, so Python compares identities (``a == [1]`` is False)."""

    def slow(prim, name, a, b, stream):
        if isinstance(a, _REFUSED) or isinstance(b, _REFUSED):
            return NotImplemented
        try:
            return ew._binary(prim, name, a, b, stream)
        except TypeError:
            return NotImplemented

    return ew._make_binary(ew._BINARY_NAMES[public], public, public, slow)


def _reflected(op):
    def rev(self, other):
        return op(other, self)

    return rev


# References to `a` that the interpreter and umx's frames hold while `a += b` runs with one variable holding `a`:
# measured once by _calibrate (see array.rebind).
_inplace_refs = [1 << 30]
_last_refs = [0]


def _inplace(op, word: str):
    """``a <op>= b``: ``a`` becomes ``a <op> b`` (the object keeps its identity; its dtype and shape may change)."""

    def iop(self, other):
        mark = next(_created)
        _last_refs[0] = rebind(self, op(self, other), mark, _inplace_refs[0])
        return self

    if word == "division":
        def idiv(self, other):
            if self._dtype.kind not in "fc":
                raise ValueError(f"In place division cannot cast to non-floating point type {self._dtype.name}")
            mark = next(_created)
            _last_refs[0] = rebind(self, op(self, other), mark, _inplace_refs[0])
            return self

        return idiv
    return iop


def _calibrate() -> None:
    probe = array(np.zeros(1, np.int8))
    probe += 0
    _inplace_refs[0] = _last_refs[0]
    indexing.calibrate()  # setitem's, through the operator installed


def astype(self, dtype, stream=None) -> array:
    """The array cast to ``dtype``.

    Args:
        dtype (Dtype): the type to cast to.
        stream (Stream | Device, optional): where the cast runs.

    Returns:
        array: the array as ``dtype``.
    """
    return shape.astype(self, dtype, stream=stream)


def _bytes(self) -> bytes:
    """The elements' bytes in row-major order (bfloat16 as its 16 bits), evaluating the array."""
    a = shape.view(self, dt.uint16) if self._dtype is dt.bfloat16 else self
    return np.ascontiguousarray(np.asarray(a)).tobytes()


def _install() -> None:
    for dunder, (public, word) in _BINARY.items():
        op = _operator(public, word)
        setattr(array, f"__{dunder}__", op)
        setattr(array, f"__r{dunder}__", _reflected(op))
        setattr(array, f"__i{dunder}__", _inplace(op, word))
    for dunder, (public, word) in _COMPARISONS.items():
        setattr(array, f"__{dunder}__", _operator(public, word))
    for dunder, public in _EQUALITY.items():
        setattr(array, f"__{dunder}__", _equality(public))
    array.__hash__ = lambda self: id(self)
    array.__neg__ = ew.negative  # the op itself: its fast path, one call
    array.__pos__ = lambda self: self
    array.__abs__ = lambda self: ew.abs(self)
    array.__invert__ = lambda self: ew.logical_not(self) if self.dtype.kind == "b" else ew.bitwise_invert(self)
    array.__matmul__ = lambda self, other: matmul.matmul(self, other)
    array.__rmatmul__ = lambda self, other: matmul.matmul(other, self)
    array.__imatmul__ = _inplace(array.__matmul__, "matrix multiplication")
    array.__getitem__ = indexing.getitem
    array.__setitem__ = indexing.setitem
    array.__divmod__ = lambda self, other: (ew.floor_divide(self, other), ew.remainder(self, other))
    array.at = property(lambda self: indexing.ArrayAt(self), doc="Functional updates: ``a.at[idx].add(v)``.")
    array.T = property(lambda self: shape.transpose(self), doc="The array with its axes reversed.")
    array.mT = property(lambda self: shape.matrix_transpose(self), doc="The array with its last two axes swapped.")
    array.__bytes__ = _bytes
    array.__div__, array.__rdiv__ = array.__truediv__, array.__rtruediv__  # (MLX keeps Python 2's names)
    array.real = property(lambda self: ew.real(self), doc="The real part.")
    array.imag = property(lambda self: ew.imag(self), doc="The imaginary part.")
    array.astype = astype

    def reshape(self, *shape_, stream=None):
        """``reshape(self, shape)``; the shape may also be given as separate ints."""
        s = shape_[0] if len(shape_) == 1 and not isinstance(shape_[0], int) else shape_
        return shape.reshape(self, s, stream=stream)

    def transpose(self, *axes, stream=None):
        """``transpose(self, axes)``; the axes may also be given as separate ints."""
        a = None if not axes else (axes[0] if len(axes) == 1 and not isinstance(axes[0], int) else axes)
        return shape.transpose(self, a, stream=stream)

    array.reshape = reshape
    array.transpose = transpose
    for name in ("abs", "exp", "log", "log1p", "log2", "log10", "sin", "cos", "sqrt", "rsqrt", "square",
                 "reciprocal", "round", "conj", "sigmoid", "isnan", "isinf", "floor", "ceil"):
        _forward(ew, name)
    for name in ("sum", "prod", "max", "min", "all", "any", "mean", "var", "std", "logsumexp", "argmax",
                 "argmin", "softmax"):
        _forward(reduction, name)
    for name in ("flatten", "squeeze", "swapaxes", "moveaxis", "split", "view", "unflatten"):
        _forward(shape, name)
    for name in ("cumsum", "cumprod", "cummax", "cummin", "logcumsumexp"):
        _forward(scan, name)
    for name in ("diag", "diagonal"):
        _forward(layout, name)
    array.conjugate = array.conj
    _calibrate()


def _forward(module, name: str) -> None:
    fn = getattr(module, name)

    def method(self, *args, **kwargs):
        return fn(self, *args, **kwargs)

    method.__name__ = name
    method.__doc__ = fn.__doc__
    setattr(array, name, method)


_install()
