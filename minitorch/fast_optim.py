"""Optimiser updates as fused FastOps kernels: Adam in three instead of thirteen
launches, SGD in one (two with momentum) instead of two (four).

An optimiser step on small parameters is launch overhead: Adam's rule, written
over tensors, is thirteen kernels per parameter (``optim.Adam``), each a few
microseconds of Python for a few thousand elements, and each SGD step writes a
temporary the size of the parameter. These kernels compute the
same operations element by element, in the same order and the parameter's
dtype, with no contraction into fused multiply-adds, so the values are bit for
bit those of the unfused step. Each writes only its first argument, as every
launch a compiled step records must (``compiler``), and reads its numbers from
one-element arrays (the optimiser's coefficient tensors), which a replayed step
refills.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
from numba import prange

from .kernel_cache import kernel_pair
from .tensor_data import Storage


def _first_moment(m, grad, b1, c1):  # noqa: ANN001, ANN202
    """``m = m * b1 + grad * c1``."""
    decay, weight = b1[0], c1[0]
    for i in prange(len(m)):
        m[i] = m[i] * decay + grad[i] * weight


def _second_moment(v, grad, b2, c2):  # noqa: ANN001, ANN202
    """``v = v * b2 + (grad * grad) * c2``."""
    decay, weight = b2[0], c2[0]
    for i in prange(len(v)):
        g = grad[i]
        v[i] = v[i] * decay + (g * g) * weight


def _adam_move(value, m, v, v_scale, eps, step_size):  # noqa: ANN001, ANN202
    """``value -= (m * (1 / (sqrt(v) * v_scale + eps))) * step_size``: ``m / denom``
    is a product with the reciprocal, as tensor division computes it."""
    scale, tiny, step = v_scale[0], eps[0], step_size[0]
    one = value.dtype.type(1)
    for i in prange(len(value)):
        denom = math.sqrt(v[i]) * scale + tiny
        value[i] = value[i] - m[i] * (one / denom) * step


def _scaled_step(value, delta, scale):  # noqa: ANN001, ANN202
    """``value -= delta * scale`` (SGD's move)."""
    factor = scale[0]
    for i in prange(len(value)):
        value[i] = value[i] - delta[i] * factor


def _decay_add(velocity, grad, momentum):  # noqa: ANN001, ANN202
    """``velocity = velocity * momentum + grad``."""
    decay = momentum[0]
    for i in prange(len(velocity)):
        velocity[i] = velocity[i] * decay + grad[i]


_FIRST_MOMENT = kernel_pair(_first_moment, error_model="numpy")
_SECOND_MOMENT = kernel_pair(_second_moment, error_model="numpy")
_ADAM_MOVE = kernel_pair(_adam_move, error_model="numpy")
_SCALED_STEP = kernel_pair(_scaled_step, error_model="numpy")
_DECAY_ADD = kernel_pair(_decay_add, error_model="numpy")


def _adam_move_numpy(value, m, v, v_scale, eps, step_size):  # noqa: ANN001, ANN202
    one = value.dtype.type(1)
    denom = np.sqrt(v) * v_scale[0] + eps[0]
    np.subtract(value, m * (one / denom) * step_size[0], out=value)


# Each rule in NumPy, keyed by its serial kernel: the same operations in the same order
# and arithmetic, so the same bits. They stand in for a serial kernel's first launches,
# as FastOps' elementwise forms do (``fast_ops.STAND_IN_CALLS``).
NUMPY_FORMS: dict[Any, Callable[..., Any]] = {
    _FIRST_MOMENT[1]: lambda m, grad, b1, c1: np.add(m * b1[0], grad * c1[0], out=m),
    _SECOND_MOMENT[1]: lambda v, grad, b2, c2: np.add(v * b2[0], (grad * grad) * c2[0], out=v),
    _ADAM_MOVE[1]: _adam_move_numpy,
    _SCALED_STEP[1]: lambda value, delta, scale: np.subtract(value, delta * scale[0], out=value),
    _DECAY_ADD[1]: lambda velocity, grad, momentum: np.add(
        velocity * momentum[0], grad, out=velocity
    ),
}


def adam_update(launch: Callable[..., None], value: Storage, grad: Storage, m: Storage,
                v: Storage, coefficients: tuple[Storage, ...]) -> None:  # fmt: skip
    """One Adam step on contiguous storages of one length and dtype, in place.

    ``coefficients`` are the one-element storages of ``(b1, 1 - b1, b2, 1 - b2,
    v_scale, eps, step_size)`` (see ``optim.Adam``). ``launch(kernels, out, *args)``
    runs each kernel (``kernel_cache.launch_into`` or a stand-in).
    """
    b1, c1, b2, c2, v_scale, eps, step_size = coefficients
    launch(_FIRST_MOMENT, m, grad, b1, c1)
    launch(_SECOND_MOMENT, v, grad, b2, c2)
    launch(_ADAM_MOVE, value, m, v, v_scale, eps, step_size)


def sgd_update(launch: Callable[..., None], value: Storage, grad: Storage,
               velocity: Storage | None, coefficients: tuple[Storage, ...]) -> None:  # fmt: skip
    """One SGD step on contiguous storages of one length and dtype, in place:
    ``value -= grad * lr``, or with a ``velocity`` (momentum kept from an earlier
    step) ``velocity = velocity * momentum + grad; value -= velocity * lr``.
    ``coefficients`` are the one-element storages of ``(lr,)`` or ``(lr, momentum)``;
    ``launch`` as for ``adam_update``.
    """
    if velocity is None:
        launch(_SCALED_STEP, value, grad, coefficients[0])
        return
    lr, momentum = coefficients
    launch(_DECAY_ADD, velocity, grad, momentum)
    launch(_SCALED_STEP, value, velocity, lr)
