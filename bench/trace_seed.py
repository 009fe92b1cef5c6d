"""Trace the seed's example (docs: unified memory) on one placement and draw its timeline.

    python bench/trace_seed.py --d1 cpu --d2 cpu2 -o docs/trace-seed-cpu-cpu2.png

Placements: ``cpu`` and ``gpu`` are the devices' default streams, ``cpu2`` and ``gpu2`` a second, new stream
on the device. ``a`` and ``b`` are evaluated first and the example runs once untraced (warm-up), so the
picture shows the example itself. Needs matplotlib (``pip install 'umx[plot]'``).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import umx as mx  # noqa: E402
from umx.trace import load  # noqa: E402
from umx.trace.plot import plot  # noqa: E402


def fun(a, b, d1, d2):
    x = mx.matmul(a, b, stream=d1)
    for _ in range(500):
        b = mx.exp(b, stream=d2)
    return x, b


def placement(name: str):
    device = mx.gpu if name.startswith("gpu") else mx.cpu
    return mx.new_stream(device) if name.endswith("2") else mx.default_stream(device)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    places = ["cpu", "cpu2", "gpu", "gpu2"]
    p.add_argument("--d1", default="cpu", choices=places, help="where the matmul runs")
    p.add_argument("--d2", default="cpu2", choices=places, help="where the exps run")
    p.add_argument("-o", "--output", default="timeline.png", help="the picture")
    p.add_argument("--json", default=None, help="also keep the trace file here")
    args = p.parse_args()
    d1, d2 = placement(args.d1), placement(args.d2)
    a = mx.random.uniform(shape=(4096, 512))
    b = mx.random.uniform(shape=(512, 4))
    mx.eval(a, b)
    mx.eval(fun(a, b, d1, d2))  # warm-up
    path = args.json or os.path.join(tempfile.mkdtemp(), "seed.json")
    with mx.trace(path):
        mx.eval(fun(a, b, d1, d2))
    data = load(path)
    ms = data["otherData"]["duration_us"] / 1e3
    plot(data, args.output, title=f"seed example, matmul on {args.d1}, 500 exps on {args.d2}: {ms:.2f} ms")
    print(f"wrote {args.output} ({ms:.2f} ms traced)")


if __name__ == "__main__":
    main()
