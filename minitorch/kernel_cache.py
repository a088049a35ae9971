"""Compile scalar functions into kernels, cached on disk across processes.

Numba's ``cache=True`` only works for module-level functions of an importable
file. So every kernel family (map, zip, reduce) is written once as a source
template; for each scalar function the template is rendered into a module in a
cache directory, keyed by a hash of the template and of the function's code,
and imported from there. The scalar function is injected as the module global
``fn`` before the first call, and numba caches the compiled kernels next to the
generated file, so a second process loads machine code instead of compiling.
"""

from __future__ import annotations

import hashlib
import importlib.util
import linecache
import os
import sys
import tempfile
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numba
from numba.core.registry import CPUDispatcher

from . import fast_math, fast_simd

CACHE_ENV = "MINITORCH_CACHE_DIR"


class ScalarCompileError(TypeError):
    """A user scalar function that numba cannot compile into a kernel."""


def cache_dir() -> Path:
    """Where generated kernel modules and numba's cache files live."""
    root = os.environ.get(CACHE_ENV)
    if root:
        return Path(root)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "minitorch" / f"numba-{numba.__version__}"


def python_function(fn: Callable[..., float]) -> types.FunctionType:
    """The plain Python function behind ``fn`` (unwrapping numba dispatchers)."""
    py = getattr(fn, "py_func", fn)
    if not isinstance(py, types.FunctionType):
        raise ScalarCompileError(
            f"{getattr(fn, '__qualname__', fn)!r} is not a Python function; "
            "kernels need a plain `def` or lambda of floats."
        )
    return py


def jit_scalar(fn: Callable[..., float], jit: Callable[..., Any] | None = None) -> Any:
    """Compile a scalar function for use inside kernels.

    Plain Python functions that ``fn`` calls through its globals (for example
    a user's ``softplus`` calling ``operators.exp``) are compiled too, so users
    write ordinary Python. ``jit`` defaults to ``numba.njit(inline="always")``
    for FastOps, where ``math`` is swapped for ``fast_math`` (a vectorisable
    ``exp``) and float32 arguments get a float32 variant of the function
    (``fast_math.by_dtype``); CUDA passes its device-function decorator and
    keeps ``math``.
    """
    py = python_function(fn)
    if jit is not None:
        return jit(_with_compiled_globals(py, jit, {}, {}))
    substitutes = {"math": fast_math.math_module()}
    inline = numba.njit(inline="always")
    fn64 = fn if isinstance(fn, CPUDispatcher) else inline(
        _with_compiled_globals(py, inline, {}, substitutes)
    )

    def float32_jit(f: types.FunctionType) -> Any:
        return inline(fast_math.float32_variant(f))

    def make_fn32() -> Any:
        return float32_jit(_with_compiled_globals(py, float32_jit, {}, substitutes))

    required = py.__code__.co_argcount - len(py.__defaults__ or ())
    return fast_math.by_dtype(fn64, make_fn32, required)


# Modules whose functions numba already knows (or that are not scalar code):
# they are left alone rather than compiled attribute by attribute.
_NATIVE_MODULES = ("numpy", "numba", "math", "cmath", "builtins")


def _is_python_module(value: Any) -> bool:
    return (
        isinstance(value, types.ModuleType) and value.__name__.split(".")[0] not in _NATIVE_MODULES
    )


def _with_compiled_globals(
    py: types.FunctionType, jit: Callable[..., Any], seen: dict[int, Any], substitutes: dict
) -> types.FunctionType:
    """``py`` with the Python functions it reaches (directly or as ``module.fn``) compiled."""
    replaced: dict[str, Any] = {}
    for name in py.__code__.co_names:
        value = py.__globals__.get(name)
        if isinstance(value, types.ModuleType) and value.__name__ in substitutes:
            replaced[name] = substitutes[value.__name__]
        elif isinstance(value, types.FunctionType):
            replaced[name] = _compiled(value, jit, seen, substitutes)
        elif _is_python_module(value):
            replaced[name] = _compiled_module(value, py.__code__.co_names, jit, seen, substitutes)
    if not replaced:
        return py
    new_globals = dict(py.__globals__)
    new_globals.update(replaced)
    clone = types.FunctionType(
        py.__code__, new_globals, py.__name__, py.__defaults__, py.__closure__
    )
    clone.__qualname__ = py.__qualname__
    clone.__module__ = py.__module__
    clone.__kwdefaults__ = py.__kwdefaults__
    return clone


def _compiled(
    value: types.FunctionType, jit: Callable[..., Any], seen: dict[int, Any], substitutes: dict
) -> Any:
    key = id(value)
    if key not in seen:
        seen[key] = None
        seen[key] = jit(_with_compiled_globals(value, jit, seen, substitutes))
    return seen[key]


def _compiled_module(
    module: types.ModuleType,
    names: tuple[str, ...],
    jit: Callable[..., Any],
    seen: dict[int, Any],
    substitutes: dict,
) -> types.ModuleType:
    """A stand-in for ``module`` whose functions named in ``names`` are compiled."""
    shim = types.ModuleType(module.__name__)
    shim.__dict__.update(module.__dict__)
    for name in names:
        value = module.__dict__.get(name)
        if isinstance(value, types.FunctionType):
            setattr(shim, name, _compiled(value, jit, seen, substitutes))
        elif _is_python_module(value) and value is not module:
            # ``package.module.fn``: the names come from the same expression.
            setattr(shim, name, _compiled_module(value, names, jit, seen, substitutes))
    return shim


