"""The CPU stream's executor: runs NumPy kernels on the stream's worker thread."""

from __future__ import annotations

import numpy as np

from ... import backends
from ...dtypes import bfloat16
from ...runtime import memory
from ...runtime.executor import (
    Failure,
    WorkerExecutor,
    conform,
    drop_unheld,
    failure_of,
    kernel_args,
    seq_of,
    set_result,
)
from ...runtime.fusion import SPLIT_MIN_SIZE, Fused
from ...runtime.interfaces import Traits
from ...runtime.node import finish
from .donate import FINISHED
from .donate import make_table as donations
from .fused import run_fused
from .kernels import BF16_STORAGE, make_table
from .reduce_split import split_reductions
from .softmax import blocked_softmax

KERNELS = blocked_softmax(split_reductions(make_table()))
GIFTS = donations(KERNELS)
_PINNED_MIN_BYTES = 1 << 20  # below this, staging costs little and the pinned pool's blocks are better kept


# NumPy's error state is a context variable: set and reset directly, np.errstate's enter and exit cost a
# microsecond per eval run on the caller's thread. (Private names: np.errstate where they are missing.)
try:
    from numpy._core._ufunc_config import _extobj_contextvar as _errstate
    from numpy._core._ufunc_config import _make_extobj

    _errors_ignored = _make_extobj(all="ignore")
except (ImportError, TypeError):
    _errstate = _errors_ignored = None


