"""The benchmarks time what they say: bench/streams.py's chains run every op on the stream they are given (an
operator such as ``*`` would run on the default stream and tie the two chains together)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import umx as mx

BENCH = Path(__file__).resolve().parents[1] / "bench"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_each_stream_chain_stays_on_its_stream():
    streams = _load("streams")
    s = mx.new_stream(mx.cpu)
    x, m = mx.ones((8,)), mx.ones((4, 4))
    mx.eval(x, m)
    seen, stack = set(), list(streams.chain(x, m, s, steps=2))
    while stack:
        n = stack.pop()
        if id(n) in seen or n._prim is None:
            continue
        seen.add(id(n))
        assert n._stream is s, f"{n._prim!r} runs on {n._stream!r}, not on the chain's stream"
        stack.extend(n._inputs)
    assert len(seen) >= 8


def test_profile_phases_clock_the_host_and_put_the_functions_back(capsys):
    """``profile_ops --phases`` wraps the runtime's phases in clocks for a few steps, then restores them."""
    profile_ops = _load("profile_ops")
    from umx.runtime import scheduler
    from umx.transforms import _tape

    before = (scheduler._plan, scheduler.collect, _tape.Tape.__call__)
    w = mx.ones((4, 4))
    step = mx.compile(lambda x: mx.exp(x @ w) * 2 + 1)

    x = mx.ones((4, 4)) / 2

    def run():
        mx.eval(step(x))

    run()
    profile_ops._phases(run, 3, "test")
    out = capsys.readouterr().out
    for label in ("replay a compiled tape", "fusion's walk (collect)", "eval (all of it"):
        row = next(line for line in out.splitlines() if label in line)
        assert float(row.split("|")[2]) >= 0 and float(row.split("|")[3]) >= 1  # a time, at least one call a step
    assert (scheduler._plan, scheduler.collect, _tape.Tape.__call__) == before


def test_profile_host_tables_the_callers_functions_and_puts_the_executor_back(capsys):
    """``profile_ops --host`` profiles the caller's thread (and stream workers' batches), then restores
    ``WorkerExecutor.run``."""
    profile_ops = _load("profile_ops")
    from umx.runtime.executor import WorkerExecutor

    before = WorkerExecutor.run
    w = mx.ones((8, 8))

    def run():
        mx.eval(mx.exp(w @ w) + 1)

    run()
    profile_ops._host(run, 2, 5, "test")
    out = capsys.readouterr().out
    assert "test, caller's thread:" in out and "| function | ms/step | calls/step |" in out
    assert WorkerExecutor.run is before


def test_cpu_ops_clocks_kernels_and_regions_once_and_puts_them_back():
    """``bench/cpu_ops.py`` counts a fused region as one op (not its inner kernels) and restores the table."""
    cpu_ops = _load("cpu_ops")
    from umx.backends.cpu import executor

    before = (executor.run_fused, dict(executor.KERNELS))
    clocks = cpu_ops.Clocks()
    clocks.install()
    try:
        clocks.on = True
        x = mx.ones((512, 512), stream=mx.cpu)  # (large enough for a fused region of its own)
        mx.eval(x)
        mx.eval(mx.exp(mx.add(mx.multiply(x, 2, stream=mx.cpu), 1, stream=mx.cpu), stream=mx.cpu))
        mx.eval(mx.sum(x, axis=0, stream=mx.cpu))
    finally:
        clocks.uninstall()
    keys = list(clocks.times)
    assert any(k.startswith("Fused(Multiply,Add,Exp)") for k in keys), keys
    assert any(k.startswith("Sum (512, 512)") for k in keys), keys
    assert not any(k.startswith(("Multiply", "Exp")) for k in keys), keys  # (inside the region: not again)
    assert (executor.run_fused, dict(executor.KERNELS)) == before


def test_cpu_ops_replays_each_op_alone_on_copies_of_its_inputs():
    """``bench/cpu_ops.py --alone``: with ``capture`` on, each op keeps a call that runs it again, by itself, on
    copies of its inputs, and gives the value it gave in the step."""
    import numpy as np

    cpu_ops = _load("cpu_ops")
    clocks = cpu_ops.Clocks()
    clocks.install()
    try:
        clocks.capture = True
        x = mx.ones((512, 512), stream=mx.cpu)
        mx.eval(x)
        region = mx.exp(mx.add(mx.multiply(x, 2, stream=mx.cpu), 1, stream=mx.cpu), stream=mx.cpu)
        total = mx.sum(x, axis=0, stream=mx.cpu)
        mx.eval(region, total)
    finally:
        clocks.uninstall()
    assert not clocks.times  # (capturing is not timing)
    replays = {k.split(" ")[0]: f for k, f in clocks.replays.items()}
    np.testing.assert_array_equal(replays["Fused(Multiply,Add,Exp)"](), np.asarray(region))
    np.testing.assert_array_equal(replays["Sum"](), np.asarray(total))
    assert cpu_ops.median_time(replays["Sum"], 3, 1) > 0


