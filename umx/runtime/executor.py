"""The executor of a stream: one worker thread that runs the stream's work in order.

The scheduler hands an executor a batch of tasks per eval. A task is either an array (a node whose inputs are all
ready on this stream and this device: the fast path) or a tuple ``(array, waits)``, where ``waits`` lists
``(executor, seq)`` pairs of other streams' work the node needs first, and whose inputs may need copying here.

Every node gets a sequence number on its executor at planning time; ``done`` counts finished nodes, so "node
``seq`` of executor E is ready" is ``E.done >= seq``: one integer per stream instead of an event per node.
Device backends subclass this and override ``run_batch`` and the readiness test.
"""

from __future__ import annotations

import copy
import queue
import threading
import traceback

from ..dtypes import bfloat16, narrow_bf16, widen_bf16
from . import tracing as _tracing
from .fusion import Fused
from .interfaces import Traits
from .node import finish, finish_siblings
from .refs import UNHELD_TASK, UNHELD_TASK_PAIR, task_refs

_NEVER = 1 << 62


class _HostReader:
    """The caller's thread, reading a result on the host as soon as it is computed (``item()``, printing): a reader
    the planner names to a producer (``will_be_read_on``), which a GPU kernel serves by writing a small result to
    the host itself (see cuda/direct.py). Nothing is copied ahead for it otherwise: the reader copies what it needs
    when it needs it, and an early copy would cost the caller more than it saves."""

    type = None  # (no device: no stream's copy goes to it)

    def __repr__(self) -> str:
        return "HOST_READER"


HOST_READER = _HostReader()


class Failure:
    """The data of a node whose kernel raised: reading it raises the error again."""

    __slots__ = ("error", "raised")

    def __init__(self, error: BaseException):
        self.error = error
        self.raised = False  # whether a reader has seen it (else ``synchronize`` raises it, see take_unraised)

    def reraise(self):
        """Raise a copy of the error. Not the stored error itself: raising it would give it a traceback of the
        caller's frames, which hold the failed node, and node, Failure, error and frames would then hold each
        other (and the caller's arrays) until the garbage collector runs."""
        self.raised = True
        raise _fresh(self.error)

    def propagate(self):
        """Raise a copy of the error inside the runtime (a kernel reading a failed input): no reader saw it."""
        raise _fresh(self.error)

    def __array__(self, *args, **kwargs):
        self.propagate()

    shape = ()


def _fresh(error: BaseException) -> BaseException:
    """A new exception equal to ``error``: same type, arguments, notes and attributes, and the same cause."""
    try:
        new = copy.copy(error)  # (through __reduce__: the class's own constructor)
    except Exception:
        try:
            new = type(error).__new__(type(error), *error.args)
            new.__dict__.update(error.__dict__)
        except Exception:
            return error  # an exception that cannot be copied: raised as is
    new.__cause__ = error.__cause__
    new.__context__ = error.__context__
    new.__suppress_context__ = error.__suppress_context__
    return new


def failure_of(node, inputs, error: BaseException) -> Failure:
    """The Failure a node gets: an input's failure if it had one (the root cause), else a new one naming the op.

    The kernel's traceback is kept as text in a note, not as frames: a frame links to its callers' frames (the
    whole stack at the time, user frames and their arrays included), which a stored error would keep alive."""
    for x in inputs:
        if type(x._data) is Failure:
            return x._data
    if not isinstance(error, Exception):
        error = RuntimeError(f"{error!r}")
    shapes = ", ".join(f"{x.shape} {x.dtype.name}" for x in inputs)
    error.add_note(f"umx: raised by {node._prim!r} on {node._stream!r} (inputs: {shapes or 'none'})")
    tb = error.__traceback__
    if tb is not None and tb.tb_next is not None:  # (the first frame is the executor's own)
        error.add_note("umx: the kernel's traceback (most recent call last):\n"
                       + "".join(traceback.format_tb(tb.tb_next)).rstrip())
    _drop_tracebacks(error)
    f = Failure(error)
    prev = _unraised.get(node._stream)
    if prev is None or prev.raised:
        _unraised[node._stream] = f
    return f


# stream -> the first failure of its work since it was last synchronized: async_eval's errors surface there
_unraised: dict = {}


def take_unraised(stream) -> Failure | None:
    """The first failure on ``stream`` since the last call that no reader has raised, or None; forgets it."""
    f = _unraised.pop(stream, None)
    return None if f is None or f.raised else f


def _drop_tracebacks(error: BaseException) -> None:
    """Drop the traceback frames of ``error`` and of the exceptions chained to it."""
    seen = set()
    stack = [error]
    while stack:
        e = stack.pop()
        if e is not None and id(e) not in seen:
            seen.add(id(e))
            e.__traceback__ = None
            stack += (e.__cause__, e.__context__)


