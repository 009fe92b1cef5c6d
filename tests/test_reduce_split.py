"""CPU reductions split across cores: the split path (forced on small inputs) against NumPy and the one-core kernel.

The thresholds are lowered so that small arrays are cut into several chunks along kept and reduced axes; results
must match a float64 NumPy reference, keep the one-core kernel's dtype, propagate NaN and break ties as NumPy.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import assert_close, record_cuts
from hypothesis import given, settings
from hypothesis import strategies as st

import umx as mx
from umx.backends.cpu import reduce_split
from umx.backends.cpu.executor import KERNELS
from umx.primitives import ArgMax, Mean, Sum
from umx.runtime import threads

SHAPES = [(37,), (6, 5, 7), (2, 301), (301, 2), (3, 1, 40), (4, 0), ()]
AXES = [None, 0, -1, (0, 2), (1,), (-1, -3), (0, 1)]


@pytest.fixture
def calls(monkeypatch):
    """Counts the reductions that take the split path, on 3 'cores' (uneven chunks)."""
    monkeypatch.setattr(threads, "CORES", 3)
    seen = []
    run = reduce_split._run_split
    monkeypatch.setattr(reduce_split, "_run_split", lambda *a: seen.append(1) or run(*a))
    return seen


@pytest.fixture
def split(monkeypatch, calls):
    """Split every non-empty reduction into as many chunks as its axes allow."""
    monkeypatch.setattr(reduce_split, "MIN_SIZE", 0)
    monkeypatch.setattr(threads, "CHUNK_BYTES", 1)
    return calls


def _lse(x, axis, keepdims):
    if x.size == 0:
        return np.full(np.sum(x, axis=axis, keepdims=keepdims).shape, -np.inf)
    m = np.max(x, axis=axis, keepdims=True)
    m = np.where(np.isfinite(m), m, 0)
    out = np.log(np.sum(np.exp(x - m), axis=axis, keepdims=True)) + m
    return out if keepdims else np.squeeze(out, axis=axis)


def _data(rng, shape, dtype, name):
    if dtype == np.bool_:
        return rng.random(shape) < (0.97 if name == "all" else 0.03)
    if np.dtype(dtype).kind == "i":
        return rng.integers(-3, 4, shape).astype(dtype)
    lo, hi = (0.9, 1.1) if name == "prod" else (-2.0, 2.0)
    return rng.uniform(lo, hi, shape).astype(dtype)


def _ref(name, x, axis, keepdims):
    if name in ("all", "any", "max", "min"):
        return getattr(np, name)(x, axis=axis, keepdims=keepdims)
    if name == "logsumexp":
        return _lse(x.astype(np.float64), axis, keepdims)
    if name == "prod" and x.dtype.kind in "ib":  # integer products wrap around in int32, as MLX's do
        return np.prod(x, axis=axis, keepdims=keepdims, dtype=np.int32)
    return getattr(np, name)(x.astype(np.float64), axis=axis, keepdims=keepdims)


def _unsplit(fn, *args, **kwargs):
    held, reduce_split.MIN_SIZE = reduce_split.MIN_SIZE, 1 << 62
    try:
        return np.asarray(fn(*args, **kwargs))
    finally:
        reduce_split.MIN_SIZE = held


CASES = [(name, dt) for name in ("sum", "prod", "max", "min", "mean", "all", "any", "logsumexp")
         for dt in (np.float32, np.int32, np.bool_, np.float16)
         if not (name == "logsumexp" and dt in (np.int32, np.bool_))]


@pytest.mark.filterwarnings("ignore:Mean of empty slice", "ignore:invalid value encountered")
@pytest.mark.parametrize(("name", "dtype"), CASES, ids=lambda v: getattr(v, "__name__", v))
def test_reductions_match_numpy(split, rng, name, dtype):
    # float16 sums of 301 terms in [-2, 2] round each partial to 11 bits, split or not
    tol = {"rtol": 2e-2, "atol": 5e-2} if dtype == np.float16 else {"rtol": 1e-5, "atol": 1e-5}
    fn = getattr(mx, name)
    for shape in SHAPES:
        for axis in AXES:
            nd = len(shape)
            if axis is not None and any(a >= nd or a < -nd for a in np.atleast_1d(axis)):
                continue
            if name in ("max", "min", "logsumexp") and 0 in shape:  # refused, as in MLX
                continue
            x = _data(rng, shape, dtype, name)
            for keepdims in (False, True):
                out = fn(mx.array(x), axis=axis, keepdims=keepdims, stream=mx.cpu)
                plain = _unsplit(fn, mx.array(x), axis=axis, keepdims=keepdims, stream=mx.cpu)
                assert out.dtype == mx.array(plain).dtype
                assert_close(out, _ref(name, x, axis, keepdims), **tol)
    assert len(split) > 50  # most cases took the split path


@pytest.mark.parametrize("name", ["max", "min"])
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_extrema_propagate_nan(split, rng, name, dtype):
    x = rng.standard_normal((40, 30)).astype(dtype)
    x[7, 3] = x[33, 29] = np.nan
    for axis in (None, 0, 1):
        assert_close(getattr(mx, name)(mx.array(x), axis=axis, stream=mx.cpu),
                     getattr(np, name)(x, axis=axis), rtol=0, atol=0)
    assert len(split) == 3


@pytest.mark.parametrize("name", ["argmax", "argmin"])
@pytest.mark.parametrize("dtype", [np.float32, np.int32, np.float16])
def test_arg_reductions(split, rng, name, dtype):
    for shape in [(100,), (9, 41), (41, 9), (3, 5, 17)]:
        x = rng.integers(-2, 3, shape).astype(dtype)  # many ties: the first index must win
        if dtype != np.int32 and len(shape) > 1:
            x[1, 4] = x[-1, -1] = np.nan
        for axis in range(-len(shape), len(shape)):
            for keepdims in (False, True):
                out = getattr(mx, name)(mx.array(x), axis=axis, keepdims=keepdims, stream=mx.cpu)
                np.testing.assert_array_equal(np.asarray(out), getattr(np, name)(x, axis=axis, keepdims=keepdims))
                assert out.dtype == mx.uint32
        out = getattr(mx, name)(mx.array(x), stream=mx.cpu)
        assert int(out) == getattr(np, name)(x)
    assert len(split) == 36  # every one took the split path


def test_kernels_keep_numpys_dtypes(split, rng):
    x = rng.integers(0, 9, (50, 20)).astype(np.int32)
    # integer means are float64, as numpy.mean's; the half mean accumulates in float32
    assert_close(KERNELS[Mean](Mean((0,), False), x), x.mean(axis=0), dtype=None)
    assert KERNELS[Mean](Mean((0, 1), False), x).dtype == np.float64
    h = rng.uniform(60, 70, 4000).astype(np.float16)  # a float16 running sum would lose the low digits
    assert_close(KERNELS[Mean](Mean((0,), False), h), h.astype(np.float64).mean(), rtol=1e-3)
    s = KERNELS[Sum](Sum((0, 1), False), x)
    assert isinstance(s, np.int32) and s == x.sum()
    a = KERNELS[ArgMax](ArgMax(1, True), x)
    assert a.dtype == np.uint32 and a.shape == (50, 1)


def test_threshold_weighs_the_work(calls):
    half = np.ones(reduce_split.MIN_SIZE // 4, np.float16)  # float16 sums convert every element: worth splitting
    assert float(mx.mean(mx.array(half), stream=mx.cpu)) == 1.0
    assert len(calls) == 1
    flags = np.zeros(reduce_split.MIN_SIZE * 2, np.bool_)  # logical reductions run at memory speed: one core
    assert not bool(mx.any(mx.array(flags), stream=mx.cpu))
    assert len(calls) == 1


def test_large_sum_uses_default_threshold(rng):
    x = rng.random(reduce_split.MIN_SIZE + 3, dtype=np.float32)
    assert_close(mx.sum(mx.array(x), stream=mx.cpu), x.astype(np.float64).sum(), rtol=1e-5)
    y = x[:-3].reshape(1024, -1)
    assert_close(mx.sum(mx.array(y), axis=0, stream=mx.cpu), y.astype(np.float64).sum(axis=0), rtol=1e-5)
    assert_close(mx.max(mx.array(y), axis=1, stream=mx.cpu), y.max(axis=1), rtol=0, atol=0)


def test_non_contiguous_input_is_not_split(split):
    x = np.arange(60, dtype=np.float32).reshape(6, 10)
    assert KERNELS[Sum](Sum((0,), False), x[:, ::2]).tolist() == x[:, ::2].sum(axis=0).tolist()
    assert not split


@pytest.mark.parametrize("shape, axes", [((9, 7, 5, 33), (0, 1, 2)), ((301, 64), (0,)), ((3, 50, 2), (0, 1))])
@pytest.mark.parametrize("ddof", [0, 1])
def test_variance_over_leading_axes_in_chunks_of_rows(rng, monkeypatch, shape, axes, ddof):
    # the squared deviations run a chunk of rows per core (kernels._var), each in blocks of rows through one
    # scratch buffer, their sums added
    from umx.backends.cpu import kernels
    from umx.primitives import Var

    monkeypatch.setattr(threads, "CORES", 3)
    monkeypatch.setattr(threads, "CHUNK_BYTES", 64)
    monkeypatch.setattr(threads, "BLOCK_PER_CORE", 100)  # (a chunk's rows run in several blocks, the last short)
    seen = record_cuts(monkeypatch)
    x = (rng.standard_normal(shape) * 3 + 5).astype(np.float32)
    for keepdims in (False, True):
        got = kernels._var(Var(axes, keepdims, ddof), x)
        want = np.var(x.astype(np.float64), axis=axes, ddof=ddof, keepdims=keepdims)
        assert got.dtype == np.float32 and got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=2e-5)
    assert seen and max(seen) == 3


@pytest.mark.parametrize("name", ["Sum", "Max", "Min", "Prod"])
@pytest.mark.parametrize("shape, axes", [((7, 6, 2, 6, 2, 3), (2, 4)), ((5, 33, 3), (2,)), ((9, 2, 50), (1,)),
                                         ((5, 1, 2, 40), (1, 2))])
def test_short_axes_reductions_split_by_their_first_axis(rng, monkeypatch, name, shape, axes):
    # a pooling window's reduction (kernels._unrolled: binary ops over slices) cut along the kept first axis, each
    # chunk's last pass writing its rows of the result: the bits of the one-core chain, and NumPy's values
    from umx import primitives
    from umx.backends.cpu import kernels

    monkeypatch.setattr(kernels, "UNROLL_MIN_RESULTS", 4)
    x = (rng.standard_normal(shape) * 2).astype(np.float32)
    prim = getattr(primitives, name)(axes, False)
    monkeypatch.setattr(threads, "CORES", 1)
    alone = KERNELS[type(prim)](prim, x)
    monkeypatch.setattr(threads, "CORES", 3)
    monkeypatch.setattr(threads, "CHUNK_BYTES", 64)
    seen = record_cuts(monkeypatch)
    for keepdims in (False, True):
        prim = getattr(primitives, name)(axes, keepdims)
        got = KERNELS[type(prim)](prim, x)
        want = getattr(np, name.lower())(x.astype(np.float64), axis=axes, keepdims=keepdims)
        assert got.dtype == np.float32 and got.shape == want.shape
        assert got.tobytes() == (np.expand_dims(alone, axes) if keepdims else alone).tobytes()
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert seen and max(seen) == 3


@settings(max_examples=40, deadline=None, derandomize=True)
@given(rows=st.integers(0, 700), columns=st.integers(0, 300), cores=st.integers(2, 5),
       dtype=st.sampled_from([np.float32, np.float64]))
def test_column_sums_over_wide_rows_match_numpy(rows, columns, cores, dtype):
    # a batch norm's statistics: rows of a few channels summed side by side (NumPy adds one row at a time, a short
    # one nearly as slowly as a wide one), whole or in chunks of wide rows on the pool, the rows left over added
    rng = np.random.default_rng(rows * 1000 + columns)
    x = rng.standard_normal((rows, columns)).astype(dtype)
    want = x.astype(np.float64).sum(0, keepdims=True)
    held = threads.CORES, threads.CHUNK_BYTES
    threads.CORES, threads.CHUNK_BYTES = cores, 64
    try:
        for split in (False, True):
            got = reduce_split.wide_sum(x, split)
            assert got.dtype == dtype and got.shape == (1, columns)
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)
    finally:
        threads.CORES, threads.CHUNK_BYTES = held


@pytest.mark.parametrize("op", ["sum", "mean", "var"])
@pytest.mark.parametrize("pool", [False, True])
def test_statistics_over_leading_axes_take_wide_rows_on_the_pool(rng, monkeypatch, op, pool):
    # over the pool (work cut there lately, or on a pool thread) a leading sum is NumPy's reduction over wide rows,
    # not products (called from several threads, those run one at a time); alone it stays a product (but the
    # variance's squared deviations, always summed in chunks on the pool)
    from umx.backends.cpu import jit, kernels

    monkeypatch.setattr(jit, "ENABLED", False)  # (the routes without compiled column sums: see test_cpu_jit.py)
    monkeypatch.setattr(threads, "CORES", 3)
    monkeypatch.setattr(threads, "CHUNK_BYTES", 1 << 10)
    monkeypatch.setattr(reduce_split, "MIN_SIZE", 1 << 40)  # (the kernel itself, not the split wrapper)
    monkeypatch.setattr(threads, "split_lately", lambda seconds: pool)
    wide = []
    real = kernels.wide_sum
    monkeypatch.setattr(kernels, "wide_sum", lambda x, split=False: wide.append(1) or real(x, split))
    x = (rng.standard_normal((64, 5, 7, 9)) * 2 + 1).astype(np.float32)
    got = np.asarray(getattr(mx, op)(mx.array(x), axis=(0, 1, 2), stream=mx.cpu))
    want = getattr(np, op)(x.astype(np.float64), axis=(0, 1, 2))
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=1e-5)
    assert bool(wide) == (pool or op == "var")
