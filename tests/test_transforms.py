"""Function transforms: gradients against finite differences, vjp/jvp consistency, trees, vmap, compile."""

from __future__ import annotations

import sys

import numpy as np
import pytest

import umx as mx
from tests.conftest import assert_close
from umx.runtime import scheduler

F64 = mx.float64


def a64(x) -> mx.array:
    return mx.array(np.asarray(x, np.float64), dtype=F64)


def _inner(xs, ys) -> float:
    return float(sum(np.sum(np.asarray(x, np.float64) * np.asarray(y, np.float64)) for x, y in zip(xs, ys)))


def check(f, *xs, rng, rtol=1e-6, atol=1e-8, jvp=True):
    """Gradients of ``sum(f(*xs) * w)`` (vjp) and ``<w, jvp(f)(v)>`` against central differences along v."""
    args = [a64(x) for x in xs]
    out = f(*args)
    w = a64(rng.standard_normal(out.shape))
    vs = [rng.standard_normal(np.shape(x)) for x in xs]
    h = 1e-6

    def g(*a):
        return mx.sum(f(*a) * w)

    plus = g(*(a64(x + h * v) for x, v in zip(xs, vs))).item()
    minus = g(*(a64(x - h * v) for x, v in zip(xs, vs))).item()
    fd = (plus - minus) / (2 * h)
    grads = mx.grad(g, argnums=tuple(range(len(xs))))(*args)
    grads = grads if isinstance(grads, tuple) else (grads,)
    for gr, x in zip(grads, xs):
        assert gr.shape == np.shape(x)
    np.testing.assert_allclose(_inner(grads, vs), fd, rtol=rtol, atol=atol)
    if jvp:
        _, ts = mx.jvp(f, args, [a64(v) for v in vs])
        np.testing.assert_allclose(_inner(ts, [w]), fd, rtol=rtol, atol=atol)


# (op, low, high): sample points in a range away from singularities and kinks
UNARY = [
    ("abs", 0.5, 2), ("negative", -2, 2), ("square", -2, 2), ("exp", -2, 2), ("expm1", -2, 2),
    ("log", 0.5, 2), ("log2", 0.5, 2), ("log10", 0.5, 2), ("log1p", -0.5, 2), ("sqrt", 0.5, 2),
    ("rsqrt", 0.5, 2),
    ("reciprocal", 0.5, 2), ("sin", -2, 2), ("cos", -2, 2), ("tan", -1, 1), ("arcsin", -0.8, 0.8),
    ("arccos", -0.8, 0.8), ("arctan", -2, 2), ("sinh", -2, 2), ("cosh", -2, 2), ("tanh", -2, 2),
    ("arcsinh", -2, 2), ("arccosh", 1.5, 3), ("arctanh", -0.8, 0.8), ("degrees", -2, 2), ("radians", -2, 2),
    ("sigmoid", -2, 2), ("erf", -2, 2), ("erfinv", -0.8, 0.8), ("floor", 0.1, 0.9), ("ceil", 0.1, 0.9),
    ("trunc", 0.1, 0.9), ("sign", 0.5, 2), ("round", 0.1, 0.4), ("conjugate", -2, 2),
]


@pytest.mark.parametrize("name,lo,hi", UNARY, ids=[u[0] for u in UNARY])
def test_unary_grad(on, rng, name, lo, hi):
    fn = getattr(mx, name)
    x = rng.uniform(lo, hi, (7,))
    # Elementwise: the gradient of sum(f(x)) is f'(x) at each point; compare with float64 central differences.
    h = 1e-6
    fd = (np.asarray(fn(a64(x + h))) - np.asarray(fn(a64(x - h)))) / (2 * h)
    g64 = mx.grad(lambda a: fn(a).sum())(a64(x))
    assert g64.dtype == F64
    assert_close(g64, fd, rtol=1e-6, atol=1e-7)
    g32 = mx.grad(lambda a: fn(a).sum())(mx.array(x.astype(np.float32)))
    assert g32.dtype == mx.float32
    assert_close(g32, fd, rtol=2e-3, atol=2e-3)
    _, (t,) = mx.jvp(fn, [a64(x)], [a64(np.ones_like(x))])
    assert_close(t, fd, rtol=1e-6, atol=1e-7)


BINARY = [
    ("add", -2, 2), ("subtract", -2, 2), ("multiply", -2, 2), ("divide", 0.5, 2), ("power", 0.5, 2),
    ("maximum", -2, 2), ("minimum", -2, 2), ("arctan2", 0.5, 2), ("logaddexp", -2, 2),
    ("remainder", 2.1, 2.9), ("floor_divide", 2.1, 2.9),
]


