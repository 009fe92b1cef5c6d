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

#: primitive classes that fuse: one output element from the same element of each input
ELEMENTWISE = (Unary, Binary, Where, AsType)

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
    """The members of a region being formed, root first; also the planner's mark on each member."""

    __slots__ = ()


def fuse(order: list, mark, targets) -> list:
    """``order`` (a topological list of planned nodes) with fusable regions replaced by Fused tasks.

    ``mark`` is the planner's marker on nodes of this plan; ``targets`` are the arrays asked for (never fused
    away). Runs under the plan lock. Members of a region are marked with the region (``_exec``) until the
    planner gives them their executor.
    """
    regions = []
    for n in reversed(order):
        if not isinstance(n._prim, ELEMENTWISE) or n._siblings is not None:
            continue
        group = n._exec
        if group is mark:  # not absorbed by a reader: the root of a new region
            if prod(n._shape) < n._stream.executor.fuse_min_size:
                continue
            group = _Region((n,))
            n._exec = group
            regions.append(group)
        ins = n._inputs
        for x in ins:
            # Absorb x when the planner, n and this loop are its only holders (no user variable, no other
            # reader, not a target): refs are the order list, n's inputs (k), the loop variable and the argument.
            if (x._exec is mark and x._shape == n._shape and x._stream is n._stream
                    and isinstance(x._prim, ELEMENTWISE) and x._siblings is None
                    and _getrefcount(x) <= 3 + _uses(ins, x)):
                x._exec = group
                group.append(x)
    n = x = None  # loop variables hold references that the refcounts must not see on a later pass
    if not regions:
        return order
    fused = {}
    for group in regions:
        if len(group) > 1 or prod(group[0]._shape) >= SPLIT_MIN_SIZE:
            fused[id(group)] = _build(group[::-1])
        else:
            group[0]._exec = mark
    if not fused:
        return order
    out = []
    for n in order:
        g = n._exec
        if g is mark:
            out.append(n)
        elif g[0] is n:  # the root stands where the region's last node stood
            out.append(fused[id(g)])
    return out


def _uses(ins: tuple, x) -> int:
    """How many of ``ins`` are ``x`` (by identity: == on arrays is elementwise)."""
    n = len(ins)
    if n == 1:
        return 1
    if n == 2:
        return (ins[0] is x) + (ins[1] is x)
    return sum(1 for y in ins if y is x)


def _build(nodes: list) -> Fused:
    """The Fused task of a region's members, given inputs first (creation order). One pass: this runs per
    member on every eval, so the program and its key are made together."""
    group = nodes[0]._exec
    index: dict = {}
    leaves: list = []
    for n in nodes:
        for x in n._inputs:
            if x._exec is not group and id(x) not in index:
                index[id(x)] = len(leaves)
                leaves.append(x)
    base = len(leaves)
    program = []
    shape_key = []
    for j, n in enumerate(nodes):
        index[id(n)] = base + j
        p = n._prim
        args = tuple([index[id(x)] for x in n._inputs])
        program.append((p, args))
        # parameterless primitives are singletons: their class names them; others carry their parameters
        shape_key.append((p.__class__, args, n._dtype) if p.__class__ not in _PARAMETERIZED
                         else (p.__class__, p.params(), args, n._dtype))
    key = (tuple(shape_key), tuple([(x._dtype, x._shape == ()) for x in leaves]))
    return Fused(nodes, leaves, tuple(program), key)


_PARAMETERIZED = frozenset({AsType, Round})
