"""Evaluation: from the arrays asked for to per-stream task lists with the cross-stream waits they need.

``eval`` walks the graph behind its targets (iteratively: graphs of any depth), keeps the nodes not yet scheduled,
orders them so that inputs come first, and gives each node a sequence number on its stream's executor. A node whose
inputs come from another stream, or live on another device, becomes a ``(node, waits)`` task: its executor waits
for those producers and copies the inputs across before running it. Each stream's list goes to its executor in one
hand-off; ``eval`` then waits for the targets, ``async_eval`` returns at once.

Results are as if run in program order: a node runs after its inputs (stream order or an explicit wait), and
arrays are immutable, so no later op can change what an earlier one read.
"""

from __future__ import annotations

import signal
import threading

from .array import array
from .backends.executor import Failure

__all__ = ["eval", "async_eval"]

# MUST be held while planning: it makes "not yet scheduled" and the seq numbers consistent across threads that
# evaluate overlapping graphs. Never held while waiting for results.
_plan_lock = threading.Lock()

def _targets(args, out: list) -> None:
    """Collect the arrays in ``args`` (arrays or trees of lists, tuples and dicts); other leaves are ignored."""
    stack = list(args)
    while stack:
        x = stack.pop()
        if type(x) is array:
            out.append(x)
        elif isinstance(x, (list, tuple)):
            stack.extend(x)
        elif isinstance(x, dict):
            stack.extend(x.values())


def _plan(targets: list) -> None:
    """Schedule every unscheduled node behind ``targets`` on its stream's executor. Caller holds _plan_lock.

    An exception in the middle (e.g. a device failing to start) leaves the graph consistent: the nodes already
    given sequence numbers are handed to their executors, the others are unmarked, so a later eval schedules
    them. (Ctrl-C is held back meanwhile, see :func:`_schedule`.)
    """
    order = []
    try:
        _order(targets, order)
    except BaseException:
        _unmark(targets, order)
        raise
    if not order:
        return
    batches: dict = {}
    bases: dict = {}  # executor -> its `submitted` before this plan
    try:
        for n in order:
            ex = n._stream.executor
            b = batches.get(ex)
            if b is None:
                bases[ex] = ex.submitted
                b = batches[ex] = []
            seq = ex.submitted + 1
            task = n
            waits = None
            dev = ex.device
            for x in n._inputs:
                if x._data is None:
                    xe = x._exec
                    if xe is not ex:
                        if waits is None:
                            waits = []
                        waits.append((xe, x._seq))
                        if xe.device is not dev:
                            xe.will_be_read_on(x, dev)
                elif waits is None and not ex.is_local(x._data):
                    waits = []  # no wait, but the input must be copied here: the slow path
            if waits is not None:
                task = (n, waits)
            sibs = n._siblings
            if sibs is None:
                n._exec = ex
                n._seq = seq
            else:
                for s in sibs:
                    s._exec = ex
                    s._seq = seq
            b.append(task)
            ex.submitted = seq
    except BaseException:
        _repair(order, batches, bases)
        raise
    finally:
        for ex, tasks in batches.items():
            if tasks:
                ex.submit(tasks)


def _order(targets: list, order: list) -> None:
    """Append the unscheduled nodes behind ``targets`` to ``order``, inputs first, marking them as planned."""
    stack = [t for t in targets if t._data is None and t._exec is None]
    mark = _PLANNING
    while stack:
        n = stack[-1]
        if n._exec is mark:  # inputs done: emit
            stack.pop()
            if n._seq == 0:
                sibs = n._siblings
                if sibs is None:
                    n._seq = -1
                else:  # one node runs a multi-output primitive: its siblings must not be emitted again
                    for s in sibs:
                        s._seq = -1
                order.append(n)
            continue
        n._exec = mark
        for x in n._inputs:
            if x._data is None and x._exec is None:
                stack.append(x)


def _unmark(targets: list, order: list) -> None:
    """Undo an interrupted :func:`_order`: clear the marks of every node it touched."""
    stack = list(targets) + order
    while stack:
        n = stack.pop()
        if n._data is None and (n._exec is _PLANNING or n._seq == -1):
            for s in n._siblings or (n,):
                s._exec = None
                s._seq = 0
            stack.extend(n._inputs)


def _repair(order: list, batches: dict, bases: dict) -> None:
    """After an interrupted plan: number the batched tasks in place and unmark the nodes not batched."""
    batched = set()
    for ex, tasks in batches.items():
        for k, t in enumerate(tasks):
            n = t[0] if type(t) is tuple else t
            batched.add(id(n))
            for s in n._siblings or (n,):
                s._exec = ex
                s._seq = bases[ex] + k + 1
        ex.submitted = bases[ex] + len(tasks)
    for n in order:
        if id(n) not in batched:
            for s in n._siblings or (n,):
                s._exec = None
                s._seq = 0


class _Planning:
    """Marks nodes on the planning stack (an executor stand-in that is never submitted to)."""

    device = None


_PLANNING = _Planning()


def _schedule(targets: list) -> None:
    """Plan ``targets`` under the lock. On the main thread, Ctrl-C is held back until planning is done: the
    hand-off to the executors must not stop halfway (waiting for results, after it, stays interruptible)."""
    prev = signal.getsignal(signal.SIGINT) if threading.current_thread() is _MAIN else None
    if prev is None:  # another thread (signals only reach the main one), or a handler installed from C
        with _plan_lock:
            _plan(targets)
        return
    held = []
    try:
        signal.signal(signal.SIGINT, lambda signum, frame: held.append(signum))
    except ValueError:  # the main thread of another interpreter
        prev = None
    try:
        with _plan_lock:
            _plan(targets)
    finally:
        if prev is not None:
            signal.signal(signal.SIGINT, prev)
            if held:
                signal.raise_signal(signal.SIGINT)  # delivered now, to the user's handler


_MAIN = threading.main_thread()


def eval_arrays(targets) -> None:
    """Evaluate ``targets`` (a sequence of arrays) and wait for them; raise the first failure."""
    _schedule(targets)
    for t in targets:
        if t._data is None:
            t._exec.wait(t._seq)
    for t in targets:
        if type(t._data) is Failure:
            t._data.reraise()


def eval(*args) -> None:  # noqa: A001 (MLX's name)
    """Evaluate the arrays in ``args`` (arrays, or lists, tuples and dicts of them) and wait for the results.

    Only the work the arrays need runs; arrays already evaluated are not run again. An error raised by a kernel,
    on any stream, is raised here, on the caller's thread.

    Args:
        *args: arrays or trees of arrays; other leaves are ignored.
    """
    targets: list = []
    _targets(args, targets)
    eval_arrays(targets)


def async_eval(*args) -> None:
    """Start evaluating the arrays in ``args`` and return at once; using a result later waits for it.

    Args:
        *args: arrays or trees of arrays; other leaves are ignored.
    """
    targets: list = []
    _targets(args, targets)
    _schedule(targets)