@pytest.mark.parametrize("name,lo,hi", BINARY, ids=[b[0] for b in BINARY])
@pytest.mark.parametrize("shapes", [((3, 4), (3, 4)), ((3, 1, 4), (5, 4)), ((), (2, 3))],
                         ids=["same", "bcast", "0d"])
def test_binary_grad(on, rng, name, lo, hi, shapes):
    fn = getattr(mx, name)
    sa, sb = shapes
    a = rng.uniform(lo, hi, sa)
    b = rng.uniform(lo, hi, sb) if name not in ("remainder", "floor_divide") else rng.uniform(0.9, 1.0, sb)
    check(fn, a, b, rng=rng, rtol=1e-5, atol=1e-7)


def test_float32_binary_and_scalars(on, rng):
    x = rng.uniform(0.5, 2, (4,)).astype(np.float32)
    g = mx.grad(lambda a: (3.0 * a * a + 2.0 / a).sum())(mx.array(x))
    assert g.dtype == mx.float32
    assert_close(g, 6 * x - 2 / x.astype(np.float64) ** 2, rtol=1e-5)


@pytest.mark.parametrize("name", ["sum", "mean", "max", "min", "prod", "logsumexp", "var", "std"])
@pytest.mark.parametrize("axis,keepdims", [(None, False), (1, False), ((0, 2), True), (-1, True)])
def test_reduction_grad(on, rng, name, axis, keepdims):
    fn = getattr(mx, name)
    x = rng.uniform(0.5, 1.5, (3, 4, 2))
    check(lambda a: fn(a, axis=axis, keepdims=keepdims), x, rng=rng, rtol=1e-5)


def test_softmax_and_max_ties(on, rng):
    check(lambda a: mx.softmax(a, axis=-1), rng.standard_normal((3, 5)), rng=rng)
    check(lambda a: mx.softmax(a, axis=(0, 1)), rng.standard_normal((3, 5)), rng=rng)
    g = mx.grad(lambda a: mx.max(a))(mx.array([1.0, 3.0, 3.0]))
    assert_close(g, [0, 0.5, 0.5])


def test_shape_ops_grad(on, rng):
    x = rng.standard_normal((2, 3, 4))
    check(lambda a: mx.reshape(a, (6, 4)), x, rng=rng)
    check(lambda a: mx.transpose(a, (2, 0, 1)), x, rng=rng)
    check(lambda a: mx.swapaxes(a, 0, -1) * 2, x, rng=rng)
    check(lambda a: mx.broadcast_to(a[:, :1], (5, 2, 3, 4)), x, rng=rng)
    check(lambda a, b: mx.concatenate([a, b, a], axis=1), x, rng.standard_normal((2, 2, 4)), rng=rng)
    check(lambda a, b: mx.stack([a, b], axis=-1), x, rng.standard_normal((2, 3, 4)), rng=rng)
    check(lambda a: mx.split(a, [1, 3], axis=2)[1] * mx.split(a, [1, 3], axis=2)[2][..., :2], x, rng=rng)
    check(lambda a: mx.squeeze(mx.expand_dims(a, 1), 1), x, rng=rng)
    check(lambda a: mx.flatten(a, 1), x, rng=rng)
    g = mx.grad(lambda a: (a.astype(mx.float32) * 2).sum())(a64(x))
    assert g.dtype == F64
    assert_close(g, np.full(x.shape, 2.0))
    check(lambda a: mx.contiguous(a) + mx.stop_gradient(a) * 0, x, rng=rng)


def test_layout_ops_grad(on, rng):
    x = rng.standard_normal((3, 4))
    check(lambda a: mx.pad(a, ((1, 2), (0, 1))), x, rng=rng)
    check(lambda a: mx.tile(a, (2, 1, 3)), x, rng=rng)
    check(lambda a: mx.repeat(a, 3, axis=1), x, rng=rng)
    check(lambda a: mx.roll(a, 2, axis=1), x, rng=rng)
    check(lambda a: mx.flip(a, axis=0), x, rng=rng)
    check(lambda a: mx.tril(a) + mx.triu(a, 1) * 3, x, rng=rng)
    check(lambda a: mx.diagonal(a, offset=1), x, rng=rng)
    check(lambda a: mx.diag(a[0]), x, rng=rng)
    check(lambda a: mx.cumsum(a, axis=1) + mx.cumsum(a, axis=0, reverse=True, inclusive=False), x, rng=rng)
    check(lambda a: mx.cumprod(a, axis=1) + mx.logcumsumexp(a, axis=0, reverse=True), x, rng=rng)
    idx = mx.array(rng.integers(0, 4, (3, 2)))
    check(lambda a: mx.take_along_axis(a, idx, axis=1), x, rng=rng)
    check(lambda a: mx.sort(a, axis=0) * mx.sort(a, axis=None)[:4], x, rng=rng)
    check(lambda a: mx.take_along_axis(a[:1], idx, axis=1), x, rng=rng)  # a broadcast along axis 0
    rows = mx.array([[0], [2], [1]])
    check(lambda a, v: mx.put_along_axis(a, rows, v, axis=1), x, rng.standard_normal((3, 1)), rng=rng)
    start = mx.array([1])
    check(lambda a: mx.slice(a, start, [1], (3, 2)), x, rng=rng)
    check(lambda a, u: mx.slice_update(a, u, start, [1]), x, rng.standard_normal((3, 2)), rng=rng)


