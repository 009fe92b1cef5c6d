"""CUDA graphs: a GPU batch that repeats is captured and replayed, with results equal to NumPy's on every run, for
inputs that change or stay, outputs the user holds and intermediates nobody holds. Needs a GPU."""

from __future__ import annotations

import gc

import numpy as np
import pytest

import umx as mx
from umx.utils import tree_flatten

pytestmark = pytest.mark.skipif(not mx.is_available(mx.gpu), reason="no CUDA GPU (CuPy and a device)")

G = mx.gpu


@pytest.fixture
def graphs(monkeypatch):
    from umx.backends.cuda import graphs as g

    assert g.ENABLED
    monkeypatch.setattr(g, "MIN_TASKS", 2)  # (the tests' batches are small: replayed, as longer ones would be)
    return g


def _mlp(x, ws, bs):
    for i, (w, b) in enumerate(zip(ws, bs)):
        x = mx.add(mx.matmul(x, w, stream=G), b, stream=G)
        if i < len(ws) - 1:
            x = mx.maximum(x, 0.0, stream=G)
    return x


def _mlp_np(x, ws, bs):
    x = x.astype(np.float64)
    for i, (w, b) in enumerate(zip(ws, bs)):
        x = x @ w + b
        if i < len(ws) - 1:
            x = np.maximum(x, 0.0)
    return x


def _weights(rng, dims):
    ws = [(rng.standard_normal((i, o)) * 0.1).astype(np.float32) for i, o in zip(dims, dims[1:])]
    bs = [rng.standard_normal(o).astype(np.float32) for o in dims[1:]]
    return ws, bs


def test_a_repeated_batch_replays_and_matches_numpy_for_new_and_same_inputs(graphs):
    rng = np.random.default_rng(0)
    ws, bs = _weights(rng, [33, 64, 48, 5])
    wm, bm = [mx.array(w) for w in ws], [mx.array(b) for b in bs]
    before = graphs.STATS.as_dict()
    xs = [rng.standard_normal((17, 33)).astype(np.float32) for _ in range(3)]
    for step in range(8):
        x = xs[step % 3]
        y = _mlp(mx.array(x), wm, bm)
        np.testing.assert_allclose(np.array(y), _mlp_np(x, ws, bs), rtol=1e-4, atol=1e-4)
    after = graphs.STATS.as_dict()
    assert after["captures"] - before["captures"] >= 1
    assert after["replays"] - before["replays"] >= 6
    # the weights are the same arrays every step: after the first replay only x is copied in
    assert after["copies_in"] - before["copies_in"] <= 7 + 6


def test_only_outputs_held_outside_the_batch_are_copied_out(graphs):
    rng = np.random.default_rng(1)
    a = mx.array(rng.standard_normal((40, 30)).astype(np.float32))
    w = mx.array(rng.standard_normal((30, 20)).astype(np.float32))
    mx.eval(a, w)
    for _ in range(3):  # seen, captured, replayed
        mx.eval(mx.exp(mx.matmul(mx.sin(a, stream=G), w, stream=G), stream=G))
    before = graphs.STATS.as_dict()
    y = mx.exp(mx.matmul(mx.sin(a, stream=G), w, stream=G), stream=G)
    mx.eval(y)
    after = graphs.STATS.as_dict()
    assert after["replays"] == before["replays"] + 1
    assert after["copies_out"] == before["copies_out"] + 1  # y only: sin and the product are not kept
    np.testing.assert_allclose(np.array(y), np.exp(np.sin(np.array(a)) @ np.array(w)), rtol=1e-4, atol=1e-5)


