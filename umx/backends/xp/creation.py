"""Kernels of primitives with no inputs."""

from __future__ import annotations

from ...primitives import creation as c
from . import kernel


@kernel(c.Full)
def _full(xp, prim):
    return xp.full(prim.shape, prim.value, dtype=prim.dtype.np)


@kernel(c.Arange)
def _arange(xp, prim):
    return xp.arange(prim.start, prim.stop, prim.step, dtype=prim.dtype.np)


@kernel(c.Linspace)
def _linspace(xp, prim):
    return xp.linspace(prim.start, prim.stop, prim.num, dtype=prim.dtype.np)


@kernel(c.Eye)
def _eye(xp, prim):
    return xp.eye(prim.n, prim.m, prim.k, dtype=prim.dtype.np)
