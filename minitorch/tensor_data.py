"""Tensor layout: a flat float64 storage viewed through a shape and strides."""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from typing import TypeAlias

import numpy as np
import numpy.typing as npt

MAX_DIMS = 32


class IndexingError(RuntimeError):
    """An index, shape or stride that does not fit the tensor."""


Storage: TypeAlias = npt.NDArray[np.float64]
OutIndex: TypeAlias = npt.NDArray[np.int64]
Index: TypeAlias = npt.NDArray[np.int64]
Shape: TypeAlias = npt.NDArray[np.int64]
Strides: TypeAlias = npt.NDArray[np.int64]

UserIndex: TypeAlias = Sequence[int]
UserShape: TypeAlias = Sequence[int]
UserStrides: TypeAlias = Sequence[int]


# Index arithmetic. Plain loops over arrays, so that these compile unchanged
# under ``njit(inline="always")`` and as CUDA device functions.


def index_to_position(index: Index, strides: Strides) -> int:
    """Storage position of a multidimensional index: the dot product."""
    position = 0
    for i in range(len(index)):
        position += index[i] * strides[i]
    return position


def to_index(ordinal: int, shape: Shape, out_index: OutIndex) -> None:
    """Write into ``out_index`` the row-major index of ``ordinal``."""
    remaining = ordinal + 0
    for i in range(len(shape) - 1, -1, -1):
        dim = shape[i]
        out_index[i] = remaining % dim
        remaining = remaining // dim


def broadcast_index(big_index: Index, big_shape: Shape, shape: Shape, out_index: OutIndex) -> None:
    """Map an index of the broadcast shape onto an index of ``shape``.

    Extra leading dimensions are dropped and size-1 dimensions map to 0.
    """
    offset = len(big_shape) - len(shape)
    for i in range(len(shape)):
        out_index[i] = big_index[i + offset] if shape[i] > 1 else 0


def shape_broadcast(shape1: UserShape, shape2: UserShape) -> tuple[int, ...]:
    """The shape two shapes broadcast to, right-aligned (NumPy's rule)."""
    if tuple(shape1) == tuple(shape2):
        return tuple(shape1)
    n = len(shape1) if len(shape1) > len(shape2) else len(shape2)
    a = (1,) * (n - len(shape1)) + tuple(shape1)
    b = (1,) * (n - len(shape2)) + tuple(shape2)
    out = []
    for x, y in zip(a, b):
        if x == y or y == 1:
            out.append(x)
        elif x == 1:
            out.append(y)
        else:
            raise IndexingError(f"Shapes {tuple(shape1)} and {tuple(shape2)} do not broadcast.")
    return tuple(out)


def strides_from_shape(shape: UserShape) -> tuple[int, ...]:
    """Row-major (C-contiguous) strides for ``shape``.

    The common ranks are spelled out: this runs for nearly every new tensor.
    """
    n = len(shape)
    if n == 1:
        return (1,)
    if n == 2:
        return (shape[1], 1)
    strides = []
    step = 1
    for dim in reversed(shape):
        strides.append(step)
        step *= dim
    return tuple(reversed(strides))


