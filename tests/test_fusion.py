"""Fusion at eval: which nodes a region takes in, the regions' results, and what is left behind."""

from __future__ import annotations

import gc
import time
import weakref
from dataclasses import replace

import numpy as np
import pytest
from conftest import DEVICES, assert_close
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import umx as mx
from umx.runtime import fusion, scheduler
from umx.runtime.fusion import Fused, collect, unmerge
from umx.runtime.node import MEMBER, PLANNING, unplan


@pytest.fixture(autouse=True)
def _every_region(request, monkeypatch):
    """These tests look at regions of small arrays: the CPU's rule for those (a region must reach 4 members) is
    turned off, except in the test of that rule."""
    if "small_regions" not in request.node.name:
        from umx.backends.cpu.executor import CpuExecutor

        monkeypatch.setattr(CpuExecutor, "traits", replace(CpuExecutor.traits, small_regions=None))


def _tasks(*targets) -> list:
    """The tasks that planning ``targets`` makes (then unmarked, side outputs undone: nothing is scheduled)."""
    with scheduler._plan_lock:
        order = collect(list(targets), PLANNING, True)
        scheduler._unmark(list(targets), PLANNING)
        for t in order:
            if type(t) is not Fused:
                unplan(t)
                unmerge(t)
    return order


def test_chain_is_one_task_and_held_nodes_stay_out(monkeypatch):
    monkeypatch.setattr(fusion, "SIDE_OUTPUTS", False)  # (the walk's own rule: see the side outputs' tests)
    x = mx.array(np.ones((3, 2), np.float32))
    held = mx.sin(mx.exp(x))  # a user variable: computed, so never taken into its reader's region
    y = mx.cos(mx.negative(held))
    order = _tasks(y)
    assert [type(t) for t in order] == [Fused, Fused]
    assert [len(t.nodes) for t in order] == [2, 2]
    assert order[0].root is held and order[1].root is y
    assert all(n._exec is None for t in order for n in t.nodes)  # unmarked
    del order
    mx.eval(y)
    assert_close(held, np.sin(np.exp(np.ones((3, 2)))))
    assert_close(y, np.cos(-np.sin(np.exp(np.ones((3, 2))))))


def _chain(x, k: int):
    """Runs of equal steps, leaves on either side, maximum and minimum (out by keyword), back to one dtype."""
    for _ in range(k):
        x = mx.exp(mx.sin(mx.sin(x)))
        x = mx.maximum(mx.subtract(0.25, x), -0.5)
        x = mx.minimum(mx.multiply(x, 3.0), 2.0)
    return x


@pytest.mark.parametrize("shape", [(), (7,), (64, 32)], ids=str)
def test_cpu_chain_is_bit_identical_to_op_by_op(monkeypatch, shape):
    """A fused chain runs in place, in runs of equal steps: the same bits as each op evaluated on its own, and no
    NumPy deprecation (maximum and minimum take ``out`` by keyword only)."""
    import warnings

    data = np.random.default_rng(3).standard_normal(shape).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        with mx.stream(mx.cpu):
            fused = np.asarray(_chain(mx.array(data), 20))
            monkeypatch.setattr(scheduler, "FUSION", False)
            x = mx.array(data)
            for _ in range(20):
                x = _chain(x, 1)
                mx.eval(x)
            one_by_one = np.asarray(x)
    assert fused.tobytes() == one_by_one.tobytes()


