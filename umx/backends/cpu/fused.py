"""Running fused elementwise regions on the CPU: one task, no intermediate arrays kept, and big regions split
across cores.

A region's program is compiled once per structure into steps that call NumPy ufuncs directly, writing each
intermediate into the buffer of the one it replaces (every intermediate has exactly one reader). Regions of at
least ``SPLIT_MIN_SIZE`` elements run chunk by chunk on a thread pool, NumPy releasing the GIL inside its loops
so that the chunks run on all cores: flat ranges of elements where every leaf has the result's shape, else ranges
of the result's first long enough axis (a leaf broadcast along it is read whole by every chunk). Each chunk goes
through the whole program a block of ``threads.block_elements()`` elements at a time, so that its intermediates stay in
cache.
"""

from __future__ import annotations

import operator
import signal
import threading
from itertools import repeat
from sys import getrefcount
from threading import get_ident

try:
    import _signal  # the C module, as the scheduler uses it: signal.py's enum conversions cost microseconds
except ImportError:  # another Python implementation
    _signal = signal

import numpy as np

from ...dtypes import bfloat16, narrow_bf16, round_bf16, widen_bf16
from ...runtime import host_pool, threads
from ...runtime.executor import conform_to
from ...runtime.fusion import SPLIT_MIN_SIZE
from ...runtime.refs import UNHELD_DATA, UNHELD_SLOT
from ...runtime.threads import map_chunks
from ..xp.elementwise import PLAIN_UFUNC
from . import fold, jit
from .donate import FINISHED, buffer_of, exact_dtypes, traced

_compiled: dict = {}
_MAIN = threading.main_thread().ident
_SIGINT = int(signal.SIGINT)


def _bound(kernel, prim):
    """``kernel`` with its primitive bound: a step callable like a ufunc (with ``out=`` where the kernel takes
    it: its ``takes_out``)."""
    if getattr(kernel, "takes_out", False):
        def step(*xs, out=None):
            return kernel(prim, *xs, out=out)

        step.takes_out = True
        return step

    def step(*xs):
        return kernel(prim, *xs)

    return step


def _compile(f, table) -> list:
    """Steps ``(fn, args, in_place_arg, bf16)`` for the program of Fused ``f`` (``bf16``: the step's result is a
    bfloat16, held between steps as float32 rounded to bfloat16's values, the last step's as its storage)."""
    steps = []
    n_leaves = len(f.leaves)
    sides = f.sides
    for (prim, args), node in zip(f.program, f.nodes):
        ufunc = getattr(np, prim.fn) if prim.__class__ in PLAIN_UFUNC else None
        in_place = -1
        if isinstance(ufunc, np.ufunc):
            fn = ufunc
            for a in args:  # an intermediate of the output's dtype can take the result (not a side output)
                if (a >= n_leaves and f.nodes[a - n_leaves]._dtype.compute == node._dtype.compute
                        and a - n_leaves not in sides):
                    in_place = a
                    break
        else:
            fn = _bound(table[prim.__class__], prim)
        steps.append((fn, args, in_place, node._dtype is bfloat16))
    return steps


def _compile_chain(f, steps):
    """``(first_step, runs)`` when the program is a chain (each step reads the previous result once, its other
    inputs are leaves, all ufuncs of one dtype, no bfloat16): run as NumPy by hand would, in place. ``runs`` are
    ``(ufunc, other leaf or -1, position of the previous result, count)``: equal steps in a row, one loop. Else
    None."""
    n_leaves = len(f.leaves)
    dtype = f.root._dtype
    runs = []
    for j, ((fn, args, _, bf16), node) in enumerate(zip(steps, f.nodes)):
        if bf16 or not isinstance(fn, np.ufunc) or node._dtype is not dtype:
            return None
        if j == 0:
            continue
        prev = n_leaves + j - 1
        if args.count(prev) != 1 or any(a != prev and a >= n_leaves for a in args) or len(args) > 2:
            return None
        step = (fn, next((a for a in args if a != prev), -1), args.index(prev))
        if runs and runs[-1][:3] == step:
            runs[-1] = (*step, runs[-1][3] + 1)
        else:
            runs.append((*step, 1))
    return steps[0], runs


