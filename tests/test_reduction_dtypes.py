"""The result dtype of every reduction and scan for every input dtype, against MLX's table, and the values that
depend on it (sums of narrow integers that would wrap around in their own dtype)."""

from __future__ import annotations

import numpy as np
import pytest

import umx as mx

_D = {"b": mx.bool_, "u8": mx.uint8, "u16": mx.uint16, "u32": mx.uint32, "u64": mx.uint64, "i8": mx.int8,
      "i16": mx.int16, "i32": mx.int32, "i64": mx.int64, "f16": mx.float16, "bf16": mx.bfloat16,
      "f32": mx.float32, "f64": mx.float64, "c64": mx.complex64}
_ORDER = ("b", "u8", "u16", "u32", "u64", "i8", "i16", "i32", "i64", "f16", "bf16", "f32", "f64", "c64")


def _row(text: str) -> dict:
    """'i32 u32 ...' (one result per input dtype, in _ORDER) as {input dtype: result dtype}."""
    return {_D[i]: _D[o] for i, o in zip(_ORDER, text.split(), strict=True)}


_SAME = _row(" ".join(_ORDER))
_WIDE = _row("i32 u32 u32 u32 u64 i32 i32 i32 i64 f16 bf16 f32 f64 c64")
_FLOAT = _row("f32 f32 f32 f32 f32 f32 f32 f32 f32 f16 bf16 f32 f64 c64")
_REAL = _row("f32 f32 f32 f32 f32 f32 f32 f32 f32 f16 bf16 f32 f64 f32")
_BOOL = _row(" ".join(["b"] * 14))
_INDEX = _row(" ".join(["u32"] * 14))

# What MLX 0.32 gives (read off mlx.core on every dtype).
MLX_TABLE = {
    "sum": _WIDE, "prod": _WIDE, "max": _SAME, "min": _SAME, "mean": _FLOAT, "var": _REAL, "std": _REAL,
    "logsumexp": _FLOAT, "argmax": _INDEX, "argmin": _INDEX, "all": _BOOL, "any": _BOOL,
    "cumsum": {**_SAME, mx.bool_: mx.int32}, "cumprod": _SAME, "cummax": _SAME, "cummin": _SAME,
    "logcumsumexp": _FLOAT, "softmax": _FLOAT, "median": _FLOAT,
}


def _ones(dtype):
    return mx.ones((2, 3), dtype=dtype)


@pytest.mark.parametrize("name", sorted(MLX_TABLE))
def test_result_dtypes_match_mlx(device, name):
    fn = getattr(mx, name)
    for dtype, want in MLX_TABLE[name].items():
        x = _ones(dtype)
        for kwargs in ({}, {"axis": 1}):
            out = fn(x, **kwargs, stream=device)
            assert out.dtype == want, f"{name}({dtype}, {kwargs}) gave {out.dtype}, MLX gives {want}"
            mx.eval(out)
            assert np.asarray(out).dtype == (np.float32 if want is mx.bfloat16 else want.np)  # the data agrees


def test_table_agrees_with_real_mlx():
    mlx = pytest.importorskip("mlx.core")
    for name, row in MLX_TABLE.items():
        for dtype, want in row.items():
            mlx_dtype = getattr(mlx, "bool_" if dtype is mx.bool_ else dtype.name)
            got = getattr(mlx, name)(mlx.ones((3,), dtype=mlx_dtype)).dtype  # (2-d softmax of ints: a quirk)
            assert str(got).split(".")[-1] == want.name, (name, dtype)


@pytest.mark.parametrize(("dtype", "out"), [(mx.uint8, mx.uint32), (mx.uint16, mx.uint32), (mx.int8, mx.int32),
                                            (mx.int16, mx.int32), (mx.bool_, mx.int32)])
def test_narrow_integer_sums_do_not_wrap(device, dtype, out):
    # regression: uint8 ones summed 300 times gave 44 as uint8
    s = mx.sum(mx.ones((300,), dtype=dtype), stream=device)
    assert s.dtype == out and s.item() == 300
    assert mx.sum(mx.ones((2, 300), dtype=dtype), axis=1, stream=device).tolist() == [300, 300]
    p = mx.prod(mx.full((3,), 2 if dtype is not mx.bool_ else 1, dtype), stream=device)
    assert p.dtype == out
    if dtype is not mx.bool_:
        assert mx.prod(mx.full((12,), 2, dtype), stream=device).item() == 4096  # beyond 8 and 16 bits


def test_signed_sums_stay_signed(device):
    s = mx.sum(mx.array([-100, -100, -100], dtype=mx.int8), stream=device)
    assert s.dtype == mx.int32 and s.item() == -300
    assert mx.prod(mx.array([-128, 2], dtype=mx.int8), stream=device).item() == -256


def test_cumprod_of_bool_is_a_running_and(device):
    x = mx.array([True, True, False, True])
    out = mx.cumprod(x, stream=device)
    assert out.dtype == mx.bool_ and out.tolist() == [True, True, False, False]
    assert mx.cumprod(x, reverse=True, stream=device).tolist() == [False, False, False, True]
    assert mx.cumprod(x, inclusive=False, stream=device).tolist() == [True, True, True, False]


def test_narrow_cumsum_keeps_its_dtype_as_mlx(device):
    out = mx.cumsum(mx.ones((300,), dtype=mx.uint8), stream=device)
    assert out.dtype == mx.uint8 and out[-1].item() == 300 % 256
