"""Kernels of einsum, NaN replacement, medians, windows, fp8 conversions and dependencies."""

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
    return getattr(xp, prim.kind)(prim.m).astype(prim.dtype.np)


@kernel(mi.Depends, mi.StopGradient)
def _depends(xp, prim, x, *dependencies):
    return x


@kernel(mi.Custom)
def _custom(xp, prim, *inputs):
    return inputs[0] if prim.n == 1 else tuple(inputs[:prim.n])


@kernel(mi.ToFP8)
def _to_fp8(xp, prim, x):
    a = xp.abs(x.astype(xp.float32))
    a = xp.where(a != a, 448.0, xp.minimum(a, 448.0))  # saturating, NaN included (as MLX)
    _, e = xp.frexp(a)
    exp = xp.maximum(e - 1, -6)  # normals a = 1.m * 2**exp; below 2**-6 the subnormals' fixed step 2**-9
    q = xp.rint(xp.ldexp(a, 3 - exp)).astype(xp.int32)  # 8 + mantissa (normals) or the subnormal count
    carry = q >= 16  # rounding up to the next power of two
    exp = xp.where(carry, exp + 1, exp)
    q = xp.where(carry, q // 2, q)
    code = xp.where(q >= 8, ((exp + 7) << 3) + (q - 8), q)
    return (code + xp.where(xp.signbit(x), 128, 0)).astype(xp.uint8)


@kernel(mi.FromFP8)
def _from_fp8(xp, prim, x):
    c = x.astype(xp.int32)
    e, m = (c >> 3) & 15, c & 7
    mag = xp.where(e == 0, xp.ldexp(m.astype(xp.float32), -9), xp.ldexp((8 + m).astype(xp.float32), e - 10))
    mag = xp.where((c & 127) == 127, xp.float32(xp.nan), mag)
    return xp.where(c >= 128, -mag, mag)
