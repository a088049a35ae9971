"""Compile scalar functions into kernels, and keep every kernel's machine code on disk.

Two jobs share this module:

* ``load_kernels`` turns a kernel family's source template (``fast_kernels``)
  into a module specialised to one scalar function: the source is executed in
  memory and the compiled scalar function injected as the module global ``fn``.
* ``njit`` is ``numba.njit`` whose ``cache=True`` stores machine code in
  minitorch's own cache directory (``$MINITORCH_CACHE_DIR``, else
  ``~/.cache/minitorch/numba-<version>``) rather than where numba looks (beside
  the source file, or in ``$HOME``). Every cached kernel of the package goes
  through it, the generated ones and the module-level ones of ``fast_ops`` and
  ``fast_conv`` alike, so a read-only install still imports and runs.

A cache entry is one file per kernel and signature. Its name hashes everything
the machine code depends on: the kernel's bytecode and every value numba
freezes into it (globals, closure cells, defaults, module attributes, the
helpers it calls, theirs in turn; see ``function_key``), the compile options,
the argument types, the CPU, the numba and Python versions and numba's
code-generation settings. A kernel that reads a value this module cannot key
is compiled in memory, never looked up. Entries carry a checksum and are
written atomically (a temporary file moved into place), so processes sharing
the directory see whole files or none. An entry that fails its checksum or
cannot be loaded is deleted and recompiled, and a directory that cannot be
written makes kernels compile in memory; each case warns once
(``KernelCacheWarning``, naming the directory).

Numba names a compiled function's symbol after its qualified name and a
per-process serial number, and a cached entry carries the code of every
function its kernel calls under those names, as weak symbols: loaded into a
process that already compiled a *different* function under the same name (two
closures or lambdas of one qualified name, numbered alike by two processes),
the kernel calls that other function. So this module makes numba number
functions at random (``_RandomFunctionIds``), which keeps every process's
names, forked ones included, apart from every other's.
"""

from __future__ import annotations

import builtins
import dis
import enum
import functools
import hashlib
import linecache
import os
import pickle
import re
import secrets
import struct
import sys
import types
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numba
import numpy as np
from numba.core import bytecode, serialize, sigutils
from numba.core import config as numba_config
from numba.core.caching import _Cache
from numba.core.compiler import CompileResult
from numba.core.dispatcher import Dispatcher
from numba.core.registry import CPUDispatcher, cpu_target

from . import fast_math, fast_simd, recording

CACHE_ENV = "MINITORCH_CACHE_DIR"
F64, F32 = np.dtype(np.float64), np.dtype(np.float32)


class ScalarCompileError(TypeError):
    """A user scalar function that numba cannot compile into a kernel."""


class KernelCacheWarning(RuntimeWarning):
    """The kernel cache directory is unusable, or held entries that had to be discarded."""


def cache_dir() -> Path:
    """Where compiled kernels are kept."""
    root = os.environ.get(CACHE_ENV)
    if root:
        return Path(root)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "minitorch" / f"numba-{numba.__version__}"


class _RandomFunctionIds:
    """Numba's source of function serial numbers (``FunctionIdentity._unique_ids``,
    a counter from 1 in every process), made random: a 63-bit number drawn from
    the OS for each function, so two processes never give one name to two
    different functions whose code can meet in one process through the cache."""

    def __iter__(self) -> _RandomFunctionIds:
        return self

    def __next__(self) -> int:
        return secrets.randbits(63)


# Set before any kernel compiles: this module is imported ahead of every kernel module.
if hasattr(bytecode.FunctionIdentity, "_unique_ids"):
    bytecode.FunctionIdentity._unique_ids = _RandomFunctionIds()


# Compiling scalar functions --------------------------------------------------------


def python_function(fn: Callable[..., float]) -> types.FunctionType:
    """The plain Python function behind ``fn`` (unwrapping numba dispatchers)."""
    py = getattr(fn, "py_func", fn)
    if not isinstance(py, types.FunctionType):
        raise ScalarCompileError(
            f"{getattr(fn, '__qualname__', fn)!r} is not a Python function; "
            "kernels need a plain `def` or lambda of floats."
        )
    return py


