"""Saving and loading: .npy, .npz, safetensors (written here and by the ``safetensors`` package)."""

from __future__ import annotations

import importlib.util
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
    mx.save(tmp_path / "p.npy", mx.ones(2))
    with pytest.raises(ValueError, match="return_metadata"):
        mx.load(str(tmp_path / "p.npy"), return_metadata=True)


# -- lazy loading, streams and devices ---------------------------------------------------------------------------

def test_load_by_path_is_lazy_and_reads_on_its_stream(tmp_path, rng, device):
    x = rng.standard_normal((3, 4)).astype(np.float32)
    mx.save_safetensors(tmp_path / "w", {"x": mx.array(x), "i": mx.arange(5)})
    mx.save(tmp_path / "a", mx.array(x))
    for loaded in (mx.load(str(tmp_path / "w.safetensors"), stream=device)["x"],
                   mx.load(tmp_path / "a.npy", stream=device)):
        assert loaded.shape == (3, 4) and loaded.dtype == mx.float32
        assert loaded._data is None  # nothing read yet
        assert_close(mx.exp(loaded, stream=device), np.exp(x), dtype=mx.float32)


def test_load_then_use_on_another_stream(tmp_path, rng, placement):
    producer, consumer = placement
    x = rng.standard_normal(64).astype(np.float32)
    mx.save(tmp_path / "a.npy", mx.array(x))
    out = mx.add(mx.load(tmp_path / "a.npy", stream=producer), 1.0, stream=consumer)
    assert_close(out, x + 1, dtype=mx.float32)


def test_truncated_npy_raises_at_eval(tmp_path):
    path = tmp_path / "t.npy"
    np.save(path, np.arange(16, dtype=np.float32))
    with open(path, "r+b") as f:
        f.truncate(path.stat().st_size - 8)
    a = mx.load(path)  # the header is fine: the data are read at eval, as in MLX
    with pytest.raises(mx.io.FileReadError, match=r"load: .*t\.npy.*shape \(16,\)") as err:
        mx.eval(a + 1)
    assert isinstance(err.value, ValueError) and isinstance(err.value, RuntimeError)


def test_file_changed_after_load(tmp_path):
    path = str(tmp_path / "w.safetensors")
    mx.save_safetensors(path, {"big": mx.zeros((100,)), "small": mx.ones((2,))})
    loaded = mx.load(path)
    mx.save_safetensors(path, {"small": mx.ones((2,))})
    with pytest.raises(ValueError, match="load: .*'big'"):
        mx.eval(loaded["big"])
    (tmp_path / "w.safetensors").unlink()
    with pytest.raises(ValueError, match="load: .*'small'.*cannot read"):
        mx.eval(loaded["small"])


def test_file_objects_are_read_at_once(tmp_path, rng):
    x = rng.standard_normal((2, 3)).astype(np.float32)
    path = tmp_path / "w.safetensors"
    mx.save_safetensors(str(path), {"x": mx.array(x)})
    with open(path, "rb") as f:
        loaded = mx.load(f)
    path.unlink()  # the data were read when load returned
    assert_close(loaded["x"], x, dtype=mx.float32)
    buf = io.BytesIO()
    mx.save(buf, mx.array(x))
    mx.save(buf, mx.array(x * 2))  # two arrays in one stream: each load reads one
    buf.seek(0)
    assert_close(mx.load(buf, format="npy"), x)
    assert_close(mx.load(buf, format="npy"), x * 2)


# -- .npy and .npz ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("np_dtype", ["<f8", ">f4", ">i2", "<u8", "|b1", "<c8", "<f2", "|i1"])
def test_npy_dtypes_byte_orders_and_layouts(tmp_path, rng, np_dtype):
    x = (rng.standard_normal((3, 4)) * 20).astype(np_dtype)
    for name, data in (("c", x), ("f", np.asfortranarray(x)), ("s", np.array(x[0, 0])), ("e", x[:0])):
        np.save(tmp_path / f"{name}.npy", data)
        for got in (mx.load(tmp_path / f"{name}.npy"), mx.load(io.BytesIO((tmp_path / f"{name}.npy").read_bytes()),
                                                                format="npy")):
            assert got.shape == data.shape and got.dtype.np == np.dtype(np_dtype).newbyteorder("=")
            np.testing.assert_array_equal(np.asarray(got), data)


