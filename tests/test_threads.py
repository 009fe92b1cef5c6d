"""Threads, errors and interrupts: any thread may build and evaluate graphs on any stream, a failing kernel
fails only what depends on it, and neither an error nor a KeyboardInterrupt leaves the runtime unusable."""

from __future__ import annotations

import _thread
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import umx as mx
from umx.backends.cpu.executor import KERNELS
from umx.primitives import BINARY, UNARY

MUL = type(BINARY["Multiply"])
EXP = type(UNARY["Exp"])
SIN = type(UNARY["Sin"])


@pytest.fixture(scope="module")
def streams():
    return [mx.default_stream(mx.cpu)] + [mx.new_stream(mx.cpu) for _ in range(3)]


def _patch(monkeypatch, cls, fn):
    """Replace the CPU kernel of primitive class ``cls`` by ``fn(original, prim, *inputs)`` for one test."""
    orig = KERNELS[cls]
    monkeypatch.setitem(KERNELS, cls, lambda prim, *xs: fn(orig, prim, *xs))


def test_eight_threads_thousand_evals_each(streams):
    """8 threads x 1000 evals on shared arrays and shared streams; every result checked."""
    rng = np.random.default_rng(0)
    base = [rng.standard_normal((4, 3)).astype(np.float32) for _ in range(4)]
    shared = [mx.array(b) for b in base]
    lazy = [
        mx.multiply(s, 2, stream=streams[i]) for i, s in enumerate(shared)
    ]  # evaluated by whoever is first
    errors = []

    def worker(t: int):
        try:
            for i in range(1000):
                k = (t + i) % 4
                st = streams[(t * 7 + i) % 4]
                y = mx.add(lazy[k], i, stream=st)
                if i % 3 == 0:
                    y = mx.sum(y, axis=1, stream=streams[(t + 1) % 4])
                    exp = (base[k] * 2 + i).sum(axis=1)
                else:
                    exp = base[k] * 2 + i
                if i % 5 == 0:
                    mx.async_eval(y)
                mx.eval(y)
                np.testing.assert_allclose(np.asarray(y), exp, rtol=1e-5, atol=1e-4)
        except BaseException as e:  # reported on the main thread
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors, errors[0]


def test_overlapping_graphs_compute_each_node_once(monkeypatch, streams):
    calls = []
    lock = threading.Lock()

    def counting(orig, prim, a, b):
        with lock:
            calls.append(1)
        time.sleep(0.001)  # widen the window in which another thread could schedule it again
        return orig(prim, a, b)

    _patch(monkeypatch, MUL, counting)
    x = mx.array(np.arange(6, dtype=np.float32))
    chain = [x]
    for i in range(40):  # one long graph over all streams
        chain.append(mx.multiply(chain[-1], 1.01, stream=streams[i % 4]))
    ends = [mx.add(chain[-1 - k], k, stream=streams[k % 4]) for k in range(8)]
    barrier = threading.Barrier(8)

    def evaluate(k: int):
        barrier.wait()
        mx.eval(ends[k], chain[-1])
        return np.asarray(ends[k])

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(evaluate, range(8)))
    assert len(calls) == 40
    for k, r in enumerate(results):
        np.testing.assert_allclose(r, np.arange(6) * 1.01 ** (40 - k) + k, rtol=1e-5)
    mx.eval(chain)  # already computed: nothing runs again
    assert len(calls) == 40


def _fail_on_marker(orig, prim, x):
    if x.size and np.any(x == 13):
        raise ValueError("marker value 13")
    return orig(prim, x)


