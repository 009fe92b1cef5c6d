"""Tapes for ``compile``: a function's graph recorded once, then rebuilt on new inputs without running it.

``record`` calls the function on *marker* nodes (lazy identities of the real inputs, as the differentiation
transforms use) and walks back from its outputs. Every node built during the call becomes a step of the tape;
markers become input slots, keys drawn from the global random key become key slots, and anything else reached
(evaluated arrays, arrays captured from closures, cached scalars) is a constant, kept by reference. A replay
builds the same lazy graph the function would, without checking arguments or inferring shapes and dtypes.

A trace is given up (``record`` returns no tape) when the function evaluated anything while it ran (``eval``,
``item``, ``print``, NumPy conversion...): its values may have steered Python control flow, so its graph is
good for these input values only. Markers make every read of an input's values an eval, so this is caught.
"""

from __future__ import annotations

import math
import os
import threading

import numpy as np

from ..array import _created, array
from ..dtypes import bfloat16
from ..ops import random as _random
from ..ops._core import sibling_nodes
from ..primitives import BroadcastTo, Communication, Compiled, CudaKernel, Custom, Depends, Load, Transpose
from ..runtime import scheduler
from ..runtime.executor import conform_to, kernel_args
from ..runtime.retain import tracing
from . import _trees
from ._replay import Tape, _getter
from .autodiff import _marker

__all__ = ["HOLE", "record", "Tape", "Program", "program_for", "fill", "assign"]

HOLE = object()  # where an array leaf goes in an output template (a single array output is HOLE itself)


FOLD_BYTES = 1 << 20  # the largest folded constant that is not a view (see _fold_constants)
_VIEWS = (Transpose, BroadcastTo)  # results that share their input's memory
_NEVER_FOLDED = (Communication, Depends, Load, Custom, CudaKernel)  # (effects, or code of the user's)
#: UMX_COMPILED_PROGRAMS=0: compiled calls replay their graph node by node on every stream (to measure the gain)
PROGRAMS = os.environ.get("UMX_COMPILED_PROGRAMS", "1") != "0"
PROGRAM_MIN_STEPS = 8  # shorter tapes replay node by node: one node's fixed cost is not repaid
_NOT_IN_PROGRAMS = (Communication, Load)  # (effects ordered across processes, host reads)


