"""Read a scanner's fully sampled Cartesian k-space, saved as NumPy arrays, as complex volumes.

Each ``.npy`` file holds the complex k-space of one 2-D slice in the layout a Siemens raw file
takes once read by twixtools (``map_twix(...)["image"][:].squeeze()``): ``(lines, coils,
readout)``, or ``(lines, readout)`` for one coil, centred (the k-space centre in the middle of
the array). Each coil's image is the centred orthonormal inverse FFT over (lines, readout):

.. math::

    x_c = \\mathrm{fftshift}\\big(F^{-1}\\, \\mathrm{ifftshift}(k_c)\\big),

with the readout oversampling removed by keeping the central ``1 / oversampling`` of the readout
(scanners sample the readout twice as densely by default). The coils are not combined, since a
root-sum-of-squares would discard the phase: every coil's complex image becomes its own
single-coil volume, named ``{file}-coil{c}``, as if received by that coil alone. Its subject is
the coil too, so one acquisition can be split into train and validation coils: a smoke test of
the complex pipeline, not a held-out evaluation, since all coils see the same object.

Example:
    >>> import numpy as np, tempfile, pathlib
    >>> kspace = np.ones((4, 2, 8), np.complex64)
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "slice.npy"; np.save(path, kspace)
    >>> [(v.name, v.images.shape, v.images.dtype) for v in read_volumes(path)]
    [('slice-coil0', (1, 4, 4), dtype('complex64')), ('slice-coil1', (1, 4, 4), dtype('complex64'))]
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from kdrecon.data.volume import Volume

SUFFIX = ".npy"
#: Scanners sample the readout twice as finely as the image needs (the field of view doubled along it).
READOUT_OVERSAMPLING = 2


def read_volumes(path: Path, readout_oversampling: int = READOUT_OVERSAMPLING) -> Iterator[Volume]:
    """One complex volume per coil of every ``.npy`` k-space file at ``path`` (a file or a directory)."""
    if readout_oversampling < 1:
        raise ValueError(f"--readout-oversampling {readout_oversampling}: must be at least 1")
    path = Path(path)
    files = [path] if path.is_file() else sorted(path.glob(f"*{SUFFIX}")) if path.is_dir() else []
    if not files:
        raise ValueError(f"{path}: no {SUFFIX} k-space files found")
    for file in files:
        for coil, image in enumerate(coil_images(read_kspace(file), readout_oversampling, file)):
            yield Volume(name=f"{file.stem}-coil{coil}", subject=f"{file.stem}-coil{coil}", images=image[None])


def read_kspace(file: Path) -> np.ndarray:
    """The file's fully sampled k-space as ``(lines, coils, readout)`` complex64, checked."""
    kspace = load_kspace(file)
    if (np.abs(kspace).max(axis=(1, 2)) == 0).any():
        raise ValueError(f"{file}: k-space has all-zero lines; this reader expects fully sampled data")
    return kspace


def load_kspace(file: Path) -> np.ndarray:
    """The file's k-space as ``(lines, coils, readout)`` complex64: complex, finite, of that shape;
    lines may be skipped (all zeros), as in an undersampled acquisition."""
    try:
        kspace = np.load(file, allow_pickle=False)
    except (OSError, ValueError) as error:
        raise ValueError(f"{file}: not a readable .npy array ({error})") from None
    if not np.iscomplexobj(kspace):
        raise ValueError(f"{file}: k-space must be complex, got {kspace.dtype}")
    if kspace.ndim == 2:
        kspace = kspace[:, None]
    if kspace.ndim != 3:
        raise ValueError(f"{file}: expected k-space of shape (lines, coils, readout) or (lines, readout), got {kspace.shape}")
    if not np.isfinite(kspace).all():
        raise ValueError(f"{file}: k-space contains NaN or infinite values")
    return kspace.astype(np.complex64)


def coil_images(kspace: np.ndarray, readout_oversampling: int, file: Path) -> np.ndarray:
    """``(coils, lines, readout / oversampling)`` complex64 images of ``(lines, coils, readout)`` k-space."""
    per_coil = np.moveaxis(kspace, 1, 0)
    axes = (-2, -1)
    images = np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(per_coil, axes=axes), axes=axes, norm="ortho"), axes=axes)
    kept = kept_readout(images.shape[-1], readout_oversampling, file)
    start = (images.shape[-1] - kept) // 2
    return images[..., start : start + kept].astype(np.complex64)


def kept_readout(readout: int, readout_oversampling: int, file: Path) -> int:
    """Readout samples left once the oversampling is removed; the readout must divide by it."""
    if readout_oversampling < 1 or readout % readout_oversampling:
        raise ValueError(f"{file}: a readout of {readout} samples does not divide by the oversampling {readout_oversampling}")
    return readout // readout_oversampling
