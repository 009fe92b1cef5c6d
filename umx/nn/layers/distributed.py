"""Tensor-parallel linear layers and sharding helpers (MLX's ``mlx.nn.layers.distributed``).

A pair of layers splits a block across the processes of a group with one collective: ``AllToShardedLinear``
keeps each process's slice of the output features (its input is the whole activation), ``ShardedToAllLinear``
each process's slice of the input features, whose partial products ``all_sum`` adds up. In a group of one they
are plain linear layers.
"""

from __future__ import annotations

from collections.abc import Callable

import umx as mx
from umx.nn.layers.base import Module
from umx.nn.layers.linear import Linear
from umx.utils import tree_map_with_path

__all__ = ["sum_gradients", "shard_inplace", "shard_linear", "AllToShardedLinear", "ShardedToAllLinear"]

_SHARDINGS = ("all-to-sharded", "sharded-to-all")


def _group(group):
    return group if group is not None else mx.distributed.init()


def sum_gradients(group=None) -> Callable:
    """The identity function whose gradient is summed over ``group`` (what the input of a layer whose output is
    sharded needs: each process's gradient covers its slice of the outputs only).

    Args:
        group (Group, optional): the group; default: the global group.

    Returns:
        Callable: ``f(x) -> x``.
    """
    group = _group(group)
    if group.size() == 1:
        return lambda x: x

    @mx.custom_function
    def identity(x):
        return x

    @identity.vjp
    def _summed(primals, cotangent, output):
        return mx.distributed.all_sum(cotangent, group=group)

    return identity


