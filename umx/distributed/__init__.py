"""``mx.distributed``: communication between processes (MLX's ``mlx.core.distributed``).

Start the processes with ``python -m umx.launch -n 4 script.py`` (or any MPI launcher); each calls
:func:`init` for the group of all of them. Collectives (``all_sum``, ``all_gather``, ``all_max``, ``all_min``,
``sum_scatter``) and transfers (``send``, ``recv``, ``recv_like``) are lazy ops like any other: they run on their
stream when evaluated, after their inputs, overlapping other streams' work. Host arrays go through MPI (mpi4py);
GPU arrays through NCCL (CuPy's bindings) when it is available, else through MPI via host memory.

Every process must issue the same communication in the same order (as with MPI): each process communicates one
call at a time, in the order its program planned the calls (see docs/internals.md, *Distributed*).
"""

from . import _rules  # noqa: F401  (attaches the primitives' transform rules)
from ._group import Group, init, is_available
from ._ops import all_gather, all_max, all_min, all_sum, recv, recv_like, send, sum_scatter

__all__ = ["Group", "init", "is_available", "all_sum", "all_max", "all_min", "all_gather", "sum_scatter", "send",
           "recv", "recv_like"]
