"""Feed-forward layers of umx.nn against NumPy (or torch) references: linear, embedding, dropout,
normalization, pooling and upsampling; gradients through some of them against finite differences."""

from __future__ import annotations

import numpy as np
import pytest

import umx as mx
import umx.nn as nn
from tests.conftest import assert_close
from umx.utils import tree_flatten, tree_unflatten

F64 = mx.float64


def a64(x):
    return mx.array(np.asarray(x, np.float64), dtype=F64)


def check_grad(layer, x: np.ndarray, rng, rtol=1e-5):
    """The gradient of ``sum(layer(x) * w)`` with respect to ``x`` and to the layer's parameters, along random
    directions, against central differences (float64)."""
    layer.set_dtype(F64)
    params = layer.trainable_parameters()
    out = layer(a64(x))
    w = a64(rng.standard_normal(out.shape))

    def loss(p, inp):
        layer.update(p)
        return mx.sum(layer(inp) * w)

    gp, gx = mx.grad(loss, argnums=(0, 1))(params, a64(x))
    flat = tree_flatten(params)
    dirs = [rng.standard_normal(v.shape) for _, v in flat]
    vx = rng.standard_normal(x.shape)
    h = 1e-6

    def shifted(sign):
        p = tree_unflatten([(k, v + sign * h * a64(d)) for (k, v), d in zip(flat, dirs)])
        return loss(p, a64(x + sign * h * vx)).item()

    fd = (shifted(1) - shifted(-1)) / (2 * h)
    got = float(np.sum(np.asarray(gx) * vx))
    got += sum(float(np.sum(np.asarray(g) * d)) for (_, g), d in zip(tree_flatten(gp), dirs))
    layer.update(params)
    np.testing.assert_allclose(got, fd, rtol=rtol, atol=1e-8)


class BilinearOfOne(nn.Module):
    """A bilinear layer as a function of its first input (the second fixed), for ``check_grad``."""

    def __init__(self, other):
        super().__init__()
        self.inner = nn.Bilinear(3, 3, 2)
        self.other = other
        self.freeze(keys="other")

    def __call__(self, x):
        return self.inner(x, self.other)


def test_linear_bilinear_identity(on, rng):
    x = rng.standard_normal((2, 5, 4))
    lin = nn.Linear(4, 3)
    ref = x @ np.asarray(lin.weight).T + np.asarray(lin.bias)
    assert_close(lin(mx.array(x)), ref, rtol=1e-5, atol=1e-6)
    assert "bias" not in nn.Linear(4, 3, bias=False).parameters()
    bound = 1 / np.sqrt(4)
    assert np.abs(np.asarray(nn.Linear(4, 300).weight)).max() <= bound
    x1, x2 = rng.standard_normal((6, 2)), rng.standard_normal((6, 5))
    bil = nn.Bilinear(2, 5, 3)
    w = np.asarray(bil.weight)  # [out, in2, in1]
    ref = np.einsum("ni,oji,nj->no", x1, w, x2) + np.asarray(bil.bias)
    assert_close(bil(mx.array(x1), mx.array(x2)), ref, rtol=1e-5, atol=1e-6)
    assert bil(mx.zeros((2, 3, 2)), mx.zeros((2, 3, 5))).shape == (2, 3, 3)
    ident = nn.Identity(7, anything=True)
    x = mx.array(x1)
    assert ident(x) is x


def test_embedding(on, rng):
    emb = nn.Embedding(10, 4)
    table = np.asarray(emb.weight)
    idx = np.array([[1, 9, 0], [3, 3, 2]])
    assert_close(emb(mx.array(idx)), table[idx])
    x = rng.standard_normal((2, 4))
    assert_close(emb.as_linear(mx.array(x)), x @ table.T, rtol=1e-5, atol=1e-6)
    assert repr(emb) == "Embedding(10, 4)"


