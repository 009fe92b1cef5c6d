"""Sorting and searching against NumPy: sort, argsort, partition, argpartition, topk, searchsorted, unique,
count_nonzero."""

import numpy as np
import pytest
from conftest import assert_close

import umx as mx

CASES = [((7,), -1), ((3, 5), 0), ((3, 5), -1), ((2, 3, 4), 1), ((0, 4), -1), ((4, 0), 0)]


def _rand(rng, shape, dtype):
    if dtype is np.bool_:
        return rng.random(shape) > 0.5
    x = rng.integers(-5, 5, shape) if np.dtype(dtype).kind in "iu" else rng.standard_normal(shape)
    if np.dtype(dtype).kind == "u":
        x = np.abs(x)
    return x.astype(dtype)


@pytest.mark.parametrize("shape,axis", CASES)
@pytest.mark.parametrize("dtype", [np.float32, np.int32, np.uint8, np.bool_])
def test_sort_argsort(device, rng, shape, axis, dtype):
    x = _rand(rng, shape, dtype)
    a = mx.array(x)
    assert_close(mx.sort(a, axis, stream=device), np.sort(x, axis))
    got = mx.argsort(a, axis, stream=device)
    assert got.dtype == mx.uint32
    assert_close(got, np.argsort(x, axis, kind="stable"))
    assert_close(mx.sort(a, None, stream=device), np.sort(x, None))


def test_sort_nan_last(device):
    x = np.array([3.0, np.nan, -1.0, np.inf, -np.inf], np.float32)
    assert_close(mx.sort(mx.array(x), stream=device), np.sort(x))
    assert_close(mx.argsort(mx.array(x), stream=device), np.argsort(x, kind="stable"))


@pytest.mark.parametrize("shape,axis", CASES[:4])
@pytest.mark.parametrize("kth", [0, 2, -1])
def test_partition(device, rng, shape, axis, kth):
    x = rng.standard_normal(shape).astype(np.float32)
    a = mx.array(x)
    p = np.array(mx.partition(a, kth, axis, stream=device))
    s = np.sort(x, axis)
    k = kth % x.shape[axis]
    kv = np.take(s, [k], axis)
    np.testing.assert_array_equal(np.take(p, [k], axis), kv)
    assert (np.take(p, np.arange(k), axis) <= kv).all()
    assert (np.take(p, np.arange(k + 1, x.shape[axis]), axis) >= kv).all()
    idx = mx.argpartition(a, kth, axis, stream=device)
    assert idx.dtype == mx.uint32
    np.testing.assert_array_equal(np.take_along_axis(x, np.array(idx).astype(np.int64), axis), p)


@pytest.mark.parametrize("shape,axis", CASES[:4])
def test_topk(device, rng, shape, axis):
    x = rng.standard_normal(shape).astype(np.float32)
    for k in (1, 3):
        got = np.sort(np.array(mx.topk(mx.array(x), k, axis, stream=device)), axis)
        exp = np.take(np.sort(x, axis), np.arange(x.shape[axis] - k, x.shape[axis]), axis)
        assert_close(got, exp)
    got = np.sort(np.array(mx.topk(mx.array(x), 2, None, stream=device)))
    assert_close(got, np.sort(x, None)[-2:])


def test_sort_errors():
    a = mx.zeros((2, 3))
    for f in (mx.sort, mx.argsort):
        with pytest.raises(ValueError, match=f.__name__):
            f(a, 2)
        with pytest.raises(ValueError, match=f.__name__):
            f(mx.array(1.0), 0)
    with pytest.raises(ValueError, match="partition"):
        mx.partition(a, 3)
    with pytest.raises(ValueError, match="argpartition"):
        mx.argpartition(a, 0, axis=-3)
    with pytest.raises(ValueError, match="topk"):
        mx.topk(a, 4)
    with pytest.raises(ValueError, match="topk"):
        mx.topk(a, -1)
    for k in (np.float32(2), "2", 2.0):  # not an integer: a TypeError, as MLX's
        with pytest.raises(TypeError, match="topk"):
            mx.topk(a, k)
        with pytest.raises(TypeError, match="reshape"):
            mx.reshape(a, [k, -1])
    assert mx.topk(a, np.int32(1)).shape[-1] == 1


