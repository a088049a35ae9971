"""Hostile input: every public path gives the right answer or a clear error (issue 8).

Layouts that reach outside their storage, views of layouts that are not
row-major, strided NumPy storage, too many dims, extreme values for max and
softmax, division by zero, non-differentiable points in ``grad_check``, huge
factory shapes and malformed arguments. Cases that crashed the interpreter
before their fix run in a subprocess, so a regression fails the test instead of
killing the run.
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import subprocess
import sys
import textwrap
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numba
import numpy as np
import pytest
from hypothesis import strategies as st
from strategies import limits, run_property

import minitorch
from minitorch import IndexingError, Scalar, Tensor, TensorBackend, TensorData, operators
from minitorch.tensor_data import MAX_DIMS

FAST = minitorch.TensorBackend(minitorch.FastOps)
ROOT = Path(__file__).resolve().parent.parent


def run_isolated(code: str) -> list[str]:
    """Run ``code`` in a fresh interpreter on this checkout; its stdout lines."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, (
        f"subprocess died with {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    )
    return proc.stdout.strip().splitlines()


@contextlib.contextmanager
def no_runtime_warnings(backend: TensorBackend) -> Iterator[None]:
    """Turn NumPy's RuntimeWarnings into errors (except under the CUDA simulator,
    which runs kernels on NumPy scalars: a GPU raises no warnings)."""
    with warnings.catch_warnings():
        if not backend.cuda:
            warnings.simplefilter("error", RuntimeWarning)
        yield


def strided_view(storage: np.ndarray, shape: tuple[int, ...], strides: tuple[int, ...]) -> Any:
    """NumPy's reading of a layout over ``storage``: the oracle."""
    return np.lib.stride_tricks.as_strided(
        storage, shape, tuple(s * storage.itemsize for s in strides), writeable=False
    )


# 1. Layouts must stay inside their storage ------------------------------------------


@pytest.mark.kernels
def test_layouts_outside_storage_raise_before_any_kernel() -> None:
    # Each of these read or wrote outside the buffer (a segfault or garbage).
    lines = run_isolated(
        """
        import numpy as np
        import minitorch
        from minitorch import Tensor
        F = minitorch.TensorBackend(minitorch.FastOps)
        cases = [
            (np.zeros(3), (3,), (-10**8,), lambda t: t.exp()),
            (np.arange(9.0), (3, 3), (-1, 5), lambda t: t.to_numpy()),
            (np.arange(9.0), (3, 3), (3, -1), lambda t: t + 0),
            (np.zeros(3), (3,), (10**8,), lambda t: t.sum()),
            (np.zeros(4), (2, 2), (2, 3), lambda t: t.exp()),
            (np.zeros(4), (0, 3), (1, -1), lambda t: t + 0),
        ]
        for storage, shape, strides, use in cases:
            try:
                use(Tensor.make(storage, shape, strides, backend=F))
                print("accepted")
            except minitorch.IndexingError as e:
                print("IndexingError", e)
        """
    )
    assert len(lines) == 6
    for line in lines:
        assert line.startswith("IndexingError")
    assert "negative" in lines[0] and "strides must be >= 0" in lines[0]
    assert "too small" in lines[3] and "reaches position" in lines[3]


@pytest.mark.parametrize(
    "storage_len, shape, strides",
    [(3, (3,), (0,)), (1, (4, 5), (0, 0)), (6, (2, 3), (0, 1)), (0, (0, 4), (7, 9))],
)
def test_zero_strides_and_empty_shapes_stay_allowed(
    backend: TensorBackend, storage_len: int, shape: tuple[int, ...], strides: tuple[int, ...]
) -> None:
    storage = np.arange(1.0, storage_len + 1.0)
    t = Tensor.make(storage, shape, strides, backend=backend)
    expected = strided_view(storage, shape, strides)
    np.testing.assert_array_equal(t.to_numpy(), expected)
    np.testing.assert_array_equal((t + 0).to_numpy(), expected)


@pytest.mark.parametrize(
    "strides, error",
    [((1.5,), TypeError), ((True,), TypeError), ((1, 1), IndexingError), ((-1,), IndexingError)],
)
def test_bad_strides_raise(strides: tuple[Any, ...], error: type[Exception]) -> None:
    with pytest.raises(error):
        TensorData(np.zeros(4), (4,), strides)