@pytest.mark.parametrize("bad", [np.complex128, np.float128, "U3", "datetime64[s]", [("a", "<i4")]])
def test_npy_dtypes_umx_lacks(tmp_path, bad):
    path = tmp_path / "x.npy"
    np.save(path, np.zeros(3, dtype=bad))
    with pytest.raises(ValueError, match=r"load: .*x\.npy.*dtype .* not supported"):
        mx.load(path)
    np.savez(tmp_path / "z.npz", good=np.ones(2), bad=np.zeros(3, dtype=bad))
    with pytest.raises(ValueError, match=r"load: .*z\.npz.*'bad'.*not supported"):
        mx.load(tmp_path / "z.npz")


def test_npy_malformed(tmp_path):
    cases = {
        "empty": b"",
        "not_npy": b"hello world, not numpy",
        "bad_version": b"\x93NUMPY\x09\x00" + b"\x00" * 20,
        "bad_header": b"\x93NUMPY\x01\x00\x10\x00{'descr': 'oops'" + b" " * 5,
        "negative": _npy_with_header("{'descr': '<f4', 'fortran_order': False, 'shape': (-1, 2), }"),
        "object": _npy_with_header("{'descr': '|O', 'fortran_order': False, 'shape': (2,), }"),
    }
    for name, raw in cases.items():
        path = tmp_path / f"{name}.npy"
        path.write_bytes(raw)
        with pytest.raises(ValueError, match=rf"load: .*{name}\.npy"):
            mx.load(path)
        with pytest.raises(ValueError, match="load: "):
            mx.load(io.BytesIO(raw), format="npy")
    short = _npy_with_header("{'descr': '<f4', 'fortran_order': False, 'shape': (4,), }") + b"\x00" * 12
    with pytest.raises(ValueError, match="load: .*ends at byte 12"):
        mx.load(io.BytesIO(short), format="npy")
    huge = _npy_with_header("{'descr': '<f8', 'fortran_order': False, 'shape': (1 << 40, 1 << 20), }")
    with pytest.raises(ValueError, match="load: "):
        mx.load(io.BytesIO(huge), format="npy")  # refused before any allocation of that size
    (tmp_path / "huge.npy").write_bytes(huge)
    with pytest.raises(ValueError, match="load: .*huge"):
        mx.eval(mx.load(tmp_path / "huge.npy"))


def _npy_with_header(text: str) -> bytes:
    text = text + " " * (-(10 + len(text) + 1) % 64) + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text.encode()


def test_format_mismatches_raise_at_the_call(tmp_path):
    mx.savez(tmp_path / "z.npz", a=mx.ones(2))
    mx.save(tmp_path / "a.npy", mx.ones(2))
    with pytest.raises(ValueError, match=r"load: .*z\.npz.*not a \.npy file"):
        mx.load(tmp_path / "z.npz", format="npy")
    with pytest.raises(ValueError, match=r"load: .*a\.npy.*format='npy'"):
        mx.load(tmp_path / "a.npy", format="npz")
    with pytest.raises(ValueError, match=r"load: .*z\.npz.*safetensors"):
        mx.load(tmp_path / "z.npz", format="safetensors")
    with pytest.raises(ValueError, match="load: unknown format 'pickle'"):
        mx.load(tmp_path / "a.npy", format="pickle")
    (tmp_path / "junk.npz").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(ValueError, match=r"load: .*junk\.npz.*not a valid \.npz"):
        mx.load(tmp_path / "junk.npz")
    with pytest.raises(ValueError, match="return_metadata"):
        mx.load(tmp_path / "z.npz", return_metadata=True)


def test_npz_members_keep_dtypes_and_shapes(tmp_path, rng):
    data = {"f64": rng.standard_normal((2, 2)), "b": np.array([True, False]), "s": np.array(3, np.int16),
            "e": np.zeros((0, 3), np.uint32), "f": np.asfortranarray(rng.standard_normal((3, 2)).astype("<f4"))}
    np.savez_compressed(tmp_path / "z.npz", **data)
    out = mx.load(tmp_path / "z.npz")
    for k, v in data.items():
        assert out[k].shape == v.shape and out[k].dtype.np == v.dtype
        np.testing.assert_array_equal(np.asarray(out[k]), v)


