"""FastOps kernels in float32 (and float64 alongside): every kernel path against NumPy.

Tensors are built with the public dtype API (``tensor_from_numpy`` keeps a
float32 array's dtype) and the backend's ops are called on them. float32 results
are checked against NumPy's float32 arithmetic bit for bit where the kernel does
the same operations (elementwise arithmetic with float32 literals), and within
float32 rounding elsewhere. The compiled code itself is inspected too: a
float32 specialisation must compute in float32 (no conversion to double) on
8-lane vectors.

Every test here is marked ``kernels`` (rerun under ``NUMBA_BOUNDSCHECK=1``).
"""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any
from unittest import mock

import numba
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from numba import njit
from strategies import broadcast_shape_pairs, inverse_permutation, shapes

import minitorch
from minitorch import Tensor, fast_kernels, fast_ops, fast_simd, operators
from minitorch.kernel_cache import function_key, load_kernels

pytestmark = pytest.mark.kernels

FB = minitorch.TensorBackend(minitorch.FastOps)
ROOT = Path(__file__).resolve().parents[1]
DTYPES = [np.float32, np.float64]
F32 = np.float32

FUZZ = settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
FUZZ_SIZE = 160
FUZZ_DIM = 10


# Helpers --------------------------------------------------------------------------


def tensor(x: Any, dtype: type = F32) -> Tensor:
    """A contiguous FastOps tensor holding ``x`` in ``dtype``."""
    t = minitorch.tensor_from_numpy(np.asarray(x, dtype), backend=FB)
    assert_dtype(t, dtype)
    return t


def view(x: np.ndarray, order: Sequence[int], dtype: type = F32) -> Tensor:
    """A permuted (strided) view whose values are ``x`` (``x.shape`` == view shape)."""
    base = np.ascontiguousarray(x.transpose(inverse_permutation(order)))
    t = tensor(base, dtype).permute(*order)
    assert t.shape == x.shape
    return t


def values(t: Tensor) -> np.ndarray:
    """The tensor's values in its own dtype, checking it kept the dtype."""
    storage = t._tensor._storage
    out = np.lib.stride_tricks.as_strided(
        storage, t.shape, tuple(s * storage.itemsize for s in t._tensor.strides)
    )
    return np.array(out)


def assert_dtype(t: Tensor, dtype: type) -> None:
    assert t._tensor._storage.dtype == dtype, f"{t._tensor._storage.dtype} != {dtype}"


def assert_bits(t: Tensor, expected: np.ndarray) -> None:
    got = values(t)
    assert got.dtype == expected.dtype
    assert got.shape == expected.shape, f"{got.shape} != {expected.shape}"
    same = (got == expected) | (np.isnan(got) & np.isnan(expected))
    assert same.all(), f"not bit-identical: {got[~same][:5]} != {expected[~same][:5]}"


def ulp_error(got: np.ndarray, exact: np.ndarray, dtype: type) -> np.ndarray:
    """How many representable numbers of ``dtype`` lie between ``got`` and ``exact``
    rounded to ``dtype`` (0: correctly rounded; NaN matches NaN)."""
    with np.errstate(all="ignore"):
        rounded = exact.astype(dtype)
    bits = np.int32 if dtype is F32 else np.int64
    low = np.iinfo(bits).min

    def ordinal(a: np.ndarray) -> np.ndarray:
        i = np.ascontiguousarray(a, dtype).view(bits).astype(np.int64)
        return np.where(i < 0, low - i, i)  # monotonic in the value, -0.0 == 0.0

    steps = np.abs(ordinal(got) - ordinal(rounded)).astype(np.float64)
    both_nan = np.isnan(got) & np.isnan(rounded)
    return np.where(both_nan, 0.0, np.where(np.isnan(got) | np.isnan(rounded), np.inf, steps))


def strided(draw: st.DrawFn, shape: Sequence[int], dtype: type, elements: Any = None) -> Any:
    """A tensor of ``shape`` (contiguous or a random permutation) and its NumPy values."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    x = (rng.standard_normal(shape) * 3 if elements is None else elements(rng, shape)).astype(dtype)
    order = draw(st.permutations(range(len(shape)))) if draw(st.booleans()) else range(len(shape))
    return view(x, list(order), dtype), x


fuzz_shapes = shapes(max_size=FUZZ_SIZE, max_dim=FUZZ_DIM)


# 1. Elementwise: map and zip, every path ----------------------------------------------


def _affine(x: float) -> float:
    # 0.1 and 0.3 are not float32 numbers: in float64 this rounds differently.
    return x * 0.1 + 0.3


def _blend(x: float, y: float) -> float:
    return x * 0.1 - y / 3.0 if x > y else y + 1


# name -> (map op, the value the op approximates (computed in float64 from the input
# in its dtype), allowed ulps in float64 and in float32). In float64 the reference
# is itself rounded (up to an ulp off); the float32 log rounds x + EPS in float32
# first, as its scalar function does.
MAPS: dict[str, tuple[Callable[..., Tensor], Callable[[np.ndarray], np.ndarray], int, int]] = {
    "neg": (FB.neg_map, lambda x: -x.astype(np.float64), 0, 0),
    "relu": (FB.relu_map, lambda x: np.maximum(x, 0).astype(np.float64), 0, 0),
    "id": (FB.id_map, lambda x: x.astype(np.float64), 0, 0),
    "inv": (FB.inv_map, lambda x: 1 / x.astype(np.float64), 0, 0),
    "exp": (FB.exp_map, lambda x: np.exp(x.astype(np.float64)), 2, 1),
    "sigmoid": (FB.sigmoid_map, lambda x: 1 / (1 + np.exp(-x.astype(np.float64))), 3, 4),
    "log": (FB.log_map, lambda x: np.log((x + x.dtype.type(operators.EPS)).astype(np.float64)),
            1, 2),
}  # fmt: skip


@FUZZ
@given(st.data(), st.sampled_from(sorted(MAPS)), st.sampled_from(DTYPES))
def test_map_fuzz(data: st.DataObject, name: str, dtype: type) -> None:
    op, exact, ulps64, ulps32 = MAPS[name]
    positive = name in ("log", "inv")
    elements = (lambda rng, shape: rng.uniform(0.01, 50, shape)) if positive else None
    t, x = strided(data.draw, data.draw(fuzz_shapes), dtype, elements)
    out = op(t)
    assert_dtype(out, dtype)
    err = ulp_error(values(out), exact(x), dtype)
    assert err.max() <= (ulps32 if dtype is F32 else ulps64), f"{name}: {err.max()} ulp"


@FUZZ
@given(st.data(), st.sampled_from(DTYPES))
def test_map_with_float_literals_computes_in_the_dtype(data: st.DataObject, dtype: type) -> None:
    t, x = strided(data.draw, data.draw(fuzz_shapes), dtype)
    out = FB.map_of(_affine)(t)
    assert_bits(out, x * dtype(0.1) + dtype(0.3))


@st.composite
def zip_pairs(draw: st.DrawFn) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Broadcastable shapes, including every fast path's layout."""
    kind = draw(st.sampled_from(["random", "same", "scalar", "bias", "lead1"]))
    if kind == "random":
        return draw(broadcast_shape_pairs(max_size=FUZZ_SIZE, max_dim=FUZZ_DIM))
    full = draw(fuzz_shapes)
    if kind == "same":
        return full, full
    cut = draw(st.integers(0, len(full) - 1))
    other = (1,) if kind == "scalar" else full[cut:]
    if kind == "lead1":
        other = (1,) * cut + other
    return (full, other) if draw(st.booleans()) else (other, full)


ZIPS: dict[str, tuple[Callable[..., Tensor], Callable[[Any, Any], Any]]] = {
    "add": (FB.add_zip, lambda x, y: x + y),
    "mul": (FB.mul_zip, lambda x, y: x * y),
    "sub": (FB.zip_of(operators.sub), lambda x, y: x - y),
    "lt": (FB.lt_zip, lambda x, y: (x < y).astype(x.dtype)),
    "eq": (FB.eq_zip, lambda x, y: (x == y).astype(x.dtype)),
    "blend": (
        FB.zip_of(_blend),
        lambda x, y: np.where(x > y, x * x.dtype.type(0.1) - y / y.dtype.type(3), y + 1),
    ),
}


