"""Differentiable tensor functions, and the factories that make tensors.

Each function is a class with static ``forward`` and ``backward``; ``apply``
runs forward on detached inputs and records a ``History`` only when some
input tracks gradients, so inference pays nothing for autodiff.
"""

from __future__ import annotations

import math
import random
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from . import autodiff, operators, recording
from .autodiff import Context
from .tensor_data import (
    DTYPES,
    MAX_DIMS,
    IndexingError,
    KeyEntry,
    TensorData,
    as_dtype,
    as_int,
    as_storage,
    check_allocation,
    check_shape,
    key_layout,
    strides_from_shape,
)
from .tensor_ops import SimpleBackend, TensorBackend, check_backend, check_reduce_dim

if TYPE_CHECKING:
    from .tensor import Tensor


@dataclass(slots=True)
class History:
    """How a tensor was made: the function, its context and its inputs."""

    last_fn: type[Function] | None = None
    ctx: Context | None = None
    inputs: Sequence[Any] = ()


_TENSOR: Any = None


def _tensor_class() -> type[Tensor]:
    """The Tensor class, imported late (tensor.py sits above this module), once."""
    global _TENSOR
    if _TENSOR is None:
        from .tensor import Tensor

        _TENSOR = Tensor
    return _TENSOR


class Function:
    """Base class of differentiable functions; never instantiated."""

    # Whether forward sees its inputs detached (the course's rule: anything forward
    # does to them records no history), and may return one of them (which then gets
    # a new tensor: see _fresh_result). The built-in functions whose forward only
    # hands its inputs to backend kernels and views, which never record and always
    # make a new tensor, take them as they are and skip both steps.
    _detach_inputs = True

    def __init_subclass__(cls, **kwargs: Any) -> None:
        # A subclass (a user's, of a built-in one too) detaches unless it says otherwise.
        super().__init_subclass__(**kwargs)
        if "_detach_inputs" not in cls.__dict__:
            cls._detach_inputs = True

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
        if recording.recorder is not None:
            recording.recorder.function(cls, vals)
        # Only a forward that may see its inputs (a user's) may also hand one back.
        detach = cls._detach_inputs
        for v in vals:
            if isinstance(v, Tensor) and v.history is not None:
                break
        else:
            c = cls.forward(Context(True), *vals)  # type: ignore[attr-defined]
            return _fresh_result(c, vals) if detach else c
        raw = (
            [v.detach() if isinstance(v, Tensor) and v.history is not None else v for v in vals]
            if detach
            else vals
        )
        if not autodiff._grad_enabled:  # inside no_grad()
            c = cls.forward(Context(True), *raw)  # type: ignore[attr-defined]
            return _fresh_result(c, vals) if detach else c
        # Each op makes a Context and a History: both without their dataclass ``__init__``
        # (the context's fields keep the class's defaults, as ``Context(False)`` sets them).
        ctx = _alloc(Context)
        c = cls.forward(ctx, *raw)  # type: ignore[attr-defined]
        if detach:
            c = _fresh_result(c, vals)
            _keep_result_without_history(ctx, c)
        c.history = history = _alloc(History)  # History(cls, ctx, vals)
        history.last_fn = cls
        history.ctx = ctx
        history.inputs = vals
        return c


def _keep_result_without_history(ctx: Context, c: Tensor) -> None:
    """A forward that saves its own result (a user's, as the course's sigmoid does) would
    make a cycle, result -> history -> context -> result, holding the graph behind it
    (every activation of a step) until Python's cycle collector ran: the context keeps
    the same data without the history instead. (Only for functions that see detached
    inputs, users' among them; minitorch's others save ``out.detach()`` themselves: made
    in every op, the check cost 843 of the 21,800 instructions of ``a + b``.)"""
    saved = ctx.saved_values
    for v in saved:
        if v is c:  # (by identity: ``in`` would compare tensors with ``==``)
            ctx.saved_values = tuple(c.detach() if s is c else s for s in saved)
            return


_alloc = object.__new__  # an instance, without running its class's __init__ (tensor.py uses it too)


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
    _detach_inputs = False

    @staticmethod
    def forward(ctx: Context, t1: Tensor) -> Tensor:
        return t1.f.neg_map(t1)

    @staticmethod
    def backward(ctx: Context, grad_output: Tensor) -> Tensor:
        return grad_output.f.neg_map(grad_output)


class Inv(Function):
    _detach_inputs = False

    @staticmethod
    def forward(ctx: Context, t1: Tensor) -> Tensor:
        ctx.save_for_backward(t1)
        return t1.f.inv_map(t1)

    @staticmethod
    def backward(ctx: Context, grad_output: Tensor) -> Tensor:
        (t1,) = ctx.saved_values
        return grad_output.f.inv_back_zip(t1, grad_output)


class Add(Function):
    _detach_inputs = False

    @staticmethod
    def forward(ctx: Context, t1: Tensor, t2: Tensor) -> Tensor:
        return t1.f.add_zip(t1, t2)

    @staticmethod
    def backward(ctx: Context, grad_output: Tensor) -> tuple[Tensor, Tensor]:
        return grad_output, grad_output


