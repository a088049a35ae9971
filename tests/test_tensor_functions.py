"""Differentiable tensor functions on every backend: forward against NumPy, and gradients.

Contract sections 6, 7 and 11. Inputs are usually permuted (non-contiguous)
views, and binary operands usually broadcast, often across different ranks.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from hypothesis import strategies as st
from strategies import (
    assert_close,
    assert_exact,
    positive_floats,
    run_property,
    small_floats,
    small_ints,
    tensor_array_pairs,
    tensor_arrays,
)

import minitorch
from minitorch import IndexingError, Tensor, TensorBackend, grad_check
from minitorch.tensor_functions import Permute, Sum, View

# Values away from 0, where relu has its kink and division blows up.
away_from_zero = st.one_of(positive_floats, positive_floats.map(lambda x: -x))
# exp of large values swamps the sum that grad_check differentiates.
moderate_floats = st.floats(min_value=-5, max_value=5)


def np_sigmoid(a: np.ndarray) -> np.ndarray:
    e = np.exp(-np.abs(a))
    return np.where(a >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def unbroadcast(grad: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Sum a broadcast gradient back to ``shape`` (the NumPy oracle for ``expand``)."""
    extra = grad.ndim - len(shape)
    grad = grad.sum(axis=tuple(range(extra))) if extra else grad
    axes = tuple(i for i, d in enumerate(shape) if d == 1 and grad.shape[i] != 1)
    return grad.sum(axis=axes, keepdims=True) if axes else grad


def assert_new_contiguous(out: Tensor) -> None:
    """Results of map, zip, reduce and matmul are contiguous, so ``view`` works on them."""
    assert out._tensor.is_contiguous()
    assert out.view(out.size).shape == (out.size,)


# Forward: elementwise -------------------------------------------------------------

UNARY: dict[str, tuple[Callable[[Tensor], Tensor], Callable[[np.ndarray], Any], Any]] = {
    "neg": (lambda t: -t, lambda a: -a, small_floats),
    "sigmoid": (lambda t: t.sigmoid(), np_sigmoid, small_floats),
    "relu": (lambda t: t.relu(), lambda a: np.where(a > 0, a, 0.0), small_floats),
    "log": (lambda t: t.log(), lambda a: np.log(a + 1e-6), positive_floats),
    "exp": (lambda t: t.exp(), np.exp, small_floats),
    "inv": (lambda t: 1.0 / t, lambda a: 1.0 / a, away_from_zero),
    "contiguous": (lambda t: t.contiguous(), lambda a: a, small_floats),
}


@pytest.mark.parametrize("name", list(UNARY))
def test_unary_forward(backend: TensorBackend, name: str) -> None:
    fn, ref, elements = UNARY[name]

    def check(pair: tuple[Tensor, np.ndarray]) -> None:
        t, a = pair
        out = fn(t)
        assert_close(out, ref(a))
        assert_new_contiguous(out)

    run_property(backend, check, tensor_arrays(backend, elements=elements))


def test_relu_is_exactly_zero_below(backend: TensorBackend) -> None:
    t = minitorch.tensor([-3.0, -0.0, 0.0, 2.5], backend=backend)
    assert t.relu().to_numpy().tolist() == [0.0, 0.0, 0.0, 2.5]


BINARY: dict[str, tuple[Callable[[Tensor, Tensor], Tensor], Callable[..., Any]]] = {
    "add": (lambda a, b: a + b, lambda a, b: a + b),
    "sub": (lambda a, b: a - b, lambda a, b: a - b),
    "mul": (lambda a, b: a * b, lambda a, b: a * b),
    "div": (lambda a, b: a / b, lambda a, b: a / b),
}


@pytest.mark.parametrize("name", list(BINARY))
def test_binary_forward_broadcast(backend: TensorBackend, name: str) -> None:
    fn, ref = BINARY[name]
    elements_b = away_from_zero if name == "div" else small_floats

    def check(quad: tuple[Tensor, np.ndarray, Tensor, np.ndarray]) -> None:
        ta, na, tb, nb = quad
        out = fn(ta, tb)
        assert_close(out, ref(na, nb))
        assert_new_contiguous(out)

    run_property(backend, check, tensor_array_pairs(backend, elements_b=elements_b))


