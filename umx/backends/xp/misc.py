"""Kernels of einsum, NaN replacement, medians, windows and dependencies."""

from __future__ import annotations

from ...primitives import misc as mi
from . import kernel


@kernel(mi.Einsum)
def _einsum(xp, prim, *xs):
    # optimize: contract pairwise through BLAS (tensordot) rather than in one nested loop
    out = xp.einsum(prim.subscripts, *xs, optimize=len(xs) > 1)
    return xp.asarray(out).astype(xs[0].dtype, copy=False)


@kernel(mi.NanToNum)
def _nan_to_num(xp, prim, x):
    return xp.nan_to_num(x, copy=True, nan=prim.nan, posinf=prim.posinf, neginf=prim.neginf)


@kernel(mi.Median)
def _median(xp, prim, x):
    if not prim.axes:  # over no axes: each element is its own median (NumPy and CuPy refuse an empty axis tuple)
        return x
    return xp.asarray(xp.median(x, axis=prim.axes, keepdims=prim.keepdims)).astype(x.dtype, copy=False)


@kernel(mi.Window)
def _window(xp, prim):
    return getattr(xp, prim.kind)(prim.m).astype(prim.dtype.compute)


@kernel(mi.Depends, mi.StopGradient)
def _depends(xp, prim, x, *dependencies):
    return x


@kernel(mi.SideOutput)
def _side_output(xp, prim, root):
    # (handed over, not kept: the region holds no reference to the value after this, which a CUDA graph's count
    # of who holds its slots would otherwise see)
    values = prim.region.side_values
    out = values[prim.index]
    values[prim.index] = None
    return out


@kernel(mi.Custom)
def _custom(xp, prim, *inputs):
    return inputs[0] if prim.n == 1 else tuple(inputs[:prim.n])
