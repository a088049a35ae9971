"""Scalar code inside FastOps kernels: a vectorisable ``exp``, and float32 variants.

``math.exp`` compiles to a call into the C library, one element at a time,
which LLVM cannot vectorise. ``exp`` here is straight-line arithmetic with
no calls or branches (only selects), so a kernel loop over it vectorises; it
is written once per precision (a float32 argument gets the float32 version,
anything else the float64 one) and agrees with the C library to within a unit
or two in the last place. Scalar functions compiled for FastOps see this module
in place of ``math`` (see ``kernel_cache.jit_scalar``); every other ``math``
function is the original.

Numba types a Python literal as float64 (or int64), and ``float32 * float64``
is float64, so ``lambda x: 2.0 * x`` run on float32 data would compute in
float64 and round back on every store. ``float32_variant`` rewrites a scalar
function so that its numbers are float32 (PyTorch's "weak" Python scalars);
FastOps compiles its float32 kernels with that variant (``float32_or``), and
``by_dtype`` is a stand-in that picks it when every argument is float32.
"""

from __future__ import annotations

import math
import types
from collections.abc import Callable
from typing import Any

import numpy as np
from numba import njit
from numba import types as nbtypes
from numba.core.errors import NumbaError
from numba.extending import intrinsic, overload

# ruff: noqa: ANN001, ANN202 - numba typing and lowering callbacks

_LOG2E = 1.4426950408889634
# ln 2 split so that k * _LN2_HI is exact for the k that occur (Cody and Waite).
_LN2_HI = 0.6931471803691238
_LN2_LO = 1.9082149292705877e-10

# The same in float32: _LN2_HI_32 has 9 significant bits, so k * _LN2_HI_32 is
# exact for |k| < 2**15. Module-level numpy scalars are float32 constants to numba.
_LOG2E_32 = np.float32(_LOG2E)
_LN2_HI_32 = np.float32(0.693359375)
_LN2_LO_32 = np.float32(-2.12194440e-4)
_HALF_32 = np.float32(0.5)
_ONE_32 = np.float32(1.0)
# Beyond these, expf is inf (ln(FLT_MAX) = 88.72) or 0 (below the least subnormal).
_MAX_32 = np.float32(89.0)
_MIN_32 = np.float32(-104.0)
# 1/n! for n = 7 .. 2: the Taylor polynomial of degree 7 is exact to 5e-9 on |r| <= ln2/2.
_TAYLOR_32 = tuple(np.float32(1.0 / math.factorial(n)) for n in range(7, 1, -1))
# 1/n! for n = 13 .. 2, as _exp64 spells them out (for ``exp_numpy``).
_TAYLOR_64 = tuple(1.0 / math.factorial(n) for n in range(13, 1, -1))


@intrinsic
def _float_from_bits(typingctx, bits):
    """Reinterpret an int64 bit pattern as a float64 (no conversion)."""
    sig = nbtypes.float64(nbtypes.int64)

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], context.get_value_type(nbtypes.float64))

    return sig, codegen


@intrinsic
def _float32_from_bits(typingctx, bits):
    """Reinterpret the low 32 bits of an int64 as a float32 (no conversion)."""
    sig = nbtypes.float32(nbtypes.int64)

    def codegen(context, builder, signature, args):
        low = builder.trunc(args[0], context.get_value_type(nbtypes.int32))
        return builder.bitcast(low, context.get_value_type(nbtypes.float32))

    return sig, codegen


@njit(inline="always")
def _exp64(x: float) -> float:
    """e ** x: Cody-Waite reduction, a degree-13 polynomial, and 2**k built from bits."""
    xc = x if x < 710.0 else 710.0
    xc = xc if xc > -746.0 else -746.0
    k = math.floor(xc * _LOG2E + 0.5)
    r = xc - k * _LN2_HI - k * _LN2_LO
    p = 1.0 / 6227020800.0
    p = p * r + 1.0 / 479001600.0
    p = p * r + 1.0 / 39916800.0
    p = p * r + 1.0 / 3628800.0
    p = p * r + 1.0 / 362880.0
    p = p * r + 1.0 / 40320.0
    p = p * r + 1.0 / 5040.0
    p = p * r + 1.0 / 720.0
    p = p * r + 1.0 / 120.0
    p = p * r + 1.0 / 24.0
    p = p * r + 1.0 / 6.0
    p = p * r + 0.5
    p = p * r + 1.0
    p = p * r + 1.0
    # 2**k as two normal powers of two, so results near overflow and in the
    # subnormal range still come out right (or as inf / 0).
    ki = np.int64(k)
    half = ki >> 1
    scale1 = _float_from_bits((half + 1023) << 52)
    scale2 = _float_from_bits((ki - half + 1023) << 52)
    result = p * scale1 * scale2
    return result if x == x else x


