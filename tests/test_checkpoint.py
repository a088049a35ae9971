"""Checkpoints (minitorch.checkpoint): state dicts, atomic .npz files, all-or-nothing loads."""

from __future__ import annotations

import io
import json
import os
import random
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import minitorch
from minitorch import Module, Parameter, Scalar, tensor_from_numpy
from minitorch.checkpoint import CheckpointError, load, load_state_dict, save, state_dict
from minitorch.layers import Linear, ReLU, Sequential


def make_net(seed: int) -> Sequential:
    random.seed(seed)
    return Sequential(Linear(3, 4), ReLU(), Linear(4, 2))


def snapshot(module: Module) -> dict[str, tuple[object, np.ndarray]]:
    """Each parameter's value object and a copy of its numbers."""
    return {name: (p.value, p.value.to_numpy()) for name, p in module.named_parameters()}


def assert_unchanged(module: Module, before: dict[str, tuple[object, np.ndarray]]) -> None:
    after = snapshot(module)
    assert after.keys() == before.keys()
    for name, (value, array) in before.items():
        assert after[name][0] is value, name
        np.testing.assert_array_equal(after[name][1], array)


# state_dict / load_state_dict -----------------------------------------------------------


def test_state_dict_holds_float64_copies_in_parameter_order() -> None:
    net = make_net(0)
    state = net.state_dict()
    assert list(state) == ["0.weight", "0.bias", "2.weight", "2.bias"]
    assert all(isinstance(a, np.ndarray) and a.dtype == np.float64 for a in state.values())
    assert state["0.weight"].shape == (3, 4)
    before = net[0].weight.value.to_numpy()
    state["0.weight"][:] = 123.0
    np.testing.assert_array_equal(net[0].weight.value.to_numpy(), before)
    assert state_dict(net).keys() == state.keys()


def test_load_state_dict_copies_values_and_makes_fresh_leaves() -> None:
    source, target = make_net(0), make_net(1)
    x = tensor_from_numpy(np.random.default_rng(0).normal(size=(5, 3)))
    target.load_state_dict(source.state_dict())
    np.testing.assert_array_equal(target(x).to_numpy(), source(x).to_numpy())
    weight = target[0].weight
    assert weight.value.is_leaf() and weight.value.name == "weight"
    assert weight.value is not source[0].weight.value


def test_scalar_parameters_round_trip() -> None:
    class Tiny(Module):
        def __init__(self, a: float) -> None:
            super().__init__()
            self.a = Parameter(Scalar(a))

    source, target = Tiny(1.25), Tiny(0.0)
    assert source.state_dict()["a"].shape == ()
    target.load_state_dict(source.state_dict())
    assert isinstance(target.a.value, Scalar) and target.a.value.data == 1.25


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda s: s.__setitem__("2.bias", np.zeros(3)), r"2\.bias: checkpoint shape \(3,\)"),
        (lambda s: s.pop("0.bias"), r"missing keys: 0\.bias"),
        (lambda s: s.__setitem__("extra", np.zeros(1)), r"unexpected keys: extra"),
        (lambda s: s.__setitem__("0.weight", "text"), r"0\.weight"),
    ],
    ids=["shape", "missing", "unexpected", "not-numbers"],
)
def test_mismatched_state_raises_and_changes_nothing(
    change: Callable[[dict[str, Any]], object], message: str
) -> None:
    net = make_net(0)
    state = make_net(1).state_dict()
    change(state)
    before = snapshot(net)
    with pytest.raises(CheckpointError, match=message):
        net.load_state_dict(state)
    assert_unchanged(net, before)


def test_non_strict_loads_shared_names_but_still_checks_shapes() -> None:
    net, other = make_net(0), make_net(1)
    partial = {"0.weight": other.state_dict()["0.weight"], "unknown": np.zeros(2)}
    net.load_state_dict(partial, strict=False)
    np.testing.assert_array_equal(net[0].weight.value.to_numpy(), partial["0.weight"])
    before = snapshot(net)
    with pytest.raises(CheckpointError, match="shape"):
        load_state_dict(net, {"0.bias": np.zeros(5)}, strict=False)
    assert_unchanged(net, before)


def test_loaded_tensors_keep_the_module_backend(backend: minitorch.TensorBackend) -> None:
    random.seed(0)
    net = Linear(2, 3, backend=backend)
    net.load_state_dict({"weight": np.ones((2, 3)), "bias": np.zeros(3)})
    assert net.weight.value.backend is backend
    x = tensor_from_numpy(np.array([[1.0, 2.0]]), backend=backend)
    np.testing.assert_array_equal(net(x).to_numpy(), [[3.0, 3.0, 3.0]])
    assert net.state_dict()["weight"].tolist() == np.ones((2, 3)).tolist()


