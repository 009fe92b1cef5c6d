"""The training programs of examples/ train on umx: each loss falls below a stated value in a fixed number of
steps; a compiled step gives the parameters of the eager one and traces once; and the same source, its three
imports pointed at MLX, gives MLX's losses (where the real ``mlx`` package imports)."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import numpy as np
import pytest

import umx as mx
import umx.nn as nn
import umx.optimizers as optim
from umx.utils import tree_flatten

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
# The sizes below keep every matrix product at most 2^18 multiply-adds (OpenBLAS then uses one thread, so a
# busy host does not stall a product on its second thread) and each test to a few seconds.
MLP_SIZES = dict(batch_size=16, hidden_dim=16, num_examples=512)
LM_SIZES = dict(batch_size=8, context_size=16, period=2, vocab_size=8, num_layers=2, dims=32, num_heads=4,
                mlp_dims=64, learning_rate=1e-2)
CNN_SIZES = dict(batch_size=8, image_size=32, channels=4, num_examples=256)


def _load(name: str, imports: dict | None = None):
    """examples/``name``.py as a module; ``imports`` maps its import lines to others (to run it on MLX)."""
    path = EXAMPLES / f"{name}.py"
    if imports is None:
        spec = importlib.util.spec_from_file_location(f"umx_example_{name}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    source = path.read_text()
    for line, other in imports.items():
        assert line in source, f"{path.name} has no line {line!r}"
        source = source.replace(line, other)
    module = type(sys)(f"mlx_example_{name}")
    module.__file__ = str(path)
    exec(compile(source, str(path), "exec"), module.__dict__)  # noqa: S102 (the project's own example)
    return module


def _tail(losses: list, n: int = 5) -> float:
    return float(np.mean(losses[-n:]))


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_mlp_learns(device, optimizer):
    mlp = _load("mlp")
    with mx.stream(device):
        losses = mlp.main(steps=30, optimizer=optimizer, learning_rate=0.2 if optimizer == "sgd" else 3e-3,
                          verbose=False, **MLP_SIZES)
    assert losses[0] > 1.5  # about log(10) at the start
    assert _tail(losses) < 0.2, losses


def test_transformer_lm_learns(device):
    lm = _load("transformer_lm")
    with mx.stream(device):
        losses = lm.main(steps=40, verbose=False, **LM_SIZES)
    # With a repeated pair (ABAB...), every target after the first is the input one position back: only
    # attention finds it. Predicting from the current token alone leaves a loss near log(vocab_size).
    assert losses[0] > math.log(8)
    assert _tail(losses) < 0.8, losses


def test_cnn_learns(device):
    cnn = _load("cnn")
    with mx.stream(device):
        losses = cnn.main(steps=30, verbose=False, **CNN_SIZES)
    assert losses[0] > 1.5
    assert _tail(losses) < 0.5, losses


def _mlp_and_state(seed: int = 3):
    mx.random.seed(seed)
    model = _load("mlp").MLP(2, 784, 16, 10)
    optimizer = optim.Adam(learning_rate=1e-2)
    optimizer.init(model.trainable_parameters())
    mx.eval(model.parameters(), optimizer.state)
    return model, optimizer


@pytest.mark.parametrize("with_random_state", [False, True])
def test_compiled_step_matches_eager_and_traces_once(device, with_random_state):
    rng = np.random.default_rng(0)
    batches = [(mx.array(rng.standard_normal((16, 784), dtype=np.float32)),
                mx.array(rng.integers(0, 10, 16).astype(np.uint32))) for _ in range(5)]
    loss_fn = _load("mlp").loss_fn
    traces = []
    results = {}
    for compiled in (False, True):
        model, optimizer = _mlp_and_state()
        loss_and_grad = nn.value_and_grad(model, loss_fn)
        state = [model.state, optimizer.state] + ([mx.random.state] if with_random_state else [])

        def step(x, y, model=model, optimizer=optimizer, loss_and_grad=loss_and_grad, compiled=compiled):
            traces.append(compiled)
            loss, grads = loss_and_grad(model, x, y)
            optimizer.update(model, grads)
            return loss

        if compiled:
            step = mx.compile(step, inputs=state, outputs=state)
        with mx.stream(device):
            losses = []
            for x, y in batches:
                losses.append(step(x, y))
                mx.eval(losses[-1], model.parameters(), optimizer.state)
        results[compiled] = (losses, tree_flatten(model.parameters()), tree_flatten(optimizer.state))
    assert traces.count(True) == 1  # the compiled step's Python ran once, for its trace
    assert traces.count(False) == len(batches)
    (eager_losses, eager_params, eager_opt), (comp_losses, comp_params, comp_opt) = results[False], results[True]
    np.testing.assert_allclose([v.item() for v in comp_losses], [v.item() for v in eager_losses], rtol=1e-6)
    assert [k for k, _ in comp_params] == [k for k, _ in eager_params]
    for (key, got), (_, want) in zip(comp_params + comp_opt, eager_params + eager_opt):
        np.testing.assert_allclose(np.array(got), np.array(want), rtol=1e-5, atol=1e-7, err_msg=key)
    assert not np.allclose(np.array(eager_params[0][1]), np.array(_mlp_and_state()[0].parameters()["layers"][0]
                                                                      ["weight"]))  # the steps moved the weights


def test_compiled_step_with_dropout_draws_fresh_masks(device):
    """A compiled step whose model uses dropout, with ``mx.random.state`` in its state (as MLX's loops list it),
    traces once and draws a new mask at every call: the same batch gives different losses."""
    mx.random.seed(0)
    model = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Dropout(0.5), nn.Linear(32, 2))
    optimizer = optim.SGD(learning_rate=0.0)  # the parameters stay put: only the masks differ between calls
    optimizer.init(model.trainable_parameters())  # (else the first call adds the state: a second trace)
    mx.eval(model.parameters(), optimizer.state)
    state = [model.state, optimizer.state, mx.random.state]
    traces = []

    def loss_fn(model, x, y):
        return nn.losses.cross_entropy(model(x), y, reduction="mean")

    def step(x, y):
        traces.append(1)
        loss, grads = nn.value_and_grad(model, loss_fn)(model, x, y)
        optimizer.update(model, grads)
        return loss

    step = mx.compile(step, inputs=state, outputs=state)
    x, y = mx.random.normal((64, 8)), mx.array(np.arange(64) % 2, dtype=mx.uint32)
    with mx.stream(device):
        losses = [step(x, y).item() for _ in range(4)]
    assert len(traces) == 1
    assert len(set(losses)) == 4, losses


def test_random_state_is_the_global_key():
    assert len(mx.random.state) == 1
    mx.random.seed(7)
    first = np.array(mx.random.state[0])
    np.testing.assert_array_equal(first, np.array(mx.random.key(7)))
    mx.random.uniform()
    assert not np.array_equal(np.array(mx.random.state[0]), first)  # a draw advances it
    mx.random.seed(7)
    np.testing.assert_array_equal(np.array(list(mx.random.state)[0]), first)
    with pytest.raises(TypeError):
        mx.random.state[0] = mx.random.key(1)
    with pytest.raises(IndexError):
        mx.random.state[1]


_MLX_IMPORTS = {"import umx as mx  # noqa: E402": "import mlx.core as mx",
                "import umx.nn as nn  # noqa: E402": "import mlx.nn as nn",
                "import umx.optimizers as optim  # noqa: E402": "import mlx.optimizers as optim"}


@pytest.mark.parametrize("name, kwargs, steps", [
    ("mlp", dict(optimizer="adam", learning_rate=3e-3, **MLP_SIZES), 10),
    ("transformer_lm", LM_SIZES, 10),
    pytest.param("cnn", CNN_SIZES, 5, marks=pytest.mark.skipif(not hasattr(mx, "conv2d"),
                                                               reason="convolutions land from another branch")),
])
def test_examples_match_mlx(name, kwargs, steps):
    """The same program on MLX: the weights start equal (umx's generator is MLX's), so the losses agree while
    rounding differences stay small, over the first steps."""
    pytest.importorskip("mlx.core")
    ours = _load(name)
    theirs = _load(name, _MLX_IMPORTS)
    with mx.stream(mx.cpu):
        got = ours.main(steps=steps, verbose=False, **kwargs)
    want = theirs.main(steps=steps, verbose=False, **kwargs)
    np.testing.assert_allclose(got, want, rtol=2e-3, atol=1e-4)
