"""The eval planner's cost per node: building a graph, planning it (walk, fusion, numbering) and evaluating it.

Two graphs on the CPU stream: the seed's 500 times ``b = exp(b)`` (b: 512x4 float32; its matmul left out: one
node, whose run would hide the planner's time), and
10,000 dependent scalar adds. Each is timed as: building the graph, planning it (``_plan`` under the plan lock,
the batch then run outside the timer), and ``eval`` as a whole (build excluded); the table shows microseconds per
node, median and minimum of many runs.

Usage: python bench/plan.py [--runs N] [--root DIR]  (``--root``: import umx from another checkout, to compare)
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def _timed(fn, runs: int, warmup: int = 5) -> tuple:
    """(median, min) seconds of ``fn()``, which returns the seconds it measured itself."""
    for _ in range(warmup):
        fn()
    times = [fn() for _ in range(runs)]
    return statistics.median(times), min(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=300)
    ap.add_argument("--root", default=os.path.dirname(HERE))
    args = ap.parse_args()
    sys.path.insert(0, os.path.abspath(args.root))

    import numpy as np

    import umx as mx
    from umx.runtime import scheduler

    cpu = mx.cpu
    b0 = mx.array(np.random.default_rng(1).random((512, 4), dtype=np.float32))
    one = mx.array(1.0)
    mx.eval(b0, one)

    def chain():
        b = b0
        for _ in range(500):
            b = mx.exp(b, stream=cpu)
        return [b]

    def adds():
        y = one
        for _ in range(10_000):
            y = mx.add(y, 1.0, stream=cpu)
        return [y]

    def build(make):
        def run():
            t = time.perf_counter()
            out = make()
            dt = time.perf_counter() - t
            mx.eval(out)
            return dt
        return run

    def plan(make):
        def run():
            targets = make()
            with scheduler._plan_lock:
                t = time.perf_counter()
                mine = scheduler._plan(targets, True)
                dt = time.perf_counter() - t
            if mine is not None:
                ex, tasks = mine
                ex.run_inline(tasks)
            mx.eval(targets)  # waits for the batches that went to the workers
            return dt
        return run

    def evaluate(make):
        def run():
            targets = make()
            t = time.perf_counter()
            mx.eval(targets)
            return time.perf_counter() - t
        return run

    print(f"umx from {os.path.dirname(os.path.abspath(mx.__file__))}; fusion {'on' if scheduler.FUSION else 'off'}")
    print(f"{'graph':<22}{'step':<8}{'median us/node':>16}{'min us/node':>14}")
    for name, make, nodes, runs in (("500 exp (512x4)", chain, 500, args.runs),
                                    ("10k scalar adds", adds, 10_000, max(args.runs // 20, 5))):
        for step, fn in (("build", build), ("plan", plan), ("eval", evaluate)):
            med, lo = _timed(fn(make), runs)
            print(f"{name:<22}{step:<8}{med / nodes * 1e6:>16.3f}{lo / nodes * 1e6:>14.3f}")


if __name__ == "__main__":
    main()
