"""Exporting functions to files and importing them: export_function, import_function, exporter, export_to_dot."""

from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import sys
import tempfile

import numpy as np
import pytest
from conftest import assert_close, assert_stored
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import umx as mx
from umx.export import _format, _shapes

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _roundtrip(tmp_path, fun, *args, shapeless=False, **kwargs):
    path = str(tmp_path / "f.umxfn")
    mx.export_function(path, fun, *args, shapeless=shapeless, **kwargs)
    return mx.import_function(path)


def _same(got, expected):
    got, expected = np.asarray(got), np.asarray(expected)
    assert got.dtype == expected.dtype and got.shape == expected.shape
    np.testing.assert_array_equal(got, expected)


FUNCTIONS = {
    "elementwise": (lambda x, y: mx.exp(x) * mx.sin(y) - x / (1 + mx.abs(y)), [(3, 4), (4,)]),
    "reductions": (lambda x: (mx.sum(x, axis=0), mx.max(x, axis=1, keepdims=True), mx.argmin(x, axis=1),
                              mx.logsumexp(x), mx.var(x, axis=(0, 1))), [(3, 4)]),
    "matmul": (lambda a, b: a @ b + 1.0, [(2, 3, 4), (4, 5)]),
    "indexing": (lambda x, i: (x[1:, ::2], x[i], x[:, None, 0], x[..., -1]), [(5, 4), "idx"]),
    "scatter": (lambda x, i, v: x.at[i].add(v), [(6,), "idx", (3,)]),
    "layout": (lambda x: (mx.transpose(x), mx.concatenate([x, x * 2], axis=1), mx.pad(x, ((1, 0), (2, 1))),
                          mx.tile(x, (2, 1)), mx.repeat(x, 2, axis=0), mx.roll(x, 1, axis=1)), [(3, 4)]),
    "siblings": (lambda x: (*mx.split(x, [1, 3], axis=0), *mx.linalg.qr(x[:3, :3], stream=mx.cpu)), [(4, 3)]),
    "sort_scan": (lambda x: (mx.sort(x, axis=0), mx.argsort(x), mx.cumsum(x, axis=1), mx.softmax(x)), [(3, 4)]),
    "dtypes": (lambda x: (x.astype(mx.bfloat16) * mx.array(1.5, mx.bfloat16), x.astype(mx.int16) // 3,
                          x.astype(mx.complex64) * 1j, x > 0), [(5,)]),
    "reshape": (lambda x: mx.reshape(x, (-1, 2)).sum(axis=1), [(3, 4)]),
}


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_export_matches_the_function(tmp_path, rng, device, name):
    fun, specs = FUNCTIONS[name]
    args = [mx.array(rng.integers(0, 3, size=3), mx.int32) if s == "idx" else
            mx.array(rng.standard_normal(s).astype(np.float32)) for s in specs]
    with mx.stream(device):
        imported = _roundtrip(tmp_path, fun, *args)
        expected = fun(*args)
        got = imported(*args)
    expected = expected if isinstance(expected, tuple) else (expected,)
    assert isinstance(got, tuple) and len(got) == len(expected)
    for g, e in zip(got, expected):
        _same(g, e)


def test_imported_nodes_run_on_the_exported_device(tmp_path, device):
    x = mx.ones((4,))
    imported = _roundtrip(tmp_path, lambda a: mx.add(mx.exp(a, stream=device), 1, stream=device), x)
    (out,) = imported(x)
    assert out._stream.device == mx.default_stream(device).device
    assert_close(out, np.exp(np.ones(4)) + 1)


def test_run_in_another_process(tmp_path, rng):
    x = rng.standard_normal((3, 4)).astype(np.float32)
    w = mx.array(rng.standard_normal((4, 2)).astype(np.float32))
    path = str(tmp_path / "f.umxfn")
    mx.export_function(path, lambda a: mx.tanh(a @ w), mx.array(x))
    np.save(tmp_path / "x.npy", x)
    code = ("import sys, numpy as np, umx as mx\n"
            f"f = mx.import_function({path!r})\n"
            f"np.save({str(tmp_path / 'y.npy')!r}, np.asarray(f(mx.load({str(tmp_path / 'x.npy')!r}))[0]))\n")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": ROOT})
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), np.tanh(x @ np.asarray(w)), rtol=1e-6)


