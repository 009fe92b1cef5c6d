"""Activation functions, each as a function and as a layer (``nn.relu`` and ``nn.ReLU()``), as MLX's."""

from __future__ import annotations

import math

import umx as mx
from umx.nn.layers.base import Module

_SQRT_2 = math.sqrt(2.0)
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_SELU_ALPHA, _SELU_SCALE = 1.67326, 1.0507


def sigmoid(x):
    r"""Applies the sigmoid :math:`1 / (1 + e^{-x})` element-wise (``mx.sigmoid``)."""
    return mx.sigmoid(x)


def relu(x):
    """Applies the Rectified Linear Unit: ``mx.maximum(x, 0)``."""
    return mx.maximum(x, 0)


def relu2(x):
    r"""Applies the ReLU² function :math:`\max(0, x)^2` element-wise."""
    return mx.square(mx.maximum(x, 0))


def relu6(x):
    r"""Applies the ReLU6 function :math:`\min(\max(x, 0), 6)` element-wise."""
    return mx.minimum(mx.maximum(x, 0), 6.0)


def leaky_relu(x, negative_slope=0.01):
    r"""Applies the Leaky ReLU :math:`\max(\text{negative\_slope} \cdot x, x)` element-wise.

    Args:
        negative_slope (float): the slope for negative inputs. Default: ``0.01``.
    """
    return mx.maximum(negative_slope * x, x)


def log_softmax(x, axis=-1):
    r"""Applies the log softmax :math:`x - \log \sum_j e^{x_j}` along ``axis`` (default ``-1``)."""
    # shifted by the largest entry first: for large inputs x - logsumexp(x) would lose everything to rounding
    shifted = x - mx.stop_gradient(mx.max(x, axis=axis, keepdims=True))
    return shifted - mx.logsumexp(shifted, axis=axis, keepdims=True)


def elu(x, alpha=1.0):
    r"""Applies the Exponential Linear Unit: :math:`x` for :math:`x > 0`, else :math:`\alpha (e^x - 1)`.

    Args:
        alpha (float): the scale of the negative part. Default: ``1.0``.
    """
    return mx.where(x > 0, x, alpha * (mx.exp(x) - 1))


def softmax(x, axis=-1):
    r"""Applies the softmax :math:`e^{x_i} / \sum_j e^{x_j}` along ``axis`` (default ``-1``)."""
    return mx.softmax(x, axis=axis)


def softplus(x):
    r"""Applies the Softplus function :math:`\log(1 + e^x)` element-wise."""
    return mx.logaddexp(x, 0)


def softsign(x):
    r"""Applies the Softsign function :math:`x / (1 + |x|)` element-wise."""
    return mx.divide(x, 1 + mx.abs(x))


def softshrink(x, lambd: float = 0.5):
    r"""Applies the Softshrink function: :math:`x - \lambda\,\mathrm{sign}(x)` where :math:`|x| > \lambda`, else 0.

    Args:
        lambd (float): the threshold. Default: ``0.5``.
    """
    return mx.where(mx.abs(x) > lambd, x - mx.sign(x) * lambd, 0)


def celu(x, alpha=1.0):
    r"""Applies the Continuously Differentiable ELU: :math:`\max(0, x) + \min(0, \alpha (e^{x / \alpha} - 1))`.

    Args:
        alpha (float): the scale of the negative part. Default: ``1.0``.
    """
    return mx.maximum(x, 0.0) + alpha * (mx.exp(mx.minimum(x, 0.0) / alpha) - 1)


def silu(x):
    r"""Applies the Sigmoid Linear Unit (swish) :math:`x \sigma(x)` element-wise."""
    return x * mx.sigmoid(x)


def log_sigmoid(x):
    r"""Applies the log sigmoid :math:`\log \sigma(x) = -\log(1 + e^{-x})` element-wise."""
    return -softplus(-x)


