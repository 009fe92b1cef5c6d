"""A tensor-parallel forward pass of a small MLP: each process holds a slice of the weights.

The first layer's weight is sharded by columns (each rank computes a slice of the hidden units), the second's by
rows (each rank multiplies its slice of the hidden units by its rows, giving a partial output), and one
``all_sum`` adds the partial outputs up. Every rank also runs the whole MLP alone and checks that the two agree up
to the order of float additions.

Run it with: python -m umx.launch -n 2 examples/distributed/tensor_parallel.py
"""

from __future__ import annotations

import numpy as np

import umx as mx

BATCH, D_IN, D_HIDDEN, D_OUT = 16, 64, 256, 32


def mlp(x, w1, b1, w2, b2):
    return mx.maximum(x @ w1 + b1, 0) @ w2 + b2


def main() -> None:
    world = mx.distributed.init()
    rank, size = world.rank(), world.size()
    if D_HIDDEN % size:
        raise SystemExit(f"the hidden width {D_HIDDEN} must be divisible by the number of processes {size}")

    # the same weights and inputs on every rank (the same keys)
    k1, k2, k3, k4, kx = mx.random.split(mx.random.key(0), 5)
    w1 = mx.random.normal((D_IN, D_HIDDEN), key=k1) / D_IN**0.5
    b1 = mx.random.normal((D_HIDDEN,), key=k2)
    w2 = mx.random.normal((D_HIDDEN, D_OUT), key=k3) / D_HIDDEN**0.5
    b2 = mx.random.normal((D_OUT,), key=k4)
    x = mx.random.normal((BATCH, D_IN), key=kx)

    # this rank's shards: columns of the first layer (and its bias), rows of the second
    part = slice(rank * D_HIDDEN // size, (rank + 1) * D_HIDDEN // size)
    w1_shard, b1_shard, w2_shard = w1[:, part], b1[part], w2[part, :]
    mx.eval(w1_shard, b1_shard, w2_shard)

    hidden = mx.maximum(x @ w1_shard + b1_shard, 0)  # this rank's hidden units
    y = mx.distributed.all_sum(hidden @ w2_shard) + b2  # the partial outputs, added up

    reference = mlp(x, w1, b1, w2, b2)
    difference = float(np.max(np.abs(np.asarray(y) - np.asarray(reference))))
    if not np.allclose(np.asarray(y), np.asarray(reference), rtol=1e-5, atol=1e-5):
        raise SystemExit(f"rank {rank}: the sharded result differs from the single-process one by {difference}")
    print(f"the sharded forward pass matches the single-process one (rank {rank} of {size}, largest difference "
          f"{difference:.1e})")


if __name__ == "__main__":
    main()
