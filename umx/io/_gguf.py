"""GGUF files, read and written through the ``gguf`` package (llama.cpp's own Python reader and writer).

``gguf`` is an optional dependency, imported when a GGUF file is first used. Its reader maps the file and trusts
the sizes it finds there, so it is run with a bounds check on every read (a field or tensor that runs past the
end of the file is an error, not a short read), and each tensor is checked again here: a known type, a size that
matches its shape, an aligned offset, and no overlap with another tensor.

Tensors of types F32, F16, BF16, F64, I8, I16, I32 and I64 load as arrays of those dtypes (lazily, for a path);
Q4_0, Q4_1 and Q8_0 blocks load as MLX's affine quantization (``name`` packed uint32 codes and ``.scales`` and
``.biases`` of float16, 32 elements per group), read at once.
"""

from __future__ import annotations

import math
import os

import numpy as np

from .. import dtypes as dt
from ..array import array, from_data
from ._common import Source, file_name, host_data, malformed


def _package(op: str):
    try:
        import gguf
    except ImportError:
        raise ImportError(f"{op}: GGUF files need the 'gguf' package (pip install gguf, or umx[gguf])") from None
    return gguf


_STRICT: list = []


def _strict_reader(gguf):
    """A ``GGUFReader`` whose every read must lie inside the file."""
    if not _STRICT:
        class StrictReader(gguf.GGUFReader):
            def _get(self, offset, dtype, count=1, override_order=None):
                count = int(count)
                end = int(offset) + np.dtype(dtype).itemsize * count
                if offset < 0 or count < 0 or end > len(self.data):
                    raise ValueError(f"a field at byte {offset} of {count} x {np.dtype(dtype)} runs past the end "
                                     f"of the file ({len(self.data)} bytes)")
                return super()._get(offset, dtype, count, override_order)

        _STRICT.append(StrictReader)
    return _STRICT[0]


def _types(gguf) -> dict:
    """GGML type -> (stored NumPy dtype, umx dtype) of the plain types."""
    t = gguf.GGMLQuantizationType
    return {t.F32: ("f4", dt.float32), t.F16: ("f2", dt.float16), t.BF16: ("u2", dt.bfloat16),
            t.F64: ("f8", dt.float64), t.I8: ("i1", dt.int8), t.I16: ("i2", dt.int16), t.I32: ("i4", dt.int32),
            t.I64: ("i8", dt.int64)}


def load_gguf(file, stream, want_metadata: bool) -> tuple:
    """``(arrays, metadata)`` of the GGUF file at path ``file`` (metadata only when asked for)."""
    if not isinstance(file, (str, os.PathLike)):
        raise ValueError(f"load: GGUF files are read from a path, not from {file_name(file)}")
    gguf = _package("load")
    src = Source(file)
    try:
        with np.errstate(all="ignore"):  # (the reader's sums may wrap around; the offsets are checked below)
            reader = _strict_reader(gguf)(src.path)
    except Exception as e:
        raise malformed(file, f"not a valid GGUF file: {e}") from None
    plain = _types(gguf)
    quantized = {gguf.GGMLQuantizationType.Q4_0: _q4_0, gguf.GGMLQuantizationType.Q4_1: _q4_1,
                 gguf.GGMLQuantizationType.Q8_0: _q8_0}
    order = ">" if reader.endianess == gguf.GGUFEndian.BIG else "<"
    out: dict = {}
    spans = []
    for t in reader.tensors:
        shape = tuple(int(n) for n in reversed(t.shape.tolist()))
        count = math.prod(shape)
        block, size = gguf.GGML_QUANT_SIZES[t.tensor_type]
        nbytes = count * size // block
        begin = int(reader.data_offset) + int(t.field.parts[-1][0])  # (without the reader's wrap-around)
        if count != t.n_elements or begin != t.data_offset or begin + nbytes > src.size:
            raise malformed(file, f"data of shape {shape} at byte {begin} do not fit in the file "
                            f"({src.size} bytes)", t.name)
        if (begin - reader.data_offset) % reader.alignment:
            raise malformed(file, f"data at byte {begin} are not aligned to {reader.alignment} bytes", t.name)
        spans.append((begin, begin + nbytes, t.name))
        if t.tensor_type in plain:
            stored, d = plain[t.tensor_type]
            out[t.name] = src.array(t.data_offset, shape, np.dtype(order + stored), d, t.name, stream)
        elif t.tensor_type in quantized:
            if not count or shape[-1] % 32:  # (an empty one too: its rows have no blocks to read the layout from)
                raise malformed(file, f"quantized tensor of shape {shape}: rows must be whole blocks of 32, and some",
                                t.name)
            blocks = np.asarray(t.data, np.uint8).reshape(-1, size)
            base = t.name.removesuffix(".weight")
            w, scales, biases = quantized[t.tensor_type](blocks, shape, order + "f2")
            out[t.name] = from_data(w, dt.uint32)
            out[base + ".scales"] = from_data(scales, dt.float16)
            out[base + ".biases"] = from_data(biases, dt.float16)
        else:
            raise malformed(file, f"GGML type {t.tensor_type.name} is not supported by umx", t.name)
    spans.sort()
    for (_, end, prev), (begin, _, name) in zip(spans, spans[1:]):
        if begin < end:
            raise malformed(file, f"its data overlap those of {prev!r}", name)
    meta = _metadata(gguf, reader, file) if want_metadata else {}
    return out, meta