class Sub(Function):
    _detach_inputs = False

    @staticmethod
    def forward(ctx: Context, t1: Tensor, t2: Tensor) -> Tensor:
        return t1.f.zip_of(operators.sub)(t1, t2)

    @staticmethod
    def backward(ctx: Context, grad_output: Tensor) -> tuple[Tensor, Any]:
        if not _needs_grad(ctx, 1):
            return grad_output, 0.0
        return grad_output, grad_output.f.neg_map(grad_output)


class Mul(Function):
    _detach_inputs = False

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
    _detach_inputs = False

    @staticmethod
    def forward(ctx: Context, t1: Tensor) -> Tensor:
        out = t1.f.sigmoid_map(t1)
        ctx.save_for_backward(out.detach())  # (see _keep_result_without_history)
        return out

    @staticmethod
    def backward(ctx: Context, grad_output: Tensor) -> Tensor:
        (out,) = ctx.saved_values
        return grad_output.f.zip_of(operators.sigmoid_back_from_output)(out, grad_output)


class ReLU(Function):
    _detach_inputs = False

    @staticmethod
    def forward(ctx: Context, t1: Tensor) -> Tensor:
        ctx.save_for_backward(t1)
        return t1.f.relu_map(t1)

    @staticmethod
    def backward(ctx: Context, grad_output: Tensor) -> Tensor:
        (t1,) = ctx.saved_values
        return grad_output.f.relu_back_zip(t1, grad_output)


class Log(Function):
    _detach_inputs = False

    @staticmethod
    def forward(ctx: Context, t1: Tensor) -> Tensor:
        ctx.save_for_backward(t1)
        return t1.f.log_map(t1)

    @staticmethod
    def backward(ctx: Context, grad_output: Tensor) -> Tensor:
        (t1,) = ctx.saved_values
        return grad_output.f.log_back_zip(t1, grad_output)


class Exp(Function):
    _detach_inputs = False

    @staticmethod
    def forward(ctx: Context, t1: Tensor) -> Tensor:
        out = t1.f.exp_map(t1)
        ctx.save_for_backward(out.detach())  # (see _keep_result_without_history)
        return out

    @staticmethod
    def backward(ctx: Context, grad_output: Tensor) -> Tensor:
        (out,) = ctx.saved_values
        return grad_output.f.mul_zip(grad_output, out)


def _reduce_all(a: Tensor, reduce: Any) -> Tensor:
    """Reduce every element into shape (1,)."""
    if a.dims == 1:
        flat = a
    else:
        # A row-major tensor is read in place: the same values in the same order.
        flat = (a if a._tensor.is_row_major() else a.contiguous())._flat()
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
    _detach_inputs = False

    @staticmethod
    def forward(ctx: Context, a: Tensor, b: Tensor) -> Tensor:
        ctx.save_for_backward(a.shape, b.shape)
        return a.f.lt_zip(a, b)

    @staticmethod
    def backward(ctx: Context, grad_output: Tensor) -> tuple[Tensor, Tensor]:
        a_shape, b_shape = ctx.saved_values
        return grad_output.zeros(a_shape), grad_output.zeros(b_shape)


class EQ(Function):
    _detach_inputs = False

    @staticmethod
    def forward(ctx: Context, a: Tensor, b: Tensor) -> Tensor:
        ctx.save_for_backward(a.shape, b.shape)
        return a.f.eq_zip(a, b)

    @staticmethod
    def backward(ctx: Context, grad_output: Tensor) -> tuple[Tensor, Tensor]:
        a_shape, b_shape = ctx.saved_values
        return grad_output.zeros(a_shape), grad_output.zeros(b_shape)


class IsClose(Function):
    _detach_inputs = False

    @staticmethod
    def forward(ctx: Context, a: Tensor, b: Tensor) -> Tensor:
        return a.f.is_close_zip(a, b)


class Permute(Function):
    _detach_inputs = False

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
    _detach_inputs = False

    @staticmethod
    def forward(ctx: Context, a: Tensor, shape: Any) -> Tensor:
        # Reinterpreting the storage as another shape needs a row-major layout:
        # a broadcast (stride 0) or gapped layout would read the wrong elements.
        td = a._tensor
        if not td.is_row_major():
            raise IndexingError(
                f"view needs a contiguous tensor (shape {a.shape}, strides "
                f"{td.strides}); call .contiguous() first."
            )
        shape = _as_ints(shape, "A view shape")
        ctx.save_for_backward(td.shape)
        if shape == td.shape:
            # Its own shape (4 of the course step's 5 views, as ``x.view(*x.shape)``
            # in a layer): the same layout, nothing to resolve.
            return a._new(td)
        shape = _resolve_view_shape(td.size, shape)
        return a._new(td.strided_view(shape, strides_from_shape(shape)))

    @staticmethod
    def backward(ctx: Context, grad_output: Tensor) -> tuple[Tensor, float]:
        (original,) = ctx.saved_values
        g = grad_output if grad_output._tensor.is_row_major() else grad_output.contiguous()
        if g._tensor.shape == original:
            return g, 0.0
        return g._new(g._tensor.strided_view(original, strides_from_shape(original))), 0.0


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
    """The same values on ``backend``, which adopts the storage (a copy when it keeps
    data elsewhere; ``t``'s own storage stays where it is)."""
    if t.backend is backend:
        return t
    td = t._tensor
    storage = backend.adopt(td._storage)
    offset = td._offset if storage is td._storage else 0
    moved = TensorData._trusted(storage, td.shape, td.strides, td.size, offset)
    return _tensor_class()(moved, backend=backend)


