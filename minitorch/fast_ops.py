"""FastOps: the four primitives as compiled, parallel Numba kernels.

Python does the general work once per call (output allocation, simplifying
the layout, picking serial or parallel); the loops run in machine code from
the templates in ``fast_kernels``, compiled per scalar function on first use
and cached on disk (``kernel_cache``).
"""

from __future__ import annotations

import types
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
from numba import prange
from numba.core.errors import NumbaError

from . import fast_kernels, operators, recording
from .kernel_cache import ScalarCompileError, load_kernels, njit
from .tensor_data import Shape, Storage, Strides, TensorData, strides_from_shape
from .tensor_ops import (
    MapProto,
    TensorOps,
    ZipProto,
    check_broadcast_into,
    check_reduce_dim,
    matmul_layout,
    reduce_shape,
)

if TYPE_CHECKING:
    from .tensor import Tensor

# Reductions whose fold may run in independent lanes (associative and commutative).
# Not ``operators.max``: with a NaN its result depends on the order of the fold.
_LANE_SAFE = (operators.add, operators.mul, operators.maximum)

# Below this many elements a thread launch costs more than the loop.
PARALLEL_THRESHOLD = 1 << 15


# Layout simplification ---------------------------------------------------------


def elementwise_layout(
    shape: tuple[int, ...], operands: list[tuple[tuple[int, ...], tuple[int, ...]]]
) -> tuple[list[int], list[list[int]]]:
    """Simplify an elementwise loop over ``shape`` for every operand.

    ``operands`` are ``(shape, strides)`` pairs that broadcast to ``shape``
    (the first is usually the output). Broadcast dims get stride 0, size-1
    dims are dropped, and neighbours that are contiguous in every operand are
    merged. Returns the simplified shape and each operand's strides.
    """
    nd = len(shape)
    strides = []
    for op_shape, op_strides in operands:
        off = nd - len(op_shape)
        full = [0] * nd
        for d in range(len(op_shape)):
            if op_shape[d] != 1:
                full[d + off] = op_strides[d]
        strides.append(full)
    dims = [d for d in range(nd) if shape[d] != 1]
    out_shape: list[int] = []
    out_strides: list[list[int]] = [[] for _ in operands]
    for d in dims:
        if out_shape:
            n = shape[d]
            if all(s[-1] == st[d] * n for s, st in zip(out_strides, strides)):
                out_shape[-1] *= n
                for s, st in zip(out_strides, strides):
                    s[-1] = st[d]
                continue
        out_shape.append(shape[d])
        for s, st in zip(out_strides, strides):
            s.append(st[d])
    return out_shape, out_strides


