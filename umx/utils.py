"""Trees of arrays as MLX's ``mlx.utils`` handles them: nested lists, tuples and dicts whose other values are
leaves. Parameters of a model, gradients and optimizer state are such trees.

Paths name a leaf by the keys and indices that lead to it, joined by dots: ``layers.0.weight``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["tree_map", "tree_map_with_path", "tree_flatten", "tree_unflatten", "tree_reduce", "tree_merge"]


def _is_node(tree, is_leaf) -> bool:
    return isinstance(tree, (list, tuple, dict)) and (is_leaf is None or not is_leaf(tree))


def tree_map(fn: Callable, tree: Any, *rest: Any, is_leaf: Callable | None = None) -> Any:
    """Apply ``fn`` to the leaves of ``tree`` and return a tree of the results.

    Lists and tuples keep their type; dicts (a ``Module`` too) become plain dicts. With ``rest``, ``fn`` gets
    the leaf of ``tree`` and the values at the same place in each tree of ``rest``, which must have at least
    ``tree``'s structure (their subtrees at ``tree``'s leaves are passed whole).

    Args:
        fn (Callable): called on each leaf (and the matching values of ``rest``).
        tree: a Python tree.
        *rest: more trees of the same structure.
        is_leaf (Callable, optional): a node for which it returns True is a leaf.

    Returns:
        The tree of ``fn``'s results.

    Example:
        >>> tree_map(lambda x: x * 2, {"a": [1, 2], "b": 3})
        {'a': [2, 4], 'b': 6}
    """
    if not _is_node(tree, is_leaf):
        return fn(tree, *rest)
    if isinstance(tree, dict):
        return {k: tree_map(fn, v, *(r[k] for r in rest), is_leaf=is_leaf) for k, v in tree.items()}
    out = [tree_map(fn, v, *(r[i] for r in rest), is_leaf=is_leaf) for i, v in enumerate(tree)]
    return _like(tree, out)


def _like(tree, items: list):
    """A list or tuple of ``items`` of ``tree``'s type (a namedtuple takes them as arguments)."""
    if isinstance(tree, list):
        return items if type(tree) is list else type(tree)(items)
    if hasattr(tree, "_fields"):
        return type(tree)(*items)
    return type(tree)(items)


def tree_map_with_path(fn: Callable, tree: Any, *rest: Any, is_leaf: Callable | None = None,
                       path: str | None = None) -> Any:
    """Like :func:`tree_map`, but ``fn`` gets the leaf's path first: ``fn(path, leaf, *rest_leaves)``.

    Args:
        fn (Callable): called as ``fn(path, leaf, *rest)``.
        tree: a Python tree.
        *rest: more trees of the same structure.
        is_leaf (Callable, optional): a node for which it returns True is a leaf.
        path (str, optional): the prefix of every path.

    Returns:
        The tree of ``fn``'s results.

    Example:
        >>> tree_map_with_path(lambda p, x: p, {"a": [1, 2]})
        {'a': ['a.0', 'a.1']}
    """
    if not _is_node(tree, is_leaf):
        return fn(path, tree, *rest)
    prefix = "" if path is None else path + "."
    if isinstance(tree, dict):
        return {k: tree_map_with_path(fn, v, *(r[k] for r in rest), is_leaf=is_leaf, path=f"{prefix}{k}")
                for k, v in tree.items()}
    out = [tree_map_with_path(fn, v, *(r[i] for r in rest), is_leaf=is_leaf, path=f"{prefix}{i}")
           for i, v in enumerate(tree)]
    return _like(tree, out)


def tree_flatten(tree: Any, prefix: str = "", is_leaf: Callable | None = None,
                 destination: list | dict | None = None) -> list | dict:
    """The leaves of ``tree`` with their paths, depth first.

    Args:
        tree: a Python tree.
        prefix (str): put before every path (default ``""``; a path then starts without a dot).
        is_leaf (Callable, optional): a node for which it returns True is a leaf.
        destination (list | dict, optional): where to put the pairs; a dict maps paths to leaves.

    Returns:
        list[tuple[str, Any]] | dict: ``destination``, or a new list of ``(path, leaf)``.

    Example:
        >>> tree_flatten([[[0]]])
        [('0.0.0', 0)]
        >>> tree_flatten({"a": {"b": 1}}, prefix=".model")
        [('model.a.b', 1)]
    """
    if destination is None:
        destination = []
    add = destination.__setitem__ if isinstance(destination, dict) else (
        lambda k, v: destination.append((k, v)))
    stack = [(prefix, tree)]
    while stack:
        path, t = stack.pop()
        if not _is_node(t, is_leaf):
            add(path[1:] if path.startswith(".") else path, t)
            continue
        items = t.items() if isinstance(t, dict) else enumerate(t)
        stack.extend(reversed([(f"{path}.{k}", v) for k, v in items]))
    return destination


