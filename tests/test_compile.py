"""minitorch.compile: replayed steps give what eager steps give, bit for bit."""

from __future__ import annotations

import random
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import numba
import numpy as np
import pytest

import minitorch
from minitorch import Tensor, recording, tensor_from_numpy
from minitorch.compiler import CompileWarning, _full_signature, _signature
from minitorch.layers import Conv2d, Linear, ReLU, Sequential, Sigmoid
from minitorch.optim import SGD, Adam
from minitorch.tensor_data import TensorData

FAST = minitorch.TensorBackend(minitorch.FastOps)

OPTIMISERS: dict[str, Callable[[Any], Any]] = {
    "sgd": lambda ps: SGD(ps, lr=0.5),
    "momentum": lambda ps: SGD(ps, lr=0.1, momentum=0.9),
    "adam": lambda ps: Adam(ps, lr=0.01),
}


def mlp(backend: minitorch.TensorBackend, hidden: int = 6) -> Sequential:
    """The course's classifier (two hidden layers), from a fixed seed."""
    random.seed(3)
    return Sequential(
        Linear(2, hidden, backend), ReLU(), Linear(hidden, hidden, backend), ReLU(),
        Linear(hidden, 1, backend), Sigmoid(),
    )  # fmt: skip


def course_step(model: Any, optim: Any) -> Callable[[Tensor, Tensor], Tensor]:
    """The course's training step: its loss per point is returned."""

    def step(x: Tensor, y: Tensor) -> Tensor:
        optim.zero_grad()
        out = model(x).view(y.shape[0])
        loss = -(out * y + (out - 1.0) * (y - 1.0)).log()
        (loss / y.shape[0]).sum().view(1).backward()
        optim.step()
        return loss

    return step


def batches(sizes: list[int], seed: int = 0) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    for n in sizes:
        yield rng.uniform(-1, 1, (n, 2)), (rng.random(n) > 0.5).astype(np.float64)


def run(
    make_step: Callable[[], Callable[..., Tensor]],
    model: Any,
    sizes: list[int],
    backend: minitorch.TensorBackend,
    compiled: bool,
) -> tuple[list[np.ndarray], list[np.ndarray], Any]:
    """Losses of each step and the final parameters, eagerly or compiled."""
    step = make_step()
    if compiled:
        step = minitorch.compile(step)
    losses = []
    for x, y in batches(sizes):
        out = step(tensor_from_numpy(x, backend=backend), tensor_from_numpy(y, backend=backend))
        losses.append(out.to_numpy())
    return losses, [p.value.to_numpy() for p in model.parameters()], step


