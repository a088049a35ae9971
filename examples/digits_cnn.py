"""A small convolutional network on scikit-learn's 8x8 handwritten digits.

    python examples/digits_cnn.py            # minitorch, FastOps backend
    python examples/digits_cnn.py --dtype float32   # the same in float32
    python examples/digits_cnn.py --torch    # then the same network in PyTorch (CPU)
    mpiexec -n 2 python examples/digits_cnn.py --distributed   # data-parallel on 2 ranks
    python examples/digits_cnn.py --compile  # the training step recorded once, then replayed

The data ship with scikit-learn (``load_digits``: 1,797 images, no download).
A quarter is held out, stratified by class. The network is

    conv 3x3 (1 -> 16) - ReLU - maxpool 2x2 - conv 3x3 (16 -> 32) - ReLU - maxpool 2x2
    - flatten - linear (128 -> 10)

trained with Adam on the softmax cross-entropy, the learning rate decaying
linearly over the epochs. minitorch's convolutions keep
the image size (anchored top-left, zeros past the bottom/right edges), so the
PyTorch twin pads the bottom and right by ``k - 1`` before each convolution. It
starts from the same initial weights and sees the batches in the same order,
so the two runs differ only in the library doing the arithmetic.
"""

from __future__ import annotations

import argparse
import random
import sys
import time

import numpy as np

import minitorch
from minitorch import Tensor, distributed, tensor_from_numpy
from minitorch.__main__ import exit_on_interrupt
from minitorch.layers import Conv2d, Linear
from minitorch.optim import Adam
from minitorch.train import int_between, positive_float

BACKEND = minitorch.TensorBackend(minitorch.FastOps)


class DigitsCNN(minitorch.Module):
    """conv - relu - pool - conv - relu - pool - linear: (B, 1, 8, 8) -> (B, 10) logits."""

    def __init__(self, dtype: str = "float64") -> None:
        super().__init__()
        self.conv1 = Conv2d(1, 16, 3, backend=BACKEND, dtype=dtype)
        self.conv2 = Conv2d(16, 32, 3, backend=BACKEND, dtype=dtype)
        self.fc = Linear(32 * 2 * 2, 10, backend=BACKEND, dtype=dtype)

    def forward(self, x: Tensor) -> Tensor:
        h = minitorch.maxpool2d(self.conv1(x).relu(), (2, 2))
        h = minitorch.maxpool2d(self.conv2(h).relu(), (2, 2))
        return self.fc(h.view(x.shape[0], 32 * 2 * 2))


