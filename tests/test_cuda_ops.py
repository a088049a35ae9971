"""CudaOps kernels against NumPy (contract section 7), on a GPU or numba's simulator.

The simulator runs one Python thread per CUDA thread, so tensors stay small;
a matmul block is 32x32 (1024 threads) unless the output fits in 16x16 or 8x8.
"""

from __future__ import annotations

import math
import random

import numba
import numba.cuda
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import (
    assert_close,
    assert_exact,
    broadcast_shape_pairs,
    positive_floats,
    shapes,
    tensor_arrays,
)

import minitorch
from minitorch import CudaOps, Tensor, TensorBackend, TensorData, cuda_ops, operators

if not numba.cuda.is_available():
    pytest.skip(
        "numba.cuda is not available (no GPU; set NUMBA_ENABLE_CUDASIM=1)",
        allow_module_level=True,
    )

pytestmark = pytest.mark.cuda

CUDA = TensorBackend(CudaOps)
MAX = CUDA.reduce_of(operators.max, -1e9)
FEW = settings(max_examples=10, deadline=None)
small_shapes = shapes(max_dims=3, max_size=12, max_dim=4)


def cuda_tensor(values: np.ndarray) -> Tensor:
    return minitorch.tensor_from_numpy(values, backend=CUDA)


def on_device(t: Tensor) -> bool:
    """True when the storage is a device array (the simulator has no ``is_cuda_array``)."""
    storage = t._tensor._storage
    return not isinstance(storage, np.ndarray) and hasattr(storage, "copy_to_host")


# Map, zip and reduce ----------------------------------------------------------------

MAPS = {
    "neg": (lambda t: -t, np.negative),
    "relu": (lambda t: t.relu(), lambda x: np.maximum(x, 0.0)),
    "sigmoid": (lambda t: t.sigmoid(), lambda x: 1.0 / (1.0 + np.exp(-x))),
    "exp": (lambda t: (t * 0.05).exp(), lambda x: np.exp(x * 0.05)),
    "contiguous": (lambda t: t.contiguous(), lambda x: x),
}


@FEW
@given(st.data(), st.sampled_from(sorted(MAPS)))
def test_map_matches_numpy(data: st.DataObject, name: str) -> None:
    t, expected = data.draw(tensor_arrays(CUDA, data.draw(small_shapes)))
    op, reference = MAPS[name]
    out = op(t)
    assert out._tensor.is_contiguous()
    assert_close(out, reference(expected))


@FEW
@given(st.data())
def test_log_and_inverse(data: st.DataObject) -> None:
    t, expected = data.draw(tensor_arrays(CUDA, data.draw(small_shapes), positive_floats))
    assert_close(t.log(), np.log(expected + operators.EPS))
    assert_close(1.0 / t, 1.0 / expected)


ZIPS = {
    "add": (lambda a, b: a + b, np.add),
    "sub": (lambda a, b: a - b, np.subtract),
    "mul": (lambda a, b: a * b, np.multiply),
    "lt": (lambda a, b: a < b, lambda x, y: (x < y).astype(float)),
    "eq": (lambda a, b: a == b, lambda x, y: (x == y).astype(float)),
}


@FEW
@given(st.data(), st.sampled_from(sorted(ZIPS)))
def test_zip_broadcasts_like_numpy(data: st.DataObject, name: str) -> None:
    shape_a, shape_b = data.draw(broadcast_shape_pairs(max_size=12, max_dim=4))
    ints = st.integers(-3, 3).map(float)  # ties, so that == and < see both answers
    a, na = data.draw(tensor_arrays(CUDA, shape_a, ints))
    b, nb = data.draw(tensor_arrays(CUDA, shape_b, ints))
    op, reference = ZIPS[name]
    assert_exact(op(a, b), reference(na, nb))


REDUCES = {
    "sum": (lambda t, d: t.sum(d), np.sum),
    "all": (lambda t, d: t.all(d), np.prod),
    "max": (lambda t, d: MAX(t, d), np.max),
}


