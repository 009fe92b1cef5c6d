"""The primitives: what graph nodes compute. One small class each; see ``base.Primitive``."""

from .base import Primitive
from .conv import Convolution
from .creation import Arange, Eye, Full, Linspace
from .distributed import COMMUNICATION, AllGather, AllReduce, Communication, Recv, Send, SumScatter
from .elementwise import BINARY, UNARY, WHERE, Binary, Round, Unary, Where
from .fast import CudaKernel, LayerNorm, NormVJP, RMSNorm, RoPE, ScaledDotProductAttention
from .fft import FFT, ISTFT, STFT, FFTFreq, FFTShift
from .indexing import ARRAY, Gather, Scatter, fill_key
from .io import FileReadError, Load
from .layout import (
    AsStrided,
    Diag,
    Diagonal,
    DynamicSlice,
    DynamicSliceUpdate,
    Pad,
    PutAlongAxis,
    Repeat,
    Roll,
    TakeAlongAxis,
    Tile,
    Tri,
    Tril,
    Triu,
)
from .linalg import (
    DET,
    INV,
    LU,
    LU_DECOMP,
    LU_FACTOR,
    MATMUL,
    MATMULS,
    PINV,
    QR,
    QR_DECOMP,
    SLOGDET,
    SOLVE,
    SVD,
    Cholesky,
    CholeskyInv,
    Cross,
    Det,
    Eig,
    Eigh,
    Inv,
    LUFactor,
    Matmul,
    Pinv,
    SlogDet,
    Solve,
    SolveTriangular,
    TriInv,
)
from .misc import (
    DEPENDS,
    STOP_GRADIENT,
    Compiled,
    Custom,
    Depends,
    Einsum,
    Median,
    NanToNum,
    SideOutput,
    StopGradient,
    Window,
)
from .quantized import (
    GATHER_MM,
    TO_FP8,
    Dequantize,
    FromFP8,
    GatherMM,
    GatherQMM,
    Quantize,
    QuantizedMatmul,
    ToFP8,
)
from .random import RandomBits
from .reduction import (
    All,
    Any,
    ArgMax,
    ArgMin,
    ArgReduce,
    LogSumExp,
    Max,
    Mean,
    Min,
    Prod,
    Reduce,
    Softmax,
    SoftmaxVJP,
    Sum,
    Var,
)
from .scan import Scan
from .shape import COPY, AsType, BroadcastTo, Concatenate, Copy, Reshape, Split, Transpose, View
from .sort import ArgPartition, ArgSort, Partition, SearchSorted, Sort, Unique

__all__ = [
    "Primitive", "Arange", "Eye", "Full", "Linspace", "BINARY", "UNARY", "WHERE", "Binary", "Round", "Unary",
    "Where", "ARRAY", "Gather", "Scatter", "fill_key", "MATMUL", "MATMULS", "Matmul", "All", "Any", "ArgMax", "ArgMin",
    "ArgReduce", "LogSumExp", "Max", "Mean", "Min", "Prod", "Reduce", "Softmax", "SoftmaxVJP", "Sum", "Var", "COPY",
    "AsType",
    "BroadcastTo", "Concatenate", "Copy", "Reshape", "Split", "Transpose", "View", "RandomBits",
    "FFT", "FFTFreq", "FFTShift", "ISTFT", "STFT", "DET", "INV", "LU_DECOMP", "LU_FACTOR", "PINV", "QR_DECOMP",
    "SLOGDET", "SOLVE",
    "LU", "QR", "SVD", "Cholesky", "CholeskyInv", "Cross", "Det", "Eig", "Eigh", "Inv", "LUFactor", "Pinv",
    "SlogDet", "Solve", "SolveTriangular", "TriInv",
    "AsStrided", "Diag", "Diagonal", "DynamicSlice", "DynamicSliceUpdate", "Pad", "PutAlongAxis", "Repeat",
    "Roll", "TakeAlongAxis", "Tile", "Tri", "Tril", "Triu", "DEPENDS", "Convolution", "Depends", "Einsum",
    "Median", "NanToNum", "SideOutput", "Window", "Scan", "ArgPartition", "ArgSort", "Partition", "SearchSorted",
    "Sort", "Unique", "STOP_GRADIENT", "StopGradient", "Custom", "COMMUNICATION", "Communication", "AllReduce",
    "AllGather", "Compiled", "SumScatter", "Send", "Recv",
    "CudaKernel", "LayerNorm", "NormVJP", "RMSNorm", "RoPE", "ScaledDotProductAttention",
    "GATHER_MM", "TO_FP8", "Dequantize", "FromFP8", "GatherMM", "GatherQMM", "Quantize", "QuantizedMatmul",
    "ToFP8",
    "FileReadError", "Load",
]
