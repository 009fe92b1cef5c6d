"""Random bits: the one random primitive. Every sampler is built from these bits with ordinary ops."""

from __future__ import annotations

from .base import Primitive


class RandomBits(Primitive):
    """uint32 words of ``shape`` from the Threefry-2x32 counter-based generator under key input (2 words)."""

    __slots__ = ("shape",)
    capture = True
    no_grad = "integer key in, integer bits out"
    no_vmap = "one key per node: a batch of keys takes the loop"

    def __init__(self, shape: tuple):
        self.shape = shape


class CovarianceFactor(Primitive):
    """The symmetric square root ``S`` (``S @ S == cov``, ``S == S.T``) of a symmetric positive semi-definite
    ``cov`` (batched over leading axes): what ``multivariate_normal`` scales standard normals by."""

    __slots__ = ()
    capture = False  # an eigendecomposition through CuPy's cuSOLVER
    no_grad = "not written yet (an eigendecomposition, as Eigh)"


COVARIANCE_FACTOR = CovarianceFactor()
