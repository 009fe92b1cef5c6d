"""nn.losses against NumPy references (float64), with every reduction."""

from __future__ import annotations

import math

import numpy as np
import pytest

import umx as mx
import umx.nn as nn
from tests.conftest import assert_close

F64 = mx.float64
L = nn.losses


def a64(x):
    return mx.array(np.asarray(x, np.float64), dtype=F64)


def _log_softmax(z, axis=-1):
    z = z - z.max(axis=axis, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=axis, keepdims=True))


def _reduced(loss, reduction):
    return {"none": loss, "mean": np.mean(loss), "sum": np.sum(loss)}[reduction]


@pytest.fixture
def data(rng):
    return {"x": rng.standard_normal((6, 5)), "y": rng.standard_normal((6, 5)), "labels": rng.integers(0, 5, 6),
            "probs": rng.dirichlet(np.ones(5), 6), "bits": rng.integers(0, 2, (6, 5)).astype(np.float64),
            "signs": rng.choice([-1.0, 1.0], (6, 5)), "weights": rng.uniform(0.5, 2, 6),
            "vars": rng.uniform(0.1, 2, (6, 5))}


# name -> (call with the data, NumPy reference of the unreduced loss, default reduction)
CASES = {
    "cross_entropy_indices": (lambda d, **kw: L.cross_entropy(a64(d["x"]), mx.array(d["labels"]), **kw),
                              lambda d: -_log_softmax(d["x"])[np.arange(6), d["labels"]], "none"),
    "cross_entropy_probs": (lambda d, **kw: L.cross_entropy(a64(d["x"]), a64(d["probs"]), **kw),
                            lambda d: -(d["probs"] * _log_softmax(d["x"])).sum(-1), "none"),
    "cross_entropy_weighted_smoothed": (
        lambda d, **kw: L.cross_entropy(a64(d["x"]), mx.array(d["labels"]), weights=a64(d["weights"]),
                                        label_smoothing=0.2, **kw),
        lambda d: d["weights"] * -(0.8 * _log_softmax(d["x"])[np.arange(6), d["labels"]]
                                   + 0.2 * _log_softmax(d["x"]).mean(-1)), "none"),
    "binary_cross_entropy_logits": (
        lambda d, **kw: L.binary_cross_entropy(a64(d["x"]), a64(d["bits"]), **kw),
        lambda d: -(d["bits"] * np.log(1 / (1 + np.exp(-d["x"])))
                    + (1 - d["bits"]) * np.log(1 - 1 / (1 + np.exp(-d["x"])))), "mean"),
    "binary_cross_entropy_probs": (
        lambda d, **kw: L.binary_cross_entropy(a64(1 / (1 + np.exp(-d["x"]))), a64(d["bits"]), with_logits=False,
                                               **kw),
        lambda d: -(d["bits"] * np.log(1 / (1 + np.exp(-d["x"])))
                    + (1 - d["bits"]) * np.log(1 - 1 / (1 + np.exp(-d["x"])))), "mean"),
    "l1_loss": (lambda d, **kw: L.l1_loss(a64(d["x"]), a64(d["y"]), **kw), lambda d: np.abs(d["x"] - d["y"]),
                "mean"),
    "mse_loss": (lambda d, **kw: L.mse_loss(a64(d["x"]), a64(d["y"]), **kw), lambda d: (d["x"] - d["y"]) ** 2,
                 "mean"),
    "nll_loss": (lambda d, **kw: L.nll_loss(a64(_log_softmax(d["x"])), mx.array(d["labels"]), **kw),
                 lambda d: -_log_softmax(d["x"])[np.arange(6), d["labels"]], "none"),
    "gaussian_nll_loss": (
        lambda d, **kw: L.gaussian_nll_loss(a64(d["x"]), a64(d["y"]), a64(d["vars"]), full=True, **kw),
        lambda d: 0.5 * (np.log(d["vars"]) + (d["x"] - d["y"]) ** 2 / d["vars"] + math.log(2 * math.pi)), "mean"),
    "kl_div_loss": (
        lambda d, **kw: L.kl_div_loss(a64(_log_softmax(d["x"])), a64(_log_softmax(d["y"])), **kw),
        lambda d: (np.exp(_log_softmax(d["y"])) * (_log_softmax(d["y"]) - _log_softmax(d["x"]))).sum(-1), "none"),
    "smooth_l1_loss": (
        lambda d, **kw: L.smooth_l1_loss(a64(d["x"]), a64(d["y"]), beta=0.7, **kw),
        lambda d: np.where(np.abs(d["x"] - d["y"]) < 0.7, 0.5 * (d["x"] - d["y"]) ** 2 / 0.7,
                           np.abs(d["x"] - d["y"]) - 0.35), "mean"),
    "triplet_loss": (
        lambda d, **kw: L.triplet_loss(a64(d["x"]), a64(d["y"]), a64(d["vars"]), p=3, margin=0.5, **kw),
        lambda d: np.maximum((np.sum(np.abs(d["x"] - d["y"]) ** 3, -1) + 1e-6) ** (1 / 3)
                             - (np.sum(np.abs(d["x"] - d["vars"]) ** 3, -1) + 1e-6) ** (1 / 3) + 0.5, 0), "none"),
    "hinge_loss": (lambda d, **kw: L.hinge_loss(a64(d["x"]), a64(d["signs"]), **kw),
                   lambda d: np.maximum(1 - d["x"] * d["signs"], 0), "none"),
    "huber_loss": (
        lambda d, **kw: L.huber_loss(a64(d["x"]), a64(d["y"]), delta=0.8, **kw),
        lambda d: np.where(np.abs(d["x"] - d["y"]) <= 0.8, 0.5 * (d["x"] - d["y"]) ** 2,
                           0.8 * (np.abs(d["x"] - d["y"]) - 0.4)), "none"),
    "log_cosh_loss": (lambda d, **kw: L.log_cosh_loss(a64(d["x"]), a64(d["y"]), **kw),
                      lambda d: np.log(np.cosh(d["x"] - d["y"])), "none"),
    "cosine_similarity_loss": (
        lambda d, **kw: L.cosine_similarity_loss(a64(d["x"]), a64(d["y"]), **kw),
        lambda d: (d["x"] * d["y"]).sum(1) / (np.linalg.norm(d["x"], axis=1) * np.linalg.norm(d["y"], axis=1)),
        "none"),
    "margin_ranking_loss": (
        lambda d, **kw: L.margin_ranking_loss(a64(d["x"]), a64(d["y"]), a64(d["signs"]), margin=0.3, **kw),
        lambda d: np.maximum(0, -d["signs"] * (d["x"] - d["y"]) + 0.3), "none"),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_loss_matches_numpy(on, data, name):
    call, ref, default = CASES[name]
    expected = ref(data)
    assert_close(call(data), _reduced(expected, default), rtol=1e-6, atol=1e-6)
    for reduction in ("none", "mean", "sum"):
        got = call(data, reduction=reduction)
        assert_close(got, _reduced(expected, reduction), rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError):
        call(data, reduction="average")


def test_every_mlx_loss_is_covered():
    names = {"cross_entropy", "binary_cross_entropy", "l1_loss", "mse_loss", "nll_loss", "gaussian_nll_loss",
             "kl_div_loss", "smooth_l1_loss", "triplet_loss", "hinge_loss", "huber_loss", "log_cosh_loss",
             "cosine_similarity_loss", "margin_ranking_loss"}
    assert all(any(case.startswith(n) for case in CASES) and callable(getattr(L, n)) for n in names)


def test_cross_entropy_is_shift_invariant_and_other_axis():
    base = mx.array([[2.0, -1.0, 0.5]])
    expected = L.cross_entropy(base, mx.array([0])).item()
    for offset in (1e4, 1e6):
        assert L.cross_entropy(base + offset, mx.array([0])).item() == pytest.approx(expected, abs=1e-5)
    assert L.cross_entropy(mx.array([[1e20, 1e20]]), mx.array([1])).item() == pytest.approx(math.log(2))
    logits = mx.random.normal((4, 8))
    targets = mx.array([1, 2, 3, 0])
    assert_close(L.cross_entropy(logits.T, targets, axis=0), np.asarray(L.cross_entropy(logits, targets)),
                 rtol=1e-6)
    with pytest.raises(ValueError):
        L.cross_entropy(logits, mx.array([1, 2]))
    with pytest.raises(ValueError):
        L.cross_entropy(logits, targets, label_smoothing=1.0)


def test_binary_cross_entropy_clips_log_probabilities():
    got = L.binary_cross_entropy(mx.array([0.0, 1.0, 0.0]), mx.array([0, 1, 1]), with_logits=False,
                                 reduction="none")
    assert_close(got, [0.0, 0.0, 100.0])


def test_shape_mismatches_raise():
    with pytest.raises(ValueError):
        L.mse_loss(mx.zeros((2, 3)), mx.zeros((3, 2)))
    with pytest.raises(ValueError):
        L.gaussian_nll_loss(mx.zeros(3), mx.zeros(3), mx.zeros(2))
    with pytest.raises(ValueError):
        L.margin_ranking_loss(mx.zeros(3), mx.zeros(3), mx.zeros(2))


def test_loss_gradient_matches_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    x = rng.standard_normal((5, 4))
    labels = rng.integers(0, 4, 5)
    g = mx.grad(lambda z: L.cross_entropy(z, mx.array(labels), label_smoothing=0.1, reduction="mean"))(
        mx.array(x, dtype=F64))
    xt = torch.tensor(x, requires_grad=True)
    torch.nn.functional.cross_entropy(xt, torch.tensor(labels), label_smoothing=0.1).backward()
    assert_close(g, xt.grad.numpy(), rtol=1e-6, atol=1e-9)
