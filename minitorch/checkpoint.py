"""Saving and loading parameters as NumPy ``.npz`` archives or ``.safetensors`` files.

A state dict maps each parameter's dotted name (``"0.weight"``) to a float64
NumPy copy of its value, so a checkpoint is readable without minitorch and
independent of the backend that trained it. Writes are atomic and loads are
all-or-nothing, so a crash or a bad file never leaves half a model behind.
Loading trusts nothing in the file: every array header is checked (numeric
dtype, a shape the file's bytes can hold) before its data is read, and NumPy's
pickle support is never used.

A path ending in ``.safetensors`` uses that format instead (through the optional
``safetensors`` package, ``pip install minitorch[safetensors]``), which PyTorch
and most other libraries read and write, so weights move between them.
"""

from __future__ import annotations

import json
import math
import os
import re
import secrets
import stat
import zipfile
import zlib
from collections.abc import Mapping
from typing import Any

import numpy as np

from .module import Module, Parameter
from .scalar import Scalar
from .tensor import Tensor
from .tensor_data import MAX_DIMS
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
    if not isinstance(state, Mapping):
        raise TypeError(
            f"A state dict maps parameter names to arrays; got a {type(state).__name__}."
        )
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
    """Write a module's state dict (or a given one) to ``path`` as an ``.npz`` archive,
    or as a safetensors file (float64, ``F64``) when ``path`` ends in ``.safetensors``.

    The archive is written to a temporary file beside the target and moved
    into place with ``os.replace``, so ``path`` holds either the old file or
    the complete new one, never a partial write. ``path`` is used as given
    (no ``.npz`` suffix is added). A symbolic link is written through: its
    target is replaced and the link kept. Only regular files are written: a
    directory, device, FIFO or socket at ``path`` raises ``CheckpointError``
    and is left alone. Temporary files of an earlier save to the same path
    whose process has died are removed.
    """
    if not isinstance(obj, (Module, Mapping)):
        raise TypeError(
            f"save() takes a Module or a mapping of names to arrays; got a {type(obj).__name__}."
        )
    state = state_dict(obj) if isinstance(obj, Module) else obj
    arrays: dict[str, np.ndarray] = {}
    for name, value in state.items():
        key = str(name)
        if key in arrays:
            raise CheckpointError(f"Two state-dict entries are both named {key!r}.")
        arrays[key] = _to_array(key, value)
    path = os.fspath(path)
    if _is_safetensors(path):
        if SAFETENSORS_METADATA_KEY in arrays:
            raise CheckpointError(
                f"A safetensors file cannot hold an array named {SAFETENSORS_METADATA_KEY!r} "
                "(the format reserves that name)."
            )
        # The format has no checksum of its own: keep one per array in the metadata.
        sums = {name: _crc32(array) for name, array in arrays.items()}
        payload = _safetensors_numpy().save(
            arrays, metadata={SAFETENSORS_CRC_KEY: json.dumps(sums, sort_keys=True)}
        )

        def write(f: Any) -> None:
            f.write(payload)

    else:

        def write(f: Any) -> None:
            _write_npz(f, arrays)

    target = _save_target(path)
    directory, base = os.path.split(target)
    _remove_stale_temporaries(directory, base)
    tmp = os.path.join(directory, f".{base}.{os.getpid()}.{secrets.token_hex(8)}.tmp")
    # 0o666 filtered by the umask gives the permissions of an ordinary new file.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        if os.path.exists(target):  # keep the permissions the file already had
            os.chmod(tmp, stat.S_IMODE(os.stat(target).st_mode))
        os.replace(tmp, target)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def load(path: PathLike, allow_nonfinite: bool = False) -> dict[str, np.ndarray]:
    """Read a checkpoint written by ``save``: dotted name -> NumPy array, in saved order
    (for a ``.safetensors`` file, sorted by name, as the format lists them).

    A missing file raises ``FileNotFoundError``. Everything else that is not a
    sound checkpoint raises ``CheckpointError`` naming the file, before any
    array is read in full: a directory or other non-regular file, a file that
    is not a complete ``.npz`` archive (or safetensors file, for that suffix),
    members that are not ``.npy`` arrays or share a name, a dtype other than
    bool, integer or float of at most 64 bits (no objects, strings, complex or
    structured arrays, nor safetensors' bfloat16 and 8-bit floats), and a
    header whose shape needs more bytes than the file holds. Arrays holding NaN
    or infinity are refused too (usually a diverged run) unless
    ``allow_nonfinite`` is true.
    """
    path = os.fspath(path)
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise FileNotFoundError(f"No checkpoint at {path!r}.") from None
    if not stat.S_ISREG(mode):
        raise CheckpointError(f"{path!r} is a {_file_kind(mode)}, not a checkpoint file.")
    if _is_safetensors(path):
        return _refuse_nonfinite(path, _read_safetensors(path), allow_nonfinite)
    if not zipfile.is_zipfile(path):
        raise CheckpointError(
            f"{path!r} is not a minitorch checkpoint: not a complete .npz archive "
            "(truncated, or some other kind of file)."
        )
    try:
        with zipfile.ZipFile(path) as archive:
            arrays = _read_archive(archive, path, os.path.getsize(path))
    except CheckpointError:
        raise
    # What zipfile and NumPy raise on damaged bytes varies with where the damage is
    # (bad CRC, bad header, "encrypted" or "unsupported compression" flags).
    except (OSError, ValueError, EOFError, RuntimeError, KeyError, NotImplementedError,
            zipfile.BadZipFile, zlib.error) as e:  # fmt: skip
        raise CheckpointError(f"{path!r} is a corrupt checkpoint: {e}") from e
    return _refuse_nonfinite(path, arrays, allow_nonfinite)