def test_indexing_grad(on, rng):
    x = rng.standard_normal((5, 4))
    idx = mx.array([0, 2, 2, 4])
    check(lambda a: a[1:4, ::2], x, rng=rng)
    check(lambda a: a[idx], x, rng=rng)  # repeated indices accumulate
    check(lambda a: a[idx, 1:], x, rng=rng)
    check(lambda a: mx.take(a, idx, axis=1 if False else 0), x, rng=rng)
    check(lambda a, v: a.at[idx].add(v), x, rng.standard_normal((4, 4)), rng=rng)
    check(lambda a, v: a.at[1:3].add(v), x, rng.standard_normal((4,)), rng=rng)

    def assign(a, v):
        a = a * 1
        a[1:3] = v
        return a

    check(assign, x, rng.standard_normal((2, 4)), rng=rng)


def test_matmul_einsum_where_grad(on, rng):
    for sa, sb in [((3, 4), (4, 5)), ((2, 3, 4), (4, 5)), ((4,), (4, 5)), ((3, 4), (4,)), ((4,), (4,)),
                   ((2, 1, 3, 4), (5, 4, 2))]:
        check(mx.matmul, rng.standard_normal(sa), rng.standard_normal(sb), rng=rng)
    check(lambda a, b: mx.einsum("ij,jk->ik", a, b), rng.standard_normal((3, 4)), rng.standard_normal((4, 2)),
          rng=rng)
    check(lambda a, b: mx.einsum("ij,kj->i", a, b), rng.standard_normal((3, 4)), rng.standard_normal((2, 4)),
          rng=rng)
    check(lambda a, b: mx.tensordot(a, b, axes=1), rng.standard_normal((3, 4)), rng.standard_normal((4, 2)),
          rng=rng)
    c = mx.array(rng.standard_normal((3, 1)) > 0)
    check(lambda a, b: mx.where(c, a, b), rng.standard_normal((3, 4)), rng.standard_normal((4,)), rng=rng)
    well = rng.standard_normal((2, 3, 3)) + 3 * np.eye(3)
    check(lambda a: mx.linalg.inv(a), well, rng=rng, rtol=1e-5)
    check(lambda a: mx.linalg.det(a), well, rng=rng, rtol=1e-5)
    check(mx.linalg.solve, well, rng.standard_normal((2, 3, 4)), rng=rng, rtol=1e-5)
    check(mx.linalg.solve, well[0], rng.standard_normal((3,)), rng=rng, rtol=1e-5)


def _mlp(params, x, y):
    h = mx.tanh(x @ params["layers"][0]["w"] + params["layers"][0]["b"])
    out = h @ params["layers"][1]["w"] + params["layers"][1]["b"]
    return mx.mean(mx.square(out - y))


def test_mlp_grad_trees(on, rng):
    params = {"layers": [{"w": rng.standard_normal((4, 8)), "b": rng.standard_normal((8,))},
                         {"w": rng.standard_normal((8, 2)), "b": rng.standard_normal((2,))}]}
    x, y = rng.standard_normal((16, 4)), rng.standard_normal((16, 2))
    p = {"layers": [{k: a64(v) for k, v in layer.items()} for layer in params["layers"]]}
    loss, g = mx.value_and_grad(_mlp)(p, a64(x), a64(y))
    assert isinstance(g, dict) and isinstance(g["layers"], list) and g["layers"][1]["b"].shape == (2,)
    # NumPy backprop by hand
    w1, b1, w2, b2 = (params["layers"][0]["w"], params["layers"][0]["b"], params["layers"][1]["w"],
                      params["layers"][1]["b"])
    h = np.tanh(x @ w1 + b1)
    out = h @ w2 + b2
    assert_close(loss, np.mean((out - y) ** 2), rtol=1e-10)
    d_out = 2 * (out - y) / out.size
    d_h = d_out @ w2.T * (1 - h ** 2)
    assert_close(g["layers"][1]["w"], h.T @ d_out, rtol=1e-10)
    assert_close(g["layers"][1]["b"], d_out.sum(0), rtol=1e-10)
    assert_close(g["layers"][0]["w"], x.T @ d_h, rtol=1e-10)
    assert_close(g["layers"][0]["b"], d_h.sum(0), rtol=1e-10)


