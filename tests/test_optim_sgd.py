"""Optimizer and SGD on Scalar and Tensor parameters (contract section 9)."""

from __future__ import annotations

import numpy as np
import pytest

import minitorch
from minitorch import SGD, Module, Optimizer, Parameter, Scalar, Tensor, TensorBackend


def test_optimizer_stores_parameters() -> None:
    params = [Parameter(Scalar(1.0)), Parameter(minitorch.tensor([1.0]))]
    opt = Optimizer(params)
    assert list(opt.parameters) == params
    assert len(SGD(params).parameters) == 2


def test_sgd_lr_is_second_positional_and_defaults_to_one() -> None:
    p = Parameter(Scalar(3.0))
    assert SGD([p], 0.25).lr == 0.25
    assert SGD([p]).lr == 1.0
    p.value.derivative = 2.0
    SGD([p]).step()
    assert p.value.data == 1.0


def test_sgd_scalar_step_matches_hand_computation() -> None:
    x = Parameter(Scalar(2.0))
    y = Parameter(Scalar(-1.0))
    # loss = x*x*y + 3*x, so dx = 2xy + 3 = -1 and dy = x*x = 4.
    loss = x.value * x.value * y.value + 3.0 * x.value
    loss.backward()
    assert x.value.derivative == pytest.approx(-1.0)
    assert y.value.derivative == pytest.approx(4.0)
    SGD([x, y], lr=0.1).step()
    assert isinstance(x.value, Scalar) and isinstance(y.value, Scalar)
    assert x.value.data == pytest.approx(2.0 + 0.1)
    assert y.value.data == pytest.approx(-1.0 - 0.4)
    # The new values are fresh leaves with no derivative yet.
    assert x.value.derivative is None and x.value.is_leaf()


def test_sgd_scalar_several_steps_minimise_a_quadratic() -> None:
    w = Parameter(Scalar(5.0))
    opt = SGD([w], lr=0.25)
    expected = 5.0
    for _ in range(6):
        opt.zero_grad()
        loss = (w.value - 1.0) * (w.value - 1.0)
        loss.backward()
        opt.step()
        expected = expected - 0.25 * 2 * (expected - 1.0)
        assert w.value.data == pytest.approx(expected)
    assert abs(w.value.data - 1.0) < 0.1


def test_sgd_tensor_step_matches_hand_computation(backend: TensorBackend) -> None:
    w0 = np.array([[1.0, -2.0], [0.5, 3.0]])
    x0 = np.array([[1.0, 2.0], [3.0, 4.0], [-1.0, 0.5]])
    w = Parameter(minitorch.tensor_from_numpy(w0, backend=backend), "w")
    x = minitorch.tensor_from_numpy(x0, backend=backend)
    loss = ((x @ w.value) * (x @ w.value)).sum()
    loss.view(1).backward()
    grad = 2 * x0.T @ (x0 @ w0)
    assert w.value.grad is not None
    np.testing.assert_allclose(w.value.grad.to_numpy(), grad, atol=1e-9)
    old = w.value
    SGD([w], lr=0.01).step()
    # Updated in place (as in PyTorch): the module's own tensor holds the new values.
    assert isinstance(w.value, Tensor) and w.value is old
    np.testing.assert_allclose(w.value.to_numpy(), w0 - 0.01 * grad, atol=1e-9)
    # The updated value is a named leaf with no gradient, ready for the next step.
    assert w.value.is_leaf() and w.value.requires_grad()
    assert w.value.grad is None
    assert w.value.name == "w"
    assert w.value.backend is backend


def test_sgd_mixed_scalar_and_tensor_parameters() -> None:
    s = Parameter(Scalar(1.0))
    t = Parameter(minitorch.tensor([1.0, 2.0]))
    s.value.derivative = 4.0
    t.value.grad = minitorch.tensor([0.5, -0.5])
    SGD([s, t], 0.5).step()
    assert s.value.data == pytest.approx(-1.0)
    np.testing.assert_allclose(t.value.to_numpy(), [0.75, 2.25])


def test_sgd_skips_values_without_gradient() -> None:
    s = Parameter(Scalar(1.0))
    t = Parameter(minitorch.tensor([1.0, 2.0]))
    other = Parameter(7)  # a plain value: neither derivative nor grad
    s_value, t_value = s.value, t.value
    SGD([s, t, other], 0.5).step()
    assert s.value is s_value and t.value is t_value
    assert s.value.data == 1.0
    np.testing.assert_array_equal(t.value.to_numpy(), [1.0, 2.0])
    assert other.value == 7


def test_zero_grad_resets_scalars_and_tensors() -> None:
    s = Parameter(Scalar(1.0))
    t = Parameter(minitorch.tensor([1.0, 2.0]))
    (s.value * 3.0).backward()
    (t.value * 3.0).sum().backward()
    assert s.value.derivative is not None and t.value.grad is not None
    opt = SGD([s, t])
    opt.zero_grad()
    assert s.value.derivative is None
    assert t.value.grad is None
    opt.step()  # nothing to do after zero_grad
    assert s.value.data == 1.0


def test_sgd_with_module_parameters(backend: TensorBackend) -> None:
    class Linear(Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = Parameter(minitorch.tensor([[2.0], [-1.0]], backend=backend))
            self.b = Parameter(minitorch.tensor([0.5], backend=backend))

        def forward(self, x: Tensor) -> Tensor:
            return x @ self.w.value + self.b.value

    model = Linear()
    x = minitorch.tensor([[1.0, 1.0], [2.0, 0.0]], backend=backend)
    opt = SGD(model.parameters(), 0.1)
    opt.zero_grad()
    model(x).sum().view(1).backward()
    opt.step()
    # d/dw sum(x @ w + b) = column sums of x; d/db = batch size.
    np.testing.assert_allclose(model.w.value.to_numpy(), [[2.0 - 0.3], [-1.0 - 0.1]])
    np.testing.assert_allclose(model.b.value.to_numpy(), [0.5 - 0.2])
    assert model.w.value.grad is None
