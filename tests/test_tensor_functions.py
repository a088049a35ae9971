"""Differentiable tensor functions on every backend: forward against NumPy, and gradients.

Contract sections 6, 7 and 11. Inputs are usually permuted (non-contiguous)
views, and binary operands usually broadcast, often across different ranks.

Forward values run in float64 and float32 (the ``dtype`` fixture) where float32 adds to
tests/test_dtype.py, against NumPy in the same dtype and with float32 tolerances
(``strategies.assert_close``); results keep the inputs' dtype. Gradients are checked
against central differences in float64, and float32 gradients against the float64
gradients of the same inputs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from hypothesis import strategies as st
from strategies import (
    assert_close,
    assert_dtype,
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

F32, F64 = minitorch.float32, minitorch.float64

# Values away from 0, where relu has its kink and division blows up.
away_from_zero = st.one_of(positive_floats, positive_floats.map(lambda x: -x))
# exp of large values swamps the sum that grad_check differentiates.
moderate_floats = st.floats(min_value=-5, max_value=5)


def np_sigmoid(a: np.ndarray) -> np.ndarray:
    e = np.exp(-np.abs(a))
    return np.where(a >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def with_float32(names: list[str], float32_names: list[str]) -> list[Any]:
    """``(name, dtype)`` cases: every name in float64, ``float32_names`` also in float32
    (the others' float32 forms are in tests/test_dtype.py)."""
    cases = [pytest.param(n, F64, id=n) for n in names]
    return cases + [pytest.param(n, F32, id=f"{n}-float32") for n in float32_names]


def few_float32_on_cuda(backend: TensorBackend, dtype: np.dtype, keep: bool = False) -> None:
    """The CUDA simulator runs a Python thread per GPU thread: float32 runs there only for
    the ``keep`` cases (the kernels are dtype-generic; the CPU backends run every case)."""
    if backend.cuda and dtype == F32 and not keep:
        pytest.skip("float32 on the CUDA simulator: representative cases only")


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


@pytest.mark.parametrize("name, dtype", with_float32(list(UNARY), ["log", "inv", "contiguous"]))
def test_unary_forward(backend: TensorBackend, name: str, dtype: np.dtype) -> None:
    few_float32_on_cuda(backend, dtype, keep=name == "log")
    fn, ref, elements = UNARY[name]

    def check(pair: tuple[Tensor, np.ndarray]) -> None:
        t, a = pair
        out = fn(t)
        assert_close(out, ref(a), dtype)
        assert_new_contiguous(out)

    run_property(backend, check, tensor_arrays(backend, elements=elements, dtype=dtype))


def test_relu_is_exactly_zero_below(backend: TensorBackend, dtype: np.dtype) -> None:
    t = minitorch.tensor([-3.0, -0.0, 0.0, 2.5], backend=backend, dtype=dtype)
    out = t.relu()
    assert_dtype(out, dtype)
    assert out.to_numpy().tolist() == [0.0, 0.0, 0.0, 2.5]
    assert not np.signbit(out.to_numpy()).any()


BINARY: dict[str, tuple[Callable[[Tensor, Tensor], Tensor], Callable[..., Any]]] = {
    "add": (lambda a, b: a + b, lambda a, b: a + b),
    "sub": (lambda a, b: a - b, lambda a, b: a - b),
    "mul": (lambda a, b: a * b, lambda a, b: a * b),
    "div": (lambda a, b: a / b, lambda a, b: a / b),
}


@pytest.mark.parametrize("name, dtype", with_float32(list(BINARY), ["div"]))
def test_binary_forward_broadcast(backend: TensorBackend, name: str, dtype: np.dtype) -> None:
    few_float32_on_cuda(backend, dtype)
    fn, ref = BINARY[name]
    elements_b = away_from_zero if name == "div" else small_floats

    def check(quad: tuple[Tensor, np.ndarray, Tensor, np.ndarray]) -> None:
        ta, na, tb, nb = quad
        out = fn(ta, tb)
        assert_close(out, ref(na, nb), dtype)
        assert_new_contiguous(out)

    pairs = tensor_array_pairs(backend, elements_b=elements_b, dtype=dtype)
    run_property(backend, check, pairs)


@pytest.mark.parametrize("name", list(BINARY))
def test_binary_forward_mixed_dtypes(backend: TensorBackend, name: str) -> None:
    """float32 with float64, either way round and broadcast, computes in float64 (as
    PyTorch promotes) on the float32 operand's exact values."""
    few_float32_on_cuda(backend, F32, keep=name == "div")
    fn, ref = BINARY[name]
    elements_b = away_from_zero if name == "div" else small_floats

    def check(quad: tuple[Tensor, np.ndarray, Tensor, np.ndarray], a_is_f32: bool) -> None:
        ta, na, tb, nb = quad
        ta, tb = (ta.to(F32), tb) if a_is_f32 else (ta, tb.to(F32))
        na, nb = ta.to_numpy().astype(F64), tb.to_numpy().astype(F64)
        out = fn(ta, tb)
        assert_dtype(out, F64)
        # Tighter than the contract's atol: a float32 round trip would pass that.
        np.testing.assert_allclose(out.to_numpy(), ref(na, nb), rtol=1e-14, atol=0)

    pairs = tensor_array_pairs(backend, elements_b=elements_b)
    run_property(backend, check, pairs, st.booleans())


COMPARE: dict[str, tuple[Callable[[Tensor, Tensor], Tensor], Callable[..., Any]]] = {
    "lt": (lambda a, b: a < b, np.less),
    "gt": (lambda a, b: a > b, np.greater),
    "eq": (lambda a, b: a == b, np.equal),
}


@pytest.mark.parametrize("name, dtype", with_float32(list(COMPARE), ["gt"]))
def test_compare_forward_exact(backend: TensorBackend, name: str, dtype: np.dtype) -> None:
    few_float32_on_cuda(backend, dtype, keep=True)
    fn, ref = COMPARE[name]

    def check(quad: tuple[Tensor, np.ndarray, Tensor, np.ndarray]) -> None:
        ta, na, tb, nb = quad
        out = fn(ta, tb)
        assert_exact(out, ref(na, nb).astype(dtype), dtype)

    # Few distinct values, so ties are common.
    pairs = tensor_array_pairs(backend, elements=small_ints, dtype=dtype)
    run_property(backend, check, pairs)


def test_is_close_forward(backend: TensorBackend, dtype: np.dtype) -> None:
    few_float32_on_cuda(backend, dtype)
    # Offsets of +-0.005 lie well inside is_close's 1e-2 in float32 too.
    offsets = st.tuples(small_ints, st.sampled_from([0.0, 0.005, -0.005, 0.5])).map(sum)

    def check(quad: tuple[Tensor, np.ndarray, Tensor, np.ndarray]) -> None:
        ta, na, tb, nb = quad
        out = ta.is_close(tb)
        close = np.abs(na - nb) < 1e-2
        assert_exact(out, close.astype(dtype), dtype)
        all_close = out.all()
        assert_dtype(all_close, dtype)
        assert all_close.item() == float(np.all(close))

    pairs = tensor_array_pairs(backend, elements=small_ints, elements_b=offsets, dtype=dtype)
    run_property(backend, check, pairs)


# Forward: reductions -------------------------------------------------------------

REDUCE: dict[str, tuple[Callable[..., Tensor], Callable[..., Any], Any]] = {
    "sum": (Tensor.sum, np.sum, small_floats),
    "mean": (Tensor.mean, np.mean, small_floats),
    "all": (Tensor.all, np.prod, st.sampled_from([0.0, 1.0, 1.0, 1.0, 2.0, -1.0, 0.5])),
}


@pytest.mark.parametrize("name", list(REDUCE))
def test_reduce_forward(backend: TensorBackend, dtype: np.dtype, name: str) -> None:
    few_float32_on_cuda(backend, dtype, keep=name == "mean")
    method, ref, elements = REDUCE[name]

    def check(pair: tuple[Tensor, np.ndarray], data: st.DataObject) -> None:
        t, a = pair
        dim = data.draw(st.none() | st.integers(min_value=-t.dims, max_value=t.dims - 1))
        # float32 rounding: a sum or mean is off by a few ulps of its terms per term;
        # ``all`` multiplies 0, +-1, 2 and 0.5, which float32 holds exactly.
        exact = name == "all"
        if dim is None:
            out = method(t)
            assert out.shape == (1,)
            terms, count = np.abs(a).sum() / (a.size if name == "mean" else 1), a.size
            assert_close(out, np.array([ref(a)]), dtype, terms, count * (not exact))
        else:
            expected = ref(a, axis=dim, keepdims=True)
            count = a.shape[dim] * (not exact)
            terms = np.abs(a).sum(axis=dim, keepdims=True) / (a.shape[dim] if name == "mean" else 1)
            assert_close(method(t, dim), expected, dtype, terms, count)
            assert_close(method(t, dim=dim), expected, dtype, terms, count)
            out = method(t, dim)
        assert_new_contiguous(out)

    arrays = tensor_arrays(backend, elements=elements, dtype=dtype)
    run_property(backend, check, arrays, st.data())


def test_reduce_keeps_dim_examples(backend: TensorBackend, dtype: np.dtype) -> None:
    t = minitorch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]], backend=backend, dtype=dtype)
    assert t.sum(0).shape == (1, 2)
    assert t.sum(1).shape == (3, 1)
    assert t.sum(-1).shape == (3, 1)
    assert t.sum().shape == (1,)
    assert_exact(t.sum(0), [[9.0, 12.0]], dtype)
    assert_exact(t.sum(1), [[3.0], [7.0], [11.0]], dtype)
    assert_exact(t.mean(0), [[3.0, 4.0]], dtype)
    assert_exact(t.mean(), [3.5], dtype)
    assert_exact(t.all(), [720.0], dtype)
    assert_exact(t.all(1), [[2.0], [12.0], [30.0]], dtype)
    # The course passes dims as tensors (of any dtype).
    for dim_dtype in (F64, F32):
        dims = minitorch.tensor([1.0], backend=backend, dtype=dim_dtype)
        assert_exact(Sum.apply(t, dims), [[3.0], [7.0], [11.0]], dtype)
    assert t.sum(0).view(2).shape == (2,)


