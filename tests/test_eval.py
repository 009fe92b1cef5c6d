"""Lazy evaluation: graphs, eval and async_eval, implicit evaluation, deep graphs, freeing, stream order."""

from __future__ import annotations

import gc
import sys
import threading
import weakref

import numpy as np
import pytest
from conftest import assert_close, in_threads

import umx as mx


def test_ops_are_lazy(device):
    a = mx.array([1.0, 2.0])
    b = mx.exp(a, stream=device)
    assert b._data is None and b._prim is not None
    assert b.shape == (2,) and b.dtype == mx.float32  # known without evaluating
    assert b._data is None
    mx.eval(b)
    assert b._data is not None
    assert_close(b, np.exp([1.0, 2.0]))


def test_eval_trees_and_other_leaves(device):
    x = mx.array([1.0, 2.0])
    a, b, c = (mx.add(x, i, stream=device) for i in range(3))
    assert mx.eval([a, (b, {"k": c, "n": 3}), "s", None]) is None
    assert all(t._data is not None for t in (a, b, c))
    mx.eval()  # nothing to do


def test_eval_again_is_noop(device, monkeypatch):
    a = mx.exp(mx.ones(3), stream=device)
    mx.eval(a)
    data = a._data
    from umx.runtime import executor

    calls = []
    monkeypatch.setattr(executor.WorkerExecutor, "submit", lambda self, t: calls.append(t))
    mx.eval(a)
    a.item if a.size == 1 else a.tolist()
    assert a._data is data and not calls


def test_async_eval(device):
    a = mx.square(mx.arange(5, stream=device), stream=device)
    assert mx.async_eval(a) is None
    assert a.tolist() == [0, 1, 4, 9, 16]  # waits for the result


def test_async_eval_returns_before_result():
    """async_eval returns at once (checked loosely: the kernel is held until we let it go)."""
    from umx.backends.cpu import executor as cpu_ex
    from umx.primitives import UNARY

    gate = threading.Event()
    kernel_cls = type(UNARY["Exp"])
    real = cpu_ex.KERNELS[kernel_cls]

    def slow(prim, x):
        gate.wait(10)
        return real(prim, x)

    cpu_ex.KERNELS[kernel_cls] = slow
    try:
        a = mx.exp(mx.ones((100, 100)), stream=mx.new_stream(mx.cpu))
        mx.async_eval(a)
        assert a._data is None  # the caller did not wait for the kernel
        gate.set()
        mx.eval(a)
    finally:
        cpu_ex.KERNELS[kernel_cls] = real
    assert_close(a, np.full((100, 100), np.e))


def test_ops_never_wait(device):
    """Building ops on a busy stream returns at once: only eval waits."""
    from umx.backends.cpu import executor as cpu_ex
    from umx.primitives import UNARY

    if device != mx.cpu:
        pytest.skip("uses the CPU kernel table")
    gate = threading.Event()
    cls = type(UNARY["Sin"])
    real = cpu_ex.KERNELS[cls]
    cpu_ex.KERNELS[cls] = lambda prim, x: (gate.wait(10), real(prim, x))[1]
    try:
        s = mx.new_stream(mx.cpu)
        a = mx.sin(mx.ones(4), stream=s)
        mx.async_eval(a)
        b = mx.add(a, 1.0, stream=s)  # depends on the blocked node, but building it must not block
        c = mx.add(b, 1.0, stream=mx.new_stream(mx.cpu))
        mx.async_eval(c)
        assert c._data is None
        gate.set()
    finally:
        cpu_ex.KERNELS[cls] = real
    assert_close(c, np.sin(np.ones(4)) + 2)


@pytest.mark.parametrize("how", ["item", "tolist", "repr", "bool", "np", "float", "int", "str", "iter"])
def test_implicit_eval(device, how):
    a = mx.add(mx.array([3.0]), 1.0, stream=device)
    assert a._data is None
    out = {"item": lambda: a.item(), "tolist": lambda: a.tolist(), "repr": lambda: repr(a),
           "bool": lambda: bool(a), "np": lambda: np.array(a), "float": lambda: float(a),
           "int": lambda: int(a), "str": lambda: str(a), "iter": lambda: [x.item() for x in a]}[how]()
    assert a._data is not None
    expected = {"item": 4.0, "tolist": [4.0], "bool": True, "float": 4.0, "int": 4, "iter": [4.0]}
    if how in expected:
        assert out == expected[how]
        assert type(out) is type(expected[how])
    elif how == "np":
        np.testing.assert_array_equal(out, [4.0])
        assert out.dtype == np.float32
    else:
        assert out == "array([4], dtype=float32)"


