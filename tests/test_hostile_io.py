"""Hostile inputs to the parts that touch the outside world: the kernel cache, checkpoints,
the command line.

Each case either gets the right answer or a clear exception, never a crash, a hang, a
stale kernel or a traceback dump. Anything that compiles in a fresh cache, could hang or
needs its own environment runs in a subprocess with a timeout.
"""

from __future__ import annotations

import enum
import importlib.util
import io
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import textwrap
import threading
import time
import types
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numba
import numpy as np
import pytest

import minitorch
from minitorch import Module, Parameter, kernel_cache, train
from minitorch.__main__ import build_parser
from minitorch.__main__ import main as cli_main
from minitorch.checkpoint import CheckpointError, load, save
from minitorch.kernel_cache import KernelCacheWarning, function_key

ROOT = Path(__file__).resolve().parents[1]


def run_python(
    args: list[str],
    env: dict[str, str | None],
    cwd: Path = ROOT,
    timeout: float = 300,
) -> subprocess.CompletedProcess[str]:
    """Run ``python *args`` with ``env`` changes (None removes a variable)."""
    full = dict(os.environ)
    full["PYTHONPATH"] = str(ROOT)
    for key, value in env.items():
        if value is None:
            full.pop(key, None)
        else:
            full[key] = value
    return subprocess.run(
        [sys.executable, *args], env=full, cwd=cwd, capture_output=True, text=True,
        timeout=timeout,
    )  # fmt: skip


def last_json(proc: subprocess.CompletedProcess[str]) -> Any:
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


def cache_env(cache: Path) -> dict[str, str | None]:
    return {"MINITORCH_CACHE_DIR": str(cache), "NUMBA_CACHE_DIR": str(cache / "numba")}


# Item 5: the kernel cache key covers every value numba freezes into a kernel ----------------

STALE_CONFIG = {
    "__init__.py": "from . import inner\n",
    "inner.py": "import os\n\nK = float(os.environ['STALE_K'])\n",
}

STALE_SCRIPT = textwrap.dedent(
    """
    import json
    import os
    import sys

    import numba
    import numpy as np

    import minitorch
    import stale_config
    from numba.core.registry import CPUDispatcher

    K = float(os.environ["STALE_K"])
    TUP = (K,)
    ARR = np.array([K])
    jit_helper = numba.njit(lambda v: v * TUP[0])

    # The issue's two cases, and values reached through modules and helpers (every kind
    # of value is checked in process by test_function_key_covers_frozen_value).
    FUNCS = {
        "tuple": lambda v: v * TUP[0],
        "array": lambda v: v * ARR[0],
        "nested module attribute": lambda v: v * stale_config.inner.K,
        "njit helper's global": lambda v: jit_helper(v),
    }
    fast = minitorch.TensorBackend(minitorch.FastOps)
    t = minitorch.tensor_from_numpy(np.array([1.0, 2.0]), backend=fast)
    out = {name: minitorch.unary_op(f)(t).to_numpy().tolist() for name, f in FUNCS.items()}
    hits = sum(
        sum(obj.stats.cache_hits.values())
        for name, module in list(sys.modules.items()) if name.startswith("_minitorch_map_")
        for obj in vars(module).values() if isinstance(obj, CPUDispatcher)
    )
    print(json.dumps({"values": out, "hits": hits}))
    """
)


def test_no_stale_kernel_when_a_frozen_value_changes(tmp_path: Path) -> None:
    package = tmp_path / "stale_config"
    package.mkdir()
    for name, text in STALE_CONFIG.items():
        (package / name).write_text(text)
    script = tmp_path / "stale.py"
    script.write_text(STALE_SCRIPT)
    env = cache_env(tmp_path / "cache")
    env["PYTHONPATH"] = f"{ROOT}{os.pathsep}{tmp_path}"
    for k, must_hit in ((2.0, False), (5.0, False), (2.0, True)):
        env["STALE_K"] = str(k)
        result = last_json(run_python([str(script)], env, cwd=tmp_path))
        for name, values in result["values"].items():
            assert values == [k, 2 * k], f"{name}: stale kernel for K={k}"
        if must_hit:  # the cache is used, not bypassed
            assert result["hits"] >= len(result["values"])


def _fn(source: str, **globals_: Any) -> types.FunctionType:
    namespace: dict[str, Any] = {"__name__": "user_module", **globals_}
    exec(textwrap.dedent(source), namespace)
    return namespace["f"]


def _module(name: str, **attrs: Any) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__dict__.update(attrs)
    return module


def _enum(value: float) -> type[enum.Enum]:
    return enum.Enum("Scale", {"FACTOR": value})


def _closure(value: Any) -> Callable[[float], float]:
    def f(v: float) -> float:
        return v * value[0]

    return f


