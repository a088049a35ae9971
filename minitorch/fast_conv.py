"""1-D and 2-D convolution: the course's parallel numba kernels, and the autodiff
functions, which run through the GEMM engine.

Convolution is the one primitive that is not a map, zip or reduce: each output
reads a window of the input. ``tensor_conv1d`` / ``tensor_conv2d`` are the course's
direct kernels (contract section 8). ``Conv1dFun`` / ``Conv2dFun`` unroll the
input's patches once (im2col) and run the forward pass and both gradients as
products through ``fast_ops``' packed, register-blocked matmul. Everything runs on
the CPU for every backend: the backend hands over its storages as host arrays and
takes the results back (a copy each way only for a backend that keeps data
elsewhere). The work is in the dtype of the operands (float32 or float64);
operands of two dtypes are cast to float64 first, and each gradient back to its
input's dtype.

Both direct kernels compute unflipped correlation. With ``reverse=False`` the window
starts at the output position and runs right / down (zeros past the far edges);
with ``reverse=True`` it runs left / up from it (zeros before the near edges).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numba import prange

from .autodiff import Context
from .kernel_cache import kernel_pair, launch_into, njit
from .tensor import Tensor
from .tensor_data import IndexingError, Shape, Storage, Strides, TensorData, float64
from .tensor_functions import Function, _needs_grad, cast


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


# Convolution through the GEMM engine ---------------------------------------------
#
# Every convolution runs as a 2-D one (1-D is height 1). With R = Cin*KH*KW patch
# rows and N = B*H*W positions, the patches are unrolled once (im2col) into
#     cols (R, N):  cols[(c,i,j), (b,y,x)] = in[b,c,y+i,x+j]  (zero past the edges)
# and every pass is one product through the backend's matrix multiply (on FastOps the
# packed, register-blocked GEMM of fast_ops), over strided views of those storages:
#     forward      out[b] = W (Cout, R) @ cols[:, b]      (batched, W shared)
#     grad weight  dW = G (Cout, N) @ cols^T              (G: grad_output channel-major)
#     grad input   dcols = W^T @ G, and each input element gathers its entries (col2im).
# The unrolling kernels write every element they own from one task, and each sum
# runs in a fixed order, so results do not depend on the thread count.


def _im2col(cols, input, batch, channels, height, width, kh, kw, s0, s1, s2, s3):  # noqa: ANN001
    """Fill ``cols`` (R, N) from ``input`` (B, C, H, W at strides s0..s3).

    A task fills one patch row (c, i, j) for the whole batch, so the row's
    decomposition (integer divisions) is paid once, not per image: at the digits
    CNN's second layer (4 x 4 planes) per-image tasks cost 3x more than the copying.
    A plane whose rows follow each other (the usual contiguous input) is copied as one
    unit-stride run per image, which LLVM vectorises, and the columns that wrapped in
    from the next row are zeroed after: the digits CNN's first layer 24 -> 10 us,
    second 68 -> 53 us, (32, 16, 16, 16) 940 -> 350 us (two threads).
    """
    positions = height * width
    n = batch * positions
    taps = kh * kw
    zero = cols.dtype.type(0)
    for row in prange(channels * taps):
        c = row // taps
        i = (row - c * taps) // kw
        j = row - c * taps - i * kw
        # Columns x with x + j < W (none for a kernel wider than the plane, which only
        # direct calls make: the ops refuse it; negative, it indexed before the row).
        inside = max(width - j, 0)
        read = max(height - i, 0) * width  # rows y with y + i < H come first
        for b in range(batch):
            d0 = row * n + b * positions
            base = b * s0 + c * s1 + i * s2 + j * s3
            if s3 == 1 and s2 == width:
                # From the window's first element to the plane's last (read - j: no
                # further), then the wrapped columns (x >= inside) back to zero.
                dst = cols[d0 : d0 + positions]
                run = input[base : base + read - j]
                for p in range(read - j):
                    dst[p] = run[p]
                for y in range(height - i):
                    for x in range(inside, width):
                        dst[y * width + x] = zero
            else:
                for y in range(height - i):
                    d = d0 + y * width
                    src = base + y * s2
                    for x in range(inside):
                        cols[d + x] = input[src + x * s3]
                    for x in range(inside, width):
                        cols[d + x] = zero
            for p in range(d0 + read, d0 + positions):
                cols[p] = zero


def _channel_major(dst, grad, batch, channels, height, width, s0, s1, s2, s3):  # noqa: ANN001
    """``dst`` (C, N) = ``grad`` (B, C, H, W at strides s0..s3) with channels first."""
    positions = height * width
    n = batch * positions
    for t in prange(channels * batch):
        c = t // batch
        b = t - c * batch
        d0 = c * n + b * positions
        base = b * s0 + c * s1
        if s3 == 1 and s2 == width:
            # A contiguous plane: unit-stride slices, which LLVM vectorises (the digits
            # CNN's first layer 24 -> 8 us on two threads).
            plane = dst[d0 : d0 + positions]
            run = grad[base : base + positions]
            for p in range(positions):
                plane[p] = run[p]
        elif s2 == width * s3:  # the plane's rows follow each other: one run
            for p in range(positions):
                dst[d0 + p] = grad[base + p * s3]
        else:
            for y in range(height):
                for x in range(width):
                    dst[d0 + y * width + x] = grad[base + y * s2 + x * s3]


def _col2im(grad_in, dcols, batch, channels, height, width, kh, kw):  # noqa: ANN001
    """``grad_in`` (B, C, H, W, contiguous): each element sums the ``dcols`` (R, N)
    entries of the patches that read it, taps in order (a gather: no shared writes).
    Tap by tap, the rows of one tap add to shifted rows of the plane, unit-stride."""
    positions = height * width
    n = batch * positions
    for t in prange(batch * channels):
        b = t // channels
        c = t - b * channels
        plane = grad_in[t * positions : (t + 1) * positions]
        plane[:] = 0
        for i in range(kh):
            for j in range(kw):
                tap = ((c * kh + i) * kw + j) * n + b * positions
                for y in range(height - i):
                    src = dcols[tap + y * width : tap + y * width + width - j]
                    dst = plane[(y + i) * width + j : (y + i + 1) * width]
                    for x in range(width - j):
                        dst[x] += src[x]


_IM2COL = kernel_pair(_im2col)
_CHANNEL_MAJOR = kernel_pair(_channel_major)
_COL2IM = kernel_pair(_col2im)

def launch_new(
    kernels: tuple[Any, Any], like: Tensor, shape: tuple[int, ...], *args: Any, reads: int = 0
) -> Tensor:
    """Launch ``kernels``' parallel or serial form into a new contiguous tensor of
    ``shape`` on ``like``'s backend, in ``like``'s dtype (``args`` follow the output;
    ``reads`` as for ``launch_into``)."""
    size = math.prod(shape)
    out = np.empty(size, like.dtype)
    if size:
        launch_into(kernels, out, *args, reads=reads)
    return like._make_like(like.backend.from_numpy(out), shape, size)


def _as_2d(td: TensorData) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Shape and strides of a (B, C, W) or (B, C, H, W) layout as (B, C, H, W)."""
    if len(td.shape) == 3:
        b, c, w = td.shape
        s0, s1, s2 = td.strides
        return (b, c, 1, w), (s0, s1, 0, s2)
    return td.shape, td.strides