def test_an_intermediate_the_user_holds_keeps_its_values_across_replays(graphs):
    rng = np.random.default_rng(2)
    w1 = rng.standard_normal((16, 16)).astype(np.float32)
    w2 = rng.standard_normal((16, 8)).astype(np.float32)
    m1, m2 = mx.array(w1), mx.array(w2)
    kept = []
    for _ in range(6):
        x = rng.standard_normal((4, 16)).astype(np.float32)
        h = mx.maximum(mx.matmul(mx.array(x), m1, stream=G), 0.0, stream=G)
        y = mx.matmul(h, m2, stream=G)
        mx.eval(y)
        kept.append((x, h, y))
    for x, h, y in kept:  # earlier results are not overwritten by later replays
        hn = np.maximum(x.astype(np.float64) @ w1, 0)
        np.testing.assert_allclose(np.array(h), hn, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(np.array(y), hn @ w2, rtol=1e-4, atol=1e-4)


def test_a_training_loop_with_new_weights_each_step_matches_numpy(graphs):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((32, 8)).astype(np.float32)
    t = rng.standard_normal((32, 1)).astype(np.float32)
    w0 = rng.standard_normal((8, 1)).astype(np.float32) * 0.1
    xm, tm, wm = mx.array(x), mx.array(t), mx.array(w0)
    wn = w0.astype(np.float64)
    before = graphs.STATS.replays
    for _ in range(10):
        err = mx.subtract(mx.matmul(xm, wm, stream=G), tm, stream=G)
        grad = mx.matmul(mx.transpose(xm, stream=G), err, stream=G)
        wm = mx.subtract(wm, mx.multiply(grad, 0.01, stream=G), stream=G)
        mx.eval(wm)
        wn = wn - 0.01 * (x.T @ (x @ wn - t))
    np.testing.assert_allclose(np.array(wm), wn, rtol=1e-4, atol=1e-5)
    assert graphs.STATS.replays - before >= 7


@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("sa, sb, ta, tb", [
    ((5, 7), (7, 3), False, False), ((7, 5), (7, 3), True, False), ((5, 7), (3, 7), False, True),
    ((7, 5), (3, 7), True, True), ((2, 5, 7), (7, 3), False, False), ((5, 7), (4, 7, 3), False, False),
    ((4, 5, 7), (4, 7, 3), False, False), ((2, 1, 5, 7), (1, 3, 7, 4), False, False), ((7,), (7, 3), False, False),
    ((5, 7), (7,), False, False), ((7,), (7,), False, False), ((0, 7), (7, 3), False, False),
    ((5, 0), (0, 3), False, False), ((1, 1), (1, 1), False, False),
])
def test_products_in_every_layout_match_numpy_eager_and_replayed(sa, sb, ta, tb, dtype):
    rng = np.random.default_rng(4)
    a = rng.standard_normal(sa).astype(dtype)
    b = rng.standard_normal(sb).astype(dtype)
    ma, mb = mx.array(a), mx.array(b)
    ref = (a.T if ta else a).astype(np.float64) @ (b.T if tb else b).astype(np.float64)
    tol = 2e-2 if dtype == "float16" else 1e-4
    for _ in range(3):  # eager, captured, replayed; each through a batch of two tasks with the product
        ua = mx.transpose(ma, stream=G) if ta else ma
        ub = mx.transpose(mb, stream=G) if tb else mb
        y = mx.multiply(mx.matmul(ua, ub, stream=G), 1.0, stream=G)
        got = np.array(y)
        assert got.dtype == np.dtype(dtype) and got.shape == ref.shape
        np.testing.assert_allclose(got.astype(np.float64), ref, rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("pointers", [True, False])
def test_products_of_head_split_views_match_numpy_eager_and_replayed(dtype, pointers, monkeypatch):
    """Attention's products over ``(B, L, H, D)`` data seen as ``(B, H, L, D)``: the batch axes make two strides,
    read in place through pointer arrays (``pointers``) or copied first; against one operand of one stride, a
    transposed one, and one shared by the batch; eager, captured and replayed alike."""
    from umx.backends.cuda import cublas

    monkeypatch.setattr(cublas, "POINTER_BATCHES", pointers)
    rng = np.random.default_rng(9)
    b, l, h, d = 2, 5, 3, 4
    q, k = (rng.standard_normal((b, l, h, d)).astype(dtype) for _ in range(2))
    p = rng.standard_normal((b, h, l, l)).astype(dtype)
    w = rng.standard_normal((d, 6)).astype(dtype)
    mq, mk, mp, mw = mx.array(q), mx.array(k), mx.array(p), mx.array(w)
    qh, kh = (np.swapaxes(x, 1, 2).astype(np.float64) for x in (q, k))
    refs = [qh @ np.swapaxes(kh, -1, -2), p.astype(np.float64) @ kh, np.swapaxes(p, -1, -2).astype(np.float64) @ qh,
            np.swapaxes(qh, -1, -2) @ kh, qh @ w.astype(np.float64)]
    tol = 2e-2 if dtype == "float16" else 1e-4
    for _ in range(3):  # eager, captured, replayed
        sq, sk = (mx.swapaxes(x, 1, 2, stream=G) for x in (mq, mk))
        outs = [mx.matmul(sq, mx.swapaxes(sk, -1, -2, stream=G), stream=G), mx.matmul(mp, sk, stream=G),
                mx.matmul(mx.swapaxes(mp, -1, -2, stream=G), sq, stream=G),
                mx.matmul(mx.swapaxes(sq, -1, -2, stream=G), sk, stream=G), mx.matmul(sq, mw, stream=G)]
        outs = [mx.multiply(o, 1.0, stream=G) for o in outs]
        mx.eval(outs)
        for got, ref in zip(outs, refs):
            got = np.array(got)
            assert got.dtype == np.dtype(dtype) and got.shape == ref.shape
            np.testing.assert_allclose(got.astype(np.float64), ref, rtol=tol, atol=tol)


def test_outputs_read_by_a_cpu_stream_arrive(graphs):
    rng = np.random.default_rng(5)
    a = rng.standard_normal((64, 64)).astype(np.float32)
    ma = mx.array(a)
    for _ in range(4):
        g = mx.tanh(mx.matmul(ma, ma, stream=G), stream=G)
        c = mx.sum(mx.multiply(g, 2.0, stream=mx.cpu), stream=mx.cpu)
        np.testing.assert_allclose(c.item(), 2 * np.tanh(a.astype(np.float64) @ a).sum(), rtol=1e-3)


def test_a_batch_with_a_primitive_graphs_skip_runs_op_by_op(graphs):
    rng = np.random.default_rng(6)
    a = rng.standard_normal((16,)).astype(np.float32)
    ma = mx.array(a)
    before = graphs.STATS.replays
    for _ in range(4):
        f = mx.fft.fft(mx.exp(ma, stream=G), stream=G)  # FFT: not a primitive graphs capture
        np.testing.assert_allclose(np.array(mx.multiply(f, 2.0, stream=G)), 2 * np.fft.fft(np.exp(a)), rtol=1e-4,
                                   atol=1e-4)
    assert graphs.STATS.replays == before


def test_a_batch_cut_by_a_task_no_graph_holds_replays_its_parts(graphs):
    rng = np.random.default_rng(21)
    a = (rng.standard_normal((8, 8)) * 0.3).astype(np.float32)
    ma = mx.array(a)
    before = graphs.STATS.replays
    for _ in range(4):
        t = mx.tanh(mx.matmul(ma, ma, stream=G), stream=G)
        f = mx.fft.fft(t, stream=G)  # no graph holds an FFT: the tasks before it and after it are parts
        out = mx.matmul(mx.exp(mx.abs(f, stream=G), stream=G), ma, stream=G)
        want = np.exp(np.abs(np.fft.fft(np.tanh(a.astype(np.float64) @ a)))) @ a
        np.testing.assert_allclose(np.array(out), want, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(np.array(t), np.tanh(a.astype(np.float64) @ a), rtol=1e-4, atol=1e-5)
    assert graphs.STATS.replays - before >= 4  # both parts, at the third and the fourth step


@pytest.mark.parametrize("name", ["AdamW", "SGD"])
def test_eager_steps_with_a_compiled_optimizer_update_replay_and_match_the_update_as_written(graphs, name):
    import umx.nn as nn
    import umx.optimizers as optim

    kwargs = {"momentum": 0.9} if name == "SGD" else {}
    counts = []

    def train(cls):
        mx.random.seed(3)
        with mx.stream(G):
            model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))
            opt = cls(learning_rate=1e-2, **kwargs)
            x, y = mx.random.normal((8, 16)), mx.random.normal((8, 4))
            loss_and_grad = nn.value_and_grad(model, lambda m: mx.mean((m(x) - y) ** 2))
            for _ in range(7):
                loss, grads = loss_and_grad(model)
                opt.update(model, grads)  # one compiled call: a task with siblings, so the step's batch has parts
                mx.eval(loss, model.parameters(), opt.state)
                counts.append(graphs.STATS.as_dict())
        return tree_flatten(model.parameters()) + tree_flatten(opt.state)

    before = graphs.STATS.replays
    got = train(getattr(optim, name))
    assert graphs.STATS.replays - before >= 6  # the step's forward and backward, and the update's own graph
    # Settled after a few steps: each new weight and state value is lent over the slot it comes back into, so
    # no later step clashes with a value still held and captures again.
    assert counts[-1]["captures"] == counts[3]["captures"]
    assert counts[-1]["lent"] - counts[3]["lent"] >= 3 * 8  # (each step: the four weights, a state value of each)
    want = train(type("AsWritten", (getattr(optim, name),), {}))  # a subclass: its update runs as written
    assert [k for k, _ in got] == [k for k, _ in want]
    for (path, a), (_, b) in zip(got, want):
        np.testing.assert_allclose(np.array(a), np.array(b), rtol=1e-6, atol=1e-7, err_msg=path)


def test_a_batch_through_a_custom_function_replays(graphs):
    # a custom_function of one output (BatchNorm's gradient is one) passes its data through as Depends does: it
    # must not keep a batch from becoming a graph
    @mx.custom_function
    def doubled(x):
        return x * 2

    @doubled.vjp
    def _(primals, cotangent, output):
        return cotangent * 2

    rng = np.random.default_rng(16)
    a = rng.standard_normal((8, 8)).astype(np.float32)
    ma = mx.array(a)
    before = graphs.STATS.replays
    for _ in range(4):
        g = mx.grad(lambda v: mx.sum(mx.exp(doubled(mx.add(v, 1.0, stream=G)), stream=G), stream=G))(ma)
        np.testing.assert_allclose(np.array(g), 2 * np.exp(2 * (a + 1.0)), rtol=1e-5)
    assert graphs.STATS.replays > before


def test_batch_norm_training_on_the_gpu_matches_the_cpu():
    import umx.nn as nn

    rng = np.random.default_rng(17)
    x = rng.standard_normal((32, 6)).astype(np.float32)

    def loss_and_grads(stream):
        with mx.stream(stream):
            mx.random.seed(0)
            model = nn.Sequential(nn.Linear(6, 8), nn.BatchNorm(8), nn.ReLU(), nn.Linear(8, 1))
            step = nn.value_and_grad(model, lambda m, v: mx.mean(m(v) ** 2))
            for _ in range(3):
                loss, grads = step(model, mx.array(x))
                mx.eval(loss, grads, model.parameters())
            return loss, grads

    loss, grads = loss_and_grads(G)
    cpu_loss, cpu_grads = loss_and_grads(mx.cpu)
    np.testing.assert_allclose(loss.item(), cpu_loss.item(), rtol=1e-4)
    for (name, g), (_, c) in zip(tree_flatten(grads), tree_flatten(cpu_grads)):
        np.testing.assert_allclose(np.array(g), np.array(c), rtol=1e-3, atol=1e-5, err_msg=name)


def test_a_kernel_that_needs_the_host_under_capture_is_refused_and_runs_op_by_op(graphs):
    # CuPy has no multiply.at: umx's scatter multiplies on the host, a copy that capture refuses
    a = np.arange(6, dtype=np.float32)
    ma = mx.array(a)
    idx = mx.array(np.array([1, 2, 2], dtype=np.int32))
    before = graphs.STATS.as_dict()
    exp = np.exp(a)
    np.multiply.at(exp, [1, 2, 2], np.float32(3))
    for _ in range(4):
        y = mx.add(mx.exp(ma, stream=G).at[idx].multiply(3.0), 1.0, stream=G)
        np.testing.assert_allclose(np.array(y), exp + 1, rtol=1e-5)
    after = graphs.STATS.as_dict()
    assert after["replays"] == before["replays"]
    assert after["refusals"] >= before["refusals"] + 1


def test_clear_cache_drops_graphs_and_they_are_made_again(graphs):
    rng = np.random.default_rng(7)
    a = mx.array(rng.standard_normal((20, 20)).astype(np.float32))

    def step():
        return np.array(mx.sqrt(mx.abs(mx.matmul(a, a, stream=G), stream=G), stream=G))

    ref = np.sqrt(np.abs(np.array(a).astype(np.float64) @ np.array(a)))
    for _ in range(3):
        np.testing.assert_allclose(step(), ref, rtol=1e-4)
    assert graphs.nbytes() > 0
    assert "CUDA graphs hold" in str(mx.memory_report())
    gc.collect()
    mx.clear_cache()
    assert graphs.nbytes() == 0
    for _ in range(3):
        np.testing.assert_allclose(step(), ref, rtol=1e-4)


def test_a_cache_full_of_refused_structures_still_captures_new_ones(graphs, monkeypatch):
    """Refusals are remembered, but not without bound: with the cache's keys full of them, a new structure is
    still seen, captured and replayed (a long process's refusals once starved every later batch)."""
    monkeypatch.setattr(graphs, "_MAX_KEYS", 16)
    for cache in graphs._all:
        for i in range(16):
            cache.cache[("a refused structure", i)] = graphs._REFUSED
    a = mx.array(np.random.default_rng(8).standard_normal((24, 24)).astype(np.float32))
    ref = np.sqrt(np.abs(np.array(a).astype(np.float64) @ np.array(a)))
    before = graphs.STATS.replays
    for _ in range(4):
        np.testing.assert_allclose(np.array(mx.sqrt(mx.abs(mx.matmul(a, a, stream=G), stream=G), stream=G)), ref,
                                   rtol=1e-4)
    assert graphs.STATS.replays > before
    # (the GPU stream's cache forgot its oldest half: refusals first, here)
    assert any(sum(type(k) is tuple and k[:1] == ("a refused structure",) for k in c.cache) < 16
               for c in graphs._all)


def test_a_structure_with_no_room_for_its_graph_is_captured_once_there_is_room(graphs, monkeypatch):
    a = mx.array(np.random.default_rng(9).standard_normal((20, 24)).astype(np.float32))
    b = mx.transpose(a, stream=G)
    ref = np.sqrt(np.abs(np.array(a).astype(np.float64) @ np.array(b)))

    def step():
        return np.array(mx.sqrt(mx.abs(mx.matmul(a, b, stream=G), stream=G), stream=G))

    monkeypatch.setattr(graphs, "GRAPH_SHARE", 0.0)  # no graph fits
    before = graphs.STATS.as_dict()
    for _ in range(3):
        np.testing.assert_allclose(step(), ref, rtol=1e-4, atol=1e-5)
    mid = graphs.STATS.as_dict()
    assert mid["replays"] == before["replays"] and mid["refusals"] > before["refusals"]
    monkeypatch.setattr(graphs, "GRAPH_SHARE", 1 / 8)
    for _ in range(2):
        np.testing.assert_allclose(step(), ref, rtol=1e-4, atol=1e-5)
    assert graphs.STATS.replays > mid["replays"]


def test_turned_off_nothing_replays(graphs, monkeypatch):
    monkeypatch.setattr(graphs, "ENABLED", False)
    h = np.arange(12.0).reshape(3, 4) / 12
    a = mx.array(h.astype(np.float32))
    before = graphs.STATS.replays
    for _ in range(4):
        np.testing.assert_allclose(np.array(mx.exp(mx.matmul(a, mx.transpose(a), stream=G), stream=G)),
                                   np.exp(h @ h.T), rtol=1e-5)
    assert graphs.STATS.replays == before


def test_constants_are_part_of_the_structure(graphs):
    a = mx.array(np.linspace(-1, 1, 16, dtype=np.float32).reshape(4, 4))
    for c in [0.5, 0.5, 0.5, -0.0, 0.0, 2.0, 2.0, 2.0]:
        y = mx.multiply(mx.matmul(a, a, stream=G), c, stream=G)
        np.testing.assert_array_equal(np.signbit(np.array(y)), np.signbit(np.array(mx.matmul(a, a, stream=G)) * c))
        np.testing.assert_allclose(np.array(y), (np.array(a) @ np.array(a)) * c, rtol=1e-5, atol=1e-6)


def test_a_diamond_across_streams_repeats_without_deadlock(graphs):
    rng = np.random.default_rng(8)
    h = (rng.standard_normal((8, 8)) * 0.3).astype(np.float32)
    x = mx.array(h)
    for _ in range(4):
        a = mx.tanh(mx.matmul(x, x, stream=G), stream=G)
        b = mx.multiply(a, 2.0, stream=mx.cpu)  # read on the CPU, then by the GPU batch's later task
        c = mx.add(mx.matmul(a, x, stream=G), b, stream=G)
        an = np.tanh(h.astype(np.float64) @ h)
        np.testing.assert_allclose(np.array(c), an @ h + 2 * an, rtol=1e-4, atol=1e-5)


def test_random_bits_gathers_and_concatenation_replay_with_fresh_keys(graphs):
    rng = np.random.default_rng(9)
    table = rng.standard_normal((50, 8)).astype(np.float32)
    emb = mx.array(table)
    masks = []
    before = graphs.STATS.replays
    for step in range(5):
        idx = rng.integers(0, 50, size=16).astype(np.int32)
        e = mx.take(emb, mx.array(idx), axis=0, stream=G)
        m = mx.random.bernoulli(0.5, (16, 8), key=mx.random.key(step), stream=G)
        y = mx.concatenate([mx.multiply(e, m, stream=G), e], axis=1, stream=G)
        got, mask = np.array(y), np.array(m)
        np.testing.assert_array_equal(got, np.concatenate([table[idx] * mask, table[idx]], axis=1))
        np.testing.assert_array_equal(mask, np.array(mx.random.bernoulli(0.5, (16, 8), key=mx.random.key(step),
                                                                         stream=mx.cpu)))
        masks.append(mask)
    assert graphs.STATS.replays - before >= 3
    assert not all((masks[0] == mk).all() for mk in masks[1:])  # each key draws its own bits


@pytest.mark.skipif(not mx.is_available(mx.gpu) or mx.device_count(mx.gpu) < 2, reason="needs two CUDA GPUs")
def test_graphs_replay_on_a_second_gpu_and_read_across_gpus(graphs):
    rng = np.random.default_rng(10)
    h = (rng.standard_normal((24, 24)) * 0.2).astype(np.float32)
    a = mx.array(h)
    g1 = mx.Device(mx.gpu, 1)
    before = graphs.STATS.replays
    for _ in range(4):
        y = mx.tanh(mx.matmul(a, a, stream=g1), stream=g1)
        z = mx.add(mx.matmul(y, a, stream=G), 1.0, stream=G)  # device 1's result read on device 0
        yn = np.tanh(h.astype(np.float64) @ h)
        np.testing.assert_allclose(np.array(z), yn @ h + 1, rtol=1e-4, atol=1e-5)
    assert graphs.STATS.replays - before >= 2


def test_graphs_are_charged_to_the_memory_limit_and_yield_to_arrays(graphs):
    """Under a memory limit, umx's array pool may take only what cached graphs leave; an array that needs that
    memory gets it (the graphs are dropped first), and the cache statistic counts the graphs."""
    from umx.backends.cuda import memory as gmem

    mx.clear_cache()
    limit = gmem.POOL.used_bytes() + (256 << 20)
    mx.set_memory_limit(limit)
    try:
        rng = np.random.default_rng(3)
        a = mx.array(rng.standard_normal((512, 512)).astype(np.float32))

        def step():
            return np.array(mx.tanh(mx.matmul(a, a, stream=G), stream=G))

        for _ in range(3):
            step()
        held = graphs.nbytes()
        assert held > 0
        assert gmem.POOL.get_limit() == limit - held
        assert mx.get_cache_memory() >= held
        # an array that fits under the limit only without the graphs' memory (counted against what the pool holds,
        # not only what arrays use: a freed block split for a live small array stays the pool's, and is charged)
        gmem.POOL.free_all_blocks()
        n = (limit - gmem.POOL.total_bytes() - held // 2) // 4
        big = mx.full((n,), 1.0, stream=G)
        mx.eval(big)
        assert graphs.nbytes() == 0 and gmem.POOL.get_limit() == limit
        assert mx.sum(big[:8], stream=G).item() == 8.0
        del big
    finally:
        mx.set_memory_limit(0)
    assert gmem.POOL.get_limit() == 0


def test_batches_shorter_than_min_tasks_run_op_by_op():
    """A batch of fewer than MIN_TASKS tasks is never captured: op by op costs less, and a small result the host
    reads comes back by its mirror."""
    from umx.backends.cuda import graphs as g

    x = mx.add(mx.array(np.linspace(-1, 1, 64, dtype=np.float32)), 0.0, stream=G)
    mx.eval(x)
    before = (g.STATS.captures, g.STATS.replays)
    for _ in range(4):
        loss = mx.mean(mx.square(mx.subtract(x, 1.0, stream=G), stream=G), stream=G)  # two tasks
        np.testing.assert_allclose(loss.item(), np.mean((np.linspace(-1, 1, 64) - 1.0) ** 2), rtol=1e-6)
    assert (g.STATS.captures, g.STATS.replays) == before


@pytest.mark.parametrize("op", ["sum", "max", "mean", "argmax"])
def test_batches_that_differ_only_in_a_reduction_axis_are_not_replayed_for_each_other(graphs, op):
    m = np.random.default_rng(1).standard_normal((64, 64)).astype(np.float32)
    x = mx.array(m)
    for axis in (0, 1, 0, 1, 0, 1):  # each structure is captured on its second sighting and replayed after
        y = getattr(mx, op)(mx.multiply(mx.add(x, 1.0, stream=G), 2.0, stream=G), axis=axis, stream=G)
        want = getattr(np, op)((m + 1) * 2, axis=axis)
        np.testing.assert_allclose(np.asarray(mx.add(y, 0, stream=G)), want, rtol=1e-5, atol=1e-5)


def _sin_product_tanh(x, w):
    return mx.tanh(mx.matmul(mx.sin(x, stream=G), w, stream=G), stream=G)


def test_large_inputs_are_read_in_place_and_recaptured_with_a_slot_when_they_change(graphs, monkeypatch):
    """An input of BIND_MIN_BYTES or more is bound: the replay reads it where it lies (no copy in). When a later
    batch of the same structure brings other data for it, the structure is captured again with that input copied
    into a slot, and every result stays NumPy's."""
    monkeypatch.setattr(graphs, "BIND_MIN_BYTES", 4096)
    rng = np.random.default_rng(4)
    w = rng.standard_normal((64, 32)).astype(np.float32)  # 8 KiB: bound
    wm = mx.array(w)
    mx.eval(wm)
    step = _sin_product_tanh
    xs = [rng.standard_normal((3, 64)).astype(np.float32) for _ in range(6)]
    before = graphs.STATS.as_dict()
    for x in xs:
        got = np.array(step(mx.array(x), wm))
        np.testing.assert_allclose(got, np.tanh(np.sin(x.astype(np.float64)) @ w), rtol=1e-5, atol=1e-5)
    after = graphs.STATS.as_dict()
    assert after["replays"] - before["replays"] >= 4
    assert after["copies_in"] - before["copies_in"] <= 5  # x each replay, never the bound weight
    # new weights every step: recaptured once with the weight in a slot, then replayed
    captures = graphs.STATS.captures
    for i, x in enumerate(xs):
        w2 = w + i
        got = np.array(step(mx.array(x), mx.array(w2)))
        np.testing.assert_allclose(got, np.tanh(np.sin(x.astype(np.float64)) @ w2), rtol=1e-5, atol=1e-5)
    assert graphs.STATS.captures - captures == 1



def test_a_new_view_of_the_same_memory_stays_bound(graphs, monkeypatch):
    """A weight's ``.T`` is a new view object at every step, of the same device memory: the graph keeps reading it
    in place (no copy in, no new capture). A view of other memory of the same layout (another half of the
    weight) is other data: its results are its own."""
    monkeypatch.setattr(graphs, "BIND_MIN_BYTES", 4096)
    rng = np.random.default_rng(6)
    w = rng.standard_normal((128, 64)).astype(np.float32)
    wm = mx.add(mx.array(w), 0.0, stream=G)  # (data made on the GPU: its .T is a view of that data)
    mx.eval(wm)
    step = _sin_product_tanh
    xs = [rng.standard_normal((3, 64)).astype(np.float32) for _ in range(6)]
    before = graphs.STATS.as_dict()
    for x in xs:
        got = np.array(step(mx.array(x), wm.T))
        np.testing.assert_allclose(got, np.tanh(np.sin(x.astype(np.float64)) @ w.T), rtol=1e-5, atol=1e-5)
    after = graphs.STATS.as_dict()
    assert after["replays"] - before["replays"] >= 4
    assert after["captures"] - before["captures"] == 1
    assert after["copies_in"] - before["copies_in"] <= 6  # x each replay, never the weight's view
    halves = [wm[:64], wm[64:]]  # (evaluated: views of the weight's memory, same shape and strides)
    mx.eval(halves)
    for i, x in enumerate(xs):
        got = np.array(step(mx.array(x), halves[i % 2].T))
        want = np.tanh(np.sin(x.astype(np.float64)) @ w[64 * (i % 2):64 * (i % 2 + 1)].T)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)

def test_decode_like_steps_with_fast_ops_replay_as_graphs(graphs):
    """rms_norm, rope and attention over a few queries run by umx's own kernels, which a graph captures: a decode
    step (a few queries against a cache) is replayed, with the host's results."""
    rng = np.random.default_rng(5)
    w = mx.array(rng.standard_normal(64).astype(np.float32))
    k = mx.array(rng.standard_normal((1, 2, 40, 16)).astype(np.float32)).astype(mx.bfloat16)
    v = mx.array(rng.standard_normal((1, 2, 40, 16)).astype(np.float32)).astype(mx.bfloat16)
    mask = mx.array(np.arange(40) < 30)

    def step(x, offset, stream):
        h = mx.fast.rms_norm(x, w, 1e-5, stream=stream)
        q = mx.reshape(h, (1, 1, 4, 16), stream=stream).transpose(0, 2, 1, 3, stream=stream)
        q = mx.fast.rope(q, 16, traditional=False, base=10000.0, scale=1.0, offset=offset, stream=stream)
        o = mx.fast.scaled_dot_product_attention(q, k, v, scale=0.25, mask=mask, stream=stream)
        return mx.multiply(o, 2.0, stream=stream)

    mx.eval(w, k, v)
    before = graphs.STATS.replays
    for _ in range(6):
        x = mx.array(rng.standard_normal((1, 1, 64)).astype(np.float32)).astype(mx.bfloat16)
        offset = mx.array(29, mx.int32)
        got, want = step(x, offset, G), step(x, offset, mx.cpu)
        mx.eval(got, want)
        np.testing.assert_allclose(np.array(got.astype(mx.float32)), np.array(want.astype(mx.float32)),
                                   rtol=2e-2, atol=2e-2)
    assert graphs.STATS.replays - before >= 3


@pytest.mark.parametrize("dtype", [mx.float32, mx.bfloat16])
@pytest.mark.parametrize("shape", [(1, 1, 2048), (3, 5, 64)])
def test_a_residual_add_and_its_rms_norm_captured_as_one_kernel_give_the_two_ops_values(graphs, monkeypatch,
                                                                                        dtype, shape):
    """A residual stream's add and the rms_norm that reads it (two of each a layer of a decode step) are one
    kernel in a graph; its values are the two ops' own, bit for bit, and NumPy's within rounding."""
    monkeypatch.setattr(graphs, "PAIRS", True)
    taken = []
    fused = graphs.add_and_norm
    monkeypatch.setattr(graphs, "add_and_norm", lambda *a: taken.append(fused(*a)) or taken[-1])
    rng = np.random.default_rng(11)
    xs, ys = (rng.standard_normal(shape).astype(np.float32) for _ in range(2))
    ws = rng.standard_normal(shape[-1]).astype(np.float32)
    # (computed on the GPU, as a model's weights and activations are: a float32 astype is no op, and host data
    # would reach the batch below through copies, whose tasks are not paired)
    x, y, w = (mx.multiply(mx.array(a), 1.0, stream=G).astype(dtype, stream=G) for a in (xs, ys, ws))
    mx.eval(x, y, w)  # (data already, as a model's weights are: the batch below is the two ops alone)
    h0 = mx.add(x, y, stream=G)
    mx.eval(h0)
    n0 = mx.fast.rms_norm(h0, w, 1e-5, stream=G)  # (its input evaluated: the two ops' own kernels)
    mx.eval(n0)
    for _ in range(4):
        # (one batch of the two ops, seen again and captured; a compiled step this short replays as these nodes)
        h = mx.add(x, y, stream=G)
        n = mx.fast.rms_norm(h, w, 1e-5, stream=G)
        mx.eval(h, n)
        np.testing.assert_array_equal(np.asarray(h), np.asarray(h0))
        np.testing.assert_array_equal(np.asarray(n), np.asarray(n0))
    assert any(t is not None for t in taken)
    hr = np.asarray(h0.astype(mx.float32)).astype(np.float64)
    want = hr / np.sqrt((hr * hr).mean(-1, keepdims=True) + 1e-5) * np.asarray(w.astype(mx.float32))
    tol = 2e-2 if dtype == mx.bfloat16 else 1e-5
    np.testing.assert_allclose(np.asarray(n0.astype(mx.float32)), want, rtol=tol, atol=tol)


def test_cache_writes_at_a_position_array_replay_as_graphs(graphs):
    """A static cache written at a position held in an array (``mx.slice_update``) and read back at it
    (``mx.slice``): the kernels compute the position on the device, so the step is captured and replayed (no
    refusal), the position advancing on the device from step to step."""
    rng = np.random.default_rng(6)
    w = mx.array(rng.standard_normal((16, 16)).astype(np.float32))

    def step(x, cache, offset, stream):
        cache = mx.slice_update(cache, mx.matmul(x, w, stream=stream)[None, None], offset, axes=(2,),
                                stream=stream)
        last = mx.slice(cache, offset, (2,), (1, 2, 1, 16), stream=stream)
        return mx.sum(cache, axis=2, stream=stream) + last[:, :, 0], cache, mx.add(offset, 1, stream=stream)

    mx.eval(w)
    refusals, before = graphs.STATS.refusals, graphs.STATS.replays
    caches = {G: mx.zeros((1, 2, 12, 16)), mx.cpu: mx.zeros((1, 2, 12, 16))}
    offsets = {G: mx.array(3, mx.int32), mx.cpu: mx.array(3, mx.int32)}
    for _ in range(7):
        x = mx.array(rng.standard_normal((2, 16)).astype(np.float32))
        outs = {}
        for s in (G, mx.cpu):
            outs[s], caches[s], offsets[s] = step(x, caches[s], offsets[s], s)
            mx.eval(outs[s], caches[s], offsets[s])
        np.testing.assert_allclose(np.array(outs[G]), np.array(outs[mx.cpu]), rtol=1e-5, atol=1e-5)
    # (the rows written are products: the devices' GEMMs round differently in the last bits)
    np.testing.assert_allclose(np.array(caches[G]), np.array(caches[mx.cpu]), rtol=1e-5, atol=1e-5)
    assert offsets[G].item() == 10
    assert graphs.STATS.refusals == refusals
    assert graphs.STATS.replays - before >= 3


def test_a_cache_written_in_place_is_not_copied_in_again_and_held_caches_keep_their_values(graphs):
    """A compiled step that writes a cache passed back in (a decode step's key-value cache): the graph writes the
    update into its own copy of the cache, so the next replay, given that result, copies nothing in; a cache the
    user kept from an earlier step keeps its values, and every step matches the CPU."""
    rng = np.random.default_rng(7)
    w = mx.array(rng.standard_normal((16, 16)).astype(np.float32))

    def step(x, cache, offset):
        cache = mx.slice_update(cache, mx.matmul(x, w)[None, None], offset, axes=(2,))
        return mx.sum(cache, axis=2) * 2 + 1, cache, offset + 1

    compiled = mx.compile(step)
    mx.eval(w)
    caches = {G: mx.zeros((1, 2, 12, 16), stream=G), mx.cpu: mx.zeros((1, 2, 12, 16), stream=mx.cpu)}
    offsets = {G: mx.array(0, mx.int32), mx.cpu: mx.array(0, mx.int32)}
    kept, copied = [], []
    for _ in range(10):
        x = mx.array(rng.standard_normal((2, 16)).astype(np.float32))
        outs = {}
        for s in (G, mx.cpu):
            with mx.stream(s):
                outs[s], caches[s], offsets[s] = (compiled if s is G else step)(x, caches[s], offsets[s])
            mx.eval(outs[s], caches[s], offsets[s])
        np.testing.assert_allclose(np.array(outs[G]), np.array(outs[mx.cpu]), rtol=1e-5, atol=1e-5)
        kept.append((caches[G], np.array(caches[mx.cpu])))
        copied.append(graphs.STATS.copies_in)
    for held, expected in kept:
        np.testing.assert_allclose(np.array(held), expected, rtol=1e-5, atol=1e-5)
    # once replayed, a step copies in only x (and the offset), never the cache it wrote the step before
    assert copied[-1] - copied[-4] <= 3 * 2


def test_keys_and_values_written_at_one_position_in_place_are_one_kernel_and_keep_held_caches(graphs,
                                                                                                 monkeypatch):
    """A compiled decode-like step writes its keys' and values' caches (passed back in) at one position: in the
    graph the two writes are one kernel, each into its own slot; every step matches the CPU, and caches the user
    kept from earlier steps keep their values."""
    monkeypatch.setattr(graphs, "PAIRS", True)
    pairs = []
    write = graphs.update_pair_in_place
    monkeypatch.setattr(graphs, "update_pair_in_place", lambda *a: pairs.append(write(*a)) or pairs[-1])
    rng = np.random.default_rng(8)
    w = mx.array(rng.standard_normal((16, 32)).astype(np.float32))

    def step(x, keys, values, offset):
        kv = (x @ w).reshape(1, 2, 1, 16)
        k, v = kv[:, :1] * 2, kv[:, 1:]  # (both made before the writes, as a model's are)
        keys = mx.slice_update(keys, k, offset, axes=(2,))
        values = mx.slice_update(values, v, offset, axes=(2,))
        return mx.sum(keys * values, axis=2), keys, values, offset + 1

    compiled = mx.compile(step)
    mx.eval(w)
    state = {s: [mx.zeros((1, 1, 12, 16), stream=s), mx.zeros((1, 1, 12, 16), stream=s), mx.array(0, mx.int32)]
             for s in (G, mx.cpu)}
    kept = []
    for _ in range(9):
        x = mx.array(rng.standard_normal((1, 16)).astype(np.float32))
        outs = {}
        for s in (G, mx.cpu):
            with mx.stream(s):
                outs[s], *state[s] = (compiled if s is G else step)(x, *state[s])
            mx.eval(outs[s], *state[s])
        np.testing.assert_allclose(np.array(outs[G]), np.array(outs[mx.cpu]), rtol=1e-5, atol=1e-5)
        kept.append((state[G][:2], [np.array(c) for c in state[mx.cpu][:2]]))
    for held, expected in kept:
        for h, e in zip(held, expected):
            np.testing.assert_allclose(np.array(h), e, rtol=1e-5, atol=1e-5)
    assert any(pairs)


def test_a_compiled_training_steps_state_is_updated_in_its_slots_and_not_copied_in_again(graphs, monkeypatch):
    """A compiled training step (AdamW over a small model, the state passed in and returned): the graph writes
    the new weights and moments into its own copies of them, so a replay given the last step's state copies only
    the batch in; weights the user kept from an earlier step keep their values; every step gives what the same
    step gives node by node (no graphs)."""
    rng = np.random.default_rng(11)
    xs = [rng.standard_normal((32, 24)).astype(np.float32) for _ in range(3)]
    ys = [rng.integers(0, 5, 32).astype(np.int32) for _ in range(3)]

    def train(steps: int):
        with mx.stream(G):
            model, opt, run = _compiled_adamw_step(2048, 3)
            losses, kept, copied = [], [], []
            for i in range(steps):
                loss = run(mx.array(xs[i % 3]), mx.array(ys[i % 3]))
                mx.eval(loss, model.parameters(), opt.state)
                losses.append(loss.item())
                w = model.layers[0].weight
                kept.append((w, np.array(w), np.array(opt.state["layers"][0]["weight"]["v"])))
                copied.append(graphs.STATS.copies_in)
        return losses, kept, copied

    monkeypatch.setattr(graphs, "ENABLED", False)
    want_losses, want, _ = train(9)
    monkeypatch.setattr(graphs, "ENABLED", True)
    replays = graphs.STATS.replays
    losses, kept, copied = train(9)
    assert graphs.STATS.replays - replays >= 6  # (the step ran as a replayed graph)
    # (op by op the step's regions may round otherwise in the last bits)
    np.testing.assert_allclose(losses, want_losses, rtol=1e-4, atol=1e-6)
    for (held, w, v), (_, w0, v0) in zip(kept, want):
        np.testing.assert_allclose(w, w0, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(v, v0, rtol=1e-3, atol=1e-9)
        np.testing.assert_array_equal(np.array(held), w)  # (a weight kept from an earlier step: still its value)
    # once replayed, a step copies in the batch (x and y) and two scalars, not the 12 weights and moments it
    # wrote the step before
    assert copied[-1] - copied[-4] <= 3 * 4, copied


def _compiled_adamw_step(hidden: int, seed: int) -> tuple:
    """``(model, optimizer, step)``: a 24-``hidden``-5 MLP (weights from ``seed``) and AdamW, evaluated, and their
    training step on a batch ``(x, y)`` compiled as MLX users write it (the state as inputs and outputs)."""
    import umx.nn as nn
    import umx.optimizers as optim

    mx.random.seed(seed)
    model = nn.Sequential(nn.Linear(24, hidden), nn.ReLU(), nn.Linear(hidden, 5))
    opt = optim.AdamW(learning_rate=1e-2)
    opt.init(model.trainable_parameters())
    mx.eval(model.parameters(), opt.state)
    grad = nn.value_and_grad(model, lambda m, x, y: nn.losses.cross_entropy(m(x), y, reduction="mean"))

    def step(x, y):
        loss, g = grad(model, x, y)
        opt.update(model, g)
        return loss

    state = [model.state, opt.state]
    return model, opt, mx.compile(step, inputs=state, outputs=state)


def _adamw_run(graphs, monkeypatch, on: bool, steps: int, hold=None, clear_at: int = -1) -> tuple:
    """``steps`` compiled AdamW steps of a small model on the GPU with graphs ``on``: the losses, the first weight
    after each step (read through a product, which leaves the weight itself without a host copy), and
    ``[(step, hold(weight), its values then)]`` for the steps from the fourth on, if ``hold`` is given. At step
    ``clear_at`` the graphs are dropped (``clear_cache``) before the step."""
    monkeypatch.setattr(graphs, "ENABLED", on)
    rng = np.random.default_rng(17)
    xs = [rng.standard_normal((32, 24)).astype(np.float32) for _ in range(3)]
    ys = [rng.integers(0, 5, 32).astype(np.int32) for _ in range(3)]
    with mx.stream(G):
        model, opt, run = _compiled_adamw_step(256, 5)
        losses, weights, held = [], [], []
        for i in range(steps):
            if i == clear_at:
                gc.collect()
                mx.clear_cache()
                assert graphs.nbytes() == 0
            loss = run(mx.array(xs[i % 3]), mx.array(ys[i % 3]))
            mx.eval(loss, model.parameters(), opt.state)
            losses.append(loss.item())
            weights.append(np.array(model.layers[0].weight * 1))
            if hold is not None and i >= 3:
                kept = hold(model.layers[0].weight)
                if isinstance(kept, mx.array):
                    mx.eval(kept)
                    held.append((i, kept, np.array(kept * 1)))
                else:
                    held.append((i, kept, kept.get()))
    return losses, weights, held


def _assert_same_training(got: tuple, want: tuple) -> None:
    np.testing.assert_allclose(got[0], want[0], rtol=1e-4, atol=1e-6)
    for i, (w, w0) in enumerate(zip(got[1], want[1])):
        np.testing.assert_allclose(w, w0, rtol=1e-4, atol=1e-5, err_msg=f"step {i}")


def test_a_compiled_steps_state_written_in_its_slots_is_lent_not_copied_out(graphs, monkeypatch):
    """A compiled training step whose new weights and moments nobody keeps past the next step: the graph writes
    them into its slots, and the step's outputs are views of those slots (lent), not copies, while every step
    gives what the same steps give node by node."""
    want = _adamw_run(graphs, monkeypatch, False, 8)
    lent, out = graphs.STATS.lent, graphs.STATS.copies_out
    _assert_same_training(_adamw_run(graphs, monkeypatch, True, 8), want)
    # 4 weights and 8 moments a step, lent at each replay (the step is traced, run op by op, then captured)
    assert graphs.STATS.lent - lent >= 12 * 5
    # (copied out: the loss, the step count and a few scalars, which no task writes in place; lending nothing,
    # 16 or more a step)
    assert graphs.STATS.copies_out - out <= 5 * 8


@pytest.mark.parametrize("hold", ["array", "view", "same data", "cupy"])
def test_what_the_user_keeps_of_a_lent_output_keeps_its_values(graphs, monkeypatch, hold):
    """A weight the user keeps from a step, as itself, as a view of it, as another array of the same data or as
    CuPy's array over its memory, keeps its values over the steps after (which then capture the step again,
    lending nothing), and the steps give what node by node gives."""
    import cupy

    makers = {"array": lambda w: w, "view": lambda w: w.reshape(-1)[1:], "same data": mx.stop_gradient,
              "cupy": cupy.asarray}
    want = _adamw_run(graphs, monkeypatch, False, 8)
    got = _adamw_run(graphs, monkeypatch, True, 8, makers[hold])
    _assert_same_training(got, want)
    for i, kept, values in got[2]:
        now = kept.get() if isinstance(kept, cupy.ndarray) else np.array(kept * 1)
        np.testing.assert_array_equal(now, values, err_msg=f"kept at step {i}")


def test_lent_outputs_outlive_the_graphs_that_lent_them(graphs, monkeypatch):
    """Weights and moments lent by a compiled step's graph keep their values when the graphs are dropped
    (``clear_cache``), and the steps after go on from them as node by node."""
    want = _adamw_run(graphs, monkeypatch, False, 8)
    lent = graphs.STATS.lent
    _assert_same_training(_adamw_run(graphs, monkeypatch, True, 8, clear_at=5), want)
    assert graphs.STATS.lent > lent


def test_a_region_that_reads_its_slot_through_a_view_writes_new_memory(graphs):
    """``(p - p[0]) * 0.5 + 1`` reads the first row of ``p`` in every row: written into ``p``'s own slot, threads
    would read a row that others have overwritten. Such a region writes new memory; every replay is NumPy's."""
    rng = np.random.default_rng(5)
    want = rng.standard_normal((512, 256)).astype(np.float32)
    step = mx.compile(lambda p: (p - p[0]) * 0.5 + 1.0)
    p = mx.array(want)
    replays = graphs.STATS.replays
    with mx.stream(G):
        for _ in range(6):
            p = step(p)
            mx.eval(p)
            want = (want - want[0]) * np.float32(0.5) + np.float32(1.0)
            np.testing.assert_allclose(np.array(p), want, rtol=1e-6, atol=1e-6)
    assert graphs.STATS.replays > replays  # (the region ran in a replayed graph)


def _layers(x, w, b):
    h = x
    for _ in range(3):
        h = mx.maximum(mx.add(mx.matmul(h, w, stream=G), b, stream=G), 0.0, stream=G)
    return mx.sum(h, axis=1, stream=G), mx.multiply(h, 2.0, stream=G)


def _layers_np(x, w, b):
    h = x.astype(np.float64)
    for _ in range(3):
        h = np.maximum(h @ w + b, 0.0)
    return h.sum(axis=1), h * 2


def _program_of(compiled):
    """The program of the signature ``compiled`` traced last (a training step's first call has no optimizer
    state yet: its signature is another)."""
    return [t for t in compiled._cache.values() if hasattr(t, "program")][-1].program


def test_a_compiled_call_is_one_node_replayed_as_one_graph(graphs):
    """On the GPU a compiled call is one ``Compiled`` node: op by op the first time, captured the second, replayed
    after, with NumPy's results each time. A large weight argument (read in place) that changes is copied into a
    slot from then on; under ``grad`` the graph is replayed node by node."""
    from umx.primitives import Compiled

    rng = np.random.default_rng(11)
    w = (rng.standard_normal((512, 512)) * 0.05).astype(np.float32)  # 1 MiB: bound
    b = rng.standard_normal(512).astype(np.float32)
    wm, bm = mx.array(w), mx.array(b)
    cf = mx.compile(_layers)
    before = graphs.STATS.replays
    for i in range(7):
        if i == 4:  # other weights: the graph is captured again with them copied in
            w = (rng.standard_normal((512, 512)) * 0.05).astype(np.float32)
            wm = mx.array(w)
        x = rng.standard_normal((8, 512)).astype(np.float32)
        s, h = cf(mx.array(x), wm, bm)
        assert i == 0 or (type(s._prim) is Compiled and s._siblings == (s, h))
        rs, rh = _layers_np(x, w, b)
        np.testing.assert_allclose(np.array(s), rs, rtol=1e-4, atol=1e-3)
        np.testing.assert_allclose(np.array(h), rh, rtol=1e-4, atol=1e-3)
    program = _program_of(cf)
    assert program and not program.refused
    assert graphs.STATS.replays - before >= 4
    x = mx.array(rng.standard_normal((8, 512)).astype(np.float32))
    def summed(f):
        return lambda x: mx.sum(f(x, wm, bm)[0], stream=G)

    g = mx.grad(summed(cf))(x)
    want = mx.grad(summed(_layers))(x)
    np.testing.assert_allclose(np.array(g), np.array(want), rtol=1e-4, atol=1e-4)
    # the graph of a compiled function that is gone goes at the next capture
    evictions = graphs.STATS.evictions
    del cf, program, s, h
    gc.collect()
    other = mx.compile(lambda x: _layers(x, wm, bm)[1] + 1)
    for _ in range(3):
        mx.eval(other(x))
    assert graphs.STATS.evictions > evictions


def _train(compiled: bool, xs: list, ys: list) -> tuple:
    """The losses and first weight of a small model trained on ``xs``, ``ys`` on the GPU, compiled or not."""
    import umx.nn as nn
    import umx.optimizers as optim

    mx.random.seed(7)
    with mx.stream(G):
        model = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Dropout(0.2), nn.Linear(64, 10))
        opt = optim.Adam(learning_rate=1e-2)

        def loss_fn(m, x, y):
            return nn.losses.cross_entropy(m(x), y, reduction="mean")

        def step(x, y):
            loss, grads = nn.value_and_grad(model, loss_fn)(model, x, y)
            opt.update(model, grads)
            return loss

        state = [model.state, opt.state]
        run = mx.compile(step, inputs=state, outputs=state) if compiled else step
        losses = []
        for x, y in zip(xs, ys):
            loss = run(x, y)
            mx.eval(loss, state)
            losses.append(loss.item())
    return losses, np.array(model.layers[0].weight), run


def test_compiled_training_steps_with_state_and_fresh_random_draws_match_uncompiled(graphs):
    """A training step as MLX users compile it (model and optimizer state in ``inputs``/``outputs``, dropout's
    fresh draws each step) gives the uncompiled losses and weights, step after step, replayed as one graph."""
    rng = np.random.default_rng(12)
    xs = [mx.array(rng.standard_normal((16, 32)).astype(np.float32)) for _ in range(6)]
    ys = [mx.array(rng.integers(0, 10, 16)) for _ in range(6)]
    losses, weight, _ = _train(False, xs, ys)
    got_losses, got_weight, run = _train(True, xs, ys)
    np.testing.assert_allclose(got_losses, losses, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got_weight, weight, rtol=1e-4, atol=1e-5)
    assert _program_of(run) and not _program_of(run).refused


def test_with_graphs_off_a_compiled_call_runs_once_as_one_node_then_node_by_node(graphs, monkeypatch):
    from umx.primitives import Compiled

    monkeypatch.setattr(graphs, "ENABLED", False)
    rng = np.random.default_rng(13)
    w, b = (rng.standard_normal((16, 16)) * 0.2).astype(np.float32), rng.standard_normal(16).astype(np.float32)
    cf = mx.compile(_layers)
    kinds = []
    for _ in range(4):
        x = rng.standard_normal((4, 16)).astype(np.float32)
        s, _ = cf(mx.array(x), mx.array(w), mx.array(b))
        kinds.append(type(s._prim) is Compiled)
        np.testing.assert_allclose(np.array(s), _layers_np(x, w, b)[0], rtol=1e-4, atol=1e-4)
    # (the call that traces replays at once: as one node, refused, then node by node)
    assert kinds == [True, False, False, False] and _program_of(cf).refused
