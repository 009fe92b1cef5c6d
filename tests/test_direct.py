"""The short paths of a small eval: one node planned without a walk, umx's own elementwise kernels on the GPU
(launched without CuPy), and small results the kernel writes to the host itself (mirrors, read by ``item()``)."""

from __future__ import annotations

import _signal
import gc
import signal
import threading
from dataclasses import replace

import numpy as np
import pytest

import umx as mx
from umx.runtime import scheduler

gpu_only = pytest.mark.skipif(not mx.is_available(mx.gpu), reason="no CUDA GPU (CuPy and a device)")


def _direct():
    from umx.backends.cuda import direct

    return direct


# -- one node, planned without a walk (every device) -------------------------------------------------------------
def test_one_node_takes_the_short_plan_and_matches_numpy(device, rng, monkeypatch):
    calls = []
    plan_one = scheduler._plan_one
    monkeypatch.setattr(scheduler, "_plan_one", lambda t, host: calls.append(r := plan_one(t, host)) or r)
    x = rng.standard_normal((3, 5)).astype(np.float32)
    a = mx.array(x)
    y = mx.add(a, 1.5, stream=device)  # a: host data (on the GPU, its copy is made on the way)
    np.testing.assert_allclose(np.asarray(y), x + np.float32(1.5), rtol=1e-6)
    z = mx.multiply(y, y, stream=device)  # y: this stream's result
    np.testing.assert_allclose(np.asarray(z), (x + np.float32(1.5)) ** 2, rtol=1e-6)
    assert calls[-1] is not None  # (the first eval on a stream may start its executor: the full plan)


def test_short_plan_reads_another_streams_result(device):
    other = mx.new_stream(mx.cpu)
    a = mx.multiply(mx.arange(6, dtype=mx.float32), 2.0, stream=other)
    mx.eval(a)
    b = mx.add(a, 1.0, stream=device)
    np.testing.assert_array_equal(np.asarray(b), np.arange(6) * 2.0 + 1.0)


def test_an_eval_behind_pending_work_on_its_stream_is_right_and_in_order(device):
    """Evaluating a node while its stream still has work pending (the short plan may not take it then)."""
    st = mx.new_stream(device)
    x = mx.ones((64, 64), stream=st)
    for _ in range(20):
        x = mx.matmul(x, x, stream=st) * (1 / 64)
    mx.async_eval(x)
    y = mx.add(x, 1.0, stream=st)
    np.testing.assert_allclose(np.asarray(y), np.full((64, 64), 2.0), rtol=1e-5)


def _lock_is_free(ex) -> bool:
    """Whether another thread can take ``ex``'s run lock (taken and given back at once)."""
    got = []

    def take():
        if ex._run_lock.acquire(blocking=False):
            got.append(True)
            ex._run_lock.release()

    t = threading.Thread(target=take)
    t.start()
    t.join(10)
    return got == [True]


def test_ctrl_c_before_the_short_plan_takes_anything(device, monkeypatch):
    """A Ctrl-C while the short plan looks at a node lands at once (it is not held back there): nothing was
    numbered, the handler is the user's, the stream stays usable and the result is computed later."""
    st = mx.new_stream(device)
    plan_one = scheduler._plan_one

    def interrupted(t, host):
        _signal.raise_signal(signal.SIGINT)
        return plan_one(t, host)

    y = mx.add(mx.array([1.0, 2.0]), 1.0, stream=st)
    mx.eval(mx.add(y, 0.0, stream=st))  # (the stream's executor is running: the short plan applies)
    y = mx.add(mx.array([1.0, 2.0]), 1.0, stream=st)
    monkeypatch.setattr(scheduler, "_plan_one", interrupted)
    with pytest.raises(KeyboardInterrupt):
        mx.eval(y)
    monkeypatch.undo()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert y._exec is None and _lock_is_free(st.executor)
    np.testing.assert_array_equal(np.asarray(y), [2.0, 3.0])
    assert mx.add(y, 1.0, stream=st).tolist() == [3.0, 4.0]


def test_ctrl_c_after_the_short_plan_numbered_a_node_hands_it_to_the_worker(device, monkeypatch):
    """The worst moment: the node is numbered and its stream's run lock taken, but nothing runs it yet. The
    worker gets it, computes it, and the stream goes on."""
    st = mx.new_stream(device)
    mx.eval(mx.add(mx.array(1.0), 0.0, stream=st))
    plan_one = scheduler._plan_one

    def interrupted(t, host):
        plan_one(t, host)
        raise KeyboardInterrupt

    y = mx.add(mx.array([1.0, 2.0]), 1.0, stream=st)
    monkeypatch.setattr(scheduler, "_plan_one", interrupted)
    with pytest.raises(KeyboardInterrupt):
        y.item() if y.size == 1 else mx.eval(y)
    monkeypatch.undo()
    assert y._seq > 0  # it was numbered
    np.testing.assert_array_equal(np.asarray(y), [2.0, 3.0])  # the worker ran it
    assert _lock_is_free(st.executor)
    s = mx.add(mx.array(2.0), 1.0, stream=st)
    monkeypatch.setattr(scheduler, "_plan_one", interrupted)
    with pytest.raises(KeyboardInterrupt):
        s.item()  # (a host read: on a GPU, the hint is left for the worker)
    monkeypatch.undo()
    assert s.item() == 3.0
    assert mx.add(y, 1.0, stream=st).tolist() == [3.0, 4.0]


def test_ctrl_c_between_the_run_lock_and_the_numbering_gives_the_lock_back(device, monkeypatch):
    st = mx.new_stream(device)
    mx.eval(mx.add(mx.array(1.0), 0.0, stream=st))
    ex = st.executor
    take = ex.try_run_inline

    def interrupted():
        assert take()
        raise KeyboardInterrupt

    y = mx.add(mx.array([1.0, 2.0]), 1.0, stream=st)
    monkeypatch.setattr(ex, "try_run_inline", interrupted, raising=False)
    with pytest.raises(KeyboardInterrupt):
        mx.eval(y)
    monkeypatch.undo()
    assert y._exec is None and _lock_is_free(ex)
    np.testing.assert_array_equal(np.asarray(y), [2.0, 3.0])


def test_the_users_ctrl_c_handler_is_given_back_when_a_batch_raises_before_it_starts(monkeypatch):
    """The planner holds Ctrl-C back until the caller's batch starts; a batch that fails before it says so (its
    executor's set-up raising) still gives the user's handler back."""
    st = mx.new_stream(mx.cpu)
    ex = st.executor

    def refuse(tasks, started=None):
        ex.hand_over(tasks)  # the worker runs them
        raise KeyboardInterrupt

    monkeypatch.setattr(ex, "run_inline", refuse, raising=False)
    y = mx.add(mx.array([1.0, 2.0]), 1.0, stream=st)
    with pytest.raises(KeyboardInterrupt):
        mx.eval(y)
    monkeypatch.undo()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert y.tolist() == [2.0, 3.0]


