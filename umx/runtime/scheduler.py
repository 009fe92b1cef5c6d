"""Evaluation: from the arrays asked for to per-stream task lists with the cross-stream waits they need.

``eval`` walks the graph behind its targets (iteratively: graphs of any depth), keeps the nodes not yet scheduled,
orders them so that inputs come first, and gives each node a sequence number on its stream's executor. A node whose
inputs come from another stream, or live on another device, becomes a ``(node, waits)`` task: its executor waits
for those producers and copies the inputs across before running it. Each stream's list goes to its executor in one
hand-off, except the batches the caller runs itself (its likeliest long pole, after any short GPU launches); ``eval``
then waits for the targets, ``async_eval`` returns at once. One node whose inputs are all evaluated, on an idle
stream, skips the walk and the batch (``_lane``).

Results are as if run in program order: a node runs after its inputs (stream order or an explicit wait), and
arrays are immutable, so no later op can change what an earlier one read.
"""

from __future__ import annotations

import os
import signal
import threading
from math import prod
from threading import get_ident

try:
    import _signal  # the C module: the hot path of every eval skips signal.py's enum conversions
except ImportError:  # another Python implementation
    _signal = signal

from .. import array as _array
from .. import backends
from ..array import array
from . import tracing as _tracing
from .executor import HOST_READER, Failure
from .fusion import ELEMENTWISE, SPLIT_MIN_SIZE, Fused, collect, unmerge
from .node import MEMBER, PLAN_LOCK, PLANNING, unplan
from .retain import evaluate as _evaluate_keeping
from .retain import tracing as transform_watch

#: fusion of elementwise regions at eval; UMX_FUSION=0 turns it off (to measure what it gains)
FUSION = os.environ.get("UMX_FUSION", "1") != "0"
#: ``start`` launches gradients as soon as they are built, where the device overlaps the host (a GPU's);
#: UMX_EARLY_START=0 turns it off (to measure what it gains: bench/grad_tapes.py)
EARLY_START = os.environ.get("UMX_EARLY_START", "1") != "0"

__all__ = ["eval", "async_eval"]

_plan_lock = PLAN_LOCK  # (see node.py)
_planning = False  # True while the holder of _plan_lock walks the graph (a reentrant call there is refused)
_SIGINT = int(signal.SIGINT)

#: a batch of at most this many tasks on a stream whose batches only enqueue work (a GPU's) is launched by the
#: caller itself, before the batch it runs (see ``_plan``)
INLINE_LAUNCHES = 16

#: a target the host reads at once (``item()``, printing) of at most this many elements is hinted to its
#: producer as read by the host: a GPU kernel then writes it to the host as it computes it (see cuda/direct.py)
SMALL_READ = 256

#: set by ``umx.distributed`` once a group of several processes exists: called with a plan's tasks, in plan order,
#: under the plan lock and before any of them can run, so that communication takes its turns in plan order
on_plan = None

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


def _plan(targets: list, inline: bool = False, host: bool = False):
    """Schedule every unscheduled node behind ``targets`` on its stream's executor. Caller holds _plan_lock.

    With ``inline``, batches may be returned instead of submitted, as a list of ``(executor, tasks)`` to run in
    order: the caller is about to block anyway, so it runs them itself, saving two thread hand-offs each. Only a
    batch whose executor has finished all earlier work qualifies, and the caller holds each one's run lock
    (``try_run_inline``).
    With ``host``, the caller reads the targets on the host next: small ones are hinted so (``SMALL_READ``).
    """
    global _planning
    if _planning:  # (the lock is reentrant, so that this is an error, not a deadlock)
        raise RuntimeError("umx: eval was called while this thread was planning another eval (from a signal "
                           "handler or a finalizer?): evaluate it before, or after the eval returns")
    _planning = True
    try:
        return _plan_marked(targets, inline, host)
    finally:
        _planning = False


