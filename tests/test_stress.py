"""Differential stress test: random programs run by umx (on several streams, from several threads) and by
NumPy.

Each program draws random ops from the public op set (elementwise with arrays and Python scalars, reductions,
reshapes and transposes, matmul, indexing, where, concatenate), random shapes and dtypes, and a random stream
per op among several CPU streams (and the GPU when there is one). The NumPy reference mirrors MLX's dtype
rules by casting its inputs to the dtype umx reports for each result, so that both sides compute in the same
precision.

``UMX_STRESS_PROGRAMS`` sets the number of programs (``make stress`` runs 5000). A failure names the
program's seed: ``_run_program(seed)`` replays it alone.
"""

from __future__ import annotations

import _thread
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from conftest import assert_stored

import umx as mx
from umx.dtypes import round_bf16

N_PROGRAMS = int(os.environ.get("UMX_STRESS_PROGRAMS", "200"))
N_THREADS = 4
OPS_PER_PROGRAM = 10
SEED = 20240611

DTYPES = [mx.bool_, mx.uint8, mx.int8, mx.int32, mx.uint32, mx.int64, mx.float16, mx.bfloat16, mx.float32]
FLOATS = [mx.float16, mx.bfloat16, mx.float32]
_TOL = {mx.float16: 2e-2, mx.bfloat16: 5e-2, mx.float32: 1e-4}

_streams_lock = threading.Lock()
_streams: list = []


def streams() -> list:
    """Several CPU streams (the default one and three new ones), and the GPU's default stream when present."""
    with _streams_lock:
        if not _streams:
            _streams.extend([mx.default_stream(mx.cpu)] + [mx.new_stream(mx.cpu) for _ in range(3)])
            if mx.is_available(mx.gpu):
                _streams.extend([mx.default_stream(mx.gpu), mx.new_stream(mx.gpu)])
    return _streams


def ref(x: np.ndarray, d) -> np.ndarray:
    """``x`` cast to umx dtype ``d``, as NumPy reads it back (bfloat16: float32 rounded to bfloat16)."""
    with np.errstate(all="ignore"):
        out = np.asarray(x).astype(d.compute)
    return round_bf16(np, out) if d is mx.bfloat16 else out


