"""One rank of the MPI tests in test_distributed.py: ``mpiexec -n N python mpi_worker.py MODE OUT``.

``collectives`` runs every collective of ``minitorch.distributed`` on values that differ per
rank and writes what this rank ends with to ``OUT/rank<r>.npz``; the test compares the ranks
with each other and with sums computed in one process. The other modes fail on purpose on
rank 1 while rank 0 waits in a collective: the job must end, not hang.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numba
import numpy as np

from minitorch import Module, Tensor, distributed
from minitorch.tensor_data import as_storage

SHAPES = {"a": (3, 5), "b": (7,), "c": (2, 2, 2), "d": (1,), "e": (4, 3)}
# Storage dtype per parameter: the ranks exchange one buffer per dtype.
# (float32 where tensors can hold it; until then every storage is float64.)
_F32 = as_storage(np.zeros(1, np.float32)).dtype.type
DTYPES = {name: _F32 if name == "e" else np.float64 for name in SHAPES}
NO_GRADIENT_ANYWHERE = "b"  # no rank has a gradient for it
NO_GRADIENT_ON_RANK_1 = "a"


def rank_values(rank: int, stream: int, size: int, dtype: type = np.float64) -> np.ndarray:
    """Values of mixed signs and magnitudes (1e-8..1e8), so the order of a sum shows."""
    rng = np.random.default_rng([rank, stream])
    return (rng.standard_normal(size) * 10.0 ** rng.integers(-8, 9, size)).astype(dtype)


def tensor(values: np.ndarray) -> Tensor:
    """A tensor over ``values``, keeping their dtype."""
    return Tensor.make(values.reshape(-1), values.shape)


class Net(Module):
    def __init__(self, rank: int, shapes: dict[str, tuple[int, ...]]) -> None:
        super().__init__()
        for i, (name, shape) in enumerate(shapes.items()):
            values = rank_values(rank, 100 + i, int(np.prod(shape)), DTYPES[name])
            self.add_parameter(name, tensor(values.reshape(shape)))


def gradient(rank: int, name: str) -> np.ndarray | None:
    """The gradient ``rank`` holds for parameter ``name`` (None: it has none)."""
    if name == NO_GRADIENT_ANYWHERE or (name == NO_GRADIENT_ON_RANK_1 and rank == 1):
        return None
    i = list(SHAPES).index(name)
    values = rank_values(rank, 200 + i, int(np.prod(SHAPES[name])), DTYPES[name])
    return values.reshape(SHAPES[name])


def set_gradients(net: Net, rank: int) -> None:
    for name, p in net.named_parameters():
        grad = gradient(rank, name)
        p.value.grad = None if grad is None else tensor(grad)


def gradients_of(net: Net, prefix: str) -> dict[str, np.ndarray]:
    return {
        f"{prefix}.{name}": p.value.grad.to_numpy()
        for name, p in net.named_parameters()
        if p.value.grad is not None
    }


def collectives(out: Path) -> None:
    r = distributed.rank()
    found: dict[str, np.ndarray] = {
        "world_size": np.array(distributed.world_size()),
        "threads": np.array(numba.get_num_threads()),
        "sum.f64": distributed.all_reduce(rank_values(r, 1, 1001)),
        "sum.f32": distributed.all_reduce(rank_values(r, 2, 10, np.float32)),
        "sum.scalar": distributed.all_reduce(rank_values(r, 3, 1)[0]),
    }
    net = Net(r, SHAPES)
    distributed.broadcast_parameters(net)
    found |= {f"param.{name}": p.value.to_numpy() for name, p in net.named_parameters()}
    set_gradients(net, r)
    distributed.sum_gradients(net)
    found |= gradients_of(net, "sum")
    set_gradients(net, r)
    distributed.average_gradients(net)
    found |= gradients_of(net, "mean")
    found["digest"] = np.array(distributed.verify_parameters(net))
    np.savez(out / f"rank{r}.npz", **found)


def main(mode: str, out: Path) -> None:
    distributed.init()
    r = distributed.rank()
    if mode == "collectives":
        collectives(out)
    elif mode == "raise":
        if r == 1:
            raise ValueError("rank 1 fails on purpose")
        distributed.all_reduce(np.ones(3))
    elif mode == "exit":
        with distributed.abort_on_error():
            if r == 1:
                sys.exit(3)
            distributed.all_reduce(np.ones(3))
    elif mode == "mismatch":
        distributed.broadcast_parameters(Net(r, SHAPES if r == 0 else {"a": (5, 3)}))
    else:
        raise ValueError(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]))
