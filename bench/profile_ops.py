"""Where a step's time goes, by primitive: a training step of ``bench/train.py``'s models, or a language model's
decode step or prompt prefill (``bench/llm.py``'s architecture), recorded with ``mx.trace`` and summed per
primitive on each lane.

Prints per case: the step's wall time (median of the timed steps, not traced), then for each lane the time its
ops took per step, grouped by primitive (GPU lanes are timed by CUDA events: the device's time, not the host's;
CPU lanes by the host clock, tracing's own cost included, so their shares matter more than their sums).

With ``--ops N``, also the N op signatures (primitive, input and output shapes) that took longest per step. With
``--graphs`` (GPU), also how each step's batches ran: replayed as CUDA graphs, captured, or op by op and why.
With ``--kernels N`` (GPU, torch importable), also the N CUDA kernels that took longest per step as CUPTI saw
them through ``torch.profiler`` (graph replays included), the device's busy time per step, and with ``--torch``
the same for torch's own step of the training cases. With ``--host N``, the N Python functions that took the
most host time per step (cProfile, own time), for a step bound by the host rather than the device; with
``--phases``, the host's time per phase of the step (replaying a compiled tape, planning, fusion's walk, a CUDA
graph's key and replay, waiting), by clocks around those functions, without cProfile's cost per call.

Usage: python bench/profile_ops.py [--cases lm,cnn,mlp,decode,prompt] [--device gpu|cpu] [--steps N] [--small]
       [--compiled] [--top N] [--ops N] [--graphs] [--kernels N [--torch]] [--host N] [--phases] [--no-graphs]
       [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import umx as mx  # noqa: E402
import umx.nn as nn  # noqa: E402
import umx.optimizers as optim  # noqa: E402


def _train_step(case: str, small: bool, compiled: bool, stream):
    import train

    sizes = (train.SMALL if small else train.FULL)[case]
    steps = train._mlx_api_steps((mx, nn, optim), case, sizes, train._data(case, sizes), stream)
    return steps[" compiled" if compiled else ""]


def _decode_step(small: bool, compiled: bool, stream):
    """One greedy decode token of a Llama model (random weights, bfloat16; ``bench/llm.py``'s 1.2B, or its tiny
    model with ``--small``) after a 512-token prompt (64 with ``--small``)."""
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    from examples.llm import PRESETS, fuse_projections, generate_step, random_model

    model = fuse_projections(random_model(PRESETS["tiny" if small else "1b"], mx.bfloat16, seed=0))
    prompt = mx.array(list(range(1, 65 if small else 513)), mx.int32)
    tokens = generate_step(prompt, model, max_tokens=256, compiled=compiled)  # (bench/llm.py's cache length)
    next(tokens)  # the prompt

    def run():
        with mx.stream(stream):
            next(tokens)

    return run


def _prompt_step(small: bool, stream):
    """One prefill of a 512-token prompt (64 with ``--small``) into a fresh cache: ``bench/llm.py``'s prompt
    processing, with the decode case's model."""
    from examples.llm import PRESETS, fuse_projections, random_model
    from examples.llm.cache import make_cache

    model = fuse_projections(random_model(PRESETS["tiny" if small else "1b"], mx.bfloat16, seed=0))
    prompt = mx.array(list(range(1, 65 if small else 513)), mx.int32)[None]

    def run():
        with mx.stream(stream):
            logits = model(prompt, cache=make_cache(len(model.layers)))
            mx.eval(mx.argmax(logits[:, -1, :], axis=-1))

    return run


