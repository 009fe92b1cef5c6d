"""Sequence layers of umx.nn against NumPy references: RNN, GRU, LSTM, attention, transformers, positional
encodings (RoPE, sinusoidal, ALiBi); gradients through some of them against finite differences."""

from __future__ import annotations

import math

import numpy as np
import pytest

import umx as mx
import umx.nn as nn
from tests.conftest import assert_close
from tests.test_nn_layers import a64, check_grad

F64 = mx.float64


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


def _params(layer):
    return {k: np.asarray(v, np.float64) for k, v in layer.parameters().items()}


def _rnn_ref(p, x, h, act=np.tanh):
    out = []
    for t in range(x.shape[-2]):
        z = x[..., t, :] @ p["Wxh"].T + p.get("bias", 0)
        h = act(z if h is None else z + h @ p["Whh"].T)
        out.append(h)
    return np.stack(out, -2)


def _gru_ref(p, x, h):
    hs = p["Wh"].shape[1]
    h = np.zeros((*x.shape[:-2], hs)) if h is None else h
    out = []
    for t in range(x.shape[-2]):
        gx = x[..., t, :] @ p["Wx"].T + p.get("b", 0)
        gh = h @ p["Wh"].T
        r = _sigmoid(gx[..., :hs] + gh[..., :hs])
        z = _sigmoid(gx[..., hs:2 * hs] + gh[..., hs:2 * hs])
        n = np.tanh(gx[..., 2 * hs:] + r * (gh[..., 2 * hs:] + p.get("bhn", 0)))
        h = (1 - z) * n + z * h
        out.append(h)
    return np.stack(out, -2)


def _lstm_ref(p, x, h, c):
    hs = p["Wh"].shape[1]
    h = np.zeros((*x.shape[:-2], hs)) if h is None else h
    c = np.zeros((*x.shape[:-2], hs)) if c is None else c
    hs_out, cs_out = [], []
    for t in range(x.shape[-2]):
        g = x[..., t, :] @ p["Wx"].T + h @ p["Wh"].T + p.get("bias", 0)
        i, f, gg, o = np.split(g, 4, axis=-1)
        c = _sigmoid(f) * c + _sigmoid(i) * np.tanh(gg)
        h = _sigmoid(o) * np.tanh(c)
        hs_out.append(h)
        cs_out.append(c)
    return np.stack(hs_out, -2), np.stack(cs_out, -2)


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("batched", [True, False])
def test_recurrent_layers(on, rng, bias, batched):
    shape = (2, 6, 3) if batched else (6, 3)
    x = rng.standard_normal(shape)
    h0 = rng.standard_normal((*shape[:-2], 4))
    rnn = nn.RNN(3, 4, bias=bias)
    assert_close(rnn(a64(x)), _rnn_ref(_params(rnn), x, None), rtol=1e-5, atol=1e-6)
    assert_close(rnn(a64(x), hidden=a64(h0)), _rnn_ref(_params(rnn), x, h0), rtol=1e-5, atol=1e-6)
    relu_rnn = nn.RNN(3, 4, bias=bias, nonlinearity=nn.relu)
    assert_close(relu_rnn(a64(x)), _rnn_ref(_params(relu_rnn), x, None, lambda v: np.maximum(v, 0)),
                 rtol=1e-5, atol=1e-6)
    gru = nn.GRU(3, 4, bias=bias)
    assert_close(gru(a64(x)), _gru_ref(_params(gru), x, None), rtol=1e-5, atol=1e-6)
    assert_close(gru(a64(x), a64(h0)), _gru_ref(_params(gru), x, h0), rtol=1e-5, atol=1e-6)
    lstm = nn.LSTM(3, 4, bias=bias)
    c0 = rng.standard_normal(h0.shape)
    for args, ref_args in (((), (None, None)), ((a64(h0), a64(c0)), (h0, c0))):
        hs, cs = lstm(a64(x), *args)
        ref_h, ref_c = _lstm_ref(_params(lstm), x, *ref_args)
        assert_close(hs, ref_h, rtol=1e-5, atol=1e-6)
        assert_close(cs, ref_c, rtol=1e-5, atol=1e-6)


