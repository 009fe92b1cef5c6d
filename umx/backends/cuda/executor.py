"""The GPU stream's executor: a dispatcher thread that launches kernels (umx's own elementwise kernels, see
direct.py, and CuPy's) on a non-blocking CUDA stream.

It is assembled from parts, each owning one job: the dispatch of batches (this module), the one-task lane on the
caller's thread (lane.py), completion marks and held data (marks.py), waits and copies between streams
(transfers.py), CUDA graph replay (graphs.py) and traced batches (traced.py). Every path gives a node its output
through :meth:`CudaExecutor.settle`.
"""

from __future__ import annotations

from math import prod

import numpy as np

from ... import backends
from ...devices import cpu
from ...dtypes import bfloat16, float32, float64
from ...primitives import Round
from ...primitives.linalg import MATMUL, Matmul, matmul_operands
from ...primitives.misc import Compiled
from ...primitives.reduction import Var
from ...runtime import memory as _memory
from ...runtime.executor import HOST_READER, WorkerExecutor, conform, failure_of, kernel_args, run_steps, set_result
from ...runtime.fusion import ELEMENTWISE, Fused
from ...runtime.interfaces import Traits
from ...runtime.node import finish
from . import cublas, direct, graphs, matvec, pressure
from . import memory as gmem
from ._probe import _cupy
from .fast import NATIVE as FAST_NATIVE
from .fusion import KernelCache
from .kernels import device_args, make_table
from .lane import OWN, Lane
from .marks import Marks
from .pressure import SPILL_MIN_BYTES, track
from .quantized import NATIVE as QUANTIZED_NATIVE
from .softmax import NATIVE as SOFTMAX_NATIVE
from .traced import TracedBatches
from .transfers import HOST_ONLY, Transfers

cp = _cupy()
_runtime = cp.cuda.runtime
KERNELS = make_table()
_cupy_matmul = KERNELS[Matmul]
#: primitive class -> its kernel on the inputs' data as stored (bfloat16 unwidened), asked before the kernel table:
#: mx.fast's, the quantized product for a few rows, softmax and logsumexp over the last axis
NATIVE = {**FAST_NATIVE, **QUANTIZED_NATIVE, **SOFTMAX_NATIVE}
_NARROW_DTYPES = (float32, float64)  # products umx's own kernel may compute (bfloat16: see cublas.bf16_matmul)
_FUSED = KernelCache(cp)
_memory.register_location(cp.ndarray, gmem.LOCATION)
_memory.register_pinned_allocator(gmem.pinned_empty)
_memory.register_uploader(gmem.Upload)


