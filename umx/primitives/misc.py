"""Primitives without a family: einsum, NaN replacement, medians, windows and dependencies."""

from __future__ import annotations

from .base import NO_INPUTS, Primitive


class Einsum(Primitive):
    """``numpy.einsum`` with the explicit ``subscripts`` ('ij,jk->ik') over the inputs."""

    __slots__ = ("subscripts",)
    capture = False  # contracts through CuPy's cuBLAS, which refuses capture

    def __init__(self, subscripts: str):
        self.subscripts = subscripts


class NanToNum(Primitive):
    """NaN, +inf and -inf replaced by ``nan``, ``posinf`` and ``neginf``."""

    __slots__ = ("nan", "posinf", "neginf")
    capture = True

    def __init__(self, nan: float, posinf: float, neginf: float):
        self.nan = nan
        self.posinf = posinf
        self.neginf = neginf


class Median(Primitive):
    """The median over ``axes``."""

    __slots__ = ("axes", "keepdims")
    capture = False  # not tried under capture yet

    def __init__(self, axes: tuple, keepdims: bool):
        self.axes = axes
        self.keepdims = keepdims


class Window(Primitive):
    """The window function ``kind`` ('bartlett', 'blackman', 'hamming', 'hanning') of ``m`` points."""

    __slots__ = ("kind", "m", "dtype")
    capture = False  # not tried under capture yet
    no_grad = no_vmap = NO_INPUTS

    def __init__(self, kind: str, m: int, dtype):
        self.kind = kind
        self.m = m
        self.dtype = dtype


class Depends(Primitive):
    """The first input, unchanged, computed only after the other inputs."""

    __slots__ = ()
    capture = True
    moves_bits = True


DEPENDS = Depends()


class StopGradient(Primitive):
    """The input, unchanged; gradients do not flow through it."""

    __slots__ = ()
    capture = True
    moves_bits = True


STOP_GRADIENT = StopGradient()


class SideOutput(Primitive):
    """A value that a fused region computes beside its root: the planner's stand-in for an elementwise node the
    region took in although something else holds it (see ``runtime.fusion.merge``). Its one input is the region's
    root, so it runs just after the region, and its kernel hands over value ``index`` that the region's run left
    in ``region.side_values``. ``homes``: the ids of the leaves the node's own region read (where a CUDA graph
    may write it in place); ``was``: the region's private copy of the node's computation and the node's creation
    number, put back if the plan fails."""

    __slots__ = ("region", "index", "homes", "was")
    capture = True  # hands over memory the region's kernel wrote: nothing to enqueue
    moves_bits = True
    no_grad = no_vmap = "made by the planner for one eval: the transforms never reach it"

    @staticmethod
    def key_params(p) -> int:  # which of the region's values: the region itself is the task before it
        return p.index

    def __init__(self, region, index: int, homes: tuple, was: tuple):
        self.region = region
        self.index = index
        self.homes = homes
        self.was = was

    def params(self) -> tuple:  # (the region and the arrays it holds are no parameters)
        return (self.index,)


class Compiled(Primitive):
    """A compiled function's whole graph as one node, made by ``compile`` for a stream whose executor runs such
    nodes (``Traits.programs``). Its siblings are the graph's distinct computed outputs; its inputs the
    function's input leaves, then its random keys, then the tape's array constants. ``program`` (a
    ``transforms._tape.Program``) rebuilds the graph as private nodes for the executor (``build``) or runs it
    step by step (``run_steps``)."""

    __slots__ = ("program",)
    n_outputs = 0
    capture = False  # an executor runs it as a CUDA graph of its own, never inside another
    moves_bits = True  # (its steps take bfloat16 as each of their kernels does: the inputs come as storage)
    no_grad = "made only outside transforms: under grad, vjp and jvp a compiled function replays its graph"
    no_vmap = "made only outside transforms: under vmap a compiled function replays its graph"

    def __init__(self, program):
        self.program = program


class Custom(Primitive):
    """The outputs of a ``custom_function`` call: inputs are its ``n`` outputs, then its array arguments; the
    kernel passes the outputs through. ``fn`` (the ``custom_function``) holds the user's derivative rules."""

    __slots__ = ("fn", "n")
    n_outputs = 0
    capture = True  # passes other nodes' data through (as Depends): nothing to enqueue; several outputs are
    # siblings, which are never captured
    moves_bits = True

    @staticmethod
    def key_params(p) -> int:  # a call's rules, new at every call, take no part in what the kernel does
        return p.n

    def __init__(self, fn, n: int):
        self.fn = fn
        self.n = n