@pytest.mark.skipif(sys.version_info < (3, 12), reason="the buffer protocol from Python needs 3.12")
def test_implicit_eval_buffer(device):
    a = mx.add(mx.array([1, 2], dtype=mx.int32), 1, stream=device)
    assert memoryview(a).tolist() == [2, 3]


def test_item_and_bool_need_one_element(device):
    a = mx.ones(3, stream=device)
    with pytest.raises(ValueError):
        a.item()
    with pytest.raises(ValueError):
        bool(a)
    with pytest.raises(TypeError):
        len(mx.array(1))
    assert len(a) == 3


def test_unused_branch_not_computed(device):
    """Only the nodes the targets need run: a branch whose kernel would raise is never evaluated."""
    x = mx.array([0, 1, 2])
    with mx.stream(mx.cpu):  # the CPU bounds-checks gathers; GPUs (CuPy's, MLX's) do not
        bad = x[mx.array([7])]  # out of bounds: its kernel raises
    bad2 = mx.add(bad, 1, stream=device)
    good = mx.multiply(x, 2, stream=device)
    assert good.tolist() == [0, 2, 4]
    assert bad._data is None and bad2._data is None
    with pytest.raises(IndexError):
        mx.eval(bad2)


def test_chain_100k_evaluates_and_frees(device):
    n = 100_000
    x = mx.array(0, dtype=mx.int32)
    first = mx.add(x, 1, stream=device)
    ref = weakref.ref(first)
    y = first
    del first
    for _ in range(n - 1):
        y = mx.add(y, 1, stream=device)
    mx.eval(y)
    assert y.item() == n
    assert ref() is None  # intermediates are gone once evaluated
    del y
    gc.collect()


def test_unevaluated_100k_chain_is_freed_without_recursion():
    x = mx.ones(2)
    y = x
    for _ in range(100_000):
        y = mx.negative(y)
    head = weakref.ref(y)
    del y  # deallocating a deep chain must not hit RecursionError or crash
    gc.collect()
    assert head() is None


def test_wide_graph(device):
    x = mx.array(np.arange(4, dtype=np.float32))
    parts = [mx.multiply(x, float(i), stream=device) for i in range(500)]
    total = parts[0]
    for p in parts[1:]:
        total = mx.add(total, p, stream=device)
    assert_close(total, np.arange(4) * sum(range(500)))


def test_intermediates_freed_after_eval(device):
    x = mx.ones((256, 256), stream=device)
    t = mx.exp(x, stream=device)
    ref = weakref.ref(t)
    y = mx.sum(t, stream=device)
    del t
    assert ref() is not None  # the graph still needs it
    mx.eval(y)
    assert ref() is None  # freed as soon as nothing needs it
    assert y._inputs == () and y._prim is None  # evaluated nodes detach from their graph


def test_intermediate_memory_released(device):
    if device != mx.cpu:
        pytest.skip("host memory counters")
    mx.eval(mx.zeros(1))
    base = mx.get_active_memory()
    x = mx.ones((512, 512), stream=device)
    y = mx.sum(mx.exp(mx.exp(x, stream=device), stream=device), stream=device)
    del x
    mx.eval(y)
    assert mx.get_active_memory() - base < 512 * 512 * 4  # the 1 MiB intermediates are gone
    del y


def test_shared_subgraph_computed_once(device, monkeypatch):
    from umx.backends.cpu import executor as cpu_ex
    from umx.primitives import UNARY

    if device != mx.cpu:
        pytest.skip("counts CPU kernel calls")
    cls = type(UNARY["Cos"])
    real = cpu_ex.KERNELS[cls]
    calls = []
    monkeypatch.setitem(cpu_ex.KERNELS, cls, lambda p, x: (calls.append(1), real(p, x))[1])
    with mx.stream(mx.cpu):
        c = mx.cos(mx.ones(3))
        a, b = mx.add(c, 1.0), mx.multiply(c, 2.0)
    mx.eval(a)
    mx.eval(b, a, c)
    assert len(calls) == 1


