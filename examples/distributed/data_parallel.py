"""Data-parallel training of a small MLP: every process holds the whole model and trains it on its own shard of
each batch; ``nn.average_gradients`` averages the gradients over the processes before every optimizer step, so
every process takes the same step, the one a single process would take on the whole batch.

Why that is the same step: the loss is a mean over the batch and the shards are equal in size, so the mean of the
shards' gradients is the whole batch's gradient. Only the order of float additions differs (each process sums its
shard, then ``all_sum`` adds the partial results), a relative difference of a few float32 ulps per gradient. Each
process also trains a copy of the model alone on the whole batch and checks that the two copies' parameters agree
within ``ATOL + RTOL * |parameter|``: after ``STEPS`` steps of SGD the reordering leaves differences of the order
of ``STEPS * LEARNING_RATE * |gradient| * 1e-7``, far below that tolerance, while an error in the averaging
(a sum instead of a mean, or a missing shard) changes the parameters by about ``1e-2``.

Run it with: python -m umx.launch -n 2 examples/distributed/data_parallel.py [--save params.npz]
(``--save`` writes the trained parameters from rank 0, for comparison with another run.)
"""

from __future__ import annotations

import argparse

import numpy as np

import umx as mx
import umx.nn as nn
import umx.optimizers as optim
from umx.utils import tree_flatten

BATCH, D_IN, D_HIDDEN, D_OUT = 64, 16, 32, 4
STEPS, LEARNING_RATE, MOMENTUM = 20, 0.05, 0.9
ATOL, RTOL = 1e-5, 1e-4


def make_model() -> nn.Module:
    mx.random.seed(0)  # the same initial parameters on every process
    return nn.Sequential(nn.Linear(D_IN, D_HIDDEN), nn.ReLU(), nn.Linear(D_HIDDEN, D_OUT))


def dataset(step: int) -> tuple[mx.array, mx.array]:
    """Batch ``step`` of a synthetic regression task, the same on every process."""
    kx, ky = mx.random.split(mx.random.key(1000 + step))
    x = mx.random.normal((BATCH, D_IN), key=kx)
    teacher = mx.random.normal((D_IN, D_OUT), key=mx.random.key(7))
    y = mx.tanh(x @ teacher) + 0.1 * mx.random.normal((BATCH, D_OUT), key=ky)
    return x, y


def loss_fn(model: nn.Module, x: mx.array, y: mx.array) -> mx.array:
    return nn.losses.mse_loss(model(x), y)  # a mean over the batch


def train(model: nn.Module, shard: slice, group) -> list[float]:
    """Train ``model`` on rows ``shard`` of every batch, averaging the gradients over ``group`` (``None``: no
    communication, the single-process run); returns the losses."""
    optimizer = optim.SGD(learning_rate=LEARNING_RATE, momentum=MOMENTUM)
    loss_and_grad = nn.value_and_grad(model, loss_fn)
    losses = []
    for step in range(STEPS):
        x, y = dataset(step)
        loss, grads = loss_and_grad(model, x[shard], y[shard])
        if group is not None:
            grads = nn.average_gradients(grads, group=group)
            loss = mx.distributed.all_sum(loss, group=group) / group.size()
        optimizer.update(model, grads)
        mx.eval(loss, model.parameters(), optimizer.state)
        losses.append(loss.item())
    return losses


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--save", help="write rank 0's trained parameters to this .npz file")
    args = parser.parse_args()

    world = mx.distributed.init()
    rank, size = world.rank(), world.size()
    if BATCH % size:
        raise SystemExit(f"the batch of {BATCH} must be divisible by the number of processes {size}")

    parallel = make_model()
    losses = train(parallel, slice(rank * BATCH // size, (rank + 1) * BATCH // size), world)
    alone = make_model()
    alone_losses = train(alone, slice(None), None)

    ours, theirs = dict(tree_flatten(parallel.parameters())), dict(tree_flatten(alone.parameters()))
    difference = max(float(np.max(np.abs(np.asarray(ours[k]) - np.asarray(theirs[k])))) for k in ours)
    for name in ours:
        if not np.allclose(np.asarray(ours[name]), np.asarray(theirs[name]), rtol=RTOL, atol=ATOL):
            raise SystemExit(f"rank {rank}: {name} differs from the single-process run's by {difference}")
    if not np.allclose(losses, alone_losses, rtol=RTOL, atol=ATOL):
        raise SystemExit(f"rank {rank}: the losses differ: {losses} and {alone_losses}")
    if args.save and rank == 0:
        np.savez(args.save, **{k: np.asarray(v) for k, v in ours.items()})
    print(f"the data-parallel parameters match the single-process run's (rank {rank} of {size}, loss "
          f"{losses[0]:.4f} -> {losses[-1]:.4f}, largest difference {difference:.1e})")


if __name__ == "__main__":
    main()
