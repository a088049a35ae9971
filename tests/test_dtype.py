"""The dtype API (float32 and float64) on every backend, against NumPy in the same dtype.

The oracle computes in the tensor's dtype (NumPy float32 arithmetic for float32
tensors); float32 results are compared with float32 tolerances: relative 1e-5
elementwise, and for sums and products a bound that grows with the terms'
magnitudes. Gradients of float32 code are compared with central differences
taken in float64.
"""

from __future__ import annotations

import ast
import math
import pathlib
import subprocess
import sys
from typing import Any

import numpy as np
import pytest
from conftest import make_backend
from hypothesis import strategies as st
from strategies import (
    limits,
    run_property,
    small_floats,
    tensor_array_pairs,
    tensor_arrays,
)

import minitorch
from minitorch import Tensor, TensorBackend
from minitorch.layers import Conv1d, Conv2d, Linear

F32, F64 = minitorch.float32, minitorch.float64


def float64_covered_elsewhere(backend: TensorBackend, dtype: np.dtype) -> None:
    """Skip float64 on the CUDA simulator (slow), where the rest of the suite covers it."""
    if backend.cuda and dtype == F64:
        pytest.skip("float64 CudaOps is tested by the backend tests; here float32 only")


def eps(dtype: np.dtype) -> float:
    return float(np.finfo(dtype).eps)


def assert_dtype_close(actual: Tensor, expected: np.ndarray, scale: np.ndarray | float = 1.0,
                       ulps: float = 8.0) -> None:  # fmt: skip
    """Same dtype and shape; values within ``ulps`` units of ``scale`` (the size of the
    terms that made each value) in the tensor's dtype."""
    assert actual.dtype == expected.dtype, f"dtype {actual.dtype} != {expected.dtype}"
    values = actual.to_numpy()
    assert values.dtype == actual.dtype
    assert values.shape == expected.shape
    tol = ulps * eps(actual.dtype) * (np.abs(expected) + np.abs(scale)) + 1e-30
    bad = ~(np.abs(values - expected) <= tol) & ~(np.isnan(values) & np.isnan(expected))
    assert not bad.any(), f"{values[bad]} != {expected[bad]}"


# The dtype objects and arguments ----------------------------------------------------


def test_dtypes_are_numpy_dtypes() -> None:
    assert minitorch.float32 == np.float32 and minitorch.float64 == np.float64
    assert minitorch.get_default_dtype() == minitorch.float64
    for spelling in (np.float32, "float32", np.dtype("float32"), minitorch.float32):
        assert minitorch.zeros((2,), dtype=spelling).dtype == np.float32
    for wrong in (float, "float16", np.int64, "f", 32, object()):
        with pytest.raises(TypeError, match="float32 or minitorch.float64"):
            minitorch.zeros((2,), dtype=wrong)


FACTORIES = {
    "tensor": lambda be, dt: minitorch.tensor([[1.0, 2.0]], backend=be, dtype=dt),
    "zeros": lambda be, dt: minitorch.zeros((2, 3), backend=be, dtype=dt),
    "ones": lambda be, dt: minitorch.ones((2, 3), backend=be, dtype=dt),
    "full": lambda be, dt: minitorch.full((2,), 0.1, backend=be, dtype=dt),
    "rand": lambda be, dt: minitorch.rand((4,), backend=be, dtype=dt),
    "randn": lambda be, dt: minitorch.randn((4,), backend=be, dtype=dt),
    "arange": lambda be, dt: minitorch.arange(5, backend=be, dtype=dt),
    "eye": lambda be, dt: minitorch.eye(3, backend=be, dtype=dt),
    "from_numpy": lambda be, dt: minitorch.tensor_from_numpy(np.ones(3), backend=be, dtype=dt),
    "zeros_like": lambda be, dt: minitorch.zeros_like(minitorch.ones((2,), be, dtype=dt)),
    "ones_like": lambda be, dt: minitorch.ones_like(minitorch.zeros((2,), be), dtype=dt),
}


