"""The kernel table on NumPy: the shared NumPy-API kernels, with overrides where NumPy's own function is slow."""

from __future__ import annotations

import math

import numpy as np

from ...primitives import elementwise as ew
from ...primitives import fast as fp
from ...primitives import indexing as ix
from ...primitives import reduction as r
from ...primitives import shape as sh
from ...primitives.conv import Convolution
from ...primitives.linalg import Matmul, matmul_operands
from ...primitives.misc import Compiled
from ...runtime import host_pool, threads
from ...runtime.executor import steps_kernel
from ..xp import bind
from ..xp import conv as xp_conv
from ..xp import fast as xp_fast
from ..xp import linalg as xp_linalg
from ..xp.elementwise import PLAIN_UFUNC
from . import bf16, blas, fold, jit
from .reduce_split import wide_sum

#: kernels that read two bfloat16 inputs' storage themselves (see bf16.py), ``fn(prim, x, y)``, or None where
#: they do not apply
BF16_STORAGE = {Matmul: lambda prim, x, y: bf16.matmul(*matmul_operands(prim, x, y))}
#: the CPU's least bound on a convolution chunk's temporaries: small enough that a GEMM reads the windows just
#: gathered from a core's caches (a chunk of the shared kernels' size goes to memory and back)
CONV_BUDGET = 1 << 20
#: the most: a convolution's windows are cut into about one chunk per core between the two (each chunk's Python
#: holds the GIL the others want, so on many cores fewer, larger chunks ran a CNN step faster: bench/cpu_knobs.py)
CONV_BUDGET_MAX = 8 << 20


def _leading_rows(x, axes: tuple):
    """C-contiguous float ``x`` as a matrix of ``rows`` rows over its leading ``axes`` (at least two rows, and
    columns: the axes it keeps), or None."""
    n = len(axes)
    if (x.__class__ is not np.ndarray or x.dtype.char not in "fd" or n == x.ndim or axes != tuple(range(n))
            or not x.flags.c_contiguous or not x.size):
        return None
    rows = math.prod(x.shape[:n])
    return x.reshape(rows, -1) if rows >= 2 else None


def _leading_sum(x, axes: tuple, keepdims: bool):
    """The float sum of ``x`` over ``axes`` when they are its leading axes (a bias's or a norm's gradient, a
    batch's statistics), as a matrix-vector product with ones, else None. NumPy reduces leading axes one row at
    a time, slowly for short rows; BLAS sums the same values in blocks (bench/train.py's CNN shows the gain)."""
    flat = _leading_rows(x, axes)
    if flat is None:
        return None
    kept = x.shape[len(axes):]
    s = _sum_rows(flat)
    return s.reshape((1,) * len(axes) + kept if keepdims else kept)


def _sum_rows(x):
    """The sum of C-contiguous matrix ``x``'s rows, ``(1, columns)``: alone, its product with a row of ones, on one
    thread or OpenBLAS's; where that product would be cut on the pool (work cut there lately) or runs on a pool
    thread, chunks of rows summed side by side instead, since products called from several threads at once run
    one at a time (bench/reduce.py's routes): by compiled column sums where Numba is installed and their kernel is
    ready (jit.py: float64 accumulators, no GIL held), else NumPy's reduction over wide rows."""
    pooled = threads.in_pool()
    if pooled or (threads.CORES > 1 and x.nbytes >= 2 * threads.CHUNK_BYTES and threads.split_lately(blas.QUIET)):
        s = jit.column_sums(x)
        if s is not None:
            return s.astype(x.dtype).reshape(1, -1)
        return wide_sum(x, split=not pooled)
    return blas.matmul(np.ones((1, x.shape[0]), x.dtype), x)


#: reductions of at most this many elements into each result run as binary ops (see _unrolled)
UNROLL_MAX = 16
#: ... when they have at least this many results (fewer: NumPy's one call is quicker than several)
UNROLL_MIN_RESULTS = 1024


