"""The CUDA C++ text of umx's own kernels (``direct.py`` compiles and launches them): one elementwise node or fused
region, a full reduction, a reduction over consecutive axes, a product of rows with a few columns.

Only text here, no CuPy: the tests compile every kind of kernel with NVRTC on machines without a GPU. (Beside the
strided copy's kernel, the layout rules its host side uses, ``merged_axes`` and ``view_strides``, pure Python
tested against NumPy's.)
"""

from __future__ import annotations

from ...dtypes import bfloat16, float32
from .fusion import C_TYPES, PREAMBLE

#: threads per block of every kernel here (the reductions' shared arrays are this long)
BLOCK = 256

#: C types of the product kernel's dtypes, by NumPy dtype char
NARROW_TYPES = {"f": "float", "d": "double"}

#: C types of constants, by how they travel (see direct._SCALAR_KINDS)
SCALAR_TYPES = {"f": "double", "i": "long long", "u": "unsigned long long", "b": "long long"}

OWN_PREAMBLE = PREAMBLE + r"""
template <typename T>
__device__ inline void umx_pack(unsigned long long* flag, unsigned long long token, T v) {
  union { T v; unsigned int u; } bits;  // (the value's bytes, the rest zero; only T of at most 4 bytes come here)
  bits.u = 0;
  bits.v = v;
  *(volatile unsigned long long*)flag = (token << 32) | bits.u;
}

// V consecutive elements, loaded and stored as one access (see elementwise_source's vec)
template <typename T, int V>
struct alignas(sizeof(T) * V) umx_vec { T a[V]; };
"""

# per reduction: (how two partial results combine, for floats and for integers; whether it starts from 0 rather
# than from an element)
COMBINE = {
    "Sum": ("a + b", "a + b", True),
    "Mean": ("a + b", "a + b", True),
    "Max": ("((a > b || isnan(a)) ? a : b)", "(a > b ? a : b)", False),
    "Min": ("((a < b || isnan(a)) ? a : b)", "(a < b ? a : b)", False),
}


def elementwise_source(name: str, leaf_dtypes: list, kinds: str, lines: list, out_dtype, vec: int = 1,
                       sides: tuple = ()) -> str:
    """The CUDA C++ of one elementwise kernel ``name``: ``lines`` (see ``fusion.steps``) over leaves of ``kinds``
    (``p``: an array of the output's size, ``r``: one broadcast along leading axes, ``s``: one of the output's
    size in rows of contiguous elements a stride apart, ``c``: one broadcast along trailing axes (a row's mean
    or maximum, kept as a column) and maybe leading ones, else a scalar of that kind),
    in a grid-stride loop over the output, then the mirror's flag. bfloat16 is read and written as its 16-bit
    storage (a constant too: its bits travel as an unsigned integer) and computed in float.

    ``vec`` > 1: each thread takes ``vec`` consecutive elements, every array read and written ``vec`` at a time in
    one access of up to 16 bytes (a 2-byte element a thread leaves a large kernel short of loads in flight). The
    host sees to it that ``n``, every leaf's alignment, a broadcast leaf's size, a strided leaf's row length and
    stride and a column leaf's ``w`` are multiples of ``vec``, and passes no mirror and no flag.

    ``sides``: ``(step, dtype)`` of a fused region's side outputs (see ``runtime.fusion.merge``), each written to
    an array of the output's size passed after the flag's token (``side0, side1, ...``; never with a mirror)."""
    params = []
    scalars = []
    loads = []
    vloads = []
    for i, (d, k) in enumerate(zip(leaf_dtypes, kinds)):
        t = C_TYPES[d.name]
        bits = d.name == "bfloat16"
        stored = "unsigned short" if bits else t
        if k == "p":
            params.append(f"const {stored}* __restrict__ p{i}")
            loads.append(f"const {t} x{i} = {_load(bits, f'p{i}[i]')};")
            at = "i"
        elif k == "r":
            params += [f"const {stored}* __restrict__ p{i}", f"long long m{i}"]
            loads.append(f"const {t} x{i} = {_load(bits, f'p{i}[i % m{i}]')};")
            at = f"i % m{i}"
        elif k == "s":  # rows of c elements, q apart (the host keeps n below 2**31: 32-bit division)
            params += [f"const {stored}* __restrict__ p{i}", f"long long c{i}", f"long long q{i}"]
            at = f"(long long)((unsigned)i / (unsigned)c{i}) * q{i} + (unsigned)i % (unsigned)c{i}"
            loads.append(f"const {t} x{i} = {_load(bits, f'p{i}[{at}]')};")
        elif k == "c":  # element i is p's element (i / w) % m (the host keeps n below 2**31: 32-bit division)
            params += [f"const {stored}* __restrict__ p{i}", f"long long w{i}", f"long long m{i}"]
            at = f"((unsigned)i / (unsigned)w{i}) % (unsigned)m{i}"
            loads.append(f"const {t} x{i} = {_load(bits, f'p{i}[{at}]')};")
            # (with vec elements a thread, w is a multiple of vec: the thread's elements share one)
            vloads.append((f"const {t} c{i} = {_load(bits, f'p{i}[{at}]')};", f"const {t} x{i} = c{i};"))
            continue
        else:
            params.append(f"{SCALAR_TYPES[k]} s{i}")
            scalars.append(f"const {t} x{i} = {_load(bits, f'(unsigned short)s{i}') if bits else f'({t})s{i}'};")
            continue
        vloads.append((f"const umx_vec<{stored}, {vec}> v{i} = *reinterpret_cast<const umx_vec<{stored}, {vec}>*>("
                       f"p{i} + ({at}));", f"const {t} x{i} = {_load(bits, f'v{i}.a[e]')};"))
    last = f"t{len(lines) - 1}"
    if out_dtype.name == "bfloat16":
        t, last = "unsigned short", f"umx_bf16_bits({last})"
    else:
        t = C_TYPES[out_dtype.name]
    params += [f"{t}* __restrict__ out", "long long n", f"{t}* mirror", "unsigned long long* flag",
               "unsigned long long token"]
    side_types = []  # (storage type, the value stored)
    for k, (step, d) in enumerate(sides):
        st, value = ("unsigned short", f"umx_bf16_bits(t{step})") if d.name == "bfloat16" else (C_TYPES[d.name],
                                                                                               f"t{step}")
        params.append(f"{st}* __restrict__ side{k}")
        side_types.append((st, value))
    if vec > 1:
        body = "\n      ".join([*(x for _, x in vloads), *lines, f"r.a[e] = {last};",
                                *(f"r{k}.a[e] = {v};" for k, (_, v) in enumerate(side_types))])
        side_regs = " ".join(f"umx_vec<{st}, {vec}> r{k};" for k, (st, _) in enumerate(side_types))
        side_stores = " ".join(f"*reinterpret_cast<umx_vec<{st}, {vec}>*>(side{k} + i) = r{k};"
                               for k, (st, _) in enumerate(side_types))
        return f"""{OWN_PREAMBLE}
extern "C" __global__ void {name}({", ".join(params)}) {{
  {" ".join(scalars)}
  const long long stride = (long long)gridDim.x * blockDim.x * {vec};
  for (long long i = (blockIdx.x * (long long)blockDim.x + threadIdx.x) * {vec}; i < n; i += stride) {{
    {" ".join(v for v, _ in vloads)}
    umx_vec<{t}, {vec}> r; {side_regs}
    #pragma unroll
    for (int e = 0; e < {vec}; ++e) {{
      {body}
    }}
    *reinterpret_cast<umx_vec<{t}, {vec}>*>(out + i) = r; {side_stores}
  }}
}}
"""
    body = "\n    ".join([*loads, *lines, f"const {t} r = {last};",
                          *(f"side{k}[i] = {v};" for k, (_, v) in enumerate(side_types))])
    return f"""{OWN_PREAMBLE}
extern "C" __global__ void {name}({", ".join(params)}) {{
  {" ".join(scalars)}
  const long long stride = (long long)gridDim.x * blockDim.x;
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += stride) {{
    {body}
    if (out) out[i] = r;
    else umx_pack(flag, token, r);  // (no output: one small element, packed with the token)
    if (mirror) mirror[i] = r;
  }}
  if (flag && out) {{  // (one block: the mirror's writes are visible to the host before the flag)
    __threadfence_system();
    __syncthreads();
    if (threadIdx.x == 0) *(volatile unsigned long long*)flag = token;
  }}
}}
"""


def _load(bits: bool, element: str) -> str:
    return f"umx_bf16_load({element})" if bits else element


def _store(bits: bool, value: str) -> str:
    return f"umx_bf16_bits({value})" if bits else value


def reduce_source(kind: str, dtype, name: str, block: int = BLOCK) -> str:
    """The CUDA C++ of full reduction ``name`` (``kind``: Sum, Mean, Max or Min) over ``dtype``: each block
    reduces a strided share, and the block that draws the last ticket reduces the blocks' results in block order.
    bfloat16 is read and written as its 16-bit storage and reduced in float (rounded once, at the end)."""
    t = C_TYPES[dtype.name]
    bits = dtype.name == "bfloat16"
    stored = "unsigned short" if bits else t
    combine = COMBINE[kind][0 if dtype.kind == "f" else 1]
    from_zero = COMBINE[kind][2]
    start = f"({t})0" if from_zero else "{first}"
    tree = """part[k] = acc;
  __syncthreads();
  for (int s = blockDim.x / 2; s > 0; s >>= 1) {
    if (k < s) part[k] = umx_combine(part[k], part[k + s]);
    __syncthreads();
  }"""
    return f"""{OWN_PREAMBLE}
__device__ inline {t} umx_combine({t} a, {t} b) {{ return {combine}; }}
extern "C" __global__ void {name}(const {stored}* __restrict__ x, long long n, {stored}* __restrict__ out,
                                  {t}* partials, unsigned int* ticket, {stored}* mirror, unsigned long long* flag,
                                  unsigned long long token) {{
  __shared__ {t} part[{block}];
  __shared__ bool last;
  const int k = threadIdx.x;
  const long long stride = (long long)gridDim.x * blockDim.x;
  const long long first = blockIdx.x * (long long)blockDim.x + k;
  {t} acc = {start.format(first=_load(bits, "x[first < n ? first : 0]"))};
  for (long long i = first + {"0" if from_zero else "stride"}; i < n; i += stride) {{
    acc = umx_combine(acc, {_load(bits, "x[i]")});
  }}
  {tree}
  if (gridDim.x > 1) {{
    if (k == 0) {{
      partials[blockIdx.x] = part[0];
      __threadfence();  // (the result is seen by whichever block draws the last ticket; the ticket wraps to 0)
      last = atomicInc(ticket, gridDim.x - 1) == gridDim.x - 1;
    }}
    __syncthreads();
    if (!last) return;
    const volatile {t}* p = partials;
    acc = {start.format(first="p[k < gridDim.x ? k : 0]")};
    for (int i = k + {"0" if from_zero else "blockDim.x"}; i < gridDim.x; i += blockDim.x) acc = umx_combine(acc, p[i]);
    {tree}
  }}
  if (k == 0) {{
    const {stored} r = {_store(bits, f"part[0]{f' / ({t})n' if kind == 'Mean' else ''}")};
    if (out) out[0] = r;
    else umx_pack(flag, token, r);  // (no output: one small element, packed with the token)
    if (mirror) mirror[0] = r;
    if (flag && out) {{
      __threadfence_system();
      *(volatile unsigned long long*)flag = token;
    }}
  }}
}}
"""


#: the block of an axes reduction (``axes_reduce_source``): 32 columns by ``AXES_ROWS`` rows
AXES_ROWS = 8