@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_every_factory_takes_dtype(backend: TensorBackend, dtype: np.dtype, name: str) -> None:
    t = FACTORIES[name](backend, dtype)
    assert t.dtype == dtype
    assert t.to_numpy().dtype == dtype
    assert (t + 1.0).dtype == dtype


def test_default_dtype_is_used_and_restored() -> None:
    try:
        minitorch.set_default_dtype("float32")
        assert minitorch.get_default_dtype() == np.float32
        assert minitorch.tensor([1.0, 2.0]).dtype == np.float32
        assert minitorch.rand((3,)).dtype == np.float32
        assert minitorch.tensor_from_numpy(np.arange(3)).dtype == np.float32  # ints: default
        assert minitorch.tensor_from_numpy(np.ones(3)).dtype == np.float64  # float64 kept
        assert Linear(2, 3).weight.value.dtype == np.float32
        with pytest.raises(TypeError):
            minitorch.set_default_dtype(np.int32)
    finally:
        minitorch.set_default_dtype(minitorch.float64)
    assert minitorch.tensor([1.0]).dtype == np.float64


def test_from_numpy_keeps_float32_and_float64() -> None:
    assert minitorch.tensor_from_numpy(np.ones((2, 2), np.float32)).dtype == np.float32
    assert minitorch.tensor(np.ones(2, np.float32)).dtype == np.float32
    assert minitorch.tensor_from_numpy(np.ones(2, np.float16)).dtype == np.float64
    assert minitorch.tensor_from_numpy(np.ones(2, bool)).dtype == np.float64
    assert minitorch.tensor([1, 2]).dtype == np.float64  # sequences: the default dtype
    # A float64 array asked for in float32 is rounded, not reinterpreted.
    t = minitorch.tensor_from_numpy(np.array([0.1]), dtype="float32")
    assert t.to_numpy()[0] == np.float32(0.1)


def test_rand_float32_stays_below_one() -> None:
    minitorch.manual_seed(3)
    values = minitorch.rand((20000,), dtype=F32).to_numpy()
    assert values.dtype == np.float32 and values.min() >= 0.0 and values.max() < 1.0


# Promotion -------------------------------------------------------------------------


def test_promotion_follows_pytorch(backend: TensorBackend) -> None:
    x32 = minitorch.tensor([1.0, 2.0, 3.0], backend=backend, dtype=F32)
    x64 = minitorch.tensor([0.5, 0.25, 2.0], backend=backend)
    for y in (x32 * 0.5, 0.5 * x32, x32 - 1.0, 1.0 - x32, x32 / 3, 2 / x32, x32**2, -x32):
        assert y.dtype == np.float32
    assert (x32.sum() / 7).dtype == np.float32
    for y in (x32 + x64, x64 * x32, x32.view(1, 3) @ x64.view(3, 1), x64 - x32, x32 < x64):
        assert y.dtype == np.float64
    for cmp in (x32 < 2.0, x32 == 1, x32 >= 1.0, x32 != 3.0):
        assert cmp.dtype == np.float32
    np.testing.assert_array_equal((x32 < 2.0).to_numpy(), [1.0, 0.0, 0.0])
    assert minitorch.where(x32 > 1.5, x32, 0.0).dtype == np.float32
    assert minitorch.where(x64 > 1.0, x32, x32).dtype == np.float32
    assert minitorch.maximum(x32, x64).dtype == np.float64
    assert minitorch.cat([x32, x64]).dtype == np.float64
    assert minitorch.stack([x32, x32]).dtype == np.float32
    assert x32.argmax().dtype == np.float32 and x32.max().dtype == np.float32


