"""The lean eager path: Function.apply, internal tensor construction, chain_rule."""

from __future__ import annotations

import gc
import sys
from typing import Any

import numpy as np
import pytest
from conftest import make_backend
from hypothesis import given, settings
from hypothesis import strategies as st

import minitorch
from minitorch.autodiff import Context, topological_sort
from minitorch.tensor_functions import Function


class _Identity(Function):
    """A user function whose forward hands back its first input unchanged."""

    @staticmethod
    def forward(ctx: Context, a: minitorch.Tensor, b: minitorch.Tensor) -> minitorch.Tensor:
        return a

    @staticmethod
    def backward(ctx: Context, grad_output: minitorch.Tensor) -> tuple[Any, Any]:
        return grad_output, grad_output


def test_forward_returning_an_input_leaves_the_callers_tensor_alone() -> None:
    # Regression: apply passes inputs without history straight to forward, so a
    # forward that returns one must not get history attached to the caller's tensor.
    a = minitorch.tensor([1.0, 2.0])
    a.history = None  # a constant: forward sees this very object
    b = minitorch.tensor([3.0, 4.0], requires_grad=True)
    out = _Identity.apply(a, b)
    assert out is not a
    assert a.history is None and out.history is not None
    assert out.to_numpy().tolist() == [1.0, 2.0]
    out.sum().backward()
    assert b.grad is not None and b.grad.to_numpy().tolist() == [1.0, 1.0]
    assert a.grad is None


def test_forward_without_gradients_returning_an_input_gives_a_new_tensor() -> None:
    a = minitorch.tensor([1.0, 2.0]).detach()
    b = minitorch.tensor([3.0, 4.0]).detach()
    out = _Identity.apply(a, b)
    assert out is not a and out.history is None
    assert out.to_numpy().tolist() == [1.0, 2.0]


@pytest.mark.parametrize("tracked", [False, True])
def test_forward_sees_inputs_without_history(tracked: bool) -> None:
    seen: list[minitorch.Tensor] = []

    class Probe(Function):
        @staticmethod
        def forward(ctx: Context, a: minitorch.Tensor) -> minitorch.Tensor:
            seen.append(a)
            assert ctx.no_grad is not tracked
            return a.f.neg_map(a)

        @staticmethod
        def backward(ctx: Context, grad_output: minitorch.Tensor) -> minitorch.Tensor:
            return grad_output

    a = minitorch.tensor([1.0, -2.0], requires_grad=tracked)
    if not tracked:
        a = a.detach()
    out = Probe.apply(a)
    assert seen[0].history is None and not seen[0].requires_grad()
    assert (seen[0] is a) is not tracked  # only tensors that track gradients are re-wrapped
    assert out.requires_grad() is tracked
    assert a.requires_grad() is tracked  # the caller's tensor keeps its history


def test_internal_tensors_match_the_public_constructor() -> None:
    # _wrap skips __init__'s checks: it must still set every slot __init__ sets.
    a = minitorch.tensor([[1.0, 2.0], [3.0, 4.0]]).detach()
    for made in (a.detach(), a + 1.0, a.permute(1, 0), a._new(a._tensor)):
        assert made.history is None and made.grad is None
        assert made.backend is a.backend and made.f is a.backend
        assert isinstance(made.unique_id, int) and made.unique_id != a.unique_id
        assert made.name == str(made.unique_id)


def test_backward_skips_gradients_of_constants() -> None:
    # chain_rule tells backward which inputs need a gradient; constants get none computed.
    a = minitorch.tensor([[1.0, 2.0], [3.0, 4.0]], requires_grad=True)
    c = minitorch.tensor([[5.0, 6.0], [7.0, 8.0]]).detach()
    for out in (a * c, c * a, a - c, c - a, a @ c, c @ a):
        ctx = out.history.ctx
        grads = out.history.last_fn._backward(ctx, out.zeros() + 1.0)
        assert ctx.needs_input_grad == ()  # not set: backward called by hand computes both
        assert all(isinstance(g, minitorch.Tensor) for g in grads)
        pairs = out.chain_rule(out.zeros() + 1.0)
        assert [p for p, _ in pairs] == [a]
        assert ctx.needs_input_grad == tuple(x is a for x in out.history.inputs)
    # The gradients themselves are unchanged.
    (a * c + (c - a) + (a @ c)).sum().backward()
    expected = c.to_numpy() - 1.0 + c.to_numpy().sum(1)[None, :]
    assert (a.grad.to_numpy() == expected).all()


