"""Matrix kernels."""

from __future__ import annotations

from ...primitives import linalg as la
from . import kernel


@kernel(la.Matmul)
def _matmul(xp, prim, a, b):
    return xp.matmul(a, b)
