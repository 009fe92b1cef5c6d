"""The GPU stream's executor: a dispatcher thread that launches kernels (umx's own elementwise kernels, see
direct.py, and CuPy's) on a non-blocking CUDA stream.

For a GPU executor ``done`` counts nodes *dispatched* (their kernels enqueued), not finished. Completion is
tracked with *marks*: CUDA events recorded after a node, kept as ``(seq, event)`` in seq order; once a mark's
event has passed, every node up to its seq has finished. Marks are recorded only where someone needs one: after a
node that the planner says another stream will read (``will_be_read_on``), and by a thread that waits for a node
no mark covers yet (``mark_for``: any thread may record an event on the stream). So a chain of 500 kernels costs
at most one event, and a batch nobody waits on costs none.

Cross-stream dependencies never stall the GPU or the caller:

- GPU after GPU: the consumer's dispatcher waits until the producer has *dispatched* the node, then enqueues
  ``cudaStreamWaitEvent`` on the producer's mark.
- CPU after GPU: the producer starts the copy to pinned host memory right after the kernel, on its copy stream;
  the CPU worker waits on that copy's event (``wait`` and ``memory.GpuLocation.to_host``).
- GPU after CPU: the dispatcher waits for the CPU node, then enqueues the copy (pinned stage, copy stream, event)
  and the kernel; only the dispatcher thread blocks, never the caller and never a GPU kernel.
"""

from __future__ import annotations

import threading
from math import prod

import numpy as np

from ... import backends
from ...devices import cpu
from ...dtypes import float32, float64
from ...primitives import Round
from ...primitives.linalg import Matmul
from ...primitives.reduction import Max, Mean, Min, Sum
from ...runtime import memory as _memory
from ...runtime import tracing as _tracing
from ...runtime.executor import HOST_READER, Failure, WorkerExecutor, conform, failure_of, run_steps, set_result
from ...runtime.fusion import ELEMENTWISE, Fused
from ...runtime.interfaces import Traits
from ...runtime.node import finish, finish_on_host
from ...runtime.threads import CORES
from . import cublas, direct, graphs
from . import memory as gmem
from ._probe import _cupy
from .fusion import KernelCache
from .kernels import device_args, make_table
from .pressure import SPILL_MIN_BYTES, spilled, track, track_copy
from .traced import TracedBatches

cp = _cupy()
_runtime = cp.cuda.runtime
KERNELS = make_table()
_cupy_matmul = KERNELS[Matmul]
_REDUCTIONS = frozenset({Sum, Max, Min, Mean})  # full ones: umx's own kernel (see direct.py)
_OWN = ELEMENTWISE | _REDUCTIONS  # primitives umx's own kernels may compute (and mirror)
_NARROW_DTYPES = (float32, float64)  # products umx's own kernel may compute (bfloat16 is rounded by CuPy's path)
_FUSED = KernelCache(cp)
_empty = cp.ndarray  # (the constructor: from this thread's allocator)
_memory.register_location(cp.ndarray, gmem.LOCATION)
_memory.register_pinned_allocator(gmem.pinned_empty)
_memory.register_uploader(gmem.Upload)
_PARTS_MIN_BYTES = 1 << 24  # results a CPU reads are copied to the host in parts from this size
_MAX_MARKS = 16  # above this many marks, passed ones are dropped (cheap lookups, bounded memory)
_MAX_SPARES = 16  # spare outputs per stream, one per (shape, dtype) of small own outputs (see _refill)
_HOST_ONLY = frozenset((HOST_READER,))  # the commonest hint (an item()), one object for all: no set made per hint