# -- safetensors: every malformed header raises, naming the file and the tensor ------------------------------------

def _st_file(header: dict | list | str, data: bytes = b"") -> bytes:
    text = header if isinstance(header, str) else json.dumps(header)
    return struct.pack("<Q", len(text.encode())) + text.encode() + data


def _entry(dtype="F32", shape=(2,), offsets=(0, 8)):
    return {"dtype": dtype, "shape": list(shape), "data_offsets": list(offsets)}


SAFETENSORS_MALFORMED = {
    # the cases the reader of the first version returned garbage for (bytes of the header, or overlapping data)
    "negative_offsets": ({"t": _entry(offsets=(-8, 0))}, 8, "data_offsets"),
    "offsets_past_the_end": ({"t": _entry(offsets=(8, 16))}, 8, "gap"),
    "negative_dimension": ({"t": _entry(shape=(-2,))}, 8, "non-negative"),
    "overlap": ({"a": _entry(offsets=(0, 8)), "b": _entry(offsets=(4, 12))}, 12, "overlaps"),
    "metadata_not_a_dict": ({"__metadata__": ["x"], "t": _entry()}, 8, "__metadata__"),
    "metadata_not_strings": ({"__metadata__": {"k": 1}, "t": _entry()}, 8, "__metadata__"),
    # and the rest of the reference implementation's checks
    "gap": ({"a": _entry(shape=(1,), offsets=(0, 4)), "b": _entry(shape=(1,), offsets=(8, 12))}, 12, "gap"),
    "short_data": ({"t": _entry()}, 4, "data end at byte 8"),
    "extra_data": ({"t": _entry()}, 12, "data end at byte 8"),
    "bytes_not_shape": ({"t": _entry(shape=(3,))}, 8, "takes 12"),
    "reversed_offsets": ({"t": _entry(offsets=(8, 0))}, 8, "end before"),
    "one_offset": ({"t": {"dtype": "F32", "shape": [2], "data_offsets": [0]}}, 8, "two non-negative"),
    "float_offsets": ({"t": _entry(offsets=(0.0, 8.0))}, 8, "two non-negative"),
    "bool_shape": ({"t": _entry(shape=(True, 2))}, 8, "non-negative"),
    "unknown_dtype": ({"t": _entry(dtype="F24")}, 8, "unknown safetensors dtype"),
    "dtype_umx_lacks": ({"t": _entry(dtype="F8_E5M2", offsets=(0, 2))}, 2, "not supported"),
    "entry_not_object": ({"t": [1, 2]}, 0, "must be an object"),
    "header_list": ([1, 2], 0, "JSON object"),
    "header_not_json": ("{'t': 1}", 0, "not valid JSON"),
    "deep_json": ("[" * 100_000 + "]" * 100_000, 0, "not valid JSON"),
    "duplicate_names": ('{"t": ' + json.dumps(_entry()) + ', "t": ' + json.dumps(_entry()) + "}", 8, "duplicate"),
}


@pytest.mark.parametrize("case", sorted(SAFETENSORS_MALFORMED))
def test_safetensors_malformed(tmp_path, case):
    header, n_data, message = SAFETENSORS_MALFORMED[case]
    raw = _st_file(header, bytes(range(n_data)))
    path = tmp_path / f"{case}.safetensors"
    path.write_bytes(raw)
    with pytest.raises(ValueError, match=rf"load: .*{case}\.safetensors.*{message}"):
        mx.load(str(path))
    with pytest.raises(ValueError, match=message):
        mx.load(io.BytesIO(raw), format="safetensors")
    if isinstance(header, dict) and "t" in header and "metadata" not in case:
        with pytest.raises(ValueError, match="array 't'"):
            mx.load(str(path))


def test_safetensors_null_metadata_is_none(tmp_path):
    # (MLX writes "__metadata__": null where there is none: its save_weights and save_safetensors)
    raw = _st_file({"__metadata__": None, "t": _entry()}, np.array([1.5, -2.0], np.float32).tobytes())
    arrays, meta = mx.load(io.BytesIO(raw), format="safetensors", return_metadata=True)
    assert meta == {} and arrays["t"].tolist() == [1.5, -2.0]


