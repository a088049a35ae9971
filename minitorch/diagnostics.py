"""``python -m minitorch diagnostics``: numba's parallel report for every FastOps kernel.

Kernels loaded from the disk cache carry no report, so each one is compiled
afresh here (in memory) and run once on small float64 and float32 tensors
before it is reported: the report lists each dtype's specialisation.
"""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np
from numba import njit

from . import fast_kernels, fast_ops, operators
from .fast_ops import tensor_map, tensor_matrix_multiply, tensor_reduce, tensor_zip
from .kernel_cache import load_kernels
from .tensor_functions import tensor_from_numpy

DTYPES = {"float64": (np.float64,), "float32": (np.float32,), "both": (np.float64, np.float32)}


def _triple(shape: tuple[int, ...], dtype: type) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return tensor_from_numpy(np.random.rand(*shape).astype(dtype)).tuple()


def _flat(size: int, dtype: type) -> np.ndarray:
    return np.random.rand(size).astype(dtype)


def _pack_buffers(dtype: type, *shape_and_strides: Any) -> tuple[np.ndarray, np.ndarray]:
    """Packing buffers for ``fast_ops._gemm_into`` (batch, m, n, k, then the strides)."""
    (batch, m, n, k), strides = shape_and_strides[:4], shape_and_strides[4]
    sizes = fast_ops._pack_sizes(np.dtype(dtype).itemsize, batch, m, n, k, *strides)
    return np.empty(sizes[0], dtype), np.empty(sizes[1], dtype)


def _report(title: str, kernel: Any, level: int) -> None:
    print("=" * 80)
    print(title)
    print("=" * 80)
    for signature in kernel.signatures:
        dtype = signature[0].dtype
        print(f"--- {dtype} specialisation ---")
        kernel.parallel_diagnostics(signature=signature, level=level)


def _in_memory(py: Any, **flags: Any) -> Any:
    """A parallel compile of a FastOps matmul kernel that keeps its report."""
    return njit(parallel=True, **flags)(py)


def main(args: argparse.Namespace) -> int:
    level = args.level
    dtypes = DTYPES[getattr(args, "dtype", "both")]
    strides = (20, 5, 1, 15, 3, 1)
    zips = load_kernels("zip", fast_kernels.ZIP_SOURCE, operators.mul, cache=False)
    reduces = load_kernels("reduce", fast_kernels.REDUCE_SOURCE, operators.add, cache=False)
    reduces.LANES, reduces.VFN = True, fast_ops._LANE_SAFE[operators.add]
    # Each kernel is compiled (once per dtype) and reported before the next compiles,
    # so the report streams.
    cases = (
        ("MAP: minitorch.fast_ops.tensor_map (course signature, N-D engine)",
         tensor_map(njit()(operators.id)),
         lambda k, d: k(*_triple((4, 5), d), *_triple((4, 5), d))),
        ("ZIP: minitorch.fast_ops.tensor_zip (course signature, N-D engine)",
         tensor_zip(njit()(operators.add)),
         lambda k, d: k(*_triple((4, 5), d), *_triple((4, 5), d), *_triple((4, 5), d))),
        ("REDUCE: minitorch.fast_ops.tensor_reduce (course signature)",
         tensor_reduce(njit()(operators.add)),
         lambda k, d: k(*_triple((4, 1), d), *_triple((4, 5), d), 1)),
        ("ZIP (2-D fast path used by FastOps after layout simplification, here the kernel "
         "for unit-stride inputs)", zips.zip2d_uu_par,
         lambda k, d: k(np.empty(20, d), _flat(20, d), _flat(20, d), 4, 5, 5, 1, 5, 1, 0, 1)),
        ("REDUCE (3-D fast path used by FastOps, SIMD lanes for sums)", reduces.reduce3_par,
         lambda k, d: k(np.zeros(4, d), _flat(20, d), 4, 5, 1, 5, 1, 1, 4096)),
        ("MATRIX MULTIPLY: minitorch.fast_ops.tensor_matrix_multiply", tensor_matrix_multiply,
         lambda k, d: k(*_triple((2, 4, 3), d), *_triple((2, 4, 5), d), *_triple((2, 5, 3), d))),
        ("MATRIX MULTIPLY (packed panels and register-blocked micro-kernel used by FastOps)",
         _in_memory(fast_ops._gemm_into, fastmath=fast_ops._CONTRACT),
         lambda k, d: k(np.empty(24, d), _flat(40, d), _flat(30, d), 2, 4, 3, 5, *strides,
                        *_pack_buffers(d, 2, 4, 3, 5, strides), 2)),
        ("MATRIX MULTIPLY (row-streaming kernel used by FastOps for small products)",
         _in_memory(fast_ops._matmul_rows, fastmath=fast_ops._CONTRACT),
         lambda k, d: k(np.empty(24, d), _flat(40, d), _flat(30, d), 2, 4, 3, 5, *strides)),
    )  # fmt: skip
    for title, kernel, run in cases:
        for dtype in dtypes:
            run(kernel, dtype)
        _report(title, kernel, level)
    return 0
