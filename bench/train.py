"""Training speed, one table: a training step of three models on umx (eager and ``mx.compile``d), torch (eager
and ``torch.compile``d, where that works) and MLX (eager and compiled, where the real ``mlx`` package imports).

Cases (``--small`` shrinks them for a quick run on a small host):

- MLP 784-512-512-10 (ReLU), batch 256, cross-entropy, SGD;
- transformer LM: 4 pre-norm blocks (d_model 512, 8 heads, MLP 2048), causal self-attention, sequence 256,
  batch 16, vocabulary 8192, tied embeddings, AdamW;
- CNN on 32x32 RGB images, batch 128: two blocks of 3x3 convolution, BatchNorm, ReLU and 2x2 max pooling
  (32 then 64 channels), a linear classifier, Adam (skipped with a note where umx has no ``mx.conv2d``).

A step is the forward and backward pass and the optimizer update, and ends with everything computed: umx and
MLX evaluate the loss, the parameters and the optimizer state (``mx.eval(loss, model.parameters(),
optimizer.state)``); torch on a GPU synchronizes. The models are the same in each library (umx's and MLX's are
the very same code, ``_mlx_api_models``), float32, with the same batch every step. On the GPU, float32 products
run at one precision in every library: TF32 by MLX's rule (its CUDA build's and umx's default), torch's
``allow_tf32`` flags set to match, or full float32 in all with ``MLX_ENABLE_TF32=0``. Rows are on the CPU and, where
there is one, the GPU. Times are medians after warm-up; on the CPU each library is timed apart (umx, then MLX,
then torch, a pause after each of the others: one library's idle threads hold the cores for a while and slow the
next), on the GPU umx and MLX in interleaved rounds; ratios are against torch's eager step. Where Numba is
installed, umx's compiled CPU regions (``backends/cpu/jit.py``) are compiled in the warm-up, not while steps are
timed.

On a small host shared with other work, the libraries' thread pools (OpenBLAS's under NumPy, torch's OpenMP)
stall each other and the numbers swing by 10x from run to run; there, ``OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1``
before the command gives every column one thread, and ``--cpu-time`` times the CPU rows in the process's CPU time
(the work done, whoever else holds the cores).

Usage: python bench/train.py [--small] [--repeats N] [--no-torch-compile] [--cases mlp,lm,cnn] [--devices cpu,gpu]
       [--cpu-time] [--graph-stats]
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
import types

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _util import cell as _cell  # noqa: E402
from _util import interleaved_medians  # noqa: E402
from suite import _try  # noqa: E402

import umx as mx  # noqa: E402
import umx.nn as nn  # noqa: E402
import umx.optimizers as optim  # noqa: E402
from umx.backends.cpu import jit as cpu_jit  # noqa: E402
from umx.backends.cuda import tf32_enabled  # noqa: E402

FULL = {
    "mlp": dict(dims=(784, 512, 512, 10), batch=256),
    "lm": dict(layers=4, dims=512, heads=8, context=256, batch=16, vocab=8192),
    "cnn": dict(size=32, channels=32, batch=128, classes=10),
}
SMALL = {
    "mlp": dict(dims=(784, 256, 256, 10), batch=64),
    "lm": dict(layers=2, dims=128, heads=4, context=64, batch=8, vocab=1024),
    "cnn": dict(size=32, channels=8, batch=32, classes=10),
}
COLUMNS = ["umx", "umx compiled", "torch", "torch.compile", "MLX", "MLX compiled"]


def _mlx_api_models(mx, nn):
    """The three models written once against MLX's API: ``mx``/``nn`` are umx's or MLX's modules."""

    class MLP(nn.Module):
        def __init__(self, dims):
            super().__init__()
            self.layers = [nn.Linear(i, o) for i, o in zip(dims[:-1], dims[1:])]

        def __call__(self, x):
            for layer in self.layers[:-1]:
                x = nn.relu(layer(x))
            return self.layers[-1](x)

    class LM(nn.Module):
        def __init__(self, layers, dims, heads, vocab, **_):
            super().__init__()
            self.embedding = nn.Embedding(vocab, dims)
            self.pe = nn.SinusoidalPositionalEncoding(dims)
            self.transformer = nn.TransformerEncoder(layers, dims, heads, norm_first=True)

        def __call__(self, x):
            length = x.shape[1]
            mask = nn.MultiHeadAttention.create_additive_causal_mask(length)
            x = self.embedding(x) + self.pe(mx.arange(length))
            return self.embedding.as_linear(self.transformer(x, mask))

    class CNN(nn.Module):
        def __init__(self, size, channels, classes, **_):
            super().__init__()
            self.conv1 = nn.Conv2d(3, channels, 3, padding=1, bias=False)
            self.bn1 = nn.BatchNorm(channels)
            self.conv2 = nn.Conv2d(channels, 2 * channels, 3, padding=1, bias=False)
            self.bn2 = nn.BatchNorm(2 * channels)
            self.pool = nn.MaxPool2d(2, 2)
            self.classifier = nn.Linear(2 * channels * (size // 4) ** 2, classes)

        def __call__(self, x):
            x = self.pool(nn.relu(self.bn1(self.conv1(x))))
            x = self.pool(nn.relu(self.bn2(self.conv2(x))))
            return self.classifier(x.reshape(x.shape[0], -1))

    def loss_fn(model, x, y):
        logits = model(x)
        return nn.losses.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), reduction="mean")

    return types.SimpleNamespace(MLP=MLP, LM=LM, CNN=CNN, loss_fn=loss_fn)


