"""Train a small convolutional network on synthetic 32x32 colour images, as MLX's CIFAR example trains a ResNet.

Each of the 10 classes is a smooth random pattern (a few low-frequency waves per channel); an image is its
class's pattern under a random brightness and Gaussian noise. Two convolution blocks (Conv2d, BatchNorm, ReLU,
2x2 max pooling) and a linear classifier learn them. Images are channels-last (``NHWC``), as MLX's convolutions
take them. The training step is compiled with ``mx.compile``; its state lists the model's (BatchNorm's running
statistics included), the optimizer's and the random generator's (for dropout).

Usage: python examples/cnn.py [--steps 100] [--channels 16] [--batch-size 32] [--cpu]
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


class ConvBlock(nn.Module):
    """3x3 convolution, batch normalization, ReLU and 2x2 max pooling (halves the height and width)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False)
        self.bn = nn.BatchNorm(out_channels)
        self.pool = nn.MaxPool2d(kernel_size=2, stride=2)

    def __call__(self, x):
        return self.pool(nn.relu(self.bn(self.conv(x))))


class CNN(nn.Module):
    """Two :class:`ConvBlock` (``channels`` then ``2 * channels`` feature maps), dropout and a linear
    classifier."""

    def __init__(self, image_size: int = 32, in_channels: int = 3, channels: int = 16, num_classes: int = 10,
                 dropout: float = 0.0):
        super().__init__()
        self.blocks = [ConvBlock(in_channels, channels), ConvBlock(channels, 2 * channels)]
        self.dropout = nn.Dropout(dropout)
        side = image_size // 4
        self.classifier = nn.Linear(2 * channels * side * side, num_classes)

    def __call__(self, x):
        for block in self.blocks:
            x = block(x)
        return self.classifier(self.dropout(x.reshape(x.shape[0], -1)))


def loss_fn(model, images, labels):
    return nn.losses.cross_entropy(model(images), labels, reduction="mean")


def synthetic_images(num_examples: int, image_size: int = 32, channels: int = 3, num_classes: int = 10,
                     noise: float = 0.5, seed: int = 0):
    """``(images, labels)``: float32 ``[num_examples, image_size, image_size, channels]`` and uint32
    ``[num_examples]``. Class ``c``'s pattern is a sum of three random plane waves per channel; an image is that
    pattern times a brightness in [0.5, 1.5] plus Gaussian noise of standard deviation ``noise``."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(np.arange(image_size), np.arange(image_size), indexing="ij"), -1) / image_size
    freqs = rng.uniform(-3, 3, (num_classes, channels, 3, 2))
    phases = rng.uniform(0, 2 * np.pi, (num_classes, channels, 3))
    waves = np.sin(2 * np.pi * np.einsum("hwd,kcjd->kchwj", grid, freqs) + phases[:, :, None, None, :])
    patterns = waves.sum(-1).transpose(0, 2, 3, 1)  # [classes, H, W, C]
    labels = rng.integers(0, num_classes, num_examples)
    brightness = rng.uniform(0.5, 1.5, (num_examples, 1, 1, 1))
    images = patterns[labels] * brightness + noise * rng.standard_normal((num_examples, image_size, image_size,
                                                                        channels))
    return mx.array(images.astype(np.float32)), mx.array(labels.astype(np.uint32))


def main(steps: int = 100, batch_size: int = 32, image_size: int = 32, channels: int = 16,
         num_examples: int = 1024, dropout: float = 0.0, learning_rate: float = 1e-3, seed: int = 0,
         compiled: bool = True, verbose: bool = True) -> list:
    """Train the CNN for ``steps`` steps with Adam; returns the loss of every step (Python floats).

    Args:
        steps (int): training steps. Default: ``100``.
        batch_size (int): images per step. Default: ``32``.
        image_size (int): the images' height and width (a multiple of 4). Default: ``32``.
        channels (int): feature maps of the first block (the second has twice as many). Default: ``16``.
        num_examples (int): size of the synthetic training set. Default: ``1024``.
        dropout (float): dropout before the classifier. Default: ``0.0``.
        learning_rate (float): Adam's learning rate. Default: ``1e-3``.
        seed (int): seeds the data, the initial weights, the shuffling and dropout. Default: ``0``.
        compiled (bool): compile the training step. Default: ``True``.
        verbose (bool): print progress. Default: ``True``.

    Returns:
        list[float]: the training loss of each step.
    """
    mx.random.seed(seed)
    rng = np.random.default_rng(seed)
    images, labels = synthetic_images(num_examples, image_size, seed=seed)
    model = CNN(image_size, images.shape[-1], channels, dropout=dropout)
    mx.eval(model.parameters())
    optimizer = optim.Adam(learning_rate=learning_rate)
    loss_and_grad_fn = nn.value_and_grad(model, loss_fn)
    state = [model.state, optimizer.state, mx.random.state]

    def step(x, y):
        loss, grads = loss_and_grad_fn(model, x, y)
        optimizer.update(model, grads)
        return loss

    if compiled:
        step = partial(mx.compile, inputs=state, outputs=state)(step)

    model.train()
    losses = []
    tic = time.perf_counter()
    while len(losses) < steps:
        perm = mx.array(rng.permutation(num_examples))
        for start in range(0, num_examples - batch_size + 1, batch_size):
            ids = perm[start:start + batch_size]
            loss = step(images[ids], labels[ids])
            mx.eval(state)
            losses.append(loss.item())
            if verbose and len(losses) % 25 == 0:
                print(f"step {len(losses)}: loss {losses[-1]:.4f}, {time.perf_counter() - tic:.2f} s")
            if len(losses) == steps:
                break
    return losses


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--channels", type=int, default=16)
    ap.add_argument("--dropout", type=float, default=0.0)
    ap.add_argument("--eager", action="store_true", help="do not compile the training step")
    ap.add_argument("--cpu", action="store_true", help="run on the CPU even where a GPU is present")
    args = ap.parse_args()
    if args.cpu:
        mx.set_default_device(mx.cpu)
    main(steps=args.steps, batch_size=args.batch_size, channels=args.channels, dropout=args.dropout,
         compiled=not args.eager)
