"""umx's CUDA C++, compiled by NVRTC wherever CuPy and NVRTC are installed, GPU or not: every expression of the
fused kernels over every dtype (bfloat16 read and written as its 16 bits), casts between all dtypes, umx's own
elementwise, reduction and product kernels, the bfloat16 conversions and a user's ``cuda_kernel``.

A kernel NVRTC rejects is no error at run time (the op falls back to CuPy's kernels or runs step by step): only
speed is lost, silently. This is where it shows, before a GPU is at hand.
"""

from __future__ import annotations

import glob
import os
import re
import subprocess
import sys

import numpy as np
import pytest

import umx as mx
from umx.backends.cuda import fusion, sources
from umx.dtypes import bfloat16
from umx.runtime.fusion import ELEMENTWISE, Fused


def _nvrtc():
    """``(nvrtc module, compile options)``, or None where CuPy or NVRTC is missing."""
    try:
        import cupy._core.core as core
        from cupy_backends.cuda.libs import nvrtc

        nvrtc.getVersion()
    except Exception:
        return None
    includes = [core._get_header_dir_path()]
    for root in sys.path:  # the CUDA headers (cuda_fp16.h, ...) of NVIDIA's wheels or a toolkit
        includes += sorted(os.path.dirname(h) for h in glob.glob(os.path.join(root, "nvidia", "*", "include",
                                                                               "cuda_fp16.h")))
    try:
        import cupy

        toolkit = cupy.cuda.get_cuda_path()  # (where CuPy itself finds the headers)
    except Exception:
        toolkit = None
    for cuda in (toolkit, os.environ.get("CUDA_PATH"), "/usr/local/cuda"):
        if cuda and os.path.exists(os.path.join(cuda, "include", "cuda_fp16.h")):
            includes.append(os.path.join(cuda, "include"))
    options = ("-arch=compute_90", "--std=c++17", *core._get_cccl_include_options(),
               *(f"-I{d}" for d in includes))
    return nvrtc, options


NVRTC = _nvrtc()
pytestmark = pytest.mark.skipif(NVRTC is None, reason="needs CuPy and NVRTC (no GPU needed)")


def compile_cuda(code: str, name_expressions: tuple = ()) -> None:
    """Compile ``code`` (instantiating the templates ``name_expressions``) with NVRTC; fail the test with NVRTC's
    log if it is rejected."""
    nvrtc, options = NVRTC
    prog = nvrtc.createProgram(code, "umx.cu", [], [])
    try:
        for expr in name_expressions:
            nvrtc.addNameExpression(prog, expr)
        try:
            nvrtc.compileProgram(prog, list(options))
        except nvrtc.NVRTCError:
            log = nvrtc.getProgramLog(prog)
            numbered = "\n".join(f"{i + 1:5d} {line}" for i, line in enumerate(code.splitlines()))
            pytest.fail(f"NVRTC rejects umx's CUDA:\n{log}\n{numbered[:20000]}")
    finally:
        nvrtc.destroyProgram(prog)


def elementwise_kernel(in_params: str, out_params: str, body: str, name: str) -> str:
    """An ElementwiseKernel's CUDA as CuPy writes it, in the respects that reach the body: each parameter a
    variable of its C type (inputs const, outputs references), the body in a loop over the elements."""
    decls, params = [], []
    for spec, out in ((in_params, False), (out_params, True)):
        for p in filter(None, (s.strip() for s in spec.split(","))):
            np_name, var = p.split()
            t = fusion.C_TYPES[np.dtype(np_name).name]
            params.append(f"{t}* _raw_{var}")
            decls.append(f"{t} &{var} = _raw_{var}[i];" if out else f"const {t} {var} = _raw_{var}[i];")
    return (f'extern "C" __global__ void {name}({", ".join(params)}, long long n) {{\n'
            f"  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; "
            f"i += (long long)gridDim.x * blockDim.x) {{\n    {' '.join(decls)}\n    {body};\n  }}\n}}\n")


def in_namespaces(codes: list) -> str:
    """Several sources in one program, each in a namespace of its own (they may define the same helpers)."""
    return "\n".join(f"namespace umx_{i} {{\n{c}\n}}" for i, c in enumerate(codes))