def _size(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


class TensorData:
    """A shape and strides over a flat float64 storage; many views may share one."""

    __slots__ = ("_storage", "shape", "strides", "size", "dims", "_shape_arr", "_strides_arr")

    _storage: Storage
    shape: tuple[int, ...]
    strides: tuple[int, ...]
    size: int
    dims: int

    def __init__(
        self,
        storage: Sequence[float] | Storage,
        shape: UserShape,
        strides: UserStrides | None = None,
    ) -> None:
        if isinstance(storage, np.ndarray):
            self._storage = storage
        else:
            self._storage = np.array(storage, dtype=np.float64)
        shape = tuple(int(s) for s in shape)
        for s in shape:
            if s < 0:
                raise IndexingError(f"Negative dimension in shape {shape}.")
        if strides is None:
            strides = strides_from_shape(shape)
        else:
            strides = tuple(int(s) for s in strides)
            if len(strides) != len(shape):
                raise IndexingError(f"Strides {strides} must have the length of shape {shape}.")
        self.shape = shape
        self.strides = strides
        self.dims = len(shape)
        self.size = _size(shape)
        self._shape_arr = None
        self._strides_arr = None
        if self.size > 0 and not hasattr(self._storage, "copy_to_host"):
            # The largest reachable position must lie inside the storage.
            last = sum((d - 1) * s for d, s in zip(shape, strides))
            if len(self._storage) <= last:
                raise IndexingError(
                    f"Storage of length {len(self._storage)} is too small for shape "
                    f"{shape} with strides {strides}."
                )

    @classmethod
    def _trusted(
        cls, storage: Storage, shape: tuple[int, ...], strides: tuple[int, ...], size: int
    ) -> TensorData:
        """Build without validation; for internal callers that computed the layout."""
        td = object.__new__(cls)
        td._storage = storage
        td.shape = shape
        td.strides = strides
        td.dims = len(shape)
        td.size = size
        td._shape_arr = None
        td._strides_arr = None
        return td

    @property
    def _shape(self) -> Shape:
        arr = self._shape_arr
        if arr is None:
            arr = self._shape_arr = np.array(self.shape, dtype=np.int64)
        return arr

    @property
    def _strides(self) -> Strides:
        arr = self._strides_arr
        if arr is None:
            arr = self._strides_arr = np.array(self.strides, dtype=np.int64)
        return arr

    def to_cuda_(self) -> None:
        """Move the storage to the GPU, unless it is already there."""
        from numba import cuda

        # ``copy_to_host`` marks a device array (the simulator has no ``is_cuda_array``).
        if not hasattr(self._storage, "copy_to_host"):
            self._storage = cuda.to_device(self._storage)

    def is_contiguous(self) -> bool:
        """True when strides never increase from one dimension to the next."""
        last = 1 << 62
        for stride in self.strides:
            if stride > last:
                return False
            last = stride
        return True

    @staticmethod
    def shape_broadcast(shape_a: UserShape, shape_b: UserShape) -> tuple[int, ...]:
        return shape_broadcast(shape_a, shape_b)

    def index(self, index: int | UserIndex | Index) -> int:
        """Storage position of ``index``, checked against the shape."""
        if isinstance(index, (int, np.integer)):
            index = (int(index),)
        elif isinstance(index, np.ndarray):
            index = tuple(int(i) for i in index)
        else:
            try:
                index = tuple(index)
            except TypeError:
                raise IndexingError(f"Index {index!r} is not an int or a tuple of ints.") from None
        if len(index) != self.dims:
            raise IndexingError(
                f"Index {index} must have {self.dims} entries for shape {self.shape}."
            )
        position = 0
        for i, (ind, dim, stride) in enumerate(zip(index, self.shape, self.strides)):
            if not isinstance(ind, (int, np.integer)):
                raise IndexingError(f"Index {index} has a non-integer entry at position {i}.")
            if ind < 0 or ind >= dim:
                raise IndexingError(f"Index {index} out of range for shape {self.shape}.")
            position += int(ind) * stride
        return position

    def indices(self) -> Iterable[tuple[int, ...]]:
        """Every valid index, in row-major order."""
        return np.ndindex(*self.shape) if self.shape else iter([()])

    def sample(self) -> tuple[int, ...]:
        """A uniformly random valid index (Python's ``random``, so seeds repeat)."""
        return tuple(random.randint(0, s - 1) for s in self.shape)

    def get(self, key: UserIndex) -> float:
        return float(self._storage[self.index(key)])

    def set(self, key: UserIndex, val: float) -> None:
        self._storage[self.index(key)] = val

    def tuple(self) -> tuple[Storage, Shape, Strides]:
        """The ``(storage, shape, strides)`` triple that kernels take."""
        return (self._storage, self._shape, self._strides)

    def permute(self, *order: int) -> TensorData:
        """A view with dimensions reordered, over the same storage."""
        if len(order) == 1 and not isinstance(order[0], (int, np.integer)):
            order = tuple(order[0])
        order = tuple(int(o) for o in order)
        if sorted(order) != list(range(self.dims)):
            raise IndexingError(
                f"Permutation {order} is not an ordering of the {self.dims} dims of {self.shape}."
            )
        return TensorData._trusted(
            self._storage,
            tuple(self.shape[o] for o in order),
            tuple(self.strides[o] for o in order),
            self.size,
        )

    def to_numpy(self) -> np.ndarray:
        """A contiguous NumPy copy of the values, shaped like the tensor."""
        storage = self._storage
        if hasattr(storage, "copy_to_host"):
            storage = storage.copy_to_host()
        view = np.lib.stride_tricks.as_strided(
            storage,
            shape=self.shape,
            strides=tuple(s * storage.itemsize for s in self.strides),
            writeable=False,
        )
        # A copy even when the view is already contiguous: never alias the storage.
        return np.array(view, order="C")

    def to_string(self) -> str:
        """Readable nested-bracket printing; NaN and inf print as such."""
        values = self.to_numpy()
        if self.dims == 0:
            return f"{float(values):.4g}"
        return np.array2string(
            values,
            separator=", ",
            formatter={"float_kind": lambda v: f"{v:10.5f}"},
            threshold=1000,
        )
