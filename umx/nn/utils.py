"""Helpers that tie function transforms to a model's parameters (``value_and_grad``, ``checkpoint``) and
gradients to a distributed group (``average_gradients``, ``clip_grad_norm_sharded``)."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

import umx as mx
from umx.utils import tree_flatten, tree_map, tree_reduce, tree_unflatten


def value_and_grad(model, fn: Callable):
    """Transform ``fn`` into a function that also returns the gradients of its result with respect to
    ``model.trainable_parameters()``.

    Args:
        model (Module): the model whose trainable parameters are differentiated.
        fn (Callable): a function of any arguments that calls the model and returns a scalar (or a tuple whose
            first element is one).

    Returns:
        Callable: ``f(*args, **kwargs) -> (value, grads)``, ``grads`` a tree shaped like
        ``model.trainable_parameters()``.
    """

    def inner(params, *args, **kwargs):
        model.update(params)
        return fn(*args, **kwargs)

    value_grad = mx.value_and_grad(inner)

    @wraps(fn)
    def wrapped(*args, **kwargs):
        return value_grad(model.trainable_parameters(), *args, **kwargs)

    return wrapped


def checkpoint(module, fn: Callable | None = None):
    """Transform ``fn`` (default: the module's call) so that the backward pass recomputes its intermediates
    (``mx.checkpoint``) instead of keeping them, with gradients for the module's trainable parameters too.

    Args:
        module (Module): the module whose trainable parameters the function uses.
        fn (Callable, optional): the function; default ``module.__call__``.

    Returns:
        Callable: the checkpointed function (positional arguments only).
    """
    fn = module.__call__ if fn is None else fn

    def inner(params, *args):
        module.update(params)
        return fn(*args)

    checkpointed = mx.checkpoint(inner)

    @wraps(fn)
    def wrapped(*args):
        return checkpointed(module.trainable_parameters(), *args)

    return wrapped


def _buckets(leaves: list, all_reduce_size: int, itemsize: Callable) -> list:
    """Indices of ``leaves`` in runs of one dtype, each run closed once it holds ``all_reduce_size`` bytes."""
    by_dtype: dict = {}
    for i, leaf in enumerate(leaves):
        by_dtype.setdefault(leaf.dtype, []).append(i)
    buckets = []
    for members in by_dtype.values():
        current, nbytes = [], 0
        for i in members:
            current.append(i)
            nbytes += leaves[i].size * itemsize(leaves[i])
            if nbytes >= all_reduce_size:
                buckets.append(current)
                current, nbytes = [], 0
        if current:
            buckets.append(current)
    return buckets


def average_gradients(gradients: Any, group=None, all_reduce_size: int = 32 * 1024**2,
                      communication_stream=None, *, communication_type: mx.Dtype | None = None) -> Any:
    """Average the gradients over the processes of a distributed group: the sum of every process's gradients
    (``mx.distributed.all_sum``) divided by the group's size.

    Small arrays are joined into one ``all_sum`` per ``all_reduce_size`` bytes (per dtype), fewer and larger
    messages being faster to communicate.

    Args:
        gradients (Any): a tree of gradient arrays, of the same structure, shapes and dtypes on every process.
        group (mx.distributed.Group, optional): the processes to average over. Default: ``None``, the global
            group.
        all_reduce_size (int): join arrays until a message holds at least this many bytes; ``0`` or less sends
            each array on its own. Default: 32 MiB.
        communication_stream (Stream, optional): the stream (or device) the communication runs on. Default:
            ``None``, the default stream.
        communication_type (Dtype, optional): cast to this dtype for the communication (e.g. ``mx.bfloat16``
            to halve the bytes sent), and back after. Default: ``None``, the gradients' own dtype. (Earlier MLX
            releases take it; MLX 0.32.4 does not.)

    Returns:
        Any: the averaged gradients, in the same tree; ``gradients`` itself in a group of one process.
    """
    group = mx.distributed.init() if group is None else group
    size = group.size()
    if size == 1:
        return gradients

    def average(x):
        sent = x if communication_type is None else x.astype(communication_type)
        total = mx.distributed.all_sum(sent, group=group, stream=communication_stream)
        return (total if communication_type is None else total.astype(x.dtype)) / size

    if all_reduce_size <= 0:
        return tree_map(average, gradients)
    flat = tree_flatten(gradients)
    leaves = [leaf for _, leaf in flat]

    def itemsize(x):
        return (x.dtype if communication_type is None else communication_type).size

    averaged = [None] * len(leaves)
    for bucket in _buckets(leaves, all_reduce_size, itemsize):
        if len(bucket) == 1:
            averaged[bucket[0]] = average(leaves[bucket[0]])
            continue
        joined = average(mx.concatenate([leaves[i].reshape(-1) for i in bucket]))
        start = 0
        for i in bucket:
            averaged[i] = joined[start:start + leaves[i].size].reshape(leaves[i].shape)
            start += leaves[i].size
    return tree_unflatten([(path, a) for (path, _), a in zip(flat, averaged)])


def clip_grad_norm_sharded(gradients: Any, max_norm: float, group=None) -> tuple:
    """Clip the global norm of gradients sharded over a group (each process holding a part of them, as with
    :func:`~umx.nn.fully_shard`): the squared norms of every process's part are summed over the group, and
    every part is scaled by ``min(1, max_norm / (norm + 1e-6))``, as ``umx.optimizers.clip_grad_norm`` does for
    the whole gradients.

    Args:
        gradients (Any): a tree of this process's gradient arrays.
        max_norm (float): the largest global norm allowed (at least 0).
        group (mx.distributed.Group, optional): the group the gradients are sharded over. Default: ``None``,
            the global group.

    Returns:
        tuple: the (possibly scaled) gradients of this process and the global norm (an array), before clipping.
    """
    if max_norm < 0:
        raise ValueError(f"clip_grad_norm_sharded: max_norm should be >=0, {max_norm} was provided instead")
    group = mx.distributed.init() if group is None else group
    local = tree_reduce(lambda total, g: total + mx.sum(mx.square(g)), gradients, 0.0)
    norm = mx.sqrt(mx.distributed.all_sum(local, group=group))
    scale = mx.minimum(max_norm / (norm + 1e-6), 1.0)
    return tree_map(lambda g: g * scale, gradients), norm