def axes_reduce_source(dtype, name: str) -> str:
    """The CUDA C++ of the sum of a contiguous ``(a, rows, cols)`` array over its middle axis (reduced axes between
    kept ones, e.g. a batch norm's over every axis but the channels), in two kernels: ``{name}`` sums row ranges
    of ``chunk`` rows into ``(a, ranges, cols)`` partials (the accumulation type), and ``{name}_done`` sums those
    over ranges into the output, divided by ``divisor`` (a mean's count, or 1), in ``dtype``; ``{name}_one`` does
    both at once where one range covers the rows; ``{name}_rows`` reduces trailing axes (``cols`` of 1: each
    output a row of ``n`` elements), one warp per output. A block is 32 columns
    (a warp reads consecutive elements of a row) by ``AXES_ROWS`` rows, each thread adding every ``AXES_ROWS``-th
    row of its range, then the block adds its rows in order: the result does not depend on timing. bfloat16 is
    read and written as its 16-bit storage and summed in float."""
    bits = dtype.name == "bfloat16"
    acc = "double" if dtype.name == "float64" else "float"
    stored = "unsigned short" if bits else C_TYPES[dtype.name]

    def kernel(kname: str, src: str, load, dst: str, store) -> str:
        return f"""
extern "C" __global__ void {kname}(const {src}* __restrict__ x, long long rows, long long cols, long long chunk,
                                   {dst}* __restrict__ out, {acc} divisor) {{
  __shared__ {acc} part[{AXES_ROWS}][33];
  const int tx = threadIdx.x, ty = threadIdx.y;
  const long long c = blockIdx.x * 32LL + tx;
  const long long first = blockIdx.y * chunk;
  const long long end = first + chunk < rows ? first + chunk : rows;
  const {src}* base = x + (long long)blockIdx.z * rows * cols + c;
  {acc} acc = 0;
  if (c < cols) {{
    for (long long r = first + ty; r < end; r += {AXES_ROWS}) acc += {load("base[r * cols]")};
  }}
  part[ty][tx] = acc;
  __syncthreads();
  if (ty == 0 && c < cols) {{
    #pragma unroll
    for (int k = 1; k < {AXES_ROWS}; ++k) acc += part[k][tx];
    out[((long long)blockIdx.z * gridDim.y + blockIdx.y) * cols + c] = {store("acc")};
  }}
}}
"""

    def finish(v):
        return _store(bits, f"({'float' if bits else stored})({v} / divisor)")

    rows = f"""
extern "C" __global__ void {name}_rows(const {stored}* __restrict__ x, long long outs, long long n, long long unused,
                                       {stored}* __restrict__ out, {acc} divisor) {{
  // one warp per output: each lane adds every 32nd element of its row, then the lanes' sums in a fixed tree
  const int lane = threadIdx.x & 31;
  const long long warps = ((long long)gridDim.x * blockDim.x) >> 5;
  for (long long r = (blockIdx.x * (long long)blockDim.x + threadIdx.x) >> 5; r < outs; r += warps) {{
    const {stored}* row = x + r * n;
    {acc} acc = 0;
    for (long long j = lane; j < n; j += 32) acc += {_load(bits, "row[j]")};
    #pragma unroll
    for (int o = 16; o > 0; o >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, o);
    if (lane == 0) out[r] = {finish("acc")};
  }}
}}
"""
    return (PREAMBLE + kernel(name, stored, lambda e: _load(bits, e), acc, lambda v: v)
            + kernel(f"{name}_done", acc, lambda e: e, stored, finish)
            + kernel(f"{name}_one", stored, lambda e: _load(bits, e), stored, finish) + rows)


def narrow_source(char: str, n: int, name: str) -> str:
    """The CUDA C++ of product ``name``: rows of NumPy dtype ``char`` (``NARROW_TYPES``) times a ``(k, n)`` matrix."""
    t = NARROW_TYPES[char]
    return f"""
extern "C" __global__ void {name}(const {t}* __restrict__ a, const {t}* __restrict__ b, {t}* __restrict__ out,
                                  long long rows, long long k) {{
  // one warp per row of a: each lane takes every 32nd element of the row, then the warp adds up its lanes
  const int lane = threadIdx.x & 31;
  const long long warps = ((long long)gridDim.x * blockDim.x) >> 5;
  for (long long r = (blockIdx.x * (long long)blockDim.x + threadIdx.x) >> 5; r < rows; r += warps) {{
    const {t}* row = a + r * k;
    {t} acc[{n}];
    #pragma unroll
    for (int c = 0; c < {n}; ++c) acc[c] = 0;
    for (long long j = lane; j < k; j += 32) {{
      const {t} x = row[j];
      #pragma unroll
      for (int c = 0; c < {n}; ++c) acc[c] += x * __ldg(b + j * {n} + c);
    }}
    #pragma unroll
    for (int c = 0; c < {n}; ++c) {{
      #pragma unroll
      for (int o = 16; o > 0; o >>= 1) acc[c] += __shfl_xor_sync(0xffffffffu, acc[c], o);
      if (lane == c) out[r * {n} + c] = acc[c];
    }}
  }}
}}
"""


#: a block's sum (or maximum) of one float per thread, every thread getting it: shuffles within each warp, then
#: the warps' results through ``partial`` (one float per warp); the norm and softmax kernels share it
BLOCK_REDUCE = r"""
__device__ inline float umx_block_reduce(float v, float* partial, bool is_max) {
  #pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    const float other = __shfl_xor_sync(0xffffffffu, v, o);
    v = is_max ? fmaxf(v, other) : v + other;
  }
  __syncthreads();  // (partial may still be read from the last call)
  if ((threadIdx.x & 31) == 0) partial[threadIdx.x >> 5] = v;
  __syncthreads();
  if (threadIdx.x < 32) {
    const float neutral = is_max ? __int_as_float(0xff800000u) : 0.0f;
    v = threadIdx.x < (blockDim.x >> 5) ? partial[threadIdx.x] : neutral;
    #pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
      const float other = __shfl_xor_sync(0xffffffffu, v, o);
      v = is_max ? fmaxf(v, other) : v + other;
    }
    if (threadIdx.x == 0) partial[0] = v;
  }
  __syncthreads();
  return partial[0];
}
"""


#: eight bfloat16 values packed in 16 bytes (a uint4 loaded from their storage) as float32, exactly
BF16_UNPACK8 = r"""
__device__ __forceinline__ void umx_unpack8(const uint4 p, float* v) {
  v[0] = __uint_as_float(p.x << 16); v[1] = __uint_as_float(p.x & 0xFFFF0000u);
  v[2] = __uint_as_float(p.y << 16); v[3] = __uint_as_float(p.y & 0xFFFF0000u);
  v[4] = __uint_as_float(p.z << 16); v[5] = __uint_as_float(p.z & 0xFFFF0000u);
  v[6] = __uint_as_float(p.w << 16); v[7] = __uint_as_float(p.w & 0xFFFF0000u);
}
"""

#: the storage type that ``mx.fast``'s kernels read and write for each dtype they take: float32 as itself,
#: bfloat16 as its 16 bits (loaded exactly as float, stored rounded once: what widening, then narrowing, gives)
FAST_TYPES = {"float32": "float", "bfloat16": "unsigned short"}
#: umx dtype -> the storage type the fast ops' and softmax's kernels take it in
FAST_STORAGE = {float32: FAST_TYPES["float32"], bfloat16: FAST_TYPES["bfloat16"]}

#: the elements of a row each thread of the rms_norm kernel keeps in registers between its two passes
NORM_CACHED = 8
#: the threads of a normalization's block when there are few rows (fewer than the multiprocessors): more loads in
#: flight for a row that one block reads alone
NORM_FEW_ROWS_BLOCK = 1024

FAST_IO = PREAMBLE + BF16_UNPACK8 + r"""
__device__ __forceinline__ float umx_ld(const float* p, long long i) { return p[i]; }
__device__ __forceinline__ float umx_ld(const unsigned short* p, long long i) { return umx_bf16_load(p[i]); }
__device__ __forceinline__ void umx_st(float* p, long long i, float v) { p[i] = v; }
__device__ __forceinline__ void umx_st(unsigned short* p, long long i, float v) { p[i] = umx_bf16_bits(v); }
// The 8 elements at p (16-byte aligned) as float32: two 16-byte reads of float32, one of bfloat16 (widened).
__device__ __forceinline__ void umx_ld8(const float* p, float* o) {
  const float4 a = *(const float4*)p, b = *(const float4*)(p + 4);
  o[0] = a.x; o[1] = a.y; o[2] = a.z; o[3] = a.w;
  o[4] = b.x; o[5] = b.y; o[6] = b.z; o[7] = b.w;
}
__device__ __forceinline__ void umx_ld8(const unsigned short* p, float* o) { umx_unpack8(*(const uint4*)p, o); }
// v as a store to p's type keeps it (bfloat16: rounded as the elementwise kernels round; float32: itself)
__device__ __forceinline__ float umx_as_stored(const float*, float v) { return v; }
__device__ __forceinline__ float umx_as_stored(const unsigned short*, float v) { return umx_round_bf16(v); }
// v's 8 floats stored at p (16-byte aligned) as float32, or rounded to bfloat16, by 16-byte stores.
__device__ __forceinline__ void umx_st8(float* p, const float* v) {
  *(float4*)p = make_float4(v[0], v[1], v[2], v[3]);
  *(float4*)(p + 4) = make_float4(v[4], v[5], v[6], v[7]);
}
__device__ __forceinline__ void umx_st8(unsigned short* p, const float* v) {
  unsigned int w[4];
  #pragma unroll
  for (int i = 0; i < 4; ++i) w[i] = umx_bf16_bits(v[2 * i]) | ((unsigned int)umx_bf16_bits(v[2 * i + 1]) << 16);
  *(uint4*)p = make_uint4(w[0], w[1], w[2], w[3]);
}
"""


#: the elements of a row each thread of the softmax kernels keeps in registers between its passes
SOFTMAX_CACHED = 8
#: the threads a block of the softmax kernels has when a warp takes a row (several rows a block)
SOFTMAX_WARP_ROWS_BLOCK = 128

#: a row's sum (or maximum) over the ``lanes`` threads that take it: a warp's by shuffles, or a block's
ROW_REDUCE = r"""
__device__ __forceinline__ float umx_row_reduce(float v, float* partial, bool is_max, bool warp_rows) {
  if (!warp_rows) return umx_block_reduce(v, partial, is_max);
  #pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    const float other = __shfl_xor_sync(0xffffffffu, v, o);
    v = is_max ? fmaxf(v, other) : v + other;
  }
  return v;
}
"""


def rms_norm_source(name: str, x: str = "float", w: str = "float") -> str:
    """The CUDA C++ of ``mx.fast.rms_norm`` on rows of storage type ``x`` (see ``FAST_TYPES``; the output's too)
    with a weight of type ``w``: one block per row sums the squares (float32), then scales the row (and
    multiplies the weight, where ``has_weight``). Each thread keeps its first ``NORM_CACHED`` elements in
    registers between the two passes (a decode step's row of a few thousand is read once). ``{name}_vec`` takes
    rows of a multiple of 8 elements, 8 a thread, read and written 16 bytes at a time; ``{name}_add_vec`` the
    same rows of the sum of two arrays, which it writes too."""
    return BLOCK_REDUCE + FAST_IO + f"""
extern "C" __global__ void {name}(const {x}* __restrict__ x, const {w}* __restrict__ w, {x}* __restrict__ out,
                                  int d, float eps, int has_weight) {{
  __shared__ float partial[32];
  const {x}* row = x + (long long)blockIdx.x * d;
  {x}* dst = out + (long long)blockIdx.x * d;
  const int rest = {NORM_CACHED} * blockDim.x;  // (the first element no thread keeps)
  float kept[{NORM_CACHED}];
  float s = 0.0f;
  #pragma unroll
  for (int c = 0; c < {NORM_CACHED}; ++c) {{
    const int i = threadIdx.x + c * blockDim.x;
    kept[c] = i < d ? umx_ld(row, i) : 0.0f;
    s += kept[c] * kept[c];
  }}
  for (int i = threadIdx.x + rest; i < d; i += blockDim.x) {{
    const float v = umx_ld(row, i);
    s += v * v;
  }}
  const float scale = rsqrtf(umx_block_reduce(s, partial, false) / (float)d + eps);
  #pragma unroll
  for (int c = 0; c < {NORM_CACHED}; ++c) {{
    const int i = threadIdx.x + c * blockDim.x;
    if (i < d) umx_st(dst, i, has_weight ? kept[c] * scale * umx_ld(w, i) : kept[c] * scale);
  }}
  for (int i = threadIdx.x + rest; i < d; i += blockDim.x) {{
    const float v = umx_ld(row, i) * scale;
    umx_st(dst, i, has_weight ? v * umx_ld(w, i) : v);
  }}
}}

// Rows of a multiple of 8 elements, 8 a thread (16-byte aligned): each thread reads its 8 elements (and the
// weight's) by 16-byte loads, issued together before the sum waits for any, and writes them by one store.
extern "C" __global__ void {name}_vec(const {x}* __restrict__ x, const {w}* __restrict__ w, {x}* __restrict__ out,
                                      int d, float eps, int has_weight) {{
  __shared__ float partial[32];
  const long long at = (long long)blockIdx.x * d;
  const int i = threadIdx.x * 8;
  float v[8], wv[8];
  float s = 0.0f;
  if (i < d) {{
    umx_ld8(x + at + i, v);
    if (has_weight) umx_ld8(w + i, wv);
    #pragma unroll
    for (int e = 0; e < 8; ++e) s += v[e] * v[e];
  }}
  const float scale = rsqrtf(umx_block_reduce(s, partial, false) / (float)d + eps);
  if (i < d) {{
    #pragma unroll
    for (int e = 0; e < 8; ++e) v[e] = has_weight ? v[e] * scale * wv[e] : v[e] * scale;
    umx_st8(out + at + i, v);
  }}
}}

// {name}_vec of a + b (a residual stream's add, then its norm): the sum is written to sum, rounded to the
// storage type as the add's own kernel rounds it, and normalized as {name}_vec normalizes what it reads back.
extern "C" __global__ void {name}_add_vec(const {x}* __restrict__ a, const {x}* __restrict__ b,
                                          const {w}* __restrict__ w, {x}* __restrict__ sum, {x}* __restrict__ out,
                                          int d, float eps, int has_weight) {{
  __shared__ float partial[32];
  const long long at = (long long)blockIdx.x * d;
  const int i = threadIdx.x * 8;
  float v[8], bv[8], wv[8];
  float s = 0.0f;
  if (i < d) {{
    umx_ld8(a + at + i, v);
    umx_ld8(b + at + i, bv);
    if (has_weight) umx_ld8(w + i, wv);
    #pragma unroll
    for (int e = 0; e < 8; ++e) v[e] = umx_as_stored(sum, v[e] + bv[e]);
    umx_st8(sum + at + i, v);
    #pragma unroll
    for (int e = 0; e < 8; ++e) s += v[e] * v[e];
  }}
  const float scale = rsqrtf(umx_block_reduce(s, partial, false) / (float)d + eps);
  if (i < d) {{
    #pragma unroll
    for (int e = 0; e < 8; ++e) v[e] = has_weight ? v[e] * scale * wv[e] : v[e] * scale;
    umx_st8(out + at + i, v);
  }}
}}
"""


