"""Reference functions shared by the float, Scalar and Tensor test suites.

``MathTest`` holds float versions built on ``operators``; ``MathTestVariable``
overrides the ones that must call methods on Scalars or Tensors. Every public
callable is collected by ``_tests()``, so adding one adds a test case.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar

from . import operators

A = TypeVar("A")

Named = tuple[str, Callable[..., Any]]
Paired = tuple[str, Callable[..., Any], Callable[..., Any]]


class MathTest(Generic[A]):
    """Float reference implementations."""

    @staticmethod
    def neg(a: A) -> A:
        return operators.neg(a)

    @staticmethod
    def addConstant(a: A) -> A:  # noqa: N802 - course API name
        return operators.add(a, 5)

    @staticmethod
    def square(a: A) -> A:
        return operators.mul(a, a)

    @staticmethod
    def cube(a: A) -> A:
        return operators.mul(operators.mul(a, a), a)

    @staticmethod
    def subConstant(a: A) -> A:  # noqa: N802 - course API name
        return operators.add(a, -5)

    @staticmethod
    def multConstant(a: A) -> A:  # noqa: N802 - course API name
        return operators.mul(a, 5)

    @staticmethod
    def div(a: A) -> A:
        return operators.mul(a, 0.2)

    @staticmethod
    def inv(a: A) -> A:
        return operators.inv(a + 3.5)

    @staticmethod
    def sig(a: A) -> A:
        return operators.sigmoid(a)

    @staticmethod
    def log(a: A) -> A:
        return operators.log(a + 100000)

    @staticmethod
    def relu(a: A) -> A:
        return operators.relu(a + 5.5)

    @staticmethod
    def exp(a: A) -> A:
        return operators.exp(a - 200)

    @staticmethod
    def explog(a: A) -> A:
        return operators.log(a + 100000) + operators.exp(a - 200)

    @staticmethod
    def add2(a: A, b: A) -> A:
        return operators.add(a, b)

    @staticmethod
    def mul2(a: A, b: A) -> A:
        return operators.mul(a, b)

    @staticmethod
    def div2(a: A, b: A) -> A:
        # ``/`` rather than ``operators.inv``: MathTestVariable inherits this for
        # Scalars and Tensors, and operators take floats only.
        return operators.mul(a, 1.0 / (b + 5.5))

    @staticmethod
    def gt2(a: A, b: A) -> A:
        return operators.lt(b, a + 1.2)

    @staticmethod
    def lt2(a: A, b: A) -> A:
        return operators.lt(a + 1.2, b)

    @staticmethod
    def eq2(a: A, b: A) -> A:
        return operators.eq(a, b + 5.5)

    @staticmethod
    def sum_red(a: Any) -> Any:
        return operators.sum(a)

    @staticmethod
    def mean_red(a: Any) -> Any:
        return operators.sum(a) / float(len(a))

    @staticmethod
    def mean_full_red(a: Any) -> Any:
        return operators.sum(a) / float(len(a))

    @staticmethod
    def complex(a: A) -> A:
        return (
            operators.log(
                operators.sigmoid(operators.relu(operators.relu(a * 10 + 7) * 6 + 5) * 10)
            )
            / 50
        )

    @classmethod
    def _tests(cls) -> tuple[list[Named], list[Named], list[Named]]:
        """``(name, fn)`` lists: one-argument, two-argument and reductions.

        Names come from ``dir(MathTest)`` (alphabetical); functions from ``cls``.
        """
        one_arg: list[Named] = []
        two_arg: list[Named] = []
        red_arg: list[Named] = []
        for name in dir(MathTest):
            if name.startswith("_") or not callable(getattr(MathTest, name)):
                continue
            entry = (name, getattr(cls, name))
            if name.endswith("2"):
                two_arg.append(entry)
            elif name.endswith("red"):
                red_arg.append(entry)
            else:
                one_arg.append(entry)
        return one_arg, two_arg, red_arg


class MathTestVariable(MathTest):
    """Scalar and Tensor versions, using methods and operators."""

    @staticmethod
    def inv(a: Any) -> Any:
        return 1.0 / (a + 3.5)

    @staticmethod
    def sig(a: Any) -> Any:
        return a.sigmoid()

    @staticmethod
    def log(a: Any) -> Any:
        return (a + 100000).log()

    @staticmethod
    def relu(a: Any) -> Any:
        return (a + 5.5).relu()

    @staticmethod
    def exp(a: Any) -> Any:
        return (a - 200).exp()

    @staticmethod
    def explog(a: Any) -> Any:
        return (a + 100000).log() + (a - 200).exp()

    @staticmethod
    def sum_red(a: Any) -> Any:
        return a.sum(0)

    @staticmethod
    def mean_red(a: Any) -> Any:
        return a.mean(0)

    @staticmethod
    def mean_full_red(a: Any) -> Any:
        return a.mean()

    @staticmethod
    def eq2(a: Any, b: Any) -> Any:
        return a == (b + 5.5)

    @staticmethod
    def gt2(a: Any, b: Any) -> Any:
        return a + 1.2 > b

    @staticmethod
    def lt2(a: Any, b: Any) -> Any:
        return a + 1.2 < b

    @staticmethod
    def complex(a: Any) -> Any:
        return (((a * 10 + 7).relu() * 6 + 5).relu() * 10).sigmoid().log() / 50

    @classmethod
    def _comp_testing(cls) -> tuple[list[Paired], list[Paired], list[Paired]]:
        """``(name, float_fn, variable_fn)`` lists, paired by position."""

        def pair(mine: list[Named], ref: list[Named]) -> list[Paired]:
            return [(name, float_fn, fn) for (name, fn), (_, float_fn) in zip(mine, ref)]

        one_arg, two_arg, red_arg = cls._tests()
        one_ref, two_ref, red_ref = MathTest._tests()
        return pair(one_arg, one_ref), pair(two_arg, two_ref), pair(red_arg, red_ref)
