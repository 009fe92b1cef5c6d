"""What the runtime asks of a backend: an executor per stream, a memory location per device kind, and the traits
the planner may know. A backend is a folder under ``umx/backends/`` whose module gives ``available()``,
``device_count()``, ``device_info(index)`` and ``make_executor(stream) -> Executor``; its executor usually derives
from ``runtime.executor.WorkerExecutor``, which implements everything below but ``run_batch``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable


@dataclass(frozen=True, slots=True)
class Traits:
    """What the planner may know of a stream's executor (one frozen object per executor class).

    Args:
        local_types: classes of data its kernels read in place (NumPy arrays and scalars on the CPU); any other
            input takes the task's slow path (a copy, or an ordering after another stream).
        inline_rank: which of an eval's batches the caller runs itself when it could run several: the highest.
        fuse_max_nodes: the most nodes one fused region may hold.
        small_regions: ``(elements, members)``: a region whose output has fewer elements is made only if it would
            hold at least that many members (a region's fixed cost is not repaid by small work); None: any region
            of two or more.
        programs: whether it runs a compiled function's whole graph as one ``Compiled`` node (a CUDA graph, or
            the steps one by one): ``compile`` then builds that node instead of replaying the graph node by node.
        program_max_elements: a graph with a larger step is replayed node by node (None: any size): where the
            graph runs step by step, large steps are better fused and split across cores.
        overlaps_host: whether its work, once launched, runs beside the host's Python (a GPU's kernels): a
            gradient may then be started as soon as ``value_and_grad`` has built it (``scheduler.start``, unless
            ``UMX_EARLY_START=0``), so the device computes it while the host builds the optimizer's update.
        side_outputs: regions of fewer elements may compute values that something else holds beside their root
            (an optimizer's new moments beside the new weight: see ``fusion.merge``); 0: none.
    """

    local_types: frozenset = frozenset()
    inline_rank: int = 0
    fuse_max_nodes: int = 1 << 30
    small_regions: tuple | None = None
    programs: bool = False
    program_max_elements: int | None = None
    overlaps_host: bool = False
    side_outputs: int = 0


@runtime_checkable
class Executor(Protocol):
    """A stream's executor: runs the stream's tasks in order. A task is a node whose inputs are ready here, or
    ``(node, waits)`` with ``waits`` the ``(executor, seq)`` pairs of other streams' work it needs first. "Node
    ``seq`` is done" is ``done >= seq`` (for a GPU: dispatched; ``wait`` waits for the kernel too)."""

    stream: object
    device: object
    traits: Traits
    submitted: int  # the last sequence number handed out (changed under the plan lock only)
    done: int  # the last sequence number finished (written by whoever runs the tasks, in order)

    def submit(self, tasks: list) -> None:
        """Queue a batch for the stream's worker."""

    def wait(self, seq: int) -> None:
        """Block until node ``seq`` is finished and its data readable by the host: every earlier node of the
        stream too (``eval`` waits once per stream, for its last target)."""

    def synchronize(self) -> None:
        """Block until everything submitted is finished."""

    def try_run_inline(self) -> bool:
        """Take the stream for the calling thread if its worker is idle (the caller then runs a batch)."""

    def run_inline(self, tasks: list, started=None) -> None:
        """Run a batch on the calling thread, which took the stream; an interrupt hands the rest to the worker."""

    def run_lane(self, task, read: bool) -> None:
        """Run the one task the scheduler's lane planned, on the calling thread, which took the stream."""

    def hand_over(self, tasks: list) -> None:
        """Give a batch the caller took the stream for to the worker instead, ahead of anything queued."""

    def holds_stream(self) -> bool:
        """Whether the calling thread has taken the stream (``try_run_inline``) and not given it back."""

    def release_stream(self) -> None:
        """Give back the stream the calling thread took and did not use."""

    def will_be_read_on(self, node, device) -> None:
        """A hint from the planner: ``node``, pending here, will be read on ``device`` (start copying early)."""

    def only_enqueues(self, tasks: list) -> bool:
        """Whether running ``tasks`` only enqueues work that never waits for the device (the caller may launch a
        short batch of them before its own)."""

    def abandon_unheld(self) -> None:
        """After an interrupt: drop queued work whose arrays nothing holds any more."""

    def raise_unraised(self) -> None:
        """Raise the first failure of this stream's work that no reader has raised (``synchronize`` does)."""


@runtime_checkable
class Location(Protocol):
    """Where a device backend's arrays live, registered with ``memory.register_location(data_type, location)``:
    how their data reaches the host, and the memory statistics and limits of those devices."""

    def to_host(self, a):
        """The data of evaluated array ``a`` (on this location) on the host, waiting for it as needed."""

    def host_in_parts(self, a):
        """``(host, ready)`` while ``a``'s copy to the host arrives in parts, else None (see memory)."""

    def active(self) -> int:
        """Bytes held by live arrays on these devices."""

    def peak(self) -> int:
        """The most bytes held at once since the last reset."""

    def reset_peak(self) -> None:
        """Start measuring the peak afresh (from zero, as MLX)."""

    def cache(self) -> int:
        """Bytes held for reuse outside live arrays."""

    def set_limit(self, limit: int) -> None:
        """Limit the memory of these devices to ``limit`` bytes (0: none)."""

    def clear_cache(self) -> None:
        """Free what is held for reuse."""