def test_recurrent_parameters_and_errors():
    assert sorted(nn.GRU(2, 3).parameters()) == ["Wh", "Wx", "b", "bhn"]
    assert nn.LSTM(2, 3).Wx.shape == (12, 2) and nn.RNN(2, 3).Whh.shape == (3, 3)
    assert repr(nn.GRU(2, 3)) == "GRU(input_dims=2, hidden_size=3, bias=True)"
    with pytest.raises(ValueError):
        nn.RNN(5, 12, nonlinearity="tanh")


def _attention_ref(q, k, v, mask=None):
    scores = q @ k.swapaxes(-1, -2) / math.sqrt(q.shape[-1])
    if mask is not None:
        scores = scores + mask
    scores = np.exp(scores - scores.max(-1, keepdims=True))
    return (scores / scores.sum(-1, keepdims=True)) @ v


def test_multi_head_attention(on, rng):
    attn = nn.MultiHeadAttention(8, 2, query_input_dims=6, key_input_dims=5, value_dims=4, value_output_dims=3,
                                 bias=True)
    attn.set_dtype(F64)
    q, k, v = rng.standard_normal((2, 3, 6)), rng.standard_normal((2, 4, 5)), rng.standard_normal((2, 4, 5))
    mask = np.where(rng.random((3, 4)) < 0.3, -1e9, 0.0)
    p = {name: _params(getattr(attn, name)) for name in ("query_proj", "key_proj", "value_proj", "out_proj")}

    def proj(name, x):
        return x @ p[name]["weight"].T + p[name]["bias"]

    def heads(x):
        return x.reshape(*x.shape[:-1], 2, -1).swapaxes(1, 2)

    out = _attention_ref(heads(proj("query_proj", q)), heads(proj("key_proj", k)), heads(proj("value_proj", v)),
                         mask)
    ref = proj("out_proj", out.swapaxes(1, 2).reshape(2, 3, 4))
    assert_close(attn(a64(q), a64(k), a64(v), mask=a64(mask)), ref, rtol=1e-6, atol=1e-8)
    assert_close(attn(a64(q), a64(k), a64(v), mask=mx.array(mask == 0)), ref, rtol=1e-6, atol=1e-8)
    self_attn = nn.MultiHeadAttention(8, 4)
    x = mx.random.normal((2, 5, 8))
    additive = nn.MultiHeadAttention.create_additive_causal_mask(5)
    assert_close(self_attn(x, x, x, mask="causal"), np.asarray(self_attn(x, x, x, mask=additive)), atol=1e-6)
    with pytest.raises(ValueError):
        nn.MultiHeadAttention(10, 3)


def test_causal_mask():
    for dtype in (mx.float32, mx.float16, mx.bfloat16):
        mask = nn.MultiHeadAttention.create_additive_causal_mask(4, dtype)
        m = np.asarray(mask.astype(mx.float32))
        assert mask.dtype == dtype and not np.isnan(m).any()
        assert np.all(m[np.tril_indices(4)] == 0) and np.all(m[np.triu_indices(4, 1)] < -1e4)


