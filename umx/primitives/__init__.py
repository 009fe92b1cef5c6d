"""The primitives: what graph nodes compute. One small class each; see ``base.Primitive``."""

from .base import Primitive
from .creation import Arange, Eye, Full, Linspace
from .elementwise import BINARY, UNARY, WHERE, Binary, Round, Unary, Where
from .indexing import ARRAY, Gather, Scatter, fill_key
from .linalg import MATMUL, Matmul
from .reduction import (
    All, Any, ArgMax, ArgMin, ArgReduce, LogSumExp, Max, Mean, Min, Prod, Reduce, Softmax, Sum, Var,
)
from .random import RandomBits
from .sort import ArgSort
from .shape import COPY, AsType, BroadcastTo, Concatenate, Copy, Reshape, Split, Transpose, View

__all__ = [
    "Primitive", "Arange", "Eye", "Full", "Linspace", "BINARY", "UNARY", "WHERE", "Binary", "Round", "Unary",
    "Where", "ARRAY", "Gather", "Scatter", "fill_key", "MATMUL", "Matmul", "All", "Any", "ArgMax", "ArgMin",
    "ArgReduce", "LogSumExp", "Max", "Mean", "Min", "Prod", "Reduce", "Softmax", "Sum", "Var", "COPY", "AsType",
    "BroadcastTo", "Concatenate", "Copy", "Reshape", "Split", "Transpose", "View", "RandomBits", "ArgSort",
]