_NEVER = float("inf")


class WorkerExecutor:
    """Runs a stream's tasks, in order, on a thread of its own."""

    def __init__(self, stream, name: str):
        self.stream = stream
        self.device = stream.device
        self.submitted = 0  # the last seq handed out; changed only under the scheduler's lock
        self.done = 0  # the last seq finished; written only by the worker thread
        # Reentrant: a signal handler that evaluates may interrupt this thread inside a wait's locked region.
        self._cond = threading.Condition(threading.RLock())
        self._wanted: list[int] = []  # seqs that threads wait for; changed under _cond
        self._wake_at = _NEVER  # min(_wanted): the worker notifies only once done reaches it
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        # MUST be held to run tasks: by the worker, or by a caller running its own batch inline. Reentrant, so that
        # an interrupted caller can tell whether it holds it (``_is_owned``, see scheduler._recover).
        self._run_lock = threading.RLock()
        self._resume: list | None = None  # a batch an interrupted caller left; set and taken under _run_lock
        self.draining = 0  # after an interrupt, a count of interrupts: unheld work is dropped (abandon_unheld)
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    # -- called by the scheduler ----------------------------------------------------------------------------
    def submit(self, tasks: list) -> None:
        self._queue.put(tasks)

    def hand_over(self, tasks: list) -> None:
        """Give a batch the caller was to run inline (it holds the run lock) to the worker instead, ahead of any
        batch queued meanwhile (as an interrupted ``run_inline`` does)."""
        self._resume = tasks
        self._queue.put(None)
        self._run_lock.release()

    def wait(self, seq: int) -> None:
        """Block until node ``seq`` of this stream is finished and its data is readable by the host."""
        if self.done >= seq:
            return
        if self._run_lock._is_owned():
            raise RuntimeError(
                f"umx: this thread waits for work on {self.stream!r} that only it can run: it was interrupted "
                "while running that stream's work (an eval inside a signal handler or a finalizer?). Evaluate what "
                "the handler needs before the signal can arrive, or let the handler set a flag and act on it "
                "after the eval returns.")
        with self._cond:
            self._wanted.append(seq)
            if seq < self._wake_at:
                self._wake_at = seq
            try:
                while self.done < seq:
                    self._cond.wait(0.25)
            finally:
                self._wanted.remove(seq)
                self._wake_at = min(self._wanted, default=_NEVER)

    def synchronize(self) -> None:
        self.wait(self.submitted)

    def try_run_inline(self) -> bool:
        """Take this stream's run lock for the calling thread if the worker is not using it."""
        return self._run_lock.acquire(blocking=False)

    def run_lane(self, task, read: bool) -> None:
        """Run the one task that the scheduler's lane planned (see ``scheduler._lane``) on the calling thread,
        which holds the run lock; ``read``: the caller reads the small result on the host at once. Ctrl-C as for
        ``run_inline``."""
        if read:
            self.will_be_read_on(task[0] if type(task) is tuple else task, HOST_READER)
        self.run_inline([task])

    def run_inline(self, tasks: list, started=None) -> None:
        """Run ``tasks`` on the calling thread; the caller holds the run lock (``try_run_inline``).

        Ctrl-C lands here (the main thread runs the batch): the caller gets its KeyboardInterrupt at once, and the
        tasks not yet finished go to the worker, ahead of any later batch, so nothing is lost or poisoned.
        ``started()``, if given, is called first, inside that protection: the planner lets held Ctrl-Cs through
        there (see ``scheduler._schedule``).
        """
        last = tasks[-1]
        last = (last[0] if type(last) is tuple else last)._seq  # tasks are cleared as they finish
        try:
            if started is not None:
                started()
            self.run(tasks)
        except BaseException:
            rest = []
            for t in tasks:
                if t is None:
                    continue
                n = t[0] if type(t) is tuple else t
                if n._data is None:
                    rest.append(t)
                elif n._seq > self.done:  # finished, but interrupted before it was published
                    self.finished(n._seq)
            if rest:
                self._resume = rest
                self._queue.put(None)  # wakes the worker, which runs _resume before anything else
            elif last > self.done:  # every task has its data (a task is cleared once it has): publish them
                self.finished(last)
            raise
        finally:
            self._run_lock.release()

    #: what the planner may know of this executor (see interfaces.Traits)
    traits = Traits()

    def holds_stream(self) -> bool:
        """Whether the calling thread took this stream (``try_run_inline``) and has not given it back."""
        return self._run_lock._is_owned()

    def release_stream(self) -> None:
        """Give back the stream the calling thread took and did not use."""
        self._run_lock.release()

    def only_enqueues(self, tasks: list) -> bool:
        """Whether running ``tasks`` only enqueues work (kernel launches that never wait for the device), so that
        the caller may launch a short batch of them before its own (see ``scheduler._plan``)."""
        return False



    def will_be_read_on(self, node, device) -> None:
        """A hint from the planner: ``node``, pending here, will be read on ``device`` (start copying early)."""

    # -- the worker ----------------------------------------------------------------------------------------------
    def _loop(self) -> None:
        self.setup_thread()
        get = self._queue.get
        while True:
            tasks = get()
            with self._run_lock:
                # Tasks a caller left unfinished (interrupted while running its batch inline) come first: they
                # precede every batch still queued.
                for batch in (self._resume, tasks):
                    if batch:
                        try:
                            if self.draining:
                                self._run_held(batch)
                            else:
                                self.run(batch)
                        except BaseException as e:  # a bug in the executor itself: fail what is left, go on
                            self._fail_rest(batch, e)
                self._resume = None
                if self.draining and self._queue.empty():
                    self.draining = 0  # (work planned from now on is run whoever holds it)
            tasks = batch = None  # nothing of a finished batch may outlive it here

    def raise_unraised(self) -> None:
        """Raise the first failure of this stream's work since the last call that no reader has raised (an array
        ``async_eval`` started and nobody read): what ``synchronize`` reports, as in MLX."""
        failure = take_unraised(self.stream)
        if failure is not None:
            failure.reraise()

    def abandon_unheld(self) -> None:
        """After an interrupt: tasks not yet started whose arrays nothing holds any more are dropped, not run,
        until this stream has caught up (see ``drop_unheld``). Each call makes a running batch look again."""
        if self.done < self.submitted or self._resume:
            self.draining += 1

    def _run_held(self, tasks: list) -> None:
        """Run ``tasks`` without those that nothing holds (see ``drop_unheld``)."""
        last = seq_of(tasks[-1])
        drop_unheld(tasks, 0)
        kept = [t for t in tasks if t is not None]
        tasks.clear()
        if kept:
            self.run(kept)
        if last > self.done:  # the dropped tasks at the end count as finished
            self.finished(last)

    def setup_thread(self) -> None:
        """Per-thread set-up on the worker (NumPy error state, CUDA device)."""

    def run(self, tasks: list) -> None:
        """Run a batch wherever it runs (the worker, or a caller's thread): ``run_batch``, or ``run_traced``
        while a trace records. Tracing off costs one load per batch, not per op."""
        tr = _tracing.active
        if tr is None:
            self.run_batch(tasks)
        else:
            self.run_traced(tasks, tr)

    def run_batch(self, tasks: list) -> None:
        raise NotImplementedError

    def run_traced(self, tasks: list, tr) -> None:
        """``run_batch`` while a trace records (``tr``, see ``umx.runtime.tracing``): a host-clock span per op and
        per cross-stream wait on this stream's lane. A GPU executor overrides this (CUDA events)."""
        prev = tr.enter(self.stream)
        try:
            self._run_traced(tasks, tr)
        finally:
            tr.leave(prev)

    def _run_traced(self, tasks: list, tr) -> None:
        now = _tracing.now
        for t in tasks:
            waits = None
            if type(t) is tuple:
                n, waits = t
                for ex, seq in waits:
                    t0 = now()
                    try:
                        ex.wait(seq)
                    except Exception:  # run_batch waits again and turns the error into the node's failure
                        pass
                    tr.span("wait", f"wait {ex.stream!r} #{seq}", t0, now())
            else:
                n = t
            label = _tracing.op_label(n, waits)
            t0 = now()
            self.run_batch([t])
            t1 = now()
            if type(n._data) is Failure:
                label.failed = repr(n._data.error)
            tr.op(label, t0, t1, self.stream, n._seq)

    def finished(self, seq: int) -> None:
        """Publish that node ``seq`` is done. MUST be called in seq order, by the worker only."""
        self.done = seq
        # A waiter sets _wake_at before reading done, so either it sees the new done or we see its _wake_at.
        if seq >= self._wake_at:
            self.notify()

    def notify(self) -> None:
        try:
            with self._cond:
                self._cond.notify_all()
        except RuntimeError:
            # A waiter that Ctrl-C interrupted inside Condition.wait can release the lock we hold. Waiters poll
            # `done` every 0.25 s anyway, so a lost notification only delays them.
            pass

    def _fail_rest(self, tasks: list, error: BaseException) -> None:
        """Fail every task not yet finished, and publish them all as done: no waiter may hang on them."""
        last = self.done
        for t in tasks:
            if t is None:  # already run
                continue
            n = t[0] if type(t) is tuple else t
            last = max(last, n._seq)
            try:
                if n._data is None:
                    set_result(n, failure_of(n, n._inputs, error))
            except BaseException:  # never let bookkeeping of a failure leave seqs unpublished
                pass
        if last > self.done:
            self.finished(last)