def test_dropout_training_and_eval(on):
    x = mx.ones((200, 50))
    layer = nn.Dropout(0.3)
    y = np.asarray(layer(x))
    np.testing.assert_allclose(np.unique(y), [0.0, 1 / 0.7], rtol=1e-6)
    assert abs((y == 0).mean() - 0.3) < 0.03
    assert layer(x.astype(mx.float16)).dtype == mx.float16
    layer.eval()
    assert np.all(np.asarray(layer(x)) == 1)
    assert np.all(np.asarray(nn.Dropout(0.0)(x)) == 1)
    with pytest.raises(ValueError):
        nn.Dropout(1.0)


@pytest.mark.parametrize("layer_cls, shape", [(nn.Dropout2d, (8, 5, 6, 40)), (nn.Dropout3d, (4, 3, 4, 5, 40))])
def test_channel_dropout(on, layer_cls, shape):
    y = np.asarray(layer_cls(0.5)(mx.ones(shape)))
    spatial = tuple(range(1, len(shape) - 1))
    # a channel is dropped or kept whole
    assert np.all(y.min(axis=spatial) == y.max(axis=spatial))
    assert 0.3 < (y == 0).mean() < 0.7
    with pytest.raises(ValueError):
        layer_cls(0.5)(mx.ones((2, 3)))


def _norm_ref(x, axes, eps=1e-5):
    return (x - x.mean(axis=axes, keepdims=True)) / np.sqrt(x.var(axis=axes, keepdims=True) + eps)


def test_layer_norm_and_rms_norm(on, rng):
    x = rng.standard_normal((3, 4, 8)) * 2 + 1
    ln = nn.LayerNorm(8)
    ln.weight = a64(rng.standard_normal(8))
    ln.bias = a64(rng.standard_normal(8))
    ref = _norm_ref(x, -1) * np.asarray(ln.weight) + np.asarray(ln.bias)
    assert_close(ln(a64(x)), ref, rtol=1e-6, atol=1e-8)
    assert_close(nn.LayerNorm(8, affine=False)(a64(x)), _norm_ref(x, -1), rtol=1e-6, atol=1e-8)
    assert list(nn.LayerNorm(8, bias=False).parameters()) == ["weight"]
    rms = nn.RMSNorm(8, eps=1e-6)
    rms.weight = a64(rng.standard_normal(8))
    ref = x / np.sqrt((x**2).mean(-1, keepdims=True) + 1e-6) * np.asarray(rms.weight)
    assert_close(rms(a64(x)), ref, rtol=1e-6, atol=1e-8)
    assert nn.RMSNorm(8)(mx.ones((2, 8), dtype=mx.float16)).dtype == mx.float32  # promoted with the weight
    for build in (lambda e: nn.LayerNorm(8, eps=e), lambda e: nn.RMSNorm(8, eps=e),
                  lambda e: nn.GroupNorm(2, 8, eps=e), lambda e: nn.InstanceNorm(8, eps=e),
                  lambda e: nn.BatchNorm(8, eps=e)):
        with pytest.raises(ValueError, match="must be positive"):
            build(0.0)


@pytest.mark.parametrize("pytorch_compatible", [False, True])
def test_group_norm(on, rng, pytorch_compatible):
    x = rng.standard_normal((2, 3, 5, 8))
    g = nn.GroupNorm(4, 8, pytorch_compatible=pytorch_compatible)
    g.weight = a64(rng.standard_normal(8))
    g.bias = a64(rng.standard_normal(8))
    if pytorch_compatible:  # groups of consecutive channels
        grouped = x.reshape(2, 15, 4, 2)
        ref = _norm_ref(grouped, (1, 3)).reshape(x.shape)
    else:  # channel c in group c % 4
        ref = _norm_ref(x.reshape(2, 30, 4), 1).reshape(x.shape)
    assert_close(g(a64(x)), ref * np.asarray(g.weight) + np.asarray(g.bias), rtol=1e-6, atol=1e-8)
    torch = pytest.importorskip("torch")
    if pytorch_compatible:
        tg = torch.nn.GroupNorm(4, 8).double()
        with torch.no_grad():
            tg.weight.copy_(torch.tensor(np.asarray(g.weight)))
            tg.bias.copy_(torch.tensor(np.asarray(g.bias)))
        ref = tg(torch.tensor(x).permute(0, 3, 1, 2)).permute(0, 2, 3, 1).detach().numpy()
        assert_close(g(a64(x)), ref, rtol=1e-6, atol=1e-8)
    for bad in ((4, 6), (0, 8), (-1, 8), (4, 0)):
        with pytest.raises(ValueError):
            nn.GroupNorm(*bad)