# Each case: how to build a function from a value, and two values that must key apart.
FROZEN_VALUES: dict[str, tuple[Callable[[Any], Callable[..., float]], Any, Any]] = {
    "int": (lambda g: _fn("def f(v):\n    return v * G\n", G=g), 2, 5),
    "float sign": (lambda g: _fn("def f(v):\n    return v * G\n", G=g), 0.0, -0.0),
    "bool vs int": (lambda g: _fn("def f(v):\n    return v * G\n", G=g), True, 1),
    "complex": (lambda g: _fn("def f(v):\n    return v * G.real\n", G=g), 2j, 5j),
    "string": (lambda g: _fn("def f(v):\n    return v if G == 'a' else -v\n", G=g), "a", "b"),
    "bytes": (lambda g: _fn("def f(v):\n    return v * len(G)\n", G=g), b"a", b"ab"),
    "tuple": (lambda g: _fn("def f(v):\n    return v * G[0]\n", G=g), (2.0,), (5.0,)),
    "nested tuple": (
        lambda g: _fn("def f(v):\n    return v * G[1][0]\n", G=g), (1.0, (2.0,)), (1.0, (5.0,))
    ),
    "array values": (
        lambda g: _fn("def f(v):\n    return v * G[0]\n", G=g), np.array([2.0]), np.array([5.0])
    ),
    "array dtype": (
        lambda g: _fn("def f(v):\n    return v * G[0]\n", G=g),
        np.array([2.0], np.float32),
        np.array([2.0], np.float64),
    ),
    "array layout": (
        lambda g: _fn("def f(v):\n    return v * G[0, 0]\n", G=g),
        np.ones((2, 2)),
        np.asfortranarray(np.ones((2, 2))),
    ),
    "numpy scalar": (
        lambda g: _fn("def f(v):\n    return v * G\n", G=g), np.float64(2.0), np.float64(5.0)
    ),
    "numpy scalar type": (
        lambda g: _fn("def f(v):\n    return v * G\n", G=g), np.float32(2.0), np.float64(2.0)
    ),
    "dtype": (
        lambda g: _fn("def f(v):\n    return v * G.itemsize\n", G=g),
        np.dtype(np.float32),
        np.dtype(np.float64),
    ),
    "enum": (lambda g: _fn("def f(v):\n    return v * G.FACTOR.value\n", G=_enum(g)), 2.0, 5.0),
    "module attribute": (
        lambda g: _fn("def f(v):\n    return v * cfg.K\n", cfg=_module("cfg", K=g)), 2.0, 5.0
    ),
    "nested module attribute": (
        lambda g: _fn(
            "def f(v):\n    return v * pkg.sub.K\n",
            pkg=_module("pkg", sub=_module("pkg.sub", K=g)),
        ),
        2.0,
        5.0,
    ),
    "helper's global": (
        lambda g: _fn(
            "def helper(v):\n    return v * G\n\ndef f(v):\n    return helper(v)\n", G=g
        ),
        2.0,
        5.0,
    ),
    "njit helper's global": (
        lambda g: _fn(
            "def f(v):\n    return helper(v)\n",
            helper=numba.njit(_fn("def f(v):\n    return v * G[0]\n", G=g)),
        ),
        (2.0,),
        (5.0,),
    ),
    "closure": (_closure, (2.0,), (5.0,)),
    "default": (lambda g: _fn("def f(v, c=G):\n    return v * c[0]\n", G=g), (2.0,), (5.0,)),
    "keyword default": (
        lambda g: _fn("def f(v, *, c=G):\n    return v * c[0]\n", G=g), (2.0,), (5.0,)
    ),
}


@pytest.mark.parametrize("kind", list(FROZEN_VALUES))
def test_function_key_covers_frozen_value(kind: str) -> None:
    build, first, second = FROZEN_VALUES[kind]
    key = function_key(build(first))
    assert key is not None, f"{kind} should be cacheable"
    assert function_key(build(first)) == key  # stable for equal values
    assert function_key(build(second)) != key


class _Opaque:
    factor = 2.0


UNKEYABLE = {
    "list": ("def f(v):\n    return v * G[0]\n", [2.0]),
    "dict": ("def f(v):\n    return v * G['k']\n", {"k": 2.0}),
    "object attribute": ("def f(v):\n    return v * G.factor\n", _Opaque()),
    "class attribute": ("def f(v):\n    return v * G.factor\n", _Opaque),
    "object array": ("def f(v):\n    return v * G[0]\n", np.array([2.0], dtype=object)),
    "object in tuple": ("def f(v):\n    return v * G[0]\n", (2.0, object())),
    "namespace in module": (
        "def f(v):\n    return v * cfg.ns.k\n",
        _module("cfg", ns=types.SimpleNamespace(k=2.0)),
    ),
}


@pytest.mark.parametrize("kind", list(UNKEYABLE))
def test_values_that_cannot_be_keyed_make_the_function_uncacheable(kind: str) -> None:
    source, value = UNKEYABLE[kind]
    name = "cfg" if "cfg." in source else "G"
    assert function_key(_fn(source, **{name: value})) is None