class Program:
    """A tape replayed as one ``Compiled`` node: ``program(ins, keys=None)`` returns the flat outputs as
    ``tape(ins, keys)`` does, the computed ones as siblings of that node, the others (inputs, constants) as
    themselves. The node's executor rebuilds the graph as private nodes (``build``) to run it as one CUDA graph,
    or runs its steps one by one (``run_steps``); one that cannot run it sets ``refused``, and compile replays
    the tape node by node from then on.

    The node's inputs are the input leaves, then the random keys, then the constants that are not scalars (a
    constant's data may have to come from another device, or be computed first)."""

    __slots__ = ("tape", "stream", "prim", "passed", "consts", "outs", "specs", "picks", "head", "refused", "_frees",
                 "_kernels", "__weakref__")

    def __init__(self, tape: Tape, stream):
        self.tape = tape
        self.stream = stream
        self.prim = Compiled(self)
        # (decided once: a constant unevaluated now may hold a scalar later, and the node's inputs must not move)
        self.passed = [not isinstance(c._data, np.generic) for c in tape.consts]
        self.consts = [c for c, passed in zip(tape.consts, self.passed) if passed]
        first = len(tape.consts) + tape.n_ins + tape.n_keys  # the first step's value number
        sibling: dict = {}  # a computed output's value number -> its sibling
        self.outs = []  # per flat output: its sibling, or -1 - its value number (an input, key or constant)
        self.specs = []  # per sibling: (shape, dtype)
        self.picks = []  # per sibling: the flat output position it first takes
        for pos, r in enumerate(tape.out_refs):
            if r < first:
                self.outs.append(-1 - r)
                continue
            j = sibling.get(r)
            if j is None:
                j = sibling[r] = len(self.specs)
                step = tape.steps[r - first]
                self.specs.append((step[2], step[3]))
                self.picks.append(pos)
            self.outs.append(j)
        self.head = any(o < 0 for o in self.outs)  # (whether an output is a value before the steps)
        self.refused = False
        self._frees = None  # per step, the values read for the last time there (see run_steps)
        self._kernels = None  # (a backend's kernel table, each step's kernel from it) (see run_steps)

    def __repr__(self) -> str:
        return f"<graph of {self.tape.n_steps} steps>"

    def __call__(self, ins: list, keys=None) -> list:
        t = self.tape
        if keys is None:
            keys = [_random._next_key() for _ in range(t.n_keys)] if t.n_keys else []
        made = sibling_nodes(self.prim, (*ins, *keys, *self.consts), self.specs, self.stream)
        head = t.consts + ins + keys if self.head else None
        return [made[o] if o >= 0 else head[-1 - o] for o in self.outs]

    def build(self, inputs: tuple) -> list:
        """The graph of a ``Compiled`` node with ``inputs``, as new nodes (for its executor alone): one per
        sibling, in order. Every array it reads is one of ``inputs`` (or a scalar constant): a constant the user
        updated in place after the call (``w += 1``) is read as the node's input, the value it had at the call."""
        t = self.tape
        k = t.n_ins + t.n_keys
        flat = t.interpret(self._constants(inputs[k:], _itself), list(inputs[:t.n_ins]), list(inputs[t.n_ins:k]))
        return [flat[p] for p in self.picks]

    def _constants(self, passed: tuple, other) -> list:
        """The tape's constants: those passed as the node's inputs taken in order from ``passed``, each other
        one (a scalar) as ``other(constant)``."""
        rest = iter(passed)
        return [next(rest) if p else other(c) for c, p in zip(self.tape.consts, self.passed)]

    def run_steps(self, data, table: dict, xp, storage: dict | None = None) -> tuple:
        """The siblings' values, the steps run one by one on the inputs' ``data`` by a backend's kernels (its
        kernel ``table``, primitive class -> ``fn(prim, *inputs)``; ``xp``: its array module; ``storage``: its
        kernels that read bfloat16 inputs as stored, see ``runtime.executor.steps_kernel``): for an executor
        without a graph of its own."""
        t = self.tape
        kernels = self._kernels
        if kernels is None or kernels[0] is not table:  # (looked up once per backend)
            kernels = self._kernels = (table, [table[step[0].__class__] for step in t.steps])
        kernels = kernels[1]
        k = t.n_ins + t.n_keys
        env = self._constants(data[k:], _data_of) + list(data[:k])
        # (of the inputs' dtypes only bfloat16 matters here: kernel_args widens it; its storage type says it)
        dtypes = [c._dtype for c in t.consts] + [bfloat16 if a.dtype == bfloat16.np else None for a in data[:k]]
        frees = self._frees
        if frees is None:
            frees = self._frees = self._last_reads()
        for (prim, get, shape, dtype, _, _), done, kernel in zip(t.steps, frees, kernels):
            args = get(env)
            kinds = get(dtypes)
            out = None
            if bfloat16 in kinds and not prim.moves_bits:
                own = storage.get(prim.__class__) if storage else None
                if own is not None and all(d is bfloat16 for d in kinds):
                    out = own(prim, *args)
                if out is None:
                    args = kernel_args(prim, [_Typed(d) for d in kinds], list(args), xp)
            try:
                env.append(conform_to(xp, dtype, out if out is not None else kernel(prim, *args)))
            except Exception as e:
                e.add_note(f"umx: in {prim!r} of a compiled function, for an output of shape {shape} and "
                           f"{dtype.name}, from inputs {[(a.shape, a.dtype.name) for a in args]}")
                raise
            dtypes.append(dtype)
            for r in done:  # (an intermediate goes as soon as its last reader has run, as in a replay)
                env[r] = None
        return tuple(env[t.out_refs[p]] for p in self.picks)

    def _last_reads(self) -> list:
        """Per step, the value numbers of the steps' results it reads for the last time (never an output)."""
        t = self.tape
        first = len(t.consts) + t.n_ins + t.n_keys
        last: dict = {}
        for i, refs in enumerate(t.refs):
            for r in refs:
                if r >= first:
                    last[r] = i
        for r in t.out_refs:
            last.pop(r, None)
        frees: list = [[] for _ in t.refs]
        for r, i in last.items():
            frees[i].append(r)
        return frees