@pytest.mark.parametrize("build, ref", [
    (lambda a, b: mx.exp(a) * mx.exp(a), lambda a, b: np.exp(a) ** 2),
    (lambda a, b: (lambda t: t * t)(mx.sin(a)) - b, lambda a, b: np.sin(a) ** 2 - b),
    (lambda a, b: mx.where(a > b, mx.exp(a), mx.negative(b)) + a, lambda a, b: np.where(a > b, np.exp(a), -b) + a),
    (lambda a, b: (mx.exp(a) + b) * mx.sin(b), lambda a, b: (np.exp(a) + b) * np.sin(b)),
    (lambda a, b: mx.exp(a) + b * mx.sin(b), lambda a, b: np.exp(a) + b * np.sin(b)),
    (lambda a, b: mx.abs(mx.negative(mx.exp(a)).astype(mx.float16)), lambda a, b: np.abs(-np.exp(a))),
])
def test_trees_match_numpy(device, build, ref):
    """Regions of several shapes of tree, with inputs read twice: each gets its own program (no key mixes two)."""
    rng = np.random.default_rng(0)
    for shape in [(), (5,), (2, 3)]:
        a_np = rng.standard_normal(shape).astype(np.float32)
        b_np = rng.standard_normal(shape).astype(np.float32)
        a = mx.array(a_np)
        b = mx.array(b_np)
        with mx.stream(device):
            out = build(a, b)
        assert_close(out, ref(a_np.astype(np.float64), b_np.astype(np.float64)), rtol=2e-3, atol=2e-3)


def test_members_are_freed_and_not_left_marked(device):
    x = mx.ones((4,), stream=device)
    first = mx.exp(x, stream=device)
    ref = weakref.ref(first)
    y = first
    del first
    for _ in range(50):
        y = mx.sin(y, stream=device)
    mx.eval(y)
    gc.disable()  # freed by reference counting, not by the collector
    try:
        for _ in range(100):  # a worker drops the task just after publishing it
            if ref() is None:
                break
            time.sleep(0.01)
        assert ref() is None
    finally:
        gc.enable()
    assert y._inputs == () and y._prim is None


def test_a_failed_walk_leaves_nothing_marked(monkeypatch):
    x = mx.ones((2,))
    y = mx.exp(mx.sin(mx.matmul(mx.reshape(x, (1, 2)), mx.ones((2, 1)))))
    ex = y._stream.executor
    monkeypatch.setattr(type(ex), "traits", property(lambda self: 1 / 0))
    with pytest.raises(ZeroDivisionError):
        mx.eval(y)
    monkeypatch.undo()
    seen = [y]
    while seen:
        n = seen.pop()
        assert n._exec not in (PLANNING, MEMBER)
        seen.extend(n._inputs)
    assert_close(y, np.exp(np.sin(np.full((1, 1), 2.0))))


def test_region_size_is_capped_per_executor(monkeypatch):
    x = mx.array(np.linspace(0, 1, 6, dtype=np.float32))
    y = x
    for _ in range(50):
        y = mx.sin(y, stream=mx.cpu)
    cls = type(y._stream.executor)
    monkeypatch.setattr(cls, "traits", replace(cls.traits, fuse_max_nodes=7))
    order = _tasks(y)
    # seven full regions from the root back; the first node, left over, stands alone
    assert [len(t.nodes) if type(t) is Fused else 1 for t in order] == [1] + [7] * 7
    del order
    ref = np.linspace(0, 1, 6)
    for _ in range(50):
        ref = np.sin(ref)
    assert_close(y, ref, rtol=1e-4)


@pytest.mark.parametrize("device", DEVICES)
def test_binary_chain_steps_with_an_evaluated_operand_on_either_side(device, monkeypatch):
    """Chain steps whose other operand is a constant or an evaluated array, on the left or the right, join the
    region one by one; an intermediate the user holds stays out of it, and every value matches NumPy."""
    monkeypatch.setattr(fusion, "SIDE_OUTPUTS", False)
    h = np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4)
    w = mx.array(np.full((3, 4), 0.5, np.float32))
    mx.eval(w)
    x = mx.array(h)
    held = mx.subtract(mx.subtract(w, mx.multiply(2.0, mx.add(x, 1.0, stream=device), stream=device),
                                   stream=device), w, stream=device)
    z = mx.multiply(mx.maximum(held, 0.0, stream=device), w, stream=device)
    order = _tasks(z)
    assert [len(t.nodes) if type(t) is Fused else 1 for t in order] == [4, 2]
    del order
    ref_held = (0.5 - 2.0 * (h.astype(np.float64) + 1.0)) - 0.5
    assert_close(z, np.maximum(ref_held, 0.0) * 0.5)
    assert_close(held, ref_held)


