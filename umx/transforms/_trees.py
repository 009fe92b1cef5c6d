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
            items = [(k, rebuild(v)) for k, v in t.items()]
            if type(t) is dict:
                return dict(items)
            # a dict subclass (an nn.Module) is rebuilt as a shallow copy of itself: its constructor need not
            # take pairs, and its other attributes (training mode, frozen keys) come along
            out = copy.copy(t)
            dict.update(out, items)
            return out
        return t

    return rebuild(tree)
