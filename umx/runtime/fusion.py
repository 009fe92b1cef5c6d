"""Automatic fusion at eval: regions of elementwise nodes that become one task, and on the GPU one kernel.

A region is a tree of elementwise nodes on one stream, all of the output's shape, whose inner nodes are read by
nothing but their one consumer in the region: not by the user, not by another stream, not by a later eval. Such
intermediates need never exist in memory. The planner hands the region to the executor as one :class:`Fused`
task, a small program over the region's external inputs (its leaves); the backend runs it in one pass (CPU) or
one generated kernel (CUDA), cached by the program's structure.

Whether an intermediate is held elsewhere is read off its reference count: the planner knows every reference it
and the graph hold, so anything more is a holder outside (a user variable, a container, another graph). The
planner's walk over the graph (:func:`collect`) lives here for that reason: it finds the regions as it collects
the nodes to schedule, and knows exactly which references it holds itself.
"""

from __future__ import annotations

import operator
import os
import sys
from math import prod

from ..array import _copy_state, _new, array
from ..primitives import AsType, Binary, Round, SideOutput, Unary, Where
from ..primitives.base import structure_key, subclasses
from .node import MEMBER, PRIVATE, become
from .refs import UNHELD_INPUT

#: primitive classes that fuse: one output element from the same element of each input
ELEMENTWISE = frozenset(c for base in (Unary, Binary) for c in (base, *subclasses(base))) | {Where, AsType}

#: a region of one node is worth a task of its own only when it is big enough to split across cores
SPLIT_MIN_SIZE = 1 << 20
#: whether regions compute values held elsewhere beside their root (see merge); UMX_SIDE_OUTPUTS=0: never (to
#: measure the gain)
SIDE_OUTPUTS = os.environ.get("UMX_SIDE_OUTPUTS", "1") != "0"

_getrefcount = sys.getrefcount
_UNHELD = UNHELD_INPUT  # a node only its reader holds, named by a local (see refs.py)


class Fused:
    """A fused region: ``program`` computes ``root`` from ``leaves``.

    ``program`` is a tuple of steps ``(prim, args)``; ``args`` index the values: leaves first, then the outputs of
    earlier steps. ``nodes[j]`` is the graph node that step ``j`` computes (the last is ``root``). ``key``
    identifies the program's structure (primitives, wiring, dtypes), for caching compiled kernels. The planner
    makes only the key: the program is derived from the nodes when a backend first asks (a kernel cache miss).
    """

    __slots__ = ("nodes", "leaves", "_program", "key", "root", "_root_step", "_inputs", "_seq", "_stream", "sides",
                 "homes", "side_values")

    def __init__(self, nodes: list, leaves: list, program: tuple | None, key: tuple, sides: tuple = (),
                 homes: tuple | None = None):
        self.nodes = nodes
        self.leaves = leaves
        self._program = program
        self.key = key
        # Side outputs (see merge): the steps whose values are outputs too, each handed over by a SideOutput node
        # from ``side_values``, which a run fills (in order); ``homes``, per output (the root's first), the ids of
        # the leaves of the region it came from (ids: a reference would count as a holder of a leaf).
        self.sides = sides
        self.homes = homes
        self.side_values = None
        root = self.root = nodes[-1]
        # Running detaches the root, and a trace names the region after it ran: keep what its step needs (its
        # inputs by id: a reference would keep the chain of members alive past the list that frees them).
        self._root_step = (root._prim, tuple([id(x) for x in root._inputs]))
        # Looked at like a node by the planner's wait logic and error reporting: its inputs are the leaves.
        self._inputs = tuple(leaves)
        self._seq = 0
        self._stream = root._stream

    @property
    def program(self) -> tuple:
        if self._program is None:
            self._program = _program(self)
        return self._program

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
        # From the nodes, not the program: an input a node reads may since have been rebound (``a[i] = v``).
        prims = ([p for p, _ in self._program] if self._program is not None
                 else [n._prim for n in self.nodes[:-1]] + [self._root_step[0]])
        runs: list = []  # runs of one primitive: "Fused(Exp x500)", not 500 names
        for prim in prims:
            if runs and runs[-1][0] == prim:
                runs[-1][1] += 1
            else:
                runs.append([prim, 1])
        return "Fused(" + ", ".join(f"{p!r}" + (f" x{k}" if k > 1 else "") for p, k in runs) + ")"