def _data(case: str, sizes: dict):
    """The batch every library trains on: NumPy ``(inputs, targets)``; the CNN's images are NHWC."""
    rng = np.random.default_rng(0)
    if case == "mlp":
        d = sizes["dims"]
        return (rng.standard_normal((sizes["batch"], d[0]), dtype=np.float32),
                rng.integers(0, d[-1], sizes["batch"]).astype(np.int32))
    if case == "lm":
        tokens = rng.integers(0, sizes["vocab"], (sizes["batch"], sizes["context"] + 1)).astype(np.int32)
        return tokens[:, :-1], tokens[:, 1:]
    return (rng.standard_normal((sizes["batch"], sizes["size"], sizes["size"], 3), dtype=np.float32),
            rng.integers(0, sizes["classes"], sizes["batch"]).astype(np.int32))


def model_and_optimizer(lib, models, case: str, sizes: dict, stream) -> tuple:
    """A fresh model of ``case`` and its optimizer, evaluated on ``stream`` (``lib``: a library's core, nn and
    optimizers; ``models``: ``_mlx_api_models`` of it)."""
    core, _, loptim = lib
    with core.stream(stream):
        core.random.seed(0)
        if case == "mlp":
            model, opt = models.MLP(sizes["dims"]), loptim.SGD(learning_rate=1e-2)
        elif case == "lm":
            model, opt = models.LM(**sizes), loptim.AdamW(learning_rate=1e-4)
        else:
            model, opt = models.CNN(**sizes), loptim.Adam(learning_rate=1e-3)
        opt.init(model.trainable_parameters())
        core.eval(model.parameters(), opt.state)
    return model, opt


def _mlx_api_steps(lib, case: str, sizes: dict, data, stream) -> dict:
    """``{"": eager step, " compiled": compiled step}`` on umx or MLX (``lib``: its core, nn and optimizers)."""
    core, lnn, loptim = lib
    models = _mlx_api_models(core, lnn)
    x, y = (core.array(a) for a in data)
    steps = {}
    for name in ("", " compiled"):
        model, opt = model_and_optimizer(lib, models, case, sizes, stream)
        loss_and_grad = lnn.value_and_grad(model, models.loss_fn)

        def step(x, y, model=model, opt=opt, loss_and_grad=loss_and_grad):
            loss, grads = loss_and_grad(model, x, y)
            opt.update(model, grads)
            return loss

        if name:
            state = [model.state, opt.state]
            step = core.compile(step, inputs=state, outputs=state)

        def run(step=step, model=model, opt=opt):
            with core.stream(stream):
                loss = step(x, y)
                core.eval(loss, model.parameters(), opt.state)

        steps[name] = run
    return steps


