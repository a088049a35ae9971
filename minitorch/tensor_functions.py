"""Differentiable tensor functions, and the factories that make tensors.

Each function is a class with static ``forward`` and ``backward``; ``apply``
runs forward on detached inputs and records a ``History`` only when some
input tracks gradients, so inference pays nothing for autodiff.
"""

from __future__ import annotations

import random
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from . import operators
from .autodiff import Context
from .tensor_data import (
    MAX_DIMS,
    IndexingError,
    TensorData,
    as_int,
    as_storage,
    check_allocation,
    check_shape,
    strides_from_shape,
)
from .tensor_ops import SimpleBackend, TensorBackend, check_backend, check_reduce_dim

if TYPE_CHECKING:
    from .tensor import Tensor


@dataclass
class History:
    """How a tensor was made: the function, its context and its inputs."""

    last_fn: type[Function] | None = None
    ctx: Context | None = None
    inputs: Sequence[Any] = ()


_TENSOR: Any = None


def _tensor_class() -> type[Tensor]:
    """The Tensor class, imported late: tensor.py sits above this module."""
    global _TENSOR
    from .tensor import Tensor

    _TENSOR = Tensor
    return Tensor


class Function:
    """Base class of differentiable functions; never instantiated."""

    @classmethod
    def _backward(cls, ctx: Context, grad_out: Tensor) -> tuple[Any, ...]:
        grads = cls.backward(ctx, grad_out)  # type: ignore[attr-defined]
        return grads if isinstance(grads, tuple) else (grads,)

    @classmethod
    def _forward(cls, ctx: Context, *inps: Any) -> Tensor:
        return cls.forward(ctx, *inps)  # type: ignore[attr-defined]

    @classmethod
    def apply(cls, *vals: Any) -> Tensor:
        """Run forward; attach history when any tensor input tracks gradients.

        Non-tensor arguments (ints, tuples) pass through as constants. Forward
        sees every input detached: a tensor without history already is, so only
        the ones that track gradients are wrapped afresh.
        """
        Tensor = _TENSOR or _tensor_class()
        for v in vals:
            if isinstance(v, Tensor) and v.history is not None:
                break
        else:
            return _fresh_result(cls.forward(Context(True), *vals), vals)  # type: ignore[attr-defined]
        raw = [v.detach() if isinstance(v, Tensor) and v.history is not None else v for v in vals]
        ctx = Context(False)
        c = _fresh_result(cls.forward(ctx, *raw), vals)  # type: ignore[attr-defined]
        c.history = History(cls, ctx, vals)
        return c


def _fresh_result(c: Tensor, vals: tuple[Any, ...]) -> Tensor:
    """A forward that hands back one of its inputs gets a new tensor over the same data,
    so recording history never touches the caller's tensor."""
    for v in vals:
        if c is v:
            return c.detach()
    return c


def _needs_grad(ctx: Context, i: int) -> bool:
    """Whether input ``i`` needs its gradient (unknown, when backward is called by hand: yes)."""
    needs = ctx.needs_input_grad
    return not needs or needs[i]


def _as_ints(value: Any, what: str) -> tuple[int, ...]:
    """An order or shape given as ints or as a tensor of whole numbers (the course's form)."""
    if isinstance(value, (tuple, list)):
        for v in value:
            if v.__class__ is not int:
                return tuple(as_int(v, what) for v in value)
        return tuple(value)
    if not hasattr(value, "to_numpy"):
        raise TypeError(f"{what} must be a sequence of ints, not {value!r}.")
    values = value.to_numpy().reshape(-1).tolist()
    for v in values:
        if not float(v).is_integer():
            raise TypeError(f"{what} must hold whole numbers, got {values}.")
    return tuple(int(v) for v in values)


class Neg(Function):
    @staticmethod
    def forward(ctx: Context, t1: Tensor) -> Tensor:
        return t1.f.neg_map(t1)

    @staticmethod
    def backward(ctx: Context, grad_output: Tensor) -> Tensor:
        return grad_output.f.neg_map(grad_output)


