"""Large elementwise ops on the CPU, split into chunks that run on several cores."""

from __future__ import annotations

import numpy as np

from ..pool import MIN_BYTES, chunks, workers


def chunked_ufunc(ufunc: np.ufunc, fallback):
    """The kernel ``fn(prim, *args)`` of ``ufunc``: in parallel chunks for large same-shape contiguous inputs,
    else ``fallback(prim, *args)``."""

    def kernel(prim, *args):
        shape = big = None
        for a in args:
            if type(a) is np.ndarray:
                if shape is None:
                    shape, big = a.shape, a
                elif a.shape != shape:
                    return fallback(prim, *args)
                if not a.flags.c_contiguous:
                    return fallback(prim, *args)
            elif not isinstance(a, np.generic):
                return fallback(prim, *args)
        if big is None or big.nbytes < MIN_BYTES:
            return fallback(prim, *args)
        flat = [a.reshape(-1) if type(a) is np.ndarray else a for a in args]
        n = big.size
        probe = ufunc(*[f[:1] if type(f) is np.ndarray else f for f in flat])
        out = np.empty(n, probe.dtype)
        parts = chunks(n, out.itemsize)

        def run(part):
            s, e = part
            ufunc(*[f[s:e] if type(f) is np.ndarray else f for f in flat], out=out[s:e])

        futures = [workers().submit(run, p) for p in parts[1:]]
        run(parts[0])
        for f in futures:
            f.result()
        return out.reshape(shape)

    return kernel


def parallelize(table: dict) -> None:
    """Give the elementwise ufunc kernels in ``table`` their chunked form."""
    from ...primitives import BINARY, UNARY

    for prim in (*UNARY.values(), *BINARY.values()):
        fn = getattr(np, prim.fn, None) if prim.fn else None
        if isinstance(fn, np.ufunc) and fn.nout == 1:
            cls = type(prim)
            table[cls] = chunked_ufunc(fn, table[cls])
