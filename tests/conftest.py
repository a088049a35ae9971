"""Shared pytest set-up: markers and the ``backend`` fixture.

Markers:
  ``cuda``    tests that need the CUDA backend (real GPU or ``NUMBA_ENABLE_CUDASIM=1``);
  ``kernels`` tests that exercise the numba-compiled FastOps kernels
              (the Makefile re-runs them with ``NUMBA_BOUNDSCHECK=1``);
  ``mpi``     tests that start several ranks with ``mpiexec`` (see test_distributed.py).
  ``not_boundschecked``  kernel tests the bounds-checked run leaves out because they add
              no memory-access coverage there: reports (diagnostics, benches, assembly
              checks) and subprocess reruns of kernels that other tests already cover.

``backend`` is parametrised over ``simple``, ``fast`` and ``cuda``; the cuda
parameter is skipped when ``numba.cuda.is_available()`` is false. ``dtype`` is
parametrised over ``minitorch.float64`` and ``minitorch.float32``.
``launched_kernels`` lists the names of the FastOps kernels a test launches.
"""

from __future__ import annotations

import os
from typing import Any

import numba.cuda
import numpy as np
import pytest
from hypothesis import settings

import minitorch
from minitorch import fast_ops

CUDA_AVAILABLE = numba.cuda.is_available()

# Timing deadlines make hypothesis flaky on a loaded machine (and numba compiles
# on first use); tests that want a deadline set one explicitly.
settings.register_profile("minitorch", deadline=None)
settings.load_profile("minitorch")

# FastOps computes the first launches of the serial kernels of functions with a NumPy
# form (add, mul, relu, ..., and of sums and products) with NumPy
# (``fast_ops.STAND_IN_CALLS``). The suite
# tests the kernels themselves, in this process and in the ones tests start (which
# read the variable); test_stand_in.py tests the NumPy stand-in against them.
os.environ[fast_ops.STAND_IN_ENV] = "0"
fast_ops.STAND_IN_CALLS = 0


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "cuda: needs the CUDA backend (GPU or simulator)")
    config.addinivalue_line("markers", "kernels: exercises the numba FastOps kernels")
    config.addinivalue_line("markers", "mpi: starts several ranks under mpiexec")
    config.addinivalue_line(
        "markers", "not_boundschecked: left out of the bounds-checked run (see the docstring)"
    )


_BACKENDS: dict[str, minitorch.TensorBackend] = {
    "simple": minitorch.SimpleBackend,
    "fast": minitorch.TensorBackend(minitorch.FastOps),
}


def make_backend(name: str) -> minitorch.TensorBackend:
    """The backend called ``name``, built once per process."""
    if name not in _BACKENDS:
        _BACKENDS[name] = minitorch.TensorBackend(minitorch.CudaOps)
    return _BACKENDS[name]


BACKEND_PARAMS = [
    pytest.param("simple", id="simple"),
    pytest.param("fast", id="fast", marks=pytest.mark.kernels),
    pytest.param(
        "cuda",
        id="cuda",
        marks=[
            pytest.mark.cuda,
            pytest.mark.skipif(not CUDA_AVAILABLE, reason="numba.cuda is not available"),
        ],
    ),
]


# Session scope: hypothesis rejects function-scoped fixtures in @given tests,
# and a backend is immutable anyway.
@pytest.fixture(scope="session", params=BACKEND_PARAMS)
def backend(request: pytest.FixtureRequest) -> minitorch.TensorBackend:
    """Each tensor backend in turn: simple, fast and (when available) cuda."""
    return make_backend(request.param)


@pytest.fixture(scope="session", params=[minitorch.float64, minitorch.float32], ids=str)
def dtype(request: pytest.FixtureRequest) -> np.dtype:
    """Each storage dtype in turn: float64 (the default) and float32."""
    return request.param


@pytest.fixture
def launched_kernels(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the kernels FastOps launches (through ``fast_ops._launch``) during
    the test, in order: the routing of products and elementwise ops."""
    from minitorch import fast_ops

    launched: list[str] = []
    launch = fast_ops._launch

    def spy(kernel: Any, args: tuple[Any, ...]) -> None:
        launched.append(kernel.__name__)
        launch(kernel, args)

    monkeypatch.setattr(fast_ops, "_launch", spy)
    return launched
