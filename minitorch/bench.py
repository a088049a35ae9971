"""``python -m minitorch bench``: FastOps against NumPy and PyTorch on this machine.

Every case runs side by side in one process, each side producing a fresh
output, timed as the best of several repeats (the least disturbed run) after
the other side's worker threads have gone idle. The
results go to a Markdown file (``docs/benchmarks.md`` by default) with a
matmul GFLOP/s plot beside it.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import math
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numba
import numpy as np

import minitorch
from minitorch import fast_ops

FAST = minitorch.TensorBackend(minitorch.FastOps)


# Seconds to wait before timing a side: OpenBLAS, PyTorch and OpenMP keep their worker
# threads spinning for a while after a call, and on a 2-core machine a spinning
# thread of the previous side takes a core from the next one.
SETTLE = 0.2
# The seed of every training side's shuffles (see ``_taking_turns``).
SHUFFLE_SEED = 7


def best_time(fn: Callable[[], Any], repeat: int = 7, min_time: float = 0.05) -> float:
    """Seconds per call: the best of ``repeat`` rounds, each long enough to time."""
    fn()
    time.sleep(SETTLE)
    number = 1
    while True:
        start = time.perf_counter()
        for _ in range(number):
            fn()
        if time.perf_counter() - start >= min_time or number >= 1 << 16:
            break
        number *= 2
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(number):
            fn()
        best = min(best, (time.perf_counter() - start) / number)
    return best


def _torch() -> Any:
    try:
        import torch
    except ImportError:
        return None
    return torch


@dataclass
class Row:
    case: str
    ours: float
    numpy: float | None
    torch: float | None
    target: str
    ratio: float
    met: bool
    unit: str = "ms"


def _fmt(seconds: float | None, unit: str = "ms") -> str:
    if seconds is None:
        return "—"
    if unit == "GFLOP/s":
        return f"{seconds:.1f}"
    if unit == "s":
        return f"{seconds:.2f} s"
    return f"{seconds * 1e3:.3f}"


def _fast(x: np.ndarray) -> minitorch.Tensor:
    """A FastOps tensor over a copy of ``x`` in ``x``'s own dtype (float64 or float32)."""
    return minitorch.tensor_from_numpy(x, backend=FAST)


def _dtype_name(dtype: type) -> str:
    return np.dtype(dtype).name


# Limits (ours / NumPy time) of the elementwise and reduction targets, per dtype.
OP_LIMITS = {
    np.float64: {"zip add": 1.5, "map exp": 1.0, "broadcast": 2.0, "transposed": 2.0,
                 "sum": 2.0},
    np.float32: {"zip add": 1.0, "map exp": 1.0, "sum": 1.0},
}  # fmt: skip


def op_cases(repeat: int, dtype: type = np.float64) -> list[Row]:
    """The elementwise and reduction targets of the FastOps issues, in ``dtype``
    (NumPy and PyTorch in the same dtype)."""
    torch = _torch()
    rng = np.random.default_rng(0)
    limits = OP_LIMITS[dtype]
    suffix = "" if dtype is np.float64 else f", {_dtype_name(dtype)}"
    rows = []

    def case(name: str, ours: Callable, ref: Callable, tref: Callable | None, limit: float) -> None:
        t_ours = best_time(ours, repeat)
        t_np = best_time(ref, repeat)
        t_torch = best_time(tref, repeat) if tref is not None else None
        ratio = t_ours / t_np
        rows.append(Row(name + suffix, t_ours, t_np, t_torch, f"<= {limit}x NumPy", ratio,
                        ratio <= limit))  # fmt: skip

    x, y = rng.random(10**6).astype(dtype), rng.random(10**6).astype(dtype)
    a, b = _fast(x), _fast(y)
    tx, ty = (torch.from_numpy(x), torch.from_numpy(y)) if torch else (None, None)
    case("zip add, 1e6 contiguous", lambda: a.f.add_zip(a, b), lambda: x + y,
         (lambda: tx + ty) if torch else None, limits["zip add"])  # fmt: skip
    case("map exp, 1e6 contiguous", lambda: a.f.exp_map(a), lambda: np.exp(x),
         (lambda: torch.exp(tx)) if torch else None, limits["map exp"])  # fmt: skip

    m, c = rng.random((1000, 1000)).astype(dtype), rng.random((1000, 1)).astype(dtype)
    mt, ct = _fast(m), _fast(c)
    tm_, tc = (torch.from_numpy(m), torch.from_numpy(c)) if torch else (None, None)
    if "broadcast" in limits:
        case("zip mul broadcast, (1000,1000) * (1000,1)", lambda: mt.f.mul_zip(mt, ct),
             lambda: m * c, (lambda: tm_ * tc) if torch else None, limits["broadcast"])  # fmt: skip
    if "transposed" in limits:
        mtt = mt.permute(1, 0)
        case("zip add transposed view + contiguous, 1000x1000", lambda: mt.f.add_zip(mtt, mt),
             lambda: m.T + m, (lambda: tm_.T + tm_) if torch else None,
             limits["transposed"])  # fmt: skip
    case("sum along dim 0, 1000x1000", lambda: mt.f.add_reduce(mt, 0),
         lambda: m.sum(0, keepdims=True),
         (lambda: tm_.sum(0, keepdim=True)) if torch else None, limits["sum"])  # fmt: skip
    case("sum along dim 1, 1000x1000", lambda: mt.f.add_reduce(mt, 1),
         lambda: m.sum(1, keepdims=True),
         (lambda: tm_.sum(1, keepdim=True)) if torch else None, limits["sum"])  # fmt: skip
    return rows


def matmul_gflops(
    shape_a: tuple[int, ...], shape_b: tuple[int, ...], repeat: int, dtype: type = np.float64
) -> tuple:
    """GFLOP/s of minitorch, NumPy and PyTorch for one product in ``dtype``."""
    torch = _torch()
    rng = np.random.default_rng(1)
    x, y = rng.random(shape_a).astype(dtype), rng.random(shape_b).astype(dtype)
    a, b = _fast(x), _fast(y)
    flops = 2.0 * np.prod(np.broadcast_shapes(shape_a[:-2], shape_b[:-2]) or (1,))
    flops *= shape_a[-2] * shape_a[-1] * shape_b[-1]
    ours = flops / best_time(lambda: FAST.matrix_multiply(a, b), repeat) / 1e9
    ref = flops / best_time(lambda: x @ y, repeat) / 1e9
    theirs = None
    if torch:
        tx, ty = torch.from_numpy(x), torch.from_numpy(y)
        theirs = flops / best_time(lambda: tx @ ty, repeat) / 1e9
    return ours, ref, theirs


