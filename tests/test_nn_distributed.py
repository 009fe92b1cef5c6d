"""umx.nn's distributed parts: average_gradients, clip_grad_norm_sharded, the sharded linear layers, shard_linear,
shard_inplace and FullyShardedModule. In this process (a world of one, and a stand-in group of several processes
for what needs no communication: sharding, bucketing), then in jobs of 1, 2 and 4 processes
(tests/mpi_nn_cases.py) and the data- and tensor-parallel examples under the launcher."""

from __future__ import annotations

import importlib.util
import inspect
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import umx as mx
import umx.nn as nn
from tests.conftest import assert_close
from tests.test_distributed import ROOT, _job, _passed, needs_mpi
from umx.nn.layers import distributed as dist
from umx.nn.utils import average_gradients, clip_grad_norm_sharded
from umx.optimizers import clip_grad_norm
from umx.utils import tree_flatten


class StandIn:
    """A group of ``size`` processes seen from ``rank``, for what only asks a group its rank and size."""

    def __init__(self, rank: int, size: int):
        self._rank, self._size = rank, size

    def rank(self) -> int:
        return self._rank

    def size(self) -> int:
        return self._size


class FakeAllSum:
    """``mx.distributed.all_sum`` as if ``copies`` processes held the same array; records each call."""

    def __init__(self, copies: int):
        self.copies, self.calls = copies, []

    def __call__(self, x, *, group=None, stream=None):
        self.calls.append((x.shape, x.dtype))
        return x * self.copies


# -- average_gradients, clip_grad_norm_sharded --------------------------------------------------------------------

def test_average_gradients_in_a_world_of_one(monkeypatch):
    fake = FakeAllSum(1)
    monkeypatch.setattr(mx.distributed, "all_sum", fake)
    grads = {"a": mx.ones(3), "b": [mx.zeros((2, 2))]}
    assert average_gradients(grads) is grads
    assert nn.average_gradients(grads, all_reduce_size=0) is grads
    assert not fake.calls


def _bucket_counts(sizes_by_dtype: dict, nbytes: int) -> int:
    """How many messages: per dtype, runs of arrays closed once they hold ``nbytes`` bytes."""
    count = 0
    for sizes in sizes_by_dtype.values():
        held = 0
        for size in sizes:
            held += size
            if held >= nbytes:
                count, held = count + 1, 0
        count += held > 0
    return count


@settings(max_examples=30, deadline=None)
@given(shapes=st.lists(st.tuples(st.lists(st.integers(1, 5), max_size=3), st.sampled_from(["float32", "float16"])),
                       min_size=1, max_size=8),
       nbytes=st.integers(-1, 200))
def test_average_gradients_buckets(shapes, nbytes):
    """Bucketed or not, the average of identical gradients is themselves, in their dtypes; one all_sum per
    bucket (arrays of one dtype, closed once they hold all_reduce_size bytes), each read at call time."""
    fake = FakeAllSum(3)
    rng = np.random.default_rng(0)
    grads = [mx.array(rng.standard_normal(shape).astype(dtype)) for shape, dtype in shapes]
    original = mx.distributed.all_sum
    mx.distributed.all_sum = fake
    try:
        averaged = average_gradients(grads, group=StandIn(0, 3), all_reduce_size=nbytes)
    finally:
        mx.distributed.all_sum = original
    assert len(averaged) == len(grads)
    for got, want in zip(averaged, grads):
        assert got.dtype == want.dtype and got.shape == want.shape
        assert_close(got, np.asarray(want), rtol=1e-3 if want.dtype == mx.float16 else 1e-6)
    if nbytes <= 0:
        assert len(fake.calls) == len(grads)
    else:
        sizes: dict = {}
        for g in grads:
            sizes.setdefault(g.dtype, []).append(g.nbytes)
        assert len(fake.calls) == _bucket_counts(sizes, nbytes)


def test_average_gradients_dtypes_and_communication_type(monkeypatch):
    fake = FakeAllSum(2)
    monkeypatch.setattr(mx.distributed, "all_sum", fake)
    grads = {"i": mx.array([1, 2, 3]), "f": mx.array([0.5, 1.5]), "s": mx.array(2.0)}
    averaged = average_gradients(grads, group=StandIn(1, 2))
    assert averaged["i"].dtype == mx.float32  # an integer sum divided: a float, as MLX gives
    assert_close(averaged["i"], [1.0, 2.0, 3.0])
    assert averaged["s"].shape == () and averaged["s"].item() == 2.0
    fake.calls.clear()
    cast = average_gradients({"f": mx.array([0.5, 1.5]), "g": mx.ones((2, 2))}, group=StandIn(1, 2),
                             communication_type=mx.bfloat16)
    assert [dtype for _, dtype in fake.calls] == [mx.bfloat16]
    assert cast["f"].dtype == mx.float32 and cast["g"].dtype == mx.float32
    assert_close(cast["f"], [0.5, 1.5])
    tree = mx.arange(4, dtype=mx.float32)  # a single array is a tree too
    assert_close(average_gradients(tree, group=StandIn(0, 2)), np.arange(4))


