"""Communication kernels on the GPU (``mx.distributed``): NCCL on the node's CUDA stream, or else the group's MPI
communicator, through host memory unless ``UMX_MPI_CUDA_AWARE=1`` says that MPI reads device memory itself.

NCCL calls only enqueue work on the stream: neither the dispatcher nor the caller waits for the transfer. Each
call is made in its turn (see ``umx/distributed/_turns.py``), and a communicator's calls also run on the device in
that order: a call on another stream than the previous call's waits for that call's event first, so that two
kernels of one communicator never run at once and every rank pairs them alike.
"""

from __future__ import annotations

import os

import numpy as np

from ...primitives import distributed as d
from ..xp.distributed import lexicographic_extreme
from ._probe import _cupy
from .strided import contiguous

cp = _cupy()

# NCCL's element types, by NumPy dtype name; the dtypes it lacks travel as another (see _as_nccl)
_TYPES = {"int8": "NCCL_INT8", "uint8": "NCCL_UINT8", "int32": "NCCL_INT32", "uint32": "NCCL_UINT32",
          "int64": "NCCL_INT64", "uint64": "NCCL_UINT64", "float16": "NCCL_FLOAT16", "float32": "NCCL_FLOAT32",
          "float64": "NCCL_FLOAT64"}
_OPS = {"sum": "NCCL_SUM", "max": "NCCL_MAX", "min": "NCCL_MIN"}


def _nccl():
    from cupy.cuda import nccl

    return nccl


def available() -> bool:
    """Whether CuPy's NCCL bindings load."""
    try:
        return bool(getattr(_nccl(), "available", True))
    except Exception:  # CuPy built without NCCL, or the library missing
        return False


def unique_id():
    """A fresh NCCL unique id (rank 0 makes it; every rank of the new communicator needs it)."""
    return _nccl().get_unique_id()


def _as_nccl(x, op: str):
    """``(flat buffer, op)``: ``x`` as an array of a type NCCL reduces, and the reduction to use on it. 16-bit
    integers widen (a sum wraps the same once cast back), booleans are bytes (a sum is an or), complex numbers
    are pairs of floats (sums only)."""
    flat = x.reshape(-1)
    if x.dtype == np.int16 or x.dtype == np.uint16:
        return flat.astype(np.int32 if x.dtype == np.int16 else np.uint32), op
    if x.dtype == np.bool_:
        return flat.view(np.uint8), "max" if op == "sum" else op
    if x.dtype.kind == "c":
        return flat.view(np.float32 if x.dtype == np.complex64 else np.float64), op
    return flat, op


def _from_nccl(buf, like):
    """A result buffer of ``_as_nccl``'s type back as ``like``'s dtype, flat."""
    if buf.dtype == like.dtype:
        return buf
    if like.dtype.itemsize == 2 and like.dtype.kind in "iu":
        return buf.astype(like.dtype)
    return buf.view(like.dtype)


