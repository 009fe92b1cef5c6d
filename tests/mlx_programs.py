"""Random programs for the differential test against MLX (tests/test_mlx_differential.py).

A program is a description: a list of :class:`Step` ``(op, args, kwargs)`` that :func:`call` interprets
against any module with MLX's API (``umx`` or ``mlx.core``). Arguments are plain Python values, NumPy arrays
(given to ``lib.array``), or markers resolved per library: ``Ref(i)`` (the program's i-th array), ``DT(name)``
(a dtype), ``Call`` (a nested call, e.g. a random key or an index array) and ``Fn`` (a small function for the
transforms, whose steps name its arguments and earlier results with ``Ref`` too).

:class:`Program` draws the steps from a seed, family by family, and runs each on umx as it is drawn (lazily: the
shapes and dtypes umx reports choose the next steps), so the seed alone replays a program.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

import umx as mx

DTYPES = ["bool_", "uint8", "uint16", "uint32", "uint64", "int8", "int16", "int32", "int64",
          "float16", "bfloat16", "float32", "float64", "complex64"]
INTS = ["uint8", "uint16", "uint32", "uint64", "int8", "int16", "int32", "int64"]
FLOATS = ["float16", "bfloat16", "float32", "float64"]
_NP = {"bool_": np.bool_, "bfloat16": np.float32, "complex64": np.complex64}

UNARY = ["abs", "negative", "square", "sqrt", "rsqrt", "exp", "expm1", "log", "log1p", "log2", "log10", "sin",
         "cos", "tan", "arcsin", "arccos", "arctan", "sinh", "cosh", "tanh", "arcsinh", "arccosh", "arctanh",
         "sigmoid", "floor", "ceil", "round", "sign", "reciprocal", "erf", "erfinv", "logical_not", "isnan",
         "isinf", "isfinite", "isposinf", "isneginf", "conjugate", "real", "imag", "degrees", "radians",
         "bitwise_invert", "stop_gradient"]
BINARY = ["add", "subtract", "multiply", "divide", "power", "maximum", "minimum", "floor_divide", "remainder",
          "arctan2", "logaddexp", "equal", "not_equal", "less", "less_equal", "greater", "greater_equal",
          "logical_and", "logical_or", "bitwise_and", "bitwise_or", "bitwise_xor", "left_shift", "right_shift"]
OPERATORS = ["__add__", "__radd__", "__sub__", "__rsub__", "__mul__", "__rmul__", "__truediv__", "__rtruediv__",
             "__floordiv__", "__mod__", "__pow__", "__rpow__", "__lt__", "__ge__", "__eq__", "__ne__", "__and__",
             "__or__", "__xor__", "__lshift__", "__rshift__"]
REDUCE = ["sum", "prod", "max", "min", "mean", "var", "std", "logsumexp", "argmax", "argmin", "all", "any"]
SCANS = ["cumsum", "cumprod", "cummax", "cummin", "logcumsumexp"]


@dataclass(frozen=True)
class Ref:
    """The i-th array of the program (or, inside a ``Fn``, of the function's arguments and results)."""
    i: int


@dataclass(frozen=True)
class DT:
    """A dtype, by name (``bool_`` for bool)."""
    name: str


@dataclass(frozen=True)
class Call:
    """A nested call, resolved before the step's own (``lib.random.key(3)``, ``lib.array(indices)``)."""
    op: str
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Fn:
    """A function of ``nargs`` arrays: its steps read ``Ref`` 0.. as arguments, then earlier steps' results;
    it returns the last step's result."""
    nargs: int
    steps: tuple


@dataclass
class Step:
    """One op of a program. ``check`` names how results compare (see the test's ``compare``); ``stream`` says
    whether the op takes ``stream=``."""
    op: str
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)
    family: str = ""
    check: str = "values"
    stream: bool = True
    outputs: list = field(default_factory=list)  # the program arrays it made (umx side)

    def __repr__(self) -> str:
        parts = [_show(a) for a in self.args] + [f"{k}={_show(v)}" for k, v in self.kwargs.items()]
        return f"{self.op}({', '.join(parts)})"


def _show(v) -> str:
    if isinstance(v, np.ndarray):
        return f"np.array({v.tolist()!r}, {v.dtype})" if v.size <= 24 else f"<{v.dtype}{v.shape}>"
    if isinstance(v, Ref):
        return f"r{v.i}"
    if isinstance(v, DT):
        return v.name
    if isinstance(v, Call):
        return repr(Step(v.op, v.args, v.kwargs))
    if isinstance(v, Fn):
        return "lambda: [" + "; ".join(f"r{v.nargs + k} = {s!r}" for k, s in enumerate(v.steps)) + "]"
    if isinstance(v, (list, tuple)):
        inner = ", ".join(_show(x) for x in v)
        return f"[{inner}]" if isinstance(v, list) else f"({inner}{',' if len(v) == 1 else ''})"
    if isinstance(v, slice):
        return f"{_show(v.start) if v.start is not None else ''}:{_show(v.stop) if v.stop is not None else ''}" + (
            f":{v.step}" if v.step is not None else "")
    return repr(v)


