"""1-D and 2-D convolution against a NumPy reference (contract section 8)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from strategies import assert_close, assert_exact, tensor_arrays

import minitorch
from minitorch import IndexingError, Tensor, TensorBackend
from minitorch.fast_conv import tensor_conv1d, tensor_conv2d

# NumPy references ------------------------------------------------------------


def conv1d_ref(x: np.ndarray, w: np.ndarray, reverse: bool = False) -> np.ndarray:
    """``out[b,o,j] = sum_c sum_k w[o,c,k] x[b,c,j+k]`` (``j-k`` when reversed), zero outside."""
    batch, _, width = x.shape
    out = np.zeros((batch, w.shape[0], width))
    for j in range(width):
        for k in range(w.shape[2]):
            p = j - k if reverse else j + k
            if 0 <= p < width:
                out[:, :, j] += x[:, :, p] @ w[:, :, k].T
    return out


def conv2d_ref(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """``out[b,o,y,x] = sum_c sum_{i,j} w[o,c,i,j] in[b,c,y+i,x+j]``, zero past the edges."""
    batch, _, height, width = x.shape
    kh, kw = w.shape[2:]
    padded = np.pad(x, ((0, 0), (0, 0), (0, kh - 1), (0, kw - 1)))
    out = np.zeros((batch, w.shape[0], height, width))
    for y in range(height):
        for xx in range(width):
            window = padded[:, :, y : y + kh, xx : xx + kw]
            out[:, :, y, xx] = np.einsum("bcij,ocij->bo", window, w)
    return out


def linear_grads(
    ref: Callable[[np.ndarray, np.ndarray], np.ndarray],
    x: np.ndarray,
    w: np.ndarray,
    g: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Gradients of ``sum(ref(x, w) * g)``: conv is linear in each argument, so
    the gradient at an element is the output for a unit impulse there."""
    grad_x = np.zeros_like(x)
    for idx in np.ndindex(*x.shape):
        e = np.zeros_like(x)
        e[idx] = 1.0
        grad_x[idx] = np.sum(ref(e, w) * g)
    grad_w = np.zeros_like(w)
    for idx in np.ndindex(*w.shape):
        e = np.zeros_like(w)
        e[idx] = 1.0
        grad_w[idx] = np.sum(ref(x, e) * g)
    return grad_x, grad_w


# Shapes --------------------------------------------------------------------------


@st.composite
def conv1d_shapes(draw: st.DrawFn) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    batch = draw(st.integers(1, 2))
    cin, cout = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    width = draw(st.integers(1, 6))
    k = draw(st.integers(1, width))
    return (batch, cin, width), (cout, cin, k)


@st.composite
def conv2d_shapes(
    draw: st.DrawFn,
) -> tuple[tuple[int, int, int, int], tuple[int, int, int, int]]:
    batch = draw(st.integers(1, 2))
    cin, cout = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    height, width = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    kh, kw = draw(st.integers(1, height)), draw(st.integers(1, width))
    return (batch, cin, height, width), (cout, cin, kh, kw)