# (name, shape of A, shape of B, the least fraction of NumPy's GFLOP/s), per dtype.
MATMUL_TARGETS = {
    np.float64: [
        ("matmul 256x256", (256, 256), (256, 256), 0.85),
        ("matmul 1024x1024", (1024, 1024), (1024, 1024), 0.85),
        ("matmul batched 16x128x128", (16, 128, 128), (16, 128, 128), 0.5),
    ],
    np.float32: [
        ("matmul 64x64, float32", (64, 64), (64, 64), 0.5),
        ("matmul 256x256, float32", (256, 256), (256, 256), 0.7),
        ("matmul 1024x1024, float32", (1024, 1024), (1024, 1024), 0.7),
    ],
}


def matmul_cases(repeat: int, dtype: type = np.float64) -> list[Row]:
    rows = []
    for name, sa, sb, limit in MATMUL_TARGETS[dtype]:
        ours, ref, theirs = matmul_gflops(sa, sb, repeat, dtype)
        ratio = ours / ref
        rows.append(Row(name, ours, ref, theirs, f">= {limit:.0%} of NumPy GFLOP/s", ratio,
                        ratio >= limit, "GFLOP/s"))  # fmt: skip
    return rows


# Convolution: forward and both gradients at the digits CNN's sizes ------------------

# (name, input (B, Cin, H, W), weight (Cout, Cin, KH, KW)): examples/digits_cnn.py's
# two convolutions on a batch of 32.
CONV_CASES = [
    ("conv2d fwd+bwd, digits conv1 (32,1,8,8) * (16,1,3,3)", (32, 1, 8, 8), (16, 1, 3, 3)),
    ("conv2d fwd+bwd, digits conv2 (32,16,4,4) * (32,16,3,3)", (32, 16, 4, 4), (32, 16, 3, 3)),
]


def conv_cases(repeat: int, dtype: type = np.float64) -> list[Row]:
    """minitorch's conv2d forward and backward (input and weight gradients) against
    PyTorch's (padded bottom and right by k - 1: the same output), in ``dtype``.
    No rows without PyTorch."""
    torch = _torch()
    if torch is None:
        return []
    rng = np.random.default_rng(2)
    suffix = "" if dtype is np.float64 else f", {_dtype_name(dtype)}"
    rows = []
    for name, x_shape, w_shape in CONV_CASES:
        out_shape = (x_shape[0], w_shape[0], *x_shape[2:])
        arrays = [rng.random(shape).astype(dtype) for shape in (x_shape, w_shape, out_shape)]
        ours, theirs = _conv_steps(torch, *arrays)
        t_ours, t_torch = best_time(ours, repeat), best_time(theirs, repeat)
        ratio = t_ours / t_torch
        rows.append(Row(name + suffix, t_ours, None, t_torch, "<= 1.0x PyTorch", ratio,
                        ratio <= 1.0))  # fmt: skip
    return rows


def _conv_steps(
    torch: Any, nx: np.ndarray, nw: np.ndarray, ng: np.ndarray
) -> tuple[Callable[[], None], Callable[[], None]]:
    """One conv2d forward and backward (gradient ``ng``) on each side, gradients reset."""
    import torch.nn.functional as F

    x, w, g = (_fast(a) for a in (nx, nw, ng))
    x.requires_grad_(True)
    w.requires_grad_(True)
    tx, tw, tg = (torch.from_numpy(a) for a in (nx, nw, ng))
    tx.requires_grad_(True)
    tw.requires_grad_(True)
    kh, kw = nw.shape[2:]

    def ours() -> None:
        x.grad = w.grad = None
        minitorch.conv2d(x, w).backward(g)

    def theirs() -> None:
        tx.grad = tw.grad = None
        F.conv2d(F.pad(tx, (0, kw - 1, 0, kh - 1)), tw).backward(tg)

    return ours, theirs


# Training: the course's network and loop, on minitorch and on PyTorch -------------


def _minitorch_epoch_times(
    points: int, hidden: int, batch: int, epochs: int, backend: Any = FAST, compiled: bool = False
) -> list[float]:
    """Seconds of each epoch after a warm-up one (which compiles kernels, and records
    the step when ``compiled``)."""
    times = _taking_turns([_minitorch_training(points, hidden, batch, backend, compiled)],
                          batch, epochs)  # fmt: skip
    return times[0] or []


def _minitorch_training(
    points: int, hidden: int, batch: int, backend: Any, compiled: bool = False,
    dtype_name: str = "float64",
) -> tuple[Any, Callable[[Any, Any], None]]:
    """The course's network, data and SGD step on minitorch (as in the PyTorch twin),
    in ``dtype_name``, the step run through ``minitorch.compile`` when ``compiled``."""
    dtype = np.dtype(dtype_name)

    class Linear(minitorch.Module):
        def __init__(self, n_in: int, n_out: int) -> None:
            super().__init__()
            self.weights = minitorch.Parameter(
                2 * (minitorch.rand((n_in, n_out), backend=backend, dtype=dtype) - 0.5)
            )
            self.bias = minitorch.Parameter(
                2 * (minitorch.rand((n_out,), backend=backend, dtype=dtype) - 0.5)
            )

        def forward(self, x: minitorch.Tensor) -> minitorch.Tensor:
            rows, cols = x.shape
            return x.view(rows, cols) @ self.weights.value + self.bias.value

    class Network(minitorch.Module):
        def __init__(self) -> None:
            super().__init__()
            self.layer1 = Linear(2, hidden)
            self.layer2 = Linear(hidden, hidden)
            self.layer3 = Linear(hidden, 1)

        def forward(self, x: minitorch.Tensor) -> minitorch.Tensor:
            h = self.layer1.forward(x).relu()
            h = self.layer2.forward(h).relu()
            return self.layer3.forward(h).sigmoid()

    random.seed(1)
    data = minitorch.datasets["Split"](points)
    model = Network()
    optim = minitorch.SGD(model.parameters(), 0.05)

    def step(x: minitorch.Tensor, y: minitorch.Tensor) -> None:
        optim.zero_grad()
        out = model.forward(x).view(y.shape[0])
        prob = (out * y) + (out - 1.0) * (y - 1.0)
        loss = -prob.log()
        (loss / y.shape[0]).sum().view(1).backward()
        optim.step()

    run = minitorch.compile(step) if compiled else step

    def from_lists(xs: Any, ys: Any) -> None:
        x = minitorch.tensor_from_numpy(np.array(xs, dtype=dtype), backend=backend)
        run(x, minitorch.tensor_from_numpy(np.array(ys, dtype=dtype), backend=backend))

    return data, from_lists


