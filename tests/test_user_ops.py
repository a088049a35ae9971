"""User-defined tensor operators from plain Python scalar functions.

``tensor_functions.unary_op(fn, derivative)`` and ``binary_op(fn, d_first,
d_second)`` turn scalar functions into differentiable, broadcasting tensor ops
on every backend: SimpleOps calls them in Python, FastOps compiles them into
its kernels (helpers they call included) and CUDA into device functions.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from strategies import assert_close

import minitorch
from minitorch import Tensor, TensorBackend, grad_check
from minitorch.kernel_cache import KernelCacheWarning, ScalarCompileError

unary_op = getattr(minitorch, "unary_op", minitorch.tensor_functions.unary_op)
binary_op = getattr(minitorch, "binary_op", minitorch.tensor_functions.binary_op)

# Tiny data: the cuda parameter may run on the simulator.
X = np.array([[-2.5, -0.5, 0.0], [0.75, 1.5, 3.0]])
Y_ROW = np.array([0.5, -1.25, 2.0])


def make(x: np.ndarray, backend: TensorBackend) -> Tensor:
    return minitorch.tensor_from_numpy(x, backend=backend)


def unbroadcast(grad: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Sum a broadcast gradient back to ``shape``."""
    grad = grad.sum(axis=tuple(range(grad.ndim - len(shape))))
    axes = tuple(d for d, n in enumerate(shape) if n == 1 and grad.shape[d] != 1)
    return grad.sum(axis=axes, keepdims=True)


# Scalar functions, written as a user would --------------------------------------------


def softplus(x: float) -> float:
    if x > 30.0:
        return x
    return math.log(1.0 + math.exp(x))


def softplus_grad(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def soft_hypot(x: float, y: float) -> float:
    return math.sqrt(x * x + y * y + 1.0)


def soft_hypot_dx(x: float, y: float) -> float:
    return x / math.sqrt(x * x + y * y + 1.0)


def soft_hypot_dy(x: float, y: float) -> float:
    return y / math.sqrt(x * x + y * y + 1.0)


def helper(x: float) -> float:
    return x * x


def square_plus_one(x: float) -> float:
    return helper(x) + 1.0


def two_helpers(x: float, y: float) -> float:
    return helper(x) - helper(y) * 0.5


def scaler(c: float) -> tuple[Callable[[float], float], Callable[[float], float]]:
    def scaled(x: float) -> float:
        return c * x + c

    def scaled_grad(x: float) -> float:
        return c

    return scaled, scaled_grad


def returns_string(x: float) -> float:
    return "not a number"  # type: ignore[return-value]


def exp_via_module(x: float) -> float:
    return minitorch.operators.exp(x)


SEEN: list[float] = []


def appends_to_list(x: float) -> float:
    SEEN.append(x)
    return x


SOFTPLUS = unary_op(softplus, softplus_grad)
SOFT_HYPOT = binary_op(soft_hypot, soft_hypot_dx, soft_hypot_dy)


# unary_op --------------------------------------------------------------------------


def test_unary_op_forward_matches_numpy(backend: TensorBackend) -> None:
    t = make(X, backend)
    out = SOFTPLUS(t)
    assert_close(out, np.logaddexp(0.0, X))
    np.testing.assert_allclose(out.to_numpy(), np.logaddexp(0.0, X), rtol=1e-12)
    # Non-contiguous input.
    assert_close(SOFTPLUS(t.permute(1, 0)), np.logaddexp(0.0, X.T))


def test_unary_op_grad(backend: TensorBackend) -> None:
    t = make(X, backend)
    grad_check(SOFTPLUS, t)
    t = make(X, backend).requires_grad_(True)
    out = SOFTPLUS(t)
    out.sum().backward()
    assert t.grad is not None
    np.testing.assert_allclose(t.grad.to_numpy(), 1.0 / (1.0 + np.exp(-X)), rtol=1e-12)


def test_unary_op_trains(backend: TensorBackend) -> None:
    if backend.cuda:
        pytest.skip("30 simulated training steps; the CUDA user-op kernels are tested above")
    # Fit y = softplus(w * x) for a scalar w by gradient descent.
    x = make(np.array([-1.0, -0.5, 0.5, 1.0, 1.5]), backend)
    y = SOFTPLUS(x * 2.0).detach()
    w = minitorch.Parameter(make(np.array([0.2]), backend))
    optim = minitorch.SGD([w], lr=0.5)
    losses = []
    for _ in range(30):
        optim.zero_grad()
        diff = SOFTPLUS(x * w.value) - y
        loss = (diff * diff).mean()
        loss.backward()
        optim.step()
        losses.append(loss.item())
    assert losses[-1] < 0.01 * losses[0]
    assert abs(w.value.item() - 2.0) < 0.1


def test_unary_op_without_derivative_cannot_backprop(backend: TensorBackend) -> None:
    op = unary_op(softplus)
    t = make(X, backend).requires_grad_(True)
    out = op(t)
    assert_close(out, np.logaddexp(0.0, X))
    with pytest.raises(RuntimeError):
        out.sum().backward()


# binary_op -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "shape_a, shape_b",
    [((2, 3), (2, 3)), ((2, 3), (3,)), ((1,), (2, 3)), ((2, 1), (1, 3)), ((3,), (2, 1, 3))],
)
def test_binary_op_broadcast_forward_and_grad(
    backend: TensorBackend, shape_a: tuple[int, ...], shape_b: tuple[int, ...]
) -> None:
    rng = np.random.default_rng(len(shape_a) * 10 + len(shape_b))
    x = rng.uniform(-2, 2, shape_a)
    y = rng.uniform(-2, 2, shape_b)
    a, b = make(x, backend), make(y, backend)
    out = SOFT_HYPOT(a, b)
    assert_close(out, np.sqrt(x * x + y * y + 1.0))
    grad_check(SOFT_HYPOT, a, b)
    a, b = make(x, backend).requires_grad_(True), make(y, backend).requires_grad_(True)
    SOFT_HYPOT(a, b).sum().backward()
    assert a.grad is not None and b.grad is not None
    assert a.grad.shape == shape_a and b.grad.shape == shape_b
    r = np.sqrt(x * x + y * y + 1.0)
    np.testing.assert_allclose(a.grad.to_numpy(), unbroadcast(x / r, shape_a), rtol=1e-12)
    np.testing.assert_allclose(b.grad.to_numpy(), unbroadcast(y / r, shape_b), rtol=1e-12)