def _run_chain(chain, leaves: list, out: np.ndarray | None = None):
    """The chain's result; its first step writes into ``out`` when given (a donated leaf's buffer)."""
    (fn0, args0, _, _), runs = chain
    xs = [leaves[a] for a in args0]
    v = fn0(*xs) if out is None else fn0(*xs, out=out)
    xs = None
    if v.__class__ is np.ndarray and (v is out or v.base is None):  # our own buffer: every step writes into it
        for fn, other, pos, count in runs:
            if other < 0:
                for _ in repeat(None, count):  # ``out`` by position: NumPy parses it faster than the keyword
                    fn(v, v)
            else:
                # (``out`` by keyword: NumPy 2.4 deprecates it by position for maximum and minimum)
                x = leaves[other]
                for _ in repeat(None, count):
                    fn(v, x, out=v) if pos == 0 else fn(x, v, out=v)
        return v
    for fn, other, pos, count in runs:  # NumPy scalars (0-d results): no buffer to reuse
        fn = _SCALAR_OPS.get(fn, fn)  # NumPy's scalar arithmetic: a tenth of a ufunc call, the same result
        for _ in repeat(None, count):
            v = fn(v) if other < 0 else (fn(v, leaves[other]) if pos == 0 else fn(leaves[other], v))
    return v


# Ufuncs whose Python operator on NumPy scalars of one dtype gives the same value and dtype (a chain's steps all
# have the chain's dtype, and its leaves were cast to it).
_SCALAR_OPS = {np.add: operator.add, np.subtract: operator.sub, np.multiply: operator.mul,
               np.true_divide: operator.truediv, np.negative: operator.neg}


def _run_program(steps, values: list, out=None):
    """Run the steps over ``values`` (the leaves); the last result goes into ``out`` when given."""
    last = len(steps) - 1
    for j, (fn, args, in_place, bf16) in enumerate(steps):
        xs = [values[a] for a in args]
        if j == last and out is not None and not bf16:
            if isinstance(fn, np.ufunc) or hasattr(fn, "takes_out"):
                fn(*xs, out=out)
            else:
                np.copyto(out, fn(*xs), casting="unsafe")
            values.append(out)
            continue
        buf = values[in_place] if in_place >= 0 else None
        # Only a buffer that an earlier step made (not a view of a leaf) may be overwritten.
        if buf is not None and buf.__class__ is np.ndarray and buf.base is None:
            r = fn(*xs, out=buf)
        else:
            r = fn(*xs)
        if bf16:
            r = narrow_bf16(np, r) if j == last else round_bf16(np, r)
        values.append(r)
        if j == last and out is not None:
            np.copyto(out, r, casting="unsafe")
    return values[-1]


