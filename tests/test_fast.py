"""mx.fast against float64 NumPy references: normalizations, RoPE and attention (every mask kind, grouped-query
heads, sinks, decode and prefill, the blocked path), their gradients against finite differences, their batching
rules, bad input, and the custom-kernel entry points."""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import DEVICES, assert_close
from hypothesis import given, settings
from hypothesis import strategies as st

import umx as mx
from umx.backends.xp import fast as fast_kernels
from umx.primitives import LayerNorm, Reshape, RMSNorm, RoPE, ScaledDotProductAttention

F = mx.fast
TOL = {mx.float32: (2e-5, 2e-5), mx.float16: (2e-3, 2e-3), mx.bfloat16: (1.6e-2, 1.6e-2)}
DTYPES = [mx.float32, mx.float16, mx.bfloat16]


def _in(rng, shape, dtype=mx.float32, scale=1.0):
    """A random array of ``dtype`` and the float64 values it holds."""
    a = mx.array((rng.standard_normal(shape) * scale).astype(np.float32)).astype(dtype)
    return a, np.asarray(a.astype(mx.float32)).astype(np.float64)


# -- references ---------------------------------------------------------------------------------------------
def ref_rms_norm(x, w, eps):
    y = x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps)
    return y if w is None else y * w


def ref_layer_norm(x, w, b, eps):
    y = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + eps)
    return y * (1 if w is None else w) + (0 if b is None else b)


def ref_rope(x, dims, traditional, base, scale, offset, freqs=None, inverse=False):
    t = x.shape[-2]
    half = dims // 2
    off = np.asarray(offset, dtype=np.float64).reshape(-1, *([1] * (x.ndim - 1)))
    pos = (off + np.arange(t)[:, None]) * scale  # (B or 1, 1..., T, 1)
    inv = base ** (-np.arange(half) / half) if freqs is None else 1.0 / np.asarray(freqs, np.float64)
    theta = pos * inv
    c, s = np.cos(theta), np.sin(theta) * (-1 if inverse else 1)
    out = x.copy()
    i1, i2 = (slice(0, dims, 2), slice(1, dims, 2)) if traditional else (slice(0, half), slice(half, dims))
    x1, x2 = x[..., i1], x[..., i2]
    out[..., i1] = x1 * c - x2 * s
    out[..., i2] = x1 * s + x2 * c
    return out


def ref_sdpa(q, k, v, scale, mask=None, sinks=None):
    b, n_q, t_q, _ = q.shape
    n_kv, t_k = k.shape[1], k.shape[2]
    rep = n_q // n_kv
    k, v = np.repeat(k, rep, axis=1), np.repeat(v, rep, axis=1)
    s = scale * q @ np.swapaxes(k, -1, -2)
    lowest = np.finfo(np.float32).min
    if isinstance(mask, str):
        seen = (np.arange(t_q)[:, None] + t_k - t_q) >= np.arange(t_k)[None]
        s = np.where(seen, s, lowest)
    elif mask is not None and mask.dtype == bool:
        s = np.where(mask, s, lowest)
    elif mask is not None:
        s = s + mask
    cols = [s]
    if sinks is not None:
        cols = [np.broadcast_to(np.asarray(sinks).reshape(1, n_q, 1, 1), s.shape[:-1] + (1,)), s]
    s = np.concatenate(cols, axis=-1)
    p = np.exp(s - s.max(-1, keepdims=True))
    p = p / p.sum(-1, keepdims=True)
    return p[..., s.shape[-1] - t_k:] @ v


# -- normalizations ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("with_weight", [True, False])
def test_rms_norm(device, rng, dtype, with_weight):
    x, xr = _in(rng, (3, 5, 33), dtype)
    w, wr = _in(rng, (33,), dtype) if with_weight else (None, None)
    got = F.rms_norm(x, w, 1e-5, stream=device)
    assert got.dtype == dtype
    assert_close(got, ref_rms_norm(xr, wr, 1e-5), *TOL[dtype])


@pytest.mark.parametrize("dtype", [mx.float32, mx.bfloat16])
@pytest.mark.parametrize("shape", [(1, 2048), (2, 9001), (300, 2500), (1, 1, 70), (4, 8192), (5, 16)])
def test_norms_of_long_and_few_rows(device, rng, dtype, shape):
    # (the GPU kernels keep a row's first elements in registers and read the rest again; few rows take wider
    # blocks: every split of a row between the two must give the reference)
    x, xr = _in(rng, shape, dtype)
    w, wr = _in(rng, shape[-1:], dtype)
    assert_close(F.rms_norm(x, w, 1e-5, stream=device), ref_rms_norm(xr, wr, 1e-5), *TOL[dtype])
    assert_close(F.layer_norm(x, w, w, 1e-5, stream=device), ref_layer_norm(xr, wr, wr, 1e-5), *TOL[dtype])


