"""Layers and helpers for models spread over the processes of a ``mx.distributed`` group.

Tensor parallelism: :class:`AllToShardedLinear` holds a slice of a linear layer's outputs (rows of its weight)
and :class:`ShardedToAllLinear` a slice of its inputs (columns), adding the partial products up with one
``all_sum``; a pair of them (all-to-sharded, then sharded-to-all) computes an MLP with one communication.
:func:`shard_linear` makes them from ``Linear`` (or ``QuantizedLinear``) layers, and :func:`shard_inplace`
shards any module's parameters by a rule.

Fully sharded data parallelism: :class:`FullyShardedModule` (made by :func:`fully_shard`) keeps only this
process's slice of every parameter, gathers the whole parameters for each call and scatters their gradients back,
averaged over the group.

All of it uses umx's public API; each op reads ``mx.distributed.*`` at call time.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import umx as mx
from umx.nn.layers.base import Module
from umx.nn.layers.quantized import QuantizedLinear, _init_quantized_linear
from umx.utils import tree_flatten, tree_map_with_path, tree_unflatten

_SHARDINGS = ("all-to-sharded", "sharded-to-all")


def _group_or_world(group):
    return mx.distributed.init() if group is None else group


@functools.cache  # one per group: the same function at every call
def _sum_gradients(group) -> Callable:
    @mx.custom_function
    def identity(x):
        return x

    @identity.vjp
    def all_sum_cotangent(primals, cotangent, output):
        return mx.distributed.all_sum(cotangent, group=group)

    return identity


def sum_gradients(group=None) -> Callable:
    """A function that returns its argument and, in the backward pass, sums its cotangent over ``group``.

    It goes before a layer whose input is the same on every process of the group but whose output is sharded
    (:class:`AllToShardedLinear`), so that the input's gradient is the whole one, not this process's part.

    Args:
        group (mx.distributed.Group, optional): the group. Default: ``None``, the global group.

    Returns:
        Callable: ``f(x) -> x`` with that gradient (the identity itself in a group of one).
    """
    group = _group_or_world(group)
    if group.size() == 1:
        return lambda x: x
    return _sum_gradients(group)


# -- splitting parameters ---------------------------------------------------------------------------------------

def _check_sharding(sharding: str) -> None:
    if sharding not in _SHARDINGS:
        raise ValueError(f"Sharding type sharding={sharding!r} not supported, choose one of 'all-to-sharded' or "
                         "'sharded-to-all'")


def _all_to_sharded(path: str, weight: mx.array) -> int:
    # a linear weight (out, in) and its bias (out,) split by outputs; stacked weights (experts, out, in) too
    return max(weight.ndim - 2, 0)


def _sharded_to_all(path: str, weight: mx.array) -> int | None:
    # weights split by inputs, their last axis; the bias is added once, after the sum, so every process holds it
    return None if path.endswith("bias") else -1


def _rule(sharding: str | Callable, segments) -> Callable:
    if callable(sharding):
        return sharding
    _check_sharding(sharding)
    axis_of = _all_to_sharded if sharding == "all-to-sharded" else _sharded_to_all

    def rule(path, weight):
        axis = axis_of(path, weight)
        return None if axis is None else (axis, segments)

    return rule


def _shard(parameters: dict, rule: Callable, group) -> dict:
    """``parameters`` with each array replaced by this process's shard, as ``rule(path, array)`` says: ``None``
    (keep it whole), an axis, or ``(axis, segments)``: the array is first cut into ``segments`` (a count of
    equal parts or a list of indices, as ``mx.split``; e.g. 3 for a fused query-key-value weight), each part is
    cut into ``group.size()`` equal pieces, and this process's pieces are joined."""
    size, rank = group.size(), group.rank()

    def shard_one(path, weight):
        if not isinstance(weight, mx.array):
            return weight
        spec = rule(path, weight)
        if spec is None:
            return weight
        if isinstance(spec, int):
            axis, segments = spec, 1
        elif isinstance(spec, tuple) and len(spec) == 2:
            axis, segments = spec
        else:
            raise ValueError(f"The sharding function should return int or tuple[int, list], got {spec!r} for "
                             f"{path!r}")
        if size == 1:
            return weight
        parts = mx.split(weight, segments, axis=axis) if segments != 1 else [weight]
        pieces = [mx.split(part, size, axis=axis)[rank] for part in parts]
        return mx.contiguous(pieces[0] if len(pieces) == 1 else mx.concatenate(pieces, axis=axis))

    return tree_map_with_path(shard_one, parameters)


