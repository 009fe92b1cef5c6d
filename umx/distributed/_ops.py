"""The communication ops: collectives and transfers between the processes of a group, built as lazy nodes.

Each op checks its arguments and builds one node of a communication primitive on its stream; nothing moves until
the node is evaluated. In a group of one process the collectives return their input.
"""

from __future__ import annotations

from .. import dtypes as dt
from ..devices import DeviceType
from ..ops._core import as_array, int_of, node, resolve_stream, shape_of
from ..primitives.distributed import AllGather, AllReduce, Recv, Send, SumScatter
from ._group import Group, init
from ._group import _world as _WORLD


def _group_of(group, op: str) -> Group:
    if group is None:
        return _WORLD[0] if _WORLD else init()  # (the global group, once made: init's checks are behind it)
    if type(group) is not Group:
        raise TypeError(f"{op}: group must be an mx.distributed.Group or None, got {type(group).__name__}")
    return group


def _stream_for(g: Group, stream, op: str):
    st = resolve_stream(stream)
    if g.nccl is not None and st.device.type is DeviceType.gpu and st.device.index != g.nccl.device_index:
        raise ValueError(f"{op}: the group's NCCL communicator is on gpu {g.nccl.device_index}, the stream on "
                         f"{st.device!r}")
    if g.mpi is None and (g.nccl is None or st.device.type is not DeviceType.gpu):
        raise ValueError(f"{op}: this group communicates GPU arrays only (NCCL without MPI): use a GPU stream")
    return st


def _shared(g: Group, cls, *params):
    """The group's primitive ``cls(g, *params)``, made once: planning gives each node its own ticketed copy."""
    key = (cls, *params)
    prim = g.prims.get(key)
    if prim is None:
        prim = g.prims[key] = cls(g, *params)
    return prim


def reduce_node(x, op: str, g: Group, st):
    """The all-reduce node of ``x`` (no check): for the ops and the transforms' rules."""
    return node(_shared(g, AllReduce, op), (x,), x._shape, x._dtype, st)


def gather_node(x, g: Group, st):
    shape = (g.size() * x._shape[0],) + x._shape[1:] if x._shape else (g.size(),)
    return node(_shared(g, AllGather), (x,), shape, x._dtype, st)