class Inv(Function):
    @staticmethod
    def forward(ctx: Context, t1: Tensor) -> Tensor:
        ctx.save_for_backward(t1)
        return t1.f.inv_map(t1)

    @staticmethod
    def backward(ctx: Context, grad_output: Tensor) -> Tensor:
        (t1,) = ctx.saved_values
        return grad_output.f.inv_back_zip(t1, grad_output)


class Add(Function):
    @staticmethod
    def forward(ctx: Context, t1: Tensor, t2: Tensor) -> Tensor:
        return t1.f.add_zip(t1, t2)

    @staticmethod
    def backward(ctx: Context, grad_output: Tensor) -> tuple[Tensor, Tensor]:
        return grad_output, grad_output


class Sub(Function):
    @staticmethod
    def forward(ctx: Context, t1: Tensor, t2: Tensor) -> Tensor:
        return t1.f.zip_of(operators.sub)(t1, t2)

    @staticmethod
    def backward(ctx: Context, grad_output: Tensor) -> tuple[Tensor, Any]:
        if not _needs_grad(ctx, 1):
            return grad_output, 0.0
        return grad_output, grad_output.f.neg_map(grad_output)


class Mul(Function):
    @staticmethod
    def forward(ctx: Context, a: Tensor, b: Tensor) -> Tensor:
        ctx.save_for_backward(a, b)
        return a.f.mul_zip(a, b)

    @staticmethod
    def backward(ctx: Context, grad_output: Tensor) -> tuple[Any, Any]:
        a, b = ctx.saved_values
        mul = grad_output.f.mul_zip
        return (
            mul(grad_output, b) if _needs_grad(ctx, 0) else 0.0,
            mul(grad_output, a) if _needs_grad(ctx, 1) else 0.0,
        )


class Sigmoid(Function):
    @staticmethod
    def forward(ctx: Context, t1: Tensor) -> Tensor:
        out = t1.f.sigmoid_map(t1)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx: Context, grad_output: Tensor) -> Tensor:
        (out,) = ctx.saved_values
        return grad_output.f.zip_of(operators.sigmoid_back_from_output)(out, grad_output)


class ReLU(Function):
    @staticmethod
    def forward(ctx: Context, t1: Tensor) -> Tensor:
        ctx.save_for_backward(t1)
        return t1.f.relu_map(t1)

    @staticmethod
    def backward(ctx: Context, grad_output: Tensor) -> Tensor:
        (t1,) = ctx.saved_values
        return grad_output.f.relu_back_zip(t1, grad_output)


class Log(Function):
    @staticmethod
    def forward(ctx: Context, t1: Tensor) -> Tensor:
        ctx.save_for_backward(t1)
        return t1.f.log_map(t1)

    @staticmethod
    def backward(ctx: Context, grad_output: Tensor) -> Tensor:
        (t1,) = ctx.saved_values
        return grad_output.f.log_back_zip(t1, grad_output)


class Exp(Function):
    @staticmethod
    def forward(ctx: Context, t1: Tensor) -> Tensor:
        out = t1.f.exp_map(t1)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx: Context, grad_output: Tensor) -> Tensor:
        (out,) = ctx.saved_values
        return grad_output.f.mul_zip(grad_output, out)


def _reduce_all(a: Tensor, reduce: Any) -> Tensor:
    """Reduce every element into shape (1,)."""
    flat = a if a.dims == 1 else a.contiguous()._flat()
    return reduce(flat, 0)


class Sum(Function):
    @staticmethod
    def forward(ctx: Context, a: Tensor, dim: Any = None) -> Tensor:
        ctx.save_for_backward(a.shape)
        if dim is None:
            return _reduce_all(a, a.f.add_reduce)
        return a.f.add_reduce(a, check_reduce_dim(a, dim))

    @staticmethod
    def backward(ctx: Context, grad_output: Tensor) -> tuple[Tensor, float]:
        (shape,) = ctx.saved_values
        # The reduced dim has size 1 (or the whole tensor was reduced to (1,)):
        # broadcasting the gradient back out is a copy into the input's shape.
        out = grad_output.zeros(shape)
        return grad_output.f.id_map(grad_output, out), 0.0