def function_key(fn: Callable[..., float]) -> str | None:
    """A hash of what a compiled kernel depends on, or None when it cannot be cached.

    Covers the function's bytecode, constants, closure values and the code of
    the Python functions it calls; constants read from globals are assumed
    fixed (they are frozen at compile time, as numba does).
    """
    py = python_function(fn)
    h = hashlib.sha256()
    try:
        _hash_code(py, h, set())
    except _Uncacheable:
        return None
    return h.hexdigest()[:20]


class _Uncacheable(Exception):
    pass


def _hash_code(py: types.FunctionType, h: Any, seen: set[int]) -> None:
    if id(py) in seen:
        return
    seen.add(id(py))
    code = py.__code__
    h.update(py.__module__.encode() if py.__module__ else b"")
    h.update(py.__qualname__.encode())
    _hash_code_object(code, h)
    for cell in py.__closure__ or ():
        value = cell.cell_contents
        if isinstance(value, (int, float, bool, str)):
            h.update(repr(value).encode())
        elif isinstance(value, types.FunctionType):
            _hash_code(value, h, seen)
        else:
            raise _Uncacheable
    for default in (py.__defaults__ or ()) + tuple((py.__kwdefaults__ or {}).items()):
        if not isinstance(default, (int, float, bool, str, tuple)):
            raise _Uncacheable
        h.update(repr(default).encode())
    for name in code.co_names:
        value = py.__globals__.get(name)
        if isinstance(value, types.FunctionType):
            _hash_code(value, h, seen)
        elif isinstance(value, CPUDispatcher):
            _hash_code(value.py_func, h, seen)
        elif isinstance(value, (int, float, bool)):
            h.update(f"{name}={value!r}".encode())
        elif _is_python_module(value):
            _hash_module_members(value, code.co_names, h, seen)


def _hash_module_members(
    module: types.ModuleType, names: tuple[str, ...], h: Any, seen: set[int]
) -> None:
    """Hash the functions that ``module.name`` (or ``module.sub.name``) may reach."""
    for attr in names:
        member = getattr(module, attr, None)
        if isinstance(member, types.FunctionType):
            _hash_code(member, h, seen)
        elif _is_python_module(member) and id(member) not in seen:
            seen.add(id(member))
            _hash_module_members(member, names, h, seen)


def _hash_code_object(code: types.CodeType, h: Any) -> None:
    h.update(code.co_code)
    h.update(repr(code.co_names).encode())
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            _hash_code_object(const, h)
        else:
            h.update(repr(const).encode())


def _engine_key() -> str:
    """A hash of the code that decides how scalar functions and kernels compile (this
    module, ``fast_math`` and ``fast_simd``): changing any must not reuse kernels
    compiled the old way."""
    h = hashlib.sha256()
    for module in (sys.modules[__name__], fast_math, fast_simd):
        with open(module.__file__, "rb") as f:  # type: ignore[arg-type]
            h.update(f.read())
    return h.hexdigest()[:16]


_ENGINE_KEY = _engine_key()
_loaded: dict[str, types.ModuleType] = {}


def load_kernels(
    family: str, source: str, fn: Callable[..., float], cache: bool = True
) -> types.ModuleType:
    """Import the kernel module of ``family`` specialised to ``fn``.

    Cached functions get a generated file on disk (and numba's cache beside
    it); functions that cannot be keyed (closures over objects), and callers
    that need numba's compile-time reports (``parallel_diagnostics`` is not
    kept in the disk cache), get kernels compiled in memory from the same source.
    """
    key = function_key(fn) if cache else None
    if key is not None:
        digest = hashlib.sha256((source + key + _ENGINE_KEY).encode()).hexdigest()[:24]
        name = f"_minitorch_{family}_{digest}"
        module = _loaded.get(name)
        if module is not None:
            return module
        try:
            path = _write_once(cache_dir() / f"{name}.py", source)
        except OSError:
            path = None  # an unwritable cache directory: compile in memory instead
        if path is not None:
            spec = importlib.util.spec_from_file_location(name, path)
            assert spec is not None and spec.loader is not None
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            spec.loader.exec_module(module)
            module.fn = jit_scalar(fn)
            _loaded[name] = module
            return module
    module = types.ModuleType(f"_minitorch_{family}_inmemory")
    text = source.replace("cache=True", "cache=False")
    filename = f"<minitorch {family} kernels>"
    # Registered with linecache so numba's reports can show the kernel source.
    linecache.cache[filename] = (len(text), None, text.splitlines(True), filename)
    exec(compile(text, filename, "exec"), module.__dict__)
    module.fn = jit_scalar(fn)
    return module


def _write_once(path: Path, source: str) -> Path:
    """Write ``source`` atomically unless the same file exists (its mtime keys numba's cache)."""
    try:
        if path.read_text() == source:
            return path
    except OSError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        f.write(source)
    os.replace(tmp, path)
    return path
