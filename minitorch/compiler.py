"""``minitorch.compile``: run a step of tensor code once, then replay its kernels.

A training step (zero_grad, forward, loss, backward, optimiser step) launches
the same kernels on buffers of the same sizes every time; only the numbers
change. ``compile(fn)`` wraps such a function. The first call with given input
shapes (and dtypes, backends, non-tensor arguments) runs ``fn`` eagerly while
the backend reports every kernel it launches and every buffer it fills
(``recording``); the record keeps those buffers alive. Later calls with the
same signature copy the inputs into the recorded input buffers and call the
recorded kernels again, in order, on the same buffers: no Python tensor code,
no autodiff graph, no allocation. The kernels and their arguments are those of
the eager run, except that runs of small elementwise launches are fused into
one generated kernel (``_fuse``) that applies the same scalar functions in the
same order; so a replay computes exactly what the eager step would, bit for bit.

What a replay repeats and what it cannot:

* Tensors the function reads but was not given (a module's parameters, an
  optimiser's state, a global tensor) are read through their storage, live.
  Optimisers update parameters in place, so their updates are seen; rebinding
  a value (``Parameter.update``, ``load_state_dict``) is detected for the
  parameters of the modules and optimisers the function can see (its
  arguments, closure, bound ``self`` and the globals it names) and records
  again. Reassigning any other tensor the function reads is not seen.
* Python numbers used inside the function are part of the record (a batch
  size, a loss weight). Pass numbers that change as arguments: non-tensor
  arguments are part of the signature, so a new value records again. The
  optimisers' hyperparameters (``lr``, ``betas``...) and step counts are
  re-read on every call.
* A call that reads tensor values into Python (``item``, ``float(t)``,
  ``t[i]``, ``to_numpy``, printing, a condition on a tensor) runs eagerly,
  and so does every later call with that signature (warned once): its
  control flow could depend on the values.
* Random draws (``rand``, ``dropout``) are drawn again on each replay from
  Python's ``random``, in the same order, so seeds repeat.
* Backends that do not report their launches (SimpleOps, CudaOps) run
  eagerly: compiling them changes nothing but the returned tensors.
* Returned tensors are fresh detached copies (a list of losses never aliases);
  gradients with respect to inputs that track gradients are given back to
  those inputs. Recording is not thread-safe: other threads must not run
  tensor code while a compiled function records.
"""

from __future__ import annotations

import functools
import operator
import sys
import types
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numba
import numpy as np
from numba.core.dispatcher import Dispatcher
from numba.core.errors import NumbaError

from . import autodiff, fast_kernels, kernel_cache, recording
from .module import Module, Parameter
from .optim import Optimizer
from .tensor import Tensor
from .tensor import _ids as tensor_ids
from .tensor_data import TensorData, strides_from_shape


class CompileWarning(UserWarning):
    """A compiled function that has to run eagerly (and why)."""


# A signature recorded this many times without a usable record runs eagerly from then on.
MAX_RECORDINGS = 3
# Records kept per compiled function (each holds its buffers); the oldest goes first.
MAX_RECORDS = 16
# Whether replays run runs of consecutive small elementwise launches as one generated kernel.
FUSE = True


def compile(fn: Callable[..., Any]) -> CompiledFunction:  # noqa: A001 - PyTorch's name
    """Wrap ``fn`` so that calls after the first replay its kernels (module docstring)."""
    if not callable(fn):
        raise TypeError(f"minitorch.compile needs a function, not {type(fn).__name__}.")
    return CompiledFunction(fn)


