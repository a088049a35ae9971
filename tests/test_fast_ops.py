"""FastOps, the numba backend: kernels against NumPy, layouts, threads, the disk cache.

Contract section 7. Elementwise results are compared bit for bit (the kernels
apply the same scalar function to each element as the reference does), and
reductions and matrix products with a tolerance (their summation order is the
kernels' own). The small-shape properties run the serial kernels; the large
tests (more than ``fast_ops.PARALLEL_THRESHOLD`` elements) run the ``prange``
ones, which split the work across threads.

Every test here is marked ``kernels``: the Makefile reruns them under
``NUMBA_BOUNDSCHECK=1`` so an out-of-bounds index in a kernel raises.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import textwrap
import types
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numba
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from numba import njit
from strategies import (
    broadcast_shape_pairs,
    inverse_permutation,
    shapes,
    small_floats,
    tensor_arrays,
)

import minitorch
from minitorch import IndexingError, Tensor, fast_ops, operators
from minitorch.kernel_cache import function_key
from minitorch.tensor_ops import zip_output

pytestmark = pytest.mark.kernels

FB = minitorch.TensorBackend(minitorch.FastOps)
SB = minitorch.SimpleBackend

FUZZ = settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
# Bigger than the shared CPU limits, so that inner dims exceed the reduce
# kernel's four-lane unrolling (8) and layouts have room to be interesting.
FUZZ_SIZE = 160
FUZZ_DIM = 10

# name -> (FastOps op, scalar reference, allowed error in units in the last place).
# FastOps swaps ``math.exp`` for ``fast_math.exp`` (vectorisable, within 1 ulp);
# everything else applies the very same scalar function, so must be bit-exact.
MAP_FNS = {
    "neg": (FB.neg_map, operators.neg, 0),
    "relu": (FB.relu_map, operators.relu, 0),
    "exp": (FB.exp_map, operators.exp, 1),
}
ZIP_FNS = {
    "add": (FB.add_zip, operators.add),
    "mul": (FB.mul_zip, operators.mul),
    "lt": (FB.lt_zip, operators.lt),
}


# Helpers --------------------------------------------------------------------------


def fast(x: Any) -> Tensor:
    return minitorch.tensor_from_numpy(np.asarray(x, dtype=np.float64), backend=FB)


def permuted(base: np.ndarray, order: Sequence[int]) -> tuple[Tensor, np.ndarray]:
    """A non-contiguous FastOps view ``base.permute(order)`` and its NumPy twin."""
    return fast(base).permute(*order), base.transpose(order)


def view_of(expected: np.ndarray, order: Sequence[int]) -> tuple[Tensor, np.ndarray]:
    """A permuted (strided) tensor whose values are ``expected``."""
    base = np.ascontiguousarray(expected.transpose(inverse_permutation(order)))
    t = fast(base).permute(*order)
    assert t.shape == expected.shape
    return t, expected


def vectorized(fn: Callable[..., float], *arrays: np.ndarray) -> np.ndarray:
    """The reference: ``fn`` applied in Python to each (broadcast) element."""
    return np.vectorize(fn, otypes=[np.float64])(*arrays)


def assert_bits(actual: Tensor, expected: np.ndarray) -> None:
    expected = np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape, f"shape {actual.shape} != {expected.shape}"
    got = actual.to_numpy()
    if not np.array_equal(got, expected):
        bad = np.argwhere(got != expected)[:5]
        raise AssertionError(f"not bit-identical at {bad.tolist()}: {got[tuple(bad.T)]} "
                             f"!= {expected[tuple(bad.T)]}")  # fmt: skip


def assert_ulps(actual: Tensor, expected: np.ndarray, ulps: int) -> None:
    """Equal within ``ulps`` units in the last place (0: bit-identical)."""
    if ulps == 0:
        assert_bits(actual, expected)
        return
    assert actual.shape == expected.shape, f"shape {actual.shape} != {expected.shape}"
    got = actual.to_numpy()
    same = (got == expected) | (np.isnan(got) & np.isnan(expected))
    with np.errstate(all="ignore"):
        err = np.abs(got - expected) / np.spacing(np.abs(expected))
    assert np.all(same | (err <= ulps)), f"max error {np.max(np.where(same, 0, err))} ulp"


def assert_near(
    actual: Tensor, expected: np.ndarray, rtol: float = 1e-9, atol: float = 1e-8
) -> None:
    expected = np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape, f"shape {actual.shape} != {expected.shape}"
    np.testing.assert_allclose(actual.to_numpy(), expected, rtol=rtol, atol=atol)


def assert_is_parallel_size(*sizes: int) -> None:
    for n in sizes:
        assert n >= fast_ops.PARALLEL_THRESHOLD, "test meant to reach the _par kernels"


@st.composite
def fuzz_shapes(draw: st.DrawFn) -> tuple[int, ...]:
    return draw(shapes(max_size=FUZZ_SIZE, max_dim=FUZZ_DIM))


@st.composite
def maybe_permuted(draw: st.DrawFn, shape: Sequence[int]) -> tuple[Tensor, np.ndarray]:
    """A tensor of ``shape``: contiguous or a random permuted view."""
    permute = draw(st.booleans())
    return draw(tensor_arrays(FB, shape, small_floats, permute=permute))


@st.composite
def zip_shape_pairs(draw: st.DrawFn) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Broadcastable pairs, including the layouts the fast path special-cases."""
    kind = draw(st.sampled_from(["random", "same", "scalar_left", "scalar_right", "bias", "lead1"]))
    if kind == "random":
        return draw(broadcast_shape_pairs(max_size=FUZZ_SIZE, max_dim=FUZZ_DIM))
    full = draw(fuzz_shapes())
    if kind == "same":
        return full, full
    if kind == "scalar_left":
        return (1,), full
    if kind == "scalar_right":
        return full, (1,)
    cut = draw(st.integers(min_value=0, max_value=len(full) - 1))
    block = full[cut:]
    if kind == "lead1":  # the bias with its leading dims kept at size 1
        block = (1,) * cut + block
    pair = (full, block)
    return pair if draw(st.booleans()) else pair[::-1]


# 1. Fuzzing against NumPy -----------------------------------------------------------


@FUZZ
@given(st.data(), st.sampled_from(sorted(MAP_FNS)))
def test_map_fuzz(data: st.DataObject, name: str) -> None:
    op, fn, ulps = MAP_FNS[name]
    t, x = data.draw(maybe_permuted(data.draw(fuzz_shapes())))
    out = op(t)
    assert_ulps(out, vectorized(fn, x), ulps)
    assert out._tensor.is_contiguous()


@st.composite
def map_into_cases(draw: st.DrawFn) -> tuple[Tensor, np.ndarray, Tensor, np.ndarray]:
    """``a`` that broadcasts into a (possibly permuted, larger-rank) ``out``."""
    out_shape = draw(fuzz_shapes())
    start = draw(st.integers(min_value=0, max_value=len(out_shape) - 1))
    a_shape = tuple(1 if draw(st.booleans()) else d for d in out_shape[start:])
    a, x = draw(maybe_permuted(a_shape))
    out, garbage = draw(maybe_permuted(out_shape))
    return a, x, out, garbage


@FUZZ
@given(map_into_cases(), st.booleans())
def test_map_into_out_fuzz(case: tuple[Tensor, np.ndarray, Tensor, np.ndarray], cmap: bool) -> None:
    a, x, out, garbage = case
    if cmap:
        result = FB.id_cmap(a, out)
        expected = np.broadcast_to(x, garbage.shape)
    else:
        result = FB.neg_map(a, out)
        expected = np.broadcast_to(vectorized(operators.neg, x), garbage.shape)
    assert result is out
    assert_bits(out, expected)
    assert a.to_numpy().tobytes() == np.ascontiguousarray(x).tobytes()  # input untouched


@FUZZ
@given(st.data(), zip_shape_pairs(), st.sampled_from(sorted(ZIP_FNS)))
def test_zip_fuzz(
    data: st.DataObject, pair: tuple[tuple[int, ...], tuple[int, ...]], name: str
) -> None:
    op, fn = ZIP_FNS[name]
    a, x = data.draw(maybe_permuted(pair[0]))
    b, y = data.draw(maybe_permuted(pair[1]))
    out = op(a, b)
    assert_bits(out, vectorized(fn, x, y))
    assert out._tensor.is_contiguous()


@FUZZ
@given(st.data())
def test_reduce_fuzz(data: st.DataObject) -> None:
    t, x = data.draw(maybe_permuted(data.draw(fuzz_shapes())))
    dim = data.draw(st.integers(min_value=-t.dims, max_value=t.dims - 1))
    assert_near(t.sum(dim), x.sum(axis=dim, keepdims=True))  # negative dims via Tensor.sum
    d = dim % t.dims
    assert_near(FB.add_reduce(t, d), x.sum(axis=d, keepdims=True))
    # max is order-independent, so it must be exact whatever the kernel's order.
    assert_bits(FB.reduce_of(operators.max, -1e9)(t, d), x.max(axis=d, keepdims=True))
    scaled = FB.mul_reduce(t, d)
    np.testing.assert_allclose(scaled.to_numpy(), x.prod(axis=d, keepdims=True), rtol=1e-12)


