"""Hooks for tracing and debug logging, shared by the scheduler, the executors and memory (the bottom layer).

``active`` is the :class:`Recorder` of the running ``with mx.trace(...)`` block, or None. Hot paths read it
once per batch (an executor) or once per eval (the scheduler) and switch to a traced variant when it is set,
so tracing costs nothing when it is off. The user-facing side (the context manager, the Chrome trace file, the
CLI) is the package ``umx.trace``; this module imports nothing from umx.

Host times are ``time.perf_counter_ns()``. Events are kept as tuples and turned into Chrome trace JSON only
when the trace ends.

Lanes. A host event goes on the lane the recording thread has entered: an executor enters its stream's lane
around each batch (:meth:`Recorder.enter`), wherever the batch runs; other threads (callers of ``eval``)
record on a lane of their own. Events timed on a GPU go on the lane of their CUDA stream.

API for a GPU executor (it reads ``tr = _tracing.active`` once per batch and passes ``tr`` on):

1. Once per device and trace, put the GPU clock on the host time base: record a CUDA event on an idle stream
   and take the host time next to it, then hand both over::

       if not tr.has_gpu_clock(device):
           ev = cupy.cuda.Event(); t = now(); ev.record(idle_stream); ev.synchronize()
           tr.set_gpu_clock(device, ev, (t + now()) // 2, cupy.cuda.get_elapsed_time)

   (tests/test_trace.py checks that kernels land between their host launch and the host's sync.)

2. Per op (or GPU-timed copy, with ``cat="copy"``, ``args={"bytes": n, ...}`` and a lane ``suffix`` of its
   own, e.g. the copy stream's): record CUDA events around the kernel launch on the op's stream and hand them
   over with the node's seq, so that cross-stream flows find the op::

       label = op_label(node, waits)          # before the node runs: running detaches it
       ...launch between start_event and end_event...
       tr.gpu_op(stream, label, start_event, end_event, seq=node._seq)

   Events are resolved when the trace ends (after every stream is synchronized):
   ``anchor_ns + elapsed_ms(anchor, event) * 1e6``; a span whose events cannot be timed is left out.

   ``umx/backends/cuda/traced.py`` is the CUDA executor's use of this API.

3. Host-side work (waits, copies by the host) goes on a lane of its own, not on the GPU-timed lane (host
   enqueueing runs ahead of the GPU, and one lane's spans must nest): ``prev = tr.enter(stream, " (host)")``
   around the batch, ``tr.span(...)``/``tr.copy(...)`` inside it, then ``tr.leave(prev)``.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time

__all__ = ["active", "logger", "now", "Recorder", "OpLabel", "op_label", "debug_on"]

#: the Recorder of the running trace, or None. Set only by umx.trace; read once per batch or eval.
active = None

#: the ``umx`` logger; ``UMX_LOG=debug`` (read at first use) sets its level and gives it a stderr handler
logger = logging.getLogger("umx")

now = time.perf_counter_ns


class Recorder:
    """Collects the events of one trace. Any thread may record (``list.append`` is atomic)."""

    def __init__(self):
        self.start_ns = now()
        self.end_ns = 0
        self.spans: list = []  # (lane, cat, name, t0_ns, t1_ns, args, key): key = (stream, seq) for ops
        self.flows: list = []  # ((stream, seq) of the producer, (stream, seq) of the consumer)
        self.lanes: dict = {}  # lane (a thread ident, or (stream, suffix)) -> (process name, lane name)
        self._bound: dict = {}  # thread ident -> the lane it records on now (see enter)
        self._gpu_ops: list = []  # (stream, lane suffix, cat, name, start_event, end_event, key, args)
        self._clocks: dict = {}  # device -> (anchor event, anchor host ns, elapsed_ms(a, b))

    # -- host-clock events -----------------------------------------------------------------------------------
    def enter(self, stream, suffix: str = ""):
        """Record the calling thread's spans on ``stream``'s lane (named ``repr(stream) + suffix``) until
        :meth:`leave`; returns what to pass to ``leave``. Executors call it around a batch: a batch may run on
        the stream's worker or inline on a caller's thread, and either way it is the stream's work."""
        lane = (stream, suffix)
        if lane not in self.lanes:
            self.lanes[lane] = (repr(stream.device), repr(stream) + suffix)
        ident = threading.get_ident()
        prev = self._bound.get(ident)
        self._bound[ident] = lane
        return prev

    def leave(self, prev) -> None:
        """Undo :meth:`enter` (``prev``: its return value)."""
        ident = threading.get_ident()
        if prev is None:
            del self._bound[ident]
        else:
            self._bound[ident] = prev

    def span(self, cat: str, name: str, t0: int, t1: int, args: dict | None = None, key=None) -> None:
        """A span ``[t0, t1]`` (perf_counter_ns) on the calling thread's lane: the stream it entered, else a
        lane of the thread's own. ``cat``: op, copy, wait or eval."""
        ident = threading.get_ident()
        lane = self._bound.get(ident)
        if lane is None:
            lane = ident
            if lane not in self.lanes:
                self.lanes[lane] = ("host", f"thread {threading.current_thread().name}")
        self.spans.append((lane, cat, name, t0, t1, args, key))

    def op(self, name: str | OpLabel, t0: int, t1: int, stream, seq: int, args: dict | None = None) -> None:
        """An op span on the calling thread's lane; ``(stream, seq)`` identifies it as a flow endpoint."""
        self.span("op", name, t0, t1, args, (stream, seq))

    def copy(self, nbytes: int, src: str, dst: str, t0: int, t1: int, args: dict | None = None) -> None:
        """A copy of ``nbytes`` from location ``src`` to ``dst``, done by the calling thread."""
        a = {"bytes": nbytes, "from": src, "to": dst}
        if args:
            a.update(args)
        self.span("copy", f"copy {src} -> {dst}", t0, t1, a)

    def flow(self, producer_stream, producer_seq: int, consumer_stream, consumer_seq: int) -> None:
        """A cross-stream dependency: node ``consumer_seq`` waits for node ``producer_seq`` of another
        stream."""
        self.flows.append(((producer_stream, producer_seq), (consumer_stream, consumer_seq)))

    # -- GPU-clock events ------------------------------------------------------------------------------------
    def has_gpu_clock(self, device) -> bool:
        return device in self._clocks

    def set_gpu_clock(self, device, anchor_event, anchor_ns: int, elapsed_ms) -> None:
        """Tie ``device``'s event clock to the host: ``anchor_event`` completed at host time ``anchor_ns``;
        ``elapsed_ms(a, b)`` gives the milliseconds between two completed events of the device."""
        self._clocks[device] = (anchor_event, anchor_ns, elapsed_ms)

    def gpu_op(self, stream, name: str | OpLabel, start_event, end_event, seq: int | None = None,
               args: dict | None = None, cat: str = "op", suffix: str = "") -> None:
        """A span on ``stream``'s GPU lane between two CUDA events (resolved when the trace ends). ``suffix``
        names another GPU-timed lane of the stream, e.g. its copy stream's (as in :meth:`enter`)."""
        key = None if seq is None else (stream, seq)
        self._gpu_ops.append((stream, suffix, cat, name, start_event, end_event, key, args))

    # -- the end ---------------------------------------------------------------------------------------------
    def finish(self) -> None:
        """Stop the clock and turn GPU events into host-time spans. The caller has synchronized every
        stream."""
        self.end_ns = now()
        unclocked, unread = set(), 0
        for stream, suffix, cat, name, e0, e1, key, args in self._gpu_ops:
            clock = self._clocks.get(stream.device)
            if clock is None:
                unclocked.add(stream.device)
                continue
            anchor, anchor_ns, elapsed = clock
            try:
                t0 = anchor_ns + round(elapsed(anchor, e0) * 1e6)
                t1 = anchor_ns + round(elapsed(anchor, e1) * 1e6)
            except Exception:  # an event the driver cannot time: the trace lacks this span, nothing else
                unread += 1
                continue
            lane = (stream, suffix)
            self.lanes[lane] = (repr(stream.device), repr(stream) + suffix)
            self.spans.append((lane, cat, name, t0, t1, args, key))
        for device in unclocked:
            logger.warning("trace: no GPU clock for %r; its ops are left out", device)
        if unread:
            logger.warning("trace: %d GPU spans left out (their events could not be timed)", unread)
        self._gpu_ops.clear()
        self.end_ns = max([self.end_ns] + [s[4] for s in self.spans])