def _by_primitive(data: dict, steps: int) -> list:
    """``[(lane, [(primitive, ms per step, count per step)])]`` from a trace of ``steps`` steps."""
    names = {}
    for ev in data["traceEvents"]:
        if ev.get("ph") == "M" and ev["name"] == "thread_name":
            names[(ev["pid"], ev["tid"])] = ev["args"]["name"]
    lanes: dict = {}
    for ev in data["traceEvents"]:
        if ev.get("ph") != "X" or ev.get("cat") not in ("op", "copy"):
            continue
        lane = names.get((ev["pid"], ev["tid"]), str(ev["tid"]))
        prim = ev["name"].split(" ")[0].split("(")[0] if ev.get("cat") == "op" else "copy"
        t, n = lanes.setdefault(lane, {}).get(prim, (0.0, 0))
        lanes[lane][prim] = (t + ev["dur"], n + 1)
    return [(lane, sorted(((p, t / 1e3 / steps, n / steps) for p, (t, n) in prims.items()), key=lambda r: -r[1]))
            for lane, prims in lanes.items()]


def _by_op(data: dict, steps: int) -> list:
    """``[(op signature, ms per step, count per step)]``, longest first, over every lane."""
    ops: dict = {}
    for ev in data["traceEvents"]:
        if ev.get("ph") == "X" and ev.get("cat") == "op":
            t, n = ops.get(ev["name"], (0.0, 0))
            ops[ev["name"]] = (t + ev["dur"], n + 1)
    return sorted(((k, t / 1e3 / steps, n / steps) for k, (t, n) in ops.items()), key=lambda r: -r[1])


def _graph_outcomes(run, steps: int) -> None:
    """Run ``steps`` steps with the GPU executor's graph cache watched; print how its batches ran, and why those
    that ran op by op did."""
    from collections import Counter

    from umx.backends.cuda import executor as cex
    from umx.backends.cuda import graphs

    outcomes: Counter = Counter()
    tasks_by: Counter = Counter()

    def why_not(tasks):
        if len(tasks) > graphs.MAX_TASKS:
            return f"over MAX_TASKS ({len(tasks)})"
        for i, t in enumerate(tasks):
            if type(t) is tuple and t[1] and i:
                return "a task past the first waits on another stream"
            n = t[0] if type(t) is tuple else t
            if type(n).__name__ == "Fused":
                continue
            if n._siblings is not None:
                return f"siblings: {type(n._prim).__name__}"
            if not graphs.capturable(n):
                return f"not capturable: {type(n._prim).__name__}"
        return "fewer than 2 nodes"

    def record(tasks, what):
        outcomes[what] += 1
        tasks_by[what] += len(tasks)

    real_batch = cex.CudaExecutor.run_batch

    def run_batch(self, tasks):
        st = dict(graphs.STATS.as_dict())
        programs = [n for n in (t[0] if type(t) is tuple else t for t in tasks)
                    if type(n).__name__ != "Fused" and type(n._prim).__name__ == "Compiled"]
        if programs:  # a compiled call as one node: its graph replays inside the batch (graphs.run_program)
            real_batch(self, tasks)
            new = graphs.STATS.as_dict()
            done = "replayed" if new["replays"] > st["replays"] else "op by op (first call, or refused)"
            record(tasks, f"compiled call, one node: {done}" if len(tasks) == 1 else
                   f"in parts around a compiled call (graphs.Graphs._run_parts): {done}")
            return None
        if len(tasks) < graphs.MIN_TASKS:
            record(tasks, "op by op: under MIN_TASKS")
        elif self.fetch_all:
            record(tasks, "op by op: fetch_all (after a spill)")
        elif graphs._plan(list(tasks)) is None:
            record(tasks, "op by op: " + why_not(tasks))
        elif type(graphs._plan(list(tasks))).__name__ == "_Cut":
            real_batch(self, tasks)
            record(tasks, "in parts around a task no graph holds (graphs.Graphs._run_parts)")
            return None
        else:
            key = graphs._plan(list(tasks))[0]
            entry = self._graphs.cache.get(key)
            tag = None if entry is None else type(entry).__name__
            real_batch(self, tasks)
            new = graphs.STATS.as_dict()
            if new["replays"] > st["replays"]:
                record(tasks, "replayed" + (" (captured now)" if new["captures"] > st["captures"] else ""))
            elif new["refusals"] > st["refusals"]:
                record(tasks, "op by op: capture refused")
            else:
                record(tasks, f"op by op: cache entry {tag}")
            return None
        return real_batch(self, tasks)

    cex.CudaExecutor.run_batch = run_batch
    try:
        for _ in range(steps):
            run()
        mx.synchronize()
    finally:
        cex.CudaExecutor.run_batch = real_batch
    print(f"\nbatches of {steps} steps (graph stats now: {graphs.STATS.as_dict()})")
    print("| outcome | batches/step | tasks/step |\n| --- | --- | --- |")
    for what, n in outcomes.most_common():
        print(f"| {what} | {n / steps:.1f} | {tasks_by[what] / steps:.1f} |")