def _torch_models(torch):
    tnn, F = torch.nn, torch.nn.functional

    class MLP(tnn.Module):
        def __init__(self, dims):
            super().__init__()
            self.layers = tnn.ModuleList(tnn.Linear(i, o) for i, o in zip(dims[:-1], dims[1:]))

        def forward(self, x):
            for layer in self.layers[:-1]:
                x = F.relu(layer(x))
            return self.layers[-1](x)

    class Block(tnn.Module):
        def __init__(self, dims, heads):
            super().__init__()
            self.heads = heads
            self.ln1, self.ln2 = tnn.LayerNorm(dims), tnn.LayerNorm(dims)
            self.q, self.k, self.v, self.o = (tnn.Linear(dims, dims, bias=False) for _ in range(4))
            self.linear1, self.linear2 = tnn.Linear(dims, 4 * dims), tnn.Linear(4 * dims, dims)

        def forward(self, x):
            b, n, d = x.shape
            y = self.ln1(x)
            q, k, v = (p(y).view(b, n, self.heads, -1).transpose(1, 2) for p in (self.q, self.k, self.v))
            a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            x = x + self.o(a.transpose(1, 2).reshape(b, n, d))
            return x + self.linear2(F.relu(self.linear1(self.ln2(x))))

    class LM(tnn.Module):
        def __init__(self, layers, dims, heads, vocab, context, **_):
            super().__init__()
            self.embedding = tnn.Embedding(vocab, dims)
            self.blocks = tnn.ModuleList(Block(dims, heads) for _ in range(layers))
            self.ln = tnn.LayerNorm(dims)
            half = dims // 2
            freqs = torch.exp(-math.log(1e4) * torch.arange(half) / (half - 1))
            angles = torch.arange(context)[:, None] * freqs[None]
            self.register_buffer("pe", torch.cat([torch.sin(angles), torch.cos(angles)], -1))

        def forward(self, x):
            x = self.embedding(x) + self.pe[: x.shape[1]]
            for block in self.blocks:
                x = block(x)
            return self.ln(x) @ self.embedding.weight.T

    class CNN(tnn.Module):
        def __init__(self, size, channels, classes, **_):
            super().__init__()
            self.conv1 = tnn.Conv2d(3, channels, 3, padding=1, bias=False)
            self.bn1 = tnn.BatchNorm2d(channels)
            self.conv2 = tnn.Conv2d(channels, 2 * channels, 3, padding=1, bias=False)
            self.bn2 = tnn.BatchNorm2d(2 * channels)
            self.classifier = tnn.Linear(2 * channels * (size // 4) ** 2, classes)

        def forward(self, x):
            x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 2)
            x = F.max_pool2d(F.relu(self.bn2(self.conv2(x))), 2)
            return self.classifier(x.flatten(1))

    return types.SimpleNamespace(MLP=MLP, LM=LM, CNN=CNN)


def _torch_steps(torch, case: str, sizes: dict, data, dev: str, compile_: bool) -> dict:
    """``{"torch": step, "torch.compile": step or None}``; a ``torch.compile`` that fails gives None."""
    tdev = "cuda" if dev == "gpu" else "cpu"
    models = _torch_models(torch)
    x, y = data
    if case == "cnn":
        x = x.transpose(0, 3, 1, 2).copy()  # torch's convolutions take NCHW
    x, y = torch.from_numpy(x).to(tdev), torch.from_numpy(y).long().to(tdev)
    sync = torch.cuda.synchronize if dev == "gpu" else (lambda: None)

    def build():
        torch.manual_seed(0)
        if case == "mlp":
            model = models.MLP(sizes["dims"]).to(tdev)
            return model, torch.optim.SGD(model.parameters(), lr=1e-2)
        if case == "lm":
            model = models.LM(**sizes).to(tdev)
            return model, torch.optim.AdamW(model.parameters(), lr=1e-4)
        model = models.CNN(**sizes).to(tdev)
        return model, torch.optim.Adam(model.parameters(), lr=1e-3)

    def make(compiled: bool):
        model, opt = build()

        def loss_of(x, y):
            logits = model(x)
            return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))

        forward = torch.compile(loss_of) if compiled else loss_of

        def step():
            opt.zero_grad(set_to_none=True)
            loss = forward(x, y)
            loss.backward()
            opt.step()
            sync()

        return step

    out = {"torch": make(False), "torch.compile": None}
    if compile_:
        try:
            step = make(True)
            step()  # compiles here, so that a failure shows now
            out["torch.compile"] = step
        except Exception as e:  # no compiler toolchain, an unsupported platform...
            print(f"  (torch.compile failed for {case} on the {dev}: {type(e).__name__}: {str(e)[:120]})")
    return out


