"""What every public op shares: argument conversion, scalars, broadcasting, axes, and node building.

Public ops check their arguments here, at the call, so that bad input raises where the user called the op, with
the op's name, the shapes and the dtypes in the message.
"""

from __future__ import annotations

import math
import operator

import numpy as np

from .. import dtypes as dt
from ..array import DIM_MAX, DIM_MIN, alias, array, dim_outside, from_data, node  # noqa: F401 (alias: for the op families)
from ..devices import resolve_stream
from ..primitives import AsType, BroadcastTo, Reshape

__all__ = ["array", "node", "resolve_stream", "as_array", "scalar", "broadcast_shapes", "axes_of", "axis_of",
           "cast", "reshape_node", "broadcast_node", "shape_of", "check_dims", "int_of", "describe"]

_SCALARS = (bool, int, float, complex)
_const_cache: dict = {}


def sibling_nodes(prim, inputs: tuple, specs: list, stream) -> list:
    """One node per ``(shape, dtype)`` in ``specs``, siblings that ``prim`` computes together."""
    outs = [node(None, inputs, shape, d, stream) for shape, d in specs]
    sibs = tuple(outs)
    for o in outs:
        o._prim = prim
        o._siblings = sibs
    return outs


def scalar(value, dtype: dt.Dtype) -> array:
    """An evaluated 0-d constant (cached: Python scalars in expressions cost no allocation after the first).

    The cache key is (value, dtype): values equal as Python numbers (1, 1.0, True) give the same constant once
    cast to one dtype. Zero is the exception (0 == 0.0 == -0.0): zeros are keyed by their repr, so that no numeric
    key ever matches a signed zero.
    """
    key = (value, dtype) if value != 0 else (repr(value), dtype)
    c = _const_cache.get(key)
    if c is None:
        if len(_const_cache) > 4096:
            _const_cache.clear()
        try:
            with np.errstate(all="ignore"):
                data = np.array(value).astype(dtype.compute)[()]  # a NumPy scalar: kernels on any device take it
            if dtype is dt.bfloat16:  # (its storage: rounded, as MLX makes the scalar a bfloat16 first)
                data = dt.narrow_bf16(np, data)[()]
        except OverflowError:
            raise ValueError(f"the Python int {value} is out of range for {dtype.name}") from None
        c = _const_cache[key] = from_data(data, dtype)
    return c


def as_array(x, op: str, dtype: dt.Dtype | None = None) -> array:
    """``x`` as a umx array: arrays pass through; scalars, lists and NumPy/CuPy arrays are converted."""
    if type(x) is array:
        return x
    if isinstance(x, _SCALARS) or isinstance(x, np.generic):
        if isinstance(x, np.generic):
            return array(x)
        d = dtype if dtype is not None else dt.result_type(x)
        return scalar(x, d)
    if isinstance(x, (list, tuple, np.ndarray)) or hasattr(x, "__array__") or hasattr(x, "__dlpack__"):
        try:
            return array(x)
        except (ValueError, TypeError) as e:
            raise type(e)(f"{op}: {e}") from None
    raise TypeError(f"{op}: expected an array or a scalar, got {type(x).__name__}")


def describe(*arrays) -> str:
    """'(2, 3) float32 and (4,) int32': the shapes and dtypes of ``arrays``, for error messages."""
    return " and ".join(f"{a.shape} {a.dtype.name}" for a in arrays)


def broadcast_shapes(*shapes: tuple, op: str = "broadcast_shapes") -> tuple:
    """The shape that NumPy's broadcasting gives ``shapes``; ValueError naming ``op`` if there is none."""
    nd = max(len(s) for s in shapes)
    out = []
    for i in range(-nd, 0):
        size = 1
        for s in shapes:
            if -i <= len(s):
                d = s[i]
                if d != 1:
                    if size != 1 and size != d:
                        raise ValueError(f"{op}: shapes {' and '.join(map(str, shapes))} cannot be broadcast together")
                    size = d
        out.append(size)
    return tuple(out)


def axes_of(axis, ndim: int, op: str) -> tuple:
    """``axis`` (None, an int or a sequence) as a sorted tuple of non-negative axes, checked against ``ndim``."""
    if axis is None:
        return tuple(range(ndim))
    if isinstance(axis, (int, np.integer)):
        axis = (int(axis),)
    elif not isinstance(axis, (tuple, list)):
        axis = (_index(axis, op, "axis must be an int, a sequence of ints or None"),)
    out = []
    for a in axis:
        a = _index(a, op, "axes must be integers")
        if not -ndim <= a < ndim:
            raise ValueError(f"{op}: axis {a} is out of range for an array of {ndim} dimensions")
        out.append(int(a) % ndim if ndim else 0)
    if len(set(out)) != len(out):
        raise ValueError(f"{op}: repeated axis in {tuple(axis)}")
    return tuple(sorted(out))


