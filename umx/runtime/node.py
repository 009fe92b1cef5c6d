"""A node's scheduling state, and the named transitions that change it.

An array is a node of the graph. Its scheduling state is held in four fields, which only the runtime changes, and
only through the transitions below (the planner's loops in ``scheduler`` and ``fusion`` spell out ``plan`` and
``assign`` inline: they run once per node of every eval):

========== ==================== ====================== ============================================
state      ``_exec``            ``_seq``               ``_data``, ``_prim``/``_inputs``
========== ==================== ====================== ============================================
built      None                 its creation number    None; set
planned    ``PLANNING``         its creation number    None; set (an eval is planning it)
member     ``MEMBER``           its creation number    None; set (inside a fused region, never numbered)
assigned   its executor         its number there       None; set
finished   its executor, or     its number there       the result or a Failure; detached (None, ())
           None (host data)
kept       as finished          as finished            the result; still set (read while a transform traces)
========== ==================== ====================== ============================================

Creation numbers order nodes before they are scheduled (a node is made after its inputs); sequence numbers order
a stream's work ("node ``seq`` of executor E is done" is ``E.done >= seq``). Arrays made from data start
finished, with ``_exec`` None.
"""

from __future__ import annotations

import gc
import sys
import threading

import numpy as np

from ..array import _copy_state, _new, alias, array
from . import memory

_ndarray = np.ndarray

# MUST be held to change a node from built to planned, member or assigned (planning an eval), or to rebind an
# array object to another node: it makes "not yet scheduled" and the numbering consistent across threads that
# evaluate overlapping graphs. Never held while waiting for results. Reentrant, so that a signal handler that
# evaluates on a thread holding it is refused with an error, not a deadlock (see scheduler._plan).
PLAN_LOCK = threading.RLock()


class _Mark:
    """A planning mark: stands in an ``_exec`` field for an executor that is never submitted to."""

    __slots__ = ("name",)
    device = None

    def __init__(self, name: str):
        self.name = name

    def __repr__(self) -> str:
        return self.name


#: the node is behind an eval being planned
PLANNING = _Mark("PLANNING")
#: the node is a member of a fused region: the region's task computes it, and nothing else reads it
MEMBER = _Mark("MEMBER")
#: the node is in an executor's own copy of a compiled graph (see ``fusion.collect_private``): never scheduled
PRIVATE = _Mark("PRIVATE")


def assign(n, ex, seq: int) -> None:
    """built/planned -> assigned: ``n`` is task ``seq`` of executor ``ex`` (under the plan lock)."""
    n._exec = ex
    n._seq = seq


def unplan(n) -> None:
    """planned/member -> built (a plan that failed: a later eval plans ``n`` again)."""
    n._exec = None


def become(n, prim, inputs: tuple, seq) -> None:
    """planned -> planned, another computation of the same value: ``n``, not yet numbered, takes ``prim``,
    ``inputs`` and creation number ``seq`` (the planner's side outputs, ``fusion.merge``, and their undoing)."""
    n._prim = prim
    n._inputs = inputs
    n._seq = seq


def finish(n, out) -> None:
    """assigned -> finished: ``n`` (one output) holds ``out``, counted as memory, and lets go of its inputs, so
    the graph behind it can be freed."""
    n._data = out
    if out.__class__ is _ndarray:  # (a NumPy scalar or a device array: nothing the host counts)
        memory.acquire(out)
    n._inputs = ()
    n._prim = None


def finish_on_host(n, data) -> None:
    """assigned -> finished, the result on the host (a small result a GPU kernel wrote there for a reader, or an
    array moved out of a full device): from now on ``n`` is host data, like an array made from data."""
    n._data = data
    n._inputs = ()
    n._prim = None
    n._exec = None  # (after the data: no planner may take it for unscheduled)


def finish_siblings(sibs: tuple, outs) -> None:
    """assigned -> finished for the outputs of a multi-output node: ``outs`` in order, or one Failure for all."""
    if outs.__class__ is not tuple:
        outs = (outs,) * len(sibs)
    for s, o in zip(sibs, outs):
        s._data = o
        memory.acquire(o)
    for s in sibs:
        s._inputs = ()
        s._prim = None
        s._siblings = None


def move_to_host(n, host) -> None:
    """finished -> finished on the host: a device array's data moved out of a full device (already counted)."""
    n._exec = None  # (first: the planner tells host data by its type once _exec is None)
    n._data = host


