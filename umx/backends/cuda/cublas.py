"""Matrix products through cuBLAS directly: the one GPU kernel a CUDA graph can capture that CuPy cannot.

CuPy refuses every cuBLAS call while a stream is capturing (its ``setStream`` raises), so a batch with a matmul
could never become a CUDA graph. umx calls ``cublasGemmEx`` itself, through ctypes, on the library CuPy has already
loaded, with a handle of its own per GPU stream: the handle's stream and workspace are set once, so a captured
graph and eager launches use the same algorithm (same bits) and replays never touch memory that someone else owns.

Eager matmuls use it too (it costs what CuPy's call costs): a batch gives the same results on its first, eager, run
as in its replays. Cases it does not cover (integer and complex dtypes, batch axes that broadcast both ways) return
None, and the caller uses CuPy.
"""

from __future__ import annotations

import ctypes
import os
from math import prod

from . import tf32_enabled
from ._probe import _cupy
from .launch import Launch
from .sources import SIGNATURES, gemm_pointers_source
from .strided import contiguous

cp = _cupy()

_N, _T = 0, 1  # cublasOperation_t
_ALGO_DEFAULT = -1
_WORKSPACE_BYTES = 32 << 20  # what NVIDIA advises for Hopper; one per GPU stream
# cudaDataType_t and cublasComputeType_t values (library_types.h, cublas_api.h)
_CUDA_R_32F, _CUDA_R_64F, _CUDA_R_16F, _CUDA_R_16BF = 0, 1, 2, 14
_CUBLAS_COMPUTE_32F, _CUBLAS_COMPUTE_32F_FAST_TF32, _CUBLAS_COMPUTE_64F = 68, 77, 70
#: the compute type of float32 products (set with the library, by ``available``: see ``tf32_enabled``)
_COMPUTE_32F = _CUBLAS_COMPUTE_32F
_c_void_p = ctypes.c_void_p
_one_f, _zero_f = ctypes.c_float(1.0), ctypes.c_float(0.0)
_one_d, _zero_d = ctypes.c_double(1.0), ctypes.c_double(0.0)
# dtype char -> (cudaDataType, cublasComputeType, alpha, beta)
_TYPES = {
    "f": (_CUDA_R_32F, _COMPUTE_32F, ctypes.byref(_one_f), ctypes.byref(_zero_f)),
    "d": (_CUDA_R_64F, _CUBLAS_COMPUTE_64F, ctypes.byref(_one_d), ctypes.byref(_zero_d)),
    "e": (_CUDA_R_16F, _CUBLAS_COMPUTE_32F, ctypes.byref(_one_f), ctypes.byref(_zero_f)),
}
#: bfloat16, whose storage is uint16: asked for by the caller, never found by the dtype's char
BFLOAT16 = (_CUDA_R_16BF, _CUBLAS_COMPUTE_32F, ctypes.byref(_one_f), ctypes.byref(_zero_f))


def _library():
    """The cuBLAS that CuPy loaded (found in this process's memory map), or None."""
    try:
        cp.cuda.device.get_cublas_handle()  # makes CuPy load it
        with open("/proc/self/maps") as maps:
            for line in maps:
                if "/libcublas.so" in line:
                    lib = ctypes.CDLL(line.split()[-1])
                    break
            else:
                return None
    except Exception:  # no /proc, no cuBLAS: CuPy's matmul serves, and graphs skip batches with products
        return None
    i, v, p = ctypes.c_int, _c_void_p, ctypes.c_longlong
    lib.cublasGemmEx.argtypes = [v, i, i, i, i, i, v, v, i, i, v, i, i, v, v, i, i, i, i]
    lib.cublasGemmStridedBatchedEx.argtypes = [v, i, i, i, i, i, v, v, i, i, p, v, i, i, p, v, v, i, i, p, i, i, i]
    lib.cublasGemmBatchedEx.argtypes = [v, i, i, i, i, i, v, v, i, i, v, i, i, v, v, i, i, i, i, i]
    return lib


_lib = None
_loaded = False


