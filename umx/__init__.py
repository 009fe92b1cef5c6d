"""umx: MLX's programming model on Linux CPUs and NVIDIA GPUs.

Arrays have no location; each op chooses where it runs with ``stream=``; ops build a lazy graph that ``eval``
runs, with the dependencies between streams inserted by the scheduler. ``import umx as mx`` stands in for
``import mlx.core as mx``.
"""

import math as _math
from types import ModuleType as _ModuleType

from . import cuda, distributed, fast, fft, linalg, metal, random
from . import dtypes as _dtypes
from .array import ArrayIterator, ArrayLike, array, from_dlpack
from .devices import (
    Device,
    DeviceType,
    Stream,
    StreamContext,
    ThreadLocalStream,
    clear_streams,
    cpu,
    default_device,
    default_stream,
    device_count,
    device_info,
    gpu,
    is_available,
    new_stream,
    new_thread_local_stream,
    new_thread_unsafe_stream,
    set_default_device,
    set_default_stream,
    stream,
    synchronize,
)
from .dtypes import (
    Dtype,
    DtypeCategory,
    bfloat16,
    bool_,
    can_cast,
    complex64,
    complexfloating,
    finfo,
    float16,
    float32,
    float64,
    floating,
    generic,
    iinfo,
    inexact,
    int8,
    int16,
    int32,
    int64,
    integer,
    isdtype,
    issubdtype,
    number,
    result_type,
    signedinteger,
    uint8,
    uint16,
    uint32,
    uint64,
    unsignedinteger,
)
from .export import FunctionExporter, export_function, export_to_dot, exporter, import_function
from .io import load, save, save_gguf, save_safetensors, savez, savez_compressed
from .linalg import matrix_norm
from .ops import *  # noqa: F403
from .ops import ArrayAt
from .printing import PrintOptions, get_printoptions, printoptions, set_printoptions
from .runtime.memory import (
    clear_cache,
    get_active_memory,
    get_array_buffer_size,
    get_cache_memory,
    get_memory_limit,
    get_peak_memory,
    reset_peak_memory,
    set_cache_limit,
    set_memory_limit,
    set_wired_limit,
)
from .runtime.scheduler import async_eval, eval
from .trace import memory_report, trace
from .transforms import (
    checkpoint,
    compile,
    custom_function,
    disable_compile,
    enable_compile,
    grad,
    jvp,
    value_and_grad,
    vjp,
    vmap,
)

pi = _math.pi
e = _math.e
inf = _math.inf
nan = _math.nan
euler_gamma = 0.5772156649015329
newaxis = None

__version__ = "0.1.0"

# The public API: MLX's names (mlx.core) and umx's own additions (tests/test_public_names.py lists them), not the
# modules the package is built from.
__all__ = sorted(name for name, value in globals().items()
                 if not name.startswith("_") and (not isinstance(value, _ModuleType)
                                                  or name in ("cuda", "fft", "linalg", "metal", "random")))