def test_constants_random_keys_and_captures(tmp_path):
    captured = mx.arange(6).reshape(2, 3)
    mx.random.seed(3)
    imported = _roundtrip(tmp_path, lambda x: x + captured + mx.random.uniform(shape=(2, 3)), mx.zeros((2, 3)))
    first = np.asarray(imported(mx.zeros((2, 3)))[0])
    mx.random.seed(3)
    expected = np.asarray(mx.zeros((2, 3)) + captured + mx.random.uniform(shape=(2, 3)))
    np.testing.assert_array_equal(first, expected)  # the trace's key is a constant: the same draw every call
    np.testing.assert_array_equal(np.asarray(imported(mx.zeros((2, 3)))[0]), first)
    # outputs that are an input or a constant
    imported = _roundtrip(tmp_path, lambda x: (x, captured), mx.ones(2))
    a, b = imported(mx.full((2,), 7.0))
    _same(a, np.full(2, 7.0, np.float32))
    _same(b, np.asarray(captured))


def test_input_forms(tmp_path):
    x, z = mx.array([1, 2, 3]), mx.array([2, 2, 2])

    def fun(x, z=None):
        return x if z is None else x + z

    for export_args, export_kwargs in (((x,), {"z": z}), (((x,), {"z": z}), {})):
        f = _roundtrip(tmp_path, fun, *export_args, **export_kwargs)
        for call_args, call_kwargs in (((x,), {"z": z}), (((x,), {"z": z}), {}), (([x], {"z": z}), {})):
            _same(f(*call_args, **call_kwargs)[0], np.array([3, 4, 5], np.int32))
        for bad_args, bad_kwargs in (((x, z), {}), ((x,), {"y": z}), (((x,), {"y": z}), {})):
            with pytest.raises(ValueError, match="import_function"):
                f(*bad_args, **bad_kwargs)
    f = _roundtrip(tmp_path, fun, x=x, z=z)
    _same(f(x=x, z=z)[0], np.array([3, 4, 5], np.int32))
    _same(f({"z": z, "x": x})[0], np.array([3, 4, 5], np.int32))
    with pytest.raises(ValueError, match="no function .* matches"):
        f(x, z=z)
    f = _roundtrip(tmp_path, lambda a, b: a - b, a=mx.array(1.0), b=mx.array(1.0))
    assert f(b=mx.array(2.0), a=mx.array(3.0))[0].item() == 1.0
    for bad in ((mx.array(1.0), 1.0), (mx.array(1.0), [mx.array(1.0)]), ([[mx.array(1.0)]],), ("hi",)):
        with pytest.raises(ValueError, match="Inputs can be either"):
            f(*bad)
    f = _roundtrip(tmp_path, lambda a: a * 2, mx.array([1.0]))
    for bad in (mx.array([1, 2]), mx.array([1.0, 2.0]), mx.array([[1.0]])):
        with pytest.raises(ValueError, match=r"no function .* matches.*\n.*\(1,\) float32"):
            f(bad)


def test_export_errors(tmp_path):
    path = str(tmp_path / "f.umxfn")
    for bad in ((lambda: (mx.zeros(3), 1),), (lambda: (mx.zeros(3), [mx.zeros(3)]),), (lambda: None,),
                (lambda x: {"a": x}, mx.ones(1))):
        with pytest.raises(ValueError, match="Outputs can be either"):
            mx.export_function(path, *bad)
    with pytest.raises(ValueError, match="evaluated an array"):
        mx.export_function(path, lambda x: x * x.item(), mx.array(2.0))
    with pytest.raises(ValueError, match="Inputs can be either"):
        mx.export_function(path, lambda x: x, mx.array(1.0), "hi")
    with pytest.raises(TypeError, match="metadata must be a string"):
        mx.export_function(path, lambda x: x, mx.array(1.0), metadata={"a": 1})
    with pytest.raises(ValueError, match="metadata can only be saved to a file"):
        mx.export_function(lambda d: None, lambda x: x, mx.array(1.0), metadata="m")
    with pytest.raises(ValueError, match="Custom cannot be exported"):
        mx.export_function(path, mx.checkpoint(lambda x: mx.sin(x)), mx.ones(2))
    mx.save(tmp_path / "w.npy", mx.ones(2))
    with pytest.raises(ValueError, match="Load cannot be exported: it would run code or read files"):
        mx.export_function(path, lambda x: x + mx.load(tmp_path / "w.npy"), mx.ones(2))
    with pytest.raises(TypeError, match="import_function: file must be a path"):
        mx.import_function(io.BytesIO())


