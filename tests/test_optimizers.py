"""``umx.optimizers``: every optimizer and option against a NumPy float64 reference (and MLX where it imports),
the state tree (init, growth, save and load, compile), MultiOptimizer and clip_grad_norm."""

from __future__ import annotations

import numpy as np
import pytest

import umx as mx
import umx.optimizers as optim
from tests.conftest import assert_close
from umx.utils import tree_flatten, tree_map, tree_unflatten

# --- NumPy float64 references: one step of one parameter; ``s`` is its state dict, ``t`` the step count after
# the increment (1 at the first update), ``lr`` the learning rate of this update.


def ref_sgd(p, g, s, t, lr, momentum=0.0, weight_decay=0.0, dampening=0.0, nesterov=False):
    g = g + weight_decay * p
    if momentum <= 0:
        return p - lr * g
    s["v"] = momentum * s.get("v", 0.0) + (1 - dampening) * g
    return p - lr * (g + momentum * s["v"] if nesterov else s["v"])


def ref_rmsprop(p, g, s, t, lr, alpha=0.99, eps=1e-8):
    s["v"] = alpha * s.get("v", 0.0) + (1 - alpha) * g**2
    return p - lr * g / (np.sqrt(s["v"]) + eps)


def ref_adagrad(p, g, s, t, lr, eps=1e-8):
    s["v"] = s.get("v", 0.0) + g**2
    return p - lr * g / (np.sqrt(s["v"]) + eps)


def ref_adadelta(p, g, s, t, lr, rho=0.9, eps=1e-6):
    s["v"] = rho * s.get("v", 0.0) + (1 - rho) * g**2
    delta = np.sqrt(s.get("u", 0.0) + eps) / np.sqrt(s["v"] + eps) * g
    s["u"] = rho * s.get("u", 0.0) + (1 - rho) * delta**2
    return p - lr * delta


def ref_adam(p, g, s, t, lr, betas=(0.9, 0.999), eps=1e-8, bias_correction=False, weight_decay=0.0):
    b1, b2 = betas
    p = p * (1 - lr * weight_decay)
    s["m"] = b1 * s.get("m", 0.0) + (1 - b1) * g
    s["v"] = b2 * s.get("v", 0.0) + (1 - b2) * g**2
    m, v = s["m"], s["v"]
    if bias_correction:
        m, v = m / (1 - b1**t), v / (1 - b2**t)
    return p - lr * m / (np.sqrt(v) + eps)


def ref_adamax(p, g, s, t, lr, betas=(0.9, 0.999), eps=1e-8):
    b1, b2 = betas
    s["m"] = b1 * s.get("m", 0.0) + (1 - b1) * g
    s["v"] = np.maximum(b2 * s.get("v", 0.0), np.abs(g))
    return p - lr * s["m"] / (s["v"] + eps)


def ref_lion(p, g, s, t, lr, betas=(0.9, 0.99), weight_decay=0.0):
    b1, b2 = betas
    m = s.get("m", 0.0)
    direction = b1 * m + (1 - b1) * g
    s["m"] = b2 * m + (1 - b2) * g
    return p * (1 - lr * weight_decay) - lr * np.sign(direction)


def _rms(x):
    return np.sqrt(np.mean(np.square(x)))


def ref_adafactor(p, g, s, t, lr, eps=(1e-30, 1e-3), clip_threshold=1.0, decay_rate=-0.8, beta_1=None,
                  weight_decay=0.0, scale_parameter=True, relative_step=True, warmup_init=False):
    if relative_step:
        lr = min(1e-6 * t if warmup_init else 1e-2, 1 / np.sqrt(t))
    if scale_parameter:
        lr = max(eps[1], _rms(p)) * lr
    beta_2 = 1 - t**decay_rate
    squared = g**2 + eps[0]
    if g.ndim >= 2:
        s["exp_avg_sq_row"] = beta_2 * s.get("exp_avg_sq_row", 0.0) + (1 - beta_2) * squared.mean(-1)
        s["exp_avg_sq_col"] = beta_2 * s.get("exp_avg_sq_col", 0.0) + (1 - beta_2) * squared.mean(-2)
        row, col = s["exp_avg_sq_row"], s["exp_avg_sq_col"]
        # the factored second moment: row x col / mean(row), per leading index
        second = row[..., :, None] * col[..., None, :] / row.mean(-1)[..., None, None]
    else:
        s["exp_avg_sq"] = second = beta_2 * s.get("exp_avg_sq", 0.0) + (1 - beta_2) * squared
    update = g / np.sqrt(second)
    update = lr * update / max(1.0, _rms(update) / clip_threshold)
    if beta_1 is not None:
        s["exp_avg"] = update = beta_1 * s.get("exp_avg", 0.0) + (1 - beta_1) * update
    return p * (1 - weight_decay * lr) - update


def _newton_schulz(x, steps):
    a, b, c = 3.4445, -4.7750, 2.0315
    tall = x.shape[0] > x.shape[1]
    x = x.T if tall else x
    x = x / (np.linalg.norm(x) + 1e-7)
    for _ in range(steps):
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    return x.T if tall else x


