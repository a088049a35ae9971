"""Data-parallel training (minitorch.distributed) and ``train --distributed``.

The sampler, the thread share and the errors are tested in this process. Everything that needs
several ranks runs under ``mpiexec`` (marked ``mpi``): it is skipped, with the reason, where
mpi4py or mpiexec is missing, except that ``make test`` sets ``MINITORCH_REQUIRE_MPI=1`` and
then a missing MPI fails. Each job has a time limit, so a hang fails instead of blocking.
"""

from __future__ import annotations

import importlib.util
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import mpi_worker
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from minitorch import Module, Scalar, distributed
from minitorch.__main__ import main

ROOT = Path(__file__).parents[1]
JOB_SECONDS = 240


@pytest.fixture(autouse=True)
def not_initialised(monkeypatch: pytest.MonkeyPatch) -> None:
    """This process never joins an MPI world; each test starts from that state."""
    monkeypatch.setattr(distributed, "_world", None)


# Sampler -------------------------------------------------------------------------------


@given(
    n=st.integers(0, 60),
    world=st.integers(1, 5),
    per_rank=st.integers(1, 6),
    seed=st.integers(0, 2**32 - 1),
)
def test_shares_reassemble_the_single_process_batches(
    n: int, world: int, per_rank: int, seed: int
) -> None:
    batch = world * per_rank
    order = np.random.default_rng(seed).permutation(n).tolist()
    single = [order[i : i + batch] for i in range(0, n, batch)]
    shares = [
        list(distributed.DistributedBatchSampler(batch, rank=r, world_size=world).shares(order))
        for r in range(world)
    ]
    assert all(len(s) == len(single) for s in shares)
    for k, rows in enumerate(single):
        parts = [shares[r][k] for r in range(world)]
        assert [row for part in parts for row in part.rows] == rows
        assert all(part.count == len(rows) for part in parts)
        sizes = [len(part.rows) for part in parts]
        assert max(sizes) - min(sizes) <= 1 and sizes == sorted(sizes, reverse=True)
        assert sum(part.weight for part in parts) == pytest.approx(1.0)


def test_a_short_last_batch_can_leave_a_rank_without_rows() -> None:
    sampler = distributed.DistributedBatchSampler(4, rank=1, world_size=2)
    shares = list(sampler.shares(list(range(9))))
    assert [list(s.rows) for s in shares] == [[2, 3], [6, 7], []]
    assert [s.count for s in shares] == [4, 4, 1] and shares[-1].weight == 0.0


@pytest.mark.parametrize(
    ("batch", "rank", "world", "message"),
    [
        (5, 0, 2, "global batch size 5 is not divisible by the 2 ranks; choose a multiple of 2"),
        (0, 0, 1, "must be at least 1, got 0"),
        (4, 2, 2, "got rank 2 of 2"),
        (4, -1, 2, "got rank -1 of 2"),
        (4, 0, 0, "got rank 0 of 0"),
    ],
)
def test_sampler_rejects_bad_arguments(batch: int, rank: int, world: int, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        distributed.DistributedBatchSampler(batch, rank=rank, world_size=world)


def test_rank_and_world_need_init() -> None:
    assert not distributed.is_initialized()
    for call in (distributed.rank, distributed.world_size, lambda: distributed.all_reduce(1.0)):
        with pytest.raises(RuntimeError, match=r"call distributed\.init\(\)"):
            call()
    with pytest.raises(RuntimeError, match="not initialised"):
        distributed.DistributedBatchSampler(4)


def test_only_tensor_parameters_can_be_exchanged() -> None:
    module = Module()
    module.add_parameter("w", Scalar(1.0))
    with pytest.raises(TypeError, match="exchanges Tensor parameters; w holds a Scalar"):
        distributed.sum_gradients(module)


# Threads -------------------------------------------------------------------------------


class FakeLocalComm:
    """The ranks on one machine, as ``_share_of_cores`` sees them: their allowed cores."""

    def __init__(self, cores: list[set[int]]) -> None:
        self.cores = cores
        self.freed = False

    def allgather(self, mine: set[int]) -> list[set[int]]:
        return self.cores

    def Free(self) -> None:  # noqa: N802 (mpi4py's name)
        self.freed = True


@pytest.mark.parametrize(
    ("mine", "everyone", "threads"),
    [
        (set(range(8)), [set(range(8))] * 4, 2),  # unbound: the cores are shared by 4
        (set(range(8)), [set(range(8))] * 3, 2),  # 8 // 3, rounded down
        (set(range(2)), [set(range(2))] * 3, 1),  # more ranks than cores: still one
        ({0, 1}, [{0, 1}, {2, 3}, {4, 5}], 2),  # bound to disjoint cores: all of mine
        ({0, 1, 2, 3}, [{0, 1, 2, 3}, {0, 1, 2, 3}, {4, 5, 6, 7}], 2),
    ],
)
def test_each_rank_gets_its_share_of_the_cores(
    monkeypatch: pytest.MonkeyPatch, mine: set[int], everyone: list[set[int]], threads: int
) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: mine, raising=False)
    local = FakeLocalComm(everyone)
    assert distributed._share_of_cores(local) == threads
    assert local.freed