def test_weights_mlx_saved_load_and_umx_saved_load_in_mlx(tmp_path):
    mlx = pytest.importorskip("mlx.core")
    import mlx.nn as mlx_nn

    import umx.nn as nn
    from umx.utils import tree_flatten

    theirs, ours = mlx_nn.Linear(4, 3), nn.Linear(4, 3)
    for ext in ("safetensors", "npz"):
        theirs.save_weights(str(tmp_path / f"mlx.{ext}"))
        ours.load_weights(str(tmp_path / f"mlx.{ext}"))
        for name, value in tree_flatten(ours.parameters()):
            np.testing.assert_array_equal(np.asarray(value), np.asarray(theirs[name]))
        mine = nn.Linear(4, 3)
        mine.save_weights(str(tmp_path / f"umx.{ext}"))
        theirs.load_weights(str(tmp_path / f"umx.{ext}"))
        np.testing.assert_array_equal(np.asarray(theirs.weight), np.asarray(mine.weight))
    mlx.save_safetensors(str(tmp_path / "b.safetensors"), {"h": mlx.array([1.5, -2.25], mlx.bfloat16)})
    assert mx.load(str(tmp_path / "b.safetensors"))["h"].astype(mx.float32).tolist() == [1.5, -2.25]


def test_safetensors_bad_lengths(tmp_path):
    for raw, message in ((b"", "fewer than the 8"), (b"\x01\x02", "fewer than the 8"),
                         (struct.pack("<Q", 1 << 40) + b"{}", "more than the"),
                         (struct.pack("<Q", 100) + b"{}", "header of 100 bytes in a file of 10"),
                         (struct.pack("<Q", 2) + b"\xff\xfe", "not valid JSON")):
        with pytest.raises(ValueError, match=f"load: .*{message}"):
            mx.load(io.BytesIO(raw), format="safetensors")


def test_safetensors_float8_loads_as_codes():
    codes = bytes([0x00, 0x7E, 0xFE, 0xB6, 0x38])
    raw = _st_file({"t": _entry("F8_E4M3", (5,), (0, 5))} | {}, codes)
    got = mx.load(io.BytesIO(raw), format="safetensors")["t"]
    assert got.dtype == mx.uint8 and np.asarray(got).tobytes() == codes
    ml_dtypes = pytest.importorskip("ml_dtypes")
    values = np.frombuffer(codes, ml_dtypes.float8_e4m3fn).astype(np.float32)
    assert values.tolist() == [0.0, 448.0, -448.0, -0.875, 1.0]


def test_safetensors_zero_sized_and_empty_files(tmp_path):
    mx.save_safetensors(str(tmp_path / "none"), {})
    assert mx.load(str(tmp_path / "none.safetensors")) == {}
    arrays = {"a": mx.zeros((0,)), "b": mx.zeros((3, 0), mx.int8), "c": mx.ones((2,))}
    mx.save_safetensors(str(tmp_path / "z"), arrays)
    out = mx.load(str(tmp_path / "z.safetensors"))
    for k, a in arrays.items():
        assert out[k].shape == a.shape and out[k].dtype == a.dtype
        np.testing.assert_array_equal(np.asarray(out[k]), np.asarray(a))


def test_save_safetensors_checks_its_arguments(tmp_path):
    a = mx.ones(2)
    with pytest.raises(TypeError, match="save_safetensors: array names must be strings, got 1"):
        mx.save_safetensors(str(tmp_path / "s"), {"a": a, 1: a})
    with pytest.raises(TypeError, match="save_safetensors: array 'a' must be a umx array, got ndarray"):
        mx.save_safetensors(str(tmp_path / "s"), {"a": np.ones(2)})
    with pytest.raises(ValueError, match="save_safetensors: '__metadata__' is reserved"):
        mx.save_safetensors(str(tmp_path / "s"), {"__metadata__": a})
    with pytest.raises(ValueError, match="save_safetensors: metadata"):
        mx.save_safetensors(str(tmp_path / "s"), {"a": a}, {1: "x"})
    assert not (tmp_path / "s.safetensors").exists()


# -- bfloat16, non-contiguous arrays -------------------------------------------------------------------------------

