"""Two independent chains of heavy CPU work on two CPU streams against the same chains on one stream.

Each chain alternates 1M-element elementwise ops and 512^3 matmuls. BLAS is limited to one thread (set before
NumPy loads), so that the comparison measures umx's streams, not the BLAS library's own threads. The target on a
2-core machine: two streams take at most 0.7x the time of one.
"""

from __future__ import annotations

import os

for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(var, "1")

import sys  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
from _util import median_time, table  # noqa: E402

import umx as mx  # noqa: E402


def chain(x, m, stream, steps: int = 6):
    # Every op names the stream: an operator (`*`) would run on the default stream, tying the chains together.
    for _ in range(steps):
        x = mx.tanh(mx.exp(mx.multiply(x, 0.5, stream=stream), stream=stream), stream=stream)
        m = mx.multiply(mx.matmul(m, m, stream=stream), 1.0 / 512, stream=stream)
    return x, m


def main() -> None:
    rng = np.random.default_rng(0)
    xs = [mx.array(rng.standard_normal(1 << 20, dtype=np.float32)) for _ in range(2)]
    ms = [mx.array(rng.standard_normal((512, 512), dtype=np.float32)) for _ in range(2)]
    mx.eval(xs, ms)
    s1 = mx.default_stream(mx.cpu)
    s2 = mx.new_stream(mx.cpu)

    def one_stream():
        mx.eval(chain(xs[0], ms[0], s1), chain(xs[1], ms[1], s1))

    def two_streams():
        mx.eval(chain(xs[0], ms[0], s1), chain(xs[1], ms[1], s2))

    def numpy_eager():
        for x, m in ((np.asarray(xs[0]), np.asarray(ms[0])), (np.asarray(xs[1]), np.asarray(ms[1]))):
            for _ in range(6):
                x = np.tanh(np.exp(x * np.float32(0.5)))
                m = (m @ m) * np.float32(1 / 512)

    t1 = median_time(one_stream, repeats=7)
    t2 = median_time(two_streams, repeats=7)
    tn = median_time(numpy_eager, repeats=7)
    print(table(f"Two independent chains ({os.cpu_count()} cores, BLAS threads = 1)", [
        ("umx, one CPU stream", t1, "both chains in order"),
        ("umx, two CPU streams", t2, "target ratio <= 0.70"),
        ("NumPy eager, one thread", tn, "the same work by hand"),
    ]))
    print(f"\ntwo streams / one stream = {t2 / t1:.2f}")


if __name__ == "__main__":
    main()
