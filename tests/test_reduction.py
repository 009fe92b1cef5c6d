"""Reductions against NumPy in float64: axes (None, int, negative, tuple), keepdims, empty and 0-d inputs."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import DEVICES, assert_close, assert_stored

import umx as mx

AXES = [None, 0, -1, (0, 2), (-1, -3), (1,), ()]


def _logsumexp(x, axis=None, keepdims=False):
    m = np.max(x, axis=axis, keepdims=True)
    out = np.log(np.sum(np.exp(x - m), axis=axis, keepdims=True)) + m
    return out if keepdims else np.squeeze(out, axis=axis if axis is not None else tuple(range(x.ndim)))


REFS = {
    "sum": np.sum, "mean": np.mean, "prod": np.prod, "max": np.max, "min": np.min, "all": np.all,
    "any": np.any,
    "var": np.var, "std": np.std, "logsumexp": _logsumexp,
}


@pytest.mark.parametrize("name", sorted(REFS))
@pytest.mark.parametrize("axis", AXES, ids=str)
@pytest.mark.parametrize("keepdims", [False, True])
def test_reduce_float(device, rng, name, axis, keepdims):
    x = rng.uniform(0.5, 1.5, (3, 4, 5)).astype(np.float32)
    if name in ("all", "any"):
        x = (x > 1.3).astype(np.float32)
    out = getattr(mx, name)(mx.array(x), axis=axis, keepdims=keepdims, stream=device)
    ref = REFS[name](x.astype(np.float64), axis=axis, keepdims=keepdims)
    assert out.dtype == (mx.bool_ if name in ("all", "any") else mx.float32)
    assert_close(out, ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["sum", "prod", "max", "min"])
@pytest.mark.parametrize("axis", [None, 1, (0, 1)], ids=str)
def test_reduce_int(device, rng, name, axis):
    x = rng.integers(-3, 4, (4, 3)).astype(np.int32)
    out = getattr(mx, name)(mx.array(x), axis=axis, stream=device)
    assert out.dtype == mx.int32
    np.testing.assert_array_equal(np.asarray(out), REFS[name](x, axis=axis))


def test_method_forms(device, rng):
    x = rng.standard_normal((2, 3)).astype(np.float32)
    a = mx.array(x)
    assert_close(a.sum(axis=1), x.sum(axis=1), rtol=1e-5)
    assert_close(a.mean(), x.mean(), rtol=1e-5)
    assert_close(a.max(0, keepdims=True), x.max(0, keepdims=True))
    assert_close(a.var(axis=-1, ddof=1), x.astype(np.float64).var(axis=-1, ddof=1), rtol=1e-5)
    assert_close(a.std(), x.astype(np.float64).std(), rtol=1e-5)
    assert a.argmax().item() == x.argmax()
    assert_close(a.logsumexp(axis=0), _logsumexp(x.astype(np.float64), axis=0), rtol=1e-5)


@pytest.mark.parametrize("ddof", [0, 1, 2])
def test_var_std_ddof(device, rng, ddof):
    x = rng.standard_normal((5, 6)).astype(np.float32)
    x64 = x.astype(np.float64)
    assert_close(mx.var(mx.array(x), axis=0, ddof=ddof, stream=device), np.var(x64, 0, ddof=ddof), rtol=1e-5)
    assert_close(mx.std(mx.array(x), ddof=ddof, stream=device), np.std(x64, ddof=ddof), rtol=1e-5)


def test_zero_d_and_empty(device):
    s = mx.array(2.5)
    assert_close(mx.sum(s, stream=device), 2.5)
    assert_close(mx.max(s, axis=(), stream=device), 2.5)
    e = mx.zeros((0, 3))
    assert_close(mx.sum(e, axis=0, stream=device), np.zeros(3))
    assert_close(mx.prod(e, stream=device), 1.0)
    assert mx.all(e, stream=device).item() is True
    assert mx.any(e, stream=device).item() is False
    assert mx.sum(e, axis=1, stream=device).shape == (0,)
    with pytest.raises(ValueError, match="logsumexp"):  # as MLX: refused at the call, whatever the axes
        mx.logsumexp(e, axis=0, stream=device)
    with pytest.raises(ValueError, match="max"):
        mx.max(e, axis=0, stream=device)


def test_sum_of_bools_and_large_ints(device):
    b = mx.array([True, True, False, True])
    assert mx.sum(b, stream=device).item() == 3
    assert mx.sum(b, stream=device).dtype == mx.int32
    assert mx.sum(mx.array([2**40, 1]), stream=device).item() == 2**40 + 1


@pytest.mark.parametrize("name", ["argmax", "argmin"])
@pytest.mark.parametrize("axis", [None, 0, 1, -1], ids=str)
@pytest.mark.parametrize("keepdims", [False, True])
def test_argmax_argmin(device, rng, name, axis, keepdims):
    x = rng.standard_normal((4, 5)).astype(np.float32)
    out = getattr(mx, name)(mx.array(x), axis=axis, keepdims=keepdims, stream=device)
    ref = getattr(np, name)(x, axis=axis, keepdims=keepdims)
    assert out.dtype == mx.uint32
    assert out.shape == np.shape(ref)
    np.testing.assert_array_equal(np.asarray(out), ref)


def test_argmax_first_of_ties_and_errors(device):
    assert mx.argmax(mx.array([1, 3, 3, 0]), stream=device).item() == 1
    assert mx.argmin(mx.array([2, 0, 0]), stream=device).item() == 1
    with pytest.raises(ValueError, match="argmax"):
        mx.argmax(mx.zeros((0,)))
    with pytest.raises(ValueError, match="axis"):
        mx.argmax(mx.zeros((2, 2)), axis=2)


@pytest.mark.parametrize("axis", [None, 0, -1, (0, 1)], ids=str)
def test_softmax(device, rng, axis):
    x = (rng.standard_normal((3, 4)) * 10).astype(np.float32)
    out = mx.softmax(mx.array(x), axis=axis, stream=device)
    x64 = x.astype(np.float64)
    e = np.exp(x64 - x64.max(axis=axis, keepdims=True))
    assert out.dtype == mx.float32
    assert_close(out, e / e.sum(axis=axis, keepdims=True), rtol=1e-5, atol=1e-7)


def test_softmax_stable_and_half(device):
    out = mx.softmax(mx.array([1000.0, 1000.0]), stream=device)
    assert_close(out, [0.5, 0.5])
    h = mx.softmax(mx.array([1.0, 2.0, 3.0], dtype=mx.float16), stream=device)
    assert h.dtype == mx.float16
    e = np.exp([1.0, 2.0, 3.0])
    assert_close(h, e / e.sum(), rtol=2e-3, atol=1e-3)
    assert mx.softmax(mx.array([1, 2]), stream=device).dtype == mx.float32
    assert mx.softmax(mx.zeros((2, 0)), axis=1, stream=device).shape == (2, 0)


def test_logsumexp_stable(device):
    out = mx.logsumexp(mx.array([1000.0, 1000.0]), stream=device)
    assert_close(out, 1000 + np.log(2))
    assert mx.logsumexp(mx.array([-np.inf, -np.inf]), stream=device).item() == -np.inf


@pytest.mark.parametrize("n", [1, 7, 256, 300, 2049, 8192, 8193, 33000])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_softmax_and_logsumexp_over_rows_of_every_length(device, rng, n, dtype):
    # (on the GPU, rows are a warp's (n <= 256), a block's, and longer than a block keeps in registers (> 8192))
    rows = 5 if n > 2049 else 37
    x = (rng.standard_normal((rows, n)) * 4).astype(np.float32)
    a = mx.array(x).astype(getattr(mx, dtype))
    x64 = np.asarray(a.astype(mx.float32)).astype(np.float64)  # (bfloat16: the values as rounded)
    e = np.exp(x64 - x64.max(axis=-1, keepdims=True))
    rtol = 1e-5 if dtype == "float32" else 8e-3
    sm = mx.softmax(a, axis=-1, stream=device)
    lse = mx.logsumexp(a, axis=-1, keepdims=True, stream=device)
    assert sm.dtype == a.dtype and lse.dtype == a.dtype and lse.shape == (rows, 1)
    assert_close(sm, e / e.sum(axis=-1, keepdims=True), rtol=rtol, atol=1e-7)
    assert_close(lse, np.log(e.sum(axis=-1, keepdims=True)) + x64.max(axis=-1, keepdims=True), rtol=rtol)
    assert_stored(sm)
    # a transposed view's last axis (not contiguous) and a 3-d batch
    t = mx.swapaxes(mx.reshape(a, (rows, 1, n)), 0, 1)
    assert_close(mx.logsumexp(t, axis=-1, stream=device), np.asarray(lse).T, rtol=rtol)
    at = mx.array(np.ascontiguousarray(x.T)).astype(getattr(mx, dtype)).T
    assert_close(mx.softmax(at, axis=-1, stream=device), e / e.sum(axis=-1, keepdims=True), rtol=rtol, atol=1e-7)


@pytest.mark.parametrize("shape", [(600, 1000), (3, 70, 4096), (2, 65536 + 1)], ids=str)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cpu_softmax_and_logsumexp_in_blocks_of_rows_give_the_shared_kernels_bits(rng, monkeypatch, shape, dtype):
    # (large inputs: blocks of rows across the CPU's cores; rows longer than a block take the shared kernel)
    from umx.backends.cpu import executor
    from umx.backends.cpu import softmax as cpu_softmax
    from umx.backends.xp.reduction import _logsumexp, _softmax
    from umx.primitives.reduction import LogSumExp, Softmax

    x = (rng.standard_normal(shape) * 5).astype(dtype)
    blocked = x.size >= cpu_softmax.MIN_SIZE and shape[-1] <= cpu_softmax.MAX_ROW
    assert blocked == (shape[-1] <= 4096)  # (the shapes are chosen on either side of the thresholds)
    x[0, :7] = -np.inf
    x[1, 3] = np.inf  # (a row whose maximum is infinite: inf, as the shared kernel gives)
    x[-1, -1] = np.nan
    last = len(shape) - 1
    a = mx.array(x, dtype=mx.float32 if dtype == np.float32 else mx.float64)
    np.testing.assert_array_equal(np.asarray(mx.softmax(a, axis=-1, stream=mx.cpu)), _softmax(np, Softmax((last,)), x))
    assert executor.KERNELS[Softmax](Softmax((last,)), x).dtype == dtype
    blocks = []
    real = cpu_softmax.lse_into
    monkeypatch.setattr(cpu_softmax, "lse_into", lambda *args: blocks.append(args[1].shape) or real(*args))
    for keepdims in (False, True):
        want = _logsumexp(np, LogSumExp((last,), keepdims), x)
        got = mx.logsumexp(a, axis=-1, keepdims=keepdims, stream=mx.cpu)
        assert got.shape == want.shape
        np.testing.assert_array_equal(np.asarray(got), want)
        assert executor.KERNELS[LogSumExp](LogSumExp((last,), keepdims), x).dtype == dtype
    assert (len(blocks) > 2) == blocked  # (blocks of rows, or the shared kernel's one call)


def test_softmax_and_logsumexp_of_rows_with_infinities_and_nans_agree_across_devices():
    inf, nan = np.inf, np.nan
    rows = np.array([[-inf, -inf, -inf], [inf, 1, 2], [-inf, 0, 1], [nan, 0, 1], [1e30, -1e30, 0], [inf, inf, 0]],
                    np.float32)
    for n in (3, 3000):  # (a warp a row, a block a row)
        x = np.full((rows.shape[0], n), -inf, np.float32)
        x[:, :3] = rows
        a = mx.array(x)
        for op in (mx.softmax, mx.logsumexp):
            want = np.asarray(op(a, axis=-1, stream=mx.cpu))
            assert np.isnan(want).any()  # (the rows that must give NaN do)
            for d in DEVICES:  # (NaNs and infinities where the CPU has them, finite values to rounding)
                got = np.asarray(op(a, axis=-1, stream=d))
                np.testing.assert_allclose(got, want, rtol=1e-6, atol=0, equal_nan=True)


@pytest.mark.parametrize("n", [1, 5, 33, 256, 257, 3000, 32000])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_argmax_and_argmin_over_rows_pick_as_numpy(device, rng, n, dtype):
    # ties (few distinct values), a NaN in some rows (the first NaN wins, as in NumPy), infinities; on the GPU
    # rows are a warp's (n <= 256) or a block's, several rows a block or one
    rows = 5 if n > 3000 else 41
    x = rng.integers(-3, 4, (rows, n)).astype(np.float32)
    x[1, n // 2] = np.inf
    x[2, -1] = -np.inf
    if n > 1:
        x[3, n // 3:] = np.nan
        x[4, 1:] = np.nan
    a = mx.array(x).astype(getattr(mx, dtype))
    ref = np.asarray(a.astype(mx.float32))
    for op, np_op in ((mx.argmax, np.argmax), (mx.argmin, np.argmin)):
        got = op(a, axis=-1, stream=device)
        assert got.dtype == mx.uint32 and got.shape == (rows,)
        np.testing.assert_array_equal(np.asarray(got), np_op(ref, axis=-1))
        kept = op(mx.reshape(a, (1, rows, n)), axis=2, keepdims=True, stream=device)
        assert kept.shape == (1, rows, 1)
        np.testing.assert_array_equal(np.asarray(kept).ravel(), np_op(ref, axis=-1))
    # a transposed view's last axis (not contiguous), and another axis (the shared kernel)
    np.testing.assert_array_equal(np.asarray(mx.argmax(a.T, axis=-1, stream=device)), np.argmax(ref.T, axis=-1))
    np.testing.assert_array_equal(np.asarray(mx.argmin(a, axis=0, stream=device)), np.argmin(ref, axis=0))


def test_axis_errors(device):
    a = mx.zeros((2, 3))
    with pytest.raises(ValueError, match="sum"):
        mx.sum(a, axis=2, stream=device)
    with pytest.raises(ValueError, match="mean"):
        mx.mean(a, axis=(0, 0), stream=device)
    with pytest.raises(ValueError):
        mx.max(a, axis=-3, stream=device)
    with pytest.raises(TypeError):
        mx.sum(a, axis=1.5, stream=device)


def test_float16_sum_precision(device):
    x = np.full(4096, 0.1, np.float16)
    out = mx.sum(mx.array(x), stream=device)
    assert out.dtype == mx.float16
    assert abs(float(out) - 409.6) / 409.6 < 5e-3


ALL_DTYPES = [mx.bool_, mx.uint8, mx.uint16, mx.uint32, mx.uint64, mx.int8, mx.int16, mx.int32, mx.int64,
              mx.float16, mx.bfloat16, mx.float32, mx.float64, mx.complex64]


@pytest.mark.parametrize("name", ["sum", "prod", "max", "min", "mean", "var", "std", "logsumexp", "softmax",
                                  "argmax", "argmin", "all", "any"])
def test_every_dtype_gives_declared_dtype(device, name):
    """Whatever the input dtype, the data computed has the dtype and shape the op declared at the call."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", np.exceptions.ComplexWarning)
        for d in ALL_DTYPES:
            for axis in (None, 0, -1):
                out = getattr(mx, name)(mx.array([[1, 0, 1], [2, 3, 0]], dtype=d), axis=axis, stream=device)
                data = np.asarray(out)
                assert data.shape == out.shape, (d, axis)
                assert_stored(out, f"{name} of {d} over axis {axis}")


