"""Scans: cumulative sums, products, extrema and log-sum-exps along an axis."""

from __future__ import annotations

from .. import dtypes as dt
from ..primitives import Full, Scan
from ._core import array, as_array, axis_of, cast, node, reshape_node, resolve_stream
from .shape import concatenate

__all__ = ["cumsum", "cumprod", "cummax", "cummin", "logcumsumexp", "cumulative_sum", "cumulative_prod"]


def _scan(op: str, name: str, a, axis, reverse: bool, inclusive: bool, stream) -> array:
    a = as_array(a, name)
    st = resolve_stream(stream)
    if axis is None:
        a = reshape_node(a, (a.size,), st)
        axis = 0
    elif a.ndim == 0:
        raise ValueError(f"{name}: a 0-d array has no axis {axis}; pass axis=None")
    ax = axis_of(axis, a.ndim, name)
    if a._dtype is dt.bool_ and op == "sum":
        a = cast(a, dt.int32, st)
    elif a._dtype is dt.bool_ and op == "prod":
        op = "min"  # a running product of bools is their running logical and, and stays bool (as in MLX)
    elif op == "logaddexp" and a._dtype.kind not in "fc":
        a = cast(a, dt.float32, st)
    return node(Scan(op, ax, bool(reverse), bool(inclusive)), (a,), a._shape, a._dtype, st)


_DOC = """The cumulative {what} along ``axis``. See ``numpy.{np}``.

    Args:
        a (array): input.
        axis (int, optional): the axis; default: the flattened array.
        reverse (bool): accumulate from the end (default False).
        inclusive (bool): each output includes its own element (default True); when False the first output is
            the operation's identity.

    Returns:
        array: same shape as ``a``{dtype}.
    """


def cumsum(a, /, axis: int | None = None, *, reverse: bool = False, inclusive: bool = True,
              stream=None) -> array:
    return _scan("sum", "cumsum", a, axis, reverse, inclusive, stream)


def cumprod(a, /, axis: int | None = None, *, reverse: bool = False, inclusive: bool = True,
               stream=None) -> array:
    return _scan("prod", "cumprod", a, axis, reverse, inclusive, stream)


def cummax(a, /, axis: int | None = None, *, reverse: bool = False, inclusive: bool = True,
              stream=None) -> array:
    return _scan("max", "cummax", a, axis, reverse, inclusive, stream)


def cummin(a, /, axis: int | None = None, *, reverse: bool = False, inclusive: bool = True,
              stream=None) -> array:
    return _scan("min", "cummin", a, axis, reverse, inclusive, stream)


def logcumsumexp(a, /, axis: int | None = None, *, reverse: bool = False, inclusive: bool = True,
                 stream=None) -> array:
    return _scan("logaddexp", "logcumsumexp", a, axis, reverse, inclusive, stream)


for _f, _what, _np, _d in [
    (cumsum, "sum", "cumsum", " (bool counts as int32; integers keep their dtype, as in MLX)"),
    (cumprod, "product", "cumprod", " (bool stays bool, a running logical and; integers keep their dtype)"),
    (cummax, "maximum", "maximum.accumulate", ", same dtype"),
    (cummin, "minimum", "minimum.accumulate", ", same dtype"),
    (logcumsumexp, "``log(sum(exp(a)))``", "logaddexp.accumulate", " (float32 for integer input)"),
]:
    _f.__doc__ = _DOC.format(what=_what, np=_np, dtype=_d)



def _cumulative(op: str, name: str, x, axis, dtype, include_initial: bool, stream) -> array:

    x = as_array(x, name)
    st = resolve_stream(stream)
    if axis is None and x.ndim != 1:
        raise ValueError(f"{name}: axis is required for an array of {x.ndim} dimensions")
    if dtype is not None:
        x = cast(x, dt.to_dtype(dtype), st)
    out = _scan(op, name, x, 0 if axis is None else axis, False, True, st)
    if not include_initial:
        return out
    ax = axis_of(0 if axis is None else axis, x.ndim, name)
    first = node(Full(out._shape[:ax] + (1,) + out._shape[ax + 1:], 0 if op == "sum" else 1, out._dtype), (),
                 out._shape[:ax] + (1,) + out._shape[ax + 1:], out._dtype, st)
    return concatenate([first, out], ax, stream=st)


def cumulative_sum(x, /, *, axis: int | None = None, dtype=None, include_initial: bool = False,
                   stream=None) -> array:
    """The cumulative sum, in the array API's form. See ``numpy.cumulative_sum``.

    Args:
        x (array): input.
        axis (int, optional): the axis; may be omitted only for 1-d input.
        dtype (Dtype, optional): convert ``x`` to this dtype first.
        include_initial (bool): start the output with a 0, making the axis one longer (default False).

    Returns:
        array: the running sums.
    """
    return _cumulative("sum", "cumulative_sum", x, axis, dtype, include_initial, stream)


def cumulative_prod(x, /, *, axis: int | None = None, dtype=None, include_initial: bool = False,
                    stream=None) -> array:
    """The cumulative product, in the array API's form. See ``numpy.cumulative_prod``.

    Args:
        x (array): input.
        axis (int, optional): the axis; may be omitted only for 1-d input.
        dtype (Dtype, optional): convert ``x`` to this dtype first.
        include_initial (bool): start the output with a 1, making the axis one longer (default False).

    Returns:
        array: the running products.
    """
    return _cumulative("prod", "cumulative_prod", x, axis, dtype, include_initial, stream)
