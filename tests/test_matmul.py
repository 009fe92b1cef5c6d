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


# -- transposed operands read through (Matmul's ta/tb) -------------------------------------------------------------

READ_THROUGH = [((3, 4), (5, 4), False, True), ((4, 3), (4, 5), True, False), ((4, 3), (5, 4), True, True),
                ((2, 6, 4), (5, 4), False, True), ((2, 4, 6), (2, 5, 4), True, True), ((2, 1, 4, 3), (3, 5, 4),
                                                                                        True, True)]


def _operand(h, transposed: bool):
    x = mx.array(h) * 1.0  # (not yet computed: a view of host data is made at once, with no node)
    return mx.swapaxes(x, -1, -2) if transposed else x


@pytest.mark.parametrize(("sa", "sb", "ta", "tb"), READ_THROUGH, ids=str)
def test_a_transposed_operand_is_read_through_with_the_same_values_and_gradients(device, rng, sa, sb, ta, tb):
    """``x @ w.T`` is one Matmul node that reads ``w`` (no transpose node), and its value and both gradients
    (against NumPy's formulas in float64) are those of the product of the transposed arrays."""
    ha = rng.standard_normal(sa).astype(np.float32)
    hb = rng.standard_normal(sb).astype(np.float32)
    a, b = mx.array(ha), mx.array(hb)
    prod = _operand(ha, ta) @ _operand(hb, tb)
    assert (prod._prim.ta, prod._prim.tb) == (ta, tb)
    assert all(x._prim.__class__.__name__ == "Multiply" for x in prod._inputs)  # (what the transposes read)
    big_a = np.swapaxes(ha, -1, -2).astype(np.float64) if ta else ha.astype(np.float64)
    big_b = np.swapaxes(hb, -1, -2).astype(np.float64) if tb else hb.astype(np.float64)
    ref = big_a @ big_b
    r = rng.standard_normal(ref.shape)
    with mx.stream(device):
        assert_close(_operand(ha, ta) @ _operand(hb, tb), ref, rtol=1e-4, atol=1e-4)

        def loss(a, b):
            a, b = a * 1.0, b * 1.0  # (nodes: their transposes are read through)
            pa = mx.swapaxes(a, -1, -2) if ta else a
            pb = mx.swapaxes(b, -1, -2) if tb else b
            return mx.sum((pa @ pb) * mx.array(r.astype(np.float32)))

        ga, gb = mx.grad(loss, argnums=(0, 1))(a, b)
        # d(sum(r * (A @ B)))/dA = r @ B^T, summed over A's broadcast batch axes; then as the operand lies
        dA = r @ np.swapaxes(big_b, -1, -2)
        dB = np.swapaxes(big_a, -1, -2) @ r
        dA = dA.sum(axis=tuple(range(dA.ndim - big_a.ndim))).reshape(
            np.broadcast_shapes(dA.shape[dA.ndim - big_a.ndim:], big_a.shape)) if dA.ndim > big_a.ndim else dA
        dB = dB.sum(axis=tuple(range(dB.ndim - big_b.ndim))) if dB.ndim > big_b.ndim else dB
        dA = dA.sum(axis=tuple(i for i, s in enumerate(big_a.shape) if s == 1 and dA.shape[i] != 1), keepdims=True)
        dB = dB.sum(axis=tuple(i for i, s in enumerate(big_b.shape) if s == 1 and dB.shape[i] != 1), keepdims=True)
        assert_close(ga, np.swapaxes(dA, -1, -2) if ta else dA, rtol=1e-4, atol=1e-4)
        assert_close(gb, np.swapaxes(dB, -1, -2) if tb else dB, rtol=1e-4, atol=1e-4)
        # forward mode and vmap over a leading axis agree with the same product
        _, tangent = mx.jvp(lambda a, b: (mx.swapaxes(a, -1, -2) if ta else a) @ (mx.swapaxes(b, -1, -2) if tb
                                                                                   else b), [a, b], [a, b])
        assert_close(tangent[0], 2 * ref, rtol=1e-4, atol=1e-4)
        stacked = mx.vmap(lambda a: (mx.swapaxes(a, -1, -2) if ta else a) @ (mx.swapaxes(b, -1, -2) if tb else b))(
            mx.stack([a, a * 2]))
        assert_close(stacked, np.stack([ref, 2 * ref]), rtol=1e-4, atol=1e-4)


def test_a_linear_layers_weight_gradient_needs_no_transpose_task(rng):
    """A Linear layer's step (``x @ w.T`` and its gradients) plans no transpose: the forward reads the weight
    through, the backward's products read theirs through too, and the weight's gradient has its layout."""
    w = mx.array(rng.standard_normal((6, 4)).astype(np.float32))
    x = mx.array(rng.standard_normal((2, 3, 4)).astype(np.float32))
    g = mx.grad(lambda w: mx.sum(mx.tanh(x @ w.T)))(w)
    from umx.runtime import scheduler
    from umx.runtime.fusion import collect
    from umx.runtime.node import PLANNING

    with scheduler._plan_lock:
        order = collect([g], PLANNING, True)
        scheduler._unmark([g], PLANNING)
    assert not any(getattr(t, "_prim", None).__class__.__name__ == "Transpose" for t in order)
    del order
    ref = (1 - np.tanh(np.asarray(x, np.float64) @ np.asarray(w, np.float64).T) ** 2)
    assert_close(g, ref.reshape(-1, 6).T @ np.asarray(x, np.float64).reshape(-1, 4), rtol=1e-4, atol=1e-5)
