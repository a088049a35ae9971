"""``python -m minitorch train``: the course's classifier on a toy 2-D dataset.

The network is Linear(2, H) - ReLU - Linear(H, H) - ReLU - Linear(H, 1) -
Sigmoid, trained with SGD on the course's binary cross-entropy. The command
reports loss, accuracy and time per epoch as it goes; the first epoch is
reported on its own because on the compiled backends it includes JIT
compilation.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import itertools
import math
import os
import random
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TextIO

import numba
import numpy as np
from numba import cuda

from . import distributed
from .compiler import compile
from .cuda_ops import CudaOps
from .datasets import Graph, datasets
from .fast_ops import FastOps
from .layers import Linear, ReLU, Sequential, Sigmoid
from .module import Module
from .optim import SGD
from .tensor import Tensor
from .tensor_data import as_dtype
from .tensor_functions import tensor_from_numpy
from .tensor_ops import SimpleBackend, TensorBackend

BACKENDS = ("simple", "fast", "cuda")
DTYPES = ("float64", "float32")
DATASETS = tuple(name.lower() for name in datasets)


def get_backend(name: str) -> TensorBackend:
    """The backend called ``name``; compiled backends are built once and reused."""
    if name not in BACKENDS:
        raise ValueError(f"Unknown backend {name!r}; choose one of {', '.join(BACKENDS)}.")
    if name == "cuda" and not cuda.is_available():
        raise RuntimeError(
            "The cuda backend needs an NVIDIA GPU with a working CUDA driver, and "
            "numba.cuda.is_available() is False here; use --backend fast instead."
        )
    return _build_backend(name)


@functools.cache
def _build_backend(name: str) -> TensorBackend:
    ops = {"simple": None, "fast": FastOps, "cuda": CudaOps}[name]
    return SimpleBackend if ops is None else TensorBackend(ops)


def make_network(hidden: int, backend: TensorBackend, dtype: str = "float64") -> Sequential:
    """The course's two-hidden-layer classifier, outputting P(label = 1)."""
    return Sequential(
        Linear(2, hidden, backend, dtype=dtype),
        ReLU(),
        Linear(hidden, hidden, backend, dtype=dtype),
        ReLU(),
        Linear(hidden, 1, backend, dtype=dtype),
        Sigmoid(),
    )


def _dtype_of(model: Module) -> np.dtype:
    """The dtype of the model's parameters (its inputs are made to match)."""
    return model.parameters()[0].value.dtype


@dataclass
class EpochStats:
    """One pass over the data: its number, mean loss per point and training time."""

    epoch: int
    loss: float
    seconds: float


def run_epochs(
    model: Module,
    data: Graph,
    backend: TensorBackend,
    lr: float,
    batch: int,
    sampler: distributed.DistributedBatchSampler | None = None,
    compiled: bool = False,
) -> Iterator[EpochStats]:
    """Train ``model`` one epoch per iteration, without end; the caller decides when to stop.

    Each epoch shuffles the points (with Python's ``random``), then takes an
    SGD step per batch on the course's loss ``-log(p(y))``, averaged over the
    batch. Only the training pass is timed, not what the caller does between
    epochs.

    With a ``sampler`` (after ``distributed.init()``), this rank trains on its
    share of each batch, the gradients are summed over the ranks before each
    step and the reported loss is that of all the points.

    ``compiled`` runs the step through ``minitorch.compile`` (the same numbers,
    bit for bit): the whole step, or with a sampler the forward and backward
    pass (the gradient exchange and the SGD step stay eager).
    """
    dtype = _dtype_of(model)
    X = model_inputs(data.X).astype(dtype)
    y = np.array(data.y, dtype=dtype)
    n = len(y)
    order = list(range(n))
    optim = SGD(model.parameters(), lr)
    shares = sampler or distributed.DistributedBatchSampler(batch, rank=0, world_size=1)

    def forward_backward(xb: Tensor, yb: Tensor, count: int) -> Tensor:
        """Gradients of the batch's mean loss; returns this share's summed loss."""
        out = model(xb).view(yb.shape[0])
        prob = out * yb + (out - 1.0) * (yb - 1.0)
        loss = -prob.log()
        (loss / count).sum().view(1).backward()
        return loss.sum().view(1)

    def step(xb: Tensor, yb: Tensor, count: int) -> Tensor:
        optim.zero_grad()
        loss = forward_backward(xb, yb, count)
        optim.step()
        return loss

    if compiled:
        forward_backward, step = compile(forward_backward), compile(step)
    epoch = 0
    while True:
        epoch += 1
        start = time.perf_counter()
        model.train()
        random.shuffle(order)
        total = 0.0
        for share in shares.shares(order):
            xb = yb = None
            if share.rows:  # a rank's share of a short last batch can be empty
                xb = tensor_from_numpy(X[share.rows], backend=backend)
                yb = tensor_from_numpy(y[share.rows], backend=backend)
            if not sampler:
                total += step(xb, yb, share.count)[0]
                continue
            optim.zero_grad()
            if xb is not None:
                total += forward_backward(xb, yb, share.count)[0]
            distributed.sum_gradients(model)
            optim.step()
        if sampler:
            total = float(distributed.all_reduce(total))
        yield EpochStats(epoch, total / n, time.perf_counter() - start)


