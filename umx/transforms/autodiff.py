"""Reverse and forward mode differentiation: ``grad``, ``value_and_grad``, ``vjp`` and ``jvp``.

umx ops are lazy, so calling ``fun`` builds its graph without computing anything. A transform calls ``fun`` on
fresh *marker* nodes (identities of the primal inputs, so that closed-over arrays stay constants and nested
transforms can differentiate through the markers of inner ones), then walks the graph between the markers and
the outputs: backwards, calling each primitive's ``vjp`` rule, or forwards, calling its ``jvp`` rule. The
rules build more lazy nodes; nothing is evaluated here, and the results are arrays like any other.

While ``fun`` runs, the calling thread is marked as tracing (``umx.runtime.retain``): a value ``fun`` reads
(``item()``, ``print``, a branch on an array, ``eval`` of an intermediate) is computed without cutting the graph,
so gradients flow through it as through any node. The nodes evaluated that way are detached when the outermost
transform returns.

Rules run on the default stream (not the forward node's): umx passes streams explicitly and has no
thread-local default to switch to.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

from ..array import _created, array, node
from ..devices import resolve_stream
from ..ops import astype, ones_like, zeros_like
from ..primitives import DEPENDS, Gather, GatherMM, GatherQMM, PutAlongAxis, Scatter, StopGradient, TakeAlongAxis
from ..runtime import scheduler as _scheduler
from ..runtime.node import alias_finished
from ..runtime.retain import Tracing
from . import _grad_tapes, _trees

__all__ = ["grad", "value_and_grad", "vjp", "jvp"]


def _marker(x: array) -> array:
    """A fresh node equal to ``x`` that the walk can recognise as a primal input."""
    return node(DEPENDS, (x,), x._shape, x._dtype, x._stream or resolve_stream(None))


def _rebound(outputs: list, markers: list, links: list) -> list:
    """The markers as nodes of the graph, after ``fun`` ran.

    ``a[k] = v`` inside ``fun`` makes the Python object ``a`` a new node and moves its old state to another
    object (see ``ops.indexing._rebind``); the marker's state keeps its inputs tuple ``links[i]``, so that
    tuple finds it. Only a rebound marker costs a search.
    """
    if all(m._inputs is t for m, t in zip(markers, links)):
        return markers
    wanted = {id(t): i for i, (m, t) in enumerate(zip(markers, links)) if m._inputs is not t}
    found = list(markers)
    for i in wanted.values():
        found[i] = None  # not reachable from the outputs any more: no gradient
    seen: set = set()
    stack = list(outputs)
    while stack and wanted:
        n = stack.pop()
        if id(n) in seen:
            continue
        seen.add(id(n))
        i = wanted.pop(id(n._inputs), None)
        if i is not None:
            found[i] = n
            continue
        stack.extend(n._inputs)
    return found


def _units(outputs: list, markers: list, differentiate: bool = True) -> tuple:
    """The nodes between ``markers`` and ``outputs``, inputs first, as units ``(outputs, prim, inputs)``, and
    the ids of the nodes that depend on a marker.

    A multi-output node (siblings) is one unit: its rule sees every output's cotangent at once, so all of its
    consumers must come before it in the backward walk. Only nodes that depend on a marker are kept (with
    ``differentiate``, not through ``stop_gradient``); detached nodes (``_prim`` None) are constants. A node
    evaluated while a transform traced keeps its primitive and inputs (see ``umx.runtime.retain``), and the walk goes
    through it.
    """
    marker_ids = {id(m) for m in markers if m is not None}
    active: set = set(marker_ids)
    seen: set = set(marker_ids)
    order: list = []
    stack = [(o, False) for o in outputs if id(o) not in seen]
    push, pop = stack.append, stack.pop
    while stack:
        n, expanded = pop()
        if expanded:
            if not differentiate or n._prim.__class__ is not StopGradient:
                for x in n._inputs:
                    if id(x) in active:
                        group = n._siblings or (n,)
                        for g in group:
                            active.add(id(g))
                        order.append((group, n._prim, n._inputs))
                        break
            continue
        sibs = n._siblings
        key = id(sibs[0]) if sibs else id(n)
        if key in seen or n._prim is None:
            if sibs:
                seen.update(id(g) for g in sibs)
            seen.add(id(n))
            continue
        seen.add(key)
        if sibs:
            seen.update(id(g) for g in sibs)
        push((n, True))
        for x in n._inputs:
            if id(x) not in seen:
                push((x, False))
    return order, active


def _add(acc: dict, x: array, c) -> None:
    if c is None:
        return
    k = id(x)
    prev = acc.get(k)
    acc[k] = c if prev is None else prev + c


# the running backward walk: the nodes it differentiates (see needs_gradient) and the creation number it started
# after (see made_here)
_walk = threading.local()


def needs_gradient(x: array) -> bool:
    """Whether the backward walk in progress on this thread wants ``x``'s cotangent (True outside a walk).

    For rules whose gradient with respect to one input does not exist (quantized products in the float modes
    have none for their scales): they raise only when that gradient is asked for."""
    active = getattr(_walk, "active", None)
    return active is None or id(x) in active


def made_here(x: array) -> bool:
    """Whether ``x`` is a node that the backward walk in progress on this thread built and nothing has scheduled:
    no caller holds it, so a rule may hand it on as a cotangent itself rather than a new node of its value."""
    start = getattr(_walk, "start", None)
    return start is not None and x._exec is None and x._data is None and x._seq > start


def backward(outputs: list, cotangents: list, markers: list) -> list:
    """The cotangents of ``markers`` given those of ``outputs`` (None where no gradient reaches a marker).

    A walk whose structure was walked before replays the graph its rules built then (see ``_grad_tapes``)."""
    order, active = _units(outputs, markers)
    taped = _grad_tapes.structure(order, outputs, cotangents, markers) if _grad_tapes.ENABLED and order else None
    entry = _grad_tapes.lookup(taped[0]) if taped is not None else None
    outer = getattr(_walk, "active", None), getattr(_walk, "start", None), getattr(_walk, "shared", None)
    _walk.active = active
    start = _walk.start = next(_created)
    _walk.shared = {}
    try:
        if entry is not None and entry is not _grad_tapes.RECORD:
            try:
                return _grad_tapes.replay(entry, taped[1])
            except _grad_tapes.Mismatch:  # a user's rule changed what it gives: the rules run from now on
                _grad_tapes.refuse(taped[0])
                entry = None
        if entry is None:
            return _backward(order, active, outputs, cotangents, markers)
        calls: list = []
        with _grad_tapes.recording():
            grads = _backward(order, active, outputs, cotangents, markers, calls)
    finally:
        _walk.active, _walk.start, _walk.shared = outer
    try:
        _grad_tapes.record(taped[0], start, grads, taped[1], calls)
    except Exception:  # noqa: BLE001 (a tape is a saving: the gradients are right without one)
        _grad_tapes.refuse(taped[0])
    return grads


def shared(key, make: Callable):
    """``make()``, made once per backward walk for ``key`` (ids of the forward nodes it reads, which the walk
    keeps alive): a value that several rules build from the same node, such as the rows of an input that three
    products (attention's q, k and v) share."""
    memo = getattr(_walk, "shared", None)
    if memo is None:
        return make()
    v = memo.get(key)
    if v is None:
        v = memo[key] = make()
    return v


def _backward(order: list, active: set, outputs: list, cotangents: list, markers: list, calls=None) -> list:
    """The walk itself (see :func:`backward`); ``calls``, when given, gets each call of a rule that runs the user's
    code (``_grad_tapes.LIVE``), as ``_grad_tapes.record`` takes them."""
    cots: dict = {}
    for o, c in zip(outputs, cotangents):
        _add(cots, o, c)
    pop = cots.pop
    for group, prim, inputs in reversed(order):
        if len(group) == 1:  # (most nodes: one output, no list of cotangents to test)
            c = pop(id(group[0]), None)
            if c is None:
                continue
            cs = [c]
        else:
            cs = [pop(id(g), None) for g in group]
            if all(c is None for c in cs):
                continue
            cs = [zeros_like(o) if c is None else c for c, o in zip(cs, group)]
        if prim.__class__ in _INDEXED:
            _check_indices(prim, inputs, active)
        if calls is not None and prim.__class__ in _grad_tapes.LIVE:
            first = next(_created)
            grads = prim.vjp(inputs, cs, list(group))
            calls.append((first, next(_created), group, inputs, cs, grads))
        else:
            grads = prim.vjp(inputs, cs, list(group))
        for x, g in zip(inputs, grads):
            if g is not None:
                k = id(x)
                if k in active:
                    prev = cots.get(k)
                    cots[k] = g if prev is None else prev + g
    return [None if m is None else cots.get(id(m)) for m in markers]


#: primitives with index inputs -> where those are among the inputs: no gradient can flow to indices
_INDEXED = {Gather: slice(1, None), Scatter: slice(2, None), TakeAlongAxis: slice(1, 2),
            PutAlongAxis: slice(1, 2), GatherMM: slice(2, 4), GatherQMM: slice(-2, None)}


def _check_indices(prim, inputs, active: set) -> None:
    if any(id(x) in active for x in inputs[_INDEXED[prim.__class__]]):
        raise ValueError(f"vjp: cannot compute the gradient with respect to the indices of {prim.name}; "
                         "wrap indices computed from a differentiated input in stop_gradient")


def forward(outputs: list, markers: list, tangents: list) -> list:
    """The tangents of ``outputs`` given those of ``markers`` (None where an output ignores them)."""
    order, _ = _units(outputs, markers)
    tans = {id(m): t for m, t in zip(markers, tangents) if m is not None}
    for group, prim, inputs in order:
        ts = [tans.get(id(x)) for x in inputs]
        if all(t is None for t in ts):
            continue
        outs = prim.jvp(inputs, ts, list(group))
        for g, t in zip(group, outs):
            if t is not None:
                tans[id(g)] = t
    return [tans.get(id(o)) for o in outputs]


def _as_list(out, what: str) -> tuple:
    """``fun``'s result as a list of arrays, and whether it was a single array."""
    if type(out) is array:
        return [out], True
    if isinstance(out, (list, tuple)) and all(type(o) is array for o in out):
        return list(out), False
    raise ValueError(f"{what}: the function must return an array or a list or tuple of arrays, "
                     f"got {type(out).__name__}")


def _primal_list(primals, what: str) -> list:
    if type(primals) is array:
        return [primals]
    ps = list(primals)
    for p in ps:
        if type(p) is not array:
            raise TypeError(f"{what}: primals must be arrays, got {type(p).__name__}")
    return ps


def _zero_like_where_none(values: list, like: list) -> list:

    return [zeros_like(x) if v is None else v for v, x in zip(values, like)]


def vjp(fun: Callable, primals: Sequence[array], cotangents: Sequence[array]) -> tuple:
    """The vector-Jacobian product of ``fun`` at ``primals``.

    Args:
        fun (Callable): a function of the primals (positional arrays) returning an array or a list of arrays.
        primals (list[array]): the point to differentiate at.
        cotangents (list[array]): one per output of ``fun``, of the output's shape.

    Returns:
        tuple[list[array], list[array]]: the outputs of ``fun`` and the products, one per primal.
    """
    ps = _primal_list(primals, "vjp")
    cs = _primal_list(cotangents, "vjp")
    with Tracing():
        markers = [_marker(p) for p in ps]
        links = [m._inputs for m in markers]
        outs, _ = _as_list(fun(*markers), "vjp")
        markers = _rebound(outs, markers, links)
        if len(cs) != len(outs):
            raise ValueError(f"vjp: {len(outs)} outputs but {len(cs)} cotangents")
        for o, c in zip(outs, cs):
            if o.shape != c.shape:
                raise ValueError(f"vjp: a cotangent of shape {c.shape} for an output of shape {o.shape}")
        grads = backward(outs, cs, markers)
    alias_finished(markers, ps)  # (as value_and_grad's)
    return outs, [_fit(g, p) for g, p in zip(_zero_like_where_none(grads, ps), ps)]


def jvp(fun: Callable, primals: Sequence[array], tangents: Sequence[array]) -> tuple:
    """The Jacobian-vector product of ``fun`` at ``primals``.

    Args:
        fun (Callable): a function of the primals (positional arrays) returning an array or a list of arrays.
        primals (list[array]): the point to differentiate at.
        tangents (list[array]): one per primal, of the primal's shape.

    Returns:
        tuple[list[array], list[array]]: the outputs of ``fun`` and the products, one per output.
    """
    ps = _primal_list(primals, "jvp")
    ts = _primal_list(tangents, "jvp")
    if len(ps) != len(ts):
        raise ValueError(f"jvp: {len(ps)} primals but {len(ts)} tangents")
    for p, t in zip(ps, ts):
        if p.shape != t.shape:
            raise ValueError(f"jvp: a tangent of shape {t.shape} for a primal of shape {p.shape}")
    with Tracing():
        markers = [_marker(p) for p in ps]
        links = [m._inputs for m in markers]
        outs, _ = _as_list(fun(*markers), "jvp")
        markers = _rebound(outs, markers, links)
        out_tangents = forward(outs, markers, ts)
    return outs, _zero_like_where_none(out_tangents, outs)


def _fit(g: array, p: array) -> array:
    """A gradient in its primal's dtype (integer primals get integer gradients, as in MLX)."""
    if g._dtype is not p._dtype:

        g = astype(g, p._dtype)
    return g


def _argnums(argnums, argnames, what: str) -> tuple:
    if isinstance(argnames, str):
        argnames = [argnames]
    argnames = list(argnames)
    if argnums is None:
        argnums = () if argnames else (0,)
        single = not argnames
    elif isinstance(argnums, int):
        argnums, single = (argnums,), True
    else:
        argnums = tuple(argnums)
        single = len(argnums) == 1
    for a in argnums:
        if not isinstance(a, int):
            raise TypeError(f"{what}: argnums must be integers, got {argnums}")
        if a < 0:
            raise ValueError(f"{what}: argnums must be non-negative integers, got {argnums}")
    if not argnums and not argnames:
        raise ValueError(f"{what}: give at least one argument to differentiate (argnums or argnames)")
    if len(set(argnums)) != len(argnums):
        raise ValueError(f"{what}: repeated argument number in argnums {argnums}")
    return argnums, single, argnames


def _value_and_grad(fun: Callable, nums: tuple, single: bool, names: list, what: str, args, kwargs):
    """``(value, grads)`` for :func:`value_and_grad` and :func:`grad` (``what`` names the caller)."""
    for a in nums:
        if a >= len(args):
            raise ValueError(f"{what}: argnums {a} but the function got {len(args)} positional arguments")
    for k in names:
        if k not in kwargs:
            raise ValueError(f"{what}: argname {k!r} was not passed as a keyword argument")
    trees = [args[a] for a in nums] + [kwargs[k] for k in names]
    leaves = [_trees.flatten(t, strict=True, what=what) for t in trees]
    shapes = [_trees.unflatten(t, ls) for t, ls in zip(trees, leaves)]  # the trees as given, for the gradients
    flat_orig = [x for ls in leaves for x in ls]
    args = list(args)
    kwargs = dict(kwargs)
    places: list = []
    with Tracing():
        flat = [_marker(x) for x in flat_orig]
        links = [m._inputs for m in flat]
        marked = iter(flat)
        # The function gets the caller's own lists and dicts with markers in them (as in MLX: what it stores in
        # them stays), and the caller's arrays are put back where it left the markers.
        for a in nums:
            args[a], put = _trees.substitute(args[a], marked)
            places += put
        for k in names:
            kwargs[k], put = _trees.substitute(kwargs[k], marked)
            places += put
        try:
            value = fun(*args, **kwargs)
        finally:
            _trees.restore(places)
        loss = value
        if isinstance(value, (list, tuple)) and what == "value_and_grad":
            if not value:
                raise ValueError("value_and_grad: the function returned an empty sequence")
            loss = value[0]
        if type(loss) is not array or loss.ndim != 0:
            got = f"an array of shape {loss.shape}" if type(loss) is array else type(loss).__name__
            extra = ", or a tuple whose first element is one" if what == "value_and_grad" else ""
            raise ValueError(f"{what}: the function must return a scalar (0-d) array{extra}; got {got}")

        flat = _rebound([loss], flat, links)
        grads = backward([loss], [ones_like(loss)], flat)
    # (the markers have served the walk: those of evaluated inputs now read as those inputs, with no task each)
    alias_finished(flat, flat_orig)
    grads = [_fit(g, p) for g, p in zip(_zero_like_where_none(grads, flat_orig), flat_orig)]
    _scheduler.start([loss, *grads])  # (a device computes them while the caller builds what comes next)
    grads = iter(grads)
    per_tree = [_trees.unflatten(t, grads) for t in shapes]
    pos = per_tree[:len(nums)]
    positional = (pos[0] if single else tuple(pos)) if nums else None
    if names:
        return value, (positional, dict(zip(names, per_tree[len(nums):])))
    return value, positional


def value_and_grad(fun: Callable, argnums: int | Sequence[int] | None = None,
                   argnames: str | Sequence[str] = []) -> Callable:  # noqa: B006 (MLX's default)
    """A function computing both ``fun`` and its gradient.

    ``fun`` returns a scalar loss, or a tuple or list whose first element is the scalar loss (the others can
    be anything, e.g. metrics). Gradients are taken with respect to the positional arguments ``argnums`` and
    the keyword arguments ``argnames``, each a tree (dicts, lists, tuples) of arrays; the gradient has the
    same tree. ``fun`` may read values (``item()``, branches, ``eval``): gradients flow through them.

    Args:
        fun (Callable): the function.
        argnums (int | Sequence[int], optional): positional arguments to differentiate; default 0 when
            ``argnames`` is empty too.
        argnames (str | Sequence[str]): keyword arguments to differentiate (default none).

    Returns:
        Callable: ``f(*args, **kwargs) -> (value, grads)``. ``grads`` is the one argument's gradient for a
        single argument number, a tuple for several, and ``(positional, {name: grad})`` when ``argnames`` is
        given.
    """
    nums, single, names = _argnums(argnums, argnames, "value_and_grad")

    def wrapped(*args, **kwargs):
        return _value_and_grad(fun, nums, single, names, "value_and_grad", args, kwargs)

    wrapped.__name__ = getattr(fun, "__name__", "value_and_grad")
    wrapped.__doc__ = getattr(fun, "__doc__", None)
    return wrapped


def grad(fun: Callable, argnums: int | Sequence[int] | None = None,
         argnames: str | Sequence[str] = []) -> Callable:  # noqa: B006 (MLX's default)
    """A function computing the gradient of ``fun``, which returns a scalar (0-d) array.

    Args:
        fun (Callable): the function, of arrays or trees (dicts, lists, tuples) of arrays.
        argnums (int | Sequence[int], optional): positional arguments to differentiate; default 0 when
            ``argnames`` is empty too.
        argnames (str | Sequence[str]): keyword arguments to differentiate (default none).

    Returns:
        Callable: ``f(*args, **kwargs) -> grads``, shaped as in :func:`value_and_grad`.

    Example:
        >>> mx.grad(lambda x: (x * x).sum())(mx.array([1.0, 2.0]))
        array([2, 4], dtype=float32)
    """
    nums, single, names = _argnums(argnums, argnames, "grad")

    def wrapped(*args, **kwargs):
        return _value_and_grad(fun, nums, single, names, "grad", args, kwargs)[1]

    wrapped.__name__ = getattr(fun, "__name__", "grad")
    wrapped.__doc__ = getattr(fun, "__doc__", None)
    return wrapped
