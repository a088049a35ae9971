"""Every CudaOps kernel compiles for a real GPU (PTX for compute capability 9.0).

numba's simulator runs kernels as Python, so it never types or compiles them the way
numba-cuda does for a GPU: a kernel that passes every simulator test can still fail to
compile on the first GPU it meets. ``numba.cuda.compile_ptx`` runs that whole compile
(typing, lowering, NVVM) without a GPU, given NVVM and NVRTC (the ``cu12`` extra of
numba-cuda, in the ``test`` and ``cuda`` extras). Without them the tests skip, unless
``MINITORCH_REQUIRE_PTX=1`` (set by ``make test``) makes that a failure.

Each PTX is then assembled by ``ptxas`` (from the same wheels), whose report shows what
only a GPU would otherwise refuse: a kernel launched with B threads per block must fit
the 64K registers of a block (B x registers per thread), the 48 KiB of static shared
memory, and should not spill registers to memory.

Device functions ask the current device for its compute capability when they compile;
with no GPU the tests answer for it (``_no_device``).
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
import tempfile
import types
from collections.abc import Callable, Iterator
from typing import Any

import numba.cuda
import numpy as np
import pytest

from minitorch import cuda_ops, operators

if numba.config.ENABLE_CUDASIM:
    pytest.skip("the simulator has no compiler to check", allow_module_level=True)

CC = (9, 0)  # an H100 / H200
MAPS = ("id", "neg", "inv", "relu", "sigmoid", "log", "exp", "tanh", "sqrt", "absolute")
ZIPS = ("add", "sub", "mul", "lt", "eq", "is_close", "max", "maximum", "minimum", "pow",
        "relu_back", "log_back", "inv_back", "sigmoid_back_from_output", "tanh_back_from_output",
        "sqrt_back_from_output", "absolute_back", "times_unless_zero", "select", "select_not",
        "same", "position_if", "pow_exponent_grad")  # fmt: skip
REDUCES = ("add", "mul", "max", "maximum", "minimum")
DTYPES = (np.dtype(np.float64), np.dtype(np.float32))


@pytest.fixture(autouse=True)
def _no_device(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Compile device functions for ``CC`` instead of asking a GPU for its own."""
    from numba.cuda import dispatcher

    monkeypatch.setattr(
        dispatcher, "get_current_device", lambda: types.SimpleNamespace(compute_capability=CC)
    )
    reason = _missing_compiler()
    if reason is not None:
        if os.environ.get("MINITORCH_REQUIRE_PTX") == "1":
            pytest.fail(f"MINITORCH_REQUIRE_PTX=1, but {reason}")
        pytest.skip(reason)
    yield


@functools.cache
def _missing_compiler() -> str | None:
    """Why PTX cannot be compiled and assembled here (NVVM, NVRTC or ptxas missing), or
    None; probed once per process."""

    def copy(out, x):  # noqa: ANN001, ANN202
        out[0] = x[0]

    try:
        numba.cuda.compile_ptx(copy, (numba.float64[::1], numba.float64[::1]), cc=CC)
    except Exception as e:  # noqa: BLE001 - whatever is missing, say so
        return f"cannot compile PTX here ({type(e).__name__}: {str(e)[:200]})"
    if _ptxas() is None:
        return "no ptxas (numba-cuda's cu12 extra brings one)"
    return None


@functools.cache
def _ptxas() -> str | None:
    """The PTX assembler of the ``nvidia-cuda-nvcc`` wheel, else one on the PATH."""
    try:
        import nvidia.cuda_nvcc

        bundled = os.path.join(list(nvidia.cuda_nvcc.__path__)[0], "bin", "ptxas")
        if os.access(bundled, os.X_OK):
            return bundled
    except ImportError:
        pass
    return shutil.which("ptxas")


# The limits of one block on compute capability 9.0.
BLOCK_REGISTERS = 65536
STATIC_SHARED_BYTES = 48 * 1024


