"""Optimisers (minitorch.optim): single steps against hand-computed NumPy updates."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import minitorch
from minitorch import SGD, Parameter, Scalar, Tensor, tensor_from_numpy
from minitorch.optim import Adam

W0 = np.array([[0.5, -1.0], [2.0, 0.25]])
G1 = np.array([[0.1, -0.2], [0.3, 4.0]])
G2 = np.array([[-0.5, 0.0], [1.0, 2.0]])


def tensor_param(values: np.ndarray, backend: minitorch.TensorBackend | None = None) -> Parameter:
    return Parameter(tensor_from_numpy(values, backend=backend or minitorch.SimpleBackend), "w")


def set_grad(p: Parameter, grad: np.ndarray) -> None:
    p.value.grad = tensor_from_numpy(grad, backend=p.value.backend)


def assert_fresh_leaf(p: Parameter) -> None:
    """An updated value tracks gradients anew and carries no history of the update."""
    assert isinstance(p.value, Tensor)
    assert p.value.is_leaf() and p.value.grad is None
    assert p.value.name == "w"


def adam_reference(
    w: np.ndarray, grads: list[np.ndarray], lr: float, b1: float, b2: float, eps: float
) -> np.ndarray:
    """PyTorch's Adam, written out."""
    m = np.zeros_like(w)
    v = np.zeros_like(w)
    for t, g in enumerate(grads, start=1):
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        m_hat = m / (1 - b1**t)
        v_hat = v / (1 - b2**t)
        w = w - lr * m_hat / (np.sqrt(v_hat) + eps)
    return w


# Optimizer / zero_grad ----------------------------------------------------------------


def test_zero_grad_clears_tensor_grads_and_scalar_derivatives() -> None:
    t, s = tensor_param(W0), Parameter(Scalar(1.0))
    set_grad(t, G1)
    s.value.derivative = 3.0
    none = Parameter(None)
    opt = SGD([t, s, none], lr=0.1)
    opt.zero_grad()
    assert t.value.grad is None and s.value.derivative is None


# SGD ----------------------------------------------------------------------------------


def test_sgd_step_matches_numpy_and_leaves_fresh_leaves() -> None:
    p = tensor_param(W0)
    set_grad(p, G1)
    SGD([p], lr=0.5).step()
    np.testing.assert_allclose(p.value.to_numpy(), W0 - 0.5 * G1)
    assert_fresh_leaf(p)


def test_sgd_takes_lr_positionally_and_updates_scalars() -> None:
    s = Parameter(Scalar(2.0))
    s.value.derivative = 0.5
    SGD([s], 0.1).step()
    assert isinstance(s.value, Scalar)
    assert s.value.data == pytest.approx(2.0 - 0.1 * 0.5)


def test_sgd_skips_parameters_without_gradient() -> None:
    with_grad, without = tensor_param(W0), tensor_param(W0)
    scalar = Parameter(Scalar(1.0))
    set_grad(with_grad, G1)
    untouched, untouched_scalar = without.value, scalar.value
    SGD([with_grad, without, scalar, Parameter(None)], lr=1.0).step()
    assert without.value is untouched and scalar.value is untouched_scalar
    np.testing.assert_allclose(with_grad.value.to_numpy(), W0 - G1)


def test_sgd_momentum_two_steps() -> None:
    p = tensor_param(W0)
    opt = SGD([p], lr=0.1, momentum=0.9)
    set_grad(p, G1)
    opt.step()
    set_grad(p, G2)
    opt.step()
    # PyTorch: b1 = g1, b2 = 0.9 * b1 + g2.
    expected = W0 - 0.1 * G1 - 0.1 * (0.9 * G1 + G2)
    np.testing.assert_allclose(p.value.to_numpy(), expected)
    assert_fresh_leaf(p)


def test_sgd_momentum_on_scalars() -> None:
    s = Parameter(Scalar(1.0))
    opt = SGD([s], lr=0.1, momentum=0.5)
    for d in (2.0, 4.0):
        s.value.derivative = d
        opt.step()
    assert s.value.data == pytest.approx(1.0 - 0.1 * 2.0 - 0.1 * (0.5 * 2.0 + 4.0))


# Adam ---------------------------------------------------------------------------------