def _plan_marked(targets: list, inline: bool, host: bool):
    """:func:`_plan`'s work, while no reentrant call may plan."""
    mark = PLANNING
    try:
        order = collect(targets, mark, FUSION)
    except BaseException:  # e.g. a device failing to start: leave nothing marked, a later eval plans these nodes
        _unmark(targets, mark)
        raise
    if not order:
        return None
    batches: dict = {}  # executor -> its tasks, in order
    first_seq: dict = {}
    try:
        _number(order, batches, first_seq)
    except BaseException:
        # e.g. a device failing to start: hand over what was numbered, unmark the rest for a later eval
        for ex, tasks in batches.items():
            if tasks:
                ex.submit(tasks)
        for n in order:
            if n.__class__ is Fused and n.root._exec is not mark:
                continue  # numbered: its members stay marked (see below)
            for m in n.nodes if n.__class__ is Fused else n._siblings or (n,):
                if m._exec is mark or m._exec is MEMBER:
                    unplan(m)
                    unmerge(m)
        raise
    if on_plan is not None:
        on_plan(order)
    if host:
        for t in targets:
            if t._data is None and prod(t._shape) <= SMALL_READ:
                t._exec.will_be_read_on(t, HOST_READER)
    tr = _tracing.active  # once per eval: tracing and logging off cost this load and one level check
    if tr is not None or _tracing.debug_on():
        _report(batches, tr)
    mine = None
    if inline:
        # The caller takes the batch likeliest to be the long pole (CPU work over GPU launches), if its stream
        # has finished all earlier work; the others run meanwhile on their workers.
        best = None
        for ex in batches:
            if ex.done == first_seq[ex] - 1 and (best is None or ex.traits.inline_rank > best.traits.inline_rank):
                best = ex
        if best is not None and best.try_run_inline():
            mine = [(best, batches.pop(best))]
            # A few launches on another stream (a GPU's, of kernels that only enqueue) the caller makes first,
            # itself: that costs less than waking a dispatcher and trading the GIL with it. Not a batch that
            # waits for another stream: the caller would block on it before doing its own work.
            if batches:
                for ex in [ex for ex, tasks in batches.items() if len(tasks) <= INLINE_LAUNCHES]:
                    tasks = batches[ex]
                    if (ex.done == first_seq[ex] - 1 and not any(type(t) is tuple and t[1] for t in tasks)
                            and ex.only_enqueues(tasks) and ex.try_run_inline()):
                        mine.insert(0, (ex, batches.pop(ex)))
    for ex, tasks in batches.items():
        ex.submit(tasks)
    return mine



def _plan_one(t, host: bool):
    """The commonest eval, planned without a walk: one node whose inputs are all evaluated, on a stream with no
    work pending. ``(executor, task, read)`` for the caller to run with ``executor.run_lane`` (the task as
    ``_number`` makes it; the caller holds the executor's run lock; ``read``: the host reads the small result at
    once), or None: plan in full (nothing done). Caller holds _plan_lock."""
    if t._data is not None or t._exec is not None or t._siblings is not None:
        return None
    ex = t._stream._executor
    if ex is None:
        return None
    local = ex.traits.local_types
    foreign = False  # another stream's or location's data: no wait, but maybe a copy or an ordering
    for x in t._inputs:
        d = x._data
        if d is None:
            return None  # (a graph of several nodes: planned in full)
        xe = x._exec
        if (d.__class__ not in local) if xe is None else (xe is not ex):
            foreign = True
    size = prod(t._shape)
    if ex.done != ex.submitted or (size >= SPLIT_MIN_SIZE and t._prim.__class__ in ELEMENTWISE):
        return None  # (a big elementwise node is a region of its own: split across cores)
    task = (t, []) if foreign else t
    if _tracing.active is not None or _tracing.debug_on() or not ex.try_run_inline():
        return None
    # node.assign, inlined: no call between the run lock and the numbering (a Ctrl-C lands before or after it,
    # see _lane)
    seq = ex.submitted = ex.submitted + 1
    t._exec = ex
    t._seq = seq
    if on_plan is not None:
        on_plan((t,))
    return ex, task, host and size <= SMALL_READ


