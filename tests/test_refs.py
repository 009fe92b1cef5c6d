"""An array that anything still holds is never fused away or dropped: the reference-count baselines (runtime/refs.py)
are measured on this interpreter, and every way of holding an intermediate keeps it whole after an eval that fused
the chain around it."""

from __future__ import annotations

import threading
import weakref

import numpy as np
import pytest

import umx as mx
from umx.runtime import refs

N = 1 << 12  # under the CPU's small-region threshold and over it, below
HOLDERS = ["variable", "list", "dict", "tuple", "closure", "attribute", "other thread", "generator"]


class _Box:
    pass


def _chain(x, hold):
    """x -> a -> b -> c, with b given to ``hold`` (which keeps it however it likes); returns c."""
    a = mx.multiply(x, 2.0)
    b = mx.add(a, 1.0)
    hold(b)
    return mx.multiply(b, 3.0)


@pytest.mark.parametrize("size", [N, 1 << 20])
@pytest.mark.parametrize("how", HOLDERS)
def test_an_intermediate_held_any_way_keeps_its_value(device, how, size):
    x = mx.random.uniform(shape=(size,), stream=device)
    kept: dict = {}
    release = threading.Event()
    box = _Box()

    def hold(b):
        if how == "variable":
            kept["v"] = b
        elif how == "list":
            kept["l"] = [b]
        elif how == "dict":
            kept["d"] = {"b": b}
        elif how == "tuple":
            kept["t"] = (b, None)
        elif how == "closure":
            kept["f"] = (lambda: b)
        elif how == "attribute":
            box.b = b
        elif how == "other thread":
            def keep(arr=b):
                release.wait(10)
                return arr
            t = threading.Thread(target=keep)
            t.start()
            kept["thread"] = t
            kept["ref"] = weakref.ref(b)
        elif how == "generator":
            def gen(arr):
                yield arr
            g = gen(b)
            next(g)
            kept["g"] = g
            kept["ref"] = weakref.ref(b)

    with mx.stream(device):
        c = _chain(x, hold)
        mx.eval(c)
    b = {"variable": lambda: kept["v"], "list": lambda: kept["l"][0], "dict": lambda: kept["d"]["b"],
         "tuple": lambda: kept["t"][0], "closure": lambda: kept["f"](), "attribute": lambda: box.b,
         "other thread": lambda: kept["ref"](), "generator": lambda: kept["ref"]()}[how]()
    try:
        assert b is not None and b._data is not None  # computed and kept, not a region's member
        xs = np.asarray(x)
        np.testing.assert_allclose(np.asarray(b), xs * 2 + 1, rtol=1e-6)
        np.testing.assert_allclose(np.asarray(c), (xs * 2 + 1) * 3, rtol=1e-6)
    finally:
        release.set()


def test_what_only_its_reader_holds_is_fused(device):
    x = mx.random.uniform(shape=(N,), stream=device)
    probe = {}
    a = mx.multiply(x, 2.0, stream=device)
    b = mx.add(a, 1.0, stream=device)
    probe["b"] = weakref.ref(b)
    c = mx.multiply(b, 3.0, stream=device)
    del a, b
    mx.eval(c)
    assert probe["b"]() is None  # fused away and freed: a weak reference does not hold


def test_the_baselines_are_this_interpreters_counts():
    held = [object()]
    assert refs.UNHELD_SLOT == refs._in_container(held, 0)
    assert refs.UNHELD_INPUT == refs._in_inputs_as_local((object(),))
    extra = held[0]  # a second holder: one more than the baseline
    assert refs._in_container(held, 0) == refs.UNHELD_SLOT + 1
    del extra
    queued = [object(), (object(), None)]
    assert refs.task_refs(queued, 0) == refs.UNHELD_TASK
    assert refs.task_refs(queued, 1) == refs.UNHELD_TASK_PAIR
    extra = queued[1][0]
    assert refs.task_refs(queued, 1) == refs.UNHELD_TASK_PAIR + 1
    del extra