class Handle:
    """A cuBLAS handle bound to one CUDA stream, with its own workspace. Used by one thread at a time (the
    stream's executor runs one batch at a time)."""

    __slots__ = ("ptr", "workspace")

    def __init__(self, stream):
        h = _c_void_p()
        _check(_lib.cublasCreate_v2(ctypes.byref(h)))
        self.ptr = h.value
        self.workspace = cp.cuda.Memory(_WORKSPACE_BYTES)  # not from a pool: it lives as long as the handle
        # (the stream first: setting it resets the workspace)
        _check(_lib.cublasSetStream_v2(_c_void_p(self.ptr), _c_void_p(stream.ptr)))
        _check(_lib.cublasSetWorkspace_v2(_c_void_p(self.ptr), _c_void_p(self.workspace.ptr),
                                          ctypes.c_size_t(_WORKSPACE_BYTES)))


def handle_for(stream):
    """A new :class:`Handle` on ``stream`` (the current device's), or None if cuBLAS cannot be called directly."""
    return Handle(stream) if available() else None


def available() -> bool:
    """Whether umx can call cuBLAS directly (else products go through CuPy, which a CUDA graph cannot capture)."""
    global _lib, _loaded, _COMPUTE_32F
    if not _loaded:
        _lib = _library()
        if tf32_enabled():
            _COMPUTE_32F = _CUBLAS_COMPUTE_32F_FAST_TF32
            _TYPES["f"] = (_CUDA_R_32F, _COMPUTE_32F) + _TYPES["f"][2:]
        _loaded = True
    return _lib is not None


_handles: dict = {}  # CUDA stream pointer -> (stream, handle or None)


def current():
    """umx's :class:`Handle` for the current CUDA stream (made on first use), or None if cuBLAS cannot be called
    directly."""
    s = cp.cuda.get_current_stream()
    entry = _handles.get(s.ptr)
    if entry is None or entry[0] is not s:
        entry = _handles[s.ptr] = (s, handle_for(s))
    return entry[1]


def _check(status: int) -> None:
    if status:
        raise RuntimeError(f"cuBLAS call failed with status {status}")


def _layout(x):
    """``(op, ld)`` of a matrix (the last two axes of ``x``) as cuBLAS reads the transposed, column-major view of
    row-major data, or None if its strides fit neither form."""
    isz = x.itemsize
    r, c = x.shape[-2:]
    s0, s1 = x.strides[-2:]
    if (s1 == isz or c == 1) and s0 > 0 and s0 % isz == 0 and s0 // isz >= max(1, c):
        return _N, s0 // isz
    if (s0 == isz or r == 1) and s1 > 0 and s1 % isz == 0 and s1 // isz >= max(1, r):
        return _T, s1 // isz
    return None


def matmul(handle: Handle, a, b, spec=None, out=None):
    """``a @ b`` for CuPy arrays of one float dtype, on the handle's stream; None where this does not apply.
    ``spec``: the element type, where the arrays' dtype does not say it (``BFLOAT16``). ``out``: an array of the
    result's shape and dtype that receives the product (cuBLAS writes two matrices' product into a C-contiguous
    one directly; otherwise the product is copied in)."""
    if out is None:  # (every product node: no more than the call)
        return _product(handle, a, b, spec, None)
    got = _product(handle, a, b, spec, out if out.flags.c_contiguous else None)
    if got is None or got is out:
        return got
    out[...] = got
    return out