def _refuse_nonfinite(
    path: str, arrays: dict[str, np.ndarray], allow_nonfinite: bool
) -> dict[str, np.ndarray]:
    """``arrays``, unless one holds NaN or infinity and that is not allowed."""
    if not allow_nonfinite:
        bad = [n for n, a in arrays.items() if a.dtype.kind == "f" and not np.isfinite(a).all()]
        if bad:
            raise CheckpointError(
                f"{path!r} holds NaN or infinite values in {', '.join(bad)} (a diverged "
                "run?); pass allow_nonfinite=True to load it anyway."
            )
    return arrays


# The safetensors format -----------------------------------------------------------
# An 8-byte header length, a JSON header (name -> dtype, shape, byte range) and the
# raw little-endian bytes. The safetensors package checks the header's consistency
# (byte ranges that tile the data exactly, shapes that fit them) when it opens a file.

SAFETENSORS_SUFFIX = ".safetensors"
SAFETENSORS_METADATA_KEY = "__metadata__"
# Metadata entry where ``save`` keeps each array's CRC-32 (files from elsewhere have none).
SAFETENSORS_CRC_KEY = "minitorch.crc32"
# safetensors dtypes NumPy reads exactly: bool, integers, floats of at most 64 bits.
_SAFETENSORS_DTYPES = frozenset(
    ("BOOL", "U8", "I8", "U16", "I16", "F16", "U32", "I32", "F32", "U64", "I64", "F64")
)


def _is_safetensors(path: str) -> bool:
    return path.lower().endswith(SAFETENSORS_SUFFIX)


def _safetensors_numpy() -> Any:
    """The ``safetensors.numpy`` module, or an ImportError that says how to install it."""
    try:
        import safetensors.numpy
    except ImportError:
        raise ImportError(
            "Reading and writing .safetensors files needs the safetensors package: "
            "pip install 'minitorch[safetensors]' (or pip install safetensors)."
        ) from None
    return safetensors.numpy


def _read_safetensors(path: str) -> dict[str, np.ndarray]:
    """Every array of the safetensors file at ``path``, after checking each header entry."""
    _safetensors_numpy()  # a clear ImportError when the package is missing
    from safetensors import SafetensorError, safe_open

    arrays: dict[str, np.ndarray] = {}
    try:
        with safe_open(path, framework="numpy") as f:
            names = list(f.keys())
            for name in names:
                entry = f.get_slice(name)
                dtype, shape = entry.get_dtype(), entry.get_shape()
                if dtype not in _SAFETENSORS_DTYPES:
                    raise CheckpointError(
                        f"{path!r}: array {name!r} has dtype {dtype}; checkpoints hold only "
                        "bool, integer and float arrays of at most 64 bits (bfloat16 and 8-bit "
                        "floats have no NumPy type: convert them to float32 first)."
                    )
                if len(shape) > MAX_DIMS:
                    raise CheckpointError(
                        f"{path!r}: array {name!r} has shape {tuple(shape)}; a shape is at "
                        f"most {MAX_DIMS} sizes."
                    )
            for name in names:
                arrays[name] = np.array(f.get_tensor(name), order="C", copy=True)
            metadata = f.metadata() or {}
    except CheckpointError:
        raise
    except (SafetensorError, OSError, ValueError, TypeError) as e:
        raise CheckpointError(
            f"{path!r} is not a sound safetensors file (truncated, corrupt or some other "
            f"kind of file): {e}"
        ) from e
    if SAFETENSORS_CRC_KEY in metadata:
        _check_crcs(path, arrays, metadata[SAFETENSORS_CRC_KEY])
    return arrays