def _lane(t, host: bool) -> bool:
    """Evaluate ``t`` in the short plan if it applies (see ``_plan_one``): the caller runs it, or launches it, at
    once. False if it does not apply (nothing done): plan in full.

    Ctrl-C is not held back here: swapping the handler costs about a microsecond, a twentieth of a GPU ``item()``.
    It lands where it lands, and every state it can find is made whole (``_recover``): a node numbered but not run
    goes to its stream's worker, a run lock taken is given back."""
    for x in t._inputs:
        if x._data is None:
            return False  # (a graph of several nodes: a look without the lock, which _plan_one makes again)
    x = None  # (a variable holding an input while it runs would keep it from donating its buffer: cpu/donate.py)
    try:
        with _plan_lock:
            mine = _plan_one(t, host)
        if mine is None:
            return False
        mine[0].run_lane(mine[1], mine[2])
        return True
    except BaseException:
        _recover(t)
        raise


def _recover(t) -> None:
    """After an interrupt in ``_lane``: if the caller still holds the run lock of ``t``'s stream (the executor
    gives it back itself once it runs the task, interrupted or not), hand ``t`` to the worker if it was numbered
    and has no data, else just give the lock back."""
    ex = t._stream._executor
    if ex is None or not ex.holds_stream():
        return
    if t._exec is ex and t._data is None:
        ex.hand_over([(t, [])])  # (as a task whose inputs may need a copy: the worker fetches them)
    else:
        ex.release_stream()


def _number(order: list, batches: dict, first_seq: dict) -> None:
    """Give each task its executor and sequence number, and its cross-stream waits; fill ``batches``."""
    ex = tasks = None
    for n in order:
        st = n._stream
        nex = st._executor or st.executor
        if nex is not ex:
            ex = nex
            dev = ex.device
            local_types = ex.traits.local_types
            tasks = batches.get(ex)
            if tasks is None:
                tasks = batches[ex] = []
                first_seq[ex] = ex.submitted + 1
        waits = None
        for x in n._inputs:
            xe = x._exec
            if x._data is None:
                if xe is not ex:
                    if waits is None:
                        waits = []
                    waits.append((xe, x._seq))
                    xe.will_be_read_on(x, dev)  # a GPU producer marks x (and copies it to the host for a CPU)
            elif waits is None:
                # Evaluated: its data is where its executor ran (or, for arrays made from data, of its type).
                # Another stream's result takes the slow path: on a GPU, "evaluated" means enqueued, and the
                # reader must be ordered after the producer's kernel.
                if (x._data.__class__ not in local_types) if xe is None else (xe is not ex):
                    waits = []  # no wait, but the input may need a copy or an ordering: the slow path
        seq = ex.submitted = ex.submitted + 1
        # node.assign, inlined (once per node of every eval)
        if n.__class__ is Fused:
            # Only the root: the other members stay marked (MEMBER). Nothing else holds them, so nothing else
            # looks at them, and they are freed once the region has run.
            n._seq = seq
            root = n.root
            root._exec = ex
            root._seq = seq
        elif n._siblings is None:
            n._exec = ex
            n._seq = seq
        else:
            for s in n._siblings:
                s._exec = ex
                s._seq = seq
        tasks.append(n if waits is None else (n, waits))  # right after numbering: no seq without its task


def _unmark(targets, mark) -> None:
    """Clear the planner's marks behind ``targets`` (after a failed walk)."""
    stack = list(targets)
    seen = set()
    while stack:
        n = stack.pop()
        if id(n) in seen or n._data is not None or n._exec not in (None, mark, MEMBER):
            continue
        seen.add(id(n))
        for s in n._siblings or (n,):
            unplan(s)
        stack.extend(n._inputs)


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




def eval_arrays(targets, finished: bool = True, host: bool = False) -> None:
    """Evaluate ``targets`` (a sequence of arrays) and wait for them; raise the first failure. With ``finished``
    False, a GPU result may still be computing when this returns (its data is set once its kernel is enqueued):
    for readers that wait for the data themselves, such as ``memory.host_copy``; ``host`` says that they read it
    on the host (see ``SMALL_READ``)."""
    tr = _tracing.active
    if tr is not None:
        t0 = _tracing.now()
        try:
            _eval_arrays(targets, finished, host)
        finally:
            tr.span("eval", "eval", t0, _tracing.now(), {"targets": [f"{t.dtype.name}{list(t.shape)}"
                                                                    for t in targets[:8]]})
        return
    _eval_arrays(targets, finished, host)


