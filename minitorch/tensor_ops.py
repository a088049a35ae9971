"""The backend protocol and its readable pure-Python reference, ``SimpleOps``.

A backend supplies four primitives over strided storage: map, zip, reduce and
matrix multiply. ``TensorBackend`` specialises them for the scalar operators
that tensors use, so a tensor op is one dictionary lookup away from a kernel.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from . import operators
from .tensor_data import (
    IndexingError,
    Shape,
    Storage,
    Strides,
    TensorData,
    as_int,
    broadcast_index,
    index_to_position,
    shape_broadcast,
    to_index,
)

if TYPE_CHECKING:
    from .tensor import Tensor


class MapProto(Protocol):
    def __call__(self, x: Tensor, out: Tensor | None = ..., /) -> Tensor: ...


class ZipProto(Protocol):
    def __call__(self, a: Tensor, b: Tensor, out: Tensor | None = ..., /) -> Tensor: ...


class TensorOps:
    """The primitives a backend implements. Each returns a callable over Tensors.

    A backend also owns its storage: where values live, how they are allocated,
    cast, and converted to and from NumPy. The storage methods here keep flat
    NumPy arrays on the host, which serves every CPU backend; a backend that
    keeps data elsewhere (``CudaOps``) overrides all seven. Storages are 1-D,
    contiguous, float32 or float64; nothing above the backends looks inside one.
    """

    cuda = False
    # True when every launch reports to ``recording.recorder`` (``minitorch.compile``
    # replays such a backend's steps; the others' compiled functions run eagerly).
    records_launches = False
    # Optional fused kernels (``fast_optim``): ``adam_update(value, grad, m, v,
    # coefficients)`` and ``sgd_update(value, grad, velocity, coefficients)``, an
    # optimiser's step on contiguous storages in place; None, and the optimiser runs
    # its rule as separate kernels.
    adam_update: Callable[..., None] | None = None
    sgd_update: Callable[..., None] | None = None

    @staticmethod
    def empty(size: int, dtype: np.dtype) -> Storage:
        """A new storage of ``size`` elements (values unset)."""
        return np.empty(size, dtype)

    @staticmethod
    def zeros(size: int, dtype: np.dtype) -> Storage:
        """A new storage of ``size`` zeros."""
        return np.zeros(size, dtype)

    @staticmethod
    def full(size: int, value: float, dtype: np.dtype) -> Storage:
        """A new storage of ``size`` copies of ``value`` (rounded to ``dtype``)."""
        storage = np.empty(size, dtype)  # ``np.full`` is this, behind a Python layer
        if size == 1:
            # The number in ``x * 0.5``: 180 ns, against 300 for ``np.array((value,), dtype)``
            # (the same value, warnings and errors, for any number).
            storage[0] = value
        else:
            storage.fill(value)
        return storage

    @staticmethod
    def from_numpy(array: np.ndarray) -> Storage:
        """A storage holding ``array`` (1-D, contiguous, float32 or float64, handed over:
        it may become the storage itself)."""
        return array

    @staticmethod
    def to_numpy(storage: Storage) -> np.ndarray:
        """The storage's values as a host NumPy array (the storage itself when it is one:
        copy before handing it out)."""
        return storage if isinstance(storage, np.ndarray) else storage.copy_to_host()

    @staticmethod
    def cast(storage: Storage, dtype: np.dtype) -> Storage:
        """A new storage holding ``storage``'s values rounded to ``dtype``."""
        return storage.astype(dtype)

    @staticmethod
    def adopt(storage: Storage) -> Storage:
        """``storage`` (from any backend) where this backend keeps data: itself if it
        already is there, else a copy (a device array comes back to the host)."""
        return storage if isinstance(storage, np.ndarray) else storage.copy_to_host()

    @staticmethod
    def map(fn: Callable[[float], float]) -> MapProto:
        raise NotImplementedError

    @staticmethod
    def cmap(fn: Callable[[float], float]) -> Callable[[Tensor, Tensor], Tensor]:
        raise NotImplementedError

    @staticmethod
    def zip(fn: Callable[[float, float], float]) -> ZipProto:
        """``(a, b, out=None) -> out``: a new tensor of the broadcast shape, or written
        into ``out`` (which may be ``a`` or ``b`` itself: element by element, in place)."""
        raise NotImplementedError

    @staticmethod
    def reduce(
        fn: Callable[[float, float], float], start: float = 0.0
    ) -> Callable[[Tensor, int], Tensor]:
        raise NotImplementedError

    @staticmethod
    def matrix_multiply(a: Tensor, b: Tensor) -> Tensor:
        raise NotImplementedError


