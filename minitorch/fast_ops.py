"""FastOps: the four primitives as compiled, parallel Numba kernels.

Python does the general work once per call (output allocation, simplifying
the layout, picking serial or parallel); the loops run in machine code from
the templates in ``fast_kernels``, compiled per scalar function on first use
and cached on disk (``kernel_cache``).
"""

from __future__ import annotations

import functools
import math
import os
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numba
import numpy as np
from numba import prange
from numba.core.errors import NumbaError

from . import fast_kernels, fast_math, fast_optim, fast_simd, operators, recording
from .kernel_cache import (
    PARALLEL_ELEMENTS,
    ScalarCompileError,
    load_kernels,
    njit,
    on_disk,
    variant,
)
from .tensor_data import Shape, Storage, Strides, TensorData, strides_from_shape
from .tensor_ops import (
    MapProto,
    TensorOps,
    ZipProto,
    check_broadcast_into,
    check_map_out,
    map_output,
    matmul_batch,
    matmul_layout,
    reduce_output,
    result_dtype,
    zip_output,
)

if TYPE_CHECKING:
    from .tensor import Tensor

# Reductions whose fold may run in independent lanes (associative and commutative),
# with their lane-by-lane form on SIMD vectors. Not ``operators.max``: with a NaN
# its result depends on the order of the fold; ``maximum`` propagates NaN.
_LANE_SAFE = {
    operators.add: fast_simd.add,
    operators.mul: fast_simd.mul,
    operators.maximum: fast_simd.maximum,
}

# Functions whose arguments may be swapped: IEEE addition and multiplication are
# commutative bit for bit (bar which NaN's payload a pair of NaNs keeps).
_COMMUTATIVE = (operators.add, operators.mul)

# IEEE-exact scalar functions and the NumPy ufuncs that give the same bits (the same
# single operation per element, in the arithmetic of the kernel's module: NumPy picks
# its loop by the operands' dtypes and rounds into ``out`` as a kernel's store does).
_UFUNCS: dict[Callable[..., float], np.ufunc] = {
    operators.add: np.add,
    operators.sub: np.subtract,
    operators.mul: np.multiply,
    operators.neg: np.negative,
    operators.id: np.positive,
    operators.lt: np.less,
    operators.eq: np.equal,
}


def _ufunc_form(ufunc: np.ufunc) -> Callable[..., Any]:
    return lambda out, *xs: ufunc(*xs, out=out)


# (A kernel's ``math.exp`` is fast_math's, whose NumPy twin gives its bits.)
def _exp_form(out: Storage, x: Storage) -> None:
    np.copyto(out, np.where(x > operators.EXP_MAX, np.inf, fast_math.exp_numpy(x)))


def _sigmoid_form(out: Storage, x: Storage) -> None:
    ex = fast_math.exp_numpy(-np.abs(x))
    np.divide(np.where(x >= 0.0, 1.0, ex), 1.0 + ex, out=out)


# ``math.log`` in Python calls the C library's ``log``, as a float64 kernel's does (the
# float32 one calls ``logf``, which Python cannot).
_libm_log = np.frompyfunc(math.log, 1, 1)


def _log_form(out: Storage, y: Storage) -> None:
    y = y + operators.EPS
    positive = y > 0.0
    result = np.where(y == 0.0, -np.inf, np.nan)
    result[positive] = _libm_log(y[positive])
    np.copyto(out, result)


# NumPy forms of scalar functions, ``form(out, *xs)`` with the inputs in the kernel's
# arithmetic: the same IEEE operations in the same order (Python's, left to right),
# selections by ``where`` (``x if x > 0 else 0`` keeps a NaN's 0 and a -0's 0), so
# the same bits. Only functions whose every step has such a twin: NumPy's own exp, log
# or tanh round differently from the C library's (``log`` goes through Python's).
_NUMPY_FORMS: dict[Callable[..., float], Callable[..., Any]] = {
    **{fn: _ufunc_form(ufunc) for fn, ufunc in _UFUNCS.items()},
    operators.relu: lambda out, x: np.copyto(out, np.where(x > 0.0, x, 0.0)),
    operators.relu_back: lambda out, x, d: np.copyto(out, np.where(x > 0.0, d, 0.0)),
    operators.sigmoid_back_from_output: lambda out, s, d: np.multiply(d * s, 1.0 - s, out=out),
    # (d / +0 is d * inf, the scalar's own case for x + EPS == 0)
    operators.log_back: lambda out, x, d: np.divide(d, x + operators.EPS, out=out),
    operators.exp: _exp_form,
    operators.sigmoid: _sigmoid_form,
    operators.log: _log_form,
}
# Costly forms (some thirty NumPy calls, or a Python call per element: 5-50 us a launch
# more than the kernel) stand in only for launches up to this many elements, and only
# for a kernel's first _COSTLY_FORM_CALLS launches: enough for a short run's first
# epoch, without slowing a long run's first thousand steps (the course MLP's epoch by
# 11% when its kernels are on disk already, with the usual count).
_COSTLY_FORMS = {operators.exp: 1024, operators.sigmoid: 1024, operators.log: 256}
_COSTLY_FORM_CALLS = 32
# A kernel whose machine code is on disk already stands in for this many launches only:
# loading it takes about 5 ms, a form's launch some microseconds more than the kernel's
# (the layout checks, the error state, NumPy's dispatch; 80 us more for relu's at 20,000
# elements). A thousand stand-ins made `make demo`'s 100 epochs 7.4-8.3 ms each against
# 4.6-5.7 with the kernels; loading every kernel at its first launch made a warm start
# 0.08 s longer (0.72 -> 0.80 s, the course MLP's first epoch, every kernel on disk; each
# lookup then also asked LLVM for the CPU's features, see kernel_cache._magic_tuple).
_ON_DISK_CALLS = 32
# Forms for float64 arithmetic only.
_FLOAT64_FORMS = {operators.log}

# A serial kernel of one of those functions (and the serial reduction of a sum or a
# product) compiles on its STAND_IN_CALLS-th launch; the launches before it run the
# NumPy form instead. Compiling takes 0.07-0.4 s a kernel (16 of the 18 kernels of a
# cold course-MLP epoch: only its two matmul kernels compile) and saves some microseconds
# a launch over a form (all the stand-ins together, 3 ms of each 8 ms epoch of the demo),
# so a short run should not wait for it; a long one still gets it early (and a kernel on
# disk after _ON_DISK_CALLS launches). ``$MINITORCH_STAND_IN_CALLS``
# sets the count (0: every kernel compiles at its first launch).
STAND_IN_ENV = "MINITORCH_STAND_IN_CALLS"


def _stand_in_calls() -> int:
    chosen = os.environ.get(STAND_IN_ENV, "").strip()
    if not chosen:
        return 1000
    if not chosen.isdigit():
        raise ValueError(f"{STAND_IN_ENV} must be a whole number of launches, not {chosen!r}.")
    return int(chosen)


STAND_IN_CALLS = _stand_in_calls()

# Below this many elements a thread launch costs more than the loop (the threshold the
# convolution, pooling and optimiser kernels use too).
PARALLEL_THRESHOLD = PARALLEL_ELEMENTS
# The most inner positions one task of a reduction along a non-innermost dim
# folds into its row of accumulators (32 KiB of float64: about L1).
REDUCE_CHUNK = 4096


# Layout simplification ---------------------------------------------------------


def elementwise_layout(
    shape: tuple[int, ...], operands: list[tuple[tuple[int, ...], tuple[int, ...]]]
) -> tuple[list[int], list[list[int]]]:
    """Simplify an elementwise loop over ``shape`` for every operand.

    ``operands`` are ``(shape, strides)`` pairs that broadcast to ``shape``
    (the first is usually the output). Broadcast dims get stride 0, size-1
    dims are dropped, and neighbours that are contiguous in every operand are
    merged. Returns the simplified shape and each operand's strides.
    """
    nd = len(shape)
    strides = []
    for op_shape, op_strides in operands:
        off = nd - len(op_shape)
        full = [0] * nd
        for d in range(len(op_shape)):
            if op_shape[d] != 1:
                full[d + off] = op_strides[d]
        strides.append(full)
    dims = [d for d in range(nd) if shape[d] != 1]
    out_shape: list[int] = []
    out_strides: list[list[int]] = [[] for _ in operands]
    for d in dims:
        if out_shape:
            n = shape[d]
            if all(s[-1] == st[d] * n for s, st in zip(out_strides, strides)):
                out_shape[-1] *= n
                for s, st in zip(out_strides, strides):
                    s[-1] = st[d]
                continue
        out_shape.append(shape[d])
        for s, st in zip(out_strides, strides):
            s.append(st[d])
    return out_shape, out_strides