COMPARE: dict[str, tuple[Callable[[Tensor, Tensor], Tensor], Callable[..., Any]]] = {
    "lt": (lambda a, b: a < b, np.less),
    "gt": (lambda a, b: a > b, np.greater),
    "eq": (lambda a, b: a == b, np.equal),
}


@pytest.mark.parametrize("name", list(COMPARE))
def test_compare_forward_exact(backend: TensorBackend, name: str) -> None:
    fn, ref = COMPARE[name]

    def check(quad: tuple[Tensor, np.ndarray, Tensor, np.ndarray]) -> None:
        ta, na, tb, nb = quad
        out = fn(ta, tb)
        assert_exact(out, ref(na, nb).astype(np.float64))

    # Few distinct values, so ties are common.
    run_property(backend, check, tensor_array_pairs(backend, elements=small_ints))


def test_is_close_forward(backend: TensorBackend) -> None:
    offsets = st.tuples(small_ints, st.sampled_from([0.0, 0.005, -0.005, 0.5])).map(sum)

    def check(quad: tuple[Tensor, np.ndarray, Tensor, np.ndarray]) -> None:
        ta, na, tb, nb = quad
        out = ta.is_close(tb)
        assert_exact(out, (np.abs(na - nb) < 1e-2).astype(np.float64))
        expected_all = float(np.all(np.abs(na - nb) < 1e-2))
        assert out.all().item() == expected_all

    run_property(
        backend, check, tensor_array_pairs(backend, elements=small_ints, elements_b=offsets)
    )


# Forward: reductions -------------------------------------------------------------

REDUCE: dict[str, tuple[Callable[..., Tensor], Callable[..., Any], Any]] = {
    "sum": (Tensor.sum, np.sum, small_floats),
    "mean": (Tensor.mean, np.mean, small_floats),
    "all": (Tensor.all, np.prod, st.sampled_from([0.0, 1.0, 1.0, 1.0, 2.0, -1.0, 0.5])),
}


@pytest.mark.parametrize("name", list(REDUCE))
def test_reduce_forward(backend: TensorBackend, name: str) -> None:
    method, ref, elements = REDUCE[name]

    def check(pair: tuple[Tensor, np.ndarray], data: st.DataObject) -> None:
        t, a = pair
        dim = data.draw(st.none() | st.integers(min_value=-t.dims, max_value=t.dims - 1))
        if dim is None:
            out = method(t)
            assert out.shape == (1,)
            assert_close(out, np.array([ref(a)]))
        else:
            expected = ref(a, axis=dim, keepdims=True)
            assert_close(method(t, dim), expected)
            assert_close(method(t, dim=dim), expected)
            out = method(t, dim)
        assert_new_contiguous(out)

    run_property(backend, check, tensor_arrays(backend, elements=elements), st.data())


def test_reduce_keeps_dim_examples(backend: TensorBackend) -> None:
    t = minitorch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]], backend=backend)
    assert t.sum(0).shape == (1, 2)
    assert t.sum(1).shape == (3, 1)
    assert t.sum(-1).shape == (3, 1)
    assert t.sum().shape == (1,)
    assert_exact(t.sum(0), [[9.0, 12.0]])
    assert_exact(t.sum(1), [[3.0], [7.0], [11.0]])
    assert_exact(t.mean(0), [[3.0, 4.0]])
    assert_exact(t.mean(), [3.5])
    assert_exact(t.all(), [720.0])
    assert_exact(t.all(1), [[2.0], [12.0], [30.0]])
    # The course passes dims as tensors.
    assert_exact(Sum.apply(t, minitorch.tensor([1.0], backend=backend)), [[3.0], [7.0], [11.0]])
    assert t.sum(0).view(2).shape == (2,)


def test_reduce_bad_dim_raises(backend: TensorBackend) -> None:
    t = minitorch.tensor([[1.0, 2.0], [3.0, 4.0]], backend=backend)
    for dim in (2, -3):
        with pytest.raises(IndexingError):
            t.sum(dim)
        with pytest.raises(IndexingError):
            t.mean(dim)


# Forward: movement ----------------------------------------------------------------


