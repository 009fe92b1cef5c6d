"""Backward tapes: the graph a backward walk builds, recorded once per forward structure and replayed after.

A training step differentiates the same forward graph at every step: the same primitives, wired the same way, on
inputs of the same shapes and dtypes. The rules then build the same backward graph, at several microseconds a
node (their own Python, the ops' checks, shape and dtype inference). ``autodiff.backward`` keys each walk by the
structure of what it differentiates (:func:`structure`). The second walk of a structure runs the rules and records
the nodes they built as a ``Tape`` over the nodes they read, numbered by their place in the walk (:func:`record`);
later walks replay it (:func:`replay`), one ``node(...)`` per backward node: the very graph the rules build.

The key holds the markers' shapes and dtypes; per unit of the walk, the primitive and its parameters, its outputs'
shapes and dtypes, and where each input comes from: an earlier unit, a marker, or a node from outside the walk,
described by its shape, dtype and how it was made (its primitive, or that it holds data, with a scalar's bits: an op
folds a scalar constant into the graph it builds); and the default stream, on which the rules build. What a rule
could see beyond that (an outside node's own inputs) it can only use by reading it, and a tape that reads a node
outside the numbering is never made; nor one holding data the rules made at once from an input's (while a walk
is recorded, a transpose of evaluated data is a node, not such a view: ``ops.shape.views_as_nodes``). Walks
through a primitive whose rules run the user's code (``custom_function``, ``checkpoint``: a replay would skip it),
through values computed while the function was traced, or with parameters that cannot be hashed, always run the
rules. ``UMX_GRAD_TAPES=0`` turns tapes off (to measure what they gain).
"""

from __future__ import annotations

import operator
import os
from contextlib import contextmanager

import numpy as np

from ..devices import resolve_stream
from ..ops.shape import views_as_nodes
from ..primitives import Compiled, CudaKernel, Custom
from ..primitives.base import structure_key
from ._replay import Tape, _getter

__all__ = ["ENABLED", "structure", "lookup", "recording", "record", "replay"]

#: UMX_GRAD_TAPES=0: every backward walk runs the rules (to measure what replays gain)
ENABLED = os.environ.get("UMX_GRAD_TAPES", "1") != "0"
_MAX_KEYS = 256  # structures remembered (the oldest half are forgotten past this)
_REFUSED = "refused"
_UNTAPED = frozenset({Custom, Compiled, CudaKernel})  # (rules of the user's, or graphs of their own)
_created = operator.attrgetter("_seq")  # before scheduling, _seq holds the node's creation number

class _WalkTape(Tape):
    """A walk's tape: it replays at every training step, so its straight-line code is generated early."""

    __slots__ = ()
    GENERATE_AT = 4


#: key -> how often it was seen (an int), its ``(tape, which results are None)``, or _REFUSED
_tapes: dict = {}


def structure(order: list, outputs: list, cotangents: list, markers: list):
    """``(key, nodes)`` of a backward walk over ``order`` (``autodiff._units``'s units), or None where no tape may
    stand for it: ``nodes`` are the nodes the rules may read, in the order the key numbers them (the markers, then
    each unit's outside inputs and outputs, then the outputs and cotangents from outside)."""
    nodes: list = [m for m in markers if m is not None]
    index = {id(m): i for i, m in enumerate(nodes)}
    key: list = [resolve_stream(None), tuple([None if m is None else (m._shape, m._dtype) for m in markers])]
    add = key.append
    for group, prim, inputs in order:
        if prim.__class__ in _UNTAPED:
            return None
        wiring = []
        for x in inputs:
            j = index.get(id(x))
            if j is None:
                j = index[id(x)] = len(nodes)
                nodes.append(x)
                add(_outside(x))
            wiring.append(j)
        for g in group:
            if g._data is not None or g._exec is not None:  # (computed while traced: a rule may fold its value)
                return None
            index[id(g)] = len(nodes)
            nodes.append(g)
        if len(group) == 1:
            add((structure_key(prim), g._shape, g._dtype, tuple(wiring)))
        else:
            add((structure_key(prim), tuple([(g._shape, g._dtype) for g in group]), tuple(wiring)))
    for x in (*outputs, *cotangents):
        if x is None:
            add(None)
            continue
        j = index.get(id(x))
        if j is None:
            j = index[id(x)] = len(nodes)
            nodes.append(x)
            add(_outside(x))
        add(j)
    return tuple(key), nodes


