"""Training against MLX's own CPU build: ``bench/train.py``'s three models (an MLP with SGD, a transformer language
model with AdamW, a CNN with batch norms and Adam), written once against MLX's API, trained for six steps, eager and
compiled with their state as inputs and outputs, from MLX's initial weights in a process with MLX and in one with
umx through the alias: the losses, and the batch norms' running statistics, agree. Skipped where MLX is not
importable."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

ROOT = str(Path(__file__).resolve().parents[1])

_TRAIN = """
import importlib.util, json, sys
from functools import partial
import numpy as np
if sys.argv[1] == "umx":
    import umx.mlx_compat
    umx.mlx_compat.install()
import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
from mlx.utils import tree_flatten

spec = importlib.util.spec_from_file_location("train_models", "bench/train.py")
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)  # (its models take the library as an argument)
folder, out = sys.argv[2], {}
for case in ("mlp", "lm", "cnn"):
    for compiled in (False, True):
        sizes = bench.SMALL[case]
        models = bench._mlx_api_models(mx, nn)
        model, opt = bench.model_and_optimizer((mx, nn, optim), models, case, sizes, mx.default_stream(mx.cpu))
        path = f"{folder}/{case}.npz"
        if sys.argv[1] == "mlx" and not compiled:
            mx.savez(path, **dict(tree_flatten(model.parameters())))
        else:
            model.load_weights([(k, mx.array(v)) for k, v in np.load(path).items()])
        x, y = (mx.array(a) for a in bench._data(case, sizes))
        loss_and_grad = nn.value_and_grad(model, models.loss_fn)
        state = [model.state, opt.state]

        def step(x, y):
            loss, grads = loss_and_grad(model, x, y)
            opt.update(model, grads)
            return loss

        if compiled:  # (as MLX's examples compile a step: the model's and the optimizer's state in and out)
            step = partial(mx.compile, inputs=state, outputs=state)(step)
        name = case + (" compiled" if compiled else "")
        out[name] = []
        for _ in range(6):
            loss = step(x, y)
            mx.eval(loss, state)
            out[name].append(loss.item())
        if case == "cnn":
            out["running statistics" + name[3:]] = np.concatenate([np.array(model.bn1.running_mean),
                                                                   np.array(model.bn2.running_var)]).tolist()
json.dump(out, open(f"{folder}/{sys.argv[1]}.json", "w"))
"""


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("mlx") is None, reason="MLX's own build is the reference")
def test_training_steps_give_mlxs_losses(tmp_path):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    for lib in ("mlx", "umx"):
        done = subprocess.run([sys.executable, "-c", textwrap.dedent(_TRAIN), lib, str(tmp_path)], capture_output=True,
                              text=True, cwd=ROOT, env=env, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
    theirs, ours = (json.loads((tmp_path / f"{lib}.json").read_text()) for lib in ("mlx", "umx"))
    assert sorted(ours) == sorted(theirs)
    for key in theirs:
        np.testing.assert_allclose(ours[key], theirs[key], rtol=1e-5, atol=1e-7, err_msg=key)
    assert theirs["cnn"][-1] < theirs["cnn"][0]  # (the steps train)