@pytest.mark.parametrize("dtype", [mx.float32, mx.bfloat16])
@pytest.mark.parametrize("start", [0, 3])
def test_rms_norm_of_a_view_at_any_offset(device, rng, dtype, start):
    # (on the GPU rows of a multiple of 8 are read 16 bytes at a time where their data is aligned to 16 bytes; a
    # view that starts 3 elements in is not, and takes the general kernel)
    x, xr = _in(rng, (2051,), dtype)
    w, wr = _in(rng, (2048,), dtype)
    got = F.rms_norm(mx.add(x, 0.0, stream=device)[start:start + 2048], w, 1e-5, stream=device)
    assert_close(got, ref_rms_norm(xr[start:start + 2048], wr, 1e-5), *TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("params", ["wb", "w", "b", ""])
def test_layer_norm(device, rng, dtype, params):
    x, xr = _in(rng, (4, 31), dtype, 3.0)
    w, wr = _in(rng, (31,), dtype) if "w" in params else (None, None)
    b, br = _in(rng, (31,), dtype) if "b" in params else (None, None)
    got = F.layer_norm(x + 2, w, b, 1e-4, stream=device)
    assert got.dtype == dtype
    assert_close(got, ref_layer_norm(np.asarray((x + 2).astype(mx.float32), np.float64), wr, br, 1e-4),
                 *TOL[dtype])


def test_norm_dtype_promotion(device, rng):
    x, xr = _in(rng, (2, 8), mx.float16)
    w, wr = _in(rng, (8,))
    assert F.rms_norm(x, w, 1e-5, stream=device).dtype == mx.float32
    assert F.layer_norm(x, None, w, 1e-5, stream=device).dtype == mx.float32
    xd = mx.array(rng.standard_normal((2, 8))).astype(mx.float64)
    got = F.rms_norm(xd, None, 1e-6, stream=mx.cpu)  # float64 runs on the CPU (as MLX's float64)
    assert got.dtype == mx.float64
    np.testing.assert_allclose(np.asarray(got), ref_rms_norm(np.asarray(xd), None, 1e-6), rtol=1e-12)


def test_norms_in_blocks(device, rng, monkeypatch):
    # rows split across many blocks give the same values as one block
    monkeypatch.setattr(fast_kernels, "_BLOCK", 64)
    x, xr = _in(rng, (37, 20))
    w, wr = _in(rng, (20,))
    assert_close(F.rms_norm(x, w, 1e-5, stream=device), ref_rms_norm(xr, wr, 1e-5))
    assert_close(F.layer_norm(x, w, w, 1e-5, stream=device), ref_layer_norm(xr, wr, wr, 1e-5), 1e-4, 1e-4)


def test_cpu_norms_run_their_blocks_on_the_cores_with_the_serial_bits(rng, monkeypatch):
    from umx.runtime import threads

    monkeypatch.setattr(threads, "CORES", 3)
    monkeypatch.setattr(fast_kernels, "_BLOCK", 4096)
    cuts = []
    real = threads.split
    monkeypatch.setattr(threads, "split", lambda fn, n: cuts.append(n) or real(fn, n))
    x = rng.standard_normal((997, 40)).astype(np.float32)  # (10 blocks of rows, the last one short)
    w, b = (rng.standard_normal(40).astype(np.float32) for _ in range(2))
    got = F.layer_norm(mx.array(x), mx.array(w), mx.array(b), 1e-5, stream=mx.cpu)
    want = fast_kernels.layer_norm(np, LayerNorm(1e-5, True, True), x, w, b)
    np.testing.assert_array_equal(np.asarray(got), want)
    got = F.rms_norm(mx.array(x), mx.array(w), 1e-5, stream=mx.cpu)
    np.testing.assert_array_equal(np.asarray(got), fast_kernels.rms_norm(np, RMSNorm(1e-5, True), x, w))
    assert cuts == [10, 10]  # (each ran its blocks at once)


@settings(max_examples=25, deadline=None, derandomize=True)
@given(shape=st.lists(st.integers(1, 6), min_size=1, max_size=4).map(tuple), eps=st.sampled_from([1e-5, 1e-2]))
def test_norms_hypothesis(shape, eps):
    rng = np.random.default_rng(len(shape))
    x, xr = _in(rng, shape)
    w, wr = _in(rng, shape[-1:])
    for dev in DEVICES:
        assert_close(F.rms_norm(x, w, eps, stream=dev), ref_rms_norm(xr, wr, eps), 1e-4, 1e-5)
        assert_close(F.layer_norm(x, w, w, eps, stream=dev), ref_layer_norm(xr, wr, wr, eps), 1e-4, 1e-4)


# -- RoPE ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("traditional", [False, True])
@pytest.mark.parametrize("dims", [8, 6])
@pytest.mark.parametrize("offset", [0, 5, "scalar", "vector"])
def test_rope(device, rng, traditional, dims, offset):
    x, xr = _in(rng, (3, 2, 7, 8))
    off = {"scalar": mx.array(4), "vector": mx.array([0, 3, 11])}.get(offset, offset)
    ref_off = np.asarray(off) if isinstance(off, mx.array) else off
    got = F.rope(x, dims, traditional=traditional, base=500.0, scale=0.75, offset=off, stream=device)
    assert_close(got, ref_rope(xr, dims, traditional, 500.0, 0.75, ref_off), 2e-5, 2e-5, dtype=mx.float32)


@pytest.mark.parametrize("dtype", [mx.float32, mx.bfloat16])
def test_rope_of_views(device, rng, dtype):
    # heads moved before positions (as attention does), a sliced and a reversed view, more than four axes: the
    # GPU kernel reads views through their strides
    x, xr = _in(rng, (2, 9, 3, 16), dtype)
    views = [(x.transpose(0, 2, 1, 3), xr.transpose(0, 2, 1, 3)), (x[:, 1:8:2], xr[:, 1:8:2]),
             (x[::-1, :, ::-1], xr[::-1, :, ::-1]), (x.reshape(2, 3, 3, 3, 16).transpose(0, 2, 1, 3, 4),
                                                     xr.reshape(2, 3, 3, 3, 16).transpose(0, 2, 1, 3, 4))]
    for v, vr in views:
        for off in (3, mx.array([1, 6])):
            got = F.rope(v, 16, traditional=False, base=1000.0, scale=1.0, offset=off, stream=device)
            want = ref_rope(vr, 16, False, 1000.0, 1.0, np.asarray(off) if isinstance(off, mx.array) else off)
            assert_close(got, want, *TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
def test_rope_freqs_and_dtypes(device, rng, dtype):
    x, xr = _in(rng, (2, 4, 8), dtype)
    freqs = mx.array(rng.uniform(0.5, 3.0, (4,)).astype(np.float32))
    got = F.rope(x, 8, traditional=False, base=None, scale=1.0, offset=2, freqs=freqs, stream=device)
    assert got.dtype == dtype
    assert_close(got, ref_rope(xr, 8, False, None, 1.0, 2, np.asarray(freqs)), *TOL[dtype])


def test_rope_large_positions_in_float32(device, rng):
    # angles come from float32 positions whatever the input's dtype: bfloat16 input stays within its rounding
    x, xr = _in(rng, (1, 1, 64, 16), mx.bfloat16)
    got = F.rope(x, 16, traditional=False, base=10000.0, scale=1.0, offset=4000, stream=device)
    assert_close(got, ref_rope(xr, 16, False, 10000.0, 1.0, 4000), 2e-2, 2e-2)


def test_rope_in_blocks(rng, monkeypatch):
    monkeypatch.setattr(fast_kernels, "_BLOCK", 50)
    x, xr = _in(rng, (4, 3, 5, 8))
    off = mx.array([1, 2, 3, 4])
    got = F.rope(x, 8, traditional=True, base=100.0, scale=1.0, offset=off)
    assert_close(got, ref_rope(xr, 8, True, 100.0, 1.0, np.array([1, 2, 3, 4])))


@settings(max_examples=25, deadline=None, derandomize=True)
@given(b=st.integers(1, 3), heads=st.lists(st.integers(1, 3), max_size=2), t=st.integers(1, 6),
       half=st.integers(1, 4), extra=st.integers(0, 3), traditional=st.booleans(), offset=st.integers(0, 50))
def test_rope_hypothesis(b, heads, t, half, extra, traditional, offset):
    rng = np.random.default_rng(t)
    shape = (b, *heads, t, 2 * half + extra)
    x, xr = _in(rng, shape)
    for dev in DEVICES:
        got = F.rope(x, 2 * half, traditional=traditional, base=1000.0, scale=1.5, offset=offset, stream=dev)
        assert_close(got, ref_rope(xr, 2 * half, traditional, 1000.0, 1.5, offset), 1e-4, 1e-4)


# -- attention ------------------------------------------------------------------------------------------------
MASKS = [None, "causal", "bool", "additive", "bool_heads", "additive_row"]


def _mask(rng, kind, b, n_q, t_q, t_k):
    if kind in (None, "causal"):
        return kind, kind
    if kind == "bool":
        m = rng.uniform(size=(b, 1, t_q, t_k)) < 0.7
        m[..., 0] = True
        return mx.array(m), m
    if kind == "bool_heads":
        m = rng.uniform(size=(n_q, t_q, t_k)) < 0.6
        return mx.array(m), m
    if kind == "additive_row":
        m = rng.standard_normal((t_k,)).astype(np.float32)
        return mx.array(m), m.astype(np.float64)
    m = rng.standard_normal((b, n_q, t_q, t_k)).astype(np.float32)
    return mx.array(m), m.astype(np.float64)


def _sdpa_case(rng, mask, b, n_q, n_kv, t_q, t_k, d, d_v, dtype=mx.float32) -> tuple:
    """``(q, k, v, mask, sinks)`` and their NumPy references, for a mask kind of ``MASKS``."""
    q, qr = _in(rng, (b, n_q, t_q, d), dtype)
    k, kr = _in(rng, (b, n_kv, t_k, d), dtype)
    v, vr = _in(rng, (b, n_kv, t_k, d_v), dtype)
    m, mr = _mask(rng, mask, b, n_q, t_q, t_k)
    if isinstance(m, mx.array) and m.dtype == mx.float32 and dtype != mx.float32:  # (an additive mask: q's type)
        m = m.astype(dtype)
        mr = np.asarray(m.astype(mx.float32)).astype(np.float64)
    sinks, sr = _in(rng, (n_q,), dtype)
    return (q, k, v, m, sinks), (qr, kr, vr, mr, sr)


@pytest.mark.parametrize("mask", MASKS)
@pytest.mark.parametrize("heads", [(4, 4), (4, 2), (6, 1)])
@pytest.mark.parametrize("t_q", [1, 5])
def test_sdpa(device, rng, mask, heads, t_q):
    n_q, n_kv = heads
    b, t_k, d = 2, 9, 8
    q, qr = _in(rng, (b, n_q, t_q, d))
    k, kr = _in(rng, (b, n_kv, t_k, d))
    v, vr = _in(rng, (b, n_kv, t_k, 6))
    m, mr = _mask(rng, mask, b, n_q, t_q, t_k)
    got = F.scaled_dot_product_attention(q, k, v, scale=0.4, mask=m, stream=device)
    assert_close(got, ref_sdpa(qr, kr, vr, 0.4, mr), 1e-5, 1e-5, dtype=mx.float32)


@pytest.mark.parametrize("dtype", DTYPES)
def test_sdpa_sinks_and_dtypes(device, rng, dtype):
    q, qr = _in(rng, (1, 4, 3, 8), dtype)
    k, kr = _in(rng, (1, 2, 10, 8), dtype)
    v, vr = _in(rng, (1, 2, 10, 8), dtype)
    sinks, sr = _in(rng, (4,), dtype, 3.0)
    got = F.scaled_dot_product_attention(q, k, v, scale=0.35, mask="causal", sinks=sinks, stream=device)
    assert got.dtype == dtype
    assert_close(got, ref_sdpa(qr, kr, vr, 0.35, "causal", sr), *TOL[dtype])


def test_sdpa_causal_longer_query_and_fully_masked_rows(device, rng):
    # causal masks align at the lower right; rows with no key left (and an all-False mask) average the values
    q, qr = _in(rng, (1, 2, 6, 4))
    k, kr = _in(rng, (1, 2, 4, 4))
    v, vr = _in(rng, (1, 2, 4, 4))
    got = np.asarray(F.scaled_dot_product_attention(q, k, v, scale=1.0, mask="causal", stream=device))
    np.testing.assert_allclose(got, ref_sdpa(qr, kr, vr, 1.0, "causal"), 1e-5, 1e-5)
    np.testing.assert_allclose(got[:, :, 0], vr.mean(axis=2), 1e-5, 1e-5)
    none = F.scaled_dot_product_attention(q, k, v, scale=1.0, mask=mx.array(False), stream=device)
    assert_close(none, np.broadcast_to(vr.mean(axis=2, keepdims=True), (1, 2, 6, 4)), 1e-5, 1e-5)


@pytest.mark.parametrize("mask", MASKS)
def test_sdpa_in_blocks(rng, monkeypatch, mask):
    # a tiny score budget splits queries, heads and batch entries into many blocks
    monkeypatch.setattr(fast_kernels, "_SCORES", 40)
    (q, k, v, m, sinks), (qr, kr, vr, mr, sr) = _sdpa_case(rng, mask, 3, 4, 2, 7, 10, 8, 8)
    got = F.scaled_dot_product_attention(q, k, v, scale=0.3, mask=m, sinks=sinks)
    assert_close(got, ref_sdpa(qr, kr, vr, 0.3, mr, sr), 1e-5, 1e-5)  # (evaluated here, in blocks)
    monkeypatch.setattr(fast_kernels, "_SCORES", 1 << 30)
    assert_close(F.scaled_dot_product_attention(q, k, v, scale=0.3, mask=m, sinks=sinks), np.asarray(got))


@pytest.mark.parametrize("mask", MASKS)
@pytest.mark.parametrize("t_k", [300, 1500])
def test_sdpa_few_queries_over_many_keys(device, rng, mask, t_k):
    # (a decode step: on the GPU the keys split in chunks, one block each, merged by a second kernel; a second
    # call agrees bit for bit)
    (q, k, v, m, sinks), (qr, kr, vr, mr, sr) = _sdpa_case(rng, mask, 2, 8, 2, 1, t_k, 64, 48)
    got = F.scaled_dot_product_attention(q, k, v, scale=0.2, mask=m, sinks=sinks, stream=device)
    assert_close(got, ref_sdpa(qr, kr, vr, 0.2, mr, sr), 1e-5, 1e-5)
    again = F.scaled_dot_product_attention(q, k, v, scale=0.2, mask=m, sinks=sinks, stream=device)
    np.testing.assert_array_equal(np.asarray(again), np.asarray(got))


@pytest.mark.parametrize("mask", MASKS)
def test_sdpa_decode_step_in_bfloat16(device, rng, mask):
    # (a 1B Llama's decode step: 32 query heads over 8 key heads, 128 features, bfloat16; on the GPU each query
    # row's keys split in chunks, one block each, and the chunks merge)
    (q, k, v, m, sinks), (qr, kr, vr, mr, sr) = _sdpa_case(rng, mask, 1, 32, 8, 1, 700, 128, 128, mx.bfloat16)
    got = F.scaled_dot_product_attention(q, k, v, scale=0.09, mask=m, sinks=sinks, stream=device)
    assert_close(got, ref_sdpa(qr, kr, vr, 0.09, mr, sr), *TOL[mx.bfloat16])


@pytest.mark.skipif(not mx.is_available(mx.gpu), reason="the GPU kernel's merge of chunks")
@pytest.mark.parametrize("dtype", [mx.float32, mx.bfloat16])
def test_sdpa_decode_chunks_merged_by_their_last_block_in_replays(rng, dtype, monkeypatch):
    # (a decode step's grouped kernel: the last block of a key head's chunks merges them, counted on the stream's
    # counters, which it resets: every call and every replay of a compiled step must find them at zero; the merge
    # by a second kernel gives the same values within float32's rounding)
    from umx.backends.cuda import fast as cuda_fast

    counted = []
    counters = cuda_fast._counters
    monkeypatch.setattr(cuda_fast, "_counters", lambda groups: counted.append(counters(groups)) or counted[-1])
    (q, k, v, m, sinks), (qr, kr, vr, mr, sr) = _sdpa_case(rng, "bool", 2, 8, 2, 1, 700, 64, 64, dtype)
    step = mx.compile(lambda q, k, v: F.scaled_dot_product_attention(q, k, v, scale=0.125, mask=m, sinks=sinks))
    for i in range(4):
        qi = q * (1 + i / 4)
        want = ref_sdpa(qr * (1 + i / 4), kr, vr, 0.125, mr, sr)
        got = F.scaled_dot_product_attention(qi, k, v, scale=0.125, mask=m, sinks=sinks, stream=mx.gpu)
        assert_close(got, want, *TOL[dtype])
        assert_close(step(qi, k, v), want, *TOL[dtype])
        np.testing.assert_array_equal(np.asarray(step(qi, k, v)), np.asarray(got))
    assert any(counted)  # (the merge by the last block ran)
    monkeypatch.setattr(cuda_fast, "MERGE", False)
    apart = F.scaled_dot_product_attention(q * 1.75, k, v, scale=0.125, mask=m, sinks=sinks, stream=mx.gpu)
    assert_close(apart, np.asarray(got).astype(np.float64), *TOL[dtype])


@pytest.mark.parametrize("mask", MASKS)
@pytest.mark.parametrize("parts", [False, True])
def test_sdpa_many_queries_in_bfloat16(device, rng, mask, parts, monkeypatch):
    # (a prompt: on the GPU two tensor-core products of the bfloat16 data around a float32 softmax whose weights
    # are rounded to bfloat16; with ``parts``, a small score budget takes the queries a few at a time)
    if parts:
        if device != mx.gpu:
            pytest.skip("the score budget is the GPU kernel's")
        from umx.backends.cuda import fast as cuda_fast

        monkeypatch.setattr(cuda_fast, "SCORES_BYTES", 5000)
    (q, k, v, m, sinks), (qr, kr, vr, mr, sr) = _sdpa_case(rng, mask, 1, 8, 2, 40, 50, 64, 48, mx.bfloat16)
    got = F.scaled_dot_product_attention(q, k, v, scale=0.2, mask=m, sinks=sinks, stream=device)
    assert got.dtype == mx.bfloat16
    assert_close(got, ref_sdpa(qr, kr, vr, 0.2, mr, sr), *TOL[mx.bfloat16])


@pytest.mark.parametrize("t_k", [5, 256, 300, 2049, 9000])
@pytest.mark.parametrize("dtype", [mx.float32, mx.bfloat16])
def test_sdpa_many_queries_over_keys_of_every_length(device, rng, t_k, dtype):
    # (on the GPU, the products' softmax takes a row by a warp (up to 256 keys), by a block, and past what a block
    # keeps in registers (8192))
    for mask in MASKS:
        (q, k, v, m, sinks), (qr, kr, vr, mr, sr) = _sdpa_case(rng, mask, 1, 4, 2, 17, t_k, 16, 8, dtype)
        got = F.scaled_dot_product_attention(q, k, v, scale=0.25, mask=m, sinks=sinks, stream=device)
        assert got.dtype == dtype
        assert_close(got, ref_sdpa(qr, kr, vr, 0.25, mr, sr), *TOL[dtype])


def test_sdpa_strided_inputs(device, rng):
    q, qr = _in(rng, (2, 5, 4, 8))  # (B, T, N, D) seen as (B, N, T, D)
    k, kr = _in(rng, (2, 6, 2, 8))
    v, vr = _in(rng, (2, 6, 2, 8))
    sw = lambda a: mx.swapaxes(a, 1, 2)  # noqa: E731
    got = F.scaled_dot_product_attention(sw(q), sw(k), sw(v), scale=0.5, mask="causal", stream=device)
    t = lambda a: np.swapaxes(a, 1, 2)  # noqa: E731
    assert_close(got, ref_sdpa(t(qr), t(kr), t(vr), 0.5, "causal"), 1e-5, 1e-5)


@settings(max_examples=30, deadline=None, derandomize=True)
@given(b=st.integers(1, 2), n_kv=st.integers(1, 3), rep=st.integers(1, 3), t_q=st.integers(1, 6),
       t_k=st.integers(1, 8), d=st.integers(1, 6), mask=st.sampled_from(MASKS), sinks=st.booleans())
def test_sdpa_hypothesis(b, n_kv, rep, t_q, t_k, d, mask, sinks):
    rng = np.random.default_rng(t_q * 10 + t_k)
    n_q = n_kv * rep
    q, qr = _in(rng, (b, n_q, t_q, d))
    k, kr = _in(rng, (b, n_kv, t_k, d))
    v, vr = _in(rng, (b, n_kv, t_k, d))
    m, mr = _mask(rng, mask, b, n_q, t_q, t_k)
    s, sr = _in(rng, (n_q,)) if sinks else (None, None)
    for dev in DEVICES:
        got = F.scaled_dot_product_attention(q, k, v, scale=1 / math.sqrt(d), mask=m, sinks=s, stream=dev)
        assert_close(got, ref_sdpa(qr, kr, vr, 1 / math.sqrt(d), mr, sr), 1e-5, 1e-5)


@settings(max_examples=25, deadline=None, derandomize=True)
@given(b=st.integers(1, 2), n_kv=st.integers(1, 3), rep=st.sampled_from([1, 2, 4, 8]), t_q=st.integers(1, 2),
       t_k=st.integers(1, 400), d=st.sampled_from([8, 16, 40, 64, 128]), d_v=st.sampled_from([8, 24, 64, 128]),
       mask=st.sampled_from(MASKS), sinks=st.booleans(), dtype=st.sampled_from([mx.float32, mx.bfloat16]))
def test_sdpa_decode_shapes_hypothesis(b, n_kv, rep, t_q, t_k, d, d_v, mask, sinks, dtype):
    # (a decode step's shapes: on the GPU, a key head's few query rows take one block together, the keys and
    # values copied to shared memory by 16-byte loads, chunks of any length merged)
    rng = np.random.default_rng(t_k * 7 + d + d_v)
    (q, k, v, m, s), (qr, kr, vr, mr, sr) = _sdpa_case(rng, mask, b, n_kv * rep, n_kv, t_q, t_k, d, d_v, dtype)
    s, sr = (s, sr) if sinks else (None, None)
    for dev in DEVICES:
        got = F.scaled_dot_product_attention(q, k, v, scale=1 / math.sqrt(d), mask=m, sinks=s, stream=dev)
        assert_close(got, ref_sdpa(qr, kr, vr, 1 / math.sqrt(d), mr, sr), *TOL[dtype])


# -- gradients against finite differences -------------------------------------------------------------------------
def _check_grads(f, args: list, argnums: tuple, rng, eps=1e-6, tol=1e-6):
    """``grad`` of the scalar ``f`` against central differences along a random direction per argument (float64)."""
    grads = mx.grad(f, argnums=argnums)(*args)
    grads = [grads] if len(argnums) == 1 else grads  # (as in MLX, one argnum gives the bare gradient)
    for i, g in zip(argnums, grads):
        direction = rng.standard_normal(args[i].shape)
        plus, minus = list(args), list(args)
        plus[i] = args[i] + mx.array(eps * direction).astype(mx.float64)
        minus[i] = args[i] - mx.array(eps * direction).astype(mx.float64)
        numeric = (f(*plus).item() - f(*minus).item()) / (2 * eps)
        analytic = float(np.sum(np.asarray(g) * direction))
        assert abs(numeric - analytic) <= tol * max(1.0, abs(numeric)), (i, numeric, analytic)


def _f64(rng, shape, scale=1.0):
    return mx.array(rng.standard_normal(shape) * scale).astype(mx.float64)


def ref_norm_grads(x, w, g, eps, centered):
    """A normalization's gradients in float64: ``dx`` and the weight's (the sum over rows of ``g * xhat``)."""
    c = x - x.mean(-1, keepdims=True) if centered else x
    r = 1 / np.sqrt((c * c).mean(-1, keepdims=True) + eps)
    xhat = c * r
    gw = g * w
    inner = gw - xhat * (gw * xhat).mean(-1, keepdims=True)
    if centered:
        inner = inner - gw.mean(-1, keepdims=True)
    return r * inner, (g * xhat).reshape(-1, x.shape[-1]).sum(0)


@pytest.mark.parametrize("dtype", [mx.float32, mx.bfloat16])
@pytest.mark.parametrize("shape", [(3, 7), (2, 64, 512), (5, 3000)])
@pytest.mark.parametrize("layer", [False, True])
def test_norm_gradients_match_float64(on, rng, dtype, shape, layer):
    # (one NormVJP node: on the GPU a block a row, its elements kept in registers up to a point, read again past
    # it (3000), a few rows or many; the weight's gradient its second half summed over the rows)
    x, xr = _in(rng, shape, dtype, 2.0)
    w, wr = _in(rng, shape[-1:], dtype)
    g, gr = _in(rng, shape, dtype)
    x, xr = x + 1, xr + 1  # (a mean away from zero: the centered norm must remove it)
    if layer:
        _, (dx, dw) = mx.vjp(lambda x, w: F.layer_norm(x, w, None, 1e-5), [x, w], [g])
    else:
        _, (dx, dw) = mx.vjp(lambda x, w: F.rms_norm(x, w, 1e-5), [x, w], [g])
    want_dx, want_dw = ref_norm_grads(xr, wr, gr, 1e-5, layer)
    rtol, atol = (2e-4, 2e-4) if dtype == mx.float32 else (2e-2, 2e-2)
    assert dx.dtype == dtype and dw.dtype == dtype
    assert_close(dx, want_dx, rtol, atol)
    assert_close(dw.astype(mx.float32), want_dw, rtol, atol * np.sqrt(xr.size / shape[-1]))
    _, (dx_only,) = mx.vjp(lambda x: F.layer_norm(x, w, None, 1e-5) if layer else F.rms_norm(x, w, 1e-5), [x], [g])
    assert_close(dx_only, want_dx, rtol, atol)  # (no weight rows asked for: dx alone)


@pytest.mark.parametrize("dtype", [mx.float32, mx.bfloat16])
@pytest.mark.parametrize("shape", [(4, 5), (3, 16, 256), (2, 10000)])
def test_softmax_gradient_matches_float64(on, rng, dtype, shape):
    # (one SoftmaxVJP node: on the GPU a warp a row or a block a row, elements kept in registers up to a point)
    x, xr = _in(rng, shape, dtype, 3.0)
    c, cr = _in(rng, shape, dtype)
    _, (dx,) = mx.vjp(lambda x: mx.softmax(x, axis=-1), [x], [c])
    y = np.asarray(mx.softmax(x, axis=-1).astype(mx.float32), np.float64)
    want = y * (cr - (cr * y).sum(-1, keepdims=True))
    assert dx.dtype == dtype
    rtol, atol = (1e-5, 1e-6) if dtype == mx.float32 else (2e-2, 2e-3 * 3 / np.sqrt(shape[-1]))
    assert_close(dx, want, rtol, atol)
    _, (d0,) = mx.vjp(lambda x: mx.softmax(x, axis=0), [x], [c])  # (another axis: the shared kernel)
    y0 = np.asarray(mx.softmax(x, axis=0).astype(mx.float32), np.float64)
    assert_close(d0, y0 * (cr - (cr * y0).sum(0, keepdims=True)), rtol, atol)


def test_norm_grads(rng):
    x, w, b, y = _f64(rng, (3, 7)), _f64(rng, (7,)), _f64(rng, (7,)), _f64(rng, (3, 7))
    _check_grads(lambda x, w: (F.rms_norm(x, w, 1e-5) * y).sum(), [x, w], (0, 1), rng)
    _check_grads(lambda x, w, b: (F.layer_norm(x, w, b, 1e-5) * y).sum(), [x, w, b], (0, 1, 2), rng)
    _check_grads(lambda x: (F.layer_norm(x, None, None, 1e-5) * y).sum(), [x], (0,), rng)


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
@pytest.mark.parametrize("shape", [(7,), (2, 3, 7)])
def test_norm_vjps_in_closed_form_match_the_plain_op_computation(rng, dtype, shape):
    """The normalizations' vjps (closed form) give what differentiating ``umx.fast``'s plain-op computation gives,
    with and without weight and bias, in every float dtype, on one row and on a batch of rows."""
    from umx import fast
    from umx.transforms._rules import composed

    dt = getattr(mx, dtype)
    x = mx.array(rng.standard_normal(shape).astype(np.float32)).astype(dt)
    w = mx.array(rng.standard_normal(7).astype(np.float32)).astype(dt)
    b = mx.array(rng.standard_normal(7).astype(np.float32)).astype(dt)
    c = mx.array(rng.standard_normal(shape).astype(np.float32)).astype(dt)
    cases = [(F.rms_norm(x, w, 1e-5), [x, w], fast._composed_rms_norm),
             (F.rms_norm(x, None, 1e-5), [x], fast._composed_rms_norm),
             (F.layer_norm(x, w, b, 1e-5), [x, w, b], fast._composed_layer_norm),
             (F.layer_norm(x, w, None, 1e-5), [x, w], fast._composed_layer_norm),
             (F.layer_norm(x, None, None, 1e-5), [x], fast._composed_layer_norm)]
    tol = 1e-5 if dtype == "float32" else 2e-2
    for y, primals, plain in cases:
        prim = y._prim
        got = prim.vjp(primals, [c], [y])
        want = composed(plain)["vjp"](prim, primals, [c], [y])
        for g, h, p in zip(got, want, primals, strict=True):
            assert g.dtype == p.dtype and g.shape == p.shape
            np.testing.assert_allclose(np.asarray(g.astype(mx.float32)), np.asarray(h.astype(mx.float32)),
                                       rtol=tol, atol=tol)


def test_norm_second_order(rng):
    x, w, y = _f64(rng, (2, 6)), _f64(rng, (6,)), _f64(rng, (2, 6))

    def inner(x, w):
        gx, gw = mx.grad(lambda x, w: (F.rms_norm(x, w, 1e-5) * y).sum(), argnums=(0, 1))(x, w)
        return (gx * y).sum() + gw.sum()

    _check_grads(inner, [x, w], (0, 1), rng, tol=1e-5)


def test_rope_grads(rng):
    x, y = _f64(rng, (2, 5, 8)), _f64(rng, (2, 5, 8))
    for traditional in (False, True):
        f = lambda x: (F.rope(x, 6, traditional=traditional, base=100.0, scale=1.0, offset=3) * y).sum()  # noqa: B023,E731
        _check_grads(f, [x], (0,), rng)
    # the vjp is the opposite rotation, and the jvp the rotation itself
    _, (g,) = mx.vjp(lambda x: F.rope(x, 8, traditional=False, base=10.0, scale=1.0, offset=1), [x], [y])
    assert_close(g, ref_rope(np.asarray(y), 8, False, 10.0, 1.0, 1, inverse=True), 1e-12, 1e-12)
    _, (t,) = mx.jvp(lambda x: F.rope(x, 8, traditional=False, base=10.0, scale=1.0, offset=1), [x], [y])
    assert_close(t, ref_rope(np.asarray(y), 8, False, 10.0, 1.0, 1), 1e-12, 1e-12)


@pytest.mark.parametrize("mask", [None, "causal", "bool", "additive"])
def test_sdpa_grads(rng, mask):
    q, k, v = _f64(rng, (1, 4, 3, 5)), _f64(rng, (1, 2, 4, 5)), _f64(rng, (1, 2, 4, 5))
    m, _ = _mask(rng, mask, 1, 4, 3, 4)
    m = m.astype(mx.float64) if mask == "additive" else m
    sinks, y = _f64(rng, (4,)), _f64(rng, (1, 4, 3, 5))

    def f(q, k, v, s):
        return (F.scaled_dot_product_attention(q, k, v, scale=0.7, mask=m, sinks=s) * y).sum()

    _check_grads(f, [q, k, v, sinks], (0, 1, 2, 3), rng)


@pytest.mark.parametrize("mask", [None, "causal", "bool", "bool_heads", "additive_row", "additive"])
@pytest.mark.parametrize("heads, sinks, dtype", [((4, 4), False, "float32"), ((4, 2), True, "float32"),
                                                  ((6, 2), False, "float32"), ((4, 1), True, "bfloat16"),
                                                  ((2, 2), True, "float16")])
def test_sdpa_vjp_in_closed_form_matches_the_plain_op_computation(rng, mask, heads, sinks, dtype):
    """Attention's vjp (closed form) gives what differentiating ``umx.fast``'s plain-op computation gives: every
    mask kind (an additive mask's gradient included, summed to its shape), grouped heads, sinks, fewer queries
    than keys, values of another width, in every float dtype."""
    from umx import fast
    from umx.transforms._rules import composed

    n_q, n_kv = heads
    b, t_q, t_k, d, d_v = 2, 3, 5, 4, 6
    dt = getattr(mx, dtype)

    def make(shape):
        return mx.array(rng.standard_normal(shape).astype(np.float32)).astype(dt)

    q, k, v, c = make((b, n_q, t_q, d)), make((b, n_kv, t_k, d)), make((b, n_kv, t_k, d_v)), make((b, n_q, t_q, d_v))
    m, _ = _mask(rng, mask, b, n_q, t_q, t_k)
    if mask is not None and mask.startswith("additive"):
        m = m.astype(dt)
    s = make((n_q,)) if sinks else None
    y = F.scaled_dot_product_attention(q, k, v, scale=0.6, mask=m, sinks=s)
    primals = [q, k, v] + ([m] if isinstance(m, mx.array) else []) + ([s] if sinks else [])
    got = y._prim.vjp(primals, [c], [y])
    want = composed(fast._composed_sdpa)["vjp"](y._prim, primals, [c], [y])
    tol = 1e-5 if dtype == "float32" else 3e-2
    for g, h, p in zip(got, want, primals, strict=True):
        if p._dtype == mx.bool_:
            assert g is None
            continue
        assert g.dtype == p.dtype and g.shape == p.shape
        np.testing.assert_allclose(np.asarray(g.astype(mx.float32)), np.asarray(h.astype(mx.float32)),
                                   rtol=tol, atol=tol)


def test_sdpa_jvp(rng):
    q, k, v = _f64(rng, (1, 2, 3, 4)), _f64(rng, (1, 1, 5, 4)), _f64(rng, (1, 1, 5, 4))
    tq = _f64(rng, q.shape)
    f = lambda q: F.scaled_dot_product_attention(q, k, v, scale=0.5, mask="causal")  # noqa: E731
    _, (t,) = mx.jvp(f, [q], [tq])
    eps = 1e-6
    numeric = (np.asarray(f(q + eps * tq)) - np.asarray(f(q - eps * tq))) / (2 * eps)
    np.testing.assert_allclose(np.asarray(t), numeric, rtol=1e-6, atol=1e-8)


# -- batching rules ------------------------------------------------------------------------------------------------
def _vmapped(fn, args, prim, in_axes=0):
    """``vmap(fn)`` against the stacked per-slice results; the mapped graph ends in ``prim``'s node, but for a
    reshape (the rule ran, not vmap's loop)."""
    out = mx.vmap(fn, in_axes=in_axes)(*args)
    last = out
    while isinstance(last._prim, Reshape):
        last = last._inputs[0]
    axes = in_axes if isinstance(in_axes, (list, tuple)) else [in_axes] * len(args)
    n = next(a.shape[ax] for a, ax in zip(args, axes) if ax is not None)
    loop = mx.stack([fn(*[a if ax is None else a[i] for a, ax in zip(args, axes)]) for i in range(n)])
    assert isinstance(last._prim, prim), last._prim
    assert_close(out, np.asarray(loop), 1e-5, 1e-5)


def test_vmap_rules(rng):
    x, w = _in(rng, (3, 4, 8))[0], _in(rng, (8,))[0]
    _vmapped(lambda x: F.rms_norm(x, w, 1e-5), [x], RMSNorm)
    _vmapped(lambda x: F.layer_norm(x, w, w, 1e-5), [x], LayerNorm)
    a = _in(rng, (5, 2, 3, 6, 8))[0]
    offsets = mx.array([[1, 2], [3, 4], [0, 0], [5, 6], [7, 1]])
    _vmapped(lambda a: F.rope(a, 8, traditional=True, base=100.0, scale=1.0, offset=mx.array([2, 9])), [a], RoPE)
    _vmapped(lambda a, o: F.rope(a, 8, traditional=False, base=100.0, scale=1.0, offset=o), [a, offsets], RoPE)
    q, k, v = _in(rng, (3, 2, 4, 5, 8))[0], _in(rng, (3, 2, 2, 7, 8))[0], _in(rng, (3, 2, 2, 7, 8))[0]
    m = mx.array(rng.uniform(size=(3, 2, 1, 5, 7)) < 0.7)
    f = lambda q, k, v, m: F.scaled_dot_product_attention(q, k, v, scale=0.3, mask=m)  # noqa: E731
    _vmapped(f, [q, k, v, m], ScaledDotProductAttention)
    _vmapped(f, [q, k[0], v[0], m[0]], ScaledDotProductAttention, in_axes=(0, None, None, None))


def test_vmap_batched_norm_weights(rng):
    x, ws = _in(rng, (3, 4, 8))[0], _in(rng, (3, 8))[0]
    out = mx.vmap(lambda x, w: F.rms_norm(x, w, 1e-5))(x, ws)
    loop = mx.stack([F.rms_norm(x[i], ws[i], 1e-5) for i in range(3)])
    assert_close(out, np.asarray(loop), 1e-6, 1e-6)


# -- bad input ---------------------------------------------------------------------------------------------------
def test_bad_input_raises_at_the_call():
    x = mx.zeros((2, 3, 8))
    q = mx.zeros((1, 4, 3, 8))
    kv = mx.zeros((1, 2, 5, 8))
    bad = [
        lambda: F.rms_norm(mx.zeros((2, 8), mx.int32), None, 1e-5),
        lambda: F.rms_norm(x, mx.ones((2, 8)), 1e-5),
        lambda: F.rms_norm(x, mx.ones((7,)), 1e-5),
        lambda: F.layer_norm(x, None, mx.ones((9,)), 1e-5),
        lambda: F.rope(x[0], 8, traditional=False, base=10.0, scale=1.0, offset=0),
        lambda: F.rope(x.astype(mx.int32), 8, traditional=False, base=10.0, scale=1.0, offset=0),
        lambda: F.rope(x, 7, traditional=False, base=10.0, scale=1.0, offset=0),
        lambda: F.rope(x, 10, traditional=False, base=10.0, scale=1.0, offset=0),
        lambda: F.rope(x, 8, traditional=False, base=None, scale=1.0, offset=0),
        lambda: F.rope(x, 8, traditional=False, base=1.0, scale=1.0, offset=0, freqs=mx.ones(4)),
        lambda: F.rope(x, 8, traditional=False, base=None, scale=1.0, offset=0, freqs=mx.ones(3)),
        lambda: F.rope(x, 8, traditional=False, base=10.0, scale=1.0, offset=mx.array([1.5, 2.0])),
        lambda: F.rope(x, 8, traditional=False, base=10.0, scale=1.0, offset=mx.array([1, 2, 3])),
        lambda: F.scaled_dot_product_attention(q[0], kv[0], kv[0], scale=1.0),
        lambda: F.scaled_dot_product_attention(q, mx.zeros((1, 3, 5, 8)), mx.zeros((1, 3, 5, 8)), scale=1.0),
        lambda: F.scaled_dot_product_attention(q, kv, kv, scale=1.0, mask="diagonal"),
        lambda: F.scaled_dot_product_attention(q, kv, kv, scale=1.0, mask=mx.zeros((2, 3, 5))),
        lambda: F.scaled_dot_product_attention(q, kv, kv, scale=1.0, mask=mx.zeros((1, 1, 1, 3, 5))),
        lambda: F.scaled_dot_product_attention(q.astype(mx.float16), kv.astype(mx.float16), kv.astype(mx.float16),
                                               scale=1.0, mask=mx.zeros((3, 5))),
        lambda: F.scaled_dot_product_attention(q, kv, kv, scale=1.0, sinks=mx.zeros((5,))),
        lambda: F.scaled_dot_product_attention(q.astype(mx.int32), kv.astype(mx.int32), kv.astype(mx.int32),
                                               scale=1.0),
    ]
    for i, call in enumerate(bad):
        with pytest.raises(ValueError):
            call()
            pytest.fail(f"case {i} did not raise")


# -- against MLX ---------------------------------------------------------------------------------------------------
def test_against_mlx(rng):
    mlx = pytest.importorskip("mlx.core")
    x = rng.standard_normal((2, 3, 6, 16)).astype(np.float32)
    w = rng.standard_normal((16,)).astype(np.float32)
    pairs = [
        (F.rms_norm(mx.array(x), mx.array(w), 1e-5), mlx.fast.rms_norm(mlx.array(x), mlx.array(w), 1e-5)),
        (F.layer_norm(mx.array(x), mx.array(w), None, 1e-5),
         mlx.fast.layer_norm(mlx.array(x), mlx.array(w), None, 1e-5)),
    ]
    for trad in (False, True):
        kw = dict(traditional=trad, base=10000.0, scale=0.5, offset=3)
        pairs.append((F.rope(mx.array(x), 12, **kw), mlx.fast.rope(mlx.array(x), 12, **kw)))
    k = rng.standard_normal((2, 1, 9, 16)).astype(np.float32)
    for mask in (None, "causal"):
        pairs.append((F.scaled_dot_product_attention(mx.array(x), mx.array(k), mx.array(k), scale=0.25, mask=mask),
                      mlx.fast.scaled_dot_product_attention(mlx.array(x), mlx.array(k), mlx.array(k), scale=0.25,
                                                            mask=mask)))
    for ours, theirs in pairs:
        np.testing.assert_allclose(np.asarray(ours), np.asarray(theirs), rtol=2e-5, atol=2e-5)


# -- cross entropy and the gated delta rule ----------------------------------------------------------------------
def ref_cross_entropy(x, t):
    m = x.max(-1, keepdims=True)
    lse = np.log(np.exp(x - m).sum(-1)) + m[..., 0]
    return lse - np.take_along_axis(x, t[..., None], -1)[..., 0]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(7,), (5, 11), (2, 3, 33)], ids=str)
