"""Large fused regions compiled to machine code by Numba (the optional extra ``umx[cpu-jit]``).

NumPy runs a region as one pass per step over blocks of elements, with Python between the passes: on many cores
the chunks queue for the GIL between NumPy's loops (a 4M-element region kept 3 to 5 of 16 cores busy). Here a
region is one loop over its elements in a function that releases the GIL, so each chunk of the pool is a single
call, and every core computes at once.

Only programs whose every step NumPy computes correctly rounded, or exactly, are compiled: arithmetic, square
roots, comparisons, selects, minimum and maximum, logical ops and casts among float32, float64 and bool. Their
values are then NumPy's bit for bit, signed zeros included (IEEE arithmetic has one right answer; Numba leaves
multiplies and adds uncontracted, with no fast-math), but for which NaN a step of two NaNs passes on (its sign
and payload, which NumPy's own loops do not fix either); exponentials, logarithms and the rest stay on NumPy,
whose own approximations give their bits. A region is compiled on a thread of its own the first time it is seen
(a second or so), and runs on NumPy until the code is ready; compiled code is cached on disk (``UMX_JIT_CACHE``,
by default ``~/.cache/umx/jit``) for the next process. ``UMX_CPU_JIT=0`` turns it off.

Variances over the leading axes of a float matrix (a batch norm's statistics), and such sums where the pool is
busy, take :func:`column_sums`: float64 accumulators per chunk of rows, added in order and rounded once. Reductions of
a few elements into each result (a pooling window's) take :func:`window_reduce`: NumPy's chain of folds, in its
order (the same bits), written out.
"""

from __future__ import annotations

import hashlib
import importlib.util
import math
import os
import sys
import threading

import numpy as np

from ...primitives.elementwise import Where
from ...primitives.shape import AsType
from ...runtime import host_pool, threads
from ...runtime.threads import map_chunks

#: whether large regions are compiled (UMX_CPU_JIT=0: always NumPy, to compare)
ENABLED = os.environ.get("UMX_CPU_JIT", "1") != "0"
#: regions of fewer elements run on NumPy (a compiled call's own cost is a few microseconds)
MIN_SIZE = 1 << 16
#: compile on the caller's thread and use the code at once, rather than on NumPy until it is ready (for tests)
WAIT = False
#: what the compiled path did: regions run, and compilations made or refused
STATS = {"runs": 0, "compiled": 0, "failed": 0}

_DTYPES = {np.dtype(np.float32): "np.float32", np.dtype(np.float64): "np.float64", np.dtype(np.bool_): "np.bool_"}
_kernels: dict = {}  # (region key, leaf kinds) -> the compiled function, None (not compilable), or _PENDING
_PENDING = object()
_MISSING = object()
_uncompiled: set = set()  # region keys with a step (or side output) no kernel takes, whatever the leaves' layout
_queue: list = []
_wake = threading.Condition()
_compiling: list = []  # the compiler thread, once started
_numba: list = []  # the numba module, once imported (or None where it is missing)


def _after_fork() -> None:
    # (a forked child has no compiler thread: regions it was compiling are compiled again when next seen)
    _compiling.clear()
    _queue.clear()
    for key in [k for k, v in _kernels.items() if v is _PENDING]:
        del _kernels[key]


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)


def _import_numba():
    if not _numba:
        try:
            import numba
        except ImportError:
            numba = None
        _numba.append(numba)
    return _numba[0]


def available() -> bool:
    """Whether regions may be compiled here (Numba importable, and not turned off)."""
    return ENABLED and _import_numba() is not None


