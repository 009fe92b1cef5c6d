"""``vmap``: map a function over an axis of its inputs.

The function is traced once, on the first slice of each mapped input (through marker nodes, as the
differentiation transforms do), and its graph is replayed on the whole batch: each node that depends on a
mapped input is rebuilt by its primitive's batching rule (``Primitive.vmap``, see ``_batching``), with the
batch as the first axis. Where a primitive has no rule, or the function evaluated a value that depends on its
input (which would freeze it at the first slice), ``vmap`` falls back to a loop: one call per slice, results
stacked.
"""

from __future__ import annotations

from collections.abc import Callable

from ..array import array
from ..ops import broadcast_to, expand_dims, moveaxis, stack, zeros
from ..runtime.retain import Tracing
from . import _trees
from .autodiff import _marker, _rebound, _units

__all__ = ["vmap"]


def _check_spec(spec, what: str) -> None:
    """An axes specification is an int, None, or a list, tuple or dict of them (nested): else ValueError."""
    if spec is None or (isinstance(spec, int) and not isinstance(spec, bool)):
        return
    if isinstance(spec, (list, tuple)):
        for s in spec:
            _check_spec(s, what)
    elif isinstance(spec, dict):
        for s in spec.values():
            _check_spec(s, what)
    else:
        raise ValueError(f"vmap: {what} must be an int, None, or a list, tuple or dict of them; got {spec!r}")


def _per_arg(axes, n: int, what: str) -> list:
    if not isinstance(axes, (list, tuple)):
        return [axes] * n
    if len(axes) != n:
        things = "arguments" if what == "in_axes" else "outputs"
        raise ValueError(f"vmap: {what} has {len(axes)} entries for {n} {things}")
    return list(axes)


def _leaf_axes(tree, ax, what: str) -> list:
    """One axis per array leaf of ``tree``: ``ax`` is an int or None for a whole subtree, or a tree of the same
    structure down to where it has one (a prefix tree)."""
    out: list = []

    def walk(t, a):
        if a is None or isinstance(a, int):
            out.extend([a] * len(_trees.flatten(t)))
        elif type(t) is array:
            raise ValueError(f"vmap: {what} gives {a!r} for an array; an array takes an int or None")
        elif isinstance(t, (list, tuple)) and isinstance(a, (list, tuple)) and len(a) == len(t):
            for x, b in zip(t, a):
                walk(x, b)
        elif isinstance(t, dict) and isinstance(a, dict) and set(a) == set(t):
            for k, x in t.items():
                walk(x, a[k])
        else:
            raise ValueError(f"vmap: {what} {a!r} does not match the structure {type(t).__name__} it is for")

    walk(tree, ax)
    return out


def _arrays_only(tree, what: str) -> list:
    try:
        return _trees.flatten(tree, strict=True)
    except ValueError:  # (a leaf that is not an array: said in vmap's words)
        raise ValueError(f"vmap: the {what} must be arrays or trees (lists, tuples, dicts) of arrays") from None


def _take(x: array, i: int, ax: int) -> array:
    key = (slice(None),) * ax + (i,)
    return x[key]


def _first_slice(x: array, ax: int) -> array:
    """The slice at index 0 along ``ax`` (zeros of the slice's shape when the axis is empty)."""
    if x.shape[ax]:
        return _take(x, 0, ax)

    return zeros(x.shape[:ax] + x.shape[ax + 1:], x.dtype)


def vmap(fun: Callable, in_axes=0, out_axes=0) -> Callable:
    """A vectorised ``fun``: it maps over the ``in_axes`` of its inputs, results stacked along ``out_axes``.

    Args:
        fun (Callable): a function of arrays (or trees of arrays) returning an array or a tree of arrays.
        in_axes (int | None | list | tuple | dict): the mapped axis of the inputs (None: not mapped, passed
            whole to every call). A list or tuple gives one entry per positional argument; an int, None or a
            dict applies to every argument. An entry is an int or None for the whole argument, or a tree of
            them matching the argument's structure down to where it has one. Default 0.
        out_axes (int | None | list | tuple | dict): where the mapped axis goes in the outputs, as a tree
            matching the output's structure (None: the output does not depend on the mapped axis and is taken
            from the first call). Default 0.

    Returns:
        Callable: the vectorised function.

    Notes:
        Primitives without a batching rule, or a ``fun`` that reads a value that depends on its mapped inputs
        (``item()``, a branch on an array), make umx call ``fun`` once per slice; results are the same.
    """
    _check_spec(in_axes, "in_axes")
    _check_spec(out_axes, "out_axes")

    def wrapped(*args):
        axes = _per_arg(in_axes, len(args), "in_axes")
        leaves = [_arrays_only(a, "inputs") for a in args]
        leaf_axes = [_leaf_axes(a, ax, "in_axes") for a, ax in zip(args, axes)]
        size = None
        for ls, las in zip(leaves, leaf_axes):
            for x, ax in zip(ls, las):
                if ax is None:
                    continue
                if not -x.ndim <= ax < x.ndim:
                    raise ValueError(f"vmap: in_axes {ax} is out of range for an input of shape {x.shape}")
                n = x.shape[ax]
                if size is not None and n != size:
                    raise ValueError(f"vmap: mapped axes have different sizes ({size} and {n})")
                size = n
        if size is None:
            raise ValueError("vmap: at least one input must be mapped (in_axes all None)")
        with Tracing() as kept:
            try:
                out = _replay(fun, args, leaves, leaf_axes, out_axes, kept)
                if out is not None:
                    return out
            except NotImplementedError:
                pass
            if not size:
                raise ValueError("vmap: an empty mapped axis needs a batching rule for every primitive the "
                                 "function uses")
            results = []
            for i in range(size):
                sliced = [_trees.unflatten(a, [_marker(x) if ax is None else _take(x, i, ax % x.ndim)
                                               for x, ax in zip(ls, las)])
                          for a, ls, las in zip(args, leaves, leaf_axes)]
                results.append(fun(*sliced))
            return _stack(results, out_axes)

    wrapped.__name__ = getattr(fun, "__name__", "vmap")
    wrapped.__doc__ = getattr(fun, "__doc__", None)
    return wrapped


