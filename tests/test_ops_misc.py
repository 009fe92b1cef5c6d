"""Misc ops against NumPy: nan_to_num, isclose, allclose, array_equal, median, divmod, trace, diff,
hadamard_transform, windows, minmax, depends."""

import numpy as np
import pytest
from conftest import assert_close

import umx as mx

SPECIAL = np.array([0.0, np.nan, np.inf, -np.inf, 1.5, -2.0], np.float32)


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_nan_to_num(device, dtype):
    x = SPECIAL.astype(dtype)
    assert_close(mx.nan_to_num(mx.array(x), stream=device), np.nan_to_num(x))
    got = mx.nan_to_num(mx.array(x), nan=-1.0, posinf=9.0, neginf=-9.0, stream=device)
    assert got.dtype == mx.array(x).dtype
    assert_close(got, np.nan_to_num(x, nan=-1.0, posinf=9.0, neginf=-9.0))
    i = np.arange(3, dtype=np.int32)
    assert_close(mx.nan_to_num(mx.array(i), stream=device), i, dtype=mx.int32)


def test_isclose_allclose_array_equal(device, rng):
    a = np.concatenate([SPECIAL, rng.standard_normal(4).astype(np.float32)])
    b = a.copy()
    b[4] += 1e-6
    b[-1] += 1.0
    b[1] = 1.0
    for kw in ({}, {"rtol": 1e-3}, {"atol": 2.0}, {"equal_nan": True}):
        assert_close(mx.isclose(mx.array(a), mx.array(b), **kw, stream=device), np.isclose(a, b, **kw))
        assert_close(mx.isclose(mx.array(a), mx.array(a), **kw, stream=device), np.isclose(a, a, **kw))
        assert mx.allclose(mx.array(a), mx.array(b), **kw, stream=device).item() == np.allclose(a, b, **kw)
    assert mx.allclose(mx.array(a), mx.array(a), equal_nan=True, stream=device).item()
    assert not mx.allclose(mx.array(a), mx.array(a), stream=device).item()
    assert mx.allclose(mx.array([1, 2]), mx.array([1.0, 2.0]), stream=device).item()
    assert_close(mx.isclose(mx.array(a[:3]), 0.0, stream=device), np.isclose(a[:3], 0.0))
    assert mx.array_equal(mx.array([1, 2]), mx.array([1.0, 2.0]), stream=device).item()
    assert not mx.array_equal(mx.array([1, 2]), mx.array([1, 2, 3]), stream=device).item()
    assert not mx.array_equal(mx.array(a), mx.array(a), stream=device).item()
    assert mx.array_equal(mx.array(a), mx.array(a), equal_nan=True, stream=device).item()
    assert mx.array_equal(mx.zeros((0, 2)), mx.zeros((0, 2)), stream=device).item()


@pytest.mark.parametrize("shape,axis", [((7,), None), ((4, 6), 0), ((4, 6), -1), ((2, 3, 4), (0, 2)),
                                        ((3, 4), None)])
@pytest.mark.parametrize("dtype", [np.float32, np.int32])
def test_median(device, rng, shape, axis, dtype):
    x = (rng.standard_normal(shape) * 10).astype(dtype)
    got = mx.median(mx.array(x), axis, stream=device)
    assert got.dtype == mx.float32
    assert_close(got, np.median(x.astype(np.float64), axis))
    assert_close(mx.median(mx.array(x), axis, keepdims=True, stream=device),
                 np.median(x.astype(np.float64), axis, keepdims=True))


def test_median_errors():
    with pytest.raises(ValueError, match="median"):
        mx.median(mx.zeros((2, 3)), axis=2)
    with pytest.raises(ValueError, match="median"):
        mx.median(mx.zeros((0, 3)), axis=0)


def test_divmod(device, rng):
    a = rng.integers(-10, 10, (3, 4)).astype(np.int32)
    b = rng.integers(1, 5, (4,)).astype(np.int32)
    q, r = mx.divmod(mx.array(a), mx.array(b), stream=device)
    eq, er = np.divmod(a, b)
    assert_close(q, eq, dtype=mx.int32)
    assert_close(r, er, dtype=mx.int32)
    q, r = divmod(mx.array(a.astype(np.float32)), 3)
    eq, er = np.divmod(a.astype(np.float32), 3)
    assert_close(q, eq)
    assert_close(r, er)


@pytest.mark.parametrize("shape", [(4, 4), (3, 5), (2, 3, 4)])
def test_trace(device, rng, shape):
    x = rng.standard_normal(shape).astype(np.float32)
    for off in (-1, 0, 2):
        assert_close(mx.trace(mx.array(x), off, stream=device), np.trace(x, off), atol=1e-5)
    assert_close(mx.trace(mx.array(x), 0, -1, -2, stream=device), np.trace(x, 0, -1, -2), atol=1e-5)
    i = rng.integers(0, 5, shape).astype(np.int32)
    assert_close(mx.trace(mx.array(i), dtype=mx.float32, stream=device), np.trace(i).astype(np.float32),
                 dtype=mx.float32)
    with pytest.raises(ValueError, match="diagonal"):
        mx.trace(mx.zeros(3))


