"""Ops where umx follows MLX's behaviour rather than NumPy's or its own earlier choices: complex forms and
refusals, precision of erf and sigmoid, integer powers, creation overloads, 32-bit shapes, layout corner cases
and errors raised at the call. Each case says what MLX does."""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import assert_close

import umx as mx

INF = float("inf")


# -- complex ---------------------------------------------------------------------------------------------------
def test_complex_predicates_and_scalings(device):
    z = mx.array([complex(INF, 0), complex(0, INF), complex(INF, float("nan")), complex(-INF, 0), 1 + 2j])
    assert mx.isposinf(z, stream=device).tolist() == [True, False, False, False, False]
    assert mx.isneginf(z, stream=device).tolist() == [False, False, False, True, False]
    w = mx.array([1 + 2j, -3j])
    assert_close(mx.degrees(w, stream=device), np.degrees(1.0) * np.array([1 + 2j, -3j]), dtype=mx.complex64)
    assert_close(mx.radians(w, stream=device), np.radians(1.0) * np.array([1 + 2j, -3j]), dtype=mx.complex64)
    # MLX's complex floor_divide is the plain quotient (complex numbers have no floor)
    assert_close(mx.floor_divide(mx.array([5 + 3j]), 2, stream=device), [2.5 + 1.5j])


def _logaddexp(a, b):
    return np.log(np.exp(a.astype(np.complex128)) + np.exp(b.astype(np.complex128)))  # the principal branch


def test_complex_logaddexp(device, rng):
    a = (rng.standard_normal(50) * 3 + 1j * rng.standard_normal(50) * 3).astype(np.complex64)
    b = (rng.standard_normal(50) * 3 + 1j * rng.standard_normal(50) * 3).astype(np.complex64)
    got = mx.logaddexp(mx.array(a), mx.array(b), stream=device)
    assert got.dtype == mx.complex64
    assert_close(got, _logaddexp(a, b), rtol=1e-4, atol=1e-4)
    assert np.all(np.abs(np.asarray(got).imag) <= np.pi + 1e-6)


def test_complex_logcumsumexp(device, rng):
    x = (rng.standard_normal((3, 7)) + 1j * rng.standard_normal((3, 7))).astype(np.complex64)
    want = x.astype(np.complex128).copy()
    for i in range(1, 7):
        want[:, i] = _logaddexp(want[:, i - 1], x[:, i])
    assert_close(mx.logcumsumexp(mx.array(x), axis=1, stream=device), want, rtol=1e-4, atol=1e-4)
    rev = mx.logcumsumexp(mx.array(x), axis=1, reverse=True, stream=device)
    assert_close(rev[:, 0], np.log(np.exp(x.astype(np.complex128)).sum(1)), rtol=1e-4, atol=1e-4)


def test_complex_logaddexp_with_infinite_real_parts(device):
    inf = np.inf
    a = np.array([0.5 + 1j, 0.5 + 1j, complex(inf, 1), complex(-inf, 0), complex(inf, 1)], np.complex64)
    b = np.array([complex(inf, 0), complex(-inf, 0), 0.5 + 0j, complex(-inf, 0), complex(inf, 2)], np.complex64)
    got = np.asarray(mx.logaddexp(mx.array(a), mx.array(b), stream=device))
    # the larger term wins where a real part is infinite; two +inf real parts leave the phase undefined
    np.testing.assert_array_equal(got[:4], np.array([complex(inf, 0), 0.5 + 1j, complex(inf, 1), complex(-inf, 0)],
                                                    np.complex64))
    assert np.isnan(got[4].real) and np.isnan(got[4].imag)


def test_complex_median(device):
    z = np.array([1 + 2j, 3j, 1 + 3j, 2 + 0j], np.complex64)
    assert_close(mx.median(mx.array(z), stream=device), np.median(z))
    assert math.isnan(mx.median(mx.array([1 + 0j, complex(float("nan"), 0), 0j]), stream=device).item().real)