class _Elementwise:
    """The map (one input) or zip (two inputs) kernels of one scalar function."""

    def __init__(self, fn: Callable[..., float], module: Any, kind: str) -> None:
        self.fn = fn
        self.flat_ser = getattr(module, kind + "2d_ser")
        self.flat_par = getattr(module, kind + "2d_par")
        self.nd_ser = getattr(module, kind + "_nd_ser")
        self.nd_par = getattr(module, kind + "_nd_par")

    def run(self, otd: TensorData, *tds: TensorData, fresh: bool = False) -> None:
        """Fill ``otd`` (broadcasting every input into its shape).

        ``fresh`` says ``otd`` was just allocated contiguous, sparing the check.
        """
        size = otd.size
        if size == 0:
            return
        par = size >= PARALLEL_THRESHOLD
        try:
            if fresh or otd.strides == strides_from_shape(otd.shape):
                # Fast path: each input contiguous like the output, a single value,
                # or a contiguous trailing block repeated along the leading dims (a bias).
                inner = 0
                pairs: list[tuple[int, int] | None] = []  # None: contiguous like the output
                for td in tds:
                    if td.size == 1:
                        pairs.append((0, 0))
                    elif td.strides == otd.strides and td.shape == otd.shape:
                        pairs.append(None)
                    elif inner == 0 and _is_trailing_block(td, otd.shape):
                        inner = td.size
                        pairs.append((0, 1))
                    else:
                        break
                else:
                    rows, cols = (1, size) if inner == 0 else (size // inner, inner)
                    args: list[Any] = [otd._storage, *(td._storage for td in tds)]
                    args.extend((rows, cols, cols, 1))
                    for pair in pairs:
                        args.extend(pair or (cols, 1))
                    _launch(self.flat_par if par else self.flat_ser, tuple(args))
                    return
            self._general(otd, tds, par)
        except NumbaError as e:
            raise _compile_error(self.fn, e) from None

    def run_flat(self, out: Storage, *storages: Storage) -> None:
        """``out[i] = fn(x[i], ...)`` over contiguous storages of ``out``'s length."""
        size = len(out)
        if size == 0:
            return
        kernel = self.flat_par if size >= PARALLEL_THRESHOLD else self.flat_ser
        args = (out, *storages, 1, size, size, 1, *((0, 1) * len(storages)))
        try:
            kernel(*args)
        except NumbaError as e:
            raise _compile_error(self.fn, e) from None
        if recording.recorder is not None:
            recording.recorder.launch(kernel, args)

    def _general(self, otd: TensorData, tds: tuple[TensorData, ...], par: bool) -> None:
        shape, strides = elementwise_layout(
            otd.shape, [(otd.shape, otd.strides)] + [(td.shape, td.strides) for td in tds]
        )
        storages = [otd._storage] + [td._storage for td in tds]
        if len(shape) <= 2:
            if not shape:
                shape = [1, 1]
                strides = [[0, 0] for _ in strides]
            elif len(shape) == 1:
                shape = [1, shape[0]]
                strides = [[0, s[0]] for s in strides]
            args = [x for s in strides for x in s]
            kernel = self.flat_par if par else self.flat_ser
            _launch(kernel, (*storages, shape[0], shape[1], *args))
            return
        shape_arr = np.array(shape, dtype=np.int64)
        arrays = []
        for storage, s in zip(storages, strides):
            arrays.extend((storage, shape_arr, np.array(s, dtype=np.int64)))
        _launch(self.nd_par if par else self.nd_ser, tuple(arrays))


def _launch(kernel: Callable[..., None], args: tuple[Any, ...]) -> None:
    """Run ``kernel(*args)`` (which writes ``args[0]``) and report it to a recorder."""
    kernel(*args)
    if recording.recorder is not None:
        recording.recorder.launch(kernel, args)


def _is_trailing_block(td: TensorData, shape: tuple[int, ...]) -> bool:
    """True when ``td`` is contiguous and its shape (less leading 1s) ends ``shape``."""
    own = td.shape
    while len(own) > 1 and own[0] == 1:
        own = own[1:]
    n = len(own)
    return (
        n < len(shape)
        and shape[len(shape) - n :] == own
        and td.strides[len(td.shape) - n :] == strides_from_shape(own)
    )


def _compile_error(fn: Callable[..., float], e: Exception) -> ScalarCompileError:
    """A short error naming the user's function instead of numba's traceback dump."""
    name = getattr(fn, "__qualname__", repr(fn))
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    reason = [line for line in lines if not line.startswith("Failed in")][:3]
    where = [line for line in lines if line.startswith("File ")][-1:]
    detail = " ".join(reason + where) or type(e).__name__
    return ScalarCompileError(
        f"Cannot compile scalar function {name!r} into a FastOps kernel "
        f"(use floats, arithmetic, math.* and if/else): {detail}"
    )


def _empty_like_shape(a: Tensor, shape: tuple[int, ...]) -> Tensor:
    """A fresh contiguous output on ``a``'s backend (values unset)."""
    size = a._tensor.size if shape is a._tensor.shape else _size(shape)
    return a._make_like(np.empty(size), shape, size)


def _size(shape: tuple[int, ...]) -> int:
    size = 1
    for s in shape:
        size *= s
    return size


# The backend -----------------------------------------------------------------


class FastOps(TensorOps):
    """Numba-compiled, parallel map / zip / reduce / matrix multiply."""

    records_launches = True

    @staticmethod
    def map(fn: Callable[[float], float]) -> MapProto:
        engine = _Elementwise(fn, load_kernels("map", fast_kernels.MAP_SOURCE, fn), "map")

        def _map(a: Tensor, out: Tensor | None = None) -> Tensor:
            if out is None:
                ta = a._tensor
                if ta.strides == strides_from_shape(ta.shape):
                    storage = np.empty(ta.size)
                    engine.run_flat(storage, ta._storage)
                    return a._make_like(storage, ta.shape, ta.size)
                out = _empty_like_shape(a, a.shape)
                engine.run(out._tensor, ta, fresh=True)
                return out
            if out._tensor.shape != a._tensor.shape:
                check_broadcast_into(a.shape, out.shape)
            engine.run(out._tensor, a._tensor)
            return out

        return _map

    @staticmethod
    def cmap(fn: Callable[[float], float]) -> Callable[[Tensor, Tensor], Tensor]:
        engine = _Elementwise(fn, load_kernels("map", fast_kernels.MAP_SOURCE, fn), "map")

        def _cmap(a: Tensor, out: Tensor) -> Tensor:
            check_broadcast_into(a.shape, out.shape)
            engine.run(out._tensor, a._tensor)
            return out

        return _cmap

    @staticmethod
    def zip(fn: Callable[[float, float], float]) -> ZipProto:
        engine = _Elementwise(fn, load_kernels("zip", fast_kernels.ZIP_SOURCE, fn), "zip")

        def _zip(a: Tensor, b: Tensor, out: Tensor | None = None) -> Tensor:
            ta, tb = a._tensor, b._tensor
            sa, sb = ta.shape, tb.shape
            if out is not None:
                check_broadcast_into(sa if sa == sb else TensorData.shape_broadcast(sa, sb),
                                     out.shape)  # fmt: skip
                engine.run(out._tensor, ta, tb)
                return out
            if sa == sb and ta.strides == tb.strides == strides_from_shape(sa):
                # The commonest call of all (same-shape contiguous operands): no layout work.
                out = np.empty(ta.size)
                engine.run_flat(out, ta._storage, tb._storage)
                return a._make_like(out, sa, ta.size)
            shape = sa if sa == sb else TensorData.shape_broadcast(sa, sb)
            out = _empty_like_shape(a, shape)
            engine.run(out._tensor, a._tensor, b._tensor, fresh=True)
            return out

        return _zip

    @staticmethod
    def reduce(
        fn: Callable[[float, float], float], start: float = 0.0
    ) -> Callable[[Tensor, int], Tensor]:
        # Folding in lanes reorders the fold: only for functions where that is exact
        # in real arithmetic.
        lanes = fn in _LANE_SAFE
        module = load_kernels("reduce", fast_kernels.REDUCE_SOURCE, fn, constants={"LANES": lanes})
        start = float(start)

        def _reduce(a: Tensor, dim: int) -> Tensor:
            dim = check_reduce_dim(a, dim)
            td = a._tensor
            shape = reduce_shape(td.shape, dim)
            size = _size(shape)
            out = a._make_like(np.full(size, start), shape, size)
            if recording.recorder is not None:
                recording.recorder.constant(out._tensor._storage)
            if td.size == 0:
                return out
            layout = _reduce_layout(td, dim)
            work = td.size
            par = work >= PARALLEL_THRESHOLD
            try:
                if layout is not None:
                    kernel = module.reduce3_par if par else module.reduce3_ser
                    _launch(kernel, (out._tensor._storage, td._storage, *layout))
                else:
                    kernel = module.reduce_nd_par if par else module.reduce_nd_ser
                    _launch(kernel, (*out.tuple(), *td.tuple(), dim))
            except NumbaError as e:
                raise _compile_error(fn, e) from None
            return out

        return _reduce

    @staticmethod
    def matrix_multiply(a: Tensor, b: Tensor) -> Tensor:
        """Batched matrix product; a batch of 1 broadcasts, operands may be strided."""
        a3, b3, out_shape = matmul_layout(a, b)
        batch = max(a3.shape[0], b3.shape[0])
        m, k = a3.shape[1], a3.shape[2]
        n = b3.shape[2]
        size = batch * m * n
        out = np.empty(size)
        if size:
            _matmul_into(out, a3, b3, batch, m, n, k)
        return a._make_like(out, out_shape, size)


def _matmul_into(
    out: Storage, a3: TensorData, b3: TensorData, batch: int, m: int, n: int, k: int
) -> None:
    """Pick the matmul kernel for the operands' layout, packing one operand if it pays."""
    work = batch * m * n
    work *= max(k, 1)
    parallel = work >= PARALLEL_THRESHOLD * 8
    a_batch = a3.strides[0] if a3.shape[0] > 1 else 0
    if k == 0:
        out[:] = 0.0
        if recording.recorder is not None:
            recording.recorder.fill(out, 0.0)
        return
    row_major_b = b3.strides[2] == 1 and (b3.strides[1] != 1 or k == 1)
    if row_major_b and n >= 16 and (work < _PACK_WORK or k < 16):
        # Small product, or short k, with row-major B: rows of B stream through the
        # inner loop (dot products over a short k would be all overhead).
        kernel = _matmul_rows_par if parallel else _matmul_rows_ser
        _launch(kernel, (out, a3._storage, b3._storage, batch, m, n, k,
                         a_batch, a3.strides[1], a3.strides[2],
                         b3.strides[0] if b3.shape[0] > 1 else 0, b3.strides[1]))  # fmt: skip
        return
    # Dot-product form: rows of A and columns of B both contiguous over k.
    a_storage, a_strides = a3._storage, a3.strides
    if a_strides[2] != 1 and k > 1:
        a_storage = _packed(a3._storage, a3.shape, a3.strides)
        a_strides = (m * k, k, 1)
        a_batch = m * k if a3.shape[0] > 1 else 0
    b_storage, b_strides = b3._storage, b3.strides
    if b_strides[1] != 1 and k > 1:
        # Columns of B become contiguous rows of B^T.
        b_storage = _packed(
            b3._storage, (b3.shape[0], n, k), (b_strides[0], b_strides[2], b_strides[1])
        )
        b_strides = (n * k, 1, k)
    kernel = _matmul_dots_par if parallel else _matmul_dots_ser
    _launch(kernel, (out, a_storage, b_storage, batch, m, n, k, a_batch, a_strides[1],
                     b_strides[0] if b3.shape[0] > 1 else 0, b_strides[2]))  # fmt: skip


def _packed(storage: Storage, shape: tuple[int, int, int], strides: tuple[int, ...]) -> Storage:
    """A contiguous copy of a strided 3-D view; tiled (and parallel) when large."""
    batch, rows, cols = shape
    out = np.empty(batch * rows * cols)
    if rows * cols * batch < 128 * 128:
        _launch(_copy_view, (out, storage, shape, strides))
    else:
        _launch(_pack_tiles, (out, storage, batch, rows, cols, *strides))
    return out


def _copy_view(
    dst: Storage, storage: Storage, shape: tuple[int, ...], strides: tuple[int, ...]
) -> None:
    """``dst`` (contiguous) = the view of ``storage`` with ``shape`` and element ``strides``."""
    view = np.lib.stride_tricks.as_strided(
        storage, shape=shape, strides=tuple(s * storage.itemsize for s in strides)
    )
    dst.reshape(shape)[...] = view


_TILE = 32


@njit(parallel=True, cache=True)
def _pack_tiles(dst, src, batch, rows, cols, s0, s1, s2):  # noqa: ANN001
    """dst[p, r, c] = src[p*s0 + r*s1 + c*s2], in 32x32 tiles so that reads and
    writes both stay within a few cache lines whichever stride is the small one."""
    row_tiles = (rows + _TILE - 1) // _TILE
    col_tiles = (cols + _TILE - 1) // _TILE
    tiles = row_tiles * col_tiles
    for t in prange(batch * tiles):
        p = t // tiles
        q = t - p * tiles
        r0 = (q // col_tiles) * _TILE
        c0 = (q % col_tiles) * _TILE
        for r in range(r0, min(rows, r0 + _TILE)):
            base = p * s0 + r * s1
            o = (p * rows + r) * cols
            for c in range(c0, min(cols, c0 + _TILE)):
                dst[o + c] = src[base + c * s2]


def _reduce_layout(td: TensorData, dim: int) -> tuple[int, ...] | None:
    """``(n_outer, n_reduce, n_inner, s_outer, s_reduce, s_inner)``, or None if strided.

    The dims before ``dim`` must merge into one, and so must the dims after it.
    """
    shape, strides = td.shape, td.strides
    merged = []
    for lo, hi in ((0, dim), (dim + 1, len(shape))):
        n, s = 1, 0
        for d in range(hi - 1, lo - 1, -1):
            if shape[d] == 1:
                continue
            if n == 1:
                n, s = shape[d], strides[d]
            elif strides[d] == s * n:
                n *= shape[d]
            else:
                return None
        merged.append((n, s))
    (n_outer, s_outer), (n_inner, s_inner) = merged
    return (n_outer, shape[dim], n_inner, s_outer, strides[dim], s_inner)


# Matrix multiply ----------------------------------------------------------------

# Above this many multiply-adds, packing an operand for the dot-product kernel pays.
_PACK_WORK = 32**3

# Matrix multiply kernels. Each output element sums over k in a fixed order
# (blocks of k in sequence, lanes combined the same way every time), so results
# are bit-identical for any thread count. ``reassoc`` lets LLVM vectorise the
# dot products; ``contract`` allows fused multiply-adds.
_MATMUL_MATH = {"reassoc", "contract", "nsz"}

# A task owns a tile of _ROWS x _COLS of C (tiles of every batch are spread over
# the threads); within it, _KB of k at a time keeps the rows of A and of B^T that
# the tile reads in L1/L2 while every 2x4 register block streams through them.
_ROWS = 32
_COLS = 64
_KB = 256


def _matmul_dots(out, a, bt, batch, m, n, k, sa0, sa1, sb0, sb2):  # noqa: ANN001
    """C = A @ B from rows of A and columns of B (rows of ``bt``) contiguous over k.

    A 2x4 register block of dot products: six loads feed eight multiply-adds,
    and LLVM vectorises each dot product along k.
    """
    row_tiles = (m + _ROWS - 1) // _ROWS
    col_tiles = (n + _COLS - 1) // _COLS
    tiles = row_tiles * col_tiles
    for t in prange(batch * tiles):
        p = t // tiles
        q = t - p * tiles
        r0 = (q // col_tiles) * _ROWS
        r1 = min(m, r0 + _ROWS)
        j0 = (q % col_tiles) * _COLS
        j1 = min(n, j0 + _COLS)
        o_base = p * m * n
        for k0 in range(0, k, _KB):
            kw = min(k, k0 + _KB) - k0
            first = k0 == 0
            for i in range(r0, r1, 2):
                pa = p * sa0 + i * sa1 + k0
                two = i + 1 < r1
                a0 = a[pa : pa + kw]
                a1 = a[pa + sa1 : pa + sa1 + kw] if two else a0
                for j in range(j0, j1, 4):
                    nj = min(4, j1 - j)
                    pb = p * sb0 + j * sb2 + k0
                    b0 = bt[pb : pb + kw]
                    b1 = bt[pb + sb2 : pb + sb2 + kw] if nj > 1 else b0
                    b2 = bt[pb + 2 * sb2 : pb + 2 * sb2 + kw] if nj > 2 else b0
                    b3 = bt[pb + 3 * sb2 : pb + 3 * sb2 + kw] if nj > 3 else b0
                    c00 = c01 = c02 = c03 = 0.0
                    c10 = c11 = c12 = c13 = 0.0
                    for kk in range(kw):
                        x0 = a0[kk]
                        x1 = a1[kk]
                        y0 = b0[kk]
                        y1 = b1[kk]
                        y2 = b2[kk]
                        y3 = b3[kk]
                        c00 += x0 * y0
                        c01 += x0 * y1
                        c02 += x0 * y2
                        c03 += x0 * y3
                        c10 += x1 * y0
                        c11 += x1 * y1
                        c12 += x1 * y2
                        c13 += x1 * y3
                    _store_block(out, o_base + i * n + j, n, nj, two, first,
                                 c00, c01, c02, c03, c10, c11, c12, c13)  # fmt: skip


@njit(inline="always")
def _store_block(out, po, n, nj, two, first, c00, c01, c02, c03, c10, c11, c12, c13):  # noqa: ANN001
    """Write (or, after the first k block, add) a 2 x nj block of C at ``po``."""
    for r in range(2 if two else 1):
        row = po + r * n
        for c in range(nj):
            if r == 0:
                v = c00 if c == 0 else c01 if c == 1 else c02 if c == 2 else c03
            else:
                v = c10 if c == 0 else c11 if c == 1 else c12 if c == 2 else c13
            out[row + c] = v if first else out[row + c] + v


def _matmul_rows(out, a, b, batch, m, n, k, sa0, sa1, sa2, sb0, sb1):  # noqa: ANN001
    """C = A @ B with row-major B: each row of C accumulates scaled rows of B."""
    for t in prange(batch * m):
        p = t // m
        i = t - p * m
        o_ = out[t * n : t * n + n]
        for j in range(n):
            o_[j] = 0.0
        pa = p * sa0 + i * sa1
        for kk in range(k):
            aik = a[pa + kk * sa2]
            pb = p * sb0 + kk * sb1
            b_ = b[pb : pb + n]
            for j in range(n):
                o_[j] += aik * b_[j]


def _variant(py: types.FunctionType, suffix: str) -> types.FunctionType:
    """A copy of ``py`` under its own name: numba's disk cache keys entries by name,
    so a parallel and a serial compile of one function would overwrite each other."""
    clone = types.FunctionType(py.__code__, py.__globals__, py.__name__ + suffix)
    clone.__qualname__ = py.__qualname__ + suffix
    return clone


_matmul_dots_par = njit(parallel=True, fastmath=_MATMUL_MATH, cache=True)(
    _variant(_matmul_dots, "_par")
)
_matmul_dots_ser = njit(fastmath=_MATMUL_MATH, cache=True)(_variant(_matmul_dots, "_ser"))
_matmul_rows_par = njit(parallel=True, fastmath=_MATMUL_MATH, cache=True)(
    _variant(_matmul_rows, "_par")
)
_matmul_rows_ser = njit(fastmath=_MATMUL_MATH, cache=True)(_variant(_matmul_rows, "_ser"))


@njit(parallel=True, fastmath=True, cache=True)
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
    """The course's matmul entry point on 3-D operands, any output strides."""
    a_batch = a_strides[0] if a_shape[0] > 1 else 0
    b_batch = b_strides[0] if b_shape[0] > 1 else 0
    rows = out_shape[1]
    cols = out_shape[2]
    inner = a_shape[2]
    for t in prange(out_shape[0] * rows):
        p = t // rows
        i = t - p * rows
        a_row = p * a_batch + i * a_strides[1]
        o_row = p * out_strides[0] + i * out_strides[1]
        for j in range(cols):
            b_col = p * b_batch + j * b_strides[2]
            acc = 0.0
            for kk in range(inner):
                acc += a_storage[a_row + kk * a_strides[2]] * b_storage[b_col + kk * b_strides[1]]
            out[o_row + j * out_strides[2]] = acc


# The course's kernel factories --------------------------------------------------


def tensor_map(fn: Callable[[float], float]) -> Any:
    """Parallel map kernel ``(out, out_shape, out_strides, in_storage, in_shape, in_strides)``."""
    return load_kernels("map", fast_kernels.MAP_SOURCE, fn, cache=False).map_nd_par


def tensor_zip(fn: Callable[[float, float], float]) -> Any:
    """Parallel zip kernel ``(out…3, a…3, b…3)`` with broadcasting."""
    return load_kernels("zip", fast_kernels.ZIP_SOURCE, fn, cache=False).zip_nd_par


def tensor_reduce(fn: Callable[[float, float], float]) -> Any:
    """Parallel reduce kernel ``(out…3, a…3, reduce_dim)``; ``out`` pre-filled with the start."""
    return load_kernels("reduce", fast_kernels.REDUCE_SOURCE, fn, cache=False).reduce_nd_par