@FEW
@given(st.data(), st.sampled_from(sorted(REDUCES)))
def test_reduce_each_dim(data: st.DataObject, name: str) -> None:
    t, expected = data.draw(tensor_arrays(CUDA, data.draw(small_shapes)))
    dim = data.draw(st.integers(0, t.dims - 1))
    op, reference = REDUCES[name]
    out = op(t, dim)
    assert_close(out, reference(expected, axis=dim, keepdims=True))
    assert out._tensor.is_contiguous()


def test_reduce_longer_than_a_block() -> None:
    # 1100 > 1024 threads, so threads fold several elements; strided (permuted) input.
    values = np.random.default_rng(0).uniform(-1, 1, size=(1100, 2))
    t = cuda_tensor(values).permute(1, 0)
    assert_close(t.sum(1), values.T.sum(axis=1, keepdims=True))


def test_reduce_start_is_applied_once() -> None:
    # reduce(fn, start) folds start in once, as SimpleOps does, whatever the block size.
    t = cuda_tensor(np.arange(6.0).reshape(2, 3))
    out = CudaOps.reduce(operators.add, 10.0)(t, 1)
    assert_exact(out, [[13.0], [22.0]])


def test_map_broadcasts_into_out() -> None:
    a = cuda_tensor(np.array([[1.0, 2.0, 3.0]]))
    out = a.zeros((2, 3))
    CUDA.id_map(a, out)
    assert_exact(out, [[1.0, 2.0, 3.0]] * 2)
    CUDA.id_cmap(-a, out)
    assert_exact(out, [[-1.0, -2.0, -3.0]] * 2)


def test_several_blocks_and_empty_tensors() -> None:
    a = np.random.default_rng(1).uniform(-5, 5, size=(20, 17))
    b = np.random.default_rng(2).uniform(-5, 5, size=(17,))
    assert_close(cuda_tensor(a) * cuda_tensor(b), a * b)  # 340 elements: two blocks
    empty = cuda_tensor(np.zeros((0, 3)))
    assert (empty + 1.0).shape == (0, 3)
    assert_exact(empty.sum(0), [[0.0, 0.0, 0.0]])


# Matrix multiply ---------------------------------------------------------------------

MATMUL_SHAPES = [
    ((2, 3), (3, 4)),
    ((2, 2, 3), (2, 3, 4)),  # batched
    ((3, 2, 4), (1, 4, 2)),  # a batch of 1 broadcasts
    ((1, 2, 3), (2, 3, 1)),  # ... on either side
    ((2, 3), (2, 3, 2)),  # a 2-D operand broadcasts over the batch
    ((2, 1, 2, 3), (3, 2)),  # several batch dims
    ((33, 40), (40, 35)),  # two blocks in each grid dim, two tiles along the inner dim
]


