"""The low-resolution degradation of MRI super-resolution and its classical baseline (spec §3).

A low-resolution (LR) acquisition keeps only the central part of k-space. For an ``N × N`` image
and a factor ``r`` the kept part is the central ``n × n`` block of the *centred* spectrum,
``n = N / r``, and the network's input is the magnitude of that block zero-padded back to
``N × N``:

.. math::

    x_{LR} = \\left| F^{-1} ( M_r \\odot F x ) \\right|,

with the orthonormal FFT ``F`` and ``M_r`` the centred ``n × n`` box (SFT-KD-Recon appendix B:
the central 64×64 of a 256×256 image for 4×). That is :func:`kdrecon.mri.undersample.undersample`
with a box instead of a line mask, so super-resolution data live in the same files as
reconstruction data; :func:`low_pass_mask` returns the box in the un-centred layout they use.

The classical baseline, :func:`bicubic_upsampling`, interpolates the ``n × n`` LR image itself
(the inverse FFT of the kept block on its own grid, scaled to the same intensities): LR pixel
``i`` lies at full-grid position ``r·i`` (the zero-padded image equals the small one there), so
output pixel ``p`` is the cubic spline of the LR image at ``p / r``, periodic like the DFT.

Example:
    >>> import torch
    >>> from kdrecon.mri.undersample import undersample
    >>> mask = low_pass_mask((8, 8), 4)
    >>> int(mask.sum()), float(mask[0, 0]), float(mask[4, 4])   # a 2×2 block around DC, un-centred
    (4, 1.0, 0.0)
    >>> x = torch.ones(8, 8)                              # a constant image has only a DC term
    >>> kspace, low_resolution = undersample(x, torch.from_numpy(mask))
    >>> torch.allclose(low_resolution, x), bool(abs(bicubic_upsampling(kspace.numpy(), 4) - 1).max() < 1e-6)
    (True, True)
"""

from __future__ import annotations

import numpy as np


class IndivisibleSize(ValueError):
    """An image side that a super-resolution factor does not divide into whole pixels: what to do
    about it (crop when preparing, crop or pad one's own images) depends on the caller."""


def kept_size(size: int, factor: float) -> int:
    """The side ``n = size / factor`` of the kept central block; it must be a whole number.

    Example:
        >>> kept_size(256, 4), kept_size(128, 4)
        (64, 32)
    """
    if factor <= 1:
        raise ValueError(f"super-resolution factor {factor:g}: the low-resolution image would be the target itself; "
                         "use a factor above 1")
    kept = size / factor
    if kept < 1 - 1e-9:
        raise ValueError(f"super-resolution factor {factor:g} on {size}-pixel images keeps less than one pixel "
                         f"({size}/{factor:g}); use a factor of at most {size // 2}")
    if abs(kept - round(kept)) > 1e-9:
        raise IndivisibleSize(f"super-resolution factor {factor:g} on {size}-pixel images: the kept central block "
                              f"({size}/{factor:g}) must be a whole number of pixels")
    if round(kept) < 2:
        raise ValueError(f"super-resolution factor {factor:g} on {size}-pixel images keeps only the mean intensity "
                         "(1 pixel): every low-resolution image would be flat; use a smaller factor")
    return int(round(kept))


def _centre_block(size: int, kept: int) -> slice:
    """Rows of the centred spectrum (DC at ``size // 2``) that the box keeps: DC at its own ``kept // 2``."""
    start = size // 2 - kept // 2
    return slice(start, start + kept)


def low_pass_mask(shape: tuple[int, int], factor: float) -> np.ndarray:
    """The un-centred ``(H, W)`` float32 0/1 mask of the central ``H/r × W/r`` block of k-space."""
    height, width = shape
    centred = np.zeros(shape, dtype=np.float32)
    centred[_centre_block(height, kept_size(height, factor)), _centre_block(width, kept_size(width, factor))] = 1
    return np.fft.ifftshift(centred)