# -- precision ---------------------------------------------------------------------------------------------------
def test_erf_and_erfinv_precision(device):
    x = np.concatenate([np.linspace(-6, 6, 20001), [0.0, 1e-10, -1e-30, 0.999999, 1.0]]).astype(np.float32)
    want = np.array([math.erf(v) for v in x.astype(np.float64)])
    got = np.asarray(mx.erf(mx.array(x), stream=device))
    assert np.max(np.abs(got - want) / np.spacing(np.abs(want).astype(np.float32))) <= 3  # float32 ulps
    assert mx.erf(mx.array(0.0), stream=device).item() == 0.0  # exactly (was -3e-8)
    assert mx.erfinv(mx.array(0.0), stream=device).item() == 0.0
    assert mx.erf(mx.array([INF, -INF]), stream=device).tolist() == [1.0, -1.0]
    y = np.asarray(mx.erfinv(mx.array([-1.0, 0.5, 1.0, 0.9999999403953552, 5.0]), stream=device))
    assert y[0] == -INF and y[2] == INF and math.isnan(y[4])
    np.testing.assert_allclose(y[[1, 3]], [0.47693628, 3.8325066566467285], rtol=1e-6)


def test_sigmoid_tails(device):
    x = np.array([-100, -20, -8, -1e-3, 0, 5, 20, 100], np.float32)
    want = 1 / (1 + np.exp(-x.astype(np.float64)))
    got = np.asarray(mx.sigmoid(mx.array(x), stream=device))
    np.testing.assert_allclose(got[1:], want[1:], rtol=1e-6)  # sigmoid(-20) is 2e-9, not 0
    assert got[0] < 1e-40
    half = mx.sigmoid(mx.array([-8.0, 8.0]).astype(mx.float16), stream=device).tolist()
    assert half[0] != 0.0 and half[1] != 1.0  # half precision is computed in float32, rounded once


@pytest.mark.parametrize("dtype", [mx.int8, mx.int16, mx.int32, mx.int64])
def test_negative_integer_powers_are_zero(device, dtype):
    # MLX: every negative integer exponent gives 0, even for 1 and -1
    x = mx.power(mx.array([2, -2, 1, -1, 3], dtype), mx.array([-1, -3, -9, -2, 2], dtype), stream=device)
    assert x.tolist() == [0, 0, 0, 0, 9]


def test_conjugate_derivatives():
    a = mx.array([1 + 2j, 3 - 1j])
    b = mx.array([0.5 + 1j, -2j])
    assert_close(mx.vjp(mx.conj, [a], [b])[1][0], np.conj(np.asarray(b)))
    assert_close(mx.jvp(mx.conj, [a], [b])[1][0], np.conj(np.asarray(b)))


# -- reductions ---------------------------------------------------------------------------------------------------
def test_axis_arguments():
    a = mx.ones((2, 3))
    with pytest.raises(TypeError, match="sum: axis must be an int"):
        mx.sum(a, axis=1.0)
    with pytest.raises(TypeError, match="max: axes must be integers"):
        mx.max(a, axis=[0.5])
    assert mx.sum(a, axis=np.int64(1)).shape == (2,) and mx.sum(a, axis=True).shape == (2,)


def test_empty_reductions(device):
    e = mx.zeros((0, 3))
    assert mx.max(e, axis=1, stream=device).shape == (0,)  # the reduced axis is not empty
    for f in (mx.max, mx.min):
        with pytest.raises(ValueError, match="axis 0 of size 0"):
            f(e, axis=0, stream=device)
    for f in (mx.argmax, mx.logsumexp):  # MLX refuses any empty input here
        with pytest.raises(ValueError, match="empty"):
            f(e, axis=1, stream=device)


def test_sums_and_products_over_no_axis_keep_the_input(device):
    # a 0-d array or axis=() reduces nothing: the input comes back in its own dtype (no 32-bit accumulator)
    assert_close(mx.sum(mx.array(3, mx.uint8), stream=device), 3, dtype=mx.uint8)
    assert_close(mx.prod(mx.array(True), keepdims=True, stream=device), True, dtype=mx.bool_)
    assert_close(mx.sum(mx.array([200, 100], mx.uint8), axis=(), stream=device), [200, 100], dtype=mx.uint8)
    assert_close(mx.sum(mx.array([200, 100], mx.uint8), stream=device), 300, dtype=mx.uint32)


