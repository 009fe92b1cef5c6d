"""dtypes as MLX: names, inference from Python and NumPy values, promotion (incl. weak scalars), casts."""

from __future__ import annotations

import gc
import math

import numpy as np
import pytest
from conftest import assert_close, bf16_bits, bf16_round
from hypothesis import given, settings
from hypothesis import strategies as st

import umx as mx

ORDER = "b u8 u16 u32 u64 i8 i16 i32 i64 f16 bf16 f32 f64 c64".split()
D = dict(zip(ORDER, [mx.bool_, mx.uint8, mx.uint16, mx.uint32, mx.uint64, mx.int8, mx.int16, mx.int32,
                     mx.int64, mx.float16, mx.bfloat16, mx.float32, mx.float64, mx.complex64]))
ALL = list(D.values())

# MLX's promotion table (mlx/dtype.cpp), written out: row dtype with column dtype.
PROMOTION_ROWS = """
b    b   u8  u16 u32 u64 i8  i16 i32 i64 f16 bf16 f32 f64 c64
u8   u8  u8  u16 u32 u64 i16 i16 i32 i64 f16 bf16 f32 f64 c64
u16  u16 u16 u16 u32 u64 i32 i32 i32 i64 f16 bf16 f32 f64 c64
u32  u32 u32 u32 u32 u64 i64 i64 i64 i64 f16 bf16 f32 f64 c64
u64  u64 u64 u64 u64 u64 f32 f32 f32 f32 f16 bf16 f32 f64 c64
i8   i8  i16 i32 i64 f32 i8  i16 i32 i64 f16 bf16 f32 f64 c64
i16  i16 i16 i32 i64 f32 i16 i16 i32 i64 f16 bf16 f32 f64 c64
i32  i32 i32 i32 i64 f32 i32 i32 i32 i64 f16 bf16 f32 f64 c64
i64  i64 i64 i64 i64 f32 i64 i64 i64 i64 f16 bf16 f32 f64 c64
f16  f16 f16 f16 f16 f16 f16 f16 f16 f16 f16 f32  f32 f64 c64
bf16 bf16 bf16 bf16 bf16 bf16 bf16 bf16 bf16 bf16 f32 bf16 f32 f64 c64
f32  f32 f32 f32 f32 f32 f32 f32 f32 f32 f32 f32  f32 f64 c64
f64  f64 f64 f64 f64 f64 f64 f64 f64 f64 f64 f64  f64 f64 c64
c64  c64 c64 c64 c64 c64 c64 c64 c64 c64 c64 c64  c64 c64 c64
"""
TABLE = {}
for _line in PROMOTION_ROWS.strip().splitlines():
    _row, *_cols = _line.split()
    for _c, _r in zip(ORDER, _cols):
        TABLE[(D[_row], D[_c])] = D[_r]


def test_names():
    for name in ("bool_", "uint8", "uint16", "uint32", "uint64", "int8", "int16", "int32", "int64", "float16",
                 "bfloat16", "float32", "float64", "complex64"):
        d = getattr(mx, name)
        assert isinstance(d, mx.Dtype)
    assert mx.float32.size == 4 and mx.bfloat16.size == 2 and mx.complex64.size == 8 and mx.bool_.size == 1
    assert mx.issubdtype(mx.int8, mx.signedinteger) and mx.issubdtype(mx.uint8, mx.integer)
    assert mx.issubdtype(mx.bfloat16, mx.floating) and not mx.issubdtype(mx.float32, mx.integer)
    assert mx.issubdtype(mx.complex64, mx.inexact) and mx.issubdtype(mx.float16, mx.number)


def test_table_is_symmetric():
    for a in ALL:
        for b in ALL:
            assert TABLE[(a, b)] is TABLE[(b, a)]


def test_result_type_all_pairs():
    for (a, b), want in TABLE.items():
        assert mx.result_type(a, b) == want, (a, b)


def _sample(dtype, rng, shape):
    vals = rng.integers(0, 4, shape)
    if dtype == mx.bool_:
        return vals % 2 == 1
    return vals


