"""The benchmark command's building blocks run and report sane numbers."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import minitorch
from minitorch import bench

pytestmark = [pytest.mark.kernels, pytest.mark.not_boundschecked]


def test_best_time_is_positive_and_small_for_trivial_work() -> None:
    assert 0 < bench.best_time(lambda: None, repeat=2, min_time=0.001) < 1e-3


def test_overhead_table_has_every_layer() -> None:
    rows = dict(bench.overhead(repeat=3))
    assert "tensor op `a + b` with autodiff history" in rows
    # The full tensor op includes the kernel call (adjacent layers are too close to order
    # reliably on a busy machine).
    kernel = rows["compiled kernel alone (preallocated output)"]
    assert all(t > 0 for t in rows.values())
    assert kernel < rows["tensor op `a + b` with autodiff history"]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_matmul_gflops_reports_every_side(dtype: type) -> None:
    ours, numpy_rate, _ = bench.matmul_gflops((32, 32), (32, 32), repeat=1, dtype=dtype)
    assert ours > 0 and numpy_rate > 0


def test_float32_operands_stay_float32() -> None:
    t = bench._fast(np.ones((3, 4), np.float32))
    assert t._tensor._storage.dtype == np.float32
    assert bench.FAST.add_reduce(t, 1)._tensor._storage.dtype == np.float32
    assert bench._fast(np.ones(3))._tensor._storage.dtype == np.float64


def test_target_tables_name_each_dtype() -> None:
    assert {np.float64, np.float32} <= set(bench.MATMUL_TARGETS) & set(bench.OP_LIMITS)
    assert all("float32" in name for name, *_ in bench.MATMUL_TARGETS[np.float32])


@pytest.mark.cuda
def test_cuda_cases_run_on_tiny_sizes() -> None:
    numba_cuda = pytest.importorskip("numba.cuda")
    if not numba_cuda.is_available():
        pytest.skip("needs a GPU or the CUDA simulator")
    rows = bench.cuda_cases([1000], [8], repeat=1, train=False)
    assert [unit for *_, unit in rows] == ["ms", "ms", "GFLOP/s"]
    assert all(ours > 0 for _, ours, _, _ in rows)
    assert "| matmul 8x8 |" in "\n".join(bench._cuda_lines(rows))


def test_bench_cuda_without_a_gpu_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bench.numba.cuda, "is_available", lambda: False)
    from minitorch.__main__ import main

    with pytest.raises(SystemExit, match="needs an NVIDIA GPU"):
        main(["bench", "--cuda", "--output", "/dev/null"])


def test_scaling_table_gives_speed_up_and_efficiency_against_one_rank_one_thread() -> None:
    rows = [(1, 2, 0.30, 0.29, 0.33), (1, 1, 0.50, 0.48, 0.55), (2, 1, 0.25, 0.24, 0.27)]
    table = "\n".join(bench._scaling_lines(rows, repeats=3))
    assert "| 1 x 2 | 0.300 | 0.290-0.330 | 1.67x | 83% |" in table
    assert "| 1 x 1 | 0.500 | 0.480-0.550 | 1.00x | 100% |" in table
    assert "| 2 x 1 | 0.250 | 0.240-0.270 | 2.00x | 100% |" in table
    assert "3 runs per layout" in table


def test_scaling_is_skipped_with_a_reason_without_mpi(monkeypatch: pytest.MonkeyPatch) -> None:
    real = bench.importlib.util.find_spec
    if real("sklearn") is None:
        pytest.skip("the digits example needs scikit-learn")
    monkeypatch.setattr(
        bench.importlib.util, "find_spec", lambda name: None if name == "mpi4py" else real(name)
    )
    assert "pip install 'minitorch[mpi]'" in str(bench._scaling_unavailable())


def test_training_table_has_eager_compiled_float32_and_both_pytorch_columns() -> None:
    rows = [
        bench.TrainingRow("mlp", [0.004, 0.002, 0.003], [0.001], [0.0025], None, 0.5),
        bench.TrainingRow("f32", [0.004], [0.001], [0.005], [0.002], 0.5, eager32=[0.0018]),
    ]
    table = "\n".join(bench._training_lines(rows, (1.5, 0.001, 0.25, 0.0005)))
    assert (
        "| mlp | 3.00 (2.00-4.00) | 1.00 (1.00-1.00) | 2.50 (2.50-2.50) | — | — | 1.20 (NOT met) "
        "| — | 0.40 (<= 0.5x: met) |"
    ) in table
    assert (
        "| f32 | 4.00 (4.00-4.00) | 1.00 (1.00-1.00) | 5.00 (5.00-5.00) | 1.80 (1.80-1.80) "
        "| 2.00 (2.00-2.00) | 0.80 (met) | 0.90 (met) | 0.20 (<= 0.5x: met) |"
    ) in table
    assert "first call 1.50 s, second 1.00 ms" in table and "first call 0.25 s" in table


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_training_sides_train_in_their_dtype(dtype: str) -> None:
    data, step = bench._minitorch_training(20, 4, 10, bench.FAST, dtype_name=dtype)
    seen: list[minitorch.Tensor] = []
    real_backward = minitorch.Tensor.backward

    def backward(self: minitorch.Tensor, *args: object) -> None:
        seen.append(self)
        real_backward(self, *args)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(minitorch.Tensor, "backward", backward)
        bench._epoch(data, 10, step)
    assert len(seen) == 2 and {t.dtype for t in seen} == {np.dtype(dtype)}
    assert all(np.isfinite(t.item()) for t in seen)


def test_paired_ratio_takes_the_median_over_turns_so_a_slow_turn_cancels() -> None:
    # Three turns of one epoch while the machine slows down (1x, 2x, 4x): ours take 0.9 of
    # theirs each turn, but one of their epochs hit a spike (2 -> 5). The ratio of the
    # medians (1.8 / 4) says 0.45; the median of the turns' ratios (0.9, 0.36, 0.9) 0.9.
    ours, theirs = [0.9, 1.8, 3.6], [1.0, 5.0, 4.0]
    row = bench.TrainingRow("mlp", ours, ours, theirs, None, 0.5, paired=True)
    assert row.eager_ratio == pytest.approx(0.9) and row.ratio == pytest.approx(0.9)
    unpaired = bench.TrainingRow("mlp", ours, ours, theirs, None, 0.5)
    assert unpaired.eager_ratio == pytest.approx(1.8 / 4.0)
    assert bench._blocks(60) == [(5 * i, 5 * i + 5) for i in range(12)]
    assert bench._blocks(7) == [(i, i + 1) for i in range(7)]
    assert [stop - start for start, stop in bench._blocks(26)] == [3, 3] + [2] * 10


def test_digits_run_times_each_library_after_its_first_epoch() -> None:
    if bench._digits_unavailable():
        pytest.skip(str(bench._digits_unavailable()))
    twin = ("--torch",) if bench._torch() is not None else ()
    times = bench._digits_run(3, "--subset", "64", *twin)
    assert len(times["minitorch"]) == 2 and all(t > 0 for t in times["minitorch"])
    assert len(times["pytorch"]) == (2 if twin else 0)


def test_compiled_training_epochs_run() -> None:
    times = bench._minitorch_epoch_times(20, 4, 10, 2, compiled=True)
    assert len(times) == 2 and all(t > 0 for t in times)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_conv_rows_compare_with_pytorch(dtype: type) -> None:
    pytest.importorskip("torch")
    rows = bench.conv_cases(repeat=1, dtype=dtype)
    assert [r.case.split(",")[1].strip() for r in rows] == ["digits conv1 (32", "digits conv2 (32"]
    assert all(r.ours > 0 and r.torch > 0 and r.numpy is None for r in rows)
    assert all(r.ratio == r.ours / r.torch for r in rows)
    assert all(("float32" in r.case) == (dtype is np.float32) for r in rows)


def test_ratio_over_runs_pairs_each_runs_epochs() -> None:
    # Three runs of two epochs per side (the digits CNN's eager row); the second run
    # fell on a busy spell that slowed both sides threefold. Each run's ratio of
    # medians: 0.9, 0.9, 1.0, so the row says 0.9; the ratio of all the epochs'
    # medians (1.0 / 1.0) would hide the gain.
    ours = [0.9, 0.9, 2.7, 2.7, 1.0, 1.0]
    theirs = [1.0, 1.0, 3.0, 3.0, 1.0, 1.0]
    row = bench.TrainingRow("digits", ours, [0.5], theirs, None, 1.0, runs=3)
    assert row.eager_ratio == pytest.approx(0.9)
    assert bench.TrainingRow("digits", ours, [0.5], theirs, None, 1.0).eager_ratio == 1.0
    # The compiled side ran once: the ratio of the medians.
    assert row.ratio == pytest.approx(0.5 / 1.0)
    # Epoch counts that do not split into the runs: the ratio of the medians.
    uneven = bench.TrainingRow("digits", ours[:5], [0.5], theirs[:5], None, 1.0, runs=3)
    assert uneven.eager_ratio == pytest.approx(1.0)


def test_start_rows_run_the_default_stand_ins_and_the_rest_the_kernels(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Timings of a long run's state time the kernels (no stand-ins, in this process and
    the digits runs it starts); a timed start gets what a user gets: the default stand-ins
    and Python's bytecode cache."""
    from minitorch import fast_ops

    monkeypatch.setattr(fast_ops, "STAND_IN_CALLS", 1000)
    monkeypatch.setenv(fast_ops.STAND_IN_ENV, "1000")
    bench._steady_state()
    assert fast_ops.STAND_IN_CALLS == 0
    monkeypatch.setenv("PYTHONDONTWRITEBYTECODE", "1")
    env = bench._start_env("/some/cache")
    assert fast_ops.STAND_IN_ENV not in env
    assert "PYTHONDONTWRITEBYTECODE" not in env  # (bytecode cached, as by default)
    assert env["MINITORCH_CACHE_DIR"] == env["NUMBA_CACHE_DIR"] == "/some/cache"