def test_exclusive_complex_extrema_start_at_the_extremes(device):
    z = mx.array([[1 + 2j, 0.5 + 1j]])
    assert_close(mx.cummin(z, axis=1, inclusive=False, stream=device), [[complex(INF, INF), 1 + 2j]])
    assert_close(mx.cummax(z, axis=1, inclusive=False, reverse=True, stream=device), [[0.5 + 1j, complex(-INF, -INF)]])
    assert_close(mx.logcumsumexp(z, axis=1, inclusive=False, stream=device)[0, 0], complex(-INF, 0))


# -- integer and float division, signs ------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [mx.int8, mx.uint16, mx.int32, mx.uint64])
def test_integer_remainder_by_zero_is_the_dividend(device, dtype):
    x = np.array([5, 3, 0, 7])
    y = np.array([0, 2, 0, 0])
    # x // 0 is 0 and x % 0 is x, so that x == (x // y) * y + x % y holds everywhere
    assert_close(mx.remainder(mx.array(x, dtype), mx.array(y, dtype), stream=device), [5, 1, 0, 7], dtype=dtype)
    assert_close(mx.floor_divide(mx.array(x, dtype), mx.array(y, dtype), stream=device), [0, 1, 0, 0], dtype=dtype)
    assert_close(mx.remainder(mx.array([True, False]), mx.array([False, False]), stream=device), [True, False],
                 dtype=mx.bool_)


@pytest.mark.parametrize("dtype", [mx.float16, mx.float32, mx.float64])
def test_float_floor_divide_is_the_floor_of_the_quotient(device, dtype):
    x = np.array([1.0, INF, -INF, -7.0, 7.0, 5.0])
    y = np.array([0.1, 4.0, 4.0, INF, 0.0, -0.0])
    with np.errstate(all="ignore"):
        want = np.floor(x.astype(dtype.np) / y.astype(dtype.np))  # NumPy's floor_divide gives 9, nan, nan, -1
    assert_close(mx.floor_divide(mx.array(x, dtype), mx.array(y, dtype), stream=device), want, dtype=dtype)


def test_shifts_of_bools_are_uint8(device):
    t = mx.array([True, False])
    assert_close(mx.left_shift(t, mx.array([True, True]), stream=device), [2, 0], dtype=mx.uint8)
    assert_close(mx.right_shift(t, t, stream=device), [0, 0], dtype=mx.uint8)
    assert_close(t << t, [2, 0], dtype=mx.uint8)


def test_logical_ops_take_scalars_as_truth_values(device):
    # no overflow check for a scalar that does not fit the array's dtype: it is only true or false
    x = mx.array([1, 0], dtype=mx.uint8)
    assert_close(mx.logical_or(x, -3, stream=device), [True, True], dtype=mx.bool_)
    assert_close(mx.logical_and(300, x, stream=device), [True, False], dtype=mx.bool_)
    assert_close(mx.logical_and(x, 0.0, stream=device), [False, False], dtype=mx.bool_)
    # a float scalar too, though the array's dtype would round it to zero (MLX: True)
    h = mx.array([1.0, 0.0], dtype=mx.float16)
    assert_close(mx.logical_and(h, 1e-8, stream=device), [True, False], dtype=mx.bool_)
    assert_close(mx.logical_or(1e-8, h, stream=device), [True, True], dtype=mx.bool_)


def test_rounding_bools_to_tens_gives_false(device):
    assert_close(mx.round(mx.array([True, False]), -1, stream=device), [False, False], dtype=mx.bool_)
    assert_close(mx.round(mx.array([True, False]), 2, stream=device), [True, False], dtype=mx.bool_)


def test_sign_of_nan_is_zero_and_imag_of_reals_is_zero(device):
    for dtype in (mx.float16, mx.bfloat16, mx.float32):
        assert_close(mx.sign(mx.array([float("nan"), -2.0, 0.0], dtype), stream=device), [0, -1, 0], dtype=dtype)
    assert_close(mx.imag(mx.array([-INF, float("nan"), -2.0]), stream=device), [0, 0, 0], dtype=mx.float32)
    assert_close(mx.imag(mx.array([True, False]), stream=device), [False, False], dtype=mx.bool_)


