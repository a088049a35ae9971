"""Scalar operators: the single source every backend compiles.

Each scalar function uses only arithmetic, ``math`` and if/else, so the same
Python source compiles under ``numba.njit`` (CPU kernels) and
``numba.cuda.jit(device=True)`` (GPU kernels).

Results follow IEEE arithmetic on every backend, as in NumPy: 1/0 is inf,
log(0) is -inf, log(-1) is nan, exp(1000) is inf. Compiled code does that by
itself, but plain Python (SimpleOps, Scalars) raises on those inputs, so the
functions below branch around the cases where ``math`` or ``/`` would raise.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence

EPS = 1e-6
# The largest x for which math.exp(x) is finite; above it Python raises OverflowError.
EXP_MAX = 709.782712893384


def mul(x: float, y: float) -> float:
    """x * y"""
    return x * y


def id(x: float) -> float:  # noqa: A001 - course API name
    """Identity."""
    return x


def add(x: float, y: float) -> float:
    """x + y"""
    return x + y


def sub(x: float, y: float) -> float:
    """x - y (one kernel rather than add and neg)"""
    return x - y


def neg(x: float) -> float:
    """-x"""
    return -x


def lt(x: float, y: float) -> float:
    """1.0 if x < y else 0.0"""
    return 1.0 if x < y else 0.0


def eq(x: float, y: float) -> float:
    """1.0 if x == y else 0.0"""
    return 1.0 if x == y else 0.0


def max(x: float, y: float) -> float:  # noqa: A001 - course API name
    """x if x > y else y"""
    return x if x > y else y


def maximum(x: float, y: float) -> float:
    """The larger of x and y, NaN if either is NaN (NumPy's ``maximum``).

    ``max`` returns y when x is NaN, so a fold with it would drop a NaN or keep
    it depending on where it stands; max reductions use this instead.
    """
    if x != x:
        return x
    return x if x > y else y


def is_close(x: float, y: float) -> float:
    """1.0 if |x - y| < 1e-2 else 0.0"""
    return 1.0 if abs(x - y) < 1e-2 else 0.0


def sigmoid(x: float) -> float:
    """Logistic function, computed so that neither branch overflows."""
    if x >= 0.0:
        return 1.0 / (1.0 + math.exp(-x))
    ex = math.exp(x)
    return ex / (1.0 + ex)


def relu(x: float) -> float:
    """x if x > 0 else 0.0"""
    return x if x > 0.0 else 0.0


def log(x: float) -> float:
    """Natural log, shifted by EPS so that log(0) stays finite; -inf at -EPS, nan below."""
    y = x + EPS
    if y > 0.0:
        return math.log(y)
    if y == 0.0:
        return -math.inf
    return math.nan


def exp(x: float) -> float:
    """e ** x; inf past the largest finite result."""
    if x > EXP_MAX:
        return math.inf
    return math.exp(x)


def log_back(x: float, d: float) -> float:
    """d * d/dx log(x)"""
    y = x + EPS
    if y == 0.0:
        return d * math.inf  # d / +0: +-inf, or nan for d = 0
    return d / y


def inv(x: float) -> float:
    """1 / x; +-inf at +-0."""
    if x == 0.0:
        return math.copysign(math.inf, x)
    return 1.0 / x


def inv_back(x: float, d: float) -> float:
    """d * d/dx (1/x)"""
    x2 = x * x
    if x2 == 0.0:
        return -d * math.inf  # -d / +0: +-inf, or nan for d = 0
    return -d / x2


def relu_back(x: float, d: float) -> float:
    """d * d/dx relu(x)"""
    return d if x > 0.0 else 0.0


def sigmoid_back(x: float, d: float) -> float:
    """d * d/dx sigmoid(x)"""
    s = sigmoid(x)
    return d * s * (1.0 - s)


def sigmoid_back_from_output(s: float, d: float) -> float:
    """d * d/dx sigmoid(x), given s = sigmoid(x): the forward's output is reused."""
    return d * s * (1.0 - s)


def exp_back(x: float, d: float) -> float:
    """d * d/dx exp(x)"""
    if x > EXP_MAX:
        return d * math.inf
    return d * math.exp(x)


# Higher-order list functions ------------------------------------------------


def map(fn: Callable[[float], float]) -> Callable[[Iterable[float]], list[float]]:  # noqa: A001
    """Lift a one-argument function to lists."""

    def _map(ls: Iterable[float]) -> list[float]:
        return [fn(x) for x in ls]

    return _map


def zipWith(  # noqa: N802 - course API name
    fn: Callable[[float, float], float],
) -> Callable[[Iterable[float], Iterable[float]], list[float]]:
    """Lift a two-argument function to pairs of lists."""

    def _zip(ls1: Iterable[float], ls2: Iterable[float]) -> list[float]:
        return [fn(x, y) for x, y in zip(ls1, ls2)]

    return _zip


def reduce(fn: Callable[[float, float], float], start: float) -> Callable[[Iterable[float]], float]:
    """Fold a list from the left, starting at ``start``."""

    def _reduce(ls: Iterable[float]) -> float:
        acc = start
        for x in ls:
            acc = fn(acc, x)
        return acc

    return _reduce


def negList(ls: Iterable[float]) -> list[float]:  # noqa: N802
    """Negate every element."""
    return map(neg)(ls)


def addLists(ls1: Iterable[float], ls2: Iterable[float]) -> list[float]:  # noqa: N802
    """Elementwise sum of two lists."""
    return zipWith(add)(ls1, ls2)


def sum(ls: Iterable[float]) -> float:  # noqa: A001
    """Sum of a list; 0 for an empty list."""
    return reduce(add, 0.0)(ls)


def prod(ls: Sequence[float] | Iterable[float]) -> float:
    """Product of a list (ints give an int); 1 for an empty list."""
    return reduce(mul, 1)(ls)
