"""The transforms' calling conventions as MLX has them: argument trees, auxiliary values, the caller's containers,
custom_function's rules, and vmap's axes trees, batching and errors."""

from __future__ import annotations

import sys

import numpy as np
import pytest

import umx as mx
from tests.conftest import assert_close


def test_argnums_argnames_and_errors(on):
    f = lambda x, y: x * y  # noqa: E731
    a, b = mx.array(0.5), mx.array(2.0)
    value, (gx, gy) = mx.value_and_grad(f, (0, 1))(a, b)
    assert value.item() == 1.0 and gx.item() == 2.0 and gy.item() == 0.5
    none, named = mx.grad(f, argnames=["y"])(a, y=b)
    assert none is None and list(named) == ["y"] and named["y"].item() == 0.5
    gx, named = mx.grad(f, argnums=[0], argnames="y")(a, y=b)
    assert gx.item() == 2.0 and named["y"].item() == 0.5
    with pytest.raises(TypeError):
        mx.value_and_grad(f, (None, None))
    with pytest.raises(ValueError):
        mx.value_and_grad(f, ())
    with pytest.raises(ValueError):
        mx.grad(f, argnums=(0, 0))
    with pytest.raises(ValueError):
        mx.grad(f, argnums=-1)
    with pytest.raises(ValueError):
        mx.grad(f, argnames=["y"])(a, b)  # y not given by name
    with pytest.raises(ValueError):
        mx.grad(lambda p: p["x"] * p["y"])({"x": 0.5, "y": b})  # a leaf that is not an array
    tree = [{"foo": [[], [], mx.array(2.0)]}]
    g = mx.grad(lambda p, s: mx.square(p[0]["foo"][2]) * s)(tree, mx.array(0.5))
    assert g[0]["foo"][2].item() == 2.0 and g[0]["foo"][:2] == [[], []]


def test_auxiliary_values(on, rng):
    def fun(x, y):
        loss = (x * y).sum()
        return loss, {"loss": loss, "foo": y.square() + x.square(), "bar": [1, 2, 3, y, x]}

    xv, yv = rng.standard_normal((2, 2, 2)).astype(np.float32)  # (distinct: the gradient in x is y, not x)
    want = (xv.astype(np.float64) * yv).sum()
    (loss, aux), g = mx.value_and_grad(fun)(mx.array(xv), mx.array(yv))
    assert_close(loss, want)
    assert_close(aux["loss"], want)
    assert aux["bar"][:3] == [1, 2, 3]
    assert_close(g, yv)
    assert_close(aux["foo"], yv.astype(np.float64) ** 2 + xv.astype(np.float64) ** 2)
    with pytest.raises(ValueError, match="scalar"):
        mx.grad(fun)(mx.ones((2, 2)), mx.ones((2, 2)))  # grad wants the loss alone


def test_the_callers_containers(on):
    arrs = [mx.array(1.0), mx.array(1.0), mx.array(1.0)]
    a0, a1, a2 = arrs

    def fun(xs):
        xs[1] = xs[0] + xs[1] + xs[2]  # stays in the caller's list, as in MLX
        return xs[1]

    g = mx.grad(fun)(arrs)
    assert [x.item() for x in g] == [1, 1, 1]
    assert arrs[0] is a0 and arrs[2] is a2 and arrs[1] is not a1
    assert arrs[1].item() == 3.0
    model = {"w": mx.array(0.0), "b": [mx.array(1.0)]}

    def loss(m):
        m["b"][0] = mx.array(2.0)
        return m["w"] * 3

    assert mx.grad(loss)(model)["w"].item() == 3.0
    assert model["b"][0].item() == 2.0 and type(model["w"]) is mx.array and model["w"].item() == 0.0
    same = mx.array(2.0)
    g = mx.grad(lambda xs: xs[0] + xs[2])([same, same, same])
    assert [x.item() for x in g] == [1, 0, 1]


