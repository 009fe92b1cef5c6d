"""See what ran where: ``with mx.trace("run.json"):`` records a Chrome/Perfetto trace of the block's work.

The file opens in https://ui.perfetto.dev or ``chrome://tracing``: one lane per stream (CPU streams timed with
the host clock, CUDA streams with CUDA events, both on one time base), a lane per thread that called ``eval``,
op spans named by primitive, input and output shapes and dtypes, copies with their bytes, waits for other
streams, and flow arrows from each producer op to the op on another stream that waited for it.

``python -m umx.trace summary run.json`` prints a per-stream table; ``python -m umx.trace plot run.json -o
timeline.png`` draws the timeline (needs matplotlib: ``pip install 'umx[plot]'``).

``mx.trace`` is also MLX's matrix trace: ``mx.trace(a, offset, axis1, axis2)``. The two are told apart by
the first argument: a path (or None) starts a recording, an array computes the sum of a diagonal. Import this
package's helpers with ``from umx.trace import load``.
"""

from __future__ import annotations

import json
import os

from ..devices import synchronize
from ..ops.misc import trace as diagonal_sum
from ..runtime import tracing as _tracing
from ._memory import memory_report

__all__ = ["trace", "Trace", "load", "memory_report"]


def trace(target=None, /, *args, **kwargs):
    """``mx.trace(path)``: a :class:`Trace` of the block; ``mx.trace(a, offset=0, axis1=0, axis2=1)``: MLX's sum
    along a diagonal of ``a`` (see ``numpy.trace``).

    Args:
        target (str | os.PathLike | None | array): a file to record into, or the array whose diagonal to sum.

    Returns:
        Trace | array: the recording context, or the diagonal sums.
    """
    if target is None or isinstance(target, (str, os.PathLike)):
        return Trace(target, *args, **kwargs)

    return diagonal_sum(target, *args, **kwargs)


class Trace:
    """Record every op, copy, cross-stream wait and eval run inside the block into a Chrome trace file.

    On exit the block waits for the work it started (every stream is synchronized), then writes ``path``. Only
    one trace records at a time. When no trace is active, umx pays one variable load per eval and per batch.

    Args:
        path (str, optional): where to write the JSON trace; ``None`` keeps it only in :attr:`data`.

    Example:
        >>> with mx.trace("run.json") as t:
        ...     mx.eval(mx.exp(a, stream=s1), mx.matmul(a, b, stream=s2))
        >>> t.data["traceEvents"][0]
    """

    def __init__(self, path: str | os.PathLike | None = None):
        self.path = path
        #: the Chrome trace (a dict with ``traceEvents``), set when the block exits
        self.data: dict | None = None
        self._recorder = None

    def __enter__(self) -> trace:
        if _tracing.active is not None:
            raise RuntimeError("mx.trace: a trace is already recording; traces cannot be nested")
        self._recorder = _tracing.Recorder()
        _tracing.active = self._recorder
        return self

    def __exit__(self, *exc) -> bool:
        try:
            synchronize()
        finally:
            _tracing.active = None
        rec = self._recorder
        rec.finish()
        self.data = to_chrome(rec)
        if self.path is not None:
            with open(self.path, "w") as f:
                json.dump(self.data, f, separators=(",", ":"))
        return False


def load(path: str | os.PathLike) -> dict:
    """Read a trace file written by :class:`trace`."""
    with open(path) as f:
        return json.load(f)


def _us(ns: int) -> float:
    return round(ns / 1000, 3)


def to_chrome(rec: _tracing.Recorder) -> dict:
    """The Chrome trace JSON (as a dict) of a finished recorder: "X" spans, "s"/"f" flows, lane metadata."""
    base = rec.start_ns
    # Processes: devices first (cpu, then gpus), then "host" (caller threads); lanes by process, then name.
    lanes = sorted(rec.lanes.items(), key=lambda kv: (kv[1][0] == "host", kv[1][0], kv[1][1]))
    pids: dict = {}
    tids: dict = {}
    events: list = []
    for i, (lane, (proc, name)) in enumerate(lanes):
        if proc not in pids:
            pid = pids[proc] = len(pids) + 1
            events.append({"ph": "M", "name": "process_name", "pid": pid, "tid": 0, "args": {"name": proc}})
            events.append({"ph": "M", "name": "process_sort_index", "pid": pid, "tid": 0,
                           "args": {"sort_index": pid}})
        tid = tids[lane] = i + 1
        pid = pids[proc]
        events.append({"ph": "M", "name": "thread_name", "pid": pid, "tid": tid, "args": {"name": name}})
        events.append({"ph": "M", "name": "thread_sort_index", "pid": pid, "tid": tid,
                       "args": {"sort_index": tid}})
    ops: dict = {}
    for lane, cat, name, t0, t1, args, key in sorted(rec.spans, key=lambda s: s[3]):
        if type(name) is not str:  # an OpLabel
            name, label_args = name.render()
            args = {**label_args, **args} if args else label_args
        ev = {"ph": "X", "cat": cat, "name": name, "pid": pids[rec.lanes[lane][0]], "tid": tids[lane],
              "ts": _us(t0 - base), "dur": _us(max(t1 - t0, 0))}
        if args:
            ev["args"] = args
        events.append(ev)
        if key is not None:
            ops[(id(key[0]), key[1])] = ev
    missing = 0
    for i, (p, c) in enumerate(rec.flows):
        src = ops.get((id(p[0]), p[1]))
        dst = ops.get((id(c[0]), c[1]))
        if src is None or dst is None:  # the producer ran before the trace started
            missing += 1
            continue
        # Mid-slice points: each end binds to the op slice that encloses it.
        for ph, ev in (("s", src), ("f", dst)):
            flow = {"ph": ph, "id": i, "cat": "dep", "name": "dep", "pid": ev["pid"], "tid": ev["tid"],
                    "ts": round(ev["ts"] + ev["dur"] / 2, 3)}
            if ph == "f":
                flow["bp"] = "e"
            events.append(flow)
    return {"traceEvents": events, "displayTimeUnit": "ms",
            "otherData": {"tool": "umx", "duration_us": _us(rec.end_ns - base), "flows_unresolved": missing}}
