"""Kernels that rearrange, repeat or select elements."""

from __future__ import annotations

from math import prod

import numpy as np

from ...primitives import layout as ly
from . import kernel


@kernel(ly.Pad)
def _pad(xp, prim, x, value):
    if prim.mode == "constant":
        return xp.pad(x, prim.pad_width, mode="constant", constant_values=value.item())
    return xp.pad(x, prim.pad_width, mode=prim.mode)


@kernel(ly.Tile)
def _tile(xp, prim, x):
    return xp.tile(x, prim.reps)


@kernel(ly.Repeat)
def _repeat(xp, prim, x):
    return xp.repeat(x, prim.repeats, axis=prim.axis)


@kernel(ly.Roll)
def _roll(xp, prim, x):
    return xp.roll(x, prim.shift, axis=prim.axis)


@kernel(ly.Diagonal)
def _diagonal(xp, prim, x):
    return xp.diagonal(x, prim.offset, prim.axis1, prim.axis2)


@kernel(ly.Diag)
def _diag(xp, prim, x):
    return xp.diag(x, prim.k)


@kernel(ly.Tri)
def _tri(xp, prim):
    return xp.tri(prim.n, prim.m, prim.k, dtype=prim.dtype.compute)


@kernel(ly.Tril)
def _tril(xp, prim, x):
    return xp.tril(x, prim.k)


@kernel(ly.Triu)
def _triu(xp, prim, x):
    return xp.triu(x, prim.k)


@kernel(ly.AsStrided)
def _as_strided(xp, prim, x):
    flat = xp.ascontiguousarray(x).reshape(-1)[prim.offset:]
    if flat.size == 0:  # only an empty result can read no element
        return xp.zeros(prim.shape, x.dtype)
    item = flat.itemsize
    view = xp.lib.stride_tricks.as_strided(flat, prim.shape, tuple(s * item for s in prim.strides))
    return xp.array(view, copy=True)  # a private copy: the view may alias one element many times


def _along_axis_key(xp, indices, shape, axis):
    """The integer-array key that reads ``indices`` along ``axis`` and the matching position elsewhere."""
    nd = len(shape)
    key = []
    for d in range(nd):
        if d == axis:
            key.append(indices)
        else:
            r = [1] * nd
            r[d] = shape[d]
            key.append(xp.arange(shape[d]).reshape(r))
    return tuple(key)


@kernel(ly.TakeAlongAxis)
def _take_along_axis(xp, prim, x, indices):
    ax = prim.axis
    shape = list(np.broadcast_shapes(x.shape[:ax] + (1,) + x.shape[ax + 1:],
                                     indices.shape[:ax] + (1,) + indices.shape[ax + 1:]))
    shape[ax] = indices.shape[ax]
    idx = xp.broadcast_to(indices, tuple(shape)).astype(xp.int64)
    xs = list(shape)
    xs[ax] = x.shape[ax]
    if xp is not np and tuple(xs) == x.shape and idx.size:
        return xp.take(x.reshape(-1), _flat_along_axis(xp, idx, x.shape, ax)).reshape(shape)
    x = xp.broadcast_to(x, tuple(xs))
    idx = xp.where(idx < 0, idx + x.shape[ax], idx)
    return x[_along_axis_key(xp, idx, shape, ax)]


def _flat_along_axis(xp, idx, xshape: tuple, ax: int):
    """The positions in C-order ``xshape`` (of an array the indices do not broadcast) of ``idx``, indices along
    ``ax`` (negatives from the end), one gather's worth. (On a device: CuPy's indexing by several arrays takes
    milliseconds where this takes a few kernels over the indices alone.)"""
    outer = prod(xshape[:ax])
    inner = prod(xshape[ax + 1:])
    n = xshape[ax]
    i = idx.reshape(outer, -1, inner)
    i = xp.where(i < 0, i + n, i)
    return ((xp.arange(outer).reshape(-1, 1, 1) * n + i) * inner + xp.arange(inner)).reshape(-1)


@kernel(ly.PutAlongAxis)
def _put_along_axis(xp, prim, x, indices, values):
    ax = prim.axis
    out = xp.array(x, copy=True)
    shape = list(x.shape)
    shape[ax] = indices.shape[ax]
    idx = xp.broadcast_to(indices, tuple(shape)).astype(xp.int64)
    if xp is not np and out.flags.c_contiguous and idx.size:
        out.reshape(-1)[_flat_along_axis(xp, idx, x.shape, ax)] = xp.broadcast_to(values, tuple(shape)).reshape(-1)
        return out
    idx = xp.where(idx < 0, idx + x.shape[ax], idx)
    out[_along_axis_key(xp, idx, shape, ax)] = xp.broadcast_to(values, tuple(shape))
    return out


def _starts(xp, prim_axes, start, shape, sizes):
    """The block's start along each axis in ``prim_axes``, clamped so that the block fits (as MLX does)."""
    start = start.reshape(-1).astype(xp.int64)
    out = []
    for i, ax in enumerate(prim_axes):
        s = int(start[i if start.size > 1 else 0])
        n = shape[ax]
        s = s + n if s < 0 else s
        out.append(min(max(s, 0), n - sizes[ax]))
    return out


def _device_starts(xp, prim_axes, start, shape, sizes):
    """``_starts`` as 0-d device arrays: no value is read on the host (a CUDA graph may capture the kernel)."""
    start = start.reshape(-1).astype(xp.int64)
    out = []
    for i, ax in enumerate(prim_axes):
        s = start[i if start.size > 1 else 0]
        n = shape[ax]
        out.append(xp.clip(xp.where(s < 0, s + n, s), 0, n - sizes[ax]))
    return out


@kernel(ly.DynamicSlice)
def _dynamic_slice(xp, prim, x, start):
    if xp is not np:  # (on a device: gathers at positions computed there)
        for ax, s in zip(prim.axes, _device_starts(xp, prim.axes, start, x.shape, prim.shape)):
            x = xp.take(x, s + xp.arange(prim.shape[ax]), axis=ax)
        return x
    key = [slice(0, s) for s in prim.shape]
    for ax, s in zip(prim.axes, _starts(xp, prim.axes, start, x.shape, prim.shape)):
        key[ax] = slice(s, s + prim.shape[ax])
    return x[tuple(key)]


@kernel(ly.DynamicSliceUpdate)
def _dynamic_slice_update(xp, prim, x, update, start):
    out = xp.array(x, copy=True)
    if xp is not np:  # (on a device: a scatter at positions computed there)
        starts = dict(zip(prim.axes, _device_starts(xp, prim.axes, start, x.shape, update.shape)))
        if len(starts) == 1:  # one index array among slices keeps the axes where they are
            key = [slice(0, s) for s in update.shape]
            ax, s = next(iter(starts.items()))
            key[ax] = s + xp.arange(update.shape[ax])
        else:
            key = xp.ix_(*[starts[ax] + xp.arange(n) if ax in starts else xp.arange(n)
                           for ax, n in enumerate(update.shape)])
        out[tuple(key)] = update
        return out
    key = [slice(0, s) for s in update.shape]
    for ax, s in zip(prim.axes, _starts(xp, prim.axes, start, x.shape, update.shape)):
        key[ax] = slice(s, s + update.shape[ax])
    out[tuple(key)] = update
    return out