class CpuExecutor(WorkerExecutor):
    """A CPU stream: one worker thread running NumPy kernels in stream order."""

    def __init__(self, stream):
        self._to_device: dict = {}  # seq -> the device that reads the result next (planner hints)
        super().__init__(stream, f"umx-cpu-stream-{stream.index}")
        backends.register_executor(self)

    traits = Traits(
        local_types=frozenset({np.ndarray, *(t for t in np.sctypeDict.values() if issubclass(t, np.generic))}),
        # the caller computes; a GPU stream's launches proceed on its dispatcher meanwhile
        inline_rank=1,
        # Below 32K elements an intermediate stays in cache and costs little, while a region has a fixed cost
        # (planning it, looking its program up): two or three ops are cheaper one by one (bench/overhead.py).
        small_regions=(1 << 15, 4),
        # A compiled call of small steps runs them one by one (Program.run_steps): no nodes, no planning, a
        # kernel call each (a small model's decode step: bench/llm.py --tiny).
        programs=True,
        program_max_elements=1 << 16,  # (at 64K elements step by step and fused replays cost the same)
        side_outputs=SPLIT_MIN_SIZE,  # (a larger region is cut across cores, one output a chunk)
    )

    def setup_thread(self) -> None:
        # Integer division by zero and float overflow give MLX's values, not warnings.
        np.seterr(all="ignore")

    def will_be_read_on(self, node, device) -> None:
        # A result a GPU reads next is written straight into pinned memory and sent to the device as it is
        # produced (chunk by chunk, see _run_split): its copy needs no staging and overlaps the computation.
        if device.type is not self.device.type and device.type is not None and node.nbytes >= _PINNED_MIN_BYTES:
            hints = self._to_device
            if len(hints) > 256:  # hints for nodes that ran unfused are never taken: drop the finished ones
                done = self.done
                for s in [s for s in hints if s <= done]:
                    del hints[s]
            hints[node._seq] = device

    def _output_for(self, f):
        """``(out, upload)`` for fused region ``f``: pinned memory and its upload to the device that reads it
        next, or ``(None, None)``."""
        device = self._to_device.pop(f._seq, None)
        if device is None:
            return None, None
        root = f.root
        out = memory.pinned_empty(root._shape, root._dtype.np)
        try:
            upload = memory.start_upload(device, out)
        except Exception:  # e.g. the device is full: its executor copies the result when it needs it
            upload = None
        return out, upload

    def run_lane(self, task, read: bool) -> None:
        self.run_inline([task])  # (a result the host reads is already there: no hint to give)

    def run_inline(self, tasks: list, started=None) -> None:
        # the caller's thread: the same NumPy error state as the worker's, and the caller's back after
        if _errors_ignored is None:
            with np.errstate(all="ignore"):
                super().run_inline(tasks, started)
            return
        token = _errstate.set(_errors_ignored)
        try:
            super().run_inline(tasks, started)
        finally:
            _errstate.reset(token)

    def run_batch(self, tasks: list) -> None:
        # The hot loop of the CPU backend: every line here is paid per op.
        table = KERNELS
        bf16 = bfloat16
        a = b = None
        gifts = GIFTS
        in_place = FINISHED
        host_copy = memory.host_copy
        host_in_parts = memory.host_in_parts
        to_device = self._to_device
        limited = memory._memory_limit
        last = seq_of(tasks[-1])
        looked = 0
        for i in range(len(tasks)):
            if self.draining != looked:  # after an interrupt: what nothing holds is dropped, not run
                looked = self.draining
                drop_unheld(tasks, i)
            t = tasks[i]
            if t is None:
                continue
            if t.__class__ is tuple or t.__class__ is Fused:
                n, waits = t if t.__class__ is tuple else (t, ())
                ins = n._inputs
                try:
                    for ex, seq in waits:
                        ex.wait(seq)
                    if limited:
                        memory.check_host_limit(_nbytes(n))
                    if n.__class__ is Fused:
                        arrivals = None
                        if t.__class__ is tuple:  # device data may arrive in parts: each chunk starts when its land
                            args = []
                            for x in ins:
                                h, ready = host_in_parts(x)
                                if ready is not None:
                                    arrivals = arrivals or {}
                                    arrivals[len(args)] = ready
                                args.append(h)
                        else:
                            args = [x._data for x in ins]
                        dest, upload = self._output_for(n) if to_device else (None, None)
                        # (a region without waits: its leaves are this stream's or host data, and may donate)
                        out = run_fused(n, args, table, dest, arrivals, upload, t.__class__ is Fused)
                        if upload is not None:
                            upload.finish(n.root)
                    else:
                        args = [host_copy(x) for x in ins] if waits or t.__class__ is tuple else [x._data for x in ins]
                        out = table[n._prim.__class__](n._prim, *kernel_args(n._prim, ins, args, np))
                except Exception as e:  # Ctrl-C and exits propagate (see run_inline): they are no op's failure
                    out = failure_of(n, ins, e)
                args = None
            else:
                n = t
                ins = n._inputs
                try:
                    k = table[n._prim.__class__]
                    give = gifts.get(k)  # (keyed by the kernel: one replaced in the table is run as it is)
                    if give is None or (out := give(n, ins)) is None:  # (see donate.py)
                        if limited:
                            memory.check_host_limit(_nbytes(n))
                        # (bfloat16 inputs: see kernel_args; the checks spelled out for one and two inputs)
                        if len(ins) == 1:
                            a = ins[0]
                            if a._dtype is not bf16:
                                out = k(n._prim, a._data)
                            else:
                                out = k(n._prim, *kernel_args(n._prim, ins, [a._data], np))
                        elif len(ins) == 2:
                            a, b = ins
                            if a._dtype is not bf16 and b._dtype is not bf16:
                                out = k(n._prim, a._data, b._data)
                            else:
                                own = BF16_STORAGE.get(n._prim.__class__) if a._dtype is b._dtype else None
                                if own is None or (out := own(n._prim, a._data, b._data)) is None:
                                    out = k(n._prim, *kernel_args(n._prim, ins, [a._data, b._data], np))
                        else:
                            out = k(n._prim, *kernel_args(n._prim, ins, [x._data for x in ins], np))
                except Exception as e:  # Ctrl-C and exits propagate (see run_inline): they are no op's failure
                    out = failure_of(n, ins, e)
            if out is in_place:  # (a donation: the node was finished where its buffer was written, see donate.py)
                pass
            elif n._siblings is None and n.__class__ is not Fused:
                if out.__class__ is not Failure and out.dtype is not n._dtype.np:
                    out = conform(np, n, out)
                finish(n, out)
            else:
                set_result(n, conform(np, n, out) if out.__class__ is tuple else out)
            # Drop this frame's and the batch's references before publishing: neither may keep finished
            # intermediates alive, nor hold a result's data when its reader looks for a donor. (After the data is
            # set: an interrupted batch hands its tasks without data to the worker, see run_inline.)
            ins = t = out = a = b = None
            tasks[i] = None
            seq = self.done = n._seq
            if seq >= self._wake_at:
                self.notify()
        if last > self.done:  # tasks dropped at the end count as finished
            self.finished(last)


def _nbytes(n) -> int:
    """The bytes a node's result (all its outputs) will take."""
    if n.__class__ is Fused:
        return n.root.nbytes
    return sum(s.nbytes for s in n._siblings) if n._siblings is not None else n.nbytes
