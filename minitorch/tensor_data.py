"""Tensor layout: a flat float64 storage viewed through a shape and strides."""

from __future__ import annotations

import numbers
import os
import random
from collections.abc import Iterable, Sequence
from typing import Any, TypeAlias

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


def is_row_major(shape: tuple[int, ...], strides: tuple[int, ...]) -> bool:
    """True when ``strides`` are the row-major strides of ``shape`` (size-1 dims aside).

    This, not ``is_contiguous``, is what lets a view reinterpret the storage
    as any other shape of the same size: broadcast (stride 0) or gapped
    layouts also have non-increasing strides but are not laid out this way.
    """
    if 0 in shape:
        return True  # nothing is read
    expected = 1
    for i in range(len(shape) - 1, -1, -1):
        if shape[i] != 1:
            if strides[i] != expected:
                return False
            expected *= shape[i]
    return True


# Checking user input ------------------------------------------------------------
# Public constructors validate here once; internal callers that computed a layout
# themselves use ``TensorData._trusted`` and pay nothing.

STORAGE_DTYPE = np.float64
_INT64_MAX = 2**63 - 1


def as_storage(values: Any) -> Storage:
    """``values`` as storage: a contiguous 1-D buffer of ``STORAGE_DTYPE``.

    A C-contiguous 1-D array of that dtype is used as is (shared, so writes
    show through); anything else (a sequence, a strided, reversed, 2-D or
    integer array) is copied in row-major order. Kernels index storage from
    its first element with unit steps, so no other layout may reach them.
    """
    if (
        isinstance(values, np.ndarray)
        and values.dtype == STORAGE_DTYPE
        and values.ndim == 1
        and values.flags.c_contiguous
    ):
        return values
    try:
        array = np.asarray(values)
    except ValueError as e:
        raise ValueError(f"Tensor values must be a rectangular nesting of numbers: {e}") from None
    kind = array.dtype.kind
    if kind == "O" and all(
        isinstance(v, numbers.Real) and not isinstance(v, bool) for v in array.flat
    ):
        kind = "f"  # Python ints too large for int64, Fractions, ...
    if kind not in "biuf":
        first = array.reshape(-1)[:1].tolist()
        example = f" such as {first[0]!r}" if first else ""
        raise TypeError(
            f"Tensor values must be real numbers (bool, int or float), not {array.dtype} "
            f"values{example}."
        )
    return np.array(array, dtype=STORAGE_DTYPE, order="C").reshape(-1)


def _is_int(value: Any) -> bool:
    if value.__class__ is int:
        return True
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def check_shape(shape: Any) -> tuple[int, ...]:
    """``shape`` (an int or a sequence of ints) as a tuple, or a clear error.

    Bools, floats and NaN are refused rather than truncated; dims must be
    non-negative and at most ``MAX_DIMS`` in number (the CUDA kernels index
    fixed arrays of that length).
    """
    if _is_int(shape):
        shape = (shape,)
    try:
        items = tuple(shape)
    except TypeError:
        raise TypeError(
            f"A shape is an int or a sequence of ints, not {type(shape).__name__}."
        ) from None
    if len(items) > MAX_DIMS:
        raise IndexingError(
            f"Shape {items} has {len(items)} dims; at most MAX_DIMS = {MAX_DIMS} are supported."
        )
    size = 1
    plain = True  # every dim a Python int already
    for s in items:
        if s.__class__ is not int:
            if not _is_int(s):
                raise TypeError(f"Shape {items!r} holds {s!r}: dimensions must be ints.")
            plain = False
        if s < 0:
            raise IndexingError(f"Negative dimension in shape {items}.")
        if s > _INT64_MAX:
            size = s  # too large even beside a 0
            break
        size *= s
    if size > _INT64_MAX:
        raise IndexingError(f"Shape {items} does not fit 64-bit indexing.")
    return items if plain else tuple(int(s) for s in items)


def check_strides(strides: Any, shape: tuple[int, ...]) -> tuple[int, ...]:
    """``strides`` as a tuple of non-negative ints of ``shape``'s length, or a clear error."""
    try:
        items = tuple(strides)
    except TypeError:
        raise TypeError(
            f"Strides must be a sequence of ints, not {type(strides).__name__}."
        ) from None
    if len(items) != len(shape):
        raise IndexingError(f"Strides {items} must have the length of shape {shape}.")
    for s in items:
        if not _is_int(s):
            raise TypeError(f"Strides {items!r} hold {s!r}: strides must be ints.")
        if s < 0:
            raise IndexingError(
                f"Strides {items} have a negative entry; strides must be >= 0 "
                "(0 repeats a value along its dim)."
            )
        if s > _INT64_MAX:
            raise IndexingError(f"Strides {items} do not fit a 64-bit index.")
    return tuple(int(s) for s in items)