def _kernels(run, steps: int, top: int, who: str) -> None:
    """Profile ``steps`` calls of ``run`` with CUPTI (through ``torch.profiler``); print the ``top`` kernels by
    device time per step and the device's busy time per step (kernels and copies, overlaps not merged)."""
    try:
        from torch.profiler import ProfilerActivity, profile
    except ImportError:
        print("(--kernels needs torch)")
        return
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(steps):
            run()
        mx.synchronize()
    kernels: dict = {}
    for ev in prof.events():
        if getattr(ev, "device_type", None) is None or "CUDA" not in str(ev.device_type):
            continue
        t, n = kernels.get(ev.name, (0.0, 0))
        kernels[ev.name] = (t + ev.time_range.elapsed_us(), n + 1)  # a device event: its own duration
    busy = sum(t for t, _ in kernels.values()) / 1e3 / steps
    print(f"\n{who}: {busy:.2f} ms of device work a step, {sum(n for _, n in kernels.values()) / steps:.0f} "
          "kernels and copies")
    print("| kernel | ms/step | calls/step | us each |\n| --- | --- | --- | --- |")
    for name, (t, n) in sorted(kernels.items(), key=lambda kv: -kv[1][0])[:top]:
        print(f"| {name[:110]} | {t / 1e3 / steps:.3f} | {n / steps:.0f} | {t / max(n, 1):.1f} |")


def _host(run, steps: int, top: int, who: str) -> None:
    """Profile ``steps`` calls of ``run`` with cProfile; print the ``top`` functions by own time per step: the
    caller's thread, and the batches that streams' workers ran on their own threads (a profile enabled around
    each ``WorkerExecutor.run`` off the caller's thread; the caller's inline batches are in its own table)."""
    import cProfile
    import pstats
    import threading

    from umx.runtime.executor import WorkerExecutor

    caller = threading.get_ident()
    workers = cProfile.Profile()
    real = WorkerExecutor.run

    def profiled(self, tasks, _real=real):
        if threading.get_ident() == caller:
            return _real(self, tasks)
        try:
            workers.enable()  # (one stream's worker at a time holds a profile: others run unprofiled meanwhile)
        except ValueError:  # (Python 3.12+: one profiler a process, the caller's, which sees every thread)
            return _real(self, tasks)
        try:
            return _real(self, tasks)
        finally:
            workers.disable()

    prof = cProfile.Profile()
    WorkerExecutor.run = profiled
    try:
        prof.enable()
        for _ in range(steps):
            run()
        mx.synchronize()
        prof.disable()
    finally:
        WorkerExecutor.run = real
    for label, p in (("caller's thread", prof), ("streams' worker threads", workers)):
        try:
            st = pstats.Stats(p)
        except TypeError:  # (nothing was recorded)
            continue
        rows = sorted(st.stats.items(), key=lambda kv: -kv[1][2])[:top]
        total = sum(v[2] for v in st.stats.values()) / steps * 1e3
        print(f"\n{who}, {label}: {total:.2f} ms of host time a step (cProfile's own times, its overhead included)")
        print("| function | ms/step | calls/step |\n| --- | --- | --- |")
        for (path, line, name), (_, calls, own, _, _) in rows:
            print(f"| {os.path.basename(path)}:{line} {name} | {own / steps * 1e3:.3f} | {calls / steps:.0f} |")