def test_clip_grad_norm_sharded_in_a_world_of_one(on, rng):
    grads = {"a": mx.array(rng.standard_normal((4, 3)).astype(np.float32)), "b": [mx.array(rng.standard_normal(5))]}
    for max_norm in (0.5, 100.0):
        clipped, norm = clip_grad_norm_sharded(grads, max_norm)
        want, want_norm = clip_grad_norm(grads, max_norm)
        assert_close(norm, np.asarray(want_norm))
        for (_, got), (_, expected) in zip(tree_flatten(clipped), tree_flatten(want)):
            assert_close(got, np.asarray(expected))
    _, norm = clip_grad_norm_sharded({}, 1.0)
    assert norm.item() == 0.0


def test_clip_grad_norm_sharded_refuses_a_negative_max_norm(monkeypatch):
    """As clip_grad_norm: a negative bound would flip the gradients' sign, so it is refused, before any message."""
    fake = FakeAllSum(2)
    monkeypatch.setattr(mx.distributed, "all_sum", fake)
    with pytest.raises(ValueError, match="clip_grad_norm_sharded: max_norm should be >=0"):
        clip_grad_norm_sharded({"a": mx.ones(3)}, -1.0, group=StandIn(0, 2))
    assert not fake.calls
    clipped, norm = clip_grad_norm_sharded({"a": mx.ones(3)}, 0.0, group=StandIn(0, 2))  # (0 is allowed)
    assert_close(norm, np.sqrt(6.0), rtol=1e-6)
    assert_close(clipped["a"], np.zeros(3))


# -- sharding -----------------------------------------------------------------------------------------------------

def _np(tree):
    return {k: np.asarray(v) for k, v in tree_flatten(tree)}


@pytest.mark.parametrize("rank", [0, 1, 2])
def test_shard_inplace_by_name(rank):
    group = StandIn(rank, 3)
    model = nn.Sequential(nn.Linear(4, 6), nn.Conv2d(3, 6, 3))
    before = _np(model.parameters())
    dist.shard_inplace(model, "all-to-sharded", group=group)
    after = _np(model.parameters())
    # axis ndim - 2 (0 for the linear weight and the biases, 2 for the conv weight (out, h, w, in))
    assert_close(after["layers.0.weight"], before["layers.0.weight"][2 * rank:2 * rank + 2])
    assert_close(after["layers.0.bias"], before["layers.0.bias"][2 * rank:2 * rank + 2])
    assert_close(after["layers.1.weight"], before["layers.1.weight"][:, :, rank:rank + 1])
    model = nn.Sequential(nn.Linear(6, 4))
    before = _np(model.parameters())
    dist.shard_inplace(model, "sharded-to-all", group=group)
    after = _np(model.parameters())
    assert_close(after["layers.0.weight"], before["layers.0.weight"][:, 2 * rank:2 * rank + 2])
    assert_close(after["layers.0.bias"], before["layers.0.bias"])  # biases stay whole


@pytest.mark.parametrize("segments, rows", [(3, [0, 1, 4, 5, 8, 9]), ([2], [0, 2, 3])])
def test_shard_inplace_segments(segments, rows):
    """Each segment (e.g. the query, key and value of a fused projection) is sharded on its own."""
    layer = nn.Linear(2, 12 if segments == 3 else 6)
    weight = np.asarray(layer.weight)
    dist.shard_inplace(layer, "all-to-sharded", segments=segments, group=StandIn(0, 2))
    assert_close(layer.weight, weight[rows])
    layer = nn.Linear(2, 12 if segments == 3 else 6)
    weight = np.asarray(layer.weight)
    dist.shard_inplace(layer, lambda path, w: (0, segments) if path == "weight" else None, group=StandIn(0, 2))
    assert_close(layer.weight, weight[rows])