def _itself(c):
    return c


def _data_of(c):
    return c._data


class _Typed:
    """A stand-in node of a dtype, for ``kernel_args``."""

    __slots__ = ("_dtype",)

    def __init__(self, dtype):
        self._dtype = dtype


def program_for(tape: Tape):
    """``tape``'s Program, or False: a tape of at least ``PROGRAM_MIN_STEPS`` steps, all on one stream whose
    executor runs programs (of steps that size: ``Traits.program_max_elements``), none of them a sibling group,
    a communication or a load, with at least one computed output."""
    if not PROGRAMS or tape.n_steps < PROGRAM_MIN_STEPS:
        return False
    stream = tape.steps[0][4]
    traits = (stream._executor or stream.executor).traits
    if not traits.programs:
        return False
    most = traits.program_max_elements
    for prim, _, shape, _, st, group in tape.steps:
        if group or st is not stream or isinstance(prim, _NOT_IN_PROGRAMS):
            return False
        if most is not None and math.prod(shape) > most:
            return False
    first = len(tape.consts) + tape.n_ins + tape.n_keys
    if all(r < first for r in tape.out_refs):
        return False
    return Program(tape, stream)


def record(fun, args: tuple, kwargs: dict, leaves: list, n_arg_leaves: int, state_in, state_out,
           fold: bool = True):
    """Trace ``fun(*args, **kwargs)``.

    ``leaves`` are the array leaves of ``(args, kwargs)`` (the first ``n_arg_leaves``), then those of
    ``state_in``, whose containers are given markers for the call and their arrays back after it. Returns
    ``(tape, keys, outputs)``: ``keys`` the random keys the trace drew, for the first replay, so that the
    global key advances once per call; ``outputs`` the traced results, used only when the tape is None (the
    function evaluated something): their values are right, as markers are identities. ``fold``: steps that read
    only constants may become constants (not for a shapeless trace, whose constants may come from shapes).
    """
    markers = [_marker(x) for x in leaves]
    links = {id(m._inputs): i for i, m in enumerate(markers)}
    margs, mkwargs = _trees.unflatten((args, kwargs), markers[:n_arg_leaves])
    if state_in is not None:
        assign(state_in, iter(markers[n_arg_leaves:]))
    ident = threading.get_ident()
    outer_seen = scheduler.compile_watch.get(ident)
    outer_keys = _random.compile_draws.get(ident)
    seen = scheduler.compile_watch[ident] = [False]
    keys = _random.compile_draws[ident] = []
    start = next(_created)
    try:
        out = fun(*margs, **mkwargs)
        state = [] if state_out is None else _trees.flatten(state_out)
    finally:
        _restore(scheduler.compile_watch, ident, outer_seen)
        _restore(_random.compile_draws, ident, outer_keys)
        if outer_seen is not None and seen[0]:
            outer_seen[0] = True
        if outer_keys is not None:
            outer_keys.extend(keys)  # an enclosing trace replays these draws too
        if state_in is not None:
            mine = {id(m): x for m, x in zip(markers[n_arg_leaves:], leaves[n_arg_leaves:])}
            _map_leaves(state_in, lambda a: mine.get(id(a), a))
    if seen[0]:
        return None, keys, out
    single = type(out) is array
    outs = [out] if single else _trees.flatten(out)
    template = HOLE if single else _trees.unflatten(out, [HOLE] * len(outs))
    # (inside grad or vmap, as in MLX, a function may capture what it is also given)
    own = set() if ident in tracing else {id(x) for x in leaves}
    # an enclosing trace would take the folding's eval for the function's: fold only at the outermost trace
    tape = _program(outs + state, links, {id(k): j for j, k in enumerate(keys)}, start, template, len(outs), own,
                    fold=fold and outer_seen is None)
    tape.in_shapes = tuple(x._shape for x in leaves)
    return tape, keys, out


