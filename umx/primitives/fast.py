"""Primitives of ``mx.fast``: fused normalizations, rotary embeddings, attention and user CUDA kernels.

Each is one node where the same computation written with plain ops would be several, so that the kernel can work
in float32 on half-precision input without rounding between steps, and (attention) in blocks that bound its
temporaries. Optional inputs are flagged in the parameters, so a kernel knows what its inputs are.
"""

from __future__ import annotations

from .base import Primitive


class RMSNorm(Primitive):
    """``x * rsqrt(mean(x**2, -1) + eps)``, times the weight (the second input) if ``has_weight``."""

    __slots__ = ("eps", "has_weight")
    capture = False  # the shared kernel's row norms are CuPy einsums (the CUDA backend's own kernel captures)

    def __init__(self, eps: float, has_weight: bool):
        self.eps = eps
        self.has_weight = has_weight


class LayerNorm(Primitive):
    """``(x - mean) * rsqrt(var + eps)`` over the last axis, times the weight, plus the bias (optional inputs
    after ``x``, in that order)."""

    __slots__ = ("eps", "has_weight", "has_bias")
    capture = False  # the shared kernel's row norms are CuPy einsums (the CUDA backend's own kernel captures)

    def __init__(self, eps: float, has_weight: bool, has_bias: bool):
        self.eps = eps
        self.has_weight = has_weight
        self.has_bias = has_bias


class NormVJP(Primitive):
    """The gradient of a normalization over the last axis with respect to its input: ``RMSNorm``'s, or
    ``LayerNorm``'s if ``centered``. Inputs: ``x``, the weight if ``has_weight``, then the output's cotangent ``g``;
    computed in float32 (float64 for float64 input), in that dtype. With ``weight_rows``, the output stacks ``dx``
    and ``g * xhat`` (``xhat`` the normalized ``x``) along a new first axis: the weight's gradient is the second's
    sum over the rows, so one pass over the rows serves both."""

    __slots__ = ("eps", "centered", "has_weight", "weight_rows")
    capture = False  # the shared kernel's row norms are CuPy einsums (the CUDA backend's own kernel captures)

    def __init__(self, eps: float, centered: bool, has_weight: bool, weight_rows: bool):
        self.eps = eps
        self.centered = centered
        self.has_weight = has_weight
        self.weight_rows = weight_rows


class RoPE(Primitive):
    """Rotary positional encoding of the first ``dims`` features of ``x`` (shape ``(B, ..., T, D)``).

    Position ``t`` of the axis before last (plus the offset) turns feature pair ``i`` by ``t * scale *
    inv_freq[i]``; pairs are ``(i, i + dims/2)``, or neighbours ``(2i, 2i+1)`` if ``traditional``. ``offset`` is
    the int offset, or None when the offset is an input (a scalar, or one per batch entry). ``base`` is None when
    the frequencies are an input (``inv_freq = 1 / freqs``). ``inverse`` turns the other way (the vjp).
    Inputs: ``x``, then the offset array if ``offset`` is None, then the frequencies if ``base`` is None.
    """

    __slots__ = ("dims", "traditional", "base", "scale", "offset", "inverse")
    capture = False  # not tried under capture with the shared kernel (the CUDA backend's own kernel captures)

    def __init__(self, dims: int, traditional: bool, base, scale: float, offset, inverse: bool = False):
        self.dims = dims
        self.traditional = traditional
        self.base = base
        self.scale = scale
        self.offset = offset
        self.inverse = inverse


class ScaledDotProductAttention(Primitive):
    """``softmax(scale * q @ k.T + mask) @ v`` per head, with grouped-query heads (``q`` has a multiple of the
    key and value heads). ``mask`` is 'none', 'causal' (lower right aligned), 'bool' or 'additive' (the array
    mask is the fourth input); ``has_sinks``: one extra logit per query head (the last input) joins each
    softmax and takes no value."""

    __slots__ = ("scale", "mask", "has_sinks")
    capture = False  # products through CuPy's cuBLAS, which refuses capture (the CUDA backend's kernel for few
    # queries captures)

    def __init__(self, scale: float, mask: str, has_sinks: bool):
        self.scale = scale
        self.mask = mask
        self.has_sinks = has_sinks


class CudaKernel(Primitive):
    """A user's CUDA kernel (``mx.fast.cuda_kernel``): the body ``source`` with a generated signature, over
    the inputs, writing one output per name, of ``output_shapes`` and ``output_dtypes``. ``template`` holds
    ``(name, value)`` pairs; ``grid`` counts threads (as MLX's does), ``threadgroup`` is the block; the inputs'
    dtypes are kept (a bfloat16 input comes as its bits, ``__nv_bfloat16``). Runs on GPU streams only."""

    __slots__ = ("name", "input_names", "output_names", "source", "header", "ensure_row_contiguous",
                 "shared_memory", "template", "grid", "threadgroup", "input_dtypes", "output_shapes",
                 "output_dtypes", "init_value", "verbose")
    n_outputs = 0
    capture = False  # a user's kernel: it may synchronize or read host memory
    moves_bits = True  # (the kernel reads bfloat16 as it is stored)
    no_grad = "a user's kernel: its derivative is unknown (as in MLX)"
    no_vmap = "a user's kernel indexes its buffers itself"

    def __init__(self, name: str, input_names: tuple, output_names: tuple, source: str, header: str,
                 ensure_row_contiguous: bool, shared_memory: int, template: tuple, grid: tuple,
                 threadgroup: tuple, input_dtypes: tuple, output_shapes: tuple, output_dtypes: tuple, init_value,
                 verbose: bool):
        self.name = name
        self.input_names = input_names
        self.output_names = output_names
        self.source = source
        self.header = header
        self.ensure_row_contiguous = ensure_row_contiguous
        self.shared_memory = shared_memory
        self.template = template
        self.grid = grid
        self.threadgroup = threadgroup
        self.input_dtypes = input_dtypes
        self.output_shapes = output_shapes
        self.output_dtypes = output_dtypes
        self.init_value = init_value
        self.verbose = verbose