def test_shard_inplace_rules_and_errors():
    layer = nn.Linear(4, 4)
    weight, bias = np.asarray(layer.weight), np.asarray(layer.bias)
    seen = []
    dist.shard_inplace(layer, lambda path, w: seen.append(path) or (-1 if path == "weight" else None),
                       group=StandIn(1, 2))
    assert seen == ["weight", "bias"]
    assert_close(layer.weight, weight[:, 2:]) and assert_close(layer.bias, bias)
    with pytest.raises(ValueError, match="'all-to-sharded' or 'sharded-to-all'"):
        dist.shard_inplace(layer, "by-rows")
    with pytest.raises(ValueError, match="int or tuple"):
        dist.shard_inplace(layer, lambda path, w: "rows", group=StandIn(0, 2))
    with pytest.raises(ValueError, match="split"):
        dist.shard_inplace(nn.Linear(4, 5), "all-to-sharded", group=StandIn(0, 2))
    unchanged = nn.Linear(4, 6)
    before = _np(unchanged.parameters())
    dist.shard_inplace(unchanged, "all-to-sharded", segments=3)  # a world of one: every shard is the whole
    assert all(np.array_equal(v, before[k]) for k, v in _np(unchanged.parameters()).items())


def test_sharded_linear_layers(on, rng):
    group = StandIn(1, 4)
    a = nn.AllToShardedLinear(6, 8, group=group)
    assert a.weight.shape == (2, 6) and a.bias.shape == (2,)
    assert repr(a) == "AllToShardedLinear(input_dims=6, output_dims=8, bias=True)"
    b = nn.ShardedToAllLinear(8, 3, bias=False, group=group)
    assert b.weight.shape == (3, 2) and "bias" not in b
    assert repr(b) == "ShardedToAllLinear(input_dims=8, output_dims=3, bias=False)"
    assert sorted(k for k, _ in tree_flatten(a.trainable_parameters())) == ["bias", "weight"]
    with pytest.raises(ValueError, match="output of size 6 across 4"):
        nn.AllToShardedLinear(3, 6, group=group)
    with pytest.raises(ValueError, match="input of size 6 cannot be sharded across 4"):
        nn.ShardedToAllLinear(6, 3, group=group)
    with pytest.raises(ValueError, match="'all-to-sharded' or 'sharded-to-all'"):
        dist.shard_linear(nn.Linear(4, 4), "rows")
    with pytest.raises(ValueError, match="2-D weight, got Conv1d"):
        dist.shard_linear(nn.Conv1d(4, 4, 1), "all-to-sharded")
    # in a world of one the layers are the whole linear layer
    lin = nn.Linear(5, 4)
    x = mx.array(rng.standard_normal((3, 5)).astype(np.float32))
    want = np.asarray(lin(x))
    for sharding, cls in (("all-to-sharded", nn.AllToShardedLinear), ("sharded-to-all", nn.ShardedToAllLinear)):
        layer = dist.shard_linear(lin, sharding)
        assert type(layer) is cls
        assert_close(layer(x), want)
    grad = mx.grad(lambda v: dist.sum_gradients()(v).sum())(x)  # the identity's gradient in a world of one
    assert_close(grad, np.ones((3, 5)))


@pytest.mark.skipif(not hasattr(mx, "quantize"), reason="mx.quantize lands from another branch")
def test_quantized_sharded_linear_layers():
    qlin = nn.Linear(256, 64).to_quantized(bits=4)
    for cls in (nn.QuantizedAllToShardedLinear, nn.QuantizedShardedToAllLinear):
        layer = cls.from_quantized_linear(qlin)
        assert layer.weight.shape == qlin.weight.shape and layer.bits == 4 and layer.mode == "affine"
        layer.unfreeze()
        assert not tree_flatten(layer.trainable_parameters())  # quantized parameters stay frozen
    sharded = nn.QuantizedAllToShardedLinear.from_quantized_linear(qlin, group=StandIn(1, 2))
    assert_close(sharded.weight, np.asarray(qlin.weight)[32:])
    assert_close(sharded.scales, np.asarray(qlin.scales)[32:])
    into = nn.QuantizedShardedToAllLinear.from_quantized_linear(qlin, group=StandIn(1, 2))
    assert into.weight.shape == (64, qlin.weight.shape[1] // 2) and into.bias.shape == (64,)
    assert "input_dims=256" in repr(into)
    x = mx.ones((2, 256))
    assert_close(dist.shard_linear(qlin, "sharded-to-all")(x), np.asarray(qlin(x)), atol=1e-5)


# -- fully sharded data parallelism -------------------------------------------------------------------------------

def test_fully_sharded_module_shards_every_parameter():
    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 2))
    before = _np(model.parameters())
    fsdp = nn.FullyShardedModule(model, group=StandIn(1, 2))
    assert fsdp.module is model
    after = _np(fsdp.parameters())
    assert sorted(after) == sorted("module." + k for k in before)
    for k, v in before.items():
        rows = v.shape[0] // 2
        assert_close(after["module." + k], v[rows:])
    assert repr(fsdp).startswith("FullyShardedModule(num_sharded_params=4")
    with pytest.raises(ValueError, match=r"'layers.0.weight' with shape \(5, 4\) across 2 devices"):
        nn.FullyShardedModule(nn.Sequential(nn.Linear(4, 5)), group=StandIn(0, 2))