def test_binary_op_takes_a_number(backend: TensorBackend) -> None:
    out = SOFT_HYPOT(make(X, backend), 2.0)
    assert_close(out, np.sqrt(X * X + 5.0))


def test_binary_op_without_derivatives_cannot_backprop(backend: TensorBackend) -> None:
    op = binary_op(soft_hypot)
    a = make(X, backend).requires_grad_(True)
    out = op(a, make(Y_ROW, backend))
    assert_close(out, np.sqrt(X * X + Y_ROW * Y_ROW + 1.0))
    with pytest.raises(RuntimeError):
        out.sum().backward()


# What the scalar functions may be ---------------------------------------------------


def test_function_calling_a_helper(backend: TensorBackend) -> None:
    op = unary_op(square_plus_one, lambda x: 2.0 * x)
    t = make(X, backend)
    assert_close(op(t), X * X + 1.0)
    grad_check(op, t)
    two = binary_op(two_helpers, lambda x, y: 2.0 * x, lambda x, y: -y)
    assert_close(two(t, make(Y_ROW, backend)), X * X - Y_ROW * Y_ROW * 0.5)


def test_lambda_and_closure(backend: TensorBackend) -> None:
    t = make(X, backend)
    op = unary_op(lambda x: 3.0 * x - 1.0, lambda x: 3.0)
    assert_close(op(t), 3.0 * X - 1.0)
    grad_check(op, t)
    times2 = unary_op(*scaler(2.0))
    times5 = unary_op(*scaler(5.0))
    assert_close(times2(t), 2.0 * X + 2.0)
    assert_close(times5(t), 5.0 * X + 5.0)  # a different constant, its own kernel
    grad_check(times5, t)
    pair = binary_op(lambda x, y: x * y + 1.0, lambda x, y: y, lambda x, y: x)
    assert_close(pair(t, make(Y_ROW, backend)), X * Y_ROW + 1.0)
    grad_check(pair, t, make(Y_ROW, backend))


def test_closure_over_an_object(backend: TensorBackend) -> None:
    # Closures over non-constants cannot be disk-cached; they still compile.
    weights = (2.0, 0.5)

    def weighted(x: float) -> float:
        return weights[0] * x + weights[1]

    assert_close(unary_op(weighted)(make(X, backend)), 2.0 * X + 0.5)


@pytest.mark.kernels
@pytest.mark.parametrize("fn", [returns_string, appends_to_list], ids=lambda f: f.__name__)
def test_uncompilable_function_names_itself(fn: Callable[[float], float]) -> None:
    fast = minitorch.TensorBackend(minitorch.FastOps)
    op = unary_op(fn)
    with pytest.raises(ScalarCompileError, match=fn.__name__):
        op(make(X, fast))
    assert issubclass(ScalarCompileError, TypeError)
    bad = binary_op(lambda x, y: "nope")
    with pytest.raises(ScalarCompileError, match="lambda"):
        bad(make(X, fast), make(X, fast))


@pytest.mark.kernels
def test_helper_through_module_attribute() -> None:
    fast = minitorch.TensorBackend(minitorch.FastOps)
    op = unary_op(exp_via_module)
    assert_close(op(make(X, fast)), np.exp(X))


def test_builtin_backend_ops_are_user_ops_too(backend: TensorBackend) -> None:
    # map_of / zip_of / reduce_of are the builders user ops rely on: cached per function.
    assert backend.map_of(softplus) is backend.map_of(softplus)
    assert backend.zip_of(soft_hypot) is backend.zip_of(soft_hypot)
    t = make(X, backend)
    assert_close(backend.reduce_of(soft_hypot, 0.0)(make(np.array([3.0]), backend), 0),
                 np.array([math.sqrt(10.0)]))  # fmt: skip
    assert_close(backend.map_of(softplus)(t), np.logaddexp(0.0, X))


@pytest.mark.kernels
def test_unwritable_kernel_cache_falls_back_to_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    monkeypatch.setenv("MINITORCH_CACHE_DIR", str(blocker / "kernels"))
    fast = minitorch.TensorBackend(minitorch.FastOps)
    op = unary_op(lambda x: 3.0 * x + 0.25)  # a function no other test has compiled
    t = minitorch.tensor_from_numpy(np.array([1.0, -2.0]), backend=fast)
    with pytest.warns(KernelCacheWarning, match="a-file"):
        np.testing.assert_array_equal(op(t).to_numpy(), np.array([3.25, -5.75]))
