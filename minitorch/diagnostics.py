"""``python -m minitorch diagnostics``: numba's parallel report for every FastOps kernel.

Kernels loaded from the disk cache carry no report, so each one is compiled
afresh here (in memory) and run once on a small tensor before it is reported.
"""

from __future__ import annotations

import argparse

import numpy as np
from numba import njit

from . import fast_kernels, operators
from .fast_ops import (
    _matmul_dots,
    _matmul_rows,
    tensor_map,
    tensor_matrix_multiply,
    tensor_reduce,
    tensor_zip,
)
from .kernel_cache import load_kernels
from .tensor_data import TensorData


def _triple(shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    td = TensorData(np.random.rand(int(np.prod(shape))), shape)
    return td.tuple()


def _report(title: str, kernel: object, level: int) -> None:
    print("=" * 80)
    print(title)
    print("=" * 80)
    kernel.parallel_diagnostics(level=level)  # type: ignore[attr-defined]


def main(args: argparse.Namespace) -> int:
    level = args.level
    shape = (4, 5)
    out, a, b = _triple(shape), _triple(shape), _triple(shape)

    kernel = tensor_map(njit()(operators.id))
    kernel(*out, *a)
    _report("MAP: minitorch.fast_ops.tensor_map (course signature, N-D engine)", kernel, level)

    kernel = tensor_zip(njit()(operators.add))
    kernel(*out, *a, *b)
    _report("ZIP: minitorch.fast_ops.tensor_zip (course signature, N-D engine)", kernel, level)

    reduced = _triple((4, 1))
    kernel = tensor_reduce(njit()(operators.add))
    kernel(*reduced, *a, 1)
    _report("REDUCE: minitorch.fast_ops.tensor_reduce (course signature)", kernel, level)

    flat_out = np.empty(20)
    zips = load_kernels("zip", fast_kernels.ZIP_SOURCE, operators.mul, cache=False)
    zips.zip2d_par(flat_out, a[0], b[0], 4, 5, 5, 1, 5, 1, 0, 1)
    _report(
        "ZIP (2-D fast path used by FastOps after layout simplification)", zips.zip2d_par, level
    )

    reduces = load_kernels("reduce", fast_kernels.REDUCE_SOURCE, operators.add, cache=False)
    reduces.reduce3_par(np.zeros(4), a[0], 4, 5, 1, 5, 1, 1)
    _report("REDUCE (3-D fast path used by FastOps)", reduces.reduce3_par, level)

    m_out, m_a, m_b = _triple((2, 4, 3)), _triple((2, 4, 5)), _triple((2, 5, 3))
    tensor_matrix_multiply(*m_out, *m_a, *m_b)
    _report("MATRIX MULTIPLY: minitorch.fast_ops.tensor_matrix_multiply", tensor_matrix_multiply,
            level)  # fmt: skip

    dots = njit(parallel=True, fastmath={"reassoc", "contract", "nsz"})(_matmul_dots)
    dots(np.empty(24), m_a[0], m_b[0], 2, 4, 3, 5, 20, 5, 15, 5)
    _report("MATRIX MULTIPLY (blocked dot-product kernel used by FastOps)", dots, level)

    rows = njit(parallel=True, fastmath={"reassoc", "contract", "nsz"})(_matmul_rows)
    rows(np.empty(24), m_a[0], m_b[0], 2, 4, 3, 5, 20, 5, 1, 15, 3)
    _report("MATRIX MULTIPLY (row-streaming kernel used by FastOps for small products)", rows,
            level)  # fmt: skip
    return 0