class All(Function):
    @staticmethod
    def forward(ctx: Context, a: Tensor, dim: Any = None) -> Tensor:
        if dim is None:
            return _reduce_all(a, a.f.mul_reduce)
        return a.f.mul_reduce(a, check_reduce_dim(a, dim))


class LT(Function):
    @staticmethod
    def forward(ctx: Context, a: Tensor, b: Tensor) -> Tensor:
        ctx.save_for_backward(a.shape, b.shape)
        return a.f.lt_zip(a, b)

    @staticmethod
    def backward(ctx: Context, grad_output: Tensor) -> tuple[Tensor, Tensor]:
        a_shape, b_shape = ctx.saved_values
        return grad_output.zeros(a_shape), grad_output.zeros(b_shape)


class EQ(Function):
    @staticmethod
    def forward(ctx: Context, a: Tensor, b: Tensor) -> Tensor:
        ctx.save_for_backward(a.shape, b.shape)
        return a.f.eq_zip(a, b)

    @staticmethod
    def backward(ctx: Context, grad_output: Tensor) -> tuple[Tensor, Tensor]:
        a_shape, b_shape = ctx.saved_values
        return grad_output.zeros(a_shape), grad_output.zeros(b_shape)


class IsClose(Function):
    @staticmethod
    def forward(ctx: Context, a: Tensor, b: Tensor) -> Tensor:
        return a.f.is_close_zip(a, b)


class Permute(Function):
    @staticmethod
    def forward(ctx: Context, a: Tensor, order: Any) -> Tensor:
        order = _as_ints(order, "A permutation")
        ctx.save_for_backward(order)
        return a._new(a._tensor.permute(*order))

    @staticmethod
    def backward(ctx: Context, grad_output: Tensor) -> tuple[Tensor, float]:
        (order,) = ctx.saved_values
        inverse = [0] * len(order)
        for i, o in enumerate(order):
            inverse[o] = i
        return grad_output._new(grad_output._tensor.permute(*inverse)), 0.0


class View(Function):
    @staticmethod
    def forward(ctx: Context, a: Tensor, shape: Any) -> Tensor:
        # Reinterpreting the storage as another shape needs a row-major layout:
        # a broadcast (stride 0) or gapped layout would read the wrong elements.
        if not a._tensor.is_row_major():
            raise IndexingError(
                f"view needs a contiguous tensor (shape {a.shape}, strides "
                f"{a._tensor.strides}); call .contiguous() first."
            )
        shape = _resolve_view_shape(a.size, _as_ints(shape, "A view shape"))
        ctx.save_for_backward(a.shape)
        return a._new(
            TensorData._trusted(a._tensor._storage, shape, strides_from_shape(shape), a.size)
        )

    @staticmethod
    def backward(ctx: Context, grad_output: Tensor) -> tuple[Tensor, float]:
        (original,) = ctx.saved_values
        g = grad_output if grad_output._tensor.is_row_major() else grad_output.contiguous()
        return (
            g._new(
                TensorData._trusted(
                    g._tensor._storage, original, strides_from_shape(original), g.size
                )
            ),
            0.0,
        )