@FUZZ
@given(st.data())
def test_reduce_whole_tensor_fuzz(data: st.DataObject) -> None:
    t, x = data.draw(maybe_permuted(data.draw(fuzz_shapes())))
    assert_near(t.sum(), np.array([x.sum()]))
    # Any layout folds its values in row-major order, the row-major ones read in place
    # (also from a row-major view that starts inside its buffer).
    flat = t.contiguous().view(t.size)
    assert_bits(t.sum(), FB.add_reduce(flat, 0).to_numpy())
    if t.dims > 1 and t.shape[0] > 1:
        rest = t[1:] if t._tensor.is_row_major() else t.contiguous()[1:]
        assert_bits(rest.sum(), FB.add_reduce(flat[t.size // t.shape[0] :], 0).to_numpy())
    np.testing.assert_array_equal(t.to_numpy(), x)


MATMUL_KINDS = ["2d", "batch", "a_bcast", "b_bcast", "a_rank2", "b_rank2", "4d"]


@st.composite
def matmul_cases(draw: st.DrawFn) -> tuple[Tensor, np.ndarray, Tensor, np.ndarray]:
    m, k, n = (draw(st.integers(min_value=1, max_value=9)) for _ in range(3))
    batch = draw(st.integers(min_value=2, max_value=3))
    shape_a, shape_b = {
        "2d": ((m, k), (k, n)),
        "batch": ((batch, m, k), (batch, k, n)),
        "a_bcast": ((1, m, k), (batch, k, n)),
        "b_bcast": ((batch, m, k), (1, k, n)),
        "a_rank2": ((m, k), (batch, k, n)),
        "b_rank2": ((batch, m, k), (k, n)),
        "4d": ((2, 1, m, k), (1, batch, k, n)),
    }[draw(st.sampled_from(MATMUL_KINDS))]
    a, x = draw(maybe_permuted(shape_a))
    b, y = draw(maybe_permuted(shape_b))
    return a, x, b, y


@FUZZ
@given(matmul_cases())
def test_matmul_fuzz(case: tuple[Tensor, np.ndarray, Tensor, np.ndarray]) -> None:
    a, x, b, y = case
    assert_near(a @ b, np.matmul(x, y), rtol=1e-9, atol=1e-6)


def _sum_of_squares(acc: float, x: float) -> float:
    return acc + x * x


def test_reduce_folds_in_order_like_simple_ops() -> None:
    x = np.arange(1.0, 11.0)
    expected = float((x * x).sum())
    simple = SB.reduce_of(_sum_of_squares, 0.0)(minitorch.tensor(x.tolist()), 0)
    assert simple.item() == expected
    assert FB.reduce_of(_sum_of_squares, 0.0)(fast(x[:7]), 0).item() == float((x[:7] ** 2).sum())
    assert FB.reduce_of(_sum_of_squares, 0.0)(fast(x), 0).item() == expected


def _halving_fold(acc: float, x: float) -> float:
    return acc * 0.5 + x  # each step's rounding depends on the order of the fold


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("shape", [(3, 37, 50), (1, 9, 7), (4, 37, 300)])
@pytest.mark.parametrize("transposed", [False, True])
def test_reduce_over_outer_dim_folds_in_order(dtype: type, shape: tuple[int, ...],
                                              transposed: bool) -> None:  # fmt: skip
    """Reducing a dim with positions after it (a row of outputs per outer row) folds each
    output in order, in the serial kernel (no chunks, no unrolling) and the parallel one
    (chunks of rows, four rows a pass) alike: bit for bit the in-order fold."""
    rng = np.random.default_rng(sum(shape))
    base = rng.standard_normal(shape).astype(dtype)
    if transposed:  # the inner positions strided in memory
        t = minitorch.tensor_from_numpy(np.ascontiguousarray(base.transpose(0, 2, 1)),
                                        backend=FB).permute(0, 2, 1)  # fmt: skip
    else:
        t = minitorch.tensor_from_numpy(base, backend=FB)
    got = FB.reduce_of(_halving_fold, 1.0)(t, 1).to_numpy()
    expected = np.full((shape[0], 1, shape[2]), 1.0, dtype)
    for r in range(shape[1]):
        expected = expected * dtype(0.5) + base[:, r : r + 1, :]
    assert got.dtype == dtype and np.array_equal(got, expected)
    # The parallel size is reached (and the serial one below it).
    assert (base.size >= fast_ops.PARALLEL_THRESHOLD) == (shape == (4, 37, 300))


def _math_exp(x: float) -> float:
    try:
        return math.exp(x)
    except OverflowError:
        return math.inf


def test_exp_within_one_ulp_of_math_exp() -> None:
    rng = np.random.default_rng(1)
    specials = [0.0, -0.0, 1.0, -1.0, 1e-300, -5e-324, 709.78, 709.79, 710.0, 1e308,
                -708.0, -740.0, -745.1, -746.0, -1e308, np.inf, -np.inf, np.nan]  # fmt: skip
    x = np.concatenate([rng.uniform(-745.0, 709.7, 20_000), rng.uniform(-2, 2, 20_000), specials])
    with np.errstate(all="ignore"):
        expected = vectorized(_math_exp, x)
    assert_ulps(FB.exp_map(fast(x)), expected, 1)
    assert_ulps(fast(x).exp(), expected, 1)


def test_zero_size_tensors() -> None:
    z = fast(np.zeros((2, 0)))
    assert (z + z).shape == (2, 0)
    assert FB.neg_map(z).shape == (2, 0)
    assert_bits(z.sum(1), np.zeros((2, 1)))
    assert_bits(FB.mul_reduce(z, 1), np.ones((2, 1)))  # pre-filled with start
    assert_bits(z @ fast(np.zeros((0, 3))), np.zeros((2, 3)))
    assert (fast(np.zeros((0, 4))) @ fast(np.ones((4, 3)))).shape == (0, 3)


def test_reduce_size_one_dims_and_single_element() -> None:
    x = np.arange(6.0).reshape(1, 6, 1)
    t = fast(x)
    for d in range(3):
        assert_bits(t.sum(d), x.sum(axis=d, keepdims=True))
    assert_bits(fast([5.0]).sum(0), np.array([5.0]))


# 2. Large tensors: the parallel kernels ------------------------------------------------

RNG_SEED = 20240917


@pytest.fixture(scope="module")
def rng() -> np.random.Generator:
    return np.random.default_rng(RNG_SEED)


def test_large_elementwise_contiguous_and_broadcast(rng: np.random.Generator) -> None:
    x = rng.standard_normal((300, 400))
    y = rng.standard_normal((300, 400))
    bias = rng.standard_normal(400)
    col = rng.standard_normal((300, 1))
    assert_is_parallel_size(x.size)
    a, b = fast(x), fast(y)
    assert_bits(FB.neg_map(a), -x)
    assert_bits(a + b, x + y)
    assert_bits(a * fast(bias), x * bias)  # trailing-block ("bias") fast path
    assert_bits(fast(bias) * a, bias * x)
    assert_bits(a + fast([2.5]), x + 2.5)  # a (1,) scalar on either side
    assert_bits(fast([2.5]) * a, 2.5 * x)
    assert_bits(fast(col) + fast(bias), col + bias)  # both broadcast: general 2-D path
    assert_bits(FB.lt_zip(a, fast(col)), (x < col).astype(np.float64))
    # A long 1-D operand is split into chunks across threads.
    v = rng.standard_normal(250_001)
    assert_bits(fast(v) * fast(v), v * v)


def test_large_elementwise_permuted_2d_3d_4d(rng: np.random.Generator) -> None:
    base2 = rng.standard_normal((400, 300))
    a2, x2 = permuted(base2, (1, 0))
    y2 = rng.standard_normal((300, 400))
    assert_bits(a2 + fast(y2), x2 + y2)
    assert_bits(FB.neg_map(a2), -x2)

    base3 = rng.standard_normal((50, 40, 60))
    a3, x3 = permuted(base3, (2, 0, 1))
    y3 = rng.standard_normal((60, 50, 40))
    b3, _ = view_of(y3, (1, 2, 0))
    assert_bits(a3 * b3, x3 * y3)
    assert_bits(a3 + fast(y3), x3 + y3)
    assert_bits(a3 + fast(y3[:, :1, :]), x3 + y3[:, :1, :])

    base4 = rng.standard_normal((20, 30, 40, 10))
    a4, x4 = permuted(base4, (3, 1, 0, 2))
    assert_is_parallel_size(a4.size)
    assert_bits(FB.neg_map(a4), -x4)
    y4 = rng.standard_normal(x4.shape)
    b4, _ = view_of(y4, (2, 0, 3, 1))
    assert_bits(a4 + b4, x4 + y4)
    z = rng.standard_normal((30, 1, 40))  # broadcast into a permuted 4-D
    assert_bits(a4 * fast(z), x4 * z)


def test_large_map_into_non_contiguous_out(rng: np.random.Generator) -> None:
    row = rng.standard_normal(400)
    out = fast(np.zeros((400, 300))).permute(1, 0)
    assert out.size >= fast_ops.PARALLEL_THRESHOLD
    assert FB.neg_map(fast(row), out) is out
    assert_bits(out, np.broadcast_to(-row, (300, 400)))

    x = rng.standard_normal((20, 1, 40, 1))
    out4 = fast(np.zeros((10, 40, 30, 20))).permute(3, 2, 1, 0)  # (20, 30, 40, 10)
    FB.id_cmap(fast(x), out4)
    assert_bits(out4, np.broadcast_to(x, (20, 30, 40, 10)))


def test_large_reductions_each_dim(rng: np.random.Generator) -> None:
    x = rng.standard_normal((1000, 200))
    t = fast(x)
    tt, xt = permuted(x, (1, 0))
    for d in (0, 1, -1):
        assert_near(t.sum(d), x.sum(axis=d, keepdims=True))
        assert_near(tt.sum(d), xt.sum(axis=d, keepdims=True))
        assert_bits(FB.reduce_of(operators.max, -1e9)(tt, d % 2), xt.max(axis=d, keepdims=True))

    cube, xc = permuted(rng.standard_normal((50, 40, 60)), (2, 0, 1))
    for d in range(3):
        assert_near(cube.sum(d), xc.sum(axis=d, keepdims=True))
        assert_bits(FB.reduce_of(operators.max, -1e9)(cube, d), xc.max(axis=d, keepdims=True))
    assert_near(cube.sum(), np.array([xc.sum()]))


def test_large_reduce_long_axis(rng: np.random.Generator) -> None:
    v = rng.standard_normal(200_003)
    assert_is_parallel_size(v.size)
    assert_near(fast(v).sum(0), np.array([v.sum()]))
    assert_bits(FB.reduce_of(operators.max, -1e9)(fast(v), 0), np.array([v.max()]))
    # A long strided axis (a column of a transposed matrix) and two outputs.
    m = rng.standard_normal((2, 120_000))
    tm, xm = permuted(m, (1, 0))
    assert_near(tm.sum(0), xm.sum(axis=0, keepdims=True))
    assert_near(fast(m).sum(1), m.sum(axis=1, keepdims=True))
    assert_near(fast(m.reshape(2, 1, 120_000)).sum(2), m.reshape(2, 1, 1, -1).sum(axis=3))


def test_large_matmul_square_and_transposed(rng: np.random.Generator) -> None:
    x = rng.standard_normal((256, 256))
    y = rng.standard_normal((256, 256))
    a, b = fast(x), fast(y)
    at, xt = permuted(x, (1, 0))
    bt, yt = permuted(y, (1, 0))
    assert_near(a @ b, x @ y)
    assert_near(at @ b, xt @ y)  # transposed A: packed from its strides
    assert_near(a @ bt, x @ yt)  # transposed B: likewise
    assert_near(at @ bt, xt @ yt)


def test_large_matmul_batched_and_broadcast(rng: np.random.Generator) -> None:
    x = rng.standard_normal((16, 64, 64))
    y = rng.standard_normal((16, 64, 64))
    one = rng.standard_normal((1, 64, 64))
    a, b, c = fast(x), fast(y), fast(one)
    assert_near(a @ b, x @ y)
    assert_near(a @ c, x @ one)  # a batch of 1 broadcasts, either side
    assert_near(c @ b, one @ y)
    assert_near(a.permute(0, 2, 1) @ b, x.transpose(0, 2, 1) @ y)
    assert_near(a @ b.permute(0, 2, 1), x @ y.transpose(0, 2, 1))
    assert_near(
        c.permute(0, 2, 1) @ b.permute(0, 2, 1), one.transpose(0, 2, 1) @ y.transpose(0, 2, 1)
    )
    # Batch dim not outermost in memory.
    bp, yp = view_of(y, (1, 0, 2))
    assert_near(a @ bp, x @ yp)


def test_large_matmul_odd_sizes_and_long_k(rng: np.random.Generator) -> None:
    # Odd m and n leave partial register blocks; k > 512 spans several k blocks.
    x = rng.standard_normal((41, 600))
    y = rng.standard_normal((600, 51))
    assert_near(fast(x) @ fast(y), x @ y)
    assert_near(view_of(x, (1, 0))[0] @ view_of(y, (1, 0))[0], x @ y)
    # Different ranks: (3, 101, 37) @ (37, 129).
    p = rng.standard_normal((3, 101, 37))
    q = rng.standard_normal((37, 129))
    assert_near(fast(p) @ fast(q), p @ q)
    assert_near(view_of(p, (0, 2, 1))[0] @ view_of(q, (1, 0))[0], p @ q)


@pytest.mark.parametrize("threads", [1, 2])
def test_large_matmul_deals_every_strip_of_b_once(rng: np.random.Generator, threads: int) -> None:
    # One block of rows (m <= _MC): the strips of B (8 columns in float64) are cut into a
    # multiple of the thread count of blocks that differ by one strip; every strip count
    # from 1 to 33, and partial last strips, must come out whole.
    x = rng.standard_normal((100, 400))  # above the parallel threshold from n = 27
    previous = numba.get_num_threads()
    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    try:
        for n in [*range(8, 8 * 34, 8), 13, 199, 201]:
            y = rng.standard_normal((400, n))
            assert_near(fast(x) @ fast(y), x @ y)
            assert_near(fast(x) @ view_of(y, (1, 0))[0], x @ y)
    finally:
        numba.set_num_threads(previous)


def test_large_matmul_row_streaming_parallel(rng: np.random.Generator) -> None:
    # Above the parallel threshold with a short k and row-major B: the row-streaming
    # kernel runs in parallel.
    x = rng.standard_normal((2, 300, 6))
    y = rng.standard_normal((2, 6, 300))
    one = rng.standard_normal((1, 6, 300))
    assert 2 * 300 * 300 * 6 >= fast_ops._PARALLEL_MATMUL_WORK
    assert_near(fast(x) @ fast(y), x @ y)
    assert_near(view_of(x, (0, 2, 1))[0] @ fast(y), x @ y)
    assert_near(fast(x) @ fast(one), x @ one)
    assert_near(fast(x[:1]) @ fast(y), x[:1] @ y)
    xs = np.tile(x, (4, 1, 1))
    v = rng.standard_normal((8, 6, 1))  # n == 1
    assert_near(fast(xs) @ fast(v), xs @ v)


# Thin products (few rows of A, or a short k) that route around the GEMM, near
# each edge of the routing: rows 2 * _MR, k 4 / 8 / _THIN_K, work _GEMM_WORK / _THIN_WORK.
ROUTING_SIZES = {
    "mlp": (10, 100, 100),
    "rows_edge": (2 * fast_ops._MR, 40, 70),
    "rows_edge_below": (2 * fast_ops._MR - 1, 40, 70),
    "short_k_edge": (40, fast_ops._THIN_K, 60),
    "short_k_above": (40, fast_ops._THIN_K + 1, 60),
    "dots_short_k": (9, 4, 40),
    "rows_short_k": (9, 3, 40),
    "thin_work_below": (11, 128, 186),  # 261888 < 2**18
    "thin_work_above": (11, 128, 187),  # 263296 >= 2**18: back to the GEMM
    "gemm_work_edge": (32, 32, 32),
    "narrow_long_k": (3 * fast_ops._MR - 1, 2048, 9),  # dots when along k
    "narrow_rows_edge": (3 * fast_ops._MR, 2048, 9),  # GEMM
    "narrow_cols_edge": (3 * fast_ops._MR - 1, 300, 32),  # GEMM in either dtype
    "gemm_parallel_edge": (64, 256, 64),  # 2^20: the parallel GEMM
    "gemm_parallel_below": (63, 256, 64),
    "thin_serial_k_edge": (2 * fast_ops._MR - 1, fast_ops._THIN_K, 2048),  # rows
    "thin_serial_k_above": (2 * fast_ops._MR - 1, fast_ops._THIN_K + 1, 2048),  # GEMM
}
ROUTING_LAYOUTS = ("row_major", "a_t", "b_t", "both_t", "batch_b_t", "bcast_a_t")


def _routing_operands(
    rng: np.random.Generator, m: int, k: int, n: int, layout: str, dtype: type
) -> tuple[Tensor, Tensor, np.ndarray]:
    """Operands (views laid out as ``layout``) and the float64 NumPy product."""
    batch = 2 if layout in ("batch_b_t", "bcast_a_t") else 1
    x = rng.standard_normal((batch, m, k)).astype(dtype)
    y = rng.standard_normal((batch, k, n)).astype(dtype)
    if layout == "bcast_a_t":
        x = x[:1]

    def lay(v: np.ndarray, transposed: bool) -> Tensor:
        if not transposed:
            return minitorch.tensor_from_numpy(v, backend=FB)
        t = minitorch.tensor_from_numpy(np.ascontiguousarray(v.transpose(0, 2, 1)), backend=FB)
        return t.permute(0, 2, 1)

    a = lay(x, layout in ("a_t", "both_t", "bcast_a_t"))
    b = lay(y, layout in ("b_t", "both_t", "batch_b_t"))
    return a, b, np.matmul(x.astype(np.float64), y.astype(np.float64))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("layout", ROUTING_LAYOUTS)
@pytest.mark.parametrize("size", list(ROUTING_SIZES))
def test_matmul_routing_edges_match_numpy(size: str, layout: str, dtype: type) -> None:
    m, k, n = ROUTING_SIZES[size]
    rng = np.random.default_rng([list(ROUTING_SIZES).index(size), ROUTING_LAYOUTS.index(layout)])
    a, b, expected = _routing_operands(rng, m, k, n, layout, dtype)
    out = a @ b
    assert out._tensor._storage.dtype == dtype
    tol = 1e-12 if dtype == np.float64 else 2e-6
    np.testing.assert_allclose(out.to_numpy(), expected, rtol=tol * k, atol=tol * k)


@st.composite
def thin_matmul_cases(draw: st.DrawFn) -> tuple[int, int, int, str, type]:
    """Products around the thin-product routing: rows of A near 2 * _MR, k near
    4, 8 and _THIN_K, or about the MLP's size; any layout, either dtype."""
    m = draw(st.sampled_from([1, 2, 5, 6, 7, 11, 12, 13]))
    k = draw(st.sampled_from([1, 3, 4, 7, 8, 15, 16, 17, 64, 100]))
    n = draw(st.sampled_from([1, 2, 3, 8, 9, 33, 100]))
    return m, k, n, draw(st.sampled_from(ROUTING_LAYOUTS)), draw(st.sampled_from(DTYPES))


DTYPES = (np.float64, np.float32)


@settings(FUZZ, max_examples=40)
@given(thin_matmul_cases(), st.integers(0, 2**32 - 1))
def test_thin_matmul_fuzz(case: tuple[int, int, int, str, type], seed: int) -> None:
    m, k, n, layout, dtype = case
    a, b, expected = _routing_operands(np.random.default_rng(seed), m, k, n, layout, dtype)
    tol = 1e-12 if dtype == np.float64 else 2e-6
    np.testing.assert_allclose((a @ b).to_numpy(), expected, rtol=tol * k, atol=tol * k)


def test_course_mlp_products_never_run_the_gemm(launched_kernels: list[str]) -> None:
    # Compiling the packed GEMM costs seconds on a cold kernel cache: the course MLP's
    # products (forward, and backward with transposed operands) take the cheap kernels.
    launched = launched_kernels
    rng = np.random.default_rng(0)
    x, h = fast(rng.standard_normal((10, 2))), fast(rng.standard_normal((10, 100)))
    w1, w2 = fast(rng.standard_normal((2, 100))), fast(rng.standard_normal((100, 100)))
    w3, g = fast(rng.standard_normal((100, 1))), fast(rng.standard_normal((10, 100)))
    t = minitorch.tensor_functions._transpose
    for a, b in ((x, w1), (h, w2), (h, w3), (g, t(w2)), (t(h), g), (g, t(w1)), (t(x), g)):
        out = a @ b
        assert_near(out, a.to_numpy() @ b.to_numpy())
    assert len(launched) == 7
    assert not [name for name in launched if "gemm" in name], launched


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize(
    "m, k, n, layout, kernel",
    [(16, 2048, 9, "b_t", "_matmul_dots_ser"),  # the digits CNN's conv1 weight gradient
     (17, 256, 15, "b_t", "_matmul_dots_ser"),
     (18, 512, 15, "b_t", "_gemm_into_ser"),  # three strips of rows: the GEMM
     (17, 4200, 15, "b_t", "_gemm_into_par"),  # 2^20 and more: the GEMM
     (17, 256, 15, "row_major", "_gemm_into_ser"),  # not along k
     (64, 256, 64, "row_major", "_gemm_into_par"),  # 2^20 multiply-adds
     (63, 256, 64, "row_major", "_gemm_into_ser"),
     (32, 9, 16 * 32, "batch_b_t", "_gemm_into_ser"),
     # Under two strips of rows and k <= _THIN_K, serial: rows (the digits CNN's conv1
     # input gradient); a k or a row more, or the parallel size, the GEMM.
     (9, 16, 2048, "row_major", "_matmul_rows_ser"),
     (11, 16, 5900, "row_major", "_matmul_rows_ser"),
     (9, 17, 2048, "row_major", "_gemm_into_ser"),
     (12, 16, 2048, "row_major", "_gemm_into_ser"),
     (11, 16, 6000, "row_major", "_gemm_into_par")],
)  # fmt: skip
def test_matmul_routing_picks_the_measured_kernel(
    m: int, k: int, n: int, layout: str, kernel: str, dtype: type, launched_kernels: list[str]
) -> None:
    """The routing rules of ``_matmul_into`` that timing chose (narrow products along k
    as dot products, the GEMM parallel from 2^20 multiply-adds), and their results."""
    if kernel == "_matmul_dots_ser" and dtype == np.float32:
        n = 2 * n + 1  # "under two strips of columns" is twice as wide in float32
    a, b, expected = _routing_operands(np.random.default_rng(m + k + n), m, k, n, layout, dtype)
    out = a @ b
    tol = 1e-12 if dtype == np.float64 else 2e-6
    np.testing.assert_allclose(out.to_numpy(), expected, rtol=tol * k, atol=tol * k)
    assert launched_kernels == [kernel]


# Every 2-D kernel pattern (unit-stride, broadcast or general inner stride per input,
# a unit or strided output) in both dtypes, serial and parallel, against NumPy.
LAYOUTS_2D = ("unit", "column", "bias", "one", "strided")


def _operand_2d(layout: str, n0: int, n1: int, dtype: type, rng: np.random.Generator
                ) -> tuple[Tensor, np.ndarray]:  # fmt: skip
    """An operand broadcasting to (n0, n1): contiguous, one value per row (inner stride 0),
    one row repeated (row stride 0), a single value, or a transposed view."""
    shape = {"unit": (n0, n1), "column": (n0, 1), "bias": (n1,), "one": (1,),
             "strided": (n1, n0)}[layout]  # fmt: skip
    base = rng.standard_normal(shape).astype(dtype)
    t = minitorch.tensor_from_numpy(base, backend=FB)
    return (t.permute(1, 0), base.T) if layout == "strided" else (t, base)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("n0, n1", [(3, 7), (40, 1000)])
def test_every_2d_pattern_matches_numpy(dtype: type, n0: int, n1: int) -> None:
    rng = np.random.default_rng(n0)
    for first in LAYOUTS_2D:
        (a, na), (fn, ref) = _operand_2d(first, n0, n1, dtype, rng), (FB.neg_map, np.negative)
        for op, expected in ((fn, ref(na)), (FB.id_map, na)):
            full = np.broadcast_to(expected, (n0, n1))
            out = minitorch.tensor_from_numpy(np.zeros((n0, n1), dtype), backend=FB)
            got = op(a, out).to_numpy()
            assert got.dtype == dtype and np.array_equal(got, full), (first, op)
        for second in LAYOUTS_2D:
            b, nb = _operand_2d(second, n0, n1, dtype, rng)
            # sub is not commutative (operand order), add is (its swapped launch).
            for op, ref in ((FB.zip_of(operators.sub), np.subtract), (FB.add_zip, np.add)):
                got = op(a, b).to_numpy()
                assert got.dtype == dtype and np.array_equal(got, ref(na, nb)), (first, second)
                expected = np.broadcast_to(ref(na, nb), (n0, n1))
                strided = minitorch.tensor_from_numpy(np.zeros((n1, n0), dtype),
                                                      backend=FB).permute(1, 0)  # fmt: skip
                got = op(a, b, strided).to_numpy()
                assert np.array_equal(got, expected), (first, second, "strided out")


@pytest.mark.parametrize("big_shape", [(7,), (1, 7), (3, 5), (2, 1, 4), (0, 3)])
@pytest.mark.parametrize("one_shape", [(1,), (1, 1), (1, 1, 1)])
def test_one_value_operand_matches_numpy_without_layout_work(
    big_shape: tuple[int, ...], one_shape: tuple[int, ...], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``x - c`` and ``c - x`` with a one-element ``c`` of no more dims than a contiguous
    ``x`` skip the general layout path (regression: 3.4 us of Python per op); a ``c`` of
    more dims, which gives the result its dims, and a strided ``x`` still take it."""
    rng = np.random.default_rng(len(big_shape) + 10 * len(one_shape))
    sub = FB.zip_of(operators.sub)
    general = []
    monkeypatch.setattr(fast_ops, "zip_output", lambda *a: general.append(1) or zip_output(*a))
    for dtype_x, dtype_c in [(np.float64, np.float64), (np.float32, np.float32),
                             (np.float32, np.float64), (np.float64, np.float32)]:  # fmt: skip
        nx = rng.standard_normal(big_shape).astype(dtype_x)
        nc = np.array(rng.standard_normal(), dtype_c).reshape(one_shape)
        x, c = (minitorch.tensor_from_numpy(v, backend=FB) for v in (nx, nc))
        less = lambda p, q: (p < q).astype(np.result_type(p, q))  # noqa: E731
        for op, ref in ((sub, np.subtract), (FB.lt_zip, less)):
            for first, second, expected in ((x, c, ref(nx, nc)), (c, x, ref(nc, nx))):
                general.clear()
                got = op(first, second)
                assert got.shape == expected.shape and got.dtype == expected.dtype
                assert np.array_equal(got.to_numpy(), expected)
                assert bool(general) == (len(one_shape) > len(big_shape) or 0 in big_shape)
        if len(big_shape) > 1:
            general.clear()
            xt = x.permute(*reversed(range(len(big_shape))))
            assert np.array_equal(sub(xt, c).to_numpy(), np.subtract(nx.T, nc))
            assert general


@pytest.mark.parametrize(
    "big_shape, row_shape, layout_free",
    [((10, 100), (100,), True), ((2, 3, 4), (3, 4), True), ((2, 3, 4), (4,), True),
     ((3, 4), (1, 4), False), ((0, 4), (4,), False),
     ((3, 1), (1,), True), ((4, 3), (3,), True), ((5, 4, 3), (4, 3), True)],
)  # fmt: skip
def test_repeated_row_operand_matches_numpy_without_layout_work(
    big_shape: tuple[int, ...], row_shape: tuple[int, ...], layout_free: bool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """A bias (a contiguous row whose shape ends a contiguous tensor's) in either operand
    skips the layout path; a row with leading 1s, a transposed row or an empty tensor do not.
    (2-D rows are also tried as transposed views: not contiguous, so laid out.)"""
    rng = np.random.default_rng(sum(big_shape) + 7 * sum(row_shape))
    sub = FB.zip_of(operators.sub)
    general: list[int] = []
    monkeypatch.setattr(fast_ops, "zip_output", lambda *a: general.append(1) or zip_output(*a))
    for dtype in (np.float64, np.float32):
        nx = rng.standard_normal(big_shape).astype(dtype)
        nr = rng.standard_normal(row_shape).astype(dtype)
        x, r = (minitorch.tensor_from_numpy(v, backend=FB) for v in (nx, nr))
        transposed = minitorch.tensor_from_numpy(np.ascontiguousarray(nr.T), backend=FB)
        views = [r, transposed.permute(1, 0)] if len(row_shape) == 2 else [r]
        for row in views:
            for first, second, expected in ((x, row, nx - nr), (row, x, nr - nx)):
                general.clear()
                got = sub(first, second)
                assert got.shape == expected.shape and np.array_equal(got.to_numpy(), expected)
                assert bool(general) == (not layout_free or row is not r)


@pytest.mark.parametrize("batch", [2, 64], ids=["serial", "parallel"])
def test_nd_layouts_with_unit_or_broadcast_inner_strides_match_numpy(batch: int) -> None:
    """Layouts that stay 3-D after merging (a conv bias (C, 1, 1) over (B, C, H, W), in
    either operand; a broadcast map into ``out=``; a strided inner dim) run the N-D
    kernel's run for their inner-stride pattern, or its strided loop: NumPy's values."""
    rng = np.random.default_rng(batch)
    sub = FB.zip_of(operators.sub)
    for dtype in (np.float64, np.float32):
        nx = rng.standard_normal((batch, 16, 8, 8)).astype(dtype)
        nb = rng.standard_normal((16, 1, 1)).astype(dtype)
        x, b = (minitorch.tensor_from_numpy(v, backend=FB) for v in (nx, nb))
        assert np.array_equal(sub(x, b).to_numpy(), nx - nb)
        assert np.array_equal(sub(b, x).to_numpy(), nb - nx)
        strided = x.permute(0, 1, 3, 2)
        assert np.array_equal(sub(strided, b).to_numpy(), nx.transpose(0, 1, 3, 2) - nb)
        out = minitorch.zeros((batch, 16, 8, 8), backend=FB, dtype=dtype)
        FB.id_map(b, out=out)
        assert np.array_equal(out.to_numpy(), np.broadcast_to(nb, out.shape))


def test_each_2d_pattern_kernel_compiles_only_when_met() -> None:
    """A broadcast compiles the 2-D kernel of its own inner-stride pattern, no other."""
    from minitorch import fast_kernels
    from minitorch.kernel_cache import load_kernels

    def scaled_diff(x: float, y: float) -> float:
        return (x - y) * 0.25

    op = minitorch.binary_op(scaled_diff)
    zips = load_kernels("zip", fast_kernels.ZIP_SOURCE, scaled_diff, dtype=np.float64)

    def compiled() -> set[str]:
        return {name for name in dir(zips) if "2d" in name and getattr(zips, name).signatures}

    x = minitorch.tensor_from_numpy(np.arange(6.0).reshape(2, 3), backend=FB)
    one = minitorch.tensor_from_numpy(np.array([2.0]), backend=FB)
    assert op(x, one).to_numpy().tolist() == [[-0.5, -0.25, 0.0], [0.25, 0.5, 0.75]]
    assert compiled() == {"zip2d_ub_ser"}
    assert op(one, x).to_numpy().tolist() == [[0.5, 0.25, 0.0], [-0.25, -0.5, -0.75]]
    assert compiled() == {"zip2d_ub_ser", "zip2d_bu_ser"}
    assert op(x, x.permute(1, 0).contiguous().permute(1, 0)).to_numpy().tolist() == [
        [0.0] * 3, [0.0] * 3]  # fmt: skip
    assert compiled() == {"zip2d_ub_ser", "zip2d_bu_ser", "zip2d_ser"}


# 3. Determinism across thread counts and runs ------------------------------------------

DETERMINISM_SCRIPT = textwrap.dedent(
    """
    import hashlib

    import numpy as np

    import minitorch

    FB = minitorch.TensorBackend(minitorch.FastOps)


    def digest():
        h = hashlib.sha256()
        for dtype in (np.float64, np.float32):
            for o in outputs(dtype):
                assert o._tensor._storage.dtype == dtype
                h.update(np.ascontiguousarray(o.to_numpy()).tobytes())
        return h.hexdigest()


    def outputs(dtype):
        def t(x):
            return minitorch.tensor_from_numpy(np.asarray(x, dtype), backend=FB)

        rng = np.random.default_rng(7)
        a = t(rng.standard_normal((300, 400)))
        b = t(rng.standard_normal((400, 300))).permute(1, 0)
        outs = [FB.add_zip(a, t(rng.standard_normal(400))), FB.mul_zip(a, b), FB.exp_map(b)]
        big = t(rng.standard_normal((1000, 200)))
        for x in (big, big.permute(1, 0)):
            outs += [FB.add_reduce(x, 0), FB.add_reduce(x, 1), FB.mul_reduce(x, 1)]
        cube = t(rng.standard_normal((50, 40, 60))).permute(2, 0, 1)
        outs += [FB.add_reduce(cube, d) for d in range(3)]
        outs.append(FB.add_reduce(t(rng.standard_normal(200_003)), 0))
        # Fewer rows than threads: the inner positions are cut per thread count.
        wide = rng.standard_normal((30, 1500))
        wide[::7, ::5] = np.nan
        maximum = FB.reduce_of(minitorch.operators.maximum, float("-inf"))
        outs += [FB.add_reduce(t(wide), 0), maximum(t(wide), 0), maximum(t(wide[:, :-1]), 0)]
        m1 = t(rng.standard_normal((256, 300)))
        m2 = t(rng.standard_normal((300, 256)))
        mm = FB.matrix_multiply
        outs += [mm(m1, m2), mm(m2.permute(1, 0), m1.permute(1, 0)), mm(m1, m1.permute(1, 0))]
        p = t(rng.standard_normal((16, 64, 64)))
        q = t(rng.standard_normal((1, 64, 64)))
        outs += [mm(p, q), mm(q.permute(0, 2, 1), p), mm(p.permute(0, 2, 1), p), mm(p, p)]
        outs.append(mm(t(rng.standard_normal((500, 700))), t(rng.standard_normal((700, 2)))))
        # One block of rows: the strips of B are dealt out per thread count.
        h = t(rng.standard_normal((100, 200)))
        w = t(rng.standard_normal((200, 200)))
        outs += [mm(h, w), mm(h, w.permute(1, 0)), mm(t(rng.standard_normal((30, 64))), w[:64])]
        return outs
    """
)


def run_python(code: str, env_updates: dict[str, str | None], timeout: float = 300) -> str:
    env = dict(os.environ)
    for key, value in env_updates.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    proc = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=timeout
    )
    assert proc.returncode == 0, f"subprocess failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout.strip().splitlines()[-1]


@pytest.mark.not_boundschecked
def test_results_identical_for_any_thread_count() -> None:
    code = DETERMINISM_SCRIPT + "\nprint(digest())\n"
    one = run_python(code, {"NUMBA_NUM_THREADS": "1"})
    two = run_python(code, {"NUMBA_NUM_THREADS": "2"})
    three = run_python(code, {"NUMBA_NUM_THREADS": "3"})  # an odd count splits work unevenly
    namespace: dict[str, Any] = {"__name__": "determinism"}
    exec(DETERMINISM_SCRIPT, namespace)
    here = namespace["digest"]()
    assert one == two == three == here
    assert namespace["digest"]() == here  # and across runs in one process


# 4. The disk cache -----------------------------------------------------------------

CACHE_SCRIPT = textwrap.dedent(
    """
    import json

    import numpy as np
    from numba.core.registry import CPUDispatcher

    import minitorch
    from minitorch import kernel_cache


    def affine_for_cache_test(x):
        return 2.0 * x + 1.0


    op = minitorch.FastOps.map(affine_for_cache_test)
    out = op(minitorch.tensor_from_numpy(np.arange(6.0).reshape(2, 3), backend=None))
    hits = misses = 0
    for module in kernel_cache._loaded.values():
        for name, obj in vars(module).items():
            if name != "fn" and isinstance(obj, CPUDispatcher):
                hits += sum(obj.stats.cache_hits.values())
                misses += sum(obj.stats.cache_misses.values())
    print(json.dumps({"values": out.to_numpy().tolist(), "hits": hits, "misses": misses,
                      "modules": sorted(kernel_cache._loaded)}))
    """
)


@pytest.mark.not_boundschecked
def test_kernels_cached_on_disk_across_processes(tmp_path: Path) -> None:
    # Kernels live in MINITORCH_CACHE_DIR whatever NUMBA_CACHE_DIR says.
    env = {"MINITORCH_CACHE_DIR": str(tmp_path), "NUMBA_CACHE_DIR": str(tmp_path / "numba")}
    first = json.loads(run_python(CACHE_SCRIPT, env))
    expected = (2.0 * np.arange(6.0) + 1.0).reshape(2, 3).tolist()
    assert first["values"] == expected
    assert len(first["modules"]) == 1 and first["modules"][0].startswith("_minitorch_map_")
    assert first["misses"] >= 1 and first["hits"] == 0
    entries = [p.name.split("-")[0] for p in (tmp_path / "kernels").glob("*.nbk")]
    assert entries == ["map_flat_ser"]  # a contiguous map takes the flat kernel
    assert not (tmp_path / "numba").exists()

    second = json.loads(run_python(CACHE_SCRIPT, env))
    assert second["values"] == expected
    assert second["modules"] == first["modules"]
    assert second["hits"] >= 1 and second["misses"] == 0, second


FLOAT32_SCRIPT = textwrap.dedent(
    """
    import json

    import numpy as np
    from numba.core import event

    import minitorch

    compiled = []


    class Compiles(event.Listener):
        def on_start(self, ev):
            pass

        def on_end(self, ev):
            compiled.append(ev.data["dispatcher"].py_func.__name__)


    event.register("numba:compile", Compiles())


    def halve_for_float32_test(x):
        return 0.5 * x


    def index_for_float32_test(x):  # a float32 index does not compile: float64 arithmetic
        return [0.5, 3.0][1] * x


    x = minitorch.tensor_from_numpy(np.linspace(-1, 1, 7, dtype=np.float32), backend=None)
    values = [minitorch.FastOps.map(fn)(x).to_numpy().tolist()
              for fn in (halve_for_float32_test, index_for_float32_test)]
    print(json.dumps({"values": values, "compiled": compiled}))
    """
)


@pytest.mark.not_boundschecked
def test_float32_variants_are_not_compiled_again_by_the_next_process(tmp_path: Path) -> None:
    """Whether a scalar function's float32 variant compiles is found by compiling it;
    the answer is kept with the kernels, so a process whose kernels are all on disk
    compiles nothing (the digits CNN's float32 start paid 0.7 s for 16 functions).
    A damaged answer is found out again."""
    env = {"MINITORCH_CACHE_DIR": str(tmp_path)}
    scalars = {"halve_for_float32_test", "index_for_float32_test"}
    first = json.loads(run_python(FLOAT32_SCRIPT, env))
    x = np.linspace(-1, 1, 7, dtype=np.float32)
    assert first["values"][0] == (np.float32(0.5) * x).tolist()
    assert first["values"][1] == (3 * x.astype(np.float64)).astype(np.float32).tolist()
    assert scalars <= set(first["compiled"])
    verdicts = sorted((tmp_path / "float32").iterdir())
    assert sorted(p.read_bytes() for p in verdicts) == [b"no", b"yes"]

    second = json.loads(run_python(FLOAT32_SCRIPT, env))
    assert second == {"values": first["values"], "compiled": []}

    for path in verdicts:
        path.write_bytes(b"\x00garbage")
    third = json.loads(run_python(FLOAT32_SCRIPT, env))
    assert third["values"] == first["values"]
    assert scalars <= set(third["compiled"])
    assert sorted(p.read_bytes() for p in verdicts) == [b"no", b"yes"]


def test_every_built_in_kernel_can_be_saved_to_the_disk_cache() -> None:
    """A kernel numba cannot serialise (one calling ``numba.get_num_threads()`` holds a
    run-time address) is silently compiled again by every process: the GEMM took 4.6 s
    of each run that way. Run the built-in kernels, then check what was compiled."""
    from numba.core.registry import CPUDispatcher

    from minitorch import fast_conv, fast_pool, kernel_cache

    rng = np.random.default_rng(3)
    for dtype in (np.float64, np.float32):
        for m, n, k in ((100, 200, 200), (30, 64, 64), (256, 256, 256)):  # serial, parallel
            a = minitorch.tensor_from_numpy(rng.random((m, k)).astype(dtype), backend=FB)
            b = minitorch.tensor_from_numpy(rng.random((k, n)).astype(dtype), backend=FB)
            bt = minitorch.tensor_from_numpy(rng.random((n, k)).astype(dtype), backend=FB)
            (a @ b).sum(0).sum(1)
            (a @ bt.permute(1, 0)).relu()  # B transposed: packed
        x = minitorch.tensor_from_numpy(rng.random((32, 4, 8, 8)).astype(dtype), backend=FB)
        w = minitorch.tensor_from_numpy(rng.random((8, 4, 3, 3)).astype(dtype), backend=FB)
        x.requires_grad_(True)
        w.requires_grad_(True)
        minitorch.maxpool2d(minitorch.conv2d(x, w), (2, 2)).sum().backward()
    modules = [fast_ops, fast_conv, fast_pool, *kernel_cache._loaded.values()]
    checked, unsaveable = 0, []
    for module in modules:
        for name, obj in vars(module).items():
            cached = isinstance(getattr(obj, "_cache", None), kernel_cache._DiskCache)
            if not (isinstance(obj, CPUDispatcher) and cached):
                continue
            for cres in obj.overloads.values():
                checked += 1
                if cres.library.has_dynamic_globals or not all(f.can_cache for f in cres.lifted):
                    unsaveable.append(f"{module.__name__}.{name}")
    assert checked >= 10
    assert not unsaveable, f"compiled again by every process: {sorted(set(unsaveable))}"


COLLISION_SCRIPT = textwrap.dedent(
    """
    import json
    import math
    import sys

    import numba
    import numpy as np

    import minitorch
    from minitorch import kernel_cache

    # Two of the user's own compiled functions of one qualified name (a factory's), not
    # inlined as minitorch's compile of a plain function is, and big enough that LLVM
    # keeps each as a function the kernel calls by name.
    def scalar(wavy):
        @numba.njit
        def f(x):
            y = x
            for k in range(12):
                if wavy:
                    y = math.sin(y) * math.exp(-y * y) + math.log1p(abs(y)) + math.tanh(y * k)
                else:
                    y = math.cos(y) * math.exp(-y) + math.sqrt(abs(y)) - math.atan(y * k)
            return y + 1.0
        return f

    wavy, other = scalar(True), scalar(False)
    t = minitorch.tensor_from_numpy(np.linspace(-1.0, 1.0, 8), backend=None)
    if sys.argv[1:] == ["other-first"]:
        minitorch.FastOps.map(other)(t)  # compiled first: numba's first scalar here
    out = minitorch.FastOps.map(wavy)(t).to_numpy()
    expected = [wavy.py_func(v) for v in np.linspace(-1.0, 1.0, 8)]
    called = set()
    for module in kernel_cache._loaded.values():
        kernel = module.map_flat_ser
        for sig in kernel.signatures:
            linked = kernel.overloads[sig].library._get_module_for_linking()
            called |= {f.name for f in linked.functions
                       if not f.is_declaration and "scalar" in f.name}
    print(json.dumps({"close": bool(np.allclose(out, expected)), "calls": len(called)}))
    """
)


def test_cached_kernel_calls_its_own_scalar_not_a_namesake(tmp_path: Path) -> None:
    """Regression: numba numbered functions 1, 2, ... in every process and a cached
    kernel calls its scalar function by that name, so a kernel cached by one process
    called, in another, whichever scalar that process had compiled under the same
    number (wrong values, seen as sigmoid(0) == 1.0 in a compiled training step)."""
    env = {"MINITORCH_CACHE_DIR": str(tmp_path)}
    first = json.loads(run_python(COLLISION_SCRIPT, env))
    assert first == {"close": True, "calls": 1}  # the scalar is called, not inlined
    code = COLLISION_SCRIPT.replace("sys.argv[1:]", '["other-first"]')
    assert json.loads(run_python(code, env))["close"]


def _code_fn(source: str, module: str = "user_mod") -> types.FunctionType:
    namespace: dict[str, Any] = {"__name__": module}
    exec(textwrap.dedent(source), namespace)
    return namespace["f"]


def _closure(c: Any) -> Callable[[float], float]:
    def f(x: float) -> float:
        return x * c

    return f


def _with_default(c: float) -> Callable[[float], float]:
    return lambda x, c=c: x * c


def test_function_key_tracks_code_and_closures() -> None:
    add1 = _code_fn("def f(x):\n    return x + 1.0\n")
    add1_again = _code_fn("def f(x):\n    return x + 1.0\n")
    add2 = _code_fn("def f(x):\n    return x + 2.0\n")
    mul1 = _code_fn("def f(x):\n    return x * 1.0\n")
    assert function_key(add1) == function_key(add1_again)
    assert len({function_key(add1), function_key(add2), function_key(mul1)}) == 3
    assert function_key(_closure(2.0)) == function_key(_closure(2.0))
    assert function_key(_closure(2.0)) != function_key(_closure(3.0))
    # A dispatcher is used as it is, so its compile options are part of the key.
    assert function_key(njit(_closure(2.0))) == function_key(njit(_closure(2.0)))
    assert function_key(njit(_closure(2.0))) != function_key(_closure(2.0))
    assert function_key(njit(fastmath=True)(_closure(2.0))) != function_key(njit(_closure(2.0)))
    # Closures over arbitrary objects cannot be keyed (they compile in memory).
    assert function_key(_closure([1.0])) is None
    assert function_key(_closure(object())) is None


def test_function_key_tracks_called_helpers() -> None:
    helper_a = "def helper(x):\n    return x * x\n"
    helper_b = "def helper(x):\n    return x * x * x\n"
    body = "def f(x):\n    return helper(x) + 1.0\n"
    assert function_key(_code_fn(helper_a + body)) != function_key(_code_fn(helper_b + body))


def test_function_key_tracks_default_arguments() -> None:
    assert function_key(_with_default(2.0)) != function_key(_with_default(3.0))


def test_default_argument_functions_get_their_own_kernels() -> None:
    t = fast([1.0, 2.0])
    assert_bits(FB.map_of(_with_default(2.0))(t), np.array([2.0, 4.0]))
    assert_bits(FB.map_of(_with_default(3.0))(t), np.array([3.0, 6.0]))


# 5. The course's kernel factories ---------------------------------------------------


def _diagnostics(kernel: Any, capsys: pytest.CaptureFixture[str]) -> str:
    capsys.readouterr()
    kernel.parallel_diagnostics(level=3)
    text = capsys.readouterr().out
    assert "Parallel Accelerator Optimizing" in text
    assert "Parallel loop listing" in text and "prange(" in text  # level 3 lists the loops
    return text


def test_course_tensor_map(capsys: pytest.CaptureFixture[str]) -> None:
    kernel = fast_ops.tensor_map(njit(operators.id))
    a, x = view_of(np.arange(12.0).reshape(3, 4), (1, 0))  # (4, 3), strided
    out = fast(np.zeros((4, 3))).permute(1, 0)  # (3, 4), non-contiguous output
    kernel(*out.tuple(), *a.tuple())
    assert_bits(out, x)
    # Broadcasting a (1, 3) row and a (3,) vector into (2, 4, 3).
    out3 = fast(np.zeros((2, 4, 3)))
    row = np.array([[1.0, 2.0, 3.0]])
    kernel(*out3.tuple(), *fast(row).tuple())
    assert_bits(out3, np.broadcast_to(row, (2, 4, 3)))
    kernel(*out3.tuple(), *fast(row[0] * 2).tuple())
    assert_bits(out3, np.broadcast_to(row * 2, (2, 4, 3)))
    _diagnostics(kernel, capsys)


def test_course_tensor_zip(capsys: pytest.CaptureFixture[str]) -> None:
    kernel = fast_ops.tensor_zip(njit(operators.add))
    x = np.arange(24.0).reshape(2, 3, 4)
    a, _ = view_of(x, (2, 0, 1))
    col = np.array([[10.0], [20.0], [30.0]])
    out = fast(np.zeros((4, 3, 2))).permute(2, 1, 0)  # (2, 3, 4), strided
    kernel(*out.tuple(), *a.tuple(), *fast(col).tuple())
    assert_bits(out, x + col)
    _diagnostics(kernel, capsys)


def test_course_tensor_reduce(capsys: pytest.CaptureFixture[str]) -> None:
    kernel = fast_ops.tensor_reduce(njit(operators.add))
    x = np.arange(60.0).reshape(3, 4, 5)
    a, _ = view_of(x, (1, 2, 0))
    for dim in range(3):
        shape = list(x.shape)
        shape[dim] = 1
        out = fast(np.zeros(shape))
        kernel(*out.tuple(), *a.tuple(), dim)
        assert_near(out, x.sum(axis=dim, keepdims=True))
    # A non-contiguous output, pre-filled with the start value.
    out = fast(np.full((5, 1, 3), 100.0)).permute(2, 1, 0)  # (3, 1, 5)
    kernel(*out.tuple(), *a.tuple(), 1)
    assert_near(out, x.sum(axis=1, keepdims=True) + 100.0)
    _diagnostics(kernel, capsys)


def test_course_tensor_matrix_multiply(capsys: pytest.CaptureFixture[str]) -> None:
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3, 4, 5))
    y = rng.standard_normal((1, 5, 2))
    kernel = fast_ops.tensor_matrix_multiply
    out = fast(np.zeros((3, 4, 2)))
    kernel(*out.tuple(), *fast(x).tuple(), *fast(y).tuple())
    assert_near(out, x @ y)
    a, _ = view_of(x, (0, 2, 1))
    b, _ = view_of(y, (2, 1, 0))
    out_t = fast(np.zeros((2, 4, 3))).permute(2, 1, 0)
    kernel(*out_t.tuple(), *a.tuple(), *b.tuple())
    assert_near(out_t, x @ y)
    z = rng.standard_normal((3, 5, 2))
    kernel(*out.tuple(), *fast(x[:1]).tuple(), *fast(z).tuple())
    assert_near(out, x[:1] @ z)
    _diagnostics(kernel, capsys)


# 6. Diagnostics ---------------------------------------------------------------------


@pytest.mark.not_boundschecked
def test_diagnostics_reports_every_kernel_family(capsys: pytest.CaptureFixture[str]) -> None:
    from minitorch import diagnostics

    assert diagnostics.main(argparse.Namespace(level=1, dtype="both")) == 0
    text = capsys.readouterr().out
    for family in ("MAP", "ZIP", "REDUCE", "MATRIX MULTIPLY"):
        assert family in text
    # Each of the 8 kernels reports its float64 and its float32 specialisation.
    assert text.count("--- float64 specialisation") == 8
    assert text.count("--- float32 specialisation") == 8
    assert text.count("Parallel Accelerator Optimizing") >= 16


def test_diagnostics_command_line_accepts_level() -> None:
    from minitorch.__main__ import build_parser

    parser = build_parser()
    assert parser.parse_args(["diagnostics", "--level", "1"]).level == 1
    assert parser.parse_args(["diagnostics"]).level == 3
    assert parser.parse_args(["diagnostics"]).dtype == "both"
    assert parser.parse_args(["diagnostics", "--dtype", "float32"]).dtype == "float32"


# 7. Errors ---------------------------------------------------------------------------


def test_matmul_shape_errors() -> None:
    with pytest.raises(IndexingError):
        fast(np.ones((2, 3))) @ fast(np.ones((4, 2)))
    with pytest.raises(IndexingError):
        fast(np.ones((5, 2, 3))) @ fast(np.ones((5, 2, 3)))
    with pytest.raises(IndexingError):
        fast(np.ones(3)) @ fast(np.ones((3, 2)))
    with pytest.raises(IndexingError):
        fast(np.ones((2, 3))) @ fast(np.ones(3))
    with pytest.raises(IndexingError):  # batch dims that do not broadcast
        fast(np.ones((2, 2, 3))) @ fast(np.ones((3, 3, 2)))
    with pytest.raises(IndexingError):
        minitorch.FastOps.matrix_multiply(fast(np.ones(3)), fast(np.ones(3)))


def test_reduce_bad_dim_raises() -> None:
    t = fast(np.ones((2, 3)))
    for dim in (2, -3, 10):
        with pytest.raises(IndexingError):
            FB.add_reduce(t, dim)
        with pytest.raises(IndexingError):
            t.sum(dim)


def test_zip_non_broadcastable_raises() -> None:
    for sa, sb in [((2, 3), (3, 2)), ((4,), (3,)), ((2, 3, 4), (3, 1, 4)), ((2, 3), (3, 2, 2))]:
        with pytest.raises(IndexingError):
            FB.add_zip(fast(np.ones(sa)), fast(np.ones(sb)))
        with pytest.raises(IndexingError):
            fast(np.ones(sa)) * fast(np.ones(sb))


def test_map_into_incompatible_out_raises() -> None:
    out = fast(np.zeros((2, 3)))
    for shape in [(3, 2), (2, 3, 1), (4,), (2, 2, 3)]:
        with pytest.raises(IndexingError):
            FB.neg_map(fast(np.ones(shape)), out)
        with pytest.raises(IndexingError):
            FB.id_cmap(fast(np.ones(shape)), out)
    assert_bits(out, np.zeros((2, 3)))


# 8. FastOps agrees with SimpleOps, values and gradients ---------------------------------


def twins(x: np.ndarray, order: Sequence[int] | None = None) -> tuple[Tensor, Tensor]:
    """The same values on SimpleOps and FastOps, as permuted views when ``order`` is given."""
    pair = []
    for backend in (SB, FB):
        if order is None:
            pair.append(minitorch.tensor_from_numpy(x, backend=backend))
        else:
            base = np.ascontiguousarray(x.transpose(inverse_permutation(order)))
            pair.append(minitorch.tensor_from_numpy(base, backend=backend).permute(*order))
    return pair[0], pair[1]


def _positive(x: Tensor) -> Tensor:
    return x * x + 0.5


UNARY_OPS: dict[str, Callable[[Tensor], Tensor]] = {
    "neg": lambda a: -a,
    "sigmoid": lambda a: a.sigmoid(),
    "relu": lambda a: a.relu(),
    "log": lambda a: _positive(a).log(),
    "exp": lambda a: (a * 0.1).exp(),
    "inv": lambda a: 1.0 / _positive(a),
    "square": lambda a: a.square(),
    "sum_all": lambda a: a.sum(),
    "sum_dim0": lambda a: a.sum(0),
    "sum_dim_last": lambda a: a.sum(-1),
    "mean": lambda a: a.mean(),
    "mean_dim": lambda a: a.mean(1),
    "permute": lambda a: a.permute(2, 0, 1) * 1.0,
    "contiguous_view": lambda a: a.contiguous().view(6, 4),
    "lt_mul": lambda a: (a < 0.3) * a,
    "scalar_ops": lambda a: 2.0 - a * 3.0 + 1.5 / (a * a + 1.0),
}
BINARY_OPS: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "add": lambda a, b: a + b,
    "sub": lambda a, b: a - b,
    "mul": lambda a, b: a * b,
    "div": lambda a, b: a / _positive(b),
    "gt_eq_mul": lambda a, b: ((a > b) + (a == b)) * b,
    # IsClose has no backward (as in the course): only its value is compared.
    "is_close": lambda a, b: a.is_close(b).detach() * (a - b),
    "matmul": lambda a, b: a @ b.permute(0, 2, 1),
}


def _check_same(simple: Tensor, fastt: Tensor) -> None:
    assert simple.shape == fastt.shape
    np.testing.assert_allclose(fastt.to_numpy(), simple.to_numpy(), rtol=1e-9, atol=1e-10)


def _forward_backward_agree(fn: Callable[..., Tensor], *arrays_orders: Any) -> None:
    simple_inputs, fast_inputs = [], []
    for x, order in arrays_orders:
        s, f = twins(x, order)
        simple_inputs.append(s.requires_grad_(True))
        fast_inputs.append(f.requires_grad_(True))
    out_s = fn(*simple_inputs)
    out_f = fn(*fast_inputs)
    _check_same(out_s, out_f)
    seed = np.random.default_rng(5).standard_normal(out_s.shape)
    out_s.backward(twins(seed)[0])
    out_f.backward(twins(seed)[1])
    for s, f in zip(simple_inputs, fast_inputs):
        assert s.grad is not None and f.grad is not None
        _check_same(s.grad, f.grad)


@st.composite
def array_and_order(draw: st.DrawFn, shape: tuple[int, ...]) -> tuple[np.ndarray, list[int]]:
    from hypothesis.extra.numpy import arrays

    x = draw(arrays(np.float64, shape, elements=st.floats(-3, 3)))
    return x, draw(st.permutations(range(len(shape))))


@pytest.mark.parametrize("name", sorted(UNARY_OPS))
def test_fast_matches_simple_unary(name: str) -> None:
    @settings(FUZZ, max_examples=8)
    @given(array_and_order((2, 3, 4)))
    def check(case: tuple[np.ndarray, list[int]]) -> None:
        _forward_backward_agree(UNARY_OPS[name], case)

    check()


@pytest.mark.parametrize("name", sorted(BINARY_OPS))
def test_fast_matches_simple_binary(name: str) -> None:
    shape_b = (2, 3, 4) if name != "matmul" else (2, 5, 4)

    @settings(FUZZ, max_examples=8)
    @given(array_and_order((2, 3, 4)), st.sampled_from([shape_b, shape_b[1:], (1,) + shape_b[1:]]))
    def check(case_a: tuple[np.ndarray, list[int]], sb: tuple[int, ...]) -> None:
        if name == "matmul" and len(sb) == 2:
            sb = (1,) + sb
        y = np.random.default_rng(len(sb)).uniform(-3, 3, sb)
        _forward_backward_agree(BINARY_OPS[name], case_a, (y, None))

    check()


def test_fast_matches_simple_composite() -> None:
    rng = np.random.default_rng(11)
    x = rng.uniform(-2, 2, (2, 3, 4))
    y = rng.uniform(-2, 2, (3, 4))
    w = rng.uniform(-1, 1, (4, 5))

    def composite(x: Tensor, y: Tensor, w: Tensor) -> Tensor:
        a = (x + y) * y - x / (y * y + 1.0)
        b = (-a).sigmoid() + a.relu() + (a * a + 1.0).log() + (a * 0.1).exp()
        c = b.permute(1, 0, 2).contiguous().view(6, 4)
        d = c @ w
        return d.sum(1).mean() + d.mean(0).sum() * 0.5 - b.sum(-1).sum() / 7.0

    _forward_backward_agree(composite, (x, [0, 1, 2]), (y, [1, 0]), (w, None))
    # Also through the default backward seed of a (1,) output.
    s_in, f_in = twins(x, [2, 1, 0])
    s_y, f_y = twins(y)
    s_w, f_w = twins(w)
    s_out = composite(s_in.requires_grad_(True), s_y, s_w)
    f_out = composite(f_in.requires_grad_(True), f_y, f_w)
    assert s_out.shape == f_out.shape == (1,)
    s_out.backward()
    f_out.backward()
    _check_same(s_in.grad, f_in.grad)


def test_matmul_kernels_tool_times_every_kernel_and_names_the_pick() -> None:
    """``tools/matmul_kernels.py``, the command behind the routing figures, runs."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "tools" / "matmul_kernels.py"
    spec = importlib.util.spec_from_file_location("matmul_kernels", path)
    assert spec is not None and spec.loader is not None
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    line = tool.time_kernels("12x16x9t", np.float64, rounds=2)
    assert "picks dots_ser" in line
    for kernel in ("gemm_ser", "gemm_par", "rows_ser", "rows_par", "dots_ser", "dots_par"):
        assert kernel in line
    assert tool.parse("b3x4x5x6t") == (3, 4, 5, 6, True)
    with pytest.raises(SystemExit, match="not a product"):
        tool.parse("4x5")


def test_zip_into_contiguous_out_writes_only_its_elements_and_may_alias() -> None:
    """``zip(fn)(a, b, out=)`` with all three contiguous alike takes the flat kernel (the
    optimisers' in-place update): a prefix view writes only its own elements, and ``out``
    may be one of the inputs."""
    sub = FB.zip_of(operators.sub)
    rng = np.random.default_rng(5)
    for dtype in (np.float64, np.float32):
        na, nb = rng.standard_normal((2, 6)).astype(dtype)
        base = minitorch.tensor_from_numpy(np.full(10, 7.0, dtype), backend=FB)
        out = base[0:6]
        a, b = (minitorch.tensor_from_numpy(v, backend=FB) for v in (na, nb))
        assert sub(a, b, out=out) is out
        assert np.array_equal(base.to_numpy(), np.concatenate([na - nb, np.full(4, 7.0, dtype)]))
        assert sub(a, b, out=a) is a  # in place, as SGD writes its parameter
        assert np.array_equal(a.to_numpy(), na - nb)
        long_a = minitorch.tensor_from_numpy(np.concatenate([na, na]), backend=FB)[0:6]
        target = minitorch.tensor_from_numpy(np.zeros(6, dtype), backend=FB)
        sub(long_a, b, out=target)
        assert np.array_equal(target.to_numpy(), na - nb)
