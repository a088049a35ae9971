"""Saving and loading parameters as NumPy ``.npz`` archives.

A state dict maps each parameter's dotted name (``"0.weight"``) to a float64
NumPy copy of its value, so a checkpoint is readable without minitorch and
independent of the backend that trained it. Writes are atomic and loads are
all-or-nothing, so a crash or a bad file never leaves half a model behind.
"""

from __future__ import annotations

import os
import secrets
import zipfile
from collections.abc import Mapping
from typing import Any

import numpy as np

from .module import Module, Parameter
from .scalar import Scalar
from .tensor import Tensor
from .tensor_functions import tensor_from_numpy

PathLike = str | os.PathLike[str]


class CheckpointError(ValueError):
    """A checkpoint that cannot be read, or that does not fit the module."""


def state_dict(module: Module) -> dict[str, np.ndarray]:
    """Every parameter of ``module`` by dotted name, as a float64 NumPy copy."""
    return {name: _to_array(name, p.value) for name, p in module.named_parameters()}


def load_state_dict(module: Module, state: Mapping[str, Any], strict: bool = True) -> None:
    """Replace ``module``'s parameter values with those in ``state``.

    Names and shapes are all checked before anything is assigned: on any
    mismatch a ``CheckpointError`` lists every problem and the module is left
    exactly as it was. With ``strict=False`` names present on only one side
    are ignored, but shared names must still match in shape. Tensors keep their
    backend.
    """
    params = dict(module.named_parameters())
    problems = []
    if strict:
        missing = [n for n in params if n not in state]
        unexpected = [n for n in state if n not in params]
        if missing:
            problems.append(f"missing keys: {', '.join(missing)}")
        if unexpected:
            problems.append(f"unexpected keys: {', '.join(unexpected)}")
    new_values: list[tuple[Parameter, Any]] = []
    for name, p in params.items():
        if name not in state:
            continue
        try:
            array = _to_array(name, state[name])
        except (TypeError, ValueError) as e:
            problems.append(f"{name}: {e}")
            continue
        expected = _shape_of(p.value)
        if array.shape != expected:
            problems.append(f"{name}: checkpoint shape {array.shape}, module shape {expected}")
            continue
        new_values.append((p, _from_array(array, p.value)))
    if problems:
        raise CheckpointError(
            f"Cannot load state dict into {type(module).__name__}: " + "; ".join(problems)
        )
    for p, value in new_values:
        p.update(value)


def save(obj: Module | Mapping[str, Any], path: PathLike) -> None:
    """Write a module's state dict (or a given one) to ``path`` as an ``.npz`` archive.

    The archive is written to a temporary file in the same directory and moved
    into place with ``os.replace``, so ``path`` holds either the old file or
    the complete new one, never a partial write. ``path`` is used as given
    (no ``.npz`` suffix is added).
    """
    state = state_dict(obj) if isinstance(obj, Module) else obj
    arrays = {str(name): _to_array(str(name), value) for name, value in state.items()}
    path = os.fspath(path)
    directory, base = os.path.split(os.path.abspath(path))
    tmp = os.path.join(directory, f".{base}.{secrets.token_hex(8)}.tmp")
    # 0o666 filtered by the umask gives the permissions of an ordinary new file.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def load(path: PathLike) -> dict[str, np.ndarray]:
    """Read a checkpoint written by ``save``: dotted name -> NumPy array, in saved order.

    A missing file raises ``FileNotFoundError``; a file that is not a complete
    ``.npz`` archive (truncated, corrupt, something else) raises
    ``CheckpointError`` naming it.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"No checkpoint at {path!r}.")
    if not zipfile.is_zipfile(path):
        raise CheckpointError(
            f"{path!r} is not a minitorch checkpoint: not a complete .npz archive "
            "(truncated, or some other kind of file)."
        )
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {name: archive[name] for name in archive.files}
    # What zipfile and NumPy raise on damaged bytes varies with where the damage is
    # (bad CRC, bad header, "encrypted" or "unsupported compression" flags).
    except (OSError, ValueError, EOFError, RuntimeError, KeyError, zipfile.BadZipFile) as e:
        raise CheckpointError(f"{path!r} is a corrupt checkpoint: {e}") from e


def _to_array(name: str, value: Any) -> np.ndarray:
    """A float64 NumPy copy of a parameter value or of a state-dict entry."""
    if isinstance(value, Tensor):
        return value.to_numpy()
    if isinstance(value, Scalar):
        return np.array(value.data, dtype=np.float64)
    try:
        return np.array(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(
            f"{name}: cannot store a {type(value).__name__} as a float64 array."
        ) from None


def _shape_of(value: Any) -> tuple[int, ...]:
    """The shape a stored array must have to replace ``value``."""
    if isinstance(value, Tensor):
        return value.shape
    return np.shape(value.data if isinstance(value, Scalar) else value)


def _from_array(array: np.ndarray, like: Any) -> Any:
    """A new value of the same kind as ``like`` (and on its backend) holding ``array``."""
    if isinstance(like, Tensor):
        return tensor_from_numpy(array, backend=like.backend)
    if isinstance(like, Scalar):
        return Scalar(float(array))
    return float(array) if array.ndim == 0 else array.copy()
