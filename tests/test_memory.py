"""Memory statistics and limits: active and peak memory follow arrays as they are evaluated and freed."""

from __future__ import annotations

import gc
import os
import subprocess
import sys

import numpy as np
import pytest

import umx as mx

MB = 1 << 20


@pytest.fixture
def limits():
    mem, cache = mx.get_memory_limit(), mx.set_cache_limit(0)
    mx.set_cache_limit(cache)
    yield
    mx.set_memory_limit(mem)
    mx.set_cache_limit(cache)


def test_names():
    for name in ("get_active_memory", "get_peak_memory", "reset_peak_memory", "get_cache_memory",
                 "set_memory_limit", "get_memory_limit", "set_cache_limit", "clear_cache"):
        assert callable(getattr(mx, name)), name


def test_active_rises_and_falls(device):
    gc.collect()
    before = mx.get_active_memory()
    a = mx.ones((1024, 256), stream=device)  # 1 MiB
    assert mx.get_active_memory() - before < MB  # nothing allocated before eval
    mx.eval(a)
    # (slack: small buffers that in-flight GPU work held are released when it finishes, at any time)
    assert mx.get_active_memory() - before >= a.nbytes - (64 << 10)
    del a
    gc.collect()
    assert mx.get_active_memory() - before < MB


def test_array_from_numpy_counts():
    before = mx.get_active_memory()
    a = mx.array(np.zeros((512, 512), np.float32))
    n = a.nbytes
    assert mx.get_active_memory() - before >= n
    del a
    assert mx.get_active_memory() - before < n


def test_peak_memory(device):
    mx.eval(mx.zeros(1, stream=device))
    mx.reset_peak_memory()
    assert mx.get_peak_memory() == 0  # as MLX: zero, whatever is live
    base = mx.get_active_memory()
    a = mx.zeros((2048, 512), stream=device)  # 4 MiB
    mx.eval(a)
    del a
    gc.collect()
    assert mx.get_peak_memory() >= 4 * MB  # (only what was allocated since the reset counts, as in MLX)
    assert mx.get_active_memory() - base < MB
    mx.reset_peak_memory()
    fresh = mx.random.normal((1024,), stream=device)  # (a kernel's new buffer: zeros may be a cached constant)
    mx.eval(fresh)
    peak = mx.get_peak_memory()  # the usage at the last allocation
    assert peak > 0 and abs(peak - mx.get_active_memory()) < MB


def test_views_are_not_double_counted(device):
    x = mx.ones((1024, 256), stream=device)
    mx.eval(x)
    before = mx.get_active_memory()
    with mx.stream(device):
        views = [mx.reshape(x, (-1,), stream=device), mx.transpose(x, stream=device), x[:10]]
    mx.eval(views)
    assert mx.get_active_memory() - before < x.nbytes


def test_view_results_count_their_buffer(device):
    """A result that views a temporary (or a freed intermediate) keeps that buffer alive: it is counted."""
    gc.collect()
    before = mx.get_active_memory()
    outs = [mx.reshape(mx.exp(mx.ones((1024, 256), stream=device), stream=device), (-1,), stream=device),
            mx.transpose(mx.exp(mx.ones((1024, 256), stream=device), stream=device), stream=device),
            mx.random.bits((1024, 256), key=mx.random.key(0), stream=device)]
    mx.eval(outs)
    assert mx.get_active_memory() - before >= sum(o.nbytes for o in outs)
    del outs
    gc.collect()
    assert mx.get_active_memory() - before < MB


def test_memory_limit_setters(limits):
    default = mx.get_memory_limit()
    assert default > 0
    prev = mx.set_memory_limit(1 << 30)
    assert prev == default
    assert mx.get_memory_limit() == 1 << 30
    assert mx.set_memory_limit(default) == 1 << 30
    with pytest.raises(ValueError):
        mx.set_memory_limit(-1)


def test_cache_limit_and_clear(limits):
    old = mx.set_cache_limit(1 << 20)
    assert isinstance(old, int) and old > 0
    assert mx.set_cache_limit(old) == 1 << 20
    assert mx.get_cache_memory() >= 0
    mx.clear_cache()
    assert mx.get_cache_memory() >= 0
    with pytest.raises(ValueError):
        mx.set_cache_limit(-5)


