"""``mx.compile``: replays give the uncompiled results, the cache keys on what it must, state and transforms."""

from __future__ import annotations

import collections
import os
import subprocess
import sys
import threading

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import umx as mx
from tests.conftest import assert_close


def _counted(f):
    """``f`` and a list whose first item counts its calls (a replay does not call it)."""
    n = [0]

    def g(*args, **kwargs):
        n[0] += 1
        return f(*args, **kwargs)

    return g, n


def _seed_like(a, b):
    x = a @ b
    for _ in range(20):
        b = mx.exp(b) * 0.5
    return x, b


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_same_results(device, rng, dtype):
    with mx.stream(device):
        f, n = _counted(_seed_like)
        cf = mx.compile(f)
        for shape in [(5, 3), (1, 1), (0, 3)]:
            for _ in range(2):
                a = mx.array(rng.standard_normal((4, shape[0])).astype(dtype))
                b = mx.array(rng.standard_normal(shape).astype(dtype))
                got, want = cf(a, b), _seed_like(a, b)
                for g, w in zip(got, want):
                    assert g.dtype == w.dtype and g.shape == w.shape
                    assert_close(g, np.asarray(w), rtol=1e-3, atol=1e-3)
        assert n[0] == 3  # one trace per shape


def test_cache_hits_and_retraces(rng):
    f, n = _counted(lambda x, s: mx.sin(x) * s)
    cf = mx.compile(f)
    x = mx.array(rng.standard_normal((3, 2)).astype(np.float32))
    for _ in range(3):
        assert_close(cf(x, 2.0), 2 * np.sin(np.asarray(x, np.float64)), rtol=1e-5)
    assert n[0] == 1
    cf(x + 1, 2.0)  # new values, same signature
    assert n[0] == 1
    cf(mx.ones((4,)), 2.0)  # new shape
    cf(mx.ones((4,), mx.float16), 2.0)  # new dtype
    cf(mx.ones((4,), mx.float16), 3.0)  # scalars count by value
    assert_close(cf(mx.ones((2,), mx.int32), 2), 2 * np.sin(np.ones(2)), rtol=1e-5)
    cf(mx.ones((2,), mx.int32), True)  # 2, 2.0 and True are different
    assert n[0] == 6
    assert len(cf._cache) == 6


def test_default_stream_is_part_of_the_signature():
    f, n = _counted(lambda x: x + 1)
    cf = mx.compile(f)
    x = mx.ones((2,))
    s2 = mx.new_stream(mx.cpu)
    assert cf(x)._stream == mx.default_stream(mx.default_device())
    with mx.stream(s2):
        y = cf(x)
    assert y._stream == s2 and n[0] == 2
    z = mx.compile(lambda a: mx.exp(a, stream=s2))(x)  # an explicit stream is recorded
    assert z._stream == s2
    assert_close(y, [2, 2])


def test_trees_kwargs_and_scalars(rng):
    Pair = collections.namedtuple("Pair", "a b")

    def f(p, d, *, scale, name="x"):
        return {"sum": p.a + p.b * scale, "prod": [d["w"] * p.a, name], "n": 3}

    cf = mx.compile(f)
    for _ in range(2):
        a, b, w = (mx.array(rng.standard_normal(3).astype(np.float32)) for _ in range(3))
        got = cf(Pair(a, b), {"w": w}, scale=2.0)
        assert got["n"] == 3 and got["prod"][1] == "x"
        assert_close(got["sum"], np.asarray(a) + 2 * np.asarray(b))
        assert_close(got["prod"][0], np.asarray(w) * np.asarray(a))
    got = cf(Pair(a, b), {"w": w}, scale=-1.0, name="y")
    assert_close(got["sum"], np.asarray(a) - np.asarray(b))
    assert got["prod"][1] == "y"
    assert len(cf._cache) == 2