def test_argnums_argnames_and_aux(on):
    f = lambda x, y, z=None: (x * y * y + z).sum()  # noqa: E731
    x, y, z = mx.array([1.0, 2.0]), mx.array([3.0, 4.0]), mx.array([0.5, 0.5])
    assert_close(mx.grad(f)(x, y, z=z), [9, 16])
    gx, gy = mx.grad(f, argnums=(0, 1))(x, y, z=z)
    assert_close(gx, [9, 16]) and assert_close(gy, [6, 16])
    assert_close(mx.grad(f, argnums=[1])(x, y, z=z), [6, 16])
    pos, kw = mx.grad(f, argnums=1, argnames="z")(x, y, z=z)
    assert_close(pos, [6, 16]) and assert_close(kw["z"], [1, 1])
    none, kw = mx.grad(f, argnames=["z"])(x, y, z=z)
    assert none is None and set(kw) == {"z"}
    (loss, aux), g = mx.value_and_grad(lambda a: ((a * a).sum(), a + 1))(x)
    assert_close(loss, 5) and assert_close(aux, [2, 3]) and assert_close(g, [2, 4])
    gx, gy = mx.grad(lambda t: (t[0] * t[1]).sum())((x, y))
    assert_close(gx, [3, 4]) and assert_close(gy, [1, 2])


def test_errors_and_constants(on):
    with pytest.raises(ValueError, match="scalar"):
        mx.grad(lambda a: a * 2)(mx.array([1.0, 2.0]))
    with pytest.raises(ValueError, match="at least one"):
        mx.grad(lambda a: a.sum(), argnums=())(mx.ones(2))
    with pytest.raises(ValueError, match="trees"):
        mx.grad(lambda a: a * 2)(1.0)
    c = mx.array([5.0, 6.0])
    assert_close(mx.grad(lambda a: (a * c).sum())(c), [5, 6])  # closed-over arrays are constants
    assert_close(mx.grad(lambda a, b: (a * 2).sum(), argnums=1)(c, c), [0, 0])  # unused: zeros
    gi = mx.grad(lambda a: (a * 2).astype(mx.float32).sum())(mx.array([1, 2]))
    assert gi.dtype == mx.int32
    assert_close(mx.grad(lambda a: (mx.stop_gradient(a) * a).sum())(c), [5, 6])
    assert mx.grad(lambda a: (a > 1).sum().astype(mx.float32) + 0 * a.sum())(c).tolist() == [0, 0]


def test_setitem_on_a_primal(on):
    def f(a):
        a[0] = 5.0
        return (a * a).sum()

    x = mx.array([1.0, 2.0, 3.0])
    assert_close(mx.grad(f)(x), [0, 4, 6])
    _, (t,) = mx.jvp(f, [x], [mx.ones(3)])
    assert_close(t, 10)


def test_higher_order(on):
    x = a64([0.3, 1.2])
    d2 = mx.grad(lambda a: mx.grad(lambda b: mx.sin(b).sum())(a).sum())(x)
    assert_close(d2, -np.sin([0.3, 1.2]), rtol=1e-12)
    d3 = mx.grad(mx.grad(mx.grad(lambda a: a * a * a)))(a64(2.0))
    assert_close(d3, 6.0)


def test_vjp_jvp_consistency(on, rng):
    def f(a, b):
        return mx.tanh(a @ b).sum(axis=0), mx.exp(a).mean(axis=1)

    a, b = a64(rng.standard_normal((3, 4))), a64(rng.standard_normal((4, 2)))
    ts = [a64(rng.standard_normal((3, 4))), a64(rng.standard_normal((4, 2)))]
    cs = [a64(rng.standard_normal((2,))), a64(rng.standard_normal((3,)))]
    outs, vj = mx.vjp(f, [a, b], cs)
    outs2, jv = mx.jvp(f, [a, b], ts)
    assert len(outs) == len(outs2) == 2 and len(vj) == 2 and len(jv) == 2
    np.testing.assert_allclose(_inner(vj, ts), _inner(cs, jv), rtol=1e-10)
    out, (d,) = mx.vjp(lambda x: 2 * x, [mx.array(1.0)], [mx.array(2.0)])
    assert out[0].item() == 2 and d.item() == 4
    _, (d,) = mx.jvp(lambda x, y: x * y, [mx.array(4.0), mx.array(2.0)], [mx.array(3.0), mx.array(2.0)])
    assert d.item() == 14


