"""Differentiable scalar functions: each a forward rule and its local derivative.

A ``ScalarFunction`` subclass is never instantiated. Its classmethod ``apply``
unwraps Scalars into floats, runs ``forward`` and records the call in the
result's history so that ``backward`` can be replayed by autodiff.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import operators
from .autodiff import Context

if TYPE_CHECKING:
    from .scalar import Scalar, ScalarLike


class ScalarFunction:
    """Base class: subclasses define static ``forward`` and ``backward``."""

    @classmethod
    def _backward(cls, ctx: Context, d_out: float) -> tuple[float, ...]:
        """Run ``backward``, always returning one derivative per input."""
        d = cls.backward(ctx, d_out)  # type: ignore[attr-defined]
        return d if isinstance(d, tuple) else (d,)

    @classmethod
    def _forward(cls, ctx: Context, *inps: float) -> float:
        """Run ``forward`` on raw floats."""
        return cls.forward(ctx, *inps)  # type: ignore[attr-defined]

    @classmethod
    def apply(cls, *vals: ScalarLike) -> Scalar:
        """Call the function on Scalars or numbers and record the call."""
        # Imported here: ``scalar`` builds its operators on this module.
        from .scalar import Scalar, ScalarHistory

        scalars = [v if isinstance(v, Scalar) else Scalar(v) for v in vals]
        ctx = Context(no_grad=False)
        out = cls._forward(ctx, *(s.data for s in scalars))
        return Scalar(out, ScalarHistory(cls, ctx, scalars))


class Add(ScalarFunction):
    """a + b"""

    @staticmethod
    def forward(ctx: Context, a: float, b: float) -> float:
        return operators.add(a, b)

    @staticmethod
    def backward(ctx: Context, d_output: float) -> tuple[float, float]:
        return d_output, d_output


class Log(ScalarFunction):
    """log(a), shifted by ``operators.EPS``"""

    @staticmethod
    def forward(ctx: Context, a: float) -> float:
        ctx.save_for_backward(a)
        return operators.log(a)

    @staticmethod
    def backward(ctx: Context, d_output: float) -> float:
        (a,) = ctx.saved_values
        return operators.log_back(a, d_output)


class Mul(ScalarFunction):
    """a * b"""

    @staticmethod
    def forward(ctx: Context, a: float, b: float) -> float:
        ctx.save_for_backward(a, b)
        return operators.mul(a, b)

    @staticmethod
    def backward(ctx: Context, d_output: float) -> tuple[float, float]:
        a, b = ctx.saved_values
        return operators.mul(b, d_output), operators.mul(a, d_output)


class Inv(ScalarFunction):
    """1 / a"""

    @staticmethod
    def forward(ctx: Context, a: float) -> float:
        ctx.save_for_backward(a)
        return operators.inv(a)

    @staticmethod
    def backward(ctx: Context, d_output: float) -> float:
        (a,) = ctx.saved_values
        return operators.inv_back(a, d_output)


class Neg(ScalarFunction):
    """-a"""

    @staticmethod
    def forward(ctx: Context, a: float) -> float:
        return operators.neg(a)

    @staticmethod
    def backward(ctx: Context, d_output: float) -> float:
        return operators.neg(d_output)


class Sigmoid(ScalarFunction):
    """sigmoid(a); backward reuses the saved output, s' = s(1 - s)"""

    @staticmethod
    def forward(ctx: Context, a: float) -> float:
        out = operators.sigmoid(a)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx: Context, d_output: float) -> float:
        (s,) = ctx.saved_values
        return d_output * s * (1.0 - s)


class ReLU(ScalarFunction):
    """max(a, 0)"""

    @staticmethod
    def forward(ctx: Context, a: float) -> float:
        ctx.save_for_backward(a)
        return operators.relu(a)

    @staticmethod
    def backward(ctx: Context, d_output: float) -> float:
        (a,) = ctx.saved_values
        return operators.relu_back(a, d_output)


class Exp(ScalarFunction):
    """e ** a; backward reuses the saved output, since exp' = exp"""

    @staticmethod
    def forward(ctx: Context, a: float) -> float:
        out = operators.exp(a)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx: Context, d_output: float) -> float:
        (out,) = ctx.saved_values
        return operators.mul(out, d_output)


class LT(ScalarFunction):
    """1.0 if a < b else 0.0; piecewise constant, so zero derivative"""

    @staticmethod
    def forward(ctx: Context, a: float, b: float) -> float:
        return operators.lt(a, b)

    @staticmethod
    def backward(ctx: Context, d_output: float) -> tuple[float, float]:
        return 0.0, 0.0


class EQ(ScalarFunction):
    """1.0 if a == b else 0.0; piecewise constant, so zero derivative"""

    @staticmethod
    def forward(ctx: Context, a: float, b: float) -> float:
        return operators.eq(a, b)

    @staticmethod
    def backward(ctx: Context, d_output: float) -> tuple[float, float]:
        return 0.0, 0.0
