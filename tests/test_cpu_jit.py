"""The CPU's compiled fused regions (``backends/cpu/jit.py``, Numba): NumPy's bits, or NumPy itself.

Every case runs the same program with the compiled path on and off and compares the results bit for bit (NaN
payloads and signed zeros included), on data with the values where rounding, NaN and zero rules differ."""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import umx as mx

pytest.importorskip("numba")
# (NumPy's references over infinities and NaNs warn as they compute what the compiled kernels must match)
pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")

from umx.backends.cpu import jit  # noqa: E402
from umx.runtime import threads  # noqa: E402

SPECIAL = [0.0, -0.0, np.nan, np.inf, -np.inf, 1e-45, -1e-45, 3.4e38, -3.4e38, 1.0, -1.0, 0.5]


@pytest.fixture(autouse=True)
def _cpu(on_the_cpu):
    """Every case on the CPU (a GPU machine's default device is its GPU)."""


@pytest.fixture
def compiled(monkeypatch, tmp_path):
    """The compiled path for regions of any size, compiled before its first use, cached under ``tmp_path``;
    several chunks a region where the host has several cores."""
    monkeypatch.setenv("UMX_JIT_CACHE", str(tmp_path))
    monkeypatch.setattr(jit, "WAIT", True)
    monkeypatch.setattr(jit, "MIN_SIZE", 1)
    monkeypatch.setattr(jit, "ENABLED", True)
    monkeypatch.setattr(threads, "CHUNK_BYTES", 64)
    return jit