def _mlx_libs():
    try:
        import mlx.core as mlx_core
        import mlx.nn as mlx_nn
        import mlx.optimizers as mlx_optim
    except ImportError:
        return None
    return mlx_core, mlx_nn, mlx_optim


def _row(case: str, sizes: dict, dev: str, args, torch, mlx) -> dict:
    """``{column: median seconds or None}`` of one case on one device."""
    data = _data(case, sizes)
    umx_stream = mx.default_stream(mx.cpu if dev == "cpu" else mx.gpu)
    fns = {f"umx{k}": f for k, f in _mlx_api_steps((mx, nn, optim), case, sizes, data, umx_stream).items()}
    clock = time.process_time if args.cpu_time and dev == "cpu" else time.perf_counter

    def mlx_steps() -> dict:
        if mlx is None:
            return {}
        mdev = mlx[0].cpu if dev == "cpu" else mlx[0].gpu
        if not mlx[0].is_available(mdev):
            return {}
        return {f"MLX{k}": f for k, f in _mlx_api_steps(mlx, case, sizes, data, mlx[0].default_stream(mdev)).items()}

    if dev == "cpu":
        # On the CPU, MLX's idle pool threads also hold the cores for a while after its work (umx's MLP step on
        # this repository's 2-core host: 9.2 ms timed apart, 29 ms interleaved with MLX's): MLX's steps are made
        # and timed after umx's, then a pause.
        times = interleaved_medians(fns, args.repeats, clock=clock)  # (warm-up: three untimed calls of each)
        mlx_fns = mlx_steps()
        if mlx_fns:
            times.update(interleaved_medians(mlx_fns, args.repeats, clock=clock))
            time.sleep(0.5)
    else:
        times = interleaved_medians({**fns, **mlx_steps()}, args.repeats, clock=clock)
    if torch is not None and (dev == "cpu" or torch.cuda.is_available()):
        # torch's columns are made and timed after the others, then a pause: after each call its OpenMP threads
        # spin on every core for a while (and torch.compile leaves compiler workers), which slows whatever runs
        # next (see _util.timed_apart)
        steps = _torch_steps(torch, case, sizes, data, dev, not args.no_torch_compile)
        times.update(interleaved_medians({k: f for k, f in steps.items() if f is not None}, args.repeats,
                                         clock=clock))
        if dev == "cpu":
            time.sleep(0.5)
    return {c: times.get(c) for c in COLUMNS}


def _describe(case: str, sizes: dict) -> str:
    if case == "mlp":
        return f"MLP {'-'.join(map(str, sizes['dims']))} b{sizes['batch']} SGD"
    if case == "lm":
        return (f"LM {sizes['layers']}x{sizes['dims']} h{sizes['heads']} L{sizes['context']} b{sizes['batch']} "
                f"V{sizes['vocab']} AdamW")
    return f"CNN {sizes['size']}x{sizes['size']} c{sizes['channels']} b{sizes['batch']} Adam"


