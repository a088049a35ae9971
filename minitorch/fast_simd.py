"""Explicit SIMD vectors for FastOps kernels (the matmul micro-kernel, reductions).

LLVM's loop vectoriser handles plain elementwise loops well, but not a
register block of accumulators: numba leaves LLVM's SLP vectoriser off, so a
6 x 8 block written with scalars stays scalar and spills. These intrinsics
give kernels a value type ``Vector`` that *is* an LLVM vector: one register
holding ``VECTOR_BYTES`` of the array's dtype (4 float64 or 8 float32 lanes on
AVX2), so the same kernel source is register-blocked for either dtype.

Two widths: ``VECTOR_BYTES`` (32) everywhere the lane count decides a value
(a reduction folds its lanes in a fixed order, so a sum must not depend on the
machine), and ``FULL_BYTES``, the machine's own register width (64 with
AVX-512), for the ``full_*`` intrinsics of kernels whose values do not depend on
it (the matmul micro-kernel: each output element is the same chain of fused
multiply-adds at any width). ``MINITORCH_SIMD_BYTES=32`` keeps those at 32 too.
``wide_loops`` lets LLVM vectorise a kernel's plain loops at the full width as
well (it picks 32 bytes on Intel's AVX-512 CPUs), where that width cannot change
a value: the elementwise, column-reduction and row-matmul kernels.

Loads and stores are unaligned and take a flat index into a 1-D array; under
``NUMBA_BOUNDSCHECK=1`` both ends of every access are checked like ``a[i]``.
"""

from __future__ import annotations

import os
from typing import Any

from llvmlite import binding as llvm
from llvmlite import ir
from llvmlite.ir.values import FunctionAttributes
from numba import types
from numba.core import cgutils
from numba.core import config as numba_config
from numba.core.datamodel import models
from numba.extending import intrinsic, register_jitable, register_model
from numba.np.arrayobj import make_array

# One AVX2 register. Wider machines split nothing; narrower ones (SSE) have LLVM
# split each vector into two registers, which is correct, only slower.
VECTOR_BYTES = 32
SIMD_BYTES_ENV = "MINITORCH_SIMD_BYTES"


def machine_bytes() -> int:
    """The vector register width of the CPU numba compiles for: 64 bytes with AVX-512
    (numba's ``NUMBA_CPU_FEATURES`` when set, else the host's), else 32."""
    features = numba_config.CPU_FEATURES
    if features is None:
        features = llvm.get_host_cpu_features().flatten()
    return 64 if "+avx512f" in features.split(",") else 32


def _full_bytes() -> int:
    """``machine_bytes()``, or ``$MINITORCH_SIMD_BYTES`` (32 or 64)."""
    chosen = os.environ.get(SIMD_BYTES_ENV, "").strip()
    if chosen:
        if chosen not in ("32", "64"):
            raise ValueError(f"{SIMD_BYTES_ENV} must be 32 or 64, not {chosen!r}.")
        return int(chosen)
    return machine_bytes()


def _full_lanes() -> int:
    """The most lanes of a ``full_*`` vector: 16 (float32 at 64 bytes), but 8 on AMD's
    Zen 4, which runs each 512-bit operation as two 256-bit halves. There a float32
    GEMM gains nothing from 16 lanes, and its strips of 32 columns are half padding
    at a convolution's 16 channels; on CPUs with full-rate 512-bit units (Intel's
    Xeons) 16 lanes took the float32 GEMM at 1024^3 from 130-141 to 166-196 GFLOP/s."""
    name = numba_config.CPU_NAME
    if name in (None, "", "host"):
        name = llvm.get_host_cpu_name()
    return 8 if name == "znver4" else 16


# Every full_* intrinsic's width and the most lanes it uses (part of the kernel cache
# key: see kernel_cache).
FULL_BYTES = _full_bytes()
FULL_LANES = _full_lanes()


