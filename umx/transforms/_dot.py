"""``export_to_dot``: a lazy graph in Graphviz's DOT language, as MLX writes it."""

from __future__ import annotations

import os
import string

from ..array import array
from . import _trees

__all__ = ["export_to_dot"]


def _letters(i: int) -> str:
    """Spreadsheet-style names: A..Z, AA, AB..."""
    name = ""
    i += 1
    while i:
        i, r = divmod(i - 1, 26)
        name = string.ascii_uppercase[r] + name
    return name


def export_to_dot(file, *args, **kwargs) -> None:
    """Write the graph behind some arrays in DOT format, for visualisation (``dot -Tsvg graph.dot``).

    The graph holds every unevaluated node the arrays depend on: a rectangle per primitive (labelled with its
    name), evaluated arrays as its sources and the given arrays as its sinks.

    Args:
        file (str | file): a path to write to, or a file object with ``write``.
        *args (array): the arrays (or trees of arrays) to export.
        **kwargs (array): more arrays, named: they appear under these names.

    Example:
        >>> x, y = mx.array(1), mx.array(2)
        >>> mx.export_to_dot("graph.dot", x + y, x=x, y=y)
    """
    if not (hasattr(file, "write") or isinstance(file, (str, os.PathLike))):
        raise TypeError(f"export_to_dot: file must be a path or a file object, got {type(file).__name__}")
    roots = _trees.flatten(list(args)) + [a for a in kwargs.values() if type(a) is array]
    names = {id(a): str(k) for k, a in kwargs.items() if type(a) is array}
    lines = ["digraph {"]

    def name(a: array) -> str:
        n = names.get(id(a))
        if n is None:
            n = names[id(a)] = _letters(len(names))
        return f'"{n}"'

    seen: set = set()
    order = []
    stack = list(roots)
    while stack:  # (every unevaluated node behind the roots, once, by its creation number)
        n = stack.pop()
        if id(n) in seen:
            continue
        seen.add(id(n))
        if n._data is None:
            order.append(n)
            stack.extend(n._inputs)
    order.sort(key=lambda n: n._seq)
    sources = {id(x): x for n in order for x in n._inputs if x._data is not None}
    for x in roots:
        if x._data is not None:
            sources[id(x)] = x
    for x in sources.values():
        lines.append(f"{{ rank=source; {name(x)}; }}")
    root_ids = {id(r) for r in roots}
    done: set = set()
    for n in order:
        group = n._siblings or (n,)
        if id(group[0]) in done:
            continue
        done.add(id(group[0]))
        unit = id(group[0])
        lines.append(f'{{ {unit} [label ="{n._prim.name}", shape=rectangle]; }}')
        for x in n._inputs:
            lines.append(f"{name(x)} -> {unit}")
        for g in group:
            if id(g) in root_ids:
                lines.append(f"{{ rank=sink; {name(g)}; }}")
            lines.append(f"{unit} -> {name(g)}")
    lines.append("}")
    text = "\n".join(lines) + "\n"
    if hasattr(file, "write"):
        file.write(text)
    else:
        with open(file, "w") as f:
            f.write(text)