class Program:
    """A random program: a pool of umx arrays that each step extends by one op.

    Every step records how NumPy computes its result from the step's inputs. After one ``eval`` of the whole
    program, each step is checked against NumPy applied to umx's own values of its inputs: a wrong value is
    caught
    at the op that made it, and rounding differences are never amplified down the chain.
    """

    def __init__(self, seed: int):
        self.seed = seed
        self.rng = np.random.default_rng(seed)
        self.pool: list = []
        self.steps: list = []  # (result, reference function of NumPy inputs, inputs, description)

    # -- random choices
    # ---------------------------------------------------------------------------------------
    def stream(self):
        ss = streams()
        return ss[self.rng.integers(len(ss))]

    def shape(self) -> tuple:
        nd = int(self.rng.integers(0, 4))
        return tuple(int(s) for s in self.rng.integers(0, 5, size=nd))

    def leaf(self, shape=None, dtype=None):
        shape = self.shape() if shape is None else shape
        d = DTYPES[self.rng.integers(len(DTYPES))] if dtype is None else dtype
        if d is mx.bool_:
            v = self.rng.random(shape) < 0.5
        elif d.kind in "iu":
            v = self.rng.integers(0 if d.kind == "u" else -5, 6, size=shape)
        else:
            v = np.asarray(self.rng.standard_normal(shape) * 3)
            v[self.rng.random(shape) < 0.05] = np.nan if self.rng.random() < 0.5 else np.inf
            v = v.astype(np.float32)
        x = mx.array(v, dtype=d)
        self.steps.append((x, lambda: ref(v, d), (), f"leaf{shape}{d.name}"))
        return x

    def pick(self):
        return self.pool[self.rng.integers(len(self.pool))]

    def emit(self, y, fn, inputs: tuple, desc: str):
        self.steps.append((y, fn, inputs, f"{desc}->{y.shape}{y.dtype.name}"))
        self.pool.append(y)

    # -- steps
    # ------------------------------------------------------------------------------------------------
    def step(self) -> None:
        kind = self.rng.choice(
            ["unary", "binary", "scalar", "reduce", "shape", "matmul", "index", "where", "concat", "cast"],
            p=[0.14, 0.18, 0.1, 0.12, 0.12, 0.06, 0.1, 0.06, 0.06, 0.06],
        )
        getattr(self, "op_" + kind)()

    def op_unary(self):
        x = self.pick()
        name = str(
            self.rng.choice(
                [
                    "abs",
                    "negative",
                    "square",
                    "exp",
                    "sin",
                    "tanh",
                    "sqrt",
                    "log1p",
                    "floor",
                    "isnan",
                    "logical_not",
                    "sigmoid",
                ]
            )
        )
        if x.dtype is mx.bool_ and name in ("negative", "abs", "square", "floor"):
            name = "logical_not"
        if x.dtype.kind == "u" and name == "negative":
            name = "abs"
        y = getattr(mx, name)(x, stream=self.stream())
        d = y.dtype

        def fn(r):
            if name in ("isnan", "logical_not"):
                return getattr(np, name)(r)
            r = ref(r, d)
            if name == "sigmoid":
                return 1 / (1 + np.exp(-r.astype(np.float64)))
            return getattr(np, {"abs": "absolute"}.get(name, name))(r)

        self.emit(y, fn, (x,), f"{name}{x.shape}{x.dtype.name}")

    _BINARY = [
        "add",
        "subtract",
        "multiply",
        "maximum",
        "minimum",
        "divide",
        "equal",
        "less",
        "greater_equal",
        "logical_and",
        "arctan2",
    ]

    def op_binary(self):
        x, y = self.pick(), self.pick()
        try:
            np.broadcast_shapes(x.shape, y.shape)
        except ValueError:
            y = self.leaf(shape=x.shape[self.rng.integers(0, len(x.shape) + 1) :])
        name = str(self.rng.choice(self._BINARY))
        if name == "subtract" and (x.dtype is mx.bool_ or y.dtype is mx.bool_):
            name = "add"
        z = getattr(mx, name)(x, y, stream=self.stream())
        cd = {
            "equal": mx.result_type(x, y),
            "less": mx.result_type(x, y),
            "logical_and": mx.bool_,
            "greater_equal": mx.result_type(x, y),
        }.get(name, z.dtype)
        self.emit(
            z,
            lambda rx, ry: getattr(np, name)(ref(rx, cd), ref(ry, cd)),
            (x, y),
            f"{name}{x.shape}{x.dtype.name},{y.shape}{y.dtype.name}",
        )

    def op_scalar(self):
        x = self.pick()
        s = [True, 2, -3, 0.5, 2.5][self.rng.integers(5)]
        if s == -3 and x.dtype.kind == "u":
            s = 2  # a negative int does not fit an unsigned array: MLX refuses it (ValueError), as umx does
        name = str(self.rng.choice(["add", "multiply", "maximum", "less", "divide"]))
        if isinstance(s, bool) and name == "divide":
            name = "add"
        left = bool(self.rng.random() < 0.5)
        z = (
            getattr(mx, name)(x, s, stream=self.stream())
            if left
            else getattr(mx, name)(s, x, stream=self.stream())
        )
        cd = mx.result_type(x, s) if name == "less" else z.dtype
        weak = mx.result_type(x, s)  # a Python scalar takes the array's dtype first, as in MLX

        def fn(rx):
            rs = ref(ref(np.array(s), weak), cd)
            return getattr(np, name)(ref(rx, cd), rs) if left else getattr(np, name)(rs, ref(rx, cd))

        self.emit(z, fn, (x,), f"{name}{x.shape}{x.dtype.name},{s!r},left={left}")

    def op_reduce(self):
        x = self.pick()
        name = str(self.rng.choice(["sum", "max", "min", "mean", "any", "prod"]))
        if x.size == 0 and name in ("max", "min"):
            name = "sum"
        axis = None
        if x.ndim and self.rng.random() < 0.7:
            k = int(self.rng.integers(1, x.ndim + 1))
            axis = [
                int(a) - (x.ndim if self.rng.random() < 0.3 else 0)
                for a in self.rng.choice(x.ndim, size=k, replace=False)
            ]
        keep = bool(self.rng.random() < 0.3)
        y = getattr(mx, name)(x, axis=axis, keepdims=keep, stream=self.stream())
        d = y.dtype
        ax = None if axis is None else tuple(axis)

        def fn(r):
            if name in ("sum", "prod"):
                return getattr(np, name)(ref(r, d), axis=ax, keepdims=keep, dtype=ref(r, d).dtype)
            if name == "any":
                return np.any(r, axis=ax, keepdims=keep)
            if name == "mean":
                return np.mean(ref(r, d).astype(np.float64), axis=ax, keepdims=keep)
            return getattr(np, name)(r, axis=ax, keepdims=keep)

        self.emit(y, fn, (x,), f"{name}{x.shape}{x.dtype.name},axis={axis},keepdims={keep}")

    def op_shape(self):
        x = self.pick()
        st = self.stream()
        c = self.rng.integers(4)
        if c == 0 and x.ndim:
            axes = [int(a) for a in self.rng.permutation(x.ndim)]
            self.emit(
                mx.transpose(x, axes, stream=st),
                lambda r: np.transpose(r, axes),
                (x,),
                f"transpose{x.shape},{axes}",
            )
        elif c == 1:
            shape = [x.size] if self.rng.random() < 0.3 else list(x.shape[::-1])
            if x.size and len(shape) > 1 and 0 not in shape[1:] and self.rng.random() < 0.5:
                shape = [-1] + shape[1:]
            self.emit(
                mx.reshape(x, shape, stream=st), lambda r: r.reshape(shape), (x,), f"reshape{x.shape},{shape}"
            )
        elif c == 2:
            ax = int(self.rng.integers(-x.ndim - 1, x.ndim + 1))
            self.emit(
                mx.expand_dims(x, ax, stream=st),
                lambda r: np.expand_dims(r, ax),
                (x,),
                f"expand_dims{x.shape},{ax}",
            )
        else:
            shape = (
                tuple(int(s) for s in self.rng.integers(1, 3, size=int(self.rng.integers(0, 2)))) + x.shape
            )
            self.emit(
                mx.broadcast_to(x, shape, stream=st),
                lambda r: np.broadcast_to(r, shape),
                (x,),
                f"broadcast_to{x.shape},{shape}",
            )

    def op_matmul(self):
        x = self.pick()
        if x.ndim == 0:
            x = self.leaf(shape=(2, 3))
        if x.dtype is mx.bool_:
            x = x.astype(mx.int32)
        k = x.shape[-1]
        y = self.leaf(
            shape=(k, int(self.rng.integers(0, 4))) if self.rng.random() < 0.8 else (k,),
            dtype=[mx.float32, mx.int32, mx.float16][self.rng.integers(3)],
        )
        z = mx.matmul(x, y, stream=self.stream())
        d = z.dtype
        self.emit(
            z,
            lambda rx, ry: np.matmul(ref(rx, d), ref(ry, d)),
            (x, y),
            f"matmul{x.shape}{x.dtype.name},{y.shape}{y.dtype.name}",
        )

    def op_index(self):
        x = self.pick()
        if x.ndim == 0:
            return
        key = []
        n_idx = int(self.rng.integers(0, 4))  # index arrays must broadcast together: one length for all
        for s in x.shape[: int(self.rng.integers(1, x.ndim + 1))]:
            c = self.rng.integers(4)
            if c == 0 and s:
                key.append(int(self.rng.integers(-s, s)))
            elif c == 1:
                lo, hi = sorted(int(v) for v in self.rng.integers(-s - 1, s + 2, size=2))
                key.append(slice(lo, hi, int(self.rng.choice([1, 2, -1]))))
            elif c == 2 and s:
                key.append(mx.array(self.rng.integers(-s, s, size=n_idx)))
            else:
                key.append(slice(None))
        if self.rng.random() < 0.2:
            key.insert(int(self.rng.integers(len(key) + 1)), None)
        key = tuple(key)
        rkey = tuple(np.array(k) if isinstance(k, mx.array) else k for k in key)
        self.emit(x[key], lambda r: r[rkey], (x,), f"getitem{x.shape},{rkey}")

    def op_where(self):
        x, y = self.pick(), self.pick()
        c = self.leaf(shape=x.shape[self.rng.integers(0, len(x.shape) + 1) :], dtype=mx.bool_)
        try:
            np.broadcast_shapes(x.shape, y.shape, c.shape)
        except ValueError:
            y = 1.5
        z = mx.where(c, x, y, stream=self.stream())
        d = z.dtype
        if isinstance(y, float):
            self.emit(
                z,
                lambda rc, rx: np.where(rc, ref(rx, d), ref(np.array(y), d)),
                (c, x),
                f"where{c.shape},{x.shape}{x.dtype.name},{y}",
            )
        else:
            self.emit(
                z,
                lambda rc, rx, ry: np.where(rc, ref(rx, d), ref(ry, d)),
                (c, x, y),
                f"where{c.shape},{x.shape}{x.dtype.name},{y.shape}{y.dtype.name}",
            )

    def op_concat(self):
        x = self.pick()
        if x.ndim == 0:
            return
        ax = int(self.rng.integers(-x.ndim, x.ndim))
        shape = list(x.shape)
        shape[ax] = int(self.rng.integers(0, 3))
        y = self.leaf(shape=tuple(shape))
        z = mx.concatenate([x, y], axis=ax, stream=self.stream())
        d = z.dtype
        self.emit(
            z,
            lambda rx, ry: np.concatenate([ref(rx, d), ref(ry, d)], axis=ax),
            (x, y),
            f"concatenate{x.shape}{x.dtype.name},{y.shape}{y.dtype.name},axis={ax}",
        )

    def op_cast(self):
        x = self.pick()
        d = DTYPES[self.rng.integers(len(DTYPES))]
        if x.dtype.kind == "f" and d.kind in "iu":  # float -> int of NaN and out-of-range values is undefined
            return
        self.emit(
            x.astype(d, stream=self.stream()), lambda r: r, (x,), f"astype{x.shape}{x.dtype.name}->{d.name}"
        )


