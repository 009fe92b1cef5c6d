"""Buffer donation on the CPU: an op writes its result into the buffer of an input that nothing else holds.

A chain ``x = mx.abs(x); x = x.reshape(-1); ...`` on a large array then never holds two buffers at once, as in
MLX. An input *donates* when, at the moment its reader runs (reference counts, calibrated in ``runtime/refs.py``):

- its node is held only by the reader's inputs (no user variable or container, no other reader on any stream, not
  a target, not a compiled function's constant, not a node a transform keeps: those keep their primitive), and
  has no weak reference (another thread could make one strong while the result is written);
- it has no copies at other locations (a device copy may still be reading the buffer: an upload in flight);
- its data is a NumPy array held only by the node (no ``np.asarray(x)`` the user kept, no other node sharing it),
  and the buffer it views is held only by that view (no other array's view of it alive), and is owned by NumPy or
  by the host pool (never the user's memory, a file's or another library's);
- the data has the result's shape and dtype, is writeable and C-contiguous (no overlapping strides).

Views (reshape, transpose, slices, ``stop_gradient``) share their input's buffer already, so a chain of views and
elementwise ops runs in one buffer. The buffer stays counted once in the memory statistics: the result views the
buffer the input was counted for. Only tasks whose inputs are this stream's or host data donate (not a task that
waits for another stream), and bfloat16 results never do (they are rounded into a new array).
"""

from __future__ import annotations

import functools
import sys
from sys import getrefcount
from weakref import getweakrefcount

import numpy as np

from ...dtypes import ALL, bfloat16
from ...primitives import Copy
from ...primitives.distributed import AllReduce
from ...runtime import host_pool
from ...runtime.refs import UNHELD_BASE, UNHELD_DATA, UNHELD_SLOT
from ..xp.elementwise import PLAIN_UFUNC

_ndarray = np.ndarray

# What a gift (and a region run in a leaf's buffer) returns once it has finished its node itself: the executor
# then leaves the node as it is (finishing it again would repeat the stores and the memory count).
FINISHED = object()


def buffer_of(x, data_limit: int, shape: tuple, dtype):
    """The data of input ``x`` if its reader may write its result there, else None. The caller has checked that
    nothing else holds the node ``x`` (its reference count: ``refs.UNHELD_SLOT`` plus the slots of the graph's own
    structures); this checks the rest (see the module's docstring). ``data_limit``: the most references its data
    may have here, ``refs.UNHELD_DATA`` plus those the caller holds (a list of the inputs' data)."""
    if x._prim is not None or x._copies is not None or getweakrefcount(x):
        return None
    d = x._data  # (refs.UNHELD_DATA's shape: the node's slot, this variable and the argument)
    if d.__class__ is not _ndarray or d.dtype is not dtype or d.shape != shape or getrefcount(d) > data_limit:
        return None
    b = d.base  # (refs.UNHELD_BASE's shape)
    if b is not None and (b.__class__ is not _ndarray or getrefcount(b) > UNHELD_BASE
                          or (b.base is not None and not host_pool.owns(b))):
        return None
    flags = d.flags
    if not (flags.writeable and flags.c_contiguous):
        return None
    return d


# The reference count of an input, read as ``getrefcount(ins[i])`` (refs.UNHELD_SLOT's shape): more than the
# baseline means that something besides the reader's inputs holds it. MUST stay the only check of the node's count
# on each path, so that a baseline off by one fails the tests (tests/test_donation.py).
#
# Once a kernel has written into an input's buffer, the input's values are gone and the node cannot be run again
# (as an interrupted batch's nodes are, see WorkerExecutor.run_inline): it MUST be finished before anything can
# interrupt this thread. A signal's Python handler (Ctrl-C's KeyboardInterrupt) runs only at certain bytecodes,
# the first after a call into C has returned, and a ufunc runs no Python code (NumPy does not check for signals
# in its loops): so the ufunc's one call writes the whole result, and the node takes it by plain stores, no call
# in between, on every way out. A trace, profile or monitoring function could raise before the call, where that
# reasoning fails: a thread that has one never donates (``traced``).


_monitoring = getattr(sys, "monitoring", None)  # (Python 3.12 and later)


def traced() -> bool:
    """Whether Python code may run on this thread between two bytecodes of the runtime's own (a trace, profile or
    monitoring function: a debugger, a profiler, coverage), which could raise anywhere."""
    return (sys.gettrace() is not None or sys.getprofile() is not None
            or (_monitoring is not None and any(_monitoring.get_tool(i) is not None for i in range(6))))


@functools.cache
def exact_dtypes(fn) -> frozenset:
    """The umx dtypes ``T`` for which ufunc ``fn`` has a loop from ``T`` inputs to a ``T`` result: NumPy takes that
    loop for ``T`` inputs, with or without ``out=``, so a donated result has the bits of a new one (no cast)."""
    loops = set(fn.types)
    return frozenset(d for d in ALL if d is not bfloat16  # (computed in float32, rounded into a new array)
                     and d.np.char * fn.nin + "->" + d.np.char in loops)