# The property: any layout is either refused or read exactly as NumPy reads it.


@st.composite
def layouts(draw: st.DrawFn, max_size: int) -> tuple[int, tuple[int, ...], tuple[int, ...]]:
    """A storage length, shape and strides: any sign, zero strides, size-0 and size-1 dims."""
    dims = draw(st.integers(1, 4))
    shape: list[int] = []
    size = 1
    for _ in range(dims):
        d = draw(st.integers(0, 4) if size * 4 <= max_size else st.integers(0, 1))
        shape.append(d)
        size *= max(d, 1)
    strides = tuple(draw(st.integers(-3, 9)) for _ in range(dims))
    storage_len = draw(st.integers(0, 40))
    return storage_len, tuple(shape), strides


def _layout_is_valid(storage_len: int, shape: tuple[int, ...], strides: tuple[int, ...]) -> bool:
    if any(s < 0 for s in strides):
        return False
    if 0 in shape:
        return True
    return sum((d - 1) * s for d, s in zip(shape, strides)) < storage_len


def test_any_layout_is_refused_or_read_like_numpy(backend: TensorBackend) -> None:
    max_size = limits(backend).max_size

    def check(layout: tuple[int, tuple[int, ...], tuple[int, ...]], data: st.DataObject) -> None:
        storage_len, shape, strides = layout
        storage = np.arange(1.0, storage_len + 1.0)
        if not _layout_is_valid(storage_len, shape, strides):
            with pytest.raises(IndexingError, match="negative|too small"):
                Tensor.make(storage, shape, strides, backend=backend)
            return
        t = Tensor.make(storage, shape, strides, backend=backend)
        expected = np.array(strided_view(storage, shape, strides))
        np.testing.assert_array_equal(t.to_numpy(), expected)
        np.testing.assert_array_equal((t + 0).to_numpy(), expected)
        np.testing.assert_allclose(t.sum().to_numpy(), [expected.sum()], rtol=1e-12)
        dim = data.draw(st.integers(0, len(shape) - 1))
        np.testing.assert_allclose(
            t.sum(dim).to_numpy(), expected.sum(axis=dim, keepdims=True), rtol=1e-12
        )
        order = data.draw(st.permutations(range(len(shape))))
        np.testing.assert_array_equal(t.permute(*order).to_numpy(), expected.transpose(order))
        if t._tensor.is_row_major():
            np.testing.assert_array_equal(t.view(t.size).to_numpy(), expected.reshape(-1))
        else:
            with pytest.raises(IndexingError, match="contiguous"):
                t.view(t.size)
        np.testing.assert_array_equal(t.contiguous().view(t.size).to_numpy(), expected.reshape(-1))

    run_property(backend, check, layouts(max_size), st.data())


# 2. view needs a truly row-major layout ----------------------------------------------


@pytest.mark.parametrize(
    "storage, shape, strides",
    [
        (np.array([1.0, 2.0]), (2, 3), (1, 0)),  # broadcast: non-increasing strides
        (np.arange(6.0), (2, 2), (4, 1)),  # a gap between rows
        (np.arange(8.0), (2, 2, 2), (4, 2, 0)),
    ],
)
def test_view_refuses_layouts_that_are_not_row_major(
    backend: TensorBackend, storage: np.ndarray, shape: tuple[int, ...], strides: tuple[int, ...]
) -> None:
    t = Tensor.make(storage, shape, strides, backend=backend)
    assert t._tensor.is_contiguous()  # the contract's rule still holds...
    assert not t._tensor.is_row_major()  # ...but the values are not in row-major order
    with pytest.raises(IndexingError, match="contiguous"):
        t.view(t.size)
    expected = strided_view(storage, shape, strides).reshape(-1)
    np.testing.assert_array_equal(t.contiguous().view(t.size).to_numpy(), expected)
    assert t.contiguous().view(t.size).sum().item() == pytest.approx(expected.sum())