class CudaExecutor(Lane, Transfers, TracedBatches, WorkerExecutor):
    """A GPU stream: a dispatcher thread enqueuing CuPy kernels, in stream order, on its own CUDA stream.
    While a trace records, batches run through ``TracedBatches.run_traced`` (ops timed with CUDA events).

    What graphs.py, traced.py and memory.py may use: ``marks`` (see marks.py), ``hints``, ``wait_for``,
    ``fetch`` and ``publish`` (transfers.py), ``single``, ``run_fused`` and ``settle``."""

    def __init__(self, stream):
        self.index = stream.device.index
        # created on the caller's thread: the Device context restores the caller's current device on exit
        with cp.cuda.Device(self.index):
            self.cuda_stream = cp.cuda.Stream(non_blocking=True)
            self.copy_stream = cp.cuda.Stream(non_blocking=True)
        self.marks = Marks(self.cuda_stream, self.index)
        self.hints: dict = {}  # seq -> devices that will read the node (from the planner)
        # set once memory pressure has spilled anything: from then on every input is fetched (see pressure.py)
        self.fetch_all = False
        pressure.SPILL_LISTENERS.append(self._spilled)  # (first: a spill from here on is heard, an earlier one seen)
        if pressure.has_spilled():
            self.fetch_all = True
        self._graphs = graphs.Graphs(self)
        self._direct = direct.Launcher(self.index, self.cuda_stream.ptr)
        self._mirrors = None  # small outputs the host reads at once (made on first use: pinned memory)
        self._spares: dict = {}  # (shape, dtype) -> an output for the lane's next own launch (see _refill)
        super().__init__(stream, f"umx-gpu{self.index}-stream-{stream.index}")
        backends.register_executor(self)

    # -- called by the scheduler and by other executors -------------------------------------------------------
    traits = Traits(
        # NumPy scalars (constants) go straight to kernels. Device data takes the slow path even here: it may come
        # from another stream whose kernel is still running.
        local_types=frozenset(t for t in np.sctypeDict.values() if issubclass(t, np.generic)),
        # One generated kernel per region: NVRTC's time grows with the code, and a chain of 100k ops would take
        # minutes to compile. Longer chains become several kernels, of one cached structure.
        fuse_max_nodes=1024,
        programs=True,  # (as one CUDA graph each: see graphs.Graphs.run_program)
        overlaps_host=True,
        side_outputs=1 << 62,  # (any size: a graph or one kernel writes them all, on any number of elements)
    )

    def only_enqueues(self, tasks: list) -> bool:
        # The primitives a CUDA graph may capture are those whose kernels never wait for the device; and no input
        # may need a copy made on the host first (a stage into pinned memory is host work: leave it to the
        # dispatcher, beside the caller's own).
        dev = self.device
        for t in tasks:
            if type(t) is tuple:
                n = t[0]
                for x in n._inputs:
                    d = x._data
                    if ((type(d) is np.ndarray and (x._copies is None or dev not in x._copies))
                            or (type(d) is cp.ndarray and d.device.id != self.index)):
                        return False
            else:
                n = t
            if type(n) is not Fused and (n._siblings is not None or not graphs.capturable(n)):
                return False
        return True

    def will_be_read_on(self, node, device) -> None:
        if node._seq > self.done:
            hints = self.hints
            seen = hints.get(node._seq)
            if seen is None:
                hints[node._seq] = HOST_ONLY if device is HOST_READER else {device}
            elif seen is HOST_ONLY:
                hints[node._seq] = {HOST_READER, device}
            else:
                seen.add(device)

    def synchronize(self) -> None:
        super().synchronize()
        # Data held for reads that have passed goes now, not with the next batch: after a synchronize, memory
        # statistics count only what arrays hold. (Under the run lock, which every change of held data is made in.)
        if self.marks.held and self._run_lock.acquire(blocking=False):
            try:
                self.marks.release()
            finally:
                self._run_lock.release()

    def wait(self, seq: int) -> None:
        """Block until node ``seq`` has finished on the GPU (the host may read its data)."""
        marks = self.marks
        if seq <= marks.complete:
            return
        WorkerExecutor.wait(self, seq)
        dispatched = self.done
        if marks.idle():
            # All that was enqueued has finished (after a CPU batch, the product the seed launched first).
            marks.passed(dispatched)
            return
        mark = marks.covering(seq, dispatched)
        if mark is not None:
            mark[1].synchronize()
            marks.passed(mark[0])

    def _spilled(self) -> None:
        # (called by pressure.py under its lock: an input this stream made may since have moved to the host)
        self.fetch_all = True

    # -- the dispatcher --------------------------------------------------------------------------------------------
    def setup_thread(self) -> None:
        # this thread's CuPy state only: its device, its stream, umx's pool. Never ``with stream:`` on this
        # thread afterwards: CuPy's stream context falls back to the null stream, not to the one set here.
        cp.cuda.Device(self.index).use()
        self.cuda_stream.use()
        # kept: the context manager restores the previous allocator when it is collected
        self._allocator = cp.cuda.using_allocator(gmem.malloc)
        self._allocator.__enter__()

    def run_batch(self, tasks: list) -> None:
        try:
            # a batch seen before may replay as a CUDA graph (see graphs.py); else, or the first time, op by op
            if (len(tasks) < graphs.MIN_TASKS or not graphs.ENABLED or self.fetch_all
                    or not self._graphs.run(tasks)):
                self._run(tasks)
        finally:
            self._end_batch()

    def _end_batch(self) -> None:
        # (no mark here: whoever waits for a node of this batch records one if it needs it, see Marks.covering)
        self.marks.release()
        gmem.LOCATION.sample_peak()

    def _run(self, tasks: list) -> None:
        hints = self.hints
        held: list = []
        for i in range(len(tasks)):
            t = tasks[i]
            if type(t) is tuple or type(t) is Fused:
                n, waits = t if type(t) is tuple else (t, None)
                ins = n._inputs
                try:
                    if waits:
                        self.wait_for(waits)
                    args = (self.fetch(ins, held) if waits is not None or self.fetch_all
                            else [x._data for x in ins])
                    mirror = self.mirror_for(n) if hints else None
                    if type(n) is Fused:
                        out = self.run_fused(n, args, mirror)
                    else:
                        out = self.single(n, args, mirror)
                except Exception as e:  # Ctrl-C and exits propagate (see run_inline): they are no op's failure
                    out = failure_of(n, ins, e)
                args = None
            else:
                n = t
                ins = n._inputs
                try:
                    # (after a spill, an input this stream made may since have moved to the host)
                    args = self.fetch(ins, held) if self.fetch_all else [x._data for x in ins]
                    out = self.single(n, args, self.mirror_for(n) if hints else None)
                except Exception as e:  # Ctrl-C and exits propagate (see run_inline): they are no op's failure
                    out = failure_of(n, ins, e)
                args = None
            self.settle(n, out)
            # Drop the batch's references before publishing: a waiter woken by finished() may check that
            # intermediates (a fused region's members) are gone. (After the data is set: an interrupted batch
            # hands its tasks without data to the worker, see run_inline.)
            t = ins = None
            tasks[i] = None
            if type(n) is Fused:
                n = n.root  # the node that other streams read
            if hints:
                self.announce(n)
            self.finished(n._seq)
        if held:
            self.marks.hold(self.marks.record(self.done), held)

    def settle(self, n, out) -> bool:
        """Give task ``n`` (a node, a node with siblings, or a fused region) its output ``out`` (a tuple for
        siblings, a Failure if it failed): every path that runs a node ends here. Device outputs big enough to
        spill are registered with pressure.py; True if there was one."""
        big = False
        c = type(out)
        if c is cp.ndarray:
            if out.nbytes >= SPILL_MIN_BYTES:
                track(n.root if type(n) is Fused else n)
                big = True
        elif c is tuple:
            for s, o in zip(n._siblings, out):
                if type(o) is cp.ndarray and o.nbytes >= SPILL_MIN_BYTES:
                    track(s)
                    big = True
        if n._siblings is None and type(n) is not Fused:
            finish(n, out)
        else:
            set_result(n, out)
        return big

    def single(self, n, args: list, mirror=None):
        """Node ``n``'s output (a tuple for siblings) as it declares it: umx's own kernel where one applies (see
        :meth:`own`), else the kernel table's (CuPy's, on this thread's current stream and allocator).
        ``mirror``: see :meth:`mirror_for`."""
        p = n._prim
        c = p.__class__
        if c in OWN:
            out = self.own(n, args, mirror[0] if mirror is not None else None)
            if out is not None:
                if mirror is not None:
                    _memory.set_copy(n, gmem.MIRROR, mirror[1])
                return out
        elif c is Matmul and type(args[0]) is cp.ndarray and type(args[1]) is cp.ndarray:
            a, b = matmul_operands(p, *args)
            if n._dtype in _NARROW_DTYPES:
                out = self._direct.matmul(a, b, n._shape)  # a matrix times a few vectors
            elif n._dtype is bfloat16:  # on the 16-bit storage, float32 accumulation
                out = matvec.bf16_matvec(a, b, n._shape) if matvec.ENABLED else None
                if out is None:
                    out = cublas.bf16_matmul(a, b)  # (cuBLAS)
            else:
                out = None
            if out is not None:
                return out
        elif c is Compiled:  # a compiled function's whole graph, as one CUDA graph
            return self._graphs.run_program(n, args)
        elif c in NATIVE:  # on bfloat16's storage as it is (no widening, no narrowing)
            out = NATIVE[c](n, args)
            if out is not None:
                return conform(cp, n, out)
        elif c is Var and type(args[0]) is cp.ndarray and n._dtype in _NARROW_DTYPES:
            out = self._variance(n, args[0])
            if out is not None:
                return out
        out = _call(KERNELS[c], p, kernel_args(p, n._inputs, args, cp))
        return conform(cp, n, out)

    def own(self, n, args: list, mirror=None, out=None):
        """Node ``n``'s output by umx's own kernel (see direct.py), for a primitive of ``OWN``: an elementwise node,
        a full reduction or one over consecutive axes; None where none applies. ``mirror``: the kernel's mirror
        arguments (see ``Launcher.run``); ``out``: where to write, as for ``Launcher.run``."""
        p = n._prim
        c = p.__class__
        if c in ELEMENTWISE:
            ins = n._inputs
            if c is Round:
                key = (c, n._dtype, ins[0]._dtype, p.decimals)
            elif len(ins) == 2:  # (spelled out: a comprehension is a call, on the path of every small op)
                key = (c, n._dtype, ins[0]._dtype, ins[1]._dtype)
            else:
                key = (c, n._dtype, *[x._dtype for x in ins])
            return self._direct.run(key, _node_program, n, args, n._shape, n._dtype.np, mirror, out)
        x = args[0]
        if type(x) is cp.ndarray:
            if len(p.axes) == x.ndim:
                return self._direct.reduce(c.__name__, x, n._shape, n._dtype, mirror, out)
            if mirror is None and out is None:
                return self._direct.reduce_axes(c.__name__, x, p.axes, n._shape, n._dtype)
        return None

    def _variance(self, n, x):
        """A variance over consecutive axes by umx's reductions (see ``Launcher.reduce_axes``): the mean, then the
        mean square of the deviations from it, as NumPy computes it; None where those do not apply."""
        p = n._prim
        count = prod(x.shape[a] for a in p.axes)
        if count <= p.ddof:
            return None
        kept = tuple(1 if i in p.axes else s for i, s in enumerate(x.shape))
        mean = self._direct.reduce_axes("Mean", x, p.axes, kept, n._dtype)
        if mean is None:
            return None
        d = cp.subtract(x, mean)
        cp.multiply(d, d, out=d)
        out = self._direct.reduce_axes("Sum", d, p.axes, n._shape, n._dtype)
        if out is not None:
            out /= count - p.ddof
        return out

    def mirror_for(self, n):
        """``(launch argument, reader)`` of a mirror slot (see direct.Mirrors) if the host will read node ``n``
        (a hint from the planner), umx's own kernel may compute it, and it is small enough; else None."""
        if type(n) is not Fused and n._prim.__class__ not in OWN:
            return None
        devices = self.hints.get(n._seq)
        if devices is None or (devices is not HOST_ONLY and not _reads_on_host(devices)):
            return None
        root = n.root if type(n) is Fused else n
        if root._siblings is not None or not 0 < prod(root._shape) <= direct.MIRROR_MAX or (type(n) is Fused
                                                                                           and n.sides):
            return None  # (an empty output launches no kernel: nothing would raise the flag)
        if self._mirrors is None:
            self._mirrors = direct.Mirrors()
        return self._mirrors.take(self, root._seq)

    def run_fused(self, f, leaves: list, mirror=None, into=None, side_into: dict | None = None):
        """A fused region: one kernel of umx's (see direct.py) or a generated ElementwiseKernel, or (a structure
        CUDA code cannot express) its steps one by one. Both read and write bfloat16 as its 16-bit storage.
        ``into``: a contiguous array of the output's shape and dtype to write (one of the leaves may be it: each
        thread of umx's kernel reads its elements before it writes them); None is returned where umx's kernel
        does not take the region, and nothing is written. A region with side outputs (see ``fusion.merge``)
        leaves them in ``f.side_values``; ``side_into`` maps some of them to arrays to write, as ``into``."""
        root = f.root
        shape = root._shape
        sides = None
        if f.sides:  # (each a new array of the root's shape unless given; no mirror: mirror_for gives none)
            nodes = f.nodes
            sides = [side_into[k] if side_into and k in side_into else cp.empty(shape, nodes[p]._dtype.np)
                     for k, p in enumerate(f.sides)]
        out = self._direct.run(f.key, _region_program, f, leaves, shape, root._dtype.np,
                               mirror[0] if mirror is not None else None, into, sides)
        if out is not None:
            if sides is not None:
                f.side_values = sides
            elif mirror is not None and into is None:
                _memory.set_copy(root, gmem.MIRROR, mirror[1])
            return out
        if into is not None or side_into:
            return None
        kernel = _FUSED.get(f)
        if kernel is not None:
            out = cp.empty(shape, root._dtype.np)
            try:
                if sides is None:
                    kernel(*leaves, out)
                else:
                    kernel(*leaves, out, *sides)
                    f.side_values = sides
                return out
            except Exception:  # e.g. NVRTC rejects the generated code: step by step, now and for this structure
                _FUSED.refuse(f)
        return run_steps(f, leaves, lambda prim, args: _call(KERNELS[prim.__class__], prim, args), cp)

    def _fail_rest(self, tasks: list, error: BaseException) -> None:
        super()._fail_rest(tasks, error)
        self.marks.record(self.done)