def test_adam_two_steps_match_the_reference() -> None:
    p = tensor_param(W0)
    opt = Adam([p], lr=0.01, betas=(0.8, 0.99), eps=1e-6)
    for g in (G1, G2):
        set_grad(p, g)
        opt.step()
    expected = adam_reference(W0, [G1, G2], lr=0.01, b1=0.8, b2=0.99, eps=1e-6)
    np.testing.assert_allclose(p.value.to_numpy(), expected, rtol=1e-12)
    assert_fresh_leaf(p)


def test_adam_first_step_moves_each_element_by_about_lr() -> None:
    p = tensor_param(W0)
    set_grad(p, G1)
    Adam([p], lr=0.01).step()
    np.testing.assert_allclose(p.value.to_numpy(), W0 - 0.01 * np.sign(G1), rtol=1e-6)


def test_adam_counts_steps_per_parameter_and_skips_missing_gradients() -> None:
    early, late = tensor_param(W0), tensor_param(W0)
    opt = Adam([early, late], lr=0.01)
    set_grad(early, G1)
    opt.step()
    assert np.array_equal(late.value.to_numpy(), W0)
    set_grad(early, G2)
    set_grad(late, G2)
    opt.step()
    np.testing.assert_allclose(
        early.value.to_numpy(), adam_reference(W0, [G1, G2], 0.01, 0.9, 0.999, 1e-8)
    )
    # late's first update is bias-corrected as step 1, not step 2.
    np.testing.assert_allclose(
        late.value.to_numpy(), adam_reference(W0, [G2], 0.01, 0.9, 0.999, 1e-8)
    )


def test_adam_on_scalars_matches_the_reference() -> None:
    s = Parameter(Scalar(0.5))
    opt = Adam([s], lr=0.1)
    for g in (0.1, -0.5):
        s.value.derivative = g
        opt.step()
    expected = adam_reference(np.array(0.5), [np.array(0.1), np.array(-0.5)], 0.1, 0.9, 0.999, 1e-8)
    assert s.value.data == pytest.approx(float(expected))


def test_adam_minimises_a_quadratic() -> None:
    target = tensor_from_numpy(np.array([1.0, -2.0, 3.0]))
    p = tensor_param(np.zeros(3))
    opt = Adam([p], lr=0.1)
    for _ in range(300):
        opt.zero_grad()
        ((p.value - target) * (p.value - target)).sum().backward()
        opt.step()
    np.testing.assert_allclose(p.value.to_numpy(), target.to_numpy(), atol=0.05)


def test_adam_and_momentum_on_every_backend(backend: minitorch.TensorBackend) -> None:
    p, q = tensor_param(W0, backend), tensor_param(W0, backend)
    adam, sgd = Adam([p], lr=0.01), SGD([q], lr=0.1, momentum=0.9)
    for g in (G1, G2):
        set_grad(p, g)
        set_grad(q, g)
        adam.step()
        sgd.step()
    assert p.value.backend is backend and q.value.backend is backend
    np.testing.assert_allclose(
        p.value.to_numpy(), adam_reference(W0, [G1, G2], 0.01, 0.9, 0.999, 1e-8)
    )
    np.testing.assert_allclose(q.value.to_numpy(), W0 - 0.1 * G1 - 0.1 * (0.9 * G1 + G2))


@pytest.mark.parametrize(
    "make",
    [
        lambda ps: SGD(ps, lr=-1.0),
        lambda ps: SGD(ps, lr=0.1, momentum=-0.5),
        lambda ps: Adam(ps, lr=-1e-3),
        lambda ps: Adam(ps, betas=(1.0, 0.999)),
    ],
    ids=["sgd-lr", "sgd-momentum", "adam-lr", "adam-beta"],
)
def test_invalid_hyperparameters_raise(make: Callable[[list[Parameter]], object]) -> None:
    with pytest.raises(ValueError):
        make([tensor_param(W0)])