def scatter_node(x, g: Group, st):
    return node(_shared(g, SumScatter), (x,), (x._shape[0] // g.size(),) + x._shape[1:], x._dtype, st)


def send_node(x, dst: int, g: Group, st):
    return node(Send(g, dst), (x,), x._shape, x._dtype, st)


def _all_reduce(x, op: str, group, stream, name: str):
    g = _group_of(group, name)
    x = as_array(x, name)
    if g._size == 1:
        return x
    return reduce_node(x, op, g, _stream_for(g, stream, name))


def all_sum(x, *, group: Group | None = None, stream=None):
    """All reduce sum: the sum of the ``x`` arrays of every process in the group.

    Every process of the group must call it, in the same order as the group's other communication.

    Args:
        x (array): input array, of the same shape and dtype on every process.
        group (Group, optional): the processes that take part. Default: ``None``, the global group.
        stream (Stream, optional): stream or device. Default: ``None``, the default stream of the default device.

    Returns:
        array: the elementwise sum of all ``x`` arrays.
    """
    return _all_reduce(x, "sum", group, stream, "all_sum")


def all_max(x, *, group: Group | None = None, stream=None):
    """All reduce max: the elementwise maximum of the ``x`` arrays of every process in the group.

    Args:
        x (array): input array, of the same shape and dtype on every process.
        group (Group, optional): the processes that take part. Default: ``None``, the global group.
        stream (Stream, optional): stream or device. Default: ``None``, the default stream of the default device.

    Returns:
        array: the maximum of all ``x`` arrays.
    """
    return _all_reduce(x, "max", group, stream, "all_max")


def all_min(x, *, group: Group | None = None, stream=None):
    """All reduce min: the elementwise minimum of the ``x`` arrays of every process in the group.

    Args:
        x (array): input array, of the same shape and dtype on every process.
        group (Group, optional): the processes that take part. Default: ``None``, the global group.
        stream (Stream, optional): stream or device. Default: ``None``, the default stream of the default device.

    Returns:
        array: the minimum of all ``x`` arrays.
    """
    return _all_reduce(x, "min", group, stream, "all_min")


def all_gather(x, *, group: Group | None = None, stream=None):
    """Gather the ``x`` arrays of every process and concatenate them along the first axis, in rank order
    (0-d arrays are stacked into a vector).

    Args:
        x (array): input array, of the same shape and dtype on every process.
        group (Group, optional): the processes that take part. Default: ``None``, the global group.
        stream (Stream, optional): stream or device. Default: ``None``, the default stream of the default device.

    Returns:
        array: the concatenation of all ``x`` arrays.
    """
    g = _group_of(group, "all_gather")
    x = as_array(x, "all_gather")
    if g.size() == 1:
        return x
    return gather_node(x, g, _stream_for(g, stream, "all_gather"))


def sum_scatter(x, *, group: Group | None = None, stream=None):
    """Sum ``x`` over every process of the group and keep this process's block of the first axis:
    ``all_sum(x)[rank * n:(rank + 1) * n]`` with ``n = x.shape[0] // group.size()``, in one reduce-scatter.

    Args:
        x (array): input array, of the same shape and dtype on every process; its first axis must be divisible
          by the group's size.
        group (Group, optional): the processes that take part. Default: ``None``, the global group.
        stream (Stream, optional): stream or device. Default: ``None``, the default stream of the default device.

    Returns:
        array: an array of shape ``(x.shape[0] // group.size(), *x.shape[1:])``.
    """
    g = _group_of(group, "sum_scatter")
    x = as_array(x, "sum_scatter")
    if g.size() == 1:
        return x
    if not x._shape or x._shape[0] % g.size():
        raise ValueError(f"sum_scatter: the first axis of shape {x._shape} must be divisible by the group's size "
                         f"{g.size()}")
    return scatter_node(x, g, _stream_for(g, stream, "sum_scatter"))


def _peer(rank, g: Group, op: str, name: str) -> int:
    if g.size() == 1:
        raise ValueError(f"{op}: cannot communicate within a group of one process")
    rank = int_of(rank, op, name)
    if not 0 <= rank < g.size():
        raise ValueError(f"{op}: {name}={rank} is not a rank of a group of size {g.size()}")
    if rank == g.rank():
        raise ValueError(f"{op}: {name}={rank} is this process's own rank")
    return rank


def send(x, dst: int, *, group: Group | None = None, stream=None):
    """Send ``x`` to the process of rank ``dst`` in the group (which must ``recv`` it).

    Args:
        x (array): input array.
        dst (int): rank of the destination process in the group.
        group (Group, optional): the group of both processes. Default: ``None``, the global group.
        stream (Stream, optional): stream or device. Default: ``None``, the default stream of the default device.

    Returns:
        array: ``x`` itself, as a node that sends it when evaluated.
    """
    g = _group_of(group, "send")
    dst = _peer(dst, g, "send", "dst")
    x = as_array(x, "send")
    return send_node(x, dst, g, _stream_for(g, stream, "send"))


def recv(shape, dtype, src: int, *, group: Group | None = None, stream=None):
    """Receive an array of ``shape`` and ``dtype`` from the process of rank ``src`` in the group.

    Args:
        shape (tuple of int): the shape of the array received.
        dtype (Dtype): its data type.
        src (int): rank of the source process in the group.
        group (Group, optional): the group of both processes. Default: ``None``, the global group.
        stream (Stream, optional): stream or device. Default: ``None``, the default stream of the default device.

    Returns:
        array: the array sent by ``src``.
    """
    g = _group_of(group, "recv")
    src = _peer(src, g, "recv", "src")
    shape = shape_of(shape, "recv")
    dtype = dt.to_dtype(dtype)
    return node(Recv(g, src, shape, dtype), (), shape, dtype, _stream_for(g, stream, "recv"))


def recv_like(x, src: int, *, group: Group | None = None, stream=None):
    """Receive an array with the shape and dtype of ``x`` from the process of rank ``src``:
    ``recv(x.shape, x.dtype, src)``.

    Args:
        x (array): an array of the shape and dtype to receive.
        src (int): rank of the source process in the group.
        group (Group, optional): the group of both processes. Default: ``None``, the global group.
        stream (Stream, optional): stream or device. Default: ``None``, the default stream of the default device.

    Returns:
        array: the array sent by ``src``.
    """
    x = as_array(x, "recv_like")
    return recv(x._shape, x._dtype, src, group=group, stream=stream)
