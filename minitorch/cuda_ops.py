"""``CudaOps``: the tensor primitives as numba CUDA kernels.

Every scalar function (``operators.add``, a user's lambda, ...) compiles as a
CUDA device function, and so do the index helpers of ``tensor_data``; each
primitive is a kernel factory over them, like ``fast_ops`` on the CPU.

Data stays on the GPU: ``CudaOps`` owns its storage (device arrays, allocated,
filled and cast on the GPU), inputs move there once (``CudaOps.adopt``) and
values come back to the host only when read (``t[i]``, ``to_numpy()``, printing).
Kernels whose local values have a type (the reduce scratch, the matmul tiles,
accumulators) are built once per dtype, so float32 stays float32 throughout.

Nothing here compiles or touches a GPU at import: kernels compile on first
use, which raises a clear error when numba has no GPU and no simulator.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeAlias

import numba
import numpy as np
from numba import cuda

from . import fast_math
from .tensor_data import (
    MAX_DIMS,
    Shape,
    Storage,
    Strides,
    TensorData,
    broadcast_index,
    index_to_position,
    shape_broadcast,
    strides_from_shape,
    to_index,
)
from .tensor_ops import (
    MapProto,
    TensorOps,
    ZipProto,
    check_broadcast_into,
    check_map_out,
    map_output,
    matmul_batch,
    matmul_layout,
    new_output,
    reduce_output,
    result_dtype,
    zip_output,
)

if TYPE_CHECKING:
    from .tensor import Tensor

# A numba device array (``DeviceNDArray``, or the simulator's ``FakeCUDAArray``).
DeviceStorage: TypeAlias = Any
# A launchable ``cuda.jit`` kernel: ``kernel[grid, block](*args)``.
Kernel: TypeAlias = Any

THREADS_PER_BLOCK = 32  # a warp: the practice kernels' block and the matmul tile side
ELEMENTWISE_THREADS = 256  # map / zip block size once a tensor fills it
MAX_REDUCE_THREADS = 1024  # the largest block, and the size of the reduce scratch
MAX_GRID_Z = 65535  # CUDA's limit on gridDim.z; larger matmul batches loop

# The index helpers, as device functions (a dispatcher compiles on first launch).
_to_index = cuda.jit(device=True)(to_index)
_index_to_position = cuda.jit(device=True)(index_to_position)
_broadcast_index = cuda.jit(device=True)(broadcast_index)


@functools.cache
def _require_gpu() -> None:
    """Raise unless numba can run kernels (cached once it can)."""
    if not cuda.is_available():
        raise RuntimeError(
            "CudaOps needs a CUDA GPU: numba.cuda.is_available() is False. Install an "
            "NVIDIA driver, or set NUMBA_ENABLE_CUDASIM=1 before numba is imported to use "
            "the (slow) CUDA simulator."
        )


# Kernel factories ----------------------------------------------------------------
# Each takes a scalar function already compiled as a device function.


def tensor_map(fn: Callable[[float], float]) -> Kernel:
    """Map kernel, one thread per output element: ``out[i] = fn(in[broadcast(i)])``."""

    def _map(
        out: Storage,
        out_shape: Shape,
        out_strides: Strides,
        out_size: int,
        in_storage: Storage,
        in_shape: Shape,
        in_strides: Strides,
    ) -> None:
        i = cuda.grid(1)
        if i < out_size:
            out_index = cuda.local.array(MAX_DIMS, numba.int32)[: len(out_shape)]
            in_index = cuda.local.array(MAX_DIMS, numba.int32)[: len(in_shape)]
            _to_index(i, out_shape, out_index)
            _broadcast_index(out_index, out_shape, in_shape, in_index)
            value = in_storage[_index_to_position(in_index, in_strides)]
            out[_index_to_position(out_index, out_strides)] = fn(value)

    return cuda.jit(_map)


def tensor_zip(fn: Callable[[float, float], float]) -> Kernel:
    """Zip kernel, one thread per output element: ``out[i] = fn(a[..], b[..])``."""

    def _zip(
        out: Storage,
        out_shape: Shape,
        out_strides: Strides,
        out_size: int,
        a_storage: Storage,
        a_shape: Shape,
        a_strides: Strides,
        b_storage: Storage,
        b_shape: Shape,
        b_strides: Strides,
    ) -> None:
        i = cuda.grid(1)
        if i < out_size:
            out_index = cuda.local.array(MAX_DIMS, numba.int32)[: len(out_shape)]
            a_index = cuda.local.array(MAX_DIMS, numba.int32)[: len(a_shape)]
            b_index = cuda.local.array(MAX_DIMS, numba.int32)[: len(b_shape)]
            _to_index(i, out_shape, out_index)
            _broadcast_index(out_index, out_shape, a_shape, a_index)
            _broadcast_index(out_index, out_shape, b_shape, b_index)
            a_value = a_storage[_index_to_position(a_index, a_strides)]
            b_value = b_storage[_index_to_position(b_index, b_strides)]
            out[_index_to_position(out_index, out_strides)] = fn(a_value, b_value)

    return cuda.jit(_zip)


def tensor_reduce(fn: Callable[[float, float], float], dtype: Any = numba.float64) -> Kernel:
    """Reduce kernel: one block per output element, a shared-memory tree inside it.

    Thread ``t`` folds elements ``t, t + blockDim, ...`` of its slice, then the
    block folds the partials pairwise. Only threads that own an element hold a
    partial, so ``reduce_value`` (the start) is applied exactly once, as in
    ``SimpleOps``. The block size must be a power of two, at most 1024. ``dtype``
    (a numba float type) is the scratch's, the storages'.
    """

    def _reduce(
        out: Storage,
        out_shape: Shape,
        out_strides: Strides,
        out_size: int,
        a_storage: Storage,
        a_shape: Shape,
        a_strides: Strides,
        reduce_dim: int,
        reduce_value: float,
    ) -> None:
        cache = cuda.shared.array(MAX_REDUCE_THREADS, dtype)
        block = cuda.blockIdx.x
        if block >= out_size:
            return  # the whole block leaves, so no thread misses a syncthreads
        tid = cuda.threadIdx.x
        threads = cuda.blockDim.x
        index = cuda.local.array(MAX_DIMS, numba.int32)[: len(out_shape)]
        _to_index(block, out_shape, index)
        # ``out`` has a's shape with the reduced dim at size 1, so the same
        # index (0 along ``reduce_dim``) finds the start of the slice in ``a``.
        start = _index_to_position(index, a_strides)
        step = a_strides[reduce_dim]
        n = a_shape[reduce_dim]
        if tid < n:
            acc = a_storage[start + tid * step]
            for k in range(tid + threads, n, threads):
                acc = fn(acc, a_storage[start + k * step])
            cache[tid] = acc
        cuda.syncthreads()
        live = min(n, threads)  # cache[0:live] hold partials
        stride = threads // 2
        while stride > 0:
            if tid < stride and tid + stride < live:
                cache[tid] = fn(cache[tid], cache[tid + stride])
            cuda.syncthreads()
            stride //= 2
        if tid == 0:
            result = fn(reduce_value, cache[0]) if n > 0 else reduce_value
            out[_index_to_position(index, out_strides)] = result

    return cuda.jit(_reduce)


def matmul_kernel(dtype: Any, tile: int = THREADS_PER_BLOCK) -> Kernel:
    """The tiled matmul kernel for storages of ``dtype`` (a numba float type), in blocks
    of ``tile`` x ``tile`` threads (a compile-time constant: it sizes the shared tiles)."""

    def _tensor_matrix_multiply(
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
        """Batched matmul on 3-D operands, tiled through shared memory.

        Grid ``(ceil(M/tile), ceil(N/tile), batch)`` of tile x tile blocks; thread
        ``(x, y)`` computes ``out[batch, row0 + y, col0 + x]``. Per tile-wide step along
        the inner dim, the block loads one tile of ``a`` and one of ``b`` (each thread
        one element of each, consecutive threads reading consecutive columns), waits,
        and accumulates from shared memory. Out-of-range cells load as 0, so edge
        tiles need no special case, and each element sums its products in k order
        whatever the tile. A batch of size 1 broadcasts (stride 0).
        """
        a_tile = cuda.shared.array((tile, tile), dtype)
        b_tile = cuda.shared.array((tile, tile), dtype)
        tx = cuda.threadIdx.x
        ty = cuda.threadIdx.y
        row = cuda.blockIdx.x * tile + ty
        col = cuda.blockIdx.y * tile + tx
        rows = out_shape[1]
        cols = out_shape[2]
        inner = a_shape[2]
        a_batch = a_strides[0] if a_shape[0] > 1 else 0
        b_batch = b_strides[0] if b_shape[0] > 1 else 0
        for batch in range(cuda.blockIdx.z, out_shape[0], cuda.gridDim.z):
            acc = dtype(0)
            for k0 in range(0, inner, tile):
                k = k0 + tx
                if row < rows and k < inner:
                    a_pos = batch * a_batch + row * a_strides[1] + k * a_strides[2]
                    a_tile[ty, tx] = a_storage[a_pos]
                else:
                    a_tile[ty, tx] = 0
                k = k0 + ty
                if k < inner and col < cols:
                    b_pos = batch * b_batch + k * b_strides[1] + col * b_strides[2]
                    b_tile[ty, tx] = b_storage[b_pos]
                else:
                    b_tile[ty, tx] = 0
                cuda.syncthreads()
                for kk in range(tile):
                    acc += a_tile[ty, kk] * b_tile[kk, tx]
                cuda.syncthreads()  # before the next step overwrites the tiles
            if row < rows and col < cols:
                o_pos = batch * out_strides[0] + row * out_strides[1] + col * out_strides[2]
                out[o_pos] = acc

    return cuda.jit(_tensor_matrix_multiply)


tensor_matrix_multiply = matmul_kernel(numba.float64)


def _fill(out: Storage, value: float) -> None:
    i = cuda.grid(1)
    if i < out.size:
        out[i] = value


_fill_kernel = cuda.jit(_fill)


def _copy(out: Storage, source: Storage) -> None:
    """``out[i] = source[i]``, converting to ``out``'s dtype (a cast)."""
    i = cuda.grid(1)
    if i < out.size:
        out[i] = source[i]