def _restore(table: dict, ident: int, prev) -> None:
    if prev is None:
        table.pop(ident, None)
    else:
        table[ident] = prev


def _collect(outs: list, links: dict, key_ids: dict, start: int, inputs: set) -> tuple[dict, list, list]:
    """``(slot, consts, steps)`` of the graph behind ``outs``: the nodes built after creation number ``start``
    (and not evaluated) are its steps, in creation order (a topological order); ``slot`` maps the id of every other
    node reached to ``("i", i)`` (input ``i``), ``("k", j)`` (random key ``j``) or ``("c", k)`` (constant ``k``),
    a step's to None. ``inputs``: the ids of the real input arrays, which the graph may reach only through their
    markers."""
    consts: list = []
    slot: dict = {}
    steps: list = []
    stack = list(outs)
    while stack:
        n = stack.pop()
        if id(n) in slot:
            continue
        i = links.get(id(n._inputs))
        if i is not None:
            slot[id(n)] = ("i", i)
        elif id(n) in key_ids:
            slot[id(n)] = ("k", key_ids[id(n)])
        elif n._data is None and n._exec is None and n._seq > start:  # built by the call (and not evaluated)
            for g in n._siblings or (n,):
                slot[id(g)] = None
                steps.append(g)
                stack.extend(g._inputs)
        else:
            if _reaches(n, inputs):
                raise ValueError("compile: the function uses one of its inputs other than through its arguments "
                                 "(an array it captured is, or was computed from, an input): pass it as an "
                                 "argument instead")
            slot[id(n)] = ("c", len(consts))
            consts.append(n)
    steps.sort(key=lambda g: g._seq)  # creation order is a topological order
    return slot, consts, steps


def _fold_constants(outs: list, slot: dict, steps: list) -> bool:
    """Evaluate, once, the steps that read only constants (a weight's transpose, a table of rotary
    frequencies, an ``arange``), so that replays take their values instead of recomputing them. A result is
    kept only if it is small or a view of its input (a large new buffer would stay alive as long as the tape):
    otherwise it stays a step, and its own inputs may be kept instead. Communication and ordering primitives
    are never folded. Returns whether anything was evaluated."""
    constant: set = set()  # ids of steps that read only constants
    for g in steps:
        if (g._siblings is None and not isinstance(g._prim, _NEVER_FOLDED)
                and all(id(x) in constant or (slot.get(id(x)) or ("",))[0] == "c" for x in g._inputs)):
            constant.add(id(g))
    if not constant:
        return False
    needed = {id(o) for o in outs}
    needed.update(id(x) for g in steps if id(g) not in constant for x in g._inputs)
    kept = []
    for g in reversed(steps):  # every reader of g is seen before g
        if id(g) in needed and id(g) in constant:
            if g.nbytes <= FOLD_BYTES or isinstance(g._prim, _VIEWS):
                kept.append(g)
            else:
                needed.update(id(x) for x in g._inputs)
    if not kept:
        return False
    try:
        scheduler.eval_arrays(kept)
    except Exception:  # noqa: BLE001 (the error is the user's to see when the replay's results are evaluated)
        return False
    return True


