"""The cases of umx.nn's distributed parts that every rank of a job runs (tests/test_nn_distributed.py launches it
with 1, 2 and 4 processes): ``python -m umx.launch -n N tests/mpi_nn_cases.py``.

Every rank can rebuild every other rank's inputs (a seeded generator per rank), so each checks its own results
against NumPy in float64 (or against the same model run whole in one process). A failed check raises, which stops
the job (see umx.launch).
"""

from __future__ import annotations

import os

import numpy as np

import umx as mx
import umx.nn as nn
import umx.optimizers as optim
from umx.nn.layers.distributed import FullyShardedModule, shard_inplace, shard_linear
from umx.nn.utils import clip_grad_norm_sharded
from umx.utils import tree_flatten


def check(got, want, what: str, rtol: float = 1e-5, atol: float = 1e-6) -> None:
    got = np.asarray(got)
    assert got.shape == np.shape(want), f"{what}: shape {got.shape} != {np.shape(want)}"
    np.testing.assert_allclose(got.astype(np.float64), want, rtol=rtol, atol=atol, err_msg=what)


def values(shape, rank: int, seed: int) -> np.ndarray:
    return np.random.default_rng([seed, rank]).standard_normal(shape)


class CallCounter:
    """Stands in for ``mx.distributed.all_sum`` while installed, recording each call's dtype."""

    def __init__(self):
        self.dtypes = []
        self.original = mx.distributed.all_sum

    def __call__(self, x, **kwargs):
        self.dtypes.append(x.dtype)
        return self.original(x, **kwargs)

    def __enter__(self):
        mx.distributed.all_sum = self
        return self

    def __exit__(self, *exc):
        mx.distributed.all_sum = self.original


# -- average_gradients, clip_grad_norm_sharded --------------------------------------------------------------------

SHAPES = {"w": ((3, 4), "float32"), "b": ((5,), "float32"), "h": ((2, 2), "float16"), "n": ((3,), "int32"),
          "s": ((), "float32")}


def gradients(rank: int) -> dict:
    out = {}
    for i, (name, (shape, dtype)) in enumerate(SHAPES.items()):
        v = values(shape, rank, i) * 4
        out[name] = np.round(v).astype(dtype) if dtype == "int32" else v.astype(dtype)
    return {"w": out["w"], "layers": [out["b"], {"h": out["h"], "n": out["n"]}, out["s"]]}


def case_average_gradients(world, s):
    rank, size = world.rank(), world.size()
    mine = gradients(rank)
    grads = tree_to_mx(mine)
    flat_want = [np.mean([np.asarray(leaf, np.float64) for leaf in leaves], axis=0)
                 for leaves in zip(*[[v for _, v in tree_flatten(gradients(r))] for r in range(size)])]
    with CallCounter() as calls:
        averaged = nn.average_gradients(grads)
    if size == 1:
        assert averaged is grads and not calls.dtypes, "a world of one communicates nothing"
        return
    assert len(calls.dtypes) == 3, f"one all_sum per dtype (three dtypes), not {calls.dtypes}"
    flat = tree_flatten(averaged)
    assert [p for p, _ in flat] == [p for p, _ in tree_flatten(grads)], "the tree's structure is kept"
    for (path, got), want, (_, leaf) in zip(flat, flat_want, tree_flatten(grads)):
        half = leaf.dtype == mx.float16  # each partial sum rounded to float16: a few of its ulps
        check(got, want, f"average of {path}", rtol=4e-3 if half else 1e-6, atol=4e-3 if half else 1e-6)
        assert got.dtype == (mx.float32 if leaf.dtype == mx.int32 else leaf.dtype), (path, got.dtype)

    with CallCounter() as calls:
        mx.eval(nn.average_gradients(grads, all_reduce_size=0))
    assert len(calls.dtypes) == 5, "one all_sum per array without bucketing"
    many = [mx.full((10,), float(rank)) for _ in range(10)]  # 40 bytes each
    for nbytes, want_calls in [(200, 2), (196, 2), (204, 2), (400, 1), (40, 10), (80, 5)]:
        with CallCounter() as calls:
            out = nn.average_gradients(many, all_reduce_size=nbytes)
        assert len(calls.dtypes) == want_calls, (nbytes, calls.dtypes)
        check(mx.stack(out), np.full((10, 10), (size - 1) / 2), f"buckets of {nbytes} bytes")

    with CallCounter() as calls:
        cast = nn.average_gradients(grads, communication_type=mx.bfloat16, communication_stream=mx.new_stream(mx.cpu))
    assert set(calls.dtypes) == {mx.bfloat16}, calls.dtypes
    check(cast["w"], flat_want[0], "average in bfloat16", rtol=2e-2, atol=2e-2)
    assert cast["w"].dtype == mx.float32

    halves = world.split(rank % 2)
    sub = nn.average_gradients(grads, group=halves)
    members = range(rank % 2, size, 2)
    check(sub["w"], np.mean([gradients(r)["w"] for r in members], axis=0), "average over a subgroup")


