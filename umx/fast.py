"""``mx.fast``: fused normalizations, rotary positional encoding, attention, and custom GPU kernels; MLX's cross
entropy and gated delta rule, written with plain ops.

Each op is one primitive whose kernel computes in float32 for half-precision input and works in blocks (see
``umx/backends/xp/fast.py``), where the same computation written with plain ops would round at every step and
hold every intermediate whole. The ``_composed_*`` functions are those plain-op computations: the derivative rules
differentiate them (``umx/transforms/_rules_fast.py``), so gradients of any order work.
"""

from __future__ import annotations

import operator

from . import dtypes as dt
from .devices import StreamContext, cpu, gpu, is_available
from .ops import _core
from .ops import elementwise as ew
from .ops import layout as lay
from .ops import reduction as red
from .ops import shape as sh
from .ops._core import array, as_array, cast, describe, node, resolve_stream
from .ops.creation import arange, zeros
from .ops.shape import concatenate
from .primitives import CudaKernel, LayerNorm, RMSNorm, RoPE, ScaledDotProductAttention

__all__ = ["rms_norm", "layer_norm", "rope", "scaled_dot_product_attention", "cross_entropy", "gated_delta_update",
           "metal_kernel", "cuda_kernel", "precompiled_cuda_kernel"]

_LOWEST = float(dt.finfo(dt.float32).min)  # the score of a masked key (a fully masked row averages the values)


def _floating(op: str, d: dt.Dtype) -> dt.Dtype:
    if d.kind != "f":
        raise ValueError(f"{op}: received unsupported type {d.name}; the inputs must promote to a floating type")
    return d


def _acc(d: dt.Dtype) -> dt.Dtype:
    """What a fast op computes in: float64 for float64, float32 otherwise."""
    return dt.float64 if d is dt.float64 else dt.float32


def _feature_param(op: str, name: str, p, x: array):
    if p is None:
        return None
    p = as_array(p, op)
    if p.ndim != 1:
        raise ValueError(f"{op}: {name} must have 1 dimension but has {p.ndim} dimensions")
    if p._shape[0] != x._shape[-1]:
        raise ValueError(f"{op}: {name} must have the same size as the last axis of x ({x._shape[-1]}) but has "
                         f"{p._shape[0]} elements")
    return p


def _normalized_input(op: str, x, params: list) -> tuple:
    x = as_array(x, op)
    if x.ndim == 0:
        raise ValueError(f"{op}: the input must have at least 1 dimension, got {describe(x)}")
    out = x._dtype  # (promoted by hand: result_type's generality costs a microsecond on every call)
    for p in params:
        if p is not None:
            out = dt.promote(out, p._dtype)
    return x, _floating(op, out)


def rms_norm(x, weight, eps: float, *, stream=None) -> array:
    """Root mean square normalization over the last axis: ``weight * x / sqrt(mean(x**2) + eps)``, computed in
    float32 for half-precision input.

    Args:
        x (array): input.
        weight (array, optional): 1-d, of ``x``'s last axis size: scales the result; None for no scaling.
        eps (float): added to the mean square for numerical stability.

    Returns:
        array: ``x``'s shape; ``x``'s dtype promoted with ``weight``'s.
    """
    x = as_array(x, "rms_norm")
    w = _feature_param("rms_norm", "weight", weight, x)
    x, out = _normalized_input("rms_norm", x, [w])
    inputs = (x,) if w is None else (x, w)
    return node(RMSNorm(float(eps), w is not None), inputs, x._shape, out, resolve_stream(stream))


def layer_norm(x, weight, bias, eps: float, *, stream=None) -> array:
    """Layer normalization over the last axis: ``(x - mean) / sqrt(var + eps) * weight + bias``, computed in
    float32 for half-precision input.

    Args:
        x (array): input.
        weight (array, optional): 1-d, of ``x``'s last axis size: scales the result; None for no scaling.
        bias (array, optional): 1-d, of ``x``'s last axis size: added to the result; None for no offset.
        eps (float): added to the variance for numerical stability.

    Returns:
        array: ``x``'s shape; ``x``'s dtype promoted with the parameters'.
    """
    x = as_array(x, "layer_norm")
    w = _feature_param("layer_norm", "weight", weight, x)
    b = _feature_param("layer_norm", "bias", bias, x)
    x, out = _normalized_input("layer_norm", x, [w, b])
    inputs = (x,) + tuple(p for p in (w, b) if p is not None)
    prim = LayerNorm(float(eps), w is not None, b is not None)
    return node(prim, inputs, x._shape, out, resolve_stream(stream))