def test_topk_of_none_is_empty(device):
    # as in MLX: k = 0 is allowed, and gives no values
    got = mx.topk(mx.zeros((2, 3)), 0, stream=device)
    assert got.shape == (2, 0) and got.dtype == mx.float32
    assert mx.topk(mx.zeros((2, 0), dtype=mx.int8), 0, axis=1, stream=device).shape == (2, 0)


@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("dtype", [np.float32, np.int32])
def test_searchsorted(device, rng, side, dtype):
    s = np.sort(_rand(rng, (20,), dtype))
    for vshape in [(), (5,), (2, 3), (0,)]:
        v = _rand(rng, vshape, dtype)
        got = mx.searchsorted(mx.array(s), mx.array(v), side=side, stream=device)
        assert got.dtype == mx.uint32
        assert_close(got, np.searchsorted(s, v, side=side))
    assert_close(mx.searchsorted(mx.array(s), 0.5, side, stream=device), np.searchsorted(s, 0.5, side))
    doc = mx.array([1, 2, 2, 4])
    assert mx.searchsorted(doc, mx.array([0, 2, 3, 5]), stream=device).tolist() == [0, 1, 3, 4]
    assert mx.searchsorted(doc, mx.array([0, 2, 3, 5]), "right", stream=device).tolist() == [0, 3, 3, 4]
    with pytest.raises(ValueError, match="searchsorted"):
        mx.searchsorted(mx.zeros((2, 2)), 1.0)
    with pytest.raises(ValueError, match="searchsorted"):
        mx.searchsorted(mx.zeros(2), 1.0, side="middle")


@pytest.mark.parametrize("shape", [(10,), (3, 4), (0,)])
def test_unique(device, rng, shape):
    x = rng.integers(0, 5, shape).astype(np.int32)
    vals, first, inv, counts = np.unique(x, return_index=True, return_inverse=True, return_counts=True)
    n = vals.size
    for size in (n, n + 3, max(n - 2, 0)):
        got = mx.unique(mx.array(x), size, return_index=True, return_inverse=True, return_counts=True,
                        fill_value=-1, stream=device)
        k = min(n, size)
        exp_v = np.concatenate([vals[:k], np.full(size - k, -1, np.int32)])
        exp_i = np.concatenate([first[:k], np.zeros(size - k, np.int64)])
        exp_c = np.concatenate([counts[:k], np.zeros(size - k, np.int64)])
        assert_close(got[0], exp_v, dtype=mx.int32)
        assert_close(got[1], exp_i, dtype=mx.uint32)
        assert_close(got[2], np.minimum(inv.reshape(x.shape), max(size - 1, 0)), dtype=mx.uint32)
        assert_close(got[3], exp_c, dtype=mx.uint32)
    assert_close(mx.unique(mx.array(x), n, stream=device), vals)
    if n:  # default padding repeats the smallest value
        assert_close(mx.unique(mx.array(x), n + 1, stream=device), np.concatenate([vals, vals[:1]]))
    v, c = mx.unique(mx.array(x), n, return_counts=True, stream=device)
    assert_close(c, counts)
    with pytest.raises(ValueError, match="unique"):
        mx.unique(mx.array(x), -1)


@pytest.mark.parametrize("axis", [None, 0, -1, (0, 1)])
@pytest.mark.parametrize("dtype", [np.float32, np.int32, np.bool_])
def test_count_nonzero(device, rng, axis, dtype):
    x = _rand(rng, (3, 4), dtype)
    got = mx.count_nonzero(mx.array(x), axis=axis, stream=device)
    assert got.dtype == mx.int32
    assert_close(got, np.count_nonzero(x, axis=axis))
    assert_close(mx.count_nonzero(mx.array(x), axis=axis, keepdims=True, stream=device),
                 np.count_nonzero(x, axis=axis, keepdims=True))
    with pytest.raises(ValueError, match="count_nonzero"):
        mx.count_nonzero(mx.array(x), axis=2)