class ToDtype(Function):
    """Cast to another dtype (``t.to``, ``float``, ``double``); the gradient is cast back."""

    @staticmethod
    def forward(ctx: Context, t: Tensor, dtype: Any) -> Tensor:
        ctx.save_for_backward(t.dtype)
        return cast(t, as_dtype(dtype))

    @staticmethod
    def backward(ctx: Context, grad_output: Tensor) -> tuple[Tensor, float]:
        (dtype,) = ctx.saved_values
        return cast(grad_output, dtype), 0.0


def cast(t: Tensor, dtype: np.dtype) -> Tensor:
    """``t``'s values in ``dtype`` (no history): the backend casts the storage, after a
    row-major copy if ``t`` is a strided view. ``t`` itself if it has the dtype."""
    td = t._tensor
    if td._storage.dtype == dtype:
        return t
    if not td.is_row_major():
        td = t.f.id_map(t)._tensor
    storage = td._storage
    if len(storage) != td.size:
        storage = storage[: td.size]
    return t._make_like(t.backend.cast(storage, dtype), td.shape, td.size)


class MatMul(Function):
    _detach_inputs = False

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


# Indexing and shape --------------------------------------------------------------


def key_view(t: Tensor, entries: tuple[KeyEntry, ...]) -> Tensor:
    """The view of ``t`` (no history) that normalised key ``entries`` select."""
    td = t._tensor
    return t._new(td.strided_view(*key_layout(td.shape, td.strides, entries)))


def region_view(t: Tensor, entries: tuple[KeyEntry, ...]) -> Tensor:
    """``key_view``, but one element is a (1,) view rather than 0-d, so it can be
    written by broadcasting."""
    view = key_view(t, entries)
    if view.dims:
        return view
    return view._new(view._tensor.strided_view((1,), (1,)))


class GetItem(Function):
    """``t[key]`` as a view; the gradient lands in the selected region only."""

    @staticmethod
    def forward(ctx: Context, a: Tensor, entries: tuple[KeyEntry, ...]) -> Tensor:
        ctx.save_for_backward(a.shape, entries)
        return key_view(a, entries)

    @staticmethod
    def backward(ctx: Context, grad_output: Tensor) -> tuple[Tensor, float]:
        shape, entries = ctx.saved_values
        grad = grad_output.zeros(shape)
        grad_output.f.id_cmap(grad_output, key_view(grad, entries))
        return grad, 0.0


class SetItem(Function):
    """The history of ``t[key] = value`` (``Tensor.__setitem__`` writes in place).

    The inputs are ``t`` as it was and ``value``: the old values under the key
    were overwritten, so they get no gradient; ``value`` gets the gradient of
    the region (summed over any dims it was broadcast along).
    """

    @staticmethod
    def backward(ctx: Context, grad_output: Tensor) -> tuple[Any, Tensor]:
        entries, previous_needs_grad = ctx.saved_values
        grad_value = region_view(grad_output, entries)
        if not previous_needs_grad:
            return 0.0, grad_value
        f = grad_output.f
        grad_previous = f.id_map(grad_output)
        f.id_cmap(grad_output.zeros((1,)), region_view(grad_previous, entries))
        return grad_previous, grad_value


def view_strides(
    shape: tuple[int, ...], strides: tuple[int, ...], new_shape: tuple[int, ...]
) -> tuple[int, ...] | None:
    """Strides that read the layout ``(shape, strides)`` as ``new_shape`` in row-major
    order without copying, or None when no strides can (the elements of a group
    of dims that becomes one dim are not evenly spaced)."""
    if 0 in shape:
        return strides_from_shape(new_shape)
    old = [(d, s) for d, s in zip(shape, strides) if d != 1]
    out = [0] * len(new_shape)
    i = 0  # next old dim
    j = 0  # next new dim
    while j < len(new_shape):
        if new_shape[j] == 1:
            j += 1
            continue
        # Take new dims while their product is below that of the old dims taken.
        group_old = [old[i]]
        i += 1
        n_old = group_old[0][0]
        first_new = j
        n_new = new_shape[j]
        j += 1
        while n_new != n_old:
            if n_new < n_old:
                n_new *= new_shape[j]
                j += 1
            else:
                group_old.append(old[i])
                n_old *= old[i][0]
                i += 1
        for (_, s), (d_next, s_next) in zip(group_old, group_old[1:]):
            if s != d_next * s_next:
                return None
        step = group_old[-1][1]
        for k in range(j - 1, first_new - 1, -1):
            out[k] = step
            step *= new_shape[k]
    # Size-1 dims read nothing: give them the stride a row-major layout would.
    for k in range(len(new_shape) - 1, -1, -1):
        if new_shape[k] == 1:
            out[k] = out[k + 1] * new_shape[k + 1] if k + 1 < len(new_shape) else 1
    return tuple(out)


def reshaped(a: Tensor, shape: tuple[int, ...]) -> Tensor:
    """``a`` as ``shape`` (no history): a view when the layout allows, else a copy."""
    td = a._tensor
    if shape == td.shape:
        return a._new(td)
    strides = view_strides(td.shape, td.strides, shape)
    if strides is None:
        td = a.f.id_map(a)._tensor
        strides = strides_from_shape(shape)
    return a._new(td.strided_view(shape, strides))