def keep(n, result) -> None:
    """built -> kept: ``n`` takes the data of ``result`` (a copy of ``n`` that was evaluated, see ``retain``),
    with its copies, executor and number, so waits and copies work as for any finished node, and keeps its
    primitive and inputs, so that a transform's walk goes through it."""
    n._copies = result._copies
    n._exec = result._exec
    n._seq = result._seq
    n._data = result._data  # (last: a node with data must already say where it was computed)


def alias_finished(markers: list, inputs: list) -> None:
    """built -> finished for each of ``markers`` (nodes that only repeat their input, see ``transforms.autodiff``)
    whose input in ``inputs`` is finished (its data set, its graph let go): it takes that input's data, copies,
    executor and number, and lets go of its primitive and inputs, so that an eval reads it as it reads the input,
    with no task of its own. Others are left as they are: a kept input (an outer transform still walks through it)
    too. (An input that failed passes its Failure on, as the marker's own run would.)"""
    with PLAN_LOCK:
        for n, x in zip(markers, inputs):
            d = x._data
            if (n is None or d is None or x._prim is not None or n._data is not None or n._exec is not None
                    or n._siblings is not None):
                continue
            keep(n, x)
            detach(n)


def detach(n) -> None:
    """kept -> finished: ``n`` lets go of the graph it kept (the transform that read it has returned)."""
    n._prim = None
    n._inputs = ()
    n._siblings = None


def rebind(a: array, new: array, mark: int, own_refs: int) -> int:
    """Make the Python object ``a`` the node ``new`` (what ``a[i] = v`` and ``a += b`` do); every node that read
    ``a`` keeps reading the value ``a`` had, now held by a new object.

    Args:
        a: the array to update.
        new: its new value, built by the update from nodes made after creation number ``mark``.
        mark: a creation number drawn before the update built ``new``.
        own_refs: the references to ``a`` that the caller's path holds when one variable holds ``a`` (measured by
            the caller once, through this function's return value): more mean other holders, which may be nodes
            that read ``a``, and only then is the heap searched for them.

    Returns:
        int: the references to ``a`` seen, for callers measuring ``own_refs``.
    """
    if new is a:
        return own_refs
    lock = PLAN_LOCK
    # `a` is about to become another node, so no worker may still be computing it (the worker would write the old
    # value into the new node), and no eval may be planning it meanwhile.
    while True:
        with lock:
            ex, seq = a._exec, a._seq
            if ex is None or ex.done >= seq:
                return _rebind(a, new, mark, own_refs)
        ex.wait(seq)


def _rebind(a: array, new: array, mark: int, own_refs: int) -> int:
    if a._data is None and a._exec is not None:
        # Scheduled (by async_eval or an eval on another thread): its worker will store the result in this very
        # object, so let it finish before the object becomes another node.
        a._exec.wait(a._seq)
    if new._prim is None or new._seq <= mark or new._exec is not None or new._siblings is not None:
        new = alias(new)  # not a node of this update's own: take a new object for its value
    old = _new(array)
    _copy_state(old, a)
    if old._siblings is not None:
        old._siblings = tuple(old if x is a else x for x in old._siblings)
        for x in old._siblings:
            x._siblings = old._siblings
    _reread(new, a, old, mark)
    # Older nodes reading `a` must read `old` too. Only our frames and one variable hold `a` in the common case;
    # otherwise find them, an O(heap) scan that only aliased updates pay.
    refs = sys.getrefcount(a)
    if refs > own_refs:
        for ref in gc.get_referrers(a):
            if type(ref) is tuple:
                for owner in gc.get_referrers(ref):
                    if type(owner) is array and owner._inputs is ref and owner is not old:
                        if owner._data is None and owner._exec is not None:
                            # In flight: its worker may hold `a` already (e.g. while it waits for another stream)
                            # and must read the value `a` had at the call, so let it finish first.
                            owner._exec.wait(owner._seq)
                        owner._inputs = tuple(old if x is a else x for x in ref)
    a._data = None  # `a` no longer owns the data: `old` does
    _copy_state(a, new)
    new._data = None  # so that freeing `new` does not release data it never owned
    new._prim = None
    new._inputs = ()
    return refs


def _reread(new: array, a: array, old: array, mark: int) -> None:
    """Point the update's own nodes (``new`` and the nodes behind it made after ``mark``) that read ``a`` at ``old``:
    ``a`` is about to be ``new``, which must not read itself. (A function of its own: its locals, which hold ``a``
    while it runs, are gone when the caller counts the references to ``a``.)"""
    todo = [new]
    while todo:
        n = todo.pop()
        ins = n._inputs
        for x in ins:
            if x is a:
                n._inputs = tuple([old if y is a else y for y in ins])
            elif x._prim is not None and x._seq > mark and x._exec is None:
                todo.append(x)