def jit_scalar(
    fn: Callable[..., float], jit: Callable[..., Any] | None = None, dtype: Any = None,
    float32_compiles: bool | None = None,
) -> Any:
    """Compile a scalar function for use inside kernels.

    Plain Python functions that ``fn`` calls through its globals (for example
    a user's ``softplus`` calling ``operators.exp``) are compiled too, so users
    write ordinary Python. ``jit`` defaults to ``numba.njit(inline="always")``
    with NumPy's error model (1/0 is inf, not an exception) for FastOps, where
    ``math`` is swapped for ``fast_math`` (a vectorisable ``exp``) and float32
    arguments get a float32 variant of the function; CUDA passes its
    device-function decorator and keeps ``math``.

    ``dtype`` is the arithmetic of the kernels that call it: float64 gives the
    function itself, float32 its float32 variant (or the function itself where
    the variant does not compile, ``fast_math.float32_or``), and None a stand-in
    that picks one of the two when a kernel compiles, by its argument types
    (``fast_math.by_dtype``). A fixed dtype is the cheaper to compile: the
    stand-in is an overload, compiled again into every kernel that calls it
    (about 0.45 s of the 3 s a cold course MLP spends compiling). ``float32_compiles``
    says whether the float32 variant compiles, when known (finding out compiles it).
    """
    py = python_function(fn)
    if jit is not None:
        return jit(_with_compiled_globals(py, jit, {}, {}))
    substitutes = {"math": fast_math.math_module()}
    inline = numba.njit(inline="always", error_model="numpy")
    required = _required_arguments(py)
    if dtype is not None and np.dtype(dtype) not in (F64, F32):
        raise TypeError(f"scalar functions compile for float64 or float32, not {dtype}")

    def make_fn64() -> Any:
        if isinstance(fn, CPUDispatcher):
            return fn
        return inline(_with_compiled_globals(py, inline, {}, substitutes))

    def float32_jit(f: types.FunctionType) -> Any:
        return inline(fast_math.float32_variant(f))

    def make_fn32() -> Any:
        return float32_jit(_with_compiled_globals(py, float32_jit, {}, substitutes))

    if dtype is None:
        return fast_math.by_dtype(make_fn64(), make_fn32, required)
    if np.dtype(dtype) == F64:
        return make_fn64()
    return fast_math.float32_or(make_fn32, make_fn64, required, float32_compiles)


def _required_arguments(py: types.FunctionType) -> int:
    return py.__code__.co_argcount - len(py.__defaults__ or ())


# Modules whose functions numba already knows (or that are not scalar code):
# they are left alone rather than compiled attribute by attribute, and they are
# keyed by name (their contents come with the installed version).
_NATIVE_MODULES = frozenset(
    ("numpy", "numba", "math", "cmath", "builtins", "operator", "_operator", "random")
)


def _is_python_module(value: Any) -> bool:
    return (
        isinstance(value, types.ModuleType) and value.__name__.split(".")[0] not in _NATIVE_MODULES
    )


def _is_user_function(value: Any) -> bool:
    """A Python function for kernels to compile from its bytecode (not a library function
    numba implements itself, nor one with a numba ``@overload``)."""
    return (
        isinstance(value, types.FunctionType)
        and _native_name(value) is None
        and not _numba_knows(value)
    )


def _numba_knows(value: Any) -> bool:
    """True when numba has its own typing for ``value`` (``@overload`` and the like)."""
    context = cpu_target.typing_context
    context.refresh()
    return context._lookup_global(value) is not None


def _with_compiled_globals(
    py: types.FunctionType, jit: Callable[..., Any], seen: dict[int, Any], substitutes: dict
) -> types.FunctionType:
    """``py`` with the Python functions it reaches (directly or as ``module.fn``) compiled."""
    replaced: dict[str, Any] = {}
    for name in py.__code__.co_names:
        value = py.__globals__.get(name)
        if isinstance(value, types.ModuleType) and value.__name__ in substitutes:
            replaced[name] = substitutes[value.__name__]
        elif _is_user_function(value):
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
        if _is_user_function(value):
            setattr(shim, name, _compiled(value, jit, seen, substitutes))
        elif _is_python_module(value) and value is not module:
            # ``package.module.fn``: the names come from the same expression.
            setattr(shim, name, _compiled_module(value, names, jit, seen, substitutes))
    return shim


