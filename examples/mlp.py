"""Train a multi-layer perceptron on MNIST-shaped synthetic data, as MLX's MNIST example does.

The data are 784-feature vectors in 10 classes: each class is a Gaussian cluster around its own random centre,
so a small MLP separates them in a few hundred steps. The training step (forward, backward and optimizer update)
is compiled with ``mx.compile``, its state (the model's parameters and the optimizer's state) named as inputs and
outputs.

Usage: python examples/mlp.py [--steps 200] [--hidden 128] [--optimizer sgd|adam] [--cpu]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from functools import partial

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import umx as mx  # noqa: E402
import umx.nn as nn  # noqa: E402
import umx.optimizers as optim  # noqa: E402


class MLP(nn.Module):
    """A ReLU multi-layer perceptron."""

    def __init__(self, num_layers: int, input_dim: int, hidden_dim: int, output_dim: int):
        super().__init__()
        sizes = [input_dim] + [hidden_dim] * num_layers + [output_dim]
        self.layers = [nn.Linear(i, o) for i, o in zip(sizes[:-1], sizes[1:])]

    def __call__(self, x):
        for layer in self.layers[:-1]:
            x = nn.relu(layer(x))
        return self.layers[-1](x)


def loss_fn(model, x, y):
    return nn.losses.cross_entropy(model(x), y, reduction="mean")


def synthetic_mnist(num_examples: int, num_features: int = 784, num_classes: int = 10, noise: float = 1.0,
                    seed: int = 0):
    """``(images, labels)``: float32 ``[num_examples, num_features]`` and uint32 ``[num_examples]``, each image its
    class's centre (unit-variance entries) plus Gaussian noise of standard deviation ``noise``."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((num_classes, num_features)).astype(np.float32)
    labels = rng.integers(0, num_classes, num_examples).astype(np.uint32)
    images = centres[labels] + noise * rng.standard_normal((num_examples, num_features)).astype(np.float32)
    return mx.array(images), mx.array(labels)


def batch_iterate(batch_size: int, x, y, rng):
    """Shuffled mini-batches ``(x[ids], y[ids])`` of one epoch (the last, partial one dropped)."""
    perm = mx.array(rng.permutation(y.size))
    for start in range(0, y.size - batch_size + 1, batch_size):
        ids = perm[start:start + batch_size]
        yield x[ids], y[ids]


def main(steps: int = 200, batch_size: int = 64, num_layers: int = 2, hidden_dim: int = 128,
         num_examples: int = 2048, optimizer: str = "sgd", learning_rate: float | None = None, seed: int = 0,
         compiled: bool = True, verbose: bool = True) -> list:
    """Train the MLP for ``steps`` steps; returns the loss of every step (Python floats).

    Args:
        steps (int): training steps. Default: ``200``.
        batch_size (int): examples per step. Default: ``64``.
        num_layers (int): hidden layers. Default: ``2``.
        hidden_dim (int): units per hidden layer. Default: ``128``.
        num_examples (int): size of the synthetic training set. Default: ``2048``.
        optimizer (str): ``"sgd"`` or ``"adam"``. Default: ``"sgd"``.
        learning_rate (float, optional): default ``0.1`` for SGD, ``1e-3`` for Adam.
        seed (int): seeds the data, the initial weights and the shuffling. Default: ``0``.
        compiled (bool): compile the training step. Default: ``True``.
        verbose (bool): print progress. Default: ``True``.

    Returns:
        list[float]: the training loss of each step.
    """
    mx.random.seed(seed)
    rng = np.random.default_rng(seed)
    x_train, y_train = synthetic_mnist(num_examples, seed=seed)
    model = MLP(num_layers, x_train.shape[-1], hidden_dim, 10)
    mx.eval(model.parameters())
    if optimizer == "sgd":
        opt = optim.SGD(learning_rate=0.1 if learning_rate is None else learning_rate)
    elif optimizer == "adam":
        opt = optim.Adam(learning_rate=1e-3 if learning_rate is None else learning_rate)
    else:
        raise ValueError(f"mlp: optimizer must be 'sgd' or 'adam', got {optimizer!r}")
    loss_and_grad_fn = nn.value_and_grad(model, loss_fn)
    state = [model.state, opt.state]

    def step(x, y):
        loss, grads = loss_and_grad_fn(model, x, y)
        opt.update(model, grads)
        return loss

    if compiled:
        step = partial(mx.compile, inputs=state, outputs=state)(step)

    losses = []
    tic = time.perf_counter()
    while len(losses) < steps:
        for x, y in batch_iterate(batch_size, x_train, y_train, rng):
            loss = step(x, y)
            mx.eval(state)
            losses.append(loss.item())
            if verbose and len(losses) % 50 == 0:
                print(f"step {len(losses)}: loss {losses[-1]:.4f}, {time.perf_counter() - tic:.2f} s")
            if len(losses) == steps:
                break
    return losses


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--num-layers", type=int, default=2)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--optimizer", choices=["sgd", "adam"], default="sgd")
    ap.add_argument("--eager", action="store_true", help="do not compile the training step")
    ap.add_argument("--cpu", action="store_true", help="run on the CPU even where a GPU is present")
    args = ap.parse_args()
    if args.cpu:
        mx.set_default_device(mx.cpu)
    main(steps=args.steps, batch_size=args.batch_size, num_layers=args.num_layers, hidden_dim=args.hidden,
         optimizer=args.optimizer, compiled=not args.eager)
