"""Layers (minitorch.layers): shapes, parameter names, forward against NumPy, gradients."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

import minitorch
from minitorch import Module, SimpleBackend, Tensor, grad_check, tensor_from_numpy
from minitorch.layers import (
    Conv1d,
    Conv2d,
    Dropout,
    Flatten,
    Linear,
    ReLU,
    Sequential,
    Sigmoid,
    Tanh,
)


def values(module: Module) -> dict[str, np.ndarray]:
    return {name: p.value.to_numpy() for name, p in module.named_parameters()}


def random_input(*shape: int, scale: float = 1.0) -> Tensor:
    rng = np.random.default_rng(sum(shape))
    return tensor_from_numpy(rng.uniform(-scale, scale, size=shape))


def assert_parameter_grads_match(module: Module, x: Tensor, samples: int = 3) -> None:
    """Autodiff gradients of ``module(x).sum()`` match central differences.

    Each parameter is checked at a few random elements, perturbed in place.
    """
    for p in module.parameters():
        p.value.zero_grad_()
    module(x).sum().backward()
    eps = 1e-6
    for name, p in module.named_parameters():
        t = p.value
        assert t.grad is not None and t.grad.shape == t.shape, name
        for _ in range(samples):
            idx = t._tensor.sample()
            old = t[idx]
            t[idx] = old + eps
            up = module(x).sum().item()
            t[idx] = old - eps
            down = module(x).sum().item()
            t[idx] = old
            np.testing.assert_allclose(
                t.grad[idx], (up - down) / (2 * eps), rtol=1e-2, atol=1e-2, err_msg=name
            )


# Linear ---------------------------------------------------------------------------


def test_linear_registers_weight_and_bias_with_pytorch_style_bounds() -> None:
    random.seed(1)
    layer = Linear(9, 4)
    assert [n for n, _ in layer.named_parameters()] == ["weight", "bias"]
    assert layer.weight.value.shape == (9, 4)
    assert layer.bias.value.shape == (4,)
    for array in values(layer).values():
        assert np.abs(array).max() <= 1 / math.sqrt(9)
        assert array.std() > 0.05  # not collapsed to a constant
    assert layer.weight.value.name == "weight"


def test_linear_without_bias_has_only_a_weight() -> None:
    layer = Linear(3, 2, bias=False)
    assert [n for n, _ in layer.named_parameters()] == ["weight"]
    x = random_input(5, 3)
    np.testing.assert_allclose(layer(x).to_numpy(), x.to_numpy() @ values(layer)["weight"])


def test_linear_forward_matches_numpy() -> None:
    layer = Linear(3, 4)
    x = random_input(5, 3)
    p = values(layer)
    out = layer(x)
    assert out.shape == (5, 4)
    np.testing.assert_allclose(out.to_numpy(), x.to_numpy() @ p["weight"] + p["bias"])


def test_linear_applies_to_the_last_dim_of_batched_input() -> None:
    layer = Linear(3, 2)
    x = random_input(2, 5, 3)
    p = values(layer)
    out = layer(x)
    assert out.shape == (2, 5, 2)
    np.testing.assert_allclose(out.to_numpy(), x.to_numpy() @ p["weight"] + p["bias"])


def test_linear_gradients() -> None:
    random.seed(2)
    layer = Linear(3, 2)
    x = random_input(4, 3)
    grad_check(layer, x)
    assert_parameter_grads_match(layer, x)
    # d(sum(x @ W + b))/dW = x^T @ ones, and d/db = batch size.
    np.testing.assert_allclose(layer.weight.value.grad.to_numpy(), x.to_numpy().T @ np.ones((4, 2)))
    np.testing.assert_allclose(layer.bias.value.grad.to_numpy(), [4.0, 4.0])


# Activations, Flatten, Sequential ---------------------------------------------------


@pytest.mark.parametrize(
    "layer, reference",
    [
        (ReLU(), lambda a: np.maximum(a, 0.0)),
        (Sigmoid(), lambda a: 1 / (1 + np.exp(-a))),
        (Tanh(), np.tanh),
    ],
    ids=["relu", "sigmoid", "tanh"],
)
def test_activations_match_numpy(layer: Module, reference: np.ufunc) -> None:
    x = random_input(3, 4, scale=5.0)
    assert list(layer.parameters()) == []
    np.testing.assert_allclose(layer(x).to_numpy(), reference(x.to_numpy()), atol=1e-9)


def test_tanh_gradient() -> None:
    grad_check(Tanh(), random_input(2, 3, scale=3.0))


def test_flatten_keeps_batch_and_handles_non_contiguous_input() -> None:
    x = random_input(2, 3, 4, 5)
    assert Flatten()(x).shape == (2, 60)
    permuted = x.permute(0, 3, 1, 2)
    expected = x.to_numpy().transpose(0, 3, 1, 2).reshape(2, -1)
    np.testing.assert_allclose(Flatten()(permuted).to_numpy(), expected)
    grad_check(lambda t: Flatten()(t.permute(0, 2, 1)), random_input(2, 3, 4))


def test_sequential_names_children_by_position() -> None:
    first, second = Linear(2, 3), Linear(3, 1)
    net = Sequential(first, ReLU(), second, Sigmoid())
    assert [n for n, _ in net.named_parameters()] == [
        "0.weight",
        "0.bias",
        "2.weight",
        "2.bias",
    ]
    assert len(net) == 4 and net[0] is first and net[2] is second
    assert list(net)[2] is second
    assert "(2): Linear(in_features=3, out_features=1)" in repr(net)


def test_sequential_forward_matches_numpy_and_gradients_flow() -> None:
    random.seed(3)
    net = Sequential(Linear(2, 3), Tanh(), Linear(3, 1), Sigmoid())
    x = random_input(4, 2)
    p = values(net)
    hidden = np.tanh(x.to_numpy() @ p["0.weight"] + p["0.bias"])
    expected = 1 / (1 + np.exp(-(hidden @ p["2.weight"] + p["2.bias"])))
    np.testing.assert_allclose(net(x).to_numpy(), expected, atol=1e-9)
    grad_check(net, x)
    assert_parameter_grads_match(net, x)


def test_layers_on_every_backend(backend: minitorch.TensorBackend) -> None:
    random.seed(7)
    net = Sequential(Linear(3, 4, backend), Tanh(), Dropout(0.5), Linear(4, 2, backend), ReLU())
    net.eval()
    x = random_input(5, 3)
    p = values(net)
    hidden = np.tanh(x.to_numpy() @ p["0.weight"] + p["0.bias"])
    expected = np.maximum(hidden @ p["3.weight"] + p["3.bias"], 0.0)
    out = net(tensor_from_numpy(x.to_numpy(), backend=backend))
    assert out.backend is backend
    np.testing.assert_allclose(out.to_numpy(), expected, atol=1e-9)


# Dropout --------------------------------------------------------------------------


def test_dropout_zeroes_and_rescales_in_training_only() -> None:
    random.seed(4)
    layer = Dropout(0.25)
    x = tensor_from_numpy(np.ones((40, 50)))
    out = layer(x).to_numpy()
    kept = out != 0
    assert 0.65 < kept.mean() < 0.85
    np.testing.assert_allclose(out[kept], 1 / 0.75)
    layer.eval()
    np.testing.assert_array_equal(layer(x).to_numpy(), x.to_numpy())


def test_dropout_extreme_rates_and_eval_through_a_parent() -> None:
    x = random_input(3, 4)
    assert Dropout(0.0)(x) is x
    np.testing.assert_array_equal(Dropout(1.0)(x).to_numpy(), np.zeros((3, 4)))
    net = Sequential(Linear(4, 4), Dropout(0.9))
    net.eval()
    np.testing.assert_allclose(net(x).to_numpy(), net[0](x).to_numpy())
    with pytest.raises(ValueError, match="rate"):
        Dropout(1.5)


# Convolutions ---------------------------------------------------------------------


def conv1d_reference(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Left-anchored correlation with zeros past the right edge, plus bias."""
    _, _, width = x.shape
    k = w.shape[2]
    padded = np.pad(x, ((0, 0), (0, 0), (0, k - 1)))
    out = np.stack(
        [np.einsum("bck,ock->bo", padded[:, :, j : j + k], w) for j in range(width)], axis=2
    )
    return out + b