# Keying what a kernel depends on ---------------------------------------------------


class _Uncacheable(Exception):
    """A value a kernel may freeze that this module cannot key."""


def function_key(fn: Callable[..., float]) -> str | None:
    """A hash of everything numba freezes into ``fn``'s machine code, or None.

    Numba compiles a function's globals, closure cells and defaults in as
    constants, follows module attributes (``mod.K``, ``pkg.mod.helper``) and
    compiles the functions it calls the same way. The key covers the bytecode
    of ``fn`` and of every Python function it reaches, and each value they read:
    numbers, strings, bytes, None, tuples (named or nested), NumPy arrays,
    scalars and dtypes, enums, numba dispatchers with their options, and
    library functions (by name). Anything else (lists, dicts, arbitrary
    objects, functions numba overloads) makes the function uncacheable: None.
    """
    py = python_function(fn)
    h = hashlib.sha256()
    try:
        _hash_value(fn if isinstance(fn, Dispatcher) else py, h, set(), frozenset())
    except (_Uncacheable, RecursionError):
        return None
    return h.hexdigest()[:24]


# Instructions that read a global name and an attribute, across Python versions.
_GLOBAL_OPS = frozenset(("LOAD_GLOBAL", "LOAD_NAME"))
_ATTR_OPS = frozenset(("LOAD_ATTR", "LOAD_METHOD"))


def _names(code: types.CodeType) -> tuple[list[str], frozenset[str]]:
    """The global names ``code`` (with its nested code) reads, and the attribute names."""
    globals_: list[str] = []
    attrs: set[str] = set()
    stack = [code]
    while stack:
        current = stack.pop()
        for ins in dis.get_instructions(current):
            if ins.opname in _GLOBAL_OPS and ins.argval not in globals_:
                globals_.append(ins.argval)
            elif ins.opname in _ATTR_OPS:
                attrs.add(ins.argval)
        stack.extend(c for c in current.co_consts if isinstance(c, types.CodeType))
    return globals_, frozenset(attrs)


def _update(h: Any, *parts: object) -> None:
    for part in parts:
        data = part if isinstance(part, bytes) else str(part).encode()
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)


def _hash_function(py: types.FunctionType, h: Any, seen: set) -> None:
    _update(h, "function", py.__module__, py.__qualname__)
    if id(py) in seen:  # recursion: the code is already in the hash
        return
    seen.add(id(py))
    if _numba_knows(py):
        raise _Uncacheable  # numba compiles its overload, not this code
    code = py.__code__
    _hash_code_object(code, h)
    globals_, attrs = _names(code)
    for cell in py.__closure__ or ():
        try:
            contents = cell.cell_contents
        except ValueError:  # an empty cell
            raise _Uncacheable from None
        _hash_value(contents, h, seen, attrs)
    _hash_value(py.__defaults__, h, seen, attrs)
    _hash_value(tuple(sorted((py.__kwdefaults__ or {}).items())), h, seen, attrs)
    for name in globals_:
        _update(h, "global", name)
        if name in py.__globals__:
            _hash_value(py.__globals__[name], h, seen, attrs)
        elif hasattr(builtins, name):
            _update(h, "builtin")
        else:
            _update(h, "missing")


def _hash_code_object(code: types.CodeType, h: Any) -> None:
    _update(h, code.co_code, code.co_argcount, code.co_posonlyargcount, code.co_kwonlyargcount,
            code.co_flags, code.co_nlocals, code.co_varnames, code.co_freevars, code.co_cellvars,
            code.co_names)  # fmt: skip
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            _hash_code_object(const, h)
        else:
            _hash_value(const, h, set(), frozenset())


