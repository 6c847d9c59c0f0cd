"""Checks that a prepared dataset still means what its manifest says, run whenever it is loaded.

A mask edited or swapped, k-space rescaled, or a zero-filled image that no longer follows from
the k-space would train for hours and give confident, wrong numbers; :func:`check_mask` and
:func:`check_volume` refuse them with a message naming the file. Tolerances are relative to the
data's own maximum and sit far above float32 rounding (about 1e-7) and far below any real edit:

* the mask is 0/1, an outer product of sampled rows and columns (rows × all columns for line
  masks; the central box for super-resolution), samples something but not everything, and samples
  the k-space centre in the un-centred layout (``mask[0, 0] = 1``: a centred mask has its centre
  at ``H // 2`` and fails here);
* its acceleration agrees with the label: ``H / sampled rows`` within 25 % of ``r`` for fastMRI's
  random and equispaced masks (their number of lines varies around ``N / r``), within 15 % for masks
  of a fixed number of lines (the papers', the recipe's, a file's: enough to tell 4x from 5x), exactly
  ``H / r`` rows and ``W / r`` columns for super-resolution;
* the stored k-space has no energy outside the mask (``≤ 1e-6`` of its maximum) and equals
  ``M ⊙ F(target)`` (``≤ 1e-4``): the target's scale and normalisation are the k-space's;
* the zero-filled image is ``|F⁻¹ k|`` (``≤ 1e-4`` of its maximum);
* no target slice is blank (it has no maximum to normalise by or to score against) or constant (it
  has no edges: HFN and VIF are undefined on it, and SSIM and PSNR say nothing of a reconstruction);
* a magnitude target is not signed (no value below ``−0.05`` of its slice's maximum; resampling may
  ring slightly below zero, while a z-scored image or a phase or real part goes far below): PSNR's
  data range is the target's maximum, and the zero-filled input ``|F⁻¹ k|`` can never match a
  signed target;
* every target slice is scaled to maximum magnitude 1 (``≤ 1e-4`` off), the papers' recipe: HFN's
  clip to [0, 1], deployment's per-slice normalisation and the networks' learned scale assume it.

Example:
    >>> import numpy as np
    >>> mask = np.zeros((8, 8), np.float32); mask[[0, 1, 7]] = 1
    >>> check_mask(mask, "3x", "reconstruction", "m.npy")
    >>> check_mask(np.fft.fftshift(mask, axes=0), "3x", "reconstruction", "m.npy")
    Traceback (most recent call last):
    ...
    ValueError: m.npy: the mask does not sample the k-space centre (row 0 of the un-centred layout); is it a centred mask?
"""

from __future__ import annotations

import numpy as np

from kdrecon.data.task import SUPER_RESOLUTION, factor_of

#: Relative tolerances of :func:`check_volume` (see the module docstring).
OUTSIDE_MASK, KSPACE_AGREEMENT, ZERO_FILLED_AGREEMENT, SLICE_MAXIMUM = 1e-6, 1e-4, 1e-4, 1e-4
#: How far below zero a magnitude target may go, relative to its slice's maximum (see the module docstring).
NEGATIVE_MAGNITUDE = 0.05
#: How far ``H / sampled rows`` of a line mask may be from its acceleration label, relatively (a
#: mask with a fully sampled centre is accelerated less than its nominal factor); also how far an
#: acquisition's may be from a model's (:mod:`kdrecon.deployment.reconstruct`).
ACCELERATION_TOLERANCE = 0.25
#: How far ``H / sampled rows`` of a mask with a fixed number of lines may be from its label: the recipe's
#: ``int(N / r)`` lines are under 10 % off, while a 4x mask is 19 % off 5x and a 5x mask 25 % off 4x.
FIXED_MASK_TOLERANCE = 0.15
#: Mask kinds whose number of lines is drawn (fastMRI's generators), checked with ACCELERATION_TOLERANCE.
DRAWN_MASK_KINDS = ("random", "equispaced")