def test_cross_entropy(rng, device, dtype, shape):
    x, x64 = _in(rng, shape, dtype, scale=3.0)
    t = rng.integers(0, shape[-1], shape[:-1])
    got = F.cross_entropy(x + 100.0, mx.array(t), stream=device)  # (a large common offset costs nothing)
    assert got.dtype == mx.float32 and got.shape == shape[:-1]
    # (float32 accumulation for every dtype: the reference is the rounded logits' own loss)
    assert_close(got, ref_cross_entropy(np.asarray((x + 100.0).astype(mx.float32)).astype(np.float64), t),
                 1e-5, 2e-5)
    g = mx.grad(lambda a: (F.cross_entropy(a, mx.array(t), stream=device) * mx.arange(t.size).reshape(t.shape)
                           ).sum())(x.astype(mx.float32))
    p = np.exp(x64 - x64.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    onehot = np.eye(shape[-1])[t]
    assert_close(g, (p - onehot) * np.arange(t.size).reshape(t.shape)[..., None], 1e-4, 1e-5)


def test_cross_entropy_refuses_bad_input():
    x = mx.zeros((2, 3))
    for logits, targets, match in ((x, mx.array([0, 1, 2]), "shape"), (x, mx.array([0.0, 1.0]), "integer"),
                                   (mx.zeros((2, 3), mx.int32), mx.array([0, 1]), "floating"),
                                   (mx.array(1.0), mx.array(0), "at least 1 dimension"),
                                   (x, mx.array([True, False]), "integer")):
        with pytest.raises(ValueError, match=f"cross_entropy: .*{match}"):
            F.cross_entropy(logits, targets)


def ref_gated_delta(q, k, v, g, beta, state, mask):
    """The recurrence step by step in float64 NumPy: outputs and final state."""
    b, t, hk, dk = q.shape
    hv, dv = v.shape[2:]
    r = hv // hk
    q, k = np.repeat(q, r, axis=2), np.repeat(k, r, axis=2)
    s = np.zeros((b, hv, dv, dk)) if state is None else state.copy()
    ys = np.zeros((b, t, hv, dv))
    for i in range(t):
        decay = g[:, i, :, None, None] if g.ndim == 3 else g[:, i, :, None, :]
        new = s * decay
        delta = (v[:, i] - np.einsum("bhvk,bhk->bhv", new, k[:, i])) * beta[:, i, :, None]
        new = new + delta[..., None] * k[:, i, :, None, :]
        y = np.einsum("bhvk,bhk->bhv", new, q[:, i])
        if mask is not None:
            keep = mask[:, i]
            new = np.where(keep[:, None, None, None], new, s)
            y = np.where(keep[:, None, None], y, 0.0)
        s = new
        ys[:, i] = y
    return ys, s


@pytest.mark.parametrize("case", ["plain", "grouped heads", "decay per feature", "mask", "no state", "bfloat16"])
def test_gated_delta_update(rng, device, case):
    b, t, hk, dk, dv = 2, 4, 2, 8, 3
    hv = 4 if case == "grouped heads" else hk
    dtype = mx.bfloat16 if case == "bfloat16" else mx.float32
    q, q64 = _in(rng, (b, t, hk, dk), dtype, 0.5)
    k, k64 = _in(rng, (b, t, hk, dk), dtype, 0.5)
    v, v64 = _in(rng, (b, t, hv, dv), dtype)
    g64 = 1 / (1 + np.exp(-rng.standard_normal((b, t, hv) + ((dk,) if case == "decay per feature" else ()))))
    beta64 = 1 / (1 + np.exp(-rng.standard_normal((b, t, hv))))
    s64 = None if case == "no state" else rng.standard_normal((b, hv, dv, dk))
    mask = np.array([[True, False, True, False], [True] * 4]) if case == "mask" else None
    g, beta = mx.array(g64.astype(np.float32)), mx.array(beta64.astype(np.float32))
    state = None if s64 is None else mx.array(s64.astype(np.float32))
    y, s = F.gated_delta_update(q, k, v, g, beta, state, None if mask is None else mx.array(mask), stream=device)
    want_y, want_s = ref_gated_delta(q64, k64, v64, g64.astype(np.float32).astype(np.float64),
                                     beta64.astype(np.float32).astype(np.float64),
                                     None if s64 is None else s64.astype(np.float32).astype(np.float64), mask)
    assert y.dtype == dtype and y.shape == (b, t, hv, dv) and s.dtype == mx.float32 and s.shape == (b, hv, dv, dk)
    rtol, atol = TOL[dtype] if dtype != mx.float32 else (1e-5, 1e-5)
    assert_close(y, want_y, rtol, atol)
    assert_close(s, want_s, 1e-5, 1e-5)
    if mask is not None:
        assert not np.asarray(y.astype(mx.float32))[0, 1].any()  # (a skipped step's output is zero)


def test_gated_delta_update_gradients_against_finite_differences(rng, device):
    b, t, h, dk, dv = 1, 3, 1, 4, 2
    ins = [rng.standard_normal(s) * 0.5 for s in ((b, t, h, dk), (b, t, h, dk), (b, t, h, dv))]
    ins += [1 / (1 + np.exp(-rng.standard_normal((b, t, h)))) for _ in range(2)]
    ins.append(rng.standard_normal((b, h, dv, dk)))
    weights = [rng.standard_normal((b, t, h, dv)), rng.standard_normal((b, h, dv, dk))]

    def loss(*xs):
        y, s = F.gated_delta_update(*xs, stream=device)
        return (y * mx.array(weights[0].astype(np.float32))).sum() + (s * mx.array(weights[1].astype(np.float32))).sum()

    def ref_loss(xs):
        y, s = ref_gated_delta(*xs, None)
        return (y * weights[0]).sum() + (s * weights[1]).sum()

    grads = mx.grad(loss, argnums=list(range(6)))(*[mx.array(x.astype(np.float32)) for x in ins])
    eps = 1e-6
    for i, (x, g) in enumerate(zip(ins, grads)):
        want = np.zeros_like(x)
        for j in np.ndindex(x.shape):
            up, down = [a.copy() for a in ins], [a.copy() for a in ins]
            up[i][j] += eps
            down[i][j] -= eps
            want[j] = (ref_loss(up) - ref_loss(down)) / (2 * eps)
        assert_close(g, want, 2e-4, 2e-4)


def test_gated_delta_update_runs_on_the_stream_given(rng):
    s = mx.new_stream(mx.cpu)
    ins = [mx.array(rng.standard_normal(shape).astype(np.float32)) for shape in
           ((1, 3, 1, 4), (1, 3, 1, 4), (1, 3, 2, 2), (1, 3, 2), (1, 3, 2))]
    mx.eval(*ins)
    y, state = F.gated_delta_update(*ins, mask=mx.array([[True, False, True]]), stream=s)
    seen, stack = set(), [y, state]
    while stack:  # (every node the call built, its slices included, is on s)
        n = stack.pop()
        if id(n) in seen or n._prim is None:
            continue
        seen.add(id(n))
        assert n._stream is s, n._prim
        stack.extend(n._inputs)
    assert len(seen) > 30


def test_gated_delta_update_refuses_bad_input():
    q = mx.zeros((1, 2, 2, 4))
    v = mx.zeros((1, 2, 3, 5))
    g = b = mx.zeros((1, 2, 3))
    with pytest.raises(ValueError, match="gated_delta_update: the value heads"):
        F.gated_delta_update(q, q, v, g, b)
    v = mx.zeros((1, 2, 4, 5))
    with pytest.raises(ValueError, match="gated_delta_update: gamma"):
        F.gated_delta_update(q, q, v, g, mx.zeros((1, 2, 4)))
    with pytest.raises(ValueError, match="gated_delta_update: initial_state"):
        F.gated_delta_update(q, q, v, mx.zeros((1, 2, 4)), mx.zeros((1, 2, 4)), mx.zeros((1, 4, 4, 5)))
    with pytest.raises(ValueError, match="gated_delta_update: mask"):
        F.gated_delta_update(q, q, v, mx.zeros((1, 2, 4)), mx.zeros((1, 2, 4)), None, mx.zeros((1, 2)))


def test_cross_entropy_and_gated_delta_agree_with_mlx(rng):
    mlx = pytest.importorskip("mlx.core")
    if not hasattr(mlx.fast, "gated_delta_update"):
        pytest.skip("an MLX without these")
    x = rng.standard_normal((4, 9)).astype(np.float32)
    t = rng.integers(0, 9, 4)
    np.testing.assert_allclose(np.asarray(F.cross_entropy(mx.array(x), mx.array(t))),
                               np.asarray(mlx.fast.cross_entropy(mlx.array(x), mlx.array(t))), rtol=1e-6, atol=1e-6)
    ins = [rng.standard_normal(s).astype(np.float32) for s in ((2, 3, 1, 4), (2, 3, 1, 4), (2, 3, 2, 5))]
    ins += [rng.random((2, 3, 2)).astype(np.float32) for _ in range(2)]
    mask = np.array([[True, False, True], [False, True, True]])
    ours = F.gated_delta_update(*[mx.array(a) for a in ins], None, mx.array(mask))
    theirs = mlx.fast.gated_delta_update(*[mlx.array(a) for a in ins], None, mlx.array(mask))
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-5)