def _rope_offset(offset, batch: int):
    """``(int offset or None, offset array or None)``."""
    if isinstance(offset, bool):
        raise ValueError("rope: offset must be an integer but got type bool")
    if isinstance(offset, array) or not isinstance(offset, int) and hasattr(offset, "__array__"):
        off = as_array(offset, "rope")
        if off._dtype.kind not in "iu":
            raise ValueError(f"rope: offset must be an integer but got type {off._dtype.name}")
        if off.ndim > 1:
            raise ValueError(f"rope: offset must have at most one dimension but has shape {off._shape}")
        if off.ndim == 1 and off._shape[0] not in (1, batch):
            raise ValueError(f"rope: offset must be a scalar or vector with {batch} elements but has shape "
                             f"{off._shape}")
        return None, off
    try:
        return operator.index(offset), None
    except TypeError:
        raise ValueError(f"rope: offset must be an integer or an integer array, got {offset!r}") from None


def rope(a, dims: int, *, traditional: bool, base: float | None, scale: float, offset, freqs=None,
         stream=None) -> array:
    """Rotary positional encoding: rotate pairs of the first ``dims`` features by angles that grow with the
    position along the second-to-last axis.

    Position ``p = (offset + t) * scale`` turns pair ``i`` by ``p * base ** (-2i / dims)`` (or ``p / freqs[i]``).
    Pairs are features ``(i, i + dims/2)``, or neighbours ``(2i, 2i + 1)`` if ``traditional``. Angles are
    computed in float32 whatever the input's dtype.

    Args:
        a (array): input of shape ``(B, ..., T, D)``, at least 3-d.
        dims (int): the features rotated (even, at most ``D``); the rest pass unchanged.
        traditional (bool): rotate neighbouring features instead of the two halves.
        base (float, optional): the base of the frequencies; exactly one of ``base`` and ``freqs`` is None.
        scale (float): scales the positions.
        offset (int | array): the first position: an int, an integer scalar array, or one per batch entry
            (``B`` of them).
        freqs (array, optional): ``dims / 2`` frequencies, used instead of ``base``.

    Returns:
        array: ``a``'s shape and dtype.
    """
    a = as_array(a, "rope")
    if a.ndim < 3:
        raise ValueError(f"rope: the input must have at least 3 dimensions but got input with {a.ndim} dimensions")
    if a._dtype.kind != "f":
        raise ValueError(f"rope: the input must be floating, got {describe(a)}")
    if isinstance(dims, bool) or not isinstance(dims, int) or dims <= 0 or dims % 2 or dims > a._shape[-1]:
        raise ValueError(f"rope: dims must be a positive even int of at most the feature size {a._shape[-1]}, "
                         f"got {dims!r}")
    if (base is None) == (freqs is None):
        raise ValueError("rope: exactly one of base and freqs must be given (the other None)")
    st = resolve_stream(stream)
    int_offset, off = _rope_offset(offset, a._shape[0])
    inputs = (a,) if off is None else (a, off)
    if freqs is not None:
        f = as_array(freqs, "rope")
        if f._shape != (dims // 2,) or f._dtype.kind != "f":
            raise ValueError(f"rope: freqs must be floating, of shape ({dims // 2},), got {describe(f)}")
        inputs += (f,)
    prim = RoPE(dims, bool(traditional), None if base is None else float(base), float(scale), int_offset)
    return node(prim, inputs, a._shape, a._dtype, st)


def _sdpa_mask(mask, out: dt.Dtype, scores: tuple):
    """``(kind, mask array or None)``, checked."""
    op = "scaled_dot_product_attention"
    if mask is None:
        return "none", None
    if isinstance(mask, str):
        if mask != "causal":
            raise ValueError(f"{op}: invalid mask option {mask!r}; must be 'causal', or an array")
        return "causal", None
    m = as_array(mask, op)
    if m.ndim > 4:
        raise ValueError(f"{op}: the mask with shape {m._shape} expected to have at most rank 4")
    if _core.broadcast_shapes(m._shape, scores, op=op) != scores:
        raise ValueError(f"{op}: the mask of shape {m._shape} does not broadcast to the scores' shape {scores}")
    if m._dtype is dt.bool_:
        return "bool", m
    if dt.promote(m._dtype, out) is not out:
        raise ValueError(f"{op}: mask type must promote to output type {out.name}, got {m._dtype.name}")
    return "additive", m


def scaled_dot_product_attention(q, k, v, *, scale: float, mask=None, sinks=None, force_fused: bool = False,
                                 stream=None) -> array:
    """Attention, ``softmax(scale * q @ k.T + mask) @ v``, per head, in one kernel: the softmax is computed in
    float32 whatever the inputs' precision, and the scores are made a block of queries at a time, so the score
    matrix of a long sequence never exists whole.

    Grouped-query and multi-query attention need no tiled keys: ``q`` may have a multiple of ``k``'s heads, and
    query head ``h`` reads key head ``h // (N_q / N_kv)``.

    Args:
        q (array): queries ``(B, N_q, T_q, D)``.
        k (array): keys ``(B, N_kv, T_kv, D)``.
        v (array): values ``(B, N_kv, T_kv, D_v)``.
        scale (float): multiplies the queries (typically ``D ** -0.5``).
        mask (str | array, optional): ``"causal"`` (lower right aligned: the last query sees every key), a
            boolean array (False masks a score out) or an additive array; arrays have at most 4 dimensions and
            broadcast to ``(B, N_q, T_q, T_kv)``; an additive mask's dtype promotes to the output's.
        sinks (array, optional): ``(N_q,)`` attention sinks: one extra logit per head that joins each softmax
            and takes no value.
        force_fused (bool): accepted for MLX compatibility (umx's kernel is always the fused one).

    Returns:
        array: ``(B, N_q, T_q, D_v)``, of the inputs' promoted dtype.
    """
    op = "scaled_dot_product_attention"
    q, k, v = (as_array(a, op) for a in (q, k, v))
    for a in (q, k, v):
        if a.ndim != 4:
            raise ValueError(f"{op}: input with shape {a._shape} expected to be rank 4")
    out = _floating(op, dt.promote(dt.promote(q._dtype, k._dtype), v._dtype))
    b, n_q, t_q, d = q._shape
    if k._shape[0] != b or v._shape[0] != b:
        raise ValueError(f"{op}: mismatching batch dimension for {describe(q, k, v)}")
    if k._shape[-1] != d:
        raise ValueError(f"{op}: query, keys expected to have matching last dimension; found {describe(q, k)}")
    if k._shape[1:3] != v._shape[1:3]:
        raise ValueError(f"{op}: keys and values must have the same heads and length, got {describe(k, v)}")
    n_kv, t_k = k._shape[1], k._shape[2]
    if n_kv == 0 or n_q % n_kv:
        raise ValueError(f"{op}: n_heads must be a multiple of n_kv_heads, found n_heads {n_q} for n_kv_heads "
                         f"{n_kv}")
    kind, m = _sdpa_mask(mask, out, (b, n_q, t_q, t_k))
    st = resolve_stream(stream)
    inputs = tuple(cast(a, out, st) for a in (q, k, v)) + ((m,) if m is not None else ())
    if sinks is not None:
        s = as_array(sinks, op)
        if s._shape != (n_q,):
            raise ValueError(f"{op}: received invalid shape for sinks {s._shape} (expected ({n_q},))")
        if dt.promote(s._dtype, out) is not out:
            raise ValueError(f"{op}: type of sinks must promote to output type {out.name}, got {s._dtype.name}")
        inputs += (cast(s, out, st),)
    prim = ScaledDotProductAttention(float(scale), kind, sinks is not None)
    return node(prim, inputs, (b, n_q, t_q, v._shape[-1]), out, st)


def cross_entropy(logits, targets, *, stream=None) -> array:
    """Cross entropy with class indices as targets: ``logsumexp(logits, axis=-1) - logits[..., target]``.

    The reductions accumulate in float32 (float64 for float64 logits) whatever the logits' dtype, as MLX's fused
    GPU kernel does, on both devices (MLX's CPU reduces in the logits' dtype). The logits are shifted by their
    largest value first, so a large common offset costs no precision. Gradients flow to ``logits``.

    Args:
        logits (array): the unnormalized logits, at least 1-d; the loss is over the last axis.
        targets (array): integer class indices in ``[0, logits.shape[-1])``, of ``logits``'s shape without its
            last axis.

    Returns:
        array: the loss of each row, float32, of ``targets``'s shape.

    Example:
        >>> mx.fast.cross_entropy(mx.array([[2.0, -1.0], [-1.0, 2.0]]), mx.array([0, 1]))
        array([0.0485873, 0.0485873], dtype=float32)
    """
    op = "cross_entropy"
    logits, targets = as_array(logits, op), as_array(targets, op)
    if logits.ndim == 0:
        raise ValueError(f"{op}: logits must have at least 1 dimension, got {describe(logits)}")
    if logits._dtype.kind != "f":
        raise ValueError(f"{op}: logits must be floating, got {describe(logits)}")
    if targets._dtype.kind not in "iu":
        raise ValueError(f"{op}: targets must be integer class indices, got {describe(targets)}")
    if targets._shape != logits._shape[:-1]:
        raise ValueError(f"{op}: targets {describe(targets)} must have the shape of logits {describe(logits)} "
                         "without its last axis")
    st = resolve_stream(stream)
    x = cast(logits, _acc(logits._dtype), st)
    shifted = ew.subtract(x, ew.stop_gradient(red.max(x, axis=-1, keepdims=True, stream=st), stream=st), stream=st)
    picked = lay.take_along_axis(shifted, sh.expand_dims(targets, -1, stream=st), axis=-1, stream=st)
    loss = ew.subtract(red.logsumexp(shifted, axis=-1, stream=st), sh.squeeze(picked, -1, stream=st), stream=st)
    return cast(loss, dt.float32, st)


def gated_delta_update(q, k, v, gamma, beta, initial_state=None, mask=None, *, stream=None) -> list:
    """The gated delta rule's recurrence over a sequence (the linear attention of Gated DeltaNet layers).

    At each step ``t``, per head, the state ``S`` (``Dv x Dk``) decays by ``gamma``, takes the delta rule's
    update towards ``v`` along ``k`` at rate ``beta``, and is read by ``q``::

        S = S * gamma[t]
        S = S + outer((v[t] - S @ k[t]) * beta[t], k[t])
        y[t] = S @ q[t]

    The key heads are shared by ``Hv / Hk`` value heads each (value head ``h`` reads key head ``h // (Hv /
    Hk)``). Where ``mask[b, t]`` is False, that step leaves the state as it was and its output is zero. The state
    is kept in float32 (or ``initial_state``'s dtype promoted with the inputs'); the outputs come in ``q``'s
    dtype. Each step is a few ops, so a long sequence builds a long graph: wrap a prompt's call in
    :func:`umx.compile` to replay it. Gradients flow to every input.

    Args:
        q (array): queries ``(B, T, Hk, Dk)``.
        k (array): keys ``(B, T, Hk, Dk)``.
        v (array): values ``(B, T, Hv, Dv)``, ``Hv`` a multiple of ``Hk``.
        gamma (array): the decay, in linear space: ``(B, T, Hv)``, or ``(B, T, Hv, Dk)`` for a decay per key
            feature.
        beta (array): the update rates ``(B, T, Hv)``.
        initial_state (array, optional): the state ``(B, Hv, Dv, Dk)`` before the first step. Default: zeros.
        mask (array, optional): boolean ``(B, T)``; False skips the step.

    Returns:
        list[array]: the outputs ``(B, T, Hv, Dv)`` and the final state ``(B, Hv, Dv, Dk)``.
    """
    op = "gated_delta_update"
    q, k, v, gamma, beta = (as_array(a, op) for a in (q, k, v, gamma, beta))
    if q.ndim != 4 or k._shape != q._shape or v.ndim != 4 or v._shape[:2] != q._shape[:2]:
        raise ValueError(f"{op}: q and k must be (B, T, Hk, Dk) and v (B, T, Hv, Dv), got q {describe(q)}, "
                         f"k {describe(k)}, v {describe(v)}")
    b, t, hk, dk = q._shape
    hv, dv = v._shape[2:]
    if hk == 0 or hv % hk:
        raise ValueError(f"{op}: the value heads ({hv}) must be a multiple of the key heads ({hk})")
    if gamma._shape not in ((b, t, hv), (b, t, hv, dk)):
        raise ValueError(f"{op}: gamma must be ({b}, {t}, {hv}) or ({b}, {t}, {hv}, {dk}), got {describe(gamma)}")
    if beta._shape != (b, t, hv):
        raise ValueError(f"{op}: beta must be ({b}, {t}, {hv}), got {describe(beta)}")
    st = resolve_stream(stream)
    if initial_state is None:
        state = zeros((b, hv, dv, dk), dt.float32, stream=st)
    else:
        state = as_array(initial_state, op)
        if state._shape != (b, hv, dv, dk):
            raise ValueError(f"{op}: initial_state must be ({b}, {hv}, {dv}, {dk}), got {describe(state)}")
    if mask is not None:
        mask = as_array(mask, op)
        if mask._shape != (b, t) or mask._dtype is not dt.bool_:
            raise ValueError(f"{op}: mask must be boolean ({b}, {t}), got {describe(mask)}")
    if hv != hk:  # (each key head read by its group of value heads)
        q = lay.repeat(q, hv // hk, axis=2, stream=st)
        k = lay.repeat(k, hv // hk, axis=2, stream=st)
    mul, add, sub = ew.multiply, ew.add, ew.subtract
    ys = []
    with StreamContext(st):  # (the steps' slices, which take no stream, run there too)
        for i in range(t):
            qi, ki, vi, bi = q[:, i], k[:, i], v[:, i], beta[:, i]
            gi = gamma[:, i]
            decay = sh.expand_dims(gi, (-1, -2) if gi.ndim == 2 else -2)
            before = state
            decayed = mul(state, decay)
            row_k = sh.expand_dims(ki, -2)  # (B, H, 1, Dk)
            remembered = red.sum(mul(decayed, row_k), axis=-1)  # (B, H, Dv)
            delta = mul(sub(vi, remembered), sh.expand_dims(bi, -1))
            state = add(decayed, mul(row_k, sh.expand_dims(delta, -1)))
            y = red.sum(mul(state, sh.expand_dims(qi, -2)), axis=-1)
            if mask is not None:
                keep = mask[:, i]
                state = ew.where(sh.expand_dims(keep, (1, 2, 3)), state, before)
                y = ew.where(sh.expand_dims(keep, (1, 2)), y, 0)
            ys.append(cast(y, q._dtype, st))
        out = sh.stack(ys, axis=1) if ys else zeros((b, 0, hv, dv), q._dtype)
    return [out, state]


def metal_kernel(name: str, input_names, output_names, source: str, header: str = "",
                 ensure_row_contiguous: bool = True, atomic_outputs: bool = False, compile_options=None):
    """A custom Metal kernel, as MLX's. umx runs on Linux, which has no Metal: calling the result raises
    RuntimeError (use :func:`cuda_kernel`).

    Args:
        name (str): the kernel's name.
        input_names (Sequence[str]): the inputs' parameter names.
        output_names (Sequence[str]): the outputs' parameter names.
        source (str): the kernel's body, in Metal.
        header (str): code before the kernel.
        ensure_row_contiguous (bool): make inputs row contiguous first (default True).
        atomic_outputs (bool): declare the outputs atomic (default False).
        compile_options (dict, optional): Metal compile options.

    Returns:
        Callable: raises RuntimeError when called.
    """

    def call(*args, **kwargs):
        raise RuntimeError(f"metal_kernel {name!r}: Metal is not available on this machine; write the kernel in "
                           "CUDA with mx.fast.cuda_kernel")

    return call


class _CudaKernelFunction:
    """The callable that :func:`cuda_kernel` returns."""

    def __init__(self, name, input_names, output_names, source, header, ensure_row_contiguous, shared_memory):
        self.name = name
        self.input_names = tuple(input_names)
        self.output_names = tuple(output_names)
        self.source = source
        self.header = header
        self.ensure_row_contiguous = bool(ensure_row_contiguous)
        self.shared_memory = int(shared_memory)

    def __call__(self, *, inputs, output_shapes, output_dtypes, grid, threadgroup, template=None,
                 init_value=None, verbose: bool = False, stream=None) -> list:
        """Run the kernel (lazily, as any op).

        Args:
            inputs (Sequence[array | scalar]): one per input name (scalars become 0-d arrays).
            output_shapes (Sequence[Sequence[int]]): one shape per output name.
            output_dtypes (Sequence[Dtype]): one dtype per output name.
            grid (tuple[int, int, int]): threads per axis (blocks are ``ceil(grid / threadgroup)``).
            threadgroup (tuple[int, int, int]): threads per block.
            template (Sequence[tuple[str, Dtype | int | bool]], optional): template arguments.
            init_value (float, optional): fill the outputs with this before the kernel runs.
            verbose (bool): print the generated source.
            stream (Stream | Device, optional): a GPU stream.

        Returns:
            list[array]: the outputs.
        """
        op = f"cuda_kernel {self.name!r}"
        st = resolve_stream(stream)
        if st.device.type is cpu:
            if not is_available(gpu):
                raise RuntimeError(f"{op}: no CUDA GPU is available (CuPy and a device); custom kernels run on "
                                   "GPU streams only")
            raise ValueError(f"{op}: custom CUDA kernels run on GPU streams only, got {st}")
        ins = tuple(as_array(x, op) for x in inputs)
        if len(ins) != len(self.input_names):
            raise ValueError(f"{op}: {len(ins)} inputs for {len(self.input_names)} input names")
        shapes = tuple(_core.shape_of(s, op) for s in output_shapes)
        dtypes = tuple(output_dtypes)
        if len(shapes) != len(self.output_names) or len(dtypes) != len(self.output_names):
            raise ValueError(f"{op}: needs one shape and one dtype per output name ({len(self.output_names)})")
        grid, threadgroup = tuple(int(g) for g in grid), tuple(int(t) for t in threadgroup)
        if len(grid) != 3 or len(threadgroup) != 3 or min(grid + threadgroup) < 1:
            raise ValueError(f"{op}: grid and threadgroup must be three positive ints, got {grid}, {threadgroup}")
        tmpl = tuple((str(k), val) for k, val in (template or ()))
        prim = CudaKernel(self.name, self.input_names, self.output_names, self.source, self.header,
                          self.ensure_row_contiguous, self.shared_memory, tmpl, grid, threadgroup,
                          tuple(x._dtype for x in ins), shapes, dtypes,
                          None if init_value is None else float(init_value), bool(verbose))
        return _core.sibling_nodes(prim, ins, list(zip(shapes, dtypes)), st)


def cuda_kernel(name: str, input_names, output_names, source: str, header: str = "",
                ensure_row_contiguous: bool = True, shared_memory: int = 0):
    """A custom CUDA kernel, compiled at first use (once per source and template) through CuPy's ``RawModule``
    and launched on umx's GPU stream, in order with the other work there.

    ``source`` is the body of a ``__global__`` function whose signature umx writes: each input as ``const T*
    name`` and each output as ``T* name`` (``T`` from the array's dtype: ``float``, ``__half``,
    ``__nv_bfloat16``, ``int``...), plus ``name_shape``, ``name_strides`` (in elements, indexable, with
    ``.data()``) and ``int name_ndim`` for each input whose name appears so in the source. ``template`` pairs
    become the function's template arguments (a dtype, an int or a bool). ``elem_to_loc(elem, shape, strides,
    ndim)``, ``WARP_SIZE`` and cooperative groups are available.

    Args:
        name (str): the kernel's name.
        input_names (Sequence[str]): the inputs' parameter names.
        output_names (Sequence[str]): the outputs' parameter names.
        source (str): the kernel's body.
        header (str): code placed before the kernel (helpers, includes).
        ensure_row_contiguous (bool): copy strided inputs to row-major order first (default True).
        shared_memory (int): bytes of dynamic shared memory (default 0).

    Returns:
        Callable: ``kernel(*, inputs, output_shapes, output_dtypes, grid, threadgroup, template=None,
        init_value=None, verbose=False, stream=None)`` returning the list of outputs. ``grid`` counts threads
        per axis (as MLX's does); ``threadgroup`` is the block; ``init_value`` fills the outputs first;
        ``verbose`` prints the generated source.
    """
    return _CudaKernelFunction(name, input_names, output_names, source, header, ensure_row_contiguous,
                               shared_memory)


def precompiled_cuda_kernel(*, name: str, compiled_source: bytes, inputs, output_shapes, output_dtypes, scalars,
                            grid, threadgroup, shared_memory: int = 0, init_value=None,
                            ensure_row_contiguous: bool = False, stream=None) -> list:
    """MLX's launcher of a CUDA kernel compiled ahead of time (PTX or cubin). umx does not run precompiled
    kernels (their argument layout is MLX's own): this raises NotImplementedError naming the kernel. Write the
    kernel's body for :func:`cuda_kernel`, which compiles it at first use.

    Args:
        name (str): the kernel's name.
        compiled_source (bytes): the PTX or cubin.
        inputs, output_shapes, output_dtypes, scalars, grid, threadgroup, shared_memory, init_value,
        ensure_row_contiguous, stream: as MLX's.

    Returns:
        list[array]: never (raises).
    """
    raise NotImplementedError(f"precompiled_cuda_kernel {name!r}: umx does not run precompiled CUDA kernels; "
                              "write its body for mx.fast.cuda_kernel, which compiles it at first use")


# -- the same computations in plain ops (what the derivative rules differentiate) ------------------------------
def _composed_rms_norm(prim: RMSNorm, x: array, *weight) -> array:
    out = dt.result_type(x, *weight)
    acc = _acc(out)
    xa = cast(x, acc)
    y = xa * ew.rsqrt(red.mean(ew.square(xa), axis=-1, keepdims=True) + prim.eps)
    if weight:
        y = y * cast(weight[0], acc)
    return cast(y, out)


def _composed_layer_norm(prim: LayerNorm, x: array, *params) -> array:
    out = dt.result_type(x, *params)
    acc = _acc(out)
    xa = cast(x, acc)
    centered = xa - red.mean(xa, axis=-1, keepdims=True)
    y = centered * ew.rsqrt(red.mean(ew.square(centered), axis=-1, keepdims=True) + prim.eps)
    if prim.has_weight:
        y = y * cast(params[0], acc)
    if prim.has_bias:
        y = y + cast(params[-1], acc)
    return cast(y, out)


def _sdpa_scores(prim: ScaledDotProductAttention, q: array, k: array, v: array, *rest) -> tuple:
    """Attention's scores written in plain ops, in the accumulation dtype, with the query heads of one key head
    side by side against it (grouped-query heads): ``(qa, ka, va, s)``, the scaled queries, the keys and values
    and the masked scores (a masked score is ``_LOWEST``, so its probability is 0)."""
    acc = _acc(q._dtype)
    b, n_q, t_q, _ = q._shape
    n_kv, t_k = k._shape[1], k._shape[2]
    rep = n_q // n_kv
    qa = cast(q, acc) * prim.scale
    ka, va = cast(k, acc), cast(v, acc)
    if rep > 1:
        qa = sh.reshape(qa, (b, n_kv, rep, t_q, -1))
        ka, va = sh.expand_dims(ka, 2), sh.expand_dims(va, 2)
    s = qa @ sh.swapaxes(ka, -1, -2)
    if prim.mask == "causal":
        seen = sh.expand_dims(arange(t_q) + (t_k - t_q), -1) >= arange(t_k)
        s = ew.where(seen, s, _LOWEST)
    elif prim.mask in ("bool", "additive"):
        m = rest[0]
        if m.ndim < 4:
            m = sh.reshape(m, (1,) * (4 - m.ndim) + m._shape)
        if rep > 1:
            m = sh.unflatten(m, 1, (n_kv, rep)) if m._shape[1] == n_q else sh.expand_dims(m, 1)
        s = ew.where(m, s, _LOWEST) if prim.mask == "bool" else s + cast(m, acc)
    return qa, ka, va, s


def _sdpa_probabilities(prim: ScaledDotProductAttention, s: array, rest: tuple) -> tuple:
    """The softmax of scores ``s`` (see ``_sdpa_scores``), with the sinks' logits as an extra column where the
    primitive has them: ``(p, p_sink)``, the keys' probabilities and the sinks' (None without sinks)."""
    if not prim.has_sinks:
        return red.softmax(s, axis=-1), None
    shape = (1, s._shape[1], s._shape[2], 1, 1) if s.ndim == 5 else (1, s._shape[1], 1, 1)
    sink = sh.reshape(cast(rest[-1], s._dtype), shape)
    full = red.softmax(concatenate([sh.broadcast_to(sink, s._shape[:-1] + (1,)), s], axis=-1), axis=-1)
    return full[..., 1:], full[..., :1]


def _composed_sdpa(prim: ScaledDotProductAttention, q: array, k: array, v: array, *rest) -> array:
    qa, ka, va, s = _sdpa_scores(prim, q, k, v, *rest)
    o = _sdpa_probabilities(prim, s, rest)[0] @ va
    if o.ndim == 5:
        o = sh.reshape(o, q._shape[:3] + (-1,))
    return cast(o, q._dtype)