def test_permute_forward(backend: TensorBackend) -> None:
    def check(pair: tuple[Tensor, np.ndarray], data: st.DataObject) -> None:
        t, a = pair
        order = data.draw(st.permutations(range(t.dims)))
        assert_exact(t.permute(*order), a.transpose(order))
        assert_exact(t.permute(order), a.transpose(order))

    run_property(backend, check, tensor_arrays(backend), st.data())


def test_contiguous_copies(backend: TensorBackend) -> None:
    def check(pair: tuple[Tensor, np.ndarray]) -> None:
        t, a = pair
        c = t.contiguous()
        assert_exact(c, a)
        assert c._tensor.is_contiguous()
        c[tuple(0 for _ in c.shape)] = 1e6
        assert_exact(t, a)

    run_property(backend, check, tensor_arrays(backend))


def test_view_forward(backend: TensorBackend) -> None:
    def check(pair: tuple[Tensor, np.ndarray], data: st.DataObject) -> None:
        t, a = pair
        c = t.contiguous()
        flat = a.reshape(-1)
        assert_exact(c.view(c.size), flat)
        assert_exact(c.view(-1), flat)
        split = data.draw(st.sampled_from([d for d in range(1, c.size + 1) if c.size % d == 0]))
        assert_exact(c.view(split, -1), flat.reshape(split, -1))
        assert_exact(c.view(-1, split), flat.reshape(-1, split))
        assert_exact(c.view((1, c.size)), flat.reshape(1, -1))

    run_property(backend, check, tensor_arrays(backend), st.data())


def test_view_errors(backend: TensorBackend) -> None:
    t = minitorch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], backend=backend)
    with pytest.raises(RuntimeError):
        t.permute(1, 0).view(6)
    with pytest.raises(RuntimeError):
        t.view(4)
    with pytest.raises(RuntimeError):
        t.view(-1, -1)
    with pytest.raises(RuntimeError):
        t.view(4, -1)
    assert_exact(t.permute(1, 0).contiguous().view(6), [1.0, 4.0, 2.0, 5.0, 3.0, 6.0])


# Forward: matrix multiply --------------------------------------------------------


MATMUL_LAYOUTS = {
    "2d": lambda d, a, b, c: ((a, b), (b, c)),
    "3d": lambda d, a, b, c: ((d, a, b), (d, b, c)),
    "batch_b1": lambda d, a, b, c: ((d, a, b), (1, b, c)),
    "batch_a1": lambda d, a, b, c: ((1, a, b), (d, b, c)),
    "2d_3d": lambda d, a, b, c: ((a, b), (d, b, c)),
    "3d_2d": lambda d, a, b, c: ((d, a, b), (b, c)),
    "4d": lambda d, a, b, c: ((2, 1, a, b), (1, d, b, c)),
}


def matmul_operands(backend: TensorBackend, layout: str) -> st.SearchStrategy[Any]:
    cap = 2 if backend.cuda else 4

    @st.composite
    def operands(draw: st.DrawFn) -> tuple[Tensor, np.ndarray, Tensor, np.ndarray]:
        d, a, b, c = (draw(st.integers(min_value=1, max_value=cap)) for _ in range(4))
        shape_a, shape_b = MATMUL_LAYOUTS[layout](d, a, b, c)
        ta, na = draw(tensor_arrays(backend, shape_a, moderate_floats))
        tb, nb = draw(tensor_arrays(backend, shape_b, moderate_floats))
        return ta, na, tb, nb

    return operands()


@pytest.mark.parametrize("layout", list(MATMUL_LAYOUTS))
def test_matmul_forward(backend: TensorBackend, layout: str) -> None:
    def check(quad: tuple[Tensor, np.ndarray, Tensor, np.ndarray]) -> None:
        ta, na, tb, nb = quad
        out = ta @ tb
        assert_close(out, na @ nb)
        assert_new_contiguous(out)

    run_property(backend, check, matmul_operands(backend, layout), heavy=True)


def test_matmul_example(backend: TensorBackend) -> None:
    a = minitorch.tensor([[1.0, 2.0], [3.0, 4.0]], backend=backend)
    b = minitorch.tensor([[5.0, 6.0], [7.0, 8.0]], backend=backend)
    assert_exact(a @ b, [[19.0, 22.0], [43.0, 50.0]])
    # Transposed (non-contiguous) operands.
    assert_exact(a.permute(1, 0) @ b, [[26.0, 30.0], [38.0, 44.0]])
    assert_exact(a @ b.permute(1, 0), [[17.0, 23.0], [39.0, 53.0]])