@FUZZ
@given(st.data(), zip_pairs(), st.sampled_from(sorted(ZIPS)), st.sampled_from(DTYPES))
def test_zip_fuzz(data: st.DataObject, pair: Any, name: str, dtype: type) -> None:
    op, ref = ZIPS[name]
    a, x = strided(data.draw, pair[0], dtype)
    if name == "eq":  # ties
        b, y = strided(data.draw, pair[1], dtype, lambda rng, s: rng.integers(-2, 3, s))
    else:
        b, y = strided(data.draw, pair[1], dtype)
    out = op(a, b)
    assert_dtype(out, dtype)
    assert_bits(out, np.asarray(ref(*np.broadcast_arrays(x, y))).astype(dtype))


@FUZZ
@given(st.data(), st.sampled_from(DTYPES))
def test_map_into_broadcast_out(data: st.DataObject, dtype: type) -> None:
    out_shape = data.draw(fuzz_shapes)
    start = data.draw(st.integers(0, len(out_shape) - 1))
    a_shape = tuple(1 if data.draw(st.booleans()) else d for d in out_shape[start:])
    a, x = strided(data.draw, a_shape, dtype)
    out, _ = strided(data.draw, out_shape, dtype)
    assert FB.neg_map(a, out) is out
    assert_bits(out, np.broadcast_to(-x, out_shape).astype(dtype))


