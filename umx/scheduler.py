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
    """Schedule every unscheduled node behind ``targets`` on its stream's executor. Caller holds _plan_lock."""
    order = []
    stack = [t for t in targets if t._data is None and t._exec is None]
    mark = _PLANNING
    while stack:
        n = stack[-1]
        if n._exec is mark:  # inputs done: emit
            stack.pop()
            if n._seq == 0:
                sibs = n._siblings
                for s in (n,) if sibs is None else sibs:  # siblings are one node: emitted once
                    s._seq = -1
                    s._exec = mark
                order.append(n)
            continue
        n._exec = mark
        for x in n._inputs:
            if x._data is None and x._exec is None:
                stack.append(x)
    if not order:
        return
    batches: dict = {}
    for n in order:
        ex = n._stream.executor
        seq = ex.submitted = ex.submitted + 1
        sibs = n._siblings
        if sibs is None:
            n._exec = ex
            n._seq = seq
        else:
            for s in sibs:
                s._exec = ex
                s._seq = seq
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
                    xe.will_be_read_on(x, dev)  # a GPU producer marks x (and copies it to the host for a CPU)
            elif waits is None and not ex.is_local(x._data):
                waits = []  # no wait, but the input must be copied here: the slow path
        if waits is not None:
            task = (n, waits)
        b = batches.get(ex)
        if b is None:
            batches[ex] = [task]
        else:
            b.append(task)
    for ex, tasks in batches.items():
        ex.submit(tasks)


class _Planning:
    """Marks nodes on the planning stack (an executor stand-in that is never submitted to)."""

    device = None


_PLANNING = _Planning()


def eval_arrays(targets) -> None:
    """Evaluate ``targets`` (a sequence of arrays) and wait for them; raise the first failure."""
    with _plan_lock:
        _plan(targets)
    for t in targets:
        if t._data is None:
            t._exec.wait(t._seq)
    for t in targets:
        if type(t._data) is Failure:
            raise t._data.error


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
    with _plan_lock:
        _plan(targets)