def acceleration_tolerance(mask_kind: str | None) -> float:
    """The tolerance of :func:`check_mask` for a mask of ``mask_kind`` (``None``: not recorded, the loose one)."""
    return ACCELERATION_TOLERANCE if mask_kind is None or mask_kind in DRAWN_MASK_KINDS else FIXED_MASK_TOLERANCE


def check_mask(mask: np.ndarray, acceleration: str, task: str, where: object,
               tolerance: float = ACCELERATION_TOLERANCE) -> None:
    """Refuse a mask that is not what a dataset of ``acceleration`` and ``task`` needs; a line mask's
    acceleration may be ``tolerance`` off its label, relatively (:func:`acceleration_tolerance`)."""
    if mask.ndim != 2 or not np.isin(mask, (0, 1)).all():
        raise ValueError(f"{where}: the mask must be a 2-D array of 0 and 1")
    rows, columns = mask.any(axis=1), mask.any(axis=0)
    if not np.array_equal(mask, np.outer(rows, columns).astype(mask.dtype)):
        raise ValueError(f"{where}: the mask is not a set of fully sampled lines (or, in super-resolution, a box)")
    if not rows.any() or mask.all():
        raise ValueError(f"{where}: the mask samples {'nothing' if not rows.any() else 'everything'}")
    if not mask[0, 0]:
        raise ValueError(f"{where}: the mask does not sample the k-space centre (row 0 of the un-centred layout); "
                         "is it a centred mask?")
    factor, height, width = factor_of(acceleration), *mask.shape
    if task == SUPER_RESOLUTION:
        expected = (round(height / factor), round(width / factor))
        if (rows.sum(), columns.sum()) != expected:
            raise ValueError(f"{where}: a {acceleration} super-resolution mask keeps {expected[0]}×{expected[1]}, "
                             f"this one {rows.sum()}×{columns.sum()}")
        return
    measured = height / rows.sum()
    if not columns.all() or abs(measured / factor - 1) > tolerance:
        raise ValueError(f"{where}: labelled {acceleration} but samples {rows.sum()} of {height} lines "
                         f"({measured:.2f}x; more than {tolerance:.0%} off)")


def check_kspace_of_target(target: np.ndarray, kspace: np.ndarray, mask: np.ndarray, where: object) -> None:
    """Refuse k-space ``(S, H, W)`` that is not ``mask · FFT(target)``, the orthonormal spectrum of the
    fully sampled images ``target`` (S, H, W) on the sampled lines, up to float32 rounding.

    Example:
        >>> import numpy as np
        >>> target, mask = np.ones((1, 4, 4)), np.ones((4, 4))
        >>> check_kspace_of_target(target, np.fft.fft2(target, norm="ortho") * mask, mask, "x.h5")
        >>> check_kspace_of_target(target, 2 * np.fft.fft2(target, norm="ortho"), mask, "x.h5")
        Traceback (most recent call last):
        ...
        ValueError: x.h5: the k-space is not the masked spectrum of the target (rescaled or edited data?)
    """
    if target.shape != kspace.shape:
        raise ValueError(f"{where}: the k-space is {kspace.shape[1]}×{kspace.shape[2]}×{kspace.shape[0]} slices, "
                         f"the target {target.shape[1]}×{target.shape[2]}×{target.shape[0]}; they must match")
    scale = max(float(np.abs(kspace).max()), 1e-12)
    simulated = np.fft.fft2(target.astype(np.complex128 if np.iscomplexobj(target) else np.float64), norm="ortho") * mask
    if np.abs(simulated - kspace).max() > KSPACE_AGREEMENT * scale:
        raise ValueError(f"{where}: the k-space is not the masked spectrum of the target (rescaled or edited data?)")


