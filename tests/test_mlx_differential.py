"""Differential test against MLX's own CPU build: random programs of ops, dtypes and shapes, run by umx and by
``mlx.core``, agree in shape, dtype and value, or both raise.

Programs come from ``mlx_programs.Program``: one description (steps ``(op, args, kwargs)``) interpreted against
either module. umx runs a whole program lazily and evaluates it at once; then MLX runs each step on umx's values
of the step's inputs, so a disagreement is caught at the op that made it and rounding never compounds down a
chain. Values compare exactly for integers and bools, within dtype-aware tolerances for floats (NaN where NaN,
infinities equal); an exception on both sides (any) is agreement, on one side a disagreement.

Where umx differs on purpose, or MLX's result is undefined or wrong, the case is in ``KNOWN`` with its reason: the
test counts it and moves on. Steps MLX does not survive (it hangs or dies of SIGFPE) are in ``MLX_HANGS`` and are
not run on MLX. The module skips where MLX is not importable (``pip install "mlx[cpu]"``).

``UMX_MLX_DIFF_PROGRAMS`` sets the number of programs (``make stress`` runs many). A failure prints each bad
program's seed and steps. From the repository root, ``PYTHONPATH=. python tests/test_mlx_differential.py SEED``
replays one program, and ``... --count N [FAMILY,...]`` prints what N programs meet: the steps per family, the
known differences and the disagreements.
"""

from __future__ import annotations

import os
import sys
import threading
from collections import Counter
from dataclasses import dataclass

import numpy as np
import pytest
from mlx_programs import DT, INTS, Call, Fn, Program, Ref, Step, call, flatten, resolve

import umx as mx

try:
    import mlx.core as mlx
except ImportError:  # (not installed, or a build that does not load here)
    pytest.skip("MLX's CPU build (pip install 'mlx[cpu]') is the reference", allow_module_level=True)

N_PROGRAMS = int(os.environ.get("UMX_MLX_DIFF_PROGRAMS", "300"))
SEED = 20260107

# relative tolerance per result dtype: a few units in the last place, since both libraries round each op once
_RTOL = {"float16": 2e-3, "bfloat16": 1.6e-2, "float32": 4e-6, "float64": 1e-12, "complex64": 4e-6}
# families whose results accumulate over many inputs: the tolerance grows with the inputs' size and magnitude
_ACCUMULATE = {"reduce", "scan", "products", "linalg", "transform", "softmax"}


# -- known differences -----------------------------------------------------------------------------------------------
@dataclass
class Case:
    """What a known difference matches: the step, its inputs (umx's values, as NumPy), and both outcomes."""
    step: Step
    inputs: list
    kind: str  # "raise", "count", "shape", "dtype" or "value" ("hang" for MLX_HANGS, before MLX runs)
    umx: object  # list of NumPy results, or the exception umx raised
    mlx: object
    dtypes: list  # the results' dtype names (umx's)


@dataclass
class Known:
    name: str
    reason: str
    match: object  # Case -> bool


# Functions MLX's CPU build computes through float32 approximations whatever the dtype (expm1's derivative is
# exp; round with decimals scales in float32).
_FLOAT32_ACCURATE = {"exp", "expm1", "sin", "cos", "sigmoid", "erf", "erfinv", "logaddexp", "softmax", "logsumexp",
                     "logcumsumexp", "round", "linalg.det", "random.normal", "random.laplace"}