def test_instance_norm(on, rng):
    x = rng.standard_normal((2, 4, 5, 3))
    inorm = nn.InstanceNorm(3, affine=True)
    assert_close(inorm(a64(x)), _norm_ref(x, (1, 2)), rtol=1e-6, atol=1e-8)
    assert repr(nn.InstanceNorm(3)) == "InstanceNorm(3, eps=1e-05, affine=False)"
    # half precision: statistics in float32, so variances above float16's range do not overflow
    board = np.where(np.indices((4, 4)).sum(0) % 2, -512.0, 512.0)[None, :, :, None]
    y = nn.InstanceNorm(1)(mx.array(board, dtype=mx.float16))
    assert y.dtype == mx.float16 and set(np.unique(np.asarray(y))) == {-1.0, 1.0}
    with pytest.raises(ValueError):
        inorm(mx.zeros((4, 3)))


def test_batch_norm_running_statistics(on, rng):
    x = rng.standard_normal((6, 3, 4)) * 2 + 0.5
    bn = nn.BatchNorm(4, momentum=0.2)
    assert sorted(bn.trainable_parameters()) == ["bias", "weight"]
    bn.unfreeze()
    assert "running_mean" not in bn.trainable_parameters()
    y = bn(a64(x))
    axes = (0, 1)
    assert_close(y, _norm_ref(x, axes), rtol=1e-5, atol=1e-6)
    n = 18
    assert_close(bn.running_mean, 0.2 * x.mean(axes), rtol=1e-5, atol=1e-7)
    assert_close(bn.running_var, 0.8 + 0.2 * x.var(axes) * n / (n - 1), rtol=1e-5, atol=1e-7)
    bn.eval()
    mean, var = np.asarray(bn.running_mean), np.asarray(bn.running_var)
    assert_close(bn(a64(x)), (x - mean) / np.sqrt(var + 1e-5), rtol=1e-5, atol=1e-6)
    free = nn.BatchNorm(4, affine=False, track_running_stats=False).eval()
    assert free.parameters() == {}
    assert_close(free(a64(x)), _norm_ref(x, axes), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError):
        nn.BatchNorm(4)(mx.ones((1, 4)))
    with pytest.raises(ValueError):
        bn(mx.ones((2, 2, 2, 2, 4)))