@register_jitable
def full_lane_count(itemsize: int) -> int:
    """The lanes of a ``full_*`` vector of elements of ``itemsize`` bytes (in Python, and
    in compiled code: numba freezes the two constants)."""
    return min(FULL_BYTES // itemsize, FULL_LANES)

# All intrinsics below share numba's signature ``(typingctx, *arg_types)``.
# ruff: noqa: ANN001, ANN202


class Vector(types.Type):
    """``lanes`` values of ``dtype`` in one SIMD register."""

    def __init__(self, dtype: types.Float, lanes: int) -> None:
        self.dtype = dtype
        self.lanes = lanes
        super().__init__(name=f"Vector({dtype} x {lanes})")


@register_model(Vector)
class _VectorModel(models.PrimitiveModel):
    def __init__(self, dmm: Any, fe_type: Vector) -> None:
        element = dmm.lookup(fe_type.dtype).get_value_type()
        super().__init__(dmm, fe_type, ir.VectorType(element, fe_type.lanes))


def _vector_of(dtype: types.Type) -> Vector:
    return Vector(dtype, VECTOR_BYTES // (dtype.bitwidth // 8))


def _full_vector_of(dtype: types.Type) -> Vector:
    """A vector of the machine's width, up to FULL_LANES lanes."""
    return Vector(dtype, full_lane_count(dtype.bitwidth // 8))


def _element_pointer(context, builder, array_type, array, index, lanes: int = 1):
    """The address of ``array[index]``, bounds checked (up to ``index + lanes - 1``)
    when numba's bounds checking is on; no wraparound of negative indices."""
    ary = make_array(array_type)(context, builder, array)
    shape = cgutils.unpack_tuple(builder, ary.shape)
    strides = cgutils.unpack_tuple(builder, ary.strides)
    check = context.enable_boundscheck
    if check and lanes > 1:
        last = builder.add(index, ir.Constant(index.type, lanes - 1))
        cgutils.get_item_pointer2(context, builder, ary.data, shape, strides, array_type.layout,
                                  [last], wraparound=False, boundscheck=True)  # fmt: skip
    return cgutils.get_item_pointer2(context, builder, ary.data, shape, strides,
                                     array_type.layout, [index], wraparound=False,
                                     boundscheck=check)  # fmt: skip


def _splat(builder, vector_type: ir.VectorType, value):
    lanes = vector_type.count
    one = builder.insert_element(ir.Constant(vector_type, ir.Undefined), value,
                                 ir.Constant(ir.IntType(32), 0))  # fmt: skip
    zeros = ir.Constant(ir.VectorType(ir.IntType(32), lanes), [0] * lanes)
    return builder.shuffle_vector(one, ir.Constant(vector_type, ir.Undefined), zeros)


def _flat_float(array: types.Type) -> bool:
    """A 1-D float array. A contiguous one moves whole vectors; any other (a strided
    view used as a storage) is read and written one element at a time."""
    return (
        isinstance(array, types.Array) and array.ndim == 1 and isinstance(array.dtype, types.Float)
    )


def _elementwise_pointers(context, builder, array_type, array, index, lanes: int) -> list:
    return [
        _element_pointer(
            context, builder, array_type, array, builder.add(index, ir.Constant(index.type, i))
        )  # fmt: skip
        for i in range(lanes)
    ]


def _sized(vector_of: Any, prefix: str) -> tuple[Any, Any, Any, Any]:
    """The intrinsics that make a vector from an array, for vectors ``vector_of(dtype)``:
    ``lanes``, ``load``, ``broadcast`` and ``zeros``, named with ``prefix``."""

    def lanes(typingctx, array):
        """How many of ``array``'s elements one ``Vector`` holds (a constant)."""
        if not _flat_float(array):
            return None
        count = vector_of(array.dtype).lanes

        def codegen(context, builder, signature, args):
            return ir.Constant(ir.IntType(64), count)

        return types.int64(array), codegen

    def load(typingctx, array, index):
        """``array[index : index + lanes]`` as a vector."""
        if not _flat_float(array) or not isinstance(index, types.Integer):
            return None
        vector = vector_of(array.dtype)

        def codegen(context, builder, signature, args):
            vty = context.get_value_type(vector)
            if array.layout != "C":
                value = ir.Constant(vty, ir.Undefined)
                pointers = _elementwise_pointers(context, builder, array, args[0], args[1],
                                                 vector.lanes)  # fmt: skip
                for i, ptr in enumerate(pointers):
                    value = builder.insert_element(value, builder.load(ptr), ir.IntType(32)(i))
                return value
            ptr = _element_pointer(context, builder, array, args[0], args[1], vector.lanes)
            return builder.load(builder.bitcast(ptr, vty.as_pointer()),
                                align=array.dtype.bitwidth // 8)  # fmt: skip

        return vector(array, index), codegen

    def broadcast(typingctx, array, index):
        """A vector with ``array[index]`` in every lane (one broadcast load)."""
        if not _flat_float(array) or not isinstance(index, types.Integer):
            return None
        vector = vector_of(array.dtype)

        def codegen(context, builder, signature, args):
            value = builder.load(_element_pointer(context, builder, array, args[0], args[1]))
            return _splat(builder, context.get_value_type(vector), value)

        return vector(array, index), codegen

    def zeros(typingctx, array):
        """A vector of zeros of ``array``'s dtype."""
        if not _flat_float(array):
            return None
        vector = vector_of(array.dtype)

        def codegen(context, builder, signature, args):
            return ir.Constant(context.get_value_type(vector), None)

        return vector(array), codegen

    typers = (lanes, load, broadcast, zeros)
    for typer in typers:
        typer.__name__ = typer.__qualname__ = prefix + typer.__name__
    return tuple(intrinsic(typer) for typer in typers)  # type: ignore[return-value]


# Vectors of VECTOR_BYTES, and of the machine's full width.
lanes, load, broadcast, zeros = _sized(_vector_of, "")
full_lanes, full_load, full_broadcast, full_zeros = _sized(_full_vector_of, "full_")


@intrinsic
def store(typingctx, array, index, value):
    """``array[index : index + lanes] = value``."""
    if not isinstance(value, Vector) or not _flat_float(array):
        return None
    if value.dtype != array.dtype:
        return None

    def codegen(context, builder, signature, args):
        if array.layout != "C":
            pointers = _elementwise_pointers(context, builder, array, args[0], args[1],
                                             value.lanes)  # fmt: skip
            for i, ptr in enumerate(pointers):
                builder.store(builder.extract_element(args[2], ir.IntType(32)(i)), ptr)
            return
        ptr = _element_pointer(context, builder, array, args[0], args[1], value.lanes)
        vptr = builder.bitcast(ptr, context.get_value_type(value).as_pointer())
        builder.store(args[2], vptr, align=array.dtype.bitwidth // 8)

    return types.none(array, index, value), codegen


@intrinsic
def fma(typingctx, a, b, c):
    """``a * b + c`` lane by lane, fused when the CPU has FMA (LLVM's ``fmuladd``)."""
    if not (isinstance(a, Vector) and a == b == c):
        return None

    def codegen(context, builder, signature, args):
        vty = args[0].type
        suffix = f"v{vty.count}f{a.dtype.bitwidth}"
        fnty = ir.FunctionType(vty, [vty, vty, vty])
        fn = cgutils.get_or_insert_function(builder.module, fnty, f"llvm.fmuladd.{suffix}")
        return builder.call(fn, args)

    return a(a, b, c), codegen


def _lanewise(name: str, build: Any, doc: str) -> Any:
    """An intrinsic ``name`` applying ``build(builder, x, y)`` to two equal vectors."""

    def typer(typingctx, a, b):
        if not (isinstance(a, Vector) and a == b):
            return None

        def codegen(context, builder, signature, args):
            return build(builder, args[0], args[1])

        return a(a, b), codegen

    typer.__name__ = typer.__qualname__ = name
    typer.__doc__ = doc
    return intrinsic(typer)


add = _lanewise("add", lambda builder, x, y: builder.fadd(x, y), "``a + b`` lane by lane.")
mul = _lanewise("mul", lambda builder, x, y: builder.fmul(x, y), "``a * b`` lane by lane.")


def _maximum(builder, x, y):
    """``x if x != x else (x if x > y else y)``: exactly ``operators.maximum``, so a
    NaN in either operand gives NaN."""
    larger = builder.select(builder.fcmp_ordered(">", x, y), x, y)
    return builder.select(builder.fcmp_unordered("uno", x, x), x, larger)


maximum = _lanewise("maximum", _maximum, "``operators.maximum`` lane by lane (NaN wins).")


@intrinsic
def lane(typingctx, vector, index):
    """One lane of ``vector`` as a scalar."""
    if not isinstance(vector, Vector) or not isinstance(index, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        return builder.extract_element(args[0], args[1])

    return vector.dtype(vector, index), codegen


# LLVM's string attribute asking its vectorisers for vectors of the full width in one
# function (clang's -mprefer-vector-width=512). llvmlite's attribute set takes only the
# names it lists, so a subclass lists this one too.
_WIDE_LOOPS = '"prefer-vector-width"="512"'


class _WideLoopAttributes(FunctionAttributes):
    _known = FunctionAttributes._known | {_WIDE_LOOPS}


@intrinsic
def wide_loops(typingctx):
    """Let LLVM vectorise the loops of the function this is called in (for a
    ``prange`` body: call it inside the body, which numba compiles as a function of
    its own) at the machine's full width: 64 bytes with AVX-512.

    LLVM tunes Intel's AVX-512 CPUs to vectorise loops in 32-byte vectors; a loop
    bound by arithmetic, not memory (``exp``, ``sigmoid``), then runs at half the
    width of its registers. Only the width changes: each element is
    computed the same way, so results do not (a kernel whose float reductions may
    reassociate, such as the dot products, must not call this). It emits no code.
    """
    wide = FULL_BYTES == 64

    def codegen(context, builder, signature, args):
        attributes = builder.function.attributes
        if wide and _WIDE_LOOPS not in attributes:
            widened = _WideLoopAttributes(list(attributes))
            widened.alignstack = attributes.alignstack
            widened.personality = attributes.personality
            widened.add(_WIDE_LOOPS)
            builder.function.attributes = widened
        return context.get_dummy_value()

    return types.none(), codegen


@intrinsic
def prefetch(typingctx, array, index):
    """Ask for the cache line holding ``array[index]`` to be fetched into L2 ahead of
    use (a hint: never faults, even past the end)."""
    if not _flat_float(array) or not isinstance(index, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        if array.layout != "C":
            return  # a hint only: strided storages go without
        ary = make_array(array)(context, builder, args[0])
        address = builder.gep(ary.data, [args[1]])
        i8p = ir.IntType(8).as_pointer()
        i32 = ir.IntType(32)
        fnty = ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0")
        # read, locality 2 (keep in the outer caches), data
        builder.call(fn, [builder.bitcast(address, i8p), i32(0), i32(2), i32(1)])

    return types.none(array, index), codegen