#: the host's phases of a step, as (label, module, owner class or None, attribute); inclusive times, so a
#: phase's time contains the phases it calls (eval contains the planning, which contains fusion)
PHASES = (
    ("replay a compiled tape (build nodes)", "umx.transforms._tape", "Tape", "__call__"),
    ("a compiled call as one node", "umx.transforms._tape", "Program", "__call__"),
    ("eval (all of it, waits included)", "umx.runtime.scheduler", None, "_evaluate"),
    ("  plan (collect, number, submit)", "umx.runtime.scheduler", None, "_plan"),
    ("    fusion's walk (collect)", "umx.runtime.scheduler", None, "collect"),
    ("    numbering (_number)", "umx.runtime.scheduler", None, "_number"),
    ("  GPU batch (run_batch)", "umx.backends.cuda.executor", "CudaExecutor", "run_batch"),
    ("    graph key (graphs._plan)", "umx.backends.cuda.graphs", None, "_plan"),
    ("    graph replay (_launch)", "umx.backends.cuda.graphs", "Graphs", "_launch"),
    ("    op by op (_run)", "umx.backends.cuda.executor", "CudaExecutor", "_run"),
    ("      a compiled call's graph (run_program)", "umx.backends.cuda.graphs", "Graphs", "run_program"),
    ("        lent arrays still held? (_may_overwrite)", "umx.backends.cuda.graphs", None, "_may_overwrite"),
    ("  a graph's replay (copies in, launch, out)", "umx.backends.cuda.graphs", None, "_replay"),
    ("    inputs copied in one launch (copy_list)", "umx.backends.cuda.graphs", None, "copy_list"),
    ("    values lent (_lend)", "umx.backends.cuda.graphs", None, "_lend"),
    ("  wait for the GPU (CudaExecutor.wait)", "umx.backends.cuda.executor", "CudaExecutor", "wait"),
)


def _phases(run, steps: int, who: str) -> None:
    """Time ``steps`` calls of ``run`` with the host phases of ``PHASES`` wrapped by a clock (one clock read per
    phase call, not per node: the step runs at nearly its own speed); print each phase's time per step."""
    import importlib

    spent: dict = {}
    calls: dict = {}
    undo = []
    for label, mod, owner, attr in PHASES:
        try:
            m = importlib.import_module(mod)
        except Exception:  # (the CUDA modules, without a GPU)
            continue
        target = getattr(m, owner) if owner else m
        real = getattr(target, attr)

        def timed(*a, _real=real, _label=label, **k):
            t0 = time.perf_counter()
            try:
                return _real(*a, **k)
            finally:
                spent[_label] = spent.get(_label, 0.0) + time.perf_counter() - t0
                calls[_label] = calls.get(_label, 0) + 1

        setattr(target, attr, timed)
        undo.append((target, attr, real))
    try:
        t0 = time.perf_counter()
        for _ in range(steps):
            run()
        mx.synchronize()
        wall = time.perf_counter() - t0
    finally:
        for target, attr, real in reversed(undo):
            setattr(target, attr, real)
    print(f"\n{who}: host phases, ms per step (inclusive; {wall / steps * 1e3:.2f} ms a step while timed)")
    print("| phase | ms/step | calls/step |\n| --- | --- | --- |")
    for label, *_ in PHASES:
        if label in spent:
            print(f"| {label} | {spent[label] / steps * 1e3:.3f} | {calls[label] / steps:.1f} |")