def _ptx(kernel: Any, signature: tuple[Any, ...], threads: int) -> str:
    """``kernel``'s PTX for ``signature``, after checking that ptxas assembles it into
    a kernel that launches with ``threads`` threads per block and spills nothing."""
    ptx, _ = numba.cuda.compile_ptx(kernel.py_func, signature, cc=CC)
    assert ".entry" in ptx
    with tempfile.TemporaryDirectory() as tmp:
        source = os.path.join(tmp, "kernel.ptx")
        with open(source, "w") as f:
            f.write(ptx)
        arch = f"-arch=sm_{CC[0]}{CC[1]}"
        report = subprocess.run([_ptxas(), arch, "-v", source, "-o", source + ".cubin"],
                                capture_output=True, text=True, check=True)  # fmt: skip
    text = report.stdout + report.stderr
    registers = max(int(n) for n in re.findall(r"Used (\d+) registers", text))
    shared = max([int(n) for n in re.findall(r"(\d+) bytes smem", text)] or [0])
    assert registers * threads <= BLOCK_REGISTERS, (registers, threads, text)
    assert shared <= STATIC_SHARED_BYTES, text
    assert not re.search(r"[1-9]\d* bytes spill (stores|loads)", text), text
    return ptx


# Any float64 instruction or conversion: in a float32 kernel, a literal or a ``math``
# constant that widened the arithmetic (``math.inf`` did, in five functions).
_DOUBLE = re.compile(r"\S*\.f64\b\S*")


def _signature(kind: str, dtype: np.dtype) -> tuple[Any, ...]:
    storage = numba.from_dtype(dtype)[::1]
    ints = numba.int64[::1]
    tensor = (storage, ints, ints)
    if kind == "map":
        return (*tensor, numba.int64, *tensor)
    if kind == "zip":
        return (*tensor, numba.int64, *tensor, *tensor)
    return (*tensor, numba.int64, *tensor, numba.int64, numba.from_dtype(dtype))


FACTORIES: dict[str, Callable[[Any, np.dtype], Any]] = {
    "map": cuda_ops._map_kernel, "zip": cuda_ops._zip_kernel, "reduce": cuda_ops._reduce_kernel}
CASES = [f"{kind} {name}" for kind, names in (("map", MAPS), ("zip", ZIPS), ("reduce", REDUCES))
         for name in names]  # fmt: skip


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", CASES)
def test_elementwise_and_reduce_kernels_compile(case: str, dtype: np.dtype) -> None:
    kind, name = case.split()
    kernel = FACTORIES[kind](getattr(operators, name), dtype)
    threads = cuda_ops.MAX_REDUCE_THREADS if kind == "reduce" else cuda_ops.ELEMENTWISE_THREADS
    ptx = _ptx(kernel, _signature(kind, dtype), threads)
    if dtype == np.float32:
        assert not _DOUBLE.findall(ptx), _DOUBLE.findall(ptx)[:5]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_matmul_fill_and_copy_kernels_compile(dtype: np.dtype) -> None:
    storage = numba.from_dtype(dtype)[::1]
    ints = numba.int64[::1]
    for tile in (8, 16, 32):  # the block sides of cuda_ops.matmul_tile
        ptx = _ptx(cuda_ops._matmul_kernel(dtype, tile), (storage, ints, ints) * 3, tile * tile)
        # The two tiles in shared memory, sized by the block side.
        assert f".shared .align {dtype.itemsize} .b8" in ptx
        assert f"[{tile * tile * dtype.itemsize}]" in ptx
        if dtype == np.float32:
            assert not _DOUBLE.findall(ptx), _DOUBLE.findall(ptx)[:5]
    threads = cuda_ops.ELEMENTWISE_THREADS
    _ptx(cuda_ops._fill_kernel, (storage, numba.from_dtype(dtype)), threads)
    other = numba.float32[::1] if dtype == np.float64 else numba.float64[::1]
    _ptx(cuda_ops._copy_kernel, (storage, other), threads)


def test_practice_kernels_compile() -> None:
    f64 = numba.float64[::1]
    side = cuda_ops.THREADS_PER_BLOCK
    _ptx(cuda_ops.jit_sum_practice, (f64, f64, numba.int64), side)
    _ptx(cuda_ops.jit_mm_practice, (f64, f64, f64, numba.int64), side * side)