def read_eval(t) -> None:
    """Evaluate array ``t`` (not yet evaluated) for a read on the host (``item()``, printing, NumPy conversion):
    ``eval_arrays([t], False, True)``, taking the lane at once when it applies (the commonest eval of all, on the
    path of every ``item()``) and no trace, ``compile`` or transform watches (see ``_retain``)."""
    if _tracing.active is None and not compile_watch and not transform_watch and _lane(t, True):
        return
    eval_arrays((t,), False, True)


def _schedule(targets: list, inline: bool = False, host: bool = False) -> None:
    """Plan ``targets`` under the lock (see :func:`_plan`); with ``inline``, run the caller's batch if there is
    one (one target the lane takes first, see :func:`_lane`). Otherwise, on the main thread, Ctrl-C is held back
    until planning is done and that batch has started: the hand-off to the executors must not stop halfway (a
    Ctrl-C in the batch hands its rest to the worker, and waiting for results, after, stays interruptible)."""
    ident = get_ident()
    if compile_watch:
        seen = compile_watch.get(ident)
        if seen is not None:
            seen[0] = True
    for t in targets:
        if t._data is None:
            break
    else:
        return  # all evaluated: nothing to plan
    if inline and len(targets) == 1 and _lane(targets[0], host):
        return
    if ident != _MAIN_IDENT:  # signals only reach the main thread
        with _plan_lock:
            mine = _plan(targets, inline, host)
        if mine is not None:
            _run_inline(mine)
        return
    deferred = _defer_handlers()
    try:
        with _plan_lock:
            mine = _plan(targets, inline, host)
    except BaseException:
        _let_through(deferred)
        raise
    if mine is None:
        _let_through(deferred)
        return
    # Ctrl-C's default handler only raises: it may interrupt the caller's own batch (whose rest then goes to the
    # worker). Any other handler may evaluate, and waits until this thread has no work in hand.
    if len(deferred) == 1 and deferred[0][1] is _default_int_handler and deferred[0][0] == _SIGINT:  # (commonest)
        first, rest = deferred, []
    else:
        first = [d for d in deferred if d[0] == _SIGINT and d[1] is _default_int_handler]
        rest = [d for d in deferred if not first or d is not first[0]]

    def started():
        if first:
            _let_through([first.pop()])

    try:
        _run_inline(mine, started)
    finally:
        started()
        _let_through(rest)


def _run_inline(mine: list, started=None) -> None:
    """Run the caller's batches in order (see :func:`_plan`); ``started`` as for ``run_inline``, once. If one
    raises (a kernel's error is no exception here: only an interrupt), the rest go to their workers."""
    for i, (ex, tasks) in enumerate(mine):
        try:
            ex.run_inline(tasks, started)
        except BaseException:
            for rest_ex, rest in mine[i + 1:]:
                rest_ex.hand_over(rest)
            raise
        started = None


#: signals whose Python handlers are held back while the main thread plans and runs its own batches: a handler
#: runs between any two bytecodes, and one that evaluates (a checkpoint saved on SIGTERM) must not find this
#: thread holding the plan lock or work that only it can finish
_DEFERRED = tuple(int(getattr(signal, n)) for n in ("SIGINT", "SIGTERM", "SIGALRM", "SIGHUP", "SIGQUIT", "SIGUSR1",
                                                   "SIGUSR2") if hasattr(signal, n))
_default_int_handler = signal.default_int_handler


def _defer_handlers() -> list:
    """Swap the Python handlers of ``_DEFERRED`` signals for one that notes the signal: ``(signum, handler)`` for
    each swapped. Default and ignored dispositions are left alone (no Python code runs for them)."""
    swapped = []
    getsignal = _signal.getsignal
    for signum in _DEFERRED:
        prev = getsignal(signum)
        if prev.__class__ is not int and prev is not None:  # (SIG_DFL and SIG_IGN are ints here; None: not Python's)
            try:
                _signal.signal(signum, _hold)
            except ValueError:  # the main thread of another interpreter
                break
            swapped.append((signum, prev))
    return swapped


def _let_through(deferred: list) -> None:
    """Give the user's handlers back (``(signum, handler)`` pairs) and deliver the signals held meanwhile."""
    for signum, prev in deferred:
        _signal.signal(signum, prev)
    for signum, _ in deferred:
        if signum in _held:
            while signum in _held:
                _held.remove(signum)
            _signal.raise_signal(signum)  # delivered now, to the user's handler