def _check(got, exp, what: str) -> None:
    g = np.asarray(got)
    exp = ref(exp, got.dtype)
    assert g.shape == exp.shape, f"{what}: shape {g.shape} != {exp.shape}"
    assert_stored(got, what)
    if got.dtype.kind in "biu":
        np.testing.assert_array_equal(g, exp, err_msg=what)
    else:
        tol = _TOL[got.dtype]
        np.testing.assert_allclose(
            g.astype(np.float64), exp.astype(np.float64), rtol=tol, atol=tol, equal_nan=True, err_msg=what
        )


def _run_program(seed: int, shared: Program | None = None) -> None:
    p = Program(seed)
    for _ in range(2):
        p.pool.append(p.leaf())
    if shared is not None:  # arrays of a graph that other threads evaluate at the same time
        p.pool.extend(shared.pool[i] for i in p.rng.choice(len(shared.pool), size=2))
    for _ in range(OPS_PER_PROGRAM):
        p.step()
        if p.rng.random() < 0.1:  # evaluate an intermediate early: later ops then read evaluated data
            mx.async_eval(p.pool[-1]) if p.rng.random() < 0.5 else mx.eval(p.pool[-1])
    mx.eval([y for y, *_ in p.steps])
    for i, (y, fn, inputs, desc) in enumerate(p.steps):
        with np.errstate(all="ignore"):
            exp = fn(*[np.asarray(x) for x in inputs])
        _check(y, exp, f"program seed={seed}, step {i}: {desc}")