def test_mixed_gradients_come_back_in_each_dtype(backend: TensorBackend) -> None:
    a = minitorch.tensor([[1.0, -2.0], [0.5, 3.0]], backend=backend, dtype=F32, requires_grad=True)
    b = minitorch.tensor([2.0, 4.0], backend=backend, requires_grad=True)
    out = (a * b).sigmoid().sum()
    assert out.dtype == np.float64
    out.backward()
    assert a.grad is not None and b.grad is not None
    assert a.grad.dtype == np.float32 and b.grad.dtype == np.float64
    av, bv = a.to_numpy().astype(np.float64), b.to_numpy()
    s = 1 / (1 + np.exp(-av * bv))
    np.testing.assert_allclose(a.grad.to_numpy(), s * (1 - s) * bv, rtol=1e-6)
    np.testing.assert_allclose(b.grad.to_numpy(), (s * (1 - s) * av).sum(0), rtol=1e-12)


def test_casts_are_differentiable(backend: TensorBackend) -> None:
    x = minitorch.tensor([0.1, 0.2, 0.3], backend=backend, requires_grad=True)
    assert x.to(F64) is x and x.double() is x
    y = x.float()
    assert y.dtype == np.float32 and y.to_numpy().tolist() == np.float32([0.1, 0.2, 0.3]).tolist()
    z = (y * y).double().sum()
    z.backward()
    assert x.grad is not None and x.grad.dtype == np.float64
    np.testing.assert_allclose(x.grad.to_numpy(), 2 * np.float32([0.1, 0.2, 0.3]), rtol=1e-7)
    # A strided view casts by its values, not its storage order.
    m = minitorch.tensor([[1.0, 2.0], [3.0, 4.0]], backend=backend).permute(1, 0)
    np.testing.assert_array_equal(m.to("float32").to_numpy(), [[1, 3], [2, 4]])
    with pytest.raises(TypeError, match="dtype"):
        x.to("int8")


def test_setitem_and_backward_take_the_tensor_dtype(backend: TensorBackend) -> None:
    t = minitorch.zeros((2, 3), backend=backend, dtype=F32)
    t[0] = minitorch.tensor([1.0, 2.0, 3.0], backend=backend)  # float64 value, cast on write
    t[1, 2] = 0.5
    assert t.dtype == np.float32
    np.testing.assert_array_equal(t.to_numpy(), [[1, 2, 3], [0, 0, 0.5]])
    x = minitorch.tensor([1.0, 2.0], backend=backend, dtype=F32, requires_grad=True)
    (x * x).backward(minitorch.tensor([1.0, 1.0], backend=backend))
    assert x.grad is not None and x.grad.dtype == np.float32


# One map(out=) and cmap rule on every backend -----------------------------------------


def test_map_out_and_cmap_one_behaviour(backend: TensorBackend) -> None:
    a = minitorch.tensor([1.0, -2.0], backend=backend)
    out = minitorch.zeros((3, 2), backend=backend)
    for op in (backend.neg_map, backend.id_cmap):
        assert op(a, out) is out
        np.testing.assert_array_equal(out.to_numpy()[2], [-1.0, 2.0] if op is backend.neg_map
                                      else [1.0, -2.0])  # fmt: skip
        with pytest.raises(minitorch.IndexingError, match="into output shape"):
            op(out, a)  # the output is never resized
        with pytest.raises(minitorch.IndexingError, match="into output shape"):
            op(a, minitorch.zeros((3,), backend=backend))
        with pytest.raises(TypeError, match="one dtype"):
            op(a, minitorch.zeros((2,), backend=backend, dtype=F32))


CAST = np.array([0.1, 1e30])


def test_backend_storage_methods(backend: TensorBackend, dtype: np.dtype) -> None:
    """Allocation, placement, casts and NumPy conversion are the backend's, alike on all."""
    for storage, expected in (
        (backend.zeros(3, dtype), [0, 0, 0]),
        (backend.full(2, 0.1, dtype), [dtype.type(0.1)] * 2),
        (backend.full(1, 2.5, dtype), [2.5]),
        (backend.from_numpy(np.arange(3, dtype=dtype)), [0, 1, 2]),
        (backend.cast(backend.from_numpy(np.array([0.1, 1e30])), dtype), CAST.astype(dtype)),
        (backend.adopt(np.ones(2, dtype)), [1, 1]),
    ):  # fmt: skip
        host = backend.to_numpy(storage)
        assert isinstance(host, np.ndarray) and host.dtype == dtype
        np.testing.assert_array_equal(host, expected)
    assert len(backend.empty(4, dtype)) == 4
    assert backend.to_numpy(backend.adopt(backend.zeros(2, dtype))).dtype == dtype


