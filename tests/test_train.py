"""Training (minitorch.train) and the command line (minitorch.__main__)."""

from __future__ import annotations

import importlib.util
import io
import itertools
import random
import sys
import types
from pathlib import Path

import pytest

from minitorch import SimpleBackend, train
from minitorch.__main__ import main
from minitorch.datasets import datasets


def epochs_to_reach(dataset: str, correct: int, seed: int, max_epochs: int) -> int | None:
    """Train the course network (hidden 10, lr 0.5, batch 10) on 50 points of ``dataset``.

    Returns the first epoch after which at least ``correct`` points are
    classified correctly, or None if that never happens within ``max_epochs``.
    """
    backend = train.get_backend("fast")
    random.seed(seed)
    data = datasets[dataset](50)
    model = train.make_network(10, backend)
    for stats in itertools.islice(train.run_epochs(model, data, backend, 0.5, 10), max_epochs):
        if train.count_correct(model, data, backend) >= correct:
            return stats.epoch
    return None


@pytest.mark.kernels
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_reaches_full_accuracy_on_simple(seed: int) -> None:
    assert epochs_to_reach("Simple", 50, seed, max_epochs=150) is not None


@pytest.mark.kernels
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_reaches_95_percent_on_split(seed: int) -> None:
    assert epochs_to_reach("Split", 48, seed, max_epochs=150) is not None


# Not on CUDA: the simulator that CI runs it on needs minutes per epoch.
@pytest.mark.parametrize("name", ["simple", pytest.param("fast", marks=pytest.mark.kernels)])
def test_run_epochs_lowers_the_loss(name: str) -> None:
    backend = train.get_backend(name)
    random.seed(0)
    data = datasets["Diag"](20)
    model = train.make_network(3, backend)
    stats = list(itertools.islice(train.run_epochs(model, data, backend, 0.5, 5), 15))
    assert [s.epoch for s in stats] == list(range(1, 16))
    assert all(s.seconds > 0 for s in stats)
    assert stats[-1].loss < stats[0].loss


def test_network_shape_and_inputs() -> None:
    net = train.make_network(7, SimpleBackend)
    shapes = [p.value.shape for p in net.parameters()]
    assert shapes == [(2, 7), (7,), (7, 7), (7,), (7, 1), (1,)]
    assert train.model_inputs([(0.0, 0.5)]).tolist() == [[-1.0, 0.0]]


def test_progress_bar_draws_in_place_and_clears() -> None:
    stream = io.StringIO()
    bar = train.ProgressBar(4, stream=stream, enabled=True)
    bar.show(1, "loss 0.5")
    bar.show(4, "done")
    bar.clear()
    text = stream.getvalue()
    assert "\n" not in text
    assert "[#######.......................] 1/4 loss 0.5" in text
    assert "[##############################] 4/4 done" in text
    assert text.endswith("\r")
    silent = io.StringIO()
    train.ProgressBar(4, stream=silent).show(2)  # StringIO is not a terminal
    assert silent.getvalue() == ""


# Command line -------------------------------------------------------------------------