def rope_source(name: str, x: str = "float") -> str:
    """The CUDA C++ of ``mx.fast.rope`` on rows ``(rows, t, d)`` of storage type ``x`` (see ``FAST_TYPES``): one
    thread per element of the (contiguous) output. Position ``t`` plus the row's batch entry's offset, times
    ``scale``, turns the pair of the element by ``position * base**(-i / half)``; pairs are ``(i, i + half)``, or
    neighbours where ``traditional``; elements from ``dims`` on are copied. ``x`` is read through the strides
    ``xs0..xs3`` (in elements) of its four axes (leading 1s padding fewer; ``n1``, ``n2``: the sizes of the middle
    two): a transposed view (heads before positions) is read in place. The offsets are read as ``offset_kind``
    says: 0 float32, 1 int32, 2 int64 (``n_offsets`` of them: one, or one per batch entry), 3 none (``fixed``)."""
    return FAST_IO + f"""
extern "C" __global__ void {name}(const {x}* __restrict__ x, {x}* __restrict__ out,
                                  const void* __restrict__ offsets, int n_offsets, int offset_kind, float fixed,
                                  long long total, int t, int d, int dims, int heads, float scale,
                                  float log_base_over_half, int traditional, int inverse,
                                  long long xs0, long long xs1, long long xs2, long long xs3, int n1, int n2) {{
  const long long k = blockIdx.x * (long long)blockDim.x + threadIdx.x;
  if (k >= total) return;
  const int j = (int)(k % d);
  const long long row = k / d;  // (a row of d elements: one position of one head of one batch entry)
  const long long at = (row / ((long long)n1 * n2)) * xs0 + ((row / n2) % n1) * xs1 + (row % n2) * xs2;
  if (j >= dims) {{
    out[k] = x[at + j * xs3];
    return;
  }}
  const int pos = (int)(row % t);
  const long long entry = n_offsets == 1 ? 0 : (row / t) / heads;
  const float start = offset_kind == 0 ? ((const float*)offsets)[entry]
                      : offset_kind == 1 ? (float)((const int*)offsets)[entry]
                      : offset_kind == 2 ? (float)((const long long*)offsets)[entry] : fixed;
  const int half = dims / 2;
  int i, partner, first;
  if (traditional) {{
    i = j >> 1;
    first = (j & 1) == 0;
    partner = first ? j + 1 : j - 1;
  }} else {{
    first = j < half;
    i = first ? j : j - half;
    partner = first ? j + half : j - half;
  }}
  const float position = (start + (float)pos) * scale;
  const float theta = position * expf((float)i * log_base_over_half);
  const float c = cosf(theta);
  const float s = inverse ? -sinf(theta) : sinf(theta);
  const float here = umx_ld(x, at + j * xs3);
  const float other = umx_ld(x, at + partner * xs3);
  umx_st(out, k, first ? here * c - other * s : other * s + here * c);
}}
"""


#: the longest head (query/key and value features) the attention kernel for few queries takes (its shared arrays)
SDPA_MAX_HEAD = 256


def layer_norm_source(name: str, x: str = "float", w: str = "float") -> str:
    """The CUDA C++ of ``mx.fast.layer_norm`` on rows of storage type ``x`` (see ``FAST_TYPES``; the output's
    too) with a weight and bias of type ``w``: one block of ``BLOCK`` threads per row sums the row, then the
    squares of its deviations (two passes over the row, as the host's kernel does), then writes
    ``(x - mean) * rsqrt(var + eps)``, times the weight and plus the bias where given."""
    return BLOCK_REDUCE + FAST_IO + f"""
extern "C" __global__ void {name}(const {x}* __restrict__ x, const {w}* __restrict__ w,
                                  const {w}* __restrict__ b, {x}* __restrict__ out, int d, float eps,
                                  int has_weight, int has_bias) {{
  __shared__ float partial[32];
  const {x}* row = x + (long long)blockIdx.x * d;
  {x}* dst = out + (long long)blockIdx.x * d;
  float s = 0.0f;
  for (int i = threadIdx.x; i < d; i += blockDim.x) s += umx_ld(row, i);
  const float mean = umx_block_reduce(s, partial, false) / (float)d;
  s = 0.0f;
  for (int i = threadIdx.x; i < d; i += blockDim.x) {{
    const float v = umx_ld(row, i) - mean;
    s += v * v;
  }}
  const float scale = rsqrtf(umx_block_reduce(s, partial, false) / (float)d + eps);
  for (int i = threadIdx.x; i < d; i += blockDim.x) {{
    float v = (umx_ld(row, i) - mean) * scale;
    if (has_weight) v *= umx_ld(w, i);
    if (has_bias) v += umx_ld(b, i);
    umx_st(dst, i, v);
  }}
}}
"""


#: the elements of a row each thread of the normalizations' gradient kernel keeps in registers (x and g each)
NORM_VJP_CACHED = 4


def norm_vjp_source(name: str, x: str = "float", w: str = "float") -> str:
    """The CUDA C++ of a normalization's gradient (``NormVJP``: RMSNorm's, or LayerNorm's where ``centered``) on
    rows of ``x`` and of the cotangent ``g`` of storage type ``x`` (see ``FAST_TYPES``), with a weight of type
    ``w``: one block per row finds the mean (centered) and ``r = rsqrt(var + eps)``, then the row's sums of ``gw``
    and ``gw * xhat`` (``gw = g * w``, ``xhat = (x - mean) * r``), then writes ``dx = r * (gw - mean(gw) - xhat *
    mean(gw * xhat))`` (no ``mean(gw)`` for RMSNorm) as float32, and where ``weight_rows`` also ``g * xhat``
    ``plane`` elements further (the weight's gradient is its sum over rows). Each thread keeps its first
    ``NORM_VJP_CACHED`` elements of ``x`` and ``g`` in registers through the four passes."""
    cached = NORM_VJP_CACHED
    return BLOCK_REDUCE + FAST_IO + f"""
extern "C" __global__ void {name}(const {x}* __restrict__ x, const {w}* __restrict__ w, const {x}* __restrict__ g,
                                  float* __restrict__ out, long long plane, int d, float eps, int centered,
                                  int has_weight, int weight_rows) {{
  __shared__ float partial[32];
  const long long at = (long long)blockIdx.x * d;
  const {x}* xr = x + at;
  const {x}* gr = g + at;
  const int rest = {cached} * blockDim.x;  // (the first element no thread keeps)
  float kx[{cached}], kg[{cached}];
  float s = 0.0f;
  #pragma unroll
  for (int c = 0; c < {cached}; ++c) {{
    const int j = threadIdx.x + c * blockDim.x;
    kx[c] = j < d ? umx_ld(xr, j) : 0.0f;
    kg[c] = j < d ? umx_ld(gr, j) * (has_weight ? umx_ld(w, j) : 1.0f) : 0.0f;  // (gw)
    s += kx[c];
  }}
  float mean = 0.0f;
  if (centered) {{
    for (int j = rest + threadIdx.x; j < d; j += blockDim.x) s += umx_ld(xr, j);
    mean = umx_block_reduce(s, partial, false) / (float)d;
  }}
  s = 0.0f;
  #pragma unroll
  for (int c = 0; c < {cached}; ++c) {{
    const float v = kx[c] - mean;
    if (threadIdx.x + c * blockDim.x < d) s += v * v;
  }}
  for (int j = rest + threadIdx.x; j < d; j += blockDim.x) {{
    const float v = umx_ld(xr, j) - mean;
    s += v * v;
  }}
  const float r = rsqrtf(umx_block_reduce(s, partial, false) / (float)d + eps);
  float a = 0.0f, b = 0.0f;
  #pragma unroll
  for (int c = 0; c < {cached}; ++c) {{
    a += kg[c];
    b += kg[c] * (kx[c] - mean) * r;  // (zero past the row: kg is)
  }}
  for (int j = rest + threadIdx.x; j < d; j += blockDim.x) {{
    const float gw = umx_ld(gr, j) * (has_weight ? umx_ld(w, j) : 1.0f);
    a += gw;
    b += gw * (umx_ld(xr, j) - mean) * r;
  }}
  const float mb = umx_block_reduce(b, partial, false) / (float)d;
  const float ma = centered ? umx_block_reduce(a, partial, false) / (float)d : 0.0f;
  float* dx = out + at;
  float* gx = out + plane + at;
  #pragma unroll
  for (int c = 0; c < {cached}; ++c) {{
    const int j = threadIdx.x + c * blockDim.x;
    if (j < d) {{
      const float xh = (kx[c] - mean) * r;
      dx[j] = r * (kg[c] - ma - xh * mb);
      if (weight_rows) gx[j] = umx_ld(gr, j) * xh;
    }}
  }}
  for (int j = rest + threadIdx.x; j < d; j += blockDim.x) {{
    const float xh = (umx_ld(xr, j) - mean) * r;
    const float gj = umx_ld(gr, j);
    dx[j] = r * (gj * (has_weight ? umx_ld(w, j) : 1.0f) - ma - xh * mb);
    if (weight_rows) gx[j] = gj * xh;
  }}
}}
"""


MASKED_SCORE = """
// an attention score after its mask: kind 1 causal (``after``: the key follows the query's last), 2 boolean,
// 3 additive (``at``: the mask's element for this score); a masked score is float32's lowest
// (the element's bits as loaded, used by umx_apply_mask only: a kernel may load it long before the score is
// known, and nothing waits for the load until then)
__device__ __forceinline__ unsigned int umx_mask_at(int kind, const void* mask, long long at) {
  if (kind == 2) return ((const unsigned char*)mask)[at];
  if (kind == 3) return __float_as_uint(((const float*)mask)[at]);
  return 0u;
}
__device__ __forceinline__ float umx_apply_mask(float s, int kind, unsigned int bits, bool after) {
  if (kind == 1) return after ? -3.402823466e38f : s;
  if (kind == 2) return bits != 0u ? s : -3.402823466e38f;
  if (kind == 3) return s + __uint_as_float(bits);
  return s;
}
__device__ __forceinline__ float umx_masked_score(float s, int kind, const void* mask, long long at, bool after) {
  return umx_apply_mask(s, kind, umx_mask_at(kind, mask, at), after);
}
"""


