"""The CUDA backend: every op gives the CPU's results on the GPU, and the GPU's devices, streams and memory.

Parity tests run each op on the CPU stream and on every available device, comparing with the CPU (float32
tolerance); without a GPU they still run on the CPU's two streams. GPU-only tests skip with a reason.
"""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import assert_close

import umx as mx
from umx.ops.elementwise import _BINARY_NAMES, _UNARY_NAMES

needs_gpu = pytest.mark.skipif(not mx.is_available(mx.gpu), reason="no CUDA GPU (CuPy and a device)")

_INT_ONLY = {"bitwise_invert"}
_INT_BINARY = {"bitwise_and", "bitwise_or", "bitwise_xor", "left_shift", "right_shift"}


def _unary_input(name: str, rng):
    if name in _INT_ONLY:
        return rng.integers(-50, 50, (4, 5)).astype(np.int32)
    x = rng.uniform(-0.9, 0.9, (4, 5)).astype(np.float32)
    if name in ("arccosh",):
        x = 1.5 + np.abs(x)
    if name in ("isnan", "isinf", "isfinite", "isposinf", "isneginf"):
        x[0, :3] = [np.nan, np.inf, -np.inf]
    return x


@pytest.mark.parametrize("name", sorted(_UNARY_NAMES))
def test_unary_matches_cpu(name, device, rng):
    x = mx.array(_unary_input(name, rng))
    fn = getattr(mx, name)
    assert_close(fn(x, stream=device), np.asarray(fn(x, stream=mx.cpu)), rtol=2e-6, atol=1e-6)


@pytest.mark.parametrize("name", sorted(_BINARY_NAMES))
def test_binary_matches_cpu(name, device, rng):
    if name in _INT_BINARY:
        a = rng.integers(0, 50, (4, 5)).astype(np.int32)
        b = rng.integers(0, 5, (5,)).astype(np.int32)
    else:
        a = rng.uniform(0.5, 2.0, (4, 5)).astype(np.float32)
        b = rng.uniform(0.5, 2.0, (5,)).astype(np.float32)
    fn = getattr(mx, name)
    for x, y in ((mx.array(a), mx.array(b)), (mx.array(a), 3), (2, mx.array(b))):
        assert_close(fn(x, y, stream=device), np.asarray(fn(x, y, stream=mx.cpu)), rtol=2e-6, atol=1e-6)


def test_scalars_only_on_device(device):
    """Ops whose inputs are all constants (NumPy scalars) still run on a GPU stream."""
    assert_close(mx.add(mx.array(1.5), 2.0, stream=device), np.float32(3.5))
    assert_close(mx.exp(mx.array(0.0), stream=device), np.float32(1.0))
    assert_close(mx.sum(mx.array(2.0), stream=device), np.float32(2.0))


