"""Large reductions split across cores.

NumPy reduces on one core; it releases the GIL inside its loops, so chunks of one large input reduce on the shared
pool's threads at once. Runs of adjacent reduced (or kept) axes of a C-contiguous input are merged first, which
leaves one axis to cut: the first that gives every core a chunk. Cutting a kept axis gives pieces of the result,
joined; cutting a reduced axis gives partial results, which one more reduction of the same kind combines (a sum
of partial sums, a max of partial maxima, the log-sum-exp of partial log-sum-exps). A mean combines partial sums;
an arg-reduction picks the best partial extremum. Small, empty or non-contiguous inputs go to the kernel as is.
"""

from __future__ import annotations

import numpy as np

from ...primitives import reduction as r
from ...runtime import threads
from ...runtime.threads import map_chunks

# Work is counted in elements of a float32 sum: below MIN_SIZE the hand-off to the pool costs more than the cores
# save (bench/reduce.py). Extrema, logical and integer reductions run at memory speed, cheaper per element than a
# float32 sum; float16 ones convert each element, dearer (their weights below).
#: reductions of less work run on one core
MIN_SIZE = 1 << 20

# The reductions whose partial results reduce again with the same primitive (mean and the arg-reductions have
# rules of their own).
_ASSOCIATIVE = (r.Sum, r.Prod, r.Max, r.Min, r.All, r.Any, r.LogSumExp)
# Float reductions that NumPy runs as pairwise sums (or exponentials): slower per element than the others.
_SUMMING = (r.Sum, r.Prod, r.Mean, r.LogSumExp)


#: the least width of the rows NumPy's reduction over rows is given: it adds one row to the sums at a time, and a
#: short row (a batch norm's 32 channels) costs nearly what a wide one does
WIDE_ROW = 256