def collect(targets, mark, fusing: bool) -> list:
    """The tasks behind ``targets``: their unscheduled nodes in creation order, each marked with ``mark``, and with
    ``fusing``, each fusable region as one :class:`Fused` task where its root stands.

    A node is always made after its inputs, so creation order is a topological order, and one visit per node
    suffices. A region is found in the same walk: when an elementwise node comes off the stack it roots a region,
    and an input of one of its members joins when the member is its only holder besides this walk (the reference
    count says so: no user variable, no other reader, not a target, which is marked before the walk). Members
    never come on the stack, so only roots and unfused nodes are sorted. Runs under the plan lock; the
    planner's hot loop: it visits every node of every eval, so one function holds it all (no call per node).
    """
    order = []
    stack = []
    for t in targets:
        if t._data is None and t._exec is None:
            stack.append(_mark(t, mark))
    elementwise = ELEMENTWISE if fusing else ()
    getrefcount = _getrefcount
    unheld = _UNHELD
    member = MEMBER
    parameterized = _PARAMETERIZED
    merging = []  # regions with a leaf that could join them as a side output (see merge)
    while stack:
        n = stack.pop()
        if n._siblings is not None or n._prim.__class__ not in elementwise or not _may_root(n, elementwise):
            order.append(n)
            for x in n._inputs:
                if x._data is None and x._exec is None:
                    if x._siblings is None:
                        x._exec = mark
                    else:
                        x = _mark(x, mark)
                    stack.append(x)
            continue
        # n roots a region: take in its members breadth first, making the key on the way. A step is its
        # primitive, its args (a leaf's index, or how far back in this walk the member it reads was taken, < 0)
        # and its dtype; the key lists runs of equal steps, (class, args, dtype, count) (a chain is one run, so
        # looking the key up costs little), and parameterized steps as (class, params, args, dtype).
        shape = n._shape
        stream = n._stream
        traits = (stream._executor or stream.executor).traits
        room = traits.fuse_max_nodes - 1
        members = [n]
        leaves = []
        where = {}  # id of a leaf -> its index
        key = []
        rc = ra = rd = None  # the run of steps being counted
        rn = 0
        i = 0
        while i < len(members):
            m = members[i]
            i += 1
            p = m._prim
            c = p.__class__
            d = m._dtype
            ins = m._inputs
            a = None  # the step's args, once known; the chain steps (one input to take in) find them first
            more = 0  # steps equal to m's, after it in a chain, taken in by a tight loop below
            if len(ins) == 1 and c not in parameterized:  # a chain's step: all of it here
                x = ins[0]
                # The references: m's inputs, this variable and the argument. (Its shape is m's: elementwise
                # with one input; and an elementwise node has no siblings.)
                if (x._data is None and x._exec is None and x._stream is stream
                        and x._prim.__class__ in elementwise and getrefcount(x) <= unheld and room > 0):
                    x._exec = member
                    members.append(x)
                    room -= 1
                    a = i - len(members)
                    if a == -1 and x._prim is p and x._dtype is d:
                        # m is a chain's last member so far, and x repeats its step: the members after it that
                        # do too (the seed's 500 exps) are taken in here, each step counted into m's run. The
                        # planner's hottest loop, so the least work per member: one that has m's very primitive
                        # has its one input, and is elementwise; the first that does not is left to the loop
                        # above (which takes it in, or not, the same way).
                        append = members.append
                        for _ in range(room):
                            y = x._inputs[0]  # (its references: x's inputs, this variable and the argument)
                            if (y._exec is not None or y._data is not None or y._prim is not p or y._dtype is not d
                                    or y._stream is not stream or getrefcount(y) > unheld):
                                break
                            y._exec = member
                            append(y)
                            x = y
                        y = None  # (the input that ended the run: a reference here would make it look held)
                        more = len(members) - i - 1
                        room -= more
            elif len(ins) == 2 and c not in parameterized:  # a chain's step with a constant or an evaluated array
                x, y = ins
                if y._data is not None:
                    first = True
                elif x._data is not None:
                    x, y = y, x
                    first = False
                else:
                    first = None
                    y = None  # (a reference held here would count as a holder of ins[1] below)
                # The references to x: m's inputs, this variable and the argument.
                if (first is not None and x._data is None and x._exec is None and room > 0 and x._shape == shape
                        and x._stream is stream and x._siblings is None and x._prim.__class__ in elementwise
                        and getrefcount(x) <= unheld):
                    x._exec = member
                    members.append(x)
                    room -= 1
                    j = where.get(id(y))
                    if j is None:
                        j = where[id(y)] = len(leaves)
                        leaves.append(y)
                    a = (i - len(members), j) if first else (j, i - len(members))
                    if a[1 - first] == -1:
                        # as for one input: the members after m with its step, the same leaf at the same place
                        # (1000 scalar adds of one constant)
                        at = 0 if first else 1
                        while room > 0:
                            xi = x._inputs
                            if (len(xi) != 2 or xi[1 - at] is not y or x._prim.__class__ is not c
                                    or x._dtype is not d):
                                break
                            z = xi[at]  # (its references: x's inputs, this variable and the argument)
                            if not (z._data is None and z._exec is None and z._shape == shape and z._stream is stream
                                    and z._siblings is None and z._prim.__class__ in elementwise
                                    and getrefcount(z) <= unheld):
                                break
                            z._exec = member
                            members.append(z)
                            room -= 1
                            x = z
                            more += 1
                        z = None  # (as y above)
            if a is None:
                args = []
                for x in ins:
                    if x._data is None:
                        xe = x._exec
                        if xe is None:
                            # The references: m's inputs (once per use), this loop's variable and the argument.
                            if (room > 0 and x._shape == shape and x._stream is stream and x._siblings is None
                                    and x._prim.__class__ in elementwise
                                    and getrefcount(x) <= (unheld if len(ins) == 1
                                                           or (len(ins) == 2 and ins[0] is not ins[1])
                                                           else unheld - 1 + _uses(ins, x))):
                                x._exec = member
                                members.append(x)
                                room -= 1
                                args.append(i - len(members))
                                continue
                            if x._siblings is None:
                                x._exec = mark
                                stack.append(x)
                            else:
                                stack.append(_mark(x, mark))
                        elif xe is member:  # read twice by m (x * x): taken in at its first use
                            args.append(i - 1 - _index(members, x))
                            continue
                    j = where.get(id(x))
                    if j is None:
                        j = where[id(x)] = len(leaves)
                        leaves.append(x)
                    args.append(j)
                a = tuple(args) if len(args) != 1 else args[0]
                if c in parameterized:
                    if rn:
                        key.append((rc, ra, rd, rn))
                    rc = None
                    rn = 0
                    key.append((c, p.params(), a, d))
                    continue
            if c is rc and d is rd and a == ra:  # one more step of the run
                rn += 1 + more
            else:
                if rn:
                    key.append((rc, ra, rd, rn))
                rc, ra, rd, rn = c, a, d, 1 + more
            i += more  # (their steps are counted)
        if rn:
            key.append((rc, ra, rd, rn))
        if len(members) > 1 or prod(shape) >= SPLIT_MIN_SIZE:
            members.reverse()  # inputs first
            key.reverse()
            f = Fused(members, leaves, None, (tuple(key), tuple([(x._dtype, x._shape == ()) for x in leaves])))
            f._seq = n._seq
            order.append(f)
            if SIDE_OUTPUTS and traits.side_outputs and prod(shape) < traits.side_outputs:
                # A leaf planned here, of the root's shape and stream, that could have been a member: something
                # else holds it (an optimizer's new moment, read by the new weight and kept as state).
                for x in leaves:
                    if (x._exec is mark and x._shape == shape and x._stream is stream and x._siblings is None
                            and x._prim.__class__ in elementwise):
                        merging.append(f)
                        break
                x = None
        else:
            order.append(n)
    if merging:
        merge(order, merging, mark)
    order.sort(key=_created)
    return order


