"""Shared fixtures: ``device`` runs a test on every available device; ``check`` compares with NumPy."""

from __future__ import annotations

import numpy as np
import pytest

import umx as mx

DEVICES = [mx.cpu] + ([mx.gpu] if mx.is_available(mx.gpu) else [])
ALL_DEVICES = [pytest.param(mx.cpu, id="cpu"),
               pytest.param(mx.gpu, id="gpu", marks=pytest.mark.skipif(not mx.is_available(mx.gpu),
                                                                      reason="no CUDA GPU (CuPy and a device)"))]


@pytest.fixture(params=ALL_DEVICES)
def device(request):
    """Each test taking ``device`` runs on the CPU and, where there is one, on the GPU."""
    return request.param


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def assert_close(actual, expected, rtol=1e-5, atol=1e-6, dtype=None):
    """Compare a umx array with a NumPy value: same shape, values within tolerance, and dtype if given."""
    got = np.asarray(actual)
    exp = np.asarray(expected)
    assert got.shape == exp.shape, f"shape {got.shape} != {exp.shape}"
    if dtype is not None:
        assert actual.dtype == dtype, f"dtype {actual.dtype} != {dtype}"
    if got.dtype.kind in "biu" and exp.dtype.kind in "biu":
        np.testing.assert_array_equal(got, exp)
    else:
        np.testing.assert_allclose(got.astype(np.complex128 if got.dtype.kind == "c" else np.float64),
                                   exp, rtol=rtol, atol=atol, equal_nan=True)


# Where work runs: each device's default stream, and a second stream of each (made lazily, once).
_PLACES = [("cpu", mx.cpu, 0), ("cpu2", mx.cpu, 1), ("gpu", mx.gpu, 0), ("gpu2", mx.gpu, 1)]
_streams: dict = {}


def place(name: str):
    """The stream called ``name`` in PLACEMENTS ('cpu', 'cpu2', 'gpu', 'gpu2')."""
    s = _streams.get(name)
    if s is None:
        _, dev, second = next(p for p in _PLACES if p[0] == name)
        s = _streams[name] = mx.new_stream(dev) if second else mx.default_stream(dev)
    return s


def _placement_param(producer: str, consumer: str):
    needs_gpu = "gpu" in producer or "gpu" in consumer
    return pytest.param((producer, consumer), id=f"{producer}-{consumer}",
                        marks=pytest.mark.skipif(needs_gpu and not mx.is_available(mx.gpu),
                                                 reason="no CUDA GPU (CuPy and a device)"))


PLACEMENTS = [_placement_param(p, c) for p in ("cpu", "cpu2", "gpu", "gpu2") for c in ("cpu", "cpu2", "gpu", "gpu2")
              if p != c]


@pytest.fixture(params=PLACEMENTS)
def placement(request):
    """(producer stream, consumer stream): inputs made on one stream or device and used on another."""
    producer, consumer = request.param
    return place(producer), place(consumer)


_GPU_ONLY_MODULES = {"test_cuda.py", "test_graphs.py", "test_pressure.py", "test_direct.py"}
_MULTI_PROCESS = ("test_distributed.py", "test_nn_distributed.py")


def pytest_collection_modifyitems(config, items):
    """Apply the declared markers: ``gpu`` to every test that runs on a GPU (a gpu parameter, or a GPU-only
    module), ``slow`` to the jobs that start several processes (MPI). ``-m "not gpu"`` or ``-m "not slow"`` then
    select as they say."""
    import re

    for item in items:
        words = set(re.split(r"[\[\]\-]", item.name))
        if words & {"gpu", "gpu2"} or item.path.name in _GPU_ONLY_MODULES:
            item.add_marker(pytest.mark.gpu)
        if item.path.name in _MULTI_PROCESS and ("process" in item.name or "example" in item.name
                                                 or "launcher" in item.name or "mlx_mpi" in item.name):
            item.add_marker(pytest.mark.slow)
