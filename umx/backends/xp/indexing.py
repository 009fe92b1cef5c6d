"""Gather and scatter kernels, NumPy indexing semantics."""

from __future__ import annotations

from ...primitives import indexing as ix
from . import kernel


@kernel(ix.Gather)
def _gather(xp, prim, x, *index_arrays):
    return x[ix.fill_key(prim.key, index_arrays)]


@kernel(ix.Scatter)
def _scatter(xp, prim, x, values, *index_arrays):
    out = x.copy() if type(x) is xp.ndarray else xp.array(x, copy=True)  # (copy(): a fraction of array()'s cost)
    key = ix.fill_key(prim.key, index_arrays)
    if prim.op is None:
        out[key] = values
    elif not index_arrays:  # basic indexing selects each element once: no need for the unbuffered (slow) ``at``
        out[key] = getattr(xp, prim.op)(out[key], values)
    else:
        getattr(xp, prim.op).at(out, key, values)
    return out