def _minitorch_epoch_time(
    points: int, hidden: int, batch: int, epochs: int, backend: Any = FAST
) -> float:
    """The best eager epoch time."""
    return min(_minitorch_epoch_times(points, hidden, batch, epochs, backend))


def _torch_training(
    points: int, hidden: int, batch: int, dtype_name: str = "float64"
) -> tuple[Any, Callable[[Any, Any], None]] | None:
    """The same network, data and SGD step in PyTorch; None without PyTorch."""
    torch = _torch()
    if torch is None:
        return None
    dtype = getattr(torch, dtype_name)
    model = torch.nn.Sequential(
        torch.nn.Linear(2, hidden, dtype=dtype), torch.nn.ReLU(),
        torch.nn.Linear(hidden, hidden, dtype=dtype), torch.nn.ReLU(),
        torch.nn.Linear(hidden, 1, dtype=dtype), torch.nn.Sigmoid(),
    )  # fmt: skip
    optim = torch.optim.SGD(model.parameters(), 0.05)
    random.seed(1)
    data = minitorch.datasets["Split"](points)

    def step(xs: Any, ys: Any) -> None:
        optim.zero_grad()
        x = torch.tensor(np.array(xs), dtype=dtype)
        y = torch.tensor(np.array(ys), dtype=dtype)
        out = model(x).view(y.shape[0])
        prob = (out * y) + (out - 1.0) * (y - 1.0)
        loss = -prob.log()
        (loss / y.shape[0]).sum().view(1).backward()
        optim.step()

    return data, step


def _taking_turns(
    sides: list[tuple[Any, Callable[[Any, Any], None]] | None], batch: int, epochs: int
) -> list[list[float] | None]:
    """Seconds of each of ``epochs`` epochs of every side (None: not measured).

    After a warm-up epoch each (which compiles kernels, and records a compiled step),
    the sides take turns, a block of epochs at a time (``SETTLE`` before each block when
    there are several), so that a slow spell of the shared machine falls on all of
    them alike rather than on whichever side ran then.
    """
    # Each side shuffles with its own generator, all seeded alike: every side trains on
    # the same batches in the same order, whichever sides ran before it. (From the
    # global one, a side's batches depended on the sides before it, and the float32
    # MLP after four of them drifted into gradients below float32's normal range, whose
    # products run 15-20x slower: 59 ms epochs instead of 15.)
    orders = [random.Random(SHUFFLE_SEED) for _ in sides]
    for side, order in zip(sides, orders):
        if side is not None:
            _epoch(side[0], batch, side[1], order)
    times: list[list[float] | None] = [[] if side else None for side in sides]
    for start, stop in _blocks(epochs):
        block = stop - start
        for side, side_times, order in zip(sides, times, orders):
            if side is None or side_times is None:
                continue
            if len(sides) > 1:
                time.sleep(SETTLE)
            for _ in range(block):
                start = time.perf_counter()
                _epoch(side[0], batch, side[1], order)
                side_times.append(time.perf_counter() - start)
    return times


def _epoch(
    data: Any, batch: int, step: Callable[[Any, Any], None], order: Any = random
) -> None:
    """One pass over the data, shuffled by ``order`` (a ``random.Random``), in batches."""
    pairs = list(zip(data.X, data.y))
    order.shuffle(pairs)
    xs, ys = zip(*pairs)
    for i in range(0, len(xs), batch):
        step(xs[i : i + batch], ys[i : i + batch])


@dataclass
class TrainingRow:
    """Epoch times (seconds, one list per side) of one training workload."""

    case: str
    eager: list[float]
    compiled: list[float]
    torch64: list[float] | None
    torch32: list[float] | None
    limit: float
    # The sides took turns (``_taking_turns``): ratios pair each side's blocks.
    paired: bool = False
    # Else the epochs of ``runs`` runs, each of both sides, one after the other: ratios
    # pair each run's epochs (when the lists have a run's epochs each).
    runs: int = 1
    # Eager minitorch in float32 (its twin is ``torch32``), where it was measured.
    eager32: list[float] | None = None

    @property
    def ratio(self) -> float:
        """Compiled minitorch over PyTorch's eager float64."""
        return _ratio(self.compiled, self.torch64, self.paired, self.runs)

    @property
    def eager_ratio(self) -> float:
        """Eager minitorch over PyTorch's eager float64 (target 1.0x)."""
        return _ratio(self.eager, self.torch64, self.paired, self.runs)

    @property
    def eager32_ratio(self) -> float:
        """Eager minitorch over PyTorch's eager step, both float32 (target 1.0x); the
        float32 sides of a row of ``runs`` ran once, so theirs is a ratio of medians."""
        if not self.eager32:
            return float("nan")
        return _ratio(self.eager32, self.torch32, self.paired)