def test_maximum_and_minimum_ties_go_to_the_second_argument():
    x = mx.array([1.0, 2.0, 3.0])
    y = mx.array([1.0, 5.0, 0.0])
    for f, first in [(mx.maximum, [0, 0, 1]), (mx.minimum, [0, 1, 0])]:
        gx, gy = mx.grad(lambda a, b, f=f: mx.sum(f(a, b)), argnums=(0, 1))(x, y)
        assert_close(gx, first)
        assert_close(gy, 1 - np.array(first))
    assert_close(mx.grad(lambda a: mx.sum(mx.maximum(a, 0.0)))(mx.array([0.0, 1.0])), [0, 1])  # relu at 0


# -- creation ---------------------------------------------------------------------------------------------------
def test_arange_inference_and_overloads(device):
    a = mx.arange(2**40, 2**40 + 3, stream=device)  # used to raise an OverflowError
    assert a.dtype == mx.int64 and a.tolist() == [2**40, 2**40 + 1, 2**40 + 2]
    assert mx.arange(-(2**31), -(2**31) + 2).dtype == mx.int32
    assert mx.arange(stop=2**40, step=-1).dtype == mx.int64
    assert mx.arange(stop=3, stream=device).tolist() == [0, 1, 2]
    assert mx.arange(start=1, stop=3, stream=device).tolist() == [1, 2]
    assert mx.arange(-3, step=-1, stream=device).tolist() == [0, -1, -2]
    assert mx.arange(0, 1, INF, stream=device).tolist() == [0.0]
    assert mx.arange(-5, 0, 1, mx.uint8, stream=device).tolist() == [251, 252, 253, 254, 255]  # wraps, as MLX
    with pytest.raises(TypeError, match="arange"):
        mx.arange(start=1, step=2)
    with pytest.raises(ValueError, match="maximum size"):
        mx.arange(0, 2**31)
    for args in [(float("nan"), 1), (0, INF), (True,)]:
        with pytest.raises(ValueError, match="arange"):
            mx.arange(*args)
    with pytest.raises(ValueError, match="arange"):
        mx.arange(5, dtype=mx.bool_)


@pytest.mark.parametrize("num", [0, 1, 2, 7])
def test_linspace_endpoint_and_dtypes(device, num):
    for endpoint in (True, False):
        got = mx.linspace(-2.7, 4.1, num, endpoint, stream=device)
        assert_close(got, np.linspace(-2.7, 4.1, num, endpoint=endpoint), rtol=1e-6)
    # integer dtypes truncate toward zero, as MLX (NumPy floors)
    assert mx.linspace(-1, 0, 3, dtype=mx.int32, stream=device).tolist() == [-1, 0, 0]


def test_like_constructors_take_a_dtype(device):
    x = mx.array([1, 2, 3])
    for f in (mx.zeros_like, mx.ones_like, mx.empty_like):
        assert f(x, stream=device).dtype == mx.int32
        assert f(x, mx.float16, stream=device).dtype == mx.float16
        assert f(x, dtype=mx.float32, stream=device).dtype == mx.float32


# -- shapes -----------------------------------------------------------------------------------------------------
def test_shape_dimensions_are_32_bit():
    big = mx.zeros(2**30)
    cases = [(lambda: mx.zeros(2**31), 2**31), (lambda: mx.ones([2**31]), 2**31),
             (lambda: mx.full(2**31, 0.0), 2**31), (lambda: mx.zeros([-(2**31) - 1]), -(2**31) - 1),
             (lambda: mx.reshape(mx.zeros(4), [2**31]), 2**31),
             (lambda: mx.broadcast_to(mx.zeros(4), [2**31, 1]), 2**31),
             (lambda: mx.concatenate([big] * 3), 3 * 2**30), (lambda: mx.repeat(big, 2), 2**31),
             (lambda: mx.tile(big, 3), 3 * 2**30), (lambda: mx.pad(big, 2**30), 3 * 2**30),
             (lambda: mx.kron(mx.zeros(2**16), mx.zeros(2**16)), 2**32)]
    for make, value in cases:
        with pytest.raises(OverflowError, match=str(value)):
            make()
    assert mx.zeros((2**31 - 1,)).shape == (2**31 - 1,)  # (lazy: never allocated)