def test_other_kernels_match_cpu(device, rng):
    x = rng.standard_normal((3, 4, 5)).astype(np.float32)
    a = mx.array(x)
    cases = [
        lambda s: mx.where(mx.greater(a, 0, stream=s), a, -1.0, stream=s),
        lambda s: mx.round(a, 2, stream=s),
        lambda s: mx.clip(a, -0.5, 0.5, stream=s),
        lambda s: mx.sum(a, axis=(0, 2), stream=s),
        lambda s: mx.prod(a, axis=-1, keepdims=True, stream=s),
        lambda s: mx.mean(a, stream=s),
        lambda s: mx.min(a, axis=1, stream=s),
        lambda s: mx.all(mx.greater(a, -5, stream=s), axis=0, stream=s),
        lambda s: mx.any(mx.greater(a, 1, stream=s), stream=s),
        lambda s: mx.argmin(a, axis=-1, stream=s),
        lambda s: mx.std(a, axis=1, ddof=1, stream=s),
        lambda s: mx.logsumexp(a, axis=(1, 2), stream=s),
        lambda s: mx.softmax(a, axis=-1, stream=s),
        lambda s: mx.matmul(a, mx.transpose(a, (0, 2, 1), stream=s), stream=s),
        lambda s: mx.reshape(a, (4, 15), stream=s),
        lambda s: mx.moveaxis(a, 0, -1, stream=s),
        lambda s: mx.concatenate([a, a], axis=1, stream=s),
        lambda s: mx.stack(mx.split(a, [1, 3], axis=2, stream=s)[1:], stream=s),
        lambda s: mx.view(a, mx.int32, stream=s),
        lambda s: mx.astype(a, mx.bfloat16, stream=s),
        lambda s: mx.astype(a, mx.float16, stream=s),
        lambda s: mx.arange(0, 5, 0.5, stream=s),
        lambda s: mx.linspace(-1, 1, 7, stream=s),
        lambda s: mx.eye(4, 5, 1, stream=s),
        lambda s: mx.full((2, 3), 7, mx.int32, stream=s),
        lambda s: mx.erf(a, stream=s),
        lambda s: mx.erfinv(mx.multiply(mx.tanh(a, stream=s), 0.99, stream=s), stream=s),
        lambda s: mx.sigmoid(a, stream=s),
        lambda s: mx.rsqrt(mx.abs(a, stream=s), stream=s),
        lambda s: a[1:, ::2, mx.array([0, 3])],
        lambda s: mx.random.normal((100,), key=mx.random.key(3), stream=s),
        lambda s: mx.random.bits((50,), key=mx.random.key(4), stream=s),
    ]
    for i, case in enumerate(cases):
        got, want = case(device), np.asarray(case(mx.cpu))
        try:
            assert_close(got, want, rtol=1e-5, atol=1e-5)
        except AssertionError as e:
            raise AssertionError(f"case {i}: {e}") from None


@pytest.mark.parametrize("op", ["add", "maximum", "minimum", None])
def test_scatter_matches_cpu(device, op, rng):
    x = rng.standard_normal((6, 3)).astype(np.float32)
    v = rng.standard_normal((4, 3)).astype(np.float32)
    idx = mx.array(np.array([1, 4, 1, 0], np.int32))

    def run(s):
        a = mx.multiply(mx.array(x), 1.0, stream=s)
        at = a.at[idx]
        return getattr(at, op)(mx.array(v)) if op else _set(a, idx, mx.array(v))

    got = run(device)
    want = x.copy()
    if op:
        getattr(np, op).at(want, [1, 4, 1, 0], v)
        assert_close(got, want)
    else:
        want[[4, 0]] = v[[1, 3]]
        assert_close(got[mx.array([0, 4, 2, 3, 5])], want[[0, 4, 2, 3, 5]])


def _set(a, idx, v):
    a[idx] = v
    return a


@needs_gpu
def test_default_device_is_gpu():
    assert mx.default_device() == mx.Device(mx.gpu, 0)
    assert mx.default_stream(mx.gpu).device == mx.Device(mx.gpu, 0)


@needs_gpu
def test_every_gpu_is_a_device(rng):
    x = rng.standard_normal((8,)).astype(np.float32)
    results = []
    for i in range(mx.device_count(mx.gpu)):
        dev = mx.Device(mx.gpu, i)
        assert mx.is_available(dev)
        assert "device_name" in mx.device_info(dev)
        results.append(mx.exp(mx.array(x), stream=dev))
    prev = None
    for r in results:  # a chain across GPUs, too
        prev = r if prev is None else mx.add(prev, r, stream=mx.default_stream(mx.gpu))
    assert_close(prev, np.exp(x) * len(results), rtol=1e-5)
    assert not mx.is_available(mx.Device(mx.gpu, mx.device_count(mx.gpu)))