def test_view_ignores_strides_of_size_one_dims(backend: TensorBackend) -> None:
    t = Tensor.make(np.arange(3.0), (1, 3, 1), (100, 1, 7), backend=backend)
    np.testing.assert_array_equal(t.view(3).to_numpy(), [0.0, 1.0, 2.0])


def test_flatten_and_pooling_read_gapped_layouts(backend: TensorBackend) -> None:
    storage = np.arange(32.0)
    # (1, 2, 2, 2) with a gap after every row of 2: strides never increase.
    shape, strides = (1, 2, 2, 2), (16, 8, 4, 1)
    expected = np.array(strided_view(storage, shape, strides))
    t = Tensor.make(storage, shape, strides, backend=backend)
    flat = minitorch.Flatten()(t)
    np.testing.assert_array_equal(flat.to_numpy(), expected.reshape(1, -1))
    pooled = minitorch.maxpool2d(t, (2, 2))
    np.testing.assert_array_equal(pooled.to_numpy(), expected.max(axis=(2, 3)).reshape(1, 2, 1, 1))
    avg = minitorch.avgpool2d(t, (2, 1))
    np.testing.assert_allclose(avg.to_numpy(), expected.reshape(1, 2, 1, 2, 2).mean(axis=3))


def test_broadcast_gradient_with_gapped_layout_sums_the_right_values(
    backend: TensorBackend,
) -> None:
    x = minitorch.tensor([1.0, 2.0, 3.0], backend=backend).requires_grad_(True)
    y = x + minitorch.zeros((1, 3), backend=backend)
    # A (1, 3) gradient whose elements sit two apart in storage.
    grad = Tensor.make(np.arange(6.0), (1, 3), (5, 2), backend=backend)
    y.backward(grad)
    assert x.grad is not None
    np.testing.assert_array_equal(x.grad.to_numpy(), [0.0, 2.0, 4.0])


# 3. Storage is a contiguous 1-D float64 (or float32) buffer -------------------------


STRIDED_STORAGE = {
    "every other": lambda: np.arange(10.0)[::2],
    "reversed": lambda: np.arange(5.0)[::-1],
    "2-D": lambda: np.arange(5.0).reshape(1, 5),
    "Fortran 2-D": lambda: np.asfortranarray(np.arange(6.0).reshape(2, 3)),
    "ints": lambda: np.arange(5),
    "big-endian": lambda: np.arange(5.0).astype(">f8"),
    "float32": lambda: np.arange(5, dtype=np.float32),
}


@pytest.mark.parametrize("name", STRIDED_STORAGE)
def test_storage_arrays_are_read_in_order(backend: TensorBackend, name: str) -> None:
    given = STRIDED_STORAGE[name]()
    values = np.asarray(given, dtype=np.float64).reshape(-1)
    t = Tensor.make(given, (values.size,), backend=backend)
    storage = t._tensor._storage
    # A float32 array keeps its dtype; every other one becomes the default, float64.
    assert t.dtype == (np.float32 if name == "float32" else np.float64)
    if not hasattr(storage, "copy_to_host"):
        assert storage.dtype == t.dtype and storage.ndim == 1
        assert storage.flags.c_contiguous
    np.testing.assert_array_equal(t.to_numpy(), values)
    np.testing.assert_array_equal((t + 0).to_numpy(), values)
    assert t.sum().item() == values.sum()


def test_contiguous_float64_storage_is_shared() -> None:
    storage = np.arange(4.0)
    t = Tensor.make(storage, (2, 2))
    assert t._tensor._storage is storage
    t[1, 1] = 42.0
    assert storage[3] == 42.0


def test_strided_storage_is_copied() -> None:
    base = np.arange(10.0)
    t = Tensor.make(base[::2], (5,))
    t[0] = -1.0
    assert base[0] == 0.0


@pytest.mark.kernels
def test_large_reversed_storage_does_not_crash() -> None:
    # Read through its base pointer, this ran off the end of the buffer.
    lines = run_isolated(
        """
        import numpy as np
        import minitorch
        F = minitorch.TensorBackend(minitorch.FastOps)
        values = np.arange(10.0**7)[::-1]
        t = minitorch.Tensor.make(values, (values.size,), backend=F)
        out = (t + 0).to_numpy()
        print(out[0], out[-1], t.to_numpy()[0])
        """
    )
    assert lines[-1] == "9999999.0 0.0 9999999.0"


