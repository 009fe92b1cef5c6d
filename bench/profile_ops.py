"""Where a step's time goes, by primitive: a training step of ``bench/train.py``'s models, or a language model's
decode step (``bench/llm.py``'s architecture), recorded with ``mx.trace`` and summed per primitive on each lane.

Prints per case: the step's wall time (median of the timed steps, not traced), then for each lane the time its
ops took per step, grouped by primitive (GPU lanes are timed by CUDA events: the device's time, not the host's;
CPU lanes by the host clock, tracing's own cost included, so their shares matter more than their sums).

Usage: python bench/profile_ops.py [--cases lm,cnn,mlp,decode] [--device gpu|cpu] [--steps N] [--small] [--compiled]
       [--top N] [--keep DIR]
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
    from examples.llm import PRESETS, generate_step, random_model

    model = random_model(PRESETS["tiny" if small else "1b"], mx.bfloat16, seed=0)
    mx.eval(model.parameters())
    prompt = mx.array(list(range(1, 65 if small else 513)), mx.int32)
    tokens = generate_step(prompt, model, max_tokens=256, compiled=compiled)  # (bench/llm.py's cache length)
    next(tokens)  # the prompt

    def run():
        with mx.stream(stream):
            next(tokens)

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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", default="lm,cnn,mlp,decode")
    ap.add_argument("--device", default="gpu")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--small", action="store_true", help="bench/train.py's small models, the tiny language model")
    ap.add_argument("--compiled", action="store_true", help="profile the mx.compile'd step")
    ap.add_argument("--top", type=int, default=14)
    ap.add_argument("--keep", default=None, help="a folder to keep each case's trace in")
    args = ap.parse_args()
    stream = getattr(mx, args.device)
    if not mx.is_available(stream):
        print(f"no {args.device} here")
        return
    mx.set_default_device(stream)
    for case in args.cases.split(","):
        run = _decode_step(args.small, args.compiled, stream) if case == "decode" else \
            _train_step(case, args.small, args.compiled, stream)
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


if __name__ == "__main__":
    main()