def test_exporter_signatures_and_shared_constants(tmp_path):
    path = str(tmp_path / "f.umxfn")
    constant = mx.zeros((16, 2048))
    mx.eval(constant)

    def fun(*args):
        return constant + sum(args)

    with mx.exporter(path, fun) as ex:
        for i in range(5):
            ex(*[mx.array(1)] * i)
        with pytest.raises(RuntimeError, match="already exported with this signature"):
            ex(mx.array(1))
    with pytest.raises(RuntimeError, match="closed"):
        ex(mx.array([1, 2]))
    assert os.path.getsize(path) < constant.nbytes + 8192  # the constant is stored once
    f = mx.import_function(path)
    for i in range(5):
        _same(f(*[mx.array(1)] * i)[0], np.full((16, 2048), i, np.float32))


def test_metadata(tmp_path):
    path = str(tmp_path / "f.umxfn")
    meta = json.dumps({"name": "model", "params": 7_000_000_000})
    mx.export_function(path, mx.abs, mx.array([-1.0]), metadata=meta)
    f, got = mx.import_function(path, return_metadata=True)
    assert got == meta and f(mx.array([-2.0]))[0].item() == 2.0
    mx.export_function(path, mx.abs, mx.array([-1.0]))
    assert mx.import_function(path, return_metadata=True)[1] == ""


def test_shapeless(tmp_path, rng):
    def fun(x, w):
        h = mx.maximum(x @ w, 0.0)  # matmul, batch broadcast
        flat = mx.reshape(h, (-1, h.shape[-1]))  # (B * T, H): a group that changes size
        return mx.sum(flat, axis=1), mx.concatenate([h, h], axis=1)[:, 1:], mx.softmax(h, axis=-1)

    w = mx.array(rng.standard_normal((8, 5)).astype(np.float32))
    f = _roundtrip(tmp_path, fun, mx.zeros((2, 3, 8)), w, shapeless=True)
    for shape in ((2, 3, 8), (4, 7, 8), (1, 1, 8)):
        x = mx.array(rng.standard_normal(shape).astype(np.float32))
        got = f(x, w)
        for g, e in zip(got, fun(x, w)):
            assert g.shape == e.shape
            np.testing.assert_allclose(np.asarray(g), np.asarray(e), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="ranks and dtypes must match"):
        f(mx.zeros((2, 8)), w)
    with pytest.raises(ValueError, match="Matmul .* inner dimensions"):
        f(mx.zeros((2, 3, 9)), w)
    no_rule = _roundtrip(tmp_path, lambda x: mx.einsum("ij->ji", x) + 1, mx.zeros((2, 3)), shapeless=True)
    _same(no_rule(mx.ones((2, 3)))[0], np.full((3, 2), 2.0, np.float32))
    with pytest.raises(ValueError, match="Einsum has no shape rule"):
        no_rule(mx.ones((3, 3)))


