"""Runs first: the package imports, an op evaluates, the result matches NumPy."""

import numpy as np
from conftest import assert_close

import umx as mx


def test_import_and_add(device):
    a = mx.array([1.0, 2.0, 3.0])
    b = mx.add(a, 1, stream=device)
    assert_close(b, np.array([2.0, 3.0, 4.0]), dtype=mx.float32)


def test_a_primitive_is_equal_only_to_one_with_the_same_parameters():
    import umx.primitives as P
    from umx.primitives.base import param_names

    assert P.Sum((0,), False) != P.Sum((1,), False)  # a Sum's parameters are its base Reduce's slots
    assert P.Sum((0,), False) != P.Sum((0,), True)
    assert P.Sum((0,), False) == P.Sum((0,), False) and hash(P.Sum((0,), False)) == hash(P.Sum((0,), False))
    assert P.ArgMax(0, False) != P.ArgMax(1, False)
    for cls in vars(P).values():
        if isinstance(cls, type) and issubclass(cls, P.Primitive):
            slots = {s for k in cls.__mro__ for s in k.__dict__.get("__slots__", ())} - {"__weakref__"}
            assert set(param_names(cls)) == slots, cls
