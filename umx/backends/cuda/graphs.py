"""CUDA graphs: a batch of GPU work that repeats with the same structure is captured once and then replayed.

A training step, an inference call or the seed's loop run again hands the GPU stream the same batch each time: the
same primitives, wired the same way, on inputs of the same shapes and dtypes. Launching it op by op costs Python
and CuPy time per kernel (a cuBLAS product's host time alone exceeds a small kernel's); a replay is one graph
launch.

How a batch is recognised: its *key* lists, per task, the primitive (or a fused region's key), the output's shape
and dtype, and where each input comes from: an earlier task, an external array (by slot: the same array read twice
is one slot), or a constant (by its bits and dtype). The first sighting runs eagerly; the second is captured.

Memory: a graph owns every buffer its kernels write, from a pool of its own, so nothing else ever reuses them
(the slots it lends, below, are regular memory: a lent value may outlive its graph).

- Inputs are copied into the graph's *slots* before a replay, except when a slot already holds that very data
  (data is immutable: same buffer object, same values), so weights read step after step are not copied again.
- A large input (``BIND_MIN_BYTES``; a model's weights) is not copied at all: the graph reads it where it lies,
  *bound* to that buffer. A replay checks that each bound input is the same data (by a weak reference to the array
  owning its memory, and the view's place in it: the graph does not keep it alive); where one is not, the batch
  is captured again with that input copied into a slot like the small ones, so inputs that change every time (a
  training step's weights) settle into slots.
- Outputs that anything outside the batch holds (the user, a later eval, another stream) are copied out of the
  graph: the graph's last copies pack them into one export area, and a replay copies that area into one fresh
  buffer, whose views the outputs become (one allocation and one copy however many there are). Intermediates
  nobody holds are never copied. Which is which is read off reference counts, as the fusion planner does.
- A compiled call's output that the graph writes into its input's own slot (a training step's new weights and
  moments, a decode step's cache) is not copied out: the output is *lent*, a new array over that slot's memory
  (a new data object at every replay: other graphs know data by its object, so they copy the new values in).
  The next replay writes the slot again only where no lent array of it is alive any more but that call's own
  input, held by nothing else (the weights a step passes to the next); where something else holds one (a user
  kept an old weight), the call is captured again without lending, and its outputs are copied out as above.

Only batches of primitives whose kernels are pure device work are captured: elementwise and fused, products
through ``cublas``, reductions, scans, sorts, views and layouts, gathers and scatters, fills and random bits, and
the nodes of other classes whose kernels here only enqueue (``kernels.CAPTURE_IF``: ``mx.fast``'s own kernels,
quantized decode, convolutions' cuBLAS products); not linalg, FFT, user callbacks or data-dependent shapes. A
kernel that synchronizes, or copies from or to the host, under capture makes CuPy raise, and the structure is then
never tried again: such a kernel can never be baked into a graph. A batch with a task no graph holds (one of
those, a node with siblings such as a compiled call, which runs as a graph of its own, or a task after the first
that waits for another stream) runs in parts: each run of tasks between them is a batch of its own, a graph once
seen twice, and the values a later part reads are exported like those the user holds.

Graphs are a cache: one whose own buffers exceed ``GRAPH_SHARE`` of the device's memory is not made, nor one that
would not fit under the user's memory limit; each stream keeps at most ``MAX_GRAPHS``, and graphs together at
most ``GRAPHS_SHARE`` of the device's memory, dropping the oldest; memory pressure drops them all before anything
else. (A training step's buffers take a GiB or more, and its thousand kernels are still launch-bound.)
"""

from __future__ import annotations

import os
import sys
import threading
import weakref
from math import prod

import numpy as np

from ...primitives import (
    Convolution,
    LayerNorm,
    LogSumExp,
    Matmul,
    NormVJP,
    RMSNorm,
    RoPE,
    ScaledDotProductAttention,
    Softmax,
    SoftmaxVJP,
)
from ...primitives.base import KEY_FUNCTIONS, Primitive, key_function, subclasses
from ...primitives.elementwise import BINARY
from ...primitives.layout import DynamicSliceUpdate
from ...primitives.misc import Compiled, Depends, SideOutput, StopGradient
from ...runtime import memory as _memory
from ...runtime.executor import Failure
from ...runtime.fusion import Fused, collect_private
from ...runtime.refs import UNHELD_DATA, UNHELD_INPUT, UNHELD_SLOT
from . import memory as gmem
from ._probe import _cupy
from .fast import add_and_norm
from .kernels import CAPTURE_IF as KERNEL_CAPTURE_IF
from .layout import update_in_place, update_pair_in_place
from .pressure import RELEASERS
from .strided import contiguous, copy_list, load_copy_list

__all__ = ["ENABLED", "MIN_TASKS", "STATS", "Graphs", "nbytes", "release_all"]

cp = _cupy()
_runtime = cp.cuda.runtime
_D2D = _runtime.memcpyDeviceToDevice

#: UMX_CUDA_GRAPHS=0 turns replays off (to measure what they gain); tests and benches may also flip this
ENABLED = os.environ.get("UMX_CUDA_GRAPHS", "1") != "0"
#: whether compiled calls' graphs lend the values they write into their slots (see run_program); UMX_GRAPH_LEND=0
#: copies them out (to measure the gain)
LEND = os.environ.get("UMX_GRAPH_LEND", "1") != "0"
#: whether a captured task and the next may run as one kernel (see _with_next); UMX_GRAPH_PAIRS=0 runs each
#: task's own kernel (to measure the gain)
PAIRS = os.environ.get("UMX_GRAPH_PAIRS", "1") != "0"
MAX_GRAPHS = 32  # per stream
GRAPH_SHARE = 1 / 8  # of the device's memory: the most one graph's own buffers (copied inputs, values) may take
GRAPHS_SHARE = 1 / 4  # of the device's memory: the most all graphs of a stream may take
BIND_MIN_BYTES = 1 << 20  # inputs read in place (bound) rather than copied into a slot
MAX_TASKS = 4096  # longer batches are not captured (capture time and key cost grow with them)
#: shorter batches run op by op: a replay's fixed cost (the key, the slots, the launch, the copy out) is about
#: what 3 of umx's own launches cost, and op by op a small result the host reads comes back by its mirror
#: (bench/graphs.py times both)
MIN_TASKS = 4
_MAX_KEYS = 1024  # structures remembered as seen or refused (the oldest half are forgotten past this)