def check_scaled(target: np.ndarray, where: object) -> None:
    """Refuse targets ``(S, H, W)`` whose slices are not each scaled to maximum magnitude 1.

    Example:
        >>> import numpy as np
        >>> check_scaled(np.array([[[0.5, 1.0]], [[1.0, 0.2]]]), "x.h5")
        >>> check_scaled(np.array([[[0.5, 1.0]], [[255.0, 0.2]]]), "x.h5")
        Traceback (most recent call last):
        ...
        ValueError: x.h5: slice 1 of the target has maximum 255, not 1 (1 such); scale each slice and its k-space to maximum 1, the papers' recipe (kdrecon prepare does)
    """
    maxima = np.abs(target).reshape(len(target), -1).max(axis=1)
    off = np.flatnonzero(np.abs(maxima - 1) > SLICE_MAXIMUM)
    if off.size:
        raise ValueError(f"{where}: slice {off[0]} of the target has maximum {maxima[off[0]]:.6g}, not 1 ({off.size} such); "
                         "scale each slice and its k-space to maximum 1, the papers' recipe (kdrecon prepare does)")


def check_unsigned(target: np.ndarray, where: object) -> None:
    """Refuse a magnitude target ``(S, H, W)`` (scaled to maximum 1) with values below ``−NEGATIVE_MAGNITUDE``.

    Example:
        >>> import numpy as np
        >>> check_unsigned(np.array([[[1.0, -0.01]]]), "x.h5")
        >>> check_unsigned(np.array([[[1.0, 0.5]], [[0.25, -1.0]]]), "x.h5")
        Traceback (most recent call last):
        ...
        ValueError: x.h5: slice 1 of the target goes down to -1 (1 such): a signed image (z-scored, or a phase or real part), not a magnitude; prepare the magnitude images
    """
    lowest = target.reshape(len(target), -1).min(axis=1)
    signed = np.flatnonzero(lowest < -NEGATIVE_MAGNITUDE)
    if signed.size:
        raise ValueError(f"{where}: slice {signed[0]} of the target goes down to {lowest[signed[0]]:.3g} ({signed.size} "
                         "such): a signed image (z-scored, or a phase or real part), not a magnitude; prepare the "
                         "magnitude images")


def check_volume(target: np.ndarray, zero_filled: np.ndarray, kspace: np.ndarray, mask: np.ndarray, where: object) -> None:
    """Refuse a volume ``(S, H, W)`` whose k-space, target and zero-filled image disagree with each other or the mask.

    ``target`` is the magnitude image, or in a complex dataset the complex one. A blank target slice is
    refused too: a slice has no maximum to scale by or to take its PSNR's data range from.
    """
    magnitudes = np.abs(target).reshape(len(target), -1)
    blank = np.flatnonzero(~(magnitudes.max(axis=1) > 0))
    if blank.size:
        raise ValueError(f"{where}: slice {blank[0]} of the target is all zeros ({blank.size} such); "
                         "remove blank slices from it (a slice without a maximum cannot be normalised or scored)")
    flat = np.flatnonzero(magnitudes.min(axis=1) == magnitudes.max(axis=1))
    if flat.size:
        raise ValueError(f"{where}: slice {flat[0]} of the target is constant ({flat.size} such); remove it (a slice "
                         "without edges has no HFN or VIF, and its PSNR and SSIM say nothing of a reconstruction)")
    check_scaled(target, where)
    if not np.iscomplexobj(target):
        check_unsigned(target, where)
    scale = max(float(np.abs(kspace).max()), 1e-12)
    if np.abs(kspace * (1 - mask)).max() > OUTSIDE_MASK * scale:
        raise ValueError(f"{where}: the k-space has energy outside the mask (another mask, or a centred mask "
                         "where the un-centred layout is expected)")
    check_kspace_of_target(target, kspace, mask, where)
    recomputed = np.abs(np.fft.ifft2(kspace.astype(np.complex128), norm="ortho"))
    if np.abs(recomputed - zero_filled).max() > ZERO_FILLED_AGREEMENT * max(float(zero_filled.max()), 1e-12):
        raise ValueError(f"{where}: the zero-filled image is not |inverse FFT| of the k-space (edited data?)")