@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("shape", [(7, 3), (4, 5, 3), (2, 3, 4, 3)])
def test_batch_norm_gradient_in_closed_form(on, rng, shape, affine):
    # the layer's closed-form gradient against central differences, and every transform of it against the same
    # function composed of plain ops (whose gradient autodiff derives)
    check_grad(nn.BatchNorm(shape[-1], affine=affine), rng.standard_normal(shape) * 2 + 1, rng)
    x, c = a64(rng.standard_normal(shape) + 3), a64(rng.standard_normal(shape))
    w, b = a64(rng.standard_normal(shape[-1])), a64(rng.standard_normal(shape[-1]))
    axes = tuple(range(len(shape) - 1))

    def layer(x, w, b):
        bn = nn.BatchNorm(shape[-1], affine=affine)
        bn.set_dtype(F64)
        if affine:
            bn.update({"weight": w, "bias": b})
        return bn(x)

    def composed(x, w, b):
        y = (x - mx.mean(x, axis=axes)) * mx.rsqrt(mx.var(x, axis=axes) + 1e-5)
        return w * y + b if affine else y

    for f in (layer, composed):
        def loss(x, w, b, f=f):
            return mx.sum(f(x, w, b) * c)

        grads = mx.grad(loss, argnums=(0, 1, 2))(x, w, b)
        batched = mx.vmap(mx.grad(loss), in_axes=(0, None, None))(mx.stack([x, 2 * x]), w, b)
        tangent = mx.jvp(lambda v: loss(v, w, b), [x], [c])[1][0]
        second = mx.grad(lambda v: mx.sum(mx.grad(loss)(v, w, b) ** 2))(x)
        compiled = mx.compile(mx.grad(loss, argnums=(0, 1, 2)))(x, w, b)
        got = [*grads, batched, tangent, second, *compiled]
        if f is layer:
            want = got
        else:
            for name, a, e in zip(["x", "w", "b", "vmap", "jvp", "second", "cx", "cw", "cb"], want, got):
                np.testing.assert_allclose(np.asarray(a), np.asarray(e), rtol=1e-8, atol=1e-10, err_msg=name)


def test_batch_norm_matches_torch(rng):
    torch = pytest.importorskip("torch")
    x = rng.standard_normal((2, 3, 3, 6)).astype(np.float32)
    bn, tbn = nn.BatchNorm(6), torch.nn.BatchNorm2d(6)
    y = bn(mx.array(x))
    ty = tbn(torch.tensor(x).permute(0, 3, 1, 2)).permute(0, 2, 3, 1).detach().numpy()
    assert_close(y, ty, rtol=1e-4, atol=1e-5)
    assert_close(bn.running_var, tbn.running_var.numpy(), rtol=1e-5, atol=1e-6)