# save / load ----------------------------------------------------------------------------


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    net = make_net(0)
    path = tmp_path / "net.npz"
    save(net, path)
    loaded = load(path)
    assert list(loaded) == list(net.state_dict())
    for name, array in net.state_dict().items():
        np.testing.assert_array_equal(loaded[name], array)
    restored = make_net(1)
    restored.load_state_dict(loaded)
    assert restored.state_dict().keys() == loaded.keys()
    # The file is an ordinary NumPy archive.
    with np.load(path) as archive:
        np.testing.assert_array_equal(archive["0.bias"], loaded["0.bias"])


def test_save_accepts_a_mapping_of_tensors_arrays_and_numbers(tmp_path: Path) -> None:
    path = str(tmp_path / "state")
    save({"t": tensor_from_numpy(np.eye(2)), "a": np.arange(3), "n": 2.5}, path)
    loaded = load(path)
    assert os.listdir(tmp_path) == ["state"]  # no suffix added
    np.testing.assert_array_equal(loaded["t"], np.eye(2))
    assert loaded["a"].dtype == np.float64 and loaded["n"].shape == ()


def test_save_replaces_atomically_and_leaves_no_temporary_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "net.npz"
    save(make_net(0), path)
    good = path.read_bytes()
    save(make_net(1), path)
    assert os.listdir(tmp_path) == ["net.npz"] and path.read_bytes() != good

    previous = path.read_bytes()

    def crash(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(np.lib.format, "write_array", crash)
    with pytest.raises(OSError, match="disk full"):
        save(make_net(2), path)
    assert os.listdir(tmp_path) == ["net.npz"]
    assert path.read_bytes() == previous


def test_truncated_file_raises_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "net.npz"
    save(make_net(0), path)
    data = path.read_bytes()
    for cut in (0, 10, len(data) // 2, len(data) - 1):
        path.write_bytes(data[:cut])
        with pytest.raises(CheckpointError, match="net.npz"):
            load(path)


def test_corrupt_archive_raises_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "net.npz"
    save({"w": np.arange(100.0)}, path)
    data = bytearray(path.read_bytes())
    start = data.index(np.arange(100.0).tobytes())  # the stored numbers
    data[start + 20] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="net.npz.*corrupt"):
        load(path)


def npy_bytes(array: np.ndarray) -> bytes:
    """A single-array .npy file: a NumPy format, but not an archive."""
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


@pytest.mark.parametrize(
    "write",
    [
        lambda p: p.write_text("not a checkpoint"),
        lambda p: p.write_bytes(npy_bytes(np.zeros(3))),
    ],
    ids=["text", "npy"],
)
def test_other_kinds_of_file_are_rejected(tmp_path: Path, write: Callable[[Path], object]) -> None:
    path = tmp_path / "weights.npz"
    write(path)
    with pytest.raises(CheckpointError, match="weights.npz.*not a minitorch checkpoint"):
        load(path)
    assert issubclass(CheckpointError, ValueError)


def test_missing_file_raises_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nothing.npz"):
        load(tmp_path / "nothing.npz")


def test_bad_file_leaves_the_module_unchanged(tmp_path: Path) -> None:
    net = make_net(0)
    path = tmp_path / "net.npz"
    save(make_net(1), path)
    path.write_bytes(path.read_bytes()[:-30])
    before = snapshot(net)
    with pytest.raises(CheckpointError):
        net.load_state_dict(load(path))
    assert_unchanged(net, before)


# The safetensors format (by the .safetensors suffix) ------------------------------------------


@pytest.fixture
def safetensors_numpy() -> Any:
    """The safetensors package's NumPy API (the optional ``safetensors`` extra)."""
    return pytest.importorskip("safetensors.numpy")


def test_safetensors_round_trip_through_minitorch_and_safetensors_numpy(
    tmp_path: Path, safetensors_numpy: Any
) -> None:
    net = make_net(0)
    path = tmp_path / "net.safetensors"
    save(net, path)
    loaded = load(path)
    assert sorted(loaded) == sorted(net.state_dict())
    # The file is plain safetensors: the package reads it without minitorch.
    direct = safetensors_numpy.load_file(str(path))
    for name, array in net.state_dict().items():
        np.testing.assert_array_equal(loaded[name], array)
        np.testing.assert_array_equal(direct[name], array)
        assert direct[name].dtype == np.float64
    restored = make_net(1)
    restored.load_state_dict(loaded)
    x = tensor_from_numpy(np.random.default_rng(0).normal(size=(5, 3)))
    np.testing.assert_array_equal(restored(x).to_numpy(), net(x).to_numpy())


def test_safetensors_written_elsewhere_load_into_a_module(
    tmp_path: Path, safetensors_numpy: Any
) -> None:
    """Weights from another library (float32, as PyTorch saves them) load by name."""
    net = make_net(0)
    rng = np.random.default_rng(1)
    state = {
        name: rng.normal(size=a.shape).astype(np.float32) for name, a in net.state_dict().items()
    }
    path = tmp_path / "from_torch.SafeTensors"  # the suffix is matched in any case
    safetensors_numpy.save_file(state, str(path))
    loaded = load(path)
    assert all(loaded[n].dtype == np.float32 for n in state)
    net.load_state_dict(loaded)
    for name, array in state.items():
        np.testing.assert_array_equal(net.state_dict()[name], array.astype(np.float64))
    ints = tmp_path / "ints.safetensors"
    safetensors_numpy.save_file(
        {"i": np.arange(3, dtype=np.int64), "b": np.ones(2, bool)}, str(ints)
    )
    np.testing.assert_array_equal(load(ints)["i"], [0, 1, 2])


def test_safetensors_save_is_atomic(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, safetensors_numpy: Any
) -> None:
    path = tmp_path / "net.safetensors"
    save(make_net(0), path)
    previous = path.read_bytes()

    def crash(*args: object, **kwargs: object) -> bytes:
        raise OSError("disk full")

    monkeypatch.setattr(safetensors_numpy, "save", crash)
    with pytest.raises(OSError, match="disk full"):
        save(make_net(1), path)
    assert os.listdir(tmp_path) == ["net.safetensors"] and path.read_bytes() == previous


def test_bad_safetensors_files_raise_naming_them(tmp_path: Path, safetensors_numpy: Any) -> None:
    path = tmp_path / "net.safetensors"
    save({"w": np.arange(100.0), "b": np.ones(3)}, path)
    data = path.read_bytes()
    for cut in (0, 7, 20, len(data) // 2, len(data) - 1):
        path.write_bytes(data[:cut])
        with pytest.raises(CheckpointError, match="net.safetensors.*not a sound safetensors"):
            load(path)
    path.write_bytes(data + b"extra")
    with pytest.raises(CheckpointError, match="net.safetensors"):
        load(path)
    path.write_text("not a checkpoint at all")
    with pytest.raises(CheckpointError, match="net.safetensors"):
        load(path)
    # A flipped bit in the numbers: the format has no checksum, save records one.
    damaged = bytearray(data)
    damaged[data.index(np.arange(100.0).tobytes()) + 20] ^= 0x01
    path.write_bytes(bytes(damaged))
    with pytest.raises(CheckpointError, match="array 'w' fails its checksum"):
        load(path)


def raw_safetensors(header: dict[str, Any], data: bytes) -> bytes:
    """A safetensors file from its JSON header and data bytes, as any writer lays it out."""
    text = json.dumps(header).encode()
    return len(text).to_bytes(8, "little") + text + data


@pytest.mark.parametrize(
    "header, data, match",
    [
        ({"w": {"dtype": "BF16", "shape": [2], "data_offsets": [0, 4]}}, bytes(4), "BF16"),
        (
            {"w": {"dtype": "F64", "shape": [1] * 33, "data_offsets": [0, 8]}},
            bytes(8),
            "at most 32 sizes",
        ),
        (
            {"w": {"dtype": "F64", "shape": [10**9, 10**9], "data_offsets": [0, 8]}},
            bytes(8),
            "not a sound safetensors",
        ),
        ({"w": {"dtype": "F64", "shape": [4], "data_offsets": [0, 32]}}, bytes(8), "not a sound"),
    ],
    ids=["bfloat16", "too-many-dims", "huge-shape", "short-data"],
)
def test_safetensors_headers_are_checked_before_reading(
    tmp_path: Path, header: dict[str, Any], data: bytes, match: str, safetensors_numpy: Any
) -> None:
    path = tmp_path / "odd.safetensors"
    path.write_bytes(raw_safetensors(header, data))
    with pytest.raises(CheckpointError, match=match):
        load(path)


def test_safetensors_refuses_nonfinite_values_and_the_reserved_name(
    tmp_path: Path, safetensors_numpy: Any
) -> None:
    path = tmp_path / "diverged.safetensors"
    save({"w": np.array([1.0, np.nan])}, path)
    with pytest.raises(CheckpointError, match="NaN or infinite values in w"):
        load(path)
    assert np.isnan(load(path, allow_nonfinite=True)["w"][1])
    with pytest.raises(CheckpointError, match="reserves that name"):
        save({"__metadata__": np.ones(2)}, tmp_path / "meta.safetensors")
    assert sorted(os.listdir(tmp_path)) == ["diverged.safetensors"]


def test_safetensors_without_the_package_says_how_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "safetensors.numpy", None)
    with pytest.raises(ImportError, match=r"minitorch\[safetensors\]"):
        save({"w": np.ones(2)}, tmp_path / "w.safetensors")
    assert os.listdir(tmp_path) == []
    save({"w": np.ones(2)}, tmp_path / "w.npz")  # .npz needs nothing more
