"""Matrix products: ``matmul`` and ``@`` with NumPy's rules for 1-d operands and broadcast batch axes."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import assert_close

import umx as mx

CASES = [((3, 4), (4, 5)), ((4,), (4, 2)), ((3, 4), (4,)), ((4,), (4,)), ((2, 3, 4), (4, 5)),
         ((2, 1, 3, 4), (5, 4, 2)), ((1, 4), (3, 4, 1)), ((0, 4), (4, 3)), ((3, 0), (0, 2))]


@pytest.mark.parametrize(("sa", "sb"), CASES, ids=str)
def test_matmul(device, rng, sa, sb):
    x = rng.standard_normal(sa).astype(np.float32)
    y = rng.standard_normal(sb).astype(np.float32)
    ref = x.astype(np.float64) @ y.astype(np.float64)
    out = mx.matmul(mx.array(x), mx.array(y), stream=device)
    assert out.shape == ref.shape and out.dtype == mx.float32
    assert_close(out, ref, rtol=1e-4, atol=1e-5)
    assert_close(mx.array(x) @ mx.array(y), ref, rtol=1e-4, atol=1e-5)


def test_matmul_dtypes(device, rng):
    x = rng.integers(-5, 5, (3, 4)).astype(np.int32)
    y = rng.integers(-5, 5, (4, 2)).astype(np.int32)
    out = mx.matmul(mx.array(x), mx.array(y), stream=device)
    assert out.dtype == mx.int32
    np.testing.assert_array_equal(np.asarray(out), x @ y)
    out = mx.matmul(mx.array(x), mx.array(y.astype(np.float32)), stream=device)
    assert out.dtype == mx.float32
    h = mx.matmul(mx.array(x, dtype=mx.float16), mx.array(y, dtype=mx.float16), stream=device)
    assert h.dtype == mx.float16
    assert_close(h, x @ y)
    assert_close(mx.array(x.astype(np.float32)) @ np.ones((4, 1), np.float32), x.sum(1, keepdims=True))


@pytest.mark.parametrize(("sa", "sb"), [((5, 64), (64, 3)), ((2, 3, 64), (64, 4)), ((2, 1, 3, 64), (5, 64, 2))],
                         ids=str)
def test_float16_products_accumulate_in_float32_and_round_once(device, rng, sa, sb):
    x = rng.standard_normal(sa).astype(np.float16)
    y = rng.standard_normal(sb).astype(np.float16)
    out = mx.matmul(mx.array(x), mx.array(y), stream=device)
    ref = (x.astype(np.float64) @ y.astype(np.float64)).astype(np.float16)
    # within one float16 rounding of the exact product (a float16 accumulator would be far off at K = 64)
    assert_close(out, ref.astype(np.float64), rtol=2e-3, atol=2e-3, dtype=mx.float16)


def _laid_out(x, order):
    """``x``'s values in memory laid out in axis order ``order`` (a view of a C-ordered permutation)."""
    back = tuple(int(i) for i in np.argsort(order))
    return mx.transpose(mx.contiguous(mx.transpose(x, order)), back)


_VIEWS = {  # name -> (a view of a umx operand, the same view's values in NumPy)
    "as is": (lambda x: x, lambda x: x),
    "transposed batch": (lambda x: _laid_out(x, (0, 1, 3, 2)), lambda x: x),
    "head split": (lambda x: _laid_out(x, (0, 2, 1, 3)), lambda x: x),
    "reversed batch": (lambda x: x[::-1], lambda x: x[::-1]),
    "every other row": (lambda x: mx.concatenate([x, x], axis=-2)[..., ::2, :],
                        lambda x: np.concatenate([x, x], axis=-2)[..., ::2, :]),
    "broadcast batch": (lambda x: mx.broadcast_to(x[:1], x.shape), lambda x: np.broadcast_to(x[:1], x.shape)),
    "batch of a slice": (lambda x: mx.concatenate([x, x], axis=1)[:, 1:x.shape[1] + 1],
                         lambda x: np.concatenate([x, x], axis=1)[:, 1:x.shape[1] + 1]),
}


@pytest.mark.parametrize("view", sorted(_VIEWS))
@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_products_of_strided_batches(device, rng, view, dtype):
    # (B, H, L, D) @ (B, H, D, L) and its transposes, each operand viewed in turn
    x = rng.standard_normal((2, 3, 5, 8)).astype(np.float32)
    y = rng.standard_normal((2, 3, 8, 4)).astype(np.float32)
    t = getattr(mx, dtype)
    rounded = [np.asarray(mx.array(v).astype(t).astype(mx.float32)).astype(np.float64) for v in (x, y)]
    view_of, np_view_of = _VIEWS[view]
    tol = {"float32": 1e-5, "float16": 2e-3, "bfloat16": 1e-2}[dtype]
    for first in (True, False):
        a, b = (mx.array(x).astype(t), mx.array(y).astype(t))
        ra, rb = rounded
        if first:
            a, ra = view_of(a), np_view_of(ra)
        else:
            b, rb = view_of(b), np_view_of(rb)
        out = mx.matmul(a, b, stream=device)
        assert out.dtype == t
        assert_close(out, ra @ rb, rtol=tol, atol=tol)
        # a transposed operand's product: (b.T @ a.T).T
        out = mx.swapaxes(mx.matmul(mx.swapaxes(b, -1, -2), mx.swapaxes(a, -1, -2), stream=device), -1, -2)
        assert_close(out, ra @ rb, rtol=tol, atol=tol)


def test_matmul_errors(device):
    with pytest.raises(ValueError, match=r"matmul.*\(3, 4\).*\(5, 2\)"):
        mx.matmul(mx.zeros((3, 4)), mx.zeros((5, 2)), stream=device)
    with pytest.raises(ValueError, match="matmul"):
        mx.matmul(mx.array(1.0), mx.zeros((1,)), stream=device)
    with pytest.raises(ValueError, match="matmul"):
        mx.matmul(mx.zeros((2, 3, 4)), mx.zeros((3, 4, 2)), stream=device)