def test_closures_are_captured_at_the_trace():
    w = mx.array([1.0, 2.0])
    f, n = _counted(lambda x: x * w)
    cf = mx.compile(f)
    assert_close(cf(mx.ones(2)), [1, 2])
    w = mx.array([5.0, 5.0])  # a new array under the name: the trace keeps the old one (as in MLX)
    assert_close(cf(mx.ones(2)), [1, 2])
    lazy = mx.arange(3.0) * 2  # an unevaluated capture
    g = mx.compile(lambda x: x + lazy)
    assert_close(g(mx.ones(3)), [1, 3, 5])
    assert_close(g(mx.zeros(3)), [0, 2, 4])
    assert n[0] == 1


def test_outputs_multi_and_passthrough(rng):
    cf = mx.compile(lambda x: (mx.split(x, 3, axis=0), x, mx.linalg.qr(x, stream=mx.cpu)))
    for _ in range(4):  # the trace, interpreted replays, then the generated code
        x = mx.array(rng.standard_normal((6, 6)).astype(np.float32))
        parts, same, (q, r) = cf(x)
        assert same is x
        assert all(s is p for s, p in zip(parts[0]._siblings, parts, strict=True))  # one task computes them
        for i, p in enumerate(parts):
            assert_close(p, np.asarray(x)[2 * i:2 * i + 2])
        assert_close(q @ r, np.asarray(x), rtol=1e-4, atol=1e-4)
    only_r = mx.compile(lambda x: mx.linalg.qr(x, stream=mx.cpu)[1])  # a sibling no output needs
    assert_close(only_r(x), np.asarray(r), rtol=1e-4, atol=1e-4)
    assert_close(only_r(x * 2), 2 * np.asarray(r), rtol=1e-4, atol=1e-4)


def test_same_input_twice_then_different():
    cf = mx.compile(lambda a, b: a - b)
    x = mx.array([1.0, 2.0])
    assert_close(cf(x, x), [0, 0])
    assert_close(cf(x, mx.array([1.0, 1.0])), [0, 1])
    assert len(cf._cache) == 1


def test_lazy_and_zero_d_inputs():
    cf = mx.compile(lambda a, b: (a * b).sum())
    assert_close(cf(mx.arange(3.0) + 1, mx.array(2.0)), 12.0)
    assert_close(cf(mx.arange(3.0), mx.array(-1.0)), -3.0)
    cg = mx.compile(lambda s, x: x * s)  # an evaluated 0-d int would fold into a constant: not when traced
    assert_close(cg(mx.array(2), mx.ones(2)), [2, 2])
    assert_close(cg(mx.array(3), mx.ones(2)), [3, 3])
    ci = mx.compile(lambda x, i: x[i] + x[1])
    assert_close(ci(mx.arange(4.0), mx.array([0, 3])), [1, 4])
    assert_close(ci(mx.arange(4.0), mx.array([2, 2])), [3, 3])


def test_random_draws_fresh_numbers_like_uncompiled():
    def f(x):
        return x + mx.random.normal(x.shape) + mx.random.uniform(shape=x.shape)

    cf = mx.compile(f)
    x = mx.zeros((4,))
    mx.random.seed(7)
    got = [np.asarray(cf(x)) for _ in range(3)]
    mx.random.seed(7)
    want = [np.asarray(f(x)) for _ in range(3)]
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)
    assert not np.array_equal(got[0], got[1])
    k = mx.random.key(3)  # an explicit key stays a constant
    ck = mx.compile(lambda x: x + mx.random.normal(x.shape, key=k))
    np.testing.assert_array_equal(np.asarray(ck(x)), np.asarray(ck(x)))


def test_eval_inside_falls_back(rng):
    def f(x):
        return x * float(x.sum()) if x.sum().item() > 0 else -x

    g, n = _counted(f)
    cf = mx.compile(g)
    for v in (1.0, -1.0, 2.0):
        x = mx.full((3,), v)
        assert_close(cf(x), np.asarray(f(x)))
    assert n[0] == 3  # every call runs the function: its values steer its control flow
    h, m = _counted(lambda x: np.asarray(x).sum() + x)  # a host read of an input is an eval too
    ch = mx.compile(h)
    assert_close(ch(mx.ones(2)), [3, 3])
    assert_close(ch(mx.zeros(2)), [0, 0])
    assert m[0] == 2


