"""``mx.fast``'s normalizations, rotary embedding and attention as kernels of umx's own on the GPU (``sources.py``
has their text), for float32 and bfloat16 data, bfloat16 read and written as its 16-bit storage (computed in
float32, rounded once on the way out: what widening, then narrowing, gives, with no kernels for either);
attention over many queries is two cuBLAS products around a softmax kernel. Other dtypes and the
frequencies-as-input form of rope take the shared kernels of ``backends/xp/fast.py``, several CuPy calls each.

The executor asks ``NATIVE`` first, with the nodes' own (unwidened) data; the kernel table's entries
(:func:`install`) serve what reaches them widened to float32.

These kernels only enqueue device work, so a CUDA graph may capture a node that one of them runs: ``CAPTURE_IF``
tells ``graphs.py`` which nodes those are (the shared kernels' products go through CuPy's cuBLAS, which refuses
capture)."""

from __future__ import annotations

import functools
import math
import os

import numpy as np

from ...dtypes import float32 as _float32
from ...dtypes import widen_bf16
from ...primitives import fast as fp
from ...runtime.executor import conform
from . import cublas, softmax
from ._probe import _cupy
from .direct import zeroed
from .launch import Launch
from .sources import (
    BLOCK,
    FAST_STORAGE,
    FAST_TYPES,
    NORM_FEW_ROWS_BLOCK,
    SDPA_CHUNK,
    SDPA_GROUP_CHUNK,
    SDPA_GROUP_HEAD,
    SDPA_GROUP_ROWS,
    SDPA_GROUP_TILE,
    SDPA_MAX_HEAD,
    SDPA_MERGE_SPLITS,
    SIGNATURES,
    layer_norm_source,
    norm_vjp_source,
    rms_norm_source,
    rope_source,
    sdpa_softmax_source,
    sdpa_source,
)
from .strided import contiguous

cp = _cupy()

_F, _BF = FAST_TYPES["float32"], FAST_TYPES["bfloat16"]
_SOURCES = {"rms_norm": rms_norm_source, "layer_norm": layer_norm_source, "norm_vjp": norm_vjp_source,
            "rope": rope_source,
            "sdpa": sdpa_source, "sdpa_softmax": sdpa_softmax_source}


@functools.cache
def _kernel(which: str, *types: str, part: str = "") -> Launch:
    """The kernel ``which`` for storage ``types`` (see ``sources.FAST_TYPES``; none: float32), compiled once;
    ``part``: another kernel of the same source (``"combine"``: the attention's merge; ``"group"``: its grouped
    kernel; ``"vec"``: rms_norm's for rows of a multiple of 8)."""
    name = f"umx_{which}" + "".join("_bf16" if t == _BF else "_f32" for t in types)
    suffix = f"_{part}" if part else ""
    return Launch(cp.RawKernel(_SOURCES[which](name, *types), name + suffix), SIGNATURES[which + suffix])


def _ptr(x) -> int:
    """A device array's address; 0 for a NumPy placeholder (a parameter the kernel does not read)."""
    return x.data.ptr if type(x) is cp.ndarray else 0


def _norm(which: str, prim, x, params: list, xt: str, wt: str):
    """A normalization's kernel (``which``: "rms_norm" or "layer_norm"): one block per row; ``xt``, ``wt``: the
    storage types of ``x`` (and the output) and of the weight and bias."""
    d = x.shape[-1]
    x = contiguous(x)
    out = cp.empty_like(x)
    w = contiguous(params[0]) if prim.has_weight else x  # (any pointer: not read)
    rows = x.size // d
    threads = _row_block(rows)
    if which == "layer_norm":
        b = contiguous(params[-1]) if prim.has_bias else x
        _kernel(which, xt, wt)((rows,), (threads,), x.data.ptr, w.data.ptr, b.data.ptr, out.data.ptr, d,
                               prim.eps, int(prim.has_weight), int(prim.has_bias))
    elif _vec_rows(d, x, w):
        # 8 elements a thread: float32 and bfloat16 alike, so that bfloat16 keeps float32's order of sums
        _kernel(which, xt, wt, part="vec")((rows,), (_vec_threads(d),), x.data.ptr, w.data.ptr, out.data.ptr,
                                           d, prim.eps, int(prim.has_weight))
    else:
        _kernel(which, xt, wt)((rows,), (threads,), x.data.ptr, w.data.ptr, out.data.ptr, d, prim.eps,
                               int(prim.has_weight))
    return out