# -- layout -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["reflect", "symmetric"])
@pytest.mark.parametrize("shape,widths", [((8,), [(2, 3)]), ((4,), [(10, 7)]), ((1,), [(3, 2)]),
                                          ((2,), [(5, 6)]), ((5, 6), [(9, 9), (11, 0)]),
                                          ((3, 4, 5), [(1, 1), (0, 0), (7, 3)])])
def test_pad_reflect_symmetric(device, rng, mode, shape, widths):
    x = rng.standard_normal(shape).astype(np.float32)
    out = mx.pad(mx.array(x), widths, mode=mode, stream=device)
    np.testing.assert_array_equal(np.asarray(out), np.pad(x, widths, mode=mode))
    # vjp: each output element sends its cotangent back to the element it copies
    c = rng.standard_normal(out.shape).astype(np.float32)
    src = np.pad(np.arange(x.size).reshape(shape), widths, mode=mode)
    want = np.zeros(x.size, np.float64)
    np.add.at(want, src.reshape(-1), c.reshape(-1))
    got = mx.vjp(lambda a: mx.pad(a, widths, mode=mode), [mx.array(x)], [mx.array(c)])[1][0]
    assert_close(got, want.reshape(shape), rtol=1e-5, atol=1e-5)


def test_pad_of_a_scalar_takes_no_pairs(device):
    assert_close(mx.pad(mx.array(2), [], stream=device), 2)
    with pytest.raises(ValueError, match="pad"):
        mx.pad(mx.zeros(2), [])


def test_pad_refuses_an_empty_axis():
    with pytest.raises(ValueError, match="reflect"):
        mx.pad(mx.zeros((0, 3)), [(1, 1), (0, 0)], mode="reflect")
    assert mx.pad(mx.zeros((0, 3)), [(0, 0), (2, 1)], mode="symmetric").shape == (0, 6)


def test_roll_without_axis_adds_the_shifts(device):
    x = np.arange(10).reshape(2, 5)
    for s in [(2, 2, 2), (-1, 3)]:
        np.testing.assert_array_equal(np.asarray(mx.roll(mx.array(x), s, stream=device)), np.roll(x, s))


def test_layout_corner_cases(device):
    assert isinstance(mx.meshgrid(mx.array([1, 2])), tuple) and mx.meshgrid() == ()
    a = mx.zeros((4, 0))
    assert mx.take(a, mx.array([1, 2]), axis=0, stream=device).shape == (2, 0)
    with pytest.raises(ValueError, match="empty axis"):
        mx.take(a, mx.array([[1]]), axis=1)
    e = mx.array([], mx.float32)
    assert mx.put_along_axis(e, e, e, axis=None, stream=device).shape == (0,)  # empty indices of any dtype
    with pytest.raises(TypeError, match="integers"):
        mx.put_along_axis(mx.zeros(3), mx.array([0.0]), mx.array([1.0]), axis=0)


# -- products ---------------------------------------------------------------------------------------------------
def test_product_errors():
    with pytest.raises(ValueError, match="kron"):
        mx.kron(mx.array([]), mx.array([1, 2]))
    with pytest.raises(ValueError, match="vecdot"):
        mx.vecdot(mx.array(1), mx.array([1]))
    with pytest.raises(ValueError, match="vecdot"):
        mx.vecdot(mx.array([1, 2]), mx.array([1, 2]), axis=1)
    with pytest.raises(ValueError, match="addmm"):
        mx.addmm(mx.zeros((2, 2, 2)), mx.zeros((2, 2)), mx.zeros((2, 2)))
    with pytest.raises(ValueError, match="segmented_mm"):
        mx.segmented_mm(mx.ones((2, 4, 4)), mx.ones((2, 4, 4)), mx.array([[0, 2], [2, 4]]))