def _out_axes(result, out_axes) -> list:
    """One axis per output leaf (a single array output also takes a one-entry list or tuple)."""
    if type(result) is array and isinstance(out_axes, (list, tuple)) and len(out_axes) == 1:
        out_axes = out_axes[0]
    return _leaf_axes(result, out_axes, "out_axes")


def _reads_a_marker(nodes: list, links: set) -> bool:
    """Whether a node of ``nodes`` (evaluated while ``fun`` ran) depends on a mapped input's marker, found by
    its inputs tuple (``links``: a marker rebound by ``a[k] = v`` keeps it)."""
    stack = list(nodes)
    seen: set = set()
    while stack:
        n = stack.pop()
        if id(n._inputs) in links:
            return True
        if id(n) not in seen:
            seen.add(id(n))
            stack.extend(n._inputs)
    return False


def _replay(fun, args, leaves, leaf_axes, out_axes, kept: list):
    """``fun`` traced on the first slice and replayed on the batch; None where the trace can't be replayed."""

    markers: list = []
    whole: list = []
    sliced = []
    for a, ls, las in zip(args, leaves, leaf_axes):
        new = []
        for x, ax in zip(ls, las):
            if ax is None:
                x = _marker(x)  # (a fresh node: `a[k] = v` in fun must not change the caller's array)
            else:
                mk = _marker(_first_slice(x, ax % x.ndim))
                markers.append(mk)
                whole.append(x if ax % x.ndim == 0 else moveaxis(x, ax, 0))  # (no alias node for nothing)
                x = mk
            new.append(x)
        sliced.append(_trees.unflatten(a, new))
    links = [mk._inputs for mk in markers]
    start = len(kept)
    result = fun(*sliced)
    if len(kept) > start and _reads_a_marker(kept[start:], {id(t) for t in links}):
        return None  # fun read a value that depends on its input: only the loop sees every slice
    outs = _arrays_only(result, "outputs")
    oaxes = _out_axes(result, out_axes)
    markers = _rebound(outs, markers, links)
    batched = {id(mk): w for mk, w in zip(markers, whole) if mk is not None}
    order, _ = _units(outs, [mk for mk in markers if mk is not None], differentiate=False)
    for group, prim, inputs in order:
        axes = [0 if id(x) in batched else None for x in inputs]
        new = prim.vmap([batched.get(id(x), x) for x in inputs], axes, list(group))
        for g, n in zip(group, new):
            batched[id(g)] = n
    size = whole[0].shape[0]
    final = []
    for o, ax in zip(outs, oaxes):
        b = batched.get(id(o))
        if ax is None:
            final.append(o)  # traced on the first slice: the first call's result, as the loop gives
            continue
        if not -(o.ndim + 1) <= ax < o.ndim + 1:
            raise ValueError(f"vmap: out_axes {ax} is out of range for an output of {o.ndim + 1} dimensions")
        if b is None:  # the same for every slice
            b = broadcast_to(expand_dims(o, 0), (size,) + o.shape)
        final.append(b if ax % b.ndim == 0 else moveaxis(b, 0, ax))
    return _trees.unflatten(result, final)


def _stack(results: list, out_axes):

    first = results[0]
    outs = [_arrays_only(r, "outputs") for r in results]
    n_out = len(outs[0])
    oaxes = _out_axes(first, out_axes)
    stacked = []
    for j in range(n_out):
        ax = oaxes[j]
        if ax is None:
            stacked.append(outs[0][j])
            continue
        nd = outs[0][j].ndim + 1
        if not -nd <= ax < nd:
            raise ValueError(f"vmap: out_axes {ax} is out of range for an output of {nd} dimensions")
        stacked.append(stack([o[j] for o in outs], axis=ax))
    return _trees.unflatten(first, stacked)