def test_matmul_shape_errors(backend: TensorBackend) -> None:
    a = minitorch.zeros((2, 3), backend=backend)
    with pytest.raises(IndexingError):
        a @ minitorch.zeros((2, 3), backend=backend)
    with pytest.raises(IndexingError):
        minitorch.zeros((4, 2, 3), backend=backend) @ minitorch.zeros((4, 4, 2), backend=backend)
    with pytest.raises(IndexingError):
        a @ minitorch.zeros((3,), backend=backend)
    with pytest.raises(IndexingError):
        minitorch.zeros((2, 2, 3), backend=backend) @ minitorch.zeros((3, 3, 2), backend=backend)


# Gradients ------------------------------------------------------------------------


def check_grads(f: Callable[..., Tensor], *inputs: Tensor) -> None:
    """``grad_check`` plus: every input's gradient has exactly its shape."""
    grad_check(f, *inputs)
    for x in inputs:
        assert x.grad is not None
        assert x.grad.shape == x.shape


GRAD_UNARY: dict[str, tuple[Callable[[Tensor], Tensor], Any]] = {
    "neg": (lambda t: -t, small_floats),
    "sigmoid": (lambda t: t.sigmoid(), small_floats),
    "relu": (lambda t: t.relu(), away_from_zero),
    "log": (lambda t: t.log(), positive_floats),
    "exp": (lambda t: t.exp(), moderate_floats),
    "inv": (lambda t: 1.0 / t, away_from_zero),
    "square": (lambda t: t * t, small_floats),
    "contiguous": (lambda t: t.contiguous(), small_floats),
    "view": (lambda t: t.contiguous().view(t.size), small_floats),
    "sum": (lambda t: t.sum(), small_floats),
    "mean": (lambda t: t.mean(), small_floats),
}


@pytest.mark.parametrize("name", list(GRAD_UNARY))
def test_unary_grad(backend: TensorBackend, name: str) -> None:
    fn, elements = GRAD_UNARY[name]

    def check(pair: tuple[Tensor, np.ndarray]) -> None:
        check_grads(fn, pair[0])

    run_property(backend, check, tensor_arrays(backend, elements=elements))


@pytest.mark.parametrize("name", ["sum", "mean", "sum_tensor_dim"])
def test_reduce_dim_grad(backend: TensorBackend, name: str) -> None:
    def check(pair: tuple[Tensor, np.ndarray], data: st.DataObject) -> None:
        t, _ = pair
        dim = data.draw(st.integers(min_value=-t.dims, max_value=t.dims - 1))
        if name == "sum":
            check_grads(lambda x: x.sum(dim), t)
        elif name == "mean":
            check_grads(lambda x: x.mean(dim), t)
        else:
            dims = minitorch.tensor([float(dim % t.dims)], backend=backend)
            check_grads(lambda x: Sum.apply(x, dims), t)

    run_property(backend, check, tensor_arrays(backend), st.data())


def test_movement_grad(backend: TensorBackend) -> None:
    def check(pair: tuple[Tensor, np.ndarray], data: st.DataObject) -> None:
        t, _ = pair
        order = data.draw(st.permutations(range(t.dims)))
        check_grads(lambda x: x.permute(*order), t)
        # A differentiable view of the permuted leaf, then a permute back.
        check_grads(lambda x: x.contiguous().view(-1).view(*x.shape).permute(*order), t)
        # The course form: dims and shapes as tensors.
        order_t = minitorch.tensor([float(o) for o in order], backend=backend)
        shape_t = minitorch.tensor([float(t.size)], backend=backend)
        check_grads(lambda x: View.apply(Permute.apply(x, order_t).contiguous(), shape_t), t)

    run_property(backend, check, tensor_arrays(backend), st.data())


GRAD_BINARY: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "add": lambda a, b: a + b,
    "sub": lambda a, b: a - b,
    "mul": lambda a, b: a * b,
    "div": lambda a, b: a / b,
    "mixed": lambda a, b: (a * b + a).sigmoid() - b,
}