#: the most keys one block of the attention kernel for few queries scores at once (its shared array of scores)
SDPA_CHUNK = 2048
#: the keys a warp of that kernel scores at once
SDPA_KEYS = 4
#: the grouped kernel (``{name}_group`` of :func:`sdpa_source`): the most query rows of one key head a block
#: takes (query heads times positions), the most features of a query or value row, the bytes of its shared tile
#: of keys (and of values) as float32, and the most keys of a chunk
SDPA_GROUP_ROWS = 8
SDPA_GROUP_HEAD = 128
SDPA_GROUP_TILE = 16384
SDPA_GROUP_CHUNK = 128
#: the chunks whose weights the attention's merge keeps in shared memory (more are weighed again per feature)
SDPA_COMBINE_KEPT = 1024
#: the most chunks of a group that the grouped kernel's last block merges (more: the second kernel, a block a row)
SDPA_MERGE_SPLITS = 64


def sdpa_source(name: str, x: str = "float") -> str:
    """The CUDA C++ of ``mx.fast.scaled_dot_product_attention`` for few queries, on ``q (B, Hq, Tq, D)``, ``k (B,
    Hkv, Tk, D)``, ``v (B, Hkv, Tk, Dv)`` (row-major) of storage type ``x`` (see ``FAST_TYPES``; the output's
    too), for ``D, Dv <= SDPA_MAX_HEAD``, in float32: two kernels, ``{name}`` and ``{name}_combine``.

    The keys of each query row are split in ``n_split`` chunks of ``chunk`` (at most ``SDPA_CHUNK``), one block
    each (grid: rows by chunks), so that a decode step's few rows still fill the GPU. Each warp of a block takes
    every ``warps``-th key of the chunk, ``SDPA_KEYS`` at a time, its lanes over the features (a key's row read in
    one coalesced sweep, the dot product summed by shuffles): it scores the keys (the scaled query in shared
    memory) and masks them (``mask_kind`` 0 none, 1 causal: lower right aligned, 2 boolean, 3 additive; the mask
    read through its strides ``ms``, 0 where it broadcasts; a masked score is float32's lowest, so a row masked
    whole averages the values, as the host does). The block takes the softmax's largest score ``m`` and sum ``l``;
    then each warp weighs the values of its keys the same way (lanes over features), and the warps' sums meet in
    shared memory. With one chunk the block writes the row's output; else ``(m, l, values)`` to ``part``, which
    ``{name}_combine`` merges (one block a row). ``sinks``: one logit per query head that joins the softmax and
    takes no value (null: none).

    ``{name}_group`` computes the same for the query rows of one key head together (a decode step's query heads
    of a key head; at most ``SDPA_GROUP_ROWS`` rows and ``SDPA_GROUP_HEAD`` features; grid: batch entries times
    key heads, by chunks; ``D`` and ``Dv`` multiples of 8): its block copies the chunk's keys and values into
    shared memory in one sweep of 16-byte loads (each read once for all the rows, every load in flight
    together), then eight threads a key score it for every row (the tile read 16 bytes at a time, the mask's
    elements loaded meanwhile), one warp a row takes the softmax, and the threads over features (and slices of
    the keys) weigh the values; its ``part`` is laid out as ``{name}``'s, for ``{name}_combine``, unless
    ``counters`` is given (zeros, one per group, the launching stream's): then the last block of a group to
    finish merges the group's chunks as ``{name}_combine`` would, and resets its counter."""
    per_lane = SDPA_MAX_HEAD // 32
    rows_max, head_max = SDPA_GROUP_ROWS, SDPA_GROUP_HEAD
    return BLOCK_REDUCE + FAST_IO + MASKED_SCORE + f"""
__device__ __forceinline__ float umx_sdpa_out(float o, float m, float l, const float* sinks, int hq) {{
  if (sinks == nullptr) return o / l;
  const float sink = sinks[hq], top = fmaxf(m, sink);
  const float keep = m == __int_as_float(0xff800000u) ? 0.0f : expf(m - top);
  return o * keep / (l * keep + expf(sink - top));
}}

extern "C" __global__ void {name}(const {x}* __restrict__ q, const {x}* __restrict__ k,
                                  const {x}* __restrict__ v, const void* __restrict__ mask,
                                  const float* __restrict__ sinks, {x}* __restrict__ out, float* __restrict__ part,
                                  int n_q, int n_kv, int t_q, int t_k, int d, int d_v, float scale, int mask_kind,
                                  long long ms0, long long ms1, long long ms2, long long ms3,
                                  int chunk, int n_split) {{
  __shared__ float qs[{SDPA_MAX_HEAD}];
  __shared__ float sc[{SDPA_CHUNK}];
  __shared__ float partial[32];
  __shared__ float accs[{BLOCK // 32}][{SDPA_MAX_HEAD}];
  const int row = blockIdx.x;  // (batch entry, query head, query position), row-major like q
  const int split = blockIdx.y;
  const int t = row % t_q;
  const int hq = (row / t_q) % n_q;
  const int bi = row / (t_q * n_q);
  const int hk = hq / (n_q / n_kv);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  const {x}* qr = q + (long long)row * d;
  const {x}* kh = k + ((long long)bi * n_kv + hk) * (long long)t_k * d;
  const {x}* vh = v + ((long long)bi * n_kv + hk) * (long long)t_k * d_v;
  const int j0 = split * chunk, j1 = min(t_k, j0 + chunk);
  const int last = t + (t_k - t_q);  // (causal: the last key this query sees)
  const long long mrow = (long long)bi * ms0 + (long long)hq * ms1 + (long long)t * ms2;
  const float neg_inf = __int_as_float(0xff800000u);
  for (int f = threadIdx.x; f < d; f += blockDim.x) qs[f] = umx_ld(qr, f) * scale;
  __syncthreads();
  float m = neg_inf;
  for (int j = j0 + warp; j < j1; j += warps * {SDPA_KEYS}) {{
    float s[{SDPA_KEYS}];
    #pragma unroll
    for (int u = 0; u < {SDPA_KEYS}; ++u) {{  // (independent keys: their loads are in flight together)
      const int jj = j + u * warps;
      s[u] = 0.0f;
      if (jj < j1) {{
        const {x}* kr = kh + (long long)jj * d;
        #pragma unroll
        for (int i = 0; i < {per_lane}; ++i) {{
          const int f = lane + 32 * i;
          if (f < d) s[u] += qs[f] * umx_ld(kr, f);
        }}
      }}
    }}
    #pragma unroll
    for (int u = 0; u < {SDPA_KEYS}; ++u) {{
      const int jj = j + u * warps;
      float su = s[u];
      #pragma unroll
      for (int o = 16; o > 0; o >>= 1) su += __shfl_xor_sync(0xffffffffu, su, o);
      if (jj < j1) {{
        su = umx_masked_score(su, mask_kind, mask, mrow + (long long)jj * ms3, jj > last);
        if (lane == 0) sc[jj - j0] = su;
        m = fmaxf(m, su);
      }}
    }}
  }}
  m = umx_block_reduce(m, partial, true);
  float l = 0.0f;
  if (m != neg_inf) {{  // (all scores an additive -inf: nothing to weigh)
    for (int j = j0 + threadIdx.x; j < j1; j += blockDim.x) {{
      const float p = expf(sc[j - j0] - m);
      sc[j - j0] = p;
      l += p;
    }}
  }}
  l = umx_block_reduce(l, partial, false);
  float a[{per_lane}];
  #pragma unroll
  for (int i = 0; i < {per_lane}; ++i) a[i] = 0.0f;
  if (m != neg_inf) {{
    #pragma unroll {SDPA_KEYS}
    for (int j = j0 + warp; j < j1; j += warps) {{
      const float p = sc[j - j0];
      const {x}* vr = vh + (long long)j * d_v;
      #pragma unroll
      for (int i = 0; i < {per_lane}; ++i) {{
        const int f = lane + 32 * i;
        if (f < d_v) a[i] += p * umx_ld(vr, f);
      }}
    }}
  }}
  #pragma unroll
  for (int i = 0; i < {per_lane}; ++i) {{
    const int f = lane + 32 * i;
    if (f < d_v) accs[warp][f] = a[i];
  }}
  __syncthreads();
  for (int f = threadIdx.x; f < d_v; f += blockDim.x) {{
    float o = 0.0f;
    for (int w = 0; w < warps; ++w) o += accs[w][f];
    if (n_split == 1) {{
      umx_st(out, (long long)row * d_v + f, umx_sdpa_out(o, m, l, sinks, hq));
    }} else {{
      part[((long long)row * n_split + split) * (d_v + 2) + 2 + f] = o;
    }}
  }}
  if (n_split > 1 && threadIdx.x == 0) {{
    part[((long long)row * n_split + split) * (d_v + 2)] = m;
    part[((long long)row * n_split + split) * (d_v + 2) + 1] = l;
  }}
}}

// The mask's elements of key j0 + first + threadIdx.x / 8 for each of the block's rows (in eighth threads;
// zeros where unread): query heads from hq0, t_q positions each.
template <int ROWS>
__device__ __forceinline__ void umx_sdpa_mask_of(unsigned int (&mv)[ROWS], int first, int n, int j0, int rows,
                                                 int kind, const void* mask, int bi, int hq0, int t_q,
                                                 long long ms0, long long ms1, long long ms2, long long ms3) {{
  const int j = first + (threadIdx.x >> 3);
  #pragma unroll
  for (int g = 0; g < ROWS; ++g) {{
    mv[g] = 0u;
    if (j < n && (threadIdx.x & 7) == 0 && g < rows && (kind == 2 || kind == 3)) {{
      const long long at = (long long)bi * ms0 + (long long)(hq0 + g / t_q) * ms1 + (long long)(g % t_q) * ms2
                           + (long long)(j0 + j) * ms3;
      mv[g] = umx_mask_at(kind, mask, at);
    }}
  }}
}}

// Copy n_a elements from a to sa and n_b from b to sb (shared memory), 16 bytes a load where both sources are
// aligned to 16 bytes and whole, with four loads of each thread in flight before its stores.
template <typename T>
__device__ __forceinline__ void umx_tiles_load(T* sa, const T* a, int n_a, T* sb, const T* b, int n_b) {{
  const int wa = n_a * (int)sizeof(T), wb = n_b * (int)sizeof(T);
  if (((((unsigned long long)a) | ((unsigned long long)b)) & 15) == 0 && ((wa | wb) & 15) == 0) {{
    const int na = wa / 16, n = na + wb / 16;
    for (int base = threadIdx.x; base < n; base += 4 * blockDim.x) {{
      int4 r[4];
      #pragma unroll
      for (int u = 0; u < 4; ++u) {{
        const int i = base + u * blockDim.x;
        if (i < n) r[u] = i < na ? ((const int4*)a)[i] : ((const int4*)b)[i - na];
      }}
      #pragma unroll
      for (int u = 0; u < 4; ++u) {{
        const int i = base + u * blockDim.x;
        if (i < n) {{
          if (i < na) ((int4*)sa)[i] = r[u];
          else ((int4*)sb)[i - na] = r[u];
        }}
      }}
    }}
  }} else {{
    for (int i = threadIdx.x; i < n_a; i += blockDim.x) sa[i] = a[i];
    for (int i = threadIdx.x; i < n_b; i += blockDim.x) sb[i] = b[i];
  }}
}}

extern "C" __global__ void {name}_group(const {x}* __restrict__ q, const {x}* __restrict__ k,
                                        const {x}* __restrict__ v, const void* __restrict__ mask,
                                        const float* __restrict__ sinks, {x}* __restrict__ out,
                                        float* __restrict__ part,
                                        int n_q, int n_kv, int t_q, int t_k, int d, int d_v, float scale,
                                        int mask_kind, long long ms0, long long ms1, long long ms2, long long ms3,
                                        int chunk, int n_split, unsigned int* __restrict__ counters) {{
  __shared__ __align__(16) unsigned char tiles[2][{SDPA_GROUP_TILE}];
  __shared__ float qs[{rows_max}][{head_max}];
  __shared__ float sc[{rows_max}][{SDPA_GROUP_CHUNK}];
  __shared__ float stats[2][{rows_max}];
  const int group = blockIdx.x;  // (batch entry, key head): its query rows are q's rows group * rows ..
  const int split = blockIdx.y;
  const int bi = group / n_kv, hk = group % n_kv;
  const int rep = n_q / n_kv, rows = rep * t_q;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  const int j0 = split * chunk, n = min(t_k, j0 + chunk) - j0;
  const long long row0 = (long long)group * rows;
  const float neg_inf = __int_as_float(0xff800000u);
  {x}* ks = ({x}*)tiles[0];
  {x}* vs = ({x}*)tiles[1];
  // Eight threads a key, each taking every eighth piece of 8 features (as float32 or bfloat16 alike, so that
  // bfloat16 sums in float32's order), their sums met by shuffles; every row's score of the key at once.
  const int pieces = d / 8, sub = threadIdx.x & 7, per_pass = blockDim.x >> 3;
  // Every load of the first phase is issued before any is waited for: the queries' and the mask's as they are
  // stored (no conversion that would wait), then the tiles'. (Launched with BLOCK threads.)
  const {x}* qg = q + row0 * d;
  {x} qraw[{rows_max * head_max} / {BLOCK}];
  #pragma unroll
  for (int c = 0; c < {rows_max * head_max} / {BLOCK}; ++c) {{
    const int i = threadIdx.x + c * {BLOCK};
    if (i < rows * d) qraw[c] = qg[i];
  }}
  unsigned int mv[{rows_max}];  // (the mask's elements of the thread's key, for the first pass)
  umx_sdpa_mask_of(mv, 0, n, j0, rows, mask_kind, mask, bi, hk * rep, t_q, ms0, ms1, ms2, ms3);
  umx_tiles_load(ks, k + ((long long)group * t_k + j0) * d, n * d, vs, v + ((long long)group * t_k + j0) * d_v,
                 n * d_v);
  #pragma unroll
  for (int c = 0; c < {rows_max * head_max} / {BLOCK}; ++c) {{
    const int i = threadIdx.x + c * {BLOCK};
    if (i < rows * d) qs[i / d][i % d] = umx_ld(qraw, c) * scale;
  }}
  __syncthreads();
  for (int first = 0; first < n; first += per_pass) {{  // (whole warps pass together: their shuffles)
    const int j = first + (threadIdx.x >> 3), jj = j0 + j;
    const bool live = j < n;
    if (first > 0) umx_sdpa_mask_of(mv, first, n, j0, rows, mask_kind, mask, bi, hk * rep, t_q, ms0, ms1, ms2, ms3);
    float s[{rows_max}];
    #pragma unroll
    for (int g = 0; g < {rows_max}; ++g) s[g] = 0.0f;
    if (live) {{
      for (int c = sub; c < pieces; c += 8) {{
        float kv[8];
        umx_ld8(ks + j * d + c * 8, kv);
        #pragma unroll
        for (int g = 0; g < {rows_max}; ++g) {{
          if (g < rows) {{
            #pragma unroll
            for (int e = 0; e < 8; ++e) s[g] += qs[g][c * 8 + e] * kv[e];
          }}
        }}
      }}
    }}
    #pragma unroll
    for (int g = 0; g < {rows_max}; ++g) {{
      if (g < rows) {{
        #pragma unroll
        for (int o = 4; o > 0; o >>= 1) s[g] += __shfl_xor_sync(0xffffffffu, s[g], o);
        if (live && sub == 0) sc[g][j] = umx_apply_mask(s[g], mask_kind, mv[g], jj > g % t_q + (t_k - t_q));
      }}
    }}
  }}
  __syncthreads();
  for (int g = warp; g < rows; g += warps) {{  // (one warp a row: the softmax's largest score and sum)
    float m = neg_inf;
    for (int j = lane; j < n; j += 32) m = fmaxf(m, sc[g][j]);
    #pragma unroll
    for (int o = 16; o > 0; o >>= 1) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, o));
    float l = 0.0f;
    for (int j = lane; j < n; j += 32) {{
      const float p = m == neg_inf ? 0.0f : expf(sc[g][j] - m);  // (all scores an additive -inf: no weight)
      sc[g][j] = p;
      l += p;
    }}
    #pragma unroll
    for (int o = 16; o > 0; o >>= 1) l += __shfl_xor_sync(0xffffffffu, l, o);
    if (lane == 0) {{
      stats[0][g] = m;
      stats[1][g] = l;
    }}
  }}
  __syncthreads();
  // the weighted values: thread (slice, f) sums every slices-th key's feature f for every row
  const int slices = blockDim.x / d_v, slice = threadIdx.x / d_v, f = threadIdx.x % d_v;
  float* sums = (float*)tiles[0];  // (the keys are read: slices by rows by d_v partial sums)
  if (slice < slices) {{
    float a[{rows_max}];
    #pragma unroll
    for (int g = 0; g < {rows_max}; ++g) a[g] = 0.0f;
    #pragma unroll 4
    for (int j = slice; j < n; j += slices) {{
      const float vv = umx_ld(vs, j * d_v + f);
      #pragma unroll
      for (int g = 0; g < {rows_max}; ++g)
        if (g < rows) a[g] += sc[g][j] * vv;
    }}
    #pragma unroll
    for (int g = 0; g < {rows_max}; ++g)
      if (g < rows) sums[(slice * rows + g) * d_v + f] = a[g];
  }}
  __syncthreads();
  for (int i = threadIdx.x; i < rows * d_v; i += blockDim.x) {{
    const int g = i / d_v, e = i % d_v;
    float o = 0.0f;
    for (int c = 0; c < slices; ++c) o += sums[(c * rows + g) * d_v + e];
    if (n_split == 1) {{
      umx_st(out, (row0 + g) * d_v + e, umx_sdpa_out(o, stats[0][g], stats[1][g], sinks, hk * rep + g / t_q));
    }} else {{
      part[((row0 + g) * n_split + split) * (d_v + 2) + 2 + e] = o;
    }}
  }}
  if (n_split > 1 && threadIdx.x < rows) {{
    part[((row0 + threadIdx.x) * n_split + split) * (d_v + 2)] = stats[0][threadIdx.x];
    part[((row0 + threadIdx.x) * n_split + split) * (d_v + 2) + 1] = stats[1][threadIdx.x];
  }}
  if (n_split == 1 || counters == nullptr) return;  // (else {name}_combine merges the chunks)
  // The group's last block to finish merges its rows' chunks, as {name}_combine would: each block's parts are
  // made visible (the fence) before it counts itself, and the last resets the count for the next launch on this
  // stream (the counters are the stream's: its launches run one after another).
  __shared__ bool last;
  __threadfence();
  __syncthreads();
  if (threadIdx.x == 0) {{
    last = atomicAdd(counters + group, 1u) == (unsigned int)(n_split - 1);
    if (last) counters[group] = 0u;
  }}
  __syncthreads();
  if (!last) return;
  __threadfence();
  // One warp a row takes its chunks' largest scores and sums at once (lanes over chunks), their weights into
  // shared memory; then threads over (row, feature) sum the weighted parts, several loads in flight. (The other
  // blocks' parts are read past L1: __ldcg.)
  __shared__ float weight[{rows_max}][{SDPA_MERGE_SPLITS}];
  const int stride = d_v + 2;
  for (int g = warp; g < rows; g += warps) {{
    const float* pr = part + (row0 + g) * n_split * stride;
    float mc[{SDPA_MERGE_SPLITS // 32}], lc[{SDPA_MERGE_SPLITS // 32}];
    #pragma unroll
    for (int u = 0; u < {SDPA_MERGE_SPLITS // 32}; ++u) {{
      const int c = lane + 32 * u;
      mc[u] = c < n_split ? __ldcg(pr + c * stride) : neg_inf;
      lc[u] = c < n_split ? __ldcg(pr + c * stride + 1) : 0.0f;
    }}
    float m = neg_inf;
    #pragma unroll
    for (int u = 0; u < {SDPA_MERGE_SPLITS // 32}; ++u) m = fmaxf(m, mc[u]);
    #pragma unroll
    for (int o = 16; o > 0; o >>= 1) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, o));
    float l = 0.0f;
    #pragma unroll
    for (int u = 0; u < {SDPA_MERGE_SPLITS // 32}; ++u) {{
      const float w = mc[u] == neg_inf ? 0.0f : expf(mc[u] - m);
      weight[g][lane + 32 * u] = w;
      l += lc[u] * w;
    }}
    #pragma unroll
    for (int o = 16; o > 0; o >>= 1) l += __shfl_xor_sync(0xffffffffu, l, o);
    if (lane == 0) {{
      stats[0][g] = m;
      stats[1][g] = l;
    }}
  }}
  __syncthreads();
  for (int i = threadIdx.x; i < rows * d_v; i += blockDim.x) {{
    const int g = i / d_v, e = i % d_v;
    const float* pr = part + (row0 + g) * n_split * stride + 2 + e;
    float o = 0.0f;
    #pragma unroll 8
    for (int c = 0; c < n_split; ++c) o += __ldcg(pr + c * stride) * weight[g][c];
    umx_st(out, (row0 + g) * d_v + e, umx_sdpa_out(o, stats[0][g], stats[1][g], sinks, hk * rep + g / t_q));
  }}
}}

extern "C" __global__ void {name}_combine(const float* __restrict__ part, const float* __restrict__ sinks,
                                          {x}* __restrict__ out, int n_q, int t_q, int d_v, int n_split) {{
  // one block a row: the chunks' weights exp(m_s - m) once (threads over chunks), then threads over slices of
  // the chunks and features sum the weighted values, and the slices meet in shared memory
  __shared__ float partial[32];
  __shared__ float weights[{SDPA_COMBINE_KEPT}];
  __shared__ float sums[{BLOCK}];
  const int row = blockIdx.x;
  const int hq = (row / t_q) % n_q;
  const int stride = d_v + 2;
  const float neg_inf = __int_as_float(0xff800000u);
  const float* pr = part + (long long)row * n_split * stride;
  float m = neg_inf;
  for (int c = threadIdx.x; c < n_split; c += blockDim.x) m = fmaxf(m, pr[c * stride]);
  m = umx_block_reduce(m, partial, true);
  float l = 0.0f;
  for (int c = threadIdx.x; c < n_split; c += blockDim.x) {{
    const float mc = pr[c * stride];
    const float w = mc == neg_inf ? 0.0f : expf(mc - m);
    if (c < {SDPA_COMBINE_KEPT}) weights[c] = w;
    l += pr[c * stride + 1] * w;
  }}
  l = umx_block_reduce(l, partial, false);  // (its barriers make the weights visible)
  const int slices = blockDim.x / d_v, slice = threadIdx.x / d_v, f = threadIdx.x % d_v;  // (d_v <= the block)
  if (slice < slices) {{
    float o = 0.0f;
    for (int c = slice; c < n_split; c += slices) {{
      const float mc = c < {SDPA_COMBINE_KEPT} ? 0.0f : pr[c * stride];
      const float w = c < {SDPA_COMBINE_KEPT} ? weights[c] : mc == neg_inf ? 0.0f : expf(mc - m);
      o += pr[c * stride + 2 + f] * w;
    }}
    sums[threadIdx.x] = o;
  }}
  __syncthreads();
  if (threadIdx.x < d_v) {{
    float o = 0.0f;
    for (int c = 0; c < slices; ++c) o += sums[c * d_v + threadIdx.x];
    umx_st(out, (long long)row * d_v + threadIdx.x, umx_sdpa_out(o, m, l, sinks, hq));
  }}
}}
"""