def test_startup_rows_report_medians_against_the_targets() -> None:
    from minitorch import bench

    cold, warm = bench.startup_rows([3.0, 1.5, 1.9], [0.9, 1.3, 1.0])
    assert cold.ours == 1.9 and cold.met and cold.unit == "s"
    assert cold.ratio == pytest.approx(1.9 / bench.COLD_START_TARGET)
    assert "1.50-3.00 s over 3 runs" in cold.case
    assert warm.ours == 1.0 and warm.met is (1.0 <= bench.WARM_START_TARGET)
    (slow,) = bench.startup_rows([2.5], [0.5])[:1]
    assert not slow.met and bench._fmt(slow.ours, slow.unit) == "2.50 s"


def test_startup_child_runs_the_first_course_epoch(monkeypatch: pytest.MonkeyPatch) -> None:
    from minitorch import bench

    steps: list[int] = []

    def training(points: int, hidden: int, batch: int, backend: Any) -> tuple[Any, Any]:
        assert (points, hidden, batch, backend) == (50, 100, 10, bench.FAST)
        data = minitorch.datasets["Split"](points)
        return data, lambda xs, ys: steps.append(len(xs))

    monkeypatch.setattr(bench, "_minitorch_training", training)
    bench.first_course_epoch()
    assert steps == [10] * 5


def test_import_defers_the_cuda_backend_until_first_use() -> None:
    # A fresh interpreter: numba.cuda (about half the import time) and cuda_ops load
    # only when used, yet numba.cuda, minitorch.cuda_ops and CudaOps all resolve.
    import subprocess
    import sys

    code = (
        "import sys, types, numba, minitorch\n"
        "assert 'minitorch.cuda_ops' not in sys.modules\n"
        "assert type(sys.modules['numba.cuda']) is not types.ModuleType  # not loaded yet\n"
        "t = minitorch.tensor([1.0, 2.0]) + 1.0\n"
        "assert 'minitorch.cuda_ops' not in sys.modules\n"
        "assert isinstance(numba.cuda.is_available(), bool)\n"
        "assert type(sys.modules['numba.cuda']) is types.ModuleType\n"
        "assert minitorch.CudaOps.cuda and minitorch.cuda_ops.CudaOps is minitorch.CudaOps\n"
        "from minitorch import mm_practice, sum_practice\n"
        "assert minitorch.cuda is numba.cuda and 'CudaOps' in dir(minitorch)\n"
        "print('ok')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_unknown_package_attribute_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'no_such_thing'"):
        minitorch.no_such_thing  # noqa: B018


@pytest.mark.kernels
@pytest.mark.parametrize("size", [1, 7, 4096, 4097, 40000])
def test_flat_kernels_match_the_2d_kernels_bit_for_bit(size: int) -> None:
    # Same-shape contiguous operands take the flat kernels (three arguments to
    # dispatch, quick to compile); they must agree exactly with the 2-D kernels.
    import numpy as np

    from minitorch import fast_kernels, operators
    from minitorch.kernel_cache import load_kernels

    rng = np.random.default_rng(size)
    x, y = rng.normal(size=size) * 30, rng.normal(size=size)
    for fn in (operators.mul, operators.log_back, operators.sigmoid_back_from_output):
        zips = load_kernels("zip", fast_kernels.ZIP_SOURCE, fn, dtype=np.float64)
        for variant in ("ser", "par"):
            flat = np.empty(size)
            getattr(zips, f"zip_flat_{variant}")(flat, x, y)
            for name in ("zip2d_uu", "zip2d"):  # the unit-stride and the general kernel
                twod = np.empty(size)
                getattr(zips, f"{name}_{variant}")(twod, x, y, 1, size, size, 1, 0, 1, 0, 1)
                assert flat.tobytes() == twod.tobytes()
    for fn in (operators.exp, operators.sigmoid, operators.relu):
        maps = load_kernels("map", fast_kernels.MAP_SOURCE, fn, dtype=np.float64)
        for variant in ("ser", "par"):
            flat = np.empty(size)
            getattr(maps, f"map_flat_{variant}")(flat, x)
            for name in ("map2d_u", "map2d"):
                twod = np.empty(size)
                getattr(maps, f"{name}_{variant}")(twod, x, 1, size, size, 1, 0, 1)
                assert flat.tobytes() == twod.tobytes()


@pytest.mark.kernels
def test_contiguous_ops_compile_only_the_flat_kernel() -> None:
    # A function used only on same-shape contiguous tensors never compiles the
    # (much larger) 2-D kernel: the cold start pays for what it uses.
    import numpy as np

    from minitorch import fast_kernels
    from minitorch.kernel_cache import load_kernels

    def halve_sum(x: float, y: float) -> float:
        return (x + y) * 0.5

    backend = minitorch.TensorBackend(minitorch.FastOps)
    op = minitorch.binary_op(halve_sum)
    a = minitorch.tensor([[1.0, 2.0], [3.0, 4.0]], backend=backend).detach()
    assert op(a, a + 2.0).to_numpy().tolist() == [[2.0, 3.0], [4.0, 5.0]]
    zips = load_kernels("zip", fast_kernels.ZIP_SOURCE, halve_sum, dtype=np.float64)
    two_d = [getattr(zips, name) for name in dir(zips) if "2d" in name]
    assert zips.zip_flat_ser.signatures and not any(k.signatures for k in two_d)
    # A broadcast operand needs a 2-D kernel: the one of its pattern compiles then.
    assert op(a, minitorch.tensor([1.0], backend=backend)).to_numpy().tolist() == [
        [1.0, 1.5], [2.0, 2.5]]  # fmt: skip
    assert [k.py_func.__name__ for k in two_d if k.signatures] == ["zip2d_ub_ser"]


