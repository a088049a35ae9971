"""Time every matmul kernel of FastOps on given products, to check ``_matmul_into``'s routing.

    python tools/matmul_kernels.py                   # the shapes the routing rules came from
    python tools/matmul_kernels.py 16x2048x9t 64x64x64 --dtype float32

A product is ``MxKxN`` (A is M x K, B is K x N), with a ``t`` suffix when B is a
transposed view (its columns contiguous along k, as in a backward pass) and a ``bB``
prefix for a batch of B products. Each kernel (the serial and parallel GEMM, row and
dot-product kernels) runs on the same operands, the kernels taking turns, and the
median of 40 rounds is printed in microseconds with the kernel ``_matmul_into`` picks.
"""

from __future__ import annotations

import argparse
import re
import statistics
import time

import numba
import numpy as np

import minitorch
from minitorch import fast_ops

DEFAULT = ["16x2048x9t", "17x256x15t", "17x4200x15t", "64x64x64", "40x40x40", "b32x16x9x64",
           "10x100x100", "100x50x100t"]  # fmt: skip


def parse(spec: str) -> tuple[int, int, int, int, bool]:
    match = re.fullmatch(r"(?:b(\d+)x)?(\d+)x(\d+)x(\d+)(t?)", spec)
    if not match:
        raise SystemExit(f"not a product: {spec!r} (MxKxN, optional bB prefix and t suffix)")
    batch, m, k, n, transposed = match.groups()
    return int(batch or 1), int(m), int(k), int(n), transposed == "t"


def time_kernels(spec: str, dtype: type, rounds: int = 40) -> str:
    batch, m, k, n, transposed = parse(spec)
    rng = np.random.default_rng(0)
    x = rng.random((batch, m, k)).astype(dtype)
    y = rng.random((batch, n, k) if transposed else (batch, k, n)).astype(dtype)
    backend = minitorch.TensorBackend(minitorch.FastOps)
    a = minitorch.tensor_from_numpy(x, backend=backend)
    b = minitorch.tensor_from_numpy(y, backend=backend)
    b = b.permute(0, 2, 1) if transposed else b
    a3, b3, _ = fast_ops.matmul_layout(a, b)
    strides = fast_ops.matmul_strides(a3, b3)
    out = np.empty(batch * m * n, dtype)
    args = (out, a3._storage, b3._storage, batch, m, n, k, *strides)
    sizes = fast_ops._pack_sizes(out.itemsize, batch, m, n, k, *strides)
    buffers = fast_ops._pack_buffers(out.dtype, *sizes)
    threads = numba.get_num_threads()
    kernels = {
        "gemm_ser": lambda: fast_ops._gemm_into_ser(*args, *buffers, 1),
        "gemm_par": lambda: fast_ops._gemm_into_par(*args, *buffers, threads),
        "rows_ser": lambda: fast_ops._matmul_rows_ser(*args),
        "rows_par": lambda: fast_ops._matmul_rows_par(*args),
        "dots_ser": lambda: fast_ops._matmul_dots_ser(*args),
        "dots_par": lambda: fast_ops._matmul_dots_par(*args),
    }
    picked: list[str] = []
    launch = fast_ops._launch
    fast_ops._launch = lambda kernel, launch_args: picked.append(kernel.__name__)
    try:
        fast_ops._matmul_into(out, a3._storage, b3._storage, batch, m, n, k, strides)
    finally:
        fast_ops._launch = launch
    times: dict[str, list[float]] = {name: [] for name in kernels}
    for run in kernels.values():
        run()
    for _ in range(rounds):
        for name, run in kernels.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    cells = " | ".join(f"{name} {statistics.median(t) * 1e6:8.1f}" for name, t in times.items())
    route = picked[0].lstrip("_").replace("matmul_", "").replace("_into", "") if picked else "-"
    return f"{spec:>14} ({batch * m * n * k:>9} MACs) picks {route:9s}: {cells}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("products", nargs="*", default=DEFAULT)
    parser.add_argument("--dtype", choices=["float64", "float32"], default="float64")
    args = parser.parse_args()
    print(f"microseconds, median of 40 rounds, {args.dtype}, {numba.get_num_threads()} threads")
    for spec in args.products:
        print(time_kernels(spec, np.dtype(args.dtype).type), flush=True)


if __name__ == "__main__":
    main()
