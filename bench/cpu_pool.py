"""The CPU pool's hand-offs: how long a split op takes after the pool's threads have idled, and whether threads
that spin a while before they sleep (as OpenMP's and OpenBLAS's do) would change a training step.

umx's pool (``runtime/threads.py``'s ``ChunkPool``): an idle thread sleeps at once, and on a VM its virtual core
may then be descheduled by the host, so that the next hand-off waits for it to be woken. Here the same split work
runs (a) back to back, (b) after the caller has slept or kept busy for a while; then the same with a pool whose
threads spin (``time.sleep(0)``, the GIL let go at each turn) for ``--spin`` seconds before they sleep, installed
in place of umx's for the run (``threads.map_chunks`` itself is unchanged).
Last, ``bench/train.py``'s CPU steps (eager) with each pool.

Prints two tables: split ops after gaps (median ms), and steps (median ms), each for both pools.

Usage: python bench/cpu_pool.py [--spin S] [--cases cnn,mlp] [--steps N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))
sys.path.insert(0, HERE)

import numpy as np  # noqa: E402
import train  # noqa: E402
from _util import median_time  # noqa: E402

import umx as mx  # noqa: E402
import umx.nn as nn  # noqa: E402
import umx.optimizers as optim  # noqa: E402
from umx.runtime import threads  # noqa: E402


class SpinningPool(threads.ChunkPool):
    """umx's chunk pool, except that an idle thread spins for ``spin`` seconds on the pool's splits
    (``time.sleep(0)``, the GIL let go at each turn) before it sleeps on them."""

    def __init__(self, spin: float):
        self.spin = spin
        super().__init__(max(threads.CORES - 1, 1))

    def idle(self) -> None:
        if not self.jobs:
            self.ready.release()  # (spin without the lock, which a post needs)
            try:
                until = time.perf_counter() + self.spin
                while not self.jobs and time.perf_counter() < until:
                    time.sleep(0)
            finally:
                self.ready.acquire()
        super().idle()


def _install(pool: SpinningPool | None) -> None:
    """Make ``pool`` the one behind ``threads.map_chunks`` (None: umx's own again)."""
    threads._chunk_pool[:] = _install.plain if pool is None else [pool]


_install.plain = [threads.chunk_pool()]  # (umx's own pool, made now if it was not yet)


def _median_ms(fn, gap, runs: int = 30) -> float:
    times = []
    for _ in range(runs):
        gap()
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times[3:]) * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--spin", type=float, default=2e-3, help="seconds a spinning thread spins (default 0.002)")
    ap.add_argument("--cases", default="cnn,mlp")
    ap.add_argument("--steps", type=int, default=7)
    args = ap.parse_args()
    x = mx.array(np.random.default_rng(0).standard_normal((128, 32, 32, 32), np.float32))
    mx.eval(x)
    busy = np.ones(1 << 16, np.float32)

    def keep_busy(seconds):
        t = time.perf_counter()
        while time.perf_counter() - t < seconds:
            np.multiply(busy, 1.0, out=busy)

    gaps = {"none": lambda: None, "sleep 0.2 ms": lambda: time.sleep(2e-4), "sleep 2 ms": lambda: time.sleep(2e-3),
            "sleep 20 ms": lambda: time.sleep(2e-2), "busy 2 ms": lambda: keep_busy(2e-3)}
    ops = {"no-op split": lambda: threads.map_chunks(lambda lo, hi: None, threads.bounds(threads.CORES, 1)),
           "Var (128,32,32,32)": lambda: mx.eval(mx.var(x, axis=(0, 1, 2), stream=mx.cpu))}
    spinning = SpinningPool(args.spin)
    rows = {}
    for pool in (None, spinning):
        _install(pool)
        for gname, gap in gaps.items():
            rows.setdefault(gname, []).extend(_median_ms(op, gap) for op in ops.values())
    _install(None)
    print(f"split ops after a gap, median ms ({threads.CORES} cores; spinning threads spin {args.spin * 1e3:g} ms)")
    heads = [f"{p} {o}" for p in ("umx", "spinning") for o in ops]
    print(f"{'gap':>14}" + "".join(f"  {h:>27}" for h in heads))
    for gname, values in rows.items():
        print(f"{gname:>14}" + "".join(f"  {v:27.3f}" for v in values))
    print(f"\ntraining steps (eager), median of {args.steps} ms")
    print(f"{'case':>6}  {'umx pool':>10}  {'spinning':>10}")
    for case in args.cases.split(","):
        sizes = train.FULL[case]
        step = train._mlx_api_steps((mx, nn, optim), case, sizes, train._data(case, sizes), mx.cpu)[""]
        medians = []
        for pool in (None, spinning):
            _install(pool)
            medians.append(median_time(step, args.steps) * 1e3)
        _install(None)
        print(f"{case:>6}  {medians[0]:10.2f}  {medians[1]:10.2f}", flush=True)


if __name__ == "__main__":
    main()
