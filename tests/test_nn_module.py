"""nn.Module: the dict model, tree walks, update/freeze/train, weights on disk, and modules under transforms."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import umx as mx
import umx.nn as nn
from tests.conftest import assert_close
from umx.utils import tree_flatten, tree_map


class Pair(nn.Module):
    def __init__(self):
        super().__init__()
        self.first = nn.Linear(3, 4)
        self.blocks = [nn.Sequential(nn.Linear(4, 4), nn.relu), nn.LayerNorm(4)]
        self.extra = {"scale": mx.ones((4,))}
        self._cache = mx.zeros((2,))
        self.size = 4

    def __call__(self, x):
        x = self.blocks[1](self.blocks[0](self.first(x)))
        return x * self.extra["scale"]


def paths(tree) -> list[str]:
    return [k for k, _ in tree_flatten(tree)]


def test_attributes_live_in_the_dict():
    m = Pair()
    assert m.first is m["first"] and m.size == 4 and "size" not in m
    m.val = None
    assert m.val is None and "val" not in m
    m.val = mx.array([3])
    assert "val" in m and m.val.item() == 3
    m.val = None  # a plain value replaces the entry
    assert m.val is None and "val" not in m
    del m.first
    assert not hasattr(m, "first")
    with pytest.raises(AttributeError):
        m.missing  # noqa: B018


def test_parameters_children_and_leaves():
    m = Pair()
    assert paths(m.parameters()) == [
        "first.weight", "first.bias", "blocks.0.layers.0.weight", "blocks.0.layers.0.bias", "blocks.1.weight",
        "blocks.1.bias", "extra.scale"]
    children = m.children()
    assert set(children) == {"first", "blocks", "extra"} and children["blocks"][1] is m.blocks[1]
    leaves = tree_flatten(m.leaf_modules(), is_leaf=nn.Module.is_module)
    assert [k for k, _ in leaves] == ["first", "blocks.0.layers.0", "blocks.1"]
    assert leaves[1][1] is m.blocks[0].layers[0]
    named = dict(m.named_modules())
    assert named[""] is m and named["blocks.0.layers.0"] is m.blocks[0].layers[0]
    assert len(m.modules()) == 5


def test_repr_lists_children():
    m = nn.Sequential(nn.Linear(2, 3), nn.relu, nn.LayerNorm(3))
    assert repr(m) == ("Sequential(\n  (layers.0): Linear(input_dims=2, output_dims=3, bias=True)\n"
                       "  (layers.2): LayerNorm(3, eps=1e-05, affine=True)\n)")
    assert repr(nn.Dropout(0.25)) == "Dropout(p=0.25)"


def test_update_and_strict_errors():
    m = nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 3))
    w = mx.zeros((3, 3))
    m.update({"layers": [{}, {"weight": w}]})
    assert m.layers[1].weight is w
    for bad in ({"layers": [{"value": 0}]}, {"layers": ["hello"]}, {"layers": [{"weight": "hi"}]},
                {"layers": [{}, {}, {"weight": w}]}):
        with pytest.raises(ValueError):
            m.update(bad)
    m.update({"layers": [{"value": 0}, {}, {"weight": w}]}, strict=False)  # unknown entries are skipped


def test_update_modules():
    m = nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 3))
    with pytest.raises(ValueError):
        m.update_modules({"values": [0, 1]})
    with pytest.raises(ValueError):
        m.update_modules({"layers": [0, 1]})
    with pytest.raises(ValueError):
        m.update_modules({"layers": [{}, {}, nn.Linear(3, 4)]})
    m.update_modules({"layers": [{}, nn.Linear(3, 4), nn.Linear(5, 5)]}, strict=False)
    assert len(m.layers) == 2 and m.layers[1].weight.shape == (4, 3)
    p = Pair()
    p.update_modules(p.leaf_modules())  # leaves in place of themselves: always accepted
    with pytest.raises(ValueError):
        p.update_modules({"extra": {"scale": "text"}})


def test_freeze_unfreeze_keys_recurse_strict():
    m = Pair()
    m.freeze()
    assert paths(m.trainable_parameters()) == []
    m.unfreeze()
    assert paths(m.trainable_parameters()) == paths(m.parameters())
    m.freeze(keys="bias")
    assert not any(k.endswith("bias") for k in paths(m.trainable_parameters()))
    m.unfreeze(keys=["bias"], strict=True)
    assert "first.bias" in paths(m.trainable_parameters())
    m.freeze(recurse=False, keys=["extra.scale"])
    assert "extra.scale" not in paths(m.trainable_parameters())
    assert "first.weight" in paths(m.trainable_parameters())
    with pytest.raises(KeyError):
        m.freeze(keys="not_a_member", strict=True)
    with pytest.raises(KeyError):  # only the module itself is checked without recursion
        m.freeze(keys="weight", strict=True, recurse=False)



def _random_module(draw, depth: int = 0) -> nn.Module:
    """A module of random entries: arrays, plain values, private keys, dicts and lists of all of these and of
    sub-modules, with some paths frozen."""
    m = nn.Module()
    leaves = st.sampled_from(["array", "int", "tuple", "none"])
    for i in range(draw(st.integers(0, 4))):
        key = ("_" if draw(st.booleans()) and i == 0 else "") + f"k{i}"
        kind = draw(st.sampled_from(["leaf", "dict", "list", "module"] if depth < 2 else ["leaf"]))
        if kind == "module":
            value = _random_module(draw, depth + 1)
        elif kind == "leaf":
            value = {"array": mx.zeros((1,)), "int": 3, "tuple": (mx.zeros((1,)),), "none": None}[draw(leaves)]
        else:
            items = []
            for _ in range(draw(st.integers(0, 3))):
                sub = draw(st.sampled_from(["leaf", "module", "dict"] if depth < 2 else ["leaf"]))
                items.append(_random_module(draw, depth + 1) if sub == "module"
                             else {"w": mx.ones((2,)), "n": 1} if sub == "dict"
                             else {"array": mx.zeros((1,)), "int": 3, "tuple": (1,), "none": None}[draw(leaves)])
            value = {f"e{j}": v for j, v in enumerate(items)} if kind == "dict" else items
        if value is None:
            continue
        setattr(m, key, value)  # (arrays, dicts, lists and tuples go in the dict, plain values stay attributes)
    leaf_paths = [p for p, _ in tree_flatten(m.filter_and_map(nn.Module.valid_parameter_filter))]
    containers = [k for k, v in m.items() if isinstance(v, (dict, list)) and not isinstance(v, nn.Module)]
    m._no_grad.update(draw(st.lists(st.sampled_from(leaf_paths + containers + ["k0", "k1.e0", "k2.0"]),
                                    max_size=3)))
    return m


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_parameter_walks_give_filter_and_maps_tree(data):
    """``parameters()`` and ``trainable_parameters()`` take a walk of their own (no filter call per entry): the
    same tree, ``{}`` placeholders and frozen paths included, as ``filter_and_map`` with the filters."""
    m = _random_module(data.draw)

    def same(a, b):
        assert type(a) is type(b)
        if isinstance(a, dict):
            assert list(a) == list(b)
            for k in a:
                same(a[k], b[k])
        elif isinstance(a, list):
            assert len(a) == len(b)
            for x, y in zip(a, b):
                same(x, y)
        else:
            assert a is b

    same(m.parameters(), m.filter_and_map(m.valid_parameter_filter))
    same(m.trainable_parameters(), m.filter_and_map(m.trainable_parameter_filter))


def test_a_subclass_filter_keeps_the_generic_walk():
    class Private(nn.Module):
        @staticmethod
        def valid_parameter_filter(module, key, value):
            return isinstance(value, mx.array) and key == "kept"

    m = Private()
    m.kept, m.other = mx.zeros((1,)), mx.ones((1,))
    assert list(m.parameters()) == ["kept"]

def test_train_eval_chaining_and_apply():
    m = Pair()
    assert m.eval() is m and not any(x.training for x in m.modules())
    assert m.train().training and all(x.training for x in m.modules())
    m.apply(lambda p: p * 0 + 2)
    assert all(np.all(np.asarray(v) == 2) for _, v in tree_flatten(m.parameters()))
    assert "_cache" in m and np.all(np.asarray(m._cache) == 0)  # private entries are not parameters
    m.set_dtype(mx.float16)
    assert {v.dtype for _, v in tree_flatten(m.parameters())} == {mx.float16}
    m.set_dtype(mx.int32, predicate=None)
    assert {v.dtype for _, v in tree_flatten(m.parameters())} == {mx.int32}
    assert m.state is m


@pytest.mark.parametrize("ext", ["npz", "safetensors"])
def test_save_load_round_trip(tmp_path, ext):
    m, other = Pair(), Pair()
    path = tmp_path / f"model.{ext}"
    m.save_weights(str(path))
    other.load_weights(str(path))
    for (k1, a), (k2, b) in zip(tree_flatten(m.parameters()), tree_flatten(other.parameters())):
        assert k1 == k2 and np.array_equal(np.asarray(a), np.asarray(b))
    with pytest.raises(ValueError):
        m.save_weights(str(tmp_path / "model.pt"))


def test_load_weights_strict():
    m = nn.Linear(2, 2)
    ones = mx.ones((2, 2))
    with pytest.raises(ValueError, match="Missing 1 parameters"):
        m.load_weights([("weight", ones)])
    with pytest.raises(ValueError, match="not in model"):
        m.load_weights([("weight", ones), ("bias", mx.ones((2,))), ("bias2", mx.ones((2,)))])
    with pytest.raises(ValueError, match="shape"):
        m.load_weights([("weight", ones), ("bias", mx.ones((2, 1)))])
    with pytest.raises(ValueError, match="Expected mx.array"):
        m.load_weights([("weight", ones), ("bias", 3)])
    m.load_weights([("weight", ones), ("typo", ones)], strict=False)
    assert np.array_equal(np.asarray(m.weight), np.ones((2, 2)))
    s = nn.Sequential(nn.Linear(2, 2))
    s.load_weights([("layers.0.bias", mx.zeros((2,))), ("layers.3.bias", mx.zeros((2,)))], strict=False)
    assert len(s.layers) == 1 and np.all(np.asarray(s.layers[0].bias) == 0)


def test_value_and_grad_matches_finite_differences(on, rng):
    m = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 2))
    m.set_dtype(mx.float64)
    x = mx.array(rng.standard_normal((4, 3)), dtype=mx.float64)
    y = mx.array(rng.standard_normal((4, 2)), dtype=mx.float64)

    def loss_fn(x, y):
        return nn.losses.mse_loss(m(x), y)

    value, grads = nn.value_and_grad(m, loss_fn)(x, y)
    assert paths(grads) == paths(m.trainable_parameters())
    w = m.layers[0].weight
    direction = rng.standard_normal(w.shape)
    h = 1e-6
    vals = []
    for sign in (1, -1):
        m.layers[0].weight = w + sign * h * mx.array(direction, dtype=mx.float64)
        vals.append(loss_fn(x, y).item())
    m.layers[0].weight = w
    fd = (vals[0] - vals[1]) / (2 * h)
    got = float(np.sum(np.asarray(grads["layers"][0]["weight"]) * direction))
    np.testing.assert_allclose(got, fd, rtol=1e-6)
    assert value.item() == pytest.approx(loss_fn(x, y).item())


def test_frozen_parameters_get_no_gradient(on):
    m = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 1))
    m.layers[0].freeze()
    _, grads = nn.value_and_grad(m, lambda x: m(x).sum())(mx.ones((3, 2)))
    assert paths(grads) == ["layers.1.weight", "layers.1.bias"]


def test_modules_under_transforms(on):
    m = nn.Sequential(nn.Linear(3, 3), nn.ReLU(), nn.Linear(3, 1))
    x = mx.ones((2, 3))
    seen = []

    def loss(model):
        seen.append(type(model))
        return model(x).sum()

    grads = mx.grad(loss)(m)
    assert seen == [nn.Sequential]  # the module reaches the function as a module, its arrays traced
    assert paths(grads) == paths(m.parameters())
    assert m.layers[0].weight.shape == (3, 3) and type(m.layers[0].weight) is mx.array
    batched = mx.vmap(lambda a: m(a))(mx.ones((4, 2, 3)))
    assert batched.shape == (4, 2, 1)
    doubled = tree_map(lambda p: p * 2, m.parameters())
    assert_close(doubled["layers"][0]["weight"], 2 * np.asarray(m.layers[0].weight))
    mx.eval(m)
    assert_close(mx.compile(lambda a: m(a))(x), np.asarray(m(x)))


def test_checkpointed_module_gradients(on):
    m = nn.Sequential(nn.Linear(3, 4), nn.gelu, nn.Linear(4, 1))
    x = mx.random.normal((5, 3))
    _, plain = nn.value_and_grad(m, lambda x: m(x).sum())(x)
    step = nn.utils.checkpoint(m)
    _, ckpt = nn.value_and_grad(m, lambda x: step(x).sum())(x)
    for (path, a), (path_ckpt, b) in zip(tree_flatten(plain), tree_flatten(ckpt)):
        assert path == path_ckpt
        assert_close(b, np.asarray(a), rtol=1e-5, atol=1e-6)


def test_tiny_mlp_learns_with_hand_written_sgd(on):
    mx.random.seed(3)
    model = nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Linear(16, 1))
    x = mx.random.uniform(-1, 1, (64, 2))
    y = (x[:, :1] * x[:, 1:]) + 0.5 * x[:, :1]
    step = nn.value_and_grad(model, lambda x, y: nn.losses.mse_loss(model(x), y))
    losses = []
    for _ in range(60):
        loss, grads = step(x, y)
        model.update(tree_map(lambda p, g: p - 0.2 * g, model.trainable_parameters(), grads))
        mx.eval(model.parameters())
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