def _hash_value(value: Any, h: Any, seen: set, attrs: frozenset[str]) -> None:
    """Add ``value`` to the hash ``h`` as numba would freeze it, or raise ``_Uncacheable``.

    ``attrs`` are the attribute names the reading code uses: for a module, the
    members it may reach.
    """
    kind = type(value)
    if value is None or value is Ellipsis:
        _update(h, repr(value))
    elif kind in (bool, int, str, bytes):
        _update(h, kind.__name__, value if kind is bytes else repr(value))
    elif kind is float:
        _update(h, "float", struct.pack("<d", value))
    elif kind is complex:
        _update(h, "complex", struct.pack("<dd", value.real, value.imag))
    elif isinstance(value, enum.Enum):
        _update(h, "enum", kind.__module__, kind.__qualname__, value.name)
        _hash_value(value.value, h, seen, frozenset())
    elif isinstance(value, enum.EnumMeta):
        _update(h, "enum class", value.__module__, value.__qualname__)
        for member in value:  # type: ignore[var-annotated]
            _hash_value(member, h, seen, frozenset())
    elif isinstance(value, np.generic):
        _update(h, "numpy scalar", _dtype_text(value.dtype), value.tobytes())
    elif isinstance(value, np.ndarray):
        layout = "C" if value.flags.c_contiguous else "F" if value.flags.f_contiguous else "A"
        _update(h, "array", _dtype_text(value.dtype), value.shape, layout,
                value.flags.writeable, value.flags.aligned)  # fmt: skip
        _update(h, np.ascontiguousarray(value).tobytes())
    elif isinstance(value, np.dtype):
        _update(h, "dtype", _dtype_text(value))
    elif isinstance(value, tuple):
        _update(h, "tuple", kind.__module__, kind.__qualname__, getattr(value, "_fields", ()),
                len(value))  # fmt: skip
        for item in value:
            _hash_value(item, h, seen, attrs)
    elif isinstance(value, frozenset):
        digests = []
        for item in value:
            sub = hashlib.sha256()
            _hash_value(item, sub, seen, attrs)
            digests.append(sub.digest())
        _update(h, "frozenset", *sorted(digests))
    elif isinstance(value, Dispatcher):
        if not isinstance(value, CPUDispatcher):
            raise _Uncacheable
        _update(h, "dispatcher", _options_text(value.targetoptions), _options_text(value.locals))
        _hash_function(value.py_func, h, seen)
    elif isinstance(value, types.ModuleType):
        _update(h, "module", value.__name__)
        if _is_python_module(value) and (id(value), attrs) not in seen:
            seen.add((id(value), attrs))
            for attr in sorted(attrs):
                _update(h, "member", attr)
                member = getattr(value, attr, _ABSENT)
                if member is not _ABSENT:
                    _hash_value(member, h, seen, attrs)
    elif _engine_name(value) is not None:
        _update(h, "engine", _engine_name(value))
    elif _native_name(value) is not None:
        _update(h, "library", _native_name(value))
    elif isinstance(value, types.FunctionType):
        _hash_function(value, h, seen)
    else:
        raise _Uncacheable


_ABSENT = object()


def _options_text(options: Any) -> str:
    """A text of compile options that does not depend on set or dict order."""
    if isinstance(options, dict):
        items = sorted(options.items())
        return "{" + ", ".join(f"{k!r}: {_options_text(v)}" for k, v in items) + "}"
    if isinstance(options, (set, frozenset)):
        return "{" + ", ".join(sorted(_options_text(v) for v in options)) + "}"
    return repr(options)


def _dtype_text(dtype: np.dtype) -> str:
    if dtype.hasobject:
        raise _Uncacheable
    return f"{dtype.str}|{dtype.descr}"


def _native_name(value: Any) -> str | None:
    """``module.qualname`` of a function or type from a library numba implements, else None."""
    if isinstance(value, np.ufunc):
        return f"numpy.{value.__name__}" if getattr(np, value.__name__, None) is value else None
    module = getattr(value, "__module__", None)
    qualname = getattr(value, "__qualname__", None)
    if not (isinstance(module, str) and isinstance(qualname, str)):
        return None
    if module.split(".")[0] not in _NATIVE_MODULES or not callable(value):
        return None
    found: Any = sys.modules.get(module)
    for part in qualname.split("."):
        found = getattr(found, part, None)
    return f"{module}.{qualname}" if found is value else None


def _source_of(module: types.ModuleType) -> str | None:
    loader = getattr(module, "__loader__", None)
    try:
        return loader.get_source(module.__name__) if loader is not None else None
    except (ImportError, OSError):
        return None


# The modules whose source decides how kernels compile: their objects (fast_simd's
# intrinsics, fast_math's typed helpers) are keyed by name, their code by _ENGINE_KEY.
_ENGINE_MODULES = (sys.modules[__name__], fast_math, fast_simd)