class CudaExecutor(TracedBatches, WorkerExecutor):
    """A GPU stream: a dispatcher thread enqueuing CuPy kernels, in stream order, on its own CUDA stream.
    While a trace records, batches run through ``TracedBatches.run_traced`` (ops timed with CUDA events)."""

    def __init__(self, stream):
        self.index = stream.device.index
        # created on the caller's thread: the Device context restores the caller's current device on exit
        with cp.cuda.Device(self.index):
            self.cuda_stream = cp.cuda.Stream(non_blocking=True)
            self.copy_stream = cp.cuda.Stream(non_blocking=True)
        self._marks: list = []  # (seq, event), recorded in stream order; guarded by _mark_lock
        self._mark_lock = threading.RLock()  # (reentrant: a signal handler on a thread that holds it may wait)
        self._complete = 0  # every node up to this seq has finished on the GPU
        self._marked = 0  # the seq of the last mark
        self._held: list = []  # (event, refs): data that GPU work reads, kept alive until event has passed
        self._hints: dict = {}  # seq -> devices that will read the node (from the planner)
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
            if type(n) is not Fused and (n._siblings is not None or n._prim.__class__ not in graphs.CAPTURABLE):
                return False
        return True

    def run_lane(self, task, read: bool) -> None:
        # (the lane plans nothing while a trace records; a host read goes to _run_one as is, not through _hints)
        if not spilled[0]:
            args = self._alone(task)
            if args is not None:
                self._run_one(task[0] if type(task) is tuple else task, args, None, read)
                return
        super().run_lane(task, read)

    def run_inline(self, tasks: list, started=None) -> None:
        # The caller launches its own batch (two thread hand-offs saved: most of a small op's latency).
        if len(tasks) == 1 and not spilled[0] and _tracing.active is None:
            t = tasks[0]
            args = self._alone(t)
            if args is not None:
                n = t[0] if type(t) is tuple else t
                hints = self._hints
                read = bool(hints) and hints.get(n._seq) is _HOST_ONLY
                if read:
                    del hints[n._seq]
                self._run_one(n, args, started, read)
                return
        # CuPy's device, stream and allocator are per thread: set here for the batch, the caller's restored after.
        prev_device = _runtime.getDevice()
        if prev_device != self.index:
            _runtime.setDevice(self.index)
        prev_alloc = gmem.use_allocator()
        prev_stream = cp.cuda.get_current_stream()
        self.cuda_stream.use()  # (not ``with``: CuPy's stream context restores the null stream, not prev)
        try:
            WorkerExecutor.run_inline(self, tasks, started)
        finally:
            prev_stream.use()
            gmem.restore_allocator(prev_alloc)
            if prev_device != self.index:
                _runtime.setDevice(prev_device)

    def _alone(self, t):
        """The arguments of task ``t`` if it may take the one-task lane (:meth:`_run_one`), else None: one node (no
        region, no siblings) whose inputs are this stream's data, constants, or, for an elementwise node,
        one-element host arrays, which travel to the kernel as constants do (no copy to the device at all)."""
        if type(t) is not tuple:
            if type(t) is Fused or t._siblings is not None:
                return None
            return [x._data for x in t._inputs]  # (the planner's plain task: this stream's data or constants)
        n, waits = t
        if waits or type(n) is Fused or n._siblings is not None:
            return None
        args = []
        for x in n._inputs:
            d = x._data
            c = d.__class__
            if c is cp.ndarray:
                if x._exec is not self:
                    return None  # another stream's or the user's: the batch path orders this stream after it
            elif c is np.ndarray:
                if d.size != 1 or d.dtype.kind not in "fiub" or n._prim.__class__ not in ELEMENTWISE:
                    return None
                d = d[()] if not d.ndim else d.reshape(-1)[0]
            elif c not in self.traits.local_types:
                return None  # e.g. a failed input: the batch path passes its error on
            args.append(d)
        return args

    def _run_one(self, n, args: list, started, read: bool) -> None:
        """``run_inline`` of one node with its arguments (see :meth:`_alone`): what ``_run`` does for it, without a
        batch's loop and bookkeeping. It is the commonest eval of all (``(x + 1).item()``), and its latency is host
        time up to the kernel's launch, then the GPU's: work that can wait for the launch waits. umx's own kernel
        is launched without touching CuPy's per-thread state, into a spare output (see :meth:`_refill`) or, for a
        small result the host reads at once (``read``), into host memory (:meth:`_run_to_host`); anything else
        runs with that state set, as a batch does. Ctrl-C is handled as ``WorkerExecutor.run_inline`` does."""
        prev_device = -1
        try:
            prev_device = _runtime.getDevice()
            if prev_device != self.index:
                _runtime.setDevice(self.index)
            if not (read and self._run_to_host(n, args, started)):
                self._run_on_device(n, args, started)
        except BaseException:
            if n._data is None:
                self._resume = [(n, [])]  # (as a task whose inputs may need a copy: a host one travels so there)
                self._queue.put(None)  # the worker runs it, before anything queued later
            elif n._seq > self.done:
                self.finished(n._seq)
            raise
        finally:
            if prev_device != self.index and prev_device >= 0:
                _runtime.setDevice(prev_device)
            self._run_lock.release()

    def _run_to_host(self, n, args: list, started) -> bool:
        """The lane's path for a small result that the host reads at once (an ``item()``) and nothing else is
        planned to read: umx's own kernel writes the whole output to a mirror's slot (mapped host memory), and the
        node's data is the host array copied from there. It lives on the host from then on, as if made from host
        data: a later GPU reader takes a one-element array as a constant, or copies it in. No device buffer is
        allocated and no copy is enqueued: the launch, then the GPU's latency, then one look at the flag. False
        where this does not apply (nothing done)."""
        if n._prim.__class__ not in _OWN:
            return False
        size = prod(n._shape)
        if not 0 < size <= direct.MIRROR_MAX:
            return False
        mirrors = self._mirrors
        if mirrors is None:
            mirrors = self._mirrors = direct.Mirrors()
        got = mirrors.reserve()
        if got is None:
            return False
        slot, host, flag, token = got
        if size == 1 and n._dtype.np.itemsize <= direct.PACK_MAX_BYTES:
            host = 0  # (packed in the flag, see direct.PACK_MAX_BYTES)
        ins = n._inputs
        try:
            launched = self._own(n, args, (0, flag, token), host) is not None
        except Exception as e:  # Ctrl-C and exits propagate (see _run_one): they are no op's failure
            launched = None
            data = failure_of(n, ins, e)
        if launched is False:
            mirrors.free(slot)
            return False
        try:
            if started is not None:
                started()  # (while the kernel runs)
        except BaseException:
            mirrors.free(slot)  # (a later kernel that takes it runs after this one, in stream order)
            raise
        if launched:
            try:
                data = np.empty(n._shape, n._dtype.np)  # (made and counted while the kernel runs)
                _memory.acquire(data)
            except BaseException:
                mirrors.free(slot)
                raise
            try:
                mirrors.collect(slot, token, data, self.cuda_stream)  # (frees the slot)
            except Exception as e:  # the kernel failed
                data = failure_of(n, ins, e)
        else:
            mirrors.free(slot)
        if type(data) is not Failure:
            finish_on_host(n, data)  # host data from now on (counted above)
        else:
            finish(n, data)
        self.finished(n._seq)
        if self._held:
            self._release()
        return True

    def _run_on_device(self, n, args: list, started) -> None:
        """The lane's path for a result on the device: umx's own kernel into a spare output, else ``_single``
        with CuPy's state set; then the bookkeeping of ``_run``."""
        ins = n._inputs
        spare = None
        try:
            mirror = self._mirror_for(n) if self._hints else None
            out = None
            if n._prim.__class__ in _OWN:
                spare = self._spares.pop((n._shape, n._dtype), None)
                if spare is not None:
                    out = self._own(n, args, mirror[0] if mirror is not None else None, spare)
                    if out is None:
                        self._spares[(n._shape, n._dtype)] = spare
                        spare = None
                    elif mirror is not None:
                        _memory.set_copy(n, gmem.MIRROR, mirror[1])
            if out is None:
                out = self._with_state(n, args, mirror)
        except Exception as e:  # Ctrl-C and exits propagate (see _run_one): they are no op's failure
            out = failure_of(n, ins, e)
        big = type(out) is cp.ndarray and out.nbytes >= SPILL_MIN_BYTES
        if big:
            track(n)
        finish(n, out)
        ins = ()
        if started is not None:
            started()  # (after the launch: a Ctrl-C held meanwhile finds the node done, and publishes it)
        if self._hints:
            self._announce(n)
        self.finished(n._seq)
        if self._held:
            self._release()
        if big:  # (the peak also counts what is live when it is read: a small result need not be sampled)
            gmem.LOCATION.sample_peak()
        elif spare is not None:
            self._refill(n)  # (while the kernel runs)

    def _with_state(self, n, args: list, mirror):
        """``_single`` on the caller's thread with this stream's CuPy state set (device already set), the
        caller's restored after; then a spare output for the lane, if ``n`` is small and umx's own (see
        :meth:`_refill`)."""
        prev_alloc = gmem.use_allocator()
        prev_stream = cp.cuda.get_current_stream()
        self.cuda_stream.use()
        try:
            out = self._single(n, args, mirror)
            if (type(out) is cp.ndarray and n._prim.__class__ in _OWN and out.size <= direct.MIRROR_MAX
                    and len(self._spares) < _MAX_SPARES):
                self._spares[(n._shape, n._dtype)] = _empty(n._shape, n._dtype.np)
            return out
        finally:
            prev_stream.use()
            gmem.restore_allocator(prev_alloc)

    def _refill(self, n) -> None:
        """A new spare output of node ``n``'s shape and dtype, for the lane's next launch of that kind. CuPy's pool
        hands out memory per current stream (a block is reused in its stream's order), so it is allocated with
        this stream current; the lane calls this after its launch, while the GPU runs the kernel."""
        prev_alloc = gmem.use_allocator()
        prev_stream = cp.cuda.get_current_stream()
        self.cuda_stream.use()
        try:
            self._spares[(n._shape, n._dtype)] = _empty(n._shape, n._dtype.np)
        except Exception:  # e.g. the pool's limit: the next launch of this kind allocates its own
            pass
        finally:
            prev_stream.use()
            gmem.restore_allocator(prev_alloc)

    def will_be_read_on(self, node, device) -> None:
        if node._seq > self.done:
            hints = self._hints
            seen = hints.get(node._seq)
            if seen is None:
                hints[node._seq] = _HOST_ONLY if device is HOST_READER else {device}
            elif seen is _HOST_ONLY:
                hints[node._seq] = {HOST_READER, device}
            else:
                seen.add(device)

    def synchronize(self) -> None:
        super().synchronize()
        # Data held for reads that have passed goes now, not with the next batch: after a synchronize, memory
        # statistics count only what arrays hold. (Under the run lock, which every change of _held is made in.)
        if self._held and self._run_lock.acquire(blocking=False):
            try:
                self._release()
            finally:
                self._run_lock.release()

    def wait(self, seq: int) -> None:
        """Block until node ``seq`` has finished on the GPU (the host may read its data)."""
        if seq <= self._complete:
            return
        WorkerExecutor.wait(self, seq)
        dispatched = self.done
        with self._mark_lock:  # (a stream that captures a CUDA graph may not be queried: the capture holds this)
            idle = self.cuda_stream.done
        if idle:
            # All that was enqueued has finished (after a CPU batch, the product the seed launched first). One
            # query costs less than recording an event and waiting on it.
            if dispatched > self._complete:
                self._complete = dispatched
            return
        mark = self.mark_for(seq)
        if mark is not None:
            mseq, event = mark
            event.synchronize()
            if mseq > self._complete:
                self._complete = mseq

    def mark_for(self, seq: int):
        """``(mseq, event)``: a mark at or after node ``seq``, or None if it is known to be finished. The caller
        MUST know that ``seq`` is dispatched (its kernel enqueued): if no mark covers it yet, one is recorded here,
        after everything enqueued so far (any thread may record an event on the stream)."""
        with self._mark_lock:
            if seq <= self._complete:
                return None
            for m in self._marks:
                if m[0] >= seq:
                    return m
            dispatched = max(self.done, seq)  # read before recording: the event follows every node up to it
            if _runtime.getDevice() == self.index:
                event = cp.cuda.Event(disable_timing=True)
                event.record(self.cuda_stream)
            else:
                with cp.cuda.Device(self.index):
                    event = cp.cuda.Event(disable_timing=True)
                    event.record(self.cuda_stream)
            return self._add_mark(dispatched, event)

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
            if len(tasks) < graphs.MIN_TASKS or not graphs.ENABLED or spilled[0] or not self._graphs.run(tasks):
                self._run(tasks)
        finally:
            self._end_batch()

    def _end_batch(self) -> None:
        # (no mark here: whoever waits for a node of this batch records one if it needs it, see mark_for)
        self._release()
        gmem.LOCATION.sample_peak()

    def _run(self, tasks: list) -> None:
        hints = self._hints
        held: list = []
        for i in range(len(tasks)):
            t = tasks[i]
            if type(t) is tuple or type(t) is Fused:
                n, waits = t if type(t) is tuple else (t, None)
                ins = n._inputs
                try:
                    if waits:
                        self._wait_for(waits)
                    args = (self._fetch(ins, held) if waits is not None or spilled[0]
                            else [x._data for x in ins])
                    mirror = self._mirror_for(n) if hints else None
                    if type(n) is Fused:
                        out = self._run_fused(n, args, mirror)
                    else:
                        out = self._single(n, args, mirror)
                except Exception as e:  # Ctrl-C and exits propagate (see run_inline): they are no op's failure
                    out = failure_of(n, ins, e)
                args = None
            else:
                n = t
                ins = n._inputs
                try:
                    # (after a spill, an input this stream made may since have moved to the host)
                    args = self._fetch(ins, held) if spilled[0] else [x._data for x in ins]
                    out = self._single(n, args, self._mirror_for(n) if hints else None)
                except Exception as e:  # Ctrl-C and exits propagate (see run_inline): they are no op's failure
                    out = failure_of(n, ins, e)
                args = None
            if type(out) is not tuple and type(out) is not Failure:
                if out.nbytes >= SPILL_MIN_BYTES and type(out) is cp.ndarray:
                    track(n.root if type(n) is Fused else n)
            elif type(out) is tuple:
                for s, o in zip(n._siblings, out):
                    if type(o) is cp.ndarray and o.nbytes >= SPILL_MIN_BYTES:
                        track(s)
            if n._siblings is None and type(n) is not Fused:
                finish(n, out)
            else:
                set_result(n, out)
            # Drop the batch's references before publishing: a waiter woken by finished() may check that
            # intermediates (a fused region's members) are gone. (After the data is set: an interrupted batch
            # hands its tasks without data to the worker, see run_inline.)
            t = ins = None
            tasks[i] = None
            if type(n) is Fused:
                n = n.root  # the node that other streams read
            if hints:
                self._announce(n)
            self.finished(n._seq)
        if held:
            self._mark()
            self._held.append((self._marks[-1][1], held))

    def _announce(self, n) -> None:
        """Act on the planner's hints for node ``n``, just run: mark it for the streams that will read it, and
        start its copy to the host for a CPU stream (see :meth:`_publish`)."""
        devices = self._hints.pop(n._seq, None)
        if devices is _HOST_ONLY:
            return  # (served by a mirror, or else by the reader's own copy on demand: see _publish)
        if devices is not None and n._copies is not None and gmem.MIRROR in n._copies:
            devices = [d for d in devices if d.type is not cpu]  # the host's copy is on its way
        if devices:
            try:
                self._publish(n, devices)
            except Exception:  # e.g. no pinned memory left: readers then copy on demand (to_host)
                self._mark(n._seq)

    def _single(self, n, args: list, mirror=None):
        """Node ``n``'s output (a tuple for siblings) as it declares it: umx's own kernel where one applies (see
        :meth:`_own`), else the kernel table's (CuPy's, on this thread's current stream and allocator).
        ``mirror``: see :meth:`_mirror_for`."""
        p = n._prim
        c = p.__class__
        if c in _OWN:
            out = self._own(n, args, mirror[0] if mirror is not None else None)
            if out is not None:
                if mirror is not None:
                    _memory.set_copy(n, gmem.MIRROR, mirror[1])
                return out
        elif c is Matmul and n._dtype in _NARROW_DTYPES and type(args[0]) is cp.ndarray and type(args[1]) is cp.ndarray:
            out = self._direct.matmul(args[0], args[1], n._shape)  # a matrix times a few vectors
            if out is not None:
                return out
        out = _call(KERNELS[c], p, args)
        return out if type(out) is tuple else conform(cp, n, out)

    def _own(self, n, args: list, mirror=None, out=None):
        """Node ``n``'s output by umx's own kernel (see direct.py), for a primitive of ``_OWN``: an elementwise node or
        a full reduction; None where none applies. ``mirror``: the kernel's mirror arguments (see
        ``Launcher.run``); ``out``: where to write, as for ``Launcher.run``."""
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
        if type(args[0]) is cp.ndarray and len(p.axes) == args[0].ndim:
            return self._direct.reduce(c.__name__, args[0], n._shape, n._dtype, mirror, out)
        return None

    def _mirror_for(self, n):
        """``(launch argument, reader)`` of a mirror slot (see direct.Mirrors) if the host will read node ``n``
        (a hint from the planner), umx's own kernel may compute it, and it is small enough; else None."""
        if type(n) is not Fused and n._prim.__class__ not in _OWN:
            return None
        devices = self._hints.get(n._seq)
        if devices is None or (devices is not _HOST_ONLY and not _reads_on_host(devices)):
            return None
        root = n.root if type(n) is Fused else n
        if root._siblings is not None or not 0 < prod(root._shape) <= direct.MIRROR_MAX:
            return None  # (an empty output launches no kernel: nothing would raise the flag)
        if self._mirrors is None:
            self._mirrors = direct.Mirrors()
        return self._mirrors.take(self, root._seq)

    def _run_fused(self, f, leaves: list, mirror=None):
        """A fused region: one kernel of umx's (see direct.py) or a generated ElementwiseKernel, or (a structure
        CUDA code cannot express) its steps one by one."""
        root = f.root
        out = self._direct.run(f.key, _region_program, f, leaves, root._shape, root._dtype.np,
                               mirror[0] if mirror is not None else None)
        if out is not None:
            if mirror is not None:
                _memory.set_copy(root, gmem.MIRROR, mirror[1])
            return out
        kernel = _FUSED.get(f)
        if kernel is not None:
            out = cp.empty(root._shape, root._dtype.np)
            try:
                kernel(*leaves, out)
                return out
            except Exception:  # e.g. NVRTC rejects the generated code: step by step, now and for this structure
                _FUSED.refuse(f)
        return run_steps(f, leaves, lambda prim, args: _call(KERNELS[prim.__class__], prim, args), cp)

    def _wait_for(self, waits: list) -> None:
        """Order this stream after other streams' nodes; blocks this dispatcher only."""
        for ex, seq in waits:
            if type(ex) is CudaExecutor:
                WorkerExecutor.wait(ex, seq)  # dispatched: its mark follows promptly
                if ex.index == self.index:
                    mark = ex.mark_for(seq)
                    if mark is not None:
                        self.cuda_stream.wait_event(mark[1])
            else:
                ex.wait(seq)  # a CPU stream: its result is complete when this returns

    def _fetch(self, ins: tuple, held: list) -> list:
        """The inputs' data on this device, copied here if needed, with the waits that reading it requires."""
        args = []
        for x in ins:
            d = x._data
            if type(d) is cp.ndarray:
                if d.device.id != self.index:
                    d = self._copy_in(x, _memory.host_copy(x))[0]  # another GPU: through the host, once per device
                    held.append(d)
                else:
                    ex = x._exec
                    if ex is not self:  # (this stream's own data is read in stream order: nothing to hold)
                        if type(ex) is CudaExecutor:
                            mark = ex.mark_for(x._seq)
                            if mark is not None:
                                self.cuda_stream.wait_event(mark[1])
                        held.append(d)
            elif type(d) is np.ndarray:
                c = self._copy_in(x, d)
                d = c[0]
                if c[2] is not self:  # a copy another stream allocated: held until this read is done
                    held.append(d)
            elif type(d) is Failure:
                d.propagate()
            args.append(d)
        return args

    def _copy_in(self, x, host: np.ndarray) -> tuple:
        """``x``'s copy on this device (made once, on the copy stream), as ``(data, event, maker)``: this stream
        is ordered after the copy; ``maker`` is the executor on whose stream its memory was allocated (None: an
        upload from a CPU stream)."""
        dev = self.device
        copies = x._copies
        c = copies.get(dev) if copies is not None else None
        if c is None:
            start = self._copy_begin(self.cuda_stream) if self._tr is not None else None
            data, event, stage = gmem.to_device(host, self.cuda_stream, self.copy_stream)
            if start is not None:
                self._copy_end(start, host.nbytes, "host", repr(dev), x)
            if stage is not None:
                self._held.append((event, stage))
            c = (data, event, self)
            _memory.set_copy(x, dev, c)
            if data.nbytes >= SPILL_MIN_BYTES:
                track_copy(x, dev)
        event = c[1]
        if event is not None:
            if event.done:  # finished: no reader needs to wait for it any more (a query costs less than a wait)
                x._copies[dev] = c = (c[0], None, c[2])
            else:
                self.cuda_stream.wait_event(event)
        return c

    def _publish(self, n, devices: set) -> None:
        """Node ``n`` will be read by other streams: mark it, and start its copy to the host if a CPU reads it."""
        if HOST_READER in devices:  # (served by a mirror, or else by its own copy on demand)
            devices = [d for d in devices if d is not HOST_READER]
            if not devices:
                return
        outs = [s._data for s in n._siblings] if n._siblings is not None else [n._data]
        to_host = any(d.type is cpu for d in devices)
        if to_host:
            outs = [cp.ascontiguousarray(d) if type(d) is cp.ndarray and not d.flags.c_contiguous else d
                    for d in outs]
        self._mark(n._seq)  # n is not yet published as dispatched, so no reader can miss this mark
        if not to_host:
            return
        event = self._marks[-1][1]
        self.copy_stream.wait_event(event)
        nodes = n._siblings if n._siblings is not None else (n,)
        traced = self._tr is not None
        for s, d in zip(nodes, outs):
            if type(d) is cp.ndarray:
                start = self._copy_begin() if traced else None
                if d.nbytes >= _PARTS_MIN_BYTES:  # in parts: the CPU's chunks start as their bytes arrive
                    host, done, arrivals = gmem.start_to_host_in_parts(d, self.copy_stream, CORES)
                else:
                    (host, done), arrivals = gmem.start_to_host(d, self.copy_stream), None
                if start is not None:
                    self._copy_end(start, host.nbytes, repr(self.device), "host", s)
                _memory.set_copy(s, gmem.PENDING_HOST, (host, done, arrivals))
                self._held.append((done, d))

    def _mark(self, seq: int = 0) -> None:
        """Record a mark after node ``seq`` (default: the last dispatched one), unless it has one."""
        seq = seq or self.done
        if seq <= self._marked:
            return
        event = cp.cuda.Event(disable_timing=True)
        event.record(self.cuda_stream)
        with self._mark_lock:
            self._add_mark(seq, event)

    def _add_mark(self, seq: int, event):
        """Append a mark (the caller holds _mark_lock), dropping passed ones once there are many."""
        marks = self._marks
        if len(marks) >= _MAX_MARKS:
            while marks and marks[0][1].done:
                self._complete = max(self._complete, marks.pop(0)[0])
        m = (seq, event)
        marks.append(m)
        if seq > self._marked:
            self._marked = seq
        return m

    def _release(self) -> None:
        """Drop the data held for GPU work that has finished."""
        if self._held:
            self._held = [h for h in self._held if not h[0].done]

    def _fail_rest(self, tasks: list, error: BaseException) -> None:
        super()._fail_rest(tasks, error)
        self._mark()