class TensorBackend:
    """The primitives of one ``TensorOps`` class, specialised for the tensor operators."""

    def __init__(self, ops: type[TensorOps]) -> None:
        if not (isinstance(ops, type) and issubclass(ops, TensorOps)):
            raise TypeError(f"TensorBackend takes a TensorOps class, not {ops!r}.")
        self.ops = ops
        self.cuda = ops.cuda
        self._maps: dict[Any, MapProto] = {}
        self._zips: dict[Any, ZipProto] = {}
        self._reduces: dict[Any, Callable[[Tensor, int], Tensor]] = {}

        self.neg_map = self.map_of(operators.neg)
        self.sigmoid_map = self.map_of(operators.sigmoid)
        self.relu_map = self.map_of(operators.relu)
        self.log_map = self.map_of(operators.log)
        self.exp_map = self.map_of(operators.exp)
        self.id_map = self.map_of(operators.id)
        self.id_cmap = ops.cmap(operators.id)
        self.inv_map = self.map_of(operators.inv)

        self.add_zip = self.zip_of(operators.add)
        self.mul_zip = self.zip_of(operators.mul)
        self.lt_zip = self.zip_of(operators.lt)
        self.eq_zip = self.zip_of(operators.eq)
        self.is_close_zip = self.zip_of(operators.is_close)
        self.relu_back_zip = self.zip_of(operators.relu_back)
        self.log_back_zip = self.zip_of(operators.log_back)
        self.inv_back_zip = self.zip_of(operators.inv_back)

        self.add_reduce = self.reduce_of(operators.add, 0.0)
        self.mul_reduce = self.reduce_of(operators.mul, 1.0)
        self.matrix_multiply = ops.matrix_multiply

        # Storage: the only way the layers above allocate, place, cast or read values.
        self.empty = ops.empty
        self.zeros = ops.zeros
        self.full = ops.full
        self.from_numpy = ops.from_numpy
        self.to_numpy = ops.to_numpy
        self.cast = ops.cast
        self.adopt = ops.adopt

    def map_of(self, fn: Callable[[float], float]) -> MapProto:
        """This backend's map for ``fn``, built once and cached."""
        op = self._maps.get(fn)
        if op is None:
            op = self._maps[fn] = self.ops.map(fn)
        return op

    def zip_of(self, fn: Callable[[float, float], float]) -> ZipProto:
        """This backend's zip for ``fn``, built once and cached."""
        op = self._zips.get(fn)
        if op is None:
            op = self._zips[fn] = self.ops.zip(fn)
        return op

    def reduce_of(
        self, fn: Callable[[float, float], float], start: float
    ) -> Callable[[Tensor, int], Tensor]:
        """This backend's reduce for ``(fn, start)``, built once and cached."""
        key = (fn, float(start))
        op = self._reduces.get(key)
        if op is None:
            op = self._reduces[key] = self.ops.reduce(fn, start)
        return op

    def __repr__(self) -> str:
        return f"TensorBackend({self.ops.__name__})"


# Shared checks and layout helpers -------------------------------------------------


def check_backend(backend: Any) -> None:
    """Raise unless ``backend`` is a TensorBackend (None means the default)."""
    if backend is not None and not isinstance(backend, TensorBackend):
        raise TypeError(
            f"backend must be a TensorBackend (e.g. minitorch.TensorBackend(minitorch.FastOps)), "
            f"not {backend!r}."
        )


# The wrapper logic every backend shares: output shapes, dtypes and allocation, and
# the checks of ``map(out=)``, ``cmap``, reduce dims and matmul shapes. A backend
# calls these around its kernels, so all of them accept and refuse the same calls.


def new_output(like: Tensor, shape: tuple[int, ...], dtype: np.dtype) -> Tensor:
    """A new contiguous tensor of ``shape`` and ``dtype`` on ``like``'s backend (values
    unset: the kernel writes every element)."""
    size = like.size if shape is like.shape else _size(shape)
    return like._make_like(like.backend.empty(size, dtype), shape, size)