class _SavesItsResult(Function):
    """A course-style function whose forward saves its own result for backward."""

    @staticmethod
    def forward(ctx: Context, a: minitorch.Tensor) -> minitorch.Tensor:
        out = a.f.mul_zip(a, a)
        ctx.save_for_backward(a, out)
        return out

    @staticmethod
    def backward(ctx: Context, grad_output: minitorch.Tensor) -> minitorch.Tensor:
        a, out = ctx.saved_values
        assert out.history is None  # the result's data, without the graph
        return grad_output * 2.0 * a


@pytest.mark.parametrize("name", ["simple", "fast"])
def test_a_training_step_leaves_no_reference_cycles(name: str) -> None:
    """Functions that save their own result (sigmoid, exp, tanh, sqrt, max pooling, a
    user's) keep it without its history, so a step's graph is freed as soon as it is
    dropped, not held (with every activation) until Python's cycle collector runs."""
    backend = make_backend(name)
    w = minitorch.Parameter(minitorch.rand((1, 1, 2, 2), backend=backend, requires_grad=True))
    x = minitorch.rand((2, 1, 6, 6), backend=backend)

    def step() -> None:
        h = minitorch.conv2d(x, w.value).sigmoid()
        h = minitorch.maxpool2d(h, (2, 2)).exp().tanh().sqrt()
        _SavesItsResult.apply(h).sum().backward()

    # Twice first: compiling kernels (the second step's accumulates into the gradient)
    # leaves one-off garbage, as ctypes makes cyclic types.
    step()
    step()
    gc.collect()
    gc.disable()
    try:
        step()
        found = gc.collect()
    finally:
        gc.enable()
    assert found == 0
    grad = w.value.grad
    assert grad is not None and grad.shape == (1, 1, 2, 2)


def test_a_function_saving_its_result_gets_the_same_gradient() -> None:
    """The saved result is the same data: the gradient of sum(a * a) is 2a."""
    a = minitorch.tensor([0.5, -1.5, 2.0], requires_grad=True)
    _SavesItsResult.apply(a).sum().backward()
    assert a.grad is not None
    np.testing.assert_allclose(a.grad.to_numpy(), 2.0 * a.to_numpy())


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 99), st.integers(0, 99), st.sampled_from("+*-rn")),
                min_size=1, max_size=25),
       st.lists(st.booleans(), min_size=3, max_size=3))  # fmt: skip
def test_tensor_graph_order_is_the_generic_topological_sort(
    steps: list[tuple[int, int, str]], tracked: list[bool]
) -> None:
    """``Tensor.backward``'s own sort visits the same nodes in the same order as
    ``autodiff.topological_sort`` (so gradients sum in the same order), on random graphs
    with shared nodes, constants, leaves with and without gradients and number operands."""
    sort = sys.modules["minitorch.tensor"]._graph_order
    nodes = [minitorch.tensor([1.0, 2.0], requires_grad=t) for t in tracked]
    for i, j, op in steps:
        a, b = nodes[i % len(nodes)], nodes[j % len(nodes)]
        if op == "+":
            nodes.append(a + b)
        elif op == "*":
            nodes.append(a * b)
        elif op == "-":
            nodes.append(a - 2.0)
        elif op == "r":
            nodes.append(a.relu())
        else:
            nodes.append(a.detach())  # a constant in the middle of the graph
    for out in nodes:
        expected = [n.unique_id for n in topological_sort(out)]
        assert [n.unique_id for n in sort(out)] == expected


@pytest.mark.parametrize("name", ["simple", "fast"])
def test_a_view_to_its_own_shape_is_a_new_tensor_over_the_same_values(name: str) -> None:
    backend = make_backend(name)
    x = minitorch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], backend=backend, requires_grad=True)
    v = x.view(2, 3)
    assert v is not x and v.shape == (2, 3) and v.history is not None
    assert v._tensor._storage is x._tensor._storage
    (v * v).view(6).sum().view(1).backward()
    np.testing.assert_array_equal(x.grad.to_numpy(), 2 * x.to_numpy())
    with pytest.raises(minitorch.IndexingError, match="contiguous"):
        x.permute(1, 0).view(3, 2)  # its own shape, but not row-major: still refused
    with pytest.raises(TypeError):
        x.view(2.5, 3)
