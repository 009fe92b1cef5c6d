"""The kernel table on NumPy: the shared NumPy-API kernels, with overrides where NumPy's own function is slow."""

from __future__ import annotations

import numpy as np

from ...primitives import reduction as r
from ...primitives.conv import Convolution
from ..xp import bind
from ..xp import conv as xp_conv

#: the CPU's bound on a convolution chunk's temporaries: small enough that a GEMM reads the windows just gathered
#: from the caches (a chunk of the shared kernels' size goes to memory and back)
CONV_BUDGET = 4 << 20


def _mean(prim, x):
    # numpy.mean wraps its sum in a few microseconds of Python (a loss's mean: 4x the sum itself). For float32 and
    # float64, its steps spelled out: the pairwise sum in x's dtype, then one division by the count as an integer,
    # the result cast back, so the same bits as numpy.mean.
    if x.dtype.char not in "fd":
        return np.mean(x, axis=prim.axes, keepdims=prim.keepdims)
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


def make_table() -> dict:
    table = bind(np)
    table[r.Mean] = _mean
    table[Convolution] = _convolution
    return table