def _crc32(array: np.ndarray) -> int:
    """CRC-32 of ``array``'s bytes as safetensors stores them (little-endian, row-major)."""
    return zlib.crc32(np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).data)


def _check_crcs(path: str, arrays: Mapping[str, np.ndarray], recorded: str) -> None:
    """Compare ``arrays`` with the checksums ``save`` recorded (a JSON object)."""
    try:
        sums = json.loads(recorded)
    except ValueError:
        sums = None
    if not isinstance(sums, dict) or sorted(sums) != sorted(arrays):
        raise CheckpointError(f"{path!r} is a corrupt checkpoint: its checksum list is damaged.")
    for name, array in arrays.items():
        if sums[name] != _crc32(array):
            raise CheckpointError(
                f"{path!r} is a corrupt checkpoint: array {name!r} fails its checksum."
            )


# Arrays a checkpoint may hold: bool, signed and unsigned integers, floats; at most 64 bits.
_NUMERIC_KINDS = "biuf"
# Deflate expands at most about 1032-fold; a member claiming more is lying.
_MAX_DEFLATE_RATIO = 1032


def _read_archive(archive: zipfile.ZipFile, path: str, size: int) -> dict[str, np.ndarray]:
    """Every array of ``archive`` (a file of ``size`` bytes), after checking all members'
    sizes and names."""
    infos = archive.infolist()
    names: list[str] = []
    for info in infos:
        if info.is_dir() or not info.filename.endswith(".npy"):
            raise CheckpointError(
                f"{path!r} is not a minitorch checkpoint: member {info.filename!r} is not "
                "a .npy array."
            )
        name = info.filename[: -len(".npy")]
        if name in names:
            raise CheckpointError(f"{path!r} holds two arrays named {name!r}.")
        names.append(name)
        ratio = {zipfile.ZIP_STORED: 1, zipfile.ZIP_DEFLATED: _MAX_DEFLATE_RATIO}.get(
            info.compress_type
        )
        if ratio is None:
            raise CheckpointError(
                f"{path!r}: array {name!r} uses an unsupported compression method "
                f"({info.compress_type}); only stored and deflated members are read."
            )
        if info.header_offset + info.compress_size > size:
            raise CheckpointError(
                f"{path!r} is a corrupt checkpoint: array {name!r} claims {info.compress_size} "
                f"stored bytes, but the file has only {size}."
            )
        if info.file_size > info.compress_size * ratio + 1024:
            raise CheckpointError(
                f"{path!r} is a corrupt checkpoint: array {name!r} claims {info.file_size} "
                f"bytes, more than its {info.compress_size} stored bytes can hold."
            )
    return {name: _read_npy(archive, info, path, name) for name, info in zip(names, infos)}