def test_precompiled_cuda_kernel_says_what_to_use_instead():
    with pytest.raises(NotImplementedError, match="precompiled_cuda_kernel 'k'.*cuda_kernel"):
        F.precompiled_cuda_kernel(name="k", compiled_source=b"", inputs=[], output_shapes=[(1,)],
                                  output_dtypes=[mx.float32], scalars=[], grid=(1, 1, 1), threadgroup=(1, 1, 1))


def test_metal_memory_functions_forward_with_a_warning():
    assert not mx.metal.is_available()
    with pytest.warns(DeprecationWarning, match="mx.metal.get_peak_memory is deprecated"):
        assert mx.metal.get_peak_memory() == mx.get_peak_memory()
    before = mx.set_cache_limit(1 << 20)
    try:
        with pytest.warns(DeprecationWarning):
            assert mx.metal.set_cache_limit(2 << 20) == 1 << 20
        assert mx.set_cache_limit(before) == 2 << 20
    finally:
        mx.set_cache_limit(before)
    with pytest.warns(DeprecationWarning):
        assert mx.metal.device_info() == {}
    assert mx.metal.start_capture("trace.gputrace") is None and mx.metal.stop_capture() is None


# -- custom kernels ------------------------------------------------------------------------------------------------
def test_metal_kernel_raises_when_called():
    kernel = F.metal_kernel(name="k", input_names=["a"], output_names=["o"], source="o[0] = a[0];")
    with pytest.raises(RuntimeError, match="Metal"):
        kernel(inputs=[mx.zeros(2)], grid=(1, 1, 1), threadgroup=(1, 1, 1), output_shapes=[(2,)],
               output_dtypes=[mx.float32])