@pytest.mark.parametrize("shape,axes", [((64, 8), (0,)), ((4, 6, 5, 3), (0, 1, 2)), ((3000, 2), (0,)),
                                        ((7, 1, 9), (0, 1)), ((2, 3), (0,)), ((0, 4), (0,)), ((5, 0, 3), (0, 1))])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("keepdims", [False, True])
def test_sum_mean_var_over_leading_axes(device, rng, shape, axes, dtype, keepdims):
    # leading axes take a path of their own on the CPU (a product with ones): values within the dtype's rounding
    # of float64's, NaN and infinities where NumPy has them, the same shapes
    x = rng.standard_normal(shape).astype(dtype)
    if x.size > 4:
        x.flat[[1, 3]] = [np.inf, np.nan]
    a = mx.array(x, dtype=mx.float32 if dtype is np.float32 else mx.float64)
    tol = dict(rtol=1e-5, atol=1e-5) if dtype is np.float32 else dict(rtol=1e-12, atol=1e-12)
    with np.errstate(all="ignore"):
        x64 = x.astype(np.float64)
        assert_close(mx.sum(a, axis=axes, keepdims=keepdims, stream=device),
                     np.sum(x64, axis=axes, keepdims=keepdims), **tol)
        assert_close(mx.mean(a, axis=axes, keepdims=keepdims, stream=device),
                     np.mean(x64, axis=axes, keepdims=keepdims), **tol)
        for ddof in (0, 1, 4000):
            got = mx.var(a, axis=axes, keepdims=keepdims, ddof=ddof, stream=device)
            assert_close(got, np.var(x64, axis=axes, keepdims=keepdims, ddof=ddof), **tol)
            assert got.dtype == a.dtype


