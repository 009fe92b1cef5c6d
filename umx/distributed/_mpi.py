"""The ``mpi`` backend: a group's MPI communicator (mpi4py), which moves host (NumPy) arrays.

Every call waits for its turn (see ``_turns``), so umx makes one MPI call at a time per process, from whichever
thread runs the kernel: MPI's ``THREAD_SERIALIZED`` level is enough (mpi4py asks for ``THREAD_MULTIPLE`` by
default). umx communicates on duplicates of the user's communicators, so its messages never match the user's own
mpi4py calls.
"""

from __future__ import annotations

import functools
import importlib.util
import math
import os

import numpy as np

from ..backends.xp.distributed import lexicographic_extreme
from ..runtime import host_malloc, host_pool

#: the environment variables an MPI launcher sets: a process started by one is part of a job
LAUNCHER_VARIABLES = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK", "MPI_LOCALNRANKS")


def launched() -> bool:
    """Whether this process was started by an MPI launcher (mpirun, mpiexec, srun...)."""
    return any(v in os.environ for v in LAUNCHER_VARIABLES)


def available() -> bool:
    """Whether mpi4py can be imported (without initializing MPI)."""

    return importlib.util.find_spec("mpi4py") is not None


@functools.cache
def _mpi():
    """mpi4py's MPI module, checked once: MPI is initialized at its first import."""
    from mpi4py import MPI

    if MPI.Query_thread() < MPI.THREAD_SERIALIZED:
        raise RuntimeError("umx.distributed: MPI was initialized below THREAD_SERIALIZED (mpi4py.rc.thread_level); "
                           "umx calls MPI from its stream threads, one call at a time")
    return MPI


def _bytes(x):
    """A contiguous array's bytes, flat (for calls that move data without arithmetic)."""
    return x.reshape(-1).view(np.uint8)


def _contiguous(xp, x):
    x = xp.asarray(x)  # (a NumPy scalar constant becomes a 0-d array; a failed input raises its error here)
    return x if x.flags.c_contiguous else x.copy()


# A collective's result is made again at every step (a gradient's sum). Below the host pool's size (as for the
# CPU kernels' results) it comes from the C library's heap, which umx keeps mapped (runtime/host_malloc.py): its
# pages are reused at no cost, where the pool's bookkeeping would be much of a small collective's overhead. Where
# umx leaves malloc alone, fresh buffers fault their pages in: the pool serves them from 64 KiB.
_POOLED_MIN_BYTES = host_pool.MIN_BYTES if host_malloc.managed() else 64 << 10


def _empty(xp, shape: tuple, dtype):
    """An uninitialised result of ``shape`` and NumPy ``dtype``."""
    if xp is not np:
        return xp.empty(shape, dtype)
    if math.prod(shape) * dtype.itemsize < _POOLED_MIN_BYTES:
        return np.empty(shape, dtype)
    return host_pool.empty(shape, dtype, 0)


def _narrow(dtype) -> bool:
    """Whether sums of ``dtype`` are taken in a wider type (see :func:`_widened`)."""
    return (dtype.kind in "iu" and dtype.itemsize < 4) or dtype == np.float16


def _widened(x):
    """8- and 16-bit integers as 32-bit ones for a sum: Open MPI's vectorized sums of them saturate where NumPy
    and MLX wrap around (cast back, the wider sum wraps the same). float16 as float32: MPI libraries before MPI
    4.1's ``MPIX_C_FLOAT16`` ops (Open MPI 4, the GPU machine's) refuse its reductions, and one rounding of the
    float32 sum is the nearer result besides."""
    if x.dtype == np.float16:
        return x.astype(np.float32)
    return x.astype(np.int32 if x.dtype.kind == "i" else np.uint32)