@pytest.mark.parametrize("kind", ["none", "device", "type", "stream"])
def test_stream_argument_kinds(device, kind):
    s = {"none": None, "device": mx.Device(device), "type": device, "stream": mx.new_stream(device)}[kind]
    x = mx.array([1.0, 4.0])
    outs = [mx.sqrt(x, stream=s), mx.add(x, x, stream=s), mx.sum(x, stream=s),
            mx.reshape(x, (2, 1), stream=s), mx.zeros(2, stream=s), mx.matmul(x, x, stream=s),
            mx.random.uniform(shape=(2,), stream=s)]
    for o in outs:
        if kind == "stream":
            assert o._stream is s
        elif kind != "none":
            assert o._stream is mx.default_stream(device)
    mx.eval(outs)
    assert_close(outs[0], [1.0, 2.0])
    assert outs[5].item() == 17.0
    with pytest.raises(TypeError):
        mx.sqrt(x, stream="cpu")


def test_program_order_across_streams(device):
    """A chain bouncing between two streams gives the program-order result."""
    s1, s2 = mx.new_stream(device), mx.new_stream(device)
    rng = np.random.default_rng(1)
    v = rng.standard_normal(1000).astype(np.float32)
    x = mx.array(v)
    ref = v.astype(np.float64)
    for i in range(200):
        s = s1 if i % 2 else s2
        if i % 3 == 0:
            x = mx.multiply(x, 0.5, stream=s)
            ref = ref * 0.5
        else:
            x = mx.add(x, float(i), stream=s)
            ref = ref + i
        if i % 50 == 0:
            mx.async_eval(x)
    assert_close(x, ref, rtol=1e-4, atol=1e-3)


def test_cross_stream_fan_in(device):
    streams = [mx.new_stream(device) for _ in range(3)]
    base = mx.arange(6, stream=streams[0])
    parts = [mx.multiply(base, i + 1, stream=s) for i, s in enumerate(streams)]
    total = mx.add(mx.add(parts[0], parts[1], stream=streams[2]), parts[2], stream=streams[1])
    assert total.tolist() == [6 * i for i in range(6)]


def test_eval_from_many_threads(device):
    shared = mx.exp(mx.ones((64, 64)), stream=device)
    results = []

    def work(i):
        s = mx.new_stream(device)
        r = mx.sum(mx.multiply(shared, float(i), stream=s), stream=s)
        results.append((i, r.item()))

    in_threads(work, range(6))
    for i, r in results:
        assert r == pytest.approx(64 * 64 * np.e * i, rel=1e-5)
    assert len(results) == 6


def test_every_op_takes_stream():
    import importlib
    import inspect

    no_stream = {"asarray", "broadcast_shapes", "seed", "key"}  # as in MLX: they run no op
    for family in ("creation", "elementwise", "matmul", "random", "reduction", "shape"):
        mod = importlib.import_module(f"umx.ops.{family}")
        for name in mod.__all__:
            if name in no_stream:
                continue
            params = inspect.signature(getattr(mod, name)).parameters
            assert "stream" in params, f"{mod.__name__}.{name}"
            assert params["stream"].default is None


def test_concurrent_evals_run_each_node_once(monkeypatch):
    from umx.backends.cpu import executor as cpu_ex
    from umx.primitives import UNARY

    cls = type(UNARY["Tanh"])
    real = cpu_ex.KERNELS[cls]
    calls = []
    monkeypatch.setitem(cpu_ex.KERNELS, cls, lambda p, x: (calls.append(1), real(p, x))[1])
    shared = mx.tanh(mx.ones((128, 128)), stream=mx.new_stream(mx.cpu))
    outs = [mx.sum(mx.multiply(shared, float(i), stream=mx.new_stream(mx.cpu))) for i in range(8)]
    barrier = threading.Barrier(8)

    def work(o):
        barrier.wait()
        mx.eval(o)

    in_threads(work, outs)
    assert len(calls) == 1
    for i, o in enumerate(outs):
        assert o.item() == pytest.approx(128 * 128 * np.tanh(1.0) * i, rel=1e-5)


def test_a_view_made_at_once_is_ordered_as_its_base():
    # (array.view_of: what a transpose of evaluated GPU data returns; a reader waits for what the base waits for)
    from umx.array import view_of

    a = mx.add(mx.array(np.arange(6, dtype=np.float32).reshape(2, 3)), 1, stream=mx.cpu)
    mx.eval(a)
    v = view_of(a, a._data.T)
    assert v._prim is None and v._inputs == () and v.shape == (3, 2)
    assert v._exec is a._exec and v._seq == a._seq and v._stream is a._stream
    assert_close(mx.exp(v, stream=mx.cpu), np.exp(np.arange(6.0).reshape(2, 3).T + 1), rtol=1e-6)
