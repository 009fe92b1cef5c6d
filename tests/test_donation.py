"""Buffer donation (backends/cpu/donate.py): an op writes its result into the buffer of an input that nothing else
holds. Every way of still holding an input keeps its values; chains that hold nothing keep one buffer (peak
memory); donated results are the kernels' own, bit for bit, and NumPy's."""

from __future__ import annotations

import copy
import gc
import os
import signal
import subprocess
import sys
import threading

import numpy as np
import pytest
from conftest import assert_close

import umx as mx
from umx.backends.cpu import donate, fused
from umx.backends.cpu import executor as cpu_ex
from umx.ops.elementwise import _BINARY_NAMES, _UNARY_NAMES
from umx.primitives import UNARY
from umx.runtime import refs


@pytest.fixture(autouse=True)
def _on_the_cpu():
    """Donation is the CPU backend's: these tests build their ops on the default device, the CPU here even
    where a GPU is the default."""
    prev = mx.default_device()
    mx.set_default_device(mx.cpu)
    yield
    mx.set_default_device(prev)


BIG = 1 << 22  # 16 MiB of float32: large enough that an extra buffer shows in the peak


def address(a) -> int:
    """Where the data of ``a`` (evaluated here if need be) starts; keeps no reference to it."""
    return np.asarray(a).__array_interface__["data"][0]


class _Box:
    pass


def test_the_data_baselines_are_this_interpreters_counts():
    x = mx.array(np.ones(4, np.float32))  # its data: held by the node alone
    assert refs._data_as_local(x) == refs.UNHELD_DATA
    extra = x._data
    assert refs._data_as_local(x) == refs.UNHELD_DATA + 1
    del extra
    v = np.ones(8, np.float32)[2:]  # its buffer: held by the view alone
    assert refs._base_as_local(v) == refs.UNHELD_BASE
    w = v[1:]  # (NumPy makes a view's base the buffer itself: one more holder)
    assert refs._base_as_local(v) == refs.UNHELD_BASE + 1
    del w


# -- every way of holding an input keeps its values ------------------------------------------------------------
# Ops of a chain: (umx on x, NumPy on x). Elementwise ops that may donate, views that share, a reader of x twice.
CHAIN_OPS = {
    "abs": (mx.abs, np.abs),
    "negative": (mx.negative, np.negative),
    "sin": (mx.sin, np.sin),
    "tanh": (mx.tanh, np.tanh),
    "add": (lambda x: x + 0.5, lambda x: x + 0.5),
    "multiply": (lambda x: mx.multiply(x, 1.5), lambda x: x * 1.5),
    "subtract from": (lambda x: 0.25 - x, lambda x: 0.25 - x),
    "maximum": (lambda x: mx.maximum(x, -0.5), lambda x: np.maximum(x, -0.5)),
    "x * x": (lambda x: x * x, lambda x: x * x),
    "flat and back": (lambda x: mx.reshape(mx.reshape(x, (-1,)), x.shape), lambda x: x),
    "transpose": (lambda x: x.T, lambda x: x.T),
    "T.T": (lambda x: x.T.T, lambda x: x),
    "stop_gradient": (mx.stop_gradient, lambda x: x),
    "copy": (copy.copy, lambda x: x),
    "slice": (lambda x: x[:, :], lambda x: x),
}

HOLDERS = ["variable", "list", "dict", "closure", "attribute", "view", "evaluated view", "numpy", "numpy view",
           "memoryview", "dlpack", "other stream", "compiled constant", "thread"]