def test_setitem_on_an_argument():
    def f(x):
        x[0] = 5.0
        return x * 2

    cf = mx.compile(f)
    for v in (1.0, 2.0):
        x = mx.full((3,), v)
        assert_close(cf(x), [10, 2 * v, 2 * v])
        assert_close(x, [v, v, v])  # the caller's array is unchanged (MLX's rule for compiled functions)


def test_state_inputs_and_outputs():
    state = {"total": mx.array(0.0), "steps": [mx.array(0)]}

    def step(x):
        state["total"] = state["total"] + x.sum()
        state["steps"][0] = state["steps"][0] + 1
        return state["total"] * 2

    f, n = _counted(step)
    cf = mx.compile(f, inputs=state, outputs=state)
    for i in range(1, 4):
        out = cf(mx.ones((2,)))
        assert_close(out, 4.0 * i)
        assert_close(state["total"], 2.0 * i)
        assert state["steps"][0].item() == i
    assert n[0] == 1
    with pytest.raises(TypeError, match="tuples"):
        mx.compile(lambda: None, inputs=(mx.ones(1),))()


def test_disable_compile_calls_the_function():
    f, n = _counted(lambda x: x + 1)
    cf = mx.compile(f)
    cf(mx.ones(1))
    mx.disable_compile()
    try:
        for _ in range(2):
            assert_close(cf(mx.ones(1)), [2])
        assert n[0] == 3
    finally:
        mx.enable_compile()
    cf(mx.ones(1))
    assert n[0] == 3


def test_disable_by_environment_variable():
    code = ("import umx as mx; n = []; f = mx.compile(lambda x: n.append(1) or x + 1); f(mx.ones(1)); "
            "f(mx.ones(1)); mx.enable_compile(); f(mx.ones(1)); f(mx.ones(1)); print(len(n))")
    env = dict(os.environ, MLX_DISABLE_COMPILE="0")  # set at all, it disables (as in MLX)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=root, capture_output=True, text=True,
                         check=True)
    assert out.stdout.split() == ["3"]


def test_argument_types_as_mlx():
    """Arguments are trees of arrays and constants (bool, int, float, str, None); anything else raises
    ValueError at the call, as in MLX; a function that is not callable raises TypeError at compile."""
    f, n = _counted(lambda x, table, name=None: x + table[0][0] * len(name or ""))
    cf = mx.compile(f)
    assert_close(cf(mx.ones(2), [(3, "a")], name="ab"), [7, 7])
    for bad in ([np.ones(1)], object(), 1j, b"x"):
        with pytest.raises(ValueError, match="constants"):
            cf(mx.ones(2), bad)
        with pytest.raises(ValueError, match="constants"):
            cf(mx.ones(2), [(1, "a")], name=bad)
    assert n[0] == 1
    with pytest.raises(TypeError, match="function"):
        mx.compile(5)


def test_grad_jvp_vmap_compose(rng):
    f = lambda x, w: mx.tanh(x @ w).sum()  # noqa: E731
    cf = mx.compile(f)
    x = mx.array(rng.standard_normal((3, 4)).astype(np.float32))
    w = mx.array(rng.standard_normal((4, 2)).astype(np.float32))
    want = mx.grad(f, argnums=(0, 1))(x, w)
    for _ in range(2):
        got = mx.grad(cf, argnums=(0, 1))(x, w)
        for g, e in zip(got, want):
            assert_close(g, np.asarray(e), rtol=1e-5)
    gc = mx.compile(mx.grad(f))  # compiling a gradient
    for _ in range(2):
        assert_close(gc(x, w), np.asarray(want[0]), rtol=1e-5)
    _, t = mx.jvp(lambda a: cf(a, w), [x], [mx.ones_like(x)])
    _, te = mx.jvp(lambda a: f(a, w), [x], [mx.ones_like(x)])
    assert_close(t[0], np.asarray(te[0]), rtol=1e-5)
    row = mx.compile(lambda r: mx.sin(r) * r.sum())
    for _ in range(2):
        got = mx.vmap(row)(x)
        xs = np.asarray(x, np.float64)
        assert_close(got, np.sin(xs) * xs.sum(axis=1, keepdims=True), rtol=1e-5)