def test_cuda_kernel_refuses_a_cpu_stream():
    kernel = F.cuda_kernel(name="k", input_names=["a"], output_names=["o"], source="o[0] = a[0];")
    with pytest.raises((RuntimeError, ValueError), match="cuda_kernel 'k'"):
        kernel(inputs=[mx.zeros(2)], grid=(1, 1, 1), threadgroup=(1, 1, 1), output_shapes=[(2,)],
               output_dtypes=[mx.float32], stream=mx.cpu)


_EXP = """
    auto elem = cooperative_groups::this_grid().thread_rank();
    if (elem < inp_size) {
        auto loc = elem_to_loc(elem, inp_shape.data(), inp_strides.data(), inp_ndim);
        out[elem] = exp(static_cast<float>(inp[loc])) * scale_by;
    }
"""


def test_cuda_kernel_source():
    from umx.backends.cuda.custom_kernel import source_of
    from umx.primitives import CudaKernel

    prim = CudaKernel("myexp", ("inp",), ("out",), _EXP, "", False, 0, (("scale_by", 2), ("T", mx.float16)),
                      (8, 1, 1), (4, 1, 1), (mx.bfloat16,), ((8,),), (mx.float32,), None, False)
    code, expr = source_of(prim)
    assert expr == "umx_custom_myexp<2, __half>"
    assert "template <int scale_by, typename T>" in code
    assert ("void umx_custom_myexp(const __nv_bfloat16* __restrict__ inp, const long long* inp_shape_ptr, "
            "const long long* inp_strides_ptr, const int inp_ndim, float* out)") in code


