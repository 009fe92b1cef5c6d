"""nn.init: shapes, dtypes and the distributions' moments and bounds."""

from __future__ import annotations

import math

import numpy as np
import pytest

import umx as mx
import umx.nn as nn
import umx.nn.init as init


@pytest.mark.parametrize("dtype", [mx.float32, mx.float16])
def test_shape_and_dtype(on, dtype):
    for make in (lambda: init.constant(2.0, dtype), lambda: init.normal(dtype=dtype),
                 lambda: init.uniform(dtype=dtype), lambda: init.glorot_normal(dtype),
                 lambda: init.glorot_uniform(dtype), lambda: init.he_normal(dtype), lambda: init.he_uniform(dtype)):
        for shape in ((3, 4), (2, 3, 4)):
            out = make()(mx.zeros(shape))
            assert out.shape == shape and out.dtype == dtype


def test_constant_uniform_identity():
    assert np.all(np.asarray(init.constant(5.0)(mx.zeros((2, 3)))) == 5)
    u = np.asarray(init.uniform(-2.0, 3.0)(mx.zeros((4000,))))
    assert u.min() >= -2 and u.max() < 3 and abs(u.mean() - 0.5) < 0.15
    assert np.array_equal(np.asarray(init.identity()(mx.zeros((3, 3)))), np.eye(3))
    with pytest.raises(ValueError):
        init.identity()(mx.zeros((3, 2)))


def test_normal_moments():
    x = np.asarray(init.normal(mean=1.0, std=2.0)(mx.zeros((200, 100))))
    assert abs(x.mean() - 1) < 0.05 and abs(x.std() - 2) < 0.05


def test_glorot_and_he_scales():
    a = mx.zeros((300, 20, 5))  # fan_in = 5 * 20, fan_out = 300 * 20
    fan_in, fan_out = 100, 6000
    x = np.asarray(init.glorot_normal()(a, gain=2.0))
    assert x.std() == pytest.approx(2.0 * math.sqrt(2 / (fan_in + fan_out)), rel=0.03)
    x = np.asarray(init.glorot_uniform()(a))
    assert np.abs(x).max() <= math.sqrt(6 / (fan_in + fan_out))
    assert x.std() == pytest.approx(math.sqrt(2 / (fan_in + fan_out)), rel=0.03)
    x = np.asarray(init.he_normal()(a, mode="fan_out"))
    assert x.std() == pytest.approx(1 / math.sqrt(fan_out), rel=0.03)
    x = np.asarray(init.he_uniform()(a, gain=0.5))
    assert np.abs(x).max() <= 0.5 * math.sqrt(3 / fan_in)
    with pytest.raises(ValueError):
        init.he_normal()(a, mode="fan_avg")
    with pytest.raises(ValueError):
        init.glorot_uniform()(mx.zeros((4,)))


def test_sparse_zeroes_each_row(on):
    for sparsity, shape in ((0.5, (4, 10)), (0.3, (5, 10)), (0.0, (3, 3)), (1.0, (2, 4))):
        out = np.asarray(init.sparse(sparsity, std=1.0)(mx.zeros(shape)))
        assert np.all((out == 0).sum(axis=1) == math.ceil(sparsity * shape[1]))
    with pytest.raises(ValueError):
        init.sparse(0.5)(mx.zeros((3,)))


@pytest.mark.parametrize("shape", [(4, 4), (6, 3), (3, 6)])
def test_orthogonal(shape):
    q = np.asarray(init.orthogonal(gain=1.5)(mx.zeros(shape)), np.float64)
    small = min(shape)
    gram = q.T @ q if shape[0] >= shape[1] else q @ q.T
    np.testing.assert_allclose(gram, 2.25 * np.eye(small), atol=1e-5)
    with pytest.raises(ValueError, match="3D array"):
        init.orthogonal()(mx.zeros((2, 3, 4)))


_LAYERS = {"Linear": (8, 5), "Bilinear": (4, 5, 6), "Embedding": (10, 4), "Conv1d": (3, 4, 3), "Conv2d": (3, 4, 3),
           "Conv3d": (2, 3, 2), "ConvTranspose1d": (3, 4, 3), "ConvTranspose2d": (3, 4, 3), "LayerNorm": (6,),
           "RMSNorm": (6,), "GroupNorm": (2, 6), "BatchNorm": (6,), "MultiHeadAttention": (8, 2), "RNN": (4, 5),
           "GRU": (4, 5), "LSTM": (4, 5), "PReLU": (), "Transformer": (8, 2, 1, 1, 16), "QuantizedLinear": (64, 32)}


def test_a_seed_gives_mlxs_initial_parameters():
    """With the same seed, every layer's initial parameters and every initializer's draws are MLX's: its random
    streams are umx's (the same keys and bits) and the layers draw in MLX's order, so an MLX script's model starts
    where MLX's would."""
    mlx = pytest.importorskip("mlx.core")
    import mlx.nn as mlx_nn
    import mlx.nn.init as mlx_init
    from mlx.utils import tree_flatten as mlx_flatten

    from umx.utils import tree_flatten

    for name, args in _LAYERS.items():
        mlx.random.seed(0)
        mx.random.seed(0)
        theirs = dict(mlx_flatten(getattr(mlx_nn, name)(*args).parameters()))
        ours = dict(tree_flatten(getattr(nn, name)(*args).parameters()))
        assert sorted(ours) == sorted(theirs), name
        for key in theirs:  # (normal draws within an ulp: MLX approximates erfinv its own way)
            np.testing.assert_allclose(np.asarray(ours[key]), np.asarray(theirs[key]), rtol=1e-6, atol=1e-7,
                                       err_msg=f"{name}.{key}")
    for name, args in (("normal", ()), ("uniform", ()), ("glorot_normal", ()), ("glorot_uniform", ()),
                       ("he_normal", ()), ("he_uniform", ()), ("sparse", (0.5,)), ("orthogonal", ()),
                       ("constant", (0.5,))):
        mlx.random.seed(1)
        mx.random.seed(1)
        theirs = np.asarray(getattr(mlx_init, name)(*args)(mlx.zeros((4, 6))))
        ours = np.asarray(getattr(nn.init, name)(*args)(mx.zeros((4, 6))))
        np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6, err_msg=name)