# Elementwise, reductions and matmul against NumPy in the same dtype ------------------

UNARY = {
    "neg": (lambda t: -t, np.negative),
    "relu": (lambda t: t.relu(), lambda x: np.maximum(x, 0)),
    "sigmoid": (lambda t: t.sigmoid(), lambda x: 0.5 * (1 + np.tanh(0.5 * x))),
    "exp": (lambda t: (t * 0.1).exp(), lambda x: np.exp(x * x.dtype.type(0.1))),
    "tanh": (lambda t: t.tanh(), np.tanh),
    "abs": (lambda t: t.abs(), np.abs),
    "square": (lambda t: t * t, np.square),
}


@pytest.mark.parametrize("name", sorted(UNARY))
def test_unary_ops_in_dtype(backend: TensorBackend, dtype: np.dtype, name: str) -> None:
    float64_covered_elsewhere(backend, dtype)
    op, oracle = UNARY[name]

    def check(data: tuple[Tensor, np.ndarray]) -> None:
        t, x = data
        assert_dtype_close(op(t), oracle(x).astype(dtype))

    run_property(backend, check, tensor_arrays(backend, dtype=dtype))


BINARY = {
    "add": (lambda a, b: a + b, np.add),
    "sub": (lambda a, b: a - b, np.subtract),
    "mul": (lambda a, b: a * b, np.multiply),
    "div": (lambda a, b: a / (b.abs() + 1.0), lambda x, y: x / (np.abs(y) + 1)),
    "lt": (lambda a, b: a < b, lambda x, y: (x < y).astype(x.dtype)),
    "eq": (lambda a, b: a == b, lambda x, y: (x == y).astype(x.dtype)),
    "maximum": (minitorch.maximum, np.maximum),
}


@pytest.mark.parametrize("name", sorted(BINARY))
def test_binary_ops_in_dtype(backend: TensorBackend, dtype: np.dtype, name: str) -> None:
    float64_covered_elsewhere(backend, dtype)
    op, oracle = BINARY[name]
    values = st.integers(-3, 3).map(float) if name in ("lt", "eq") else small_floats

    def check(data: tuple[Tensor, np.ndarray, Tensor, np.ndarray]) -> None:
        ta, a, tb, b = data
        assert_dtype_close(op(ta, tb), oracle(a, b).astype(dtype))

    run_property(backend, check, tensor_array_pairs(backend, values, dtype=dtype))


def test_reductions_in_dtype(backend: TensorBackend, dtype: np.dtype) -> None:
    float64_covered_elsewhere(backend, dtype)
    def check(data: tuple[Tensor, np.ndarray], dim_seed: int) -> None:
        t, x = data
        dim = dim_seed % t.dims
        terms = np.abs(x).sum(axis=dim, keepdims=True)
        assert_dtype_close(t.sum(dim), x.sum(axis=dim, keepdims=True), terms, ulps=4 * x.size)
        assert_dtype_close(t.max(dim), x.max(axis=dim, keepdims=True))
        assert_dtype_close(t.mean(), np.array([x.mean()], dtype), np.abs(x).mean(), 4 * x.size)

    run_property(backend, check, tensor_arrays(backend, dtype=dtype), st.integers(0, 3))


def test_matmul_in_dtype(backend: TensorBackend, dtype: np.dtype) -> None:
    float64_covered_elsewhere(backend, dtype)
    lim = limits(backend)
    dims = st.integers(1, lim.max_dim)

    def check(m: int, k: int, n: int, data: st.DataObject) -> None:
        ta, a = data.draw(tensor_arrays(backend, (m, k), dtype=dtype))
        tb, b = data.draw(tensor_arrays(backend, (k, n), dtype=dtype))
        scale = np.abs(a).astype(np.float64) @ np.abs(b).astype(np.float64)
        expected = (a.astype(np.float64) @ b.astype(np.float64)).astype(dtype)
        assert_dtype_close(ta @ tb, expected, scale, ulps=4 * k)

    run_property(backend, check, dims, dims, dims, st.data(), heavy=True)