# The expression of each step: its arguments are the names of earlier values. ``{t}`` is the step's dtype's
# constructor (a cast that keeps float32 arithmetic in float32).
# NumPy's maximum and minimum: the first operand where it wins or is NaN, else the second (its own loops return
# the second of two equal values, so -0.0 and 0.0 come out as NumPy gives them).
_ARITHMETIC = {"add": "{t}({a} + {b})", "subtract": "{t}({a} - {b})", "multiply": "{t}({a} * {b})",
               "true_divide": "{t}({a} / {b})",
               "maximum": "({a} if (({a} > {b}) | ({a} != {a})) else {b})",
               "minimum": "({a} if (({a} < {b}) | ({a} != {a})) else {b})"}
_COMPARISONS = {"equal": "({a} == {b})", "not_equal": "({a} != {b})", "less": "({a} < {b})",
                "less_equal": "({a} <= {b})", "greater": "({a} > {b})", "greater_equal": "({a} >= {b})"}
_BOOL_BINARY = {"logical_and": "({a} & {b})", "logical_or": "({a} | {b})", "logical_xor": "({a} != {b})"}
_UNARY = {"negative": "{t}(-{a})", "absolute": "{t}(abs({a}))", "square": "{t}({a} * {a})",
          "sqrt": "{t}(np.sqrt({a}))", "reciprocal": "{t}({t}(1.0) / {a})", "isnan": "({a} != {a})"}


def _expression(prim, args: list, dtypes: list, out_dtype) -> str | None:
    """The Python expression of one step over the names ``args`` (of ``dtypes``), or None where it is not
    compiled."""
    c = prim.__class__
    t = _DTYPES.get(out_dtype)
    if t is None:
        return None
    if c is Where:
        c, x, y = args
        return f"({x} if {c} else {y})" if dtypes[0] == np.bool_ and dtypes[1] == dtypes[2] == out_dtype else None
    if c is AsType:
        (a,) = args
        if out_dtype == np.bool_:
            return f"({a} != 0)"
        return f"{t}({a})"
    fn = getattr(prim, "fn", None)
    if len(args) == 2:
        a, b = args
        if fn in _BOOL_BINARY:
            return _BOOL_BINARY[fn].format(a=a, b=b) if dtypes[0] == dtypes[1] == np.bool_ else None
        if dtypes[0] != dtypes[1]:
            return None
        if fn in _COMPARISONS and (fn in ("equal", "not_equal") or dtypes[0] != np.bool_):
            return _COMPARISONS[fn].format(a=a, b=b)
        if fn in _ARITHMETIC and dtypes[0] != np.bool_:
            return _ARITHMETIC[fn].format(a=a, b=b, t=t)
        return None
    if len(args) == 1:
        (a,) = args
        if fn == "logical_not" and dtypes[0] == np.bool_:
            return f"(not {a})"
        if fn in _UNARY and dtypes[0] != np.bool_ and (out_dtype == np.bool_) == (fn == "isnan"):
            return _UNARY[fn].format(a=a, t=t)
    return None


def _layout(leaves: list, shape: tuple):
    """``(cols, kinds)``: each leaf's kind, ``"full"`` (the result's shape, C-contiguous: read at the element's
    place), ``"row"`` (the result's last axes after leading ones, the same axes for all such: read at the place in
    a row of ``cols`` elements) or ``"one"`` (one element); ``cols`` is 0 where no leaf is a row. Where a leaf is
    none of these, :func:`_collapsed`'s layout (None where there is none)."""
    cols = 0
    kinds = []
    for x in leaves:
        if x.__class__ is not np.ndarray or x.size == 1:
            kinds.append("one")
            continue
        if x.shape == shape and x.flags.c_contiguous:
            kinds.append("full")
            continue
        s = x.shape
        lead = 0
        while lead < len(s) and s[lead] == 1:
            lead += 1
        tail = s[lead:]
        if not tail or tail != shape[len(shape) - len(tail):] or not x.flags.c_contiguous or (cols and x.size != cols):
            return _collapsed(leaves, shape)
        cols = x.size
        kinds.append("row")
    return cols, tuple(kinds)