def _program(outs: list, links: dict, key_ids: dict, start: int, template, n_out: int, inputs: set,
             fold: bool) -> Tape:
    """The tape of the graph behind ``outs`` (see ``_collect``), with its constant steps folded if ``fold`` and
    its common subexpressions merged."""
    slot, consts, steps = _collect(outs, links, key_ids, start, inputs)
    if fold and _fold_constants(outs, slot, steps):
        slot, consts, steps = _collect(outs, links, key_ids, start, inputs)
    alias = _common(steps, outs)
    if alias:
        steps = [g for g in steps if id(g) not in alias]
    base = {"c": 0, "i": len(consts), "k": len(consts) + len(links)}
    first = base["k"] + len(key_ids)
    index = {k: base[v[0]] + v[1] for k, v in slot.items() if v is not None}
    index.update((id(g), first + j) for j, g in enumerate(steps))
    program: list = []
    refs: list = []
    done: set = set()
    for g in steps:
        if id(g) not in done:
            group = g._siblings or (g,)
            done.update(id(x) for x in group)
            for k, x in enumerate(group, 1):
                r = tuple(index[id(alias.get(id(y), y))] for y in x._inputs)
                program.append((x._prim, _getter(r), x._shape, x._dtype, x._stream, k if k == len(group) > 1 else 0))
                refs.append(r)
    out_refs = [index[id(alias.get(id(o), o))] for o in outs]
    return Tape(consts, len(links), len(key_ids), program, refs, out_refs, template, n_out)


def _reaches(n, inputs: set) -> bool:
    """Whether constant ``n`` is one of ``inputs``, or an unevaluated node computed from one."""
    stack = [n]
    seen: set = set()
    while stack:
        x = stack.pop()
        if id(x) in inputs:
            return True
        if x._data is None and id(x) not in seen:
            seen.add(id(x))
            stack.extend(x._inputs)
    return False


def _common(steps: list, outs: list) -> dict:
    """Common subexpressions among ``steps`` (in creation order): ``id(node) -> an earlier node`` with the same
    primitive, inputs (after merging), shape, dtype and stream. Sibling groups are kept as they are, and so
    are the outputs (as in MLX: the function's results stay distinct arrays)."""
    alias: dict = {}
    seen: dict = {}
    out_ids = {id(o) for o in outs}
    for g in steps:
        if g._siblings is not None:
            continue
        key = (g._prim, tuple([id(alias.get(id(x), x)) for x in g._inputs]), g._shape, g._dtype, g._stream)
        try:
            first = seen.setdefault(key, g)
        except TypeError:  # parameters that do not hash (slices in an index key): left alone
            continue
        if first is not g and id(g) not in out_ids:
            alias[id(g)] = first
    return alias


def fill(t, it):
    """``t`` (an output template) with its ``HOLE`` leaves replaced, in order, by the items of ``it``."""
    if t is HOLE:
        return next(it)
    c = type(t)
    # (plain containers first, with their holes taken in the loop: an optimizer's update fills a tree of a
    # model's every weight at every step)
    if c is list:
        return [next(it) if x is HOLE else fill(x, it) for x in t]
    if c is dict:
        return {k: next(it) if v is HOLE else fill(v, it) for k, v in t.items()}
    if c is tuple:
        return tuple([next(it) if x is HOLE else fill(x, it) for x in t])
    if isinstance(t, tuple) and hasattr(t, "_fields"):
        return c(*(fill(x, it) for x in t))
    if isinstance(t, (list, tuple)):
        return c(fill(x, it) for x in t)
    if isinstance(t, dict):
        return c((k, fill(v, it)) for k, v in t.items())
    return t


def _map_leaves(tree, f) -> None:
    """Replace each array leaf ``a`` of ``tree`` by ``f(a)``, in place (lists and dicts; tuples are walked)."""
    c = type(tree)
    if c is dict or (c is not list and isinstance(tree, dict)):
        for k, x in tree.items():
            if type(x) is array:
                tree[k] = f(x)
            elif type(x) is not dict or x:  # (an empty dict: a layer without parameters)
                _map_leaves(x, f)
    elif c is list or isinstance(tree, list):
        for i, x in enumerate(tree):
            if type(x) is array:
                tree[i] = f(x)
            else:
                _map_leaves(x, f)
    elif isinstance(tree, tuple):
        for x in tree:
            if type(x) is array:
                raise TypeError("compile: the arrays of inputs= and outputs= must sit in lists or dicts, "
                                "which compile can update in place, not directly in tuples")
            _map_leaves(x, f)


def assign(tree, it) -> None:
    """Put the arrays of ``it``, in order, in place of the array leaves of ``tree``."""
    _map_leaves(tree, lambda a: next(it))
