"""Tapes: a graph recorded as steps, rebuilt on new inputs without the ops that first built it.

A ``Tape`` is what ``compile`` records of a function (``_tape.record``) and what ``backward`` records of a
backward walk (``_grad_tapes``): a list of steps, each a primitive with its inputs' places among the values, its
output's shape, dtype and stream. A replay builds the same lazy graph, one ``node(...)`` per step, without
checking arguments, inferring shapes and dtypes or running rules.
"""

from __future__ import annotations

from operator import itemgetter

from ..array import node
from ..ops import random as _random

__all__ = ["Tape", "build"]


class Tape:
    """A recorded graph: ``tape(ins, keys=None)`` rebuilds it on new input leaves and returns the flat outputs
    (the function's, then the state outputs), drawing fresh random keys unless ``keys`` are given.

    Values are numbered: constants, then inputs, then keys, then the steps' nodes in order. A step is ``(prim,
    get, shape, dtype, stream, group)``: ``get(values)`` gives its inputs tuple (an ``itemgetter``), ``group``
    is 0, or on the last node of a sibling group, the group's size. The first replays interpret the steps; the
    ``GENERATE_AT``-th generates one Python function of straight-line ``node(...)`` calls (faster than the
    interpreter, but compiling it costs time per step, repaid only by a tape replayed often), which runs from
    then on.

    Attributes:
        template: the output tree with ``HOLE`` for its arrays.
        n_out: how many of the flat outputs are the function's.
        n_steps: the number of nodes a replay builds.
    """

    __slots__ = ("consts", "n_ins", "n_keys", "steps", "refs", "out_refs", "template", "n_out", "n_steps", "_run",
                 "_calls", "in_shapes", "variants", "program")

    GENERATE_AT = 32

    def __init__(self, consts: list, n_ins: int, n_keys: int, steps: list, refs: list, out_refs: list, template,
                 n_out: int):
        self.consts = consts
        self.n_ins = n_ins
        self.n_keys = n_keys
        self.steps = steps
        self.refs = refs  # each step's input numbers, for the generated code
        self.out_refs = out_refs
        self.template = template
        self.n_out = n_out
        self.n_steps = len(steps)
        self._run = None
        self._calls = 0
        self.in_shapes = ()  # the input leaves' shapes at the trace
        self.variants = None  # for a shapeless compile: other input shapes -> the tape for them
        self.program = None  # its Program, False where it has none, None until the first replay decides

    def __call__(self, ins: list, keys=None) -> list:
        if self._run is not None:
            return self._run(ins, keys)
        self._calls += 1
        if self._calls >= self.GENERATE_AT:
            self._run = _generate(self)
            return self._run(ins, keys)
        if keys is None:
            keys = [_random._next_key() for _ in range(self.n_keys)] if self.n_keys else []
        return self.interpret(self.consts, ins, keys)

    def interpret(self, consts: list, ins: list, keys: list) -> list:
        """The flat outputs of the steps built on ``consts`` (the tape's, or stand-ins for them), ``ins`` and
        ``keys``, by the interpreter."""
        env = consts + ins + keys
        for step in self.steps:
            build(env, step)
        return [env[r] for r in self.out_refs]


def build(env: list, step: tuple) -> None:
    """Append to ``env`` (the values so far) the node of tape step ``step``; on the last node of a sibling group,
    make the group's nodes siblings."""
    prim, get, shape, dtype, stream, group = step
    env.append(node(prim, get(env), shape, dtype, stream))
    if group:
        made = tuple(env[-group:])
        for m in made:
            m._siblings = made


def _no_inputs(env) -> tuple:
    return ()


def _getter(refs: tuple):
    """``get(values)`` -> the tuple of ``values[r]`` for ``r`` in ``refs``."""
    if not refs:
        return _no_inputs
    if len(refs) == 1:
        r = refs[0]
        return lambda env: (env[r],)
    return itemgetter(*refs)


def _generate(tape: Tape):
    """The tape as one Python function of straight-line ``node(...)`` calls: value ``j`` is the variable
    ``e{j}`` (constants are globals, as are the steps' prims, shapes, dtypes and streams)."""
    glob: dict = {"node": node, "next_key": _random._next_key}
    for j, c in enumerate(tape.consts):
        glob[f"e{j}"] = c
    interned: dict = {}

    def name(obj, by_value: bool = False) -> str:
        key = obj if by_value else id(obj)  # shapes by value (equal tuples share a name), the rest by identity
        n = interned.get(key)
        if n is None:
            n = interned[key] = f"g{len(interned)}"
            glob[n] = obj
        return n

    j = len(tape.consts)
    lines = ["def run(ins, keys=None):"]
    if tape.n_ins:
        lines.append(f"    {''.join(f'e{j + i}, ' for i in range(tape.n_ins))}= ins")
        j += tape.n_ins
    if tape.n_keys:
        ks = "".join(f"e{j + i}, " for i in range(tape.n_keys))
        lines.append(f"    if keys is None:\n        {ks}= {', '.join(['next_key()'] * tape.n_keys)},")
        lines.append(f"    else:\n        {ks}= keys")
        j += tape.n_keys
    for (prim, _, shape, dtype, stream, group), refs in zip(tape.steps, tape.refs):
        ins = "".join(f"e{r}, " for r in refs)
        lines.append(f"    e{j} = node({name(prim)}, ({ins}), {name(shape, True)}, {name(dtype)}, {name(stream)})")
        j += 1
        if group:
            made = [f"e{i}" for i in range(j - group, j)]
            lines.append(f"    {' = '.join(m + '._siblings' for m in made)} = ({', '.join(made)})")
    lines.append(f"    return [{', '.join(f'e{r}' for r in tape.out_refs)}]")
    exec(compile("\n".join(lines), "<umx.compile tape>", "exec"), glob)  # noqa: S102 (our own code)
    return glob["run"]
