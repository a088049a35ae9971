"""Reverse-mode autodiff shared by Scalars and Tensors.

A value in a computation graph follows the ``Variable`` protocol; this module
orders the graph and pushes derivatives from the output back to the leaves.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

# Whether tensor functions record history. Process-wide (not per thread), read
# as one module global by ``Function.apply``; change it with ``no_grad``.
_grad_enabled = True

_F = TypeVar("_F", bound=Callable[..., Any])


def is_grad_enabled() -> bool:
    """False inside ``no_grad()``: tensor ops then record no history."""
    return _grad_enabled


class no_grad:  # noqa: N801 - PyTorch's name
    """Turn off history recording for tensor ops, as a context manager or decorator.

    Inside ``with minitorch.no_grad():`` (or a function decorated with
    ``@minitorch.no_grad()`` or ``@minitorch.no_grad``) results of tensor ops
    have no history and so do not require grad, whatever their inputs; slices
    of leaves may be written. Leaving the block, even by an exception, restores
    the previous state, so blocks nest. The switch is process-wide, not per
    thread (PyTorch's is per thread). Scalars are not affected.
    """

    def __new__(cls, fn: Any = None) -> Any:
        """``no_grad()`` is the context manager; ``no_grad(fn)`` (the decorator written
        without parentheses) is ``fn`` wrapped by it."""
        if fn is None:
            return super().__new__(cls)
        if not callable(fn):
            raise TypeError(f"no_grad takes no argument or a function, not {fn!r}.")
        return cls()(fn)

    def __init__(self, fn: Any = None) -> None:
        self._previous: list[bool] = []

    def __enter__(self) -> None:
        global _grad_enabled
        self._previous.append(_grad_enabled)
        _grad_enabled = False

    def __exit__(self, *exc: object) -> None:
        global _grad_enabled
        _grad_enabled = self._previous.pop()

    def __call__(self, fn: _F) -> _F:
        @functools.wraps(fn)
        def without_grad(*args: Any, **kwargs: Any) -> Any:
            with no_grad():
                return fn(*args, **kwargs)

        return without_grad  # type: ignore[return-value]


def central_difference(f: Any, *vals: Any, arg: int = 0, epsilon: float = 1e-6) -> Any:
    """Symmetric difference (f(x+e) - f(x-e)) / 2e along argument ``arg``."""
    up = list(vals)
    down = list(vals)
    up[arg] = up[arg] + epsilon
    down[arg] = down[arg] - epsilon
    return (f(*up) - f(*down)) / (2.0 * epsilon)


class Variable(Protocol):
    """What autodiff needs from a value in the graph."""

    def accumulate_derivative(self, x: Any) -> None: ...

    @property
    def unique_id(self) -> int: ...

    def is_leaf(self) -> bool: ...

    def is_constant(self) -> bool: ...

    @property
    def parents(self) -> Iterable[Variable]: ...

    def chain_rule(self, d_output: Any) -> Iterable[tuple[Variable, Any]]: ...


def topological_sort(variable: Variable) -> list[Variable]:
    """Non-constant nodes reachable from ``variable``, output first.

    Iterative depth-first search, so deep graphs cannot overflow the stack.
    """
    order: list[Variable] = []
    seen: set[int] = set()
    if variable.is_constant():
        return order
    stack: list[tuple[Variable, bool]] = [(variable, False)]
    while stack:
        node, expanded = stack.pop()
        if expanded:
            order.append(node)
            continue
        uid = node.unique_id
        if uid in seen:
            continue
        seen.add(uid)
        stack.append((node, True))
        if not node.is_leaf():
            for parent in node.parents:
                if not parent.is_constant() and parent.unique_id not in seen:
                    stack.append((parent, False))
    order.reverse()
    return order


def backpropagate(variable: Variable, deriv: Any, order: list[Variable] | None = None) -> None:
    """Push ``deriv`` from ``variable`` back, accumulating on the leaves. ``order`` is
    ``topological_sort(variable)`` when the caller has it (a faster sort of its own)."""
    derivatives: dict[int, Any] = {variable.unique_id: deriv}
    for node in topological_sort(variable) if order is None else order:
        d = derivatives.pop(node.unique_id, None)
        if d is None:
            continue
        if node.is_leaf():
            node.accumulate_derivative(d)
            continue
        for parent, d_parent in node.chain_rule(d):
            if parent.is_constant():
                continue
            uid = parent.unique_id
            previous = derivatives.get(uid)
            derivatives[uid] = d_parent if previous is None else previous + d_parent


@dataclass
class Context:
    """Values a function's forward saves for its backward."""

    no_grad: bool = False
    saved_values: tuple[Any, ...] = ()
    # Which inputs need a gradient, set just before backward runs (empty: all of
    # them), so backward can skip the kernels whose result would be thrown away.
    needs_input_grad: tuple[bool, ...] = ()

    def save_for_backward(self, *values: Any) -> None:
        """Store values for backward, unless gradients are off."""
        if self.no_grad:
            return
        self.saved_values = values

    @property
    def saved_tensors(self) -> tuple[Any, ...]:
        """Alias of ``saved_values``."""
        return self.saved_values
