"""Strided views made contiguous, and reshaped, on the GPU (``backends/cuda/strided.py``): the layout rules
against NumPy's on the CPU (no GPU needed), then the copy kernel against NumPy on every view shape a model makes
and on random ones, through the backend and through umx's ops."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import umx as mx
from umx.backends.cuda.sources import merged_axes, view_strides

needs_gpu = pytest.mark.skipif(not mx.is_available(mx.gpu), reason="no CUDA GPU (CuPy and a device)")


@st.composite
def views(draw):
    """``(base, view)``: a random strided view of a small C-ordered array, sliced (steps of either sign),
    transposed, sometimes with a broadcast axis."""
    ndim = draw(st.integers(1, 5))
    shape = tuple(draw(st.lists(st.integers(1, 5), min_size=ndim, max_size=ndim)))
    base = np.arange(int(np.prod(shape)), dtype=np.int16).reshape(shape)
    key = []
    for n in shape:
        start = draw(st.integers(0, n - 1))
        step = draw(st.sampled_from([1, 1, 2, -1]))
        key.append(slice(start, None, step) if step > 0 else slice(start, None, step))
    v = base[tuple(key)]
    v = v.transpose(draw(st.permutations(range(v.ndim))))
    if draw(st.booleans()):
        v = np.broadcast_to(v[None], (2, *v.shape))
    return base, v


def _factor_shapes(size: int, draw) -> tuple:
    """A random shape of ``size`` elements (ones sprinkled in)."""
    factors = []
    n, p = size, 2
    while n > 1:
        while n % p == 0:
            factors.append(p)
            n //= p
        p += 1
    factors = draw(st.permutations(factors))
    shape = []
    for f in factors:
        if shape and draw(st.booleans()):
            shape[-1] *= f
        else:
            shape.append(f)
    for _ in range(draw(st.integers(0, 2))):
        shape.insert(draw(st.integers(0, len(shape))), 1)
    return tuple(shape)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_view_strides_agree_with_numpy(data):
    _, v = data.draw(views())
    new = _factor_shapes(v.size, data.draw)
    strides = view_strides(v.shape, v.strides, new)
    try:
        expected = np.reshape(v, new, copy=False)
    except ValueError:  # NumPy must copy: so must umx
        assert strides is None, (v.shape, v.strides, new, strides)
        return
    assert strides is not None, (v.shape, v.strides, new)
    got = np.lib.stride_tricks.as_strided(v, new, strides)  # (the view's first element is where both start)
    np.testing.assert_array_equal(got, expected)


@settings(max_examples=300, deadline=None)
@given(views())
def test_merged_axes_address_the_same_elements(drawn):
    _, v = drawn
    axes = merged_axes(v.shape, v.strides)
    assert all(n > 1 for n, _ in axes)
    sizes = tuple(n for n, _ in axes) or (1,)
    strides = tuple(s for _, s in axes) or (0,)
    np.testing.assert_array_equal(np.lib.stride_tricks.as_strided(v, sizes, strides).reshape(v.shape), v)
    # no two neighbours left that one axis could address
    assert all(a[1] != b[0] * b[1] for a, b in zip(axes, axes[1:]))


# views a model makes: heads split out of a joined projection, halves of a joined gate and up projection, heads
# merged back, a transposed weight; (shape, how to view it)
_MODEL_VIEWS = [
    ((1, 512, 48, 64), lambda x: x.transpose(0, 2, 1, 3)[:, :40]),
    ((1, 512, 48, 64), lambda x: x.transpose(0, 2, 1, 3)[:, 40:]),
    ((1, 512, 16384), lambda x: x[..., 8192:]),
    ((16, 256, 8, 64), lambda x: x.transpose(0, 2, 1, 3)),
    ((16, 8, 256, 64), lambda x: x.transpose(0, 2, 1, 3)),
    ((2, 3, 5, 7), lambda x: x[:, 1:, ::2, 1:6]),  # rows of odd bytes: narrow units
    ((2, 6, 6, 5), lambda x: _windows(x, 1)),  # a convolution's windows (im2col): four row axes
    ((64, 48), lambda x: x.T),  # the last axis strided: CuPy's copy
    ((2, 8, 8, 5), lambda x: _windows(x, 2)),  # dilated windows: five row axes, more than the kernel takes
]
_KERNEL_VIEWS = 7  # (the views above the transposed weight take the kernel)


def _windows(x, dilation: int):
    """The (n, 4, 4, 3, 3, c) windows of a 3x3 convolution of NHWC ``x`` (NumPy's or CuPy's), as conv.py views
    them; ``x``'s spatial sizes must hold them (at least ``4 + 2 * dilation``)."""
    lib = np if isinstance(x, np.ndarray) else __import__("cupy")
    n, s = x.shape[0], x.strides
    return lib.lib.stride_tricks.as_strided(x, (n, 4, 4, 3, 3, x.shape[-1]),
                                            (s[0], s[1], s[2], s[1] * dilation, s[2] * dilation, s[3]))

