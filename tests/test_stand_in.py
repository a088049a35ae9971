"""The NumPy stand-in for the first launches of FastOps' IEEE-exact elementwise kernels.

``fast_ops.STAND_IN_CALLS``: a serial kernel of a function with a NumPy form
(add / sub / mul / neg / id / lt / eq as ufuncs; relu, relu_back, log_back and
sigmoid_back_from_output, exp and sigmoid through ``fast_math.exp_numpy``, and log
(float64) through Python's ``math.log``, written in NumPy) compiles only on its STAND_IN_CALLS-th
launch, and the launches before it run the form. Both compute the same IEEE
operations in the same arithmetic, so the values must agree bit for bit with the
kernel's on every layout the stand-in takes, for both dtypes and mixed operands,
with NaN, infinities, signed zeros and subnormals; every other layout must be
declined, writing nothing.
Sums and products stand in for the serial ``reduce3`` kernel the same way, folding
each output in the kernel's order (values chosen so that order shows).
The rest of the suite runs with the stand-in off (conftest.py), testing the kernels.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import assert_same_bits

from minitorch import bench, fast_ops, fast_optim, operators

pytestmark = pytest.mark.kernels

FUNCTIONS = sorted(fast_ops._NUMPY_FORMS, key=lambda fn: fn.__name__)
SPECIAL = [np.nan, np.inf, -np.inf, 0.0, -0.0, 5e-324, -2.2e-308, 1e308, -1e308, 1.0, 3.0,
           -operators.EPS]  # (log_back divides by x + EPS: 0 there)
values = st.one_of(st.sampled_from(SPECIAL), st.floats(allow_nan=True, width=64))
# For folds: values whose sums depend on their order (1e16 + 0.1 - 1e16 is not 0.1).
fold_values = st.one_of(
    st.sampled_from(SPECIAL), st.sampled_from([1e16, -1e16, 0.1, 0.7, 3.3]), st.floats(-1e3, 1e3)
)
DTYPES = [np.float64, np.float32]


def _arity(fn) -> int:  # noqa: ANN001
    return fn.__code__.co_argcount


def _engine(fn, dtypes):  # noqa: ANN001, ANN202
    """``fn``'s engine for operands of these dtypes (float32 arithmetic only when all are)."""
    kind = "map" if _arity(fn) == 1 else "zip"
    engines = fast_ops._elementwise(fn, kind)
    return engines.f32() if all(d == np.float32 for d in dtypes) else engines.f64


@st.composite
def launches(draw):  # noqa: ANN001, ANN202
    """A function, operand storages and a layout (empty for the flat kernel, else the
    2-D kernel's ``n0, n1`` and each storage's row and inner strides)."""
    fn = draw(st.sampled_from(FUNCTIONS))
    arity = _arity(fn)
    n0, n1 = draw(st.integers(1, 5)), draw(st.integers(1, 9))
    in_dtypes = [draw(st.sampled_from(DTYPES)) for _ in range(arity)]
    mixed = any(d == np.float64 for d in in_dtypes)
    # The output has the arithmetic's dtype (or, through ``out=``, the other one).
    out_dtype = draw(st.sampled_from([np.float64 if mixed else np.float32, *DTYPES]))
    flat = draw(st.booleans())
    strides, xs = [], []
    for dtype in in_dtypes:
        if flat:
            pair = (n1, 1)
        else:
            pair = draw(st.sampled_from([(n1, 1), (0, 1), (0, 0), (1, 0), (1, n0)]))
        strides += pair
        length = n0 * n1 if pair in ((n1, 1), (1, n0)) else (n0 if pair == (1, 0) else n1)
        data = draw(st.lists(values, min_size=length, max_size=length))
        with np.errstate(over="ignore"):  # (float32 rounds the large ones to inf)
            xs.append(np.array(data, dtype=np.float64).astype(dtype))
    out = np.full(n0 * n1, 7.0, dtype=out_dtype)
    rows = () if flat else (n0, n1, n1, 1, *strides)
    return fn, out, xs, rows