def merge(order: list, regions: list, mark) -> None:
    """Take into each of ``regions`` (fused tasks of ``order``, :func:`collect`'s) the elementwise tasks of
    ``order`` that compute its leaves of its shape: those values, held elsewhere, become *side outputs* of the
    region, which computes them in the same pass. An optimizer's update of a weight is then one kernel that reads
    the weight, its moments and its gradient and writes the three new values, not three kernels that read the new
    moments twice over.

    Each value taken in stays a task of its own, rebound to a ``SideOutput`` node that reads the region's root and
    hands over the value the region's run left; its computation moves into the region as a private copy (a
    member). The region then runs where the earliest of those values was made, and each of them right after it,
    before anything that reads them: a value is taken in only if every leaf of the grown region is made before
    that place (creation order is a topological order), so no leaf can depend on what the region now computes."""
    tasks = {}  # id of a task's node -> the task (a region by its root)
    for t in order:
        tasks[id(t.root if t.__class__ is Fused else t)] = t
    gone: set = set()  # ids of the tasks taken into another
    added: list = []
    regions.sort(key=_created, reverse=True)  # (a region is taken in only by one made after it: see below)
    for f in regions:
        if id(f) in gone:
            continue
        grown = _grow(f, tasks, gone, mark)
        if grown is not None:
            gone.add(id(f))
            added += grown
    if gone:
        order[:] = [t for t in order if id(t) not in gone]
        order += added