@needs_gpu
def test_new_gpu_streams_run_in_parallel_correctly(rng):
    streams = [mx.new_stream(mx.gpu) for _ in range(3)]
    assert len({s.executor.cuda_stream.ptr for s in streams}) == 3
    x = rng.standard_normal((1 << 16,)).astype(np.float32)
    a = mx.array(x)
    outs = [mx.multiply(mx.add(a, float(i), stream=s), 2.0, stream=s) for i, s in enumerate(streams)]
    total = mx.add(mx.add(outs[0], outs[1]), outs[2])
    assert_close(total, ((x + 0) + (x + 1) + (x + 2)) * 2, rtol=1e-5)


@needs_gpu
def test_gpu_memory_statistics():
    mx.synchronize()
    a = mx.add(mx.arange(1 << 20, dtype=mx.float32, stream=mx.gpu), 1.0, stream=mx.gpu)
    mx.eval(a)
    nbytes = a.nbytes
    with_a = mx.get_active_memory()
    mx.reset_peak_memory()
    assert mx.get_peak_memory() == 0
    mx.eval(mx.add(a, 1.0, stream=mx.gpu))  # (a sample after a batch: the usage then, a still held)
    assert mx.get_peak_memory() >= with_a - 4096
    del a
    gc.collect()
    # (measured as the drop when a goes: arrays of earlier tests may be freed at any time in between)
    assert with_a - mx.get_active_memory() >= nbytes - 4096
    mx.clear_cache()
    assert mx.get_cache_memory() >= 0
    prev = mx.set_memory_limit(1 << 40)
    assert mx.set_memory_limit(prev) == 1 << 40


@needs_gpu
def test_gpu_result_read_many_ways(rng):
    x = rng.standard_normal((3, 2)).astype(np.float32)
    a = mx.multiply(mx.array(x), 2.0, stream=mx.gpu)
    assert a.tolist() == (x * 2).tolist()
    assert_close(np.array(a), x * 2)
    assert float(mx.sum(a, stream=mx.gpu).item()) == pytest.approx(float((x * 2).sum()), rel=1e-5)
    assert "array(" in repr(a)


def test_large_elementwise_matches_numpy(device, rng):
    """Large enough for the CPU's parallel chunks and the GPU's chunked staging."""
    x = rng.standard_normal((3, 1 << 19)).astype(np.float32)
    y = rng.standard_normal((3, 1 << 19)).astype(np.float32)
    a, b = mx.array(x), mx.array(y)
    assert_close(mx.add(a, b, stream=device), x + y)
    assert_close(mx.multiply(2.0, a, stream=device), 2 * x)
    assert_close(mx.greater(a, b, stream=device), x > y)
    assert_close(mx.exp(mx.transpose(a, stream=device), stream=device), np.exp(x.T), rtol=1e-6)


@needs_gpu
def test_user_cupy_stream_untouched(rng):
    """Reading GPU results on the caller's thread leaves the caller's CuPy device and stream as they were."""
    import cupy

    s = cupy.cuda.Stream(non_blocking=True)
    s.use()
    try:
        a = mx.multiply(mx.transpose(mx.array(rng.standard_normal((3, 4)).astype(np.float32))), 2.0)
        np.asarray(a)
        assert cupy.cuda.get_current_stream() == s
    finally:
        cupy.cuda.Stream.null.use()


@needs_gpu
def test_small_reads_wait_for_long_kernels(rng):
    """A small result (one copy on its stream, no event) read right after a long kernel it depends on."""
    x = rng.standard_normal((2048, 2048)).astype(np.float32)
    a = mx.array(x)
    y = a
    for _ in range(3):
        y = mx.matmul(y, a, stream=mx.gpu)
        y = mx.multiply(y, 1 / 64, stream=mx.gpu)
    corner = y[:2, :3]
    ref = x.astype(np.float64)
    for _ in range(3):
        ref = ref @ x / 64
    assert_close(corner, ref[:2, :3], rtol=1e-3, atol=1e-3)
    assert mx.sum(y, stream=mx.gpu).item() == pytest.approx(ref.sum(), rel=1e-3, abs=1e-2)