def test_random_programs_match_numpy():
    shared = Program(SEED - 1)  # built here, unevaluated; every program reads some of it
    for _ in range(3):
        shared.pool.append(shared.leaf())
    for _ in range(30):
        shared.step()
    seeds = [SEED + i for i in range(N_PROGRAMS)]
    with ThreadPoolExecutor(N_THREADS) as pool:
        for f in [pool.submit(_run_program, s, shared) for s in seeds]:
            f.result()
    for i, (y, fn, inputs, desc) in enumerate(shared.steps):
        with np.errstate(all="ignore"):
            _check(y, fn(*[np.asarray(x) for x in inputs]), f"shared program, step {i}: {desc}")


def test_shared_lazy_graph_across_programs():
    """Threads extend and evaluate one shared, unevaluated graph at once: every thread sees the same
    values."""
    rng = np.random.default_rng(SEED)
    ss = streams()
    base = rng.standard_normal((8, 8)).astype(np.float32)
    x = mx.array(base)
    refs = [base]
    shared = [x]
    for i in range(20):
        shared.append(mx.tanh(shared[-1] @ x, stream=ss[i % len(ss)]) + 1)
        refs.append(np.tanh(refs[-1] @ base) + 1)

    def worker(k: int):
        local = mx.sum(shared[-1 - k % 5] * k, axis=0, stream=ss[k % len(ss)])
        mx.eval(local)
        np.testing.assert_allclose(
            np.asarray(local), np.sum(refs[-1 - k % 5] * k, axis=0), rtol=1e-4, atol=1e-4
        )

    with ThreadPoolExecutor(8) as pool:
        for f in [pool.submit(worker, k) for k in range(32)]:
            f.result()


