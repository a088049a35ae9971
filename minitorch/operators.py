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
    """Logistic function: 1 / (1 + e^-x), or e^x / (1 + e^x) below 0, so that neither
    overflows; both from one exp, of -|x| (half the code to compile and run)."""
    ex = math.exp(-abs(x))
    return (1.0 if x >= 0.0 else ex) / (1.0 + ex)


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


def minimum(x: float, y: float) -> float:
    """The smaller of x and y, NaN if either is NaN (NumPy's ``minimum``)."""
    if x != x:
        return x
    return x if x < y else y


def greater_share(x: float, y: float) -> float:
    """The part of a gradient that ``maximum(x, y)`` sends to x: 1 if x wins, 1/2 on a
    tie (PyTorch's rule), else 0. ``greater_share(y, x)`` is y's part."""
    if x < y:
        return 0.0
    if x == y:
        return 0.5
    return 1.0


def lesser_share(x: float, y: float) -> float:
    """The part of a gradient that ``minimum(x, y)`` sends to x (see ``greater_share``)."""
    if x > y:
        return 0.0
    if x == y:
        return 0.5
    return 1.0


def le(x: float, y: float) -> float:
    """1.0 if x <= y else 0.0"""
    return 1.0 if x <= y else 0.0


def ge(x: float, y: float) -> float:
    """1.0 if x >= y else 0.0"""
    return 1.0 if x >= y else 0.0


def ne(x: float, y: float) -> float:
    """1.0 if x != y else 0.0 (so 1.0 for a NaN, as in IEEE)"""
    return 1.0 if x != y else 0.0


def same(x: float, y: float) -> float:
    """1.0 if x == y or both are NaN, else 0.0 (finds a NaN maximum's position)."""
    if x == y or (x != x and y != y):
        return 1.0
    return 0.0


def select(c: float, x: float) -> float:
    """x where the condition c is non-zero, else 0.0 (one half of ``where``)."""
    return x if c != 0.0 else 0.0


def select_not(c: float, x: float) -> float:
    """x where the condition c is zero, else 0.0 (the other half of ``where``)."""
    return 0.0 if c != 0.0 else x


def position_if(c: float, position: float) -> float:
    """``position`` where c is non-zero, else inf: a min-reduce then finds the first one."""
    return position if c != 0.0 else math.inf


def tanh(x: float) -> float:
    """Hyperbolic tangent (never overflows)."""
    return math.tanh(x)


def tanh_back_from_output(t: float, d: float) -> float:
    """d * d/dx tanh(x), given t = tanh(x)."""
    return d * (1.0 - t * t)


def sqrt(x: float) -> float:
    """Square root; nan below 0 (and -0.0 at -0.0), as in IEEE."""
    if x < 0.0:
        return math.nan
    return math.sqrt(x)


def sqrt_back_from_output(s: float, d: float) -> float:
    """d * d/dx sqrt(x), given s = sqrt(x): d / 2s, +-inf at 0."""
    if s == 0.0:
        return d * math.inf
    return 0.5 * d / s


def absolute(x: float) -> float:
    """|x| (``abs`` would shadow the builtin in this module)."""
    return abs(x)


def absolute_back(x: float, d: float) -> float:
    """d * sign(x): 0 at 0 (PyTorch's choice), nan at nan."""
    if x > 0.0:
        return d
    if x < 0.0:
        return -d
    if x == 0.0:
        return 0.0
    return x


def pow(x: float, y: float) -> float:  # noqa: A001 - the tensor method's name
    """x ** y with C's and NumPy's rules, in plain Python too.

    Python raises where C returns a value: a negative base with a fractional
    exponent is nan, 0 to a negative power inf (signed for odd integer
    powers), and an overflowing result inf.
    """
    if y == 0.0 or x == 1.0:
        return 1.0
    if x != x or y != y:
        return math.nan
    ax = abs(x)
    if y == math.inf or y == -math.inf:
        if ax == 1.0:
            return 1.0
        return math.inf if (ax > 1.0) == (y > 0.0) else 0.0
    integral = y % 1.0 == 0.0
    odd = integral and y % 2.0 == 1.0
    if ax == 0.0 or ax == math.inf:
        r = math.inf if (ax == 0.0) == (y < 0.0) else 0.0
        return math.copysign(r, x) if odd else r
    if x < 0.0 and not integral:
        return math.nan
    e = y * math.log(ax)  # the log of the result's magnitude
    if e > 1418.0:
        r = math.inf
    elif e > 709.0:  # near overflow, where math.pow raises: square a half power
        h = math.pow(ax, 0.5 * y)
        r = h * h
    else:
        r = math.pow(ax, y)
    return math.copysign(r, x) if odd else r


def times_unless_zero(y: float, p: float) -> float:
    """y * p, but 0 when y is 0: the base gradient y * x**(y-1) of ``pow`` is 0 for y = 0
    even where x**(y-1) is infinite (PyTorch's rule)."""
    if y == 0.0:
        return 0.0
    return y * p


def pow_exponent_grad(x: float, out: float) -> float:
    """d/dy x**y = x**y * ln(x) given out = x**y: 0 at x = 0, nan for a negative base."""
    if x > 0.0:
        return out * math.log(x)
    if x == 0.0:
        return 0.0
    return math.nan


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