_CUPY_HEADERS = ("#include <cupy/complex.cuh>\n#include <cupy/carray.cuh>\n#include <cupy/atomics.cuh>\n"
                 "#include <cupy/float16.cuh>\n")
_REAL = ["bool", "uint8", "uint16", "uint32", "uint64", "int8", "int16", "int32", "int64", "float16", "bfloat16",
         "float32", "float64"]


def region(root) -> Fused | None:
    """The fused region of the lazy elementwise nodes above ``root`` (every other input a leaf); None if ``root``
    is not elementwise."""
    nodes, leaves, seen = [], [], set()

    def visit(n):
        if id(n) in seen:
            return
        seen.add(id(n))
        if n._data is None and n._prim.__class__ in ELEMENTWISE:
            for x in n._inputs:
                visit(x)
            nodes.append(n)
        else:
            leaves.append(n)

    visit(root)
    return Fused(nodes, leaves, None, ("test", id(root))) if nodes else None


def _op_names() -> list:
    """The public op of every fused expression, with its arity."""
    tables = [(fusion._FLOAT_UNARY, 1), (fusion._INT_UNARY, 1), (fusion._FLOAT_BINARY, 2), (fusion._INT_BINARY, 2)]
    found = {}
    for table, arity in tables:
        for name in table:
            snake = re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()
            fn = getattr(mx, snake, None) or getattr(mx, name.lower(), None)
            assert fn is not None, f"no public op for fused expression {name}"
            found[name] = (fn, arity)
    return sorted(found.items())


def _dtype(name: str):
    return mx.bool_ if name == "bool" else getattr(mx, name)


def _leaf(dtype: str):
    return mx.array(np.ones(4), dtype=_dtype(dtype))


def _fused_sources(roots: list) -> list:
    """The ElementwiseKernel sources of the regions above ``roots`` (those the backend fuses)."""
    codes = []
    for i, root in enumerate(roots):
        f = region(root)
        made = None if f is None else fusion.source(f)
        if made is not None:
            codes.append(fusion.PREAMBLE + elementwise_kernel(*made, f"umx_fused_{i}"))
    return codes


@pytest.mark.parametrize("dtype", _REAL)
def test_every_fused_expression_compiles(dtype):
    roots = []
    for _, (fn, arity) in _op_names():
        try:
            roots.append(fn(*[_leaf(dtype)] * arity))
        except (TypeError, ValueError):  # not defined for this dtype
            pass
    codes = _fused_sources(roots)
    assert len(codes) >= 10, f"only {len(codes)} of {len(roots)} {dtype} ops made a fused kernel"
    compile_cuda(_CUPY_HEADERS + in_namespaces(codes))


def test_casts_between_all_dtypes_compile():
    roots = [_leaf(a).astype(_dtype(b)) for a in _REAL for b in _REAL if a != b]
    codes = _fused_sources(roots)
    assert len(codes) == len(roots)
    compile_cuda(_CUPY_HEADERS + in_namespaces(codes))


def test_bfloat16_regions_compile():
    a, b, f = _leaf("bfloat16"), _leaf("bfloat16"), _leaf("float32")
    roots = [mx.exp(a * b + a), a * f - b, mx.where(a > b, a, b), mx.maximum(a, 2.0) / b,
             mx.sigmoid(a).astype(mx.float16), (a + 1).astype(mx.int32), mx.isnan(a - b)]
    codes = _fused_sources(roots)
    assert len(codes) == len(roots)
    source = codes[0]
    assert "unsigned short x0" in source and "umx_bf16_load(x0)" in source and "umx_bf16_bits(" in source
    compile_cuda(_CUPY_HEADERS + in_namespaces(codes))


def test_bfloat16_conversions_compile():
    codes = [fusion.PREAMBLE + elementwise_kernel(i, o, body, name) for i, o, body, name in fusion.BF16_CONVERSIONS]
    compile_cuda(_CUPY_HEADERS + in_namespaces(codes))


_OWN = ["bool", "uint8", "uint32", "int32", "int64", "uint64", "float32", "float64"]