def test_vmap(on, rng):
    x, y = rng.standard_normal((4, 3, 5)), rng.standard_normal((5, 2))
    out = mx.vmap(lambda a, b: a @ b, in_axes=(0, None))(mx.array(x), mx.array(y))
    assert_close(out, np.stack([xi @ y for xi in x]), rtol=1e-5)
    out = mx.vmap(lambda a: a.sum(axis=0), in_axes=1, out_axes=1)(mx.array(x))
    assert_close(out, np.stack([x[:, i].sum(0) for i in range(3)], axis=1), rtol=1e-5)
    b = rng.standard_normal((5, 3))
    out = mx.vmap(lambda a, b: (a * b, a.sum()), in_axes=(2, 0), out_axes=(0, None))(mx.array(x), mx.array(b))
    assert_close(out[0], np.stack([x[:, :, i] * b[i] for i in range(5)]), rtol=1e-5)
    assert out[0].shape == (5, 4, 3) and out[1].shape == ()
    out = mx.vmap(mx.vmap(lambda a, b: a * b), in_axes=(0, None))(mx.array(x[:, :2, :2]), mx.array(y[:2, :2]))
    assert_close(out, x[:, :2, :2] * y[:2, :2], rtol=1e-6)
    d = mx.vmap(lambda t: t["a"] - t["b"])({"a": mx.array(x[0]), "b": mx.array(x[1])})
    assert_close(d, x[0] - x[1], rtol=1e-6)
    with pytest.raises(ValueError):
        mx.vmap(lambda a, b: a + b)(mx.ones((3, 2)), mx.ones((4, 2)))
    g = mx.vmap(mx.grad(lambda a: (a ** 3).sum()))(mx.array(x[:, 0]))
    assert_close(g, 3 * x[:, 0] ** 2, rtol=1e-5)


def test_compile_checkpoint_custom(on, rng):
    x = mx.array(rng.standard_normal((3, 4)).astype(np.float32))
    f = lambda a, b: mx.exp(a) * b + 1  # noqa: E731
    cf = mx.compile(f)
    assert_close(cf(x, 2.0), np.asarray(f(x, 2.0)))
    mx.disable_compile()
    assert_close(mx.compile(f, shapeless=True)(x, 3.0), np.asarray(f(x, 3.0)))
    mx.enable_compile()
    g = mx.checkpoint(lambda a: mx.sin(mx.exp(a)))
    assert_close(g(x), np.sin(np.exp(np.asarray(x, np.float64))), rtol=1e-5)
    gx = np.asarray(x, np.float64)
    assert_close(mx.grad(lambda a: g(a).sum())(x), np.cos(np.exp(gx)) * np.exp(gx), rtol=1e-4, atol=1e-5)

    tree = mx.checkpoint(lambda p, v: {"y": mx.tanh(v @ p["w"]), "z": p["w"].sum()})
    w = rng.standard_normal((4, 2)).astype(np.float32)
    got = mx.grad(lambda p: tree(p, x)["y"].sum() + tree(p, x)["z"])({"w": mx.array(w)})["w"]
    want = mx.grad(lambda p: mx.tanh(x @ p["w"]).sum() + p["w"].sum())({"w": mx.array(w)})["w"]
    assert_close(got, np.asarray(want), rtol=1e-5)

    @mx.custom_function
    def h(a, b):
        return mx.sin(a) * b

    @h.vjp
    def h_vjp(primals, cotangent, output):
        a, b = primals
        return cotangent * 10, cotangent * mx.sin(a)

    @h.jvp
    def h_jvp(primals, tangents):
        a, b = primals
        da, db = tangents
        return da * 100 + db

    @h.vmap
    def h_vmap(inputs, axes):
        return mx.sin(inputs[0]) * inputs[1] + 1000, 0

    a, b = mx.array([0.5, 1.0]), mx.array([2.0, 3.0])
    assert_close(h(a, b), np.sin([0.5, 1.0]) * [2, 3], rtol=1e-6)
    ga, gb = mx.grad(lambda p, q: h(p, q).sum(), argnums=(0, 1))(a, b)
    assert_close(ga, [10, 10]) and assert_close(gb, np.sin([0.5, 1.0]), rtol=1e-6)
    _, (t,) = mx.jvp(h, [a, b], [mx.ones(2), mx.ones(2)])
    assert_close(t, [101, 101])
    assert float(mx.vmap(h)(a, b)[0]) > 999
    assert float(mx.vmap(lambda p, q: h(p, q) * 2)(a, b)[0]) > 1999  # inside a vmapped function
    plain = mx.custom_function(lambda p: p * p)
    assert_close(mx.grad(lambda p: plain(p).sum())(a), [1, 2])