def test_nested_compile_keeps_randomness():
    inner = mx.compile(lambda x: x + mx.random.uniform(shape=x.shape))
    outer = mx.compile(lambda x: inner(x) * 1)
    x = mx.zeros((3,))
    a, b = np.asarray(outer(x)), np.asarray(outer(x))
    assert not np.array_equal(a, b)


def test_checkpoint_custom_and_odd_outputs():
    cc = mx.compile(lambda x: mx.checkpoint(lambda a: mx.sin(mx.exp(a)))(x).sum())
    x = mx.array([0.1, 0.2])
    want = mx.grad(lambda a: mx.sin(mx.exp(a)).sum())(x)
    for _ in range(2):
        assert_close(mx.grad(cc)(x), np.asarray(want), rtol=1e-5)
    f, n = _counted(lambda x: None)
    cf = mx.compile(f)
    assert cf(x) is None and cf(x) is None and n[0] == 1
    twice = mx.compile(lambda x: (x + 1, x + 1, [x * 2] * 2))
    a, b, (c, d) = twice(x)
    a, b, (c, d) = twice(x)
    assert a is not b and c is d
    assert_close(b, [1.1, 1.2])


@pytest.mark.parametrize("generate_at", [1, 10**6])
def test_generated_and_interpreted_replays(monkeypatch, generate_at):
    from umx.transforms._tape import Tape

    monkeypatch.setattr(Tape, "GENERATE_AT", generate_at)
    state = [mx.array(1.0)]

    def f(x, y):
        parts = mx.split(x * y + mx.arange(4.0), 2)
        state[0] = state[0] * 2
        return {"p": parts, "r": x + mx.random.uniform(shape=x.shape), "z": mx.zeros((2,)) + 1, "x": x}

    cf = mx.compile(f, inputs=state, outputs=state)
    x, y = mx.arange(4.0), mx.array(3.0)
    mx.random.seed(5)
    got = [cf(x, y) for _ in range(3)]
    assert state[0].item() == 8.0
    state[0] = mx.array(1.0)
    mx.random.seed(5)
    want = [f(x, y) for _ in range(3)]
    for g, w in zip(got, want):
        assert g["x"] is x
        assert g["p"][0]._siblings is not None
        for key in ("r", "z"):
            np.testing.assert_array_equal(np.asarray(g[key]), np.asarray(w[key]))
        for a, b in zip(g["p"], w["p"]):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_training_step_with_state(rng):
    x = mx.array(rng.standard_normal((16, 3)).astype(np.float32))
    y = mx.array(rng.standard_normal((16,)).astype(np.float32))

    def loss_fn(w, x, y):
        return ((x @ w - y) ** 2).mean()

    def make_step(state):
        def step(x, y):
            loss, g = mx.value_and_grad(loss_fn)(state[0], x, y)
            state[0] = state[0] - 0.1 * g
            return loss

        return step

    w0 = mx.array(rng.standard_normal((3,)).astype(np.float32))
    eager_state, comp_state = [w0], [w0]
    eager = make_step(eager_state)
    f, n = _counted(make_step(comp_state))
    compiled = mx.compile(f, inputs=comp_state, outputs=comp_state)
    for _ in range(5):
        assert_close(compiled(x, y), np.asarray(eager(x, y)), rtol=1e-5)
        assert_close(comp_state[0], np.asarray(eager_state[0]), rtol=1e-5)
    assert n[0] == 1


