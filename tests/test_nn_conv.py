"""Convolution layers of umx.nn (channels last) against torch's (channels first) on CPU."""

from __future__ import annotations

import numpy as np
import pytest

import umx as mx
import umx.nn as nn
from tests.conftest import assert_close


def _to_torch(x: np.ndarray):
    torch = pytest.importorskip("torch")
    return torch.tensor(np.moveaxis(x, -1, 1))


def _from_torch(t) -> np.ndarray:
    return np.moveaxis(t.detach().numpy(), 1, -1)


CONV_CASES = [
    (nn.Conv1d, "conv1d", (2, 9, 4), dict(kernel_size=3, stride=2, padding=1, dilation=1, groups=2)),
    (nn.Conv1d, "conv1d", (2, 9, 4), dict(kernel_size=2, stride=1, padding=0, dilation=3, groups=1)),
    (nn.Conv2d, "conv2d", (2, 7, 6, 4), dict(kernel_size=(3, 2), stride=(2, 1), padding=(1, 0), dilation=1,
                                             groups=2)),
    (nn.Conv2d, "conv2d", (1, 6, 6, 3), dict(kernel_size=3, stride=1, padding=2, dilation=2, groups=1)),
    (nn.Conv3d, "conv3d", (1, 5, 6, 4, 2), dict(kernel_size=(2, 3, 2), stride=(1, 2, 1), padding=(1, 0, 1),
                                                dilation=1)),
]


@pytest.mark.parametrize("cls, fn, shape, kwargs", CONV_CASES)
def test_conv_matches_torch(on, rng, cls, fn, shape, kwargs):
    torch = pytest.importorskip("torch")
    x = rng.standard_normal(shape).astype(np.float32)
    layer = cls(shape[-1], 6, **kwargs)
    groups = kwargs.get("groups", 1)
    assert layer.weight.shape[-1] == shape[-1] // groups and layer.weight.shape[0] == 6
    weight = torch.tensor(np.moveaxis(np.asarray(layer.weight), -1, 1))
    args = {k: v for k, v in kwargs.items() if k != "kernel_size"}
    ref = getattr(torch.nn.functional, fn)(_to_torch(x), weight, torch.tensor(np.asarray(layer.bias)), **args)
    assert_close(layer(mx.array(x)), _from_torch(ref), rtol=1e-4, atol=1e-5)
    assert "bias" not in cls(shape[-1], 6, kwargs["kernel_size"], bias=False).parameters()


def test_conv_shapes_init_and_repr():
    c = nn.Conv1d(2, 4, 3, stride=2)
    assert c(mx.ones((5, 12, 2))).shape == (5, 5, 4)
    assert np.abs(np.asarray(c.weight)).max() <= 1 / np.sqrt(2 * 3)
    assert np.all(np.asarray(c.bias) == 0)
    assert repr(c) == "Conv1d(2, 4, kernel_size=3, stride=2, padding=0, dilation=1, groups=1, bias=True)"
    assert repr(nn.Conv2d(2, 4, 3, groups=2)) == ("Conv2d(2, 4, kernel_size=(3, 3), stride=(1, 1), padding=(0, 0), "
                                                  "dilation=1, groups=2, bias=True)")
    assert repr(nn.Conv3d(2, 3, 3)) == ("Conv3d(2, 3, kernel_size=(3, 3, 3), stride=(1, 1, 1), padding=(0, 0, 0), "
                                        "dilation=1, bias=True)")
    assert "kernel_size=(3, 5)" in repr(nn.ConvTranspose2d(4, 8, kernel_size=(3, 5)))
    with pytest.raises(ValueError):
        nn.Conv2d(3, 4, 3, groups=2)


TRANSPOSE_CASES = [
    (nn.ConvTranspose1d, "conv_transpose1d", (2, 5, 3), dict(kernel_size=3, stride=2, padding=1, output_padding=1)),
    (nn.ConvTranspose2d, "conv_transpose2d", (1, 4, 5, 3), dict(kernel_size=(3, 2), stride=(2, 1), padding=(1, 0),
                                                                dilation=1)),
    (nn.ConvTranspose3d, "conv_transpose3d", (1, 3, 4, 3, 2), dict(kernel_size=2, stride=2)),
]


@pytest.mark.parametrize("cls, fn, shape, kwargs", TRANSPOSE_CASES)
def test_conv_transpose_matches_torch(on, rng, cls, fn, shape, kwargs):
    torch = pytest.importorskip("torch")
    x = rng.standard_normal(shape).astype(np.float32)
    layer = cls(shape[-1], 5, **kwargs)
    # umx's weight is [out, *k, in]; torch's transposed weight is [in, out, *k]
    weight = torch.tensor(np.moveaxis(np.asarray(layer.weight), -1, 0))
    args = {k: v for k, v in kwargs.items() if k != "kernel_size"}
    ref = getattr(torch.nn.functional, fn)(_to_torch(x), weight, torch.tensor(np.asarray(layer.bias)), **args)
    assert_close(layer(mx.array(x)), _from_torch(ref), rtol=1e-4, atol=1e-5)


def test_conv_gradient_flows(on):
    model = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(3, 1, 2))
    x = mx.random.normal((2, 4, 4, 2))
    _, grads = nn.value_and_grad(model, lambda x: model(x).sum())(x)
    assert grads["layers"][0]["weight"].shape == (3, 3, 3, 2)
    assert np.any(np.asarray(grads["layers"][0]["weight"]) != 0)