def test_large_cpu_outputs_reuse_pooled_host_buffers(rng):
    """Large outputs come from the host pool; a freed one serves the next output of its size, values intact."""
    from umx.runtime import host_pool

    mx.clear_cache()
    cached = host_pool.cached_bytes  # (mx.get_cache_memory adds the device pools)
    n = host_pool.MIN_BYTES // 4 * 2
    x = rng.standard_normal(n).astype(np.float32)
    a = mx.array(x)
    y = mx.add(mx.multiply(a, 2.0, stream=mx.cpu), 1.0, stream=mx.cpu)
    mx.eval(y)
    view = y[5:9]
    del y
    assert cached() == 0  # a view still holds the buffer
    np.testing.assert_array_equal(np.asarray(view), x[5:9] * 2 + 1)
    del view
    gc.collect()
    assert cached() >= n * 4 and mx.get_cache_memory() >= n * 4
    z = mx.subtract(mx.multiply(a, 3.0, stream=mx.cpu), 1.0, stream=mx.cpu)
    np.testing.assert_array_equal(np.asarray(z), x * 3 - 1)  # the reused block holds z's values only
    assert cached() < n * 4
    del z
    gc.collect()
    prev = mx.set_cache_limit(0)  # MLX's meaning: cache nothing
    try:
        assert cached() == 0
    finally:
        mx.set_cache_limit(prev)


@pytest.mark.parametrize("op", ["matmul", "softmax"])
def test_large_products_and_softmaxes_take_pooled_host_buffers(rng, op):
    """A large product's or softmax's result (each a kernel of its own, not a fused region) comes from the host
    pool and goes back to it: above glibc's mmap threshold NumPy's own buffers would be fresh pages every step."""
    from umx.backends.cpu import blas
    from umx.runtime import host_pool

    if op == "matmul" and blas._BLAS is None:
        pytest.skip("no OpenBLAS found, or one core: products are NumPy's calls as they are")
    mx.clear_cache()
    rows = host_pool.MIN_BYTES // 4 // 256 * 2
    x = rng.standard_normal((rows, 256)).astype(np.float32)
    w = rng.standard_normal((256, 256)).astype(np.float32)
    a, b = mx.array(x), mx.array(w)

    def run():
        return mx.matmul(a, b, stream=mx.cpu) if op == "matmul" else mx.softmax(a, axis=-1, stream=mx.cpu)

    y = run()
    mx.eval(y)
    want = x.astype(np.float64) @ w if op == "matmul" else np.exp(x - x.max(-1, keepdims=True))
    if op == "softmax":
        want = want / want.sum(-1, keepdims=True)
    np.testing.assert_allclose(np.asarray(y), want, rtol=1e-4, atol=1e-4)
    assert host_pool.cached_bytes() == 0
    del y
    gc.collect()
    assert host_pool.cached_bytes() >= x.nbytes  # back in the pool
    y = run()
    mx.eval(y)
    assert host_pool.cached_bytes() < x.nbytes  # and served the next result
    np.testing.assert_allclose(np.asarray(y), want, rtol=1e-4, atol=1e-4)


def test_the_cpus_memory_size_is_the_machines_whatever_limit_is_set():
    size = mx.device_info(mx.cpu)["memory_size"]
    mx.set_memory_limit(1 << 20)
    try:
        assert mx.device_info(mx.cpu)["memory_size"] == size > 1 << 20
    finally:
        mx.set_memory_limit(0)




_FAULTS = """
import resource, sys
import numpy as np
import umx as mx
from umx.runtime import host_malloc

def faults(count, nbytes):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(count):
        np.empty(nbytes, np.uint8).fill(1)
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

if sys.argv[1] != "default":
    mx.set_cache_limit(int(sys.argv[1]))
faults(1, 4 << 20)
reused, large = faults(20, 4 << 20), faults(5, 64 << 20)
mx.clear_cache()
print(host_malloc.managed(), reused, large, faults(1, 4 << 20))
"""


def _faults_in_a_fresh_process(limit: str, **env) -> tuple:
    """``(managed, faults of 20 buffers of 4 MiB, of 5 of 64 MiB, of one of 4 MiB after clear_cache)`` in a new
    process (a heap with no history: what it reuses is what this process freed) with cache limit ``limit``; each
    buffer is made, written and freed."""
    out = subprocess.run([sys.executable, "-c", _FAULTS, limit], capture_output=True, text=True, check=True,
                         env={**os.environ, **env}).stdout.split()
    return out[0] == "True", int(out[1]), int(out[2]), int(out[3])


def test_the_heap_keeps_freed_buffers_for_reuse():
    # (a fresh buffer faults once per page, or per huge page where the kernel gives NumPy those: at least once)
    managed, reused, large, cleared = _faults_in_a_fresh_process("default")
    if not managed:
        pytest.skip("umx sets malloc's thresholds on glibc only")
    assert reused < 10  # each buffer takes the pages of the one freed before it
    assert large >= 5  # (above glibc's ceiling for the mmap threshold: fresh pages each time)
    assert cleared >= 1  # clear_cache gave the pages back
    assert _faults_in_a_fresh_process("0")[1] >= 20  # nothing kept: glibc's starting thresholds
    assert _faults_in_a_fresh_process(str(16 << 20))[1] < 10
    assert not _faults_in_a_fresh_process("default", UMX_HOST_MALLOC="system")[0]