def _engine_name(value: Any) -> str | None:
    """``module.name`` of an object defined in one of ``_ENGINE_MODULES``, else None."""
    for module in _ENGINE_MODULES:
        for name, member in vars(module).items():
            if member is value:
                return f"{module.__name__}.{name}"
    return None


def _engine_key() -> str | None:
    """A hash of the code that decides how kernels compile and are cached (this module,
    ``fast_math`` and ``fast_simd``, with the vector width it chose): changing any must
    not reuse kernels compiled the old way."""
    width = f"full vectors of {fast_simd.FULL_BYTES} bytes, up to {fast_simd.FULL_LANES} lanes"
    h = hashlib.sha256(width.encode())
    for module in _ENGINE_MODULES:
        source = _source_of(module)
        if source is None:
            return None
        h.update(source.encode())
    return h.hexdigest()[:16]


_ENGINE_KEY = _engine_key()


# Generated kernel modules ------------------------------------------------------------


@functools.cache
def _compiled_source(label: str, source: str) -> types.CodeType:
    """Kernel source's bytecode, compiled once per process for all the modules made from
    it, under the file name ``<minitorch {label}>``."""
    filename = f"<minitorch {label}>"
    # Registered with linecache so numba's reports can show the kernel source.
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    return compile(source, filename, "exec")


def _with_constants(key: str, constants: dict[str, Any]) -> str | None:
    """``key`` extended with a hash of ``constants``; None if one of them cannot be keyed."""
    h = hashlib.sha256(key.encode())
    try:
        _hash_value(tuple(sorted(constants.items())), h, set(), frozenset())
    except (_Uncacheable, RecursionError):
        return None
    return h.hexdigest()[:24]


# The module global that carries a generated module's cache key to its kernels.
_KEY_GLOBAL = "__minitorch_kernel_key__"
_loaded: dict[str, types.ModuleType] = {}


def _module_for(family: str, parts: list[str | None]) -> tuple[str, str | None]:
    """The name of the module of ``family`` kernels keyed by ``parts`` (its source
    first), and its digest: None (and one in-memory name) when a part has no key."""
    if _ENGINE_KEY is None or any(part is None for part in parts):
        return f"_minitorch_{family}_inmemory", None
    text = "\0".join([*parts, _ENGINE_KEY])  # type: ignore[list-item]
    digest = hashlib.sha256(text.encode()).hexdigest()[:24]
    return f"_minitorch_{family}_{digest}", digest


def _new_module(name: str, digest: str | None, code: types.CodeType,
                names: dict[str, Any]) -> types.ModuleType:  # fmt: skip
    """A module running ``code`` with ``names`` (and this module's ``njit``) as globals;
    registered by name when it has a digest, as numba's cached code finds its
    module's globals by importing the module by name."""
    module = types.ModuleType(name)
    module.__dict__.update({"njit": njit, _KEY_GLOBAL: digest, **names})
    exec(code, module.__dict__)
    if digest is not None:
        sys.modules[name] = module
        _loaded[name] = module
    return module


def load_kernels(
    family: str,
    source: str,
    fn: Callable[..., float],
    cache: bool = True,
    constants: dict[str, Any] | None = None,
    dtype: Any = None,
) -> types.ModuleType:
    """The kernel module of ``family`` specialised to ``fn``, with ``fn``'s arithmetic
    in ``dtype`` (float64 or float32: see ``jit_scalar``; None for kernels that
    may meet either, at a higher compile cost).

    ``constants`` are module globals the kernels read (numba freezes them at
    compile time): numbers, or objects of ``fast_simd`` and ``fast_math`` such
    as a vector operation. They are set before any kernel compiles and are part
    of the cache key. Kernels of functions or constants that cannot be keyed,
    and all of them when ``cache`` is false (callers that need numba's
    compile-time reports), are compiled in memory and never looked up on disk.
    """
    constants = dict(constants or {})
    key = function_key(fn) if cache and _ENGINE_KEY is not None else None
    if key is not None:
        key = _with_constants(key, constants)
    arithmetic = "any dtype" if dtype is None else np.dtype(dtype).name
    name, digest = _module_for(family, [source, key, arithmetic])
    module = _loaded.get(name)
    if module is None:
        fn_compiled = _kernel_scalar(fn, dtype, key)
        module = _new_module(name, digest, _compiled_source(f"{family} kernels", source), {})
        module.__dict__.update(constants)  # over the template's defaults
        module.fn = fn_compiled
    return module


