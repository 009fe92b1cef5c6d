"""Activations of umx.nn, as functions and as layers, against NumPy references in float64."""

from __future__ import annotations

import math

import numpy as np
import pytest

import umx as mx
import umx.nn as nn
from tests.conftest import assert_close

_erf = np.vectorize(math.erf)


def _softmax(x, axis=-1):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


def _softplus(x):
    return np.logaddexp(x, 0)


def _elu(x, alpha=1.0):
    return np.where(x > 0, x, alpha * np.expm1(x))


# name -> (NumPy reference, its layer class or None)
REFERENCES = {
    "relu": (lambda x: np.maximum(x, 0), nn.ReLU),
    "relu2": (lambda x: np.maximum(x, 0) ** 2, nn.ReLU2),
    "relu6": (lambda x: np.clip(x, 0, 6), nn.ReLU6),
    "leaky_relu": (lambda x: np.where(x > 0, x, 0.01 * x), nn.LeakyReLU),
    "elu": (_elu, nn.ELU),
    "selu": (lambda x: 1.0507 * _elu(x, 1.67326), nn.SELU),
    "celu": (lambda x: np.maximum(x, 0) + np.minimum(0, np.expm1(x)), nn.CELU),
    "gelu": (lambda x: 0.5 * x * (1 + _erf(x / math.sqrt(2))), nn.GELU),
    "gelu_approx": (lambda x: 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3))), None),
    "gelu_fast_approx": (lambda x: x * _sigmoid(1.702 * x), None),
    "silu": (lambda x: x * _sigmoid(x), nn.SiLU),
    "mish": (lambda x: x * np.tanh(_softplus(x)), nn.Mish),
    "softplus": (_softplus, nn.Softplus),
    "softsign": (lambda x: x / (1 + np.abs(x)), nn.Softsign),
    "softshrink": (lambda x: np.where(np.abs(x) > 0.5, x - 0.5 * np.sign(x), 0), nn.Softshrink),
    "hard_shrink": (lambda x: np.where(np.abs(x) > 0.5, x, 0), nn.HardShrink),
    "hard_tanh": (lambda x: np.clip(x, -1, 1), nn.HardTanh),
    "hardswish": (lambda x: x * np.clip(x + 3, 0, 6) / 6, nn.Hardswish),
    "sigmoid": (_sigmoid, nn.Sigmoid),
    "log_sigmoid": (lambda x: -_softplus(-x), nn.LogSigmoid),
    "tanh": (np.tanh, nn.Tanh),
    "softmax": (_softmax, nn.Softmax),
    "softmin": (lambda x: _softmax(-x), nn.Softmin),
    "log_softmax": (lambda x: np.log(_softmax(x)), nn.LogSoftmax),
    "glu": (lambda x: x[..., :3] * _sigmoid(x[..., 3:]), nn.GLU),
    "step": (lambda x: (x >= 0).astype(np.int32), nn.Step),
}


def test_every_mlx_activation_is_here():
    functions = set(REFERENCES) | {"prelu"}
    assert all(callable(getattr(nn, name)) for name in functions)


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_activation_matches_numpy(on, rng, name):
    ref, layer = REFERENCES[name]
    x = rng.standard_normal((4, 6)) * 3
    x[0, :3] = [0.0, 0.5, -0.5]  # the kinks of step, shrink and relu
    fn = getattr(nn, name)
    expected = ref(x)
    got = fn(mx.array(x, dtype=mx.float64))
    assert_close(got, expected, rtol=1e-6, atol=1e-7)  # atol: umx's float64 erf is float32-accurate
    got32 = fn(mx.array(x.astype(np.float32)))
    assert got32.dtype == (mx.int32 if name == "step" else mx.float32)
    assert_close(got32, expected, rtol=2e-5, atol=2e-6)
    if layer is not None:
        assert_close(layer()(mx.array(x, dtype=mx.float64)), expected, rtol=1e-6, atol=1e-7)


def test_half_precision_is_kept(on):
    x = mx.array([-2.0, -0.5, 0.0, 1.5], dtype=mx.float16)
    for name in ("relu", "relu6", "leaky_relu", "elu", "gelu", "silu", "softplus", "hard_tanh", "hardswish",
                 "softmax", "log_softmax", "celu", "mish"):
        assert getattr(nn, name)(x).dtype == mx.float16, name


def test_parameterized_layers():
    x = np.array([-2.0, -0.3, 0.0, 0.7, 2.0])
    a = mx.array(x, dtype=mx.float64)
    assert_close(nn.LeakyReLU(0.1)(a), np.where(x > 0, x, 0.1 * x))
    assert_close(nn.ELU(alpha=1.1)(a), _elu(x, 1.1))
    assert_close(nn.CELU(alpha=1.1)(a), np.maximum(x, 0) + np.minimum(0, 1.1 * np.expm1(x / 1.1)))
    assert_close(nn.Softshrink(0.7)(a), np.where(np.abs(x) > 0.7, x - 0.7 * np.sign(x), 0))
    assert_close(nn.HardShrink(0.1)(a), np.where(np.abs(x) > 0.1, x, 0))
    assert_close(nn.Step(threshold=0.7)(a), (x >= 0.7).astype(np.int32))
    assert_close(nn.hard_tanh(a, -0.5, 0.5), np.clip(x, -0.5, 0.5))
    assert_close(nn.GLU(axis=0)(mx.array(x[:4])), x[:2] * _sigmoid(x[2:4]))
    prelu = nn.PReLU(num_parameters=5, init=0.3)
    assert prelu.weight.shape == (5,)
    assert_close(prelu(a), np.where(x > 0, x, 0.3 * x), rtol=1e-6)
    for approx, ref in (("precise", "gelu_approx"), ("tanh", "gelu_approx"), ("fast", "gelu_fast_approx")):
        assert_close(nn.GELU(approx=approx)(a), REFERENCES[ref][0](x), rtol=1e-6)
    with pytest.raises(ValueError):
        nn.GELU(approx="bad")


def test_log_softmax_of_huge_equal_logits():
    for v in (1.0, 1e8, 1e36):
        assert_close(nn.log_softmax(mx.array([[v, v]])), np.full((1, 2), -math.log(2)), rtol=1e-6)


def test_activation_gradients(rng):
    x = mx.array(rng.standard_normal(8) + 0.05, dtype=mx.float64)  # away from the kinks at 0
    for name in ("gelu", "silu", "mish", "softplus", "elu", "celu", "selu", "log_sigmoid", "softsign"):
        fn = getattr(nn, name)
        g = mx.grad(lambda a, fn=fn: fn(a).sum())(x)
        h = 1e-6
        fd = (np.asarray(fn(x + h)) - np.asarray(fn(x - h))) / (2 * h)
        assert_close(g, fd, rtol=1e-5, atol=1e-7)
