"""The per-lane summary of a trace: busy and idle time, op count, bytes copied and the longest ops."""

from __future__ import annotations

__all__ = ["lanes", "summarize", "format_summary", "fmt_bytes"]

# Spans that count as a lane doing work; waits and evals (a caller waiting for results) are idle time.
BUSY = ("op", "copy")


def lanes(data: dict) -> list:
    """The lanes of a Chrome trace as ``(pid, tid, name)``, in the file's sort order."""
    names, order = {}, {}
    for ev in data["traceEvents"]:
        if ev.get("ph") != "M":
            continue
        if ev["name"] == "thread_name":
            names[(ev["pid"], ev["tid"])] = ev["args"]["name"]
        elif ev["name"] == "thread_sort_index":
            order[(ev["pid"], ev["tid"])] = ev["args"]["sort_index"]
    for ev in data["traceEvents"]:  # lanes without metadata (files from other tools)
        if ev.get("ph") == "X":
            names.setdefault((ev["pid"], ev["tid"]), str(ev["tid"]))
    keys = sorted(names, key=lambda k: (order.get(k, 1 << 30), k))
    return [(pid, tid, names[(pid, tid)]) for pid, tid in keys]


def _union(intervals: list) -> float:
    total, end = 0.0, float("-inf")
    for t0, t1 in sorted(intervals):
        if t1 <= end:
            continue
        total += t1 - max(t0, end)
        end = t1
    return total


def summarize(data: dict, top: int = 3) -> dict:
    """Per-lane figures of a trace (times in microseconds).

    Args:
        data (dict): a Chrome trace, as written by ``mx.trace`` (see ``umx.trace.load``).
        top (int): how many of each lane's longest ops to keep. Default: ``3``.

    Returns:
        dict: ``duration`` (the trace's length), ``evals`` (count and time of eval spans) and ``lanes``: one
        dict per lane with ``name``, ``busy``, ``idle``, ``wait``, ``ops``, ``copies``, ``bytes_copied`` and
        ``longest`` (``(dur, name)`` pairs, longest first).
    """
    spans = [ev for ev in data["traceEvents"] if ev.get("ph") == "X"]
    duration = data.get("otherData", {}).get("duration_us")
    if not duration:
        duration = max((e["ts"] + e["dur"] for e in spans), default=0)
    by_lane: dict = {}
    for ev in spans:
        by_lane.setdefault((ev["pid"], ev["tid"]), []).append(ev)
    rows = []
    for pid, tid, name in lanes(data):
        evs = by_lane.get((pid, tid), [])
        busy = _union([(e["ts"], e["ts"] + e["dur"]) for e in evs if e.get("cat") in BUSY])
        ops = [e for e in evs if e.get("cat") == "op"]
        copies = [e for e in evs if e.get("cat") == "copy"]
        rows.append({
            "name": name, "busy": busy, "idle": max(duration - busy, 0.0),
            "wait": _union([(e["ts"], e["ts"] + e["dur"]) for e in evs if e.get("cat") == "wait"]),
            "ops": len(ops), "copies": len(copies),
            "bytes_copied": sum(e.get("args", {}).get("bytes", 0) for e in copies),
            "longest": sorted(((e["dur"], e["name"]) for e in ops), reverse=True)[:top],
        })
    evals = [e for e in spans if e.get("cat") == "eval"]
    return {"duration": duration, "evals": (len(evals), sum(e["dur"] for e in evals)), "lanes": rows}


def fmt_bytes(n: float) -> str:
    """``n`` bytes in B, KiB, MiB or GiB."""
    if abs(n) < 1024:
        return f"{n:.0f} B"
    for unit in ("KiB", "MiB", "GiB"):
        n /= 1024
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.1f} {unit}"


def _ms(us: float) -> str:
    return f"{us / 1000:.3f}"


def format_summary(s: dict) -> str:
    """The table printed by ``python -m umx.trace summary``."""
    n_evals, t_evals = s["evals"]
    width = max([len("lane")] + [len(r["name"]) for r in s["lanes"]])
    head = (f"{'lane':<{width}}  {'busy ms':>10}  {'idle ms':>10}  {'busy':>5}  {'wait ms':>10}  {'ops':>6}"
            f"  {'copied':>10}")
    title = f"trace: {_ms(s['duration'])} ms, {len(s['lanes'])} lanes, {n_evals} evals ({_ms(t_evals)} ms)"
    out = [title, "", head, "-" * len(head)]
    for r in s["lanes"]:
        pct = f"{100 * r['busy'] / s['duration']:.0f}%" if s["duration"] else "-"
        copied = fmt_bytes(r["bytes_copied"]) + (f" ({r['copies']})" if r["copies"] else "")
        out.append(f"{r['name']:<{width}}  {_ms(r['busy']):>10}  {_ms(r['idle']):>10}  {pct:>5}"
                   f"  {_ms(r['wait']):>10}  {r['ops']:>6}  {copied:>10}")
    longest = [r for r in s["lanes"] if r["longest"]]
    if longest:
        out += ["", "longest ops:"]
        for r in longest:
            out.append(f"  {r['name']}")
            out += [f"    {_ms(d):>10} ms  {name}" for d, name in r["longest"]]
    return "\n".join(out)
