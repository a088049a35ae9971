"""Neural-network functions built from the tensor primitives.

Max, softmax, dropout and the losses are compositions of map, zip, reduce and
movement ops (view / permute), so every backend runs them; ``tile`` too. Pooling
runs as kernels of its own (``fast_pool``). The course's ``Max`` (whose backward
routes the gradient to the argmax) and ``max_reduce`` live in ``tensor_functions``
beside ``Tensor.max`` and are re-exported here.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import recording
from .fast_pool import AvgPool2dFun, MaxPool2dFun, pool_sizes
from .tensor import Tensor
from .tensor_data import IndexingError, Storage, TensorData
from .tensor_functions import Max, max_reduce, rand, tensor_from_numpy
from .tensor_ops import check_reduce_dim

# Pooling ---------------------------------------------------------------------


def _contiguous(t: Tensor) -> Tensor:
    """``t`` itself when already row-major, else a differentiable copy."""
    return t if t._tensor.is_row_major() else t.contiguous()


def tile(input: Tensor, kernel: tuple[int, int]) -> tuple[Tensor, int, int]:
    """Split ``(B, C, H, W)`` into non-overlapping ``kh x kw`` blocks.

    Returns ``(B, C, H/kh, W/kw, kh*kw)`` (each block flattened row by row, so a
    reduce over the last dim pools it), and the new height and width.
    """
    kh, kw = pool_sizes(input, kernel, "tile")
    batch, channel, height, width = input.shape
    new_h, new_w = height // kh, width // kw
    # Split H into (new_h, kh) and W into (new_w, kw), then bring kh next to kw: one
    # copy lays each block's (kh, kw) pair out contiguous as kh*kw.
    t = _contiguous(input).view(batch, channel, new_h, kh, new_w, kw)
    t = t.permute(0, 1, 2, 4, 3, 5).contiguous()
    return t.view(batch, channel, new_h, new_w, kh * kw), new_h, new_w


def avgpool2d(input: Tensor, kernel: tuple[int, int]) -> Tensor:
    """Mean over each ``kh x kw`` block, starting top-left: ``(B, C, H/kh, W/kw)``.

    One kernel pass each way (``fast_pool``): the same values as ``tile`` and a mean.
    """
    return AvgPool2dFun.apply(input, *pool_sizes(input, kernel, "avgpool2d"))


def maxpool2d(input: Tensor, kernel: tuple[int, int]) -> Tensor:
    """Maximum over each ``kh x kw`` block, starting top-left: ``(B, C, H/kh, W/kw)``.

    One kernel pass each way (``fast_pool``): the values and gradient of ``tile`` and
    ``max``, NaN-propagating.
    """
    return MaxPool2dFun.apply(input, *pool_sizes(input, kernel, "maxpool2d"))


# Max, argmax, softmax ----------------------------------------------------------


def argmax(input: Tensor, dim: int) -> Tensor:
    """1.0 where an element equals the maximum of its slice along ``dim``, else 0.0.

    Ties give several ones in a slice.
    """
    return input.f.eq_zip(input, max_reduce(input, dim))


def max(input: Tensor, dim: int) -> Tensor:  # noqa: A001 - course API name
    """Differentiable maximum along ``dim``, which stays at size 1."""
    check_reduce_dim(input, dim)  # refuse a bool or fractional dim before it becomes a tensor
    return Max.apply(input, input._ensure_tensor(dim))


def softmax(input: Tensor, dim: int) -> Tensor:
    """``exp(x) / sum(exp(x))`` along ``dim``; same shape, slices sum to 1.

    The per-slice max is subtracted first so ``exp`` cannot overflow
    (``Tensor.softmax``).
    """
    return input.softmax(dim)


def logsoftmax(input: Tensor, dim: int) -> Tensor:
    """``x - log(sum(exp(x)))`` along ``dim``, computed stably (``Tensor.log_softmax``).

    After subtracting the per-slice max the sum is at least 1, so ``log``'s EPS
    is negligible even for inputs near -100.
    """
    return input.log_softmax(dim)


# Dropout -----------------------------------------------------------------------


def dropout(input: Tensor, rate: float, ignore: bool = False) -> Tensor:
    """Zero each element with probability ``rate``; no rescaling of the survivors.

    ``ignore=True`` (evaluation) or ``rate == 0`` returns ``input`` unchanged. The
    mask comes from Python's ``random`` (via ``rand``), so seeds repeat.
    """
    rate = float(rate)
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"dropout rate must lie in [0, 1], not {rate}.")
    if ignore or rate == 0.0:
        return input
    # rand is in [0, 1): P(r > rate) = 1 - rate, and nothing survives rate 1.
    keep = rand(input.shape, backend=input.backend, dtype=input.dtype) > rate
    return input * keep


# Losses ------------------------------------------------------------------------


def one_hot(target: Tensor, num_classes: int, dtype: Any = None) -> Tensor:
    """``(B,)`` class indices (stored as floats) to a ``(B, num_classes)`` 0/1 tensor,
    in ``dtype`` (default: the target's)."""
    if target.dims != 1:
        raise IndexingError(f"Class targets must have shape (B,), not {target.shape}.")
    td = target._tensor
    check = (td._storage, td.shape, td.strides, num_classes)
    _check_class_targets(*check)
    if recording.recorder is not None:
        recording.recorder.check(_check_class_targets, check)
    # A (B, 1) view of the targets against a (1, C) row of class numbers.
    column = target._new(
        TensorData._trusted(td._storage, (td.size, 1), (td.strides[0], 1), td.size, td._offset)
    )
    classes = tensor_from_numpy(
        np.arange(num_classes, dtype=target.dtype), backend=target.backend, dtype=target.dtype
    )
    hot = target.f.eq_zip(column, classes.view(1, num_classes))
    return hot if dtype is None or np.dtype(dtype) == hot.dtype else hot.to(dtype)


def _check_class_targets(
    storage: Storage, shape: tuple[int, ...], strides: tuple[int, ...], num_classes: int
) -> None:
    """Raise unless the targets are whole numbers in ``[0, num_classes)``."""
    labels = TensorData._trusted(storage, shape, strides, shape[0]).to_numpy()
    # One pass (NaN fails every comparison): 17 -> 6 us for a batch of 32, against an
    # int cast and three separate tests (it runs on every training step, and replay).
    if not ((labels >= 0) & (labels < num_classes) & (labels == np.trunc(labels))).all():
        raise ValueError(
            f"Class targets must be whole numbers in [0, {num_classes}), got {labels.tolist()}."
        )


def nll_loss(logprobs: Tensor, target: Tensor) -> Tensor:
    """Mean negative log-likelihood of the target classes, shape ``(1,)``.

    ``logprobs`` is ``(B, C)`` log-probabilities; ``target`` is ``(B,)`` class
    indices stored as floats (PyTorch's ``nll_loss`` with the default mean).
    """
    if logprobs.dims != 2:
        raise IndexingError(f"nll_loss needs (B, C) log-probabilities, not {logprobs.shape}.")
    batch, classes = logprobs.shape
    if target.shape != (batch,):
        raise IndexingError(f"Targets of shape {target.shape} do not match batch size {batch}.")
    return -(logprobs * one_hot(target, classes, logprobs.dtype)).sum() / batch


def cross_entropy(logits: Tensor, target: Tensor) -> Tensor:
    """Mean softmax cross-entropy of ``(B, C)`` logits against ``(B,)`` class indices."""
    if logits.dims != 2:
        raise IndexingError(f"cross_entropy needs (B, C) logits, not {logits.shape}.")
    return nll_loss(logsoftmax(logits, 1), target)


def binary_cross_entropy(probs: Tensor, target: Tensor) -> Tensor:
    """Mean of ``-(t log p + (1 - t) log(1 - p))``, shape ``(1,)``.

    ``probs`` and ``target`` have the same shape; ``log``'s EPS keeps p = 0 or 1
    finite (about -13.8 instead of -inf).
    """
    if probs.shape != target.shape:
        raise IndexingError(
            f"binary_cross_entropy needs equal shapes, got {probs.shape} and {target.shape}."
        )
    return -(target * probs.log() + (1.0 - target) * (1.0 - probs).log()).mean()