def _side_by_side(columns: int) -> int:
    """How many rows of ``columns`` elements one wide row holds (1 for rows already wide)."""
    return max(1, WIDE_ROW // max(columns, 1))


def _wide_partial(x, g: int):
    """The sums of matrix ``x``'s rows taken ``g`` side by side, ``(g * columns,)`` (its rows a multiple of ``g``)."""
    return np.add.reduce(x.reshape(x.shape[0] // g, g * x.shape[1]), axis=0)


def _fold(partial, x, g: int, whole: int):
    """``(1, columns)``: the ``g`` side-by-side sums in ``partial`` added, and ``x``'s rows from ``whole`` on."""
    c = x.shape[1]
    s = np.add.reduce(partial.reshape(g, c), axis=0, keepdims=True)
    if whole < x.shape[0]:
        np.add(s, np.add.reduce(x[whole:], axis=0, keepdims=True), out=s)
    return s


def wide_sum(x, split: bool = False):
    """The sum of C-contiguous matrix ``x``'s rows, ``(1, columns)``, by NumPy's reduction over wide rows; with
    ``split``, in chunks of rows on the pool, their partial sums added in order."""
    g = _side_by_side(x.shape[1])
    whole = x.shape[0] - x.shape[0] % g
    if not whole:
        return np.add.reduce(x, axis=0, keepdims=True)
    n = whole // g  # (wide rows)
    bounds = threads.chunks(n, g * x.strides[0]) if split and n > 1 else ()
    if len(bounds) < 2:
        return _fold(_wide_partial(x[:whole], g), x, g, whole)
    partials = threads.map_chunks(lambda lo, hi: _wide_partial(x[lo * g:hi * g], g), bounds)
    return _fold(threads.add_in_order(partials), x, g, whole)


def split_reductions(table: dict) -> dict:
    """Wrap the reduction kernels of CPU kernel table ``table`` (in place) so that large inputs use all cores."""
    for cls in (*_ASSOCIATIVE, r.Mean, r.ArgMax, r.ArgMin):
        table[cls] = _splitting(table[cls])
    return table


def _work(prim, x) -> int:
    """The work of reducing ``x``, in elements of a float32 sum that take NumPy about as long."""
    if x.dtype == np.float16:
        return x.size * 8
    if x.dtype.kind in "fc" and prim.__class__ in _SUMMING:
        return x.size
    return x.nbytes // 8


def _splitting(kernel):
    def run(prim, x):
        if x.__class__ is not np.ndarray or not x.size or threads.CORES < 2 or not x.flags.c_contiguous:
            return kernel(prim, x)
        work = _work(prim, x)
        if work < MIN_SIZE:
            return kernel(prim, x)
        axes = prim.axes if isinstance(prim, r.Reduce) else (prim.axis,)
        shape, reduced = _merge(x.shape, axes)
        if not any(reduced):  # only axes of length 1 reduce: nothing to cut
            return kernel(prim, x)
        out = _run_split(kernel, prim, x.reshape(shape), reduced, work)
        kept = tuple(1 if i in axes else n for i, n in enumerate(x.shape) if prim.keepdims or i not in axes)
        out = out.reshape(kept)
        return out if kept else out[()]  # a full reduction gives a NumPy scalar, as the kernel does

    return run


def _merge(shape: tuple, axes: tuple) -> tuple:
    """``shape`` with runs of adjacent reduced or kept axes merged and axes of length 1 dropped, and whether each
    merged axis is reduced. A view of a C-contiguous array takes the merged shape."""
    dims: list = []
    reduced: list = []
    for i, n in enumerate(shape):
        if n == 1:
            continue
        red = i in axes
        if reduced and reduced[-1] == red:
            dims[-1] *= n
        else:
            dims.append(n)
            reduced.append(red)
    return tuple(dims), reduced


def _run_split(kernel, prim, x, reduced: list, work: int):
    """The reduction of ``x`` (merged shape; ``reduced`` flags its axes) with reduced axes kept as length 1."""
    parts = max(2, threads.parts(work * 4))  # (work counts float32 elements)
    # The first axis long enough to give each core a chunk, else the longest.
    axis = next((i for i, n in enumerate(x.shape) if n >= parts), None)
    if axis is None:
        axis = int(np.argmax(x.shape))
        parts = x.shape[axis]
    n = x.shape[axis]
    step = -(-n // parts)
    bounds = threads.bounds(n, step)
    axes = tuple(i for i, red in enumerate(reduced) if red)
    cls = prim.__class__
    lead = (slice(None),) * axis

    if not reduced[axis]:
        part = cls(axes[0], True) if issubclass(cls, r.ArgReduce) else cls(axes, True)
        return np.concatenate(map_chunks(lambda lo, hi: kernel(part, x[lead + (slice(lo, hi),)]), bounds), axis=axis)
    if cls is r.Mean:
        return _mean(x, axes, axis, lead, bounds)
    if issubclass(cls, r.ArgReduce):
        return _arg(kernel, cls, x, axes[0], lead, bounds)
    partials = map_chunks(lambda lo, hi: kernel(cls(axes, True), x[lead + (slice(lo, hi),)]), bounds)
    return kernel(cls((axis,), True), np.concatenate(partials, axis=axis))


def _mean(x, axes: tuple, axis: int, lead: tuple, bounds: list):
    # As numpy.mean: half precision accumulates in float32, integers in float64; floats keep their dtype.
    dtype = x.dtype if x.dtype.kind in "fc" else np.dtype(np.float64)
    acc = np.float32 if dtype == np.float16 else dtype
    if x.ndim == 2 and axes == (0,) and axis == 0 and x.dtype == acc:  # (a leading axis: rows side by side)
        partials = map_chunks(lambda lo, hi: wide_sum(x[lo:hi]), bounds)
    else:
        partials = map_chunks(lambda lo, hi: np.sum(x[lead + (slice(lo, hi),)], axis=axes, dtype=acc,
                                                    keepdims=True), bounds)
    total = np.sum(np.concatenate(partials, axis=axis), axis=axis, keepdims=True)
    count = 1
    for i in axes:
        count *= x.shape[i]
    return np.true_divide(total, count, out=total).astype(dtype, copy=False)


def _arg(kernel, cls, x, axis: int, lead: tuple, bounds: list):
    """Arg-reduction over ``axis``, cut along it: each chunk's index and extremum; the first chunk holding the best
    extremum (NaN counts as best, as in NumPy) gives the index, so ties go to the lowest index."""

    def part(lo, hi):
        idx = kernel(cls(axis, True), x[lead + (slice(lo, hi),)]).astype(np.int64)
        return idx + lo, np.take_along_axis(x[lead + (slice(lo, hi),)], idx, axis=axis)

    results = map_chunks(part, bounds)
    idx = np.concatenate([i for i, _ in results], axis=axis)
    vals = np.concatenate([v for _, v in results], axis=axis)
    best = kernel(cls(axis, True), vals).astype(np.intp)
    return np.take_along_axis(idx, best, axis=axis).astype(np.uint32)