@pytest.mark.parametrize("device", DEVICES)
def test_both_computed_operands_of_a_binary_step_join_the_region(device):
    """Adam's running average ``b * m + (1 - b) * g`` of computed ``m`` and ``g`` is one region of every
    elementwise node (the walk's own references to a node it has looked at do not count as a holder); so are a
    chain whose first step has two computed operands, and a chain of one repeated step under a binary node."""
    h = np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4)
    a, b = mx.array(h), mx.array(h[::-1].copy())
    mx.eval(a, b)
    s = {"stream": device}
    avg = mx.add(mx.multiply(0.9, mx.sin(a, **s), **s), mx.multiply(0.1, mx.cos(b, **s), **s), **s)
    chain = mx.exp(mx.exp(mx.multiply(mx.tanh(a, **s), mx.tanh(b, **s), **s), **s), **s)
    repeated = mx.negative(mx.negative(mx.negative(mx.add(mx.sin(a, **s), mx.cos(b, **s), **s), **s), **s), **s)
    for out, members in ((avg, 5), (chain, 5), (repeated, 6)):  # (no variable holds a member)
        order = _tasks(out)
        assert [len(t.nodes) if type(t) is Fused else 1 for t in order] == [members]
        del order
    a64, b64 = h.astype(np.float64), h[::-1].astype(np.float64)
    assert_close(avg, 0.9 * np.sin(a64) + 0.1 * np.cos(b64))
    assert_close(chain, np.exp(np.exp(np.tanh(a64) * np.tanh(b64))), rtol=1e-5)
    assert_close(repeated, -(np.sin(a64) + np.cos(b64)))


def test_small_regions_on_the_cpu_need_four_members():
    """On the CPU a region of a small output is made only from 4 members on (below, its fixed cost exceeds what it
    saves); a big output makes a region of 2; results match NumPy either way."""
    from umx.backends.cpu.executor import CpuExecutor

    small_size, need = CpuExecutor.traits.small_regions
    assert need == 4
    h = np.linspace(-1, 1, 12, dtype=np.float32)
    x = mx.array(h)
    two = mx.multiply(mx.add(x, 1.0, stream=mx.cpu), 2.0, stream=mx.cpu)
    assert [type(t) for t in _tasks(two)] == [mx.array, mx.array]
    four = mx.exp(mx.multiply(mx.sin(mx.add(x, 1.0, stream=mx.cpu), stream=mx.cpu), 0.5, stream=mx.cpu),
                  stream=mx.cpu)
    order = _tasks(four)
    assert [type(t) for t in order] == [Fused] and len(order[0].nodes) == 4
    del order
    big = mx.array(np.linspace(-1, 1, small_size, dtype=np.float32))
    big_two = mx.multiply(mx.add(big, 1.0, stream=mx.cpu), 2.0, stream=mx.cpu)
    order = _tasks(big_two)
    assert [type(t) for t in order] == [Fused]
    del order
    assert_close(two, (h.astype(np.float64) + 1.0) * 2.0)
    assert_close(four, np.exp(np.sin(h.astype(np.float64) + 1.0) * 0.5))
    assert_close(big_two, (np.linspace(-1, 1, small_size) + 1.0) * 2.0)