def test_cpu_pool_spinning_pool_runs_every_chunk_and_puts_the_pool_back():
    """``bench/cpu_pool.py``'s spinning pool, installed behind ``threads.map_chunks``, returns each chunk's result
    in order and raises a chunk's error; ``_install(None)`` gives umx's own pool back."""
    import pytest

    from umx.runtime import threads

    cpu_pool = _load("cpu_pool")
    plain = threads.chunk_pool()
    spinning = cpu_pool.SpinningPool(1e-3)
    bounds = threads.bounds(4 * (spinning.threads + 1), 4)

    def fail(lo, hi):
        if lo:
            raise ValueError(f"chunk {lo}")
        return lo

    cpu_pool._install(spinning)
    try:
        assert threads.chunk_pool() is spinning
        assert threads.map_chunks(lambda lo, hi: (lo, hi), bounds) == bounds
        with pytest.raises(ValueError, match="chunk"):
            threads.map_chunks(fail, bounds)
        assert threads.map_chunks(lambda lo, hi: hi - lo, bounds) == [4] * len(bounds)
    finally:
        cpu_pool._install(None)
    assert threads.chunk_pool() is plain


def test_cpu_knobs_settings_change_what_they_name_and_conv_whole_keeps_results(monkeypatch, rng):
    """``bench/cpu_knobs.py``: each setting changes its knob; a convolution's windows gathered whole, or its
    blocks of at most 1 MiB, give the values the shipped budget's give."""
    import numpy as np

    from umx.backends.cpu import blas
    from umx.backends.cpu import fused as cpu_fused
    from umx.backends.cpu import kernels as cpu_kernels
    from umx.backends.xp import conv as xp_conv
    from umx.runtime import threads

    knobs = _load("cpu_knobs")
    for module, name in ((blas, "QUIET"), (blas, "GEMM_BY_CTYPES"), (cpu_kernels, "CONV_BUDGET"),
                         (cpu_kernels, "CONV_BUDGET_MAX"),
                         (threads, "CORES"), (threads, "CHUNK_BYTES"), (cpu_fused, "SPLIT_MIN_SIZE"),
                         (threads, "BLOCK_PER_CORE"), (xp_conv, "convolution")):
        monkeypatch.setattr(module, name, getattr(module, name))  # (put back after the test)
    x = mx.array(rng.standard_normal((64, 32, 32, 8)).astype(np.float32))  # (19 MB of windows: blocks differ)
    w = mx.array(rng.standard_normal((5, 3, 3, 8)).astype(np.float32))
    want = np.array(mx.conv2d(x, w, padding=1, stream=mx.cpu))
    for setting in ("conv1", "conv-whole"):
        knobs._apply(setting)
        np.testing.assert_allclose(np.array(mx.conv2d(x, w, padding=1, stream=mx.cpu)), want, rtol=1e-5, atol=1e-5)
    assert xp_conv.convolution.__name__ == "whole"
    for setting, module, name, value in (
            ("blas-own", blas, "QUIET", 0.0), ("blas-pool", blas, "QUIET", float("inf")),
            ("gemm-ctypes", blas, "GEMM_BY_CTYPES", True), ("gemm-ctypes-pool", blas, "QUIET", float("inf")),
            ("conv4", cpu_kernels, "CONV_BUDGET", 4 << 20), ("conv1", cpu_kernels, "CONV_BUDGET_MAX", 1 << 20),
            ("pool4", threads, "CORES", 4),
            ("block256", threads, "BLOCK_PER_CORE", 256 << 10), ("split128k", cpu_fused, "SPLIT_MIN_SIZE", 128 << 10),
            ("split256k", threads, "CHUNK_BYTES", 256 << 10), ("chunk512k", threads, "CHUNK_BYTES", 512 << 10)):
        knobs._apply(setting)
        assert getattr(module, name) == value, setting


def test_blas_threads_gemm_by_ctypes_is_the_product_and_rounds_run_every_thread(rng):
    """``bench/blas_threads.py``: its ctypes ``sgemm`` computes the product NumPy does, a round runs each
    thread's calls once per repeat, and speedups are over the one-thread rounds of the same turns."""
    import numpy as np
    import pytest

    bt = _load("blas_threads")
    sgemm = bt._cblas()
    if sgemm is None:
        pytest.skip("no OpenBLAS found")
    a = rng.standard_normal((40, 24)).astype(np.float32)
    b = rng.standard_normal((24, 16)).astype(np.float32)
    out = np.empty((40, 16), np.float32)
    sgemm(a, b, out)
    np.testing.assert_allclose(out, a.astype(np.float64) @ b, rtol=1e-5, atol=1e-5)
    calls = []
    wall, cpu = bt._round(calls.append, 3, 2)
    assert sorted(calls) == [0, 0, 1, 1, 2, 2] and wall > 0 and cpu >= 0
    cells = bt._speedups(lambda i: sum(range(2000)), [1, 2], 3, 3)  # (one thread is its own baseline)
    assert len(cells) == 2 and cells[0].startswith("1.0x / ")


def test_reduce_routes_each_sum_the_rows(monkeypatch, capsys):
    """``bench/reduce.py``'s routes of a batch norm's statistics: every route gives the column sums (checked on the
    routes' own functions), and the table prints a row each."""
    import numpy as np

    reduce = _load("reduce")
    sums = []

    def checked(fns, runs, clock=None):
        for fn in fns.values():
            got = fn()
            if got is not None:
                sums.append(np.asarray(got).reshape(-1))
        return {name: 1e-3 for name in fns}

    monkeypatch.setattr(reduce, "interleaved_medians", checked)
    reduce._routes(1)
    rows = [line for line in capsys.readouterr().out.splitlines() if "ms" in line]
    assert len(rows) >= 8
    want = np.random.default_rng(0).random((131072, 32), dtype=np.float32).sum(0, dtype=np.float64)
    assert len(sums) >= 12  # (both clocks)
    for s in sums:
        np.testing.assert_allclose(s, want, rtol=1e-4)