def test_reduce_bad_dim_raises(backend: TensorBackend) -> None:
    t = minitorch.tensor([[1.0, 2.0], [3.0, 4.0]], backend=backend)
    for dim in (2, -3):
        with pytest.raises(IndexingError):
            t.sum(dim)
        with pytest.raises(IndexingError):
            t.mean(dim)


# Forward: movement ----------------------------------------------------------------


def test_permute_forward(backend: TensorBackend, dtype: np.dtype) -> None:
    def check(pair: tuple[Tensor, np.ndarray], data: st.DataObject) -> None:
        t, a = pair
        order = data.draw(st.permutations(range(t.dims)))
        assert_exact(t.permute(*order), a.transpose(order), dtype)
        assert_exact(t.permute(order), a.transpose(order), dtype)

    run_property(backend, check, tensor_arrays(backend, dtype=dtype), st.data())


def test_contiguous_copies(backend: TensorBackend, dtype: np.dtype) -> None:
    few_float32_on_cuda(backend, dtype, keep=True)

    def check(pair: tuple[Tensor, np.ndarray]) -> None:
        t, a = pair
        c = t.contiguous()
        assert_exact(c, a, dtype)
        assert c._tensor.is_contiguous()
        c[tuple(0 for _ in c.shape)] = 1e6
        assert_exact(t, a, dtype)

    run_property(backend, check, tensor_arrays(backend, dtype=dtype))