def model_inputs(points: Sequence[tuple[float, float]] | np.ndarray) -> np.ndarray:
    """Points of the unit square moved to [-1, 1): what the network sees.

    Zero-centred inputs make plain SGD converge much more reliably at the
    demo's lr 0.5 (split, 100 epochs, 20 seeds: 49.4/50 correct on average,
    against 46.2 on the raw [0, 1) coordinates).
    """
    return 2.0 * np.asarray(points, dtype=np.float64) - 1.0


def predict(
    model: Module, points: Sequence[tuple[float, float]] | np.ndarray, backend: TensorBackend
) -> np.ndarray:
    """The model's P(label = 1) for each point of the unit square, in eval mode."""
    model.eval()
    inputs = model_inputs(points).astype(_dtype_of(model))
    out = model(tensor_from_numpy(inputs, backend=backend))
    return out.detach().to_numpy().reshape(-1)


def count_correct(model: Module, data: Graph, backend: TensorBackend) -> int:
    """How many points the model labels correctly, thresholding at 0.5."""
    probs = predict(model, data.X, backend)
    return int(((probs > 0.5) == np.array(data.y, dtype=bool)).sum())


class ProgressBar:
    """A one-line text progress bar, redrawn in place with a carriage return.

    It draws only on a terminal by default, so logs and captured output stay
    free of half-drawn lines.
    """

    def __init__(
        self, total: int, stream: TextIO = sys.stderr, enabled: bool | None = None
    ) -> None:
        self.total = total
        self.stream = stream
        self.enabled = stream.isatty() if enabled is None else enabled
        self.width = 0

    def show(self, done: int, note: str = "") -> None:
        """Draw the bar at ``done`` of ``total`` with a short note after it."""
        if not self.enabled:
            return
        filled = 30 * done // self.total
        line = f"[{'#' * filled}{'.' * (30 - filled)}] {done}/{self.total} {note}"
        self.stream.write("\r" + line.ljust(self.width))
        self.stream.flush()
        self.width = len(line)

    def clear(self) -> None:
        """Erase the bar, e.g. before printing a log line."""
        if self.enabled and self.width:
            self.stream.write("\r" + " " * self.width + "\r")
            self.stream.flush()
            self.width = 0