@pytest.mark.gpu
@pytest.mark.skipif(not mx.is_available(mx.gpu), reason="no CUDA GPU (CuPy and a device)")
def test_cuda_kernel_runs_on_the_gpu(rng):
    a = mx.array(rng.standard_normal((3, 6)).astype(np.float32))
    strided = mx.tile(a[::2], [4, 1])
    for contiguous in (True, False):
        source = _EXP.replace("inp_size", str(strided.size))
        kernel = F.cuda_kernel(name=f"myexp{contiguous}", input_names=["inp"], output_names=["out"], source=source,
                               ensure_row_contiguous=contiguous)
        (out,) = kernel(inputs=[strided], template=[("scale_by", 2)], grid=(strided.size, 1, 1),
                        threadgroup=(32, 1, 1), output_shapes=[strided.shape], output_dtypes=[mx.float32],
                        stream=mx.gpu)
        assert_close(out, 2 * np.exp(np.asarray(strided)), 1e-5, 1e-5)
    source = """
        auto i = cooperative_groups::this_grid().thread_rank();
        if (i < 4) { out1[i] = a[i] + static_cast<float>(b[i]) + c[0] + (flag ? n : 0); out2[i] = T(1); }
    """
    kernel = F.cuda_kernel(name="args", input_names=["a", "b", "c"], output_names=["out1", "out2"], source=source)
    out1, out2 = kernel(inputs=[mx.ones(4), mx.full((4,), 2.0, mx.bfloat16), 0.5],
                        template=[("flag", True), ("n", 3), ("T", mx.int32)], grid=(4, 1, 1),
                        threadgroup=(2, 1, 1), output_shapes=[(4,), (4,)], output_dtypes=[mx.float32, mx.int32],
                        init_value=0, stream=mx.gpu)
    assert_close(out1, np.full(4, 6.5))
    assert_close(out2, np.ones(4, np.int32))


