"""Derivative rules: exact at zeros (prod, cumprod), running extrema, permutations, scatters, complex numbers,
integer arrays and functions without a derivative, against NumPy (float64) and torch where it is installed."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import umx as mx
from tests.conftest import assert_close

F64 = mx.float64


def a64(x) -> mx.array:
    return mx.array(np.asarray(x, np.float64), dtype=F64)


def _others(x: np.ndarray, axes: tuple) -> np.ndarray:
    """For each element, the product of the others in its group along ``axes`` (by deleting it: no division)."""
    out = np.empty_like(x)
    moved = np.moveaxis(x, axes, range(x.ndim - len(axes), x.ndim))
    groups = moved.reshape(-1, int(np.prod([x.shape[a] for a in axes], dtype=int)))
    prods = np.array([[np.prod(np.delete(g, j)) for j in range(g.size)] for g in groups])
    np.copyto(np.moveaxis(out, axes, range(x.ndim - len(axes), x.ndim)), prods.reshape(moved.shape))
    return out


@pytest.mark.parametrize("values", [[2.0, 0.0, 3.0], [2.0, 0.0, 0.0], [0.0, 0.0, 0.0], [1.5, -2.0, 3.0]])
def test_prod_grad_is_exact_at_zeros(on, values):
    x = a64(values)
    g = mx.grad(lambda a: mx.prod(a))(x)
    assert_close(g, _others(np.array(values), (0,)), rtol=0, atol=0)
    assert not np.isnan(np.asarray(g)).any()
    _, (t,) = mx.jvp(lambda a: mx.prod(a), [x], [a64([1.0, 2.0, 3.0])])
    assert_close(t, np.dot(_others(np.array(values), (0,)), [1, 2, 3]), rtol=1e-12)


@pytest.mark.parametrize("axes,keepdims", [((1,), False), ((0, 2), True), ((0, 1, 2), False), ((2,), True)])
def test_prod_grad_axes_with_zeros(on, rng, axes, keepdims):
    x = rng.integers(-2, 3, (3, 4, 2)).astype(np.float64)  # plenty of zeros, some groups with two
    c = rng.standard_normal(np.prod(x, axis=axes, keepdims=keepdims).shape)
    _, (v,) = mx.vjp(lambda a: mx.prod(a, axis=axes, keepdims=keepdims), [a64(x)], [a64(c)])
    assert_close(v, _others(x, axes) * (c if keepdims else np.expand_dims(c, axes)), rtol=1e-12, atol=0)


def _cumprod_jacobian(x: np.ndarray, reverse: bool, inclusive: bool) -> np.ndarray:
    """``J[i, j] = d y_i / d x_j`` of a 1-d running product, by deleting ``x_j`` from each window."""
    n = x.size
    jac = np.zeros((n, n))
    for i in range(n):
        window = list(range(i, n) if reverse else range(0, i + 1))
        if not inclusive:
            window.remove(i)
        for j in window:
            jac[i, j] = np.prod([x[k] for k in window if k != j])
    return jac


@pytest.mark.parametrize("reverse,inclusive", list(itertools.product([False, True], [True, False])))
@pytest.mark.parametrize("values", [[2.0, 1.0, 2.0, 2.0, 3.0], [2.0, 0.0, 2.0, 2.0, 3.0], [2.0, 0.0, 2.0, 0.0, 3.0],
                                    [0.0, 0.0, -1.5, 0.5, 0.0, 4.0, 1.0]])
def test_cumprod_grad_is_exact_at_zeros(on, rng, values, reverse, inclusive):
    x = np.array(values)
    jac = _cumprod_jacobian(x, reverse, inclusive)
    c, t = rng.standard_normal(x.size), rng.standard_normal(x.size)

    def f(a):
        return mx.cumprod(a, reverse=reverse, inclusive=inclusive)

    _, (v,) = mx.vjp(f, [a64(x)], [a64(c)])
    assert_close(v, jac.T @ c, rtol=1e-12, atol=1e-12)
    _, (j,) = mx.jvp(f, [a64(x)], [a64(t)])
    assert_close(j, jac @ t, rtol=1e-12, atol=1e-12)
    assert_close(mx.grad(lambda a: f(a).sum())(a64(x)), jac.sum(0), rtol=1e-12, atol=1e-12)


def _logcumsumexp_jacobian(x: np.ndarray, reverse: bool) -> np.ndarray:
    """d y_i / d x_j = exp(x_j - y_i) over the scan's window, in float64."""
    x = x.astype(np.float64)
    order = np.arange(x.size)[::-1] if reverse else np.arange(x.size)
    y = np.empty_like(x)
    y[order] = np.logaddexp.accumulate(x[order])
    jac = np.zeros((x.size, x.size))
    for k, i in enumerate(order):
        for j in order[:k + 1]:
            jac[i, j] = np.exp(x[j] - y[i])
    return jac


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("dtype,offset", [(np.float32, 100.0), (np.float32, -100.0), (np.float16, 8.0),
                                          (np.float32, 0.0)])