#: the first lines of a kernel whose rows take ``lanes`` threads each (a warp, several rows a block, or a whole
#: block): its shared partials, which row and lane a thread is, and the early exit of threads past the last row
ROW_OF_LANES = """  __shared__ float partial[32];
  const bool warp_rows = lanes == 32;
  const long long row = (long long)blockIdx.x * (blockDim.x / lanes) + threadIdx.x / lanes;
  const int lane = threadIdx.x % lanes;
  if (row >= rows) return;  // (only where a warp takes a row: a whole warp leaves, no block reduction waits)
"""


def sdpa_softmax_source(name: str, p: str = "float") -> str:
    """The CUDA C++ of attention's softmax over float32 scores that a product computed: ``lanes`` threads per row
    of ``t_k`` scores, as in :func:`softmax_source` (a warp a row, several rows a block, or a block a row; each
    thread keeps ``SOFTMAX_CACHED`` scores in registers), rows ordered as the queries ``(B, Hq, Tq)``, those of
    one call being query positions ``t_start ..`` of ``t_total``: each score times ``scale``, masked as in
    :func:`sdpa_source`, then the row's softmax (with the query head's sink logit, where ``sinks`` is given,
    joining the sum), written to ``probs`` of storage type ``p`` (see ``FAST_TYPES``; float32: ``probs`` may be
    ``scores``, in place)."""
    return BLOCK_REDUCE + FAST_IO + MASKED_SCORE + ROW_REDUCE + f"""
extern "C" __global__ void {name}(float* scores, {p}* probs, const void* __restrict__ mask,
                                  const float* __restrict__ sinks, long long rows, int n_q, int t_q, int t_start,
                                  int t_total, int t_k, float scale, int mask_kind, int lanes,
                                  long long ms0, long long ms1, long long ms2, long long ms3) {{
{ROW_OF_LANES}  const int t = (int)(row % t_q) + t_start;
  const int hq = (int)((row / t_q) % n_q);
  const int bi = (int)(row / ((long long)t_q * n_q));
  float* s = scores + row * t_k;
  const int last = t + (t_k - t_total);
  const long long mrow = (long long)bi * ms0 + (long long)hq * ms1 + (long long)t * ms2;
  const float lowest = __int_as_float(0xff800000u);
  float kept[{SOFTMAX_CACHED}];
  float top = lowest;
  #pragma unroll
  for (int c = 0; c < {SOFTMAX_CACHED}; ++c) {{
    const int j = lane + c * lanes;
    kept[c] = j < t_k ? umx_masked_score(s[j] * scale, mask_kind, mask, mrow + (long long)j * ms3, j > last)
                      : lowest;
    top = fmaxf(top, kept[c]);
  }}
  for (int j = lane + {SOFTMAX_CACHED} * lanes; j < t_k; j += lanes) {{
    const float v = umx_masked_score(s[j] * scale, mask_kind, mask, mrow + (long long)j * ms3, j > last);
    s[j] = v;  // (the masked score, read again below)
    top = fmaxf(top, v);
  }}
  top = umx_row_reduce(top, partial, true, warp_rows);
  const float sink = sinks != nullptr ? sinks[hq] : lowest;
  top = fmaxf(top, sink);
  float total = 0.0f;
  #pragma unroll
  for (int c = 0; c < {SOFTMAX_CACHED}; ++c) {{
    if (lane + c * lanes < t_k) {{
      kept[c] = expf(kept[c] - top);
      total += kept[c];
    }}
  }}
  for (int j = lane + {SOFTMAX_CACHED} * lanes; j < t_k; j += lanes) {{
    const float e = expf(s[j] - top);
    s[j] = e;
    total += e;
  }}
  total = umx_row_reduce(total, partial, false, warp_rows);
  if (sinks != nullptr) total += expf(sink - top);
  {p}* o = probs + row * t_k;
  #pragma unroll
  for (int c = 0; c < {SOFTMAX_CACHED}; ++c) {{
    const int j = lane + c * lanes;
    if (j < t_k) umx_st(o, j, kept[c] / total);
  }}
  for (int j = lane + {SOFTMAX_CACHED} * lanes; j < t_k; j += lanes) umx_st(o, j, s[j] / total);
}}
"""


