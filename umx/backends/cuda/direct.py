"""Kernels that umx compiles and launches itself: single elementwise nodes, fused regions, full reductions and
products of a matrix with a few vectors.

A CuPy ufunc or ElementwiseKernel call spends microseconds of host time on argument parsing, type dispatch,
broadcasting and output allocation: most of a small op's latency (bench/latency.py). The common cases need none of
that work: every array input is contiguous and either of the output's shape, broadcast along leading axes (a bias,
a 0-d array) or along trailing ones (a row's mean kept as a column), and constants are NumPy scalars. For those,
umx writes one kernel per structure (the fusion program's lines, with loads chosen by each input's kind), compiles
it once per device through CuPy's RawModule (NVRTC and CuPy's disk cache), and launches it with ``cuLaunchKernel``
from a preallocated parameter buffer. Anything else (strided views, other broadcasts, float16, complex, more
parameters than a launch takes) gets None here and runs through CuPy as before. Full reductions (sum, max, min,
mean) of contiguous arrays run the same way: one block for a loss or a norm, a grid of blocks for more
(:meth:`Launcher.reduce`). A product ``a @ b`` of rows with at most 8 columns (a matrix times vectors) runs as one
warp per row (:meth:`Launcher.matmul`), where cuBLAS would spend far more host time choosing how to compute such a
shape than the GPU spends on it.

A kernel with a small output can also write it to pinned host memory and then raise a flag there (a *mirror*): a
result the host reads at once, such as ``item()``, then costs no copy call and no event, only a look at the flag
(see :class:`Mirrors`).
"""

from __future__ import annotations

import ctypes
import operator
import struct
import time
from math import prod

import numpy as np

from ._probe import _cupy
from .fusion import C_TYPES, steps
from .sources import AXES_ROWS, axes_reduce_source, elementwise_source, merged_axes, narrow_source, reduce_source
from .sources import BLOCK as _BLOCK
from .sources import NARROW_TYPES as _NARROW_TYPES

cp = _cupy()
_launch = cp.cuda.driver.launchKernel
_ndarray = cp.ndarray
_empty = cp.ndarray  # (the constructor: a microsecond less than cp.empty)
# whether an array is C-contiguous: CuPy's attribute where it has one (``flags`` builds an object per call)
_contiguous = (operator.attrgetter("_c_contiguous") if hasattr(_ndarray, "_c_contiguous")
               else lambda d: d.flags.c_contiguous)

# A result of one element of at most PACK_MAX_BYTES, written to the host alone (see Mirrors.reserve): its bits and
# the low half of the token go in one aligned 8-byte store to the flag, which the host sees whole or not at all, so
# no fence is needed between the value and the flag (one store less between the launch and the host's read).
PACK_MAX_BYTES = 4
_MAX_BLOCKS = 8192  # a grid-stride loop covers the rest: more blocks only add scheduling work
_MAX_PARAMS = 500  # 8-byte parameters; CUDA takes 4 KiB of them per launch

#: outputs of at most this many elements may be mirrored to the host (one block writes them, then the flag)
MIRROR_MAX = _BLOCK

# How a constant travels, by the class of its NumPy scalar: as a double, a signed or an unsigned 64-bit integer
# (converted to the leaf's type in the kernel); a bool as one byte and seven zero bytes, read as an integer.
_SCALAR_KINDS = {t: {"f": "f", "i": "i", "u": "u", "b": "b"}[np.dtype(t).kind] for t in np.sctypeDict.values()
                 if issubclass(t, np.generic) and np.dtype(t).kind in "fiub"}
# each kind's parameters, and how many there are
_PACK = {"p": "Q", "r": "Qq", "s": "Qqq", "c": "Qqq", "f": "d", "i": "q", "u": "Q", "b": "?7x"}
_WIDTH = {k: len(v.replace("7x", "")) for k, v in _PACK.items()}

# (structure key, leaf kinds, device), (reduction, dtype, device) or ("matmul", dtype char, columns, device) ->
# (function pointer, module, parameter packer), or None where umx's kernels do not apply
_kernels: dict = {}