def shard_inplace(module: Module, sharding: str | Callable, *, segments: int | list = 1, group=None) -> None:
    """Replace, in place, each parameter of ``module`` by this process's shard of it.

    The module itself does not change: it communicates across the group only if its code does so (for a layer
    that does, see :func:`shard_linear`).

    Args:
        module (Module): the module whose parameters are sharded.
        sharding (str | Callable): ``"all-to-sharded"`` (every parameter split along its axis ``ndim - 2``, or
            0 for 1-D ones: a linear layer's outputs), ``"sharded-to-all"`` (every parameter whose path does not
            end in ``bias`` split along its last axis: a linear layer's inputs), or ``sharding(path, array)``
            returning ``None`` (keep it whole), an axis, or ``(axis, segments)``.
        segments (int | list): with a string ``sharding``, the parts each parameter is first cut into, each
            sharded on its own (e.g. 3 for a fused query-key-value weight), or indices to cut at. Default: ``1``.
        group (mx.distributed.Group, optional): the group to shard across. Default: ``None``, the global group.
    """
    module.update(_shard(module.parameters(), _rule(sharding, segments), _group_or_world(group)))


def _matrix_dims(layer: Module, what: str) -> tuple[int, int]:
    weight = layer.get("weight") if isinstance(layer, Module) else None
    if not isinstance(weight, mx.array) or weight.ndim != 2:
        raise ValueError(f"{what}: expected a linear layer with a 2-D weight, got {type(layer).__name__}")
    return weight.shape


def _sharded_parameters(layer: Module, sharding: str, segments, group) -> dict:
    return _shard(layer.parameters(), _rule(sharding, segments), group)


def shard_linear(module: Module, sharding: str, *, segments: int | list = 1, group=None) -> Module:
    """A new layer holding this process's shard of the linear layer ``module`` that communicates as it needs
    (the original layer is left unchanged).

    Args:
        module (Module): a ``Linear`` or ``QuantizedLinear`` layer.
        sharding (str): ``"all-to-sharded"`` (an :class:`AllToShardedLinear`: the output is sharded) or
            ``"sharded-to-all"`` (a :class:`ShardedToAllLinear`: the input is sharded, the output whole).
        segments (int | list): parts the weight is first cut into, each sharded on its own (e.g. 3 for a fused
            query-key-value projection), or indices to cut at. Default: ``1``.
        group (mx.distributed.Group, optional): the group to shard across. Default: ``None``, the global group.

    Returns:
        Module: the sharded layer (quantized if ``module`` is).
    """
    _check_sharding(sharding)
    quantized = isinstance(module, QuantizedLinear)
    if sharding == "all-to-sharded":
        cls = QuantizedAllToShardedLinear if quantized else AllToShardedLinear
    else:
        cls = QuantizedShardedToAllLinear if quantized else ShardedToAllLinear
    if quantized:
        return cls.from_quantized_linear(module, segments=segments, group=group)
    return cls.from_linear(module, segments=segments, group=group)


# -- sharded linear layers ----------------------------------------------------------------------------------------

def _divisible(dims: int, size: int, message: str) -> None:
    if dims % size:
        raise ValueError(message.format(dims=dims, size=size))