def run(backend: TensorBackend, check: Callable[..., None], *strategies: object) -> None:
    """Run ``check`` as a small hypothesis property (fewer examples on CUDA)."""
    configured = settings(
        max_examples=3 if backend.cuda else 15,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    configured(given(*strategies)(check))()


def pair(backend: TensorBackend, shapes: st.SearchStrategy) -> st.SearchStrategy:
    """(input, input array, weight, weight array), usually non-contiguous."""

    @st.composite
    def draw_pair(draw: st.DrawFn) -> tuple[Tensor, np.ndarray, Tensor, np.ndarray]:
        x_shape, w_shape = draw(shapes)
        x, nx = draw(tensor_arrays(backend, x_shape))
        w, nw = draw(tensor_arrays(backend, w_shape))
        return x, nx, w, nw

    return draw_pair()


# Forward -------------------------------------------------------------------------


def test_conv1d_contract_example(backend: TensorBackend) -> None:
    x = minitorch.tensor([0, 1, 2, 3], backend=backend).view(1, 1, 4)
    w = minitorch.tensor([[[1, 2, 3]]], backend=backend)
    assert_exact(minitorch.conv1d(x, w), [[[8, 14, 8, 3]]])
    assert_exact(minitorch.Conv1dFun.apply(x, w), [[[8, 14, 8, 3]]])


def test_conv2d_small_example(backend: TensorBackend) -> None:
    x = minitorch.tensor([[[[1, 2, 3], [4, 5, 6]]]], backend=backend)
    w = minitorch.tensor([[[[1, 10], [100, 1000]]]], backend=backend)
    # Each output adds the window anchored at its top-left; the rest is zero.
    expected = [[[[5421, 6532, 603], [54, 65, 6]]]]
    assert_exact(minitorch.conv2d(x, w), expected)


def test_conv1d_matches_numpy(backend: TensorBackend) -> None:
    def check(data: tuple[Tensor, np.ndarray, Tensor, np.ndarray]) -> None:
        x, nx, w, nw = data
        assert_close(minitorch.conv1d(x, w), conv1d_ref(nx, nw))

    run(backend, check, pair(backend, conv1d_shapes()))


def test_conv2d_matches_numpy(backend: TensorBackend) -> None:
    def check(data: tuple[Tensor, np.ndarray, Tensor, np.ndarray]) -> None:
        x, nx, w, nw = data
        assert_close(minitorch.conv2d(x, w), conv2d_ref(nx, nw))

    run(backend, check, pair(backend, conv2d_shapes()))


@pytest.mark.kernels
def test_conv1d_reverse_kernel_anchors_right() -> None:
    """The raw kernel with ``reverse=True`` reads ``x[j-k]``, zeros before the left edge."""
    rng = np.random.default_rng(0)
    x, w = rng.normal(size=(2, 3, 5)), rng.normal(size=(2, 3, 3))
    out = np.zeros((2, 2, 5))
    tensor_conv1d(*_triple(out), out.size, *_triple(x), *_triple(w), True)
    np.testing.assert_allclose(out, conv1d_ref(x, w, reverse=True))


@pytest.mark.kernels
def test_kernels_write_through_output_strides() -> None:
    """Outputs may be non-contiguous views: the backward pass writes through one."""
    rng = np.random.default_rng(1)
    x, w = rng.normal(size=(2, 2, 3, 4)), rng.normal(size=(3, 2, 2, 2))
    out = np.zeros((3, 2, 3, 4))  # stored (Cout, B, H, W), viewed as (B, Cout, H, W)
    storage, shape, strides = _triple(out)
    order = [1, 0, 2, 3]
    tensor_conv2d(storage, shape[order], strides[order], out.size, *_triple(x), *_triple(w), False)
    np.testing.assert_allclose(out.transpose(1, 0, 2, 3), conv2d_ref(x, w))


def _triple(a: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A contiguous array as the kernels' (storage, shape, strides)."""
    strides = np.array(a.strides, dtype=np.int64) // a.itemsize
    return a.reshape(-1), np.array(a.shape, dtype=np.int64), strides


# Backward ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("conv", "ref", "shapes"),
    [
        pytest.param(minitorch.conv1d, conv1d_ref, conv1d_shapes(), id="1d"),
        pytest.param(minitorch.conv2d, conv2d_ref, conv2d_shapes(), id="2d"),
    ],
)
def test_conv_gradients(
    backend: TensorBackend,
    conv: Callable[[Tensor, Tensor], Tensor],
    ref: Callable[[np.ndarray, np.ndarray], np.ndarray],
    shapes: st.SearchStrategy,
) -> None:
    """Every element of both gradients, and grad_check's central difference."""

    def check(data: tuple[Tensor, np.ndarray, Tensor, np.ndarray], seed: int) -> None:
        x, nx, w, nw = data
        ng = np.random.default_rng(seed).normal(size=ref(nx, nw).shape)
        g = minitorch.tensor_from_numpy(ng, backend=backend)
        x.requires_grad_(True)
        w.requires_grad_(True)
        (conv(x, w) * g).sum().backward()
        grad_x, grad_w = linear_grads(ref, nx, nw, ng)
        assert_close(x.grad, grad_x)
        assert_close(w.grad, grad_w)
        minitorch.grad_check(conv, x, w)

    run(backend, check, pair(backend, shapes), st.integers(0, 2**16))


# Shape errors --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("conv", "x_shape", "w_shape", "message"),
    [
        (minitorch.conv1d, (1, 2, 4), (1, 3, 2), "channels"),
        (minitorch.conv1d, (1, 2, 4), (1, 2, 5), "kernel"),
        (minitorch.conv1d, (2, 4), (1, 2, 3), "shaped"),
        (minitorch.conv1d, (1, 1, 4), (1, 1, 2, 2), "shaped"),
        (minitorch.conv2d, (1, 2, 4, 4), (1, 1, 2, 2), "channels"),
        (minitorch.conv2d, (1, 1, 3, 4), (1, 1, 4, 2), "kernel"),
        (minitorch.conv2d, (1, 1, 3, 4), (1, 1, 2, 5), "kernel"),
        (minitorch.conv2d, (1, 1, 4), (1, 1, 2, 2), "shaped"),
    ],
)
def test_conv_shape_errors(
    backend: TensorBackend,
    conv: Callable[[Tensor, Tensor], Tensor],
    x_shape: tuple[int, ...],
    w_shape: tuple[int, ...],
    message: str,
) -> None:
    x = minitorch.zeros(x_shape, backend=backend)
    w = minitorch.zeros(w_shape, backend=backend)
    with pytest.raises(IndexingError, match=message):
        conv(x, w)
