"""Initializers, as MLX's ``mlx.nn.init``: each call returns a function that takes an array and returns a new
array of its shape (e.g. ``layer.weight = init.he_normal()(layer.weight)``)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

import umx as mx


def constant(value: float, dtype: mx.Dtype = mx.float32) -> Callable[[mx.array], mx.array]:
    """An initializer that fills with ``value``.

    Args:
        value (float): the value.
        dtype (Dtype): the result's dtype. Default: ``float32``.

    Returns:
        Callable[[array], array]: the initializer.

    Example:
        >>> init.constant(0.5)(mx.zeros((2, 2)))
        array([[0.5, 0.5],
               [0.5, 0.5]], dtype=float32)
    """
    return lambda a: mx.full(a.shape, value, dtype=dtype)


def normal(mean: float = 0.0, std: float = 1.0, dtype: mx.Dtype = mx.float32) -> Callable[[mx.array], mx.array]:
    r"""An initializer that samples :math:`\mathcal{N}(\text{mean}, \text{std}^2)`.

    Args:
        mean (float): the mean. Default: ``0.0``.
        std (float): the standard deviation. Default: ``1.0``.
        dtype (Dtype): the result's dtype. Default: ``float32``.

    Returns:
        Callable[[array], array]: the initializer.
    """
    return lambda a: mx.random.normal(shape=a.shape, scale=std, loc=mean, dtype=dtype)


def uniform(low: float = 0.0, high: float = 1.0, dtype: mx.Dtype = mx.float32) -> Callable[[mx.array], mx.array]:
    r"""An initializer that samples :math:`\mathcal{U}(\text{low}, \text{high})`.

    Args:
        low (float): the lower bound. Default: ``0.0``.
        high (float): the upper bound. Default: ``1.0``.
        dtype (Dtype): the result's dtype. Default: ``float32``.

    Returns:
        Callable[[array], array]: the initializer.
    """
    return lambda a: mx.random.uniform(low, high, a.shape, dtype=dtype)


def identity(dtype: mx.Dtype = mx.float32) -> Callable[[mx.array], mx.array]:
    """An initializer that gives the identity matrix (of a square 2-D array's shape; ValueError otherwise).

    Args:
        dtype (Dtype): the result's dtype. Default: ``float32``.

    Returns:
        Callable[[array], array]: the initializer.
    """

    def initializer(arr: mx.array) -> mx.array:
        if arr.ndim != 2 or arr.shape[0] != arr.shape[1]:
            raise ValueError(f"The input array must be a square matrix but got shape {arr.shape}.")
        return mx.eye(n=arr.shape[0], dtype=dtype)

    return initializer


def _fans(x: mx.array) -> tuple[int, int]:
    """(fan in, fan out) of a weight ``[out, *receptive field, in]``."""
    if x.ndim < 2:
        raise ValueError("Glorot / He initialization requires at least 2 dimensional input but input with "
                         f"{x.ndim} dimensions.")
    receptive = math.prod(x.shape[1:-1])
    return x.shape[-1] * receptive, x.shape[0] * receptive


def glorot_normal(dtype: mx.Dtype = mx.float32) -> Callable[[mx.array, float], mx.array]:
    r"""An initializer that samples :math:`\mathcal{N}(0, \sigma^2)`, :math:`\sigma = \gamma
    \sqrt{2 / (\text{fan}_{in} + \text{fan}_{out})}` (Glorot and Bengio, 2010). The returned function takes
    the array and the gain :math:`\gamma` (default ``1.0``).

    Args:
        dtype (Dtype): the result's dtype. Default: ``float32``.

    Returns:
        Callable[[array, float], array]: the initializer.
    """

    def initializer(a: mx.array, gain: float = 1.0) -> mx.array:
        fan_in, fan_out = _fans(a)
        std = gain * math.sqrt(2.0 / (fan_in + fan_out))
        return mx.random.normal(shape=a.shape, dtype=dtype) * std

    return initializer


def glorot_uniform(dtype: mx.Dtype = mx.float32) -> Callable[[mx.array, float], mx.array]:
    r"""An initializer that samples :math:`\mathcal{U}(-\sigma, \sigma)`, :math:`\sigma = \gamma
    \sqrt{6 / (\text{fan}_{in} + \text{fan}_{out})}`. The returned function takes the array and the gain
    :math:`\gamma` (default ``1.0``).

    Args:
        dtype (Dtype): the result's dtype. Default: ``float32``.

    Returns:
        Callable[[array, float], array]: the initializer.
    """

    def initializer(a: mx.array, gain: float = 1.0) -> mx.array:
        fan_in, fan_out = _fans(a)
        limit = gain * math.sqrt(6.0 / (fan_in + fan_out))
        return mx.random.uniform(-limit, limit, a.shape, dtype=dtype)

    return initializer


def _fan(a: mx.array, mode: str) -> int:
    fan_in, fan_out = _fans(a)
    if mode == "fan_in":
        return fan_in
    if mode == "fan_out":
        return fan_out
    raise ValueError(f"Invalid mode: {mode}. Valid modes are: fan_in, fan_out")


def he_normal(dtype: mx.Dtype = mx.float32) -> Callable[[mx.array, Literal["fan_in", "fan_out"], float], mx.array]:
    r"""An initializer that samples :math:`\mathcal{N}(0, \sigma^2)`, :math:`\sigma = \gamma / \sqrt{\text{fan}}`
    (He et al., 2015). The returned function takes the array, ``mode`` (``'fan_in'``, the default, or
    ``'fan_out'``) and the gain :math:`\gamma` (default ``1.0``).

    Args:
        dtype (Dtype): the result's dtype. Default: ``float32``.

    Returns:
        Callable[[array, str, float], array]: the initializer.
    """

    def initializer(a: mx.array, mode: Literal["fan_in", "fan_out"] = "fan_in", gain: float = 1.0) -> mx.array:
        std = gain / math.sqrt(_fan(a, mode))
        return mx.random.normal(shape=a.shape, dtype=dtype) * std

    return initializer


def he_uniform(dtype: mx.Dtype = mx.float32) -> Callable[[mx.array, Literal["fan_in", "fan_out"], float], mx.array]:
    r"""An initializer that samples :math:`\mathcal{U}(-\sigma, \sigma)`, :math:`\sigma = \gamma
    \sqrt{3 / \text{fan}}`. The returned function takes the array, ``mode`` (``'fan_in'``, the default, or
    ``'fan_out'``) and the gain :math:`\gamma` (default ``1.0``).

    Args:
        dtype (Dtype): the result's dtype. Default: ``float32``.

    Returns:
        Callable[[array, str, float], array]: the initializer.
    """

    def initializer(a: mx.array, mode: Literal["fan_in", "fan_out"] = "fan_in", gain: float = 1.0) -> mx.array:
        limit = gain * math.sqrt(3.0 / _fan(a, mode))
        return mx.random.uniform(-limit, limit, a.shape, dtype=dtype)

    return initializer


def sparse(sparsity: float, mean: float = 0.0, std: float = 1.0,
           dtype: mx.Dtype = mx.float32) -> Callable[[mx.array], mx.array]:
    r"""An initializer for 2-D arrays that samples :math:`\mathcal{N}(\text{mean}, \text{std}^2)` and zeroes
    :math:`\lceil \text{sparsity} \cdot \text{cols} \rceil` random entries of every row.

    Args:
        sparsity (float): the fraction of each row to zero, in ``[0, 1]``.
        mean (float): the mean of the other entries. Default: ``0.0``.
        std (float): their standard deviation. Default: ``1.0``.
        dtype (Dtype): the result's dtype. Default: ``float32``.

    Returns:
        Callable[[array], array]: the initializer.
    """

    def initializer(a: mx.array) -> mx.array:
        if a.ndim != 2:
            raise ValueError("Only tensors with 2 dimensions are supported")
        rows, cols = a.shape
        zeros = int(math.ceil(sparsity * cols))
        # a random permutation of each row's columns, whose first ``zeros`` entries are zeroed (drawn before the
        # values, as MLX draws them: the same seed gives MLX's matrix)
        order = mx.argsort(mx.random.uniform(shape=(rows, cols)), axis=1)[:, :zeros]
        values = mx.random.normal(shape=a.shape, scale=std, loc=mean, dtype=dtype)
        return mx.put_along_axis(values, order, mx.array(0, dtype), axis=1)

    return initializer


def orthogonal(gain: float = 1.0, dtype: mx.Dtype = mx.float32) -> Callable[[mx.array], mx.array]:
    r"""An initializer for 2-D arrays that gives a (semi-)orthogonal matrix times ``gain``: the Q factor of the
    QR decomposition of a Gaussian matrix, with the signs of R's diagonal folded in (Saxe et al., 2013).

    Args:
        gain (float): the scale. Default: ``1.0``.
        dtype (Dtype): the result's dtype. Default: ``float32``.

    Returns:
        Callable[[array], array]: the initializer.
    """

    def initializer(a: mx.array) -> mx.array:
        if a.ndim != 2:
            raise ValueError(f"Orthogonal initialization requires a 2D array but got a {a.ndim}D array.")
        rows, cols = a.shape
        n = max(rows, cols)
        q, r = mx.linalg.qr(mx.random.normal(shape=(n, n)), stream=mx.cpu)
        q = q * mx.sign(mx.diag(r))
        q = q[:rows, :] if rows < cols else q[:, :cols]
        return (gain * q).astype(dtype)

    return initializer