def seq_of(task) -> int:
    return (task[0] if task.__class__ is tuple else task)._seq


ABANDONED = Failure(RuntimeError("umx: this array was dropped after an interrupt, since nothing held it; "
                                 "please report this if you see it"))


def drop_unheld(tasks: list, start: int) -> None:
    """Drop the tasks from ``start`` on whose nodes nothing but the task holds: each gets the ``ABANDONED``
    failure, is detached (which frees its inputs) and becomes None in ``tasks``. Readers come after what they
    read, so the walk goes backwards: a dropped reader lets go of its inputs before they are looked at.
    Regions and multi-output nodes are kept."""
    # (a count above the task's own, measured in refs.py, means a user's variable or a reader's inputs hold it)
    for j in range(len(tasks) - 1, start - 1, -1):
        t = tasks[j]
        if t is None:
            continue
        n = t[0] if t.__class__ is tuple else t
        if n.__class__ is Fused or n._siblings is not None or n._data is not None:
            continue
        n = None
        unheld = UNHELD_TASK_PAIR if t.__class__ is tuple else UNHELD_TASK
        t = None
        if task_refs(tasks, j) <= unheld:
            t = tasks[j]
            n = t[0] if t.__class__ is tuple else t
            finish(n, ABANDONED)
            tasks[j] = t = n = None


