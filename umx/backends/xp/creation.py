"""Kernels of primitives with no inputs."""

from __future__ import annotations

import math

from ...primitives import creation as c
from . import kernel


@kernel(c.Full)
def _full(xp, prim):
    return xp.full(prim.shape, prim.value, dtype=prim.dtype.compute)


@kernel(c.Arange)
def _arange(xp, prim):
    d = prim.dtype.compute
    if prim.dtype.kind in "iu" and all(type(v) is int for v in (prim.start, prim.stop, prim.step)):
        # integer bounds in 64 bits, then cast: values beyond a narrow dtype wrap around, as in MLX
        return xp.arange(prim.start, prim.stop, prim.step, dtype=xp.int64).astype(d)
    if isinstance(prim.step, float) and math.isinf(prim.step):  # (CuPy's arange gives no element here)
        return xp.full((1 if (prim.stop - prim.start) * prim.step > 0 else 0,), prim.start, dtype=d)
    return xp.arange(prim.start, prim.stop, prim.step, dtype=d)


@kernel(c.Linspace)
def _linspace(xp, prim):
    # computed in float64 and cast, so that integer dtypes truncate toward zero (as MLX; NumPy floors)
    out = xp.linspace(prim.start, prim.stop, prim.num, endpoint=prim.endpoint, dtype=xp.float64)
    return out.astype(prim.dtype.compute)


@kernel(c.Eye)
def _eye(xp, prim):
    return xp.eye(prim.n, prim.m, prim.k, dtype=prim.dtype.compute)