def _size(shape: tuple[int, ...]) -> int:
    size = 1
    for d in shape:
        size *= d
    return size


def check_map_out(a: Tensor, out: Tensor) -> None:
    """Raise unless ``a`` broadcasts into ``out``'s shape (``out`` is never resized)
    and ``out`` has ``a``'s dtype: the rule of ``map(fn)(a, out)`` and ``cmap``."""
    if out._tensor.shape != a._tensor.shape:
        try:
            fits = shape_broadcast(a.shape, out.shape) == out.shape
        except IndexingError:
            fits = False
        if not fits:
            raise IndexingError(f"Cannot broadcast shape {a.shape} into output shape {out.shape}.")
    if out._tensor._storage.dtype != a._tensor._storage.dtype:
        raise TypeError(
            f"map into an output of dtype {out.dtype} from an input of dtype {a.dtype}: "
            "both must have one dtype (cast the input with .to(dtype) first)."
        )


def map_output(a: Tensor, out: Tensor | None) -> Tensor:
    """The tensor ``map(fn)(a, out)`` writes: ``out`` once checked, else a new one
    of ``a``'s shape and dtype."""
    if out is None:
        return new_output(a, a.shape, a._tensor._storage.dtype)
    check_map_out(a, out)
    return out


def result_dtype(a: Tensor, b: Tensor) -> np.dtype:
    """The dtype of an op on ``a`` and ``b``: float64 if either is (the Tensor
    operators cast first, so the kernels usually see one dtype)."""
    da = a._tensor._storage.dtype
    db = b._tensor._storage.dtype
    return da if da is db or da.itemsize >= db.itemsize else db


def zip_output(a: Tensor, b: Tensor) -> Tensor:
    """A new tensor of the broadcast shape of ``a`` and ``b``, in their result dtype."""
    sa, sb = a._tensor.shape, b._tensor.shape
    return new_output(a, sa if sa == sb else shape_broadcast(sa, sb), result_dtype(a, b))


def reduce_output(a: Tensor, dim: Any, start: float) -> tuple[Tensor, int]:
    """The checked dim of ``reduce(fn, start)(a, dim)``, and its output: ``a``'s shape
    with ``dim`` at size 1, in ``a``'s dtype, filled with ``start``."""
    dim = check_reduce_dim(a, dim)
    shape = reduce_shape(a.shape, dim)
    size = _size(shape)
    storage = a.backend.full(size, start, a._tensor._storage.dtype)
    return a._make_like(storage, shape, size), dim


def check_reduce_dim(a: Tensor, dim: Any) -> int:
    """Normalise a dimension (an int or a one-element tensor; negatives count from
    the end) or raise."""
    dims = a.dims
    dim = as_int(dim, "A dimension")
    if dim < -dims or dim >= dims:
        raise IndexingError(
            f"Dimension {dim} out of range for shape {a.shape} (allowed: {-dims} to {dims - 1})."
        )
    return dim % dims


def check_broadcast_into(src: tuple[int, ...], dst: tuple[int, ...]) -> None:
    """Raise unless shape ``src`` broadcasts into the output shape ``dst``."""
    if shape_broadcast(src, dst) != tuple(dst):
        raise IndexingError(f"Cannot broadcast shape {src} into output shape {dst}.")


def reduce_shape(shape: tuple[int, ...], dim: int) -> tuple[int, ...]:
    """``shape`` with ``dim`` kept at size 1."""
    return shape[:dim] + (1,) + shape[dim + 1 :]


def matmul_batch(a3: TensorData, b3: TensorData) -> int:
    """The batch size of the product of two 3-D layouts from ``matmul_layout``: a batch of
    1 broadcasts, so (1, m, k) @ (0, k, n) has 0 products (``max`` would give 1 and read
    an empty operand)."""
    return b3.shape[0] if a3.shape[0] == 1 else a3.shape[0]