def softmax_source(name: str, x: str = "float") -> str:
    """The CUDA C++ of softmax (or, with ``log_sum_exp``, logsumexp) over the last axis of ``rows`` contiguous
    rows of ``n`` elements of storage type ``x`` (see ``FAST_TYPES``; the output's too), in float32 whatever
    the type, the result rounded once. ``lanes`` threads take a row: 32 (a warp; several rows a block, reduced by
    shuffles) or a block's worth (one row a block). Each thread keeps its first ``SOFTMAX_CACHED`` elements in
    registers, so a row of up to ``lanes * SOFTMAX_CACHED`` elements is read once and written once. As the
    shared kernel computes them: ``e = exp(x - max)``, softmax ``e / sum(e)``; logsumexp
    ``log(sum(e)) + max`` with a maximum that is not finite taken as 0 (NaN, like ``+inf``, spreads through the
    sum)."""
    return BLOCK_REDUCE + FAST_IO + ROW_REDUCE + f"""
extern "C" __global__ void {name}(const {x}* __restrict__ x, {x}* __restrict__ out, long long rows, int n,
                                  int lanes, int log_sum_exp) {{
{ROW_OF_LANES}  const {x}* xr = x + row * n;
  const float lowest = __int_as_float(0xff800000u);
  float kept[{SOFTMAX_CACHED}];
  float top = lowest;
  #pragma unroll
  for (int c = 0; c < {SOFTMAX_CACHED}; ++c) {{
    const int j = lane + c * lanes;
    kept[c] = j < n ? umx_ld(xr, j) : lowest;
    top = fmaxf(top, kept[c]);
  }}
  for (int j = lane + {SOFTMAX_CACHED} * lanes; j < n; j += lanes) top = fmaxf(top, umx_ld(xr, j));
  top = umx_row_reduce(top, partial, true, warp_rows);
  if (log_sum_exp && !isfinite(top)) top = 0.0f;
  float total = 0.0f;
  #pragma unroll
  for (int c = 0; c < {SOFTMAX_CACHED}; ++c) {{
    if (lane + c * lanes < n) {{
      kept[c] = expf(kept[c] - top);
      total += kept[c];
    }}
  }}
  for (int j = lane + {SOFTMAX_CACHED} * lanes; j < n; j += lanes) total += expf(umx_ld(xr, j) - top);
  total = umx_row_reduce(total, partial, false, warp_rows);
  if (log_sum_exp) {{
    if (lane == 0) umx_st(out, row, logf(total) + top);
    return;
  }}
  {x}* o = out + row * n;
  #pragma unroll
  for (int c = 0; c < {SOFTMAX_CACHED}; ++c) {{
    const int j = lane + c * lanes;
    if (j < n) umx_st(o, j, kept[c] / total);
  }}
  for (int j = lane + {SOFTMAX_CACHED} * lanes; j < n; j += lanes) umx_st(o, j, expf(umx_ld(xr, j) - top) / total);
}}
"""


def softmax_vjp_source(name: str, x: str = "float") -> str:
    """The CUDA C++ of softmax's gradient (``SoftmaxVJP``) over the last axis: ``y * (c - sum(c * y))`` for
    ``rows`` contiguous rows of ``n`` elements of the output ``y`` and its cotangent ``c``, of storage type ``x``
    (the result's too), in float32, rounded once. ``lanes`` threads take a row as softmax's kernels do; each keeps
    its first ``SOFTMAX_CACHED`` elements of both in registers, so a row is read once and written once."""
    return BLOCK_REDUCE + FAST_IO + ROW_REDUCE + f"""
extern "C" __global__ void {name}(const {x}* __restrict__ y, const {x}* __restrict__ c, {x}* __restrict__ out,
                                  long long rows, int n, int lanes) {{
{ROW_OF_LANES}  const {x}* yr = y + row * n;
  const {x}* cr = c + row * n;
  float ky[{SOFTMAX_CACHED}], kc[{SOFTMAX_CACHED}];
  float dot = 0.0f;
  #pragma unroll
  for (int k = 0; k < {SOFTMAX_CACHED}; ++k) {{
    const int j = lane + k * lanes;
    ky[k] = j < n ? umx_ld(yr, j) : 0.0f;
    kc[k] = j < n ? umx_ld(cr, j) : 0.0f;
    dot += ky[k] * kc[k];
  }}
  for (int j = lane + {SOFTMAX_CACHED} * lanes; j < n; j += lanes) dot += umx_ld(yr, j) * umx_ld(cr, j);
  dot = umx_row_reduce(dot, partial, false, warp_rows);
  {x}* o = out + row * n;
  #pragma unroll
  for (int k = 0; k < {SOFTMAX_CACHED}; ++k) {{
    const int j = lane + k * lanes;
    if (j < n) umx_st(o, j, ky[k] * (kc[k] - dot));
  }}
  for (int j = lane + {SOFTMAX_CACHED} * lanes; j < n; j += lanes)
    umx_st(o, j, umx_ld(yr, j) * (umx_ld(cr, j) - dot));
}}
"""


def arg_reduce_source(name: str, x: str = "float") -> str:
    """The CUDA C++ of argmax (``is_min`` 0) or argmin (1) over the last axis of ``rows`` contiguous rows of ``n``
    elements of storage type ``x`` (see ``FAST_TYPES``), as NumPy picks: the first NaN, else the first of the
    extreme values; uint32 indices. ``lanes`` threads take a row as softmax's kernels do (a warp, several rows a
    block, or a block a row); each thread walks its elements in order, then the row's threads compare in a fixed
    tree, the lower index winning a tie."""
    return FAST_IO + f"""
__device__ __forceinline__ bool umx_arg_better(float v, int i, float w, int j, bool is_min) {{
  // whether (v, i) wins over (w, j): a NaN over a number, then the extreme value, then the lower index
  const bool vn = isnan(v), wn = isnan(w);
  if (vn || wn) return vn && (!wn || i < j);
  if (v != w) return is_min ? v < w : v > w;
  return i < j;
}}

extern "C" __global__ void {name}(const {x}* __restrict__ x, unsigned int* __restrict__ out, long long rows, int n,
                                  int lanes, int is_min) {{
  __shared__ float best_v[32];
  __shared__ int best_i[32];
  const long long row = (long long)blockIdx.x * (blockDim.x / lanes) + threadIdx.x / lanes;
  const int lane = threadIdx.x % lanes;
  if (row >= rows) return;  // (only where a warp takes a row: a whole warp leaves, no block reduction waits)
  const {x}* xr = x + row * n;
  float v = umx_ld(xr, lane < n ? lane : 0);
  int i = lane < n ? lane : n;
  for (long long j0 = lane + lanes; j0 < n; j0 += 8LL * lanes) {{  // (eight loads in flight, then compared in order)
    float w[8];
    #pragma unroll
    for (int u = 0; u < 8; ++u) {{
      const long long j = j0 + (long long)u * lanes;
      w[u] = j < n ? umx_ld(xr, j) : 0.0f;
    }}
    #pragma unroll
    for (int u = 0; u < 8; ++u) {{
      const long long j = j0 + (long long)u * lanes;
      if (j < n && umx_arg_better(w[u], (int)j, v, i, is_min)) {{ v = w[u]; i = (int)j; }}
    }}
  }}
  #pragma unroll
  for (int o = 16; o > 0; o >>= 1) {{
    const float w = __shfl_xor_sync(0xffffffffu, v, o);
    const int j = __shfl_xor_sync(0xffffffffu, i, o);
    if (umx_arg_better(w, j, v, i, is_min)) {{ v = w; i = j; }}
  }}
  if (lanes > 32) {{
    if ((threadIdx.x & 31) == 0) {{ best_v[threadIdx.x >> 5] = v; best_i[threadIdx.x >> 5] = i; }}
    __syncthreads();
    if (threadIdx.x >= 32) return;
    const int warps = blockDim.x >> 5;
    v = threadIdx.x < warps ? best_v[threadIdx.x] : best_v[0];
    i = threadIdx.x < warps ? best_i[threadIdx.x] : best_i[0];
    #pragma unroll
    for (int o = 16; o > 0; o >>= 1) {{
      const float w = __shfl_xor_sync(0xffffffffu, v, o);
      const int j = __shfl_xor_sync(0xffffffffu, i, o);
      if (umx_arg_better(w, j, v, i, is_min)) {{ v = w; i = j; }}
    }}
  }}
  if (lane == 0) out[row] = (unsigned int)i;
}}
"""


#: rows of x the quantized matrix-vector kernel takes (each warp keeps one sum per row and column in registers)
QMV_MAX_ROWS = 8
#: warps per block of the quantized matrix-vector kernel
QMV_WARPS = 4


def matvec_columns(n: int, wide: int) -> int:
    """Weight rows per warp of a matvec kernel over ``n`` weight rows: 4 from ``wide`` rows (more rows share each
    load of x), 2 from a quarter of that, else 1 (enough warps for a short weight)."""
    return 4 if n >= wide else 2 if n >= wide // 4 else 1