@pytest.mark.kernels
def test_overloaded_helper_compiles_in_memory_and_never_reaches_the_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from numba.extending import overload

    def scale(v: float) -> float:
        raise NotImplementedError("numba uses the overload")

    @overload(scale)
    def _scale_overload(v):  # noqa: ANN001, ANN202
        return lambda v: 7.0 * v

    def f(v: float) -> float:
        return scale(v) + 1.0

    assert function_key(f) is None
    monkeypatch.setenv("MINITORCH_CACHE_DIR", str(tmp_path))
    fast = minitorch.TensorBackend(minitorch.FastOps)
    t = minitorch.tensor_from_numpy(np.array([1.0, 2.0]), backend=fast)
    np.testing.assert_array_equal(minitorch.unary_op(f)(t).to_numpy(), [8.0, 15.0])
    assert not list(tmp_path.rglob("*.nbk"))


def test_reduce_lane_setting_is_part_of_the_key() -> None:
    from minitorch import fast_kernels, operators
    from minitorch.kernel_cache import load_kernels

    source = fast_kernels.REDUCE_SOURCE
    lanes = load_kernels("reduce", source, operators.add, constants={"LANES": True})
    serial = load_kernels("reduce", source, operators.add, constants={"LANES": False})
    assert lanes is not serial and lanes.LANES is True and serial.LANES is False


# Items 9 and 10: a damaged, shared or unwritable cache -------------------------------------

WORKLOAD = textwrap.dedent(
    """
    import contextlib
    import io
    import json
    import os
    import sys

    import numpy as np
    from numba.core.registry import CPUDispatcher

    import minitorch
    from minitorch import fast_conv


    def dispatchers():
        seen = set()
        for name, module in list(sys.modules.items()):
            if name.startswith(("minitorch", "_minitorch_")):
                for obj in list(vars(module).values()):
                    # Kernels kept as module globals, alone or as (parallel, serial) pairs.
                    for item in obj if isinstance(obj, tuple) else (obj,):
                        if isinstance(item, CPUDispatcher) and id(item) not in seen:
                            seen.add(id(item))
                            yield item


    def bump(x):
        return 3.0 * x + 0.5


    fast = minitorch.TensorBackend(minitorch.FastOps)
    compiled_early = [d.py_func.__qualname__ for d in dispatchers() if d.signatures]
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((3, 4)), rng.standard_normal((4, 5))


    def t(array):
        return minitorch.tensor_from_numpy(array, backend=fast)


    # A generated kernel of a user function, a reduction, a module-level kernel (fast_ops).
    checks = [
        (minitorch.unary_op(bump)(t(a)).to_numpy(), 3.0 * a + 0.5),
        (t(a).sum(1).to_numpy(), a.sum(1, keepdims=True)),
        ((t(a) @ t(b)).to_numpy(), a @ b),
    ]
    diagnosed = None
    if os.environ.get("DIAGNOSE"):  # a parallel module-level kernel, and numba's report on it
        x, w = rng.standard_normal((2, 3, 6)), rng.standard_normal((4, 3, 2))
        padded = np.concatenate([x, np.zeros((2, 3, 1))], axis=2)
        windows = np.stack([padded[:, :, k : k + 6] for k in range(2)], axis=-1)
        expected = np.einsum("ock,bcjk->boj", w, windows)
        checks.append((minitorch.conv1d(t(x), t(w)).to_numpy(), expected))
        # The course's kernel itself (Conv1dFun takes the GEMM path).
        out = minitorch.zeros((2, 4, 6), backend=fast)
        fast_conv.tensor_conv1d(*out.tuple(), out.size, *t(x).tuple(), *t(w).tuple(), False)
        checks.append((out.to_numpy(), expected))
        report = io.StringIO()
        with contextlib.redirect_stdout(report):
            fast_conv.tensor_conv1d.parallel_diagnostics(level=3)
        diagnosed = "Parallel loop listing" in report.getvalue()
    ok = all(np.allclose(got, want, rtol=1e-12, atol=1e-12) for got, want in checks)
    stats = [d.stats for d in dispatchers()]
    print(json.dumps({
        "ok": ok,
        "diagnosed": diagnosed,
        "compiled_early": compiled_early,
        "hits": sum(sum(s.cache_hits.values()) for s in stats),
        "misses": sum(sum(s.cache_misses.values()) for s in stats),
        "package": minitorch.__file__,
    }))
    """
)


def run_workload(
    cache: Path, env: dict[str, str | None] | None = None, cwd: Path = ROOT
) -> tuple[dict[str, Any], str]:
    proc = run_python(["-c", WORKLOAD], {**cache_env(cache), **(env or {})}, cwd=cwd)
    result = last_json(proc)
    assert result["ok"], result
    assert result["compiled_early"] == [], "kernels must compile on first use, not at import"
    return result, proc.stderr