def _ratio(ours: list[float], theirs: list[float] | None, paired: bool, runs: int = 1) -> float:
    """``ours`` over ``theirs``: the ratio of the median epochs, or when the epochs were
    taken in turns (``paired``, same count each), the median over the turns of the
    ratio of that turn's blocks; likewise over ``runs`` runs of both sides (same count
    each, a run's epochs one block). A slow spell of the shared machine that spans a
    turn then slows both of its blocks and leaves their ratio alone."""
    if not theirs:
        return float("nan")
    if len(ours) != len(theirs) or not (paired or (runs > 1 and len(ours) % runs == 0)):
        return statistics.median(ours) / statistics.median(theirs)
    if paired:
        blocks = _blocks(len(ours))
    else:
        per_run = len(ours) // runs
        blocks = [(r * per_run, (r + 1) * per_run) for r in range(runs)]
    ratios = []
    for start, stop in blocks:
        ratios.append(statistics.median(ours[start:stop]) / statistics.median(theirs[start:stop]))
    return statistics.median(ratios)


def _blocks(epochs: int) -> list[tuple[int, int]]:
    """The ``(start, stop)`` epochs of each turn of ``_taking_turns``."""
    rounds = min(epochs, 12)
    bounds, start = [], 0
    for r in range(rounds):
        stop = start + epochs // rounds + (r < epochs % rounds)
        bounds.append((start, stop))
        start = stop
    return bounds


# (case, points, hidden, batch, epochs, quick epochs, compiled / PyTorch float64 target)
TRAINING_CASES = (
    ("course MLP: hidden 100, 50 points, batch 10", 50, 100, 10, 60, 15, 0.5),
    ("MLP: hidden 200, 1000 points, batch 100", 1000, 200, 100, 12, 4, 0.5),
)


def training_cases(quick: bool) -> list[TrainingRow]:
    """Each workload eagerly, compiled, and in PyTorch (float64 and float32), the four
    sides taking turns (``_taking_turns``)."""
    rows = []
    for name, points, hidden, batch, epochs, quick_epochs, limit in TRAINING_CASES:
        sides = [
            _minitorch_training(points, hidden, batch, FAST),
            _minitorch_training(points, hidden, batch, FAST, compiled=True),
            _torch_training(points, hidden, batch, "float64"),
            _torch_training(points, hidden, batch, "float32"),
            _minitorch_training(points, hidden, batch, FAST, dtype_name="float32"),
        ]
        eager, compiled, torch64, torch32, eager32 = _taking_turns(
            sides, batch, quick_epochs if quick else epochs
        )
        rows.append(TrainingRow(name, eager, compiled, torch64, torch32, limit,  # type: ignore[arg-type]
                                paired=True, eager32=eager32))  # fmt: skip
    return rows


DIGITS_CASE = "digits CNN (`examples/digits_cnn.py`): 1,347 images, batch 32, Adam"
# Compiled digits step / PyTorch's eager one (issue 11 asks <= 1.0x of the eager step).
DIGITS_COMPILED_TARGET = 1.0
# Runs of the example with its PyTorch twin (each trains one side, then the other): the
# eager ratio is the median of the runs' ratios, so one busy spell moves it less.
DIGITS_RUNS = 3


def digits_training_row(quick: bool) -> TrainingRow | None:
    """The digits CNN as a training row, in seconds per epoch: ``DIGITS_RUNS`` runs of
    the example with its PyTorch twin (float64; one when ``quick``), one compiled, one
    of both in float32. None (and a line on stderr) when the example cannot run here."""
    unavailable = _digits_unavailable()
    if unavailable:
        print(f"    digits CNN skipped: {unavailable}", file=sys.stderr)
        return None
    epochs, runs = (3, 1) if quick else (6, DIGITS_RUNS)
    twin = ("--torch",) if _torch() is not None else ()
    eager: dict[str, list[float]] = {"minitorch": [], "pytorch": []}
    for _ in range(runs):
        for library, times in _digits_run(epochs, *twin).items():
            eager[library] += times
        time.sleep(SETTLE)
    compiled = _digits_run(epochs, "--compile")["minitorch"]
    time.sleep(SETTLE)
    float32 = _digits_run(epochs, *twin, "--dtype", "float32")
    return TrainingRow(DIGITS_CASE, eager["minitorch"], compiled, eager["pytorch"] or None,
                       float32["pytorch"] or None, DIGITS_COMPILED_TARGET, runs=runs,
                       eager32=float32["minitorch"])  # fmt: skip


def _spread(times: list[float] | None) -> str:
    """Median and range of epoch times, in ms."""
    if not times:
        return "—"
    ms = [t * 1e3 for t in times]
    return f"{statistics.median(ms):.2f} ({min(ms):.2f}-{max(ms):.2f})"


def _verdict(ratio: float, limit: float, target: bool = False) -> str:
    """A ratio and whether it meets ``limit`` (a dash when either side was not measured);
    ``target`` names the limit too."""
    if math.isnan(ratio):
        return "—"
    met = "met" if ratio <= limit else "NOT met"
    return f"{ratio:.2f} (<= {limit}x: {met})" if target else f"{ratio:.2f} ({met})"


def _training_lines(rows: list[TrainingRow], first_call: tuple[float, ...] | None) -> list[str]:
    lines = [
        "",
        "## Training: eager, compiled (`minitorch.compile`) and PyTorch",
        "",
        "The course's network and SGD loop (each batch made from Python lists in the loop).",
        "ms per epoch: the median over the epochs after a warm-up one, and their range in",
        "brackets. The sides take turns, a block of epochs each, so a slow spell of the",
        "shared machine falls on all of them alike; the ratios are the median over the",
        "turns of each turn's ratio. Targets: eager <= 1.0x and compiled <= 0.5x (the",
        "digits CNN: 1.0x) PyTorch's eager float64 step (minitorch float64 eager and",
        "compiled), and eager float32 <= 1.0x PyTorch's eager float32 step. The",
        "digits CNN runs `examples/digits_cnn.py` in a fresh process each time: with",
        f"`--torch` {DIGITS_RUNS} times (its eager ratio is the median of the runs' ratios of",
        "medians), then with `--compile` and with `--torch --dtype float32` once (both",
        "libraries in float32; ratios of the medians); its figures are ms per epoch after",
        "the first one of each run.",
        "These and all the other timings but the start-up ones run the kernels from their",
        "first launch (`MINITORCH_STAND_IN_CALLS=0`: the state of a long run); the cold and",
        "warm starts and the compiled step's first call run with the default stand-ins,",
        "in fresh processes with Python's bytecode cache on (written by an untimed import",
        "first), as on a machine that does not set `PYTHONDONTWRITEBYTECODE`.",
        "",
        "| case | minitorch eager | minitorch compiled | PyTorch float64 "
        "| minitorch eager float32 | PyTorch float32 | eager / PyTorch (<= 1.0x) "
        "| float32: eager / PyTorch (<= 1.0x) | compiled / PyTorch (target) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r.case} | {_spread(r.eager)} | {_spread(r.compiled)} | {_spread(r.torch64)} | "
            f"{_spread(r.eager32)} | {_spread(r.torch32)} | {_verdict(r.eager_ratio, 1.0)} | "
            f"{_verdict(r.eager32_ratio, 1.0)} | {_verdict(r.ratio, r.limit, target=True)} |"
        )
    if first_call:
        cold, cold_replay, warm, warm_replay = first_call
        lines += [
            "",
            "The compiled course step's first call runs the step eagerly while recording it;",
            "the second is the first replay. In a fresh process:",
            "",
            f"- cold kernel cache (every kernel compiled): first call {cold:.2f} s, "
            f"second {cold_replay * 1e3:.2f} ms",
            f"- warm kernel cache (kernels loaded from disk): first call {warm:.2f} s, "
            f"second {warm_replay * 1e3:.2f} ms",
        ]
    return lines


