"""The distributed cases that every rank of a job runs (tests/test_distributed.py launches it with 2 and 4
processes): ``python -m umx.launch -n N tests/mpi_cases.py DEVICE TMPDIR``.

Each case checks its results against NumPy on inputs that every rank can rebuild (a seeded generator per rank),
so a rank knows what the others sent. A failed check raises, which stops the job (see umx.launch): the test
then fails with this rank's traceback, instead of the other ranks waiting in a collective that never comes.
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np

import umx as mx

DTYPES = ["bool_", "int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "uint64", "float16", "bfloat16",
          "float32", "float64", "complex64"]


def inputs(shape: tuple, dtype: str, size: int, seed: int = 0) -> list:
    """Every rank's input, as NumPy arrays (the same on every rank)."""
    out = []
    for r in range(size):
        v = np.random.default_rng([seed, r]).uniform(-8, 8, shape)
        if dtype == "bool_":
            out.append(v > 0)
        elif dtype == "complex64":
            out.append((v + 1j * np.random.default_rng([seed, r, 1]).uniform(-8, 8, shape)).astype(np.complex64))
        elif dtype == "bfloat16":
            out.append(np.asarray(mx.array(v.astype(np.float32), mx.bfloat16)))  # values bfloat16 can hold
        else:
            out.append(np.round(v).astype(dtype) if dtype[0] in "iu" else v.astype(dtype))
    return out


def extreme(stacked: np.ndarray, op: str) -> np.ndarray:
    return stacked.max(0) if op == "max" else stacked.min(0)


def check(got, want, what: str, rtol: float = 1e-6) -> None:
    got = np.asarray(got)
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    if want.dtype.kind in "fc":
        np.testing.assert_allclose(got.astype(np.complex128), want, rtol=rtol, atol=rtol, err_msg=what)
    else:
        np.testing.assert_array_equal(got, want, err_msg=what)


def case_reductions(world, s):
    rank, size = world.rank(), world.size()
    results = []  # (umx result, NumPy's, what, rtol): evaluated together, checked after
    for name in DTYPES:
        dtype = getattr(mx, name)
        for shape in [(), (7,), (3, 5)]:
            xs = inputs(shape, name, size)
            x = mx.array(xs[rank], dtype)
            stacked = np.stack(xs)
            if name == "float16":
                want_sum, rtol = stacked.astype(np.float32).sum(0), 2e-3
            elif name == "bfloat16":
                want_sum, rtol = stacked.sum(0), 2e-2
            else:
                want_sum, rtol = (stacked.any(0) if name == "bool_" else stacked.sum(0, dtype=stacked.dtype)), 1e-6
            what = f"{name}{shape}"
            results += [(mx.distributed.all_sum(x, stream=s), want_sum, f"all_sum {what}", rtol),
                        (mx.distributed.all_max(x, stream=s), extreme(stacked, "max"), f"all_max {what}", 0),
                        (mx.distributed.all_min(x, stream=s), extreme(stacked, "min"), f"all_min {what}", 0)]
    # a strided view (a transpose) and a large array, which take other paths in the kernel and the host pool
    xs = inputs((6, 4), "float32", size, seed=1)
    results.append((mx.distributed.all_sum(mx.array(xs[rank]).T, stream=s), np.stack(xs).sum(0).T, "transpose", 1e-6))
    big = mx.full((1 << 21,), float(rank + 1))
    results.append((mx.distributed.all_sum(big, stream=s), np.full(1 << 21, size * (size + 1) / 2, np.float32),
                    "large", 0))
    mx.eval([r[0] for r in results])
    for got, want, what, rtol in results:
        check(got, want, what, rtol or 1e-6)


def case_gather_scatter(world, s):
    rank, size = world.rank(), world.size()
    for name in ["bool_", "int16", "float16", "float32", "complex64"]:
        dtype = getattr(mx, name)
        xs = inputs((2, 3), name, size)
        check(mx.distributed.all_gather(mx.array(xs[rank], dtype), stream=s), np.concatenate(xs), f"gather {name}")
        ys = inputs((2 * size, 3), name, size, seed=2)
        if name != "bool_":
            stacked = np.stack(ys).astype(np.float32 if name == "float16" else ys[0].dtype)
            want = stacked.sum(0)[2 * rank:2 * rank + 2]
            got = mx.distributed.sum_scatter(mx.array(ys[rank], dtype), stream=s)
            check(got, want, f"sum_scatter {name}", 2e-3 if name == "float16" else 1e-6)
    check(mx.distributed.all_gather(mx.array(rank * 10), stream=s), np.arange(size) * 10, "gather of 0-d arrays")


