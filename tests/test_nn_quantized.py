"""Quantized layers of umx.nn and nn.quantize, against the dequantized weights they hold."""

from __future__ import annotations

import numpy as np
import pytest

import umx as mx
import umx.nn as nn
from tests.conftest import assert_close
from umx.utils import tree_flatten, tree_reduce


def _dequantized(layer) -> np.ndarray:
    return np.asarray(mx.dequantize(layer.weight, layer.scales, layer.get("biases"), group_size=layer.group_size,
                                    bits=layer.bits, mode=layer.mode))


@pytest.mark.parametrize("mode, group_size, bits", [("affine", 64, 4), ("affine", 32, 8), ("mxfp4", 32, 4)])
def test_quantized_linear(on, rng, mode, group_size, bits):
    lin = nn.Linear(128, 24)
    q = lin.to_quantized(group_size=group_size, bits=bits, mode=mode)
    assert isinstance(q, nn.QuantizedLinear) and (q.group_size, q.bits, q.mode) == (group_size, bits, mode)
    assert ("biases" in q) == (mode == "affine")
    w = _dequantized(q)
    assert w.shape == (24, 128)
    assert np.abs(w - np.asarray(lin.weight)).max() < 0.2 * np.abs(np.asarray(lin.weight)).max()
    x = rng.standard_normal((3, 128)).astype(np.float32)
    assert_close(q(mx.array(x)), x @ w.T + np.asarray(lin.bias), rtol=1e-4, atol=1e-4)
    assert [k for k, _ in tree_flatten(q.trainable_parameters())] == ["bias"]  # the copied bias, as MLX
    assert repr(q) == (f"QuantizedLinear(input_dims=128, output_dims=24, bias=True, group_size={group_size}, "
                       f"bits={bits}, mode={mode})")


def test_quantized_defaults_per_mode():
    for mode, expected in (("affine", (64, 4)), ("mxfp4", (32, 4)), ("mxfp8", (32, 8)), ("nvfp4", (16, 4))):
        q = nn.QuantizedLinear(64, 32, mode=mode)
        assert (q.group_size, q.bits) == expected


def test_quantized_embedding(on):
    emb = nn.Embedding(32, 256)
    q = nn.QuantizedEmbedding.from_embedding(emb, bits=8)
    table = _dequantized(q)
    idx = np.array([[2, 6, 9], [3, 0, 3]])
    assert_close(q(mx.array(idx)), table[idx], rtol=1e-5, atol=1e-6)
    assert np.abs(table - np.asarray(emb.weight)).max() <= float(np.asarray(q.scales).max())
    x = np.random.default_rng(0).uniform(size=(2, 256)).astype(np.float32)
    assert_close(q.as_linear(mx.array(x)), x @ table.T, rtol=1e-4, atol=1e-4)
    assert repr(q) == "QuantizedEmbedding(32, 256, group_size=64, bits=8, mode=affine)"


def test_quantize_model():
    m = nn.Sequential(nn.Embedding(5, 256), nn.ReLU(), nn.Linear(256, 256))
    nn.quantize(m)
    assert [type(layer) for layer in m.layers] == [nn.QuantizedEmbedding, nn.ReLU, nn.QuantizedLinear]
    m = nn.Sequential(nn.Embedding(5, 256), nn.ReLU(), nn.Linear(256, 256))
    nn.quantize(m, class_predicate=lambda _, layer: isinstance(layer, nn.Linear))
    assert [type(layer) for layer in m.layers] == [nn.Embedding, nn.ReLU, nn.QuantizedLinear]
    nn.quantize(m, class_predicate=lambda path, _: {"bits": 8} if path == "layers.0" else False)
    assert isinstance(m.layers[0], nn.QuantizedEmbedding) and m.layers[0].bits == 8
    with pytest.raises(ValueError):  # embeddings cannot quantize their input
        nn.quantize(nn.Sequential(nn.Embedding(5, 256)), mode="mxfp8", quantize_input=True)


def test_quantized_unfreeze():
    q = nn.Linear(512, 512).to_quantized()
    q.unfreeze(keys=["scales"])
    assert tree_reduce(lambda acc, p: acc + p.size, q.trainable_parameters(), 0) > 0


@pytest.mark.skipif(not hasattr(mx, "qqmm"), reason="needs mx.qqmm")
def test_qq_linear_modes():
    lin = nn.Linear(64, 32, bias=False)
    q = lin.to_quantized(mode="mxfp8", quantize_input=True)
    assert isinstance(q, nn.QQLinear) and q.training and "scales" not in q
    q.eval()
    assert "scales" in q and q.weight.dtype == mx.uint32
    q.train()
    assert "scales" not in q and q.weight.shape == (32, 64)
    with pytest.raises(ValueError):
        nn.QQLinear(64, 32, mode="affine")


def test_qqlinear_quantize_and_dequantize_switch_the_stored_weight(rng):
    layer = nn.QQLinear(64, 32, mode="mxfp8")
    weight = np.asarray(layer.weight)
    layer.quantize()
    assert "scales" in layer and layer.weight.dtype == mx.uint32
    stored = layer.weight
    layer.quantize()  # (already quantized: nothing)
    assert layer.weight is stored
    layer.dequantize()
    assert "scales" not in layer and mx.issubdtype(layer.weight.dtype, mx.floating)
    np.testing.assert_allclose(np.asarray(layer.weight.astype(mx.float32)), weight, rtol=0.07, atol=0.02)
    layer.dequantize()  # (already in full precision: nothing)
    assert "scales" not in layer
