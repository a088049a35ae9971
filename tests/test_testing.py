"""The shared reference functions (contract section 10)."""

from __future__ import annotations

import pytest

from minitorch import operators
from minitorch.scalar import Scalar
from minitorch.testing import MathTest, MathTestVariable

ONE_ARG = [
    "addConstant",
    "complex",
    "cube",
    "div",
    "exp",
    "explog",
    "inv",
    "log",
    "multConstant",
    "neg",
    "relu",
    "sig",
    "square",
    "subConstant",
]
TWO_ARG = ["add2", "div2", "eq2", "gt2", "lt2", "mul2"]
RED_ARG = ["mean_full_red", "mean_red", "sum_red"]


@pytest.mark.parametrize("cls", [MathTest, MathTestVariable])
def test_tests_lists_exact_names(cls: type[MathTest]) -> None:
    one, two, red = cls._tests()
    assert [n for n, _ in one] == ONE_ARG
    assert [n for n, _ in two] == TWO_ARG
    assert [n for n, _ in red] == RED_ARG


def test_public_callables_are_exactly_the_listed_ones() -> None:
    for cls in (MathTest, MathTestVariable):
        public = [k for k in dir(cls) if not k.startswith("_") and callable(getattr(cls, k))]
        assert sorted(public) == sorted(ONE_ARG + TWO_ARG + RED_ARG)


def test_tests_looks_functions_up_on_cls() -> None:
    one, _, _ = MathTestVariable._tests()
    assert dict(one)["sig"] is MathTestVariable.sig
    assert dict(one)["neg"] is MathTest.neg  # inherited


def test_comp_testing_pairs_float_then_variable() -> None:
    lists = MathTestVariable._comp_testing()
    for triples, names in zip(lists, (ONE_ARG, TWO_ARG, RED_ARG)):
        assert [t[0] for t in triples] == names
        for name, float_fn, var_fn in triples:
            assert float_fn is getattr(MathTest, name)
            assert var_fn is getattr(MathTestVariable, name)


def test_float_versions() -> None:
    assert MathTest.div(10.0) == pytest.approx(2.0)
    assert MathTest.inv(0.5) == pytest.approx(0.25)
    assert MathTest.relu(-6.0) == 0.0
    assert MathTest.gt2(1.0, 2.0) == 1.0 and MathTest.lt2(1.0, 2.0) == 0.0
    assert MathTest.eq2(6.5, 1.0) == 1.0
    assert MathTest.mean_red([1.0, 2.0, 6.0]) == 3.0
    assert MathTest.sum_red([1.0, 2.0, 6.0]) == 9.0
    expected = operators.log(operators.sigmoid((operators.relu(0.0) * 6 + 5) * 10)) / 50
    assert MathTest.complex(-0.8) == expected


def test_variable_versions_on_scalars() -> None:
    one, two, _ = MathTestVariable._comp_testing()
    for name, float_fn, var_fn in one:
        assert var_fn(Scalar(0.7)).data == pytest.approx(float_fn(0.7), abs=1e-9), name
    for name, float_fn, var_fn in two:
        got = var_fn(Scalar(0.7), Scalar(-1.3)).data
        assert got == pytest.approx(float_fn(0.7, -1.3), abs=1e-9), name