def _product(handle: Handle, a, b, spec, out):
    """:func:`matmul`'s product; ``out`` (C-contiguous, or None) is used on the two-matrix path only."""
    spec = spec or _TYPES.get(a.dtype.char)
    if spec is None or b.dtype != a.dtype:
        return None
    if a.ndim == 2 and b.ndim == 2 and a.size and b.size:  # two matrices (an MLP's layers): the short way
        la, lb = _layout(a), _layout(b)
        if la is not None and lb is not None:
            m, k = a.shape
            n = b.shape[1]
            if out is None:
                out = cp.empty((m, n), a.dtype)
            dtype, compute, alpha, beta = spec
            _check(_lib.cublasGemmEx(handle.ptr, lb[0], la[0], n, m, k, alpha, b.data.ptr, dtype, lb[1], a.data.ptr,
                                     dtype, la[1], beta, out.data.ptr, dtype, n, compute, _ALGO_DEFAULT))
            return out
    shape = _result_shape(a.shape, b.shape)
    if shape is None:
        return None
    va = a if a.ndim >= 2 else a.reshape(1, a.shape[0])
    vb = b if b.ndim >= 2 else b.reshape(b.shape[0], 1)
    m, k = va.shape[-2:]
    n = vb.shape[-1]
    if 0 in shape:
        return cp.empty(shape, a.dtype)
    if k == 0:
        return cp.zeros(shape, a.dtype)
    ba, bb = va.shape[:-2], vb.shape[:-2]
    if bb == () and ba != ():
        # batches of a against one b: one product of (batch * m) rows
        va = contiguous(va).reshape(prod(ba) * m, k)
        ba = ()
    elif ba != bb:
        if ba != () and bb != ():  # batch axes that broadcast: expand both (rare)
            full = _result_shape(va.shape[:-2] + (1, 1), vb.shape[:-2] + (1, 1))[:-2]
            va = contiguous(cp.broadcast_to(va, full + (m, k)))
            vb = contiguous(cp.broadcast_to(vb, full + (k, n)))
            ba = bb = full
    count = prod(bb) if bb else prod(ba)
    va, la, sa = _operand(va, ba)
    vb, lb, sb = _operand(vb, bb)
    rows = va.shape[-2] if not ba else m  # (a folded batch makes more rows)
    out = cp.empty((count if (ba or bb) else 1) * rows * n, a.dtype)
    dtype, compute, alpha, beta = spec
    h = _c_void_p(handle.ptr)
    if type(sa) is tuple or type(sb) is tuple:  # an operand's matrices at two strides: by pointer arrays
        _by_pointers(h, (lb, la), (vb, sb), (va, sa), out, m, n, k, count, spec)
    elif not ba and not bb:
        _check(_lib.cublasGemmEx(h, lb[0], la[0], n, rows, k, alpha, vb.data.ptr, dtype, lb[1], va.data.ptr, dtype,
                                 la[1], beta, out.data.ptr, dtype, n, compute, _ALGO_DEFAULT))
    else:
        _check(_lib.cublasGemmStridedBatchedEx(
            h, lb[0], la[0], n, m, k, alpha, vb.data.ptr, dtype, lb[1], sb, va.data.ptr, dtype, la[1], sa, beta,
            out.data.ptr, dtype, n, m * n, count, compute, _ALGO_DEFAULT))
    return out.reshape(shape)


def bf16_matmul(a, b):
    """The bfloat16 product of bfloat16 storage ``a`` and ``b`` by cuBLAS on the current stream's handle (tensor
    cores, float32 accumulation, rounded once to bfloat16, as the float32 product would be), or None where that
    does not apply: no handle, or a GPU whose cuBLAS has no bfloat16 product (refused once, then not asked
    again). The caller then widens to float32."""
    h = current()
    if h is None or cp.cuda.runtime.getDevice() in _NO_BF16_GEMM:
        return None
    try:
        return matmul(h, a, b, BFLOAT16)
    except RuntimeError:  # (_check: e.g. CUBLAS_STATUS_NOT_SUPPORTED before compute capability 8.0)
        _NO_BF16_GEMM.add(cp.cuda.runtime.getDevice())
        return None


_NO_BF16_GEMM: set = set()  # devices whose cuBLAS refused a bfloat16 product


def _operand(x, batch: tuple):
    """``(x, (op, ld), stride)``: operand ``x`` of a product as cuBLAS reads it, a batch of matrices ``stride``
    elements apart (0: one matrix for every product). A view is read as it lies where its matrices fit
    :func:`_layout` and its batch axes make one stride (a transposed batch: attention's ``k.T``, a gradient's
    ``p.T``), or two (a head-split view, ``(B, L, H, D) -> (B, H, L, D)``: ``stride`` is then
    :func:`_batch_levels`'s tuple, and the product takes pointer arrays); otherwise it is copied first: to C
    order, or where its columns are contiguous to its transpose's C order, read transposed, so that umx's
    kernel, which copies views of contiguous rows, makes the copy."""
    if batch:
        got = _as_it_lies(x)
        if got is not None:
            return (x, *got)
        x = _copied(x)
        return x, _layout(x), x.shape[-2] * x.shape[-1]
    layout = _layout(x)
    if layout is None:
        x = _copied(x)
        layout = _layout(x)
    return x, layout, 0


