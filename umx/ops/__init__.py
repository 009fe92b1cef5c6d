"""The public ops, by family. Each module checks arguments, infers shapes and dtypes, and builds graph nodes."""

from . import (
    _methods,  # noqa: F401,E402 (attaches operators and methods to array)
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