@settings(max_examples=300, deadline=None)
@given(launches())
def test_stand_in_matches_kernel_bit_for_bit(launch) -> None:  # noqa: ANN001
    fn, out, xs, rows = launch
    engine = _engine(fn, [x.dtype for x in xs])
    expected = out.copy()
    if rows:
        engine.d2[None, False](expected, *xs, *rows)  # the general 2-D kernel: any strides
    else:
        engine.flat_ser(expected, *xs)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow or 0 / 0 warnings (kernels give none)
        taken = engine.numpy_launch(out, xs, rows)
    # (log's form is float64's only: the float32 kernel calls ``logf``)
    handled = engine.numpy_form is not None and (not rows or all(
        (s0, s1) in ((rows[1], 1), (0, 1), (0, 0)) or (rows[0] == 1 and s1 == 1)
        for s0, s1 in zip(rows[4::2], rows[5::2])
    ))  # fmt: skip
    assert taken == handled
    if taken:
        assert_same_bits(out, expected)
    else:
        assert np.all(out == 7.0)  # declined: nothing written


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("fn", [operators.exp, operators.sigmoid])
def test_exp_forms_match_the_kernels_across_exps_ranges(fn, dtype) -> None:  # noqa: ANN001
    """``fast_math.exp_numpy`` against the kernel on dense grids where exp's reduction
    and scaling change case: the overflow and subnormal edges of both precisions, the
    clamps, and around 0, with NaN, infinities and signed zeros (random floats
    rarely land there)."""
    x = np.concatenate([np.linspace(lo, hi, 20_000) for lo, hi in (
        (-800.0, 800.0), (-746.5, -700.0), (700.0, 711.0), (-110.0, -85.0), (85.0, 90.0),
        (-1.0, 1.0), (-1e-8, 1e-8))] + [SPECIAL, [operators.EXP_MAX]])  # fmt: skip
    with np.errstate(over="ignore"):
        x = x.astype(dtype)
    engine = _engine(fn, [dtype])
    expected, out = np.empty_like(x), np.empty_like(x)
    engine.flat_ser(expected, x)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert engine.numpy_launch(out[:1024], [x[:1024]])
        assert not engine.numpy_launch(out, [x])  # (past _COSTLY_FORM_ELEMENTS: the kernel)
    assert_same_bits(out[:1024], expected[:1024])
    with np.errstate(all="ignore"):
        fast_ops._NUMPY_FORMS[fn](out, x)
    assert_same_bits(out, expected)


def test_log_form_calls_the_kernels_log() -> None:
    """log's form calls the C library's ``log`` through Python, as the float64 kernel
    does: the same bits over the whole positive range, at 1 and at the EPS shift, and
    for 0, negatives, infinities and NaN; the float32 kernel (``logf``) has no form."""
    rng = np.random.default_rng(3)
    x = np.concatenate([rng.uniform(0.0, 10.0, 20_000), 10.0 ** rng.uniform(-320, 308, 20_000),
                        rng.uniform(1 - 1e-6, 1 + 1e-6, 5_000), SPECIAL,
                        [-2 * operators.EPS, np.nextafter(-operators.EPS, 0)]])  # fmt: skip
    engine = _engine(operators.log, [np.float64])
    expected, out = np.empty_like(x), np.empty_like(x)
    engine.flat_ser(expected, x)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert engine.numpy_launch(out[:256], [x[:256]])
        assert not engine.numpy_launch(out[:257], [x[:257]])
    assert_same_bits(out[:256], expected[:256])
    fast_ops._NUMPY_FORMS[operators.log](out, x)
    assert_same_bits(out, expected)
    assert _engine(operators.log, [np.float32]).numpy_form is None


class _NotCompiled:
    """A kernel this process has neither compiled nor loaded."""

    overloads: dict = {}


@pytest.mark.parametrize(("fn", "costly"), [(operators.sigmoid, True), (operators.log, True),
                                            (operators.relu, False)])  # fmt: skip
def test_costly_forms_stand_in_for_a_kernels_first_launches_only(
    monkeypatch: pytest.MonkeyPatch, fn, costly: bool  # noqa: ANN001
) -> None:
    """A costly form (exp, sigmoid, log: 5-50 us a launch more than the kernel) takes only
    a kernel's first _COSTLY_FORM_CALLS launches, so that a run whose kernels are on disk
    already does not pay it for a thousand; a cheap form takes STAND_IN_CALLS (here 50)."""
    monkeypatch.setattr(fast_ops, "STAND_IN_CALLS", 50)
    launches = fast_ops._COSTLY_FORM_CALLS if costly else 50
    assert fast_ops._COSTLY_FORM_CALLS < 50  # (else the two would not differ here)
    engine = _engine(fn, [np.float64])
    kernel = _NotCompiled()
    monkeypatch.setattr(engine, "stand_ins", {kernel: 0})
    x, out = np.linspace(0.5, 2.0, 10), np.empty(10)
    taken = [engine._stood_in(kernel, out, [x]) for _ in range(60)]
    assert taken == [True] * launches + [False] * (60 - launches)