def _as_it_lies(x):
    """``((op, ld), stride)`` of a batch of matrices ``x`` that cuBLAS reads as it lies (see :func:`_operand`),
    or None where it must be copied first."""
    stride = _batch_stride(x)
    if stride is None and POINTER_BATCHES:
        stride = _batch_levels(x)
    layout = _layout(x) if stride is not None else None
    return None if layout is None else (layout, stride)


def _copied(x):
    """A copy of view ``x`` in C order, or where its columns are contiguous (its rows are not), the transpose of
    its transpose's copy in C order (one of :func:`_layout`'s forms either way)."""
    isz = x.itemsize
    if x.ndim >= 2 and x.strides[-2] == isz and x.strides[-1] != isz and x.shape[-2] > 1:
        return contiguous(x.swapaxes(-1, -2)).swapaxes(-1, -2)
    return contiguous(x)


def _batch_stride(x):
    """The one stride (in elements) between the matrices of ``x``'s batch axes (``x[..., r, c]``), or None where
    the batch axes do not make one stride (a head-split view ``(B, L, H, D) -> (B, H, L, D)``, a negative
    stride)."""
    isz = x.itemsize
    stride = span = None
    for n, s in zip(reversed(x.shape[:-2]), reversed(x.strides[:-2])):
        if n == 1:
            continue
        if s < 0 or s % isz or (span is not None and s != span):
            return None
        if stride is None:
            stride = s
        span = n * s
    return 0 if stride is None else stride // isz


def _batch_levels(x):
    """``(inner, outer stride, inner stride)`` in elements, where ``x``'s batch axes make two runs of one stride
    each (a head-split view): its matrix ``i`` (the batch axes in C order) is ``(i // inner) * outer + (i %
    inner) * inner stride`` elements from its first; else None."""
    isz = x.itemsize
    runs: list = []  # [count, stride] of each run of axes, innermost first
    for n, s in zip(reversed(x.shape[:-2]), reversed(x.strides[:-2])):
        if n == 1:
            continue
        if s < 0 or s % isz:
            return None
        s //= isz
        if runs and runs[-1][0] * runs[-1][1] == s:
            runs[-1][0] *= n
        else:
            runs.append([n, s])
    if len(runs) != 2:
        return None
    return runs[0][0], runs[1][1], runs[0][1]


#: whether operands whose matrices make two strides (head-split views) are read in place through pointer arrays
#: (``cublasGemmBatchedEx``) rather than copied first; UMX_POINTER_BATCHES=0 copies them (to measure the gain)
POINTER_BATCHES = os.environ.get("UMX_POINTER_BATCHES", "1") != "0"
_POINTERS = []  # the pointer arrays' kernel, made on first use


