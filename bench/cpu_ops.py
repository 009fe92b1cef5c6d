"""Where a CPU training step's time goes, op by op, untraced: ``bench/train.py``'s models on the CPU with each
kernel and fused region of the CPU executor wrapped in a clock.

``bench/profile_ops.py --device cpu`` records with ``mx.trace``, whose own cost distorts large CPU ops that are
cut over the cores; here nothing changes but clock reads around each kernel call. A fused region counts as one op
(the kernels it calls inside are not counted again). Prints, per case, the step's wall time (median of the timed
steps, clocks on), the sum of the ops' times (below the step: the planning and the Python around the ops are not
in it), and the ops that took longest per step, by signature (primitive, input shapes), each with the CPU time of
all the process's threads meanwhile (near cores x wall where an op keeps every core busy, near the wall where its
chunks wait) and the page faults it took (fresh memory its writes touch). With ``--alone``, each listed op is
also run again by itself, back to back on copies of the inputs it had in the step (median of ``--alone`` runs):
an op much slower in the step than alone is slowed by what surrounds it, not by its own work. ``--no-gc`` (Python's
collector off during the timed steps) and ``--switch-interval`` (``sys.setswitchinterval``) test two such causes.
``--threads`` lists the process's threads (Linux): the CPU time each took during the timed steps, and the cores
each may run on (a pool created by a thread held to few cores inherits that mask).

Usage: python bench/cpu_ops.py [--cases cnn,lm,mlp] [--steps N] [--warmup N] [--top N] [--small] [--alone N]
       [--no-gc] [--switch-interval S] [--threads]
"""

from __future__ import annotations

import argparse
import collections
import gc
import os
import resource
import statistics
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402
import train  # noqa: E402
from _util import median_time  # noqa: E402

import umx as mx  # noqa: E402
import umx.nn as nn  # noqa: E402
import umx.optimizers as optim  # noqa: E402
from umx.backends.cpu import executor  # noqa: E402


class Clocks:
    """Seconds and calls per op signature, while ``on``; copies of each op's inputs, while ``capture``; installed
    into the CPU executor's kernel table."""

    def __init__(self):
        self.on = False
        self.times: dict = collections.defaultdict(lambda: [0.0, 0, 0.0, 0])  # wall, calls, CPU time, faults
        self.replays: dict = {}  # op signature -> a call that runs it again on copies of its inputs (``capture``)
        self.capture = False
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
                elif self.capture and _region_name(f) not in self.replays:  # (a plain run: no donation)
                    leaves = [_copied(x) for x in args[0]]
                    self.replays[_region_name(f)] = lambda: run_fused(f, list(leaves), args[1])
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
            if (self.on or self.capture) and not self._in_region:
                key = f"{name} {' '.join(str(getattr(a, 'shape', '()')) for a in args)}"
                if self.on:
                    self._add(key, time.perf_counter() - t, u)
                elif key not in self.replays:
                    inputs = [_copied(a) for a in args]
                    self.replays[key] = lambda: kernel(prim, *inputs)
            return out

        return run

    def _add(self, key: str, seconds: float, before: tuple) -> None:
        cpu, faults = _usage()
        entry = self.times[key]
        entry[0] += seconds
        entry[1] += 1
        entry[2] += cpu - before[0]
        entry[3] += faults - before[1]


def _copied(x):
    return x.copy() if isinstance(x, np.ndarray) else x


def _tasks() -> dict:
    """``{thread id: (name, CPU seconds so far, allowed cores)}`` of this process's threads (Linux's /proc)."""
    out = {}
    tick = os.sysconf("SC_CLK_TCK")
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            with open(f"/proc/self/task/{tid}/comm") as f:
                name = f.read().strip()
            with open(f"/proc/self/task/{tid}/status") as f:
                cores = next((line.split(":", 1)[1].strip() for line in f if line.startswith("Cpus_allowed_list")),
                             "?")
        except OSError:  # (a thread that ended meanwhile)
            continue
        out[tid] = (name, (int(fields[11]) + int(fields[12])) / tick, cores)  # (utime, stime: fields 14, 15)
    return out


def _print_threads(before: dict, after: dict, steps: int) -> None:
    named = {str(t.native_id): t.name for t in threading.enumerate()}  # (Python's names: the kernel's are "python")
    rows = sorted(((a[1] - before.get(tid, (None, 0.0))[1], tid, named.get(tid, a[0]), a[2])
                   for tid, a in after.items()), reverse=True)
    print(f"  threads ({len(after)}): CPU ms per step, name, cores allowed")
    for cpu, tid, name, cores in rows:
        if cpu > 0 or len(rows) <= 24:
            print(f"  {cpu / steps * 1e3:9.1f}  {tid:>8}  {name:24s} {cores}")


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
    ap.add_argument("--alone", type=int, default=0, metavar="N",
                    help="also time each listed op alone, the median of N runs on copies of its step's inputs")
    ap.add_argument("--no-gc", action="store_true", help="Python's garbage collector off during the timed steps")
    ap.add_argument("--threads", action="store_true",
                    help="each thread's CPU time during the timed steps, and its allowed cores (Linux)")
    ap.add_argument("--switch-interval", type=float, default=None, metavar="S",
                    help="sys.setswitchinterval(S) for the run (Python's default: 0.005)")
    args = ap.parse_args()
    train.cpu_jit.WAIT = True  # (compiled CPU regions, where Numba is installed, compile in warm-up)
    if args.switch_interval is not None:
        sys.setswitchinterval(args.switch_interval)
    clocks = Clocks()
    clocks.install()
    for case in args.cases.split(","):
        sizes = (train.SMALL if args.small else train.FULL)[case]
        step = train._mlx_api_steps((mx, nn, optim), case, sizes, train._data(case, sizes), mx.cpu)[""]
        for _ in range(args.warmup):
            step()
        clocks.times.clear()
        clocks.replays.clear()
        if args.no_gc:
            gc.collect()
            gc.disable()
        tasks = _tasks() if args.threads else None
        clocks.on = True
        walls = []
        for _ in range(args.steps):
            t = time.perf_counter()
            step()
            walls.append(time.perf_counter() - t)
        clocks.on = False
        gc.enable()
        tasks_after = _tasks() if args.threads else None
        if args.alone:  # (one more step, untimed, keeps copies of each op's inputs)
            clocks.capture = True
            step()
            clocks.capture = False
        n = args.steps
        total = sum(e[0] for e in clocks.times.values()) / n
        print(f"\n{case}: step {statistics.median(walls) * 1e3:.1f} ms, ops {total * 1e3:.1f} ms "
              f"(the CPU, {os.cpu_count()} cores)")
        alone = f"  {'alone ms':>8}" if args.alone else ""
        print(f"{'ms/step':>9}  {'calls':>5}  {'CPU ms':>8}  {'faults':>6}{alone}  op")
        ranked = sorted(clocks.times.items(), key=lambda kv: -kv[1][0])[:args.top]
        for key, (seconds, calls, cpu, faults) in ranked:
            if args.alone:  # (per call, as the step's column is per step: one call each for most ops)
                replay = clocks.replays.get(key)
                alone = f"  {median_time(replay, args.alone, 1) * 1e3:8.3f}" if replay is not None else f"  {'-':>8}"
            print(f"{seconds / n * 1e3:9.2f}  {calls // n:5d}  {cpu / n * 1e3:8.2f}  {faults // n:6d}{alone}  "
                  f"{key[:120]}", flush=True)
        clocks.replays.clear()
        if args.threads:
            _print_threads(tasks, tasks_after, n)


if __name__ == "__main__":
    main()