def _collapsed(leaves: list, shape: tuple):
    """``(dims, kinds)`` for leaves broadcast along any axes (a max pool's gradient: the window's maximum against
    its elements): the result's axes, those of length 1 dropped and neighbours that every leaf reads alike merged,
    and each leaf's kind, one ``"F"`` (read along) or ``"B"`` (broadcast) per axis, or ``"one"``; None where a leaf
    is not C-contiguous or not broadcastable so."""
    nd = len(shape)
    keep = [a for a in range(nd) if shape[a] != 1]
    marks = []
    for x in leaves:
        if x.__class__ is not np.ndarray or x.size == 1:
            marks.append(None)
            continue
        if not x.flags.c_contiguous or x.ndim > nd:
            return None
        padded = (1,) * (nd - x.ndim) + x.shape
        m = []
        for a in keep:
            if padded[a] == shape[a]:
                m.append("F")
            elif padded[a] == 1:
                m.append("B")
            else:
                return None
        marks.append(m)
    if not keep:
        return None
    dims, groups = [shape[keep[0]]], [[m[0] for m in marks if m is not None]]
    for i in range(1, len(keep)):
        here = [m[i] for m in marks if m is not None]
        if here == groups[-1]:
            dims[-1] *= shape[keep[i]]
        else:
            dims.append(shape[keep[i]])
            groups.append(here)
    if len(dims) < 2:  # (one axis: every leaf is whole, or one element)
        return None
    kinds, column = [], 0
    for m in marks:
        if m is None:
            kinds.append("one")
        else:
            kinds.append("".join(g[column] for g in groups))
            column += 1
    return tuple(dims), tuple(kinds)


def _source(f, kinds: tuple, form: str) -> str | None:
    """The Python source of the region's kernel ``k(out, lo, hi, cols, *leaves)`` (``cols``: the dims of the
    ``"nd"`` form), or None where a step is not compiled."""
    n = len(f.leaves)
    dtypes = [x._dtype.np for x in f.leaves] + [x._dtype.np for x in f.nodes]
    if any(d not in _DTYPES for d in dtypes):
        return None
    names = [f"x{i}" for i in range(n)] + [f"v{j}" for j in range(len(f.nodes))]
    body = []
    for j, (prim, args) in enumerate(f.program):
        e = _expression(prim, [names[a] for a in args], [dtypes[a] for a in args], dtypes[n + j])
        if e is None:
            return None
        body.append(f"v{j} = {e}")
    args = ", ".join(f"a{i}" for i in range(n))
    if form == "nd":
        return _nd_source(kinds, body, args)
    # (the kernel's own slices, indexed from 0: Numba then vectorizes the loop, which it does not over lo..hi)
    loads, cuts = [], []
    for i, kind in enumerate(kinds):
        if kind == "full":
            cuts.append(f"    s{i} = a{i}[start:stop]")
            loads.append(f"x{i} = s{i}[i]")
        elif kind == "row":
            loads.append(f"x{i} = a{i}[c]")
        else:
            loads.append(f"x{i} = a{i}")
    rows = form == "rows"
    inner = "\n".join("    " * (3 if rows else 2) + line for line in [*loads, *body, f"o[i] = v{len(body) - 1}"])
    if rows:  # (rows lo..hi of cols elements: the row leaves are read by their place in the row)
        head = "    start, stop = lo * cols, hi * cols\n"
        loop = "    for r in range(hi - lo):\n        for c in range(cols):\n            i = r * cols + c\n"
    else:
        head = "    start, stop = lo, hi\n"
        loop = "    for i in range(hi - lo):\n"
    cut = "\n".join(["    o = out[start:stop]", *cuts]) + "\n"
    return f"import numpy as np\n\n\ndef k(out, lo, hi, cols, {args}):\n{head}{cut}{loop}{inner}\n"