def _warp_columns(cols: int) -> str:
    """The start of a matvec kernel whose warps take ``cols`` weight rows each (``col0``, the first; ``lane``)."""
    return f"""  const int lane = threadIdx.x & 31;
  const int col0 = (blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5)) * {cols};
  if (col0 >= n) return;
"""


def _zero_sums(rows: int, cols: int) -> str:
    """A lane's sums, one per row of x and weight row: ``acc[rows][cols]``, zeroed."""
    return f"""  float acc[{rows}][{cols}];
  #pragma unroll
  for (int r = 0; r < {rows}; ++r) {{
    #pragma unroll
    for (int c = 0; c < {cols}; ++c) acc[r][c] = 0.0f;
  }}
"""


def _store_sums(rows: int, cols: int, store: str) -> str:
    """The warp's sums added across its lanes by shuffles; lane 0 writes ``store`` (of the sum ``a``) to ``out``
    ``(rows, n)`` for the weight rows that exist."""
    return f"""  #pragma unroll
  for (int r = 0; r < {rows}; ++r) {{
    #pragma unroll
    for (int c = 0; c < {cols}; ++c) {{
      float a = acc[r][c];
      #pragma unroll
      for (int o = 16; o > 0; o >>= 1) a += __shfl_xor_sync(0xffffffffu, a, o);
      if (lane == 0 && col0 + c < n) out[(long long)r * n + col0 + c] = {store};
    }}
  }}
"""


