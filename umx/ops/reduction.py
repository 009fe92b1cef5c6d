"""Reductions: sums, products, extrema, logical reductions, statistics, arg-reductions and softmax."""

from __future__ import annotations

from .. import dtypes as dt
from ..primitives import All, Any, ArgMax, ArgMin, LogSumExp, Max, Mean, Min, Prod, Softmax, Sum, Var
from ._core import array, as_array, axes_of, axis_of, cast, int_of, node, resolve_stream
from .elementwise import sqrt
from .shape import reshape

__all__ = ["sum", "prod", "max", "min", "all", "any", "mean", "var", "std", "logsumexp", "argmax", "argmin",
           "softmax"]


def _out_shape(shape: tuple, axes: tuple, keepdims: bool) -> tuple:
    if keepdims:
        return tuple(1 if i in axes else s for i, s in enumerate(shape))
    return tuple(s for i, s in enumerate(shape) if i not in axes)


_over_all: dict = {}  # (class, ndim, keepdims) -> (the primitive reducing every axis, the result's shape)
_over_axes: dict = {}  # (class, shape, axis, keepdims) -> (the primitive, the result's shape)


def _reduce(cls, name: str, a, axis, keepdims: bool, stream, in_dtype=None, out_dtype=None) -> array:
    a = as_array(a, name)
    st = resolve_stream(stream)
    if axis is None:  # the commonest case (a loss, a norm): one primitive per class and rank (they are immutable)
        key = (cls, len(a._shape), bool(keepdims))
        made = _over_all.get(key)
        if made is None:
            axes = tuple(range(len(a._shape)))
            made = _over_all[key] = (cls(axes, key[2]), _out_shape(a._shape, axes, key[2]))
        prim, shape = made
    else:
        # (a gradient's sums and a norm's means reduce the same few shapes over and over: each is made once)
        key = (cls, a._shape, axis, keepdims) if axis.__class__ is int or _int_tuple(axis) else None
        made = _over_axes.get(key) if key is not None else None
        if made is None:
            axes = axes_of(axis, a.ndim, name)
            made = (cls(axes, bool(keepdims)), _out_shape(a._shape, axes, keepdims))
            if key is not None:
                if len(_over_axes) > 1024:
                    _over_axes.clear()
                _over_axes[key] = made
        prim, shape = made
    if in_dtype is not None:
        a = cast(a, in_dtype, st)
    return node(prim, (a,), shape, out_dtype or a._dtype, st)


def _int_tuple(axis) -> bool:
    """Whether ``axis`` is a tuple of Python ints (a key that no axis of another type equals, as 1.0 equals 1)."""
    if axis.__class__ is not tuple:
        return False
    for x in axis:
        if x.__class__ is not int:
            return False
    return True


_DOC = """{what} over the given axes. See ``numpy.{np}``.

    Args:
        a (array): input array.
        axis (int | Sequence[int] | None): axes to reduce; default: all.
        keepdims (bool): keep reduced axes as size 1 (default False).
        stream (Stream | Device | DeviceType, optional): where the op runs.

    Returns:
        array: the reduction{dtype}.
    """


# Sums and products of narrow integers accumulate in (and return) 32 bits, signed staying signed, as in MLX:
# uint8 ones summed 300 times give 300, not 44.
_ACCUMULATE = {dt.bool_: dt.int32, dt.int8: dt.int32, dt.int16: dt.int32, dt.uint8: dt.uint32,
               dt.uint16: dt.uint32}


def _accumulator(a: array, axis, name: str):
    """The dtype a sum or product of ``a`` accumulates in: none over no axis (a 0-d array, ``axis=()``), where
    MLX returns the input as it is."""
    if a.ndim == 0 or (axis is not None and not axes_of(axis, a.ndim, name)):
        return None
    return _ACCUMULATE.get(a._dtype)


def sum(a, /, axis=None, keepdims: bool = False, *, stream=None) -> array:  # noqa: A001
    a = as_array(a, "sum")
    return _reduce(Sum, "sum", a, axis, keepdims, stream, in_dtype=_accumulator(a, axis, "sum"))


def prod(a, /, axis=None, keepdims: bool = False, *, stream=None) -> array:
    a = as_array(a, "prod")
    return _reduce(Prod, "prod", a, axis, keepdims, stream, in_dtype=_accumulator(a, axis, "prod"))


def _extremum(cls, name: str, a, axis, keepdims: bool, stream) -> array:
    a = as_array(a, name)
    if a.size == 0:  # MLX's rule: no identity to fill a reduction over an empty axis with (other axes may be)
        empty = [i for i in axes_of(axis, a.ndim, name) if a._shape[i] == 0]
        if empty:
            raise ValueError(f"{name}: cannot reduce over axis {empty[0]} of size 0 (array of shape {a.shape})")
    return _reduce(cls, name, a, axis, keepdims, stream)


def max(a, /, axis=None, keepdims: bool = False, *, stream=None) -> array:  # noqa: A001
    return _extremum(Max, "max", a, axis, keepdims, stream)


def min(a, /, axis=None, keepdims: bool = False, *, stream=None) -> array:  # noqa: A001
    return _extremum(Min, "min", a, axis, keepdims, stream)