def test_logcumsumexp_rules_do_not_overflow(on, rng, reverse, dtype, offset):
    # exp(x) overflows float32 from 89 and float16 from 11: the rules must use differences only
    x = (rng.standard_normal(9) * 3 + offset).astype(dtype)
    t, c = rng.standard_normal(9).astype(dtype), rng.standard_normal(9).astype(dtype)
    jac = _logcumsumexp_jacobian(x, reverse)
    tol = 2e-2 if dtype == np.float16 else 1e-4

    def f(a):
        return mx.logcumsumexp(a, reverse=reverse)

    _, (j,) = mx.jvp(f, [mx.array(x)], [mx.array(t)])
    np.testing.assert_allclose(np.asarray(j).astype(np.float64), jac @ t.astype(np.float64), rtol=tol, atol=tol)
    _, (v,) = mx.vjp(f, [mx.array(x)], [mx.array(c)])
    np.testing.assert_allclose(np.asarray(v).astype(np.float64), jac.T @ c.astype(np.float64), rtol=tol, atol=tol)


def test_cumprod_on_an_axis_and_second_order(on, rng):
    x = rng.integers(-2, 3, (3, 6)).astype(np.float64)
    c = rng.standard_normal(x.shape)
    _, (v,) = mx.vjp(lambda a: mx.cumprod(a, axis=1, reverse=True), [a64(x)], [a64(c)])
    want = np.stack([_cumprod_jacobian(r, True, True).T @ cr for r, cr in zip(x, c)])
    assert_close(v, want, rtol=1e-12, atol=1e-12)
    # Hessian-vector products against central differences of the gradient (away from zeros: smooth there)
    y = rng.uniform(0.5, 1.5, (7,))
    w = rng.standard_normal(7)

    def f(a):
        return (mx.cumprod(a) * a64(w)).sum()

    def grad_f(a):
        return np.asarray(mx.grad(f)(a64(a)))

    hv = mx.grad(lambda a: (mx.grad(f)(a) * a64(w)).sum())(a64(y))
    h = 1e-6
    assert_close(hv, (grad_f(y + h * w) - grad_f(y - h * w)) / (2 * h), rtol=1e-5, atol=1e-7)


def test_cummax_cummin_route_ties_as_mlx(on):
    a = mx.array([3.0, 3.0, 1.0, 5.0, 5.0])
    cases = [
        (mx.cummax, {}, [1, 2, 0, 1, 1]), (mx.cummax, {"inclusive": False}, [1, 2, 0, 1, 0]),
        (mx.cummax, {"reverse": True}, [0, 0, 0, 4, 1]),
        (mx.cummax, {"reverse": True, "inclusive": False}, [0, 0, 0, 3, 1]),
        (mx.cummin, {}, [1, 1, 3, 0, 0]), (mx.cummin, {"inclusive": False}, [1, 1, 2, 0, 0]),
        (mx.cummin, {"reverse": True}, [0, 0, 3, 1, 1]),
    ]
    for op, kw, want in cases:
        assert mx.grad(lambda y, op=op, kw=kw: op(y, **kw).sum())(a).tolist() == want, (op, kw)
    m = mx.array([[1.0, 3.0, 3.0], [4.0, 2.0, 4.0]])
    assert mx.grad(lambda y: mx.cummax(y, axis=1).sum())(m).tolist() == [[1, 1, 1], [2, 0, 1]]
    assert mx.grad(lambda y: mx.cummin(y, axis=0).sum())(m).tolist() == [[2, 1, 2], [0, 1, 0]]
    _, (t,) = mx.jvp(lambda y: mx.cummax(y), [a], [mx.array([1.0, 2.0, 3.0, 4.0, 5.0])])
    assert t.tolist() == [1, 2, 2, 4, 5]


