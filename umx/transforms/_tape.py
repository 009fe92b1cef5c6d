"""Tapes for ``compile``: a function's graph recorded once, then rebuilt on new inputs without running it.

``record`` calls the function on *marker* nodes (lazy identities of the real inputs, as the differentiation
transforms use) and walks back from its outputs. Every node built during the call becomes a step of the tape;
markers become input slots, keys drawn from the global random key become key slots, and anything else reached
(evaluated arrays, arrays captured from closures, cached scalars) is a constant, kept by reference. The tape is
turned into one generated Python function of straight-line ``node(...)`` calls: a replay builds the same lazy
graph the function would, without checking arguments or inferring shapes and dtypes.

A trace is given up (``record`` returns None) when the function evaluated anything while it ran (``eval``,
``item``, ``print``, NumPy conversion...): its values may have steered Python control flow, so its graph is
good for these input values only. Markers make every read of an input's values an eval, so this is caught.
"""

from __future__ import annotations

import threading

from .. import scheduler
from ..array import _created, array, node
from ..ops import random as _random
from . import _trees
from .autodiff import _marker

__all__ = ["HOLE", "record", "Tape", "fill", "assign"]

HOLE = object()  # where an array leaf goes in an output template (a single array output is HOLE itself)


class Tape:
    """A recorded graph: ``tape(leaves)`` rebuilds the outputs on new input leaves.

    Attributes:
        run: the generated function ``run(ins, keys=None)``: the tuple of flat outputs (the function's, then
            the state outputs).
        template: the output tree with ``HOLE`` for its arrays.
        n_out: how many of the flat outputs are the function's.
        n_steps: the number of nodes a replay builds (for tests and benchmarks).
    """

    __slots__ = ("run", "template", "n_out", "n_steps")

    def __init__(self, run, template, n_out: int, n_steps: int):
        self.run = run
        self.template = template
        self.n_out = n_out
        self.n_steps = n_steps


def record(fun, args: tuple, kwargs: dict, leaves: list, n_arg_leaves: int, state_in, state_out):
    """Trace ``fun(*args, **kwargs)``.

    ``leaves`` are the array leaves of ``(args, kwargs)`` (the first ``n_arg_leaves``), then those of
    ``state_in``, whose containers are given markers for the call and their arrays back after it. Returns
    ``(tape, keys, outputs)``: ``keys`` the random keys the trace drew, for the first replay, so that the
    global key advances once per call; ``outputs`` the traced results, used only when the tape is None (the
    function evaluated something): their values are right, as markers are identities.
    """
    markers = [_marker(x) for x in leaves]
    links = {id(m._inputs): i for i, m in enumerate(markers)}
    margs, mkwargs = _trees.unflatten((args, kwargs), markers[:n_arg_leaves])
    if state_in is not None:
        assign(state_in, iter(markers[n_arg_leaves:]))
    ident = threading.get_ident()
    outer_seen = scheduler.compile_watch.get(ident)
    outer_keys = _random.compile_draws.get(ident)
    seen = scheduler.compile_watch[ident] = [False]
    keys = _random.compile_draws[ident] = []
    start = next(_created)
    try:
        out = fun(*margs, **mkwargs)
        state = [] if state_out is None else _trees.flatten(state_out)
    finally:
        _restore(scheduler.compile_watch, ident, outer_seen)
        _restore(_random.compile_draws, ident, outer_keys)
        if outer_seen is not None and seen[0]:
            outer_seen[0] = True
        if outer_keys is not None:
            outer_keys.extend(keys)  # an enclosing trace replays these draws too
        if state_in is not None:
            mine = {id(m): x for m, x in zip(markers[n_arg_leaves:], leaves[n_arg_leaves:])}
            _map_leaves(state_in, lambda a: mine.get(id(a), a))
    if seen[0]:
        return None, keys, out
    single = type(out) is array
    outs = [out] if single else _trees.flatten(out)
    template = HOLE if single else _trees.unflatten(out, [HOLE] * len(outs))
    run, n = _generate(outs + state, links, {id(k): j for j, k in enumerate(keys)}, start)
    return Tape(run, template, len(outs), n), keys, out


def _restore(table: dict, ident: int, prev) -> None:
    if prev is None:
        table.pop(ident, None)
    else:
        table[ident] = prev


