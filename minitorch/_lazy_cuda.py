"""``numba.cuda`` as an attribute of numba from the start, loaded on first use.

Importing numba's CUDA support is about half of minitorch's import time, which
every CPU-only start would pay. Importing this module puts a lazily loading
``numba.cuda`` in place (``importlib.util.LazyLoader``): it is a module like any
other, and its real import runs when something first reads an attribute from it.
"""

from __future__ import annotations

import importlib.util
import sys
import types

import numba


def _install() -> None:
    if "numba.cuda" in sys.modules:
        return
    spec = importlib.util.find_spec("numba.cuda")
    if spec is None or spec.loader is None:
        return
    spec.loader = importlib.util.LazyLoader(spec.loader)
    module = importlib.util.module_from_spec(spec)
    sys.modules["numba.cuda"] = module
    spec.loader.exec_module(module)
    numba.cuda = module  # type: ignore[attr-defined]


def numba_cuda() -> types.ModuleType:
    """``numba.cuda`` (loading it if nothing has yet)."""
    import numba.cuda

    return numba.cuda


_install()
