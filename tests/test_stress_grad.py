"""Differential stress test of the transforms: random programs differentiated with values read inside them.

A program is a random chain of differentiable ops (elementwise, reductions, scans, sorts, products, gathers,
scatters, pads, joins) over a pool of arrays of one shape, in float64. It runs in two versions: one that reads
values as it goes (``item()``, ``eval`` of intermediates, NumPy conversion, branches on a value) and one that
does not, taking the branches the first version took. ``grad`` and ``vjp`` of the reading version must match
the silent version's and central finite differences of the function (with those branches fixed).

``UMX_STRESS_GRAD_PROGRAMS`` sets the number of programs (``make stress`` runs many). A failure names the
program's seed: ``_check_program(seed, device)`` replays it alone.
"""

from __future__ import annotations

import os

import numpy as np

import umx as mx

N_PROGRAMS = int(os.environ.get("UMX_STRESS_GRAD_PROGRAMS", "12"))
SEED = 20250302
SHAPE = (3, 4)
OPS_PER_PROGRAM = 12
F64 = mx.float64


def a64(x) -> mx.array:
    return mx.array(np.asarray(x, np.float64), dtype=F64)


class Program:
    """A random program: ``steps`` of ``(kind, parameters, input positions)``, drawn once from the seed, run by
    :meth:`run` on any inputs. Constants (weights, masks, permutations) are drawn with the steps."""

    UNARY = ["sin", "cos", "tanh", "sigmoid", "square", "negative", "softplus", "exp_tanh"]
    BINARY = ["add", "subtract", "multiply", "maximum", "soft_divide"]

    def __init__(self, seed: int, n_inputs: int = 2):
        self.seed = seed
        rng = self.rng = np.random.default_rng(seed)
        self.n_inputs = n_inputs
        self.steps = []
        size = n_inputs
        for _ in range(OPS_PER_PROGRAM):
            kind = str(rng.choice(["unary", "binary", "reduce", "scan", "softmax", "sort", "matmul", "gather",
                                   "scatter", "where", "join", "pad", "read", "branch"],
                                  p=[.16, .16, .1, .08, .04, .04, .06, .06, .05, .05, .05, .03, .06, .06]))
            ins = tuple(int(i) for i in rng.integers(0, size, 2))
            self.steps.append((kind, self._params(kind), ins))
            size += kind not in ("read",)
        self.w = rng.standard_normal(SHAPE)

    def _params(self, kind: str):
        rng = self.rng
        axis = int(rng.integers(0, 2))
        if kind == "unary":
            return str(rng.choice(self.UNARY))
        if kind == "binary":
            return str(rng.choice(self.BINARY))
        if kind == "reduce":
            return str(rng.choice(["sum", "mean", "max", "min", "prod", "logsumexp"])), axis
        if kind == "scan":  # (an exclusive running extremum starts at an infinity: inclusive only)
            name = str(rng.choice(["cumsum", "cumprod", "cummax", "cummin"]))
            return name, axis, bool(rng.random() < 0.5), name in ("cummax", "cummin") or bool(rng.random() < 0.7)
        if kind in ("softmax", "sort"):
            return axis
        if kind == "matmul":
            return rng.standard_normal((SHAPE[1], SHAPE[1])) / 2
        if kind == "gather":
            return axis, rng.permutation(SHAPE[axis])
        if kind == "scatter":
            return str(rng.choice(["add", "set", "maximum", "multiply"])), rng.permutation(SHAPE[0])[:2]
        if kind == "where":
            return rng.random(SHAPE) < 0.5
        if kind == "join":
            return int(rng.integers(1, SHAPE[1]))
        if kind == "pad":
            return axis
        if kind == "read":
            return str(rng.choice(["item", "eval", "numpy", "eval_many"]))
        return None  # branch

    def run(self, xs: list, reads: bool, decisions: list) -> mx.array:
        """The program on ``xs``; with ``reads`` it reads values and records its branches in ``decisions``,
        without it takes them from ``decisions``."""
        pool = list(xs)
        taken = iter(decisions) if not reads else None
        for kind, params, (i, j) in self.steps:
            x, y = pool[i % len(pool)], pool[j % len(pool)]
            if kind == "read":
                if reads:
                    if params == "item":
                        assert np.isfinite(x.sum().item())
                    elif params == "eval":
                        mx.eval(x)
                    elif params == "numpy":
                        assert np.asarray(x).shape == SHAPE
                    else:
                        mx.eval(pool[-3:])
                continue
            if kind == "branch":
                if reads:
                    up = bool((x.mean() > 0).item())
                    decisions.append(up)
                else:
                    up = next(taken)
                pool.append(x * 0.5 + 1.0 if up else mx.sin(x) * y)
                continue
            pool.append(self._op(kind, params, x, y))
        return pool[-1]

    def _op(self, kind: str, params, x: mx.array, y: mx.array) -> mx.array:
        if kind == "unary":
            if params == "softplus":
                return mx.logaddexp(x, 0.0)
            if params == "exp_tanh":
                return mx.exp(mx.tanh(x))
            return getattr(mx, params)(x)
        if kind == "binary":
            if params == "soft_divide":
                return x / (1.0 + mx.square(y))
            return getattr(mx, params)(x, y)
        if kind == "reduce":
            name, axis = params
            return x * getattr(mx, name)(mx.tanh(y), axis=axis, keepdims=True)
        if kind == "scan":
            name, axis, reverse, inclusive = params
            return getattr(mx, name)(mx.tanh(x), axis=axis, reverse=reverse, inclusive=inclusive)
        if kind == "softmax":
            return mx.softmax(x, axis=params) * y
        if kind == "sort":
            return mx.sort(x, axis=params)
        if kind == "matmul":
            return mx.tanh(x @ a64(params))
        if kind == "gather":
            axis, perm = params
            return mx.take(x, mx.array(perm), axis=axis) + y
        if kind == "scatter":
            op, rows = params
            idx = mx.array(rows)
            if op == "set":
                out = x + 0.0
                out[idx] = y[:2]
                return out
            return getattr(x.at[idx], op)(y[:2])
        if kind == "where":
            return mx.where(mx.array(params), x, y)
        if kind == "join":
            return mx.concatenate([x[:, :params], y[:, params:]], axis=1)
        axis = params  # pad: shift along the axis, the first row or column filled with 0.25
        key = (slice(None),) * axis + (slice(0, SHAPE[axis] - 1),)
        width = [(0, 0), (0, 0)]
        width[axis] = (1, 0)
        return mx.pad(x[key], width, constant_values=0.25) * y


