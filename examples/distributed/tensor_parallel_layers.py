"""The tensor-parallel MLP of tensor_parallel.py, made of umx.nn's sharding layers: ``shard_linear`` turns the
first ``nn.Linear`` into an ``AllToShardedLinear`` (this process's rows of the weight: a slice of the hidden units)
and the second into a ``ShardedToAllLinear`` (this process's columns: its partial output, added up over the
processes by one ``all_sum``). The layers communicate by themselves, in the backward pass too: the first one sums
its input's gradient over the processes.

Every process also runs the whole model alone and checks that the outputs, the input's gradient and its shard of
the weights' gradients agree up to the order of float additions.

Run it with: python -m umx.launch -n 2 examples/distributed/tensor_parallel_layers.py
"""

from __future__ import annotations

import numpy as np

import umx as mx
import umx.nn as nn
from umx.nn.layers.distributed import shard_linear

BATCH, D_IN, D_HIDDEN, D_OUT = 16, 64, 256, 32


def close(a: mx.array, b: mx.array, what: str, rank: int) -> float:
    difference = float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
    if not np.allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-5):
        raise SystemExit(f"rank {rank}: {what} differs from the single-process one by {difference}")
    return difference


def main() -> None:
    world = mx.distributed.init()
    rank, size = world.rank(), world.size()
    if D_HIDDEN % size:
        raise SystemExit(f"the hidden width {D_HIDDEN} must be divisible by the number of processes {size}")

    mx.random.seed(0)  # the same model and input on every process
    model = nn.Sequential(nn.Linear(D_IN, D_HIDDEN), nn.ReLU(), nn.Linear(D_HIDDEN, D_OUT))
    x = mx.random.normal((BATCH, D_IN))
    sharded = nn.Sequential(shard_linear(model.layers[0], "all-to-sharded"), nn.ReLU(),
                            shard_linear(model.layers[2], "sharded-to-all"))
    if rank == 0:
        print(sharded)

    def loss(m, v):
        return (m(v) ** 2).sum()

    differences = [close(sharded(x), model(x), "the output", rank)]
    dx_sharded = mx.grad(lambda v: loss(sharded, v))(x)
    dx_whole = mx.grad(lambda v: loss(model, v))(x)
    differences.append(close(dx_sharded, dx_whole, "the input's gradient", rank))

    g_sharded = nn.value_and_grad(sharded, loss)(sharded, x)[1]["layers"]
    g_whole = nn.value_and_grad(model, loss)(model, x)[1]["layers"]
    part = slice(rank * D_HIDDEN // size, (rank + 1) * D_HIDDEN // size)
    differences += [close(g_sharded[0]["weight"], g_whole[0]["weight"][part], "the first weight's gradient", rank),
                    close(g_sharded[0]["bias"], g_whole[0]["bias"][part], "the first bias's gradient", rank),
                    close(g_sharded[2]["weight"], g_whole[2]["weight"][:, part], "the second weight's gradient",
                          rank),
                    close(g_sharded[2]["bias"], g_whole[2]["bias"], "the second bias's gradient", rank)]
    print(f"the sharded layers match the single-process model, forward and backward (rank {rank} of {size}, "
          f"largest difference {max(differences):.1e})")


if __name__ == "__main__":
    main()
