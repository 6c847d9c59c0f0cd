"""Undersampled k-space as a scanner acquired it, brought into kdrecon's layout with its own mask.

Scanners and fastMRI store k-space **centred** (its centre in the middle of the array), with the
phase-encoding lines that were skipped left at zero. The networks work in kdrecon's
**un-centred** layout (:mod:`kdrecon.mri.fft`: ``x = F⁻¹ k`` with no shifts), so the acquired
k-space ``K`` is converted through the image it encodes:

.. math::

    x = \\mathrm{fftshift}\\big(F^{-1}\\, \\mathrm{ifftshift}(K)\\big), \\qquad
    k = M \\odot F\\, x_{\\mathrm{crop}}, \\qquad M = \\mathrm{ifftshift}(m),

where ``x_crop`` keeps the central part of the **readout** axis (removing the readout
oversampling; an operation along the readout that leaves every skipped line skipped) and ``m`` is
the file's own line mask broadcast over the readout. Multiplying by ``M`` only removes rounding
noise: the shifts of a centred transform are phase ramps in the other domain, so the sampled lines
stay where ``ifftshift`` puts them.

Example:
    >>> import numpy as np
    >>> image = np.zeros((8, 8), np.complex64); image[2:6, 3:5] = 1 + 1j
    >>> centred = np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(image), norm="ortho"))
    >>> lines = np.array([0, 1, 0, 1, 1, 1, 0, 1], bool)
    >>> slices = from_centred(centred[None] * lines[None, None, :], lines, line_axis=-1, readout_size=8)
    >>> slices.mask.shape, slices.sampled_fraction, bool(np.abs(slices.kspace * (1 - slices.mask)).max() == 0)
    ((8, 8), 0.625, True)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

_AXES = (-2, -1)


@dataclass(frozen=True)
class AcquiredSlices:
    """Slices of acquired k-space in kdrecon's un-centred layout, zero outside their own mask.

    Attributes:
        kspace: complex64 ``(S, H, W)``, un-centred, readout oversampling removed.
        mask: float32 ``(H, W)``, un-centred 0/1: the sampled lines over the whole readout.
        sampled_fraction: sampled lines / all lines (1 / the acceleration of the acquisition).
    """

    kspace: np.ndarray
    mask: np.ndarray
    sampled_fraction: float

    @property
    def fully_sampled(self) -> bool:
        """Whether every line was acquired."""
        return self.sampled_fraction == 1.0

    def images(self) -> np.ndarray:
        """The zero-filled complex images ``F⁻¹ k``, ``(S, H, W)``."""
        return np.fft.ifft2(self.kspace, axes=_AXES, norm="ortho").astype(np.complex64)


def sampled_lines(kspace: np.ndarray, line_axis: int) -> np.ndarray:
    """Lines (along ``line_axis`` of ``(S, H, W)`` k-space) holding any non-zero sample in any slice."""
    other = tuple(axis for axis in (0, 1, 2) if axis != line_axis % 3)
    return np.abs(kspace).max(axis=other) > 0


def check_acquired(kspace: np.ndarray, lines: np.ndarray, line_axis: int) -> None:
    """Refuse k-space that no mask explains: NaNs, samples on skipped lines, sampled lines left empty."""
    if not np.isfinite(kspace).all():
        raise ValueError("the k-space contains NaN or infinite values")
    if not lines.any():
        raise ValueError("the mask samples no line")
    axis = line_axis % 3
    shape = [1, 1, 1]
    shape[axis] = len(lines)
    skipped = np.abs(kspace * ~lines.reshape(shape)).max()
    if skipped > 0:
        raise ValueError(f"the k-space has samples on lines its mask marks as skipped (largest {skipped:.3g})")
    refuse_empty_lines(np.abs(kspace), lines, line_axis, "line")


def refuse_empty_lines(magnitudes: np.ndarray, lines: np.ndarray, line_axis: int, name: str) -> None:
    """Refuse ``(S, H, W)`` k-space magnitudes with a sampled line (``lines`` along ``line_axis``, -1 or
    -2) all zeros in a slice: a missing measurement, which data consistency would impose as zero."""
    per_slice = magnitudes.max(axis=-1 if line_axis % 3 == 1 else -2)  # (S, lines)
    empty = ~(per_slice > 0) & lines
    if empty.any():
        slice_index, line = map(int, np.argwhere(empty)[0])
        raise ValueError(f"slice {slice_index}: sampled {name} {line} is all zeros ({int(empty.sum())} such lines in all)")


def from_centred(kspace: np.ndarray, lines: np.ndarray, line_axis: int, readout_size: int) -> AcquiredSlices:
    """Acquired centred k-space ``(S, H, W)`` with sampled ``lines`` along ``line_axis`` (-1 or -2),
    in kdrecon's layout, the readout (the other axis) cropped to its central ``readout_size`` samples
    in the image domain (see the module docstring)."""
    lines = np.asarray(lines, bool)
    if kspace.ndim != 3 or line_axis not in (-1, -2) or kspace.shape[line_axis] != len(lines):
        raise ValueError(f"expected k-space (slices, H, W) with {len(lines)} lines along axis {line_axis}, got {kspace.shape}")
    check_acquired(kspace, lines, line_axis)
    readout_axis = -1 if line_axis == -2 else -2
    if not 0 < readout_size <= kspace.shape[readout_axis]:
        raise ValueError(f"cannot keep {readout_size} of {kspace.shape[readout_axis]} readout samples")
    image = np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(kspace, axes=_AXES), axes=_AXES, norm="ortho"), axes=_AXES)
    start = (kspace.shape[readout_axis] - readout_size) // 2
    image = np.take(image, np.arange(start, start + readout_size), axis=readout_axis)
    mask = np.fft.ifftshift(np.broadcast_to(lines[:, None] if line_axis == -2 else lines[None, :], image.shape[1:]))
    mask = mask.astype(np.float32)
    uncentred = (np.fft.fft2(image, axes=_AXES, norm="ortho") * mask).astype(np.complex64)
    return AcquiredSlices(uncentred, mask, float(lines.mean()))