_copy_kernel = cuda.jit(_copy)

# numba's float type for each storage dtype.
_NUMBA_TYPES = {np.dtype(np.float32): numba.float32, np.dtype(np.float64): numba.float64}


# Compiled kernels, one per scalar function -----------------------------------------


@functools.cache
def _device_function(fn: Callable[..., float], dtype: np.dtype) -> Callable[..., float]:
    """``fn`` as a CUDA device function for ``dtype`` values; an njit-ed function compiles
    from its source. For float32 its numbers become float32 (``fast_math.float32_variant``),
    since numba types a Python literal as float64 and would widen the arithmetic."""
    py = getattr(fn, "py_func", fn)
    return cuda.jit(device=True)(fast_math.float32_variant(py) if dtype == np.float32 else py)


@functools.cache
def _map_kernel(fn: Callable[[float], float], dtype: np.dtype) -> Kernel:
    return tensor_map(_device_function(fn, dtype))


@functools.cache
def _zip_kernel(fn: Callable[[float, float], float], dtype: np.dtype) -> Kernel:
    return tensor_zip(_device_function(fn, dtype))


@functools.cache
def _reduce_kernel(fn: Callable[[float, float], float], dtype: np.dtype) -> Kernel:
    return tensor_reduce(_device_function(fn, dtype), _NUMBA_TYPES[dtype])


