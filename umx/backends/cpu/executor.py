"""The CPU stream's executor: runs NumPy kernels on the stream's worker thread."""

from __future__ import annotations

import numpy as np

from ... import backends, memory
from ...dtypes import bfloat16
from ...fusion import Fused
from ..executor import Failure, WorkerExecutor, failure_of, set_result
from ..xp import bind, round_bf16
from .fused import run_fused
from .reduce_split import split_reductions

KERNELS = split_reductions(bind(np))
_PINNED_MIN_BYTES = 1 << 20  # below this, staging costs little and the pinned pool's blocks are better kept


class CpuExecutor(WorkerExecutor):
    """A CPU stream: one worker thread running NumPy kernels in stream order."""

    def __init__(self, stream):
        self._to_device: set = set()  # seqs of results that a device reads next (planner hints)
        super().__init__(stream, f"umx-cpu-stream-{stream.index}")
        backends.register_executor(self)

    # Only large regions fuse on the CPU: they gain one pass over memory and all cores. For small ones the fusion
    # pass costs about what it saves (measured on the H100/H200 hosts: the seed's cpu/cpu 2.6 ms fused, 2.1 not).
    fuse_min_size = 1 << 16
    local_types = frozenset({np.ndarray, *(t for t in np.sctypeDict.values() if issubclass(t, np.generic))})

    def setup_thread(self) -> None:
        # Integer division by zero and float overflow give MLX's values, not warnings.
        np.seterr(all="ignore")

    def will_be_read_on(self, node, device) -> None:
        # A result a GPU reads next is written straight into pinned memory: its copy needs no staging, and the
        # pinned pool's pages are already mapped (a fresh 64 MiB output costs thousands of page faults).
        if device.type is not self.device.type and node.nbytes >= _PINNED_MIN_BYTES:
            hints = self._to_device
            if len(hints) > 256:  # hints for nodes that ran unfused are never taken: drop the finished ones
                done = self.done
                hints.difference_update([s for s in list(hints) if s <= done])
            hints.add(node._seq)

    def _pinned_out(self, f):
        """Pinned memory for fused region ``f``'s result if a device reads it next, else None."""
        if f._seq not in self._to_device:
            return None
        self._to_device.discard(f._seq)
        root = f.root
        return memory.pinned_empty(root._shape, root._dtype.np)

    def run_inline(self, tasks: list) -> None:
        with np.errstate(all="ignore"):  # the caller's thread: same NumPy error state as the worker's
            super().run_inline(tasks)

    def run_batch(self, tasks: list) -> None:
        # The hot loop of the CPU backend: every line here is paid per op.
        table = KERNELS
        host_copy = memory.host_copy
        acquire = memory.acquire
        ndarray = np.ndarray
        to_device = self._to_device
        limited = memory._memory_limit
        for i in range(len(tasks)):
            t = tasks[i]
            if t.__class__ is tuple or t.__class__ is Fused:
                n, waits = t if t.__class__ is tuple else (t, ())
                ins = n._inputs
                try:
                    for ex, seq in waits:
                        ex.wait(seq)
                    if limited:
                        memory.check_host_limit(_nbytes(n))
                    args = [host_copy(x) for x in ins] if waits or t.__class__ is tuple else [x._data for x in ins]
                    if n.__class__ is Fused:
                        out = run_fused(n, args, table, self._pinned_out(n) if to_device else None)
                    else:
                        out = table[n._prim.__class__](n._prim, *args)
                except Exception as e:  # Ctrl-C and exits propagate (see run_inline): they are no op's failure
                    out = failure_of(n, ins, e)
                args = None
            else:
                n = t
                ins = n._inputs
                try:
                    if limited:
                        memory.check_host_limit(_nbytes(n))
                    k = table[n._prim.__class__]
                    if len(ins) == 1:
                        out = k(n._prim, ins[0]._data)
                    elif len(ins) == 2:
                        out = k(n._prim, ins[0]._data, ins[1]._data)
                    else:
                        out = k(n._prim, *[x._data for x in ins])
                except Exception as e:  # Ctrl-C and exits propagate (see run_inline): they are no op's failure
                    out = failure_of(n, ins, e)
            # Drop this frame's and the batch's references before publishing: neither may keep finished
            # intermediates alive.
            ins = t = None
            tasks[i] = None
            if n._siblings is None and n.__class__ is not Fused:
                if out.__class__ is not Failure:
                    want = n._dtype.np
                    if out.dtype is not want and out.dtype != want:
                        # NumPy's loop picked another dtype (bool shifts give int8...): the declared one is MLX's
                        out = out.astype(want)
                    if n._dtype is bfloat16:
                        out = round_bf16(np, out)
                if out.__class__ is ndarray:
                    acquire(out)
                n._data = out
                n._inputs = ()
                n._prim = None
            else:
                set_result(n, out)
            seq = self.done = n._seq
            if seq >= self._wake_at:
                self.notify()


def _nbytes(n) -> int:
    """The bytes a node's result (all its outputs) will take."""
    if n.__class__ is Fused:
        return n.root.nbytes
    return sum(s.nbytes for s in n._siblings) if n._siblings is not None else n.nbytes