# -- interpreter ---------------------------------------------------------------------------------------------------
def resolve(lib, v, env):
    """``v`` with its markers replaced by ``lib``'s objects; ``env`` maps ``Ref`` numbers to arrays."""
    if isinstance(v, Ref):
        return env[v.i]
    if isinstance(v, DT):
        return getattr(lib, v.name)
    if isinstance(v, Call):
        return call(lib, v.op, v.args, v.kwargs, env)
    if isinstance(v, Fn):
        return make_fn(lib, v)
    if isinstance(v, np.ndarray):
        return v
    if isinstance(v, tuple):
        return tuple(resolve(lib, x, env) for x in v)
    if isinstance(v, list):
        return [resolve(lib, x, env) for x in v]
    if isinstance(v, dict):
        return {k: resolve(lib, x, env) for k, x in v.items()}
    if isinstance(v, slice):
        return slice(*(resolve(lib, x, env) for x in (v.start, v.stop, v.step)))
    return v


def call(lib, op: str, args: tuple, kwargs: dict, env, stream=None):
    """Run one op of ``lib``: a dotted name (``linalg.qr``), a method (``.astype``), ``[]`` (indexing),
    ``setitem``, ``at.<method>`` (``x.at[i].add(v)``) or ``apply`` (call the first argument on the rest)."""
    a = resolve(lib, args, env)
    k = resolve(lib, kwargs, env)
    if op == "[]":
        return a[0][a[1]]
    if op == "setitem":
        out = lib.array(a[0])
        out[a[1]] = a[2]
        return out
    if op.startswith("at."):
        return getattr(a[0].at[a[1]], op[3:])(*a[2:])
    if op == "apply":
        return a[0](*a[1:])
    if stream is not None:
        k["stream"] = stream
    if op.startswith("."):
        return getattr(a[0], op[1:])(*a[1:], **k)
    fn = lib
    for part in op.split("."):
        fn = getattr(fn, part)
    return fn(*a, **k)


def make_fn(lib, fn: Fn):
    """``fn`` as a Python function of ``lib``'s arrays."""
    def run(*xs):
        env = list(xs)
        for s in fn.steps:
            env.append(call(lib, s.op, s.args, s.kwargs, env))
        return env[-1]
    return run


def flatten(out) -> list:
    """The arrays of an op's result, in order (a tuple or list of arrays, nested, or one array)."""
    if isinstance(out, (list, tuple)):
        return [a for o in out for a in flatten(o)]
    return [out]