def test_errors_and_threads():
    cf = mx.compile(lambda a: a @ a)
    for _ in range(2):
        with pytest.raises(ValueError):
            cf(mx.ones((2, 3)))
    assert not cf._cache
    sq = mx.compile(lambda a: mx.exp(a) * a)
    errors = []

    def work(k):
        try:
            for i in range(10):
                a = mx.full((k + i % 3,), float(k))
                assert_close(sq(a), np.exp(np.asarray(a, np.float64)) * k, rtol=1e-5)
        except Exception as e:  # reported on the main thread
            errors.append(e)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(1, 5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


def test_constant_steps_are_folded(device, rng):
    """Steps that read only constants (a closure weight's transpose, an arange) are computed once at the trace;
    a large new buffer is not kept, and the results match the uncompiled function's."""
    with mx.stream(device):
        w = mx.array(rng.standard_normal((32, 64)).astype(np.float32))
        big = mx.array(rng.standard_normal((600, 600)).astype(np.float32))
        mx.eval(w, big)

        def f(x, s):
            positions = mx.arange(32, dtype=mx.float32) * 0.5  # small: folded
            total = mx.sqrt(mx.square(big).sum())  # a chain to a scalar: the scalar is kept
            scaled = (mx.exp(big) * s).mean()  # the exp's 1.4 MB result is not kept: recomputed each call
            return (x @ w.T + positions) * total * scaled

        cf = mx.compile(f)
        x = mx.array(rng.standard_normal((4, 64)).astype(np.float32))
        s = mx.array(0.5, mx.float32)
        for _ in range(2):
            want = np.asarray(f(x, s))
            # (sums of products of thousands cancel: float32's rounding, scaled to the largest value, bounds them;
            # a folded transpose and a view of one give the GPU's GEMM different layouts)
            assert_close(cf(x, s), want, rtol=1e-5, atol=1e-6 * float(np.abs(want).max()))
        (tape,) = cf._cache.values()
        prims = [type(p).__name__ for p, *_ in tape.steps]
        assert not {"Transpose", "Arange", "Sqrt", "Square", "Sum"} & set(prims)
        assert "Exp" in prims


def _as_program(monkeypatch):
    """Make every replayed tape a Program, as a GPU stream's executor has them (the CPU's runs its steps)."""
    from umx.transforms import _tape

    monkeypatch.setattr(_tape, "program_for", lambda tape: _tape.Program(tape, tape.steps[0][4]))


def test_a_program_is_one_node_with_the_replays_results(monkeypatch, rng):
    """A compiled call as one ``Compiled`` node (a GPU runs it as one CUDA graph; a CPU executor step by step):
    fresh random draws, a captured host constant, bfloat16 inputs, state outputs and outputs that are inputs
    are those of the function itself; under ``grad`` the graph is replayed node by node."""
    _as_program(monkeypatch)
    table = mx.array(rng.standard_normal((6, 5)).astype(np.float32)).astype(mx.bfloat16)  # (reaches it as storage)
    state = [mx.array(0.0)]

    def f(x, h):
        y = mx.tanh(x @ table.astype(mx.float32)) * 2 + 1
        z = (y.astype(mx.bfloat16) * h).astype(mx.float32).sum(axis=1)
        state[0] = state[0] + z.sum()
        return {"y": y, "z": z, "noise": mx.random.uniform(shape=(3,)) + 0 * z[0], "x": x}

    cf = mx.compile(f, inputs=state, outputs=state)
    x = mx.array(rng.standard_normal((4, 6)).astype(np.float32))
    h = mx.array(rng.standard_normal((4, 5)).astype(np.float32)).astype(mx.bfloat16)
    mx.random.seed(3)
    got = [cf(x, h) for _ in range(3)]
    made = {type(g["y"]._prim).__name__ for g in got[1:]}  # (the first call traces: the graph itself)
    total = state[0].item()
    state[0] = mx.array(0.0)
    mx.random.seed(3)
    want = [f(x, h) for _ in range(3)]
    assert total == pytest.approx(state[0].item(), rel=1e-6)
    assert made == {"Compiled"} and got[2]["x"] is x
    for g, w in zip(got, want):
        for k in ("y", "z", "noise"):
            np.testing.assert_allclose(np.asarray(g[k]), np.asarray(w[k]), rtol=1e-6)
    assert not np.array_equal(np.asarray(got[0]["noise"]), np.asarray(got[1]["noise"]))
    grads = mx.grad(lambda x: cf(x, h)["z"].sum())(x)
    np.testing.assert_allclose(np.asarray(grads), np.asarray(mx.grad(lambda x: f(x, h)["z"].sum())(x)), rtol=1e-5)


def test_a_programs_private_graph_is_fused_as_an_eval_would(monkeypatch, rng):
    """What a GPU executor captures: the program's graph rebuilt on the node's inputs as nodes of its own, fused,
    each sibling a task of its own; the caller's arrays are left as they were."""
    from umx.runtime.fusion import Fused, collect_private

    _as_program(monkeypatch)
    cf = mx.compile(lambda x, w: (mx.exp(mx.sin(x @ w) * 2 + 1), (x * 3).sum()))
    x, w = mx.array(rng.standard_normal((3, 4)).astype(np.float32)), mx.array(np.eye(4, dtype=np.float32))
    mx.eval(x, w)
    cf(x, w)
    a, b = cf(x, w)
    node = a
    outs = node._prim.program.build(node._inputs)
    tasks = collect_private(outs)
    roots = [t.root if type(t) is Fused else t for t in tasks]
    assert any(type(t) is Fused for t in tasks) and all(any(o is r for r in roots) for o in outs)
    assert x._data is not None and w._data is not None and a._data is None
    np.testing.assert_allclose(np.asarray(a), np.exp(np.sin(np.asarray(x)) * 2 + 1), rtol=1e-5)


def test_small_compiled_steps_on_the_cpu_are_programs_and_large_ones_replay(rng):
    """The CPU runs a compiled call of small steps as one node, step by step (no nodes, no planning); a graph
    with a large step replays node by node, to be fused and split across cores."""
    from umx.transforms._tape import PROGRAM_MIN_STEPS

    def f(x):
        for _ in range(PROGRAM_MIN_STEPS):
            x = mx.sin(x) * 1.5
        return x

    cf = mx.compile(f)
    with mx.stream(mx.cpu):
        for n in (1000, 1 << 17):
            x = mx.array(rng.standard_normal(n).astype(np.float32))
            kind = type(cf(x)._prim).__name__
            assert kind == ("Compiled" if n == 1000 else "Multiply")
            assert_close(cf(x), np.asarray(f(x)), rtol=1e-6)


def test_a_failing_step_of_a_program_names_itself():
    """A kernel error inside a program surfaces from eval as the step's own error, with the step named."""
    cf = mx.compile(lambda a: (mx.linalg.inv(mx.sin(a) * 0 + a) @ a * 2 + 1 - a).sum() * 3 + a.max())
    with mx.stream(mx.cpu):
        a = mx.zeros((3, 3))
        for _ in range(2):
            out = cf(a)
            assert type(out._prim).__name__ == "Compiled"
            with pytest.raises(np.linalg.LinAlgError, match="Singular") as info:
                out.item()
            assert any("in Inv of a compiled function" in note for note in info.value.__notes__)


def test_a_program_reads_constants_that_were_lazy_at_the_trace(rng):
    """Constants captured unevaluated (a scaled weight, a 0-d factor) are inputs of the program's node, computed
    before it runs."""
    w = mx.array(rng.standard_normal((8, 8)).astype(np.float32))
    scale = mx.array(3.0) * 2  # lazy, 0-d
    w2 = w * 0.5  # lazy
    x = mx.array(rng.standard_normal((2, 8)).astype(np.float32))

    def f(x):
        h = x @ w2
        for _ in range(4):
            h = mx.tanh(h) * scale + 1
        return h

    with mx.stream(mx.cpu):
        cf = mx.compile(f)
        first = cf(x)
        later = cf(x)
        assert type(later._prim).__name__ == "Compiled" and scale._data is None
        want = np.asarray(x) @ (np.asarray(w) * 0.5)
        for _ in range(4):
            want = np.tanh(want) * 6 + 1
        assert_close(first, want, rtol=1e-5)
        assert_close(later, want, rtol=1e-5)
        assert_close(cf(x), want, rtol=1e-5)


def test_a_program_run_step_by_step_lets_intermediates_go_after_their_last_reader(rng):
    """Each step's result is dropped once its last reader has run (an output never is): the step-by-step route
    holds what a replay would, not every intermediate of the graph."""

    def f(x):
        a = mx.sin(x) + 1
        b = a * 2
        c = mx.exp(b) - a  # a's last reader
        d = c * c + b  # b's last reader
        return d.sum(), c

    with mx.stream(mx.cpu):
        cf = mx.compile(f)
        x = mx.array(rng.standard_normal(16).astype(np.float32))
        s, c = cf(x)
        program = s._prim.program
        tape = program.tape
        frees = program._last_reads()
        freed = [r for step in frees for r in step]
        first = len(tape.consts) + tape.n_ins + tape.n_keys
        assert sorted(freed) == sorted(set(range(first, first + tape.n_steps)) - set(tape.out_refs))
        for i, step in enumerate(frees):  # each is freed where it is read for the last time
            for r in step:
                assert r in tape.refs[i] and all(r not in refs for refs in tape.refs[i + 1:])
        assert_close(s, np.asarray(f(x)[0]), rtol=1e-5)
        assert_close(c, np.asarray(f(x)[1]), rtol=1e-5)


def test_a_program_reads_a_constant_as_it_was_at_the_call(rng):
    """A constant the function captured and the user updates in place (``w += 1``) after a call, before its
    results are evaluated: the call reads the value it had then, step by step (the CPU) and in the graph an
    executor builds for it (the GPU's route, built here on the CPU)."""
    w = mx.array(rng.standard_normal((4, 4)).astype(np.float32))
    mx.eval(w)
    w0 = np.asarray(w).copy()
    x = mx.array(rng.standard_normal((2, 4)).astype(np.float32))

    def f(x):
        h = x @ w
        for _ in range(4):
            h = mx.sin(h) * 2 + 1
        return h

    def want(wv):
        h = np.asarray(x) @ wv
        for _ in range(4):
            h = np.sin(h) * 2 + 1
        return h

    with mx.stream(mx.cpu):
        cf = mx.compile(f)
        mx.eval(cf(x))
        y = cf(x)
        rebuilt = y._prim.program.build(y._inputs)
        w += 1
        built = y._prim.program.build(y._inputs)
        assert_close(y, want(w0), rtol=1e-5)
        assert_close(rebuilt[0], want(w0), rtol=1e-5)
        assert_close(built[0], want(w0), rtol=1e-5)
        assert_close(cf(x), want(w0 + 1), rtol=1e-5)


_CHAIN_OPS = {
    "sin": lambda h, c: mx.sin(h),
    "tanh": lambda h, c: mx.tanh(h),
    "scale": lambda h, c: h * 1.5 - 0.25,
    "mix": lambda h, c: h + c,
    "product": lambda h, c: h @ c * 0.5,
    "transpose": lambda h, c: h.T,
    "row sums": lambda h, c: h - mx.mean(h, axis=1, keepdims=True),
    "flatten": lambda h, c: mx.reshape(h, (-1,)).reshape(h.shape),
    "bf16": lambda h, c: h.astype(mx.bfloat16).astype(mx.float32),
    "softmax": lambda h, c: mx.softmax(h, axis=-1),
}


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(ops=st.lists(st.sampled_from(sorted(_CHAIN_OPS)), min_size=8, max_size=20), n=st.sampled_from([1, 3, 6]),
       seed=st.integers(0, 2**16))
def test_random_compiled_chains_as_programs_match_uncompiled(ops, n, seed):
    """Random chains of ops on small square arrays, compiled (a CPU program: every step is small) and called
    three times, give the uncompiled results, with the outputs' tree and the chain's intermediates as outputs."""
    rng = np.random.default_rng(seed)
    c = mx.array(rng.standard_normal((n, n)).astype(np.float32))

    def f(x):
        h, kept = x, []
        for i, name in enumerate(ops):
            h = _CHAIN_OPS[name](h, c)
            if i % 5 == 4:
                kept.append(h)
        return h, kept

    with mx.stream(mx.cpu):
        cf = mx.compile(f)
        for _ in range(3):
            x = mx.array(rng.standard_normal((n, n)).astype(np.float32))
            got, want = cf(x), f(x)
            assert type(got[0]._prim).__name__ == "Compiled"
            np.testing.assert_allclose(np.asarray(got[0]), np.asarray(want[0]), rtol=1e-4, atol=1e-5)
            for a, b in zip(got[1], want[1], strict=True):
                np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-5)
        # the graph a GPU executor builds for such a call (Program.build), evaluated here as nodes
        y = cf(x)[0]
        built = y._prim.program.build(y._inputs)
        np.testing.assert_allclose(np.asarray(built[0]), np.asarray(f(x)[0]), rtol=1e-4, atol=1e-5)