def test_cummax_cummin_against_torch(on, rng):
    torch = pytest.importorskip("torch")
    for shape, axis, op, reverse, inclusive in itertools.product([(8,), (3, 5)], [0, -1], ["max", "min"],
                                                                 [False, True], [True, False]):
        x = rng.integers(0, 4, shape).astype(np.float64)  # ties everywhere
        c = rng.standard_normal(shape)
        scan_mx = getattr(mx, "cum" + op)
        _, (got,) = mx.vjp(lambda z, f=scan_mx, kw={"axis": axis, "reverse": reverse, "inclusive": inclusive}:
                           f(z, **kw), [a64(x)], [a64(c)])
        xt = torch.tensor(x, requires_grad=True)
        flipped = torch.flip(xt, [axis]) if reverse else xt
        scan = (torch.cummax if op == "max" else torch.cummin)(flipped, axis).values
        if not inclusive:
            n = scan.shape[axis]
            scan = torch.cat([torch.zeros_like(scan.narrow(axis, 0, 1)), scan.narrow(axis, 0, n - 1)], dim=axis)
        scan = torch.flip(scan, [axis]) if reverse else scan
        (scan * torch.tensor(c)).sum().backward()
        assert_close(got, xt.grad.numpy(), rtol=1e-12, atol=1e-12)


def test_permutations_sort_partition_topk(on, rng):
    a = mx.array([[1, 2, 6, 4, 5], [9, 5, 6, 7, 8]], mx.float32)
    cot = rng.standard_normal((2, 2)).astype(np.float32)  # (random: each value must reach its own place)
    out = np.asarray(mx.vjp(lambda x: mx.topk(x, 2), (a,), (mx.array(cot),))[1][0])
    top = np.asarray(mx.topk(a, 2))
    want = np.zeros((2, 5), np.float32)
    for r in range(2):
        for j in range(2):  # the place in a of the j-th value topk returns
            want[r, int(np.flatnonzero(np.asarray(a)[r] == top[r, j])[0])] = cot[r, j]
    assert (out != 0).tolist() == [[0, 0, 1, 0, 1], [1, 0, 0, 0, 1]]
    np.testing.assert_array_equal(out, want)
    x = mx.array([3.0, 1.0, 2.0, 5.0, 4.0])
    cot = mx.array([10.0, 20.0, 30.0, 40.0, 50.0])
    assert mx.vjp(mx.sort, (x,), (cot,))[1][0].tolist() == [30, 10, 20, 50, 40]
    assert mx.vjp(lambda z: mx.partition(z, 2), (x,), (cot,))[1][0].tolist() == [30, 10, 20, 50, 40]

    def hvp(f, x, v):
        return mx.grad(lambda a: mx.sum(mx.grad(f)(a) * v))(x)

    x, v = a64([3.0, 1.0, 2.0, 5.0]), a64([1.0, -2.0, 0.5, 1.5])
    for fn in (mx.sort, lambda z: mx.partition(z, 2), lambda z: mx.topk(z, 2), lambda z: mx.cummax(z),
               lambda z: mx.cummin(z, reverse=True, inclusive=False)):
        f = lambda z, fn=fn: mx.sum(fn(z) ** 2)  # noqa: E731
        num = (np.asarray(mx.grad(f)(x + 1e-4 * v)) - np.asarray(mx.grad(f)(x - 1e-4 * v))) / 2e-4
        assert_close(hvp(f, x, v), num, rtol=1e-6, atol=1e-6)


def test_indices_need_stop_gradient(on):
    x, idx, upd = mx.array([1.0, 2.0, 3.0, 4.0]), mx.array([1, 3]), mx.array([5.0, 6.0])
    for fun, args, cot in [(lambda x, i: mx.take(x, i), [x, idx], mx.ones((2,))),
                           (lambda x, i, u: x.at[i].add(u), [x, idx, upd], mx.ones((4,))),
                           (lambda x, i: mx.take_along_axis(x, i, axis=0), [x[:, None], idx[:, None]],
                            mx.ones((2, 1)))]:
        with pytest.raises(ValueError, match="stop_gradient"):
            mx.vjp(fun, args, [cot])
    g = mx.grad(lambda w: mx.take(w, mx.stop_gradient(mx.argsort(w)[:2])).sum())(mx.array([4.0, 3.0, 2.0, 1.0]))
    assert g.tolist() == [0, 0, 1, 1]


