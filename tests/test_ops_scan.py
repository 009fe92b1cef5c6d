"""Scans against NumPy: cumsum, cumprod, cummax, cummin, logcumsumexp with axis, reverse and inclusive."""

import numpy as np
import pytest
from conftest import assert_close

import umx as mx

_NP = {
    "cumsum": np.add.accumulate, "cumprod": np.multiply.accumulate, "cummax": np.maximum.accumulate,
    "cummin": np.minimum.accumulate, "logcumsumexp": np.logaddexp.accumulate,
}
_IDENTITY = {"cumsum": 0, "cumprod": 1, "cummax": -np.inf, "cummin": np.inf, "logcumsumexp": -np.inf}


def _expected(name, x, axis, reverse, inclusive):
    if axis is None:
        x, axis = x.reshape(-1), 0
    if reverse:
        x = np.flip(x, axis)
    y = _NP[name](x, axis=axis, dtype=x.dtype) if name in ("cumsum", "cumprod") else _NP[name](x, axis=axis)
    if not inclusive and x.shape[axis]:
        ident = _IDENTITY[name]
        if x.dtype.kind in "iu" and not np.isfinite(ident):
            info = np.iinfo(x.dtype)
            ident = info.min if ident < 0 else info.max
        first = np.full(x.shape[:axis] + (1,) + x.shape[axis + 1:], ident, x.dtype)
        y = np.concatenate([first, np.take(y, np.arange(x.shape[axis] - 1), axis)], axis)
    return np.flip(y, axis) if reverse else y


@pytest.mark.parametrize("name", list(_NP))
@pytest.mark.parametrize("shape,axis", [((6,), 0), ((3, 4), 1), ((3, 4), -2), ((2, 3, 4), None), ((0, 3), 0),
                                        ((5,), None)])
@pytest.mark.parametrize("reverse,inclusive", [(False, True), (True, True), (False, False), (True, False)])
def test_scans(device, rng, name, shape, axis, reverse, inclusive):
    dtype = np.float32
    x = (rng.standard_normal(shape) * (0.7 if name == "cumprod" else 3)).astype(dtype)
    got = getattr(mx, name)(mx.array(x), axis, reverse=reverse, inclusive=inclusive, stream=device)
    assert got.dtype == mx.float32
    assert_close(got, _expected(name, x.astype(np.float64), axis, reverse, inclusive), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["cumsum", "cumprod", "cummax", "cummin"])
@pytest.mark.parametrize("dtype", [np.int32, np.int8, np.uint8])
def test_integer_scans_keep_dtype(device, rng, name, dtype):
    x = rng.integers(0, 4, (3, 5)).astype(dtype)
    for inclusive in (True, False):
        got = getattr(mx, name)(mx.array(x), -1, inclusive=inclusive, stream=device)
        assert got.dtype == mx.array(x).dtype
        assert_close(got, _expected(name, x, 1, False, inclusive))


def test_bool_and_integer_dtypes(device):
    b = np.array([True, False, True, True])
    assert_close(mx.cumsum(mx.array(b), stream=device), np.cumsum(b), dtype=mx.int32)
    assert_close(mx.cummax(mx.array(b), stream=device), np.maximum.accumulate(b), dtype=mx.bool_)
    got = mx.logcumsumexp(mx.array([1, 2, 3]), stream=device)
    assert_close(got, np.logaddexp.accumulate(np.array([1.0, 2.0, 3.0])), dtype=mx.float32)


def test_logcumsumexp_is_stable(device):
    x = np.array([-1000.0, 1000.0, -np.inf, 1000.0], np.float32)
    assert_close(mx.logcumsumexp(mx.array(x), stream=device), np.logaddexp.accumulate(x.astype(np.float64)))


def test_methods_and_aliases(device, rng):
    x = rng.standard_normal((3, 4)).astype(np.float32)
    a = mx.array(x)
    assert_close(a.cumsum(1, stream=device), np.cumsum(x, 1))
    assert_close(a.cumprod(stream=device), np.cumprod(x))
    assert_close(a.cummax(0, reverse=True, stream=device), _expected("cummax", x, 0, True, True))
    exp = np.logaddexp.accumulate(x.astype(np.float64), 1)
    assert_close(a.logcumsumexp(1, stream=device), exp, atol=1e-5)
    assert_close(mx.cumulative_sum(a, axis=1, stream=device), np.cumulative_sum(x, axis=1), atol=1e-5)
    assert_close(mx.cumulative_sum(a, axis=0, include_initial=True, stream=device),
                 np.cumulative_sum(x, axis=0, include_initial=True), atol=1e-5)
    assert_close(mx.cumulative_prod(mx.array(x[0]), include_initial=True, stream=device),
                 np.cumulative_prod(x[0], include_initial=True))
    # (MLX's cumulative_sum is cumsum: positional axis, reverse, the flattened array by default)
    assert_close(mx.cumulative_sum(a, 1, reverse=True, stream=device), np.cumsum(x[:, ::-1], 1)[:, ::-1], atol=1e-5)
    assert_close(mx.cumulative_prod(a, stream=device), np.cumprod(x), rtol=1e-5)
    assert_close(mx.cumulative_sum(a, 1, reverse=True, include_initial=True, stream=device),
                 np.concatenate([np.cumsum(x[:, ::-1], 1)[:, ::-1], np.zeros((3, 1))], 1), atol=1e-5)


def test_scans_convert_to_dtype_first(device):
    small = mx.array([100, 100], mx.int8)
    assert mx.cumsum(small, stream=device).tolist() == [100, -56]  # (int8 keeps its dtype, and wraps)
    wide = mx.cumsum(small, dtype=mx.int32, stream=device)
    assert wide.dtype == mx.int32 and wide.tolist() == [100, 200]
    assert mx.cumprod(mx.array([1.5, 2.0]), dtype=mx.int32, stream=device).tolist() == [1, 2]
    counted = mx.cumsum(mx.array([True, True]), dtype=mx.bool_, stream=device)  # (bool sums as int32, as MLX)
    assert counted.dtype == mx.int32 and counted.tolist() == [1, 2]


def test_scan_errors():
    a = mx.zeros((2, 3))
    for f in (mx.cumsum, mx.cumprod, mx.cummax, mx.cummin, mx.logcumsumexp):
        with pytest.raises(ValueError, match=f.__name__):
            f(a, 2)
        with pytest.raises(ValueError, match=f.__name__):
            f(mx.array(1.0), 0)
    with pytest.raises(ValueError, match="cumulative_sum"):
        mx.cumulative_sum(a, 2)


@pytest.mark.parametrize("ufunc", [np.maximum, np.minimum, np.logaddexp])
@pytest.mark.parametrize("n", [0, 1, 5, 8, 13])
def test_logstep_fallback_matches_accumulate(rng, ufunc, n):
    """The whole-array scan used where the array module has no ``accumulate`` (CuPy: max, min, logaddexp)."""
    from umx.backends.xp.scan import _logstep

    x = rng.standard_normal((3, n, 2))
    np.testing.assert_allclose(_logstep(np, ufunc, x, 1), ufunc.accumulate(x, axis=1), rtol=1e-12)
