"""Tensor layout: indexing, broadcasting and permuting (contract section 5)."""

from __future__ import annotations

import random

import numba
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import broadcast_shape_pairs, inverse_permutation, shapes

from minitorch import IndexingError, TensorData, shape_broadcast
from minitorch.tensor_data import (
    MAX_DIMS,
    broadcast_index,
    index_to_position,
    strides_from_shape,
    to_index,
)

FEW = settings(max_examples=25, deadline=None)


def layout(shape: tuple[int, ...]) -> TensorData:
    """A contiguous TensorData whose storage holds 0, 1, 2, ..."""
    size = int(np.prod(shape))
    return TensorData(np.arange(size, dtype=np.float64), shape)


@st.composite
def tensor_datas(draw: st.DrawFn) -> TensorData:
    """A TensorData, permuted half the time so that strides are not row-major."""
    td = layout(draw(shapes()))
    if draw(st.booleans()):
        td = td.permute(*draw(st.permutations(range(td.dims))))
    return td


def numpy_view(td: TensorData) -> np.ndarray:
    """The values of ``td`` read through NumPy's own striding."""
    storage = td._storage
    return np.lib.stride_tricks.as_strided(
        storage, td.shape, tuple(s * storage.itemsize for s in td.strides)
    )


# Construction -------------------------------------------------------------------


def test_constructor_defaults() -> None:
    td = TensorData([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16], (4, 2, 2))
    assert td.shape == (4, 2, 2)
    assert td.strides == (4, 2, 1)
    assert isinstance(td.shape, tuple) and isinstance(td.strides, tuple)
    assert td.dims == 3 and isinstance(td.dims, int)
    assert td.size == 16 and isinstance(td.size, int)
    assert td._storage.dtype == np.float64
    assert td._shape.tolist() == [4, 2, 2]
    assert td._strides.tolist() == [4, 2, 1]
    assert td._shape.dtype.kind == "i" and td._strides.dtype.kind == "i"
    storage, shape, strides = td.tuple()
    assert storage is td._storage
    assert shape.tolist() == [4, 2, 2] and strides.tolist() == [4, 2, 1]


def test_constructor_uses_ndarray_as_is() -> None:
    storage = np.arange(6, dtype=np.float64)
    td = TensorData(storage, (2, 3))
    assert td._storage is storage
    td.set((1, 2), 42.0)
    assert storage[5] == 42.0


def test_constructor_explicit_strides() -> None:
    td = TensorData(np.arange(6.0), (2, 3), (1, 2))
    assert td.strides == (1, 2)
    assert td.get((1, 2)) == 5.0
    assert td.get((1, 0)) == 1.0
    assert not td.is_contiguous()


def test_constructor_accepts_nan_and_inf() -> None:
    td = TensorData([float("nan"), float("inf"), -float("inf")], (3,))
    assert np.isnan(td.get((0,)))
    assert td.get((1,)) == float("inf") and td.get((2,)) == -float("inf")


def test_strides_must_match_shape_length() -> None:
    with pytest.raises(IndexingError):
        TensorData(np.arange(6.0), (2, 3), (3,))
    with pytest.raises(IndexingError):
        TensorData(np.arange(6.0), (6,), (1, 1))


def test_storage_too_small_raises() -> None:
    with pytest.raises(IndexingError):
        TensorData(np.arange(5.0), (2, 3))


def test_max_dims() -> None:
    assert MAX_DIMS == 32


@pytest.mark.parametrize(
    "shape, strides",
    [((4, 2, 2), (4, 2, 1)), ((5,), (1,)), ((3, 1), (1, 1)), ((1, 5, 5), (25, 5, 1))],
)
def test_strides_from_shape_examples(shape: tuple[int, ...], strides: tuple[int, ...]) -> None:
    assert strides_from_shape(shape) == strides
    assert isinstance(strides_from_shape(shape), tuple)