@pytest.mark.parametrize("name", list(GRAD_BINARY))
def test_binary_grad_broadcast(backend: TensorBackend, name: str) -> None:
    fn = GRAD_BINARY[name]
    elements_b = away_from_zero if name == "div" else small_floats

    def check(quad: tuple[Tensor, np.ndarray, Tensor, np.ndarray]) -> None:
        ta, _, tb, _ = quad
        check_grads(fn, ta, tb)

    run_property(backend, check, tensor_array_pairs(backend, elements_b=elements_b))


@pytest.mark.parametrize(
    "shape_a, shape_b",
    [((1,), (1, 2)), ((1, 2), (1,)), ((3, 1), (4,)), ((2, 3, 4), (4,)), ((4,), (2, 1, 4))],
)
@pytest.mark.parametrize("op", ["add", "mul"])
def test_broadcast_grad_across_ranks(
    backend: TensorBackend, shape_a: tuple[int, ...], shape_b: tuple[int, ...], op: str
) -> None:
    rng = np.random.default_rng(0)
    na = rng.uniform(-1, 1, shape_a)
    nb = rng.uniform(-1, 1, shape_b)
    a = minitorch.tensor_from_numpy(na, backend=backend).requires_grad_(True)
    b = minitorch.tensor_from_numpy(nb, backend=backend).requires_grad_(True)
    out = a + b if op == "add" else a * b
    assert out.shape == np.broadcast_shapes(shape_a, shape_b)
    out.sum().backward()
    assert a.grad is not None and b.grad is not None
    assert a.grad.shape == shape_a
    assert b.grad.shape == shape_b
    ones = np.ones(out.shape)
    grad_a = ones if op == "add" else ones * nb
    grad_b = ones if op == "add" else ones * na
    assert_close(a.grad, unbroadcast(grad_a, shape_a))
    assert_close(b.grad, unbroadcast(grad_b, shape_b))
    grad_check(lambda x, y: x + y if op == "add" else x * y, a, b)


# In the CUDA simulator every matmul launch costs ~1024 Python threads per block, so
# CUDA checks the gradients of the kernel's own cases (plain, batched, broadcast batch);
# the other layouts differ only in the shared layout code, which the CPU backends cover.
CUDA_MATMUL_GRAD_LAYOUTS = {"2d", "3d", "batch_b1"}


@pytest.mark.parametrize("layout", list(MATMUL_LAYOUTS))
def test_matmul_grad(backend: TensorBackend, layout: str) -> None:
    if backend.cuda and layout not in CUDA_MATMUL_GRAD_LAYOUTS:
        pytest.skip("layout-only case; forward runs on CUDA, gradients on the CPU backends")

    def check(quad: tuple[Tensor, np.ndarray, Tensor, np.ndarray]) -> None:
        ta, na, tb, nb = quad
        if backend.cuda:
            # Central differences launch two matmuls per element (minutes in the
            # simulator); the closed form below checks CUDA's gradients.
            (ta.requires_grad_(True) @ tb.requires_grad_(True)).sum().backward()
        else:
            check_grads(lambda x, y: x @ y, ta, tb)
        # Against the closed form: d(sum(A @ B))/dA = 1 @ B^T, summed over broadcast batches.
        ones = np.ones((na @ nb).shape)
        assert_close(ta.grad, unbroadcast(ones @ np.swapaxes(nb, -1, -2), na.shape))
        assert_close(tb.grad, unbroadcast(np.swapaxes(na, -1, -2) @ ones, nb.shape))

    run_property(backend, check, matmul_operands(backend, layout), heavy=True)


@pytest.mark.parametrize("name", list(COMPARE))
def test_compare_grads_are_zero(backend: TensorBackend, name: str) -> None:
    fn, _ = COMPARE[name]

    def check(quad: tuple[Tensor, np.ndarray, Tensor, np.ndarray]) -> None:
        ta, _, tb, _ = quad
        ta.requires_grad_(True)
        tb.requires_grad_(True)
        (fn(ta, tb) * 3.0).sum().backward()
        for x in (ta, tb):
            assert x.grad is not None
            assert_exact(x.grad, np.zeros(x.shape))

    run_property(backend, check, tensor_array_pairs(backend, elements=small_ints))
