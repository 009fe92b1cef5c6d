"""Backward tapes (``umx/transforms/_grad_tapes.py``): eager training steps with the backward walk replayed from its
tape against the same steps running the derivative rules every time, interleaved in one process.

Each row is ``bench/train.py``'s model and batch (``--small`` for a small host) trained eagerly on one device: two
copies of the model, one whose steps run with tapes on, one with them off, timed in turns (``interleaved_medians``).
Columns: the median step, and the host time ``value_and_grad`` takes to build the forward and backward graph (the
part tapes shorten; the eval that follows is the same either way); both run with ``value_and_grad``'s early start
off. A GPU step's eval waits for the GPU, so there the step time falls by the build time saved only where the host is
the longer pole. A third copy runs with tapes on and the early start on (the default; ``UMX_EARLY_START=0`` turns it
off): its gradients' batch is launched as it returns, so the GPU computes them while Python builds the optimizer's
update. A fourth runs with tapes on, the early start off, and its optimizer's update as written (a subclass of it: op
by op), where umx's own optimizers run it compiled.

Usage: python bench/grad_tapes.py [--small] [--repeats N] [--cases mlp,lm,cnn] [--devices cpu,gpu]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _util import cell, interleaved_medians  # noqa: E402
from train import FULL, SMALL, _data, _describe, _mlx_api_models, model_and_optimizer  # noqa: E402

import umx as mx  # noqa: E402
import umx.nn as nn  # noqa: E402
import umx.optimizers as optim  # noqa: E402
from umx.runtime import scheduler  # noqa: E402
from umx.transforms import _grad_tapes  # noqa: E402


def _step(case: str, sizes: dict, data, stream, taped: bool, early: bool, written: bool, builds: list):
    """An eager training step of a fresh model on ``stream`` whose walks run with tapes ``taped`` and the early start
    ``early``, and whose optimizer runs its update as written (op by op, as a user's subclass does) if ``written``,
    else compiled; each call appends to ``builds`` the seconds ``value_and_grad`` took."""
    models = _mlx_api_models(mx, nn)
    model, opt = model_and_optimizer((mx, nn, optim), models, case, sizes, stream)
    if written:
        opt.__class__ = type(f"AsWritten{type(opt).__name__}", (type(opt),), {})
    x, y = (mx.array(a) for a in data)
    loss_and_grad = nn.value_and_grad(model, models.loss_fn)

    def run():
        _grad_tapes.ENABLED = taped
        scheduler.EARLY_START = early
        with mx.stream(stream):
            t = time.perf_counter()
            loss, grads = loss_and_grad(model, x, y)
            builds.append(time.perf_counter() - t)
            opt.update(model, grads)
            mx.eval(loss, model.parameters(), opt.state)

    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--small", action="store_true", help="bench/train.py's small models")
    ap.add_argument("--repeats", type=int, default=21)
    ap.add_argument("--cases", default="mlp,lm,cnn")
    ap.add_argument("--devices", default="cpu,gpu")
    args = ap.parse_args()
    sizes = SMALL if args.small else FULL
    devices = [d for d in args.devices.split(",") if d == "cpu" or (d == "gpu" and mx.is_available(mx.gpu))]
    print(f"eager steps, tapes on and off in turns; median of {args.repeats} after 3 warm-up steps"
          f"{'; --small sizes' if args.small else ''}\n")
    head = (f"{'case':40} {'dev':4} {'step, on':>11} {'step, off':>11} {'on/off':>7} {'build, on':>11} "
            f"{'build, off':>11} {'on/off':>7} {'on + early':>11} {'/off':>6} {'opt written':>11} {'on/it':>6}")
    print(head)
    print("-" * len(head))
    was = _grad_tapes.ENABLED, scheduler.EARLY_START
    variants = {"on": (True, False, False), "off": (False, False, False), "early": (True, True, False),
                "written": (True, False, True)}
    try:
        for dev in devices:
            stream = mx.default_stream(mx.cpu if dev == "cpu" else mx.gpu)
            for case in args.cases.split(","):
                data = _data(case, sizes[case])
                builds: dict = {k: [] for k in variants}
                steps = {k: _step(case, sizes[case], data, stream, *v, builds[k]) for k, v in variants.items()}
                t = interleaved_medians(steps, args.repeats)
                b = {k: statistics.median(v[3:]) for k, v in builds.items()}  # (past the warm-up)
                print(f"{_describe(case, sizes[case]):40} {dev:4} {cell(t['on']):>11} {cell(t['off']):>11} "
                      f"{t['on'] / t['off']:>6.2f}x {cell(b['on']):>11} {cell(b['off']):>11} "
                      f"{b['on'] / b['off']:>6.2f}x {cell(t['early']):>11} {t['early'] / t['off']:>5.2f}x "
                      f"{cell(t['written']):>11} {t['on'] / t['written']:>5.2f}x", flush=True)
    finally:
        _grad_tapes.ENABLED, scheduler.EARLY_START = was
    if not mx.is_available(mx.gpu):
        print("no CUDA GPU here: GPU rows skipped")


if __name__ == "__main__":
    main()
