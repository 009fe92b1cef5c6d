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

from sys import getrefcount
from weakref import getweakrefcount

import numpy as np

from ...dtypes import bfloat16
from ...primitives import Copy
from ...runtime import host_pool
from ...runtime.refs import UNHELD_BASE, UNHELD_DATA, UNHELD_SLOT
from ..xp.elementwise import PLAIN_UFUNC

_ndarray = np.ndarray


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


def _unary(fn):
    def run(n, ins):
        if getrefcount(ins[0]) > UNHELD_SLOT or n._dtype is bfloat16:  # (a held input, the commonest, stops here)
            return None
        d = buffer_of(ins[0], UNHELD_DATA, n._shape, n._dtype.np)
        if d is None:
            return None
        try:
            return fn(d, d)  # (``out`` by position: NumPy parses it faster than the keyword)
        except TypeError:  # NumPy's loop would need an unsafe cast into d: the kernel makes a new array
            return None

    return run


def _binary(fn):
    def run(n, ins):
        if n._dtype is bfloat16:
            return None
        for i in (0, 1):
            if getrefcount(ins[i]) <= UNHELD_SLOT:
                d = buffer_of(ins[i], UNHELD_DATA, n._shape, n._dtype.np)
                if d is not None:
                    try:
                        return fn(ins[0]._data, ins[1]._data, out=d)
                    except TypeError:
                        return None
        return None

    return run


def _copy(n, ins):
    if getrefcount(ins[0]) > UNHELD_SLOT:
        return None
    return buffer_of(ins[0], UNHELD_DATA, n._shape, n._dtype.np)  # (the copy is the buffer itself)


def make_table(kernels: dict) -> dict:
    """Kernel -> ``give(node, inputs)``, which runs the node into a donated buffer and returns its result, or
    returns None (nothing done: run the kernel). For the kernels in ``kernels`` (primitive class -> kernel) that
    are a NumPy ufunc, and ``Copy``'s. Keyed by the kernel itself: a kernel replaced in the table (an override, a
    test's probe) has no entry, so it runs, never bypassed."""
    table = {kernels[Copy]: _copy}
    for cls in PLAIN_UFUNC:
        if cls in kernels:
            fn = getattr(np, cls.fn)
            if isinstance(fn, np.ufunc) and fn.nout == 1 and fn.nin in (1, 2):
                table[kernels[cls]] = (_unary if fn.nin == 1 else _binary)(fn)
    return table