def _matrix(
    like: Tensor, storage: Storage, shape: tuple[int, ...], strides: tuple[int, ...]
) -> Tensor:
    """A matmul operand over ``storage`` (on ``like``'s backend), read at ``strides``."""
    return like._new(TensorData._trusted(storage, shape, strides, math.prod(shape)))


class _Sizes:
    """The sizes of one convolution: patch rows R = Cin*KH*KW, positions N = B*H*W."""

    def __init__(self, input: TensorData, weight: TensorData) -> None:
        (self.batch, self.channels, self.height, self.width), _ = _as_2d(input)
        _, _, self.kh, self.kw = _as_2d(weight)[0]
        self.out_channels = weight.shape[0]
        self.rows = self.channels * self.kh * self.kw
        self.positions = self.height * self.width
        self.n = self.batch * self.positions


def _gemm_forward(input: Tensor, weight: Tensor) -> tuple[Tensor, Storage]:
    """``conv(input, weight)`` (weight row-major), and the storage of the unrolled
    patches ``cols`` (kept for the weight gradient)."""
    backend = input.backend
    u = _Sizes(input._tensor, weight._tensor)
    cols = np.empty(u.rows * u.n, input.dtype)
    (b, c, h, w), strides = _as_2d(input._tensor)
    source = backend.to_numpy(input._tensor._storage)
    launch_into(_IM2COL, cols, source, b, c, h, w, u.kh, u.kw, *strides)
    cols = backend.from_numpy(cols)
    out_shape = (u.batch, u.out_channels) + input.shape[2:]
    if u.batch == 0:  # nothing to compute (and a batch of 1 against 0 trips SimpleOps' matmul)
        return input._make_like(backend.empty(0, input.dtype), out_shape, 0), cols
    # out[b] (Cout, HW) = W (Cout, R) @ cols[:, b] (R, HW): cols' batch stride is HW.
    out = backend.matrix_multiply(
        _matrix(weight, weight._tensor._storage, (1, u.out_channels, u.rows), (0, u.rows, 1)),
        _matrix(input, cols, (u.batch, u.rows, u.positions), (u.positions, u.n, 1)),
    )
    return out._make_like(out._tensor._storage, out_shape, out.size), cols


