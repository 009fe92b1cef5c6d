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
outside the numbering is never made; nor one holding data the rules made at once from an input's (while a walk is
recorded, a transpose of evaluated data is a node, not such a view: ``ops.shape.views_as_nodes``). A rule that runs
the user's code (``custom_function``, ``checkpoint``, a compiled function's) is called again at its place in every
replay, on that walk's nodes, and the tape holds its results as values, never what it built to make them; where it
gives results of another structure than when recorded (:class:`Mismatch`), the walk runs the rules (that rule runs
twice then), and so does every later walk of the key. Walks through values computed while the function was traced,
or with parameters that cannot be hashed, always run the rules. ``UMX_GRAD_TAPES=0`` turns tapes off (to measure
what they gain).
"""

from __future__ import annotations

import operator
import os
from contextlib import contextmanager

import numpy as np

from ..devices import resolve_stream
from ..ops.shape import views_as_nodes
from ..primitives import Compiled, CudaKernel, Custom
from ..primitives.base import KEY_FUNCTIONS, key_function, structure_key
from ._replay import Tape, _getter, build

__all__ = ["ENABLED", "LIVE", "RECORD", "Mismatch", "structure", "lookup", "recording", "record", "refuse", "replay"]

#: UMX_GRAD_TAPES=0: every backward walk runs the rules (to measure what replays gain)
ENABLED = os.environ.get("UMX_GRAD_TAPES", "1") != "0"
_MAX_KEYS = 256  # structures remembered (the oldest half are forgotten past this)
_REFUSED = "refused"
RECORD = "record"  # (lookup's answer: the rules run, and what they build is recorded)
#: primitives whose rules run the user's code: a replay calls them again (see :func:`record`)
LIVE = frozenset({Custom, Compiled})
_UNTAPED = frozenset({CudaKernel})  # (no rule: its walk raises)
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
    each unit's outside inputs, with an unevaluated one's own inputs, and outputs, then the outputs and cotangents
    from outside)."""
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
                if x._data is None:
                    _through(x, nodes, index, add)
            wiring.append(j)
        for g in group:
            if g._data is not None or g._exec is not None:  # (computed while traced: a rule may fold its value)
                return None
            index[id(g)] = len(nodes)
            nodes.append(g)
        c = prim.__class__
        op = (KEY_FUNCTIONS.get(c) or key_function(c))(prim)
        if len(group) == 1:
            add((op, g._shape, g._dtype, tuple(wiring)))
        else:
            add((op, tuple([(g._shape, g._dtype) for g in group]), tuple(wiring)))
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


