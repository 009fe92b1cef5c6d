"""Quantization in MLX's packed layout: the bit packing and the codecs against NumPy references of our own and
(bit for bit) against MLX when it is importable, products against float64 references, gradients against finite
differences, batching rules, the blocked product, and bad input."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import DEVICES, assert_close
from hypothesis import given, settings
from hypothesis import strategies as st

import umx as mx
from umx.backends.xp import quantized as qk
from umx.primitives import Dequantize, QuantizedMatmul

AFFINE = [(gs, bits) for gs in (32, 64, 128) for bits in (1, 2, 3, 4, 5, 6, 8)]
FP_MODES = ["mxfp4", "mxfp8", "nvfp4"]
FP4 = np.array([0, 0.5, 1, 1.5, 2, 3, 4, 6], np.float32)


# -- NumPy references --------------------------------------------------------------------------------------------
def ref_unpack(w: np.ndarray, bits: int) -> np.ndarray:
    """Each row of uint32 words read as one little-endian bit stream of ``bits``-bit codes."""
    stream = np.unpackbits(np.ascontiguousarray(w).view(np.uint8), axis=-1, bitorder="little")
    stream = stream.reshape(w.shape[:-1] + (-1, bits))
    return (stream.astype(np.int64) << np.arange(bits)).sum(-1)


def ref_affine(w: np.ndarray, gs: int, bits: int):
    """MLX's affine quantization written out in float32: codes, scales, biases."""
    g = w.astype(np.float32).reshape(w.shape[:-1] + (-1, gs))
    hi, lo = g.max(-1), g.min(-1)
    n_bins = np.float32(2**bits - 1)
    if bits == 1:
        scale, bias = np.maximum(hi - lo, np.float32(1e-7)), lo
    else:
        delta = np.maximum((hi - lo) / n_bins, np.float32(1e-7))
        low_edge = np.abs(lo) > np.abs(hi)
        scale = np.where(low_edge, delta, -delta)
        edge = np.where(low_edge, lo, hi)
        q0 = np.rint(edge / scale)
        with np.errstate(divide="ignore", invalid="ignore"):
            scale = np.where(q0 != 0, edge / q0, scale).astype(np.float32)
        bias = np.where(q0 == 0, np.float32(0), edge)
    codes = np.clip(np.rint((g - bias[..., None]) / scale[..., None]), 0, n_bins).reshape(w.shape)
    return codes.astype(np.int64), scale.astype(np.float32), bias.astype(np.float32)


def ref_e4m3(x: np.ndarray) -> np.ndarray:
    """E4M3 values of the 256 bytes."""
    b = np.arange(256)
    e, m = (b >> 3) & 15, b & 7
    mag = np.where(e == 0, m * 2.0**-9, (1 + m / 8) * 2.0 ** (e - 7))
    mag = np.where((b & 127) == 127, np.nan, mag)
    return np.where(b >= 128, -mag, mag)[x]


def ref_dequantize(wq, scales, biases, gs, bits, mode) -> np.ndarray:
    """Float64 values of a packed matrix."""
    if mode == "affine":
        q = ref_unpack(wq, bits).astype(np.float64)
        s, b = np.repeat(scales, gs, -1).astype(np.float64), np.repeat(biases, gs, -1).astype(np.float64)
        return s * q + b
    if mode == "mxfp8":
        vals = ref_e4m3(ref_unpack(wq, 8))
    else:
        codes = ref_unpack(wq, 4)
        vals = np.where(codes >= 8, -1, 1) * FP4[codes & 7]
    s = ref_e4m3(scales) if mode == "nvfp4" else 2.0 ** (scales.astype(np.float64) - 127)
    return vals * np.repeat(s, gs, -1)


def _np(a) -> np.ndarray:
    return np.asarray(a.astype(mx.float32) if a.dtype in (mx.bfloat16, mx.float16) else a)


def _w(rng, shape, dtype=mx.float32):
    w = rng.standard_normal(shape) * np.exp(rng.standard_normal(shape[:-1] + (1,)))
    return mx.array(w.astype(np.float32)).astype(dtype)