class Launcher:
    """One executor's launches on its CUDA stream: the parameter buffer that ``cuLaunchKernel`` reads. Used by one
    thread at a time (the thread running the executor's batch)."""

    __slots__ = ("device", "stream", "_values", "_pointers", "_addr", "_scratch")

    def __init__(self, device: int, stream_ptr: int):
        self.device = device
        self.stream = stream_ptr
        self._values = bytearray(8 * _MAX_PARAMS)  # the parameters, 8 bytes each, packed by one struct call
        base = ctypes.addressof(ctypes.c_char.from_buffer(self._values))
        # kernelParams: one pointer per parameter, each to its slot in _values
        self._pointers = (ctypes.c_uint64 * _MAX_PARAMS)(*range(base, base + 8 * _MAX_PARAMS, 8))
        self._addr = ctypes.addressof(self._pointers)
        self._scratch = None  # a large reduction's per-block results and its ticket (made on first use)

    def run(self, key, source_of, source_arg, datas: list, shape: tuple, dtype, mirror=None, out=None,
            sides: list | None = None):
        """Launch the kernel of structure ``key`` over ``datas`` (device arrays and NumPy scalars): its output, a
        CuPy array of ``shape`` and NumPy ``dtype``; None where umx's kernels do not apply. ``source_of(source_arg)``
        gives ``(leaf dtypes, program, node dtypes)`` the first time a structure is seen. ``mirror``, for
        outputs of at most ``MIRROR_MAX`` elements: ``(host pointer or 0, flag pointer, token)``. ``out``: where
        to write, a contiguous array of that shape and dtype or the address of host memory the GPU may write (a
        mirror's slot), or 0: no output, for one element of at most ``PACK_MAX_BYTES`` written to the host in the
        flag itself (``mirror`` then ``(0, flag pointer, token)``); returned as given, untouched if None is
        returned; None: a new array, from this thread's CuPy allocator. ``sides``: contiguous arrays of the
        output's shape that a fused region's side outputs are written to (no mirror then; ``source_of`` then gives
        the region's side steps too)."""
        n = prod(shape)
        if n == 0:
            return _empty(shape, dtype) if out is None else out
        kinds = ""
        params = []
        for d in datas:
            if d.__class__ is _ndarray:
                if d.size == n:  # of the output's shape (up to leading ones): element i is d's element i
                    if _contiguous(d):
                        kinds += "p"
                        params.append(d.data.ptr)
                    else:
                        rows = _rows(d) if n <= ROWS_MAX_ELEMENTS else None
                        if rows is None:
                            return None
                        kinds += "s"  # rows of contiguous elements, a stride apart: a slice of joined columns
                        params += (d.data.ptr, *rows)
                elif _suffix(d.shape, shape) and _contiguous(d):
                    kinds += "r"  # broadcast along leading axes: element i is d's element i % d.size
                    params += (d.data.ptr, d.size)
                else:
                    w = _column(d.shape, shape) if n <= ROWS_MAX_ELEMENTS and _contiguous(d) else 0
                    if not w:
                        return None
                    kinds += "c"  # broadcast along trailing axes: element i is d's element (i // w) % d.size
                    params += (d.data.ptr, w, d.size)
            else:
                k = _SCALAR_KINDS.get(d.__class__)
                if k is None:
                    return None
                kinds += k
                params.append(d)
        vec = _vector(datas, kinds, params, n, dtype, out, sides) if n >= VEC_MIN and mirror is None else 1
        entry = _kernels.get((key, kinds, self.device) if vec == 1 else (key, kinds, self.device, vec), False)
        if entry is False:
            entry = _compile(key, kinds, self.device, source_of, source_arg, vec)
        if entry is None and vec > 1:  # (then the kernel of one element a thread, as for any other structure)
            vec = 1
            entry = _kernels.get((key, kinds, self.device), False)
            if entry is False:
                entry = _compile(key, kinds, self.device, source_of, source_arg)
        if entry is None:
            return None
        if out is None:
            out = _empty(shape, dtype)
        if mirror is None:
            params += (out if out.__class__ is int else out.data.ptr, n, 0, 0, 0)
        else:
            params += (out if out.__class__ is int else out.data.ptr, n, *mirror)
        if sides:
            params += tuple([d.data.ptr for d in sides])
        entry[2](self._values, 0, *params)
        if n <= 32:  # one warp: a scalar's launch reaches the host a little sooner
            _launch(entry[0], 1, 1, 1, 32, 1, 1, 0, self.stream, self._addr, 0)
        else:
            threads = n // vec
            _launch(entry[0], min((threads + _BLOCK - 1) // _BLOCK, _MAX_BLOCKS), 1, 1, _BLOCK, 1, 1, 0, self.stream,
                    self._addr, 0)
        return out

    def reduce(self, kind: str, x, shape: tuple, dtype, mirror=None, out=None):
        """A full reduction (``kind``: Sum, Max, Min or Mean) of contiguous device array ``x`` by umx's own kernel:
        one block for at most ``MAX_REDUCE`` elements, else a grid of blocks whose last reduces the blocks' results.
        Its output (of ``shape``, umx Dtype ``dtype``, the input's); None where this does not apply. ``mirror`` and
        ``out`` as for :meth:`run`."""
        n = x.size
        want = dtype.np
        if not n or not _contiguous(x) or (x.dtype is not want and x.dtype != want):  # (it reads and writes one type)
            return None
        entry = _kernels.get((kind, dtype, self.device), False)
        if entry is False:
            entry = _compile_reduce(kind, dtype, self.device)
        if entry is None:
            return None
        if n <= MAX_REDUCE:
            blocks, partials, ticket = 1, 0, 0
        else:
            blocks = min(_REDUCE_BLOCKS, n // (8 * _BLOCK))  # (at least 8 elements per thread)
            if self._scratch is None:
                # (not from a pool: it lives as long as the stream)
                self._scratch = zeroed(8 * _REDUCE_BLOCKS + 8, self.stream)
            partials = self._scratch.ptr
            ticket = partials + 8 * _REDUCE_BLOCKS
        if out is None:
            out = _empty(shape, dtype.np)
        optr = out if out.__class__ is int else out.data.ptr
        if mirror is None:
            entry[2](self._values, 0, x.data.ptr, n, optr, partials, ticket, 0, 0, 0)
        else:
            entry[2](self._values, 0, x.data.ptr, n, optr, partials, ticket, *mirror)
        _launch(entry[0], blocks, 1, 1, _BLOCK, 1, 1, 0, self.stream, self._addr, 0)
        return out

    def reduce_axes(self, kind: str, x, axes: tuple, shape: tuple, dtype):
        """A Sum or Mean of contiguous device array ``x`` over ``axes``, consecutive ones (a batch norm's statistics,
        a bias's gradient, a layer norm's row means), by umx's own kernels (see ``sources.axes_reduce_source``):
        its output, of ``shape`` and umx Dtype ``dtype`` (the input's); None where this does not apply. CuPy's
        reduction gives a reduction over leading axes one block per output, which leaves most of the GPU idle when
        the outputs are few and long, and spends more host time per call than the launch."""
        want = dtype.np
        if (not axes or kind not in _AXES_KINDS or dtype.name not in _AXES_DTYPES or x.dtype != want
                or not _contiguous(x)):
            return None
        lo = axes[0]
        end = lo + len(axes)
        if end > x.ndim or axes != tuple(range(lo, end)):
            return None
        dims = x.shape
        a, rows, cols = prod(dims[:lo]), prod(dims[lo:end]), prod(dims[end:])
        if (not rows or not cols or a * rows * cols < AXES_MIN or a > _MAX_GRID_Z
                or (end == x.ndim and rows > AXES_MAX_ROW)):
            return None
        entry = _kernels.get(("axes", dtype, self.device), False)
        if entry is False:
            entry = _compile_axes(dtype, self.device)
        if entry is None:
            return None
        first, done, one, rows_fn, pack, acc = entry[0], entry[1], entry[2], entry[3], entry[5], entry[6]
        divisor = float(rows if kind == "Mean" else 1)
        if end == x.ndim:  # trailing axes: each output a contiguous row, one warp each
            out = _empty(shape, want)
            pack(self._values, 0, x.data.ptr, a, rows, 0, out.data.ptr, divisor)
            _launch(rows_fn, min((a * 32 + _BLOCK - 1) // _BLOCK, _MAX_BLOCKS), 1, 1, _BLOCK, 1, 1, 0, self.stream,
                    self._addr, 0)
            return out
        across = (cols + 31) // 32
        ranges = max(1, min(-(-rows // AXES_MIN_ROWS), -(-_AXES_BLOCKS // (across * a))))
        chunk = -(-rows // ranges)
        ranges = -(-rows // chunk)
        out = _empty(shape, want)
        values, stream, addr = self._values, self.stream, self._addr
        if ranges == 1:
            pack(values, 0, x.data.ptr, rows, cols, rows, out.data.ptr, divisor)
            _launch(one, across, 1, a, 32, AXES_ROWS, 1, 0, stream, addr, 0)
            return out
        partials = _empty((a, ranges, cols), acc)
        pack(values, 0, x.data.ptr, rows, cols, chunk, partials.data.ptr, 1.0)
        _launch(first, across, ranges, a, 32, AXES_ROWS, 1, 0, stream, addr, 0)
        pack(values, 0, partials.data.ptr, ranges, cols, ranges, out.data.ptr, divisor)
        _launch(done, across, 1, a, 32, AXES_ROWS, 1, 0, stream, addr, 0)
        return out

    def matmul(self, a, b, shape: tuple):
        """``a @ b`` where ``b`` is a contiguous vector ``(k,)`` or matrix ``(k, n)`` of at most ``NARROW_MAX``
        columns and ``a`` a contiguous array whose last axis is ``k`` (its other axes make the rows), both float32
        or both float64, by umx's own kernel: its output, of ``shape`` (NumPy's for these operands); None where this
        does not apply (then cuBLAS computes it)."""
        char = a.dtype.char
        if char not in _NARROW_TYPES or b.dtype.char != char or b.ndim > 2 or not a.ndim:
            return None
        k = b.shape[0]
        n = b.shape[1] if b.ndim == 2 else 1
        size = a.size
        if (not 0 < n <= NARROW_MAX or not 0 < k <= NARROW_MAX_K or a.shape[-1] != k
                or not 0 < size <= NARROW_MAX_ELEMENTS or not _contiguous(a) or not _contiguous(b)):
            return None
        entry = _kernels.get(("matmul", char, n, self.device), False)
        if entry is False:
            entry = _compile_narrow(char, n, self.device)
        if entry is None:
            return None
        rows = size // k
        out = _empty(shape, a.dtype)
        entry[2](self._values, 0, a.data.ptr, b.data.ptr, out.data.ptr, rows, k)
        _launch(entry[0], min((rows * 32 + _BLOCK - 1) // _BLOCK, _MAX_BLOCKS), 1, 1, _BLOCK, 1, 1, 0, self.stream,
                self._addr, 0)
        return out


def _suffix(inner: tuple, shape: tuple) -> bool:
    """Whether ``inner`` broadcasts to ``shape`` along leading axes only (its last axes are ``shape``'s)."""
    k = 0
    while k < len(inner) and inner[k] == 1:
        k += 1
    core = inner[k:]
    return len(core) <= len(shape) and shape[len(shape) - len(core):] == core


#: a strided leaf (kind ``s``) is addressed in 32-bit arithmetic: outputs of at most this many elements
ROWS_MAX_ELEMENTS = 2**31 - 1


def _rows(d):
    """``(row length, row stride)`` in elements of a view ``d`` made of rows of contiguous elements a stride
    apart (``x[..., :half]`` of a joined projection's output), or None for any other layout."""
    axes = merged_axes(d.shape, d.strides)
    item = d.itemsize
    if len(axes) != 2 or axes[1][1] != item or axes[0][1] % item:
        return None
    return axes[1][0], axes[0][1] // item


#: elementwise kernels of at least this many elements take ``vec`` consecutive elements a thread (see
#: ``sources.elementwise_source``) where sizes and addresses allow
VEC_MIN = 1 << 15


def _column(inner: tuple, shape: tuple) -> int:
    """For a leaf of shape ``inner`` that broadcasts to ``shape`` along its trailing axes (and maybe leading ones),
    keeping a run of ``shape``'s axes between (``(4096, 1)`` against ``(4096, 8192)``): the output elements per
    leaf element (``w``: element ``i`` reads the leaf's ``(i // w) % size``); else 0."""
    pad = len(shape) - len(inner)
    if pad < 0:
        return 0
    full = (1,) * pad + tuple(inner)
    end = len(full)
    while end and full[end - 1] == 1:
        end -= 1
    start = end
    while start and full[start - 1] == shape[start - 1]:
        start -= 1
    if end == len(full) or any(s != 1 for s in full[:start]):
        return 0
    return prod(shape[end:])


def _vector(datas: list, kinds: str, params: list, n: int, dtype, out, sides: list | None = None) -> int:
    """How many consecutive elements a thread of an elementwise kernel over ``datas`` (their ``kinds``, launched
    with ``params``) takes: as many as fill 16 bytes of the widest array, where ``n``, every array's address, a
    broadcast leaf's size, a strided leaf's rows and a column leaf's width allow; else 1. (``sides``: the side
    outputs' arrays, aligned as the output must be.)"""
    size = np.dtype(dtype).itemsize
    widest = size
    for d in (*datas, *(sides or ())):
        if d.__class__ is _ndarray and d.itemsize > widest:
            widest = d.itemsize
    v = 16 // widest
    if v < 2 or n % v or (out is not None and (out.__class__ is int or out.data.ptr % (v * size))):
        return 1
    if sides and any(d.data.ptr % (v * d.itemsize) for d in sides):
        return 1
    at = 0  # (where the leaf's parameters start)
    for d, k in zip(datas, kinds):
        if k == "p" or k == "r" or k == "s":
            if d.data.ptr % (v * d.itemsize) or (k == "r" and d.size % v):
                return 1
            if k == "s" and any(x % v for x in _rows(d)):
                return 1
        elif k == "c" and params[at + 1] % v:  # (the leaf's width: a thread's elements must share its element)
            return 1
        at += _WIDTH[k]
    return v


def _compile(key, kinds: str, device: int, source_of, source_arg, vec: int = 1):
    """Compile (once per device) the kernel of ``key`` for leaves of ``kinds``, ``vec`` elements a thread;
    None if it cannot be written."""
    entry = None
    made = source_of(source_arg)
    sides = ()
    if made is not None and len(made) == 4:  # (a region with side outputs: their steps too)
        *made, side_steps = made
        sides = tuple((p, made[2][p]) for p in side_steps)
    if made is not None and 3 * len(kinds) + 5 + len(sides) <= _MAX_PARAMS:
        leaf_dtypes, program, node_dtypes = made
        lines = None
        # (not float16: CuPy's half type is a class of its own; bfloat16 is read and written as its storage)
        if all(d.name in C_TYPES and d.name != "float16" for d in (*leaf_dtypes, *node_dtypes)) and all(
                k in "prscu" for d, k in zip(leaf_dtypes, kinds) if d.name == "bfloat16"):  # (bits travel as "u")
            lines = steps(leaf_dtypes, program, node_dtypes)
        if lines is not None:
            name = f"umx_ew_{len(_kernels)}"
            try:
                module = cp.RawModule(code=elementwise_source(name, leaf_dtypes, kinds, lines, node_dtypes[-1], vec,
                                                              sides))
                pack = struct.Struct("<" + "".join(_PACK[k] for k in kinds) + "QqQQQ" + "Q" * len(sides)).pack_into
                entry = (module.get_function(name).kernel.ptr, module, pack)
            except Exception:  # NVRTC rejects the code: CuPy's kernels, now and for this structure
                entry = None
    _kernels[(key, kinds, device) if vec == 1 else (key, kinds, device, vec)] = entry
    return entry


#: full reductions of at most this many elements run as one block of umx's own kernel (a loss, a norm); larger ones
#: as a grid of blocks: each reduces a strided share, and the last to finish (it draws the last ticket) reduces the
#: blocks' results in block order, so the result is the same whatever order the blocks ran in. (CuPy's reduction
#: spends more host time per call than the launch of this kernel: bench/latency.py.)
MAX_REDUCE = 1 << 16
_REDUCE_BLOCKS = 1024


def zeroed(nbytes: int, stream: int):
    """Device memory of ``nbytes`` bytes, outside every pool, zeroed in the order of CUDA stream ``stream`` (the
    kernels that use it run there). Not by ``cudaMemset``: that runs on the legacy default stream, which a
    non-blocking stream does not wait for, so the first kernel could read the memory before it is zeroed."""
    mem = cp.cuda.Memory(nbytes)
    cp.cuda.runtime.memsetAsync(mem.ptr, 0, nbytes, stream)
    return mem


def _compile_reduce(kind: str, dtype, device: int):
    """Compile (once per device) the full reduction ``kind`` over ``dtype``; None if it cannot be written."""
    entry = None
    if dtype.name in C_TYPES and dtype.name not in ("float16", "bool") and dtype.kind != "c":
        name = f"umx_reduce_{len(_kernels)}"
        code = reduce_source(kind, dtype, name, _BLOCK)
        try:
            module = cp.RawModule(code=code)
            entry = (module.get_function(name).kernel.ptr, module, struct.Struct("<QqQQQQQQ").pack_into)
        except Exception:  # NVRTC rejects the code: CuPy's reduction, now and for this dtype
            entry = None
    _kernels[(kind, dtype, device)] = entry
    return entry


#: reductions over consecutive axes (``Launcher.reduce_axes``): of these kinds and dtypes, of at least AXES_MIN elements
#: (smaller ones keep CuPy's), in about _AXES_BLOCKS blocks, each thread adding at least AXES_MIN_ROWS / AXES_ROWS rows
AXES_MIN = 1 << 12
AXES_MIN_ROWS = 128
AXES_MAX_ROW = 1 << 14  # longer trailing rows (few, long outputs) keep CuPy's reduction
_AXES_BLOCKS = 2048
_AXES_KINDS = ("Sum", "Mean")
_AXES_DTYPES = ("float32", "float64", "bfloat16")
_MAX_GRID_Z = 65535


def _compile_axes(dtype, device: int):
    """Compile (once per device) the reductions over consecutive axes of ``dtype``; None if they cannot be
    written."""
    entry = None
    name = f"umx_axes_{len(_kernels)}"
    wide = dtype.name == "float64"
    try:
        module = cp.RawModule(code=axes_reduce_source(dtype, name))
        entry = (*(module.get_function(name + s).kernel.ptr for s in ("", "_done", "_one", "_rows")), module,
                 struct.Struct("<QqqqQd" if wide else "<QqqqQf4x").pack_into, np.float64 if wide else np.float32)
    except Exception:  # NVRTC rejects the code: CuPy's reduction, now and for this dtype
        entry = None
    _kernels[("axes", dtype, device)] = entry
    return entry


#: products ``a @ b`` whose right operand has at most this many columns (a matrix times a few vectors) may run on
#: umx's own kernel: cuBLAS spends more host time per call choosing how to compute such a shape than this
#: kernel's launch costs (see :meth:`Launcher.matmul`; bench/seed.py)
NARROW_MAX = 8
#: ... if ``a`` has at most this many elements (larger ones are worth cuBLAS's time), and rows at most this long
#: (one warp reads a row)
NARROW_MAX_ELEMENTS = 1 << 24
NARROW_MAX_K = 1 << 14


def _compile_narrow(char: str, n: int, device: int):
    """Compile (once per device) the product of rows of dtype ``char`` with a ``(k, n)`` matrix."""
    name = f"umx_narrow_{len(_kernels)}"
    code = narrow_source(char, n, name)
    try:
        module = cp.RawModule(code=code)
        entry = (module.get_function(name).kernel.ptr, module, struct.Struct("<QQQqq").pack_into)
    except Exception:  # NVRTC rejects the code: cuBLAS, now and for this shape
        entry = None
    _kernels[("matmul", char, n, device)] = entry
    return entry


#: how long a reader spins on a mirror's flag before it blocks on an event instead
SPIN_SECONDS = 50e-6


class Mirrors:
    """Pinned host slots that small kernel outputs are also written to, each with a flag the kernel raises.

    Launches into the slots are in one stream's order, so a slot's kernels never overlap; a slot is taken by a
    launch and given back once its reader has copied the value out (or the result is dropped unread), so a later
    kernel never overwrites a value being read.
    """

    SLOTS = 64
    SLOT_BYTES = MIRROR_MAX * 8

    def __init__(self):
        self._mem = cp.cuda.alloc_pinned_memory(self.SLOTS * (self.SLOT_BYTES + 8))  # mapped: kernels write it
        self.data = np.frombuffer(self._mem, np.uint8, self.SLOTS * self.SLOT_BYTES).reshape(self.SLOTS, -1)
        self.flags = np.frombuffer(self._mem, np.uint64, self.SLOTS, self.SLOTS * self.SLOT_BYTES)
        self.flags[:] = 0
        base = self._mem.ptr  # (pinned memory is mapped: kernels write the host's addresses)
        self._addresses = [(base + s * self.SLOT_BYTES, base + self.SLOTS * self.SLOT_BYTES + 8 * s)
                           for s in range(self.SLOTS)]
        self._free = list(range(self.SLOTS))
        self._token = 0

    def take(self, ex, seq: int):
        """A slot for node ``seq`` of executor ``ex``: ``(launch argument, reader)``, or None if all are taken."""
        if not self._free:
            return None
        slot = self._free.pop()
        self._token = token = self._token + 1
        return (*self._addresses[slot], token), MirrorRead(self, slot, token, ex, seq)

    def reserve(self):
        """``(slot, host pointer, flag pointer, token)`` of a free slot for a kernel to write its whole output to
        (the output then lives on the host, see :meth:`collect`), or None if all are taken. A packed result (see
        ``PACK_MAX_BYTES``) carries only the token's low 32 bits: the flag is cleared here, and those bits are
        never 0, so the host never takes an old write for this one."""
        if not self._free:
            return None
        slot = self._free.pop()
        token = self._token + 1
        if not token & 0xFFFFFFFF:
            token += 1
        self._token = token
        self.flags[slot] = 0  # (a kernel still writing this slot, interrupted earlier, is ahead in stream order)
        return (slot, *self._addresses[slot], token)

    def free(self, slot: int) -> None:
        """Give back a slot from :meth:`reserve` that will not be collected."""
        self._free.append(slot)

    def collect(self, slot: int, token: int, out: np.ndarray, stream) -> None:
        """Copy the output written to ``slot`` (see :meth:`reserve`) into host array ``out`` (of its shape and
        dtype) once its kernel, the last work enqueued on CUDA ``stream``, has raised the flag (see
        :func:`_await`; a failed kernel's error is raised). One element of at most ``PACK_MAX_BYTES`` comes packed
        in the flag (the kernel had no output pointer). The slot is free again after, whatever happens."""
        try:
            if out.size == 1 and out.itemsize <= PACK_MAX_BYTES:
                bits = out.view(_BITS[out.itemsize])  # (made while the kernel runs)
                bits[...] = _await(self.flags, slot, token & 0xFFFFFFFF, 32, stream.synchronize) & 0xFFFFFFFF
                return
            view = np.frombuffer(self._mem, out.dtype, out.size, slot * self.SLOT_BYTES).reshape(out.shape)
            _await(self.flags, slot, token, 0, stream.synchronize)
            np.copyto(out, view)
        finally:
            self._free.append(slot)


_BITS = {1: np.uint8, 2: np.uint16, 4: np.uint32}  # a packed result's bits, by its size (see Mirrors.collect)


def _await(flags: np.ndarray, slot: int, want: int, shift: int, block) -> int:
    """The word in flag ``slot`` once its bits from ``shift`` up read ``want``: a look, then spinning for up to
    ``SPIN_SECONDS`` (the usual wait: a few microseconds of GPU latency), then ``block()``, which returns once the
    kernel has finished or raises its error, and a last look."""
    word = int(flags[slot])
    if word >> shift == want:
        return word
    deadline = time.perf_counter() + SPIN_SECONDS
    while time.perf_counter() < deadline:
        word = int(flags[slot])
        if word >> shift == want:
            return word
    block()
    word = int(flags[slot])
    if word >> shift != want:
        # (a bug of umx's, never to be hidden: a kernel that did not run to its end wrote no result either)
        raise RuntimeError(f"umx: a kernel finished without writing its result to the host (slot {slot}: flag "
                           f"{word:#x}, wanted {want:#x} from bit {shift})")
    return word


class MirrorRead:
    """The pending host copy of one mirrored output (kept in the array's copies until it is read)."""

    __slots__ = ("mirrors", "slot", "token", "ex", "seq")

    def __init__(self, mirrors: Mirrors, slot: int, token: int, ex, seq: int):
        self.mirrors = mirrors
        self.slot = slot
        self.token = token
        self.ex = ex
        self.seq = seq

    def read(self, shape: tuple, dtype) -> np.ndarray:
        """The output on the host once the kernel's flag is up (see :func:`_await`)."""
        m = self.mirrors
        try:
            slot = self.slot
            view = np.frombuffer(m._mem, dtype, prod(shape), slot * m.SLOT_BYTES).reshape(shape)  # (meanwhile)
            _await(m.flags, slot, self.token, 0, self._wait)
            return view.copy()
        finally:
            self.release()

    def _wait(self) -> None:
        self.ex.wait(self.seq)  # the kernel has finished, or its error is raised here

    def release(self) -> None:
        """Give the slot back (once)."""
        if self.slot >= 0:
            self.mirrors._free.append(self.slot)
            self.slot = -1

    def __del__(self):
        self.release()