@FEW
@given(shapes())
def test_strides_from_shape_match_numpy(shape: tuple[int, ...]) -> None:
    expected = tuple(s // 8 for s in np.zeros(shape, dtype=np.float64).strides)
    # NumPy gives size-1 dims arbitrary strides in some versions; compare where it matters.
    got = strides_from_shape(shape)
    for d, g, e in zip(shape, got, expected):
        if d > 1:
            assert g == e
    assert got[-1] == 1


# Index arithmetic ---------------------------------------------------------------


@FEW
@given(tensor_datas())
def test_index_in_range_and_matches_numpy(td: TensorData) -> None:
    view = numpy_view(td)
    for idx in td.indices():
        pos = td.index(idx)
        assert 0 <= pos < td.size
        assert td._storage[pos] == view[idx]
        assert pos == index_to_position(np.array(idx), td._strides)


@FEW
@given(tensor_datas())
def test_indices_are_distinct_and_complete(td: TensorData) -> None:
    indices = list(td.indices())
    assert len(indices) == td.size
    assert len(set(indices)) == td.size
    # Every storage cell is reached exactly once: layouts here are bijective.
    assert sorted(td.index(i) for i in indices) == list(range(td.size))


@FEW
@given(shapes())
def test_to_index_is_a_bijection(shape: tuple[int, ...]) -> None:
    size = int(np.prod(shape))
    shape_arr = np.array(shape)
    strides_arr = np.array(strides_from_shape(shape))
    seen = set()
    out_index = np.zeros(len(shape), dtype=np.int64)
    for ordinal in range(size):
        to_index(ordinal, shape_arr, out_index)
        assert all(0 <= i < d for i, d in zip(out_index, shape))
        seen.add(tuple(out_index.tolist()))
        # Row-major: the ordinal is the position under contiguous strides.
        assert index_to_position(out_index, strides_arr) == ordinal
    assert len(seen) == size


@FEW
@given(tensor_datas())
def test_index_accepts_int_tuple_list_and_numpy(td: TensorData) -> None:
    idx = td.sample()
    expected = td.index(idx)
    assert td.index(list(idx)) == expected
    assert td.index(np.array(idx)) == expected
    assert td.index(tuple(np.int64(i) for i in idx)) == expected
    if td.dims == 1:
        assert td.index(idx[0]) == expected
        assert td.index(np.int32(idx[0])) == expected


def test_index_errors() -> None:
    td = layout((2, 3))
    for bad in [(-1, 0), (0, -1), (2, 0), (0, 3), (0,), (0, 0, 0), (), 0]:
        with pytest.raises(IndexingError):
            td.index(bad)
    with pytest.raises(IndexingError):
        td.get((5, 5))
    with pytest.raises(IndexingError):
        td.set((0, 3), 1.0)
    one = layout((4,))
    for bad in [-1, 4, (4,), (0, 0)]:
        with pytest.raises(IndexingError):
            one.index(bad)


def test_index_non_integer_raises() -> None:
    td = layout((2, 3))
    with pytest.raises(IndexingError):
        td.index((0.5, 1))
    with pytest.raises(IndexingError):
        td.index(1.5)


@FEW
@given(tensor_datas(), st.data())
def test_get_set_round_trip(td: TensorData, data: st.DataObject) -> None:
    idx = td.sample()
    value = data.draw(st.floats(allow_nan=False))
    td.set(idx, value)
    assert td.get(idx) == value
    assert td._storage[td.index(idx)] == value


@FEW
@given(tensor_datas(), st.integers(min_value=0, max_value=1000))
def test_sample_is_valid_and_seeded(td: TensorData, seed: int) -> None:
    random.seed(seed)
    first = [td.sample() for _ in range(5)]
    random.seed(seed)
    assert [td.sample() for _ in range(5)] == first
    for idx in first:
        assert len(idx) == td.dims
        assert all(0 <= i < d for i, d in zip(idx, td.shape))
        td.index(idx)


def test_sample_covers_every_index() -> None:
    td = layout((2, 3))
    random.seed(0)
    assert {td.sample() for _ in range(300)} == set(td.indices())


# Broadcasting -------------------------------------------------------------------


@pytest.mark.parametrize(
    "a, b, expected",
    [
        ((1,), (5, 5), (5, 5)),
        ((5, 5), (1,), (5, 5)),
        ((1, 5, 5), (5, 5), (1, 5, 5)),
        ((5, 5), (1, 5, 5), (1, 5, 5)),
        ((5, 1, 5, 1), (1, 5, 1, 5), (5, 5, 5, 5)),
        ((1, 5, 1, 5), (5, 1, 5, 1), (5, 5, 5, 5)),
        ((2, 5), (5,), (2, 5)),
        ((5,), (2, 5), (2, 5)),
        ((3, 1), (4,), (3, 4)),
        ((2, 3, 4), (4,), (2, 3, 4)),
        ((2, 3), (2, 3), (2, 3)),
    ],
)
def test_shape_broadcast_examples(
    a: tuple[int, ...], b: tuple[int, ...], expected: tuple[int, ...]
) -> None:
    assert shape_broadcast(a, b) == expected
    assert TensorData.shape_broadcast(a, b) == expected
    assert isinstance(shape_broadcast(a, b), tuple)


@pytest.mark.parametrize(
    "a, b", [((5, 7, 5, 1), (1, 5, 1, 5)), ((5, 2), (5,)), ((2,), (3,)), ((2, 3), (3, 2))]
)
def test_shape_broadcast_raises(a: tuple[int, ...], b: tuple[int, ...]) -> None:
    with pytest.raises(IndexingError):
        shape_broadcast(a, b)
    with pytest.raises(IndexingError):
        shape_broadcast(b, a)


@FEW
@given(broadcast_shape_pairs())
def test_shape_broadcast_matches_numpy(pair: tuple[tuple[int, ...], tuple[int, ...]]) -> None:
    a, b = pair
    assert shape_broadcast(a, b) == np.broadcast_shapes(a, b)
    assert shape_broadcast(b, a) == np.broadcast_shapes(a, b)


@FEW
@given(broadcast_shape_pairs())
def test_broadcast_index_matches_numpy(pair: tuple[tuple[int, ...], tuple[int, ...]]) -> None:
    small, other = pair
    big = shape_broadcast(small, other)
    values = np.arange(int(np.prod(small))).reshape(small)
    expanded = np.broadcast_to(values, big)
    out_index = np.zeros(len(small), dtype=np.int64)
    for big_index in np.ndindex(*big):
        broadcast_index(np.array(big_index), np.array(big), np.array(small), out_index)
        assert all(0 <= i < d for i, d in zip(out_index, small))
        assert values[tuple(out_index)] == expanded[big_index]


def test_broadcast_index_example() -> None:
    out_index = np.zeros(2, dtype=np.int64)
    broadcast_index(np.array([3, 2, 4]), np.array([5, 3, 6]), np.array([1, 6]), out_index)
    assert out_index.tolist() == [0, 4]


# Contiguity ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "shape, strides, contiguous",
    [
        ((2, 5), (5, 1), True),
        ((5, 2), (1, 5), False),
        ((5, 1), (1, 1), True),
        ((1, 5), (1, 5), False),  # the contract's rule reads strides alone
        ((2, 3, 4), (12, 4, 1), True),
        ((2, 4, 3), (12, 1, 4), False),
        ((4,), (1,), True),
    ],
)
def test_is_contiguous_examples(
    shape: tuple[int, ...], strides: tuple[int, ...], contiguous: bool
) -> None:
    storage = np.zeros(1 + sum((d - 1) * s for d, s in zip(shape, strides)))
    assert TensorData(storage, shape, strides).is_contiguous() is contiguous