def _hold(how: str, a, device, keep: dict):
    """Hold array ``a`` the way ``how`` says (keeping what is needed in ``keep``); returns a function that gives the
    held values as a NumPy array, to call after the chain has been evaluated."""
    shape = a.shape
    if how == "variable":
        keep["v"] = a
        return lambda: np.array(keep["v"])
    if how == "list":
        keep["l"] = [a]
        return lambda: np.array(keep["l"][0])
    if how == "dict":
        keep["d"] = {"a": a}
        return lambda: np.array(keep["d"]["a"])
    if how == "closure":
        keep["f"] = lambda: a
        return lambda: np.array(keep["f"]())
    if how == "attribute":
        box = keep["box"] = _Box()
        box.a = a
        return lambda: np.array(box.a)
    if how in ("view", "evaluated view"):  # another array that reads a (a node), or views its buffer (evaluated)
        v = keep["view"] = mx.reshape(a, (-1,), stream=device)
        if how == "evaluated view":
            mx.eval(v)
        return lambda: np.array(keep["view"]).reshape(shape)
    if how == "numpy":
        keep["np"] = np.asarray(a)  # the data itself
        return lambda: keep["np"].copy()
    if how == "numpy view":
        keep["np"] = np.asarray(a, copy=False)  # a view whose base keeps the array
        return lambda: keep["np"].copy()
    if how == "memoryview":
        keep["mv"] = a.__buffer__(0)  # (what memoryview(a) calls on Python 3.12 and later)
        return lambda: np.array(keep["mv"])
    if how == "dlpack":
        keep["dl"] = np.from_dlpack(a)
        return lambda: keep["dl"].copy()
    if how == "other stream":  # a reader on another stream, not evaluated yet
        keep["r"] = mx.multiply(a, 1.0, stream=mx.new_stream(device))
        return lambda: np.array(keep["r"])
    if how == "compiled constant":
        f = keep["f"] = mx.compile(lambda z: z + a)
        f(mx.zeros(shape))  # traced: a is a constant of the tape
        return lambda: np.array(keep["f"](mx.zeros(shape)))
    if how == "thread":
        release = keep["release"] = threading.Event()
        got = {}

        def hold_there(arr=a):
            release.wait(30)
            got["a"] = np.array(arr)

        t = threading.Thread(target=hold_there)
        t.start()

        def read():
            release.set()
            t.join()
            return got["a"]

        return read
    raise ValueError(how)


def _run_chain(device, shape, ops, at, how, evaluate_held, seed):
    """Run ``ops`` from a random array, holding the value after op ``at`` the way ``how`` says; check the held
    value and the result against NumPy."""
    rng = np.random.default_rng(seed)
    start = rng.uniform(-2, 2, shape).astype(np.float32)
    want = [start.astype(np.float64)]
    for name in ops:
        want.append(CHAIN_OPS[name][1](want[-1]))
    keep: dict = {}
    read = None
    with mx.stream(device):
        x = mx.array(start)
        for i, name in enumerate(ops):
            x = CHAIN_OPS[name][0](x)
            if i == at:
                if evaluate_held:
                    mx.eval(x)
                read = _hold(how, x, device, keep)
        mx.eval(x)
    try:
        assert_close(x, want[-1], rtol=1e-5, atol=1e-5)
        if read is not None:
            assert_close(read(), want[at + 1], rtol=1e-5, atol=1e-5)
    finally:
        if "release" in keep:
            keep["release"].set()


@pytest.mark.parametrize("how", HOLDERS)
@pytest.mark.parametrize("size", [(8, 8), (256, 160)])  # single ops; fused regions (over 32K elements)
def test_an_input_held_any_way_keeps_its_values(device, how, size):
    for evaluate_held in (False, True):
        for ops, at in ((["abs", "negative", "add"], 0), (["sin", "flat and back", "multiply", "abs"], 1),
                        (["negative", "T.T", "stop_gradient", "tanh", "tanh"], 2)):
            _run_chain(device, size, ops, at, how, evaluate_held, seed=1)