@functools.lru_cache(maxsize=1024)
def _layout_plan(operands: tuple[tuple[tuple[int, ...], tuple[int, ...]], ...]) -> tuple:
    """What an elementwise launch over ``operands`` (output first, as ``(shape, strides)``)
    needs besides the storages: ``(None, (n0, n1, strides...))`` for the 2-D kernel, or
    the N-D kernel's shape array and per-operand stride arrays (read-only, so shared by
    every launch of the layout). Cached: a training step meets the same layouts each time."""
    shape, strides = elementwise_layout(operands[0][0], list(operands))
    if len(shape) <= 2:
        if not shape:
            shape = [1, 1]
            strides = [[0, 0] for _ in strides]
        elif len(shape) == 1:
            shape = [1, shape[0]]
            strides = [[0, s[0]] for s in strides]
        return None, (shape[0], shape[1], *(x for s in strides for x in s))
    return np.array(shape, np.int64), tuple(np.array(s, np.int64) for s in strides)


class _Elementwise:
    """The map (one input) or zip (two inputs) kernels of one scalar function."""

    def __init__(self, fn: Callable[..., float], module: Any, kind: str, dtype: type) -> None:
        self.fn = fn
        self.arity = 1 if kind == "map" else 2
        self.flat_ser = getattr(module, kind + "_flat_ser")
        self.flat_par = getattr(module, kind + "_flat_par")
        # The 2-D kernels by (pattern, parallel); pattern None is the general one.
        self.d2 = {
            (pattern, par): getattr(module, fast_kernels.kernel_2d(kind, pattern, variant))
            for pattern in (None, *fast_kernels.patterns(self.arity))
            for par, variant in ((True, "par"), (False, "ser"))
        }
        # Inner strides of the inputs (each 1 or 0) -> the pattern of their kernel.
        self.patterns = {
            tuple(int(c == fast_kernels.UNIT) for c in pattern): pattern
            for pattern in fast_kernels.patterns(self.arity)
        }
        self.one_column = fast_kernels.BROADCAST * self.arity
        self.swaps = fn in _COMMUTATIVE
        self.nd_ser = getattr(module, kind + "_nd_ser")
        self.nd_par = getattr(module, kind + "_nd_par")
        self.dtype = dtype
        self.numpy_form = _NUMPY_FORMS.get(fn)
        if fn in _FLOAT64_FORMS and dtype != np.float64:
            self.numpy_form = None
        self.form_elements = _COSTLY_FORMS.get(fn)
        # Launches so far of each serial kernel the NumPy form still stands in for (see
        # STAND_IN_CALLS); a kernel leaves once it runs itself.
        self.stand_ins: dict[Any, int] = {}
        if self.numpy_form is not None:
            self.stand_ins = dict.fromkeys(
                [self.flat_ser, *(k for (p, par), k in self.d2.items() if p and not par)], 0
            )

    def _stood_in(self, kernel: Any, out: Storage, xs: Sequence[Storage],
                  rows: tuple[int, ...] = ()) -> bool:  # fmt: skip
        """Run the launch ``kernel(out, *xs, *rows)`` in NumPy (``numpy_launch``), reported
        to a recorder as the kernel's, until the kernel's ``STAND_IN_CALLS``-th launch
        (a costly form's _COSTLY_FORM_CALLS-th). False when the kernel should run instead."""
        limit = None if self.form_elements is None else _COSTLY_FORM_CALLS
        if not _stand_in_due(
            self.stand_ins, kernel, (out, *xs, *rows), limit
        ) or not self.numpy_launch(out, xs, rows):
            return False
        if recording.recorder is not None:
            recording.recorder.launch(kernel, (out, *xs, *rows))
        return True

    def numpy_launch(self, out: Storage, xs: Sequence[Storage], rows: tuple[int, ...] = ()) -> bool:
        """Fill ``out`` as the kernel launch ``(out, *xs, *rows)`` would, with the function's
        NumPy form: the flat kernel's launch when ``rows`` is empty, else the 2-D kernel's
        (``n0, n1`` and each storage's row and inner strides). False, writing nothing, for
        a layout this does not map to NumPy views, or an input overlapping ``out``
        elsewhere than in place (a kernel reads each element just before writing it;
        NumPy reads them all first). Like a kernel, it warns of no overflow or 0 / 0."""
        limit = self.form_elements
        if self.numpy_form is None or (limit is not None and len(out) > limit):
            return False
        if any(x is not out and np.may_share_memory(out, x) for x in xs):
            return False
        if rows:
            n0, n1, *strides = rows
            views = _rows_views(n0, n1, (out, *xs), strides)
            if views is None:
                return False
            out, *xs = views
        dtype = self.dtype
        with np.errstate(all="ignore"):
            self.numpy_form(out, *(x if x.dtype == dtype else x.astype(dtype) for x in xs))
        return True

    def run(self, otd: TensorData, *tds: TensorData, fresh: bool = False) -> None:
        """Fill ``otd`` (broadcasting every input into its shape).

        ``fresh`` says ``otd`` was just allocated contiguous, sparing the check.
        """
        size = otd.size
        if size == 0:
            return
        par = size >= PARALLEL_THRESHOLD
        try:
            if fresh or otd.strides == strides_from_shape(otd.shape):
                # Fast path: each input contiguous like the output, a single value,
                # or a contiguous trailing block repeated along the leading dims (a bias).
                inner = 0
                pairs: list[tuple[int, int] | None] = []  # None: contiguous like the output
                for td in tds:
                    if td.size == 1:
                        # One value: read once, unless the output is one value too.
                        pairs.append(None if size == 1 else (0, 0))
                    elif td.strides == otd.strides and td.shape == otd.shape:
                        pairs.append(None)
                    elif inner == 0 and _is_trailing_block(td, otd.shape):
                        inner = td.size
                        pairs.append((0, 1))
                    else:
                        break
                else:
                    if inner == 0 and (0, 0) not in pairs:
                        # Every input contiguous like the output.
                        # The flat kernel runs over its output's whole length: a view's
                        # storage may reach past its values, so cut every one to ``size``.
                        storages = (otd._storage, *(td._storage for td in tds))
                        out, *xs = (s if len(s) == size else s[:size] for s in storages)
                        kernel = self.flat_par if par else self.flat_ser
                        if kernel not in self.stand_ins or not self._stood_in(kernel, out, xs):
                            _launch(kernel, (out, *xs))
                        return
                    if self.fn is operators.id and inner == 0:
                        # One value spread over the output (a gradient broadcast back):
                        # no kernel to compile for it.
                        out = otd._storage
                        _launch(_spread, (out if len(out) == size else out[:size], tds[0]._storage))
                        return
                    cols = size if inner == 0 else inner
                    self._launch_rows(par, otd._storage, [td._storage for td in tds], cols, pairs)
                    return
            self._general(otd, tds, par)
        except NumbaError as e:
            raise _compile_error(self.fn, e) from None

    def run_rows(self, out: Storage, x0: Storage, x1: Storage, cols: int, first: bool) -> None:
        """``out`` (contiguous, rows of ``cols``) from a contiguous operand of its size and a
        repeated one (``x0`` when ``first``): one value when ``cols`` is the whole length,
        else one row (a bias). ``run``'s answer for these, without its layout work."""
        size = len(out)
        repeated = (0, 0) if cols == size else (0, 1)
        strides = (*repeated, cols, 1) if first else (cols, 1, *repeated)
        try:
            self._launch_2d(size >= PARALLEL_THRESHOLD,
                            (out, x0, x1, size // cols, cols, cols, 1, *strides))  # fmt: skip
        except NumbaError as e:
            raise _compile_error(self.fn, e) from None

    def _launch_rows(self, par: bool, out: Storage, xs: list[Storage], cols: int,
                     pairs: list[tuple[int, int] | None]) -> None:  # fmt: skip
        """The 2-D kernel over contiguous ``out`` in rows of ``cols``; each input's (row,
        inner) strides are its pair, None for contiguous like ``out``."""
        args: list[Any] = [out, *xs, len(out) // cols, cols, cols, 1]
        for pair in pairs:
            args.extend(pair or (cols, 1))
        self._launch_2d(par, tuple(args))

    def run_flat(self, out: Storage, *storages: Storage) -> None:
        """``out[i] = fn(x[i], ...)`` over contiguous storages of ``out``'s length."""
        size = len(out)
        if size == 0:
            return
        par = size >= PARALLEL_THRESHOLD
        kernel = self.flat_par if par else self.flat_ser
        if kernel in self.stand_ins and self._stood_in(kernel, out, storages):
            return
        args = (out, *storages)
        try:
            kernel(*args)
        except NumbaError as e:
            raise _compile_error(self.fn, e) from None
        if recording.recorder is not None:
            recording.recorder.launch(kernel, args)

    def _general(self, otd: TensorData, tds: tuple[TensorData, ...], par: bool) -> None:
        plan = _layout_plan(((otd.shape, otd.strides), *((td.shape, td.strides) for td in tds)))
        storages = [otd._storage] + [td._storage for td in tds]
        if plan[0] is None:
            self._launch_2d(par, (*storages, *plan[1]))
            return
        shape_arr, stride_arrs = plan
        arrays = []
        for storage, s in zip(storages, stride_arrs):
            arrays.extend((storage, shape_arr, s))
        _launch(self.nd_par if par else self.nd_ser, tuple(arrays))

    def _launch_2d(self, par: bool, args: tuple[Any, ...]) -> None:
        """Run the 2-D kernel for the inner strides in ``args`` (``out, *xs, n0, n1,
        so0, so1, s00, s01, ...``): each pattern compiles only when first met."""
        arity = self.arity
        pattern: str | None
        if args[arity + 2] == 1:  # one column: every input is read once per row
            pattern = self.one_column
        elif args[arity + 4] == 1:
            pattern = self.patterns.get(args[arity + 6 :: 2])
        else:
            pattern = None
        if pattern == "bu" and self.swaps:
            # The same values from the kernel a function compiles anyway for ``x * c``.
            out, x0, x1, n0, n1, so0, so1, s00, s01, s10, s11 = args
            args, pattern = (out, x1, x0, n0, n1, so0, so1, s10, s11, s00, s01), "ub"
        kernel = self.d2[pattern, par]
        if kernel in self.stand_ins and self._stood_in(
            kernel, args[0], args[1 : arity + 1], args[arity + 1 :]
        ):
            return
        kernel(*args)  # (``_launch``, written out: most ops with a number or a bias come here)
        if recording.recorder is not None:
            recording.recorder.launch(kernel, args)


_F32 = np.dtype(np.float32)
_SOURCES = {"map": fast_kernels.MAP_SOURCE, "zip": fast_kernels.ZIP_SOURCE,
            "reduce": fast_kernels.REDUCE_SOURCE}  # fmt: skip


class _ByDtype:
    """A scalar function's kernel modules by arithmetic: float64, and float32 (built on
    first need) for operands that are all float32 (the scalar function's float32
    variant, as ``kernel_cache.jit_scalar`` says), each wrapped by ``wrap``. One
    module per dtype, rather than one whose scalar picks by argument type, compiles
    each kernel faster (see ``jit_scalar``)."""

    def __init__(self, fn: Callable[..., float], kind: str, wrap: Callable[[Any, type], Any],
                 constants: dict[str, Any] | None = None) -> None:  # fmt: skip
        self._make = functools.partial(
            load_kernels, kind, _SOURCES[kind], fn, constants=constants
        )
        self._wrap = wrap
        self.f64 = wrap(self._make(dtype=np.float64), np.float64)
        self._f32: Any = None

    def f32(self) -> Any:
        """The kernels for all-float32 operands."""
        if self._f32 is None:
            self._f32 = self._wrap(self._make(dtype=np.float32), np.float32)
        return self._f32

    def for_storages(self, *storages: Storage) -> Any:
        """The kernels for operands with these storages."""
        for storage in storages:
            if storage.dtype is not _F32:
                return self.f64
        return self.f32()


def _elementwise(fn: Callable[..., float], kind: str) -> _ByDtype:
    """``fn``'s map or zip engines, by dtype."""
    return _ByDtype(fn, kind, lambda module, dtype: _Elementwise(fn, module, kind, dtype))


def _stand_in_due(pending: dict[Any, int], kernel: Any, args: tuple[Any, ...],
                  limit: int | None = None) -> bool:  # fmt: skip
    """Whether NumPy still stands in for this launch ``kernel(*args)`` (``kernel`` a key of
    ``pending``, its launches so far): until its STAND_IN_CALLS-th (or ``limit``-th, if
    fewer), or its _ON_DISK_CALLS-th if its machine code is on disk at its first launch
    (``kernel_cache.on_disk``), unless this process has compiled (or loaded) it already;
    then it leaves ``pending``. Every launch counts, even one the form then declines,
    which bounds the cost of trying. (Safe from several threads: the count is only a
    count, and a kernel another thread retired is simply not due.)"""
    calls = pending.get(kernel)
    if calls is None:
        return False
    budget = STAND_IN_CALLS if limit is None else min(STAND_IN_CALLS, limit)
    if calls == 0 and budget > _ON_DISK_CALLS and on_disk(kernel, args):
        calls = budget - _ON_DISK_CALLS  # (counted as launches already stood in)
    if calls >= budget or kernel.overloads:
        pending.pop(kernel, None)
        return False
    pending[kernel] = calls + 1
    return True


# The launches so far of each serial optimiser kernel NumPy still stands in for.
_OPTIMISER_STAND_INS = dict.fromkeys(fast_optim.NUMPY_FORMS, 0)


def _optimiser_launch(kernels: tuple[Any, Any], out: Storage, *args: Storage) -> None:
    """``launch_into`` for the optimiser updates (written out: six of them a step of a
    three-layer network), with the rule's NumPy form (``fast_optim.NUMPY_FORMS``)
    standing in for the serial kernel's first launches."""
    kernel = kernels[0] if out.size >= PARALLEL_THRESHOLD else kernels[1]
    if kernel in _OPTIMISER_STAND_INS and _stand_in_due(
        _OPTIMISER_STAND_INS, kernel, (out, *args)
    ):
        with np.errstate(all="ignore"):
            fast_optim.NUMPY_FORMS[kernel](out, *args)
    else:
        kernel(out, *args)
    if recording.recorder is not None:
        recording.recorder.launch(kernel, (out, *args))


def _reduce_stand_in(ufunc: np.ufunc, lanes: bool, out: Storage, a: Storage, n_outer: int,
                     n_reduce: int, n_inner: int, sa_outer: int, sa_reduce: int,
                     sa_inner: int) -> bool:  # fmt: skip
    """Fold as the serial ``reduce3`` kernel does, with ``ufunc`` (``out`` holds the start
    values): each output strictly in order along the reduced dim, one row of outputs per
    ufunc call. False, writing nothing, where the kernel folds in SIMD lanes instead
    (``lanes``: a contiguous row of at least 8 vectors) or the row is long (over 64)."""
    w = fast_simd.VECTOR_BYTES // a.itemsize  # (the kernel's ``fast_simd.lanes``)
    if n_reduce > 64 or (lanes and n_inner == 1 and sa_reduce == 1 and n_reduce >= 8 * w):
        return False
    itemsize = a.itemsize
    view = np.lib.stride_tricks.as_strided(
        a, (n_outer, n_reduce, n_inner),
        (sa_outer * itemsize, sa_reduce * itemsize, sa_inner * itemsize), writeable=False,
    )  # fmt: skip
    acc = out.reshape(n_outer, n_inner)
    with np.errstate(all="ignore"):  # (as the kernel: no overflow warnings)
        for r in range(n_reduce):
            ufunc(acc, view[:, r, :], out=acc)
    return True


def _rows_views(n0: int, n1: int, storages: tuple[Storage, ...],
                strides: list[int]) -> tuple[Storage, ...] | None:  # fmt: skip
    """NumPy views of ``storages`` as a 2-D kernel over ``(n0, n1)`` reads them at their
    ``(row, inner)`` ``strides`` (in turn), broadcasting as it does: None unless each is
    contiguous rows, one repeated row or one value, and the first contiguous rows."""
    views = []
    for n, storage in enumerate(storages):
        s0, s1 = strides[2 * n], strides[2 * n + 1]
        if (s0, s1) == (n1, 1) or (n0 == 1 and s1 == 1):
            views.append(storage[: n0 * n1].reshape(n0, n1))
        elif n == 0:
            return None
        elif (s0, s1) == (0, 1):
            views.append(storage[:n1])
        elif (s0, s1) == (0, 0):
            views.append(storage[:1])
        else:
            return None
    return tuple(views)


def _rows_layout(ta: TensorData, tb: TensorData) -> tuple[bool, int] | None:
    """``(first, cols)`` when one operand is contiguous and has the output's shape and the
    other (the first operand when ``first``) is one value or a contiguous row of ``cols``
    (its shape ends the first one's, with fewer dims); else None."""
    if tb.size < ta.size:
        big, small, first = ta, tb, False
    elif ta.size < tb.size:
        big, small, first = tb, ta, True
    else:
        return None
    if small.size == 0:
        return None
    sg, ss = big.shape, small.shape
    if big.strides != strides_from_shape(sg):
        return None
    if small.size == 1:
        return (first, big.size) if len(ss) <= len(sg) else None
    trailing = len(ss) < len(sg) and _is_trailing_block(small, sg)
    return (first, small.size) if trailing else None


def _spread(out: Storage, x: Storage) -> None:
    """``out[:] = x[0]`` (NumPy casts to ``out``'s dtype as a kernel's store does)."""
    out[:] = x[0]


def _launch(kernel: Callable[..., None], args: tuple[Any, ...]) -> None:
    """Run ``kernel(*args)`` (which writes ``args[0]``) and report it to a recorder."""
    kernel(*args)
    if recording.recorder is not None:
        recording.recorder.launch(kernel, args)


def _is_trailing_block(td: TensorData, shape: tuple[int, ...]) -> bool:
    """True when ``td`` is contiguous and its shape (less leading 1s) ends ``shape``."""
    own = td.shape
    while len(own) > 1 and own[0] == 1:
        own = own[1:]
    n = len(own)
    return (
        n < len(shape)
        and shape[len(shape) - n :] == own
        and td.strides[len(td.shape) - n :] == strides_from_shape(own)
    )


def _compile_error(fn: Callable[..., float], e: Exception) -> ScalarCompileError:
    """A short error naming the user's function instead of numba's traceback dump."""
    name = getattr(fn, "__qualname__", repr(fn))
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    reason = [line for line in lines if not line.startswith("Failed in")][:3]
    where = [line for line in lines if line.startswith("File ")][-1:]
    detail = " ".join(reason + where) or type(e).__name__
    return ScalarCompileError(
        f"Cannot compile scalar function {name!r} into a FastOps kernel "
        f"(use floats, arithmetic, math.* and if/else): {detail}"
    )


# The backend -----------------------------------------------------------------


class FastOps(TensorOps):
    """Numba-compiled, parallel map / zip / reduce / matrix multiply."""

    records_launches = True
    adam_update = staticmethod(functools.partial(fast_optim.adam_update, _optimiser_launch))
    sgd_update = staticmethod(functools.partial(fast_optim.sgd_update, _optimiser_launch))

    @staticmethod
    def map(fn: Callable[[float], float]) -> MapProto:
        engines = _elementwise(fn, "map")

        def _map(a: Tensor, out: Tensor | None = None) -> Tensor:
            ta = a._tensor
            dtype = ta._storage.dtype
            engine = engines.f64 if dtype is not _F32 else engines.f32()
            if out is None:
                if ta.strides == strides_from_shape(ta.shape):
                    # Contiguous: no layout work (``empty`` of the host storage FastOps keeps).
                    storage = np.empty(ta.size, dtype)
                    engine.run_flat(storage, ta._storage)
                    return a._make_like(storage, ta.shape, ta.size, ta.strides)
                out = map_output(a, None)
                engine.run(out._tensor, ta, fresh=True)
                return out
            check_map_out(a, out)
            engine.run(out._tensor, ta)
            return out

        return _map

    @staticmethod
    def cmap(fn: Callable[[float], float]) -> Callable[[Tensor, Tensor], Tensor]:
        engines = _elementwise(fn, "map")

        def _cmap(a: Tensor, out: Tensor) -> Tensor:
            check_map_out(a, out)
            engines.for_storages(a._tensor._storage).run(out._tensor, a._tensor)
            return out

        return _cmap

    @staticmethod
    def zip(fn: Callable[[float, float], float]) -> ZipProto:
        engines = _elementwise(fn, "zip")

        def _zip(a: Tensor, b: Tensor, out: Tensor | None = None) -> Tensor:
            ta, tb = a._tensor, b._tensor
            sa, sb = ta.shape, tb.shape
            if out is not None:
                if not sa == sb == out._tensor.shape:  # (an optimiser's update: all alike)
                    check_broadcast_into(sa if sa == sb else TensorData.shape_broadcast(sa, sb),
                                         out.shape)  # fmt: skip
                engines.for_storages(ta._storage, tb._storage).run(out._tensor, ta, tb)
                return out
            xa, xb = ta._storage, tb._storage
            dtype = xa.dtype
            if dtype is not xb.dtype:
                dtype = result_dtype(a, b)  # float32 only when both are
            engine = engines.f64 if dtype is not _F32 else engines.f32()
            if sa == sb and ta.strides == tb.strides == strides_from_shape(sa):
                # The commonest call of all (same-shape contiguous operands): no layout
                # work, and ``run_flat`` written out, as this runs for most ops.
                size = ta.size
                out = np.empty(size, dtype)
                kernel = engine.flat_par if size >= PARALLEL_THRESHOLD else engine.flat_ser
                if size and (
                    kernel not in engine.stand_ins or not engine._stood_in(kernel, out, (xa, xb))
                ):
                    try:
                        kernel(out, xa, xb)
                    except NumbaError as e:
                        raise _compile_error(engine.fn, e) from None
                    if recording.recorder is not None:
                        recording.recorder.launch(kernel, (out, xa, xb))
                return a._make_like(out, sa, size, ta.strides)
            rows = _rows_layout(ta, tb)
            if rows is not None:
                # Next commonest: ``x * 0.5`` and a bias, with no layout work.
                first, cols = rows
                big = tb if first else ta
                out = np.empty(big.size, dtype)
                engine.run_rows(out, ta._storage, tb._storage, cols, first)
                return a._make_like(out, big.shape, big.size)
            out = zip_output(a, b)
            engine.run(out._tensor, ta, tb, fresh=True)
            return out

        return _zip

    @staticmethod
    def reduce(
        fn: Callable[[float, float], float], start: float = 0.0
    ) -> Callable[[Tensor, int], Tensor]:
        # Folding in lanes reorders the fold: only for functions where that is exact
        # in real arithmetic. Both constants are frozen into the kernels and keyed.
        constants = {"LANES": fn in _LANE_SAFE, "VFN": _LANE_SAFE.get(fn, fast_simd.add)}
        # Sums and products fold in a ufunc at first, as elementwise add and mul do.
        ufunc = _UFUNCS.get(fn) if fn in (operators.add, operators.mul) else None
        stand_ins: dict[Any, int] = {}  # (see _stand_in_due)

        def with_stand_in(module: Any, dtype: type) -> Any:
            if ufunc is not None:
                stand_ins[module.reduce3_ser] = 0
            return module

        modules = _ByDtype(fn, "reduce", with_stand_in, constants)
        start = float(start)

        def _reduce(a: Tensor, dim: int) -> Tensor:
            out, dim = reduce_output(a, dim, start)
            td = a._tensor
            if recording.recorder is not None:
                recording.recorder.constant(out._tensor._storage)
            if td.size == 0:
                return out
            layout = _reduce_layout(td, dim)
            work = td.size
            par = work >= PARALLEL_THRESHOLD
            module = modules.for_storages(td._storage)
            try:
                if layout is not None:
                    kernel = module.reduce3_par if par else module.reduce3_ser
                    chunk = _reduce_chunk(layout[0], layout[2]) if par else REDUCE_CHUNK
                    args = (out._tensor._storage, td._storage, *layout, chunk)
                    stood_in = (
                        kernel in stand_ins
                        and _stand_in_due(stand_ins, kernel, args)
                        and _reduce_stand_in(ufunc, constants["LANES"], *args[:-1])
                    )
                    if not stood_in:
                        _launch(kernel, args)
                    elif recording.recorder is not None:
                        recording.recorder.launch(kernel, args)
                else:
                    kernel = module.reduce_nd_par if par else module.reduce_nd_ser
                    _launch(kernel, (*out.tuple(), *td.tuple(), dim))
            except NumbaError as e:
                raise _compile_error(fn, e) from None
            return out

        return _reduce

    @staticmethod
    def matrix_multiply(a: Tensor, b: Tensor) -> Tensor:
        """Batched matrix product; a batch of 1 broadcasts, operands may be strided."""
        ta, tb = a._tensor, b._tensor
        if len(ta.shape) == 2 and len(tb.shape) == 2 and ta.shape[1] == tb.shape[0]:
            # Two matrices (most products): no 3-D views to build.
            (m, k), n = ta.shape, tb.shape[1]
            batch, out_shape = 1, (m, n)
            strides = (0, *ta.strides, 0, *tb.strides)
            sa, sb = ta._storage, tb._storage
        else:
            a3, b3, out_shape = matmul_layout(a, b)
            batch = matmul_batch(a3, b3)
            m, k = a3.shape[1], a3.shape[2]
            n = b3.shape[2]
            strides = matmul_strides(a3, b3)
            sa, sb = a3._storage, b3._storage
        size = batch * m * n
        out = np.empty(size, result_dtype(a, b))
        if size:
            _matmul_into(out, sa, sb, batch, m, n, k, strides)
        return a._make_like(out, out_shape, size)


def _reduce_chunk(n_outer: int, n_inner: int) -> int:
    """Inner positions per task of a parallel reduction along a non-innermost dim:
    whole rows (up to REDUCE_CHUNK), cut so that every thread gets work when there
    are fewer outer rows than threads. Long runs keep the rows streaming from
    memory; results do not depend on the cut."""
    if n_inner == 1:
        return REDUCE_CHUNK
    threads = numba.get_num_threads()
    if n_outer >= threads:
        return REDUCE_CHUNK
    pieces = (threads + n_outer - 1) // n_outer
    return min(REDUCE_CHUNK, max(256, (n_inner + pieces - 1) // pieces))


def _reduce_layout(td: TensorData, dim: int) -> tuple[int, ...] | None:
    """``(n_outer, n_reduce, n_inner, s_outer, s_reduce, s_inner)``, or None if strided.

    The dims before ``dim`` must merge into one, and so must the dims after it.
    A reduction along the innermost dim of a transposed layout (outer dims
    closer in memory than the reduced one) is turned round into one that
    streams rows of the reduced dim into a row of accumulators.
    """
    shape, strides = td.shape, td.strides
    merged = []
    for lo, hi in ((0, dim), (dim + 1, len(shape))):
        n, s = 1, 0
        for d in range(hi - 1, lo - 1, -1):
            if shape[d] == 1:
                continue
            if n == 1:
                n, s = shape[d], strides[d]
            elif strides[d] == s * n:
                n *= shape[d]
            else:
                return None
        merged.append((n, s))
    (n_outer, s_outer), (n_inner, s_inner) = merged
    if n_inner == 1 and n_outer > 1 and 0 < s_outer < strides[dim]:
        return (1, shape[dim], n_outer, 0, strides[dim], s_outer)
    return (n_outer, shape[dim], n_inner, s_outer, strides[dim], s_inner)


# Matrix multiply ----------------------------------------------------------------
#
# Every output element sums over k in one fixed order whatever the thread count
# (k in blocks of _KC, each block in sequence), so results are bit-identical for
# any number of threads. The kernels take flat storages and element strides,
# so transposed and broadcast operands are read where they lie.

# The micro-kernel's register block of C: _MR rows by two SIMD vectors of columns,
# vectors as wide as the machine's (``fast_simd.full_*``): 8 float64 or 16 float32
# columns on AVX2, where 12 accumulators, 2 vectors of B and one broadcast of A fill
# 15 of the 16 vector registers; 16 float64 or 32 float32 columns with AVX-512 (32
# registers; float32 keeps 16 on Zen 4). An element's arithmetic is the same at any width.
_MR = 6
# k is taken _KC at a time: a packed strip of B (32 KiB in either dtype at AVX2
# width, 64 KiB at AVX-512 width) stays close to L1 while it meets every
# strip of a block of A (up to _MC rows: 288 KiB of float32, 576 of float64) that
# stays mostly in L2; a task computes a block of rows by _NB_STRIPS strips of C.
# (Measured on Zen 3: these beat 256 or 384 for _KC and 72 or 96 for _MC by 5-15%.
# _KC also sets where a sum over k is cut into blocks, and so its rounding.)
_KC = 512
_MC = 24 * _MR
_NB_STRIPS = 4
# Columns of B packed at once: bounds the packed copy of B to _KC x _NC.
_NC = 4096
# The L2 cache per core assumed by the prefetching of B (512 KiB on Zen 3).
_L2_BYTES = 512 * 1024
# A row-major B up to this size (half of L1) is read in place, unpacked (and then
# A too): larger ones, read along k at their row stride, may thrash L1 (see
# ``_reads_in_place``, which reads them in place only where a strip fits L1's sets).
_DIRECT_B_BYTES = 16 * 1024
# L1's geometry as ``_strip_fits_l1`` assumes it: 64 sets of 64-byte lines (a way of
# 4 KiB) and 8 ways (Zen 3; recent Intel cores have 12).
_L1_WAY_BYTES = 4096
_L1_WAYS = 8

# Fused multiply-adds; only the dot products may reassociate (to vectorise along
# k), and their lane order is fixed by the compiled code.
_CONTRACT = {"contract"}
_DOTS_MATH = {"contract", "reassoc", "nsz"}

# Packing buffers up to this size (A and B together) are kept for the next product.
_KEEP_PACK_BYTES = 32 << 20
_pack_workspace = threading.local()

# Below this many multiply-adds, or for thin operands, packing does not pay.
_GEMM_WORK = 32**3
# Up to this many multiply-adds, a product with fewer than two strips of rows
# (< 2 * _MR) or a short k (<= _THIN_K) runs as fast or faster outside the GEMM
# (measured: rows or dot products within noise of it or ahead; see _matmul_into),
# so small models never compile the GEMM (about 6 s on a cold kernel cache).
_THIN_WORK = 1 << 18
_THIN_K = 16
# Below this many (about 50 us of one thread's work), a second thread's start and
# the waits at the end of each parallel loop cost more than they save. (On a quiet
# machine the GEMM gains from a second thread from about 2^17: 64^3 float64 22 -> 13
# us. But a two-thread kernel stalls whenever another process holds a core, and on
# this shared machine `make bench` then measured 64^3 float32 at 39-47% of NumPy in
# parallel against 44-59% serial: the threshold stays.)
_PARALLEL_MATMUL_WORK = 1 << 20


def matmul_strides(a3: TensorData, b3: TensorData) -> tuple[int, ...]:
    """The kernels' strides ``(sa0, sa1, sa2, sb0, sb1, sb2)`` of two 3-D layouts from
    ``matmul_layout``: a batch of 1 gets batch stride 0, so it broadcasts."""
    return (a3.strides[0] if a3.shape[0] > 1 else 0, a3.strides[1], a3.strides[2],
            b3.strides[0] if b3.shape[0] > 1 else 0, b3.strides[1], b3.strides[2])  # fmt: skip


def _matmul_into(out: Storage, a: Storage, b: Storage, batch: int, m: int, n: int, k: int,
                 strides: tuple[int, ...]) -> None:  # fmt: skip
    """Pick the matmul kernel for the operands' sizes and fill ``out`` (contiguous) with
    the product of ``a`` and ``b`` read at ``strides`` (see ``matmul_strides``)."""
    if k == 0:
        out[:] = 0
        if recording.recorder is not None:
            recording.recorder.fill(out, 0.0)
        return
    work = batch * m * n * k
    parallel = work >= _PARALLEL_MATMUL_WORK
    args = (out, a, b, batch, m, n, k, *strides)
    small = work < _GEMM_WORK
    few_rows = work < _THIN_WORK and m < 2 * _MR
    # Under two strips of rows, a short k streams rows of B faster than the GEMM, which
    # pads the second strip and stores each tile of C after a few steps of k, up to the
    # parallel size (both forms serial: 9 x 2048 x 16, a conv's input gradient at the
    # digits CNN's first layer, 66-72 -> 51 us float64, 36 -> 16 us float32; the same
    # bits, each element's products added in order either way).
    thin_serial = m < 2 * _MR and not parallel
    row_major_b = strides[5] == 1
    # (Below 4 steps of k, dot products lose to streaming strided rows of B.)
    along_k = strides[2] == 1 and strides[4] == 1 and not row_major_b and k >= 4
    # Under three strips of rows by under two AVX2 strips of columns (16 float64, 32
    # float32), up to the parallel size: dots beat the GEMM, which computes the
    # padding of a part strip and packs every block of k (16 x 9 x 2048, the digits
    # CNN's first weight gradient: 96 -> 36 us float64, 55 -> 19 us float32; at
    # 17 x 15 x 4096 the GEMM is 15% ahead). The same cut at any vector width, so the
    # kernel, and with it the result, does not depend on the machine.
    narrow = (m < 3 * _MR and n < 4 * fast_simd.VECTOR_BYTES // out.itemsize
              and work < _PARALLEL_MATMUL_WORK)  # fmt: skip
    if n <= 2 or (along_k and (small or few_rows or narrow)):
        # One or two columns, or a row of A and a column of B both contiguous along k
        # (B transposed, as in a backward pass): a dot product per element of C.
        kernel = _matmul_dots_par if parallel else _matmul_dots_ser
    elif small or k < 8 or (
        row_major_b
        and (m < _MR or few_rows or (k <= _THIN_K and (work < _THIN_WORK or thin_serial)))
    ):
        # Small, short, single-row or thin products: rows of B stream through (unit
        # stride when B is row-major); otherwise packing pays for itself.
        kernel = _matmul_rows_par if parallel else _matmul_rows_ser
    else:
        itemsize = out.itemsize
        a_size, b_size = _pack_sizes(itemsize, batch, m, n, k, *strides)
        # The thread count comes from here: a kernel that asks numba for it cannot be
        # cached on disk (the call is a run-time address), and the GEMM takes seconds.
        # (Asking costs about 1 us, so only a parallel product does.)
        threads = numba.get_num_threads() if parallel else 1
        args += (*_pack_buffers(out.dtype, a_size, b_size), threads)
        kernel = _gemm_into_par if parallel else _gemm_into_ser
    _launch(kernel, args)


def _pack_buffers(dtype: np.dtype, a_size: int, b_size: int) -> tuple[Storage, Storage]:
    """Buffers for the packed panels of A and B (at least ``a_size``, ``b_size``).

    Kept between calls, per thread and dtype, up to _KEEP_PACK_BYTES: a fresh
    buffer's pages are faulted in again on every call (the allocator hands large
    blocks back to the system when they are freed), which cost as much as the
    whole product at 256 x 256 in float64.
    """
    kept = getattr(_pack_workspace, "buffers", None)
    if kept is None:
        kept = _pack_workspace.buffers = {}
    buffers = kept.get(dtype)
    if buffers is not None and buffers[0].size >= a_size and buffers[1].size >= b_size:
        return buffers
    if (a_size + b_size) * dtype.itemsize > _KEEP_PACK_BYTES:
        return np.empty(a_size, dtype), np.empty(b_size, dtype)
    old = buffers or (np.empty(0, dtype), np.empty(0, dtype))
    buffers = (np.empty(max(a_size, old[0].size), dtype),
               np.empty(max(b_size, old[1].size), dtype))  # fmt: skip
    kept[dtype] = buffers
    return buffers


@njit(cache=True)
def _strip_fits_l1(stride_bytes, steps):  # noqa: ANN001, ANN202
    """Whether a strip of an operand read where it lies, one run of two cache lines per
    step of k, ``stride_bytes`` apart, stays in L1 while it is reused: runs whose
    addresses agree modulo a way (_L1_WAY_BYTES) fall in the same sets, so a stride
    near a multiple of it crowds the strip into a few sets, which evict each other."""
    offsets = _L1_WAY_BYTES // math.gcd(stride_bytes, _L1_WAY_BYTES)
    return 2 * steps <= _L1_WAYS * min(_L1_WAY_BYTES // 64, 2 * offsets)


@njit(cache=True)
def _reads_in_place(itemsize, n, k, sa1, sa2, sb1, sb2):  # noqa: ANN001, ANN202
    """Which operands ``_gemm_into`` reads where they lie instead of packing: (A, B).

    Packing copies every block of k of both operands once more than the
    micro-kernel reads them, which small products (and row-major A at any size) do
    not earn back (one thread, in-process alternation: 100 x 200 x 200 float64 150
    -> 108 us with both in place, 1024^3 0.79x with A in place; a B too large for L1
    in place, as 512^3, 2x slower). So A is read in place when its rows lie along k,
    or its columns do and a strip fits in L1; B when it is row-major in whole vectors
    of columns and a strip fits in L1, or (as before) B is small. Only where the
    micro-kernel reads changes, never an element's sum, so the results are the same.
    """
    lanes = fast_simd.full_lane_count(itemsize)
    if sb2 == 1 and n % (2 * lanes) == 0 and k * n * itemsize <= _DIRECT_B_BYTES:
        return True, True
    kb = min(k, _KC)
    a_in_place = sa2 == 1 or (sa1 == 1 and _strip_fits_l1(sa2 * itemsize, kb))
    b_in_place = sb2 == 1 and n % lanes == 0 and _strip_fits_l1(sb1 * itemsize, kb)
    return a_in_place, b_in_place


def _pack_sizes(itemsize, batch, m, n, k, sa0, sa1, sa2, sb0, sb1, sb2):  # noqa: ANN001, ANN202
    """Elements of the packed panels ``_gemm_into`` needs (none for an operand it reads
    where it lies). Plain Python, and compiled for ``_gemm_par``."""
    a_in_place, b_in_place = _reads_in_place(itemsize, n, k, sa1, sa2, sb1, sb2)
    nr = 2 * fast_simd.full_lane_count(itemsize)
    kb = min(k, _KC)
    a_size = 0 if a_in_place else (batch if sa0 != 0 else 1) * ((m + _MR - 1) // _MR) * _MR * kb
    b_strips = (min(n, _NC) + nr - 1) // nr
    b_size = 0 if b_in_place else (batch if sb0 != 0 else 1) * b_strips * nr * kb
    return a_size, b_size


def _gemm_into(out, a, b, batch, m, n, k, sa0, sa1, sa2, sb0, sb1, sb2, a_pack, b_pack, threads):  # noqa: ANN001, E501
    """C = A @ B through a register-blocked micro-kernel, over packed panels.

    For each block of k, the strips of A (_MR rows) and of B (2 vectors of
    columns) are copied into contiguous panels, k-major, read from any strides,
    in ``a_pack`` and ``b_pack`` (sizes from ``_pack_sizes``), unless the operand
    is read where it lies (``_reads_in_place``); then tasks of up to _MC rows by
    about _NB_STRIPS strips of C run the micro-kernel over them.
    ``threads`` (numba's thread count) only sets how C is cut into tasks.
    """
    nr = 2 * fast_simd.full_lanes(out)
    row_blocks = (m + _MC - 1) // _MC
    # The strips of A are dealt into the row blocks evenly (sizes differ by at most one
    # strip), so that the threads' shares match (see _gemm_task).
    m_strips = (m + _MR - 1) // _MR
    a_in_place, b_in_place = _reads_in_place(out.itemsize, n, k, sa1, sa2, sb1, sb2)
    # Each packed strip holds one block of k: kb (<= _KC) steps apart.
    kb = min(k, _KC)
    a_batches = 0 if a_in_place else (batch if sa0 != 0 else 1)
    b_batches = 0 if b_in_place else (batch if sb0 != 0 else 1)
    # Where the micro-kernel reads A: its batch, strip, row and k strides.
    a_src, a_batch, a_strip, sa_row, sa_k = a, sa0, _MR * sa1, sa1, sa2
    if not a_in_place:
        a_src, a_strip, sa_row, sa_k = a_pack, _MR * kb, 1, _MR
        a_batch = m_strips * _MR * kb if a_batches > 1 else 0
    for j0 in range(0, n, _NC):
        nc = min(_NC, n - j0)
        b_strips = (nc + nr - 1) // nr
        col_blocks = _col_blocks(batch * row_blocks, b_strips, threads)
        b_src, b_batch, b_strip, sb_k, prefetch = b, sb0, nr, sb1, False
        if not b_in_place:
            b_src, b_strip, sb_k = b_pack, nr * kb, nr
            b_batch = b_strips * nr * kb if b_batches > 1 else 0
            # A packed B that fits in L2 needs no prefetching.
            prefetch = b_strips * nr * kb * out.itemsize > _L2_BYTES // 2
        for k0 in range(0, k, _KC):
            kc = min(_KC, k - k0)
            # Step t packs strip t of A and strip t of B, so a thread packs the rows of
            # A it then multiplies (the tasks below split the rows the same way).
            # A is packed again for each panel of _NC columns (once, unless n > _NC).
            steps = max(a_batches * m_strips, b_batches * b_strips)
            if steps > 0:
                for t in prange(steps):
                    _pack_strip(t, a_pack, b_pack, a, b, m, nc, j0, k0, kc, kb,
                                a_batches * m_strips, m_strips, b_batches * b_strips,
                                b_strips, sa0, sa1, sa2, sb0, sb1, sb2)  # fmt: skip
            a_base = k0 * sa2 if a_in_place else 0
            b_base = k0 * sb1 + j0 if b_in_place else 0
            for t in prange(batch * row_blocks * col_blocks):
                _gemm_task(t, out, a_src, a_base, a_batch, a_strip, sa_row, sa_k,
                           b_src, b_base, b_batch, b_strip, sb_k, m, n, nc, j0, kc, k0 == 0,
                           m_strips, row_blocks, col_blocks, b_strips, prefetch)  # fmt: skip


@njit(cache=True)
def _col_blocks(row_tasks, b_strips, threads):  # noqa: ANN001, ANN202
    """How many blocks the strips of B are cut into (about _NB_STRIPS strips each).

    A parallel loop hands each thread an equal run of tasks, so the task count is
    rounded up to a multiple of the thread count (and the strips dealt out evenly,
    see ``_gemm_task``): 25 strips in 7 blocks of up to 4 gave two threads 16 and
    9 strips; 8 blocks of 3 or 4 give 13 and 12. Only the division of C into tasks
    changes, never the arithmetic of an element.
    """
    blocks = (b_strips + _NB_STRIPS - 1) // _NB_STRIPS
    while (row_tasks * blocks) % threads != 0 and blocks < b_strips:
        blocks += 1
    return blocks


@njit(cache=True)
def _pack_strip(t, a_pack, b_pack, a, b, m, nc, j0, k0, kc, kb, a_tasks, a_strips, b_tasks,
                b_strips, sa0, sa1, sa2, sb0, sb1, sb2):  # noqa: ANN001  # fmt: skip
    """Step ``t`` of packing: strip ``t`` of A and strip ``t`` of B, where they exist."""
    if t < a_tasks:
        p = t // a_strips
        i = (t - p * a_strips) * _MR
        _pack_a(a_pack, t * _MR * kb, a, p * sa0 + i * sa1 + k0 * sa2, sa1, sa2,
                min(_MR, m - i), kc)  # fmt: skip
    if t < b_tasks:
        nr = 2 * fast_simd.full_lanes(b_pack)
        p = t // b_strips
        j = (t - p * b_strips) * nr
        _pack_b(b_pack, t * nr * kb, b, p * sb0 + k0 * sb1 + (j0 + j) * sb2, sb1, sb2,
                min(nr, nc - j), kc, nr)  # fmt: skip


@njit(cache=True)
def _gemm_task(t, out, a, a_base, a_batch, a_strip, sa_row, sa_k,
               b, b_base, b_batch, b_strip, sb_k, m, n, nc, j0,
               kc, first, m_strips, row_blocks, col_blocks, b_strips, prefetch):  # noqa: ANN001  # fmt: skip
    """Task ``t``: a block of rows (its share of the ``m_strips`` strips of A, about _MC
    rows) by about _NB_STRIPS strips of C, in one batch.
    Each strip of B meets every strip of A of the block while in L1.

    Strip ``i`` of A starts at ``a_base + p * a_batch + i * a_strip`` in batch ``p``,
    strip ``s`` of B at ``b_base + p * b_batch + s * b_strip``; the strides inside a
    strip are as ``_micro`` takes them (packed panels, or the operands themselves).
    """
    nr = 2 * fast_simd.full_lanes(out)
    per_batch = row_blocks * col_blocks
    p = t // per_batch
    q = t - p * per_batch
    row_block = q // col_blocks
    i0 = row_block * m_strips // row_blocks * _MR
    block = q % col_blocks
    # Blocks of strips differ in size by at most one.
    s0 = block * b_strips // col_blocks
    s1 = (block + 1) * b_strips // col_blocks
    i1 = min(m, (row_block + 1) * m_strips // row_blocks * _MR)
    calls = (i1 - i0 + _MR - 1) // _MR
    for s in range(s0, s1):
        j = s * nr
        pb = b_base + p * b_batch + s * b_strip
        # While this packed strip of B is in use, the next one is fetched towards
        # L2 a part per strip of A.
        part = (kc * nr + calls - 1) // calls if prefetch else 0
        _micro(a, a_base + p * a_batch + i0 // _MR * a_strip, a_strip, sa_row, sa_k, i1 - i0,
               b, pb, sb_k, kc, out, (p * m + i0) * n + j0 + j, n, first, min(nr, nc - j),
               pb + b_strip, part)  # fmt: skip


@njit(fastmath=_CONTRACT, cache=True)
def _pack_a(dst, at, a, pa, sa1, sa2, rows, kc):  # noqa: ANN001
    """dst[at + kk * _MR + r] = A[r, kk] (at ``pa`` with strides ``sa1``, ``sa2``);
    rows past ``rows`` are zero. Slices keep the indices provably non-negative, so
    the loops carry no wraparound checks."""
    d = dst[at : at + kc * _MR]
    if sa2 == 1 and rows == _MR:
        # Six row streams interleaved into consecutive stores.
        r0 = a[pa : pa + kc]
        r1 = a[pa + sa1 : pa + sa1 + kc]
        r2 = a[pa + 2 * sa1 : pa + 2 * sa1 + kc]
        r3 = a[pa + 3 * sa1 : pa + 3 * sa1 + kc]
        r4 = a[pa + 4 * sa1 : pa + 4 * sa1 + kc]
        r5 = a[pa + 5 * sa1 : pa + 5 * sa1 + kc]
        for kk in range(kc):
            q = kk * _MR
            d[q] = r0[kk]
            d[q + 1] = r1[kk]
            d[q + 2] = r2[kk]
            d[q + 3] = r3[kk]
            d[q + 4] = r4[kk]
            d[q + 5] = r5[kk]
        return
    if sa2 == 1:
        for r in range(rows):
            src = a[pa + r * sa1 : pa + r * sa1 + kc]
            for kk in range(kc):
                d[kk * _MR + r] = src[kk]
    else:
        for kk in range(kc):
            src = a[pa + kk * sa2 :]
            for r in range(rows):
                d[kk * _MR + r] = src[r * sa1]
    for kk in range(kc):
        for r in range(rows, _MR):
            d[kk * _MR + r] = 0


@njit(fastmath=_CONTRACT, cache=True)
def _pack_b(dst, at, b, pb, sb1, sb2, cols, kc, nr):  # noqa: ANN001
    """dst[at + kk * nr + c] = B[kk, c] (at ``pb`` with strides ``sb1``, ``sb2``);
    columns past ``cols`` are zero. Row-major strips copy whole vectors."""
    w = nr // 2
    if sb2 == 1 and cols == nr:
        for kk in range(kc):
            src = pb + kk * sb1
            fast_simd.store(dst, at + kk * nr, fast_simd.full_load(b, src))
            fast_simd.store(dst, at + kk * nr + w, fast_simd.full_load(b, src + w))
        return
    if sb2 == 1 and cols == w:
        # One whole vector and its padding (a product of one vector of columns, as a
        # float32 convolution's 4 x 4 planes): element by element it took half the
        # digits CNN's float32 conv2 forward.
        zeros = fast_simd.full_zeros(dst)
        for kk in range(kc):
            fast_simd.store(dst, at + kk * nr, fast_simd.full_load(b, pb + kk * sb1))
            fast_simd.store(dst, at + kk * nr + w, zeros)
        return
    d = dst[at : at + kc * nr]
    # Row by row of the packed strip, also when B's columns are contiguous (a transposed
    # B): its nr columns are read as nr sequential streams, and each row of the strip is
    # written whole. (Column by column, the strip was written nr times over at a stride
    # of nr: 512 x 144 of float64 took 115 us to pack instead of 22.)
    for kk in range(kc):
        src = b[pb + kk * sb1 :]
        for c in range(cols):
            d[kk * nr + c] = src[c * sb2]
    for kk in range(kc):
        for c in range(cols, nr):
            d[kk * nr + c] = 0


@njit(fastmath=_CONTRACT, cache=True)
def _micro(a, pa, a_strip, sa_row, sa_k, rows, b, pb, sb_k, kc, c, pc, ldc, first, cols, ahead,
           part):  # noqa: ANN001  # fmt: skip
    """The ``rows`` x nr column of C at ``pc`` (row stride ``ldc``), _MR rows at a time:
    written when ``first``, else added to. A's element (r, kk) of a strip is
    ``a[pa + r * sa_row + kk * sa_k]``, strips ``a_strip`` apart (the rows of a part
    strip past ``rows`` repeat its last one, and are not stored); B's vector kk starts
    at ``b[pb + kk * sb_k]``. Each step of k is 2 vector loads of B, _MR broadcasts of
    A and 12 fused multiply-adds into registers (1 load and 6 in a part strip of at
    most one vector). With ``part`` > 0, each strip also
    prefetches its part of the next strip of B (from ``ahead``).

    One call per column, not per block of _MR rows: each call of a compiled function
    updates the reference counts of its array arguments (atomic operations on memory
    the threads share); medians 2-5% lower on the digits CNN's products.
    """
    load, broadcast, fma = fast_simd.full_load, fast_simd.full_broadcast, fast_simd.fma
    w = fast_simd.full_lanes(c)
    line = 64 // c.itemsize
    for strip in range((rows + _MR - 1) // _MR):
        if part:
            start = ahead + strip * part
            for e in range(start, min(start + part, ahead + kc * 2 * w), line):
                fast_simd.prefetch(b, e)
        pas = pa + strip * a_strip
        pcs = pc + strip * _MR * ldc
        last = min(_MR, rows - strip * _MR) - 1
        a0 = pas
        a1 = pas + min(1, last) * sa_row
        a2 = pas + min(2, last) * sa_row
        a3 = pas + min(3, last) * sa_row
        a4 = pas + min(4, last) * sa_row
        a5 = pas + min(5, last) * sa_row
        c00 = c01 = c10 = c11 = c20 = c21 = fast_simd.full_zeros(c)
        c30 = c31 = c40 = c41 = c50 = c51 = fast_simd.full_zeros(c)
        if cols > w:
            for kk in range(kc):
                b0 = load(b, pb + kk * sb_k)
                b1 = load(b, pb + kk * sb_k + w)
                q = kk * sa_k
                x = broadcast(a, a0 + q)
                c00 = fma(x, b0, c00)
                c01 = fma(x, b1, c01)
                x = broadcast(a, a1 + q)
                c10 = fma(x, b0, c10)
                c11 = fma(x, b1, c11)
                x = broadcast(a, a2 + q)
                c20 = fma(x, b0, c20)
                c21 = fma(x, b1, c21)
                x = broadcast(a, a3 + q)
                c30 = fma(x, b0, c30)
                c31 = fma(x, b1, c31)
                x = broadcast(a, a4 + q)
                c40 = fma(x, b0, c40)
                c41 = fma(x, b1, c41)
                x = broadcast(a, a5 + q)
                c50 = fma(x, b0, c50)
                c51 = fma(x, b1, c51)
        else:
            # A part strip of one vector or less (the last strip of a width that is
            # no multiple of 2 vectors): the second vector would be all padding.
            for kk in range(kc):
                b0 = load(b, pb + kk * sb_k)
                q = kk * sa_k
                c00 = fma(broadcast(a, a0 + q), b0, c00)
                c10 = fma(broadcast(a, a1 + q), b0, c10)
                c20 = fma(broadcast(a, a2 + q), b0, c20)
                c30 = fma(broadcast(a, a3 + q), b0, c30)
                c40 = fma(broadcast(a, a4 + q), b0, c40)
                c50 = fma(broadcast(a, a5 + q), b0, c50)
        _store_row(c, pcs, first, cols, c00, c01)
        if last > 0:
            _store_row(c, pcs + ldc, first, cols, c10, c11)
        if last > 1:
            _store_row(c, pcs + 2 * ldc, first, cols, c20, c21)
        if last > 2:
            _store_row(c, pcs + 3 * ldc, first, cols, c30, c31)
        if last > 3:
            _store_row(c, pcs + 4 * ldc, first, cols, c40, c41)
        if last > 4:
            _store_row(c, pcs + 5 * ldc, first, cols, c50, c51)


@njit(fastmath=_CONTRACT, cache=True)
def _store_row(c, pc, first, cols, v0, v1):  # noqa: ANN001
    """Write (or add) the first ``cols`` lanes of ``v0, v1`` to ``c[pc:]``."""
    w = fast_simd.full_lanes(c)
    if cols == 2 * w:
        if not first:
            v0 = fast_simd.add(fast_simd.full_load(c, pc), v0)
            v1 = fast_simd.add(fast_simd.full_load(c, pc + w), v1)
        fast_simd.store(c, pc, v0)
        fast_simd.store(c, pc + w, v1)
        return
    for j in range(min(cols, w)):
        x = fast_simd.lane(v0, j)
        c[pc + j] = x if first else c[pc + j] + x
    for j in range(w, cols):
        x = fast_simd.lane(v1, j - w)
        c[pc + j] = x if first else c[pc + j] + x


def _matmul_rows(out, a, b, batch, m, n, k, sa0, sa1, sa2, sb0, sb1, sb2):  # noqa: ANN001
    """C = A @ B for small or thin products: each row of C accumulates k scaled
    rows of B (a unit-stride inner loop when B is row-major)."""
    for t in prange(batch * m):
        fast_simd.wide_loops()
        p = t // m
        i = t - p * m
        o_ = out[t * n : t * n + n]
        o_[:] = 0
        pa = p * sa0 + i * sa1
        k4 = 0
        if sb2 == 1:
            # Four rows of B per pass over the row of C: a quarter of its loads and
            # stores. Each element still adds its k products in order, one at a time.
            k4 = k - k % 4
            for kk in range(0, k4, 4):
                a0 = a[pa + kk * sa2]
                a1 = a[pa + (kk + 1) * sa2]
                a2 = a[pa + (kk + 2) * sa2]
                a3 = a[pa + (kk + 3) * sa2]
                pb = p * sb0 + kk * sb1
                b0 = b[pb : pb + n]
                b1 = b[pb + sb1 : pb + sb1 + n]
                b2 = b[pb + 2 * sb1 : pb + 2 * sb1 + n]
                b3 = b[pb + 3 * sb1 : pb + 3 * sb1 + n]
                for j in range(n):
                    o_[j] = o_[j] + a0 * b0[j] + a1 * b1[j] + a2 * b2[j] + a3 * b3[j]
        for kk in range(k4, k):
            aik = a[pa + kk * sa2]
            pb = p * sb0 + kk * sb1
            if sb2 == 1:
                b_ = b[pb : pb + n]
                for j in range(n):
                    o_[j] += aik * b_[j]
            else:
                for j in range(n):
                    o_[j] += aik * b[pb + j * sb2]


def _matmul_dots(out, a, b, batch, m, n, k, sa0, sa1, sa2, sb0, sb1, sb2):  # noqa: ANN001
    """C = A @ B for one or two columns, or for small products whose A rows and B
    columns are both contiguous along k (B transposed): a dot product per element
    of C, which LLVM vectorises along k (in a fixed lane order) in that case."""
    zero = out.dtype.type(0)
    for t in prange(batch * m):
        p = t // m
        i = t - p * m
        pa = p * sa0 + i * sa1
        for j in range(n):
            pb = p * sb0 + j * sb2
            acc = zero
            if sa2 == 1 and sb1 == 1:
                x = a[pa : pa + k]
                y = b[pb : pb + k]
                for kk in range(k):
                    acc += x[kk] * y[kk]
            else:
                for kk in range(k):
                    acc += a[pa + kk * sa2] * b[pb + kk * sb1]
            out[t * n + j] = acc


_gemm_into_par = njit(parallel=True, fastmath=_CONTRACT, cache=True)(
    variant(_gemm_into, "_par")
)
_gemm_into_ser = njit(fastmath=_CONTRACT, cache=True)(variant(_gemm_into, "_ser"))


_jit_pack_sizes = njit(cache=True)(variant(_pack_sizes, "_jit"))


@njit(cache=True)
def _new_pack_buffers(out, batch, m, n, k, sa0, sa1, sa2, sb0, sb1, sb2):  # noqa: ANN001
    a_size, b_size = _jit_pack_sizes(out.itemsize, batch, m, n, k, sa0, sa1, sa2, sb0, sb1, sb2)
    return np.empty(a_size, out.dtype), np.empty(b_size, out.dtype)


# The entry points on operands and strides alone, which allocate their own buffers
# (for tests and reports; the parallel one cuts C for two threads).
_ENTRY_THREADS = 2


@njit(cache=True)
def _gemm_par(out, a, b, batch, m, n, k, sa0, sa1, sa2, sb0, sb1, sb2):  # noqa: ANN001
    a_pack, b_pack = _new_pack_buffers(out, batch, m, n, k, sa0, sa1, sa2, sb0, sb1, sb2)
    _gemm_into_par(out, a, b, batch, m, n, k, sa0, sa1, sa2, sb0, sb1, sb2, a_pack, b_pack,
                   _ENTRY_THREADS)


@njit(cache=True)
def _gemm_ser(out, a, b, batch, m, n, k, sa0, sa1, sa2, sb0, sb1, sb2):  # noqa: ANN001
    a_pack, b_pack = _new_pack_buffers(out, batch, m, n, k, sa0, sa1, sa2, sb0, sb1, sb2)
    _gemm_into_ser(out, a, b, batch, m, n, k, sa0, sa1, sa2, sb0, sb1, sb2, a_pack, b_pack, 1)


_matmul_rows_par = njit(parallel=True, fastmath=_CONTRACT, cache=True)(
    variant(_matmul_rows, "_par")
)
_matmul_rows_ser = njit(fastmath=_CONTRACT, cache=True)(variant(_matmul_rows, "_ser"))
_matmul_dots_par = njit(parallel=True, fastmath=_DOTS_MATH, cache=True)(
    variant(_matmul_dots, "_par")
)
_matmul_dots_ser = njit(fastmath=_DOTS_MATH, cache=True)(variant(_matmul_dots, "_ser"))


@njit(parallel=True, fastmath=True, cache=True)
def tensor_matrix_multiply(
    out: Storage,
    out_shape: Shape,
    out_strides: Strides,
    a_storage: Storage,
    a_shape: Shape,
    a_strides: Strides,
    b_storage: Storage,
    b_shape: Shape,
    b_strides: Strides,
) -> None:
    """The course's matmul entry point on 3-D operands, any output strides."""
    a_batch = a_strides[0] if a_shape[0] > 1 else 0
    b_batch = b_strides[0] if b_shape[0] > 1 else 0
    rows = out_shape[1]
    cols = out_shape[2]
    inner = a_shape[2]
    for t in prange(out_shape[0] * rows):
        p = t // rows
        i = t - p * rows
        a_row = p * a_batch + i * a_strides[1]
        o_row = p * out_strides[0] + i * out_strides[1]
        for j in range(cols):
            b_col = p * b_batch + j * b_strides[2]
            acc = out.dtype.type(0)
            for kk in range(inner):
                acc += a_storage[a_row + kk * a_strides[2]] * b_storage[b_col + kk * b_strides[1]]
            out[o_row + j * out_strides[2]] = acc


# The course's kernel factories --------------------------------------------------


def tensor_map(fn: Callable[[float], float]) -> Any:
    """Parallel map kernel ``(out, out_shape, out_strides, in_storage, in_shape, in_strides)``."""
    return load_kernels("map", fast_kernels.MAP_SOURCE, fn, cache=False).map_nd_par


def tensor_zip(fn: Callable[[float, float], float]) -> Any:
    """Parallel zip kernel ``(out…3, a…3, b…3)`` with broadcasting."""
    return load_kernels("zip", fast_kernels.ZIP_SOURCE, fn, cache=False).zip_nd_par


def tensor_reduce(fn: Callable[[float, float], float]) -> Any:
    """Parallel reduce kernel ``(out…3, a…3, reduce_dim)``; ``out`` pre-filled with the start."""
    return load_kernels("reduce", fast_kernels.REDUCE_SOURCE, fn, cache=False).reduce_nd_par