# -- side outputs (fusion.merge) ------------------------------------------------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [mx.float32, mx.bfloat16])
def test_a_held_value_of_the_regions_shape_becomes_its_side_output(device, dtype, monkeypatch):
    """A value the user holds, read by a region of its shape, is computed by that region beside its root (one
    task, then the value's own task that hands it over), and both match NumPy."""
    h = np.linspace(-1, 1, 24, dtype=np.float32).reshape(4, 6)
    x = mx.array(h).astype(dtype)
    mx.eval(x)
    held = mx.multiply(mx.exp(x, stream=device), 2.0, stream=device)
    y = mx.add(mx.sin(held, stream=device), held, stream=device)
    order = _tasks(y)
    assert [type(t) for t in order] == [Fused, mx.array]
    assert order[0].sides and order[1] is held and order[0].root is y
    del order
    mx.eval(held, y)
    ref = np.exp(np.array(x.astype(mx.float32), np.float64)) * 2.0
    tol = 1e-5 if dtype is mx.float32 else 2e-2
    assert_close(held.astype(mx.float32), ref, rtol=tol, atol=tol)
    assert_close(y.astype(mx.float32), np.sin(np.array(held.astype(mx.float32), np.float64))
                 + np.array(held.astype(mx.float32), np.float64), rtol=tol, atol=tol)


def test_a_value_is_not_taken_in_when_a_leaf_made_after_it_reads_it():
    """A region may not compute a value that another of its leaves, made later, is computed from (a product of
    it here): the region would need that leaf before it could run. The value stays a task of its own."""
    x = mx.array(np.eye(3, dtype=np.float32) + 0.5)
    held = mx.exp(x)
    product = held @ x
    y = mx.sin(held + product)
    order = _tasks(y)
    assert not any(type(t) is Fused and t.sides for t in order)
    del order
    ex = np.exp(np.eye(3) + 0.5)
    assert_close(y, np.sin(ex + ex @ (np.eye(3) + 0.5)))
    assert_close(held, ex)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", ["AdamW", "SGD", "RMSprop"])
def test_an_optimizer_update_is_one_region_per_parameter_with_the_same_bits(device, name, monkeypatch):
    """An update's new moments are side outputs of the new weight's region: one task per parameter (and one per
    moment, which only hands the value over), and every bit is what it is without side outputs."""
    import umx.nn as nn
    import umx.optimizers as optim
    from umx.utils import tree_flatten, tree_map

    kwargs = {"SGD": {"momentum": 0.9}, "AdamW": {}, "RMSprop": {}}[name]

    def train(on: bool) -> list:
        monkeypatch.setattr(fusion, "SIDE_OUTPUTS", on)
        mx.random.seed(3)
        with mx.stream(device):
            model = nn.Sequential(nn.Linear(1024, 1024), nn.Linear(1024, 4))
            opt = getattr(optim, name)(1e-2, **kwargs)
            for i in range(5):  # (on a GPU: run op by op, captured, then replayed, its outputs lent)
                grads = tree_map(lambda p, i=i: mx.sin(p * (i + 1)), model.trainable_parameters())
                opt.update(model, grads)
                mx.eval(model.parameters(), opt.state)
        return [np.array(a) for _, a in tree_flatten(model.parameters()) + tree_flatten(opt.state)]

    grown = []
    real = fusion._grow
    monkeypatch.setattr(fusion, "_grow", lambda *a: grown.append(real(*a)) or grown[-1])
    with_sides = train(True)
    assert any(g is not None for g in grown)
    for a, b in zip(with_sides, train(False)):
        np.testing.assert_array_equal(a, b)


_UNARY = [(mx.sin, np.sin), (mx.exp, lambda v: np.exp(np.clip(v, -30, 30))), (mx.negative, np.negative),
          (mx.tanh, np.tanh)]
_BINARY = [(mx.add, np.add), (mx.multiply, np.multiply), (mx.subtract, np.subtract), (mx.maximum, np.maximum)]


@pytest.mark.parametrize("device", DEVICES)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(program=st.lists(st.tuples(st.integers(0, 5), st.integers(0, 1 << 30), st.integers(0, 1 << 30),
                                  st.booleans()), min_size=2, max_size=14))