def plot(
    model: Module,
    data: Graph,
    backend: TensorBackend,
    losses: list[float],
    path: str,
    title: str,
) -> None:
    """Save a PNG: the decision boundary over the data points, and the loss curve."""
    from matplotlib.figure import Figure

    steps = 60
    xs = np.linspace(0.0, 1.0, steps)
    grid = np.array([(a, b) for b in xs for a in xs])
    probs = predict(model, grid, backend).reshape(steps, steps)
    X = np.array(data.X)
    y = np.array(data.y)

    fig = Figure(figsize=(11, 4.8), layout="constrained")
    left, right = fig.subplots(1, 2)
    filled = left.contourf(xs, xs, probs, levels=np.linspace(0, 1, 11), cmap="RdBu_r", alpha=0.5)
    left.contour(xs, xs, probs, levels=[0.5], colors="black", linewidths=1.5)
    left.scatter(X[:, 0], X[:, 1], c=y, cmap="RdBu_r", vmin=0, vmax=1, edgecolors="black")
    fig.colorbar(filled, ax=left, label="P(label = 1)")
    left.set(xlim=(0, 1), ylim=(0, 1), xlabel="x1", ylabel="x2", title=title, aspect="equal")
    right.plot(range(1, len(losses) + 1), losses)
    right.set(xlabel="epoch", ylabel="mean loss per point", yscale="log", title="Training loss")
    right.grid(True, alpha=0.3)
    directory = os.path.dirname(path)
    if directory:
        os.makedirs(directory, exist_ok=True)
    fig.savefig(path, dpi=100)


def _for_plotting(
    model: Module, hidden: int, backend: TensorBackend
) -> tuple[Module, TensorBackend]:
    """The model and backend to draw the decision boundary with.

    The grid costs ~10^7 multiply-adds at the demo's width, minutes in pure
    Python, so a SimpleOps model is copied to FastOps for it.
    """
    if backend is not SimpleBackend:
        return model, backend
    fast = get_backend("fast")
    copy = make_network(hidden, fast, _dtype_of(model).name)
    copy.load_state_dict(model.state_dict())
    return copy, fast


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``train`` command's options."""
    parser.add_argument("--dataset", choices=DATASETS, default="split")
    parser.add_argument("--backend", choices=BACKENDS, default="fast")
    parser.add_argument(
        "--dtype", choices=DTYPES, default="float64", help="parameter and data dtype"
    )
    parser.add_argument(
        "--hidden", type=int_between(1, MAX_HIDDEN), default=10,
        help=f"hidden layer width (1 to {MAX_HIDDEN})",
    )  # fmt: skip
    parser.add_argument(
        "--epochs", type=int_between(1, MAX_COUNT), default=100,
        help=f"passes over the data (1 to {MAX_COUNT})",
    )  # fmt: skip
    parser.add_argument(
        "--lr", type=positive_float, default=0.5, help="SGD learning rate (finite, > 0)"
    )
    parser.add_argument(
        "--batch", type=int_between(1, MAX_COUNT), default=10,
        help=f"points per SGD step (1 to {MAX_COUNT})",
    )  # fmt: skip
    parser.add_argument(
        "--points", type=int_between(1, MAX_COUNT), default=50,
        help=f"dataset size (1 to {MAX_COUNT})",
    )  # fmt: skip
    parser.add_argument("--seed", type=int, default=0, help="seed for data, weights, shuffling")
    parser.add_argument(
        "--plot",
        metavar="PNG",
        help="save the decision boundary and loss curve to this .png file (.png is added "
        "when the name has no suffix; a directory, or a path ending in /, gets "
        "DATASET.png inside it; missing directories are created); checked before training",
    )
    parser.add_argument(
        "--distributed",
        action="store_true",
        help="data-parallel over the ranks of mpiexec -n N (--batch is the global batch)",
    )
    parser.add_argument(
        "--compile",
        action="store_true",
        help="record the training step once and replay its kernels (minitorch.compile); "
        "the same numbers, faster on the fast backend",
    )


# Limits that keep every option to what fits in memory (hidden^2 weights) and time.
MAX_HIDDEN = 4096
MAX_COUNT = 1_000_000


def int_between(low: int, high: int) -> Callable[[str], int]:
    """An argparse type: a whole number from ``low`` to ``high``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be from {low} to {high}, got {value}")
        return value

    return parse


def positive_float(text: str) -> float:
    """An argparse type: a finite number greater than zero."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a finite number greater than 0, got {text}")
    return value


def main(args: argparse.Namespace) -> int:
    """Run the ``train`` command; progress goes to stderr, the log to stdout."""
    if args.plot and importlib.util.find_spec("matplotlib") is None:
        raise SystemExit(
            "error: --plot needs matplotlib, which is not installed "
            "(pip install 'minitorch[plot]' or pip install matplotlib)."
        )
    try:
        backend = get_backend(args.backend)
    except RuntimeError as e:
        raise SystemExit(f"error: {e}") from None
    if args.distributed:
        sampler = _start_distributed(args.batch)
        with distributed.abort_on_error(), distributed.output_on_root_only():
            return _train(args, backend, sampler)
    return _train(args, backend, None)


