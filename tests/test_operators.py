"""Properties of the scalar operators (contract section 2)."""

from __future__ import annotations

import math
import struct
from collections.abc import Callable

import numba
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from strategies import assert_same_bits

from minitorch import operators
from minitorch.operators import (
    EPS,
    add,
    addLists,
    eq,
    exp,
    id,
    inv,
    inv_back,
    is_close,
    log,
    log_back,
    lt,
    map,
    max,
    mul,
    neg,
    negList,
    prod,
    reduce,
    relu,
    relu_back,
    sigmoid,
    sum,
    zipWith,
)

small_floats = st.floats(min_value=-100, max_value=100, allow_nan=False)
positive_floats = st.floats(min_value=1e-3, max_value=100)
float_lists = st.lists(small_floats, min_size=0, max_size=8)


def assert_close(a: float, b: float) -> None:
    assert abs(a - b) < 1e-2, f"{a} is not close to {b}"


# Exact and basic behaviour -------------------------------------------------


@given(small_floats, small_floats)
def test_same_as_python(x: float, y: float) -> None:
    assert mul(x, y) == x * y
    assert add(x, y) == x + y
    assert neg(x) == -x
    if abs(x) > 1e-5:
        assert_close(inv(x), 1.0 / x)


@given(small_floats)
def test_id_is_exact(x: float) -> None:
    assert id(x) == x


@given(small_floats, small_floats)
def test_lt_eq_are_exact_indicators(x: float, y: float) -> None:
    assert lt(x, y) == (1.0 if x < y else 0.0)
    assert eq(x, y) == (1.0 if x == y else 0.0)
    assert eq(x, x) == 1.0
    assert lt(x, x) == 0.0


@given(small_floats, small_floats)
def test_max_is_exact(x: float, y: float) -> None:
    assert max(x, y) in (x, y)
    assert max(x, y) >= x and max(x, y) >= y


@given(small_floats)
def test_relu_is_exact(x: float) -> None:
    if x > 0:
        assert relu(x) == x
    else:
        assert relu(x) == 0.0


@given(small_floats, small_floats)
def test_relu_back_is_exact(x: float, d: float) -> None:
    if x > 0:
        assert relu_back(x, d) == d
    else:
        assert relu_back(x, d) == 0.0


@given(small_floats, small_floats)
def test_is_close(x: float, y: float) -> None:
    assert is_close(x, x) == 1.0
    assert is_close(x, y) == (1.0 if abs(x - y) < 1e-2 else 0.0)
    assert is_close(x, x + 0.5) == 0.0


def test_log_shift_and_exp() -> None:
    assert EPS == 1e-6
    assert log(1.0) == math.log(1.0 + EPS)
    assert math.isfinite(log(0.0))
    assert exp(2.0) == math.exp(2.0)


@given(positive_floats, small_floats)
def test_back_functions(x: float, d: float) -> None:
    # Relative: near 0 these are large, and log_back may include log's EPS shift.
    assert log_back(x, d) == pytest.approx(d / x, rel=1e-3, abs=1e-9)
    assert inv_back(x, d) == pytest.approx(-d / (x * x), rel=1e-9, abs=1e-9)


# Sigmoid ----------------------------------------------------------------


@given(small_floats)
def test_sigmoid_properties(a: float) -> None:
    s = sigmoid(a)
    assert 0.0 <= s <= 1.0
    assert_close(1.0 - s, sigmoid(-a))
    assert_close(s, 1.0 / (1.0 + math.exp(-a)))


def test_sigmoid_at_zero() -> None:
    assert sigmoid(0.0) == 0.5


def _two_branch_sigmoid(x: float) -> float:
    """The textbook overflow-free form, one exp in each branch."""
    if x >= 0.0:
        return 1.0 / (1.0 + math.exp(-x))
    ex = math.exp(x)
    return ex / (1.0 + ex)


SIGMOID_POINTS = [0.0, -0.0, 1.0, -1.0, 1e-310, -1e-310, 36.7, -36.7, 709.0, -709.0, 745.2,
                  -745.2, 1e308, -1e308, math.inf, -math.inf, math.nan]  # fmt: skip


@given(st.one_of(st.sampled_from(SIGMOID_POINTS), st.floats(allow_nan=True)))
def test_sigmoid_is_the_two_branch_form_bit_for_bit(x: float) -> None:
    """``sigmoid`` computes both branches from one exp of -|x|: the same bits as the
    two-branch form (for x < 0, -|x| is x; NaN, -0.0 and the infinities included)."""
    actual, expected = sigmoid(x), _two_branch_sigmoid(x)
    assert math.isnan(actual) == math.isnan(expected)
    if not math.isnan(expected):
        assert struct.pack("<d", actual) == struct.pack("<d", expected)


