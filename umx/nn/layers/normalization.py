"""Normalization layers: ``LayerNorm``, ``RMSNorm``, ``GroupNorm``, ``InstanceNorm`` and ``BatchNorm``.

Inputs are channels last: the normalized features are the last axis.
"""

from __future__ import annotations

import functools

import umx as mx
from umx.nn.layers.base import Module


def _check_eps(layer: str, eps: float) -> float:
    # eps sits under a square root: zero or less gives NaN for inputs of (near) zero variance
    if not eps > 0:
        raise ValueError(f"[{layer}] 'eps' must be positive but got {eps}.")
    return eps


def _normalize(x: mx.array, axes, eps: float) -> mx.array:
    """``(x - mean) / sqrt(var + eps)`` over ``axes``; the statistics of half-precision inputs are taken in
    float32, where the squares of finite inputs do not overflow."""
    xs = x.astype(mx.float32) if x.dtype in (mx.float16, mx.bfloat16) else x
    mean = mx.mean(xs, axis=axes, keepdims=True)
    var = mx.var(xs, axis=axes, keepdims=True)
    return ((xs - mean) * mx.rsqrt(var + eps)).astype(x.dtype)


class InstanceNorm(Module):
    r"""Normalizes each channel of each sample over its spatial axes (all but the first and the last):
    :math:`y = \frac{x - E[x]}{\sqrt{Var[x] + \epsilon}} \gamma + \beta`.

    Args:
        dims (int): the number of channels (the last axis).
        eps (float): added to the variance. Default: ``1e-5``.
        affine (bool): learn a scale ``weight`` and offset ``bias`` per channel. Default: ``False``.
    """

    def __init__(self, dims: int, eps: float = 1e-5, affine: bool = False):
        super().__init__()
        if affine:
            self.weight = mx.ones((dims,))
            self.bias = mx.zeros((dims,))
        self.dims = dims
        self.eps = _check_eps("InstanceNorm", eps)

    def _extra_repr(self) -> str:
        return f"{self.dims}, eps={self.eps}, affine={'weight' in self}"

    def __call__(self, x: mx.array) -> mx.array:
        if x.ndim < 3:
            raise ValueError("InstanceNorm expects inputs with at least 3 dimensions (N, ..., C) but the input "
                             f"has {x.ndim} dimensions.")
        x = _normalize(x, tuple(range(1, x.ndim - 1)), self.eps)
        return (self.weight * x + self.bias) if "weight" in self else x


class LayerNorm(Module):
    r"""Normalizes over the last axis: :math:`y = \frac{x - E[x]}{\sqrt{Var[x] + \epsilon}} \gamma + \beta`
    (``mx.fast.layer_norm``).

    Args:
        dims (int): the size of the last axis.
        eps (float): added to the variance. Default: ``1e-5``.
        affine (bool): learn a scale ``weight`` (and offset ``bias``). Default: ``True``.
        bias (bool): with ``affine``, learn the offset too. Default: ``True``.
    """

    def __init__(self, dims: int, eps: float = 1e-5, affine: bool = True, bias: bool = True):
        super().__init__()
        if affine:
            self.weight = mx.ones((dims,))
            if bias:
                self.bias = mx.zeros((dims,))
        self.eps = _check_eps("LayerNorm", eps)
        self.dims = dims

    def _extra_repr(self) -> str:
        return f"{self.dims}, eps={self.eps}, affine={'weight' in self}"

    def __call__(self, x):
        return mx.fast.layer_norm(x, self.get("weight"), self.get("bias"), self.eps)


class RMSNorm(Module):
    r"""Root-mean-square normalization over the last axis: :math:`y = \frac{x}{\sqrt{E[x^2] + \epsilon}} \gamma`
    (``mx.fast.rms_norm``).

    Args:
        dims (int): the size of the last axis.
        eps (float): added to the mean square. Default: ``1e-5``.
    """

    def __init__(self, dims: int, eps: float = 1e-5):
        super().__init__()
        self.weight = mx.ones((dims,))
        self.eps = _check_eps("RMSNorm", eps)

    def _extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}"

    def __call__(self, x):
        return mx.fast.rms_norm(x, self["weight"], self.eps)