# Errors without MPI ----------------------------------------------------------------------


def test_init_without_mpi4py_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "mpi4py", None)  # makes `import mpi4py` fail
    with pytest.raises(ImportError, match=re.escape("pip install 'minitorch[mpi]'")):
        distributed.init()
    assert not distributed.is_initialized()


def test_train_distributed_without_mpi4py_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "mpi4py", None)
    with pytest.raises(SystemExit, match=r"--distributed: .*pip install 'minitorch\[mpi\]'"):
        main(["train", "--distributed", "--backend", "simple", "--epochs", "1"])


# Under mpiexec -------------------------------------------------------------------------


def _mpi_missing() -> str | None:
    """Why the MPI tests cannot run here, or None."""
    if importlib.util.find_spec("mpi4py") is None:
        return f"mpi4py is not installed ({distributed.INSTALL_HINT})"
    if distributed.find_mpiexec() is None:
        return "no mpiexec beside python or on PATH"
    return None


@pytest.fixture
def mpiexec() -> str:
    reason = _mpi_missing()
    if reason is not None:
        if os.environ.get("MINITORCH_REQUIRE_MPI") == "1":
            pytest.fail(f"MINITORCH_REQUIRE_MPI=1, but {reason}")
        pytest.skip(reason)
    return str(distributed.find_mpiexec())