def gelu(x) -> mx.array:
    r"""Applies the Gaussian Error Linear Unit :math:`x \Phi(x)`, :math:`\Phi` the Gaussian CDF.

    See :func:`gelu_approx` and :func:`gelu_fast_approx` for faster approximations.
    """
    return x * (1 + mx.erf(x / _SQRT_2)) / 2


def gelu_approx(x):
    r"""Applies the tanh approximation of GELU: :math:`0.5 x (1 + \tanh(\sqrt{2/\pi} (x + 0.044715 x^3)))`.

    Its largest error from :func:`gelu` is below 0.0005.
    """
    return 0.5 * x * (1 + mx.tanh(_SQRT_2_OVER_PI * (x + 0.044715 * x**3)))


def gelu_fast_approx(x):
    r"""Applies the sigmoid approximation of GELU: :math:`x \sigma(1.702 x)` (largest error below 0.025)."""
    return x * mx.sigmoid(1.702 * x)


def glu(x: mx.array, axis: int = -1) -> mx.array:
    r"""Applies the gated linear unit: splits ``axis`` into halves :math:`a, b` and returns :math:`a \sigma(b)`.

    Args:
        axis (int): the axis to split. Default: ``-1``.
    """
    a, b = mx.split(x, indices_or_sections=2, axis=axis)
    return a * mx.sigmoid(b)


def step(x: mx.array, threshold: float = 0.0):
    """Applies the binary step: 1 where ``x >= threshold``, else 0 (int32).

    Args:
        threshold (float): the threshold. Default: ``0.0``.
    """
    return mx.where(x >= threshold, 1, 0)


def selu(x):
    r"""Applies the Scaled ELU: :math:`\lambda x` for :math:`x > 0`, else :math:`\lambda\alpha(e^x - 1)`, with
    :math:`\lambda = 1.0507` and :math:`\alpha = 1.67326`."""
    return elu(x, _SELU_ALPHA) * _SELU_SCALE


def prelu(x: mx.array, alpha: mx.array) -> mx.array:
    r"""Applies the parametric ReLU :math:`\max(0, x) + a \min(0, x)`, with ``alpha`` an array :math:`a`."""
    return mx.maximum(0, x) + alpha * mx.minimum(0, x)


def mish(x: mx.array) -> mx.array:
    r"""Applies the Mish function :math:`x \tanh(\mathrm{softplus}(x))` element-wise."""
    return x * mx.tanh(softplus(x))


def hardswish(x):
    r"""Applies the hard swish :math:`x \min(\max(x + 3, 0), 6) / 6` element-wise."""
    return x * mx.minimum(mx.maximum(x + 3, 0), 6) / 6


def hard_tanh(x, min_val=-1.0, max_val=1.0):
    r"""Applies the HardTanh :math:`\max(\min(x, \text{max\_val}), \text{min\_val})` element-wise."""
    return mx.minimum(mx.maximum(x, min_val), max_val)


def hard_shrink(x, lambd=0.5):
    r"""Applies the HardShrink: :math:`x` where :math:`|x| > \lambda`, else 0.

    Args:
        lambd (float): the threshold. Default: ``0.5``.
    """
    return mx.where(mx.abs(x) > lambd, x, 0)


def softmin(x, axis=-1):
    r"""Applies the softmin :math:`e^{-x_i} / \sum_j e^{-x_j}` along ``axis`` (default ``-1``)."""
    return mx.softmax(-x, axis=axis)


def tanh(x):
    """Applies the hyperbolic tangent (``mx.tanh``)."""
    return mx.tanh(x)


def _layer(name: str, fn) -> type:
    """A parameterless layer class whose call applies ``fn``."""

    def __call__(_, x):
        return fn(x)

    doc = f"Applies :func:`{fn.__name__}` element-wise; see there.\n"
    return type(name, (Module,), {"__call__": __call__, "__doc__": doc, "__module__": __name__})