class Reshape(Function):
    """``reshape``, ``flatten``, ``squeeze``, ``unsqueeze``: row-major order kept."""

    @staticmethod
    def forward(ctx: Context, a: Tensor, shape: Any) -> Tensor:
        shape = _resolve_view_shape(a.size, _as_ints(shape, "A shape"))
        ctx.save_for_backward(a.shape)
        return reshaped(a, shape)

    @staticmethod
    def backward(ctx: Context, grad_output: Tensor) -> tuple[Tensor, float]:
        (shape,) = ctx.saved_values
        return reshaped(grad_output, shape), 0.0


def dim_slice(t: Tensor, dim: int, start: int, stop: int) -> Tensor:
    """The view ``t[..., start:stop, ...]`` along ``dim`` (no history)."""
    entries = tuple(
        slice(start, stop, 1) if d == dim else slice(0, n, 1) for d, n in enumerate(t.shape)
    )
    return key_view(t, entries)


class Cat(Function):
    """Tensors joined along an existing dim; each gets its slice of the gradient."""

    @staticmethod
    def forward(ctx: Context, dim: int, *tensors: Tensor) -> Tensor:
        sizes = [t.shape[dim] for t in tensors]
        ctx.save_for_backward(dim, sizes)
        first = tensors[0]
        out = first.zeros(first.shape[:dim] + (sum(sizes),) + first.shape[dim + 1 :])
        start = 0
        for t, n in zip(tensors, sizes):
            if t.size:
                first.f.id_cmap(t, dim_slice(out, dim, start, start + n))
            start += n
        return out

    @staticmethod
    def backward(ctx: Context, grad_output: Tensor) -> tuple[Any, ...]:
        dim, sizes = ctx.saved_values
        grads: list[Any] = [0.0]
        start = 0
        for n in sizes:
            grads.append(dim_slice(grad_output, dim, start, start + n))
            start += n
        return tuple(grads)


# Elementwise math ------------------------------------------------------------------


class Tanh(Function):
    _detach_inputs = False

    @staticmethod
    def forward(ctx: Context, t1: Tensor) -> Tensor:
        out = t1.f.map_of(operators.tanh)(t1)
        ctx.save_for_backward(out.detach())  # (see _keep_result_without_history)
        return out

    @staticmethod
    def backward(ctx: Context, grad_output: Tensor) -> Tensor:
        (out,) = ctx.saved_values
        return grad_output.f.zip_of(operators.tanh_back_from_output)(out, grad_output)


class Sqrt(Function):
    _detach_inputs = False

    @staticmethod
    def forward(ctx: Context, t1: Tensor) -> Tensor:
        out = t1.f.map_of(operators.sqrt)(t1)
        ctx.save_for_backward(out.detach())  # (see _keep_result_without_history)
        return out

    @staticmethod
    def backward(ctx: Context, grad_output: Tensor) -> Tensor:
        (out,) = ctx.saved_values
        return grad_output.f.zip_of(operators.sqrt_back_from_output)(out, grad_output)


class Abs(Function):
    _detach_inputs = False

    @staticmethod
    def forward(ctx: Context, t1: Tensor) -> Tensor:
        ctx.save_for_backward(t1)
        return t1.f.map_of(operators.absolute)(t1)

    @staticmethod
    def backward(ctx: Context, grad_output: Tensor) -> Tensor:
        (t1,) = ctx.saved_values
        return grad_output.f.zip_of(operators.absolute_back)(t1, grad_output)


class Pow(Function):
    """``base ** exponent``; either may be a number (a constant: no gradient computed)."""

    @staticmethod
    def forward(ctx: Context, base: Any, exponent: Any) -> Tensor:
        tensor = _TENSOR or _tensor_class()
        base_is_tensor, exponent_is_tensor = isinstance(base, tensor), isinstance(exponent, tensor)
        like = base if base_is_tensor else exponent
        a, b = like._ensure_tensor(base), like._ensure_tensor(exponent)
        out = like.f.zip_of(operators.pow)(a, b)
        ctx.save_for_backward(a, b, out, base_is_tensor, exponent_is_tensor)
        return out

    @staticmethod
    def backward(ctx: Context, grad_output: Tensor) -> tuple[Any, Any]:
        a, b, out, base_is_tensor, exponent_is_tensor = ctx.saved_values
        f = grad_output.f
        grad_base: Any = 0.0
        grad_exponent: Any = 0.0
        if base_is_tensor:
            # y * x ** (y - 1), and 0 where y = 0.
            lower = f.zip_of(operators.pow)(a, f.zip_of(operators.sub)(b, a._ensure_tensor(1.0)))
            grad_base = f.mul_zip(f.zip_of(operators.times_unless_zero)(b, lower), grad_output)
        if exponent_is_tensor:
            grad_exponent = f.mul_zip(f.zip_of(operators.pow_exponent_grad)(a, out), grad_output)
        return grad_base, grad_exponent


class Compare(Function):
    """A comparison (``operators.le``, ``ge``, ``ne``, ...): 0/1 values, zero gradients."""

    @staticmethod
    def forward(ctx: Context, a: Tensor, b: Tensor, fn: Callable[[float, float], float]) -> Tensor:
        ctx.save_for_backward(a.shape, b.shape)
        return a.f.zip_of(fn)(a, b)

    @staticmethod
    def backward(ctx: Context, grad_output: Tensor) -> tuple[Tensor, Tensor, float]:
        a_shape, b_shape = ctx.saved_values
        return grad_output.zeros(a_shape), grad_output.zeros(b_shape), 0.0