def test_view_forward(backend: TensorBackend, dtype: np.dtype) -> None:
    def check(pair: tuple[Tensor, np.ndarray], data: st.DataObject) -> None:
        t, a = pair
        c = t.contiguous()
        flat = a.reshape(-1)
        assert_exact(c.view(c.size), flat, dtype)
        assert_exact(c.view(-1), flat, dtype)
        split = data.draw(st.sampled_from([d for d in range(1, c.size + 1) if c.size % d == 0]))
        assert_exact(c.view(split, -1), flat.reshape(split, -1), dtype)
        assert_exact(c.view(-1, split), flat.reshape(-1, split), dtype)
        assert_exact(c.view((1, c.size)), flat.reshape(1, -1), dtype)

    run_property(backend, check, tensor_arrays(backend, dtype=dtype), st.data())


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


def matmul_operands(
    backend: TensorBackend,
    layout: str,
    dtype: np.dtype = F64,
    elements: st.SearchStrategy[float] = moderate_floats,
) -> st.SearchStrategy[Any]:
    cap = 2 if backend.cuda else 4

    @st.composite
    def operands(draw: st.DrawFn) -> tuple[Tensor, np.ndarray, Tensor, np.ndarray]:
        d, a, b, c = (draw(st.integers(min_value=1, max_value=cap)) for _ in range(4))
        shape_a, shape_b = MATMUL_LAYOUTS[layout](d, a, b, c)
        ta, na = draw(tensor_arrays(backend, shape_a, elements, dtype=dtype))
        tb, nb = draw(tensor_arrays(backend, shape_b, elements, dtype=dtype))
        return ta, na, tb, nb

    return operands()


