"""Data-parallel training over MPI: every rank holds the whole model and learns from its share.

Start N copies of a training script with ``mpiexec -n N`` (one machine, or many through a host
file) and call ``init()`` in each. Each global batch is cut into N shares
(``DistributedBatchSampler``); each rank runs forward and backward on its share, then
``sum_gradients`` or ``average_gradients`` combines the gradients of all ranks, so every rank
takes the same optimiser step and the ranks follow the trajectory one process would on the
whole batch, up to the order in which the gradient sum is added up.

The sum is computed here, not by MPI, so that it is the same on every rank to the last bit and
does not depend on which algorithm the MPI library picks: each element of a buffer is summed
by exactly one rank, always in rank order ``((g_0 + g_1) + g_2) + ... + g_{N-1}``, and all
ranks receive that rank's bytes (``all_reduce``). Gradients travel as one flat buffer per
storage dtype, so a step costs one all-reduce per dtype, not one per parameter.

MPI is optional: ``mpi4py`` is imported by ``init()`` only (``pip install 'minitorch[mpi]'``
brings ``mpi4py`` and MPICH's ``mpiexec``).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numba
import numpy as np

from .module import Module, Parameter
from .tensor import Tensor

INSTALL_HINT = "pip install 'minitorch[mpi]' (or: pip install mpi4py mpich)"

# Environment variables through which launchers announce the size of the job they started.
_LAUNCHER_SIZE_VARIABLES = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE")


@dataclass(frozen=True)
class _World:
    comm: Any  # mpi4py.MPI.Intracomm
    rank: int
    size: int


_world: _World | None = None


def init(threads: int | None = None) -> None:
    """Join the MPI world that ``mpiexec`` started; a process started without it is a world of one.

    Also, so that ranks sharing a machine do not oversubscribe its cores, sets this rank's Numba
    threads: to ``threads`` if given (at most ``NUMBA_NUM_THREADS``), else to
    ``NUMBA_NUM_THREADS`` if that is set, else to this rank's share of the cores it may run on
    (those cores divided by the ranks on this machine that may run on them too, at least 1).
    In a world of more than one, an uncaught exception on any rank ends the whole job instead
    of leaving the other ranks waiting (see ``abort_on_error``). Calling ``init`` again does
    nothing.
    """
    global _world
    if _world is not None:
        return
    try:
        from mpi4py import MPI
    except (ImportError, RuntimeError) as e:  # RuntimeError: mpi4py found no MPI library
        raise ImportError(
            f"Distributed training needs mpi4py and an MPI library: {INSTALL_HINT}. ({e})"
        ) from e
    comm = MPI.COMM_WORLD
    world = _World(comm, comm.Get_rank(), comm.Get_size())
    launched = max(int(os.environ.get(name, "1")) for name in _LAUNCHER_SIZE_VARIABLES)
    if world.size == 1 and launched > 1:
        library = " ".join(MPI.Get_library_version().splitlines()[0].split())
        raise RuntimeError(
            f"This process was started as one of {launched} ranks, but mpi4py sees a world of "
            "one: the mpiexec that started it belongs to another MPI library than the one "
            f"mpi4py loaded ({library}). Use the "
            "mpiexec installed beside mpi4py (with the mpich wheel, the one in the same bin/ "
            "directory as python)."
        )
    # Collective, so every rank takes part whatever its own settings.
    share = _share_of_cores(comm.Split_type(MPI.COMM_TYPE_SHARED))
    if threads is None and "NUMBA_NUM_THREADS" not in os.environ:
        threads = share
    if threads is not None:
        numba.set_num_threads(max(1, min(threads, numba.config.NUMBA_NUM_THREADS)))
    if world.size > 1:
        sys.excepthook = _aborting_hook(sys.excepthook)
    _world = world


def _share_of_cores(local: Any) -> int:
    """This rank's share of the cores it may run on, among the ranks on its machine."""
    mine = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set()
    mine = mine or set(range(os.cpu_count() or 1))
    sharing = sum(1 for cores in local.allgather(mine) if cores & mine)
    local.Free()
    return max(1, len(mine) // sharing)


def find_mpiexec() -> str | None:
    """The ``mpiexec`` installed beside this Python (the mpich wheel's), else one on PATH.

    The one beside Python belongs to the MPI library that mpi4py loads; another MPI's
    ``mpiexec`` would start ranks that each see a world of one.
    """
    beside = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    return beside if os.access(beside, os.X_OK) else shutil.which("mpiexec")


def is_initialized() -> bool:
    """Whether ``init()`` has run in this process."""
    return _world is not None


def _require() -> _World:
    if _world is None:
        raise RuntimeError("minitorch.distributed is not initialised: call distributed.init().")
    return _world


def rank() -> int:
    """This process's rank, 0 to ``world_size() - 1``; rank 0 is the one that reports."""
    return _require().rank


def world_size() -> int:
    """The number of ranks in the job."""
    return _require().size


# Failure handling ----------------------------------------------------------------------


def _abort_at_exit(error: BaseException) -> None:
    """Make this process end the whole MPI job when it exits (mpi4py calls MPI_Abort).

    A clean exit (``SystemExit(0)``) does not abort.
    """
    if _world is not None and _world.size > 1:
        from mpi4py.run import set_abort_status

        set_abort_status(error)


def _aborting_hook(previous: Any) -> Any:
    def hook(kind: type[BaseException], error: BaseException, traceback: Any) -> None:
        _abort_at_exit(error)
        previous(kind, error, traceback)

    return hook


@contextlib.contextmanager
def abort_on_error() -> Iterator[None]:
    """End every rank of the job when this one leaves the block by an error.

    Other ranks would otherwise wait forever in their next collective for a rank that has
    gone. ``init()`` already does this for uncaught exceptions; the block also covers
    ``SystemExit`` with a non-zero status (a command returning an error code). The error
    still propagates here, so its message is printed before the job ends.
    """
    try:
        yield
    except BaseException as e:
        _abort_at_exit(e)
        raise


@contextlib.contextmanager
def output_on_root_only() -> Iterator[None]:
    """Inside the block, standard output of every rank but 0 is discarded."""
    if rank() == 0:
        yield
        return
    with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):
        yield