def _data(rng, shape, dtype=np.float32):
    x = rng.standard_normal(shape).astype(dtype)
    flat = x.reshape(-1)
    picks = rng.integers(0, flat.size, size=max(1, flat.size // 4))
    flat[picks] = rng.choice(np.array(SPECIAL, dtype), size=picks.size)
    return x


def _both(jit, fn, *arrays):
    """``fn``'s results (NumPy arrays) with the compiled path on, then off, and the regions the first ran."""
    runs = jit.STATS["runs"]
    on = [np.asarray(r) for r in _evaluated(fn, arrays)]
    ran = jit.STATS["runs"] - runs
    jit.ENABLED = False
    off = [np.asarray(r) for r in _evaluated(fn, arrays)]
    jit.ENABLED = True
    return on, off, ran


def _evaluated(fn, arrays):
    out = fn(*[mx.array(a, dtype=mx.float64 if a.dtype == np.float64 else None) for a in arrays])
    out = list(out) if isinstance(out, tuple) else [out]
    mx.eval(*out)
    return out


def _same_bits(a: np.ndarray, b: np.ndarray) -> None:
    """The same bits, signed zeros included, NaN where NaN (whose sign and payload NumPy's own loops do not fix:
    x86 gives an operation of two NaNs the first operand's, and a compiler may swap a sum's operands)."""
    assert a.dtype == b.dtype and a.shape == b.shape
    if a.dtype.kind == "f":
        nan = np.isnan(a)
        np.testing.assert_array_equal(nan, np.isnan(b))
        np.testing.assert_array_equal(np.where(nan, 0, a).view(f"u{a.itemsize}"),
                                      np.where(nan, 0, b).view(f"u{b.itemsize}"))
    else:
        np.testing.assert_array_equal(a, b)


PROGRAMS = {
    "multiply-add": lambda a, b, c: a * b + c,  # (an FMA would round once: not NumPy's bits)
    "norm": lambda a, b, c: (a - b[0]) * c[0] * b + c,
    "relu": lambda a, b, c: mx.maximum(a, 0.0) * b,
    "relu grad": lambda a, b, c: mx.where(a > 0, b, 0.0),
    "min max": lambda a, b, c: mx.minimum(mx.maximum(a, b), c),
    "divide": lambda a, b, c: a / b - c,
    "unary": lambda a, b, c: mx.sqrt(mx.abs(a)) + mx.square(-b) + mx.reciprocal(c),
    "predicates": lambda a, b, c: mx.where(mx.logical_and(a > b, mx.logical_not(mx.isnan(c))), a, c),
    "logical": lambda a, b, c: (mx.logical_or(a <= b, b >= c) != (a == c)).astype(mx.float32) * a,
    "casts": lambda a, b, c: (a.astype(mx.float64) * 3.0).astype(mx.float32) + (b != 0).astype(mx.float32),
}


@pytest.mark.parametrize("name", list(PROGRAMS))
def test_compiled_regions_give_numpys_bits(compiled, rng, name):
    fn = PROGRAMS[name]
    shape = (33, 32, 32)  # (a CPU region of fewer elements is made only from several ops)
    arrays = [_data(rng, shape) for _ in range(3)]
    on, off, ran = _both(compiled, fn, *arrays)
    assert ran >= 1  # (the compiled path ran the region)
    for x, y in zip(on, off):
        _same_bits(x, y)


@pytest.mark.parametrize("rows", [(32,), (5, 32), (1, 1, 32)])
def test_row_operands_broadcast_over_the_leading_axes(compiled, rng, rows):
    # (a norm's statistics and scale over channels last: read by their place in a row)
    x = _data(rng, (48, 5, 5, 32)) if len(rows) != 2 else _data(rng, (300, 5, 32))
    m, s = _data(rng, rows), _data(rng, rows)
    on, off, ran = _both(compiled, lambda x, m, s: (x - m) * s + 1.5, x, m, s)
    assert ran == 1
    _same_bits(on[0], off[0])
    _same_bits(on[0], (x - m) * s + np.float32(1.5))


def test_operands_broadcast_along_any_axes(compiled, rng):
    # (a max pool's gradient: each window's maximum against its elements; a per-channel column in the middle)
    x = _data(rng, (64, 4, 2, 6, 2, 8))
    m, col = _data(rng, (64, 4, 1, 6, 1, 8)), _data(rng, (4, 1, 6, 1, 1))
    on, off, ran = _both(compiled, lambda x, m, col: (x == m).astype(mx.float32) * x - col * m + 1.0, x, m, col)
    assert ran == 1
    _same_bits(on[0], off[0])
    _same_bits(on[0], (x == m).astype(np.float32) * x - col * m + np.float32(1))


def test_float64_regions(compiled, rng):
    a, b = _data(rng, (40000,), np.float64), _data(rng, (40000,), np.float64)
    on, off, ran = _both(compiled, lambda a, b: mx.maximum(a * b - a / b, -1.0), a, b)
    assert ran == 1
    assert on[0].dtype == np.float64
    _same_bits(on[0], off[0])


def test_regions_it_does_not_compile_run_on_numpy(compiled, monkeypatch, rng):
    # (an exponential's bits are NumPy's own approximation's: such a region is never compiled, and once seen its
    # leaves' layout is not worked out again)
    a = _data(rng, (40000,))
    on, off, ran = _both(compiled, lambda a: mx.exp(a) * 2.0 + a, a)
    assert ran == 0
    _same_bits(on[0], off[0])
    monkeypatch.setattr(compiled, "_layout", lambda *args: pytest.fail("the layout of a region never compiled"))
    b = mx.array(a)
    _same_bits(np.asarray(mx.exp(b) * 2.0 + b), off[0])


@settings(max_examples=25, deadline=None)
@given(x=hnp.arrays(np.float32, hnp.array_shapes(min_dims=1, max_dims=4, max_side=9),
                    elements=st.floats(width=32, allow_nan=True, allow_infinity=True, allow_subnormal=True)),
       scale=st.floats(-4, 4, width=32))
def test_compiled_arithmetic_matches_numpy_on_any_values(x, scale):
    saved = jit.WAIT, jit.MIN_SIZE, jit.ENABLED
    jit.WAIT, jit.MIN_SIZE, jit.ENABLED = True, 1, True
    try:
        on, off, _ = _both(jit, lambda a: mx.where(a > scale, a * scale - a, mx.minimum(a, scale)) / (a + 1.0), x)
    finally:
        jit.WAIT, jit.MIN_SIZE, jit.ENABLED = saved
    _same_bits(on[0], off[0])


def test_a_region_compiles_in_the_background_then_runs_compiled(monkeypatch, tmp_path, rng):
    import time

    monkeypatch.setenv("UMX_JIT_CACHE", str(tmp_path))
    monkeypatch.setattr(jit, "MIN_SIZE", 1)
    monkeypatch.setattr(jit, "ENABLED", True)
    a, b = (mx.array(_data(rng, (40000,))) for _ in range(2))

    def step():
        r = mx.maximum(a * 1.25 - b, b * 0.5)  # (a structure no other test makes)
        mx.eval(r)
        return np.asarray(r)

    runs = jit.STATS["runs"]
    first = step()  # (NumPy, while the region compiles)
    assert jit.STATS["runs"] == runs
    deadline = time.monotonic() + 120
    while jit.STATS["runs"] == runs and time.monotonic() < deadline:
        later = step()
        time.sleep(0.05)
    assert jit.STATS["runs"] > runs
    _same_bits(later, first)


def test_layouts():
    f32 = np.zeros
    assert jit._layout([f32((4, 8)), f32((8,)), np.float32(1)], (4, 8)) == (8, ("full", "row", "one"))
    assert jit._layout([f32((4, 8)), f32((4, 8))], (4, 8)) == (0, ("full", "full"))
    # (leaves broadcast along other axes: the result's axes collapsed where every leaf reads them alike)
    assert jit._layout([f32((4, 8)), f32((4, 1))], (4, 8)) == ((4, 8), ("FF", "FB"))
    assert jit._layout([f32((2, 4, 8)), f32((4, 8)), f32((8,))], (2, 4, 8)) == ((2, 4, 8), ("FFF", "BFF", "BBF"))
    assert jit._layout([f32((6, 2, 1, 3, 2, 1, 3)), f32((6, 2, 1, 1, 2, 1, 3))], (6, 2, 1, 3, 2, 1, 3)) == \
        ((12, 3, 6), ("FFF", "FBF"))
    assert jit._layout([f32((8, 4)).T], (4, 8)) is None  # (not contiguous)
    assert jit._layout([f32((4, 8)), f32((3, 1))], (4, 8)) is None  # (not broadcastable)


def test_a_training_step_gives_the_same_parameters(compiled, on_the_cpu, monkeypatch):
    # (a convolution, batch norm, ReLU and max pool step with Adam: its regions compiled or on NumPy, the same bits;
    # the batch norm's sums on their other routes both times, whose bits are their own)
    import umx.nn as nn
    import umx.optimizers as optim
    from umx.utils import tree_flatten

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3, padding=1)
            self.bn = nn.BatchNorm(8)
            self.pool = nn.MaxPool2d(2, 2)
            self.out = nn.Linear(8 * 8 * 8, 10)

        def __call__(self, x):
            x = self.pool(nn.relu(self.bn(self.conv(x))))
            return self.out(x.reshape(x.shape[0], -1))

    for name in ("sums", "squares"):
        monkeypatch.setitem(compiled._kernels, ("columns", name, np.dtype(np.float32)), compiled._PENDING)
    rng = np.random.default_rng(0)
    x = mx.array(rng.standard_normal((16, 16, 16, 3), dtype=np.float32))
    y = mx.array(rng.integers(0, 10, 16).astype(np.int32))

    def train(enabled: bool) -> list:
        jit.ENABLED = enabled
        mx.random.seed(0)
        model, opt = Net(), optim.Adam(learning_rate=1e-2)
        step = nn.value_and_grad(model, lambda m, x, y: nn.losses.cross_entropy(m(x), y, reduction="mean"))
        for _ in range(3):
            loss, grads = step(model, x, y)
            opt.update(model, grads)
            mx.eval(loss, model.parameters(), opt.state)
        return [np.asarray(v) for _, v in tree_flatten(model.parameters())]

    runs = jit.STATS["runs"]
    on = train(True)
    assert jit.STATS["runs"] > runs
    off = train(False)
    jit.ENABLED = True
    for a, b in zip(on, off):
        _same_bits(a, b)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork")
def test_a_forked_child_compiles_what_its_parent_was_compiling(monkeypatch, tmp_path):
    monkeypatch.setenv("UMX_JIT_CACHE", str(tmp_path))
    monkeypatch.setattr(jit, "MIN_SIZE", 1)
    key = ("a region being compiled",)
    jit._kernels[key] = jit._PENDING
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # (the child: no compiler thread, so nothing of the parent's stays pending)
        os.write(w, b"1" if key not in jit._kernels and not jit._compiling else b"0")
        os._exit(0)
    os.close(w)
    got = os.read(r, 1)
    os.waitpid(pid, 0)
    del jit._kernels[key]
    assert got == b"1"


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("keepdims", [False, True])
@pytest.mark.parametrize("busy", [False, True])
def test_column_sums_and_variances_in_float64(compiled, monkeypatch, rng, dtype, keepdims, busy):
    # (a batch norm's statistics over (N, H, W): float64 sums in chunks of rows, rounded once; a sum or mean takes
    # them where the pool is busy, alone a product with ones; the variance always)
    monkeypatch.setattr(threads, "CORES", max(threads.CORES, 2))
    monkeypatch.setattr(threads, "split_lately", lambda seconds: busy)
    x = rng.standard_normal((24, 9, 10, 32)).astype(dtype) * 3 + 1
    a = mx.array(x, dtype=mx.float64 if dtype == np.float64 else None)
    wide = x.astype(np.float64)
    runs = compiled.STATS["runs"]
    got = [np.asarray(f) for f in (mx.sum(a, axis=(0, 1, 2), keepdims=keepdims),
                                   mx.mean(a, axis=(0, 1, 2), keepdims=keepdims),
                                   mx.var(a, axis=(0, 1, 2), keepdims=keepdims),
                                   mx.var(a, axis=(0, 1, 2), ddof=1, keepdims=keepdims))]
    # (two variances of two passes each, and where busy a sum and a mean)
    assert compiled.STATS["runs"] == runs + 4 + 2 * busy
    want = [wide.sum(axis=(0, 1, 2), keepdims=keepdims), wide.mean(axis=(0, 1, 2), keepdims=keepdims),
            wide.var(axis=(0, 1, 2), keepdims=keepdims), wide.var(axis=(0, 1, 2), ddof=1, keepdims=keepdims)]
    for g, w in zip(got, want):
        assert g.dtype == dtype and g.shape == w.shape
        # (float32: within the result's own rounding, float64 sums rounded once, or a product's; float64: a
        # sequential sum's)
        tol = (2 if busy else 8) * np.finfo(np.float32).eps if dtype == np.float32 else 1e-12
        np.testing.assert_allclose(g, w, rtol=tol, atol=tol * np.abs(w).max())


def test_column_sums_wait_for_their_kernel(monkeypatch, tmp_path, rng):
    # (before its kernel is compiled, a sum takes the other routes: the same values within float32's rounding)
    monkeypatch.setenv("UMX_JIT_CACHE", str(tmp_path))
    monkeypatch.setattr(jit, "MIN_SIZE", 1)
    monkeypatch.setattr(jit, "ENABLED", True)
    monkeypatch.setattr(jit, "WAIT", False)
    monkeypatch.setitem(jit._kernels, ("columns", "sums", np.dtype(np.float32)), jit._PENDING)
    monkeypatch.setattr(threads, "CORES", max(threads.CORES, 2))
    monkeypatch.setattr(threads, "CHUNK_BYTES", 1 << 10)
    monkeypatch.setattr(threads, "split_lately", lambda seconds: True)  # (where column sums would be taken)
    x = rng.standard_normal((4000, 8)).astype(np.float32)
    runs = jit.STATS["runs"]
    got = np.asarray(mx.sum(mx.array(x), axis=0))
    assert jit.STATS["runs"] == runs
    np.testing.assert_allclose(got, x.astype(np.float64).sum(axis=0), rtol=1e-5, atol=1e-3)


@pytest.mark.parametrize("op", ["max", "min", "sum"])
@pytest.mark.parametrize("shape, axes", [((64, 8, 2, 8, 2, 16), (2, 4)), ((40, 3, 30, 3, 8), (1, 3)),
                                         ((100, 4, 200), (1,)), ((8, 2, 10, 2, 12, 2, 9), (1, 3, 5))])
def test_window_reductions_fold_as_numpys_passes(compiled, rng, op, shape, axes):
    # (a pooling window's maxima and its gradient's sums: the chain's folds in its order, so its bits)
    x = _data(rng, shape)
    runs = compiled.STATS["runs"]
    on, off, _ = _both(compiled, lambda a: getattr(mx, op)(a, axis=axes), x)
    assert compiled.STATS["runs"] > runs
    _same_bits(on[0], off[0])
    if op != "sum":  # (NumPy's own reduction: the same values, its signed zeros its own; a sum's order is too)
        np.testing.assert_array_equal(on[0], getattr(np, op)(x, axis=axes))


def test_window_reductions_of_other_layouts_keep_to_numpy(compiled, rng):
    x = _data(rng, (3, 2000, 4))
    runs = compiled.STATS["runs"]
    on, off, _ = _both(compiled, lambda a: mx.max(a, axis=2, keepdims=True), x)  # (a reduced last axis)
    assert compiled.STATS["runs"] == runs
    _same_bits(on[0], off[0])
    assert jit._window_layout((64, 8, 2, 8, 2, 16), (2, 4)) == ((512, 2, 8, 2, 16), "KRKRK")
    assert jit._window_layout((5, 1, 3, 7), (2,)) == ((5, 3, 7), "KRK")
    assert jit._window_layout((3, 4), (0,)) is None
