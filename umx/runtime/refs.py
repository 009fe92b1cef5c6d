"""Reference counts that mean "nothing else holds this node", measured once at import.

The planner fuses an intermediate into a region only if nothing but its reader holds it, a CUDA graph copies out
only the outputs something outside the batch holds, and an interrupted eval drops only the work nothing holds.
Each reads ``sys.getrefcount`` in a fixed code shape; what that count includes (the argument, a local variable)
depends on the interpreter (CPython 3.14 borrows references it used to count), so the baselines are measured here
by running the very same shapes on objects that nothing else holds.
"""

from __future__ import annotations

from sys import getrefcount


def _in_inputs_as_local(inputs: tuple) -> int:
    x = inputs[0]  # (the shape the planner reads: a reader's inputs, a local variable, the argument)
    return getrefcount(x)


def _in_container(items: list, i: int) -> int:
    return getrefcount(items[i])  # (a container's slot, read straight into the argument)


class _Probe:
    __slots__ = ()


#: a node held only by one reader's inputs tuple, while a local variable names it
UNHELD_INPUT = _in_inputs_as_local((_Probe(),))
#: a node held only by one slot of a list or tuple, read straight into getrefcount
UNHELD_SLOT = _in_container([_Probe()], 0)