# tests/test_dtype.py multiplies 2-d float32 matrices; here the batched layouts.
@pytest.mark.parametrize(
    "layout, dtype", with_float32(list(MATMUL_LAYOUTS), [n for n in MATMUL_LAYOUTS if n != "2d"])
)
def test_matmul_forward(backend: TensorBackend, layout: str, dtype: np.dtype) -> None:
    few_float32_on_cuda(backend, dtype, keep=layout == "batch_b1")

    def check(quad: tuple[Tensor, np.ndarray, Tensor, np.ndarray]) -> None:
        ta, na, tb, nb = quad
        out = ta @ tb
        # The float32 oracle: float64 products of the float32 values, rounded once.
        expected = (na.astype(F64) @ nb.astype(F64)).astype(dtype)
        terms = np.abs(na).astype(F64) @ np.abs(nb).astype(F64)
        assert_close(out, expected, dtype, terms, na.shape[-1])
        assert_new_contiguous(out)

    run_property(backend, check, matmul_operands(backend, layout, dtype), heavy=True)


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


# float32 gradients against the float64 gradients of the same inputs -------------------
# Central differences in float32 are noise; the float64 gradient of the same (float32)
# values is the oracle. Inputs are positive where a gradient sums broadcast terms, so
# the sums do not cancel and the float32 tolerance holds relative to them.

positive_moderate = st.floats(min_value=0.1, max_value=5)


def reverse_square(t: Tensor) -> Tensor:
    flat = t.permute(*reversed(range(t.dims))).contiguous().view(-1)
    return flat * flat


GRAD_FLOAT32: dict[str, tuple[Callable[..., Tensor], Callable[[TensorBackend], Any], bool]] = {
    # name: (function, strategy of (tensor, array) pairs, exact)
    "sigmoid": (lambda t: t.sigmoid(), lambda be: st.tuples(tensor_arrays(be, dtype=F32)), False),
    "log": (
        lambda t: t.log(),
        lambda be: st.tuples(tensor_arrays(be, elements=positive_floats, dtype=F32)),
        False,
    ),
    "div_broadcast": (
        lambda a, b: a / b,
        lambda be: tensor_array_pairs(be, elements=positive_moderate, dtype=F32).map(
            lambda q: ((q[0], q[1]), (q[2], q[3]))
        ),
        False,
    ),
    "mean_dim": (lambda t: t.mean(-1), lambda be: st.tuples(tensor_arrays(be, dtype=F32)), False),
    "matmul_batch_b1": (
        lambda a, b: a @ b,
        lambda be: matmul_operands(be, "batch_b1", F32, positive_moderate).map(
            lambda q: ((q[0], q[1]), (q[2], q[3]))
        ),
        False,
    ),
    "permute_view": (reverse_square, lambda be: st.tuples(tensor_arrays(be, dtype=F32)), True),
}


@pytest.mark.parametrize("name", list(GRAD_FLOAT32))
def test_float32_grad_matches_float64(backend: TensorBackend, name: str) -> None:
    few_float32_on_cuda(backend, F32, keep=name == "div_broadcast")
    fn, inputs, exact = GRAD_FLOAT32[name]

    def check(pairs: tuple[tuple[Tensor, np.ndarray], ...]) -> None:
        x32 = [t.requires_grad_(True) for t, _ in pairs]
        x64 = [
            minitorch.tensor_from_numpy(a.astype(F64), backend=backend).requires_grad_(True)
            for _, a in pairs
        ]
        out32, out64 = fn(*x32), fn(*x64)
        assert_dtype(out32, F32)
        out32.sum().backward()
        out64.sum().backward()
        for a, b in zip(x32, x64):
            assert a.grad is not None and b.grad is not None
            want = b.grad.to_numpy()
            if exact:
                assert_exact(a.grad, want.astype(F32), F32)
            else:
                # Each entry sums at most out.size same-signed terms.
                assert_close(a.grad, want.astype(F32), F32, want, out32.size)

    run_property(backend, check, inputs(backend))


