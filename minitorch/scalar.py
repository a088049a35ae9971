"""Scalar: a float that records how it was computed, for reverse-mode autodiff."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TypeAlias

import numpy as np

from .autodiff import Context, backpropagate, central_difference
from .scalar_functions import (
    EQ,
    LT,
    Add,
    Exp,
    Inv,
    Log,
    Mul,
    Neg,
    ReLU,
    ScalarFunction,
    Sigmoid,
)

ScalarLike: TypeAlias = "float | int | Scalar"


@dataclass
class ScalarHistory:
    """The function, context and inputs that produced a Scalar.

    An empty history (``last_fn`` None) marks a leaf, a value the user made.
    """

    last_fn: type[ScalarFunction] | None = None
    ctx: Context | None = None
    inputs: Sequence[Scalar] = ()


_ids = itertools.count(1)


class Scalar:
    """A float in a computation graph.

    ``history`` is None only for constants; every Scalar built here is a leaf
    or the output of a ``ScalarFunction``, so backward reaches all of them.
    """

    def __init__(
        self, v: float, back: ScalarHistory | None = None, name: str | None = None
    ) -> None:
        self.data = float(v)
        # A fresh history per Scalar: user-made Scalars are leaves, never constants.
        self.history: ScalarHistory | None = ScalarHistory() if back is None else back
        self.derivative: float | None = None
        self.unique_id: int = next(_ids)
        self.name = name if name is not None else str(self.unique_id)

    def __repr__(self) -> str:
        return f"Scalar({self.data})"

    def __hash__(self) -> int:
        # ``__eq__`` builds a Scalar, so hash by identity like ``object``.
        return id(self)

    def __bool__(self) -> bool:
        return bool(self.data)

    # Arithmetic: a number on either side is wrapped by ``apply``.

    def __add__(self, b: ScalarLike) -> Scalar:
        return Add.apply(self, b)

    def __radd__(self, b: ScalarLike) -> Scalar:
        return Add.apply(b, self)

    def __sub__(self, b: ScalarLike) -> Scalar:
        return Add.apply(self, Neg.apply(b))

    def __rsub__(self, b: ScalarLike) -> Scalar:
        return Add.apply(b, Neg.apply(self))

    def __mul__(self, b: ScalarLike) -> Scalar:
        return Mul.apply(self, b)

    def __rmul__(self, b: ScalarLike) -> Scalar:
        return Mul.apply(b, self)

    def __truediv__(self, b: ScalarLike) -> Scalar:
        return Mul.apply(self, Inv.apply(b))

    def __rtruediv__(self, b: ScalarLike) -> Scalar:
        return Mul.apply(b, Inv.apply(self))

    def __neg__(self) -> Scalar:
        return Neg.apply(self)

    def __lt__(self, b: ScalarLike) -> Scalar:
        return LT.apply(self, b)

    def __gt__(self, b: ScalarLike) -> Scalar:
        return LT.apply(b, self)

    def __eq__(self, b: ScalarLike) -> Scalar:  # type: ignore[override]
        return EQ.apply(self, b)

    def log(self) -> Scalar:
        return Log.apply(self)

    def exp(self) -> Scalar:
        return Exp.apply(self)

    def sigmoid(self) -> Scalar:
        return Sigmoid.apply(self)

    def relu(self) -> Scalar:
        return ReLU.apply(self)

    # Variable protocol, used by ``autodiff.backpropagate``.

    def is_leaf(self) -> bool:
        """True for a value not produced by a function."""
        return self.history is not None and self.history.last_fn is None

    def is_constant(self) -> bool:
        """True when no history is kept, so backward skips this value."""
        return self.history is None

    @property
    def parents(self) -> Iterable[Scalar]:
        """The inputs of the function that produced this value."""
        assert self.history is not None
        return self.history.inputs

    def accumulate_derivative(self, x: float) -> None:
        """Add ``x`` to this leaf's derivative, which starts at 0.0."""
        assert self.is_leaf(), "Only leaves accumulate derivatives."
        if self.derivative is None:
            self.derivative = 0.0
        self.derivative += x

    def chain_rule(self, d_output: float) -> Iterable[tuple[Scalar, float]]:
        """One ``(input, derivative)`` pair per input of the last function, in order."""
        h = self.history
        assert h is not None and h.last_fn is not None and h.ctx is not None
        return list(zip(h.inputs, h.last_fn._backward(h.ctx, d_output)))

    def backward(self, d_output: float | None = None) -> None:
        """Fill the leaves' ``derivative``; the seed defaults to 1.0."""
        backpropagate(self, 1.0 if d_output is None else d_output)


def derivative_check(f: Callable[..., Scalar], *scalars: Scalar) -> None:
    """Assert that backward through ``f`` matches a central difference.

    Raises AssertionError (from numpy) on a mismatch.
    """
    out = f(*scalars)
    out.backward()
    for i, x in enumerate(scalars):
        if x.derivative is None:
            continue
        check = central_difference(f, *scalars, arg=i)
        np.testing.assert_allclose(
            x.derivative,
            check.data,
            rtol=1e-2,
            atol=1e-2,
            err_msg=(
                f"Derivative check failed for argument {i} of {f} at "
                f"{[s.data for s in scalars]}: backward gave {x.derivative}, "
                f"central difference gave {check.data}."
            ),
        )