def test_vecdot_conjugates_and_widens(device):
    got = mx.vecdot(mx.array([1 + 2j, 3 + 4j]), mx.array([5 + 6j, 7 + 8j]), stream=device)
    assert_close(got, np.vdot([1 + 2j, 3 + 4j], [5 + 6j, 7 + 8j]))
    small = mx.vecdot(mx.array([100, 100], mx.int8), mx.array([2, 2], mx.int8), stream=device)
    assert small.dtype == mx.int32 and small.item() == -112  # as MLX: products in int8, their sum in int32


def test_gather_indices_need_stop_gradient():
    a = mx.ones((4, 1, 2, 2))

    def fun(w, stop):
        idx = mx.reshape(mx.argsort(w)[:2], (1, 2))
        idx = mx.stop_gradient(idx) if stop else idx
        return mx.gather_mm(a, a, idx, idx).sum()

    with pytest.raises(ValueError, match="stop_gradient"):
        mx.grad(lambda w: fun(w, False))(mx.array([3.0, 1.0, 2.0, 0.0]))
    assert mx.grad(lambda w: fun(w, True))(mx.array([3.0, 1.0, 2.0, 0.0])).tolist() == [0.0] * 4


# -- misc -------------------------------------------------------------------------------------------------------
def test_hadamard_of_a_scalar(device):
    assert mx.hadamard_transform(mx.array(5.0), stream=device).item() == 5.0
    assert mx.hadamard_transform(mx.array(5.0), scale=0.2, stream=device).item() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="hadamard_transform"):
        mx.hadamard_transform(mx.array([]))


def test_fp8_round_trip(device):
    vals = np.array([448, 256, 192, 96, 48, 24, 12, 6, 3, 2, 0.015625, 0.001953125, -3.25, 0.0], np.float32)
    codes = mx.to_fp8(mx.array(vals), stream=device)
    assert codes.dtype == mx.uint8
    back = mx.from_fp8(codes, stream=device)
    assert back.dtype == mx.bfloat16
    np.testing.assert_array_equal(np.asarray(mx.from_fp8(codes, mx.float32, stream=device)), vals)
    # rounding to nearest even and saturation at 448, NaN and infinities included (as MLX)
    edge = mx.array([500.0, INF, -INF, float("nan"), 0.0009765625, -0.0, 3.3])
    assert mx.to_fp8(edge, stream=device).tolist() == [126, 126, 254, 126, 0, 128, 0x45]
    with pytest.raises(ValueError, match="from_fp8"):
        mx.from_fp8(mx.array([1.0]))
    with pytest.raises(ValueError, match="to_fp8"):
        mx.to_fp8(mx.array([1]))


def test_fp8_codes_match_ml_dtypes(device):
    ml_dtypes = pytest.importorskip("ml_dtypes")
    codes = np.arange(256, dtype=np.uint8)
    want = codes.view(ml_dtypes.float8_e4m3fn).astype(np.float32)
    got = np.asarray(mx.from_fp8(mx.array(codes), mx.float32, stream=device))
    np.testing.assert_array_equal(got, want)
    x = np.random.default_rng(0).uniform(-440, 440, 20000).astype(np.float32)
    x *= np.exp2(np.random.default_rng(1).integers(-20, 1, x.size)).astype(np.float32)
    want = x.astype(ml_dtypes.float8_e4m3fn).view(np.uint8)
    np.testing.assert_array_equal(np.asarray(mx.to_fp8(mx.array(x), stream=device)), want)


def test_searchsorted_under_vmap():
    seq = mx.arange(8, dtype=mx.float32)
    vs = mx.random.uniform(0, 10, (3, 5), key=mx.random.key(0))
    assert mx.array_equal(mx.vmap(lambda v: mx.searchsorted(seq, v))(vs), mx.searchsorted(seq, vs)).item()
    with pytest.raises(ValueError, match="searchsorted"):
        mx.vmap(lambda s: mx.searchsorted(s, mx.array([1.0])))(mx.zeros((3, 4)))
