"""1-D and 2-D convolution: parallel numba kernels and their autodiff functions.

Convolution is the one primitive that is not a map, zip or reduce: each output
reads a window of the input. The kernels below run on the CPU for every backend:
the backend hands over its storages as host arrays and takes the result back
(``_convolve``; a copy each way only for a backend that keeps data elsewhere).
They compute in the dtype of their operands (float32 or float64); operands of
two dtypes are cast to float64 first, and each gradient back to its input's dtype.

Both kernels compute unflipped correlation. With ``reverse=False`` the window
starts at the output position and runs right / down (zeros past the far edges);
with ``reverse=True`` it runs left / up from it (zeros before the near edges),
which is exactly what the input gradient needs.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from numba import prange

from . import recording
from .autodiff import Context
from .kernel_cache import njit
from .tensor import Tensor
from .tensor_data import IndexingError, Shape, Storage, Strides, TensorData, float64
from .tensor_functions import Function, cast


@njit(parallel=True, cache=True)
def tensor_conv1d(
    out: Storage,
    out_shape: Shape,
    out_strides: Strides,
    out_size: int,
    input: Storage,
    input_shape: Shape,
    input_strides: Strides,
    weight: Storage,
    weight_shape: Shape,
    weight_strides: Strides,
    reverse: bool,
) -> None:
    """``out[b,o,x] = sum_c sum_k w[o,c,k] * in[b,c,x+k]`` (``x-k`` when ``reverse``).

    Shapes: out ``(B, Cout, X)``, input ``(B, Cin, W)``, weight ``(Cout, Cin, K)``.
    Terms whose input position falls outside ``[0, W)`` count as zero; the loop
    bounds exclude them, so nothing outside the storage is ever read.
    """
    assert out_shape[0] == input_shape[0]
    assert out_shape[1] == weight_shape[0]
    assert input_shape[1] == weight_shape[1]
    out_channels, out_width = out_shape[1], out_shape[2]
    in_channels, width = input_shape[1], input_shape[2]
    kw = weight_shape[2]
    os0, os1, os2 = out_strides[0], out_strides[1], out_strides[2]
    is0, is1, is2 = input_strides[0], input_strides[1], input_strides[2]
    ws0, ws1, ws2 = weight_strides[0], weight_strides[1], weight_strides[2]
    # Storage step of the input per kernel tap.
    step = -is2 if reverse else is2
    zero = out.dtype.type(0)  # the accumulator computes in the output's dtype

    for i in prange(out_size):
        x = i % out_width
        rest = i // out_width
        o = rest % out_channels
        b = rest // out_channels
        # Taps k whose input position x + k (or x - k) lies in [0, width).
        if reverse:
            k_lo, k_hi = max(0, x - width + 1), min(kw, x + 1)
        else:
            k_lo, k_hi = max(0, -x), min(kw, width - x)
        acc = zero
        for c in range(in_channels):
            in_pos = b * is0 + c * is1 + x * is2
            w_pos = o * ws0 + c * ws1
            for k in range(k_lo, k_hi):
                acc += weight[w_pos + k * ws2] * input[in_pos + k * step]
        out[b * os0 + o * os1 + x * os2] = acc


@njit(parallel=True, cache=True)
def tensor_conv2d(
    out: Storage,
    out_shape: Shape,
    out_strides: Strides,
    out_size: int,
    input: Storage,
    input_shape: Shape,
    input_strides: Strides,
    weight: Storage,
    weight_shape: Shape,
    weight_strides: Strides,
    reverse: bool,
) -> None:
    """``out[b,o,y,x] = sum_c sum_{i,j} w[o,c,i,j] * in[b,c,y+i,x+j]`` (minus when ``reverse``).

    Shapes: out ``(B, Cout, Y, X)``, input ``(B, Cin, H, W)``, weight
    ``(Cout, Cin, KH, KW)``. Taps outside the input count as zero and are never read.
    """
    assert out_shape[0] == input_shape[0]
    assert out_shape[1] == weight_shape[0]
    assert input_shape[1] == weight_shape[1]
    out_channels, out_height, out_width = out_shape[1], out_shape[2], out_shape[3]
    in_channels, height, width = input_shape[1], input_shape[2], input_shape[3]
    kh, kw = weight_shape[2], weight_shape[3]
    os0, os1, os2, os3 = out_strides[0], out_strides[1], out_strides[2], out_strides[3]
    is0, is1, is2, is3 = input_strides[0], input_strides[1], input_strides[2], input_strides[3]
    ws0, ws1, ws2, ws3 = weight_strides[0], weight_strides[1], weight_strides[2], weight_strides[3]
    # Storage steps of the input per kernel row and per kernel column.
    step_y = -is2 if reverse else is2
    step_x = -is3 if reverse else is3
    zero = out.dtype.type(0)  # the accumulator computes in the output's dtype

    for n in prange(out_size):
        x = n % out_width
        rest = n // out_width
        y = rest % out_height
        rest = rest // out_height
        o = rest % out_channels
        b = rest // out_channels
        # Taps whose input row / column lies inside the input.
        if reverse:
            i_lo, i_hi = max(0, y - height + 1), min(kh, y + 1)
            j_lo, j_hi = max(0, x - width + 1), min(kw, x + 1)
        else:
            i_lo, i_hi = max(0, -y), min(kh, height - y)
            j_lo, j_hi = max(0, -x), min(kw, width - x)
        acc = zero
        for c in range(in_channels):
            in_base = b * is0 + c * is1 + y * is2 + x * is3
            w_base = o * ws0 + c * ws1
            for i in range(i_lo, i_hi):
                in_row = in_base + i * step_y
                w_row = w_base + i * ws2
                for j in range(j_lo, j_hi):
                    acc += weight[w_row + j * ws3] * input[in_row + j * step_x]
        out[b * os0 + o * os1 + y * os2 + x * os3] = acc


# Autodiff ----------------------------------------------------------------------

ConvKernel = Callable[..., None]

# Swapping the first two dims turns (B, C, ...) into (C, B, ...): the layout
# that makes each gradient another convolution.
_SWAP = {3: (1, 0, 2), 4: (1, 0, 2, 3)}
_LAYOUTS = {1: "(B, Cin, W) and (Cout, Cin, K)", 2: "(B, Cin, H, W) and (Cout, Cin, KH, KW)"}


def _convolve(
    kernel: ConvKernel,
    like: Tensor,
    out_shape: tuple[int, ...],
    input: TensorData,
    weight: TensorData,
    reverse: bool,
    swap_out: bool = False,
) -> Tensor:
    """Run ``kernel`` into a new contiguous tensor of ``out_shape`` on ``like``'s backend,
    in ``like``'s dtype; ``input`` and ``weight`` are layouts over that backend's storages.

    The one place convolution meets the backend: it hands its storages over as host
    arrays and takes the result back. With ``swap_out`` the kernel writes through a
    view with the first two dims swapped, so a gradient computed in (C, B, ...)
    layout lands as (B, C, ...).
    """
    backend = like.backend
    size = int(np.prod(out_shape))
    result = TensorData(np.empty(size, like.dtype), out_shape)  # every element is written
    target = result.permute(*_SWAP[len(out_shape)]) if swap_out else result
    args = (
        *target.tuple(),
        size,
        backend.to_numpy(input._storage), input._shape, input._strides,
        backend.to_numpy(weight._storage), weight._shape, weight._strides,
        reverse,
    )  # fmt: skip
    kernel(*args)
    if recording.recorder is not None:
        recording.recorder.launch(kernel, args)
    return like._make_like(backend.from_numpy(result._storage), out_shape, size)


def _check(input: Tensor, weight: Tensor, spatial: int) -> None:
    """Raise a clear error unless ``input`` and ``weight`` fit a ``spatial``-D convolution."""
    name = f"conv{spatial}d"
    dims = spatial + 2
    if input.dims != dims or weight.dims != dims:
        raise IndexingError(
            f"{name} needs input and weight shaped {_LAYOUTS[spatial]}, "
            f"got {input.shape} and {weight.shape}."
        )
    if input.shape[1] != weight.shape[1]:
        raise IndexingError(
            f"{name}: input has {input.shape[1]} channels but weight expects "
            f"{weight.shape[1]} (shapes {input.shape} and {weight.shape})."
        )
    for size, k in zip(input.shape[2:], weight.shape[2:]):
        if not 1 <= k <= size:
            raise IndexingError(
                f"{name}: kernel {weight.shape[2:]} must be at least 1 and at most the "
                f"input size {input.shape[2:]} in every spatial dim."
            )


def _forward(ctx: Context, kernel: ConvKernel, input: Tensor, weight: Tensor) -> Tensor:
    """The convolution itself; output keeps the input's batch and spatial sizes.

    Operands of two dtypes meet in float64 (``backward`` casts each gradient back).
    """
    dtypes = (input.dtype, weight.dtype)
    if input.dtype != weight.dtype:
        input, weight = cast(input, float64), cast(weight, float64)
    ctx.save_for_backward(input, weight, dtypes)
    out_shape = (input.shape[0], weight.shape[0]) + input.shape[2:]
    return _convolve(kernel, input, out_shape, input._tensor, weight._tensor, False)


def _backward(ctx: Context, kernel: ConvKernel, grad_output: Tensor) -> tuple[Tensor, Tensor]:
    """Both gradients are convolutions of what is at hand.

    ``d in[b,c,p] = sum_o sum_k w[o,c,k] g[b,o,p-k]``: a reversed convolution of
    the output gradient with the weight's channels swapped.
    ``d w[o,c,k] = sum_b sum_x g[b,o,x] in[b,c,x+k]``: a convolution of the input
    with the output gradient, both with batch and channels swapped.
    """
    input, weight, (input_dtype, weight_dtype) = ctx.saved_values
    grad_output = cast(grad_output, input.dtype)
    swap = _SWAP[input.dims]
    grad_input = _convolve(
        kernel, input, input.shape, grad_output._tensor, weight._tensor.permute(*swap), True
    )
    grad_weight = _convolve(
        kernel,
        weight,
        weight.shape,
        input._tensor.permute(*swap),
        grad_output._tensor.permute(*swap),
        False,
        swap_out=True,
    )
    return cast(grad_input, input_dtype), cast(grad_weight, weight_dtype)


class Conv1dFun(Function):
    """``(B, Cin, W) x (Cout, Cin, K) -> (B, Cout, W)``, anchored left, zeros past the right."""

    @staticmethod
    def forward(ctx: Context, input: Tensor, weight: Tensor) -> Tensor:
        _check(input, weight, 1)
        return _forward(ctx, tensor_conv1d, input, weight)

    @staticmethod
    def backward(ctx: Context, grad_output: Tensor) -> tuple[Tensor, Tensor]:
        return _backward(ctx, tensor_conv1d, grad_output)


class Conv2dFun(Function):
    """``(B, Cin, H, W) x (Cout, Cin, KH, KW) -> (B, Cout, H, W)``, anchored top-left."""

    @staticmethod
    def forward(ctx: Context, input: Tensor, weight: Tensor) -> Tensor:
        _check(input, weight, 2)
        return _forward(ctx, tensor_conv2d, input, weight)

    @staticmethod
    def backward(ctx: Context, grad_output: Tensor) -> tuple[Tensor, Tensor]:
        return _backward(ctx, tensor_conv2d, grad_output)


conv1d = Conv1dFun.apply
conv2d = Conv2dFun.apply
