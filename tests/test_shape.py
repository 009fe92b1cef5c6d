"""Shape ops against NumPy: reshape, transpose, squeeze, expand_dims, concatenate, stack, split, broadcast_to,
flatten, moveaxis, swapaxes."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import assert_close

import umx as mx


@pytest.fixture
def x(rng):
    return rng.standard_normal((2, 3, 4)).astype(np.float32)


@pytest.mark.parametrize("shape", [(24,), (6, 4), (-1, 2), (2, -1, 3), (4, 3, 2, 1), (1, 24)], ids=str)
def test_reshape(device, x, shape):
    assert_close(mx.reshape(mx.array(x), shape, stream=device), x.reshape(shape))
    assert_close(mx.array(x).reshape(*shape), x.reshape(shape))


def test_reshape_edge_cases(device):
    assert mx.reshape(mx.array(3.0), (1, 1), stream=device).shape == (1, 1)
    assert mx.reshape(mx.ones((1, 1)), (), stream=device).shape == ()
    assert mx.reshape(mx.zeros((0, 3)), (3, 0), stream=device).shape == (3, 0)
    assert mx.reshape(mx.zeros(6), 6, stream=device).shape == (6,)
    with pytest.raises(ValueError, match=r"reshape.*\(2, 3\)"):
        mx.reshape(mx.zeros((2, 3)), (4, 2), stream=device)
    with pytest.raises(ValueError):
        mx.reshape(mx.zeros(6), (-1, -1), stream=device)
    with pytest.raises(ValueError):
        mx.reshape(mx.zeros(6), (-1, 4), stream=device)


def test_reshape_arguments_off_the_common_path(device):
    # a tuple of in-range ints takes a short path: every other shape is checked as before, errors included
    a = mx.zeros((2, 3))
    assert mx.reshape(a, (np.int64(3), 2), stream=device).shape == (3, 2)
    assert mx.reshape(a, (True, 6), stream=device).shape == (1, 6)
    assert mx.reshape(mx.zeros((0, 3)), (0, 5), stream=device).shape == (0, 5)
    with pytest.raises(TypeError):
        mx.reshape(a, (3.0, 2), stream=device)
    with pytest.raises(OverflowError):
        mx.reshape(mx.zeros((0,)), (0, 2**31), stream=device)
    with pytest.raises(ValueError):
        mx.reshape(a, (3, -2), stream=device)
    r = mx.reshape(a, (2, 3), stream=device)
    assert r is not a and r.shape == (2, 3)
    r = mx.reshape(a, (-1, 3), stream=device)
    assert r is not a and r.shape == (2, 3)
    assert mx.reshape(a, (-1, 2), stream=device).shape == (3, 2)
    assert mx.reshape(a, (3, -1), stream=device)._prim.infer == 1
    assert mx.reshape(mx.zeros((2, 0)), (-1, 2), stream=device).shape == (0, 2)
    with pytest.raises(ValueError):
        mx.reshape(mx.zeros((2, 0)), (0, -1), stream=device)
    with pytest.raises(ValueError):
        mx.reshape(a, (-1, 4), stream=device)


@pytest.mark.parametrize("axes", [None, (0, 1, 2), (2, 0, 1), (1, 0, 2), (-1, 0, -2)], ids=str)
def test_transpose(device, x, axes):
    assert_close(mx.transpose(mx.array(x), axes, stream=device), np.transpose(x, axes))


def test_transpose_forms_and_errors(device, x):
    a = mx.array(x)
    assert_close(a.T, x.T)
    assert_close(a.transpose(1, 2, 0), x.transpose(1, 2, 0))
    assert_close(a.transpose((2, 1, 0)), x.transpose(2, 1, 0))
    assert_close(mx.permute_dims(a, (0, 2, 1), stream=device), x.transpose(0, 2, 1))
    assert_close(mx.matrix_transpose(a, stream=device), np.swapaxes(x, -1, -2))
    assert_close(a.mT, np.swapaxes(x, -1, -2))
    with pytest.raises(ValueError, match="matrix_transpose: needs at least 2 dimensions"):
        _ = mx.array([1.0]).mT
    with pytest.raises(ValueError, match="transpose"):
        mx.transpose(a, (0, 1), stream=device)
    with pytest.raises(ValueError):
        mx.transpose(a, (0, 0, 1), stream=device)


def test_squeeze_expand_dims(device, rng):
    y = rng.standard_normal((1, 3, 1, 2)).astype(np.float32)
    a = mx.array(y)
    assert_close(mx.squeeze(a, stream=device), np.squeeze(y))
    assert_close(mx.squeeze(a, 0, stream=device), np.squeeze(y, 0))
    assert_close(mx.squeeze(a, (-2, 0), stream=device), np.squeeze(y, (-2, 0)))
    assert_close(a.squeeze(2), np.squeeze(y, 2))
    with pytest.raises(ValueError, match="squeeze"):
        mx.squeeze(a, 1, stream=device)
    for axis in (0, -1, 2, (0, 3), (-1, 1)):
        assert_close(mx.expand_dims(a, axis, stream=device), np.expand_dims(y, axis))
    assert mx.expand_dims(mx.array(1.0), 0, stream=device).shape == (1,)
    with pytest.raises(ValueError):
        mx.expand_dims(a, 6, stream=device)


@pytest.mark.parametrize("axis", [0, 1, -1, None], ids=str)
def test_concatenate(device, rng, axis):
    xs = [rng.standard_normal((2, 3)).astype(np.float32) for _ in range(3)]
    out = mx.concatenate([mx.array(v) for v in xs], axis=axis, stream=device)
    assert_close(out, np.concatenate(xs, axis=axis))
    assert mx.concat is mx.concatenate


def test_concatenate_promotes_and_checks(device):
    out = mx.concatenate([mx.array([1, 2], dtype=mx.int8), mx.array([1.5])], stream=device)
    assert out.dtype == mx.float32 and out.tolist() == [1.0, 2.0, 1.5]
    assert mx.concatenate([mx.zeros((0, 2)), mx.ones((1, 2))], stream=device).shape == (1, 2)
    assert mx.concatenate([mx.ones((2, 2))], stream=device).shape == (2, 2)
    with pytest.raises(ValueError, match=r"concatenate.*\(2, 3\).*\(2, 4\)"):
        mx.concatenate([mx.zeros((2, 3)), mx.zeros((2, 4))], stream=device)
    with pytest.raises(ValueError):
        mx.concatenate([], stream=device)
    with pytest.raises(ValueError):
        mx.concatenate([mx.array(1), mx.array(2)], stream=device)
    with pytest.raises(TypeError):
        mx.concatenate(mx.ones(3), stream=device)


@pytest.mark.parametrize("axis", [0, 1, 2, -1], ids=str)
def test_stack(device, rng, axis):
    xs = [rng.standard_normal((2, 3)).astype(np.float32) for _ in range(4)]
    assert_close(mx.stack([mx.array(v) for v in xs], axis=axis, stream=device), np.stack(xs, axis=axis))
    assert_close(mx.stack([mx.array(1.0), mx.array(2.0)], stream=device), [1.0, 2.0])
    with pytest.raises(ValueError, match="stack"):
        mx.stack([mx.zeros(2), mx.zeros(3)], stream=device)


@pytest.mark.parametrize(("arg", "axis"), [(3, 0), (2, 1), ([1, 3], 0), ([2], -1), ([0, 0, 5], 0), ([-2], 0),
                                           (1, 0), ([7], 0), ([], 0)], ids=str)
def test_split(device, rng, arg, axis):
    y = rng.standard_normal((6, 4)).astype(np.float32)
    outs = mx.split(mx.array(y), arg, axis=axis, stream=device)
    refs = np.split(y, arg, axis=axis)
    assert len(outs) == len(refs)
    for o, r in zip(outs, refs):
        assert_close(o, r)


def test_split_siblings_evaluate_together(device, rng):
    y = rng.standard_normal(9).astype(np.float32)
    a, b, c = mx.split(mx.exp(mx.array(y), stream=device), 3, stream=device)
    assert_close(b, np.exp(y[3:6]), rtol=1e-6)  # evaluating one evaluates all
    assert a._data is not None and c._data is not None
    assert_close(mx.add(a, c, stream=device), np.exp(y[:3]) + np.exp(y[6:]), rtol=1e-6)
    with pytest.raises(ValueError, match="split"):
        mx.split(mx.zeros(7), 3)
    assert [p.shape for p in mx.split(mx.zeros((0, 2)), 2, stream=device)] == [(0, 2), (0, 2)]
    pieces = mx.array(y).split(3)
    assert len(pieces) == 3


@pytest.mark.parametrize(("src", "dst"), [((3,), (2, 3)), ((1, 3), (4, 3)), ((), (2, 2)), ((2, 1), (2, 2, 5)),
                                          ((3,), (3,)), ((1,), (0,))], ids=str)
def test_broadcast_to(device, rng, src, dst):
    y = rng.standard_normal(src).astype(np.float32)
    assert_close(mx.broadcast_to(mx.array(y), dst, stream=device), np.broadcast_to(y, dst))


def test_broadcast_errors_and_helpers(device):
    with pytest.raises(ValueError, match="broadcast_to"):
        mx.broadcast_to(mx.zeros(3), (4,), stream=device)
    with pytest.raises(ValueError):
        mx.broadcast_to(mx.zeros((2, 3)), (3,), stream=device)
    a, b = mx.broadcast_arrays(mx.zeros((2, 1)), mx.ones(3), stream=device)
    assert a.shape == b.shape == (2, 3)
    assert mx.broadcast_shapes((2, 1), (3,)) == (2, 3)


@pytest.mark.parametrize(("start", "end"), [(0, -1), (1, 2), (0, 1), (-2, -1), (2, 2)], ids=str)
def test_flatten(device, x, start, end):
    ref_shape = x.shape[:start % 3] + (-1,) + x.shape[end % 3 + 1:]
    assert_close(mx.flatten(mx.array(x), start, end, stream=device), x.reshape(ref_shape))
    assert_close(mx.array(x).flatten(), x.reshape(-1))
    assert mx.flatten(mx.array(2.0), stream=device).shape == (1,)
    with pytest.raises(ValueError):
        mx.flatten(mx.array(x), 2, 0, stream=device)


@pytest.mark.parametrize(("s", "d"), [(0, 2), (2, 0), (-1, 0), (1, -1), (1, 1)], ids=str)
def test_moveaxis_swapaxes(device, x, s, d):
    assert_close(mx.moveaxis(mx.array(x), s, d, stream=device), np.moveaxis(x, s, d))
    assert_close(mx.swapaxes(mx.array(x), s, d, stream=device), np.swapaxes(x, s, d))
    assert_close(mx.array(x).swapaxes(s, d), np.swapaxes(x, s, d))
    with pytest.raises(ValueError, match="moveaxis"):
        mx.moveaxis(mx.array(x), 3, 0, stream=device)


def test_shape_ops_chain_and_views_are_safe(device, rng):
    y = rng.standard_normal((4, 6)).astype(np.float32)
    a = mx.array(y)
    t = mx.transpose(a, stream=device)
    r = mx.reshape(t, (3, 8), stream=device)
    e = mx.exp(r, stream=device)
    assert_close(e, np.exp(y.T.reshape(3, 8)), rtol=1e-6)
    a[0, 0] = 100.0  # never changes arrays that read the old value (views are never written through)
    assert_close(t, y.T)
    assert np.asarray(a)[0, 0] == 100.0


def test_unflatten_infers_from_the_axis(device):
    # the -1 is the axis' size over the other sizes, also when another axis is empty (as in MLX)
    x = np.arange(24.0).reshape(2, 12)
    assert_close(mx.unflatten(mx.array(x), 1, (3, -1), stream=device), x.reshape(2, 3, 4))
    assert mx.unflatten(mx.zeros((0, 3, 1)), -1, (1, -1), stream=device).shape == (0, 3, 1, 1)
    assert mx.unflatten(mx.zeros((0, 4)), 1, (2, -1), stream=device).shape == (0, 2, 2)
    for shape in [(3, -1), (-1, -1), (), (0, -1)]:
        with pytest.raises(ValueError, match="unflatten"):
            mx.unflatten(mx.zeros((2, 4)), 1, shape)


def test_view_to_and_from_bfloat16_gives_its_bits(device):
    ml_dtypes = pytest.importorskip("ml_dtypes")
    bits = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16)
    want = bits.view(ml_dtypes.bfloat16).astype(np.float32)
    got = np.asarray(mx.array(bits).view(mx.bfloat16, stream=device).astype(mx.float32))
    nan = np.isnan(want)
    np.testing.assert_array_equal(got[~nan], want[~nan])  # (subnormals included)
    assert np.isnan(got[nan]).all()
    finite = want[~nan].astype(ml_dtypes.bfloat16)
    back = np.asarray(mx.array(finite.astype(np.float32), dtype=mx.bfloat16).view(mx.uint16, stream=device))
    np.testing.assert_array_equal(back, finite.view(np.uint16))
    pair = mx.array([1.5, -2.0], dtype=mx.bfloat16)
    want = np.array([1.5, -2.0], ml_dtypes.bfloat16).view(np.int8)
    assert pair.view(mx.int8, stream=device).tolist() == want.tolist()
    assert mx.array(np.array([60, 120, 180, 240], np.uint8)).view(mx.bfloat16, stream=device).shape == (2,)
    sub = mx.array(bits[:1] + 1).view(mx.bfloat16, stream=device)  # the smallest subnormal keeps its bits
    assert sub.view(mx.uint16, stream=device).item() == 1
    # every 16-bit pattern survives the round trip, NaN payloads included (as in MLX: a view moves no value)
    again = mx.array(bits).view(mx.bfloat16, stream=device).view(mx.uint16, stream=device)
    np.testing.assert_array_equal(np.asarray(again), bits)


def test_bfloat16_nan_payloads_survive_a_file(tmp_path):
    bits = np.array([0x7FFF, 0xFFC1, 0x7F81, 0x3F80, 0x0001], np.uint16)
    a = mx.array(bits).view(mx.bfloat16)
    for name, save in (("f.safetensors", mx.save_safetensors), ("f.gguf", mx.save_gguf)):
        if name.endswith("gguf"):
            pytest.importorskip("gguf")
        save(str(tmp_path / name), {"x": a})
        np.testing.assert_array_equal(np.asarray(mx.load(str(tmp_path / name))["x"].view(mx.uint16)), bits)
