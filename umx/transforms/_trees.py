"""Trees of arrays: nested dicts, lists and tuples whose leaves are arrays (other leaves pass through)."""

from __future__ import annotations

import copy

from ..array import array


def flatten(tree, strict: bool = False, what: str = "") -> list:
    """The array leaves of ``tree``, depth first (dict values in key order of insertion).

    With ``strict``, a leaf that is not an array raises ValueError naming ``what``.
    """
    out: list = []
    stack = [tree]
    while stack:
        t = stack.pop()
        if type(t) is array:
            out.append(t)
        elif isinstance(t, (list, tuple)):
            stack.extend(reversed(t))
        elif isinstance(t, dict):
            stack.extend(reversed(list(t.values())))
        elif strict:
            raise ValueError(f"{what}: the arguments to differentiate must be trees (dicts, lists, tuples) "
                             f"of arrays; found a leaf of type {type(t).__name__}")
    return out


def unflatten(tree, leaves) -> object:
    """``tree`` with its array leaves replaced, in order, by ``leaves`` (an iterator or a sequence)."""
    it = iter(leaves)

    def rebuild(t):
        if type(t) is array:
            return next(it)
        if isinstance(t, tuple) and hasattr(t, "_fields"):  # a namedtuple keeps its type
            return type(t)(*(rebuild(x) for x in t))
        if isinstance(t, (list, tuple)):
            return type(t)(rebuild(x) for x in t)
        if isinstance(t, dict):
            # (a leaf taken here, without a call: a model's tree is mostly leaves)
            items = [(k, next(it) if type(v) is array else rebuild(v)) for k, v in t.items()]
            if type(t) is dict:
                return dict(items)
            # a dict subclass (an nn.Module) is rebuilt as a shallow copy of itself: its constructor need not
            # take pairs, and its other attributes (training mode, frozen keys) come along
            out = copy.copy(t)
            dict.update(out, items)
            return out
        return t

    try:
        return rebuild(tree)
    finally:
        # (rebuild names itself through its closure: a cycle that would keep ``it``, and so the leaves, alive
        # until the garbage collector runs, and an input held so cannot donate its buffer: cpu/donate.py)
        rebuild = None


def substitute(tree, new) -> tuple:
    """``tree`` with its array leaves replaced, in flatten order, by the items of iterator ``new``, changing
    the caller's lists and dicts in place (as MLX passes a function the containers it was given): ``(tree',
    places)``, where tree' is ``tree`` itself, a rebuilt tuple, or the new leaf, and ``places`` lists
    ``(container, key, new, old)`` for :func:`restore`."""
    places: list = []

    def walk(t):
        if type(t) is array:
            return next(new)
        if isinstance(t, tuple):
            items = [walk(x) for x in t]
            return type(t)(*items) if hasattr(t, "_fields") else type(t)(items)
        if isinstance(t, list):
            for i, x in enumerate(t):
                y = walk(x)
                if y is not x:
                    places.append((t, i, y, x))
                    t[i] = y
        elif isinstance(t, dict):
            for k, x in t.items():
                y = next(new) if type(x) is array else walk(x)  # (a leaf taken here, without a call)
                if y is not x:
                    places.append((t, k, y, x))
                    t[k] = y
        return t

    try:
        return walk(tree), places
    finally:
        walk = None  # (a cycle through its closure, as in unflatten)


def restore(places: list) -> None:
    """Undo :func:`substitute` where the function left its value in place (a value it stored there stays)."""
    for container, key, new, old in reversed(places):
        if container[key] is new:
            container[key] = old
