"""Shared by the benchmarks: timing by median of repeats, and a plain-text table with ratios."""

from __future__ import annotations

import statistics
import time


def median_time(fn, repeats: int = 15, warmup: int = 3) -> float:
    """Median wall time of ``fn()`` in seconds, after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def median_ms(fn, runs: int, warmup: int = 3) -> float:
    """Median wall time of ``fn()`` in milliseconds, after ``warmup`` untimed calls."""
    return median_time(fn, runs, warmup) * 1e3


def table(title: str, rows: list, baseline: str | None = None) -> str:
    """Rows of (name, seconds or None, note); ratios are against the row named ``baseline`` (or the first)."""
    timed = [r for r in rows if r[1] is not None]
    base = next((r[1] for r in timed if r[0] == baseline), timed[0][1] if timed else None)
    width = max(len(r[0]) for r in rows)
    out = [title, f"{'':{width}}  {'median':>10}  {'ratio':>7}  note", "-" * (width + 32)]
    for name, secs, note in rows:
        if secs is None:
            out.append(f"{name:{width}}  {'-':>10}  {'-':>7}  {note}")
        else:
            out.append(f"{name:{width}}  {secs * 1e3:>8.3f}ms  {secs / base:>7.2f}  {note}")
    return "\n".join(out)
