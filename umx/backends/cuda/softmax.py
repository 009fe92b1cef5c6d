"""Softmax and logsumexp over the last axis as one kernel of umx's own (``sources.softmax_source``), on float32
and bfloat16 data as stored (bfloat16 read as its 16-bit storage, computed in float32, rounded once). The shared
kernels (``backends/xp/reduction.py``) take five CuPy calls and read the input three times; this one reads a row
once and writes it once. Argmax and argmin over any axis (moved last) take the same launch shape
(``sources.arg_reduce_source``): a decode step's pick of the next token reads bfloat16 logits once, where CuPy's
takes them widened to float32 first, and a NaN is picked as NumPy picks it, which CuPy's reduction over a leading
axis does not always do. Other dtypes, and empty arrays, take the shared kernels; so do other axes of softmax.

The kernel only enqueues device work, so CUDA graphs capture these nodes as they did the shared kernels'."""

from __future__ import annotations

import functools

from ...primitives import reduction as r
from ._probe import _cupy
from .launch import Launch
from .sources import (
    FAST_STORAGE,
    FAST_TYPES,
    SIGNATURES,
    SOFTMAX_CACHED,
    SOFTMAX_WARP_ROWS_BLOCK,
    arg_reduce_source,
    softmax_source,
    softmax_vjp_source,
)
from .strided import contiguous

cp = _cupy()

_MOST_LANES = 1024  # (a block's threads)


@functools.cache
def _kernel(xt: str) -> Launch:
    name = "umx_softmax" + ("_bf16" if xt == FAST_TYPES["bfloat16"] else "_f32")
    return Launch(cp.RawKernel(softmax_source(name, xt), name), SIGNATURES["softmax"])


@functools.cache
def _vjp_kernel(xt: str) -> Launch:
    name = "umx_softmax_vjp" + ("_bf16" if xt == FAST_TYPES["bfloat16"] else "_f32")
    return Launch(cp.RawKernel(softmax_vjp_source(name, xt), name), SIGNATURES["softmax_vjp"])


@functools.cache
def _arg_kernel(xt: str) -> Launch:
    name = "umx_arg_reduce" + ("_bf16" if xt == FAST_TYPES["bfloat16"] else "_f32")
    return Launch(cp.RawKernel(arg_reduce_source(name, xt), name), SIGNATURES["arg_reduce"])


def launch_shape(rows: int, n: int) -> tuple:
    """``(grid, block, lanes)`` for the softmax kernels over ``rows`` rows of ``n`` elements: ``lanes`` threads a
    row, enough to keep it in registers, a multiple of a warp from one warp to a block; a warp a row takes blocks
    of ``SOFTMAX_WARP_ROWS_BLOCK`` threads (several rows each), more lanes a block a row."""
    wanted = -(-n // SOFTMAX_CACHED)
    lanes = min(_MOST_LANES, max(32, -(-wanted // 32) * 32))
    if lanes == 32:
        return -(-rows // (SOFTMAX_WARP_ROWS_BLOCK // 32)), SOFTMAX_WARP_ROWS_BLOCK, lanes
    return rows, lanes, lanes


def _over_rows(n, args: list, log_sum_exp: bool):
    x = n._inputs[0]
    xt = FAST_STORAGE.get(x._dtype)
    shape = x._shape
    data = args[0]
    if (xt is None or n._dtype is not x._dtype or not shape or n._prim.axes != (len(shape) - 1,)
            or type(data) is not cp.ndarray or data.size == 0):
        return None
    d = shape[-1]
    rows = data.size // d
    data = contiguous(data)
    out = cp.empty(rows if log_sum_exp else data.shape, data.dtype)
    grid, block, lanes = launch_shape(rows, d)
    _kernel(xt)((grid,), (block,), data.data.ptr, out.data.ptr, rows, d, lanes, int(log_sum_exp))
    return out.reshape(n._shape)


def _softmax(n, args: list):
    return _over_rows(n, args, False)


def _logsumexp(n, args: list):
    return _over_rows(n, args, True)


def _softmax_vjp(n, args: list):
    """SoftmaxVJP over the last axis by umx's kernel, or None (the shared kernel serves)."""
    y, c = n._inputs
    xt = FAST_STORAGE.get(y._dtype)
    shape = y._shape
    if (xt is None or c._dtype is not y._dtype or n._dtype is not y._dtype or not shape
            or n._prim.axes != (len(shape) - 1,) or c._shape != shape or type(args[0]) is not cp.ndarray
            or type(args[1]) is not cp.ndarray or args[0].size == 0):
        return None
    yd, cd = contiguous(args[0]), contiguous(args[1])
    d = shape[-1]
    rows = yd.size // d
    out = cp.empty(yd.shape, yd.dtype)
    grid, block, lanes = launch_shape(rows, d)
    _vjp_kernel(xt)((grid,), (block,), yd.data.ptr, cd.data.ptr, out.data.ptr, rows, d, lanes)
    return out


def _arg_reduce(n, args: list):
    """ArgMax or ArgMin by umx's kernel, over the last axis (another axis is moved there: a copy), or None (the
    shared kernel serves)."""
    x = n._inputs[0]
    xt = FAST_STORAGE.get(x._dtype)
    data = args[0]
    if xt is None or type(data) is not cp.ndarray or data.size == 0 or data.shape[n._prim.axis] >= 1 << 31:
        return None
    d = data.shape[n._prim.axis]
    rows = data.size // d
    data = contiguous(cp.moveaxis(data, n._prim.axis, -1))  # (the other axes keep their order: the output's)
    out = cp.empty(rows, cp.uint32)
    grid, block, lanes = launch_shape(rows, d)
    _arg_kernel(xt)((grid,), (block,), data.data.ptr, out.data.ptr, rows, d, lanes, int(type(n._prim) is r.ArgMin))
    return out.reshape(n._shape)


#: primitive class -> ``(node, its inputs' data as stored) -> output or None`` (see fast.NATIVE)
NATIVE = {r.Softmax: _softmax, r.LogSumExp: _logsumexp, r.ArgMax: _arg_reduce, r.ArgMin: _arg_reduce,
          r.SoftmaxVJP: _softmax_vjp}
