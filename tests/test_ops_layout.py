"""Layout ops against NumPy: pad, tile, repeat, roll, diagonals, triangles, grids, strided views, gathers and
scatters along an axis, dynamic slices."""

import numpy as np
import pytest
from conftest import assert_close

import umx as mx

SHAPES = [(5,), (3, 4), (2, 3, 4), (0, 3)]
DTYPES = [np.float32, np.int32, np.bool_]


def _rand(rng, shape, dtype=np.float32):
    x = rng.standard_normal(shape) * 5
    return x.astype(dtype) if dtype is not np.bool_ else x > 0


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_pad_constant_and_edge(device, rng, shape, dtype):
    x = _rand(rng, shape, dtype)
    for pw in [1, (1, 2), [(1, 0)] * len(shape), ((2,),)]:
        assert_close(mx.pad(mx.array(x), pw, stream=device), np.pad(x, pw))
    assert_close(mx.pad(mx.array(x), 2, constant_values=3, stream=device), np.pad(x, 2, constant_values=3))
    if 0 not in shape:
        assert_close(mx.pad(mx.array(x), (2, 1), mode="edge", stream=device), np.pad(x, (2, 1), mode="edge"))


def test_pad_errors():
    a = mx.zeros((2, 3))
    with pytest.raises(ValueError, match="pad"):
        mx.pad(a, -1)
    with pytest.raises(ValueError, match="pad"):
        mx.pad(a, [(1, 1)] * 3)
    with pytest.raises(ValueError, match="pad"):
        mx.pad(a, 1, mode="wrap")
    with pytest.raises(ValueError, match="pad"):
        mx.pad(mx.zeros((0,)), 1, mode="edge")


@pytest.mark.parametrize("shape", SHAPES + [()])
def test_tile_repeat_roll(device, rng, shape):
    x = _rand(rng, shape, np.int32)
    a = mx.array(x)
    for reps in [2, (2, 1), (1, 2, 3)]:
        assert_close(mx.tile(a, reps, stream=device), np.tile(x, reps))
    assert_close(mx.repeat(a, 3, stream=device), np.repeat(x, 3))
    assert_close(mx.roll(a, 2, stream=device), np.roll(x, 2))
    if x.ndim:
        assert_close(mx.repeat(a, 2, axis=-1, stream=device), np.repeat(x, 2, axis=-1))
        assert_close(mx.roll(a, -3, axis=-1, stream=device), np.roll(x, -3, axis=-1))
    if x.ndim >= 2:
        assert_close(mx.roll(a, (1, 2), axis=(0, 1), stream=device), np.roll(x, (1, 2), axis=(0, 1)))


def test_tile_repeat_roll_errors():
    a = mx.zeros((2, 3))
    with pytest.raises(ValueError, match="repeat"):
        mx.repeat(a, -1)
    with pytest.raises(ValueError, match="repeat"):
        mx.repeat(a, 2, axis=2)
    with pytest.raises(ValueError, match="roll"):
        mx.roll(a, 1, axis=-3)
    with pytest.raises(ValueError, match="tile"):
        mx.tile(a, (-1,))


@pytest.mark.parametrize("shape", [(4, 4), (3, 5), (2, 3, 4), (0, 3)])
def test_diagonal_triangles(device, rng, shape):
    x = _rand(rng, shape)
    a = mx.array(x)
    for k in (-2, 0, 1, 7):
        assert_close(mx.diagonal(a, k, stream=device), np.diagonal(x, k))
        assert_close(mx.tril(a, k, stream=device), np.tril(x, k))
        assert_close(mx.triu(a, k, stream=device), np.triu(x, k))
    assert_close(mx.diagonal(a, 1, -1, -2, stream=device), np.diagonal(x, 1, -1, -2))
    assert_close(a.diagonal(stream=device), np.diagonal(x))
    if x.ndim == 2:
        assert_close(mx.diag(a, 1, stream=device), np.diag(x, 1))