# the layers with no parameters, as (class name, function)
Sigmoid = _layer("Sigmoid", sigmoid)
ReLU = _layer("ReLU", relu)
ReLU2 = _layer("ReLU2", relu2)
ReLU6 = _layer("ReLU6", relu6)
Softmax = _layer("Softmax", softmax)
Softplus = _layer("Softplus", softplus)
Softsign = _layer("Softsign", softsign)
SiLU = _layer("SiLU", silu)
LogSoftmax = _layer("LogSoftmax", log_softmax)
LogSigmoid = _layer("LogSigmoid", log_sigmoid)
SELU = _layer("SELU", selu)
Mish = _layer("Mish", mish)
Hardswish = _layer("Hardswish", hardswish)
HardTanh = _layer("HardTanh", hard_tanh)
Softmin = _layer("Softmin", softmin)
Tanh = _layer("Tanh", tanh)


class LeakyReLU(Module):
    """Applies :func:`leaky_relu`.

    Args:
        negative_slope (float): the slope for negative inputs. Default: ``0.01``.
    """

    def __init__(self, negative_slope=0.01):
        super().__init__()
        self._negative_slope = negative_slope

    def __call__(self, x):
        return leaky_relu(x, self._negative_slope)


class ELU(Module):
    """Applies :func:`elu`.

    Args:
        alpha (float): the scale of the negative part. Default: ``1.0``.
    """

    def __init__(self, alpha=1.0):
        super().__init__()
        self._alpha = alpha

    def __call__(self, x):
        return elu(x, self._alpha)


class CELU(Module):
    """Applies :func:`celu`.

    Args:
        alpha (float): the scale of the negative part. Default: ``1.0``.
    """

    def __init__(self, alpha=1.0):
        super().__init__()
        self._alpha = alpha

    def __call__(self, x):
        return celu(x, self._alpha)


class Softshrink(Module):
    """Applies :func:`softshrink`.

    Args:
        lambd (float): the threshold. Default: ``0.5``.
    """

    def __init__(self, lambd=0.5):
        super().__init__()
        self.lambd = lambd

    def __call__(self, x):
        return softshrink(x, self.lambd)


class HardShrink(Module):
    """Applies :func:`hard_shrink`.

    Args:
        lambd (float): the threshold. Default: ``0.5``.
    """

    def __init__(self, lambd=0.5):
        super().__init__()
        self.lambd = lambd

    def __call__(self, x):
        return hard_shrink(x, self.lambd)


class Step(Module):
    """Applies :func:`step`.

    Args:
        threshold (float): the threshold. Default: ``0.0``.
    """

    def __init__(self, threshold: float = 0.0):
        super().__init__()
        self.threshold = threshold

    def __call__(self, x: mx.array):
        return step(x, self.threshold)


class GLU(Module):
    """Applies :func:`glu`.

    Args:
        axis (int): the axis to split. Default: ``-1``.
    """

    def __init__(self, axis: int = -1):
        super().__init__()
        self.axis = axis

    def __call__(self, x):
        return glu(x=x, axis=self.axis)


class PReLU(Module):
    """Applies :func:`prelu` with a learned slope ``weight``.

    Args:
        num_parameters (int): the number of slopes (1, or the size of the last axis). Default: ``1``.
        init (float): the initial slope. Default: ``0.25``.
    """

    def __init__(self, num_parameters=1, init=0.25):
        super().__init__()
        self.weight = mx.full([num_parameters], init)

    def __call__(self, x: mx.array):
        return prelu(x, self.weight)


class GELU(Module):
    """Applies :func:`gelu`, or one of its approximations.

    Args:
        approx (str): ``'none'`` (exact), ``'precise'`` or ``'tanh'`` (:func:`gelu_approx`), or ``'fast'``
            (:func:`gelu_fast_approx`). Default: ``'none'``.
    """

    _FUNCTIONS = {"none": gelu, "precise": gelu_approx, "tanh": gelu_approx, "fast": gelu_fast_approx}

    def __init__(self, approx="none"):
        super().__init__()
        if approx not in self._FUNCTIONS:
            raise ValueError(f"The approximation should be in {list(self._FUNCTIONS)} but '{approx}' was given")
        self._act = self._FUNCTIONS[approx]

    def __call__(self, x):
        return self._act(x)
