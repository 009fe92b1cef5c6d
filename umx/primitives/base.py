"""The Primitive base class: what a graph node computes, independent of any device.

A primitive is a small object: its class names the computation, its attributes hold the parameters (an axis, a
shape, a dtype). Ops infer shapes and dtypes before building a node, so a primitive only has to be run. Parameterless
primitives are singletons, which keeps op construction free of allocation.

Each class declares, beside its parameters, what the rest of umx needs to know about it (class attributes, so a
node's primitive costs nothing more to make):

- ``capture``: whether a CUDA graph may capture its kernel (True only for kernels that enqueue device work alone:
  no host synchronization, no host data). ``backends/cuda/graphs.py`` captures these, and the nodes of other
  classes that a backend runs by a kernel of its own that only enqueues (``backends/cuda/fast.py``).
- ``moves_bits``: whether the kernel only moves, selects or reinterprets its inputs' elements (layout, gathers,
  bit views, sends): bfloat16 inputs then reach it as their 16-bit storage. Every other kernel gets bfloat16
  inputs widened to float32, and a bfloat16 result it computes is rounded back (``runtime.executor.conform``).
- ``no_grad`` (neither derivative), ``no_vjp``, ``no_jvp``, ``no_vmap``: why it has no such transform rule, for
  each rule it lacks.

Transform rules (``jvp``, ``vjp``, ``vmap``) are methods, built from ops in ``umx/transforms`` and installed by
its ``rules`` registry; a primitive without a rule raises NotImplementedError naming it and the reason. Backends
register one kernel per primitive class (see ``umx.backends.xp``). ``tests/test_primitives.py`` checks that
every primitive has a kernel, a capture decision and each rule or its reason.
"""

from __future__ import annotations

from operator import attrgetter


class Primitive:
    """Base of all primitives. Subclasses list their parameters in ``__slots__``."""

    __slots__ = ()
    #: how many outputs a node of this primitive has (0: decided per node by its siblings)
    n_outputs = 1
    #: may a CUDA graph capture its kernel: True or False, declared by every primitive (None: undecided)
    capture: bool | None = None
    #: does the kernel only move its inputs' elements (True: bfloat16 inputs come as their bits, not widened)
    moves_bits = False
    #: why there is no vjp and no jvp rule, or no vjp, no jvp, no vmap rule (None: there is one)
    no_grad: str | None = None
    no_vjp: str | None = None
    no_jvp: str | None = None
    no_vmap: str | None = None
    #: what of an instance identifies its computation in a graph's structural key, where its parameters as they
    #: are would not (see :func:`structure_key`); None: the class and every parameter
    key_params = None

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
        raise NotImplementedError(_no_rule(self, "jvp", self.no_jvp or self.no_grad))

    def vjp(self, primals, cotangents, outputs):
        raise NotImplementedError(_no_rule(self, "vjp", self.no_vjp or self.no_grad))

    def vmap(self, inputs, axes, outputs):
        raise NotImplementedError(_no_rule(self, "vmap", self.no_vmap))


def _no_rule(prim: Primitive, kind: str, reason: str | None) -> str:
    return f"{prim.name} has no {kind} rule" + (f": {reason}" if reason else " yet")


#: the reason shared by primitives without array inputs (the transforms only reach nodes that depend on one)
NO_INPUTS = "no array inputs: the transforms never reach it"


def subclasses(cls: type = Primitive) -> list:
    """Every class derived from ``cls`` so far (family bases such as ``Unary`` included), bases first."""
    out = []
    for c in cls.__subclasses__():
        out += [c] + subclasses(c)
    return out


_PARAM_NAMES: dict = {}
#: primitive class -> a function of an instance: its structural key (see :func:`structure_key`); hot loops read
#: it as ``(KEY_FUNCTIONS.get(c) or key_function(c))(p)``, without a call more per node
KEY_FUNCTIONS: dict = {}


def structure_key(p: Primitive):
    """Primitive ``p``'s part of a graph's structural key (CUDA graphs, backward tapes): its class, then its
    parameters read by one C-level getter (a primitive's own hash and == are Python code, ten times slower), or
    what the class's ``key_params`` gives (a fill value by its bits: 0.0 == -0.0, but they fill differently)."""
    c = p.__class__
    return (KEY_FUNCTIONS.get(c) or key_function(c))(p)


def key_function(c: type):
    """The function of an instance of primitive class ``c`` that gives its structural key (made once per class)."""
    own = c.key_params
    if own is not None:
        f = lambda p: (c, own(p))  # noqa: E731
    elif not param_names(c):
        f = lambda p: c  # noqa: E731
    else:
        get = attrgetter(*param_names(c))  # (every class's slots: a Sum's axes are its base's)
        f = lambda p: (c, get(p))  # noqa: E731
    KEY_FUNCTIONS[c] = f
    return f


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
