"""``CudaOps``: the tensor primitives as numba CUDA kernels.

Every scalar function (``operators.add``, a user's lambda, ...) compiles as a
CUDA device function, and so do the index helpers of ``tensor_data``; each
primitive is a kernel factory over them, like ``fast_ops`` on the CPU.

Data stays on the GPU: outputs are allocated there with ``cuda.device_array``,
inputs move there once (``TensorData.to_cuda_``) and values come back to the
host only when read (``t[i]``, ``to_numpy()``, printing).

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
from .tensor_ops import MapProto, TensorOps, check_reduce_dim, matmul_layout, reduce_shape

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


def tensor_reduce(fn: Callable[[float, float], float]) -> Kernel:
    """Reduce kernel: one block per output element, a shared-memory tree inside it.

    Thread ``t`` folds elements ``t, t + blockDim, ...`` of its slice, then the
    block folds the partials pairwise. Only threads that own an element hold a
    partial, so ``reduce_value`` (the start) is applied exactly once, as in
    ``SimpleOps``. The block size must be a power of two, at most 1024.
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
        cache = cuda.shared.array(MAX_REDUCE_THREADS, numba.float64)
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

    Grid ``(ceil(M/32), ceil(N/32), batch)`` of 32x32 blocks; thread ``(x, y)``
    computes ``out[batch, row0 + y, col0 + x]``. Per 32-wide step along the inner
    dim, the block loads one tile of ``a`` and one of ``b`` (each thread one
    element of each, consecutive threads reading consecutive columns), waits,
    and accumulates from shared memory. Out-of-range cells load as 0, so edge
    tiles need no special case. A batch of size 1 broadcasts (stride 0).
    """
    tile = THREADS_PER_BLOCK
    a_tile = cuda.shared.array((THREADS_PER_BLOCK, THREADS_PER_BLOCK), numba.float64)
    b_tile = cuda.shared.array((THREADS_PER_BLOCK, THREADS_PER_BLOCK), numba.float64)
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
        acc = 0.0
        for k0 in range(0, inner, tile):
            k = k0 + tx
            if row < rows and k < inner:
                a_tile[ty, tx] = a_storage[batch * a_batch + row * a_strides[1] + k * a_strides[2]]
            else:
                a_tile[ty, tx] = 0.0
            k = k0 + ty
            if k < inner and col < cols:
                b_tile[ty, tx] = b_storage[batch * b_batch + k * b_strides[1] + col * b_strides[2]]
            else:
                b_tile[ty, tx] = 0.0
            cuda.syncthreads()
            for kk in range(tile):
                acc += a_tile[ty, kk] * b_tile[kk, tx]
            cuda.syncthreads()  # before the next step overwrites the tiles
        if row < rows and col < cols:
            out[batch * out_strides[0] + row * out_strides[1] + col * out_strides[2]] = acc


tensor_matrix_multiply = cuda.jit(_tensor_matrix_multiply)


def _fill(out: Storage, value: float) -> None:
    i = cuda.grid(1)
    if i < out.size:
        out[i] = value


_fill_kernel = cuda.jit(_fill)


# Compiled kernels, one per scalar function -----------------------------------------


@functools.cache
def _device_function(fn: Callable[..., float]) -> Callable[..., float]:
    """``fn`` as a CUDA device function; an njit-ed function compiles from its source."""
    return cuda.jit(device=True)(getattr(fn, "py_func", fn))


@functools.cache
def _map_kernel(fn: Callable[[float], float]) -> Kernel:
    return tensor_map(_device_function(fn))


@functools.cache
def _zip_kernel(fn: Callable[[float, float], float]) -> Kernel:
    return tensor_zip(_device_function(fn))


@functools.cache
def _reduce_kernel(fn: Callable[[float, float], float]) -> Kernel:
    return tensor_reduce(_device_function(fn))


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


def _empty(like: Tensor, shape: tuple[int, ...]) -> Tensor:
    """An uninitialised contiguous device tensor on ``like``'s backend."""
    size = 1
    for d in shape:
        size *= d
    return like._make_like(cuda.device_array(size, dtype=np.float64), shape, size)


def gpu_usable() -> bool:
    """Whether kernels can run (a GPU, or the simulator), without raising."""
    return bool(cuda.is_available())


