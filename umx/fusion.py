"""Automatic fusion at eval: regions of elementwise nodes that become one task, and on the GPU one kernel.

A region is a tree of elementwise nodes on one stream, all of the output's shape, whose inner nodes are read by
nothing but their one consumer in the region: not by the user, not by another stream, not by a later eval. Such
intermediates need never exist in memory. The planner hands the region to the executor as one :class:`Fused`
task, a small program over the region's external inputs (its leaves); the backend runs it in one pass (CPU) or
one generated kernel (CUDA), cached by the program's structure.

Whether an intermediate is held elsewhere is read off its reference count: the planner knows every reference it
and the graph hold, so anything more is a holder outside (a user variable, a container, another graph).
"""

from __future__ import annotations

import sys
from math import prod

from .primitives import AsType, Binary, Round, Unary, Where


def _subclasses(cls) -> list:
    out = [cls]
    for c in cls.__subclasses__():
        out += _subclasses(c)
    return out


#: primitive classes that fuse: one output element from the same element of each input
ELEMENTWISE = frozenset(c for base in (Unary, Binary) for c in _subclasses(base)) | {Where, AsType}

#: a region of one node is worth a task of its own only when it is big enough to split across cores
SPLIT_MIN_SIZE = 1 << 20

_getrefcount = sys.getrefcount


class Fused:
    """A fused region: ``program`` computes ``root`` from ``leaves``.

    ``program`` is a tuple of steps ``(prim, args)``; ``args`` index the values: leaves first, then the outputs of
    earlier steps. ``nodes[j]`` is the graph node that step ``j`` computes (the last is ``root``). ``key``
    identifies the program's structure (primitives, wiring, dtypes), for caching compiled kernels.
    """

    __slots__ = ("nodes", "leaves", "program", "key", "root", "_inputs", "_seq", "_stream")

    def __init__(self, nodes: list, leaves: list, program: tuple, key: tuple):
        self.nodes = nodes
        self.leaves = leaves
        self.program = program
        self.key = key
        self.root = nodes[-1]
        # Looked at like a node by the planner's wait logic and error reporting: its inputs are the leaves.
        self._inputs = tuple(leaves)
        self._seq = 0
        self._stream = self.root._stream

    # Fused duck-types as a node where executors, failures and traces look at one: it has no siblings, and its
    # shape, dtype and data are its root's.
    _siblings = None

    @property
    def _shape(self) -> tuple:
        return self.root._shape

    @property
    def _dtype(self):
        return self.root._dtype

    @property
    def _data(self):
        return self.root._data

    @property
    def _prim(self):  # a property, not a slot: a reference to itself would make a cycle only gc frees
        return self

    @property
    def name(self) -> str:
        return f"Fused[{len(self.nodes)}]"

    def __repr__(self) -> str:
        runs: list = []  # runs of one primitive: "Fused(Exp x500)", not 500 names
        for prim, _ in self.program:
            if runs and runs[-1][0] == prim:
                runs[-1][1] += 1
            else:
                runs.append([prim, 1])
        return "Fused(" + ", ".join(f"{p!r}" + (f" x{k}" if k > 1 else "") for p, k in runs) + ")"


class _Region(list):
    """The members of a region being formed, root first; also the planner's mark on each member. ``room``: how
    many more members it may take (the executor's ``fuse_max_nodes`` bounds a region, e.g. a kernel's size)."""

    __slots__ = ("room",)


def fuse(order: list, mark, targets) -> list:
    """``order`` (a topological list of planned nodes) with fusable regions replaced by Fused tasks.

    ``mark`` is the planner's marker on nodes of this plan; ``targets`` are the arrays asked for (never fused
    away). Runs under the plan lock. Members of a region are marked with the region (``_exec``) until the
    planner gives them their executor. The planner's hot loop: it visits every node of every eval.
    """
    regions = []
    elementwise = ELEMENTWISE
    getrefcount = _getrefcount
    for n in reversed(order):
        group = n._exec
        if group is mark:  # not absorbed by a reader: the root of a new region, if it fuses at all
            if n._siblings is not None or n._prim.__class__ not in elementwise:
                continue
            group = _Region((n,))
            group.room = n._stream.executor.fuse_max_nodes - 1
            n._exec = group
            regions.append(group)
        if group.room <= 0:  # full: n's inputs start regions of their own (a chain of 100k becomes ~100)
            continue
        ins = n._inputs
        shape = n._shape
        stream = n._stream
        for x in ins:
            # Absorb x when the planner, n and this loop are its only holders (no user variable, no other
            # reader, not a target): refs are the order list, n's inputs (k), the loop variable and the argument.
            if (x._exec is mark and x._shape == shape and x._stream is stream and x._siblings is None
                    and x._prim.__class__ in elementwise
                    and getrefcount(x) <= (4 if len(ins) == 1 else 3 + _uses(ins, x))):
                x._exec = group
                group.append(x)
                group.room -= 1
    n = x = None  # loop variables hold references that the refcounts must not see on a later pass
    if not regions:
        return order
    fused = {}
    for group in regions:
        if len(group) > 1 or prod(group[0]._shape) >= SPLIT_MIN_SIZE:
            group.reverse()  # creation order: inputs first
            fused[id(group)] = _build(group)
        else:
            group[0]._exec = mark
    if not fused:
        return order
    out = []
    for n in order:
        g = n._exec
        if g is mark:
            out.append(n)
        elif g[-1] is n:  # the root stands where the region's last node stood
            out.append(fused[id(g)])
    return out


def _uses(ins: tuple, x) -> int:
    """How many of ``ins`` are ``x`` (by identity: == on arrays is elementwise)."""
    return sum(1 for y in ins if y is x)


def _build(nodes: _Region) -> Fused:
    """The Fused task of a region's members, given inputs first (creation order). This runs per member on every
    eval, so the program and its key are made together."""
    group = nodes
    index: dict = {}
    leaves: list = []
    for n in nodes:
        for x in n._inputs:
            if x._exec is not group and id(x) not in index:
                index[id(x)] = len(leaves)
                leaves.append(x)
    j = len(leaves)
    program = []
    shape_key = []
    parameterized = _PARAMETERIZED
    for n in nodes:
        p = n._prim
        ins = n._inputs
        if len(ins) == 1:
            args = (index[id(ins[0])],)
        elif len(ins) == 2:
            args = (index[id(ins[0])], index[id(ins[1])])
        else:
            args = tuple([index[id(x)] for x in ins])
        index[id(n)] = j
        j += 1
        program.append((p, args))
        # parameterless primitives are singletons: their class names them; others carry their parameters
        c = p.__class__
        shape_key.append((c, args, n._dtype) if c not in parameterized else (c, p.params(), args, n._dtype))
    key = (tuple(shape_key), tuple([(x._dtype, x._shape == ()) for x in leaves]))
    return Fused(list(nodes), leaves, tuple(program), key)


_PARAMETERIZED = frozenset({AsType, Round})