def test_custom_function_rules_take_mlx_trees(on):
    my_exp = mx.custom_function(mx.exp)
    one = mx.array(1.0)
    assert_close(mx.grad(my_exp)(one), np.e, rtol=1e-6)

    @my_exp.vjp
    def _(x, dx, ex):  # one argument: the array itself
        return mx.ones_like(x) * 42

    @my_exp.jvp
    def _(x, dx):
        return mx.ones_like(x) * 7 * dx

    @my_exp.vmap
    def _(x, axis):
        return mx.ones_like(x) * 3, axis

    assert mx.grad(my_exp)(one).item() == 42
    (ex,), (dex,) = mx.jvp(my_exp, [one], [one])
    assert dex.item() == 7 and abs(ex.item() - np.e) < 1e-6
    assert mx.vmap(my_exp)(mx.ones(4)).tolist() == [3, 3, 3, 3]

    @mx.custom_function
    def double(params):
        return {"out": 2 * params["x"] * params["y"]}

    p = {"x": mx.ones(2), "y": mx.ones(2)}
    g = mx.grad(lambda q: double(q)["out"].sum())(p)
    assert g["x"].tolist() == [2, 2] and g["y"].tolist() == [2, 2]

    @double.vjp
    def _(primals, cotangents, outputs):
        assert set(primals) == {"x", "y"} and set(cotangents) == {"out"} and set(outputs) == {"out"}
        return {"x": mx.zeros_like(primals["x"]), "y": mx.ones_like(primals["y"])}

    @double.jvp
    def _(primals, tangents):
        return {"out": 2 * primals["x"] * tangents["y"] + 2 * primals["y"] * tangents["x"] + 1}

    g = mx.grad(lambda q: double(q)["out"].sum())(p)
    assert g["x"].tolist() == [0, 0] and g["y"].tolist() == [1, 1]
    _, (t,) = mx.jvp(lambda a, b: double({"x": a, "y": b})["out"], [mx.ones(2), mx.ones(2)],
                     [mx.ones(2), mx.ones(2)])
    assert t.tolist() == [5, 5]

    @mx.custom_function
    def pair(a, b):
        return a * b, a + b

    @pair.vjp
    def _(primals, cotangents, outputs):  # several arguments: a tuple, and a tuple back
        a, b = primals
        ca, cb = cotangents
        return ca * 10, cb * 100

    @pair.vmap
    def _(inputs, axes):
        a, b = inputs
        assert axes == (0, None)
        return (a * b + 1000, a + b), (0, 0)

    ga, gb = mx.grad(lambda a, b: pair(a, b)[0].sum() + pair(a, b)[1].sum(), argnums=(0, 1))(one, one)
    assert ga.item() == 10 and gb.item() == 100
    out = mx.vmap(pair, in_axes=(0, None))(mx.ones(3), mx.array(2.0))
    assert out[0].tolist() == [1002, 1002, 1002] and out[1].tolist() == [3, 3, 3]


def test_a_custom_vjp_may_give_none_for_an_argument(on):
    # None: no gradient flows to that argument (its own producers' rules never run); umx's extension of MLX
    @mx.custom_function
    def scaled(x, s):
        return x * s

    @scaled.vjp
    def _(primals, cotangent, output):
        x, s = primals
        return cotangent * s, None

    calls = []

    @mx.custom_function
    def watched(s):
        return s

    @watched.vjp
    def _(primals, cotangent, output):
        calls.append(1)
        return cotangent

    x = mx.array([1.0, 2.0])
    gx, gs = mx.grad(lambda x, s: mx.sum(scaled(x, watched(s))), argnums=(0, 1))(x, mx.array(3.0))
    assert gx.tolist() == [3.0, 3.0] and gs.item() == 0.0 and calls == []
    scaled.vjp(lambda primals, cotangent, output: cotangent)  # (one gradient for two arguments: an error)
    with pytest.raises(ValueError, match="returned 1 arrays for 2"):
        mx.grad(lambda x: mx.sum(scaled(x, mx.array(2.0))))(x)


