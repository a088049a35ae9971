"""Hypothesis strategies and helpers shared by the tensor test files.

Tensors come paired with a NumPy array holding the same values, which is the
oracle. Sizes depend on the backend: SimpleOps is pure Python and the CUDA
simulator runs one Python thread per GPU thread, so both get small tensors.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import minitorch
from minitorch import Tensor, TensorBackend

# Values -------------------------------------------------------------------------

FLOAT64 = np.dtype(np.float64)

small_floats = st.floats(min_value=-100, max_value=100, allow_nan=False, allow_infinity=False)
# Away from 0, for divisors and logs.
positive_floats = st.floats(min_value=0.1, max_value=100)
# Few distinct values, so that == and < see ties.
small_ints = st.integers(min_value=-3, max_value=3).map(float)


@dataclass(frozen=True)
class Limits:
    """How large a test may make its tensors, and how many examples it runs."""

    max_size: int  # elements per tensor
    max_dim: int  # size of any one dimension
    examples: int  # hypothesis examples per property
    heavy_examples: int  # for properties that launch many kernels (matmul, long chains)


CPU_LIMITS = Limits(max_size=60, max_dim=5, examples=25, heavy_examples=15)
# The simulator starts a Python thread per GPU thread (1024 per reduce or matmul block).
# Hypothesis tries the simplest example (all ones and zeros) first, so keep at least 2.
CUDA_LIMITS = Limits(max_size=8, max_dim=3, examples=2, heavy_examples=2)


def limits(backend: TensorBackend) -> Limits:
    """The size limits that suit ``backend``."""
    return CUDA_LIMITS if backend.cuda else CPU_LIMITS


def run_property(
    backend: TensorBackend, check: Callable[..., None], *strategies: Any, heavy: bool = False
) -> None:
    """Run ``check`` now as a hypothesis property, sized for ``backend``."""
    lim = limits(backend)
    configured = settings(
        max_examples=lim.heavy_examples if heavy else lim.examples,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    configured(given(*strategies)(check))()


# Shapes -------------------------------------------------------------------------


@st.composite
def shapes(
    draw: st.DrawFn,
    min_dims: int = 1,
    max_dims: int = 4,
    max_size: int = CPU_LIMITS.max_size,
    max_dim: int = CPU_LIMITS.max_dim,
) -> tuple[int, ...]:
    """A shape with 1-4 dims (size-1 dims included) and at most ``max_size`` elements."""
    n = draw(st.integers(min_value=min_dims, max_value=max_dims))
    shape = []
    size = 1
    for _ in range(n):
        d = draw(st.integers(min_value=1, max_value=max(1, min(max_dim, max_size // size))))
        shape.append(d)
        size *= d
    return tuple(shape)


def backend_shapes(backend: TensorBackend, **kwargs: Any) -> st.SearchStrategy[tuple[int, ...]]:
    """``shapes`` within ``backend``'s limits."""
    lim = limits(backend)
    return shapes(max_size=lim.max_size, max_dim=lim.max_dim, **kwargs)