def _read_npy(
    archive: zipfile.ZipFile, info: zipfile.ZipInfo, path: str, name: str
) -> np.ndarray:
    """One ``.npy`` member, its header checked before its data is read."""
    where = f"{path!r}: array {name!r}"
    with archive.open(info) as member:
        try:
            version = np.lib.format.read_magic(member)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(member)
            elif version == (2, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(member)
            else:
                raise ValueError(f"unsupported .npy format version {version}")
        except ValueError as e:
            raise CheckpointError(f"{where} has a bad header: {e}") from None
        if (dtype.kind not in _NUMERIC_KINDS or dtype.itemsize > 8 or dtype.hasobject
                or dtype.fields is not None or dtype.subdtype is not None):  # fmt: skip
            raise CheckpointError(
                f"{where} has dtype {dtype}; checkpoints hold only bool, integer and float "
                "arrays of at most 64 bits."
            )
        if len(shape) > MAX_DIMS or any(d < 0 for d in shape):
            raise CheckpointError(
                f"{where} has shape {shape}; a shape is at most {MAX_DIMS} non-negative sizes."
            )
        nbytes = math.prod(shape) * dtype.itemsize
        available = info.file_size - member.tell()
        if nbytes != available:
            raise CheckpointError(
                f"{where} claims shape {shape} of {dtype} ({nbytes} bytes), but the archive "
                f"holds {available} bytes for it."
            )
        data = member.read(nbytes)
        if len(data) != nbytes or member.read(1):  # reading to the end checks the CRC
            raise CheckpointError(f"{where} is truncated or corrupt.")
    array = np.frombuffer(data, dtype=dtype).reshape(shape, order="F" if fortran else "C")
    return array.copy(order="C")


def _write_npz(f: Any, arrays: Mapping[str, np.ndarray]) -> None:
    """An uncompressed ``.npz`` archive (what ``np.savez`` writes), for any array names.

    ``np.savez(f, **arrays)`` would take names such as ``file`` or ``allow_pickle``
    as its own arguments.
    """
    with zipfile.ZipFile(f, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
        for name, array in arrays.items():
            with archive.open(name + ".npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, array, allow_pickle=False)


def _save_target(path: str) -> str:
    """The regular file ``save`` should replace: ``path`` with symbolic links resolved."""
    if not path or path.endswith(("/", os.sep)):
        raise CheckpointError(f"Cannot save to {path!r}: a file name is needed, not a directory.")
    target = os.path.realpath(path)
    try:
        mode = os.stat(target).st_mode
    except FileNotFoundError:
        directory = os.path.dirname(target)
        if not os.path.isdir(directory):
            raise FileNotFoundError(
                f"Cannot save to {path!r}: directory {directory!r} does not exist."
            ) from None
        return target
    if not stat.S_ISREG(mode):
        shown = repr(path) if target == os.path.abspath(path) else f"{path!r} (-> {target!r})"
        raise CheckpointError(
            f"Cannot save to {shown}: it is a {_file_kind(mode)}; checkpoints are written "
            "only to regular files."
        )
    return target


def _file_kind(mode: int) -> str:
    kinds = (
        (stat.S_ISDIR, "directory"),
        (stat.S_ISCHR, "character device"),
        (stat.S_ISBLK, "block device"),
        (stat.S_ISFIFO, "FIFO"),
        (stat.S_ISSOCK, "socket"),
    )
    return next((kind for test, kind in kinds if test(mode)), "special file")


def _remove_stale_temporaries(directory: str, base: str) -> None:
    """Delete temporary files of earlier saves to ``base`` whose process no longer runs."""
    pattern = re.compile(rf"\.{re.escape(base)}\.(\d+)\.[0-9a-f]{{16}}\.tmp")
    try:
        names = os.listdir(directory)
    except OSError:
        return
    for entry in names:
        match = pattern.fullmatch(entry)
        if match and not _process_alive(int(match.group(1))):
            try:
                os.remove(os.path.join(directory, entry))
            except OSError:
                pass


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True  # perhaps another thread's save
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    except OverflowError:  # not a possible process id
        return False
    return True


def _to_array(name: str, value: Any) -> np.ndarray:
    """A float64 NumPy copy of a parameter value or of a state-dict entry.

    Only numbers are accepted (bool, integer or float values and arrays), and
    integers only where float64 holds them exactly.
    """
    if isinstance(value, Tensor):
        return value.to_numpy()
    if isinstance(value, Scalar):
        return np.array(value.data, dtype=np.float64)
    try:
        array = np.asarray(value)
    except (TypeError, ValueError):
        array = None
    if array is None or array.dtype.kind not in _NUMERIC_KINDS or array.dtype.itemsize > 8:
        kind = f"{type(value).__name__}" + ("" if array is None else f" of dtype {array.dtype}")
        raise TypeError(
            f"{name}: cannot store a {kind} as a float64 array (numbers only: bool, integer "
            "or float)."
        )
    exact = array.dtype.kind not in "iu" or array.size == 0
    if not exact and max(-int(array.min()), int(array.max())) > 2**53:
        raise TypeError(f"{name}: integers beyond 2**53 cannot be stored exactly as float64.")
    return array.astype(np.float64)


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
