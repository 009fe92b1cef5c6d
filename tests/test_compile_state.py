"""``mx.compile`` as MLX users write training steps: state trees in inputs/outputs, mx.random.state, merged
common subexpressions, captured inputs, and the graph it builds (export_to_dot)."""

from __future__ import annotations

import io
import threading
from functools import partial

import numpy as np
import pytest

import umx as mx
from tests.conftest import assert_close
from umx.utils import tree_flatten


def _counted(f):
    n = [0]

    def g(*args, **kwargs):
        n[0] += 1
        return f(*args, **kwargs)

    return g, n


def _model_and_optimizer(rng):
    """Dict trees standing in for a model's and an SGD-with-momentum optimizer's state."""
    model = {"layers": [{"w": mx.array(rng.standard_normal((3, 4)).astype(np.float32)),
                         "b": mx.zeros((4,))},
                        {"w": mx.array(rng.standard_normal((4, 1)).astype(np.float32)), "b": mx.zeros((1,))}]}
    velocity = [{"w": mx.zeros((3, 4)), "b": mx.zeros((4,))}, {"w": mx.zeros((4, 1)), "b": mx.zeros((1,))}]
    optimizer = {"step": mx.array(0), "lr": mx.array(0.1), "state": {"layers": velocity}}
    return model, optimizer


def _forward(params, x, keep):
    h = mx.maximum(x @ params["layers"][0]["w"] + params["layers"][0]["b"], 0.0)
    h = h * (mx.random.uniform(shape=h.shape) < keep) / keep  # dropout: draws from the global key
    return h @ params["layers"][1]["w"] + params["layers"][1]["b"]


def _make_step(model, optimizer, keep):
    def loss_fn(params, x, y):
        return mx.mean(mx.square(_forward(params, x, keep)[:, 0] - y))

    def step(x, y):
        loss, grads = mx.value_and_grad(loss_fn)(model, x, y)
        optimizer["step"] = optimizer["step"] + 1
        for i, (layer, g) in enumerate(zip(model["layers"], grads["layers"])):
            v = optimizer["state"]["layers"][i]
            for k in ("w", "b"):
                v[k] = 0.9 * v[k] + g[k]
                layer[k] = layer[k] - optimizer["lr"] * v[k]
        return loss

    return step


def test_training_step_with_model_and_optimizer_state(on, rng):
    x = mx.array(rng.standard_normal((16, 3)).astype(np.float32))
    y = mx.array(rng.standard_normal((16,)).astype(np.float32))
    eager_model, eager_opt = _model_and_optimizer(np.random.default_rng(1))
    model, optimizer = _model_and_optimizer(np.random.default_rng(1))
    eager = _make_step(eager_model, eager_opt, 0.75)
    step, n = _counted(_make_step(model, optimizer, 0.75))
    state = [model, optimizer, mx.random.state]
    compiled = partial(mx.compile, inputs=state, outputs=state)(step)
    for i in range(4):
        mx.random.seed(i)
        want = eager(x, y)
        mx.random.seed(i)
        got = compiled(x, y)
        assert_close(got, np.asarray(want), rtol=1e-5)
        for a, b in zip(tree_flatten(model), tree_flatten(eager_model)):
            assert a[0] == b[0]
            assert_close(a[1], np.asarray(b[1]), rtol=1e-5, atol=1e-6)
    assert optimizer["step"].item() == 4 and n[0] == 1
    assert mx.random.state[0].shape == (2,)


def test_random_state_in_compiled_functions(on):
    fun = partial(mx.compile, inputs=mx.random.state, outputs=mx.random.state)(
        lambda: mx.random.uniform(shape=(10, 10)))
    a, b = fun(), fun()
    assert not mx.allclose(a, b).item()  # each call draws anew
    mx.random.seed(42)
    c = fun()
    mx.random.seed(42)
    assert mx.array_equal(c, fun()).item()
    counter = {"v": mx.array(0.0)}
    state = [counter, mx.random.state]

    @partial(mx.compile, inputs=state, outputs=state)
    def count():
        counter["v"] = counter["v"] + 1.0
        return mx.random.uniform(shape=(2,))

    for _ in range(3):
        count()
    assert counter["v"].item() == 3.0
    results = {}

    def worker():
        mx.random.seed(7)
        first = np.asarray(fun())
        mx.random.seed(7)
        results["same"] = np.array_equal(first, np.asarray(fun()))

    t = threading.Thread(target=worker)
    t.start()
    t.join()
    assert results["same"]
    with pytest.raises(TypeError):  # as in MLX: the key is reset by seed, not assigned
        mx.random.state[0] = mx.random.key(1)


def test_common_subexpressions_are_merged(on):
    def fun(x):
        y = x + 1
        z = x + 1
        return y + z

    def count(outputs) -> int:
        buf = io.StringIO()
        mx.export_to_dot(buf, outputs)
        return sum(1 for tok in buf.getvalue().split() if "label" in tok)

    x = mx.array(1.0)
    cfun = mx.compile(fun)
    compiled = count(cfun(x))
    mx.disable_compile()
    try:
        plain = count(cfun(x))
    finally:
        mx.enable_compile()
    assert compiled == 2 and plain == 3 and cfun(x).item() == 4.0
    pair = mx.compile(lambda x: (x + 1, x + 1))(x)  # outputs stay distinct arrays, as in MLX
    assert pair[0] is not pair[1]