class GroupNorm(Module):
    r"""Normalizes each sample over groups of channels (and all spatial positions).

    By default channel ``c`` belongs to group ``c % num_groups``; with ``pytorch_compatible`` the groups are
    runs of consecutive channels, as PyTorch's ``GroupNorm``.

    Args:
        num_groups (int): the number of groups; must divide ``dims``.
        dims (int): the number of channels (the last axis).
        eps (float): added to the variance. Default: ``1e-5``.
        affine (bool): learn a scale ``weight`` and offset ``bias`` per channel. Default: ``True``.
        pytorch_compatible (bool): group consecutive channels. Default: ``False``.
    """

    def __init__(self, num_groups: int, dims: int, eps: float = 1e-5, affine: bool = True,
                 pytorch_compatible: bool = False):
        super().__init__()
        if num_groups <= 0:
            raise ValueError(f"The number of groups must be positive but got {num_groups}.")
        if dims <= 0:
            raise ValueError(f"The number of features must be positive but got {dims}.")
        if dims % num_groups != 0:
            raise ValueError(f"The number of features ({dims}) must be evenly divisible by the number of groups "
                             f"({num_groups}).")
        if affine:
            self.bias = mx.zeros((dims,))
            self.weight = mx.ones((dims,))
        self.num_groups = num_groups
        self.dims = dims
        self.eps = _check_eps("GroupNorm", eps)
        self.pytorch_compatible = pytorch_compatible

    def _extra_repr(self) -> str:
        return (f"{self.num_groups}, {self.dims}, eps={self.eps}, affine={'weight' in self}, "
                f"pytorch_compatible={self.pytorch_compatible}")

    def __call__(self, x):
        batch, *rest, dims = x.shape
        groups = self.num_groups
        if self.pytorch_compatible:
            y = x.reshape(batch, -1, groups, dims // groups).swapaxes(1, 2).reshape(batch, groups, -1)
            y = _normalize(y, -1, self.eps)
            y = y.reshape(batch, groups, -1, dims // groups).swapaxes(1, 2).reshape(batch, *rest, dims)
        else:
            y = _normalize(x.reshape(batch, -1, groups), 1, self.eps).reshape(batch, *rest, dims)
        return (self.weight * y + self.bias) if "weight" in self else y


class BatchNorm(Module):
    r"""Normalizes each channel over the batch (and spatial) axes, keeping running statistics for evaluation.

    In training the batch's mean and (biased) variance normalize the input, and the running statistics move
    towards the batch's: :math:`r \leftarrow (1 - m) r + m\,s`, with the unbiased variance, as PyTorch. In
    evaluation (``eval()``) the running statistics are used. Inputs are ``NC``, ``NLC`` or ``NHWC``.

    Args:
        num_features (int): the number of channels (the last axis).
        eps (float): added to the variance. Default: ``1e-5``.
        momentum (float): the weight :math:`m` of a batch in the running statistics. Default: ``0.1``.
        affine (bool): learn a scale ``weight`` and offset ``bias`` per channel. Default: ``True``.
        track_running_stats (bool): keep ``running_mean`` and ``running_var`` (frozen parameters). Without
            them the batch's statistics are used in evaluation too. Default: ``True``.
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1, affine: bool = True,
                 track_running_stats: bool = True):
        super().__init__()
        self.num_features = num_features
        self.eps = _check_eps("BatchNorm", eps)
        self.momentum = momentum
        self.track_running_stats = track_running_stats
        if affine:
            self.weight = mx.ones((num_features,))
            self.bias = mx.zeros((num_features,))
        if track_running_stats:
            self.running_mean = mx.zeros((num_features,))
            self.running_var = mx.ones((num_features,))
            self.freeze(keys=["running_mean", "running_var"], recurse=False)

    def unfreeze(self, *args, **kwargs):
        """Unfreeze as :meth:`Module.unfreeze`; the running statistics stay frozen."""
        super().unfreeze(*args, **kwargs)
        self.freeze(recurse=False, keys=["running_mean", "running_var"])
        return self

    def _extra_repr(self) -> str:
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={'weight' in self}, "
                f"track_running_stats={self.track_running_stats}")

    def __call__(self, x: mx.array) -> mx.array:
        if not 2 <= x.ndim <= 4:
            raise ValueError(f"Expected input tensor to have 2, 3 or 4 dimensions, but got {x.ndim}")
        axes = tuple(range(x.ndim - 1))
        use_batch = self.training or not self.track_running_stats
        if use_batch:
            count = x.size // x.shape[-1]
            if self.training and count < 2:
                raise ValueError("BatchNorm training requires more than one value per channel.")
            mean = mx.mean(x, axis=axes)
            var = mx.var(x, axis=axes)
            if self.training and self.track_running_stats:
                m = self.momentum
                self.running_mean = (1 - m) * self.running_mean + m * mean
                self.running_var = (1 - m) * self.running_var + m * var * (count / (count - 1))
            return _batch_normalize(self.eps, "weight" in self)(x, mean, var, *self._affine())
        mean, var = self.running_mean, self.running_var
        x = (x - mean) * mx.rsqrt(var + self.eps)
        return (self.weight * x + self.bias) if "weight" in self else x

    def _affine(self) -> tuple:
        return (self.weight, self.bias) if "weight" in self else ()


@functools.cache  # one per (eps, affine): the same function at every call
def _batch_normalize(eps: float, affine: bool) -> mx.custom_function:
    """``f(x, mean, var[, weight, bias])``: ``x`` normalized by its own batch statistics ``mean`` and ``var``
    (computed from ``x`` by the caller), with the gradient in closed form.

    The composed gradient makes about a dozen passes over ``x``'s size through the mean, the variance and the
    normalization; the closed form takes two sums and one elementwise pass:
    ``dx = w r (g - (sum(g) + xhat sum(g xhat)) / n)`` with ``r = 1 / sqrt(var + eps)``. That ``dx`` is the whole
    gradient through ``mean`` and ``var`` too, so the rule gives them none (None: not even a pass of zeros
    through their own vjps): they must be ``x``'s statistics."""

    @mx.custom_function
    def normalize(x, mean, var, *weight_bias):
        r = mx.rsqrt(var + eps)
        # (the weight folded into the per-channel factor: one pass over x's size fewer)
        return (x - mean) * (weight_bias[0] * r) + weight_bias[1] if affine else (x - mean) * r

    @normalize.vjp
    def normalize_vjp(primals, cotangent, output):
        x, mean, var, *weight_bias = primals
        g = cotangent
        axes = tuple(range(x.ndim - 1))
        n = x.size // x.shape[-1]
        r = mx.rsqrt(var + eps)
        g_sum = mx.sum(g, axis=axes)
        # x - mean in three spellings of the same value (the forward's, and two here): a compiled function merges
        # equal expressions, and one shared by three readers would be written out, not fused into each of them
        negated = -mean
        g_centered = mx.sum(g * (x + negated), axis=axes)  # sum(g * xhat) / r
        scale = weight_bias[0] * r if affine else r
        dx = scale * g - scale * g_sum / n - (negated + x) * (scale * r * r * g_centered / n)
        grads = (dx, None, None)  # (dx holds the gradient through the statistics: none flows to them)
        return grads + ((g_centered * r, g_sum) if affine else ())

    @normalize.vmap
    def normalize_vmap(inputs, axes):
        x, *rest = (a if ax is None else mx.moveaxis(a, ax, 0) for a, ax in zip(inputs, axes))
        if axes[0] is None:
            x = mx.broadcast_to(x, (next(a.shape[0] for a, ax in zip(rest, axes[1:]) if ax is not None),) + x.shape)
        # a batched statistic or weight (b, c) meets x (b, ..., c): give it x's inner axes
        inner = (1,) * (x.ndim - 2)
        mean, var, *weight_bias = (a if ax is None else a.reshape(a.shape[0], *inner, a.shape[-1])
                                   for a, ax in zip(rest, axes[1:]))
        y = (x - mean) * mx.rsqrt(var + eps)
        return (weight_bias[0] * y + weight_bias[1] if affine else y), 0

    return normalize