@pytest.mark.parametrize("shape_a, shape_b", MATMUL_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_matmul_matches_numpy(shape_a: tuple[int, ...], shape_b: tuple[int, ...]) -> None:
    rng = np.random.default_rng(3)
    a = rng.uniform(-1, 1, size=shape_a)
    b = rng.uniform(-1, 1, size=shape_b)
    out = cuda_tensor(a) @ cuda_tensor(b)
    assert on_device(out)
    assert_close(out, a @ b)


def test_matmul_non_contiguous_operands() -> None:
    rng = np.random.default_rng(4)
    a = rng.uniform(-1, 1, size=(3, 2))  # used transposed
    b = rng.uniform(-1, 1, size=(4, 2, 3))  # used as (2, 3, 4)
    ta = cuda_tensor(a).permute(1, 0)
    tb = cuda_tensor(b).permute(1, 2, 0)
    assert not tb._tensor.is_contiguous()
    assert_close(ta @ tb, a.T @ b.transpose(1, 2, 0))


def test_small_products_take_small_blocks() -> None:
    outputs = ((1, 1), (6, 3), (8, 8), (9, 2), (3, 16), (17, 1), (100, 10))
    assert [cuda_ops.matmul_tile(r, c) for r, c in outputs] == [8, 8, 8, 16, 16, 32, 32]


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=str)
def test_matmul_block_side_changes_no_bit(dtype: type) -> None:
    """Each element sums its products in k order whatever the block side (an edge tile
    adds exact zeros), so the small blocks of small products change no value."""
    rng = np.random.default_rng(5)
    a = rng.uniform(-1, 1, (2, 5, 20)).astype(dtype)  # k = 20: 3, 2 and 1 steps of tiles
    b = rng.uniform(-1, 1, (1, 20, 7)).astype(dtype)  # a batch of 1 broadcasts
    ta, tb = cuda_tensor(a), cuda_tensor(b)
    cuda_ops._on_device(ta._tensor)
    cuda_ops._on_device(tb._tensor)
    results = []
    for tile in (8, 16, 32):
        out = minitorch.zeros((2, 5, 7), backend=CUDA, dtype=dtype)
        kernel = cuda_ops._matmul_kernel(np.dtype(dtype), tile)
        kernel[(1, 1, 2), (tile, tile)](*cuda_ops._layout(out._tensor, False),
                                        *cuda_ops._layout(ta._tensor, False),
                                        *cuda_ops._layout(tb._tensor, False))  # fmt: skip
        results.append(out.to_numpy())
    assert results[0].tobytes() == results[1].tobytes() == results[2].tobytes()
    np.testing.assert_allclose(results[0], a @ b, rtol=1e-5)
    assert (ta @ tb).to_numpy().tobytes() == results[0].tobytes()  # the backend's: tile 8


def test_matmul_rejects_mismatched_inner_dims() -> None:
    with pytest.raises(minitorch.IndexingError):
        cuda_tensor(np.ones((2, 3))) @ cuda_tensor(np.ones((2, 3)))


# Gradients ---------------------------------------------------------------------------

GRAD_CASES = {
    "sigmoid-mul": (lambda a: (a * a).sigmoid(), [(2, 3)]),
    "log-exp": (lambda a: (a + 2.0).log() + a.exp(), [(3,)]),
    "broadcast-zip": (lambda a, b: a * b - b, [(2, 3), (3,)]),
    "sum-dim": (lambda a: a.sum(1), [(2, 3)]),
    "matmul": (lambda a, b: a @ b, [(2, 3), (3, 2)]),
}


@pytest.mark.parametrize("name", sorted(GRAD_CASES))
def test_grad_check(name: str) -> None:
    fn, arg_shapes = GRAD_CASES[name]
    random.seed(5)
    args = [minitorch.rand(shape, backend=CUDA) for shape in arg_shapes]
    minitorch.grad_check(fn, *args)
    for arg in args:
        assert arg.grad is not None and arg.grad.shape == arg.shape


# Storage -----------------------------------------------------------------------------


def test_float64_round_trip_is_exact() -> None:
    values = np.array([[0.1, 1.0 / 3.0, math.pi * 1e100], [-1e-300, 5e-324, 2.0**53 + 2.0]])
    copy = cuda_tensor(values).permute(1, 0).contiguous()  # through a strided kernel
    assert on_device(copy)
    np.testing.assert_array_equal(copy.to_numpy(), values.T)
    assert [copy[j, i] for i in range(2) for j in range(3)] == values.reshape(-1).tolist()
    again = minitorch.tensor(copy.to_numpy().tolist(), backend=CUDA) + 0.0
    assert again.to_numpy().tolist() == values.T.tolist()


def test_data_stays_on_device() -> None:
    a = cuda_tensor(np.array([[1.0, -2.0], [3.0, -4.0]]))
    b = (a + 1.0).relu()
    storage = a._tensor._storage
    assert on_device(a)  # moved by its first op ...
    c = (b * a).sum(0)
    assert a._tensor._storage is storage  # ... and only once
    for t in (b, c, a @ a, a.zeros((3,)), a.permute(1, 0).contiguous()):
        assert on_device(t)
    assert (c[0, 0], c[0, 1]) == (14.0, 0.0)  # reads copy to the host
    assert "4.00000" in repr(a)
    b[0, 0] = 7.5  # writes go to the device
    assert b.to_numpy()[0, 0] == 7.5


