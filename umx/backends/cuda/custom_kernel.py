"""``mx.fast.cuda_kernel``: a user's kernel body, given a generated signature, compiled once per source and
template instance through CuPy's ``RawModule`` and launched on the current CuPy stream (the executor sets it to
the umx stream the node runs on).

bfloat16 arrays travel to the kernel as they are stored, as its 16 bits (``__nv_bfloat16``), and bfloat16 outputs
come back the same way.
"""

from __future__ import annotations

import numpy as np

from ...dtypes import bfloat16, narrow_bf16
from ._probe import _cupy

cp = _cupy()

_CTYPES = {
    "bool": "bool", "uint8": "uint8_t", "uint16": "uint16_t", "uint32": "uint32_t", "uint64": "uint64_t",
    "int8": "int8_t", "int16": "int16_t", "int32": "int32_t", "int64": "int64_t", "float16": "__half",
    "bfloat16": "__nv_bfloat16", "float32": "float", "float64": "double", "complex64": "cuFloatComplex",
}

_PREAMBLE = r"""
#include <cooperative_groups.h>
#include <cuda_fp16.h>
#include <cuda_bf16.h>
#include <cuComplex.h>
typedef signed char int8_t;
typedef short int16_t;
typedef int int32_t;
typedef long long int64_t;
typedef unsigned char uint8_t;
typedef unsigned short uint16_t;
typedef unsigned int uint32_t;
typedef unsigned long long uint64_t;
#ifndef WARP_SIZE
#define WARP_SIZE 32
#endif
struct umx_dims {  // an input's shape or strides (in elements), indexable, with .data() as in MLX
  const long long* p;
  __device__ const long long* data() const { return p; }
  __device__ long long operator[](int i) const { return p[i]; }
};
__device__ inline long long elem_to_loc(long long elem, const long long* shape, const long long* strides,
                                        int ndim) {
  long long loc = 0;
  for (int i = ndim - 1; i >= 0; --i) {
    loc += (elem % shape[i]) * strides[i];
    elem /= shape[i];
  }
  return loc;
}
"""


def _template_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    name = getattr(value, "name", None)
    if name in _CTYPES:
        return _CTYPES[name]
    raise ValueError(f"cuda_kernel: template values are dtypes, ints or bools, got {value!r}")


def _template_param(key: str, value) -> str:
    if isinstance(value, bool):
        return f"bool {key}"
    if isinstance(value, int):
        return f"int {key}"
    return f"typename {key}"


def source_of(prim) -> tuple:
    """``(code, function name expression)`` of the kernel ``prim`` describes."""
    fn = f"umx_custom_{prim.name}"
    params, views = [], []
    for name, d in zip(prim.input_names, prim.input_dtypes):
        params.append(f"const {_CTYPES[d.name]}* __restrict__ {name}")
        for part in ("shape", "strides"):
            if f"{name}_{part}" in prim.source:
                params.append(f"const long long* {name}_{part}_ptr")
                views.append(f"  const umx_dims {name}_{part}{{{name}_{part}_ptr}};")
        if f"{name}_ndim" in prim.source:
            params.append(f"const int {name}_ndim")
    params += [f"{_CTYPES[d.name]}* {name}" for name, d in zip(prim.output_names, prim.output_dtypes)]
    if prim.template:
        head = f"template <{', '.join(_template_param(k, v) for k, v in prim.template)}>\n__global__"
        expr = f"{fn}<{', '.join(_template_value(v) for _, v in prim.template)}>"
    else:
        head, expr = 'extern "C" __global__', fn
    body = "\n".join(views)
    code = f"{_PREAMBLE}\n{prim.header}\n{head} void {fn}({', '.join(params)}) {{\n{body}\n{prim.source}\n}}\n"
    return code, expr


def _function(code: str, expr: str, templated: bool):
    """The compiled kernel (NVRTC runs once per distinct source and instance: ``_built`` keeps it)."""
    if templated:
        return cp.RawModule(code=code, name_expressions=[expr]).get_function(expr)
    return cp.RawModule(code=code).get_function(expr)


_BUILT: dict = {}  # the source's fields -> (code, expr, kernel, which extras each input passes)
_MAX_BUILT = 256


def _built(prim) -> tuple:
    """``(code, expr, kernel, extras)`` of ``prim``'s kernel, generated once per distinct source (a launch
    then only binds arguments); ``extras[i]``: whether input ``i`` also passes its shape, strides and ndim."""
    key = (prim.name, prim.source, prim.header, tuple(prim.input_names), tuple(prim.input_dtypes),
           tuple(prim.output_names), tuple(prim.output_dtypes),
           tuple((k, type(v), v) for k, v in prim.template or ()))  # (True == 1, but not as a template)
    got = _BUILT.get(key)
    if got is None:
        code, expr = source_of(prim)
        extras = tuple(tuple(f"{name}_{part}" in prim.source for part in ("shape", "strides", "ndim"))
                       for name in prim.input_names)
        if len(_BUILT) >= _MAX_BUILT:
            _BUILT.clear()
        got = _BUILT[key] = (code, expr, _function(code, expr, bool(prim.template)), extras)
    return got


def run(prim, *inputs):
    """The kernel on the current stream: the outputs, as a tuple (one per output name)."""
    code, expr, kern, extras = _built(prim)
    if prim.verbose:
        print(f"Generated source code for {expr}:\n```\n{code}\n```")
    args = []
    for x, (shape, strides, ndim) in zip(inputs, extras):
        x = cp.asarray(x)  # (a constant comes as a NumPy scalar)
        if prim.ensure_row_contiguous:
            x = cp.ascontiguousarray(x)
        args.append(x)
        if shape:
            args.append(cp.asarray(np.asarray(x.shape, dtype=np.int64)))
        if strides:
            args.append(cp.asarray(np.asarray([s // x.itemsize for s in x.strides], dtype=np.int64)))
        if ndim:
            args.append(np.int32(x.ndim))
    outs = []
    for shape, d in zip(prim.output_shapes, prim.output_dtypes):
        if prim.init_value is None:
            out = cp.empty(shape, dtype=d.np)
        elif d is bfloat16:
            out = cp.full(shape, int(narrow_bf16(np, prim.init_value)), dtype=d.np)
        else:
            out = cp.full(shape, prim.init_value, dtype=d.np)
        outs.append(out)
    blocks = tuple(-(-g // t) for g, t in zip(prim.grid, prim.threadgroup))
    kern(blocks, prim.threadgroup, tuple(args + outs), shared_mem=prim.shared_memory)
    return tuple(outs)