def case_send_recv(world, s):
    rank, size = world.rank(), world.size()
    # a ring: even ranks send first, odd ranks receive first, so that one transfer at a time always pairs up
    nxt, prv = (rank + 1) % size, (rank - 1) % size
    mine = mx.arange(5, dtype=mx.int64) + 100 * rank
    if rank % 2 == 0:
        mx.eval(mx.distributed.send(mine, nxt, stream=s))
        got = mx.distributed.recv_like(mine, prv, stream=s)
    else:
        got = mx.distributed.recv((5,), mx.int64, prv, stream=s)
        mx.eval(got)
        mx.eval(mx.distributed.send(mine, nxt, stream=s))
    check(got, np.arange(5) + 100 * prv, "ring transfer")
    # a transfer and other work in one eval
    y = mx.ones((5, 5)) + mx.array(2.0)
    x = mx.distributed.send(mine, 1, stream=s) if rank == 0 else mx.distributed.recv_like(mine, 0, stream=s)
    if rank in (0, 1):
        mx.eval(y, x)
        check(x, np.arange(5), "send and compute in one eval")


def case_groups(world, s):
    rank, size = world.rank(), world.size()
    assert mx.distributed.init() is world
    halves = world.split(rank % 2)
    assert halves.size() == len(range(rank % 2, size, 2)) and halves.rank() == rank // 2
    reverse = world.split(0, key=size - rank)  # keys order the new ranks
    assert reverse.rank() == size - 1 - rank
    got = mx.distributed.all_gather(mx.array([rank]), group=halves, stream=s)
    check(got, np.arange(rank % 2, size, 2), "gather in a subgroup")
    check(mx.distributed.all_gather(mx.array([rank]), group=reverse, stream=s), np.arange(size)[::-1], "reversed")
    # MLX's test_mixed, for any even size: sums in pairs, then gathered across the pairs
    if size % 2 == 0:
        pairs = world.split(rank // 2)
        across = world.split(rank % 2)
        y = mx.distributed.all_sum(mx.ones((1, 4)) * rank, group=pairs, stream=s)
        z = mx.distributed.all_gather(y, group=across, stream=s)
        check(z, np.repeat(4 * np.arange(size // 2, dtype=np.float32)[:, None] + 1, 4, 1), "pairs then across")


def case_order(world, s):
    """Communication in several streams, made and evaluated in orders that differ from each other."""
    rank, size = world.rank(), world.size()
    s2 = mx.new_stream(mx.cpu)
    slow = mx.ones((256, 256))
    for _ in range(6):
        slow = slow @ slow / 256.0  # keeps its stream busy while the other stream's collective is ready
    a = mx.distributed.all_sum(slow.sum() * 0 + rank, stream=s)
    b = mx.distributed.all_sum(mx.array(float(rank)) * 2, stream=s2)
    c = mx.distributed.all_max(mx.array(rank), stream=s2)
    mx.eval(c, b, a)  # planned in creation order on every rank: a, b, c
    total = size * (size - 1) / 2
    check(a, np.float32(total), "a")
    check(b, np.float32(2 * total), "b")
    check(c, np.array(size - 1, np.int32), "c")
    # made in one order, evaluated in another (the same on every rank)
    d = mx.distributed.all_sum(mx.array(1.0), stream=s)
    e = mx.distributed.all_sum(mx.array(2.0), stream=s2)
    check(e, np.float32(2 * size), "e first")
    check(d, np.float32(size), "d second")
    # async work, then a split: the split waits for its turn, after the pending collectives
    pending = [mx.distributed.all_sum(mx.full((1000,), float(i)), stream=s if i % 2 else s2) for i in range(6)]
    mx.async_eval(pending)
    sub = world.split(0)
    check(mx.distributed.all_sum(mx.array(1), group=sub, stream=s), np.int32(size), "after the split")
    for i, p in enumerate(pending):
        check(p, np.full(1000, i * size, np.float32), f"pending {i}")


def _address(a) -> int:
    """Where the data of evaluated host array ``a`` starts; keeps no reference to it."""
    return np.asarray(a).__array_interface__["data"][0]


def case_donation(world, s):
    """An all-reduce whose input nothing else holds reduces in that input's buffer (on the CPU), to the values a
    new buffer would get; an input still held keeps its values. Ranks differ: rank 0 holds its inputs, the others
    let go of theirs. Reductions that go through other dtypes (narrow integer sums, float16, bfloat16) or another
    collective (complex extremes) take new buffers."""
    rank, size = world.rank(), world.size()
    host = s.device == mx.cpu
    n = 1 << 12
    base = np.arange(n, dtype=np.float32) - n // 2
    for op, want in [(mx.distributed.all_sum, base * (size * (size + 1) // 2)),
                     (mx.distributed.all_max, np.maximum(base, base * size)),
                     (mx.distributed.all_min, np.minimum(base, base * size))]:
        x = mx.multiply(mx.array(base), rank + 1, stream=s)
        mx.eval(x)
        where = _address(x) if host else None
        kept = x if rank == 0 else None
        y = op(x, stream=s)
        del x
        mx.eval(y)
        check(y, want, f"{op.__name__} of an input nothing holds")
        if host:
            assert (_address(y) == where) == (kept is None), f"{op.__name__}: donated on rank {rank}"
        if kept is not None:
            check(kept, base, f"{op.__name__}: a held input keeps its values")
    # in one eval with its producer (a gradient bucket's concatenation), read by one collective or by two
    parts = [mx.full((n,), float(rank + 1)), mx.full((n,), float(2 * rank))]
    joined = mx.distributed.all_sum(mx.concatenate(parts, stream=s), stream=s)
    shared = mx.multiply(parts[0], 3, stream=s)
    both = [mx.distributed.all_sum(shared, stream=s), mx.distributed.all_max(shared, stream=s)]
    del shared  # (held by its two readers only: the first must leave it as it is)
    mx.eval(joined, both)
    total = size * (size + 1) // 2
    check(joined, np.concatenate([np.full(n, total), np.full(n, 2 * (total - size))]).astype(np.float32), "joined")
    check(both[0], np.full(n, 3 * total, np.float32), "the first of two readers")
    check(both[1], np.full(n, 3 * size, np.float32), "the second of two readers")
    for name, dtype in [("int8", mx.int8), ("uint16", mx.uint16), ("float16", mx.float16), ("bfloat16", mx.bfloat16),
                        ("bool_", mx.bool_), ("complex64", mx.complex64)]:
        xs = inputs((5, 3), name, size, seed=3)
        stacked = np.stack(xs)
        if name == "float16":  # (summed in float32 and rounded once, as case_reductions' reference)
            sums = stacked.sum(0, dtype=np.float32).astype(np.float16)
        else:
            sums = stacked.any(0) if name == "bool_" else stacked.sum(0, dtype=stacked.dtype)
        for op, want in [(mx.distributed.all_sum, sums), (mx.distributed.all_max, extreme(stacked, "max"))]:
            y = op(mx.multiply(mx.array(xs[rank], dtype), 1, stream=s).astype(dtype, stream=s), stream=s)
            check(y, want, f"{op.__name__} {name} of an input nothing holds",
                  {"bfloat16": 2e-2, "float16": 2e-3}.get(name, 1e-6))


def case_failed_input(world, s):
    """A collective whose input fails raises at eval, on every rank alike, and later ones still run: its turn is
    skipped, not waited for."""
    singular = mx.zeros((3, 3))
    bad = mx.distributed.all_sum(mx.linalg.inv(singular, stream=mx.cpu), stream=s)
    try:
        mx.eval(bad)
    except Exception:
        pass
    else:
        raise AssertionError("the failed input's error was not raised")
    check(mx.distributed.all_sum(mx.array(1.0), stream=s), np.float32(world.size()), "after a failure")


def case_overlap(world, s, tmp):
    """A collective waiting for a peer blocks neither the caller nor another stream: rank 1 joins the collective
    only after rank 0 has computed on another stream and said so (a file), which would never happen if rank 0
    were blocked."""
    rank = world.rank()
    flag = os.path.join(tmp, "rank0-computed")
    waiting = mx.distributed.all_sum(mx.array(1.0), stream=s)
    if rank == 0:
        mx.async_eval(waiting)
        other = mx.new_stream(mx.cpu)
        y = mx.sum(mx.arange(1000, stream=other), stream=other)
        assert y.item() == 499500
        open(flag, "w").close()
    elif rank == 1:
        while not os.path.exists(flag):
            time.sleep(0.01)
    check(waiting, np.float32(world.size()), "overlap")


def case_transforms(world, s):
    rank, size = world.rank(), world.size()
    x = mx.array([1.0, 2.0, 3.0]) * (rank + 1)
    g = mx.grad(lambda v: (mx.distributed.all_sum(v, stream=s) ** 2).sum())(x)
    total = np.array([1.0, 2.0, 3.0]) * size * (size + 1) / 2
    check(g, (2 * total).astype(np.float32), "grad of all_sum")  # MLX's rule: the cotangent passes through
    g = mx.grad(lambda v: (mx.distributed.all_gather(v, stream=s) * mx.arange(3 * size)).sum())(x)
    check(g, np.arange(3 * rank, 3 * rank + 3, dtype=np.float32), "grad of all_gather")
    m = mx.array([float(rank), 10.0 - rank])
    g = mx.grad(lambda v: mx.distributed.all_max(v, stream=s).sum())(m)
    check(g, np.array([rank == size - 1, rank == 0], np.float32), "grad of all_max")
    _, t = mx.jvp(lambda v: mx.distributed.all_min(v, stream=s), [m], [mx.ones(2) * (rank + 1)])
    check(t[0], np.array([1.0, size], np.float32), "jvp of all_min")
    _, t = mx.jvp(lambda v: mx.distributed.all_sum(v, stream=s), [x], [mx.ones(3)])
    check(t[0], np.full(3, size, np.float32), "jvp of all_sum")
    batch = mx.arange(12, dtype=mx.float32).reshape(4, 3) + rank
    check(mx.vmap(lambda v: mx.distributed.all_sum(v, stream=s))(batch),
          sum(np.arange(12, dtype=np.float32).reshape(4, 3) + r for r in range(size)), "vmap all_sum")
    got = mx.vmap(lambda v: mx.distributed.all_gather(v, stream=s))(batch)
    want = np.stack([np.concatenate([np.arange(3 * i, 3 * i + 3) + r for r in range(size)]) for i in range(4)])
    check(got, want.astype(np.float32), "vmap all_gather")
    got = mx.vmap(lambda v: mx.distributed.all_gather(v, stream=s))(mx.arange(4) + rank)
    check(got, np.stack([np.arange(size) + i for i in range(4)]).astype(np.int32), "vmap all_gather of 0-d")
    wide = mx.ones((4, 2 * size)) * (rank + 1)
    got = mx.vmap(lambda v: mx.distributed.sum_scatter(v, stream=s))(wide)
    check(got, np.full((4, 2), size * (size + 1) / 2, np.float32), "vmap sum_scatter")
    step = mx.compile(lambda v: mx.distributed.all_sum(v * 2, stream=s) + 1)
    for i in range(3):  # a trace, then replays: each replay's node takes its own turn
        check(step(mx.array(float(i))), np.float32(2 * i * size + 1), f"compiled call {i}")
    both = [step(mx.array(1.0)), step(mx.array(2.0))]
    mx.eval(both)
    check(both[1], np.float32(4 * size + 1), "two replays in one eval")


def main() -> None:
    device, tmp = sys.argv[1], sys.argv[2]
    world = mx.distributed.init(strict=True)
    assert world.size() == int(os.environ["OMPI_COMM_WORLD_SIZE"]), world
    s = mx.default_stream(mx.gpu if device == "gpu" else mx.cpu)
    for case in [case_reductions, case_gather_scatter, case_send_recv, case_groups, case_order, case_donation,
                 case_failed_input, case_transforms]:
        case(world, s)
        if world.rank() == 0:
            print("ok", case.__name__, flush=True)
    case_overlap(world, s, tmp)
    if world.rank() == 0:
        print("ok case_overlap", flush=True)


if __name__ == "__main__":
    main()