def test_user_ops_compile_for_both_dtypes(backend: TensorBackend, dtype: np.dtype) -> None:
    float64_covered_elsewhere(backend, dtype)
    softplus = minitorch.unary_op(
        lambda x: math.log(1.0 + math.exp(x)), lambda x: 1.0 / (1.0 + math.exp(-x))
    )
    hypot = minitorch.binary_op(lambda x, y: math.sqrt(x * x + y * y))
    x = minitorch.tensor([-1.0, 0.0, 2.0], backend=backend, dtype=dtype, requires_grad=True)
    y = softplus(x)
    assert y.dtype == dtype and hypot(x, x).dtype == dtype
    v = np.array([-1.0, 0.0, 2.0], dtype)
    assert_dtype_close(y, np.log1p(np.exp(v)).astype(dtype))
    y.sum().backward()
    assert x.grad is not None and x.grad.dtype == dtype
    assert_dtype_close(x.grad, (1 / (1 + np.exp(-v))).astype(dtype))


# Gradients: float32 autodiff against float64 central differences -------------------


def _float64_central_difference(f, x: np.ndarray, h: float = 1e-6) -> np.ndarray:  # noqa: ANN001
    grad = np.zeros_like(x, dtype=np.float64)
    for i in np.ndindex(x.shape):
        up, down = x.astype(np.float64), x.astype(np.float64)
        up[i] += h
        down[i] -= h
        grad[i] = (f(up) - f(down)) / (2 * h)
    return grad


def test_float32_gradients_match_float64_differences(backend: TensorBackend) -> None:
    x = np.array([[0.3, -0.2, 0.9], [1.1, 0.4, -0.7]])
    t = minitorch.tensor_from_numpy(x, backend, dtype=F32).requires_grad_(True)
    w = minitorch.tensor_from_numpy(np.linspace(-1, 1, 12).reshape(3, 4), backend, dtype=F32)
    out = (((t @ w).relu() + 0.5).log().softmax(1) * minitorch.tensor(
        [[1.0, 2.0, 3.0, 4.0]], backend=backend, dtype=F32)).sum()  # fmt: skip
    out.backward()
    assert t.grad is not None and t.grad.dtype == np.float32

    def reference(v: np.ndarray) -> float:
        h = np.maximum(v @ np.linspace(-1, 1, 12).reshape(3, 4), 0) + 0.5
        z = np.log(h + 1e-6)
        s = np.exp(z - z.max(1, keepdims=True))
        s /= s.sum(1, keepdims=True)
        return float((s * np.array([1.0, 2.0, 3.0, 4.0])).sum())

    expected = _float64_central_difference(reference, x)
    np.testing.assert_allclose(t.grad.to_numpy(), expected, rtol=1e-3, atol=1e-4)


# Layers, Module.to, optimisers and checkpoints ---------------------------------------


def test_layers_take_dtype(backend: TensorBackend, dtype: np.dtype) -> None:
    float64_covered_elsewhere(backend, dtype)
    minitorch.manual_seed(0)
    layers = [
        (Linear(3, 2, backend, dtype=dtype), (4, 3)),
        (Conv1d(2, 3, 2, backend, dtype=dtype), (1, 2, 5)),
        (Conv2d(1, 2, 2, backend, dtype=dtype), (1, 1, 3, 3)),
    ]
    for layer, shape in layers:
        x = minitorch.rand(shape, backend=backend, dtype=dtype)
        out = layer(x)
        assert out.dtype == dtype
        out.sum().backward()
        for p in layer.parameters():
            assert p.value.dtype == dtype and p.value.grad is not None
            assert p.value.grad.dtype == dtype