def ref_muon(p, g, s, t, lr, momentum=0.95, weight_decay=0.01, nesterov=True, ns_steps=5):
    g = g + weight_decay * p
    s["v"] = momentum * s.get("v", 0.0) + (1 - momentum) * g
    update = (1 - momentum) * g + momentum * s["v"] if nesterov else s["v"]
    if update.ndim >= 2:
        shape = update.shape
        update = _newton_schulz(update.reshape(shape[0], -1), ns_steps).reshape(shape)
        lr = lr * max(1.0, shape[-2] / shape[-1]) ** 0.5
    return p - lr * update


REFERENCES = {"SGD": ref_sgd, "RMSprop": ref_rmsprop, "Adagrad": ref_adagrad, "AdaDelta": ref_adadelta,
              "Adam": ref_adam, "AdamW": ref_adam, "Adamax": ref_adamax, "Lion": ref_lion,
              "Adafactor": ref_adafactor, "Muon": ref_muon}

# (optimizer, constructor arguments): each optimizer's defaults and every option
CASES = [
    ("SGD", dict(learning_rate=0.1)),
    ("SGD", dict(learning_rate=0.1, momentum=0.9)),
    ("SGD", dict(learning_rate=0.1, momentum=0.9, weight_decay=0.01, dampening=0.2)),
    ("SGD", dict(learning_rate=0.1, momentum=0.8, weight_decay=0.02, nesterov=True)),
    ("SGD", dict(learning_rate=0.1, weight_decay=0.05)),
    ("RMSprop", dict(learning_rate=0.01)),
    ("RMSprop", dict(learning_rate=0.01, alpha=0.9, eps=1e-3)),
    ("Adagrad", dict(learning_rate=0.1)),
    ("Adagrad", dict(learning_rate=0.1, eps=1e-2)),
    ("AdaDelta", dict(learning_rate=0.5)),
    ("AdaDelta", dict(learning_rate=0.5, rho=0.8, eps=1e-3)),
    ("Adam", dict(learning_rate=0.01)),
    ("Adam", dict(learning_rate=0.01, betas=[0.8, 0.9], eps=1e-3, bias_correction=True)),
    ("AdamW", dict(learning_rate=0.01)),
    ("AdamW", dict(learning_rate=0.01, betas=[0.85, 0.95], eps=1e-4, weight_decay=0.1, bias_correction=True)),
    ("Adamax", dict(learning_rate=0.01)),
    ("Adamax", dict(learning_rate=0.01, betas=[0.8, 0.9], eps=1e-3)),
    ("Lion", dict(learning_rate=0.01)),
    ("Lion", dict(learning_rate=0.01, betas=[0.8, 0.95], weight_decay=0.1)),
    ("Adafactor", dict()),
    ("Adafactor", dict(learning_rate=0.05, relative_step=False, beta_1=0.9, weight_decay=0.1,
                       scale_parameter=False)),
    ("Adafactor", dict(warmup_init=True, clip_threshold=0.5, decay_rate=-0.5, eps=(1e-20, 1e-2))),
    ("Muon", dict(learning_rate=0.02)),
    ("Muon", dict(learning_rate=0.02, momentum=0.8, weight_decay=0.0, nesterov=False, ns_steps=3)),
]
CASE_IDS = [f"{name}-{i}" for i, (name, _) in enumerate(CASES)]

# 0-d to 4-d parameters in a nested tree: matrices wide and tall, and flattened ones of Muon and Adafactor
SHAPES = {"w": (6, 4), "b": (4,), "s": (), "layers": [{"w": (3, 5, 2)}, {"k": (4, 2, 3, 1)}, {"t": (2, 7)}]}
STEPS = 4


def _random_tree(rng, dtype=np.float32):
    return tree_map(lambda shape: rng.standard_normal(shape).astype(dtype), SHAPES,
                    is_leaf=lambda x: isinstance(x, tuple))


def _reference(name, kwargs, params, grads_seq, lr_at=None):
    """The reference's parameters and per-parameter states after the updates in ``grads_seq``."""
    kwargs = dict(kwargs)
    lr = kwargs.pop("learning_rate", None)
    if name == "AdamW":
        kwargs.setdefault("weight_decay", 0.01)
    params = {path: np.asarray(p, np.float64) for path, p in tree_flatten(params)}
    states = {path: {} for path in params}
    for t, grads in enumerate(grads_seq, start=1):
        step_lr = lr_at(t - 1) if lr_at else lr
        for path, g in tree_flatten(grads):
            params[path] = REFERENCES[name](params[path], np.asarray(g, np.float64), states[path], t, step_lr,
                                            **kwargs)
    return params, states


def _run(opt, params, grads_seq):
    for grads in grads_seq:
        params = opt.apply_gradients(tree_map(mx.array, grads), params)
        mx.eval(params, opt.state)
    return params


