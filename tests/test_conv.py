"""Convolutions: every op against a float64 NumPy direct sum and torch.nn.functional, gradients against torch
autograd, the adjoint identity and finite differences, vmap against a loop, dtypes, chunking and errors."""

from __future__ import annotations

import sys
from itertools import product

import numpy as np
import pytest

import umx as mx
from tests.conftest import assert_close
from umx.backends.xp.conv import convolution
from umx.primitives import Convolution

F64 = mx.float64


def _torch():
    return pytest.importorskip("torch")


def direct(x, w, stride=1, lo=0, hi=0, kdil=1, idil=1, groups=1, flip=False) -> np.ndarray:
    """The convolution as a float64 sum over kernel taps, spelled out from its definition."""
    x = np.asarray(x, np.float64)
    w = np.asarray(w, np.float64)
    nd = x.ndim - 2
    stride, lo, hi, kdil, idil = ((v,) * nd if np.isscalar(v) else tuple(v) for v in (stride, lo, hi, kdil, idil))
    if flip:
        w = w[(slice(None),) + (slice(None, None, -1),) * nd]
    n, *size, c = x.shape
    o, *kernel, cg = w.shape
    dil = np.zeros((n, *((s - 1) * e + 1 for s, e in zip(size, idil)), c))
    dil[(slice(None),) + tuple(slice(None, None, e) for e in idil)] = x
    padded = np.pad(dil, [(0, 0)] + [(max(a, 0), max(b, 0)) for a, b in zip(lo, hi)] + [(0, 0)])
    padded = padded[(slice(None),) + tuple(slice(max(-a, 0), p - max(-b, 0))
                                          for a, b, p in zip(lo, hi, padded.shape[1:-1]))]
    out_sp = [(p - (k - 1) * d - 1) // s + 1 for p, k, d, s in zip(padded.shape[1:-1], kernel, kdil, stride)]
    og = o // groups
    out = np.zeros((n, *out_sp, o))
    for tap in product(*(range(k) for k in kernel)):
        window = padded[(slice(None),) + tuple(slice(t * d, t * d + (m - 1) * s + 1, s)
                                               for t, d, m, s in zip(tap, kdil, out_sp, stride))]
        for g in range(groups):
            out[..., g * og:(g + 1) * og] += window[..., g * cg:(g + 1) * cg] @ w[(slice(g * og, (g + 1) * og),
                                                                                   *tap)].T
    return out


def _t(x, torch):
    """A channels-last NumPy array as a torch channels-first tensor."""
    return torch.from_numpy(np.ascontiguousarray(np.moveaxis(np.asarray(x), -1, 1)))


def _back(t) -> np.ndarray:
    return np.moveaxis(t.detach().numpy(), 1, -1)


def _torch_transpose_weight(w: np.ndarray, groups: int) -> np.ndarray:
    """MLX's transposed-convolution weight (C_out, *K, C_in / g) in torch's layout (C_in, C_out / g, *K)."""
    o, *kernel, cg = w.shape
    og = o // groups
    t = np.moveaxis(w.reshape(groups, og, *kernel, cg), -1, 1)  # (g, cg, og, *K)
    return np.ascontiguousarray(t.reshape(groups * cg, og, *kernel))


# -- forward ---------------------------------------------------------------------------------------------------
def test_conv_general_matches_the_direct_sum(device):
    """Shapes, strides, (low, high) paddings (negative: crops), both dilations, groups, flip and dtypes."""
    from hypothesis import assume, given, settings
    from hypothesis import strategies as st

    @settings(max_examples=120, deadline=None, derandomize=True)
    @given(nd=st.integers(1, 3), data=st.data(), groups=st.integers(1, 3), cg=st.integers(1, 3),
           og=st.integers(1, 3), n=st.integers(0, 2), flip=st.booleans(),
           dtype=st.sampled_from([mx.float32, mx.float64]), seed=st.integers(0, 2**16))
    def check(nd, data, groups, cg, og, n, flip, dtype, seed):
        axes = st.lists(st.integers(1, 3), min_size=nd, max_size=nd)
        kernel, stride, kdil, idil = (data.draw(axes) for _ in range(4))
        size = data.draw(st.lists(st.integers(1, 6), min_size=nd, max_size=nd))
        lo, hi = (data.draw(st.lists(st.integers(-1, 3), min_size=nd, max_size=nd)) for _ in range(2))
        for a in range(nd):
            assume((size[a] - 1) * idil[a] + 1 + lo[a] + hi[a] >= (kernel[a] - 1) * kdil[a] + 1)
        rng = np.random.default_rng(seed)
        x = rng.standard_normal((n, *size, groups * cg))
        w = rng.standard_normal((groups * og, *kernel, cg))
        got = mx.conv_general(mx.array(x, dtype=dtype), mx.array(w, dtype=dtype), stride=stride, padding=(lo, hi),
                              kernel_dilation=kdil, input_dilation=idil, groups=groups, flip=flip, stream=device)
        want = direct(x.astype(dtype.np), w.astype(dtype.np), stride, lo, hi, kdil, idil, groups, flip)
        tol = 1e-10 if dtype == F64 else 2e-5
        assert_close(got, want, rtol=tol, atol=tol, dtype=dtype)

    check()


CONV_CASES = [  # (input shape, weight shape, stride, padding, dilation, groups)
    ((2, 9, 4), (6, 3, 4), 1, 0, 1, 1),
    ((2, 31, 8), (4, 5, 2), 5, 2, 1, 4),
    ((3, 12, 6), (6, 3, 2), 2, 3, 2, 3),
    ((2, 7, 8, 4), (6, 3, 2, 4), (2, 1), (1, 2), 1, 1),
    ((2, 10, 9, 6), (12, 3, 3, 1), 2, 1, (2, 1), 6),
    ((1, 11, 11, 8), (8, 5, 5, 4), (1, 2), 2, 1, 2),
    ((2, 6, 7, 5, 4), (4, 2, 3, 2, 2), (1, 2, 1), 1, (2, 1, 1), 2),
    ((1, 5, 5, 5, 3), (2, 3, 3, 3, 3), 2, 1, 1, 1),
]


@pytest.mark.parametrize("case", range(len(CONV_CASES)))
def test_conv_nd_match_torch(device, rng, case):
    torch = _torch()
    import torch.nn.functional as F

    xs, ws, stride, padding, dilation, groups = CONV_CASES[case]
    x = rng.standard_normal(xs).astype(np.float32)
    w = rng.standard_normal(ws).astype(np.float32)
    nd = x.ndim - 2
    op = (mx.conv1d, mx.conv2d, mx.conv3d)[nd - 1]
    got = op(mx.array(x), mx.array(w), stride=stride, padding=padding, dilation=dilation, groups=groups,
             stream=device)
    want = (F.conv1d, F.conv2d, F.conv3d)[nd - 1](_t(x, torch), _t(w, torch), stride=stride, padding=padding,
                                                  dilation=dilation, groups=groups)
    assert_close(got, _back(want), rtol=1e-4, atol=1e-4, dtype=mx.float32)


TRANSPOSE_CASES = [  # (input shape, weight shape, stride, padding, dilation, output padding, groups)
    ((2, 7, 4), (6, 3, 4), 1, 0, 1, 0, 1),
    ((2, 7, 4), (6, 3, 2), 2, 1, 1, 1, 2),
    ((1, 9, 3), (5, 4, 3), 3, 1, 2, 2, 1),
    ((2, 5, 6, 4), (6, 3, 2, 4), (2, 1), (1, 0), 1, (1, 0), 1),
    ((2, 5, 5, 6), (6, 3, 3, 2), 2, 1, (2, 1), 1, 3),
    ((1, 6, 6, 4), (4, 3, 3, 1), 2, 1, 1, 0, 4),
    ((1, 3, 4, 3, 2), (3, 2, 3, 2, 2), 2, (0, 1, 0), 1, (1, 0, 1), 1),
]


@pytest.mark.parametrize("case", range(len(TRANSPOSE_CASES)))
def test_conv_transpose_matches_torch(device, rng, case):
    torch = _torch()
    import torch.nn.functional as F

    xs, ws, stride, padding, dilation, out_pad, groups = TRANSPOSE_CASES[case]
    x = rng.standard_normal(xs).astype(np.float32)
    w = rng.standard_normal(ws).astype(np.float32)
    nd = x.ndim - 2
    op = (mx.conv_transpose1d, mx.conv_transpose2d, mx.conv_transpose3d)[nd - 1]
    got = op(mx.array(x), mx.array(w), stride=stride, padding=padding, dilation=dilation, output_padding=out_pad,
             groups=groups, stream=device)
    tf = (F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d)[nd - 1]
    want = tf(_t(x, torch), torch.from_numpy(_torch_transpose_weight(w, groups)), stride=stride, padding=padding,
              dilation=dilation, output_padding=out_pad, groups=groups)
    assert_close(got, _back(want), rtol=1e-4, atol=1e-4, dtype=mx.float32)


def test_conv1d_takes_inputs_of_more_spatial_axes(device, rng):
    """As in MLX, conv1d's ints apply along every spatial axis of a 2-d or 3-d input."""
    x, w = rng.standard_normal((2, 6, 7, 4)), rng.standard_normal((4, 3, 2, 2))
    got = mx.conv1d(mx.array(x, dtype=F64), mx.array(w, dtype=F64), stride=2, padding=1, groups=2, stream=device)
    assert_close(got, direct(x, w, 2, 1, 1, groups=2), rtol=1e-12)
    got = mx.conv_transpose1d(mx.array(x, dtype=F64), mx.array(w, dtype=F64), stride=2, groups=2, stream=device)
    assert got.shape == (2, 13, 14, 4)


def test_strided_operands(device, rng):
    x, w = rng.standard_normal((6, 5, 4)), rng.standard_normal((6, 5, 3))
    xm, wm = mx.transpose(mx.array(x, dtype=F64), (2, 0, 1)), mx.transpose(mx.array(w, dtype=F64), (0, 2, 1))
    got = mx.conv1d(xm, wm, padding=1, stream=device)
    assert_close(got, direct(x.transpose(2, 0, 1), w.transpose(0, 2, 1), 1, 1, 1), rtol=1e-12)


def test_dtypes(device, rng):
    x, w = rng.standard_normal((2, 9, 9, 8)), rng.standard_normal((16, 3, 3, 8)) / 8
    want = direct(x, w, 1, 1, 1)
    for d, tol in ((mx.float16, 2e-2), (mx.bfloat16, 6e-2), (mx.float32, 1e-5), (mx.float64, 1e-12)):
        got = mx.conv2d(mx.array(x, dtype=d), mx.array(w, dtype=d), padding=1, stream=device)
        assert got.dtype == d
        assert_close(got.astype(F64), want, rtol=tol, atol=tol)
    assert mx.conv2d(mx.array(x, dtype=mx.float16), mx.array(w, dtype=mx.float32)).dtype == mx.float32
    assert mx.conv2d(mx.array(x, dtype=mx.bfloat16), mx.array(w, dtype=mx.float16)).dtype == mx.float32
    assert mx.conv2d(mx.array(x, dtype=mx.float32), mx.array(w).astype(mx.int32)).dtype == mx.float32
    for d in (mx.int32, mx.complex64):
        with pytest.raises(ValueError, match="conv2d.*floating"):
            mx.conv2d(mx.array(x).astype(d), mx.array(w).astype(d))


def test_empty_sizes(device):
    assert_close(mx.conv1d(mx.zeros((0, 5, 3)), mx.ones((4, 2, 3)), stream=device), np.zeros((0, 4, 4)))
    assert_close(mx.conv1d(mx.ones((2, 5, 0)), mx.ones((4, 2, 0)), stream=device), np.zeros((2, 4, 4)))
    assert_close(mx.conv1d(mx.ones((2, 5, 3)), mx.ones((0, 2, 3)), stream=device), np.zeros((2, 4, 0)))
    assert_close(mx.conv1d(mx.ones((1, 0, 2)), mx.ones((1, 1, 2)), padding=1, stream=device), np.zeros((1, 2, 1)))
    assert_close(mx.conv_general(mx.ones((1, 0, 2)), mx.ones((1, 1, 2)), padding=1, input_dilation=2, stream=device),
                 np.zeros((1, 2, 1)))


@pytest.mark.parametrize("mode", ["full", "same", "valid"])
@pytest.mark.parametrize("n,m", [(1, 1), (25, 5), (24, 4), (4, 24), (5, 25), (6, 6)])
def test_convolve(device, rng, mode, n, m):
    a, v = rng.standard_normal(n), rng.standard_normal(m)
    for d, tol in ((mx.float32, 1e-5), (mx.float16, 1e-2)):
        got = mx.convolve(mx.array(a, dtype=d), mx.array(v, dtype=d), mode, stream=device)
        assert_close(got, np.convolve(a.astype(d.np), v.astype(d.np), mode), rtol=tol, atol=tol, dtype=d)


def test_chunked_lowerings_agree(rng):
    """Each lowering cut into chunks of a few hundred bytes (batch elements, rows, kernel rows) gives what one
    chunk gives, its chunks run in turn or handed to a backend's ``parallel``."""
    cases = [  # (input, weight, stride, low, high, kernel dilation, input dilation, groups)
        ((3, 7, 6, 4), (6, 3, 2, 4), (2, 1), (1, 0), (1, 2), (1, 2), (1, 1), 1),  # windows
        ((3, 7, 6, 4), (6, 3, 2, 2), (1, 2), (1, 0), (0, 1), (2, 1), (1, 1), 2),  # windows, grouped
        ((2, 4, 3, 5), (7, 5, 4, 5), (1, 1), (0, 0), (0, 0), (1, 1), (1, 1), 1),  # windows, wide kernel
        ((3, 5, 4, 4), (6, 3, 2, 2), (1, 1), (2, 1), (2, 1), (1, 2), (2, 3), 2),  # scatter
        ((3, 5, 4, 4), (6, 3, 2, 2), (2, 1), (2, 1), (2, 1), (1, 2), (2, 3), 2),  # dilated input, strided
        ((3, 7, 6, 4), (8, 3, 3, 1), (2, 1), (1, 1), (1, 0), (1, 1), (1, 1), 4),  # taps (depthwise)
        ((3, 7, 6, 4), (4, 3, 3, 1), (1, 1), (1, 1), (1, 1), (2, 1), (1, 1), 4),  # taps, weights along rows
        ((2, 40, 6), (6, 5, 1), (1,), (2,), (2,), (1,), (1,), 6),  # taps, 1-d: blocks of rows, weights along them
        ((2, 40, 6), (12, 4, 1), (2,), (1,), (2,), (2,), (1,), 6),  # taps, 1-d, strided, two outputs a channel
        ((2, 3, 4, 5, 3), (3, 2, 2, 3, 1), (1, 1, 1), (1, 0, 1), (0, 1, 1), (1, 1, 1), (1, 1, 1), 3),  # taps, 3-d
        # positions (a depthwise weight gradient: the batch an outer spatial axis, the kernel the cotangent)
        ((1, 2, 6, 5, 3), (3, 2, 4, 3, 1), (1, 1, 2), (0, 1, 0), (0, 0, 1), (1, 1, 1), (1, 1, 1), 3),
        ((1, 3, 9, 3), (6, 3, 4, 1), (1, 2), (0, 1), (0, 1), (1, 2), (1, 1), 3),  # positions, two outputs a channel
    ]

    def in_pairs(fn, n):  # a backend's ``parallel``: chunks of two items (run in turn here)
        return [fn(lo, min(n, lo + 2)) for lo in range(0, n, 2)]

    for xs, ws, stride, lo, hi, kd, idil, groups in cases:
        x, w = rng.standard_normal(xs), rng.standard_normal(ws)
        for flip in (False, True):
            prim = Convolution(stride, lo, hi, kd, idil, groups, flip)
            want = direct(x, w, stride, lo, hi, kd, idil, groups, flip)
            for budget in (1, 300, 3000, 1 << 30):
                np.testing.assert_allclose(convolution(np, prim, x, w, budget), want, rtol=1e-12, atol=1e-12)
                np.testing.assert_allclose(convolution(np, prim, x, w, budget, parallel=in_pairs), want,
                                           rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("stride, lo, hi, kd, idil", [
    ((1, 1), (1, 1), (1, 1), (1, 1), (1, 1)), ((2, 1), (0, 1), (1, 0), (1, 2), (1, 1)),
    ((1, 2), (2, 0), (0, 1), (2, 1), (2, 1)), ((1, 1), (-1, 0), (0, -1), (1, 1), (1, 1))])
def test_weight_gradients_gathered_in_the_inputs_order(rng, stride, lo, hi, kd, idil):
    # a weight gradient's input is the forward's input with batch and channels swapped (a transposed view); the
    # CPU gathers its windows in the memory's order, in chunks of the contracted axis: the same values
    forward_x = rng.standard_normal((5, 9, 8, 3))  # (N, H, W, C), contiguous
    x = forward_x.transpose(3, 1, 2, 0)  # (C, H, W, N): N, the contracted axis, strided
    w = rng.standard_normal((4, 7, 5, 5))  # (O, *kernel larger than the output, N)
    prim = Convolution(stride, lo, hi, kd, idil, 1, False)
    want = direct(x, w, stride, lo, hi, kd, idil, 1, False)
    for budget in (1, 2000, 1 << 30):
        got = convolution(np, prim, x, w, budget, input_order=True)
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
        assert got.flags.c_contiguous


# -- errors ----------------------------------------------------------------------------------------------------
def test_errors():
    x, w = mx.ones((2, 8, 3)), mx.ones((4, 3, 3))
    bad = [
        (lambda: mx.conv1d(mx.ones((8, 3)), w), "conv1d.*spatial"),
        (lambda: mx.conv_general(mx.ones((1, 2, 2, 2, 2, 3)), mx.ones((4, 1, 1, 1, 1, 3))), "1 to 3 spatial"),
        (lambda: mx.conv1d(x, mx.ones((4, 3))), "conv1d: the weight"),
        (lambda: mx.conv2d(x, w), "conv2d: the input must have 4"),
        (lambda: mx.conv3d(mx.ones((1, 4, 4, 3)), mx.ones((2, 1, 1, 3))), "conv3d: the input must have 5"),
        (lambda: mx.conv1d(x, mx.ones((4, 3, 2))), "conv1d: the weight takes 2 channels"),
        (lambda: mx.conv1d(x, mx.ones((4, 3, 1)), groups=2), "do not split into 2 groups"),
        (lambda: mx.conv1d(x, mx.ones((4, 3, 1)), groups=3), "4 output channels do not split"),
        (lambda: mx.conv1d(x, w, groups=0), "groups must be positive"),
        (lambda: mx.conv1d(x, w, stride=0), "stride must be positive"),
        (lambda: mx.conv1d(x, w, dilation=0), "kernel dilation must be positive"),
        (lambda: mx.conv_general(x, w, input_dilation=0), "input dilation must be positive"),
        (lambda: mx.conv1d(x, mx.ones((4, 9, 3))), "smaller than the kernel's extent 9"),
        (lambda: mx.conv1d(x, w, dilation=4), "smaller than the kernel's extent 9"),
        (lambda: mx.conv2d(mx.ones((1, 5, 5, 3)), mx.ones((2, 3, 3, 3)), stride=(1, 2, 3)), "conv2d: stride"),
        (lambda: mx.conv_general(x, w, stride=[1, 2]), "conv_general: stride"),
        (lambda: mx.conv_general(x, w, padding=([1], [2, 3])), "conv_general: padding"),
        (lambda: mx.conv_transpose1d(x, w, stride=0), "conv_transpose1d: stride must be positive"),
        (lambda: mx.conv_transpose1d(x, w, padding=5), "smaller than the kernel's extent"),
        (lambda: mx.conv_transpose2d(x, w), "conv_transpose2d: the input must have 4"),
        (lambda: mx.convolve(mx.ones((5, 2)), mx.ones(3)), "convolve: inputs must be non-empty and 1-d"),
        (lambda: mx.convolve(mx.ones(0), mx.ones(3)), "convolve: inputs must be non-empty"),
        (lambda: mx.convolve(mx.ones(5), mx.ones(3), mode="circular"), "convolve: mode"),
        (lambda: mx.convolve(mx.arange(5), mx.arange(3)), "convolve: convolutions take floating"),
    ]
    for call, message in bad:
        with pytest.raises(ValueError, match=message):
            call()
    with pytest.raises(TypeError, match="conv1d: stride must be an int"):
        mx.conv1d(x, w, stride=1.5)
    with pytest.raises(TypeError, match="conv2d: groups must be an int"):
        mx.conv2d(mx.ones((1, 4, 4, 2)), mx.ones((2, 1, 1, 2)), groups="2")


# -- gradients -------------------------------------------------------------------------------------------------
def _inner(a, b) -> float:
    return float(np.sum(np.asarray(a, np.float64) * np.asarray(b, np.float64)))


def test_vjp_is_the_adjoint(on):
    """A convolution is linear in each input, so its vjp must satisfy <c, conv(u, w)> = <dx(c), u> and
    <c, conv(x, v)> = <dw(c), v> exactly (in float64), for every parameter combination."""
    from hypothesis import assume, given, settings
    from hypothesis import strategies as st

    @settings(max_examples=80, deadline=None, derandomize=True)
    @given(nd=st.integers(1, 3), data=st.data(), groups=st.integers(1, 2), cg=st.integers(1, 2),
           og=st.integers(1, 2), n=st.integers(1, 2), flip=st.booleans(), seed=st.integers(0, 2**16))
    def check(nd, data, groups, cg, og, n, flip, seed):
        axes = st.lists(st.integers(1, 3), min_size=nd, max_size=nd)
        kernel, stride, kdil, idil = (data.draw(axes) for _ in range(4))
        size = data.draw(st.lists(st.integers(1, 5), min_size=nd, max_size=nd))
        lo, hi = (data.draw(st.lists(st.integers(-1, 2), min_size=nd, max_size=nd)) for _ in range(2))
        for a in range(nd):
            assume((size[a] - 1) * idil[a] + 1 + lo[a] + hi[a] >= (kernel[a] - 1) * kdil[a] + 1)
        rng = np.random.default_rng(seed)
        x, u = (mx.array(rng.standard_normal((n, *size, groups * cg)), dtype=F64) for _ in range(2))
        w, v = (mx.array(rng.standard_normal((groups * og, *kernel, cg)), dtype=F64) for _ in range(2))

        def f(a, b):
            return mx.conv_general(a, b, stride=stride, padding=(lo, hi), kernel_dilation=kdil,
                                   input_dilation=idil, groups=groups, flip=flip)

        out = f(x, w)
        c = mx.array(rng.standard_normal(out.shape), dtype=F64)
        _, (dx, dw) = mx.vjp(f, [x, w], [c])
        assert dx.shape == x.shape and dw.shape == w.shape
        np.testing.assert_allclose(_inner(dx, u), _inner(c, f(u, w)), rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(_inner(dw, v), _inner(c, f(x, v)), rtol=1e-9, atol=1e-9)
        _, (t,) = mx.jvp(f, [x, w], [u, v])
        assert_close(t, np.asarray(f(u, w)) + np.asarray(f(x, v)), rtol=1e-10, atol=1e-10)

    check()


GRAD_CASES = [  # (input shape, weight shape, stride, padding, dilation, groups)
    ((2, 11, 4), (6, 3, 2), 2, 1, 2, 2),
    ((2, 9, 8, 4), (6, 3, 3, 4), 2, 1, 1, 1),
    ((1, 10, 9, 6), (6, 3, 3, 3), (2, 1), (1, 0), (3, 2), 2),
    ((2, 8, 8, 4), (8, 3, 3, 1), 2, 1, 1, 4),
    ((1, 6, 7, 5, 2), (3, 3, 2, 3, 2), (2, 1, 2), 1, (1, 2, 1), 1),
    ((3, 9, 7, 5), (5, 3, 3, 1), 1, 1, 1, 5),  # depthwise: its weight gradient takes the batch as a spatial axis
    ((2, 12, 6), (6, 4, 1), 1, 3, 1, 6),  # depthwise 1-d, as a causal convolution's
]


@pytest.mark.parametrize("case", range(len(GRAD_CASES)))
def test_grads_match_torch_autograd(on, rng, case):
    torch = _torch()
    import torch.nn.functional as F

    xs, ws, stride, padding, dilation, groups = GRAD_CASES[case]
    x, w = rng.standard_normal(xs), rng.standard_normal(ws)
    nd = x.ndim - 2
    op = (mx.conv1d, mx.conv2d, mx.conv3d)[nd - 1]

    def f(a, b):
        return op(a, b, stride=stride, padding=padding, dilation=dilation, groups=groups)

    out = f(mx.array(x, dtype=F64), mx.array(w, dtype=F64))
    c = rng.standard_normal(out.shape)
    _, (dx, dw) = mx.vjp(f, [mx.array(x, dtype=F64), mx.array(w, dtype=F64)], [mx.array(c, dtype=F64)])
    xt, wt = _t(x, torch).requires_grad_(), _t(w, torch).requires_grad_()
    yt = (F.conv1d, F.conv2d, F.conv3d)[nd - 1](xt, wt, stride=stride, padding=padding, dilation=dilation,
                                                groups=groups)
    yt.backward(_t(c, torch))
    assert_close(out, _back(yt), rtol=1e-10, atol=1e-10)
    assert_close(dx, _back(xt.grad), rtol=1e-10, atol=1e-10)
    assert_close(dw, _back(wt.grad), rtol=1e-10, atol=1e-10)


def test_conv_transpose_grads_match_torch_autograd(on, rng):
    torch = _torch()
    import torch.nn.functional as F

    x, w = rng.standard_normal((2, 5, 6, 4)), rng.standard_normal((6, 3, 2, 2))

    def f(a, b):
        return mx.conv_transpose2d(a, b, stride=(2, 3), padding=1, dilation=(1, 2), output_padding=1, groups=2)

    out = f(mx.array(x, dtype=F64), mx.array(w, dtype=F64))
    c = rng.standard_normal(out.shape)
    _, (dx, dw) = mx.vjp(f, [mx.array(x, dtype=F64), mx.array(w, dtype=F64)], [mx.array(c, dtype=F64)])
    xt = _t(x, torch).requires_grad_()
    wt = torch.from_numpy(_torch_transpose_weight(w, 2)).requires_grad_()
    yt = F.conv_transpose2d(xt, wt, stride=(2, 3), padding=1, dilation=(1, 2), output_padding=1, groups=2)
    yt.backward(_t(c, torch))
    assert_close(out, _back(yt), rtol=1e-10, atol=1e-10)
    assert_close(dx, _back(xt.grad), rtol=1e-10, atol=1e-10)
    # torch's weight gradient (C_in, C_out / g, *K) back in MLX's layout (C_out, *K, C_in / g)
    g = wt.grad.numpy().reshape(2, 2, 3, 3, 2)  # (g, cg, og, *K)
    assert_close(dw, np.moveaxis(g, 1, -1).reshape(6, 3, 2, 2), rtol=1e-10, atol=1e-10)


def test_second_order_grads_against_finite_differences(on, rng):
    """Gradients of gradients are convolutions too: d/dw of |d/dx sum(conv(x, w)^2)|^2 against central
    differences."""
    x = mx.array(rng.standard_normal((2, 6, 5, 2)), dtype=F64)
    w0 = rng.standard_normal((3, 3, 2, 2))
    v = rng.standard_normal(w0.shape)

    def inner(a, b):
        return mx.sum(mx.conv_general(a, b, stride=(2, 1), padding=([1, 0], [0, 1]), kernel_dilation=(1, 2),
                                      input_dilation=(1, 2), flip=True) ** 2)

    def outer(b):
        return mx.sum(mx.grad(inner)(x, b) ** 2)

    h = 1e-6
    fd = (outer(mx.array(w0 + h * v, dtype=F64)).item() - outer(mx.array(w0 - h * v, dtype=F64)).item()) / (2 * h)
    np.testing.assert_allclose(_inner(mx.grad(outer)(mx.array(w0, dtype=F64)), v), fd, rtol=1e-6)


def test_convolve_grad(on, rng):
    a, v = rng.standard_normal(7), rng.standard_normal(3)
    c = rng.standard_normal(9)
    for mode in ("full", "same", "valid"):
        out_len = len(np.convolve(a, v, mode))
        _, (da, dv) = mx.vjp(lambda p, q, m=mode: mx.convolve(p, q, m), [mx.array(a, dtype=F64),
                                                                         mx.array(v, dtype=F64)],
                             [mx.array(c[:out_len], dtype=F64)])
        # the transpose of a convolution is the correlation with the other operand, read off the full one
        eye_a, eye_v = np.eye(7), np.eye(3)
        ja = np.stack([np.convolve(e, v, mode) for e in eye_a], 1)
        jv = np.stack([np.convolve(a, e, mode) for e in eye_v], 1)
        assert_close(da, ja.T @ c[:out_len], rtol=1e-10, atol=1e-10)
        assert_close(dv, jv.T @ c[:out_len], rtol=1e-10, atol=1e-10)


# -- vmap ------------------------------------------------------------------------------------------------------
VMAP_CASES = [  # (in_axes, input shape, weight shape, groups)
    ((0, None), (3, 2, 7, 4), (6, 3, 4), 1),
    ((2, None), (2, 7, 3, 4), (6, 3, 4), 1),
    ((None, 0), (2, 7, 4), (3, 6, 3, 2), 2),
    ((None, 1), (2, 7, 4), (6, 3, 3, 4), 1),
    ((0, 0), (3, 2, 7, 6), (3, 4, 3, 3), 2),
    ((1, 3), (2, 3, 7, 4), (6, 3, 4, 3), 1),
]


@pytest.mark.parametrize("case", range(len(VMAP_CASES)))
def test_vmap_matches_a_loop(on, rng, monkeypatch, case):
    monkeypatch.setattr(sys.modules["umx.transforms.vmap"], "_stack", None)  # replayed by the rule, not looped
    in_axes, xs, ws, groups = VMAP_CASES[case]
    x, w = rng.standard_normal(xs), rng.standard_normal(ws)

    def f(a, b):
        return mx.conv1d(a, b, stride=2, padding=1, groups=groups)

    size = x.shape[in_axes[0]] if in_axes[0] is not None else w.shape[in_axes[1]]
    want = []
    for i in range(size):
        a = x if in_axes[0] is None else np.take(x, i, axis=in_axes[0])
        b = w if in_axes[1] is None else np.take(w, i, axis=in_axes[1])
        want.append(direct(a, b, 2, 1, 1, groups=groups))
    got = mx.vmap(f, in_axes=in_axes)(mx.array(x, dtype=F64), mx.array(w, dtype=F64))
    assert_close(got, np.stack(want), rtol=1e-12, atol=1e-12)


def test_vmap_of_conv2d_grad_per_example(on, rng, monkeypatch):
    monkeypatch.setattr(sys.modules["umx.transforms.vmap"], "_stack", None)
    x = mx.array(rng.standard_normal((4, 1, 6, 6, 2)), dtype=F64)
    w = mx.array(rng.standard_normal((3, 3, 3, 2)), dtype=F64)

    def loss(b, a):
        return mx.sum(mx.tanh(mx.conv2d(a, b, stride=2, padding=1)))

    per = mx.vmap(mx.grad(loss), in_axes=(None, 0))(w, x)
    assert per.shape == (4, 3, 3, 3, 2)
    whole = mx.grad(lambda b: mx.sum(mx.tanh(mx.conv2d(mx.reshape(x, (4, 6, 6, 2)), b, stride=2, padding=1))))(w)
    assert_close(mx.sum(per, axis=0), np.asarray(whole), rtol=1e-10, atol=1e-10)
