"""Matrix primitives."""

from __future__ import annotations

from .base import Primitive


class Matmul(Primitive):
    """``a @ b`` with NumPy's batching and broadcasting rules."""

    __slots__ = ()


MATMUL = Matmul()
