"""A failed eval frees what it held at once: once the caller has caught the error and dropped its arrays, memory is
back to where it was, with the garbage collector off (no reference cycle through the stored error)."""

from __future__ import annotations

import gc

import numpy as np
import pytest

import umx as mx

N = 1 << 20  # 4 MiB of float32


@pytest.fixture
def no_gc():
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
        mx.set_memory_limit(0)


def _memory_limit(device):
    x = mx.ones((N,), stream=device)
    mx.eval(x)
    mx.set_memory_limit(N)
    try:
        mx.eval(x * 2 + 1)  # a fused region on each device: its result does not fit
    except MemoryError:
        pass
    finally:
        mx.set_memory_limit(0)


def _memory_limit_lane(device):
    x = mx.ones((N,), stream=device)
    mx.eval(x)
    mx.set_memory_limit(N)
    try:
        mx.eval(mx.exp(x, stream=device))  # one node: the short plan
    except MemoryError:
        pass
    finally:
        mx.set_memory_limit(0)


def _bad_gather(device):
    x = mx.ones((N,), stream=mx.cpu)
    mx.eval(x)
    try:
        mx.eval(mx.take(x, mx.array([N + 5]), stream=mx.cpu) * 2)
    except IndexError:
        pass


def _bad_gather_read_by_item(device):
    x = mx.ones((N,), stream=mx.cpu)
    try:
        (mx.take(x, mx.array([N + 5]), stream=mx.cpu).sum(stream=device)).item()
    except IndexError:
        pass


def _bad_gather_read_by_numpy(device):
    x = mx.ones((N,), stream=mx.cpu)
    try:
        np.asarray(mx.take(x, mx.array([N + 5, 0]), stream=mx.cpu) + x[:2])
    except IndexError:
        pass


def _dependants_on_another_stream(device):
    x = mx.ones((N,), stream=mx.cpu)
    bad = mx.take(x, mx.array([N + 5]), stream=mx.new_stream(mx.cpu))
    parts = mx.split(mx.concatenate([bad, bad]), 2, stream=device)
    try:
        mx.eval(parts[0] + x[:1], parts[1])
    except IndexError:
        pass


def _async_then_eval(device):
    x = mx.ones((N,), stream=device)
    y = mx.take(x, mx.array([N + 5]), stream=mx.cpu)
    mx.async_eval(y)
    try:
        mx.eval(y)
    except IndexError:
        pass


CASES = [_memory_limit, _memory_limit_lane, _bad_gather, _bad_gather_read_by_item, _bad_gather_read_by_numpy,
         _dependants_on_another_stream, _async_then_eval]


@pytest.mark.parametrize("case", CASES, ids=[c.__name__.strip("_") for c in CASES])
def test_a_failed_eval_frees_its_memory_without_the_garbage_collector(device, no_gc, case):
    mx.synchronize()
    # (what earlier tests of this process left cached, CUDA graphs among it, goes now: a memory limit frees it,
    # and the count would fall below the base)
    mx.clear_cache()
    base = mx.get_active_memory()
    case(device)
    mx.synchronize()
    assert mx.get_active_memory() == base


def test_the_error_is_raised_again_at_every_read_with_its_notes(device):
    bad = mx.take(mx.arange(4, stream=mx.cpu), mx.array([9]), stream=mx.cpu) + 1
    errors = []
    for _ in range(2):
        with pytest.raises(IndexError) as info:
            mx.eval(bad)
        errors.append(info.value)
    a, b = errors
    assert a is not b and str(a) == str(b)  # a fresh copy each time: the stored error never gains frames
    notes = "\n".join(a.__notes__)
    assert "Gather" in notes and "the kernel's traceback" in notes
    assert a.__notes__ == b.__notes__  # no note added per read


def test_a_failed_node_keeps_no_frame_of_the_caller(device, no_gc):
    def run():
        held = mx.ones((N,), stream=mx.cpu)  # a local of the frame that evaluated: must not outlive it
        mx.eval(held)
        bad = mx.take(held, mx.array([N + 5]), stream=mx.cpu)
        try:
            mx.eval(bad)
        except IndexError:
            pass
        return bad

    base = mx.get_active_memory()
    bad = run()  # the failed node itself is still held here
    assert mx.get_active_memory() == base
    with pytest.raises(IndexError):
        mx.eval(bad)


def test_a_ctrl_c_while_a_buffer_is_freed_leaves_no_bytes_counted(no_gc):
    import sys

    def interrupt(frame, event, arg):  # a Ctrl-C at the first Python line run while the buffer is freed
        if event == "call" and frame.f_code.co_filename.endswith("memory.py"):
            raise KeyboardInterrupt

    base = mx.get_active_memory()
    x = mx.array(np.ones(N, np.float32))
    mx.eval(x)
    assert mx.get_active_memory() == base + 4 * N
    sys.setprofile(interrupt)
    try:
        del x
    finally:
        sys.setprofile(None)
    assert mx.get_active_memory() == base


def test_an_error_a_read_raised_is_not_raised_again_by_synchronize():
    # the lane's read (tolist, item) raises a failed kernel's error: that reader saw it, so synchronize, later,
    # has nothing to raise (it raised it a second time, in whatever code came next)
    z = mx.zeros((2, 2))
    mx.eval(z)
    y = mx.linalg.inv(z, stream=mx.cpu)
    with pytest.raises(np.linalg.LinAlgError):
        y.tolist()
    mx.synchronize(mx.cpu)
    with pytest.raises(np.linalg.LinAlgError):
        y.tolist()  # reading it again raises again
    mx.synchronize()
