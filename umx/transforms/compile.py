"""``compile``, ``checkpoint`` and ``custom_function``.

``compile`` records the graph a function builds, once per signature (the tree structure of the arguments, each
array's shape and dtype, every other leaf by value, the default stream), and replays it on later calls (see
``_tape``): the results are the same lazy arrays an uncompiled call gives, built without running the function's
Python code, so fusion and scheduling at eval are unchanged. ``custom_function`` wraps a function's outputs in a
``Custom`` node whose rules are the user's; ``checkpoint`` is a ``custom_function`` whose backward pass recomputes
the forward one.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable

from ..array import array, node
from ..devices import resolve_stream
from ..ops import zeros_like
from ..ops._core import sibling_nodes
from ..primitives import Custom
from ..runtime.scheduler import outside_traces
from . import _shapeless, _tape, _trees
from ._registry import rules
from .autodiff import vjp as _vjp

__all__ = ["compile", "disable_compile", "enable_compile", "checkpoint", "custom_function"]

_enabled = ["MLX_DISABLE_COMPILE" not in os.environ]  # MLX's variable: set at all (even to 0), it disables
_UNCOMPILED = object()  # a signature whose trace evaluated something: fun is called directly
_MAX_ENTRIES = 256  # signatures kept per compiled function; past that the cache starts over


_CONSTANTS = (bool, int, float, str, type(None))  # the other leaves an argument may have, as in MLX


def _signature(t, leaves: list, strict: bool = True, shapeless: bool = False):
    """A hashable description of the tree ``t`` (its array leaves appended to ``leaves``): an array by its shape
    (its number of dimensions if ``shapeless``) and dtype. With ``strict``, a leaf that is neither an array nor
    a constant of ``_CONSTANTS`` raises ValueError. (On the path of every compiled call, whose state trees hold
    a model's every weight and moment: arrays are taken in the loop, without a call each.)"""
    c = type(t)
    if c is array:
        leaves.append(t)
        return (len(t._shape) if shapeless else t._shape, t._dtype)  # the only entries not led by a type
    if c is list or c is tuple or (c is not dict and isinstance(t, (list, tuple))):
        items = []
        for x in t:
            if type(x) is array:
                leaves.append(x)
                items.append((len(x._shape) if shapeless else x._shape, x._dtype))
            else:
                items.append(_signature(x, leaves, strict, shapeless))
        return (c, tuple(items))
    if c is dict or isinstance(t, dict):
        items = []
        for k, x in t.items():
            if type(x) is array:
                leaves.append(x)
                items.append((k, (len(x._shape) if shapeless else x._shape, x._dtype)))
            else:
                items.append((k, _signature(x, leaves, strict, shapeless)))
        return (c, tuple(items))
    if strict and not isinstance(t, _CONSTANTS):
        raise ValueError("compile: function arguments must be trees (lists, tuples, dicts) of arrays and "
                         f"constants (bool, int, float, str, None); got a {type(t).__name__}")
    return (type(t), t)  # by value; type first, so that 1, 1.0 and True differ


def compile(fun: Callable, inputs=None, outputs=None, shapeless: bool = False) -> Callable:  # noqa: A001 (MLX)
    """A compiled ``fun``: same arguments, same results, less Python work per call.

    The first call with a new signature (the arguments' tree structure, each array's shape and dtype, the
    value of every other argument, and the default stream) traces ``fun``: it runs on stand-ins for its array
    arguments and the graph it builds is recorded. Later calls with that signature rebuild the graph directly,
    without running ``fun``'s Python code; the results are lazy arrays, as an uncompiled call's are.

    What differs from calling ``fun``:

    - Python side effects (prints, counters, assignments to outside objects) happen at the trace only. Arrays
      ``fun`` reads from closures or globals are captured then: pass arrays that change as arguments, or name
      their containers in ``inputs``/``outputs``. ``a[i] = v`` on an argument does not change the caller's array.
    - An output that ``fun`` captured, or made from data (``mx.array([1, 2])``), is the same array object at
      every call.
    - Random draws without ``key=`` are replayed as fresh draws from the global key, as uncompiled calls make
      them (MLX needs ``mx.random.state`` in ``inputs``/``outputs`` for this; umx does not).
    - If ``fun`` evaluates anything while it runs (``eval``, ``item``, ``print``, NumPy conversion), its graph
      holds for those values only, so that signature is not compiled: ``fun`` is called directly each time
      (MLX raises an error instead).
    - Arguments are trees (lists, tuples, dicts) of arrays and constants (bool, int, float, str, None); other
      leaves raise ValueError. A function that reaches one of its inputs other than through its argument (a
      captured array that is, or was computed from, an input) raises ValueError, as in MLX.
    - Nodes that compute the same thing from the same inputs are merged (common subexpressions).

    Compiled functions compose with ``grad``, ``vjp``, ``jvp`` and ``vmap``: a replay builds the graph the
    function would, which the transforms then walk.

    Args:
        fun (Callable): a function of arrays, trees of arrays and other (hashable) values, returning an array or
            a tree of arrays.
        inputs (list | dict, optional): containers (lists, dicts, trees of them) whose arrays ``fun`` reads:
            their current arrays are inputs of every call.
        outputs (list | dict, optional): containers whose arrays ``fun`` replaces: each call puts the new arrays
            in them.
        shapeless (bool): one trace for inputs of any shapes with the same ranks and dtypes: the graph is
            replayed with each node's shape inferred again from its inputs' (see ``_shapeless``). Shapes the
            function computed from its inputs' shapes in Python stay as traced (a reshape's -1 is inferred
            again). Where a primitive's shape cannot be inferred, the function is traced again for those shapes.

    Returns:
        Callable: the compiled function.
    """
    if not callable(fun):
        raise TypeError(f"compile: expected a function, got {type(fun).__name__}")
    cache: dict = {}
    plain = inputs is None and outputs is None

    @functools.wraps(fun)
    def compiled(*args, **kwargs):
        if not _enabled[0]:
            return fun(*args, **kwargs)
        leaves: list = []
        try:
            if plain and not shapeless and not kwargs and all(type(a) is array for a in args):  # (quickly)
                leaves += args
                sig = tuple([(a._shape, a._dtype) for a in args])
            else:
                sig = (_signature(args, leaves, True, shapeless),
                       _signature(kwargs, leaves, True, shapeless) if kwargs else None)
            n_args = len(leaves)
            if not plain:
                held = _signature(inputs, leaves, False, shapeless)
                # (a training step's state is its inputs and its outputs: one walk describes both)
                sig += (held, held if outputs is inputs and not shapeless else _signature(outputs, [], False))
            sig = (sig, resolve_stream(None))
            tape = cache.get(sig)
        except TypeError:  # an unhashable state container's leaf: nothing to key a trace on
            return fun(*args, **kwargs)
        if tape is None:
            tape, keys, out = _tape.record(fun, args, kwargs, leaves, n_args, inputs, outputs, not shapeless)
            if len(cache) >= _MAX_ENTRIES:
                cache.clear()
            cache[sig] = _UNCOMPILED if tape is None else tape
            if tape is None:
                return out
        elif tape is _UNCOMPILED:
            return fun(*args, **kwargs)
        else:
            keys = None
            if shapeless:
                shapes = tuple([x._shape for x in leaves])
                if shapes != tape.in_shapes:
                    tape, keys, out = _for_shapes(tape, shapes, fun, args, kwargs, leaves, n_args, inputs, outputs)
                    if tape is _UNCOMPILED:
                        return fun(*args, **kwargs) if out is None else out
        program = tape.program
        if program is None:
            program = tape.program = _tape.program_for(tape)
        if program and not program.refused and outside_traces():
            flat = program(leaves, keys)  # the whole graph as one node (a CUDA graph; on a CPU, its steps in turn)
        else:
            flat = tape(leaves, keys)
        if outputs is not None:
            _tape.assign(outputs, iter(flat[tape.n_out:]))
        t = tape.template
        return flat[0] if t is _tape.HOLE else _tape.fill(t, iter(flat))

    compiled._cache = cache  # signature -> Tape (or the uncompiled marker): for tests and inspection
    return compiled


def _for_shapes(tape, shapes: tuple, fun, args, kwargs, leaves, n_args, inputs, outputs) -> tuple:
    """A shapeless tape's version for input ``shapes``: derived from it (see ``_shapeless``), or traced again
    where it cannot be. ``(tape, keys, out)`` as ``_tape.record`` gives them (``_UNCOMPILED`` for a trace that
    evaluated something: then ``out`` is its result, or None on later calls)."""
    variants = tape.variants
    if variants is None:
        variants = tape.variants = {}
    found = variants.get(shapes)
    if found is not None:
        return found, None, None
    if len(variants) >= _MAX_ENTRIES:
        variants.clear()
    derived = _shapeless.derive(tape, shapes)
    if derived is not None:
        variants[shapes] = derived
        return derived, None, None
    traced, keys, out = _tape.record(fun, args, kwargs, leaves, n_args, inputs, outputs, False)
    variants[shapes] = _UNCOMPILED if traced is None else traced
    return (_UNCOMPILED, None, out) if traced is None else (traced, keys, None)


def disable_compile() -> None:
    """Turn compilation off globally: compiled functions call their function directly until
    :func:`enable_compile`. Setting the environment variable ``MLX_DISABLE_COMPILE`` (to anything) before
    importing umx does the same."""
    _enabled[0] = False


def enable_compile() -> None:
    """Turn compilation back on (see :func:`disable_compile`); this overrides ``MLX_DISABLE_COMPILE``."""
    _enabled[0] = True


class _Call:
    """One call of a ``custom_function``: the function (whose rules the ``Custom`` node calls) and templates of
    its arguments and outputs (the trees, with ``_tape.HOLE`` for each array), to hand the rules trees shaped
    as MLX does: a single argument as itself, several as a tuple; cotangents and outputs as the outputs' tree."""

    __slots__ = ("fn", "args", "out")

    def __init__(self, fn, args, out):
        self.fn = fn
        self.args = args
        self.out = out

    def primals(self, flat: list):
        args = _tape.fill(self.args, iter(flat))
        return args[0] if len(args) == 1 else args

    def outputs(self, flat: list):
        return _tape.fill(self.out, iter(flat))

    def flat_per_arg(self, tree, what: str) -> list:
        """A rule's result for the arguments, as one array per array argument leaf."""
        if len(self.args) == 1:
            if self.args[0] is _tape.HOLE and isinstance(tree, (list, tuple)) and len(tree) == 1:
                tree = tree[0]
            tree = (tree,)
        got = _grad_leaves(tree, self.args)
        want = _holes(self.args)
        if len(got) != want:
            raise ValueError(f"custom_function: the {what} rule returned {len(got)} arrays for {want} array "
                             "arguments")
        return got


def _grad_leaves(tree, template) -> list:
    """A vjp rule's gradients as a flat list, one per array argument (a ``HOLE`` of the arguments' ``template``):
    its arrays, and None for an argument the rule gives no gradient, alone or as a whole subtree. Where the
    rule's tree differs from the arguments' in structure, its arrays in order (the count is checked after)."""
    if template is _tape.HOLE:
        return [tree] if tree is None or type(tree) is array else _trees.flatten(tree)
    if tree is None:
        return [None] * _holes(template)
    if isinstance(template, (list, tuple)) and isinstance(tree, (list, tuple)) and len(tree) == len(template):
        return [g for t, a in zip(tree, template) for g in _grad_leaves(t, a)]
    if isinstance(template, dict) and isinstance(tree, dict) and tree.keys() == template.keys():
        return [g for k, a in template.items() for g in _grad_leaves(tree[k], a)]
    return _trees.flatten(tree)


def _holes(t) -> int:
    if t is _tape.HOLE:
        return 1
    if isinstance(t, (list, tuple)):
        return sum(_holes(x) for x in t)
    if isinstance(t, dict):
        return sum(_holes(x) for x in t.values())
    return 0


def _custom_vjp(self, primals, cotangents, outputs):
    call = self.fn
    rule = call.fn._vjp
    if rule is None:  # through the outputs' own graph
        return list(cotangents) + [None] * (len(primals) - self.n)

    cs = [zeros_like(o) if c is None else c for c, o in zip(cotangents, outputs)]
    grads = rule(call.primals(primals[self.n:]), call.outputs(cs), call.outputs(outputs))
    return [None] * self.n + call.flat_per_arg(grads, "vjp")


def _custom_jvp(self, primals, tangents, outputs):
    call = self.fn
    rule = call.fn._jvp
    if rule is None:
        return list(tangents[:self.n])

    args = primals[self.n:]
    ts = [zeros_like(p) if t is None else t for p, t in zip(args, tangents[self.n:])]
    outs = _trees.flatten(rule(call.primals(args), call.primals(ts)))
    if len(outs) != self.n:
        raise ValueError(f"custom_function: the jvp rule returned {len(outs)} arrays for {self.n} outputs")
    return outs


rules(Custom, vjp=_custom_vjp, jvp=_custom_jvp)


class custom_function:  # noqa: N801 (MLX's name)
    """A function with its own derivative and vmap rules (a decorator).

    Calls behave as the wrapped function. Under ``grad``/``vjp``, the rule registered with :meth:`vjp` is used
    (``rule(primals, cotangents, outputs) -> grads``); under ``jvp``, the one registered with :meth:`jvp`
    (``rule(primals, tangents) -> tangents``); under ``vmap``, the one registered with :meth:`vmap`
    (``rule(inputs, axes) -> (outputs, out_axes)``). As in MLX, ``primals``, ``tangents``, ``inputs`` and
    ``axes`` are the single argument itself, or a tuple of the arguments (each may be a tree of arrays);
    ``cotangents``, ``outputs`` and a jvp's result have the tree of the function's output; ``grads`` has the
    arguments' (a single argument's gradient alone, several in a tuple), where None for an array argument means
    no gradient flows to it (nothing is computed for it, as for a zero). Missing rules fall back to the default
    transforms. Arrays the function captures are constants: no gradient flows to them through a custom rule.

    Args:
        f (Callable): the function, of arrays or trees of arrays.
    """

    def __init__(self, f: Callable):
        self._f = f
        self._vjp = None
        self._jvp = None
        self._vmap = None
        functools.update_wrapper(self, f)

    def vjp(self, rule: Callable) -> Callable:
        """Register ``rule(primals, cotangents, outputs)`` as the vector-Jacobian product."""
        self._vjp = rule
        return rule

    def jvp(self, rule: Callable) -> Callable:
        """Register ``rule(primals, tangents)`` as the Jacobian-vector product."""
        self._jvp = rule
        return rule

    def vmap(self, rule: Callable) -> Callable:
        """Register ``rule(inputs, axes) -> (outputs, out_axes)`` as the vectorised form."""
        self._vmap = rule
        return rule

    def __call__(self, *args):
        out = self._f(*args)
        single = type(out) is array
        outs = [out] if single else _trees.flatten(out)
        inputs = _trees.flatten(args)
        template = _tape.HOLE if single else _trees.unflatten(out, [_tape.HOLE] * len(outs))
        prim = Custom(_Call(self, _trees.unflatten(args, [_tape.HOLE] * len(inputs)), template), len(outs))
        st = resolve_stream(None)
        ins = (*outs, *inputs)
        if len(outs) == 1:
            wrapped = [node(prim, ins, outs[0]._shape, outs[0]._dtype, st)]
        else:
            wrapped = sibling_nodes(prim, ins, [(o._shape, o._dtype) for o in outs], st)
        return wrapped[0] if single else _trees.unflatten(out, wrapped)


def checkpoint(fun: Callable) -> Callable:
    """``fun`` whose intermediates are not kept for the backward pass: gradients recompute them.

    Args:
        fun (Callable): a function of arrays or trees of arrays, returning an array or a tree of arrays.

    Returns:
        Callable: the same function, with the same results and gradients.
    """

    @functools.wraps(fun)
    def wrapped(*args):
        counts = [len(_trees.flatten(a)) for a in args]

        def flat_fun(*flat):
            it = iter(flat)
            rebuilt = [_trees.unflatten(a, [next(it) for _ in range(n)]) for a, n in zip(args, counts)]
            return _trees.flatten(fun(*rebuilt))

        f = custom_function(fun)

        @f.vjp
        def _recompute(primals, cotangents, outputs):
            flat = _trees.flatten(primals)
            grads = _vjp(flat_fun, flat, _trees.flatten(cotangents))[1]
            return _trees.unflatten(primals, grads)

        return f(*args)

    return wrapped