def conv2d_reference(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Top-left-anchored correlation with zeros past the bottom/right edges, plus bias."""
    _, _, height, width = x.shape
    kh, kw = w.shape[2:]
    padded = np.pad(x, ((0, 0), (0, 0), (0, kh - 1), (0, kw - 1)))
    out = np.zeros((x.shape[0], w.shape[0], height, width))
    for i in range(height):
        for j in range(width):
            patch = padded[:, :, i : i + kh, j : j + kw]
            out[:, :, i, j] = np.einsum("bchw,ochw->bo", patch, w)
    return out + b


@pytest.mark.kernels
def test_conv1d_layer() -> None:
    random.seed(5)
    layer = Conv1d(2, 3, 4)
    assert [n for n, _ in layer.named_parameters()] == ["weight", "bias"]
    assert layer.weight.value.shape == (3, 2, 4)
    assert layer.bias.value.shape == (3, 1)
    assert np.abs(values(layer)["weight"]).max() <= 1 / math.sqrt(2 * 4)
    x = random_input(2, 2, 7)
    p = values(layer)
    out = layer(x)
    assert out.shape == (2, 3, 7)
    np.testing.assert_allclose(
        out.to_numpy(), conv1d_reference(x.to_numpy(), p["weight"], p["bias"]), atol=1e-9
    )
    grad_check(layer, x)
    assert_parameter_grads_match(layer, x)


@pytest.mark.kernels
def test_conv2d_layer() -> None:
    random.seed(6)
    layer = Conv2d(2, 3, (2, 3))
    assert [n for n, _ in layer.named_parameters()] == ["weight", "bias"]
    assert layer.weight.value.shape == (3, 2, 2, 3)
    assert layer.bias.value.shape == (3, 1, 1)
    assert Conv2d(1, 1, 3).weight.value.shape == (1, 1, 3, 3)
    x = random_input(2, 2, 4, 5)
    p = values(layer)
    out = layer(x)
    assert out.shape == (2, 3, 4, 5)
    np.testing.assert_allclose(
        out.to_numpy(), conv2d_reference(x.to_numpy(), p["weight"], p["bias"]), atol=1e-9
    )
    grad_check(layer, x)
    assert_parameter_grads_match(layer, x)


@pytest.mark.kernels
def test_layers_run_on_the_fast_backend() -> None:
    fast = minitorch.TensorBackend(minitorch.FastOps)
    net = Sequential(Conv2d(1, 2, 3, backend=fast), ReLU(), Flatten(), Linear(2 * 4 * 4, 3, fast))
    x = tensor_from_numpy(np.random.default_rng(0).uniform(size=(5, 1, 4, 4)), backend=fast)
    out = net(x)
    assert out.shape == (5, 3) and out.backend is fast
    slow = Sequential(Conv2d(1, 2, 3), ReLU(), Flatten(), Linear(2 * 4 * 4, 3))
    slow.load_state_dict(net.state_dict())
    np.testing.assert_allclose(
        slow(tensor_from_numpy(x.to_numpy(), backend=SimpleBackend)).to_numpy(),
        out.to_numpy(),
        atol=1e-9,
    )
