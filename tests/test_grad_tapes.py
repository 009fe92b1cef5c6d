"""Backward tapes (``transforms/_grad_tapes.py``): a replayed backward walk builds the graph the rules build, node for
node, and gives the same gradients; walks whose graph a tape cannot stand for run the rules every time."""

from __future__ import annotations

import weakref

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import umx as mx
import umx.nn as nn
from tests.conftest import in_threads
from umx.primitives.base import structure_key
from umx.runtime import scheduler
from umx.transforms import _grad_tapes
from umx.utils import tree_flatten


@pytest.fixture
def tapes(monkeypatch):
    """Tapes on, with none remembered; ``tapes(False)`` turns them off. The early start is off: a GPU would launch
    the gradients as ``value_and_grad`` returns, and the tests look at their graphs before that."""
    monkeypatch.setattr(_grad_tapes, "_tapes", {})
    monkeypatch.setattr(_grad_tapes, "ENABLED", True)
    monkeypatch.setattr(scheduler, "EARLY_START", False)
    return lambda on: monkeypatch.setattr(_grad_tapes, "ENABLED", on)


def _graph(arrays: list) -> list:
    """The graph behind ``arrays`` in a canonical order: per node reached (depth first, inputs in order), its
    primitive's key, shape, dtype, stream, and where its inputs are in this list (or what an evaluated leaf holds)."""
    out: list = []
    where: dict = {}

    def visit(x):
        k = id(x)
        if k in where:
            return where[k]
        if x._prim is None or x._data is not None:
            d = np.asarray(x) if x._data is not None else None
            entry = ("data", x._shape, x._dtype, None if d is None else d.tobytes())
        else:
            entry = (structure_key(x._prim), x._shape, x._dtype, x._stream, tuple(visit(i) for i in x._inputs))
        where[k] = len(out)
        out.append(entry)
        return where[k]

    for a in arrays:
        visit(a)
    return out


def _grads(fun, args, steps: int, taped: bool, tapes) -> list:
    """The gradient graphs and values of ``steps`` calls of ``value_and_grad(fun)(*args)`` (tapes on or off)."""
    tapes(taped)
    vg = mx.value_and_grad(fun)
    out = []
    for _ in range(steps):
        _, g = vg(*args)
        leaves = [v for _, v in tree_flatten(g)] if isinstance(g, (dict, list, tuple)) else [g]
        graph = _graph(leaves)
        mx.eval(leaves)
        out.append((graph, [np.array(v) for v in leaves]))
    return out


def _mlp(rng):
    model = nn.Sequential(nn.Linear(12, 16), nn.GELU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 5))
    x = mx.array(rng.standard_normal((8, 12)).astype(np.float32))
    y = mx.array(rng.integers(0, 5, 8).astype(np.int32))

    def loss(params):
        model.update(params)
        return nn.losses.cross_entropy(model(x), y, reduction="mean")

    return loss, (model.trainable_parameters(),)


def _transformer(rng):
    emb = nn.Embedding(32, 16)
    enc = nn.TransformerEncoder(2, 16, 4, norm_first=True)
    x = mx.array(rng.integers(0, 32, (2, 6)).astype(np.int32))
    mask = nn.MultiHeadAttention.create_additive_causal_mask(6)
    mx.eval(mask)  # (as the graph holds it from the second call on)

    def loss(params):
        emb.update(params["emb"])
        enc.update(params["enc"])
        h = enc(emb(x), mask)
        return (emb.as_linear(h) ** 2).mean()

    return loss, ({"emb": emb.trainable_parameters(), "enc": enc.trainable_parameters()},)


def _cnn(rng):
    conv = nn.Conv2d(3, 4, 3, padding=1)
    norm = nn.GroupNorm(2, 4)
    x = mx.array(rng.standard_normal((2, 6, 6, 3)).astype(np.float32))

    def loss(params):
        conv.update(params["conv"])
        norm.update(params["norm"])
        h = nn.relu(norm(conv(x)))
        return nn.MaxPool2d(2, 2)(h).sum()

    return loss, ({"conv": conv.trainable_parameters(), "norm": norm.trainable_parameters()},)


def _batch_norm(rng):
    conv = nn.Conv2d(3, 4, 3, padding=1, bias=False)
    bn = nn.BatchNorm(4)
    x = mx.array(rng.standard_normal((2, 6, 6, 3)).astype(np.float32))

    def loss(params):  # (BatchNorm's closed-form gradient is a custom_function: a call in the tape)
        conv.update(params["conv"])
        bn.update(params["bn"])
        return (nn.relu(bn(conv(x))) ** 2).mean()

    return loss, ({"conv": conv.trainable_parameters(), "bn": bn.trainable_parameters()},)


