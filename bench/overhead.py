"""Per-op overhead: 10,000 dependent scalar adds built and evaluated on the CPU stream, against NumPy eagerly.

The target: at most 4x NumPy (MLX's CPU stream costs about 8 us per op on the H100 host).
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
from _util import median_time, table  # noqa: E402

import umx as mx  # noqa: E402

N = 10_000


def main() -> None:
    a = mx.array(1.0)
    mx.eval(a)
    cpu = mx.cpu

    def umx_adds():
        x = a
        for _ in range(N):
            x = mx.add(x, 1.0, stream=cpu)
        mx.eval(x)

    def umx_build_only():
        x = a
        for _ in range(N):
            x = mx.add(x, 1.0, stream=cpu)
        return x

    def numpy_adds():
        x = np.array(1.0, np.float32)
        one = np.float32(1.0)
        for _ in range(N):
            x = np.add(x, one)

    def umx_item():
        mx.add(a, 1.0, stream=cpu).item()

    t_np = median_time(numpy_adds)
    t_mx = median_time(umx_adds)
    t_build = median_time(umx_build_only)
    t_item = median_time(umx_item, repeats=200, warmup=20)
    print(table(f"{N:,} dependent scalar adds", [
        ("NumPy eager", t_np, f"{t_np / N * 1e6:.2f} us/op"),
        ("umx build + eval (cpu)", t_mx, f"{t_mx / N * 1e6:.2f} us/op; target ratio <= 4"),
        ("umx build only", t_build, f"{t_build / N * 1e6:.2f} us/op"),
    ], baseline="NumPy eager"))
    print(f"\nscalar add + item() on the cpu stream: {t_item * 1e6:.1f} us")


if __name__ == "__main__":
    main()