SHAPELESS_CASES = [  # (function traced, traced shape, new shape, what the imported function computes on it)
    (lambda x: mx.reshape(x, (x.shape[0] * x.shape[1], x.shape[2])), (2, 3, 4), (5, 7, 4),
     lambda x: mx.reshape(x, (-1, 4))),
    (lambda x: mx.expand_dims(x, 1), (2, 3), (4, 5), lambda x: mx.expand_dims(x, 1)),
    (lambda x: mx.squeeze(x, 1), (2, 1, 3), (4, 1, 5), lambda x: mx.squeeze(x, 1)),
    (lambda x: mx.broadcast_to(x, (5, 2, 3)), (2, 3), (4, 3), lambda x: mx.broadcast_to(x, (5, 4, 3))),
    (lambda x: mx.broadcast_to(x, (2, 4)), (2, 1), (6, 1), lambda x: mx.broadcast_to(x, (6, 4))),
    (lambda x: x[1:-1, None, ::2], (5, 6), (9, 3), lambda x: x[1:-1, None, ::2]),
    (lambda x: mx.split(x, [1, 2], axis=1), (2, 4), (3, 6), lambda x: mx.split(x, [1, 2], axis=1)),
    (lambda x: mx.tile(x, (2, 1, 3)), (2, 3), (1, 4), lambda x: mx.tile(x, (2, 1, 3))),
    (lambda x: mx.pad(x, ((0, 1), (2, 2))), (2, 3), (5, 1), lambda x: mx.pad(x, ((0, 1), (2, 2)))),
    (lambda x: mx.argmax(x, axis=1, keepdims=True), (2, 3), (4, 5), lambda x: mx.argmax(x, axis=1, keepdims=True)),
    (lambda x: mx.take_along_axis(x, mx.array([[1, 0, 1]]), axis=0), (2, 3), (5, 3),
     lambda x: mx.take_along_axis(x, mx.array([[1, 0, 1]]), axis=0)),
    (lambda x: mx.repeat(x, 2, axis=1) + mx.transpose(mx.repeat(x, 2, axis=1), (0, 1)), (2, 3), (4, 1),
     lambda x: 2 * mx.repeat(x, 2, axis=1)),
    (lambda x: mx.cumsum(mx.sort(x, axis=0), axis=1).view(mx.int32), (2, 3), (3, 5),
     lambda x: mx.cumsum(mx.sort(x, axis=0), axis=1).view(mx.int32)),
]


@pytest.mark.parametrize("case", range(len(SHAPELESS_CASES)))
def test_shapeless_rules_against_the_ops(tmp_path, rng, case):
    fun, traced, new, expected = SHAPELESS_CASES[case]
    f = _roundtrip(tmp_path, fun, mx.zeros(traced), shapeless=True)
    x = mx.array(rng.standard_normal(new).astype(np.float32))
    want = expected(x)
    want = want if isinstance(want, (list, tuple)) else [want]
    got = f(x)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        _same(g, w)


def test_reshape_and_broadcast_rules():
    assert _shapes.reshaped((1, 40, 64), (40, 64), (1, 248, 64)) == (248, 64)
    assert _shapes.reshaped((2, 3, 12), (2, 3, 4, 3), (5, 7, 12)) == (5, 7, 4, 3)
    assert _shapes.reshaped((6, 4), (2, 3, 4), (12, 4)) == (2, 6, 4)  # the group's last axis that is not 1
    assert _shapes.reshaped((3, 4), (3, 1, 4), (5, 4)) == (5, 1, 4)
    with pytest.raises(ValueError, match="cannot take an input of shape"):
        _shapes.reshaped((6, 4), (2, 3, 4), (7, 4))
    with pytest.raises(ValueError, match="no axis groups"):
        _shapes.reshaped((0, 4), (4, 0), (1, 4))
    assert _shapes.broadcast((3, 1), (2, 3, 4), (5, 1)) == (2, 5, 4)
    with pytest.raises(ValueError, match="BroadcastTo"):
        _shapes.broadcast((3, 1), (3, 4), (3, 2))


def test_callback():
    events = []
    mx.export_function(events.append, lambda x, y: mx.log(mx.abs(x - y)).astype(mx.int32), mx.array([1.0, 2.0]),
                       y=mx.array(1.0))
    kinds = [e["type"] for e in events]
    assert kinds == ["inputs", "keyword_inputs", "outputs", "constants"] + ["primitive"] * 4
    assert [n for n, _, _ in events[0]["inputs"]] == ["A", "B"] and events[0]["inputs"][0][1:] == ((2,),
                                                                                                   mx.float32)
    assert events[1]["keywords"] == [("y", "B")]
    assert events[3]["constants"] == []
    prims = [(e["name"], e["arguments"]) for e in events[4:]]
    assert prims == [("Subtract", []), ("Abs", []), ("Log", [2]), ("AsType", [mx.int32])]
    assert events[-1]["outputs"] == events[2]["outputs"]