def _every_bfloat16() -> mx.array:
    bits = np.arange(1 << 16, dtype=np.uint32) << 16
    return mx.load(io.BytesIO(_st_file({"t": _entry("BF16", (1 << 16,), (0, 1 << 17))},
                                       (bits >> 16).astype("<u2").tobytes())), format="safetensors")["t"]


def test_bfloat16_bits_round_trip(tmp_path):
    every = _every_bfloat16()  # all 65536 patterns: zeros, subnormals, infinities, NaN payloads
    bits = np.asarray(every).view(np.uint32)
    assert every.dtype == mx.bfloat16 and (bits & 0xFFFF).max() == 0
    assert np.array_equal(bits >> 16, np.arange(1 << 16))
    mx.save_safetensors(str(tmp_path / "b"), {"t": every})
    back = mx.load(str(tmp_path / "b.safetensors"))["t"]
    assert back.dtype == mx.bfloat16 and np.array_equal(np.asarray(back).view(np.uint32), bits)
    pytest.importorskip("gguf")
    mx.save_gguf(str(tmp_path / "b.gguf"), {"t": every})
    back = mx.load(str(tmp_path / "b.gguf"))["t"]
    assert back.dtype == mx.bfloat16 and np.array_equal(np.asarray(back).view(np.uint32), bits)


def test_non_contiguous_arrays(tmp_path, device):
    base = mx.arange(24, stream=device).reshape(4, 6)
    views = {"t": base.T, "b": mx.broadcast_to(mx.array([1, 2]), (4, 2)), "s": base[::2, 1::3],
             "r": mx.flip(base, axis=1) if hasattr(mx, "flip") else base[:, ::-1]}
    mx.save_safetensors(str(tmp_path / "v"), views)
    out = mx.load(str(tmp_path / "v.safetensors"), stream=device)
    for k, v in views.items():
        np.testing.assert_array_equal(np.asarray(out[k]), np.asarray(v))
        mx.save(tmp_path / f"{k}.npy", v)
        np.testing.assert_array_equal(np.asarray(mx.load(tmp_path / f"{k}.npy")), np.asarray(v))
    if importlib.util.find_spec("gguf") is not None:
        mx.save_gguf(str(tmp_path / "v.gguf"), {k: v.astype(mx.int32) for k, v in views.items()})
        out = mx.load(str(tmp_path / "v.gguf"))
        for k, v in views.items():
            np.testing.assert_array_equal(np.asarray(out[k]), np.asarray(v))


# -- GGUF ---------------------------------------------------------------------------------------------------------

GGUF_DTYPES = [mx.float32, mx.float16, mx.bfloat16, mx.float64, mx.int8, mx.int16, mx.int32, mx.int64]


def test_gguf_round_trip(tmp_path, rng, device):
    pytest.importorskip("gguf")
    arrays = {f"t_{d.name}_{i}": _sample(rng, d, shape) for d in GGUF_DTYPES
              for i, shape in enumerate([(), (1,), (23,), (4, 6, 3, 1, 2), (0, 3)])
              if shape or d is not mx.bfloat16}  # (the gguf package cannot read a 0-d BF16 tensor)
    mx.save_gguf(tmp_path / "m", arrays)
    loaded = mx.load(tmp_path / "m.gguf", stream=device)
    assert set(loaded) == set(arrays)
    for k, a in arrays.items():
        assert loaded[k].dtype == a.dtype and loaded[k].shape == a.shape, k
        np.testing.assert_array_equal(_bits(loaded[k]), _bits(a))


def test_gguf_metadata(tmp_path, rng):
    pytest.importorskip("gguf")
    meta = {"s": "text", "empty": "", "l": ["a", "bc", ""], "f": mx.array(1.5), "v": mx.array([1, 2, 3]),
            "flag": mx.array(True), "bits": mx.array([True, False])}
    for d in (mx.uint8, mx.int8, mx.uint16, mx.int16, mx.uint32, mx.int32, mx.uint64, mx.int64, mx.float32,
              mx.float64):
        meta[f"x_{d.name}"] = _sample(rng, d, (3,))
        meta[f"y_{d.name}"] = _sample(rng, d, ())
    path = str(tmp_path / "m.gguf")
    mx.save_gguf(path, {"w": mx.ones((2, 2))}, meta)
    arrays, got = mx.load(path, return_metadata=True)
    assert set(got) == set(meta) and set(arrays) == {"w"}
    for k, v in meta.items():
        if isinstance(v, mx.array):
            assert got[k].dtype == v.dtype and got[k].shape == v.shape, k
            np.testing.assert_array_equal(np.asarray(got[k]), np.asarray(v))
        else:
            assert got[k] == v
    mx.save_gguf(path, {"w": mx.ones((2, 2))}, {})
    assert mx.load(path, return_metadata=True)[1] == {}