@functools.cache
def _matmul_kernel(dtype: np.dtype, tile: int) -> Kernel:
    # ``tile`` has no default: the cache would key (dtype,) and (dtype, 32) apart and
    # build the same kernel twice.
    if dtype == np.float64 and tile == THREADS_PER_BLOCK:
        return tensor_matrix_multiply
    return matmul_kernel(_NUMBA_TYPES[dtype], tile)


def matmul_tile(rows: int, cols: int) -> int:
    """The side of a matmul block for an output of ``rows`` x ``cols``: 32 (a warp by a
    warp), or 8 or 16 when that covers the output, so that a small product (a layer on
    a small batch) does not start 1024 threads to use a few dozen."""
    largest = max(rows, cols)
    return 8 if largest <= 8 else 16 if largest <= 16 else THREADS_PER_BLOCK


# Launch helpers ---------------------------------------------------------------------


@functools.lru_cache(maxsize=4096)
def _device_ints(values: tuple[int, ...]) -> DeviceStorage:
    """A device copy of a shape or strides tuple, kept so launches copy no metadata."""
    return cuda.to_device(np.array(values, dtype=np.int64))


def _layout(td: TensorData, flat: bool) -> tuple[DeviceStorage, DeviceStorage, DeviceStorage]:
    """Kernel arguments for ``td``: its storage, shape and strides, all on the device.

    ``flat`` passes a dense tensor as 1-D, so the kernel's index arithmetic is
    one division instead of one per dim.
    """
    if flat:
        return td._storage, _device_ints((td.size,)), _device_ints((1,))
    return td._storage, _device_ints(td.shape), _device_ints(td.strides)