def _by_pointers(h, layouts: tuple, first: tuple, second: tuple, out, m: int, n: int, k: int, count: int,
                 spec) -> None:
    """``out`` (``count`` C-contiguous ``m x n`` results) from operands ``first`` and ``second`` (``(array,
    stride)`` as :func:`_operand` gives them, in cuBLAS's column-major order: ``b`` first) whose matrices are
    found by pointer arrays, made on the device by a kernel of umx's (a CUDA graph replays it with the product).
    ``spec``: ``(operand type, compute type, alpha, beta)``, and the result's type fifth where it differs."""
    if not _POINTERS:
        _POINTERS.append(Launch(cp.RawKernel(gemm_pointers_source("umx_gemm_pointers"), "umx_gemm_pointers"),
                                SIGNATURES["gemm_pointers"]))
    ptrs = cp.empty(3 * count, cp.uint64)
    isz = first[0].itemsize
    levels = []
    for x, stride in (first, second):
        inner, outer, step = stride if type(stride) is tuple else (count, 0, stride)
        levels += [x.data.ptr, inner, outer * isz, step * isz]
    _POINTERS[0]((-(-count // 256),), (256,), ptrs.data.ptr, count, *levels, out.data.ptr, count, 0,
                 m * n * out.itemsize)
    (lb, la), (dtype, compute, alpha, beta) = layouts, spec[:4]
    base = ptrs.data.ptr
    out_type = dtype if len(spec) < 5 else spec[4]
    _check(_lib.cublasGemmBatchedEx(h, lb[0], la[0], n, m, k, alpha, base, dtype, lb[1], base + 8 * count, dtype,
                                    la[1], beta, base + 16 * count, out_type, n, count, compute, _ALGO_DEFAULT))


#: storage dtype char -> cudaDataType, for :func:`batched` (uint16: bfloat16's storage)
_DATA_TYPES = {"f": _CUDA_R_32F, "e": _CUDA_R_16F, "H": _CUDA_R_16BF}


def batched(handle: Handle, a, b, out, transpose_b: bool = False):
    """``out[i] = a[i] @ b[i]`` (``a[i] @ b[i].T`` with ``transpose_b``) for C-contiguous 3-D arrays, accumulated
    in float32: ``a`` and ``b`` of one type (float32, float16, or uint16 as bfloat16), ``out`` float32 or that
    type, so that 16-bit operands run on tensor cores and may give a float32 result. ``a`` and ``b`` may also be
    4-D head-split views ``(B, H, rows, cols)`` of ``(B, rows, H, cols)`` data, read in place (``out`` is then
    ``(B * H, m, n)``). Returns ``out``, or None where the types or layouts do not fit."""
    ta, to = _DATA_TYPES.get(a.dtype.char), _DATA_TYPES.get(out.dtype.char)
    if ta is None or to is None or b.dtype != a.dtype or (to != _CUDA_R_32F and to != ta):
        return None
    if a.ndim == 4:
        return _batched_views(handle, a, b, out, transpose_b, ta, to)
    count, m, k = a.shape
    n = b.shape[1] if transpose_b else b.shape[2]
    if count == 0 or m == 0 or n == 0:
        return out
    compute = _COMPUTE_32F if ta == _CUDA_R_32F else _CUBLAS_COMPUTE_32F
    # (column-major: out.T = b.T @ a.T, so b comes first; a transposed b is read with ld k)
    _check(_lib.cublasGemmStridedBatchedEx(
        _c_void_p(handle.ptr), _T if transpose_b else _N, _N, n, m, k, ctypes.byref(_one_f), b.data.ptr, ta,
        k if transpose_b else n, n * k, a.data.ptr, ta, k, m * k, ctypes.byref(_zero_f), out.data.ptr, to, n,
        m * n, count, compute, _ALGO_DEFAULT))
    return out


def _batched_views(handle: Handle, a, b, out, transpose_b: bool, ta: int, to: int):
    """:func:`batched` for 4-D operands ``a`` and ``b`` (``b.T`` with ``transpose_b``) of one batch shape, read as
    they lie where :func:`_operand` reads them so, else None (the caller copies them)."""
    bt = b.swapaxes(-1, -2) if transpose_b else b
    if not POINTER_BATCHES or a.shape[:2] != bt.shape[:2] or a.shape[-1] != bt.shape[-2]:
        return None
    m, k = a.shape[-2:]
    n = bt.shape[-1]
    count = a.shape[0] * a.shape[1]
    if count == 0 or m == 0 or n == 0:
        return out
    got_a, got_b = _as_it_lies(a), _as_it_lies(bt)
    if got_a is None or got_b is None:
        return None
    (la, sa), (lb, sb) = got_a, got_b
    va, vb = a, bt
    compute = _COMPUTE_32F if ta == _CUDA_R_32F else _CUBLAS_COMPUTE_32F
    _by_pointers(_c_void_p(handle.ptr), (lb, la), (vb, sb), (va, sa), out, m, n, k, count,
                 (ta, compute, ctypes.byref(_one_f), ctypes.byref(_zero_f), to))
    return out


def _result_shape(sa: tuple, sb: tuple):
    """NumPy's matmul shape for operand shapes ``sa``, ``sb`` (checked by the op already), or None."""
    if len(sa) == 0 or len(sb) == 0:
        return None
    ba = sa[:-2]
    bb = sb[:-2] if len(sb) >= 2 else ()
    nd = max(len(ba), len(bb))
    ba = (1,) * (nd - len(ba)) + ba
    bb = (1,) * (nd - len(bb)) + bb
    batch = []
    for p, q in zip(ba, bb):
        if p != q and p != 1 and q != 1:
            return None
        batch.append(q if p == 1 else p)
    shape = tuple(batch)
    if len(sa) >= 2:
        shape += (sa[-2],)
    if len(sb) >= 2:
        shape += (sb[-1],)
    return shape
