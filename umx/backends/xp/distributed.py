"""Kernels of the communication primitives (``mx.distributed``) on the host: the group's MPI communicator moves
NumPy arrays. The CUDA backend replaces them (``backends/cuda/collectives.py``: NCCL, or MPI through host memory)."""

from __future__ import annotations

from ...primitives import distributed as d
from . import kernel


@kernel(d.AllReduce)
def _all_reduce(xp, prim, x):
    return prim.group.mpi.all_reduce(x, prim.op, prim.ticket)


@kernel(d.AllGather)
def _all_gather(xp, prim, x):
    return prim.group.mpi.all_gather(x, prim.ticket)


@kernel(d.SumScatter)
def _sum_scatter(xp, prim, x):
    return prim.group.mpi.sum_scatter(x, prim.ticket)


@kernel(d.Send)
def _send(xp, prim, x):
    return prim.group.mpi.send(x, prim.dst, prim.ticket)


@kernel(d.Recv)
def _recv(xp, prim):
    return prim.group.mpi.recv(prim.shape, prim.dtype.np, prim.src, prim.ticket)


def lexicographic_extreme(xp, stacked, op: str):
    """The largest (``op`` 'max') or smallest ('min') of the complex arrays along the first axis of ``stacked``,
    ordered by real part, then imaginary part (NumPy's and MLX's order; MPI and NCCL have no order on complex)."""
    best = stacked[0]
    for other in stacked[1:]:
        if op == "max":
            better = (other.real > best.real) | ((other.real == best.real) & (other.imag > best.imag))
        else:
            better = (other.real < best.real) | ((other.real == best.real) & (other.imag < best.imag))
        best = xp.where(better, other, best)
    return best
