"""Reference counts that mean "nothing else holds this", measured once at import.

The planner fuses an intermediate into a region only if nothing but its reader holds it, a CUDA graph copies out
only the outputs something outside the batch holds, an interrupted eval drops only the work nothing holds, and an
executor gives an input's buffer to its reader's result (donation) only if nothing else holds the input's node,
its data or the buffer that data views. Each reads ``sys.getrefcount`` in a fixed code shape; what that count
includes (the argument, a local variable) depends on the interpreter (CPython 3.14 borrows references it used to
count), so the baselines are measured here by running the very same shapes on objects that nothing else holds.
"""

from __future__ import annotations

from sys import getrefcount


def _in_inputs_as_local(inputs: tuple) -> int:
    x = inputs[0]  # (the shape the planner reads: a reader's inputs, a local variable, the argument)
    return getrefcount(x)


def _in_container(items: list, i: int) -> int:
    return getrefcount(items[i])  # (a container's slot, read straight into the argument)


def _data_as_local(x) -> int:
    d = x._data  # (the shape a donor's data is read in: one node's slot, a local variable, the argument)
    return getrefcount(d)


def _base_as_local(d) -> int:
    b = d.base  # (the shape a view's buffer is read in: the view's base, a local variable, the argument)
    return getrefcount(b)


def task_refs(tasks: list, j: int) -> int:
    """The reference count of task ``j``'s node in an executor's queue (a plain node, or a ``(node, waits)``
    task's): the shape in which an interrupted eval reads whether anything else holds it."""
    t = tasks[j]
    return getrefcount(t[0] if t.__class__ is tuple else t)


class _Probe:
    __slots__ = ("_data", "base")


def _held_by_slot(attr: str) -> _Probe:
    p = _Probe()
    setattr(p, attr, _Probe())
    return p


#: a node held only by one reader's inputs tuple, while a local variable names it
UNHELD_INPUT = _in_inputs_as_local((_Probe(),))
#: a node held only by one slot of a list or tuple, read straight into getrefcount
UNHELD_SLOT = _in_container([_Probe()], 0)
#: data held only by its node's ``_data``, while a local variable names it
UNHELD_DATA = _data_as_local(_held_by_slot("_data"))
#: a buffer held only by one view's ``base``, while a local variable names it
UNHELD_BASE = _base_as_local(_held_by_slot("base"))
#: a node held only by its task in an executor's queue, read by ``task_refs``: a plain task, a ``(node, waits)`` one
UNHELD_TASK = task_refs([_Probe()], 0)
UNHELD_TASK_PAIR = task_refs([(_Probe(), None)], 0)
