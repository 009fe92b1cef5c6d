"""Array creation: filled arrays, ranges, identity matrices and the ``*_like`` forms."""

from __future__ import annotations

import math

import numpy as np

from .. import dtypes as dt
from ..primitives import Arange, Eye, Full, Linspace
from ._core import array, as_array, cast, node, resolve_stream, shape_of

__all__ = ["zeros", "ones", "full", "zeros_like", "ones_like", "full_like", "empty", "empty_like", "arange",
           "linspace", "eye", "identity", "asarray"]


def full(shape, vals, dtype=None, *, stream=None) -> array:
    """An array of ``shape`` filled with ``vals`` (a scalar, or an array broadcast to ``shape``).

    Args:
        shape (int | Sequence[int]): the shape.
        vals (scalar | array): the fill value.
        dtype (Dtype, optional): the dtype; default: that of ``vals`` (float32 for Python floats).

    Returns:
        array: the filled array.
    """
    shape = shape_of(shape, "full")
    st = resolve_stream(stream)
    d = None if dtype is None else dt.to_dtype(dtype)
    if isinstance(vals, (bool, int, float, complex)) and not isinstance(vals, np.generic):
        d = d or dt.result_type(vals)
        if type(vals) is int and d is dt.bool_:
            vals = bool(vals)
        elif type(vals) is int and d.kind in "iu":
            info = np.iinfo(d.np)
            if not info.min <= vals <= info.max:
                raise ValueError(f"full: the value {vals} does not fit {d.name}")
        return node(Full(shape, vals, d), (), shape, d, st)
    v = as_array(vals, "full")
    if d is not None:
        v = cast(v, d, st)
    from .shape import broadcast_to

    return broadcast_to(v, shape, stream=st)


def zeros(shape, dtype=dt.float32, *, stream=None) -> array:
    """An array of zeros. ``dtype`` defaults to float32."""
    shape = shape_of(shape, "zeros")
    d = dt.to_dtype(dtype)
    return node(Full(shape, 0, d), (), shape, d, resolve_stream(stream))


def ones(shape, dtype=dt.float32, *, stream=None) -> array:
    """An array of ones. ``dtype`` defaults to float32."""
    shape = shape_of(shape, "ones")
    d = dt.to_dtype(dtype)
    return node(Full(shape, 1, d), (), shape, d, resolve_stream(stream))


def empty(shape, dtype=dt.float32, *, stream=None) -> array:
    """An array of the given shape (umx fills it with zeros)."""
    return zeros(shape, dtype, stream=stream)


def zeros_like(a, /, dtype=None, *, stream=None) -> array:
    """Zeros with the shape of ``a`` and its dtype unless ``dtype`` is given."""
    a = as_array(a, "zeros_like")
    return zeros(a.shape, a.dtype if dtype is None else dtype, stream=stream)


def ones_like(a, /, dtype=None, *, stream=None) -> array:
    """Ones with the shape of ``a`` and its dtype unless ``dtype`` is given."""
    a = as_array(a, "ones_like")
    return ones(a.shape, a.dtype if dtype is None else dtype, stream=stream)


def empty_like(a, /, dtype=None, *, stream=None) -> array:
    """An array with the shape of ``a`` and its dtype unless ``dtype`` is given (filled with zeros)."""
    return zeros_like(a, dtype, stream=stream)


def full_like(a, /, fill_value, dtype=None, *, stream=None) -> array:
    """``fill_value`` in the shape of ``a`` and, unless given, its dtype."""
    a = as_array(a, "full_like")
    return full(a.shape, fill_value, dtype or a.dtype, stream=stream)


def arange(start, stop=None, step=None, dtype=None, *, stream=None) -> array:
    """Evenly spaced values in ``[start, stop)``. int32 for integer arguments, else float32. See ``numpy.arange``.

    Args:
        start (int | float): first value, or the stop when ``stop`` is omitted.
        stop (int | float, optional): the end, not included.
        step (int | float, optional): the spacing (default 1).
        dtype (Dtype, optional): the dtype.

    Returns:
        array: a 1-d array.
    """
    if stop is None:
        start, stop = 0, start
    step = 1 if step is None else step
    for v in (start, stop, step):
        if not isinstance(v, (int, float)):
            raise TypeError(f"arange: start, stop and step must be numbers, got {type(v).__name__}")
    if step == 0:
        raise ValueError("arange: step must not be zero")
    if math.isinf(stop) or math.isinf(start) or math.isnan(start) or math.isnan(stop):
        raise ValueError("arange: start and stop must be finite")
    is_int = all(isinstance(v, int) and not isinstance(v, bool) for v in (start, stop, step))
    d = dt.to_dtype(dtype) if dtype is not None else (dt.int32 if is_int else dt.float32)
    n = max(math.ceil((stop - start) / step), 0)
    return node(Arange(start, stop, step, d), (), (n,), d, resolve_stream(stream))


def linspace(start, stop, num: int = 50, dtype=dt.float32, *, stream=None) -> array:
    """``num`` evenly spaced values from ``start`` to ``stop``, both included. See ``numpy.linspace``."""
    for v in (start, stop):
        if not isinstance(v, (int, float, np.integer, np.floating)):
            raise TypeError(f"linspace: start and stop must be real numbers, got {type(v).__name__}")
    if not isinstance(num, (int, np.integer)) or isinstance(num, bool):
        raise TypeError(f"linspace: num must be an int, got {type(num).__name__}")
    if num < 0:
        raise ValueError(f"linspace: num must be non-negative, got {num}")
    d = dt.to_dtype(dtype)
    return node(Linspace(start, stop, int(num), d), (), (int(num),), d, resolve_stream(stream))


def eye(n: int, m: int | None = None, k: int = 0, dtype=dt.float32, *, stream=None) -> array:
    """An ``n`` by ``m`` matrix with ones on the ``k``-th diagonal. See ``numpy.eye``."""
    m = n if m is None else m
    for v in (n, m, k):
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool):
            raise TypeError(f"eye: n, m and k must be ints, got {type(v).__name__}")
    if n < 0 or m < 0:
        raise ValueError(f"eye: dimensions must be non-negative, got {n} x {m}")
    d = dt.to_dtype(dtype)
    return node(Eye(int(n), int(m), int(k), d), (), (int(n), int(m)), d, resolve_stream(stream))


def identity(n: int, dtype=dt.float32, *, stream=None) -> array:
    """The ``n`` by ``n`` identity matrix."""
    return eye(n, n, 0, dtype, stream=stream)


def asarray(a, dtype=None, *, copy: bool | None = None) -> array:
    """``a`` as an array (the array API's ``asarray``). An array given is not copied: the result is a new array
    object sharing its data (converted when ``dtype`` differs).

    Args:
        a: an array, a scalar, a (nested) sequence, or an object with ``__array__``, ``__dlpack__`` or a buffer.
        dtype (Dtype, optional): the dtype; by default inferred as ``mx.array`` does.
        copy (bool, optional): None or True convert (arrays are immutable, so sharing is never observable);
            False asks never to copy, which umx cannot promise, so it raises ValueError, as MLX does off Apple
            silicon.

    Returns:
        array: the array.
    """
    if copy is False:
        raise ValueError("asarray: cannot avoid a copy (copy=False); umx always makes an array of its own")
    return array(a, dtype)