def _codes_to_words(codes: np.ndarray, bits: int) -> np.ndarray:
    """Codes (rows, n) of ``bits`` bits packed into uint32 words, lowest bits first (MLX's layout)."""
    per = 32 // bits
    c = codes.astype(np.uint32).reshape(codes.shape[0], -1, per)
    shifts = np.arange(per, dtype=np.uint32) * np.uint32(bits)
    return np.bitwise_or.reduce(c << shifts, axis=-1)


def _nibbles(qs: np.ndarray) -> np.ndarray:
    """GGML's 4-bit codes of each block: byte j holds element j (low nibble) and element j + 16 (high)."""
    return np.concatenate([qs & 0xF, qs >> 4], axis=1)


def _rows(x: np.ndarray, shape: tuple) -> np.ndarray:
    return np.ascontiguousarray(x.reshape(*shape[:-1], -1))


def _q4_0(blocks, shape, half):
    d = blocks[:, :2].copy().view(half).astype(np.float16)
    codes = _nibbles(blocks[:, 2:18]).reshape(-1, shape[-1])
    return (_rows(_codes_to_words(codes, 4), shape), _rows(d, shape),
            _rows((d.astype(np.float32) * -8).astype(np.float16), shape))


def _q4_1(blocks, shape, half):
    d = blocks[:, :2].copy().view(half).astype(np.float16)
    m = blocks[:, 2:4].copy().view(half).astype(np.float16)
    codes = _nibbles(blocks[:, 4:20]).reshape(-1, shape[-1])
    return _rows(_codes_to_words(codes, 4), shape), _rows(d, shape), _rows(m, shape)


def _q8_0(blocks, shape, half):
    d = blocks[:, :2].copy().view(half).astype(np.float16)
    codes = (blocks[:, 2:34].view(np.int8).astype(np.int16) + 128).reshape(-1, shape[-1])
    return (_rows(_codes_to_words(codes, 8), shape), _rows(d, shape),
            _rows((d.astype(np.float32) * -128).astype(np.float16), shape))


def _metadata(gguf, reader, file) -> dict:
    """The file's key-value metadata: strings and lists of strings as such, numbers as umx arrays (0-d for a
    scalar, 1-d for an array), as MLX returns them."""
    vt = gguf.GGUFValueType
    meta = {}
    for key, field in reader.fields.items():
        if key.startswith("GGUF."):  # the reader's own entries for the version and counts
            continue
        kind = field.types[0] if field.types else None
        if kind == vt.STRING:
            meta[key] = _text(field.parts[-1], file, key)
        elif kind == vt.ARRAY:
            sub = field.types[-1] if len(field.types) > 1 else None
            if len(field.types) > 2:
                raise malformed(file, f"metadata {key!r}: nested arrays are not supported by umx")
            if sub == vt.STRING:
                meta[key] = [_text(field.parts[i], file, key) for i in field.data]
            elif sub is None:
                meta[key] = []
            else:
                meta[key] = _number(np.concatenate([field.parts[i] for i in field.data]), file, key)
        else:
            meta[key] = _number(field.parts[-1].reshape(()), file, key)
    return meta