def _unary(fn):
    exact = exact_dtypes(fn)

    def run(n, ins):
        if getrefcount(ins[0]) > UNHELD_SLOT or n._dtype not in exact:  # (a held input, the commonest, stops here)
            return None
        d = buffer_of(ins[0], UNHELD_DATA, n._shape, n._dtype.np)
        if d is None or traced():
            return None
        try:
            fn(d, d)  # (``out`` by position: NumPy parses it faster than the keyword)
        except Exception:
            raise  # (a kernel's error: the node fails, and its input was nobody else's)
        except BaseException:  # an interrupt, raised once the call had returned: d holds the result
            n._data = d
            n._inputs = ()
            n._prim = None
            raise
        n._data = d  # (node.finish's stores: the memory is counted already, as the input's)
        n._inputs = ()
        n._prim = None
        return FINISHED

    return run


def _binary(fn):
    exact = exact_dtypes(fn)

    def run(n, ins):
        # (held inputs, the commonest, stop at these two counts)
        i = 0 if getrefcount(ins[0]) <= UNHELD_SLOT else 1 if getrefcount(ins[1]) <= UNHELD_SLOT else -1
        if i < 0 or n._dtype not in exact:
            return None
        d = buffer_of(ins[i], UNHELD_DATA, n._shape, n._dtype.np)
        if d is None and i == 0 and getrefcount(ins[1]) <= UNHELD_SLOT:  # (the second input may do)
            i = 1
            d = buffer_of(ins[1], UNHELD_DATA, n._shape, n._dtype.np)
        if d is None or ins[1 - i]._data.dtype is not d.dtype or traced():  # (else the loop would be another's)
            return None
        try:
            fn(ins[0]._data, ins[1]._data, out=d)
        except Exception:
            raise
        except BaseException:  # as in _unary
            n._data = d
            n._inputs = ()
            n._prim = None
            raise
        n._data = d
        n._inputs = ()
        n._prim = None
        return FINISHED

    return run


def _copy(n, ins):
    if getrefcount(ins[0]) > UNHELD_SLOT:
        return None
    return buffer_of(ins[0], UNHELD_DATA, n._shape, n._dtype.np)  # (the copy is the buffer itself: nothing written)


def _all_reduce(n, ins):
    # MPI reduces into the buffer in one call (the group's reducer: no Python code runs in it), and nothing it
    # leaves can be run again: the node takes the buffer by plain stores right after it, as in _unary. The turn
    # ends after that; one interrupted before it ends is skipped by the next waiter (the node has its data).
    if getrefcount(ins[0]) > UNHELD_SLOT or n._dtype is bfloat16:  # (bfloat16: summed as float32, rounded)
        return None
    prim = n._prim
    mpi = prim.group.mpi
    if mpi is None:
        return None
    dtype = n._dtype.np
    reduce = mpi.reducer(prim.op, dtype)
    if reduce is None:
        return None
    d = buffer_of(ins[0], UNHELD_DATA, n._shape, dtype)
    if d is None or traced():
        return None
    turns = mpi.turns
    ticket = prim.ticket
    turns.begin(ticket)
    try:
        reduce(d)
    except Exception:
        turns.end(ticket)
        raise  # (the node fails; its input was nobody else's)
    except BaseException:  # an interrupt, raised once the call had returned: d holds the result
        n._data = d
        n._inputs = ()
        n._prim = None
        turns.end(ticket)
        raise
    n._data = d
    n._inputs = ()
    n._prim = None
    turns.end(ticket)
    return FINISHED


def make_table(kernels: dict) -> dict:
    """Kernel -> ``give(node, inputs)``, which runs the node into a donated buffer and finishes it (returns
    ``FINISHED``), returns the buffer that is its result (``Copy``: nothing written, the caller finishes the node),
    or returns None (nothing done: run the kernel). For the kernels in ``kernels`` (primitive class -> kernel) that
    are a NumPy ufunc, ``Copy``'s and ``AllReduce``'s (MPI's all-reduce in place). Keyed by the kernel itself: a
    kernel replaced in the table (an override, a test's probe) has no entry, so it runs, never bypassed."""
    table = {kernels[Copy]: _copy}
    if AllReduce in kernels:
        table[kernels[AllReduce]] = _all_reduce
    for cls in PLAIN_UFUNC:
        if cls in kernels:
            fn = getattr(np, cls.fn)
            if isinstance(fn, np.ufunc) and fn.nout == 1 and fn.nin in (1, 2):
                table[kernels[cls]] = (_unary if fn.nin == 1 else _binary)(fn)
    return table