def test_error_reaches_caller_and_spares_others(monkeypatch, streams):
    _patch(monkeypatch, EXP, _fail_on_marker)
    errors = []

    def good(t: int):
        try:
            for i in range(200):
                y = mx.exp(mx.array([float(t), float(i % 7)]), stream=streams[(t + i) % 4]) + 1
                np.testing.assert_allclose(np.asarray(y), np.exp([t, i % 7]) + 1, rtol=1e-5)
        except BaseException as e:
            errors.append(e)

    def bad():
        for i in range(100):
            bad_in = mx.array([13.0, i])
            e = mx.exp(bad_in, stream=streams[i % 4])
            after = mx.add(e, 1, stream=streams[(i + 1) % 4])  # on another stream
            unrelated = mx.multiply(bad_in, 2, stream=streams[(i + 2) % 4])
            with pytest.raises(ValueError, match="marker value 13") as info:
                mx.eval(after, unrelated)
            assert any("Exp" in n for n in info.value.__notes__)
            np.testing.assert_allclose(np.asarray(unrelated), [26.0, 2 * i])  # did not depend on the failure
            for arr in (e, after, mx.sum(after)):  # evaluating again, or a dependant: the same error
                with pytest.raises(ValueError, match="marker value 13") as again:
                    mx.eval(arr)
                assert again.value.__notes__ == info.value.__notes__  # the root cause's, not a new one's

    threads = [threading.Thread(target=good, args=(t,)) for t in range(4)]
    for th in threads:
        th.start()
    bad()
    for th in threads:
        th.join()
    assert not errors, errors[0]
    for st in streams:  # every worker is alive and runs new work
        np.testing.assert_allclose(np.asarray(mx.exp(mx.array([0.0]), stream=st)), [1.0])


def test_failed_input_read_across_streams_and_implicit_eval(monkeypatch, streams):
    _patch(monkeypatch, EXP, _fail_on_marker)
    e = mx.exp(mx.array([13.0]), stream=streams[1])
    mx.async_eval(e)
    d = mx.concatenate([e, mx.ones((2,))], stream=streams[2])
    for read in (lambda: d.item() if d.size == 1 else d.tolist(), lambda: np.asarray(d), lambda: print(d)):
        with pytest.raises(ValueError, match="marker value 13"):
            read()
    mx.synchronize()
    assert mx.add(mx.array(1), 1, stream=streams[2]).item() == 2


def test_keyboard_interrupt_in_a_kernel(monkeypatch, streams):
    def interrupted(orig, prim, x):
        raise KeyboardInterrupt

    _patch(monkeypatch, SIN, interrupted)
    y = mx.add(mx.sin(mx.ones((3,)), stream=streams[1]), 1, stream=streams[2])
    with pytest.raises(BaseException) as info:
        mx.eval(y)
    assert isinstance(info.value, (KeyboardInterrupt, RuntimeError))
    monkeypatch.undo()
    z = mx.add(mx.sin(mx.zeros((3,)), stream=streams[1]), 1, stream=streams[2])
    np.testing.assert_allclose(np.asarray(z), np.ones(3))


def test_sigint_while_waiting_for_a_long_eval(monkeypatch, streams):
    """Ctrl-C while the main thread waits in eval: eval raises KeyboardInterrupt; the work finishes anyway and
    the
    same arrays evaluate afterwards."""
    started, release = threading.Event(), threading.Event()

    def slow(orig, prim, x):
        started.set()
        release.wait(10)
        return orig(prim, x)

    _patch(monkeypatch, SIN, slow)
    y = mx.add(mx.sin(mx.zeros((3,)), stream=streams[1]), 2, stream=streams[3])

    def interrupt():
        started.wait(10)
        _thread.interrupt_main()

    t = threading.Thread(target=interrupt)
    t.start()
    with pytest.raises(KeyboardInterrupt):
        mx.eval(y)
    t.join()
    release.set()
    np.testing.assert_allclose(np.asarray(y), [2.0, 2.0, 2.0])
    assert mx.multiply(y, 2, stream=streams[1]).tolist() == [4.0, 4.0, 4.0]


def test_interrupt_while_planning(monkeypatch, streams):
    """An exception in the middle of scheduling (a KeyboardInterrupt can arrive between any two bytecodes)
    leaves
    the graph consistent: a later eval of the same arrays computes them."""
    st = mx.new_stream(mx.cpu)
    a = mx.multiply(mx.arange(4), 3, stream=streams[0])
    b = mx.add(a, 1, stream=streams[1])
    c = mx.add(b, mx.multiply(a, 2, stream=st), stream=streams[2])  # `st` is first used while planning c
    prop = type(st).executor

    def interrupting(self):
        if self is st:
            raise KeyboardInterrupt
        return prop.fget(self)

    monkeypatch.setattr(type(st), "executor", property(interrupting))
    with pytest.raises(KeyboardInterrupt):
        mx.eval(c)
    monkeypatch.undo()
    assert c.tolist() == [1, 10, 19, 28]
    assert b.tolist() == [1, 4, 7, 10]


