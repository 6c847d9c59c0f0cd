"""The papers' h5 layout: one file per volume, slices on the **last** axis.

=====================  ==============  ===========================================
key                    shape           content
=====================  ==============  ===========================================
``volfs``              (H, W, S)       fully sampled magnitude target, float32
``img_volus_{acc}``    (H, W, S)       zero-filled magnitude, float32
``kspace_volus_{acc}`` (H, W, S)       masked un-centred k-space, complex64
``volfs_complex``      (H, W, S)       complex target (complex datasets only), complex64
=====================  ==============  ===========================================

A complex dataset (:mod:`kdrecon.data.image`) keeps ``volfs = |volfs_complex|`` so that every
magnitude tool reads it as it reads the papers' files.

``acc`` is spelled ``4x``, ``5x``, ``8x``. Reconstructions written by evaluation use the
papers' results layout: ``reconstruction`` ``(S, H, W)`` float32.
"""

from __future__ import annotations

import glob
import math
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

TARGET_KEY = "volfs"
COMPLEX_TARGET_KEY = "volfs_complex"


def zero_filled_key(acceleration: str) -> str:
    return f"img_volus_{acceleration}"


#: Prefix of a papers'-layout file's k-space keys, one per acceleration (``kspace_volus_4x``).
KSPACE_PREFIX = "kspace_volus_"


def kspace_key(acceleration: str) -> str:
    return f"{KSPACE_PREFIX}{acceleration}"


def parse_acceleration(text: str) -> str:
    """Normalise ``"4"``, ``"4x"`` or ``4`` to the papers' spelling ``"4x"``."""
    value = str(text).strip().lower().removesuffix("x")
    try:
        factor = float(value)
    except ValueError:
        raise ValueError(f"acceleration {text!r}: expected a number such as 4x or 5x") from None
    if not math.isfinite(factor) or factor < 1:
        raise ValueError(f"acceleration {text!r}: must be a finite number of at least 1")
    return f"{factor:g}x"


@dataclass(frozen=True)
class VolumeArrays:
    """One volume in memory, slices **first**: ``(S, H, W)``; ``complex_target`` only in complex datasets."""

    target: np.ndarray
    zero_filled: np.ndarray
    kspace: np.ndarray
    complex_target: np.ndarray | None = None


def current_umask() -> int:
    """The process umask (read by setting and restoring it)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


#: The suffix of everything written beside its destination before being renamed into place.
PARTIAL_SUFFIX = ".partial"


def partial_name(destination: Path) -> str:
    """The ``mkstemp``/``mkdtemp`` prefix of ``destination``'s temporary: ``.NAME.``."""
    return f".{Path(destination).name}."


def remove_debris(directory: Path, name: str | None = None, recursive: bool = True) -> list[Path]:
    """Remove the temporaries a killed process left in ``directory`` (those of file ``name``, or all).

    Each command calls it on what it writes before it writes again, so a SIGKILL during an
    atomic write leaves nothing behind once the command has run again. Returns what it removed.
    """
    directory = Path(directory)
    if not directory.is_dir():
        return []
    pattern = f".{'*' if name is None else glob.escape(name)}.*{PARTIAL_SUFFIX}*"  # NIfTI adds its suffix after
    found = sorted(directory.rglob(pattern) if recursive else directory.glob(pattern))
    for path in found:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    return found


