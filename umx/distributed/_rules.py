"""Derivative and batching rules of the communication primitives, registered on their classes.

Gradients follow MLX's convention: the loss is the same on every process (replicated), so the cotangent of an
``all_sum`` input is the output's cotangent itself, and an ``all_gather`` input gets its own block of it. An
``all_max``/``all_min`` input gets the cotangent where it holds the extreme (shared among tied processes; MLX
passes the cotangent through unchanged). Forward rules apply the collective to the tangents. Batching moves the
batch axis out of the way of the first axis that gathers and scatters concatenate and split. ``sum_scatter``
has no backward rule (as in MLX), ``send`` a batching rule only, ``recv`` none (it has no input).
"""

from __future__ import annotations

from .. import ops as m
from ..primitives.distributed import AllGather, AllReduce, Send, SumScatter
from ..transforms._registry import rules
from ._ops import gather_node, reduce_node, scatter_node, send_node


def _is_extreme(self, x, y):
    """1 where this process's ``x`` holds the extreme ``y``, divided among the processes that hold it."""
    hits = m.equal(x, y).astype(x.dtype)
    return hits / reduce_node(hits, "sum", self.group, y._stream)


def _all_reduce_vjp(self, primals, cotangents, outputs):
    c = cotangents[0]
    if self.op == "sum":
        return [c]
    return [c * _is_extreme(self, primals[0], outputs[0])]


def _all_reduce_jvp(self, primals, tangents, outputs):
    t, y = tangents[0], outputs[0]
    if t is None:
        return [None]
    if self.op != "sum":
        t = t * _is_extreme(self, primals[0], y)
    return [reduce_node(t, "sum", self.group, y._stream)]


def _all_reduce_vmap(self, inputs, axes, outputs):
    return [reduce_node(inputs[0], self.op, self.group, outputs[0]._stream)]


def _all_gather_vjp(self, primals, cotangents, outputs):
    x, c = primals[0], cotangents[0]
    rank = self.group.rank()
    if not x.shape:
        return [c[rank]]
    n = x.shape[0]
    return [c[rank * n:(rank + 1) * n]]


def _all_gather_jvp(self, primals, tangents, outputs):
    t = tangents[0]
    return [None if t is None else gather_node(t, self.group, outputs[0]._stream)]


def _batch_second(x, unbatched_ndim: int):
    """Batched ``x`` (batch first) with the batch as the second axis (a 0-d slice becomes a row)."""
    return m.reshape(x, (1,) + x.shape) if unbatched_ndim == 0 else m.moveaxis(x, 0, 1)


def _all_gather_vmap(self, inputs, axes, outputs):
    x = inputs[0]
    gathered = gather_node(_batch_second(x, x.ndim - 1), self.group, outputs[0]._stream)
    return [m.moveaxis(gathered, 1, 0)]


def _sum_scatter_jvp(self, primals, tangents, outputs):
    t = tangents[0]
    return [None if t is None else scatter_node(t, self.group, outputs[0]._stream)]


def _sum_scatter_vmap(self, inputs, axes, outputs):
    scattered = scatter_node(m.moveaxis(inputs[0], 0, 1), self.group, outputs[0]._stream)
    return [m.moveaxis(scattered, 1, 0)]


def _send_vmap(self, inputs, axes, outputs):
    return [send_node(inputs[0], self.dst, self.group, outputs[0]._stream)]


rules(AllReduce, vjp=_all_reduce_vjp, jvp=_all_reduce_jvp, vmap=_all_reduce_vmap)
rules(AllGather, vjp=_all_gather_vjp, jvp=_all_gather_jvp, vmap=_all_gather_vmap)
rules(SumScatter, jvp=_sum_scatter_jvp, vmap=_sum_scatter_vmap)
rules(Send, vmap=_send_vmap)
