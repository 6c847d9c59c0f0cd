"""Read fastMRI single-coil h5 files as magnitude volumes.

Each file holds ``kspace`` complex ``(S, H_k, W_k)`` with the k-space centre in the middle
of the array (centred layout), ``reconstruction_esc`` float32 ``(S, 320, 320)`` (absent in
the test split) and the attribute ``max`` (not used here: normalisation is a later stage).

A file with a ``mask`` dataset (test or challenge split) holds undersampled ``kspace`` and no
target: :func:`read_volumes` refuses it (its images would be aliased), :func:`read_acquired` reads it.

``image_source="reconstruction"`` (default) returns ``reconstruction_esc`` as stored.
``image_source="kspace"`` returns ``|fftshift(ifft2(ifftshift(kspace), norm="ortho"))|``
over the last two axes, computed with NumPy's FFT (not ``kdrecon.mri.fft``, so that this
module needs no torch), then centre-cropped to the shape of ``reconstruction_esc`` if the
file has one, else to ``(320, 320)``. The crop follows fastMRI's ``center_crop``
(start ``(n - crop) // 2``). fastMRI k-space is 2x oversampled along the readout
(``W_k`` ≈ 2 x 320 for knee), so the crop is also what removes the readout oversampling;
no other oversampling removal is done. With ``complex_images`` the cropped image keeps its phase
(complex64), for the complex networks (:mod:`kdrecon.data.image`).

**Orientation.** fastMRI acquires its phase-encoding lines along the last axis (its ``mask`` is
``(W_k,)``), while kdrecon's masks sample whole rows. Volumes are therefore returned transposed,
``(S, W, H)`` (:func:`swap_phase_encoding_axis`), so that a mask of ``kdrecon prepare`` skips
phase-encoding lines as a real acquisition does, and a network trained on them sees the aliasing
of fastMRI's own undersampled files. ``kdrecon reconstruct`` transposes its results back.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import h5py
import numpy as np

from kdrecon.data.volume import Volume

#: The name of this source in ``kdrecon prepare fastmri`` and in a dataset manifest's ``source``.
FORMAT = "fastmri"

__all__ = ["read_volumes", "read_acquired", "centre_crop", "swap_phase_encoding_axis", "DEFAULT_CROP", "MASK_KEY",
           "MANIFEST_ORIENTATION"]

DEFAULT_CROP = (320, 320)
"""Crop of ``image_source="kspace"`` images when the file has no ``reconstruction_esc``."""

_SUFFIXES = (".h5", ".hdf5")

MASK_KEY = "mask"
"""The sampled phase-encoding lines ``(W_k,)`` of a test- or challenge-split file, whose ``kspace``
is undersampled as acquired."""


def read_volumes(
    path: Path,
    *,
    image_source: Literal["reconstruction", "kspace"] = "reconstruction",
    complex_images: bool = False,
) -> Iterator[Volume]:
    """One volume per fastMRI single-coil file, each read as the iterator reaches it.

    Args:
        path: a ``.h5`` file, or a directory searched recursively for ``.h5``/``.hdf5``
            files (sorted path order).
        image_source: ``"reconstruction"`` to read ``reconstruction_esc``; ``"kspace"`` to
            compute the magnitude image from ``kspace`` (see the module docstring).
        complex_images: keep the phase of the image computed from ``kspace`` (needs ``"kspace"``).

    Returns:
        An iterator of ``Volume(name=<file stem>, subject=<file stem>, images=float32 (S, W, H))``,
        transposed so that the phase-encoding direction runs along the rows (see the module docstring).

    Raises:
        ValueError: no h5 file found, unreadable file, undersampled file (it has a ``mask``),
            ``kspace`` missing, not complex or not 3-D, ``reconstruction_esc`` missing (for
            ``"reconstruction"``), not 3-D or with another number of slices than ``kspace``,
            image smaller than the crop. A bad argument and the first three are raised by the
            call itself, before any volume is read; the others as the files are read.
    """
    if image_source not in ("reconstruction", "kspace"):
        raise ValueError(f"image_source must be 'reconstruction' or 'kspace', got {image_source!r}")
    if complex_images and image_source != "kspace":
        raise ValueError("--image complex: fastMRI's reconstruction_esc is a magnitude image; use --image-source kspace")
    path = Path(path)
    files = _find_files(path)
    for file in files:  # every file, so a test-split file among many is refused before any work
        with _open(file) as h5:
            _refuse_undersampled(h5, file)
    return _volumes(files, path if path.is_dir() else path.parent, image_source, complex_images)


#: What the manifest of a dataset prepared from fastMRI files records: its images are transposed
#: (:func:`swap_phase_encoding_axis`). A dataset prepared before kdrecon transposed them lacks it, so
#: its digest (:func:`kdrecon.data.dataset.dataset_identity`) differs from one prepared since.
MANIFEST_ORIENTATION = {"orientation": "phase encoding along the rows (fastMRI's images transposed)"}


def swap_phase_encoding_axis(array: np.ndarray) -> np.ndarray:
    """Images or k-space ``(..., H, W)`` transposed to ``(..., W, H)``: fastMRI's orientation (phase
    encoding along the columns) to kdrecon's (along the rows its masks sample), and back."""
    return np.swapaxes(array, -1, -2)