def conform(xp, n, out):
    """A kernel's output as node ``n`` declares it, for every backend (``xp``: its array module): a library's
    loop may pick another dtype than MLX's (NumPy's bool shifts give int8...), and a bfloat16 result computed in
    float32 is rounded to its 16-bit storage (a kernel that moved bits gave the storage already). Siblings' outputs
    (a tuple) each as its node declares it."""
    if out.__class__ is tuple:
        return tuple(conform(xp, s, o) for s, o in zip(n._siblings, out))
    return conform_to(xp, n._dtype, out)


def conform_to(xp, d, out):
    """A kernel's output ``out`` as umx dtype ``d`` (see :func:`conform`)."""
    want = d.np
    if out.dtype is not want and out.dtype != want:
        out = narrow_bf16(xp, out) if d is bfloat16 else out.astype(want)
    return out


def kernel_args(prim, ins, args: list, xp) -> list:
    """The data ``args`` of inputs ``ins`` as the kernel of ``prim`` takes them: a bfloat16 input widened to
    float32 (exact) unless the kernel only moves bits (``Primitive.moves_bits``)."""
    for x in ins:
        if x._dtype is bfloat16:
            if prim.moves_bits:
                return args
            return [widen_bf16(xp, a) if y._dtype is bfloat16 else a for y, a in zip(ins, args)]
    return args


def run_steps(f, leaves: list, call, xp):
    """Fused region ``f`` run step by step, each step by the backend's kernel (``call(prim, args)``): for a backend
    with no fused path of its own, or a program its own path cannot express. ``xp``: the backend's array module."""
    values = list(leaves)
    nodes = (*f.leaves, *f.nodes)
    for (prim, args), n in zip(f.program, f.nodes):
        xs = [values[a] for a in args]
        values.append(conform(xp, n, call(prim, kernel_args(prim, [nodes[a] for a in args], xs, xp))))
    if f.sides:  # (see fusion.merge)
        f.side_values = [values[len(leaves) + p] for p in f.sides]
    return values[-1]


def steps_kernel(table: dict, xp, storage: dict | None = None):
    """The kernel of ``Compiled`` nodes for a backend with kernel ``table`` and array module ``xp``: the compiled
    graph's steps one by one (``Program.run_steps``). ``storage``: kernels that read bfloat16 inputs' storage
    themselves (primitive class -> ``fn(prim, *data)``, None where it does not apply), asked before widening them."""

    def run(prim, *args):
        return prim.program.run_steps(args, table, xp, storage)

    return run


def set_result(task_node, out) -> None:
    """Finish a task's node with a kernel's output: the node, its siblings (``out`` a tuple, or one Failure for
    all), or the root of a fused region (see ``node.finish``)."""
    if task_node.__class__ is Fused:
        # Only the root detaches: the other members are freed with the task, last first, each by the one
        # reference left to it (no deep recursion, no cycle).
        finish(task_node.root, out)
    elif task_node._siblings is None:
        finish(task_node, out)
    else:
        finish_siblings(task_node._siblings, out)