def load_data(seed: int, subset: int | None) -> tuple[np.ndarray, ...]:
    """Images scaled to [0, 1] as (N, 1, 8, 8), integer labels; a stratified 75/25 split."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = (digits.images / 16.0).reshape(-1, 1, 8, 8)
    labels = digits.target
    if subset is not None:
        images, labels = images[:subset], labels[:subset]
    return tuple(
        train_test_split(images, labels, test_size=0.25, stratify=labels, random_state=seed)
    )


def batch_orders(n: int, epochs: int, seed: int) -> list[list[int]]:
    """One shuffled order of the training images per epoch, shared by both libraries."""
    rng = random.Random(seed)
    orders = []
    for _ in range(epochs):
        order = list(range(n))
        rng.shuffle(order)
        orders.append(order)
    return orders


def learning_rate(epoch: int, args: argparse.Namespace) -> float:
    """Linear decay from ``--lr`` towards zero: the last epochs settle instead of jumping."""
    return args.lr * (1.0 - (epoch - 1) / args.epochs)


def train_minitorch(
    model: DigitsCNN,
    data: tuple[np.ndarray, ...],
    orders: list[list[int]],
    args: argparse.Namespace,
    sampler: distributed.DistributedBatchSampler | None = None,
) -> tuple[float, list[float]]:
    """Train ``model``, printing loss, held-out accuracy and time per epoch.

    With a ``sampler`` this rank trains on its share of each batch and the
    gradients are summed over the ranks before each step. Returns the final
    held-out accuracy and the seconds each epoch took.
    """
    x_train, x_test, y_train, y_test = data
    dtype = args.dtype
    optim = Adam(model.parameters(), lr=args.lr)
    test_images = tensor_from_numpy(x_test, backend=BACKEND, dtype=dtype)
    shares = sampler or distributed.DistributedBatchSampler(args.batch, rank=0, world_size=1)

    def forward_backward(images: Tensor, labels: Tensor, weight: float) -> Tensor:
        loss = minitorch.nn.cross_entropy(model(images), labels)
        # The mean over this share, weighted as its part of the batch mean.
        (loss * weight).backward()
        return loss

    def step(images: Tensor, labels: Tensor, weight: float) -> Tensor:
        optim.zero_grad()
        loss = forward_backward(images, labels, weight)
        optim.step()
        return loss

    if args.compile:  # with a sampler, the gradient exchange and the step stay eager
        forward_backward, step = minitorch.compile(forward_backward), minitorch.compile(step)
    accuracy = 0.0
    times = []
    for epoch, order in enumerate(orders, start=1):
        start = time.perf_counter()
        optim.lr = learning_rate(epoch, args)
        total = 0.0
        for share in shares.shares(order):
            images = labels = None
            if share.rows:  # a rank's share of a short last batch can be empty
                images = tensor_from_numpy(x_train[share.rows], backend=BACKEND, dtype=dtype)
                labels = tensor_from_numpy(y_train[share.rows], backend=BACKEND, dtype=dtype)
            if not sampler:
                total += step(images, labels, share.weight).item() * len(share.rows)
                continue
            optim.zero_grad()
            if images is not None:
                loss = forward_backward(images, labels, share.weight)
                total += loss.item() * len(share.rows)
            distributed.sum_gradients(model)
            optim.step()
        if sampler:
            total = float(distributed.all_reduce(total))
        seconds = time.perf_counter() - start
        times.append(seconds)
        model.eval()
        predicted = model(test_images).to_numpy().argmax(axis=1)
        model.train()
        accuracy = float((predicted == y_test).mean())
        report("minitorch", epoch, len(orders), total / len(order), accuracy, seconds)
    return accuracy, times


def train_torch(
    initial: dict[str, np.ndarray],
    data: tuple[np.ndarray, ...],
    orders: list[list[int]],
    args: argparse.Namespace,
) -> tuple[float, list[float]]:
    """The same network, initial weights, batches and dtype in PyTorch on the CPU.

    Returns the final held-out accuracy and the seconds each epoch took.
    """
    import torch
    import torch.nn.functional as F

    def conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        kh, kw = weight.shape[2:]
        return F.conv2d(F.pad(x, (0, kw - 1, 0, kh - 1)), weight, bias)

    def forward(x: torch.Tensor) -> torch.Tensor:
        h = F.max_pool2d(F.relu(conv(x, p["conv1.weight"], p["conv1.bias"])), 2)
        h = F.max_pool2d(F.relu(conv(h, p["conv2.weight"], p["conv2.bias"])), 2)
        return h.flatten(1) @ p["fc.weight"] + p["fc.bias"]

    # Conv biases are stored as (C, 1, 1) for broadcasting; PyTorch wants (C,).
    p = {
        name: torch.tensor(
            value.reshape(-1) if name.startswith("conv") and name.endswith("bias") else value,
            dtype=getattr(torch, args.dtype),
            requires_grad=True,
        )
        for name, value in initial.items()
    }
    optim = torch.optim.Adam(p.values(), lr=args.lr)
    x_train, x_test = (torch.tensor(a, dtype=getattr(torch, args.dtype)) for a in data[:2])
    y_train, y_test = (torch.tensor(a) for a in data[2:])
    accuracy = 0.0
    times = []
    for epoch, order in enumerate(orders, start=1):
        start = time.perf_counter()
        for group in optim.param_groups:
            group["lr"] = learning_rate(epoch, args)
        total = 0.0
        for i in range(0, len(order), args.batch):
            rows = order[i : i + args.batch]
            optim.zero_grad()
            loss = F.cross_entropy(forward(x_train[rows]), y_train[rows])
            loss.backward()
            optim.step()
            total += loss.item() * len(rows)
        seconds = time.perf_counter() - start
        times.append(seconds)
        with torch.no_grad():
            accuracy = (forward(x_test).argmax(dim=1) == y_test).double().mean().item()
        report("pytorch", epoch, len(orders), total / len(order), accuracy, seconds)
    return accuracy, times


def report(
    library: str, epoch: int, epochs: int, loss: float, accuracy: float, secs: float
) -> None:
    print(
        f"{library:9} epoch {epoch:>{len(str(epochs))}}/{epochs}  loss {loss:.4f}  "
        f"held-out accuracy {100 * accuracy:5.1f}%  {secs:.3f} s/epoch",
        flush=True,
    )


def summary(library: str, accuracy: float, times: list[float]) -> str:
    """Final accuracy and time per epoch, the first epoch (JIT compilation) apart."""
    text = f"{library}: held-out accuracy {100 * accuracy:.1f}%; first epoch {times[0]:.3f} s"
    if len(times) > 1:
        text += f", then {sum(times[1:]) / (len(times) - 1):.3f} s/epoch"
    return text


def main(argv: list[str] | None = None) -> int:
    """Train on FastOps (and with ``--torch`` in PyTorch); 0 on success."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int_between(1, 10_000), default=10)
    parser.add_argument("--batch", type=int_between(1, 10_000), default=32)
    parser.add_argument(
        "--lr", type=positive_float, default=0.01, help="Adam's initial learning rate"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dtype", choices=("float64", "float32"), default="float64")
    parser.add_argument(
        "--subset",
        type=int_between(40, 1797),
        help="use only the first N images, 40 to 1797 (quick runs)",
    )
    parser.add_argument("--torch", action="store_true", help="also train the PyTorch twin")
    parser.add_argument(
        "--compile",
        action="store_true",
        help="record the training step once and replay its kernels (minitorch.compile)",
    )
    parser.add_argument(
        "--distributed",
        action="store_true",
        help="data-parallel over the ranks of mpiexec -n N (--batch is the global batch)",
    )
    args = parser.parse_args(argv)
    if args.torch and args.distributed:
        parser.error("--torch and --distributed do not combine: the twin runs in one process")

    if args.torch:
        try:
            import torch  # noqa: F401
        except ImportError:
            print("--torch needs PyTorch: pip install torch", file=sys.stderr)
            return 1

    if args.distributed:
        try:
            distributed.init()
            sampler = distributed.DistributedBatchSampler(args.batch)
        except (ImportError, RuntimeError, ValueError) as e:
            print(f"--distributed: {e}", file=sys.stderr)
            return 1
        with distributed.abort_on_error(), distributed.output_on_root_only():
            return run(args, sampler)
    return run(args, None)


def run(args: argparse.Namespace, sampler: distributed.DistributedBatchSampler | None) -> int:
    """Load the data, build the network, train it (and its PyTorch twin) and summarise."""
    random.seed(args.seed)  # minitorch draws initial weights from Python's random
    data = load_data(args.seed, args.subset)
    orders = batch_orders(len(data[0]), args.epochs, args.seed)
    model = DigitsCNN(args.dtype)
    if sampler:
        distributed.broadcast_parameters(model)
    initial = model.state_dict()
    print(f"digits: {len(data[0])} training and {len(data[1])} held-out images")
    library = f"minitorch (FastOps, {args.dtype})"
    results = [summary(library, *train_minitorch(model, data, orders, args, sampler))]
    if args.torch:
        results.append(summary("pytorch (CPU)", *train_torch(initial, data, orders, args)))
    print("\n".join(results))
    return 0


if __name__ == "__main__":
    exit_on_interrupt()  # Ctrl-C: one line and exit code 130, not a traceback from numba
    raise SystemExit(main())