class CompiledFunction:
    """``fn`` with one record per call signature.

    ``last_call`` says what the latest call did: ``"recorded"``, ``"replayed"``
    or ``"eager"``.
    """

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn
        self.last_call = ""
        self._records: dict[Any, Record] = {}
        self._eager: dict[Any, str] = {}
        self._attempts: dict[Any, int] = {}
        functools.update_wrapper(self, fn)

    def reset(self) -> None:
        """Forget every record: the next call of each signature records again."""
        self._records.clear()
        self._eager.clear()
        self._attempts.clear()

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if recording.recorder is not None:
            # Inside another compiled function's recording: that one records these launches.
            self.last_call = "eager"
            return self.fn(*args, **kwargs)
        key, tensors, keep = _signature(args, kwargs)
        if key is None or key in self._eager:
            self.last_call = "eager"
            return _detached(self.fn(*args, **kwargs))
        record = self._records.get(key)
        if record is not None:
            if record.still_valid():
                self.last_call = "replayed"
                return record.replay(tensors)
            del self._records[key]
        return self._record(key, args, kwargs, tensors, keep)

    def _record(
        self,
        key: Any,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        tensors: list[Tensor],
        keep: list[Any],
    ) -> Any:
        """Run ``fn`` eagerly on private copies of the inputs while recording it."""
        self.last_call = "eager"
        if any(not t.backend.ops.records_launches for t in tensors):
            self._eager[key] = "its backend does not record launches"
            return _detached(self.fn(*args, **kwargs))
        recorder = Recorder()  # first: the private inputs count as the call's own tensors
        inputs = [_private_copy(t) for t in tensors]
        swap = dict(zip(map(id, tensors), inputs))
        private_args = _substitute(args, swap)
        private_kwargs = _substitute(kwargs, swap)
        watched = _watched(self.fn, args, kwargs)
        recording.recorder = recorder
        try:
            result = self.fn(*private_args, **private_kwargs)
        finally:
            recording.recorder = None
        _give_back_gradients(tensors, inputs)
        written = _written_inputs(recorder, inputs)
        _give_back_values(tensors, inputs, written)
        if recorder.eager_reason is not None:
            self._go_eager(key, recorder.eager_reason, recorder.warn)
            return _detached(result)
        attempts = self._attempts[key] = self._attempts.get(key, 0) + 1
        if recorder.unstable_reason is not None:
            if attempts >= MAX_RECORDINGS:
                self._go_eager(key, recorder.unstable_reason, True)
            return _detached(result)
        output = _Output(result)
        if output.eager_reason is not None:
            self._go_eager(key, output.eager_reason, True)
            return _detached(result)
        del result, private_args, private_kwargs  # the eager graph goes: see _visible
        watched.finish()
        if len(self._records) >= MAX_RECORDS:
            del self._records[next(iter(self._records))]
        self._records[key] = Record(recorder, inputs, written, output, watched, keep)
        self.last_call = "recorded"
        return output.build()

    def _go_eager(self, key: Any, reason: str, warn: bool) -> None:
        self._eager[key] = reason
        if warn:
            name = getattr(self.fn, "__qualname__", repr(self.fn))
            warnings.warn(
                f"minitorch.compile: {name} runs eagerly for these inputs: {reason}.",
                CompileWarning,
                stacklevel=3,
            )


# Signatures ---------------------------------------------------------------------------


def _signature(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, list[Tensor], list]:
    """A hashable key of the call (None if there is none), the tensors passed (in
    order), and the objects keyed by identity (which the record keeps alive so that
    their ids stay theirs). Inside ``no_grad()`` a call has another key: it builds no
    graph."""
    if not kwargs and all(isinstance(a, Tensor) for a in args):
        # The commonest call (tensors only), keyed as _full_signature keys it, sooner.
        key = (("tuple", tuple(("tensor", t._tensor.shape, t._tensor._storage.dtype,
                                id(t.backend), t.history is not None) for t in args)),
               ("dict", ()), autodiff._grad_enabled)  # fmt: skip
        return key, list(args), []
    return _full_signature(args, kwargs)


