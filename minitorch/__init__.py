"""minitorch: a small, readable deep-learning library with fast tensor operations.

The CUDA backend (``cuda_ops``, ``CudaOps``, ``mm_practice``, ``sum_practice``)
and ``numba.cuda`` load on first use: importing numba's CUDA support is about
half of the package's import time, which every CPU-only start would pay.
"""

import importlib as _importlib
from typing import Any as _Any

from . import (
    _lazy_cuda,
    autodiff,
    checkpoint,
    distributed,
    fast_conv,
    fast_ops,
    layers,
    module,
    nn,
    operators,
    optim,
    scalar,
    scalar_functions,
    tensor_data,
    tensor_functions,
    tensor_ops,
    testing,
)
from .autodiff import (
    Context,
    backpropagate,
    central_difference,
    is_grad_enabled,
    no_grad,
    topological_sort,
)
from .checkpoint import CheckpointError, load, save
from .compiler import CompiledFunction, CompileWarning, compile
from .datasets import datasets
from .fast_conv import Conv1dFun, Conv2dFun, conv1d, conv2d
from .fast_ops import FastOps
from .kernel_cache import KernelCacheWarning, ScalarCompileError
from .layers import Conv1d, Conv2d, Dropout, Flatten, Linear, ReLU, Sequential, Sigmoid, Tanh
from .module import Module, Parameter
from .nn import Max, argmax, avgpool2d, dropout, logsoftmax, max, maxpool2d, softmax, tile
from .operators import prod
from .optim import SGD, Adam, Optimizer
from .scalar import Scalar, ScalarHistory, derivative_check
from .scalar_functions import ScalarFunction
from .tensor import Tensor
from .tensor_data import (
    IndexingError,
    TensorData,
    UserIndex,
    UserShape,
    UserStrides,
    float32,
    float64,
    get_default_dtype,
    set_default_dtype,
    shape_broadcast,
)
from .tensor_functions import (
    Function,
    History,
    arange,
    binary_op,
    cat,
    eye,
    full,
    grad_central_difference,
    grad_check,
    manual_seed,
    maximum,
    minimum,
    ones,
    ones_like,
    rand,
    randn,
    stack,
    tensor,
    tensor_from_numpy,
    unary_op,
    where,
    zeros,
    zeros_like,
)
from .tensor_ops import SimpleBackend, SimpleOps, TensorBackend, TensorOps
from .testing import MathTest, MathTestVariable

version = "0.1.0"
__version__ = version

# Names that import the CUDA backend on first use (see the module docstring).
_CUDA_NAMES = ("CudaOps", "mm_practice", "sum_practice")


def __getattr__(name: str) -> _Any:
    if name == "cuda_ops":
        return _importlib.import_module(".cuda_ops", __name__)
    if name in _CUDA_NAMES:
        return getattr(_importlib.import_module(".cuda_ops", __name__), name)
    if name == "cuda":
        return _lazy_cuda.numba_cuda()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), "cuda", "cuda_ops", *_CUDA_NAMES})
