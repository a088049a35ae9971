"""Ready-made layers in the style of ``torch.nn``, built from Module and tensor ops.

Each layer owns its Parameters, so ``parameters()``, ``state_dict()`` and the
optimisers see them without further wiring. Weights start uniform on
``±1/sqrt(fan_in)`` as in PyTorch, which keeps activations of deep stacks at a
sensible scale whatever the layer width.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

from . import fast_conv, nn
from .module import Module, Parameter
from .tensor import Tensor
from .tensor_functions import rand
from .tensor_ops import SimpleBackend, TensorBackend


def _uniform(
    shape: Sequence[int], bound: float, backend: TensorBackend, name: str, dtype: Any
) -> Parameter:
    """A Parameter uniform on [-bound, bound) in ``dtype``, drawn from Python's ``random``."""
    return Parameter((rand(shape, backend=backend, dtype=dtype) - 0.5) * (2.0 * bound), name)


class Linear(Module):
    """``x @ weight + bias`` for ``x`` of shape ``(..., in_features)``.

    ``weight`` is stored as ``(in_features, out_features)`` (the transpose of
    PyTorch's layout) so the forward pass is a plain matrix product. Parameters
    are in ``dtype`` (None: the default dtype), as for every layer here.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        backend: TensorBackend = SimpleBackend,
        bias: bool = True,
        dtype: Any = None,
    ) -> None:
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        bound = 1.0 / math.sqrt(in_features)
        self.weight = _uniform((in_features, out_features), bound, backend, "weight", dtype)
        self.bias = _uniform((out_features,), bound, backend, "bias", dtype) if bias else None

    def forward(self, x: Tensor) -> Tensor:
        out = x @ self.weight.value
        return out if self.bias is None else out + self.bias.value

    def __repr__(self) -> str:
        return f"Linear(in_features={self.in_features}, out_features={self.out_features})"


class Conv1d(Module):
    """1-D convolution ``(B, Cin, W) -> (B, Cout, W)`` plus a per-channel bias.

    Like ``minitorch.conv1d`` it is an unflipped correlation anchored at the
    left edge with zeros past the right edge, so the width is kept.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        backend: TensorBackend = SimpleBackend,
        dtype: Any = None,
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = kernel_size
        bound = 1.0 / math.sqrt(in_channels * kernel_size)
        self.weight = _uniform(
            (out_channels, in_channels, kernel_size), bound, backend, "weight", dtype
        )
        self.bias = _uniform((out_channels, 1), bound, backend, "bias", dtype)

    def forward(self, x: Tensor) -> Tensor:
        return fast_conv.conv1d(x, self.weight.value) + self.bias.value

    def __repr__(self) -> str:
        return f"Conv1d({self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size})"


class Conv2d(Module):
    """2-D convolution ``(B, Cin, H, W) -> (B, Cout, H, W)`` plus a per-channel bias.

    Anchored at the top-left corner with zeros beyond the bottom and right
    edges, like ``minitorch.conv2d``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        backend: TensorBackend = SimpleBackend,
        dtype: Any = None,
    ) -> None:
        super().__init__()
        kh, kw = (kernel_size, kernel_size) if isinstance(kernel_size, int) else kernel_size
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = (kh, kw)
        bound = 1.0 / math.sqrt(in_channels * kh * kw)
        self.weight = _uniform((out_channels, in_channels, kh, kw), bound, backend, "weight", dtype)
        self.bias = _uniform((out_channels, 1, 1), bound, backend, "bias", dtype)

    def forward(self, x: Tensor) -> Tensor:
        return fast_conv.conv2d(x, self.weight.value) + self.bias.value

    def __repr__(self) -> str:
        return f"Conv2d({self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size})"


class ReLU(Module):
    """max(x, 0), elementwise."""

    def forward(self, x: Tensor) -> Tensor:
        return x.relu()


class Sigmoid(Module):
    """1 / (1 + e^-x), elementwise."""

    def forward(self, x: Tensor) -> Tensor:
        return x.sigmoid()


class Tanh(Module):
    """tanh(x) = 2·sigmoid(2x) - 1: the backends need no tanh kernel."""

    def forward(self, x: Tensor) -> Tensor:
        return (x * 2.0).sigmoid() * 2.0 - 1.0


class Dropout(Module):
    """Zero each element with probability ``rate`` while training; identity in eval.

    Unlike ``minitorch.dropout``, kept values are scaled by ``1/(1-rate)`` as in
    PyTorch, so a trained network needs no correction when switched to eval.
    """

    def __init__(self, rate: float = 0.5) -> None:
        super().__init__()
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"Dropout rate must be in [0, 1], got {rate}.")
        self.rate = rate

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.rate == 0.0:
            return x
        dropped = nn.dropout(x, self.rate)
        return dropped if self.rate == 1.0 else dropped * (1.0 / (1.0 - self.rate))

    def __repr__(self) -> str:
        return f"Dropout(rate={self.rate})"


class Flatten(Module):
    """``(B, d1, d2, ...) -> (B, d1*d2*...)``, e.g. between convolutions and a Linear."""

    def forward(self, x: Tensor) -> Tensor:
        if not x._tensor.is_row_major():
            x = x.contiguous()
        return x.view(x.shape[0], -1)


class Sequential(Module):
    """Children applied in order; they are registered as ``"0"``, ``"1"``, ..."""

    def __init__(self, *layers: Module) -> None:
        super().__init__()
        for i, layer in enumerate(layers):
            setattr(self, str(i), layer)

    def forward(self, x: Tensor) -> Tensor:
        for layer in self._modules.values():
            x = layer(x)
        return x

    def __len__(self) -> int:
        return len(self._modules)

    def __getitem__(self, i: int) -> Module:
        return list(self._modules.values())[i]

    def __iter__(self) -> Iterator[Module]:
        return iter(self._modules.values())
