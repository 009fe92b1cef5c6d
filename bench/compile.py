"""``mx.compile``: what a replayed trace saves over calling the function, per device.

Two functions, each timed eager (``fun``) and compiled (``mx.compile(fun)``), as the median of many runs (the two
taking turns) on arrays already evaluated:

- the seed: ``x = a @ b`` (a: 4096x512, b: 512x4, float32), then 500 times ``b = exp(b)``;
- an MLP forward pass, 784-512-512-10 with ReLU, batch 256.

Rows: "first call (trace)" is the call of a new compiled function (the trace, then a replay); "build,
interpreted" the calls before a tape's code is generated (replays 2 to ``Tape.GENERATE_AT - 1``); "build" the
calls after; all three time the call alone (the graph is built, nothing runs; the garbage is freed outside the
timing). "build + eval" times the call and ``eval`` of its results. Eager is timed alongside each row, so each row
compares like with like. Devices: the CPU, and the GPU where there is one.

Usage: python bench/compile.py [--runs N]
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import umx as mx  # noqa: E402
from umx.transforms._tape import Tape  # noqa: E402

N_EXP = 500


def seed(a, b):
    x = a @ b
    for _ in range(N_EXP):
        b = mx.exp(b)
    return x, b


def seed_inputs():
    return mx.random.uniform(shape=(4096, 512)), mx.random.uniform(shape=(512, 4))


def mlp(x, w1, b1, w2, b2, w3, b3):
    h = mx.maximum(x @ w1 + b1, 0.0)
    h = mx.maximum(h @ w2 + b2, 0.0)
    return h @ w3 + b3


def mlp_inputs():
    sizes = [784, 512, 512, 10]
    params = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        params += [mx.random.normal((n_in, n_out)) * (2 / n_in) ** 0.5, mx.zeros((n_out,))]
    return (mx.random.normal((256, 784)), *params)


def medians_ms(fns, runs: int, evaluate: bool, warmup: int = 3) -> list:
    """Median milliseconds of each ``fn()`` (with ``eval`` of its results when ``evaluate``), after ``warmup``
    untimed calls. The functions take turns, run by run, so that load from elsewhere on the machine falls on each
    alike."""
    times: list = [[] for _ in fns]
    for i in range(runs + warmup):
        for fn, ts in zip(fns, times):
            t = time.perf_counter()
            out = fn()
            if evaluate:
                mx.eval(out)
            dt = time.perf_counter() - t
            del out  # an unevaluated graph is freed here, outside the timing
            if i >= warmup:
                ts.append(dt)
    return [statistics.median(ts) * 1e3 for ts in times]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=30)
    args = ap.parse_args()
    devices = [("cpu", mx.cpu)] + ([("gpu", mx.gpu)] if mx.is_available(mx.gpu) else [])
    print(f"umx {mx.__version__}; median of {args.runs} runs, in ms"
          + ("" if len(devices) > 1 else "; no CUDA GPU here, so CPU only"))
    header = f"{'function':8} {'device':6} {'what':20} {'eager':>9} {'compiled':>9} {'speedup':>8}"
    print(header)
    print("-" * len(header))
    interpreted = min(args.runs, Tape.GENERATE_AT - 4)  # replays before the tape's code is generated
    warm = Tape.GENERATE_AT + 3
    for name, fun, make in (("seed", seed, seed_inputs), ("mlp", mlp, mlp_inputs)):
        for dev_name, dev in devices:
            mx.set_default_device(dev)
            ins = make()
            mx.eval(ins)
            eager = functools.partial(fun, *ins)
            rows = [("first call (trace)", lambda: mx.compile(fun)(*ins), False, 3, args.runs),  # noqa: B023
                    ("build, interpreted", functools.partial(mx.compile(fun), *ins), False, 3, interpreted),
                    ("build", functools.partial(mx.compile(fun), *ins), False, warm, args.runs),
                    ("build + eval", functools.partial(mx.compile(fun), *ins), True, warm, args.runs)]
            for what, compiled, evaluate, warmup, runs in rows:
                t_eager, t_comp = medians_ms([eager, compiled], runs, evaluate, warmup)
                print(f"{name:8} {dev_name:6} {what:20} {t_eager:9.3f} {t_comp:9.3f} {t_eager / t_comp:7.2f}x")
    mx.set_default_device(devices[-1][1])


if __name__ == "__main__":
    main()