def test_diag_tri(device, rng):
    v = rng.standard_normal(4).astype(np.float32)
    for k in (-1, 0, 2):
        assert_close(mx.diag(mx.array(v), k, stream=device), np.diag(v, k))
        assert_close(mx.tri(3, 5, k, stream=device), np.tri(3, 5, k), dtype=mx.float32)
    assert_close(mx.tri(4, dtype=mx.int32, stream=device), np.tri(4, dtype=np.int32), dtype=mx.int32)
    with pytest.raises(ValueError, match="diag"):
        mx.diag(mx.zeros((2, 2, 2)))
    with pytest.raises(ValueError, match="diagonal"):
        mx.diagonal(mx.zeros((3, 3)), 0, 1, -1)
    with pytest.raises(ValueError, match="tril"):
        mx.tril(mx.zeros(3))


@pytest.mark.parametrize("indexing", ["xy", "ij"])
@pytest.mark.parametrize("sparse", [False, True])
def test_meshgrid(device, indexing, sparse):
    xs = [np.arange(3, dtype=np.float32), np.arange(4, dtype=np.float32) * 2, np.arange(2, dtype=np.float32)]
    for n in (1, 2, 3):
        got = mx.meshgrid(*map(mx.array, xs[:n]), sparse=sparse, indexing=indexing, stream=device)
        exp = np.meshgrid(*xs[:n], sparse=sparse, indexing=indexing)
        assert len(got) == len(exp)
        for g, e in zip(got, exp):
            assert_close(g, e)
    with pytest.raises(ValueError, match="meshgrid"):
        mx.meshgrid(mx.zeros(2), indexing="yx")


def test_as_strided(device):
    x = np.arange(12, dtype=np.float32)
    a = mx.array(x)
    st = np.lib.stride_tricks.as_strided
    assert_close(mx.as_strided(a, (3, 4), (4, 1), stream=device), x.reshape(3, 4))
    assert_close(mx.as_strided(a, (4, 3), (2, 1), 1, stream=device), st(x[1:], (4, 3), (8, 4)))
    assert_close(mx.as_strided(a, (3, 3), (0, 1), stream=device), st(x, (3, 3), (0, 4)))
    assert_close(mx.as_strided(mx.array(x.reshape(3, 4)), stream=device), x.reshape(3, 4))
    with pytest.raises(ValueError, match="as_strided"):
        mx.as_strided(a, (4, 4), (4, 1))


@pytest.mark.parametrize("axis", [0, 1, -1])
def test_unstack(device, rng, axis):
    x = _rand(rng, (2, 3, 4))
    got = mx.unstack(mx.array(x), axis, stream=device)
    exp = np.moveaxis(x, axis, 0)
    assert len(got) == exp.shape[0]
    for g, e in zip(got, exp):
        assert_close(g, e)
    with pytest.raises(ValueError, match="unstack"):
        mx.unstack(mx.zeros(()))


def test_contiguous(device, rng):
    x = _rand(rng, (3, 4))
    assert_close(mx.contiguous(mx.array(x).T, stream=device), x.T)


@pytest.mark.parametrize("dtype", DTYPES)
def test_take(device, rng, dtype):
    x = _rand(rng, (3, 4, 5), dtype)
    a = mx.array(x)
    idx = np.array([[0, -1], [2, 1]], np.int32)
    assert_close(mx.take(a, mx.array(idx), stream=device), np.take(x, idx))
    for axis in (0, 1, -1):
        assert_close(mx.take(a, mx.array(idx), axis=axis, stream=device), np.take(x, idx, axis=axis))
        assert_close(mx.take(a, 2, axis=axis, stream=device), np.take(x, 2, axis=axis))
    assert_close(mx.take(a, mx.array(np.zeros(0, np.int32)), axis=1, stream=device),
                 np.take(x, np.zeros(0, np.int32), axis=1))
    with pytest.raises(ValueError, match="take"):
        mx.take(a, 0, axis=3)
    with pytest.raises(TypeError, match="take"):
        mx.take(a, mx.array([0.5]))
    with pytest.raises(IndexError, match="take"):
        mx.take(a, 9, axis=0)