class AllToShardedLinear(Module):
    r"""A linear layer whose outputs are sharded across a group: each process holds ``output_dims / N`` rows of
    the weight (and of the bias) and computes that slice of :math:`x W^\top + b` from the whole input.

    The input's gradient is summed over the group in the backward pass (:func:`sum_gradients`), so that it is
    the gradient of the whole output.

    Args:
        input_dims (int): the size of the input's last axis.
        output_dims (int): the size of the whole output's last axis (divisible by the group's size).
        bias (bool, optional): add a learned bias. Default: ``True``.
        group (mx.distributed.Group, optional): the group to shard across. Default: ``None``, the global group.
    """

    def __init__(self, input_dims: int, output_dims: int, bias: bool = True, group=None):
        super().__init__()
        self.group = _group_or_world(group)
        size = self.group.size()
        _divisible(output_dims, size, "Cannot shard the output of size {dims} across {size} devices.")
        scale = math.sqrt(1.0 / input_dims)
        self.weight = mx.random.uniform(low=-scale, high=scale, shape=(output_dims // size, input_dims))
        if bias:
            self.bias = mx.random.uniform(low=-scale, high=scale, shape=(output_dims // size,))

    def _extra_repr(self) -> str:
        out_dims, in_dims = self.weight.shape
        return f"input_dims={in_dims}, output_dims={out_dims * self.group.size()}, bias={'bias' in self}"

    def __call__(self, x: mx.array) -> mx.array:
        x = sum_gradients(self.group)(x)
        if "bias" in self:
            return mx.addmm(self["bias"], x, self["weight"].T)
        return x @ self["weight"].T

    @classmethod
    def from_linear(cls, linear_layer: Module, *, segments: int | list = 1, group=None) -> AllToShardedLinear:
        """This process's :class:`AllToShardedLinear` shard of ``linear_layer`` (segments: see
        :func:`shard_linear`)."""
        group = _group_or_world(group)
        output_dims, input_dims = _matrix_dims(linear_layer, "AllToShardedLinear.from_linear")
        layer = cls(input_dims, output_dims, "bias" in linear_layer, group)
        layer.update(_sharded_parameters(linear_layer, "all-to-sharded", segments, group))
        return layer


class ShardedToAllLinear(Module):
    r"""A linear layer whose inputs are sharded across a group: each process holds ``input_dims / N`` columns
    of the weight, multiplies its slice of the input by them, and one ``all_sum`` adds the partial products up,
    so every process gets the whole :math:`x W^\top + b`.

    Args:
        input_dims (int): the size of the whole input's last axis (divisible by the group's size).
        output_dims (int): the size of the output's last axis.
        bias (bool, optional): add a learned bias (held whole by every process). Default: ``True``.
        group (mx.distributed.Group, optional): the group to shard across. Default: ``None``, the global group.
    """

    def __init__(self, input_dims: int, output_dims: int, bias: bool = True, group=None):
        super().__init__()
        self.group = _group_or_world(group)
        size = self.group.size()
        _divisible(input_dims, size, "The input of size {dims} cannot be sharded across {size} devices.")
        scale = math.sqrt(1.0 / input_dims)
        self.weight = mx.random.uniform(low=-scale, high=scale, shape=(output_dims, input_dims // size))
        if bias:
            self.bias = mx.random.uniform(low=-scale, high=scale, shape=(output_dims,))

    def _extra_repr(self) -> str:
        out_dims, in_dims = self.weight.shape
        return f"input_dims={in_dims * self.group.size()}, output_dims={out_dims}, bias={'bias' in self}"

    def __call__(self, x: mx.array) -> mx.array:
        x = mx.distributed.all_sum(x @ self["weight"].T, group=self.group)
        return x + self["bias"] if "bias" in self else x

    @classmethod
    def from_linear(cls, linear_layer: Module, *, segments: int | list = 1, group=None) -> ShardedToAllLinear:
        """This process's :class:`ShardedToAllLinear` shard of ``linear_layer`` (segments: see
        :func:`shard_linear`)."""
        group = _group_or_world(group)
        output_dims, input_dims = _matrix_dims(linear_layer, "ShardedToAllLinear.from_linear")
        layer = cls(input_dims, output_dims, "bias" in linear_layer, group)
        layer.update(_sharded_parameters(linear_layer, "sharded-to-all", segments, group))
        return layer


class _QuantizedSharded(Module):
    """What the two quantized sharded layers share: a quantized weight (``weight``, ``scales`` and, in
    ``'affine'`` mode, ``biases``) of the given shape, frozen as ``QuantizedLinear``'s is."""

    def unfreeze(self, *args, **kwargs) -> Module:
        """Unfreeze sub-modules as :meth:`Module.unfreeze`; this layer's own (quantized) parameters stay
        frozen."""
        super().unfreeze(*args, **kwargs)
        self.freeze(recurse=False)
        return self

    def _dims(self) -> tuple[int, int]:
        out_dims, packed = self.weight.shape
        return out_dims, packed * 32 // self.bits

    def _repr_with(self, input_dims: int, output_dims: int) -> str:
        return (f"input_dims={input_dims}, output_dims={output_dims}, bias={'bias' in self}, "
                f"group_size={self.group_size}, bits={self.bits}, mode={self.mode}")

    def _matmul(self, x: mx.array) -> mx.array:
        return mx.quantized_matmul(x, self["weight"], scales=self["scales"], biases=self.get("biases"),
                                   transpose=True, group_size=self.group_size, bits=self.bits, mode=self.mode)

    @classmethod
    def _from_quantized(cls, layer: Module, sharding: str, segments, group):
        if not isinstance(layer, QuantizedLinear):
            raise ValueError(f"{cls.__name__}.from_quantized_linear: expected a QuantizedLinear, got "
                             f"{type(layer).__name__}")
        group = _group_or_world(group)
        output_dims, packed = layer.weight.shape
        sharded = cls(packed * 32 // layer.bits, output_dims, "bias" in layer, layer.group_size, layer.bits,
                      layer.mode, group)
        sharded.update(_sharded_parameters(layer, sharding, segments, group))
        return sharded


class QuantizedAllToShardedLinear(_QuantizedSharded):
    """:class:`AllToShardedLinear` with a quantized weight (frozen, as ``QuantizedLinear``'s).

    Args:
        input_dims (int): the size of the input's last axis.
        output_dims (int): the size of the whole output's last axis (divisible by the group's size).
        bias (bool, optional): add a bias. Default: ``True``.
        group_size (int, optional): elements per scale (see ``mx.quantize``). Default: ``64``.
        bits (int, optional): bits per element (see ``mx.quantize``). Default: ``4``.
        mode (str, optional): the quantization mode (see ``mx.quantize``). Default: ``"affine"``.
        group (mx.distributed.Group, optional): the group to shard across. Default: ``None``, the global group.
    """

    def __init__(self, input_dims: int, output_dims: int, bias: bool = True, group_size: int = 64, bits: int = 4,
                 mode: str = "affine", group=None):
        super().__init__()
        self.group = _group_or_world(group)
        size = self.group.size()
        _divisible(output_dims, size, "Cannot shard the output of size {dims} across {size} devices.")
        _init_quantized_linear(self, input_dims, (output_dims // size, input_dims),
                               output_dims // size if bias else None, group_size, bits, mode)

    def _extra_repr(self) -> str:
        out_dims, in_dims = self._dims()
        return self._repr_with(in_dims, out_dims * self.group.size())

    def __call__(self, x: mx.array) -> mx.array:
        x = self._matmul(sum_gradients(self.group)(x))
        return x + self["bias"] if "bias" in self else x

    @classmethod
    def from_quantized_linear(cls, quantized_linear_layer: Module, *, segments: int | list = 1,
                              group=None) -> QuantizedAllToShardedLinear:
        """This process's shard of ``quantized_linear_layer`` (segments: see :func:`shard_linear`)."""
        return cls._from_quantized(quantized_linear_layer, "all-to-sharded", segments, group)


class QuantizedShardedToAllLinear(_QuantizedSharded):
    """:class:`ShardedToAllLinear` with a quantized weight (frozen, as ``QuantizedLinear``'s).

    Args:
        input_dims (int): the size of the whole input's last axis (divisible by the group's size).
        output_dims (int): the size of the output's last axis.
        bias (bool, optional): add a bias. Default: ``True``.
        group_size (int, optional): elements per scale (see ``mx.quantize``). Default: ``64``.
        bits (int, optional): bits per element (see ``mx.quantize``). Default: ``4``.
        mode (str, optional): the quantization mode (see ``mx.quantize``). Default: ``"affine"``.
        group (mx.distributed.Group, optional): the group to shard across. Default: ``None``, the global group.
    """

    def __init__(self, input_dims: int, output_dims: int, bias: bool = True, group_size: int = 64, bits: int = 4,
                 mode: str = "affine", group=None):
        super().__init__()
        self.group = _group_or_world(group)
        size = self.group.size()
        _divisible(input_dims, size, "The input of size {dims} cannot be sharded across {size} devices.")
        _init_quantized_linear(self, input_dims, (output_dims, input_dims // size), output_dims if bias else None,
                               group_size, bits, mode)

    def _extra_repr(self) -> str:
        out_dims, in_dims = self._dims()
        return self._repr_with(in_dims * self.group.size(), out_dims)

    def __call__(self, x: mx.array) -> mx.array:
        x = mx.distributed.all_sum(self._matmul(x), group=self.group)
        return x + self["bias"] if "bias" in self else x

    @classmethod
    def from_quantized_linear(cls, quantized_linear_layer: Module, *, segments: int | list = 1,
                              group=None) -> QuantizedShardedToAllLinear:
        """This process's shard of ``quantized_linear_layer`` (segments: see :func:`shard_linear`)."""
        return cls._from_quantized(quantized_linear_layer, "sharded-to-all", segments, group)


# -- fully sharded data parallelism -------------------------------------------------------------------------------

def _gather_function(group, dtypes: list) -> mx.custom_function:
    """A custom function from this process's shards (each split along axis 0) to the whole arrays, cast to
    ``dtypes``: one ``all_gather`` per dtype, of the shards flattened and joined. Its backward pass sums each
    whole array's gradient over the group and keeps this process's slice of it (one ``sum_scatter`` per dtype),
    divided by the group's size: the average of the processes' gradients, cast back to the shard's dtype."""
    size = group.size()
    buckets: dict = {}
    for i, dtype in enumerate(dtypes):
        buckets.setdefault(dtype, []).append(i)

    @mx.custom_function
    def gather(*shards):
        whole = [None] * len(shards)
        for dtype, members in buckets.items():
            flat = mx.concatenate([shards[i].astype(dtype).reshape(-1) for i in members])
            rows = mx.distributed.all_gather(flat, group=group).reshape(size, -1)  # row k: process k's shards
            start = 0
            for i in members:
                shape = shards[i].shape
                whole[i] = rows[:, start:start + shards[i].size].reshape((size * shape[0],) + shape[1:])
                start += shards[i].size
        return whole

    @gather.vjp
    def scatter(shards, cotangents, outputs):
        cotangents = [cotangents] if isinstance(cotangents, mx.array) else list(cotangents)
        outputs = [outputs] if isinstance(outputs, mx.array) else list(outputs)
        grads = [None] * len(shards)
        for dtype, members in buckets.items():
            rows = [mx.zeros_like(outputs[i]) if cotangents[i] is None else cotangents[i] for i in members]
            joined = mx.concatenate([r.astype(dtype).reshape(size, -1) for r in rows], axis=1)
            mine = mx.distributed.sum_scatter(joined, group=group).reshape(-1) / size
            start = 0
            for i in members:
                n = shards[i].size
                grads[i] = mine[start:start + n].reshape(shards[i].shape).astype(shards[i].dtype)
                start += n
        return grads

    return gather


class FullyShardedModule(Module):
    """A module each process of a group holds only a shard of: every parameter split along axis 0.

    Each call gathers the whole parameters (one ``all_gather`` per dtype), runs the module with them and puts
    the shards back; in the backward pass the gradients are summed over the group and each process keeps its
    shard of them (one ``sum_scatter`` per dtype), divided by the group's size. So with a different batch on
    each process, ``nn.value_and_grad`` gives each process its shard of the data-parallel (averaged) gradient,
    and an optimizer updates the shards alone.

    Every parameter's size along axis 0 must be divisible by the group's size. A parameter the module replaces
    during a call (e.g. ``BatchNorm``'s running statistics) is sharded again after it.

    Use :func:`fully_shard` to wrap a module.

    Args:
        module (Module): the module whose parameters are sharded (in place).
        group (mx.distributed.Group, optional): the group to shard across. Default: ``None``, the global group.
        compute_dtype (Dtype, optional): the dtype the floating-point parameters are gathered (and their
            gradients summed) in; the gradients come back in the shards' dtype. Default: ``None``, their own.
    """

    def __init__(self, module: Module, group=None, compute_dtype: mx.Dtype | None = None):
        super().__init__()
        self.group = _group_or_world(group)
        self.compute_dtype = compute_dtype
        size, rank = self.group.size(), self.group.rank()
        shards = []
        for path, weight in tree_flatten(module.parameters()):
            if weight.ndim == 0 or weight.shape[0] % size:
                raise ValueError(f"Cannot shard parameter {path!r} with shape {tuple(weight.shape)} across {size} "
                                 f"devices: axis 0 must be divisible by {size}.")
            shards.append((path, mx.contiguous(mx.split(weight, size, axis=0)[rank]) if size > 1 else weight))
        module.update(tree_unflatten(shards))
        self.__dict__["_paths"] = [path for path, _ in shards]  # an attribute: a list entry would be a child
        self.module = module

    def _extra_repr(self) -> str:
        return f"num_sharded_params={len(self._paths)}"

    def _gathered_call(self, fn: Callable, *args, **kwargs):
        shards = dict(tree_flatten(self.module.parameters()))
        pieces = [shards[p] for p in self._paths]
        dtypes = [self.compute_dtype if self.compute_dtype is not None and mx.issubdtype(s.dtype, mx.floating)
                  else s.dtype for s in pieces]
        whole = _gather_function(self.group, dtypes)(*pieces)
        whole = [whole] if isinstance(whole, mx.array) else whole
        self.module.update(tree_unflatten(list(zip(self._paths, whole))))
        try:
            return fn(*args, **kwargs)
        finally:
            after = dict(tree_flatten(self.module.parameters()))
            self.module.update(tree_unflatten([(p, self._reshard(after[p], w, shards[p]))
                                               for p, w in zip(self._paths, whole)]))

    def _reshard(self, now: mx.array, gathered: mx.array, shard: mx.array) -> mx.array:
        if now is gathered:
            return shard
        size, rank = self.group.size(), self.group.rank()
        return mx.contiguous(mx.split(now, size, axis=0)[rank]).astype(shard.dtype)

    def __call__(self, *args, **kwargs):
        return self._gathered_call(self.module, *args, **kwargs)

    def as_linear(self, *args, **kwargs):
        """The wrapped module's ``as_linear`` (e.g. ``Embedding``'s), with the whole parameters."""
        return self._gathered_call(self.module.as_linear, *args, **kwargs)


def fully_shard(module: Module, *, group=None, compute_dtype: mx.Dtype | None = None) -> Module:
    """Wrap ``module`` in a :class:`FullyShardedModule` (which shards its parameters in place).

    Args:
        module (Module): the module to wrap.
        group (mx.distributed.Group, optional): the group to shard across. Default: ``None``, the global group.
        compute_dtype (Dtype, optional): the dtype the parameters are gathered in. Default: ``None``.

    Returns:
        Module: the :class:`FullyShardedModule`, or ``module`` itself in a group of one.
    """
    group = _group_or_world(group)
    if group.size() == 1:
        return module
    return FullyShardedModule(module, group=group, compute_dtype=compute_dtype)