@njit(inline="always")
def _exp32(x: np.float32) -> np.float32:
    """e ** x in float32 arithmetic throughout: the same scheme as ``_exp64``."""
    xc = x if x < _MAX_32 else _MAX_32
    xc = xc if xc > _MIN_32 else _MIN_32
    k = np.floor(xc * _LOG2E_32 + _HALF_32)
    r = xc - k * _LN2_HI_32 - k * _LN2_LO_32
    c7, c6, c5, c4, c3, c2 = _TAYLOR_32
    p = c7
    p = p * r + c6
    p = p * r + c5
    p = p * r + c4
    p = p * r + c3
    p = p * r + c2
    p = p * r + _ONE_32
    p = p * r + _ONE_32
    ki = np.int64(k)
    half = ki >> 1
    scale1 = _float32_from_bits((half + 127) << 23)
    scale2 = _float32_from_bits((ki - half + 127) << 23)
    result = p * scale1 * scale2
    return result if x == x else x


def exp(x: float) -> float:
    """e ** x inside kernels, in the precision of ``x`` (``math.exp`` from Python)."""
    return math.exp(x)


def exp_numpy(x: np.ndarray) -> np.ndarray:
    """``exp`` of a float64 or float32 array in NumPy, bit for bit the kernels' (a stand-in
    for a kernel not compiled yet): ``_exp64`` or ``_exp32`` operation by operation, in
    the same order and precision (kernels compile without contraction into fused
    multiply-adds), selections by ``np.where`` as the kernels' ``a if c else b``."""
    f32 = x.dtype == np.float32
    if f32:
        top, bottom, log2e, half = _MAX_32, _MIN_32, _LOG2E_32, _HALF_32
        ln2_hi, ln2_lo, coefficients = _LN2_HI_32, _LN2_LO_32, (*_TAYLOR_32, _ONE_32, _ONE_32)
    else:
        x = x.astype(np.float64, copy=False)
        top, bottom, log2e, half, ln2_hi, ln2_lo = 710.0, -746.0, _LOG2E, 0.5, _LN2_HI, _LN2_LO
        coefficients = (*_TAYLOR_64, 1.0, 1.0)
    xc = np.where(x < top, x, top)
    xc = np.where(xc > bottom, xc, bottom)
    k = np.floor(xc * log2e + half)
    ki = k.astype(np.int64)
    if not f32:
        k = ki.astype(np.float64)  # (``math.floor`` is an int to numba)
    r = xc - k * ln2_hi - k * ln2_lo
    p = coefficients[0] * r + coefficients[1]
    for c in coefficients[2:]:
        p *= r
        p += c
    half_k = ki >> 1
    bias, shift, ints = (127, 23, np.int32) if f32 else (1023, 52, np.int64)
    scale1 = ((half_k + bias) << shift).astype(ints).view(x.dtype)
    scale2 = ((ki - half_k + bias) << shift).astype(ints).view(x.dtype)
    result = p * scale1 * scale2
    return np.where(x == x, result, x)


@overload(exp)
def _exp_for(x):
    if isinstance(x, nbtypes.Float) and x.bitwidth == 32:
        return lambda x: _exp32(x)
    if isinstance(x, (nbtypes.Float, nbtypes.Integer, nbtypes.Boolean)):
        return lambda x: _exp64(float(x))
    return None


def math_module() -> types.ModuleType:
    """A stand-in for ``math`` whose ``exp`` is the vectorisable one above."""
    shim = types.ModuleType("math")
    shim.__dict__.update(math.__dict__)
    shim.exp = exp
    return shim


# float32 variants of scalar functions -------------------------------------------


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(
        value, (bool, np.bool_)
    )


def _float32_code(code: types.CodeType) -> types.CodeType:
    consts = tuple(
        np.float32(c) if _is_number(c) else _float32_code(c) if isinstance(c, types.CodeType) else c
        for c in code.co_consts
    )
    return code.replace(co_consts=consts)