#: primitive classes whose kernels enqueue only device work, with no host synchronization or host data
#: (each primitive declares ``capture``)
CAPTURABLE = frozenset(c for c in subclasses(Primitive) if c.capture)
#: primitive classes of which some nodes run as kernels that only enqueue: class -> which nodes
CAPTURE_IF = dict(KERNEL_CAPTURE_IF)
_REFUSED = "refused"
_NO_ROOM = "no room"  # _capture's answer under the memory limit: not now, but the structure may be tried again
_SCALARS = frozenset(t for t in np.sctypeDict.values() if issubclass(t, np.generic))
_getrefcount = sys.getrefcount


class _Cut:
    """:func:`_plan`'s answer for a batch with a task that no graph can hold, which then runs in parts: ``at``,
    the position of the first such task, and ``plan``, the plan of the tasks before it (None for fewer than two)."""

    __slots__ = ("at", "plan")

    def __init__(self, at: int, plan):
        self.at = at
        self.plan = plan


def capturable(n) -> bool:
    """Whether a CUDA graph may capture node ``n``'s kernel (``n`` is no fused region and has no siblings)."""
    c = n._prim.__class__
    if c in CAPTURABLE:
        return True
    rule = CAPTURE_IF.get(c)
    return rule is not None and rule(n)


class Stats:
    """What graphs have done since start (for ``memory_report``, tests and benches)."""

    __slots__ = ("captures", "replays", "refusals", "evictions", "copies_in", "copies_out", "lent")

    def __init__(self):
        for s in self.__slots__:
            setattr(self, s, 0)

    def as_dict(self) -> dict:
        return {s: getattr(self, s) for s in self.__slots__}


STATS = Stats()
#: the data of an intermediate that only the batch held: never read (reading it says so), never a graph's buffer
_ELIDED = Failure(RuntimeError("umx: an intermediate of a CUDA graph replay was read; please report this bug"))
_all: weakref.WeakSet = weakref.WeakSet()  # every stream's cache, for memory pressure and statistics


class Captured:
    """One captured batch: the graph, the pool that owns its memory, its input slots and its tasks' values."""

    __slots__ = ("graph", "pool", "slots", "sources", "bound", "copied", "values", "export", "offsets", "mutated",
                 "lent", "unviewed", "given", "lends", "owner", "picks", "retained")

    def __init__(self, graph, pool, slots: list, bound: list, copied: frozenset, values: list, export,
                 offsets: dict, mutated: list, lent: dict, lends: bool):
        self.graph = graph
        self.pool = pool
        self.slots = slots  # per input: the buffer the graph reads (its own slot, or a bound input's data)
        self.sources: list = [None] * len(slots)  # the data each slot holds (see _data_ref)
        self.bound = bound  # (input position, the data the graph reads in place: see _data_ref)
        self.copied = copied  # input positions always copied into a slot (a bound one that changed)
        self.values = values
        self.export = export  # the held values, packed by the graph's last copies
        self.offsets = offsets  # task position -> where its value is in export
        self.mutated = mutated  # (slot, task position): slots a task writes in place (see _in_place)
        self.lent = lent  # task position -> slot: retained values lent over their slot's memory (not exported)
        self.lends = lends  # whether this structure lends (a clash captures it again without: see run_program)
        # per lent slot, its reference count with no lent array of it alive (see _views; none is lent yet), and a
        # weak reference to the last array lent over it
        self.unviewed = dict.fromkeys(lent.values(), 0)
        for s in lent.values():  # (_views's own reading, so that its count and this baseline are read alike)
            self.unviewed[s] = _views(self, s)
        self.given: dict = {}
        # for a compiled program's graph (see run_program): a weakref to the program, the tasks whose values are
        # exported, and for each sibling, its value's place among those
        self.owner = None
        self.retained: list = []
        self.picks: list = []


class _Returned:
    """A compiled program's cache entry after its first run, op by op: weak references to the values it returned,
    with their task positions, so that its capture can write each into the slot of the input the next call passes
    it back as (see :func:`_fed_back`)."""

    __slots__ = ("values",)

    def __init__(self, values: list):
        self.values = values