KNOWN: list[Known] = [
    # -- precision
    Known("mlx-float64-accuracy", "MLX computes exp, sin, cos, sigmoid, erf, erfinv, logaddexp and round with "
          "decimals (and what is built on them: softmax, logsumexp, logcumsumexp, det, normal and laplace samples, "
          "derivatives) of float64 in float32; umx keeps float64's accuracy. Such results must agree to float32's "
          "tolerance, except sin and cos of large arguments, which float32 rounds to other angles",
          lambda c: bool(_ops(c.step) & _FLOAT32_ACCURATE) and set(c.dtypes) == {"float64"}
          and (_agree_as("float32")(c) or (bool(_ops(c.step) & {"sin", "cos"}) and max(
              np.abs(x[np.isfinite(x)]).max(initial=0) for x in c.inputs if x.dtype.kind == "f") > 2**16)
               or (c.kind == "value" and _set_aside(c, [_past_float32(u, m) for u, m in zip(c.umx, c.mlx)]))
               or _exp_agrees_as_float32(c))),
    # -- MLX errors and crashes of its own
    Known("mlx-softmax-int-axes", "softmax of an integer or bool array over several axes: MLX keeps the integer "
          "dtype (all zeros), as if it forgot to promote; over one axis it gives float32, as umx does everywhere",
          lambda c: c.step.op == "softmax" and c.kind == "dtype" and c.inputs[0].dtype.kind in "biu"),
    Known("mlx-argmax-0d-keepdims", "argmax/argmin of a 0-d array with keepdims=True: MLX fails with 'cannot "
          "create std::vector larger than max_size()'; umx returns index 0",
          lambda c: c.step.op in ("argmax", "argmin") and c.inputs[0].ndim == 0 and c.kind == "raise"),
    Known("mlx-logsumexp-integers", "logsumexp of bools and integers: MLX subtracts the maximum in the input's "
          "type, which wraps around (always for unsigned types and bool) and gives inf or a wrong sum; umx "
          "computes in float32",
          lambda c: c.step.op == "logsumexp" and c.inputs[0].dtype.kind in "biu" and (
              c.inputs[0].dtype.kind in "bu" or _span(c.inputs[0]) > np.iinfo(c.inputs[0].dtype).max)),
    Known("mlx-integer-mean", "mean, var and std of integers whose sum (of squares, for var and std) leaves "
          "the integer type: MLX sums in the integer type, which wraps around; umx sums in float32",
          lambda c: c.step.op in ("mean", "var", "std") and c.inputs[0].dtype.kind in "iu"
          and (np.abs(c.inputs[0].astype(np.float64)) ** (1 if c.step.op == "mean" else 2)).sum()
          >= np.iinfo(c.inputs[0].dtype).max),
    Known("mlx-take-from-empty", "take from an array with no elements along an axis that is not empty: MLX "
          "refuses any take from an empty array; umx returns the (empty) result, as NumPy does",
          lambda c: c.step.op == "take" and c.kind == "raise" and c.inputs[0].size == 0
          and isinstance(c.umx, list)),
    Known("mlx-pad-edge-empty", "pad with mode='edge' along an empty axis: MLX fills with values it never had "
          "(zeros here); NumPy refuses, and so does umx",
          lambda c: c.step.op == "pad" and c.step.kwargs.get("mode") == "edge" and c.inputs[0].size == 0),
    Known("mlx-solve-batched-rhs", "solve of a batch of matrices with an unbatched right-hand matrix: MLX fails "
          "inside ('[take_along_axis] Indices of dimension ...'); umx broadcasts the batch, as NumPy does",
          lambda c: c.step.op == "linalg.solve" and c.kind == "raise" and "take_along_axis" in str(c.mlx)),
    Known("mlx-uint64-negative-scalar", "a negative Python int next to a uint64 array: MLX's overflow check "
          "misses uint64 and wraps -3 to 2**64 - 3; it refuses such scalars for the other unsigned types, as umx "
          "does for all",
          lambda c: c.kind == "raise" and "uint64" in str(c.umx) and (
              "would result in overflow" in str(c.umx) or "does not fit" in str(c.umx))),
    Known("mlx-scatter-nan", "NaN in x.at[idx].maximum/minimum: MLX's scatter compares with < and keeps or "
          "drops a NaN by its order; umx propagates it, as maximum and minimum do in both libraries",
          lambda c: c.step.op in ("at.maximum", "at.minimum") and any(
              x.dtype.kind == "f" and np.isnan(x).any() for x in c.inputs + c.umx)),
    Known("mlx-scan-nan", "NaN in cummax/cummin: only MLX's forward float32 scans propagate it; its float16 "
          "and bfloat16 scans and its reversed scans let it drop out after its position (its max and min "
          "reductions propagate it); umx propagates it always, as NumPy",
          lambda c: c.step.op in ("cummax", "cummin") and np.isnan(c.inputs[0].astype(np.complex128)).any()),
    # -- umx on purpose
    Known("umx-integer-products", "integer matrix products: MLX's matmul (and inner, tensordot, addmm built on "
          "it) supports only inexact types; umx computes them exactly, as NumPy does (tests/test_matmul.py)",
          lambda c: c.step.op in ("matmul", "inner", "tensordot", "addmm") and c.kind == "raise"
          and isinstance(c.umx, list) and all(x.dtype.kind in "biu" for x in c.inputs)),
    Known("umx-put-along-axis-scalar", "put_along_axis with a Python scalar as the values: MLX's binding takes "
          "only an array there (TypeError); umx takes any value that broadcasts, as its other scatters do",
          lambda c: c.step.op == "put_along_axis" and c.kind == "raise" and not isinstance(c.step.args[2], Ref)),
    Known("umx-full-keeps-dtype", "full with a Python scalar of a wider kind than dtype (a float for an integer "
          "dtype, an int for bool): MLX promotes the two as a weak scalar and an array (float32, int32), ignoring "
          "dtype; umx returns the dtype asked for, as NumPy does",
          lambda c: c.step.op == "full" and c.kind == "dtype" and "dtype" in c.step.kwargs),
    Known("umx-more-rules", "jvp of cummax, cummin and cumprod, nan_to_num of complex and float64 arrays: MLX "
          "has no rule or kernel for them and raises; umx computes them",
          lambda c: c.kind == "raise" and isinstance(c.umx, list) and (
              "JVP is not implemented for cumulative" in str(c.mlx) or (
                  c.step.op == "nan_to_num" and c.inputs[0].dtype in (np.complex64, np.float64)))),
    # -- integer arithmetic that wraps around inside MLX
    Known("mlx-round-integers", "round of integers: MLX computes in float32, which changes values beyond 2**24 "
          "(and rounds again to tens); umx rounds exactly (an integer is its own rounding to decimals >= 0)",
          lambda c: c.step.op == "round" and c.inputs[0].dtype.kind in "iu" and (
              c.step.args[1] < 0 or (np.abs(c.inputs[0].astype(np.float64)) > 2**24).any())),
    Known("bfloat16-intermediates", "floor_divide and round with decimals in bfloat16: MLX rounds the "
          "intermediate value (the quotient, the scaled value) to bfloat16 (3 / 0.30078125 becomes 10, then its "
          "floor 10), umx computes it in float32 (9.97, floor 9) and rounds the result once",
          lambda c: c.kind == "value" and c.dtypes[0] == "bfloat16" and _set_aside(c, _bf16_intermediates(c))),
    Known("mlx-index-out-of-bounds", "x[i] and x[i] = v with an integer i out of bounds: MLX does not check and "
          "reads or writes wherever that lands (undefined); umx raises IndexError",
          lambda c: c.step.op in ("[]", "setitem") and c.kind == "raise" and isinstance(c.umx, IndexError)),
    Known("mlx-isclose-integers", "isclose/allclose of integers whose difference (or b's absolute value) leaves "
          "the type: MLX computes them in the integer type, which wraps around; umx compares in float32. Only "
          "those entries of isclose (allclose: where any entry wraps)",
          lambda c: (c.step.op == "isclose" and _set_aside(c, [np.broadcast_to(_wrapping(c.inputs), c.umx[0].shape)]))
          or (c.step.op == "allclose" and bool(_wrapping(c.inputs).any()))),
    # -- undefined: C++ leaves the result to the machine
    Known("undefined-float-to-int", "casting a float that is NaN, infinite or outside the target integer type "
          "(negative to unsigned included): undefined in C++, so MLX's values are the machine's; umx's are "
          "NumPy's",
          lambda c: c.kind == "value" and (
              (c.step.op in ("astype", ".astype") and c.inputs[0].dtype.kind in "fc"
               and _dtype_of(c.step.args[1]) in INTS
               and _set_aside(c, [_out_of_range(c.inputs[0].real, _dtype_of(c.step.args[1]))]))
              or (c.step.op.startswith("at.") and c.inputs[0].dtype.kind in "iu" and len(c.step.args) > 2
                  and np.asarray(_value_arg(c)).dtype.kind in "fc" and _set_aside(c, [_scatter_out_of_range(c)])))),
    Known("undefined-shift", "shifting by a negative count or by the type's width or more: undefined in C++ "
          "(MLX's result is the machine's); umx gives NumPy's",
          lambda c: _shift(c) and any(((x < 0) | (x >= 8 * np.dtype(c.dtypes[0]).itemsize)).any()
                                      for x in _shift_counts(c))),
    Known("complex-infinities", "complex arithmetic with infinite parts, or dividing by a complex zero: NumPy's "
          "complex multiply and divide and BLAS give other NaN parts and signs of infinity than MLX's std::complex "
          "(C99 Annex G's recovery is followed by neither)",
          lambda c: c.kind == "value" and c.dtypes and c.dtypes[0] == "complex64"
          and (any(x.dtype.kind in "fc" and np.isinf(x).any() for x in c.inputs + _scalar_args(c))
               or _divides_by_zero(c))
          and _set_aside(c, [_nonfinite(u) & _nonfinite(m) for u, m in zip(c.umx, c.mlx)])),
    Known("mlx-complex-log-branch", "complex logaddexp and logcumsumexp: MLX leaves imaginary parts outside "
          "(-pi, pi] (the principal branch of log, where umx wraps them); the results agree modulo 2*pi*i",
          lambda c: c.step.op in ("logaddexp", "logcumsumexp") and c.dtypes[0] == "complex64"
          and _agree_modulo_2pi(c)),
    Known("complex-power-of-zero", "0 ** z for complex z: NumPy's complex power gives NaN parts (and zeros "
          "without a sign) where MLX's std::pow gives infinities and signed zeros",
          lambda c: c.kind == "value" and "pow" in c.step.op and c.dtypes[0] == "complex64"
          and _set_aside(c, [_base_zero(c, c.umx[0].shape) & np.isnan(c.umx[0])
                             & (_nonfinite(c.mlx[0]) | (c.mlx[0] == 0)) & _as_numpy_gives(c)])),
    Known("complex-nonfinite-operands", "complex power, division, floor_divide, sign and round of operands with "
          "infinite or NaN parts (and powers of a zero base beside them): umx follows NumPy (z ** 0 is 1, 0 ** -n "
          "is NaN, z / inf is NaN by Smith's division, the sign of an infinity is its direction, round takes each "
          "part), MLX's std::complex gives other NaN parts, infinities and zeros (C99 Annex G's recovery)",
          lambda c: c.kind == "value" and c.dtypes and c.dtypes[0] == "complex64"
          and c.step.op in _COMPLEX_EDGE_OPS
          and _set_aside(c, [_complex_edges(c, c.umx[0].shape) & _as_numpy_gives(c)])),
    Known("complex-nan-parts", "complex products and sums with NaN parts (prod, cumprod, multiply): which part of "
          "a NaN result is NaN depends on the multiply's formula (NumPy's against std::complex's); only entries "
          "non-finite on both sides",
          lambda c: c.kind == "value" and c.dtypes and c.dtypes[0] == "complex64"
          and bool(_ops(c.step) & {"prod", "cumprod", "multiply", ".__mul__", ".__rmul__"})
          and any(x.dtype.kind == "c" and np.isnan(x).any() for x in c.inputs)
          and _set_aside(c, [_nonfinite(u) & _nonfinite(m) for u, m in zip(c.umx, c.mlx)])),
    Known("mlx-complex-power-accuracy", "complex power of values whose result is real (a negative integer to an "
          "integral complex power): MLX computes exp(b log a), leaving imaginary parts of rounding size; umx's "
          "agree in each part to float32's precision relative to the result's magnitude, which grows with "
          "|b log a| (as exp's)",
          lambda c: c.kind == "value" and "pow" in c.step.op and c.dtypes and c.dtypes[0] == "complex64"
          and _set_aside(c, [_real_power_entries(c)])),
    Known("complex-nan-to-num-infinities", "nan_to_num of complex infinities: MLX replaces NaN parts but leaves "
          "infinite ones; umx replaces both, as NumPy does",
          lambda c: c.kind == "value" and c.step.op == "nan_to_num" and c.dtypes[0] == "complex64"
          and _set_aside(c, [(np.isinf(m.real) | np.isinf(m.imag)) & np.isfinite(u)
                             & _same(u, np.nan_to_num(c.inputs[0], **c.step.kwargs))
                             for u, m in zip(c.umx, c.mlx)])),
    Known("nonfinite-linear-algebra", "linear algebra of matrices with infinite or NaN entries: which entries "
          "become NaN and which infinite depends on the factorization's order of operations (LAPACK's in both, "
          "called differently)",
          lambda c: c.kind == "value" and c.step.family in ("linalg", "products")
          and any(x.dtype.kind in "fc" and not np.isfinite(x).all() for x in c.inputs)),
    Known("derivative-overflow", "derivatives that overflow: the rules are written differently (power's as "
          "b * a ** (b - 1) in umx), so one side gives inf where the other gives NaN",
          lambda c: c.step.family == "transform" and c.kind == "value"
          and _set_aside(c, [_inf_against_nan(u, m) for u, m in zip(c.umx, c.mlx)])),
    Known("half-divide-derivative", "float16 and bfloat16 derivatives of a division: umx's rule uses -y / b, "
          "MLX's squares b, which overflows float16 from 256 on and loses the term",
          lambda c: c.step.family == "transform" and c.kind == "value" and c.dtypes[0] in ("float16", "bfloat16")
          and "divide" in _ops(c.step)),
    Known("half-derivative-limits", "float16 and bfloat16 derivatives whose intermediates overflow or underflow "
          "(arctan2's x ** 2 + y ** 2 to 0, rsqrt of an overflowed square): MLX's rules form 0 / 0 or inf * 0 (NaN) "
          "where umx's give the finite limit; only entries where MLX is NaN and umx finite",
          lambda c: c.step.family == "transform" and c.kind == "value"
          and any(d in ("float16", "bfloat16") for d in c.dtypes)
          and _set_aside(c, [k & np.isnan(m) & np.isfinite(u) if k is not None and u.dtype.kind == "f" else None
                             for k, u, m in zip(_half_limits(c), c.umx, c.mlx)])),
    Known("nonfinite-derivatives", "derivatives with infinite or NaN cotangents or tangents: MLX multiplies "
          "them by 0/1 masks (maximum, minimum, abs), giving NaN where umx selects the branch",
          lambda c: c.step.family == "transform" and c.kind == "value"
          and any(x.dtype.kind == "f" and not np.isfinite(x).all() for x in c.inputs)),
    # -- random
    Known("mlx-random-float64", "MLX's uniform sampler has no float64 kernel ('[uniform] Unsupported type'), "
          "so uniform, gumbel and truncated_normal refuse float64; umx draws them (from the same float32 words)",
          lambda c: c.kind == "raise" and c.step.op.startswith("random.") and _dtype_arg(c) == "float64"
          and isinstance(c.mlx, RuntimeError)),
    Known("mlx-randint-wide-bounds", "randint bounds that do not fit the dtype: MLX's samples then come from "
          "float-to-integer casts out of range, undefined in C++",
          lambda c: c.step.op == "random.randint" and not all(_fits(b, _dtype_arg(c)) for b in c.step.args)),
    Known("mlx-categorical-one-row", "categorical with shape= or num_samples= from logits whose batch holds one "
          "distribution: MLX lays its noise out in a way umx does not reproduce (other layouts give MLX's "
          "samples; the distribution is the same)",
          lambda c: c.step.op == "random.categorical" and c.kind == "value"
          and c.inputs[0].size == c.inputs[0].shape[c.step.kwargs.get("axis", -1)]),
    Known("mlx-categorical-empty", "categorical with no samples to draw (an empty batch or num_samples=0): "
          "MLX's argmax refuses the empty noise, umx returns the empty uint32 samples",
          lambda c: c.step.op == "random.categorical" and c.kind == "raise" and isinstance(c.umx, list)
          and c.umx[0].size == 0),
]