def _check_program(seed: int, device) -> None:
    p = Program(seed)
    rng = np.random.default_rng(seed + 1)
    xs = [rng.standard_normal(SHAPE) for _ in range(p.n_inputs)]
    w = a64(p.w)
    decisions: list = []

    def loud(*a):
        decisions.clear()
        return (p.run(list(a), True, decisions) * w).sum()

    def silent(*a):
        return (p.run(list(a), False, decisions) * w).sum()

    where = f"program seed={seed} on {device}: {[s[0] for s in p.steps]}"
    args = [a64(x) for x in xs]
    g_loud = mx.grad(loud, argnums=(0, 1))(*args)
    g_silent = mx.grad(silent, argnums=(0, 1))(*args)
    for a, b in zip(g_loud, g_silent):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-10, atol=1e-12, err_msg=where)
    # vjp with a random cotangent on the program's last value, against central differences along v
    c = a64(rng.standard_normal(SHAPE))
    vs = [rng.standard_normal(SHAPE) for _ in xs]

    def last(*a):
        decisions.clear()
        return p.run(list(a), True, decisions)

    _, vj = mx.vjp(last, args, [c])
    h = 1e-6
    plus = np.asarray(p.run([a64(x + h * v) for x, v in zip(xs, vs)], False, decisions))
    minus = np.asarray(p.run([a64(x - h * v) for x, v in zip(xs, vs)], False, decisions))
    fd = float(np.sum((plus - minus) / (2 * h) * np.asarray(c)))
    got = float(sum(np.sum(np.asarray(g) * v) for g, v in zip(vj, vs)))
    np.testing.assert_allclose(got, fd, rtol=1e-5, atol=1e-6, err_msg=where)
    fd_loss = (silent(*[a64(x + h * v) for x, v in zip(xs, vs)]).item()
               - silent(*[a64(x - h * v) for x, v in zip(xs, vs)]).item()) / (2 * h)
    got_loss = float(sum(np.sum(np.asarray(g) * v) for g, v in zip(g_loud, vs)))
    np.testing.assert_allclose(got_loss, fd_loss, rtol=1e-5, atol=1e-6, err_msg=where)


def test_random_programs_differentiate_through_reads(device):
    old = mx.default_device()
    mx.set_default_device(device)
    try:
        for k in range(N_PROGRAMS):
            _check_program(SEED + k, device)
    finally:
        mx.set_default_device(old)