def qmv_source(name: str, bits: int, rows: int, cols: int, group: int, x_bf16: bool, s_bf16: bool,
               out_bf16: bool, vec: int) -> str:
    """The CUDA C++ of ``quantized_matmul(x, w, scales, biases, transpose=True)`` in the affine mode for a few rows
    of ``x`` (``rows``; ``(rows, K)``, float32, or bfloat16's storage where ``x_bf16``): ``w`` ``(N, K * bits /
    32)`` uint32 words, codes from the low bits up; ``scales`` and ``biases`` ``(N, K / group)`` (bfloat16's
    storage where ``s_bf16``); ``out`` ``(rows, N)`` (bfloat16's storage where ``out_bf16``, rounded once).

    The product's speed is the packed bytes read. One warp takes ``cols`` weight rows: its lanes read ``vec``
    neighbouring words of each (16-byte loads for ``vec`` 4, several in flight), and each piece of ``x`` they
    load serves all ``cols`` rows. Per group, as MLX's kernels: ``scale * sum(code * x) + bias * sum(x)``, in
    float32. A code becomes a float by placing its byte under the exponent of 2^23 (one byte permute and a
    subtraction: integer-to-float conversions are scarce on the GPU). ``bits``: 2, 4 or 8 (codes never straddle
    a word); ``group``: 32, 64 or 128."""
    per_word = 32 // bits
    mask8 = {2: "0x03030303u", 4: "0x0F0F0F0Fu", 8: "0xFFFFFFFFu"}[bits]
    xt = "unsigned short" if x_bf16 else "float"
    st = "unsigned short" if s_bf16 else "float"
    ot = "unsigned short" if out_bf16 else "float"
    load_s = "umx_bf16_load" if s_bf16 else ""
    if x_bf16:  # four bfloat16 values per 8-byte load
        load_x = "\n".join(
            f"        {{ const uint2 p = *reinterpret_cast<const uint2*>(xr + {4 * i});\n"
            f"          xv[{4 * i}] = umx_bf16_load((unsigned short)(p.x & 0xFFFFu)); "
            f"xv[{4 * i + 1}] = umx_bf16_load((unsigned short)(p.x >> 16));\n"
            f"          xv[{4 * i + 2}] = umx_bf16_load((unsigned short)(p.y & 0xFFFFu)); "
            f"xv[{4 * i + 3}] = umx_bf16_load((unsigned short)(p.y >> 16)); }}" for i in range(per_word // 4))
    else:
        load_x = "\n".join(
            f"        {{ const float4 p = *reinterpret_cast<const float4*>(xr + {4 * i});\n"
            f"          xv[{4 * i}] = p.x; xv[{4 * i + 1}] = p.y; xv[{4 * i + 2}] = p.z; xv[{4 * i + 3}] = p.w; }}"
            for i in range(per_word // 4))
    # each shift's masked word holds four codes, one a byte: code (t * 8 / bits + shift / bits) in byte t
    dot = "\n".join(
        f"          {{ const unsigned int part = (pk[c][j] >> {sh}) & {mask8};\n" + "\n".join(
            f"            q += (__uint_as_float(__byte_perm(part, 0x4B000000u, {0x7540 + t}u)) - 8388608.0f) "
            f"* xv[{t * (8 // bits) + sh // bits}];" for t in range(4)) + " }"
        for sh in range(0, 8, bits))
    if vec == 4:
        load_w = ("const uint4 v = *reinterpret_cast<const uint4*>(wc[c] + i);\n"
                  "        pk[c][0] = v.x; pk[c][1] = v.y; pk[c][2] = v.z; pk[c][3] = v.w;")
    else:
        load_w = "pk[c][0] = wc[c][i];"
    store = "umx_bf16_bits(a)" if out_bf16 else "a"
    return PREAMBLE + f"""
extern "C" __global__ void {name}(const {xt}* __restrict__ x, const unsigned int* __restrict__ w,
                                  const {st}* __restrict__ scales, const {st}* __restrict__ biases,
                                  {ot}* __restrict__ out, int n, int k) {{
{_warp_columns(cols)}  const int words = k / {per_word};
  const int groups = k / {group};
  const unsigned int* wc[{cols}];
  const {st}* sc[{cols}];
  const {st}* bc[{cols}];
  #pragma unroll
  for (int c = 0; c < {cols}; ++c) {{
    const long long row = col0 + c < n ? col0 + c : n - 1;  // (past the end: a row read again, not stored)
    wc[c] = w + row * words;
    sc[c] = scales + row * groups;
    bc[c] = biases + row * groups;
  }}
{_zero_sums(rows, cols)}  for (int i = lane * {vec}; i < words; i += 32 * {vec}) {{
    unsigned int pk[{cols}][{vec}];
    #pragma unroll
    for (int c = 0; c < {cols}; ++c) {{
        {load_w}
    }}
    #pragma unroll
    for (int j = 0; j < {vec}; ++j) {{
      const int k0 = (i + j) * {per_word};
      const int g = k0 / {group};
      float s[{cols}], b[{cols}];
      #pragma unroll
      for (int c = 0; c < {cols}; ++c) {{ s[c] = {load_s}(sc[c][g]); b[c] = {load_s}(bc[c][g]); }}
      #pragma unroll
      for (int r = 0; r < {rows}; ++r) {{
        const {xt}* xr = x + (long long)r * k + k0;
        float xv[{per_word}];
{load_x}
        float sx = 0.0f;
        #pragma unroll
        for (int e = 0; e < {per_word}; ++e) sx += xv[e];
        #pragma unroll
        for (int c = 0; c < {cols}; ++c) {{
          float q = 0.0f;
{dot}
          acc[r][c] += s[c] * q + b[c] * sx;
        }}
      }}
    }}
  }}
{_store_sums(rows, cols, store)}}}
"""


def bf16_matvec_source(name: str, rows: int, cols: int, warps: int, stream: bool = True) -> str:
    """The CUDA C++ of ``x @ w.T`` for a few rows of bfloat16 ``x`` (``rows``; ``(rows, K)``) and a bfloat16
    weight ``w`` ``(N, K)`` stored row by row (a linear layer's), all as bfloat16's storage; ``out`` ``(rows, N)``
    rounded once from float32 sums, as cuBLAS's product is. A decode step's product: its speed is the weight's
    bytes read. A block takes ``cols`` weight rows and its ``warps`` warps share their length: each warp every
    ``warps``-th 16-byte piece (so a long row, a down projection's, still gives every multiprocessor enough
    loads in flight), each lane ``cols`` loads at a time, each piece of ``x`` loaded serving all ``cols`` rows;
    the warps' sums meet in shared memory. ``K`` is a multiple of 8 and the rows start 16-byte aligned.
    ``stream``: the weight is read with the streaming cache hint (read once, it should not push ``x`` out)."""
    load = "__ldcs(wc[c] + i)" if stream else "wc[c][i]"
    return PREAMBLE + BF16_UNPACK8 + f"""
extern "C" __global__ void {name}(const unsigned short* __restrict__ x, const unsigned short* __restrict__ w,
                                  unsigned short* __restrict__ out, int n, int k) {{
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int col0 = blockIdx.x * {cols};
  const uint4* wc[{cols}];
  #pragma unroll
  for (int c = 0; c < {cols}; ++c) {{
    const long long row = col0 + c < n ? col0 + c : n - 1;  // (past the end: a row read again, not stored)
    wc[c] = reinterpret_cast<const uint4*>(w + row * k);
  }}
{_zero_sums(rows, cols)}  const int vecs = k >> 3;
  #pragma unroll 4
  for (int i = warp * 32 + lane; i < vecs; i += {warps * 32}) {{
    uint4 pk[{cols}];
    #pragma unroll
    for (int c = 0; c < {cols}; ++c) pk[c] = {load};
    #pragma unroll
    for (int r = 0; r < {rows}; ++r) {{
      float xv[8];
      umx_unpack8(reinterpret_cast<const uint4*>(x + (long long)r * k)[i], xv);
      #pragma unroll
      for (int c = 0; c < {cols}; ++c) {{
        float wv[8];
        umx_unpack8(pk[c], wv);
        float a = acc[r][c];
        #pragma unroll
        for (int e = 0; e < 8; ++e) a = fmaf(wv[e], xv[e], a);
        acc[r][c] = a;
      }}
    }}
  }}
  __shared__ float part[{warps}][{rows * cols}];
  #pragma unroll
  for (int r = 0; r < {rows}; ++r) {{
    #pragma unroll
    for (int c = 0; c < {cols}; ++c) {{
      float a = acc[r][c];
      #pragma unroll
      for (int off = 16; off; off >>= 1) a += __shfl_xor_sync(0xffffffffu, a, off);
      if (lane == 0) part[warp][r * {cols} + c] = a;
    }}
  }}
  __syncthreads();
  if (threadIdx.x < {rows * cols}) {{
    const int r = threadIdx.x / {cols}, c = threadIdx.x % {cols};
    if (col0 + c < n) {{
      float a = 0.0f;
      #pragma unroll
      for (int v = 0; v < {warps}; ++v) a += part[v][threadIdx.x];
      out[(long long)r * n + col0 + c] = umx_bf16_bits(a);
    }}
  }}
}}
"""


def dequantize_bf16_source(name: str, bits: int, group: int) -> str:
    """The CUDA C++ of an affine-quantized weight (``bits`` 2, 4 or 8, groups of ``group``, bfloat16 scales and
    biases, all as stored) written out as bfloat16's storage ``(rows, K)``: one thread a packed word, its codes
    (lowest bits first) scaled and rounded to bfloat16, then biased and rounded again, as the shared kernel
    rounds (``dequantize_rows``), and stored as one access. A prompt's quantized products are then cuBLAS's
    bfloat16 products of this weight."""
    per = 32 // bits
    return OWN_PREAMBLE + f"""
extern "C" __global__ void {name}(const unsigned int* __restrict__ w, const unsigned short* __restrict__ scales,
                                  const unsigned short* __restrict__ biases, unsigned short* __restrict__ out,
                                  long long words, int row_words, int row_groups) {{
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < words;
       i += (long long)gridDim.x * blockDim.x) {{
    const long long row = i / row_words;
    const int j = (int)(i - row * row_words);
    const long long g = row * row_groups + j * {per} / {group};  // (a word's codes lie in one group)
    const float s = umx_bf16_load(scales[g]), b = umx_bf16_load(biases[g]);
    const unsigned int word = w[i];
    umx_vec<unsigned short, {per}> v;
    #pragma unroll
    for (int t = 0; t < {per}; ++t) {{
      const float q = (float)((word >> (t * {bits})) & {(1 << bits) - 1}u);
      v.a[t] = umx_bf16_bits(umx_bf16_load(umx_bf16_bits(q * s)) + b);
    }}
    *reinterpret_cast<umx_vec<unsigned short, {per}>*>(out + i * {per}) = v;
  }}
}}
"""


#: the most axes the dynamic slice kernels take (shapes travel as parameters, padded with leading 1s)
SLICE_MAX_AXES = 6
#: the element type a dynamic slice kernel moves, by item size in bytes (it moves bits: any dtype of that size)
SLICE_TYPES = {1: "unsigned char", 2: "unsigned short", 4: "unsigned int", 8: "unsigned long long"}


def dynamic_slice_source(name: str, itemsize: int, update: bool) -> str:
    """The CUDA C++ of ``DynamicSlice`` (``update`` false: ``out`` is the block of ``x``) or of
    ``DynamicSliceUpdate``'s write (``update`` true: the block of ``out``, already a copy of ``x``, becomes
    ``upd``), both C-contiguous, one thread per element of the block. The block's start along axis ``a`` is read on
    the device from ``start`` (int32 where ``start_kind`` is 1, int64 where 2; entry ``slot_a``, or entry 0 where
    ``start`` has one; ``slot_a`` < 0: a static axis, start 0), made non-negative and clamped so that the block
    fits, as the host's kernel does; no value crosses to the host, so a CUDA graph may capture it. With
    ``update``, ``{name}_pair`` writes two updates at one start, into two arrays, in one launch."""
    t = SLICE_TYPES[itemsize]
    axes = range(SLICE_MAX_AXES)
    params = ",\n                                  ".join(f"long long b{a}, long long n{a}, int slot{a}" for a in axes)
    steps = "\n".join(f"""    {{
      const long long c = rest % b{a};
      rest /= b{a};
      long long s = 0;
      if (slot{a} >= 0) {{
        s = starts_of(start, start_kind, n_start == 1 ? 0 : slot{a});
        if (s < 0) s += n{a};
        s = s < 0 ? 0 : (s > n{a} - b{a} ? n{a} - b{a} : s);
      }}
      at += (c + s) * stride;
      stride *= n{a};
    }}""" for a in reversed(axes))
    move = "out[at] = upd[e];" if update else "out[e] = x[at];"
    pair = f"""
// Two updates of one block shape at one start, into two arrays of one shape (a decode step's keys and values):
// elements from total on are the second's.
extern "C" __global__ void {name}_pair(const {t}* __restrict__ upd, {t}* __restrict__ out,
                                       const {t}* __restrict__ upd2, {t}* __restrict__ out2,
                                       const void* __restrict__ start, int start_kind, int n_start, long long total,
                                       {params}) {{
  for (long long f = blockIdx.x * (long long)blockDim.x + threadIdx.x; f < 2 * total;
       f += (long long)gridDim.x * blockDim.x) {{
    const bool second = f >= total;
    const long long e = second ? f - total : f;
    long long rest = e, at = 0, stride = 1;
{steps}
    if (second) out2[at] = upd2[e];
    else out[at] = upd[e];
  }}
}}
""" if update else ""
    return f"""
__device__ __forceinline__ long long starts_of(const void* start, int kind, int i) {{
  return kind == 1 ? (long long)((const int*)start)[i] : ((const long long*)start)[i];
}}

extern "C" __global__ void {name}(const {t}* __restrict__ x, const {t}* __restrict__ upd, {t}* __restrict__ out,
                                  const void* __restrict__ start, int start_kind, int n_start, long long total,
                                  {params}) {{
  for (long long e = blockIdx.x * (long long)blockDim.x + threadIdx.x; e < total;
       e += (long long)gridDim.x * blockDim.x) {{
    long long rest = e, at = 0, stride = 1;  // (the last axis first: C order)
{steps}
    {move}
  }}
}}
""" + pair


#: the unit a strided copy moves, by its width in bytes (it moves bits: any dtype whose rows are whole units)
COPY_UNITS = {16: "uint4", 8: "uint2", 4: "unsigned int", 2: "unsigned short", 1: "unsigned char"}
#: the most axes a strided copy's rows take (the source's axes but its last, after merging)
COPY_ROW_AXES = 4


def strided_copy_source(name: str, unit: int) -> str:
    """The CUDA C++ of a copy of a strided view into C order: ``out`` is ``rows x inner`` units of ``unit`` bytes,
    row ``r = (i0, i1, i2, i3)`` (sizes ``(., n1, n2, n3)``) read at ``x + i0 * s0 + i1 * s1 + i2 * s2 + i3 * s3``
    (strides in units), its units contiguous. One thread a unit, in 32-bit arithmetic (the host keeps ``total``
    below 2**31): a row's place is worked out once per unit of up to 16 bytes, not once per element."""
    t = COPY_UNITS[unit]
    return f"""
extern "C" __global__ void {name}(const {t}* __restrict__ x, {t}* __restrict__ out, int total, int inner, int n1,
                                  int n2, int n3, long long s0, long long s1, long long s2, long long s3) {{
  for (unsigned int e = blockIdx.x * blockDim.x + threadIdx.x; e < (unsigned int)total;
       e += gridDim.x * blockDim.x) {{
    const unsigned int row = e / (unsigned int)inner, col = e - row * (unsigned int)inner;
    const unsigned int i3 = row % (unsigned int)n3, r2 = row / (unsigned int)n3;
    const unsigned int i2 = r2 % (unsigned int)n2, r1 = r2 / (unsigned int)n2;
    const unsigned int i1 = r1 % (unsigned int)n1, i0 = r1 / (unsigned int)n1;
    out[e] = x[i0 * s0 + i1 * s1 + i2 * s2 + i3 * s3 + col];
  }}
}}
"""


def gemm_pointers_source(name: str) -> str:
    """The CUDA C++ of the three pointer arrays of a batched product whose operands' matrices are not one stride
    apart (a head-split view ``(B, L, H, D) -> (B, H, L, D)``, read in place by ``cublasGemmBatchedEx``): for
    each of ``count`` products and each of three operands (base address ``p``, ``inner``, strides ``so``, ``si``
    in bytes), ``p + (i / inner) * so + (i % inner) * si`` into ``out[k * count + i]``."""
    return f"""
extern "C" __global__ void {name}(unsigned long long* __restrict__ out, long long count, long long p0,
                                  long long inner0, long long so0, long long si0, long long p1, long long inner1,
                                  long long so1, long long si1, long long p2, long long inner2, long long so2,
                                  long long si2) {{
  const long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x;
  if (i >= count) return;
  out[i] = p0 + (i / inner0) * so0 + (i % inner0) * si0;
  out[count + i] = p1 + (i / inner1) * so1 + (i % inner1) * si1;
  out[2 * count + i] = p2 + (i / inner2) * so2 + (i % inner2) * si2;
}}
"""


#: copies one launch of the copy-list kernel makes: its list is a kernel parameter (``COPY_LIST_BYTES``), well
#: under the 4 KiB CUDA allows a launch's parameters
COPY_LIST_MAX = 96
#: bytes of one copy a block of the copy-list kernel moves (its threads 16 bytes at a time)
COPY_LIST_CHUNK = 1 << 16
#: the size of the copy-list kernel's parameter (source and destination addresses, byte counts, first blocks),
#: padded to its 8-byte alignment as the compiler lays it out
COPY_LIST_BYTES = (3 * 8 * COPY_LIST_MAX + 4 * (COPY_LIST_MAX + 1) + 7) & ~7


def copy_list_source(name: str) -> str:
    """The CUDA C++ of ``count`` device-to-device copies in one launch (a CUDA graph's inputs into their slots, its
    held values into its export area: each copy alone is a launch of a few microseconds, most of it latency). The
    list is the kernel's parameter: ``src``, ``dst`` and ``bytes`` of each copy, and ``first``, the first block of
    each (a copy takes one block per ``COPY_LIST_CHUNK`` bytes; ``first[count]`` is the grid). A block finds its
    copy by a binary search of ``first``, then its threads move 16 bytes at a time where the addresses and the
    size allow it, else one byte at a time."""
    n = COPY_LIST_MAX
    return f"""
struct umx_copy_list {{
  unsigned long long src[{n}], dst[{n}], bytes[{n}];
  unsigned int first[{n + 1}];
}};
static_assert(sizeof(umx_copy_list) == {COPY_LIST_BYTES}, "the host packs COPY_LIST_BYTES");

extern "C" __global__ void {name}(const umx_copy_list list, int count) {{
  int lo = 0, hi = count - 1;  // the last copy whose first block is at most this one
  while (lo < hi) {{
    const int mid = (lo + hi + 1) >> 1;
    if (list.first[mid] <= blockIdx.x) lo = mid; else hi = mid - 1;
  }}
  const unsigned long long start = (unsigned long long)(blockIdx.x - list.first[lo]) * {COPY_LIST_CHUNK}ULL;
  const unsigned long long total = list.bytes[lo];
  const unsigned long long end = start + {COPY_LIST_CHUNK}ULL < total ? start + {COPY_LIST_CHUNK}ULL : total;
  const char* s = (const char*)list.src[lo];
  char* d = (char*)list.dst[lo];
  if (((list.src[lo] | list.dst[lo] | total) & 15ULL) == 0) {{
    const uint4* s4 = (const uint4*)s;
    uint4* d4 = (uint4*)d;
    for (unsigned long long i = start / 16 + threadIdx.x; i < end / 16; i += blockDim.x) d4[i] = s4[i];
  }} else {{
    for (unsigned long long i = start + threadIdx.x; i < end; i += blockDim.x) d[i] = s[i];
  }}
}}
"""


def merged_axes(shape: tuple, strides: tuple) -> list:
    """``[(size, stride)]`` of a view's axes with size-1 axes dropped and each axis merged into the next where
    it steps over that one whole (C order kept): the fewest axes that address the same elements."""
    out: list = []
    for n, s in zip(shape, strides):
        if n == 1:
            continue
        if out and out[-1][1] == s * n:
            out[-1] = (out[-1][0] * n, s)
        else:
            out.append((n, s))
    return out


def view_strides(shape: tuple, strides: tuple, new_shape: tuple) -> tuple | None:
    """The strides of ``new_shape`` over the elements of a view of ``shape`` and ``strides`` in C order, or
    None where no strides give them (the view must be copied). NumPy's rule: each run of new axes must cover a
    run of old axes that step over each other whole."""
    old = [(n, s) for n, s in zip(shape, strides) if n != 1]
    out = [0] * len(new_shape)
    i = j = 0  # the next new axis and old axis
    while i < len(new_shape) and j < len(old):
        i_end, j_end = i + 1, j + 1
        a, b = new_shape[i], old[j][0]
        while a != b:
            if a < b:
                if i_end == len(new_shape):
                    return None
                a *= new_shape[i_end]
                i_end += 1
            else:
                if j_end == len(old):
                    return None
                b *= old[j_end][0]
                j_end += 1
        for k in range(j, j_end - 1):
            if old[k][1] != old[k + 1][0] * old[k + 1][1]:
                return None
        step = old[j_end - 1][1]
        for k in range(i_end - 1, i - 1, -1):
            out[k] = step
            step *= new_shape[k]
        i, j = i_end, j_end
    if j != len(old):
        return None
    for k in range(i, len(new_shape)):  # (trailing new axes of size 1)
        if new_shape[k] != 1:
            return None
    return tuple(out)


#: the parameters of umx's kernels launched through ``launch.Launch``, one code each: ``p`` a pointer, ``i`` int,
#: ``f`` float, ``q`` long long (``tests/test_cuda_sources.py`` reads them against the sources above)
SIGNATURES = {
    "rms_norm": "pppifi",
    "rms_norm_vec": "pppifi",
    "rms_norm_add_vec": "pppppifi",
    "layer_norm": "ppppifii",
    "norm_vjp": "ppppqifiii",
    "rope": "ppp" + "iif" + "q" + "iiiif" + "fii" + "qqqq" + "ii",
    "sdpa": "ppppppp" + "iiiiiifi" + "qqqq" + "ii",
    "sdpa_combine": "pppiiii",
    "sdpa_group": "ppppppp" + "iiiiiifi" + "qqqq" + "ii" + "p",
    "sdpa_softmax": "pppp" + "q" + "iiiiifii" + "qqqq",
    "softmax": "ppqiii",
    "softmax_vjp": "pppqii",
    "arg_reduce": "ppqiii",
    "qmv": "pppppii",
    "bf16_matvec": "pppii",
    "dequantize_bf16": "ppppqii",
    "dynamic_slice": "ppppiiq" + "qqi" * SLICE_MAX_AXES,
    "dynamic_slice_pair": "pppppiiq" + "qqi" * SLICE_MAX_AXES,
    "strided_copy": "ppiiiii" + "qqqq",
    "gemm_pointers": "pq" + "qqqq" * 3,
}
