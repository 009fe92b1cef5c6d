"""A timeline picture of a trace: one row per lane, ops coloured by primitive, copies, waits and flow arrows.

Needs matplotlib (``pip install 'umx[plot]'``); it is imported only here.
"""

from __future__ import annotations

import bisect
import os

from .summary import lanes

__all__ = ["plot"]

_FIXED = {"copy": ("#e8743b", "copy"), "wait": ("#d0d0d0", "wait"), "eval": ("#9ecae1", "eval (caller)")}


def plot(data: dict, path: str | os.PathLike, title: str | None = None) -> None:
    """Draw the timeline of trace ``data`` (see ``umx.trace.load``) into the image file ``path``.

    Args:
        data (dict): a Chrome trace written by ``mx.trace``.
        path (str): the image file; the format follows the extension (``.png``, ``.svg``, ``.pdf``).
        title (str, optional): the figure's title. Default: the trace's length.
    """
    try:
        from matplotlib.figure import Figure
        from matplotlib.patches import Patch
    except ImportError as e:
        raise ImportError("umx.trace plot needs matplotlib: pip install 'umx[plot]'") from e
    rows = lanes(data)
    row_of = {(pid, tid): i for i, (pid, tid, _) in enumerate(rows)}
    spans = [ev for ev in data["traceEvents"] if ev.get("ph") == "X" and (ev["pid"], ev["tid"]) in row_of]
    kinds = sorted({_kind(ev) for ev in spans if ev.get("cat") == "op"})
    palette = ["#4c72b0", "#55a868", "#c44e52", "#8172b2", "#937860", "#da8bc3", "#8c8c8c", "#ccb974",
               "#64b5cd", "#2f4b7c"]
    colour = {k: palette[i % len(palette)] for i, k in enumerate(kinds)}

    fig = Figure(figsize=(12, 1.2 + 0.55 * len(rows)), layout="constrained")
    ax = fig.add_subplot()
    for cat, height in (("eval", 0.3), ("wait", 0.5), ("op", 0.8), ("copy", 0.5)):
        bars: dict = {}
        for ev in spans:
            if ev.get("cat") != cat:
                continue
            c = colour[_kind(ev)] if cat == "op" else _FIXED.get(cat, ("#999999",))[0]
            bars.setdefault((row_of[(ev["pid"], ev["tid"])], c), []).append((ev["ts"] / 1e3, ev["dur"] / 1e3))
        for (row, c), xs in bars.items():
            ax.broken_barh(xs, (row - height / 2, height), facecolors=c, edgecolor=c, linewidth=0.3)
    ops: dict = {}
    for ev in spans:
        if ev.get("cat") == "op":
            ops.setdefault((ev["pid"], ev["tid"]), []).append(ev)
    for lane_ops in ops.values():
        lane_ops.sort(key=lambda op: op["ts"])
    ends: dict = {}
    for ev in data["traceEvents"]:
        if ev.get("ph") in ("s", "f") and (ev["pid"], ev["tid"]) in row_of:
            lane_ops = ops.get((ev["pid"], ev["tid"]), [])
            ends.setdefault(ev["id"], {})[ev["ph"]] = _endpoint(ev, lane_ops, row_of)
    for e in ends.values():
        if "s" in e and "f" in e:
            ax.annotate("", xy=e["f"], xytext=e["s"],
                        arrowprops={"arrowstyle": "->", "color": "black", "lw": 0.8, "alpha": 0.7})
    ax.set_yticks(range(len(rows)), [name for _, _, name in rows])
    ax.set_ylim(len(rows) - 0.5, -0.5)
    ax.set_xlabel("time (ms)")
    ax.grid(axis="x", alpha=0.3)
    duration = data.get("otherData", {}).get("duration_us")
    if duration:
        ax.set_xlim(0, duration / 1e3)
    ax.set_title(title or f"umx trace, {(duration or 0) / 1e3:.2f} ms")
    used = {ev.get("cat") for ev in spans}
    handles = [Patch(color=colour[k], label=k) for k in kinds]
    handles += [Patch(color=c, label=label) for cat, (c, label) in _FIXED.items() if cat in used]
    if any("s" in e and "f" in e for e in ends.values()):
        handles.append(Patch(color="black", label="dependency (arrow)"))
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize="small", frameon=False)
    fig.savefig(path, dpi=120)


def _endpoint(flow: dict, ops: list, row_of: dict) -> tuple:
    """Where an arrow ends (ms, row): the end of the op a flow starts in, the start of the op it ends in."""
    ts = flow["ts"]
    i = bisect.bisect_right(ops, ts, key=lambda op: op["ts"]) - 1  # ops: one lane's op spans, by start
    if i >= 0 and ts <= ops[i]["ts"] + ops[i]["dur"]:
        ts = ops[i]["ts"] + ops[i]["dur"] if flow["ph"] == "s" else ops[i]["ts"]
    return ts / 1e3, row_of[(flow["pid"], flow["tid"])]


def _kind(ev: dict) -> str:
    """The primitive's name without its parameters, e.g. ``Matmul``."""
    op = ev.get("args", {}).get("op") or ev["name"].split(" ")[0]
    return op.split("(")[0]