def test_damaged_cache_entries_are_discarded_recompiled_and_reported_once(
    tmp_path: Path,
) -> None:
    cache = tmp_path / "cache"
    first, err = run_workload(cache)
    assert first["misses"] >= 3 and "KernelCacheWarning" not in err
    damaged = sorted((cache / "kernels").glob("*.nbk"))  # every kernel the next run loads
    assert len(damaged) >= 3
    # Every kind of damage: truncation, zero length, flipped bytes, a stranger's file.
    for i, entry in enumerate(damaged):
        data = bytearray(entry.read_bytes())
        if i % 4 == 0:
            entry.write_bytes(data[: len(data) // 2])
        elif i % 4 == 1:
            entry.write_bytes(b"")
        elif i % 4 == 2:
            data[len(data) // 2] ^= 0xFF
            entry.write_bytes(bytes(data))
        else:
            entry.write_bytes(os.urandom(len(data)))
    # Leftovers of other layouts and versions must not matter either.
    (cache / "_minitorch_map_0123456789abcdef01234567.py").write_bytes(b"\xff\xfe\x00garbage")
    (cache / "kernels" / "stray.nbi").write_bytes(b"\x80\x04\x95")
    (cache / "kernels" / "stray.py").write_bytes(b"\xff\xff")

    second, err = run_workload(cache, {"DIAGNOSE": "1"})
    assert err.count("KernelCacheWarning:") == 1, err
    assert str(cache / "kernels") in err and "damaged" in err
    assert second["misses"] >= len(damaged) and second["diagnosed"]
    entries = sorted((cache / "kernels").glob("*.nbk"))

    # Repaired: everything loads, nothing is said, and numba's parallel report still works
    # for a kernel loaded from disk (numba keeps it only for code it compiled itself).
    third, err = run_workload(cache, {"DIAGNOSE": "1"})
    assert "KernelCacheWarning" not in err, err
    assert third["misses"] == 0 and third["hits"] >= len(entries) and third["diagnosed"]


def test_processes_sharing_a_fresh_cache_all_work(tmp_path: Path) -> None:
    cache = tmp_path / "shared"
    full = {**os.environ, "PYTHONPATH": str(ROOT), **cache_env(cache)}
    procs = [
        subprocess.Popen([sys.executable, "-c", WORKLOAD], env=full, cwd=ROOT, text=True,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for _ in range(2)
    ]  # fmt: skip
    for proc in procs:
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err
        assert json.loads(out.strip().splitlines()[-1])["ok"]
        assert "KernelCacheWarning" not in err, err
    assert not list(cache.rglob("*.tmp"))
    after, err = run_workload(cache)
    assert after["misses"] == 0 and "KernelCacheWarning" not in err


def test_read_only_install_without_a_writable_home_imports_and_runs(tmp_path: Path) -> None:
    # As root, permissions do not stop writes, so every place a cache could go sits
    # under a regular file: creating a directory there fails for anyone.
    site = tmp_path / "site"
    shutil.copytree(
        ROOT / "minitorch", site / "minitorch", ignore=shutil.ignore_patterns("__pycache__")
    )
    (site / "minitorch" / "__pycache__").write_text("not a directory")
    blocker = tmp_path / "blocker"
    blocker.write_text("not a directory")
    for path in [site / "minitorch", *(site / "minitorch").iterdir()]:
        path.chmod(0o555 if path.is_dir() else 0o444)
    env = {
        "HOME": str(blocker / "home"),
        "XDG_CACHE_HOME": str(blocker / "xdg"),
        "PYTHONPATH": str(site),
        "NUMBA_CACHE_DIR": None,
    }
    try:
        result, err = run_workload(blocker / "cache", env, cwd=site)
    finally:
        for path in [site / "minitorch", *(site / "minitorch").iterdir()]:
            path.chmod(0o755 if path.is_dir() else 0o644)
    assert result["package"].startswith(str(site))
    assert result["hits"] == 0
    assert err.count("KernelCacheWarning:") == 1, err
    assert str(blocker / "cache") in err and "in memory" in err


def test_no_kernel_uses_numbas_own_disk_cache() -> None:
    # numba's cache=True needs a writable package dir or HOME (else import fails): every
    # cached kernel must come from minitorch.kernel_cache.njit.
    from numba.core.caching import FunctionCache
    from numba.core.registry import CPUDispatcher

    import minitorch.fast_conv
    import minitorch.fast_ops
    import minitorch.fast_pool

    modules = (minitorch.fast_ops, minitorch.fast_conv, minitorch.fast_pool, minitorch.fast_math)
    offenders = [
        f"{module.__name__}.{name}"
        for module in modules
        for name, obj in vars(module).items()
        if isinstance(obj, CPUDispatcher) and isinstance(obj._cache, FunctionCache)
    ]
    assert offenders == []
    assert isinstance(minitorch.fast_conv.tensor_conv1d._cache, kernel_cache._DiskCache)


@pytest.mark.kernels
def test_unwritable_cache_warns_once_per_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    monkeypatch.setenv("MINITORCH_CACHE_DIR", str(blocker / "cache"))
    fast = minitorch.TensorBackend(minitorch.FastOps)
    t = minitorch.tensor_from_numpy(np.array([1.0, 2.0]), backend=fast)
    with pytest.warns(KernelCacheWarning) as record:
        minitorch.unary_op(lambda v: v * 11.0 + 0.125)(t)
        minitorch.unary_op(lambda v: v * 13.0 + 0.125)(t)
    assert len([w for w in record if issubclass(w.category, KernelCacheWarning)]) == 1


# Item 11: checkpoint headers are checked before any data is read -----------------------------


def npy_bytes(header: dict[str, Any], data: bytes = b"") -> bytes:
    """A ``.npy`` member with any header (true or not) and the given data bytes."""
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, header)
    return buffer.getvalue() + data


def array_npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, array, allow_pickle=True)
    return buffer.getvalue()


def write_npz(
    path: Path, members: list[tuple[str, bytes]], compression: int = zipfile.ZIP_STORED
) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about duplicate names
        with zipfile.ZipFile(path, "w", compression) as archive:
            for name, data in members:
                archive.writestr(name, data)
    return path


def test_tiny_file_claiming_a_huge_array_is_refused_before_allocating(tmp_path: Path) -> None:
    header = {"descr": "<f8", "fortran_order": False, "shape": (10**11,)}
    path = write_npz(tmp_path / "bomb.npz", [("w.npy", npy_bytes(header, bytes(64)))])
    assert path.stat().st_size < 400
    with pytest.raises(CheckpointError, match=r"bomb\.npz.*'w'.*claims shape \(100000000000,\)"):
        load(path)


def test_member_claiming_more_bytes_than_the_file_has_is_refused(tmp_path: Path) -> None:
    # Sizes come from the zip's central directory: a lie there must not become a 4 GB read.
    count = 500_000_000
    header = npy_bytes({"descr": "<f8", "fortran_order": False, "shape": (count,)})
    path = write_npz(tmp_path / "liar.npz", [("w.npy", header + bytes(64))])
    data = bytearray(path.read_bytes())
    central = data.index(b"PK\x01\x02")
    claimed = len(header) + 8 * count
    data[central + 20 : central + 28] = struct.pack("<II", claimed, claimed)
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=f"'w' claims {claimed} stored bytes, but the file"):
        load(path)


@pytest.mark.parametrize(
    "header, data, message",
    [
        ({"descr": "<f8", "fortran_order": False, "shape": (3,)}, bytes(32), "claims shape"),
        ({"descr": "<f8", "fortran_order": False, "shape": (5,)}, bytes(32), "claims shape"),
        ({"descr": "<f8", "fortran_order": False, "shape": (-1, 4)}, bytes(32), "non-negative"),
        ({"descr": "<f8", "fortran_order": False, "shape": (1,) * 40}, bytes(8), "at most 32"),
    ],
    ids=["data-longer", "data-shorter", "negative-dim", "too-many-dims"],
)
def test_headers_that_disagree_with_the_data_are_refused(
    tmp_path: Path, header: dict[str, Any], data: bytes, message: str
) -> None:
    path = write_npz(tmp_path / "bad.npz", [("w.npy", npy_bytes(header, data))])
    with pytest.raises(CheckpointError, match=message):
        load(path)


@pytest.mark.parametrize(
    "array",
    [
        np.array([1.0, "x"], dtype=object),
        np.array([1 + 2j, 3j]),
        np.array(["ab", "cd"]),
        np.zeros(2, dtype=[("a", "<f8"), ("b", "<i4")]),
        np.zeros(2, dtype=np.longdouble) if np.dtype(np.longdouble).itemsize > 8 else None,
        np.array(["2020-01-01"], dtype="datetime64[D]"),
        np.zeros(2, dtype="V8"),
    ],
    ids=["object", "complex", "string", "structured", "longdouble", "datetime", "void"],
)
def test_non_numeric_dtypes_are_refused(tmp_path: Path, array: np.ndarray | None) -> None:
    if array is None:
        pytest.skip("long double is float64 here")
    path = write_npz(tmp_path / "odd.npz", [("w.npy", array_npy(array))])
    with pytest.raises(CheckpointError, match=r"'w' has dtype .*only bool, integer and float"):
        load(path)


@pytest.mark.parametrize(
    "array",
    [
        np.arange(6.0).reshape(2, 3).astype(">f8"),
        np.asfortranarray(np.arange(6.0).reshape(2, 3)),
        np.arange(6, dtype=np.int32).reshape(3, 2),
        np.array([True, False]),
        np.arange(4, dtype=np.float16),
        np.zeros((0, 3), dtype=np.float32),
    ],
    ids=["big-endian", "fortran", "int32", "bool", "float16", "empty"],
)
def test_plain_numeric_arrays_load_exactly_and_into_modules(
    tmp_path: Path, array: np.ndarray
) -> None:
    path = write_npz(tmp_path / "ok.npz", [("w.npy", array_npy(array))])
    loaded = load(path)["w"]
    assert loaded.dtype == array.dtype and loaded.flags.writeable
    np.testing.assert_array_equal(loaded, array)

    class Holder(Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = Parameter(minitorch.zeros(array.shape))

    holder = Holder()
    holder.load_state_dict(load(path))
    np.testing.assert_array_equal(holder.w.value.to_numpy(), array.astype(np.float64))


def test_compressed_archives_load(tmp_path: Path) -> None:
    path = tmp_path / "small.npz"
    np.savez_compressed(path, w=np.zeros((100, 100)), b=np.arange(3.0))
    loaded = load(path)
    assert list(loaded) == ["w", "b"] and loaded["w"].shape == (100, 100)


def test_duplicate_and_foreign_members_are_refused(tmp_path: Path) -> None:
    one, two = array_npy(np.zeros(2)), array_npy(np.ones(2))
    path = write_npz(tmp_path / "dup.npz", [("w.npy", one), ("w.npy", two)])
    with pytest.raises(CheckpointError, match="two arrays named 'w'"):
        load(path)
    path = write_npz(tmp_path / "extra.npz", [("w.npy", one), ("notes.txt", b"hello")])
    with pytest.raises(CheckpointError, match="'notes.txt' is not a .npy array"):
        load(path)


def test_nan_and_inf_are_refused_unless_allowed(tmp_path: Path) -> None:
    path = tmp_path / "diverged.npz"
    save({"ok": np.ones(2), "w": np.array([1.0, np.nan]), "b": np.array([np.inf])}, path)
    with pytest.raises(CheckpointError, match=r"NaN or infinite values in w, b.*allow_nonfinite"):
        load(path)
    loaded = load(path, allow_nonfinite=True)
    assert np.isnan(loaded["w"][1]) and np.isinf(loaded["b"][0])


def test_directories_are_not_checkpoints(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="is a directory, not a checkpoint file"):
        load(tmp_path)


@pytest.mark.parametrize(
    "value, message",
    [
        (np.array([1 + 1j]), "dtype complex128"),
        ("1.5", "dtype <U3"),
        ([[1.0, 2.0], [3.0]], "list"),
        (object(), "dtype object"),
        (np.array([2**60]), "beyond 2\\*\\*53"),
    ],
    ids=["complex", "string", "ragged", "object", "huge-int"],
)
def test_save_refuses_values_that_are_not_exact_numbers(
    tmp_path: Path, value: Any, message: str
) -> None:
    with pytest.raises(TypeError, match=f"w: cannot store.*{message}|w: integers {message}"):
        save({"w": value}, tmp_path / "x.npz")
    assert list(tmp_path.iterdir()) == []


def test_save_and_load_state_dict_need_a_module_or_mapping(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="a Module or a mapping.*got a list"):
        save([np.ones(2)], tmp_path / "x.npz")
    with pytest.raises(TypeError, match="maps parameter names to arrays; got a list"):
        minitorch.checkpoint.load_state_dict(Module(), [np.ones(2)])  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []


def test_save_keeps_names_numpy_would_swallow(tmp_path: Path) -> None:
    state = {"file": np.ones(1), "allow_pickle": np.zeros(1), "a/b": np.arange(2.0)}
    save(state, tmp_path / "x.npz")
    loaded = load(tmp_path / "x.npz")
    assert list(loaded) == list(state)
    for name, array in state.items():
        np.testing.assert_array_equal(loaded[name], array)


# Item 12: where save writes ------------------------------------------------------------------


def test_save_through_a_symlink_keeps_the_link(tmp_path: Path) -> None:
    real_dir = tmp_path / "real"
    real_dir.mkdir()
    target = real_dir / "net.npz"
    save({"w": np.zeros(2)}, target)
    target.chmod(0o600)
    link = tmp_path / "link.npz"
    link.symlink_to(os.path.relpath(target, tmp_path))
    chain = tmp_path / "chain.npz"
    chain.symlink_to(link)
    save({"w": np.ones(2)}, chain)
    assert chain.is_symlink() and link.is_symlink()
    np.testing.assert_array_equal(load(target)["w"], np.ones(2))
    assert target.stat().st_mode & 0o777 == 0o600  # the file keeps its permissions
    assert sorted(p.name for p in real_dir.iterdir()) == ["net.npz"]


def test_save_through_a_dangling_symlink_creates_its_target(tmp_path: Path) -> None:
    link = tmp_path / "link.npz"
    link.symlink_to(tmp_path / "new.npz")
    save({"w": np.ones(3)}, link)
    assert link.is_symlink()
    np.testing.assert_array_equal(load(tmp_path / "new.npz")["w"], np.ones(3))


SPECIAL_FILES = textwrap.dedent(
    """
    import json
    import os
    import stat
    import sys

    import numpy as np

    from minitorch.checkpoint import CheckpointError, load, save

    root = sys.argv[1]
    fifo = os.path.join(root, "fifo")
    os.mkfifo(fifo)
    link = os.path.join(root, "link")
    os.symlink(fifo, link)
    targets = {"fifo": fifo, "link to fifo": link, "directory": os.path.join(root, "dir")}
    os.mkdir(targets["directory"])
    try:
        node = os.path.join(root, "null")
        os.mknod(node, 0o600 | stat.S_IFCHR, os.makedev(1, 3))
        targets["character device"] = node
    except OSError:
        pass
    report = {}
    for name, path in targets.items():
        before = os.lstat(path)
        outcome = []
        for action in (lambda: save({"w": np.ones(2)}, path), lambda: load(path)):
            try:
                action()
                outcome.append("no error")
            except CheckpointError as e:
                outcome.append(str(e))
        after = os.lstat(path)
        report[name] = {"errors": outcome, "unchanged": (before.st_mode, before.st_ino)
                        == (after.st_mode, after.st_ino)}
    report["left over"] = sorted(os.listdir(root))
    print(json.dumps(report))
    """
)


def test_save_and_load_refuse_special_files_without_touching_them(tmp_path: Path) -> None:
    result = last_json(run_python(["-c", SPECIAL_FILES, str(tmp_path)], {}, timeout=60))
    left_over = result.pop("left over")
    assert left_over == sorted(["fifo", "link", "dir"] + (["null"] if "character device"
                                                           in result else []))  # fmt: skip
    for name, outcome in result.items():
        assert outcome["unchanged"], name
        save_error, load_error = outcome["errors"]
        kind = "FIFO" if "fifo" in name else name
        assert f"it is a {kind}; checkpoints are written only to regular files" in save_error
        assert f"is a {kind}, not a checkpoint file" in load_error


def test_save_to_a_directory_name_or_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="a file name is needed"):
        save({"w": np.ones(1)}, str(tmp_path) + "/")
    with pytest.raises(FileNotFoundError, match="directory .*nowhere.* does not exist"):
        save({"w": np.ones(1)}, tmp_path / "nowhere" / "x.npz")
    assert list(tmp_path.iterdir()) == []


KILLED_SAVE = textwrap.dedent(
    """
    import sys
    import time

    import numpy as np

    from minitorch import checkpoint

    real_write = np.lib.format.write_array


    def slow_write(member, array, **kwargs):
        real_write(member, array, **kwargs)
        member.flush()
        print("writing", flush=True)
        time.sleep(60)


    np.lib.format.write_array = slow_write
    checkpoint.save({"w": np.ones(1000)}, sys.argv[1])
    """
)


def test_next_save_removes_the_temporary_file_of_a_killed_save(tmp_path: Path) -> None:
    path = tmp_path / "net.npz"
    save({"w": np.zeros(2)}, path)
    full = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", KILLED_SAVE, str(path)], env=full,
                            stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "writing"
    finally:
        proc.kill()
        proc.wait(timeout=30)
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert len(leftovers) == 1 and f".{proc.pid}." in leftovers[0]
    # A save in progress in a live process is left alone.
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    in_flight = tmp_path / f".net.npz.{live.pid}.0123456789abcdef.tmp"
    in_flight.write_bytes(b"partial")
    try:
        save({"w": np.ones(2)}, path)
    finally:
        live.kill()
        live.wait(timeout=30)
    assert sorted(p.name for p in tmp_path.iterdir()) == [in_flight.name, "net.npz"]
    np.testing.assert_array_equal(load(path)["w"], np.ones(2))


# Item 13: Ctrl-C ends every command with one line and exit code 130 ------------------------


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def interrupt(
    args: list[str], marker: str, delay: float, env: dict[str, str], timeout: float = 300
) -> tuple[int, str, str]:
    """Run ``python *args``, send SIGINT ``delay`` seconds after ``marker`` is printed
    (on stdout or stderr); return the exit code and both outputs."""
    full = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1", **env}
    # A shell without job control starts background jobs with SIGINT ignored.
    inherited_ignore = signal.getsignal(signal.SIGINT) == signal.SIG_IGN
    proc = subprocess.Popen(
        [sys.executable, *args], env=full, cwd=ROOT, text=True, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, preexec_fn=_default_sigint if inherited_ignore else None,
    )  # fmt: skip
    seen = threading.Event()
    captured: dict[str, list[str]] = {"out": [], "err": []}

    def drain(stream: Any, lines: list[str]) -> None:
        for line in stream:
            lines.append(line)
            if marker in line:
                seen.set()

    readers = [
        threading.Thread(target=drain, args=(proc.stdout, captured["out"]), daemon=True),
        threading.Thread(target=drain, args=(proc.stderr, captured["err"]), daemon=True),
    ]
    for reader in readers:
        reader.start()
    try:
        assert seen.wait(timeout), f"never printed {marker!r}: {captured}"
        time.sleep(delay)
        assert proc.poll() is None, f"finished before the interrupt: {captured}"
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    for reader in readers:
        reader.join(timeout=30)
    return code, "".join(captured["out"]), "".join(captured["err"])


TRAIN = ["-m", "minitorch", "train", "--backend", "fast", "--points", "200", "--batch", "5"]


def test_ctrl_c_while_compiling_and_training_then_the_cache_still_works(tmp_path: Path) -> None:
    env = {"MINITORCH_CACHE_DIR": str(tmp_path / "cache")}
    # An empty cache: the first epoch is compiling kernels a moment after this line.
    code, out, err = interrupt([*TRAIN, "--epochs", "100000"], "Training on", 1.0, env)
    assert (code, err) == (130, "interrupted\n"), (out, err)
    assert "epoch 1/" not in out
    # Training (the simple backend: the loop is the same, and nothing needs compiling).
    simple = [*TRAIN, "--backend", "simple", "--epochs", "100000"]
    code, out, err = interrupt(simple, "epoch      1/", 1.0, env)
    assert (code, err) == (130, "interrupted\n"), (out, err)
    # The cache the interrupted compile wrote to serves the next run without complaint.
    proc = run_python([*TRAIN, "--epochs", "2", "--points", "20", "--hidden", "3"], env)
    assert proc.returncode == 0 and "Done: accuracy" in proc.stdout, proc.stderr
    assert "Warning" not in proc.stderr, proc.stderr


def test_ctrl_c_in_diagnostics_and_bench(tmp_path: Path) -> None:
    env = {"MINITORCH_CACHE_DIR": str(tmp_path / "cache")}
    code, out, err = interrupt(["-m", "minitorch", "diagnostics"], "=" * 80, 0.5, env)
    assert (code, err) == (130, "interrupted\n"), (out, err)
    bench = ["-m", "minitorch", "bench", "--quick", "--no-startup"]
    code, out, err = interrupt([*bench, "--output", str(tmp_path / "b.md")], "[1/6]", 1.0, env)
    assert code == 130 and err.splitlines()[-1] == "interrupted", (out, err)
    assert "Traceback" not in err and len(err.splitlines()) <= 4, err
    assert not (tmp_path / "b.md").exists()


def test_ctrl_c_in_the_digits_example(tmp_path: Path) -> None:
    pytest.importorskip("sklearn")
    env = {"MINITORCH_CACHE_DIR": str(tmp_path / "cache")}
    args = [str(ROOT / "examples" / "digits_cnn.py"), "--epochs", "50", "--subset", "200"]
    code, out, err = interrupt(args, "digits:", 1.0, env)
    assert (code, err) == (130, "interrupted\n"), (out, err)


# Item 14: command-line options are checked before any work ---------------------------------


@pytest.mark.parametrize(
    "option, value, message",
    [
        ("--lr", "nan", "finite number greater than 0"),
        ("--lr", "inf", "finite number greater than 0"),
        ("--lr", "-0.5", "finite number greater than 0"),
        ("--lr", "0", "finite number greater than 0"),
        ("--lr", "fast", "expected a number"),
        ("--epochs", "0", "from 1 to"),
        ("--epochs", "1.5", "expected a whole number"),
        ("--batch", "-3", "from 1 to"),
        ("--hidden", "1000000000", "from 1 to 4096"),
        ("--points", "0", "from 1 to"),
        ("--points", "10000000000", "from 1 to"),
    ],
)
def test_train_rejects_bad_numbers_like_argparse(
    option: str, value: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["train", f"{option}={value}"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {option}: " in err and message in err, err


@pytest.fixture
def no_training(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(train, "run_epochs", None)  # checks must come before any training


@pytest.mark.usefixtures("no_training")
def test_unwritable_plot_path_fails_before_training(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    (tmp_path / "dir.png").mkdir()
    for path, message in [
        (blocker / "sub" / "x.png", "is not a directory"),
        (tmp_path / "plot.jpg", "name it *.png"),
        ("", "an empty path"),
    ]:
        with pytest.raises(SystemExit) as exit_info:
            cli_main(["train", "--plot", str(path)])
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        assert "argument --plot: " in err and message in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dir.png", "file"]


@pytest.mark.parametrize(
    "given, written",
    [("plots/", "plots/simple.png"), ("existing", "existing/simple.png"), ("run", "run.png")],
)
def test_plot_path_resolution(given: str, written: str, tmp_path: Path) -> None:
    (tmp_path / "existing").mkdir()
    argv = ["train", "--dataset", "simple", "--plot", f"{tmp_path}/{given}"]
    args = build_parser().parse_args(argv)
    args.check(args)
    assert args.plot == str(tmp_path / written)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["existing"]  # nothing created yet


@pytest.mark.kernels
def test_plot_into_a_directory_writes_a_named_png(tmp_path: Path) -> None:
    argv = ["train", "--dataset", "simple", "--hidden", "3", "--epochs", "1", "--points", "8"]
    assert cli_main([*argv, "--plot", f"{tmp_path}/plots/"]) == 0
    assert (tmp_path / "plots" / "simple.png").read_bytes().startswith(b"\x89PNG")


@pytest.mark.usefixtures("no_training")
def test_bench_output_is_checked_before_running(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["bench", "--output", str(blocker / "report.md")])
    assert exit_info.value.code == 2 and "argument --output: " in capsys.readouterr().err
    args = build_parser().parse_args(["bench", "--output", f"{tmp_path}/"])
    args.check(args)
    assert args.output == f"{tmp_path}/benchmarks.md"


def test_digits_example_rejects_bad_numbers(capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("sklearn")
    path = ROOT / "examples" / "digits_cnn.py"
    spec = importlib.util.spec_from_file_location("digits_cnn_hostile", path)
    assert spec is not None and spec.loader is not None
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    for argv in (["--lr", "nan"], ["--batch", "0"], ["--subset", "3"], ["--epochs", "-1"]):
        with pytest.raises(SystemExit) as exit_info:
            example.main(argv)
        assert exit_info.value.code == 2
        assert f"argument {argv[0]}: " in capsys.readouterr().err