BATCHED = [  # (function, in_axes, arguments' shapes): each has a batching rule for every primitive it uses
    (lambda a, b: mx.exp(a) * b + 1, 0, [(4, 3), (4, 3)]),
    (lambda a, b: a - b, (0, None), [(4, 2, 3), (3,)]),
    (lambda a, b: mx.maximum(a, b), (1, 0), [(3, 4), (4, 2, 3)]),
    (lambda a, b: mx.where(a > 0, a, b), (0, None), [(4, 3), (2, 3)]),
    (lambda a: mx.sum(a, axis=-1, keepdims=True) + mx.max(a, axis=0), 0, [(4, 3, 2)]),
    (lambda a: mx.softmax(a, axis=0) + mx.cumsum(a, axis=1) + mx.var(a, axis=1, keepdims=True), 0,
     [(4, 3, 2)]),
    (lambda a: mx.argmax(a, axis=1).astype(mx.float32), 2, [(3, 5, 4)]),
    (lambda a: mx.reshape(a, (-1,)) * 2, 0, [(4, 3, 2)]),
    (lambda a: mx.transpose(a) + mx.broadcast_to(a[:1, :1], (2, 3)), 0, [(4, 3, 2)]),
    (lambda a, b: mx.concatenate([a, b], axis=0), (0, None), [(4, 3, 2), (1, 2)]),
    (lambda a: mx.split(a, [1], axis=1)[1] * 2, 0, [(4, 3, 3)]),
    (lambda a, b: a @ b, (0, None), [(4, 3, 5), (5, 2)]),
    (lambda a, b: a @ b, (None, 0), [(3, 5), (4, 5, 2)]),
    (lambda a, b: a @ b, 0, [(4, 2, 3, 5), (4, 5, 2)]),
    (lambda a, b: a @ b, (0, None), [(4, 5), (2, 5, 3)]),
    (lambda a, b: a @ b, (None, 0), [(2, 3, 5), (4, 5)]),
    (lambda a, b: a @ b, 0, [(4, 5), (4, 5)]),
    (lambda a, b: a @ b, (1, 0), [(5, 4), (4, 2, 5, 3)]),
    (lambda a: a[1:, ::2] + a[mx.array([0, 0]), :2], 0, [(4, 3, 4)]),
    (lambda a: mx.stop_gradient(a) + mx.round(a, 1), 0, [(4, 3)]),
    (lambda a: mx.sort(a, axis=0) + mx.argsort(a, axis=1).astype(F64), 1, [(3, 4, 2)]),
    (lambda a, v: a.at[mx.array([0, 2, 0])].add(v), (0, 0), [(4, 3, 2), (4, 2)]),
    (lambda a, v: a.at[1:, 0].add(v), (None, 0), [(3, 2), (4, 2)]),
    (lambda a: mx.pad(a, ((1, 0), (0, 2))) + 0, 0, [(4, 3, 2)]),
    (lambda a: mx.tile(a, (2, 1, 2)) + mx.repeat(a, 2, axis=0)[None, :3, :1], 0, [(4, 3, 2)]),
    (lambda a: mx.roll(a, 1) + mx.roll(a, (1, 2), axis=(0, 1)) + mx.tril(a) + mx.triu(a, 1), 0, [(4, 3, 3)]),
    (lambda a: mx.diagonal(a, 1, 0, 1), 2, [(3, 4, 4)]),
    (lambda a, b: mx.einsum("ij,jk->ik", a, b) + mx.tensordot(a, b, 1), (0, None), [(4, 2, 3), (3, 5)]),
    (lambda a, b: mx.einsum("ij,jk->k", a, b), (None, 1), [(2, 3), (3, 4, 5)]),
]


