"""Malformed arguments to every public op: a clear Python exception at the call, never a crash, a hang, an
error deferred to ``eval``, or a result whose data disagrees with its declared shape and dtype.

The ops are found by walking the public callables of ``umx`` (and ``umx.random``); a skip list names the
non-ops. Each op gets arguments drawn by hypothesis from a pool of bad values (strings, None, objects, ragged
lists, wrong-rank arrays, huge and negative axes and sizes, NaN and inf, streams of a missing device) mixed
with good ones, so that most calls have exactly the one bad argument that the op must catch.
"""

from __future__ import annotations

import inspect
import os
import threading

import numpy as np
import pytest
from conftest import assert_stored
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import umx as mx

# (OverflowError: MLX's for a shape dimension beyond 32 bits)
SENSIBLE = (TypeError, ValueError, IndexError, NotImplementedError, OverflowError)
# The ops that read or write the file they are given: for them (alone) OSError is a sensible answer too (a junk path:
# no such file, a directory, a name too long).
FILE_OPS = {"load", "save", "savez", "savez_compressed", "save_safetensors", "save_gguf", "export_function",
            "import_function", "exporter", "export_to_dot"}
# Not ops: evaluation, devices and streams, memory and printing settings, dtype queries (tested elsewhere).
SKIP = {
    "eval",
    "async_eval",
    "stream",
    "set_default_device",
    "set_default_stream",
    "default_stream",
    "default_device",
    "new_stream",
    "synchronize",
    "clear_streams",
    "clear_cache",
    "device_info",
    "device_count",
    "is_available",
    "get_active_memory",
    "get_peak_memory",
    "reset_peak_memory",
    "get_cache_memory",
    "get_memory_limit",
    "set_memory_limit",
    "set_cache_limit",
    "set_wired_limit",
    "get_printoptions",
    "set_printoptions",
    "printoptions",
    "get_array_buffer_size",
    "can_cast",
    "isdtype",
    "issubdtype",
    "result_type",
    "seed",
}
MAX_EVAL_SIZE = 1 << 16  # results bigger than this are legitimate but not worth computing here
EXAMPLES = int(os.environ.get("UMX_BAD_INPUT_EXAMPLES", "12"))  # per op; `make stress` runs many more


def _public_ops() -> list:
    ops = []
    for mod, prefix in ((mx, ""), (mx.random, "random.")):
        for name in sorted(dir(mod)):
            fn = getattr(mod, name)
            if (
                name.startswith("_")
                or name in SKIP
                or not callable(fn)
                or isinstance(fn, type)
                or (mod is mx.random and name not in mx.random.__all__)
            ):
                continue
            if inspect.ismodule(fn) or getattr(fn, "__module__", "").split(".")[0] != "umx":
                continue
            ops.append(pytest.param(fn, id=prefix + name))
    return ops


def _missing_device_streams() -> list:
    out = [mx.Device(mx.cpu, 7)]
    if not mx.is_available(mx.gpu):
        out += [mx.gpu, mx.Device(mx.gpu, 0)]
    return out


class Opaque:
    """An object that is nothing umx knows."""


def _arrays():
    shapes = st.lists(st.integers(0, 3), min_size=0, max_size=4).map(tuple)
    dtypes = st.sampled_from([mx.float32, mx.int32, mx.bool_, mx.uint8, mx.float16, mx.int64, mx.complex64])
    return st.builds(lambda s, d: mx.array(np.ones(s) * 2, dtype=d), shapes, dtypes)


GOOD = st.one_of(_arrays(), st.sampled_from([1, 2, 0, -1, 1.5, True, (2, 3), [1, 2, 3], (0,), ()]))
BAD = st.one_of(
    st.sampled_from(
        [
            "a",
            "",
            None,
            Opaque(),
            object(),
            {"k": 1},
            [[1], [1, 2]],
            [1, "a"],
            (1, None),
            2**63,
            -(2**63),
            10**30,
            -7,
            99,
            (-1, 3),
            (2, -5),
            (3, 2.5),
            ("x",),
            float("nan"),
            float("inf"),
            -float("inf"),
            1e300,
            3j,
            b"bytes",
            np.float64("nan"),
            np.zeros((2, 2)),
            mx.float32,
            slice(1, 2),
            Ellipsis,
            (99, 0),
            [0, 0],
        ]
    ),
    st.sampled_from(_missing_device_streams()),
    _arrays(),
)
KWARGS = ("axis", "axes", "keepdims", "dtype", "shape", "stream", "k", "num", "ddof", "decimals", "key")


# Ops whose index arguments are data: an index out of range can only be seen by the kernel, so IndexError from
# eval is their documented answer (as for a[idx] with an index array).
DATA_INDEXED = {"take", "take_along_axis", "put_along_axis"}