# Steps that MLX 0.32.4 does not survive (it hangs or kills the process): not run on MLX, counted as known.
MLX_HANGS: list[Known] = [
    Known("mlx-unflatten-zero", "unflatten into a shape with a -1 and a 0 kills MLX with SIGFPE (a division by "
          "the zero size); umx raises ValueError",
          lambda c: c.step.op == "unflatten" and -1 in c.step.args[2] and 0 in c.step.args[2]),
    Known("mlx-take-gradient-empty", "the derivative of take on an empty array scatters into it, which kills "
          "MLX with SIGFPE, as mlx-scatter-empty (umx returns the empty gradient)",
          lambda c: c.step.family == "transform" and "take" in _ops(c.step) and any(x.size == 0 for x in c.inputs)),
    Known("mlx-divmod-by-zero", "divmod of integers by zero kills MLX with SIGFPE (its floor_divide and "
          "remainder give 0 and x there, as umx's divmod does)",
          lambda c: c.step.op == "divmod" and c.inputs[-1].dtype.kind in "biu" and (c.inputs[-1] == 0).any()),
    Known("mlx-trace-empty-diagonal", "trace of an array of 3 or more dimensions whose diagonal is empty "
          "(an empty array, or an offset past the edge) now and then never returns from MLX's eval (umx gives "
          "zeros)",
          lambda c: c.step.op == "trace" and c.inputs[0].ndim > 2 and _diagonal_length(
              c.inputs[0].shape, c.step.kwargs.get("offset", 0)) * c.inputs[0].size == 0),
    Known("mlx-int-min-by-minus-one", "the smallest int32 or int64 divided by -1 (remainder, floor_divide, "
          "divmod) kills MLX with SIGFPE, the machine's division overflow (umx gives NumPy's wrapped values)",
          lambda c: c.step.op in ("remainder", "floor_divide", "divmod", ".__mod__", ".__floordiv__")
          and _min_by_minus_one(c)),
    Known("mlx-scatter-empty", "a scatter (x[idx] = v or x.at[idx].op(v) with an index array) into an empty "
          "array kills MLX with SIGFPE, a division by the zero slice size (umx returns the empty array)",
          lambda c: (c.step.op == "setitem" or c.step.op.startswith("at.")) and c.inputs[0].size == 0
          and _index_arrays(c.step.args[1])),
]