class MpiComm:
    """An MPI communicator's collectives, each in its turn. Arrays are NumPy's, or, with ``xp`` CuPy, device
    arrays for a CUDA-aware MPI (the caller has synchronized their stream).

    Args:
        comm: the mpi4py communicator (umx's own duplicate).
        turns: the process's sequence of turns.
    """

    def __init__(self, comm, turns):
        self.comm = comm
        self.turns = turns
        self.rank = comm.Get_rank()
        self.size = comm.Get_size()
        mpi = _mpi()
        self._ops = {"sum": mpi.SUM, "max": mpi.MAX, "min": mpi.MIN}
        self._bool_ops = {"sum": mpi.LOR, "max": mpi.LOR, "min": mpi.LAND}
        self._reducers: dict = {}  # (op, NumPy dtype) -> the reducer ``reducer`` made, or None

    @classmethod
    def world(cls, turns) -> MpiComm:
        """umx's duplicate of ``MPI.COMM_WORLD`` (initializing MPI if needed)."""
        mpi = _mpi()
        with turns.now():
            return cls(mpi.COMM_WORLD.Dup(), turns)

    def split(self, color: int, key: int) -> MpiComm:
        """The communicator of the processes that passed the same ``color``, ranked by ``key``."""
        with self.turns.now():
            return MpiComm(self.comm.Split(color, key), self.turns)

    def bcast(self, obj, root: int = 0):
        """``obj`` of rank ``root`` on every rank (a small Python object; for set-up, in a turn of its own)."""
        with self.turns.now():
            return self.comm.bcast(obj, root=root)

    def allgather(self, obj) -> list:
        """Every rank's ``obj``, in rank order (small Python objects; for set-up, in a turn of its own)."""
        with self.turns.now():
            return self.comm.allgather(obj)

    def reducer(self, op: str, dtype):
        """``reduce(buf)``: the elementwise ``op`` ('sum', 'max', 'min') over the group of the contiguous arrays
        ``buf`` of NumPy ``dtype``, written into ``buf`` (``MPI_IN_PLACE``) by one call into MPI, which the caller
        makes in its turn. None where that op is not reduced in place: 8- and 16-bit integer sums (reduced as
        32-bit ones), float16 (reduced as float32) and the extremes of complex numbers (gathered)."""
        key = (op, dtype)
        if key in self._reducers:
            return self._reducers[key]
        kind = dtype.kind
        if (_narrow(dtype) and (op == "sum" or kind == "f")) or (kind == "c" and op != "sum"):
            reduce = None
        else:
            mop = (self._bool_ops if kind == "b" else self._ops)[op]
            reduce = functools.partial(self.comm.Allreduce, _mpi().IN_PLACE, op=mop)
        self._reducers[key] = reduce
        return reduce

    def all_reduce(self, x, op: str, ticket: int, xp=np):
        """The elementwise ``op`` ('sum', 'max', 'min') of ``x`` over the group."""
        if x.__class__ is not np.ndarray or not x.flags.c_contiguous:
            x = _contiguous(xp, x)
        dtype = x.dtype
        reduce = self.reducer(op, dtype)
        # Every rank reduces in place (MPI asks it of all of them or none): into a copy of ``x`` here, into the
        # input's own buffer where the CPU backend donates it (cpu/donate.py). MPI would make that copy itself.
        narrow = reduce is None
        if not narrow:
            out = _empty(xp, x.shape, dtype)
            out[...] = x
        elif dtype.kind == "c":  # MPI has no order on complex numbers: gather, then compare
            everyone = self.all_gather(x.reshape((1,) + x.shape), ticket, xp)
            return lexicographic_extreme(xp, everyone, op)
        else:
            out = _widened(x)  # (a new buffer, reduced in place)
            reduce = self.reducer(op, out.dtype)
        if xp is not np:
            xp.cuda.get_current_stream().synchronize()  # (the copy is queued on the stream: MPI reads it now)
        turns = self.turns  # (begin and end spelled out: the hottest collective skips the context's calls)
        turns.begin(ticket)
        try:
            reduce(out)
        finally:
            turns.end(ticket)
        return out.astype(dtype) if narrow else out

    def all_gather(self, x, ticket: int, xp=np):
        """Every rank's ``x`` concatenated along the first axis (0-d inputs: stacked)."""
        x = _contiguous(xp, x)
        shape = (self.size * x.shape[0],) + x.shape[1:] if x.ndim else (self.size,)
        out = _empty(xp, shape, x.dtype)
        with self.turns.turn(ticket):
            self.comm.Allgather(_bytes(x), _bytes(out))
        return out

    def sum_scatter(self, x, ticket: int, xp=np):
        """This rank's block of the first axis of the sum of ``x`` over the group."""
        x = _contiguous(xp, x)
        narrow = _narrow(x.dtype)
        buf = _widened(x) if narrow else x
        out = _empty(xp, (x.shape[0] // self.size,) + x.shape[1:], buf.dtype)
        mop = (self._bool_ops if x.dtype.kind == "b" else self._ops)["sum"]
        with self.turns.turn(ticket):
            self.comm.Reduce_scatter_block(buf, out, op=mop)
        return out.astype(x.dtype) if narrow else out

    def send(self, x, dst: int, ticket: int, xp=np):
        """Send ``x`` to rank ``dst``; returns ``x``."""
        data = _contiguous(xp, x)
        with self.turns.turn(ticket):
            self.comm.Send(_bytes(data), dst)
        return x

    def recv(self, shape: tuple, dtype, src: int, ticket: int, xp=np):
        """An array of ``shape`` and NumPy ``dtype`` from rank ``src``."""
        out = _empty(xp, shape, np.dtype(dtype))
        with self.turns.turn(ticket):
            self.comm.Recv(_bytes(out), src)
        return out