def _grow(f, tasks: dict, gone: set, mark) -> list | None:
    """:func:`merge` for region ``f``: the grown region and its SideOutput nodes (to replace ``f`` in the order),
    or None where nothing could join."""
    root = f.root
    stream = root._stream
    shape = root._shape
    room = (stream._executor or stream.executor).traits.fuse_max_nodes - len(f.nodes)
    nodes = list(f.nodes)
    leaves = list(f.leaves)
    place = root._seq  # where the grown region runs: the earliest of its outputs' creation numbers
    taken = []  # (the node taken in, its private copy, the ids of its region's leaves)
    refused: set = set()
    elementwise = ELEMENTWISE
    while True:
        best = None
        for x in leaves:
            if (x._exec is mark and x._data is None and x._shape == shape and x._stream is stream
                    and x._siblings is None and x._prim.__class__ in elementwise and id(x) not in refused
                    and (best is None or x._seq > best._seq)):
                g = tasks.get(id(x))
                if g is not None and id(g) not in gone and (g is x or g.__class__ is Fused):
                    best = x
        if best is None:
            break
        x = best
        g = tasks[id(x)]
        if g is x:
            g_nodes = [x]
            g_leaves = []
            for y in x._inputs:
                if not any(y is z for z in g_leaves):
                    g_leaves.append(y)
        else:
            g_nodes = g.nodes
            g_leaves = g.leaves
        at = min(place, x._seq)
        joined = list(g_leaves)
        for y in leaves:
            if y is not x and not any(y is z for z in joined):
                joined.append(y)
        # Every leaf planned here is made before the region's new place, so none depends on what it computes.
        if len(g_nodes) > room or any(y._exec is mark and y._data is None and y._seq >= at for y in joined):
            refused.add(id(x))  # (it stays a leaf)
            continue
        copy = _new(array)
        _copy_state(copy, x)
        copy._inputs = (*x._inputs,)  # (a tuple of its own: a shared one would hide a holder from the walk)
        copy._exec = MEMBER
        for n in nodes:  # the region's readers of x read its copy
            ins = n._inputs
            for y in ins:
                if y is x:
                    n._inputs = tuple([copy if z is x else z for z in ins])
                    break
        nodes = [*g_nodes[:-1], copy, *nodes]
        leaves = joined
        room -= len(g_nodes)
        place = at
        taken.append((x, copy, tuple([id(y) for y in g_leaves])))
        gone.add(id(g))
    if not taken:
        return None
    at = {id(n): i for i, n in enumerate(nodes)}
    taken.sort(key=lambda t: at[id(t[1])])  # side outputs in the order of their steps
    sides = tuple(at[id(c)] for _, c, _ in taken)
    grown = Fused(nodes, leaves, None, None, sides, (tuple([id(y) for y in f.leaves]), *[h for _, _, h in taken]))
    # (its key from its program, derived now: the walk's compact key covers regions without side outputs)
    grown.key = (("sides", tuple([(structure_key(p), a, n._dtype) for (p, a), n in zip(grown.program, nodes)]),
                  sides), tuple([(y._dtype, y._shape == ()) for y in leaves]))
    grown._seq = place - 0.5  # (ahead of every reader of its outputs; the side outputs just after it)
    out = [grown]
    for k, (x, copy, homes) in enumerate(taken):
        become(x, SideOutput(grown, k, homes, (copy, x._seq)), (root,), place - 0.5 + (k + 1) / (2 * len(taken) + 2))
        out.append(x)
    return out


