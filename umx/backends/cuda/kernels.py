"""The kernel table on CuPy: the shared NumPy-API kernels, with overrides where CuPy lacks or differs."""

from __future__ import annotations

import cupyx.scipy.special as special
import numpy as np

from ...dtypes import bfloat16, float16, float32, float64, register_bf16_conversions
from ...primitives import elementwise as ew
from ...primitives import indexing as ix
from ...primitives.conv import Convolution
from ...primitives.fast import CudaKernel
from ...primitives.misc import Compiled
from ...runtime.executor import steps_kernel
from ..xp import bind
from ..xp import conv as xp_conv
from . import collectives, cublas, custom_kernel, strided
from . import fast as fast_kernels
from . import layout as layout_kernels
from . import quantized as quantized_kernels
from ._probe import _cupy
from .fusion import BF16_CONVERSIONS, PREAMBLE

cp = _cupy()

# bfloat16's storage to and from float32 in one kernel each, with the fused kernels' own conversions
register_bf16_conversions(cp, *(cp.ElementwiseKernel(*spec, preamble=PREAMBLE) for spec in BF16_CONVERSIONS))


def _erf(prim, x):
    return special.erf(x).astype(x.dtype, copy=False)


def _erfinv(prim, x):
    return special.erfinv(x).astype(x.dtype, copy=False)


def _isposinf(prim, x):
    return cp.isinf(x) & (x > 0)


def _isneginf(prim, x):
    return cp.isinf(x) & (x < 0)


# ufuncs whose .at CuPy runs as one atomic kernel (other ufuncs and dtypes may lack .at)
_ATOMIC = frozenset({"add", "maximum", "minimum"})
# dtypes those atomics lack -> the 32-bit type they accumulate in
_WIDER = {"?": np.int32, "b": np.int32, "h": np.int32, "B": np.uint32, "H": np.uint32}


def _scatter(prim, x, values, *index_arrays):
    out = cp.array(x, copy=True)
    key = ix.fill_key(prim.key, index_arrays)
    if prim.op is None:
        out[key] = values
        return out
    ufunc = getattr(cp, prim.op)
    if not index_arrays:  # a basic key selects each element once: one ufunc over the view
        out[key] = ufunc(out[key], values)
        return out
    if prim.op in _ATOMIC and out.dtype.kind != "c":  # (CuPy's atomics have no complex types)
        wide = _WIDER.get(out.dtype.char)
        if wide is None:
            ufunc.at(out, key, values)
            return out
        # CuPy's atomics take 32- and 64-bit types only: bool and 8- and 16-bit integers accumulate in a 32-bit
        # type, then go back (wrapping, as NumPy's do; a bool is true where its count is not zero)
        acc = out.astype(wide)
        ufunc.at(acc, key, values.astype(wide) if isinstance(values, (cp.ndarray, np.ndarray, np.generic)) else values)
        return acc.astype(out.dtype)
    try:
        ufunc.at(out, key, values)
    except (NotImplementedError, TypeError):
        # CuPy's ufunc.at lacks multiply, divide and most dtypes of subtract: accumulate on the host (rare ops;
        # correctness over speed), then bring the result back.
        host = cp.asnumpy(out)
        getattr(np, prim.op).at(host, tuple(cp.asnumpy(k) if isinstance(k, cp.ndarray) else k for k in key),
                                cp.asnumpy(values) if isinstance(values, cp.ndarray) else values)
        out = cp.asarray(host)
    return out


def _matmul(a, b, out=None):
    """A convolution's products through umx's cuBLAS handle (which a CUDA graph can capture), CuPy's where that
    does not apply."""
    h = cublas.current()
    got = cublas.matmul(h, a, b, out=out) if h is not None else None
    return got if got is not None else cp.matmul(a, b, out=out)


def _convolution(prim, x, w):
    return xp_conv.convolution(cp, prim, x, w, matmul=_matmul, gather=strided.contiguous)


def _conv_captures(n) -> bool:
    return cublas.available() and all(x._dtype in _CUBLAS_FLOATS for x in n._inputs)


_CUBLAS_FLOATS = (float16, float32, float64, bfloat16)  # (bfloat16 and float16 reach the products as float32)

#: primitive class -> whether a node of it runs as kernels that only enqueue device work (see graphs.py)
CAPTURE_IF = {**fast_kernels.CAPTURE_IF, **quantized_kernels.CAPTURE_IF, Convolution: _conv_captures}


def make_table() -> dict:
    table = bind(cp)
    table[type(ew.UNARY["Erf"])] = _erf
    table[type(ew.UNARY["ErfInv"])] = _erfinv
    table[type(ew.UNARY["IsPosInf"])] = _isposinf
    table[type(ew.UNARY["IsNegInf"])] = _isneginf
    table[ix.Scatter] = _scatter
    table[Compiled] = steps_kernel(table, cp)  # (CudaExecutor.single runs one as a CUDA graph first)
    table.update(collectives.KERNELS)
    table[CudaKernel] = custom_kernel.run
    fast_kernels.install(table)
    layout_kernels.install(table)
    strided.install(table)
    table[Convolution] = _convolution
    return table


def device_args(args: list) -> list:
    """``args`` with NumPy scalars made 0-d device arrays: for kernels that refuse them (most non-ufuncs, and
    ufuncs given no array)."""
    return [cp.asarray(a) if isinstance(a, (np.generic, np.ndarray)) else a for a in args]
