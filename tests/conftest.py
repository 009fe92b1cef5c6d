"""Shared fixtures: ``device`` runs a test on every available device; ``check`` compares with NumPy."""

from __future__ import annotations

import os
import threading

import numpy as np
import pytest

# float32 products in full precision, as MLX's own test harness runs them: the GPU's default is TF32 (MLX's rule),
# whose rounding the NumPy comparisons' tolerances do not allow; test_cuda.py checks the default in a subprocess
os.environ.setdefault("MLX_ENABLE_TF32", "0")

import umx as mx  # noqa: E402

DEVICES = [mx.cpu] + ([mx.gpu] if mx.is_available(mx.gpu) else [])
ALL_DEVICES = [pytest.param(mx.cpu, id="cpu"),
               pytest.param(mx.gpu, id="gpu", marks=pytest.mark.skipif(not mx.is_available(mx.gpu),
                                                                      reason="no CUDA GPU (CuPy and a device)"))]


@pytest.fixture(params=ALL_DEVICES)
def device(request):
    """Each test taking ``device`` runs on the CPU and, where there is one, on the GPU."""
    return request.param


@pytest.fixture
def on(device):
    """Run the test with ``device`` as the default device (layers and transforms use the default stream)."""
    old = mx.default_device()
    mx.set_default_device(device)
    yield device
    mx.set_default_device(old)


@pytest.fixture
def on_the_cpu():
    """The CPU as the default device while the test runs (a GPU machine's default is its GPU): for tests of the
    CPU backend's own kernels."""
    prev = mx.default_device()
    mx.set_default_device(mx.cpu)
    yield
    mx.set_default_device(prev)


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def record_cuts(monkeypatch, what=lambda bounds, mark: len(bounds)) -> list:
    """The CPU pool's splits from now on (``threads.map_chunks``, still run), each noted as ``what(bounds, mark)``;
    ``mark`` is the tuple of map_chunks's optional arguments."""
    from umx.runtime import threads

    seen = []
    real = threads.map_chunks
    monkeypatch.setattr(threads, "map_chunks", lambda fn, bounds, *mark: seen.append(what(bounds, mark)) or
                        real(fn, bounds, *mark))
    return seen


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


def in_threads(work, items) -> None:
    """``work(item)`` for each of ``items``, each on a thread of its own, all started before any is joined."""
    threads = [threading.Thread(target=work, args=(item,)) for item in items]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def assert_stored(out, what: str = "") -> None:
    """The data of evaluated ``out`` as stored, against its declared dtype and shape. bfloat16 is stored as its 16
    bits: read raw (``view`` as uint16) they are uint16 of ``out``'s shape, and NumPy's float32 read of ``out`` is
    exactly those bits widened (compared as bits: NaN payloads and the sign of zero count). Any other dtype: the data
    NumPy reads has the dtype values are computed in (``Dtype.compute``)."""
    where = f"{what}: " if what else ""
    data = np.asarray(out)
    if out.dtype == mx.bfloat16:
        bits = np.asarray(mx.view(out, mx.uint16))
        assert bits.dtype == np.uint16 and bits.shape == out.shape, (
            f"{where}bfloat16 stored as {bits.dtype}{bits.shape}, not uint16{out.shape}")
        assert data.dtype == np.float32 and data.shape == out.shape, (
            f"{where}bfloat16 read as {data.dtype}{data.shape}, not float32{out.shape}")
        wide = np.asarray(bits.astype(np.uint32) << 16, np.uint32)
        np.testing.assert_array_equal(data.view(np.uint32), wide,
                                      err_msg=f"{where}bfloat16 read as float32 is not its stored bits widened")
    else:
        assert data.dtype == out.dtype.compute, f"{where}data dtype {data.dtype} != declared {out.dtype}"


def bf16_bits(x) -> np.ndarray:
    """The bfloat16 bits (uint16) of float values ``x`` (any float dtype, rounded once) by ml_dtypes: the reference
    rounding (nearest, ties to even, quiet NaNs). Skips the test where ml_dtypes is missing."""
    ml_dtypes = pytest.importorskip("ml_dtypes")
    with np.errstate(invalid="ignore"):
        return np.asarray(x).astype(ml_dtypes.bfloat16).view(np.uint16)


def bf16_round(x) -> np.ndarray:
    """Float values ``x`` rounded to bfloat16's (see :func:`bf16_bits`), as float32 (exact)."""
    return (bf16_bits(x).astype(np.uint32) << 16).view(np.float32)


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
