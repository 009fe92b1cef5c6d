"""The CPU stream's executor: runs NumPy kernels on the stream's worker thread."""

from __future__ import annotations

import numpy as np

from ... import backends, memory
from ...dtypes import bfloat16
from ..executor import Failure, WorkerExecutor, failure_of, set_result
from ..xp import bind, round_bf16

KERNELS = bind(np)
_HOST = (np.ndarray, np.generic)


class CpuExecutor(WorkerExecutor):
    """A CPU stream: one worker thread running NumPy kernels in stream order."""

    def __init__(self, stream):
        super().__init__(stream, f"umx-cpu-stream-{stream.index}")
        backends.register_executor(self)

    def is_local(self, data) -> bool:
        return isinstance(data, _HOST)

    def setup_thread(self) -> None:
        # Integer division by zero and float overflow give MLX's values, not warnings.
        np.seterr(all="ignore")

    def run_batch(self, tasks: list) -> None:
        table = KERNELS
        host_copy = memory.host_copy
        for t in tasks:
            limited = memory._memory_limit
            if type(t) is tuple:
                n, waits = t
                ins = n._inputs
                try:
                    for ex, seq in waits:
                        ex.wait(seq)
                    if limited:
                        memory.check_host_limit(_nbytes(n))
                    out = table[n._prim.__class__](n._prim, *[host_copy(x) for x in ins])
                except BaseException as e:
                    out = failure_of(n, ins, e)
            else:
                n = t
                ins = n._inputs
                try:
                    if limited:
                        memory.check_host_limit(_nbytes(n))
                    out = table[n._prim.__class__](n._prim, *[x._data for x in ins])
                except BaseException as e:
                    out = failure_of(n, ins, e)
            if type(out) is not tuple and type(out) is not Failure:
                want = n._dtype.np
                if out.dtype is not want and out.dtype != want:
                    # NumPy's loop picked another dtype (bool shifts give int8...): the declared one is MLX's
                    out = out.astype(want)
                if n._dtype is bfloat16:
                    out = round_bf16(np, out)
            if n._siblings is None:
                n._data = out
                memory.acquire(out)
                n._inputs = ()
                n._prim = None
            else:
                set_result(n, out)
            self.finished(n._seq)


def _nbytes(n) -> int:
    """The bytes a node's result (all its outputs) will take."""
    return sum(s.nbytes for s in n._siblings) if n._siblings is not None else n.nbytes