def _node_program(n) -> tuple:
    """``(leaf dtypes, program, node dtypes)`` of one elementwise node, for umx's own kernel (see direct.py)."""
    ins = n._inputs
    return [x._dtype for x in ins], ((n._prim, tuple(range(len(ins)))),), [n._dtype]


def _region_program(f) -> tuple:
    """``(leaf dtypes, program, node dtypes)`` of fused region ``f``, for umx's own kernel (see direct.py), and
    its side outputs' steps where it has some."""
    made = [x._dtype for x in f.leaves], f.program, [m._dtype for m in f.nodes]
    return (*made, f.sides) if f.sides else made


def _reads_on_host(devices) -> bool:
    for d in devices:
        if d is HOST_READER or d.type is cpu:
            return True
    return False


def _matmul(prim, a, b):
    """Products through umx's own cuBLAS handle for the current stream (capturable, see cublas.py); CuPy's for
    what that does not cover."""
    a, b = matmul_operands(prim, a, b)
    if type(a) is cp.ndarray and type(b) is cp.ndarray:
        h = cublas.current()
        if h is not None:
            out = cublas.matmul(h, a, b)
            if out is not None:
                return out
    return _cupy_matmul(MATMUL, a, b)  # (the operands as read)


KERNELS[Matmul] = _matmul


def _call(kernel, prim, args: list):
    try:
        return kernel(prim, *args)
    except Exception:
        # NumPy scalars go straight to CuPy's ufuncs; the kernels that refuse them get 0-d device arrays instead
        if not any(isinstance(a, (np.generic, np.ndarray)) for a in args):
            raise
        return kernel(prim, *device_args(args))