@pytest.mark.parametrize("name,kwargs", CASES, ids=CASE_IDS)
def test_matches_numpy_reference(device, name, kwargs):
    rng = np.random.default_rng(1)
    params = _random_tree(rng)
    grads_seq = [_random_tree(rng) for _ in range(STEPS)]
    with mx.stream(device):
        opt = getattr(optim, name)(**kwargs)
        got = _run(opt, tree_map(mx.array, params), grads_seq)
    want, want_states = _reference(name, kwargs, params, grads_seq)
    for path, value in tree_flatten(got):
        assert value.dtype == mx.float32
        assert_close(value, want[path], rtol=1e-4, atol=1e-5)
    assert opt.state["step"].dtype == mx.uint64 and opt.state["step"].item() == STEPS
    for path, state in want_states.items():  # the state too, under MLX's names
        slot = dict(tree_flatten(opt.state))
        for key, value in state.items():
            assert_close(slot[f"{path}.{key}"], value, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name,kwargs", CASES, ids=CASE_IDS)
def test_matches_mlx(name, kwargs):
    mlx_core = pytest.importorskip("mlx.core")
    mlx_optimizers = pytest.importorskip("mlx.optimizers")
    rng = np.random.default_rng(2)
    params = _random_tree(rng)
    grads_seq = [_random_tree(rng) for _ in range(STEPS)]
    got = _run(getattr(optim, name)(**kwargs), tree_map(mx.array, params), grads_seq)
    ref_opt, ref_params = getattr(mlx_optimizers, name)(**kwargs), tree_map(mlx_core.array, params)
    for grads in grads_seq:
        ref_params = ref_opt.apply_gradients(tree_map(mlx_core.array, grads), ref_params)
    want = dict(tree_flatten(ref_params))
    for path, value in tree_flatten(got):
        assert_close(value, np.array(want[path]), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype", [mx.float16, mx.bfloat16])
@pytest.mark.parametrize("name,kwargs", CASES, ids=CASE_IDS)
def test_low_precision_keeps_dtype(device, name, kwargs, dtype):
    rng = np.random.default_rng(3)

    def rounded(tree):  # NumPy values of the low-precision arrays, so the reference starts from the same ones
        return tree_map(lambda x: np.asarray(mx.array(x).astype(dtype).astype(mx.float32)), tree)

    params = rounded(_random_tree(rng))
    grads_seq = [rounded(_random_tree(rng)) for _ in range(2)]
    with mx.stream(device):
        opt = getattr(optim, name)(**kwargs)
        got = tree_map(lambda p: mx.array(p).astype(dtype), params)
        for grads in grads_seq:
            got = opt.apply_gradients(tree_map(lambda g: mx.array(g).astype(dtype), grads), got)
    assert all(v.dtype == dtype for _, v in tree_flatten(got))
    assert all(v.dtype == dtype for k, v in tree_flatten(opt.state) if k not in ("step", "learning_rate"))
    want, _ = _reference(name, kwargs, params, grads_seq)
    for path, value in tree_flatten(got):  # loosely: the same update, rounded at every op
        np.testing.assert_allclose(np.asarray(value.astype(mx.float32)), want[path], rtol=0.05, atol=0.05)


# --- the state tree


class DictModel(dict):
    """What an optimizer needs of an ``nn.Module``: a dict tree of parameters with ``update`` and
    ``trainable_parameters``."""

    def update(self, parameters):
        _merge_into(self, parameters)
        return self

    def trainable_parameters(self):
        return tree_map(lambda x: x, dict(self))


def _merge_into(target, new):
    for key, value in (new.items() if isinstance(new, dict) else enumerate(new)):
        if isinstance(value, (dict, list)):
            _merge_into(target[key], value)
        else:
            target[key] = value


def _model(rng):
    """Linear layers, a layer without parameters in a list and a dict (as a Dropout or ReLU gives)."""
    def linear(n_in, n_out):
        return {"weight": mx.array(rng.standard_normal((n_out, n_in)).astype(np.float32)),
                "bias": mx.zeros((n_out,))}
    return DictModel(l1=linear(3, 4), drop={}, layers=[linear(4, 4), {}, linear(4, 2)])


def _grads_like(tree, rng):
    return tree_map(lambda p: mx.array(rng.standard_normal(p.shape).astype(np.float32)), tree)


def test_state_layout_and_explicit_init(device):
    with mx.stream(device):
        opt = optim.Adam(learning_rate=1e-2)
        assert list(opt.state) == ["step", "learning_rate"]
        assert opt.step.dtype == mx.uint64 and opt.step.item() == 0
        assert opt.learning_rate.dtype == mx.float32
        model = _model(np.random.default_rng(0))
        opt.init(model.trainable_parameters())
        state = opt.state
        assert state["drop"] == {} and state["layers"][1] == {}
        assert set(state["l1"]["weight"]) == {"m", "v"}
        assert state["l1"]["weight"]["m"].shape == (4, 3)
        assert all(mx.array_equal(v, mx.zeros_like(v)).item() for k, v in tree_flatten(state)
                   if k not in ("step", "learning_rate"))


def test_update_model_and_step_counter(device):
    rng = np.random.default_rng(1)
    with mx.stream(device):
        model = _model(rng)
        before = model.trainable_parameters()
        opt = optim.SGD(learning_rate=0.5, momentum=0.9)
        grads = _grads_like(before, rng)
        for n in range(1, 4):
            opt.update(model, grads)
            assert opt.step.item() == n and opt.step.dtype == mx.uint64
        # with a constant gradient the momentum after 3 steps is (1 + 0.9 + 0.81) g
        assert_close(opt.state["l1"]["weight"]["v"], 2.71 * np.asarray(grads["l1"]["weight"]), rtol=1e-5)
        assert model["drop"] == {} and model["layers"][1] == {}
        moved = np.asarray(before["l1"]["weight"]) - np.asarray(model["l1"]["weight"])
        assert_close(moved, 0.5 * (1 + 1.9 + 2.71) * np.asarray(grads["l1"]["weight"]), rtol=1e-5)


def test_parameters_may_be_a_superset_of_gradients(device):
    with mx.stream(device):
        params = {"a": mx.ones((2,)), "b": [mx.ones((3,)), mx.ones((1,))], "frozen": mx.ones((4,))}
        grads = {"a": mx.ones((2,)), "b": [mx.ones((3,)), mx.ones((1,))]}
        out = optim.SGD(0.25).apply_gradients(grads, params)
    assert set(out) == {"a", "b"} and isinstance(out["b"], list)
    assert_close(out["b"][0], np.full(3, 0.75))


def test_tuples_in_the_tree(device):
    with mx.stream(device):
        params = {"pair": (mx.ones((2,)), mx.zeros((2,)))}
        grads = {"pair": (mx.ones((2,)), mx.ones((2,)))}
        opt = optim.Adam(0.1)
        out = opt.apply_gradients(grads, params)
        out = opt.apply_gradients(grads, out)
    assert isinstance(out["pair"], tuple) and isinstance(opt.state["pair"], (list, tuple))
    want, _ = _reference("Adam", dict(learning_rate=0.1), {"p": np.ones(2)}, [{"p": np.ones(2)}] * 2)
    assert_close(out["pair"][0], want["p"], rtol=1e-5)


def test_state_setter_and_arbitrary_entries():
    opt = optim.SGD(0.1)
    opt.state["note"] = "kept"
    assert opt.state["note"] == "kept"
    opt.state = {0: 1}
    assert opt.state == {0: 1}


def test_init_keeps_loaded_slots(device):
    with mx.stream(device):
        opt = optim.SGD(0.1, momentum=0.5)
        opt.state["w"] = {"v": mx.full((2,), 4.0)}
        opt.init({"w": mx.zeros((2,)), "u": mx.zeros((3,))})
        assert_close(opt.state["w"]["v"], np.full(2, 4.0))
        assert_close(opt.state["u"]["v"], np.zeros(3))
        out = opt.apply_gradients({"w": mx.ones((2,))}, {"w": mx.zeros((2,))})
    assert_close(out["w"], np.full(2, -0.1 * 3.0))  # v = 0.5 * 4 + 1


def test_save_and_load_state_midway(device, tmp_path):
    rng = np.random.default_rng(4)
    with mx.stream(device):
        model_a = _model(rng)
        model_b = DictModel(tree_map(lambda x: x, dict(model_a)))
        grads = [_grads_like(model_a.trainable_parameters(), rng) for _ in range(5)]
        opt_a = optim.AdamW(optim.cosine_decay(1e-2, 10), bias_correction=True)
        opt_b = optim.AdamW(optim.cosine_decay(1e-2, 10), bias_correction=True)
        for g in grads[:3]:
            opt_a.update(model_a, g)
            opt_b.update(model_b, g)
        mx.eval(opt_b.state)
        path = str(tmp_path / "optimizer.safetensors")
        mx.save_safetensors(path, dict(tree_flatten(opt_b.state)))
        loaded = mx.load(path)
        assert loaded["step"].dtype == mx.uint64 and loaded["step"].item() == 3
        opt_b = optim.AdamW(optim.cosine_decay(1e-2, 10), bias_correction=True)
        opt_b.state = tree_unflatten(list(loaded.items()))
        for g in grads[3:]:
            opt_a.update(model_a, g)
            opt_b.update(model_b, g)
    for (path_a, a), (path_b, b) in zip(tree_flatten(model_a), tree_flatten(model_b)):
        assert path_a == path_b and mx.array_equal(a, b).item()
    assert opt_b.step.item() == 5
    assert_close(opt_b.learning_rate, np.asarray(opt_a.learning_rate))


def test_learning_rate_forms(device):
    with mx.stream(device):
        grads, params = {"w": mx.ones((2,))}, {"w": mx.zeros((2,))}
        opt = optim.SGD(mx.array(0.5))
        assert_close(opt.apply_gradients(grads, params)["w"], np.full(2, -0.5))
        opt.learning_rate = 0.25
        assert opt.learning_rate.dtype == mx.float32
        assert_close(opt.apply_gradients(grads, params)["w"], np.full(2, -0.25))
        opt = optim.SGD(lambda step: 0.5 / (1.0 + step))  # a schedule: the value at the step before
        outs = [opt.apply_gradients(grads, params)["w"] for _ in range(3)]
        for n, out in enumerate(outs):
            assert_close(out, np.full(2, -0.5 / (1 + n)), rtol=1e-6)
        opt.learning_rate = 9.0  # as in MLX, the schedule sets it again at the next update
        opt.apply_gradients(grads, params)
        assert_close(opt.learning_rate, 0.5 / 4, rtol=1e-6)
        opt = optim.SGD(lambda step: 1)  # a plain number from a schedule is kept as an array
        assert isinstance(opt.learning_rate, mx.array)


@pytest.mark.parametrize("name,kwargs", [("AdamW", dict(bias_correction=True, weight_decay=0.1)),
                                         ("Lion", dict(weight_decay=0.1)),
                                         ("Adafactor", dict(relative_step=False, weight_decay=0.1))])
def test_learning_rate_changed_between_updates(device, name, kwargs):
    """Values shared by every parameter of an update (bias corrections, decay factors) follow a learning rate
    set between updates."""
    rng = np.random.default_rng(10)
    lrs = [0.01, 0.05, 0.002]
    params = _random_tree(rng)
    grads_seq = [_random_tree(rng) for _ in lrs]
    with mx.stream(device):
        opt = getattr(optim, name)(learning_rate=lrs[0], **kwargs)
        got = tree_map(mx.array, params)
        for lr, grads in zip(lrs, grads_seq):
            opt.learning_rate = lr
            got = opt.apply_gradients(tree_map(mx.array, grads), got)
    want, _ = _reference(name, kwargs, params, grads_seq, lr_at=lambda t: lrs[t])
    for path, value in tree_flatten(got):
        assert_close(value, want[path], rtol=1e-4, atol=1e-5)


def test_empty_update_advances_the_step():
    opt = optim.Adam(optim.exponential_decay(0.1, 0.5))
    for _ in range(3):
        opt.update({}, {})
    assert opt.step.item() == 3
    assert_close(opt.learning_rate, 0.1 * 0.5**2)


def test_argument_checks():
    for cls in (optim.RMSprop, optim.Adagrad, optim.AdaDelta):
        for eps in (0.0, -1.0):
            with pytest.raises(ValueError, match=">0"):
                cls(learning_rate=1e-2, eps=eps)
    for cls in (optim.Adam, optim.AdamW, optim.Adamax, optim.Lion):
        for betas in ([1.0, 0.9], [0.9, 1.0], [-0.1, 0.9]):
            with pytest.raises(ValueError, match=r"beta.*\[0, 1\)"):
                cls(1e-2, betas=betas)
    with pytest.raises(ValueError, match=">=0"):
        optim.Adam(1e-2, eps=-1.0)
    with pytest.raises(ValueError, match="alpha"):
        optim.RMSprop(1e-2, alpha=-0.5)
    with pytest.raises(ValueError, match="rho"):
        optim.AdaDelta(1e-2, rho=-0.5)
    with pytest.raises(ValueError, match="Nesterov"):
        optim.SGD(0.1, nesterov=True)
    with pytest.raises(ValueError, match="Nesterov"):
        optim.SGD(0.1, momentum=0.9, dampening=0.1, nesterov=True)
    with pytest.raises(ValueError, match="filters"):
        optim.MultiOptimizer([optim.SGD(0.1)], [lambda path, w: True])
    with pytest.raises(KeyError):  # no learning rate to use
        optim.Adafactor(relative_step=False).apply_gradients({"w": mx.ones((2,))}, {"w": mx.ones((2,))})


def test_subclass_hooks():
    """A user's optimizer needs only init_single and apply_single, and may schedule its own hyperparameters."""

    class Halve(optim.Optimizer):
        def __init__(self, factor):
            super().__init__()
            self._maybe_schedule("factor", factor)

        def init_single(self, parameter, state):
            state["count"] = mx.zeros_like(parameter)

        def apply_single(self, gradient, parameter, state):
            state["count"] = state["count"] + 1
            return parameter - self.state["factor"] * gradient

    opt = Halve(lambda step: 1.0 / (step + 1))
    params = {"w": mx.ones((2,))}
    for _ in range(2):
        params = opt.apply_gradients({"w": mx.ones((2,))}, params)
    assert_close(params["w"], np.full(2, 1 - 1.0 - 0.5))
    assert_close(opt.state["w"]["count"], np.full(2, 2.0))
    with pytest.raises(NotImplementedError, match="init_single"):
        optim.Optimizer().init({"w": mx.ones((1,))})


def test_adafactor_factored_second_moment():
    row = mx.array([[1.0, 4.0, 9.0], [16.0, 25.0, 36.0]])
    col = mx.array([[1.0, 4.0, 9.0, 16.0], [25.0, 36.0, 49.0, 64.0]])
    got = optim.Adafactor()._approximate_exp_moving_avg(row, col)
    r, c = np.asarray(row, np.float64), np.asarray(col, np.float64)
    want = 1 / np.sqrt(r / r.mean(-1, keepdims=True))[..., :, None] / np.sqrt(c)[..., None, :]
    assert_close(got, want, rtol=1e-6)
    opt = optim.Adafactor(beta_1=0.9)
    opt.init({"m": mx.zeros((2, 3, 4)), "v": mx.zeros((5,))})
    assert opt.state["m"]["exp_avg_sq_row"].shape == (2, 3)
    assert opt.state["m"]["exp_avg_sq_col"].shape == (2, 4)
    assert opt.state["v"]["exp_avg_sq"].shape == (5,) and opt.state["v"]["exp_avg"].shape == (5,)


def test_muon_orthogonalizes(device):
    rng = np.random.default_rng(5)
    with mx.stream(device):
        for shape in [(8, 5), (5, 8)]:
            x = mx.array(rng.standard_normal(shape).astype(np.float32))
            y = np.asarray(optim.Muon(0.1)._zeropower_via_newtonschulz5(x, steps=10), np.float64)
            # the quintic iteration leaves the singular values near 1 (within about 0.3), not at 1
            sv = np.linalg.svd(y, compute_uv=False)
            assert y.shape == shape and np.all(np.abs(sv - 1) < 0.35)


# --- MultiOptimizer


def test_multi_optimizer_splits_by_filter(device):
    rng = np.random.default_rng(6)
    with mx.stream(device):
        model = _model(rng)
        opt = optim.MultiOptimizer([optim.Adam(0.01), optim.SGD(0.1)], [lambda path, w: w.ndim > 1])
        opt.init(model.trainable_parameters())
        adam_state, sgd_state = opt.state["states"]
        adam_paths = [k for k, _ in tree_flatten(adam_state)]
        sgd_paths = [k for k, _ in tree_flatten(sgd_state)]
        assert not any("bias" in k for k in adam_paths) and not any("weight" in k for k in sgd_paths)
        assert (len(sgd_paths) - 2) * 2 == len(adam_paths) - 2
        grads = _grads_like(model.trainable_parameters(), rng)
        before = model.trainable_parameters()
        opt.update(model, grads)
        opt.update(model, grads)
    assert_close(model["layers"][2]["bias"],
                 np.asarray(before["layers"][2]["bias"]) - 0.2 * np.asarray(grads["layers"][2]["bias"]), rtol=1e-5)
    want, _ = _reference("Adam", dict(learning_rate=0.01), {"w": before["l1"]["weight"]},
                         [{"w": grads["l1"]["weight"]}] * 2)
    assert_close(model["l1"]["weight"], want["w"], rtol=1e-5)
    assert model["layers"][1] == {} and model["drop"] == {}
    assert all(s.step.item() == 2 for s in opt.optimizers)
    assert_close(opt.learning_rate, 0.01)


def test_multi_optimizer_state_round_trip(tmp_path):
    rng = np.random.default_rng(7)
    model = _model(rng)
    opt = optim.MultiOptimizer([optim.Muon(0.01), optim.AdamW(0.01)], [lambda path, w: w.ndim >= 2])
    grads = _grads_like(model.trainable_parameters(), rng)
    opt.update(model, grads)
    path = str(tmp_path / "multi.safetensors")
    mx.save_safetensors(path, dict(tree_flatten(opt.state)))
    other = optim.MultiOptimizer([optim.Muon(0.01), optim.AdamW(0.01)], [lambda path, w: w.ndim >= 2])
    other.state = tree_unflatten(list(mx.load(path).items()))
    saved, loaded = dict(tree_flatten(opt.state)), dict(tree_flatten(other.state))
    assert saved.keys() == loaded.keys()
    assert all(mx.array_equal(saved[k], loaded[k]).item() for k in saved)
    other.update(DictModel(tree_map(lambda x: x, dict(model))), grads)  # grows the loaded state and steps
    assert other.optimizers[0].step.item() == 2
    with pytest.raises(ValueError, match="states"):
        other.state = {"states": [{}]}


# --- clip_grad_norm


def test_clip_grad_norm(device):
    with mx.stream(device):
        small = {"first": [mx.array([0.1, 0.2]), mx.array([0.1])], "second": mx.array([0.3])}
        clipped, norm = optim.clip_grad_norm(small, 10.0)
        assert all(mx.array_equal(a, b).item() for (_, a), (_, b) in zip(tree_flatten(small),
                                                                          tree_flatten(clipped)))
        assert_close(norm, np.sqrt(0.15), rtol=1e-6)
        large = {"first": [mx.array([10, 20]), mx.array([10])], "second": mx.array([30])}
        clipped, norm = optim.clip_grad_norm(large, 1.0)
    values = np.concatenate([np.asarray(v, np.float64) for _, v in tree_flatten(clipped)])
    assert_close(norm, np.sqrt(1500.0), rtol=1e-6)
    assert abs(np.linalg.norm(values) - 1.0) < 1e-5
    assert_close(clipped["first"][0], np.array([10, 20]) / np.sqrt(1500.0), rtol=1e-5)
    with pytest.raises(ValueError, match="max_norm"):
        optim.clip_grad_norm(small, -1.0)


# --- compiled training steps


def _loss(params, x):
    hidden = mx.maximum(x @ params["l1"]["weight"].T + params["l1"]["bias"], 0.0)
    for layer in (params["layers"][0], params["layers"][2]):
        hidden = hidden @ layer["weight"].T + layer["bias"]
    return mx.sum(mx.square(hidden))


@pytest.mark.parametrize("name,kwargs", [("SGD", dict(learning_rate=0.01, momentum=0.9)),
                                         ("Adam", dict(learning_rate=optim.exponential_decay(0.01, 0.9),
                                                       bias_correction=True)),
                                         ("Muon", dict(learning_rate=0.01))])
def test_compiled_step_with_state_capture(device, name, kwargs):
    """``mx.compile(step, inputs=[model.state, opt.state], outputs=...)`` as MLX users write it: the compiled
    step updates the model and the optimizer state in place and matches the uncompiled one."""
    rng = np.random.default_rng(8)
    with mx.stream(device):
        eager_model = _model(rng)
        model = DictModel(tree_map(lambda x: x, dict(eager_model)))
        eager_opt, opt = getattr(optim, name)(**kwargs), getattr(optim, name)(**kwargs)
        opt.init(model.trainable_parameters())
        xs = [mx.array(rng.standard_normal((5, 3)).astype(np.float32)) for _ in range(4)]

        def train_step(model, opt, x):
            loss, grads = mx.value_and_grad(_loss)(model.trainable_parameters(), x)
            opt.update(model, grads)
            return loss

        state = [model, opt.state]
        compiled = mx.compile(lambda x: train_step(model, opt, x), inputs=state, outputs=state)
        for x in xs:
            want = train_step(eager_model, eager_opt, x)
            got = compiled(x)
            mx.eval(got, model, opt.state)
            assert_close(got, np.asarray(want), rtol=1e-5)
    assert len(compiled._cache) == 1  # one trace: the state's tree keeps its structure across steps
    assert opt.step.item() == len(xs)
    for (_, a), (_, b) in zip(tree_flatten(model), tree_flatten(eager_model)):
        assert_close(a, np.asarray(b), rtol=1e-5, atol=1e-6)
    for (_, a), (_, b) in zip(tree_flatten(opt.state), tree_flatten(eager_opt.state)):
        assert_close(a, np.asarray(b), rtol=1e-5, atol=1e-6)


def test_compiled_pure_step(device):
    """The state passed in and returned, with ``optimizer.state = ...`` inside the compiled function."""
    rng = np.random.default_rng(9)
    with mx.stream(device):
        params = _model(rng).trainable_parameters()
        opt = optim.SGD(learning_rate=1e-2, momentum=0.9)
        opt.init(params)

        @mx.compile
        def step(params, opt_state, x):
            grads = mx.grad(_loss)(params, x)
            opt.state = opt_state
            return opt.apply_gradients(grads, params), opt.state

        eager = optim.SGD(learning_rate=1e-2, momentum=0.9)
        eager_params = params
        state = opt.state
        for _ in range(3):
            x = mx.array(rng.standard_normal((5, 3)).astype(np.float32))
            params, state = step(params, state, x)
            eager_params = eager.apply_gradients(mx.grad(_loss)(eager_params, x), eager_params)
    assert state["step"].item() == 3
    # (on the GPU the compiled step is one graph whose fused kernels may contract a * b + c: last bits differ)
    for (_, a), (_, b) in zip(tree_flatten(params), tree_flatten(eager_params)):
        assert_close(a, np.asarray(b), rtol=1e-4 if device == mx.gpu else 1e-5, atol=1e-6)


def test_compiled_update_sees_a_new_learning_rate():
    params = {"w": mx.ones((3,))}
    grads = {"w": mx.ones((3,))}
    opt = optim.SGD(-1.0)
    update = mx.compile(lambda g: opt.apply_gradients(g, params), inputs=opt.state)
    assert_close(update(grads)["w"], np.full(3, 2.0))
    opt.learning_rate = -2.0
    assert_close(update(grads)["w"], np.full(3, 3.0))


# --- The update of umx's own optimizers runs compiled: apply_single is traced once per signature and replayed (on a
# GPU as one CUDA graph). A user's subclass runs its update as written. Both must give the same bits.


def _as_written(cls):
    """``cls`` as a user's subclass of it: its update runs as written, op by op."""
    return type(f"AsWritten{cls.__name__}", (cls,), {})


def _flat_results(opt, params) -> list:
    return tree_flatten(params) + tree_flatten(opt.state)


def _params_and_gradients(seed: int) -> tuple:
    """A random parameter tree (``SHAPES``) and ``STEPS`` gradient trees for it, as NumPy arrays."""
    rng = np.random.default_rng(seed)
    return _random_tree(rng), [_random_tree(rng) for _ in range(STEPS)]


def _assert_same_bits(got: list, want: list) -> None:
    assert [k for k, _ in got] == [k for k, _ in want]
    for (path, a), (_, b) in zip(got, want):
        assert a.dtype == b.dtype, path
        np.testing.assert_array_equal(np.array(a), np.array(b), err_msg=path)


@pytest.mark.parametrize("name,kwargs", CASES, ids=CASE_IDS)
def test_compiled_update_gives_the_bits_of_the_update_as_written(device, name, kwargs):
    params, grads_seq = _params_and_gradients(11)
    results = []
    with mx.stream(device):
        compiled = []
        for cls in (getattr(optim, name), _as_written(getattr(optim, name))):
            opt = cls(**kwargs)
            results.append(_flat_results(opt, _run(opt, tree_map(mx.array, params), grads_seq)))
            compiled.append(bool(opt._compiled))
    assert compiled == [True, False]  # (else both ran as written, and the bits would agree for nothing)
    _assert_same_bits(*results)


def test_compiled_update_traces_apply_single_once_per_signature(monkeypatch):
    calls = []
    real = optim.Adam.apply_single

    def counted(self, gradient, parameter, state):
        calls.append(parameter.shape)
        return real(self, gradient, parameter, state)

    monkeypatch.setattr(optim.Adam, "apply_single", counted)
    opt = optim.Adam(1e-2)
    params = {"w": mx.ones((3, 2)), "b": mx.ones((2,))}
    for _ in range(4):
        params = opt.apply_gradients({"w": mx.ones((3, 2)), "b": mx.ones((2,))}, params)
        mx.eval(params, opt.state)
    assert sorted(calls) == [(2,), (3, 2)]  # the trace only
    opt.eps = 1e-3
    params = opt.apply_gradients({"w": mx.ones((3, 2)), "b": mx.ones((2,))}, params)
    assert len(calls) == 4  # a new setting: traced again
    params = opt.apply_gradients({"w": mx.ones((3, 2), mx.float16), "b": mx.ones((2,))}, params)
    assert len(calls) == 6  # a new dtype: traced again


def test_a_subclass_update_runs_as_written_at_every_step():
    calls = []

    class Counting(optim.Adam):
        def apply_single(self, gradient, parameter, state):
            calls.append(1)  # a Python side effect: a compiled update would make it once
            return super().apply_single(gradient, parameter, state)

    opt = Counting(1e-2)
    params = {"w": mx.ones((3,)), "b": mx.ones((2,))}
    for _ in range(3):
        params = opt.apply_gradients({"w": mx.ones((3,)), "b": mx.ones((2,))}, params)
    assert len(calls) == 6


@pytest.mark.parametrize("setting,value", [("weight_decay", 0.5), ("betas", [0.5, 0.8]), ("eps", 1e-2),
                                           ("bias_correction", True)])
def test_a_hyperparameter_changed_midway_takes_effect_at_the_next_update(device, setting, value):
    params, grads_seq = _params_and_gradients(12)
    results = []
    with mx.stream(device):
        for cls in (optim.AdamW, _as_written(optim.AdamW), optim.AdamW):
            opt = cls(learning_rate=0.1)
            p = tree_map(mx.array, params)
            for i, grads in enumerate(grads_seq):
                if i == 2 and len(results) < 2:  # (the third run keeps the setting: it must then differ)
                    setattr(opt, setting, value)
                p = opt.apply_gradients(tree_map(mx.array, grads), p)
                mx.eval(p, opt.state)
            results.append(_flat_results(opt, p))
    _assert_same_bits(results[0], results[1])
    assert not all(np.array_equal(np.array(a), np.array(b)) for (_, a), (_, b) in zip(results[0], results[2]))


def test_an_array_hyperparameter_is_read_at_every_update(device):
    with mx.stream(device):
        opt = optim.SGD(1.0, momentum=0.9)
        params = {"w": mx.zeros((2,))}
        grads = {"w": mx.ones((2,))}
        opt.momentum = mx.array(0.5)  # an array attribute: the update as written reads it each time
        params = opt.apply_gradients(grads, params)  # v = 1
        opt.momentum = mx.array(0.0)
        params = opt.apply_gradients(grads, params)  # v = 0 * 1 + 1
        assert_close(params["w"], np.full(2, -2.0))
        opt.momentum = 0.5  # a constant again: compiled, and this value
        params = opt.apply_gradients(grads, params)  # v = 0.5 * 1 + 1
        assert_close(params["w"], np.full(2, -3.5))


def test_compiled_update_writes_the_state_into_its_own_dicts(device):
    with mx.stream(device):
        opt = optim.Adam(1e-2)
        params = {"layers": [{"w": mx.ones((2,))}, {}], "b": mx.ones((3,))}
        opt.init(params)
        slot = opt.state["layers"][0]["w"]
        state = opt.state
        for _ in range(2):
            params = opt.apply_gradients({"layers": [{"w": mx.ones((2,))}, {}], "b": mx.ones((3,))}, params)
        assert opt.state is state and opt.state["layers"][0]["w"] is slot
        assert sorted(slot) == ["m", "v"] and opt.step.item() == 2
        assert isinstance(params["layers"], list) and params["layers"][1] == {}
        assert_close(slot["m"], np.full(2, 0.1 * 0.9 + 0.1))