@pytest.mark.kernels
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_sigmoid_kernel_is_the_two_branch_form_bit_for_bit(dtype: type) -> None:
    """The same in FastOps kernels, whose exp is ``fast_math``'s (float32 arithmetic for
    float32): both forms compiled into map kernels, over every float32 bit pattern of a
    grid of exponents and the special points."""
    from minitorch import fast_ops

    bits = np.arange(0, 1 << 32, 4099, dtype=np.uint64).astype(np.uint32)
    with np.errstate(over="ignore", invalid="ignore"):  # (1e308 is inf in float32)
        x = np.concatenate([bits.view(np.float32), np.array(SIGMOID_POINTS, np.float32)])
        x = x.astype(dtype)
    results = []
    for fn in (sigmoid, _two_branch_sigmoid):
        engines = fast_ops._elementwise(fn, "map")
        engine = engines.f32() if dtype == np.float32 else engines.f64
        out = np.empty_like(x)
        engine.flat_par(out, x)
        results.append(out)
    assert_same_bits(*results)


@given(small_floats, st.floats(min_value=1e-3, max_value=10))
def test_sigmoid_strictly_increasing(a: float, step: float) -> None:
    # Above ~20, steps of sigmoid fall below the float64 spacing near 1.0.
    if a < 20:
        assert sigmoid(a) < sigmoid(a + step)
    else:
        assert sigmoid(a) <= sigmoid(a + step)


@pytest.mark.parametrize("x", [-100.0, -50.0, 0.0, 50.0, 100.0])
def test_no_overflow_on_range(x: float) -> None:
    for value in (sigmoid(x), exp(x), log(abs(x) + 1.0), relu(x), inv(x + 0.5)):
        assert math.isfinite(value)


# Algebraic properties ---------------------------------------------------


@given(small_floats, small_floats, small_floats)
def test_lt_transitive(a: float, b: float, c: float) -> None:
    if lt(a, b) and lt(b, c):
        assert lt(a, c) == 1.0


@given(small_floats, small_floats)
def test_mul_commutes(x: float, y: float) -> None:
    assert_close(mul(x, y), mul(y, x))


@given(small_floats, small_floats, small_floats)
def test_distribute(x: float, y: float, z: float) -> None:
    assert_close(mul(z, add(x, y)), add(mul(z, x), mul(z, y)))


# Higher-order list functions --------------------------------------------


@given(float_lists)
def test_map_and_neg_list(ls: list[float]) -> None:
    assert map(lambda v: v * 2)(ls) == [v * 2 for v in ls]
    assert negList(ls) == [-v for v in ls]


@given(st.lists(st.tuples(small_floats, small_floats), max_size=8))
def test_zip_with_and_add_lists(pairs: list[tuple[float, float]]) -> None:
    a = [p[0] for p in pairs]
    b = [p[1] for p in pairs]
    assert zipWith(mul)(a, b) == [x * y for x, y in pairs]
    assert addLists(a, b) == [x + y for x, y in pairs]


def test_add_lists_unpacks() -> None:
    x, y = addLists([1.0, 2.0], [3.0, 4.0])
    assert (x, y) == (4.0, 6.0)


def test_reduce_folds_from_start() -> None:
    # Subtraction is not associative, so this pins the order: ((10 - 1) - 2) - 3.
    assert reduce(lambda acc, v: acc - v, 10.0)([1.0, 2.0, 3.0]) == 4.0
    assert reduce(add, 7.0)([]) == 7.0


@given(float_lists, float_lists)
def test_sum_distribute(a: list[float], b: list[float]) -> None:
    n = min(len(a), len(b))
    a, b = a[:n], b[:n]
    assert_close(sum(a) + sum(b), sum(addLists(a, b)))


@given(float_lists)
def test_sum_matches_python(ls: list[float]) -> None:
    assert_close(sum(ls), math.fsum(ls))


def test_sum_empty_and_prod() -> None:
    assert sum([]) == 0
    assert prod([]) == 1
    assert prod((2, 3, 4)) == 24
    assert prod([1.5, 2.0]) == 3.0


# numba compatibility ----------------------------------------------------

ONE_ARG: list[Callable[[float], float]] = [neg, sigmoid, relu, log, exp, id, inv]
TWO_ARG: list[Callable[[float, float], float]] = [
    add,
    mul,
    lt,
    eq,
    is_close,
    relu_back,
    log_back,
    inv_back,
    max,
]


@pytest.mark.parametrize("fn", ONE_ARG, ids=lambda f: f.__name__)
def test_one_arg_compiles_under_njit(fn: Callable[[float], float]) -> None:
    jitted = numba.njit()(fn)
    for x in (-3.5, -0.25, 0.0, 0.75, 2.0):
        if (fn is log and x < 0.0) or (fn is inv and x == 0.0):
            continue
        assert jitted(x) == pytest.approx(fn(x), rel=1e-12, abs=1e-12)


@pytest.mark.parametrize("fn", TWO_ARG, ids=lambda f: f.__name__)
def test_two_arg_compiles_under_njit(fn: Callable[[float, float], float]) -> None:
    jitted = numba.njit()(fn)
    for x, y in ((-3.5, 2.0), (0.5, 0.5), (2.0, -1.25), (1.0, 1.005)):
        assert jitted(x, y) == pytest.approx(fn(x, y), rel=1e-12, abs=1e-12)


def test_user_code_can_njit_from_module() -> None:
    # The course njit-compiles these straight off the module.
    assert numba.njit()(operators.id)(3.0) == 3.0
    assert numba.njit()(operators.eq)(3.0, 3.0) == 1.0
    assert numba.njit()(operators.add)(3.0, 4.0) == 7.0
