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
from . import _trees
from .autodiff import _marker, _rebound, _units

__all__ = ["vmap"]


def _per_arg(axes, n: int, what: str) -> list:
    if axes is None or isinstance(axes, int):
        return [axes] * n
    axes = list(axes)
    if len(axes) != n:
        things = "arguments" if what == "in_axes" else "outputs"
        raise ValueError(f"vmap: {what} has {len(axes)} entries for {n} {things}")
    return axes


def _leaf_axes(tree, ax) -> list:
    """One axis per array leaf of ``tree``: ``ax`` is an int or None for the whole tree, or a tree of them."""
    leaves = _trees.flatten(tree)
    if ax is None or isinstance(ax, int):
        return [ax] * len(leaves)
    out: list = []

    def walk(t, a):
        if type(t) is array:
            out.append(a)
        elif isinstance(t, (list, tuple)):
            for i, x in enumerate(t):
                walk(x, a if a is None or isinstance(a, int) else a[i])
        elif isinstance(t, dict):
            for k, x in t.items():
                walk(x, a if a is None or isinstance(a, int) else a[k])

    walk(tree, ax)
    return out


def _take(x: array, i: int, ax: int) -> array:
    key = (slice(None),) * ax + (i,)
    return x[key]


def vmap(fun: Callable, in_axes=0, out_axes=0) -> Callable:
    """A vectorised ``fun``: it maps over the ``in_axes`` of its inputs, results stacked along ``out_axes``.

    Args:
        fun (Callable): a function of arrays (or trees of arrays) returning an array or a tree of arrays.
        in_axes (int | None | Sequence): the mapped axis of each positional argument (None: not mapped, passed
            whole to every call); an int or None applies to all arguments. Default 0.
        out_axes (int | None | Sequence): where the mapped axis goes in each output (None: the output does not
            depend on the mapped axis and is taken from the first call). Default 0.

    Returns:
        Callable: the vectorised function.

    Notes:
        Primitives without a batching rule make umx call ``fun`` once per slice; results are the same.
    """
    custom = getattr(fun, "_vmap", None)

    def wrapped(*args):
        axes = _per_arg(in_axes, len(args), "in_axes")
        leaves = [_trees.flatten(a) for a in args]
        leaf_axes = [_leaf_axes(a, ax) for a, ax in zip(args, axes)]
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
        if custom is not None:
            return _custom(custom, args, axes, out_axes)
        try:
            out = _replay(fun, args, leaves, leaf_axes, out_axes)
            if out is not None:
                return out
        except NotImplementedError:
            pass
        results = []
        for i in range(size):
            sliced = [_trees.unflatten(a, [x if ax is None else _take(x, i, ax % x.ndim)
                                           for x, ax in zip(ls, las)])
                      for a, ls, las in zip(args, leaves, leaf_axes)]
            results.append(fun(*sliced))
        return _stack(results, out_axes)

    wrapped.__name__ = getattr(fun, "__name__", "vmap")
    wrapped.__doc__ = getattr(fun, "__doc__", None)
    return wrapped


def _replay(fun, args, leaves, leaf_axes, out_axes):
    """``fun`` traced on the first slice and replayed on the batch; None where the trace can't be replayed."""
    from ..ops import broadcast_to, expand_dims, moveaxis

    markers: list = []
    whole: list = []
    sliced = []
    for a, ls, las in zip(args, leaves, leaf_axes):
        new = []
        for x, ax in zip(ls, las):
            if ax is not None:
                mk = _marker(_take(x, 0, ax % x.ndim))
                markers.append(mk)
                whole.append(moveaxis(x, ax, 0))
                x = mk
            new.append(x)
        sliced.append(_trees.unflatten(a, new))
    links = [mk._inputs for mk in markers]
    result = fun(*sliced)
    if any(mk._prim is None for mk in markers):
        return None  # fun evaluated something that depends on its input: only the loop sees every slice
    outs = _trees.flatten(result)
    markers = _rebound(outs, markers, links)
    batched = {id(mk): w for mk, w in zip(markers, whole) if mk is not None}
    order, _ = _units(outs, [mk for mk in markers if mk is not None])
    for group, prim, inputs in order:
        axes = [0 if id(x) in batched else None for x in inputs]
        new = prim.vmap([batched.get(id(x), x) for x in inputs], axes, list(group))
        for g, n in zip(group, new):
            batched[id(g)] = n
    size = whole[0].shape[0]
    oaxes = [out_axes] if type(result) is array else _per_arg(out_axes, len(outs), "out_axes")
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
        final.append(moveaxis(b, 0, ax))
    return _trees.unflatten(result, final)


def _stack(results: list, out_axes):
    from ..ops import stack

    first = results[0]
    single = type(first) is array
    outs = [_trees.flatten(r) for r in results]
    n_out = len(outs[0])
    oaxes = _per_arg(out_axes, n_out, "out_axes") if not single else [out_axes]
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


def _custom(rule, args, axes, out_axes):
    """A custom_function's own vmap rule: it returns outputs and their mapped axes; move those to out_axes."""
    from ..ops import moveaxis

    outs, oaxes = rule(list(args), list(axes))
    single = type(outs) is array
    outs = [outs] if single else list(outs)
    oaxes = [oaxes] * len(outs) if oaxes is None or isinstance(oaxes, int) else list(oaxes)
    want = _per_arg(out_axes, len(outs), "out_axes")
    moved = [o if a is None or w is None else moveaxis(o, a, w) for o, a, w in zip(outs, oaxes, want)]
    return moved[0] if single else type(outs)(moved)