# 4. At most MAX_DIMS dims, checked before any kernel runs -----------------------------


def test_too_many_dims_raise(backend: TensorBackend) -> None:
    too_many = (1,) * (MAX_DIMS + 1)
    with pytest.raises(IndexingError, match="MAX_DIMS"):
        minitorch.zeros(too_many, backend=backend)
    with pytest.raises(IndexingError, match="MAX_DIMS"):
        Tensor.make(np.zeros(1), too_many, backend=backend)
    nested: Any = [0.0]
    for _ in range(MAX_DIMS):
        nested = [nested]
    with pytest.raises(IndexingError, match="MAX_DIMS"):
        minitorch.tensor(nested, backend=backend)
    t = minitorch.zeros((2,), backend=backend)
    with pytest.raises(IndexingError, match="MAX_DIMS"):
        t.view(*((1,) * MAX_DIMS + (2,)))
    with pytest.raises(IndexingError, match="MAX_DIMS"):
        t.zeros(too_many)


def test_max_dims_work(backend: TensorBackend) -> None:
    shape = (1,) * (MAX_DIMS - 1) + (2,)
    t = minitorch.tensor([1.0, 2.0], backend=backend).view(*shape)
    assert (t + t).shape == shape
    assert (t * minitorch.tensor([3.0], backend=backend)).sum().item() == 9.0
    assert t.sum(MAX_DIMS - 1).shape == (1,) * MAX_DIMS


# 6. max folds from -inf and propagates NaN ---------------------------------------------


def test_max_of_values_below_minus_1e9(backend: TensorBackend) -> None:
    x = minitorch.tensor([-5e9, -6e9], backend=backend)
    assert minitorch.max(x, 0).item() == -5e9
    logits = minitorch.tensor([[-2e9, -2e9 + 1]], backend=backend)
    expected = np.array([-1.0, 0.0]) - np.log(np.exp(-1.0) + 1.0)
    # log's EPS shifts the result by about 1e-6.
    got = minitorch.logsoftmax(logits, 1).to_numpy()[0]
    np.testing.assert_allclose(got, expected, atol=1e-5)
    got = minitorch.softmax(logits, 1).to_numpy()[0]
    np.testing.assert_allclose(got, np.exp(expected), rtol=1e-12)
    pooled = minitorch.maxpool2d(minitorch.tensor([[[[-3e9, -4e9], [-5e9, -6e9]]]]), (2, 2))
    assert pooled.item() == -3e9


