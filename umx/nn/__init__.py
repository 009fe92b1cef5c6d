"""umx.nn: MLX's neural network package (``mlx.nn``) on umx's public API.

A model is a :class:`Module`, a dict of its parameters and sub-modules; layers, activations, ``losses`` and
``init`` are MLX's; ``value_and_grad`` differentiates a loss with respect to a model's trainable parameters.
"""

from umx.nn import init, losses, utils
from umx.nn.layers import *  # noqa: F403
from umx.nn.utils import average_gradients, value_and_grad