def assert_identical(a: list[np.ndarray], b: list[np.ndarray]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.shape == y.shape and np.array_equal(x, y), (x, y)


@pytest.mark.parametrize("optimiser", sorted(OPTIMISERS))
@pytest.mark.parametrize(
    "backend_name", ["simple", pytest.param("fast", marks=pytest.mark.kernels)]
)
def test_course_mlp_compiled_equals_eager(backend_name: str, optimiser: str) -> None:
    backend = minitorch.SimpleBackend if backend_name == "simple" else FAST
    records = backend.ops.records_launches
    sizes = [4, 4, 4, 4] if records else [3, 3, 3]
    results = []
    for compiled in (False, True):
        model = mlp(backend, 6 if records else 3)
        optim = OPTIMISERS[optimiser](model.parameters())
        step = course_step(model, optim)
        results.append(run(lambda step=step: step, model, sizes, backend, compiled))
    (eager_losses, eager_params, _), (losses, params, step) = results
    assert_identical(eager_losses, losses)
    assert_identical(eager_params, params)
    # FastOps replays; SimpleOps, which does not record, runs eagerly.
    assert step.last_call == ("replayed" if records else "eager")


def test_a_small_step_compiled_equals_eager(backend: minitorch.TensorBackend) -> None:
    """On every backend. The CUDA simulator runs each GPU thread in Python, so the
    step is elementwise only (no reductions or matmul, whose blocks are large)."""

    def make(w: minitorch.Parameter, optims: tuple[Any, ...]) -> Callable[[Tensor], Tensor]:
        def step(x: Tensor) -> Tensor:
            for optim in optims:
                optim.zero_grad()
                out = (x * w.value).sigmoid()
                out.backward(1.0)
                optim.step()
            return out

        return step

    results = []
    for compiled in (False, True):
        w = minitorch.Parameter(tensor_from_numpy(np.array([0.5, -1.0, 2.0]), backend=backend))
        step = make(w, (Adam([w], lr=0.1), SGD([w], lr=0.1, momentum=0.5)))
        f = minitorch.compile(step) if compiled else step
        x = tensor_from_numpy(np.array([1.0, 2.0, -3.0]), backend=backend)
        calls = 3 if backend.ops.records_launches else 2
        results.append(([f(x).to_numpy() for _ in range(calls)], [w.value.to_numpy()]))
    assert_identical(results[0][0], results[1][0])
    assert_identical(results[0][1], results[1][1])
    assert f.last_call == ("replayed" if backend.ops.records_launches else "eager")


class SmallCNN(minitorch.Module):
    def __init__(self, dropout: float = 0.0) -> None:
        super().__init__()
        random.seed(5)
        self.conv = Conv2d(1, 2, 3, backend=FAST)
        self.fc = Linear(2 * 3 * 3, 3, backend=FAST)
        self.dropout = dropout

    def forward(self, x: Tensor) -> Tensor:
        h = minitorch.maxpool2d(self.conv(x).relu(), (2, 2))
        h = h.view(x.shape[0], 2 * 3 * 3)
        h = minitorch.dropout(h, self.dropout, ignore=not self.training)
        return self.fc(h)


def cnn_run(compiled: bool, dropout: float, steps: int = 4) -> tuple[list, list, Any]:
    model = SmallCNN(dropout)
    optim = Adam(model.parameters(), lr=0.01)

    def step(images: Tensor, labels: Tensor) -> Tensor:
        optim.zero_grad()
        loss = minitorch.nn.cross_entropy(model(images), labels)
        loss.backward()
        optim.step()
        return loss

    f = minitorch.compile(step) if compiled else step
    rng = np.random.default_rng(1)
    random.seed(11)  # the dropout masks
    losses = []
    for _ in range(steps):
        images = tensor_from_numpy(rng.random((4, 1, 6, 6)), backend=FAST)
        labels = tensor_from_numpy(rng.integers(0, 3, 4).astype(np.float64), backend=FAST)
        losses.append(f(images, labels).to_numpy())
    return losses, [p.value.to_numpy() for p in model.parameters()], f


@pytest.mark.kernels
@pytest.mark.parametrize("dropout", [0.0, 0.5])
def test_cnn_step_with_adam_compiled_equals_eager(dropout: float) -> None:
    eager_losses, eager_params, _ = cnn_run(False, dropout)
    losses, params, f = cnn_run(True, dropout)
    assert_identical(eager_losses, losses)
    assert_identical(eager_params, params)
    assert f.last_call == "replayed"


@pytest.mark.kernels
def test_cnn_labels_are_checked_on_every_replay() -> None:
    model = SmallCNN()
    step = minitorch.compile(lambda x, y: minitorch.nn.cross_entropy(model(x), y))
    x = tensor_from_numpy(np.zeros((2, 1, 6, 6)), backend=FAST)
    for _ in range(2):
        step(x, tensor_from_numpy(np.array([0.0, 2.0]), backend=FAST))
    assert step.last_call == "replayed"
    with pytest.raises(ValueError, match="whole numbers in"):
        step(x, tensor_from_numpy(np.array([0.0, 3.0]), backend=FAST))


@pytest.mark.kernels
def test_new_shapes_record_again_and_old_records_stay() -> None:
    sizes = [4, 4, 3, 3, 4]
    eager_model, model = mlp(FAST), mlp(FAST)
    eager = run(lambda: course_step(eager_model, SGD(eager_model.parameters(), 0.5)),
                eager_model, sizes, FAST, False)  # fmt: skip
    optim = SGD(model.parameters(), 0.5)
    step = minitorch.compile(course_step(model, optim))
    calls = []
    for x, y in batches(sizes):
        step(tensor_from_numpy(x, backend=FAST), tensor_from_numpy(y, backend=FAST))
        calls.append(step.last_call)
    assert calls == ["recorded", "replayed", "recorded", "replayed", "replayed"]
    assert_identical(eager[1], [p.value.to_numpy() for p in model.parameters()])


@pytest.mark.kernels
def test_optimiser_state_creation_is_not_recorded() -> None:
    """Adam's first step creates its moments: the record comes from the second call."""
    model = mlp(FAST)
    step = minitorch.compile(course_step(model, Adam(model.parameters(), lr=0.01)))
    calls = []
    for x, y in batches([4, 4, 4]):
        step(tensor_from_numpy(x, backend=FAST), tensor_from_numpy(y, backend=FAST))
        calls.append(step.last_call)
    assert calls == ["eager", "recorded", "replayed"]


@pytest.mark.kernels
def test_learning_rate_changes_are_seen_by_replays() -> None:
    params = []
    for compiled in (False, True):
        model = mlp(FAST)
        optim = Adam(model.parameters(), lr=0.05)
        step = course_step(model, optim)
        step = minitorch.compile(step) if compiled else step
        for i, (x, y) in enumerate(batches([4] * 5)):
            optim.lr = 0.05 / (i + 1)
            optim.betas = (0.9, 0.99 if i < 3 else 0.9)
            step(tensor_from_numpy(x, backend=FAST), tensor_from_numpy(y, backend=FAST))
        params.append([p.value.to_numpy() for p in model.parameters()])
    assert_identical(*params)


@pytest.mark.kernels
def test_value_reads_run_eagerly_with_one_warning() -> None:
    model = mlp(FAST)
    optim = SGD(model.parameters(), 0.5)
    plain = course_step(model, optim)

    def step(x: Tensor, y: Tensor) -> Tensor:
        loss = plain(x, y)
        if loss.sum().item() > 1e9:  # control flow on a tensor value
            raise AssertionError("unreachable")
        return loss

    compiled = minitorch.compile(step)
    data = list(batches([4, 4, 4]))
    with pytest.warns(CompileWarning, match="item"):
        compiled(*(tensor_from_numpy(a, backend=FAST) for a in data[0]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for x, y in data[1:]:
            compiled(tensor_from_numpy(x, backend=FAST), tensor_from_numpy(y, backend=FAST))
            assert compiled.last_call == "eager"


@pytest.mark.kernels
@pytest.mark.parametrize(
    "read",
    [lambda t: float(t.sum()), lambda t: t[0], lambda t: t.to_numpy(), lambda t: bool(t[0] > 0),
     repr],
    ids=["float", "getitem", "to_numpy", "bool", "repr"],
)  # fmt: skip
def test_every_kind_of_value_read_is_detected(read: Callable[[Tensor], Any]) -> None:
    def f(x: Tensor) -> Tensor:
        read(x * 2.0)
        return x + 1.0

    compiled = minitorch.compile(f)
    x = tensor_from_numpy(np.array([1.0, 2.0]), backend=FAST)
    with pytest.warns(CompileWarning):
        compiled(x)
    assert np.array_equal(compiled(x).to_numpy(), [2.0, 3.0])
    assert compiled.last_call == "eager"


@pytest.mark.kernels
def test_state_dict_and_checkpoints_see_compiled_updates(tmp_path: Any) -> None:
    sizes = [4] * 4
    eager_model, model = mlp(FAST), mlp(FAST)
    eager_optim, optim = SGD(eager_model.parameters(), 0.5), SGD(model.parameters(), 0.5)
    eager_step = course_step(eager_model, eager_optim)
    step = minitorch.compile(course_step(model, optim))
    data = list(batches(sizes))
    for x, y in data[:3]:
        eager_step(tensor_from_numpy(x, backend=FAST), tensor_from_numpy(y, backend=FAST))
        step(tensor_from_numpy(x, backend=FAST), tensor_from_numpy(y, backend=FAST))
    state, eager_state = model.state_dict(), eager_model.state_dict()
    assert all(np.array_equal(state[k], eager_state[k]) for k in eager_state)
    minitorch.save(model, tmp_path / "m.ckpt")
    # Loading rebinds the parameter values: the next call notices and records again.
    model.load_state_dict(minitorch.load(tmp_path / "m.ckpt"))
    eager_model.load_state_dict(minitorch.load(tmp_path / "m.ckpt"))
    x, y = data[3]
    eager_loss = eager_step(tensor_from_numpy(x, backend=FAST), tensor_from_numpy(y, backend=FAST))
    loss = step(tensor_from_numpy(x, backend=FAST), tensor_from_numpy(y, backend=FAST))
    assert step.last_call == "recorded"
    assert np.array_equal(loss.to_numpy(), eager_loss.to_numpy())
    state, eager_state = model.state_dict(), eager_model.state_dict()
    assert all(np.array_equal(state[k], eager_state[k]) for k in eager_state)


@pytest.mark.kernels
def test_returned_tensors_are_fresh_detached_copies() -> None:
    w = minitorch.Parameter(tensor_from_numpy(np.array([1.0, 2.0]), backend=FAST))
    optim = SGD([w], lr=0.25)

    def step(x: Tensor) -> tuple[Tensor, dict[str, Any]]:
        optim.zero_grad()
        loss = (w.value * x).sum()
        loss.backward()
        optim.step()
        return loss, {"w": w.value, "note": "kept"}

    compiled = minitorch.compile(step)
    x = tensor_from_numpy(np.array([1.0, -1.0]), backend=FAST)
    outs = [compiled(x) for _ in range(3)]
    assert compiled.last_call == "replayed"
    assert [o[0].to_numpy()[0] for o in outs] == [-1.0, -1.5, -2.0]
    assert [o[1]["w"].to_numpy().tolist() for o in outs] == [[0.75, 2.25], [0.5, 2.5],
                                                            [0.25, 2.75]]  # fmt: skip
    assert all(o[1]["note"] == "kept" and o[0].history is None for o in outs)
    assert w.value.to_numpy().tolist() == [0.25, 2.75]


@pytest.mark.kernels
def test_non_tensor_arguments_are_part_of_the_signature() -> None:
    calls = []

    def scale(x: Tensor, factor: float, module: Any) -> Tensor:
        return x * factor + module.bias.value

    compiled = minitorch.compile(scale)
    x = tensor_from_numpy(np.array([1.0, 2.0]), backend=FAST)
    first, second = Linear(1, 2, FAST), Linear(1, 2, FAST)
    for factor, module in [(2.0, first), (2.0, first), (3.0, first), (3.0, second), (2, first)]:
        out = compiled(x, factor, module)
        expected = x.to_numpy() * factor + module.bias.value.to_numpy()
        assert np.array_equal(out.to_numpy(), expected)
        calls.append(compiled.last_call)
    # 2 and 2.0 are different arguments (Python could branch on the type).
    assert calls == ["recorded", "replayed", "recorded", "recorded", "recorded"]


def test_dtype_and_gradient_tracking_are_part_of_the_signature() -> None:
    t64 = Tensor(TensorData._trusted(np.zeros(3), (3,), (1,), 3), backend=FAST)
    t32 = Tensor(TensorData._trusted(np.zeros(3, np.float32), (3,), (1,), 3), backend=FAST)
    tracked = Tensor(TensorData._trusted(np.zeros(3), (3,), (1,), 3), backend=FAST)
    tracked.requires_grad_(True)
    keys = {_signature((t,), {})[0] for t in (t64, t32, tracked)}
    assert len(keys) == 3
    # Tensor-only calls take a shorter path to the same key.
    for args in [(t64,), (t64, t32, tracked), ()]:
        (key, tensors, keep), (full_key, full_tensors, full_keep) = (
            _signature(args, {}), _full_signature(args, {}))  # fmt: skip
        assert key == full_key and list(map(id, tensors)) == list(map(id, full_tensors))
        assert keep == full_keep == []
    assert _signature((t64, 1.0), {})[0] != _signature((t64,), {})[0]


@pytest.mark.kernels
def test_a_function_that_raises_while_recording_leaves_nothing_behind() -> None:
    fail = [True]

    def f(x: Tensor) -> Tensor:
        y = x + 1.0
        if fail[0]:
            raise RuntimeError("boom")
        return y * 2.0

    compiled = minitorch.compile(f)
    x = tensor_from_numpy(np.array([1.0]), backend=FAST)
    with pytest.raises(RuntimeError, match="boom"):
        compiled(x)
    assert recording.recorder is None
    fail[0] = False
    assert compiled(x).to_numpy().tolist() == [4.0]
    assert compiled.last_call == "recorded"
    assert compiled(x).to_numpy().tolist() == [4.0]


@pytest.mark.kernels
def test_gradients_of_inputs_are_given_back() -> None:
    w = tensor_from_numpy(np.array([3.0, -1.0]), backend=FAST)

    def f(x: Tensor) -> Tensor:
        loss = (x * w).sum()
        loss.backward()
        return loss

    compiled = minitorch.compile(f)
    for _ in range(2):
        x = tensor_from_numpy(np.array([1.0, 2.0]), backend=FAST, requires_grad=True)
        compiled(x)
        assert x.grad is not None and x.grad.to_numpy().tolist() == [3.0, -1.0]
    assert compiled.last_call == "replayed"


@pytest.mark.kernels
def test_rebinding_a_parameter_records_again() -> None:
    model = mlp(FAST)
    step = minitorch.compile(course_step(model, SGD(model.parameters(), 0.5)))
    data = [tuple(tensor_from_numpy(a, backend=FAST) for a in b) for b in batches([4, 4, 4])]
    step(*data[0])
    step(*data[1])
    p = model.parameters()[0]
    p.update(tensor_from_numpy(p.value.to_numpy() * 0.0, backend=FAST))
    step(*data[2])
    assert step.last_call == "recorded"
    assert not np.array_equal(p.value.to_numpy(), np.zeros(p.value.shape))


def test_compile_refuses_non_callables() -> None:
    with pytest.raises(TypeError, match="needs a function"):
        minitorch.compile(3)  # type: ignore[arg-type]


@pytest.mark.kernels
@pytest.mark.not_boundschecked
def test_replays_are_bit_identical_across_thread_counts() -> None:
    """A step large enough for the parallel kernels, replayed on 1 and 2 threads."""
    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("needs two threads")
    results = []
    for threads in (1, 2):
        numba.set_num_threads(threads)
        try:
            model = mlp(FAST, hidden=200)
            step = minitorch.compile(course_step(model, SGD(model.parameters(), 0.1)))
            for x, y in batches([200, 200, 200]):
                step(tensor_from_numpy(x, backend=FAST), tensor_from_numpy(y, backend=FAST))
            results.append([p.value.to_numpy() for p in model.parameters()])
        finally:
            numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
    assert_identical(*results)


@pytest.mark.kernels
def test_training_command_loop_compiled_equals_eager() -> None:
    from minitorch import train
    from minitorch.datasets import datasets

    runs = []
    for compiled in (False, True):
        random.seed(2)
        data = datasets["Xor"](23)  # a short last batch: two shapes
        model = train.make_network(5, FAST)
        epochs = train.run_epochs(model, data, FAST, 0.5, 10, compiled=compiled)
        losses = [next(epochs).loss for _ in range(3)]
        runs.append((losses, [p.value.to_numpy() for p in model.parameters()]))
    assert runs[0][0] == runs[1][0]
    assert_identical(runs[0][1], runs[1][1])


@pytest.mark.kernels
def test_gradients_left_on_parameters_follow_each_replay() -> None:
    """Only forward and backward compiled; zero_grad and the step run eagerly between."""
    results = []
    for compiled in (False, True):
        model = mlp(FAST)
        optim = SGD(model.parameters(), 0.5, momentum=0.5)

        def forward_backward(x: Tensor, y: Tensor, model: Any = model) -> Tensor:
            loss = ((model(x).view(y.shape[0]) - y) * (model(x).view(y.shape[0]) - y)).sum()
            loss.backward()
            return loss

        f = minitorch.compile(forward_backward) if compiled else forward_backward
        grads = []
        for x, y in batches([4] * 4):
            optim.zero_grad()
            f(tensor_from_numpy(x, backend=FAST), tensor_from_numpy(y, backend=FAST))
            grads.append(model.parameters()[0].value.grad.to_numpy())
            optim.step()
        results.append((grads, [p.value.to_numpy() for p in model.parameters()]))
    assert_identical(results[0][0], results[1][0])
    assert_identical(results[0][1], results[1][1])
    assert f.last_call == "replayed"


@pytest.mark.kernels
def test_inputs_written_in_place_are_written_back() -> None:
    def f(x: Tensor, out: Tensor) -> Tensor:
        out.f.add_zip(x, out, out=out)  # out += x
        return out.sum()

    compiled = minitorch.compile(f)
    x = tensor_from_numpy(np.array([1.0, 2.0]), backend=FAST)
    acc = tensor_from_numpy(np.zeros(2), backend=FAST)
    sums = [compiled(x, acc).to_numpy()[0] for _ in range(3)]
    assert compiled.last_call == "replayed"
    assert sums == [3.0, 6.0, 9.0] and acc.to_numpy().tolist() == [3.0, 6.0]


@pytest.mark.kernels
def test_records_are_bounded_and_changing_floats_record_again() -> None:
    from minitorch.compiler import MAX_RECORDS

    compiled = minitorch.compile(lambda x, scale: x * scale)
    x = tensor_from_numpy(np.array([1.0, 2.0]), backend=FAST)
    for i in range(MAX_RECORDS + 3):
        assert compiled(x, float(i)).to_numpy().tolist() == [i, 2.0 * i]
        assert compiled.last_call == "recorded"
    assert len(compiled._records) == MAX_RECORDS
    assert compiled(x, float(MAX_RECORDS + 2)).to_numpy().tolist()[0] == MAX_RECORDS + 2
    assert compiled.last_call == "replayed"


# Fusion: runs of elementwise launches become one generated kernel -------------------------


def fused_kernels(compiled: Any) -> int:
    """How many launches of the latest record are fused kernels."""
    record = list(compiled._records.values())[-1]
    return sum("fused" in getattr(fn, "__qualname__", repr(fn)) for fn, _ in record.ops)


@pytest.mark.kernels
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("optimiser", ["sgd", "adam"])
def test_fused_mlp_steps_equal_eager_in_both_dtypes(dtype: type, optimiser: str) -> None:
    results = []
    for compiled in (False, True):
        model = mlp(FAST).to(dtype)
        step = course_step(model, OPTIMISERS[optimiser](model.parameters()))
        f = minitorch.compile(step) if compiled else step
        losses = []
        for x, y in batches([4] * 5):
            loss = f(tensor_from_numpy(x.astype(dtype), backend=FAST),
                     tensor_from_numpy(y.astype(dtype), backend=FAST))  # fmt: skip
            assert loss.to_numpy().dtype == dtype
            losses.append(loss.to_numpy())
        results.append((losses, [p.value.to_numpy() for p in model.parameters()]))
    assert_identical(results[0][0], results[1][0])
    assert_identical(results[0][1], results[1][1])
    assert f.last_call == "replayed" and fused_kernels(f) >= 1


@pytest.mark.kernels
def test_fusion_launches_fewer_kernels_with_the_same_results(monkeypatch: Any) -> None:
    runs = []
    for fuse in (False, True):
        monkeypatch.setattr(minitorch.compiler, "FUSE", fuse)
        model = mlp(FAST)
        losses, params, step = run(
            lambda model=model: course_step(model, SGD(model.parameters(), 0.5, momentum=0.5)),
            model, [4] * 4, FAST, True,
        )  # fmt: skip
        record = list(step._records.values())[-1]
        runs.append((losses, params, len(record.ops), fused_kernels(step)))
    (losses, params, launches, fused), (fused_losses, fused_params, fewer, some) = runs
    assert_identical(losses, fused_losses)
    assert_identical(params, fused_params)
    assert fused == 0 and some >= 2 and fewer < launches


def _elementwise_ops(pool: dict[str, np.ndarray], spec: list[tuple]) -> list[tuple[Any, tuple]]:
    """Launches of FastOps' own serial kernels over ``pool``, as a recording holds them."""
    from minitorch import fast_kernels, operators
    from minitorch.kernel_cache import load_kernels

    dtype = pool["p0"].dtype  # FastOps' modules for the pool's dtype
    zips = {f: load_kernels("zip", fast_kernels.ZIP_SOURCE, f, dtype=dtype)
            for f in (operators.add, operators.mul)}
    maps = {f: load_kernels("map", fast_kernels.MAP_SOURCE, f, dtype=dtype)
            for f in (operators.neg, operators.sigmoid)}
    ops: list[tuple[Any, tuple]] = []
    for kind, f, out, *ins in spec:
        if kind == "copy":
            ops.append((np.copyto, (pool[out], pool[ins[0]])))
        elif kind == "map":
            ops.append((maps[f].map_flat_ser, (pool[out], pool[ins[0]])))
        elif kind == "zip":
            ops.append((zips[f].zip_flat_ser, (pool[out], pool[ins[0]], pool[ins[1]])))
        else:  # "bcast": the second input is one value (a one-element view, or the output)
            n = len(pool[out])
            second = pool[ins[1]] if ins[1] == out else pool[ins[1]][0:1]
            ops.append((zips[f].zip2d_ub_ser, (pool[out], pool[ins[0]], second, 1, n, n, 1,
                                            0, 1, 0, 0)))  # fmt: skip
    return ops


def _random_spec(rng: random.Random) -> list[tuple]:
    from minitorch import operators

    full, one = ["p0", "p1", "p2", "p3"], ["s", "t"]
    spec: list[tuple] = []
    for _ in range(rng.randint(4, 10)):
        kind = rng.choice(["map", "zip", "zip", "bcast", "bcast", "short", "copy"])
        if kind == "copy":
            spec.append(("copy", None, *rng.sample(full, 2)))
        elif kind == "map":
            spec.append(("map", rng.choice([operators.neg, operators.sigmoid]),
                         rng.choice(full), rng.choice(full)))  # fmt: skip
        elif kind == "short":  # a one-element loop between the others
            spec.append(("zip", operators.add, rng.choice(one), rng.choice(one), rng.choice(one)))
        else:
            f = rng.choice([operators.add, operators.mul])
            second = rng.choice(full + one) if kind == "bcast" else rng.choice(full)
            spec.append((kind, f, rng.choice(full), rng.choice(full), second))
    return spec


@pytest.mark.kernels
@pytest.mark.parametrize(
    ("case", "dtype"), [*((seed, np.float64) for seed in range(6)), (6, np.float32),
                        ("hazard", np.float64), ("own first value", np.float64)],
)  # fmt: skip
def test_fused_launches_equal_the_launches_one_by_one(case: Any, dtype: type) -> None:
    """Random runs over overlapping storages (a storage read as one broadcast value while
    a launch of the same loop writes it, in-place updates, copies between runs), run
    twice: the storages something else sees end as the launches one by one leave them."""
    from minitorch import operators
    from minitorch.compiler import _fuse

    if case == "hazard":  # p2[0] is read for every element, then p2 is written
        spec = [("bcast", operators.mul, "p1", "p0", "p2"), ("zip", operators.add, "p2", "p2",
                                                             "p0")]  # fmt: skip
    elif case == "own first value":  # p2 = p0 * p2[0], p2[0] read before any is written
        spec = [("map", operators.neg, "p1", "p0"), ("bcast", operators.mul, "p2", "p0", "p2"),
                ("zip", operators.add, "p0", "p2", "p1")]  # fmt: skip
    else:
        spec = _random_spec(random.Random(case))
    values = np.random.default_rng(7).uniform(-2, 2, (6, 5)).astype(dtype)
    pools = [{name: values[i].copy() for i, name in enumerate(["p0", "p1", "p2", "p3"])}
             | {"s": values[4][:1].copy(), "t": values[5][:1].copy()} for _ in range(2)]
    eager, fused = pools
    ops = _elementwise_ops(eager, spec)
    shown = ("p0", "p1", "s", "p2") if case == "hazard" else ("p0", "p1", "s")
    plan = _fuse(_elementwise_ops(fused, spec), {id(fused[k]) for k in shown})
    for _ in range(2):  # twice: a replay reads what the previous one left
        for fn, args in ops:
            fn(*args)
        for fn, args in plan:
            fn(*args)
    for k in shown:
        assert np.array_equal(eager[k], fused[k], equal_nan=True), (k, spec)
    if case == "hazard":
        assert len(plan) == 1  # one kernel, two loops


FUSED_CACHE_SCRIPT = """
import json, sys
import numpy as np
import minitorch
be = minitorch.TensorBackend(minitorch.FastOps)
compiled = minitorch.compile(lambda x: ((x * 2.0) + 1.0).sigmoid() * x)
x = minitorch.tensor_from_numpy(np.linspace(-1, 1, 6), backend=be)
values = [compiled(x).to_numpy().tolist() for _ in range(2)]
fused = [m.fused_ser.stats for name, m in sys.modules.items()
         if name.startswith("_minitorch_fused_")]
print(json.dumps({"values": values, "last": compiled.last_call, "kernels": len(fused),
                  "hits": sum(sum(s.cache_hits.values()) for s in fused),
                  "misses": sum(sum(s.cache_misses.values()) for s in fused)}))
"""


@pytest.mark.kernels
def test_fused_kernels_are_cached_on_disk_for_the_next_process(tmp_path: Any) -> None:
    import json
    import os
    import subprocess
    import sys

    env = dict(os.environ, MINITORCH_CACHE_DIR=str(tmp_path), NUMBA_CACHE_DIR=str(tmp_path))
    runs = []
    for _ in range(2):
        proc = subprocess.run([sys.executable, "-c", FUSED_CACHE_SCRIPT], env=env,
                              capture_output=True, text=True, timeout=600)  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        runs.append(json.loads(proc.stdout))
    first, second = runs
    assert first["last"] == second["last"] == "replayed"
    assert first["kernels"] >= 1 and first["misses"] >= 1 and first["hits"] == 0
    assert second["kernels"] == first["kernels"]
    assert second["hits"] >= 1 and second["misses"] == 0, second
    assert first["values"] == second["values"]
    x = np.linspace(-1, 1, 6)
    assert np.allclose(first["values"], [x / (1 + np.exp(-(x * 2 + 1)))] * 2, rtol=1e-12)
    assert list(tmp_path.glob("kernels/fused_ser-*.nbk"))
