"""Scalars and scalar autodiff (contract section 4)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from strategies import NEAR_KINK

from minitorch import operators
from minitorch.autodiff import Context
from minitorch.scalar import Scalar, ScalarHistory, derivative_check
from minitorch.scalar_functions import Mul, ScalarFunction
from minitorch.testing import MathTestVariable

small_floats = st.floats(min_value=-100, max_value=100, allow_nan=False)
small_scalars = small_floats.map(Scalar)

one_arg, two_arg, _ = MathTestVariable._comp_testing()


def assert_close(a: float, b: float) -> None:
    assert abs(a - b) < 1e-2, f"{a} is not close to {b}"


def ids(cases: list[tuple[str, Callable, Callable]]) -> list[str]:
    return [name for name, _, _ in cases]


# Construction and attributes --------------------------------------------


def test_construction() -> None:
    x = Scalar(3, name="x")
    assert x.data == 3.0 and isinstance(x.data, float)
    assert x.derivative is None
    assert x.name == "x"
    assert x.is_leaf() and not x.is_constant()
    assert Scalar(1.0).unique_id != Scalar(1.0).unique_id


def test_default_histories_are_fresh() -> None:
    a, b = Scalar(1.0), Scalar(2.0)
    assert a.history is not None and a.history is not b.history
    assert a.history.last_fn is None and a.history.inputs == ()


def test_scalar_history_forms() -> None:
    ctx = Context()
    x = Scalar(1.0)
    h = ScalarHistory(Mul, ctx=ctx, inputs=(x, x))
    assert (h.last_fn, h.ctx, h.inputs) == (Mul, ctx, (x, x))
    assert ScalarHistory() == ScalarHistory(None, None, ())


def test_hash_and_bool() -> None:
    x, y = Scalar(1.0), Scalar(1.0)
    assert len({x, y}) == 2
    assert bool(Scalar(2.0)) and not bool(Scalar(0.0))
    assert bool(x == y) and not bool(x < y)


# Forward values -----------------------------------------------------------


@given(small_floats, small_floats)
def test_binary_ops_match_operators(a: float, b: float) -> None:
    x, y = Scalar(a), Scalar(b)
    assert_close((x + y).data, operators.add(a, b))
    assert_close((x - y).data, a - b)
    assert_close((x * y).data, operators.mul(a, b))
    assert (x < y).data == operators.lt(a, b)
    assert (x > y).data == operators.lt(b, a)
    assert (x == y).data == operators.eq(a, b)
    if abs(b) > 1e-3:
        assert_close((x / y).data, a / b)


@given(small_floats)
def test_unary_ops_match_operators(a: float) -> None:
    x = Scalar(a)
    assert (-x).data == operators.neg(a)
    assert_close(x.sigmoid().data, operators.sigmoid(a))
    assert_close(x.relu().data, operators.relu(a))
    assert_close(x.exp().data, operators.exp(a))
    if a > 0:
        assert_close(x.log().data, operators.log(a))


@given(small_floats, small_floats)
def test_numbers_on_either_side(a: float, b: float) -> None:
    x = Scalar(a)
    assert_close((x + b).data, a + b)
    assert_close((b + x).data, b + a)
    assert_close((x - b).data, a - b)
    assert_close((b - x).data, b - a)
    assert_close((x * b).data, a * b)
    assert_close((b * x).data, b * a)
    assert (x < b).data == operators.lt(a, b)
    assert (b < x).data == operators.lt(b, a)
    if abs(b) > 1e-3:
        assert_close((x / b).data, a / b)
    if abs(a) > 1e-3:
        assert_close((b / x).data, b / a)


@pytest.mark.parametrize("v", [1e5, -1e5])
def test_large_magnitudes(v: float) -> None:
    x, y = Scalar(v), Scalar(v)
    assert (x + y).data == 2 * v
    assert (x * y).data == v * v


@pytest.mark.parametrize("name,fn,scalar_fn", one_arg, ids=ids(one_arg))
@given(a=small_floats)
def test_one_arg_matches_float(name: str, fn: Callable, scalar_fn: Callable, a: float) -> None:
    assume(not (name in NEAR_KINK and NEAR_KINK[name](a)))
    assert_close(scalar_fn(Scalar(a)).data, fn(a))


@pytest.mark.parametrize("name,fn,scalar_fn", two_arg, ids=ids(two_arg))
@given(a=small_floats, b=small_floats)
def test_two_arg_matches_float(
    name: str, fn: Callable, scalar_fn: Callable, a: float, b: float
) -> None:
    assume(not (name in NEAR_KINK and NEAR_KINK[name](a, b)))
    assert_close(scalar_fn(Scalar(a), Scalar(b)).data, fn(a, b))


# Derivatives ------------------------------------------------------------


@pytest.mark.parametrize("name,fn,scalar_fn", one_arg, ids=ids(one_arg))
@given(a=small_floats)
def test_one_arg_derivative(name: str, fn: Callable, scalar_fn: Callable, a: float) -> None:
    assume(not (name in NEAR_KINK and NEAR_KINK[name](a)))
    x = Scalar(a)
    derivative_check(scalar_fn, x)
    assert x.derivative is not None


@pytest.mark.parametrize("name,fn,scalar_fn", two_arg, ids=ids(two_arg))
@given(a=small_floats, b=small_floats)
def test_two_arg_derivative(
    name: str, fn: Callable, scalar_fn: Callable, a: float, b: float
) -> None:
    assume(not (name in NEAR_KINK and NEAR_KINK[name](a, b)))
    x, y = Scalar(a), Scalar(b)
    derivative_check(scalar_fn, x, y)
    assert x.derivative is not None and y.derivative is not None


class WrongSquare(ScalarFunction):
    """x * x with a deliberately wrong derivative."""

    @staticmethod
    def forward(ctx: Context, a: float) -> float:
        return a * a

    @staticmethod
    def backward(ctx: Context, d_output: float) -> float:
        return 3.0 * d_output


def test_derivative_check_catches_a_wrong_backward() -> None:
    with pytest.raises(AssertionError):
        derivative_check(WrongSquare.apply, Scalar(2.0))


def test_backward_wraps_bare_float() -> None:
    ctx = Context()
    assert WrongSquare._backward(ctx, 2.0) == (6.0,)
    assert WrongSquare._forward(ctx, 3.0) == 9.0


def test_chain_rule_one_pair_per_input() -> None:
    x, y = Scalar(2.0), Scalar(5.0)
    z = x * y
    (x_in, dx), (y_in, dy) = z.chain_rule(3.0)
    assert x_in is x and y_in is y
    assert (dx, dy) == (15.0, 6.0)


def test_chain_rule_counts_repeats() -> None:
    x = Scalar(3.0)
    pairs = list((x * x).chain_rule(1.0))
    assert len(pairs) == 2
    assert all(v is x and d == 3.0 for v, d in pairs)


def test_chain_rule_wraps_numbers() -> None:
    x = Scalar(3.0)
    pairs = list((x + 4).chain_rule(2.0))
    assert len(pairs) == 2
    assert pairs[0][0] is x
    assert isinstance(pairs[1][0], Scalar) and pairs[1][0].data == 4.0
    assert [d for _, d in pairs] == [2.0, 2.0]


def test_chain_rule_values_are_backward_outputs() -> None:
    x = Scalar(0.3)
    z = x.sigmoid()
    ((inp, d),) = z.chain_rule(2.0)
    s = operators.sigmoid(0.3)
    assert inp is x and d == 2.0 * s * (1.0 - s)


@given(small_floats)
def test_accumulates_over_repeated_uses(a: float) -> None:
    x = Scalar(a)
    y = x * x + x * 3.0 + x
    y.backward()
    assert x.derivative == pytest.approx(2 * a + 4, abs=1e-9)


def test_shared_intermediate_node() -> None:
    x = Scalar(2.0)
    h = x * x  # used twice below
    out = h * h + h
    out.backward()
    # out = x^4 + x^2, so d/dx = 4x^3 + 2x
    assert x.derivative == pytest.approx(4 * 8 + 4)


def test_backward_seed_and_repeated_backward() -> None:
    x = Scalar(1.5)
    y = x * 2.0
    y.backward(3.0)
    assert x.derivative == 6.0
    y.backward()
    assert x.derivative == 8.0  # accumulates: 6 + 2


@pytest.mark.parametrize(
    "compare",
    [lambda x, y: x < y, lambda x, y: x > y, lambda x, y: x == y],
    ids=["lt", "gt", "eq"],
)
def test_zero_derivative_through_comparisons(compare: Callable) -> None:
    x, y = Scalar(1.0), Scalar(2.0)
    (compare(x, y) * 5.0 + x).backward()
    assert x.derivative == 1.0
    assert y.derivative == 0.0


def test_numbers_on_left_get_derivatives() -> None:
    x = Scalar(2.0)
    (10.0 / x - 1.0 - x).backward()
    assert x.derivative == pytest.approx(-10.0 / 4.0 - 1.0)