def test_large_elementwise_paths_parallel() -> None:
    rng = np.random.default_rng(1)
    n = fast_ops.PARALLEL_THRESHOLD * 2
    for dtype in DTYPES:
        x = rng.standard_normal((n // 64, 64)).astype(dtype)
        y = rng.standard_normal(64).astype(dtype)
        cube = rng.standard_normal((40, 30, 50)).astype(dtype)
        a = tensor(x, dtype)
        assert_bits(FB.add_zip(a, tensor(y, dtype)), x + y)  # bias (trailing block)
        assert_bits(FB.mul_zip(a, tensor(x, dtype)), x * x)  # flat, same shape
        assert_bits(FB.add_zip(view(cube, (2, 0, 1), dtype), view(cube, (0, 2, 1), dtype)),
                    cube + cube)  # fmt: skip  # N-D general path
        assert_bits(FB.neg_map(view(cube, (1, 2, 0), dtype)), -cube)
        err = ulp_error(values(FB.exp_map(a)), np.exp(x.astype(np.float64)), dtype)
        assert err.max() <= (1 if dtype is F32 else 2)


def test_zero_size_and_size_one() -> None:
    for dtype in DTYPES:
        empty = tensor(np.zeros((0, 3)), dtype)
        assert FB.exp_map(empty).shape == (0, 3)
        assert_dtype(FB.add_zip(empty, tensor(np.ones(3), dtype)), dtype)
        one = tensor(np.array([[2.0]]), dtype)
        assert_bits(FB.mul_zip(one, tensor(np.array([1.5, 2.5]), dtype)),
                    np.array([[3.0, 5.0]], dtype))  # fmt: skip


def test_mixed_dtypes_do_not_crash() -> None:
    # The Tensor layer promotes before calling kernels; kernels still must cope.
    x = np.arange(6.0).reshape(2, 3)
    out = FB.add_zip(tensor(x, F32), tensor(x, np.float64))
    assert_dtype(out, np.float64)
    np.testing.assert_array_equal(values(out), 2 * x)
    product = FB.matrix_multiply(tensor(x, F32), tensor(x.T, np.float64))
    np.testing.assert_allclose(values(product), x @ x.T)


def _tenth_plus(v: float, w: float) -> float:
    return v * 0.1 + w


def test_kernels_compute_in_float32_only_when_every_operand_is_float32() -> None:
    # FastOps keeps a kernel module per arithmetic: mixed operands take the float64
    # function (the literal 0.1 stays a double), all-float32 ones its float32 variant.
    x, y = np.linspace(-3, 3, 12).reshape(3, 4), np.linspace(1, 2, 12).reshape(3, 4)
    op = FB.zip_of(_tenth_plus)
    x32, y32 = x.astype(F32), y.astype(F32)
    assert_bits(op(tensor(x, F32), tensor(y, np.float64)), x32.astype(np.float64) * 0.1 + y)
    assert_bits(op(tensor(x, F32), tensor(y, F32)), x32 * F32(0.1) + y32)
    assert_bits(op(tensor(x, np.float64), tensor(y, np.float64)), x * 0.1 + y)
    # Each module's scalar is the compiled function itself, not a stand-in that picks
    # by argument type when each kernel compiles (the slower compile).
    for dtype, literal in ((np.float64, float), (np.float32, np.float32)):
        module = load_kernels("zip", fast_kernels.ZIP_SOURCE, _tenth_plus, dtype=dtype)
        assert isinstance(module.fn, numba.core.registry.CPUDispatcher)
        consts = module.fn.py_func.__code__.co_consts
        numbers = [c for c in consts if isinstance(c, (float, np.floating))]
        assert numbers == [0.1] and all(type(c) is literal for c in numbers)
    with pytest.raises(TypeError, match="float64 or float32"):
        load_kernels("zip", fast_kernels.ZIP_SOURCE, _tenth_plus, dtype=np.int32)


# 2. The float32 exp -----------------------------------------------------------------


def test_exp32_within_one_ulp_and_edge_cases() -> None:
    rng = np.random.default_rng(2)
    specials = np.array(
        [0.0, -0.0, 1.0, -1.0, 1e-30, -1e-45, 88.72, 88.7228, 88.7229, 88.73, 89.0, 100.0,
         -87.3, -100.0, -103.2, -103.97, -104.0, -110.0, 3.4e38, -3.4e38,
         np.inf, -np.inf, np.nan],
        dtype=F32,
    )  # fmt: skip
    x = np.concatenate([
        rng.uniform(-104, 89, 100_000).astype(F32),
        rng.uniform(-1, 1, 50_000).astype(F32),
        np.linspace(-104, -87, 20_000, dtype=F32),  # subnormal results
        specials,
    ])  # fmt: skip
    got = values(FB.exp_map(tensor(x)))
    with np.errstate(all="ignore"):
        exact = np.exp(x.astype(np.float64))
    assert ulp_error(got, exact, F32).max() <= 1
    # Overflow to inf, underflow to 0 and NaN exactly where NumPy's float32 exp has them.
    with np.errstate(all="ignore"):
        numpy32 = np.exp(specials)
    ours = values(FB.exp_map(tensor(specials)))
    for kind in (np.isinf, np.isnan, lambda v: v == 0):
        np.testing.assert_array_equal(kind(ours), kind(numpy32))


# 3. Reductions --------------------------------------------------------------------------


def _sum_of_squares(acc: float, x: float) -> float:
    return acc + x * x


def sum_bound(x: np.ndarray, axis: int, dtype: type) -> np.ndarray:
    """Worst-case rounding of any summation order: n * eps * sum |x|."""
    n = x.shape[axis]
    return 2 * n * np.finfo(dtype).eps * np.abs(x.astype(np.float64)).sum(axis, keepdims=True)


def check_reductions(t: Tensor, x: np.ndarray, dim: int, dtype: type) -> None:
    total = FB.add_reduce(t, dim)
    assert_dtype(total, dtype)
    exact = x.astype(np.float64).sum(dim, keepdims=True)
    assert np.all(np.abs(values(total) - exact) <= sum_bound(x, dim, dtype) + 1e-30)
    # max does not depend on the order: exact. ``maximum`` folds in vector lanes
    # (nn.max uses it); the course's ``max`` strictly in order.
    assert_bits(FB.reduce_of(operators.maximum, -math.inf)(t, dim), x.max(dim, keepdims=True))
    assert_bits(FB.reduce_of(operators.max, -1e30)(t, dim), x.max(dim, keepdims=True))
    near_one = (1 + x / 1000).astype(dtype)
    prod = FB.mul_reduce(tensor(near_one, dtype), dim)
    exact_prod = near_one.astype(np.float64).prod(dim, keepdims=True)
    rtol = 2 * x.shape[dim] * np.finfo(dtype).eps
    np.testing.assert_allclose(values(prod), exact_prod, rtol=rtol)
    # A function that may not fold in lanes: the sequential order, exactly.
    squares = FB.reduce_of(_sum_of_squares, 0.0)(t, dim)
    moved = np.moveaxis(x, dim, -1)
    acc = np.zeros(moved.shape[:-1], dtype)
    for i in range(moved.shape[-1]):
        acc = acc + moved[..., i] * moved[..., i]
    assert_bits(squares, np.expand_dims(acc, dim))


@FUZZ
@given(st.data(), st.sampled_from(DTYPES))
def test_reduce_fuzz(data: st.DataObject, dtype: type) -> None:
    t, x = strided(data.draw, data.draw(fuzz_shapes), dtype)
    check_reductions(t, x, data.draw(st.integers(0, t.dims - 1)), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [31, 32, 63, 64, 65, 129, 1000])
def test_reduce_long_rows_fold_in_vector_lanes(dtype: type, n: int) -> None:
    # Around the vector-lane path's threshold (8 vectors) and remainders.
    rng = np.random.default_rng(n)
    x = rng.standard_normal((3, n)).astype(dtype)
    for dim in (0, 1):
        check_reductions(tensor(x, dtype), x, dim, dtype)
    check_reductions(view(x.T.copy(), (1, 0), dtype), x.T.copy(), 0, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [64, 67, 300])
def test_max_reduce_in_vector_lanes_propagates_nan(dtype: type, n: int) -> None:
    # A NaN in any lane of any of the four vector chains, or in the scalar tail,
    # makes the row's maximum NaN; the other rows are untouched (regression: the
    # vector maximum once kept the other operand when the second one was NaN).
    maximum = FB.reduce_of(operators.maximum, -math.inf)
    for position in range(n):
        x = np.tile(np.linspace(-1.0, 1.0, n, dtype=dtype), (3, 1))
        x[1, position] = np.nan
        got = values(maximum(tensor(x, dtype), 1)).reshape(-1)
        assert math.isnan(got[1]), position
        assert got[0] == got[2] == 1.0, position


def test_simd_maximum_is_operators_maximum_in_every_lane() -> None:
    @njit
    def lanewise(x: np.ndarray, y: np.ndarray, out: np.ndarray) -> None:
        fast_simd.store(out, 0, fast_simd.maximum(fast_simd.load(x, 0), fast_simd.load(y, 0)))

    special = [np.nan, -np.inf, np.inf, -0.0, 0.0, -1.5, 2.0]
    for dtype in DTYPES:
        w = 32 // np.dtype(dtype).itemsize
        pairs = [(a, b) for a in special for b in special]
        for start in range(0, len(pairs), w):
            chunk = (pairs[start : start + w] * w)[:w]
            x = np.array([a for a, _ in chunk], dtype)
            y = np.array([b for _, b in chunk], dtype)
            out = np.empty(w, dtype)
            lanewise(x, y, out)
            expected = np.array([operators.maximum(a, b) for a, b in zip(x, y)], dtype)
            assert_bits(tensor(out, dtype), expected)
            # -0.0 against 0.0 keeps the same operand as operators.maximum.
            assert (np.signbit(out) == np.signbit(expected)).all()


def test_reduce_constants_are_part_of_the_cache_key() -> None:
    # The vector operation frozen into a reduce module (VFN) and LANES key it,
    # so a module built for one is never reused for the other.
    source = fast_kernels.REDUCE_SOURCE
    adds = load_kernels("reduce", source, operators.add,
                        constants={"LANES": True, "VFN": fast_simd.add})  # fmt: skip
    muls = load_kernels("reduce", source, operators.add,
                        constants={"LANES": True, "VFN": fast_simd.mul})  # fmt: skip
    again = load_kernels("reduce", source, operators.add,
                         constants={"LANES": True, "VFN": fast_simd.add})  # fmt: skip
    assert adds is again and adds is not muls
    assert adds.VFN is fast_simd.add and muls.VFN is fast_simd.mul
    assert adds.__minitorch_kernel_key__ is not None
    # A constant that cannot be keyed compiles in memory, never from the disk cache.
    odd = load_kernels("reduce", source, operators.add, constants={"LANES": True, "VFN": [1]})
    assert odd.__minitorch_kernel_key__ is None


def test_simd_kernels_are_disk_cacheable() -> None:
    # Kernels calling fast_simd's intrinsics are keyed (by the intrinsics' names and
    # fast_simd's source in the engine key) rather than compiled afresh every run.
    for kernel in (fast_ops._gemm_par, fast_ops._gemm_ser, fast_ops._pack_a):
        assert function_key(kernel) is not None, kernel


def test_large_reductions_each_dim_parallel() -> None:
    rng = np.random.default_rng(3)
    for dtype in DTYPES:
        x = rng.standard_normal((60, 70, 80)).astype(dtype)
        for order in ((0, 1, 2), (2, 0, 1)):
            for dim in range(3):
                check_reductions(view(x, order, dtype), x, dim, dtype)


# Reductions along a dim that is not innermost in memory: each task folds rows of a
# block of inner positions into a row of accumulators, four rows at a time.

# The fold of each reduce function in order, on NumPy arrays (the oracle).
_IN_ORDER: dict[Callable[..., float], tuple[float, Callable[[Any, Any], Any]]] = {
    operators.add: (0.0, lambda acc, v: acc + v),
    operators.mul: (1.0, lambda acc, v: acc * v),
    operators.max: (-math.inf, lambda acc, v: np.where(acc > v, acc, v)),
    operators.maximum: (-math.inf, lambda acc, v: np.where(acc != acc, acc,
                                                           np.where(acc > v, acc, v))),
    _sum_of_squares: (0.0, lambda acc, v: acc + v * v),
}  # fmt: skip


def fold_in_order(fn: Callable[..., float], x: np.ndarray, dim: int) -> np.ndarray:
    """``fn`` folded along ``dim`` from the first element to the last, in ``x``'s dtype."""
    start, step = _IN_ORDER[fn]
    moved = np.moveaxis(x, dim, -1)
    acc = np.full(moved.shape[:-1], start, x.dtype)
    for i in range(moved.shape[-1]):
        acc = step(acc, moved[..., i]).astype(x.dtype)
    return np.expand_dims(acc, dim)


def with_specials(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Normal values with NaN, inf and -inf sprinkled in (each about one in 18)."""
    x = rng.standard_normal(shape)
    kinds = rng.integers(0, 18, shape)
    x[kinds == 0], x[kinds == 1], x[kinds == 2] = np.nan, np.inf, -np.inf
    return x


@st.composite
def column_layouts(draw: st.DrawFn) -> tuple[tuple[int, ...], int]:
    """A shape of 2-4 dims and a reduced dim placed first, in the middle or last
    (size-1 dims and reduced lengths around the four-row step included)."""
    dims = draw(st.integers(2, 4))
    dim = draw(st.sampled_from(sorted({0, dims // 2, dims - 1})))
    shape = [draw(st.integers(1, 7)) for _ in range(dims)]
    shape[dim] = draw(st.integers(1, 11))
    return tuple(shape), dim


@FUZZ
@given(st.data(), st.sampled_from(DTYPES), column_layouts(), st.booleans())
def test_reduce_column_blocks_fuzz(
    data: st.DataObject, dtype: type, layout: tuple[tuple[int, ...], int], parallel: bool
) -> None:
    """Every reduction through the backend, any dim, contiguous or permuted; the
    course's ``max`` keeps its in-order NaN and -inf behaviour, ``maximum`` NumPy's."""
    shape, dim = layout
    t, x = strided(data.draw, shape, dtype)
    threshold = 0 if parallel else fast_ops.PARALLEL_THRESHOLD
    with mock.patch.object(fast_ops, "PARALLEL_THRESHOLD", threshold):
        check_reductions(t, x, dim, dtype)
        t, x = strided(data.draw, shape, dtype, with_specials)
        for fn in (operators.max, operators.maximum):
            start = _IN_ORDER[fn][0]
            assert_bits(FB.reduce_of(fn, start)(t, dim), fold_in_order(fn, x, dim))
    assert_bits(FB.reduce_of(operators.maximum, -math.inf)(t, dim), x.max(dim, keepdims=True))


def _reduce_module(fn: Callable[..., float]) -> Any:
    """The reduce kernels FastOps builds for ``fn``."""
    constants = {"LANES": fn in fast_ops._LANE_SAFE,
                 "VFN": fast_ops._LANE_SAFE.get(fn, fast_simd.add)}  # fmt: skip
    return load_kernels("reduce", fast_kernels.REDUCE_SOURCE, fn, constants=constants)


@FUZZ
@given(
    st.sampled_from(DTYPES), st.integers(1, 4), st.integers(1, 13), st.integers(2, 40),
    st.permutations(range(3)), st.sampled_from(sorted(_IN_ORDER, key=lambda f: f.__name__)),
    st.integers(0, 2**32 - 1),
)  # fmt: skip
def test_reduce_chunks_do_not_change_results(
    dtype: type, n_outer: int, n_reduce: int, n_inner: int, order: list[int],
    fn: Callable[..., float], seed: int,
) -> None:  # fmt: skip
    """The column kernel directly: any cut of the inner positions into tasks, serial
    or parallel, gives each output the in-order fold, bit for bit, whatever the
    storage order of the (outer, reduce, inner) operand."""
    rng = np.random.default_rng(seed)
    x = with_specials(rng, (n_outer, n_reduce, n_inner)).astype(dtype)
    if fn not in (operators.max, operators.maximum):
        x = np.nan_to_num(x, nan=0.5, posinf=2.0, neginf=-2.0)
    storage = np.ascontiguousarray(x.transpose(order))
    strides = [0, 0, 0]
    for axis, stride in zip(order, storage.strides):
        strides[axis] = stride // storage.itemsize
    expected = fold_in_order(fn, x, 1).reshape(-1)
    module = _reduce_module(fn)
    for kernel in (module.reduce3_ser, module.reduce3_par):
        for chunk in (1, 3, 8, n_inner, 4096):
            out = np.full(n_outer * n_inner, _IN_ORDER[fn][0], dtype)
            kernel(out, storage.reshape(-1), n_outer, n_reduce, n_inner, *strides, chunk)
            assert_bits(tensor(out, dtype), expected)


@pytest.mark.parametrize("dtype", DTYPES)
def test_reduce_transposed_rows_stream_like_columns(dtype: type) -> None:
    # The innermost dim of a transposed tensor is a column of its storage: the
    # layout is turned round so that rows stream into a row of accumulators.
    rng = np.random.default_rng(5)
    x = rng.standard_normal((7, 300)).astype(dtype)
    t = view(x, (1, 0), dtype)
    assert fast_ops._reduce_layout(t._tensor, 1) == (1, 300, 7, 0, 7, 1)
    assert fast_ops._reduce_layout(tensor(x, dtype)._tensor, 1) == (7, 300, 1, 300, 1, 0)
    check_reductions(t, x, 1, dtype)
    for fn in (operators.add, operators.max):
        assert_bits(FB.reduce_of(fn, _IN_ORDER[fn][0])(t, 1), fold_in_order(fn, x, 1))


# 4. Matrix multiply ----------------------------------------------------------------------

def _with_kept_buffers(gemm_into: Callable[..., None]) -> Callable[..., None]:
    """``gemm_into`` on the packing buffers FastOps keeps between products (so each
    call finds the previous call's panels in them)."""

    def run(out: np.ndarray, a: np.ndarray, b: np.ndarray, batch: int, m: int, n: int, k: int,
            *strides: int) -> None:  # fmt: skip
        sizes = fast_ops._pack_sizes(out.itemsize, batch, m, n, k, *strides)
        buffers = fast_ops._pack_buffers(out.dtype, *sizes)
        gemm_into(out, a, b, batch, m, n, k, *strides, *buffers, numba.get_num_threads())

    return run


MATMUL_KERNELS = {
    "gemm": (fast_ops._gemm_ser, fast_ops._gemm_par),
    "gemm_into": (_with_kept_buffers(fast_ops._gemm_into_ser),
                  _with_kept_buffers(fast_ops._gemm_into_par)),  # fmt: skip
    "rows": (fast_ops._matmul_rows_ser, fast_ops._matmul_rows_par),
    "dots": (fast_ops._matmul_dots_ser, fast_ops._matmul_dots_par),
}


def matmul_bound(x: np.ndarray, y: np.ndarray, dtype: type) -> np.ndarray:
    """Rounding of any summation order: 2 k eps (|A| @ |B|)."""
    k = x.shape[-1]
    return 2 * max(k, 1) * np.finfo(dtype).eps * (np.abs(x) @ np.abs(y)).astype(np.float64)


def assert_matmul(out: Tensor | np.ndarray, x: np.ndarray, y: np.ndarray, dtype: type) -> None:
    got = values(out) if isinstance(out, Tensor) else out
    assert got.dtype == dtype
    exact = np.matmul(x.astype(np.float64), y.astype(np.float64))
    assert got.shape == exact.shape
    assert np.all(np.abs(got - exact) <= matmul_bound(x, y, dtype) + 1e-300)


def strided_operand(x: np.ndarray, transposed: bool) -> tuple[np.ndarray, tuple[int, ...]]:
    """``x`` (batch, rows, cols) as a flat storage and element strides, row- or column-major."""
    if transposed:
        flat = np.ascontiguousarray(x.transpose(0, 2, 1)).reshape(-1)
        return flat, (x.shape[1] * x.shape[2], 1, x.shape[1])
    return np.ascontiguousarray(x).reshape(-1), (x.shape[1] * x.shape[2], x.shape[2], 1)


def rows_4k_apart(x: np.ndarray) -> tuple[np.ndarray, tuple[int, ...]]:
    """``x`` (batch, rows, cols) row-major in a storage whose rows start 4 KiB apart: a
    strip of them crowds into one set of L1, so the GEMM packs it (beyond 8 rows)."""
    wide = 4096 // x.itemsize
    padded = np.zeros((*x.shape[:2], wide), x.dtype)
    padded[..., : x.shape[2]] = x
    return padded.reshape(-1), (x.shape[1] * wide, wide, 1)


def gemm_results(kernels: Sequence[Callable[..., None]], a_layouts: list, b_layouts: list,
                 batch: int, m: int, n: int, k: int, dtype: type) -> list[np.ndarray]:  # fmt: skip
    """The product from every pair of (storage, strides) layouts of A and B, by each kernel."""
    results = []
    for (a, sa), (b, sb) in ((a, b) for a in a_layouts for b in b_layouts):
        for kernel in kernels:
            out = np.full(batch * m * n, np.nan, dtype)
            kernel(out, a, b, batch, m, n, k, *sa, *sb)
            results.append(out)
    return results


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(sorted(MATMUL_KERNELS)),
    st.sampled_from(DTYPES),
    st.integers(1, 3), st.integers(1, 20), st.integers(1, 40), st.integers(1, 40),
    st.booleans(), st.booleans(), st.sampled_from(["none", "a", "b"]), st.booleans(),
    st.integers(0, 2**32 - 1),
)  # fmt: skip
def test_matmul_kernels_fuzz(
    name: str, dtype: type, batch: int, m: int, k: int, n: int,
    ta: bool, tb: bool, bcast: str, parallel: bool, seed: int,
) -> None:  # fmt: skip
    """Each kernel directly, any size (including the micro-kernel's partial
    blocks), row- or column-major operands, a batch of one broadcast."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((1 if bcast == "a" else batch, m, k)).astype(dtype)
    y = rng.standard_normal((1 if bcast == "b" else batch, k, n)).astype(dtype)
    a, (sa0, sa1, sa2) = strided_operand(x, ta)
    b, (sb0, sb1, sb2) = strided_operand(y, tb)
    sa0 = 0 if bcast == "a" else sa0
    sb0 = 0 if bcast == "b" else sb0
    out = np.full(batch * m * n, np.nan, dtype)
    kernel = MATMUL_KERNELS[name][parallel]
    kernel(out, a, b, batch, m, n, k, sa0, sa1, sa2, sb0, sb1, sb2)
    assert_matmul(out.reshape(batch, m, n), x, y, dtype)


def test_gemm_reads_an_operand_in_place_only_where_a_strip_fits_l1() -> None:
    """``_reads_in_place`` (float64; every ``n`` here is whole vectors at either width):
    ``(itemsize, n, k, A's row and k strides, B's k and column strides)``."""
    in_place = fast_ops._reads_in_place
    # The hidden-200 MLP's products: h @ W, then h^T @ g (A's columns along k, 1600 bytes
    # apart: every set of L1 in use). B transposed (g @ W^T) is always packed.
    assert in_place(8, 200, 200, 200, 1, 200, 1) == (True, True)
    assert in_place(8, 200, 100, 1, 200, 200, 1) == (True, True)
    assert in_place(8, 200, 200, 200, 1, 1, 200) == (True, False)
    # Rows 2 KiB apart share two sets: a strip of more than 16 steps of k is packed.
    assert in_place(8, 256, 256, 256, 1, 256, 1) == (True, False)
    assert in_place(8, 256, 256, 1, 256, 256, 1) == (False, False)
    assert in_place(8, 256, 16, 1, 256, 256, 1) == (True, True)
    # A block of k (_KC = 512) two cache lines a step is too much for L1's 8 ways.
    assert in_place(8, 200, 600, 600, 1, 200, 1) == (True, False)
    assert in_place(8, 200, 256, 256, 1, 200, 1) == (True, True)
    # B in part vectors, and A with neither stride 1, are packed ...
    assert in_place(8, 201, 200, 200, 1, 201, 1) == (True, False)
    assert in_place(8, 200, 200, 600, 3, 200, 1) == (False, True)
    # ... except A beside a small B in whole strips (at most 16 KiB), as before.
    lanes = fast_simd.full_lane_count(8)
    assert in_place(8, 2 * lanes, 8, 600, 3, 2 * lanes, 1) == (True, True)


@FUZZ
@given(st.sampled_from(DTYPES), st.integers(1, 2), st.integers(1, 30),
       st.sampled_from([1, 7, 64, 300, 600]), st.integers(1, 50), st.booleans(),
       st.integers(0, 2**32 - 1))  # fmt: skip
def test_gemm_gives_the_same_bits_whether_it_packs_or_reads_in_place(
    dtype: type, batch: int, m: int, k: int, n: int, parallel: bool, seed: int
) -> None:
    """One product from operands laid out so that each is read in place or packed
    (rows 4 KiB apart and A with no unit stride are packed; compact row-major ones
    are read in place where ``_reads_in_place`` allows): the same bits every time."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, m, k)).astype(dtype)
    y = rng.standard_normal((batch, k, n)).astype(dtype)
    a_spread = np.zeros((batch, m, k, 2), dtype)  # A's elements two apart
    a_spread[..., 0] = x
    a_layouts = [strided_operand(x, False), strided_operand(x, True),
                 (a_spread.reshape(-1), (m * k * 2, k * 2, 2))]  # fmt: skip
    b_layouts = [strided_operand(y, False), strided_operand(y, True), rows_4k_apart(y)]
    results = gemm_results([MATMUL_KERNELS["gemm"][parallel]], a_layouts, b_layouts,
                           batch, m, n, k, dtype)  # fmt: skip
    assert_matmul(results[0].reshape(batch, m, n), x, y, dtype)
    for out in results[1:]:
        np.testing.assert_array_equal(out, results[0])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("k", [64, 600])
def test_gemm_packs_one_vector_of_columns_as_it_packs_any_other(dtype: type, k: int) -> None:
    """B of one vector of columns (a float32 convolution's 4 x 4 planes), packed from rows
    4 KiB apart by whole vectors, gives the bits of B transposed (packed element by
    element) and of B read in place."""
    rng = np.random.default_rng(13)
    n = fast_simd.full_lane_count(np.dtype(dtype).itemsize)
    batch, m = 2, 2 * fast_ops._MR + 1
    x = rng.standard_normal((batch, m, k)).astype(dtype)
    y = rng.standard_normal((batch, k, n)).astype(dtype)
    far = rows_4k_apart(y)
    b_layouts = [strided_operand(y, False), strided_operand(y, True), far]
    results = gemm_results(MATMUL_KERNELS["gemm"], [strided_operand(x, False)], b_layouts,
                           batch, m, n, k, dtype)  # fmt: skip
    assert fast_ops._reads_in_place(y.itemsize, n, k, k, 1, far[1][1], 1)[1] is False
    assert_matmul(results[0].reshape(batch, m, n), x, y, dtype)
    for out in results[1:]:
        np.testing.assert_array_equal(out, results[0])


@pytest.mark.parametrize("dtype", DTYPES)
def test_matmul_block_edges_and_layouts(dtype: type) -> None:
    """Through the backend: sizes around the micro-kernel and blocking sizes, k across
    several k-blocks, transposed views (as backward passes make) and batches."""
    rng = np.random.default_rng(4)
    kc, mr = fast_ops._KC, fast_ops._MR
    lanes = fast_simd.full_lane_count(np.dtype(dtype).itemsize)
    nr = 2 * lanes  # the GEMM's strip of columns
    cases = [
        ((mr, 8), (8, nr)),
        ((mr + 1, kc + 1), (kc + 1, nr + 1)),
        # A last strip of exactly one vector, and of one column more.
        ((2 * mr - 1, 70), (70, nr + lanes)),
        ((mr + 2, kc + 7), (kc + 7, 2 * nr + lanes + 1)),
        ((fast_ops._MC + 5, 2 * kc + 3), (2 * kc + 3, 4 * nr - 1)),
        ((7, kc - 1), (kc - 1, fast_ops._NB_STRIPS * nr + 3)),
        ((2, 33, 70), (2, 70, 45)),
        ((1, 40, 50), (3, 50, 30)),  # A broadcast over the batch
        ((3, 40, 50), (50, 30)),  # B broadcast over the batch
        ((mr, 9), (9, fast_ops._NC + nr + 1)),  # more than one panel of B
        ((300, 200), (200, 1)),  # matrix-vector
        ((1, 300), (300, 200)),  # vector-matrix
        ((50, 2), (2, 40)),  # short k
        # A small row-major B in whole strips is read in place (and A, any layout).
        ((3 * mr + 1, 50), (50, nr)),
        ((2, 13, 40), (1, 40, 2 * nr)),
    ]
    for shape_a, shape_b in cases:
        x = rng.standard_normal(shape_a).astype(dtype)
        y = rng.standard_normal(shape_b).astype(dtype)
        for order_a in ([0, 1], [1, 0]) if x.ndim == 2 else ([0, 1, 2], [0, 2, 1]):
            for order_b in ([0, 1], [1, 0]) if y.ndim == 2 else ([0, 1, 2], [0, 2, 1]):
                out = FB.matrix_multiply(view(x, order_a, dtype), view(y, order_b, dtype))
                assert_dtype(out, dtype)
                assert_matmul(out, x, y, dtype)


GEMM_WIDTH_SCRIPT = textwrap.dedent(
    """
    import hashlib, sys
    import numpy as np
    from minitorch import fast_ops, fast_simd, kernel_cache

    rng = np.random.default_rng(11)
    digest = hashlib.sha256()
    # (batch, m, n, k, A transposed, B transposed, broadcast): part strips of one
    # vector or less and of more, several blocks of k, batches, transposed operands.
    cases = [(1, 13, 5, 40, 0, 0, ""), (1, 31, 20, 600, 1, 0, ""), (2, 7, 37, 70, 0, 1, ""),
             (3, 20, 24, 9, 1, 1, "a"), (2, 12, 41, 130, 0, 0, "b"), (1, 100, 200, 200, 0, 0, ""),
             (1, 64, 16, 64, 0, 0, ""), (1, 45, 33, 1100, 0, 1, "")]
    # (float32 vectors are 8 lanes at either width on Zen 4: see fast_simd.FULL_LANES.)
    for dtype in (np.float64, np.float32):
        for batch, m, n, k, ta, tb, bcast in cases:
            x = rng.standard_normal((1 if bcast == "a" else batch, m, k)).astype(dtype)
            y = rng.standard_normal((1 if bcast == "b" else batch, k, n)).astype(dtype)
            if ta:
                a = np.ascontiguousarray(x.transpose(0, 2, 1)).reshape(-1)
                sa = (m * k, 1, m)
            else:
                a, sa = x.reshape(-1), (m * k, k, 1)
            if tb:
                b = np.ascontiguousarray(y.transpose(0, 2, 1)).reshape(-1)
                sb = (k * n, 1, k)
            else:
                b, sb = y.reshape(-1), (k * n, n, 1)
            sa = (0,) + sa[1:] if bcast == "a" else sa
            sb = (0,) + sb[1:] if bcast == "b" else sb
            # (The serial entry: the parallel one cuts C into tasks, never an element's sum.)
            out = np.full(batch * m * n, np.nan, dtype)
            fast_ops._gemm_ser(out, a, b, batch, m, n, k, *sa, *sb)
            tol = 1e-4 if dtype == np.float32 else 1e-12
            np.testing.assert_allclose(out.reshape(batch, m, n), x @ y, rtol=tol,
                                       atol=tol * np.sqrt(k))
            digest.update(out.tobytes())
    print(fast_simd.FULL_BYTES, kernel_cache._ENGINE_KEY, digest.hexdigest())
    """
)


@pytest.mark.parametrize("dtype", DTYPES)
def test_matmul_part_strips_match_numpy(dtype: type, launched_kernels: list[str]) -> None:
    """Every width of the last strip of columns, from one column to a whole strip, through
    the backend (products the serial GEMM takes: 13 rows, k = 200)."""
    rng = np.random.default_rng(12)
    nr = 2 * fast_simd.full_lane_count(np.dtype(dtype).itemsize)
    x = rng.standard_normal((2 * fast_ops._MR + 1, 200)).astype(dtype)
    for n in range(nr + 1, 2 * nr + 1):
        y = rng.standard_normal((200, n)).astype(dtype)
        out = FB.matrix_multiply(tensor(x, dtype), tensor(y, dtype))
        assert_matmul(out, x, y, dtype)
    assert set(launched_kernels) == {"_gemm_into_ser"}, launched_kernels


def _same_digest_at_both_widths(script: str) -> None:
    """Run ``script`` (which prints the full width, the engine key and a digest of its
    results) at ``MINITORCH_SIMD_BYTES`` 32 and 64, each in its own process with its own
    cached kernels (the width is part of the cache key), and compare the digests."""
    results = []
    for width in ("32", "64"):
        env = dict(os.environ, MINITORCH_SIMD_BYTES=width, PYTHONPATH=str(ROOT))
        proc = subprocess.run([sys.executable, "-c", script], env=env,
                              capture_output=True, text=True, timeout=600, cwd=ROOT)  # fmt: skip
        assert proc.returncode == 0, proc.stdout + proc.stderr
        results.append(proc.stdout.split())
    (w32, key32, digest32), (w64, key64, digest64) = results
    assert (w32, w64) == ("32", "64")
    assert key32 != key64
    assert digest32 == digest64


@pytest.mark.not_boundschecked
def test_gemm_is_bit_identical_at_both_vector_widths() -> None:
    """The GEMM's strips are 2 vectors of the machine's width (``fast_simd.full_*``); each
    element's sum is the same either way, so AVX2 and AVX-512 machines agree bit for bit.
    Both widths run here (``MINITORCH_SIMD_BYTES``), each in its own process, and neither
    reuses the other's cached kernels (the width is part of the cache key)."""
    _same_digest_at_both_widths(GEMM_WIDTH_SCRIPT)


LOOP_WIDTH_SCRIPT = textwrap.dedent(
    """
    import hashlib
    import numpy as np
    import minitorch
    from minitorch import fast_simd, kernel_cache

    FB = minitorch.TensorBackend(minitorch.FastOps)
    rng = np.random.default_rng(5)
    digest = hashlib.sha256()
    for dtype in (np.float64, np.float32):
        # Lengths with and without a tail past the last whole vector; both the serial
        # and the parallel (chunked) kernels; every value exp and sigmoid meet.
        for n in (7, 37, 1003, 70001):
            x = rng.standard_normal(n) * 30
            x[: min(n, 4)] = [np.nan, np.inf, -np.inf, 800.0][: min(n, 4)]
            t = minitorch.tensor_from_numpy(x.astype(dtype), backend=FB)
            u = minitorch.tensor_from_numpy(rng.standard_normal(n).astype(dtype), backend=FB)
            for r in (t.exp(), t.sigmoid(), t * u + 0.5, t.relu() * u):
                digest.update(r.to_numpy().tobytes())
        m = minitorch.tensor_from_numpy(rng.standard_normal((300, 67)).astype(dtype), backend=FB)
        w = minitorch.tensor_from_numpy(rng.standard_normal((67, 45)).astype(dtype), backend=FB)
        for r in (m.sum(0), m.exp().sum(0), m[:5] @ w, m.permute(1, 0).exp()):
            digest.update(r.to_numpy().tobytes())
    print(fast_simd.FULL_BYTES, kernel_cache._ENGINE_KEY, digest.hexdigest())
    """
)


@pytest.mark.not_boundschecked
def test_elementwise_kernels_are_bit_identical_at_both_loop_widths() -> None:
    """At a full width of 64 bytes, the elementwise, column-reduction and row-matmul
    kernels ask LLVM for 64-byte vectors (``fast_simd.wide_loops``; 32 is its choice on
    Intel's AVX-512 CPUs). Only the width may change, never a value: both widths run
    here, each in its own process with its own cached kernels."""
    _same_digest_at_both_widths(LOOP_WIDTH_SCRIPT)


def test_wide_loops_widens_the_loops_of_its_function_only() -> None:
    """``wide_loops`` marks the function it is called in (for a ``prange`` body, the
    body's own function), and only when the full width is 64 bytes: where LLVM's own
    choice is 32-byte vectors (Intel's AVX-512 CPUs), those loops get 64-byte ones
    (zmm registers) and other functions keep 32."""

    @njit
    def wide(out: np.ndarray, x: np.ndarray) -> None:
        fast_simd.wide_loops()
        for i in range(len(x)):
            out[i] = math.sqrt(x[i]) * 2.0

    @njit(parallel=True)
    def wide_body(out: np.ndarray, x: np.ndarray) -> None:
        for i in numba.prange(len(x)):
            fast_simd.wide_loops()
            out[i] = math.sqrt(x[i]) * 2.0

    @njit
    def plain(out: np.ndarray, x: np.ndarray) -> None:
        for i in range(len(x)):
            out[i] = math.sqrt(x[i]) * 2.0

    x = np.arange(1000.0)
    for kernel in (wide, wide_body, plain):
        out = np.zeros_like(x)
        kernel(out, x)
        np.testing.assert_array_equal(out, np.sqrt(x) * 2.0)
    ir_text = wide.inspect_llvm(wide.signatures[0])
    marked = re.findall(r"^attributes #\d+ = \{[^\n]*\"prefer-vector-width\"=\"512\"",
                        ir_text, re.M)  # fmt: skip
    assert bool(marked) == (fast_simd.FULL_BYTES == 64)
    assert "prefer-vector-width" not in plain.inspect_llvm(plain.signatures[0])
    if fast_simd.FULL_BYTES == 64 and fast_simd.machine_bytes() == 64:
        for kernel in (wide, wide_body):
            assert "zmm" in kernel.inspect_asm(kernel.signatures[0])


@pytest.mark.parametrize("value", ["48", "avx", "0"])
def test_bad_simd_width_setting_is_a_clear_error(value: str) -> None:
    env = dict(os.environ, MINITORCH_SIMD_BYTES=value, PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-c", "import minitorch"], env=env,
                          capture_output=True, text=True, timeout=300, cwd=ROOT)  # fmt: skip
    assert proc.returncode != 0
    assert "MINITORCH_SIMD_BYTES must be 32 or 64" in proc.stderr


def test_matmul_empty_and_zero_k() -> None:
    for dtype in DTYPES:
        for (m, k, n) in ((0, 3, 4), (3, 0, 4), (3, 4, 0)):
            out = FB.matrix_multiply(tensor(np.ones((m, k)), dtype), tensor(np.ones((k, n)), dtype))
            assert out.shape == (m, n)
            assert_dtype(out, dtype)
            np.testing.assert_array_equal(values(out), np.zeros((m, n)))


def test_large_matmul_parallel_square_and_transposed() -> None:
    rng = np.random.default_rng(5)
    for dtype in DTYPES:
        x = rng.standard_normal((300, 280)).astype(dtype)
        y = rng.standard_normal((280, 310)).astype(dtype)
        assert_matmul(FB.matrix_multiply(tensor(x, dtype), tensor(y, dtype)), x, y, dtype)
        out = FB.matrix_multiply(view(x, [1, 0], dtype), view(y, [1, 0], dtype))
        assert_matmul(out, x, y, dtype)


def test_course_tensor_matrix_multiply_in_float32() -> None:
    rng = np.random.default_rng(6)
    x = rng.standard_normal((2, 4, 5)).astype(F32)
    y = rng.standard_normal((2, 5, 3)).astype(F32)
    out = tensor(np.zeros((2, 4, 3)), F32)
    fast_ops.tensor_matrix_multiply(*out.tuple(), *tensor(x).tuple(), *tensor(y).tuple())
    assert_matmul(out, x, y, F32)


def spread(x: np.ndarray, dtype: type = F32) -> Tensor:
    """A view of ``x`` over every other element of a wider storage: with no unit stride,
    the GEMM packs it rather than reading it in place."""
    wide = np.zeros((x.shape[0], 2 * x.shape[1]), dtype)
    wide[:, ::2] = x
    t = tensor(wide, dtype)[:, ::2]
    assert t._tensor.strides == (2 * x.shape[1], 2)
    return t


def test_matmul_keeps_packing_buffers_per_thread_and_dtype() -> None:
    rng = np.random.default_rng(11)
    kept = fast_ops._pack_workspace.__dict__.setdefault("buffers", {})
    kept.clear()
    for dtype in DTYPES:
        x = rng.standard_normal((50, 300)).astype(dtype)
        y = rng.standard_normal((300, 70)).astype(dtype)
        assert_matmul(FB.matrix_multiply(spread(x, dtype), spread(y, dtype)), x, y, dtype)
        first = kept[np.dtype(dtype)]
        # A smaller product reuses the buffers; a larger one grows them; every result
        # is right whatever the buffers held before.
        part = FB.matrix_multiply(spread(x[:30], dtype), spread(y[:, :40], dtype))
        assert_matmul(part, x[:30], y[:, :40], dtype)
        assert all(now is then for now, then in zip(kept[np.dtype(dtype)], first))
        big = rng.standard_normal((90, 600)).astype(dtype)
        assert_matmul(FB.matrix_multiply(spread(big, dtype), spread(big.T, dtype)), big, big.T,
                      dtype)  # fmt: skip
        grown = kept[np.dtype(dtype)]
        assert grown[0].size > first[0].size and grown[1].size > first[1].size
    assert set(kept) == {np.dtype(np.float32), np.dtype(np.float64)}
    # Beyond the limit nothing is kept; another thread keeps its own buffers.
    with mock.patch.object(fast_ops, "_KEEP_PACK_BYTES", 1024):
        before = {d: tuple(b) for d, b in kept.items()}
        x = rng.standard_normal((100, 200))
        assert_matmul(FB.matrix_multiply(spread(x, F32), spread(x.T, F32)), x.astype(F32),
                      x.T.astype(F32), F32)  # fmt: skip
        assert all(kept[d][i] is before[d][i] for d in kept for i in (0, 1))
    seen: list[Any] = []
    worker = threading.Thread(target=lambda: seen.append(
        (FB.matrix_multiply(spread(x), spread(x.T)), fast_ops._pack_workspace.buffers)))
    worker.start()
    worker.join()
    assert_matmul(seen[0][0], x.astype(F32), x.T.astype(F32), F32)
    assert seen[0][1] is not kept

# 5. User scalar functions in both dtypes ------------------------------------------------


def _with_int_loop(x: float) -> float:
    acc = 0.0
    for i in range(3):  # an int literal that must stay an int
        acc += x * i
    return acc


def _indexes_a_list(x: float) -> float:
    return [0.5, 0.1][1] * x


SCALE = 0.1


def _reads_global(x: float) -> float:
    return x * SCALE


def _closure(c: float) -> Callable[[float], float]:
    return lambda x: x * c


def test_user_ops_compile_for_both_dtypes() -> None:
    x = np.linspace(-3, 3, 50)
    for dtype in DTYPES:
        t = tensor(x, dtype)
        xd = x.astype(dtype)
        assert_bits(FB.map_of(_reads_global)(t), xd * dtype(SCALE))
        assert_bits(FB.map_of(_closure(0.3))(t), xd * dtype(0.3))
        assert_bits(FB.map_of(lambda v, c=0.7: v * c)(t), xd * dtype(0.7))
        # range(3) keeps its int (numba takes the float32 bound).
        out = FB.map_of(_with_int_loop)(t)
        assert_dtype(out, dtype)
        np.testing.assert_allclose(values(out), 3 * xd, rtol=1e-6)
        # A float32 index does not compile: that function falls back to float64 arithmetic,
        # rounded once to the output's dtype.
        out = FB.map_of(_indexes_a_list)(t)
        assert_dtype(out, dtype)
        assert_bits(out, (xd.astype(np.float64) * 0.1).astype(dtype))


def test_user_ops_through_unary_and_binary_op() -> None:
    softplus = minitorch.unary_op(lambda v: math.log(1.0 + math.exp(v)))
    hypot = minitorch.binary_op(lambda v, w: math.sqrt(v * v + w * w))
    x = np.linspace(-4, 4, 30)
    for dtype in DTYPES:
        out = softplus(tensor(x, dtype))
        assert_dtype(out, dtype)
        np.testing.assert_allclose(values(out), np.log1p(np.exp(x)), rtol=1e-5)
        out = hypot(tensor(x, dtype), tensor(x[::-1].copy(), dtype))
        assert_dtype(out, dtype)
        np.testing.assert_allclose(values(out), np.hypot(x, x[::-1]), rtol=1e-6)


# 6. The compiled code: float32 all the way, on 8-lane vectors -----------------------------


def _double_arithmetic(ir: str) -> list[str]:
    return re.findall(r"(fpext|fptrunc|= f(?:add|sub|mul|div) (?:fast |contract )*double)", ir)


def _ir(dispatcher: Any, dtype: type) -> str:
    for signature in dispatcher.signatures:
        if signature[0].dtype.bitwidth == np.dtype(dtype).itemsize * 8:
            return dispatcher.inspect_llvm(signature)
    raise AssertionError(f"no {dtype} specialisation")


@pytest.mark.not_boundschecked
def test_float32_specialisations_stay_float32_and_vectorise() -> None:
    x = np.linspace(-2, 2, 256).astype(F32)
    out = np.empty_like(x)
    maps = load_kernels("map", fast_kernels.MAP_SOURCE, operators.exp, cache=False)
    maps.map2d_u_ser(out, x, 1, 256, 256, 1, 0, 1)
    reduces = load_kernels("reduce", fast_kernels.REDUCE_SOURCE, operators.add, cache=False)
    reduces.LANES, reduces.VFN = True, fast_simd.add
    reduces.reduce3_ser(np.zeros(2, F32), x, 2, 128, 1, 128, 1, 1, 4096)
    zips = load_kernels("zip", fast_kernels.ZIP_SOURCE, _blend, cache=False)
    zips.zip2d_uu_ser(out, x, x, 1, 256, 256, 1, 0, 1, 0, 1)
    zips.zip2d_ub_ser(out, x, x, 1, 256, 256, 1, 0, 1, 0, 0)
    micro = njit(fastmath={"contract"})(fast_ops._micro.py_func)
    packed = np.ones(8 * 16, F32)
    micro(packed, 0, 48, 1, 6, 6, packed, 0, 16, 8, np.zeros(6 * 16, F32), 0, 16, True, 16, 0, 0)
    for kernel in (maps.map2d_u_ser, reduces.reduce3_ser, zips.zip2d_uu_ser, zips.zip2d_ub_ser,
                   micro):
        ir = _ir(kernel, F32)
        assert not _double_arithmetic(ir), _double_arithmetic(ir)[:5]
        # Vectorised at 8 floats or wider (LLVM picks 16 for a lone exp loop on AVX-512).
        assert re.search(r"<(8|16) x float>", ir), kernel
    assert f"@llvm.fmuladd.v{fast_simd.full_lane_count(4)}f32" in _ir(micro, F32)


@pytest.mark.not_boundschecked
@pytest.mark.parametrize("name", ["inv", "log_back", "inv_back", "sqrt_back_from_output", "pow"])
def test_math_constants_stay_float32(name: str) -> None:
    """Regression: ``d * math.inf`` (and ``math.nan``) in a float32 kernel multiplied in
    float64, as numba freezes ``math.inf`` as a double; the float32 variant reads a
    ``math`` whose constants are float32 (found compiling the CUDA kernels to PTX)."""
    fn = getattr(operators, name)
    x = np.array([0.0, -0.0, 0.5, -2.0, 3.0, np.inf, np.nan], F32)
    out = np.empty_like(x)
    if name == "inv":
        kernels = load_kernels("map", fast_kernels.MAP_SOURCE, fn, cache=False, dtype=F32)
        kernels.map_flat_ser(out, x)
        expected = [fn(float(v)) for v in x]
        kernel = kernels.map_flat_ser
    else:
        kernels = load_kernels("zip", fast_kernels.ZIP_SOURCE, fn, cache=False, dtype=F32)
        kernels.zip_flat_ser(out, x, x[::-1].copy())
        expected = [fn(float(v), float(w)) for v, w in zip(x, x[::-1])]
        kernel = kernels.zip_flat_ser
    ir = _ir(kernel, F32)
    assert not _double_arithmetic(ir), _double_arithmetic(ir)[:5]
    np.testing.assert_array_equal(out, np.array(expected, F32))


@pytest.mark.not_boundschecked
def test_float64_micro_kernel_uses_the_full_vector_width() -> None:
    """float64 multiplies on vectors of the machine's width (8 lanes with AVX-512), and
    a part strip of at most one vector runs only that vector's multiply-adds."""
    lanes = fast_simd.full_lane_count(8)
    micro = njit(fastmath={"contract"})(fast_ops._micro.py_func)
    nr = 2 * lanes
    packed = np.ones(8 * nr)
    for cols in (nr, lanes):  # a whole strip, then a part strip of one vector
        out = np.zeros(6 * nr)
        micro(packed, 0, 48, 1, 6, 6, packed, 0, nr, 8, out, 0, nr, True, cols, 0, 0)
        c = out.reshape(6, nr)
        np.testing.assert_array_equal(c[:, :cols], 8.0)
        np.testing.assert_array_equal(c[:, cols:], 0.0)  # never written
    assert f"@llvm.fmuladd.v{lanes}f64" in _ir(micro, np.float64)


# 7. Bounds checks of the SIMD loads and stores --------------------------------------------


BOUNDS_SCRIPT = textwrap.dedent(
    """
    import numpy as np
    from numba import njit
    from minitorch import fast_simd

    @njit
    def copy(dst, i, src, j):
        fast_simd.store(dst, i, fast_simd.load(src, j))

    @njit
    def copy_full(dst, i, src, j):
        fast_simd.store(dst, i, fast_simd.full_load(src, j))

    @njit
    def spread_full(dst, i, src, j):
        fast_simd.store(dst, i, fast_simd.full_broadcast(src, j))

    a = np.zeros(8)
    copy(a, 4, a, 4)  # the last whole vector: fine
    for i, j in ((5, 0), (0, 5), (-1, 0)):
        try:
            copy(a, i, a, j)
        except IndexError:
            continue
        raise SystemExit(f"no IndexError for {i}, {j}")
    lanes = fast_simd.full_lane_count(8)  # float64, full width
    b = np.zeros(2 * lanes)
    copy_full(b, lanes, b, lanes)
    spread_full(b, lanes, b, 2 * lanes - 1)
    for f, i, j in ((copy_full, lanes + 1, 0), (copy_full, 0, lanes + 1),
                    (spread_full, lanes + 1, 0), (spread_full, 0, 2 * lanes)):
        try:
            f(b, i, b, j)
        except IndexError:
            continue
        raise SystemExit(f"no IndexError for {f.__name__} {i}, {j}")
    print("ok")
    """
)


def test_simd_accesses_are_bounds_checked() -> None:
    env = dict(os.environ, NUMBA_BOUNDSCHECK="1")
    proc = subprocess.run([sys.executable, "-c", BOUNDS_SCRIPT], env=env, capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stdout + proc.stderr


def test_strided_storages_work_in_every_kernel() -> None:
    """A storage that is itself a strided NumPy view (every other element) takes the
    element-by-element form of the SIMD loads and stores. The public constructors
    always store contiguously, so the kernels are called on such storages directly."""
    rng = np.random.default_rng(8)
    reduces = load_kernels("reduce", fast_kernels.REDUCE_SOURCE, operators.add,
                           constants={"LANES": True, "VFN": fast_simd.add})  # fmt: skip
    zips = load_kernels("zip", fast_kernels.ZIP_SOURCE, operators.add)
    for dtype in DTYPES:
        x = rng.standard_normal((40, 300)).astype(dtype)
        y = rng.standard_normal((300, 50)).astype(dtype)

        def spaced(v: np.ndarray) -> np.ndarray:
            storage = np.empty(2 * v.size, v.dtype)[::2]
            storage[:] = v.reshape(-1)
            return storage

        (m, k), n = x.shape, y.shape[1]
        product = np.empty(m * n, dtype)
        fast_ops._gemm_ser(product, spaced(x), spaced(y), 1, m, n, k, 0, k, 1, 0, n, 1)
        assert_matmul(product.reshape(m, n), x, y, dtype)
        for dim, layout in ((1, (m, k, 1, k, 1, 1)), (0, (1, m, k, 0, k, 1))):
            total = np.zeros(x.shape[1 - dim], dtype)
            reduces.reduce3_ser(total, spaced(x), *layout, 4096)
            assert np.all(np.abs(total - x.astype(np.float64).sum(dim))
                          <= sum_bound(x, dim, dtype).reshape(-1))  # fmt: skip
        twice = np.empty(x.size, dtype)
        zips.zip2d_ser(twice, spaced(x), x.reshape(-1), m, k, k, 1, k, 1, k, 1)
        assert (twice.reshape(m, k) == x + x).all()