def test_export_to_dot(tmp_path):
    a, b = mx.array(1.0), mx.array([2.0, 3.0])
    c = mx.exp(a + b)
    buf = io.StringIO()
    mx.export_to_dot(buf, c, total=mx.sum(c))
    text = buf.getvalue()
    assert text.startswith("digraph {") and text.rstrip().endswith("}")
    assert [line.split('"')[1] for line in text.splitlines() if "label" in line] == ["Add", "Exp", "Sum"]
    assert '{ rank=sink; "total"; }' in text and text.count("rank=source") == 2
    q, r = mx.divmod(mx.array([7]), mx.array([2]))
    mx.export_to_dot(str(tmp_path / "g.dot"), [q, r])
    labels = [line.split('"')[1] for line in (tmp_path / "g.dot").read_text().splitlines() if "label" in line]
    assert labels[:2] == ["FloorDivide", "Remainder"]
    s = mx.split(mx.arange(6), 3)
    buf = io.StringIO()
    mx.export_to_dot(buf, *s)
    assert buf.getvalue().count('label ="Split"') == 1  # one box for the sibling group


# -- the format: what importing accepts -----------------------------------------------------------------------------

def _exported(tmp_path) -> bytes:
    path = str(tmp_path / "ok.umxfn")
    mx.export_function(path, lambda x: mx.reshape(x, (6,)) * mx.array(2.0) + x.sum(), mx.ones((2, 3)))
    with open(path, "rb") as fh:
        return fh.read()


def _rewrite(raw: bytes, edit) -> bytes:
    (n,) = struct.unpack("<Q", raw[8:16])
    head = json.loads(raw[16:16 + n])
    edit(head)
    text = json.dumps(head).encode()
    return raw[:8] + struct.pack("<Q", len(text)) + text + raw[16 + n:]


def _step(i):
    return lambda h, f: f(h["traces"][0]["steps"][i])