def _nd_source(kinds: tuple, body: list, args: str) -> str:
    """The ``"nd"`` form's kernel: one loop per collapsed axis but the last (the first from lo to hi), each leaf's
    offset carried down the loops (its strides from the dims and its kinds), the innermost over slices of a row."""
    k = len(next(kind for kind in kinds if kind != "one"))
    last = k - 1
    arrays = [(i, kind) for i, kind in enumerate(kinds) if kind != "one"]
    lines = ["    " + ", ".join(f"d{a}" for a in range(k)) + ", = cols"]
    for i, kind in arrays:  # (strides in elements of the leaf's own C-contiguous shape)
        stride = "1"
        for a in reversed(range(k)):
            lines.append(f"    t{i}_{a} = {stride}")
            stride = f"t{i}_{a} * d{a}" if kind[a] == "F" else f"t{i}_{a}"
    pad = "    "
    for a in range(last):
        if a == 0:
            lines.append(f"{pad}for i0 in range(hi - lo):")
            pad += "    "
            lines.append(f"{pad}q0 = i0 + lo")
            lines += [f"{pad}p{i}_0 = q0 * t{i}_0" if kind[0] == "F" else f"{pad}p{i}_0 = 0" for i, kind in arrays]
            continue
        lines.append(f"{pad}for i{a} in range(d{a}):")
        pad += "    "
        lines.append(f"{pad}q{a} = q{a - 1} * d{a} + i{a}")
        lines += [f"{pad}p{i}_{a} = p{i}_{a - 1}" + (f" + i{a} * t{i}_{a}" if kind[a] == "F" else "")
                  for i, kind in arrays]
    # the innermost axis: the output's row, and each leaf's row (a slice) or its one value along the row
    lines.append(f"{pad}row = q{last - 1} * d{last}")
    lines.append(f"{pad}o = out[row:row + d{last}]")
    loads = []
    for i, kind in enumerate(kinds):
        if kind == "one":
            loads.append(f"x{i} = a{i}")
        elif kind[last] == "F":
            lines.append(f"{pad}s{i} = a{i}[p{i}_{last - 1}:p{i}_{last - 1} + d{last}]")
            loads.append(f"x{i} = s{i}[c]")
        else:
            lines.append(f"{pad}w{i} = a{i}[p{i}_{last - 1}]")
            loads.append(f"x{i} = w{i}")
    lines.append(f"{pad}for c in range(d{last}):")
    pad += "    "
    lines += [pad + line for line in [*loads, *body, f"o[c] = v{len(body) - 1}"]]
    return f"import numpy as np\n\n\ndef k(out, lo, hi, cols, {args}):\n" + "\n".join(lines) + "\n"


