"""The executor of a stream: one worker thread that runs the stream's work in order.

The scheduler hands an executor a batch of tasks per eval. A task is either an array (a node whose inputs are all
ready on this stream and this device: the fast path) or a tuple ``(array, waits)``, where ``waits`` lists
``(executor, seq)`` pairs of other streams' work the node needs first, and whose inputs may need copying here.

Every node gets a sequence number on its executor at planning time; ``done`` counts finished nodes, so "node
``seq`` of executor E is ready" is ``E.done >= seq``: one integer per stream instead of an event per node.
Device backends subclass this and override ``run_batch`` and the readiness test.
"""

from __future__ import annotations

import queue
import threading
import traceback

from .. import memory


class Failure:
    """The data of a node whose kernel raised: reading it raises the error again."""

    __slots__ = ("error", "tb")

    def __init__(self, error: BaseException):
        self.error = error
        self.tb = error.__traceback__

    def reraise(self):
        """Raise the error with its original traceback (re-raising as is would grow it at every eval)."""
        raise self.error.with_traceback(self.tb)

    def __array__(self, *args, **kwargs):
        self.reraise()

    shape = ()


def failure_of(node, inputs, error: BaseException) -> Failure:
    """The Failure a node gets: an input's failure if it had one (the root cause), else a new one naming the op."""
    for x in inputs:
        if type(x._data) is Failure:
            return x._data
    if not isinstance(error, Exception):
        error = RuntimeError(f"{error!r}")
    shapes = ", ".join(f"{x.shape} {x.dtype.name}" for x in inputs)
    error.add_note(f"umx: raised by {node._prim!r} on {node._stream!r} (inputs: {shapes or 'none'})")
    tb = error.__traceback__
    if tb is not None:
        # Keep the kernel's frames, not the worker's: its locals would hold the batch alive with the error.
        tb = tb.tb_next
        traceback.clear_frames(tb)
        error.__traceback__ = tb
    return Failure(error)


class WorkerExecutor:
    """Runs a stream's tasks, in order, on a thread of its own."""

    def __init__(self, stream, name: str):
        self.stream = stream
        self.device = stream.device
        self.submitted = 0  # the last seq handed out; changed only under the scheduler's lock
        self.done = 0  # the last seq finished; written only by the worker thread
        self._cond = threading.Condition(threading.Lock())
        self._waiters = 0
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    # -- called by the scheduler ----------------------------------------------------------------------------
    def submit(self, tasks: list) -> None:
        self._queue.put(tasks)

    def wait(self, seq: int) -> None:
        """Block until node ``seq`` of this stream is finished and its data is readable by the host."""
        if self.done >= seq:
            return
        with self._cond:
            self._waiters += 1
            try:
                while self.done < seq:
                    self._cond.wait(0.25)
            finally:
                self._waiters -= 1

    def synchronize(self) -> None:
        self.wait(self.submitted)

    def is_local(self, data) -> bool:
        """Whether evaluated ``data`` can be read by this stream's kernels without a copy."""
        raise NotImplementedError

    def will_be_read_on(self, node, device) -> None:
        """A hint from the planner: ``node``, pending here, will be read on ``device`` (start copying early)."""

    # -- the worker ----------------------------------------------------------------------------------------------
    def _loop(self) -> None:
        self.setup_thread()
        get = self._queue.get
        while True:
            tasks = get()
            try:
                self.run_batch(tasks)
            except BaseException as e:  # a bug in the executor itself: fail what is left, keep the thread
                self._fail_rest(tasks, e)

    def setup_thread(self) -> None:
        """Per-thread set-up on the worker (NumPy error state, CUDA device)."""

    def run_batch(self, tasks: list) -> None:
        raise NotImplementedError

    def finished(self, seq: int) -> None:
        """Publish that node ``seq`` is done. MUST be called in seq order, by the worker only."""
        self.done = seq
        # Waiters increment _waiters before reading done, so either they see the new done or we see them.
        if self._waiters:
            try:
                with self._cond:
                    self._cond.notify_all()
            except RuntimeError:
                # A waiter that Ctrl-C interrupted inside Condition.wait can release the lock we hold. Waiters
                # poll `done` every 0.25 s anyway, so a lost notification only delays them.
                pass

    def _fail_rest(self, tasks: list, error: BaseException) -> None:
        for t in tasks:
            n = t[0] if type(t) is tuple else t
            if n._data is None:
                set_result(n, failure_of(n, n._inputs, error))
                self.finished(n._seq)


def set_result(node, out) -> None:
    """Store a kernel's output in ``node`` (and its siblings), then detach it from its inputs."""
    sibs = node._siblings
    if sibs is None:
        node._data = out
        memory.acquire(out)
        node._inputs = ()
        node._prim = None
        return
    if type(out) is Failure:
        out = (out,) * len(sibs)
    for s, o in zip(sibs, out):
        s._data = o
        memory.acquire(o)
    for s in sibs:
        s._inputs = ()
        s._prim = None
        s._siblings = None