def low_resolution_grid(kspace: np.ndarray, factor: float) -> np.ndarray:
    """The LR magnitude on its own ``n × n`` grid from un-centred low-passed k-space ``(..., H, W)``.

    Scaled by ``n / N`` per axis so that its pixels equal the zero-padded image's at positions
    ``r·i`` (the orthonormal inverse FFT on the smaller grid is ``N / n`` per axis larger).
    """
    height, width = kspace.shape[-2:]
    rows, columns = kept_size(height, factor), kept_size(width, factor)
    centred = np.fft.fftshift(kspace, axes=(-2, -1))[..., _centre_block(height, rows), _centre_block(width, columns)]
    small = np.fft.ifft2(np.fft.ifftshift(centred, axes=(-2, -1)), norm="ortho")
    return np.abs(small) * np.sqrt(rows * columns / (height * width))


def full_size(size: int, factor: float) -> int:
    """The side ``N = n · r`` of the full grid a genuine ``n``-pixel low-resolution image is restored on.

    Example:
        >>> full_size(64, 4)
        256
    """
    full = size * factor
    if abs(full - round(full)) > 1e-9 or kept_size(int(round(full)), factor) != size:
        raise ValueError(f"a {size}-pixel low-resolution image at super-resolution factor {factor:g} has no whole "
                         f"number of full-resolution pixels ({size}·{factor:g})")
    return int(round(full))


def embedded_kspace(low_resolution: np.ndarray, factor: float) -> np.ndarray:
    """The un-centred k-space ``(..., n·r, m·r)`` of a genuine low-resolution image ``(..., n, m)``:
    its orthonormal spectrum as the central block (scaled by ``r`` per axis), zero elsewhere.

    The inverse of :func:`low_resolution_grid` before its magnitude: the image of this k-space
    equals ``low_resolution`` at the full-grid positions ``r·i``, so a super-resolution network
    receives the input it was trained on, :math:`F^{-1}(M_r \\odot F x)`, on the full grid.

    Example:
        >>> small = np.arange(16, dtype=np.complex64).reshape(4, 4)
        >>> kspace = embedded_kspace(small, 2)
        >>> kspace.shape, bool(np.allclose(np.fft.ifft2(kspace, norm="ortho")[::2, ::2], small, atol=1e-5))
        ((8, 8), True)
    """
    rows, columns = low_resolution.shape[-2:]
    height, width = full_size(rows, factor), full_size(columns, factor)
    spectrum = np.fft.fftshift(np.fft.fft2(low_resolution, norm="ortho"), axes=(-2, -1))
    centred = np.zeros((*low_resolution.shape[:-2], height, width), dtype=np.complex64)
    centred[..., _centre_block(height, rows), _centre_block(width, columns)] = spectrum * np.sqrt(height * width / (rows * columns))
    return np.fft.ifftshift(centred, axes=(-2, -1))


def bicubic_upsampling(kspace: np.ndarray, factor: float) -> np.ndarray:
    """The classical baseline: the LR image upsampled by cubic-spline interpolation to ``(..., H, W)``.

    Args:
        kspace: un-centred low-passed k-space ``(..., H, W)`` (as stored in a super-resolution
            dataset).
        factor: the super-resolution factor ``r`` the k-space was low-passed with.

    Returns:
        float32 ``(..., H, W)``.
    """
    from scipy import ndimage  # slow to import, and building the CLI's parser imports this module

    height, width = kspace.shape[-2:]
    small = low_resolution_grid(kspace, factor)
    rows, columns = small.shape[-2:]
    grid = np.stack(np.meshgrid(np.arange(height) * rows / height, np.arange(width) * columns / width, indexing="ij"))
    flat = small.reshape(-1, rows, columns)
    upsampled = [ndimage.map_coordinates(image, grid, order=3, mode="grid-wrap") for image in flat]
    return np.stack(upsampled).reshape(*kspace.shape[:-2], height, width).astype(np.float32)