def test_vmap_axes_trees_and_errors(on, rng):
    tree = {"a": mx.array(rng.random((2, 4)).astype(np.float32)),
            "b": (mx.array(rng.random((2, 4)).astype(np.float32)), mx.array(rng.random((2, 4)).astype(np.float32)))}

    def fun(t):
        return (t["a"] + t["b"][0]) * t["b"][1]

    want = np.asarray(fun(tree))
    for in_axes in (0, {"a": 0, "b": 0}, {"a": 0, "b": (0, 0)}):
        assert_close(mx.vmap(fun, in_axes=in_axes)(tree), want)
    with pytest.raises(ValueError):
        mx.vmap(fun, in_axes={"a": 0, "b": ((0, 0), 0)})(tree)
    swapped = {"a": tree["a"], "b": (mx.transpose(tree["b"][0]), mx.transpose(tree["b"][1]))}
    assert_close(mx.vmap(fun, in_axes={"a": 0, "b": (1, 1)})(swapped), want)

    def two(x, y):
        return {"a": x + y, "b": x * y}

    x, y = tree["a"], tree["b"][0]
    out = mx.vmap(two, out_axes={"a": 1, "b": 0})(x, y)
    assert_close(out["a"], np.asarray(x + y).T) and assert_close(out["b"], np.asarray(x * y))
    for bad in [dict(out_axes=(0, 1)), dict(out_axes={"a": 0, "c": 1}), dict(in_axes="hello"),
                dict(out_axes="hello"), dict(in_axes=2), dict(out_axes=2)]:
        with pytest.raises(ValueError):
            mx.vmap(two, **bad)(x, y)
    with pytest.raises(ValueError):
        mx.vmap(mx.exp)(mx.array(1.0))
    with pytest.raises(ValueError):
        mx.vmap(mx.exp)("hello")
    with pytest.raises(ValueError):
        mx.vmap(lambda a: 1.0)(mx.ones(3))
    empty = mx.vmap(lambda a: a * 2)(mx.zeros((0, 3)))
    assert empty.shape == (0, 3)
    a = mx.array(rng.random((2, 3, 4)).astype(np.float32))
    b = mx.array(rng.random((4, 2)).astype(np.float32))
    out = mx.vmap(mx.matmul, in_axes=(1, None), out_axes=(1,))(a, b)  # a one-entry tuple for one output
    assert_close(out, np.moveaxis(np.moveaxis(np.asarray(a), 1, 0) @ np.asarray(b), 0, 1), rtol=1e-5)
    c = mx.array(rng.random((2,)).astype(np.float32))
    assert_close(mx.vmap(mx.addmm, in_axes=(None, 1, None))(c, a, b),
                 np.asarray(c) + np.moveaxis(np.asarray(a), 1, 0) @ np.asarray(b), rtol=1e-5)


def test_vmap_scatters_pads_and_unmapped_inputs(on, monkeypatch):
    def scatter(a, idx):
        a[idx] = mx.array(1.0)  # must not change the caller's (unmapped) array
        return a

    a = mx.zeros((3, 4))
    out = mx.vmap(scatter, in_axes=(None, 0))(a, mx.array([0, 1, 2]))
    assert_close(out, np.stack([np.where(np.arange(3)[:, None] == i, 1.0, 0.0) * np.ones((3, 4)) for i in range(3)]))
    assert a.tolist() == np.zeros((3, 4)).tolist()
    b = mx.array([[1.0, 2.0, 3.0], [2.0, 3.0, 4.0]])
    assert mx.vmap(lambda r: r.at[mx.array(0)].add(mx.array(1.0)), in_axes=(1,), out_axes=1)(b).tolist() == \
        [[2, 3, 4], [2, 3, 4]]

    def masked(x, m, src):
        x[m] = src
        return x

    got = mx.vmap(masked, in_axes=(0, 0, None))(mx.array([[0, 0, 0, 0, 0], [10, 20, 30, 40, 50]]),
                                                 mx.array([[True, True, True, False, False]] * 2),
                                                 mx.array([1, 2, 3, 4, 5]))
    assert got.tolist() == [[1, 2, 3, 0, 0], [1, 2, 3, 40, 50]]  # each slice takes the values from the start
    got = mx.vmap(masked, in_axes=(None, 0, 0))(mx.array([10, 20, 30, 40]),
                                                 mx.array([[True, False, False, True], [False, True, True, False]]),
                                                 mx.array([[1, 2], [3, 4]]))
    assert got.tolist() == [[1, 20, 30, 2], [10, 3, 4, 40]]
    x = mx.arange(24, dtype=mx.float32).reshape(2, 3, 4)
    monkeypatch.setattr(sys.modules["umx.transforms.vmap"], "_stack", None)  # pads batch without the loop
    out = mx.vmap(lambda r: mx.pad(r, ((1, 2), (0, 1)), constant_values=5.0), in_axes=-1, out_axes=-1)(x)
    assert_close(out, np.stack([np.pad(np.asarray(x)[:, :, i], ((1, 2), (0, 1)), constant_values=5)
                                for i in range(4)], axis=2))
    assert_close(mx.vmap(mx.vmap(lambda r: mx.pad(r, (1, 1))))(x), np.pad(np.asarray(x), ((0, 0), (0, 0), (1, 1))))
    with pytest.raises(ValueError):
        mx.vmap(lambda r, v: mx.pad(r, ((1, 1), (1, 1)), constant_values=v))(x, mx.array([3.0, 4.0]))


