"""The CUDA C++ text of umx's own kernels (``direct.py`` compiles and launches them): one elementwise node or fused
region, a full reduction, a product of rows with a few columns.

Only text here, no CuPy: the tests compile every kind of kernel with NVRTC on machines without a GPU.
"""

from __future__ import annotations

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
"""

# per reduction: (how two partial results combine, for floats and for integers; whether it starts from 0 rather
# than from an element)
COMBINE = {
    "Sum": ("a + b", "a + b", True),
    "Mean": ("a + b", "a + b", True),
    "Max": ("((a > b || isnan(a)) ? a : b)", "(a > b ? a : b)", False),
    "Min": ("((a < b || isnan(a)) ? a : b)", "(a < b ? a : b)", False),
}


def elementwise_source(name: str, leaf_dtypes: list, kinds: str, lines: list, out_dtype) -> str:
    """The CUDA C++ of one elementwise kernel ``name``: ``lines`` (see ``fusion.steps``) over leaves of ``kinds``
    (``p``: an array of the output's size, ``r``: one broadcast along leading axes, else a scalar of that kind),
    in a grid-stride loop over the output, then the mirror's flag. bfloat16 is read and written as its 16-bit
    storage (a constant too: its bits travel as an unsigned integer) and computed in float."""
    params = []
    scalars = []
    loads = []
    for i, (d, k) in enumerate(zip(leaf_dtypes, kinds)):
        t = C_TYPES[d.name]
        bits = d.name == "bfloat16"
        stored = "unsigned short" if bits else t
        if k == "p":
            params.append(f"const {stored}* __restrict__ p{i}")
            loads.append(f"const {t} x{i} = {_load(bits, f'p{i}[i]')};")
        elif k == "r":
            params += [f"const {stored}* __restrict__ p{i}", f"long long m{i}"]
            loads.append(f"const {t} x{i} = {_load(bits, f'p{i}[i % m{i}]')};")
        else:
            params.append(f"{SCALAR_TYPES[k]} s{i}")
            scalars.append(f"const {t} x{i} = {_load(bits, f'(unsigned short)s{i}') if bits else f'({t})s{i}'};")
    last = f"t{len(lines) - 1}"
    if out_dtype.name == "bfloat16":
        t, last = "unsigned short", f"umx_bf16_bits({last})"
    else:
        t = C_TYPES[out_dtype.name]
    params += [f"{t}* __restrict__ out", "long long n", f"{t}* mirror", "unsigned long long* flag",
               "unsigned long long token"]
    body = "\n    ".join([*loads, *lines, f"const {t} r = {last};"])
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


def rms_norm_source(name: str) -> str:
    """The CUDA C++ of ``mx.fast.rms_norm`` on float32 rows: one block of ``BLOCK`` threads per row sums the
    squares (float32), then scales the row (and multiplies the weight, where ``has_weight``)."""
    return f"""
extern "C" __global__ void {name}(const float* __restrict__ x, const float* __restrict__ w, float* __restrict__ out,
                                  int d, float eps, int has_weight) {{
  __shared__ float partial[{BLOCK // 32}];
  const float* row = x + (long long)blockIdx.x * d;
  float* dst = out + (long long)blockIdx.x * d;
  float s = 0.0f;
  for (int i = threadIdx.x; i < d; i += blockDim.x) {{
    const float v = row[i];
    s += v * v;
  }}
  #pragma unroll
  for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
  if ((threadIdx.x & 31) == 0) partial[threadIdx.x >> 5] = s;
  __syncthreads();
  if (threadIdx.x < 32) {{
    s = threadIdx.x < (blockDim.x >> 5) ? partial[threadIdx.x] : 0.0f;
    #pragma unroll
    for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
    if (threadIdx.x == 0) partial[0] = s;
  }}
  __syncthreads();
  const float scale = rsqrtf(partial[0] / (float)d + eps);
  for (int i = threadIdx.x; i < d; i += blockDim.x) {{
    const float v = row[i] * scale;
    dst[i] = has_weight ? v * w[i] : v;
  }}
}}
"""


def rope_source(name: str) -> str:
    """The CUDA C++ of ``mx.fast.rope`` on float32 rows ``(rows, t, d)``: one thread per element. Position ``t``
    plus the row's batch entry's offset, times ``scale``, turns the pair of the element by ``position *
    base**(-i / half)``; pairs are ``(i, i + half)``, or neighbours where ``traditional``; elements from ``dims``
    on are copied."""
    return f"""
extern "C" __global__ void {name}(const float* __restrict__ x, float* __restrict__ out,
                                  const float* __restrict__ offsets, int n_offsets, long long total, int t, int d,
                                  int dims, int heads, float scale,
                                  float log_base_over_half, int traditional, int inverse) {{
  const long long k = blockIdx.x * (long long)blockDim.x + threadIdx.x;
  if (k >= total) return;
  const int j = (int)(k % d);
  if (j >= dims) {{
    out[k] = x[k];
    return;
  }}
  const long long row = k / d;  // (a row of d elements: one position of one head of one batch entry)
  const int pos = (int)(row % t);
  const long long entry = (row / t) / heads;
  const float start = offsets[n_offsets == 1 ? 0 : entry];
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
  const float here = x[k];
  const float other = x[k - j + partner];
  out[k] = first ? here * c - other * s : other * s + here * c;
}}
"""