@FEW
@given(tensor_datas())
def test_is_contiguous_rule(td: TensorData) -> None:
    expected = all(td.strides[i] <= td.strides[i - 1] for i in range(1, td.dims))
    assert td.is_contiguous() == expected
    assert layout(td.shape).is_contiguous()


# Permute ------------------------------------------------------------------------


@FEW
@given(tensor_datas(), st.data())
def test_permute_matches_numpy(td: TensorData, data: st.DataObject) -> None:
    order = data.draw(st.permutations(range(td.dims)))
    permuted = td.permute(*order)
    assert permuted._storage is td._storage
    assert permuted.shape == tuple(td.shape[o] for o in order)
    assert isinstance(permuted.shape, tuple) and isinstance(permuted.strides, tuple)
    np.testing.assert_array_equal(numpy_view(permuted), numpy_view(td).transpose(order))
    # Strides stay tuples that the constructor accepts.
    rebuilt = TensorData(permuted._storage, permuted.shape, permuted.strides)
    for idx in permuted.indices():
        assert rebuilt.index(idx) == permuted.index(idx)


@FEW
@given(tensor_datas())
def test_permute_reverse(td: TensorData) -> None:
    rev = td.permute(*reversed(range(td.dims)))
    assert rev.shape == td.shape[::-1]
    for idx in td.indices():
        assert td.index(idx) == rev.index(tuple(reversed(idx)))