def all(a, /, axis=None, keepdims: bool = False, *, stream=None) -> array:  # noqa: A001
    return _reduce(All, "all", a, axis, keepdims, stream, out_dtype=dt.bool_)


def any(a, /, axis=None, keepdims: bool = False, *, stream=None) -> array:  # noqa: A001
    return _reduce(Any, "any", a, axis, keepdims, stream, out_dtype=dt.bool_)


def _float_dtype(a: array) -> dt.Dtype:
    return a._dtype if a._dtype.kind in "fc" else dt.float32


def mean(a, /, axis=None, keepdims: bool = False, *, stream=None) -> array:
    a = as_array(a, "mean")
    return _reduce(Mean, "mean", a, axis, keepdims, stream, in_dtype=_float_dtype(a))


def logsumexp(a, /, axis=None, keepdims: bool = False, *, stream=None) -> array:
    a = as_array(a, "logsumexp")
    if a.size == 0:
        raise ValueError(f"logsumexp: cannot reduce an empty array of shape {a.shape}")
    return _reduce(LogSumExp, "logsumexp", a, axis, keepdims, stream, in_dtype=_float_dtype(a))


def var(a, /, axis=None, keepdims: bool = False, ddof: int = 0, *, stream=None) -> array:
    """Variance over the given axes, with ``ddof`` delta degrees of freedom. See ``numpy.var``.

    Args:
        a (array): input array.
        axis (int | Sequence[int] | None): axes to reduce; default: all.
        keepdims (bool): keep reduced axes as size 1 (default False).
        ddof (int): the divisor is ``N - ddof`` (default 0).

    Returns:
        array: the variance (float32 for integer input).
    """
    a = as_array(a, "var")
    axes = axes_of(axis, a.ndim, "var")
    ddof = int_of(ddof, "var", "ddof")
    st = resolve_stream(stream)
    a = cast(a, _float_dtype(a), st)
    out = a._dtype if a._dtype.kind == "f" else dt.float32
    return node(Var(axes, bool(keepdims), ddof), (a,), _out_shape(a._shape, axes, keepdims), out, st)


def std(a, /, axis=None, keepdims: bool = False, ddof: int = 0, *, stream=None) -> array:
    """Standard deviation: the square root of :func:`var`. See ``numpy.std``."""

    return sqrt(var(a, axis, keepdims, ddof, stream=stream), stream=stream)


def _arg(cls, name, a, axis, keepdims, stream):
    a = as_array(a, name)
    st = resolve_stream(stream)
    orig = a._shape
    if axis is None:

        a = reshape(a, (-1,), stream=st)
        ax = 0
        shape = (1,) * len(orig) if keepdims else ()
    else:
        ax = axis_of(axis, a.ndim, name)
        shape = _out_shape(a._shape, (ax,), keepdims)
    if a.size == 0:  # MLX refuses any empty input, even where the result would be empty too
        raise ValueError(f"{name}: cannot reduce an empty array of shape {orig}")
    out = node(cls(ax, bool(keepdims) and axis is not None), (a,), shape if axis is not None else (), dt.uint32, st)
    if axis is None and keepdims:

        out = reshape(out, shape, stream=st)
    return out


def argmax(a, /, axis=None, keepdims: bool = False, *, stream=None) -> array:
    """Indices of the maxima along ``axis`` (of the flattened array when None), as uint32. See ``numpy.argmax``."""
    return _arg(ArgMax, "argmax", a, axis, keepdims, stream)


def argmin(a, /, axis=None, keepdims: bool = False, *, stream=None) -> array:
    """Indices of the minima along ``axis`` (of the flattened array when None), as uint32. See ``numpy.argmin``."""
    return _arg(ArgMin, "argmin", a, axis, keepdims, stream)


def softmax(a, /, axis=None, *, precise: bool = False, stream=None) -> array:
    """``exp(a) / sum(exp(a))`` over ``axis`` (default: all), computed stably.

    Args:
        a (array): input.
        axis (int | Sequence[int] | None): axes to normalise over; default: all.
        precise (bool): accepted for MLX compatibility; half-precision inputs are always summed in float32.

    Returns:
        array: same shape as ``a``.
    """
    a = as_array(a, "softmax")
    axes = axes_of(axis, a.ndim, "softmax")
    st = resolve_stream(stream)
    a = cast(a, _float_dtype(a), st)
    return node(Softmax(axes), (a,), a._shape, a._dtype, st)


for _f, _what, _np, _d in [
    (sum, "Sum", "sum", " (bool sums as int32; integer sums keep their dtype, as in MLX)"),
    (prod, "Product", "prod", ""), (max, "Maximum", "max", ""), (min, "Minimum", "min", ""),
    (all, "Whether all elements are true", "all", ", bool"), (any, "Whether any element is true", "any", ", bool"),
    (mean, "Mean", "mean", " (float32 for integer input)"),
    (logsumexp, "``log(sum(exp(a)))``, computed stably,", "logaddexp.reduce", ""),
]:
    _f.__doc__ = _DOC.format(what=_what, np=_np, dtype=_d)