@pytest.mark.parametrize("case", range(len(BATCHED)))
def test_vmap_batching_rules(on, rng, monkeypatch, case):
    vm = sys.modules["umx.transforms.vmap"]  # the package's name `vmap` is the function

    fn, in_axes, shapes = BATCHED[case]
    xs = [rng.standard_normal(s) for s in shapes]
    axes = [in_axes] * len(xs) if not isinstance(in_axes, tuple) else list(in_axes)
    size = next(x.shape[a] for x, a in zip(xs, axes) if a is not None)
    def one(i):
        return np.asarray(fn(*(a64(x if a is None else np.take(x, i, axis=a)) for x, a in zip(xs, axes))))

    want = np.stack([one(i) for i in range(size)])
    monkeypatch.setattr(vm, "_stack", None)  # the loop's last step: the replay must not need it
    got = mx.vmap(fn, in_axes=in_axes)(*(a64(x) for x in xs))
    assert_close(got, want, rtol=1e-10, atol=1e-12)


def test_vmap_of_grad_per_example(on, rng, monkeypatch):
    monkeypatch.setattr(sys.modules["umx.transforms.vmap"], "_stack", None)  # replayed, not looped
    params = {"w": a64(rng.standard_normal((3, 2))), "b": a64(rng.standard_normal((2,)))}
    x, y = a64(rng.standard_normal((5, 3))), a64(rng.standard_normal((5, 2)))

    def loss(p, x, y):
        return mx.mean(mx.square(mx.tanh(x @ p["w"] + p["b"]) - y))

    per = mx.vmap(mx.grad(loss), in_axes=(None, 0, 0))(params, x, y)
    full = mx.grad(loss)(params, x, y)
    assert per["w"].shape == (5, 3, 2) and per["b"].shape == (5, 2)
    for k in ("w", "b"):
        assert_close(np.asarray(per[k]).mean(0), np.asarray(full[k]), rtol=1e-10)


def test_vmap_falls_back_to_the_loop(on, rng):
    x = rng.uniform(0.5, 1.5, (4, 3))
    want = np.stack([np.sort(r) * r.sum() for r in x])
    assert_close(mx.vmap(lambda a: mx.sort(a) * a.sum().item())(a64(x)), want, rtol=1e-10)  # evaluates inside
    keys = mx.stack([mx.random.key(1), mx.random.key(2)])
    want = np.stack([np.asarray(mx.random.normal((3,), key=k)) for k in (mx.random.key(1), mx.random.key(2))])
    got = mx.vmap(lambda k: mx.random.normal((3,), key=k))(keys)  # RandomBits has no batching rule
    assert_close(got, want, rtol=1e-6)


@pytest.mark.parametrize("dtype", [mx.float32, mx.float16, mx.bfloat16, mx.int32])
def test_subtract_vjp_into_a_broadcast_operand_is_the_negated_sum(on, rng, dtype):
    # b in a - b, broadcast: its cotangent is -(sum of c), negated after the sum (on the small array), which is
    # exactly the sum of -c; and no node of the cotangent's full size negates anything
    a = mx.array(rng.standard_normal((6, 5, 7)) * 10).astype(dtype)
    b = mx.array(rng.standard_normal((5, 1)) * 10).astype(dtype)
    c = mx.array(rng.standard_normal((6, 5, 7)) * 10).astype(dtype)
    _, (ga, gb) = mx.vjp(lambda a, b: a - b, [a, b], [c])
    assert gb.shape == (5, 1) and gb.dtype == dtype
    assert gb._prim.__class__.__name__ == "Negative" and gb._inputs[0].shape == (5, 1)
    want = mx.sum(-c, axis=(0, 2), keepdims=True).reshape(5, 1)
    np.testing.assert_array_equal(np.asarray(gb.astype(mx.float64)), np.asarray(want.astype(mx.float64)))
    np.testing.assert_array_equal(np.asarray(ga.astype(mx.float64)), np.asarray(c.astype(mx.float64)))


def test_linear_layer_gradients_are_the_products_themselves(on, rng):
    # x @ w.T + b: w's cotangent is the product that computes it (no transpose of a transposed view of it), b's
    # one sum over the batch (no reshape after it), and their values are NumPy's
    x = rng.standard_normal((4, 3)).astype(np.float32)
    w = rng.standard_normal((5, 3)).astype(np.float32)
    b = rng.standard_normal((5,)).astype(np.float32)
    c = rng.standard_normal((4, 5)).astype(np.float32)
    xa = mx.array(x)
    _, (gw, gb) = mx.vjp(lambda w, b: xa @ w.T + b, [mx.array(w), mx.array(b)], [mx.array(c)])
    assert gw._prim.__class__.__name__ == "Matmul" and gb._prim.__class__.__name__ == "Sum"
    assert all(i._prim.__class__.__name__ != "Transpose" or i._inputs[0]._prim.__class__.__name__ != "Transpose"
               for i in gw._inputs)
    np.testing.assert_allclose(np.asarray(gw), c.T @ x, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(gb), c.sum(0), rtol=1e-5)