@pytest.mark.parametrize("n", [5, 20, 40_000])  # serial, lane-folded, parallel
def test_max_propagates_nan_from_any_position(backend: TensorBackend, n: int) -> None:
    if n > 20 and backend.ops is not minitorch.FastOps:
        pytest.skip("the parallel size is FastOps's")
    for position in sorted({0, 1, 2, 3, n // 2, n - 1}):
        values = np.linspace(-1.0, 1.0, n)
        values[position] = np.nan
        x = minitorch.tensor_from_numpy(values, backend=backend)
        assert math.isnan(minitorch.max(x, 0).item()), position
        # Across rows too: only the NaN row becomes NaN.
        rows = minitorch.tensor_from_numpy(np.stack([values, np.arange(n)]), backend=backend)
        got = minitorch.max(rows, 1).to_numpy().reshape(-1)
        assert math.isnan(got[0]) and got[1] == n - 1


def test_max_backward_and_argmax_with_nan(backend: TensorBackend) -> None:
    x = minitorch.tensor([[1.0, float("nan"), 3.0], [4.0, 5.0, 6.0]], backend=backend)
    x.requires_grad_(True)
    out = minitorch.max(x, 1)
    out.sum().backward()
    assert x.grad is not None and x.grad.shape == x.shape
    np.testing.assert_array_equal(x.grad.to_numpy()[1], [0.0, 0.0, 1.0])
    assert minitorch.argmax(x, 1).shape == x.shape
    assert np.isnan(minitorch.softmax(x, 1).to_numpy()[0]).all()


def test_maximum_operator() -> None:
    nan = float("nan")
    assert math.isnan(operators.maximum(nan, 1.0)) and math.isnan(operators.maximum(1.0, nan))
    assert operators.maximum(2.0, -math.inf) == 2.0 and operators.maximum(-1.0, 3.0) == 3.0
    assert operators.max(nan, 1.0) == 1.0  # the contract's max is unchanged


# 7. Division by zero and other IEEE cases, the same everywhere ------------------------


@pytest.mark.parametrize("n", [3, 40_000])  # serial and parallel FastOps kernels
def test_division_by_zero_is_inf(backend: TensorBackend, n: int) -> None:
    if n > 3 and backend.ops is not minitorch.FastOps:
        pytest.skip("the parallel size is FastOps's")
    values = np.ones(n)
    values[0], values[1] = 0.0, -0.0
    x = minitorch.tensor_from_numpy(values, backend=backend).requires_grad_(True)
    with no_runtime_warnings(backend):
        y = 1.0 / x
        y.sum().backward()
        assert y[0] == math.inf and y[1] == -math.inf and y[2] == 1.0
        assert x.grad is not None
        assert x.grad[0] == -math.inf and x.grad[2] == -1.0
        assert math.isnan((x / x)[0])
        assert math.isnan(minitorch.zeros((0,), backend=backend).mean().item())


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_division_by_a_number_equals_times_its_inverse_kernel(
    backend: TensorBackend, dtype: type
) -> None:
    """``x / n`` takes the reciprocal of the number in the tensor's dtype instead of an
    Inv kernel: the very same values and gradients, NaN, signed zeros, infinities and
    a reciprocal past the dtype's range included."""
    from minitorch.tensor_functions import Inv, Mul

    values = np.array([1.0, -2.5, 0.0, -0.0, 3e-39, 7.0, np.inf, np.nan], dtype)
    for n in (3, 10, 0.0, -0.0, 1e-310, 3e-39, math.inf, -math.inf, math.nan, np.float32(0.1),
              np.int64(7), np.float64(-1.5), 2**60):  # fmt: skip
        x = minitorch.tensor_from_numpy(values, backend=backend).requires_grad_(True)
        reference = minitorch.tensor_from_numpy(values, backend=backend).requires_grad_(True)
        with no_runtime_warnings(backend):
            got = x / n
            expected = Mul.apply(reference, Inv.apply(reference._ensure_tensor(n)))
            got.sum().backward()
            expected.sum().backward()
        assert got.dtype == expected.dtype == np.dtype(dtype)
        assert got.to_numpy().tobytes() == expected.to_numpy().tobytes(), n
        assert x.grad is not None and reference.grad is not None
        assert x.grad.to_numpy().tobytes() == reference.grad.to_numpy().tobytes(), n
    with pytest.raises(OverflowError):
        minitorch.tensor([1.0], backend=backend) / 10**400


def test_log_and_exp_at_their_limits(backend: TensorBackend) -> None:
    x = minitorch.tensor([-operators.EPS, -1.0, 1000.0, float("nan"), -math.inf], backend=backend)
    with no_runtime_warnings(backend):
        logs = x.log().to_numpy()
        exps = x.exp().to_numpy()
    assert logs[0] == -math.inf and math.isnan(logs[1]) and math.isnan(logs[3])
    assert exps[2] == math.inf and math.isnan(exps[3]) and exps[4] == 0.0


def test_user_ops_divide_like_numpy(backend: TensorBackend) -> None:
    recip = minitorch.unary_op(lambda v: 1.0 / v, lambda v: -1.0 / (v * v), name="recip")
    ratio = minitorch.binary_op(lambda a, b: a / b, name="ratio")
    x = minitorch.tensor([0.0, 2.0], backend=backend).requires_grad_(True)
    with no_runtime_warnings(backend):
        out = recip(x)
        out.sum().backward()
        both = ratio(x, x).to_numpy()
    np.testing.assert_array_equal(out.to_numpy(), [math.inf, 0.5])
    assert x.grad is not None and x.grad[0] == -math.inf
    assert math.isnan(both[0]) and both[1] == 1.0


def test_operators_are_ieee_in_python_and_compiled() -> None:
    cases = [
        (operators.inv, (0.0,), math.inf),
        (operators.inv, (-0.0,), -math.inf),
        (operators.inv_back, (0.0, 2.0), -math.inf),
        (operators.inv_back, (0.0, 0.0), math.nan),
        (operators.log_back, (-operators.EPS, 1.0), math.inf),
        (operators.log, (-operators.EPS,), -math.inf),
        (operators.log, (-1.0,), math.nan),
        (operators.exp, (1000.0,), math.inf),
        (operators.exp, (-1000.0,), 0.0),
        (operators.exp_back, (1000.0, 1.0), math.inf),
        (operators.mul, (0.0, math.inf), math.nan),
    ]
    for fn, args, expected in cases:
        compiled = numba.njit(fn)  # numba's default error model raises on 1/0
        with np.errstate(invalid="ignore"):  # NumPy scalars warn on 0 * inf
            as_numpy = fn(*(np.float64(a) for a in args))
        for got in (fn(*args), as_numpy, compiled(*args)):
            if math.isnan(expected):
                assert math.isnan(got), (fn.__name__, args, got)
            else:
                assert got == expected, (fn.__name__, args, got)
    # Inside their ordinary range nothing changed.
    assert operators.log(2.0) == math.log(2.0 + operators.EPS)
    assert operators.exp(3.0) == math.exp(3.0) and operators.inv(4.0) == 0.25


def test_scalars_are_ieee() -> None:
    assert Scalar(-operators.EPS).log().data == -math.inf
    assert Scalar(1000.0).exp().data == math.inf
    zero = Scalar(0.0)
    inverse = 1.0 / zero
    assert inverse.data == math.inf
    inverse.backward()
    assert zero.derivative == -math.inf


# 8. grad_check and non-differentiable points ----------------------------------------


def test_grad_check_does_not_fail_at_a_jump() -> None:
    # lt(a + 1.2, b) jumps at a = 0, b = 1.2: the central difference straddles it.
    a = minitorch.tensor([0.0])
    b = minitorch.tensor([1.2])
    with pytest.warns(UserWarning, match="not differentiable"):
        minitorch.grad_check(lambda x, y: x + 1.2 < y, a, b)


def test_grad_check_samples_another_index_at_a_kink() -> None:
    # relu has a kink at 0. The first index sampled lands on one, so the check
    # must move on to the only smooth element.
    random.seed(10)
    first = minitorch.zeros((4,))._tensor.sample()[0]
    values = [0.0] * 4
    values[(first + 1) % 4] = 2.0
    x = minitorch.tensor(values)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        minitorch.grad_check(lambda t: t.relu(), x)


class _WrongBackward(minitorch.Function):
    @staticmethod
    def forward(ctx: minitorch.Context, t: Tensor) -> Tensor:
        return t.f.mul_zip(t, t)

    @staticmethod
    def backward(ctx: minitorch.Context, grad_output: Tensor) -> Tensor:
        return grad_output  # should be 2 t * grad_output


def test_grad_check_still_catches_wrong_gradients() -> None:
    with pytest.raises(AssertionError, match="Gradient check error"):
        minitorch.grad_check(_WrongBackward.apply, minitorch.tensor([3.0, 4.0, 5.0]))


def test_central_differences_of_float32_are_taken_in_float64() -> None:
    # Regression: a step of 1e-6 is a few float32 ulps; d(x^2)/dx at 1 came out 1.907.
    x = minitorch.tensor([1.0, 3.0, 0.25], dtype=minitorch.float32)
    for i, value in enumerate([1.0, 3.0, 0.25]):
        slope = minitorch.grad_central_difference(lambda t: t * t * t, x, arg=0, ind=(i,))
        assert slope == pytest.approx(3 * value**2, rel=1e-6)
    assert x.dtype == minitorch.float32  # the argument itself is untouched


def test_grad_check_in_float32_passes_right_and_catches_wrong_gradients() -> None:
    x = minitorch.tensor([[1.0, -2.0], [0.5, 3.0]], dtype=minitorch.float32)
    y = minitorch.tensor([[0.3, -0.7], [0.2, 0.4]], dtype=minitorch.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # smooth everywhere: no index is skipped
        minitorch.grad_check(lambda a, b: (a @ b).sigmoid().log() * a, x, y)
    with pytest.raises(AssertionError, match="Gradient check error"):
        minitorch.grad_check(_WrongBackward.apply, x)


def test_grad_check_keeps_the_contract_sampling() -> None:
    # At a differentiable point: seed 10, then one sampled index per input, as before.
    x = minitorch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    y = minitorch.tensor([7.0, 8.0])
    minitorch.grad_check(lambda a, b: a.sum(1).view(2) * b, x, y)
    after = random.random()
    random.seed(10)
    x._tensor.sample()
    y._tensor.sample()
    assert random.random() == after


# 11. Factories check the size first; rand is vectorised, same stream ---------------


@pytest.mark.parametrize(
    "factory",
    [
        lambda shape: minitorch.rand(shape),
        lambda shape: minitorch.zeros(shape),
        lambda shape: minitorch.ones(shape),
        lambda shape: minitorch.tensor([1.0]).zeros(shape),
        lambda shape: minitorch.rand(shape, backend=FAST),
    ],
)
def test_huge_factory_shapes_raise_memory_error_at_once(factory: Any) -> None:
    with pytest.raises(MemoryError, match=r"shape \(1048576, 1048576\) needs 8,796,093,022,208"):
        factory((2**20, 2**20))


@pytest.mark.parametrize("n", [0, 1, 7, 70_001])  # 70,001 crosses a chunk boundary
def test_rand_repeats_python_random_bit_for_bit(n: int) -> None:
    random.seed(1234)
    expected = [random.random() for _ in range(n)]
    after = random.random()
    random.seed(1234)
    got = minitorch.rand((n,)).to_numpy()
    assert got.tolist() == expected
    assert random.random() == after  # the generator advanced exactly as far


def test_rand_shape_is_row_major_draws() -> None:
    random.seed(5)
    expected = np.array([random.random() for _ in range(6)]).reshape(2, 3)
    random.seed(5)
    np.testing.assert_array_equal(minitorch.rand((2, 3)).to_numpy(), expected)


# 15. Malformed small inputs -----------------------------------------------------------


@pytest.mark.parametrize(
    "make, error, message",
    [
        (lambda: minitorch.tensor(None), TypeError, "real numbers"),
        (lambda: minitorch.tensor(["1", "2"]), TypeError, "real numbers"),
        (lambda: minitorch.tensor([1.0, None]), TypeError, "real numbers"),
        (lambda: minitorch.tensor([1 + 2j]), TypeError, "real numbers"),
        (lambda: minitorch.tensor([[1.0, 2.0], [3.0]]), ValueError, "rectangular"),
        (lambda: minitorch.zeros((2.5, 3)), TypeError, "must be ints"),
        (lambda: minitorch.zeros((float("nan"),)), TypeError, "must be ints"),
        (lambda: minitorch.zeros((True, 3)), TypeError, "must be ints"),
        (lambda: minitorch.zeros(None), TypeError, "shape"),
        (lambda: minitorch.zeros((-1, 3)), IndexingError, "Negative"),
        (lambda: minitorch.zeros((0, 2**70)), IndexingError, "64-bit"),
        (lambda: minitorch.zeros((0,)).view(2**70, 0), IndexingError, "64-bit"),
        (lambda: Tensor.make(np.zeros(1), (1,), (2**64,)), IndexingError, "64-bit"),
        (lambda: minitorch.rand("23"), TypeError, "must be ints"),
        (lambda: minitorch.zeros((2,), backend="fast"), TypeError, "TensorBackend"),
        (lambda: minitorch.tensor([1.0], backend=minitorch.FastOps), TypeError, "TensorBackend"),
        (lambda: Tensor([1.0, 2.0]), TypeError, "TensorData"),
        (lambda: Tensor(TensorData([1.0], (1,)), backend="simple"), TypeError, "TensorBackend"),
        (lambda: Tensor.make([1.0, 2.0], (2.0,)), TypeError, "must be ints"),
        (lambda: Tensor.make(["a"], (1,)), TypeError, "real numbers"),
        (lambda: minitorch.tensor([1.0, 2.0]).sum(True), TypeError, "must be an int"),
        (lambda: minitorch.tensor([1.0, 2.0]).sum(1.0), TypeError, "must be an int"),
        (lambda: minitorch.tensor([1.0, 2.0]).mean(0.5), TypeError, "must be an int"),
        (lambda: minitorch.tensor([[1.0]]).permute(0.0, 1), TypeError, "must be an int"),
        (lambda: minitorch.tensor([1.0, 2.0]).view(2.5), TypeError, "must be an int"),
        (lambda: minitorch.tensor([1.0, 2.0]).view(True, 2), TypeError, "must be an int"),
        (lambda: minitorch.tensor([1.0, 2.0])[True], IndexingError, "int"),
        (lambda: minitorch.tensor([1.0, 2.0])[0.0], IndexingError, "int"),
        (lambda: minitorch.tensor([1.0, 2.0])[np.array([0.5])], IndexingError, "non-integer"),
        (lambda: minitorch.max(minitorch.tensor([1.0, 2.0]), True), TypeError, "must be an int"),
        (lambda: minitorch.softmax(minitorch.tensor([1.0, 2.0]), 0.5), TypeError, "an int"),
        (
            lambda: minitorch.maxpool2d(minitorch.zeros((1, 1, 4, 4)), (2.5, 2)),
            TypeError,
            "must be an int",
        ),
        (
            lambda: minitorch.tensor([1.0, 2.0]).sum(minitorch.tensor([0.5])),
            TypeError,
            "whole number",
        ),
        (
            lambda: minitorch.tensor([1.0, 2.0]).backward(minitorch.tensor([1.0, 2.0, 3.0])),
            ValueError,
            "does not match",
        ),
    ],
)
def test_malformed_arguments_raise_clear_errors(
    make: Any, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        make()


def test_small_inputs_that_now_work(backend: TensorBackend) -> None:
    assert minitorch.tensor(True, backend=backend).to_numpy().tolist() == [1.0]
    assert minitorch.tensor([2**70], backend=backend).item() == 2.0**70
    empty = minitorch.zeros((0, 3), backend=backend)
    assert np.isnan(empty.mean(0).to_numpy()).all() and empty.mean(0).shape == (1, 3)
    assert minitorch.zeros(np.int64(3), backend=backend).shape == (3,)
    t = minitorch.tensor([[1.0, 2.0]], backend=backend)
    assert t.sum(minitorch.tensor([1.0], backend=backend)).item() == 3.0
    assert t.sum(np.int64(-1)).item() == 3.0
    # backward() accepts any one-element tensor, and a grad_output that broadcasts.
    x = minitorch.tensor([[2.0]], backend=backend).requires_grad_(True)
    (x * x).backward()
    assert x.grad is not None and x.grad.to_numpy().tolist() == [[4.0]]
    y = minitorch.tensor([1.0, 2.0], backend=backend).requires_grad_(True)
    (y * 3.0).backward(2.0)
    assert y.grad is not None and y.grad.to_numpy().tolist() == [6.0, 6.0]


@pytest.mark.parametrize(("shape_a", "shape_b"), [((1, 4, 8), (0, 8, 9)), ((0, 4, 8), (1, 8, 9))])
def test_matmul_with_an_empty_batch_broadcasts_to_no_products(
    backend: minitorch.TensorBackend, shape_a: tuple[int, ...], shape_b: tuple[int, ...]
) -> None:
    # Regression: the batch was max(1, 0) = 1, so the kernels read an empty operand.
    rng = np.random.default_rng(0)
    a = minitorch.tensor_from_numpy(rng.standard_normal(shape_a), backend).requires_grad_(True)
    b = minitorch.tensor_from_numpy(rng.standard_normal(shape_b), backend).requires_grad_(True)
    out = a @ b
    assert out.shape == (0, 4, 9) and out.to_numpy().shape == (0, 4, 9)
    out.sum().backward()
    assert a.grad is not None and b.grad is not None
    np.testing.assert_array_equal(a.grad.to_numpy(), np.zeros(shape_a))
    np.testing.assert_array_equal(b.grad.to_numpy(), np.zeros(shape_b))
