"""Optimisers: update Parameters from their gradients.

Parameters may hold Scalars (whose gradient is ``.derivative``) or Tensors
(``.grad``). The update rules are written once over "values" that are either
floats or detached tensors, so the same arithmetic serves both: on tensors each
``*``/``+`` is one backend kernel over the whole array and records no history.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from .module import Parameter
from .scalar import Scalar
from .tensor import Tensor


class Optimizer:
    """Holds the parameters an optimiser updates."""

    def __init__(self, parameters: Sequence[Parameter]) -> None:
        self.parameters = list(parameters)

    def zero_grad(self) -> None:
        """Forget every parameter's gradient."""
        for p in self.parameters:
            if p.value is None:
                continue
            if hasattr(p.value, "derivative"):
                p.value.derivative = None
            if hasattr(p.value, "grad"):
                p.value.grad = None

    def _with_gradients(self) -> list[tuple[int, Parameter, Any, Any]]:
        """``(index, parameter, value, gradient)`` for each parameter that has a gradient.

        Values and gradients are floats for Scalars and detached tensors for
        Tensors, so update arithmetic builds no autodiff graph.
        """
        found = []
        for i, p in enumerate(self.parameters):
            v = p.value
            if v is None:
                continue
            if hasattr(v, "derivative"):
                if v.derivative is not None:
                    found.append((i, p, v.data, v.derivative))
            elif getattr(v, "grad", None) is not None:
                found.append((i, p, v.detach(), v.grad))
        return found

    @staticmethod
    def _store(p: Parameter, new: Any) -> None:
        """Give ``p`` its updated value, in the dtype it had (state kept from before a
        ``Module.to`` must not promote it); ``Parameter.update`` makes it a fresh leaf."""
        if hasattr(p.value, "derivative"):
            p.update(Scalar(new))
        else:
            p.update(new.to(p.value.dtype))


class SGD(Optimizer):
    """Stochastic gradient descent, optionally with momentum (PyTorch's rule).

    Without momentum the step is ``value - lr * grad``. With momentum ``mu``
    a velocity ``b = mu * b + grad`` (``b = grad`` on the first step) replaces
    the gradient.
    """

    def __init__(
        self, parameters: Sequence[Parameter], lr: float = 1.0, momentum: float = 0.0
    ) -> None:
        super().__init__(parameters)
        if lr < 0.0 or momentum < 0.0:
            raise ValueError(f"SGD needs lr >= 0 and momentum >= 0, got {lr} and {momentum}.")
        self.lr = lr
        self.momentum = momentum
        self.velocity: dict[int, Any] = {}

    def step(self) -> None:
        """Move every parameter that has a gradient; the others keep their value."""
        for i, p, value, grad in self._with_gradients():
            if self.momentum:
                b = self.velocity.get(i)
                grad = grad if b is None else b * self.momentum + grad
                self.velocity[i] = grad
            self._store(p, value - grad * self.lr)


class Adam(Optimizer):
    """Adam (Kingma & Ba) with PyTorch's bias-corrected update.

    Per parameter, with step count ``t``::

        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        value -= lr / (1 - b1**t) * m / (sqrt(v / (1 - b2**t)) + eps)

    ``t`` counts the steps at which that parameter had a gradient.
    """

    def __init__(
        self,
        parameters: Sequence[Parameter],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
    ) -> None:
        super().__init__(parameters)
        b1, b2 = betas
        if lr < 0.0 or eps < 0.0 or not (0.0 <= b1 < 1.0 and 0.0 <= b2 < 1.0):
            raise ValueError(
                f"Adam needs lr >= 0, eps >= 0 and betas in [0, 1), got {lr}, {eps}, {betas}."
            )
        self.lr = lr
        self.betas = (b1, b2)
        self.eps = eps
        self.state: dict[int, tuple[int, Any, Any]] = {}

    def step(self) -> None:
        """Move every parameter that has a gradient; the others keep value and state."""
        b1, b2 = self.betas
        for i, p, value, grad in self._with_gradients():
            sq = grad * grad
            if i in self.state:
                t, m, v = self.state[i]
                m = m * b1 + grad * (1.0 - b1)
                v = v * b2 + sq * (1.0 - b2)
            else:
                t, m, v = 0, grad * (1.0 - b1), sq * (1.0 - b2)
            t += 1
            self.state[i] = (t, m, v)
            denom = _sqrt(v) * (1.0 / math.sqrt(1.0 - b2**t)) + self.eps
            self._store(p, value - m / denom * (self.lr / (1.0 - b1**t)))


def _sqrt(x: Any) -> Any:
    """Elementwise square root of a float or a tensor (one map kernel)."""
    if isinstance(x, Tensor):
        return x.f.map_of(_scalar_sqrt)(x)
    return math.sqrt(x)


def _scalar_sqrt(x: float) -> float:
    """A plain function, so every backend can compile a map of it."""
    return math.sqrt(x)