def _resolve_view_shape(size: int, shape: tuple[int, ...]) -> tuple[int, ...]:
    """Fill in one -1 and check the element count (and the dims, as for any shape)."""
    if shape.count(-1) > 1:
        raise IndexingError(f"view shape {shape} may hold at most one -1.")
    known = 1
    for s in shape:
        if s != -1:
            if s < 0:
                raise IndexingError(f"view shape {shape} has a negative dimension.")
            known *= s
    if -1 in shape:
        if known == 0 or size % known:
            raise IndexingError(f"Cannot view {size} elements as {shape}.")
        shape = tuple(size // known if s == -1 else s for s in shape)
    elif known != size:
        raise IndexingError(f"Cannot view {size} elements as {shape} ({known} elements).")
    if size == 0 or len(shape) > MAX_DIMS:
        check_shape(shape)  # too many dims, or a huge dim beside a 0
    return shape


class Copy(Function):
    @staticmethod
    def forward(ctx: Context, a: Tensor) -> Tensor:
        return a.f.id_map(a)

    @staticmethod
    def backward(ctx: Context, grad_output: Tensor) -> Tensor:
        return grad_output


class ToBackend(Function):
    """Move a tensor to another backend; the gradient moves back."""

    @staticmethod
    def forward(ctx: Context, t: Tensor, backend: TensorBackend) -> Tensor:
        ctx.save_for_backward(t.backend)
        return move_to_backend(t, backend)

    @staticmethod
    def backward(ctx: Context, grad_output: Tensor) -> tuple[Tensor, float]:
        (backend,) = ctx.saved_values
        return move_to_backend(grad_output, backend), 0.0


def move_to_backend(t: Tensor, backend: TensorBackend) -> Tensor:
    """The same values on ``backend``: a host copy off the GPU, a device copy onto it."""
    if t.backend is backend:
        return t
    td = t._tensor
    if t.backend.cuda and not backend.cuda:
        return _tensor_class().make(td.to_numpy().reshape(-1), td.shape, backend=backend)
    # A TensorData of its own, so moving it to the GPU leaves t's storage where it is.
    moved = _tensor_class()(TensorData._trusted(td._storage, td.shape, td.strides, td.size))
    moved._type_(backend)
    return moved


class MatMul(Function):
    @staticmethod
    def forward(ctx: Context, t1: Tensor, t2: Tensor) -> Tensor:
        ctx.save_for_backward(t1, t2)
        return t1.f.matrix_multiply(t1, t2)

    @staticmethod
    def backward(ctx: Context, grad_output: Tensor) -> tuple[Any, Any]:
        t1, t2 = ctx.saved_values
        mm = grad_output.f.matrix_multiply
        return (
            mm(grad_output, _transpose(t2)) if _needs_grad(ctx, 0) else 0.0,
            mm(_transpose(t1), grad_output) if _needs_grad(ctx, 1) else 0.0,
        )


def _transpose(a: Tensor) -> Tensor:
    order = list(range(a.dims))
    order[-2], order[-1] = order[-1], order[-2]
    return a._new(a._tensor.permute(*order))


# Factories ---------------------------------------------------------------------


def zeros(shape: Sequence[int], backend: TensorBackend = SimpleBackend) -> Tensor:
    """A tensor of zeros."""
    shape = check_shape(shape)
    check_backend(backend)
    return _tensor_class().make(np.zeros(check_allocation(shape)), shape, backend=backend)


def ones(shape: Sequence[int], backend: TensorBackend = SimpleBackend) -> Tensor:
    """A tensor of ones."""
    shape = check_shape(shape)
    check_backend(backend)
    return _tensor_class().make(np.ones(check_allocation(shape)), shape, backend=backend)


def rand(
    shape: Sequence[int], backend: TensorBackend = SimpleBackend, requires_grad: bool = False
) -> Tensor:
    """Uniform on [0, 1), drawn from Python's ``random`` so seeds repeat."""
    shape = check_shape(shape)
    check_backend(backend)
    values = uniform(check_allocation(shape))
    t = _tensor_class().make(values, shape, backend=backend)
    # As in the course, the flag is ignored: the result is a leaf that tracks gradients.
    t.requires_grad_(requires_grad)
    return t


# Words of random bits drawn per call to getrandbits (bounds its temporary memory).
_RAND_CHUNK = 1 << 16


def uniform(n: int) -> np.ndarray:
    """``n`` draws of ``random.random()``, bit for bit, without a Python loop per draw.

    ``random.random()`` builds each double from two 32-bit Mersenne Twister
    words a, b as ``((a >> 5) * 2**26 + (b >> 6)) / 2**53``; ``getrandbits(64 * k)``
    returns the next 2k words, the first drawn in the lowest bits. So the stream
    (and what seeds reproduce) is exactly that of ``n`` calls.
    """
    out = np.empty(n)
    for start in range(0, n, _RAND_CHUNK):
        k = min(_RAND_CHUNK, n - start)
        bits = random.getrandbits(64 * k).to_bytes(8 * k, "little")
        words = np.frombuffer(bits, dtype="<u4").astype(np.uint64)
        mantissa = (words[0::2] >> 5) * 67108864 + (words[1::2] >> 6)
        out[start : start + k] = mantissa * (1.0 / 9007199254740992.0)
    return out


def _tensor(
    ls: Any,
    shape: Sequence[int],
    backend: TensorBackend = SimpleBackend,
    requires_grad: bool = False,
) -> Tensor:
    """A tensor from a flat list of values and a shape."""
    t = _tensor_class().make(as_storage(ls), shape, backend=backend)
    t.requires_grad_(requires_grad)  # always a leaf, as in the course
    return t


def tensor(ls: Any, backend: TensorBackend = SimpleBackend, requires_grad: bool = False) -> Tensor:
    """A tensor from nested lists or tuples (or a number), shape inferred from the nesting."""
    t = tensor_from_numpy(ls, backend=backend)
    t.requires_grad_(requires_grad)  # always a leaf, as in the course
    return t


def tensor_from_numpy(
    array: Any, backend: TensorBackend = SimpleBackend, requires_grad: bool = False
) -> Tensor:
    """A tensor holding a float64 copy of a NumPy array (no per-element Python work)."""
    check_backend(backend)
    try:
        values = np.asarray(array)
    except ValueError as e:
        raise ValueError(f"Tensor values must be a rectangular nesting of numbers: {e}") from None
    storage = as_storage(values)
    if np.may_share_memory(storage, values):
        storage = storage.copy()
    shape = values.shape if values.ndim else (1,)
    t = _tensor_class().make(storage, shape, backend=backend)
    if requires_grad:
        t.requires_grad_(True)
    return t


# Gradient checking ---------------------------------------------------------------


def grad_central_difference(
    f: Any, *vals: Tensor, arg: int = 0, epsilon: float = 1e-6, ind: tuple[int, ...]
) -> float:
    """Central difference of ``f(*vals).sum()`` in one element of argument ``arg``."""
    up, down = _perturbed_sums(f, vals, arg, ind, epsilon)
    return (up - down) / (2.0 * epsilon)


def _perturbed_sums(
    f: Any, vals: Sequence[Tensor], arg: int, ind: tuple[int, ...], epsilon: float
) -> tuple[float, float]:
    """``f(*vals).sum()`` with element ``ind`` of argument ``arg`` moved up, and down,
    by ``epsilon``."""
    x = vals[arg]
    step = x.zeros(x.shape)
    step[ind] = epsilon
    up = f(*[v if j != arg else v + step for j, v in enumerate(vals)]).sum()
    down = f(*[v if j != arg else v - step for j, v in enumerate(vals)]).sum()
    return up[0], down[0]


# Indices grad_check tries per input before saying the function is not differentiable.
GRAD_CHECK_TRIES = 10


def grad_check(f: Any, *vals: Tensor) -> None:
    """Check autodiff gradients of ``f`` against central differences at a random element.

    A mismatch at a point where ``f`` is not differentiable (its value jumps, or
    its slope changes, across the step) says nothing about autodiff: there the
    one-sided differences disagree too, so another index is sampled; when none
    of ``GRAD_CHECK_TRIES`` is differentiable, a warning says so instead of a
    false failure.
    """
    for x in vals:
        x.requires_grad_(True)
        x.zero_grad_()
    random.seed(10)
    total = f(*vals).sum()
    total.backward()
    epsilon = 1e-6
    err_msg = """

Gradient check error for function %s.

Input %s

Received derivative %f for argument %d and index %s,
but was expecting derivative %f from central difference.

"""
    for i, x in enumerate(vals):
        if x.size == 0:
            continue
        assert x.grad is not None
        tried: list[tuple[int, ...]] = []
        while len(tried) < min(GRAD_CHECK_TRIES, x.size):
            ind = x._tensor.sample()
            if ind in tried:
                continue
            tried.append(ind)
            # The two sums of grad_central_difference, kept for the one-sided check.
            up, down = _perturbed_sums(f, vals, i, ind, epsilon)
            check = (up - down) / (2.0 * epsilon)
            if _close(x.grad[ind], check):
                break
            left, right = (total[0] - down) / epsilon, (up - total[0]) / epsilon
            if _close(left, right):  # differentiable here: a real mismatch
                np.testing.assert_allclose(
                    x.grad[ind],
                    check,
                    1e-2,
                    1e-2,
                    err_msg=err_msg % (f, vals, x.grad[ind], i, ind, check),
                )
        else:
            warnings.warn(
                f"grad_check: {f} is not differentiable in argument {i} at the indices "
                f"tried ({tried}); that argument's gradient was not checked.",
                stacklevel=2,
            )


def _close(a: float, b: float) -> bool:
    """Equal within grad_check's tolerance (NaNs equal, as assert_allclose has it)."""
    return bool(np.isclose(a, b, rtol=1e-2, atol=1e-2, equal_nan=True))


# User-defined operators -----------------------------------------------------------


def unary_op(
    fn: Callable[[float], float],
    derivative: Callable[[float], float] | None = None,
    name: str | None = None,
) -> Callable[[Tensor], Tensor]:
    """Turn a scalar function (and its derivative) into a differentiable tensor op.

    ``fn(x)`` and ``derivative(x)`` are plain Python functions of one float that
    use arithmetic, ``math`` and if/else; every backend compiles them with the
    same machinery as the built-in operators (FastOps kernels, CUDA device
    functions). Without ``derivative`` the op is not differentiable::

        def softplus(x):
            return math.log(1.0 + math.exp(x))

        def softplus_grad(x):
            return 1.0 / (1.0 + math.exp(-x))

        op = minitorch.unary_op(softplus, softplus_grad)
        y = op(t)  # forward and backward on t's backend
    """

    def forward(ctx: Context, t: Tensor) -> Tensor:
        ctx.save_for_backward(t)
        return t.f.map_of(fn)(t)

    def backward(ctx: Context, grad_output: Tensor) -> Tensor:
        if derivative is None:
            raise RuntimeError(f"{op_name} was defined without a derivative: it cannot backprop.")
        (t,) = ctx.saved_values
        local = grad_output.f.map_of(derivative)(t)
        return grad_output.f.mul_zip(local, grad_output)

    op_name = name or getattr(fn, "__name__", "unary_op")
    function = type(
        op_name, (Function,), {"forward": staticmethod(forward), "backward": staticmethod(backward)}
    )

    def apply(t: Tensor) -> Tensor:
        return function.apply(t)

    apply.__name__ = op_name
    apply.__doc__ = fn.__doc__
    return apply


def binary_op(
    fn: Callable[[float, float], float],
    d_first: Callable[[float, float], float] | None = None,
    d_second: Callable[[float, float], float] | None = None,
    name: str | None = None,
) -> Callable[[Tensor, Any], Tensor]:
    """Turn a scalar function of two floats into a broadcasting, differentiable tensor op.

    ``d_first(x, y)`` and ``d_second(x, y)`` are the partial derivatives of
    ``fn`` in its first and second argument (see ``unary_op``).
    """

    def forward(ctx: Context, a: Tensor, b: Tensor) -> Tensor:
        ctx.save_for_backward(a, b)
        return a.f.zip_of(fn)(a, b)

    def backward(ctx: Context, grad_output: Tensor) -> tuple[Tensor, Tensor]:
        if d_first is None or d_second is None:
            raise RuntimeError(f"{op_name} was defined without derivatives: it cannot backprop.")
        a, b = ctx.saved_values
        f = grad_output.f
        return (
            f.mul_zip(f.zip_of(d_first)(a, b), grad_output),
            f.mul_zip(f.zip_of(d_second)(a, b), grad_output),
        )

    op_name = name or getattr(fn, "__name__", "binary_op")
    function = type(
        op_name, (Function,), {"forward": staticmethod(forward), "backward": staticmethod(backward)}
    )

    def apply(a: Tensor, b: Any) -> Tensor:
        return function.apply(a, a._ensure_tensor(b))

    apply.__name__ = op_name
    apply.__doc__ = fn.__doc__
    return apply