class NcclComm:
    """An NCCL communicator on one GPU: collectives of device arrays on the current CUDA stream, each in its turn.

    Args:
        uid: the NCCL unique id shared by every rank.
        size (int): the number of ranks.
        rank (int): this process's rank.
        device_index (int): the GPU it communicates on.
        turns: the process's sequence of turns.
    """

    def __init__(self, uid, size: int, rank: int, device_index: int, turns):
        nccl = _nccl()
        self.size = size
        self.rank = rank
        self.device_index = device_index
        self.turns = turns
        with cp.cuda.Device(device_index):
            self.comm = nccl.NcclCommunicator(size, uid, rank)
        self._types = {k: getattr(nccl, v) for k, v in _TYPES.items()}
        self._ops = {k: getattr(nccl, v) for k, v in _OPS.items()}
        self._last = None  # (stream pointer, event after it) of the previous call

    def _call(self, ticket: int, launch) -> None:
        """``launch(stream_pointer)`` in turn ``ticket``, on the current stream, after the previous call."""
        if cp.cuda.Device().id != self.device_index:
            raise ValueError(f"the group's NCCL communicator is on gpu {self.device_index}, not on the stream's "
                             f"gpu {cp.cuda.Device().id}")
        stream = cp.cuda.get_current_stream()
        with self.turns.turn(ticket):
            last = self._last
            if last is not None and last[0] != stream.ptr:
                stream.wait_event(last[1])
            launch(stream.ptr)
            event = cp.cuda.Event(disable_timing=True)
            event.record(stream)
            self._last = (stream.ptr, event)

    def all_reduce(self, x, op: str, ticket: int):
        x = contiguous(x)
        if x.dtype.kind == "c" and op != "sum":  # NCCL has no order on complex numbers: gather, then compare
            return lexicographic_extreme(cp, self.all_gather(x.reshape((1,) + x.shape), ticket), op)
        buf, op = _as_nccl(x, op)
        out = cp.empty_like(buf)
        self._call(ticket, lambda s: self.comm.allReduce(buf.data.ptr, out.data.ptr, buf.size,
                                                         self._types[buf.dtype.name], self._ops[op], s))
        return _from_nccl(out, x).reshape(x.shape)

    def all_gather(self, x, ticket: int):
        x = contiguous(x)
        out = cp.empty((self.size * x.shape[0],) + x.shape[1:] if x.ndim else (self.size,), x.dtype)
        send = x.reshape(-1).view(np.uint8)
        self._call(ticket, lambda s: self.comm.allGather(send.data.ptr, out.data.ptr, send.size,
                                                         self._types["uint8"], s))
        return out

    def sum_scatter(self, x, ticket: int):
        x = contiguous(x)
        buf, op = _as_nccl(x, "sum")
        out = cp.empty(buf.size // self.size, buf.dtype)
        self._call(ticket, lambda s: self.comm.reduceScatter(buf.data.ptr, out.data.ptr, out.size,
                                                             self._types[buf.dtype.name], self._ops[op], s))
        return _from_nccl(out, x).reshape((x.shape[0] // self.size,) + x.shape[1:])

    def send(self, x, dst: int, ticket: int):
        data = contiguous(x).reshape(-1).view(np.uint8)
        self._call(ticket, lambda s: self.comm.send(data.data.ptr, data.size, self._types["uint8"], dst, s))
        return x

    def recv(self, shape: tuple, dtype, src: int, ticket: int):
        out = cp.empty(shape, dtype)
        data = out.reshape(-1).view(np.uint8)
        self._call(ticket, lambda s: self.comm.recv(data.data.ptr, data.size, self._types["uint8"], src, s))
        return out


# -- the kernels: NCCL where the group has it, else MPI ------------------------------------------------------------
def _cuda_aware() -> bool:
    return os.environ.get("UMX_MPI_CUDA_AWARE") == "1"


def _by_mpi(call, x=None):
    """``call(xp, x)`` on the group's MPI communicator: with device arrays after the stream's work is done
    (CUDA-aware MPI), else with host copies, the result sent back to the device."""
    if _cuda_aware():
        cp.cuda.get_current_stream().synchronize()
        return call(cp, x)
    return cp.asarray(call(np, None if x is None else cp.asnumpy(x)))  # (asnumpy waits for the stream)


def _all_reduce(prim, x):
    g = prim.group
    if g.nccl is not None:
        return g.nccl.all_reduce(x, prim.op, prim.ticket)
    return _by_mpi(lambda xp, a: g.mpi.all_reduce(a, prim.op, prim.ticket, xp), x)


def _all_gather(prim, x):
    g = prim.group
    if g.nccl is not None:
        return g.nccl.all_gather(x, prim.ticket)
    return _by_mpi(lambda xp, a: g.mpi.all_gather(a, prim.ticket, xp), x)


def _sum_scatter(prim, x):
    g = prim.group
    if g.nccl is not None:
        return g.nccl.sum_scatter(x, prim.ticket)
    return _by_mpi(lambda xp, a: g.mpi.sum_scatter(a, prim.ticket, xp), x)


def _send(prim, x):
    g = prim.group
    if g.nccl is not None:
        return g.nccl.send(x, prim.dst, prim.ticket)
    if _cuda_aware():
        cp.cuda.get_current_stream().synchronize()
        return g.mpi.send(x, prim.dst, prim.ticket, cp)
    g.mpi.send(cp.asnumpy(x), prim.dst, prim.ticket)
    return x


def _recv(prim):
    g = prim.group
    if g.nccl is not None:
        return g.nccl.recv(prim.shape, prim.dtype.np, prim.src, prim.ticket)
    return _by_mpi(lambda xp, a: g.mpi.recv(prim.shape, prim.dtype.np, prim.src, prim.ticket, xp))


KERNELS = {d.AllReduce: _all_reduce, d.AllGather: _all_gather, d.SumScatter: _sum_scatter, d.Send: _send,
           d.Recv: _recv}