def _checkpointed(rng):
    enc = nn.TransformerEncoder(2, 8, 2, checkpoint=True)
    x = mx.array(rng.standard_normal((2, 5, 8)).astype(np.float32))

    def loss(params):
        enc.update(params)
        return (enc(x, None) ** 2).mean()

    return loss, (enc.trainable_parameters(),)


def _recurrent(rng):
    lstm = nn.LSTM(4, 6)
    x = mx.array(rng.standard_normal((2, 5, 4)).astype(np.float32))

    def loss(params):
        lstm.update(params)
        h, c = lstm(x)
        return (h * h).sum() + c.mean()

    return loss, (lstm.trainable_parameters(),)


def _indexing(rng):
    idx = mx.array([3, 0, 3, 1])
    w = mx.array(rng.standard_normal((5, 3)).astype(np.float32))

    def loss(w):
        g = w[idx] * 2.0
        s = mx.where(g > 0, g, g * 0.1)
        picked = mx.take_along_axis(w, mx.array([[0], [2], [1], [0], [2]]), 1)
        return mx.logsumexp(s, axis=-1).sum() + w[1:, ::2].sum() + picked.sum()

    return loss, (w,)


@pytest.mark.parametrize("make", [_mlp, _transformer, _cnn, _batch_norm, _checkpointed, _recurrent, _indexing])
def test_replayed_walk_builds_the_recorded_graph(on, tapes, rng, make):
    """The second walk records (views of evaluated data made nodes), the later ones replay: the same graph, and
    the rules' values bit for bit."""
    fun, args = make(rng)
    mx.eval(args)
    ruled = _grads(fun, args, 1, False, tapes)[0]
    first, recorded, *replayed = _grads(fun, args, 4, True, tapes)
    assert first[0] == ruled[0]
    assert any(type(e) is tuple for e in _grad_tapes._tapes.values()), "the walk was never recorded"
    for graph, values in replayed:
        assert graph == recorded[0]
        for v, want in zip(values, ruled[1]):
            np.testing.assert_array_equal(v, want)


def test_new_values_of_the_same_structure(on, tapes, rng):
    """A replay reads this call's inputs: arrays captured by the function, scalars, the primal itself."""
    s = [mx.array(2.0), mx.array(-0.5), mx.array(3.0)]
    ws = [mx.array(rng.standard_normal((4, 3)).astype(np.float32)) for _ in s]
    for x64, w, sc in zip([rng.standard_normal(3) for _ in s], ws, s):
        x = mx.array(x64.astype(np.float32))
        def f(x, w=w, sc=sc):
            return (mx.sin(w @ x) * sc).sum() + (x * sc.astype(mx.float16)).astype(mx.float32).sum()

        g = mx.grad(f)(x)
        w64, s64 = np.array(w, np.float64), sc.item()
        want = w64.T @ (np.cos(w64 @ x64) * s64) + np.float16(s64)
        np.testing.assert_allclose(np.array(g), want, rtol=1e-4, atol=1e-5)
    assert any(type(e) is tuple for e in _grad_tapes._tapes.values())


def test_a_rule_reading_through_an_outside_view_replays(on, tapes, rng):
    """``x @ wt`` with ``wt`` an unevaluated transpose from outside (a GPU's ``c.T`` of host data is one): the
    product's rule reads what ``wt`` transposes, which the walk numbers too, so a replay reads this call's."""
    x = mx.array(rng.standard_normal((2, 4)).astype(np.float32))
    for _ in range(4):
        a = rng.standard_normal((3, 4)).astype(np.float32)
        wt = (mx.array(a) + 1.0).T
        g = mx.grad(lambda x, wt=wt: ((x @ wt) ** 2).sum())(x)
        want = 2 * (np.array(x, np.float64) @ (a + 1.0).T) @ (a + 1.0)
        np.testing.assert_allclose(np.array(g), want, rtol=1e-5, atol=1e-5)
    assert [type(e) for e in _grad_tapes._tapes.values()] == [tuple]
    # what the view reads is part of the structure: another primitive under it is another tape
    wt = (mx.array(a) * 3.0).T
    g = mx.grad(lambda x, wt=wt: ((x @ wt) ** 2).sum())(x)
    np.testing.assert_allclose(np.array(g), 2 * (np.array(x, np.float64) @ (3 * a).T) @ (3 * a), rtol=1e-5, atol=1e-5)
    assert len(_grad_tapes._tapes) == 2


