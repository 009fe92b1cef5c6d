"""Where a CPU training step's time goes, op by op, untraced: ``bench/train.py``'s models on the CPU with each
kernel and fused region of the CPU executor wrapped in a clock.

``bench/profile_ops.py --device cpu`` records with ``mx.trace``, whose own cost distorts large CPU ops that are
cut over the cores; here nothing changes but clock reads around each kernel call. A fused region counts as one op
(the kernels it calls inside are not counted again). Prints, per case, the step's wall time (median of the timed
steps, clocks on), the sum of the ops' times (below the step: the planning and the Python around the ops are not
in it), and the ops that took longest per step, by signature (primitive, input shapes), each with the CPU time of
all the process's threads meanwhile (near cores x wall where an op keeps every core busy, near the wall where its
chunks wait) and the page faults it took (fresh memory its writes touch).

Usage: python bench/cpu_ops.py [--cases cnn,lm,mlp] [--steps N] [--warmup N] [--top N] [--small]
"""

from __future__ import annotations

import argparse
import collections
import os
import resource
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import train  # noqa: E402

import umx as mx  # noqa: E402
import umx.nn as nn  # noqa: E402
import umx.optimizers as optim  # noqa: E402
from umx.backends.cpu import executor  # noqa: E402


class Clocks:
    """Seconds and calls per op signature, while ``on``; installed into the CPU executor's kernel table."""

    def __init__(self):
        self.on = False
        self.times: dict = collections.defaultdict(lambda: [0.0, 0, 0.0, 0])  # wall, calls, CPU time, faults
        self._in_region = False
        self._saved = None

    def install(self) -> None:
        run_fused = executor.run_fused
        self._saved = (run_fused, dict(executor.KERNELS))

        def fused(f, *args, **kwargs):
            self._in_region = True
            t, u = time.perf_counter(), _usage()
            try:
                return run_fused(f, *args, **kwargs)
            finally:
                if self.on:
                    self._add(_region_name(f), time.perf_counter() - t, u)
                self._in_region = False

        executor.run_fused = fused
        for cls, kernel in list(executor.KERNELS.items()):
            executor.KERNELS[cls] = self._wrap(cls.__name__, kernel)

    def uninstall(self) -> None:
        """Put the executor's own kernels back."""
        executor.run_fused, kernels = self._saved
        executor.KERNELS.update(kernels)

    def _wrap(self, name: str, kernel):
        def run(prim, *args):
            t, u = time.perf_counter(), _usage()
            out = kernel(prim, *args)
            if self.on and not self._in_region:
                self._add(f"{name} {' '.join(str(getattr(a, 'shape', '()')) for a in args)}",
                          time.perf_counter() - t, u)
            return out

        return run

    def _add(self, key: str, seconds: float, before: tuple) -> None:
        cpu, faults = _usage()
        entry = self.times[key]
        entry[0] += seconds
        entry[1] += 1
        entry[2] += cpu - before[0]
        entry[3] += faults - before[1]


def _usage() -> tuple:
    """``(CPU seconds of all the process's threads, page faults)`` so far."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime, r.ru_minflt + r.ru_majflt


def _region_name(f) -> str:
    steps = ",".join(type(prim).__name__ for prim, _ in f.program)
    return f"Fused({steps}) {' '.join(str(x._shape) for x in f.leaves)} -> {f.root._shape}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", default="cnn,lm,mlp")
    ap.add_argument("--steps", type=int, default=3, help="timed steps per case (default 3)")
    ap.add_argument("--warmup", type=int, default=3,
                    help="untimed steps first (default 3: on some VMs a step's first touches of fresh pages cost "
                         "10-100x for a few steps)")
    ap.add_argument("--top", type=int, default=20, help="ops listed per case (default 20)")
    ap.add_argument("--small", action="store_true", help="bench/train.py's small models")
    args = ap.parse_args()
    clocks = Clocks()
    clocks.install()
    for case in args.cases.split(","):
        sizes = (train.SMALL if args.small else train.FULL)[case]
        step = train._mlx_api_steps((mx, nn, optim), case, sizes, train._data(case, sizes), mx.cpu)[""]
        for _ in range(args.warmup):
            step()
        clocks.times.clear()
        clocks.on = True
        walls = []
        for _ in range(args.steps):
            t = time.perf_counter()
            step()
            walls.append(time.perf_counter() - t)
        clocks.on = False
        n = args.steps
        total = sum(e[0] for e in clocks.times.values()) / n
        print(f"\n{case}: step {statistics.median(walls) * 1e3:.1f} ms, ops {total * 1e3:.1f} ms "
              f"(the CPU, {os.cpu_count()} cores)")
        print(f"{'ms/step':>9}  {'calls':>5}  {'CPU ms':>8}  {'faults':>6}  op")
        ranked = sorted(clocks.times.items(), key=lambda kv: -kv[1][0])[:args.top]
        for key, (seconds, calls, cpu, faults) in ranked:
            print(f"{seconds / n * 1e3:9.2f}  {calls // n:5d}  {cpu / n * 1e3:8.2f}  {faults // n:6d}  {key[:130]}",
                  flush=True)


if __name__ == "__main__":
    main()