def test_scatter_extrema_multiply_and_slice_updates(on):
    src, cot = mx.array([1.0, 2.0, 3.0, 4.0]), mx.array([4.0, 5.0, 6.0, 7.0])
    idx = mx.array([1, 3])
    for op, upd, want_src, want_upd in [("maximum", [1.0, 2.0], [4, 5, 6, 7], [0, 0]),
                                        ("maximum", [5.0, 6.0], [4, 0, 6, 0], [5, 7]),
                                        ("minimum", [5.0, 6.0], [4, 5, 6, 7], [0, 0]),
                                        ("minimum", [1.0, 1.0], [4, 0, 6, 0], [5, 7]),
                                        ("multiply", [2.0, 3.0], [4, 10, 6, 21], [10, 28]),
                                        ("subtract", [2.0, 3.0], [4, 5, 6, 7], [-5, -7])]:
        _, (ds, du) = mx.vjp(lambda s, u, op=op: getattr(s.at[idx], op)(u), [src, mx.array(upd)], [cot])
        assert ds.tolist() == want_src and du.tolist() == want_upd, op
    # slice updates whose values have a leading 1 (as MLX and NumPy allow)
    _, (ds, du) = mx.vjp(lambda s, u: s.at[1:3].multiply(u), [src, mx.array([[2.0, 3.0]])], [cot])
    assert ds.tolist() == [4, 10, 18, 7] and du.tolist() == [[10, 18]]
    _, (ds, du) = mx.vjp(lambda s, u: s.at[1:3].maximum(u), [src, mx.array([[5.0, 6.0]])], [cot])
    assert ds.tolist() == [4, 0, 0, 7] and du.tolist() == [[5, 6]]
    with pytest.raises(ValueError, match="shape"):
        src.at[1:3].add(mx.ones((2, 2)))


def test_complex_vjps_conjugate(on, rng):
    z = (rng.standard_normal((3, 4)) + 1j * rng.standard_normal((3, 4))).astype(np.complex64)
    c = (rng.standard_normal((3, 4)) + 1j * rng.standard_normal((3, 4))).astype(np.complex64)
    zm, cm = mx.array(z), mx.array(c)
    for fn, deriv in [(mx.exp, np.exp), (mx.sin, np.cos), (mx.square, lambda v: 2 * v),
                      (mx.log, lambda v: 1 / v), (mx.tanh, lambda v: 1 - np.tanh(v) ** 2)]:
        _, (v,) = mx.vjp(fn, [zm], [cm])
        assert_close(v, c * np.conj(deriv(z.astype(np.complex128))), rtol=1e-4, atol=1e-5)
    _, (v,) = mx.vjp(lambda a: a.prod(axis=0), [zm[:2]], [cm[0]])
    assert_close(v, np.stack([np.conj(z[1]) * c[0], np.conj(z[0]) * c[0]]), rtol=1e-5, atol=1e-6)
    _, (v,) = mx.vjp(mx.abs, [zm], [mx.real(cm)])
    assert_close(v, c.real * z / np.abs(z), rtol=1e-5, atol=1e-6)
    _, (t,) = mx.jvp(mx.abs, [zm], [cm])
    assert t.dtype == mx.float32
    assert_close(t, (np.conj(z) * c).real / np.abs(z), rtol=1e-4, atol=1e-5)
    assert_close(mx.grad(lambda a: (2.0 * mx.real(a)).sum())(zm), np.full(z.shape, 2 + 0j))
    assert_close(mx.grad(lambda a: (2.0 * mx.imag(a)).sum())(zm), np.full(z.shape, 2j))
    samples = np.asarray(mx.random.normal((20000,), dtype=mx.complex64))
    assert samples.dtype == np.complex64 and abs(samples.real.var() - 0.5) < 0.05


def test_integer_arrays_and_named_trees(on):
    from typing import NamedTuple

    class State(NamedTuple):
        a: mx.array
        b: mx.array

    class Vector(tuple):
        pass

    g = mx.grad(lambda s: (s.a + 10).sum() + (s.b * 10).sum())(State(mx.array([1, 2]), mx.array([3, 4])))
    assert isinstance(g, State) and g.a.tolist() == [1, 1] and g.b.tolist() == [10, 10]
    assert g.a.dtype == mx.int32
    g = mx.grad(lambda v: (v[0] * v[1]).sum())(Vector([mx.array([2, 3]), mx.array([4, 5])]))
    assert isinstance(g, Vector) and g[0].tolist() == [4, 5]
    # float -> int -> float: the gradient flows through the casts, as in MLX
    assert mx.grad(lambda x: (x.astype(mx.int32) * 3).sum().astype(mx.float32))(mx.array([1.0, 2.0])).tolist() == [3, 3]
    _, (t,) = mx.jvp(mx.prod, [mx.arange(4)], [mx.array([3, 2, 1, 0])])
    assert t.item() == 18