def _text(raw: np.ndarray, file, key: str) -> str:
    try:
        return bytes(raw).decode("utf-8")
    except UnicodeDecodeError:
        raise malformed(file, f"metadata {key!r} is not UTF-8 text") from None


def _number(x: np.ndarray, file, key: str) -> array:
    x = x.astype(x.dtype.newbyteorder("="))
    if x.dtype.kind == "b":
        x = x.view(np.uint8) != 0
    d = dt.from_numpy(x.dtype)
    return from_data(np.array(x, order="C"), d)


# umx dtype -> GGML type name, for tensors; and -> GGUF value type name, for metadata arrays (as MLX: no float16,
# bfloat16 or complex metadata).
_TENSOR_TYPES = {dt.float32: "F32", dt.float16: "F16", dt.bfloat16: "BF16", dt.float64: "F64", dt.int8: "I8",
                 dt.int16: "I16", dt.int32: "I32", dt.int64: "I64"}
_VALUE_TYPES = {dt.uint8: "UINT8", dt.int8: "INT8", dt.uint16: "UINT16", dt.int16: "INT16", dt.uint32: "UINT32",
                dt.int32: "INT32", dt.uint64: "UINT64", dt.int64: "INT64", dt.float32: "FLOAT32",
                dt.float64: "FLOAT64", dt.bool_: "BOOL"}


def save_gguf(file, arrays: dict, metadata: dict | None) -> None:
    """Write ``arrays`` (names checked by the caller) and ``metadata`` as a GGUF file at path ``file``."""
    if not isinstance(file, (str, os.PathLike)):
        raise TypeError(f"save_gguf: GGUF files are written to a path, not to {type(file).__name__}")
    gguf = _package("save_gguf")
    values = [(k, *_meta_value(gguf, k, v)) for k, v in (metadata or {}).items()]
    tensors = []
    for name, a in arrays.items():
        code = _TENSOR_TYPES.get(a.dtype) if isinstance(a, array) else None
        if code is None:
            what = a.dtype.name if isinstance(a, array) else type(a).__name__
            raise ValueError(f"save_gguf: array {name!r} of {what}: GGUF holds float32, float16, bfloat16, "
                             "float64, int8, int16, int32 and int64 arrays")
        if code == "BF16" and a.ndim == 0:
            raise ValueError(f"save_gguf: array {name!r}: a 0-d bfloat16 array cannot be read back by the gguf "
                             "package; reshape it to (1,)")
        tensors.append((name, host_data(a, "save_gguf"), code))
    writer = gguf.GGUFWriter(os.fspath(file), arch="")  # no architecture: the empty name is not written
    try:
        for key, value, vtype, sub in values:
            writer.add_key_value(key, value, vtype, sub_type=sub)
        for name, data, code in tensors:
            if code == "BF16":  # (its bits, as host_data gives them)
                writer.add_tensor(name, data, raw_shape=data.shape, raw_dtype=gguf.GGMLQuantizationType.BF16)
            else:
                writer.add_tensor(name, data)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
    finally:
        writer.close()


def _meta_value(gguf, key, value) -> tuple:
    """``(value, GGUF type, array item type)`` of one metadata entry."""
    vt = gguf.GGUFValueType
    if not isinstance(key, str):
        raise TypeError(f"save_gguf: metadata keys must be strings, got {key!r}")
    if isinstance(value, str):
        return value, vt.STRING, None
    if isinstance(value, list) and all(isinstance(s, str) for s in value):
        if not value:
            raise ValueError(f"save_gguf: metadata {key!r} is an empty list, which GGUF cannot hold")
        return value, vt.ARRAY, vt.STRING
    if not isinstance(value, array):
        raise TypeError(f"save_gguf: metadata {key!r} must be a string, a list of strings or an array, got "
                        f"{type(value).__name__}")
    kind = _VALUE_TYPES.get(value.dtype)
    if kind is None or value.ndim > 1 or (value.ndim == 1 and value.size == 0):
        raise ValueError(f"save_gguf: metadata {key!r} of shape {value.shape} and {value.dtype.name}: GGUF holds "
                         "scalars and non-empty 1-d arrays of integers, float32, float64 and bool")
    items = np.asarray(value).tolist()
    if value.ndim == 0:
        return items, vt[kind], None
    return items, vt.ARRAY, vt[kind]


__all__ = ["load_gguf", "save_gguf"]