def _through(x, nodes: list, index: dict, add) -> None:
    """Number the inputs of ``x``, a node from outside the walk, as nodes the rules may read: a rule may read
    through it (matmul's, through ``w.T`` to ``w``). The key says where each comes from."""
    wiring = []
    for y in x._inputs:
        j = index.get(id(y))
        if j is None:
            j = index[id(y)] = len(nodes)
            nodes.append(y)
            add(_outside(y))
        wiring.append(j)
    add(tuple(wiring))


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
    """The ``(tape, which results are None)`` recorded for ``key``; or RECORD: the rules run and their graph is
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
        return RECORD
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


def record(key, start: int, grads: list, nodes: list, calls: list) -> None:
    """Record the graph behind ``grads`` (the walk's results, per marker) that the rules built after creation
    number ``start``, over ``nodes`` (see :func:`structure`), as ``key``'s tape; or refuse the key for good where
    the graph reads a node outside ``nodes`` that is not a scalar constant, or holds data the rules computed.

    ``calls`` are the walk's calls of rules that run the user's code, ``(first, end, group, inputs, cotangents,
    results)`` (``first`` and ``end`` bound the creation numbers of what the call built): a replay makes them
    again, so the tape holds their results as values, never what they built to make them."""
    index = {id(x): i for i, x in enumerate(nodes)}
    made = {id(g) for call in calls for g in call[5] if g is not None and call[0] <= g._seq < call[1]}
    consts: list = []
    steps: list = []
    seen: set = set()
    stack = [g for g in grads if g is not None]
    for call in calls:  # (a call's cotangents are built before it, whatever its results are read by)
        stack.extend(c for c in call[4] if c is not None)
    while stack:
        n = stack.pop()
        k = id(n)
        if k in seen or k in index or k in made:
            continue
        seen.add(k)
        if n._data is None and n._exec is None and n._seq > start:  # built by the rules
            if any(c[0] <= n._seq < c[1] for c in calls):  # built inside the user's rule: its own affair
                _tapes[key] = _REFUSED
                return
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
    pending = sorted(range(len(calls)), key=lambda j: calls[j][0], reverse=True)
    for n in steps:
        while pending and calls[pending[-1]][0] < n._seq:
            at = _emit_call(calls[pending.pop()], where, program, refs, at)
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
    while pending:
        at = _emit_call(calls[pending.pop()], where, program, refs, at)
    out_refs = [where[id(g)] for g in grads if g is not None]
    if calls:
        tape = _LiveTape(consts, program, out_refs)
    else:
        tape = _WalkTape(consts, len(nodes), 0, program, refs, out_refs, None, len(out_refs))
    _tapes[key] = (tape, tuple([g is None for g in grads]))


def _emit_call(call: tuple, where: dict, program: list, refs: list, at: int) -> int:
    """Append a call of a user's rule to ``program``: ``(_CALL, group, inputs, cotangents, results)`` as value
    numbers, and each result as what it must be: None; a value the walk had before (the cotangent passed
    through), by its number; or a new array, by its shape and dtype, numbered from ``at``."""
    _, _, group, inputs, cs, results = call
    want = []
    for g in results:
        if g is None:
            want.append(None)
        elif id(g) in where:
            want.append(where[id(g)])
        else:
            want.append((g._shape, g._dtype))
            where[id(g)] = at
            at += 1
    program.append((_CALL, [where[id(g)] for g in group], [where[id(x)] for x in inputs],
                    [None if c is None else where[id(c)] for c in cs], want))
    refs.append(())
    return at


_CALL = object()  # a step of a live tape that calls a user's rule


class _LiveTape:
    """A walk's tape with calls of rules that run the user's code: the steps are interpreted, and the calls made
    again at their place, each on this walk's nodes; a call whose results are not what they were (None where
    there was an array, another shape or dtype, a new array where the rule passed a value through) raises
    :class:`Mismatch`."""

    __slots__ = ("consts", "steps", "out_refs")

    def __init__(self, consts: list, steps: list, out_refs: list):
        self.consts = consts
        self.steps = steps
        self.out_refs = out_refs

    def __call__(self, ins: list) -> list:
        env = self.consts + ins
        add = env.append
        for step in self.steps:
            if step[0] is _CALL:
                _, group, inputs, cs, want = step
                group = [env[r] for r in group]
                results = group[0]._prim.vjp([env[r] for r in inputs], [None if r is None else env[r] for r in cs],
                                             group)
                if len(results) != len(want):
                    raise Mismatch
                for g, w in zip(results, want):
                    if w is None or w.__class__ is int:  # (none, or that value of the walk itself)
                        if g is not (None if w is None else env[w]):
                            raise Mismatch
                    elif g is None or (g._shape, g._dtype) != w:
                        raise Mismatch
                    else:
                        add(g)
            else:
                build(env, step)
        return [env[r] for r in self.out_refs]


class Mismatch(Exception):
    """A user's rule, called again in a replay, gave results of another structure than when recorded."""


def refuse(key) -> None:
    """Run the rules for ``key`` from now on (a replay met a :class:`Mismatch`)."""
    _tapes[key] = _REFUSED


def replay(taped: tuple, nodes: list) -> list:
    """The walk's results, per marker, from a recorded ``(tape, which results are None)`` over this walk's
    ``nodes``."""
    tape, none = taped
    flat = iter(tape(nodes))
    return [None if n else next(flat) for n in none]