def _graph_stats() -> dict:
    """What umx's CUDA graphs have done since start (``graphs.STATS``)."""
    from umx.backends.cuda import graphs

    return graphs.STATS.as_dict()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--small", action="store_true", help="small models and batches, for a quick run on a small host")
    ap.add_argument("--repeats", type=int, default=None, help="timed steps per column (default 15, 21 with --small)")
    ap.add_argument("--no-torch-compile", action="store_true", help="skip torch.compile (slow to compile)")
    ap.add_argument("--cases", default="mlp,lm,cnn", help="comma-separated subset of mlp,lm,cnn")
    ap.add_argument("--devices", default="cpu,gpu", help="comma-separated subset of cpu,gpu (default both)")
    ap.add_argument("--graph-stats", action="store_true",
                    help="after each GPU row, what umx's CUDA graphs did during it (captures, replays, refusals, "
                         "evictions, inputs copied in): a step that captures again at every call shows there")
    ap.add_argument("--cpu-time", action="store_true",
                    help="CPU rows in CPU time of this process (all threads) rather than wall time: steadier on a "
                         "shared host; with one thread per library, the work each does")
    args = ap.parse_args()
    # (the CPU's compiled regions, where Numba is installed, are compiled at their first sighting, in warm-up,
    # rather than on a thread of their own while steps are timed)
    cpu_jit.WAIT = True
    args.repeats = args.repeats or (21 if args.small else 15)
    sizes = SMALL if args.small else FULL
    torch, mlx = _try("torch"), _mlx_libs()
    devices = [d for d in args.devices.split(",") if d == "cpu" or (d == "gpu" and mx.is_available(mx.gpu))]
    threads = {k: os.environ[k] for k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS") if k in os.environ}
    tf32 = tf32_enabled()
    if torch is not None:  # (every library's GPU products at one precision: MLX's and umx's rule, set on torch)
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = tf32
    print(f"umx {mx.__version__}; {os.cpu_count()} CPU cores; devices: {', '.join(devices)}; float32; median step "
          f"of {args.repeats} after 3 warm-up steps{'; --small sizes' if args.small else ''}"
          f"{'; CPU rows in CPU time' if args.cpu_time else ''}"
          + "".join(f"; {k}={v}" for k, v in threads.items()))
    if "gpu" in devices:
        print("GPU float32 products (matmuls, convolutions): " + (
            "TF32 tensor cores in every library (MLX's default; torch's allow_tf32 set to match; MLX_ENABLE_TF32=0 "
            "for full float32)" if tf32 else "full float32 in every library (MLX_ENABLE_TF32=0)"))
    print()
    head = (f"{'case':40} {'dev':4} " + " ".join(f"{c:>13}" for c in COLUMNS) + f" {'umx/torch':>10} "
            f"{'comp/torch':>10}")
    print(head)
    print("-" * len(head))
    notes = []
    for dev in devices:
        if dev == "gpu":
            time.sleep(5)  # (see suite.main: a host just out of all-core work runs the GPU rows slower)
        for case in args.cases.split(","):
            if case == "cnn" and not hasattr(mx, "conv2d"):
                notes.append("CNN rows skipped: umx has no mx.conv2d yet")
                continue
            before = _graph_stats() if args.graph_stats and dev == "gpu" else None
            times = _row(case, sizes[case], dev, args, torch, mlx)
            cells = " ".join(f"{_cell(times[c]):>13}" if times[c] else f"{'n/a':>13}" for c in COLUMNS)
            base = times["torch"]
            ratios = " ".join(f"{times[c] / base:>9.2f}x" if base and times[c] else f"{'-':>10}"
                              for c in ("umx", "umx compiled"))
            print(f"{_describe(case, sizes[case]):40} {dev:4} {cells} {ratios}", flush=True)
            if before is not None:
                after = _graph_stats()
                print("  umx's CUDA graphs during the row: " + ", ".join(f"{k} {after[k] - before[k]}"
                                                                        for k in after), flush=True)
    for note in dict.fromkeys(notes):
        print(note)
    if not mx.is_available(mx.gpu):
        print("no CUDA GPU here: GPU rows skipped")


if __name__ == "__main__":
    main()