def _own_sources(dtype: str, kinds: str, vec: int = 1) -> list:
    a, b = _leaf(dtype), _leaf(dtype)
    codes = []
    for root in (a + b, mx.maximum(a, b), mx.where(a > b, a, b), (a * b).astype(mx.float32), mx.exp(a * b - a)):
        f = region(root)
        if f is None:
            continue
        leaf_dtypes = [x._dtype for x in f.leaves]
        lines = fusion.steps(leaf_dtypes, f.program, [n._dtype for n in f.nodes])
        if lines is not None:
            name = f"umx_ew_{dtype}_{kinds}_{vec}_{len(codes)}"
            codes.append(sources.elementwise_source(name, leaf_dtypes, kinds + "p", lines, f.root._dtype, vec))
    return codes


@pytest.mark.parametrize("kinds", ["pp", "pr", "rf", "pi", "pu", "pb", "sp", "ps", "pc", "cf"])
def test_own_elementwise_kernels_compile(kinds):
    codes = [c for dtype in _OWN for c in _own_sources(dtype, kinds)]
    assert len(codes) >= 3 * len(_OWN)
    compile_cuda(in_namespaces(codes))


@pytest.mark.parametrize("kinds", ["pp", "rp", "pu", "ps", "pc"])
def test_own_bfloat16_kernels_read_and_write_storage(kinds):
    codes = _own_sources("bfloat16", kinds)
    assert len(codes) == 5
    add, _, _, to_float, _ = codes
    assert "unsigned short* __restrict__ out" in add and "const unsigned short r = umx_bf16_bits(t0);" in add
    assert "float* __restrict__ out" in to_float
    if kinds == "pu":  # a constant's bits, as an unsigned integer
        assert "const float x1 = umx_bf16_load((unsigned short)s1);" in add
    else:
        assert "const unsigned short* __restrict__ p0" in add and "umx_bf16_load(p0[i" in add
    if kinds == "ps":  # a strided leaf's storage, by row and column
        assert "const float x1 = umx_bf16_load(p1[(long long)((unsigned)i / (unsigned)c1) * q1" in add
    if kinds == "pc":  # a column's storage, one element per w of the output's
        assert "const float x1 = umx_bf16_load(p1[((unsigned)i / (unsigned)w1) % (unsigned)m1]);" in add
    compile_cuda(in_namespaces(codes))