def _segment_bounds(size: int, segments) -> list[int]:
    """The start of each segment of an axis of ``size`` and its end: ``segments`` equal parts, or the split points
    given as a list."""
    if isinstance(segments, int):
        if segments < 1 or size % segments:
            raise ValueError(f"shard: {size} features do not split into {segments} equal segments")
        return [size * i // segments for i in range(segments + 1)]
    return [0, *segments, size]


def _shard_array(weight: mx.array, axis: int, segments, group) -> mx.array:
    """This process's part of ``weight`` along ``axis``: its slice of every segment, concatenated."""
    n, rank = group.size(), group.rank()
    bounds = _segment_bounds(weight.shape[axis], segments)
    parts = []
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        if (hi - lo) % n:
            raise ValueError(f"shard: a segment of {hi - lo} features does not split over {n} processes")
        step = (hi - lo) // n
        parts.append(mx.take(weight, mx.arange(lo + rank * step, lo + (rank + 1) * step), axis=axis))
    return parts[0] if len(parts) == 1 else mx.concatenate(parts, axis=axis)


def _sharding_fn(sharding: str, segments) -> Callable:
    if sharding not in _SHARDINGS:
        raise ValueError(f"shard: sharding must be one of {_SHARDINGS} or a callable, got {sharding!r}")

    def axis_of(path: str, weight: mx.array):
        if sharding == "all-to-sharded":
            return 0, segments  # the output features: rows of the weight, and the bias
        if path.endswith("bias"):
            return None, segments  # the bias is added once, after the sum
        return -1, segments  # the input features: columns of the weight

    return axis_of


def shard_inplace(module: Module, sharding: str | Callable, *, segments: int | list = 1, group=None) -> None:
    """Replace ``module``'s parameters by this process's shards of them (the module's code is unchanged).

    Args:
        module (Module): the module whose parameters are sharded.
        sharding (str | Callable): ``"all-to-sharded"`` (split the output features), ``"sharded-to-all"``
            (split the input features), or ``fn(path, weight) -> axis`` or ``(axis, segments)`` (``None``: keep
            the whole parameter).
        segments (int | list): the weight is made of this many equal parts (3 for a fused QKV projection), or
            of the parts between these split points; each part is sharded on its own. Default: ``1``.
        group (Group, optional): the group; default: the global group.
    """
    group = _group(group)
    fn = _sharding_fn(sharding, segments) if isinstance(sharding, str) else sharding

    def shard(path, weight):
        if not isinstance(weight, mx.array):
            return weight
        spec = fn(path, weight)
        axis, segs = spec if isinstance(spec, tuple) else (spec, segments)
        return weight if axis is None else _shard_array(weight, axis, segs, group)

    module.update(tree_map_with_path(shard, module.parameters()))


def shard_linear(module: Module, sharding: str, *, segments: int | list = 1, group=None) -> Module:
    """A new sharded layer made from the linear layer ``module`` (which is not changed).

    Args:
        module (Linear): the layer.
        sharding (str): ``"all-to-sharded"`` or ``"sharded-to-all"``.
        segments (int | list): see :func:`shard_inplace`. Default: ``1``.
        group (Group, optional): the group; default: the global group.

    Returns:
        Module: an ``AllToShardedLinear`` or ``ShardedToAllLinear``.
    """
    if sharding not in _SHARDINGS:
        raise ValueError(f"shard_linear: sharding must be one of {_SHARDINGS}, got {sharding!r}")
    if not isinstance(module, Linear):
        raise TypeError(f"shard_linear: expected a Linear layer, got {type(module).__name__}")
    cls = AllToShardedLinear if sharding == "all-to-sharded" else ShardedToAllLinear
    return cls.from_linear(module, segments=segments, group=group)


class _ShardedLinear(Module):
    sharding = ""

    def __init__(self, input_dims: int, output_dims: int, bias: bool = True, group=None) -> None:
        super().__init__()
        self.group = _group(group)
        n = self.group.size()
        split_in = self.sharding == "sharded-to-all"
        if (input_dims if split_in else output_dims) % n:
            raise ValueError(f"{type(self).__name__}: {input_dims if split_in else output_dims} features do not "
                             f"split over {n} processes")
        local = Linear(input_dims // n if split_in else input_dims, output_dims if split_in else output_dims // n,
                       bias=bias)
        self.weight = local.weight
        if bias:
            self.bias = local.bias

    def _extra_repr(self) -> str:
        out, inp = self.weight.shape
        n = self.group.size()
        inp, out = (inp * n, out) if self.sharding == "sharded-to-all" else (inp, out * n)
        return f"input_dims={inp}, output_dims={out}, bias={'bias' in self}"

    @classmethod
    def from_linear(cls, linear_layer: Module, *, segments: int | list = 1, group=None) -> Module:
        """This process's shard of ``linear_layer`` (see :func:`shard_linear`)."""
        out, inp = linear_layer.weight.shape
        layer = cls(inp, out, bias="bias" in linear_layer, group=group)
        params = dict(linear_layer.parameters())
        axis_of = _sharding_fn(cls.sharding, segments)
        for name, value in params.items():
            axis, segs = axis_of(name, value)
            layer[name] = value if axis is None else _shard_array(value, axis, segs, layer.group)
        return layer


class AllToShardedLinear(_ShardedLinear):
    """A linear layer whose output features are split over ``group``: each process gets its slice of the output,
    and the gradient of the (whole) input is summed over the group.

    Args:
        input_dims (int): the input features.
        output_dims (int): the output features, of all processes together.
        bias (bool): add a bias. Default: ``True``.
        group (Group, optional): the group; default: the global group.
    """

    sharding = "all-to-sharded"

    def __call__(self, x: mx.array) -> mx.array:
        x = sum_gradients(self.group)(x)
        if "bias" in self:
            return mx.addmm(self["bias"], x, self["weight"].T)
        return x @ self["weight"].T


class ShardedToAllLinear(_ShardedLinear):
    """A linear layer whose input features are split over ``group``: each process multiplies its slice, and the
    partial products are summed over the group (every process gets the whole output).

    Args:
        input_dims (int): the input features, of all processes together.
        output_dims (int): the output features.
        bias (bool): add a bias. Default: ``True``.
        group (Group, optional): the group; default: the global group.
    """

    sharding = "sharded-to-all"

    def __call__(self, x: mx.array) -> mx.array:
        y = x @ self["weight"].T
        if self.group.size() > 1:
            y = mx.distributed.all_sum(y, group=self.group)
        return y + self["bias"] if "bias" in self else y