# Sampling ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Share:
    """One rank's part of a global batch.

    ``rows`` are this rank's rows, in the order of the global batch (possibly none, in a last
    batch smaller than the number of ranks); ``count`` is the size of the whole global batch.
    A loss summed over ``rows`` and divided by ``count`` is this rank's part of the batch mean.
    """

    rows: Sequence[int]
    count: int

    @property
    def weight(self) -> float:
        """This share's fraction of the global batch: scales a mean loss over ``rows``."""
        return len(self.rows) / self.count


class DistributedBatchSampler:
    """Cuts each global batch of an epoch's order into one contiguous share per rank.

    Given the order one process would use, batch ``k`` is ``order[k*B : (k+1)*B]`` on one
    process; rank ``r`` of ``N`` gets rows ``r*B/N`` to ``(r+1)*B/N`` of it. A last, shorter
    batch is split as evenly as possible (earlier ranks take the extra rows). Every rank must
    use the same order, e.g. shuffled by a generator seeded alike on all ranks.
    """

    def __init__(
        self, batch_size: int, rank: int | None = None, world_size: int | None = None
    ) -> None:
        if rank is None or world_size is None:
            world = _require()
            rank = world.rank if rank is None else rank
            world_size = world.size if world_size is None else world_size
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"Need 0 <= rank < world size, got rank {rank} of {world_size}.")
        if batch_size < 1:
            raise ValueError(f"The global batch size must be at least 1, got {batch_size}.")
        if batch_size % world_size:
            raise ValueError(
                f"The global batch size {batch_size} is not divisible by the {world_size} "
                f"ranks; choose a multiple of {world_size}."
            )
        self.batch_size = batch_size
        self.rank = rank
        self.world_size = world_size

    def shares(self, order: Sequence[int]) -> Iterator[Share]:
        """This rank's share of each global batch of ``order``, batch by batch."""
        for start in range(0, len(order), self.batch_size):
            batch = order[start : start + self.batch_size]
            base, extra = divmod(len(batch), self.world_size)
            first = self.rank * base + min(self.rank, extra)
            last = first + base + (self.rank < extra)
            yield Share(batch[first:last], len(batch))


# Collectives ---------------------------------------------------------------------------


