"""The convolution kernel, lowered to BLAS products and written against NumPy's API, so that the same code runs
on CuPy (cuBLAS GEMMs). Layouts are MLX's: input ``(N, *spatial, C)``, weight ``(O, *kernel, C / groups)``.

Three lowerings, picked per call:

- *windows* (im2col): the padded input's windows, read through a strided view and gathered a chunk at a time,
  times the weight as a matrix: one GEMM per chunk (per group, a batched GEMM). The general case.
- *scatter* (col2im): for a dilated input with unit stride (transposed convolutions, input gradients of strided
  convolutions), each input position times every tap's weights in one GEMM, each tap's products then added into
  a strided slice of the output, so no product is taken with the zeros a dilation inserts.
- *taps*: depthwise convolutions (one input channel per group) as one multiply-add per kernel tap, since their
  products have too little depth for a GEMM. On NumPy, a block's taps are summed by one ``einsum``, over its
  part of the input padded in a buffer of its own.
- *positions*: a depthwise convolution whose kernel is larger than its output (a depthwise weight gradient) as
  one multiply and sum per output position.

float16 computes in float32 (bfloat16 comes widened to float32) and is rounded once at the end. Every temporary the
lowering adds (gathered windows, products) stays under ``BUDGET`` bytes: chunks run over batch elements, then
over the first spatial axis, and for kernels larger than the output (weight gradients) over the kernel's first
axis, accumulating.
"""

from __future__ import annotations

import math
from itertools import product

import numpy as np

from ...primitives.conv import Convolution
from . import each, kernel

#: the most bytes of temporaries one chunk may take
BUDGET = 64 << 20
#: kernels of more taps than this take the windows lowering even where the scatter one applies: the scatter adds
#: one strided slice per tap (a weight gradient's kernel is the whole output: thousands of small adds)
SCATTER_TAPS = 512


@kernel(Convolution)
def _convolution(xp, prim, x, w):
    return convolution(xp, prim, x, w)


def convolution(xp, prim: Convolution, x, w, budget: int | None = None, input_order: bool = False,
                matmul=None, gather=None, parallel=None, empty=None, chunk_matmul=None):
    """``prim`` applied to input ``x`` and weight ``w`` (arrays of ``xp``), with temporaries under ``budget``
    bytes (default ``BUDGET``). With ``input_order``, a weight gradient's windows are gathered in the input's
    memory order (see ``_windows_by_input``). ``matmul(a, b, out=None)``: the products (default ``xp.matmul``;
    the GPU's calls cuBLAS itself, which a CUDA graph can capture). ``gather(view)``: a C-contiguous copy of a
    view, the windows' (default ``xp.ascontiguousarray``; the GPU's copies views of rows by a kernel of umx's
    own). ``parallel(fn, n)``: ``fn(lo, hi)`` over chunks of ``range(n)`` at once, or None where it cannot (the
    CPU's runs them on its cores); the windows lowering's chunks then run at once, each with ``xp``'s own
    product and copy. ``empty(shape, dtype)``: the depthwise lowering's output on NumPy (default ``np.empty``;
    the CPU's takes large ones from its pool of reused host buffers). ``chunk_matmul(a, b, out=None)``: the product
    a chunk that ``parallel`` runs calls (default ``xp.matmul``)."""
    budget = BUDGET if budget is None else budget
    mm = matmul or xp.matmul
    gather = gather or xp.ascontiguousarray
    dtype = x.dtype
    work = xp.float32 if dtype == xp.float16 else dtype
    x = x.astype(work, copy=False)
    w = w.astype(work, copy=False)
    nd = x.ndim - 2
    kernel_shape = w.shape[1:-1]
    out_shape = (x.shape[0],) + tuple(prim.out_size(a, x.shape[1 + a], kernel_shape[a]) for a in range(nd)) + \
        (w.shape[0],)
    if 0 in out_shape or w.shape[-1] == 0:
        return xp.zeros(out_shape, dtype)
    if prim.flip:
        w = w[(slice(None),) + (slice(None, None, -1),) * nd]
    depthwise = prim.groups > 1 and w.shape[-1] == 1
    dilated = any(d > 1 for d in prim.input_dilation)
    if dilated and not depthwise and all(s == 1 for s in prim.stride) and math.prod(kernel_shape) <= SCATTER_TAPS:
        out = _scatter(xp, prim, x, w, out_shape, budget, mm)
    elif (depthwise and xp is np and prim.stride[-1] == 1 and not _wide(w, out_shape)
          and 0 < math.prod(kernel_shape) * out_shape[-1] * x.itemsize <= budget):
        lo = prim.padding_lo
        if dilated:  # (dilated and padded here, at once: the blocks then read it in place)
            x, lo = _padded(xp, x, lo, prim.padding_hi, prim.input_dilation), (0,) * nd
        out = _taps_summed(x, w, lo, prim.stride, prim.kernel_dilation, prim.groups, out_shape, budget, parallel,
                           empty or np.empty)
    else:
        padded = _padded(xp, x, prim.padding_lo, prim.padding_hi, prim.input_dilation, input_order)
        if depthwise:
            lower = _positions if _wide(w, out_shape) else _taps
        elif (input_order and prim.groups == 1 and _wide(w, out_shape)
              and padded.strides[-1] != padded.itemsize):
            lower = _windows_by_input
        else:
            lower = _windows
        out = lower(xp, padded, w, prim.stride, prim.kernel_dilation, prim.groups, out_shape, budget, mm, gather,
                    parallel, chunk_matmul)
    return out.astype(dtype, copy=False)