def _pool_ref(x, kernel, stride, padding, op):
    """Max or (zero-padded, full-window) average pooling by explicit windows."""
    n = len(kernel)
    fill = -np.inf if op == "max" else 0.0
    xp = np.pad(x.astype(np.float64), [(0, 0)] + [(p, p) for p in padding] + [(0, 0)], constant_values=fill)
    outs = [(s - k) // st + 1 for s, k, st in zip(xp.shape[1:-1], kernel, stride)]
    out = np.empty((x.shape[0], *outs, x.shape[-1]))
    for pos in np.ndindex(*outs):
        window = xp[(slice(None),) + tuple(slice(p * st, p * st + k) for p, st, k in zip(pos, stride, kernel))]
        axes = tuple(range(1, n + 1))
        out[(slice(None), *pos)] = window.max(axis=axes) if op == "max" else window.mean(axis=axes)
    return out


POOL_CASES = [
    (nn.MaxPool1d, "max", (3,), (2,), (1,)), (nn.AvgPool1d, "avg", (2,), (1,), (0,)),
    (nn.MaxPool2d, "max", (2, 3), (1, 2), (1, 1)), (nn.AvgPool2d, "avg", (3, 2), (2, 1), (1, 0)),
    (nn.MaxPool3d, "max", (2, 2, 2), (2, 1, 2), (0, 1, 1)), (nn.AvgPool3d, "avg", (2, 1, 2), (1, 1, 2), (1, 0, 0)),
    # windows that tile the input (a reshape and one reduction), with a remainder no window reads and padding
    (nn.MaxPool1d, "max", (2,), (2,), (0,)), (nn.AvgPool1d, "avg", (3,), (3,), (1,)),
    (nn.MaxPool2d, "max", (2, 3), (2, 3), (1, 0)), (nn.AvgPool2d, "avg", (2, 2), (2, 2), (0, 0)),
    (nn.MaxPool3d, "max", (2, 1, 3), (2, 1, 3), (0, 0, 1)),
]


@pytest.mark.parametrize("cls, op, kernel, stride, padding", POOL_CASES, ids=lambda c: getattr(c, "__name__", ""))
def test_pooling(on, rng, cls, op, kernel, stride, padding):
    x = rng.standard_normal((2, *(5 + i for i in range(len(kernel))), 3))
    layer = cls(kernel_size=kernel, stride=stride, padding=padding)
    assert_close(layer(a64(x)), _pool_ref(x, kernel, stride, padding, op), rtol=1e-6, atol=1e-9)
    assert repr(layer) == f"{cls.__name__}(kernel_size={kernel}, stride={stride}, padding={padding})"
    ints = mx.array(rng.integers(-50, 50, x.shape), dtype=mx.int32)
    got = layer(ints)
    assert got.dtype == (mx.int32 if op == "max" else mx.float32)
    assert_close(got, _pool_ref(np.asarray(ints), kernel, stride, padding, op), rtol=1e-6)


@pytest.mark.parametrize("stride", [2, 1], ids=["tiled", "overlapping"])
def test_max_pooling_ties_share_the_gradient(on, stride):
    # as in MLX: each window's gradient is split evenly among the elements that tie for its max
    x = mx.array(np.array([[1, 1, 0], [1, 0, 2], [0, 2, 2]], np.float32).reshape(1, 3, 3, 1))
    g = mx.grad(lambda x: nn.MaxPool2d(2, stride=stride)(x).sum())(x)
    windows = [(r, c) for r in range(0, 2, stride) for c in range(0, 2, stride)]
    ref = np.zeros((3, 3))
    xs = np.asarray(x)[0, :, :, 0]
    for r, c in windows:
        w = xs[r:r + 2, c:c + 2]
        ref[r:r + 2, c:c + 2] += (w == w.max()) / (w == w.max()).sum()
    assert_close(g[0, :, :, 0], ref, rtol=1e-6)


def test_pooling_defaults_and_errors():
    assert repr(nn.MaxPool2d(3)) == "MaxPool2d(kernel_size=(3, 3), stride=(3, 3), padding=(0, 0))"
    with pytest.raises(ValueError):
        nn.MaxPool2d(2)(mx.zeros((4, 4, 3)))
    with pytest.raises(ValueError):
        nn.AvgPool1d(5)(mx.zeros((1, 3, 2)))


@pytest.mark.parametrize("mode", ["nearest", "linear", "cubic"])
@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize("scale", [2.0, (1.5, 3.0), 0.5])
def test_upsample_matches_torch(mode, align_corners, scale):
    torch = pytest.importorskip("torch")
    if mode == "nearest" and align_corners:
        return
    x = np.random.default_rng(0).standard_normal((2, 4, 6, 3)).astype(np.float32)
    got = nn.Upsample(scale, mode=mode, align_corners=align_corners)(mx.array(x))
    ref = torch.nn.functional.interpolate(
        torch.tensor(x).permute(0, 3, 1, 2), scale_factor=scale, mode={"linear": "bilinear", "cubic": "bicubic",
                                                                       "nearest": "nearest"}[mode],
        align_corners=None if mode == "nearest" else align_corners).permute(0, 2, 3, 1).numpy()
    assert_close(got, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("mode", ["linear", "cubic"])
@pytest.mark.parametrize("scale", [0.5, 0.25, 2.0])
def test_upsample_antialias_matches_torch(mode, scale):
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(1).standard_normal((1, 16, 8, 2)).astype(np.float32)
    got = nn.Upsample(scale, mode=mode, antialias=True)(mx.array(x))
    ref = torch.nn.functional.interpolate(torch.tensor(x).permute(0, 3, 1, 2), scale_factor=scale,
                                          mode="bilinear" if mode == "linear" else "bicubic", antialias=True)
    assert_close(got, ref.permute(0, 2, 3, 1).numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("scale", [1.7, 0.34, 3.7, (0.75, 2.2)], ids=str)
def test_upsample_matches_mlx_where_the_size_is_not_a_whole_multiple(scale):
    # (where N * scale is not whole, MLX centres the M = floor(N * scale) outputs on the input, which PyTorch
    # does not: MLX's is the rule)
    mlx = pytest.importorskip("mlx.core")
    import mlx.nn as mlx_nn

    x = np.random.default_rng(2).standard_normal((2, 9, 7, 3)).astype(np.float32)
    for mode, align, aa in (("nearest", False, False), ("linear", False, False), ("linear", True, False),
                            ("cubic", False, False), ("cubic", True, False), ("linear", False, True),
                            ("cubic", False, True)):
        ours = nn.Upsample(scale, mode=mode, align_corners=align, antialias=aa)(mx.array(x))
        theirs = mlx_nn.Upsample(scale, mode=mode, align_corners=align, antialias=aa)(mlx.array(x))
        assert_close(ours, np.asarray(theirs), rtol=2e-5, atol=2e-5)


def test_upsample_centres_outputs_on_the_input(on):
    x = mx.arange(5, dtype=mx.float32).reshape(1, 5, 1)  # (the value at a position is the position)
    positions = (np.arange(8) - 3.5) / 1.7 + 2  # (M = 8 outputs, centred)
    assert_close(nn.Upsample(1.7, mode="linear")(x).squeeze(), np.clip(positions, 0, 4), rtol=1e-6, atol=1e-6)
    near = nn.Upsample(1.7)(mx.arange(5).reshape(1, 5, 1)).squeeze()
    assert near.tolist() == np.clip(np.round((np.arange(8) + 0.5) * 5 / 8 - 0.5), 0, 4).astype(int).tolist()


def test_upsample_other_ranks_and_errors(on):
    x = mx.arange(4, dtype=mx.float32).reshape(1, 4, 1)
    assert_close(nn.Upsample(2, mode="linear", align_corners=True)(x).squeeze(),
                 np.linspace(0, 3, 8), rtol=1e-6, atol=1e-6)
    vol = mx.arange(8).reshape(1, 2, 2, 2, 1)
    up = nn.Upsample(2)(vol)
    assert up.shape == (1, 4, 4, 4, 1) and up.dtype == vol.dtype
    assert_close(up[0, :, :, :, 0], np.arange(8).reshape(2, 2, 2).repeat(2, 0).repeat(2, 1).repeat(2, 2))
    assert repr(nn.Upsample((2, 3))) == "Upsample(scale_factor=(2.0, 3.0), mode='nearest', align_corners=False)"
    with pytest.raises(ValueError):
        nn.Upsample(2, mode="area")
    with pytest.raises(ValueError):
        nn.Upsample(2, antialias=True)
    with pytest.raises(ValueError, match="align_corners"):
        nn.Upsample(2, mode="linear", antialias=True, align_corners=True)
    with pytest.raises(ValueError):
        nn.Upsample((2, 2, 2))(mx.zeros((1, 2, 2, 1)))


@pytest.mark.parametrize("make, shape", [
    (lambda: nn.Linear(4, 3), (2, 4)),
    (lambda: BilinearOfOne(mx.array(np.arange(6.0).reshape(2, 3) / 6)), (2, 3)),
    (lambda: nn.LayerNorm(5), (3, 5)),
    (lambda: nn.RMSNorm(5), (3, 5)),
    (lambda: nn.GroupNorm(2, 4, pytorch_compatible=True), (2, 3, 4)),
    (lambda: nn.MaxPool2d(2, 1, 1), (1, 3, 3, 2)),
    (lambda: nn.AvgPool1d(3, 2, 1), (2, 6, 2)),
    (lambda: nn.Upsample((2, 1.5), mode="cubic"), (1, 3, 4, 2)),
    (lambda: nn.Upsample(0.5, mode="linear", antialias=True), (1, 6, 6, 1)),
], ids=["linear", "bilinear", "layernorm", "rmsnorm", "groupnorm", "maxpool", "avgpool", "cubic", "antialias"])
def test_gradients_against_finite_differences(on, rng, make, shape):
    check_grad(make(), rng.standard_normal(shape), rng)
