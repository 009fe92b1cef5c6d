"""``mx.memory_report()``: bytes per location and the largest live arrays, found only when asked."""

from __future__ import annotations

import gc

from ..array import array
from ..runtime import memory
from ..runtime.executor import Failure
from .summary import fmt_bytes


class MemoryReport(dict):
    """A dict (see :func:`memory_report`) that prints as a table."""

    def __str__(self) -> str:
        lines = [f"{'location':<16}{'active':>12}{'peak':>12}{'cached':>12}"]
        for loc, s in self["locations"].items():
            sizes = "".join(f"{fmt_bytes(s[k]):>12}" for k in ("active", "peak", "cache"))
            lines.append(f"{loc:<16}{sizes}")
        for loc, s in self["locations"].items():
            if s.get("spills") or s.get("copies_dropped"):  # memory pressure on a device: what it took
                lines.append(f"{loc}: under pressure dropped {s['copies_dropped']} device copies and spilled "
                             f"{s['spills']} arrays ({fmt_bytes(s['spilled_bytes'])}) to the host")
            if s.get("graph_captures"):  # CUDA graphs: what they hold and how often they replayed
                lines.append(f"{loc}: CUDA graphs hold {fmt_bytes(s['graph_bytes'])}; {s['graph_captures']} "
                             f"captured, {s['graph_replays']} replays, {s['graph_refusals']} refused, "
                             f"{s['graph_evictions']} dropped")
        lines.append(f"live arrays: {self['live_arrays']} holding {fmt_bytes(self['live_bytes'])}; largest:")
        for a in self["largest"]:
            where = a["location"] + (f" (+ copies on {', '.join(a['copies'])})" if a["copies"] else "")
            lines.append(f"  {fmt_bytes(a['nbytes']):>10}  {a['dtype']}{list(a['shape'])}  on {where}"
                         f"  from {a['stream']}")
        return "\n".join(lines)


def memory_report(top: int = 10) -> MemoryReport:
    """Active, peak and cached bytes per location, and the largest live evaluated arrays.

    Live arrays are found only when this is called, by scanning the objects tracked by Python's garbage
    collector (``gc.get_objects()``) for evaluated umx arrays: nothing is registered or counted while the
    program runs, so the report costs nothing until asked for (and a scan of all objects when it is).

    Args:
        top (int): how many of the largest arrays to list. Default: ``10``.

    Returns:
        MemoryReport: a dict with ``locations`` (location -> ``{"active", "peak", "cache"}`` in bytes),
        ``live_arrays`` and ``live_bytes`` (evaluated arrays reachable now, bytes at their home location) and
        ``largest`` (dicts with ``shape``, ``dtype``, ``nbytes``, ``location``, ``copies``, ``stream``).
        Printing it gives a table.
    """
    live = [o for o in gc.get_objects()
            if type(o) is array and o._data is not None and type(o._data) is not Failure]
    live.sort(key=lambda a: a.nbytes, reverse=True)
    largest = []
    for a in live[:top]:
        largest.append({
            "shape": a.shape, "dtype": a.dtype.name, "nbytes": a.nbytes, "location": _location(a),
            "copies": [str(k) for k in (a._copies or ())],
            "stream": repr(a._stream) if a._stream else "host data",
        })
    return MemoryReport(locations=memory.memory_by_location(), live_arrays=len(live),
                        live_bytes=sum(a.nbytes for a in live), largest=largest)


def _location(a) -> str:
    h = memory.handler_for(a._data)
    if h is None:
        return "host"
    loc = getattr(h, "location", None)
    return str(loc(a._data)) if loc is not None else type(a._data).__name__
