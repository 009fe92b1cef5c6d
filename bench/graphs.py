"""CUDA graphs: what replaying a repeated GPU batch gains, on an MLP forward pass and on a training step.

Each case runs in umx with graphs on and off (``graphs.ENABLED``), and by hand with CuPy (forward only) and torch,
in the same process: median wall time per call, results already on the GPU, one eval (or synchronize) per call.
The MLP is the suite's: batch 256, 784-512-512-10, float32; the training step is mean squared error, its gradient
by ``value_and_grad``, and an SGD update of all six parameters; "step, compiled" is that step under ``mx.compile``
(the graph is rebuilt from a recorded trace; torch's column repeats its eager step).

Usage: python bench/graphs.py [--runs N]
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _util import median_ms  # noqa: E402

import umx as mx  # noqa: E402

DIMS = [784, 512, 512, 10]
LR = 1e-3


def _forward(x, params, relu):
    n = len(params) // 2
    for i in range(n):
        x = x @ params[2 * i] + params[2 * i + 1]
        if i < n - 1:
            x = relu(x)
    return x


def _relu_mx(v):
    return mx.maximum(v, 0.0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=200)
    args = ap.parse_args()
    if not mx.is_available(mx.gpu):
        print("graphs: no GPU here, nothing to measure")
        return
    from umx.backends.cuda import graphs

    mx.set_default_device(mx.gpu)
    rng = np.random.default_rng(0)
    host = []
    for i, o in zip(DIMS, DIMS[1:]):
        host += [(rng.standard_normal((i, o)) * 0.05).astype(np.float32), np.zeros(o, np.float32)]
    xh = rng.standard_normal((256, DIMS[0])).astype(np.float32)
    th = rng.standard_normal((256, DIMS[-1])).astype(np.float32)
    params = [mx.array(p) for p in host]
    x, t = mx.array(xh), mx.array(th)
    mx.eval(params, x, t)

    def fwd():
        mx.eval(_forward(x, params, _relu_mx))

    def loss_fn(ps):
        return mx.mean(mx.square(_forward(x, ps, _relu_mx) - t))

    step_grad = mx.value_and_grad(loss_fn)
    state = {"p": params}

    def train():
        loss, grads = step_grad(state["p"])
        state["p"] = [p - LR * g for p, g in zip(state["p"], grads)]
        mx.eval(loss, state["p"])

    def step(*ps):
        loss, grads = step_grad(list(ps))
        return (loss, *[p - LR * g for p, g in zip(ps, grads)])

    compiled_step = mx.compile(step)
    state_c = {"p": params}

    def train_compiled():
        out = compiled_step(*state_c["p"])
        state_c["p"] = list(out[1:])
        mx.eval(out)

    rows = []
    for name, fn in (("MLP forward", fwd), ("training step", train), ("step, compiled", train_compiled)):
        times = {}
        for on in (True, False):
            graphs.ENABLED = on
            times["umx graphs" if on else "umx op by op"] = median_ms(fn, args.runs, warmup=5)
        graphs.ENABLED = True
        rows.append((name, times))

    try:
        import cupy as cp

        cps = [cp.asarray(p) for p in host]
        cx = cp.asarray(xh)
        def cfwd():
            _forward(cx, cps, lambda v: cp.maximum(v, 0.0))
            cp.cuda.Device().synchronize()

        rows[0][1]["CuPy"] = median_ms(cfwd, args.runs)
    except ImportError:
        pass
    try:
        import torch

        if torch.cuda.is_available():
            tps = [torch.from_numpy(p).cuda().requires_grad_() for p in host]
            tx, tt = torch.from_numpy(xh).cuda(), torch.from_numpy(th).cuda()

            def tfwd():
                with torch.no_grad():
                    _forward(tx, tps, torch.relu)
                torch.cuda.synchronize()

            def ttrain():
                loss = ((_forward(tx, tps, torch.relu) - tt) ** 2).mean()
                gs = torch.autograd.grad(loss, tps)
                with torch.no_grad():
                    for p, g in zip(tps, gs):
                        p -= LR * g
                torch.cuda.synchronize()

            rows[0][1]["torch"] = median_ms(tfwd, args.runs)
            rows[1][1]["torch"] = rows[2][1]["torch"] = median_ms(ttrain, args.runs)
    except ImportError:
        pass

    cols = ["umx graphs", "umx op by op", "CuPy", "torch"]
    print(f"CUDA graphs (median of {args.runs}, ms)")
    print(f"{'case':16}" + "".join(f"{c:>14}" for c in cols) + f"{'graphs/best other':>19}")
    for name, times in rows:
        others = [v for k, v in times.items() if k != "umx graphs"]
        cells = "".join(f"{times[c]:>14.3f}" if c in times else f"{'-':>14}" for c in cols)
        print(f"{name:16}{cells}{times['umx graphs'] / min(others):>18.2f}x")
    print("graph stats:", graphs.STATS.as_dict())


if __name__ == "__main__":
    main()