_DTYPES = [np.uint8, np.int16, ml_dtypes.bfloat16, np.float32, np.int64, np.complex128]


@needs_gpu
@pytest.mark.parametrize("dtype", _DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("case", range(len(_MODEL_VIEWS)))
def test_contiguous_copies_views(case, dtype):
    import cupy as cp

    from umx.backends.cuda import strided

    shape, view = _MODEL_VIEWS[case]
    host = np.random.default_rng(case).integers(0, 100, shape).astype(dtype)
    storage = host.view(np.uint16) if dtype is ml_dtypes.bfloat16 else host  # (CuPy holds bfloat16 as its bits)
    v = view(cp.asarray(storage))
    assert (strided._plan(v) is not None) == (case < _KERNEL_VIEWS)  # the kernel's path, or CuPy's
    got = strided.contiguous(v)
    assert got.flags.c_contiguous
    np.testing.assert_array_equal(cp.asnumpy(got), view(storage))


@needs_gpu
@settings(max_examples=60, deadline=None)
@given(st.data())
def test_contiguous_and_reshape_of_random_views(data):
    import cupy as cp

    from umx.backends.cuda import strided

    base, host = data.draw(views())
    itemsize = data.draw(st.sampled_from([1, 2, 4, 8]))
    # the same view (offsets and strides scaled to the item size) of a device array of that item size
    dev = cp.asarray(base.astype(f"u{itemsize}"))
    start = (host.__array_interface__["data"][0] - base.__array_interface__["data"][0]) // 2 * itemsize
    v = cp.ndarray(host.shape, dev.dtype, memptr=dev.data + start,
                   strides=tuple(s // 2 * itemsize for s in host.strides))
    expected = host.astype(f"u{itemsize}")
    np.testing.assert_array_equal(cp.asnumpy(strided.contiguous(v)), expected)
    new = _factor_shapes(host.size, data.draw)
    np.testing.assert_array_equal(cp.asnumpy(strided.reshape(v, new)), expected.reshape(new))


@needs_gpu
def test_reshape_keeps_a_view_where_strides_allow():
    import cupy as cp

    from umx.backends.cuda import strided

    x = cp.arange(2 * 512 * 16384, dtype=cp.uint16).reshape(2, 512, 16384)
    half = x[..., 8192:]
    flat = strided.reshape(half, (1024, 8192))  # the rows stay rows: a view
    assert flat.data.ptr == half.data.ptr
    heads = strided.reshape(half, (2, 512, 64, 128))
    assert heads.data.ptr == half.data.ptr
    merged = strided.reshape(x.reshape(2, 512, 128, 128).transpose(0, 2, 1, 3), (2, 128, 512 * 128))
    assert merged.flags.c_contiguous and merged.data.ptr != x.data.ptr  # (a copy: the heads interleave)
    np.testing.assert_array_equal(cp.asnumpy(merged), cp.asnumpy(x).reshape(2, 512, 128, 128)
                                  .transpose(0, 2, 1, 3).reshape(2, 128, -1))


@pytest.mark.parametrize("dtype", [mx.bfloat16, mx.float32, mx.int8])
def test_model_views_through_ops(device, dtype):
    # a joined projection's heads and halves, made contiguous and merged back, as a model's ops make them
    rng = np.random.default_rng(1)
    host = rng.integers(-100, 100, (2, 64, 48 * 16)).astype(np.float32)
    x = mx.array(host).astype(dtype)
    ref = np.asarray(x.astype(mx.float32))
    heads = x.reshape(2, 64, 48, 16).transpose(0, 2, 1, 3)
    q, v = heads[:, :32], heads[:, 40:]
    gate, up = x[..., :384], x[..., 384:]
    merged = q.transpose(0, 2, 1, 3).reshape(2, 64, -1)
    outs = [mx.contiguous(v, stream=device), mx.reshape(q, (2, 32, -1), stream=device),
            mx.reshape(merged, (128, -1), stream=device), mx.contiguous(up, stream=device),
            mx.reshape(gate, (128, 384), stream=device)]
    ref_heads = ref.reshape(2, 64, 48, 16).transpose(0, 2, 1, 3)
    expected = [ref_heads[:, 40:], ref_heads[:, :32].reshape(2, 32, -1),
                ref_heads[:, :32].transpose(0, 2, 1, 3).reshape(128, -1), ref[..., 384:],
                ref[..., :384].reshape(128, 384)]
    for got, want in zip(outs, expected):
        assert got.dtype == dtype
        np.testing.assert_array_equal(np.asarray(got.astype(mx.float32)), want)



@needs_gpu
@pytest.mark.parametrize("dtype", [mx.float32, mx.bfloat16])
def test_elementwise_kernels_read_row_slices_in_place(dtype):
    # SwiGLU over the halves of a joined gate and up projection: umx's own kernel reads both views as they lie
    from umx.backends.cuda import direct

    rng = np.random.default_rng(2)
    host = rng.standard_normal((64, 2 * 96)).astype(np.float32)
    x = mx.add(mx.array(host).astype(dtype), 0.0, stream=mx.gpu)
    gate, up = x[:, :96], x[:, 96:]
    mx.eval(gate, up)
    y = mx.multiply(mx.multiply(gate, mx.sigmoid(gate, stream=mx.gpu), stream=mx.gpu), up, stream=mx.gpu)
    ref = np.asarray(x.astype(mx.float32)).astype(np.float64)
    g, u = ref[:, :96], ref[:, 96:]
    tol = 1e-2 if dtype is mx.bfloat16 else 1e-5
    np.testing.assert_allclose(np.asarray(y.astype(mx.float32)), g / (1 + np.exp(-g)) * u, rtol=tol, atol=tol)
    assert any(len(k) == 3 and type(k[0]) is tuple and type(k[1]) is str and "s" in k[1] for k in direct._kernels)


@needs_gpu
def test_copy_list_makes_every_copy():
    # more copies than one launch takes, of sizes from a byte to several blocks' worth, at addresses and sizes
    # that allow 16-byte moves and ones that do not, and empty copies
    import cupy as cp

    from umx.backends.cuda import sources, strided

    rng = np.random.default_rng(0)
    sizes = [0, 1, 7, 16, 48, 1000, 4096, sources.COPY_LIST_CHUNK, sources.COPY_LIST_CHUNK * 3 + 5, 300000]
    sizes = [sizes[i % len(sizes)] for i in range(sources.COPY_LIST_MAX * 2 + 7)]
    offsets = [0 if i % 3 else 1 + i % 5 for i in range(len(sizes))]  # (some sources and targets off 16 bytes)
    src = cp.asarray(rng.integers(0, 256, sum(sizes) + 8 * len(sizes), dtype=np.uint8))
    dst = cp.zeros_like(src)
    copies, at = [], 0
    for n, off in zip(sizes, offsets):
        copies.append((dst.data.ptr + at + (off % 2), src.data.ptr + at + off, n))
        at += n + 8
    stream = cp.cuda.get_current_stream()
    strided.copy_list(copies, stream)
    host_src, host_dst = cp.asnumpy(src), cp.asnumpy(dst)
    expected = np.zeros_like(host_src)
    at = 0
    for n, off in zip(sizes, offsets):
        expected[at + off % 2:at + off % 2 + n] = host_src[at + off:at + off + n]
        at += n + 8
    np.testing.assert_array_equal(host_dst, expected)