def tree_to_mx(tree):
    if isinstance(tree, dict):
        return {k: tree_to_mx(v) for k, v in tree.items()}
    if isinstance(tree, list):
        return [tree_to_mx(v) for v in tree]
    return mx.array(tree)


def tree_to_np(tree):
    return {k: np.asarray(v) for k, v in tree.items()}


def case_clip_grad_norm_sharded(world, s):
    rank, size = world.rank(), world.size()
    shard = {"a": values((4, 3), rank, 10), "b": [values((5,), rank, 11)]}
    total = np.sqrt(sum(np.sum(values((4, 3), r, 10) ** 2) + np.sum(values((5,), r, 11) ** 2) for r in range(size)))
    for max_norm in (0.5 * total, 2 * total):
        clipped, norm = clip_grad_norm_sharded(tree_to_mx(shard), max_norm)
        check(norm, total, "the global norm")
        scale = min(1.0, max_norm / (total + 1e-6))
        check(clipped["a"], shard["a"] * scale, "clipped a")
        check(clipped["b"][0], shard["b"][0] * scale, "clipped b")


# -- tensor parallelism -------------------------------------------------------------------------------------------

def linear(din: int, dout: int, seed: int, bias: bool = True) -> nn.Linear:
    layer = nn.Linear(din, dout, bias=bias)
    layer.weight = mx.array(values((dout, din), 0, seed).astype(np.float32))
    if bias:
        layer.bias = mx.array(values((dout,), 0, seed + 1).astype(np.float32))
    return layer


