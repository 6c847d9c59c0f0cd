"""Retrospective Cartesian undersampling and hard data consistency (spec §2–§3).

Everything here works in the **un-centred** k-space layout of :mod:`kdrecon.mri.fft`; masks in
the centred layout must be converted with :func:`kdrecon.mri.masks.to_uncentred` first.
"""

from __future__ import annotations

import torch

from kdrecon.mri.channels import COMPLEX_CHANNELS, to_channels, to_complex
from kdrecon.mri.fft import fft2, ifft2


def undersample(image: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Simulate single-coil undersampled k-space and its zero-filled image.

    ``k = M ⊙ F x`` and ``x_zf = |F⁻¹ k|`` with the orthonormal un-centred FFT ``F``.

    Args:
        image: real or complex image, shape ``(..., H, W)``.
        mask: 0/1 sampling mask, shape ``(H, W)`` or broadcastable to ``image``; un-centred.

    Returns:
        ``(kspace, zero_filled)``: complex ``(..., H, W)`` masked k-space and the real
        ``(..., H, W)`` zero-filled magnitude.

    Example:
        >>> import torch
        >>> x = torch.rand(4, 4)
        >>> k, zf = undersample(x, torch.ones(4, 4))
        >>> torch.allclose(zf, x, atol=1e-6)
        True
    """
    kspace = fft2(image) * mask
    return kspace, ifft2(kspace).abs()


def merge_measurements(predicted: torch.Tensor, measured: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """k-space with the sampled lines taken from the measurements: ``M ⊙ k₀ + (1 − M) ⊙ k``.

    Selection rather than arithmetic blending, so sampled lines equal the measurements bit
    for bit (``mask`` is 0/1).
    """
    return torch.where(mask > 0, measured, predicted)


def data_consistency(image: torch.Tensor, kspace: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Hard (noiseless, λ→∞) data consistency: replace the sampled k-space lines by measurements.

    A real image (one channel): ``x_dc = Re F⁻¹( M ⊙ k₀ + (1 − M) ⊙ F x )`` (spec §3, paper eq. 2
    with λ → ∞). The real part is kept, as the papers' code does for magnitude input; note that
    this projects the merged k-space onto Hermitian symmetry, so for a mask that is not symmetric
    about DC the sampled lines of ``F x_dc`` are no longer exactly ``k₀``.

    A complex image (two channels, :mod:`kdrecon.mri.channels`): ``z_dc = F⁻¹( M ⊙ k₀ + (1 − M) ⊙ F z )``
    with no real-part step, so ``M ⊙ F z_dc = M ⊙ k₀``: the acquired samples are kept, phase included.

    The FFT runs in float32 even when ``image`` is bfloat16/float16 (autocast), and the result is float32.

    Args:
        image: network output, shape ``(B, 1, H, W)``, ``(B, 2, H, W)`` (complex) or ``(B, H, W)`` (real).
        kspace: measured un-centred k-space ``M ⊙ k₀``, complex, shape ``(B, H, W)``.
        mask: 0/1 un-centred mask broadcastable to ``(B, H, W)``.

    Returns:
        Float32 tensor with the shape of ``image``.
    """
    if image.dim() == 4 and image.shape[1] == COMPLEX_CHANNELS:
        return to_channels(ifft2(merge_measurements(fft2(to_complex(image)), kspace, mask)))
    squeeze = image.dim() == 4
    x = image[:, 0] if squeeze else image
    out = ifft2(merge_measurements(fft2(x.float()), kspace, mask)).real
    return out.unsqueeze(1) if squeeze else out