# -- programs ------------------------------------------------------------------------------------------------------
class Program:
    """A random program drawn from ``seed``, run on umx as it is drawn.

    ``steps`` holds every step; ``arrays`` the umx arrays they made (a ``Ref`` numbers them); ``errors`` maps a
    step's position to the exception umx raised at the call.
    """

    FAMILIES = {"unary": 10, "binary": 10, "scalar": 8, "reduce": 9, "scan": 4, "shape": 10, "index": 8,
                "products": 5, "sort": 4, "clip": 2, "astype": 6, "softmax": 2, "intdiv": 4, "linalg": 3,
                "random": 4, "transform": 6, "creation": 3, "misc": 5}

    def __init__(self, seed: int, stream=None, n_steps: int = 8, families: tuple | None = None):
        self.seed = seed
        self.rng = np.random.default_rng(seed)
        self.stream = stream
        self.steps: list[Step] = []
        self.arrays: list = []
        self.errors: dict[int, BaseException] = {}
        names = list(families or self.FAMILIES)
        weights = np.array([self.FAMILIES[n] for n in names], float)
        for _ in range(n_steps):
            family = names[self.rng.choice(len(names), p=weights / weights.sum())]
            getattr(self, "gen_" + family)()

    # -- running ---------------------------------------------------------------------------------------------------
    def emit(self, op, args=(), kwargs=None, family="", check="values", stream=True):
        """Record a step and run it on umx; returns the ``Ref`` of its first array, or None if umx raised."""
        step = Step(op, tuple(args), dict(kwargs or {}), family or op, check, stream)
        self.steps.append(step)
        s = None
        if stream and self.stream is not None:
            # float64 and linear algebra run on the CPU in MLX; umx follows on any device
            s = mx.cpu if family == "linalg" or "float64" in repr(step) else self.stream
        try:
            out = call(mx, op, step.args, step.kwargs, self.arrays, s)
        except Exception as e:  # noqa: BLE001 - any exception counts: the test compares raising with MLX
            self.errors[len(self.steps) - 1] = e
            return None
        for a in flatten(out):
            step.outputs.append(len(self.arrays))
            self.arrays.append(a)
        return Ref(step.outputs[0]) if step.outputs else None

    # -- random choices --------------------------------------------------------------------------------------------
    def choice(self, seq):
        return seq[int(self.rng.integers(len(seq)))]

    def chance(self, p: float) -> bool:
        return bool(self.rng.random() < p)

    def shape(self, max_ndim: int = 3) -> tuple:
        nd = int(self.rng.integers(0, max_ndim + 1))
        return tuple(0 if self.chance(0.06) else int(self.rng.integers(1, 5)) for _ in range(nd))

    def dtype(self, among=None) -> str:
        return self.choice(among or DTYPES)

    def data(self, shape, dtype: str, special: float | None = None) -> np.ndarray:
        """Values of ``dtype``: small integers (now and then the type's extremes), floats with, now and then,
        NaN, infinities and signed zeros."""
        r = self.rng
        if dtype == "bool_":
            return r.random(shape) < 0.5
        if dtype in INTS:
            info = np.iinfo(dtype)
            v = r.integers(max(info.min, -6), 7, size=shape).astype(dtype)
            if self.chance(0.08) and v.size:
                v.flat[r.integers(v.size)] = info.max if self.chance(0.5) else info.min
            return v
        v = r.standard_normal(shape) * self.choice([1.0, 3.0, 0.3])
        if dtype == "complex64":
            v = v + 1j * r.standard_normal(shape)
        v = np.asarray(v).astype(_NP.get(dtype, dtype))
        if (self.chance(0.15) if special is None else special) and v.size:
            for _ in range(int(r.integers(1, 3))):
                v.flat[r.integers(v.size)] = self.choice([np.nan, np.inf, -np.inf, 0.0, -0.0])
        return v

    def leaf(self, shape=None, dtype=None, data=None) -> Ref | None:
        shape = self.shape() if shape is None else tuple(shape)
        dtype = dtype or self.dtype()
        data = self.data(shape, dtype) if data is None else data
        return self.emit("array", (data,), {"dtype": DT(dtype)}, family="leaf", stream=False)

    def info(self, ref: Ref):
        a = self.arrays[ref.i]
        return tuple(a.shape), a.dtype.name.replace("bool", "bool_")

    def pick(self, pred=None, make=None) -> Ref:
        """An array of the program that ``pred(shape, dtype)`` accepts (a new leaf half the time, or when none
        is)."""
        refs = [Ref(i) for i in range(len(self.arrays)) if pred is None or pred(*self.info(Ref(i)))]
        if refs and self.chance(0.5):
            return self.choice(refs)
        if make is not None:
            return make()
        shape, dtype = self.shape(), self.dtype()
        while pred is not None and not pred(shape, dtype):
            shape, dtype = self.shape(), self.dtype()
        return self.leaf(shape, dtype)

    def axis(self, ndim: int, allow_none=True):
        if ndim == 0 or (allow_none and self.chance(0.25)):
            return None
        return int(self.rng.integers(-ndim, ndim))

    def broadcastable(self, shape) -> tuple:
        """A shape that broadcasts with ``shape``: a suffix of it with some sizes set to 1."""
        tail = list(shape[int(self.rng.integers(0, len(shape) + 1)):])
        return tuple(1 if self.chance(0.25) else s for s in tail)

    def scalar(self, dtype: str | None = None):
        if dtype is not None and dtype in INTS and self.chance(0.8):
            return int(self.rng.integers(0 if dtype.startswith("u") else -4, 5))
        return self.choice([True, False, 2, -3, 0, 0.5, -1.25, 2.0, 1e-3, 300, 1j, float("nan"), float("inf")])

    # -- families --------------------------------------------------------------------------------------------------
    def gen_unary(self):
        x = self.pick()
        self.emit(self.choice(UNARY), (x,), family="unary")

    def gen_binary(self):
        x = self.pick()
        shape, dtype = self.info(x)
        y = self.pick(lambda s, d: _broadcasts(s, shape),
                      lambda: self.leaf(self.broadcastable(shape), self.choice([dtype, dtype, self.dtype()])))
        if self.chance(0.5):
            x, y = y, x
        if self.chance(0.2):
            self.emit("." + self.choice(OPERATORS), (x, y), family="operator", stream=False)
        else:
            self.emit(self.choice(BINARY), (x, y), family="binary")

    def gen_scalar(self):
        x = self.pick()
        s = self.scalar(self.info(x)[1])
        args = (x, s) if self.chance(0.6) else (s, x)
        if self.chance(0.3):
            self.emit("." + self.choice(OPERATORS), (x, s), family="operator", stream=False)
        else:
            self.emit(self.choice(BINARY), args, family="scalar")

    def gen_intdiv(self):
        dtype = self.dtype(INTS + ["float32", "float16"])
        shape = self.shape()
        x = self.leaf(shape, dtype)
        y = self.leaf(self.broadcastable(shape), self.choice([dtype, dtype, self.dtype(INTS)]))
        if x is not None and y is not None:
            self.emit(self.choice(["floor_divide", "remainder", "divide"]), (x, y), family="intdiv")

    def gen_reduce(self):
        x = self.pick()
        shape, _ = self.info(x)
        op = self.choice(REDUCE)
        kw = {}
        if self.chance(0.8) and shape:
            if op in ("argmax", "argmin") or self.chance(0.6):
                kw["axis"] = self.axis(len(shape), allow_none=op not in ("argmax", "argmin"))
            else:
                k = int(self.rng.integers(1, len(shape) + 1))
                kw["axis"] = [int(a) - (len(shape) if self.chance(0.3) else 0)
                              for a in self.rng.permutation(len(shape))[:k]]
        if self.chance(0.4):
            kw["keepdims"] = True
        if op in ("var", "std") and self.chance(0.4):
            kw["ddof"] = int(self.rng.integers(0, 3))
        self.emit(op, (x,), kw, family="reduce")

    def gen_scan(self):
        x = self.pick()
        shape, _ = self.info(x)
        kw = {"axis": self.axis(len(shape))}
        if self.chance(0.4):
            kw["reverse"] = True
        if self.chance(0.4):
            kw["inclusive"] = False
        self.emit(self.choice(SCANS), (x,), kw, family="scan")

    def gen_softmax(self):
        x = self.pick()
        shape, _ = self.info(x)
        kw = {"axis": self.axis(len(shape))} if shape else {}
        if self.chance(0.3):
            kw["precise"] = True
        self.emit("softmax", (x,), kw, family="softmax")

    def gen_clip(self):
        x = self.pick()
        shape, dtype = self.info(x)
        lo = self.choice([None, -1, 0.5, self.leaf(self.broadcastable(shape), dtype)])
        hi = self.choice([None, 2, 1.5, self.leaf(self.broadcastable(shape), dtype)])
        self.emit("clip", (x, lo, hi), family="clip")

    def gen_astype(self):
        src, dst = self.dtype(), self.dtype()
        shape = self.shape()
        data = self.data(shape, src, special=0.3)
        if src in FLOATS and dst in INTS + ["bool_"] and self.chance(0.7):
            # in range of the target: the cast is defined (out of range, MLX leaves it to the C++ cast)
            lo, hi = (0, 100) if dst.startswith("u") else (-100, 100)
            data = np.round(self.rng.uniform(lo, hi, shape) * 4) / 4
            data = np.asarray(data).astype(_NP.get(src, src))
        x = self.leaf(shape, src, data)
        if x is not None:
            self.emit(".astype" if self.chance(0.5) else "astype", (x, DT(dst)), family="astype")

    def gen_shape(self):
        x = self.pick()
        shape, dtype = self.info(x)
        nd = len(shape)
        op = self.choice(["reshape", "transpose", "swapaxes", "expand_dims", "squeeze", "broadcast_to",
                          "concatenate", "stack", "split", "pad", "tile", "repeat", "flatten", "moveaxis",
                          "unflatten", "roll", ".T", "diagonal", "tril", "atleast_2d"])

        def emit(*args):
            return self.emit(*args, family="shape")
        if op == "reshape":
            emit(op, (x, self.reshape_to(shape)))
        elif op == "transpose":
            emit(op, (x, [int(a) for a in self.rng.permutation(nd)]) if self.chance(0.8) else (x,))
        elif op in ("swapaxes", "moveaxis"):
            emit(op, (x, self.axis(nd, False) or 0, self.axis(nd, False) or 0))
        elif op == "expand_dims":
            emit(op, (x, int(self.rng.integers(-nd - 1, nd + 1))))
        elif op == "squeeze":
            ones = [i for i, s in enumerate(shape) if s == 1]
            emit(op, (x, self.choice(ones)) if ones and self.chance(0.6) else (x,))
        elif op == "broadcast_to":
            emit(op, (x, tuple(int(s) for s in self.rng.integers(1, 4, int(self.rng.integers(0, 2))))
                           + tuple(3 if s == 1 and self.chance(0.5) else s for s in shape)))
        elif op in ("concatenate", "stack"):
            parts = [x] + [self.leaf(shape, self.choice([dtype, self.dtype()])) for _ in range(
                int(self.rng.integers(0, 3)))]
            axis = self.axis(nd + (op == "stack"), allow_none=op == "concatenate")
            emit(op, ([p for p in parts if p is not None],), {"axis": axis} if axis is not None or
                      op == "concatenate" else {})
        elif op == "split":
            axis = self.axis(nd, False) or 0
            size = shape[axis] if shape else 0
            sections = self.choice([1, 2, [1, 3], [0, 2, 2], [size]]) if size % 2 else self.choice([1, 2, [1]])
            emit(op, (x, sections), {"axis": axis})
        elif op == "pad":
            widths = [tuple(int(w) for w in self.rng.integers(0, 3, 2)) for _ in shape]
            kw = self.choice([{}, {"constant_values": 2}, {"mode": "edge"}])
            emit(op, (x, widths if self.chance(0.8) else 1), kw)
        elif op == "tile":
            emit(op, (x, [int(r) for r in self.rng.integers(1, 3, int(self.rng.integers(1, 4)))]))
        elif op == "repeat":
            emit(op, (x, int(self.rng.integers(0, 3))), {"axis": self.axis(nd)})
        elif op == "flatten":
            kw = {"start_axis": self.axis(nd, False) or 0} if self.chance(0.5) else {}
            emit(op, (x,), kw)
        elif op == "unflatten":
            if nd:
                axis = self.axis(nd, False) or 0
                emit(op, (x, axis, self.choice([(shape[axis], 1), (1, -1), (-1,)])))
        elif op == ".T":
            self.emit(".transpose", (x,), family="shape")
        elif op == "roll":
            emit(op, (x, int(self.rng.integers(-3, 4))), {"axis": self.axis(nd)})
        elif op in ("diagonal", "tril"):
            emit(op, (x, int(self.rng.integers(-1, 2))))
        else:
            emit(op, (x,))

    def reshape_to(self, shape) -> tuple:
        n = math.prod(shape)
        if self.chance(0.1):
            return (n + 1,)
        dims = []
        rest = n
        for f in (2, 3, 2, 2):
            if rest % f == 0 and self.chance(0.5):
                dims.append(f)
                rest //= f
        dims.append(rest)
        if self.chance(0.3):
            dims[int(self.rng.integers(len(dims)))] = -1
        return tuple(int(d) for d in self.rng.permutation(dims))

    def gen_index(self):
        x = self.pick(lambda s, d: len(s) > 0)
        shape, dtype = self.info(x)
        nd = len(shape)
        kind = self.choice(["basic", "basic", "array", "take", "take_along_axis", "where", "setitem", "at"])
        if kind == "basic":
            self.emit("[]", (x, self.basic_index(shape)), family="index", stream=False)
        elif kind == "array" and nd:
            idx = tuple(self.index_array(s, self.shape(2)) if self.chance(0.5) else self.basic_item(s)
                        for s in shape[:int(self.rng.integers(1, nd + 1))])
            self.emit("[]", (x, idx if len(idx) > 1 else idx[0]), family="index", stream=False)
        elif kind == "take" and nd:
            axis = self.axis(nd)
            n = math.prod(shape) if axis is None else shape[axis]
            self.emit("take", (x, self.index_array(n, self.shape(2)) if self.chance(0.8) else 0), {"axis": axis},
                      family="index")
        elif kind == "take_along_axis" and nd:
            axis = self.axis(nd, False) or 0
            idx_shape = tuple(int(self.rng.integers(0, 4)) if i == axis % nd else s for i, s in enumerate(shape))
            self.emit("take_along_axis", (x, self.index_array(shape[axis], idx_shape), axis), family="index")
        elif kind == "where":
            cond = self.leaf(self.broadcastable(shape), "bool_")
            y = self.choice([self.scalar(), self.leaf(self.broadcastable(shape), self.choice([dtype, self.dtype()]))])
            args = (cond, x, y) if self.chance(0.5) else (cond, y, x)
            self.emit("where", args, family="index")
        elif kind == "setitem":
            idx = self.basic_index(shape) if self.chance(0.6) else self.index_array(shape[0], self.shape(1))
            self.emit("setitem", (x, idx, self.choice([self.scalar(dtype), self.leaf((), dtype)])), family="index",
                      stream=False)
        elif kind == "at" and nd:
            idx = self.index_array(shape[0], (int(self.rng.integers(1, 5)),))
            self.emit("at." + self.choice(["add", "subtract", "multiply", "maximum", "minimum"]),
                      (x, idx, self.choice([self.scalar(dtype), self.leaf(shape[1:], dtype)])), family="index",
                      stream=False)

    def basic_item(self, size: int):
        r = self.rng
        if size and self.chance(0.3):
            return int(r.integers(-size, size))
        step = self.choice([None, None, 1, 2, -1, -2])
        return slice(self.choice([None, int(r.integers(-size - 1, size + 2))]),
                     self.choice([None, int(r.integers(-size - 1, size + 2))]), step)

    def basic_index(self, shape):
        items = [self.basic_item(s) for s in shape[:int(self.rng.integers(1, len(shape) + 1))]]
        if self.chance(0.2):
            items.insert(int(self.rng.integers(0, len(items) + 1)), None)
        if self.chance(0.15):
            items.insert(0, ...)
        return tuple(items) if len(items) != 1 or self.chance(0.3) else items[0]

    def index_array(self, size: int, shape):
        """An in-bounds integer index array (negative indices count from the end), made in each library."""
        if size == 0:
            shape = tuple(0 for _ in shape[:1]) or (0,)
            data = np.zeros(shape, np.int32)
        else:
            data = self.rng.integers(-size, size, shape)
        dtype = self.choice(["int32", "int32", "int64", "int16"] + (["uint32", "uint8"] if size else []))
        data = np.where(data < 0, data + size, data) if dtype.startswith("u") else data
        return Call("array", (np.asarray(data).astype(dtype),), {"dtype": DT(dtype)})

    def gen_products(self):
        op = self.choice(["matmul", "matmul", "tensordot", "outer", "inner", "addmm", "kron"])
        dtype = self.dtype(FLOATS + ["float32", "float32", "int32", "complex64"])
        m, k, n = (int(d) for d in self.rng.integers(0 if self.chance(0.1) else 1, 5, 3))
        batch = self.shape(2)
        if op == "matmul":
            a_shape = (batch + (m, k)) if self.chance(0.85) else (k,)
            b_shape = ((batch[int(self.rng.integers(0, len(batch) + 1)):] if batch else ()) + (k, n)
                       if self.chance(0.85) else (k,))
            a, b = self.leaf(a_shape, dtype, self.data(a_shape, dtype, 0)), self.leaf(
                b_shape, self.choice([dtype, dtype, self.dtype(FLOATS)]), None)
            self.emit("matmul", (a, b), family="products")
        elif op == "tensordot":
            a, b = self.leaf((m, k, 2), dtype), self.leaf((k, 2, n), dtype)
            self.emit(op, (a, b), {"axes": self.choice([2, 0, 1, [[1, 2], [0, 1]], [[1], [0]]])}, family="products")
        elif op == "addmm":
            c = self.leaf(self.broadcastable((m, n)), dtype)
            a, b = self.leaf((m, k), dtype), self.leaf((k, n), dtype)
            self.emit(op, (c, a, b), {"alpha": self.choice([1.0, 0.5]), "beta": self.choice([1.0, 2.0])},
                      family="products")
        else:
            a, b = self.leaf(self.shape(2), dtype), self.leaf(self.shape(2), dtype)
            if op == "inner":
                b = self.leaf(self.shape(1) + self.info(a)[0][-1:], dtype)
            self.emit(op, (a, b), family="products")

    def gen_sort(self):
        x = self.pick(lambda s, d: len(s) > 0)
        shape, _ = self.info(x)
        axis = self.axis(len(shape), allow_none=True) if shape else None
        size = math.prod(shape) if axis is None else shape[axis]
        op = self.choice(["sort", "argsort", "partition", "argpartition", "topk"])
        if op in ("sort", "argsort"):
            self.emit(op, (x,), {"axis": axis}, family="sort")
        elif size:
            kth = int(self.rng.integers(-size, size)) if op != "topk" else int(self.rng.integers(0, size + 1))
            check = "topk" if op == "topk" else op
            self.emit(op, (x, kth), {"axis": axis} if axis is not None or op == "topk" else {"axis": None},
                      family="sort", check=check)

    def gen_linalg(self):
        dtype = self.choice(["float32", "float32", "float64"])
        n = int(self.rng.integers(1, 5))
        batch = self.shape(1)
        op = self.choice(["inv", "solve", "cholesky", "qr", "svd", "eigh", "eigvalsh", "norm", "pinv", "tri_inv",
                          "cholesky_inv", "cross", "lu", "lu_factor", "solve_triangular", "det", "slogdet",
                          "eigvals"])
        a = self.rng.standard_normal(batch + (n, n)) + n * np.eye(n)
        spd = a @ np.swapaxes(a, -1, -2) + np.eye(n)
        tri = np.tril(a)
        data = {"cholesky": spd, "eigh": spd, "eigvalsh": spd, "cholesky_inv": np.linalg.cholesky(spd),
                "tri_inv": tri, "solve_triangular": tri}.get(op, a)
        x = self.leaf(data.shape, dtype, data.astype(dtype))
        kw, args = {}, (x,)
        if op in ("solve", "solve_triangular"):
            args = (x, self.leaf(batch + (n,) * int(self.rng.integers(1, 3)), dtype))
            kw = {"upper": False} if op == "solve_triangular" else {}
        elif op == "norm":
            kw = self.choice([{}, {"ord": 2}, {"ord": "fro"}, {"ord": 1, "axis": -1}, {"ord": "nuc"},
                              {"ord": -1}, {"ord": float("inf")}, {"axis": (-2, -1), "keepdims": True}])
        elif op == "cross":
            args = (self.leaf(batch + (3,), dtype), self.leaf((3,), dtype))
        elif op in ("cholesky", "tri_inv", "cholesky_inv"):
            kw = {"upper": False}
        elif op == "svd" and self.chance(0.5):
            kw = {"compute_uv": False}
        self.emit("linalg." + op, args, kw, family="linalg", check="decomposition" if op in (
            "qr", "svd", "eigh", "eigvals") else "values")

    def gen_random(self):
        key = Call("random.key", (int(self.rng.integers(0, 2**31)),))
        dtype = self.choice(["float32", "float32", "float16", "bfloat16", "float64"])
        shape = self.shape()
        op = self.choice(["key", "split", "uniform", "normal", "randint", "bernoulli", "truncated_normal", "gumbel",
                          "laplace", "categorical", "permutation", "multivariate_normal"])
        if op == "key":
            self.emit("random.key", (int(self.rng.integers(0, 2**32)),), family="random", stream=False)
        elif op == "split":
            self.emit("random.split", (key,), {"num": int(self.rng.integers(1, 4))}, family="random")
        elif op == "uniform":
            self.emit("random.uniform", (), {"low": self.choice([0, -2.0]), "high": self.choice([1, 3.5]),
                                             "shape": shape, "dtype": DT(dtype), "key": key}, family="random")
        elif op in ("normal", "laplace"):
            self.emit("random." + op, (), {"shape": shape, "dtype": DT(dtype), "loc": self.choice([0.0, 1.5]),
                                           "scale": self.choice([1.0, 0.5]), "key": key}, family="random")
        elif op == "randint":
            self.emit("random.randint", (self.choice([0, -5]), self.choice([3, 100, 2**20])), {
                "shape": shape, "dtype": DT(self.choice(["int32", "uint32", "int64", "int8"])), "key": key},
                family="random")
        elif op == "bernoulli":
            p = self.choice([0.5, 0.1, Call("array", (self.rng.random(shape).astype(np.float32),))])
            self.emit("random.bernoulli", (p,), {"shape": shape, "key": key}, family="random")
        elif op == "multivariate_normal":
            n = int(self.rng.integers(1, 4))
            a = self.rng.standard_normal((n, n))
            cov = self.leaf((n, n), "float32", (a @ a.T + 0.1 * np.eye(n)).astype(np.float32))
            mean = self.leaf(self.shape(1) + (n,), "float32")
            self.emit("random.multivariate_normal", (mean, cov), {"shape": self.shape(1), "key": key},
                      family="linalg")
        elif op == "truncated_normal":
            self.emit("random.truncated_normal", (-1.0, self.choice([1.0, 2.5])), {
                "shape": shape, "dtype": DT(dtype), "key": key}, family="random")
        elif op == "gumbel":
            self.emit("random.gumbel", (), {"shape": shape, "dtype": DT(dtype), "key": key}, family="random")
        elif op == "categorical":
            logits = self.leaf(self.shape(2) + (int(self.rng.integers(1, 5)),), "float32")
            self.emit("random.categorical", (logits,), {"key": key, **self.choice([{}, {"num_samples": 3}])},
                      family="random")
        else:
            self.emit("random.permutation", (self.choice([int(self.rng.integers(0, 8)), self.pick(
                lambda s, d: len(s) > 0)]),), {"key": key}, family="random")

    def gen_creation(self):
        dtype = DT(self.dtype())
        op = self.choice(["arange", "arange", "linspace", "eye", "tri", "full", "zeros", "ones", "identity",
                          "zeros_like", "ones_like"])
        n, m = (int(v) for v in self.rng.integers(0, 5, 2))
        if op == "arange":
            args = self.choice([(n,), (-2, n), (0.5, n, 0.75), (n, -3, -1), (1, 2, 0.1)])
            self.emit(op, args, {"dtype": dtype} if self.chance(0.6) else {}, family="creation")
        elif op == "linspace":
            self.emit(op, (self.choice([0, -1.5]), self.choice([1, 10])), {"num": n, "dtype": self.choice(
                [DT("float32"), DT("float16"), DT("float64"), DT("int32")])}, family="creation")
        elif op in ("eye", "tri"):
            self.emit(op, (n, m), {"k": int(self.rng.integers(-2, 3)), "dtype": dtype}, family="creation")
        elif op == "full":
            self.emit(op, (self.shape(), self.scalar(dtype.name)), {"dtype": dtype} if self.chance(0.7) else {},
                      family="creation")
        elif op in ("zeros", "ones"):
            self.emit(op, (self.shape(),), {"dtype": dtype}, family="creation")
        elif op == "identity":
            self.emit(op, (n,), {"dtype": dtype}, family="creation")
        else:
            self.emit(op, (self.pick(),), family="creation")

    def gen_misc(self):
        x = self.pick()
        shape, dtype = self.info(x)
        nd = len(shape)
        op = self.choice(["round", "nan_to_num", "isclose", "allclose", "array_equal", "diag", "trace", "einsum",
                          "put_along_axis", "slice", "slice_update", "triu", "median", "divmod", "flip"])
        if op == "round":
            self.emit(op, (x, int(self.rng.integers(-1, 3))), family="misc")
        elif op == "nan_to_num":
            self.emit(op, (x,), self.choice([{}, {"nan": 1.5}, {"posinf": 7.0, "neginf": -7.0}]), family="misc")
        elif op in ("isclose", "allclose", "array_equal", "divmod"):
            y = self.leaf(self.broadcastable(shape), self.choice([dtype, self.dtype()]))
            kw = {"equal_nan": True} if op != "divmod" and self.chance(0.4) else {}
            if op in ("isclose", "allclose") and self.chance(0.5):
                kw["rtol"], kw["atol"] = 1e-2, 0.5
            self.emit(op, (x, y), kw, family="misc")
        elif op == "diag" and nd in (1, 2):
            self.emit(op, (x, int(self.rng.integers(-1, 2))), family="misc")
        elif op == "trace" and nd >= 2:
            self.emit(op, (x,), {"offset": int(self.rng.integers(-1, 2))}, family="misc")
        elif op == "triu" and nd >= 2:
            self.emit(op, (x, int(self.rng.integers(-1, 2))), family="misc")
        elif op == "einsum":
            m, k, n = (int(v) for v in self.rng.integers(1, 4, 3))
            d = self.dtype(FLOATS + ["complex64"])
            a, b = self.leaf((m, k), d), self.leaf((k, n), d)
            spec = self.choice(["ij,jk->ik", "ij,jk->ki", "ij,jk", "ij,jk->", "ii->i" if m == k else "ij->ji"])
            self.emit(op, (spec, a) if spec.count(",") == 0 else (spec, a, b), family="misc")
        elif op == "put_along_axis" and nd:
            axis = self.axis(nd, False) or 0
            idx_shape = tuple(int(self.rng.integers(1, 3)) if i == axis % nd else s for i, s in enumerate(shape))
            if shape[axis]:
                values = self.choice([self.scalar(dtype), self.leaf(idx_shape, dtype)])
                self.emit(op, (x, self.index_array(shape[axis], idx_shape), values, axis), family="misc")
        elif op in ("slice", "slice_update") and nd:
            axes = sorted({int(a) for a in self.rng.integers(0, nd, int(self.rng.integers(1, nd + 1)))})
            size = [int(self.rng.integers(0, shape[a] + 1)) for a in axes]
            start = Call("array", (np.array([int(self.rng.integers(0, shape[a] - s + 1)) for a, s in
                                             zip(axes, size)], np.int32),), {"dtype": DT("int32")})
            if op == "slice":
                self.emit(op, (x, start, axes, size), family="misc")
            else:
                update_shape = tuple(size[axes.index(i)] if i in axes else s for i, s in enumerate(shape))
                self.emit(op, (x, self.leaf(update_shape, dtype), start, axes), family="misc")
        elif op == "median" and nd:
            self.emit(op, (x,), {"axis": self.axis(nd), "keepdims": self.chance(0.3)}, family="misc")
        elif op == "flip":
            self.emit(op, (x,), {"axis": self.axis(nd)} if nd else {}, family="misc")

    def gen_transform(self):
        dtype = self.choice(["float32", "float32", "float64", "float16"])
        shape = self.shape(2)
        nargs = int(self.rng.integers(1, 3))
        fn = self.function(nargs, shape)
        args = [self.leaf(shape, dtype, self.data(shape, dtype, 0)) for _ in range(nargs)]
        kind = self.choice(["grad", "value_and_grad", "vjp", "jvp", "vmap", "vmap"])
        if kind in ("grad", "value_and_grad"):
            scalar_fn = Fn(nargs, fn.steps + (Step("sum", (Ref(nargs + len(fn.steps) - 1),)),))
            argnums = self.choice([0, 0, list(range(nargs))]) if nargs > 1 else 0
            self.emit("apply", (Call(kind, (scalar_fn,), {"argnums": argnums}), *args), family="transform",
                      stream=False)
        elif kind in ("vjp", "jvp"):
            extra = [self.leaf(shape, dtype) for _ in range(1 if kind == "vjp" else nargs)]
            self.emit(kind, (fn, args, extra), family="transform", stream=False)
        else:
            # the batch along axis 0 or 1 of each argument, or not batched at all (in_axes None)
            in_axes = [self.choice([0, 0, 1, None]) if len(shape) >= 1 else self.choice([0, None])
                       for _ in range(nargs)]
            if all(a is None for a in in_axes):
                in_axes[0] = 0
            batched = [self.leaf(shape if a is None else shape[:a] + (3,) + shape[a:], dtype, None)
                       for a in in_axes]
            kw = {"in_axes": tuple(in_axes)}
            if shape and self.chance(0.3):
                kw["out_axes"] = self.choice([1, -1])
            self.emit("apply", (Call("vmap", (fn,), kw), *batched), family="transform", stream=False)

    FN_UNARY = ["sin", "cos", "tanh", "sigmoid", "square", "exp", "negative", "abs", "erf", "arctan", "expm1",
                "stop_gradient"]
    FN_BINARY = ["add", "multiply", "subtract", "maximum", "minimum", "arctan2"]
    FN_AXIS = ["sum", "mean", "logsumexp", "max", "min", "prod", "var", "softmax", "cumsum", "cumprod", "cummax",
               "logcumsumexp", "sort"]

    def function(self, nargs: int, shape) -> Fn:
        """A small differentiable function of ``nargs`` arrays of ``shape``, whose every step keeps that shape."""
        steps: list[Step] = []
        floats = list(range(nargs))  # the values of the arguments' shape and float dtype

        def add(op, args, kwargs=None, real=True):
            steps.append(Step(op, args, kwargs or {}))
            if real:
                floats.append(nargs + len(steps) - 1)
            return Ref(nargs + len(steps) - 1)

        for _ in range(int(self.rng.integers(1, 5))):
            x, y = Ref(self.choice(floats)), Ref(self.choice(floats))
            kind = self.choice(["unary", "smooth", "binary", "binary", "axis", "gather", "layout", "where"])
            if kind == "unary":
                add(self.choice(self.FN_UNARY), (x,))
            elif kind == "smooth":  # functions of x * x + 1, defined everywhere
                r = add("add", (add("square", (x,)), 1.0))
                add(self.choice(["sqrt", "log", "reciprocal", "rsqrt"]), (r,))
            elif kind == "binary":
                op = self.choice(self.FN_BINARY + ["divide", "power"])
                if op in ("divide", "power"):  # by or of x * x + 1
                    y = add("add", (add("square", (y,)), 1.0))
                    add(op, (x, y) if op == "divide" else (y, x))
                else:
                    add(op, (x, y))
            elif kind == "axis" and shape:
                op = self.choice(self.FN_AXIS)
                # reductions keep their axis, so that every result broadcasts with the arguments
                if op in ("softmax", "sort") or op.startswith(("cum", "logcum")):
                    add(op, (x,), {"axis": -1})
                else:  # a reduction, broadcast back
                    add("broadcast_to", (add(op, (x,), {"axis": -1, "keepdims": True}, real=False), shape))
            elif kind == "gather" and shape:
                n = shape[-1]
                index = Call("array", (self.rng.permutation(n).astype(np.int32),), {"dtype": DT("int32")})
                add("take", (x, index), {"axis": -1})
            elif kind == "layout" and shape:
                op = self.choice(["pad_slice", "flip", "roll", "concat_slice"])
                if op == "pad_slice":
                    padded = add("pad", (x, [(0, 0)] * (len(shape) - 1) + [(2, 1)]), real=False)
                    add("[]", (padded, (..., slice(1, 1 + shape[-1]))))
                elif op == "concat_slice":
                    both = add("concatenate", ([x, y],), {"axis": -1}, real=False)
                    add("[]", (both, (..., slice(shape[-1] // 2, shape[-1] // 2 + shape[-1]))))
                elif op == "roll":
                    add("roll", (x, int(self.rng.integers(-2, 3))), {"axis": -1})
                else:
                    add("[]", (x, (..., slice(None, None, -1))))
            else:
                add("where", (add("greater", (x, y), real=False), x, add("square", (y,))))
        return Fn(nargs, tuple(steps))

def _broadcasts(a, b) -> bool:
    try:
        np.broadcast_shapes(a, b)
        return True
    except ValueError:
        return False
