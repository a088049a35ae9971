"""Check that eager training gives bit-identical results to another commit.

    python tools/same_results.py [REF]      (REF defaults to main)

Trains the course MLP (hidden 100, 50 points, batch 10, 5 epochs) and the large
MLP (hidden 200, 1000 points, batch 100, 2 epochs) on FastOps, and a small one
on SimpleOps, with the code of this checkout and with the ``minitorch`` package
of REF (``git archive``), each under 1 and 2 Numba threads in a fresh process.
Every run hashes the loss of each step and the final parameters; the script
prints the hashes and exits 1 unless all runs agree. A change to the eager path
(autodiff, Function.apply, kernel dispatch) must not move a single bit.
"""

from __future__ import annotations

import hashlib
import io
import os
import random
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def fingerprint(points: int, hidden: int, batch: int, epochs: int, backend_name: str) -> str:
    """Hash of every step's loss and the final parameters of one training run."""
    import minitorch

    backend = (
        minitorch.SimpleBackend
        if backend_name == "simple"
        else minitorch.TensorBackend(minitorch.FastOps)
    )

    class Linear(minitorch.Module):
        def __init__(self, n_in: int, n_out: int) -> None:
            super().__init__()
            w = minitorch.rand((n_in, n_out), backend=backend)
            self.weights = minitorch.Parameter(2 * (w - 0.5))
            self.bias = minitorch.Parameter(2 * (minitorch.rand((n_out,), backend=backend) - 0.5))

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
    h = hashlib.sha256()
    for _ in range(epochs):
        pairs = list(zip(data.X, data.y))
        random.shuffle(pairs)
        xs, ys = zip(*pairs)
        for i in range(0, len(xs), batch):
            optim.zero_grad()
            x = minitorch.tensor(xs[i : i + batch], backend=backend)
            y = minitorch.tensor(ys[i : i + batch], backend=backend)
            out = model.forward(x).view(y.shape[0])
            prob = (out * y) + (out - 1.0) * (y - 1.0)
            loss = -prob.log()
            total = (loss / y.shape[0]).sum().view(1)
            total.backward()
            h.update(total.to_numpy().tobytes())
            optim.step()
    for _, p in model.named_parameters():
        h.update(p.value.to_numpy().tobytes())
    return h.hexdigest()[:16]


RUNS = {"course": (50, 100, 10, 5, "fast"), "large": (1000, 200, 100, 2, "fast"),
        "simple": (20, 8, 10, 2, "simple")}  # fmt: skip


def _child() -> None:
    for name, args in RUNS.items():
        print(name, fingerprint(*args))


def _run(package_root: Path, threads: int, cache: str) -> str:
    env = dict(os.environ, PYTHONPATH=str(package_root), NUMBA_NUM_THREADS=str(threads),
               MINITORCH_CACHE_DIR=cache)  # fmt: skip
    result = subprocess.run([sys.executable, __file__, "--child"], env=env, capture_output=True,
                            text=True, cwd=package_root)  # fmt: skip
    if result.returncode:
        raise SystemExit(f"training with {package_root} failed:\n{result.stderr}")
    return result.stdout


def main(ref: str) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        other = Path(tmp) / "ref"
        other.mkdir()
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", ref, "minitorch"],
                                 capture_output=True, check=True).stdout  # fmt: skip
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(other, filter="data")
        outputs = {}
        for label, root in ((ref, other), ("this checkout", ROOT)):
            for threads in (1, 2):
                cache = os.environ.get("MINITORCH_CACHE_DIR", f"{tmp}/cache")
                outputs[f"{label}, {threads} thread(s)"] = _run(root, threads, cache)
    for label, text in outputs.items():
        print(f"{label}: {' '.join(text.split())}")
    same = len(set(outputs.values())) == 1
    print("bit-identical" if same else "DIFFERENT")
    return 0 if same else 1


if __name__ == "__main__":
    if sys.argv[1:] == ["--child"]:
        _child()
    else:
        sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "main"))