@pytest.mark.parametrize("shape,axes", [((32, 16, 2, 16, 2, 8), (2, 4)), ((4096, 4), (1,)), ((512, 3, 8), (1,)),
                                        ((2, 1024, 5), (0, 2)), ((1, 2048, 2), (0, 2)), ((3, 700, 1), (2, 0))])
@pytest.mark.parametrize("name", ["sum", "mean", "max", "min", "prod"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int32, np.uint8])
@pytest.mark.parametrize("keepdims", [False, True])
def test_reductions_over_short_axes(device, rng, shape, axes, name, dtype, keepdims):
    # a few elements into each of many results: on the CPU a chain of binary ops over slices (NumPy reduces such
    # axes a few elements per loop call); the values of NumPy's reduction, NaN where a reduced element is NaN
    if np.dtype(dtype).kind == "f":
        x = rng.standard_normal(shape).astype(dtype)
        x.flat[[5, 77]] = [np.nan, np.inf]
    else:
        x = rng.integers(0, 4, shape).astype(dtype)
    if name == "mean" and np.dtype(dtype).kind != "f":
        return
    a = mx.array(x, dtype=mx.float64) if dtype is np.float64 else mx.array(x)
    got = getattr(mx, name)(a, axis=axes, keepdims=keepdims, stream=device)
    with np.errstate(all="ignore"):
        ref = getattr(np, name)(x.astype(np.float64) if x.dtype.kind == "f" else x, axis=axes, keepdims=keepdims)
    assert got.shape == ref.shape
    if np.dtype(dtype).kind == "f":
        tol = 1e-5 if dtype is np.float32 else 1e-12
        assert_close(got, ref, rtol=tol, atol=tol)
    else:
        assert got.dtype == mx.array(ref).dtype or name in ("sum", "prod")
        np.testing.assert_array_equal(np.asarray(got), ref.astype(np.asarray(got).dtype))