def _node_program(n) -> tuple:
    """``(leaf dtypes, program, node dtypes)`` of one elementwise node, for umx's own kernel (see direct.py)."""
    ins = n._inputs
    return [x._dtype for x in ins], ((n._prim, tuple(range(len(ins)))),), [n._dtype]


def _region_program(f) -> tuple:
    """``(leaf dtypes, program, node dtypes)`` of fused region ``f``, for umx's own kernel (see direct.py)."""
    return [x._dtype for x in f.leaves], f.program, [m._dtype for m in f.nodes]


def _reads_on_host(devices) -> bool:
    for d in devices:
        if d is HOST_READER or d.type is cpu:
            return True
    return False


_handles: dict = {}  # CUDA stream pointer -> (stream, cuBLAS handle or None)


def _matmul(prim, a, b):
    """Products through umx's own cuBLAS handle for the current stream (capturable, see cublas.py); CuPy's for
    what that does not cover."""
    if type(a) is cp.ndarray and type(b) is cp.ndarray:
        s = cp.cuda.get_current_stream()
        entry = _handles.get(s.ptr)
        if entry is None or entry[0] is not s:
            entry = _handles[s.ptr] = (s, cublas.handle_for(s))
        if entry[1] is not None:
            out = cublas.matmul(entry[1], a, b)
            if out is not None:
                return out
    return _cupy_matmul(prim, a, b)


KERNELS[Matmul] = _matmul


def _call(kernel, prim, args: list):
    try:
        return kernel(prim, *args)
    except Exception:
        # NumPy scalars go straight to CuPy's ufuncs; the kernels that refuse them get 0-d device arrays instead
        if not any(isinstance(a, (np.generic, np.ndarray)) for a in args):
            raise
        return kernel(prim, *device_args(args))