def _start_distributed(batch: int) -> distributed.DistributedBatchSampler:
    """Join the MPI job and check that the global batch divides among its ranks."""
    try:
        distributed.init()
    except (ImportError, RuntimeError) as e:
        raise SystemExit(f"error: --distributed: {e}") from None
    try:
        return distributed.DistributedBatchSampler(batch)
    except ValueError as e:  # every rank fails alike; rank 0 says why
        raise SystemExit(f"error: --batch: {e}" if distributed.rank() == 0 else 1) from None


def _train(
    args: argparse.Namespace,
    backend: TensorBackend,
    sampler: distributed.DistributedBatchSampler | None,
) -> int:
    """Train and report; with a sampler, as one rank of a data-parallel job."""
    random.seed(args.seed)
    data = datasets[args.dataset.capitalize()](args.points)
    model = make_network(args.hidden, backend, as_dtype(args.dtype).name)
    layout = ""
    if sampler:
        distributed.broadcast_parameters(model)
        layout = f", ranks x threads {sampler.world_size} x {numba.get_num_threads()}"
    n = len(data.y)
    print(
        f"Training on {args.dataset} ({n} points) with the {args.backend} backend in "
        f"{args.dtype}: "
        f"hidden {args.hidden}, SGD lr {args.lr}, batch {args.batch}, "
        f"{args.epochs} epochs, seed {args.seed}{layout}"
        + (", compiled step" if args.compile else "")
    )

    compiled = " (includes JIT compile)" if args.backend != "simple" else ""
    bar = ProgressBar(args.epochs)
    losses: list[float] = []
    times: list[float] = []
    correct = 0
    width = len(str(args.epochs))
    try:
        epochs = run_epochs(model, data, backend, args.lr, args.batch, sampler, args.compile)
        for stats in itertools.islice(epochs, args.epochs):
            losses.append(stats.loss)
            times.append(stats.seconds)
            e = stats.epoch
            bar.show(e, f"loss {stats.loss:.4f}  {stats.seconds:.3f} s/epoch")
            if e == 1 or e % 10 == 0 or e == args.epochs:
                correct = count_correct(model, data, backend)
                if e == 1:
                    timing = f"{stats.seconds:.3f} s first epoch{compiled}"
                else:
                    recent = times[max(1, e - 10) :]  # the last ten, never the first epoch
                    timing = f"{sum(recent) / len(recent):.4f} s/epoch"
                bar.clear()
                print(
                    f"epoch {e:>{width}}/{args.epochs}  loss {stats.loss:.4f}  "
                    f"correct {correct}/{n} ({100 * correct / n:5.1f}%)  {timing}",
                    flush=True,
                )
    finally:
        bar.clear()  # also on Ctrl-C, so the message starts on a clean line

    rest = times[1:]
    later = f"mean {sum(rest) / len(rest):.4f} s/epoch over the other {len(rest)}" if rest else ""
    print(
        f"Done: accuracy {correct}/{n} ({100 * correct / n:.1f}%), final loss {losses[-1]:.4f}; "
        f"first epoch {times[0]:.3f} s{compiled}" + (f", {later}." if later else ".")
    )
    if sampler:
        digest = distributed.verify_parameters(model)
        print(f"Parameters bit-identical on all {sampler.world_size} ranks (SHA-256 {digest}).")
    if args.plot and (not sampler or sampler.rank == 0):
        title = f"{args.dataset}: {correct}/{n} correct after {args.epochs} epochs"
        plot_model, plot_backend = _for_plotting(model, args.hidden, backend)
        try:
            plot(plot_model, data, plot_backend, losses, args.plot, title)
        except OSError as e:  # checked before training, but disks fill and permissions change
            print(f"error: could not save the plot to {args.plot}: {e}", file=sys.stderr)
            return 1
        print(f"Plot saved to {args.plot}")
    return 0