# The course step on FastOps through ``minitorch.compile`` (``compiled``, and its inputs
# ``x`` and ``y``), as the start of a script for a fresh process (the tests run it too).
COMPILED_COURSE_STEP = """
import numpy as np
import minitorch
from minitorch.train import make_network
be = minitorch.TensorBackend(minitorch.FastOps)
model = make_network(100, be)
optim = minitorch.SGD(model.parameters(), 0.5)

def step(x, y):
    optim.zero_grad()
    out = model(x).view(y.shape[0])
    loss = -(out * y + (out - 1.0) * (y - 1.0)).log()
    (loss / y.shape[0]).sum().view(1).backward()
    optim.step()
    return loss

compiled = minitorch.compile(step)
x = minitorch.tensor_from_numpy(np.random.default_rng(0).uniform(-1, 1, (10, 2)), backend=be)
y = minitorch.tensor_from_numpy(np.arange(10) % 2 * 1.0, backend=be)
"""

_FIRST_CALL = COMPILED_COURSE_STEP + """
import time
times = []
for _ in range(2):
    start = time.perf_counter()
    compiled(x, y)
    times.append(time.perf_counter() - start)
assert compiled.last_call == "replayed"
print(*times)
"""


def first_call_times() -> tuple[float, float, float, float]:
    """The compiled step's first and second call (seconds), with a cold then a warm
    kernel cache, each in a fresh process."""
    _write_bytecode()
    with tempfile.TemporaryDirectory() as tmp:
        env = _start_env(tmp)
        times = []
        for _ in range(2):
            result = subprocess.run([sys.executable, "-c", _FIRST_CALL], env=env, check=True,
                                    capture_output=True, text=True)  # fmt: skip
            times.extend(float(t) for t in result.stdout.split())
    return times[0], times[1], times[2], times[3]


# Speed ladder and plot ------------------------------------------------------------


def ladder(repeat: int) -> list[tuple[str, float, float]]:
    """Seconds per call of SimpleOps and FastOps for each primitive on 100x100 operands."""
    rng = np.random.default_rng(2)
    x, y = rng.random((100, 100)), rng.random((100, 100))
    results = []
    for name, call in (
        ("map (exp)", lambda a, b: a.f.exp_map(a)),
        ("zip (mul)", lambda a, b: a.f.mul_zip(a, b)),
        ("reduce (sum dim 1)", lambda a, b: a.f.add_reduce(a, 1)),
        ("matrix multiply", lambda a, b: a.f.matrix_multiply(a, b)),
    ):
        timings = []
        for backend, reps, min_time in ((minitorch.SimpleBackend, 1, 0.0), (FAST, repeat, 0.05)):
            a = minitorch.tensor_from_numpy(x, backend=backend)
            b = minitorch.tensor_from_numpy(y, backend=backend)
            timings.append(best_time(lambda a=a, b=b, call=call: call(a, b), reps, min_time))
        results.append((name, timings[0], timings[1]))
    return results


def matmul_sweep(
    sizes: list[int], repeat: int, dtype: type = np.float64
) -> list[tuple[int, float, float, float | None]]:
    return [(n, *matmul_gflops((n, n), (n, n), repeat, dtype)) for n in sizes]