@pytest.mark.parametrize("shape,axis", [((6,), -1), ((4, 5), 0), ((2, 3, 4), 1), ((0, 3), 1)])
@pytest.mark.parametrize("n", [0, 1, 2])
@pytest.mark.parametrize("dtype", [np.float32, np.int32, np.bool_])
def test_diff(device, rng, shape, axis, n, dtype):
    x = (rng.standard_normal(shape) * 5).astype(dtype)
    assert_close(mx.diff(mx.array(x), n, axis, stream=device), np.diff(x, n, axis))


def test_diff_errors():
    with pytest.raises(ValueError, match="diff"):
        mx.diff(mx.array(1.0))
    with pytest.raises(ValueError, match="diff"):
        mx.diff(mx.zeros(3), -1)
    with pytest.raises(ValueError, match="diff"):
        mx.diff(mx.zeros(3), 1, axis=1)


def _hadamard(n):
    h = np.ones((1, 1))
    while h.shape[0] < n:
        h = np.kron(np.array([[1, 1], [1, -1]]), h)
    return h


@pytest.mark.parametrize("n", [1, 2, 8, 64])
def test_hadamard_transform(device, rng, n):
    x = rng.standard_normal((3, n)).astype(np.float32)
    h = _hadamard(n)
    assert_close(mx.hadamard_transform(mx.array(x), stream=device), x @ h / np.sqrt(n), rtol=1e-4, atol=1e-5)
    assert_close(mx.hadamard_transform(mx.array(x), scale=1.0, stream=device), x @ h, rtol=1e-4, atol=1e-4)
    i = rng.integers(-3, 3, (n,)).astype(np.int32)
    assert_close(mx.hadamard_transform(mx.array(i), 1.0, stream=device), i @ h, dtype=mx.float32)
    with pytest.raises(ValueError, match="hadamard_transform"):
        mx.hadamard_transform(mx.zeros((2, 6)))


def _transform_matrix(n, device):
    """``H`` such that the transform of ``x`` is ``H @ x`` (scale 1), read from the transforms of the unit vectors."""
    return np.asarray(mx.hadamard_transform(mx.eye(n), scale=1.0, stream=device)).T.astype(np.float64)


@pytest.mark.parametrize("m", [12, 20, 28])
def test_hadamard_transform_of_mlx_sizes(device, rng, m):
    hm = _transform_matrix(m, device)
    assert set(np.unique(hm)) == {-1.0, 1.0}
    np.testing.assert_array_equal(hm @ hm.T, m * np.eye(m))  # a Hadamard matrix
    for k in (0, 1, 3):
        n = m * 2**k
        h = np.kron(hm, _hadamard(2**k))  # its blocks: the order-m matrix times the Sylvester one
        x = rng.standard_normal((2, 3, n)).astype(np.float32)
        assert_close(mx.hadamard_transform(mx.array(x), stream=device), x @ h.T / np.sqrt(n), rtol=1e-4, atol=1e-5)
        half = x.astype(np.float16)
        y = mx.hadamard_transform(mx.array(half), scale=0.5, stream=device)
        # computed in float32 and rounded once: within one float16 rounding
        assert_close(y, half.astype(np.float64) @ h.T * 0.5, rtol=1e-3, atol=1e-3, dtype=mx.float16)
    with pytest.raises(ValueError, match="m \\* 2\\*\\*k"):
        mx.hadamard_transform(mx.zeros((2, 3 * m)), stream=device)


def test_hadamard_transform_matches_mlx_matrices(rng):
    mlx = pytest.importorskip("mlx.core")
    for n in (12, 40, 112):
        ours = _transform_matrix(n, mx.cpu)
        theirs = np.array(mlx.hadamard_transform(mlx.eye(n), scale=1.0, stream=mlx.cpu)).T
        np.testing.assert_array_equal(ours, theirs)


@pytest.mark.parametrize("name", ["bartlett", "blackman", "hamming", "hanning"])
@pytest.mark.parametrize("m", [0, 1, 2, 7, 16])
def test_windows(device, name, m):
    assert_close(getattr(mx, name)(m, stream=device), getattr(np, name)(m), atol=1e-6, dtype=mx.float32)


def test_minmax(device, rng):
    x = rng.standard_normal((3, 4)).astype(np.float32)
    lo, hi = mx.minmax(mx.array(x), stream=device)
    assert_close(lo, x.min())
    assert_close(hi, x.max())
    lo, hi = mx.minmax(mx.array(x), axis=-1, keepdims=True, stream=device)
    assert_close(lo, x.min(-1, keepdims=True))
    assert_close(hi, x.max(-1, keepdims=True))


def test_depends(device):
    a = mx.array([1.0, 2.0])
    b = mx.add(a, 1, stream=device)
    c = mx.multiply(a, 3, stream=device)
    out = mx.depends(b, c)
    assert_close(out, [2.0, 3.0])
    assert c._data is not None  # the dependency ran first
    xs = mx.depends([a, b], [c])
    assert isinstance(xs, list) and len(xs) == 2
    assert_close(xs[1], [2.0, 3.0])