@pytest.mark.parametrize("kinds", ["pp", "rp", "sp", "pf", "pu", "pc", "cp"])
def test_own_kernels_of_several_elements_a_thread_compile(kinds):
    codes = [c for dtype in [*_OWN, "bfloat16"]
             for c in _own_sources(dtype, kinds, 16 // (2 if dtype == "bfloat16" else np.dtype(dtype).itemsize))]
    assert len(codes) >= 3 * len(_OWN)
    assert "umx_vec<" in codes[0] and "r.a[e] =" in codes[0]
    compile_cuda(in_namespaces(codes))


def test_own_reductions_and_products_compile():
    codes = [sources.reduce_source(kind, _dtype(t), f"umx_reduce_{i}_{t}")
             for i, kind in enumerate(sources.COMBINE) for t in ("uint8", "int32", "uint64", "int64", "bfloat16",
                                                                 "float32", "float64")]
    bf16_sum = codes[4]
    assert "const unsigned short* __restrict__ x" in bf16_sum and "umx_bf16_load(x[i])" in bf16_sum
    assert "const unsigned short r = umx_bf16_bits(part[0]);" in bf16_sum
    codes += [sources.narrow_source(char, n, f"umx_narrow_{char}{n}") for char in sources.NARROW_TYPES
              for n in range(1, 9)]
    compile_cuda(in_namespaces(codes))


def test_axes_reductions_compile():
    codes = [sources.axes_reduce_source(_dtype(t), f"umx_axes_{t}") for t in ("bfloat16", "float32", "float64")]
    bf16 = codes[0]
    assert "acc += umx_bf16_load(base[r * cols])" in bf16  # storage read, summed in float
    assert "umx_bf16_bits((float)(acc / divisor))" in bf16
    assert "double acc = 0;" in codes[2]
    compile_cuda(in_namespaces(codes))


def test_fast_op_kernels_compile():
    # mx.fast's normalizations, rope and attention as one kernel each (backends/cuda/fast.py), on float32 and on
    # bfloat16's storage
    f, bf = sources.FAST_TYPES["float32"], sources.FAST_TYPES["bfloat16"]
    codes = [sources.rms_norm_source("umx_rms_norm"), sources.rope_source("umx_rope"),
             sources.layer_norm_source("umx_layer_norm"), sources.sdpa_source("umx_sdpa"),
             sources.sdpa_softmax_source("umx_sdpa_softmax"),
             sources.sdpa_softmax_source("umx_sdpa_softmax_bf16", bf),
             sources.softmax_source("umx_softmax"), sources.softmax_source("umx_softmax_bf16", bf),
             sources.arg_reduce_source("umx_arg_reduce"), sources.arg_reduce_source("umx_arg_reduce_bf16", bf),
             sources.copy_list_source("umx_copy_list"),
             sources.rms_norm_source("umx_rms_norm_bf16", bf, bf), sources.rms_norm_source("umx_rms_norm_mixed", bf, f),
             sources.rope_source("umx_rope_bf16", bf), sources.layer_norm_source("umx_layer_norm_bf16", bf, bf),
             sources.sdpa_source("umx_sdpa_bf16", bf), sources.norm_vjp_source("umx_norm_vjp"),
             sources.norm_vjp_source("umx_norm_vjp_bf16", bf, bf), sources.norm_vjp_source("umx_norm_vjp_mixed", bf, f),
             sources.softmax_vjp_source("umx_softmax_vjp"), sources.softmax_vjp_source("umx_softmax_vjp_bf16", bf)]
    assert "const unsigned short* __restrict__ q" in codes[15] and "umx_sdpa_bf16_combine" in codes[15]
    assert "umx_sdpa_bf16_group" in codes[15]
    qmv = [sources.qmv_source(f"umx_qmv_{b}_{r}_{c}_{g}_{d}_{v}", b, r, c, g, d, d, d, v)
           for b, r, c, g, d, v in [(2, 1, 4, 32, True, 4), (4, 1, 4, 64, True, 4), (8, 1, 1, 128, True, 1),
                                    (4, 8, 2, 64, False, 4), (2, 3, 1, 128, False, 1), (8, 8, 4, 32, False, 4)]]
    assert "__byte_perm" in qmv[0] and "const unsigned short* __restrict__ scales" in qmv[0]
    assert "const float* __restrict__ x" in qmv[3] and "uint4" not in qmv[4]
    dequantize = [sources.dequantize_bf16_source(f"umx_dequantize_bf16_{b}_{g}", b, g) for b in (2, 4, 8)
                  for g in (32, 64, 128)]
    assert "umx_vec<unsigned short, 8> v;" in dequantize[3]
    matvec = [sources.bf16_matvec_source(f"umx_bf16_matvec_{r}_{c}_{w}", r, c, w, r < 3)
              for r, c, w in [(1, 2, 8), (4, 4, 2), (3, 1, 1)]]
    assert "__ldcs(wc[c] + i)" in matvec[0] and "wc[c][i]" in matvec[2]
    compile_cuda(in_namespaces(codes + qmv + matvec + dequantize))


def _registers(code: str) -> dict:
    """Kernel name -> the registers a thread of it uses, as ptxas reports them for sm_90 (a Hopper GPU's)."""
    nvrtc, options = NVRTC
    prog = nvrtc.createProgram(code, "umx.cu", [], [])
    try:
        nvrtc.compileProgram(prog, [o.replace("compute_90", "sm_90") for o in options] + ["--ptxas-options=-v"])
        log = nvrtc.getProgramLog(prog)
    finally:
        nvrtc.destroyProgram(prog)
    names = re.findall(r"Compiling entry function '(\w+)'", log)
    counts = [int(n) for n in re.findall(r"Used (\d+) registers", log)]
    assert names and len(names) == len(counts), log
    return dict(zip(names, counts))


def test_norm_kernels_fit_blocks_of_their_widest_launch():
    # (a block of NORM_FEW_ROWS_BLOCK threads launches only if each thread needs at most 64K / that many registers:
    # a kernel grown past it would fail to launch for a decode step's single row)
    f, bf = sources.FAST_TYPES["float32"], sources.FAST_TYPES["bfloat16"]
    most = 65536 // sources.NORM_FEW_ROWS_BLOCK
    for make in (sources.rms_norm_source, sources.layer_norm_source, sources.norm_vjp_source):
        for types in ((f, f), (bf, bf), (bf, f)):
            for name, used in _registers(make("umx_norm", *types)).items():
                assert used <= most, (name, types, used)
    for t in (f, bf):  # (softmax's and argmax's rows of many elements take blocks of 1024 threads)
        for make in (sources.softmax_source, sources.softmax_vjp_source, sources.arg_reduce_source):
            for name, used in _registers(make("umx_row", t)).items():
                assert used <= most, (name, t, used)


def _parameters(code: str, name: str) -> str:
    """Kernel ``name``'s parameters in ``code`` as ``sources.SIGNATURES`` writes them."""
    params = re.search(r"__global__ void " + name + r"\(([^)]*)\)", code).group(1)
    kinds = []
    for p in params.split(","):
        p = " ".join(p.split())
        kinds.append("p" if "*" in p else "q" if p.startswith("long long") else "f" if p.startswith("float")
                     else "i" if p.startswith("int") else "?" + p)
    return "".join(kinds)


def test_launch_signatures_match_the_kernels_parameters():
    # a kernel launched through launch.Launch gets its parameters packed by these codes: one read wrong would
    # shift or mangle every parameter after it, silently
    f, bf = sources.FAST_TYPES["float32"], sources.FAST_TYPES["bfloat16"]
    made = {"rms_norm": [sources.rms_norm_source("k", bf, f)], "layer_norm": [sources.layer_norm_source("k", bf, bf)],
            "rope": [sources.rope_source("k", bf)], "sdpa": [sources.sdpa_source("k", bf)],
            "sdpa_softmax": [sources.sdpa_softmax_source("k", bf)],
            "softmax": [sources.softmax_source("k", t) for t in (f, bf)],
            "softmax_vjp": [sources.softmax_vjp_source("k", t) for t in (f, bf)],
            "norm_vjp": [sources.norm_vjp_source("k", t, w) for t, w in ((f, f), (bf, bf), (bf, f))],
            "arg_reduce": [sources.arg_reduce_source("k", t) for t in (f, bf)],
            "qmv": [sources.qmv_source("k", 4, 1, 4, 64, True, True, True, 4)],
            "bf16_matvec": [sources.bf16_matvec_source("k", 1, 2, 8)],
            "dequantize_bf16": [sources.dequantize_bf16_source("k", b, 64) for b in (2, 4, 8)],
            "dynamic_slice": [sources.dynamic_slice_source("k", 2, u) for u in (False, True)],
            "strided_copy": [sources.strided_copy_source("k", u) for u in sources.COPY_UNITS],
            "gemm_pointers": [sources.gemm_pointers_source("k")]}
    for which, codes in made.items():
        for code in codes:
            assert _parameters(code, "k") == sources.SIGNATURES[which], which
    assert _parameters(made["sdpa"][0], "k_combine") == sources.SIGNATURES["sdpa_combine"]
    assert _parameters(made["sdpa"][0], "k_group") == sources.SIGNATURES["sdpa_group"]
    assert _parameters(made["rms_norm"][0], "k_vec") == sources.SIGNATURES["rms_norm_vec"]
    assert _parameters(made["rms_norm"][0], "k_add_vec") == sources.SIGNATURES["rms_norm_add_vec"]
    assert _parameters(made["dynamic_slice"][1], "k_pair") == sources.SIGNATURES["dynamic_slice_pair"]


def test_dynamic_slice_kernels_compile():
    codes = [sources.dynamic_slice_source(f"umx_ds_{n}_{u}", n, u) for n in sources.SLICE_TYPES for u in (False, True)]
    assert "out[at] = upd[e];" in codes[-1] and "out[e] = x[at];" in codes[0]
    compile_cuda(in_namespaces(codes))


def test_strided_copy_kernels_compile():
    codes = [sources.strided_copy_source(f"umx_strided_copy_{u}", u) for u in sources.COPY_UNITS]
    assert "const uint4* __restrict__ x" in codes[0] and "unsigned char* __restrict__ out" in codes[-1]
    compile_cuda(in_namespaces(codes))


def test_gemm_pointer_kernel_compiles():
    code = sources.gemm_pointers_source("umx_gemm_pointers")
    assert "out[2 * count + i]" in code
    compile_cuda(code)


def test_a_users_cuda_kernel_compiles():
    from umx.backends.cuda.custom_kernel import source_of
    from umx.primitives import CudaKernel

    body = """
        unsigned int elem = blockIdx.x * blockDim.x + threadIdx.x;
        if (elem < 8) {
            T v = static_cast<T>(inp[elem]);
            out[elem] = scale_by * exp(static_cast<float>(v));
        }
    """
    prim = CudaKernel("myexp", ("inp",), ("out",), body, "", False, 0, (("scale_by", 2), ("T", mx.float16)),
                      (8, 1, 1), (4, 1, 1), (bfloat16,), ((8,),), (mx.float32,), None, False)
    code, expr = source_of(prim)
    assert expr == "umx_custom_myexp<2, __half>"
    compile_cuda(code, (expr,))


def test_every_module_of_the_cuda_backend_imports():
    # in a process of its own: without a GPU, the device check is patched out (the modules only need CuPy itself
    # at import), which must not leak into other tests
    code = """
import importlib, pkgutil, cupy
import umx.backends.cuda as cuda
import umx.backends.cuda._probe as probe
probe._cupy = cuda._cupy = lambda: cupy
cupy.cuda.runtime.getDeviceCount = lambda: 1
for m in pkgutil.iter_modules(cuda.__path__):
    importlib.import_module("umx.backends.cuda." + m.name)
"""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])))
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]