def test_gguf_files_read_by_the_package(tmp_path, rng):
    gguf = pytest.importorskip("gguf")
    x = rng.standard_normal((3, 5)).astype(np.float32)
    mx.save_gguf(str(tmp_path / "m.gguf"), {"x": mx.array(x), "i": mx.arange(4, dtype=mx.int16)},
                 {"name": "model", "n": mx.array(7, mx.uint32)})
    reader = gguf.GGUFReader(str(tmp_path / "m.gguf"))
    assert reader.fields["name"].contents() == "model" and reader.fields["n"].contents() == 7
    assert "general.architecture" not in reader.fields
    tensors = {t.name: t for t in reader.tensors}
    assert tensors["x"].tensor_type == gguf.GGMLQuantizationType.F32
    np.testing.assert_array_equal(np.asarray(tensors["x"].data), x)
    np.testing.assert_array_equal(np.asarray(tensors["i"].data), np.arange(4))


def _dequantize_affine(w, scales, biases, bits: int) -> np.ndarray:
    """MLX's packed affine layout, unpacked in NumPy: ``bits``-bit codes lowest bits first, groups of 32."""
    w = np.asarray(w)
    per = 32 // bits
    codes = (w[..., None] >> (np.arange(per, dtype=np.uint32) * bits)) & ((1 << bits) - 1)
    codes = codes.reshape(*w.shape[:-1], -1).astype(np.float32)
    s = np.repeat(np.asarray(scales).astype(np.float32), 32, axis=-1)
    b = np.repeat(np.asarray(biases).astype(np.float32), 32, axis=-1)
    return codes * s + b


