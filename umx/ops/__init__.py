"""The public ops, by family. Each module checks arguments, infers shapes and dtypes, and builds graph nodes."""

import sys as _sys

from . import (
    _methods,  # noqa: F401,E402 (attaches operators and methods to array)
    fft,
    linalg,
    random,
)
from .conv import *  # noqa: F403
from .creation import *  # noqa: F403
from .elementwise import *  # noqa: F403
from .indexing import ArrayAt
from .layout import *  # noqa: F403
from .matmul import *  # noqa: F403
from .misc import *  # noqa: F403
from .products import *  # noqa: F403
from .quantized import *  # noqa: F403
from .reduction import *  # noqa: F403
from .scan import *  # noqa: F403
from .shape import *  # noqa: F403
from .sort import *  # noqa: F403

# What `from .ops import *` gives umx: the ops, not the family modules they live in (read through sys.modules:
# `matmul` and `sort` are functions here now). The submodules fft, linalg and random have public namespaces of
# their own (umx/fft.py, umx/linalg.py, umx/random.py).
__all__ = ["ArrayAt"]
for _family in ("conv", "creation", "elementwise", "layout", "matmul", "misc", "products", "quantized", "reduction",
                "scan", "shape", "sort"):
    __all__ += _sys.modules[f"{__name__}.{_family}"].__all__