def _sig(shape, dtype) -> str:
    return f"{dtype.name}[{','.join(map(str, shape))}]"


class OpLabel:
    """What an op span shows, kept raw while tracing and formatted when the trace is written (formatting costs
    microseconds per op, which would show as gaps between ops)."""

    __slots__ = ("prim", "inputs", "outputs", "seq", "stream", "waits", "failed")

    def __init__(self, node, waits=None):
        self.prim = node._prim
        self.inputs = [(x._shape, x._dtype) for x in node._inputs]
        self.outputs = [(o._shape, o._dtype) for o in (node._siblings or (node,))]
        self.seq = node._seq
        self.stream = node._stream
        self.waits = waits
        self.failed = None

    def render(self) -> tuple:
        """The span's name and args, e.g. ``Matmul float32[4096,512] float32[512,4] -> float32[4096,4]``."""
        ins = " ".join(_sig(*x) for x in self.inputs)
        out = " ".join(_sig(*o) for o in self.outputs)
        args = {"op": repr(self.prim), "seq": self.seq, "stream": repr(self.stream)}
        if self.waits:
            args["waits"] = [f"{ex.stream!r} #{seq}" for ex, seq in self.waits]
        if self.failed is not None:
            args["failed"] = self.failed
        return (f"{self.prim!r} {ins} -> {out}" if ins else f"{self.prim!r} -> {out}"), args


def op_label(node, waits=None) -> OpLabel:
    """The label of an op span for ``node`` and its cross-stream ``waits`` (take it before the node runs:
    running detaches it); pass it as the span's name."""
    return OpLabel(node, waits)


# -- debug logging -------------------------------------------------------------------------------------------
_env_lock = threading.Lock()
_env_read = False


def debug_on() -> bool:
    """Whether scheduling decisions are logged (logger ``umx`` at DEBUG). Reads ``UMX_LOG`` on first call."""
    if not _env_read:
        _read_env()
    return logger.isEnabledFor(logging.DEBUG)


def _read_env() -> None:
    """Apply ``UMX_LOG`` (a logging level name, e.g. ``debug``) to the ``umx`` logger, once."""
    global _env_read
    with _env_lock:
        if _env_read:
            return
        _env_read = True
        value = os.environ.get("UMX_LOG", "").strip()
        if not value:
            return
        level = logging.getLevelName(value.upper())
        if not isinstance(level, int):
            print(f"umx: ignoring UMX_LOG={value!r} (expected a logging level such as debug or info)",
                  file=sys.stderr)
            return
        logger.setLevel(level)
        if not logger.handlers:
            h = logging.StreamHandler(sys.stderr)
            h.setFormatter(logging.Formatter("umx %(levelname)s [%(threadName)s] %(message)s"))
            logger.addHandler(h)