def plot_sweep(sweeps: dict[str, list[tuple[int, float, float, float | None]]],
               path: Path) -> bool:  # fmt: skip
    """GFLOP/s against n, one line style per library and one marker fill per dtype."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(6, 4))
    for dtype, sweep in sweeps.items():
        style = "-" if dtype == "float64" else "--"
        sizes = [s for s, *_ in sweep]
        ax.plot(sizes, [r[1] for r in sweep], "o" + style, label=f"minitorch FastOps, {dtype}")
        ax.plot(sizes, [r[2] for r in sweep], "s" + style, label=f"NumPy (OpenBLAS), {dtype}")
        if all(r[3] is not None for r in sweep):
            ax.plot(sizes, [r[3] for r in sweep], "^" + style, label=f"PyTorch CPU, {dtype}")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("n (n x n @ n x n)")
    ax.set_ylabel("GFLOP/s")
    ax.set_title("Matrix multiply throughput")
    ax.legend(fontsize="small")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


# Per-op overhead -----------------------------------------------------------------


def overhead(repeat: int) -> list[tuple[str, float]]:
    """Microseconds per call for one small add, layer by layer (training's usual size)."""
    from . import fast_kernels, operators
    from .kernel_cache import load_kernels

    rng = np.random.default_rng(3)
    x, y = rng.random((10, 100)), rng.random((10, 100))
    a = minitorch.tensor_from_numpy(x, backend=FAST, requires_grad=True)
    b = minitorch.tensor_from_numpy(y, backend=FAST, requires_grad=True)
    out = np.empty(1000)
    kernel = load_kernels("zip", fast_kernels.ZIP_SOURCE, operators.add).zip_flat_ser
    xf, yf = x.reshape(-1), y.reshape(-1)
    rows = [
        ("NumPy `x + y`", best_time(lambda: x + y, repeat)),
        ("compiled kernel alone (preallocated output)",
         best_time(lambda: kernel(out, xf, yf), repeat)),
        ("backend op `add_zip(a, b)`: output allocation, layout check, dispatch",
         best_time(lambda: FAST.add_zip(a, b), repeat)),
        ("tensor op `a + b` with autodiff history", best_time(lambda: a + b, repeat)),
    ]  # fmt: skip
    torch = _torch()
    if torch:
        ta = torch.from_numpy(x).requires_grad_()
        tb = torch.from_numpy(y).requires_grad_()
        rows.append(("PyTorch `a + b` with autograd", best_time(lambda: ta + tb, repeat)))
    return rows


# GPU ---------------------------------------------------------------------------------


def cuda_cases(
    elementwise_sizes: list[int], matmul_sizes: list[int], repeat: int, train: bool = True
) -> list[tuple[str, float, float | None, str]]:
    """CudaOps next to PyTorch CUDA (float64): ``(case, ours, theirs, unit)`` rows.

    Device work is asynchronous, so every timed call ends with a synchronise.
    """
    from numba import cuda

    backend = minitorch.TensorBackend(minitorch.CudaOps)
    torch = _torch()
    gpu_torch = torch is not None and torch.cuda.is_available()
    rng = np.random.default_rng(4)
    rows: list[tuple[str, float, float | None, str]] = []

    def timed(fn: Callable[[], Any], sync: Callable[[], Any]) -> float:
        def call() -> None:
            fn()
            sync()

        return best_time(call, repeat)

    def device(x: np.ndarray) -> minitorch.Tensor:
        t = minitorch.tensor_from_numpy(x, backend=backend)
        t._tensor.to_cuda_()
        return t

    for n in elementwise_sizes:
        x, y = rng.random(n), rng.random(n)
        a, b = device(x), device(y)
        ours = timed(lambda a=a, b=b: backend.add_zip(a, b), cuda.synchronize)
        theirs = None
        if gpu_torch:
            tx, ty = torch.from_numpy(x).cuda(), torch.from_numpy(y).cuda()
            theirs = timed(lambda tx=tx, ty=ty: tx + ty, torch.cuda.synchronize)
        rows.append((f"zip add, {n:.0e} elements", ours, theirs, "ms"))
        m = x.reshape(-1, 1000) if n % 1000 == 0 else x.reshape(1, -1)
        t = device(m)
        ours = timed(lambda t=t: backend.add_reduce(t, 1), cuda.synchronize)
        theirs = None
        if gpu_torch:
            tm = torch.from_numpy(m).cuda()
            theirs = timed(lambda tm=tm: tm.sum(1, keepdim=True), torch.cuda.synchronize)
        rows.append((f"sum along dim 1, {m.shape}", ours, theirs, "ms"))
    for n in matmul_sizes:
        x, y = rng.random((n, n)), rng.random((n, n))
        a, b = device(x), device(y)
        flops = 2.0 * n**3 / 1e9
        ours = flops / timed(lambda a=a, b=b: backend.matrix_multiply(a, b), cuda.synchronize)
        theirs = None
        if gpu_torch:
            tx, ty = torch.from_numpy(x).cuda(), torch.from_numpy(y).cuda()
            theirs = flops / timed(lambda tx=tx, ty=ty: tx @ ty, torch.cuda.synchronize)
        rows.append((f"matmul {n}x{n}", ours, theirs, "GFLOP/s"))
    if train:
        for name, be in (("CudaOps", backend), ("FastOps", FAST)):
            epoch = _minitorch_epoch_time(50, 100, 10, 5, backend=be)
            rows.append((f"training epoch on {name} (hidden 100, 50 points)", epoch, None, "ms"))
    return rows


def _cuda_lines(rows: list[tuple[str, float, float | None, str]]) -> list[str]:
    lines = [
        "",
        "## CudaOps on the GPU (float64; PyTorch CUDA alongside)",
        "",
        "| case | minitorch | PyTorch | unit |",
        "|---|---|---|---|",
    ]
    for case, ours, theirs, unit in rows:
        lines.append(f"| {case} | {_fmt(ours, unit)} | {_fmt(theirs, unit)} | {unit} |")
    return lines


# Start-up ---------------------------------------------------------------------------

# The child process of a start-up measurement: the course MLP's first epoch, then the
# wall-clock time at its end (the parent noted the time just before starting it).
_STARTUP = (
    "import time\n"
    "from minitorch.bench import first_course_epoch\n"
    "first_course_epoch()\n"
    "print(time.time())\n"
)

# Seconds from interpreter start to the end of the first course-MLP epoch: targets
# with an empty kernel cache (cold, every kernel compiled) and a filled one (warm).
COLD_START_TARGET = 2.0
WARM_START_TARGET = 1.2


def first_course_epoch() -> None:
    """One epoch of the course MLP (hidden 100, 50 points, batch 10) on FastOps."""
    data, step = _minitorch_training(50, 100, 10, FAST)
    _epoch(data, 10, step)


def startup_times(repeats: int = 3) -> tuple[list[float], list[float]]:
    """Seconds from starting ``python`` to the end of the first course-MLP epoch.

    Each repeat starts one process with an empty kernel cache (cold) and then one
    with the cache it filled (warm). Returns the cold and the warm times.
    """
    _write_bytecode()
    cold, warm = [], []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as tmp:
            env = _start_env(tmp)
            for times in (cold, warm):
                start = time.time()
                result = subprocess.run([sys.executable, "-c", _STARTUP], env=env, check=True,
                                        capture_output=True, text=True)  # fmt: skip
                times.append(float(result.stdout.split()[-1]) - start)
    return cold, warm


def startup_rows(cold: list[float], warm: list[float]) -> list[Row]:
    """Target rows for the cold and warm start (medians of the repeats, in seconds)."""
    rows = []
    for name, times, target in (
        ("cold start to the end of the first course-MLP epoch (empty kernel cache)", cold,
         COLD_START_TARGET),
        ("warm start to the end of the first course-MLP epoch (kernels on disk)", warm,
         WARM_START_TARGET),
    ):  # fmt: skip
        median = statistics.median(times)
        runs = f"{len(times)} run{'s' if len(times) > 1 else ''}"
        spread = f"{min(times):.2f}-{max(times):.2f} s over {runs}"
        rows.append(Row(f"{name}; {spread}", median, None, None, f"<= {target} s",
                        median / target, median <= target, "s"))  # fmt: skip
    return rows


# Data-parallel scaling: the digits CNN on 1 and 2 ranks (MPI) -------------------------

DIGITS_EXAMPLE = Path(__file__).parents[1] / "examples" / "digits_cnn.py"
# (ranks, Numba threads per rank): the same two cores used by threads, then by ranks.
SCALING_LAYOUTS = ((1, 2), (1, 1), (2, 1))


def _digits_unavailable() -> str | None:
    """Why the digits example cannot run here, or None."""
    if not DIGITS_EXAMPLE.exists():
        return f"{DIGITS_EXAMPLE} is not there (an installed package has no examples)"
    if importlib.util.find_spec("sklearn") is None:
        return "the digits example needs scikit-learn (pip install 'minitorch[examples]')"
    return None


def _scaling_unavailable() -> str | None:
    """Why the scaling runs cannot happen here, or None."""
    distributed = minitorch.distributed
    unavailable = _digits_unavailable()
    if unavailable is None and (
        importlib.util.find_spec("mpi4py") is None or distributed.find_mpiexec() is None
    ):
        unavailable = f"mpi4py or mpiexec is missing ({distributed.INSTALL_HINT})"
    return unavailable


def _digits_run(
    epochs: int, *options: str, ranks: int = 1, threads: int | None = None
) -> dict[str, list[float]]:
    """Seconds per epoch after the first (which loads or compiles the kernels) of one run
    of the digits example, per library it trained (``minitorch``, ``pytorch``)."""
    command = [sys.executable, str(DIGITS_EXAMPLE), "--epochs", str(epochs), *options]
    if ranks > 1:
        mpiexec = str(minitorch.distributed.find_mpiexec())
        command = [mpiexec, "-n", str(ranks), *command, "--distributed"]
    package_root = str(Path(minitorch.__file__).parents[1])
    env = dict(os.environ, PYTHONPATH=package_root)
    if threads is not None:
        env["NUMBA_NUM_THREADS"] = str(threads)
    result = subprocess.run(command, env=env, capture_output=True, text=True, check=True,
                            timeout=600, stdin=subprocess.DEVNULL)  # fmt: skip
    times: dict[str, list[float]] = {"minitorch": [], "pytorch": []}
    for line in result.stdout.splitlines():
        words = line.split()
        if len(words) > 2 and words[0] in times and words[1] == "epoch":
            times[words[0]].append(float(words[-2]))
    return {library: t[1:] for library, t in times.items()}


def digits_scaling(repeats: int, epochs: int) -> list[tuple[int, int, float, float, float]]:
    """``(ranks, threads, median, fastest, slowest)`` seconds per digits epoch per layout.

    Each run's figure is the median of its epochs after the first (which loads or compiles
    the kernels); the layouts take turns, ``repeats`` runs each, so a slow spell of a shared
    machine spreads over all of them.
    """
    runs: dict[tuple[int, int], list[float]] = {layout: [] for layout in SCALING_LAYOUTS}
    for _ in range(repeats):
        for ranks, threads in SCALING_LAYOUTS:
            times = _digits_run(epochs, ranks=ranks, threads=threads)["minitorch"]
            runs[ranks, threads].append(statistics.median(times))
    return [
        (ranks, threads, statistics.median(t), min(t), max(t))
        for (ranks, threads), t in runs.items()
    ]


def _scaling_lines(rows: list[tuple[int, int, float, float, float]], repeats: int) -> list[str]:
    serial = next(median for ranks, threads, median, *_ in rows if ranks == threads == 1)
    lines = [
        "",
        "## Data-parallel training: the digits CNN on 1 and 2 ranks",
        "",
        "`examples/digits_cnn.py` (1,347 training images, global batch 32, Adam) in one",
        "process, and under `mpiexec -n 2 ... --distributed` (16 images per rank and step, one",
        "gradient all-reduce per step). Seconds per epoch: the median over the runs of each",
        f"run's median epoch after the first ({repeats} runs per layout, taking turns), and the",
        "fastest and slowest run. Speed-up is against 1 rank x 1 thread; efficiency is",
        "speed-up / cores used.",
        "",
        "| ranks x threads | s/epoch | runs ranged | speed-up | efficiency |",
        "|---|---|---|---|---|",
    ]
    for ranks, threads, median, fastest, slowest in rows:
        speedup = serial / median
        lines.append(
            f"| {ranks} x {threads} | {median:.3f} | {fastest:.3f}-{slowest:.3f} | "
            f"{speedup:.2f}x | {100 * speedup / (ranks * threads):.0f}% |"
        )
    return lines


# Report -------------------------------------------------------------------------------


def _target_lines(rows: list[Row]) -> list[str]:
    lines = [
        "| case | minitorch | NumPy | PyTorch | ratio | target | met |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r.case} | {_fmt(r.ours, r.unit)} | {_fmt(r.numpy, r.unit)} | "
            f"{_fmt(r.torch, r.unit)} | {r.ratio:.2f} | {r.target} | {'yes' if r.met else 'NO'} |"
        )
    return lines


def _machine() -> str:
    torch = _torch()
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    parts = [
        f"{cpu}, {os.cpu_count()} cores",
        f"Python {platform.python_version()}",
        f"NumPy {np.__version__}",
        f"Numba {numba.__version__} ({numba.config.NUMBA_NUM_THREADS} threads)",
        f"PyTorch {torch.__version__} ({torch.get_num_threads()} threads)"
        if torch
        else "no PyTorch",
    ]
    return "; ".join(parts)


def _steady_state() -> None:
    """Time the kernels themselves, as a long run meets them: no NumPy stand-ins for their
    first launches (``fast_ops.STAND_IN_CALLS``), here and in the digits runs. The start-up
    rows start their processes with the default (``_start_env``)."""
    os.environ[fast_ops.STAND_IN_ENV] = "0"
    fast_ops.STAND_IN_CALLS = 0


def _start_env(cache: str) -> dict[str, str]:
    """The environment of a fresh process timed from its start: an empty kernel cache at
    ``cache`` (or the one a previous start filled), the default stand-ins, and Python's
    bytecode cache on, as Python has it unless told otherwise (``_write_bytecode``)."""
    env = dict(os.environ, MINITORCH_CACHE_DIR=cache, NUMBA_CACHE_DIR=cache)
    env.pop(fast_ops.STAND_IN_ENV, None)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


@functools.cache
def _write_bytecode() -> None:
    """Import what a timed start imports, untimed and once per process (in a throwaway
    kernel cache), so that its modules' bytecode is cached (``__pycache__``): a start
    times the kernels' compiling, not Python's compiling of minitorch's sources, which
    an install (pip byte-compiles) or any run before it has done. (A machine with
    ``PYTHONDONTWRITEBYTECODE`` set, as this project's sandbox has, pays about 0.1-0.15 s
    more at every start.)"""
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-c", "import minitorch.bench"], env=_start_env(tmp),
                       check=True, capture_output=True)  # fmt: skip


