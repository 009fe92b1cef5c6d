"""The order of communication: one sequence of turns per process, handed out in plan order.

MPI and NCCL match a communicator's collectives by the order in which each process issues them, and MPI forbids
two threads from using one communicator at once. umx runs kernels on per-stream worker threads (and sometimes on
the caller's), so the order in which communication kernels start would depend on thread timing. Instead the
planner gives each communication node a *ticket* as it plans it (``scheduler.on_plan``: under the plan lock,
before any of the nodes can run), and the kernel takes its *turn*: it waits until every smaller ticket has had
its turn, communicates, and ends its turn. Calls made at once (setting up a group's communicators) take the next
ticket too. So every process communicates one call at a time, in the order its program planned the calls: the
same order on every process of an SPMD program, whatever its streams and threads do.

A node that fails before its kernel runs (a failed input) never takes its turn: a waiter sees that it finished
without it and skips its ticket.
"""

from __future__ import annotations

import threading
import weakref
from contextlib import contextmanager

from ..primitives.distributed import COMMUNICATION

_POLL_S = 0.05  # how often a waiter looks for tickets whose nodes failed before their turn (nobody notifies it)


class Turns:
    """The process's sequence of turns (one instance: ``TURNS``)."""

    def __init__(self):
        self._lock = threading.Lock()  # (taken directly where nobody waits: cheaper than the condition's methods)
        self._cond = threading.Condition(self._lock)
        self._issued = 0  # the last ticket handed out
        self._finished = 0  # every ticket up to this one has had its turn (or will never take it)
        self._waiting = 0  # threads waiting in ``begin``: an ending turn notifies only when there are some
        self._owners: dict = {}  # ticket -> weak reference to its node, or None for a call made at once

    def assign(self, tasks) -> None:
        """Give each communication node among ``tasks`` (a plan's tasks, in plan order) the next ticket: its
        primitive is replaced by a copy that holds it. MUST be called under the scheduler's plan lock, before any
        of the tasks can run."""
        # (every plan of the process comes here once a group exists: a set lookup per task is all others pay)
        kinds = COMMUNICATION
        for n in tasks:
            prim = getattr(n, "_prim", None)  # (a fused region has none, and holds no communication)
            if prim.__class__ in kinds:
                with self._lock:
                    self._issued = ticket = self._issued + 1
                    self._owners[ticket] = weakref.ref(n)
                n._prim = prim.with_ticket(ticket)

    def begin(self, ticket: int) -> None:
        """Wait for turn ``ticket``. The caller MUST then call ``end(ticket)``, even if its call raises."""
        if ticket > 0 and self._finished == ticket - 1:
            return  # every earlier turn has ended, and only this ticket's node takes this one
        self._wait(ticket)

    def end(self, ticket: int) -> None:
        """End turn ``ticket``: the next one may start."""
        with self._lock:
            self._owners.pop(ticket, None)
            self._finished = ticket
            if self._waiting:
                self._cond.notify_all()

    def turn(self, ticket: int) -> _Turn:
        """Wait for turn ``ticket``, run the block, end the turn (even if the block raises): ``with
        turns.turn(ticket):``."""
        return _Turn(self, ticket)

    @contextmanager
    def now(self):
        """Take the next ticket for a call made at once (a communicator's set-up) and run the block in its turn."""
        with self._lock:
            self._issued = ticket = self._issued + 1
            self._owners[ticket] = None
        with self.turn(ticket):
            yield

    def _wait(self, ticket: int) -> None:
        if ticket <= 0:
            raise RuntimeError("a communication node was run without a turn (its plan failed part way)")
        with self._cond:
            if ticket <= self._finished:
                raise RuntimeError(f"communication turn {ticket} was already taken")
            self._waiting += 1
            try:
                while self._finished != ticket - 1:
                    if not self._skip_failed():
                        self._cond.wait(_POLL_S)
            finally:
                self._waiting -= 1

    def _skip_failed(self) -> bool:
        """Skip the next ticket if its node finished without taking its turn. Caller holds _cond."""
        ticket = self._finished + 1
        ref = self._owners.get(ticket)
        if ref is None:
            return False  # a call made at once, which always takes its turn
        n = ref()
        if n is not None and n._data is None:
            return False  # not run yet (a node's data is set only after its kernel, and so its turn, ended)
        del self._owners[ticket]
        self._finished = ticket
        self._cond.notify_all()
        return True


class _Turn:
    """The context of one turn (a class: a generator's context manager costs more, on every collective)."""

    __slots__ = ("turns", "ticket")

    def __init__(self, turns: Turns, ticket: int):
        self.turns = turns
        self.ticket = ticket

    def __enter__(self) -> None:
        self.turns.begin(self.ticket)

    def __exit__(self, *exc) -> None:
        self.turns.end(self.ticket)


TURNS = Turns()