class Maximum(Function):
    """Elementwise larger value, NaN-propagating; a tie splits the gradient in half."""

    fn = staticmethod(operators.maximum)
    share = staticmethod(operators.greater_share)

    @classmethod
    def forward(cls, ctx: Context, a: Tensor, b: Tensor) -> Tensor:
        ctx.save_for_backward(a, b)
        return a.f.zip_of(cls.fn)(a, b)

    @classmethod
    def backward(cls, ctx: Context, grad_output: Tensor) -> tuple[Tensor, Tensor]:
        a, b = ctx.saved_values
        f = grad_output.f
        share = f.zip_of(cls.share)
        return f.mul_zip(share(a, b), grad_output), f.mul_zip(share(b, a), grad_output)


class Minimum(Maximum):
    """Elementwise smaller value, NaN-propagating; a tie splits the gradient in half."""

    fn = staticmethod(operators.minimum)
    share = staticmethod(operators.lesser_share)


class Where(Function):
    """``a`` where ``cond`` is non-zero, else ``b`` (all three broadcast)."""

    @staticmethod
    def forward(ctx: Context, cond: Tensor, a: Tensor, b: Tensor) -> Tensor:
        ctx.save_for_backward(cond)
        f = a.f
        return f.add_zip(
            f.zip_of(operators.select)(cond, a), f.zip_of(operators.select_not)(cond, b)
        )

    @staticmethod
    def backward(ctx: Context, grad_output: Tensor) -> tuple[float, Tensor, Tensor]:
        (cond,) = ctx.saved_values
        f = grad_output.f
        return (
            0.0,
            f.zip_of(operators.select)(cond, grad_output),
            f.zip_of(operators.select_not)(cond, grad_output),
        )


class Clamp(Function):
    """Values limited to ``[low, high]`` (either bound may be None); the gradient
    passes where ``low <= x <= high``, as in PyTorch."""

    @staticmethod
    def forward(ctx: Context, a: Tensor, low: float | None, high: float | None) -> Tensor:
        f = a.f
        out = a
        bounds = []
        if low is not None:
            lo = a._ensure_tensor(low)
            out = f.zip_of(operators.maximum)(out, lo)
            bounds.append((operators.ge, lo))
        if high is not None:
            hi = a._ensure_tensor(high)
            out = f.zip_of(operators.minimum)(out, hi)
            bounds.append((operators.le, hi))
        ctx.save_for_backward(a, bounds)
        return f.id_map(a) if out is a else out

    @staticmethod
    def backward(ctx: Context, grad_output: Tensor) -> tuple[Tensor, float, float]:
        a, bounds = ctx.saved_values
        f = grad_output.f
        grad = grad_output
        for inside, bound in bounds:
            grad = f.mul_zip(grad, f.zip_of(inside)(a, bound))
        return grad, 0.0, 0.0


# Reductions ------------------------------------------------------------------------


def max_reduce(input: Tensor, dim: int) -> Tensor:
    """Maximum along ``dim`` (kept at size 1) on ``input``'s backend, without history.

    The fold starts at -inf, so every finite value is supported, and a NaN
    anywhere in a slice makes its maximum NaN (as in NumPy and PyTorch).
    """
    return input.f.reduce_of(operators.maximum, -math.inf)(input, dim)


def min_reduce(input: Tensor, dim: int) -> Tensor:
    """Minimum along ``dim`` (kept at size 1), NaN-propagating, without history."""
    return input.f.reduce_of(operators.minimum, math.inf)(input, dim)


class Max(Function):
    """Maximum along a dim; the gradient flows to the argmax (to every tie)."""

    @staticmethod
    def forward(ctx: Context, input: Tensor, dim: Any) -> Tensor:
        out = max_reduce(input, check_reduce_dim(input, dim))
        ctx.save_for_backward(input, out)
        return out

    @staticmethod
    def backward(ctx: Context, grad_output: Tensor) -> tuple[Tensor, float]:
        input, out = ctx.saved_values
        f = grad_output.f
        return f.mul_zip(grad_output, f.eq_zip(input, out)), 0.0


def _flat_for_reduce(a: Tensor) -> Tensor:
    """``a`` as one dim (a copy only when its layout is not row-major)."""
    return a if a.dims == 1 else reshaped(a, (a.size,))


class Extremum(Function):
    """The maximum or minimum along ``dim`` (kept at size 1) or of everything, shape (1,).

    NaN-propagating. Elements equal to the result share its gradient equally
    (PyTorch's ``amax`` rule), so the gradient is a true subgradient at ties.
    """

    @staticmethod
    def forward(ctx: Context, a: Tensor, dim: int | None, largest: bool) -> Tensor:
        reduce = max_reduce if largest else min_reduce
        out = reduce(_flat_for_reduce(a), 0) if dim is None else reduce(a, dim)
        ctx.save_for_backward(a, out, dim)
        return out

    @staticmethod
    def backward(ctx: Context, grad_output: Tensor) -> tuple[Tensor, float, float]:
        a, out, dim = ctx.saved_values
        f = grad_output.f
        hits = f.zip_of(operators.same)(a, out)
        count = f.add_reduce(_flat_for_reduce(hits), 0) if dim is None else f.add_reduce(hits, dim)
        share = f.mul_zip(hits, f.inv_map(count))
        return f.mul_zip(share, grad_output), 0.0, 0.0


