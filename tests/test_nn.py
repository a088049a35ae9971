"""Pooling, max, softmax, dropout and losses against NumPy (contract section 8)."""

from __future__ import annotations

import random
from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from strategies import (
    assert_close,
    assert_exact,
    inverse_permutation,
    small_floats,
    small_ints,
    tensor_arrays,
)

import minitorch
from minitorch import IndexingError, Tensor, TensorBackend, nn


def run(backend: TensorBackend, check: Callable[..., None], *strategies: object) -> None:
    """Run ``check`` as a small hypothesis property (fewer examples on CUDA)."""
    configured = settings(
        max_examples=3 if backend.cuda else 15,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    configured(given(*strategies)(check))()


@st.composite
def distinct(draw: st.DrawFn, backend: TensorBackend, shape: tuple[int, ...]) -> Tensor:
    """A (usually permuted) tensor whose values are all at least 1 apart, so max has no
    ties, not even after grad_check's 1e-6 nudge."""
    size = int(np.prod(shape))
    values = np.array(draw(st.permutations(range(size))), dtype=np.float64) * 1.7 - 40.0
    order = draw(st.permutations(range(len(shape))))
    base = values.reshape([shape[i] for i in inverse_permutation(order)])
    return minitorch.tensor_from_numpy(base, backend=backend).permute(*order)


@st.composite
def pool_inputs(draw: st.DrawFn) -> tuple[tuple[int, int, int, int], tuple[int, int]]:
    """A (B, C, H, W) shape and a kernel that divides it, at most ~50 elements."""
    kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    h, w = kh * draw(st.integers(1, 2)), kw * draw(st.integers(1, 2))
    batch, channel = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    return (batch, channel, h, w), (kh, kw)


def blocks(x: np.ndarray, kh: int, kw: int) -> np.ndarray:
    """NumPy tiling: (B, C, H, W) -> (B, C, H/kh, W/kw, kh*kw), blocks row by row."""
    b, c, h, w = x.shape
    t = x.reshape(b, c, h // kh, kh, w // kw, kw).transpose(0, 1, 2, 4, 3, 5)
    return t.reshape(b, c, h // kh, w // kw, kh * kw)


# Tiling and pooling -------------------------------------------------------------


def test_tile_matches_numpy(backend: TensorBackend) -> None:
    @st.composite
    def case(draw: st.DrawFn) -> tuple[Tensor, np.ndarray, tuple[int, int]]:
        shape, kernel = draw(pool_inputs())
        t, a = draw(tensor_arrays(backend, shape))
        return t, a, kernel

    def check(data: tuple[Tensor, np.ndarray, tuple[int, int]]) -> None:
        t, a, (kh, kw) = data
        tiled, new_h, new_w = minitorch.tile(t, (kh, kw))
        assert (new_h, new_w) == (a.shape[2] // kh, a.shape[3] // kw)
        assert_exact(tiled, blocks(a, kh, kw))

    run(backend, check, case())


@pytest.mark.parametrize(
    ("pool", "reduce"),
    [(minitorch.avgpool2d, np.mean), (minitorch.maxpool2d, np.max)],
    ids=["avg", "max"],
)
def test_pool_matches_numpy(
    backend: TensorBackend, pool: Callable[..., Tensor], reduce: Callable[..., np.ndarray]
) -> None:
    @st.composite
    def case(draw: st.DrawFn) -> tuple[Tensor, np.ndarray, tuple[int, int]]:
        shape, kernel = draw(pool_inputs())
        t, a = draw(tensor_arrays(backend, shape))
        return t, a, kernel

    def check(data: tuple[Tensor, np.ndarray, tuple[int, int]]) -> None:
        t, a, kernel = data
        assert_close(pool(t, kernel), reduce(blocks(a, *kernel), axis=4))

    run(backend, check, case())


@pytest.mark.parametrize("pool", [minitorch.avgpool2d, minitorch.maxpool2d], ids=["avg", "max"])
def test_pool_gradients(backend: TensorBackend, pool: Callable[..., Tensor]) -> None:
    @st.composite
    def case(draw: st.DrawFn) -> tuple[Tensor, tuple[int, int]]:
        shape, kernel = draw(pool_inputs())
        return draw(distinct(backend, shape)), kernel

    def check(data: tuple[Tensor, tuple[int, int]]) -> None:
        t, kernel = data
        minitorch.grad_check(lambda x: pool(x, kernel), t)

    run(backend, check, case())


def test_avgpool_contract_example(backend: TensorBackend) -> None:
    t = minitorch.tensor([[[[1, 2, 3, 4], [5, 6, 7, 8]]]], backend=backend)
    assert_exact(minitorch.avgpool2d(t, (2, 2)), [[[[3.5, 5.5]]]])
    assert_exact(minitorch.maxpool2d(t, (1, 2)), [[[[2, 4], [6, 8]]]])


@pytest.mark.parametrize(
    ("shape", "kernel"),
    [((1, 1, 4, 4), (3, 2)), ((1, 1, 4, 4), (2, 3)), ((1, 4, 4), (2, 2)), ((1, 1, 4, 4), (0, 2))],
)
def test_pool_shape_errors(
    backend: TensorBackend, shape: tuple[int, ...], kernel: tuple[int, int]
) -> None:
    t = minitorch.zeros(shape, backend=backend)
    with pytest.raises(IndexingError):
        minitorch.avgpool2d(t, kernel)
    with pytest.raises(IndexingError):
        minitorch.maxpool2d(t, kernel)


# Max and argmax -----------------------------------------------------------------


def test_max_and_argmax_match_numpy(backend: TensorBackend) -> None:
    @st.composite
    def case(draw: st.DrawFn) -> tuple[Tensor, np.ndarray, int]:
        t, a = draw(tensor_arrays(backend))
        return t, a, draw(st.integers(-t.dims, t.dims - 1))

    def check(data: tuple[Tensor, np.ndarray, int]) -> None:
        t, a, dim = data
        expected = a.max(axis=dim, keepdims=True)
        assert_exact(minitorch.max(t, dim), expected)
        assert_exact(minitorch.argmax(t, dim), (a == expected).astype(np.float64))

    run(backend, check, case())


def test_max_backward_routes_gradient_to_argmax(backend: TensorBackend) -> None:
    @st.composite
    def case(draw: st.DrawFn) -> tuple[Tensor, int]:
        shape = tuple(draw(st.lists(st.integers(1, 4), min_size=1, max_size=3)))
        t = draw(distinct(backend, shape))
        return t, draw(st.integers(0, len(shape) - 1))

    def check(data: tuple[Tensor, int]) -> None:
        t, dim = data
        a = t.to_numpy()
        t.requires_grad_(True)
        (minitorch.max(t, dim) * 3.0).sum().backward()
        assert_exact(t.grad, 3.0 * (a == a.max(axis=dim, keepdims=True)))
        minitorch.grad_check(lambda x: minitorch.max(x, dim), t)

    run(backend, check, case())


def test_max_accepts_tensor_dim_and_apply(backend: TensorBackend) -> None:
    t = minitorch.tensor([[1, 5, 2], [7, 0, 3]], backend=backend)
    dim = minitorch.tensor([1], backend=backend)
    assert_exact(minitorch.Max.apply(t, dim), [[5], [7]])
    assert_exact(minitorch.max(t, 0), [[7, 5, 3]])


# Softmax and logsoftmax ---------------------------------------------------------


def np_logsoftmax(a: np.ndarray, dim: int) -> np.ndarray:
    shifted = a - a.max(axis=dim, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=dim, keepdims=True))


def test_softmax_and_logsoftmax_match_numpy(backend: TensorBackend) -> None:
    @st.composite
    def case(draw: st.DrawFn) -> tuple[Tensor, np.ndarray, int]:
        t, a = draw(tensor_arrays(backend))
        return t, a, draw(st.integers(0, t.dims - 1))

    def check(data: tuple[Tensor, np.ndarray, int]) -> None:
        t, a, dim = data
        expected = np_logsoftmax(a, dim)
        s = minitorch.softmax(t, dim=dim)
        assert_close(s, np.exp(expected))
        assert_close(s.sum(dim), np.ones(a.max(axis=dim, keepdims=True).shape))
        ls = minitorch.logsoftmax(t, dim)
        assert_close(ls, expected)
        assert_close(ls.exp(), s.to_numpy())

    run(backend, check, case())


def test_logsoftmax_stable_near_minus_100(backend: TensorBackend) -> None:
    a = np.array([[-100.0, -100.5, -99.7], [-100.0, -100.0, -100.0]])
    t = minitorch.tensor(a.tolist(), backend=backend)
    assert_close(minitorch.logsoftmax(t, 1), np_logsoftmax(a, 1))
    assert_close(minitorch.softmax(t, 1), np.exp(np_logsoftmax(a, 1)))
    # Large positive inputs must not overflow either.
    assert_close(minitorch.logsoftmax(-t, 1), np_logsoftmax(-a, 1))


@pytest.mark.parametrize("fn", [minitorch.softmax, minitorch.logsoftmax], ids=["soft", "log"])
def test_softmax_gradients(backend: TensorBackend, fn: Callable[..., Tensor]) -> None:
    @st.composite
    def case(draw: st.DrawFn) -> tuple[Tensor, int, np.ndarray]:
        t, _ = draw(tensor_arrays(backend))
        weights = draw(st.lists(st.floats(-2, 2), min_size=t.size, max_size=t.size))
        return t, draw(st.integers(0, t.dims - 1)), np.array(weights).reshape(t.shape)

    def check(data: tuple[Tensor, int, np.ndarray]) -> None:
        t, dim, weights = data
        # A weighted sum: the plain sum of a softmax is constant, so its gradient is 0.
        w = minitorch.tensor_from_numpy(weights, backend=backend)
        minitorch.grad_check(lambda x: fn(x, dim) * w, t)

    run(backend, check, case())


# Dropout ------------------------------------------------------------------------


def test_dropout_rates_zero_one_and_ignore(backend: TensorBackend) -> None:
    a = np.arange(1.0, 13.0).reshape(3, 4)
    t = minitorch.tensor(a.tolist(), backend=backend)
    assert_exact(minitorch.dropout(t, 0.0), a)
    assert_exact(minitorch.dropout(t, 1.0), np.zeros_like(a))
    assert_exact(minitorch.dropout(t, 0.7, ignore=True), a)
    assert minitorch.dropout(t, 0.5).shape == t.shape


def test_dropout_rate_is_drop_probability_and_seeded(backend: TensorBackend) -> None:
    t = minitorch.ones((40, 50), backend=backend)
    random.seed(3)
    kept = minitorch.dropout(t, 0.3).to_numpy()
    assert set(np.unique(kept)) <= {0.0, 1.0}  # survivors are not rescaled
    assert abs((kept == 0).mean() - 0.3) < 0.05
    random.seed(3)
    np.testing.assert_array_equal(minitorch.dropout(t, 0.3).to_numpy(), kept)


def test_dropout_gradient_is_the_mask(backend: TensorBackend) -> None:
    t = minitorch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], backend=backend, requires_grad=True)
    random.seed(7)
    out = minitorch.dropout(t, 0.5)
    out.sum().backward()
    assert_exact(t.grad, (out.to_numpy() != 0).astype(np.float64))


@pytest.mark.parametrize("rate", [-0.1, 1.5])
def test_dropout_rate_out_of_range(backend: TensorBackend, rate: float) -> None:
    with pytest.raises(ValueError, match="rate"):
        minitorch.dropout(minitorch.zeros((2,), backend=backend), rate)


# Losses -------------------------------------------------------------------------


@st.composite
def classification(draw: st.DrawFn, backend: TensorBackend) -> tuple[Tensor, np.ndarray, Tensor]:
    """(B, C) logits, their array, and (B,) integer class targets stored as floats."""
    batch, classes = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    logits, a = draw(tensor_arrays(backend, (batch, classes), st.floats(-10, 10)))
    labels = draw(st.lists(st.integers(0, classes - 1), min_size=batch, max_size=batch))
    return logits, a, minitorch.tensor(labels, backend=backend)


def test_cross_entropy_and_nll_match_numpy(backend: TensorBackend) -> None:
    def check(data: tuple[Tensor, np.ndarray, Tensor]) -> None:
        logits, a, target = data
        labels = target.to_numpy().astype(int)
        logp = np_logsoftmax(a, 1)
        expected = -logp[np.arange(len(labels)), labels].mean()
        assert_close(nn.cross_entropy(logits, target), [expected])
        assert_close(nn.nll_loss(nn.logsoftmax(logits, 1), target), [expected])
        minitorch.grad_check(lambda x: nn.cross_entropy(x, target), logits)

    run(backend, check, classification(backend))


def test_binary_cross_entropy_matches_numpy(backend: TensorBackend) -> None:
    @st.composite
    def case(draw: st.DrawFn) -> tuple[Tensor, np.ndarray, Tensor, np.ndarray]:
        shape = tuple(draw(st.lists(st.integers(1, 4), min_size=1, max_size=2)))
        p, np_p = draw(tensor_arrays(backend, shape, st.floats(0.05, 0.95)))
        y, np_y = draw(tensor_arrays(backend, shape, st.sampled_from([0.0, 1.0])))
        return p, np_p, y, np_y

    def check(data: tuple[Tensor, np.ndarray, Tensor, np.ndarray]) -> None:
        p, np_p, y, np_y = data
        expected = -(np_y * np.log(np_p) + (1 - np_y) * np.log(1 - np_p)).mean()
        assert_close(nn.binary_cross_entropy(p, y), [expected])
        minitorch.grad_check(nn.binary_cross_entropy, p, y)

    run(backend, check, case())


def test_one_hot(backend: TensorBackend) -> None:
    target = minitorch.tensor([2, 0, 1], backend=backend)
    assert_exact(nn.one_hot(target, 3), np.eye(3)[[2, 0, 1]])
    # -0.0 is class 0.
    assert_exact(nn.one_hot(minitorch.tensor([-0.0, 1], backend=backend), 2), np.eye(2))


@pytest.mark.parametrize(
    ("logits_shape", "labels", "error"),
    [
        ((2, 3), [0, 3], ValueError),  # class out of range
        ((2, 3), [0, 1.5], ValueError),  # not a whole number
        ((2, 3), [0, -1], ValueError),  # negative
        ((2, 3), [0, -0.5], ValueError),  # negative, truncating to 0
        ((2, 3), [0, float("nan")], ValueError),
        ((2, 3), [0, float("inf")], ValueError),
        ((2, 3), [0, 2.0**63], ValueError),  # past int64
        ((2, 3), [0, 1, 2], IndexingError),  # batch mismatch
        ((6,), [0, 1], IndexingError),  # logits not (B, C)
    ],
)
def test_loss_input_errors(
    backend: TensorBackend, logits_shape: tuple[int, ...], labels: list[float], error: type
) -> None:
    logits = minitorch.zeros(logits_shape, backend=backend)
    with pytest.raises(error):
        nn.cross_entropy(logits, minitorch.tensor(labels, backend=backend))


def test_binary_cross_entropy_shape_mismatch(backend: TensorBackend) -> None:
    with pytest.raises(IndexingError):
        nn.binary_cross_entropy(
            minitorch.zeros((2, 3), backend=backend), minitorch.zeros((3, 2), backend=backend)
        )


# Pooling kernels against the composition they replace ----------------------------


@pytest.mark.parametrize("which", ["avg", "max"])
def test_pool_kernels_equal_tile_composition(
    backend: TensorBackend, dtype: np.dtype, which: str
) -> None:
    """Values, dtype and gradient of the pooling kernels equal ``tile`` and a reduce
    (``Max``'s gradient to every tie included: few distinct values make ties)."""

    def composed(t: Tensor, kernel: tuple[int, int]) -> Tensor:
        tiled, new_h, new_w = minitorch.tile(t, kernel)
        pooled = tiled.mean(4) if which == "avg" else minitorch.max(tiled, 4)
        return pooled.view(t.shape[0], t.shape[1], new_h, new_w)

    pool = minitorch.avgpool2d if which == "avg" else minitorch.maxpool2d

    def check(data: st.DataObject) -> None:
        shape, kernel = data.draw(pool_inputs())
        elements = data.draw(st.sampled_from([small_ints, small_floats]))
        t, _ = data.draw(tensor_arrays(backend, shape, elements=elements, dtype=dtype))
        g, _ = data.draw(tensor_arrays(backend, pool(t, kernel).shape, dtype=dtype))
        grads = []
        for fn in (pool, composed):
            x = t.detach().requires_grad_(True)
            out = fn(x, kernel)
            assert out.dtype == dtype
            (out * g).sum().backward()
            grads.append((out.to_numpy(), x.grad.to_numpy()))
        np.testing.assert_allclose(grads[0][0], grads[1][0], rtol=1e-6, atol=1e-5)
        np.testing.assert_allclose(grads[0][1], grads[1][1], rtol=1e-6, atol=1e-5)

    run(backend, check, st.data())


def _window_fold(windows: np.ndarray, which: str) -> np.ndarray:
    """Each window (last axis) folded in row order in its own dtype, as the kernels
    fold: ``((start + w0) + w1) + ...``, the mean divided by the count at the end."""
    with np.errstate(invalid="ignore"):  # inf - inf is NaN, as in the kernels
        return _fold(windows, which)


def _fold(windows: np.ndarray, which: str) -> np.ndarray:
    if which == "avg":
        acc = np.zeros(windows.shape[:-1], windows.dtype)
        for e in range(windows.shape[-1]):
            acc = acc + windows[..., e]
        return acc / windows.dtype.type(windows.shape[-1])
    acc = np.full(windows.shape[:-1], -np.inf, windows.dtype)
    for e in range(windows.shape[-1]):
        v = windows[..., e]
        acc = np.where((v > acc) | np.isnan(v), v, acc)
    return acc


@pytest.mark.parametrize("which", ["avg", "max"])
def test_pool_values_fold_each_window_in_row_order(
    backend: TensorBackend, dtype: np.dtype, which: str
) -> None:
    """Bit for bit the row-order fold, for every window size: the kernels unroll
    2 x 2 windows, which must add (or compare) in the same order as the loops."""
    pool = minitorch.avgpool2d if which == "avg" else minitorch.maxpool2d

    def check(data: st.DataObject) -> None:
        shape, kernel = data.draw(pool_inputs())
        if data.draw(st.booleans()):  # the unrolled window, 1 to 3 windows a side
            kernel = (2, 2)
            shape = (*shape[:2], 2 * data.draw(st.integers(1, 3)), 2 * data.draw(st.integers(1, 3)))
        # Sums of these depend on their order in either dtype ((1 + 2**-30) - 1 is 0 in
        # float32, 2**-30 the other way round); NaN, -0.0 and infinities as well.
        elements = st.sampled_from([1.0, -1.0, 2.0**-30, 2.0**-60, 0.1, 1e6, -0.0, np.nan,
                                    np.inf, -np.inf])  # fmt: skip
        t, a = data.draw(tensor_arrays(backend, shape, elements=elements, dtype=dtype))
        expected = _window_fold(blocks(a.astype(dtype), *kernel), which)
        np.testing.assert_array_equal(pool(t, kernel).to_numpy(), expected)

    run(backend, check, st.data())


@pytest.mark.parametrize("which", ["avg", "max"])
def test_pool_gradients_bit_for_bit(backend: TensorBackend, dtype: np.dtype, which: str) -> None:
    """Max: the window's gradient where the element equals the window's maximum (every
    tie; a NaN maximum equals nothing), else 0. Avg: the window's gradient / (kh kw).
    Exactly, in the dtype, for unrolled 2 x 2 windows and the others."""
    pool = minitorch.avgpool2d if which == "avg" else minitorch.maxpool2d

    def unblock(w: np.ndarray, kh: int, kw: int) -> np.ndarray:
        b, c, rows, cols, _ = w.shape
        t = w.reshape(b, c, rows, cols, kh, kw).transpose(0, 1, 2, 4, 3, 5)
        return t.reshape(b, c, rows * kh, cols * kw)

    def check(data: st.DataObject) -> None:
        shape, kernel = data.draw(pool_inputs())
        if data.draw(st.booleans()):
            kernel = (2, 2)
            shape = (*shape[:2], 2 * data.draw(st.integers(1, 3)), 2 * data.draw(st.integers(1, 3)))
        values = st.sampled_from([1.0, -1.0, 0.5, 0.0, -0.0, 3.0, np.nan, np.inf, -np.inf])
        t, a = data.draw(tensor_arrays(backend, shape, elements=values, dtype=dtype))
        g, ga = data.draw(tensor_arrays(backend, pool(t, kernel).shape, dtype=dtype))
        x = t.detach().requires_grad_(True)
        (pool(x, kernel) * g).sum().backward()
        windows = blocks(a.astype(dtype), *kernel)
        ga = ga.astype(dtype)[..., None]
        if which == "avg":
            expected = np.broadcast_to(ga / dtype.type(kernel[0] * kernel[1]), windows.shape)
        else:
            expected = np.where(windows == _window_fold(windows, "max")[..., None], ga, 0)
        np.testing.assert_array_equal(x.grad.to_numpy(), unblock(expected, *kernel))

    run(backend, check, st.data())


def test_avgpool_adds_each_window_in_row_order(backend: TensorBackend, dtype: np.dtype) -> None:
    """Windows whose sum depends on the order, in float64 (the first) and in float32
    (the second): regression for the unrolled 2 x 2 window adding a column first."""
    a = np.array([[[[1.0, 2.0**-60, 1.0, 2.0**-30], [-1.0, 2.0**-30, -1.0, 2.0**-25]]]])
    expected = _window_fold(blocks(a.astype(dtype), 2, 2), "avg")
    t = minitorch.tensor_from_numpy(a, backend=backend, dtype=dtype)
    np.testing.assert_array_equal(minitorch.avgpool2d(t, (2, 2)).to_numpy(), expected)
    transposed = minitorch.tensor_from_numpy(a.transpose(0, 1, 3, 2).copy(), backend=backend,
                                             dtype=dtype).permute(0, 1, 3, 2)  # fmt: skip
    np.testing.assert_array_equal(minitorch.avgpool2d(transposed, (2, 2)).to_numpy(), expected)


def test_maxpool_propagates_nan_and_starts_at_minus_inf(backend: TensorBackend) -> None:
    """A NaN makes its window's maximum NaN and passes no gradient; a window of -inf
    pools to -inf; the other windows are unaffected."""
    nan, inf = float("nan"), float("inf")
    a = np.array(
        [[[[1.0, nan, 3.0, 4.0], [-inf, -inf, 2.0, 5.0]], [[nan, 0, 7, 7], [-inf, 1, 7, 6]]]]
    )
    t = minitorch.tensor_from_numpy(a, backend=backend).permute(0, 1, 3, 2)
    x = t.detach().requires_grad_(True)
    out = minitorch.maxpool2d(x, (2, 2))
    expected = np.array([[[[nan], [5.0]], [[nan], [7.0]]]])
    np.testing.assert_array_equal(out.to_numpy(), expected)
    minus_inf = minitorch.tensor_from_numpy(np.full((1, 1, 2, 2), -inf), backend=backend)
    assert_exact(minitorch.maxpool2d(minus_inf, (2, 2)), [[[[-inf]]]])
    out.sum().backward()
    grad = np.zeros_like(a)
    grad[0, 0, 1, 3] = 1.0  # the 5
    grad[0, 1, 0, 2] = grad[0, 1, 0, 3] = grad[0, 1, 1, 2] = 1.0  # the three tied 7s
    np.testing.assert_array_equal(x.grad.to_numpy(), grad.transpose(0, 1, 3, 2))