@st.composite
def broadcast_shape_pairs(
    draw: st.DrawFn,
    max_size: int = CPU_LIMITS.max_size,
    max_dim: int = CPU_LIMITS.max_dim,
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Two shapes that broadcast together, possibly of different ranks.

    Both are cut from one target shape by dropping leading dims and turning
    some dims into 1, so their broadcast never exceeds ``max_size``.
    """
    target = draw(shapes(max_size=max_size, max_dim=max_dim))

    def cut() -> tuple[int, ...]:
        start = draw(st.integers(min_value=0, max_value=len(target) - 1))
        return tuple(1 if draw(st.booleans()) else d for d in target[start:])

    return cut(), cut()


# Tensors paired with NumPy arrays ----------------------------------------------


def inverse_permutation(order: Sequence[int]) -> list[int]:
    inverse = [0] * len(order)
    for i, o in enumerate(order):
        inverse[o] = i
    return inverse


@st.composite
def tensor_arrays(
    draw: st.DrawFn,
    backend: TensorBackend,
    shape: Sequence[int] | None = None,
    elements: st.SearchStrategy[float] = small_floats,
    permute: bool = True,
    dtype: np.dtype = FLOAT64,
) -> tuple[Tensor, np.ndarray]:
    """A tensor and the NumPy array with the same values, both in ``dtype``.

    With ``permute``, the tensor is a permuted view of a contiguous tensor, so
    its strides are usually not row-major.
    """
    if shape is None:
        shape = draw(backend_shapes(backend))
    shape = tuple(shape)
    n = len(shape)
    order = draw(st.permutations(range(n))) if permute else list(range(n))
    base_shape = [0] * n
    for i, o in enumerate(order):
        base_shape[o] = shape[i]
    base = draw(arrays(np.float64, tuple(base_shape), elements=elements)).astype(dtype)
    t = minitorch.tensor_from_numpy(base, backend=backend).permute(*order)
    expected = base.transpose(order)
    assert t.shape == expected.shape
    return t, expected


@st.composite
def tensor_array_pairs(
    draw: st.DrawFn,
    backend: TensorBackend,
    elements: st.SearchStrategy[float] = small_floats,
    elements_b: st.SearchStrategy[float] | None = None,
    broadcast: bool = True,
    dtype: np.dtype = FLOAT64,
) -> tuple[Tensor, np.ndarray, Tensor, np.ndarray]:
    """Two (possibly permuted) tensors of broadcast-compatible (or equal) shapes."""
    lim = limits(backend)
    if broadcast:
        shape_a, shape_b = draw(broadcast_shape_pairs(max_size=lim.max_size, max_dim=lim.max_dim))
    else:
        shape_a = shape_b = draw(backend_shapes(backend))
    ta, na = draw(tensor_arrays(backend, shape_a, elements, dtype=dtype))
    tb, nb = draw(
        tensor_arrays(
            backend, shape_b, elements if elements_b is None else elements_b, dtype=dtype
        )
    )
    return ta, na, tb, nb


# Assertions ---------------------------------------------------------------------


# float32 results are compared with an oracle computed in float32 (NumPy's float32
# arithmetic): relative 1e-5 (NumPy and the kernels may round inner steps differently,
# e.g. sigmoid's formula), absolute 1e-6 (values near 0, e.g. log near 1), and for
# values made of many terms (sums, means, matmul) ``count`` times 2 float32 ulps of
# ``terms``, the sum of the terms' magnitudes: a bound on the rounding of a float32
# sum taken in any order.
F32_RTOL = 1e-5
F32_ATOL = 1e-6


def assert_close(
    actual: Tensor | np.ndarray | float,
    expected: Any,
    dtype: np.dtype | None = None,
    terms: Any = 0.0,
    count: int = 0,
) -> None:
    """Values (and shape, for tensors) close in the contract's sense.

    With ``dtype``, ``actual`` must be a tensor of that dtype, and float32 is held to
    float32 tolerances (above) instead of the contract's ``rtol=1e-6, atol=1e-2``.
    """
    if dtype is not None:
        assert_dtype(actual, dtype)
        if np.dtype(dtype) == np.float32:
            assert_close_float32(actual, expected, terms, count)  # type: ignore[arg-type]
            return
    if isinstance(actual, Tensor):
        expected = np.asarray(expected, dtype=np.float64)
        assert actual.shape == expected.shape, f"shape {actual.shape} != {expected.shape}"
        actual = actual.to_numpy()
    np.testing.assert_allclose(actual, expected, rtol=1e-6, atol=1e-2)


def assert_dtype(actual: Any, dtype: np.dtype) -> None:
    """``actual`` is a tensor stored, and converted to NumPy, in ``dtype``."""
    assert isinstance(actual, Tensor), type(actual)
    assert actual.dtype == dtype, f"dtype {actual.dtype} != {np.dtype(dtype)}"
    assert actual.to_numpy().dtype == dtype


def assert_close_float32(actual: Tensor, expected: Any, terms: Any = 0.0, count: int = 0) -> None:
    """``actual`` against a float32 oracle, within the float32 tolerances above."""
    if isinstance(expected, np.ndarray):
        assert expected.dtype == np.float32, f"the oracle ran in {expected.dtype}"
    expected = np.asarray(expected, dtype=np.float32)
    assert actual.shape == expected.shape, f"shape {actual.shape} != {expected.shape}"
    values = actual.to_numpy().astype(np.float64)
    wanted = expected.astype(np.float64)
    eps = float(np.finfo(np.float32).eps)
    tol = F32_RTOL * np.abs(wanted) + F32_ATOL + 2 * count * eps * np.abs(terms)
    # Infinities (float32 overflow) must agree exactly; NaN only where NaN is expected.
    same = (values == wanted) | (np.isnan(values) & np.isnan(wanted))
    ok = same | (np.abs(values - wanted) <= tol)
    assert ok.all(), f"{values[~ok]} != {wanted[~ok]} (float32)"


def assert_exact(actual: Tensor, expected: Any, dtype: np.dtype | None = None) -> None:
    """Exactly ``expected`` (and, with ``dtype``, stored in that dtype)."""
    if dtype is not None:
        assert_dtype(actual, dtype)
    expected = np.asarray(expected, dtype=np.float64 if dtype is None else dtype)
    assert actual.shape == expected.shape, f"shape {actual.shape} != {expected.shape}"
    np.testing.assert_array_equal(actual.to_numpy(), expected)


def assert_same_bits(actual: np.ndarray, expected: np.ndarray) -> None:
    """Equal bit for bit (so -0.0 is not 0.0), except that any NaN matches any NaN (which
    operand's payload a pair of NaNs keeps is the hardware's choice)."""
    assert actual.dtype == expected.dtype
    nan = np.isnan(expected)
    assert np.array_equal(np.isnan(actual), nan)
    width = np.uint64 if actual.dtype == np.float64 else np.uint32
    assert np.array_equal(actual.view(width)[~nan], expected.view(width)[~nan])


# Where a MathTest function is kinked, discontinuous or singular, as predicates on its
# inputs: a central difference is meaningless there, so gradient tests skip them.
NEAR_KINK: dict[str, Callable[..., bool]] = {
    "inv": lambda a: abs(a + 3.5) < 1e-3,
    "relu": lambda a: abs(a + 5.5) < 1e-3,
    "complex": lambda a: abs(a * 10 + 7) < 1e-3,
    "div2": lambda a, b: abs(b + 5.5) < 1e-3,
    "gt2": lambda a, b: abs(a + 1.2 - b) < 1e-3,
    "lt2": lambda a, b: abs(a + 1.2 - b) < 1e-3,
    "eq2": lambda a, b: abs(a - b - 5.5) < 1e-3,
}