def test_conv_float32_matches_float64(backend: TensorBackend) -> None:
    if backend.cuda:
        pytest.skip("tests/test_conv.py checks CUDA convolutions in both dtypes (simulator time)")
    rng = np.random.default_rng(1)
    x, w = rng.uniform(-1, 1, (2, 3, 5, 4)), rng.uniform(-1, 1, (2, 3, 2, 3))
    results = []
    for dtype in (F64, F32):
        tx = minitorch.tensor_from_numpy(x, backend, dtype=dtype).requires_grad_(True)
        tw = minitorch.tensor_from_numpy(w, backend, dtype=dtype).requires_grad_(True)
        out = minitorch.conv2d(tx, tw)
        out.sum().backward()
        assert out.dtype == tx.grad.dtype == tw.grad.dtype == dtype  # type: ignore[union-attr]
        results.append([out.to_numpy(), tx.grad.to_numpy(), tw.grad.to_numpy()])  # type: ignore[union-attr]
    for r64, r32 in zip(*results):
        np.testing.assert_allclose(r32, r64, rtol=1e-5, atol=1e-5)
    # Mixed operands meet in float64; each gradient comes back in its input's dtype.
    tx = minitorch.tensor_from_numpy(x, backend, dtype=F32).requires_grad_(True)
    tw = minitorch.tensor_from_numpy(w, backend).requires_grad_(True)
    out = minitorch.conv2d(tx, tw)
    out.sum().backward()
    assert out.dtype == np.float64
    assert tx.grad.dtype == np.float32 and tw.grad.dtype == np.float64  # type: ignore[union-attr]


OPTIMISERS = {
    "sgd": lambda ps: minitorch.SGD(ps, lr=0.1),
    "momentum": lambda ps: minitorch.SGD(ps, lr=0.1, momentum=0.9),
    "adam": lambda ps: minitorch.Adam(ps, lr=0.01),
}


def _model(backend: TensorBackend, dtype: np.dtype | None = None) -> minitorch.Module:
    minitorch.manual_seed(0)
    return minitorch.Sequential(
        Linear(3, 4, backend, dtype=dtype), minitorch.ReLU(), Linear(4, 1, backend, dtype=dtype)
    )


def _steps(model: minitorch.Module, optim: minitorch.Optimizer, x: Tensor, n: int) -> None:
    for _ in range(n):
        optim.zero_grad()
        model(x).sum().backward()
        optim.step()


# Optimisers and Module.to are backend-independent code: the CPU backends suffice (the
# simulator's matmul runs a Python thread per GPU thread).
CPU_BACKENDS = pytest.mark.parametrize(
    "cpu_backend", ["simple", pytest.param("fast", marks=pytest.mark.kernels)]
)


@CPU_BACKENDS
@pytest.mark.parametrize("name", sorted(OPTIMISERS))
def test_optimiser_state_lives_in_the_parameter_dtype(
    cpu_backend: str, dtype: np.dtype, name: str
) -> None:
    backend = make_backend(cpu_backend)
    model = _model(backend, dtype)
    optim = OPTIMISERS[name](model.parameters())
    x = minitorch.rand((5, 3), backend=backend, dtype=dtype)
    _steps(model, optim, x, 3)
    for p in model.parameters():
        assert p.value.dtype == dtype
    states = list(getattr(optim, "velocity", {}).values())
    states += [s for _, m, v in getattr(optim, "state", {}).values() for s in (m, v)]
    assert all(s.dtype == dtype for s in states)
    assert len(states) == {"sgd": 0, "momentum": 4, "adam": 8}[name]


@CPU_BACKENDS
@pytest.mark.parametrize("name", sorted(OPTIMISERS))
def test_module_to_casts_parameters_in_place(cpu_backend: str, name: str) -> None:
    backend = make_backend(cpu_backend)
    model = _model(backend)
    params = model.parameters()
    optim = OPTIMISERS[name](params)
    _steps(model, optim, minitorch.rand((5, 3), backend=backend), 1)
    before = [p.value.to_numpy() for p in params]
    assert model.to(F32) is model
    assert model.parameters() == params  # the same Parameter objects
    for p, old in zip(params, before):
        assert p.value.dtype == np.float32 and p.value.is_leaf()
        np.testing.assert_array_equal(p.value.to_numpy(), old.astype(np.float32))
    # State kept from the float64 steps does not promote the parameters back.
    _steps(model, optim, minitorch.rand((5, 3), backend=backend, dtype=F32), 2)
    assert all(p.value.dtype == np.float32 for p in params)