def test_memory_limit_raises_memory_error(streams):
    from umx.runtime import memory

    # 1 MB above what live arrays hold on the host: the CPU's check counts the host's bytes (on a GPU machine an
    # earlier test's device arrays may still be live, and freed any time)
    prev = mx.set_memory_limit(memory.HOST.active + 10**6)
    try:
        big = mx.zeros((1000, 1000), stream=streams[1])  # 4 MB
        small = mx.ones((10,), stream=streams[1])
        with pytest.raises(MemoryError, match=r"4000000 bytes.*limit") as info:
            mx.eval(mx.add(big, 1, stream=streams[2]), small)
        assert any("Full" in n for n in info.value.__notes__)
        assert small.tolist() == [1.0] * 10  # the work that fits still ran
        with pytest.raises(MemoryError):
            mx.eval(big)  # a failed array keeps its error
    finally:
        mx.set_memory_limit(prev)
    assert mx.sum(mx.zeros((1000, 1000), stream=streams[1])).item() == 0


def test_raising_again_does_not_grow_the_traceback(monkeypatch):
    import traceback

    _patch(monkeypatch, EXP, _fail_on_marker)
    y = mx.exp(mx.array([13.0]), stream=mx.cpu)  # the patched kernel is the CPU's
    sizes = []
    for _ in range(5):
        with pytest.raises(ValueError) as info:
            mx.eval(y)
        sizes.append(len(traceback.extract_tb(info.value.__traceback__)))
    assert len(set(sizes)) == 1, sizes


def test_setitem_on_an_array_still_being_computed(monkeypatch, streams):
    """``a[i] = v`` while ``a``'s kernel runs: ``a`` gets the update, readers of the old ``a`` its old
    value."""

    def slow(orig, prim, x):
        time.sleep(0.02)
        return orig(prim, x)

    _patch(monkeypatch, EXP, slow)
    a = mx.exp(mx.zeros((3,)), stream=streams[1])
    b = mx.add(a, 1, stream=streams[2])
    mx.async_eval(a)
    a[0] = 5.0
    assert a.tolist() == [5.0, 1.0, 1.0]
    assert b.tolist() == [2.0, 2.0, 2.0]


def test_setitem_from_many_threads_on_a_shared_graph(streams):
    base = mx.multiply(mx.arange(6), 2, stream=streams[0])  # shared and lazy

    def worker(t: int):
        for i in range(8):  # each update scans the heap for readers of `x`: keep them few
            x = mx.add(base, t, stream=streams[(t + i) % 4])
            y = mx.multiply(x, 1, stream=streams[(t + i + 1) % 4])  # reads x before the update
            if i % 2:
                mx.async_eval(x)
            x[i % 6] = -1
            exp = [2 * k + t for k in range(6)]
            assert y.tolist() == exp
            exp[i % 6] = -1
            assert x.tolist() == exp

    with ThreadPoolExecutor(8) as pool:
        for f in [pool.submit(worker, t) for t in range(8)]:
            f.result()
    assert base.tolist() == [0, 2, 4, 6, 8, 10]


def test_default_streams_are_per_thread():
    mine = mx.new_stream(mx.cpu)
    seen = {}
    entered, checked = threading.Event(), threading.Event()

    def setter():
        with mx.stream(mine):
            seen["inside"] = (mx.default_stream(mx.cpu), (mx.arange(3) + 1)._stream)
            entered.set()
            checked.wait(10)
        seen["after"] = mx.default_stream(mx.cpu)
        mx.set_default_stream(mine)
        seen["set"] = mx.default_stream(mx.cpu)

    def reader():
        entered.wait(10)
        seen["other"] = (mx.default_stream(mx.cpu), (mx.arange(3) + 1)._stream)
        checked.set()

    threads = [threading.Thread(target=setter), threading.Thread(target=reader)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    shared = mx.default_stream(mx.cpu)
    assert seen["inside"] == (mine, mine)
    # the other thread's defaults did not change (its op runs on the default device's stream: a GPU's, if any)
    assert seen["other"] == (shared, mx.default_stream(mx.default_device()))
    assert seen["after"] is shared and seen["set"] is mine
    assert mx.default_stream(mx.cpu) is shared  # nor did this thread's
    out = mx.add(mx.arange(3), 1, stream=mine)  # a stream works from any thread
    assert out.tolist() == [1, 2, 3]


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="no CPU affinity on this platform")
def test_the_pool_has_a_thread_per_core_the_process_may_run_on():
    """Under taskset or a container's CPU set, chunks are cut for the cores the process has, not the machine's."""
    code = ("import os; os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}); "
            "from umx.runtime import threads; print(threads.CORES)")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])))
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "1"