@pytest.mark.kernels
def test_cli_train_prints_progress_and_writes_the_plot(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    png = tmp_path / "plots" / "run.png"
    argv = ["train", "--dataset", "simple", "--hidden", "4", "--epochs", "12"]
    assert main([*argv, "--points", "20", "--seed", "3", "--plot", str(png)]) == 0
    out = capsys.readouterr().out
    assert "epoch  1/12" in out and "includes JIT compile" in out
    assert "epoch 10/12" in out and "epoch 12/12" in out
    assert "Done: accuracy" in out and "s/epoch over the other 11" in out
    assert png.read_bytes().startswith(b"\x89PNG")


@pytest.mark.kernels
def test_cli_plots_a_simple_backend_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    png = tmp_path / "simple.png"
    argv = ["train", "--backend", "simple", "--hidden", "3", "--epochs", "1", "--points", "10"]
    assert main([*argv, "--plot", str(png)]) == 0
    assert png.exists()
    assert "first epoch" in capsys.readouterr().out


@pytest.mark.cuda
@pytest.mark.skipif(not train.cuda.is_available(), reason="needs a GPU or the CUDA simulator")
def test_cli_trains_on_cuda(capsys: pytest.CaptureFixture[str]) -> None:
    # Tiny: under the simulator every GPU thread is a Python thread.
    argv = ["train", "--backend", "cuda", "--dataset", "simple", "--hidden", "3"]
    assert main([*argv, "--epochs", "1", "--points", "4", "--batch", "4"]) == 0
    out = capsys.readouterr().out
    assert "with the cuda backend" in out and "Done: accuracy" in out


def test_cli_cuda_without_a_gpu_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(train.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit, match="cuda backend needs an NVIDIA GPU"):
        main(["train", "--backend", "cuda", "--epochs", "1"])


def test_cli_plot_without_matplotlib_fails_before_training(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    real_find_spec = train.importlib.util.find_spec

    def find_spec(name: str, *args: object) -> object:
        return None if name == "matplotlib" else real_find_spec(name, *args)

    monkeypatch.setattr(train.importlib.util, "find_spec", find_spec)
    monkeypatch.setattr(train, "run_epochs", None)  # training must not start
    with pytest.raises(SystemExit, match="--plot needs matplotlib"):
        main(["train", "--plot", str(tmp_path / "x.png")])


@pytest.mark.parametrize(
    "argv",
    [
        ["train", "--epochs", "0"],
        ["train", "--dataset", "moons"],
        ["train", "--backend", "gpu"],
        [],
    ],
)
def test_cli_rejects_bad_arguments(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2


@pytest.mark.parametrize("command", ["bench", "diagnostics"])
def test_cli_dispatches_to_lazily_imported_commands(
    command: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = []
    fake = types.ModuleType(f"minitorch.{command}")
    fake.main = lambda args: calls.append(args)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, f"minitorch.{command}", fake)
    monkeypatch.setattr(sys.modules["minitorch"], command, fake, raising=False)
    extra = ["--output", "out.md", "--quick"] if command == "bench" else []
    assert main([command, *extra]) == 0
    (args,) = calls
    assert args.command == command
    if command == "bench":
        assert args.output == "out.md" and args.quick


# examples/digits_cnn.py ------------------------------------------------------------------


@pytest.fixture
def digits_example() -> types.ModuleType:
    pytest.importorskip("sklearn")
    path = Path(__file__).parents[1] / "examples" / "digits_cnn.py"
    spec = importlib.util.spec_from_file_location("digits_cnn", path)
    assert spec is not None and spec.loader is not None
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    return example


@pytest.mark.kernels
def test_digits_example_runs_on_a_subset(
    digits_example: types.ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    assert digits_example.main(["--epochs", "2", "--subset", "80", "--batch", "20"]) == 0
    out = capsys.readouterr().out
    assert "60 training and 20 held-out images" in out
    assert "minitorch epoch 1/2" in out and "then" in out and "s/epoch" in out


@pytest.mark.kernels
def test_digits_example_pytorch_twin(
    digits_example: types.ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("torch")
    assert digits_example.main(["--epochs", "1", "--subset", "40", "--torch"]) == 0
    out = capsys.readouterr().out
    minitorch_loss = float(out.split("minitorch epoch 1/1  loss ")[1].split()[0])
    torch_loss = float(out.split("pytorch   epoch 1/1  loss ")[1].split()[0])
    assert minitorch_loss == pytest.approx(torch_loss, abs=0.02)  # same start, same batches


def test_digits_example_without_pytorch_says_so(
    digits_example: types.ModuleType,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setitem(sys.modules, "torch", None)  # makes `import torch` fail
    assert digits_example.main(["--torch"]) == 1
    assert "--torch needs PyTorch" in capsys.readouterr().err