def _kept(lo: int, step: int, size: int, first: int, stop: int) -> tuple:
    """The ``j`` in ``[first, stop)`` whose position ``lo + j * step`` lies in ``[0, size)``: ``(j0, j1)``, empty
    when ``j0 >= j1``."""
    j0 = max(first, -(lo // step) if lo < 0 else 0)
    j1 = min(stop, (size - 1 - lo) // step + 1 if size > lo else 0)
    return j0, j1


def _padded(xp, x, lo: tuple, hi: tuple, dilation: tuple, keep_order: bool = False):
    """``x`` dilated and padded along its spatial axes (a view of ``x`` where that only crops it); with
    ``keep_order``, laid out in memory in the order of ``x``'s axes there."""
    if all(d == 1 for d in dilation) and all(p <= 0 for p in lo + hi):
        return x[(slice(None),) + tuple(slice(-a, s + b) for a, b, s in zip(lo, hi, x.shape[1:-1])) + (slice(None),)]
    sizes, src, dst = [], [], []
    for a, size in enumerate(x.shape[1:-1]):
        full = ((size - 1) * dilation[a] + 1 if size else 0) + lo[a] + hi[a]
        j0, j1 = _kept(lo[a], dilation[a], full, 0, size)
        sizes.append(full)
        j1 = max(j0, j1)
        src.append(slice(j0, j1))
        dst.append(slice(lo[a] + j0 * dilation[a], lo[a] + j1 * dilation[a], dilation[a]))
    shape = (x.shape[0], *sizes, x.shape[-1])
    if keep_order:
        order = sorted(range(x.ndim), key=lambda a: -x.strides[a])  # (outermost first)
        out = xp.zeros(tuple(shape[a] for a in order), x.dtype).transpose(tuple(order.index(a)
                                                                            for a in range(x.ndim)))
    else:
        out = xp.zeros(shape, x.dtype)
    out[(slice(None), *dst, slice(None))] = x[(slice(None), *src, slice(None))]
    return out


def _blocks(n: int, rows: int, unit: int, budget: int):
    """``(n0, n1, r0, r1)`` chunks of ``n`` batch elements of ``rows`` rows, ``unit`` bytes a row: whole batch
    elements while one fits in ``budget``, else rows of one element."""
    unit = max(unit, 1)
    if rows * unit <= budget:
        step = max(1, budget // max(rows * unit, 1))
        for n0 in range(0, n, step):
            yield n0, min(n, n0 + step), 0, rows
        return
    step = max(1, budget // unit)
    for i in range(n):
        for r0 in range(0, rows, step):
            yield i, i + 1, r0, min(rows, r0 + step)


def _windows(xp, x, w, stride: tuple, dilation: tuple, groups: int, out_shape: tuple, budget: int, mm, gather,
             parallel=None, chunk_mm=None):
    """The windows (im2col) lowering of a convolution of the padded input ``x``."""
    n, *out_sp, o = out_shape
    k_sp, cg = w.shape[1:-1], w.shape[-1]
    og = o // groups
    nd = len(k_sp)
    s = x.strides
    view = xp.lib.stride_tricks.as_strided(
        x, (n, *out_sp, *k_sp, groups, cg),
        (s[0], *(s[1 + a] * stride[a] for a in range(nd)), *(s[1 + a] * dilation[a] for a in range(nd)),
         cg * s[-1], s[-1]))
    item = x.itemsize
    # bytes of gathered windows per output position and kernel row (one index of the kernel's first axis)
    per_row = groups * cg * math.prod(k_sp[1:]) * item
    positions = n * math.prod(out_sp)
    inner = math.prod(out_sp[1:])
    # A kernel larger than the output (a weight gradient's) is cut along its first axis, all rows at once: the
    # weight is then read once, and the small output is what each chunk adds into.
    wide = k_sp[0] * per_row > positions * item
    rows_wanted = positions if wide else inner
    kb = max(1, min(k_sp[0], budget // max(1, per_row * rows_wanted)))
    wg = w.reshape(groups, og, *k_sp, cg)
    mats = [wg[:, :, k0:k0 + kb].reshape(groups, og, -1).transpose(0, 2, 1) for k0 in range(0, k_sp[0], kb)]
    out = xp.empty(out_shape, x.dtype)

    def block(n0: int, n1: int, r0: int, r1: int, mm, gather) -> None:
        dest = out[n0:n1, r0:r1]
        rows = dest.size // max(o, 1)
        flat = dest.reshape(rows, o)
        for i, k0 in enumerate(range(0, k_sp[0], kb)):
            part = view[(slice(n0, n1), slice(r0, r1)) + (slice(None),) * (nd - 1) + (slice(k0, k0 + kb),)]
            if groups == 1:
                prod_ = mm(gather(part).reshape(rows, -1), mats[i][0], out=None if i else flat)
                if i:
                    flat += prod_
                continue
            cols = gather(xp.moveaxis(part, -2, 0)).reshape(groups, rows, -1)
            prod_ = xp.moveaxis(mm(cols, mats[i]), 0, 1).reshape(rows, o)
            if i:
                flat += prod_
            else:
                flat[...] = prod_

    # (blocks write disjoint parts of the output: they may run at once, each with the plain product and copy)
    each(list(_blocks(n, out_sp[0], inner * kb * per_row, budget)), lambda b: block(*b, mm, gather), parallel,
         lambda b: block(*b, chunk_mm or xp.matmul, xp.ascontiguousarray))
    return out


def _wide(w, out_shape: tuple) -> bool:
    """Whether the kernel is larger than the output (a weight gradient's: the forward's output is its kernel)."""
    return math.prod(w.shape[1:-1]) > math.prod(out_shape[1:-1])


def _windows_by_input(xp, x, w, stride: tuple, dilation: tuple, groups: int, out_shape: tuple, budget: int,
                      mm, gather, parallel=None, chunk_mm=None):
    """The windows lowering of a weight gradient (one group) whose input's channel axis, the one the product
    contracts, is a batch axis transposed there (strided in memory). ``_windows`` would gather along it an
    element at a time; here the windows are gathered in the input's memory order, with the output's batch
    (the forward's input channels) innermost: the forward convolution's own im2col, the product contracting
    its rows. Chunks run over the contracted axis, accumulating."""
    n, *out_sp, o = out_shape
    k_sp, c = w.shape[1:-1], w.shape[-1]
    nd = len(k_sp)
    s = x.strides
    taps, positions = math.prod(k_sp), math.prod(out_sp)
    view = xp.lib.stride_tricks.as_strided(  # (c, *kernel, *output positions, n)
        x, (c, *k_sp, *out_sp, n),
        (s[-1], *(s[1 + a] * dilation[a] for a in range(nd)), *(s[1 + a] * stride[a] for a in range(nd)), s[0]))
    weights = w.transpose(nd + 1, *range(1, nd + 1), 0).reshape(c * taps, o)  # (c, *kernel, o): the windows' rows
    step = max(1, budget // max(1, taps * positions * n * x.itemsize))

    def accumulate(lo: int, hi: int, mm, gather):  # the product over channels [lo, hi), a chunk at a time
        acc = None
        for c0 in range(lo, hi, step):
            c1 = min(hi, c0 + step)
            cols = gather(view[c0:c1]).reshape((c1 - c0) * taps, positions * n)
            part = mm(cols.T, weights[c0 * taps:c1 * taps])
            acc = part if acc is None else xp.add(acc, part, out=acc)
        return acc

    # (with ``parallel``, runs of chunks at once, each with the plain product and copy, their sums added)
    acc = _summed(xp, parallel, -(-c // step),
                  lambda lo, hi: accumulate(lo * step, min(c, hi * step), chunk_mm or xp.matmul,
                                            xp.ascontiguousarray),
                  lambda: accumulate(0, c, mm, gather))
    return gather(xp.moveaxis(acc.reshape(*out_sp, n, o), -2, 0))


def _taps(xp, x, w, stride: tuple, dilation: tuple, groups: int, out_shape: tuple, budget: int, mm=None,
          gather=None, parallel=None, chunk_mm=None):
    """The depthwise lowering (one input channel per group): a multiply-add per kernel tap, over blocks of the
    output that stay in cache (at once where ``parallel`` runs them)."""
    n, *out_sp, o = out_shape
    k_sp = w.shape[1:-1]
    if o > groups:  # each input channel feeds o / groups outputs: repeat it, so each output has its own column
        x = xp.repeat(x, o // groups, axis=-1)
    taps = list(product(*(range(k) for k in k_sp)))
    if not taps:
        return xp.zeros(out_shape, x.dtype)
    wt = w.reshape(o, -1)
    weights = [wt[:, t] for t in range(len(taps))]
    item = x.itemsize
    inner = math.prod(out_sp[1:])
    rows = budget // max(inner * o * item, 1)  # (a block's rows of its first spatial axis, where it cuts them)
    out = xp.empty(out_shape, x.dtype)

    def block(n0: int, n1: int, r0: int, r1: int) -> None:
        dest = out[n0:n1, r0:r1]
        scratch = xp.empty_like(dest)
        for t, tap in enumerate(taps):
            key = [slice(n0, n1)]
            for a, k in enumerate(tap):
                start = k * dilation[a] + (r0 * stride[a] if a == 0 else 0)
                stop = start + ((r1 - r0 if a == 0 else out_sp[a]) - 1) * stride[a] + 1
                key.append(slice(start, stop, stride[a]))
            xp.multiply(x[tuple(key)], weights[t], out=dest if t == 0 else scratch)
            if t:
                dest += scratch

    # (blocks write disjoint parts of the output: they may run at once)
    each(list(_blocks(n, out_sp[0], inner * o * item, rows * inner * o * item)), lambda b: block(*b), parallel)
    return out


def _taps_summed(x, w, lo: tuple, stride: tuple, dilation: tuple, groups: int, out_shape: tuple, budget: int,
                 parallel=None, empty=np.empty):
    """The depthwise lowering on NumPy of input ``x`` padded by ``lo`` (a unit stride along the last spatial axis):
    per block of the output, its sum over the kernel's taps as one ``einsum`` (a multiply-add per tap in one pass)
    over the block's part of the input, padded into a buffer of its own (or read in place where it needs no
    padding), at once where ``parallel`` runs them."""
    n, *out_sp, o = out_shape
    k_sp = w.shape[1:-1]
    nd = len(k_sp)
    item, s = x.itemsize, x.strides
    rep = o // groups
    # the windows' extent along each spatial axis of the padded input (a block's along the first: its rows')
    ext = [(m - 1) * st + (k - 1) * d + 1 for m, st, k, d in zip(out_sp, stride, k_sp, dilation)]
    span = (k_sp[0] - 1) * dilation[0] + 1
    # Along the last spatial axis the windows are contiguous with their channels: that axis and the channels are
    # one axis, taken in runs of ``last`` positions, so einsum's inner loop runs along a run, not o elements; the
    # weights are repeated along one. (For one spatial axis, a block is a run.)
    last = max(1, min(out_sp[-1], budget // (math.prod(k_sp) * o * item)))
    kern = np.broadcast_to(np.moveaxis(w[..., 0], 0, -1)[..., None, :], (*k_sp, last, o)).reshape(*k_sp, last * o)
    inner = math.prod(ext[1:]) * o * item  # a buffer's bytes per row (an index of its first spatial axis)
    rows = max(1, (budget // inner - span) // stride[0] + 1)
    if nd == 1:
        rows = min(rows, last)
    if rows >= out_sp[0]:  # whole batch elements, as many as fit
        step = max(1, budget // (ext[0] * inner))
        blocks = [(n0, min(n, n0 + step), 0, out_sp[0]) for n0 in range(0, n, step)]
    else:
        blocks = [(i, i + 1, r0, min(out_sp[0], r0 + rows)) for i in range(n) for r0 in range(0, out_sp[0], rows)]
    lead = "pqr"[:nd - 1]
    kernel = "ijk"[:nd]
    terms = f"n{lead}{kernel}c,{kernel}c->n{lead}c"  # (batch, outer output axes, kernel, last axis and channels)
    out = empty((n, *out_sp[:-1], out_sp[-1] * o), x.dtype)
    in_place = rep == 1 and s[-1] == item and s[-2] == o * item

    def block(n0: int, n1: int, r0: int, r1: int) -> None:
        shape = (n1 - n0, (r1 - r0 - 1) * stride[0] + span, *ext[1:])
        src, dst = [slice(n0, n1)], [slice(None)]
        for a in range(nd):
            off = lo[a] - (r0 * stride[0] if a == 0 else 0)  # (where the input's first index lands in the buffer)
            j0, j1 = _kept(off, 1, shape[1 + a], 0, x.shape[1 + a])
            j1 = max(j0, j1)
            src.append(slice(j0, j1))
            dst.append(slice(off + j0, off + j1))
        part = x[tuple(src)]
        if in_place and part.shape[1:-1] == shape[1:]:
            buf = part
        else:
            buf = np.empty((*shape, groups, rep), x.dtype)
            for a in range(1, nd + 1):  # (zeros where the input does not reach: the padding)
                buf[(*dst[:a], slice(0, dst[a].start))] = 0
                buf[(*dst[:a], slice(dst[a].stop, None))] = 0
            for k in range(rep):  # (each input channel once per output it feeds: a broadcast copy loops rep long)
                np.copyto(buf[(*dst, slice(None), k)], part)
            buf = buf.reshape(*shape, o)
        b = buf.strides
        positions = out_sp[-1] if nd > 1 else r1 - r0
        view = np.lib.stride_tricks.as_strided(
            buf, (n1 - n0, *(r1 - r0, *out_sp[1:-1])[:nd - 1], *k_sp, positions * o),
            (b[0], *(b[1 + a] * stride[a] for a in range(nd - 1)), *(b[1 + a] * dilation[a] for a in range(nd)),
             item))
        dest = out[n0:n1, r0:r1] if nd > 1 else out[n0:n1, r0 * o:r1 * o]
        for p0 in range(0, positions, last):
            p1 = min(positions, p0 + last)
            np.einsum(terms, view[..., p0 * o:p1 * o], kern[..., :(p1 - p0) * o], out=dest[..., p0 * o:p1 * o])

    # (blocks write disjoint parts of the output: they may run at once, einsum letting go of the GIL)
    each(blocks, lambda b: block(*b), parallel)
    return out.reshape(out_shape)


def _positions(xp, x, w, stride: tuple, dilation: tuple, groups: int, out_shape: tuple, budget: int, mm=None,
               gather=None, parallel=None, chunk_mm=None):
    """The depthwise lowering of a kernel larger than its output (a depthwise convolution's weight gradient, the
    batch an outer spatial axis: see ``transforms/_rules_conv.py``): per output position, the input's window
    times the kernel, summed over the window, a block of the kernel's first axis at a time (at once where
    ``parallel`` runs them)."""
    n, *out_sp, o = out_shape
    k_sp = w.shape[1:-1]
    nd = len(k_sp)
    if o > groups:  # (as in _taps)
        x = xp.repeat(x, o // groups, axis=-1)
    kern = xp.moveaxis(w[..., 0], 0, -1)  # (*kernel, o): channels last, as the input's (the cotangent's layout)
    item = x.itemsize
    step = max(1, budget // max(math.prod(k_sp[1:]) * o * item, 1))  # kernel rows a block holds
    positions = list(product(*(range(m) for m in out_sp)))
    items = [(b, k0, min(k_sp[0], k0 + step), p) for b in range(n) for k0 in range(0, k_sp[0], step)
             for p in range(len(positions))]  # (a block's positions in turn: its kernel rows stay in cache)

    def sums(lo: int, hi: int):
        """The window sums of ``items[lo:hi]``, ``(n, positions, o)``."""
        acc = xp.zeros((n, len(positions), o), x.dtype)
        scratch = ones = None
        for b, k0, k1, p in items[lo:hi]:
            part = kern[k0:k1]
            rows = part.size // o
            if scratch is None or scratch.shape != part.shape:
                scratch = xp.empty(part.shape, x.dtype)
                ones = xp.ones((1, rows), x.dtype)
            key = [b]
            for a in range(nd):
                start = positions[p][a] * stride[a] + (k0 * dilation[a] if a == 0 else 0)
                count = k1 - k0 if a == 0 else k_sp[a]
                key.append(slice(start, start + (count - 1) * dilation[a] + 1, dilation[a]))
            xp.multiply(x[tuple(key)], part, out=scratch)
            acc[b, p] += xp.matmul(ones, scratch.reshape(rows, o))[0]  # (the sum over rows, as BLAS blocks it)
        return acc

    return _summed(xp, parallel, len(items), sums, lambda: sums(0, len(items))).reshape(out_shape)


def _summed(xp, parallel, n: int, at_once, alone):
    """``alone()``; or, where a backend's ``parallel`` runs ``at_once(lo, hi)`` over chunks of ``range(n)`` at
    once, the sum of their results."""
    partials = None if n < 2 or parallel is None else parallel(at_once, n)
    if partials is None:
        return alone()
    acc = partials[0]
    for part in partials[1:]:
        xp.add(acc, part, out=acc)
    return acc


def _scatter(xp, prim: Convolution, x, w, out_shape: tuple, budget: int, mm):
    """The scatter (col2im) lowering of a convolution with a dilated input and unit stride: output position
    ``j * input_dilation + padding_lo - k * kernel_dilation`` takes ``x[j] @ w[k]``."""
    n, *in_sp, c = x.shape
    o, *k_sp, cg = w.shape
    groups = prim.groups
    og = o // groups
    taps = math.prod(k_sp)
    # every tap's weights side by side: (groups, cg, taps * og)
    wcat = w.reshape(groups, og, taps, cg).transpose(0, 3, 2, 1).reshape(groups, cg, taps * og)
    out = xp.zeros(out_shape, x.dtype)
    inner = math.prod(in_sp[1:])
    lo, step, kd = prim.padding_lo, prim.input_dilation, prim.kernel_dilation
    for n0, n1, j0, j1 in _blocks(n, in_sp[0], inner * taps * o * x.itemsize, budget):
        part = x[n0:n1, j0:j1]
        rows = part.size // max(c, 1)
        if groups == 1:
            prods = mm(part.reshape(rows, c), wcat[0])
        else:
            cols = xp.moveaxis(part.reshape(rows, groups, cg), 1, 0)
            prods = xp.moveaxis(mm(cols, wcat).reshape(groups, rows, taps, og), 0, 2)
        prods = prods.reshape(n1 - n0, j1 - j0, *in_sp[1:], *k_sp, o)
        for tap in product(*(range(k) for k in k_sp)):
            src, dst = [slice(None)], [slice(n0, n1)]
            for a, k in enumerate(tap):
                off = lo[a] - k * kd[a]
                first, stop = (j0, j1) if a == 0 else (0, in_sp[a])
                a0, a1 = _kept(off, step[a], out_shape[1 + a], first, stop)
                if a0 >= a1:
                    break
                src.append(slice(a0 - first, a1 - first))
                dst.append(slice(off + a0 * step[a], off + (a1 - 1) * step[a] + 1, step[a]))
            else:
                out[tuple(dst)] += prods[(*src, *tap)]
    return out
