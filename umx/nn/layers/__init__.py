"""The layers of ``umx.nn``, by topic."""

from umx.nn.layers.activations import (
    CELU,
    ELU,
    GELU,
    GLU,
    SELU,
    HardShrink,
    Hardswish,
    HardTanh,
    LeakyReLU,
    LogSigmoid,
    LogSoftmax,
    Mish,
    PReLU,
    ReLU,
    ReLU2,
    ReLU6,
    Sigmoid,
    SiLU,
    Softmax,
    Softmin,
    Softplus,
    Softshrink,
    Softsign,
    Step,
    Tanh,
    celu,
    elu,
    gelu,
    gelu_approx,
    gelu_fast_approx,
    glu,
    hard_shrink,
    hard_tanh,
    hardswish,
    leaky_relu,
    log_sigmoid,
    log_softmax,
    mish,
    prelu,
    relu,
    relu2,
    relu6,
    selu,
    sigmoid,
    silu,
    softmax,
    softmin,
    softplus,
    softshrink,
    softsign,
    step,
    tanh,
)
from umx.nn.layers.base import Module
from umx.nn.layers.containers import Sequential
from umx.nn.layers.convolution import Conv1d, Conv2d, Conv3d
from umx.nn.layers.convolution_transpose import ConvTranspose1d, ConvTranspose2d, ConvTranspose3d
from umx.nn.layers.distributed import AllToShardedLinear, ShardedToAllLinear
from umx.nn.layers.dropout import Dropout, Dropout2d, Dropout3d
from umx.nn.layers.embedding import Embedding
from umx.nn.layers.linear import Bilinear, Identity, Linear
from umx.nn.layers.normalization import BatchNorm, GroupNorm, InstanceNorm, LayerNorm, RMSNorm
from umx.nn.layers.pooling import AvgPool1d, AvgPool2d, AvgPool3d, MaxPool1d, MaxPool2d, MaxPool3d
from umx.nn.layers.positional_encoding import ALiBi, RoPE, SinusoidalPositionalEncoding
from umx.nn.layers.quantized import QQLinear, QuantizedEmbedding, QuantizedLinear, quantize
from umx.nn.layers.recurrent import GRU, LSTM, RNN
from umx.nn.layers.transformer import (
    MultiHeadAttention,
    Transformer,
    TransformerDecoder,
    TransformerDecoderLayer,
    TransformerEncoder,
    TransformerEncoderLayer,
)
from umx.nn.layers.upsample import Upsample