def pieces(n: int, rank: int, size: int, segments) -> np.ndarray:
    """The indices of an axis of length ``n`` that rank ``rank`` holds, as shard_linear splits it."""
    bounds = [0, *segments, n] if isinstance(segments, list) else list(range(0, n + 1, n // segments))
    out = []
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        step = (hi - lo) // size
        out.extend(range(lo + rank * step, lo + (rank + 1) * step))
    return np.array(out)


def case_sharded_linear(world, s):
    rank, size = world.rank(), world.size()
    layer = linear(16, 48, seed=20)
    w, b = np.asarray(layer.weight, np.float64), np.asarray(layer.bias, np.float64)
    x = values((5, 16), 0, 22)
    wide = values((5, 48), 0, 23)
    for segments in (1, 3, [8, 32]):
        rows = pieces(48, rank, size, segments)
        out = shard_linear(layer, "all-to-sharded", segments=segments)
        assert isinstance(out, nn.AllToShardedLinear) and out.weight.shape == (len(rows), 16)
        check(out(mx.array(x, mx.float32)), (x @ w.T + b)[:, rows], f"all-to-sharded, segments {segments}")
    back = linear(48, 16, seed=24)
    w2, b2 = np.asarray(back.weight, np.float64), np.asarray(back.bias, np.float64)
    cols = pieces(48, rank, size, 1)
    into = shard_linear(back, "sharded-to-all")
    assert isinstance(into, nn.ShardedToAllLinear) and into.bias.shape == (16,)
    check(into(mx.array(wide[:, cols], mx.float32)), wide @ w2.T + b2, "sharded-to-all", rtol=1e-5, atol=1e-5)
    no_bias = shard_linear(linear(48, 16, seed=24, bias=False), "sharded-to-all")
    check(no_bias(mx.array(wide[:, cols], mx.float32)), wide @ w2.T, "sharded-to-all without bias", atol=1e-5)
    assert "bias" not in no_bias
    # the backward pass of the pair equals the whole model's: its shards of the weights' gradients and the whole
    # input gradient (summed over the group by the first layer); float32 sums in other orders: atol 1e-5 for
    # gradients of order 1
    model = nn.Sequential(layer, nn.ReLU(), back)
    sharded = nn.Sequential(shard_linear(layer, "all-to-sharded"), nn.ReLU(), shard_linear(back, "sharded-to-all"))
    target = mx.array(values((5, 16), 0, 25), mx.float32)

    def loss(m, v):
        return ((m(v) - target) ** 2).mean()

    xs = mx.array(x, mx.float32)
    (l_whole, g_whole), (l_sharded, g_sharded) = (nn.value_and_grad(m, loss)(m, xs) for m in (model, sharded))
    check(l_sharded, float(np.asarray(l_whole)), "the sharded loss", atol=1e-5)
    g1, g2 = g_sharded["layers"], {k: tree_to_np(v) for k, v in enumerate(g_whole["layers"])}
    check(g1[0]["weight"], g2[0]["weight"][cols], "grad of w1", atol=1e-5)
    check(g1[0]["bias"], g2[0]["bias"][cols], "grad of b1", atol=1e-5)
    check(g1[2]["weight"], g2[2]["weight"][:, cols], "grad of w2", atol=1e-5)
    check(g1[2]["bias"], g2[2]["bias"], "grad of b2", atol=1e-5)
    dx = [mx.grad(lambda v, m=m: loss(m, v))(xs) for m in (model, sharded)]
    check(dx[1], np.asarray(dx[0]), "the input's gradient", atol=1e-5)


def case_shard_inplace(world, s):
    rank, size = world.rank(), world.size()
    first, second = linear(8, 24, seed=30), linear(24, 8, seed=32)
    w1, b1 = np.asarray(first.weight, np.float64), np.asarray(first.bias, np.float64)
    w2, b2 = np.asarray(second.weight, np.float64), np.asarray(second.bias, np.float64)
    model = nn.Sequential(first, second)
    shard_inplace(model.layers[0], "all-to-sharded", segments=3)
    shard_inplace(model.layers[1], lambda path, p: (-1, 3) if path == "weight" else None)
    rows = pieces(24, rank, size, 3)
    x = values((2, 8), 0, 34)
    hidden = model.layers[0](mx.array(x, mx.float32))
    y = mx.distributed.all_sum(hidden @ model.layers[1].weight.T) + model.layers[1].bias
    check(hidden, (x @ w1.T + b1)[:, rows], "the sharded hidden units")
    check(y, (x @ w1.T + b1) @ w2.T + b2, "the summed output", atol=1e-5)


def case_quantized(world, s):
    if not hasattr(mx, "quantize"):
        return  # mx.quantize lands from another branch
    rank, size = world.rank(), world.size()
    whole = linear(128, 64, seed=40).to_quantized(group_size=32, bits=4)
    x = mx.array(values((3, 128), 0, 42), mx.float32)
    y = np.asarray(whole(x), np.float64)
    rows, cols = pieces(64, rank, size, 1), pieces(128, rank, size, 1)
    out = shard_linear(whole, "all-to-sharded")
    assert isinstance(out, nn.QuantizedAllToShardedLinear) and not tree_flatten(out.trainable_parameters())
    check(out(x), y[:, rows], "quantized all-to-sharded", atol=1e-5)
    into = shard_linear(whole, "sharded-to-all")
    assert isinstance(into, nn.QuantizedShardedToAllLinear)
    check(into(x[:, cols.tolist()]), y, "quantized sharded-to-all", atol=1e-4)


# -- fully sharded data parallelism -------------------------------------------------------------------------------

def mlp() -> nn.Module:
    mx.random.seed(50)
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.LayerNorm(16), nn.Linear(16, 4))


def gathered(module: FullyShardedModule) -> dict:
    return {p: mx.distributed.all_gather(v, group=module.group) for p, v in tree_flatten(module.parameters())}


def case_fully_shard(world, s):
    rank, size = world.rank(), world.size()
    assert isinstance(nn.fully_shard(mlp()), FullyShardedModule if size > 1 else nn.Sequential)
    whole, fsdp = mlp(), FullyShardedModule(mlp())
    assert fsdp.module.layers[0].weight.shape == (16 // size, 8)
    batches = [values((3, 8), r, 51).astype(np.float32) for r in range(size)]
    targets = [values((3, 4), r, 52).astype(np.float32) for r in range(size)]

    def loss(m, x, y):
        return ((m(x) - y) ** 2).mean()

    # one process's batch each: its shard of the gradient of the mean loss over all the batches
    _, g_fsdp = nn.value_and_grad(fsdp, loss)(fsdp, mx.array(batches[rank]), mx.array(targets[rank]))
    _, g_whole = nn.value_and_grad(whole, loss)(whole, mx.array(np.concatenate(batches)),
                                                mx.array(np.concatenate(targets)))
    for (path, got), (_, want) in zip(tree_flatten(g_fsdp["module"]), tree_flatten(g_whole)):
        rows = want.shape[0] // size
        check(got, np.asarray(want)[rank * rows:(rank + 1) * rows], f"the gradient shard of {path}", atol=1e-5)
    # training: an optimizer updates the shards alone, which stay the whole model's
    opt_fsdp, opt_whole = optim.Adam(learning_rate=1e-2), optim.Adam(learning_rate=1e-2)
    for _ in range(3):
        opt_fsdp.update(fsdp, nn.value_and_grad(fsdp, loss)(fsdp, mx.array(batches[rank]),
                                                          mx.array(targets[rank]))[1])
        opt_whole.update(whole, nn.value_and_grad(whole, loss)(whole, mx.array(np.concatenate(batches)),
                                                               mx.array(np.concatenate(targets)))[1])
        mx.eval(fsdp.parameters(), whole.parameters())
    for (path, got), (_, want) in zip(gathered(fsdp).items(), tree_flatten(whole.parameters())):
        check(got, np.asarray(want), f"{path} after training", atol=1e-5)

    # one FullyShardedModule per layer, inside an ordinary model
    layered = mlp()
    for i in (0, 2, 3):
        layered.layers[i] = FullyShardedModule(layered.layers[i])
    _, g_layered = nn.value_and_grad(layered, loss)(layered, mx.array(batches[rank]), mx.array(targets[rank]))
    reference = mlp()
    _, g_whole = nn.value_and_grad(reference, loss)(reference, mx.array(np.concatenate(batches)),
                                                    mx.array(np.concatenate(targets)))
    for i in (0, 2, 3):
        for name, got in g_layered["layers"][i]["module"].items():
            want = np.asarray(g_whole["layers"][i][name])
            rows = want.shape[0] // size
            check(got, want[rank * rows:(rank + 1) * rows], f"layer {i}'s {name} gradient shard", atol=1e-5)

    # compute_dtype: gathered (and the gradients summed) in float16, the gradients back in float32
    half = FullyShardedModule(mlp(), compute_dtype=mx.float16)
    x = mx.array(batches[rank])
    check(half(x.astype(mx.float16)), np.asarray(mlp()(x)), "a float16 call", rtol=2e-2, atol=2e-2)
    _, g_half = nn.value_and_grad(half, loss)(half, x.astype(mx.float16), mx.array(targets[rank]))
    assert all(g.dtype == mx.float32 for _, g in tree_flatten(g_half))

    # as_linear, frozen parameters (gathered, without gradients) and a parameter the call replaces
    table = nn.Embedding(8, 6)
    full_table = np.asarray(table.weight)
    shared = FullyShardedModule(table)
    check(shared(mx.array([1, 7])), full_table[[1, 7]], "embedding lookup")
    check(shared.as_linear(mx.ones((2, 6))), np.ones((2, 6)) @ full_table.T, "as_linear")
    norm = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm(8, momentum=0.5))
    norm.layers[0].freeze(keys=["bias"])
    w, b = np.asarray(norm.layers[0].weight, np.float64), np.asarray(norm.layers[0].bias, np.float64)
    bn = FullyShardedModule(norm)
    xs = [values((6, 4), r, 53) for r in range(size)]
    _, g_bn = nn.value_and_grad(bn, lambda m, v: m(v).sum())(bn, mx.array(xs[rank], mx.float32))
    assert "bias" not in g_bn["module"]["layers"][0] and bn.module.layers[1].running_mean.shape == (8 // size,)
    # each process keeps its shard of the running mean its own batch gave
    part = 8 // size
    want = np.concatenate([0.5 * (xs[r] @ w.T + b).mean(0)[r * part:(r + 1) * part] for r in range(size)])
    check(mx.distributed.all_gather(bn.module.layers[1].running_mean), want, "the running mean, sharded again")


def main() -> None:
    world = mx.distributed.init(strict=True)
    assert world.size() == int(os.environ["OMPI_COMM_WORLD_SIZE"]), world
    s = mx.default_stream(mx.cpu)
    for case in [case_average_gradients, case_clip_grad_norm_sharded, case_sharded_linear, case_shard_inplace,
                 case_quantized, case_fully_shard]:
        case(world, s)
        if world.rank() == 0:
            print("ok", case.__name__, flush=True)


if __name__ == "__main__":
    main()