def _kernel_scalar(fn: Callable[..., float], dtype: Any, key: str | None) -> Any:
    """``jit_scalar(fn, dtype=dtype)``, remembering on disk for a keyed function whether
    its float32 variant compiles. Finding out compiles the variant, about 50 ms a
    function, which every process paid again (0.7 s before the digits CNN's first
    float32 epoch) though its kernels come from the disk cache."""
    if key is None or dtype is None or np.dtype(dtype) != F32:
        return jit_scalar(fn, dtype=dtype)
    path = cache_dir() / "float32" / hashlib.sha256(f"{_ENGINE_KEY} {key}".encode()).hexdigest()
    try:
        known = _FLOAT32_VERDICTS.get(path.read_bytes())
    except OSError:
        known = None
    if known is not None:
        return jit_scalar(fn, dtype=dtype, float32_compiles=known)
    fn32 = jit_scalar(fn, dtype=dtype, float32_compiles=True)  # not compiled yet
    compiles = fast_math.float32_compiles(fn32, _required_arguments(python_function(fn)))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _write_atomic(path, b"yes" if compiles else b"no")
    except OSError:
        pass  # an unwritable cache: found out again next time (the kernels warn of it)
    return fn32 if compiles else jit_scalar(fn, dtype=F64)


# The float32 verdicts ``_kernel_scalar`` keeps (anything else is found out again).
_FLOAT32_VERDICTS = {b"yes": True, b"no": False}


def kernel_key(kernel: Any) -> str | None:
    """The cache key of the module ``load_kernels`` made that ``kernel`` belongs to
    (it covers the template and the scalar function); None when it has none."""
    return getattr(kernel, "py_func", kernel).__globals__.get(_KEY_GLOBAL)


def load_generated(
    family: str, source: str, scalars: dict[str, Any], parts: list[str | None]
) -> types.ModuleType:
    """A module of kernels generated at run time (``source``, decorated with this
    module's ``njit``) whose globals ``scalars`` are the compiled scalar functions
    of kernel modules ``load_kernels`` made, with keys ``parts`` (``kernel_key``).

    When every part has a key, the kernels are cached on disk under a hash of the
    source and those keys; otherwise they compile in memory.
    """
    name, digest = _module_for(family, [source, *parts])
    module = _loaded.get(name)
    if module is None:
        # Its own file name: reports must show this module's source, not another's.
        label = f"{family} kernels {digest or id(source)}"
        module = _new_module(name, digest, _compiled_source(label, source), scalars)
    return module


# The disk cache -------------------------------------------------------------------

_MAGIC = b"minitorch kernel cache entry, format 1\n"
_CHECKSUM = hashlib.sha256().digest_size

# Numba settings that change the machine code but not the key numba computes.
_CODEGEN_SETTINGS = ("BOUNDSCHECK", "OPT", "LOOP_VECTORIZE", "SLP_VECTORIZE", "ENABLE_AVX",
                     "DEBUGINFO_DEFAULT", "USING_SVML", "EXTEND_VARIABLE_LIFETIMES")  # fmt: skip

_warned: set[tuple[str, str]] = set()
_unwritable: set[str] = set()


def _warn_once(kind: str, directory: Path, message: str) -> None:
    if (kind, str(directory)) not in _warned:
        _warned.add((kind, str(directory)))
        warnings.warn(message, KernelCacheWarning, stacklevel=2)


