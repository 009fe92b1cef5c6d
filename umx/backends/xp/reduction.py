"""Reduction kernels."""

from __future__ import annotations

import math

import numpy as np

from ...primitives import reduction as r
from . import kernel


@kernel(r.Sum, r.Prod)
def _sum_prod(xp, prim, x):
    fn = xp.sum if type(prim) is r.Sum else xp.prod
    return fn(x, axis=prim.axes, dtype=x.dtype, keepdims=prim.keepdims)


@kernel(r.Max, r.Min, r.All, r.Any, r.Mean)
def _reduce(xp, prim, x):
    if x.size == 0 and type(prim) in (r.Max, r.Min) and any(x.shape[i] == 0 for i in prim.axes):
        raise ValueError(f"{prim.name}: cannot reduce an empty axis of shape {x.shape} over axes {prim.axes}")
    return getattr(xp, prim.fn)(x, axis=prim.axes, keepdims=prim.keepdims)


@kernel(r.Var)
def _var(xp, prim, x):
    n = math.prod(x.shape[a] for a in prim.axes)
    if n > prim.ddof:
        return xp.var(x, axis=prim.axes, ddof=prim.ddof, keepdims=prim.keepdims)
    # no degrees of freedom left: the squared deviations over zero, inf or NaN, as NumPy and MLX (CuPy gives NaN)
    squares = xp.var(x, axis=prim.axes, keepdims=prim.keepdims) * n
    with np.errstate(divide="ignore", invalid="ignore"):
        return xp.true_divide(squares, 0)


@kernel(r.ArgMax, r.ArgMin)
def _arg(xp, prim, x):
    return getattr(xp, prim.fn)(x, axis=prim.axis, keepdims=prim.keepdims).astype(xp.uint32)


@kernel(r.LogSumExp)
def _logsumexp(xp, prim, x):
    if x.size == 0:
        return xp.full(_reduced_shape(x.shape, prim.axes, prim.keepdims), -xp.inf, dtype=x.dtype)
    s = lse_into(xp, x, prim.axes, xp.empty(x.shape, x.dtype))
    return s if prim.keepdims else xp.squeeze(s, axis=prim.axes)


def lse_into(xp, x, axes: tuple, scratch, out=None):
    """``log(sum(exp(x - max))) + max`` over ``axes`` of float ``x``, with reduced axes kept, the exponentials
    written into ``scratch`` (``x``'s shape and dtype; one temporary of x's size, not two); into ``out`` where
    given. A row whose maximum is infinite subtracts 0 instead (giving inf, -inf or NaN as the sum does)."""
    m = xp.max(x, axis=axes, keepdims=True)
    m = xp.where(xp.isfinite(m), m, xp.zeros_like(m))
    e = xp.subtract(x, m, out=scratch)
    xp.exp(e, out=e)
    return xp.add(xp.log(xp.sum(e, axis=axes, keepdims=True)), m, out=out)


@kernel(r.Softmax)
def _softmax(xp, prim, x):
    if x.size == 0:
        return x
    dt = x.dtype
    if dt.itemsize < 4:
        x = x.astype(xp.float32)
    return softmax_into(xp, x, prim.axes, xp.empty(x.shape, x.dtype)).astype(dt, copy=False)


def softmax_into(xp, x, axes: tuple, out):
    """``exp(x - max) / sum`` over ``axes`` of float ``x``, written into ``out`` (``x``'s shape and dtype) and
    returned: the exponentials and the division in place, so ``out`` is the only array of ``x``'s size."""
    xp.subtract(x, xp.max(x, axis=axes, keepdims=True), out=out)
    xp.exp(out, out=out)
    xp.divide(out, xp.sum(out, axis=axes, keepdims=True), out=out)
    return out


@kernel(r.SoftmaxVJP)
def _softmax_vjp(xp, prim, y, c):
    if y.size == 0:
        return xp.empty(xp.broadcast_shapes(y.shape, c.shape), xp.result_type(y, c))
    return softmax_vjp_into(xp, y, c, prim.axes)


def softmax_vjp_into(xp, y, c, axes: tuple, out=None):
    """``y * (c - sum(c * y))`` over ``axes`` (softmax's gradient from its output ``y``), into ``out`` where given;
    half-precision inputs are computed in float32 and rounded once."""
    dt = xp.result_type(y, c)
    work = xp.float32 if dt.itemsize < 4 else dt
    y, c = y.astype(work, copy=False), c.astype(work, copy=False)
    into = out is not None and out.dtype == work  # (then out itself is the one temporary)
    t = xp.multiply(c, y, out=out if into else None)
    xp.subtract(c, xp.sum(t, axis=axes, keepdims=True), out=t)
    xp.multiply(t, y, out=t)
    if into:
        return out
    if out is None:
        return t.astype(dt, copy=False)
    out[...] = t
    return out


def _reduced_shape(shape, axes, keepdims):
    if keepdims:
        return tuple(1 if i in axes else s for i, s in enumerate(shape))
    return tuple(s for i, s in enumerate(shape) if i not in axes)
