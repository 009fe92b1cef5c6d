"""Sorting and searching kernels."""

from __future__ import annotations

from ...primitives import sort as so
from . import kernel


def _sortable(xp, x):
    # Bool is sorted as uint8: CuPy's sorts take numbers only.
    return x.astype(xp.uint8) if x.dtype == xp.bool_ else x


@kernel(so.Sort)
def _sort(xp, prim, x):
    return xp.sort(_sortable(xp, x), axis=prim.axis).astype(x.dtype, copy=False)


@kernel(so.ArgSort)
def _argsort(xp, prim, x):
    return xp.argsort(_sortable(xp, x), axis=prim.axis, kind="stable").astype(xp.uint32)


@kernel(so.Partition)
def _partition(xp, prim, x):
    if x.size == 0:
        return x
    return xp.partition(_sortable(xp, x), prim.kth, axis=prim.axis).astype(x.dtype, copy=False)


@kernel(so.ArgPartition)
def _argpartition(xp, prim, x):
    if x.size == 0:
        return xp.zeros(x.shape, xp.uint32)
    return xp.argpartition(_sortable(xp, x), prim.kth, axis=prim.axis).astype(xp.uint32)


@kernel(so.SearchSorted)
def _searchsorted(xp, prim, a, v):
    return xp.searchsorted(_sortable(xp, a), _sortable(xp, v), side=prim.side).astype(xp.uint32)


@kernel(so.Unique)
def _unique(xp, prim, x, *fill):
    flat = x.reshape(-1)
    size = prim.size
    vals, first, inverse, counts = xp.unique(flat, return_index=True, return_inverse=True, return_counts=True)
    n = min(vals.size, size)
    if fill:
        pad = fill[0]
    else:  # by default the padding repeats the smallest value, so the output stays sorted
        pad = vals[:1] if vals.size else xp.zeros((), x.dtype)
    out_vals = xp.empty(size, x.dtype)
    out_vals[:] = pad
    out_vals[:n] = vals[:n]
    out_first = xp.zeros(size, xp.uint32)
    out_first[:n] = first[:n]
    out_counts = xp.zeros(size, xp.uint32)
    out_counts[:n] = counts[:n]
    inverse = xp.minimum(inverse.reshape(x.shape), max(size - 1, 0)).astype(xp.uint32)
    return out_vals, out_first, inverse, out_counts