def _regions_of(program) -> list:
    """The fused regions the CPU backend runs while ``program()`` computes."""
    from umx.backends.cpu import executor as cpu_executor

    seen = []
    original = cpu_executor.run_fused

    def recording(f, *args, **kwargs):
        assert f.program  # (derived from the nodes' inputs, which running the region detaches)
        seen.append(f)
        return original(f, *args, **kwargs)

    cpu_executor.run_fused = recording
    try:
        with mx.stream(mx.cpu):
            program()
    finally:
        cpu_executor.run_fused = original
    return seen


def _training_step(dtype):
    import umx.nn as nn
    import umx.optimizers as optim

    mx.random.seed(0)
    model = nn.Sequential(nn.Linear(16, 32), nn.GELU(), nn.LayerNorm(32), nn.Linear(32, 32), nn.SiLU(),
                          nn.RMSNorm(32), nn.Linear(32, 10))
    model.set_dtype(dtype)
    opt = optim.AdamW(learning_rate=1e-3)
    x = mx.random.normal((8, 16)).astype(dtype)
    y = mx.array(np.arange(8) % 10)

    def loss_fn(model):
        return nn.losses.cross_entropy(model(x), y, reduction="mean")

    loss, grads = nn.value_and_grad(model, loss_fn)(model)
    opt.update(model, grads)
    mx.eval(loss, model.parameters(), opt.state)


