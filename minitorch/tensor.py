"""The user-facing ``Tensor``: a TensorData, a backend, and autodiff history."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np

from . import autodiff, operators, recording
from .autodiff import Context, backpropagate
from .tensor_data import (
    IndexingError,
    Storage,
    TensorData,
    UserShape,
    as_dtype,
    as_int,
    check_allocation,
    check_shape,
    element_position,
    normalize_key,
    shape_broadcast,
    strides_from_shape,
)
from .tensor_functions import (
    EQ,
    LT,
    Abs,
    Add,
    All,
    Clamp,
    Compare,
    Copy,
    Exp,
    Extremum,
    Function,
    GetItem,
    History,
    Inv,
    IsClose,
    Log,
    MatMul,
    Mul,
    Neg,
    Permute,
    Pow,
    ReLU,
    Reshape,
    SetItem,
    Sigmoid,
    Sqrt,
    Sub,
    Sum,
    Tanh,
    ToBackend,
    ToDtype,
    View,
    _alloc,
    arg_extremum,
    key_view,
    max_reduce,
    region_view,
)
from .tensor_ops import SimpleBackend, TensorBackend, check_backend, check_reduce_dim

_ids = itertools.count()


def _binary(function: type[Function], name: str, reflected: bool = False) -> Any:
    """The operator ``Tensor.<name>``: ``function`` of the two operands (the right one
    first when ``reflected``), made alike by ``Tensor._operands``. Two tensors of one
    backend and one dtype, the commonest case by far, are checked here and skip it."""

    def operator(self: Tensor, b: Any) -> Tensor:
        if (
            b.__class__ is Tensor
            and b.f is self.f
            and b._tensor._storage.dtype is self._tensor._storage.dtype
        ):
            x, y = self, b
        else:
            x, y = self._operands(b)
        return function.apply(y, x) if reflected else function.apply(x, y)

    operator.__name__ = name
    operator.__qualname__ = f"Tensor.{name}"
    return operator


class Tensor:
    """A multidimensional float32 or float64 array that can record its history for autodiff.

    Its values live in a storage its backend owns (allocated, placed, cast and
    read back through the backend's storage methods), so nothing here depends
    on where the values are.
    """

    __slots__ = ("_tensor", "history", "_grad", "_name", "unique_id", "backend", "f")

    # Above NumPy's arrays and scalars, so ``np.float64(2) * t`` calls ``t.__rmul__``
    # (a tensor with history) instead of converting ``t`` through ``__array__``.
    __array_priority__ = 1000

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
        self._grad: Tensor | None = None
        self.unique_id = next(_ids)
        self._name = name
        self.backend = backend
        self.f = backend

    @property
    def grad(self) -> Tensor | None:
        """The gradient backward accumulated here (a leaf's), or None."""
        if recording.recorder is not None:
            recording.recorder.grad_read(self, self._grad)
        return self._grad

    @grad.setter
    def grad(self, value: Tensor | None) -> None:
        if recording.recorder is not None:
            recording.recorder.grad_set(self, value)
        self._grad = value

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
        """A new tensor over ``storage`` (no history), placed where ``backend`` keeps data."""
        td = TensorData(storage, shape, strides)
        if backend is not None:
            check_backend(backend)
            td._storage = backend.adopt(td._storage)
        t = Tensor(td, backend=backend)
        if recording.recorder is not None:
            recording.recorder.constant(t._tensor._storage)
        return t

    def _new(self, tensor_data: TensorData) -> Tensor:
        """A tensor over ``tensor_data`` on this backend, without history."""
        return _wrap(tensor_data, self.backend)

    def _make_like(
        self, storage: Any, shape: tuple[int, ...], size: int, strides: tuple[int, ...] = ()
    ) -> Tensor:
        """A contiguous tensor on this backend over freshly computed ``storage`` (pass
        ``strides`` when the caller holds the row-major strides of ``shape``).

        ``_wrap(TensorData._trusted(...))`` written out: every op's result is made here,
        and the two calls cost 6% of the instructions of ``a + b`` with autodiff.
        """
        if not strides:
            strides = strides_from_shape(shape)
        td = _alloc(TensorData)
        td._storage = storage
        td.shape = shape
        td.strides = strides
        td.dims = len(shape)
        td.size = size
        td._shape_arr = td._strides_arr = None
        td._offset = 0
        t = _alloc(Tensor)
        t._tensor = td
        t.history = t._grad = t._name = None
        t.unique_id = next(_ids)
        t.backend = t.f = self.backend
        return t

    def zeros(self, shape: UserShape | None = None) -> Tensor:
        """Zeros of ``shape`` (default: this tensor's) on this backend."""
        dtype = self._tensor._storage.dtype
        if shape is None:
            shape, size = self.shape, self.size
        else:
            shape = check_shape(shape)
            size = check_allocation(shape, dtype)
        storage = self.backend.zeros(size, dtype)
        if recording.recorder is not None:
            recording.recorder.constant(storage)
        return self._make_like(storage, shape, size)

    def _type_(self, backend: TensorBackend) -> None:
        """Switch this tensor's backend; the backend moves the storage if it must."""
        check_backend(backend)
        self.backend = backend
        self.f = backend
        self._placed()

    def _placed(self) -> TensorData:
        """This tensor's layout, its storage where the backend keeps data (moved in
        place if it was built elsewhere, as ``Tensor(td, backend=...)`` allows), so
        that views share it."""
        td = self._tensor
        storage = self.backend.adopt(td._storage)
        if storage is not td._storage:
            td._storage = storage
        return td

    def _ensure_tensor(self, b: Any) -> Tensor:
        """A number becomes a (1,) tensor of this tensor's dtype (a "weak" scalar, as in
        PyTorch: ``x32 * 0.5`` stays float32); a tensor moves to this backend if needed."""
        if isinstance(b, Tensor):
            if b.backend is not self.backend:
                return ToBackend.apply(b, self.backend)
            return b
        if isinstance(b, (int, float, np.integer, np.floating)):
            c = self._make_like(self.backend.full(1, b, self._tensor._storage.dtype), (1,), 1, (1,))
            if recording.recorder is not None:
                recording.recorder.constant(c._tensor._storage)
            return c
        raise TypeError(f"Cannot combine a Tensor with {type(b).__name__}.")

    def _operands(self, b: Any) -> tuple[Tensor, Tensor]:
        """``self`` and ``b`` as tensors of one backend and one dtype: the float32 one is
        cast to float64 (differentiably) when they differ, as PyTorch promotes."""
        b = self._ensure_tensor(b)
        da = self._tensor._storage.dtype
        db = b._tensor._storage.dtype
        if da is db or da == db:
            return self, b
        if da.itemsize < db.itemsize:
            return ToDtype.apply(self, db), b
        return self, ToDtype.apply(b, da)

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
    def dtype(self) -> np.dtype:
        """``minitorch.float32`` or ``minitorch.float64``: the storage's dtype."""
        return self._tensor._storage.dtype

    def to(self, target: Any) -> Tensor:
        """This tensor in another dtype or on another backend (differentiable; the
        gradient goes back to this tensor's dtype and backend). ``self`` if nothing
        changes, as in PyTorch."""
        if isinstance(target, TensorBackend):
            return self if target is self.backend else ToBackend.apply(self, target)
        dtype = as_dtype(target)
        return self if dtype == self.dtype else ToDtype.apply(self, dtype)

    def float(self) -> Tensor:
        """This tensor as float32 (``to(minitorch.float32)``)."""
        return self.to("float32")

    def double(self) -> Tensor:
        """This tensor as float64 (``to(minitorch.float64)``)."""
        return self.to("float64")

    @property
    def data(self) -> Tensor:
        """The same values, detached (PyTorch's ``.data``)."""
        return self.detach()

    def tuple(self) -> tuple[Any, Any, Any]:
        return self._tensor.tuple()

    def to_numpy(self) -> np.ndarray:
        """A contiguous NumPy copy of the values, in the tensor's dtype."""
        if recording.recorder is not None:
            recording.recorder.read(self._tensor._storage, "to_numpy() or item()")
        td = self._tensor
        return td.to_numpy(self.backend.to_numpy(td._storage))

    def item(self) -> float:
        if self.size != 1:
            raise ValueError(f"item() needs a tensor of size 1, not shape {self.shape}.")
        return float(self.to_numpy().reshape(-1)[0])

    def __getitem__(self, key: Any) -> float | Tensor:
        """One int per dim gives that element as a float (the course's rule);
        otherwise ints, slices (positive steps), None and ``...`` select a view
        (as in PyTorch), through which gradients flow back to the region."""
        td = self._tensor
        position = element_position(td.shape, td.strides, key)
        if position is not None:
            if recording.recorder is not None:
                recording.recorder.read(td._storage, "t[index]")
            return float(td._storage[position])
        entries = normalize_key(td.shape, key)
        if not any(e is None or e.__class__ is slice for e in entries):
            return float(key_view(self, entries).item())  # e.g. t[..., 0] of a 1-D t
        self._placed()  # so that the view shares the backend's storage
        return GetItem.apply(self, entries)

    def __setitem__(self, key: Any, value: Any) -> None:
        """Write ``value`` (a number, or a tensor broadcasting to the selected region).

        Setting one element by one int per dim to a number always works, as in
        the course (even on leaves from ``tensor()`` and ``rand()``). Any other
        write goes through a view. Like PyTorch, it is an error on a leaf that
        requires grad, unless inside ``no_grad()``; into other tensors it is
        recorded, so gradients reach ``value``. Unlike PyTorch, writing into a
        view (``t[0][1:] = v``) of a tensor that requires grad is an error, the
        write is recorded only on the tensor written to (not on other views of
        its storage), and a tensor that an earlier op saved for its backward is
        not checked for changes.
        """
        td = self._tensor
        history = self.history
        tracked = autodiff._grad_enabled and history is not None and history.last_fn is not None
        is_number = isinstance(value, (int, float, np.integer, np.floating))
        if is_number and not tracked:
            position = element_position(td.shape, td.strides, key)
            if position is not None:
                td._storage[position] = value
                if recording.recorder is not None:
                    recording.recorder.launch(np.put, (td._storage, position, float(value)))
                return
        if not is_number and not isinstance(value, Tensor):
            raise TypeError(
                f"A value written into a tensor is a number or a tensor, not "
                f"{type(value).__name__} (convert arrays with minitorch.tensor_from_numpy)."
            )
        entries = normalize_key(td.shape, key)
        if autodiff._grad_enabled and history is not None:
            if history.last_fn is None:
                raise RuntimeError(
                    "A leaf tensor that requires grad cannot be written through a slice; "
                    "write inside `with minitorch.no_grad():`, or into t.detach() (same storage)."
                )
            if history.last_fn in _VIEW_FUNCTIONS and _may_overlap(
                history.inputs[0]._tensor._storage, td._storage
            ):
                # The base's own history would not see the write, so its gradients
                # would be silently wrong (PyTorch rewrites the base's history instead).
                raise RuntimeError(
                    "Cannot write into a view of a tensor that requires grad (its "
                    "gradients would miss the write): write into the tensor itself, "
                    "e.g. t[0, 1:] = v rather than t[0][1:] = v, or into a copy (.contiguous())."
                )
        value = self._ensure_tensor(value).to(td._storage.dtype)
        td = self._placed()
        region = region_view(self, entries)
        if not _broadcasts_to(value.shape, region.shape):
            raise IndexingError(
                f"Cannot assign a value of shape {value.shape} to a region of shape "
                f"{region.shape} (it must broadcast)."
            )
        source = value.detach()
        if _may_overlap(source._tensor._storage, td._storage):
            source = source._copy()  # t[1:] = t[:-1] must read before it writes
        self.f.id_cmap(source, region)
        if autodiff._grad_enabled and (tracked or value.history is not None):
            previous = Tensor(td, history, backend=self.backend)
            ctx = Context()
            ctx.save_for_backward(entries, tracked)
            self.history = History(SetItem, ctx, (previous, value))

    def __iter__(self) -> Iterator[float | Tensor]:
        """Rows along the first dim (floats for a 1-D tensor), like ``t[i]`` for each i."""
        for i in range(len(self)):
            yield self[i]

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        """``np.asarray(t)`` / ``np.array(t)``: always a new array (NumPy's copy=False,
        which forbids copying, is refused)."""
        if copy is False:
            raise ValueError("A minitorch tensor converts to NumPy only by copying.")
        values = self.to_numpy()
        return values if dtype is None else values.astype(dtype, copy=False)

    def numpy(self) -> np.ndarray:
        """A NumPy copy of the values (PyTorch's ``numpy()`` shares memory instead)."""
        return self.to_numpy()

    def tolist(self) -> list[Any]:
        """The values as nested Python lists of floats."""
        return self.to_numpy().tolist()

    def storage_offset(self) -> int:
        """Where this view starts in the storage it was sliced from (0 unless indexed)."""
        return self._tensor.storage_offset()

    def is_contiguous(self) -> bool:
        """True when the values lie in row-major order (``view`` needs that)."""
        return self._tensor.is_row_major()

    def __repr__(self) -> str:
        if recording.recorder is not None:
            recording.recorder.read(self._tensor._storage, "printing a tensor")
        return self._tensor.to_string()

    def __len__(self) -> int:
        if not self.shape:
            raise TypeError("len() of a 0-d tensor.")
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
            grad_output = self._make_like(self.backend.full(1, 1.0, self.dtype), self.shape, 1)
            if recording.recorder is not None:
                recording.recorder.constant(grad_output._tensor._storage)
        else:
            grad_output = self._ensure_tensor(grad_output).to(self.dtype)
            if grad_output.shape != self.shape:
                if not _broadcasts_to(grad_output.shape, self.shape):
                    raise ValueError(
                        f"grad_output of shape {grad_output.shape} does not match the "
                        f"tensor's shape {self.shape}."
                    )
                grad_output = grad_output.f.id_map(grad_output, self.zeros(self.shape))
        backpropagate(self, grad_output, _graph_order(self))

    def zero_grad_(self) -> None:
        self.grad = None

    def detach(self) -> Tensor:
        """The same data, with no history."""
        return _wrap(self._tensor, self.backend)

    def _copy(self) -> Tensor:
        storage = self._tensor._storage
        td = self._tensor
        if not isinstance(storage, np.ndarray) or len(storage) != td.size:
            return self.f.id_map(self)  # off the host, or a view reaching past its values
        copy = storage.copy()
        if recording.recorder is not None:
            recording.recorder.copy(copy, storage)
        return self._new(TensorData._trusted(copy, td.shape, td.strides, td.size))

    # Operators --------------------------------------------------------------

    # Binary operators take ``_operands``: one backend, one dtype (float32 with
    # float64 gives float64), a number in the tensor's dtype (see ``_binary``).

    __add__ = _binary(Add, "__add__")
    __radd__ = _binary(Add, "__radd__", reflected=True)
    __sub__ = _binary(Sub, "__sub__")
    __rsub__ = _binary(Sub, "__rsub__", reflected=True)
    __mul__ = _binary(Mul, "__mul__")
    __rmul__ = _binary(Mul, "__rmul__", reflected=True)

    def __truediv__(self, b: Any) -> Tensor:
        if isinstance(b, (int, float, np.integer, np.floating)) and not isinstance(b, bool):
            # ``x / 10``: the reciprocal of a number in the tensor's dtype, as the Inv
            # kernel would make it (one IEEE division), so one kernel and no Inv node.
            dtype = self._tensor._storage.dtype.type
            try:
                if 1e-30 < abs(b) < 1e30:
                    # (Nothing to overflow, in either dtype, so no warning to silence:
                    # ``np.errstate`` costs 2 us, a third of the whole op.)
                    inverse = dtype(1) / dtype(b)
                else:
                    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
                        inverse = dtype(1) / dtype(b)
            except OverflowError:  # an int beyond the dtype: as a tensor it fails alike
                pass
            else:
                return Mul.apply(self, self._ensure_tensor(inverse))
        x, y = self._operands(b)
        return Mul.apply(x, Inv.apply(y))

    def __rtruediv__(self, b: Any) -> Tensor:
        x, y = self._operands(b)
        return Mul.apply(y, Inv.apply(x))

    __matmul__ = _binary(MatMul, "__matmul__")

    def __neg__(self) -> Tensor:
        return Neg.apply(self)

    __lt__ = _binary(LT, "__lt__")
    __gt__ = _binary(LT, "__gt__", reflected=True)
    __eq__ = _binary(EQ, "__eq__")  # type: ignore[assignment]

    __hash__ = object.__hash__

    def is_close(self, y: Any) -> Tensor:
        return IsClose.apply(*self._operands(y))

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

    # PyTorch-style shape operations ----------------------------------------------

    def reshape(self, *shape: int) -> Tensor:
        """This tensor's elements (row-major order) as ``shape`` (one entry may be -1):
        a view when the layout allows it, else a copy. Differentiable."""
        return Reshape.apply(self, _unpack(shape))

    def flatten(self, start_dim: int = 0, end_dim: int = -1) -> Tensor:
        """Dims ``start_dim`` to ``end_dim`` merged into one (a view when possible)."""
        if not self.shape:
            return self.reshape(1)
        start = check_reduce_dim(self, start_dim)
        end = check_reduce_dim(self, end_dim)
        if start > end:
            raise IndexingError(
                f"flatten: start_dim {start_dim} comes after end_dim {end_dim} for shape "
                f"{self.shape}."
            )
        shape = self.shape
        merged = 1
        for d in shape[start : end + 1]:
            merged *= d
        return Reshape.apply(self, shape[:start] + (merged,) + shape[end + 1 :])

    def unsqueeze(self, dim: int) -> Tensor:
        """A view with a new size-1 dim at ``dim`` (in ``-dims-1 .. dims``)."""
        dims = self.dims
        d = as_int(dim, "A dimension")
        if not -dims - 1 <= d <= dims:
            raise IndexingError(
                f"unsqueeze: dimension {dim} out of range for shape {self.shape} "
                f"(allowed: {-dims - 1} to {dims})."
            )
        d %= dims + 1
        return Reshape.apply(self, self.shape[:d] + (1,) + self.shape[d:])

    def squeeze(self, dim: int | None = None) -> Tensor:
        """A view without size-1 dims (all of them, or just ``dim`` if it has size 1).

        Unlike PyTorch, which can return a 0-d tensor, squeezing every dim away
        leaves shape (1,): minitorch tensors always have at least one dim.
        """
        shape = self.shape
        if dim is None:
            kept = tuple(d for d in shape if d != 1)
        else:
            d = check_reduce_dim(self, dim)
            kept = shape if shape[d] != 1 else shape[:d] + shape[d + 1 :]
        return Reshape.apply(self, kept or (1,))

    def transpose(self, dim0: int, dim1: int) -> Tensor:
        """A view with dims ``dim0`` and ``dim1`` swapped."""
        d0, d1 = check_reduce_dim(self, dim0), check_reduce_dim(self, dim1)
        order = list(range(self.dims))
        order[d0], order[d1] = order[d1], order[d0]
        return Permute.apply(self, tuple(order))

    @property
    def T(self) -> Tensor:  # noqa: N802 - PyTorch's name
        """The transpose of a 2-D tensor (a 1-D tensor is returned as is)."""
        if self.dims > 2:
            raise IndexingError(
                f".T is for tensors of at most 2 dims, not shape {self.shape}; use "
                "transpose(d0, d1) or permute(...)."
            )
        return self if self.dims < 2 else self.transpose(0, 1)

    # More math ---------------------------------------------------------------------

    def __pow__(self, b: Any) -> Tensor:
        if isinstance(b, Tensor):
            return Pow.apply(*self._operands(b))
        return Pow.apply(self, _number(b))

    def __rpow__(self, b: Any) -> Tensor:
        return Pow.apply(_number(b), self)

    def pow(self, exponent: Any) -> Tensor:
        """``self ** exponent``, elementwise with broadcasting; NumPy's rules for
        negative bases, zeros and overflow."""
        return self**exponent

    def __le__(self, b: Any) -> Tensor:
        return Compare.apply(*self._operands(b), operators.le)

    def __ge__(self, b: Any) -> Tensor:
        return Compare.apply(*self._operands(b), operators.ge)

    def __ne__(self, b: Any) -> Tensor:  # type: ignore[override]
        return Compare.apply(*self._operands(b), operators.ne)

    def tanh(self) -> Tensor:
        return Tanh.apply(self)

    def sqrt(self) -> Tensor:
        """Square root; nan for negative values."""
        return Sqrt.apply(self)

    def abs(self) -> Tensor:
        """Absolute value; the gradient at 0 is 0."""
        return Abs.apply(self)

    def __abs__(self) -> Tensor:
        return Abs.apply(self)

    def clamp(self, min: float | None = None, max: float | None = None) -> Tensor:  # noqa: A002
        """Values limited to ``[min, max]`` (either may be None); NaN stays NaN.

        The bounds are numbers; the gradient passes where ``min <= x <= max``.
        """
        if min is None and max is None:
            raise ValueError("clamp needs at least one of min and max.")
        low = None if min is None else _number(min)
        high = None if max is None else _number(max)
        return Clamp.apply(self, low, high)

    # Reductions (the reduced dim stays with size 1; no dim: shape (1,)) --------------

    def _reduce_dim(self, dim: Any, name: str) -> int | None:
        """``dim`` normalised (None: everything), refusing an empty reduction."""
        d = None if dim is None else check_reduce_dim(self, dim)
        if (self.size if d is None else self.shape[d]) == 0:
            raise ValueError(f"{name} of an empty tensor (shape {self.shape}) has no value.")
        return d

    def max(self, dim: int | None = None) -> Tensor:  # noqa: A003
        """Maximum along ``dim`` (kept at size 1), or of everything (shape (1,)).

        PyTorch's ``max(dim)`` returns values and indices and drops the dim;
        here it returns the values only (see ``argmax``) and keeps the dim. NaN
        propagates; tied maxima share the gradient equally.
        """
        return Extremum.apply(self, self._reduce_dim(dim, "max"), True)

    def min(self, dim: int | None = None) -> Tensor:  # noqa: A003
        """Minimum along ``dim`` (kept at size 1), or of everything; see ``max``."""
        return Extremum.apply(self, self._reduce_dim(dim, "min"), False)

    def argmax(self, dim: int | None = None) -> Tensor:
        """Index of the first maximum along ``dim`` (kept at size 1), as float values;
        with no dim, the index into the flattened tensor, shape (1,). Not differentiable."""
        return arg_extremum(self.detach(), self._reduce_dim(dim, "argmax"), True)

    def argmin(self, dim: int | None = None) -> Tensor:
        """Index of the first minimum; see ``argmax``."""
        return arg_extremum(self.detach(), self._reduce_dim(dim, "argmin"), False)

    def var(self, dim: int | None = None, correction: int = 0) -> Tensor:
        """Variance along ``dim`` (kept at size 1) or of everything, dividing by
        ``n - correction``: the population variance by default, like NumPy
        (PyTorch's default is ``correction=1``)."""
        d = self._reduce_dim(dim, "var")
        n = self.size if d is None else self.shape[d]
        centered = self - (self.mean() if d is None else self.mean(d))
        squares = centered * centered
        total = squares.sum() if d is None else squares.sum(d)
        return total / (n - as_int(correction, "correction"))

    def std(self, dim: int | None = None, correction: int = 0) -> Tensor:
        """Standard deviation: ``var(dim, correction).sqrt()`` (population by default)."""
        return self.var(dim, correction).sqrt()

    def softmax(self, dim: int) -> Tensor:
        """``exp(x) / sum(exp(x))`` along ``dim``; same shape, slices sum to 1.

        The per-slice max is subtracted first so ``exp`` cannot overflow (softmax
        is shift-invariant, so the shift needs no gradient).
        """
        d = check_reduce_dim(self, dim)
        e = (self - max_reduce(self, d)).exp()
        return e / e.sum(d)

    def log_softmax(self, dim: int) -> Tensor:
        """``x - log(sum(exp(x)))`` along ``dim``, computed stably (max subtracted)."""
        d = check_reduce_dim(self, dim)
        shifted = self - max_reduce(self, d)
        return shifted - shifted.exp().sum(d).log()

    def zero_(self) -> Tensor:
        """Set every element to 0 in place (through a view, only the view's elements)."""
        td = self._tensor
        if len(td._storage) == td.size:
            td._storage[:] = 0.0
            if recording.recorder is not None:
                recording.recorder.fill(td._storage, 0.0)
        else:
            self.f.id_cmap(self.zeros((1,)), self)
        return self

    def _flat(self) -> Tensor:
        """A 1-D view of a contiguous tensor, without history."""
        return self._view_raw((self.size,))

    def _view_raw(self, shape: tuple[int, ...]) -> Tensor:
        return self._new(self._tensor.strided_view(shape, strides_from_shape(shape)))


def _wrap(td: TensorData, backend: TensorBackend) -> Tensor:
    """``Tensor(td, backend=backend)`` for internal callers whose arguments are known good.

    Every op makes a tensor or two, so this skips ``__init__``'s argument checks.
    (``Tensor._make_like`` writes these lines out again for an op's result.)
    """
    t = _alloc(Tensor)
    t._tensor = td
    t.history = t._grad = t._name = None
    t.unique_id = next(_ids)
    t.backend = t.f = backend
    return t


def _graph_order(output: Tensor) -> list[Tensor]:
    """``autodiff.topological_sort(output)``: the same depth-first search, so the same
    nodes in the same order (and the same gradient sums), reading each tensor's history
    directly instead of through the Variable protocol's methods and properties: 27 -> 13
    us for the course MLP's 27 nodes (the generic sort was a tenth of its backward)."""
    order: list[Tensor] = []
    if output.history is None:
        return order
    seen: set[int] = set()
    # A node to expand, or ``_EXPANDED`` over a node whose parents are done (no tuples).
    stack: list[Any] = [output]
    pop, push, see, emit = stack.pop, stack.append, seen.add, order.append
    while stack:
        node = pop()
        if node is _EXPANDED:
            emit(pop())
            continue
        uid = node.unique_id
        if uid in seen:
            continue
        see(uid)
        push(node)
        push(_EXPANDED)
        history = node.history
        if history.last_fn is not None:  # (not a leaf)
            for parent in history.inputs:
                if (
                    isinstance(parent, Tensor)
                    and parent.history is not None
                    and parent.unique_id not in seen
                ):
                    push(parent)
    order.reverse()
    return order


_EXPANDED = object()


def _unpack(args: tuple[Any, ...]) -> tuple[Any, ...]:
    """The ints of ``f(2, 3)`` or of ``f((2, 3))``; anything else is checked downstream."""
    if len(args) == 1 and isinstance(args[0], (tuple, list, range, np.ndarray)):
        return tuple(args[0])
    return args


# Functions whose result may share the input's storage: writing into such a result
# changes the input's values behind its history.
_VIEW_FUNCTIONS = (GetItem, Reshape, View, Permute)


def _number(value: Any) -> float:
    """A number argument as a float; anything else is a TypeError."""
    if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
        return float(value)
    raise TypeError(f"Expected a number, not {type(value).__name__}.")


def _may_overlap(a: Any, b: Any) -> bool:
    """Whether two storages may share memory (assumed unless both are NumPy arrays)."""
    if not (isinstance(a, np.ndarray) and isinstance(b, np.ndarray)):
        return True
    return bool(np.may_share_memory(a, b))


def _broadcasts_to(shape: tuple[int, ...], target: tuple[int, ...]) -> bool:
    try:
        return shape_broadcast(shape, target) == target
    except IndexingError:
        return False