def _cache_dir() -> str | None:
    path = os.environ.get("UMX_JIT_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "umx", "jit")
    try:
        os.makedirs(path, exist_ok=True)
    except OSError:
        return None
    return path if os.access(path, os.W_OK) else None


def _compile(source: str):
    """The source's ``k`` compiled (no GIL, NumPy's error model: a division by zero gives inf, as NumPy's),
    cached on disk where a cache folder can be written."""
    numba = _import_numba()
    name = "umx_jit_" + hashlib.sha1(source.encode()).hexdigest()[:20]
    folder = _cache_dir()
    if folder is not None:
        path = os.path.join(folder, name + ".py")
        if not os.path.exists(path):
            tmp = f"{path}.{os.getpid()}.{threading.get_ident()}"
            with open(tmp, "w") as fh:
                fh.write(source)
            os.replace(tmp, path)  # (atomic: processes compiling the same region at once write the same text)
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # (Numba's cache finds the function's module again by its name)
        spec.loader.exec_module(module)
        fn = module.k
    else:
        scope: dict = {}
        exec(compile(source, name, "exec"), scope)  # noqa: S102 (umx's own generated source)
        fn = scope["k"]
    return numba.njit(nogil=True, error_model="numpy", cache=folder is not None)(fn)


def _build(key, source: str, example: tuple) -> None:
    try:
        fn = _compile(source)
        fn(*example)  # (compiles for the argument types now, not at the first real call)
        _kernels[key] = fn
        STATS["compiled"] += 1
    except Exception:  # a Numba that cannot compile it: NumPy runs the region, as for any other
        _kernels[key] = None
        STATS["failed"] += 1


def _compiler() -> None:
    while True:
        with _wake:
            while not _queue:
                _wake.wait()
            job = _queue.pop(0)
        _build(*job)


def _example(f, kinds: tuple, leaves: list, cols) -> tuple:
    """Arguments of the kernel's types over no element (its first call compiles it)."""
    out = np.empty(1, f.root._dtype.np)
    xs = [np.zeros(1, x.dtype) if k != "one" else _scalar(x, v._dtype.np) for k, x, v in zip(kinds, leaves, f.leaves)]
    return (out, 0, 0, cols, *xs)


def _scalar(x, dtype):
    """A one-element leaf as a NumPy scalar of its dtype (a Python scalar would be typed as float64 or int64)."""
    return x.reshape(-1)[0] if x.__class__ is np.ndarray else dtype.type(x)


def _start(f, key, kinds: tuple, cols, leaves: list):
    """The region's kernel, compiled now (``WAIT``), or ``_PENDING``; None where the region is not compiled."""
    form = "nd" if cols.__class__ is tuple else "rows" if cols else "flat"
    source = _source(f, kinds, form) if not f.sides else None
    if source is None:
        _uncompiled.add(f.key)
        return None
    return _submit(key, source, _example(f, kinds, leaves, (1,) * len(cols) if form == "nd" else 1))


def _submit(key, source: str, example: tuple):
    """The kernel of ``source`` compiled now, where ``WAIT`` (None where it failed to); else queued for the compiler
    thread (``_PENDING`` meanwhile)."""
    if WAIT:
        _build(key, source, example)
        return _kernels[key]
    _kernels[key] = _PENDING
    with _wake:
        if not _compiling:
            _compiling.append(threading.Thread(target=_compiler, name="umx-jit", daemon=True))
            _compiling[0].start()
        _queue.append((key, source, example))
        _wake.notify()
    return _PENDING


def kernel(f, leaves: list):
    """``(fn, cols, kinds)``, Fused ``f``'s compiled kernel for these leaves' layout (see :func:`_layout`), or None
    where the region is not compiled (yet). Holds nothing of the leaves (a donor's count stays its own)."""
    if not available() or f.key in _uncompiled:
        return None
    layout = _layout(leaves, f.root._shape)
    if layout is None:
        return None
    cols, kinds = layout
    key = (f.key, kinds)
    fn = _kernels.get(key, _MISSING)
    if fn is _MISSING:
        fn = _start(f, key, kinds, cols, leaves)
    if fn is None or fn is _PENDING:
        return None
    return fn, cols, kinds


def run(k: tuple, f, leaves: list, out: np.ndarray | None = None) -> np.ndarray:
    """The root's value of Fused ``f`` by its kernel ``k`` (from :func:`kernel`), in chunks on the pool, written
    into ``out`` where given (it may be a leaf's own buffer: each element is read before it is written)."""
    fn, cols, kinds = k
    root = f.root
    if out is None:
        out = host_pool.empty(root._shape, root._dtype.np)
    flat = out.reshape(-1)
    xs = [x.reshape(-1) if kind != "one" else _scalar(x, v._dtype.np) for kind, x, v in zip(kinds, leaves, f.leaves)]
    n = cols[0] if cols.__class__ is tuple else flat.size // cols if cols else flat.size

    def work(lo: int, hi: int) -> None:
        fn(flat, lo, hi, cols, *xs)

    map_chunks(work, threads.chunks(n, out.nbytes // n))
    STATS["runs"] += 1
    return out


# Column sums (a batch norm's statistics over (N, H, W)): one kernel per name and dtype whatever the shape, each
# chunk of rows summing into float64 accumulators of its own, which are added in order (the route's bits depend
# only on the chunks, as the BLAS and NumPy routes' do on theirs).
_COLUMN_STEPS = {"sums": ["acc[c] += row[c]"],
                 "squares": ["d = np.float64(row[c]) - mean[c]", "acc[c] += d * d"]}


def _column_source(name: str) -> str:
    step = "".join(f"            {line}\n" for line in _COLUMN_STEPS[name])
    return ("import numpy as np\n\n\ndef k(x, lo, hi, mean, acc):\n    cols = x.shape[1]\n    part = x[lo:hi]\n"
            "    for r in range(hi - lo):\n        row = part[r]\n        for c in range(cols):\n" + step)


def _column_kernel(name: str, dtype):
    key = ("columns", name, dtype)
    fn = _kernels.get(key, _MISSING)
    if fn is _MISSING:
        cols = np.zeros(1, np.float64)
        fn = _submit(key, _column_source(name), (np.zeros((1, 1), dtype), 0, 0, cols, cols.copy()))
    return None if fn is _PENDING else fn


def column_sums(x: np.ndarray, mean: np.ndarray | None = None) -> np.ndarray | None:
    """The sums over the rows of C-contiguous float32 or float64 matrix ``x`` (or, given the columns' float64
    ``mean``, of the squared deviations from it), ``(columns,)`` in float64, each chunk of rows on the pool summed
    in float64 and the chunks' sums added in order; None where the kernel is not compiled (yet)."""
    if not available() or x.size < MIN_SIZE:
        return None
    fn = _column_kernel("sums" if mean is None else "squares", x.dtype)
    if fn is None:
        return None
    rows, cols = x.shape
    m = mean if mean is not None else np.zeros(1, np.float64)

    def work(lo: int, hi: int) -> np.ndarray:
        acc = np.zeros(cols, np.float64)
        fn(x, lo, hi, m, acc)
        return acc

    parts = map_chunks(work, threads.chunks(rows, x.nbytes // rows))
    STATS["runs"] += 1
    return threads.add_in_order(parts)


# Reductions of a few elements into each result (a pooling window's maxima, its gradient's sums), as
# ``kernels._chain`` folds them: over the first reduced axis, then the next, each fold ``acc = op(acc, next)`` in
# order, so the same bits as its NumPy passes, one loop with no GIL held. The input's axes collapse into kept runs
# (K) between reduced axes (R, never merged: that would change the folds' order), first and last kept.
#: the most elements of a window whose folds are written out (``kernels.UNROLL_MAX``'s)
WINDOW_MAX = 16
_FOLDS = {np.maximum: "({a} if (({a} > {b}) | ({a} != {a})) else {b})",
          np.minimum: "({a} if (({a} < {b}) | ({a} != {a})) else {b})", np.add: "({a} + {b})"}


def _window_layout(shape: tuple, axes: tuple):
    """``(dims, pattern)``: the collapsed axes and a ``K``/``R`` per axis, or None (a reduced first or last axis)."""
    dims, pattern = [], []
    for a, n in enumerate(shape):
        if a in axes:
            dims.append(n)
            pattern.append("R")
        elif n == 1:
            continue
        elif pattern and pattern[-1] == "K":
            dims[-1] *= n
        else:
            dims.append(n)
            pattern.append("K")
    if not pattern or pattern[0] != "K" or pattern[-1] != "K":
        return None
    return tuple(dims), "".join(pattern)


def _window_source(ufunc, pattern: str, sizes: tuple) -> str:
    """The kernel ``k(x, out, lo, hi, dims)`` reducing the ``R`` axes of ``pattern`` (of ``sizes`` elements, their
    folds written out) with ``ufunc``'s fold, over each output row's elements at once."""
    op = _FOLDS[ufunc]
    n = len(pattern)
    last = n - 1
    reduced = [j for j, p in enumerate(pattern) if p == "R"]
    kept = [j for j, p in enumerate(pattern) if p == "K" and j != last]
    lines = ["    " + ", ".join(f"d{j}" for j in range(n)) + ", = dims", f"    t{last} = 1"]
    for j in reversed(range(last)):
        lines.append(f"    t{j} = t{j + 1} * d{j + 1}")
    pad = "    "
    for i, j in enumerate(kept):  # (the output's rows: kept axes but the last, the first from lo to hi)
        lines.append(f"{pad}for i{j} in range(lo, hi):" if i == 0 else f"{pad}for i{j} in range(d{j}):")
        pad += "    "
    lines.append(f"{pad}base = " + " + ".join(f"i{j} * t{j}" for j in kept))
    lines.append(f"{pad}row = " + "".join("(" for _ in kept[1:]) + f"i{kept[0]}"
                 + "".join(f" * d{j} + i{j})" for j in kept[1:]))
    lines.append(f"{pad}o = out[row * d{last}:row * d{last} + d{last}]")
    # each element of the window a slice of the row's length, read from 0 (so that the loop below vectorizes)
    names = {}
    for pos in np.ndindex(*sizes):
        name = "s" + "_".join(map(str, pos))
        offset = " + ".join([f"{r} * t{j}" for r, j in zip(pos, reduced) if r] or ["0"])
        lines.append(f"{pad}{name} = x[base + {offset}:base + {offset} + d{last}]")
        names[pos] = name
    lines.append(f"{pad}for c in range(d{last}):")
    inner = pad + "    "

    def fold(level: int, fixed: tuple) -> str:  # the fold over reduced axes 0..level, the later ones at ``fixed``
        value = None
        for r in range(sizes[level]):
            here = (r, *fixed)
            v = f"{names[here]}[c]" if level == 0 else fold(level - 1, here)
            if level > 0:
                lines.append(f"{inner}w{level}_{r} = {v}")
                v = f"w{level}_{r}"
            if value is None:
                lines.append(f"{inner}a{level} = {v}")
            else:
                lines.append(f"{inner}a{level} = " + op.format(a=f"a{level}", b=v))
            value = f"a{level}"
        return value

    top = fold(len(reduced) - 1, ())
    lines.append(f"{inner}o[c] = {top}")
    return "import numpy as np\n\n\ndef k(x, out, lo, hi, dims):\n" + "\n".join(lines) + "\n"


def window_reduce(ufunc, x: np.ndarray, axes: tuple) -> np.ndarray | None:
    """``x`` reduced over the sorted ``axes`` by ``ufunc`` (maximum, minimum or add) as ``kernels._chain`` folds
    it, the result's rows in chunks on the pool; None where not compiled (yet) or another layout."""
    if (ufunc not in _FOLDS or x.size < MIN_SIZE or x.dtype.char not in "fd" or not x.flags.c_contiguous
            or not available()):
        return None
    layout = _window_layout(x.shape, axes)
    if layout is None:
        return None
    dims, pattern = layout
    sizes = tuple(d for d, p in zip(dims, pattern) if p == "R")
    if math.prod(sizes) > WINDOW_MAX:
        return None
    key = ("window", ufunc.__name__, pattern, sizes, x.dtype)
    fn = _kernels.get(key, _MISSING)
    if fn is _MISSING:
        example = (np.zeros(1, x.dtype), np.zeros(1, x.dtype), 0, 0, (1,) * len(dims))
        fn = _submit(key, _window_source(ufunc, pattern, sizes), example)
    if fn is None or fn is _PENDING:
        return None
    out = host_pool.empty(tuple(d for a, d in enumerate(x.shape) if a not in axes), x.dtype)
    flat, xf = out.reshape(-1), x.reshape(-1)
    n = dims[0]

    def work(lo: int, hi: int) -> None:
        fn(xf, flat, lo, hi, dims)

    map_chunks(work, threads.chunks(n, out.nbytes // n))
    STATS["runs"] += 1
    return out