@pytest.mark.parametrize("t_q", [1, 3, 16, 17])
@pytest.mark.parametrize("d, d_v", [(64, 64), (128, 96), (256, 256), (40, 72)])
def test_sdpa_head_sizes_and_long_caches(device, rng, t_q, d, d_v):
    # the GPU's kernel for few queries (up to 16) holds up to 256 features a row; its warps split many keys
    b, n_q, n_kv, t_k = 1, 4, 2, 300
    q, qr = _in(rng, (b, n_q, t_q, d))
    k, kr = _in(rng, (b, n_kv, t_k, d))
    v, vr = _in(rng, (b, n_kv, t_k, d_v))
    for mask in ("causal", "additive", "bool"):
        m, mr = _mask(rng, mask, b, n_q, t_q, t_k)
        got = F.scaled_dot_product_attention(q, k, v, scale=1 / math.sqrt(d), mask=m, stream=device)
        assert_close(got, ref_sdpa(qr, kr, vr, 1 / math.sqrt(d), mr), 2e-5, 2e-5, dtype=mx.float32)


@pytest.mark.parametrize("traditional", [False, True])
@pytest.mark.parametrize("inverse", [False, True])
@pytest.mark.parametrize("offset", [0, 7, 3000, "array"])
def test_rope_host_table_path_is_bit_identical(monkeypatch, rng, traditional, inverse, offset):
    # a few rows on the host turn by a cached table of angles; it must give the general path's very bits
    from umx.primitives.fast import RoPE as RoPEPrim

    for shape in [(1, 4, 1, 16), (2, 3, 5, 8)]:
        x = rng.standard_normal(shape).astype(np.float32)
        prim = RoPEPrim(shape[-1], traditional, 500.0, 0.75, None if offset == "array" else offset, inverse)
        rest = [np.array(11, np.int32)] if offset == "array" else []
        small = fast_kernels._rope_small(prim, x, rest, np.float32)
        monkeypatch.setattr(fast_kernels, "_SMALL", -1)
        general = fast_kernels._rope(np, prim, x, *rest)
        monkeypatch.undo()
        np.testing.assert_array_equal(small, general)


