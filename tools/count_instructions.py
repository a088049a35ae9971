"""Instructions per call of one eager op or training step, for comparing two commits on a
noisy machine (timings there move by 10-30%; an instruction count by well under 1%).

    valgrind --tool=callgrind --toggle-collect=starmap_next --callgrind-out-file=/dev/null \\
        python tools/count_instructions.py OP [CALLS]

then divide callgrind's "Collected" total by CALLS (default 2000). Only what runs inside
``itertools.starmap`` is counted (the timed calls, not start-up or warm-up), so the figure
is the same from run to run. Run it with ``PYTHONPATH`` at each checkout, and with
``PYTHONHASHSEED=0 NUMBA_NUM_THREADS=1``: spinning worker threads would count too.

OP: ``add`` (``a + b``, two (10, 100) float64 tensors with autodiff), ``add_zip`` (the
backend op alone), ``mul_number`` (``a * 2.0``), ``sum`` (``a.sum()``), ``course_step``
(one step of the course MLP: hidden 100, batch 10) or ``mlp200_step`` (hidden 200,
batch 100), both from ``minitorch.bench``.
"""

from __future__ import annotations

import os
import sys
from collections import deque
from collections.abc import Callable
from itertools import repeat, starmap
from typing import Any

import numpy as np

os.environ.setdefault("MINITORCH_STAND_IN_CALLS", "0")  # the kernels, as in a long run

import minitorch  # noqa: E402
from minitorch import bench  # noqa: E402


def _training_step(points: int, hidden: int, batch: int) -> Callable[[], Any]:
    data, run = bench._minitorch_training(points, hidden, batch, bench.FAST)
    xs, ys = data.X[:batch], data.y[:batch]
    return lambda: run(xs, ys)


def op(name: str) -> Callable[[], Any]:
    """The call to count."""
    rng = np.random.default_rng(3)
    a, b = (
        minitorch.tensor_from_numpy(rng.random((10, 100)), backend=bench.FAST, requires_grad=True)
        for _ in range(2)
    )
    ops: dict[str, Callable[[], Callable[[], Any]]] = {
        "add": lambda: lambda: a + b,
        "add_zip": lambda: lambda: bench.FAST.add_zip(a, b),
        "mul_number": lambda: lambda: a * 2.0,
        "sum": lambda: lambda: a.sum(),
        "course_step": lambda: _training_step(50, 100, 10),
        "mlp200_step": lambda: _training_step(1000, 200, 100),
    }
    if name not in ops:
        raise SystemExit(f"unknown op {name!r}; one of {', '.join(ops)}")
    return ops[name]()


def main() -> None:
    name = sys.argv[1] if len(sys.argv) > 1 else "add"
    calls = int(sys.argv[2]) if len(sys.argv) > 2 else 2000
    call = op(name)
    for _ in range(50):  # compile or load every kernel, fill every cache
        call()
    deque(starmap(call, repeat((), calls)), maxlen=0)


if __name__ == "__main__":
    main()