def run_fused(f, leaves: list, table, out: np.ndarray | None = None, arrivals: dict | None = None, upload=None,
              donate: bool = False):
    """The root's value of Fused ``f`` given its leaves' data (NumPy arrays or scalars); written into ``out``
    when given (e.g. pinned memory, for a result a GPU reads next). ``arrivals`` maps a leaf's index to its
    ``ready(lo, hi)`` when its bytes are still arriving (see ``memory.host_in_parts``); ``upload`` (with ``out``)
    is told of each part of ``out`` as it is written (see ``memory.start_upload``). With ``donate`` (and no
    ``out``), the result goes into the buffer of a leaf that nothing else holds, if there is one (see donate.py),
    and the root is finished here (the return is then ``donate.FINISHED``): ``leaves`` MUST then be the caller's
    one list of the leaves' data, and the caller hold no other reference to a leaf or its data."""
    compiled = _compiled.get(f.key)
    if compiled is None:
        steps = _compile(f, table)
        chain = _compile_chain(f, steps) if not f.sides else None
        wide = tuple(i for i, x in enumerate(f.leaves) if x._dtype is bfloat16)
        compiled = _compiled[f.key] = (steps, chain, _donors(f, steps, chain) if not f.sides else (), wide)
    steps, chain, donors, wide = compiled
    for i in wide:  # bfloat16 leaves computed on as float32 (in the caller's list: see donate above)
        if arrivals and i in arrivals:
            arrivals.pop(i)(0, leaves[i].nbytes)
        leaves[i] = widen_bf16(np, leaves[i])
    if f.sides:
        return _run_with_sides(f, steps, leaves, out, arrivals, upload)
    root = f.root
    size = 1
    for s in root._shape:
        size *= s
    if size >= jit.MIN_SIZE and jit.ENABLED and not arrivals:  # (one compiled loop, where it is ready)
        k = jit.kernel(f, leaves)
        if k is not None:
            if donate and donors and out is None:
                gift = _donor(f, donors)
                if gift is not None and not traced():
                    return _in_place(f, steps, chain, leaves, *gift, compiled=k)
            r = jit.run(k, f, leaves, out.reshape(root._shape) if out is not None else None)
            if upload is not None:
                upload.part(0, out.nbytes)
            return out if out is not None else r
    if out is None and not arrivals and size >= fold.MIN_SIZE and len(root._shape) > 1:
        folded = _run_folded(steps, chain, leaves, root._shape, size, root._dtype.np)
        if folded is not None:
            return folded if folded.dtype is root._dtype.np else folded.astype(root._dtype.np)
    if donate and donors and out is None:
        gift = _donor(f, donors)
        if gift is not None and not traced():
            return _in_place(f, steps, chain, leaves, *gift)
    if size >= SPLIT_MIN_SIZE and threads.CORES > 1:
        axis = _split_axis(leaves, root)
        if axis is not None and (axis < 0 or not arrivals):
            return _run_split(steps, leaves, root, out, arrivals, upload, axis)
    if arrivals:
        for i, ready in arrivals.items():
            ready(0, leaves[i].nbytes)
    if out is not None:
        _run_program(steps, list(leaves), out=out.reshape(root._shape) if root._shape else out)
        if upload is not None:
            upload.part(0, out.nbytes)
        return out
    out = _run_chain(chain, leaves) if chain is not None else _run_program(steps, list(leaves))
    want = root._dtype.np
    if out.dtype is not want and out.dtype != want:  # a NumPy loop chose another dtype: MLX's is declared
        out = out.astype(want)
    return out


def _run_with_sides(f, steps, leaves: list, out, arrivals, upload):
    """:func:`run_fused` for a region with side outputs (see ``runtime.fusion.merge``), in one pass (such regions
    are below the size that is cut across cores): the root's value, and the side outputs' in ``f.side_values``."""
    root = f.root
    if arrivals:
        for i, ready in arrivals.items():
            ready(0, leaves[i].nbytes)
    values = list(leaves)
    r = _run_program(steps, values, out=(out.reshape(root._shape) if root._shape else out) if out is not None
                     else None)
    if upload is not None:
        upload.part(0, out.nbytes)
    n = len(leaves)
    # (a bfloat16 step's value is held as float32 with bfloat16's values: conformed, it is its storage)
    f.side_values = [conform_to(np, f.nodes[p]._dtype, values[n + p]) for p in f.sides]
    return out if out is not None else conform_to(np, root._dtype, r)


def _run_folded(steps, chain, leaves: list, shape: tuple, size: int, root_dtype):
    """The region's result (of ``size`` elements) computed on leaves folded into long rows (see fold.py), or None
    where that does not apply (no leaf broadcast along a short last run)."""
    folding = fold.plan([x.shape if x.__class__ is np.ndarray else () for x in leaves], shape)
    if folding is None:
        return None
    xs = fold.operands(leaves, shape, folding)
    if xs is None:
        return None
    if size >= SPLIT_MIN_SIZE and threads.CORES > 1:
        return _run_split_rows(steps, xs, folding, root_dtype).reshape(shape)
    out = _run_chain(chain, xs) if chain is not None else _run_program(steps, xs)
    return out.reshape(shape)