def test_binary_promotion_matches_table(device):
    @settings(max_examples=250, deadline=None, derandomize=True)
    @given(a=st.sampled_from(ALL), b=st.sampled_from(ALL), op=st.sampled_from(["add", "multiply", "maximum"]))
    def check(a, b, op):
        rng = np.random.default_rng(0)
        x, y = _sample(a, rng, (3,)), _sample(b, rng, (2, 1))
        out = getattr(mx, op)(mx.array(x, dtype=a), mx.array(y, dtype=b), stream=device)
        want = TABLE[(a, b)]
        assert out.dtype == want
        ref = getattr(np, op)(x.astype(np.float64), y.astype(np.float64))
        got = np.asarray(out)
        if want == mx.bool_:
            np.testing.assert_array_equal(got, ref.astype(bool))
        else:
            np.testing.assert_allclose(got.astype(np.complex128), ref)

    check()


@pytest.mark.parametrize(("a", "b", "want"), [
    (mx.int8, mx.uint8, mx.int16), (mx.uint32, mx.int32, mx.int64), (mx.int64, mx.float16, mx.float16),
    (mx.float16, mx.bfloat16, mx.float32), (mx.uint64, mx.int8, mx.float32), (mx.bool_, mx.int8, mx.int8),
    (mx.float32, mx.complex64, mx.complex64), (mx.float64, mx.float32, mx.float64),
])
def test_named_promotions(device, a, b, want):
    out = mx.array([1, 2], dtype=a) + mx.array([1, 1], dtype=b)
    assert out.dtype == want
    assert mx.add(mx.array([1], dtype=a), mx.array([1], dtype=b), stream=device).dtype == want


@pytest.mark.parametrize(("dtype", "scalar", "want"), [
    (mx.int8, 1, mx.int8), (mx.int8, 1.5, mx.float32), (mx.float16, 1.5, mx.float16), (mx.uint8, 1, mx.uint8),
    (mx.bool_, 1, mx.int32), (mx.bool_, 1.5, mx.float32), (mx.bool_, True, mx.bool_), (mx.int64, 1, mx.int64),
    (mx.bfloat16, 2.0, mx.bfloat16), (mx.float32, 1j, mx.complex64), (mx.uint32, 2, mx.uint32),
])
def test_weak_scalars(device, dtype, scalar, want):
    a = mx.array([1, 0], dtype=dtype)
    outs = [a + scalar, scalar + a, a * scalar, scalar * a, mx.add(a, scalar, stream=device)]
    if want is not mx.bool_:  # there is no bool difference
        outs.append(mx.subtract(scalar, a, stream=device))
    for out in outs:
        assert out.dtype == want
    want_vals = (np.array([1, 0]) + scalar).astype(want.np)
    np.testing.assert_allclose(np.asarray(a + scalar).astype(np.complex128), want_vals.astype(np.complex128),
                               rtol=1e-3)


def test_weak_int_wraps_in_small_type(device):
    a = mx.array([100], dtype=mx.int8)
    out = mx.add(a, 100, stream=device)
    assert out.dtype == mx.int8 and out.item() == -56


@pytest.mark.parametrize(("value", "want"), [
    (1.5, mx.float32), ([1, 2.5], mx.float32), (3, mx.int32), ([1, 2], mx.int32), (2**40, mx.int64),
    ([1, 2**40], mx.int64), (-(2**31), mx.int32), (2**31, mx.int64), (True, mx.bool_),
    ([True, False], mx.bool_), (1 + 2j, mx.complex64), ([1 + 2j], mx.complex64), (np.ones(2), mx.float32),
    (np.ones(2, np.int64), mx.int64), (np.ones(2, np.float16), mx.float16), (np.ones(2, np.uint8), mx.uint8),
    (np.ones(2, np.complex128), mx.complex64),
    (np.float64(2.0), mx.float32), (np.int16(3), mx.int16), (np.ones(2, bool), mx.bool_),
    (np.ones(2, np.uint64), mx.uint64),
])
def test_inference(value, want):
    a = mx.array(value)
    assert a.dtype == want
    np.testing.assert_allclose(np.asarray(a).astype(np.complex128), np.asarray(value).astype(np.complex128),
                               rtol=1e-6)