def test_a_split_inside_the_callers_own_chunk_runs_on_the_caller(monkeypatch):
    """A split made inside the chunk that the splitting thread runs itself (a product inside a reduction's chunk)
    runs there, in order, as it would on a pool thread: queued behind the pool's busy threads, its chunks would
    wait for every other chunk to finish first."""
    from umx.runtime import threads

    monkeypatch.setattr(threads, "CORES", max(threads.CORES, 2))
    caller = threading.get_ident()
    nested = []

    def chunk(lo, hi):
        if lo == 0:
            nested.extend(threads.map_chunks(lambda a, b: (a, threading.get_ident()), [(0, 1), (1, 2), (2, 3)]))
        return lo

    assert threads.map_chunks(chunk, [(0, 1), (1, 2)]) == [0, 1]
    assert nested == [(0, caller), (1, caller), (2, caller)]
    assert not threads.in_pool()  # (the caller is itself again once its chunk is done)
    assert [t for _, t in threads.map_chunks(lambda a, b: (a, threading.get_ident()), [(0, 1), (1, 2)])][0] == caller


def test_a_split_returns_after_every_chunk_even_when_one_raises(monkeypatch):
    """A chunk's error reaches the caller only once every other chunk has run: nothing still writes into the
    split's output after ``map_chunks`` has returned or raised."""
    from umx.runtime import threads

    monkeypatch.setattr(threads, "CORES", max(threads.CORES, 4))
    finished = []

    def chunk(lo, hi):
        if lo == 0:
            raise ValueError("the caller's chunk")
        time.sleep(0.02)
        finished.append(lo)
        return lo

    with pytest.raises(ValueError, match="caller's chunk"):
        threads.map_chunks(chunk, threads.bounds(6, 1))
    assert sorted(finished) == [1, 2, 3, 4, 5]


def test_splits_from_several_threads_at_once_keep_their_own_chunks(monkeypatch):
    """The pool's threads take the chunks of every posted split, oldest first; each caller gets its own results
    in order (a stream's worker and a user's thread splitting at the same time)."""
    from umx.runtime import threads

    monkeypatch.setattr(threads, "CORES", max(threads.CORES, 4))

    def split(k):
        out = []
        for _ in range(50):
            out.append(threads.map_chunks(lambda lo, hi, k=k: (k, lo, hi), threads.bounds(7 + k, 2)))
        return out

    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(split, range(6)))
    for k, runs in enumerate(results):
        assert all(r == [(k, lo, hi) for lo, hi in threads.bounds(7 + k, 2)] for r in runs)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork on this platform")
def test_a_forked_child_splits_on_a_pool_of_its_own():
    """A child forked after the pool started has none of its threads: its splits make a new pool (or run on the
    child alone) instead of waiting for threads that do not exist."""
    code = ("import os, sys\n"
            "from umx.runtime import threads\n"
            "threads.CORES = max(threads.CORES, 3)\n"
            "bounds = threads.bounds(6, 1)\n"
            "assert threads.map_chunks(lambda lo, hi: lo, bounds) == list(range(6))\n"
            "pid = os.fork()\n"
            "if pid == 0:\n"
            "    ok = threads.map_chunks(lambda lo, hi: lo * 2, bounds) == [0, 2, 4, 6, 8, 10]\n"
            "    os._exit(0 if ok else 3)\n"
            "_, status = os.waitpid(pid, 0)\n"
            "sys.exit(os.waitstatus_to_exitcode(status))\n")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])))
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