def test_captured_inputs_raise(on):
    x = mx.array([1, 2, 3]) + 2

    def fn(a):
        return a + (x + 1)

    with pytest.raises(ValueError, match="input"):
        mx.compile(fn)(x)
    assert mx.compile(fn)(mx.array([1, 2, 3])).tolist() == [5, 7, 9]  # a capture that is no input is fine
    mx.eval(x)
    with pytest.raises(ValueError, match="input"):
        mx.compile(fn)(x)

    def outer(a):  # inside a transform the inner compile may capture what it is given
        b = mx.abs(a)
        return mx.compile(lambda z: -mx.exp(b))(b).sum()

    assert_close(mx.grad(outer)(mx.array([1.0, -2.0])), -np.exp([1.0, 2.0]) * [1, -1], rtol=1e-6)


def test_outputs_with_siblings_and_dot_export(on):
    fun = mx.compile(lambda x, y: mx.divmod(mx.abs(x), mx.abs(y))[0])
    assert fun(mx.array(7.0), mx.array(-2.0)).item() == 3.0
    parts = mx.compile(lambda x: mx.split(x, 2))(mx.arange(4.0))
    assert parts[0]._siblings is not None and [p.tolist() for p in parts] == [[0, 1], [2, 3]]
    a, b = mx.array(1.0), mx.array(2.0)
    buf = io.StringIO()
    mx.export_to_dot(buf, *mx.divmod(a, b), a=a)
    text = buf.getvalue()
    assert text.startswith("digraph {") and text.rstrip().endswith("}")
    assert '"a" ->' in text and 'label ="FloorDivide"' in text and "rank=sink" in text


SHAPELESS = [  # (function, argument shapes of the trace, argument shapes of later calls)
    (lambda x, y: mx.softmax(x * y.sum(0, keepdims=True), axis=-1) + mx.cumsum(x, axis=1), [(2, 3), (4, 3)],
     [[(3, 5), (2, 5)], [(1, 1), (7, 1)]]),
    (lambda a, b: mx.tanh(a @ b).T + 1, [(2, 3), (3, 4)], [[(5, 2), (2, 6)]]),
    (lambda a: mx.concatenate([a[:, -1:], mx.sort(a, axis=0)], axis=1), [(3, 4)], [[(5, 2)], [(1, 7)]]),
    (lambda a: mx.pad(a * mx.max(a, axis=1, keepdims=True), ((1, 0), (2, 1))), [(2, 2)], [[(3, 5)]]),
    (lambda a: a.reshape(a.shape[0], -1).sum(axis=1) + mx.expand_dims(a, 0).sum(), [(2, 3, 4)], [[(2, 5, 1)]]),
]


@pytest.mark.parametrize("case", range(len(SHAPELESS)))
def test_shapeless_compile_traces_once(on, rng, case):
    fn, first, later = SHAPELESS[case]
    f, n = _counted(fn)
    cf = mx.compile(f, shapeless=True)
    for shapes in [first] + later:
        args = [mx.array(rng.standard_normal(s).astype(np.float32)) for s in shapes]
        got = cf(*args)
        want = np.asarray(fn(*args))
        assert got.shape == want.shape
        assert_close(got, want, rtol=1e-5, atol=1e-6)
    assert n[0] == 1  # one trace for every shape


def test_shapeless_keeps_what_python_computed(on):
    y = 1
    f, n = _counted(lambda x: x + y)
    cf = mx.compile(f, shapeless=True)
    assert cf(mx.array([1, 2])).tolist() == [2, 3]
    y = 2  # not seen by replays, as in MLX
    assert cf(mx.array([1, 2, 3])).tolist() == [2, 3, 4]
    assert cf(mx.array([1.0, 2.0])).tolist() == [3, 4]  # a new dtype traces again
    assert cf(mx.array([[1, 2]])).tolist() == [[3, 4]]  # so does a new rank
    assert n[0] == 3
    flat = mx.compile(lambda x: x.reshape(x.shape[0] * x.shape[1], -1), shapeless=True)
    assert flat(mx.zeros((2, 3, 4))).shape == (6, 4)
    assert flat(mx.zeros((2, 3, 8))).shape == (6, 8)  # the -1 is inferred again, the 6 stays
    with pytest.raises(ValueError):
        flat(mx.zeros((5, 5, 5)))
    zeros = mx.compile(lambda x: mx.zeros_like(x) + 1, shapeless=True)  # made from x.shape alone: traced again
    assert zeros(mx.zeros((1, 32))).shape == (1, 32) and zeros(mx.zeros((2, 16))).shape == (2, 16)


def test_shapeless_with_grad_and_vmap(on, rng):
    grad = mx.compile(mx.grad(lambda args: (args[0] @ args[1]).sum()), shapeless=True)
    for sa, sb in [((2, 1, 4, 2), (3, 2, 5)), ((3, 1, 4, 2), (2, 2, 5))]:
        a = mx.array(rng.standard_normal(sa).astype(np.float32))
        b = mx.array(rng.standard_normal(sb).astype(np.float32))
        ga, gb = grad((a, b))
        assert ga.shape == sa and gb.shape == sb
        want = mx.grad(lambda args: (args[0] @ args[1]).sum())((a, b))
        assert_close(ga, np.asarray(want[0]), rtol=1e-5) and assert_close(gb, np.asarray(want[1]), rtol=1e-5)
    f, n = _counted(mx.matmul)
    batched = mx.compile(mx.vmap(f, in_axes=(0, 1)), shapeless=True)
    for sx, sy in [((2, 3, 1, 4, 5), (1, 2, 5, 6)), ((3, 2, 1, 4, 5), (2, 3, 5, 6))]:
        x = mx.array(rng.standard_normal(sx).astype(np.float32))
        y = mx.array(rng.standard_normal(sy).astype(np.float32))
        want = np.matmul(np.asarray(x), np.moveaxis(np.asarray(y), 1, 0)[:, None])  # (each slice aligned)
        assert_close(batched(x, y), want, rtol=1e-5)
    assert n[0] == 1