def arg_extremum(a: Tensor, dim: int | None, largest: bool) -> Tensor:
    """Position of the first maximum (or minimum) along ``dim``, as float values, without
    history; with ``dim`` None, the position in the flattened tensor, shape (1,).
    A NaN counts as the extremum (NumPy's and PyTorch's rule)."""
    if dim is None:
        a, dim = _flat_for_reduce(a), 0
    f = a.f
    extremum = (max_reduce if largest else min_reduce)(a, dim)
    hits = f.zip_of(operators.same)(a, extremum)
    n = a.shape[dim]
    positions = _new_tensor(
        np.arange(n, dtype=a.dtype), (n,) + (1,) * (a.dims - dim - 1), a.backend
    )
    candidates = f.zip_of(operators.position_if)(hits, positions)
    return min_reduce(candidates, dim)


# Functions of several tensors --------------------------------------------------------


def _tensors(values: Any, what: str) -> list[Tensor]:
    """A non-empty sequence of tensors, moved to the first one's backend and, if their
    dtypes differ, cast to float64 (PyTorch's promotion)."""
    tensor = _TENSOR or _tensor_class()
    if isinstance(values, tensor) or not isinstance(values, (list, tuple)):
        raise TypeError(f"{what} takes a list or tuple of tensors, not {type(values).__name__}.")
    if not values:
        raise ValueError(f"{what} needs at least one tensor.")
    for v in values:
        if not isinstance(v, tensor):
            raise TypeError(f"{what} takes tensors, not {type(v).__name__}.")
    first = values[0]
    dtype = max((v.dtype for v in values), key=lambda d: d.itemsize)
    return [first._ensure_tensor(v).to(dtype) for v in values]


def cat(tensors: Sequence[Tensor], dim: int = 0) -> Tensor:
    """The tensors joined along existing dim ``dim`` (PyTorch's ``torch.cat``).

    All must have the same number of dims and agree in every other dim; they
    move to the first one's backend. Differentiable in each.
    """
    ts = _tensors(tensors, "cat")
    first = ts[0]
    d = check_reduce_dim(first, dim)
    for t in ts[1:]:
        if t.dims != first.dims or any(
            a != b for k, (a, b) in enumerate(zip(t.shape, first.shape)) if k != d
        ):
            raise IndexingError(
                f"cat along dim {d}: shapes {first.shape} and {t.shape} must agree in every "
                "other dim."
            )
    return Cat.apply(d, *ts)


def stack(tensors: Sequence[Tensor], dim: int = 0) -> Tensor:
    """Tensors of one shape joined along a new dim ``dim`` (PyTorch's ``torch.stack``)."""
    ts = _tensors(tensors, "stack")
    for t in ts[1:]:
        if t.shape != ts[0].shape:
            raise IndexingError(
                f"stack needs tensors of one shape, got {ts[0].shape} and {t.shape}."
            )
    return cat([t.unsqueeze(dim) for t in ts], dim)


def _pair(a: Any, b: Any, what: str) -> tuple[Tensor, Tensor]:
    """Two operands as tensors of one backend and dtype (a number becomes a (1,) tensor
    of the other's dtype)."""
    tensor = _TENSOR or _tensor_class()
    if isinstance(a, tensor):
        return a._operands(b)
    if isinstance(b, tensor):
        y, x = b._operands(a)
        return x, y
    raise TypeError(
        f"{what} needs at least one tensor, got {type(a).__name__} and {type(b).__name__}."
    )


def maximum(a: Any, b: Any) -> Tensor:
    """Elementwise larger of ``a`` and ``b`` (broadcast; either may be a number).

    NaN propagates (like PyTorch and NumPy's ``maximum``); at a tie each side
    gets half the gradient.
    """
    return Maximum.apply(*_pair(a, b, "maximum"))


def minimum(a: Any, b: Any) -> Tensor:
    """Elementwise smaller of ``a`` and ``b``; see ``maximum``."""
    return Minimum.apply(*_pair(a, b, "minimum"))


def where(cond: Any, a: Any, b: Any) -> Tensor:
    """``a`` where ``cond`` is non-zero, else ``b``, all broadcast together.

    ``cond`` is a tensor of 0/1 values (a comparison's result; any non-zero
    value, NaN included, counts as true); ``a`` or ``b`` may be a number. The
    gradient goes to ``a`` where the condition holds and to ``b`` elsewhere.
    """
    tensor = _TENSOR or _tensor_class()
    if not isinstance(cond, tensor):
        raise TypeError(f"where takes a tensor condition, not {type(cond).__name__}.")
    a, b = (
        _pair(a, b, "where")
        if isinstance(a, tensor) or isinstance(b, tensor)
        else (
            cond._ensure_tensor(a),
            cond._ensure_tensor(b),
        )
    )
    # The condition is only read: in the values' dtype it adds no promotion.
    return Where.apply(a._ensure_tensor(cond).to(a.dtype), a, b)


# Factories ---------------------------------------------------------------------
# Every factory takes ``dtype`` (float32 or float64; None: the default dtype) and
# builds its tensor through ``_new_tensor``, the one place where host values become
# storage on a backend.