MALFORMED = {
    "unknown_op": lambda h: h["traces"][0]["steps"][0].update(op="os.system"),
    "not_exported": lambda h: h["traces"][0]["steps"][0].update(
        op="Load", params={"path": "/etc/passwd", "offset": 0, "shape": {"tuple": [4]}, "file_dtype": "|u1",
                           "order": "C", "dtype": {"dtype": "uint8"}, "name": "x"}),
    "missing_param": lambda h: h["traces"][0]["steps"][0]["params"].clear(),
    "extra_param": lambda h: h["traces"][0]["steps"][0]["params"].update(evil={"tuple": []}),
    "unknown_tag": lambda h: h["traces"][0]["steps"][0]["params"].update(shape={"pickle": "cos\nsystem"}),
    "bad_dtype": lambda h: h["traces"][0]["steps"][0].update(dtype="object"),
    "bad_device": lambda h: h["traces"][0]["steps"][0].update(device="tpu"),
    "forward_ref": lambda h: h["traces"][0]["steps"][0].update(**{"in": [99]}),
    "negative_shape": lambda h: h["traces"][0]["steps"][0].update(shape=[-6]),
    "wrong_shape": lambda h: h["traces"][0]["steps"][-1].update(shape=[7]),
    "bad_group": lambda h: h["traces"][0]["steps"][1].update(group=5),
    "bad_output": lambda h: h["traces"][0].update(outputs=[1000]),
    "bad_constant": lambda h: h["traces"][0].update(constants=[5]),
    "kwargs_unsorted": lambda h: h["traces"][0].update(kwargs=["b", "a"]),
    "version": lambda h: h.update(version=2),
    "format": lambda h: h.update(format="other"),
    "metadata": lambda h: h.update(metadata=3),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_import_refuses_malformed_files(tmp_path, case):
    path = tmp_path / f"{case}.umxfn"
    path.write_bytes(_rewrite(_exported(tmp_path), MALFORMED[case]))
    with pytest.raises(ValueError, match=r"import_function: .*\.umxfn"):
        mx.import_function(str(path))


def test_import_refuses_damaged_files(tmp_path):
    raw = _exported(tmp_path)
    (n,) = struct.unpack("<Q", raw[8:16])
    deep = b"[" * 100_000 + b"]" * 100_000
    for name, bad in {"magic": b"NOTUMX!!" + raw[8:], "short": raw[:12], "header_past_end": raw[:16 + n - 1],
                      "constants_truncated": raw[:-3], "deep": raw[:8] + struct.pack("<Q", len(deep)) + deep,
                      "not_json": raw[:16] + b"{" * n + raw[16 + n:]}.items():
        path = tmp_path / f"{name}.umxfn"
        path.write_bytes(bad)
        with pytest.raises(ValueError, match=f"import_function: .*{name}"):
            mx.import_function(str(path))


def test_parameter_encoding_round_trips():
    values = [None, True, 0, -(2**70), "array", 1.5, float("inf"), -0.0, 1 + 2j, (1, (2, [3])), slice(None, -1, 2),
              Ellipsis, mx.bfloat16, np.float32(0.1), np.int64(-3), np.bool_(True), (slice(1, None), None, "array")]
    for v in values:
        back = _format.decode(json.loads(json.dumps(_format.encode(v, "v"))), "v")
        assert type(back) is type(v) and repr(back) == repr(v)
    assert _format.decode("array", "v") is mx.primitives.ARRAY  # interned, as the key placeholder must be
    nan = _format.decode(_format.encode(float("nan"), "v"), "v")
    assert nan != nan
    for bad in (lambda: 1, object(), {1: 2}, np.array([1, 2]), b"bytes"):
        with pytest.raises(ValueError, match="cannot be exported"):
            _format.encode(bad, "v")


def test_every_primitive_class_is_registered_or_refused():
    import umx.primitives as P

    classes = [c.__name__ for c in P.base.subclasses()]
    registry = _format.registry()
    shared_names = {n for n in classes if classes.count(n) > 1}
    assert set(classes) - set(registry) <= _format.NOT_EXPORTED | shared_names
    for name, (_, _, instance) in registry.items():
        if instance is not None:
            assert _format.build(name, {}, "t") is instance


FUZZ_EXAMPLES = int(os.environ.get("UMX_IO_FUZZ_EXAMPLES", "25"))


def _fuzz_subject():
    w = mx.arange(6, dtype=mx.float32).reshape(2, 3)

    def fun(x, i):
        y = mx.concatenate([x, w], axis=0)[i] @ mx.transpose(w)
        return mx.sum(mx.reshape(y, (-1,)), keepdims=True), mx.split(mx.broadcast_to(x, (3, 2, 3)), 3, axis=2)[1]

    return fun, (mx.ones((2, 3)), mx.array([0, 3]))


@settings(max_examples=FUZZ_EXAMPLES, deadline=None, derandomize=FUZZ_EXAMPLES <= 25,
          suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_fuzz_import(data):
    """A damaged file is refused with a ValueError, or gives a function whose results, if they evaluate, have the
    data their shapes and dtypes declare."""
    fun, args = _fuzz_subject()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "f.umxfn")
        mx.export_function(path, fun, *args)
        with open(path, "rb") as fh:
            raw = bytearray(fh.read())
        (n,) = struct.unpack("<Q", raw[8:16])
        for _ in range(data.draw(st.integers(1, 4))):
            i = data.draw(st.integers(0, 16 + n - 1))  # (the constants are a safetensors file: fuzzed elsewhere)
            raw[i] = data.draw(st.sampled_from([raw[i] ^ (1 << data.draw(st.integers(0, 7))),
                                                 *b"0123456789-[]{},\":tfn"]))
        with open(path, "wb") as fh:
            fh.write(raw)
        try:
            f = mx.import_function(path)
            outs = f(*args)
        except ValueError as e:
            assert str(e).startswith("import_function"), e
            return
    try:
        mx.eval(outs)
    except Exception:  # a loud failure at eval is allowed; a result that disagrees with its shape is not
        return
    for o in outs:
        assert np.asarray(o).shape == o.shape, (np.asarray(o).shape, o.shape)
        assert_stored(o, f"imported output {o.dtype}{o.shape}")