@pytest.mark.parametrize("axis", [0, 1, -1, None])
def test_take_put_along_axis(device, rng, axis):
    x = _rand(rng, (3, 4, 5))
    a = mx.array(x)
    if axis is None:
        idx = rng.integers(-60, 60, (7,)).astype(np.int32)
    else:
        shape = list(x.shape)
        shape[axis] = 2
        idx = rng.integers(-x.shape[axis], x.shape[axis], shape).astype(np.int32)
    assert_close(mx.take_along_axis(a, mx.array(idx), axis, stream=device), np.take_along_axis(x, idx, axis))
    # numpy puts in index order, so repeated indices keep the last value; make them distinct per line
    if axis is not None:
        idx = np.argsort(rng.random(x.shape), axis=axis).take(np.arange(2), axis=axis).astype(np.int32)
    else:
        idx = rng.permutation(60)[:7].astype(np.int32)
    vals = rng.standard_normal(idx.shape).astype(np.float32)
    exp = x.copy()
    np.put_along_axis(exp, idx, vals, axis)
    assert_close(mx.put_along_axis(a, mx.array(idx), mx.array(vals), axis, stream=device), exp)
    exp = x.copy()
    np.put_along_axis(exp, idx, 7.0, axis)
    assert_close(mx.put_along_axis(a, mx.array(idx), 7.0, axis, stream=device), exp)


def test_take_along_axis_broadcasts(device, rng):
    x = _rand(rng, (3, 1, 5))
    idx = rng.integers(0, 5, (1, 4, 2)).astype(np.int32)
    exp = np.take_along_axis(np.broadcast_to(x, (3, 4, 5)), np.broadcast_to(idx, (3, 4, 2)), -1)
    assert_close(mx.take_along_axis(mx.array(x), mx.array(idx), -1, stream=device), exp)
    with pytest.raises(ValueError, match="take_along_axis"):
        mx.take_along_axis(mx.array(x), mx.array(idx[0]), -1)
    with pytest.raises(ValueError, match="put_along_axis"):
        mx.put_along_axis(mx.array(x), mx.array(idx), 1.0, axis=-1)


def test_dynamic_slice_and_update(device, rng):
    x = _rand(rng, (4, 5, 6))
    a = mx.array(x)
    got = mx.slice(a, mx.array([1, 2]), (0, 2), (2, 5, 3), stream=device)
    assert_close(got, x[1:3, :, 2:5])
    assert_close(mx.slice(a, mx.array(1), (1,), (4, 2, 6), stream=device), x[:, 1:3])
    assert_close(mx.slice(a, mx.array([-2]), [-1], (4, 5, 2), stream=device), x[..., -2:])
    # starts are clamped so the block fits
    assert_close(mx.slice(a, mx.array([5]), [0], (2, 5, 6), stream=device), x[2:4])
    u = rng.standard_normal((2, 5, 3)).astype(np.float32)
    exp = x.copy()
    exp[1:3, :, 2:5] = u
    assert_close(mx.slice_update(a, mx.array(u), mx.array([1, 2]), (0, 2), stream=device), exp)
    with pytest.raises(ValueError, match="slice"):
        mx.slice(a, mx.array([1]), (0,), (5, 5, 6))
    with pytest.raises(ValueError, match="slice"):
        mx.slice(a, mx.array([1, 2]), (0,), (1, 5, 6))
    with pytest.raises(ValueError, match="slice_update"):
        mx.slice_update(a, mx.zeros((5, 1, 1)), mx.array([0]), (0,))
    with pytest.raises(ValueError, match="slice_update: 1 start indices for 2 axes"):
        mx.slice_update(a, mx.array(u), 1, (0, 2))
    with pytest.raises(ValueError, match="slice: repeated axis"):
        mx.slice(a, (1, 1), (0, 0), (2, 5, 3))


