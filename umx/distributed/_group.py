"""Groups of processes and the backends that make them: ``init``, ``is_available`` and ``Group``."""

from __future__ import annotations

import os
import threading

from ..backends import get
from ..devices import DeviceType
from ..devices import is_available as _device_available
from ..runtime import scheduler
from . import _mpi
from ._turns import TURNS

BACKENDS = ("any", "mpi", "nccl", "ring", "jaccl")
#: set by ``python -m umx.launch --backend``: the backend ``init(backend="any")`` picks
BACKEND_VARIABLE = "UMX_DISTRIBUTED_BACKEND"


class Group:
    """A group of processes that communicate: made by :func:`init` (every process of the job) and
    :meth:`split`. Collectives take one as their ``group=`` argument.

    ``mpi`` and ``nccl`` are umx's communicators for the group (None where the group has none): the kernels of
    the communication primitives call them. ``prims`` holds the ops' ticketless primitives, by parameters.
    """

    __slots__ = ("_rank", "_size", "_backend", "mpi", "nccl", "prims")

    def __init__(self, *args, **kwargs):
        raise TypeError("mx.distributed.Group has no constructor: groups come from mx.distributed.init() and "
                        "Group.split()")

    @classmethod
    def _make(cls, rank: int, size: int, backend: str | None, mpi=None, nccl=None) -> Group:
        g = object.__new__(cls)
        g._rank, g._size, g._backend, g.mpi, g.nccl = rank, size, backend, mpi, nccl
        g.prims = {}  # the ops' primitives in this group, made once (planning gives each node its own copy)
        if backend is not None and scheduler.on_plan is None:
            scheduler.on_plan = TURNS.assign  # from now on, plans hand out communication turns
        return g

    def rank(self) -> int:
        """The rank of this process in the group."""
        return self._rank

    def size(self) -> int:
        """The number of processes in the group."""
        return self._size

    def split(self, color: int, key: int = -1) -> Group:
        """Split the group into subgroups by ``color``: processes that pass the same color form one group.

        Every process of the group must call it (it communicates), at the same point of its program.

        Args:
            color (int): a non-negative value; processes with the same one go to the same subgroup.
            key (int, optional): orders the ranks in the subgroup (smaller key, smaller rank). If negative, the
              rank in this group is used. Default: ``-1``.

        Returns:
            Group: this process's subgroup.
        """
        if self._size == 1:
            raise RuntimeError("split: cannot split a group of one process further")
        if not isinstance(color, int) or not isinstance(key, int):
            raise TypeError(f"split: color and key must be integers, got {color!r} and {key!r}")
        if color < 0:
            raise ValueError(f"split: color must be non-negative, got {color}")
        sub = self.mpi.split(color, key if key >= 0 else self._rank)
        nccl = None
        if self.nccl is not None:
            nccl = _nccl_comm(sub, self.nccl.device_index)
        return Group._make(sub.rank, sub.size, self._backend, sub, nccl)

    def __repr__(self) -> str:
        return f"Group(rank={self._rank}, size={self._size}, backend={self._backend!r})"


_SINGLETON = Group._make(0, 1, None)
_world: list = []  # the global group, once a backend has made it
_init_lock = threading.Lock()  # one global group, even if threads call init at once


def is_available(backend: str = "any") -> bool:
    """Whether a communication backend can be used by this process.

    It says whether umx can instantiate the backend here (its libraries import), not whether a group of several
    processes can be made: for that, use ``init(strict=True)``.

    Args:
        backend (str, optional): ``"mpi"`` (mpi4py), ``"nccl"`` (CuPy's NCCL and a CUDA GPU) or ``"any"``.
          ``"ring"`` and ``"jaccl"`` (MLX's own transports) are never available in umx. Default: ``"any"``.

    Returns:
        bool: whether the backend is available.
    """
    if backend == "mpi":
        return _mpi.available()
    if backend == "nccl":
        return _nccl_available()
    if backend == "any":
        return _mpi.available() or _nccl_available()
    return False