def unmerge(n) -> None:
    """Undo :func:`merge` for node ``n`` if it was made a side output (a plan that failed before numbering it):
    its own primitive, inputs and creation number again. (The region's private copy of its computation stays
    where the region reads it: the same value.)"""
    prim = n._prim
    if prim is not None and prim.__class__ is SideOutput:
        copy, seq = prim.was
        become(n, copy._prim, (*copy._inputs,), seq)


def collect_private(targets: list) -> list:
    """The tasks behind ``targets``, nodes that only the caller reaches (an executor's own copy of a compiled
    graph, see ``transforms._tape.Program.build``): :func:`collect`'s, fused, marked ``PRIVATE``."""
    return collect(targets, PRIVATE, True)


def _mark(n, mark):
    """Mark ``n`` (and its siblings: one node computes them all) as being planned; the node to schedule."""
    sibs = n._siblings
    if sibs is None:
        n._exec = mark
        return n
    for s in sibs:
        s._exec = mark
    return sibs[0]


_created = operator.attrgetter("_seq")  # before scheduling, _seq holds the node's creation number


def _may_root(n, elementwise) -> bool:
    """Whether elementwise ``n`` may root a region: an input could join it (for a small output on an executor with a
    rule for those, a chain of enough could: see ``Traits.small_regions``), or it is big enough on its own."""
    shape = n._shape
    stream = n._stream
    small = (stream._executor or stream.executor).traits.small_regions
    if small is not None and prod(shape) < small[0]:
        return _reaches(n, small[1], elementwise)
    for x in n._inputs:
        if (x._data is None and x._exec is None and x._shape == shape and x._stream is stream
                and x._siblings is None and x._prim.__class__ in elementwise):
            return True
    return prod(shape) >= SPLIT_MIN_SIZE


def _reaches(n, need: int, elementwise) -> bool:
    """Whether a chain of ``need`` members that could join a region ends at ``n``: a short look up the graph (the
    first input that could join, at each step), which reads reference counts as ``collect`` does but only to guess:
    a wrong guess costs time, never a wrong result."""
    shape = n._shape
    stream = n._stream
    x = n
    for _ in range(need - 1):
        for y in x._inputs:
            # (the references to y: its reader's inputs, this variable and the argument)
            if (y._data is None and y._exec is None and y._shape == shape and y._stream is stream
                    and y._siblings is None and y._prim.__class__ in elementwise and _getrefcount(y) <= _UNHELD):
                x = y
                break
        else:
            return False
    return True


def _uses(ins: tuple, x) -> int:
    """How many of ``ins`` are ``x`` (by identity: == on arrays is elementwise)."""
    return sum(1 for y in ins if y is x)


def _index(members: list, x) -> int:
    """Where ``x`` is in ``members`` (by identity), looking from the end: it was just taken in."""
    for k in range(len(members) - 1, -1, -1):
        if members[k] is x:
            return k
    raise ValueError("not a member")


def _program(f: Fused) -> tuple:
    """The steps of ``f``, from its nodes (inputs first) and leaves."""
    index = {id(x): k for k, x in enumerate(f.leaves)}
    j = len(f.leaves)
    program = []
    last = len(f.nodes) - 1
    for k, n in enumerate(f.nodes):
        p, ins = f._root_step if k == last else (n._prim, [id(x) for x in n._inputs])
        program.append((p, tuple([index[i] for i in ins])))
        index[id(n)] = j
        j += 1
    return tuple(program)


_PARAMETERIZED = frozenset({AsType, Round})