def _double_into(out, x):  # noqa: ANN001, ANN202 - a kernel for the test below
    for i in range(len(out)):
        out[i] = 2.0 * x[i]


def test_a_kernel_on_disk_stands_in_for_fewer_launches(
    monkeypatch: pytest.MonkeyPatch, tmp_path  # noqa: ANN001
) -> None:
    """NumPy stands in for STAND_IN_CALLS launches of a kernel whose machine code would
    have to be compiled, but only for _ON_DISK_CALLS of one another process saved already
    (``kernel_cache.on_disk``, for the launch's argument types): loading it is cheaper
    than the stand-ins' overhead over a long run."""
    from minitorch import kernel_cache

    monkeypatch.setenv(kernel_cache.CACHE_ENV, str(tmp_path))
    monkeypatch.setattr(fast_ops, "STAND_IN_CALLS", 1000)
    args = (np.empty(4), np.arange(4.0))
    first = kernel_cache.njit(cache=True)(_double_into)
    assert not kernel_cache.on_disk(first, args)
    few = fast_ops._ON_DISK_CALLS
    launches = 2 * few
    assert few < launches < fast_ops.STAND_IN_CALLS
    pending = {first: 0}
    assert all(fast_ops._stand_in_due(pending, first, args) for _ in range(launches))
    first(*args)  # compiles, and saves to tmp_path
    again = kernel_cache.njit(cache=True)(_double_into)  # as in the next process
    assert not again.overloads
    assert kernel_cache.on_disk(again, args)
    pending = {again: 0}
    taken = [fast_ops._stand_in_due(pending, again, args) for _ in range(launches)]
    assert taken == [True] * few + [False] * (launches - few)
    assert pending == {}
    # Only the types on disk count: float32 operands have no entry yet.
    args32 = (np.empty(4, np.float32), np.arange(4.0, dtype=np.float32))
    other = kernel_cache.njit(cache=True)(_double_into)
    assert not kernel_cache.on_disk(other, args32)
    pending = {other: 0}
    assert all(fast_ops._stand_in_due(pending, other, args32) for _ in range(launches))
    # Not a cached dispatcher, or arguments numba cannot type: not on disk.
    assert not kernel_cache.on_disk(_NotCompiled(), args)
    assert not kernel_cache.on_disk(again, (object(), 1))


def test_stand_in_declines_an_input_overlapping_the_output() -> None:
    """``out`` one element past its input: a kernel sees its own writes, a ufunc would
    not, so the stand-in leaves it to the kernel. In place (the same array) is fine."""
    engine = _engine(operators.add, [np.float64])
    base = np.arange(6.0)
    out, x = base[1:], base[:-1]
    assert not engine.numpy_launch(out, [x, np.ones(5)])
    assert np.array_equal(base, np.arange(6.0))
    same = np.arange(5.0)
    assert engine.numpy_launch(same, [same, np.ones(5)])
    assert np.array_equal(same, np.arange(5.0) + 1)


REDUCE_FUNCTIONS = [operators.add, operators.mul]


@st.composite
def reductions(draw):  # noqa: ANN001, ANN202
    """A fold (add or mul), a dtype, start values and a ``reduce3`` layout over a storage:
    any of the three dims may be broadcast (stride 0), and rows reach both sides of the
    SIMD cut (8 vectors) and of the stand-in's own (64)."""
    fn = draw(st.sampled_from(REDUCE_FUNCTIONS))
    dtype = draw(st.sampled_from(DTYPES))
    n_outer, n_inner = draw(st.integers(1, 4)), draw(st.sampled_from([1, 1, 2, 5]))
    n_reduce = draw(st.sampled_from([1, 2, 7, 31, 32, 33, 63, 64, 65, 70]))
    order = draw(st.permutations(range(3)))  # which dim is innermost in memory, and so on
    sizes = (n_outer, n_reduce, n_inner)
    strides, step = [0, 0, 0], 1
    for d in reversed(order):
        if draw(st.integers(0, 5)) == 0:
            continue  # broadcast
        strides[d] = step
        step *= sizes[d]
    data = draw(st.lists(fold_values, min_size=step, max_size=step))
    with np.errstate(over="ignore"):
        a = np.array(data, dtype=np.float64).astype(dtype)
    start = draw(st.sampled_from([0.0, 1.0, -0.0]))
    out = np.full(n_outer * n_inner, start, dtype=dtype)
    return fn, out, a, (*sizes, *strides)