def _torch_train_step(case: str, small: bool):
    import torch
    import train

    from umx.backends.cuda import tf32_enabled

    # (float32 products at umx's precision, as bench/train.py sets them: TF32 unless MLX_ENABLE_TF32=0)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = tf32_enabled()

    sizes = (train.SMALL if small else train.FULL)[case]
    return train._torch_steps(torch, case, sizes, train._data(case, sizes), "gpu", False)["torch"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", default="lm,cnn,mlp,decode")
    ap.add_argument("--device", default="gpu")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--small", action="store_true", help="bench/train.py's small models, the tiny language model")
    ap.add_argument("--compiled", action="store_true", help="profile the mx.compile'd step")
    ap.add_argument("--top", type=int, default=14)
    ap.add_argument("--ops", type=int, default=0, help="also the N slowest op signatures")
    ap.add_argument("--graphs", action="store_true", help="also how the GPU batches ran (graphs or not)")
    ap.add_argument("--kernels", type=int, default=0, help="also the N longest CUDA kernels (CUPTI via torch)")
    ap.add_argument("--torch", action="store_true", help="with --kernels: torch's training steps too")
    ap.add_argument("--host", type=int, default=0, help="also the N functions of most host time (cProfile)")
    ap.add_argument("--phases", action="store_true", help="also the host's time per phase of a step (clocks)")
    ap.add_argument("--no-graphs", action="store_true", help="GPU batches op by op (no CUDA graph replays)")
    ap.add_argument("--keep", default=None, help="a folder to keep each case's trace in")
    args = ap.parse_args()
    stream = getattr(mx, args.device)
    if not mx.is_available(stream):
        print(f"no {args.device} here")
        return
    mx.set_default_device(stream)
    if args.no_graphs and args.device == "gpu":
        from umx.backends.cuda import graphs

        graphs.ENABLED = False  # (what a batch never seen before costs, every time)
    for case in args.cases.split(","):
        if case == "decode":
            run = _decode_step(args.small, args.compiled, stream)
        elif case == "prompt":  # (eager only: generation compiles the decode step, not the prefill)
            run = _prompt_step(args.small, stream)
        else:
            run = _train_step(case, args.small, args.compiled, stream)
        for _ in range(3):
            run()
        times = []
        for _ in range(args.steps):
            t0 = time.perf_counter()
            run()
            times.append(time.perf_counter() - t0)
        path = os.path.join(args.keep or tempfile.gettempdir(), f"umx-profile-{case}.json")
        with mx.trace(path):
            for _ in range(args.steps):
                run()
        with open(path) as f:
            data = json.load(f)
        if not args.keep:
            os.remove(path)
        kind = "compiled" if args.compiled else "eager"
        print(f"\n## {case} ({kind}, {args.device}): step {statistics.median(times) * 1e3:.2f} ms (median of "
              f"{args.steps}, untraced)")
        for lane, rows in _by_primitive(data, args.steps):
            total = sum(r[1] for r in rows)
            print(f"\n{lane}: {total:.2f} ms of ops a step, {sum(r[2] for r in rows):.0f} ops")
            print("| primitive | ms/step | ops/step | share |\n| --- | --- | --- | --- |")
            for p, t, n in rows[:args.top]:
                print(f"| {p} | {t:.3f} | {n:.0f} | {100 * t / max(total, 1e-9):.0f}% |")
        if args.ops:
            print("\n| op | ms/step | ops/step |\n| --- | --- | --- |")
            for p, t, n in _by_op(data, args.steps)[:args.ops]:
                print(f"| {p} | {t:.3f} | {n:.0f} |")
        if args.graphs and args.device == "gpu":
            _graph_outcomes(run, args.steps)
        if args.phases:
            _phases(run, args.steps, f"umx {case} ({kind})")
        if args.host:
            _host(run, args.steps, args.host, f"umx {case} ({kind})")
        if args.kernels and args.device == "gpu":
            _kernels(run, args.steps, args.kernels, f"umx {case} ({kind})")
            if args.torch and case not in ("decode", "prompt"):
                trun = _torch_train_step(case, args.small)
                for _ in range(3):
                    trun()
                _kernels(trun, args.steps, args.kernels, f"torch {case} (eager)")


if __name__ == "__main__":
    main()