@needs_gpu
def test_inline_gpu_batches_leave_the_callers_cupy_state(rng):
    """eval runs an idle GPU stream's batch on the caller's thread: the caller's CuPy stream and allocator stay."""
    import cupy

    s = cupy.cuda.Stream(non_blocking=True)
    s.use()
    try:
        before = cupy.get_default_memory_pool().used_bytes()
        a = mx.add(mx.array(rng.standard_normal(1 << 16).astype(np.float32)), 1.0, stream=mx.gpu)
        mx.eval(a)
        assert cupy.cuda.get_current_stream() == s
        assert cupy.get_default_memory_pool().used_bytes() == before  # umx's pool, not the user's
    finally:
        cupy.cuda.Stream.null.use()


@needs_gpu
def test_a_view_read_by_the_cpu_is_made_contiguous_on_its_own_stream(rng):
    """A strided view made by an idle GPU stream (launched on the caller's thread) and read by a CPU op is made
    contiguous before its copy to the host: on the GPU stream, whatever the caller's CuPy stream is doing. (The
    copy kernel once went on the caller's stream: behind a long kernel there, the host read the buffer before it
    was written.)"""
    import cupy

    s = cupy.cuda.Stream(non_blocking=True)
    s.use()
    try:
        busy = cupy.ones((4096, 4096), cupy.float32)
        for _ in range(3):
            x = rng.standard_normal((6, 5, 7)).astype(np.float32)
            a = mx.add(mx.array(x), 0.0, stream=mx.gpu)
            mx.eval(a)
            for _ in range(8):  # (milliseconds of work queued on the caller's stream)
                busy = busy @ busy * (1 / 4096)
            got = mx.exp(a[::-1, :, ::-2], stream=mx.cpu)
            np.testing.assert_allclose(np.asarray(got), np.exp(x[::-1, :, ::-2]), rtol=1e-6)
            assert cupy.cuda.get_current_stream() == s
        s.synchronize()
    finally:
        cupy.cuda.Stream.null.use()


@needs_gpu
def test_a_transpose_of_evaluated_gpu_data_is_a_view_ordered_after_its_kernel(rng):
    """``w.T`` of evaluated GPU data is made at once (no node, no task: a weight's transpose in every eager step),
    and readers on another GPU stream and on the CPU wait for the kernel that makes ``w``, still running when the
    view is made."""
    x = rng.standard_normal((512, 384)).astype(np.float32)
    other = mx.new_stream(mx.gpu)
    for reader in (other, mx.cpu, mx.gpu):
        big = mx.ones((4096, 4096), stream=mx.gpu)
        for _ in range(6):  # (milliseconds of work ahead of w's kernel on its stream)
            big = mx.matmul(big, big, stream=mx.gpu) * (1 / 4096)
        w = mx.add(mx.array(x), mx.sum(big, stream=mx.gpu) * 0, stream=mx.gpu)
        mx.async_eval(w)
        while w._data is None:  # (set once its kernel is enqueued, while it may wait behind the products)
            time.sleep(1e-4)
        t = w.T
        assert t._prim is None and t._inputs == ()
        got = mx.exp(t, stream=reader)
        np.testing.assert_allclose(np.asarray(got), np.exp(x.T), rtol=1e-6)
    w = mx.add(mx.array(x), 1.0, stream=mx.gpu)
    mx.eval(w)
    np.testing.assert_allclose(np.asarray(mx.matmul(mx.array(x[:4]), mx.transpose(w), stream=mx.gpu)),
                               x[:4] @ (x + 1).T, rtol=1e-4, atol=1e-3)