def _check_result(out, data_indexed: bool = False) -> None:
    """Evaluate what a call returned (arrays, or lists and tuples of them) and check data against metadata."""
    arrays = []
    stack = [out]
    while stack:
        x = stack.pop()
        if isinstance(x, mx.array):
            arrays.append(x)
        elif isinstance(x, (list, tuple)):
            stack.extend(x)
    arrays = [a for a in arrays if a.size <= MAX_EVAL_SIZE]
    if not arrays:
        return
    done = []

    def run():
        try:
            mx.eval(arrays)
            done.append(None)
        except BaseException as e:
            done.append(e)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(120)  # a guard against hangs, not a timing assertion
    assert done, "eval hung"
    if data_indexed and isinstance(done[0], IndexError):
        return
    if done[0] is not None:  # the call accepted the input, so eval must not fail
        raise AssertionError(f"the call accepted its arguments but eval raised {done[0]!r}") from done[0]
    for a in arrays:
        d = np.asarray(a)
        assert d.shape == a.shape, f"data shape {d.shape} != declared {a.shape}"
        assert_stored(a, f"declared {a.dtype}{a.shape}")


def _call(fn, args, kwargs) -> None:
    sensible = SENSIBLE + (OSError,) if getattr(fn, "__name__", "") in FILE_OPS else SENSIBLE
    try:
        out = fn(*args, **kwargs)
    except sensible:
        return
    except Exception as e:  # any other class is a bug: a crash from deep inside, not a checked argument
        raise AssertionError(f"{fn.__name__}{tuple(args)!r} {kwargs!r} raised {type(e).__name__}: {e}") from e
    try:
        _check_result(out, getattr(fn, "__name__", "") in DATA_INDEXED)
    except AssertionError as e:
        raise AssertionError(f"{fn.__name__}{tuple(args)!r} {kwargs!r}: {e}") from e


def _signature(fn):
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return 1, (), False
    ps = sig.parameters.values()
    n_pos = sum(
        1 for p in ps if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty
    )
    kw = tuple(p.name for p in ps if p.name in KWARGS)
    var = any(p.kind is p.VAR_POSITIONAL for p in ps)
    return n_pos, kw, var


@pytest.fixture(autouse=True, scope="module")
def _in_a_scratch_dir(tmp_path_factory):
    """save, savez and the like, given junk paths, write files: into a scratch directory, not the repository."""
    old = os.getcwd()
    os.chdir(tmp_path_factory.mktemp("bad-input"))
    yield
    os.chdir(old)


@pytest.mark.parametrize("fn", _public_ops())
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
@given(data=st.data())
def test_bad_arguments_raise_at_the_call(fn, data):
    n_pos, kw, var = _signature(fn)
    n = n_pos + (data.draw(st.integers(1, 3)) if var else 0)
    bad_at = data.draw(st.integers(0, max(n - 1, 0) + len(kw)))  # which argument is the bad one
    args = [data.draw(BAD if i == bad_at else GOOD) for i in range(n)]
    kwargs = {}
    for j, name in enumerate(kw):
        if n + j == bad_at or data.draw(st.integers(0, 5)) == 0:
            kwargs[name] = data.draw(BAD)
    _call(fn, args, kwargs)


@pytest.mark.parametrize("fn", _public_ops())
def test_too_many_and_too_few_arguments(fn):
    n_pos, _, var = _signature(fn)
    with pytest.raises(TypeError):
        fn(*([mx.ones((2,))] * (n_pos + 5)), not_an_argument=1) if not var else fn(not_an_argument=1)
    if n_pos:
        with pytest.raises(TypeError):
            fn()