def _vec_rows(d: int, *arrays) -> bool:
    """Whether rows of ``d`` elements of ``arrays`` (contiguous) take a norm's vector kernel: 8 elements a
    thread, 16-byte aligned, one block a row."""
    ptrs = 0
    for x in arrays:
        ptrs |= x.data.ptr
    return d % 8 == 0 and d <= 8 * NORM_FEW_ROWS_BLOCK and ptrs % 16 == 0


def _vec_threads(d: int) -> int:
    """The threads of the vector kernel's block for rows of ``d`` elements (whole warps, 8 elements a thread)."""
    return -(-d // 256) * 32


def add_and_norm(add, norm, a, b, w) -> tuple | None:
    """``(a + b, rms_norm(a + b, w))``, the values of Add node ``add`` (over ``a`` and ``b``) and of the RMSNorm
    node ``norm`` that reads it (with weight ``w``), by one kernel: a residual stream's add and the norm after
    it, two of each a layer of a decode step, whose launches cost more than their work. Both values are what the
    two nodes' own kernels give, bit for bit (the sum rounded to its type, then normalized as ``_norm``'s vector
    kernel does); None where that kernel does not apply (other dtypes, broadcasting, rows it does not take)."""
    dtype = add._dtype
    xt = FAST_STORAGE.get(dtype)
    ins = add._inputs
    if (xt is None or norm._dtype is not dtype or not norm._prim.has_weight or len(ins) != 2
            or ins[0]._dtype is not dtype or ins[1]._dtype is not dtype or ins[0]._shape != add._shape
            or ins[1]._shape != add._shape or not add._shape):
        return None
    wt = FAST_STORAGE.get(norm._inputs[1]._dtype)
    if wt is None or type(a) is not cp.ndarray or type(b) is not cp.ndarray or type(w) is not cp.ndarray:
        return None
    d = a.shape[-1]
    if (not a.size or not a.flags.c_contiguous or not b.flags.c_contiguous or not w.flags.c_contiguous
            or not _vec_rows(d, a, b, w)):
        return None
    total = cp.empty_like(a)
    out = cp.empty_like(a)
    _kernel("rms_norm", xt, wt, part="add_vec")((a.size // d,), (_vec_threads(d),), a.data.ptr, b.data.ptr,
                                                w.data.ptr, total.data.ptr, out.data.ptr, d, norm._prim.eps, 1)
    return conform(cp, add, total), conform(cp, norm, out)


def _row_block(rows: int) -> int:
    """The threads of a normalization's block (one block a row): more where there are fewer rows than
    multiprocessors, so that a row one block reads alone has more loads in flight."""
    return NORM_FEW_ROWS_BLOCK if rows < _blocks_wanted() // 4 else BLOCK


def _norm_table(which: str, fallback):
    """The table's entry of a normalization: the kernel for float32 ``x`` and parameters, else ``fallback``."""

    def run(prim, x, *params):
        if x.dtype != np.float32 or any(p.dtype != np.float32 for p in params) or x.size == 0 or x.ndim == 0:
            return fallback(prim, x, *params)
        return _norm(which, prim, x, list(params), _F, _F)

    return run


_OFFSET_KINDS = {"f": 0, "i": 1, "l": 2, "q": 2}  # an offset array's dtype char -> how the rope kernel reads it


def _rope(prim, x, offsets, xt: str):
    """RoPE's kernel: one thread per element; ``offsets``: the offset array, or None for ``prim.offset``."""
    b, t, d = x.shape[0], x.shape[-2], x.shape[-1]
    heads = x.size // max(b * t * d, 1)
    if offsets is None:
        offsets, kind, fixed = x, 3, float(prim.offset)  # (any pointer: not read)
    else:
        kind = _OFFSET_KINDS.get(offsets.dtype.char)
        if kind is None:
            offsets, kind = offsets.astype(cp.float32), 0
        offsets, fixed = contiguous(offsets.reshape(-1)), 0.0
    out = cp.empty(x.shape, x.dtype)
    if x.ndim > 4 or any(s % x.itemsize for s in x.strides):  # (a view of up to four axes is read in place)
        x = contiguous(x).reshape((-1,) + x.shape[-3:] if x.ndim > 4 else x.shape)
    shape = (1,) * (4 - x.ndim) + x.shape
    strides = (0,) * (4 - x.ndim) + tuple(s // x.itemsize for s in x.strides)
    half = prim.dims // 2
    blocks = -(-x.size // BLOCK)
    _kernel("rope", xt)((blocks,), (BLOCK,),
                        x.data.ptr, out.data.ptr, offsets.data.ptr, offsets.size if kind != 3 else 1, kind, fixed,
                        x.size, t, d, prim.dims, heads, prim.scale, -math.log(prim.base) / half,
                        1 if prim.traditional else 0, 1 if prim.inverse else 0, *strides, shape[1], shape[2])
    return out


def rope(fallback):
    """RoPE's table entry: the kernel where ``x`` is float32 and the frequencies come from ``base``, else
    ``fallback``."""

    def run(prim, x, *rest):
        if x.dtype != np.float32 or prim.base is None or x.size == 0 or x.ndim < 2:
            return fallback(prim, x, *rest)
        return _rope(prim, x, None if prim.offset is not None else rest[0], _F)

    return run


#: attention over at most this many query positions runs as the kernel (one block per query row, each reading the
#: keys of its head); longer query blocks take the shared kernel, whose products are cuBLAS GEMMs
SDPA_MAX_QUERIES = 16
_MASK_KINDS = {"none": 0, "causal": 1, "bool": 2, "additive": 3}


def sdpa_fits(prim, q_shape: tuple, k_shape: tuple, v_shape: tuple) -> bool:
    """Whether the attention kernel takes queries, keys and values of these shapes (float32 data)."""
    return (len(q_shape) == 4 and 0 < q_shape[2] <= SDPA_MAX_QUERIES and q_shape[3] <= SDPA_MAX_HEAD
            and v_shape[3] <= SDPA_MAX_HEAD and k_shape[2] > 0 and math.prod(q_shape) > 0)


def sdpa(fallback):
    """Attention's table entry where ``q``, ``k`` and ``v`` are float32: few queries (:func:`sdpa_fits`) as one
    kernel, more as two cuBLAS products around a softmax kernel; else ``fallback``."""

    def run(prim, q, k, v, *rest):
        if q.dtype != np.float32 or k.dtype != np.float32 or v.dtype != np.float32:
            return fallback(prim, q, k, v, *rest)
        out = _sdpa(prim, q, k, v, rest, _F, lambda a: a)
        return out if out is not None else fallback(prim, q, k, v, *rest)

    return run


def _sdpa(prim, q, k, v, rest, xt: str, to_float):
    """Attention by the kernels here, or None; ``xt``: the storage type of ``q``, ``k``, ``v`` and the output;
    ``to_float``: a float mask's or the sinks' data as float32."""
    if q.ndim != 4 or q.size == 0 or k.shape[2] == 0:
        return None
    mask, strides = q, (0, 0, 0, 0)  # (no mask: any pointer, not read)
    if prim.mask in ("bool", "additive"):
        m = rest[0]
        m = m.reshape((1,) * (4 - m.ndim) + m.shape)
        if prim.mask == "additive":
            m = to_float(m).astype(cp.float32, copy=False)
        mask = contiguous(m)
        strides = tuple(0 if n == 1 else s // mask.itemsize for n, s in zip(mask.shape, mask.strides))
    sinks = contiguous(to_float(rest[-1]).astype(cp.float32, copy=False)) if prim.has_sinks else None
    if sdpa_fits(prim, q.shape, k.shape, v.shape):
        return _sdpa_rows(prim, q, k, v, mask, strides, sinks, xt)
    h = cublas.current()
    if h is None:
        return None
    return _sdpa_products(h, prim, q, k, v, mask, strides, sinks, xt)


def _sdpa_rows(prim, q, k, v, mask, strides: tuple, sinks, xt: str):
    """Few queries: each query row's keys in chunks, one block a chunk, merged by a second kernel where there
    are several (``sources.sdpa_source``); where a key head's query rows are few (a decode step's query heads of
    one key head), those rows together, each key and value read once for all of them (its ``_group`` kernel),
    whose last block of a group merges the group's chunks itself (:data:`MERGE`: one launch, not two)."""
    batch, n_q, t_q, d = q.shape
    n_kv, t_k, d_v = k.shape[1], k.shape[2], v.shape[3]
    q, k, v = contiguous(q), contiguous(k), contiguous(v)
    rows = batch * n_q * t_q
    grouped = (GROUPED and (n_q // n_kv) * t_q <= SDPA_GROUP_ROWS and max(d, d_v) <= SDPA_GROUP_HEAD
               and d % 8 == 0 and d_v % 8 == 0)  # (its tiles are read 16 bytes at a time)
    if grouped:  # (chunks as for float32 whatever the type: bfloat16 gives float32's results rounded, bit for bit)
        most = min(SDPA_GROUP_CHUNK, SDPA_GROUP_TILE // (4 * max(d, d_v)))
        n_split, chunk = _splits(batch * n_kv, t_k, most, SDPA_GROUP_MIN_CHUNK)
    else:
        n_split, chunk = _splits(rows, t_k)
    out = cp.empty((batch, n_q, t_q, d_v), q.dtype)
    part = cp.empty((rows * n_split * (d_v + 2),), cp.float32) if n_split > 1 else out
    sinks = _ptr(sinks)
    args = (q.data.ptr, k.data.ptr, v.data.ptr, mask.data.ptr, sinks, out.data.ptr, part.data.ptr, n_q, n_kv, t_q,
            t_k, d, d_v, prim.scale, _MASK_KINDS[prim.mask], *strides, chunk, n_split)
    merged = False
    if grouped:
        counters = _counters(batch * n_kv) if MERGE and 1 < n_split <= SDPA_MERGE_SPLITS else 0
        merged = counters != 0
        _kernel("sdpa", xt, part="group")((batch * n_kv, n_split), (BLOCK,), *args, counters)
    else:
        _kernel("sdpa", xt)((rows, n_split), (BLOCK,), *args)
    if n_split > 1 and not merged:
        _kernel("sdpa", xt, part="combine")((rows,), (BLOCK,), part.data.ptr, sinks, out.data.ptr, n_q, t_q, d_v,
                                            n_split)
    return out


#: whether few query rows of a key head go to the grouped kernel (False: one row a block, for comparisons)
GROUPED = True
#: whether the grouped kernel's last block of a group merges its chunks (``UMX_SDPA_MERGE=0``: the second kernel
#: does, for comparisons), where there are at most ``SDPA_MERGE_SPLITS`` chunks (more merge faster one block a
#: row) and ``SDPA_MERGE_GROUPS`` groups (the counters of a stream)
MERGE = os.environ.get("UMX_SDPA_MERGE", "1") != "0"
SDPA_MERGE_GROUPS = 1024
_merge_counters: dict = {}  # (device, stream address) -> that stream's counters of finished blocks per group


def _counters(groups: int) -> int:
    """The address of the current stream's counters of the grouped kernel's finished blocks (all zero between
    launches: the last block of a group resets its count), or 0 where the kernel should not merge: too many
    groups, or a stream capturing a CUDA graph before it has counters (their memory is outside every pool, zeroed
    in the stream's order: see ``direct.zeroed``)."""
    if groups > SDPA_MERGE_GROUPS:
        return 0
    stream = cp.cuda.get_current_stream()
    key = (cp.cuda.runtime.getDevice(), stream.ptr)
    counters = _merge_counters.get(key)
    if counters is None:
        if stream.is_capturing():
            return 0
        counters = _merge_counters[key] = zeroed(4 * SDPA_MERGE_GROUPS, stream.ptr)
    return counters.ptr


#: the fewest keys a block of the few-queries kernels takes, when splitting the keys to fill the GPU
SDPA_MIN_CHUNK = 64
SDPA_GROUP_MIN_CHUNK = 32


def _splits(units: int, t_k: int, most: int = SDPA_CHUNK, fewest: int = SDPA_MIN_CHUNK) -> tuple:
    """``(n_split, chunk)``: how a few-queries kernel splits ``t_k`` keys of each of ``units`` rows (or groups
    of rows): chunks of at most ``most`` keys, and enough of them (of ``fewest`` or more) for about four blocks
    per multiprocessor."""
    n = max(-(-t_k // most), min(-(-_blocks_wanted() // units), -(-t_k // fewest)))
    chunk = -(-t_k // n)
    return -(-t_k // chunk), chunk


@functools.cache
def _blocks_wanted() -> int:
    return 4 * cp.cuda.Device().attributes["MultiProcessorCount"]


#: the most bytes of scores the products' path holds at once (longer query blocks run in parts)
SCORES_BYTES = 256 << 20


def _sdpa_products(h, prim, q, k, v, mask, strides: tuple, sinks, xt: str):
    """More queries: the scores of each key head's group of query heads by one batched product (cuBLAS, through
    umx's handle: a CUDA graph captures it; bfloat16 operands on tensor cores, float32 scores), the softmax
    (``sources.sdpa_softmax_source``: in place for float32, else into probabilities of the operands' type, as
    flash attention rounds them), then the weighted values by a second product, written in the operands' type;
    in parts of query positions whose scores fit ``SCORES_BYTES``. None if cuBLAS does not take the operands."""
    batch, n_q, t_q, d = q.shape
    n_kv, t_k, d_v = k.shape[1], k.shape[2], v.shape[3]
    rep = n_q // n_kv
    groups = batch * n_kv
    per_position = batch * n_q * t_k * (4 if xt == _F else 6)  # (float32 scores, and probabilities)
    step = max(1, min(t_q, SCORES_BYTES // per_position))
    # One part, a query head a key head: q, k and v read as they lie (head-split views, by pointer arrays),
    # where cuBLAS takes their layouts; else copies.
    direct = rep == 1 and step == t_q
    out = None if step == t_q else cp.empty((batch, n_q, t_q, d_v), q.dtype)
    mask_kind = _MASK_KINDS[prim.mask]
    for t0 in range(0, t_q, step):
        n = min(t_q, t0 + step) - t0
        scores = cp.empty((groups, rep * n, t_k), cp.float32)
        if direct and cublas.batched(h, q, k, scores, transpose_b=True) is None:
            direct = False  # (layouts cuBLAS does not read in place)
        if not direct:
            if t0 == 0:
                k = contiguous(k).reshape(groups, t_k, d)  # (read transposed by the product: no copy of k.T)
                v = contiguous(v).reshape(groups, t_k, d_v)
            # (a key head's query heads are neighbours: (B * Hkv, rep * n, D) rows, in the order of q's rows)
            qc = contiguous(q[:, :, t0:t0 + n]).reshape(groups, rep * n, d)
            if cublas.batched(h, qc, k, scores, transpose_b=True) is None:
                return None
        probs = scores if xt == _F else cp.empty(scores.shape, q.dtype)
        rows = batch * n_q * n
        grid, block, lanes = softmax.launch_shape(rows, t_k)
        _kernel("sdpa_softmax", xt)((grid,), (block,), scores.data.ptr, probs.data.ptr, mask.data.ptr, _ptr(sinks),
                                    rows, n_q, n, t0, t_q, t_k, prim.scale, mask_kind, lanes, *strides)
        del scores  # (bfloat16: its memory serves the next allocation)
        part = cp.empty((groups, rep * n, d_v), q.dtype)
        if cublas.batched(h, probs.reshape(batch, n_q, n, t_k) if direct else probs, v, part) is None:
            return None
        part = part.reshape(batch, n_q, n, d_v)
        if out is None:
            return part
        out[:, :, t0:t0 + n] = part
    return out


def install(table: dict) -> None:
    """Put the kernels above in front of the shared ones in the CUDA kernel table."""
    table[fp.RMSNorm] = _norm_table("rms_norm", table[fp.RMSNorm])
    table[fp.LayerNorm] = _norm_table("layer_norm", table[fp.LayerNorm])
    table[fp.RoPE] = rope(table[fp.RoPE])
    table[fp.ScaledDotProductAttention] = sdpa(table[fp.ScaledDotProductAttention])


def _widen(x):
    return widen_bf16(cp, x) if x.dtype == np.uint16 else x


def _on_device(args: list) -> bool:
    for a in args:
        if type(a) is not cp.ndarray:  # (a NumPy constant: the table's path moves it)
            return False
    return True


def _native_norm(which: str):
    def run(n, args: list):
        ins = n._inputs
        xt = FAST_STORAGE.get(ins[0]._dtype)
        if xt is None or n._dtype is not ins[0]._dtype or not n._shape or 0 in n._shape or not _on_device(args):
            return None
        wt = FAST_STORAGE.get(ins[1]._dtype) if len(ins) > 1 else _F
        if wt is None or any(y._dtype is not ins[1]._dtype for y in ins[2:]):
            return None
        return _norm(which, n._prim, args[0], args[1:], xt, wt)

    return run


def _norm_vjp_types(n) -> tuple | None:
    """``(x's storage type, the weight's)`` where NormVJP node ``n`` runs as the kernel here, else None: ``x`` and
    the cotangent of one dtype the kernel takes, a float32 result, no empty axis."""
    ins = n._inputs
    xt = FAST_STORAGE.get(ins[0]._dtype)
    if xt is None or ins[-1]._dtype is not ins[0]._dtype or n._dtype is not _float32 or 0 in n._shape:
        return None
    wt = FAST_STORAGE.get(ins[1]._dtype) if n._prim.has_weight else _F
    return None if wt is None else (xt, wt)


def _native_norm_vjp(n, args: list):
    types = _norm_vjp_types(n)
    if types is None or not _on_device(args):
        return None
    prim = n._prim
    x, g = contiguous(args[0]), contiguous(args[-1])
    w = contiguous(args[1]) if prim.has_weight else x  # (any pointer: not read)
    d = x.shape[-1]
    rows = x.size // d
    out = cp.empty(n._shape, cp.float32)
    threads = _row_block(rows)
    _kernel("norm_vjp", *types)((rows,), (threads,), x.data.ptr, w.data.ptr, g.data.ptr, out.data.ptr, rows * d, d,
                                prim.eps, int(prim.centered), int(prim.has_weight), int(prim.weight_rows))
    return out


def _native_rope(n, args: list):
    x = n._inputs[0]
    xt = FAST_STORAGE.get(x._dtype)
    if (xt is None or n._dtype is not x._dtype or n._prim.base is None or len(n._shape) < 2 or 0 in n._shape
            or not _on_device(args)):
        return None
    return _rope(n._prim, args[0], None if n._prim.offset is not None else args[1], xt)


def _native_sdpa(n, args: list):
    q = n._inputs[0]
    xt = FAST_STORAGE.get(q._dtype)
    if (xt is None or n._dtype is not q._dtype or any(y._dtype is not q._dtype for y in n._inputs[1:3])
            or not _on_device(args)):
        return None
    return _sdpa(n._prim, args[0], args[1], args[2], args[3:], xt, _widen)


#: primitive class -> ``(node, its inputs' data as stored) -> output or None``: the kernels above on float32 and
#: bfloat16 data as it is (the executor asks before it widens bfloat16 for the kernel table)
NATIVE = {fp.RMSNorm: _native_norm("rms_norm"), fp.LayerNorm: _native_norm("layer_norm"), fp.RoPE: _native_rope,
          fp.ScaledDotProductAttention: _native_sdpa, fp.NormVJP: _native_norm_vjp}


_FLOAT = tuple(FAST_STORAGE)  # the dtypes the kernels here take


def _all_float(n) -> bool:
    for x in n._inputs:
        if x._dtype not in _FLOAT:
            return False
    return n._dtype in _FLOAT


def _sdpa_captures(n) -> bool:
    ins = n._inputs
    for x in ins[:3]:
        if x._dtype not in _FLOAT:
            return False
    q, k, v = ins[0]._shape, ins[1]._shape, ins[2]._shape
    if len(q) != 4 or math.prod(q) == 0 or k[2] == 0:
        return False  # (the shared kernel's zeros)
    return sdpa_fits(n._prim, q, k, v) or cublas.available()


#: primitive class -> whether a node of it runs as one of the kernels above (a CUDA graph may capture those)
CAPTURE_IF = {
    fp.RMSNorm: lambda n: _all_float(n) and n._shape != () and math.prod(n._shape) > 0,
    fp.LayerNorm: lambda n: _all_float(n) and n._shape != () and math.prod(n._shape) > 0,
    fp.RoPE: lambda n: (n._prim.base is not None and n._inputs[0]._dtype in _FLOAT and n._dtype in _FLOAT
                        and len(n._shape) >= 2 and math.prod(n._shape) > 0),
    fp.ScaledDotProductAttention: _sdpa_captures,
    fp.NormVJP: lambda n: _norm_vjp_types(n) is not None,
}