def device_zeros(size: int) -> DeviceStorage:
    """A device storage of ``size`` zeros, filled on the GPU (no host copy)."""
    _require_gpu()
    storage = cuda.device_array(size, dtype=np.float64)
    if size:
        blocks = (size + ELEMENTWISE_THREADS - 1) // ELEMENTWISE_THREADS
        _fill_kernel[blocks, ELEMENTWISE_THREADS](storage, 0.0)
    return storage


def _elementwise(kernel: Kernel, out: Tensor, *inputs: Tensor) -> Tensor:
    """Launch a map or zip kernel with one thread per element of ``out``."""
    out_td = out._tensor
    tds = [t._tensor for t in inputs]
    for td in (out_td, *tds):
        td.to_cuda_()
    if out.size == 0:
        return out
    flat = all(_dense(td, out.shape) for td in (out_td, *tds))
    args = [arg for td in tds for arg in _layout(td, flat)]
    # Small tensors get one block of just enough warps; large ones full blocks.
    threads = min(ELEMENTWISE_THREADS, -(-out.size // THREADS_PER_BLOCK) * THREADS_PER_BLOCK)
    blocks = -(-out.size // threads)
    kernel[blocks, threads](*_layout(out_td, flat), out.size, *args)
    return out


def _reduce_threads(n: int) -> int:
    """The block size for reducing ``n`` elements: a power of two, at most 1024."""
    return min(MAX_REDUCE_THREADS, 1 << max(n - 1, 0).bit_length())


# The backend ------------------------------------------------------------------------


class CudaOps(TensorOps):
    """The tensor primitives on a CUDA GPU (or numba's simulator)."""

    cuda = True

    @staticmethod
    def map(fn: Callable[[float], float]) -> MapProto:
        """``(a, out=None) -> out``; the kernel for ``fn`` compiles on first call."""

        def _map(a: Tensor, out: Tensor | None = None) -> Tensor:
            _require_gpu()
            if out is None:
                out = _empty(a, a.shape)
            else:
                shape_broadcast(a.shape, out.shape)
            return _elementwise(_map_kernel(fn), out, a)

        return _map

    @staticmethod
    def cmap(fn: Callable[[float], float]) -> Callable[[Tensor, Tensor], Tensor]:
        """``(a, out) -> out``: map into a given tensor."""
        return CudaOps.map(fn)

    @staticmethod
    def zip(fn: Callable[[float, float], float]) -> Callable[[Tensor, Tensor], Tensor]:
        """``(a, b) -> out`` of the broadcast shape."""

        def _zip(a: Tensor, b: Tensor) -> Tensor:
            _require_gpu()
            out = _empty(a, shape_broadcast(a.shape, b.shape))
            return _elementwise(_zip_kernel(fn), out, a, b)

        return _zip

    @staticmethod
    def reduce(
        fn: Callable[[float, float], float], start: float = 0.0
    ) -> Callable[[Tensor, int], Tensor]:
        """``(a, dim) -> out`` with ``dim`` kept at size 1, folded from ``start``."""
        start = float(start)

        def _reduce(a: Tensor, dim: int) -> Tensor:
            _require_gpu()
            dim = check_reduce_dim(a, dim)
            out = _empty(a, reduce_shape(a.shape, dim))
            if out.size == 0:
                return out
            a._tensor.to_cuda_()
            # One block per output; the block needs no more threads than the
            # slice has elements (each thread folds every blockDim-th one).
            threads = _reduce_threads(a.shape[dim])
            _reduce_kernel(fn)[out.size, threads](
                *_layout(out._tensor, False), out.size, *_layout(a._tensor, False), dim, start
            )
            return out

        return _reduce

    @staticmethod
    def matrix_multiply(a: Tensor, b: Tensor) -> Tensor:
        """Batched ``a @ b``; shapes are checked and lifted to 3-D as in SimpleOps."""
        _require_gpu()
        # Move first, so the 3-D views matmul_layout builds share device storage.
        a._tensor.to_cuda_()
        b._tensor.to_cuda_()
        a3, b3, out_shape = matmul_layout(a, b)
        # Views already are on the device; only merged batch dims (built on the host) move.
        a3.to_cuda_()
        b3.to_cuda_()
        batch = max(a3.shape[0], b3.shape[0])
        rows, cols = a3.shape[1], b3.shape[2]
        out = _empty(a, (batch, rows, cols))
        if out.size:
            tile = THREADS_PER_BLOCK
            grid = (-(-rows // tile), -(-cols // tile), min(batch, MAX_GRID_Z))
            tensor_matrix_multiply[grid, (tile, tile)](
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
        td.to_cuda_()
        return td._storage
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