def test_in_place_updates_equal_the_out_of_place_formulas(backend: minitorch.TensorBackend) -> None:
    """The in-place optimisers (what minitorch.compile relies on) give, bit for bit, what
    the out-of-place tensor formulas give, and keep the parameter's tensor object."""
    import math

    from minitorch.optim import _scalar_sqrt

    def tensor(values: np.ndarray) -> Tensor:
        return tensor_from_numpy(values, backend=backend)

    grads = [G1, G2, G1 * -0.5]
    sgd, momentum, adam = (tensor_param(W0, backend) for _ in range(3))
    originals = [p.value for p in (sgd, momentum, adam)]
    optimisers = [SGD([sgd], lr=0.1), SGD([momentum], lr=0.1, momentum=0.9),
                  Adam([adam], lr=0.01, betas=(0.8, 0.99), eps=1e-6)]  # fmt: skip
    w_sgd = w_mom = w_adam = tensor(W0)
    b = m = v = None
    for t, g in enumerate(grads, start=1):
        for p, optim in zip((sgd, momentum, adam), optimisers):
            set_grad(p, g)
            optim.step()
        grad = tensor(g)
        w_sgd = w_sgd - grad * 0.1
        b = grad if b is None else b * 0.9 + grad
        w_mom = w_mom - b * 0.1
        sq = grad * grad
        m = grad * (1.0 - 0.8) if m is None else m * 0.8 + grad * (1.0 - 0.8)
        v = sq * (1.0 - 0.99) if v is None else v * 0.99 + sq * (1.0 - 0.99)
        denom = v.f.map_of(_scalar_sqrt)(v) * (1.0 / math.sqrt(1.0 - 0.99**t)) + 1e-6
        w_adam = w_adam - m / denom * (0.01 / (1.0 - 0.8**t))
    for p, original, expected in zip((sgd, momentum, adam), originals, (w_sgd, w_mom, w_adam)):
        assert p.value is original
        assert np.array_equal(p.value.to_numpy(), expected.to_numpy())


def test_changed_hyperparameters_and_dtypes_take_effect_at_the_next_step() -> None:
    """The coefficient tensors are reused while the numbers stay the same: a new ``lr``
    (even -0.0 after 0.0, which differ at a -0.0 parameter), a cast of the parameters
    and a new backend must each be seen by the very next step."""
    fast = minitorch.TensorBackend(minitorch.FastOps)
    w = np.array([[-0.0, 1.0], [2.0, -3.0]])
    g = np.array([[0.0, 0.5], [0.25, 2.0]])  # -0.0 - 0.0 * lr is +0.0 only for lr = -0.0
    p = tensor_param(w, fast)
    optim = SGD([p], lr=0.5)
    expected = w.copy()
    for lr in (0.5, 0.5, 0.25, 0.0, -0.0):
        optim.lr = lr
        set_grad(p, g)
        optim.step()
        expected = expected - g * lr
        got = p.value.to_numpy()
        assert np.array_equal(got, expected)
        assert np.array_equal(np.signbit(got), np.signbit(expected))
    p.update(p.value.to(minitorch.float32))
    set_grad(p, g.astype(np.float32))
    optim.lr = 0.1
    optim.step()
    assert p.value.dtype == minitorch.float32
    expected32 = expected.astype(np.float32) - g.astype(np.float32) * np.float32(0.1)
    assert np.array_equal(p.value.to_numpy(), expected32)
    p.update(tensor_from_numpy(expected, backend=minitorch.SimpleBackend))
    set_grad(p, g)
    optim.step()
    assert p.value.backend is minitorch.SimpleBackend
    assert np.array_equal(p.value.to_numpy(), expected - g * 0.1)


# Adam's fused kernels (FastOps) ------------------------------------------------------


def adam_in_dtype(w: np.ndarray, grads: list[np.ndarray], lr: float, b1: float, b2: float,
                  eps: float, dtype: type) -> tuple[np.ndarray, ...]:  # fmt: skip
    """Adam as the unfused rule computes it: one rounding per operation in ``dtype``,
    ``m / denom`` as ``m * (1 / denom)``, the numbers taken in ``dtype``. Returns the
    parameter and both moments."""
    d = np.dtype(dtype).type
    w, m, v = w.astype(d), None, None
    with np.errstate(all="ignore"):
        for t, g in enumerate(grads, start=1):
            g = g.astype(d)
            sq = g * g
            m = g * d(1 - b1) if m is None else m * d(b1) + g * d(1 - b1)
            v = sq * d(1 - b2) if v is None else v * d(b2) + sq * d(1 - b2)
            denom = np.sqrt(v) * d(1.0 / np.sqrt(1.0 - b2**t)) + d(eps)
            w = w - m * (d(1) / denom) * d(lr / (1.0 - b1**t))
    return w, m, v


def _hostile_grads() -> list[np.ndarray]:
    """Four (4, 6) gradients: NaN, infinities, signed zeros, overflowing and vanishing
    values in the first rows, random ones (whose products round) in the rest."""
    rng = np.random.default_rng(5)
    special = [[0.1, -0.2, 0.0, 3.0, -0.0, 1e-300], [np.nan, 1e300, -2.0, np.inf, 0.5, -1e-30],
               [1.0, -np.inf, 0.0, -3.0, 2.0, 7.0], [-0.5, 0.25, 1e-8, 0.0, -1e200, 2.0]]
    grads = []
    for row in special:
        g = rng.normal(size=(4, 6))
        g[0] = row
        grads.append(g)
    return grads


