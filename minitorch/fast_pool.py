"""2-D average and max pooling as parallel numba kernels, forward and backward.

Each kernel reads the input where it lies (any strides) and writes a contiguous
result, one window (forward) or one input element (backward) per step, so a
pooling layer costs one pass each way: no tiled copies, no per-window Python.
Like the convolutions they run on the CPU for every backend (the backend hands
over its storages as host arrays and takes the result back) and compute in the
input's dtype.

Max follows ``operators.maximum``: the fold starts at -inf and a NaN in a window
makes its maximum NaN. Its gradient goes to every element equal to the window's
maximum (as ``Max`` sends it to every tie); a NaN maximum equals nothing and
passes no gradient.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numba import njit, prange

from .autodiff import Context
from .fast_conv import launch_new
from .kernel_cache import kernel_pair
from .tensor import Tensor
from .tensor_data import IndexingError, as_int
from .tensor_functions import Function, cast


def pool_sizes(input: Tensor, kernel: tuple[int, int], what: str) -> tuple[int, int]:
    """``kernel`` as two ints, after checking that it tiles ``input`` (B, C, H, W)."""
    if input.dims != 4:
        raise IndexingError(f"{what} needs a (B, C, H, W) tensor, not shape {input.shape}.")
    kh, kw = (as_int(k, "A pooling kernel size") for k in kernel)
    height, width = input.shape[2:]
    if kh < 1 or kw < 1 or height % kh or width % kw:
        raise IndexingError(
            f"Pooling kernel {(kh, kw)} must be positive and divide the input's "
            f"height and width {(height, width)}."
        )
    return kh, kw


# Kernels: ``out`` is (B, C, H/kh, W/kw) contiguous, ``input`` (B, C, H, W) at
# strides s0..s3; one task per (batch, channel) plane.


@njit(inline="always")
def _max_step(acc, v):  # noqa: ANN001, ANN202
    return v if v > acc or v != v else acc  # a NaN stays: nothing compares greater


@njit(inline="always")
def _sum_step(acc, v):  # noqa: ANN001, ANN202
    return acc + v


def _window_fold(name: str, step: Any, start: float, mean: bool) -> Any:
    """The forward kernel that folds each window with ``step`` from ``start``,
    row by row (over kh * kw when ``mean``): one loop for every pooling."""

    def pool(out, input, batch, channels, height, width, kh, kw, s0, s1, s2, s3):  # noqa: ANN001, ANN202
        rows, cols = height // kh, width // kw
        first = out.dtype.type(start)
        count = out.dtype.type(kh * kw)
        for t in prange(batch * channels):
            b = t // channels
            c = t - b * channels
            o0 = t * rows * cols
            base = b * s0 + c * s1
            for r in range(rows):
                for q in range(cols):
                    corner = base + r * kh * s2 + q * kw * s3
                    if kh == 2 and kw == 2:
                        # The common window, unrolled (same order as the loops below):
                        # loops of two steps cost more than the four reads (4x faster
                        # at the digits CNN's sizes).
                        acc = step(step(step(step(first, input[corner]), input[corner + s3]),
                                        input[corner + s2]), input[corner + s2 + s3])  # fmt: skip
                    else:
                        acc = first
                        for i in range(kh):
                            for j in range(kw):
                                acc = step(acc, input[corner + i * s2 + j * s3])
                    out[o0 + r * cols + q] = acc / count if mean else acc

    pool.__name__ = pool.__qualname__ = name
    return pool


_max_pool = _window_fold("_max_pool", _max_step, -np.inf, mean=False)
_avg_pool = _window_fold("_avg_pool", _sum_step, 0.0, mean=True)


def _max_pool_back(grad_in, grad, input, out, batch, channels, height, width, kh, kw,
                   s0, s1, s2, s3, g0, g1, g2, g3):  # noqa: ANN001  # fmt: skip
    """``grad_in`` (contiguous) = the window's gradient where the element equals the
    window's maximum, else 0; ``grad`` at strides g0..g3, ``out`` contiguous.

    Window by window (no division per element), a 2 x 2 window unrolled: every value
    is read before the selects, so they compile branch-free (1.7x faster at the digits
    CNN's sizes than element by element).
    """
    rows, cols = height // kh, width // kw
    zero = grad_in.dtype.type(0)
    for t in prange(batch * channels):
        b = t // channels
        c = t - b * channels
        p0 = t * height * width
        m0 = t * rows * cols
        base = b * s0 + c * s1
        g_base = b * g0 + c * g1
        for r in range(rows):
            for q in range(cols):
                m = out[m0 + r * cols + q]
                g = grad[g_base + r * g2 + q * g3]
                src = base + r * kh * s2 + q * kw * s3
                d = p0 + r * kh * width + q * kw
                if kh == 2 and kw == 2:
                    v0, v1 = input[src], input[src + s3]
                    v2, v3 = input[src + s2], input[src + s2 + s3]
                    grad_in[d] = g if v0 == m else zero
                    grad_in[d + 1] = g if v1 == m else zero
                    grad_in[d + width] = g if v2 == m else zero
                    grad_in[d + width + 1] = g if v3 == m else zero
                else:
                    for i in range(kh):
                        for j in range(kw):
                            v = input[src + i * s2 + j * s3]
                            grad_in[d + i * width + j] = g if v == m else zero


def _avg_pool_back(grad_in, grad, batch, channels, height, width, kh, kw, g0, g1, g2, g3):  # noqa: ANN001
    """``grad_in`` (contiguous) = the window's gradient over kh * kw, window by window."""
    rows, cols = height // kh, width // kw
    count = grad_in.dtype.type(kh * kw)
    for t in prange(batch * channels):
        b = t // channels
        c = t - b * channels
        p0 = t * height * width
        g_base = b * g0 + c * g1
        for r in range(rows):
            for q in range(cols):
                share = grad[g_base + r * g2 + q * g3] / count
                d = p0 + r * kh * width + q * kw
                for i in range(kh):
                    for j in range(kw):
                        grad_in[d + i * width + j] = share


_MAX_POOL = kernel_pair(_max_pool)
_MAX_POOL_BACK = kernel_pair(_max_pool_back)
_AVG_POOL = kernel_pair(_avg_pool)
_AVG_POOL_BACK = kernel_pair(_avg_pool_back)


class _Pool2d(Function):
    """Shared forward for the pooling functions: ``(input, kh, kw)``."""

    forward_kernels: tuple[Any, Any]

    @classmethod
    def _pool(cls, input: Tensor, kh: int, kw: int) -> Tensor:
        batch, channels, height, width = input.shape
        return launch_new(
            cls.forward_kernels,
            input,
            (batch, channels, height // kh, width // kw),
            input.backend.to_numpy(input._tensor._storage),
            batch, channels, height, width, kh, kw,
            *input._tensor.strides,
            reads=input.size,  # (the digits CNN's first pooling: 62 -> 24 us on two threads)
        )  # fmt: skip


class MaxPool2dFun(_Pool2d):
    """Window maxima of ``(B, C, H, W)``; the gradient goes to each window's maxima."""

    forward_kernels = _MAX_POOL

    @staticmethod
    def forward(ctx: Context, input: Tensor, kh: int, kw: int) -> Tensor:
        out = MaxPool2dFun._pool(input, kh, kw)
        ctx.save_for_backward(input, out, kh, kw)
        return out

    @staticmethod
    def backward(ctx: Context, grad_output: Tensor) -> tuple[Tensor, float, float]:
        input, out, kh, kw = ctx.saved_values
        grad = cast(grad_output, input.dtype)
        to_numpy = input.backend.to_numpy
        return (
            launch_new(
                _MAX_POOL_BACK,
                input,
                input.shape,
                to_numpy(grad._tensor._storage),
                to_numpy(input._tensor._storage),
                to_numpy(out._tensor._storage),
                *input.shape, kh, kw,
                *input._tensor.strides,
                *grad._tensor.strides,
            ),
            0.0,
            0.0,
        )  # fmt: skip


class AvgPool2dFun(_Pool2d):
    """Window means of ``(B, C, H, W)``; each element gets its window's gradient / (kh kw)."""

    forward_kernels = _AVG_POOL

    @staticmethod
    def forward(ctx: Context, input: Tensor, kh: int, kw: int) -> Tensor:
        ctx.save_for_backward(input, kh, kw)
        return AvgPool2dFun._pool(input, kh, kw)

    @staticmethod
    def backward(ctx: Context, grad_output: Tensor) -> tuple[Tensor, float, float]:
        input, kh, kw = ctx.saved_values
        grad = cast(grad_output, input.dtype)
        return (
            launch_new(
                _AVG_POOL_BACK,
                input,
                input.shape,
                input.backend.to_numpy(grad._tensor._storage),
                *input.shape, kh, kw,
                *grad._tensor.strides,
            ),
            0.0,
            0.0,
        )  # fmt: skip
