"""The PyTorch-style tensor API of issue 10, against NumPy as the oracle.

Basic indexing and writes through offset views, the shape functions, the extra
elementwise math and reductions, ``no_grad``, NumPy interop, the factories and
``manual_seed``. Property tests draw random shapes, permuted layouts, size-1
dims, broadcast operands and slices of slices; gradients are compared with
central differences over every element.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numba.cuda
import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from strategies import (
    backend_shapes,
    limits,
    small_floats,
    small_ints,
    tensor_array_pairs,
    tensor_arrays,
)

import minitorch
from minitorch import IndexingError, Tensor, TensorBackend


def prop(backend: TensorBackend, check: Callable[..., None], *strategies: Any) -> None:
    """Run ``check`` as a hypothesis property: a few examples (two on CUDA, where the
    simulator runs a Python thread per GPU thread)."""
    configured = settings(
        max_examples=2 if backend.cuda else 12,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    configured(given(*strategies)(check))()


def cpu_only(backend: TensorBackend) -> None:
    """Gradient checks evaluate the function twice per element: not on the simulator."""
    if backend.cuda:
        pytest.skip("central differences are too slow on the CUDA simulator")


def values(t: Tensor | float) -> np.ndarray:
    return np.asarray(t.to_numpy() if isinstance(t, Tensor) else t)


def assert_same(actual: Tensor, expected: np.ndarray, rtol: float = 1e-12) -> None:
    """Same shape, and values equal up to ``rtol`` (NaN where NumPy has NaN)."""
    assert isinstance(actual, Tensor)
    assert actual.shape == expected.shape, f"shape {actual.shape} != {expected.shape}"
    np.testing.assert_allclose(actual.to_numpy(), expected, rtol=rtol, atol=0, equal_nan=True)


def numeric_gradients(
    f: Callable[..., Tensor], arrays: list[np.ndarray], backend: TensorBackend, eps: float = 1e-6
) -> list[np.ndarray]:
    """Central differences of ``sum(f(*tensors) * weights)`` for every element of every input."""
    out = f(*[minitorch.tensor_from_numpy(a, backend=backend) for a in arrays])
    weights = np.random.default_rng(7).uniform(0.5, 1.5, out.shape)

    def total(xs: list[np.ndarray]) -> float:
        y = f(*[minitorch.tensor_from_numpy(a, backend=backend) for a in xs]).to_numpy()
        return float((y * weights).sum())

    grads = []
    for i, a in enumerate(arrays):
        g = np.zeros_like(a)
        for idx in np.ndindex(a.shape):
            up = [x.copy() for x in arrays]
            down = [x.copy() for x in arrays]
            up[i][idx] += eps
            down[i][idx] -= eps
            g[idx] = (total(up) - total(down)) / (2 * eps)
        grads.append(g)
    return grads


def check_gradients(
    f: Callable[..., Tensor], arrays: list[np.ndarray], backend: TensorBackend
) -> None:
    """Autodiff gradients of ``f`` equal central differences at every element."""
    xs = [minitorch.tensor_from_numpy(a, backend=backend, requires_grad=True) for a in arrays]
    out = f(*xs)
    weights = np.random.default_rng(7).uniform(0.5, 1.5, out.shape)
    (out * minitorch.tensor_from_numpy(weights, backend=backend)).sum().backward()
    for x, expected in zip(xs, numeric_gradients(f, arrays, backend)):
        assert x.grad is not None and x.grad.shape == x.shape
        np.testing.assert_allclose(x.grad.to_numpy(), expected, rtol=1e-4, atol=1e-5)


# Keys ------------------------------------------------------------------------------------


def draw_key(draw: st.DrawFn, shape: tuple[int, ...], ints: bool = True) -> Any:
    """A basic-indexing key for ``shape``: ints (negative too), slices with positive steps
    (possibly empty or out of range), fewer entries than dims, None and one Ellipsis."""
    items: list[Any] = []
    for d in shape:
        kind = draw(st.sampled_from(["int", "slice", "all"] if ints and d else ["slice", "all"]))
        if kind == "int":
            items.append(draw(st.integers(-d, d - 1)))
        elif kind == "slice":
            bound = st.none() | st.integers(-d - 1, d + 1)
            step = st.none() | st.integers(1, 3)
            items.append(slice(draw(bound), draw(bound), draw(step)))
        else:
            items.append(slice(None))
    if draw(st.booleans()):
        i = draw(st.integers(0, len(items)))
        j = draw(st.integers(i, len(items)))
        items = items[:i] + [Ellipsis] + items[j:]
    else:
        items = items[: draw(st.integers(0, len(items)))]
    for _ in range(draw(st.integers(0, 2))):
        items.insert(draw(st.integers(0, len(items))), None)
    if len(items) == 1 and draw(st.booleans()):
        return items[0]
    return tuple(items)


def assert_within_storage(t: Tensor) -> None:
    """Every position the layout reaches lies inside the (offset) storage."""
    td = t._tensor
    if td.size:
        last = sum((d - 1) * s for d, s in zip(td.shape, td.strides))
        assert 0 <= last < len(td._storage)


# Indexing --------------------------------------------------------------------------------


def test_indexing_matches_numpy_and_slices_of_slices(backend: TensorBackend) -> None:
    @st.composite
    def cases(draw: st.DrawFn) -> tuple[Tensor, np.ndarray, Any, Any]:
        t, a = draw(tensor_arrays(backend))
        key = draw_key(draw, t.shape)
        inner = a[key]
        second = draw_key(draw, inner.shape) if inner.ndim else None
        return t, a, key, second

    def check(case: tuple[Tensor, np.ndarray, Any, Any]) -> None:
        t, a, key, second = case
        view, expected = t[key], a[key]
        if expected.ndim == 0:  # one int per dim, however spelled: a float
            assert isinstance(view, float) and view == expected
            return
        assert_same(view, expected)
        assert_within_storage(view)
        assert_same(view + 0.0, expected)  # the kernels read the offset view
        assert_same(view.sum(), np.array([expected.sum()]), rtol=1e-9)
        inner, inner_expected = view[second], expected[second]
        if inner_expected.ndim == 0:
            assert inner == inner_expected
        else:
            assert_same(inner, inner_expected)
            assert_within_storage(inner)
            assert_same(inner * 2.0, inner_expected * 2.0)

    prop(backend, check, cases())


def test_indexing_gradient_lands_in_the_region_only(backend: TensorBackend) -> None:
    @st.composite
    def cases(draw: st.DrawFn) -> tuple[Tensor, np.ndarray, Any]:
        t, a = draw(tensor_arrays(backend))
        key = draw_key(draw, t.shape)
        assume(a[key].ndim > 0)
        return t, a, key

    def check(case: tuple[Tensor, np.ndarray, Any]) -> None:
        t, a, key = case
        t.requires_grad_(True)
        view = t[key]
        (view * view).sum().backward()
        expected = np.zeros_like(a)
        expected[key] = 2.0 * a[key]
        assert t.grad is not None
        np.testing.assert_allclose(t.grad.to_numpy(), expected, rtol=1e-12)

    prop(backend, check, cases())


def test_course_indexing_still_gives_floats_and_sets_elements(backend: TensorBackend) -> None:
    t = minitorch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], backend=backend)
    assert isinstance(t[1, 2], float) and t[1, 2] == 6.0
    assert t[np.int64(1), np.int32(0)] == 4.0 and t[(0, 1)] == 2.0
    assert t[-1, -1] == 6.0
    v = minitorch.tensor([7.0, 8.0, 9.0], backend=backend)
    assert isinstance(v[0], float) and v[0] == 7.0 and v[-1] == 9.0
    t[1, 2] = 60.0
    t[0, -3] = 10.0
    assert t.tolist() == [[10.0, 2.0, 3.0], [4.0, 5.0, 60.0]]
    leaf = minitorch.rand((2, 2), backend=backend)  # a leaf that requires grad, as in the course
    leaf[0, 1] = 3.0
    assert leaf[0, 1] == 3.0
    row = t[1]
    assert isinstance(row, Tensor) and row.tolist() == [4.0, 5.0, 60.0]
    assert row.storage_offset() == 3 and t[:, 1:].storage_offset() == 1
    assert [float(x) for x in v] == [7.0, 8.0, 9.0]


@pytest.mark.parametrize(
    "key, match",
    [
        ((0, 0, 0), "3 entries for the 2 dims"),
        ((2, 0), "out of range"),
        ((0, -4), "out of range"),
        (1.0, "holds 1.0"),
        ((0, "a"), "holds 'a'"),
        (True, "holds True"),
        ((Ellipsis, 0, Ellipsis), "more than one Ellipsis"),
        (slice(None, None, -1), "negative step"),
        (slice(None, None, 0), "bad slice"),
        (slice(0.5, 2), "bad slice"),
        ([[0, 1]], "non-integer entry"),
    ],
)
def test_bad_keys_are_clear_errors(key: Any, match: str) -> None:
    t = minitorch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    with pytest.raises(IndexingError, match=match):
        t[key]
    with pytest.raises(IndexingError, match=match):
        t[key] = 1.0
    with pytest.raises(IndexingError):
        t[minitorch.tensor([0.0])]


# Writes through views ----------------------------------------------------------------------


def test_setitem_matches_numpy_and_writes_through_to_the_base(backend: TensorBackend) -> None:
    @st.composite
    def cases(draw: st.DrawFn) -> tuple[Tensor, Tensor, np.ndarray, np.ndarray, Any, Any]:
        shape = draw(backend_shapes(backend))
        order = draw(st.permutations(range(len(shape))))
        base_shape = [0] * len(shape)
        for i, o in enumerate(order):
            base_shape[o] = shape[i]
        base_array = np.arange(float(math.prod(shape))).reshape(base_shape)
        base = minitorch.tensor_from_numpy(base_array, backend=backend)
        key = draw_key(draw, shape)
        expected = base_array.transpose(order)  # a NumPy view: writes reach base_array
        region = expected[key].shape
        if draw(st.booleans()):
            value: Any = draw(small_ints)
        else:
            cut = draw(st.integers(0, len(region)))
            value_shape = tuple(1 if draw(st.booleans()) else d for d in region[cut:]) or (1,)
            value = minitorch.tensor_from_numpy(
                -1.0 - np.arange(float(math.prod(value_shape))).reshape(value_shape),
                backend=backend,
            )
        return base, base.permute(*order), base_array, expected, key, value

    def check(case: tuple[Tensor, Tensor, np.ndarray, np.ndarray, Any, Any]) -> None:
        base, view, base_array, expected, key, value = case
        view[key] = value
        value_array = value.to_numpy() if isinstance(value, Tensor) else value
        if expected[key].ndim == 0:
            value_array = np.asarray(value_array).reshape(-1)[0]
        expected[key] = value_array
        assert_same(view, expected)
        np.testing.assert_array_equal(base.to_numpy(), base_array)

    prop(backend, check, cases())


def test_setitem_gradients_reach_the_value_and_skip_the_overwritten_region(
    backend: TensorBackend,
) -> None:
    x = minitorch.tensor_from_numpy(np.arange(12.0).reshape(3, 4), backend, requires_grad=True)
    v = minitorch.tensor([10.0, 20.0], backend=backend, requires_grad=True)
    y = x * 1.0
    y[1:, ::2] = v  # v broadcasts over the two rows
    weights = np.arange(1.0, 13.0).reshape(3, 4)
    (y * minitorch.tensor_from_numpy(weights, backend)).sum().backward()
    expected_x = weights.copy()
    expected_x[1:, ::2] = 0.0
    assert x.grad is not None and v.grad is not None
    np.testing.assert_array_equal(x.grad.to_numpy(), expected_x)
    np.testing.assert_array_equal(v.grad.to_numpy(), weights[1:, ::2].sum(0))
    np.testing.assert_array_equal(y.to_numpy()[1:, ::2], [[10.0, 20.0], [10.0, 20.0]])

    # Into a tensor without history, a value that requires grad makes it require grad.
    z = minitorch.zeros((2, 3), backend=backend)
    w = minitorch.tensor([1.0, 2.0, 3.0], backend=backend, requires_grad=True)
    z[0] = w
    assert z.requires_grad()
    (z * 3.0).sum().backward()
    assert w.grad is not None and w.grad.tolist() == [3.0, 3.0, 3.0]


def test_setitem_rules_and_errors(backend: TensorBackend) -> None:
    leaf = minitorch.tensor([[1.0, 2.0], [3.0, 4.0]], backend=backend, requires_grad=True)
    with pytest.raises(RuntimeError, match="leaf tensor that requires grad"):
        leaf[0] = 5.0
    with minitorch.no_grad():
        leaf[0] = 5.0  # allowed, as in PyTorch
    leaf.detach()[1, :] = 7.0  # same storage, no history
    assert leaf.tolist() == [[5.0, 5.0], [7.0, 7.0]]

    y = leaf * 2.0
    with pytest.raises(RuntimeError, match="view of a tensor that requires grad"):
        y[0][1:] = 1.0
    with pytest.raises(RuntimeError, match="view of a tensor that requires grad"):
        y.T[0] = 1.0
    y[0, 1:] = 1.0  # into the tensor itself: recorded
    assert y.tolist() == [[10.0, 1.0], [14.0, 14.0]]

    # tensor() makes leaves that require grad (the course's rule): detach to write slices.
    t = minitorch.tensor([1.0, 2.0, 3.0, 4.0], backend=backend).detach()
    t[1:] = t[:-1]  # overlapping: reads before it writes, as NumPy does
    assert t.tolist() == [1.0, 1.0, 2.0, 3.0]
    with pytest.raises(IndexingError, match="must broadcast"):
        t[1:] = minitorch.tensor([1.0, 2.0], backend=backend)
    with pytest.raises(TypeError, match="number or a tensor, not list"):
        t[1:] = [1.0, 2.0, 3.0]
    with pytest.raises(TypeError, match="number or a tensor, not str"):
        t[0] = "a"
    t[::2] = minitorch.tensor([9.0], backend=minitorch.SimpleBackend)  # moved to t's backend
    assert t.tolist() == [9.0, 1.0, 9.0, 3.0]


# Shape -------------------------------------------------------------------------------------


def factor_shapes(size: int) -> st.SearchStrategy[tuple[int, ...]]:
    """Shapes of ``size`` elements: its prime factors grouped at random, size-1 dims added."""
    factors = []
    n, p = size, 2
    while n > 1:
        while n % p == 0:
            factors.append(p)
            n //= p
        p += 1

    @st.composite
    def shape(draw: st.DrawFn) -> tuple[int, ...]:
        order = draw(st.permutations(factors))
        dims: list[int] = []
        for f in order:
            if dims and draw(st.booleans()):
                dims[-1] *= f
            else:
                dims.append(f)
        for _ in range(draw(st.integers(0, 2))):
            dims.insert(draw(st.integers(0, len(dims))), 1)
        return tuple(dims) or (1,)

    return shape()


def test_reshape_is_a_view_exactly_when_numpy_s_is(backend: TensorBackend) -> None:
    @st.composite
    def cases(draw: st.DrawFn) -> tuple[Tensor, Tensor, np.ndarray, tuple[int, ...], int | None]:
        # A permuted view of a row-major base, laid out like the NumPy transpose ``a``.
        base, a = draw(tensor_arrays(backend))
        key = draw_key(draw, base.shape, ints=False)  # gaps: steps and partial ranges
        view, expected = base[key], a[key]
        assume(expected.size > 0)
        shape = draw(factor_shapes(expected.size))
        hole = draw(st.none() | st.integers(0, len(shape) - 1))
        return base, view, expected, shape, hole

    def check(case: tuple[Tensor, Tensor, np.ndarray, tuple[int, ...], int | None]) -> None:
        base, view, expected, shape, hole = case
        asked = shape if hole is None else shape[:hole] + (-1,) + shape[hole + 1 :]
        out = view.reshape(*asked)
        assert_same(out, expected.reshape(shape))
        if not backend.cuda:
            numpy_view = np.shares_memory(expected.reshape(shape), expected)
            ours = np.shares_memory(out._tensor._storage, base._tensor._storage)
            assert ours == numpy_view, (view.shape, view._tensor.strides, shape)
        assert_within_storage(out)
        assert_same(view.flatten(), expected.reshape(-1))

    prop(backend, check, cases())


def test_shape_functions_match_numpy(backend: TensorBackend) -> None:
    @st.composite
    def cases(draw: st.DrawFn) -> tuple[Tensor, np.ndarray, int, int, int]:
        t, a = draw(tensor_arrays(backend))
        n = t.dims
        d0, d1 = draw(st.integers(-n, n - 1)), draw(st.integers(-n, n - 1))
        new = draw(st.integers(-n - 1, n))
        return t, a, d0, d1, new

    def check(case: tuple[Tensor, np.ndarray, int, int, int]) -> None:
        t, a, d0, d1, new = case
        assert_same(t.transpose(d0, d1), np.swapaxes(a, d0, d1))
        assert_same(t.unsqueeze(new), np.expand_dims(a, new))
        squeezed = np.squeeze(a)
        assert_same(t.squeeze(), squeezed if squeezed.ndim else squeezed.reshape(1))
        assert_same(t.squeeze(d0), np.squeeze(a, d0) if a.shape[d0] == 1 and a.ndim > 1 else a)
        start, end = sorted((d0 % t.dims, d1 % t.dims))
        merged = a.reshape(a.shape[:start] + (-1,) + a.shape[end + 1 :])
        assert_same(t.flatten(start, end), merged)
        if t.dims == 2:
            assert_same(t.T, a.T)

    prop(backend, check, cases())


def test_shape_function_gradients(backend: TensorBackend) -> None:
    cpu_only(backend)
    a = np.random.default_rng(1).normal(size=(2, 3, 4))
    check_gradients(lambda x: x.permute(2, 0, 1)[1:, :, ::2].reshape(6, 2), [a], backend)
    check_gradients(lambda x: x.transpose(0, 2).flatten(1).unsqueeze(0).squeeze(), [a], backend)
    check_gradients(lambda x: x[0].T * x[1].T, [a], backend)


def test_shape_function_errors() -> None:
    t = minitorch.tensor_from_numpy(np.zeros((2, 3, 4)))
    with pytest.raises(IndexingError, match="at most one -1"):
        t.reshape(-1, -1)
    with pytest.raises(IndexingError, match="24 elements"):
        t.reshape(5, 5)
    with pytest.raises(TypeError):
        t.reshape(2.0, 12)
    with pytest.raises(IndexingError, match="start_dim 2 comes after end_dim 1"):
        t.flatten(2, 1)
    with pytest.raises(IndexingError, match="allowed: -4 to 3"):
        t.unsqueeze(4)
    with pytest.raises(TypeError):
        t.unsqueeze(True)
    with pytest.raises(IndexingError, match="out of range"):
        t.transpose(0, 3)
    with pytest.raises(IndexingError, match="at most 2 dims"):
        _ = t.T
    assert t.squeeze(1).shape == (2, 3, 4)  # not size 1: unchanged, as in PyTorch
    assert minitorch.zeros((1, 1)).squeeze().shape == (1,)  # never 0-d


def test_cat_and_stack_match_numpy(backend: TensorBackend) -> None:
    lim = limits(backend)

    @st.composite
    def cases(draw: st.DrawFn) -> tuple[list[Tensor], list[np.ndarray], int, bool]:
        shape = draw(backend_shapes(backend, max_dims=3))
        dim = draw(st.integers(-len(shape), len(shape) - 1))
        stacking = draw(st.booleans())
        pairs = []
        for _ in range(draw(st.integers(1, 3))):
            own = list(shape)
            if not stacking:
                own[dim] = draw(st.integers(0, min(3, lim.max_dim)))
            pairs.append(draw(tensor_arrays(backend, tuple(own))))
        return [p[0] for p in pairs], [p[1] for p in pairs], dim, stacking

    def check(case: tuple[list[Tensor], list[np.ndarray], int, bool]) -> None:
        ts, arrays, dim, stacking = case
        if stacking:
            assert_same(minitorch.stack(ts, dim), np.stack(arrays, dim))
            assert_same(minitorch.stack(ts, -1), np.stack(arrays, -1))
        else:
            assert_same(minitorch.cat(ts, dim), np.concatenate(arrays, dim))

    prop(backend, check, cases())


def test_cat_and_stack_gradients(backend: TensorBackend) -> None:
    cpu_only(backend)
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(2, 3)), rng.normal(size=(2, 1))
    check_gradients(lambda x, y: minitorch.cat([x, y, x], 1), [a, b], backend)
    check_gradients(lambda x, y: minitorch.stack([x, y.T[:, :2] * x], 1), [a, b.T], backend)


def test_cat_and_stack_errors() -> None:
    t = minitorch.zeros((2, 3))
    with pytest.raises(ValueError, match="at least one tensor"):
        minitorch.cat([])
    with pytest.raises(TypeError, match="list or tuple of tensors"):
        minitorch.cat(t)
    with pytest.raises(TypeError, match="takes tensors, not int"):
        minitorch.cat([t, 1])
    with pytest.raises(IndexingError, match="must agree in every other dim"):
        minitorch.cat([t, minitorch.zeros((3, 3))], 1)
    with pytest.raises(IndexingError, match="must agree in every other dim"):
        minitorch.cat([t, minitorch.zeros((3,))], 0)
    with pytest.raises(IndexingError, match="one shape"):
        minitorch.stack([t, minitorch.zeros((2, 2))])
    with pytest.raises(IndexingError, match="out of range"):
        minitorch.stack([t, t], 3)


# Elementwise math ---------------------------------------------------------------------------

UNARY = {
    "tanh": (lambda t: t.tanh(), np.tanh),
    "sqrt": (lambda t: t.sqrt(), np.sqrt),  # NaN below 0
    "abs": (lambda t: abs(t), np.abs),
    "clamp": (lambda t: t.clamp(-1.0, 2.0), lambda a: np.clip(a, -1.0, 2.0)),
    "clamp_min": (lambda t: t.clamp(min=0.5), lambda a: np.maximum(a, 0.5)),
    "clamp_max": (lambda t: t.clamp(max=-0.5), lambda a: np.minimum(a, -0.5)),
    "pow_int": (lambda t: t**3, lambda a: a**3.0),
    "pow_frac": (lambda t: t.pow(0.5), lambda a: np.power(a, 0.5)),  # NaN below 0
    "rpow": (lambda t: 2.0**t, lambda a: np.power(2.0, a)),
}

BINARY = {
    "pow": (lambda a, b: a**b, np.power),
    "maximum": (minitorch.maximum, np.maximum),
    "minimum": (minitorch.minimum, np.minimum),
    "ge": (lambda a, b: a >= b, lambda a, b: (a >= b) * 1.0),
    "le": (lambda a, b: a <= b, lambda a, b: (a <= b) * 1.0),
    "ne": (lambda a, b: a != b, lambda a, b: (a != b) * 1.0),
    "where": (
        lambda a, b: minitorch.where(a > b, a, b * 2.0),
        lambda a, b: np.where(a > b, a, b * 2),
    ),
}


@pytest.mark.parametrize("name", list(UNARY))
def test_unary_math_matches_numpy(backend: TensorBackend, name: str) -> None:
    ours, theirs = UNARY[name]
    elements = st.floats(-3, 3) | small_ints

    def check(pair: tuple[Tensor, np.ndarray]) -> None:
        t, a = pair
        with np.errstate(invalid="ignore"):
            assert_same(ours(t), theirs(a), rtol=1e-9)

    prop(backend, check, tensor_arrays(backend, elements=elements))


@pytest.mark.parametrize("name", list(BINARY))
def test_binary_math_matches_numpy_with_broadcasting(backend: TensorBackend, name: str) -> None:
    ours, theirs = BINARY[name]
    elements = st.floats(-3, 3) | small_ints  # ties, zeros and negative bases

    def check(case: tuple[Tensor, np.ndarray, Tensor, np.ndarray]) -> None:
        ta, na, tb, nb = case
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            assert_same(ours(ta, tb), theirs(na, nb), rtol=1e-9)

    prop(backend, check, tensor_array_pairs(backend, elements=elements))


def test_math_edge_values(backend: TensorBackend) -> None:
    nan, inf = math.nan, math.inf
    x = minitorch.tensor_from_numpy(np.array([nan, -inf, -2.0, -0.0, 0.0, 3.0, inf]), backend)
    a = x.to_numpy()
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        for ours, theirs in [
            (x.tanh(), np.tanh(a)),
            (x.sqrt(), np.sqrt(a)),
            (x.abs(), np.abs(a)),
            (x.clamp(-1.0, 1.0), np.clip(a, -1.0, 1.0)),
            (minitorch.maximum(x, 0.0), np.maximum(a, 0.0)),
            (minitorch.minimum(0.0, x), np.minimum(0.0, a)),
            (x**-1.0, np.power(a, -1.0)),
            (x**2.5, np.power(a, 2.5)),
            (x**x, np.power(a, a)),
            (
                minitorch.tensor_from_numpy(np.array([10.0, -10.0]), backend) ** 400.0,
                np.power([10.0, -10.0], 400.0),
            ),
            (x != x, (a != a) * 1.0),
        ]:
            assert_same(ours, np.asarray(theirs, dtype=np.float64))
    np.testing.assert_array_equal((x.sqrt().to_numpy()[3:5]), [-0.0, 0.0])
    assert math.copysign(1.0, x.sqrt()[3]) == -1.0


def test_math_argument_errors() -> None:
    t = minitorch.tensor_from_numpy(np.ones((2, 3)))
    with pytest.raises(TypeError, match="not str"):
        t ** "a"
    with pytest.raises(TypeError, match="not bool"):
        t**True
    with pytest.raises(ValueError, match="at least one of min and max"):
        t.clamp()
    with pytest.raises(TypeError, match="not Tensor"):
        t.clamp(minitorch.tensor([1.0]))
    with pytest.raises(TypeError, match="at least one tensor"):
        minitorch.maximum(1.0, 2.0)
    with pytest.raises(IndexingError, match="do not broadcast"):
        minitorch.minimum(t, minitorch.zeros((2,)))
    with pytest.raises(TypeError, match="tensor condition"):
        minitorch.where(True, t, t)
    with pytest.raises(TypeError):
        _ = t >= "a"


GRADIENT_CASES: dict[str, tuple[Callable[..., Tensor], Callable[[np.random.Generator], list]]] = {
    "tanh": (lambda x: x.tanh(), lambda r: [r.normal(size=(2, 3))]),
    "sqrt": (lambda x: x.sqrt(), lambda r: [r.uniform(0.5, 3.0, (2, 3))]),
    "abs": (lambda x: x.abs(), lambda r: [r.choice([-1, 1], (2, 3)) * r.uniform(0.1, 2, (2, 3))]),
    "clamp": (
        lambda x: x.clamp(-0.5, 0.5),
        lambda r: [np.array([[-1.0, -0.3, 0.2], [0.4, 0.7, 2.0]])],
    ),
    "pow_scalar": (lambda x: x**3, lambda r: [r.normal(size=(3, 2))]),
    "pow_tensors": (lambda x, y: x**y, lambda r: [r.uniform(0.5, 2, (2, 3)), r.normal(size=(3,))]),
    "rpow": (lambda x: 1.5**x, lambda r: [r.normal(size=(2, 2))]),
    "maximum": (minitorch.maximum, lambda r: [r.normal(size=(2, 3)), r.normal(size=(2, 1))]),
    "minimum": (
        lambda x, y: minitorch.minimum(x.permute(1, 0), y),
        lambda r: [r.normal(size=(3, 2)), r.normal(size=(3,))],
    ),
    "where": (
        lambda x, y: minitorch.where(x > 0.0, x * 2.0, y),
        lambda r: [r.normal(size=(2, 3)), r.normal(size=(1, 3))],
    ),
}


@pytest.mark.parametrize("name", list(GRADIENT_CASES))
def test_math_gradients_match_central_differences(backend: TensorBackend, name: str) -> None:
    cpu_only(backend)
    f, make = GRADIENT_CASES[name]
    check_gradients(f, make(np.random.default_rng(3)), backend)


def test_maximum_and_minimum_split_the_gradient_at_ties(backend: TensorBackend) -> None:
    a = minitorch.tensor([1.0, 2.0, 3.0], backend=backend, requires_grad=True)
    b = minitorch.tensor([1.0, 1.0, 3.0], backend=backend, requires_grad=True)
    minitorch.maximum(a, b).sum().backward()
    assert a.grad is not None and b.grad is not None
    assert a.grad.tolist() == [0.5, 1.0, 0.5] and b.grad.tolist() == [0.5, 0.0, 0.5]
    a.zero_grad_()
    minitorch.minimum(a, 2.0).sum().backward()
    assert a.grad.tolist() == [1.0, 0.5, 0.0]


# Reductions -------------------------------------------------------------------------------


def keep(result: Any, dim: int | None) -> np.ndarray:
    """NumPy's reduction in minitorch's convention: the dim kept, everything as shape (1,)."""
    return np.asarray(result, dtype=np.float64).reshape(-1 if dim is None else np.shape(result))


def test_reductions_match_numpy(backend: TensorBackend) -> None:
    @st.composite
    def cases(draw: st.DrawFn) -> tuple[Tensor, np.ndarray, int | None]:
        t, a = draw(tensor_arrays(backend, elements=small_ints | small_floats))
        dim = draw(st.none() | st.integers(-t.dims, t.dims - 1))
        return t, a, dim

    def check(case: tuple[Tensor, np.ndarray, int | None]) -> None:
        t, a, dim = case
        kw: dict[str, Any] = {"axis": dim, "keepdims": dim is not None}
        assert_same(t.max(dim), keep(a.max(**kw), dim))
        assert_same(t.min(dim), keep(a.min(**kw), dim))
        # The first position of the extremum (ties are common with small ints).
        assert_same(t.argmax(dim), keep(np.argmax(a, **kw), dim))
        assert_same(t.argmin(dim), keep(np.argmin(a, **kw), dim))
        assert_same(t.var(dim), keep(a.var(**kw), dim), rtol=1e-6)
        assert_same(t.std(dim), keep(a.std(**kw), dim), rtol=1e-6)
        n = a.size if dim is None else a.shape[dim]
        if n > 1:
            assert_same(t.var(dim, correction=1), keep(a.var(ddof=1, **kw), dim), rtol=1e-6)
        if dim is not None:
            e = np.exp(a - a.max(dim, keepdims=True))
            assert_same(t.softmax(dim), e / e.sum(dim, keepdims=True), rtol=1e-9)
            log = (a - a.max(dim, keepdims=True)) - np.log(e.sum(dim, keepdims=True))
            # log adds the course's EPS = 1e-6 (to a sum of at least 1).
            np.testing.assert_allclose(t.log_softmax(dim).to_numpy(), log, rtol=0, atol=2e-6)

    prop(backend, check, cases())


def test_reductions_propagate_nan_and_argmax_finds_it(backend: TensorBackend) -> None:
    t = minitorch.tensor_from_numpy(np.array([[1.0, math.nan, 3.0], [4.0, 5.0, 6.0]]), backend)
    assert np.isnan(t.max().item()) and np.isnan(t.min(1)[0, 0])
    assert t.max(1)[1, 0] == 6.0
    assert t.argmax(1).tolist() == [[1.0], [2.0]] and t.argmin(1).tolist() == [[1.0], [0.0]]
    assert t.argmax().tolist() == [1.0]


REDUCTION_GRADIENTS: dict[str, Callable[[Tensor], Tensor]] = {
    "max": lambda x: x.max(1),
    "min_all": lambda x: x.min(),
    "var": lambda x: x.var(0),
    "std": lambda x: x.std(1, correction=1),
    "std_all": lambda x: x.std(),
    "softmax": lambda x: x.softmax(1),
    "log_softmax": lambda x: x.log_softmax(0),
}


@pytest.mark.parametrize("name", list(REDUCTION_GRADIENTS))
def test_reduction_gradients_match_central_differences(backend: TensorBackend, name: str) -> None:
    cpu_only(backend)
    a = np.random.default_rng(4).normal(size=(3, 4))  # distinct values
    f = REDUCTION_GRADIENTS[name]
    check_gradients(f, [a], backend)
    check_gradients(lambda x: f(x.permute(1, 0)), [a.T.copy()], backend)  # a permuted layout


def test_max_shares_the_gradient_between_ties(backend: TensorBackend) -> None:
    t = minitorch.tensor([[2.0, 1.0, 2.0], [0.0, 3.0, 3.0]], backend=backend, requires_grad=True)
    t.max(1).sum().backward()
    assert t.grad is not None and t.grad.tolist() == [[0.5, 0.0, 0.5], [0.0, 0.5, 0.5]]
    t.zero_grad_()
    t.min().sum().backward()
    assert t.grad.tolist() == [[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]]
    assert t.argmax(1).history is None  # not differentiable


def test_reduction_errors() -> None:
    t = minitorch.tensor_from_numpy(np.ones((2, 3)))
    with pytest.raises(IndexingError, match="out of range"):
        t.max(2)
    with pytest.raises(TypeError):
        t.argmax(1.0)
    with pytest.raises(TypeError):
        t.var(correction=0.5)
    with pytest.raises(ValueError, match="empty"):
        minitorch.zeros((0, 3)).max()
    with pytest.raises(ValueError, match="empty"):
        minitorch.zeros((0, 3)).argmin(0)
    assert minitorch.zeros((0, 3)).max(1).shape == (0, 1)  # nothing to reduce in no slice


# no_grad -----------------------------------------------------------------------------------


def test_no_grad_as_context_manager_nests_and_restores_after_errors() -> None:
    x = minitorch.tensor([1.0, 2.0], requires_grad=True)
    assert minitorch.is_grad_enabled()
    with minitorch.no_grad():
        y = x * 2.0 + x.exp()
        assert y.history is None and not y.requires_grad()
        with minitorch.no_grad():
            assert not minitorch.is_grad_enabled()
        assert not minitorch.is_grad_enabled()  # the inner block restored "off"
    assert minitorch.is_grad_enabled()
    with pytest.raises(ZeroDivisionError):
        with minitorch.no_grad():
            _ = 1 / 0
    assert minitorch.is_grad_enabled()
    z = x * 2.0
    assert z.history is not None and z.history.last_fn is not None


def test_no_grad_as_decorator_with_and_without_parentheses() -> None:
    x = minitorch.tensor([1.0, 2.0], requires_grad=True)

    @minitorch.no_grad()
    def double(t: Tensor) -> Tensor:
        """Doubles."""
        return t * 2.0

    @minitorch.no_grad
    def fails(t: Tensor) -> Tensor:
        raise KeyError("inside")

    assert double(x).history is None and double.__doc__ == "Doubles."
    with pytest.raises(KeyError):
        fails(x)
    assert minitorch.is_grad_enabled() and (x * 2.0).requires_grad()
    with pytest.raises(TypeError, match="no argument or a function"):
        minitorch.no_grad(3)


def test_no_grad_training_step_updates_parameters_without_history(
    backend: TensorBackend,
) -> None:
    w = minitorch.Parameter(minitorch.tensor([1.0, -2.0], backend=backend))
    (w.value * w.value).sum().backward()
    with minitorch.no_grad():
        w.value[:] = w.value - w.value.grad * 0.25  # an in-place update of the leaf
    assert w.value.tolist() == [0.5, -1.0] and w.value.is_leaf()


# NumPy interop ------------------------------------------------------------------------------


def test_numpy_conversion_copies(backend: TensorBackend) -> None:
    a = np.arange(6.0).reshape(2, 3)
    t = minitorch.tensor_from_numpy(a, backend)
    for out in (np.asarray(t), np.array(t), t.numpy(), np.asarray(t[:, 1:])):
        assert isinstance(out, np.ndarray) and out.dtype == np.float64
    np.testing.assert_array_equal(np.asarray(t.permute(1, 0)), a.T)
    np.testing.assert_array_equal(np.asarray(t[:, 1:]), a[:, 1:])
    assert np.asarray(t, dtype=np.float32).dtype == np.float32
    out = t.numpy()
    out[0, 0] = 100.0
    assert t[0, 0] == 0.0  # a copy (PyTorch's numpy() would share memory)
    assert t.tolist() == a.tolist() and t[1].tolist() == [3.0, 4.0, 5.0]
    with pytest.raises(ValueError, match="only by copying"):
        np.array(t, copy=False)


def test_numpy_scalars_on_the_left_keep_autodiff() -> None:
    x = minitorch.tensor([1.0, 2.0], requires_grad=True)
    for y in (np.float64(3.0) * x, np.float32(3.0) + x, np.int64(3) - x, np.float64(2.0) ** x):
        assert isinstance(y, Tensor) and y.requires_grad()
    assert (np.float64(1.5) < x).tolist() == [0.0, 1.0]
    with pytest.raises(TypeError, match="ndarray"):
        np.ones(2) * x


# Factories and seeds ----------------------------------------------------------------------


def test_factories_match_numpy(backend: TensorBackend) -> None:
    for args, expected in [
        ((5,), np.arange(5.0)),
        ((2, 7, 2), np.arange(2.0, 7.0, 2.0)),
        ((1.0, 0.0, -0.25), np.arange(1.0, 0.0, -0.25)),
        ((0.0, 1.0, 0.3), np.arange(0.0, 1.0, 0.3)),
        ((0,), np.arange(0.0)),
    ]:
        t = minitorch.arange(*args, backend=backend)
        assert t.backend is backend
        np.testing.assert_allclose(t.to_numpy(), expected, rtol=1e-15)
    assert_same(minitorch.full((2, 3), 2.5, backend=backend), np.full((2, 3), 2.5))
    assert_same(minitorch.eye(3, backend=backend), np.eye(3))
    assert_same(minitorch.eye(2, 4, backend=backend), np.eye(2, 4))
    assert_same(minitorch.eye(4, 2, backend=backend), np.eye(4, 2))
    t = minitorch.tensor_from_numpy(np.ones((2, 1, 3)), backend)
    for like, value in ((minitorch.zeros_like(t), 0.0), (minitorch.ones_like(t), 1.0)):
        assert like.backend is backend and not like.requires_grad()
        assert_same(like, np.full((2, 1, 3), value))
    other = minitorch.ones_like(t, backend=minitorch.SimpleBackend, requires_grad=True)
    assert other.backend is minitorch.SimpleBackend and other.requires_grad()
    n = minitorch.randn((3, 4), backend=backend)
    assert n.shape == (3, 4) and n.backend is backend and not n.requires_grad()
    assert minitorch.randn((2,), requires_grad=True).requires_grad()


def test_randn_is_standard_normal() -> None:
    minitorch.manual_seed(0)
    draws = minitorch.randn((20001,)).to_numpy()  # odd: the last Box-Muller pair is cut
    assert draws.shape == (20001,) and np.isfinite(draws).all()
    assert abs(draws.mean()) < 0.03 and abs(draws.std() - 1.0) < 0.03
    assert abs((np.abs(draws) < 1.0).mean() - 0.6827) < 0.02


def test_factory_errors() -> None:
    with pytest.raises(ValueError, match="cannot go in steps"):
        minitorch.arange(1, 0)
    with pytest.raises(ValueError, match="non-zero step"):
        minitorch.arange(0, 1, 0)
    with pytest.raises(ValueError, match="finite"):
        minitorch.arange(math.nan)
    with pytest.raises(TypeError, match="end must be a number"):
        minitorch.arange("3")
    with pytest.raises(TypeError, match="fill_value"):
        minitorch.full((2,), None)
    with pytest.raises(TypeError):
        minitorch.eye(2.0)
    with pytest.raises(IndexingError, match="Negative dimension"):
        minitorch.randn((-1,))
    with pytest.raises(TypeError, match="takes a Tensor, not ndarray"):
        minitorch.zeros_like(np.zeros(3))
    with pytest.raises(TypeError, match="backend must be a TensorBackend"):
        minitorch.ones_like(minitorch.zeros((2,)), backend="fast")
    with pytest.raises(TypeError, match="manual_seed takes an int"):
        minitorch.manual_seed(1.5)


def test_manual_seed_makes_every_random_draw_repeat() -> None:
    def draws(seed: int) -> list[np.ndarray]:
        minitorch.manual_seed(seed)
        linear = minitorch.Linear(3, 2)
        conv = minitorch.Conv2d(1, 2, 2)
        x = minitorch.ones((4, 5))
        return [
            minitorch.rand((3,)).to_numpy(),
            minitorch.randn((3,)).to_numpy(),
            linear.weight.value.to_numpy(),
            conv.weight.value.to_numpy(),
            minitorch.dropout(x, 0.5).to_numpy(),
            minitorch.Dropout(0.5)(x).to_numpy(),
        ]

    first, again, other = draws(3), draws(3), draws(4)
    for a, b, c in zip(first, again, other):
        np.testing.assert_array_equal(a, b)
        assert not np.array_equal(a, c)


# CUDA: offset views of device arrays ------------------------------------------------------


@pytest.mark.cuda
@pytest.mark.skipif(not numba.cuda.is_available(), reason="numba.cuda is not available")
def test_cuda_offset_views_share_device_storage() -> None:
    cuda = minitorch.TensorBackend(minitorch.CudaOps)
    a = np.arange(24.0).reshape(4, 6)
    t = minitorch.tensor_from_numpy(a, cuda)
    view = t[1:, 2::2]
    assert view.storage_offset() == 8 and hasattr(view._tensor._storage, "copy_to_host")
    assert_same(view * 2.0, a[1:, 2::2] * 2.0)
    assert_same(view.sum(0), a[1:, 2::2].sum(0, keepdims=True))
    assert_same(view @ t[:2, 1:3].T, a[1:, 2::2] @ a[:2, 1:3].T)
    t[1:, 2::2] = minitorch.tensor([-1.0, -2.0], backend=cuda)
    a[1:, 2::2] = [-1.0, -2.0]
    assert_same(t, a)
    assert_same(view, a[1:, 2::2])  # the earlier view sees the write
    x = minitorch.tensor_from_numpy(a, cuda, requires_grad=True)
    x[2:, 1].sum().backward()
    expected = np.zeros_like(a)
    expected[2:, 1] = 1.0
    assert x.grad is not None
    assert_same(x.grad, expected)


def test_writing_a_row_view_leaves_the_rest_of_the_storage_alone(backend: TensorBackend) -> None:
    """Regression: the flat elementwise kernel ran over the whole storage of a row view
    (longer than the row), reading past the source and writing into the next row."""
    t = minitorch.zeros((3, 4), backend=backend)
    t[1] = 7.0
    t[2] = 9.0
    t[0] = minitorch.tensor([1.0, 2.0, 3.0, 4.0], backend=backend)
    t[1] = minitorch.tensor([5.0, 6.0, 7.0, 8.0], backend=backend)
    np.testing.assert_array_equal(t.to_numpy(), [[1, 2, 3, 4], [5, 6, 7, 8], [9, 9, 9, 9]])
