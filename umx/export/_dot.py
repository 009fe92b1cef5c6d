"""``export_to_dot``: the unevaluated graph behind some arrays, in Graphviz's DOT language."""

from __future__ import annotations

import os

from ..array import array


def export_to_dot(file, *args, **kwargs) -> None:
    """Write the graph behind arrays in Graphviz's DOT language (``dot -Tsvg file`` draws it).

    Each primitive is a box; arrays are the nodes between them. The graph stops at evaluated arrays and at
    arrays made from data, which are its sources. Named arrays (keyword arguments) are labelled by name.

    Args:
        file (str | os.PathLike | file): where to write (a path, or a text file object).
        *args (array): arrays, or trees (lists, tuples, dicts) of arrays, whose graph to write.
        **kwargs (array): arrays to label with their keyword.
    """
    if isinstance(file, (str, os.PathLike)):
        if not os.fspath(file):
            raise ValueError("export_to_dot: the file name is empty")
    elif not callable(getattr(file, "write", None)):
        raise TypeError(f"export_to_dot: file must be a path or a text file object, got {type(file).__name__}")
    outputs: list = []
    _arrays(args, outputs)
    named = {}
    for k, v in kwargs.items():
        if type(v) is not array:
            raise TypeError(f"export_to_dot: keyword {k!r} must be an array, got {type(v).__name__}")
        named[id(v)] = k
        outputs.append(v)
    text = _dot(outputs, named)
    if isinstance(file, (str, os.PathLike)):
        with open(file, "w") as fh:
            fh.write(text)
    else:
        file.write(text)


def _arrays(tree, out: list) -> None:
    """The arrays of ``tree`` appended to ``out``, depth first; any other leaf is a TypeError."""
    if type(tree) is array:
        out.append(tree)
    elif isinstance(tree, (list, tuple)):
        for t in tree:
            _arrays(t, out)
    elif isinstance(tree, dict):
        for t in tree.values():
            _arrays(t, out)
    else:
        raise TypeError(f"export_to_dot: expected arrays or trees of arrays, got a {type(tree).__name__}")


def _dot(outputs: list, named: dict) -> str:
    order, seen, stack = [], set(), list(reversed(outputs))
    while stack:  # every array behind the outputs, inputs before their users
        x = stack[-1]
        if id(x) in seen:
            stack.pop()
            continue
        pending = [i for i in (x._inputs if x._prim is not None else ()) if id(i) not in seen]
        if pending:
            stack.extend(reversed(pending))
            continue
        stack.pop()
        seen.add(id(x))
        order.append(x)
    names: dict = {}

    def name(x) -> str:
        n = names.get(id(x))
        if n is None:
            n = names[id(x)] = named.get(id(x)) or letters(len(names))
        return f'"{n}"'

    out_ids = {id(o) for o in outputs}
    lines = ["digraph {"]
    done: set = set()
    for x in order:
        if x._prim is None:
            lines.append(f"{{ rank=source; {name(x)}; }}")
            continue
        group = x._siblings or (x,)
        if id(group[0]) in done:
            continue
        done.update(id(g) for g in group)
        box = f"p{len(done)}"
        lines.append(f'{{ {box} [label ="{type(x._prim).__name__}", shape=rectangle]; }}')
        lines.extend(f"{name(i)} -> {box}" for i in x._inputs)
        for g in group:
            rank = "rank=sink; " if id(g) in out_ids else ""
            lines.append(f"{{ {rank}{name(g)}; }}")
            lines.append(f"{box} -> {name(g)}")
    lines.append("}")
    return "\n".join(lines) + "\n"


def letters(i: int) -> str:
    """MLX's names for values: A, B, ..., Z, AA, AB, ..."""
    s = ""
    i += 1
    while i:
        i, r = divmod(i - 1, 26)
        s = chr(65 + r) + s
    return s