class Graphs:
    """The graphs of one GPU stream (its executor ``ex``); used by the thread running the stream's batches."""

    def __init__(self, ex):
        self.ex = ex
        self.cache: dict = {}  # key -> Captured, or how often it was seen, or _REFUSED
        self.lock = threading.RLock()  # MUST be held to launch or drop graphs
        _all.add(self)

    def run(self, tasks: list) -> bool:
        """Run ``tasks`` as a graph if their structure was seen before; False if the caller must run them. A
        batch with a task no graph can hold runs as parts (see :meth:`_run_parts`)."""
        plan = _plan(tasks)
        if plan is None:
            return False
        if plan.__class__ is _Cut:
            self._run_parts(tasks, plan)
            return True
        return self._run_planned(tasks, plan)

    def _run_planned(self, tasks: list, plan: tuple) -> bool:
        """:meth:`run` for a batch whose plan (see :func:`_plan`) is made."""
        key, nodes, externals, retained = plan
        cache = self.cache
        try:
            entry = cache.get(key)
        except TypeError:  # a parameter that cannot be hashed: no key, so no graph
            return False
        if entry is None:
            if len(cache) >= _MAX_KEYS:
                self._forget_oldest()
            cache[key] = 1
            return False
        if entry is _REFUSED:
            return False
        ex = self.ex
        held: list = []
        try:
            for t in tasks:
                if type(t) is tuple and t[1]:
                    ex.wait_for(t[1])
            inputs = ex.fetch(externals, held)
        except Exception:  # an input failed: the eager path gives each node its failure
            return False
        with self.lock:
            copied = frozenset()
            if type(entry) is Captured:
                moved = [s for s, ref in entry.bound if not _same_data(ref, inputs[s])]
                values = entry.values
                # A bound input that is other data now: capture again, copying it into a slot. A value held now
                # that the capture let go (held by no one then): capture again, keeping it.
                if moved or any(values[i] is None for i in retained):
                    copied = entry.copied.union(moved)
                    self._drop(key)
                    entry = 0
                values = None
            if type(entry) is int:
                entry = self._capture(tasks, nodes, externals, inputs, retained, copied)
                if entry is None or entry is _NO_ROOM:
                    cache[key] = _REFUSED if entry is None else 1
                    STATS.refusals += 1
                    return False
                cache[key] = entry
                self._evict()
                charge()
            return self._launch(entry, tasks, nodes, inputs, retained, held)

    def _run_parts(self, tasks: list, cut) -> None:
        """Run a batch that a graph cannot hold whole, part by part: each run of tasks a graph can hold as a
        graph of its own (once seen twice), each task it cannot (a compiled call, which runs as a graph of its
        own; a node with siblings; one waiting for another stream after the first) op by op. An eager training
        step whose optimizer update is one compiled call is then two graph launches, not a thousand kernels.
        ``cut`` is :func:`_plan`'s answer: where the first part ends, and that part's plan."""
        ex = self.ex
        for a, b in ([(0, cut.at)] if cut.at else []) + _parts(tasks, cut.at):
            part = tasks[a:b]
            tasks[a:b] = [None] * (b - a)  # (the part's list alone holds them: _plan counts one list's references)
            try:
                ran = False
                if b - a >= MIN_TASKS:
                    if a == 0 and b == cut.at:  # (planned already: the same references, the same plan)
                        plan, cut.plan = cut.plan, None
                        ran = plan is not None and self._run_planned(part, plan)
                        plan = None
                    else:
                        ran = self.run(part)
                if not ran:
                    ex._run(part)
            except BaseException:
                tasks[a:b] = part  # the tasks not finished, for the worker to resume (see run_inline)
                raise
            part = None

    def _capture(self, tasks: list, nodes: list, externals: list, inputs: list, retained: list,
                 copied: frozenset, lends: bool = False, back: dict | None = None):
        """Capture ``tasks`` into a graph over slots for ``inputs`` (large ones bound, except those ``copied``);
        None if they cannot be captured, _NO_ROOM if the memory limit leaves no room now. The graph ends by
        packing the ``retained`` values into one export area, which a replay copies out in one go; with
        ``lends`` (a compiled call's graph, see run_program), those written into their input's slot are lent
        instead (arrays over the slot's memory, not exported). ``back``: task position -> the slot its value
        was passed back into last time, preferred for writing it in place (see :func:`_in_place`)."""
        bind = [s not in copied and d.nbytes >= BIND_MIN_BYTES for s, d in enumerate(inputs)]
        size = (sum(d.nbytes for d, b in zip(inputs, bind) if not b)
                + sum(n._dtype.np.itemsize * prod(n._shape) for n in nodes)
                + sum(nodes[i]._dtype.np.itemsize * prod(nodes[i]._shape) for i in retained))  # (+ the export)
        limit = _memory.user_memory_limit()
        total = _device_bytes(self.ex.index)
        if size > total * GRAPH_SHARE or (limit and gmem.POOL.used_bytes() + nbytes() + size > limit):
            return _NO_ROOM  # (graphs are a cache: under a memory limit they take only what is left)
        self._evict(total * GRAPHS_SHARE - size)
        in_place = _in_place(tasks, externals, bind, retained, back)
        kept = set(retained)
        # The slots a retained value may be written into, and so lent: regular device memory, not the graph's
        # pool, whose memory goes when the graph does (a lent value may outlive it).
        lendable = {s: cp.empty(inputs[s].shape, inputs[s].dtype)
                    for i, s in in_place.items() if lends and i in kept}
        ex = self.ex
        pool = cp.cuda.MemoryPool()
        prev = gmem.use_allocator(pool.malloc)
        stream = ex.cuda_stream
        graph = values = None
        try:
            load_copy_list()  # (compiled before the capture, whose last copies are its launch)
            slots = [d if b else lendable[s] if s in lendable else cp.empty(d.shape, d.dtype)
                     for s, (d, b) in enumerate(zip(inputs, bind))]
            lendable = None  # (a lent slot's references are counted: see _views)
            mutated: list = []
            # No other thread may enqueue on the stream while it captures: marks and small reads take this lock.
            with ex.marks.lock:
                stream.begin_capture(mode=_runtime.streamCaptureModeRelaxed)
                try:
                    values = _dispatch(ex, tasks, externals, slots, retained, in_place, mutated)
                    # (the value of a task that wrote its slot is that slot itself: see _dispatch)
                    lent = {i: s for s, i in mutated if lends and i in kept and values[i] is slots[s]}
                    export, offsets = _pack(values, [i for i in retained if i not in lent], stream)
                finally:
                    graph = _end_capture(stream)
        except Exception:  # e.g. a kernel that synchronizes, or no memory: this structure runs eagerly
            return None
        finally:
            gmem.restore_allocator(prev)
        if graph is None or values is None:
            return None
        STATS.captures += 1
        bound = [(s, _data_ref(d)) for s, (d, b) in enumerate(zip(inputs, bind)) if b]
        for s, _ in bound:
            slots[s] = None  # (the graph reads the data; it is not the graph's to keep)
        return Captured(graph, pool, slots, bound, copied, values, export, offsets, mutated, lent, lends)

    def _launch(self, g: Captured, tasks: list, nodes: list, inputs: list, retained: list, held: list) -> bool:
        """Fill the slots that changed, replay, and give the batch's nodes their results."""
        ex = self.ex
        try:
            # (run() saw that each retained value was held when captured, so is in the export)
            outs = _replay(g, inputs, retained, ex.cuda_stream)
        except Exception:  # e.g. no memory for an output: the eager path runs (and reports) it
            return False
        # Every node gets its data before any is published; one the batch alone held gets a Failure that says
        # so, never a buffer the next replay overwrites.
        k = 0
        for i, t in enumerate(tasks):
            if k < len(retained) and retained[k] == i:
                out = outs[k]
                k += 1
            else:
                out = _ELIDED
            ex.settle(t[0] if type(t) is tuple else t, out)
        hints = ex.hints
        last = 0
        for i in range(len(tasks)):
            n = nodes[i]
            tasks[i] = None
            last = n._seq
            if hints:
                devices = hints.pop(last, None)
                if devices is not None:
                    try:
                        ex.publish(n, devices)
                    except Exception:  # readers then copy on demand
                        ex.marks.record(last)
        if held:  # (a mark after the replay: the batch's nodes are not yet counted as dispatched)
            ex.marks.hold(ex.marks.record(last), held)
        ex.finished(last)
        return True

    def run_program(self, n, inputs: list) -> tuple:
        """The outputs of ``Compiled`` node ``n`` (one per sibling) from its inputs' device data ``inputs``.

        The program's graph is built as private nodes (``Program.build``, then fused as an eval would): run op
        by op the first time, captured the second, replayed after, with the inputs bound or copied into slots
        as for any batch. Where it cannot be captured it runs op by op, and the program is ``refused``: compile
        replays its graph node by node from then on, as without programs. The cache entry is keyed by the
        program's id and checked against a weak reference to it (the graph must not keep a model's weights
        alive through the tape)."""
        program = n._prim.program
        key = (Compiled, id(program))
        inputs = [d if type(d) is cp.ndarray else cp.asarray(d) for d in inputs]
        cache = self.cache
        with self.lock:
            entry = cache.get(key)
            copied = frozenset()
            lends = LEND
            back: dict = {}
            if type(entry) is _Returned:
                back = _fed_back(entry.values, inputs)
                entry = 1
            elif type(entry) is Captured:
                if entry.owner() is not program:  # (another program's, since gone, under a reused id)
                    self._drop(key)
                    entry = None
                else:
                    moved = [s for s, ref in entry.bound if not _same_data(ref, inputs[s])]
                    # A lent array that something besides this call still holds: capture again, lending nothing
                    # (the replay would write over values the user holds).
                    clash = not moved and entry.lent and not _may_overwrite(entry, n._inputs, inputs)
                    if not moved and not clash:
                        outs = _replay(entry, inputs, entry.retained, self.ex.cuda_stream)
                        return tuple([outs[k] for k in entry.picks])
                    copied = entry.copied.union(moved)  # a bound input that is other data now: into a slot
                    lends = entry.lends and not clash
                    back = _fed_back([(entry.given[s], i) for i, s in entry.lent.items() if s in entry.given],
                                     inputs)
                    self._drop(key)
                    entry = 1
            outs = program.build(n._inputs)
            tasks = collect_private(outs)
            nodes = [t.root if type(t) is Fused else t for t in tasks]
            at = {id(x): i for i, x in enumerate(nodes)}
            picks = [at[id(o)] for o in outs]  # each sibling's task
            retained = sorted(set(picks))
            outs = None
            externals = list(n._inputs)
            capturable = ENABLED and not self.ex.fetch_all and _program_capturable(tasks)
            # A refused program is marked on itself (compile then replays its graph node by node), not in the
            # cache, where a later program could get its id.
            if not capturable:
                cache.pop(key, None)
                program.refused = True
            elif entry is None:
                if len(cache) >= _MAX_KEYS:
                    self._forget_oldest()
                cache[key] = 1
            else:
                g = self._capture(tasks, nodes, externals, inputs, retained, copied, lends, back)
                if g is None or g is _NO_ROOM:
                    STATS.refusals += 1
                    if g is None:
                        cache.pop(key, None)
                        program.refused = True
                    else:
                        cache[key] = 1  # (no room now: tried again at the next call)
                else:
                    g.owner = weakref.ref(program)
                    g.retained = retained
                    g.picks = [retained.index(i) for i in picks]
                    cache[key] = g
                    self._evict()
                    charge()
                    outs = _replay(g, inputs, retained, self.ex.cuda_stream)
                    return tuple([outs[k] for k in g.picks])
        # Op by op, outside the lock: memory pressure on another thread may then drop graphs meanwhile.
        values = _dispatch(self.ex, tasks, externals, inputs, retained)
        if capturable:
            with self.lock:
                if type(cache.get(key)) is int:
                    cache[key] = _Returned(_weak_values(values, retained))
        return tuple(values[i] for i in picks)

    def _evict(self, room: float | None = None) -> None:
        """Drop the graphs of compiled programs that are gone, the oldest graphs beyond MAX_GRAPHS, and then while
        this stream's graphs hold more than ``room`` bytes (the caller holds the lock)."""
        for k, v in list(self.cache.items()):
            if type(v) is Captured and v.owner is not None and v.owner() is None:
                self._drop(k)
        graphs = [k for k, v in self.cache.items() if type(v) is Captured]
        for k in graphs[:max(0, len(graphs) - MAX_GRAPHS)]:
            self._drop(k)
        if room is not None:
            for k in graphs[max(0, len(graphs) - MAX_GRAPHS):]:
                if self.nbytes() <= room:
                    break
                self._drop(k)

    def _drop(self, key) -> None:
        # A graph may still run on the stream: its pool is freed only once the work queued so far has passed.
        g = self.cache.pop(key)
        event = cp.cuda.Event(disable_timing=True)
        event.record(self.ex.cuda_stream)
        self.ex.marks.hold(event, g)
        STATS.evictions += 1

    def _forget_oldest(self) -> None:
        """Forget the oldest structures seen or refused (graphs stay) until half of _MAX_KEYS are left: a new
        structure is then remembered, where a cache full of refusals would forget it at once, and so never
        capture it."""
        keys = [k for k, v in self.cache.items() if type(v) is not Captured]
        for k in keys[:max(1, len(keys) - _MAX_KEYS // 2)]:
            del self.cache[k]

    def drop_all(self) -> int:
        """Drop every graph, waiting for the stream first (memory pressure); the bytes their pools held."""
        # Not waiting for the lock: its holder may itself be waiting for memory (the caller holds pressure's lock).
        if not self.lock.acquire(blocking=False):
            return 0
        try:
            freed = 0
            self.ex.cuda_stream.synchronize()
            for k in [k for k, v in self.cache.items() if type(v) is Captured]:
                pool = self.cache.pop(k).pool  # (the graph, its slots and values go: their blocks are free)
                freed += pool.total_bytes()
                pool.free_all_blocks()
                STATS.evictions += 1
            return freed
        finally:
            self.lock.release()

    def nbytes(self) -> int:
        return sum(v.pool.total_bytes() for v in list(self.cache.values()) if type(v) is Captured)


_device_total: dict = {}  # device index -> its memory in bytes


def _device_bytes(index: int) -> int:
    """Device ``index``'s memory in bytes."""
    total = _device_total.get(index)
    if total is None:
        with cp.cuda.Device(index):
            total = _device_total[index] = _runtime.memGetInfo()[1]
    return total


def release_all() -> int:
    """Free every stream's graphs (for memory pressure and ``clear_cache``); the bytes freed."""
    freed = sum(g.drop_all() for g in list(_all))
    charge()
    return freed


def charge() -> None:
    """Charge the graphs' memory to the user's memory limit, after graphs were made or dropped: on each device,
    umx's array pool may take only what the cached graphs leave of it (memory pressure drops the graphs first,
    which gives it back)."""
    limit = _memory.user_memory_limit()
    if limit:
        gmem.LOCATION.set_limit(limit)  # (which asks bytes_per_device)


def bytes_per_device() -> dict:
    """Device index -> the bytes that cached graphs hold there."""
    held: dict = {}
    for g in list(_all):
        held[g.ex.index] = held.get(g.ex.index, 0) + g.nbytes()
    return held


RELEASERS.append(release_all)


def nbytes() -> int:
    """Device memory that cached graphs hold."""
    return sum(g.nbytes() for g in list(_all))


def _plan(tasks: list):
    """``(key, nodes, externals, retained)`` for a batch that may become a graph; a :class:`_Cut` for one with a
    task no graph can hold (it runs in parts); None for one that runs op by op.

    ``nodes[i]`` is the node task ``i`` computes (a region's root); ``externals`` the arrays read from outside the
    batch, one per slot; ``retained`` the positions of the nodes that something besides the batch holds.
    """
    if len(tasks) > MAX_TASKS:
        return None
    index: dict = {}  # id(node) -> its task's position
    slot_of: dict = {}  # id(external array) -> its slot
    externals: list = []
    nodes: list = []
    key: list = []
    m = None
    base: list = []  # the references the batch's own structures hold to each node
    cut = None
    for i, t in enumerate(tasks):
        if type(t) is tuple:
            if t[1] and i:
                # A replay waits for other streams before its first kernel; op by op, this task's producers may
                # be waiting for the tasks before it (a diamond across streams). The tasks before it launch
                # first, as a part of their own.
                cut = i
                break
            n = t[0]
        else:
            n = t
        if type(n) is Fused:
            # the task holds the region, which holds the root twice (root, nodes); a leaf is held by the
            # region's leaves and _inputs, and once per use by the members' inputs
            op = n.key
            ins = n.leaves
            node = n.root
            base.append(2)
            use = 2
        else:
            p = n._prim
            c = p.__class__
            if n._siblings is not None or (c not in CAPTURABLE and not capturable(n)):  # (the set first: cheap)
                cut = i
                break
            op = (KEY_FUNCTIONS.get(c) or key_function(c))(p)
            ins = n._inputs
            node = n
            base.append(1)  # the task list, or the task's tuple
            use = 1  # per occurrence in the node's inputs
        wiring = []
        produced = False
        for x in ins:
            j = index.get(id(x))
            if j is not None:
                base[j] += use
                produced = True
                wiring.append(j)
                continue
            d = x._data
            if d.__class__ in _SCALARS:  # a constant: part of the kernel, so of the key (its dtype and bits: a
                wiring.append((x._dtype, d.tobytes()))  # bfloat16's and a uint16's may be the same bits)
                continue
            s = slot_of.get(id(x))
            if s is None:
                s = slot_of[id(x)] = len(externals)
                externals.append(x)
            wiring.append(-1 - s)
        if produced and use == 2:  # (only then: a chain of 500 members reading an external costs no walk)
            for m in n.nodes:
                for x in m._inputs:
                    j = index.get(id(x))
                    if j is not None:
                        base[j] += 1
        key.append((op, node._shape, node._dtype, tuple(wiring)))
        index[id(node)] = i
        nodes.append(node)
    n = node = x = t = m = p = None  # (no local reference may be counted below)
    if len(nodes) < 2:
        return None if cut is None else _Cut(cut, None)
    # (before a cut, a later task that reads one of these nodes holds it: its part exports it)
    retained = [i for i, b in enumerate(base) if _held_outside(nodes, i, b)]
    key.append(tuple([(x._shape, x._dtype) for x in externals]))
    plan = tuple(key), nodes, externals, retained
    return plan if cut is None else _Cut(cut, plan)


def _parts(tasks: list, start: int = 0) -> list:
    """``(start, stop)`` of each part of ``tasks[start:]``, in a batch that :func:`_plan` cut: the runs of tasks a
    graph can hold, and each task it cannot alone. A run ends before a task that waits for another stream (it
    starts the next)."""
    bounds = []
    a = start
    for i in range(start, len(tasks)):
        t = tasks[i]
        if type(t) is tuple:
            if t[1] and i > a:
                bounds.append((a, i))
                a = i
            n = t[0]
        else:
            n = t
        if type(n) is not Fused and (n._siblings is not None or not capturable(n)):
            if i > a:
                bounds.append((a, i))
            bounds.append((i, i + 1))
            a = i + 1
    if a < len(tasks):
        bounds.append((a, len(tasks)))
    return bounds


def _held_outside(nodes: list, i: int, base: int) -> bool:
    # The references counted here: ``nodes`` and the argument (UNHELD_SLOT, see refs.py), and ``base`` from the
    # batch.
    return _getrefcount(nodes[i]) - UNHELD_SLOT > base


#: primitive classes whose kernels here always write new memory, never a view of an input: a slot read only
#: through these (and fused regions) holds nothing a later task reads once its last reader ran (see _in_place)
_FRESH = frozenset({Matmul, LogSumExp, Softmax, SoftmaxVJP, LayerNorm, RMSNorm, NormVJP, ScaledDotProductAttention,
                    RoPE, Convolution})


#: primitive classes whose kernels here return their first input itself
_ITSELF = frozenset({Depends, StopGradient})


def _in_place(tasks: list, externals: list, bind: list, retained: list, back: dict | None = None) -> dict:
    """Task position -> slot, for tasks that may write their result into an input's own slot instead of new
    memory: slice updates (a key-value cache's write) and fused regions with a leaf of their output's shape and
    dtype (an optimizer's update of a weight or its moments). The slot must be the graph's (not a bound input's
    memory), and no later task may read it, directly or through a task whose result may be a view of it (any but
    ``_FRESH`` and fused regions), nor may such a view be exported. A replay then leaves the new value in the
    slot (see ``_replay``), and the value passed back in at the next call is not copied in again. Of a region's
    leaves, the one whose slot ``back`` names for the task (where its value came back last time: SGD's velocity
    into the velocity's slot, not the gradient's) is tried first."""
    where = {id(x): (s,) for s, x in enumerate(externals)}  # a slot's array, or a task's that may view slots
    same = {id(x): s for s, x in enumerate(externals)}  # a slot's array, or a task's that is that array itself
    last: dict = {}  # slot -> the last task that reads it
    blocked: set = set()  # slots a view of which is exported
    kept = set(retained)
    wanted: dict = {}
    reader: dict = {}  # task position -> the position whose reading of its slot must be the last (a side
    region: dict = {}  # output's: its region's); id of a region with side outputs -> its position, slots taken
    for i, t in enumerate(tasks):
        n = t[0] if type(t) is tuple else t
        fused = type(n) is Fused
        read: tuple = ()
        for x in (n.leaves if fused else n._inputs):
            s = where.get(id(x))
            if s is not None:
                read += s
        for s in read:
            last[s] = i
        if fused:
            root = n.root
            homes = n.homes[0] if n.sides else [id(x) for x in n.leaves]  # (the root's own region's: fusion.merge)
            for h in _preferred(homes, back, i, same):
                s = same.get(h)
                x = externals[s] if s is not None else None
                if s is not None and not bind[s] and x._shape == root._shape and x._dtype is root._dtype:
                    if _only_as_itself(n.leaves, s, where, same):
                        wanted[i] = s
                    break
            if n.sides:
                region[id(n)] = (i, {wanted[i]} if i in wanted else set())
        elif n._prim.__class__ is SideOutput:  # into a slot its own region read, as the region's root may
            p = n._prim
            at = region.get(id(p.region))
            if at is not None:
                f = p.region
                for h in _preferred(p.homes, back, i, same):
                    s = same.get(h)
                    x = externals[s] if s is not None else None
                    if (s is not None and not bind[s] and s not in at[1] and x._shape == n._shape
                            and x._dtype is n._dtype):
                        if _only_as_itself(f.leaves, s, where, same):
                            wanted[i] = s
                            reader[i] = at[0]
                            at[1].add(s)
                        break
        elif read:
            c = n._prim.__class__
            if c is DynamicSliceUpdate:
                s = same.get(id(n._inputs[0]))
                if s is not None and not bind[s] and _only_as_itself(n._inputs, s, where, same):
                    wanted[i] = s
            elif c not in _FRESH:  # (its result may be a view of what it reads)
                where[id(n)] = tuple(set(read))
                if i in kept:
                    blocked.update(read)
                if c in _ITSELF:  # (a gradient's marker of a weight: the slot's very array)
                    s = same.get(id(n._inputs[0]))
                    if s is not None:
                        same[id(n)] = s
    return {i: s for i, s in wanted.items() if last[s] == reader.get(i, i) and s not in blocked}


def _preferred(homes, back: dict | None, i: int, same: dict):
    """``homes`` (ids of a region's leaves), the one whose slot ``back`` names for task ``i`` first."""
    s = back.get(i) if back else None
    if s is None:
        return homes
    return sorted(homes, key=lambda h: same.get(h) != s)


def _weak_values(values: list, retained: list) -> list:
    """``(weak reference, task position)`` for the ``retained`` tasks' ``values`` (see :class:`_Returned`)."""
    refs = []
    for i in retained:
        try:
            refs.append((weakref.ref(values[i]), i))
        except TypeError:  # (not an array: nothing to find again)
            pass
    return refs


def _fed_back(refs: list, inputs: list) -> dict:
    """Task position -> input slot, for each of ``refs`` (``(weak reference to a value, its task)``) whose value
    is alive and passed in again as one of ``inputs``."""
    alive = []
    at: dict = {}
    for ref, i in refs:
        v = ref()
        if v is not None:
            alive.append(v)  # (held while ids are compared)
            at[id(v)] = i
    return {at[id(d)]: s for s, d in enumerate(inputs) if id(d) in at}


def _only_as_itself(ins, s: int, where: dict, same: dict) -> bool:
    """Whether of ``ins`` (a task's inputs or a region's leaves) those that read slot ``s`` all read it as itself,
    not through a view (``p - p[0]``, whose threads would read elements that others have overwritten)."""
    for x in ins:
        if s in where.get(id(x), ()) and same.get(id(x)) != s:
            return False
    return True


def _dispatch(ex, tasks: list, externals: list, slots: list, retained: list, in_place: dict | None = None,
              mutated: list | None = None) -> list:
    """Enqueue ``tasks`` over ``slots`` (under capture); each task's value (contiguous where ``retained``), or None
    for an intermediate that is not ``retained``: its memory goes back to the graph's pool once its last reader
    is enqueued, for later tasks of the capture (stream order makes that safe), so a graph holds its peak, not
    the sum of its values. A view (a transpose, a reshape, a broadcast) stays a view, as it is op by op: a
    weight's transpose read by a product is read in place, not copied (its base is a slot or a bound input,
    the same memory at every replay, or a value of the graph, whose memory the view keeps). The tasks of
    ``in_place`` (see :func:`_in_place`) write into their slot, and ``mutated`` gets each one that did. A task
    and the next one may run as one kernel (:func:`_with_next`: a residual add and the norm that reads it, two
    cache writes at one position)."""
    values: list = []
    where = {id(x): s for s, x in enumerate(externals)}
    produced: dict = {}
    last: dict = {}  # task position -> the last task that reads its value
    side_into: dict = {}  # id of a region -> {side output: position of its task}, those written in place
    for i, t in enumerate(tasks):
        n = t[0] if type(t) is tuple else t
        for x in (n.leaves if type(n) is Fused else n._inputs):
            j = produced.get(id(x))
            if j is not None:
                last[j] = i
        produced[id(n.root if type(n) is Fused else n)] = i
        if in_place and i in in_place and type(n) is not Fused and n._prim.__class__ is SideOutput:
            side_into.setdefault(id(n._prim.region), {})[n._prim.index] = i
    produced.clear()
    kept = set(retained)
    ahead = None  # (position, value) of a task run together with the one before it (see _with_next)
    out = None
    for i, t in enumerate(tasks):
        n = t[0] if type(t) is tuple else t
        ins = n.leaves if type(n) is Fused else n._inputs
        args = []
        done = []
        for x in ins:
            j = produced.get(id(x))
            if j is not None:
                args.append(values[j])
                if last[j] == i and j not in kept:
                    done.append(j)
            else:
                s = where.get(id(x))
                args.append(slots[s] if s is not None else x._data)
        if ahead is not None and ahead[0] == i:
            out, ahead = ahead[1], None
            if in_place and i in in_place:  # (written into its slot with the task before)
                mutated.append((in_place[i], i))
        elif PAIRS and i + 1 < len(tasks) and type(n) is not Fused and n._prim.__class__ in _PAIR_FIRST:
            pair = _with_next(n, tasks[i + 1], args, (in_place and i in in_place, in_place and i + 1 in in_place),
                              (produced, values, where, slots))
            if pair is not None:
                out, ahead = pair[0], (i + 1, pair[1])
                if in_place and i in in_place:
                    mutated.append((in_place[i], i))
        if out is not None:  # (the value found above)
            node = n.root if type(n) is Fused else n
        elif type(n) is Fused:
            out = None
            sides = side_into.get(id(n)) if side_into else None
            if in_place and (i in in_place or sides):
                # (into its slots: umx's kernel reads each element before it writes it; the side outputs' tasks
                # find theirs written, below)
                out = ex.run_fused(n, args, into=slots[in_place[i]] if i in in_place else None,
                                   side_into={k: slots[in_place[j]] for k, j in sides.items()} if sides else None)
                if out is not None and i in in_place:
                    mutated.append((in_place[i], i))
            if out is None:
                out = ex.run_fused(n, args)
            node = n.root
        else:
            node = n
            out = (update_in_place(n._prim, *args) if in_place and i in in_place
                   and n._prim.__class__ is not SideOutput else None)
            if out is None:
                out = ex.single(n, args)
                if in_place and i in in_place and out is slots[in_place[i]]:  # (a side output written there)
                    mutated.append((in_place[i], i))
            else:
                mutated.append((in_place[i], i))
        if i in kept and not out.flags.c_contiguous:  # (what is exported is copied whole: see _pack)
            out = contiguous(out)
        produced[id(node)] = len(values)
        values.append(out if i in last or i in kept else None)  # (a value nothing reads: dropped at once)
        args = out = None
        for j in done:
            values[j] = None
    return values


_ADD = BINARY["Add"].__class__
_PAIR_FIRST = frozenset({_ADD, DynamicSliceUpdate})  # (the first task of a pair _with_next knows)


def _with_next(n, after, args: list, into: tuple, found: tuple) -> tuple | None:
    """The values of task ``n`` (a node of a ``_PAIR_FIRST`` primitive; its data ``args``) and of the task
    ``after`` it, by one kernel where one computes both; else None (neither run). Two pairs: a residual stream's
    Add and the RMSNorm that reads it (``fast.add_and_norm``), and two cache writes at one position, each into
    its own slot (``into``: whether each task writes its slot, see :func:`_in_place`;
    ``layout.update_pair_in_place``). ``found``: :func:`_dispatch`'s ``(produced, values, where, slots)``, to
    find the data of ``after``'s inputs."""
    if type(after) is Fused or type(after) is tuple:
        return None
    c = n._prim.__class__
    if c is _ADD:
        if (into[0] or into[1] or after._prim.__class__ is not RMSNorm or len(after._inputs) != 2
                or after._inputs[0] is not n):
            return None
        w = _data_of(after._inputs[1], found)
        return None if w is None else add_and_norm(n, after, args[0], args[1], w)
    if c is DynamicSliceUpdate and into[0] and into[1] and after._prim.__class__ is DynamicSliceUpdate:
        if any(x is n for x in after._inputs):
            return None
        x2, update2, start2 = (_data_of(x, found) for x in after._inputs)
        if x2 is None or update2 is None or start2 is None or any(a is x2 for a in args):
            return None  # (the second slot is written before its turn: nothing of the first may read it)
        if update_pair_in_place(n._prim, *args, after._prim, x2, update2, start2):
            return args[0], x2
    return None


def _data_of(x, found: tuple):
    """The data :func:`_dispatch` gives for input ``x`` at this point (``found``: see :func:`_with_next`)."""
    produced, values, where, slots = found
    j = produced.get(id(x))
    if j is not None:
        return values[j]
    s = where.get(id(x))
    return slots[s] if s is not None else x._data


def _pack(values: list, retained: list, stream):
    """Under capture: copy the ``retained`` values (contiguous) into one new area (each at a 256-byte boundary),
    in one launch of the copy-list kernel; the area and ``{position: offset}``."""
    offsets = {}
    end = 0
    for i in retained:
        offsets[i] = end
        end += (values[i].nbytes + 255) & ~255
    export = cp.empty(max(end, 1), np.uint8)
    copy_list([(export.data.ptr + at, values[i].data.ptr, values[i].nbytes) for i, at in offsets.items()], stream)
    return export, offsets


def _replay(g: Captured, inputs: list, retained: list, stream) -> list:
    """Fill the slots of ``g`` whose data changed from ``inputs``, launch it, and copy its export area out once:
    the ``retained`` tasks' values, as views of that copy."""
    whole = []  # (slot, source, bytes) of the contiguous inputs, copied in one launch
    for s, d in enumerate(inputs):
        slot = g.slots[s]
        if slot is None:  # bound: read in place (the caller checked it is the same data)
            continue
        src = g.sources[s]
        # Keyed by the data, not the array: `a[i] = v` and `a += b` give the same array new data.
        if src is None or not _same_data(src, d):
            if d.flags.c_contiguous and d.dtype == slot.dtype:
                whole.append((slot.data.ptr, d.data.ptr, d.nbytes))
            else:
                _copy(slot, d, stream)
            g.sources[s] = _data_ref(d)
            STATS.copies_in += 1
    if whole:
        copy_list(whole, stream)
    g.graph.launch(stream)
    outs = []
    offsets = g.offsets
    lent = g.lent
    area = None
    for i in retained:
        s = lent.get(i) if lent else None
        if s is not None:  # written into its slot, and lent (see run_program)
            outs.append(_lend(g, s))
            STATS.lent += 1
            continue
        v = g.values[i]
        if area is None:  # a view of one copy of the whole export area: one allocation and one copy
            area = cp.empty(g.export.nbytes, np.uint8)
            _copy(area, g.export, stream)
        outs.append(cp.ndarray(v.shape, v.dtype, memptr=area.data + offsets[i]))
    if g.mutated:  # a slot written in place now holds its task's exported value (or one nobody else has)
        at = {i: k for k, i in enumerate(retained)}
        for s, i in g.mutated:
            k = at.get(i)
            g.sources[s] = _data_ref(outs[k]) if k is not None else None
    STATS.replays += 1
    STATS.copies_out += len(retained) - len(lent)
    return outs


def _lend(g: Captured, s: int):
    """A new array over the memory of slot ``s`` of ``g``, which it keeps alive (its memory's owner), remembered as
    the slot's last lent array. Not a view of the slot: data is known by its object (see :func:`_data_ref`), and
    the slot's values change at every replay, so each replay's values are a data object of their own."""
    slot = g.slots[s]
    out = cp.ndarray(slot.shape, slot.dtype,
                     memptr=cp.cuda.MemoryPointer(cp.cuda.UnownedMemory(slot.data.ptr, slot.nbytes, slot,
                                                                        slot.data.device_id), 0))
    g.given[s] = weakref.ref(out)
    return out


def _views(g: Captured, s: int) -> int:
    """The reference count of lent slot ``s`` of ``g``, less its count with no lent array alive (measured when ``g``
    was made): how many arrays lent over it are alive (each holds it, through its memory; views of a lent array
    hold that array, as their ``base``)."""
    return _getrefcount(g.slots[s]) - g.unviewed[s]


def _may_overwrite(g: Captured, ins: tuple, inputs: list) -> bool:
    """Whether a replay of compiled call graph ``g`` may write its lent slots again: of each, no lent array is
    alive, or one, the last, which is this call's input for that slot and which the call alone holds (see
    :func:`_donates`). ``ins``: the call's input nodes, ``inputs`` their device data."""
    for s in g.lent.values():
        views = _views(g, s)
        if views and (views > 1 or not _donates(ins, inputs, s, g.given.get(s))):
            return False
    return True


def _donates(ins: tuple, inputs: list, s: int, given) -> bool:
    """Whether input ``s`` of a compiled call is the array last lent over its slot (``given``, a weak reference to
    it) and is held by that call alone: its node only by the call's inputs (no user variable, container, other
    reader or transform), with no copy elsewhere (a transfer may still be reading it); its data only by the node
    and the two lists of data on the way here (the executor's and ``run_program``'s), no view of it alive."""
    if given is None:
        return False
    x = ins[s]  # (refs.UNHELD_INPUT's shape: the reader's inputs, this variable and the argument)
    if (_getrefcount(x) > UNHELD_INPUT or x._copies is not None or x._data is not inputs[s]
            or x._data is not given()):
        return False
    d = x._data  # (refs.UNHELD_DATA's shape)
    return _getrefcount(d) <= UNHELD_DATA + 2


def _data_ref(d) -> tuple:
    """What tells device array ``d``'s data at a later replay: a weak reference to the array that owns its memory
    (a view's base: a weight's ``.T`` is a new view object at every step, of the same memory) and, for a view, its
    place and layout in it (None for the owner itself, whose place and layout never change). The graph does not
    keep the data alive; while the owner lives its memory holds the same values (device data is immutable)."""
    base = d.base
    if base is None:
        return weakref.ref(d), None
    return weakref.ref(base), (d.data.ptr, d.shape, d.strides, d.dtype)


def _same_data(ref: tuple, d) -> bool:
    """Whether device array ``d`` is the data ``ref`` (see :func:`_data_ref`) was made from."""
    base = d.base
    if base is None:  # (a decode step's weights and lent values: known by the object alone)
        return ref[1] is None and ref[0]() is d
    view = ref[1]
    return (view is not None and ref[0]() is base and view[0] == d.data.ptr and view[1] == d.shape
            and view[2] == d.strides and view[3] == d.dtype)


def _program_capturable(tasks: list) -> bool:
    """Whether a program's private ``tasks`` may become one CUDA graph (see ``_plan``)."""
    if not 2 <= len(tasks) <= MAX_TASKS:
        return False
    for n in tasks:
        if type(n) is not Fused and (n._siblings is not None or not capturable(n)):
            return False
    return True


def _copy(dst, src, stream) -> None:
    """Copy device array ``src`` into ``dst`` (same shape and dtype) on ``stream``."""
    if src.flags.c_contiguous and src.dtype == dst.dtype:
        if src.nbytes:
            _runtime.memcpyAsync(dst.data.ptr, src.data.ptr, src.nbytes, _D2D, stream.ptr)
    elif src.dtype == dst.dtype:
        contiguous(src, out=dst)  # (the current stream is this one)
    else:
        cp.copyto(dst, src)


def _end_capture(stream):
    """End the capture; None if it was invalidated."""
    try:
        return stream.end_capture()
    except Exception:
        return None


gmem.GRAPHS.nbytes = nbytes  # (the memory location reads the graphs' memory through these: it sits below)
gmem.GRAPHS.bytes_per_device = bytes_per_device
gmem.GRAPHS.release_all = release_all
gmem.GRAPHS.stats = STATS.as_dict
