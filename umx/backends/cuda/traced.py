"""Traced batches of a GPU stream: ops and copies timed on the GPU with CUDA events (see ``umx.runtime.tracing``).

While a trace records, the dispatcher runs its batch task by task through the executor's own ``_run``,
between two timing events recorded on the stream, so an op's span is its kernel's time on the GPU, not its
launch. The task's cross-stream waits are taken first (host-timed spans on the stream's host lane) and its
inputs fetched (copies on the copy lane), so that the op's start event follows them. Copies that the executor
starts are timed on its copy stream. The untraced path (``run_batch``) is untouched.

Tracing never fails an op: an event or a label that cannot be made leaves the trace without that span.
"""

from __future__ import annotations

from ...runtime import tracing as _tracing
from ...runtime.executor import Failure
from ._probe import _cupy

cp = _cupy()

#: lane suffixes of a GPU stream: host-side work of its dispatcher, and its copy stream's transfers
HOST = " (host)"
COPIES = " (copies)"


def _event(stream, after=None):
    """A timing event recorded on ``stream`` (ordered first after the work queued on ``after``), or None."""
    try:
        if after is not None:
            queued = cp.cuda.Event(disable_timing=True)
            queued.record(after)
            stream.wait_event(queued)
        event = cp.cuda.Event()
        event.record(stream)
        return event
    except Exception:
        return None


def _elapsed_ms(a, b) -> float:
    # A trace's end synchronizes the streams' kernels, not their copy streams: a copy may still be in flight.
    b.synchronize()
    return cp.cuda.get_elapsed_time(a, b)


class TracedBatches:
    """``run_traced`` for ``CudaExecutor``, a mixin: it uses the executor's ``cuda_stream``, ``copy_stream``,
    ``_run``, ``wait_for``, ``fetch`` and ``_end_batch``."""

    #: the recorder while a traced batch runs, else None: the executor's copies read it to time themselves
    _tr = None
    _clock_stream = None  # an idle stream for the clock's anchor event, made on first use

    def run_traced(self, tasks: list, tr) -> None:
        """Run ``tasks`` as ``run_batch`` does, recording each op, wait and copy in ``tr``."""
        if not tr.has_gpu_clock(self.device):
            self._set_gpu_clock(tr)
        prev = tr.enter(self.stream, HOST)
        self._tr = tr
        try:
            for t in tasks:
                self._run_task_traced(t, tr)
        finally:
            self._tr = None
            tr.leave(prev)
            self._end_batch()

    def _run_task_traced(self, t, tr) -> None:
        n, waits = t if type(t) is tuple else (t, None)
        try:
            label = _tracing.op_label(n, waits)  # before the node runs: running detaches it
        except Exception:
            label = None
        if waits is not None:
            self._prepare(n._inputs, waits, tr)
        start = _event(self.cuda_stream) if label is not None else None
        self._run([t])
        if start is not None:
            end = _event(self.cuda_stream)
            if end is not None:
                data = n._data
                if type(data) is Failure:
                    label.failed = repr(data.error)
                tr.gpu_op(self.stream, label, start, end, seq=n._seq)

    def _prepare(self, ins: tuple, waits: list, tr) -> None:
        """Take ``waits`` (a span each) and fetch ``ins`` ahead of ``_run``, which then finds them done.
        Errors are left to ``_run``: it waits and fetches again, and makes them the node's failure."""
        now = _tracing.now
        try:
            for ex, seq in waits:
                t0 = now()
                self.wait_for([(ex, seq)])
                tr.span("wait", f"wait {ex.stream!r} #{seq}", t0, now())
            self.fetch(ins, [])  # copies are cached on the inputs; the data is held by _run's own fetch
        except Exception:
            pass

    def _set_gpu_clock(self, tr) -> None:
        """Tie this device's event clock to the host's (see ``umx.runtime.tracing``)."""
        try:
            if self._clock_stream is None:
                self._clock_stream = cp.cuda.Stream(non_blocking=True)
            anchor = cp.cuda.Event()
            t0 = _tracing.now()
            anchor.record(self._clock_stream)
            anchor.synchronize()
            tr.set_gpu_clock(self.device, anchor, (t0 + _tracing.now()) // 2, _elapsed_ms)
        except Exception:  # the trace then leaves this device's GPU spans out, with a warning
            pass

    # -- copies: called by the executor only while ``_tr`` is set --------------------------------------------
    def _copy_begin(self, after=None):
        """The start event of a copy on the copy stream (after the work queued on ``after``), or None."""
        return _event(self.copy_stream, after)

    def _copy_end(self, start, nbytes: int, src: str, dst: str, x) -> None:
        """Record the copy of ``x``'s ``nbytes`` from ``src`` to ``dst``, begun at ``start``, on the copy
        lane."""
        end = _event(self.copy_stream) if start is not None else None
        if end is None:
            return
        try:
            args = {"bytes": nbytes, "from": src, "to": dst, "array": f"{x._dtype.name}{list(x._shape)}"}
            self._tr.gpu_op(self.stream, f"copy {src} -> {dst}", start, end, args=args, cat="copy",
                            suffix=COPIES)
        except Exception:  # the copy itself is under way: only its span is lost
            pass
