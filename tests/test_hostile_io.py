"""Hostile inputs to the parts that touch the outside world: the kernel cache, checkpoints,
the command line.

Each case either gets the right answer or a clear exception, never a crash, a hang, a
stale kernel or a traceback dump. Anything that compiles in a fresh cache, could hang or
needs its own environment runs in a subprocess with a timeout.
"""

from __future__ import annotations

import enum
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numba
import numpy as np
import pytest

import minitorch
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
    "__init__.py": "import os\n\nfrom . import inner\n\nK = float(os.environ['STALE_K'])\n",
    "inner.py": "import os\n\nK = float(os.environ['STALE_K'])\n",
}

STALE_SCRIPT = textwrap.dedent(
    """
    import enum
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
    NESTED = (1.0, ((K,),))
    SCALAR = np.float32(K)
    MODE = "double" if K == 2.0 else "other"


    class Scale(enum.Enum):
        FACTOR = K


    def helper(v):
        return v * TUP[0]


    jit_helper = numba.njit(lambda v: v * ARR[0])


    def make_closure():
        weights = (K, 0.0)

        def by_closure(v):
            return v * weights[0] + weights[1]

        return by_closure


    FUNCS = {
        "tuple": lambda v: v * TUP[0],
        "array": lambda v: v * ARR[0],
        "nested tuple": lambda v: v * NESTED[1][0][0],
        "numpy scalar": lambda v: v * SCALAR,
        "string": lambda v: v * 2.0 if MODE == "double" else v * 5.0,
        "enum": lambda v: v * Scale.FACTOR.value,
        "module attribute": lambda v: v * stale_config.K,
        "nested module attribute": lambda v: v * stale_config.inner.K,
        "helper's global": lambda v: helper(v),
        "njit helper's global": lambda v: jit_helper(v),
        "closure": make_closure(),
        "default": lambda v, c=(K,): v * c[0],
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
    import json
    import sys

    import numpy as np
    from numba.core.registry import CPUDispatcher

    import minitorch
    from minitorch import fast_conv, fast_ops


    def dispatchers():
        for name, module in list(sys.modules.items()):
            if name.startswith(("minitorch", "_minitorch_")):
                for obj in list(vars(module).values()):
                    if isinstance(obj, CPUDispatcher):
                        yield obj


    def bump(x):
        return 3.0 * x + 0.5


    fast = minitorch.TensorBackend(minitorch.FastOps)
    compiled_early = [d.py_func.__qualname__ for d in dispatchers() if d.signatures]
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((3, 4)), rng.standard_normal((4, 5))
    x, w = rng.standard_normal((2, 3, 6)), rng.standard_normal((4, 3, 2))


    def t(array):
        return minitorch.tensor_from_numpy(array, backend=fast)


    padded = np.concatenate([x, np.zeros((2, 3, 1))], axis=2)
    conv = np.einsum("ock,bcjk->boj", w,
                     np.stack([padded[:, :, k : k + 6] for k in range(2)], axis=-1))
    checks = [
        (minitorch.unary_op(bump)(t(a)).to_numpy(), 3.0 * a + 0.5),
        (t(a).sum(1).to_numpy(), a.sum(1, keepdims=True)),
        ((t(a) @ t(b)).to_numpy(), a @ b),
        (minitorch.conv1d(t(x), t(w)).to_numpy(), conv),
    ]
    ok = all(np.allclose(got, want, rtol=1e-12, atol=1e-12) for got, want in checks)
    stats = [d.stats for d in dispatchers()]
    print(json.dumps({
        "ok": ok,
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
    assert first["misses"] >= 4 and "KernelCacheWarning" not in err
    entries = sorted((cache / "kernels").glob("*.nbk"))
    assert len(entries) >= 4
    # Every kind of damage: truncation, zero length, flipped bytes, a stranger's file.
    for i, entry in enumerate(entries):
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

    second, err = run_workload(cache)
    assert err.count("KernelCacheWarning:") == 1, err
    assert str(cache / "kernels") in err and "damaged" in err
    assert second["misses"] >= len(entries)

    third, err = run_workload(cache)  # repaired: loads everything, says nothing
    assert "KernelCacheWarning" not in err, err
    assert third["misses"] == 0 and third["hits"] >= len(entries)


def test_processes_sharing_a_fresh_cache_all_work(tmp_path: Path) -> None:
    cache = tmp_path / "shared"
    full = {**os.environ, "PYTHONPATH": str(ROOT), **cache_env(cache)}
    procs = [
        subprocess.Popen([sys.executable, "-c", WORKLOAD], env=full, cwd=ROOT, text=True,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for _ in range(3)
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