@pytest.mark.parametrize("suffix", [".npz", ".safetensors"])
def test_checkpoints_record_dtype_and_load_into_module_dtype(
    backend: TensorBackend, tmp_path: pathlib.Path, suffix: str
) -> None:
    if suffix == ".safetensors":
        pytest.importorskip("safetensors")
    minitorch.manual_seed(0)
    source = Linear(2, 3, backend, dtype=F32)
    path = tmp_path / f"model{suffix}"
    minitorch.save(source, path)
    state = minitorch.load(path)
    assert {a.dtype for a in state.values()} == {np.dtype(np.float32)}
    target = Linear(2, 3, backend)  # float64
    target.load_state_dict(state)
    assert target.weight.value.dtype == np.float64
    np.testing.assert_array_equal(target.weight.value.to_numpy(), state["weight"])
    back = Linear(2, 3, backend, dtype=F32)
    back.load_state_dict(target.state_dict())  # float64 state, cast into float32
    assert back.weight.value.dtype == np.float32
    np.testing.assert_array_equal(back.weight.value.to_numpy(), source.weight.value.to_numpy())


# Command line and structure ------------------------------------------------------------


@pytest.mark.kernels
def test_train_command_in_float32() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "minitorch", "train", "--dtype", "float32", "--epochs", "2",
         "--points", "20", "--hidden", "4"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert "in float32" in run.stdout and "Done: accuracy" in run.stdout


ROOT = pathlib.Path(minitorch.__file__).parent
NO_BACKEND_CODE = ["tensor.py", "tensor_functions.py", "fast_conv.py", "fast_pool.py", "nn.py",
                   "layers.py", "optim.py", "checkpoint.py", "module.py"]  # fmt: skip


@pytest.mark.parametrize("name", NO_BACKEND_CODE)
def test_storage_is_the_backends_business(name: str) -> None:
    """Above the backends nothing asks where data lives, and tensor.py imports none."""
    tree = ast.parse((ROOT / name).read_text())
    attributes = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
    names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    assert not {"cuda", "to_cuda_", "copy_to_host"} & attributes
    assert not {"device_zeros", "CudaOps", "FastOps"} & names
    imports = [n for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    assert not {"cuda_ops", "fast_ops", "numba.cuda"} & {n.module for n in imports}
    assert not any(alias.name == "cuda" for n in imports for alias in n.names)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize(
    "value",
    [2.0, -0.0, math.nan, math.inf, 1e300, 1e-320, 10**30, 10**400, 16777217, True,
     np.float64(2.5), np.int64(7), np.float32(0.1)],  # fmt: skip
    ids=repr,
)
def test_full_of_one_value_is_the_number_in_the_dtype(dtype: type, value: object) -> None:
    """``TensorOps.full(1, ...)`` (the tensor of ``x * 0.5``) gives what NumPy's conversion
    of the number gives: the same bits and warnings (1e300 overflows float32), or the same
    error (10**400 does not fit a float)."""
    import warnings

    from minitorch.tensor_ops import TensorOps

    def outcome(make: Any) -> tuple[Any, ...]:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                array = make()
            except OverflowError:
                return ("OverflowError",)
        return array.dtype, array.tobytes(), [w.category for w in caught]

    dt = np.dtype(dtype)
    expected = outcome(lambda: np.array((value,), dt))
    assert outcome(lambda: TensorOps.full(1, value, dt)) == expected
    if expected[0] != "OverflowError":
        assert outcome(lambda: TensorOps.full(3, value, dt))[1] == expected[1] * 3