def test_random_graphs_with_held_values_match_numpy(device, program, monkeypatch):
    """Random graphs of elementwise ops (and products, which a region cannot take in) over two arrays, some of
    whose values the test holds: every held value and the last match NumPy in float64, however the planner grows
    its regions around the held ones."""
    h = [np.linspace(-1, 1, 12).reshape(3, 4), np.linspace(0.5, -0.5, 12).reshape(3, 4)]
    with mx.stream(device):
        values = [mx.array(v.astype(np.float32)) for v in h]
        refs = list(h)
        held = []
        for kind, i, j, keep in program:
            a, b = i % len(values), j % len(values)
            if kind < 2:
                f, g = _UNARY[(i >> 8) % len(_UNARY)]
                values.append(mx.exp(f(values[a]) * 0.1) if kind == 0 else f(values[a]))
                refs.append(np.exp(g(refs[a]) * 0.1) if kind == 0 else g(refs[a]))
            elif kind < 5:
                f, g = _BINARY[(j >> 8) % len(_BINARY)]
                values.append(f(values[a], values[b]))
                refs.append(g(refs[a], refs[b]))
            else:  # a product with a fixed matrix: a value of the same shape that no region takes in
                w = np.eye(4) * 0.5 + 0.1
                values.append(values[a] @ mx.array(w.astype(np.float32)))
                refs.append(refs[a] @ w)
            values[-1] = mx.clip(values[-1], -4.0, 4.0)
            refs[-1] = np.clip(refs[-1], -4.0, 4.0)
            if keep:
                held.append(len(values) - 1)
        mx.eval(*[values[k] for k in held], values[-1])
    for k in [*held, len(values) - 1]:
        assert_close(values[k], refs[k], rtol=2e-4, atol=2e-5)


@pytest.mark.parametrize("device", DEVICES)
def test_a_compiled_training_step_with_side_outputs_matches_one_without(device, monkeypatch):
    """A compiled step (forward, backward, SGD with momentum) whose state goes in and out (``inputs=``,
    ``outputs=``), with side outputs and without: on a GPU the graph writes the new weights and velocities into
    their slots and lends them, and the next call's inputs are those very arrays."""
    import umx.nn as nn
    import umx.optimizers as optim
    from umx.utils import tree_flatten

    if device == mx.cpu:  # (its small compiled steps run one by one, unplanned: replay them through the planner)
        from umx.backends.cpu.executor import CpuExecutor

        monkeypatch.setattr(CpuExecutor, "traits", replace(CpuExecutor.traits, programs=False, small_regions=None))
    grown = []
    real = fusion._grow
    monkeypatch.setattr(fusion, "_grow", lambda *a: grown.append(real(*a)) or grown[-1])
    rng = np.random.default_rng(5)
    xs = [mx.array(rng.standard_normal((8, 6)).astype(np.float32)) for _ in range(5)]

    def train(on: bool) -> list:
        monkeypatch.setattr(fusion, "SIDE_OUTPUTS", on)
        mx.random.seed(4)
        with mx.stream(device):
            model = nn.Sequential(nn.Linear(6, 5), nn.Linear(5, 2))
            opt = optim.SGD(learning_rate=0.05, momentum=0.9)
            loss_and_grad = nn.value_and_grad(model, lambda m, x: mx.mean(mx.square(m(x))))

            def step(x):
                loss, grads = loss_and_grad(model, x)
                opt.update(model, grads)
                return loss

            state = [model.state, opt.state]
            step = mx.compile(step, inputs=state, outputs=state)
            for x in xs:
                mx.eval(step(x), model.parameters(), opt.state)
        return [np.array(a) for _, a in tree_flatten(model.parameters()) + tree_flatten(opt.state)]

    with_sides = train(True)
    assert any(g is not None for g in grown)
    for a, b in zip(with_sides, train(False)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