def _float32_math(module: types.ModuleType) -> types.ModuleType:
    """A copy of a ``math`` module (or of the stand-in above) whose constants
    (``inf``, ``nan``, ``pi``, ``e``, ``tau``) are float32: numba freezes
    ``math.inf`` as a float64, so ``d * math.inf`` on float32 ``d`` would be
    float64 arithmetic."""
    shim = types.ModuleType(module.__name__)
    shim.__dict__.update(module.__dict__)
    for name, value in module.__dict__.items():
        if isinstance(value, float):
            setattr(shim, name, np.float32(value))
    return shim


def float32_variant(py: types.FunctionType) -> types.FunctionType:
    """``py`` with its numbers as float32: literals, and the numeric globals,
    closure values and defaults it reads, and the constants of the ``math``
    module it reads. Its other globals are unchanged."""
    code = _float32_code(py.__code__)
    new_globals = dict(py.__globals__)
    for name in code.co_names:
        value = new_globals.get(name)
        if _is_number(value):
            new_globals[name] = np.float32(value)
        elif isinstance(value, types.ModuleType) and value.__name__ == "math":
            new_globals[name] = _float32_math(value)
    closure = tuple(
        types.CellType(np.float32(cell.cell_contents)) if _is_number(cell.cell_contents) else cell
        for cell in py.__closure__ or ()
    )
    defaults = py.__defaults__
    if defaults is not None:
        defaults = tuple(np.float32(d) if _is_number(d) else d for d in defaults)
    clone = types.FunctionType(code, new_globals, py.__name__, defaults, closure or None)
    clone.__qualname__ = py.__qualname__
    clone.__module__ = py.__module__
    clone.__kwdefaults__ = py.__kwdefaults__
    return clone


def _all_float32(args: tuple[nbtypes.Type, ...]) -> bool:
    return bool(args) and all(isinstance(a, nbtypes.Float) and a.bitwidth == 32 for a in args)


def _fails_on(fn: Any, args: tuple[nbtypes.Type, ...]) -> bool:
    """True when the compiled function ``fn`` does not compile for ``args``."""
    try:
        fn.get_call_template(args, {})  # compiles it (defaults folded in)
    except NumbaError:
        return True
    return False


def float32_or(make_fn32: Callable[[], Any], make_fn64: Callable[[], Any], arity: int,
               compiles: bool | None = None) -> Any:  # fmt: skip
    """The scalar function for kernels on float32 operands: the float32 variant
    ``make_fn32()`` builds, or ``make_fn64()`` where that variant does not compile
    on float32 arguments, or for arities other than 1 and 2 (``by_dtype``'s choice
    for all-float32 arguments, made once instead of in every kernel). Finding out
    compiles the variant (some 50 ms), so a caller that knows passes ``compiles``."""
    if arity in (1, 2) and compiles is not False:
        fn32 = make_fn32()
        if compiles or float32_compiles(fn32, arity):
            return fn32
    return make_fn64()


def float32_compiles(fn32: Any, arity: int) -> bool:
    """Whether ``float32_or`` takes the float32 variant ``fn32`` of a function of
    ``arity`` arguments (it compiles ``fn32`` to find out)."""
    return arity in (1, 2) and not _fails_on(fn32, (nbtypes.float32,) * arity)


def by_dtype(fn64: Any, make_fn32: Callable[[], Any], arity: int) -> Any:
    """A kernel-callable stand-in for a scalar function of ``arity`` arguments
    that runs ``fn64`` (a compiled function), or on all-float32 arguments the
    compiled function ``make_fn32()`` builds on first need. A float32 variant
    that does not compile (a literal used as an int, say ``range(2)``) falls
    back to ``fn64``. Arities other than 1 and 2 get ``fn64`` itself."""
    variants: dict[str, Any] = {}

    def pick(args: tuple[nbtypes.Type, ...]) -> Any:
        if not _all_float32(args):
            return fn64
        if "f32" not in variants:
            variants["f32"] = make_fn32()
        return fn64 if _fails_on(variants["f32"], args) else variants["f32"]

    if arity == 1:

        def scalar1(x):
            return fn64(x)

        @overload(scalar1)
        def _typed1(x):
            impl = pick((x,))
            return lambda x: impl(x)

        return scalar1
    if arity == 2:

        def scalar2(x, y):
            return fn64(x, y)

        @overload(scalar2)
        def _typed2(x, y):
            impl = pick((x, y))
            return lambda x, y: impl(x, y)

        return scalar2
    return fn64