def _enqueuing_stream(monkeypatch):
    """A CPU stream whose executor poses as one that only enqueues (as a GPU's does), recording who runs it."""
    st = mx.new_stream(mx.cpu)
    ex = st.executor
    monkeypatch.setattr(ex, "only_enqueues", lambda tasks: True, raising=False)
    monkeypatch.setattr(ex, "traits", replace(ex.traits, inline_rank=0), raising=False)  # (the caller's own
    # batch is another stream's)
    threads = []
    run_inline = ex.run_inline

    def recorded(tasks, started=None):
        threads.append(threading.current_thread())
        return run_inline(tasks, started)

    monkeypatch.setattr(ex, "run_inline", recorded, raising=False)
    return st, threads


def test_caller_launches_a_short_batch_of_another_stream_first(monkeypatch, rng):
    launches, threads = _enqueuing_stream(monkeypatch)
    own = mx.new_stream(mx.cpu)
    x = rng.standard_normal((8, 8)).astype(np.float32)
    a = mx.array(x)
    p = mx.matmul(a, a, stream=launches)
    e = a
    for _ in range(5):
        e = mx.exp(mx.multiply(e, 0.1, stream=own), stream=own)
    own_threads = []
    own_ex = own.executor
    run_inline = own_ex.run_inline
    monkeypatch.setattr(own_ex, "run_inline", lambda tasks, started=None: own_threads.append(threads[:]) or
                        run_inline(tasks, started), raising=False)
    mx.eval(p, e)
    assert threads == [threading.main_thread()]
    assert own_threads == [[threading.main_thread()]]  # the caller's own batch, after the launches
    np.testing.assert_allclose(np.asarray(p), x @ x, rtol=1e-5)
    want = x
    for _ in range(5):
        want = np.exp(want * np.float32(0.1))
    np.testing.assert_allclose(np.asarray(e), want, rtol=1e-5)


def test_ctrl_c_before_the_first_of_several_inline_batches(monkeypatch, rng):
    """The held Ctrl-C lands as the first inline batch starts: it and the caller's other batch go to their
    workers, in order, and compute."""
    launches, _ = _enqueuing_stream(monkeypatch)
    own = mx.new_stream(mx.cpu)
    plan = scheduler._plan

    def interrupted(targets, inline=False, host=False):
        _signal.raise_signal(signal.SIGINT)
        return plan(targets, inline, host)

    monkeypatch.setattr(scheduler, "_plan", interrupted)
    x = rng.standard_normal((4, 4)).astype(np.float32)
    a = mx.array(x)
    p = mx.matmul(a, a, stream=launches)
    e = mx.exp(mx.multiply(a, 0.5, stream=own), stream=own)
    with pytest.raises(KeyboardInterrupt):
        mx.eval(p, e)
    monkeypatch.setattr(scheduler, "_plan", plan)
    np.testing.assert_allclose(np.asarray(p), x @ x, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(e), np.exp(x * np.float32(0.5)), rtol=1e-6)
    assert mx.add(p, 1.0, stream=launches).shape == (4, 4) and mx.add(e, 1.0, stream=own).size == 16
    np.testing.assert_allclose(np.asarray(mx.add(e, 1.0, stream=own)), np.exp(x * np.float32(0.5)) + 1, rtol=1e-6)


# -- umx's own elementwise kernels (GPU) ---------------------------------------------------------------------------
def _launches(monkeypatch):
    """Count the launches of umx's own kernels."""
    direct = _direct()
    count = [0]
    launch = direct._launch

    def counted(*args):
        count[0] += 1
        return launch(*args)

    monkeypatch.setattr(direct, "_launch", counted)
    return count


def _widths(monkeypatch) -> list:
    """A list that gets how many elements a thread of each of umx's elementwise kernels launched from now takes."""
    direct = _direct()
    widths: list = []
    vector = direct._vector
    monkeypatch.setattr(direct, "_vector", lambda *a: widths.append(vector(*a)) or widths[-1])
    return widths


@gpu_only
@pytest.mark.parametrize("dtype", ["float32", "float64", "int32", "int64", "uint8", "bool", "bfloat16"])
def test_own_kernels_match_numpy_for_each_input_kind(monkeypatch, rng, dtype):
    """Inputs of the output's shape, broadcast along leading axes, 0-d device arrays and constants, per dtype."""
    count = _launches(monkeypatch)
    G = mx.gpu
    ref = np.float32 if dtype == "bfloat16" else np.dtype(dtype)
    full = rng.integers(0, 5, (4, 6)).astype(ref)
    row = rng.integers(1, 5, (6,)).astype(ref)
    one = rng.integers(1, 5, ()).astype(ref)
    dt = mx.bool_ if dtype == "bool" else getattr(mx, dtype)
    a, r, o = (mx.array(v, dtype=dt) for v in (full, row, one))
    a, r, o = (mx.add(v, mx.zeros_like(v), stream=G) if dtype != "bool" else mx.logical_or(v, v, stream=G)
               for v in (a, r, o))
    mx.eval(a, r, o)
    before = count[0]
    if dtype == "bool":
        got = [mx.logical_and(a, r, stream=G), mx.logical_or(r, o, stream=G), mx.logical_xor(a, True, stream=G)]
        want = [full & row, row | one, full ^ True]
    else:
        got = [mx.add(a, r, stream=G), mx.multiply(r, o, stream=G), mx.subtract(a, 3, stream=G),
               mx.maximum(o, a, stream=G)]
        want = [full + row, row * one, full - ref.type(3) if dtype != "bfloat16" else full - 3, np.maximum(one, full)]
    for g, w in zip(got, want):
        np.testing.assert_array_equal(np.asarray(g), np.asarray(w).astype(ref))
    assert count[0] - before == len(got)


@gpu_only
def test_constants_of_every_kind_reach_the_kernel_exactly(monkeypatch):
    count = _launches(monkeypatch)
    G = mx.gpu
    big = 2**63 + 12345
    u = mx.add(mx.array(np.array([1, 2], np.uint64)), big, stream=G)
    assert np.asarray(u).tolist() == [big + 1, big + 2]
    i = mx.subtract(mx.array(np.array([0, 5], np.int64)), -(2**62), stream=G)
    assert np.asarray(i).tolist() == [2**62, 2**62 + 5]
    f = mx.multiply(mx.array(np.array([1.0, -2.0])), 0.1, stream=G)
    np.testing.assert_array_equal(np.asarray(f), np.array([1.0, -2.0], np.float32) * np.float32(0.1))
    b = mx.logical_and(mx.array([True, False, True]), True, stream=G)
    assert np.asarray(b).tolist() == [True, False, True]
    assert count[0] >= 4


