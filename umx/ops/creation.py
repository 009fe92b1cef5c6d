"""Array creation: filled arrays, ranges, identity matrices and the ``*_like`` forms."""

from __future__ import annotations

import math

import numpy as np

from .. import dtypes as dt
from ..primitives import Arange, Eye, Full, Linspace
from ._core import array, as_array, cast, check_dims, int_of, node, resolve_stream, shape_of
from .shape import broadcast_to

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
    """Zeros with the shape of ``a`` and, unless ``dtype`` is given, its dtype."""
    a = as_array(a, "zeros_like")
    return zeros(a.shape, a.dtype if dtype is None else dtype, stream=stream)


def ones_like(a, /, dtype=None, *, stream=None) -> array:
    """Ones with the shape of ``a`` and, unless ``dtype`` is given, its dtype."""
    a = as_array(a, "ones_like")
    return ones(a.shape, a.dtype if dtype is None else dtype, stream=stream)


def empty_like(a, /, dtype=None, *, stream=None) -> array:
    """An array with the shape of ``a`` and, unless ``dtype`` is given, its dtype (filled with zeros)."""
    return zeros_like(a, dtype, stream=stream)


def full_like(a, /, vals, dtype=None, *, stream=None) -> array:
    """``vals`` (a scalar or an array broadcast to it) in the shape of ``a`` and, unless given, its dtype."""
    a = as_array(a, "full_like")
    return full(a.shape, vals, dtype or a.dtype, stream=stream)


_REAL = (int, float, np.integer, np.floating)
_INT32 = (-(2**31), 2**31 - 1)
_MAX_SIZE = 2**31 - 1  # an arange's length, as MLX's


def _arange_bound(v, what: str):
    if isinstance(v, (bool, np.bool_)):
        raise ValueError(f"arange: bool is not supported, got {what}={v!r}")
    if not isinstance(v, _REAL):
        raise TypeError(f"arange: {what} must be an int or a float, got {type(v).__name__}")
    return int(v) if isinstance(v, (int, np.integer)) else float(v)


def arange(start=None, /, stop=None, step=None, dtype=None, *, stream=None, **kwargs) -> array:
    """Evenly spaced values in ``[start, stop)``. See ``numpy.arange``.

    Called as ``arange(stop)``, ``arange(start, stop[, step])`` or with keywords (``arange(stop=3)``,
    ``arange(start=1, stop=3)``). Integer bounds give int32, or int64 where one of them does not fit in 32 bits;
    a float among them gives float32.

    Args:
        start (int | float): the first value, or the stop when it is the only bound given (default 0).
        stop (int | float, optional): the end, not included.
        step (int | float, optional): the spacing (default 1).
        dtype (Dtype, optional): the dtype; default: inferred from the bounds.

    Returns:
        array: a 1-d array of at most ``2**31 - 1`` elements.
    """
    if kwargs.keys() - {"start"}:
        raise TypeError(f"arange: unexpected keyword argument {sorted(kwargs.keys() - {'start'})[0]!r}")
    if "start" in kwargs:  # the keyword form needs a stop: arange(start=1) means nothing in MLX
        if start is not None or stop is None:
            raise TypeError("arange: start given by keyword needs stop, and start only once")
        start = kwargs["start"]
    if stop is None:
        if start is None:
            raise TypeError("arange: needs a stop")
        start, stop = 0, start
    elif start is None:
        start = 0
    step = 1 if step is None else step
    start, stop, step = (_arange_bound(v, w) for v, w in ((start, "start"), (stop, "stop"), (step, "step")))
    if step == 0:
        raise ValueError("arange: step must not be zero")
    if any(math.isnan(v) for v in (start, stop, step)) or math.isinf(start) or math.isinf(stop):
        raise ValueError(f"arange: cannot compute the length of a range from {start} to {stop} by {step}")
    is_int = all(type(v) is int for v in (start, stop, step))
    if dtype is not None:
        d = dt.to_dtype(dtype)
    elif is_int:
        d = dt.int32 if all(_INT32[0] <= v <= _INT32[1] for v in (start, stop, step)) else dt.int64
    else:
        d = dt.float32
    if d is dt.bool_:
        raise ValueError("arange: bool is not supported as a dtype")
    if is_int:
        n = max(-((start - stop) // step), 0)  # exact for any size of int
    elif math.isinf(step):
        n = int(stop > start if step > 0 else stop < start)
    else:
        n = max(math.ceil((stop - start) / step), 0)
    if n > _MAX_SIZE:
        raise ValueError(f"arange: {n} elements exceed the maximum size ({_MAX_SIZE}); from {start} to {stop} "
                         f"by {step}")
    if is_int and d.kind in "iu":
        for v, w in ((start, "start"), (stop, "stop"), (step, "step")):
            int_of(v, "arange", w)  # (the kernel computes in 64 bits)
    return node(Arange(start, stop, step, d), (), (n,), d, resolve_stream(stream))


def linspace(start, stop, num: int = 50, endpoint: bool = True, dtype=dt.float32, *, stream=None) -> array:
    """``num`` evenly spaced values from ``start`` to ``stop``. See ``numpy.linspace``.

    Args:
        start (int | float): the first value.
        stop (int | float): the last value when ``endpoint``, else the bound the values stop short of.
        num (int): how many values (default 50).
        endpoint (bool): include ``stop`` (default True); when False the step is ``(stop - start) / num``.
        dtype (Dtype): the result's dtype (default float32); integer dtypes truncate toward zero.

    Returns:
        array: a 1-d array of ``num`` values.
    """
    for v in (start, stop):
        if not isinstance(v, (int, float, np.integer, np.floating)):
            raise TypeError(f"linspace: start and stop must be real numbers, got {type(v).__name__}")
    if not isinstance(num, (int, np.integer)) or isinstance(num, bool):
        raise TypeError(f"linspace: num must be an int, got {type(num).__name__}")
    if num < 0:
        raise ValueError(f"linspace: num must be non-negative, got {num}")
    d = dt.to_dtype(dtype)
    shape = check_dims((int(num),), "linspace")
    return node(Linspace(float(start), float(stop), int(num), d, bool(endpoint)), (), shape, d,
                resolve_stream(stream))


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

