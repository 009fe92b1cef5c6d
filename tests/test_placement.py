"""Mixed placements: data produced on one stream or device and consumed on another, compared with NumPy.

``placement`` gives (producer, consumer) streams over the CPU's and (where there is one) the GPU's default stream
and a second stream of each; GPU pairs skip without a GPU. The unified-memory promise under test: arrays have no
location, any stream may read any array, and results are as if run in program order.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
from conftest import assert_close, place

import umx as mx


def test_elementwise_chain(placement, rng):
    p, c = placement
    x = rng.standard_normal((5, 7)).astype(np.float32)
    a = mx.exp(mx.array(x), stream=p)
    b = mx.add(mx.multiply(a, 2.0, stream=c), a, stream=c)
    assert_close(b, np.exp(x) * 3, rtol=1e-5)


@pytest.mark.parametrize("dtype", [mx.float32, mx.int32, mx.bool_, mx.float16, mx.bfloat16, mx.complex64])
def test_dtypes_cross(placement, dtype, rng):
    p, c = placement
    x = (rng.standard_normal((3, 4)) * 10).astype(np.float32)
    a = mx.astype(mx.array(x), dtype, stream=p)
    b = mx.astype(a, mx.float32, stream=c)
    expect = np.real(np.asarray(mx.astype(mx.array(x), dtype, stream=mx.cpu))).astype(np.float32)
    assert_close(b, expect, rtol=0, atol=0)


@pytest.mark.parametrize("shape", [(), (0,), (0, 3), (1,), (4, 1, 3)])
def test_shapes_cross(placement, shape, rng):
    p, c = placement
    x = rng.standard_normal(shape).astype(np.float32)
    a = mx.negative(mx.array(x), stream=p)
    b = mx.sum(mx.square(a, stream=c), axis=-1 if shape else None, stream=c)
    assert_close(b, np.sum(x * x, axis=-1 if shape else None), rtol=1e-5)


def test_views_cross(placement, rng):
    """Non-contiguous results (transposes, slices, broadcasts) read on another device."""
    p, c = placement
    x = rng.standard_normal((4, 6)).astype(np.float32)
    a = mx.array(x)
    t = mx.transpose(a, stream=p)
    s = a[:, 1::2]
    bc = mx.broadcast_to(mx.reshape(a[0], (1, 6), stream=p), (3, 6), stream=p)
    got = [mx.add(t, 0.0, stream=c), mx.multiply(s, 1.0, stream=c), mx.subtract(bc, 0.0, stream=c)]
    for g, e in zip(got, [x.T, x[:, 1::2], np.broadcast_to(x[:1], (3, 6))]):
        assert_close(g, e)


def test_matmul_and_reductions_cross(placement, rng):
    p, c = placement
    a = rng.standard_normal((16, 8)).astype(np.float32)
    b = rng.standard_normal((8, 3)).astype(np.float32)
    m = mx.matmul(mx.array(a), mx.array(b), stream=p)
    out = [mx.max(m, axis=0, stream=c), mx.argmax(m, axis=1, stream=c), mx.logsumexp(m, axis=-1, stream=c),
           mx.var(m, axis=0, stream=c), mx.softmax(m, axis=1, stream=c)]
    r = a.astype(np.float64) @ b
    e = np.exp(r - r.max(1, keepdims=True))
    expect = [r.max(0), r.argmax(1), np.log(np.exp(r).sum(-1)), r.var(0), e / e.sum(1, keepdims=True)]
    for g, x in zip(out, expect):
        assert_close(g, x, rtol=1e-4, atol=1e-4)


def test_indexing_cross(placement, rng):
    p, c = placement
    x = rng.standard_normal((6, 4)).astype(np.float32)
    idx = mx.array(np.array([0, 2, 2, 5], np.int32))
    i2 = mx.add(idx, 0, stream=p)  # index array produced on the producer
    a = mx.multiply(mx.array(x), 1.0, stream=p)
    g = mx.take(a, i2, axis=0, stream=c) if hasattr(mx, "take") else a[i2]
    assert_close(g, x[[0, 2, 2, 5]])
    v = mx.ones((4, 4), stream=p)
    s = a.at[i2].add(v, stream=c) if _at_takes_stream() else a.at[i2].add(v)
    e = x.copy()
    np.add.at(e, [0, 2, 2, 5], 1.0)
    assert_close(s, e)


def _at_takes_stream() -> bool:
    import inspect

    return "stream" in inspect.signature(mx.ArrayAt.add).parameters


def test_siblings_cross(placement, rng):
    p, c = placement
    x = rng.standard_normal((6, 2)).astype(np.float32)
    parts = mx.split(mx.multiply(mx.array(x), 2.0, stream=p), 3, axis=0, stream=p)
    joined = mx.concatenate([mx.add(q, 1.0, stream=c) for q in parts], axis=0, stream=c)
    assert_close(joined, x * 2 + 1)


def test_random_same_on_every_placement(placement):
    p, c = placement
    k = mx.random.key(7)
    u_p = mx.random.uniform(shape=(64,), key=k, stream=p)
    u_c = mx.random.uniform(shape=(64,), key=k, stream=c)
    assert_close(mx.subtract(u_p, u_c, stream=c), np.zeros(64, np.float32), atol=0)


def test_diamond_three_streams(placement, rng):
    p, c = placement
    third = place("cpu2") if "cpu2" not in (repr(p), repr(c)) else place("cpu")
    x = rng.standard_normal((32,)).astype(np.float32)
    a = mx.sin(mx.array(x), stream=p)
    b1 = mx.multiply(a, 2.0, stream=c)
    b2 = mx.add(a, 1.0, stream=third)
    d = mx.add(b1, b2, stream=p)
    e = mx.multiply(d, b1, stream=c)
    s = np.sin(x)
    assert_close(e, (2 * s + s + 1) * (2 * s), rtol=1e-5)


def test_long_chain_alternating(placement, rng):
    p, c = placement
    x = rng.standard_normal((128,)).astype(np.float32)
    a = mx.array(x)
    expect = x.astype(np.float64)
    for i in range(20):
        a = mx.add(a, 1.0, stream=p if i % 2 else c)
        a = mx.multiply(a, 0.5, stream=c if i % 3 else p)
        expect = (expect + 1.0) * 0.5
    assert_close(a, expect, rtol=1e-5)


def test_async_eval_then_other_device(placement, rng):
    """A result scheduled in one eval and read on another device in a later eval (no planner hint)."""
    p, c = placement
    x = rng.standard_normal((1000,)).astype(np.float32)
    a = mx.exp(mx.array(x), stream=p)
    a = mx.sqrt(a, stream=p)
    mx.async_eval(a)
    b = mx.sum(a, stream=c)
    assert_close(b, np.sqrt(np.exp(x.astype(np.float64))).sum(), rtol=1e-4)


def test_large_round_trip(placement, rng):
    """Big enough for chunked host-to-device copies; copies cached: a second reader copies nothing."""
    p, c = placement
    x = rng.standard_normal((3, 1 << 20)).astype(np.float32)
    a = mx.multiply(mx.array(x), 2.0, stream=p)
    b = mx.add(a, 1.0, stream=c)
    b2 = mx.subtract(a, 1.0, stream=c)
    mx.eval(b, b2)
    assert_close(b, x * 2 + 1)
    assert_close(b2, x * 2 - 1)


def test_copy_cached_once(placement, rng):
    p, c = placement
    a = mx.exp(mx.array(rng.standard_normal((10,)).astype(np.float32)), stream=p)
    mx.eval(a)
    first = mx.add(a, 1.0, stream=c)
    mx.eval(first)
    copies = dict(a._copies or {})
    second = mx.add(a, 2.0, stream=c)
    mx.eval(second)
    def data_ids(cs):  # a device copy is (data, event); the event is dropped once it has passed
        return {k: id(v[0] if type(v) is tuple else v) for k, v in cs.items()}

    assert data_ids(a._copies or {}) == data_ids(copies)


@pytest.mark.parametrize("device", [mx.cpu, pytest.param(mx.gpu, marks=pytest.mark.skipif(
    not mx.is_available(mx.gpu), reason="no CUDA GPU"))], ids=["cpu", "gpu"])
def test_aliases_of_host_data_share_one_copy_per_device(device, rng):
    # an optimizer's lr.astype(g.dtype), once per parameter: every alias is the same data, copied to a device once
    lr = mx.array(0.5)
    ws = [mx.array(rng.standard_normal((4,)).astype(np.float32)) for _ in range(5)]
    aliases = [lr.astype(mx.float32) for _ in ws]
    outs = [mx.multiply(a, w, stream=device) for a, w in zip(aliases, ws)]
    mx.eval(outs)
    for o, w in zip(outs, ws):
        assert_close(o, 0.5 * np.asarray(w))
    assert lr._copies is not None and all(a._copies is lr._copies for a in aliases)  # (one record of copies)
    on_device = [k for k in lr._copies if getattr(k, "type", None) is mx.gpu]
    assert len(on_device) == (device == mx.gpu)
    big = mx.array(np.zeros(1 << 16, np.float32))  # (256 KiB: each object keeps its own record, for pressure)
    assert big.astype(mx.float32)._copies is None and big._copies is None
    b = aliases[0]
    b += 1  # rebinding one alias gives it a record of its own and leaves the others alone
    assert b._copies is not lr._copies and aliases[1]._copies is lr._copies
    assert_close(b, 1.5)


def test_failure_crosses_streams(placement):
    p, c = placement
    a = mx.array(np.array([[np.nan, 0.0], [0.0, 1.0]], np.float32))
    bad = mx.linalg.eigvals(a, stream=p)  # a NaN entry: LAPACK refuses it in the kernel, on either device
    after = mx.add(bad, 1.0, stream=c)
    with pytest.raises(np.linalg.LinAlgError):
        mx.eval(after)
    ok = mx.add(mx.array([1.0]), 1.0, stream=c)  # the streams keep working
    assert_close(ok, np.array([2.0], np.float32))


def test_threads_share_streams(placement, rng):
    p, c = placement
    x = rng.standard_normal((64,)).astype(np.float32)
    base = mx.exp(mx.array(x), stream=p)
    out = [None] * 4
    errors = []

    def work(i):
        try:
            out[i] = np.asarray(mx.multiply(mx.add(base, float(i), stream=c), 2.0, stream=p))
        except Exception as e:  # surfaced in the assertion below
            errors.append(e)

    ts = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errors
    for i in range(4):
        np.testing.assert_allclose(out[i], (np.exp(x) + i) * 2, rtol=1e-5)


def test_memory_counts_every_location(placement, rng):
    p, c = placement
    mx.synchronize()
    a = mx.multiply(mx.array(rng.standard_normal((1 << 16,)).astype(np.float32)), 2.0, stream=p)
    b = mx.add(a, 1.0, stream=c)
    mx.eval(b)
    assert mx.get_active_memory() >= b.nbytes
    assert mx.get_peak_memory() >= mx.get_active_memory() - b.nbytes
    mx.synchronize()