def _new_tensor(
    values: np.ndarray,
    shape: tuple[int, ...],
    backend: TensorBackend | None,
    requires_grad: bool = False,
    dtype: Any = None,
) -> Tensor:
    """A tensor of ``shape`` on ``backend`` over ``values`` (row-major, of ``shape``'s
    size), in ``dtype`` (None: ``values``' dtype if float32 or float64, else the default).

    ``values`` is handed to the backend as is when it already is a contiguous array of
    that dtype that the caller owns; anything else is converted first.
    """
    check_backend(backend)
    backend = SimpleBackend if backend is None else backend
    storage = backend.from_numpy(as_storage(values, dtype))
    t = _tensor_class()(TensorData(storage, shape), backend=backend)
    if recording.recorder is not None:
        recording.recorder.constant(t._tensor._storage)
    if requires_grad:
        t.requires_grad_(True)
    return t


def _drawn(t: Tensor, draw: Callable[[int], np.ndarray], size: int) -> None:
    """``t`` holds ``draw(size)``: a replay of a recorded step must draw again."""
    if recording.recorder is not None:
        storage = t._tensor._storage

        def redraw() -> None:
            storage[:] = draw(size)

        recording.recorder.refresh(redraw, [storage])


def _shape_and_size(shape: Any, dtype: Any) -> tuple[tuple[int, ...], int, np.dtype]:
    """A factory's checked shape, its element count, and its dtype."""
    dtype = as_dtype(dtype)
    shape = check_shape(shape)
    return shape, check_allocation(shape, dtype), dtype


def zeros(
    shape: Sequence[int], backend: TensorBackend = SimpleBackend, dtype: Any = None
) -> Tensor:
    """A tensor of zeros."""
    shape, size, dtype = _shape_and_size(shape, dtype)
    return _new_tensor(np.zeros(size, dtype), shape, backend)


def ones(
    shape: Sequence[int], backend: TensorBackend = SimpleBackend, dtype: Any = None
) -> Tensor:
    """A tensor of ones."""
    shape, size, dtype = _shape_and_size(shape, dtype)
    return _new_tensor(np.ones(size, dtype), shape, backend)


def full(
    shape: Sequence[int],
    fill_value: float,
    backend: TensorBackend = SimpleBackend,
    requires_grad: bool = False,
    dtype: Any = None,
) -> Tensor:
    """A tensor of ``shape`` holding ``fill_value`` everywhere."""
    shape, size, dtype = _shape_and_size(shape, dtype)
    value = _as_float(fill_value, "fill_value")
    return _new_tensor(np.full(size, value, dtype), shape, backend, requires_grad)


def zeros_like(
    t: Tensor,
    backend: TensorBackend | None = None,
    requires_grad: bool = False,
    dtype: Any = None,
) -> Tensor:
    """Zeros of ``t``'s shape, on ``t``'s backend and in its dtype unless others are given."""
    _check_tensor(t, "zeros_like")
    return full(t.shape, 0.0, backend or t.backend, requires_grad, dtype or t.dtype)


def ones_like(
    t: Tensor,
    backend: TensorBackend | None = None,
    requires_grad: bool = False,
    dtype: Any = None,
) -> Tensor:
    """Ones of ``t``'s shape, on ``t``'s backend and in its dtype unless others are given."""
    _check_tensor(t, "ones_like")
    return full(t.shape, 1.0, backend or t.backend, requires_grad, dtype or t.dtype)


def _check_tensor(t: Any, what: str) -> None:
    if not isinstance(t, _TENSOR or _tensor_class()):
        raise TypeError(f"{what} takes a Tensor, not {type(t).__name__}.")


def arange(
    start: float,
    end: float | None = None,
    step: float = 1.0,
    backend: TensorBackend = SimpleBackend,
    requires_grad: bool = False,
    dtype: Any = None,
) -> Tensor:
    """``start, start + step, ...`` up to but excluding ``end``; ``arange(n)`` is 0..n-1.

    Values are ``start + i * step`` (as in PyTorch), as floats.
    """
    dtype = as_dtype(dtype)
    if end is None:
        start, end = 0.0, start
    start, end, step = (
        _as_float(v, n) for v, n in ((start, "start"), (end, "end"), (step, "step"))
    )
    if step == 0.0 or not all(math.isfinite(v) for v in (start, end, step)):
        raise ValueError(
            f"arange needs finite start, end and a non-zero step, got {start}, {end}, {step}."
        )
    if (end - start) * step < 0:
        raise ValueError(f"arange from {start} to {end} cannot go in steps of {step}.")
    n = check_allocation((max(0, math.ceil((end - start) / step)),), dtype)
    return _new_tensor(start + np.arange(n) * step, (n,), backend, requires_grad, dtype)


def eye(
    n: int,
    m: int | None = None,
    backend: TensorBackend = SimpleBackend,
    requires_grad: bool = False,
    dtype: Any = None,
) -> Tensor:
    """The ``(n, m)`` identity matrix (``m`` defaults to ``n``)."""
    shape, size, dtype = _shape_and_size((n, n if m is None else m), dtype)
    values = np.zeros(size, dtype)
    values[:: shape[1] + 1][: min(shape)] = 1.0
    return _new_tensor(values, shape, backend, requires_grad)


