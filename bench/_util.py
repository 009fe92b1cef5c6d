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


def interleaved_medians(fns: dict, repeats: int = 15, warmup: int = 3, block: int = 1,
                        clock=time.perf_counter, before=None) -> dict:
    """``{name: median seconds}`` of the callables in ``fns``, each timed ``repeats`` times in rounds: a
    round calls every one ``block`` times in a row (each call timed), in turn. A host whose speed drifts (another
    tenant, a BLAS pool still spinning from the last case) then slows them alike, so their ratios hold where
    medians taken one after the other may not. A block of calls in a row keeps a microsecond-sized call's code
    warm, as a loop of it would be. ``clock`` reads the time (wall time by default; ``time.process_time`` gives
    the CPU time of the process, all its threads together). ``before()``, if given, runs ahead of every call,
    untimed (a barrier: each rank's call then starts with the other's, and its time is not its wait for the other
    rank to finish the call before)."""
    for fn in fns.values():
        for _ in range(warmup):
            if before is not None:
                before()
            fn()
    times: dict = {name: [] for name in fns}
    for _ in range(-(-repeats // block)):
        for name, fn in fns.items():
            ts = times[name]
            for _ in range(block):
                if before is not None:
                    before()
                t = clock()
                fn()
                ts.append(clock() - t)
    return {name: statistics.median(ts) for name, ts in times.items()}


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


def timed_apart(fns: dict, runs: int, cpu: bool, block: int = 1) -> dict:
    """``interleaved_medians`` of ``fns``; with ``cpu``, torch's (the entries whose name starts with "torch") are
    timed after the others, apart, then a pause. After each call torch's OpenMP threads spin on every core for a
    while, waiting for more work (measured on the lent machine: a NumPy 1024^3 matmul timed right after torch's
    took 11 ms instead of 1.8), which would slow whatever runs next."""
    apart = {name: fns.pop(name) for name in [n for n in fns if n.startswith("torch")]} if cpu else {}
    times = interleaved_medians(fns, runs, block=block)
    if apart:
        times.update(interleaved_medians(apart, runs, block=block))
        time.sleep(0.5)  # (the spinning stops: OpenMP's threads go to sleep)
    return times


def cell(seconds: float | None) -> str:
    """A time in 10 characters: microseconds below a millisecond (an item() row), else milliseconds; "-" for
    none."""
    if seconds is None:
        return f"{'-':>10}"
    return f"{seconds * 1e6:>8.1f}us" if seconds < 1e-3 else f"{seconds * 1e3:>8.3f}ms"
