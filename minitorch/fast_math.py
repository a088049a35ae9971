"""Vectorisable replacements for ``math`` functions inside FastOps kernels.

``math.exp`` compiles to a call into the C library, one element at a time,
which LLVM cannot vectorise. ``exp`` here is straight-line arithmetic with
no calls or branches (only selects), so a kernel loop over it vectorises; it
agrees with ``math.exp`` to about one unit in the last place. Scalar
functions compiled for FastOps see this module in place of ``math`` (see
``kernel_cache.jit_scalar``); every other ``math`` function is the original.
"""

from __future__ import annotations

import math
import types

import numpy as np
from numba import njit
from numba import types as nbtypes
from numba.extending import intrinsic

_LOG2E = 1.4426950408889634
# ln 2 split so that k * _LN2_HI is exact for the k that occur (Cody and Waite).
_LN2_HI = 0.6931471803691238
_LN2_LO = 1.9082149292705877e-10


@intrinsic
def _float_from_bits(typingctx, bits):  # noqa: ANN001, ANN202
    """Reinterpret an int64 bit pattern as a float64 (no conversion)."""
    sig = nbtypes.float64(nbtypes.int64)

    def codegen(context, builder, signature, args):  # noqa: ANN001, ANN202
        return builder.bitcast(args[0], context.get_value_type(nbtypes.float64))

    return sig, codegen


@njit(inline="always")
def exp(x: float) -> float:
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


def math_module() -> types.ModuleType:
    """A stand-in for ``math`` whose ``exp`` is the vectorisable one above."""
    shim = types.ModuleType("math")
    shim.__dict__.update(math.__dict__)
    shim.exp = exp
    return shim