@gpu_only
def test_strided_views_and_float16_take_cupys_kernels(monkeypatch, rng):
    count = _launches(monkeypatch)
    G = mx.gpu
    x = rng.standard_normal((5, 7)).astype(np.float32)
    t = mx.transpose(mx.array(x), stream=G)
    mx.eval(t)
    before = count[0]
    np.testing.assert_allclose(np.asarray(mx.exp(t, stream=G)), np.exp(x.T), rtol=1e-6)
    h = mx.add(mx.array(x.astype(np.float16)), 1.0, stream=G)
    np.testing.assert_allclose(np.asarray(h), x.astype(np.float16) + np.float16(1), rtol=1e-3)
    mid = mx.add(mx.array(x), mx.array(x[:1, :1]).reshape(1, 1), stream=G)  # (a 1x1: a leading broadcast)
    np.testing.assert_allclose(np.asarray(mid), x + x[:1, :1], rtol=1e-6)
    assert count[0] == before + 1
    y = rng.standard_normal((3, 5, 7)).astype(np.float32)
    inner = mx.add(mx.array(y), mx.array(y[:, :1, :]), stream=G)  # (broadcast along a middle axis only)
    np.testing.assert_allclose(np.asarray(inner), y + y[:, :1, :], rtol=1e-6)
    assert count[0] == before + 1


@gpu_only
@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "int32", "float64"])
@pytest.mark.parametrize("shapes", [((4096, 64), (4096, 1)), ((2, 3, 40, 64), (3, 40, 1)),
                                    ((2, 3, 40, 64), (1, 3, 1, 1)), ((7, 33), (7, 1)), ((5, 9, 8), (5, 1, 1))])
def test_columns_broadcast_along_trailing_axes_run_as_own_kernels(monkeypatch, rng, dtype, shapes):
    """A leaf kept along leading axes and broadcast along trailing ones (a row's maximum or mean) is read by umx's
    kernel, one element a thread or several where the width divides; every result is NumPy's."""
    count = _launches(monkeypatch)
    direct = _direct()
    widths = _widths(monkeypatch)
    G = mx.gpu
    ref = np.dtype(np.float32 if dtype == "bfloat16" else dtype)
    dt = getattr(mx, dtype)
    big, col = (rng.integers(-4, 5, s).astype(ref) for s in shapes)
    a, c = (mx.add(mx.array(v, dtype=dt), 0, stream=G) for v in (big, col))
    mx.eval(a, c)
    before = count[0]
    got = mx.multiply(mx.subtract(a, c, stream=G), c, stream=G)
    mx.eval(got)
    assert count[0] - before == 1  # (one region, by umx's kernel: CuPy's is not counted)
    np.testing.assert_array_equal(np.asarray(got.astype(mx.float32) if dtype == "bfloat16" else got),
                                  ((big - col) * col).astype(ref))
    if big.size >= direct.VEC_MIN and shapes[0][-1] % 8 == 0:
        assert widths[-1] > 1


@gpu_only
def test_fused_region_runs_as_one_own_kernel(monkeypatch, rng):
    count = _launches(monkeypatch)
    G = mx.gpu
    x = rng.standard_normal((256, 512)).astype(np.float32)
    bias = rng.standard_normal(512).astype(np.float32)
    a, b = mx.array(x), mx.array(bias)
    mx.eval(mx.add(a, 0.0, stream=G), mx.add(b, 0.0, stream=G))
    before = count[0]
    y = mx.maximum(mx.add(mx.multiply(a, 2.0, stream=G), b, stream=G), 0.0, stream=G)
    np.testing.assert_allclose(np.asarray(y), np.maximum(x * 2 + bias, 0), rtol=1e-6)
    assert count[0] - before == 1


@gpu_only
@pytest.mark.parametrize("n", [0, 1, 255, 256, 257, 1 << 21])
def test_sizes_across_the_block_and_grid_limits(rng, n):
    x = rng.standard_normal(n).astype(np.float32)
    y = mx.sqrt(mx.abs(mx.array(x), stream=mx.gpu), stream=mx.gpu)
    np.testing.assert_allclose(np.asarray(y), np.sqrt(np.abs(x)), rtol=1e-6)



@gpu_only
@pytest.mark.parametrize("dtype", ["bool", "uint8", "int16", "bfloat16", "float32", "int64", "float64"])
def test_large_kernels_take_several_elements_a_thread(rng, dtype, monkeypatch):
    """Past VEC_MIN elements a thread takes 16 bytes' worth of elements where sizes and addresses allow: full
    arrays, a broadcast row, the halves of joined columns, constants; a size, a row or an address that does not
    divide gives the kernel of one element a thread. Every result is NumPy's."""
    direct = _direct()
    widths = _widths(monkeypatch)
    G = mx.gpu
    ref = np.dtype(np.float32 if dtype == "bfloat16" else dtype)
    dt = mx.bool_ if dtype == "bool" else getattr(mx, dtype)
    cols = 1024
    rows = direct.VEC_MIN // cols + 3

    def dev(host):  # (made on the GPU: its data is the device's)
        a = mx.array(host, dtype=dt)
        return mx.logical_or(a, a, stream=G) if dtype == "bool" else mx.add(a, mx.zeros_like(a), stream=G)

    def op(x, y):
        if dtype == "bool":
            return mx.logical_xor(mx.logical_and(x, y, stream=G), True, stream=G), lambda p, q: (p & q) ^ True
        return mx.maximum(mx.subtract(mx.add(x, y, stream=G), 2, stream=G), 1, stream=G), \
            lambda p, q: np.maximum(p + q - ref.type(2), ref.type(1))

    full_h = rng.integers(0, 5, (rows, 2 * cols)).astype(ref)
    row_h = rng.integers(0, 5, (cols,)).astype(ref)
    odd_h = rng.integers(0, 5, (cols + 1,)).astype(ref)
    full, row, odd = dev(full_h), dev(row_h), dev(odd_h)
    left, right = full[:, :cols], full[:, cols:]
    shifted = full.reshape(-1)[1:rows * cols + 1].reshape(rows, cols)  # (an address off by one element)
    odd_rows = full[:, : cols + 1]  # (rows of an odd length)
    mx.eval(left, right, shifted, odd_rows)
    cases = [(left, right, full_h[:, :cols], full_h[:, cols:]), (left, row, full_h[:, :cols], row_h),
             (shifted, right, full_h.reshape(-1)[1:rows * cols + 1].reshape(rows, cols), full_h[:, cols:]),
             (odd_rows, odd, full_h[:, : cols + 1], odd_h)]
    found = []
    for x, y, xh, yh in cases:
        got, fn = op(x, y)
        widths.clear()
        mx.eval(got)
        found.append(widths[:])
        want = fn(xh.astype(ref), yh.astype(ref))
        np.testing.assert_array_equal(np.asarray(got.astype(mx.float32) if dtype == "bfloat16" else got),
                                      want.astype(np.float32 if dtype == "bfloat16" else ref))
    v = 16 // (2 if dtype == "bfloat16" else ref.itemsize)
    # (one fused region each: the halves and the broadcast row take v at a time, rows of an odd length one)
    assert found[0] == [v] and found[1] == [v] and found[3] == [1], found