def _generate(outs: list, links: dict, key_ids: dict, start: int) -> tuple:
    """The replay function for the graph behind ``outs``, and its number of steps."""
    names: dict = {}  # id(node) -> its name in the generated code
    glob: dict = {"node": node, "next_key": _random._next_key}
    interned: dict = {}
    steps: list = []
    stack = list(outs)
    while stack:
        n = stack.pop()
        if id(n) in names:
            continue
        i = links.get(id(n._inputs))
        if i is not None:
            names[id(n)] = f"i{i}"
        elif id(n) in key_ids:
            names[id(n)] = f"k{key_ids[id(n)]}"
        elif n._prim is not None and n._exec is None and n._seq > start:  # built by the call
            for g in n._siblings or (n,):
                names[id(g)] = ""
                steps.append(g)
                stack.extend(g._inputs)
        else:
            names[id(n)] = _const(n, glob, interned)
    steps.sort(key=lambda g: g._seq)  # creation order is a topological order
    for j, g in enumerate(steps):
        names[id(g)] = f"v{j}"
    n_ins = len(links)
    n_keys = len(key_ids)
    lines = ["def run(ins, keys=None):"]
    if n_ins:
        lines.append(f"    {''.join(f'i{i}, ' for i in range(n_ins))}= ins")
    if n_keys:
        ks = "".join(f"k{j}, " for j in range(n_keys))
        lines.append(f"    if keys is None:\n        {ks}= {', '.join(['next_key()'] * n_keys)},")
        lines.append(f"    else:\n        {ks}= keys")
    done: set = set()
    for g in steps:
        if id(g) in done:
            continue
        group = g._siblings or (g,)
        for s in group:
            done.add(id(s))
            ins = "".join(names[id(x)] + ", " for x in s._inputs)
            lines.append(f"    {names[id(s)]} = node({_const(s._prim, glob, interned)}, ({ins}), "
                         f"{_const(s._shape, glob, interned, by_value=True)}, "
                         f"{_const(s._dtype, glob, interned)}, {_const(s._stream, glob, interned)})")
        if len(group) > 1:
            sib = ", ".join(names[id(s)] for s in group)
            lines.append(f"    {' = '.join(names[id(s)] + '._siblings' for s in group)} = ({sib})")
    lines.append(f"    return ({''.join(names[id(o)] + ', ' for o in outs)})")
    exec(compile("\n".join(lines), "<umx.compile tape>", "exec"), glob)  # noqa: S102 (our own code)
    return glob["run"], len(steps)


def _const(obj, glob: dict, interned: dict, by_value: bool = False) -> str:
    """The global name under which the generated code reads ``obj`` (by identity; shapes by value)."""
    key = obj if by_value else id(obj)
    name = interned.get(key)
    if name is None:
        name = interned[key] = f"c{len(interned)}"
        glob[name] = obj
    return name


def fill(t, it):
    if t is HOLE:
        return next(it)
    if isinstance(t, tuple) and hasattr(t, "_fields"):
        return type(t)(*(fill(x, it) for x in t))
    if isinstance(t, (list, tuple)):
        return type(t)(fill(x, it) for x in t)
    if isinstance(t, dict):
        return type(t)((k, fill(v, it)) for k, v in t.items())
    return t


def _map_leaves(tree, f) -> None:
    """Replace each array leaf ``a`` of ``tree`` by ``f(a)``, in place (lists and dicts; tuples are walked)."""
    if isinstance(tree, list):
        for i, x in enumerate(tree):
            if type(x) is array:
                tree[i] = f(x)
            else:
                _map_leaves(x, f)
    elif isinstance(tree, dict):
        for k, x in tree.items():
            if type(x) is array:
                tree[k] = f(x)
            else:
                _map_leaves(x, f)
    elif isinstance(tree, tuple):
        for x in tree:
            if type(x) is array:
                raise TypeError("compile: the arrays of inputs= and outputs= must sit in lists or dicts, "
                                "which compile can update in place, not directly in tuples")
            _map_leaves(x, f)


def assign(tree, it) -> None:
    """Put the arrays of ``it``, in order, in place of the array leaves of ``tree``."""
    _map_leaves(tree, lambda a: next(it))
