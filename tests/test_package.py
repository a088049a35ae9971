"""The package surface (contract sections 1 and 12)."""

from __future__ import annotations

import importlib
import inspect
import subprocess
import sys
import typing
from collections.abc import Sequence
from typing import Optional

import pytest

import minitorch

TOP_LEVEL = [
    # Scalars, modules, optimisers
    "Scalar", "ScalarHistory", "ScalarFunction", "Context", "central_difference",
    "derivative_check", "Module", "Parameter", "SGD",
    # Tensors
    "Tensor", "TensorData", "TensorBackend", "tensor", "zeros", "rand", "grad_check",
    "shape_broadcast", "IndexingError", "UserIndex", "UserShape", "prod",
    # Backends
    "SimpleOps", "SimpleBackend", "FastOps", "CudaOps", "sum_practice", "mm_practice",
    # nn
    "avgpool2d", "maxpool2d", "max", "softmax", "logsoftmax", "dropout", "Conv1dFun", "Conv2dFun",
    # Testing and data
    "MathTest", "MathTestVariable", "datasets", "operators", "fast_ops",
    # Course internals
    "topological_sort", "backpropagate", "Optimizer", "Function", "History", "TensorOps",
    "tile", "argmax", "Max", "conv1d", "conv2d", "version",
]  # fmt: skip

SUBMODULES = [
    "operators", "scalar", "scalar_functions", "autodiff", "module", "optim", "tensor_data",
    "tensor_ops", "tensor_functions", "fast_ops", "cuda_ops", "fast_conv", "nn", "testing",
]  # fmt: skip


@pytest.mark.parametrize("name", TOP_LEVEL)
def test_top_level_name(name: str) -> None:
    assert hasattr(minitorch, name), f"minitorch.{name} is missing"


@pytest.mark.parametrize("name", SUBMODULES)
def test_submodule_attribute_and_dotted_import(name: str) -> None:
    module = importlib.import_module(f"minitorch.{name}")
    assert getattr(minitorch, name) is module


def test_name_identities() -> None:
    from minitorch import nn, operators, tensor_functions, tensor_ops

    assert minitorch.max is nn.max
    assert minitorch.prod is operators.prod
    assert minitorch.tensor is tensor_functions.tensor
    assert minitorch.SimpleBackend is tensor_ops.SimpleBackend
    assert minitorch.SimpleBackend.ops is minitorch.SimpleOps
    assert minitorch.conv1d == minitorch.Conv1dFun.apply
    assert minitorch.conv2d == minitorch.Conv2dFun.apply
    assert issubclass(minitorch.IndexingError, RuntimeError)
    assert issubclass(minitorch.SimpleOps, minitorch.TensorOps)
    assert issubclass(minitorch.FastOps, minitorch.TensorOps)
    assert issubclass(minitorch.CudaOps, minitorch.TensorOps)
    assert minitorch.CudaOps.cuda is True
    assert minitorch.FastOps.cuda is False and minitorch.SimpleOps.cuda is False


def test_version_is_a_string() -> None:
    assert isinstance(minitorch.version, str)
    assert minitorch.version


def test_datasets_is_a_dict_of_functions() -> None:
    assert isinstance(minitorch.datasets, dict)
    for name in ("Simple", "Diag", "Split", "Xor", "Circle", "Spiral"):
        assert callable(minitorch.datasets[name])


def test_user_types_in_annotations() -> None:
    def f(shape: Optional[minitorch.UserShape] = None) -> Optional[minitorch.UserIndex]:  # noqa: UP045
        return shape

    hints = typing.get_type_hints(f)
    assert hints["shape"] == Optional[Sequence[int]]  # noqa: UP045
    assert Optional[minitorch.tensor_data.UserStrides] is not None  # noqa: UP045
    assert f((1, 2)) == (1, 2)


def test_backend_named_ops() -> None:
    backend = minitorch.TensorBackend(minitorch.SimpleOps)
    names = (
        [f"{op}_map" for op in ("neg", "sigmoid", "relu", "log", "exp", "id", "inv")]
        + [
            f"{op}_zip"
            for op in ("add", "mul", "lt", "eq", "is_close", "relu_back", "log_back", "inv_back")
        ]
        + ["id_cmap", "add_reduce", "mul_reduce", "matrix_multiply"]
    )
    for name in names:
        assert callable(getattr(backend, name)), name
    assert backend.cuda is False
    for op in ("map", "cmap", "zip", "reduce", "matrix_multiply"):
        assert callable(getattr(minitorch.TensorOps, op))
    assert minitorch.TensorOps.cuda is False


def test_import_makes_numba_cuda_available() -> None:
    # A fresh interpreter: other tests may already have imported numba.cuda.
    code = (
        "import numba; import minitorch; "
        "assert isinstance(numba.cuda.is_available(), bool); print('ok')"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


TENSOR_FUNCTIONS = [
    "Neg", "Inv", "Add", "Mul", "Sigmoid", "ReLU", "Log", "Exp", "Sum", "All", "LT", "EQ",
    "IsClose", "Permute", "View", "Copy", "MatMul",
]  # fmt: skip


@pytest.mark.parametrize("name", TENSOR_FUNCTIONS)
def test_tensor_function_classes(name: str) -> None:
    cls = getattr(minitorch.tensor_functions, name)
    assert issubclass(cls, minitorch.Function)
    assert callable(cls.apply) and callable(cls.forward)


def test_grad_central_difference_signature() -> None:
    params = inspect.signature(minitorch.tensor_functions.grad_central_difference).parameters
    assert params["ind"].kind is inspect.Parameter.KEYWORD_ONLY
    assert params["ind"].default is inspect.Parameter.empty
    assert params["arg"].default == 0
    assert params["epsilon"].default == 1e-6


def test_history_and_context_dataclasses() -> None:
    h = minitorch.History()
    assert h.last_fn is None and h.ctx is None and tuple(h.inputs) == ()
    ctx = minitorch.Context()
    assert ctx.no_grad is False and tuple(ctx.saved_values) == ()
    ctx.save_for_backward(1, 2)
    assert tuple(ctx.saved_tensors) == (1, 2)
    quiet = minitorch.Context(no_grad=True)
    quiet.save_for_backward(1)
    assert tuple(quiet.saved_values) == ()