def test_explicit_dtype_and_dtype_forms():
    assert mx.array([1, 2], dtype=mx.float16).dtype == mx.float16
    assert mx.array([1, 2], mx.int64).dtype == mx.int64
    assert mx.array([1.7], dtype=mx.int32).tolist() == [1]
    assert mx.array([1], dtype=np.float64).dtype == mx.float64
    assert mx.array([1], dtype="uint16").dtype == mx.uint16
    assert mx.array(mx.array([1, 2]), dtype=mx.float32).dtype == mx.float32
    with pytest.raises(TypeError):
        mx.array([1], dtype="float128")


def test_explicit_float64_keeps_precision():
    assert mx.array(0.1, dtype=mx.float64).item() == 0.1
    assert mx.array([0.1, 1 / 3], dtype=mx.float64).tolist() == [0.1, 1 / 3]
    x = np.random.default_rng(0).standard_normal(5)
    np.testing.assert_array_equal(np.asarray(mx.array(x, dtype=mx.float64)), x)
    assert mx.array(x).dtype == mx.float32  # without a dtype, NumPy float64 still becomes float32
    assert mx.array(2**40 + 1, dtype=mx.int64).item() == 2**40 + 1


def test_integer_division(device):
    a, b = mx.array([7, -7, 5], dtype=mx.int32), mx.array([2, 2, 0], dtype=mx.int32)
    q = mx.divide(a, b, stream=device)
    assert q.dtype == mx.float32
    assert_close(q[:2], [3.5, -3.5])
    f = mx.floor_divide(a, b, stream=device)
    assert f.dtype == mx.int32 and f.tolist() == [3, -4, 0]  # integer // 0 gives 0, no error
    assert (a // b).dtype == mx.int32 and (a // b).tolist() == [3, -4, 0]
    assert (a / 2).dtype == mx.float32
    r = mx.remainder(a, mx.array([2, 2, 3]), stream=device)
    assert r.tolist() == [1, 1, 2]  # sign of the divisor, as NumPy


def test_reduction_dtypes(device):
    i = mx.array([1, 2, 3], dtype=mx.int32)
    assert mx.sum(i, stream=device).dtype == mx.int32
    assert mx.sum(mx.array([True, True, False]), stream=device).item() == 2
    assert mx.sum(mx.array([True]), stream=device).dtype == mx.int32
    assert mx.mean(i, stream=device).dtype == mx.float32
    assert mx.mean(mx.array([1, 2], dtype=mx.int64), stream=device).dtype == mx.float32
    assert mx.mean(mx.array([1, 2], dtype=mx.float16), stream=device).dtype == mx.float16
    assert mx.var(i, stream=device).dtype == mx.float32
    assert mx.argmax(i, stream=device).dtype == mx.uint32
    assert mx.argmin(mx.array([[1.0, 0.0]]), axis=1, stream=device).dtype == mx.uint32
    assert mx.prod(i, stream=device).dtype == mx.int32
    assert mx.max(mx.array([1, 2], dtype=mx.uint8), stream=device).dtype == mx.uint8
    assert mx.all(i, stream=device).dtype == mx.bool_


def test_unsigned_wraps(device):
    a = mx.array([1], dtype=mx.uint32)
    out = mx.subtract(a, 2, stream=device)
    assert out.dtype == mx.uint32 and out.item() == 2**32 - 1
    assert (mx.array([0], dtype=mx.uint8) - 1).item() == 255


def test_float_ops_on_ints_give_float32(device):
    a = mx.array([1, 4], dtype=mx.int32)
    for f in (mx.sqrt, mx.exp, mx.sin, mx.log):
        assert f(a, stream=device).dtype == mx.float32
    assert mx.sqrt(mx.array([4], dtype=mx.float16), stream=device).dtype == mx.float16
    assert mx.sqrt(mx.array([4], dtype=mx.float64), stream=device).dtype == mx.float64
    assert mx.abs(a, stream=device).dtype == mx.int32
    assert mx.equal(a, a, stream=device).dtype == mx.bool_


@pytest.mark.parametrize("src", ALL, ids=lambda d: d.name)
def test_astype_all_pairs(device, src):
    vals = np.array([0, 1, 3, 7])
    a = mx.array(vals, dtype=src)
    for dst in ALL:
        out = mx.astype(a, dst, stream=device)
        assert out.dtype == dst
        want = vals.astype(bool) if src == mx.bool_ or dst == mx.bool_ else vals
        if src == mx.bool_:
            want = (vals != 0).astype(np.int64)
        if dst == mx.bool_:
            want = vals != 0
        np.testing.assert_allclose(np.asarray(out).astype(np.complex128), want.astype(np.complex128))
    assert a.astype(mx.float32).dtype == mx.float32


def test_astype_truncates_and_complex_to_real(device):
    assert mx.astype(mx.array([1.7, -1.7]), mx.int32, stream=device).tolist() == [1, -1]
    c = mx.array([1 + 2j, 3 - 1j])
    assert mx.astype(c, mx.float32, stream=device).tolist() == [1.0, 3.0]
    assert mx.astype(mx.array([0.0, 2.5]), mx.bool_, stream=device).tolist() == [False, True]


def test_bfloat16_values_are_rounded(device):
    x = np.array([1.0 + 2.0**-8, 1.0 + 3 * 2.0**-8, 3.14159, -2.5e-3, 1e30], np.float32)
    for a in (mx.array(x, dtype=mx.bfloat16), mx.astype(mx.array(x), mx.bfloat16, stream=device),
              mx.multiply(mx.array(x, dtype=mx.bfloat16), 1.0, stream=device),
              mx.add(mx.array(x, dtype=mx.bfloat16), mx.zeros(5, dtype=mx.bfloat16), stream=device)):
        assert a.dtype == mx.bfloat16
        bits = np.asarray(a).astype(np.float32).view(np.uint32)
        assert not (bits & 0xFFFF).any()  # exactly representable in bfloat16
    got = np.asarray(mx.array(x, dtype=mx.bfloat16)).astype(np.float32)
    assert got[0] == 1.0  # ties to even
    assert got[1] == np.float32(1.0 + 4 * 2.0**-8)
    np.testing.assert_allclose(got, x, rtol=2**-8)


@pytest.mark.parametrize("size", [37, 1 << 15])  # (either side of the host's switch to bit arithmetic)
def test_bfloat16_is_stored_as_its_16_bits(device, size):
    rng = np.random.default_rng(size)
    words = rng.integers(0, 2**32, size, dtype=np.uint64).astype(np.uint32)
    words[:12] = [0x7F800000, 0xFF800000, 0x7F7FFFFF, 0x7FC00001, 0xFF800001, 0x3F808000, 0x3F818000,
                  0x00008000, 0x80018000, 0x7F7F8000, 0, 0x80000000]  # infinities, overflow, NaNs, ties, zeros
    x = words.view(np.float32)
    a = mx.astype(mx.array(x), mx.bfloat16, stream=device)
    bits = np.asarray(mx.view(a, mx.uint16, stream=device))
    np.testing.assert_array_equal(bits, bf16_bits(x))
    assert np.asarray(a).dtype == np.float32  # NumPy reads its values as float32
    # layout ops move the bits as they are, NaN payloads included
    raw = mx.view(mx.array(words.astype(np.uint16)), mx.bfloat16)
    moved = mx.concatenate([raw[::-1], raw], stream=device)
    got = np.asarray(mx.view(mx.transpose(moved.reshape(2, -1), stream=device).T.reshape(-1), mx.uint16))
    np.testing.assert_array_equal(got, np.concatenate([words[::-1], words]).astype(np.uint16))


def test_bfloat16_arrays_take_two_bytes_an_element(device):
    # The active count takes in the GPU's pool (umx/backends/cuda/memory.py: its used bytes), so on the GPU this
    # measures the device's storage. There, a small slack: pool blocks and small buffers that in-flight work held
    # (as in test_memory.py), far below the 2 MiB a float32 storage would add.
    slack = 0 if device == mx.cpu else 64 << 10

    def fused(x):  # a fused region: one result, its storage
        return mx.add(mx.multiply(mx.exp(x, stream=device), 2, stream=device), x, stream=device)

    mx.eval(fused(mx.ones((4,), dtype=mx.bfloat16, stream=device)))  # (its constants made, and kept, beforehand)
    mx.synchronize()
    gc.collect()
    before = mx.get_active_memory()
    a = mx.ones((1 << 20,), dtype=mx.bfloat16, stream=device)
    mx.eval(a)
    mx.synchronize()
    assert abs(mx.get_active_memory() - before - (2 << 20)) <= slack
    b = fused(a)
    mx.eval(b)
    mx.synchronize()
    assert abs(mx.get_active_memory() - before - (4 << 20)) <= slack


def test_bfloat16_results_round_each_op_as_mlx(device):
    rng = np.random.default_rng(3)
    size = (1 << 20) + 3  # a fused region that the host splits across cores
    xa, xb = rng.standard_normal(size).astype(np.float32), rng.standard_normal(size).astype(np.float32)
    a = mx.array(xa, dtype=mx.bfloat16)
    b = mx.array(xb, dtype=mx.bfloat16)
    wa, wb = np.asarray(a), np.asarray(b)
    summed = bf16_round(bf16_round(wa * wb) + wa)  # each op computes in float32 and rounds
    got_sum = mx.add(mx.multiply(a, b, stream=device), a, stream=device)
    np.testing.assert_array_equal(np.asarray(mx.view(got_sum, mx.uint16)), bf16_bits(summed))
    want = bf16_bits(np.exp(summed))
    got = np.asarray(mx.view(mx.exp(got_sum, stream=device), mx.uint16))
    # the same bits on the CPU; on a GPU, CUDA's expf is within 2 float32 ulps of the exact value, so a value near
    # the middle of two bfloat16 steps now and then rounds to the other one
    steps = np.abs(got.astype(np.int32) - want.astype(np.int32))
    assert steps.max() <= (0 if device == mx.cpu else 1) and np.mean(steps != 0) < 1e-4
    # a product accumulates in float32 and rounds once
    m, w = a[: 64 * 48].reshape(64, 48), b[: 48 * 32].reshape(48, 32)
    ref = bf16_bits(np.asarray(m).astype(np.float64) @ np.asarray(w).astype(np.float64))
    prod = np.asarray(mx.view(mx.matmul(m, w, stream=device), mx.uint16))
    assert np.mean(prod == ref) > 0.99  # (float32 accumulation: a last-bit difference now and then)


def test_bfloat16_values_leave_and_come_back_unchanged():
    import pickle

    ml_dtypes = pytest.importorskip("ml_dtypes")
    x = np.array([1.5, -0.0, np.inf, 3.0e38, 1e-40], np.float32).astype(ml_dtypes.bfloat16)
    a = mx.array(x)
    assert a.dtype == mx.bfloat16 and a.tolist() == x.astype(np.float32).tolist()
    np.testing.assert_array_equal(np.asarray(mx.view(a, mx.uint16)), x.view(np.uint16))
    back = pickle.loads(pickle.dumps(a))
    np.testing.assert_array_equal(np.asarray(mx.view(back, mx.uint16)), x.view(np.uint16))
    zero = mx.array(x[1:2], mx.float32).item()
    assert zero == 0.0 and math.copysign(1.0, zero) == -1.0  # -0.0 keeps its sign
    assert mx.array(x[0], mx.float32).item() == 1.5
    assert mx.array(2.0, mx.bfloat16).astype(mx.int32).item() == 2  # a constant cast by its value, not its bits


def test_a_python_float_next_to_bfloat16_is_a_bfloat16(device):
    # as in MLX: 0.3 becomes bfloat16's 0.30078125 before the op, so comparisons and floors see that value
    x = mx.array([0.30078125, -6.90625], dtype=mx.bfloat16)
    assert mx.equal(x, 0.3, stream=device).tolist() == [True, False]
    assert (x > 0.3).tolist() == [False, False]
    assert mx.floor_divide(x, 0.3, stream=device).tolist() == [1.0, -23.0]
    assert mx.remainder(x, 0.3, stream=device).tolist()[0] == 0.0


def test_finfo_iinfo():
    assert mx.finfo(mx.float32).eps == np.finfo(np.float32).eps
    assert mx.finfo(mx.float16).max == float(np.finfo(np.float16).max)
    assert mx.finfo(mx.bfloat16).eps == 2.0**-7
    assert mx.iinfo(mx.int8).min == -128 and mx.iinfo(mx.uint32).max == 2**32 - 1
    with pytest.raises(ValueError):
        mx.finfo(mx.int32)
    with pytest.raises(ValueError):
        mx.iinfo(mx.float32)