def tree_unflatten(tree: list | dict) -> Any:
    """Rebuild a tree from ``(path, value)`` pairs (or a dict of them), the inverse of :func:`tree_flatten`.

    Path components that are all integers make lists (indices from 0 up; an index no path names holds an empty
    dict, as a model's layer without parameters does); others make dicts.

    Args:
        tree (list[tuple[str, Any]] | dict[str, Any]): the pairs.

    Returns:
        The nested tree.

    Example:
        >>> tree_unflatten([("a.0", 1), ("a.1", 2), ("b", 3)])
        {'a': [1, 2], 'b': 3}
    """
    items = list(tree.items()) if isinstance(tree, dict) else list(tree)
    if len(items) == 1 and items[0][0] == "":
        return items[0][1]
    children: dict = {}
    for path, value in items:
        head, _, tail = path.partition(".")
        children.setdefault(head, []).append((tail, value))
    # only canonical integers ("1", not "01") make a list: "01" and "1" would land at the same index
    if all(k.isdigit() and str(int(k)) == k for k in children):
        # positions no path names hold empty dicts, as MLX's (a layer without parameters in a list)
        out: list = [{} for _ in range(max((int(k) for k in children), default=-1) + 1)]
        for k, sub in children.items():
            out[int(k)] = tree_unflatten(sub)
        return out
    return {k: tree_unflatten(sub) for k, sub in children.items()}


def tree_reduce(fn: Callable, tree: Any, initializer: Any = None, is_leaf: Callable | None = None) -> Any:
    """Fold the leaves of ``tree`` into one value: ``fn(accumulator, leaf)`` for each leaf, depth first.

    Args:
        fn (Callable): ``fn(accumulator, leaf)`` returns the new accumulator.
        tree: a Python tree.
        initializer (optional): the first accumulator; by default the first leaf.
        is_leaf (Callable, optional): a node for which it returns True is a leaf.

    Returns:
        The accumulated value.

    Example:
        >>> tree_reduce(lambda acc, x: acc + x, {"a": [1, 2], "b": 3}, 0)
        6
    """
    acc = initializer
    started = initializer is not None
    for _, leaf in tree_flatten(tree, is_leaf=is_leaf):
        if started:
            acc = fn(acc, leaf)
        else:
            acc, started = leaf, True
    return acc


def tree_merge(tree_a: Any, tree_b: Any, merge_fn: Callable | None = None) -> Any:
    """Merge two trees into one. Where only one tree has a value (the other has None, or an empty
    container), that value is kept; where both have a leaf, ``merge_fn(a, b)`` decides, and without one the
    trees must not both have a leaf there (ValueError).

    Args:
        tree_a: a Python tree.
        tree_b: a Python tree.
        merge_fn (Callable, optional): ``merge_fn(a, b)`` for leaves present in both.

    Returns:
        The merged tree.

    Example:
        >>> tree_merge({"a": 1}, {"b": [2]})
        {'a': 1, 'b': [2]}
    """
    if _empty(tree_a) and _empty(tree_b) and _kind(tree_a) != _kind(tree_b) and None not in (tree_a, tree_b):
        raise ValueError(f"tree_merge: cannot merge an empty {type(tree_a).__name__} with an empty "
                         f"{type(tree_b).__name__}")
    if _empty(tree_a):
        return tree_b
    if _empty(tree_b):
        return tree_a
    a_node, b_node = _is_node(tree_a, None), _is_node(tree_b, None)
    if a_node and b_node:
        if isinstance(tree_a, dict) and isinstance(tree_b, dict):
            out = dict(tree_a)
            for k, v in tree_b.items():
                out[k] = tree_merge(out[k], v, merge_fn) if k in out else v
            return out
        if isinstance(tree_a, (list, tuple)) and isinstance(tree_b, (list, tuple)):
            n = max(len(tree_a), len(tree_b))
            items = [tree_merge(tree_a[i] if i < len(tree_a) else None, tree_b[i] if i < len(tree_b) else None,
                                merge_fn) for i in range(n)]
            return _like(tree_a, items)
        raise ValueError(f"tree_merge: cannot merge a {type(tree_a).__name__} with a {type(tree_b).__name__}")
    if a_node or b_node:
        raise ValueError(f"tree_merge: cannot merge a {type(tree_a).__name__} with a {type(tree_b).__name__}")
    if merge_fn is None:
        raise ValueError("tree_merge: both trees have a leaf at the same place and no merge_fn was given")
    return merge_fn(tree_a, tree_b)


def _empty(tree) -> bool:
    return tree is None or (isinstance(tree, (list, tuple, dict)) and len(tree) == 0)


def _kind(tree) -> type:
    return dict if isinstance(tree, dict) else list if isinstance(tree, list) else tuple