@pytest.mark.parametrize("norm_first", [True, False])
def test_transformer_layers_wiring(on, rng, norm_first):
    enc = nn.TransformerEncoderLayer(8, 2, mlp_dims=16, norm_first=norm_first, activation=nn.gelu)
    x = mx.array(rng.standard_normal((2, 5, 8)).astype(np.float32))
    mask = nn.MultiHeadAttention.create_additive_causal_mask(5)

    def mlp(y):
        return enc.linear2(nn.gelu(enc.linear1(y)))

    if norm_first:
        y = enc.ln1(x)
        h = x + enc.attention(y, y, y, mask)
        ref = h + mlp(enc.ln2(h))
    else:
        h = enc.ln1(x + enc.attention(x, x, x, mask))
        ref = enc.ln2(h + mlp(h))
    assert_close(enc(x, mask), np.asarray(ref), rtol=1e-5, atol=1e-5)

    dec = nn.TransformerDecoderLayer(8, 2, norm_first=norm_first)
    memory = mx.array(rng.standard_normal((2, 7, 8)).astype(np.float32))
    if norm_first:
        y = dec.ln1(x)
        h = x + dec.self_attention(y, y, y, mask)
        y = dec.ln2(h)
        h = h + dec.cross_attention(y, memory, memory, None)
        ref = h + dec.linear2(nn.relu(dec.linear1(dec.ln3(h))))
    else:
        h = dec.ln1(x + dec.self_attention(x, x, x, mask))
        h = dec.ln2(h + dec.cross_attention(h, memory, memory, None))
        ref = dec.ln3(h + dec.linear2(nn.relu(dec.linear1(h))))
    assert_close(dec(x, memory, mask, None), np.asarray(ref), rtol=1e-5, atol=1e-5)


def test_transformer_stacks(on, rng):
    model = nn.Transformer(dims=8, num_heads=2, num_encoder_layers=2, num_decoder_layers=1, mlp_dims=12)
    src, tgt = mx.random.normal((2, 6, 8)), mx.random.normal((2, 4, 8))
    tgt_mask = nn.MultiHeadAttention.create_additive_causal_mask(4)
    out = model(src, tgt, None, tgt_mask, None)
    memory = model.encoder.ln(model.encoder.layers[1](model.encoder.layers[0](src, None), None))
    ref = model.decoder.ln(model.decoder.layers[0](tgt, memory, tgt_mask, None))
    assert_close(out, np.asarray(ref), rtol=1e-5, atol=1e-5)
    checkpointed = nn.TransformerEncoder(2, 8, 2, checkpoint=True)
    plain = nn.TransformerEncoder(2, 8, 2)
    plain.update(checkpointed.parameters())
    g1 = nn.value_and_grad(checkpointed, lambda x: checkpointed(x, None).sum())(src)[1]
    g2 = nn.value_and_grad(plain, lambda x: plain(x, None).sum())(src)[1]
    assert_close(g1["layers"][0]["linear1"]["weight"], np.asarray(g2["layers"][0]["linear1"]["weight"]),
                 rtol=1e-4, atol=1e-5)
    custom = nn.Transformer(dims=8, num_heads=2, custom_encoder=nn.Identity(), custom_decoder=nn.Identity())
    assert isinstance(custom.encoder, nn.Identity) and isinstance(custom.decoder, nn.Identity)


