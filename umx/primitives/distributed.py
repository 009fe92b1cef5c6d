"""Communication between processes (``mx.distributed``): collectives and point-to-point transfers over a group.

``group`` is the ``mx.distributed.Group`` the node communicates in; its ``mpi`` and ``nccl`` attributes are the
communicators the kernels call. ``ticket`` is the node's turn in its process's order of communication: 0 in the
primitive an op builds, and a fresh copy carrying the ticket replaces it when the node is planned (see
``umx/distributed/_turns.py``), so a primitive shared by several nodes (a compiled function's tape) is never
changed.
"""

from __future__ import annotations

from .base import NO_INPUTS, Primitive, param_names


class Communication(Primitive):
    """Base of the communication primitives."""

    __slots__ = ("group", "ticket")
    capture = False  # each call waits for its turn on the host (_turns.py)

    def __init__(self, group):
        self.group = group
        self.ticket = 0

    def params(self) -> tuple:
        # (the base class reads the subclass's own slots only: the group and the ticket are parameters too)
        return tuple(getattr(self, s) for cls in type(self).__mro__ for s in getattr(cls, "__slots__", ()))

    def with_ticket(self, ticket: int) -> Communication:
        """A copy of this primitive that holds ``ticket``."""
        cls = self.__class__
        new = object.__new__(cls)
        for s in param_names(cls):
            setattr(new, s, getattr(self, s))
        new.ticket = ticket
        return new


class AllReduce(Communication):
    """The elementwise ``op`` ('sum', 'max' or 'min') of the input over every process of the group."""

    __slots__ = ("op",)

    def __init__(self, group, op: str):
        super().__init__(group)
        self.op = op


class AllGather(Communication):
    """The inputs of every process of the group, concatenated along the first axis in rank order."""

    __slots__ = ()
    moves_bits = True


class SumScatter(Communication):
    """This process's part (its rank's block of the first axis) of the sum of the inputs over the group."""

    __slots__ = ()
    no_vjp = "none in MLX, whose convention umx follows here"


class Send(Communication):
    """Sends the input to rank ``dst`` of the group; the output is the input."""

    __slots__ = ("dst",)
    moves_bits = True  # (Recv receives the storage that was sent)
    no_grad = "none in MLX: what is sent leaves this process"

    def __init__(self, group, dst: int):
        super().__init__(group)
        self.dst = dst


class Recv(Communication):
    """An array of ``shape`` and ``dtype`` (a umx Dtype) received from rank ``src`` of the group."""

    __slots__ = ("src", "shape", "dtype")
    no_grad = no_vmap = NO_INPUTS

    def __init__(self, group, src: int, shape: tuple, dtype):
        super().__init__(group)
        self.src = src
        self.shape = shape
        self.dtype = dtype


COMMUNICATION = frozenset({AllReduce, AllGather, SumScatter, Send, Recv})