# -- mirrors: small results written to the host by their kernel --------------------------------------------------
@gpu_only
def test_item_of_one_node_lives_on_the_host_and_gives_the_slot_back():
    """A small result of one node that item() reads at once is written by its kernel to a mirror's slot alone: its
    data is then a host array, and a later GPU op takes it as a constant (no copy to the device)."""
    G = mx.gpu
    one = mx.add(mx.array(1.0), 0.0, stream=G)
    mx.eval(one)
    ex = one._exec
    y = mx.add(one, 2.0, stream=G)
    assert y.item() == 3.0
    assert type(y._data) is np.ndarray and y._exec is None
    assert len(ex._mirrors._free) == ex._mirrors.SLOTS
    assert mx.add(y, 1.0, stream=G).item() == 4.0
    assert not y._copies  # taken as a constant: never copied to the device
    v = mx.add(mx.array(np.arange(256, dtype=np.float32)), 0.0, stream=G)
    mx.eval(v)
    assert mx.add(v, 1.0, stream=G).tolist() == list(np.arange(256, dtype=np.float32) + 1)  # 256: the most
    s = mx.sum(v, stream=G)  # a reduction too
    assert s.item() == float(np.arange(256).sum()) and type(s._data) is np.ndarray
    w = mx.multiply(v, 2.0, stream=G)  # then read on the GPU: copied in
    np.testing.assert_array_equal(np.asarray(mx.add(mx.sum(v, stream=G), w, stream=G)),
                                  np.arange(256, dtype=np.float32) * 2 + np.float32(np.arange(256).sum()))


@gpu_only
def test_item_of_a_region_reads_the_mirror_and_gives_the_slot_back():
    from umx.backends.cuda import memory as gmem

    G = mx.gpu
    one = mx.array(1.0)
    z = mx.multiply(mx.add(one, 1.0, stream=G), 4.0, stream=G)  # a fused region: mirrored, lives on the GPU
    scheduler.eval_arrays([z], False, True)  # as item() evaluates
    assert gmem.MIRROR in z._copies
    assert z.item() == 8.0
    ex = z._exec
    assert len(ex._mirrors._free) == ex._mirrors.SLOTS
    assert gmem.MIRROR not in (z._copies or {})
    assert type(z._data) is not np.ndarray  # the result still lives on the GPU: another GPU op reads it there
    assert mx.add(z, 1.0, stream=G).item() == 9.0


@gpu_only
def test_mirrors_dropped_unread_and_more_than_the_slots():
    """Evals that hint a host read but whose results are dropped unread, or more pending than there are slots:
    slots come back, and results stay right. (Regions: one node's small result is read at once, see above.)"""
    G = mx.gpu
    base = mx.add(mx.array(np.arange(4, dtype=np.float32)), 0.0, stream=G)
    mx.eval(base)
    for k in range(5):
        y = mx.add(mx.multiply(base, 2.0, stream=G), float(k), stream=G)
        scheduler.eval_arrays([y], False, True)  # as item() evaluates, then no read
        del y
    gc.collect()
    ex = base._exec
    assert len(ex._mirrors._free) == ex._mirrors.SLOTS
    held = []
    for k in range(ex._mirrors.SLOTS + 10):
        y = mx.add(mx.multiply(base, float(k), stream=G), 1.0, stream=G)
        scheduler.eval_arrays([y], False, True)
        held.append(y)
    for k, y in enumerate(held):
        np.testing.assert_array_equal(np.asarray(y), np.arange(4, dtype=np.float32) * k + 1)
    assert len(ex._mirrors._free) == ex._mirrors.SLOTS


@gpu_only
def test_item_from_many_threads():
    G = mx.gpu
    base = mx.add(mx.array(1.0), 0.0, stream=G)
    mx.eval(base)
    errors = []

    def work(k):
        try:
            for j in range(200):
                v = mx.add(mx.multiply(base, float(k), stream=G), float(j), stream=G).item()
                if v != k + j:
                    errors.append((k, j, v))
        except Exception as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


@gpu_only
def test_a_failing_kernel_before_a_mirror_still_reports(monkeypatch):
    """The mirrored node depends on a failed one: the failure is raised from item(), nothing hangs."""
    from umx.backends.cuda import executor as cex
    from umx.primitives.reduction import Prod

    def boom(prim, x):
        raise RuntimeError("boom")

    monkeypatch.setitem(cex.KERNELS, Prod, boom)  # (a reduction umx's own kernels leave to CuPy)
    y = mx.add(mx.prod(mx.array(np.ones(3, np.float32)), stream=mx.gpu), 1.0, stream=mx.gpu)
    with pytest.raises(RuntimeError, match="boom"):
        y.item()


@gpu_only
@pytest.mark.parametrize("dtype", ["float32", "float64", "int8", "uint16", "int64", "bool_", "bfloat16"])
def test_item_and_tolist_through_mirrors_per_dtype(rng, dtype):
    G = mx.gpu
    dt = getattr(mx, dtype)
    ref = np.float32 if dtype == "bfloat16" else np.dtype(dtype.rstrip("_"))
    vals = rng.integers(0, 3, (3, 5)).astype(ref)
    a = mx.array(vals, dtype=dt)
    if dtype == "bool_":
        y, want = mx.logical_not(a, stream=G), ~vals
    else:
        y, want = mx.add(a, 1, stream=G), vals + ref.type(1) if hasattr(ref, "type") else vals + 1
    assert y.tolist() == want.tolist()
    s = mx.multiply(mx.array(vals[0, 0], dtype=dt), 1 if dtype != "bool_" else True, stream=G)
    assert s.item() == vals[0, 0].item()
    assert type(s.item()) is type(vals[0, 0].item())


@gpu_only
@pytest.mark.parametrize("dtype", ["float32", "float64", "int8", "uint8", "int16", "uint16", "int32", "uint32", "int64",
                                   "bool_", "bfloat16"])