def _rope_ref(x, dims, traditional, base, scale, offset):
    theta = (np.arange(x.shape[-2]) + offset)[:, None] * scale * base ** (-np.arange(0, dims, 2) / dims)
    cos, sin = np.cos(theta), np.sin(theta)
    rot = x[..., :dims]
    if traditional:
        a, b = rot[..., 0::2], rot[..., 1::2]
        rot = np.stack([a * cos - b * sin, a * sin + b * cos], -1).reshape(rot.shape)
    else:
        a, b = rot[..., : dims // 2], rot[..., dims // 2:]
        rot = np.concatenate([a * cos - b * sin, a * sin + b * cos], -1)
    return np.concatenate([rot, x[..., dims:]], -1)


@pytest.mark.parametrize("traditional", [False, True])
@pytest.mark.parametrize("dims", [8, 6])
def test_rope(on, rng, traditional, dims):
    x = rng.standard_normal((2, 3, 5, 8)).astype(np.float32)
    rope = nn.RoPE(dims, traditional=traditional, base=500, scale=0.5)
    assert_close(rope(mx.array(x), offset=3), _rope_ref(x, dims, traditional, 500, 0.5, 3), rtol=1e-4, atol=1e-5)
    assert rope(mx.array(x, dtype=mx.float16)).dtype == mx.float16
    assert repr(rope) == f"RoPE({dims}, traditional={traditional})"


def test_sinusoidal_positional_encoding(on):
    pe = nn.SinusoidalPositionalEncoding(8, min_freq=0.01, max_freq=2.0, cos_first=True)
    pos = np.arange(6.0)
    freqs = 0.01 * (2.0 / 0.01) ** (1 - np.arange(4) / 3)
    angles = pos[:, None] * freqs
    ref = np.concatenate([np.cos(angles), np.sin(angles)], -1) * math.sqrt(2 / 8)
    assert_close(pe(mx.arange(6)), ref, rtol=1e-5, atol=1e-6)
    y = nn.SinusoidalPositionalEncoding(16)(mx.arange(10))
    assert_close(mx.sum(y * y, axis=-1), np.ones(10), rtol=1e-5)  # unit norm by default
    assert nn.SinusoidalPositionalEncoding(2)(mx.arange(3)).shape == (3, 2)
    assert np.all(np.asarray(nn.SinusoidalPositionalEncoding(4, scale=0.0)(mx.arange(3))) == 0)
    full = nn.SinusoidalPositionalEncoding(4, full_turns=True)
    assert_close(full._sigmas, 2 * math.pi * np.array([1.0, 1e-4]), rtol=1e-5)
    for dims in (0, 1, 3):
        with pytest.raises(ValueError):
            nn.SinusoidalPositionalEncoding(dims)


def test_alibi(on, rng):
    scores = rng.standard_normal((1, 4, 3, 5)).astype(np.float32)
    slopes = 2.0 ** (-8 * np.arange(1, 5) / 4)
    distance = -np.abs((np.arange(2, 5)[:, None]) - np.arange(5)[None])
    ref = scores + slopes[:, None, None] * distance
    assert_close(nn.ALiBi()(mx.array(scores), offset=2), ref, rtol=1e-5, atol=1e-5)
    mask = np.zeros((3, 5), np.float32)
    mask[:, -1] = -100
    assert_close(nn.ALiBi()(mx.array(scores), offset=2, mask=mx.array(mask)), ref + mask, rtol=1e-5, atol=1e-4)
    assert nn.ALiBi()(mx.array(scores, dtype=mx.float16)).dtype == mx.float16


@pytest.mark.parametrize("heads, exponents", [(1, [8]), (6, [2, 4, 6, 8, 1, 3]), (12, [1, 2, 3, 4, 5, 6, 7, 8, 0.5,
                                                                                  1.5, 2.5, 3.5])])
def test_alibi_slopes_of_any_head_count(heads, exponents):
    # (a count not a power of two: the slopes of the power below, then every other of the power above)
    slopes = nn.ALiBi.create_alibi_slope(heads, mx.float16)
    assert slopes.shape == (heads, 1, 1) and slopes.dtype == mx.float16
    np.testing.assert_allclose(np.asarray(slopes.astype(mx.float32)).ravel(), 2.0 ** -np.array(exponents), rtol=1e-3)
    bias = nn.ALiBi.create_alibi_matrix(3, 4, heads)  # (offset 0 by default)
    np.testing.assert_allclose(np.asarray(bias)[0, :, 2, 0], -2 * 2.0 ** -np.array(exponents), rtol=1e-6)


class Unmasked(nn.Module):
    """A transformer encoder layer called without a mask, for ``check_grad``."""

    def __init__(self):
        super().__init__()
        self.inner = nn.TransformerEncoderLayer(4, 2, mlp_dims=6)

    def __call__(self, x):
        return self.inner(x, None)


@pytest.mark.parametrize("make, shape", [
    (lambda: nn.GRU(3, 2), (2, 4, 3)),
    (lambda: nn.RNN(3, 2), (4, 3)),
    (Unmasked, (2, 3, 4)),
], ids=["gru", "rnn", "encoder"])
def test_gradients_against_finite_differences(on, rng, make, shape):
    check_grad(make(), rng.standard_normal(shape), rng)