def test_functions_without_a_derivative_and_partial_tangents(on):
    x, t = mx.array([1.0, -2.0, 3.0]), mx.ones(3)
    for op in (mx.greater, mx.less, mx.equal, mx.not_equal):
        _, (d,) = mx.jvp(lambda a, op=op: op(a, 0.0), [x], [t])
        assert d.dtype == mx.float32 and d.tolist() == [0, 0, 0]
    _, (d,) = mx.jvp(lambda c: mx.where(c > 0, 2.0, 3.0), [mx.array(1.0)], [mx.array(1.0)])
    assert d.item() == 0 and d.dtype == mx.float32
    _, (d,) = mx.jvp(lambda y: mx.arctan2(y, mx.array(2.0)), [mx.array(1.0)], [mx.array(1.0)])
    assert abs(d.item() - 0.4) < 1e-6
    _, (dq, dr) = mx.jvp(lambda a: mx.divmod(a, mx.array(3.0)), [mx.array(7.0)], [mx.array(1.0)])
    assert dq.item() == 0 and dr.item() == 0
    assert mx.grad(lambda a, b: (a - b) ** a)(mx.array(1.0), mx.array(1.0)).item() == 1.0
    assert mx.grad(lambda a: a ** 1.5)(mx.array(0.0)).item() == 0.0


def test_masked_scatter(on):
    def masked_set(src, mask):
        dst = mx.zeros(4)
        dst[mask] = src
        return dst

    mask = mx.array([True, False, True, False])
    assert masked_set(mx.array([1.0, 2.0]), mask).tolist() == [1, 0, 2, 0]
    assert masked_set(mx.array([1.0, 2.0, 3.0]), mask).tolist() == [1, 0, 2, 0]  # extra values unused
    assert masked_set(mx.array(7.0), mask).tolist() == [7, 0, 7, 0]
    _, (d,) = mx.jvp(lambda s: masked_set(s, mask), [mx.ones(2)], [mx.array([2.0, 3.0])])
    assert d.tolist() == [2, 0, 3, 0]
    _, (g,) = mx.vjp(lambda s: masked_set(s, mask), [mx.ones(2)], [mx.array([1.0, 2.0, 3.0, 4.0])])
    assert g.tolist() == [1, 3]
    rows = mx.zeros((2, 3))
    rows[mx.array([False, True])] = mx.array([1.0, 2.0, 3.0])  # a mask of rows
    assert rows.tolist() == [[0, 0, 0], [1, 2, 3]]
    with pytest.raises(ValueError, match="leading axes"):
        rows[mx.array([True, False, True])] = 1.0


def test_rules_of_element_moving_primitives_take_tangents_of_another_dtype(device):
    # A tangent or cotangent whose dtype differs from the primal's reaches primitives that move bfloat16's bits as
    # they are stored: it must be converted first, not read as bits (nor its float32 values stored as bits).
    x = mx.array([0.5, 3.0, -2.0, 8.0])
    x_bf = x.astype(mx.bfloat16)
    t_bf = mx.array([1.0, 2.0, 3.0, 4.0], dtype=mx.bfloat16)
    _, (tr,) = mx.jvp(lambda a: mx.reshape(a, (2, 2), stream=device), [x], [t_bf])
    assert_close(tr, [[1.0, 2.0], [3.0, 4.0]])
    _, (tc,) = mx.jvp(lambda a, b: mx.concatenate([a, b], stream=device), [x, x], [x * 0.5, t_bf])
    assert_close(tc, [0.25, 1.5, -1.0, 4.0, 1.0, 2.0, 3.0, 4.0])
    _, (tl,) = mx.jvp(lambda a: mx.roll(a, 1, stream=device), [x], [t_bf])
    assert_close(tl, [4.0, 1.0, 2.0, 3.0])
    c32 = mx.array([0.5, 3.0])
    _, (g,) = mx.vjp(lambda a: a[1:3], [x_bf], [c32])
    assert g.dtype == mx.bfloat16
    assert_close(g.astype(mx.float32), [0.0, 0.5, 3.0, 0.0])
    _, (gr,) = mx.vjp(lambda a: mx.roll(a, 1, stream=device), [x_bf], [x])
    assert_close(gr.astype(mx.float32), [3.0, -2.0, 8.0, 0.5])
    start = mx.array([1])
    _, (gd,) = mx.vjp(lambda a: mx.slice(a, start, [0], [2], stream=device), [x_bf], [c32])
    assert_close(gd.astype(mx.float32), [0.0, 0.5, 3.0, 0.0])
