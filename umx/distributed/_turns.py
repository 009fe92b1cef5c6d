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
        self._cond = threading.Condition(threading.Lock())
        self._issued = 0  # the last ticket handed out
        self._finished = 0  # every ticket up to this one has had its turn (or will never take it)
        self._owners: dict = {}  # ticket -> weak reference to its node, or None for a call made at once

    def assign(self, tasks) -> None:
        """Give each communication node among ``tasks`` (a plan's tasks, in plan order) the next ticket: its
        primitive is replaced by a copy that holds it. MUST be called under the scheduler's plan lock, before any
        of the tasks can run."""
        kinds = COMMUNICATION
        for n in tasks:
            prim = getattr(n, "_prim", None)  # (a fused region has none, and holds no communication)
            if prim.__class__ in kinds:
                with self._cond:
                    self._issued += 1
                    ticket = self._issued
                    self._owners[ticket] = weakref.ref(n)
                n._prim = prim.with_ticket(ticket)

    @contextmanager
    def turn(self, ticket: int):
        """Wait for turn ``ticket``, run the block, end the turn (even if the block raises)."""
        self._wait(ticket)
        try:
            yield
        finally:
            self._end(ticket)

    @contextmanager
    def now(self):
        """Take the next ticket for a call made at once (a communicator's set-up) and run the block in its turn."""
        with self._cond:
            self._issued += 1
            ticket = self._issued
            self._owners[ticket] = None
        with self.turn(ticket):
            yield

    def _wait(self, ticket: int) -> None:
        if ticket <= 0:
            raise RuntimeError("a communication node was run without a turn (its plan failed part way)")
        with self._cond:
            if ticket <= self._finished:
                raise RuntimeError(f"communication turn {ticket} was already taken")
            while self._finished != ticket - 1:
                if not self._skip_failed():
                    self._cond.wait(_POLL_S)

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

    def _end(self, ticket: int) -> None:
        with self._cond:
            self._owners.pop(ticket, None)
            self._finished = ticket
            self._cond.notify_all()


TURNS = Turns()
