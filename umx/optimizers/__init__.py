"""Optimizers and learning rate schedules, as MLX's ``mlx.optimizers``: ``import umx.optimizers as optim``.

An optimizer updates a tree of parameters (a model) from a tree of gradients of the same structure, keeping its
state in ``optimizer.state``, a dict tree of arrays that ``mx.compile`` can capture and
``mx.save_safetensors`` can store (after ``tree_flatten``).
"""

from . import optimizers, schedulers
from .optimizers import (
    SGD,
    AdaDelta,
    Adafactor,
    Adagrad,
    Adam,
    Adamax,
    AdamW,
    Lion,
    MultiOptimizer,
    Muon,
    Optimizer,
    RMSprop,
    clip_grad_norm,
)
from .schedulers import cosine_decay, exponential_decay, join_schedules, linear_schedule, step_decay

__all__ = ["Optimizer", "SGD", "RMSprop", "Adagrad", "AdaDelta", "Adam", "AdamW", "Adamax", "Lion", "Adafactor",
           "Muon", "MultiOptimizer", "clip_grad_norm", "exponential_decay", "step_decay", "cosine_decay",
           "linear_schedule", "join_schedules", "optimizers", "schedulers"]
