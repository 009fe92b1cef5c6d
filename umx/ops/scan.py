"""Scans: cumulative sums, products, extrema and log-sum-exps along an axis."""

from __future__ import annotations

from .. import dtypes as dt
from ..primitives import Full, Scan
from ._core import array, as_array, axis_of, cast, node, reshape_node, resolve_stream
from .shape import concatenate

__all__ = ["cumsum", "cumprod", "cummax", "cummin", "logcumsumexp", "cumulative_sum", "cumulative_prod"]


def _scan(op: str, name: str, a, axis, reverse: bool, inclusive: bool, stream, dtype=None) -> array:
    a = as_array(a, name)
    st = resolve_stream(stream)
    if dtype is not None:  # (converted first: the usual rules then apply, so bool still sums as int32)
        a = cast(a, dt.to_dtype(dtype), st)
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
            the operation's identity.{dtype_arg}

    Returns:
        array: same shape as ``a``{dtype}.
    """


def cumsum(a, /, axis: int | None = None, *, reverse: bool = False, inclusive: bool = True, dtype=None,
           stream=None) -> array:
    return _scan("sum", "cumsum", a, axis, reverse, inclusive, stream, dtype)


def cumprod(a, /, axis: int | None = None, *, reverse: bool = False, inclusive: bool = True, dtype=None,
            stream=None) -> array:
    return _scan("prod", "cumprod", a, axis, reverse, inclusive, stream, dtype)


def cummax(a, /, axis: int | None = None, *, reverse: bool = False, inclusive: bool = True,
              stream=None) -> array:
    return _scan("max", "cummax", a, axis, reverse, inclusive, stream)


def cummin(a, /, axis: int | None = None, *, reverse: bool = False, inclusive: bool = True,
              stream=None) -> array:
    return _scan("min", "cummin", a, axis, reverse, inclusive, stream)


def logcumsumexp(a, /, axis: int | None = None, *, reverse: bool = False, inclusive: bool = True,
                 stream=None) -> array:
    return _scan("logaddexp", "logcumsumexp", a, axis, reverse, inclusive, stream)


_DTYPE_ARG = "\n        dtype (Dtype, optional): convert ``a`` to this dtype first."
for _f, _what, _np, _d, _arg in [
    (cumsum, "sum", "cumsum", " (bool counts as int32; integers keep their dtype, as in MLX)", _DTYPE_ARG),
    (cumprod, "product", "cumprod", " (bool stays bool, a running logical and; integers keep their dtype)",
     _DTYPE_ARG),
    (cummax, "maximum", "maximum.accumulate", ", same dtype", ""),
    (cummin, "minimum", "minimum.accumulate", ", same dtype", ""),
    (logcumsumexp, "``log(sum(exp(a)))``", "logaddexp.accumulate", " (float32 for integer input)", ""),
]:
    _f.__doc__ = _DOC.format(what=_what, np=_np, dtype=_d, dtype_arg=_arg)



def _cumulative(op: str, name: str, a, axis, reverse: bool, inclusive: bool, dtype, include_initial: bool,
                stream) -> array:
    st = resolve_stream(stream)
    out = _scan(op, name, a, axis, reverse, inclusive, st, dtype)
    if not include_initial:
        return out
    ax = 0 if axis is None else axis_of(axis, out.ndim, name)
    shape = out._shape[:ax] + (1,) + out._shape[ax + 1:]
    identity = node(Full(shape, 0 if op == "sum" else 1, out._dtype), (), shape, out._dtype, st)
    return concatenate([out, identity] if reverse else [identity, out], ax, stream=st)


def cumulative_sum(a, /, axis: int | None = None, *, reverse: bool = False, inclusive: bool = True, dtype=None,
                   include_initial: bool = False, stream=None) -> array:
    return _cumulative("sum", "cumulative_sum", a, axis, reverse, inclusive, dtype, include_initial, stream)


def cumulative_prod(a, /, axis: int | None = None, *, reverse: bool = False, inclusive: bool = True, dtype=None,
                    include_initial: bool = False, stream=None) -> array:
    return _cumulative("prod", "cumulative_prod", a, axis, reverse, inclusive, dtype, include_initial, stream)


_ALIAS_DOC = """MLX's other name for :func:`{scan}`; ``include_initial`` (the array API's) starts the output
    with a {one}.

    Args:
        a (array): input.
        axis (int, optional): the axis; default: the flattened array.
        reverse (bool): accumulate from the end (default False).
        inclusive (bool): each output includes its own element (default True).
        dtype (Dtype, optional): convert ``a`` to this dtype first.
        include_initial (bool): put a {one} before the {what}s (after them with ``reverse``), making the axis one
            longer. Default: False.

    Returns:
        array: the running {what}s.
    """
cumulative_sum.__doc__ = _ALIAS_DOC.format(scan="cumsum", one=0, what="sum")
cumulative_prod.__doc__ = _ALIAS_DOC.format(scan="cumprod", one=1, what="product")
