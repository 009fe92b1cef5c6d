"""GPU memory pressure: past the device's limit umx spills to the host and stays correct; past the host's limit it
raises MemoryError from eval, naming the request, and stays usable. Needs a GPU (skips cleanly without one)."""

from __future__ import annotations

import gc

import numpy as np
import pytest

import umx as mx

pytestmark = pytest.mark.skipif(not mx.is_available(mx.gpu), reason="no CUDA GPU (CuPy and a device)")

MIB = 1 << 20
N = 8 * MIB // 4  # float32 elements of an 8 MiB array


@pytest.fixture
def limited():
    """A 64 MiB limit (each device and the host), removed after the test."""
    gc.collect()
    mx.clear_cache()
    mx.set_memory_limit(64 * MIB)
    yield 64 * MIB
    mx.set_memory_limit(0)
    mx.clear_cache()


def _stats() -> dict:
    return mx.memory_report()["locations"]["gpu"]


def test_past_the_device_limit_arrays_spill_to_the_host_and_stay_correct(limited):
    before = _stats()["spills"]
    # 12 arrays of 8 MiB held at once: 96 MiB against a 64 MiB device limit
    arrays = []
    for i in range(12):
        a = mx.multiply(mx.full((N,), float(i), stream=mx.gpu), 2.0, stream=mx.gpu)
        mx.eval(a)
        arrays.append(a)
    assert _stats()["spills"] > before
    # every value is right, whether it stayed on the GPU or moved to the host
    for i, a in enumerate(arrays):
        host = np.asarray(a)
        assert host[0] == 2.0 * i and host[-1] == 2.0 * i and (host == 2.0 * i).all()
    # GPU ops read spilled arrays (copied back in on demand), including fused regions
    for i in (0, 11):
        b = mx.add(mx.multiply(arrays[i], 0.5, stream=mx.gpu), 1.0, stream=mx.gpu)
        assert np.asarray(b)[::4096].tolist() == [i + 1.0] * (N // 4096)
    assert "spilled" in str(mx.memory_report())


def test_past_the_host_limit_too_eval_raises_memory_error_and_recovers(limited):
    arrays = []
    with pytest.raises(MemoryError, match="cannot allocate"):
        for i in range(40):  # 320 MiB: more than the device and the host can hold together under the limit
            a = mx.multiply(mx.full((N,), float(i), stream=mx.gpu), 1.0, stream=mx.gpu)
            mx.eval(a)
            arrays.append(a)
    assert len(arrays) >= 6  # it gave up only after using both the device and the host
    for i, a in enumerate(arrays[:3]):
        assert np.asarray(a)[-1] == float(i)
    del arrays, a
    gc.collect()
    assert mx.sum(mx.ones((N,), stream=mx.gpu), stream=mx.gpu).item() == N  # usable again