@settings(max_examples=300, deadline=None)
@given(reductions())
def test_reduce_stand_in_matches_kernel_bit_for_bit(reduction) -> None:  # noqa: ANN001
    fn, out, a, layout = reduction
    lanes = fn in fast_ops._LANE_SAFE
    constants = {"LANES": lanes, "VFN": fast_ops._LANE_SAFE.get(fn, fast_ops.fast_simd.add)}
    engines = fast_ops._ByDtype(fn, "reduce", lambda module, dtype: module, constants)
    module = engines.f32() if a.dtype == np.float32 else engines.f64
    expected = out.copy()
    module.reduce3_ser(expected, a, *layout, fast_ops.REDUCE_CHUNK)
    start = out.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        taken = fast_ops._reduce_stand_in(fast_ops._UFUNCS[fn], lanes, out, a, *layout)
    n_reduce, n_inner, sa_reduce = layout[1], layout[2], layout[4]
    w = fast_ops.fast_simd.VECTOR_BYTES // a.itemsize
    simd = lanes and n_inner == 1 and sa_reduce == 1 and n_reduce >= 8 * w
    assert taken == (n_reduce <= 64 and not simd)
    if taken:
        assert_same_bits(out, expected)
    else:
        assert np.array_equal(out.view(np.uint8), start.view(np.uint8))


OPTIMISER_RULES = sorted(fast_optim.NUMPY_FORMS.items(), key=lambda rule: rule[0].py_func.__name__)


@st.composite
def optimiser_launches(draw):  # noqa: ANN001, ANN202
    """A serial optimiser kernel and its NumPy form, with its storages: arrays of one
    length and the coefficients as one-element arrays, all of one dtype."""
    kernel, form = draw(st.sampled_from(OPTIMISER_RULES))
    dtype = draw(st.sampled_from(DTYPES))
    n = draw(st.integers(1, 40))
    arity = kernel.py_func.__code__.co_argcount
    arrays = 3 if kernel is fast_optim._ADAM_MOVE[1] else 2  # (before the coefficients)
    args = []
    for i in range(arity):
        length = n if i < arrays else 1
        data = draw(st.lists(values, min_size=length, max_size=length))
        with np.errstate(over="ignore"):
            args.append(np.array(data, dtype=np.float64).astype(dtype))
    return kernel, form, args


@settings(max_examples=300, deadline=None)
@given(optimiser_launches())
def test_optimiser_stand_in_matches_kernel_bit_for_bit(launch) -> None:  # noqa: ANN001
    """``fast_optim.NUMPY_FORMS``: each rule's NumPy form writes its first storage with the
    serial kernel's bits (NaN, infinities, signed zeros, subnormals; no warnings)."""
    kernel, form, args = launch
    expected = [a.copy() for a in args]
    kernel(*expected)
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("error")
        form(*args)
    for actual, wanted in zip(args, expected):
        assert_same_bits(actual, wanted)


_TRAINING = textwrap.dedent(
    """
    import hashlib, random, sys
    import numpy as np
    import minitorch
    from minitorch import fast_ops, operators
    fast_ops.STAND_IN_CALLS = int(sys.argv[1])
    if sys.argv[2:] != ["from-disk"]:
        # Stand in as if no kernel were on disk yet (a first run on this machine).
        fast_ops.on_disk = lambda kernel, args: False
    F = minitorch.TensorBackend(minitorch.FastOps)
    random.seed(1)
    data = minitorch.datasets["Xor"](40)
    model = minitorch.Linear(2, 8, backend=F), minitorch.Linear(8, 1, backend=F)
    params = [p for layer in model for p in layer.parameters()]
    optim = minitorch.SGD(params, 0.5)
    X = minitorch.tensor(data.X, backend=F)
    y = minitorch.tensor(data.y, backend=F)

    def step():
        optim.zero_grad()
        out = model[1](model[0](X).relu()).view(40).sigmoid()
        prob = out * y + (out - 1.0) * (y - 1.0)
        loss = -prob.log().sum() / 40.0
        loss.backward()
        optim.step()
        return loss

    compiled = minitorch.compile(step)
    h = hashlib.sha256()
    add = fast_ops._elementwise(operators.add, "zip").f64
    compiled_at = None
    for i in range(60):
        loss = (compiled if i % 2 else step)()
        h.update(np.float64(loss.item()).tobytes())
        if compiled_at is None and add.flat_ser.overloads:
            compiled_at = i
    for p in params:
        h.update(p.value.to_numpy().tobytes())
    print(h.hexdigest(), compiled_at)
    """
)