def test_user_rules_run_at_every_replay(on, tapes):
    """A custom_function's rule is the user's code: a replay calls it again at its place in the walk, and where
    it gives results of another structure than when recorded, the walk runs the rules from then on."""
    calls = []
    scale = [2.0]

    @mx.custom_function
    def f(x, y):
        return mx.sin(x) * y

    @f.vjp
    def f_vjp(primals, cotangent, output):
        calls.append(1)
        x, y = primals
        return (cotangent * scale[0], None if len(calls) > 4 else cotangent * mx.sin(x))

    def loss(x, y):
        return (mx.exp(f(x * 3.0, y)) + x).sum()

    x, y = mx.array([0.5, 1.5]), mx.array([2.0, -1.0])
    g = mx.grad(loss, argnums=(0, 1))
    for i in range(6):
        scale[0] = 1.0 + i  # (Python state the rule reads: a replay must see it, as the rules would)
        gx, gy = g(x, y)
        e = np.exp(np.sin(np.array([1.5, 4.5])) * np.array([2.0, -1.0]))
        np.testing.assert_allclose(np.array(gx), e * 3 * (1.0 + i) + 1, rtol=1e-5)
        if i < 4:
            np.testing.assert_allclose(np.array(gy), e * np.sin([1.5, 4.5]), rtol=1e-5)
        else:  # (the rule gives y no gradient from its fifth call on: a zero gradient)
            assert np.array(gy).tolist() == [0.0, 0.0]
    assert len(calls) == 7  # (the walk that met the mismatch ran again with the rules: its rule ran twice)
    assert _grad_tapes._REFUSED in _grad_tapes._tapes.values()  # (the fifth call gave None: a mismatch)


def test_values_computed_while_traced_run_the_rules(on, tapes):
    def read(x):  # a value of the graph computed while traced: a rule may fold it
        y = mx.exp(x).sum()
        return y * (2.0 if y.item() > 0 else 1.0)

    for _ in range(3):
        np.testing.assert_allclose(np.array(mx.grad(read)(mx.array([0.5]))), 2 * np.exp([0.5]), rtol=1e-6)
    assert not any(type(e) is tuple for e in _grad_tapes._tapes.values())


def test_replays_build_on_the_default_stream(tapes):
    s = mx.new_stream(mx.cpu)
    x = mx.array([0.5, 1.5])
    f = mx.grad(lambda x: (mx.exp(x) * x).sum())
    for _ in range(3):
        g = f(x)
    assert g._stream is mx.default_stream(mx.default_device())
    with mx.stream(s):
        g = f(x)
        assert g._stream is s
    np.testing.assert_allclose(np.array(g), np.exp([0.5, 1.5]) * (1 + np.array([0.5, 1.5])), rtol=1e-6)


def test_nested_gradients_replay(on, tapes):
    d2 = mx.grad(mx.grad(lambda x: (x ** 3).sum()))
    for v in (1.0, 2.0, -3.0):
        assert d2(mx.array(v)).item() == pytest.approx(6 * v)


def test_primals_of_other_shapes_are_other_structures(on, tapes, rng):
    """Primals that broadcast to the same product differ only in their own shapes: each gets its own gradient."""
    a = mx.array(rng.standard_normal((3, 4, 6)).astype(np.float32))
    f = mx.grad(lambda a, b: (a @ b).sum(), argnums=1)
    for shape in [(6, 5), (1, 6, 5), (3, 6, 5)] * 3:
        g = f(a, mx.array(rng.standard_normal(shape).astype(np.float32)))
        want = np.array(a, np.float64).sum(axis=1)[..., None].repeat(5, -1)  # (3, 6, 5)
        want = want.sum(axis=tuple(range(3 - len(shape))), keepdims=False) if len(shape) < 3 else want
        want = want.sum(axis=0, keepdims=True) if shape[0] == 1 else want
        assert g.shape == shape
        np.testing.assert_allclose(np.array(g), want, rtol=1e-5, atol=1e-5)


_OPS = {  # h: the running value (n, n); c: a constant matrix; p: a second primal (n,); s: a scalar array
    "sin": lambda h, c, p, s: mx.sin(h),
    "scaled": lambda h, c, p, s: h * s - 0.25,
    "row": lambda h, c, p, s: h + p,
    "column": lambda h, c, p, s: h * p[:, None],
    "product": lambda h, c, p, s: h @ c.T,
    "left": lambda h, c, p, s: c @ h,
    "transpose": lambda h, c, p, s: h.T,
    "center": lambda h, c, p, s: h - mx.mean(h, axis=1, keepdims=True),
    "softmax": lambda h, c, p, s: mx.softmax(h, axis=-1),
    "pick": lambda h, c, p, s: h[mx.array([0] + list(range(h.shape[0] - 1)))],  # (row 0 twice: accumulated)
    "slice": lambda h, c, p, s: mx.concatenate([h[:, 1:], h[:, :1] * 2.0], axis=1),
    "where": lambda h, c, p, s: mx.where(h > 0, h, h * s),
    "power": lambda h, c, p, s: mx.abs(h) ** s,
    "max": lambda h, c, p, s: h * mx.max(h, axis=0),
    "float16": lambda h, c, p, s: (h.astype(mx.float16) * s.astype(mx.float16)).astype(mx.float32),
}


