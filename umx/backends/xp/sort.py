"""Sorting kernels."""

from __future__ import annotations

from ...primitives.sort import ArgSort
from . import kernel


@kernel(ArgSort)
def _argsort(xp, prim, x):
    # CuPy's sort is always stable, and older CuPy releases take no `kind`
    stable = {"kind": "stable"} if xp.__name__ == "numpy" else {}
    return xp.argsort(x, axis=prim.axis, **stable).astype(xp.uint32)
