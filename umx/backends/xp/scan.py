"""Scan kernels: running sums, products, extrema and log-sum-exps along an axis."""

from __future__ import annotations

import numpy as np

from ...primitives import scan as sc
from . import kernel
from .elementwise import logaddexp_complex

_UFUNC = {"max": "maximum", "min": "minimum", "logaddexp": "logaddexp"}


def _logstep(xp, fn, x, axis):
    """An inclusive scan of the associative ``fn`` in log2(n) whole-array steps (Hillis and Steele)."""
    x = xp.moveaxis(x, axis, -1)
    n = x.shape[-1]
    k = 1
    while k < n:
        x = xp.concatenate([x[..., :k], fn(x[..., k:], x[..., :-k])], axis=-1)
        k *= 2
    return xp.moveaxis(x, -1, axis)


def _identity(op, dtype):
    if op == "sum":
        return 0
    if op == "prod":
        return 1
    if dtype.kind == "b":
        return op == "min"
    if dtype.kind == "c" and op in ("min", "max"):  # the extremes of MLX's order (real part, then imaginary)
        return complex(np.inf, np.inf) if op == "min" else complex(-np.inf, -np.inf)
    if dtype.kind in "fc":
        return np.inf if op == "min" else -np.inf
    info = np.iinfo(dtype)
    return info.max if op == "min" else info.min


@kernel(sc.Scan)
def _scan(xp, prim, x):
    ax, op = prim.axis, prim.op
    if prim.reverse:
        x = xp.flip(x, ax)
    if op == "sum":
        y = xp.cumsum(x, axis=ax, dtype=x.dtype)
    elif op == "prod":
        y = xp.cumprod(x, axis=ax, dtype=x.dtype)
    elif op == "logaddexp" and x.dtype.kind == "c":
        y = _logstep(xp, lambda a, b: logaddexp_complex(xp, a, b), x, ax)
    else:
        ufunc = getattr(xp, _UFUNC[op])
        try:
            y = ufunc.accumulate(x, axis=ax)
        except (NotImplementedError, TypeError, AttributeError):  # CuPy accumulates only sums and products
            y = _logstep(xp, ufunc, x, ax)
    if not prim.inclusive and x.shape[ax]:
        first = xp.full(x.shape[:ax] + (1,) + x.shape[ax + 1:], _identity(op, x.dtype), dtype=x.dtype)
        y = xp.concatenate([first, xp.take(y, xp.arange(x.shape[ax] - 1), axis=ax)], axis=ax)
    if prim.reverse:
        y = xp.flip(y, ax)
    return y.astype(x.dtype, copy=False)