def test_one_element_results_read_by_item_per_dtype_and_extreme_values(dtype):
    """item() of one element: packed with the token in one store (at most 4 bytes) or written to the slot (8
    bytes), by an elementwise kernel or a reduction; signs, extremes, NaN and infinities come back bit for bit, and
    more reads than slots reuse them."""
    G = mx.gpu
    dt = getattr(mx, dtype)
    ref = np.dtype(np.float32 if dtype == "bfloat16" else dtype.rstrip("_"))
    if ref.kind == "f":
        vals = np.array([-np.inf, np.inf, np.nan, -0.0, 1.5, -3.25], ref)
    elif ref.kind == "b":
        vals = np.array([True, False])
    else:
        info = np.iinfo(ref)
        vals = np.array([info.min, info.max, 0, 1, info.max // 3], ref)
    for v in vals:
        for shape in [(), (1,), (1, 1)]:
            h = mx.array(np.full(shape, v, ref), dtype=dt)
            g = mx.add(h, mx.zeros_like(h), stream=G) if ref.kind != "b" else mx.logical_or(h, h, stream=G)
            want = np.full(shape, v, ref)
            got = g.item()
            assert (np.isnan(got) and np.isnan(want.item())) or got == want.item(), (v, shape, got)
            assert type(got) is type(want.item())
        if ref.kind != "b":
            pair = mx.add(mx.array(np.array([v, v], ref), dtype=dt), mx.zeros((2,), dtype=dt), stream=G)
            mx.eval(pair)
            got = mx.max(pair, stream=G).item()  # a reduction's result
            assert (np.isnan(got) and np.isnan(v)) or got == v.item(), (v, got)
    one = mx.add(mx.array(np.ones((), ref), dtype=dt), mx.zeros((), dtype=dt), stream=G)
    mx.eval(one)
    ex = one._exec
    for k in range(ex._mirrors.SLOTS * 2 + 3):
        x = mx.logical_and(one, k % 2 == 0, stream=G) if ref.kind == "b" else mx.multiply(one, k % 7, stream=G)
        assert x.item() == (k % 2 == 0 if ref.kind == "b" else k % 7)
    assert len(ex._mirrors._free) == ex._mirrors.SLOTS


@gpu_only
def test_seed_split_caller_launches_the_product_itself(monkeypatch, rng):
    """The seed's split: the caller launches the GPU product, then computes the exps on its own thread."""
    from umx.backends.cuda.executor import CudaExecutor

    ran = []
    run_inline = CudaExecutor.run_inline

    def recorded(self, tasks, started=None):
        ran.append(threading.current_thread())
        return run_inline(self, tasks, started)

    monkeypatch.setattr(CudaExecutor, "run_inline", recorded)
    a_np = rng.random((256, 64), dtype=np.float32)
    b_np = rng.random((64, 4), dtype=np.float32)
    a, b = mx.array(a_np), mx.array(b_np)
    mx.eval(mx.matmul(a, b, stream=mx.gpu))  # the copies to the GPU are made
    x = mx.matmul(a, b, stream=mx.gpu)
    c = b
    for _ in range(20):
        c = mx.exp(mx.multiply(c, 0.01, stream=mx.cpu), stream=mx.cpu)
    ran.clear()
    mx.eval(x, c)
    assert ran == [threading.main_thread()]
    np.testing.assert_allclose(np.asarray(x), a_np @ b_np, rtol=1e-4)
    want = b_np
    for _ in range(20):
        want = np.exp(want * np.float32(0.01))
    np.testing.assert_allclose(np.asarray(c), want, rtol=1e-5)


_SAFE_INT = {"left_shift", "right_shift"}  # (shift counts kept below the width: C leaves larger ones undefined)


@gpu_only
def test_gpu_matches_the_cpu_for_every_binary_op_dtype_pair_and_operand_kind():
    """Every binary op on every pair of dtypes, with operands of the output's shape, broadcast along leading axes,
    0-d, or Python scalars: the GPU (umx's own kernels where they apply, CuPy elsewhere) gives the CPU's values."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from umx.ops.elementwise import _BINARY_NAMES

    dtypes = [mx.bool_, mx.uint8, mx.uint32, mx.int8, mx.int32, mx.int64, mx.float16, mx.bfloat16, mx.float32,
              mx.float64]
    shapes = [((4, 6), (4, 6)), ((4, 6), (6,)), ((6,), (3, 4, 6)), ((), (4, 6)), ((4, 6), "scalar")]

    # (each new structure compiles once: 300 examples take about 30 s on a fresh GPU machine)
    @settings(max_examples=300, deadline=None, derandomize=True)
    @given(name=st.sampled_from(sorted(_BINARY_NAMES)), a=st.sampled_from(dtypes), b=st.sampled_from(dtypes),
           shapes=st.sampled_from(shapes), seed=st.integers(0, 2**16))
    def check(name, a, b, shapes, seed):
        rng = np.random.default_rng(seed)
        sa, sb = shapes

        def values(shape, dt):
            if dt == mx.bool_:
                return rng.random(shape) < 0.5
            if dt.kind == "f" or dt.name in ("float16", "bfloat16"):
                v = rng.uniform(-3, 3, shape)
                return np.where(np.abs(v) < 0.25, 1.5, v).astype(np.float32)
            lo = 0 if dt.kind == "u" or name in _SAFE_INT else -6
            v = rng.integers(lo, 7, shape)
            return np.where(v == 0, 3, v) if name not in _SAFE_INT else np.minimum(v, 5)

        x = mx.array(values(sa, a), dtype=a)
        y = 2 if sb == "scalar" else mx.array(values(sb, b), dtype=b)
        op = getattr(mx, name)
        try:
            want = np.asarray(op(x, y, stream=mx.cpu))
        except (TypeError, ValueError):
            return
        got_arr = op(x, y, stream=mx.gpu)
        got = np.asarray(got_arr)
        assert got_arr.dtype == op(x, y, stream=mx.cpu).dtype and got.shape == want.shape
        if want.dtype.kind in "biu":
            np.testing.assert_array_equal(got, want, err_msg=f"{name} {a} {b} {shapes}")
        else:
            rtol = {"float16": 2e-3, "bfloat16": 1e-2, "float32": 2e-6, "float64": 1e-12}.get(got_arr.dtype.name,
                                                                                            1e-5)
            np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol, equal_nan=True,
                                       err_msg=f"{name} {a} {b} {shapes}")

    check()


@gpu_only
def test_a_host_read_no_mirror_serves_is_not_copied_ahead():
    """A small result the host reads at once, made by a kernel that cannot mirror it (a reduction), is read by
    one copy on demand: no pinned copy is started ahead of the read (it cost the caller 30 us)."""
    from umx.backends.cuda import memory as gmem

    G = mx.gpu
    v = mx.add(mx.array(np.arange(256, dtype=np.float32)), 0.0, stream=G)
    mx.eval(v)
    s = mx.sum(mx.reshape(v, (16, 16), stream=G), axis=0, stream=G)  # (CuPy's)
    scheduler.eval_arrays([s], False, True)  # as item() evaluates
    assert gmem.PENDING_HOST not in (s._copies or {})
    np.testing.assert_array_equal(np.asarray(s), np.arange(256).reshape(16, 16).sum(0))
    y = mx.multiply(mx.add(v, 1.0, stream=G), 1.0, stream=G)  # a mirrored one, for contrast
    scheduler.eval_arrays([y], False, True)
    assert gmem.MIRROR in y._copies and gmem.PENDING_HOST not in y._copies
    np.testing.assert_array_equal(np.asarray(y), np.arange(256, dtype=np.float32) + 1)


@gpu_only
@pytest.mark.parametrize("op", ["sum", "max", "min", "mean"])
@pytest.mark.parametrize("dtype", ["float32", "float64", "int32", "int64", "uint8", "bfloat16"])
@pytest.mark.parametrize("shape", [(), (1,), (7,), (3, 85), (256,), (257,), (16, 4096), (16, 4097), (2048 * 8 + 1,),
                                   (1 << 20,), (3, 1000, 1001)], ids=str)
def test_full_reductions_match_numpy(monkeypatch, rng, op, dtype, shape):
    """Full reductions run on umx's own kernel: one block up to MAX_REDUCE elements, a grid of blocks beyond."""
    from umx.backends.cuda import direct

    own = []
    reduce = direct.Launcher.reduce
    monkeypatch.setattr(direct.Launcher, "reduce", lambda self, *a: own.append(r := reduce(self, *a)) or r)
    ref_t = np.dtype(np.float32 if dtype == "bfloat16" else dtype)
    vals = (rng.integers(0, 9, shape) if ref_t.kind in "iu" else rng.standard_normal(shape)).astype(ref_t)
    a = mx.array(vals, dtype=getattr(mx, dtype))
    g = mx.add(a, mx.zeros_like(a), stream=mx.gpu)
    mx.eval(g)
    got = getattr(mx, op)(g, stream=mx.gpu)
    want = getattr(mx, op)(a, stream=mx.cpu)
    assert got.shape == want.shape and got.dtype == want.dtype
    w = np.asarray(want)
    if got.dtype.kind in "iu":
        assert got.item() == w.item()
    else:
        rtol = 1e-2 if dtype == "bfloat16" else 1e-5
        np.testing.assert_allclose(np.asarray(got), w, rtol=rtol, atol=rtol * np.sqrt(vals.size))
    assert own and own[-1] is not None


@gpu_only
def test_reductions_keep_nans_and_dims_and_serve_item_by_mirror():
    from umx.backends.cuda import memory as gmem

    G = mx.gpu
    x = mx.add(mx.array(np.array([[1.0, np.nan, 3.0], [0.5, -2.0, 7.0]], np.float32)), 0.0, stream=G)
    mx.eval(x)
    assert np.isnan(mx.max(x, stream=G).item()) and np.isnan(mx.min(x, stream=G).item())
    k = mx.sum(x, axis=(0, 1), keepdims=True, stream=G)
    assert k.shape == (1, 1) and np.isnan(np.asarray(k)).all()
    y = mx.mean(mx.square(mx.subtract(x, 1.0, stream=G), stream=G), stream=G)  # a loss: mirrored
    scheduler.eval_arrays([y], False, True)
    assert gmem.MIRROR in y._copies
    xs = np.array([[1.0, np.nan, 3.0], [0.5, -2.0, 7.0]], np.float32)
    assert np.isnan(y.item()) and np.isnan(np.mean((xs - 1) ** 2))
    z = mx.sum(mx.abs(mx.subtract(mx.nan_to_num(x, stream=G), 1.0, stream=G), stream=G), stream=G)
    assert z.item() == pytest.approx(float(np.abs(np.nan_to_num(xs) - 1).sum()), rel=1e-6)


# -- a matrix times a few vectors: umx's own kernel (GPU) ---------------------------------------------------------
_NARROW_SHAPES = [((4096, 512), (512, 4)), ((7, 33), (33, 1)), ((33,), (33, 8)), ((5, 3, 17), (17, 2)),
                  ((64, 100), (100,)), ((100,), (100,)), ((3, 16384), (16384, 3)), ((1, 1), (1, 5)),
                  ((70000, 3), (3, 7))]


@gpu_only
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("shapes", _NARROW_SHAPES, ids=str)
def test_narrow_products_run_on_umx_kernel_and_match_numpy(monkeypatch, rng, dtype, shapes):
    from umx.backends.cuda import cublas
    from umx.backends.cuda import executor as cex

    def refused(*args):
        raise AssertionError("cuBLAS was called for a narrow product")

    monkeypatch.setattr(cublas, "matmul", refused)
    monkeypatch.setattr(cex, "_cupy_matmul", refused)
    a_np = rng.standard_normal(shapes[0]).astype(dtype)
    b_np = rng.standard_normal(shapes[1]).astype(dtype)
    a, b = mx.array(a_np, dtype=getattr(mx, dtype)), mx.array(b_np, dtype=getattr(mx, dtype))
    y = mx.matmul(a, b, stream=mx.gpu)
    got = np.asarray(y)
    want = a_np.astype(np.float64) @ b_np.astype(np.float64)
    assert got.shape == want.shape and got.dtype == np.dtype(dtype)
    k = shapes[1][0]
    tol = (1e-5 if dtype == "float32" else 1e-13) * np.sqrt(k)
    scale = np.abs(a_np).astype(np.float64) @ np.abs(b_np).astype(np.float64)  # (bounds the rounding error)
    assert np.all(np.abs(got - want) <= tol * scale + 1e-30)


@gpu_only
@pytest.mark.parametrize("case", ["nine columns", "long rows", "strided", "bfloat16", "float16", "int32",
                                  "batched b", "empty", "k zero"])
def test_products_outside_the_narrow_kernel_take_cublas_and_match_numpy(rng, monkeypatch, case):
    direct = _direct()
    used = []
    matmul = direct.Launcher.matmul
    monkeypatch.setattr(direct.Launcher, "matmul",
                        lambda self, a, b, s: used.append(r := matmul(self, a, b, s)) or r)
    long = direct.NARROW_MAX_K + 1
    shapes = {"nine columns": ((64, 32), (32, 9)), "long rows": ((4, long), (long, 2)), "strided": ((32, 64), (32, 4)),
              "batched b": ((2, 8, 16), (2, 16, 3)), "empty": ((0, 16), (16, 3)),
              "k zero": ((8, 0), (0, 3))}.get(case, ((64, 32), (32, 4)))
    dt = {"bfloat16": mx.bfloat16, "float16": mx.float16, "int32": mx.int32}.get(case, mx.float32)
    ref = np.float32 if case == "bfloat16" else np.dtype(dt.name)
    a_np = rng.integers(-3, 4, shapes[0]).astype(ref)
    b_np = rng.integers(-3, 4, shapes[1]).astype(ref)
    a, b = mx.array(a_np, dtype=dt), mx.array(b_np, dtype=dt)
    if case == "strided":
        a, a_np = mx.transpose(a), a_np.T
    got = np.asarray(mx.matmul(a, b, stream=mx.gpu))
    np.testing.assert_array_equal(got, (a_np.astype(np.float64) @ b_np.astype(np.float64)).astype(got.dtype))
    assert all(r is None for r in used)


# -- one task, launched by the caller without a batch's loop (GPU) ---------------------------------------------
@gpu_only
def test_one_node_eval_takes_the_one_task_lane(monkeypatch, rng):
    from umx.backends.cuda.executor import CudaExecutor

    lanes = []
    run_one = CudaExecutor._run_one
    monkeypatch.setattr(CudaExecutor, "_run_one",
                        lambda self, n, *a: lanes.append(n._seq) or run_one(self, n, *a))
    x = rng.standard_normal((4, 8)).astype(np.float32)
    a = mx.add(mx.array(x), 0.0, stream=mx.gpu)
    mx.eval(a)
    lanes.clear()
    y = mx.multiply(a, 2.0, stream=mx.gpu)
    np.testing.assert_array_equal(np.asarray(y), x * np.float32(2.0))
    s = mx.sum(a, stream=mx.gpu)
    np.testing.assert_allclose(s.item(), x.astype(np.float64).sum(), rtol=1e-5)
    assert len(lanes) == 2
    parts = mx.split(a, 2, stream=mx.gpu)  # (siblings: the batch's loop)
    np.testing.assert_array_equal(np.asarray(parts[1]), x[2:])
    assert len(lanes) == 2


@gpu_only
def test_ctrl_c_inside_the_one_task_lane_hands_the_node_to_the_worker(monkeypatch, rng):
    from umx.backends.cuda.executor import CudaExecutor

    x = rng.standard_normal(16).astype(np.float32)
    a = mx.add(mx.array(x), 0.0, stream=mx.gpu)
    mx.eval(a)
    own = CudaExecutor.own
    hits = []

    def interrupted(self, n, *args):
        if threading.current_thread() is threading.main_thread() and not hits:
            hits.append(1)
            raise KeyboardInterrupt
        return own(self, n, *args)

    monkeypatch.setattr(CudaExecutor, "own", interrupted)
    y = mx.add(a, 1.0, stream=mx.gpu)
    with pytest.raises(KeyboardInterrupt):
        mx.eval(y)
    np.testing.assert_array_equal(np.asarray(y), x + np.float32(1.0))  # the worker ran it
    z = mx.multiply(y, 3.0, stream=mx.gpu)  # the stream goes on
    np.testing.assert_array_equal(np.asarray(z), (x + np.float32(1.0)) * np.float32(3.0))
    assert hits == [1]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # given back, though the lane raised first


@gpu_only
@pytest.mark.parametrize("dtype", ["float32", "float64", "int8", "uint16", "int64", "bool_", "bfloat16", "float16"])
def test_one_element_host_arrays_reach_the_kernel_as_constants(rng, dtype):
    """An elementwise GPU op reads a one-element host array as a launch parameter: right for every dtype and
    broadcast, and never copied to the device."""
    G = mx.gpu
    dt = getattr(mx, dtype)
    ref = np.float32 if dtype == "bfloat16" else np.dtype(dtype.rstrip("_"))
    for shape in [(), (1,), (1, 1)]:
        h_np = rng.integers(0, 3, shape).astype(ref)
        h = mx.array(h_np, dtype=dt)
        mx.eval(h)
        x_np = rng.integers(0, 3, (3, 4)).astype(ref)
        x = mx.add(mx.array(x_np, dtype=dt), mx.zeros_like(mx.array(x_np, dtype=dt)), stream=G)
        mx.eval(x)
        got = mx.multiply(x, h, stream=G)
        want = mx.multiply(mx.array(x_np, dtype=dt), mx.array(h_np, dtype=dt), stream=mx.cpu)
        assert got.shape == want.shape and got.dtype == want.dtype
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
        alone = mx.add(h, h, stream=G)  # (both inputs constants)
        np.testing.assert_array_equal(np.asarray(alone), np.asarray(mx.add(h, h, stream=mx.cpu)))
        assert not h._copies  # never copied to the device
    m = mx.matmul(mx.array(np.ones((1, 1), np.float32)), mx.array(np.full((1, 3), 2.0, np.float32)), stream=G)
    np.testing.assert_array_equal(np.asarray(m), np.full((1, 3), 2.0, np.float32))  # not elementwise: copied in


@gpu_only
def test_spare_outputs_never_alias_live_results(rng):
    """The lane launches umx's own kernel into a spare output made after the previous launch: every result keeps
    its own buffer."""
    G = mx.gpu
    x = rng.standard_normal(8).astype(np.float32)
    a = mx.add(mx.array(x), 0.0, stream=G)
    mx.eval(a)
    ys = []
    for k in range(6):
        y = mx.add(a, float(k), stream=G)
        mx.eval(y)
        ys.append(y)
    assert (a.shape, a.dtype) in a._exec._spares
    ptrs = {y._data.data.ptr for y in ys}
    assert len(ptrs) == len(ys)
    for k, y in enumerate(ys):
        np.testing.assert_array_equal(np.asarray(y), x + np.float32(k))


@gpu_only
def test_a_launch_error_in_the_host_lane_is_raised_by_item(monkeypatch):
    from umx.backends.cuda import direct

    G = mx.gpu
    a = mx.add(mx.array(2.0), 0.0, stream=G)
    mx.eval(a)
    ex = a._exec
    run = direct.Launcher.run
    calls = []

    def boom(self, *args):
        if not calls:
            calls.append(1)
            raise RuntimeError("launch failed")
        return run(self, *args)

    monkeypatch.setattr(direct.Launcher, "run", boom)
    y = mx.add(a, 1.0, stream=G)
    with pytest.raises(RuntimeError, match="launch failed") as info:
        y.item()
    assert any("Add" in note for note in getattr(info.value, "__notes__", []))
    assert len(ex._mirrors._free) == ex._mirrors.SLOTS
    assert mx.add(a, 2.0, stream=G).item() == 4.0


@gpu_only
def test_a_kernel_error_in_the_one_task_lane_is_raised_by_eval(monkeypatch):
    from umx.backends.cuda import executor as cex
    from umx.primitives.reduction import Prod

    def boom(prim, x):
        raise RuntimeError("boom in the lane")

    monkeypatch.setitem(cex.KERNELS, Prod, boom)
    a = mx.add(mx.array(np.ones(3, np.float32)), 0.0, stream=mx.gpu)
    mx.eval(a)
    y = mx.prod(a, stream=mx.gpu)
    with pytest.raises(RuntimeError, match="boom in the lane"):
        y.item()
    np.testing.assert_array_equal(np.asarray(mx.add(a, 1.0, stream=mx.gpu)), np.full(3, 2.0, np.float32))


@gpu_only
def test_waiting_for_finished_gpu_work_records_no_event(monkeypatch):
    """A wait for a node whose stream is idle asks the stream, rather than recording an event and waiting on it."""
    from umx.backends.cuda.marks import Marks

    a = mx.add(mx.array(np.arange(8, dtype=np.float32)), 1.0, stream=mx.gpu)
    mx.eval(a)
    ex = a._exec
    ex.cuda_stream.synchronize()
    monkeypatch.setattr(ex.marks, "complete", 0)  # (as if no wait had seen it finish)

    def no_mark(self, seq, dispatched):
        raise AssertionError("a mark was asked for")

    monkeypatch.setattr(Marks, "covering", no_mark)
    ex.wait(a._seq)
    assert ex.marks.complete >= a._seq
    np.testing.assert_array_equal(np.asarray(a), np.arange(8) + 1.0)


@gpu_only
def test_a_wait_does_not_query_the_stream_while_a_graph_captures_on_it(monkeypatch):
    """Querying a stream that captures a CUDA graph would break the capture: a wait asks the stream only under the
    lock that a capture holds (here held by the test, as a capture would)."""
    a = mx.add(mx.array(np.arange(8, dtype=np.float32)), 1.0, stream=mx.gpu)
    mx.eval(a)
    ex = a._exec
    ex.cuda_stream.synchronize()
    monkeypatch.setattr(ex.marks, "complete", 0)  # (as if no wait had seen it finish)
    done = threading.Event()
    with ex.marks.lock:
        waiter = threading.Thread(target=lambda: (ex.wait(a._seq), done.set()))
        waiter.start()
        assert not done.wait(0.2)  # blocked on the lock, not asking the stream
    waiter.join(10)
    assert done.is_set() and ex.marks.complete >= a._seq


@gpu_only
def test_a_new_streams_first_large_reduction_is_right_while_the_default_stream_is_busy(rng, monkeypatch):
    """A grid reduction's ticket must be zero before the stream's first one runs. It used to be zeroed by
    cudaMemset, on the legacy default stream, which umx's non-blocking streams do not wait for: behind other work
    there (CuPy's, the user's), the kernel ran on memory not yet zeroed and lost its last block (no result)."""
    import cupy as cp

    from umx.backends.cuda import direct

    scratch_bytes = 8 * direct._REDUCE_BLOCKS + 8
    real_memory = cp.cuda.Memory
    n = direct.MAX_REDUCE * 16
    for _ in range(2):
        dirty = real_memory(scratch_bytes)  # as reused memory may be: not zero (here, every byte 0xFF)
        cp.cuda.runtime.memset(dirty.ptr, 0xFF, scratch_bytes)
        cp.cuda.runtime.deviceSynchronize()
        monkeypatch.setattr(cp.cuda, "Memory", lambda nbytes, d=dirty: d if nbytes == scratch_bytes
                            else real_memory(nbytes))
        st = mx.new_stream(mx.gpu)
        h = rng.standard_normal(n).astype(np.float32)
        x = mx.add(mx.array(h), 0.0, stream=st)
        assert mx.sum(x[:256], stream=st).item() == pytest.approx(float(h[:256].sum()), abs=1e-4)
        # (the stream's pinned memory is made: allocating it synchronizes the device, which would drain the work
        # below before the scratch area is made)
        busy = cp.ones((2048, 2048), cp.float32)
        for _ in range(16):
            busy = busy @ busy * (1 / 2048)  # (CuPy's current stream here: the legacy default one)
        got = mx.sum(x, stream=st).item()
        assert got == pytest.approx(float(h.astype(np.float64).sum()), abs=1e-5 * np.abs(h).sum())
        cp.cuda.Device().synchronize()


@gpu_only
def test_a_large_reduction_is_the_same_every_time_and_keeps_nans():
    """A grid of blocks adds up its blocks' results in block order: the same bits on every run, whatever order the
    blocks finished in; NaN propagates through max and min; the ticket resets itself between launches of any size."""
    G = mx.gpu
    h = np.random.default_rng(7).standard_normal(3 << 20).astype(np.float32)
    x = mx.add(mx.array(h), 0.0, stream=G)
    mx.eval(x)
    sums = {mx.sum(x, stream=G).item() for _ in range(20)}
    assert len(sums) == 1
    assert sums.pop() == pytest.approx(float(h.astype(np.float64).sum()), abs=1e-6 * np.abs(h).sum())
    for n in (100_000, 3 << 20, 70_000):  # (grids of other sizes in between)
        np.testing.assert_allclose(mx.max(x[:n], stream=G).item(), h[:n].max())
    h[12345] = np.nan
    y = mx.add(mx.array(h), 0.0, stream=G)
    assert np.isnan(mx.max(y, stream=G).item()) and np.isnan(mx.min(y, stream=G).item())
    assert np.isnan(mx.mean(y, stream=G).item())


@gpu_only
@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
def test_a_small_async_eval_target_is_marked_before_the_work_queued_after_it(rng, compiled):
    """A decode loop queues step n+1 before it reads step n's token: ``async_eval`` marks a small target as its
    batch runs (op by op or as a graph replay), so the read waits for that mark, not for step n+1."""
    from umx.backends.cuda import memory as gmem
    from umx.runtime.executor import WorkerExecutor

    w = rng.standard_normal((64, 64)).astype(np.float32) / 8
    wm = mx.array(w)

    def step(y):
        return mx.tanh(wm @ y) * 0.5 + mx.sin(y) * 0.25 - 0.125

    f = mx.compile(step) if compiled else step
    with mx.stream(mx.gpu):
        y = mx.array(np.ones(64, np.float32))
        ref = np.ones(64, np.float64)
        for _ in range(4):  # (a graph is captured at a structure's second sighting)
            y = f(y)
            mx.async_eval(y)
            ref = np.tanh(w @ ref) * 0.5 + np.sin(ref) * 0.25 - 0.125
        later = f(y)
        mx.async_eval(later)
        ex = later._exec
        WorkerExecutor.wait(ex, later._seq)  # dispatched (not finished): later's work is queued behind y's
        mirrored = y._copies is not None and gmem.MIRROR in y._copies  # (written to the host as it ran)
        assert mirrored or ex.marks.before_later_work(y._seq, ex.done) is not False
        np.testing.assert_allclose(np.asarray(y), ref, rtol=1e-4, atol=1e-5)
        ref = np.tanh(w @ ref) * 0.5 + np.sin(ref) * 0.25 - 0.125
        np.testing.assert_allclose(np.asarray(later), ref, rtol=1e-4, atol=1e-5)