def rand(
    shape: Sequence[int],
    backend: TensorBackend = SimpleBackend,
    requires_grad: bool = False,
    dtype: Any = None,
) -> Tensor:
    """Uniform on [0, 1), drawn from Python's ``random`` so seeds repeat."""
    shape, size, dtype = _shape_and_size(shape, dtype)

    def draw(n: int) -> np.ndarray:
        values = uniform(n)
        if dtype != values.dtype:
            values = values.astype(dtype)
            # Rounding may reach 1.0; keep the interval half-open.
            values[values == 1.0] = np.nextafter(dtype.type(1), dtype.type(0))
        return values

    t = _new_tensor(draw(size), shape, backend)
    _drawn(t, draw, size)
    # As in the course, the flag is ignored: the result is a leaf that tracks gradients.
    t.requires_grad_(requires_grad)
    return t


def randn(
    shape: Sequence[int],
    backend: TensorBackend = SimpleBackend,
    requires_grad: bool = False,
    dtype: Any = None,
) -> Tensor:
    """Standard normal values, drawn from Python's ``random`` so seeds repeat.

    Unlike ``rand`` (a leaf always, as in the course), the result tracks
    gradients only with ``requires_grad=True``, as in PyTorch.
    """
    shape, size, dtype = _shape_and_size(shape, dtype)
    t = _new_tensor(normal(size), shape, backend, requires_grad, dtype)
    _drawn(t, normal, size)
    return t


def manual_seed(seed: int) -> None:
    """Seed everything minitorch draws from: Python's ``random``, which ``rand``,
    ``randn``, ``dropout``, layer initialisation, the datasets and ``grad_check``
    read (PyTorch's ``manual_seed``)."""
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool):
        raise TypeError(f"manual_seed takes an int, not {seed!r}.")
    random.seed(int(seed))


def _as_float(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{what} must be a number, not {value!r}.")
    return float(value)


def normal(n: int) -> np.ndarray:
    """``n`` standard normal draws, by the Box-Muller transform of ``uniform`` draws."""
    pairs = (n + 1) // 2
    u = uniform(2 * pairs)
    radius = np.sqrt(-2.0 * np.log(1.0 - u[0::2]))  # 1 - u lies in (0, 1]: log is finite
    angle = (2.0 * math.pi) * u[1::2]
    out = np.empty(2 * pairs)
    out[0::2] = radius * np.cos(angle)
    out[1::2] = radius * np.sin(angle)
    return out[:n]


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
    dtype: Any = None,
) -> Tensor:
    """A tensor from a flat list of values and a shape."""
    t = _new_tensor(as_storage(ls, as_dtype(dtype)), check_shape(shape), backend)
    t.requires_grad_(requires_grad)  # always a leaf, as in the course
    return t


def tensor(
    ls: Any, backend: TensorBackend = SimpleBackend, requires_grad: bool = False, dtype: Any = None
) -> Tensor:
    """A tensor from nested lists or tuples (or a number, or a NumPy array), shape
    inferred from the nesting; in ``dtype``, else the default dtype (a float32 or
    float64 NumPy array keeps its own)."""
    t = tensor_from_numpy(ls, backend=backend, dtype=dtype)
    t.requires_grad_(requires_grad)  # always a leaf, as in the course
    return t


def tensor_from_numpy(
    array: Any,
    backend: TensorBackend = SimpleBackend,
    requires_grad: bool = False,
    dtype: Any = None,
) -> Tensor:
    """A tensor holding a copy of a NumPy array (no per-element Python work).

    Without ``dtype`` a float32 or float64 array keeps its dtype; other arrays
    (integers, bools) and nested sequences take the default dtype.
    """
    check_backend(backend)
    try:
        values = np.asarray(array)
    except ValueError as e:
        raise ValueError(f"Tensor values must be a rectangular nesting of numbers: {e}") from None
    if dtype is None:
        keep = isinstance(array, (np.ndarray, np.floating)) and values.dtype in DTYPES
        dtype = values.dtype if keep else None
    storage = as_storage(values, as_dtype(dtype))
    if np.may_share_memory(storage, values):
        storage = storage.copy()
    shape = values.shape if values.ndim else (1,)
    return _new_tensor(storage, check_shape(shape), backend, requires_grad)


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
    return _moved_sum(f, vals, arg, ind, epsilon), _moved_sum(f, vals, arg, ind, epsilon, up=False)


def _moved_sum(
    f: Any, vals: Sequence[Tensor], arg: int, ind: tuple[int, ...], epsilon: float,
    up: bool = True,
) -> float:  # fmt: skip
    """``f(*vals).sum()`` with element ``ind`` of argument ``arg`` moved by ``epsilon``,
    up or down. A float32 argument is moved in float64: a step of 1e-6 is a few float32
    ulps, so a difference of two sums would be mostly rounding (2x at 1 gave 1.97)."""
    x = vals[arg]
    if x.dtype != np.float64:
        x = x.detach().double()
    step = x.zeros(x.shape)
    step[ind] = epsilon
    moved = x + step if up else x - step
    return float(f(*[v if j != arg else moved for j, v in enumerate(vals)]).sum()[0])


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
            center = _moved_sum(f, vals, i, ind, 0.0)  # in up and down's dtype
            left, right = (center - down) / epsilon, (up - center) / epsilon
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