# -- packing and the codecs ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("bits", [1, 2, 3, 4, 5, 6, 8])
def test_pack_round_trip(rng, bits):
    codes = rng.integers(0, 2**bits, (3, 2, 64)).astype(np.uint32)
    packed = qk.pack(np, codes, bits)
    assert packed.dtype == np.uint32 and packed.shape == (3, 2, 64 * bits // 32)
    np.testing.assert_array_equal(ref_unpack(packed, bits), codes)
    np.testing.assert_array_equal(qk.unpack(np, packed, bits, 64), codes.astype(np.float32))


@pytest.mark.parametrize("gs,bits", AFFINE)
def test_affine_quantize_matches_the_reference(device, rng, gs, bits):
    w = _w(rng, (6, 256))
    w = mx.concatenate([w, mx.zeros((1, 256)), mx.full((1, 256), -2.5)])  # constant groups: a minimal scale
    wq, scales, biases = mx.quantize(w, gs, bits, stream=device)
    codes, s, b = ref_affine(np.asarray(w), gs, bits)
    np.testing.assert_array_equal(ref_unpack(np.asarray(wq), bits), codes)
    np.testing.assert_array_equal(np.asarray(scales), s)
    np.testing.assert_array_equal(np.asarray(biases), b)
    # each value comes back within a step (the nudged scale may clip the far edge by up to half a step more)
    err = np.abs(np.asarray(mx.dequantize(wq, scales, biases, gs, bits, stream=device)) - np.asarray(w))
    assert (err.reshape(8, -1, gs) <= np.abs(s)[..., None] * (1 + 1e-5) + 1e-6).all()


@pytest.mark.parametrize("dtype", [mx.float32, mx.float16, mx.bfloat16])
@pytest.mark.parametrize("mode", ["affine"] + FP_MODES)
def test_dequantize_matches_the_reference(device, rng, dtype, mode):
    w = _w(rng, (4, 128), dtype)
    q = mx.quantize(w, mode=mode, stream=device)
    gs = {"affine": 64, "nvfp4": 16}.get(mode, 32)
    bits = {"mxfp8": 8}.get(mode, 4)
    got = mx.dequantize(*q, mode=mode, dtype=mx.float32, stream=device)
    parts = [_np(a) for a in q] + ([None] if mode != "affine" else [])
    want = ref_dequantize(*parts, gs, bits, mode)
    assert_close(got, want, 1e-6, 1e-6)
    if mode == "affine":  # the default result dtype is the scales'; values are computed in it
        assert mx.dequantize(*q, stream=device).dtype == dtype
    else:
        assert mx.dequantize(*q, mode=mode, stream=device).dtype == mx.bfloat16
        # codes reproduce values within half a code step at the group's scale
        assert np.all(np.abs(np.asarray(got) - _np(w)) <= 0.5 * np.abs(_np(w)).max(-1, keepdims=True))


def test_fp_codes_and_scales(device):
    # E2M1 values with their ties (which round to the smaller magnitude), and the power-of-two scale rule
    row = np.array([6, 0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5, -0.25, -0.75, -5, 5.5, 0.26, -0.0] + [0] * 18, np.float32)
    wq, s = mx.quantize(mx.array(row[None]), mode="mxfp4", stream=device)
    codes = ref_unpack(np.asarray(wq), 4)[0]
    np.testing.assert_array_equal(codes[:14], [7, 0, 1, 2, 3, 4, 5, 6, 0, 9, 14, 7, 1, 0])
    assert np.asarray(s).item() == 127  # largest magnitude 6: scale 1
    wq, s = mx.quantize(mx.array(row[None] * 1.001), mode="mxfp4", stream=device)
    assert np.asarray(s).item() == 128  # just above 6: scale 2, nothing clips
    wq, s = mx.quantize(mx.array(row[None]), mode="mxfp8", stream=device)
    assert np.asarray(s).item() == 127 - 6  # 6 / 2**-6 = 384 <= 448


def test_to_and_from_fp8(device):
    values = np.array([0.1, -0.0, 0.0, 448, 464, 1000, -1000, np.inf, np.nan, 2.0**-10, 3 * 2.0**-11, 2.0**-7,
                       240, 250, -1.5e-3], np.float32)
    codes = mx.to_fp8(mx.array(values), stream=device)
    assert codes.dtype == mx.uint8
    np.testing.assert_array_equal(np.asarray(codes),
                                  [29, 128, 0, 126, 126, 126, 254, 126, 126, 0, 1, 4, 119, 120, 129])
    all_codes = mx.arange(256).astype(mx.uint8)
    got = mx.from_fp8(all_codes, mx.float32, stream=device)
    np.testing.assert_array_equal(np.asarray(got), ref_e4m3(np.arange(256)).astype(np.float32))
    assert mx.from_fp8(all_codes, stream=device).dtype == mx.bfloat16
    finite = np.asarray(got)[np.isfinite(np.asarray(got))]  # every finite value encodes back to itself
    np.testing.assert_array_equal(np.asarray(mx.from_fp8(mx.to_fp8(mx.array(finite)), mx.float32)), finite)


def test_fp8_against_ml_dtypes(device, rng):
    ml_dtypes = pytest.importorskip("ml_dtypes")
    x = (rng.standard_normal(4096) * 10.0 ** rng.integers(-4, 3, 4096)).astype(np.float32)
    x = np.clip(x, -448, 448)  # ml_dtypes overflows to NaN where MLX saturates
    want = x.astype(ml_dtypes.float8_e4m3fn).view(np.uint8)
    np.testing.assert_array_equal(np.asarray(mx.to_fp8(mx.array(x), stream=device)), want)


# -- bit for bit against MLX ----------------------------------------------------------------------------------------
def _mlx_np(a):
    mlx = pytest.importorskip("mlx.core")
    return np.asarray(a.astype(mlx.float32) if a.dtype in (mlx.bfloat16, mlx.float16) else a)


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_bit_exact_with_mlx(rng, dtype):
    mlx = pytest.importorskip("mlx.core")
    w32 = np.asarray(_w(rng, (48, 256)))
    w32[3] = 0
    wm, wu = mlx.array(w32).astype(getattr(mlx, dtype)), mx.array(w32).astype(getattr(mx, dtype))
    cases = [("affine", gs, bits) for gs, bits in AFFINE] + [(m, None, None) for m in FP_MODES]
    for mode, gs, bits in cases:
        theirs = mlx.quantize(wm, gs, bits, mode=mode)
        ours = mx.quantize(wu, gs, bits, mode=mode)
        for t, o in zip(theirs, ours):
            np.testing.assert_array_equal(_np(o), _mlx_np(t), err_msg=f"quantize {mode} {gs} {bits}")
        deq_t = mlx.dequantize(*theirs, group_size=gs, bits=bits, mode=mode)
        deq_o = mx.dequantize(*ours, group_size=gs, bits=bits, mode=mode)
        assert deq_o.dtype.name == str(deq_t.dtype).split(".")[-1]
        np.testing.assert_array_equal(_np(deq_o), _mlx_np(deq_t), err_msg=f"dequantize {mode} {gs} {bits}")
    gscale = np.float32(np.abs(w32).max())
    theirs = mlx.quantize(mlx.array(w32), mode="nvfp4", global_scale=mlx.array(gscale))
    ours = mx.quantize(mx.array(w32), mode="nvfp4", global_scale=mx.array(gscale))
    for t, o in zip(theirs, ours):
        np.testing.assert_array_equal(np.asarray(o), np.asarray(t))
    x = (rng.standard_normal(2048) * 10.0 ** rng.integers(-5, 4, 2048)).astype(np.float32)
    np.testing.assert_array_equal(np.asarray(mx.to_fp8(mx.array(x))), np.asarray(mlx.to_fp8(mlx.array(x))))


# -- products ------------------------------------------------------------------------------------------------------
def _quantized(rng, shape, mode="affine", gs=None, bits=None, dtype=mx.float32):
    w = _w(rng, shape, dtype) * 0.1
    q = mx.quantize(w, gs, bits, mode=mode)
    dense = np.asarray(mx.dequantize(*q, group_size=gs, bits=bits, mode=mode, dtype=mx.float32), np.float64)
    return list(q) + ([None] if mode != "affine" else []), dense


@pytest.mark.parametrize("gs,bits", [(32, 2), (64, 4), (128, 8), (32, 3), (64, 5), (64, 6), (32, 1)])
@pytest.mark.parametrize("transpose", [True, False])
def test_quantized_matmul_affine(device, rng, gs, bits, transpose):
    (wq, s, b), dense = _quantized(rng, (96, 128) if transpose else (128, 128), gs=gs, bits=bits)
    x = rng.standard_normal((2, 5, 128)).astype(np.float32)
    got = mx.quantized_matmul(mx.array(x), wq, s, b, transpose, gs, bits, stream=device)
    want = x.astype(np.float64) @ (dense.T if transpose else dense)
    assert_close(got, want, 1e-4, 1e-4, dtype=mx.float32)


@pytest.mark.parametrize("mode", FP_MODES)
@pytest.mark.parametrize("transpose", [True, False])
@pytest.mark.parametrize("dtype", [mx.float32, mx.bfloat16])
def test_quantized_matmul_fp(device, rng, mode, transpose, dtype):
    (wq, s, _), dense = _quantized(rng, (64, 128), mode=mode)
    x = mx.array(rng.standard_normal((3, 128 if transpose else 64)).astype(np.float32)).astype(dtype)
    got = mx.quantized_matmul(x, wq, s, None, transpose, mode=mode, stream=device)
    assert got.dtype == dtype
    want = _np(x).astype(np.float64) @ (dense.T if transpose else dense)
    tol = 1e-4 if dtype == mx.float32 else 2e-2
    assert_close(got, want, tol, tol)


def test_quantized_matmul_shapes_and_dtypes(device, rng):
    (wq, s, b), dense = _quantized(rng, (3, 16, 64), gs=32, bits=4)  # a batch of matrices
    x = rng.standard_normal((2, 1, 5, 64)).astype(np.float32)
    got = mx.quantized_matmul(mx.array(x), wq, s, b, group_size=32, stream=device)
    assert_close(got, x @ np.swapaxes(dense, -1, -2), 1e-4, 1e-4)
    v = rng.standard_normal(64).astype(np.float32)  # a vector input
    got = mx.quantized_matmul(mx.array(v), wq[0], s[0], b[0], group_size=32, stream=device)
    assert got.shape == (16,)
    assert_close(got, v @ dense[0].T, 1e-4, 1e-4)
    half = mx.quantized_matmul(mx.array(x).astype(mx.float16), wq, s.astype(mx.float16), b.astype(mx.float16),
                               group_size=32, stream=device)
    assert half.dtype == mx.float16
    mixed = mx.quantized_matmul(mx.array(x).astype(mx.bfloat16), wq, s.astype(mx.float16), b.astype(mx.float16),
                                group_size=32, stream=device)
    assert mixed.dtype == mx.float32  # bfloat16 with float16 promotes to float32, as in MLX


def test_quantized_matmul_in_blocks(rng, monkeypatch):
    # the weight dequantized a few rows at a time gives what one block gives
    (wq, s, b), dense = _quantized(rng, (40, 96), gs=32, bits=3)
    x = mx.array(rng.standard_normal((7, 96)).astype(np.float32))
    xt = mx.array(rng.standard_normal((7, 40)).astype(np.float32))
    whole = [mx.quantized_matmul(x, wq, s, b, True, 32, 3), mx.quantized_matmul(xt, wq, s, b, False, 32, 3)]
    w = _w(rng, (40, 96))
    whole_q = mx.quantize(w, 32, 3)
    mx.eval(whole, whole_q)  # (before the blocks shrink: kernels run at eval)
    monkeypatch.setattr(qk, "_BLOCK", 200)
    monkeypatch.setattr(qk, "_FEW_BLOCK", 200)  # (x's 7 rows: the few-rows route)
    blocked = [mx.quantized_matmul(x, wq, s, b, True, 32, 3), mx.quantized_matmul(xt, wq, s, b, False, 32, 3)]
    for w_, b_ in zip(whole, blocked):
        assert_close(b_, np.asarray(w_), 1e-5, 1e-5)
    for w_, b_ in zip(whole_q, mx.quantize(w, 32, 3)):  # quantized a few rows at a time: the same bits
        np.testing.assert_array_equal(np.asarray(b_), np.asarray(w_))
    assert_close(whole[1], np.asarray(xt).astype(np.float64) @ dense, 1e-4, 1e-4)


@settings(max_examples=20, deadline=None, derandomize=True)
@given(m=st.integers(1, 5), n=st.integers(1, 9), groups=st.integers(1, 3), gs=st.sampled_from([32, 64]),
       bits=st.sampled_from([2, 3, 4, 6, 8]), transpose=st.booleans(), batch=st.sampled_from([(), (2,)]))
def test_quantized_matmul_hypothesis(m, n, groups, gs, bits, transpose, batch):
    rng = np.random.default_rng(m * 100 + n)
    k = groups * gs
    (wq, s, b), dense = _quantized(rng, batch + ((n, k) if transpose else (k, k)), gs=gs, bits=bits)
    x = rng.standard_normal(batch + (m, k)).astype(np.float32)
    want = x.astype(np.float64) @ (np.swapaxes(dense, -1, -2) if transpose else dense)
    for dev in DEVICES:
        got = mx.quantized_matmul(mx.array(x), wq, s, b, transpose, gs, bits, stream=dev)
        assert_close(got, want, 1e-4, 1e-4)


def _gathered_ref(x, dense, lhs, rhs, transpose):
    xf = x.reshape((-1,) + x.shape[-2:])
    wf = dense.reshape((-1,) + dense.shape[-2:])
    li, ri = np.broadcast_arrays(lhs, rhs)
    out = [xf[i] @ (wf[j].T if transpose else wf[j]) for i, j in zip(li.ravel(), ri.ravel())]
    return np.stack(out).reshape(li.shape + out[0].shape)


@pytest.mark.parametrize("mode", ["affine", "mxfp4"])
@pytest.mark.parametrize("transpose", [True, False])
def test_gather_qmm(device, rng, mode, transpose):
    gs = 32 if mode == "affine" else None
    (wq, s, b), dense = _quantized(rng, (4, 32, 64) if transpose else (4, 64, 32), mode=mode, gs=gs)
    x = rng.standard_normal((3, 2, 64)).astype(np.float32)
    lhs, rhs = np.array([[0, 2], [1, 1]]), np.array([[3], [0]])
    got = mx.gather_qmm(mx.array(x), wq, s, b, mx.array(lhs), mx.array(rhs), transpose, gs, mode=mode,
                        stream=device)
    assert_close(got, _gathered_ref(x, dense, lhs, rhs, transpose), 1e-4, 1e-4)
    only_rhs = mx.gather_qmm(mx.array(x[:1]), wq, s, b, None, mx.array([2, 0, 2]), transpose, gs, mode=mode,
                             stream=device)
    assert_close(only_rhs, _gathered_ref(x[:1], dense, np.zeros(3, int), np.array([2, 0, 2]), transpose), 1e-4, 1e-4)


def test_gather_mm(device, rng):
    a = rng.standard_normal((5, 3, 4)).astype(np.float32)
    b = rng.standard_normal((2, 3, 4, 6)).astype(np.float32)
    lhs, rhs = np.array([[4], [0], [1]]), np.array([5, 0])
    got = mx.gather_mm(mx.array(a), mx.array(b), mx.array(lhs), mx.array(rhs), stream=device)
    assert_close(got, _gathered_ref(a, b, lhs, rhs, False), 1e-5, 1e-5)
    got = mx.gather_mm(mx.array(a).astype(mx.float16), mx.array(b[0]).astype(mx.float16), None,
                       mx.array([[2], [1]]), stream=device)
    assert got.dtype == mx.float16 and got.shape == (2, 5, 3, 6)


def test_qqmm(device, rng):
    x = rng.standard_normal((3, 64)).astype(np.float32)
    w = rng.standard_normal((8, 64)).astype(np.float32)
    for mode in ("nvfp4", "mxfp8"):
        xh = mx.dequantize(*mx.quantize(mx.array(x), mode=mode), mode=mode, dtype=mx.float32)
        wq, s = mx.quantize(mx.array(w), mode=mode)
        wh = mx.dequantize(wq, s, mode=mode, dtype=mx.float32)
        want = np.asarray(xh).astype(np.float64) @ np.asarray(wh).T
        assert_close(mx.qqmm(mx.array(x), wq, s, mode=mode, stream=device), want, 1e-5, 1e-5)
        assert_close(mx.qqmm(mx.array(x), mx.array(w), mode=mode, stream=device), want, 1e-5, 1e-5)


# -- gradients ------------------------------------------------------------------------------------------------------
def _directional(f, args, i, rng, eps=1e-3):
    d = rng.standard_normal(args[i].shape).astype(np.float32)
    plus, minus = list(args), list(args)
    plus[i] = args[i] + mx.array(eps * d)
    minus[i] = args[i] - mx.array(eps * d)
    return (f(*plus).item() - f(*minus).item()) / (2 * eps), d


@pytest.mark.parametrize("transpose", [True, False])
def test_quantized_matmul_grads(rng, transpose):
    (wq, s, b), dense = _quantized(rng, (32, 64) if transpose else (64, 64), gs=32, bits=4)
    x = mx.array(rng.standard_normal((2, 3, 64)).astype(np.float32))
    y = mx.array(rng.standard_normal((2, 3, 32 if transpose else 64)).astype(np.float32))

    def f(x, s, b):
        return (mx.quantized_matmul(x, wq, s, b, transpose, 32, 4) * y).sum()

    grads = mx.grad(f, argnums=(0, 1, 2))(x, s, b)
    for i, g in enumerate(grads):
        numeric, d = _directional(f, [x, s, b], i, rng)
        assert abs(numeric - float(np.sum(np.asarray(g) * d))) <= 2e-2 * max(1.0, abs(numeric))
    # the vjp in x is the product with the other orientation, as MLX defines it
    _, (dx,) = mx.vjp(lambda x: mx.quantized_matmul(x, wq, s, b, transpose, 32, 4), [x], [y])
    assert_close(dx, np.asarray(mx.quantized_matmul(y, wq, s, b, not transpose, 32, 4)), 1e-6, 1e-6)

    # the jvp, with tangents independent of the primals
    def product(x, s, b):
        return mx.quantized_matmul(x, wq, s, b, transpose, 32, 4)

    tx, ts, tb = (rng.standard_normal(a.shape).astype(np.float32) for a in (x, s, b))
    _, (t,) = mx.jvp(lambda x: product(x, s, b), [x], [mx.array(tx)])  # in x: the float64 product with the weight
    assert_close(t, tx.astype(np.float64) @ (dense.T if transpose else dense), 1e-5, 1e-5)
    # in x, the scales and the biases at once: a central difference, exact for this bilinear function
    _, (t,) = mx.jvp(product, [x, s, b], [mx.array(tx), mx.array(ts), mx.array(tb)])
    eps = 0.5
    plus = product(*(a + mx.array(eps * d) for a, d in zip((x, s, b), (tx, ts, tb))))
    minus = product(*(a - mx.array(eps * d) for a, d in zip((x, s, b), (tx, ts, tb))))
    assert_close(t, (np.asarray(plus, np.float64) - np.asarray(minus, np.float64)) / (2 * eps), 1e-4, 1e-4)


def test_fp_scales_have_no_gradient(rng):
    (wq, s, _), _ = _quantized(rng, (32, 64), mode="mxfp4")
    x = mx.array(rng.standard_normal((2, 64)).astype(np.float32))
    with pytest.raises(ValueError, match="scales"):
        mx.grad(lambda s: mx.quantized_matmul(x, wq, s, mode="mxfp4").sum())(s)
    dx = mx.grad(lambda x: mx.quantized_matmul(x, wq, s, mode="mxfp4").sum())(x)  # the input's exists
    assert_close(dx, np.asarray(mx.quantized_matmul(mx.ones((2, 32)), wq, s, transpose=False, mode="mxfp4")))


def test_the_packed_matrix_has_no_gradient(rng):
    # (as MLX: a gradient of packed codes means nothing, and zeros would let an optimizer turn them into floats)
    (wq, s, b), _ = _quantized(rng, (32, 64), gs=32, bits=4)
    x = mx.array(rng.standard_normal((2, 64)).astype(np.float32))
    with pytest.raises(RuntimeError, match="QuantizedMatmul: no gradient with respect to the quantized"):
        mx.grad(lambda w: mx.quantized_matmul(x, w, s, b, group_size=32, bits=4).sum())(wq)
    with pytest.raises(RuntimeError, match="GatherQMM: no gradient with respect to the quantized"):
        mx.grad(lambda w: mx.gather_qmm(x, w, s, b, group_size=32, bits=4).sum())(wq)
    with pytest.raises(RuntimeError, match="no derivative with respect to the quantized"):
        mx.jvp(lambda w: mx.quantized_matmul(x, w, s, b, group_size=32, bits=4), [wq], [mx.zeros_like(wq)])
    import umx.nn as nn

    layer = nn.QuantizedLinear(64, 32, group_size=32, bits=4)  # (frozen, as MLX's: nothing asks for a gradient)
    loss, grads = nn.value_and_grad(layer, lambda m, x: m(x).sum())(layer, x)
    assert grads == {} and np.isfinite(loss.item())
    layer.unfreeze(keys=["bias"])
    assert nn.value_and_grad(layer, lambda m, x: m(x).sum())(layer, x)[1]["bias"].shape == (32,)
    layer.unfreeze()
    with pytest.raises(RuntimeError, match="quantized"):
        nn.value_and_grad(layer, lambda m, x: m(x).sum())(layer, x)


def test_gather_grads(rng):
    (wq, s, b), dense = _quantized(rng, (3, 32, 64), gs=32, bits=4)
    x = mx.array(rng.standard_normal((4, 2, 64)).astype(np.float32))
    lhs, rhs = mx.array([[0, 3], [3, 1]]), mx.array([[2, 0], [1, 2]])
    y = mx.array(rng.standard_normal((2, 2, 2, 32)).astype(np.float32))

    def fq(x, s, b):
        return (mx.gather_qmm(x, wq, s, b, lhs, rhs, group_size=32) * y).sum()

    for i, g in enumerate(mx.grad(fq, argnums=(0, 1, 2))(x, s, b)):
        numeric, d = _directional(fq, [x, s, b], i, rng)
        assert abs(numeric - float(np.sum(np.asarray(g) * d))) <= 2e-2 * max(1.0, abs(numeric))
    w = mx.array(dense.astype(np.float32))

    def fm(x, w):
        return (mx.gather_mm(x, mx.swapaxes(w, -1, -2), lhs, rhs) * y).sum()

    for i, g in enumerate(mx.grad(fm, argnums=(0, 1))(x, w)):
        numeric, d = _directional(fm, [x, w], i, rng)
        assert abs(numeric - float(np.sum(np.asarray(g) * d))) <= 1e-2 * max(1.0, abs(numeric))


# -- batching rules -------------------------------------------------------------------------------------------------
def test_vmap_rules(rng):
    (wq, s, b), _ = _quantized(rng, (3, 16, 64), gs=32, bits=4)
    x = mx.array(rng.standard_normal((3, 5, 64)).astype(np.float32))
    cases = [
        (lambda x: mx.quantized_matmul(x, wq[0], s[0], b[0], group_size=32), [x], 0, QuantizedMatmul),
        (lambda x, w, s, b: mx.quantized_matmul(x, w, s, b, group_size=32), [x, wq, s, b], 0, QuantizedMatmul),
        (lambda w, s, b: mx.quantized_matmul(x[0], w, s, b, group_size=32), [wq, s, b], 0, QuantizedMatmul),
        (lambda w, s, b: mx.dequantize(w, s, b, group_size=32), [wq, s, b], 0, Dequantize),
        (lambda w, s: mx.dequantize(w, s, b[0], group_size=32), [wq, s], 0, Dequantize),
    ]
    for fn, args, axis, prim in cases:
        out = mx.vmap(fn, in_axes=axis)(*args)
        assert isinstance(out._prim, prim), out._prim
        loop = mx.stack([fn(*[a[i] for a in args]) for i in range(3)])
        assert_close(out, np.asarray(loop), 1e-5, 1e-5)


# -- bad input ------------------------------------------------------------------------------------------------------
def test_bad_input_raises_at_the_call():
    w = mx.zeros((64, 256))
    wq, s, b = mx.quantize(w, 32, 4)
    x = mx.zeros((3, 256))
    bad = [
        lambda: mx.quantize(w, mode="int4"),
        lambda: mx.quantize(w, group_size=16),
        lambda: mx.quantize(w, bits=7),
        lambda: mx.quantize(mx.zeros((256,))),
        lambda: mx.quantize(mx.zeros((4, 100))),
        lambda: mx.quantize(mx.zeros((4, 128), mx.int32)),
        lambda: mx.quantize(w, mode="mxfp4", group_size=64),
        lambda: mx.quantize(w, mode="mxfp8", bits=4),
        lambda: mx.quantize(w, global_scale=mx.array(1.0)),
        lambda: mx.quantize(w, mode="nvfp4", global_scale=mx.array(1.0, mx.float16)),
        lambda: mx.dequantize(wq, s, None, 32, 4),
        lambda: mx.dequantize(wq, s, b, 64, 4),
        lambda: mx.dequantize(wq.astype(mx.int32), s, b, 32, 4),
        lambda: mx.dequantize(wq, s, b, 32, 4, dtype=mx.int32),
        lambda: mx.dequantize(wq, s.astype(mx.int32), b.astype(mx.int32), 32, 4),
        lambda: mx.dequantize(wq, s, b, 32, 4, mode="mxfp4"),
        lambda: mx.quantized_matmul(x, wq.T, s, b, group_size=32),
        lambda: mx.quantized_matmul(x, wq, s.T, b.T, group_size=32),
        lambda: mx.quantized_matmul(x, wq, s, b, False, 32),
        lambda: mx.quantized_matmul(x, wq, s, None, group_size=32),
        lambda: mx.quantized_matmul(x.astype(mx.int32), wq, s.astype(mx.int32), b.astype(mx.int32), group_size=32),
        lambda: mx.quantized_matmul(mx.zeros((5, 3, 256)), mx.stack([wq, wq]), mx.stack([s, s]), mx.stack([b, b]),
                                    group_size=32),
        lambda: mx.gather_qmm(x, wq, s, b, rhs_indices=mx.array(0.5), group_size=32),
        lambda: mx.gather_qmm(x, wq, s, b, rhs_indices=mx.array(0), group_size=32, mode="xyz"),
        lambda: mx.to_fp8(mx.zeros(3, mx.int32)),
        lambda: mx.from_fp8(mx.zeros(3)),
        lambda: mx.from_fp8(mx.zeros(3, mx.uint8), mx.int32),
        lambda: mx.qqmm(x, w, mode="affine"),
    ]
    for i, call in enumerate(bad):
        with pytest.raises(ValueError):
            call()
            pytest.fail(f"case {i} did not raise")


@pytest.mark.parametrize("bits,gs,n,k", [(2, 32, 200, 256), (4, 64, 200, 256), (8, 128, 200, 256), (4, 32, 200, 256),
                                         (2, 32, 1030, 96), (4, 64, 4098, 128), (4, 128, 2048, 384)])
@pytest.mark.parametrize("rows", [1, 3, 8, 9])
@pytest.mark.parametrize("dtype,x_dtype", [(mx.float32, mx.float32), (mx.bfloat16, mx.bfloat16),
                                           (mx.bfloat16, mx.float32)])
def test_quantized_matmul_few_rows_match_the_host(device, rng, bits, gs, n, k, rows, dtype, x_dtype):
    # a decode step's product (a few rows of x against a transposed weight): the GPU's kernel reads the packed
    # words once, with weight rows of odd counts, words loaded one or four at a time, and bfloat16 scales with
    # float32 x. Both devices sum as MLX's GPU kernels do, scale * sum(code * x) + bias * sum(x), so the
    # reference is the exact affine weights (not dequantize's bfloat16 values: scale * code, then plus the bias,
    # each rounded, where the two terms may nearly cancel); for bfloat16 the output's rounding bounds the error
    w = _w(rng, (n, k), dtype) * 0.1
    wq, s, b = mx.quantize(w, gs, bits)
    x = mx.array(rng.standard_normal((rows, k)).astype(np.float32)).astype(x_dtype)
    got = mx.quantized_matmul(x, wq, s, b, True, gs, bits, stream=device)
    exact = np.asarray(mx.dequantize(wq, s.astype(mx.float32), b.astype(mx.float32), gs, bits), np.float64)
    want = np.asarray(x.astype(mx.float32), np.float64) @ exact.T
    assert got.dtype == (mx.float32 if mx.float32 in (x_dtype, dtype) else dtype)
    if dtype == mx.float32:
        assert_close(got, want, 1e-4, 1e-4)
    else:
        # (9 rows multiply by dequantize's rounded weights: a bound of the largest output's share)
        assert_close(got, want, 1e-2, (2e-3 if rows <= 8 else 2e-2) * np.abs(want).max())


@pytest.mark.parametrize("bits", [2, 4, 8])
@pytest.mark.parametrize("rows,k", [(4, 64), (8, 64), (8, 128), (33, 64)])
def test_quantized_matmul_not_transposed_multiplies_the_rounded_weight(device, bits, rows, k):
    # MLX's rule for x @ W from 4 rows of bfloat16: the product is x times dequantize's bfloat16 weight, so it
    # rounds to the same bfloat16 as that product does (an ulp is 0.002 at the outputs' 0.25 and up, over the
    # bound); three rows or fewer take the per-group sums, which stay within the bound of the exact weight
    kx, kw = mx.random.split(mx.random.key(3))
    x = mx.random.normal((rows, k), key=kx, dtype=mx.bfloat16) / k**0.5
    w = mx.random.normal((k, 128), key=kw, dtype=mx.bfloat16) / k**0.5
    wq, s, b = mx.quantize(w, 32, bits)
    got = mx.quantized_matmul(x, wq, s, b, False, 32, bits, stream=device)
    want = mx.matmul(x, mx.dequantize(wq, s, b, 32, bits), stream=device)
    assert got.dtype == mx.bfloat16
    assert np.abs(_np(got) - _np(want)).max() < 1.5e-3


@pytest.mark.skipif(not mx.is_available(mx.gpu), reason="no CUDA GPU (CuPy and a device)")
@pytest.mark.parametrize("bits,gs,n,k", [(4, 64, 200, 256), (2, 32, 1030, 96), (8, 128, 4098, 128)])
@pytest.mark.parametrize("lead", [(64,), (2, 40)])
def test_quantized_matmul_many_bfloat16_rows_take_a_bfloat16_weight(rng, monkeypatch, bits, gs, n, k, lead):
    # a prompt's product: the weight written out as bfloat16 by umx's kernel (rounded as the shared kernel
    # rounds it), then cuBLAS's bfloat16 product; the CPU's shared kernel multiplies the same values in float32,
    # so the two differ by the order of the sums and the output's rounding alone
    from umx.backends.cuda import quantized as cq

    calls = []
    product = cq._dequantized_product
    monkeypatch.setattr(cq, "_dequantized_product", lambda *a: calls.append(1) or product(*a))
    w = _w(rng, (n, k), mx.bfloat16) * 0.1
    wq, s, b = mx.quantize(w, gs, bits)
    x = mx.array(rng.standard_normal((*lead, k)).astype(np.float32)).astype(mx.bfloat16)
    got = mx.quantized_matmul(x, wq, s, b, True, gs, bits, stream=mx.gpu)
    want = mx.quantized_matmul(x, wq, s, b, True, gs, bits, stream=mx.cpu)
    mx.eval(got, want)
    assert calls and got.dtype == mx.bfloat16 and got.shape == (*lead, n)
    g, h = np.asarray(got.astype(mx.float32)), np.asarray(want.astype(mx.float32))
    np.testing.assert_allclose(g, h, rtol=2**-7, atol=1e-3 * np.abs(h).max())