def _volumes(files: list[Path], root: Path, image_source: str, complex_images: bool) -> Iterator[Volume]:
    for file, name in zip(files, _unique_names(files, root)):
        images = np.ascontiguousarray(swap_phase_encoding_axis(_read_images(file, image_source, complex_images)))
        try:
            yield Volume(name=name, subject=file.stem, images=images)
        except ValueError as err:
            raise ValueError(f"{file}: {err}") from err


def _find_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise ValueError(f"{path}: no such file or directory")
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in _SUFFIXES)
    if not files:
        raise ValueError(f"{path}: no fastMRI h5 files (.h5, .hdf5) found")
    return files


def _safe(text: str) -> str:
    """Filesystem-safe version of ``text``: characters outside ``[A-Za-z0-9._-]`` become ``_``."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", text).strip("._") or "volume"


def _unique_names(files: list[Path], root: Path) -> list[str]:
    """File stems; stems shared by several files are replaced by their relative path."""
    stems = [_safe(f.stem) for f in files]
    counts = Counter(stems)
    return [
        _safe("__".join([*f.relative_to(root).parent.parts, f.stem])) if counts[s] > 1 else s
        for f, s in zip(files, stems)
    ]


def _open(file: Path) -> h5py.File:
    try:
        return h5py.File(file, "r")
    except OSError as err:
        raise ValueError(f"{file}: cannot open as HDF5 ({err})") from err


def _refuse_undersampled(h5: h5py.File, file: Path) -> None:
    if MASK_KEY in h5:
        raise ValueError(
            f"{file}: undersampled (a test- or challenge-split file: it has a '{MASK_KEY}'), so it cannot be a "
            "target; reconstruct it with `kdrecon reconstruct`"
        )


def _read_images(file: Path, image_source: str, complex_images: bool = False) -> np.ndarray:
    with _open(file) as h5:
        _refuse_undersampled(h5, file)  # here too: the advice below is for fully sampled k-space only
        kspace = _dataset(h5, file, "kspace")
        if kspace.dtype.kind != "c":
            raise ValueError(f"{file}: 'kspace' must be complex, got dtype {kspace.dtype}")
        if kspace.ndim != 3:
            raise ValueError(f"{file}: 'kspace' must be single-coil (S, H, W), got shape {kspace.shape}")
        target = h5["reconstruction_esc"] if "reconstruction_esc" in h5 else None
        if target is not None:
            if target.ndim != 3 or target.shape[0] != kspace.shape[0]:
                raise ValueError(
                    f"{file}: 'reconstruction_esc' must be (S, H, W) with S={kspace.shape[0]} "
                    f"like 'kspace', got shape {target.shape}"
                )
        if image_source == "reconstruction":
            if target is None:
                raise ValueError(f"{file}: no 'reconstruction_esc'; use --image-source kspace for the image of its "
                                 "fully sampled 'kspace'")
            return np.asarray(target[()], dtype=np.float32)
        crop = target.shape[1:] if target is not None else DEFAULT_CROP
        image = _kspace_to_image(file, kspace[()], crop)
        return image if complex_images else np.abs(image).astype(np.float32)


def _dataset(h5: h5py.File, file: Path, key: str) -> h5py.Dataset:
    if key not in h5:
        raise ValueError(f"{file}: missing dataset {key!r} (keys: {sorted(h5.keys())})")
    item = h5[key]
    if not isinstance(item, h5py.Dataset):
        raise ValueError(f"{file}: {key!r} is not a dataset")
    return item


def _kspace_to_image(file: Path, kspace: np.ndarray, crop: tuple[int, int]) -> np.ndarray:
    """Centred orthonormal ``ifft2`` of ``(S, H_k, W_k)`` k-space, centre-cropped to ``crop``, complex64."""
    axes = (-2, -1)
    image = np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(kspace, axes=axes), axes=axes, norm="ortho"), axes=axes)
    try:
        return centre_crop(image, crop).astype(np.complex64)
    except ValueError as error:
        raise ValueError(f"{file}: image from 'kspace': {error}") from None


def centre_crop(images: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """The central ``shape`` of ``(..., H, W)`` images, as fastMRI's ``center_crop`` (start ``(n - crop) // 2``)."""
    height, width = images.shape[-2:]
    if height < shape[0] or width < shape[1]:
        raise ValueError(f"{height}x{width} is smaller than the crop {shape[0]}x{shape[1]}")
    top, left = (height - shape[0]) // 2, (width - shape[1]) // 2
    return images[..., top : top + shape[0], left : left + shape[1]]


def read_acquired(file: Path) -> tuple[np.ndarray, np.ndarray, float | None]:
    """A test-split file's undersampled ``kspace`` (centred, complex64 ``(S, H_k, W_k)``), its line
    mask ``(W_k,)`` (bool, along the last axis) and its ``acceleration`` attribute (None if absent)."""
    with h5py.File(file, "r") as h5:
        kspace, mask = _dataset(h5, file, "kspace"), _dataset(h5, file, MASK_KEY)
        if kspace.dtype.kind != "c" or kspace.ndim != 3:
            raise ValueError(f"{file}: 'kspace' must be complex single-coil (S, H, W), got {kspace.dtype} {kspace.shape}")
        if mask.shape != (kspace.shape[-1],):
            raise ValueError(f"{file}: '{MASK_KEY}' must have one entry per k-space column ({kspace.shape[-1]},), got {mask.shape}")
        acceleration = h5.attrs.get("acceleration")
        return kspace[()].astype(np.complex64), mask[()].astype(bool), None if acceleration is None else float(acceleration)
