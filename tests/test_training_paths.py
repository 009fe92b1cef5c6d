"""The paths a training step takes through umx, checked against NumPy: matrix-product gradients in every
operand layout (and the weight gradient's own layout), the gradient of a pick along an axis, and where's
branch-free select on the CPU."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import assert_close

import umx as mx

# (a's shape, b's shape, how each operand is made: "plain", or "T" for the swapaxes(-1, -2) of an array of the
# other shape)
PRODUCTS = [
    ((6, 5), (5, 4), "plain", "T"),  # a Linear layer: x @ w.T
    ((3, 6, 5), (5, 4), "plain", "T"),  # a Linear layer on [batch, length, features]
    ((2, 3, 6, 5), (5, 4), "plain", "plain"),
    ((6, 5), (5, 4), "T", "plain"),  # x.T @ y
    ((3, 6, 5), (3, 5, 4), "T", "T"),  # batched, both transposed (attention's k.T)
    ((1, 6, 5), (3, 5, 4), "plain", "plain"),  # a broadcast against b's batch
    ((3, 6, 5), (1, 5, 4), "plain", "plain"),
    ((6, 5), (3, 5, 4), "plain", "plain"),
    ((5,), (5, 4), "plain", "plain"),
    ((3, 6, 5), (5,), "plain", "plain"),
]


def _operand(rng, shape, how, device):
    """(the operand's values, a function making it from the array passed in, that array's values)."""
    if how == "T":
        base = rng.standard_normal(shape[:-2] + shape[-2:][::-1])
        return base.swapaxes(-1, -2), (lambda x: mx.swapaxes(x, -1, -2, stream=device)), base
    base = rng.standard_normal(shape)
    return base, (lambda x: x), base


def _sum_to(x, shape):
    """``x`` summed over the axes that broadcasting added to ``shape`` or stretched from 1."""
    x = x.sum(axis=tuple(range(x.ndim - len(shape)))) if x.ndim > len(shape) else x
    return x.sum(axis=tuple(i for i, n in enumerate(shape) if n == 1 and x.shape[i] != 1), keepdims=True)


@pytest.mark.parametrize("sa, sb, how_a, how_b", PRODUCTS)
def test_matmul_gradients(device, rng, sa, sb, how_a, how_b):
    a, make_a, a_base = _operand(rng, sa, how_a, device)
    b, make_b, b_base = _operand(rng, sb, how_b, device)
    w = rng.standard_normal(np.matmul(a, b).shape)

    def f(x, y):
        return mx.sum(mx.matmul(make_a(x), make_b(y), stream=device) * mx.array(w, mx.float32))

    ga, gb = mx.grad(f, argnums=(0, 1))(mx.array(a_base, mx.float32), mx.array(b_base, mx.float32))
    # d/da sum(w * (a @ b)) = w @ b^T and d/db = a^T @ w, with vectors as matmul promotes them and the
    # broadcast axes summed
    a2 = a[None] if a.ndim == 1 else a
    b2 = b[:, None] if b.ndim == 1 else b
    w2 = w.reshape(np.matmul(a2, b2).shape)
    want_a = _sum_to(np.matmul(w2, np.swapaxes(b2, -1, -2)), a2.shape).reshape(a.shape)
    want_b = _sum_to(np.matmul(np.swapaxes(a2, -1, -2), w2), b2.shape).reshape(b.shape)
    assert_close(ga, want_a.swapaxes(-1, -2) if how_a == "T" else want_a, rtol=1e-4, atol=1e-4)
    assert_close(gb, want_b.swapaxes(-1, -2) if how_b == "T" else want_b, rtol=1e-4, atol=1e-4)


def test_linear_weight_gradient_is_contiguous(rng):
    """x @ w.T: w's gradient comes out in w's own layout, so an optimizer reads it without striding."""
    x = mx.array(rng.standard_normal((3, 8, 16)), mx.float32)
    w = mx.array(rng.standard_normal((32, 16)), mx.float32)
    g = mx.grad(lambda w: mx.sum(x @ w.T), argnums=0)(w)
    mx.eval(g)
    assert g._data.flags.c_contiguous  # (the CPU's data is a NumPy array)
    assert_close(g, np.broadcast_to(np.array(x).reshape(-1, 16).sum(0), (32, 16)), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("shape, idx_shape, axis", [
    ((6, 10), (6, 1), 1),  # a classifier's targets
    ((6, 10), (6, 1), -1),
    ((4, 5, 6), (4, 1, 6), 1),
    ((4, 5, 6), (1, 5, 1), 2),  # the indices broadcast
    ((6, 10), (6, 3), 1),  # several picks per row (the scatter path)
])
def test_take_along_axis_gradient(device, rng, shape, idx_shape, axis):
    n = shape[axis]
    x = rng.standard_normal(shape)
    idx = rng.integers(-n, n, idx_shape).astype(np.int32)  # negative indices count from the end
    picked = np.take_along_axis(x, idx, axis)
    w = rng.standard_normal(picked.shape)

    def f(a):
        return mx.sum(mx.take_along_axis(a, mx.array(idx), axis=axis, stream=device) * mx.array(w, mx.float32))

    g = mx.grad(f)(mx.array(x, mx.float32))
    want = np.zeros(shape)
    key = list(np.indices(w.shape, sparse=True))
    key[axis] = np.broadcast_to(np.where(idx < 0, idx + n, idx), w.shape)
    np.add.at(want, tuple(key), w)
    assert_close(g, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [mx.float32, mx.float16, mx.bfloat16, mx.int32, mx.int8, mx.uint64, mx.bool_])
@pytest.mark.parametrize("shapes", [
    ((64, 128), (64, 128), ()),
    ((64, 128), (), (64, 128)),
    ((64, 1), (64, 128), (128,)),
    ((1, 128), (64, 1), (64, 128)),
])
def test_where_selects_exact_values(device, rng, dtype, shapes):
    """Large masks without a pattern (the CPU's branch-free select): the very values numpy.where picks, NaNs and
    signed zeros included."""
    cs, xs, ys = shapes
    c = rng.random(cs) > 0.5
    x = (rng.standard_normal(xs) * 100).astype(np.float32)
    y = (rng.standard_normal(ys) * 100).astype(np.float32)
    if dtype in (mx.float32, mx.float16) and x.ndim:
        x.flat[:3] = [np.nan, -0.0, np.inf]
    xa, ya = mx.array(x).astype(dtype), mx.array(y).astype(dtype)
    got = mx.where(mx.array(c), xa, ya, stream=device)
    want = np.where(c, np.array(xa), np.array(ya))
    assert got.dtype == dtype
    np.testing.assert_array_equal(np.array(got), want)


def test_where_zero_branch_keeps_signed_zeros_and_nans(device):
    x = np.full(8192, -0.0, np.float32)
    x[::3] = np.nan
    c = np.arange(8192) % 2 == 0
    got = np.array(mx.where(mx.array(c), mx.array(x), 0.0, stream=device))
    want = np.where(c, x, np.float32(0))
    np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))
