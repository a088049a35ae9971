"""Optimisers: update Parameters from their gradients."""

from __future__ import annotations

from collections.abc import Sequence

from .module import Parameter
from .scalar import Scalar


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


class SGD(Optimizer):
    """Plain stochastic gradient descent: ``value - lr * grad``."""

    def __init__(self, parameters: Sequence[Parameter], lr: float = 1.0) -> None:
        super().__init__(parameters)
        self.lr = lr

    def step(self) -> None:
        for p in self.parameters:
            if p.value is None:
                continue
            if hasattr(p.value, "derivative"):
                if p.value.derivative is not None:
                    p.update(Scalar(p.value.data - self.lr * p.value.derivative))
            elif hasattr(p.value, "grad") and p.value.grad is not None:
                p.update(p.value - self.lr * p.value.grad)