def _unrolled(ufunc, x, axes: tuple, keepdims: bool):
    """``x`` reduced over ``axes`` by the binary ``ufunc`` as a chain of ``ufunc`` calls over its slices, an axis
    at a time, or None where NumPy's reduction is the better one. NumPy reduces a few elements at a time when the
    reduced axes are short (a pooling window's, a last axis of a few classes): 10-25x the time of binary ops over
    the same bytes. Results keep ``x``'s dtype, as the reductions' kernels give them. Where the first axis is
    kept and ``x`` is large, its chunks run on the pool, each chain writing its rows of the result."""
    if x.__class__ is not np.ndarray or x.dtype.kind not in "fiu":
        return None
    shape = x.shape
    k = 1
    for a in axes:
        k *= shape[a]
    if k < 2 or k > UNROLL_MAX or x.size < k * UNROLL_MIN_RESULTS:
        return None
    axes = tuple(sorted(axes))
    out = jit.window_reduce(ufunc, x, axes)  # (the same folds compiled: one loop, no GIL held)
    if out is not None:
        return np.expand_dims(out, axes) if keepdims else out
    bounds = threads.chunks(shape[0], x.nbytes // shape[0]) if axes[0] > 0 else ()
    if len(bounds) < 2:
        out = _chain(ufunc, x, axes)
    else:
        out = np.empty(tuple(d for a, d in enumerate(shape) if a not in axes), x.dtype)
        threads.map_chunks(lambda lo, hi: _chain(ufunc, x[lo:hi], axes, out[lo:hi]), bounds)
    return np.expand_dims(out, axes) if keepdims else out


def _chain(ufunc, x, axes: tuple, out=None):
    """``x`` reduced over the sorted ``axes`` by ``ufunc``, the last pass into ``out`` if given (see _unrolled)."""
    # From the first axis: its slices' inner runs are the longest, so the first pass, over all of x, is the
    # cheapest (a pooling window's last axis leaves runs of a few channels). Each pass drops an axis.
    last = len(axes) - 1
    for done, a in enumerate(axes):
        a -= done
        lead = (slice(None),) * a
        n = x.shape[a]
        into = out if done == last else None
        if n == 1:
            x = x[lead + (0,)]
            if into is not None:
                np.copyto(into, x)
                x = into
            continue
        acc = ufunc(x[lead + (0,)], x[lead + (1,)], out=into)
        for i in range(2, n):
            ufunc(acc, x[lead + (i,)], out=acc)  # (out by keyword: NumPy 2.4 deprecates it by position)
        x = acc
    return x


def _sum(prim, x):
    if len(prim.axes) == x.ndim:  # a full sum: NumPy's own, pairwise
        return np.sum(x, axis=prim.axes, dtype=x.dtype, keepdims=prim.keepdims)
    s = _unrolled(np.add, x, prim.axes, prim.keepdims)
    if s is None:
        s = _leading_sum(x, prim.axes, prim.keepdims)
    return np.sum(x, axis=prim.axes, dtype=x.dtype, keepdims=prim.keepdims) if s is None else s


def _unrolled_or(ufunc, fallback):
    """A reduction's kernel: ``_unrolled`` where it applies, else ``fallback``."""

    def reduce(prim, x):
        out = _unrolled(ufunc, x, prim.axes, prim.keepdims)
        return fallback(prim, x) if out is None else out

    return reduce


def _var(prim, x):
    # numpy.var's two passes (the mean, then the mean squared deviation), each sum over leading axes by BLAS; the
    # second a chunk of rows per core, in blocks whose deviations go to one scratch buffer per chunk, which stays
    # in the core's cache (a chunk-sized temporary went to memory and back)
    v = _var_compiled(prim, x)
    if v is not None:
        return v
    m = _leading_sum(x, prim.axes, True)
    if m is None:
        return np.var(x, axis=prim.axes, ddof=prim.ddof, keepdims=prim.keepdims)
    n = len(prim.axes)
    kept = x.shape[n:]
    rows = math.prod(x.shape[:n])
    np.true_divide(m, rows, out=m)
    mean = m.reshape(kept)
    flat = x.reshape((rows,) + kept)
    step = max(1, threads.block_elements() // max(math.prod(kept), 1))

    def squares(lo: int, hi: int):
        scratch = np.empty((min(step, hi - lo),) + kept, x.dtype)
        total = None
        for b0 in range(lo, hi, step):
            b1 = min(hi, b0 + step)
            d = scratch[:b1 - b0]
            np.subtract(flat[b0:b1], mean, out=d)
            np.multiply(d, d, out=d)
            s = _sum_rows(d.reshape(b1 - b0, -1))
            total = s if total is None else np.add(total, s, out=total)
        return total.reshape(kept)

    s = threads.add_in_order(threads.map_chunks(squares, threads.chunks(rows, x.nbytes // rows)))
    if prim.keepdims:
        s = s.reshape((1,) * n + s.shape)
    with np.errstate(divide="ignore", invalid="ignore"):  # (ddof >= rows: inf or NaN, as numpy.var gives)
        return np.true_divide(s, max(rows - prim.ddof, 0), out=s)


def _var_compiled(prim, x):
    """The variance over leading axes of a large C-contiguous float matrix by the compiled column sums (jit.py):
    the mean, then the squared deviations from it, both in float64 and rounded once; None where that route is
    not taken (not compiled yet, another layout, Numba missing)."""
    flat = _leading_rows(x, prim.axes)
    if flat is None:
        return None
    rows, n = flat.shape[0], len(prim.axes)
    total = jit.column_sums(flat)
    if total is None:
        return None
    squares = jit.column_sums(flat, total / rows)
    if squares is None:
        return None
    with np.errstate(divide="ignore", invalid="ignore"):  # (ddof >= rows: inf or NaN, as numpy.var gives)
        v = (squares / max(rows - prim.ddof, 0)).astype(x.dtype)
    kept = x.shape[n:]
    return v.reshape((1,) * n + kept if prim.keepdims else kept)


def _mean(prim, x):
    # numpy.mean wraps its sum in a few microseconds of Python (a loss's mean: 4x the sum itself). For float32 and
    # float64, its steps spelled out: the pairwise sum in x's dtype, then one division by the count as an integer,
    # the result cast back, so the same bits as numpy.mean.
    if x.dtype.char not in "fd":
        return np.mean(x, axis=prim.axes, keepdims=prim.keepdims)
    s = None
    if len(prim.axes) != x.ndim:  # (full: NumPy's own)
        s = _unrolled(np.add, x, prim.axes, prim.keepdims)
        if s is None:
            s = _leading_sum(x, prim.axes, prim.keepdims)
    if s is None:
        s = np.add.reduce(x, axis=prim.axes, keepdims=prim.keepdims)
    count = 1
    for a in prim.axes:
        count *= x.shape[a]
    count = np.intp(count)
    if s.__class__ is np.ndarray:
        return np.true_divide(s, count, out=s, casting="unsafe")
    return x.dtype.type(s / count)


def _convolution(prim, x, w):
    return xp_conv.convolution(np, prim, x, w, _conv_budget(prim, x, w), input_order=True, matmul=blas.matmul,
                               gather=threads.contiguous, parallel=blas.split, empty=host_pool.empty,
                               chunk_matmul=blas.chunk_matmul)


def _conv_budget(prim, x, w) -> int:
    """A chunk's bound on temporaries for convolution ``prim`` of ``x`` by ``w``: its windows' bytes over a
    multiple of the cores, within ``[CONV_BUDGET, CONV_BUDGET_MAX]``, rounded up to whole batch elements, so that
    the windows lowering's chunks of batch elements share the cores evenly (seven chunks on two cores kept one
    core waiting for the other's fourth)."""
    nd = x.ndim - 2
    n = x.shape[0]
    positions = n * math.prod(prim.out_size(a, x.shape[1 + a], w.shape[1 + a]) for a in range(nd))
    windows = positions * math.prod(w.shape[1:]) * prim.groups * x.itemsize
    if not windows:
        return CONV_BUDGET
    cores = threads.CORES
    chunks = cores * -(-windows // (cores * CONV_BUDGET_MAX))
    per_element = -(-windows // n)
    return max(CONV_BUDGET, min(CONV_BUDGET_MAX, -(-n // chunks) * per_element))


def _rms_norm(prim, x, *weight):
    return xp_fast.rms_norm(np, prim, x, *weight, parallel=threads.split)


def _layer_norm(prim, x, *params):
    return xp_fast.layer_norm(np, prim, x, *params, parallel=threads.split)


def _norm_vjp(prim, x, *rest):
    return xp_fast.norm_vjp(np, prim, x, *rest, parallel=threads.split)


def _matmul(prim, a, b):
    return xp_linalg.matmul(np, *matmul_operands(prim, a, b), blas.matmul)


def _reshape(prim, x):
    """Reshape's kernel: a view where the strides allow one, else a copy, large ones on the pool's threads
    (an attention's heads merged back into rows: NumPy copies on one core)."""
    if x.__class__ is np.ndarray and not x.flags.c_contiguous and x.nbytes >= 2 * threads.CHUNK_BYTES:
        try:
            return np.reshape(x, prim.shape, copy=False)
        except ValueError:  # (no view of these strides has that shape)
            return threads.contiguous(x).reshape(prim.shape)
        except TypeError:  # (NumPy before 2.1: no copy argument)
            pass
    return np.reshape(x, prim.shape)


_INT_OF_SIZE = {1: np.int8, 2: np.int16, 4: np.int32, 8: np.int64}
_SELECT_MIN_SIZE = 4096  # below this, numpy.where's own speed is not worth the extra steps


def _where(prim, c, x, y, out=None):
    # numpy.where branches on every element: on a mask with no pattern (a ReLU's gradient, a dropout mask) half
    # the branches mispredict, which costs 10-20x a branch-free select. The select on the values' bits,
    # y ^ ((x ^ y) & mask), with mask all ones where c holds, gives the same bits (NaNs, signed zeros) as
    # numpy.where. The mask is c's bytes negated as int8 (0 or -1), which the bitwise loops widen as they read.
    if c.__class__ is not np.ndarray or c.size < _SELECT_MIN_SIZE or c.dtype != bool:
        return _select_by_numpy(c, x, y, out)
    x, y = np.asarray(x), np.asarray(y)
    i = _INT_OF_SIZE.get(x.dtype.itemsize)
    if i is None or x.dtype != y.dtype or x.dtype.kind not in "fiub":
        return _select_by_numpy(c, x, y, out)
    mask = np.negative(c.view(np.int8))
    xb, yb = x.view(i), y.view(i)
    into = None if out is None else out.view(i)
    if yb.size == 1 and not yb.any():  # y a zero (a gradient's where(x > 0, g, 0)): the select is x & mask
        r = np.bitwise_and(xb, mask, out=into)
    else:
        r = np.bitwise_xor(xb, yb, out=into)
        np.bitwise_and(r, mask, out=r)
        np.bitwise_xor(r, yb, out=r)
    return out if out is not None else r.view(x.dtype)


def _select_by_numpy(c, x, y, out):
    r = np.where(c, x, y)
    if out is None:
        return r
    np.copyto(out, r, casting="unsafe")
    return out


_where.takes_out = True  # (a fused region's last step writes its chunk of the result in place)


#: a sum of at least this many rows into a table's rows takes the path of _add_rows
ADD_ROWS_MIN = 64
#: ... and adds rows a level at a time while a level has at least this many rows (the rest by ``numpy.add.at``)
LEVEL_MIN = 32


def _add_rows(out, index, values) -> None:
    """``numpy.add.at(out, index, values)`` for rows of ``out`` (``index`` integers in range, ``values`` of
    ``index.shape + out.shape[1:]``), in place. NumPy's ``add.at`` takes each element apart (an embedding's
    gradient: 5-10x the time of the adds). Here the rows are grouped by their repetition: the k-th rows for each
    index form a level with no index twice, added as one ``out[rows] += values``; the few rows of the last, thin
    levels go through ``add.at``. The rows for one index are added in their order."""
    flat = index.reshape(-1)
    rows = values.reshape(flat.size, -1)
    table = out.reshape(out.shape[0], -1)
    order = np.argsort(flat, kind="stable")
    ranked = flat[order]
    new = np.empty(flat.size, bool)
    new[0] = True
    np.not_equal(ranked[1:], ranked[:-1], out=new[1:])
    starts = np.flatnonzero(new)
    rank = np.arange(flat.size) - np.repeat(starts, np.diff(np.append(starts, flat.size)))
    by_level = order[np.argsort(rank, kind="stable")]  # level 0 (first rows of each index), then level 1...
    counts = np.bincount(rank)
    ends = np.cumsum(counts)
    lo = 0
    for level, hi in enumerate(ends):
        if counts[level] < LEVEL_MIN:
            break
        take = by_level[lo:hi]
        table[flat[take]] += rows[take]
        lo = hi
    if lo < flat.size:
        take = by_level[lo:]
        np.add.at(table, flat[take], rows[take])


def _scatter(fallback):
    """Scatter's kernel: sums into rows (an embedding's gradient) by ``_add_rows``, the rest as ``fallback``."""

    def scatter(prim, x, values, *index):
        if (prim.op == "add" and len(index) == 1 and prim.key == (ix.ARRAY,) and x.__class__ is np.ndarray
                and index[0].size >= ADD_ROWS_MIN and index[0].dtype.kind in "iu" and values.dtype == x.dtype
                and values.shape == index[0].shape + x.shape[1:]):
            i = index[0]
            n = x.shape[0]
            lowest = i.min()
            if lowest < 0:  # (NumPy's negative indices count from the end)
                i = np.where(i < 0, i + n, i)
                lowest = i.min()
            if lowest >= 0 and i.max() < n:  # (else the fallback raises NumPy's IndexError)
                out = x.copy()
                _add_rows(out, i, values)
                return out
        return fallback(prim, x, values, *index)

    return scatter


def _folding(kernel, ufunc):
    """A binary ufunc's kernel that folds a short broadcast operand into long rows (see fold.py)."""
    least = fold.MIN_SIZE

    def run(prim, x, y):
        if (x.__class__ is np.ndarray and y.__class__ is np.ndarray and x.shape != y.shape
                and (x.size >= least or y.size >= least)):
            out = fold.binary(ufunc, x, y)
            if out is not None:
                return out
        return kernel(prim, x, y)

    return run


def _attention(shared):
    """Attention's kernel: the ``shared`` kernel over chunks of the batch on the cores (see blas.py), or as is."""

    def run(prim, *args):
        out = blas.batched_attention(shared, prim, *args)
        return shared(prim, *args) if out is None else out

    return run


def make_table() -> dict:
    table = bind(np)
    for p in ew.BINARY.values():
        cls = type(p)
        if cls in PLAIN_UFUNC:
            table[cls] = _folding(table[cls], getattr(np, cls.fn))
    table[r.Sum] = _sum
    table[r.Mean] = _mean
    table[r.Var] = _var
    for cls, ufunc in ((r.Max, np.maximum), (r.Min, np.minimum), (r.Prod, np.multiply)):
        table[cls] = _unrolled_or(ufunc, table[cls])
    table[Convolution] = _convolution
    table[Matmul] = _matmul
    table[sh.Reshape] = _reshape
    table[ix.Scatter] = _scatter(table[ix.Scatter])
    table[ew.Where] = _where
    table[fp.ScaledDotProductAttention] = _attention(table[fp.ScaledDotProductAttention])
    table[fp.RMSNorm] = _rms_norm
    table[fp.LayerNorm] = _layer_norm
    table[fp.NormVJP] = _norm_vjp
    table[Compiled] = steps_kernel(table, np, BF16_STORAGE)
    return table
