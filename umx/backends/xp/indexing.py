"""Gather and scatter kernels, NumPy indexing semantics."""

from __future__ import annotations

from ...primitives import indexing as ix
from . import kernel


@kernel(ix.Gather)
def _gather(xp, prim, x, *index_arrays):
    return x[ix.fill_key(prim.key, index_arrays)]


@kernel(ix.Scatter)
def _scatter(xp, prim, x, values, *index_arrays):
    out = xp.array(x, copy=True)
    key = ix.fill_key(prim.key, index_arrays)
    if prim.op is None:
        out[key] = values
    else:
        getattr(xp, prim.op).at(out, key, values)
    return out