def test_forward_inputs_detached_unless_builtin_says_so() -> None:
    """Built-in functions whose forward only runs kernels take their inputs as they are
    (two wrappers fewer per call); any other forward, a subclass of a built-in one
    included, sees them detached, so what it does to them records no history."""
    from minitorch.tensor_functions import Add, Function

    seen: list[Any] = []

    class LoggedAdd(Add):
        @staticmethod
        def forward(ctx: minitorch.Context, a: Tensor, b: Tensor) -> Tensor:
            seen.append((a.history, b.history))
            return (a * 2.0) + b  # tensor ops inside forward: must not record on a, b

    class Double(Function):
        @staticmethod
        def forward(ctx: minitorch.Context, a: Tensor) -> Tensor:
            seen.append((a.history,))
            return a + a

        @staticmethod
        def backward(ctx: minitorch.Context, grad: Tensor) -> Tensor:
            return grad * 2.0

    x = minitorch.tensor([1.0, 2.0], requires_grad=True)
    y = minitorch.tensor([3.0, 4.0], requires_grad=True)
    assert Add._detach_inputs is False and Function._detach_inputs is True
    assert LoggedAdd._detach_inputs is True and Double._detach_inputs is True
    out = LoggedAdd.apply(x, y)
    z = Double.apply(x)
    assert seen == [(None, None), (None,)]
    # The results carry only their own function's history, over the caller's tensors.
    assert out.history.last_fn is LoggedAdd and out.history.inputs == (x, y)
    assert z.history.last_fn is Double and z.history.inputs[0] is x
    # A built-in's output never is an input, nor shares its history.
    s = x + y
    assert s is not x and s.history.inputs == (x, y) and x.history.last_fn is None
    (s.sum() + z.sum()).backward()
    assert x.grad.to_numpy().tolist() == [3.0, 3.0] and y.grad.to_numpy().tolist() == [1.0, 1.0]


@pytest.mark.parametrize("backend", ["simple", "fast"])
def test_builtins_that_skip_detaching_always_return_a_new_tensor(backend: str) -> None:
    """The flag that lets a built-in take its inputs as they are also skips the check for
    a forward handing back an input: every such built-in must make a new tensor, with
    history, inside no_grad and on inputs without history alike. A user's function that
    returns its input still gets a new tensor over the same values."""
    from minitorch import tensor_functions

    chosen = (minitorch.SimpleBackend if backend == "simple"
              else minitorch.TensorBackend(minitorch.FastOps))  # fmt: skip
    builtins = [c for c in vars(tensor_functions).values()
                if isinstance(c, type) and issubclass(c, tensor_functions.Function)
                and c.__dict__.get("_detach_inputs") is False]  # fmt: skip
    assert len(builtins) >= 17, builtins
    unary = {"Neg", "Inv", "Sigmoid", "ReLU", "Log", "Exp", "Tanh", "Sqrt", "Abs"}
    for track in (True, False):
        for grad_on in (True, False):
            x = minitorch.tensor([[1.0, 2.0], [3.0, 4.0]], backend=chosen)
            y = minitorch.tensor([[0.5, 2.0], [1.0, 3.0]], backend=chosen)
            if not track:  # no history at all
                x, y = x.detach(), y.detach()
            for fn in builtins:
                # A view to its own shape (the shortcut) and to another.
                shaped = {"Permute": [(1, 0)], "View": [(2, 2), (4,)]}
                calls = [(x, s) for s in shaped.get(fn.__name__, [])] or [(x, y)]
                for args in [(x,)] if fn.__name__ in unary else calls:
                    if grad_on:
                        out = fn.apply(*args)
                    else:
                        with minitorch.no_grad():
                            out = fn.apply(*args)
                    assert out is not x and out is not y, fn
                    assert (out.history is not None) == (track and grad_on), fn

    class Same(tensor_functions.Function):
        @staticmethod
        def forward(ctx: minitorch.Context, a: Tensor) -> Tensor:
            return a

        @staticmethod
        def backward(ctx: minitorch.Context, grad: Tensor) -> Tensor:
            return grad

    x = minitorch.tensor([1.0, 2.0], backend=chosen)
    out = Same.apply(x)
    assert out is not x and out.history.inputs == (x,) and x.history.last_fn is None
    np.testing.assert_array_equal(out.to_numpy(), x.to_numpy())