def known_difference(case: Case, known=KNOWN) -> Known | None:
    """The first of ``known`` that matches ``case``, or None."""
    for k in known:
        try:
            if k.match(case):
                return k
        except Exception:  # noqa: BLE001 - a matcher that cannot read a case does not match it
            continue
    return None


# -- what the matchers read ----------------------------------------------------------------------------------------
def _ops(v) -> set:
    """The op names a step runs, with those of its nested calls and functions."""
    if isinstance(v, (Step, Call)):
        return {v.op} | _ops(v.args) | _ops(v.kwargs)
    if isinstance(v, Fn):
        return _ops(v.steps)
    if isinstance(v, (list, tuple)):
        return set().union(*map(_ops, v)) if v else set()
    if isinstance(v, dict):
        return _ops(list(v.values()))
    return set()


def _agree_as(dtype: str):
    """A matcher: the results agree within ``dtype``'s tolerance rather than their own."""
    def match(c: Case) -> bool:
        return c.kind == "value" and _value_difference(c.step, c.inputs, c.umx, c.mlx, [dtype] * len(c.umx)) is None
    return match




def _past_float32(u: np.ndarray, m: np.ndarray):
    """Entries infinite in MLX's result (computed in float32) and beyond float32's range in umx's, same sign."""
    if u.dtype.kind != "f":
        return None
    big = np.finfo(np.float32).max
    with np.errstate(invalid="ignore"):
        return np.isinf(m) & (np.abs(u) > big) & (np.sign(u) == np.sign(m))


def _scalar_args(c: Case) -> list:
    """A step's Python number arguments, as arrays."""
    return [np.asarray(a) for a in c.step.args if isinstance(a, (bool, int, float, complex))]


def _exp_agrees_as_float32(c: Case) -> bool:
    """exp and expm1 that MLX computes in float32: its relative error grows with the argument (about |x| float32
    ulps), and its results overflow past float32's range; set those aside, the rest must agree that closely, each
    entry within the tolerance of its own argument."""
    if c.kind != "value" or c.step.op not in ("exp", "expm1") or len(c.inputs) != 1 or len(c.umx) != 1:
        return False
    u, m = c.umx[0], c.mlx[0]
    if u.dtype.kind != "f":
        return False
    x = np.abs(np.broadcast_to(c.inputs[0].astype(np.float64), u.shape))
    with np.errstate(invalid="ignore"):
        ok = _same(u, m) | (np.abs(u - m) <= 4 * np.maximum(x, 1.0) * 2.0**-24 * np.abs(m)) | _past_float32(u, m)
    return bool(ok.all())


def _value_arg(c: Case):
    """The values argument of an ``at.`` step (its third), as an array (a reference's data or a Python scalar)."""
    v = c.step.args[2]
    if isinstance(v, Ref):
        refs = [a for a in c.step.args[:3] if isinstance(a, Ref)]
        return c.inputs[len(refs) - 1]
    return np.asarray(v)


