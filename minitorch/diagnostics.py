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
from .tensor_data import TensorData

DTYPES = {"float64": (np.float64,), "float32": (np.float32,), "both": (np.float64, np.float32)}


def _triple(shape: tuple[int, ...], dtype: type) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    td = TensorData(np.random.rand(int(np.prod(shape))).astype(dtype), shape)
    return td.tuple()


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
    shape = (4, 5)
    map_kernel = tensor_map(njit()(operators.id))
    zip_kernel = tensor_zip(njit()(operators.add))
    reduce_kernel = tensor_reduce(njit()(operators.add))
    zips = load_kernels("zip", fast_kernels.ZIP_SOURCE, operators.mul, cache=False)
    reduces = load_kernels("reduce", fast_kernels.REDUCE_SOURCE, operators.add, cache=False)
    reduces.LANES, reduces.VFN = True, fast_ops._LANE_SAFE[operators.add]
    gemm = _in_memory(fast_ops._gemm, fastmath=fast_ops._CONTRACT)
    rows = _in_memory(fast_ops._matmul_rows, fastmath=fast_ops._CONTRACT)
    for dtype in DTYPES[getattr(args, "dtype", "both")]:
        out, a, b = (_triple(shape, dtype) for _ in range(3))
        map_kernel(*out, *a)
        zip_kernel(*out, *a, *b)
        reduce_kernel(*_triple((4, 1), dtype), *a, 1)
        zips.zip2d_par(np.empty(20, dtype), a[0], b[0], 4, 5, 5, 1, 5, 1, 0, 1)
        reduces.reduce3_par(np.zeros(4, dtype), a[0], 4, 5, 1, 5, 1, 1)
        m_a, m_b = _triple((2, 4, 5), dtype), _triple((2, 5, 3), dtype)
        tensor_matrix_multiply(*_triple((2, 4, 3), dtype), *m_a, *m_b)
        strides = (20, 5, 1, 15, 3, 1)
        gemm(np.empty(24, dtype), m_a[0], m_b[0], 2, 4, 3, 5, *strides)
        rows(np.empty(24, dtype), m_a[0], m_b[0], 2, 4, 3, 5, *strides)

    for title, kernel in (
        ("MAP: minitorch.fast_ops.tensor_map (course signature, N-D engine)", map_kernel),
        ("ZIP: minitorch.fast_ops.tensor_zip (course signature, N-D engine)", zip_kernel),
        ("REDUCE: minitorch.fast_ops.tensor_reduce (course signature)", reduce_kernel),
        ("ZIP (2-D fast path used by FastOps after layout simplification)", zips.zip2d_par),
        ("REDUCE (3-D fast path used by FastOps, SIMD lanes for sums)", reduces.reduce3_par),
        ("MATRIX MULTIPLY: minitorch.fast_ops.tensor_matrix_multiply", tensor_matrix_multiply),
        ("MATRIX MULTIPLY (packed panels and register-blocked micro-kernel used by FastOps)",
         gemm),
        ("MATRIX MULTIPLY (row-streaming kernel used by FastOps for small products)", rows),
    ):  # fmt: skip
        _report(title, kernel, level)
    return 0