@needs_gpu
@pytest.mark.parametrize("shape", [(1, 1), (1,), ()])
def test_one_element_host_inputs_keep_their_shape_through_cupy_kernels(shape):
    """The lane passes a one-element host input to an elementwise kernel as a constant; where umx's own kernel does
    not apply (a cast to complex), CuPy's kernel of constants alone gave a scalar, and a (1, 1) array held data of
    shape () (a CPU reader then failed)."""
    x = np.full(shape, 2.5, np.float32)
    z = mx.array(x).astype(mx.complex64, stream=mx.gpu)
    np.testing.assert_array_equal(np.asarray(z), x.astype(np.complex64))
    assert tuple(np.asarray(z).shape) == shape
    if shape:
        got = mx.slice_update(mx.zeros((2,) + shape[1:], mx.complex64), z, mx.array(1), (0,), stream=mx.cpu)
        want = np.zeros((2,) + shape[1:], np.complex64)
        want[1:] = x
        np.testing.assert_array_equal(np.asarray(got), want)


@needs_gpu
def test_large_round_trips_stream_their_copies_and_stay_exact(rng):
    """20 MiB arrays: the GPU's results reach the CPU in parts (each CPU chunk starts when its bytes land) and
    the CPU's results reach the GPU chunk by chunk as they are written; every value exact."""
    x = rng.random(5 << 20, dtype=np.float32)
    a = mx.multiply(mx.array(x), 2.0, stream=mx.gpu)
    b = mx.add(a, 1.0, stream=mx.cpu)
    c = mx.multiply(b, 3.0, stream=mx.gpu)
    d = mx.subtract(c, 1.0, stream=mx.cpu)
    np.testing.assert_array_equal(np.asarray(d), (x * 2 + 1) * 3 - 1)
    np.testing.assert_array_equal(np.asarray(c), (x * 2 + 1) * 3)
    # a CPU region that cannot split (a broadcast input) waits for the whole copy
    e = mx.add(mx.reshape(a, (5, 1 << 20), stream=mx.gpu), mx.array(np.arange(5, dtype=np.float32)[:, None]),
               stream=mx.cpu)
    np.testing.assert_array_equal(np.asarray(e), (x * 2).reshape(5, -1) + np.arange(5, dtype=np.float32)[:, None])


@pytest.mark.skipif(not mx.is_available(mx.gpu) or mx.device_count(mx.gpu) < 2, reason="needs two CUDA GPUs")
def test_two_gpus_exchange_large_results_both_ways(rng):
    """Large results made on each GPU read by the other (through the host, copied once per device), streams on
    both running at once, fused regions on each, and a CPU stream in between; every value exact."""
    g0, g1 = mx.Device(mx.gpu, 0), mx.Device(mx.gpu, 1)
    x = rng.random(1 << 22, dtype=np.float32)
    a = mx.multiply(mx.array(x), 2.0, stream=g0)
    b = mx.add(mx.multiply(a, 3.0, stream=g1), 1.0, stream=g1)  # gpu0 -> gpu1
    c = mx.subtract(b, a, stream=g0)  # gpu1 -> gpu0, and a again
    d = mx.multiply(c, 0.5, stream=mx.cpu)
    e = mx.add(d, b, stream=mx.new_stream(g1))
    want_b = x * 2 * 3 + 1
    want_c = want_b - x * 2
    np.testing.assert_array_equal(np.asarray(e), want_c * 0.5 + want_b)
    np.testing.assert_array_equal(np.asarray(c), want_c)
    assert mx.sum(e, stream=g1).item() == pytest.approx(float((want_c * 0.5 + want_b).sum(dtype=np.float64)),
                                                        rel=1e-4)
    # the caller's CUDA state is its own: still on device 0 (a CPU batch ran inline here and sent parts to gpu1)
    import cupy

    assert cupy.cuda.runtime.getDevice() == 0
    # and the memory statistics see both devices' pools
    assert mx.get_active_memory() >= a.nbytes + b.nbytes