def init(strict: bool = False, backend: str = "any", *, all_gather_factory=None) -> Group:
    """Initialize communication and return the group of every process of the job (the global group).

    Processes are started by an MPI launcher (``python -m umx.launch -n 4 script.py``, or ``mpirun``). A process
    started alone is a world of one: every collective returns its input, and no MPI is initialized.

    Example:

        .. code:: python

            world = mx.distributed.init()
            x = mx.distributed.all_sum(mx.ones(10))  # 10 times world.size()

    Args:
        strict (bool, optional): if ``False``, a group of this process alone is returned when no backend can
          start; if ``True``, that raises a RuntimeError. Default: ``False``.
        backend (str, optional): ``"mpi"``, ``"nccl"`` or ``"any"`` (``"ring"`` and ``"jaccl"`` are accepted
          names that umx does not provide). ``"any"`` uses MPI for host arrays and NCCL for GPU arrays
          where every process has NCCL and a GPU of its own (else MPI moves those too), or the backend named by
          ``umx.launch --backend``. Default: ``"any"``.
        all_gather_factory (Callable, optional): MLX's side channel of the ``jaccl`` backend; only accepted with
          that backend.

    Returns:
        Group: the global group. Later calls return the same group.
    """
    if backend not in BACKENDS:
        raise ValueError(f"init: backend must be one of {', '.join(map(repr, BACKENDS))}, got {backend!r}")
    if all_gather_factory is not None:
        if backend != "jaccl":
            raise ValueError("init: all_gather_factory is only accepted with backend='jaccl'")
        if not callable(all_gather_factory):
            raise TypeError(f"init: all_gather_factory must be callable, got {type(all_gather_factory).__name__}")
    if backend == "any":
        backend = os.environ.get(BACKEND_VARIABLE) or "any"
        if backend not in BACKENDS:
            raise ValueError(f"init: {BACKEND_VARIABLE}={backend!r} names no backend")
    with _init_lock:
        if _world and _serves(_world[0], backend):
            return _world[0]
        try:
            world = _make_world(backend)
        except Exception as e:
            if strict:
                raise RuntimeError(f"init: the {backend!r} backend could not start: {e}") from e
            world = None
        if world is None:
            if strict:
                raise RuntimeError(_why_not(backend))
            return _SINGLETON
        if not _world:
            _world.append(world)
        return world


def _serves(world: Group, backend: str) -> bool:
    """Whether the global group already made answers ``init(backend=backend)``."""
    return (backend == "any" or backend == world._backend or (backend == "mpi" and world.mpi is not None)
            or (backend == "nccl" and world.nccl is not None))


def _why_not(backend: str) -> str:
    if backend in ("ring", "jaccl"):
        return f"init: the {backend!r} backend is one of MLX's own transports, which umx does not provide"
    return (f"init: no {backend!r} backend started: this process was not started by an MPI launcher "
            "(python -m umx.launch -n N script.py)")


def _make_world(backend: str) -> Group | None:
    """The global group by ``backend``, or None where that backend does not apply here."""
    if backend in ("ring", "jaccl"):
        return None
    if backend == "nccl" and not _nccl_available():
        raise RuntimeError("the nccl backend needs CuPy with its NCCL bindings and a CUDA GPU "
                           "(pip install 'umx[cuda]')")
    if not _mpi.launched():
        if backend == "any":
            return None  # a process started alone: a world of one, without initializing MPI
        if backend == "nccl":  # a world of one GPU: no other rank needs the unique id
            cuda = _cuda()
            with TURNS.now():
                nccl = cuda.nccl_communicator(cuda.nccl_unique_id(), 1, 0, 0, TURNS)
            return Group._make(0, 1, backend, None, nccl)
    if not _mpi.available():
        if backend == "any":
            return None
        raise RuntimeError("the mpi backend (and the nccl backend's set-up) needs mpi4py "
                           "(pip install 'umx[distributed]')")
    mpi = _mpi.MpiComm.world(TURNS)
    nccl = None
    if backend == "nccl" or (backend == "any" and _nccl_everywhere(mpi)):
        nccl = _nccl_comm(mpi, 0)
    return Group._make(mpi.rank, mpi.size, backend, mpi, nccl)


def _cuda():
    """The CUDA backend's module (its NCCL functions)."""

    return get(DeviceType.gpu)


def _nccl_available() -> bool:
    return _device_available(DeviceType.gpu) and _cuda().nccl_available()


def _nccl_everywhere(mpi) -> bool:
    """Whether every rank of ``mpi`` has NCCL and a GPU of its own (NCCL refuses two ranks on one GPU: more
    ranks than GPUs, as in a CPU job on a machine with one). Decided on what every rank reports, so that all of
    them agree: one that made a communicator alone would wait for the others forever."""
    mine = _cuda().gpu_identity(0) if _nccl_available() else None
    everyone = mpi.allgather(mine)
    return None not in everyone and len(set(everyone)) == len(everyone)


def _nccl_comm(mpi, device_index: int):
    """An NCCL communicator over the processes of MPI communicator ``mpi``, on GPU ``device_index``: rank 0's
    unique id reaches the others through MPI, then every rank joins (each step in a turn of its own)."""
    cuda = _cuda()
    unique_id = mpi.bcast(cuda.nccl_unique_id() if mpi.rank == 0 else None)
    with TURNS.now():
        return cuda.nccl_communicator(unique_id, mpi.size, mpi.rank, device_index, TURNS)
