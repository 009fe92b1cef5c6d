"""``compile``, ``checkpoint`` and ``custom_function``.

umx fuses elementwise regions automatically at every eval (see ``umx.fusion``), so ``compile`` has no tracing
step of its own yet: the compiled function calls the function, and ``disable_compile``/``enable_compile``
have nothing to switch. ``custom_function`` wraps a function's outputs in a ``Custom`` node whose rules
are the user's; ``checkpoint`` is a ``custom_function`` whose backward pass recomputes the forward one.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

from ..array import array, node
from ..devices import resolve_stream
from ..primitives import Custom
from . import _trees
from .autodiff import vjp as _vjp

__all__ = ["compile", "disable_compile", "enable_compile", "checkpoint", "custom_function"]

def compile(fun: Callable, inputs=None, outputs=None, shapeless: bool = False) -> Callable:  # noqa: A001 (MLX)
    """A compiled ``fun``: same arguments, same results.

    umx fuses elementwise work at every eval already, so this first version does not trace: it returns a
    wrapper that calls ``fun``. ``inputs`` and ``outputs`` (captured state in MLX) and ``shapeless`` are
    accepted for compatibility and have no effect.

    Args:
        fun (Callable): the function to compile.
        inputs (list | dict, optional): state read by ``fun`` (unused).
        outputs (list | dict, optional): state written by ``fun`` (unused).
        shapeless (bool): whether shape changes need no recompilation (unused; there is no compilation).

    Returns:
        Callable: the compiled function.
    """

    @functools.wraps(fun)
    def compiled(*args, **kwargs):
        return fun(*args, **kwargs)

    return compiled


def disable_compile() -> None:
    """Turn compilation off globally. umx has no compilation step (see :func:`compile`), so compiled functions
    run the same either way; kept for MLX compatibility."""


def enable_compile() -> None:
    """Turn compilation back on (see :func:`disable_compile`)."""


def _custom_vjp(self, primals, cotangents, outputs):
    rule = self.fn._vjp
    if rule is None:  # through the outputs' own graph
        return list(cotangents) + [None] * (len(primals) - self.n)
    grads = rule(list(primals[self.n:]), _one(cotangents), _one(outputs))
    grads = [grads] if type(grads) is array else list(grads)
    return [None] * self.n + grads


def _custom_jvp(self, primals, tangents, outputs):
    rule = self.fn._jvp
    if rule is None:
        return list(tangents[:self.n])
    from ..ops import zeros_like

    args = list(primals[self.n:])
    ts = [zeros_like(p) if t is None else t for p, t in zip(args, tangents[self.n:])]
    outs = rule(args, ts)
    return [outs] if type(outs) is array else list(outs)


Custom.vjp = _custom_vjp
Custom.jvp = _custom_jvp


def _one(xs):
    return xs[0] if len(xs) == 1 else list(xs)


class custom_function:  # noqa: N801 (MLX's name)
    """A function with its own derivative and vmap rules (a decorator).

    Calls behave as the wrapped function. Under ``grad``/``vjp``, the rule registered with :meth:`vjp` is used
    (``rule(primals, cotangents, outputs) -> grads``, one per array argument); under ``jvp``, the one
    registered with :meth:`jvp` (``rule(primals, tangents) -> tangents``); under ``vmap``, the one registered
    with :meth:`vmap` (``rule(inputs, axes) -> (outputs, out_axes)``). A single output or cotangent is passed
    as an array, several as a list. Missing rules fall back to the default transforms. Arrays the function
    captures are constants: no gradient flows to them through a custom rule.

    Args:
        f (Callable): the function, of arrays.
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
        inputs = [x for a in args for x in _trees.flatten(a)]
        prim = Custom(self, len(outs))
        st = resolve_stream(None)
        wrapped = [node(None, (*outs, *inputs), o._shape, o._dtype, st) for o in outs]
        sibs = tuple(wrapped)
        for w in wrapped:
            w._prim = prim
            w._siblings = sibs if len(wrapped) > 1 else None
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
            cs = [cotangents] if type(cotangents) is array else list(cotangents)
            return _vjp(flat_fun, primals, cs)[1]

        return f(*args)

    return wrapped
