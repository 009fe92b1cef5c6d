"""Function transforms: automatic differentiation, vectorising maps, compilation and custom rules; graph export."""

from . import (  # noqa: F401 (register the primitives' rules)
    _batching,
    _rules,
    _rules_conv,
    _rules_elementwise,
    _rules_fast,
    _rules_linalg,
)
from .autodiff import grad, jvp, value_and_grad, vjp
from .compile import checkpoint, compile, custom_function, disable_compile, enable_compile
from .vmap import vmap

__all__ = ["grad", "value_and_grad", "vjp", "jvp", "vmap", "compile", "disable_compile", "enable_compile",
           "checkpoint", "custom_function"]
