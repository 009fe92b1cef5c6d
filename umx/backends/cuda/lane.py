"""The one-task lane of a GPU stream (a part of ``CudaExecutor``): the caller's thread launches a single small node
itself, the commonest eval of all (``(x + 1).item()``). Its latency is host time up to the kernel's launch, then
the GPU's, so work that can wait for the launch waits."""

from __future__ import annotations

from math import prod

import numpy as np

from ...primitives.reduction import Max, Mean, Min, Sum
from ...runtime import memory as _memory
from ...runtime import tracing as _tracing
from ...runtime.executor import Failure, WorkerExecutor, failure_of
from ...runtime.fusion import ELEMENTWISE, Fused
from ...runtime.node import finish_on_host
from . import direct
from . import memory as gmem
from ._probe import _cupy
from .transfers import HOST_ONLY, restore_stream

cp = _cupy()
_runtime = cp.cuda.runtime
#: primitives umx's own kernels (direct.py) may compute, and mirror to the host: elementwise ones and full reductions
OWN = ELEMENTWISE | frozenset({Sum, Max, Min, Mean})
_MAX_SPARES = 16  # spare outputs per stream, one per (shape, dtype) of small own outputs (see _refill)
_empty = cp.ndarray  # (the constructor: from this thread's allocator)


class Lane:
    """Mixed into ``CudaExecutor``: ``run_lane`` and the one-task case of ``run_inline``. It uses the executor's
    ``own``, ``single``, ``settle``, ``announce``, ``marks``, ``hints``, ``fetch_all`` and ``_use_stream``."""

    __slots__ = ()

    def run_lane(self, task, read: bool) -> None:
        # (the lane plans nothing while a trace records; a host read goes to _run_one as is, not through hints)
        if not self.fetch_all:
            args = self._alone(task)
            if args is not None:
                self._run_one(task[0] if type(task) is tuple else task, args, None, read)
                return
        super().run_lane(task, read)

    def run_inline(self, tasks: list, started=None) -> None:
        # The caller launches its own batch (two thread hand-offs saved: most of a small op's latency).
        if len(tasks) == 1 and not self.fetch_all and _tracing.active is None:
            t = tasks[0]
            args = self._alone(t)
            if args is not None:
                n = t[0] if type(t) is tuple else t
                hints = self.hints
                read = bool(hints) and hints.get(n._seq) is HOST_ONLY
                if read:
                    del hints[n._seq]
                self._run_one(n, args, started, read)
                return
        # CuPy's device, stream and allocator are per thread: set here for the batch, the caller's restored after.
        prev_device = _runtime.getDevice()
        if prev_device != self.index:
            _runtime.setDevice(self.index)
        prev = self._use_stream()
        try:
            WorkerExecutor.run_inline(self, tasks, started)
        finally:
            restore_stream(prev)
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
        """``run_inline`` of one node with its arguments (see :meth:`_alone`): what a batch does for it, without
        the batch's loop. umx's own kernel is launched without touching CuPy's per-thread state, into a spare
        output (see :meth:`_refill`) or, for a small result the host reads at once (``read``), into host memory
        (:meth:`_run_to_host`); anything else runs with that state set, as a batch does. Ctrl-C is handled as
        ``WorkerExecutor.run_inline`` does."""
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
        if n._prim.__class__ not in OWN:
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
            launched = self.own(n, args, (0, flag, token), host) is not None
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
            self.settle(n, data)
        self.finished(n._seq)
        marks = self.marks
        if marks.held:
            marks.release()
        return True

    def _run_on_device(self, n, args: list, started) -> None:
        """The lane's path for a result on the device: umx's own kernel into a spare output, else ``single``
        with CuPy's state set; then what a batch does after a node."""
        ins = n._inputs
        spare = None
        try:
            mirror = self.mirror_for(n) if self.hints else None
            out = None
            if n._prim.__class__ in OWN:
                spare = self._spares.pop((n._shape, n._dtype), None)
                if spare is not None:
                    out = self.own(n, args, mirror[0] if mirror is not None else None, spare)
                    if out is None:
                        self._spares[(n._shape, n._dtype)] = spare
                        spare = None
                    elif mirror is not None:
                        _memory.set_copy(n, gmem.MIRROR, mirror[1])
            if out is None:
                out = self._with_state(n, args, mirror)
        except Exception as e:  # Ctrl-C and exits propagate (see _run_one): they are no op's failure
            out = failure_of(n, ins, e)
        big = self.settle(n, out)
        ins = ()
        if started is not None:
            started()  # (after the launch: a Ctrl-C held meanwhile finds the node done, and publishes it)
        if self.hints:
            self.announce(n)
        self.finished(n._seq)
        marks = self.marks
        if marks.held:
            marks.release()
        if big:  # (the peak also counts what is live when it is read: a small result need not be sampled)
            gmem.LOCATION.sample_peak()
        elif spare is not None:
            self._refill(n)  # (while the kernel runs)

    def _with_state(self, n, args: list, mirror):
        """``single`` on the caller's thread with this stream's CuPy state set (device already set), the
        caller's restored after; then a spare output for the lane, if ``n`` is small and umx's own (see
        :meth:`_refill`)."""
        prev = self._use_stream()
        try:
            out = self.single(n, args, mirror)
            if getattr(out, "shape", None) != n._shape:
                # one-element host inputs came as constants (see _alone): a kernel given only constants (CuPy's,
                # where umx's own does not apply) makes a scalar of the node's one element
                out = cp.asarray(out).reshape(n._shape)
            if (type(out) is cp.ndarray and n._prim.__class__ in OWN and out.size <= direct.MIRROR_MAX
                    and len(self._spares) < _MAX_SPARES):
                self._spares[(n._shape, n._dtype)] = _empty(n._shape, n._dtype.np)
            return out
        finally:
            restore_stream(prev)

    def _refill(self, n) -> None:
        """A new spare output of node ``n``'s shape and dtype, for the lane's next launch of that kind. CuPy's pool
        hands out memory per current stream (a block is reused in its stream's order), so it is allocated with
        this stream current; the lane calls this after its launch, while the GPU runs the kernel."""
        prev = self._use_stream()
        try:
            self._spares[(n._shape, n._dtype)] = _empty(n._shape, n._dtype.np)
        except Exception:  # e.g. the pool's limit: the next launch of this kind allocates its own
            pass
        finally:
            restore_stream(prev)
