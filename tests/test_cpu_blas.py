"""Products on the CPU's cores (``backends/cpu/blas.py``): the attention kernel's batch split, products cut along
each axis, convolutions' chunks at once, against the unsplit kernels and float64 NumPy, with the BLAS's thread
count put back; and the pool's parallel copy of a view (``runtime/threads.py``)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import assert_close, record_cuts

import umx as mx
from umx.backends.cpu import blas
from umx.backends.xp import bind
from umx.primitives import ScaledDotProductAttention

needs_blas = pytest.mark.skipif(blas._BLAS is None, reason="no OpenBLAS found, or one core")
SHARED = bind(np)


@needs_blas
@pytest.mark.parametrize("mask", ["none", "causal", "bool", "additive", "per-example", "sinks"])
def test_attention_split_over_the_batch(rng, monkeypatch, mask):
    q = rng.standard_normal((4, 8, 9, 16)).astype(np.float32)
    k = rng.standard_normal((4, 2, 11, 16)).astype(np.float32)  # (grouped-query heads)
    v = rng.standard_normal((4, 2, 11, 16)).astype(np.float32)
    rest = []
    kind = mask
    if mask in ("bool", "additive"):
        rest = [rng.standard_normal((9, 11)) > -1 if mask == "bool" else rng.standard_normal((1, 8, 9, 11))]
    elif mask == "per-example":
        kind, rest = "additive", [rng.standard_normal((4, 1, 9, 11)).astype(np.float32)]
    elif mask == "sinks":
        kind, rest = "none", [rng.standard_normal(8).astype(np.float32)]
    prim = ScaledDotProductAttention(0.25, kind, mask == "sinks")
    want = SHARED[ScaledDotProductAttention](prim, q, k, v, *rest)
    threads_before = blas._BLAS[1]()
    got = blas.batched_attention(SHARED[ScaledDotProductAttention], prim, q, k, v, *rest)
    assert blas._BLAS[1]() == threads_before
    assert got is not None and got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert blas.batched_attention(SHARED[ScaledDotProductAttention], prim, q[:1], k[:1], v[:1], *rest) is None


def test_attention_through_the_op_on_the_cpu(rng, monkeypatch):
    splits = []
    real_split = blas.split
    monkeypatch.setattr(blas, "split", lambda fn, n: splits.append(n) or real_split(fn, n))
    q, k, v = (rng.standard_normal((3, 4, 10, 8)).astype(np.float32) for _ in range(3))
    got = mx.fast.scaled_dot_product_attention(mx.array(q), mx.array(k), mx.array(v), scale=0.3, mask="causal",
                                               stream=mx.cpu)
    s = (q.astype(np.float64) @ np.swapaxes(k, -1, -2)) * 0.3
    s = np.where(np.tril(np.ones((10, 10), bool)), s, -np.inf)
    p = np.exp(s - s.max(-1, keepdims=True))
    assert_close(got, (p / p.sum(-1, keepdims=True)) @ v, 1e-5, 1e-5)
    if blas._BLAS is not None:
        assert splits == [3]  # (the batch, cut over the cores)


# Products cut along each axis blas.matmul may choose: batch (also with a broadcast operand), rows, columns,
# and the contraction (partial products summed); chunk sizes small enough that these small cases split.
_PRODUCTS = [
    ((16, 20, 12), (16, 12, 18)),  # batch
    ((16, 20, 12), (12, 18)),  # batch, the right operand broadcast
    ((20, 12), (16, 12, 18)),  # batch, the left operand broadcast
    ((1, 20, 12), (16, 12, 18)),  # batch, a batch axis of length 1
    ((3, 2, 40, 12), (2, 12, 18)),  # rows of a batch of two axes, shorter than the cores
    ((200, 12), (12, 18)),  # rows
    ((3, 12), (12, 400)),  # columns
    ((3, 4000), (4000, 5)),  # contraction
    ((1, 4000), (4000, 64)),  # a sum as a product (a leading-axes sum's)
]


@needs_blas
@pytest.mark.parametrize("ctypes_gemm", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.complex64])
@pytest.mark.parametrize("shapes", _PRODUCTS, ids=str)
def test_products_split_over_the_cores(rng, monkeypatch, shapes, dtype, ctypes_gemm):
    monkeypatch.setattr(blas, "GEMM_BY_CTYPES", ctypes_gemm)
    monkeypatch.setattr(blas, "SMALL_WORK", 0)
    monkeypatch.setattr(blas, "CHUNK_WORK", 64)
    monkeypatch.setattr(blas.threads, "CORES", 4)
    monkeypatch.setattr(blas.threads, "split_lately", lambda seconds: True)
    a, b = (rng.standard_normal(s).astype(dtype) for s in shapes)
    if dtype == np.complex64:
        a = a + 1j * rng.standard_normal(a.shape).astype(np.float32)
    threads_before = blas._BLAS[1]()
    calls = record_cuts(monkeypatch)
    got = blas.matmul(a, b)
    assert blas._BLAS[1]() == threads_before
    assert calls and calls[0] > 1  # (it split)
    want = a.astype(np.complex128 if dtype == np.complex64 else np.float64) @ b
    assert got.dtype == np.result_type(a, b) and got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-4 if dtype != np.float64 else 1e-12, atol=1e-4)
    out = np.empty_like(got)
    assert blas.matmul(a, b, out=out) is out
    np.testing.assert_allclose(out, got, rtol=1e-5, atol=1e-5)


def _layout(x: np.ndarray, kind: str) -> np.ndarray:
    """``x``'s values laid out as ``kind`` says: row-major, column-major (a transpose's view), or a slice of wider
    rows (a column chunk's)."""
    if kind == "rows":
        return np.ascontiguousarray(x)
    if kind == "columns":
        return np.ascontiguousarray(x.T).T
    wide = np.zeros((x.shape[0], x.shape[1] + 5), x.dtype)
    wide[:, 2:2 + x.shape[1]] = x
    return wide[:, 2:2 + x.shape[1]]


@pytest.mark.skipif(not blas._GEMM, reason="no OpenBLAS gemm found")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("a_kind", ["rows", "columns", "slice"])
@pytest.mark.parametrize("b_kind", ["rows", "columns", "slice"])
@pytest.mark.parametrize("out_kind", ["none", "rows", "slice", "columns"])
def test_chunk_products_through_ctypes_have_numpys_bits(rng, monkeypatch, dtype, a_kind, b_kind, out_kind):
    monkeypatch.setattr(blas, "GEMM_BY_CTYPES", True)
    calls = []
    gemm = blas._GEMM[np.dtype(dtype).char]
    monkeypatch.setitem(blas._GEMM, np.dtype(dtype).char, lambda *args: calls.append(1) or gemm(*args))
    a = _layout(rng.standard_normal((37, 53)).astype(dtype), a_kind)
    b = _layout(rng.standard_normal((53, 29)).astype(dtype), b_kind)
    # (NumPy's product into a column-major output has bits of its own: compared with NumPy's into the same layout)
    want = np.matmul(a, b, out=None if out_kind == "none" else _layout(np.empty((37, 29), dtype), out_kind))
    out = None if out_kind == "none" else _layout(np.full((37, 29), np.nan, dtype), out_kind)
    got = blas.chunk_matmul(a, b, out=out)
    if out is not None:
        assert got is out
    np.testing.assert_array_equal(got, want)  # (bit for bit: the same gemm, called as NumPy calls it)
    assert calls == ([] if out_kind == "columns" else [1])  # (an output BLAS cannot write row-major: NumPy's)


@pytest.mark.skipif(not blas._GEMM, reason="no OpenBLAS gemm found")
@pytest.mark.parametrize("case", ["vector", "same operand", "batch", "mixed dtypes", "overlap", "integers"])
def test_chunk_products_ctypes_leaves_to_numpy(rng, monkeypatch, case):
    monkeypatch.setattr(blas, "GEMM_BY_CTYPES", True)
    monkeypatch.setattr(blas, "_GEMM", {c: (lambda *args: pytest.fail("gemm called")) for c in "fd"})
    a = rng.standard_normal((12, 12)).astype(np.float32)
    b = rng.standard_normal((12, 7)).astype(np.float32)
    out = None
    if case == "vector":
        a = a[:1]
    elif case == "same operand":
        b = a.T
    elif case == "batch":
        a, b = np.stack([a, a]), np.stack([b, b])
    elif case == "mixed dtypes":
        b = b.astype(np.float64)
    elif case == "overlap":
        b = a[:, :7].copy()
        out = a[:, 5:12]
        want = np.matmul(a.copy(), b)
    elif case == "integers":
        a, b = a.astype(np.int32), b.astype(np.int32)
    if case != "overlap":
        want = np.matmul(a, b)
    np.testing.assert_array_equal(blas.chunk_matmul(a, b, out=out), want)


@needs_blas
def test_contraction_partials_are_summed_by_rows_in_their_order(rng, monkeypatch):
    # (a weight gradient's shape: its partial products are added a block of rows per core, p0 + p1 + ..., the
    # bits of NumPy's reduction over the stacked partials)
    monkeypatch.setattr(blas, "SMALL_WORK", 0)
    monkeypatch.setattr(blas, "CHUNK_WORK", 1 << 12)
    monkeypatch.setattr(blas.threads, "CHUNK_BYTES", 64)  # (the sum of small partials cut too)
    monkeypatch.setattr(blas.threads, "CORES", 5)
    monkeypatch.setattr(blas.threads, "split_lately", lambda seconds: True)
    a = rng.standard_normal((3000, 37)).astype(np.float32).T  # (a transposed view, as x.T in x.T @ g)
    b = rng.standard_normal((3000, 29)).astype(np.float32)
    calls = record_cuts(monkeypatch, lambda bounds, mark: bounds)
    got = blas.matmul(a, b)
    products, sums = calls
    assert len(products) == 5 and products[-1][1] == 3000  # (the contraction, cut in 5)
    assert len(sums) == 5 and sums[-1][1] == 37  # (the sum, cut by rows)
    with blas.one_thread():
        partials = [a[:, lo:hi] @ b[lo:hi] for lo, hi in products]
    np.testing.assert_array_equal(got, np.add.reduce(partials))


@needs_blas
@pytest.mark.parametrize("shapes, cut", [
    (((512, 4096), (4096, 512)), "rows"),  # a projection's weight gradient: partial sums cost more than packing
    (((48, 60000), (60000, 40)), "contraction"),  # a contraction far longer than the result
], ids=["weight gradient", "long contraction"])
def test_a_product_is_cut_along_the_contraction_only_where_its_partials_are_few(rng, monkeypatch, shapes, cut):
    monkeypatch.setattr(blas.threads, "CORES", 16)
    monkeypatch.setattr(blas.threads, "split_lately", lambda seconds: True)
    (m, k), (_, n) = shapes
    a = rng.standard_normal((k, m)).astype(np.float32).T  # (a transposed view, as x.T in x.T @ g)
    b = rng.standard_normal((k, n)).astype(np.float32)
    calls = record_cuts(monkeypatch, lambda bounds, mark: bounds)
    got = blas.matmul(a, b)
    assert calls[0][-1][1] == {"rows": m, "contraction": k}[cut]
    np.testing.assert_allclose(got, a.astype(np.float64) @ b, rtol=1e-3, atol=1e-2)


@needs_blas
def test_a_leading_axes_sum_cut_on_the_pool_reduces_wide_rows_not_products(rng, monkeypatch):
    # (products called from several pool threads at once run one at a time: its chunks are NumPy's reductions)
    from umx.backends.cpu import jit, kernels

    monkeypatch.setattr(jit, "ENABLED", False)  # (the routes without compiled column sums: see test_cpu_jit.py)
    monkeypatch.setattr(blas.threads, "CORES", 3)
    seen, cut = [], []
    real, real_wide = blas.matmul, kernels.wide_sum
    monkeypatch.setattr(blas, "matmul", lambda a, b, out=None: seen.append(b.shape[0]) or real(a, b, out))
    monkeypatch.setattr(kernels, "wide_sum",
                        lambda x, split=False: cut.append(blas.threads.in_pool()) or real_wide(x, split))
    x = rng.standard_normal((3000, 500)).astype(np.float32)
    got = mx.sum(mx.array(x), axis=0, stream=mx.cpu)
    np.testing.assert_allclose(np.asarray(got), x.astype(np.float64).sum(axis=0), rtol=1e-4, atol=1e-3)
    assert not [rows for rows in seen if rows > 2]  # (no chunk's product; the partial sums' own sum may be one)
    assert len(cut) >= 2 and all(cut)  # (cut, each chunk on the pool)


@needs_blas
def test_products_run_on_openblas_threads_while_the_pool_is_quiet(rng, monkeypatch):
    monkeypatch.setattr(blas, "SMALL_WORK", 0)
    monkeypatch.setattr(blas, "CHUNK_WORK", 64)
    a, b = rng.standard_normal((200, 30)), rng.standard_normal((30, 40))
    blas.threads.map_chunks(lambda lo, hi: None, [(0, 1), (1, 2)])  # (work cut on the pool just now)
    assert blas.threads.split_lately(60)
    calls = record_cuts(monkeypatch, lambda bounds, mark: mark)
    np.testing.assert_allclose(blas.matmul(a, b), a @ b, rtol=1e-12)
    assert len(calls) == 1 and calls[0][-1] is False  # (cut, not marked as the pool's other work)
    monkeypatch.setattr(blas, "QUIET", 0.0)  # (nothing cut lately)
    np.testing.assert_allclose(blas.matmul(a, b), a @ b, rtol=1e-12)
    assert len(calls) == 1


def test_small_and_integer_products_are_numpys(rng, monkeypatch):
    monkeypatch.setattr(blas.threads, "map_chunks", lambda *a: pytest.fail("split"))
    a, b = rng.integers(-9, 9, (300, 300)), rng.integers(-9, 9, (300, 300))
    np.testing.assert_array_equal(blas.matmul(a, b), a @ b)
    x, y = rng.standard_normal((8, 8)), rng.standard_normal((8, 8))
    np.testing.assert_array_equal(blas.matmul(x, y), x @ y)


@needs_blas
def test_a_product_on_a_pool_thread_does_not_split(rng, monkeypatch):
    monkeypatch.setattr(blas, "SMALL_WORK", 0)
    monkeypatch.setattr(blas, "CHUNK_WORK", 64)
    monkeypatch.setattr(blas.threads, "split_lately", lambda seconds: True)
    n = 2 * blas.threads.CORES
    a, b = rng.standard_normal((n * 16, 32)), rng.standard_normal((32, 64))
    # (every pool thread busy with a product that would split: a nested split would wait for ever)
    parts = blas.threads.map_chunks(lambda lo, hi: blas.matmul(a[lo * 16:hi * 16], b), [(i, i + 1) for i in range(n)])
    np.testing.assert_allclose(np.concatenate(parts), a @ b, rtol=1e-12)


@pytest.mark.parametrize("shape, key", [((64, 50, 3), (slice(None), slice(None, None, 2))),
                                        ((3, 400, 20), (slice(None), slice(None), slice(None, None, -1))),
                                        ((2, 300, 40), (slice(None), slice(1, None)))], ids=str)
def test_parallel_copy_of_a_view(rng, monkeypatch, shape, key):
    monkeypatch.setattr(blas.threads, "CHUNK_BYTES", 1024)
    cuts = record_cuts(monkeypatch)
    x = rng.standard_normal(shape).astype(np.float32)[key]
    got = blas.threads.contiguous(x)
    assert got.flags.c_contiguous and cuts and cuts[0] > 1
    np.testing.assert_array_equal(got, x)
    y = np.ascontiguousarray(x)
    assert blas.threads.contiguous(y) is y


@needs_blas
@pytest.mark.parametrize("ctypes_gemm", [False, True])
@pytest.mark.parametrize("case", ["forward", "strided", "grouped", "weight gradient"])
def test_convolution_chunks_run_at_once(rng, monkeypatch, case, ctypes_gemm):
    monkeypatch.setattr(blas, "GEMM_BY_CTYPES", ctypes_gemm)
    from umx.backends.cpu import kernels
    from umx.backends.xp import conv
    from umx.primitives.conv import Convolution

    monkeypatch.setattr(kernels, "CONV_BUDGET", 4096)
    monkeypatch.setattr(blas, "SMALL_WORK", 0)
    splits = []
    real_split = blas.split
    monkeypatch.setattr(blas, "split", lambda fn, n: splits.append(n) or real_split(fn, n))
    groups = 2 if case == "grouped" else 1
    stride = (2, 2) if case == "strided" else (1, 1)
    prim = Convolution(stride, (1, 1), (1, 1), (1, 1), (1, 1), groups, False)
    x = rng.standard_normal((6, 9, 10, 8)).astype(np.float32)
    w = rng.standard_normal((4, 3, 3, 8 // groups)).astype(np.float32)
    if case == "weight gradient":  # (the forward's input and output gradient, channels as the batch)
        prim = Convolution((1, 1), (0, 0), (0, 0), (1, 1), (1, 1), 1, False)
        x = rng.standard_normal((6, 9, 10, 8)).astype(np.float32).transpose(3, 1, 2, 0)
        w = rng.standard_normal((6, 7, 8, 4)).astype(np.float32).transpose(3, 1, 2, 0)
    got = kernels.make_table()[Convolution](prim, x, w)
    want = conv.convolution(np, prim, x.astype(np.float64), w.astype(np.float64))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    assert splits and splits[0] > 1  # (blocks, or a weight gradient's runs of channels, at once)


@pytest.mark.parametrize("shape, axes, to, copied", [
    ((4, 30, 8, 16), (0, 2, 1, 3), (4, 8, 480), True),  # a transpose's: a copy
    ((4, 30, 8, 16), (0, 1, 2, 3), (120, 128), True),  # a reversed last axis merged with another: a copy
    ((60, 64), (1, 0), (64, 6, 10), False)])  # a transpose's leading axis split: a view
def test_large_reshapes_of_views(rng, monkeypatch, shape, axes, to, copied):
    from umx.backends.cpu import kernels
    from umx.primitives.shape import Reshape

    monkeypatch.setattr(blas.threads, "CHUNK_BYTES", 512)
    cuts = record_cuts(monkeypatch)
    base = rng.standard_normal(shape).astype(np.float32)
    x = base.transpose(axes)[..., ::1] if axes != tuple(range(len(shape))) else base[:, :, :, ::-1]
    got = kernels.make_table()[Reshape](Reshape(to), x)
    np.testing.assert_array_equal(got, np.reshape(x, to))
    if copied:  # (a copy, cut on the pool)
        assert got.flags.c_contiguous and cuts and cuts[0] > 1
    else:  # (no copy at all)
        assert np.shares_memory(got, base) and not cuts


@needs_blas
def test_two_cpu_streams_cut_products_and_regions_at_once(rng, monkeypatch):
    # two streams' workers, fed from two threads, share the pool and the one-thread BLAS count: right results,
    # no wait for ever, and the count put back at the end
    import threading

    monkeypatch.setattr(blas, "SMALL_WORK", 0)
    monkeypatch.setattr(blas, "CHUNK_WORK", 1 << 12)
    monkeypatch.setattr(blas.threads, "CHUNK_BYTES", 1 << 12)
    threads_before = blas._BLAS[1]()
    a = rng.standard_normal((4, 96, 64)).astype(np.float32)
    b = rng.standard_normal((64, 80)).astype(np.float32)
    s = rng.standard_normal((4, 96, 1)).astype(np.float32)
    want = np.exp(a @ b - s) * 2
    results, errors = [], []
    cuts = record_cuts(monkeypatch, lambda bounds, mark: mark)

    def work(stream):
        try:
            for _ in range(8):
                x = mx.exp(mx.matmul(mx.array(a), mx.array(b), stream=stream) - mx.array(s), stream=stream) * 2
                x = mx.var(x, axis=(0, 1), stream=stream) + x.sum(axis=(0, 1), stream=stream)
                results.append(np.asarray(x))
        except Exception as e:  # (reported below)
            errors.append(e)

    workers = [threading.Thread(target=work, args=(mx.new_stream(mx.cpu),)) for _ in range(2)]
    for t in workers:
        t.start()
    for t in workers:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in workers) and not errors
    expected = want.var(axis=(0, 1)) + want.sum(axis=(0, 1))
    assert len(results) == 16
    for r in results:
        np.testing.assert_allclose(r, expected, rtol=1e-4)
    assert blas._BLAS[1]() == threads_before
    assert (False,) in cuts and () in cuts  # (products and other work were cut)


@pytest.mark.parametrize("shape, count, chunk_bytes", [((37, 29), 5, 64), ((37, 29), 5, 1 << 20), ((), 3, 64),
                                                       ((6,), 1, 64)], ids=["cut", "whole", "0-d", "one"])
def test_partials_added_in_order(rng, monkeypatch, shape, count, chunk_bytes):
    # (the bits of NumPy's reduction over the stacked partials, whether the sum is cut by rows on the pool or not)
    monkeypatch.setattr(blas.threads, "CHUNK_BYTES", chunk_bytes)
    monkeypatch.setattr(blas.threads, "CORES", 4)
    cuts = record_cuts(monkeypatch)
    partials = [np.array(rng.standard_normal(shape) * 10.0 ** rng.integers(-6, 6), np.float32) for _ in range(count)]
    want = np.add.reduce(np.stack(partials))
    out = np.empty(shape, np.float32)
    assert blas.threads.add_in_order(partials, out) is out
    np.testing.assert_array_equal(out, want)
    assert cuts == ([4] if chunk_bytes == 64 and shape == (37, 29) else [])
    first = partials[0]
    assert blas.threads.add_in_order(partials) is first  # (by default, into the first partial)
    np.testing.assert_array_equal(first, want)


@pytest.mark.parametrize("cores", [2, 3, 16])
@pytest.mark.parametrize("n", [7, 100, 128])
def test_convolution_chunks_are_the_windows_over_the_cores_within_bounds(monkeypatch, cores, n):
    """A convolution's windows are cut into chunks of whole batch elements that share the cores evenly: the
    chunks the pool hands a core (runs of them in order) add up to about its share of the batch."""
    from umx.backends.cpu import kernels
    from umx.backends.xp import conv
    from umx.primitives.conv import Convolution

    monkeypatch.setattr(blas.threads, "CORES", cores)
    prim = Convolution((1, 1), (1, 1), (1, 1), (1, 1), (1, 1), 1, False)
    w = np.zeros((64, 3, 3, 32), np.float32)
    x = np.zeros((n, 16, 16, 32), np.float32)  # n * 16 * 16 positions of 288 floats (128: 37.7 MB of windows)
    per_element = 16 * 16 * 288 * 4
    budget = kernels._conv_budget(prim, x, w)
    assert kernels.CONV_BUDGET <= budget <= kernels.CONV_BUDGET_MAX
    if budget > kernels.CONV_BUDGET:
        sizes = [n1 - n0 for n0, n1, _, _ in conv._blocks(n, 16, per_element // 16, budget)]  # (the windows')
        run = -(-len(sizes) // min(len(sizes), cores))  # (blas.split's runs of chunks, one a core)
        most = max(sum(sizes[i:i + run]) for i in range(0, len(sizes), run))
        rounds = -(-n * per_element // (cores * kernels.CONV_BUDGET_MAX))
        assert most <= -(-n // cores) + rounds
    assert kernels._conv_budget(prim, x[:4], w) == kernels.CONV_BUDGET  # (1.2 MB at most: the floor)
    big = np.broadcast_to(np.zeros((1, 1, 1, 32), np.float32), (64, 512, 512, 32))  # (19 GB: the ceiling)
    assert kernels._conv_budget(prim, big, w) == kernels.CONV_BUDGET_MAX