def as_int(value: Any, what: str) -> int:
    """An int argument (a dim, an order entry), given as an int or a one-element tensor.

    The course passes dims as tensors (``Sum.apply(t, tensor([dim]))``), whose
    value is a float; it must be a whole number. Bools and other floats are
    refused rather than truncated.
    """
    if value.__class__ is int:
        return value
    if _is_int(value):
        return int(value)
    if getattr(value, "size", None) == 1 and hasattr(value, "item"):
        number = value.item()
        if _is_int(number):
            return int(number)
        if isinstance(number, float) and number.is_integer():
            return int(number)
        raise TypeError(f"{what} must be a whole number, got a tensor holding {number!r}.")
    raise TypeError(f"{what} must be an int, not {value!r}.")


# Indexing -----------------------------------------------------------------------
# A key is normalised once (``normalize_key``) into entries a layout can apply
# directly: in-range non-negative ints, slices with non-negative bounds and a
# positive step, and None for a new size-1 dim. ``key_layout`` then places the
# view on any TensorData, so a gradient can be written back through the same key.

KeyEntry: TypeAlias = "int | slice | None"


def _key_items(key: Any) -> tuple[Any, ...]:
    """The entries of ``key``; a list or 1-D integer array is one index per dim, as
    the course's ``index`` reads it (NumPy would take it as advanced indexing)."""
    if key.__class__ is tuple:
        return key
    if isinstance(key, list) or (isinstance(key, np.ndarray) and key.ndim == 1):
        items = tuple(key)
        if all(_is_int(i) for i in items):
            return items
        raise IndexingError(
            f"Index {key!r} has a non-integer entry: a list or array index holds one int "
            "per dim (advanced indexing with lists of positions or masks is not supported)."
        )
    return (key,)


def element_position(shape: tuple[int, ...], strides: tuple[int, ...], key: Any) -> int | None:
    """Storage position when ``key`` names one element by one int per dim, else None.

    Negative ints count from the end, as in Python; an int out of range raises.
    """
    items = _key_items(key)
    if len(items) != len(shape) or not items:
        return None
    position = 0
    for ind, dim, stride in zip(items, shape, strides):
        if ind.__class__ is not int:
            if not _is_int(ind):
                return None
            ind = int(ind)
        if ind < 0:
            ind += dim
            if ind < 0:
                raise IndexingError(f"Index {key!r} out of range for shape {shape}.")
        elif ind >= dim:
            raise IndexingError(f"Index {key!r} out of range for shape {shape}.")
        position += ind * stride
    return position


def normalize_key(shape: tuple[int, ...], key: Any) -> tuple[KeyEntry, ...]:
    """``key`` (ints, slices, None, one Ellipsis) as entries for ``key_layout``.

    Ints count from the end when negative and must be in range; slices are
    clamped as in Python, and need a positive step (a view never has a negative
    stride). Anything else, or more ints and slices than dims, is an IndexingError.
    """
    items = _key_items(key)
    ellipses = sum(1 for item in items if item is Ellipsis)
    if ellipses > 1:
        raise IndexingError(f"Index {key!r} holds more than one Ellipsis.")
    used = sum(1 for item in items if item is not None and item is not Ellipsis)
    if used > len(shape):
        raise IndexingError(
            f"Index {key!r} has {used} entries for the {len(shape)} dims of shape {shape}."
        )
    fill = (slice(None),) * (len(shape) - used)
    if ellipses:
        at = next(i for i, item in enumerate(items) if item is Ellipsis)
        items = items[:at] + fill + items[at + 1 :]
    else:
        items = items + fill
    entries: list[KeyEntry] = []
    dim = 0
    for item in items:
        if item is None:
            entries.append(None)
            continue
        size = shape[dim]
        if isinstance(item, slice):
            try:
                start, stop, step = item.indices(size)
            except (TypeError, ValueError) as e:
                raise IndexingError(f"Index {key!r}: bad slice {item!r} ({e}).") from None
            if step < 0:
                raise IndexingError(
                    f"Index {key!r}: slice {item!r} has a negative step, which views do "
                    "not support (flip with a copy instead)."
                )
            stop = max(stop, start)
            entries.append(slice(start, stop, step))
        elif _is_int(item):
            ind = int(item)
            if not -size <= ind < size:
                raise IndexingError(f"Index {key!r} out of range for shape {shape} (dim {dim}).")
            entries.append(ind % size)
        else:
            raise IndexingError(
                f"Index {key!r} holds {item!r}: an index is made of ints, slices, None and "
                "Ellipsis (tensor, list and mask indexing are not supported)."
            )
        dim += 1
    return tuple(entries)


def key_layout(
    shape: tuple[int, ...], strides: tuple[int, ...], entries: tuple[KeyEntry, ...]
) -> tuple[tuple[int, ...], tuple[int, ...], int]:
    """The ``(shape, strides, start)`` of the view that normalised ``entries`` select."""
    out_shape: list[int] = []
    out_strides: list[int] = []
    start = 0
    dim = 0
    empty = False
    for entry in entries:
        if entry is None:
            out_shape.append(1)
            # The stride a row-major layout would give it (any value is valid for size 1).
            out_strides.append(strides[dim] * shape[dim] if dim < len(shape) else 1)
            continue
        stride = strides[dim]
        if entry.__class__ is slice:
            n = len(range(entry.start, entry.stop, entry.step))
            out_shape.append(n)
            out_strides.append(stride * entry.step)
            if n:
                start += entry.start * stride
            else:
                empty = True
        else:
            start += entry * stride
        dim += 1
    # An empty view reads nothing: keep it at the start of the storage.
    return tuple(out_shape), tuple(out_strides), 0 if empty else start


