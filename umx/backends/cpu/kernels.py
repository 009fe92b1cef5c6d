"""The kernel table on NumPy: the shared NumPy-API kernels, with overrides where NumPy's own function is slow."""

from __future__ import annotations

import math

import numpy as np

from ...primitives import elementwise as ew
from ...primitives import reduction as r
from ...primitives.conv import Convolution
from ..xp import bind
from ..xp import conv as xp_conv

#: the CPU's bound on a convolution chunk's temporaries: small enough that a GEMM reads the windows just gathered
#: from the caches (a chunk of the shared kernels' size goes to memory and back)
CONV_BUDGET = 4 << 20


def _leading_sum(x, axes: tuple, keepdims: bool):
    """The float sum of ``x`` over ``axes`` when they are its leading axes (a bias's or a norm's gradient, a
    batch's statistics), as a matrix-vector product with ones, else None. NumPy reduces leading axes one row at
    a time, slowly for short rows; BLAS sums the same values in blocks (bench/train.py's CNN shows the gain)."""
    n = len(axes)
    if (x.__class__ is not np.ndarray or x.dtype.char not in "fd" or n == x.ndim or axes != tuple(range(n))
            or not x.flags.c_contiguous):
        return None
    kept = x.shape[n:]
    rows = math.prod(x.shape[:n])
    if rows < 2 or not x.size:
        return None
    s = np.ones(rows, x.dtype) @ x.reshape(rows, -1)
    return s.reshape((1,) * n + kept if keepdims else kept)


def _sum(prim, x):
    s = None if len(prim.axes) == x.ndim else _leading_sum(x, prim.axes, prim.keepdims)  # (full: NumPy's own)
    return np.sum(x, axis=prim.axes, dtype=x.dtype, keepdims=prim.keepdims) if s is None else s


def _var(prim, x):
    # numpy.var's two passes (the mean, then the mean squared deviation), each sum over leading axes by BLAS
    m = _leading_sum(x, prim.axes, True)
    if m is None:
        return np.var(x, axis=prim.axes, ddof=prim.ddof, keepdims=prim.keepdims)
    rows = math.prod(x.shape[:len(prim.axes)])
    np.true_divide(m, rows, out=m)
    d = np.subtract(x, m)
    np.multiply(d, d, out=d)
    s = _leading_sum(d, prim.axes, prim.keepdims)
    with np.errstate(divide="ignore", invalid="ignore"):  # (ddof >= rows: inf or NaN, as numpy.var gives)
        return np.true_divide(s, max(rows - prim.ddof, 0), out=s)


def _mean(prim, x):
    # numpy.mean wraps its sum in a few microseconds of Python (a loss's mean: 4x the sum itself). For float32 and
    # float64, its steps spelled out: the pairwise sum in x's dtype, then one division by the count as an integer,
    # the result cast back, so the same bits as numpy.mean.
    if x.dtype.char not in "fd":
        return np.mean(x, axis=prim.axes, keepdims=prim.keepdims)
    s = None if len(prim.axes) == x.ndim else _leading_sum(x, prim.axes, prim.keepdims)  # (full: NumPy's own)
    if s is None:
        s = np.add.reduce(x, axis=prim.axes, keepdims=prim.keepdims)
    count = 1
    for a in prim.axes:
        count *= x.shape[a]
    count = np.intp(count)
    if s.__class__ is np.ndarray:
        return np.true_divide(s, count, out=s, casting="unsafe")
    return x.dtype.type(s / count)


def _convolution(prim, x, w):
    return xp_conv.convolution(np, prim, x, w, CONV_BUDGET)


_UINT_OF_SIZE = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}
_SELECT_MIN_SIZE = 4096  # below this, numpy.where's own speed is not worth the extra steps


def _where(prim, c, x, y):
    # numpy.where branches on every element: on a mask with no pattern (a ReLU's gradient, a dropout mask) half
    # the branches mispredict, which costs 10-20x a branch-free select. The select on the values' bits,
    # y ^ ((x ^ y) & mask), with mask all ones where c holds, gives the same bits (NaNs, signed zeros) as
    # numpy.where.
    if c.__class__ is not np.ndarray or c.size < _SELECT_MIN_SIZE:  # (small selects, the commonest: at once)
        return np.where(c, x, y)
    x, y = np.asarray(x), np.asarray(y)
    u = _UINT_OF_SIZE.get(x.dtype.itemsize)
    if u is None or x.dtype != y.dtype or x.dtype.kind not in "fiub":
        return np.where(c, x, y)
    shape = np.broadcast_shapes(c.shape, x.shape, y.shape)
    mask = (c if c.shape == shape else np.broadcast_to(c, shape)).astype(u)
    np.negative(mask, out=mask)  # 1 -> all ones (unsigned wrap-around), 0 -> 0
    xb, yb = x.view(u), y.view(u)
    if yb.size == 1 and not yb.any():  # y a zero (a gradient's where(x > 0, g, 0)): the select is x & mask
        np.bitwise_and(mask, xb, out=mask)
    else:
        np.bitwise_and(mask, np.bitwise_xor(xb, yb), out=mask)
        np.bitwise_xor(mask, yb, out=mask)
    return mask.view(x.dtype)


def make_table() -> dict:
    table = bind(np)
    table[r.Sum] = _sum
    table[r.Mean] = _mean
    table[r.Var] = _var
    table[Convolution] = _convolution
    table[ew.Where] = _where
    return table