def matmul_layout(a: Tensor, b: Tensor) -> tuple[TensorData, TensorData, tuple[int, ...]]:
    """Check a matrix product and lift both operands to 3-D views.

    Returns the 3-D layouts of ``a`` and ``b`` (batch dims of size 1 broadcast)
    and the user-facing output shape. More than one batch dim is flattened,
    copying only when the operands' batch dims cannot be merged.
    """
    if a.dims < 2 or b.dims < 2:
        raise IndexingError(
            f"Matrix multiply needs operands with at least 2 dims, got {a.shape} @ {b.shape}."
        )
    if a.shape[-1] != b.shape[-2]:
        raise IndexingError(
            f"Matrix multiply inner dims differ: {a.shape} @ {b.shape} "
            f"({a.shape[-1]} != {b.shape[-2]})."
        )
    batch = shape_broadcast(a.shape[:-2], b.shape[:-2])
    out_shape = batch + (a.shape[-2], b.shape[-1])
    if len(batch) <= 1:
        return _lift3(a._tensor), _lift3(b._tensor), out_shape
    flat = 1
    for d in batch:
        flat *= d
    return _flatten_batch(a, batch, flat), _flatten_batch(b, batch, flat), out_shape


def _lift3(td: TensorData) -> TensorData:
    if td.dims == 3:
        return td
    return TensorData._trusted(td._storage, (1,) + td.shape, (0,) + td.strides, td.size)


def _flatten_batch(t: Tensor, batch: tuple[int, ...], flat: int) -> TensorData:
    rows, cols = t.shape[-2:]
    full = np.broadcast_to(t.to_numpy(), batch + (rows, cols))
    storage = t.backend.from_numpy(np.ascontiguousarray(full).reshape(-1))
    return TensorData._trusted(storage, (flat, rows, cols), (rows * cols, cols, 1), len(storage))


# SimpleOps: the readable reference ------------------------------------------------


def _ieee() -> np.errstate:
    """Values read from storage are NumPy scalars, whose arithmetic is IEEE (1/0 is
    inf, 0*inf is nan) like the compiled backends'; this silences NumPy's warnings."""
    return np.errstate(divide="ignore", over="ignore", invalid="ignore", under="ignore")


class SimpleOps(TensorOps):
    """Pure-Python loops over arbitrary strides: slow, obvious, the oracle.

    In float32 each value is computed by the scalar function in Python floats
    (float64) and rounded to float32 when stored: every stored result is
    float32, but a float32 tensor's values may differ from the compiled
    backends' (which compute in float32) in the last bit or so.
    """

    @staticmethod
    def map(fn: Callable[[float], float]) -> MapProto:
        kernel = tensor_map(fn)

        def _map(a: Tensor, out: Tensor | None = None) -> Tensor:
            out = map_output(a, out)
            with _ieee():
                kernel(*out.tuple(), *a.tuple())
            return out

        return _map

    @staticmethod
    def cmap(fn: Callable[[float], float]) -> Callable[[Tensor, Tensor], Tensor]:
        kernel = tensor_map(fn)

        def _cmap(a: Tensor, out: Tensor) -> Tensor:
            check_map_out(a, out)
            with _ieee():
                kernel(*out.tuple(), *a.tuple())
            return out

        return _cmap

    @staticmethod
    def zip(fn: Callable[[float, float], float]) -> ZipProto:
        kernel = tensor_zip(fn)

        def _zip(a: Tensor, b: Tensor, out: Tensor | None = None) -> Tensor:
            if out is None:
                out = zip_output(a, b)
            else:
                check_broadcast_into(shape_broadcast(a.shape, b.shape), out.shape)
            with _ieee():
                kernel(*out.tuple(), *a.tuple(), *b.tuple())
            return out

        return _zip

    @staticmethod
    def reduce(
        fn: Callable[[float, float], float], start: float = 0.0
    ) -> Callable[[Tensor, int], Tensor]:
        kernel = tensor_reduce(fn)

        def _reduce(a: Tensor, dim: int) -> Tensor:
            out, dim = reduce_output(a, dim, start)
            with _ieee():
                kernel(*out.tuple(), *a.tuple(), dim)
            return out

        return _reduce

    @staticmethod
    def matrix_multiply(a: Tensor, b: Tensor) -> Tensor:
        a3, b3, out_shape = matmul_layout(a, b)
        batch = matmul_batch(a3, b3)
        out = new_output(a, (batch, a3.shape[1], b3.shape[2]), result_dtype(a, b))
        with _ieee():
            tensor_matrix_multiply(*out.tuple(), *a3.tuple(), *b3.tuple())
        return out.view(*out_shape)


