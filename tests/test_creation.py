"""Array creation: from Python and NumPy values, filled arrays, ranges, identity matrices, *_like forms."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import assert_close

import umx as mx

SHAPES = [(), (0,), (3,), (2, 3), (2, 0, 4), (1, 2, 3, 1)]


def test_array_from_scalars_and_lists():
    assert mx.array(3).shape == () and mx.array(3).item() == 3
    assert mx.array([[1, 2], [3, 4]]).shape == (2, 2)
    assert mx.array([]).shape == (0,) and mx.array([]).dtype == mx.float32
    assert mx.array(((1.5, 2),)).tolist() == [[1.5, 2.0]]
    assert mx.array([mx.array(1), mx.array(2)]).tolist() == [1, 2]
    with pytest.raises(ValueError):
        mx.array([[1, 2], [3]])


def test_array_from_numpy(rng):
    for dt in (np.float32, np.float64, np.int8, np.uint16, np.int64, np.bool_, np.complex64, np.float16):
        x = (rng.standard_normal((3, 4)) * 10).astype(dt)
        a = mx.array(x)
        assert a.shape == (3, 4)
        np.testing.assert_array_equal(np.asarray(a), x.astype(np.float32) if dt is np.float64 else x)
    x = np.arange(12.0).reshape(3, 4)[:, ::2]  # non-contiguous
    assert_close(mx.array(x), x)
    x = np.ones(3, np.float32)
    a = mx.array(x)
    x[0] = 5  # the array does not alias the caller's buffer
    assert a.tolist() == [1.0, 1.0, 1.0]


def test_array_copies_and_asarray():
    a = mx.array([1, 2])
    c = mx.asarray(a)  # a new object over the same values: updating it leaves `a` alone
    assert c is not a and c.tolist() == [1, 2]
    c[0] = 7
    assert a.tolist() == [1, 2]
    assert mx.asarray(a, mx.float32).dtype == mx.float32
    b = mx.array(a)
    assert b is not a and b.tolist() == [1, 2]


@pytest.mark.parametrize("shape", SHAPES)
def test_zeros_ones_full(device, shape):
    z = mx.zeros(shape, stream=device)
    o = mx.ones(shape, dtype=mx.int16, stream=device)
    f = mx.full(shape, 2.5, stream=device)
    assert_close(z, np.zeros(shape), dtype=mx.float32)
    assert_close(o, np.ones(shape, np.int16), dtype=mx.int16)
    assert_close(f, np.full(shape, 2.5), dtype=mx.float32)
    assert mx.full(shape, 3, stream=device).dtype == mx.int32
    assert mx.full(shape, True, stream=device).dtype == mx.bool_
    assert mx.full(shape, 3, dtype=mx.float16, stream=device).dtype == mx.float16
    assert mx.zeros(list(shape), stream=device).shape == shape


def test_full_with_array_value(device):
    out = mx.full((2, 3), mx.array([1, 2, 3]), stream=device)
    assert out.tolist() == [[1, 2, 3], [1, 2, 3]]
    out = mx.full((2, 3), mx.array([[1.0], [2.0]]), dtype=mx.int32, stream=device)
    assert out.dtype == mx.int32 and out.tolist() == [[1, 1, 1], [2, 2, 2]]
    with pytest.raises(ValueError):
        mx.full((2, 3), mx.array([1, 2]), stream=device)


def test_int_shape_and_bad_shapes(device):
    assert mx.zeros(4, stream=device).shape == (4,)
    with pytest.raises(ValueError, match="negative"):
        mx.zeros((2, -1), stream=device)
    with pytest.raises(TypeError):
        mx.ones("ab", stream=device)


@pytest.mark.parametrize("args", [(5,), (2, 9), (2, 9, 3), (9, 2, -2), (0, 1, 0.25), (1.5,), (-3, 3, 0.5),
                                  (5, 2), (0,)])
def test_arange(device, args):
    got = mx.arange(*args, stream=device)
    want = np.arange(*args)
    is_int = all(isinstance(v, int) for v in args)
    assert got.dtype == (mx.int32 if is_int else mx.float32)
    assert_close(got, want)


def test_arange_dtype_and_errors(device):
    assert_close(mx.arange(0, 3, dtype=mx.float16, stream=device), np.arange(3), dtype=mx.float16)
    assert mx.arange(4, dtype=mx.int64, stream=device).dtype == mx.int64
    with pytest.raises(ValueError):
        mx.arange(0, 5, 0, stream=device)
    with pytest.raises(ValueError):
        mx.arange(0, float("inf"), stream=device)


@pytest.mark.parametrize("args", [(0, 1, 5), (-2.5, 3, 7), (1, 0, 4), (3, 3, 1), (0, 1, 0), (0, 10)])
def test_linspace(device, args):
    got = mx.linspace(*args, stream=device)
    assert got.dtype == mx.float32
    assert_close(got, np.linspace(*args), rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError):
        mx.linspace(0, 1, -1)


@pytest.mark.parametrize("args", [(3,), (2, 4), (4, 2, 1), (3, 3, -1), (3, 5, 7), (0,)])
def test_eye_identity(device, args):
    assert_close(mx.eye(*args, stream=device), np.eye(*args), dtype=mx.float32)
    assert_close(mx.eye(3, dtype=mx.int32, stream=device), np.eye(3, dtype=np.int32), dtype=mx.int32)
    assert_close(mx.identity(4, stream=device), np.identity(4), dtype=mx.float32)
    with pytest.raises(ValueError):
        mx.eye(-1)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", [mx.float32, mx.int8, mx.bool_, mx.float16])
def test_like(device, shape, dtype):
    a = mx.zeros(shape, dtype=dtype)
    for fn, val in ((mx.zeros_like, 0), (mx.ones_like, 1)):
        out = fn(a, stream=device)
        assert out.dtype == dtype and out.shape == shape
        np.testing.assert_array_equal(np.asarray(out), np.full(shape, val, dtype.np))
    out = mx.full_like(a, 1, stream=device)
    assert out.dtype == dtype and out.shape == shape
    assert mx.full_like(a, 2, dtype=mx.int32, stream=device).dtype == mx.int32
    assert mx.zeros_like(np.ones((2, 2)), stream=device).dtype == mx.float32


def test_creation_is_lazy_on_stream(device):
    s = mx.new_stream(device)
    for a in (mx.zeros(3, stream=s), mx.arange(3, stream=s), mx.eye(2, stream=s),
              mx.linspace(0, 1, 3, stream=s)):
        assert a._data is None and a._stream is s
    assert mx.array([1])._data is not None  # mx.array holds its values at once