def njit(fn: Callable[..., Any] | None = None, *, cache: bool = False, **options: Any) -> Any:
    """``numba.njit``, except that ``cache=True`` uses minitorch's kernel cache (see above).

    Nothing touches the disk until a kernel first compiles. Parallel kernels
    loaded from the cache still answer ``parallel_diagnostics``: numba keeps
    that report only for code it compiled, so it is recompiled in memory once
    when asked for.
    """

    def decorate(py_func: Callable[..., Any]) -> Any:
        # No C-callable wrapper (``.cfunc``, first-class function use), which nothing here
        # takes and which numba otherwise builds for every kernel: 5 ms of each compile.
        dispatcher = numba.njit(**{"no_cfunc_wrapper": True, **options})(py_func)
        if cache and isinstance(dispatcher, Dispatcher):
            dispatcher._cache = _DiskCache(dispatcher.py_func, options)
            if options.get("parallel"):
                dispatcher.parallel_diagnostics = types.MethodType(
                    _parallel_diagnostics, dispatcher
                )
        return dispatcher

    return decorate if fn is None else decorate(fn)


def variant(py: types.FunctionType, suffix: str) -> types.FunctionType:
    """A copy of ``py`` under its own name: numba's disk cache keys entries by name,
    so a parallel and a serial compile of one function would overwrite each other."""
    clone = types.FunctionType(
        py.__code__, py.__globals__, py.__name__ + suffix, py.__defaults__, py.__closure__
    )
    clone.__qualname__ = py.__qualname__ + suffix
    return clone


def kernel_pair(py: types.FunctionType, **options: Any) -> tuple[Any, Any]:
    """The parallel and the serial compile of a kernel (cached under their own names),
    with numba's ``options``."""
    return (njit(parallel=True, cache=True, **options)(variant(py, "_par")),
            njit(cache=True, **options)(variant(py, "_ser")))  # fmt: skip


# Below this many elements written, a thread launch costs more than the loop (every
# FastOps kernel pair picks its variant by it: ``fast_ops.PARALLEL_THRESHOLD``).
PARALLEL_ELEMENTS = 1 << 15


def launch_into(kernels: tuple[Any, Any], out: np.ndarray, *args: Any, reads: int = 0) -> None:
    """Fill ``out`` with ``kernels``' parallel or serial form, reported to a recorder:
    parallel from PARALLEL_ELEMENTS elements written, or ``reads`` read where a kernel
    reads more than it writes (a pooling, a gather)."""
    parallel = out.size >= PARALLEL_ELEMENTS or reads >= PARALLEL_ELEMENTS
    kernel = kernels[0] if parallel else kernels[1]
    kernel(out, *args)
    if recording.recorder is not None:
        recording.recorder.launch(kernel, (out, *args))


def _parallel_diagnostics(
    dispatcher: Dispatcher, signature: Any = None, level: int = 1
) -> None:
    """``Dispatcher.parallel_diagnostics`` that also covers overloads loaded from disk."""
    report = type(dispatcher).parallel_diagnostics
    for sig in [signature] if signature is not None else list(dispatcher.signatures):
        if dispatcher.overloads[sig].metadata is not None:
            report(dispatcher, sig, level)
            continue
        twin = getattr(dispatcher, "_diagnostics_twin", None)
        if twin is None:
            twin = type(dispatcher)(
                dispatcher.py_func, dict(dispatcher.locals), dict(dispatcher.targetoptions)
            )
            dispatcher._diagnostics_twin = twin
        twin.compile(sig)
        report(twin, sig, level)


@functools.cache
def _magic_tuple(codegen: Any) -> tuple[str, ...]:
    """``codegen.magic_tuple()`` (the target and CPU features), once per code generator:
    it asks LLVM for the host's features every time, 0.3-0.5 ms (of every kernel's load
    from disk, save and ``on_disk`` check)."""
    return codegen.magic_tuple()


def on_disk(kernel: Any, args: tuple[Any, ...]) -> bool:
    """Whether the cache directory holds ``kernel``'s machine code for a launch with
    ``args`` (loading it takes milliseconds; compiling it, a tenth of a second or more).
    False for anything but a dispatcher of ``njit(cache=True)``, or arguments numba
    cannot type."""
    cache = getattr(kernel, "_cache", None)
    if not isinstance(cache, _DiskCache):
        return False
    try:
        # The signature the dispatcher compiles a call for (``_compile_for_args``).
        sig = tuple(kernel.typeof_pyval(a) for a in args)
    except (TypeError, ValueError):
        return False
    path = cache._entry_path(sig, kernel.targetctx.codegen())
    return path is not None and path.is_file()


