"""The one way a transform rule reaches a primitive: ``rules(*classes, vjp=..., jvp=..., vmap=...)``.

Rules are built from ops, which sit above the primitives, so they are written here (and in
``umx/distributed/_rules.py``) and installed on the classes as the methods the transforms call
(``prim.vjp(primals, cotangents, outputs)``, ``prim.jvp(primals, tangents, outputs)``,
``prim.vmap(inputs, axes, outputs)``). A class gets each rule once, and none that it declares it has not
(``no_grad``, ``no_vjp``, ``no_jvp``, ``no_vmap``, see ``umx.primitives.base``): the declaration beside the class
and the registry cannot disagree.
"""

from __future__ import annotations

from collections.abc import Callable

from ..primitives.base import Primitive

#: the declarations that say why a class has no rule of each kind
_REASONS = {"vjp": ("no_grad", "no_vjp"), "jvp": ("no_grad", "no_jvp"), "vmap": ("no_vmap",)}


def rules(*classes: type, vjp: Callable | None = None, jvp: Callable | None = None,
          vmap: Callable | None = None) -> None:
    """Install transform rules on primitive classes (a family base such as ``Unary`` gives them to every member).

    Args:
        *classes (type): ``Primitive`` subclasses.
        vjp (Callable, optional): ``vjp(self, primals, cotangents, outputs)``, one cotangent (or None) per input.
        jvp (Callable, optional): ``jvp(self, primals, tangents, outputs)``, one tangent (or None) per output.
        vmap (Callable, optional): ``vmap(self, inputs, axes, outputs)``, the batched outputs, batch first.

    Raises:
        ValueError: a class already has that rule, or declares a reason for having none.
    """
    for cls in classes:
        if not (isinstance(cls, type) and issubclass(cls, Primitive)) or cls is Primitive:
            raise TypeError(f"rules: {cls!r} is not a primitive class")
        for kind, fn in (("vjp", vjp), ("jvp", jvp), ("vmap", vmap)):
            if fn is None:
                continue
            if kind in cls.__dict__:
                raise ValueError(f"rules: {cls.__name__} already has a {kind} rule")
            for declared in _REASONS[kind]:
                reason = getattr(cls, declared)
                if reason is not None:
                    raise ValueError(f"rules: {cls.__name__} declares {declared} = {reason!r}, yet gets a {kind} rule")
            setattr(cls, kind, fn)
