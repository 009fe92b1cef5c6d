"""Saving and loading: .npy, .npz, safetensors (written here and by the ``safetensors`` package)."""

from __future__ import annotations

import io
import json
import struct

import numpy as np
import pytest
from conftest import assert_close

import umx as mx

DTYPES = [mx.bool_, mx.uint8, mx.int8, mx.uint16, mx.int16, mx.uint32, mx.int32, mx.uint64, mx.int64, mx.float16,
          mx.bfloat16, mx.float32, mx.float64, mx.complex64]


def _sample(rng, dtype, shape=(2, 3)):
    x = rng.standard_normal(shape) * 50
    if dtype is mx.complex64:
        x = x + 1j * rng.standard_normal(shape)
    return mx.array(x if dtype.kind in "fc" else np.abs(x), dtype)


def _bits(a) -> np.ndarray:
    """The exact stored bits (bfloat16 as its float32 storage)."""
    return np.asarray(a).reshape(-1).view(np.uint8)


def test_npy_roundtrip(tmp_path, rng):
    for d in DTYPES:
        if d is mx.bfloat16:
            continue
        a = _sample(rng, d)
        mx.save(tmp_path / f"a_{d.name}", a)
        b = mx.load(str(tmp_path / f"a_{d.name}.npy"))
        assert b.dtype == d and b.shape == a.shape
        np.testing.assert_array_equal(np.asarray(b), np.asarray(a))
    ref = np.load(tmp_path / "a_float64.npy")
    assert ref.dtype == np.float64


def test_npy_lazy_and_file_objects(rng):
    a = mx.exp(mx.arange(4))  # unevaluated: saving evaluates
    buf = io.BytesIO()
    mx.save(buf, a)
    buf.seek(0)
    assert_close(mx.load(buf, format="npy"), np.exp(np.arange(4.0)), dtype=mx.float32)


def test_npz(tmp_path, rng):
    a, b = _sample(rng, mx.float32), _sample(rng, mx.int64, (4,))
    mx.savez(tmp_path / "x", a, w=b)
    out = mx.load(tmp_path / "x.npz")
    assert set(out) == {"arr_0", "w"}
    assert_close(out["arr_0"], np.asarray(a), dtype=mx.float32)
    assert_close(out["w"], np.asarray(b), dtype=mx.int64)
    mx.savez_compressed(str(tmp_path / "y.npz"), z=mx.zeros((100,)))
    out = mx.load(str(tmp_path / "y.npz"))
    assert_close(out["z"], np.zeros(100))
    with np.load(tmp_path / "y.npz") as z:
        assert z["z"].shape == (100,)


def test_safetensors_roundtrip_all_dtypes(tmp_path, rng):
    arrays = {f"t_{d.name}": _sample(rng, d) for d in DTYPES}
    arrays["scalar"] = mx.array(3.5)
    arrays["empty"] = mx.zeros((0, 4))
    mx.save_safetensors(str(tmp_path / "m"), arrays, {"format": "mlx", "note": "hi"})
    loaded, meta = mx.load(str(tmp_path / "m.safetensors"), return_metadata=True)
    assert meta == {"format": "mlx", "note": "hi"}
    assert set(loaded) == set(arrays)
    for k, a in arrays.items():
        assert loaded[k].dtype == a.dtype and loaded[k].shape == a.shape
        np.testing.assert_array_equal(_bits(loaded[k]), _bits(a))
    assert mx.load(str(tmp_path / "m.safetensors"))["t_int8"].dtype == mx.int8


def test_safetensors_layout(rng):
    buf = io.BytesIO()
    mx.save_safetensors(buf, {"b": mx.array([1, 2], mx.int16), "a": mx.array([1.0], mx.bfloat16)})
    raw = buf.getvalue()
    (n,) = struct.unpack("<Q", raw[:8])
    assert n % 8 == 0
    header = json.loads(raw[8:8 + n])
    assert header["a"] == {"dtype": "BF16", "shape": [1], "data_offsets": [0, 2]}
    assert header["b"] == {"dtype": "I16", "shape": [2], "data_offsets": [2, 6]}
    assert raw[8 + n:] == b"\x80\x3f" + b"\x01\x00\x02\x00"  # bfloat16 1.0 is 0x3f80, little-endian


def test_safetensors_interop_with_reference_package(tmp_path, rng):
    st = pytest.importorskip("safetensors")
    x32 = rng.standard_normal((3, 2)).astype(np.float32)
    bf = np.array([0x3F80, 0xC040, 0x7F80, 0x0001], np.uint16)  # 1, -3, inf, a subnormal
    i64 = np.arange(5, dtype=np.int64)
    specs = {
        "x": st.TensorSpec(dtype="float32", shape=x32.shape, data_ptr=x32.ctypes.data, data_len=x32.nbytes),
        "bf": st.TensorSpec(dtype="bfloat16", shape=bf.shape, data_ptr=bf.ctypes.data, data_len=bf.nbytes),
        "i": st.TensorSpec(dtype="int64", shape=i64.shape, data_ptr=i64.ctypes.data, data_len=i64.nbytes),
    }
    (tmp_path / "ref.safetensors").write_bytes(bytes(st.serialize(specs, {"k": "v"})))
    got, meta = mx.load(str(tmp_path / "ref.safetensors"), return_metadata=True)
    assert meta == {"k": "v"}
    assert_close(got["x"], x32, dtype=mx.float32)
    assert_close(got["i"], i64, dtype=mx.int64)
    assert got["bf"].dtype == mx.bfloat16
    assert (np.asarray(got["bf"]).view(np.uint32) >> 16).astype(np.uint16).tolist() == bf.tolist()
    # and the package reads what umx writes, bfloat16 bits included
    mx.save_safetensors(str(tmp_path / "ours.safetensors"), {"bf": got["bf"], "x": got["x"]}, {"a": "b"})
    back = dict(st.deserialize((tmp_path / "ours.safetensors").read_bytes()))
    assert back["bf"]["dtype"] == "BF16" and bytes(back["bf"]["data"]) == bf.tobytes()
    assert np.array_equal(np.frombuffer(bytes(back["x"]["data"]), np.float32).reshape(3, 2), x32)


def test_errors(tmp_path):
    with pytest.raises(ValueError, match="save"):
        mx.save(tmp_path / "b", mx.ones(2, mx.bfloat16))
    with pytest.raises(ValueError, match="load"):
        mx.load(str(tmp_path / "noext"))
    with pytest.raises(ValueError, match="load"):
        mx.load(str(tmp_path / "x.bin"))
    with pytest.raises(TypeError, match="save_safetensors"):
        mx.save_safetensors(str(tmp_path / "s"), [mx.ones(2)])
    with pytest.raises(ValueError, match="save_safetensors"):
        mx.save_safetensors(str(tmp_path / "s"), {"a": mx.ones(2)}, {"k": 1})
    with pytest.raises(NotImplementedError, match="save_gguf"):
        mx.save_gguf(str(tmp_path / "g.gguf"), {"a": mx.ones(2)})
    mx.save(tmp_path / "p.npy", mx.ones(2))
    with pytest.raises(ValueError, match="return_metadata"):
        mx.load(str(tmp_path / "p.npy"), return_metadata=True)
