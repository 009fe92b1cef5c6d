"""Errors: bad arguments raise at the op call, naming the op and the shapes; kernel errors on worker streams
are raised by eval on the caller's thread, reach the dependants, and leave the stream working."""

from __future__ import annotations

import threading

import numpy as np
import pytest

import umx as mx


@pytest.fixture(autouse=True)
def _cpu_default():
    """The failing ops here are out-of-bounds gathers on the default stream: only the CPU bounds-checks them, so
    the CPU is the default device; the ``device`` parameter places the other streams."""
    with mx.stream(mx.cpu):
        yield


@pytest.mark.parametrize(("call", "op"), [
    (lambda s: mx.add(mx.zeros((2, 3)), mx.zeros((4,)), stream=s), "add"),
    (lambda s: mx.multiply(mx.zeros((2, 3)), mx.zeros((3, 2)), stream=s), "multiply"),
    (lambda s: mx.zeros((2, 3)) - mx.zeros((4,)), "sub"),
    (lambda s: mx.where(mx.zeros((2, 3)) > 0, mx.zeros((3, 2)), 1.0, stream=s), "where"),
    (lambda s: mx.matmul(mx.zeros((2, 3)), mx.zeros((4,)), stream=s), "matmul"),
    (lambda s: mx.reshape(mx.zeros((2, 3)), (5,), stream=s), "reshape"),
    (lambda s: mx.concatenate([mx.zeros((2, 3)), mx.zeros((3, 2))], stream=s), "concatenate"),
    (lambda s: mx.broadcast_to(mx.zeros((2, 3)), (4, 3), stream=s), "broadcast_to"),
])


def test_shape_mismatch_raises_at_call(device, call, op):
    with pytest.raises(ValueError, match=op) as info:
        call(device)
    msg = str(info.value)
    assert "(2, 3)" in msg


def test_dtype_errors_at_call(device):
    with pytest.raises(TypeError, match=r"bitwise_or.*float32"):
        mx.bitwise_or(mx.zeros(2), mx.zeros(2), stream=device)
    with pytest.raises(TypeError, match="left_shift"):
        mx.left_shift(mx.zeros(2), 1, stream=device)
    with pytest.raises(TypeError, match="getitem"):
        mx.arange(3)[mx.array([0.5])]
    with pytest.raises(TypeError):
        mx.add(mx.zeros(2), object(), stream=device)


def test_kernel_error_raised_on_caller_thread(device):
    s = mx.new_stream(device)
    a = mx.arange(4, stream=s)
    bad = a[mx.array([1, 9])]
    assert bad._data is None  # nothing raised at the call: the bound is only known when the kernel runs
    with pytest.raises(IndexError) as info:
        mx.eval(bad)
    notes = " ".join(getattr(info.value, "__notes__", []))
    assert "Gather" in notes and "(4,)" in notes
    with pytest.raises(IndexError):  # raised again on every read
        bad.tolist()


def test_stream_keeps_working_after_error(device):
    s = mx.new_stream(device)
    bad = mx.add(mx.arange(3, stream=s)[mx.array([5])], 1, stream=s)
    with pytest.raises(IndexError):
        mx.eval(bad)
    ok = mx.multiply(mx.arange(3, stream=s), 2, stream=s)
    assert ok.tolist() == [0, 2, 4]


def test_dependants_inherit_the_error_across_streams(device):
    s1, s2 = mx.new_stream(device), mx.new_stream(device)
    x = mx.arange(3, stream=s1)
    bad = x[mx.array([3])]
    dep1 = mx.add(bad, 1, stream=s1)
    dep2 = mx.multiply(dep1, 2, stream=s2)
    unrelated = mx.add(x, 10, stream=s2)
    mx.async_eval(dep2, unrelated)
    with pytest.raises(IndexError) as e2:
        mx.eval(dep2)
    with pytest.raises(IndexError) as e1:
        mx.eval(dep1)
    # the root cause, not a new error per node (each read raises a fresh copy of it)
    assert type(e1.value) is type(e2.value) and e1.value.__notes__ == e2.value.__notes__
    assert "Gather" in e1.value.__notes__[0]
    with pytest.raises(IndexError):
        mx.eval(bad)
    assert unrelated.tolist() == [10, 11, 12]
    mixed = [unrelated, dep2]
    with pytest.raises(IndexError):
        mx.eval(mixed)


def test_error_in_one_thread_does_not_leak_to_another(device):
    s = mx.new_stream(device)
    # (the failing gather runs on the CPU: a GPU gather does not check its indices, as in MLX)
    on_cpu = s if device == mx.cpu else mx.new_stream(mx.cpu)
    results = {}

    def good():
        results["good"] = mx.sum(mx.ones((100,), stream=s), stream=s).item()

    def bad():
        try:
            mx.eval(mx.take(mx.arange(2, stream=on_cpu), mx.array([2]), stream=on_cpu))
        except IndexError as e:
            results["bad"] = e

    ts = [threading.Thread(target=f) for f in (bad, good, bad)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert results["good"] == 100.0 and isinstance(results["bad"], IndexError)


def test_item_conversions_errors():
    with pytest.raises(ValueError, match="length-1"):
        mx.zeros(2).item()
    with pytest.raises(TypeError):
        mx.array([1.5]).__index__()
    assert [10, 20, 30][mx.array(1)] == 20


def test_numpy_conversion_of_failed_array_raises(device):
    bad = mx.arange(2, stream=device)[mx.array([4])]
    with pytest.raises(IndexError):
        np.asarray(bad)


def test_an_error_of_async_eval_work_is_raised_by_synchronize(device):
    s = mx.new_stream(device)
    bad = mx.take(mx.arange(4, stream=mx.cpu), mx.array([9]), stream=mx.cpu) + 1
    out = mx.multiply(bad, 2, stream=s)
    mx.async_eval(out)
    with pytest.raises(IndexError):
        mx.synchronize()
    mx.synchronize()  # raised once: the next synchronize has nothing to say
    ok = mx.add(mx.arange(3, stream=s), 1, stream=s)
    mx.async_eval(ok)
    mx.synchronize(s)
    assert ok.tolist() == [1, 2, 3]


def test_an_error_already_raised_by_eval_is_not_raised_again_by_synchronize(device):
    bad = mx.take(mx.arange(4, stream=mx.cpu), mx.array([9]), stream=mx.cpu) * 3
    with pytest.raises(IndexError):
        mx.eval(bad)
    mx.synchronize()