def test_a_transposed_cotangent_from_outside_the_walk_is_not_handed_back(on, rng):
    # the transpose's rule hands on only nodes its own walk built: a caller's array stays the caller's
    y = mx.array(rng.standard_normal((3, 2)).astype(np.float32))
    c = mx.transpose(y)
    _, (g,) = mx.vjp(lambda w: w.T, [mx.array(np.zeros((3, 2), np.float32))], [c])
    assert g is not y
    np.testing.assert_array_equal(np.asarray(g), np.asarray(y))


def test_products_sharing_an_input_share_its_rows(on, rng, monkeypatch):
    # q, k and v of attention read one input: their weights' gradients read one reshape of it into rows (looked
    # at before anything launches them: with the early start, a GPU's are launched as grad returns)
    monkeypatch.setattr(scheduler, "EARLY_START", False)
    x = mx.array(rng.standard_normal((2, 3, 4)).astype(np.float32))
    ws = [mx.array(rng.standard_normal((5, 4)).astype(np.float32)) for _ in range(2)]
    g1, g2 = mx.grad(lambda a, b: mx.sum(x @ a.T) + mx.sum(x @ b.T), argnums=(0, 1))(*ws)
    assert g1._inputs[1] is g2._inputs[1] and g1._inputs[1].shape == (6, 4)
    want = np.ones((6, 5), np.float32).T @ np.asarray(x).reshape(6, 4)
    np.testing.assert_allclose(np.asarray(g1), want, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(g2), want, rtol=1e-5)


def _prims_behind(arrays: list) -> set:
    """The primitive classes of the unevaluated nodes behind ``arrays``."""
    seen, stack, found = set(), list(arrays), set()
    while stack:
        n = stack.pop()
        if id(n) in seen or n._data is not None:
            continue
        seen.add(id(n))
        found.add(type(n._prim).__name__)
        stack.extend(n._inputs)
    return found


def test_markers_of_evaluated_inputs_leave_no_task(on, rng, monkeypatch):
    # value_and_grad's markers (a node per differentiated input, for the walk) read as the inputs themselves once
    # the gradient graph is built: an evaluated weight costs no task of each eval that reads it; an unevaluated
    # input's marker stays a node, and either way the values are right
    monkeypatch.setattr(scheduler, "EARLY_START", False)
    x = mx.array(rng.standard_normal((3, 4)).astype(np.float32))
    w = mx.array(rng.standard_normal((4, 2)).astype(np.float32))
    lazy = mx.add(w, 1.0)

    def loss(w, v):
        return mx.sum(mx.tanh(x @ w) * (x @ v))

    value, (gw, gv) = mx.value_and_grad(loss, argnums=(0, 1))(w, lazy)
    prims = _prims_behind([value, gw, gv])
    assert "Depends" in prims  # (lazy's marker: its input is not evaluated)
    value2, (gw2, gv2) = mx.value_and_grad(loss, argnums=(0, 1))(w, mx.array(np.asarray(lazy)))
    assert "Depends" not in _prims_behind([value2, gw2, gv2])
    wn, vn, xn = np.asarray(w, np.float64), np.asarray(lazy, np.float64), np.asarray(x, np.float64)
    t = np.tanh(xn @ wn)
    np.testing.assert_allclose(np.asarray(value2), np.sum(t * (xn @ vn)), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(gw2), xn.T @ ((1 - t * t) * (xn @ vn)), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(gv2), xn.T @ t, rtol=1e-5, atol=1e-6)
    for a, b in ((value, value2), (gw, gw2), (gv, gv2)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6)


def test_a_marker_of_an_input_an_outer_transform_keeps_stays_in_its_walk(rng):
    # the inner grad's input is evaluated inside the outer one (kept: the outer walk goes through it), so the inner
    # marker must stay a node: the second derivative flows through it
    def inner(y):
        return mx.sum(mx.sin(y) * y)

    def outer(x):
        y = x * 2.0
        mx.eval(y)  # (y is kept: evaluated, its graph still there for the outer walk)
        return mx.sum(mx.grad(inner)(y) ** 2)

    x = rng.standard_normal(5)
    got = mx.grad(outer)(mx.array(x))
    y = 2 * x
    g = np.cos(y) * y + np.sin(y)  # inner's gradient; d/dy of it: -sin(y) y + 2 cos(y)
    want = 2 * g * (-np.sin(y) * y + 2 * np.cos(y)) * 2
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-4, atol=1e-5)