@pytest.mark.skipif(not mx.is_available(mx.gpu), reason="no CUDA GPU")
@pytest.mark.parametrize("mask", MASKS)
def test_sdpa_gpu_products_in_parts_with_sinks(monkeypatch, rng, mask):
    # many queries on the GPU: two products around the softmax kernel, in parts of query positions when the
    # scores would pass SCORES_BYTES (here: a few positions a part)
    from umx.backends.cuda import fast as cuda_fast

    monkeypatch.setattr(cuda_fast, "SCORES_BYTES", 4 * 2 * 6 * 23 * 5)
    (q, k, v, m, sinks), (qr, kr, vr, mr, sr) = _sdpa_case(rng, mask, 2, 6, 3, 37, 23, 16, 12)
    got = F.scaled_dot_product_attention(q, k, v, scale=0.3, mask=m, sinks=sinks, stream=mx.gpu)
    assert_close(got, ref_sdpa(qr, kr, vr, 0.3, mr, sr), 2e-5, 2e-5, dtype=mx.float32)


@pytest.mark.skipif(not mx.is_available(mx.gpu), reason="no CUDA GPU")
@pytest.mark.parametrize("mask", MASKS)
@pytest.mark.parametrize("dtype", [mx.float32, mx.bfloat16])
@pytest.mark.parametrize("pointers", [True, False])
def test_sdpa_gpu_products_read_head_split_views_in_place(monkeypatch, rng, mask, dtype, pointers):
    # many queries on the GPU over (B, T, N, D) data seen as (B, N, T, D) (MultiHeadAttention's views): with
    # ``pointers``, the products read q, k and v where they lie, through pointer arrays; else copies first
    from umx.backends.cuda import cublas

    monkeypatch.setattr(cublas, "POINTER_BATCHES", pointers)
    b, n, t_q, t_k, d = 2, 3, 37, 29, 16
    q, qr = _in(rng, (b, t_q, n, d), dtype)
    k, kr = _in(rng, (b, t_k, n, d), dtype)
    v, vr = _in(rng, (b, t_k, n, d), dtype)
    m, mr = _mask(rng, mask, b, n, t_q, t_k)
    if isinstance(m, mx.array) and m.dtype == mx.float32 and dtype != mx.float32:
        m = m.astype(dtype)
        mr = np.asarray(m.astype(mx.float32)).astype(np.float64)
    sw = lambda a: mx.swapaxes(a, 1, 2)  # noqa: E731
    t = lambda a: np.swapaxes(a, 1, 2)  # noqa: E731
    got = F.scaled_dot_product_attention(sw(q), sw(k), sw(v), scale=0.3, mask=m, stream=mx.gpu)
    assert_close(got, ref_sdpa(t(qr), t(kr), t(vr), 0.3, mr), *(TOL[dtype] if dtype != mx.float32 else (5e-5,) * 2))


@pytest.mark.skipif(not mx.is_available(mx.gpu), reason="no CUDA GPU")
@pytest.mark.parametrize("t_q", [1, 40])
def test_gpu_bfloat16_kernels_match_float32_kernels_rounded(rng, t_q):
    # bfloat16 goes through the GPU's fast kernels as its 16-bit storage: the very bits that widening to float32,
    # the float32 kernel, then rounding give; rope offsets of each integer kind, one or one per batch entry
    bf, f32 = mx.bfloat16, mx.float32

    def both(fn, *xs, dtype=bf, exact=True):
        got = fn(*xs)
        want = fn(*(x.astype(f32) if x.dtype == bf else x for x in xs)).astype(dtype)
        assert got.dtype == dtype
        if not exact:
            assert_close(got.astype(f32), np.asarray(want.astype(f32)), *TOL[bf])
            return
        bits = mx.uint16 if dtype == bf else mx.uint32
        np.testing.assert_array_equal(np.asarray(got.view(bits)), np.asarray(want.view(bits)))

    with mx.stream(mx.gpu):
        x, _ = _in(rng, (2, 3, t_q, 64), bf)
        w, _ = _in(rng, (64,), bf)
        b, _ = _in(rng, (64,), bf)
        both(lambda x, w: F.rms_norm(x, w, 1e-5), x, w)
        both(lambda x, w: F.rms_norm(x, w, 1e-5), x, w.astype(f32), dtype=f32)
        both(lambda x, w, b: F.layer_norm(x, w, b, 1e-5), x, w, b)
        for offset in (5, mx.array(9, mx.int32), mx.array(9, mx.int64), mx.array(9, mx.uint8), mx.array([3, 8])):
            both(lambda x, o=offset: F.rope(x, 64, traditional=False, base=10000.0, scale=1.0, offset=o), x)
        both(lambda x: F.rope(x, 32, traditional=True, base=500.0, scale=0.5, offset=3), x)
        (q, k, v, m, sinks), _ = _sdpa_case(rng, "additive", 2, 4, 2, t_q, 50, 64, 64)
        q, k, v = q.astype(bf), k.astype(bf), v.astype(bf)
        # (many queries: tensor-core products whose softmax weights are rounded to bfloat16, as flash attention
        # and MLX do: close to the float32 result, not its rounded bits)
        exact = t_q == 1
        both(lambda q, k, v: F.scaled_dot_product_attention(q, k, v, scale=0.125, mask="causal"), q, k, v,
             exact=exact)
        both(lambda q, k, v, m: F.scaled_dot_product_attention(q, k, v, scale=0.125, mask=m), q, k, v, m.astype(bf),
             exact=exact)
        both(lambda q, k, v, s: F.scaled_dot_product_attention(q, k, v, scale=0.125, sinks=s), q, k, v,
             sinks.astype(bf), exact=exact)