def _gemm_backward(
    grad_output: Tensor, input: Tensor, weight: Tensor, cols: Storage, need: tuple[bool, bool]
) -> tuple[Tensor | None, Tensor | None]:
    """The input and weight gradients (None where not ``need``-ed)."""
    backend = input.backend
    u = _Sizes(input._tensor, weight._tensor)
    (b, c, h, w), strides = _as_2d(grad_output._tensor)
    grad = np.empty(u.out_channels * u.n, input.dtype)
    source = backend.to_numpy(grad_output._tensor._storage)
    launch_into(_CHANNEL_MAJOR, grad, source, b, c, h, w, *strides)
    g = _matrix(input, backend.from_numpy(grad), (u.out_channels, u.n), (u.n, 1))
    grad_input = grad_weight = None
    if need[1]:
        # dW (Cout, R) = G (Cout, N) @ cols^T (N, R).
        dw = backend.matrix_multiply(g, _matrix(input, cols, (u.n, u.rows), (1, u.n)))
        grad_weight = dw._make_like(dw._tensor._storage, weight.shape, dw.size)
    if need[0]:
        # dcols (R, N) = W^T (R, Cout) @ G (Cout, N), then gathered back to the input.
        w_t = _matrix(weight, weight._tensor._storage, (u.rows, u.out_channels), (1, u.rows))
        dcols = backend.matrix_multiply(w_t, g)
        source = backend.to_numpy(dcols._tensor._storage)
        # (Each element sums kh * kw entries: the digits CNN's second layer gathers 73,728
        # into 8,192, 96-102 -> 57-58 us on two threads.)
        grad_input = launch_new(_COL2IM, input, input.shape, source, u.batch, u.channels,
                                u.height, u.width, u.kh, u.kw, reads=dcols.size)  # fmt: skip
    return grad_input, grad_weight


# Autodiff ----------------------------------------------------------------------

_LAYOUTS = {1: "(B, Cin, W) and (Cout, Cin, K)", 2: "(B, Cin, H, W) and (Cout, Cin, KH, KW)"}


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
    if input.shape[1] == 0 or weight.shape[0] == 0:
        raise IndexingError(
            f"{name} needs at least one input and one output channel "
            f"(shapes {input.shape} and {weight.shape})."
        )
    for size, k in zip(input.shape[2:], weight.shape[2:]):
        if not 1 <= k <= size:
            raise IndexingError(
                f"{name}: kernel {weight.shape[2:]} must be at least 1 and at most the "
                f"input size {input.shape[2:]} in every spatial dim."
            )


def _forward(ctx: Context, input: Tensor, weight: Tensor) -> Tensor:
    """The convolution itself; output keeps the input's batch and spatial sizes.

    Operands of two dtypes meet in float64 (``backward`` casts each gradient back).
    The weight is read as a row-major (Cout, R) matrix: a strided one is copied first.
    """
    dtypes = (input.dtype, weight.dtype)
    if input.dtype != weight.dtype:
        input, weight = cast(input, float64), cast(weight, float64)
    if not weight._tensor.is_row_major():
        weight = weight.f.id_map(weight)
    out, cols = _gemm_forward(input, weight)
    ctx.save_for_backward(input, weight, cols, dtypes)
    return out


def _backward(ctx: Context, grad_output: Tensor) -> tuple[Any, Any]:
    """Both gradients through the GEMM engine, each cast back to its input's dtype."""
    input, weight, cols, (input_dtype, weight_dtype) = ctx.saved_values
    grad_output = cast(grad_output, input.dtype)
    need = (_needs_grad(ctx, 0), _needs_grad(ctx, 1))
    grad_input, grad_weight = _gemm_backward(grad_output, input, weight, cols, need)
    return (
        0.0 if grad_input is None else cast(grad_input, input_dtype),
        0.0 if grad_weight is None else cast(grad_weight, weight_dtype),
    )


class Conv1dFun(Function):
    """``(B, Cin, W) x (Cout, Cin, K) -> (B, Cout, W)``, anchored left, zeros past the right."""

    @staticmethod
    def forward(ctx: Context, input: Tensor, weight: Tensor) -> Tensor:
        _check(input, weight, 1)
        return _forward(ctx, input, weight)

    @staticmethod
    def backward(ctx: Context, grad_output: Tensor) -> tuple[Any, Any]:
        return _backward(ctx, grad_output)


class Conv2dFun(Function):
    """``(B, Cin, H, W) x (Cout, Cin, KH, KW) -> (B, Cout, H, W)``, anchored top-left."""

    @staticmethod
    def forward(ctx: Context, input: Tensor, weight: Tensor) -> Tensor:
        _check(input, weight, 2)
        return _forward(ctx, input, weight)

    @staticmethod
    def backward(ctx: Context, grad_output: Tensor) -> tuple[Any, Any]:
        return _backward(ctx, grad_output)


conv1d = Conv1dFun.apply
conv2d = Conv2dFun.apply