class _DiskCache(_Cache):
    """Numba's cache interface over checksummed entry files in ``cache_dir()/kernels``."""

    def __init__(self, py_func: types.FunctionType, options: dict[str, Any]) -> None:
        self._py_func = py_func
        self._options = options
        self._identity: str | None | object = _ABSENT
        self._enabled = True

    @property
    def cache_path(self) -> str:
        return str(cache_dir() / "kernels")

    def enable(self) -> None:
        self._enabled = True

    def disable(self) -> None:
        self._enabled = False

    def flush(self) -> None:
        """Nothing to do: entries are keyed by content, so stale ones are never found."""

    def _kernel_identity(self) -> str | None:
        """The hash of the kernel's code, options and frozen values; None if uncacheable."""
        if self._identity is _ABSENT:
            py = self._py_func
            if _KEY_GLOBAL in py.__globals__:
                key = py.__globals__[_KEY_GLOBAL]  # a generated module: keyed when loaded
            else:
                key = function_key(py)
            self._identity = None
            if key is not None and _ENGINE_KEY is not None:
                text = f"{key}\0{py.__qualname__}\0{_options_text(self._options)}"
                self._identity = f"{text}\0{_ENGINE_KEY}"
        return self._identity  # type: ignore[return-value]

    def _entry_path(self, sig: Any, codegen: Any) -> Path | None:
        identity = self._kernel_identity()
        if identity is None or not self._enabled:
            return None
        directory = Path(self.cache_path)
        if str(directory) in _unwritable:
            return None
        args, return_type = sigutils.normalize_signature(sig)
        settings = [getattr(numba_config, name, None) for name in _CODEGEN_SETTINGS]
        text = (f"{identity}\0{args}\0{return_type}\0{_magic_tuple(codegen)}\0{settings}\0"
                f"{numba.__version__}\0{sys.version}\0{sys.abiflags}")  # fmt: skip
        digest = hashlib.sha256(text.encode()).hexdigest()[:32]
        label = re.sub(r"[^A-Za-z0-9_.]", "_", self._py_func.__qualname__)[:60]
        return directory / f"{label}-{digest}.nbk"

    def load_overload(self, sig: Any, target_context: Any) -> Any:
        path = self._entry_path(sig, target_context.codegen())
        if path is None:
            return None
        try:
            blob = path.read_bytes()
        except OSError:  # not there yet, or unreadable: compile (saving reports a bad dir)
            return None
        target_context.refresh()
        try:
            header = len(_MAGIC) + _CHECKSUM
            payload = blob[header:]
            if blob[: len(_MAGIC)] != _MAGIC or blob[len(_MAGIC) : header] != _digest(payload):
                raise ValueError("bad header or checksum (a truncated or damaged file)")
            return CompileResult._rebuild(target_context, *pickle.loads(payload))
        except Exception as e:  # noqa: BLE001 - whatever the damage, recompiling is correct
            self._discard(path, e)
            return None

    def _discard(self, path: Path, error: Exception) -> None:
        try:
            path.unlink()
        except OSError:
            pass
        _warn_once(
            "corrupt",
            path.parent,
            f"minitorch: discarded damaged kernel cache entries in {path.parent} "
            f"(first: {path.name}: {type(error).__name__}: {error}); they are recompiled.",
        )

    def save_overload(self, sig: Any, cres: Any) -> None:
        if any(not lifted.can_cache for lifted in cres.lifted) or cres.library.has_dynamic_globals:
            return  # numba cannot serialise it (e.g. large global arrays): memory only
        path = self._entry_path(sig, cres.codegen)
        if path is None:
            return
        payload = serialize.dumps(cres._reduce())
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            _write_atomic(path, _MAGIC + _digest(payload) + payload)
        except OSError as e:
            _unwritable.add(str(path.parent))
            _warn_once(
                "unwritable",
                path.parent,
                f"minitorch: cannot write the kernel cache in {path.parent} ({e}); kernels are "
                f"compiled in memory, every run. Set {CACHE_ENV} to a writable directory "
                "to keep them.",
            )


def _digest(payload: bytes) -> bytes:
    return hashlib.sha256(payload).digest()


def _write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a uniquely named temporary file and a rename."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.{os.urandom(6).hex()}.tmp")
    try:
        with open(tmp, "xb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        try:
            tmp.unlink()
        except OSError:
            pass
        raise
