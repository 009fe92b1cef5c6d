"""Sorting kernels."""

from __future__ import annotations

from ...primitives.sort import ArgSort
from . import kernel


@kernel(ArgSort)
def _argsort(xp, prim, x):
    return xp.argsort(x, axis=prim.axis, kind="stable").astype(xp.uint32)