def _run_split_rows(steps, xs: list, folding: tuple, dtype):
    """A folded region's result (see fold.py) computed a block of rows per core."""
    rows, k, run = folding
    width = k * run
    out = host_pool.empty((rows, width), dtype)
    step = -(-rows // threads.parts(out.nbytes))
    block = max(1, threads.block_elements() // width) if len(steps) > 1 else step

    def work(r0: int, r1: int) -> None:
        for b0 in range(r0, r1, block):  # (blocks whose intermediates stay in the core's cache)
            b1 = min(r1, b0 + block)
            vals = [x[b0:b1] if x.__class__ is np.ndarray and x.ndim == 2 else x for x in xs]
            _run_program(steps, vals, out=out[b0:b1])

    with np.errstate(all="ignore"):
        map_chunks(work, threads.bounds(rows, step))
    return out


def _donors(f, steps, chain) -> tuple:
    """``(leaf, node_limit, chain_ok)`` for each leaf of ``f`` that may give the root its buffer: of the root's
    dtype, not 0-d, and either a chain's first step reads it and no later one (``chain_ok``: the chain then runs in
    it from its first step) or the program's last step (the only one that writes ``out``) is a ufunc of the root's
    dtype. ``node_limit``: the most references its node may have while nothing else holds it (the calibrated
    baseline, plus the region's list of leaves and each member's slot that reads it)."""
    root = f.root
    dtype = root._dtype
    if not root._shape:
        return ()
    n_leaves = len(f.leaves)
    reads = [0] * n_leaves
    for _, args, _, _ in steps:
        for a in args:
            if a < n_leaves:
                reads[a] += 1
    dtypes = [x._dtype for x in f.leaves] + [x._dtype for x in f.nodes]

    def exact(step) -> bool:  # a ufunc whose loop takes and gives the root's dtype
        fn, args, _, _ = step
        return (isinstance(fn, np.ufunc) and dtype in exact_dtypes(fn)
                and all(dtypes[a] is dtype for a in args))

    later = {other for _, other, _, _ in chain[1]} if chain is not None else set()
    first_ok = chain is not None and exact(steps[0])
    last_ok = exact(steps[-1])
    out = []
    for k, x in enumerate(f.leaves):
        if x._dtype is dtype and x._shape:
            chain_ok = first_ok and k not in later
            if chain_ok or last_ok:
                out.append((k, UNHELD_SLOT + 1 + reads[k], chain_ok))
    return tuple(out)


def _donor(f, donors: tuple):
    """``(chain_ok, data)`` of the first leaf of ``f`` that gives the root its buffer, or None."""
    root = f.root
    shape = root._shape
    dtype = root._dtype.np
    ins = f._inputs
    for k, node_limit, chain_ok in donors:
        if getrefcount(ins[k]) <= node_limit:  # (the only check of the leaf's count: see donate.py)
            d = buffer_of(ins[k], UNHELD_DATA + 1, shape, dtype)  # (+1: the caller's list of the leaves' data)
            if d is not None:
                return chain_ok, d
    return None


def _in_place(f, steps, chain, leaves: list, chain_ok: bool, d: np.ndarray, compiled: tuple | None = None):
    """The root of ``f`` computed into ``d``, the buffer of a leaf that nothing else holds, and finished here
    (returns ``donate.FINISHED``); by the region's compiled kernel where ``compiled`` (see jit.py) is given.

    Once the first step has written there, the leaf's values are gone and the region cannot run again (as an
    interrupted batch's tasks are): so the root takes its result before anything can interrupt this thread. A
    region is many calls, with bytecode between them where a signal's handler may run: on the main thread (the
    only one where Python runs them) Ctrl-C's handler is held back meanwhile, and its signal raised again after."""
    held = None
    if get_ident() == _MAIN:
        prev = _signal.getsignal(_SIGINT)
        if callable(prev):
            held = []
            try:
                _signal.signal(_SIGINT, lambda signum, frame: held.append(signum))
            except ValueError:  # the main thread of another interpreter: signals are not handled there
                held = None
    try:
        root = f.root
        size = 1
        for s in root._shape:
            size *= s
        axis = (_split_axis(leaves, root) if size >= SPLIT_MIN_SIZE and threads.CORES > 1 and compiled is None
                else None)
        if compiled is not None:
            out = jit.run(compiled, f, leaves, d)
        elif axis is not None:
            out = _run_split(steps, leaves, root, d, axis=axis)
        elif chain_ok:
            out = _run_chain(chain, leaves, d)
        else:
            _run_program(steps, list(leaves), out=d)
            out = d
        root._data = out  # (node.finish's stores, no call between: the memory is counted already, as the leaf's)
        root._inputs = ()
        root._prim = None
    finally:
        if held is not None:
            _signal.signal(_SIGINT, prev)
            if held:
                _signal.raise_signal(_SIGINT)
    return FINISHED


def _split_axis(leaves, root) -> int | None:
    """How to cut a region into chunks for the cores: -1 where every leaf is the root's shape and C-contiguous
    (flat ranges of elements), else the first axis of the root long enough to give each core a chunk (leaves
    broadcast along it are read whole by every chunk, the others cut with the result), else None."""
    shape = root._shape
    for x in leaves:
        if x.__class__ is np.ndarray and x.ndim and (x.shape != shape or not x.flags.c_contiguous):
            break
    else:
        return -1
    parts = threads.parts(root.nbytes)
    return next((a for a, n in enumerate(shape) if n >= parts), None) if parts > 1 else None


def _run_split(steps, leaves, root, out=None, arrivals=None, upload=None, axis: int = -1):
    if out is None:
        out = host_pool.empty(root._shape, root._dtype.np)
    if axis >= 0:
        _run_split_axis(steps, leaves, root._shape, out, axis)
        if upload is not None:
            upload.part(0, out.nbytes)
        return out
    flat_out = out.reshape(-1)
    flat = [x.reshape(-1) if x.__class__ is np.ndarray and x.ndim else x for x in leaves]
    n = flat_out.size
    chunk = -(-n // threads.parts(flat_out.nbytes))
    # (a program of several steps runs in blocks, whose intermediates stay in a core's cache: a chunk's whole
    # intermediates would go to memory and back)
    block = threads.block_elements() if len(steps) > 1 else n

    def work(lo: int, hi: int) -> None:
        if arrivals:
            for i, ready in arrivals.items():
                size = flat[i].itemsize
                ready(lo * size, hi * size)
        for b0 in range(lo, hi, block):  # (blocks whose intermediates stay in the core's cache)
            b1 = min(hi, b0 + block)
            vals = [x[b0:b1] if x.__class__ is np.ndarray and x.ndim else x for x in flat]
            _run_program(steps, vals, out=flat_out[b0:b1])
        if upload is not None:
            size = flat_out.itemsize
            upload.part(lo * size, hi * size)

    with np.errstate(all="ignore"):
        map_chunks(work, threads.bounds(n, chunk))
    return out


def _run_split_axis(steps, leaves, shape: tuple, out: np.ndarray, axis: int) -> None:
    """The region computed into ``out`` in chunks along ``axis`` of the result, on the cores."""
    nd = len(shape)
    size = shape[axis]
    cuts = []  # per leaf: the leading slices before its own axis that is the root's ``axis``, or None (whole)
    for x in leaves:
        a = axis - (nd - x.ndim) if x.__class__ is np.ndarray else -1
        cuts.append((slice(None),) * a if a >= 0 and x.shape[a] == size else None)
    lead = (slice(None),) * axis
    step = -(-size // threads.parts(out.nbytes))
    inner = out.size // size
    block = max(1, threads.block_elements() // inner) if len(steps) > 1 else size

    def work(lo: int, hi: int) -> None:
        for b0 in range(lo, hi, block):  # (blocks whose intermediates stay in the core's cache)
            part = slice(b0, min(hi, b0 + block))
            vals = [x if c is None else x[c + (part,)] for x, c in zip(leaves, cuts)]
            _run_program(steps, vals, out=out[lead + (part,)])

    with np.errstate(all="ignore"):
        map_chunks(work, threads.bounds(size, step))