@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
@given(ops=st.lists(st.sampled_from(sorted(_OPS)), min_size=3, max_size=12), n=st.sampled_from([1, 2, 3]),
       seed=st.integers(0, 2**16), lazy=st.booleans())
def test_random_programs_replay_the_rules_gradients(tapes, ops, n, seed, lazy):
    """Random programs of ops, differentiated on new values at every call (the captured matrix, the scalar and
    the primals all change): with tapes, the gradients are the rules' bit for bit. With ``lazy``, the captured
    matrix is unevaluated, so its transpose is a node the product's rule reads through (as a GPU's ``c.T`` of host
    data is)."""
    rng = np.random.default_rng(seed)
    _grad_tapes._tapes.clear()

    def program(x, p, c, s):
        h = x
        for name in ops:
            h = _OPS[name](h, c, p, s)
        return (h * h).sum()

    def values():
        return ([mx.array(rng.standard_normal(shape).astype(np.float32)) for shape in ((n, n), (n,), (n, n))]
                + [mx.array(float(rng.uniform(0.5, 2.0)), mx.float32)])

    for _ in range(4):
        x, p, c, s = values()
        c = c * 1.0 if lazy else c
        tapes(True)
        taped = mx.grad(lambda x, p, c=c, s=s: program(x, p, c, s), argnums=(0, 1))(x, p)
        tapes(False)
        ruled = mx.grad(lambda x, p, c=c, s=s: program(x, p, c, s), argnums=(0, 1))(x, p)
        for a, b in zip(taped, ruled):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert any(type(e) is tuple for e in _grad_tapes._tapes.values())  # (replayed: nothing here refuses a tape)


def test_vjp_replays_with_new_cotangents_and_keeps_no_graph(on, tapes, rng):
    """``vjp`` walks through tapes too; a tape holds no node of the walk it was recorded from."""
    kept = []

    def f(w, x):
        h = mx.tanh(w @ x) * 2.0
        kept.append(weakref.ref(h))
        return h

    for _ in range(5):
        w, x = (mx.array(rng.standard_normal(s).astype(np.float32)) for s in ((3, 4), (4, 2)))
        c = mx.array(rng.standard_normal((3, 2)).astype(np.float32))
        out, (gw, gx) = mx.vjp(f, [w, x], [c])
        w64, x64, c64 = (np.array(a, np.float64) for a in (w, x, c))
        d = c64 * 2.0 * (1 - np.tanh(w64 @ x64) ** 2)
        np.testing.assert_allclose(np.array(gw), d @ x64.T, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(np.array(gx), w64.T @ d, rtol=1e-4, atol=1e-5)
        del out, gw, gx
    assert any(type(e) is tuple for e in _grad_tapes._tapes.values())
    assert all(ref() is None for ref in kept)


def test_threads_share_tapes(tapes, rng):
    """Walks of one structure on several threads at once (recording, replaying) give each its own gradients."""
    ws = [mx.array(rng.standard_normal((5, 5)).astype(np.float32)) for _ in range(4)]
    f = mx.grad(lambda w: (mx.exp(w @ w * 0.1) * w).sum())
    errors: list = []

    def work(w):
        try:
            for _ in range(6):
                g = np.array(f(w))
                w64 = np.array(w, np.float64)
                e = np.exp(w64 @ w64 * 0.1)
                want = e + 0.1 * ((e * w64) @ w64.T + w64.T @ (e * w64))
                np.testing.assert_allclose(g, want, rtol=1e-4, atol=1e-4)
        except Exception as ex:  # noqa: BLE001 (reported on the test's thread)
            errors.append(ex)

    in_threads(work, ws)
    assert not errors, errors


def test_a_user_rule_that_passes_its_cotangent_through_is_held_to_it(on, tapes):
    """A user's rule that gave its cotangent itself when recorded, and a new array of that shape later, is a
    mismatch: the tape's later steps read the cotangent, not what the rule gives now."""
    doubled = [False]

    @mx.custom_function
    def f(x):
        return mx.sin(x)

    @f.vjp
    def f_vjp(primals, cotangent, output):
        return cotangent * 2.0 if doubled[0] else cotangent

    g = mx.grad(lambda x: (f(x * 3.0) * mx.cos(x)).sum())
    x = mx.array([0.25, 0.5])
    for i in range(5):
        doubled[0] = i >= 3
        want = 3.0 * np.cos([0.25, 0.5]) * (2.0 if doubled[0] else 1.0) - np.sin([0.75, 1.5]) * np.sin([0.25, 0.5])
        np.testing.assert_allclose(np.array(g(x)), want, rtol=1e-5)
