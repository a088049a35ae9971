"""The user-facing ``Tensor``: a TensorData, a backend, and autodiff history."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from .autodiff import backpropagate
from .tensor_data import (
    IndexingError,
    Storage,
    TensorData,
    UserIndex,
    UserShape,
    check_allocation,
    check_shape,
    shape_broadcast,
    strides_from_shape,
)
from .tensor_functions import (
    EQ,
    LT,
    Add,
    All,
    Copy,
    Exp,
    History,
    Inv,
    IsClose,
    Log,
    MatMul,
    Mul,
    Neg,
    Permute,
    ReLU,
    Sigmoid,
    Sub,
    Sum,
    ToBackend,
    View,
)
from .tensor_ops import SimpleBackend, TensorBackend, check_backend, check_reduce_dim

_ids = itertools.count()


class Tensor:
    """A multidimensional float64 array that can record its history for autodiff."""

    __slots__ = ("_tensor", "history", "grad", "_name", "unique_id", "backend", "f")

    def __init__(
        self,
        v: TensorData,
        back: History | None = None,
        name: str | None = None,
        backend: TensorBackend | None = None,
    ) -> None:
        # Identity first: every op builds tensors, so the common case costs one compare.
        if v.__class__ is not TensorData and not isinstance(v, TensorData):
            raise TypeError(
                f"Tensor takes a TensorData, not {type(v).__name__}; use minitorch.tensor(...) "
                "to build one from values."
            )
        if backend is None:
            backend = SimpleBackend
        elif backend.__class__ is not TensorBackend:
            check_backend(backend)
        self._tensor = v
        self.history = back
        self.grad: Tensor | None = None
        self.unique_id = next(_ids)
        self._name = name
        self.backend = backend
        self.f = backend

    @property
    def name(self) -> str:
        """The tensor's name; defaults to its unique id, as in the course."""
        return self._name if self._name is not None else str(self.unique_id)

    @name.setter
    def name(self, value: str) -> None:
        self._name = value

    # Construction -------------------------------------------------------------

    @staticmethod
    def make(
        storage: Storage | Sequence[float],
        shape: UserShape,
        strides: Sequence[int] | None = None,
        backend: TensorBackend | None = None,
    ) -> Tensor:
        """A new tensor over ``storage`` (no history)."""
        return Tensor(TensorData(storage, shape, strides), backend=backend)

    def _new(self, tensor_data: TensorData) -> Tensor:
        """A tensor over ``tensor_data`` on this backend, without history."""
        return _wrap(tensor_data, self.backend)

    def _make_like(self, storage: Any, shape: tuple[int, ...], size: int) -> Tensor:
        """A contiguous tensor on this backend over freshly computed ``storage``."""
        strides = strides_from_shape(shape)
        return _wrap(TensorData._trusted(storage, shape, strides, size), self.backend)

    def zeros(self, shape: UserShape | None = None) -> Tensor:
        """Zeros of ``shape`` (default: this tensor's) on this backend."""
        if shape is None:
            shape, size = self.shape, self.size
        else:
            shape = check_shape(shape)
            size = check_allocation(shape)
        if self.backend.cuda:
            from .cuda_ops import device_zeros  # loads the CUDA backend only when used

            return self._make_like(device_zeros(size), shape, size)
        return self._make_like(np.zeros(size), shape, size)

    def _type_(self, backend: TensorBackend) -> None:
        """Switch this tensor's backend, moving storage to the GPU when needed."""
        self.backend = backend
        self.f = backend
        if backend.cuda:
            self._tensor.to_cuda_()

    def _ensure_tensor(self, b: Any) -> Tensor:
        """A number becomes a (1,) tensor; a tensor moves to this backend if needed."""
        if isinstance(b, Tensor):
            if b.backend is not self.backend:
                return ToBackend.apply(b, self.backend)
            return b
        if isinstance(b, (int, float, np.integer, np.floating)):
            c = self._make_like(np.array([float(b)]), (1,), 1)
            if self.backend.cuda:
                c._tensor.to_cuda_()
            return c
        raise TypeError(f"Cannot combine a Tensor with {type(b).__name__}.")

    def expand(self, other: Tensor) -> Tensor:
        """Sum a broadcast gradient ``other`` back down to this tensor's shape."""
        if other.shape == self.shape:
            return other
        shape = self.shape
        extra = other.dims - len(shape)
        if extra < 0:
            # The gradient has fewer dims than the input: broadcast it up.
            return other.f.id_map(other, self.zeros(shape))
        out = other
        for dim in range(other.dims):
            own = shape[dim - extra] if dim >= extra else 1
            if out.shape[dim] != 1 and own == 1:
                out = out.f.add_reduce(out, dim)
        if extra:
            out = out if out._tensor.is_row_major() else out.contiguous()
            out = out._view_raw(shape)
        if out.shape != shape:
            raise IndexingError(f"Cannot sum gradient of shape {other.shape} into {shape}.")
        return out

    # Properties -------------------------------------------------------------

    @property
    def shape(self) -> tuple[int, ...]:
        return self._tensor.shape

    @property
    def size(self) -> int:
        return self._tensor.size

    @property
    def dims(self) -> int:
        return self._tensor.dims

    @property
    def data(self) -> Tensor:
        """The same values, detached (PyTorch's ``.data``)."""
        return self.detach()

    def tuple(self) -> tuple[Any, Any, Any]:
        return self._tensor.tuple()

    def to_numpy(self) -> np.ndarray:
        """A contiguous NumPy copy of the values."""
        return self._tensor.to_numpy()

    def item(self) -> float:
        if self.size != 1:
            raise ValueError(f"item() needs a tensor of size 1, not shape {self.shape}.")
        return float(self.to_numpy().reshape(-1)[0])

    def __getitem__(self, key: int | UserIndex) -> float:
        return float(self._tensor._storage[self._tensor.index(key)])

    def __setitem__(self, key: int | UserIndex, val: float) -> None:
        self._tensor._storage[self._tensor.index(key)] = val

    def __repr__(self) -> str:
        return self._tensor.to_string()

    def __len__(self) -> int:
        return self.shape[0]

    def __float__(self) -> float:
        return self.item()

    def __bool__(self) -> bool:
        if self.size != 1:
            raise ValueError("The truth value of a tensor with more than one element is ambiguous.")
        return bool(self.item())

    # Autodiff ---------------------------------------------------------------

    def requires_grad_(self, x: bool = True) -> Tensor:
        """Make this tensor a fresh leaf that tracks gradients (the course ignores ``x``)."""
        self.history = History()
        return self

    def requires_grad(self) -> bool:
        return self.history is not None

    def is_leaf(self) -> bool:
        return self.history is not None and self.history.last_fn is None

    def is_constant(self) -> bool:
        return self.history is None

    @property
    def parents(self) -> list[Tensor]:
        assert self.history is not None
        return [x for x in self.history.inputs if isinstance(x, Tensor)]

    def chain_rule(self, d_output: Any) -> Iterable[tuple[Tensor, Any]]:
        h = self.history
        assert h is not None and h.last_fn is not None and h.ctx is not None
        needs = tuple([isinstance(inp, Tensor) and inp.history is not None for inp in h.inputs])
        h.ctx.needs_input_grad = needs
        grads = h.last_fn._backward(h.ctx, d_output)
        pairs = []
        for inp, g, need in zip(h.inputs, grads, needs):
            if need:
                if not isinstance(g, Tensor):
                    # A number (the 0.0 of a dim or shape argument) becomes a zeros gradient.
                    g = inp.zeros() + g
                elif g._tensor.shape != inp._tensor.shape:
                    g = inp.expand(g)
                pairs.append((inp, g))
        return pairs

    def accumulate_derivative(self, x: Tensor) -> None:
        """Add ``x`` into ``.grad`` (a leaf's own copy, never shared with another)."""
        if self.grad is None:
            self.grad = x._copy()
        else:
            self.grad = self.grad + x

    def backward(self, grad_output: Tensor | None = None) -> None:
        """Fill ``.grad`` of every leaf this tensor depends on.

        Without ``grad_output`` the tensor must hold one element (any shape, as
        in PyTorch) and the seed is 1.0. A ``grad_output`` (a tensor or a number)
        must have this tensor's shape or broadcast to it.
        """
        if grad_output is None:
            if self.size != 1:
                raise ValueError(
                    f"backward() without an argument needs a one-element tensor, not shape "
                    f"{self.shape}; pass grad_output."
                )
            grad_output = self._make_like(np.array([1.0]), self.shape, 1)
            if self.backend.cuda:
                grad_output._tensor.to_cuda_()
        else:
            grad_output = self._ensure_tensor(grad_output)
            if grad_output.shape != self.shape:
                if not _broadcasts_to(grad_output.shape, self.shape):
                    raise ValueError(
                        f"grad_output of shape {grad_output.shape} does not match the "
                        f"tensor's shape {self.shape}."
                    )
                grad_output = grad_output.f.id_map(grad_output, self.zeros(self.shape))
        backpropagate(self, grad_output)

    def zero_grad_(self) -> None:
        self.grad = None

    def detach(self) -> Tensor:
        """The same data, with no history."""
        return _wrap(self._tensor, self.backend)

    def _copy(self) -> Tensor:
        storage = self._tensor._storage
        if hasattr(storage, "copy_to_host"):
            return self.f.id_map(self)
        td = self._tensor
        return self._new(TensorData._trusted(storage.copy(), td.shape, td.strides, td.size))

    # Operators --------------------------------------------------------------

    def __add__(self, b: Any) -> Tensor:
        return Add.apply(self, self._ensure_tensor(b))

    def __radd__(self, b: Any) -> Tensor:
        return Add.apply(self._ensure_tensor(b), self)

    def __sub__(self, b: Any) -> Tensor:
        return Sub.apply(self, self._ensure_tensor(b))

    def __rsub__(self, b: Any) -> Tensor:
        return Sub.apply(self._ensure_tensor(b), self)

    def __mul__(self, b: Any) -> Tensor:
        return Mul.apply(self, self._ensure_tensor(b))

    def __rmul__(self, b: Any) -> Tensor:
        return Mul.apply(self._ensure_tensor(b), self)

    def __truediv__(self, b: Any) -> Tensor:
        return Mul.apply(self, Inv.apply(self._ensure_tensor(b)))

    def __rtruediv__(self, b: Any) -> Tensor:
        return Mul.apply(self._ensure_tensor(b), Inv.apply(self))

    def __matmul__(self, b: Tensor) -> Tensor:
        return MatMul.apply(self, self._ensure_tensor(b))

    def __neg__(self) -> Tensor:
        return Neg.apply(self)

    def __lt__(self, b: Any) -> Tensor:
        return LT.apply(self, self._ensure_tensor(b))

    def __gt__(self, b: Any) -> Tensor:
        return LT.apply(self._ensure_tensor(b), self)

    def __eq__(self, b: Any) -> Tensor:  # type: ignore[override]
        return EQ.apply(self, self._ensure_tensor(b))

    __hash__ = object.__hash__

    def is_close(self, y: Any) -> Tensor:
        return IsClose.apply(self, self._ensure_tensor(y))

    def sigmoid(self) -> Tensor:
        return Sigmoid.apply(self)

    def relu(self) -> Tensor:
        return ReLU.apply(self)

    def log(self) -> Tensor:
        return Log.apply(self)

    def exp(self) -> Tensor:
        return Exp.apply(self)

    def square(self) -> Tensor:
        return Mul.apply(self, self)

    def sum(self, dim: int | None = None) -> Tensor:
        """Sum along ``dim`` (kept at size 1), or of everything into shape (1,)."""
        return Sum.apply(self, dim)

    def mean(self, dim: int | None = None) -> Tensor:
        """Mean along ``dim`` (kept at size 1), or of everything into shape (1,)."""
        if dim is None:
            return self.sum() / self.size
        return self.sum(dim) / self.shape[check_reduce_dim(self, dim)]

    def all(self, dim: int | None = None) -> Tensor:
        """1.0 where every element is non-zero (a product), along ``dim`` or overall."""
        return All.apply(self, dim)

    def permute(self, *order: int) -> Tensor:
        return Permute.apply(self, _unpack(order))

    def view(self, *shape: int) -> Tensor:
        return View.apply(self, _unpack(shape))

    def contiguous(self) -> Tensor:
        """A row-major copy (differentiable)."""
        return Copy.apply(self)

    def zero_(self) -> Tensor:
        self._tensor._storage[:] = 0.0
        return self

    def _flat(self) -> Tensor:
        """A 1-D view of a contiguous tensor, without history."""
        return self._view_raw((self.size,))

    def _view_raw(self, shape: tuple[int, ...]) -> Tensor:
        td = self._tensor
        return self._new(
            TensorData._trusted(td._storage, shape, strides_from_shape(shape), td.size)
        )


_alloc = object.__new__


def _wrap(td: TensorData, backend: TensorBackend) -> Tensor:
    """``Tensor(td, backend=backend)`` for internal callers whose arguments are known good.

    Every op makes a tensor or two, so this skips ``__init__``'s argument checks.
    """
    t = _alloc(Tensor)
    t._tensor = td
    t.history = None
    t.grad = None
    t.unique_id = next(_ids)
    t._name = None
    t.backend = backend
    t.f = backend
    return t


def _unpack(args: tuple[Any, ...]) -> tuple[Any, ...]:
    """The ints of ``f(2, 3)`` or of ``f((2, 3))``; anything else is checked downstream."""
    if len(args) == 1 and isinstance(args[0], (tuple, list, range, np.ndarray)):
        return tuple(args[0])
    return args


def _broadcasts_to(shape: tuple[int, ...], target: tuple[int, ...]) -> bool:
    try:
        return shape_broadcast(shape, target) == target
    except IndexingError:
        return False