@pytest.mark.parametrize("qtype, bits", [("Q4_0", 4), ("Q4_1", 4), ("Q8_0", 8)])
def test_gguf_quantized_tensors(tmp_path, rng, qtype, bits):
    gguf = pytest.importorskip("gguf")
    kind = gguf.GGMLQuantizationType[qtype]
    x = rng.standard_normal((4, 96)).astype(np.float32)
    blocks = gguf.quants.quantize(x, kind)
    writer = gguf.GGUFWriter(str(tmp_path / "q.gguf"), arch="")
    writer.add_tensor("layer.weight", blocks, raw_dtype=kind)
    writer.add_tensor("plain", x)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    out = mx.load(str(tmp_path / "q.gguf"))
    assert set(out) == {"layer.weight", "layer.scales", "layer.biases", "plain"}
    w, s, b = out["layer.weight"], out["layer.scales"], out["layer.biases"]
    assert w.dtype == mx.uint32 and w.shape == (4, 96 * bits // 32)
    assert s.dtype == b.dtype == mx.float16 and s.shape == b.shape == (4, 3)
    expected = gguf.quants.dequantize(blocks, kind)
    np.testing.assert_array_equal(_dequantize_affine(w, s, b, bits), expected)
    np.testing.assert_array_equal(np.asarray(out["plain"]), x)


def _gguf_bytes(tensors, kv: bytes = b"", n_kv: int = 0, version: int = 3, magic: bytes = b"GGUF") -> bytes:
    """A GGUF file written by hand: ``tensors`` are (name, dims in GGML order, type, offset, data)."""
    head = magic + struct.pack("<IQQ", version, len(tensors), n_kv) + kv
    for name, dims, kind, offset, _ in tensors:
        head += struct.pack("<Q", len(name)) + name.encode() + struct.pack("<I", len(dims))
        head += struct.pack(f"<{len(dims)}Q", *dims) + struct.pack("<IQ", kind, offset)
    head += b"\x00" * (-len(head) % 32)
    data = b""
    for *_, offset, payload in tensors:
        data = data.ljust(offset, b"\x00")[:offset] + payload
    return head + data


def _with_offset(raw: bytes, offset: int) -> bytes:
    """A one-tensor file of ``_gguf_bytes`` (named "a", one dimension: its offset field ends at byte 57) with the
    tensor's offset replaced."""
    return raw[:49] + struct.pack("<Q", offset) + raw[57:]


def test_gguf_malformed(tmp_path):
    pytest.importorskip("gguf")
    f32 = np.arange(4, dtype="<f4").tobytes()
    good = _gguf_bytes([("a", [4], 0, 0, f32), ("b", [4], 0, 32, f32)])
    path = tmp_path / "ok.gguf"
    path.write_bytes(good)
    assert np.asarray(mx.load(str(path))["b"]).tolist() == [0, 1, 2, 3]
    kv = struct.pack("<Q", 3) + b"key" + struct.pack("<I", 8) + struct.pack("<Q", 1 << 40) + b"short"
    cases = {
        "empty": b"",
        "magic": good.replace(b"GGUF", b"GGML", 1),
        "version": _gguf_bytes([("a", [4], 0, 0, f32)], version=99),
        "truncated_header": good[:40],
        "truncated_data": good[:-4],
        "past_the_end": _gguf_bytes([("a", [4], 0, 64, f32)])[:-4],
        "overlap": _gguf_bytes([("a", [4], 0, 0, f32 * 2), ("b", [4], 0, 0, f32)]),
        "misaligned": _gguf_bytes([("a", [4], 0, 4, f32)]),
        "huge_dims": _gguf_bytes([("a", [1 << 32, 1 << 32], 0, 0, f32)]),
        "unknown_type": _gguf_bytes([("a", [4], 77, 0, f32)]),
        "unsupported_type": _gguf_bytes([("a", [32], 6, 0, b"\x00" * 22)]),
        "string_past_end": _gguf_bytes([], kv=kv, n_kv=1),
        "duplicate": _gguf_bytes([("a", [4], 0, 0, f32), ("a", [4], 0, 32, f32)]),
        # an offset that wraps the reader's 64-bit sum around to byte 0 (the magic string) of the file
        "wrapping_offset": _with_offset(_gguf_bytes([("a", [4], 0, 0, f32)]), (1 << 64) - 64),
    }
    for name, raw in cases.items():
        p = tmp_path / f"{name}.gguf"
        p.write_bytes(raw)
        with pytest.raises(ValueError, match=rf"load: .*{name}\.gguf"):
            mx.eval(mx.load(str(p)))


def test_gguf_argument_errors(tmp_path, monkeypatch):
    pytest.importorskip("gguf")
    path = str(tmp_path / "g.gguf")
    with pytest.raises(ValueError, match="save_gguf: array .a. of uint8"):
        mx.save_gguf(path, {"a": mx.ones(2, mx.uint8)})
    with pytest.raises(ValueError, match="save_gguf: array 'a': a 0-d bfloat16"):
        mx.save_gguf(path, {"a": mx.array(1.0, mx.bfloat16)})
    with pytest.raises(TypeError, match="save_gguf: array names must be strings"):
        mx.save_gguf(path, {0: mx.ones(2)})
    for bad in (mx.array(1, mx.float16), mx.array(1, mx.bfloat16), mx.array(1, mx.complex64), mx.zeros((2, 2)),
                mx.zeros((0,)), []):
        with pytest.raises(ValueError, match="save_gguf: metadata 'm'"):
            mx.save_gguf(path, {"a": mx.ones(2)}, {"m": bad})
    for bad in (1, 1.5, None, ["a", 1]):
        with pytest.raises(TypeError, match="save_gguf: metadata 'm'"):
            mx.save_gguf(path, {"a": mx.ones(2)}, {"m": bad})
    with pytest.raises(TypeError, match="save_gguf: .* path"):
        mx.save_gguf(io.BytesIO(), {"a": mx.ones(2)})
    mx.save_gguf(path, {"a": mx.ones(2)})
    with pytest.raises(ValueError, match="load: GGUF files are read from a path"):
        with open(path, "rb") as f:
            mx.load(f)
    monkeypatch.setitem(__import__("sys").modules, "gguf", None)
    with pytest.raises(ImportError, match="load: GGUF files need the 'gguf' package"):
        mx.load(path)
    with pytest.raises(ImportError, match="save_gguf: GGUF files need the 'gguf' package"):
        mx.save_gguf(path, {"a": mx.ones(2)})
