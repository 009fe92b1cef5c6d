"""How a GPU stream orders itself after other streams and moves data between them (a part of ``CudaExecutor``).

Cross-stream dependencies never stall the GPU or the caller:

- GPU after GPU: the consumer's dispatcher waits until the producer has *dispatched* the node, then enqueues
  ``cudaStreamWaitEvent`` on the producer's mark (see marks.py).
- CPU after GPU: the producer starts the copy to pinned host memory right after the kernel, on its copy stream
  (:meth:`Transfers.publish`); the CPU worker waits on that copy's event (``memory.GpuLocation.to_host``).
- GPU after CPU: the dispatcher waits for the CPU node, then enqueues the copy (pinned stage, copy stream, event)
  and the kernel; only the dispatcher thread blocks, never the caller and never a GPU kernel.
"""

from __future__ import annotations

import numpy as np

from ...devices import cpu
from ...runtime import memory as _memory
from ...runtime.executor import HOST_READER, Failure, WorkerExecutor
from ...runtime.threads import CORES
from . import memory as gmem
from ._probe import _cupy
from .pressure import SPILL_MIN_BYTES, track_copy
from .strided import contiguous

cp = _cupy()
_PARTS_MIN_BYTES = 1 << 24  # results a CPU reads are copied to the host in parts from this size
#: the commonest hint (an item()): one object for all, so no set is made per hint
HOST_ONLY = frozenset((HOST_READER,))


class Transfers:
    """The waits, copies and publications of a GPU stream. Mixed into ``CudaExecutor``, whose ``cuda_stream``,
    ``copy_stream``, ``marks`` and ``hints`` it uses; graphs.py and traced.py call its public methods."""

    __slots__ = ()

    def _use_stream(self) -> tuple:
        """Make this stream and umx's allocator CuPy's current ones on the calling thread (per thread in CuPy);
        returns the caller's, for :func:`restore_stream`. (Not ``with``: CuPy's stream context restores the null
        stream, not the previous one.)"""
        prev = (gmem.use_allocator(), cp.cuda.get_current_stream())
        self.cuda_stream.use()
        return prev

    def wait_for(self, waits: list) -> None:
        """Order this stream after other streams' nodes ``[(executor, seq), ...]``; blocks this dispatcher only."""
        for ex, seq in waits:
            if isinstance(ex, Transfers):
                WorkerExecutor.wait(ex, seq)  # dispatched: its mark follows promptly
                if ex.index == self.index:
                    mark = ex.marks.covering(seq, ex.done)
                    if mark is not None:
                        self.cuda_stream.wait_event(mark[1])
            else:
                ex.wait(seq)  # a CPU stream: its result is complete when this returns

    def fetch(self, ins: tuple, held: list) -> list:
        """The inputs' data on this device, copied here if needed, with the waits that reading it requires; data
        that this stream's work will read without owning it is appended to ``held``."""
        args = []
        for x in ins:
            d = x._data
            if type(d) is cp.ndarray:
                if d.device.id != self.index:
                    d = self.copy_in(x, _memory.host_copy(x))[0]  # another GPU: through the host, once per device
                    held.append(d)
                else:
                    ex = x._exec
                    if ex is not self:  # (this stream's own data is read in stream order: nothing to hold)
                        if isinstance(ex, Transfers):
                            mark = ex.marks.covering(x._seq, ex.done)
                            if mark is not None:
                                self.cuda_stream.wait_event(mark[1])
                        held.append(d)
            elif type(d) is np.ndarray:
                c = self.copy_in(x, d)
                d = c[0]
                if c[2] is not self:  # a copy another stream allocated: held until this read is done
                    held.append(d)
            elif type(d) is Failure:
                d.propagate()
            args.append(d)
        return args

    def copy_in(self, x, host: np.ndarray) -> tuple:
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
                self.marks.hold(event, stage)
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

    def announce(self, n) -> None:
        """Act on the planner's hints for node ``n``, just run: mark it for the streams that will read it, and
        start its copy to the host for a CPU stream (see :meth:`publish`)."""
        devices = self.hints.pop(n._seq, None)
        if devices is HOST_ONLY:
            if n._copies is None or gmem.MIRROR not in n._copies:
                self.marks.record(n._seq)  # (see publish)
            return
        if devices is not None and n._copies is not None and gmem.MIRROR in n._copies:
            devices = [d for d in devices if d.type is not cpu]  # the host's copy is on its way
        if devices:
            try:
                self.publish(n, devices)
            except Exception:  # e.g. no pinned memory left: readers then copy on demand (to_host)
                self.marks.record(n._seq)

    def publish(self, n, devices) -> None:
        """Node ``n`` will be read by other streams: mark it, and start its copy to the host if a CPU reads it."""
        if HOST_READER in devices:  # (served by a mirror, or else by its own copy on demand)
            devices = [d for d in devices if d is not HOST_READER]
            if not devices:
                # A mark now, for the reader's wait: one recorded when it reads would also cover the work queued
                # meanwhile (a decode loop's next step, whose host work would then never overlap this one's).
                self.marks.record(n._seq)
                return
        outs = [s._data for s in n._siblings] if n._siblings is not None else [n._data]
        to_host = any(d.type is cpu for d in devices)
        if to_host and any(type(d) is cp.ndarray and not d.flags.c_contiguous for d in outs):
            # A view is copied whole first: on this stream and from its pool, whatever the calling thread's CuPy
            # state is (the lane announces after giving the caller's back), so that the mark below covers it.
            prev = self._use_stream()
            try:
                outs = [contiguous(d) if type(d) is cp.ndarray and not d.flags.c_contiguous else d
                        for d in outs]
            finally:
                restore_stream(prev)
        event = self.marks.record(n._seq)  # n is not yet published as dispatched, so no reader can miss this mark
        if not to_host:
            return
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
                self.marks.hold(done, d)


def restore_stream(prev: tuple) -> None:
    """The caller's CuPy stream and allocator again (see ``Transfers._use_stream``)."""
    prev[1].use()
    gmem.restore_allocator(prev[0])