@pytest.mark.parametrize(
    "case",
    [
        lambda: mx.add(mx.ones((2, 3)), mx.ones((4,))),
        lambda: mx.matmul(mx.ones((2, 3)), mx.ones((2, 3))),
        lambda: mx.matmul(mx.ones(()), mx.ones((2,))),
        lambda: mx.sum(mx.ones((2, 3)), axis=2),
        lambda: mx.sum(mx.ones((2, 3)), axis=-3),
        lambda: mx.sum(mx.ones((2, 3)), axis=(0, 0)),
        lambda: mx.transpose(mx.ones((2, 3)), (0, 0)),
        lambda: mx.reshape(mx.ones((2, 3)), (4, 2)),
        lambda: mx.reshape(mx.ones((2, 3)), (-1, -1)),
        lambda: mx.zeros((2, -1)),
        lambda: mx.ones(-3),
        lambda: mx.full((2,), "x"),
        lambda: mx.concatenate([mx.ones((2, 3)), mx.ones((2, 4))]),
        lambda: mx.concatenate([]),
        lambda: mx.split(mx.ones((5,)), 2),
        lambda: mx.ones((2, 3))[5],
        lambda: mx.ones((2, 3))[0, 0, 0],
        lambda: mx.ones((2, 3))[mx.array([True, False])],
        lambda: mx.ones((2, 3))[mx.array([0.5])],
        lambda: mx.ones((2, 3))["a"],
        lambda: mx.where(mx.ones((2,)), mx.ones((3,)), 1),
        lambda: mx.negative(mx.array([True])),
        lambda: mx.bitwise_and(mx.ones((2,)), mx.ones((2,))),
        lambda: mx.add(mx.ones((2,)), "a"),
        lambda: mx.add(mx.ones((2,)), None),
        lambda: mx.exp(object()),
        lambda: mx.exp(mx.ones((2,)), stream="cpu"),
        lambda: mx.array([[1], [1, 2]]),
        lambda: mx.array(object()),
        lambda: mx.array([1, 2], dtype="notadtype"),
        lambda: mx.arange(0, 10, 0),
        lambda: mx.arange(float("nan")),
        lambda: mx.arange(float("inf")),
        lambda: mx.linspace(0, 1, -1),
        lambda: mx.eye(-1),
        lambda: mx.argmax(mx.ones((0,))),
        lambda: mx.max(mx.ones((0, 3)), axis=0),
        lambda: mx.ones((2,)).reshape(3),
        lambda: mx.ones((2,)) + mx.ones((3,)),
        lambda: mx.set_memory_limit(-1),
        lambda: mx.set_memory_limit("1GB"),
        lambda: mx.set_default_device("gpu"),
        lambda: mx.Device("cuda"),
        lambda: mx.new_stream(mx.Device(mx.cpu, 3)),
    ],
)
def test_specific_bad_inputs(case):
    with pytest.raises(SENSIBLE):
        case()


def test_ops_on_a_missing_device_raise_value_error():
    if mx.is_available(mx.gpu):
        pytest.skip("this machine has a GPU")
    for s in (mx.gpu, mx.Device(mx.gpu, 0), mx.Device(mx.gpu, 3)):
        with pytest.raises(ValueError, match="not available"):
            mx.add(mx.ones((2,)), 1, stream=s)
        with pytest.raises(ValueError):
            mx.new_stream(s)
        with pytest.raises(ValueError):
            mx.zeros((2,), stream=s)


def test_nan_and_inf_values_are_data_not_errors():
    x = mx.array([float("nan"), float("inf"), -float("inf"), 1.0])
    np.testing.assert_array_equal(np.asarray(mx.isnan(x)), [True, False, False, False])
    np.testing.assert_array_equal(np.asarray(mx.isinf(x)), [False, True, True, False])
    assert np.isnan(mx.sum(x).item())
    assert mx.max(mx.array([1.0, float("inf")])).item() == float("inf")


METHOD_BAD = [
    "a",
    None,
    Opaque(),
    [[1], [1, 2]],
    2**70,
    -7,
    99,
    (-1, 3),
    float("nan"),
    float("inf"),
    3j,
    mx.Device(mx.cpu, 5),
    mx.ones((2, 3, 4)),
    mx.ones(()),
    mx.ones((0,)),
    mx.array([True]),
    mx.array([1 + 1j]),
    (0, 0),
    Ellipsis,
    (),
]
OPERATORS = [
    "__add__",
    "__sub__",
    "__mul__",
    "__truediv__",
    "__floordiv__",
    "__mod__",
    "__pow__",
    "__matmul__",
    "__lt__",
    "__le__",
    "__eq__",
    "__ne__",
    "__gt__",
    "__ge__",
    "__and__",
    "__or__",
    "__xor__",
    "__lshift__",
    "__rshift__",
    "__radd__",
    "__rsub__",
    "__rpow__",
    "__rmatmul__",
    "__getitem__",
]


@pytest.mark.parametrize("name", sorted(n for n in dir(mx.array) if not n.startswith("_")) + OPERATORS)
@pytest.mark.parametrize("dtype", [mx.float32, mx.int32, mx.bool_, mx.complex64], ids=lambda d: d.name)
def test_array_methods_and_operators_with_bad_arguments(name, dtype):
    for bad in METHOD_BAD:
        a = mx.ones((2, 3), dtype)
        attr = getattr(a, name)
        if not callable(attr):
            return
        _call(attr, [bad], {})


@pytest.mark.parametrize(
    "case",
    [
        lambda: mx.ones((2, 3)).reshape(2**70),
        lambda: mx.round(mx.ones((2,)), float("inf")),
        lambda: mx.round(mx.ones((2,)), 2**70),
        lambda: mx.ones((2,)).__setitem__(0, "a"),
        lambda: mx.ones((2,)).__setitem__(5, 1.0),
    ],
)
def test_more_specific_bad_inputs(case):
    with pytest.raises(SENSIBLE):
        case()
