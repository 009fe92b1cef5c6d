"""One optimizer update, one table: umx.optimizers against torch.optim (and MLX's own CPU build, where they
import), measured in the same run.

The parameters are those of an MLP 784-512-512-10 (three weight matrices and three biases, 670K floats) with
fixed random gradients. A umx update is ``optimizer.update(model, grads)`` then an eval of the new parameters and
state; "umx compiled" is the same update in ``mx.compile(..., inputs=state, outputs=state)``, as a compiled
training step holds it; torch's is ``optimizer.step()`` on parameters whose ``.grad`` is set. Muon runs on the
three weight matrices only (torch's Muon takes matrices only). Each on the CPU and, where there is one, the GPU
(the MLX column is CPU only). Times are medians of interleaved rounds (``_util.interleaved_medians``); torch's are
taken apart from the others on the CPU (see ``_util.timed_apart``).

Usage: python bench/optimizers.py [--quick]
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _util import cell as _cell  # noqa: E402
from _util import timed_apart  # noqa: E402
from suite import _try  # noqa: E402

import umx as mx  # noqa: E402
import umx.optimizers as optim  # noqa: E402
from umx.utils import tree_map  # noqa: E402

DIMS = [784, 512, 512, 10]

# (row, umx/MLX optimizer and arguments, torch optimizer and arguments, weights only); None where torch has none
OPTIMIZERS = [
    ("SGD", ("SGD", dict(learning_rate=1e-2)), ("SGD", dict(lr=1e-2)), False),
    ("SGD momentum nesterov", ("SGD", dict(learning_rate=1e-2, momentum=0.9, nesterov=True)),
     ("SGD", dict(lr=1e-2, momentum=0.9, nesterov=True)), False),
    ("RMSprop", ("RMSprop", dict(learning_rate=1e-3)), ("RMSprop", dict(lr=1e-3)), False),
    ("Adagrad", ("Adagrad", dict(learning_rate=1e-2)), ("Adagrad", dict(lr=1e-2)), False),
    ("AdaDelta", ("AdaDelta", dict(learning_rate=1.0)), ("Adadelta", dict(lr=1.0)), False),
    ("Adam", ("Adam", dict(learning_rate=1e-3, bias_correction=True)), ("Adam", dict(lr=1e-3)), False),
    ("AdamW", ("AdamW", dict(learning_rate=1e-3, bias_correction=True)), ("AdamW", dict(lr=1e-3)), False),
    ("Adamax", ("Adamax", dict(learning_rate=1e-3)), ("Adamax", dict(lr=1e-3)), False),
    ("Lion", ("Lion", dict(learning_rate=1e-4, weight_decay=0.1)), None, False),
    ("Adafactor", ("Adafactor", dict()), ("Adafactor", dict()), False),
    ("Muon (weights)", ("Muon", dict(learning_rate=2e-2)), ("Muon", dict(lr=2e-2)), True),
]


class _Model(dict):
    """A dict of parameters with the ``update`` an optimizer calls (what an ``nn.Module`` offers)."""

    def update(self, parameters):
        dict.update(self, parameters)


def _trees(rng, weights_only: bool):
    """NumPy parameters and gradients: ``{"w0": (784, 512), "b0": (512,), ...}``."""
    shapes = {}
    for i, (n_in, n_out) in enumerate(zip(DIMS, DIMS[1:])):
        shapes[f"w{i}"] = (n_in, n_out)
        if not weights_only:
            shapes[f"b{i}"] = (n_out,)
    params = {k: (rng.standard_normal(s) * 0.05).astype(np.float32) for k, s in shapes.items()}
    grads = {k: (rng.standard_normal(s) * 0.01).astype(np.float32) for k, s in shapes.items()}
    return params, grads


def _umx_cases(name, kwargs, params, grads, s):
    """(eager update, compiled update) of umx on stream ``s``."""
    with mx.stream(s):
        grads_m = tree_map(lambda g: mx.add(mx.array(g), 0.0, stream=s), grads)
        mx.eval(grads_m)
        eager_model = _Model(tree_map(lambda p: mx.add(mx.array(p), 0.0, stream=s), params))
        eager_opt = getattr(optim, name)(**kwargs)
        eager_opt.init(eager_model)
        model = _Model(dict(eager_model))
        opt = getattr(optim, name)(**kwargs)
        opt.init(model)
        mx.eval(eager_model, model, eager_opt.state, opt.state)

    def eager():
        with mx.stream(s):
            eager_opt.update(eager_model, grads_m)
            mx.eval(eager_model, eager_opt.state)

    state = [model, opt.state]
    step = mx.compile(lambda: opt.update(model, grads_m), inputs=state, outputs=state)

    def compiled():
        with mx.stream(s):
            step()
            mx.eval(model, opt.state)

    return eager, compiled


def _torch_case(torch, name, kwargs, params, grads, dev):
    tdev = "cuda" if dev == "gpu" else "cpu"
    tensors = []
    for key, p in params.items():
        t = torch.from_numpy(p).to(tdev).requires_grad_(True)
        t.grad = torch.from_numpy(grads[key]).to(tdev)
        tensors.append(t)
    opt = getattr(torch.optim, name)(tensors, **kwargs)
    sync = torch.cuda.synchronize if dev == "gpu" else (lambda: None)

    def step():
        opt.step()
        sync()

    return step


def _mlx_case(mlx_core, mlx_optim, name, kwargs, params, grads):
    model = _Model(tree_map(mlx_core.array, params))
    grads_m = tree_map(mlx_core.array, grads)
    opt = getattr(mlx_optim, name)(**kwargs)
    opt.init(model)
    mlx_core.eval(model, opt.state)

    def step():
        opt.update(model, grads_m)
        mlx_core.eval(model, opt.state)

    return step


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer runs (CI-sized machines)")
    args = ap.parse_args()
    runs = 7 if args.quick else 30
    torch = _try("torch")
    try:
        import mlx.core as mlx_core
        import mlx.optimizers as mlx_optim
    except ImportError:
        mlx_core = mlx_optim = None
    devices = ["cpu"] + (["gpu"] if mx.is_available(mx.gpu) else [])
    cols = ["umx compiled", "torch", "MLX"]
    print(f"umx {mx.__version__}; {os.cpu_count()} CPU cores; devices: {', '.join(devices)}; "
          f"one update of an MLP {'-'.join(map(str, DIMS))}'s parameters; medians\n")
    head = f"{'optimizer':24} {'dev':4} {'umx':>10} " + " ".join(f"{c:>12}" for c in cols) + "  umx/torch"
    print(head)
    print("-" * len(head))
    for dev in devices:
        s = mx.default_stream(mx.cpu if dev == "cpu" else mx.gpu)
        use_torch = torch is not None and (dev == "cpu" or torch.cuda.is_available())
        for row, (name, kwargs), torch_spec, weights_only in OPTIMIZERS:
            params, grads = _trees(np.random.default_rng(0), weights_only)
            eager, compiled = _umx_cases(name, kwargs, params, grads, s)
            fns = {"umx": eager, "umx compiled": compiled}
            if use_torch and torch_spec is not None:
                fns["torch"] = _torch_case(torch, *torch_spec, params, grads, dev)
            if mlx_core is not None and dev == "cpu":
                fns["MLX"] = _mlx_case(mlx_core, mlx_optim, name, kwargs, params, grads)
            times = timed_apart(fns, runs, dev == "cpu")
            t = times.pop("umx")
            cells = " ".join(f"  {_cell(times[c])}" if c in times else f"{'-':>12}" for c in cols)
            ratio = f"{t / times['torch']:8.2f}x" if "torch" in times else "        -"
            print(f"{row:24} {dev:4} {_cell(t)} {cells}  {ratio}")
    if not mx.is_available(mx.gpu):
        print("\nno CUDA GPU here: GPU rows skipped")


if __name__ == "__main__":
    main()