@needs_gpu
def test_eval_returns_when_the_gpu_work_is_done(rng):
    """eval waits for the kernels, not only for their launch (a GPU node's data is set once it is enqueued)."""
    s = mx.new_stream(mx.gpu)
    a = mx.array(rng.standard_normal((2048, 2048)).astype(np.float32))
    y = a
    for _ in range(4):
        y = mx.matmul(y, a, stream=s)
    mx.eval(y)
    assert y._exec.cuda_stream.done  # nothing of it is still running on the stream


@needs_gpu
@pytest.mark.parametrize("rows", [1, 3, 4, 5])
@pytest.mark.parametrize("n,k", [(200, 256), (2050, 64), (8193, 136), (64, 12), (3, 4104)])
def test_bfloat16_products_of_a_few_rows_by_a_linear_weight(rng, rows, n, k, monkeypatch):
    # x @ w.T of a decode step: umx's matvec kernel for up to 4 rows (K a multiple of 8, weight rows of odd
    # counts, 2 or 4 per block), cuBLAS beyond; float32 sums rounded once, within bfloat16's rounding of float64
    from umx.backends.cuda import matvec

    monkeypatch.setattr(matvec, "ENABLED", True)  # (as by default; UMX_OWN_MATVEC=0 turns it off)
    x = mx.array(rng.standard_normal((rows, k)).astype(np.float32)).astype(mx.bfloat16)
    w = mx.array((rng.standard_normal((n, k)) * 0.1).astype(np.float32)).astype(mx.bfloat16)
    want = np.asarray(x.astype(mx.float32), np.float64) @ np.asarray(w.astype(mx.float32), np.float64).T
    calls = matvec._kernel.cache_info().misses + matvec._kernel.cache_info().hits
    got = mx.matmul(x, w.T, stream=mx.gpu)
    mx.eval(got)
    used = matvec._kernel.cache_info().misses + matvec._kernel.cache_info().hits > calls
    assert got.dtype == mx.bfloat16 and used == (rows <= 4 and k % 8 == 0)
    assert_close(got, want, 1e-2, 1e-2)
    # a weight stored (K, N): cuBLAS, the same values
    assert_close(mx.matmul(x, mx.contiguous(w.T), stream=mx.gpu), want, 1e-2, 1e-2)


_TF32_PROBE = """
import numpy as np, cupy, umx as mx
rng = np.random.default_rng(0)
a = rng.standard_normal((4, 256, 1024), dtype=np.float32)
b = rng.standard_normal((4, 1024, 256), dtype=np.float32)
want = a.astype(np.float64) @ b.astype(np.float64)
for got in (np.array(mx.matmul(mx.array(a[0]), mx.array(b[0]), stream=mx.gpu)),
            np.array(mx.matmul(mx.array(a), mx.array(b), stream=mx.gpu))[0]):
    print(float(np.abs(got - want[0]).max() / np.abs(want[0]).max()), end=" ")
print(cupy.cuda.Device().compute_capability)
"""


@needs_gpu
@pytest.mark.parametrize("setting", [None, "0", "1"])
def test_float32_products_follow_mlx_enable_tf32(setting):
    """MLX's rule: float32 products (one matrix, a batch) run as TF32 unless ``MLX_ENABLE_TF32=0``; full float32
    then (the rest of this suite runs so: see conftest.py)."""
    env = {k: v for k, v in os.environ.items() if k != "MLX_ENABLE_TF32"}
    if setting is not None:
        env["MLX_ENABLE_TF32"] = setting
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    done = subprocess.run([sys.executable, "-c", _TF32_PROBE], env={**env, "PYTHONPATH": root}, cwd=root,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    *errors, capability = done.stdout.split()
    errors = [float(e) for e in errors]
    if setting == "0":
        assert max(errors) < 2e-5, errors
        return
    if int(capability) < 80:
        pytest.skip("no TF32 before Ampere: cuBLAS computes in float32")
    assert all(2e-5 < e < 5e-3 for e in errors), errors  # (TF32 keeps 10 of float32's 23 fraction bits)