def main(args: argparse.Namespace) -> int:
    repeat = 3 if args.quick else 7
    _steady_state()
    if args.cuda and not numba.cuda.is_available():
        raise SystemExit("bench --cuda needs an NVIDIA GPU: numba.cuda.is_available() is False.")
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    say = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731

    say("[1/6] elementwise and reduction cases (float64, float32)")
    rows = op_cases(repeat)
    rows32 = op_cases(repeat, np.float32)
    say("[2/6] matrix multiply cases (float64, float32)")
    rows += matmul_cases(repeat)
    rows32 += matmul_cases(repeat, np.float32)
    say("[+] conv2d forward and backward at the digits CNN's sizes (float64, float32)")
    rows += conv_cases(repeat)
    rows32 += conv_cases(repeat, np.float32)
    say("[3/6] training epochs (minitorch eager, compiled, float32; PyTorch float64, float32)")
    training = training_cases(args.quick)
    say("[+] digits CNN epochs (examples/digits_cnn.py: eager, compiled, PyTorch)")
    digits = digits_training_row(args.quick)
    training += [digits] if digits else []
    say("[4/6] SimpleOps -> FastOps ladder, per-op overhead")
    steps = ladder(repeat)
    costs = overhead(repeat)
    say("[5/6] matmul sweep 64..1024 (float64, float32)")
    sizes = [64, 128, 256, 512] if args.quick else [64, 128, 256, 512, 1024]
    sweeps = {_dtype_name(d): matmul_sweep(sizes, repeat, d) for d in (np.float64, np.float32)}
    plot_path = output.with_name("matmul_gflops.png")
    plotted = plot_sweep(sweeps, plot_path)
    first_call = None
    if not args.no_startup:
        say("[6/6] cold and warm start, the compiled step's first call")
        rows += startup_rows(*startup_times(1 if args.quick else 3))
        first_call = first_call_times()

    lines = [
        "# Benchmarks",
        "",
        f"Measured with `python -m minitorch bench{' --quick' if args.quick else ''}` "
        f"(`make bench`) on {time.strftime('%Y-%m-%d')}.",
        "",
        f"Machine: {_machine()}.",
        "",
        "Each figure is the best of several repeats in one process, each side making a fresh",
        "output. Times in milliseconds; matmul rows in GFLOP/s (higher is better). Ratio is",
        "minitorch / NumPy for times, minitorch / NumPy GFLOP/s for matmul, minitorch /",
        "PyTorch for the conv2d rows.",
        "",
        "## FastOps targets (float64)",
        "",
        *_target_lines(rows),
        "",
        "## FastOps targets (float32: minitorch, NumPy and PyTorch all in float32)",
        "",
        *_target_lines(rows32),
    ]
    lines += _training_lines(training, first_call)
    lines += [
        "",
        "## Speed ladder: SimpleOps -> FastOps (100x100 operands, ms per call)",
        "",
        "| primitive | SimpleOps | FastOps | speed-up |",
        "|---|---|---|---|",
    ]
    for prim, slow, fast in steps:
        lines.append(f"| {prim} | {slow * 1e3:.2f} | {fast * 1e3:.4f} | {slow / fast:,.0f}x |")
    lines += [
        "",
        "## Where the time of a small op goes ((10, 100) + (10, 100), microseconds per call)",
        "",
        "Training on small batches is dominated by per-op Python work, so each layer of one op",
        "is timed on its own:",
        "",
        "| layer | µs |",
        "|---|---|",
    ]
    lines += [f"| {name} | {t * 1e6:.2f} |" for name, t in costs]
    for dtype, sweep in sweeps.items():
        lines += [
            "",
            f"## Matrix multiply, n x n @ n x n, {dtype} (GFLOP/s)",
            "",
            "| n | minitorch | NumPy | PyTorch | minitorch / NumPy |",
            "|---|---|---|---|---|",
        ]
        for n, ours, ref, theirs in sweep:
            t = f"{theirs:.1f}" if theirs is not None else "—"
            lines.append(f"| {n} | {ours:.1f} | {ref:.1f} | {t} | {ours / ref:.2f} |")
    if plotted:
        lines += ["", f"![matmul GFLOP/s]({plot_path.name})"]
    if args.cuda:
        say("[+] CudaOps on the GPU")
        lines += _cuda_lines(
            cuda_cases([10**6, 10**7, 10**8], [256, 512, 1024, 2048, 4096], repeat)
        )
    if not args.no_scaling:
        say("[+] digits CNN on 1 rank x 2 threads, 1 x 1 and 2 ranks x 1 (MPI)")
        unavailable = _scaling_unavailable()
        if unavailable:
            say(f"    skipped: {unavailable}")
            lines += ["", f"Data-parallel scaling not measured: {unavailable}."]
        else:
            repeats = 2 if args.quick else 5
            rows = digits_scaling(repeats, epochs=3 if args.quick else 5)
            lines += _scaling_lines(rows, repeats)
    output.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    say(f"wrote {output}")
    return 0