def _full_signature(
    args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[Any, list[Tensor], list]:
    tensors: list[Tensor] = []
    keep: list[Any] = []

    def key_of(value: Any) -> Any:
        if isinstance(value, Tensor):
            tensors.append(value)
            td = value._tensor
            return ("tensor", td.shape, td._storage.dtype, id(value.backend),
                    value.history is not None)  # fmt: skip
        if isinstance(value, (tuple, list)):
            return (type(value).__name__, tuple(key_of(v) for v in value))
        if isinstance(value, dict):
            return ("dict", tuple((k, key_of(v)) for k, v in value.items()))
        if value is None or isinstance(value, (bool, int, float, complex, str, bytes)):
            return (type(value).__name__, value)
        keep.append(value)
        return ("object", id(value))

    key = (key_of(args), key_of(kwargs), autodiff._grad_enabled)
    try:
        hash(key)
    except TypeError:  # an unhashable value inside an argument: no signature, run eagerly
        return None, tensors, keep
    return key, tensors, keep


def _substitute(value: Any, swap: dict[int, Tensor]) -> Any:
    """``value`` with each tensor replaced by its private copy (same nesting)."""
    if isinstance(value, Tensor):
        return swap[id(value)]
    if isinstance(value, (tuple, list)):
        return type(value)(_substitute(v, swap) for v in value)
    if isinstance(value, dict):
        return {k: _substitute(v, swap) for k, v in value.items()}
    return value


def _private_copy(t: Tensor) -> Tensor:
    """A contiguous copy of input ``t`` whose storage the record owns."""
    td = t._tensor
    copy = Tensor(
        TensorData._trusted(td.to_numpy().reshape(-1), td.shape, strides_from_shape(td.shape),
                            td.size),
        backend=t.backend,
    )  # fmt: skip
    if t.history is not None:
        copy.requires_grad_(True)
    copy._name = t._name
    return copy


def _copy_in(buffer: np.ndarray, t: Tensor) -> None:
    td = t._tensor
    if len(td._storage) == td.size and td.strides == strides_from_shape(td.shape):
        np.copyto(buffer, td._storage)
    else:
        np.copyto(buffer, td.to_numpy().reshape(-1))


def _written_inputs(recorder: Recorder, inputs: list[Tensor]) -> list[int]:
    """Indexes of the inputs the call wrote into (``x.zero_()``, an update in place)."""
    skip = recorder.inits | recorder.checks
    written = {_key(args[0]) for i, (_, args) in enumerate(recorder.ops) if i not in skip}
    return [i for i, t in enumerate(inputs) if _key(t._tensor._storage) in written]


def _give_back_values(tensors: list[Tensor], inputs: list[Tensor], written: list[int]) -> None:
    """Write the values of the private inputs the call changed into the caller's tensors."""
    for i in written:
        td, values = tensors[i]._tensor, inputs[i]._tensor._storage
        storage = td._storage
        view = np.lib.stride_tricks.as_strided(
            storage, td.shape, tuple(s * storage.itemsize for s in td.strides)
        )
        view[...] = values.reshape(td.shape)


def _give_back_gradients(tensors: list[Tensor], inputs: list[Tensor]) -> None:
    """Add each private input's gradient to the caller's tensor, as backward would have."""
    for t, private in zip(tensors, inputs):
        if private.grad is None:
            continue
        g = private.grad._copy()
        t.grad = g if t.grad is None else t.grad + g


def _detached(value: Any) -> Any:
    """``value`` with every tensor replaced by a detached copy."""
    if isinstance(value, Tensor):
        return _snapshot(value._tensor, value.backend)
    if isinstance(value, (tuple, list)):
        return type(value)(_detached(v) for v in value)
    if isinstance(value, dict):
        return {k: _detached(v) for k, v in value.items()}
    return value


def _snapshot(td: TensorData, backend: Any) -> Tensor:
    """A fresh contiguous tensor holding ``td``'s current values."""
    strides = strides_from_shape(td.shape)
    storage = td._storage
    if len(storage) == td.size and td.strides == strides:
        values = storage.copy()
    else:
        values = td.to_numpy().reshape(-1)
    return Tensor(TensorData._trusted(values, td.shape, strides, td.size), backend=backend)


class _Output:
    """How to rebuild ``fn``'s result after a replay: its tensors are read from
    their (recorded) storages, anything else is returned as it was."""

    def __init__(self, result: Any) -> None:
        self.eager_reason: str | None = None
        self.tensors: list[tuple[TensorData, Any]] = []
        self.template = self._template(result)

    def _template(self, value: Any) -> Any:
        if isinstance(value, Tensor):
            if not isinstance(value._tensor._storage, np.ndarray):
                self.eager_reason = "it returns a tensor that is not in host memory"
            self.tensors.append((value._tensor, value.backend))
            return _Slot(len(self.tensors) - 1)
        if isinstance(value, (tuple, list)):
            return type(value)(self._template(v) for v in value)
        if isinstance(value, dict):
            return {k: self._template(v) for k, v in value.items()}
        return value

    def build(self) -> Any:
        values = [_snapshot(td, backend) for td, backend in self.tensors]
        return _fill_template(self.template, values)


class _Slot:
    def __init__(self, index: int) -> None:
        self.index = index


def _fill_template(template: Any, values: list[Tensor]) -> Any:
    if isinstance(template, _Slot):
        return values[template.index]
    if isinstance(template, (tuple, list)):
        return type(template)(_fill_template(v, values) for v in template)
    if isinstance(template, dict):
        return {k: _fill_template(v, values) for k, v in template.items()}
    return template


# What the function can see: the guard against rebound parameters ------------------------


def _watched(fn: Callable[..., Any], args: tuple, kwargs: dict) -> _Watched:
    """The parameters and modules reachable from ``fn``'s arguments, closure, defaults,
    bound ``self`` and the globals it names: those values themselves when they are modules,
    optimisers or parameters, or else their attributes that are."""
    roots: list[Any] = [*args, *kwargs.values()]
    func = fn
    while True:
        owner = getattr(func, "__self__", None)
        if owner is not None and not isinstance(owner, types.ModuleType):
            roots.append(owner)
        inner = getattr(func, "__func__", None) or getattr(func, "__wrapped__", None)
        if inner is None:
            break
        func = inner
    if isinstance(func, types.FunctionType):
        roots.extend(cell.cell_contents for cell in func.__closure__ or () if _filled(cell))
        roots.extend(func.__defaults__ or ())
        roots.extend((func.__kwdefaults__ or {}).values())
        roots.extend(func.__globals__[n] for n in func.__code__.co_names if n in func.__globals__)
    else:
        roots.append(func)  # a callable object, e.g. a Module
    watched = (Module, Optimizer, Parameter)
    for root in list(roots):
        if not isinstance(root, (watched, type, types.ModuleType)):
            attributes = getattr(root, "__dict__", {}).values()
            roots.extend(v for v in attributes if isinstance(v, watched))
    modules: dict[int, Module] = {}
    parameters: dict[int, Parameter] = {}
    for root in roots:
        if isinstance(root, Module):
            for m in [root, *root._descendants()]:
                modules[id(m)] = m
            parameters.update((id(p), p) for p in root.parameters())
        elif isinstance(root, Optimizer):
            parameters.update((id(p), p) for p in root.parameters)
        elif isinstance(root, Parameter):
            parameters[id(root)] = root
    return _Watched(list(parameters.values()), list(modules.values()))


def _filled(cell: types.CellType) -> bool:
    try:
        cell.cell_contents  # noqa: B018 - an empty cell raises
    except ValueError:
        return False
    return True


class _Watched:
    """What the record assumes of the parameters and modules the function can see:
    the parameter values (tensor objects: a rebound value has other storage) and
    module modes the recording ended with."""

    def __init__(self, parameters: list[Parameter], modules: list[Module]) -> None:
        self.parameters = parameters
        self.modules = modules

    def finish(self) -> None:
        """Note the state the recorded call ended with."""
        self.values = [p.value for p in self.parameters]
        self.modes = [m.training for m in self.modules]

    def unchanged(self) -> bool:
        values = [p.value for p in self.parameters]
        return all(map(operator.is_, values, self.values)) and all(
            m.training == mode for m, mode in zip(self.modules, self.modes)
        )


# Recording ----------------------------------------------------------------------------


class Recorder:
    """Collects what one eager call launched (``recording`` describes each report)."""

    def __init__(self) -> None:
        self.ops: list[tuple[Callable[..., Any], tuple[Any, ...]]] = []
        # Indexes into ops: values a fresh storage starts with, and copies into fresh storages.
        self.inits: set[int] = set()
        self.copies: set[int] = set()
        self.checks: set[int] = set()  # ops that only read
        self.refreshers: list[Callable[[], None]] = []
        self.refreshed: set[int] = set()
        # Storages made from Python numbers that no op has written yet: reading them is safe.
        self.constants: set[int] = set()
        # Gradients: those found on tensors before the call replaced them (a replay needs
        # the same), and the last one each tensor was given (a replay gives it again).
        # Only tensors that existed before the call count (ids are issued in order).
        self.grads_found: dict[int, tuple[Tensor, Any]] = {}
        self.grads_left: dict[int, tuple[Tensor, Any]] = {}
        self.first_new_id = next(tensor_ids)
        self.eager_reason: str | None = None
        self.warn = True
        self.unstable_reason: str | None = None

    def launch(self, kernel: Callable[..., Any], args: tuple[Any, ...]) -> None:
        self.constants.discard(id(args[0]))
        self.ops.append((kernel, args))

    def fill(self, storage: Any, value: float) -> None:
        if self._on_host(storage):
            self.constants.discard(id(storage))
            self.ops.append((_fill, (storage, value)))

    def constant(self, storage: Any) -> None:
        if self._on_host(storage):
            self.constants.add(id(storage))
            self.inits.add(len(self.ops))
            self.ops.append((np.copyto, (storage, storage.copy())))

    def grad_read(self, tensor: Tensor, grad: Any) -> None:
        if tensor.unique_id < self.first_new_id and id(tensor) not in self.grads_left:
            self.grads_found.setdefault(id(tensor), (tensor, grad))

    def grad_set(self, tensor: Tensor, grad: Any) -> None:
        if tensor.unique_id < self.first_new_id:
            self.grads_left[id(tensor)] = (tensor, grad)

    def read(self, storage: Any, how: str) -> None:
        if id(storage) not in self.constants:
            self.eager_only(f"{how} read tensor values into Python")

    def check(self, fn: Callable[..., None], args: tuple[Any, ...]) -> None:
        self.checks.add(len(self.ops))
        self.ops.append((fn, args))

    def copy(self, dst: Any, src: Any) -> None:
        if self._on_host(dst):
            self.constants.discard(id(dst))
            self.copies.add(len(self.ops))
            self.ops.append((np.copyto, (dst, src)))

    def refresh(self, callback: Callable[[], None], storages: Sequence[Any]) -> None:
        self.refreshers.append(callback)
        self.refreshed.update(id(s) for s in storages)
        self.constants.difference_update(id(s) for s in storages)

    def unstable(self, why: str) -> None:
        if self.unstable_reason is None:
            self.unstable_reason = why

    def eager_only(self, why: str, warn: bool = True) -> None:
        if self.eager_reason is None:
            self.eager_reason = why
            self.warn = warn

    def function(self, cls: type, vals: tuple[Any, ...]) -> None:
        """A tensor function runs: its tensors' backends must report their launches."""
        for v in vals:
            if isinstance(v, Tensor) and not v.backend.ops.records_launches:
                self.eager_only(f"{v.backend!r} does not record launches", warn=False)

    def _on_host(self, storage: Any) -> bool:
        if isinstance(storage, np.ndarray):
            return True
        self.eager_only("a storage is not in host memory", warn=False)
        return False


def _fill(storage: np.ndarray, value: float) -> None:
    storage.fill(value)


class Record:
    """One recorded call: what to copy in, refresh and launch, and what to return."""

    def __init__(
        self,
        recorder: Recorder,
        inputs: list[Tensor],
        written: list[int],
        output: _Output,
        watched: _Watched,
        keep: list[Any],
    ) -> None:
        self.inputs = inputs
        self.written = written
        self.buffers = [t._tensor._storage for t in inputs]
        self.refreshers = recorder.refreshers
        self.grads_found = list(recorder.grads_found.values())
        self.grads_left = list(recorder.grads_left.values())
        self.ops = _plan(recorder, _visible(recorder.ops))
        self.output = output
        self.watched = watched
        self.keep = keep

    def still_valid(self) -> bool:
        return self.watched.unchanged() and all(t._grad is g for t, g in self.grads_found)

    def replay(self, tensors: list[Tensor]) -> Any:
        for buffer, t in zip(self.buffers, tensors):
            _copy_in(buffer, t)
        for refresh in self.refreshers:
            refresh()
        for fn, args in self.ops:
            fn(*args)
        for t, g in self.grads_left:
            t._grad = g
        _give_back_values(tensors, self.inputs, self.written)
        _give_back_gradients(tensors, self.inputs)
        return self.output.build()


# Planning the replay ---------------------------------------------------------------------
#
# Every op writes its first argument and may read any array argument (its first too:
# a reduction accumulates into it). Storages are keyed by identity; views of another
# array take no part in the rewrites below.


def _visible(ops: list[tuple[Callable[..., Any], tuple[Any, ...]]]) -> set[int]:
    """Ids of the storages that something besides the recorded ops still refers to
    once the eager call is over (parameters, optimiser state, outputs, gradients left
    on tensors): a replay must leave in them exactly what the eager call would.

    References are counted against a probe array held the same way, so anything
    unknown (an uncollected cycle, a cache) counts as visible.
    """
    held: dict[int, int] = {}
    arrays: list[np.ndarray] = []
    for _, args in ops:
        for a in args:
            if isinstance(a, np.ndarray):
                if id(a) not in held:
                    held[id(a)] = 0
                    arrays.append(a)
                held[id(a)] += 1
    probe = np.empty(0)
    arrays.append(probe)
    held[id(probe)] = 0
    del probe
    counts = [sys.getrefcount(a) for a in arrays]
    base = counts.pop()
    arrays.pop()
    seen = [a for a, count in zip(arrays, counts) if count - base > held[id(a)]]
    return {id(a) for a in seen} | {_key(a) for a in seen}


def _plan(
    recorder: Recorder, visible: set[int]
) -> list[tuple[Callable[..., Any], tuple[Any, ...]]]:
    """The recorded ops as a replay runs them, with the work only an eager call needs
    removed, and each kernel called through its native entry point.

    * A copy into a fresh storage (a gradient's own copy) is dropped, its source
      read in its place, when neither is written afterwards and nothing outside
      the record sees the copy.
    * An op whose result nothing reads later, and nothing outside sees, is dropped.
    * A fresh storage's starting values are put back only if some other op writes it.
    """
    ops = list(recorder.ops)
    inits = set(recorder.inits)
    copies = sorted(recorder.copies)
    checks = recorder.checks
    refreshed = recorder.refreshed
    removed: set[int] = set()
    for i in copies:
        dst, src = ops[i][1]
        if not (_plain(dst) and _plain(src)) or id(dst) in visible or id(src) in refreshed:
            continue
        later = [j for j in range(i + 1, len(ops)) if j not in removed and j not in checks]
        if any(_key(ops[j][1][0]) in (id(dst), id(src)) for j in later):
            continue
        removed.add(i)
        for j in range(i + 1, len(ops)):
            fn, args = ops[j]
            if any(a is dst for a in args):
                ops[j] = (fn, tuple(src if a is dst else a for a in args))
    live = set(visible) | refreshed
    for i in range(len(ops) - 1, -1, -1):
        if i in removed:
            continue
        args = ops[i][1]
        out = args[0]
        if _plain(out) and id(out) not in live and i not in inits and i not in checks:
            removed.add(i)
            continue
        live.update(_key(a) for a in args if isinstance(a, np.ndarray))
    # Written during the eager call, even by an op dropped since: then the storage no
    # longer holds its starting values when the next call begins.
    not_writes = inits | checks
    written = {_key(args[0]) for i, (_, args) in enumerate(recorder.ops) if i not in not_writes}
    kept = []
    for i, (fn, args) in enumerate(ops):
        if i in removed:
            continue
        if i in inits and (_key(args[0]) not in written or id(args[0]) in refreshed):
            continue
        kept.append((fn, args))
    if FUSE:
        kept = _fuse(kept, visible | refreshed)
    return [(_entry_point(fn, args), args) for fn, args in kept]


def _plain(a: Any) -> bool:
    """An array that owns its memory (no view of, or viewed as, another object we track)."""
    return isinstance(a, np.ndarray) and a.base is None


def _key(a: Any) -> int:
    """The identity of the memory ``a`` views: its root array."""
    while isinstance(getattr(a, "base", None), np.ndarray):
        a = a.base
    return id(a)


def _entry_point(fn: Callable[..., Any], args: tuple[Any, ...]) -> Callable[..., Any]:
    """The compiled entry of a kernel for ``args``, compiled (or loaded from disk) now if
    the eager call did not run it (NumPy stood in for its first launches: see
    ``fast_ops.STAND_IN_CALLS``), so that the compile cost stays with the first call."""
    if isinstance(fn, Dispatcher):
        signature = tuple(fn.typeof_pyval(a) for a in args)
        overload = fn.overloads.get(signature)
        if overload is None:
            fn.compile(signature)
            overload = fn.overloads.get(signature)
        if overload is not None and overload.entry_point is not None:
            return overload.entry_point
    return fn


# Fusing elementwise launches ------------------------------------------------------------
#
# A run of consecutive serial map / zip launches over contiguous storages (or
# single broadcast values) becomes one generated kernel: a loop per stretch of
# launches of one length, in which each launch's value is computed from its
# inputs at the same index, kept in a local for the launches after it, and
# stored only if something else reads the storage. Each value goes through the
# same scalar function and is rounded to the storage's dtype as the eager kernel
# stores it, so the results are bit for bit those of the separate launches.

# Serial elementwise kernels of fast_kernels: (arity, whether it takes a 2-D layout).
# The 2-D kernels (the general one and one per inner-stride pattern) share one signature.
_ELEMENTWISE = {"map_flat_ser": (1, False), "zip_flat_ser": (2, False)} | {
    fast_kernels.kernel_2d(kind, pattern, "ser"): (arity, True)
    for kind, arity in (("map", 1), ("zip", 2))
    for pattern in (None, *fast_kernels.patterns(arity))
}
_FUSED_DTYPES = {np.dtype(np.float64): "np.float64", np.dtype(np.float32): "np.float32"}


class _Elementwise:
    """One elementwise launch as a fused kernel reads it: ``out[j] = fn(x[j] or x[0], ...)``."""

    def __init__(self, scalar: Any, key: str | None, out: np.ndarray,
                 inputs: list[tuple[np.ndarray, bool]]) -> None:  # fmt: skip
        self.scalar = scalar
        self.key = key
        self.out = out
        self.inputs = inputs  # (storage, read as one broadcast value)
        self.size = len(out)


def _elementwise(fn: Any, args: tuple[Any, ...]) -> _Elementwise | None:
    """``fn(*args)`` as an elementwise launch a fused kernel can take, else None."""
    kind = isinstance(fn, Dispatcher) and _ELEMENTWISE.get(fn.py_func.__name__)
    if not kind:
        return None
    arity, two_d = kind
    arrays = args[: arity + 1]
    out = arrays[0]
    if not all(isinstance(a, np.ndarray) and a.ndim == 1 for a in arrays):
        return None
    if out.dtype not in _FUSED_DTYPES or any(a.dtype != out.dtype for a in arrays):
        return None
    if any(a is not out and _key(a) == _key(out) for a in arrays[1:]):
        return None  # an input overlapping the output through another view
    n = len(out)
    if not two_d:
        inputs = [(x, False) for x in arrays[1:]]
    else:
        n0, n1, so0, so1, *strides = args[arity + 1 :]
        if n0 * n1 != n or not _contiguous(n0, n1, so0, so1):
            return None
        inputs = []
        for x, s0, s1 in zip(arrays[1:], strides[::2], strides[1::2]):
            if _contiguous(n0, n1, s0, s1) and len(x) >= n:
                inputs.append((x, False))
            elif (n0 == 1 or s0 == 0) and (n1 == 1 or s1 == 0) and len(x) >= 1:
                if _key(x) == _key(out):
                    return None  # its own first value, read before the eager loop writes it
                inputs.append((x, True))
            else:
                return None
    globals_ = fn.py_func.__globals__
    return _Elementwise(globals_["fn"], kernel_cache.kernel_key(fn), out, inputs)


def _contiguous(n0: int, n1: int, s0: int, s1: int) -> bool:
    """Element (r, j) of an (n0, n1) layout with strides (s0, s1) sits at r * n1 + j."""
    return (n0 == 1 or s0 == n1) and (n1 == 1 or s1 == 1)


def _fuse(ops: list[tuple[Any, tuple[Any, ...]]], visible: set[int]) -> list:
    """``ops`` with each run of two or more consecutive fusable launches replaced by
    one generated kernel (falling back to the separate launches if it fails to compile)."""
    steps = [_elementwise(fn, args) for fn, args in ops]
    result: list[tuple[Any, tuple[Any, ...]]] = []
    i = 0
    while i < len(ops):
        j = i
        while j < len(ops) and steps[j] is not None:
            j += 1
        if j - i < 2:
            result.append(ops[i])
            i += 1
            continue
        elsewhere = {_key(a) for _, args in ops[:i] + ops[j:] for a in args
                     if isinstance(a, np.ndarray)}  # fmt: skip
        fused = _fused_kernel(steps[i:j], elsewhere, visible)  # type: ignore[arg-type]
        result.extend([fused] if fused is not None else ops[i:j])
        i = j
    return result


def _loops(steps: list[_Elementwise]) -> list[list[_Elementwise]]:
    """``steps`` split into loops: one length each, and no launch in a loop writing a
    storage that another reads there as a broadcast value or through another view."""
    loops: list[list[_Elementwise]] = []
    for step in steps:
        loop = loops[-1] if loops else None
        if loop is None or loop[0].size != step.size or _conflicts(loop, step):
            loops.append([step])
        else:
            loop.append(step)
    return loops


def _conflicts(loop: list[_Elementwise], step: _Elementwise) -> bool:
    written = {_key(s.out) for s in loop} | {_key(step.out)}
    seen: dict[int, np.ndarray] = {}
    for s in [*loop, step]:
        for a, broadcast in [(s.out, False), *s.inputs]:
            k = _key(a)
            if k in written and (broadcast or seen.setdefault(k, a) is not a):
                return True
    return False


def _fused_kernel(
    steps: list[_Elementwise], elsewhere: set[int], visible: set[int]
) -> tuple[Any, tuple[Any, ...]] | None:
    """One kernel (with its arguments) that computes ``steps`` in order. A value is
    stored unless only the launches after it in its loop read the storage: not a view,
    not ``visible``, not read by the other ops of the replay (``elsewhere``: after
    this one, or before it, as of the previous replay) nor by the other loops, and not
    read from memory earlier in its own loop (an in-place update)."""
    loops = _loops(steps)
    arrays: dict[int, int] = {}  # id -> argument index
    arguments: list[Any] = [loop[0].size for loop in loops]
    scalars: dict[int, str] = {}
    scalar_values: dict[str, Any] = {}
    keys: list[str | None] = []
    cast = _FUSED_DTYPES[steps[0].out.dtype]

    def name(a: np.ndarray) -> str:
        if id(a) not in arrays:
            arrays[id(a)] = len(arguments)
            arguments.append(a)
        return f"a{arrays[id(a)]}"

    body = []
    for n, loop in enumerate(loops):
        needed = elsewhere | {_key(a) for other in loops[:n] + loops[n + 1 :] for s in other
                              for a in (s.out, *(x for x, _ in s.inputs))}  # fmt: skip
        last_write = {id(s.out): s for s in loop}
        local: dict[int, str] = {}
        body.append(f"    for j in range(n{n}):")
        for s in loop:
            reads = []
            for x, broadcast in s.inputs:
                if broadcast or id(x) not in local:
                    needed.add(_key(x))  # read from memory: a write to it is kept
                    reads.append(f"{name(x)}[0]" if broadcast else f"{name(x)}[j]")
                else:
                    reads.append(local[id(x)])
            if id(s.scalar) not in scalars:
                scalars[id(s.scalar)] = f"fn{len(scalars)}"
                scalar_values[scalars[id(s.scalar)]] = s.scalar
                keys.append(s.key)
            value = f"v{len(body)}"
            body.append(f"        {value} = {cast}({scalars[id(s.scalar)]}({', '.join(reads)}))")
            local[id(s.out)] = value
            out = s.out
            keep = not _plain(out) or id(out) in visible or _key(out) in needed
            if keep and last_write[id(out)] is s:
                body.append(f"        {name(out)}[j] = {value}")
    params = [f"n{n}" for n in range(len(loops))] + [f"a{k}" for k in range(len(loops),
                                                                            len(arguments))]
    source = "\n".join([
        "import numpy as np",
        "",
        "from minitorch import fast_simd",
        "",
        "",
        '@njit(cache=True, error_model="numpy")',
        f"def fused_ser({', '.join(params)}):",
        "    fast_simd.wide_loops()",
        *body,
        "",
    ])  # fmt: skip
    module = kernel_cache.load_generated("fused", source, scalar_values, keys)
    kernel = module.fused_ser
    try:
        kernel.compile(tuple(numba.typeof(a) for a in arguments))
    except NumbaError:
        return None
    return kernel, tuple(arguments)