@pytest.mark.not_boundschecked  # (subprocesses rerunning kernels covered elsewhere)
def test_training_is_the_same_with_and_without_the_stand_in() -> None:
    """Eager and compiled (``minitorch.compile``) steps, alternating: the same losses and
    parameters whether the first launches stand in or every launch is the kernel's.
    With a stand-in of 20 launches the flat add kernel compiles after a few steps
    (the compiled step's replay may compile it first); with 0 at once. With the default
    count, kernels already on disk (the first run saved them) load after _ON_DISK_CALLS
    launches instead."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    results = {}
    for run in (["0"], ["20"], ["100000"], ["1000", "from-disk"]):
        proc = subprocess.run([sys.executable, "-c", _TRAINING, *run], env=env,
                              capture_output=True, text=True, timeout=600)  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        results[" ".join(run)] = proc.stdout.split()
    digests = {digest for digest, _ in results.values()}
    assert len(digests) == 1, results
    assert results["0"][1] == "0"
    assert results["20"][1] not in ("None", "0")


@pytest.mark.not_boundschecked
@pytest.mark.parametrize(
    ("value", "expected"), [("5", "5"), ("0", "0"), ("", "1000"), ("-1", "ValueError"),
                            ("lots", "ValueError")],  # fmt: skip
)
def test_stand_in_calls_come_from_the_environment(value: str, expected: str) -> None:
    """``$MINITORCH_STAND_IN_CALLS`` sets the count (the suite's processes use 0); anything
    but a whole number is an error naming the variable, not a silent default."""
    script = textwrap.dedent(
        """
        try:
            from minitorch import fast_ops
            print(fast_ops.STAND_IN_CALLS)
        except ValueError as e:
            assert "MINITORCH_STAND_IN_CALLS" in str(e), e
            print("ValueError")
        """
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path), MINITORCH_STAND_IN_CALLS=value)
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split()[-1] == expected


# The bench's compiled course step, recorded under stand-ins (the environment sets their
# count), counting the launches NumPy took and the replay entries left to compile.
_FIRST_CALL = bench.COMPILED_COURSE_STEP + textwrap.dedent(
    """
    from numba.core.dispatcher import Dispatcher
    from minitorch import fast_ops
    fast_ops.on_disk = lambda kernel, args: False  # (as on a first run: see _TRAINING)
    launches = []
    numpy_launch = fast_ops._Elementwise.numpy_launch
    def counted(self, *args):
        launches.append(self.fn.__name__)
        return numpy_launch(self, *args)
    fast_ops._Elementwise.numpy_launch = counted
    compiled(x, y)
    assert compiled.last_call == "recorded"
    (record,) = compiled._records.values()
    waiting = [fn.__name__ for fn, _ in record.ops if isinstance(fn, Dispatcher)]
    print(len(launches), len(record.ops), ",".join(waiting) or "-")
    """
)


@pytest.mark.not_boundschecked  # (subprocesses rerunning kernels covered elsewhere)
def test_a_compiled_step_compiles_its_replay_in_the_first_call() -> None:
    """NumPy stands in for kernels while the first call records the step, but the replay
    runs kernels: they compile (or load) at the end of the first call, with the rest of
    its compile cost, not in the second (the bench's first-call figures)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path), MINITORCH_STAND_IN_CALLS="1000")
    proc = subprocess.run([sys.executable, "-c", _FIRST_CALL], env=env, capture_output=True,
                          text=True, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    stood_in, ops, waiting = proc.stdout.split()
    assert int(stood_in) > 0 and int(ops) > 0
    assert waiting == "-", f"replay kernels left to compile on the second call: {waiting}"