def _outside(x) -> tuple:
    """What the key says of node ``x`` from outside the walk: its shape and dtype, and its primitive, or for data
    a scalar's bits (an op may fold a scalar into the graph it builds)."""
    d = x._data
    if d is None:
        return x._shape, x._dtype, structure_key(x._prim)
    if isinstance(d, np.generic):
        return x._shape, x._dtype, d.tobytes()
    return x._shape, x._dtype


def lookup(key):
    """The ``(tape, which results are None)`` recorded for ``key``; or "record": the rules run and their graph is
    to be recorded; or None: the rules run (a first sighting, or a structure refused)."""
    try:
        entry = _tapes.get(key)
    except TypeError:  # a parameter that cannot be hashed
        return None
    if entry is None:
        if len(_tapes) >= _MAX_KEYS:
            for k in list(_tapes)[:_MAX_KEYS // 2]:
                _tapes.pop(k, None)  # (another thread may forget it too)
        _tapes[key] = 1
        return None
    if entry.__class__ is int:
        return "record"
    return None if entry is _REFUSED else entry


@contextmanager
def recording():
    """While the rules build a walk's graph to record: a transpose of evaluated data is a node, which a replay
    rebuilds on its own inputs, not a view made at once of this input's data."""
    prev = getattr(views_as_nodes, "on", False)
    views_as_nodes.on = True
    try:
        yield
    finally:
        views_as_nodes.on = prev


def record(key, start: int, grads: list, nodes: list) -> None:
    """Record the graph behind ``grads`` (the walk's results, per marker) that the rules built after creation
    number ``start``, over ``nodes`` (see :func:`structure`), as ``key``'s tape; or refuse the key for good where
    the graph reads a node outside ``nodes`` that is not a scalar constant, or holds data the rules computed."""
    index = {id(x): i for i, x in enumerate(nodes)}
    consts: list = []
    steps: list = []
    seen: set = set()
    stack = [g for g in grads if g is not None]
    while stack:
        n = stack.pop()
        k = id(n)
        if k in seen or k in index:
            continue
        seen.add(k)
        if n._data is None and n._exec is None and n._seq > start:  # built by the rules
            for g in n._siblings or (n,):
                seen.add(id(g))
                steps.append(g)
                stack.extend(g._inputs)
        elif n._prim is None and not n._shape and isinstance(n._data, np.generic):
            consts.append(n)  # (a cached scalar, or one folded from a scalar whose bits the key holds)
        else:
            _tapes[key] = _REFUSED
            return
    steps.sort(key=_created)  # creation order is a topological order
    where = {id(c): j for j, c in enumerate(consts)}
    base = len(consts)
    for k, i in index.items():
        where[k] = base + i
    program: list = []
    refs: list = []
    at = base + len(nodes)
    for n in steps:
        if id(n) in where:  # (a sibling, emitted with its group)
            continue
        group = n._siblings or (n,)
        for j, g in enumerate(group, 1):
            r = tuple([where[id(x)] for x in g._inputs])
            program.append((g._prim, _getter(r), g._shape, g._dtype, g._stream,
                            j if j == len(group) > 1 else 0))
            refs.append(r)
            where[id(g)] = at
            at += 1
    out_refs = [where[id(g)] for g in grads if g is not None]
    tape = _WalkTape(consts, len(nodes), 0, program, refs, out_refs, None, len(out_refs))
    _tapes[key] = (tape, tuple([g is None for g in grads]))


def replay(taped: tuple, nodes: list) -> list:
    """The walk's results, per marker, from a recorded ``(tape, which results are None)`` over this walk's
    ``nodes``."""
    tape, none = taped
    flat = iter(tape(nodes))
    return [None if n else next(flat) for n in none]
