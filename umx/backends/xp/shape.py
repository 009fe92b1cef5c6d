"""Kernels that move data: casts, reshapes, transposes, broadcasts, joins and splits.

Results may be views of their inputs: arrays are immutable, so a view is never written through.
"""

from __future__ import annotations

from ...primitives import shape as s
from . import kernel


@kernel(s.AsType)
def _astype(xp, prim, x):
    t = prim.dtype.compute  # (a bfloat16 result is rounded to its storage after: see conform)
    if x.dtype.kind == "c" and t.kind != "c":
        x = x.real
    return x.astype(t)


@kernel(s.Copy)
def _copy(xp, prim, x):
    return xp.array(x, copy=True)


@kernel(s.Reshape)
def _reshape(xp, prim, x):
    return xp.reshape(x, prim.shape)


@kernel(s.Transpose)
def _transpose(xp, prim, x):
    return xp.transpose(x, prim.axes)


@kernel(s.BroadcastTo)
def _broadcast_to(xp, prim, x):
    return xp.broadcast_to(x, prim.shape)


@kernel(s.Concatenate)
def _concatenate(xp, prim, *xs):
    return xp.concatenate(xs, axis=prim.axis)


@kernel(s.Split)
def _split(xp, prim, x):
    return tuple(xp.split(x, list(prim.indices), axis=prim.axis))


@kernel(s.View)
def _view(xp, prim, x):
    # ascontiguousarray makes 0-d arrays 1-d
    return (xp.ascontiguousarray(x) if x.ndim else x.copy()).view(prim.dtype.np)
