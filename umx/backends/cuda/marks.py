"""Completion marks of one GPU stream, and the data its enqueued work still reads.

A GPU executor's ``done`` counts nodes *dispatched* (their kernels enqueued), not finished. Completion is tracked
with *marks*: CUDA events recorded after a node, kept as ``(seq, event)`` in seq order; once a mark's event has
passed, every node up to its seq has finished. Marks are recorded only where someone needs one (a reader on
another stream, a waiting thread), so a chain of 500 kernels costs at most one event.

Data that enqueued work reads but no array holds any more (a staged upload, another stream's input, a dropped
CUDA graph) is *held* with the event after which it may go.
"""

from __future__ import annotations

import threading

from ._probe import _cupy

cp = _cupy()
_runtime = cp.cuda.runtime
_MAX_MARKS = 16  # above this many marks, passed ones are dropped (cheap lookups, bounded memory)


class Marks:
    """The marks and held data of the CUDA stream ``stream`` on device ``index``. ``lock`` MUST be held by a
    thread that enqueues on the stream outside its dispatcher (a mark, a small read): a stream that captures a
    CUDA graph holds it, and may be neither queried nor given work from another thread meanwhile."""

    __slots__ = ("stream", "index", "lock", "complete", "last", "held", "_marks")

    def __init__(self, stream, index: int):
        self.stream = stream
        self.index = index
        self.lock = threading.RLock()  # (reentrant: a signal handler on a thread that holds it may wait)
        self.complete = 0  # every node up to this seq has finished on the GPU
        self.last = 0  # the seq of the last mark
        self.held: list = []  # (event, refs): refs stay alive until event has passed
        self._marks: list = []  # (seq, event), recorded in stream order; guarded by lock

    def record(self, seq: int):
        """Record a mark after everything enqueued so far, covering node ``seq``, unless one does already; the
        event of the last mark (which covers ``seq``). Called on the dispatcher's thread."""
        if seq > self.last:
            event = cp.cuda.Event(disable_timing=True)
            event.record(self.stream)
            with self.lock:
                self._add(seq, event)
        marks = self._marks
        return marks[-1][1] if marks else None  # (None: nothing was ever dispatched)

    def covering(self, seq: int, dispatched: int):
        """``(mseq, event)``: a mark at or after node ``seq``, or None if it is known to be finished. ``seq`` MUST
        be dispatched; ``dispatched`` is the executor's count of dispatched nodes. Any thread may call this: if no
        mark covers ``seq`` yet, one is recorded after everything enqueued so far."""
        with self.lock:
            if seq <= self.complete:
                return None
            for m in self._marks:
                if m[0] >= seq:
                    return m
            dispatched = max(dispatched, seq)  # read before recording: the event follows every node up to it
            if _runtime.getDevice() == self.index:
                event = cp.cuda.Event(disable_timing=True)
                event.record(self.stream)
            else:
                with cp.cuda.Device(self.index):
                    event = cp.cuda.Event(disable_timing=True)
                    event.record(self.stream)
            return self._add(dispatched, event)

    def before_later_work(self, seq: int, dispatched: int):
        """For a reader of node ``seq`` (dispatched) that enqueues on a stream of its own: None if the node has
        finished, the event of a mark covering it that precedes later work (a node after the mark was
        ``dispatched``) to wait for first, or False if there is neither (the reader then queues behind it all)."""
        with self.lock:
            if seq <= self.complete:
                return None
            for m in self._marks:
                if m[0] >= seq:
                    return m[1] if m[0] < dispatched else False
        return False

    def passed(self, seq: int) -> None:
        """Every node up to ``seq`` has finished (a mark's event passed, or the stream was idle)."""
        if seq > self.complete:
            self.complete = seq

    def idle(self) -> bool:
        """Whether all work enqueued on the stream has finished (one query: less than an event and a wait)."""
        with self.lock:  # (a stream that captures a CUDA graph may not be queried: the capture holds the lock)
            return self.stream.done

    def hold(self, event, refs) -> None:
        """Keep ``refs`` alive until ``event`` has passed."""
        self.held.append((event, refs))

    def release(self) -> None:
        """Drop the data held for work that has finished."""
        if self.held:
            self.held = [h for h in self.held if not h[0].done]

    def _add(self, seq: int, event):
        """Append a mark (the caller holds the lock), dropping passed ones once there are many."""
        marks = self._marks
        if len(marks) >= _MAX_MARKS:
            while marks and marks[0][1].done:
                self.passed(marks.pop(0)[0])
        m = (seq, event)
        marks.append(m)
        if seq > self.last:
            self.last = seq
        return m