def _dense(td: TensorData, shape: tuple[int, ...]) -> bool:
    """True when ``td`` has ``shape`` and row-major strides (no broadcast, no permute)."""
    return td.shape == shape and td.strides == strides_from_shape(shape)


def _grid(size: int) -> tuple[int, int]:
    """(blocks, threads) for one thread per element of ``size`` (> 0): full blocks, or one
    block of just enough threads. A GPU runs a part warp as a whole one, so rounding a
    small block up to a warp would gain nothing; numba's simulator runs a Python thread
    per thread, and filling one element started 256 (nine tenths of its threads in the
    loss tests)."""
    threads = min(ELEMENTWISE_THREADS, size)
    return -(-size // threads), threads


def device_full(size: int, value: float, dtype: np.dtype = np.float64) -> DeviceStorage:
    """A device storage of ``size`` copies of ``value``, filled on the GPU (no host copy)."""
    _require_gpu()
    storage = cuda.device_array(size, dtype=dtype)
    if size:
        _fill_kernel[_grid(size)](storage, storage.dtype.type(value))
    return storage


def device_zeros(size: int, dtype: np.dtype = np.float64) -> DeviceStorage:
    """A device storage of ``size`` zeros, filled on the GPU (no host copy)."""
    return device_full(size, 0.0, dtype)


def _on_device(td: TensorData) -> TensorData:
    """``td`` with its storage on the device (moved in place if it was built on the
    host, as ``Tensor(td, backend=...)`` allows), so that views share it."""
    td._storage = CudaOps.adopt(td._storage)
    return td


def _elementwise(kernel: Kernel, out: Tensor, *inputs: Tensor) -> Tensor:
    """Launch a map or zip kernel with one thread per element of ``out``."""
    out_td = _on_device(out._tensor)
    tds = [_on_device(t._tensor) for t in inputs]
    if out.size == 0:
        return out
    flat = all(_dense(td, out.shape) for td in (out_td, *tds))
    args = [arg for td in tds for arg in _layout(td, flat)]
    kernel[_grid(out.size)](*_layout(out_td, flat), out.size, *args)
    return out


def _reduce_threads(n: int) -> int:
    """The block size for reducing ``n`` elements: a power of two, at most 1024."""
    return min(MAX_REDUCE_THREADS, 1 << max(n - 1, 0).bit_length())


# The backend ------------------------------------------------------------------------


class CudaOps(TensorOps):
    """The tensor primitives on a CUDA GPU (or numba's simulator)."""

    cuda = True

    # Storage: numba device arrays, allocated, filled and cast on the GPU.

    @staticmethod
    def empty(size: int, dtype: np.dtype) -> DeviceStorage:
        _require_gpu()
        return cuda.device_array(size, dtype=dtype)

    @staticmethod
    def zeros(size: int, dtype: np.dtype) -> DeviceStorage:
        return device_full(size, 0.0, dtype)

    @staticmethod
    def full(size: int, value: float, dtype: np.dtype) -> DeviceStorage:
        return device_full(size, value, dtype)

    @staticmethod
    def from_numpy(array: np.ndarray) -> DeviceStorage:
        _require_gpu()
        return cuda.to_device(array)

    @staticmethod
    def to_numpy(storage: DeviceStorage) -> np.ndarray:
        return storage if isinstance(storage, np.ndarray) else storage.copy_to_host()

    @staticmethod
    def cast(storage: DeviceStorage, dtype: np.dtype) -> DeviceStorage:
        source = CudaOps.adopt(storage)
        out = cuda.device_array(len(source), dtype=dtype)
        if len(source):
            _copy_kernel[_grid(len(source))](out, source)
        return out

    @staticmethod
    def adopt(storage: Any) -> DeviceStorage:
        # ``copy_to_host`` marks a device array (the simulator has no ``is_cuda_array``).
        if hasattr(storage, "copy_to_host"):
            return storage
        _require_gpu()
        return cuda.to_device(storage)

    @staticmethod
    def map(fn: Callable[[float], float]) -> MapProto:
        """``(a, out=None) -> out``; the kernel for ``fn`` compiles on first call."""

        def _map(a: Tensor, out: Tensor | None = None) -> Tensor:
            _require_gpu()
            out = map_output(a, out)
            return _elementwise(_map_kernel(fn, out.dtype), out, a)

        return _map

    @staticmethod
    def cmap(fn: Callable[[float], float]) -> Callable[[Tensor, Tensor], Tensor]:
        """``(a, out) -> out``: map into a given tensor."""

        def _cmap(a: Tensor, out: Tensor) -> Tensor:
            _require_gpu()
            check_map_out(a, out)
            return _elementwise(_map_kernel(fn, out.dtype), out, a)

        return _cmap

    @staticmethod
    def zip(fn: Callable[[float, float], float]) -> ZipProto:
        """``(a, b, out=None) -> out`` of the broadcast shape (or into ``out``)."""

        def _zip(a: Tensor, b: Tensor, out: Tensor | None = None) -> Tensor:
            _require_gpu()
            if out is None:
                out = zip_output(a, b)
            else:
                check_broadcast_into(shape_broadcast(a.shape, b.shape), out.shape)
            return _elementwise(_zip_kernel(fn, out.dtype), out, a, b)

        return _zip

    @staticmethod
    def reduce(
        fn: Callable[[float, float], float], start: float = 0.0
    ) -> Callable[[Tensor, int], Tensor]:
        """``(a, dim) -> out`` with ``dim`` kept at size 1, folded from ``start``."""
        start = float(start)

        def _reduce(a: Tensor, dim: int) -> Tensor:
            _require_gpu()
            out, dim = reduce_output(a, dim, start)
            dtype = out.dtype
            if out.size == 0 or a.size == 0:
                return out
            _on_device(a._tensor)
            # One block per output; the block needs no more threads than the
            # slice has elements (each thread folds every blockDim-th one).
            threads = _reduce_threads(a.shape[dim])
            _reduce_kernel(fn, dtype)[out.size, threads](
                *_layout(out._tensor, False),
                out.size,
                *_layout(a._tensor, False),
                dim,
                dtype.type(start),
            )
            return out

        return _reduce

    @staticmethod
    def matrix_multiply(a: Tensor, b: Tensor) -> Tensor:
        """Batched ``a @ b``; shapes are checked and lifted to 3-D as in SimpleOps."""
        _require_gpu()
        # Move first, so the 3-D views matmul_layout builds share device storage.
        _on_device(a._tensor)
        _on_device(b._tensor)
        a3, b3, out_shape = matmul_layout(a, b)
        # Views already are on the device; only merged batch dims (built on the host) move.
        _on_device(a3)
        _on_device(b3)
        batch = matmul_batch(a3, b3)
        rows, cols = a3.shape[1], b3.shape[2]
        out = new_output(a, (batch, rows, cols), result_dtype(a, b))
        dtype = out.dtype
        if out.size:
            tile = matmul_tile(rows, cols)
            grid = (-(-rows // tile), -(-cols // tile), min(batch, MAX_GRID_Z))
            _matmul_kernel(dtype, tile)[grid, (tile, tile)](
                *_layout(out._tensor, False), *_layout(a3, False), *_layout(b3, False)
            )
        return out.view(*out_shape)


# Practice kernels (course exercises) -------------------------------------------------


def _sum_practice(out: Storage, a: Storage, size: int) -> None:
    """Sum each 32-element block of ``a`` into ``out[block]`` by a shared-memory tree."""
    cache = cuda.shared.array(THREADS_PER_BLOCK, numba.float64)
    i = cuda.blockIdx.x * THREADS_PER_BLOCK + cuda.threadIdx.x
    pos = cuda.threadIdx.x
    cache[pos] = a[i] if i < size else 0.0
    cuda.syncthreads()
    stride = THREADS_PER_BLOCK // 2
    while stride > 0:
        if pos < stride:
            cache[pos] += cache[pos + stride]
        cuda.syncthreads()
        stride //= 2
    if pos == 0 and cuda.blockIdx.x < len(out):
        out[cuda.blockIdx.x] = cache[0]


jit_sum_practice = cuda.jit(_sum_practice)


def _mm_practice(out: Storage, a: Storage, b: Storage, size: int) -> None:
    """``out = a @ b`` for row-major ``(size, size)`` operands, size <= 32, in one block."""
    a_shared = cuda.shared.array((THREADS_PER_BLOCK, THREADS_PER_BLOCK), numba.float64)
    b_shared = cuda.shared.array((THREADS_PER_BLOCK, THREADS_PER_BLOCK), numba.float64)
    i = cuda.threadIdx.y
    j = cuda.threadIdx.x
    inside = i < size and j < size
    if inside:
        a_shared[i, j] = a[size * i + j]
        b_shared[i, j] = b[size * i + j]
    cuda.syncthreads()
    if inside:
        acc = 0.0
        for k in range(size):
            acc += a_shared[i, k] * b_shared[k, j]
        out[size * i + j] = acc


jit_mm_practice = cuda.jit(_mm_practice)


def _row_major_storage(td: TensorData) -> DeviceStorage:
    """A device storage holding ``td``'s values in row-major order."""
    if td.strides == strides_from_shape(td.shape):
        return _on_device(td)._storage
    return cuda.to_device(td.to_numpy().reshape(-1))


def sum_practice(a: Tensor | TensorData) -> TensorData:
    """Block sums of a 1-D tensor of at most 64 elements: shape (2,), on the device."""
    _require_gpu()
    td = getattr(a, "_tensor", a)
    if td.dims != 1 or td.size > 2 * THREADS_PER_BLOCK:
        raise ValueError(f"sum_practice takes a 1-D tensor of at most 64 elements, not {td.shape}.")
    out = TensorData(device_zeros(2), (2,))
    blocks = max(1, -(-td.size // THREADS_PER_BLOCK))
    jit_sum_practice[blocks, THREADS_PER_BLOCK](out._storage, _row_major_storage(td), td.size)
    return out


def mm_practice(a: Tensor | TensorData, b: Tensor | TensorData) -> TensorData:
    """``a @ b`` for square ``(n, n)`` operands, n <= 32, as one 32x32 block."""
    _require_gpu()
    ta = getattr(a, "_tensor", a)
    tb = getattr(b, "_tensor", b)
    n = ta.shape[0] if ta.dims == 2 else -1
    if not (ta.shape == tb.shape == (n, n) and n <= THREADS_PER_BLOCK):
        raise ValueError(
            f"mm_practice takes two (n, n) tensors with n <= 32, not {ta.shape} and {tb.shape}."
        )
    out = cuda.device_array(n * n, dtype=np.float64)
    jit_mm_practice[1, (THREADS_PER_BLOCK, THREADS_PER_BLOCK)](
        out, _row_major_storage(ta), _row_major_storage(tb), n
    )
    return TensorData(out, (n, n))