@FEW
@given(tensor_datas(), st.data())
def test_permute_back_restores(td: TensorData, data: st.DataObject) -> None:
    order = data.draw(st.permutations(range(td.dims)))
    back = td.permute(*order).permute(*inverse_permutation(order))
    assert back.shape == td.shape
    assert back.strides == td.strides
    assert back._storage is td._storage


def test_permute_accepts_a_sequence() -> None:
    td = layout((2, 3, 4))
    assert td.permute((2, 0, 1)).shape == td.permute(2, 0, 1).shape == (4, 2, 3)


@pytest.mark.parametrize("order", [(0, 0), (0, 2), (1,), (0, 1, 2), (-1, 0), (1, 1)])
def test_bad_permutation_raises(order: tuple[int, ...]) -> None:
    with pytest.raises(IndexingError):
        layout((2, 3)).permute(*order)


# Printing and copying ---------------------------------------------------------


def test_to_string_nan_and_inf() -> None:
    td = TensorData([1.0, float("nan"), float("inf"), -float("inf")], (2, 2))
    text = td.to_string()
    assert isinstance(text, str)
    assert "nan" in text.lower()
    assert text.lower().count("inf") == 2
    assert "1" in text


def test_to_string_permuted() -> None:
    td = layout((2, 3)).permute(1, 0)
    text = td.to_string()
    # Row 0 of the transpose is (0, 3).
    first = text.replace("[", " ").replace("]", " ").replace(",", " ").split()[:2]
    assert [float(v) for v in first] == [0.0, 3.0]


@FEW
@given(tensor_datas())
def test_to_numpy_is_contiguous_copy(td: TensorData) -> None:
    arr = td.to_numpy()
    np.testing.assert_array_equal(arr, numpy_view(td))
    assert arr.flags["C_CONTIGUOUS"]
    arr[...] = -1.0
    assert not np.any(td._storage == -1.0)


# Compiled index helpers (contract: they must compile under njit) ---------------


@pytest.mark.kernels
def test_index_helpers_compile_under_njit() -> None:
    fast_position = numba.njit(inline="always")(index_to_position)
    fast_to_index = numba.njit(inline="always")(to_index)
    fast_broadcast = numba.njit(inline="always")(broadcast_index)

    @numba.njit
    def positions(shape: np.ndarray, strides: np.ndarray, small: np.ndarray) -> np.ndarray:
        size = 1
        for d in shape:
            size *= d
        out = np.zeros((size, 2), dtype=np.int64)
        index = np.zeros(len(shape), dtype=np.int64)
        small_index = np.zeros(len(small), dtype=np.int64)
        small_strides = np.ones(len(small), dtype=np.int64)
        for i in range(len(small) - 2, -1, -1):
            small_strides[i] = small_strides[i + 1] * small[i + 1]
        for ordinal in range(size):
            fast_to_index(ordinal, shape, index)
            out[ordinal, 0] = fast_position(index, strides)
            fast_broadcast(index, shape, small, small_index)
            out[ordinal, 1] = fast_position(small_index, small_strides)
        return out

    shape = np.array([2, 3, 4])
    td = layout((4, 3, 2)).permute(2, 1, 0)
    small = np.array([3, 1])
    got = positions(shape, td._strides, small)
    expected_small = np.broadcast_to(np.arange(3).reshape(3, 1), (2, 3, 4)).reshape(-1)
    for ordinal, idx in enumerate(np.ndindex(2, 3, 4)):
        assert got[ordinal, 0] == td.index(idx)
        assert got[ordinal, 1] == expected_small[ordinal]