@pytest.mark.skipif(not mx.is_available(mx.gpu), reason="CUDA graphs need a GPU")
def test_programs_run_again_replay_as_cuda_graphs(monkeypatch):
    """Each program three times over, from new arrays of the same values, each run followed by two fixed GPU
    layers: the GPU's batches are seen, captured, then replayed as CUDA graphs (where their primitives allow), and
    every run matches NumPy. Which batches a random program forms depends on its CPU streams' timing; the layers,
    evaluated alone, form the same batch every time, so on one thread it is replayed by its third run."""
    from umx.backends.cuda import graphs

    monkeypatch.setattr(graphs, "MIN_TASKS", 2)  # (short batches too: the programs are small)
    rng = np.random.default_rng(SEED)
    ws = [rng.standard_normal(shape).astype(np.float32) for shape in ((24, 16), (16, 8))]
    x = rng.standard_normal((8, 24)).astype(np.float32)
    gpu = mx.new_stream(mx.gpu)  # (its own stream: the programs' work never joins the layers' batch)
    wm = [mx.array(w) for w in ws]

    def layers() -> None:  # (two products: a batch of several tasks however the epilogues fuse)
        y = mx.matmul(mx.maximum(mx.matmul(mx.array(x), wm[0], stream=gpu), 0.0, stream=gpu), wm[1], stream=gpu)
        np.testing.assert_allclose(np.array(y), np.maximum(x @ ws[0], 0) @ ws[1], rtol=1e-4, atol=1e-4)

    def thrice(seed: int) -> None:
        for _ in range(3):
            _run_program(seed)
            layers()

    before = graphs.STATS.replays
    thrice(SEED + 2 * 10**6)
    assert graphs.STATS.replays > before
    # then from several threads at once: their batches share the GPU streams, and so the streams' graphs
    seeds = range(SEED + 2 * 10**6 + 1, SEED + 2 * 10**6 + max(N_PROGRAMS // 4, 20))
    with ThreadPoolExecutor(N_THREADS) as pool:
        for f in [pool.submit(thrice, s) for s in seeds]:
            f.result()


@pytest.mark.parametrize("seed", [SEED + 10**6])
def test_replay_one_program(seed):
    """A single program on the caller's thread (the replay path used to debug a failing seed)."""
    _run_program(seed)


@pytest.mark.skipif(N_PROGRAMS < 1000, reason="stress only (make stress): interrupts fired at random moments")
def test_random_sigint_during_many_evals():
    """Interrupts fired at random moments, anywhere in eval (planning, waiting): every array still evaluates
    to
    the right value afterwards."""
    ss = streams()
    rng = np.random.default_rng(1)
    done = threading.Event()
    kept = []

    def fire():
        while not done.is_set():
            time.sleep(float(rng.uniform(0.0005, 0.003)))
            if not done.is_set():
                _thread.interrupt_main()

    t = threading.Thread(target=fire)
    t.start()
    interrupted = 0
    try:
        for i in range(300):
            try:
                x = mx.arange(8)
                for k in range(6):
                    x = mx.add(x, k, stream=ss[(i + k) % len(ss)])
                kept.append((i, x))
                mx.eval(x)
            except KeyboardInterrupt:
                interrupted += 1
    finally:
        done.set()
        while t.is_alive():  # absorb an interrupt fired just before the flag was seen
            try:
                t.join()
            except KeyboardInterrupt:
                pass
    try:
        time.sleep(0.01)
    except KeyboardInterrupt:
        pass
    for _, x in kept:
        assert x.tolist() == list(range(15, 23))