@pytest.mark.parametrize("shape,axes", [((128, 8, 8, 32), (0, 1, 2)), ((16, 256, 64), (0, 1)), ((3, 5000, 7), (1,)),
                                        ((2, 40, 3, 50), (1, 2)), ((70000, 3), (0,)), ((64, 65), (0,)),
                                        ((16, 64, 33), (2,)), ((9, 20, 700), (1, 2)), ((2, 20000), (1,))])
@pytest.mark.parametrize("dtype", ["float32", "float64", "bfloat16"])
def test_sum_mean_var_over_many_rows(device, rng, shape, axes, dtype):
    # long reduced axes before kept ones (a batch norm's statistics, a bias's gradient) or trailing (a layer norm's
    # means): on the GPU, umx's own kernels (row ranges, then their sum; a warp per trailing row), in float for
    # bfloat16; NaN and inf where NumPy has them
    x = rng.standard_normal(shape).astype(np.float32 if dtype == "bfloat16" else dtype) + 0.5
    x.flat[[3, 11]] = [np.inf, np.nan]
    a = mx.array(x, dtype=getattr(mx, dtype))
    x64 = np.asarray(a.astype(mx.float64))  # (bfloat16's values, exactly)
    tol = {"float32": 2e-5, "float64": 1e-12, "bfloat16": 1e-2}[dtype]
    with np.errstate(all="ignore"):
        for name in ("sum", "mean", "var"):
            for keepdims in (False, True):
                kw = dict(ddof=1) if name == "var" else {}
                got = getattr(mx, name)(a, axis=axes, keepdims=keepdims, stream=device, **kw)
                ref = getattr(np, name)(x64, axis=axes, keepdims=keepdims, **kw)
                assert got.dtype == a.dtype and got.shape == ref.shape
                assert_close(got.astype(mx.float64), ref, rtol=tol, atol=tol * np.sqrt(x.size))
        perm = (*range(1, a.ndim), 0)
        tax = tuple(perm.index(i) for i in axes)  # (a strided view: copied first, or reduced as it is)
        assert_close(mx.sum(mx.transpose(a, perm), axis=tax, stream=device).astype(mx.float64),
                     np.sum(np.transpose(x64, perm), axis=tax), rtol=tol, atol=tol * np.sqrt(x.size))


def test_reduction_axes_of_every_type_are_checked(device):
    # reductions over a tuple of Python ints are made once per shape: other axis types are still checked
    a = mx.ones((2, 3))
    assert mx.sum(a, axis=(1,), stream=device).shape == (2,)
    assert mx.sum(a, axis=(np.int64(1),), stream=device).shape == (2,)
    assert mx.sum(a, axis=[0, 1], keepdims=True, stream=device).shape == (1, 1)
    with pytest.raises(TypeError):
        mx.sum(a, axis=(1.0,), stream=device)
    with pytest.raises(ValueError):
        mx.sum(a, axis=(2,), stream=device)
    assert mx.sum(mx.ones((3, 2)), axis=(1,), stream=device).shape == (3,)
