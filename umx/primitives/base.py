"""The Primitive base class: what a graph node computes, independent of any device.

A primitive is a small object: its class names the computation, its attributes hold the parameters (an axis, a
shape, a dtype). Ops infer shapes and dtypes before building a node, so a primitive only has to be run. Parameterless
primitives are singletons, which keeps op construction free of allocation.

Transform rules (``jvp``, ``vjp``, ``vmap``) are methods; a primitive without a rule raises an error naming it.
Backends register one kernel per primitive class (see ``umx.backends.xp``).
"""

from __future__ import annotations


class Primitive:
    """Base of all primitives. Subclasses list their parameters in ``__slots__``."""

    __slots__ = ()
    #: how many outputs a node of this primitive has (0: decided per node by its siblings)
    n_outputs = 1

    @property
    def name(self) -> str:
        return type(self).__name__

    def params(self) -> tuple:
        """The parameters, in slot order (a base class's first): what, with the class, identifies the
        computation."""
        return tuple(getattr(self, s) for s in param_names(type(self)))

    def __repr__(self) -> str:
        p = self.params()
        return self.name if not p else f"{self.name}({', '.join(map(repr, p))})"

    def __eq__(self, other) -> bool:
        return type(self) is type(other) and self.params() == other.params()

    def __hash__(self) -> int:
        return hash((type(self), self.params()))

    def jvp(self, primals, tangents, outputs):
        raise NotImplementedError(f"{self.name} has no jvp rule yet")

    def vjp(self, primals, cotangents, outputs):
        raise NotImplementedError(f"{self.name} has no vjp rule yet")

    def vmap(self, inputs, axes, outputs):
        raise NotImplementedError(f"{self.name} has no vmap rule yet")


_PARAM_NAMES: dict = {}


def param_names(cls) -> tuple:
    """The parameter names of primitive class ``cls``: the slots of every class it derives from, bases first (a
    subclass such as ``Sum`` declares none of its own: its parameters are its base ``Reduce``'s)."""
    names = _PARAM_NAMES.get(cls)
    if names is None:
        names = _PARAM_NAMES[cls] = tuple(s for k in reversed(cls.__mro__) for s in k.__dict__.get("__slots__", ())
                                          if s != "__weakref__")
    return names


def singleton(cls):
    """Class decorator for parameterless primitives: the class's one instance, made once."""
    return cls()