def tensor_map(
    fn: Callable[[float], float],
) -> Callable[[Storage, Shape, Strides, Storage, Shape, Strides], None]:
    """Reference map kernel: ``out[i] = fn(in[broadcast(i)])`` for every out index."""

    def _map(
        out: Storage,
        out_shape: Shape,
        out_strides: Strides,
        in_storage: Storage,
        in_shape: Shape,
        in_strides: Strides,
    ) -> None:
        out_index = np.zeros(len(out_shape), dtype=np.int64)
        in_index = np.zeros(len(in_shape), dtype=np.int64)
        for ordinal in range(int(np.prod(out_shape))):
            to_index(ordinal, out_shape, out_index)
            broadcast_index(out_index, out_shape, in_shape, in_index)
            value = in_storage[index_to_position(in_index, in_strides)]
            out[index_to_position(out_index, out_strides)] = fn(value)

    return _map


def tensor_zip(fn: Callable[[float, float], float]) -> Callable[..., None]:
    """Reference zip kernel: ``out[i] = fn(a[broadcast(i)], b[broadcast(i)])``."""

    def _zip(
        out: Storage,
        out_shape: Shape,
        out_strides: Strides,
        a_storage: Storage,
        a_shape: Shape,
        a_strides: Strides,
        b_storage: Storage,
        b_shape: Shape,
        b_strides: Strides,
    ) -> None:
        out_index = np.zeros(len(out_shape), dtype=np.int64)
        a_index = np.zeros(len(a_shape), dtype=np.int64)
        b_index = np.zeros(len(b_shape), dtype=np.int64)
        for ordinal in range(int(np.prod(out_shape))):
            to_index(ordinal, out_shape, out_index)
            broadcast_index(out_index, out_shape, a_shape, a_index)
            broadcast_index(out_index, out_shape, b_shape, b_index)
            a_value = a_storage[index_to_position(a_index, a_strides)]
            b_value = b_storage[index_to_position(b_index, b_strides)]
            out[index_to_position(out_index, out_strides)] = fn(a_value, b_value)

    return _zip


def tensor_reduce(fn: Callable[[float, float], float]) -> Callable[..., None]:
    """Reference reduce kernel: fold ``a`` along ``reduce_dim`` into ``out`` (pre-filled)."""

    def _reduce(
        out: Storage,
        out_shape: Shape,
        out_strides: Strides,
        a_storage: Storage,
        a_shape: Shape,
        a_strides: Strides,
        reduce_dim: int,
    ) -> None:
        out_index = np.zeros(len(out_shape), dtype=np.int64)
        for ordinal in range(int(np.prod(out_shape))):
            to_index(ordinal, out_shape, out_index)
            out_position = index_to_position(out_index, out_strides)
            a_index = out_index.copy()
            acc = out[out_position]
            for k in range(a_shape[reduce_dim]):
                a_index[reduce_dim] = k
                acc = fn(acc, a_storage[index_to_position(a_index, a_strides)])
            out[out_position] = acc

    return _reduce


def tensor_matrix_multiply(
    out: Storage,
    out_shape: Shape,
    out_strides: Strides,
    a_storage: Storage,
    a_shape: Shape,
    a_strides: Strides,
    b_storage: Storage,
    b_shape: Shape,
    b_strides: Strides,
) -> None:
    """Reference batched matrix multiply on 3-D operands; a batch of 1 broadcasts."""
    a_batch = a_strides[0] if a_shape[0] > 1 else 0
    b_batch = b_strides[0] if b_shape[0] > 1 else 0
    for n in range(out_shape[0]):
        for i in range(out_shape[1]):
            for j in range(out_shape[2]):
                acc = 0.0
                for k in range(a_shape[2]):
                    acc += (
                        a_storage[n * a_batch + i * a_strides[1] + k * a_strides[2]]
                        * b_storage[n * b_batch + k * b_strides[1] + j * b_strides[2]]
                    )
                out[n * out_strides[0] + i * out_strides[1] + j * out_strides[2]] = acc


SimpleBackend = TensorBackend(SimpleOps)