def _memory_limit() -> int | None:
    """Bytes of physical memory, when the platform says (no tensor can be larger)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


_MEMORY_LIMIT = _memory_limit()


def check_allocation(shape: tuple[int, ...]) -> int:
    """The element count of a new storage for ``shape``; MemoryError if it cannot fit.

    Raised before allocating, so a typo like ``rand((2**20, 2**20))`` fails at
    once instead of filling memory until the system kills the process.
    """
    size = _size(shape)
    nbytes = size * np.dtype(STORAGE_DTYPE).itemsize
    if _MEMORY_LIMIT is not None and nbytes > _MEMORY_LIMIT:
        raise MemoryError(
            f"A tensor of shape {shape} needs {nbytes:,} bytes ({nbytes / 2**30:.1f} GiB); "
            f"this machine has {_MEMORY_LIMIT:,} bytes ({_MEMORY_LIMIT / 2**30:.1f} GiB)."
        )
    return size


class TensorData:
    """A shape and strides over a flat float64 storage; many views may share one."""

    __slots__ = (
        "_storage",
        "shape",
        "strides",
        "size",
        "dims",
        "_shape_arr",
        "_strides_arr",
        "_offset",
    )

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
        if hasattr(storage, "copy_to_host"):
            # A device array (after ``to_cuda_``): already a flat float64 buffer.
            if storage.ndim != 1 or storage.dtype != STORAGE_DTYPE:
                raise TypeError(
                    f"Device storage must be 1-D {np.dtype(STORAGE_DTYPE)}, not "
                    f"{storage.ndim}-D {storage.dtype}."
                )
            self._storage = storage
        else:
            self._storage = as_storage(storage)
        shape = check_shape(shape)
        strides = strides_from_shape(shape) if strides is None else check_strides(strides, shape)
        self.shape = shape
        self.strides = strides
        self.dims = len(shape)
        self.size = _size(shape)
        self._shape_arr = None
        self._strides_arr = None
        self._offset = 0
        if self.size > 0:
            # Strides are non-negative, so positions run from 0 up to this one.
            last = sum((d - 1) * s for d, s in zip(shape, strides))
            if len(self._storage) <= last:
                raise IndexingError(
                    f"Storage of length {len(self._storage)} is too small for shape "
                    f"{shape} with strides {strides} (it reaches position {last})."
                )

    @classmethod
    def _trusted(
        cls,
        storage: Storage,
        shape: tuple[int, ...],
        strides: tuple[int, ...],
        size: int,
        offset: int = 0,
    ) -> TensorData:
        """Build without validation; for internal callers that computed the layout.

        ``offset`` only records where ``storage`` starts in the buffer it was cut
        from (see ``strided_view``); positions count from ``storage[0]``.
        """
        td = object.__new__(cls)
        td._storage = storage
        td.shape = shape
        td.strides = strides
        td.dims = len(shape)
        td.size = size
        td._shape_arr = None
        td._strides_arr = None
        td._offset = offset
        return td

    def strided_view(
        self, shape: tuple[int, ...], strides: tuple[int, ...], start: int = 0
    ) -> TensorData:
        """Another layout over this storage, beginning ``start`` positions in (unchecked).

        A view with an offset holds the storage sliced from that position on
        (``storage[start:]``, a NumPy or device-array view, never a copy), so
        every kernel indexes it from 0 as usual and writes reach the base
        buffer. ``storage_offset()`` remembers the position in the base.
        """
        size = _size(shape)
        storage = self._storage if start == 0 else self._storage[start:]
        return TensorData._trusted(storage, shape, strides, size, self._offset + start)

    def storage_offset(self) -> int:
        """Where this view's first element sits in the buffer it was sliced from
        (PyTorch's ``storage_offset``); 0 unless made by indexing."""
        return self._offset

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
        """True when strides never increase from one dimension to the next.

        The course's rule, kept for its users. It does not mean the layout is
        row-major (a broadcast or gapped layout passes too): code that
        reinterprets storage asks ``is_row_major``.
        """
        last = 1 << 62
        for stride in self.strides:
            if stride > last:
                return False
            last = stride
        return True

    def is_row_major(self) -> bool:
        """True when the storage holds the values in row-major order from position 0."""
        return is_row_major(self.shape, self.strides)

    @staticmethod
    def shape_broadcast(shape_a: UserShape, shape_b: UserShape) -> tuple[int, ...]:
        return shape_broadcast(shape_a, shape_b)

    def index(self, index: int | UserIndex | Index) -> int:
        """Storage position of ``index``, checked against the shape."""
        if _is_int(index):
            index = (int(index),)
        elif isinstance(index, np.ndarray):
            index = tuple(index.reshape(-1).tolist())  # float entries are refused below
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
            if not _is_int(ind):
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
        for o in order:
            if not _is_int(o):
                raise TypeError(f"Permutation {order!r} holds {o!r}: entries must be ints.")
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
            self._offset,
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
