"""Values read inside a transformed function (item(), branches, eval of intermediates) keep their gradients."""

from __future__ import annotations

import sys
import threading

import numpy as np
import pytest

import umx as mx
from tests.conftest import assert_close


def _reads(kind: str):
    """A loss ``sum(x * x)`` that reads a value on the way, in one of the ways users do."""

    def f(x):
        sq = x * x
        loss = sq.sum()
        if kind == "item":
            assert loss.item() >= 0
        elif kind == "branch":
            if x.sum() > 0:
                loss = loss * 1.0
        elif kind == "int":
            i = int(mx.argmax(x))
            assert 0 <= i < x.size
        elif kind == "isnan":
            assert not mx.isnan(loss).item()
        elif kind == "eval":
            mx.eval(sq)
        elif kind == "eval_all":
            mx.eval(x, sq, loss)
        elif kind == "numpy":
            assert np.asarray(sq).shape == x.shape
        elif kind == "print":
            print(sq, file=sys.stderr)
        return loss

    return f


KINDS = ["item", "branch", "int", "isnan", "eval", "eval_all", "numpy", "print"]


@pytest.mark.parametrize("kind", KINDS)
def test_grad_through_read_values(on, kind):
    x = mx.array([1.0, 2.0, -0.5])
    f = _reads(kind)
    assert_close(mx.grad(f)(x), [2, 4, -1])
    value, g = mx.value_and_grad(f)(x)
    assert value.item() == 5.25
    assert_close(g, [2, 4, -1])
    _, (v,) = mx.vjp(f, [x], [mx.array(2.0)])
    assert_close(v, [4, 8, -2])
    _, (t,) = mx.jvp(f, [x], [mx.array([1.0, 0.0, 1.0])])
    assert_close(t, 1.0)


def test_the_reported_cases(on):
    def f(x):
        loss = (x * x).sum()
        print(loss.item(), file=sys.stderr)
        return loss

    assert mx.grad(f)(mx.array([1.0, 2.0])).tolist() == [2, 4]

    def g(x):
        y = 3 * x
        mx.eval(y)
        return 2 * y

    assert mx.grad(g)(mx.array(1.0)).item() == 6.0

    def h(x):  # the value read is a comparison whose result steers nothing: x**2's gradient is unchanged
        x = x + mx.array([2.0, 2.0])
        (x < 1).tolist()
        return x ** 2

    _, (v,) = mx.vjp(h, (mx.array([1.0]),), (mx.array([1.0, 1.0]),))
    assert v.item() == 12.0


def test_branches_follow_the_values(on):
    def f(x):
        if (x.sum() > 0).item():
            return (x * x).sum()
        return (3 * x).sum()

    assert_close(mx.grad(f)(mx.array([1.0, 2.0])), [2, 4])
    assert_close(mx.grad(f)(mx.array([-1.0, -2.0])), [3, 3])


def test_reads_of_siblings_markers_and_several_arrays(on):
    def f(x, w):
        a, b = mx.split(x * w, 2)
        mx.eval(a)  # one sibling of a split: the group keeps its graph
        assert b.shape == (2,)
        mx.eval(x)  # the marker itself
        return (a * b).sum() + w.sum() * float(x[0].item())

    x = mx.array([1.0, 2.0, 3.0, 4.0])
    w = mx.array([0.5, 1.0, 2.0, 1.5])
    gx, gw = mx.grad(f, argnums=(0, 1))(x, w)
    xw = np.asarray(x) * np.asarray(w)
    # d/dx of a.b with a = (xw)[:2], b = (xw)[2:], plus the read x[0] (a constant float) times sum(w)
    want_x = np.concatenate([xw[2:] * np.asarray(w)[:2], xw[:2] * np.asarray(w)[2:]])
    want_w = np.concatenate([xw[2:] * np.asarray(x)[:2], xw[:2] * np.asarray(x)[2:]]) + 1.0
    assert_close(gx, want_x)
    assert_close(gw, want_w)


def test_higher_order_with_reads(on):
    def f(x):
        y = x * x * x
        mx.eval(y)
        return y.sum()

    def df(x):
        g = mx.grad(f)(x)
        assert g.shape == x.shape and float(g.sum().item()) > 0  # read inside the outer transform too
        return g.sum()

    assert_close(mx.grad(df)(mx.array([1.0, 2.0])), [6, 12])


def test_random_draws_are_the_same_when_recomputed(on):
    def f(x):
        noise = mx.random.normal(x.shape)
        y = x * noise
        mx.eval(y)  # computed now; the gradient computes `noise` again from its key: the same values
        return y.sum(), noise

    (_, noise), g = mx.value_and_grad(f)(mx.ones((64,)))
    assert_close(g, np.asarray(noise), rtol=0, atol=0)


def test_values_are_detached_when_the_transform_returns(on):
    kept = []

    def f(x):
        y = mx.exp(x)
        mx.eval(y)
        kept.append(y)
        return y.sum()

    g = mx.grad(f)(mx.array([0.0, 1.0]))
    assert_close(g, np.exp([0.0, 1.0]), rtol=1e-6)
    (y,) = kept
    assert y._prim is None and y._inputs == ()  # the step's graph is not kept alive by what the user holds
    assert_close(y, np.exp([0.0, 1.0]), rtol=1e-6)


def test_async_eval_inside_a_transform_raises(on):
    def f(x):
        y = x + 1.0
        mx.async_eval(y)
        return mx.exp(y)

    with pytest.raises(ValueError, match="async_eval"):
        mx.grad(f)(mx.array(1.0))
    with pytest.raises(ValueError, match="async_eval"):
        mx.vmap(f)(mx.ones((2, 2)))
    mx.async_eval(f(mx.array(1.0)))  # outside a transform it is fine


def test_vmap_reads(on, monkeypatch):
    vm = sys.modules["umx.transforms.vmap"]
    x = mx.array(np.arange(12, dtype=np.float32).reshape(4, 3))

    def depends(a):
        return a * a.sum().item()  # a value of the slice: each slice needs its own call

    want = np.stack([r * r.sum() for r in np.asarray(x)])
    assert_close(mx.vmap(depends)(x), want)
    row_sums = np.asarray(x).sum(1, keepdims=True)  # (the value read is a constant of the gradient)
    assert_close(mx.grad(lambda a: mx.vmap(depends)(a).sum())(x), np.broadcast_to(row_sums, (4, 3)))

    c = mx.array([1.0, 2.0, 3.0])

    def constant(a):
        return a * c.sum().item()  # a value that does not depend on the slice: the batched replay stands

    monkeypatch.setattr(vm, "_stack", None)  # (the loop's last step: the replay must not need it)
    assert_close(mx.vmap(constant)(x), np.asarray(x) * 6)


def test_compile_inside_grad_with_reads(on):
    def f(x):
        y = mx.sin(x)
        assert y.sum().item() < 10
        return (y * y).sum()

    cf = mx.compile(f)
    x = mx.array([0.3, 0.7])
    want = 2 * np.sin([0.3, 0.7]) * np.cos([0.3, 0.7])
    for _ in range(2):
        assert_close(mx.grad(cf)(x), want, rtol=1e-5)
        assert_close(mx.compile(mx.grad(f))(x), want, rtol=1e-5)


def test_threads_each_keep_their_own_graph(on):
    errors = []

    def work(k: int):
        try:
            for _ in range(5):
                x = mx.array([float(k), 1.0])
                g = mx.grad(_reads("item"))(x)
                assert g.tolist() == [2.0 * k, 2.0]
        except BaseException as e:  # (reported on the main thread)
            errors.append(e)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