def test_mixed_backends_convert_the_right_operand() -> None:
    gpu = cuda_tensor(np.array([1.0, 2.0, 3.0]))
    cpu = minitorch.tensor([10.0, 20.0, 30.0])
    left = gpu + cpu
    assert left.backend is CUDA and on_device(left)
    assert_exact(left, [11.0, 22.0, 33.0])
    right = cpu + gpu
    assert right.backend is minitorch.SimpleBackend
    assert isinstance(right._tensor._storage, np.ndarray)
    assert_exact(right, [11.0, 22.0, 33.0])
    # Converting cpu for the GPU copied it: cpu's own storage is still on the host.
    assert isinstance(cpu._tensor._storage, np.ndarray)


# User functions, caching and errors ----------------------------------------------------


def test_user_scalar_functions_compile_as_device_functions() -> None:
    a = cuda_tensor(np.array([[3.0, -4.0], [0.5, 2.0]]))
    b = cuda_tensor(np.array([4.0, 3.0]))
    affine = CUDA.map_of(lambda x: 2.0 * x + 1.0)
    assert_exact(affine(a), [[7.0, -7.0], [2.0, 5.0]])
    hypot = CUDA.zip_of(lambda x, y: math.sqrt(x * x + y * y))
    assert_close(hypot(a, b), [[5.0, 5.0], [4.0311289, 3.6055513]])
    # A function already compiled for the CPU compiles for the GPU from its source.
    minus = CUDA.zip_of(numba.njit(lambda x, y: x - y))
    assert_exact(minus(a, b), [[-1.0, -7.0], [-3.5, -1.0]])


def test_kernels_compile_once_per_function() -> None:
    -cuda_tensor(np.array([1.0]))
    misses = cuda_ops._map_kernel.cache_info().misses
    other = TensorBackend(CudaOps)
    -minitorch.tensor([1.0], backend=other)
    assert cuda_ops._map_kernel.cache_info().misses == misses


def test_clear_error_without_a_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(numba.cuda, "is_available", lambda: False)
    cuda_ops._require_gpu.cache_clear()
    try:
        backend = TensorBackend(CudaOps)  # building a backend needs no GPU
        # Its storage lives on the GPU, so the first tensor on it says what is missing.
        with pytest.raises(RuntimeError, match="NUMBA_ENABLE_CUDASIM"):
            minitorch.tensor([1.0, 2.0], backend=backend)
        with pytest.raises(RuntimeError, match="NUMBA_ENABLE_CUDASIM"):
            minitorch.tensor([1.0, 2.0]).to(backend)
        with pytest.raises(RuntimeError, match="is_available"):
            minitorch.sum_practice(minitorch.tensor([1.0, 2.0]))
    finally:
        cuda_ops._require_gpu.cache_clear()


# Practice kernels ----------------------------------------------------------------------


@pytest.mark.parametrize("size", [16, 32, 64])
def test_sum_practice(size: int) -> None:
    values = np.random.default_rng(size).uniform(-1, 1, size=size)
    out = minitorch.sum_practice(minitorch.tensor(values.tolist(), backend=CUDA))
    assert isinstance(out, TensorData) and out.shape == (2,)
    assert isinstance(out._storage[0], (float, np.floating))
    assert_close(
        np.array([out._storage[0], out._storage[1]]), [values[:32].sum(), values[32:].sum()]
    )


@pytest.mark.parametrize("n", [1, 5, 32])
def test_mm_practice(n: int) -> None:
    rng = np.random.default_rng(n)
    a = rng.uniform(-1, 1, size=(n, n))
    b = rng.uniform(-1, 1, size=(n, n))
    out = minitorch.mm_practice(cuda_tensor(a), cuda_tensor(b).permute(1, 0))
    assert isinstance(out, TensorData) and out.shape == (n, n)
    expected = (a @ b.T).reshape(-1)
    assert_close(np.array([out._storage[k] for k in range(n * n)]), expected)