def all_reduce(values: Any) -> np.ndarray:
    """The element-wise sum of ``values`` over all ranks, the same bytes on every rank.

    A reduce-scatter then an all-gather, with the additions done here: the flat buffer is cut
    into one chunk per rank; each rank receives every rank's copy of its chunk (``Alltoall``),
    adds them in rank order 0, 1, ..., N-1 and all ranks gather the summed chunks
    (``Allgather``). MPI only moves bytes, so the result does not depend on its algorithms,
    and each rank sends and receives about twice the buffer, as in a ring all-reduce.
    Every rank must pass the same shape and dtype. Returns a new array of that shape and dtype.
    """
    world = _require()
    values = np.asarray(values)
    flat = np.ascontiguousarray(values).reshape(-1)
    if world.size == 1 or flat.size == 0:
        return flat.copy().reshape(values.shape)
    chunk = -(-flat.size // world.size)
    padded = np.zeros(chunk * world.size, dtype=flat.dtype)
    padded[: flat.size] = flat
    received = np.empty_like(padded).reshape(world.size, chunk)
    world.comm.Alltoall(padded, received)
    summed = received[0].copy()
    for part in received[1:]:
        summed += part
    world.comm.Allgather(summed, padded)
    return padded[: flat.size].reshape(values.shape)


def _tensor_parameters(module: Module) -> list[tuple[str, Parameter]]:
    """``module``'s parameters by name; only Tensor values can be exchanged."""
    named = []
    for name, p in module.named_parameters():
        if not isinstance(p.value, Tensor):
            raise TypeError(
                f"Distributed training exchanges Tensor parameters; {name} holds a "
                f"{type(p.value).__name__}."
            )
        named.append((name, p))
    return named


def _by_dtype(params: list[tuple[str, Parameter]]) -> dict[np.dtype, list[Parameter]]:
    """Parameters grouped by storage dtype, in parameter order (the same on every rank)."""
    groups: dict[np.dtype, list[Parameter]] = {}
    for _, p in params:
        groups.setdefault(np.dtype(p.value._tensor._storage.dtype), []).append(p)
    return groups


def _tensor_like(values: np.ndarray, like: Tensor) -> Tensor:
    """A tensor of ``like``'s shape and backend over a copy of ``values``, in their dtype."""
    return Tensor.make(values.copy(), like.shape, backend=like.backend)


def broadcast_parameters(module: Module, root: int = 0) -> None:
    """Give every rank the parameter values of rank ``root`` (one broadcast per dtype).

    Call it once after building the model, so that all ranks start from the same point
    whatever their random state. The ranks' models must have the same parameters (names,
    shapes and dtypes); a rank whose model differs raises ``ValueError``.
    """
    world = _require()
    params = _tensor_parameters(module)
    layout = [(name, p.value.shape, str(p.value._tensor._storage.dtype)) for name, p in params]
    expected = world.comm.bcast(layout, root=root)
    if layout != expected:
        raise ValueError(
            f"Rank {world.rank}'s model does not match rank {root}'s: parameters "
            f"(name, shape, dtype) {layout} against {expected}."
        )
    for dtype, group in _by_dtype(params).items():
        if world.rank == root:
            buffer = np.concatenate([p.value.to_numpy().reshape(-1) for p in group]).astype(dtype)
        else:
            buffer = np.empty(sum(p.value.size for p in group), dtype=dtype)
        world.comm.Bcast(buffer, root=root)
        if world.rank != root:
            offset = 0
            for p in group:
                p.update(_tensor_like(buffer[offset : offset + p.value.size], p.value))
                offset += p.value.size


def sum_gradients(module: Module) -> None:
    """Replace each parameter's gradient by the sum of that gradient over all ranks.

    For losses that are each rank's part of the global one, e.g. a loss summed over the share
    and divided by ``Share.count``: the sum is then the gradient of the global loss, exactly
    as one process would compute it but for the order of the additions. A rank without a
    gradient for a parameter (it had no rows, or did not use it) adds zeros; a parameter that
    no rank has a gradient for keeps ``grad = None``, so optimisers skip it on every rank.
    """
    _reduce_gradients(module, divisor=1)


def average_gradients(module: Module) -> None:
    """Replace each parameter's gradient by its mean over the ranks (PyTorch DDP's rule).

    Right for a loss that is a mean over shares of equal size; for a last, smaller batch
    split unevenly, scale each rank's mean loss by ``Share.weight`` and use ``sum_gradients``.
    """
    _reduce_gradients(module, divisor=world_size())


def _reduce_gradients(module: Module, divisor: int) -> None:
    for dtype, group in _by_dtype(_tensor_parameters(module)).items():
        sizes = [p.value.size for p in group]
        total = sum(sizes)
        # The gradients, then one "has a gradient" flag per parameter: all in one call.
        buffer = np.zeros(total + len(group), dtype=dtype)
        offset = 0
        for i, (p, size) in enumerate(zip(group, sizes)):
            if p.value.grad is not None:
                buffer[offset : offset + size] = p.value.grad.to_numpy().reshape(-1)
                buffer[total + i] = 1
            offset += size
        summed = all_reduce(buffer)
        if divisor != 1:
            summed[:total] /= divisor
        offset = 0
        for p, size, flag in zip(group, sizes, summed[total:]):
            grad = summed[offset : offset + size]
            p.value.grad = _tensor_like(grad, p.value) if flag else None
            offset += size


def verify_parameters(module: Module) -> str:
    """Check that every rank holds bit-identical parameters; returns their SHA-256.

    Raises ``RuntimeError`` listing each rank's digest when they differ.
    """
    digest = hashlib.sha256()
    for name, p in _tensor_parameters(module):
        values = p.value.to_numpy()
        digest.update(f"{name}:{values.dtype.str}:{values.shape};".encode())
        digest.update(values.tobytes())
    mine = digest.hexdigest()
    everyone = _require().comm.allgather(mine)
    if len(set(everyone)) > 1:
        listed = ", ".join(f"rank {r}: {d[:16]}" for r, d in enumerate(everyone))
        raise RuntimeError(f"The ranks' parameters differ ({listed}).")
    return mine
