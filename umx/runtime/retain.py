"""Evaluation while a function transform traces: values for the caller, the graph kept for the transform.

``grad``, ``vjp``, ``jvp`` and ``vmap`` call the user's function on marker nodes and then walk the graph it built.
The function may read values as it runs (``item()``, ``print``, a branch on ``x.sum() > 0``, ``eval`` of an
intermediate). An ordinary eval would cut that graph: executors detach a node once it has its data (its
primitive and inputs go, so that memory is freed as soon as possible), and the walk would then see a constant.

So, while a transform traces on a thread (``tracing`` maps the thread to its list of kept nodes), the
scheduler's evals come here instead. A *shadow* of the unevaluated graph behind the targets (fresh nodes with
the same primitives, sharing every node that is evaluated or already scheduled) is evaluated as usual; then each
target, with its siblings, takes its shadow's data, executor and sequence number (so waits and copies work as
for any evaluated node) and keeps its primitive, inputs and siblings. Everything that asks whether a node is
evaluated looks at its data, so the rest of umx sees an evaluated array; the transforms still walk through it.
The nodes between a target and the evaluated leaves stay unevaluated: the transform's results compute them
again when they are evaluated (random draws are functions of their key arrays, so they give the same values).

When the outermost transform on the thread returns, it detaches the nodes it kept (``Tracing.__exit__``), so a
value the user holds on to (a loss) does not keep a step's graph alive.
"""

from __future__ import annotations

from operator import attrgetter
from threading import get_ident

from ..array import node
from .node import detach, keep

__all__ = ["tracing", "Tracing", "evaluate"]

#: threads on which a transform traces: ident -> the nodes evaluated there that kept their graph, in order
tracing: dict = {}

_created = attrgetter("_seq")  # an unscheduled node's _seq is its creation number: inputs come first


class Tracing:
    """``with Tracing() as kept:`` marks the calling thread as tracing for a transform (nested uses share the
    outermost one's list ``kept``, to which evals append what they computed); leaving the outermost detaches those
    nodes."""

    __slots__ = ("ident", "kept", "outermost")

    def __enter__(self) -> list:
        self.ident = get_ident()
        kept = tracing.get(self.ident)
        self.outermost = kept is None
        if kept is None:
            kept = tracing[self.ident] = []
        self.kept = kept
        return kept

    def __exit__(self, *exc) -> None:
        if not self.outermost:
            return
        del tracing[self.ident]
        for n in self.kept:
            # (`a[k] = v` may since have moved another node into this object: only evaluated ones detach)
            if n._data is not None:
                detach(n)
        self.kept = None


def evaluate(targets, kept: list, plan_lock, run) -> None:
    """Evaluate ``targets`` keeping their graph (see the module's docstring): ``run(jobs)`` evaluates the
    shadows as the scheduler evaluates anything, and the targets take their results; they are appended to
    ``kept``. Called by the scheduler's eval entry points on a thread in ``tracing``."""
    with plan_lock:  # (another thread's planning marks nodes as it goes: look at settled states only)
        jobs, pairs = _shadow(targets)
    run(jobs)
    for original, shadow in pairs:
        keep(original, shadow)
        kept.append(original)


def _shadow(targets) -> tuple:
    """``(jobs, pairs)``: what to evaluate in place of ``targets`` (a target's shadow, or the target itself if it
    is evaluated or scheduled), and ``(original, shadow)`` for each unevaluated target and its siblings."""
    stack = [t for t in targets if t._data is None and t._exec is None]
    if not stack:
        return list(targets), []
    seen: set = set()
    todo = []  # one node per group to copy
    while stack:
        n = stack.pop()
        if id(n) in seen:
            continue
        for g in n._siblings or (n,):
            seen.add(id(g))
        todo.append(n)
        for x in n._inputs:
            if x._data is None and x._exec is None and id(x) not in seen:
                stack.append(x)
    todo.sort(key=_created)
    made: dict = {}
    for n in todo:
        group = n._siblings or (n,)
        copies = tuple(node(g._prim, tuple([made.get(id(x), x) for x in g._inputs]), g._shape, g._dtype,
                            g._stream) for g in group)
        for g, c in zip(group, copies):
            made[id(g)] = c
            if len(copies) > 1:
                c._siblings = copies
    jobs = [made.get(id(t), t) for t in targets]
    pairs = []
    done: set = set()
    for t in targets:
        if id(t) in made and id(t) not in done:
            for g in t._siblings or (t,):
                done.add(id(g))
                pairs.append((g, made[id(g)]))
    return jobs, pairs  # (`made` goes: the shadows' intermediates are held by their readers only, and fuse)