@contextmanager
def atomic_path(destination: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``destination``; move it into place only on success.

    The file gets the permissions an ordinary ``open`` would give (``0o666`` less the umask),
    not the owner-only ``0o600`` of :func:`tempfile.mkstemp`.
    """
    destination = Path(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=partial_name(destination), suffix=PARTIAL_SUFFIX, dir=destination.parent)
    os.close(handle)
    try:
        os.chmod(temporary, 0o666 & ~current_umask())
        yield Path(temporary)
        os.replace(temporary, destination)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def write_volume(path: Path, target: np.ndarray, undersampled: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
    """Write one volume atomically in the papers' layout.

    Args:
        path: destination ``.h5`` file.
        target: ``(S, H, W)`` float magnitude, or complex (stored as ``volfs_complex`` and its magnitude).
        undersampled: ``{acceleration: (zero_filled (S,H,W), kspace (S,H,W) complex)}``.
    """
    with atomic_path(path) as temporary, h5py.File(temporary, "w") as file:
        if np.iscomplexobj(target):
            file.create_dataset(COMPLEX_TARGET_KEY, data=np.moveaxis(target, 0, -1).astype(np.complex64))
            target = np.abs(target)
        file.create_dataset(TARGET_KEY, data=np.moveaxis(target, 0, -1).astype(np.float32))
        for acceleration, (zero_filled, kspace) in undersampled.items():
            file.create_dataset(zero_filled_key(acceleration), data=np.moveaxis(zero_filled, 0, -1).astype(np.float32))
            file.create_dataset(kspace_key(acceleration), data=np.moveaxis(kspace, 0, -1).astype(np.complex64))


def read_volume(path: Path, acceleration: str, complex_target: bool = False) -> VolumeArrays:
    """Read one papers'-layout file for one acceleration and check it; slices first on return.

    ``complex_target``: also read ``volfs_complex`` (a complex dataset), which must be there.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: file not found")
    try:
        file = h5py.File(path, "r")
    except OSError as error:
        raise ValueError(f"{path}: not a readable h5 file ({error})") from None
    with file:
        arrays = {}
        keys = (TARGET_KEY, zero_filled_key(acceleration), kspace_key(acceleration))
        for key in (*keys, COMPLEX_TARGET_KEY) if complex_target else keys:
            if key not in file:
                raise ValueError(f"{path}: missing dataset {key!r} (has: {', '.join(sorted(file.keys()))})")
            if not isinstance(file[key], h5py.Dataset):
                raise ValueError(f"{path}: {key!r} is a group, expected a dataset")
            arrays[key] = file[key][()]
    target, zero_filled, kspace = (arrays[k] for k in (TARGET_KEY, zero_filled_key(acceleration), kspace_key(acceleration)))
    for key, array in arrays.items():
        if array.ndim != 3:
            raise ValueError(f"{path}: {key!r} must be (H, W, S), got shape {array.shape}")
        if array.shape != target.shape:
            raise ValueError(f"{path}: {key!r} has shape {array.shape}, expected {target.shape} like {TARGET_KEY!r}")
        if not np.isfinite(array).all():
            raise ValueError(f"{path}: {key!r} contains NaN or infinite values")
    for key in (TARGET_KEY, zero_filled_key(acceleration)):
        if np.iscomplexobj(arrays[key]):
            raise ValueError(f"{path}: {key!r} must be a real magnitude image, got {arrays[key].dtype}")
    for key in (kspace_key(acceleration), COMPLEX_TARGET_KEY):
        if key in arrays and not np.iscomplexobj(arrays[key]):
            raise ValueError(f"{path}: {key!r} must be complex, got {arrays[key].dtype}")
    complex_image = arrays.get(COMPLEX_TARGET_KEY)
    if complex_image is not None and np.abs(np.abs(complex_image) - target).max() > 1e-5 * max(float(target.max()), 1e-12):
        raise ValueError(f"{path}: {TARGET_KEY!r} is not the magnitude of {COMPLEX_TARGET_KEY!r} (edited data?)")
    return VolumeArrays(
        target=_slices_first(target, np.float32),
        zero_filled=_slices_first(zero_filled, np.float32),
        kspace=_slices_first(kspace, np.complex64),
        complex_target=None if complex_image is None else _slices_first(complex_image, np.complex64),
    )


def _slices_first(array: np.ndarray, dtype: type) -> np.ndarray:
    return np.ascontiguousarray(np.moveaxis(array, -1, 0), dtype=dtype)


def volume_accelerations(path: Path) -> list[str]:
    """Accelerations stored in a papers'-layout file, e.g. ``["4x", "5x"]``."""
    with h5py.File(path, "r") as file:
        return sorted(key.removeprefix(KSPACE_PREFIX) for key in file if key.startswith(KSPACE_PREFIX))


def write_reconstruction(path: Path, reconstruction: np.ndarray) -> None:
    """Write ``reconstruction`` ``(S, H, W)`` float32 atomically (the papers' results layout)."""
    with atomic_path(path) as temporary, h5py.File(temporary, "w") as file:
        file.create_dataset("reconstruction", data=reconstruction.astype(np.float32))