_held: list = []  # signals that arrived while their handlers were held back


def _hold(signum, frame) -> None:
    _held.append(signum)


def _abandon_unheld() -> None:
    """After an interrupt: every stream drops the work it has not started whose arrays nothing holds any more,
    so that the next eval does not wait behind it (what runs may finish)."""
    for ex in backends.executors():
        ex.abandon_unheld()


_MAIN_IDENT = threading.main_thread().ident

#: threads on which ``compile`` is tracing (ident -> [whether an eval ran]): an eval marks the trace unreplayable
compile_watch: dict = {}


def outside_traces() -> bool:
    """Whether no transform and no enclosing ``compile`` traces on this thread: those must see the graph itself,
    so nothing may be evaluated on it but through ``eval``."""
    if not compile_watch and not transform_watch:
        return True
    ident = get_ident()
    return ident not in compile_watch and ident not in transform_watch


def _eval_arrays(targets, finished: bool = True, host: bool = False) -> None:
    if transform_watch:
        kept = transform_watch.get(get_ident())
        if kept is not None:  # a transform traces on this thread: evaluate without cutting its graph
            _evaluate_keeping(targets, kept, _plan_lock, lambda jobs: _evaluate(jobs, finished, host))
            return
    _evaluate(targets, finished, host)


def _evaluate(targets, finished: bool, host: bool) -> None:
    try:
        _schedule(targets, True, host)
        # Also for data already set: a GPU node's data is set once its kernel is enqueued, and eval returns when
        # the work is done (as MLX's does), not when it is queued. A stream finishes its nodes in order, so one
        # wait per stream, for its last target, covers the others (a model's and an optimizer's state: hundreds).
        last: dict = {}
        for t in targets:
            ex = t._exec
            if ex is not None and (finished or t._data is None):
                seq = t._seq
                if last.get(ex, 0) < seq:
                    last[ex] = seq
        for ex, seq in last.items():
            ex.wait(seq)
    except KeyboardInterrupt:
        _abandon_unheld()
        raise
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
    del args  # (an interrupt's traceback keeps this frame: it must not keep the arrays)
    try:
        eval_arrays(targets)
    except KeyboardInterrupt:
        targets.clear()
        _abandon_unheld()  # (again, now that this eval holds nothing)
        raise


def async_eval(*args) -> None:
    """Start evaluating the arrays in ``args`` and return at once; using a result later waits for it.

    Args:
        *args: arrays or trees of arrays; other leaves are ignored.
    """
    if transform_watch and get_ident() in transform_watch:
        raise ValueError("async_eval: not allowed inside a function transform (grad, vjp, jvp, vmap): "
                         "use eval")
    targets: list = []
    _targets(args, targets)
    tr = _tracing.active
    t0 = _tracing.now() if tr is not None else 0
    # (as read by the host next: a small target's producer then marks it, or writes it to the host, as it runs,
    # so that the later read waits for it alone, not for work queued after it)
    _schedule(targets, host=True)
    if tr is not None:
        tr.span("eval", "async_eval", t0, _tracing.now(), {"targets": len(targets)})


def start(arrays: list) -> None:
    """Start evaluating ``arrays`` and return without waiting, where that overlaps the host's next work: with
    ``EARLY_START`` on (the default), every unevaluated one computed on a stream whose executor runs beside the host
    (``Traits.overlaps_host``, a GPU's), and no trace, ``compile`` or transform watching this thread. Otherwise
    nothing: they are evaluated when asked for, with whatever is built on them meanwhile. ``value_and_grad``
    calls it with its results, so that a training step's forward and backward passes run on the device while
    Python builds the optimizer's update. The caller launches the batch itself, as an eval's caller does: a batch
    handed to the stream's worker would wait for the GIL behind the building."""
    if not EARLY_START or not outside_traces():
        return
    targets = []
    for a in arrays:
        if a._data is None:
            st = a._stream
            if not (st._executor or st.executor).traits.overlaps_host:
                return
            targets.append(a)
    if targets:
        _schedule(targets, True, True)


_array.install(eval_arrays=eval_arrays, read_eval=read_eval)  # (array.py sits below: it does not import this)