def _overlapping(monkeypatch, device) -> None:
    """Turn the early start on (the default; ``UMX_EARLY_START=0`` turns it off) and make ``device``'s executors run
    beside the host, as a GPU's do (the CPU's do not)."""
    import dataclasses

    from umx.runtime import scheduler

    monkeypatch.setattr(scheduler, "EARLY_START", True)
    ex = mx.default_stream(device).executor
    monkeypatch.setattr(type(ex), "traits", dataclasses.replace(ex.traits, overlaps_host=True))


def test_value_and_grad_starts_its_results_where_the_device_overlaps_the_host(on, monkeypatch, rng):
    from umx.runtime import scheduler
    from umx.transforms.compile import _UNCOMPILED

    w_np, x_np = rng.standard_normal((6, 3)).astype(np.float32), rng.standard_normal((5, 6)).astype(np.float32)
    w, x = mx.array(w_np), mx.array(x_np)

    def loss_of(w, x):
        return (mx.tanh(x @ w) ** 2).sum()

    def expected_grad(w):
        y = np.tanh(x_np.astype(np.float64) @ w)
        return x_np.T @ (2 * y * (1 - y * y))

    monkeypatch.setattr(scheduler, "EARLY_START", False)
    plain = mx.value_and_grad(loss_of)(w, x)  # (turned off: left to the next eval)
    assert plain[0]._exec is None and plain[1]._exec is None
    _overlapping(monkeypatch, on)
    loss, g = mx.value_and_grad(loss_of)(w, x)
    assert loss._exec is not None and g._exec is not None  # scheduled on return, before any eval
    assert_close(g, expected_grad(w_np.astype(np.float64)), rtol=1e-4, atol=1e-5)
    assert_close(loss, plain[0], rtol=1e-6)

    # inside an outer transform the graph must stay whole: second derivatives flow through the inner one
    def inner_norm(w):
        _, gw = mx.value_and_grad(loss_of)(w, x)
        return (gw * gw).sum()

    h = mx.grad(inner_norm)(w)  # (a cut graph would give zeros)
    w64 = w_np.astype(np.float64)
    eps = 1e-3
    bump = np.zeros_like(w64)
    bump[2, 1] = eps
    fd = ((expected_grad(w64 + bump) ** 2).sum() - (expected_grad(w64 - bump) ** 2).sum()) / (2 * eps)
    assert abs(float(h[2, 1]) - fd) < 2e-2 * max(1.0, abs(fd))

    # and a compiled step's trace starts nothing, or it would be dropped as one that evaluated a value
    step = mx.compile(mx.value_and_grad(loss_of))
    c_loss, c_g = step(w, x)
    assert all(t is not _UNCOMPILED for t in step._cache.values())
    assert_close(c_g, g, rtol=1e-5)
    assert_close(c_loss, loss, rtol=1e-5)


def test_early_start_is_on_where_the_device_overlaps_the_host_unless_turned_off(on, monkeypatch):
    from umx.runtime import scheduler

    w = mx.ones((3, 2))
    loss, g = mx.value_and_grad(lambda w: (w * w).sum())(w)
    # by default, a GPU's results are launched on return; the CPU's wait for an eval (its kernels share the GIL)
    overlaps = mx.default_stream(on).executor.traits.overlaps_host
    assert overlaps == (on == mx.gpu)
    if scheduler.EARLY_START:
        assert (loss._exec is not None) == overlaps and (g._exec is not None) == overlaps
    assert_close(g, 2 * np.ones((3, 2)))
    _overlapping(monkeypatch, on)  # (on, with an executor that overlaps the host: then turned off)
    monkeypatch.setattr(scheduler, "EARLY_START", False)
    loss, g = mx.value_and_grad(lambda w: (w * w).sum())(w)
    assert loss._exec is None and g._exec is None
    assert_close(g, 2 * np.ones((3, 2)))