def test_fully_sharded_module_in_a_world_of_one(on, rng):
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
    assert nn.fully_shard(model) is model
    whole = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
    whole.update(model.parameters())
    fsdp = nn.FullyShardedModule(model)
    x = mx.array(rng.standard_normal((5, 3)).astype(np.float32))
    assert_close(fsdp(x), np.asarray(whole(x)))

    def loss(m, v):
        return (m(v) ** 2).mean()

    _, g_fsdp = nn.value_and_grad(fsdp, loss)(fsdp, x)
    _, g_whole = nn.value_and_grad(whole, loss)(whole, x)
    for (_, got), (_, want) in zip(tree_flatten(g_fsdp["module"]), tree_flatten(g_whole)):
        assert_close(got, np.asarray(want))
    assert all(isinstance(v, mx.array) for _, v in tree_flatten(fsdp.parameters()))  # shards are back


# -- MLX's names and signatures ----------------------------------------------------------------------------------

_MLX_NAMES = {
    "mlx.nn": ["AllToShardedLinear", "ShardedToAllLinear", "QuantizedAllToShardedLinear",
               "QuantizedShardedToAllLinear", "FullyShardedModule", "fully_shard", "average_gradients"],
    "mlx.nn.layers.distributed": ["shard_linear", "shard_inplace", "sum_gradients"],
    "mlx.nn.utils": ["average_gradients", "clip_grad_norm_sharded"],
}


@pytest.mark.skipif(importlib.util.find_spec("mlx") is None, reason="the real MLX is an optional reference")
def test_names_and_signatures_are_mlx():
    """Every name MLX has here exists in umx, and takes MLX's parameters by the same names and order."""
    if "mlx.core" in sys.modules and sys.modules["mlx.core"] is mx:
        pytest.skip("mlx is aliased to umx in this process")
    mlx_modules = {name: importlib.import_module(name) for name in _MLX_NAMES}
    for module_name, names in _MLX_NAMES.items():
        ours = importlib.import_module(module_name.replace("mlx", "umx", 1))
        for name in names:
            theirs = getattr(mlx_modules[module_name], name)
            mine = getattr(ours, name)
            for attr in ["__init__", "from_linear", "from_quantized_linear"] if inspect.isclass(theirs) else [None]:
                if attr is not None and not hasattr(theirs, attr):
                    continue
                t = inspect.signature(theirs if attr is None else getattr(theirs, attr)).parameters
                m = inspect.signature(mine if attr is None else getattr(mine, attr)).parameters
                assert list(m)[:len(t)] == list(t), (module_name, name, attr, list(m), list(t))


# -- jobs of several processes ------------------------------------------------------------------------------------

@needs_mpi
@pytest.mark.parametrize("n", [1, 2, 4])
def test_nn_distributed_across_processes(n):
    job = _job(n, "tests/mpi_nn_cases.py")
    assert _passed(job)
    assert "[0] ok case_fully_shard" in job.stdout


@needs_mpi
def test_data_parallel_example_matches_one_process(tmp_path):
    """Two processes, each training on half of every batch with averaged gradients, end with the parameters of
    one process trained on the whole batches, up to the order of float additions (see the example)."""
    alone, parallel = tmp_path / "alone.npz", tmp_path / "parallel.npz"
    job = _job(1, "examples/distributed/data_parallel.py", "--save", str(alone))
    assert _passed(job)
    job = _job(2, "examples/distributed/data_parallel.py", "--save", str(parallel))
    assert _passed(job)
    assert "[1] the data-parallel parameters match the single-process run's (rank 1 of 2" in job.stdout
    want, got = np.load(alone), np.load(parallel)
    assert sorted(want) == sorted(got) and len(want) == 4
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-4, atol=1e-5, err_msg=name)


@needs_mpi
def test_tensor_parallel_layers_example():
    job = _job(2, "examples/distributed/tensor_parallel_layers.py")
    assert _passed(job)
    assert "[1] the sharded layers match the single-process model, forward and backward" in job.stdout
    assert (ROOT / "examples" / "distributed" / "tensor_parallel.py").exists()