def _set_aside(c: Case, masks: list) -> bool:
    """Whether ``masks`` (one per result, or None) select some entries where the results differ, and the results
    agree within their own tolerance once those entries are set aside."""
    us, ms, some = [], [], False
    for u, m, k in zip(c.umx, c.mlx, masks):
        if k is not None:
            k = k & ~_same(u, m)
        if k is not None and k.any():
            u, m, some = u.copy(), m.copy(), True
            u[k] = m[k] = 0
        us.append(u)
        ms.append(m)
    return some and _value_difference(c.step, c.inputs, us, ms, c.dtypes) is None


def _nonfinite(x: np.ndarray) -> np.ndarray:
    return ~np.isfinite(x) if x.dtype.kind in "fc" else np.zeros(x.shape, bool)


def _inf_against_nan(u: np.ndarray, m: np.ndarray) -> np.ndarray:
    """Entries infinite on one side and NaN on the other."""
    if u.dtype.kind not in "fc":
        return None
    return (np.isinf(u) & np.isnan(m)) | (np.isnan(u) & np.isinf(m))


def _operands(c: Case) -> list:
    """A step's first two arguments: its input arrays where they are references, Python scalars as arrays."""
    inputs = iter(c.inputs)
    return [next(inputs) if isinstance(a, Ref) else np.asarray(a) for a in c.step.args[:2]]


def _divides_by_zero(c: Case) -> bool:
    return bool(_ops(c.step) & {"divide", ".__truediv__", ".__rtruediv__", "reciprocal", "rsqrt", "floor_divide",
                                  ".__floordiv__"}) and any(
        (np.asarray(x) == 0).any() for x in _operands(c))


_COMPLEX_EDGE_OPS = {"power", ".__pow__", ".__rpow__", "floor_divide", ".__floordiv__", ".__rfloordiv__", "sign",
                     "round", "divide", ".__truediv__", ".__rtruediv__", "reciprocal"}


def _operand_nonfinite(c: Case, shape: tuple):
    """Where an operand of an elementwise step has an infinite or NaN part, over the result's shape (None if the
    operands do not broadcast to it)."""
    try:
        return np.logical_or.reduce([np.broadcast_to(_nonfinite(np.asarray(x)), shape) for x in _operands(c)
                                     if np.asarray(x).dtype.kind in "fc"] or [np.zeros(shape, bool)])
    except ValueError:
        return None


def _complex_edges(c: Case, shape: tuple):
    """Where an operand has a non-finite part, or (a power) the base is zero, over the result's shape."""
    edges = _operand_nonfinite(c, shape)
    if edges is not None and "pow" in c.step.op:
        edges = edges | _base_zero(c, shape)
    return edges


def _numpy_result(c: Case) -> np.ndarray:
    """NumPy's result of an elementwise complex step (of ``_COMPLEX_EDGE_OPS``) on the step's operands, converted to
    the result's dtype first (as MLX and umx promote a Python scalar to it). floor_divide of complex numbers is the
    plain quotient (as MLX's), which NumPy does not define."""
    op, dtype = c.step.op, np.dtype(c.dtypes[0])
    with np.errstate(all="ignore"):
        if op in ("sign", "reciprocal"):
            return getattr(np, op)(c.inputs[0].astype(dtype))
        if op == "round":
            decimals = c.step.args[1] if len(c.step.args) > 1 else c.step.kwargs.get("decimals", 0)
            return np.round(c.inputs[0].astype(dtype), decimals)
        a, b = (np.asarray(x).astype(dtype) for x in _operands(c))
        if op.startswith(".__r"):
            a, b = b, a
        return np.power(a, b) if "pow" in op else np.divide(a, b)


def _as_numpy_gives(c: Case) -> np.ndarray:
    """Where umx's (first) result is NumPy's for the step's operands."""
    return _same(c.umx[0], np.broadcast_to(_numpy_result(c), c.umx[0].shape))


def _real_power_entries(c: Case) -> np.ndarray:
    """Entries of a complex power whose base is a real negative integer and exponent a real integer, where umx's and
    MLX's results agree in each part within float32's precision of the result's magnitude; MLX's exp(b log a)
    loses about |b log a| float32 ulps (as exp does, see ``_exp_agrees_as_float32``)."""
    a, b = (np.asarray(x).astype(np.complex128) for x in _operands(c))
    if c.step.op == ".__rpow__":
        a, b = b, a
    u, m = c.umx[0], c.mlx[0]
    a, b = np.broadcast_to(a, u.shape), np.broadcast_to(b, u.shape)
    real_int = ((a.imag == 0) & (a.real < 0) & (a.real == np.round(a.real)) & (b.imag == 0)
                & (b.real == np.round(b.real)))
    ok = np.zeros(u.shape, bool)
    with np.errstate(divide="ignore", invalid="ignore"):
        rtol = np.maximum(2e-6, 4 * np.abs(b * np.log(a)) * 2.0**-24)
    for i in zip(*np.nonzero(real_int)):
        ok[i] = _close(u[i], m[i], 0.0, rtol[i] * np.abs(m[i]))
    return ok


def _base_zero(c: Case, shape: tuple) -> np.ndarray:
    """Where the base of a power step is zero, over the result's shape (``__rpow__``'s base is its argument)."""
    a, b = _operands(c)
    return np.broadcast_to((b if c.step.op == ".__rpow__" else a) == 0, shape)


def _bf16(x) -> np.ndarray:
    """``x`` rounded to bfloat16 (to nearest even), as float32."""
    x = np.asarray(x, np.float32)
    bits = x.view(np.uint32)
    rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000).astype(np.uint32).view(np.float32)
    return np.where(np.isnan(x), x, rounded)