def test_count_instructions_tool_runs_each_op(monkeypatch: pytest.MonkeyPatch) -> None:
    """``tools/count_instructions.py``, the command behind the per-op instruction counts."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "tools" / "count_instructions.py"
    spec = importlib.util.spec_from_file_location("count_instructions", path)
    assert spec is not None and spec.loader is not None
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    add = tool.op("add")()
    assert add.shape == (10, 100) and add.history is not None
    assert tool.op("mul_number")().shape == (10, 100)
    assert tool.op("sum")().shape == (1,)
    step = tool.op("course_step")
    step()  # a training step returns nothing, and trains
    monkeypatch.setattr("sys.argv", ["count_instructions.py", "sum", "3"])
    tool.main()
    with pytest.raises(SystemExit, match="unknown op"):
        tool.op("nope")


def test_training_rows_time_every_side(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bench, "TRAINING_CASES", (("tiny", 20, 4, 10, 2, 2, 0.5),))
    monkeypatch.setattr(bench, "SETTLE", 0.0)
    (row,) = bench.training_cases(quick=True)
    assert row.paired and len(row.eager) == len(row.compiled) == 2
    assert row.eager32 is not None and len(row.eager32) == 2
    assert all(t > 0 for t in row.eager + row.compiled + row.eager32)
    with_torch = bench._torch() is not None
    assert (row.torch32 is not None) == with_torch
    assert np.isfinite(row.eager32_ratio) == with_torch


def test_every_side_trains_on_the_same_batches_whatever_ran_before(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Regression: the sides shuffled from Python's global generator, so a side's batches
    # depended on the sides before it (the float32 MLP after four sides drifted into
    # subnormal gradients, 4x slower epochs).
    monkeypatch.setattr(bench, "SETTLE", 0.0)

    class Data:
        X = [[float(i), 0.0] for i in range(20)]
        y = [float(i % 2) for i in range(20)]

    seen: list[list[tuple[float, ...]]] = [[], [], []]

    def side(k: int) -> tuple[Data, Any]:
        return Data(), lambda xs, ys: seen[k].append(tuple(x[0] for x in xs))

    bench._taking_turns([side(0), None, side(1), side(2)], 5, 3)
    assert len(seen[0]) == 4 * 4 and seen[0] == seen[1] == seen[2]
    assert sorted(sum(seen[0][:4], ())) == [float(i) for i in range(20)]
    assert seen[0][:4] != seen[0][4:8]  # a new order each epoch
