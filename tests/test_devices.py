"""Devices and streams: MLX's names, defaults, the stream() context, and parallel CPU streams."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from conftest import assert_close

import umx as mx

HAS_GPU = mx.is_available(mx.gpu)
no_gpu = pytest.mark.skipif(HAS_GPU, reason="checks the behaviour without a GPU")


@pytest.fixture
def restore_defaults():
    dev = mx.default_device()
    streams = {d: mx.default_stream(d) for d in (mx.cpu, mx.gpu) if mx.is_available(d)}
    yield
    mx.set_default_device(dev)
    for s in streams.values():
        mx.set_default_stream(s)


def test_names_exist():
    for name in ("Device", "DeviceType", "Stream", "default_device", "set_default_device", "default_stream",
                 "set_default_stream", "new_stream", "stream", "synchronize", "is_available", "device_count",
                 "device_info", "cpu", "gpu"):
        assert hasattr(mx, name), name
    assert isinstance(mx.cpu, mx.DeviceType) and isinstance(mx.gpu, mx.DeviceType)
    assert mx.cpu != mx.gpu


def test_device_values():
    d = mx.Device(mx.cpu)
    assert d == mx.Device(mx.cpu, 0)
    assert d == mx.cpu
    assert d.type == mx.cpu and d.index == 0
    assert repr(d) == "Device(cpu, 0)"
    assert repr(mx.Device(mx.gpu, 0)) == "Device(gpu, 0)"
    assert hash(d) == hash(mx.Device(mx.cpu, 0))
    with pytest.raises(TypeError):
        mx.Device("tpu")


def test_default_device_is_gpu_when_available():
    assert mx.default_device() == (mx.gpu if HAS_GPU else mx.cpu)


def test_is_available_and_counts():
    assert mx.is_available(mx.cpu)
    assert mx.is_available(mx.Device(mx.cpu))
    assert mx.device_count(mx.cpu) == 1
    assert (mx.device_count(mx.gpu) >= 1) if HAS_GPU else (mx.device_count(mx.gpu) == 0)
    assert mx.is_available(mx.gpu) == (mx.device_count(mx.gpu) > 0)
    assert not mx.is_available(mx.Device(mx.gpu, mx.device_count(mx.gpu)))  # one past the last


def test_device_info():
    info = mx.device_info(mx.cpu)
    assert isinstance(info, dict)
    assert "architecture" in info and "device_name" in info
    assert isinstance(mx.device_info(), dict)


def test_default_stream_and_new_stream(device):
    s = mx.default_stream(device)
    assert isinstance(s, mx.Stream)
    assert s.device == device
    assert mx.default_stream(device) is s
    t = mx.new_stream(device)
    u = mx.new_stream(device)
    assert t != s and t != u
    assert t.device == device
    assert u.index > t.index  # one counter for all streams
    assert repr(t) == f"Stream({t.device!r}, {t.index})"


def test_set_default_device_and_stream(device, restore_defaults):
    mx.set_default_device(device)
    assert mx.default_device() == device
    s = mx.new_stream(device)
    mx.set_default_stream(s)
    assert mx.default_stream(device) is s
    assert mx.default_device() == device  # set_default_stream does not change the device
    a = mx.add(mx.array([1.0]), 1.0)
    assert a._stream is s
    assert_close(a, np.array([2.0]))
    with pytest.raises(TypeError):
        mx.set_default_stream(mx.cpu)


def test_stream_context_sets_and_restores(device, restore_defaults):
    s = mx.new_stream(device)
    dev0 = mx.default_device()
    old = mx.default_stream(device)
    with mx.stream(s) as got:
        assert got is s
        assert mx.default_device() == device
        assert mx.default_stream(device) is s
        a = mx.multiply(mx.array([2.0]), 3.0)
        assert a._stream is s
    assert mx.default_device() == dev0
    assert mx.default_stream(device) is old
    assert_close(a, np.array([6.0]))


@pytest.mark.parametrize("kind", ["device", "type"])
def test_stream_context_takes_device(device, restore_defaults, kind):
    target = mx.Device(device) if kind == "device" else device
    dev0 = mx.default_device()
    with mx.stream(target) as got:
        assert got is mx.default_stream(device)
        assert mx.default_device() == device
        assert mx.ones(2)._stream is mx.default_stream(device)
    assert mx.default_device() == dev0


def test_stream_context_restores_on_error(device, restore_defaults):
    dev0 = mx.default_device()
    old = mx.default_stream(device)
    with pytest.raises(RuntimeError), mx.stream(mx.new_stream(device)):
        raise RuntimeError("boom")
    assert mx.default_device() == dev0 and mx.default_stream(device) is old


def test_nested_stream_contexts(device, restore_defaults):
    s1, s2 = mx.new_stream(device), mx.new_stream(device)
    with mx.stream(s1):
        with mx.stream(s2):
            assert mx.default_stream(device) is s2
        assert mx.default_stream(device) is s1


@no_gpu
def test_gpu_unavailable_raises_value_error(restore_defaults):
    assert mx.gpu is not None
    with pytest.raises(ValueError, match="gpu"):
        mx.set_default_device(mx.gpu)
    with pytest.raises(ValueError, match="gpu"):
        mx.add(mx.array([1.0]), 1.0, stream=mx.gpu)
    with pytest.raises(ValueError, match="gpu"):
        mx.new_stream(mx.gpu)
    with pytest.raises(ValueError, match="gpu"):
        mx.zeros(3, stream=mx.Device(mx.gpu))
    with pytest.raises(ValueError), mx.stream(mx.gpu):
        pass
    assert mx.default_device() == mx.cpu


def test_synchronize(device):
    s = mx.new_stream(device)
    a = mx.exp(mx.ones((64, 64)), stream=s)
    mx.async_eval(a)
    mx.synchronize(s)
    assert a._data is not None
    b = mx.sin(mx.ones(4), stream=device)
    mx.async_eval(b)
    mx.synchronize()
    assert b._data is not None
    mx.synchronize(mx.new_stream(device))  # a stream that never ran anything


def test_several_cpu_streams_agree():
    streams = [mx.new_stream(mx.cpu) for _ in range(4)]
    x = mx.array(np.arange(10, dtype=np.float32))
    outs = [mx.multiply(x, float(i), stream=s) for i, s in enumerate(streams)]
    mx.eval(outs)
    for i, o in enumerate(outs):
        assert_close(o, np.arange(10) * i)


def test_two_cpu_streams_run_in_parallel(monkeypatch):
    """Two independent heavy matmuls on two CPU streams overlap in time (NumPy releases the GIL)."""
    import time

    from umx.backends.cpu import executor as cpu_ex
    from umx.primitives import Matmul

    kernel = cpu_ex.KERNELS[Matmul]
    intervals = {}
    started = threading.Barrier(2, timeout=20)

    def spy(prim, a, b):
        t0 = time.perf_counter()
        try:
            started.wait()  # both kernels must be running at once for the barrier to open
            overlapped = True
        except threading.BrokenBarrierError:
            overlapped = False
        out = kernel(prim, a, b)
        intervals[threading.current_thread().name] = (t0, time.perf_counter(), overlapped)
        return out

    monkeypatch.setitem(cpu_ex.KERNELS, Matmul, spy)
    s1, s2 = mx.new_stream(mx.cpu), mx.new_stream(mx.cpu)
    rng = np.random.default_rng(0)
    a = mx.array(rng.standard_normal((200, 200)).astype(np.float32))
    x = mx.matmul(a, a, stream=s1)
    y = mx.matmul(a, a.T, stream=s2)
    mx.eval(x, y)
    assert len(intervals) == 2, intervals  # two distinct worker threads ran them
    assert all(ov for _, _, ov in intervals.values())
    (a0, a1, _), (b0, b1, _) = intervals.values()
    assert a0 < b1 and b0 < a1  # the wall-clock intervals overlap
    an = np.asarray(a).astype(np.float64)
    assert_close(x, an @ an, rtol=1e-4, atol=1e-3)
    assert_close(y, an @ an.T, rtol=1e-4, atol=1e-3)


def test_streams_usable_from_other_threads(device):
    s = mx.new_stream(device)
    out = {}

    def work(i):
        out[i] = mx.add(mx.full((3,), float(i)), 1.0, stream=s).tolist()

    ts = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert out == {i: [i + 1.0] * 3 for i in range(4)}