def test_op_chains_keep_every_held_value(device):
    """Any chain of ops that may donate, views and double reads, with one value held any way, evaluated first
    or not: that value and the result are NumPy's."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    @settings(max_examples=60, deadline=None, derandomize=True)
    @given(ops=st.lists(st.sampled_from(sorted(CHAIN_OPS)), min_size=2, max_size=7), data=st.data(),
           how=st.sampled_from(HOLDERS), evaluate_held=st.booleans(),
           shape=st.sampled_from([(4, 6), (256, 160)]), seed=st.integers(0, 2**16))
    def check(ops, data, how, evaluate_held, shape, seed):
        at = data.draw(st.integers(0, len(ops) - 2))  # (a later op reads the held value)
        _run_chain(device, shape, ops, at, how, evaluate_held, seed)

    check()


def test_an_input_a_pending_reader_on_another_stream_holds_keeps_its_values():
    """A reader on another stream, scheduled but blocked: the input it holds is not written over meanwhile."""
    cls = type(UNARY["Cos"])
    real = cpu_ex.KERNELS[cls]
    gate = threading.Event()
    cpu_ex.KERNELS[cls] = lambda prim, x: (gate.wait(30), real(prim, x))[1]
    try:
        a = mx.exp(mx.array(np.linspace(-1, 1, 4096, dtype=np.float32)))
        mx.eval(a)
        other = mx.cos(a, stream=mx.new_stream(mx.cpu))
        mx.async_eval(other)  # blocked in its kernel, holding a
        y = mx.negative(a)
        del a
        mx.eval(y)  # could have written over a's buffer
        gate.set()
        want = np.exp(np.linspace(-1, 1, 4096, dtype=np.float32))
        assert_close(other, np.cos(want))
        assert_close(y, -want)
    finally:
        gate.set()
        cpu_ex.KERNELS[cls] = real


def test_a_value_a_transform_keeps_is_not_written_over():
    """Inside grad, an eval keeps the node it computed (with its graph, for the backward walk): later ops that
    read it must not donate it, or the gradient (which reads exp's output) would be wrong."""
    x0 = np.linspace(-1, 1, 4096).astype(np.float32)

    def loss(x):
        h = mx.exp(x)
        mx.eval(h)  # kept: the walk goes through it
        return mx.sum(mx.negative(mx.sin(h)))

    g = mx.grad(loss)(mx.array(x0))
    e = np.exp(x0.astype(np.float64))
    assert_close(g, -np.cos(e) * e, rtol=1e-4)


def test_user_numpy_data_is_never_written():
    data = np.linspace(-1, 1, 4096).astype(np.float32)
    before = data.copy()
    y = mx.negative(mx.array(data))  # (the array nothing else holds is umx's copy: that one may donate)
    mx.eval(y)
    np.testing.assert_array_equal(data, before)
    assert_close(y, -before)


# -- interrupts: a node that wrote into its input's buffer cannot run again, so it takes its result first -------
class _NegativeThenInterrupted:
    """np.negative, as a Ctrl-C that arrives while it runs looks to its caller: the whole result written, then
    KeyboardInterrupt raised as the call returns."""

    types = np.negative.types
    nin = 1

    def __call__(self, x, out):
        np.negative(x, out)
        if threading.current_thread() is threading.main_thread():  # (only there do signals' handlers run)
            raise KeyboardInterrupt


def test_an_interrupt_after_a_donating_kernel_keeps_its_result(monkeypatch):
    kernel = cpu_ex.KERNELS[type(UNARY["Negative"])]
    monkeypatch.setitem(cpu_ex.GIFTS, kernel, donate._unary(_NegativeThenInterrupted()))
    data = np.linspace(-1, 1, 4096, dtype=np.float32)
    x = mx.array(data)
    y = mx.negative(x)
    del x
    with pytest.raises(KeyboardInterrupt):
        mx.eval(y)
    assert_close(y, -data)  # (run again, it would negate its own result)


def test_an_interrupt_inside_a_donating_region_waits_for_its_result(monkeypatch):
    real = fused._run_chain

    def then_interrupted(chain, leaves, out=None):
        v = real(chain, leaves, out)
        if threading.current_thread() is threading.main_thread():
            signal.raise_signal(signal.SIGINT)  # a Ctrl-C once the chain has run in the leaf's buffer
        return v

    monkeypatch.setattr(fused, "_run_chain", then_interrupted)
    data = np.random.default_rng(0).uniform(-1, 1, 1 << 16).astype(np.float32)
    want = data.astype(np.float64)
    x = mx.array(data)
    y = x
    for _ in range(4):  # one region, a chain over the leaf x, which nothing else holds
        y = mx.sin(y * 0.5 + 1.0)
        want = np.sin(want * 0.5 + 1.0)
    del x
    with pytest.raises(KeyboardInterrupt):
        mx.eval(y)
    assert_close(y, want, rtol=1e-5)


_CTRL_C = """
import os, random, signal, sys, threading
import numpy as np
import umx as mx

mx.set_default_device(mx.cpu)  # (donation is the CPU backend's)
rng = random.Random(0)
data = np.random.default_rng(0).uniform(-1, 1, 1 << 20).astype(np.float32)
want = data.astype(np.float64)
for _ in range(3):
    want = np.sin(-np.abs(want) * 0.5 + 1.0)
counts = {"interrupted": 0, "wrong": 0}
for _ in range(int(sys.argv[1])):
    x = mx.array(data)
    y = x
    for _ in range(3):  # single ops (split by the reshape) and a region, each writing into its input's buffer
        y = mx.sin(mx.negative(mx.reshape(mx.abs(y), (-1,))) * 0.5 + 1.0)
    del x
    timer = threading.Timer(rng.uniform(0, 0.004), os.kill, (os.getpid(), signal.SIGINT))
    evaluate = mx.async_eval if rng.random() < 0.3 else mx.eval
    try:
        timer.start()
        evaluate(y)
        timer.join()
        for _ in range(100):  # (a signal not yet handled is raised at a backward jump)
            pass
    except KeyboardInterrupt:
        counts["interrupted"] += 1
        timer.join()
    if not np.allclose(np.asarray(y), want, rtol=1e-5, atol=1e-6):
        counts["wrong"] += 1
print(counts)
sys.exit(1 if counts["wrong"] else 0)
"""


def test_ctrl_c_at_any_moment_of_donating_evals_never_changes_a_result(tmp_path):
    """Real SIGINTs at random moments of evals that donate (on the main thread, or on the worker while the main
    thread waits): every result, evaluated again after, is NumPy's. In a child process, under a time limit."""
    script = tmp_path / "ctrl_c.py"
    script.write_text(_CTRL_C)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    job = subprocess.run([sys.executable, str(script), "80"], capture_output=True, text=True, timeout=240,
                         cwd=root, env=dict(os.environ, PYTHONPATH=root))
    assert job.returncode == 0, job.stdout + job.stderr
    assert "'interrupted': 0" not in job.stdout  # (the signals did land inside evals)


# -- donated results: the kernels', bit for bit ----------------------------------------------------------------
_DTYPES = [mx.float32, mx.float16, mx.int32, mx.uint8, mx.bool_, mx.complex64, mx.bfloat16]


def _values(dtype, seed):
    rng = np.random.default_rng(seed)
    v = rng.uniform(-3, 3, 513)
    if dtype.kind in "fc":
        v[:4] = [0.0, np.inf, -np.inf, np.nan]
        return mx.array(v.astype(np.float32), dtype=dtype)
    return mx.array(v.astype(np.int64) % 7, dtype=dtype)


def _same_bits(a, b) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


@pytest.mark.parametrize("dtype", _DTYPES, ids=lambda d: d.name)
def test_a_donated_result_has_the_bits_of_a_new_one(dtype):
    """Every unary and binary op, every dtype it accepts: the result written into the input's buffer (nothing
    holds the input) equals, bit for bit, the one written to a new array (the input held)."""
    donated = 0
    for name in sorted(_UNARY_NAMES) + sorted(_BINARY_NAMES):
        op = getattr(mx, name)
        arity = 1 if name in _UNARY_NAMES else 2
        for side in range(arity):  # (a binary op may take either input's buffer)
            held = [_values(dtype, 1), _values(dtype, 2)][:arity]
            try:
                fresh = op(*held, stream=mx.cpu)
            except (TypeError, ValueError):
                continue  # the op refuses this dtype at the call
            mx.eval(fresh)
            ins = [mx.array(np.array(h), dtype=dtype) for h in held]  # (copies: the other input held, not this)
            mx.eval(ins)
            where = address(ins[side])
            other = ins[1 - side] if arity == 2 else None
            out = op(*ins, stream=mx.cpu)
            del ins
            mx.eval(out)
            assert _same_bits(out, fresh), (name, dtype, side)
            donated += address(out) == where
            del other
    if dtype != mx.bfloat16:  # (bfloat16 results are rounded into new arrays)
        assert donated > 10


def test_which_inputs_donate():
    """The input whose buffer the result takes: one of the result's shape and dtype, the first that qualifies."""
    a = mx.array(np.arange(12, dtype=np.float32).reshape(3, 4))
    b = mx.array(np.ones((1, 4), np.float32))
    mx.eval(a, b)
    pa = address(a)
    c = a + b  # b broadcasts: only a's buffer fits
    del a
    assert address(c) == pa
    a = mx.array(np.ones((3, 4), np.float32))
    mx.eval(a)
    pa = address(a)
    d = c > a  # bool from float inputs: no buffer of the result's dtype
    assert address(d) not in (pa, address(c))
    e = mx.subtract(1.0, a)  # the array is the second input
    del a
    assert address(e) == pa
    assert_close(e, np.zeros((3, 4)))


def test_views_that_cannot_take_a_result_are_left_alone():
    a = mx.array(np.arange(24, dtype=np.float32).reshape(4, 6))
    mx.eval(a)
    t = mx.abs(a.T)  # a transposed view is not C-contiguous: a new buffer
    s = mx.abs(mx.broadcast_to(mx.array([1.0, -2.0]), (3, 2)))  # a broadcast is read-only
    assert_close(t, np.abs(np.arange(24, dtype=np.float32).reshape(4, 6).T))
    assert_close(s, np.abs(np.broadcast_to([1.0, -2.0], (3, 2))))
    assert_close(a, np.arange(24, dtype=np.float32).reshape(4, 6))


# -- peak memory: a chain that holds nothing keeps one buffer ---------------------------------------------------
def _peak_after(fn, x) -> tuple[int, int]:
    """(peak before, peak after) evaluating ``fn(x)`` once the caller's reference to ``x`` is gone."""
    mx.eval(x)
    pre = mx.get_peak_memory()
    box = [x]
    del x
    out = fn(box)
    mx.eval(out)
    return pre, mx.get_peak_memory()


def _views_and_elementwise(box):
    x = box.pop()
    for _ in range(4):
        x = mx.abs(x)
        x = mx.reshape(x, (-1,))
        x = x.T.T
        x = mx.stop_gradient(x)
        x = mx.abs(x)
        x = x[:-1]
        x = mx.negative(x)
        x = copy.copy(x)
    return x


def _scalar_chain(box):  # one fused region, split across cores on a large array
    x = box.pop()
    for _ in range(6):
        x = mx.sin(x * 0.5 + 1.0)
    return x


@pytest.mark.parametrize("chain", [_views_and_elementwise, _scalar_chain])
def test_a_chain_nothing_holds_never_raises_the_peak(chain):
    mx.reset_peak_memory()
    pre, post = _peak_after(chain, mx.random.uniform(shape=(BIG,), stream=mx.cpu))
    assert post == pre


def test_a_held_input_does_raise_the_peak():
    before = np.random.default_rng(0).uniform(-1, 1, BIG).astype(np.float32)
    x = mx.array(before)
    gc.collect()  # (garbage of earlier tests freed now, not while this one counts)
    mx.synchronize()
    mx.reset_peak_memory()
    active = mx.get_active_memory()  # x's buffer among it
    y = mx.abs(x, stream=mx.cpu)  # x stays: y needs a buffer of its own (the host's donation; no copy to a GPU)
    mx.eval(y)
    # all that was live at the reset, x's buffer included, and y's on top (the peak counts from the reset, as MLX's;
    # slack: small buffers that in-flight GPU work held are released when it finishes, at any time)
    assert active >= 4 * BIG and mx.get_peak_memory() >= active + 4 * BIG - (64 << 10)
    np.testing.assert_array_equal(np.asarray(x), before)
    np.testing.assert_array_equal(np.asarray(y), np.abs(before))


def test_a_donated_buffer_is_counted_once():
    gc.collect()  # (garbage of earlier tests freed now, not while this one counts)
    x = mx.random.uniform(shape=(BIG,), stream=mx.cpu)
    mx.eval(x)
    active = mx.get_active_memory()
    y = mx.sin(mx.reshape(mx.abs(x), (1024, -1)))
    del x
    mx.eval(y)
    assert mx.get_active_memory() == active
    del y
    assert mx.get_active_memory() == active - 4 * BIG


def test_compile_donates_an_input_nothing_else_holds():
    f = mx.compile(lambda x: mx.sin(x) + 1)
    for _ in range(3):  # the trace, then replays
        x = mx.arange(4096, dtype=mx.float32)
        mx.eval(x)
        where = address(x)
        kept = x if _ == 2 else None  # the last call's input stays held: it keeps its buffer
        out = f(x)
        del x
        mx.eval(out)
        assert (address(out) == where) == (kept is None)
        assert_close(out, np.sin(np.arange(4096, dtype=np.float32)) + 1)
    assert_close(kept, np.arange(4096))


def test_a_loaded_array_nothing_holds_donates(tmp_path):
    path = os.path.join(tmp_path, "x.npy")
    mx.save(path, mx.random.uniform(shape=(BIG,)))
    mx.synchronize()
    mx.reset_peak_memory()
    scale = mx.array(2.0)
    y = mx.load(path)
    mx.eval(y)
    load_only = mx.get_peak_memory()
    y = mx.load(path) * scale
    mx.eval(y)
    assert mx.get_peak_memory() == load_only
    assert_close(y, np.load(path) * 2)