def test_slices_at_int_starts_have_gradients(device, rng):
    # a static slice's write is a scatter of a basic key: its gradient goes to the update's block and to the rest
    x = _rand(rng, (3, 6, 4))
    u = rng.standard_normal((3, 2, 4)).astype(np.float32)
    w = rng.standard_normal((3, 6, 4)).astype(np.float32)

    def f(a, b):
        return (mx.slice_update(a, b, 3, axes=(1,), stream=device) * mx.array(w)).sum()

    ga, gb = mx.grad(f, argnums=(0, 1))(mx.array(x), mx.array(u))
    want_a = w.copy()
    want_a[:, 3:5] = 0
    assert_close(ga, want_a)
    assert_close(gb, w[:, 3:5])


def _clamped(s: int, n: int, b: int) -> int:
    s = s + n if s < 0 else s
    return min(max(s, 0), n - b)


@pytest.mark.parametrize("dtype", [mx.bool_, mx.int8, mx.bfloat16, mx.float32, mx.int64, mx.complex64])
@pytest.mark.parametrize("start_dtype", [mx.int32, mx.int64])
def test_dynamic_slices_at_random_starts(device, dtype, start_dtype):
    # every item size the GPU's kernel moves, one or several dynamic axes, negative and out-of-range starts
    rng = np.random.default_rng(7)
    for _ in range(12):
        nd = int(rng.integers(1, 5))
        shape = tuple(int(n) for n in rng.integers(1, 6, nd))
        block = tuple(int(rng.integers(1, n + 1)) for n in shape)
        axes = tuple(sorted(rng.choice(nd, int(rng.integers(1, nd + 1)), replace=False).tolist()))
        starts = [int(rng.integers(-7, 8)) for _ in axes]
        x = (rng.standard_normal(shape) * 4).astype(np.float32)
        a = mx.array(x).astype(dtype)
        xs = np.asarray(a.astype(mx.float32)) if dtype != mx.complex64 else np.asarray(a)
        key = [slice(0, b) for b in block]
        for ax, st in zip(axes, starts):
            s = _clamped(st, shape[ax], block[ax])
            key[ax] = slice(s, s + block[ax])
        start = mx.array(starts if len(axes) > 1 or rng.random() < 0.5 else starts[0], start_dtype)
        got = mx.slice(a, start, axes, block, stream=device)
        np.testing.assert_array_equal(np.asarray(got.astype(mx.float32) if dtype != mx.complex64 else got),
                                      xs[tuple(key)])
        upd = mx.array((rng.standard_normal(block) * 4).astype(np.float32)).astype(dtype)
        want = xs.copy()
        want[tuple(key)] = np.asarray(upd.astype(mx.float32)) if dtype != mx.complex64 else np.asarray(upd)
        got = mx.slice_update(a, upd, start, axes, stream=device)
        np.testing.assert_array_equal(np.asarray(got.astype(mx.float32) if dtype != mx.complex64 else got), want)
        # Python int starts (umx's addition): a basic slice and its write, the same values
        ints = starts if len(axes) > 1 or rng.random() < 0.5 else starts[0]
        got = mx.slice(a, ints, axes, block, stream=device)
        np.testing.assert_array_equal(np.asarray(got.astype(mx.float32) if dtype != mx.complex64 else got),
                                      xs[tuple(key)])
        got = mx.slice_update(a, upd, ints, axes, stream=device)
        np.testing.assert_array_equal(np.asarray(got.astype(mx.float32) if dtype != mx.complex64 else got), want)


@pytest.mark.parametrize("shape", SHAPES + [()])
def test_flip(device, rng, shape):
    x = _rand(rng, shape, np.int32)
    assert_close(mx.flip(mx.array(x), stream=device), np.flip(x))
    if x.ndim:
        assert_close(mx.flip(mx.array(x), -1, stream=device), np.flip(x, -1))
    if x.ndim >= 2:
        assert_close(mx.flip(mx.array(x), (0, 1), stream=device), np.flip(x, (0, 1)))
    with pytest.raises(ValueError, match="flip"):
        mx.flip(mx.array(x), x.ndim)
