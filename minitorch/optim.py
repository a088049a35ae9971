"""Optimisers: update Parameters from their gradients.

Parameters may hold Scalars (whose gradient is ``.derivative``) or Tensors
(``.grad``). The update rules are written once over "values" that are either
floats or detached tensors, so the same arithmetic serves both: on tensors each
``*``/``+`` is one backend kernel over the whole array and records no history.

Tensor parameters, and tensor optimiser state (velocities, Adam's moments),
are updated in place: the new values are computed as before and copied into
the existing storage. So a module's tensors, its ``state_dict`` and a compiled
step (``minitorch.compile``), which replays kernels on fixed storages, all see
every update. The hyperparameters and step counts an update multiplies by
reach the kernels as one-element tensors; while a step is being recorded the
optimiser hands the recorder a callback that recomputes them from its current
settings, so a replayed step uses the learning rate set now, not the one of
the recording.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

from . import operators, recording
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
            if isinstance(p.value, Tensor) or hasattr(p.value, "grad"):
                p.value.grad = None  # (no read: a compiled step need not find any gradient)

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
    def _move(p: Parameter, value: Any, delta: Any) -> None:
        """Give ``p`` the value ``value - delta``.

        Tensors are written in place (see the module docstring) and left a leaf
        without gradient; Scalars, and tensors whose layout repeats elements (a
        broadcast view cannot take distinct values), get a fresh leaf through
        ``Parameter.update``.
        """
        target = p.value
        if isinstance(target, Tensor) and _assignable(target):
            target.f.zip_of(operators.sub)(value, delta, out=target)
            _moved(p)
            return
        new = value - delta
        # A fresh leaf keeps the dtype the parameter had (state kept from before a
        # ``Module.to`` must not promote it).
        p.update(Scalar(new) if hasattr(target, "derivative") else new.to(target.dtype))

    def _coefficients(self, like: Any, compute: Callable[[], tuple[float, ...]]) -> tuple[Any, ...]:
        """``compute()``'s numbers as one-element tensors on ``like``'s backend (floats for
        Scalars). While a step is recorded, the recorder gets ``compute`` to refill them
        before every replay (it must also advance any step count, as the call here did);
        otherwise the tensors of the last call are reused while the numbers stay the same
        (the kernels only read them: one allocation per step, not per parameter)."""
        values = compute()
        if not isinstance(like, Tensor):
            return values
        recorder = recording.recorder
        # The last coefficient tensors per (backend, dtype), with their numbers.
        constants = self.__dict__.setdefault("_constants", {})
        key = (like.backend, like._tensor._storage.dtype)
        if recorder is None:
            kept = constants.get(key)
            if kept is not None and _same_numbers(kept[0], values):
                return kept[1]
        tensors = tuple(like._ensure_tensor(v) for v in values)
        if recorder is None:
            constants[key] = (values, tensors)
        else:
            storages = [t._tensor._storage for t in tensors]

            def refill() -> None:
                for storage, v in zip(storages, compute()):
                    storage[0] = v

            recorder.refresh(refill, storages)
        return tensors


def _product(x: Any, y: Any) -> Any:
    """``x * y``; for two tensors of one dtype and backend, the backend's kernel itself
    (the same kernel and values, without an autodiff function around it)."""
    if (isinstance(x, Tensor) and isinstance(y, Tensor) and x.backend is y.backend
            and x._tensor._storage.dtype == y._tensor._storage.dtype):  # fmt: skip
        return x.f.mul_zip(x, y)
    return x * y


def _same_numbers(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    """Equal, zeros of one sign included (``x - 0.0 * g`` and ``x - -0.0 * g`` differ at -0)."""
    return a == b and all(math.copysign(1.0, x) == math.copysign(1.0, y) for x, y in zip(a, b))


def _accumulate(state: Any, decayed: Any, term: Any) -> Any:
    """``decayed + term``, written into the tensor ``state`` (a float is returned)."""
    if isinstance(state, Tensor):
        return state.f.add_zip(decayed, term, out=state)
    return decayed + term


def _assignable(t: Tensor) -> bool:
    """True unless a dim of size > 1 has stride 0 (one storage element seen many times)."""
    td = t._tensor
    return all(s != 0 or d == 1 for d, s in zip(td.shape, td.strides))


def _persistent(t: Any) -> Any:
    """A tensor the optimiser keeps across steps: its own copy, unless a float.

    Creating state is something later steps do not repeat, so a recording of
    this step is not kept (``recording.recorder.unstable``).
    """
    if not isinstance(t, Tensor):
        return t
    recorder = recording.recorder
    if recorder is not None:
        recorder.unstable("the optimiser created its state in this step")
    return t.detach().contiguous()


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
                lr, momentum = self._coefficients(value, lambda: (self.lr, self.momentum))
                b = self.velocity.get(i)
                fused = _fused(p, value, "sgd_update", grad, b) if b is not None else None
                if fused is not None:
                    fused(*_storages(value, grad, b), _storages(lr, momentum))
                    _moved(p)
                    continue
                if b is None:
                    b = _persistent(grad)
                else:
                    b = _accumulate(b, _product(b, momentum), grad)
                grad = self.velocity[i] = b
            else:
                (lr,) = self._coefficients(value, lambda: (self.lr,))
                fused = _fused(p, value, "sgd_update", grad)
                if fused is not None:
                    fused(*_storages(value, grad), None, _storages(lr))
                    _moved(p)
                    continue
            self._move(p, value, _product(grad, lr))


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

    def _advance(self, i: int) -> tuple[float, ...]:
        """Count a step of parameter ``i``; the numbers its update multiplies by."""
        t, m, v = self.state.get(i, (0, None, None))
        t += 1
        self.state[i] = (t, m, v)
        b1, b2 = self.betas
        return (b1, 1.0 - b1, b2, 1.0 - b2, 1.0 / math.sqrt(1.0 - b2**t), self.eps,
                self.lr / (1.0 - b1**t))  # fmt: skip

    def step(self) -> None:
        """Move every parameter that has a gradient; the others keep value and state."""
        for i, p, value, grad in self._with_gradients():
            first = i not in self.state
            b1, c1, b2, c2, v_scale, eps, step_size = self._coefficients(
                value, lambda i=i: self._advance(i)
            )
            t, m, v = self.state[i]
            fused = _fused(p, value, "adam_update", grad, m, v) if m is not None else None
            if fused is not None:
                numbers = (b1, c1, b2, c2, v_scale, eps, step_size)
                fused(*_storages(value, grad, m, v), _storages(*numbers))
                _moved(p)
                continue
            sq = _product(grad, grad)
            if first:
                m, v = _persistent(_product(grad, c1)), _persistent(_product(sq, c2))
            else:
                m = _accumulate(m, _product(m, b1), _product(grad, c1))
                v = _accumulate(v, _product(v, b2), _product(sq, c2))
            self.state[i] = (t, m, v)
            denom = _product(_sqrt(v), v_scale) + eps
            self._move(p, value, _product(m / denom, step_size))


def _fused(p: Parameter, value: Any, kernel: str, *tensors: Any) -> Any:
    """The backend's fused optimiser kernel ``kernel`` (``TensorOps.adam_update`` or
    ``sgd_update``) when this step can take it: ``value`` is the parameter's own tensor,
    and it and ``tensors`` are one row-major layout of one dtype on one backend, over
    distinct storages. Else None (the optimiser runs its rule as separate kernels)."""
    if not isinstance(value, Tensor) or value._tensor is not p.value._tensor:
        return None
    update = getattr(value.backend.ops, kernel)
    if update is None:
        return None
    td = value._tensor
    storages = set()
    for t in (value, *tensors):
        if not isinstance(t, Tensor) or t.backend is not value.backend:
            return None
        other = t._tensor
        if (other.shape != td.shape or other._storage.dtype != td._storage.dtype
                or not other.is_row_major() or len(other._storage) != other.size
                or id(other._storage) in storages):  # fmt: skip
            return None  # (a gradient that is the state itself must be read before it moves)
        storages.add(id(other._storage))
    return update


def _storages(*tensors: Tensor) -> tuple[Any, ...]:
    return tuple(t._tensor._storage for t in tensors)


def _moved(p: Parameter) -> None:
    """After ``p``'s tensor was written in place (``Optimizer._move`` or a fused update):
    a leaf without gradient."""
    p.value.grad = None
    p.value.requires_grad_(True)


def _sqrt(x: Any) -> Any:
    """Elementwise square root of a float or a tensor (one map kernel)."""
    if isinstance(x, Tensor):
        return x.f.map_of(_scalar_sqrt)(x)
    return math.sqrt(x)


def _scalar_sqrt(x: float) -> float:
    """A plain function, so every backend can compile a map of it."""
    return math.sqrt(x)