def _same(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Where two results hold the same value (NaN as NaN, complex numbers part by part)."""
    if np.iscomplexobj(x) or np.iscomplexobj(y):
        return _same(np.real(x), np.real(y)) & _same(np.imag(x), np.imag(y))
    return (x == y) | (np.isnan(x) & np.isnan(y))


def _bf16_intermediates(c: Case) -> list:
    """Per result, the entries where MLX's value is the one that rounding the intermediate (quotient, scaled value)
    to bfloat16 gives, and umx's the one that computing in float32 and rounding once gives."""
    masks = [None] * len(c.umx)
    op = c.step.op
    with np.errstate(all="ignore"):
        if op in ("floor_divide", ".__floordiv__", "divmod"):
            a, b = (_bf16(x.astype(np.float32)) for x in _operands(c))
            q = a / b
            once, twice = _bf16(np.floor(q)), np.floor(_bf16(q))
        elif op == "round" and len(c.step.args) > 1 and c.step.args[1] != 0:
            x, scale = c.inputs[0].astype(np.float32), 10.0 ** c.step.args[1]
            once = _bf16(np.rint(x * np.float32(scale)) / np.float32(scale))
            twice = _bf16(np.rint(_bf16(x * _bf16(scale))) * _bf16(1 / scale))  # (MLX multiplies by 1 / scale)
        else:
            return masks
    shape = c.umx[0].shape
    masks[0] = np.broadcast_to(_same(c.umx[0], once) & _same(c.mlx[0], twice), shape)
    return masks


def _dtype_arg(c: Case) -> str | None:
    d = c.step.kwargs.get("dtype")
    return d.name if isinstance(d, DT) else None


def _dtype_of(v) -> str | None:
    return v.name if isinstance(v, DT) else None


def _out_of_range(x: np.ndarray, dtype: str) -> np.ndarray:
    """Where floats ``x`` are NaN, infinite or outside the integer ``dtype`` (so that casting them is undefined)."""
    info = np.iinfo(dtype)
    with np.errstate(invalid="ignore"):
        return ~np.isfinite(x) | (x <= info.min - 1.0) | (x >= info.max + 1.0)


def _scatter_out_of_range(c: Case) -> np.ndarray:
    """Where an ``at.`` step on an integer array writes a float value outside the array's type, over the result."""
    x = c.inputs[0]
    index = resolve(np, c.step.args[1], dict(zip(_refs((c.step.args, c.step.kwargs)), c.inputs)))
    positions = np.arange(x.size).reshape(x.shape)[index]
    values = np.broadcast_to(np.asarray(_value_arg(c)).real, positions.shape)
    return np.isin(np.arange(x.size), positions[_out_of_range(values, x.dtype.name)]).reshape(x.shape)


def _shift(c: Case) -> bool:
    return c.kind == "value" and c.step.op in ("left_shift", "right_shift", ".__lshift__", ".__rshift__")


def _shift_counts(c: Case) -> list:
    """The shift counts of a shift step: its second operand (an input array or a Python int)."""
    count = c.step.args[1]
    if isinstance(count, Ref):
        return [c.inputs[-1].astype(np.int64)]
    return [np.asarray(count, np.int64)]


def _agree_modulo_2pi(c: Case) -> bool:
    u, m = c.umx[0], c.mlx[0]
    turns = (u.imag - m.imag) / (2 * np.pi)
    finite = np.isfinite(turns)
    return np.allclose(turns[finite], np.round(turns[finite]), atol=1e-4) and _close(
        u.real, m.real, 1e-4, 1e-4) and _close(np.exp(1j * u.imag), np.exp(1j * m.imag), 1e-4, 1e-4)


def _wrapping(inputs: list) -> np.ndarray:
    """Where a - b leaves the promoted integer type of two integer arrays (a negative unsigned difference
    included), over their broadcast shape; nowhere unless both are integer arrays."""
    a, b = inputs
    shape = np.broadcast_shapes(a.shape, b.shape)
    if a.dtype.kind not in "biu" or b.dtype.kind not in "biu":
        return np.zeros(shape, bool)
    d = np.promote_types(a.dtype, b.dtype)
    info = np.iinfo(d) if d.kind in "iu" else np.iinfo(np.int64)
    b = np.broadcast_to(b.astype(object), shape)
    diff = a.astype(object) - b  # (Python ints: exact)
    if d.kind == "u":
        return np.asarray(diff < 0, bool)
    # (|min| overflows too, and so does abs(b) at the smallest value: MLX's rtol * abs(b) turns negative)
    return np.asarray((diff <= info.min) | (diff > info.max) | (b == info.min), bool)


# the ops of ``Program.function`` that work entry by entry (the others mix entries along the last axis)
_ENTRYWISE = {"sin", "cos", "tanh", "sigmoid", "square", "exp", "negative", "abs", "erf", "arctan", "expm1",
              "stop_gradient", "add", "multiply", "subtract", "maximum", "minimum", "arctan2", "divide", "power",
              "sqrt", "log", "reciprocal", "rsqrt", "greater", "where"}


def _half_limits(c: Case) -> list:
    """Per result of a derivative (grad, value_and_grad, vjp, jvp) in float16 or bfloat16, where the function's
    steps, as MLX computes them, take arctan2 of x and y whose x ** 2 + y ** 2 leaves the type's normal range, or
    rsqrt of an infinity (an overflowed square); None for results not of the arguments' shape. A bad entry spreads
    over its row (the last axis) where the function mixes entries there (reductions, scans, gathers, layout)."""
    step = c.step
    if step.op == "apply" and isinstance(step.args[0], Call) and step.args[0].op in ("grad", "value_and_grad"):
        fn = step.args[0].args[0]
        steps = fn.steps[:-1]  # (the sum that makes it scalar: its derivative spreads nothing)
    elif step.op in ("vjp", "jvp"):
        fn = step.args[0]
        steps = fn.steps
    else:
        return [None] * len(c.umx)
    dtype = next(d for d in c.dtypes if d in ("float16", "bfloat16"))
    info, shape = mlx.finfo(getattr(mlx, dtype)), c.inputs[0].shape
    env = [MLX.array(x, dtype=getattr(mlx, dtype)) for x in c.inputs[:fn.nargs]]
    bad = np.zeros(shape, bool)
    for s in steps:
        env.append(call(MLX, s.op, s.args, s.kwargs, env))
        if s.op == "arctan2":
            y, x = (to_numpy(env[a.i]).astype(np.float64) for a in s.args)
            squares = y * y + x * x
            bad = bad | (squares < info.smallest_normal) | (squares > info.max)
        elif s.op == "rsqrt":
            bad = bad | np.isinf(to_numpy(env[s.args[0].i]))
    if bad.ndim and any(s.op not in _ENTRYWISE for s in steps):
        bad = np.broadcast_to(bad.any(axis=-1, keepdims=True), shape)
    return [bad if u.shape == shape else None for u in c.umx]


def _span(x: np.ndarray) -> int:
    return int(x.max()) - int(x.min()) if x.size else 0


def _fits(value, dtype: str) -> bool:
    if dtype == "bool_":
        return value in (0, 1, 2)
    info = np.iinfo(dtype)
    return info.min <= value <= info.max


def _diagonal_length(shape: tuple, offset: int) -> int:
    rows, cols = shape[0], shape[1]
    return max(0, min(rows, cols - offset) if offset >= 0 else min(rows + offset, cols))


def _min_by_minus_one(c: Case) -> bool:
    """Whether a division step divides the smallest int32 or int64 by -1 (its operands may be Python ints)."""
    x, y = _operands(c)
    smallest = (x == np.iinfo(np.int32).min) | (x == np.iinfo(np.int64).min)
    return x.dtype.kind == "i" and x.dtype.itemsize >= 4 and bool((smallest & (y == -1)).any())


def _index_arrays(index) -> bool:
    """Whether an index holds an array (integer-array indexing rather than slices and integers)."""
    items = index if isinstance(index, tuple) else (index,)
    return any(isinstance(i, (Call, Ref)) for i in items)


# -- running and comparing ---------------------------------------------------------------------------------------
def dtype_name(dtype) -> str:
    name = str(dtype).rsplit(".", 1)[-1]
    return "bool_" if name == "bool" else name


def to_numpy(a) -> np.ndarray:
    """A umx or MLX array as NumPy (bfloat16 as float32, which holds it exactly)."""
    if not hasattr(a, "dtype"):
        return np.asarray(a)
    if dtype_name(a.dtype) == "bfloat16" and not isinstance(a, mx.array):
        a = a.astype(mlx.float32)
    return np.asarray(a).copy(order="C")  # MLX refuses NumPy views with negative strides


class _Mlx:
    """``mlx.core`` with one change: an empty array is made by ``zeros``, not from (empty) NumPy data, whose
    reductions in MLX 0.32.4 now and then never return (they read the missing data's pointer)."""

    def __getattr__(self, name):
        return getattr(mlx, name)

    @staticmethod
    def array(data, dtype=None):
        if isinstance(data, np.ndarray) and data.size == 0:
            return mlx.zeros(data.shape, dtype=dtype or mlx.float32)
        return mlx.array(data, dtype=dtype)


MLX = _Mlx()


class _MlxInputs:
    """Program arrays for MLX: each made from umx's value of it, in its dtype."""

    def __init__(self, values: dict, arrays: list):
        self.values, self.arrays = values, arrays

    def __getitem__(self, i):
        return MLX.array(self.values[i], dtype=getattr(mlx, dtype_name(self.arrays[i].dtype)))


def _refs(v) -> list[int]:
    if isinstance(v, Ref):
        return [v.i]
    if isinstance(v, (list, tuple)):
        return [i for x in v for i in _refs(x)]
    if isinstance(v, dict):
        return [i for x in v.values() for i in _refs(x)]
    if isinstance(v, slice):
        return _refs((v.start, v.stop, v.step))
    return []


def _hung(seed: int, step: Step) -> None:
    sys.stderr.write(f"\nMLX did not finish program {seed}'s step {step!r}: add it to MLX_HANGS\n")
    sys.stderr.flush()
    os._exit(1)  # MLX's eval cannot be interrupted from Python: leave rather than hang the suite


def run_mlx(step: Step, inputs: _MlxInputs, seed: int):
    watchdog = threading.Timer(60.0, _hung, (seed, step))
    watchdog.start()
    try:
        out = flatten(call(MLX, step.op, step.args, step.kwargs, inputs))
        mlx.eval(*[a for a in out if isinstance(a, mlx.array)])
    finally:
        watchdog.cancel()
    return out


def _tolerance(step: Step, dtype: str, inputs: list):
    rtol = _RTOL.get(dtype, 0.0)
    if step.family not in _ACCUMULATE:
        return rtol, rtol  # absolute near zero: sin and cos lose their relative accuracy at their roots
    finite = [np.abs(x[np.isfinite(x)]).max(initial=0.0) for x in inputs if x.dtype.kind in "fc" and x.size]
    size = max([x.size for x in inputs] + [1])
    scale = max([1.0] + [float(f) for f in finite])
    power = 2 if step.op in ("var", "std", "matmul", "tensordot", "inner", "addmm", "kron", "outer") else 1
    return rtol * size, rtol * size * scale**power


def _along(x: np.ndarray, axis):
    return (x.reshape(-1), 0) if axis is None else (x, axis)


def _normalized(step: Step, res: list, inputs: list) -> list:
    """Results with what the op leaves unspecified taken out: order within a partition or a top-k, the signs of
    singular and eigenvectors, the order of general eigenvalues."""
    if step.check == "topk":
        x, axis = _along(res[0], step.kwargs.get("axis", -1))
        return [np.sort(x, axis=axis)]
    if step.check in ("partition", "argpartition"):
        x, axis = _along(res[0], step.kwargs.get("axis", -1))
        if step.check == "argpartition":
            src, _ = _along(inputs[0], step.kwargs.get("axis", -1))
            x = np.take_along_axis(src, x.astype(np.int64), axis)
        kth = np.take(x, [step.args[1]], axis=axis)
        return [np.sort(x, axis=axis), kth]
    if step.check == "decomposition":
        if step.op == "linalg.eigvals":
            return [np.sort_complex(r.reshape(-1)) for r in res]
        if len(res) < 2 or not res[0].size:
            return res
        # a column of the first factor may change sign (with the matching row of the last one)
        first = res[0] if step.op != "linalg.eigh" else res[1]
        pivot = np.take_along_axis(first, np.abs(first).argmax(axis=-2)[..., None, :], axis=-2)
        signs = np.where(pivot < 0, -1, 1)
        if step.op == "linalg.eigh":
            return [res[0], res[1] * signs]
        return [res[0] * signs, *res[1:-1], res[-1] * np.swapaxes(signs, -1, -2)]
    return res


def _close(u: np.ndarray, m: np.ndarray, rtol: float, atol: float) -> bool:
    if u.dtype.kind == "c":
        return _close(u.real, m.real, rtol, atol) and _close(u.imag, m.imag, rtol, atol)
    if u.dtype.kind != "f":
        return np.array_equal(u, m)
    u64, m64 = u.astype(np.float64), m.astype(np.float64)
    nan = np.isnan(u64)
    if not np.array_equal(nan, np.isnan(m64)):
        return False
    inf = np.isinf(u64) | np.isinf(m64)
    if not np.array_equal(u64[inf], m64[inf]):
        return False
    ok = ~(nan | inf)
    return bool(np.all(np.abs(u64[ok] - m64[ok]) <= atol + rtol * np.abs(m64[ok])))


def compare(step: Step, inputs: list, umx_out, mlx_out) -> tuple[str, str] | None:
    """None when the outcomes agree, else (kind, detail)."""
    if isinstance(umx_out, BaseException) or isinstance(mlx_out, BaseException):
        if isinstance(umx_out, BaseException) and isinstance(mlx_out, BaseException):
            return None
        return "raise", f"umx: {umx_out!r:.300}\n      mlx: {mlx_out!r:.300}"
    if len(umx_out) != len(mlx_out):
        return "count", f"{len(umx_out)} results != {len(mlx_out)}"
    for u, m in zip(umx_out, mlx_out):
        if tuple(u.shape) != tuple(m.shape):
            return "shape", f"{tuple(u.shape)} != {tuple(m.shape)}"
        if dtype_name(u.dtype) != dtype_name(m.dtype):
            return "dtype", f"{dtype_name(u.dtype)} != {dtype_name(m.dtype)}"
    return _value_difference(step, inputs, [to_numpy(u) for u in umx_out], [to_numpy(m) for m in mlx_out],
                             [dtype_name(u.dtype) for u in umx_out])


def _value_difference(step: Step, inputs: list, umx_out: list, mlx_out: list, dtypes: list):
    """None when the results' values agree within the tolerance of ``dtypes`` (one per result)."""
    un, mn = _normalized(step, umx_out, inputs), _normalized(step, mlx_out, inputs)
    for k, (u, m) in enumerate(zip(un, mn)):
        rtol, atol = _tolerance(step, dtypes[min(k, len(dtypes) - 1)], inputs)
        if u.shape != m.shape or not _close(u, m, rtol, atol):
            return "value", f"result {k}:\n      umx: {u!r:.600}\n      mlx: {m!r:.600}"
    return None


@dataclass
class Outcome:
    seed: int
    program: Program
    failures: list  # (step index, kind, detail)
    known: list  # (step index, Known)
    steps: int


def check_program(seed: int, stream=None, n_steps: int = 8, families=None) -> Outcome:
    prog = Program(seed, stream, n_steps, families)
    try:
        mx.eval(prog.arrays)
    except Exception:  # noqa: BLE001 - an array that fails to evaluate shows as its step's outcome below
        pass
    values = {}
    for i, a in enumerate(prog.arrays):
        try:
            values[i] = to_numpy(a)
        except Exception as e:  # noqa: BLE001
            values[i] = e
    inputs = _MlxInputs(values, prog.arrays)
    failures, known = [], []
    for n, step in enumerate(prog.steps):
        refs = _refs((step.args, step.kwargs))
        if any(isinstance(values[i], BaseException) for i in refs):
            continue  # an input umx failed to compute: that step is reported already
        umx_out = prog.errors.get(n)
        if umx_out is None:
            umx_out = [values[i] for i in step.outputs]
            failed = next((v for v in umx_out if isinstance(v, BaseException)), None)
            umx_out = failed if failed is not None else [prog.arrays[i] for i in step.outputs]
        step_inputs = [values[i] for i in refs]
        hang = known_difference(Case(step, step_inputs, "hang", None, None, []), MLX_HANGS)
        if hang is not None:
            known.append((n, hang))
            continue
        try:
            mlx_out = run_mlx(step, inputs, seed)
        except Exception as e:  # noqa: BLE001
            mlx_out = e
        diff = compare(step, step_inputs, umx_out, mlx_out)
        if diff is None:
            continue
        dtypes = [] if isinstance(umx_out, BaseException) else [dtype_name(a.dtype) for a in umx_out]
        k = known_difference(Case(step, step_inputs, diff[0], _as_numpy(umx_out), _as_numpy(mlx_out), dtypes))
        if k is not None:
            known.append((n, k))
        else:
            failures.append((n, *diff))
    return Outcome(seed, prog, failures, known, len(prog.steps))


def _as_numpy(out):
    return out if isinstance(out, BaseException) else [to_numpy(a) for a in out]


def describe(out: Outcome) -> str:
    lines = [f"program seed {out.seed} (replay: PYTHONPATH=. python tests/test_mlx_differential.py {out.seed})"]
    bad = {n: (kind, detail) for n, kind, detail in out.failures}
    for n, step in enumerate(out.program.steps):
        made = ", ".join(f"r{i}" for i in step.outputs) or "-"
        lines.append(f"  [{n}] {made} = {step!r}")
        if n in bad:
            lines.append(f"    !! {bad[n][0]}: {bad[n][1]}")
    return "\n".join(lines)


def run_programs(seeds, stream=None, only=None) -> tuple[list[Outcome], Counter, Counter]:
    bad, known, families = [], Counter(), Counter()
    for seed in seeds:
        out = check_program(seed, stream, families=only)
        for step in out.program.steps:
            families[step.family] += 1
        known.update(k.name for _, k in out.known)
        if out.failures:
            bad.append(out)
    return bad, known, families


# -- tests ---------------------------------------------------------------------------------------------------------
def test_programs_agree_with_mlx(device):
    bad, _, _ = run_programs(range(SEED, SEED + N_PROGRAMS), device)
    assert not bad, f"{len(bad)} of {N_PROGRAMS} programs disagree with MLX:\n" + "\n\n".join(
        describe(o) for o in bad[:5])


def test_a_known_difference_is_matched_and_named_once():
    # integer matrix products: umx computes them, MLX refuses; the case is counted, not failed
    out = check_program(SEED, families=("products",), n_steps=40)
    assert not out.failures and "umx-integer-products" in {k.name for _, k in out.known}
    names = [k.name for k in KNOWN + MLX_HANGS]
    assert len(set(names)) == len(names)


if __name__ == "__main__":
    args = sys.argv[1:]
    if args[:1] == ["--count"]:
        n = int(args[1]) if len(args) > 1 else N_PROGRAMS
        only = tuple(args[2].split(",")) if len(args) > 2 else None  # families, e.g. random,index
        bad, known, families = run_programs(range(SEED, SEED + n), only=only)
        print(f"{n} programs, {sum(families.values())} steps: {len(bad)} programs disagree")
        print("steps per family:", dict(sorted(families.items())))
        print("known differences met:", dict(known.most_common()))
        groups = Counter()
        for o in bad:
            for n, kind, detail in o.failures:
                key = (o.program.steps[n].op, kind)
                if not groups[key]:
                    print(f"-- {key} seed {o.seed}: {o.program.steps[n]!r:.300}\n      {detail:.600}")
                groups[key] += 1
        print("disagreements:", dict(groups.most_common()))
    else:
        for seed in map(int, args):
            o = check_program(seed)
            print(describe(o))
            print("known:", [(n, k.name) for n, k in o.known])