HOSTILE_GRADS = _hostile_grads()
W0_HOSTILE = np.concatenate([[[0.5, -1.0, 0.0, 2.0, 0.25, -0.0]],
                             np.random.default_rng(6).normal(size=(3, 6))])  # fmt: skip


def _hostile_steps(make: Callable[[list[Parameter]], Any], kernel: str, dtype: np.dtype,
                   layout: str, monkeypatch: pytest.MonkeyPatch) -> tuple[Any, ...]:  # fmt: skip
    """Run ``make([p])``'s steps over HOSTILE_GRADS on a FastOps parameter (the gradients
    contiguous or transposed views), counting the calls of ``FastOps.<kernel>``. Returns
    the parameter, the optimiser, its tensor before the steps and the call count."""
    fast = minitorch.TensorBackend(minitorch.FastOps)
    calls = []
    fused = getattr(minitorch.FastOps, kernel)
    monkeypatch.setattr(minitorch.FastOps, kernel,
                        staticmethod(lambda *args: calls.append(1) or fused(*args)))  # fmt: skip
    p = Parameter(tensor_from_numpy(W0_HOSTILE, backend=fast, dtype=dtype), "w")
    original = p.value
    opt = make([p])
    for g in HOSTILE_GRADS:
        grad = tensor_from_numpy(g, backend=fast, dtype=dtype)
        if layout != "contiguous":
            grad = tensor_from_numpy(g.T.copy(), backend=fast, dtype=dtype).permute(1, 0)
        p.value.grad = grad
        opt.step()
    return p, opt, original, len(calls)