@pytest.mark.parametrize("dtype", ["bfloat16", "float16", "float32"])
def test_regions_of_a_training_step_compile(dtype):
    """Every region a training step makes (forward, backward, AdamW), as the ElementwiseKernel and as umx's own
    kernel (arrays of the output's size, constants by value) would compile it."""
    regions = _regions_of(lambda: _training_step(_dtype(dtype)))
    codes, own = [], []
    for i, f in enumerate({f.key: f for f in regions}.values()):
        made = fusion.source(f)
        if made is not None:
            codes.append(fusion.PREAMBLE + elementwise_kernel(*made, f"umx_fused_{i}"))
        leaf_dtypes = [x._dtype for x in f.leaves]
        kinds = "".join("p" if isinstance(x._data, np.ndarray) else "u" if x._dtype is bfloat16 else "f"
                        if x._dtype.kind == "f" else "i" for x in f.leaves)
        if dtype != "float16":  # (umx's own kernels leave float16 to CuPy)
            lines = fusion.steps(leaf_dtypes, f.program, [n._dtype for n in f.nodes])
            if lines is not None:
                own.append(sources.elementwise_source(f"umx_ew_{i}", leaf_dtypes, kinds, lines, f.root._dtype))
    assert len(codes) >= 4, f"only {len(codes)} fused kernels from {len(regions)} regions"
    compile_cuda(_CUPY_HEADERS + in_namespaces(codes))
    if own:
        compile_cuda(in_namespaces(own))