def run_job(
    mpiexec: str, ranks: int, args: list[str], env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``mpiexec -n ranks python args`` from the repository root, killed if it hangs.

    Hydra's own time limit (MPIEXEC_TIMEOUT) ends a hung job first; the process group is
    killed after a little longer in case mpiexec itself hangs.
    """
    env = dict(os.environ if env is None else env)
    env.update(PYTHONPATH=str(ROOT), MPIEXEC_TIMEOUT=str(JOB_SECONDS))
    command = [mpiexec, "-n", str(ranks), sys.executable, *args]
    job = subprocess.Popen(
        command,
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = job.communicate(timeout=JOB_SECONDS + 30)
    except subprocess.TimeoutExpired:
        os.killpg(job.pid, signal.SIGKILL)
        out, err = job.communicate()
        pytest.fail(f"{' '.join(command)} hung:\n{out}\n{err}")
    return subprocess.CompletedProcess(command, job.returncode, out, err)


def _without_timings(text: str) -> list[str]:
    """The epoch and summary lines of a train log, loss and accuracy kept, timings cut."""
    kept = []
    for line in text.splitlines():
        if line.startswith("epoch "):
            kept.append(line.split("%)")[0])
        elif line.startswith("Done:"):
            kept.append(line.split(";")[0])
    return kept


@pytest.mark.mpi
def test_train_on_two_ranks_matches_one_process(
    mpiexec: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # 49 points in batches of 4: the last batch has one point, so rank 1's share is empty.
    argv = ["train", "--dataset", "split", "--hidden", "6", "--points", "49", "--batch", "4"]
    argv += ["--epochs", "20", "--seed", "1", "--lr", "0.5"]
    assert main(argv) == 0  # one process; also fills the kernel cache for the ranks
    single = capsys.readouterr().out
    job = run_job(mpiexec, 2, ["-m", "minitorch", *argv, "--distributed"])
    assert job.returncode == 0, job.stderr
    assert "ranks x threads 2 x " in job.stdout
    assert job.stdout.count("Training on split") == 1, "only rank 0 prints"
    expected = _without_timings(single)
    assert len(expected) == 4 and expected[-1].startswith("Done: accuracy")
    assert _without_timings(job.stdout) == expected
    assert re.search(
        r"Parameters bit-identical on all 2 ranks \(SHA-256 [0-9a-f]{64}\)", job.stdout
    )


@pytest.mark.mpi
def test_train_rejects_a_batch_that_does_not_divide_among_the_ranks(mpiexec: str) -> None:
    argv = ["-m", "minitorch", "train", "--backend", "simple", "--batch", "5", "--distributed"]
    job = run_job(mpiexec, 2, argv)
    assert job.returncode != 0
    message = "--batch: The global batch size 5 is not divisible by the 2 ranks"
    assert job.stderr.count(message) == 1, job.stderr
    assert "Training on" not in job.stdout


@pytest.mark.mpi
def test_collectives_on_three_ranks(mpiexec: str, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_NUM_THREADS"}
    job = run_job(mpiexec, 3, [mpi_worker.__file__, "collectives", str(tmp_path)], env)
    assert job.returncode == 0, job.stderr
    ranks = [dict(np.load(tmp_path / f"rank{r}.npz")) for r in range(3)]

    # Every rank ends with the same bytes.
    for other in ranks[1:]:
        assert other.keys() == ranks[0].keys()
        for key, value in ranks[0].items():
            assert other[key].dtype == value.dtype and other[key].tobytes() == value.tobytes(), key
    found = ranks[0]
    assert found["world_size"] == 3
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert found["threads"] == max(1, cores // 3)

    def rank_order_sum(values: list[np.ndarray]) -> np.ndarray:
        total = values[0].copy()
        for v in values[1:]:
            total += v
        return total

    # The sums are those of one process adding the ranks' values in rank order, to the bit.
    for key, stream, size, dtype in [
        ("sum.f64", 1, 1001, np.float64),
        ("sum.f32", 2, 10, np.float32),
    ]:
        expected = rank_order_sum(
            [mpi_worker.rank_values(r, stream, size, dtype) for r in range(3)]
        )
        assert found[key].dtype == dtype
        assert found[key].tobytes() == expected.tobytes(), key
    scalar = rank_order_sum([mpi_worker.rank_values(r, 3, 1) for r in range(3)])
    assert found["sum.scalar"].shape == () and found["sum.scalar"] == scalar[0]

    # Parameters come from rank 0, each in its storage dtype.
    for name, p in mpi_worker.Net(0, mpi_worker.SHAPES).named_parameters():
        assert found[f"param.{name}"].dtype == mpi_worker.DTYPES[name], name
        assert found[f"param.{name}"].tobytes() == p.value.to_numpy().tobytes(), name

    # Gradients: summed over the ranks that have one (zeros for the others), averaged over all
    # three, in the parameter's dtype; a parameter without a gradient anywhere keeps none.
    for name in mpi_worker.SHAPES:
        grads = [mpi_worker.gradient(r, name) for r in range(3)]
        if all(g is None for g in grads):
            assert f"sum.{name}" not in found and f"mean.{name}" not in found
            continue
        dtype = mpi_worker.DTYPES[name]
        total = rank_order_sum(
            [np.zeros(mpi_worker.SHAPES[name], dtype) if g is None else g for g in grads]
        )
        assert found[f"sum.{name}"].dtype == found[f"mean.{name}"].dtype == dtype, name
        assert found[f"sum.{name}"].tobytes() == total.tobytes(), name
        assert found[f"mean.{name}"].tobytes() == (total / 3).tobytes(), name
    assert len(str(found["digest"])) == 64


@pytest.mark.mpi
def test_ranks_of_another_mpis_mpiexec_are_told_so(mpiexec: str) -> None:
    # Open MPI's mpiexec sets this; mpi4py on MPICH then sees a world of one in each rank.
    env = dict(os.environ, OMPI_COMM_WORLD_SIZE="2", PYTHONPATH=str(ROOT))
    code = "from minitorch import distributed; distributed.init()"
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode != 0
    assert "started as one of 2 ranks, but mpi4py sees a world of one" in result.stderr
    assert "Use the mpiexec installed beside mpi4py" in result.stderr


@pytest.mark.mpi
@pytest.mark.parametrize(
    ("mode", "status", "message"),
    [
        ("raise", 1, "ValueError: rank 1 fails on purpose"),
        ("exit", 3, "MPI_Abort(MPI_COMM_WORLD, 3)"),
        ("mismatch", 1, "Rank 1's model does not match rank 0's"),
    ],
)
def test_a_failing_rank_ends_the_job(
    mpiexec: str, tmp_path: Path, mode: str, status: int, message: str
) -> None:
    # Rank 0 waits in a collective that rank 1 never joins: without an abort it hangs.
    job = run_job(mpiexec, 2, [mpi_worker.__file__, mode, str(tmp_path)])
    assert job.returncode == status, job.stderr
    assert message in job.stderr + job.stdout
