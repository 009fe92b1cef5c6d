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

from . import _tracing
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
                n._seq = -1
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
                    if xe.device is not dev:
                        xe.will_be_read_on(x, dev)
            elif waits is None and not ex.is_local(x._data):
                waits = []  # no wait, but the input must be copied here: the slow path
        if waits is not None:
            task = (n, waits)
        b = batches.get(ex)
        if b is None:
            batches[ex] = [task]
        else:
            b.append(task)
    tr = _tracing.active  # once per eval: tracing and logging off cost this load and one level check
    if tr is not None or _tracing.debug_on():
        _report(batches, tr)
    for ex, tasks in batches.items():
        ex.submit(tasks)


def _report(batches: dict, tr) -> None:
    """Record the planned cross-stream waits as trace flows and log the plan. Runs before the batches are
    submitted: a running node is detached from its primitive and inputs."""
    log = _tracing.debug_on()
    if log:
        per_stream = ", ".join(f"{ex.stream!r}: {len(tasks)}" for ex, tasks in batches.items())
        _tracing.logger.debug("plan: %d nodes (%s)", sum(map(len, batches.values())), per_stream)
    for ex, tasks in batches.items():
        for t in tasks:
            if type(t) is not tuple:
                continue
            n, waits = t
            if not waits and log:
                _tracing.logger.debug("copy: %r #%d on %r reads inputs from another device",
                                      n._prim, n._seq, ex.stream)
            for xe, seq in waits:
                if tr is not None:
                    tr.flow(xe.stream, seq, ex.stream, n._seq)
                if log:
                    copy = f" (copy {xe.device!r} -> {ex.device!r})" if xe.device is not ex.device else ""
                    _tracing.logger.debug("wait: %r #%d on %r after %r #%d%s", n._prim, n._seq, ex.stream,
                                          xe.stream, seq, copy)


class _Planning:
    """Marks nodes on the planning stack (an executor stand-in that is never submitted to)."""

    device = None


_PLANNING = _Planning()


def eval_arrays(targets) -> None:
    """Evaluate ``targets`` (a sequence of arrays) and wait for them; raise the first failure."""
    tr = _tracing.active
    if tr is not None:
        t0 = _tracing.now()
        try:
            _eval_arrays(targets)
        finally:
            tr.span("eval", "eval", t0, _tracing.now(), {"targets": [f"{t.dtype.name}{list(t.shape)}"
                                                                    for t in targets[:8]]})
        return
    _eval_arrays(targets)


def _eval_arrays(targets) -> None:
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
    tr = _tracing.active
    t0 = _tracing.now() if tr is not None else 0
    with _plan_lock:
        _plan(targets)
    if tr is not None:
        tr.span("eval", "async_eval", t0, _tracing.now(), {"targets": len(targets)})