@pytest.mark.kernels
@pytest.mark.filterwarnings("ignore:overflow encountered in cast")
@pytest.mark.parametrize("layout", ["contiguous", "transposed gradient"])
def test_fused_adam_equals_the_unfused_rule_bit_for_bit(
    dtype: np.dtype, layout: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """FastOps runs Adam's update as three fused kernels from the second step on (a
    transposed gradient takes the unfused rule): either way every value, NaN, infinity
    and signed zero included, is the unfused rule's in the parameter's dtype."""
    p, opt, original, calls = _hostile_steps(
        lambda ps: Adam(ps, lr=0.01, betas=(0.8, 0.99), eps=1e-6), "adam_update", dtype, layout,
        monkeypatch)  # fmt: skip
    expected = adam_in_dtype(W0_HOSTILE, HOSTILE_GRADS, 0.01, 0.8, 0.99, 1e-6, dtype)
    _, m, v = opt.state[0]
    for got, want in zip((p.value.to_numpy(), m.to_numpy(), v.to_numpy()), expected):
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(np.signbit(got), np.signbit(want))
    assert p.value is original
    assert_fresh_leaf(p)
    assert calls == (len(HOSTILE_GRADS) - 1 if layout == "contiguous" else 0)


@pytest.mark.kernels
def test_fused_adam_on_a_parameter_big_enough_for_the_parallel_kernels(dtype: np.dtype) -> None:
    rng = np.random.default_rng(3)
    fast = minitorch.TensorBackend(minitorch.FastOps)
    w0 = rng.normal(size=(200, 200))
    grads = [rng.normal(size=w0.shape) * 10.0 ** rng.integers(-5, 5, w0.shape) for _ in range(3)]
    grads[1][0, :7] = [np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-40, -1e-40]
    p = Parameter(tensor_from_numpy(w0, backend=fast, dtype=dtype), "w")
    opt = Adam([p], lr=0.01)
    for g in grads:
        p.value.grad = tensor_from_numpy(g, backend=fast, dtype=dtype)
        opt.step()
    expected = adam_in_dtype(w0, grads, 0.01, 0.9, 0.999, 1e-8, dtype)
    _, m, v = opt.state[0]
    for got, want in zip((p.value.to_numpy(), m.to_numpy(), v.to_numpy()), expected):
        np.testing.assert_array_equal(got, want)


def sgd_in_dtype(w: np.ndarray, grads: list[np.ndarray], lr: float, momentum: float,
                 dtype: type) -> tuple[np.ndarray, np.ndarray | None]:  # fmt: skip
    """SGD as the unfused rule computes it, one rounding per operation in ``dtype``.
    Returns the parameter and the velocity (None without momentum)."""
    d = np.dtype(dtype).type
    w, b = w.astype(d), None
    with np.errstate(all="ignore"):
        for g in grads:
            g = g.astype(d)
            if momentum:
                b = g if b is None else b * d(momentum) + g
                g = b
            w = w - g * d(lr)
    return w, b


@pytest.mark.kernels
@pytest.mark.filterwarnings("ignore:overflow encountered in cast")
@pytest.mark.parametrize("momentum", [0.0, 0.9], ids=["plain", "momentum"])
@pytest.mark.parametrize("layout", ["contiguous", "transposed gradient"])
def test_fused_sgd_equals_the_unfused_rule_bit_for_bit(
    dtype: np.dtype, layout: str, momentum: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    """FastOps runs SGD's update as one fused kernel (two with momentum, from the second
    step, once the velocity exists); a transposed gradient takes the unfused rule. Every
    value is the rule's in the parameter's dtype, NaN, infinities and signed zeros too."""
    p, opt, original, calls = _hostile_steps(
        lambda ps: SGD(ps, lr=0.1, momentum=momentum), "sgd_update", dtype, layout, monkeypatch)
    expected, velocity = sgd_in_dtype(W0_HOSTILE, HOSTILE_GRADS, 0.1, momentum, dtype)
    got = p.value.to_numpy()
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(np.signbit(got), np.signbit(expected))
    if momentum:
        np.testing.assert_array_equal(opt.velocity[0].to_numpy(), velocity)
    assert p.value is original
    assert_fresh_leaf(p)
    fused_steps = len(HOSTILE_GRADS) - (1 if momentum else 0)
    assert calls == (fused_steps if layout == "contiguous" else 0)


@pytest.mark.kernels
@pytest.mark.parametrize("momentum", [0.0, 0.9], ids=["plain", "momentum"])
def test_fused_sgd_on_a_parameter_big_enough_for_the_parallel_kernels(
    dtype: np.dtype, momentum: float
) -> None:
    rng = np.random.default_rng(4)
    fast = minitorch.TensorBackend(minitorch.FastOps)
    w0 = rng.normal(size=(200, 200))
    grads = [rng.normal(size=w0.shape) * 10.0 ** rng.integers(-5, 5, w0.shape) for _ in range(3)]
    p = Parameter(tensor_from_numpy(w0, backend=fast, dtype=dtype), "w")
    opt = SGD([p], lr=0.05, momentum=momentum)
    for g in grads:
        p.value.grad = tensor_from_numpy(g, backend=fast, dtype=dtype)
        opt.step()
    expected, velocity = sgd_in_dtype(w0, grads, 0.05, momentum, dtype)
    np.testing.assert_array_equal(p.value.to_numpy(), expected)
    if momentum:
        np.testing.assert_array_equal(opt.velocity[0].to_numpy(), velocity)


@pytest.mark.kernels
def test_a_gradient_that_is_the_optimiser_state_gives_the_rule() -> None:
    """Hostile: the gradient handed in is Adam's own first moment. The rule squares the
    gradient before the moment moves; a fused update reading it afterwards would square
    the new moment (so such a step takes the rule)."""
    fast = minitorch.TensorBackend(minitorch.FastOps)
    rng = np.random.default_rng(7)
    # First gradients whose moment moves when it is its own gradient (m b1 + m (1 - b1)
    # rounds away from m for about 5% of values), so that the order shows.
    g = rng.normal(size=4000)
    m = g * (1 - 0.9)
    g0 = g[m * 0.9 + m * (1 - 0.9) != m][:24].reshape(4, 6)
    w0 = rng.normal(size=(4, 6))
    p = Parameter(tensor_from_numpy(w0, backend=fast), "w")
    opt = Adam([p], lr=0.01, betas=(0.9, 0.5))  # the squared gradient weighs half
    p.value.grad = tensor_from_numpy(g0, backend=fast)
    opt.step()
    m = opt.state[0][1]
    g1 = m.to_numpy().copy()
    p.value.grad = m
    opt.step()
    expected = adam_in_dtype(w0, [g0, g1], 0.01, 0.9, 0.5, 1e-8, np.float64)
    for got, want in zip((p.value, opt.state[0][1], opt.state[0][2]), expected):
        np.testing.assert_array_equal(got.to_numpy(), want)