def _index(value, op: str, what: str) -> int:
    """``value`` as an int (anything with ``__index__``: ints, bools, NumPy and 0-d integer arrays), else a
    TypeError naming ``op``."""
    try:
        return operator.index(value)
    except TypeError:
        raise TypeError(f"{op}: {what}, got {value!r}") from None


def axis_of(axis: int, ndim: int, op: str) -> int:
    """One axis, made non-negative and checked."""
    axis = _index(axis, op, "axis must be an integer")
    if not -ndim <= axis < ndim:
        raise ValueError(f"{op}: axis {axis} is out of range for an array of {ndim} dimensions")
    return int(axis) % ndim


def dims_of(shape, op: str) -> tuple:
    """A shape argument (an int or a sequence of ints, -1 included) as a tuple: sizes that are not integers (2.5,
    "2") raise TypeError, ones past MLX's 32-bit dimensions OverflowError."""
    if isinstance(shape, (int, np.integer)):
        return check_dims((int(shape),), op)
    if isinstance(shape, str):
        raise TypeError(f"{op}: shape must be an int or a sequence of ints, got {shape!r}")
    try:
        dims = tuple([operator.index(s) for s in shape])
    except TypeError:
        raise TypeError(f"{op}: shape must be an int or a sequence of ints, got {shape!r}") from None
    return check_dims(dims, op)


def shape_of(shape, op: str) -> tuple:
    """A shape argument (an int or a sequence of ints) as a tuple: sizes that are not integers (2.5) raise
    TypeError, negative ones ValueError, ones past MLX's 32-bit dimensions OverflowError."""
    shape = dims_of(shape, op)
    for s in shape:
        if s < 0:
            raise ValueError(f"{op}: negative dimensions are not allowed, got shape {shape}")
    if math.prod(shape) > _MAX_DIM:
        raise ValueError(f"{op}: shape {shape} has more elements than a 64-bit size holds")
    return shape


_MAX_DIM = 2**63 - 1


def check_dims(shape: tuple, op: str) -> tuple:
    """``shape``, given or computed (a concatenation's, a repeat's), whose dimensions must fit in 32 bits, as in
    MLX; else an OverflowError naming ``op`` and the dimension."""
    s = dim_outside(shape)
    if s is not None:
        raise OverflowError(f"{op}: integer value {s} is outside the supported range [{DIM_MIN}, "
                            f"{DIM_MAX}] (shape dimensions are 32-bit integers, as in MLX)")
    return shape


def int_of(value, op: str, name: str) -> int:
    """An integer argument (a Python or NumPy int) that fits in 64 bits; TypeError or ValueError naming ``op``."""
    try:
        v = operator.index(value)
    except TypeError:
        raise TypeError(f"{op}: {name} must be an integer, got {value!r}") from None
    if not -_MAX_DIM - 1 <= v <= _MAX_DIM:
        raise ValueError(f"{op}: {name} {v} does not fit in 64 bits")
    return v


def cast(x: array, dtype: dt.Dtype, stream=None) -> array:
    """``x`` as ``dtype``: itself if it already is (where ``astype`` would make an alias node), on ``stream``
    (default: the default stream)."""
    if x._dtype is dtype:
        return x
    if x._data is not None and x._prim is None and not x._shape and isinstance(x._data, np.generic):
        v = x._data if x._dtype is not dt.bfloat16 else dt.widen_bf16(np, x._data)
        return scalar(v.item(), dtype)  # constants convert at once
    return node(AsType(dtype), (x,), x._shape, dtype, resolve_stream(None) if stream is None else stream)


def new_object(out: array, a: array) -> array:
    """``out``, or a new object with its value if it is the input ``a`` itself: a public op never returns its
    input, so that ``b[0] = 1`` or ``b += 1`` on its result leaves ``a`` alone (as in MLX)."""
    return alias(a) if out is a else out


def reshape_node(x: array, shape: tuple, stream) -> array:
    if x._shape == shape:
        return x
    return node(Reshape(shape), (x,), shape, x._dtype, stream)


def broadcast_node(x: array, shape: tuple, stream) -> array:
    if x._shape == shape:
        return x
    return node(BroadcastTo(shape), (x,), shape, x._dtype, stream)
